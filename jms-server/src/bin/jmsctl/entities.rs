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
use serde_json::{json, Map, Value};

use crate::manage::{self, check_as, same_text, strings, DeleteArgs, Entity, JsonArg, ListChange};
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
        #[command(flatten)]
        out: JsonArg,
    },
    /// List users.
    List(ListArgs),
    /// Disable a user (she can no longer log in; her grants stay).
    Disable { username: String },
    /// Enable a disabled user.
    Enable { username: String },
    /// Delete a user (her uid is never given to anyone else).
    Delete {
        username: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
    /// Mail her a new one-time set-password link (older links stop working).
    SendLink { username: String },
    /// Show one user.
    Show {
        username: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Change a user's fields.
    Set(UserSet),
    /// Edit a user as YAML in $EDITOR (checked, diff shown, then applied).
    Edit { username: String },
    /// Mail her a set-password link, or (--stdin) set a new password read
    /// from the first line of stdin (checked against the password rules).
    ResetPassword {
        username: String,
        /// Read the new password from stdin instead of mailing a link.
        #[arg(long)]
        stdin: bool,
    },
    /// Forget her TOTP secret: she enrolls a new one at her next login.
    ResetMfa { username: String },
    /// Her SSH public keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Lift a lockout after failed logins, on every bastion at its next sync.
    Unlock { username: String },
}

#[derive(Args)]
pub struct UserSet {
    username: String,
    /// Full name.
    #[arg(long)]
    name: Option<String>,
    #[arg(long, conflicts_with = "no_email")]
    email: Option<String>,
    /// Remove her email address.
    #[arg(long)]
    no_email: bool,
    /// Expiry (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_name = "DATE", value_parser = Timestamp::parse, conflicts_with = "no_expires")]
    expires: Option<Timestamp>,
    /// She never expires.
    #[arg(long)]
    no_expires: bool,
    /// true (enabled) or false (disabled).
    #[arg(long, value_name = "BOOL")]
    active: Option<bool>,
    #[arg(long = "add-group", value_name = "GROUP")]
    add_groups: Vec<String>,
    #[arg(long = "remove-group", value_name = "GROUP")]
    remove_groups: Vec<String>,
    #[arg(long = "add-key", value_name = "KEY")]
    add_keys: Vec<String>,
    #[arg(long = "remove-key", value_name = "KEY")]
    remove_keys: Vec<String>,
    /// A network she may log in from (CIDR).
    #[arg(long = "add-allow-from", value_name = "NET")]
    add_allow_from: Vec<String>,
    #[arg(long = "remove-allow-from", value_name = "NET")]
    remove_allow_from: Vec<String>,
    /// A network she may never log in from (CIDR).
    #[arg(long = "add-deny-from", value_name = "NET")]
    add_deny_from: Vec<String>,
    #[arg(long = "remove-deny-from", value_name = "NET")]
    remove_deny_from: Vec<String>,
    #[command(flatten)]
    out: JsonArg,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// List her keys.
    List {
        username: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Add a key (the OpenSSH line, or --file with a .pub file).
    Add {
        username: String,
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        key: Option<String>,
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Remove a key: its whole line, its number in `key list`, or its
    /// comment when one key has it.
    Remove { username: String, key: String },
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
            out,
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
            if out.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
                return Ok(Outcome::Ok);
            }
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
        UserCommand::Delete { username, args } => {
            let client = connect(server)?;
            let doc = manage::policy(&client)?;
            let is = |u: &str| u == username;
            let groups: Vec<String> = doc["users"]
                .as_array()
                .and_then(|users| users.iter().find(|u| u["username"] == username.as_str()))
                .and_then(|u| u["groups"].as_array())
                .map(|g| {
                    g.iter()
                        .filter_map(|g| g.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let effects = vec![
                ("user groups she leaves".to_string(), groups),
                (
                    "grants name her".to_string(),
                    manage::naming(&doc, "grants", "name", "users", is),
                ),
                (
                    "command filters name her".to_string(),
                    manage::naming(&doc, "command_filters", "name", "users", is),
                ),
            ];
            manage::delete(
                &client,
                &user_entity(&username),
                effects,
                &[
                    "the server refuses while grants or filters name her".to_string(),
                    "her uid is never given to anyone else; her sessions' audit stays".to_string(),
                ],
                args,
            )
        }
        UserCommand::Show { username, out } => {
            manage::show(&connect(server)?, &user_entity(&username), out)
        }
        UserCommand::Edit { username } => manage::edit(&connect(server)?, &user_entity(&username)),
        UserCommand::Set(set) => user_set(server, set),
        UserCommand::ResetPassword { username, stdin } => {
            if !stdin {
                return crate::mail::send_link(server, &username);
            }
            let client = connect(server)?;
            let password = crate::hash_password::read_password()?;
            let settings = client.get(&["api", "v1", "settings"], &[])?;
            let security: jms_server::settings::Security =
                serde_json::from_value(settings["security"].clone())
                    .context("the server's security settings")?;
            let unmet: Vec<String> = jms_server::selfservice::rules::rules(&security)
                .into_iter()
                .filter(|rule| !rule.met_by(&password))
                .map(|rule| rule.text)
                .collect();
            if !unmet.is_empty() {
                bail!("password refused: {}", unmet.join("; "));
            }
            let hash = hash_password(&password, DEFAULT_ITERATIONS)?;
            let entity = user_entity(&username);
            client
                .call(
                    Method::PATCH,
                    &["api", "v1", "users", &username],
                    &[],
                    Some(&json!({ "password_hash": hash })),
                )
                .with_context(|| format!("user {username} not changed"))?;
            println!("set a new password for {} {}", entity.kind, entity.label);
            Ok(Outcome::Ok)
        }
        UserCommand::ResetMfa { username } => {
            let client = connect(server)?;
            let entity = user_entity(&username);
            let view = entity.fetch(&client)?;
            if view["has_totp"] != Value::Bool(true) {
                println!("user {username} has no TOTP secret: nothing to reset");
                return Ok(Outcome::Ok);
            }
            client
                .call(
                    Method::PATCH,
                    &["api", "v1", "users", &username],
                    &[],
                    Some(&json!({ "totp_secret": null })),
                )
                .with_context(|| format!("user {username} not changed"))?;
            println!("reset the TOTP of user {username}: she enrolls again at her next login");
            Ok(Outcome::Ok)
        }
        UserCommand::Key(command) => user_key(server, command),
        UserCommand::Unlock { username } => {
            let client = connect(server)?;
            let answer = client
                .call(
                    Method::POST,
                    &["api", "v1", "users", &username, "unlock"],
                    &[],
                    None,
                )?
                .unwrap_or_default();
            let bastions = answer["bastions"].as_array().map_or(0, Vec::len);
            println!(
                "unlock of user {username} sent to {bastions} bastion{} (each lifts her lockout at its next control poll)",
                if bastions == 1 { "" } else { "s" }
            );
            Ok(Outcome::Ok)
        }
    }
}

/// What an `add` prints: the created entity as JSON, or `text`.
fn created_as(out: JsonArg, created: Option<Value>, text: String) -> Result<()> {
    if out.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&created.unwrap_or_default())?
        );
    } else {
        println!("{text}");
    }
    Ok(())
}

fn segments(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|p| p.to_string()).collect()
}

fn user_entity(username: &str) -> Entity {
    Entity {
        kind: "user",
        label: username.to_string(),
        segments: segments(&["api", "v1", "users", username]),
        key: "username",
        server_fields: &[
            "uid",
            "has_password",
            "has_totp",
            "created_at",
            "updated_at",
        ],
        check: check_as::<User>,
    }
}

fn user_set(server: &ServerArgs, set: UserSet) -> Result<Outcome> {
    let client = connect(server)?;
    let entity = user_entity(&set.username);
    let mut patch = Map::new();
    if let Some(name) = set.name {
        patch.insert("name".into(), Value::String(name));
    }
    if let Some(email) = set.email {
        patch.insert("email".into(), Value::String(email));
    }
    if set.no_email {
        patch.insert("email".into(), Value::Null);
    }
    if let Some(expires) = set.expires {
        patch.insert("date_expired".into(), body(&expires));
    }
    if set.no_expires {
        patch.insert("date_expired".into(), Value::Null);
    }
    if let Some(active) = set.active {
        patch.insert("is_active".into(), Value::Bool(active));
    }
    let lists = [
        ListChange {
            field: "groups",
            add: strings(&set.add_groups),
            remove: &set.remove_groups,
            names: same_text,
        },
        ListChange {
            field: "public_keys",
            add: strings(&set.add_keys),
            remove: &set.remove_keys,
            names: same_text,
        },
        ListChange {
            field: "login_acl.allow_from",
            add: strings(&set.add_allow_from),
            remove: &set.remove_allow_from,
            names: same_text,
        },
        ListChange {
            field: "login_acl.deny_from",
            add: strings(&set.add_deny_from),
            remove: &set.remove_deny_from,
            names: same_text,
        },
    ];
    with_lists(&client, &entity, &lists, &mut patch)?;
    manage::patch(&client, &entity, patch, set.out)
}

/// Reads the entity when a list changes, and applies the list changes.
fn with_lists(
    client: &Client,
    entity: &Entity,
    lists: &[ListChange<'_>],
    patch: &mut Map<String, Value>,
) -> Result<()> {
    if lists
        .iter()
        .all(|l| l.add.is_empty() && l.remove.is_empty())
    {
        return Ok(());
    }
    let current = entity.fetch(client)?;
    manage::apply_lists(entity, &current, lists, patch)
}

fn user_key(server: &ServerArgs, command: KeyCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        KeyCommand::List { username, out } => {
            let view = user_entity(&username).fetch(&client)?;
            let keys: Vec<String> = view["public_keys"]
                .as_array()
                .map(|k| {
                    k.iter()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
                return Ok(Outcome::Ok);
            }
            let rows: Vec<Vec<String>> = keys
                .iter()
                .enumerate()
                .map(|(i, key)| {
                    let mut parts = key.split_whitespace();
                    let kind = parts.next().unwrap_or_default().to_string();
                    let blob = parts.next().unwrap_or_default();
                    let comment = parts.collect::<Vec<_>>().join(" ");
                    let tail: String = blob
                        .chars()
                        .rev()
                        .take(16)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    vec![(i + 1).to_string(), kind, format!("…{tail}"), comment]
                })
                .collect();
            print_table(&["#", "TYPE", "KEY", "COMMENT"], &rows);
            Ok(Outcome::Ok)
        }
        KeyCommand::Add {
            username,
            key,
            file,
        } => {
            let key = match (key, file) {
                (Some(key), _) => key,
                (None, Some(path)) => std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
                (None, None) => bail!("give the key or --file FILE"),
            };
            let key = key.trim().to_string();
            if key.is_empty() || key.contains('\n') {
                bail!("one OpenSSH public key line, please");
            }
            let entity = user_entity(&username);
            let mut patch = Map::new();
            with_lists(
                &client,
                &entity,
                &[ListChange {
                    field: "public_keys",
                    add: vec![Value::String(key)],
                    remove: &[],
                    names: same_text,
                }],
                &mut patch,
            )?;
            manage::patch(&client, &entity, patch, JsonArg { json: false })
        }
        KeyCommand::Remove { username, key } => {
            let entity = user_entity(&username);
            let view = entity.fetch(&client)?;
            let keys: Vec<&str> = view["public_keys"]
                .as_array()
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let comment = |k: &str| k.split_whitespace().skip(2).collect::<Vec<_>>().join(" ");
            let line = if let Some(exact) = keys.iter().find(|k| k.trim() == key.trim()) {
                exact.to_string()
            } else if let Some(k) = key
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| keys.get(i))
            {
                k.to_string()
            } else {
                let by_comment: Vec<&&str> = keys.iter().filter(|k| comment(k) == key).collect();
                match by_comment.as_slice() {
                    [one] => one.to_string(),
                    [] => bail!("user {username} has no key `{key}` (see `jmsctl user key list {username}`)"),
                    _ => bail!("user {username} has several keys with the comment `{key}`: give the key's number or whole line"),
                }
            };
            let mut patch = Map::new();
            manage::apply_lists(
                &entity,
                &view,
                &[ListChange {
                    field: "public_keys",
                    add: vec![],
                    remove: &[line],
                    names: same_text,
                }],
                &mut patch,
            )?;
            manage::patch(&client, &entity, patch, JsonArg { json: false })
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
        #[command(flatten)]
        out: JsonArg,
    },
    /// List user groups and their members.
    List(ListArgs),
    /// Show one user group and its members.
    Show {
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Change a user group: its comment, its members.
    Set {
        name: String,
        #[arg(long)]
        comment: Option<String>,
        /// A user who joins it (repeat for more).
        #[arg(long = "add-member", value_name = "USER")]
        add_members: Vec<String>,
        /// A user who leaves it (repeat for more).
        #[arg(long = "remove-member", value_name = "USER")]
        remove_members: Vec<String>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Delete a user group (its members leave it).
    Delete {
        name: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
    /// Edit a user group as YAML in $EDITOR.
    Edit { name: String },
}

fn group_entity(name: &str) -> Entity {
    Entity {
        kind: "user group",
        label: name.to_string(),
        segments: segments(&["api", "v1", "groups", name]),
        key: "name",
        server_fields: &["gid", "members", "created_at", "updated_at"],
        check: check_as::<UserGroup>,
    }
}

pub fn group(server: &ServerArgs, command: GroupCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        GroupCommand::Show { name, out } => manage::show(&client, &group_entity(&name), out),
        GroupCommand::Edit { name } => manage::edit(&client, &group_entity(&name)),
        GroupCommand::Set {
            name,
            comment,
            add_members,
            remove_members,
            out,
        } => {
            let entity = group_entity(&name);
            let members = [name.clone()];
            // Membership is a field of each user: one patch per member.
            for (users, add) in [(&add_members, true), (&remove_members, false)] {
                for user in users {
                    let member = user_entity(user);
                    let mut patch = Map::new();
                    with_lists(
                        &client,
                        &member,
                        &[ListChange {
                            field: "groups",
                            add: if add { strings(&members) } else { vec![] },
                            remove: if add { &[] } else { &members },
                            names: same_text,
                        }],
                        &mut patch,
                    )?;
                    client
                        .call(
                            Method::PATCH,
                            &["api", "v1", "users", user],
                            &[],
                            Some(&Value::Object(patch)),
                        )
                        .with_context(|| format!("user {user} not changed"))?;
                    if !out.json {
                        println!(
                            "user {user} {} user group {name}",
                            if add { "joined" } else { "left" }
                        );
                    }
                }
            }
            let mut patch = Map::new();
            if let Some(comment) = comment {
                patch.insert("comment".into(), Value::String(comment));
            }
            if patch.is_empty() && !(add_members.is_empty() && remove_members.is_empty()) {
                if out.json {
                    println!("{}", serde_json::to_string_pretty(&entity.fetch(&client)?)?);
                }
                return Ok(Outcome::Ok);
            }
            manage::patch(&client, &entity, patch, out)
        }
        GroupCommand::Delete { name, args } => {
            let doc = manage::policy(&client)?;
            let is = |g: &str| g == name;
            let effects = vec![
                (
                    "members leave it".to_string(),
                    manage::naming(&doc, "users", "username", "groups", is),
                ),
                (
                    "grants name it".to_string(),
                    manage::naming(&doc, "grants", "name", "user_groups", is),
                ),
                (
                    "command filters name it".to_string(),
                    manage::naming(&doc, "command_filters", "name", "user_groups", is),
                ),
            ];
            manage::delete(
                &client,
                &group_entity(&name),
                effects,
                &["the server refuses while grants or filters name it".to_string()],
                args,
            )
        }
        GroupCommand::Add { name, comment, out } => {
            let group = UserGroup { name, comment };
            let created = client
                .call(
                    Method::POST,
                    &["api", "v1", "groups"],
                    &[],
                    Some(&body(&group)),
                )?
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&created)?);
                return Ok(Outcome::Ok);
            }
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
    Add {
        path: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List declared nodes.
    List(ListArgs),
    /// Show a node and what sits in it.
    Show {
        path: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Rename or move a node and everything under it (the assets, grants
    /// and filters naming them follow).
    Set {
        path: String,
        /// Its new path.
        #[arg(long = "path", value_name = "PATH")]
        new_path: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Delete a node (the server refuses while assets, grants or filters
    /// use it or a node under it).
    Delete {
        path: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
}

/// The node declared at `path` (nodes are addressed by id).
fn node_entity(client: &Client, path: &str) -> Result<Entity> {
    let page = client.get(
        &["api", "v1", "nodes"],
        &[("q", path.to_string()), ("limit", "1000".to_string())],
    )?;
    let id = page["items"]
        .as_array()
        .and_then(|items| items.iter().find(|n| n["path"] == path))
        .and_then(|n| n["id"].as_i64())
        .ok_or_else(|| {
            anyhow::Error::new(jms_server::client::ClientError::Refused {
                status: 404,
                message: format!("node `{path}` is not declared"),
            })
        })?;
    Ok(Entity {
        kind: "node",
        label: path.to_string(),
        segments: segments(&["api", "v1", "nodes", &id.to_string()]),
        key: "path",
        server_fields: &["id", "created_at"],
        check: |_| Ok(()),
    })
}

/// What uses the node at `path` or a node under it.
fn node_effects(doc: &Value, path: &str) -> manage::Effects {
    let here = |p: &str| manage::under(p, path);
    let below: Vec<String> = doc["nodes"]
        .as_array()
        .map(|nodes| {
            nodes
                .iter()
                .filter_map(Value::as_str)
                .filter(|p| *p != path && here(p))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    vec![
        ("nodes under it".to_string(), below),
        (
            "assets in it or under it".to_string(),
            manage::naming(doc, "assets", "name", "nodes", here),
        ),
        (
            "grants name it or a node under it".to_string(),
            manage::naming(doc, "grants", "name", "nodes", here),
        ),
        (
            "command filters name it or a node under it".to_string(),
            manage::naming(doc, "command_filters", "name", "nodes", here),
        ),
    ]
}

pub fn node(server: &ServerArgs, command: NodeCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        NodeCommand::Show { path, out } => {
            let entity = node_entity(&client, &path)?;
            let mut view = entity.fetch(&client)?;
            let doc = manage::policy(&client)?;
            if let Value::Object(map) = &mut view {
                for (what, names) in node_effects(&doc, &path) {
                    let field = what
                        .split_whitespace()
                        .next()
                        .unwrap_or("other")
                        .to_string();
                    let field = if field == "command" {
                        "filters".to_string()
                    } else {
                        field
                    };
                    map.insert(field, Value::from(names));
                }
            }
            if out.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                manage::print_detail(&view);
            }
            Ok(Outcome::Ok)
        }
        NodeCommand::Set {
            path,
            new_path,
            out,
        } => {
            let entity = node_entity(&client, &path)?;
            let mut patch = Map::new();
            patch.insert("path".into(), Value::String(new_path));
            manage::patch(&client, &entity, patch, out)
        }
        NodeCommand::Delete { path, args } => {
            let entity = node_entity(&client, &path)?;
            let doc = manage::policy(&client)?;
            manage::delete(
                &client,
                &entity,
                node_effects(&doc, &path),
                &["the server refuses while assets, grants or filters use it".to_string()],
                args,
            )
        }
        NodeCommand::Add { path, out } => {
            let created = client.call(
                Method::POST,
                &["api", "v1", "nodes"],
                &[],
                Some(&json!({ "path": path })),
            )?;
            created_as(out, created, format!("created node {path}"))?;
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
        /// The network zone it sits in: its account jobs run only on
        /// bastions put in this zone (`jmsctl bastion zone`).
        #[arg(long)]
        zone: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        disabled: bool,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List assets with their accounts.
    List(ListArgs),
    /// Show one asset and its accounts.
    Show {
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Change an asset's fields.
    Set(AssetSet),
    /// Delete an asset and its accounts.
    Delete {
        name: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
    /// Edit an asset as YAML in $EDITOR (its accounts: `jmsctl account`).
    Edit { name: String },
}

#[derive(Args)]
pub struct AssetSet {
    name: String,
    /// Host name or IP address.
    #[arg(long)]
    address: Option<String>,
    /// true (enabled) or false (disabled).
    #[arg(long, value_name = "BOOL")]
    active: Option<bool>,
    /// PROTOCOL[:PORT] (repeat for more).
    #[arg(long = "add-protocol", value_name = "P[:PORT]", value_parser = parse_protocol)]
    add_protocols: Vec<AssetProtocol>,
    /// PROTOCOL or PROTOCOL:PORT.
    #[arg(long = "remove-protocol", value_name = "P[:PORT]")]
    remove_protocols: Vec<String>,
    #[arg(long = "add-node", value_name = "PATH")]
    add_nodes: Vec<String>,
    #[arg(long = "remove-node", value_name = "PATH")]
    remove_nodes: Vec<String>,
    #[arg(long = "add-host-key", value_name = "KEY")]
    add_host_keys: Vec<String>,
    #[arg(long = "remove-host-key", value_name = "KEY")]
    remove_host_keys: Vec<String>,
    /// Its network zone (account jobs run only on bastions of this zone).
    #[arg(long, conflicts_with = "no_zone")]
    zone: Option<String>,
    /// Take it out of its zone (any bastion runs its jobs).
    #[arg(long)]
    no_zone: bool,
    #[command(flatten)]
    out: JsonArg,
}

fn asset_entity(name: &str) -> Entity {
    Entity {
        kind: "asset",
        label: name.to_string(),
        segments: segments(&["api", "v1", "assets", name]),
        key: "name",
        server_fields: &["accounts", "details", "created_at", "updated_at"],
        check: check_as::<Asset>,
    }
}

/// `ssh` names every ssh protocol of an asset, `ssh:2222` one.
fn names_protocol(item: &Value, name: &str) -> bool {
    let (proto, port) = match name.split_once(':') {
        Some((proto, port)) => (proto, Some(port)),
        None => (name, None),
    };
    item["name"].as_str() == Some(proto)
        && port.is_none_or(|port| port.parse::<u64>().ok() == item["port"].as_u64())
}

pub fn asset(server: &ServerArgs, command: AssetCommand) -> Result<Outcome> {
    match command {
        AssetCommand::Show { name, out } => {
            manage::show(&connect(server)?, &asset_entity(&name), out)
        }
        AssetCommand::Edit { name } => manage::edit(&connect(server)?, &asset_entity(&name)),
        AssetCommand::Set(set) => {
            let client = connect(server)?;
            let entity = asset_entity(&set.name);
            let mut patch = Map::new();
            if let Some(address) = set.address {
                patch.insert("address".into(), Value::String(address));
            }
            if let Some(active) = set.active {
                patch.insert("is_active".into(), Value::Bool(active));
            }
            if let Some(zone) = set.zone {
                patch.insert("zone".into(), Value::String(zone));
            } else if set.no_zone {
                patch.insert("zone".into(), Value::Null);
            }
            let lists = [
                ListChange {
                    field: "protocols",
                    add: set.add_protocols.iter().map(body).collect(),
                    remove: &set.remove_protocols,
                    names: names_protocol,
                },
                ListChange {
                    field: "nodes",
                    add: strings(&set.add_nodes),
                    remove: &set.remove_nodes,
                    names: same_text,
                },
                ListChange {
                    field: "host_keys",
                    add: strings(&set.add_host_keys),
                    remove: &set.remove_host_keys,
                    names: same_text,
                },
            ];
            with_lists(&client, &entity, &lists, &mut patch)?;
            manage::patch(&client, &entity, patch, set.out)
        }
        AssetCommand::Delete { name, args } => {
            let client = connect(server)?;
            let entity = asset_entity(&name);
            let view = entity.fetch(&client)?;
            let accounts: Vec<String> = view["accounts"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|a| a["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let doc = manage::policy(&client)?;
            let is = |a: &str| a == name;
            let effects = vec![
                ("accounts deleted with it".to_string(), accounts),
                (
                    "grants name it".to_string(),
                    manage::naming(&doc, "grants", "name", "assets", is),
                ),
                (
                    "command filters name it".to_string(),
                    manage::naming(&doc, "command_filters", "name", "assets", is),
                ),
            ];
            manage::delete(
                &client,
                &entity,
                effects,
                &["the server refuses while grants or filters name it".to_string()],
                args,
            )
        }
        AssetCommand::Add {
            name,
            address,
            protocols,
            nodes,
            host_keys,
            zone,
            disabled,
            out,
        } => {
            let asset = Asset {
                name,
                address,
                protocols,
                nodes,
                is_active: !disabled,
                accounts: Vec::new(),
                host_keys,
                zone,
            };
            let created = connect(server)?.call(
                Method::POST,
                &["api", "v1", "assets"],
                &[],
                Some(&body(&asset)),
            )?;
            created_as(out, created, format!("created asset {}", asset.name))?;
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
                        match cell(a, "zone") {
                            zone if zone.is_empty() => "-".into(),
                            zone => zone,
                        },
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
                    "ZONE",
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
        /// Login shell when jms pushes the account (default /bin/bash).
        #[arg(long)]
        shell: Option<String>,
        /// Supplementary group when jms pushes the account (repeatable).
        #[arg(long = "group", value_name = "GROUP")]
        groups: Vec<String>,
        /// What it may run as root through sudo (a sudoers command list),
        /// pushed as a sudoers snippet.
        #[arg(long, value_name = "COMMANDS")]
        sudo: Option<String>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Create or update the account on its asset with the asset's
    /// privileged account: user, shell, groups, its password or public key
    /// (a key pair or password is generated when it has no secret), its
    /// sudoers snippet. A second push changes nothing.
    Push {
        asset: String,
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Log in with the stored secret; the result shows in `account list`.
    Verify {
        asset: String,
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Change the secret: a new random password or key pair, applied with
    /// the privileged account, verified by logging in, and only then put
    /// in the vault (on any failure the old secret stays).
    Rotate {
        asset: String,
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Delete the account from its asset (the user, its home, its sudoers
    /// snippet) with the privileged account; the vault keeps it until
    /// `account delete`.
    Remove {
        asset: String,
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List the asset's users with a login shell (last login where known),
    /// those jms does not manage, and the host's facts.
    Discover {
        asset: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// List accounts (of one asset, or of all); never their secrets.
    List {
        asset: Option<String>,
        #[command(flatten)]
        list: ListArgs,
    },
    /// Show one account (never its secret).
    Show {
        asset: String,
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Change an account; --secret reads a new secret from the terminal
    /// or stdin, --secret-file from a file (never argv).
    Set {
        asset: String,
        name: String,
        /// The login on the asset.
        #[arg(long)]
        username: Option<String>,
        /// password or ssh_key.
        #[arg(long = "type", value_name = "TYPE", value_parser = named::<SecretType>)]
        secret_type: Option<SecretType>,
        /// true or false.
        #[arg(long, value_name = "BOOL")]
        privileged: Option<bool>,
        /// Set a new secret, typed or from stdin.
        #[arg(long, conflicts_with_all = ["secret_file", "no_secret"])]
        secret: bool,
        /// Set a new secret from this file.
        #[arg(long, value_name = "FILE", conflicts_with = "no_secret")]
        secret_file: Option<PathBuf>,
        /// Remove the secret (the user types it at connect time).
        #[arg(long)]
        no_secret: bool,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Delete an account.
    Delete {
        asset: String,
        name: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
    /// Edit an account as YAML in $EDITOR (its secret: `account set --secret`).
    Edit { asset: String, name: String },
}

fn account_entity(asset: &str, name: &str) -> Entity {
    Entity {
        kind: "account",
        label: format!("{name}@{asset}"),
        segments: segments(&["api", "v1", "assets", asset, "accounts", name]),
        key: "name",
        server_fields: &[
            "asset",
            "has_secret",
            "verified",
            "verified_at",
            "created_at",
            "updated_at",
        ],
        check: check_as::<jms_core::model::Account>,
    }
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
        AccountCommand::Push { asset, name, out } => {
            crate::jobs::run_job(server, "push", &asset, &name, out)
        }
        AccountCommand::Verify { asset, name, out } => {
            crate::jobs::run_job(server, "verify", &asset, &name, out)
        }
        AccountCommand::Rotate { asset, name, out } => {
            crate::jobs::run_job(server, "rotate", &asset, &name, out)
        }
        AccountCommand::Remove { asset, name, out } => {
            crate::jobs::run_job(server, "remove", &asset, &name, out)
        }
        AccountCommand::Discover { asset, out } => {
            crate::jobs::run_job(server, "discover", &asset, "", out)
        }
        AccountCommand::Show { asset, name, out } => {
            manage::show(&connect(server)?, &account_entity(&asset, &name), out)
        }
        AccountCommand::Edit { asset, name } => {
            manage::edit(&connect(server)?, &account_entity(&asset, &name))
        }
        AccountCommand::Set {
            asset,
            name,
            username,
            secret_type,
            privileged,
            secret,
            secret_file,
            no_secret,
            out,
        } => {
            let client = connect(server)?;
            let entity = account_entity(&asset, &name);
            let mut patch = Map::new();
            if let Some(username) = username {
                patch.insert("username".into(), Value::String(username));
            }
            if let Some(kind) = secret_type {
                patch.insert("secret_type".into(), body(&kind));
            }
            if let Some(privileged) = privileged {
                patch.insert("privileged".into(), Value::Bool(privileged));
            }
            if secret || secret_file.is_some() {
                let kind = match secret_type {
                    Some(kind) => kind,
                    None => named::<SecretType>(
                        entity.fetch(&client)?["secret_type"]
                            .as_str()
                            .unwrap_or("password"),
                    )
                    .map_err(|e| anyhow::anyhow!(e))?,
                };
                let text = read_secret(&asset, &name, secret_file, kind)?;
                patch.insert("secret".into(), Value::String(text));
            }
            if no_secret {
                patch.insert("secret".into(), Value::Null);
            }
            manage::patch(&client, &entity, patch, out)
        }
        AccountCommand::Delete { asset, name, args } => {
            let client = connect(server)?;
            let doc = manage::policy(&client)?;
            let asset_row = doc["assets"]
                .as_array()
                .and_then(|a| a.iter().find(|a| a["name"] == asset.as_str()))
                .cloned()
                .unwrap_or_default();
            let asset_nodes: Vec<&str> = asset_row["nodes"]
                .as_array()
                .map(|n| n.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // Grants that name this account and cover this asset.
            let grants: Vec<String> = doc["grants"]
                .as_array()
                .map(|grants| {
                    grants
                        .iter()
                        .filter(|g| {
                            let has = |field: &str, f: &dyn Fn(&str) -> bool| {
                                g[field]
                                    .as_array()
                                    .is_some_and(|l| l.iter().filter_map(Value::as_str).any(f))
                            };
                            has("accounts", &|a| a == name)
                                && (has("assets", &|a| a == asset)
                                    || has("nodes", &|n| {
                                        asset_nodes.iter().any(|an| manage::under(an, n))
                                    }))
                        })
                        .filter_map(|g| g["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            manage::delete(
                &client,
                &account_entity(&asset, &name),
                vec![("grants name it on this asset".to_string(), grants)],
                &["logins as it through those grants stop at the bastions' next sync".to_string()],
                args,
            )
        }
        AccountCommand::Add {
            asset,
            name,
            username,
            secret_type,
            secret_file,
            no_secret,
            privileged,
            shell,
            groups,
            sudo,
            out,
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
                shell,
                groups,
                sudo,
            };
            let created = connect(server)?.call(
                Method::POST,
                &["api", "v1", "assets", &asset, "accounts"],
                &[],
                Some(&body(&account)),
            )?;
            created_as(
                out,
                created,
                format!("created account {}@{asset}", account.name),
            )?;
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
                ("VERIFIED", "verified"),
                ("VERIFIED AT", "verified_at"),
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
        #[command(flatten)]
        out: JsonArg,
    },
    /// List grants.
    List(ListArgs),
    /// Delete (revoke) a grant: bastions end the live sessions it alone
    /// allowed at their next sync.
    Delete {
        name: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
    /// Show one grant.
    Show {
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Change a grant's fields.
    Set(GrantSet),
    /// Edit a grant as YAML in $EDITOR.
    Edit { name: String },
}

#[derive(Args)]
pub struct GrantSet {
    name: String,
    #[arg(long = "add-user", value_name = "USER")]
    add_users: Vec<String>,
    #[arg(long = "remove-user", value_name = "USER")]
    remove_users: Vec<String>,
    #[arg(long = "add-group", value_name = "GROUP")]
    add_groups: Vec<String>,
    #[arg(long = "remove-group", value_name = "GROUP")]
    remove_groups: Vec<String>,
    #[arg(long = "add-asset", value_name = "ASSET")]
    add_assets: Vec<String>,
    #[arg(long = "remove-asset", value_name = "ASSET")]
    remove_assets: Vec<String>,
    #[arg(long = "add-node", value_name = "PATH")]
    add_nodes: Vec<String>,
    #[arg(long = "remove-node", value_name = "PATH")]
    remove_nodes: Vec<String>,
    #[arg(long = "add-account", value_name = "ACCOUNT")]
    add_accounts: Vec<String>,
    #[arg(long = "remove-account", value_name = "ACCOUNT")]
    remove_accounts: Vec<String>,
    #[arg(long = "add-protocol", value_name = "P", value_parser = named::<ProtocolChoice>)]
    add_protocols: Vec<ProtocolChoice>,
    #[arg(long = "remove-protocol", value_name = "P")]
    remove_protocols: Vec<String>,
    #[arg(long = "add-action", value_name = "X", value_parser = named::<ActionChoice>)]
    add_actions: Vec<ActionChoice>,
    #[arg(long = "remove-action", value_name = "X")]
    remove_actions: Vec<String>,
    /// Start.
    #[arg(long, value_name = "DATE", value_parser = Timestamp::parse)]
    start: Option<Timestamp>,
    /// End, exclusive.
    #[arg(long, value_name = "DATE", value_parser = Timestamp::parse, conflicts_with = "no_expires")]
    expires: Option<Timestamp>,
    /// It never ends.
    #[arg(long)]
    no_expires: bool,
    /// true (in force) or false (disabled).
    #[arg(long, value_name = "BOOL")]
    active: Option<bool>,
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    out: JsonArg,
}

fn grant_entity(name: &str) -> Entity {
    Entity {
        kind: "grant",
        label: name.to_string(),
        segments: segments(&["api", "v1", "grants", name]),
        key: "name",
        server_fields: &["created_at", "updated_at"],
        check: check_as::<Grant>,
    }
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
            out,
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
            let created = client.call(
                Method::POST,
                &["api", "v1", "grants"],
                &[],
                Some(&body(&grant)),
            )?;
            created_as(out, created, format!("created grant {}", grant.name))?;
            Ok(Outcome::Ok)
        }
        GrantCommand::Delete { name, args } => {
            let entity = grant_entity(&name);
            let view = entity.fetch(&client)?;
            let list = |field: &str| -> Vec<String> {
                view[field]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let effects = vec![
                ("users it names".to_string(), list("users")),
                ("user groups it names".to_string(), list("user_groups")),
                ("assets it names".to_string(), list("assets")),
                ("nodes it names".to_string(), list("nodes")),
            ];
            manage::delete(
                &client,
                &entity,
                effects,
                &[
                    "bastions end the live sessions it alone allowed at their next sync"
                        .to_string(),
                ],
                args,
            )
        }
        GrantCommand::Show { name, out } => manage::show(&client, &grant_entity(&name), out),
        GrantCommand::Edit { name } => manage::edit(&client, &grant_entity(&name)),
        GrantCommand::Set(set) => {
            let entity = grant_entity(&set.name);
            let mut patch = Map::new();
            if let Some(start) = set.start {
                patch.insert("date_start".into(), body(&start));
            }
            if let Some(expires) = set.expires {
                patch.insert("date_expired".into(), body(&expires));
            }
            if set.no_expires {
                patch.insert("date_expired".into(), Value::Null);
            }
            if let Some(active) = set.active {
                patch.insert("is_active".into(), Value::Bool(active));
            }
            if let Some(comment) = set.comment {
                patch.insert("comment".into(), Value::String(comment));
            }
            let lists = [
                ListChange {
                    field: "users",
                    add: strings(&set.add_users),
                    remove: &set.remove_users,
                    names: same_text,
                },
                ListChange {
                    field: "user_groups",
                    add: strings(&set.add_groups),
                    remove: &set.remove_groups,
                    names: same_text,
                },
                ListChange {
                    field: "assets",
                    add: strings(&set.add_assets),
                    remove: &set.remove_assets,
                    names: same_text,
                },
                ListChange {
                    field: "nodes",
                    add: strings(&set.add_nodes),
                    remove: &set.remove_nodes,
                    names: same_text,
                },
                ListChange {
                    field: "accounts",
                    add: strings(&set.add_accounts),
                    remove: &set.remove_accounts,
                    names: same_text,
                },
                ListChange {
                    field: "protocols",
                    add: set.add_protocols.iter().map(body).collect(),
                    remove: &set.remove_protocols,
                    names: same_text,
                },
                ListChange {
                    field: "actions",
                    add: set.add_actions.iter().map(body).collect(),
                    remove: &set.remove_actions,
                    names: same_text,
                },
            ];
            with_lists(&client, &entity, &lists, &mut patch)?;
            manage::patch(&client, &entity, patch, set.out)
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
        #[command(flatten)]
        out: JsonArg,
    },
    /// List command filters.
    List(ListArgs),
    /// Show one command filter.
    Show {
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Change a command filter's fields.
    Set(FilterSet),
    /// Delete a command filter (its rules stop applying at the bastions'
    /// next sync).
    Delete {
        name: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
    /// Edit a command filter as YAML in $EDITOR.
    Edit { name: String },
}

#[derive(Args)]
pub struct FilterSet {
    name: String,
    #[arg(long = "add-rule", value_name = "REGEX")]
    add_rules: Vec<String>,
    #[arg(long = "remove-rule", value_name = "REGEX")]
    remove_rules: Vec<String>,
    /// deny or allow.
    #[arg(long, value_parser = named::<FilterAction>)]
    action: Option<FilterAction>,
    /// 1 (checked first) to 100.
    #[arg(long)]
    priority: Option<u8>,
    #[arg(long = "add-user", value_name = "USER")]
    add_users: Vec<String>,
    #[arg(long = "remove-user", value_name = "USER")]
    remove_users: Vec<String>,
    #[arg(long = "add-group", value_name = "GROUP")]
    add_groups: Vec<String>,
    #[arg(long = "remove-group", value_name = "GROUP")]
    remove_groups: Vec<String>,
    #[arg(long = "add-asset", value_name = "ASSET")]
    add_assets: Vec<String>,
    #[arg(long = "remove-asset", value_name = "ASSET")]
    remove_assets: Vec<String>,
    #[arg(long = "add-node", value_name = "PATH")]
    add_nodes: Vec<String>,
    #[arg(long = "remove-node", value_name = "PATH")]
    remove_nodes: Vec<String>,
    #[arg(long = "add-account", value_name = "ACCOUNT")]
    add_accounts: Vec<String>,
    #[arg(long = "remove-account", value_name = "ACCOUNT")]
    remove_accounts: Vec<String>,
    /// true (in force) or false (disabled).
    #[arg(long, value_name = "BOOL")]
    active: Option<bool>,
    #[command(flatten)]
    out: JsonArg,
}

fn filter_entity(name: &str) -> Entity {
    Entity {
        kind: "command filter",
        label: name.to_string(),
        segments: segments(&["api", "v1", "filters", name]),
        key: "name",
        server_fields: &["created_at", "updated_at"],
        check: check_as::<CommandFilter>,
    }
}

pub fn filter(server: &ServerArgs, command: FilterCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        FilterCommand::Show { name, out } => manage::show(&client, &filter_entity(&name), out),
        FilterCommand::Edit { name } => manage::edit(&client, &filter_entity(&name)),
        FilterCommand::Delete { name, args } => {
            let entity = filter_entity(&name);
            let view = entity.fetch(&client)?;
            let rules: Vec<String> = view["rules"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            manage::delete(
                &client,
                &entity,
                vec![("rules stop applying".to_string(), rules)],
                &[],
                args,
            )
        }
        FilterCommand::Set(set) => {
            let entity = filter_entity(&set.name);
            let mut patch = Map::new();
            if let Some(action) = set.action {
                patch.insert("action".into(), body(&action));
            }
            if let Some(priority) = set.priority {
                patch.insert("priority".into(), Value::from(priority));
            }
            if let Some(active) = set.active {
                patch.insert("is_active".into(), Value::Bool(active));
            }
            let lists = [
                ListChange {
                    field: "rules",
                    add: strings(&set.add_rules),
                    remove: &set.remove_rules,
                    names: same_text,
                },
                ListChange {
                    field: "users",
                    add: strings(&set.add_users),
                    remove: &set.remove_users,
                    names: same_text,
                },
                ListChange {
                    field: "user_groups",
                    add: strings(&set.add_groups),
                    remove: &set.remove_groups,
                    names: same_text,
                },
                ListChange {
                    field: "assets",
                    add: strings(&set.add_assets),
                    remove: &set.remove_assets,
                    names: same_text,
                },
                ListChange {
                    field: "nodes",
                    add: strings(&set.add_nodes),
                    remove: &set.remove_nodes,
                    names: same_text,
                },
                ListChange {
                    field: "accounts",
                    add: strings(&set.add_accounts),
                    remove: &set.remove_accounts,
                    names: same_text,
                },
            ];
            with_lists(&client, &entity, &lists, &mut patch)?;
            manage::patch(&client, &entity, patch, set.out)
        }
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
            out,
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
            let created = client.call(
                Method::POST,
                &["api", "v1", "filters"],
                &[],
                Some(&body(&filter)),
            )?;
            created_as(
                out,
                created,
                format!("created command filter {}", filter.name),
            )?;
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
