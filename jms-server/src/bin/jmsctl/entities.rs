//! `jmsctl user|group|node|asset|account|grant|filter …`: the policy's
//! entities on the server, one at a time.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use jms_core::model::{
    ActionChoice, Asset, AssetProtocol, CommandFilter, FilterAction, Grant, LoginAcl, Protocol,
    ProtocolChoice, Secret, SecretType, Timestamp, User, UserGroup,
};
use jms_core::password::{hash_password, DEFAULT_ITERATIONS};
use jms_server::client::Client;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::remote::{cell, connect, print_table, ServerArgs};
use crate::Outcome;

/// A name the policy uses (`ssh`, `ssh_key`, `deny`, `all`) as its type.
fn named<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(Value::String(text.to_string()))
        .map_err(|_| format!("unknown value `{text}`"))
}

fn body<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("model values serialise")
}

/// `--q`, `--limit`, `--offset`, `--json` of every list.
#[derive(Args)]
pub struct ListArgs {
    /// Only names containing this (case-insensitive).
    #[arg(long)]
    q: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Print the items as JSON.
    #[arg(long)]
    json: bool,
}

impl ListArgs {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![
            ("limit", self.limit.to_string()),
            ("offset", self.offset.to_string()),
        ];
        if let Some(q) = &self.q {
            query.push(("q", q.clone()));
        }
        query
    }

    /// Fetches a page and prints it: JSON, or a table of `columns`
    /// (header, field) and a count line when more rows exist.
    fn show(
        &self,
        client: &Client,
        segments: &[&str],
        columns: &[(&str, &str)],
    ) -> Result<Outcome> {
        let page = client.get(segments, &self.query())?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        if self.json {
            println!("{}", serde_json::to_string_pretty(&items)?);
            return Ok(Outcome::Ok);
        }
        let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|item| columns.iter().map(|(_, f)| cell(item, f)).collect())
            .collect();
        print_table(&headers, &rows);
        let total = page["total"].as_u64().unwrap_or(0);
        if total > items.len() as u64 {
            println!(
                "({} of {total}; --offset {} for more)",
                items.len(),
                self.offset + items.len() as u64
            );
        }
        Ok(Outcome::Ok)
    }
}

// ---- users ----------------------------------------------------------------

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (the server gives her a uid).
    Add {
        username: String,
        /// Full name.
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// A user group she joins (repeat for more).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// An OpenSSH public key (repeat for more).
        #[arg(long = "public-key", value_name = "KEY")]
        public_keys: Vec<String>,
        /// Expiry (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_name = "DATE", value_parser = Timestamp::parse)]
        expires: Option<Timestamp>,
        /// Set a password: typed twice on the terminal, or the first line
        /// of stdin (never argv); only its hash is sent.
        #[arg(long)]
        password: bool,
        /// Create her disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List users.
    List(ListArgs),
    /// Disable a user (she can no longer log in; her grants stay).
    Disable { username: String },
    /// Enable a disabled user.
    Enable { username: String },
    /// Delete a user (her uid is never given to anyone else).
    Delete { username: String },
    /// Mail her a new one-time set-password link (older links stop working).
    SendLink { username: String },
}

pub fn user(server: &ServerArgs, command: UserCommand) -> Result<Outcome> {
    match command {
        UserCommand::Add {
            username,
            name,
            email,
            groups,
            public_keys,
            expires,
            password,
            disabled,
        } => {
            let password_hash = if password {
                let password = crate::hash_password::read_password()?;
                Some(Secret::new(hash_password(&password, DEFAULT_ITERATIONS)?))
            } else {
                None
            };
            let user = User {
                username,
                name: name.unwrap_or_default(),
                email,
                is_active: !disabled,
                date_expired: expires,
                groups,
                public_keys,
                password_hash,
                totp_secret: None,
                login_acl: LoginAcl::default(),
            };
            let client = connect(server)?;
            let created = client
                .call(
                    Method::POST,
                    &["api", "v1", "users"],
                    &[],
                    Some(&body(&user)),
                )?
                .unwrap_or_default();
            println!("created user {} (uid {})", user.username, created["uid"]);
            crate::mail::report_link(&user.username, &created);
            Ok(Outcome::Ok)
        }
        UserCommand::List(list) => list.show(
            &connect(server)?,
            &["api", "v1", "users"],
            &[
                ("USERNAME", "username"),
                ("UID", "uid"),
                ("NAME", "name"),
                ("EMAIL", "email"),
                ("GROUPS", "groups"),
                ("ACTIVE", "is_active"),
            ],
        ),
        UserCommand::SendLink { username } => crate::mail::send_link(server, &username),
        UserCommand::Disable { username } => set_active(server, &username, false),
        UserCommand::Enable { username } => set_active(server, &username, true),
        UserCommand::Delete { username } => {
            connect(server)?.call(
                Method::DELETE,
                &["api", "v1", "users", &username],
                &[],
                None,
            )?;
            println!("deleted user {username}");
            Ok(Outcome::Ok)
        }
    }
}

fn set_active(server: &ServerArgs, username: &str, active: bool) -> Result<Outcome> {
    connect(server)?.call(
        Method::PATCH,
        &["api", "v1", "users", username],
        &[],
        Some(&json!({ "is_active": active })),
    )?;
    println!(
        "{} user {username}",
        if active { "enabled" } else { "disabled" }
    );
    Ok(Outcome::Ok)
}

// ---- groups and nodes ---------------------------------------------------

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create a user group (the server gives it a gid).
    Add {
        name: String,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List user groups and their members.
    List(ListArgs),
}

pub fn group(server: &ServerArgs, command: GroupCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        GroupCommand::Add { name, comment } => {
            let group = UserGroup { name, comment };
            let created = client
                .call(
                    Method::POST,
                    &["api", "v1", "groups"],
                    &[],
                    Some(&body(&group)),
                )?
                .unwrap_or_default();
            println!("created user group {} (gid {})", group.name, created["gid"]);
            Ok(Outcome::Ok)
        }
        GroupCommand::List(list) => list.show(
            &client,
            &["api", "v1", "groups"],
            &[
                ("NAME", "name"),
                ("GID", "gid"),
                ("MEMBERS", "members"),
                ("COMMENT", "comment"),
            ],
        ),
    }
}

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Declare a node such as /Default/prod/web (parents are implied).
    Add { path: String },
    /// List declared nodes.
    List(ListArgs),
}

pub fn node(server: &ServerArgs, command: NodeCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        NodeCommand::Add { path } => {
            client.call(
                Method::POST,
                &["api", "v1", "nodes"],
                &[],
                Some(&json!({ "path": path })),
            )?;
            println!("created node {path}");
            Ok(Outcome::Ok)
        }
        NodeCommand::List(list) => list.show(
            &client,
            &["api", "v1", "nodes"],
            &[("ID", "id"), ("PATH", "path")],
        ),
    }
}

// ---- assets and accounts ------------------------------------------------

/// `ssh:2222`, or `ssh` for its usual port.
fn parse_protocol(text: &str) -> Result<AssetProtocol, String> {
    let (name, port) = match text.split_once(':') {
        Some((name, port)) => (
            name,
            port.parse::<u16>()
                .map_err(|_| format!("bad port in `{text}`: expected PROTOCOL:PORT like ssh:22"))?,
        ),
        None => (text, 22),
    };
    Ok(AssetProtocol {
        name: name.parse::<Protocol>()?,
        port,
    })
}

#[derive(Subcommand)]
pub enum AssetCommand {
    /// Create an asset.
    Add {
        name: String,
        /// Host name or IP address.
        #[arg(long)]
        address: String,
        /// PROTOCOL[:PORT] (ssh, sftp; port 22 by default); repeat for more.
        #[arg(long = "protocol", value_name = "P[:PORT]", value_parser = parse_protocol, required = true)]
        protocols: Vec<AssetProtocol>,
        /// A node it sits in (repeat for more).
        #[arg(long = "node", value_name = "PATH")]
        nodes: Vec<String>,
        /// A pinned SSH host key (repeat for more).
        #[arg(long = "host-key", value_name = "KEY")]
        host_keys: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List assets with their accounts.
    List(ListArgs),
}

pub fn asset(server: &ServerArgs, command: AssetCommand) -> Result<Outcome> {
    match command {
        AssetCommand::Add {
            name,
            address,
            protocols,
            nodes,
            host_keys,
            disabled,
        } => {
            let asset = Asset {
                name,
                address,
                protocols,
                nodes,
                is_active: !disabled,
                accounts: Vec::new(),
                host_keys,
            };
            connect(server)?.call(
                Method::POST,
                &["api", "v1", "assets"],
                &[],
                Some(&body(&asset)),
            )?;
            println!("created asset {}", asset.name);
            Ok(Outcome::Ok)
        }
        AssetCommand::List(list) => {
            let client = connect(server)?;
            if list.json {
                return list.show(&client, &["api", "v1", "assets"], &[]);
            }
            let page = client.get(&["api", "v1", "assets"], &list.query())?;
            let items = page["items"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|a| {
                    let protocols = a["protocols"]
                        .as_array()
                        .map(|ps| {
                            ps.iter()
                                .map(|p| format!("{}:{}", cell(p, "name"), cell(p, "port")))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    let accounts = a["accounts"]
                        .as_array()
                        .map(|acs| {
                            acs.iter()
                                .map(|ac| cell(ac, "name"))
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .unwrap_or_default();
                    vec![
                        cell(a, "name"),
                        cell(a, "address"),
                        protocols,
                        cell(a, "nodes"),
                        accounts,
                        cell(a, "is_active"),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "ADDRESS",
                    "PROTOCOLS",
                    "NODES",
                    "ACCOUNTS",
                    "ACTIVE",
                ],
                &rows,
            );
            Ok(Outcome::Ok)
        }
    }
}

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Add an account to an asset. The secret comes from --secret-file, or
    /// from stdin (all of it), or is typed on the terminal — never argv.
    Add {
        asset: String,
        /// The account's name in grants (`root`, `deploy`).
        name: String,
        /// The login on the asset (default: the name).
        #[arg(long)]
        username: Option<String>,
        /// password or ssh_key.
        #[arg(long = "type", value_name = "TYPE", value_parser = named::<SecretType>, default_value = "password")]
        secret_type: SecretType,
        /// File holding the secret.
        #[arg(long, value_name = "FILE", conflicts_with = "no_secret")]
        secret_file: Option<PathBuf>,
        /// No secret (the user types it at connect time).
        #[arg(long)]
        no_secret: bool,
        /// Used by jms to manage the asset.
        #[arg(long)]
        privileged: bool,
    },
    /// List accounts (of one asset, or of all); never their secrets.
    List {
        asset: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
}

fn read_secret(
    asset: &str,
    name: &str,
    secret_file: Option<PathBuf>,
    kind: SecretType,
) -> Result<String> {
    let text = if let Some(path) = secret_file {
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?
    } else if std::io::stdin().is_terminal() {
        if kind == SecretType::SshKey {
            bail!("give the key with --secret-file FILE or on stdin");
        }
        rpassword::prompt_password(format!("Password of {name}@{asset}: "))
            .context("reading the secret")?
    } else {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the secret from stdin")?;
        text
    };
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        bail!("empty secret (give --no-secret for an account without one)");
    }
    Ok(secret)
}

pub fn account(server: &ServerArgs, command: AccountCommand) -> Result<Outcome> {
    match command {
        AccountCommand::Add {
            asset,
            name,
            username,
            secret_type,
            secret_file,
            no_secret,
            privileged,
        } => {
            let secret = if no_secret {
                None
            } else {
                Some(Secret::new(read_secret(
                    &asset,
                    &name,
                    secret_file,
                    secret_type,
                )?))
            };
            let account = jms_core::model::Account {
                username: username.unwrap_or_else(|| name.clone()),
                name,
                secret_type,
                secret,
                secret_file: None,
                privileged,
            };
            connect(server)?.call(
                Method::POST,
                &["api", "v1", "assets", &asset, "accounts"],
                &[],
                Some(&body(&account)),
            )?;
            println!("created account {}@{asset}", account.name);
            Ok(Outcome::Ok)
        }
        AccountCommand::List { asset, list } => {
            let client = connect(server)?;
            let columns = [
                ("ASSET", "asset"),
                ("NAME", "name"),
                ("USERNAME", "username"),
                ("TYPE", "secret_type"),
                ("PRIVILEGED", "privileged"),
                ("SECRET", "has_secret"),
            ];
            match asset {
                Some(asset) => list.show(
                    &client,
                    &["api", "v1", "assets", &asset, "accounts"],
                    &columns,
                ),
                None => list.show(&client, &["api", "v1", "accounts"], &columns),
            }
        }
    }
}

// ---- grants and filters --------------------------------------------------

// Parsed once per process: the size of the biggest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum GrantCommand {
    /// Create a grant: who (users, groups) × what (assets, nodes) × as whom
    /// (accounts) × how (protocols) × which actions × when.
    Add {
        name: String,
        #[arg(long = "user", value_name = "USER")]
        users: Vec<String>,
        #[arg(long = "group", value_name = "GROUP")]
        user_groups: Vec<String>,
        #[arg(long = "asset", value_name = "ASSET")]
        assets: Vec<String>,
        #[arg(long = "node", value_name = "PATH")]
        nodes: Vec<String>,
        /// @ALL, @INPUT, @USER, @ANON or an account name (repeat for more).
        #[arg(long = "account", value_name = "ACCOUNT", required = true)]
        accounts: Vec<String>,
        /// all, ssh or sftp (default: all).
        #[arg(long = "protocol", value_name = "P", value_parser = named::<ProtocolChoice>)]
        protocols: Vec<ProtocolChoice>,
        /// all, connect, upload, download, delete, copy, paste, share
        /// (default: connect).
        #[arg(long = "action", value_name = "X", value_parser = named::<ActionChoice>)]
        actions: Vec<ActionChoice>,
        /// Start (default: now).
        #[arg(long, value_name = "DATE", value_parser = Timestamp::parse)]
        start: Option<Timestamp>,
        /// End, exclusive (default: never).
        #[arg(long, value_name = "DATE", value_parser = Timestamp::parse)]
        expires: Option<Timestamp>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// List grants.
    List(ListArgs),
    /// Delete (revoke) a grant: bastions end the live sessions it alone
    /// allowed at their next sync.
    Delete { name: String },
}

pub fn grant(server: &ServerArgs, command: GrantCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        GrantCommand::Add {
            name,
            users,
            user_groups,
            assets,
            nodes,
            accounts,
            protocols,
            actions,
            start,
            expires,
            disabled,
            comment,
        } => {
            let grant = Grant {
                name,
                users,
                user_groups,
                assets,
                nodes,
                accounts,
                protocols: if protocols.is_empty() {
                    vec![ProtocolChoice::All]
                } else {
                    protocols
                },
                actions: if actions.is_empty() {
                    vec![ActionChoice::Connect]
                } else {
                    actions
                },
                date_start: start,
                date_expired: expires,
                is_active: !disabled,
                comment,
            };
            client.call(
                Method::POST,
                &["api", "v1", "grants"],
                &[],
                Some(&body(&grant)),
            )?;
            println!("created grant {}", grant.name);
            Ok(Outcome::Ok)
        }
        GrantCommand::Delete { name } => {
            client.call(Method::DELETE, &["api", "v1", "grants", &name], &[], None)?;
            println!("deleted grant {name}");
            Ok(Outcome::Ok)
        }
        GrantCommand::List(list) => list.show(
            &client,
            &["api", "v1", "grants"],
            &[
                ("NAME", "name"),
                ("USERS", "users"),
                ("GROUPS", "user_groups"),
                ("ASSETS", "assets"),
                ("NODES", "nodes"),
                ("ACCOUNTS", "accounts"),
                ("PROTOCOLS", "protocols"),
                ("ACTIONS", "actions"),
                ("EXPIRES", "date_expired"),
                ("ACTIVE", "is_active"),
            ],
        ),
    }
}

#[derive(Subcommand)]
pub enum FilterCommand {
    /// Create a command filter. Without --user/--group it applies to every
    /// user; without --asset/--node to every asset; without --account to
    /// every account.
    Add {
        name: String,
        /// A regular expression matched against each command (repeat).
        #[arg(long = "rule", value_name = "REGEX", required = true)]
        rules: Vec<String>,
        /// deny or allow.
        #[arg(long, value_parser = named::<FilterAction>, default_value = "deny")]
        action: FilterAction,
        /// 1 (checked first) to 100.
        #[arg(long, default_value_t = 50)]
        priority: u8,
        #[arg(long = "user", value_name = "USER")]
        users: Vec<String>,
        #[arg(long = "group", value_name = "GROUP")]
        user_groups: Vec<String>,
        #[arg(long = "asset", value_name = "ASSET")]
        assets: Vec<String>,
        #[arg(long = "node", value_name = "PATH")]
        nodes: Vec<String>,
        #[arg(long = "account", value_name = "ACCOUNT")]
        accounts: Vec<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// List command filters.
    List(ListArgs),
}

pub fn filter(server: &ServerArgs, command: FilterCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        FilterCommand::Add {
            name,
            rules,
            action,
            priority,
            users,
            user_groups,
            assets,
            nodes,
            accounts,
            disabled,
        } => {
            let every = || vec![jms_core::model::alias::ALL.to_string()];
            let filter = CommandFilter {
                name,
                priority,
                action,
                rules,
                users: if users.is_empty() && user_groups.is_empty() {
                    every()
                } else {
                    users
                },
                user_groups,
                assets: if assets.is_empty() && nodes.is_empty() {
                    every()
                } else {
                    assets
                },
                nodes,
                accounts: if accounts.is_empty() {
                    every()
                } else {
                    accounts
                },
                is_active: !disabled,
            };
            client.call(
                Method::POST,
                &["api", "v1", "filters"],
                &[],
                Some(&body(&filter)),
            )?;
            println!("created command filter {}", filter.name);
            Ok(Outcome::Ok)
        }
        FilterCommand::List(list) => list.show(
            &client,
            &["api", "v1", "filters"],
            &[
                ("NAME", "name"),
                ("PRIORITY", "priority"),
                ("ACTION", "action"),
                ("RULES", "rules"),
                ("USERS", "users"),
                ("ASSETS", "assets"),
                ("ACCOUNTS", "accounts"),
                ("ACTIVE", "is_active"),
            ],
        ),
    }
}
