//! `jmsctl bastion …`: the fleet of enrolled bastions.
//!
//! - `token create [--ttl 1h] [--replace NAME]`: a one-time token a bastion
//!   enrolls with (`jms-agentd enroll --server URL --token T`); over TLS it
//!   is `SECRET.SHA256` where SHA256 is the server CA's, which the bastion
//!   checks before it sends the secret. Enrolling a name that is already
//!   enrolled needs `--replace NAME`.
//! - `list`, `show NAME`: status (online, silent past the server's alarm
//!   threshold, revoked), address, last sync, policy version held and how
//!   far behind, open sessions, spool backlog, jms-agentd version.
//! - `revoke NAME`: its key is refused from then on; its audit stays.
//! - `zone NAME ZONE` / `zone NAME --none`: the network zone it runs
//!   account jobs for (assets with that `zone`, and those with none).

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::manage::{self, DeleteArgs, JsonArg};
use crate::remote::{cell, connect, print_table, ServerArgs};
use crate::Outcome;

#[derive(Subcommand)]
pub enum BastionCommand {
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List the enrolled bastions and where each stands.
    List {
        #[command(flatten)]
        out: JsonArg,
    },
    /// Show one bastion.
    Show {
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Revoke a bastion whose key may be compromised: its sync requests
    /// and uploads are refused from now on; its sessions' audit stays.
    Revoke {
        name: String,
        #[command(flatten)]
        args: DeleteArgs,
    },
    /// Put a bastion in a network zone: it then runs the account jobs of
    /// that zone's assets (and of assets with no zone); the jobs of a
    /// zone's assets run only on its bastions.
    Zone {
        name: String,
        /// The zone (1-64 of a-z A-Z 0-9 _ . -).
        #[arg(required_unless_present = "none", conflicts_with = "none")]
        zone: Option<String>,
        /// Take it out of its zone: it then runs only the jobs of assets
        /// with no zone.
        #[arg(long)]
        none: bool,
        #[command(flatten)]
        out: JsonArg,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a one-time enrollment token and print it (shown once).
    Create {
        /// How long it stays valid (30m, 1h, 2d; at most 30 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Let this token give the already enrolled bastion NAME a new key
        /// (a reinstalled or revoked bastion); it then enrolls only NAME.
        #[arg(long, value_name = "NAME")]
        replace: Option<String>,
    },
}

/// Seconds as `45s`, `12m`, `3h`, `2d`.
fn ago(secs: &Value) -> String {
    let Some(secs) = secs.as_i64() else {
        return "never".into();
    };
    match secs {
        s if s < 120 => format!("{s}s ago"),
        s if s < 7200 => format!("{}m ago", s / 60),
        s if s < 172_800 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}

fn or_dash(value: &Value, field: &str) -> String {
    match cell(value, field) {
        text if text.is_empty() => "-".into(),
        text => text,
    }
}

pub fn run(server: &ServerArgs, command: BastionCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        BastionCommand::Token(TokenCommand::Create { ttl, replace }) => {
            let answer = client
                .call(
                    Method::POST,
                    &["api", "v1", "bastions", "tokens"],
                    &[],
                    Some(&json!({"ttl_seconds": ttl.as_secs().max(1), "replace": replace})),
                )?
                .unwrap_or_default();
            println!("{}", answer["token"].as_str().unwrap_or_default());
            let token = answer["token"].as_str().unwrap_or_default();
            eprintln!(
                "enrollment token created, valid until {}; it works once and is shown only now",
                answer["expires_at"].as_str().unwrap_or("?")
            );
            match token.split_once('.') {
                Some((_, pin)) => eprintln!(
                    "it pins the server's CA (sha256 {pin}): jms-agentd enroll refuses a server with another"
                ),
                None => eprintln!(
                    "the server speaks plain HTTP (--insecure-http): the token pins no CA"
                ),
            }
            Ok(Outcome::Ok)
        }
        BastionCommand::List { out } => {
            let answer = client.get(&["api", "v1", "bastions"], &[])?;
            let items = answer["items"].as_array().cloned().unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&items)?);
                return Ok(Outcome::Ok);
            }
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|b| {
                    let policy = match (b["policy_version"].as_u64(), b["versions_behind"].as_u64())
                    {
                        (Some(held), Some(0)) => format!("{held} (current)"),
                        (Some(held), Some(behind)) => format!("{held} ({behind} behind)"),
                        _ => "-".into(),
                    };
                    vec![
                        cell(b, "name"),
                        cell(b, "status"),
                        or_dash(b, "zone"),
                        or_dash(b, "address"),
                        ago(&b["silent_for_secs"]),
                        policy,
                        or_dash(b, "open_sessions"),
                        or_dash(b, "spool_backlog"),
                        or_dash(b, "agent_version"),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "STATUS",
                    "ZONE",
                    "ADDRESS",
                    "LAST SEEN",
                    "POLICY",
                    "SESSIONS",
                    "BACKLOG",
                    "AGENTD",
                ],
                &rows,
            );
            let silent = items.iter().filter(|b| b["status"] == "silent").count();
            if silent > 0 {
                println!(
                    "({silent} silent for more than {}s: see the server log's bastion_silent alarm)",
                    answer["silent_after_secs"]
                );
            }
            Ok(Outcome::Ok)
        }
        BastionCommand::Show { name, out } => {
            let view = client.get(&["api", "v1", "bastions", &name], &[])?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                manage::print_detail(&view);
            }
            Ok(Outcome::Ok)
        }
        BastionCommand::Zone {
            name,
            zone,
            none: _,
            out,
        } => {
            let view = client
                .call(
                    Method::PUT,
                    &["api", "v1", "bastions", &name, "zone"],
                    &[],
                    Some(&json!({ "zone": zone })),
                )?
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                match &zone {
                    Some(zone) => println!("bastion {name} is in zone {zone}"),
                    None => println!("bastion {name} is in no zone"),
                }
            }
            Ok(Outcome::Ok)
        }
        BastionCommand::Revoke { name, args } => {
            let view = client.get(&["api", "v1", "bastions", &name], &[])?;
            // Already revoked: the server says so (409), nothing to ask.
            if view["status"] != "revoked" {
                eprintln!("revoking bastion {name}:");
                eprintln!(
                    "  its key is refused from now on (sync, event and recording uploads, live control)"
                );
                eprintln!(
                    "  {} sessions open on it (as of its last report) lose their audit upload; what it uploaded stays",
                    or_dash(&view, "open_sessions")
                );
                eprintln!("  only a token made with `jmsctl bastion token create --replace {name}` enrolls it again");
                manage::confirm("revoke", "bastion", &name, args.yes)?;
            }
            let view = client
                .call(
                    Method::POST,
                    &["api", "v1", "bastions", &name, "revoke"],
                    &[],
                    None,
                )?
                .unwrap_or_default();
            if args.json {
                println!("{}", serde_json::to_string_pretty(&view)?);
            } else {
                println!("revoked bastion {name}");
            }
            Ok(Outcome::Ok)
        }
    }
}
