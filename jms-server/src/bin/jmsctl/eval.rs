//! `jmsctl eval`: one grant decision, or the list of what a user is granted,
//! straight from a policy file. The interface is stable: scripts use it.

use std::path::PathBuf;

use anyhow::Result;
use chrono::Utc;
use clap::Args;
use jms_core::model::{Action, Protocol, Timestamp};
use jms_core::{AccountRef, Decision, GrantedAsset, Listing, Policy, Query};
use serde::Serialize;

use crate::Outcome;

#[derive(Args)]
pub struct EvalArgs {
    /// Policy file (YAML, or JSON when it ends in .json).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// Bastion user name.
    #[arg(long, value_name = "U")]
    user: String,
    /// Asset name.
    #[arg(
        long,
        value_name = "A",
        required_unless_present = "list",
        conflicts_with = "list"
    )]
    asset: Option<String>,
    /// Account name or alias (@INPUT, @USER, @ANON); default: any account.
    #[arg(long, value_name = "NAME")]
    account: Option<String>,
    /// ssh or sftp; default: any protocol the asset offers.
    #[arg(long, value_name = "P")]
    protocol: Option<Protocol>,
    /// connect, upload, download, delete, copy, paste or share.
    #[arg(long, value_name = "X", default_value = "connect")]
    action: Action,
    /// When to decide (RFC 3339 or YYYY-MM-DD); default: now.
    #[arg(long, value_name = "RFC3339", value_parser = Timestamp::parse)]
    at: Option<Timestamp>,
    /// List every granted asset with accounts, protocols and actions.
    #[arg(long)]
    list: bool,
    /// With --list: print JSON.
    #[arg(long, requires = "list")]
    json: bool,
}

pub fn run(args: EvalArgs) -> Result<Outcome> {
    let policy = Policy::load(&args.policy)?;
    let at = args.at.map(|t| t.0).unwrap_or_else(Utc::now);
    if args.list {
        let granted = policy.list(&args.user, at)?;
        if args.json {
            let listing: Vec<ListedAsset<'_>> = granted
                .iter()
                .map(|g| ListedAsset::of(&g, &args.user))
                .collect();
            println!("{}", serde_json::to_string_pretty(&listing)?);
        } else {
            print_table(&granted);
        }
        return Ok(Outcome::Ok);
    }
    let asset = args.asset.as_deref().unwrap_or_default();
    let query = Query {
        user: &args.user,
        asset,
        account: args.account.as_deref(),
        protocol: args.protocol,
        action: args.action,
        at,
    };
    Ok(match policy.decide(&query)? {
        Decision::Allow => {
            println!("allow");
            Outcome::Ok
        }
        Decision::Deny(reason) => {
            println!("deny: {reason}");
            Outcome::Deny
        }
    })
}

/// One asset of `--list --json`.
#[derive(Serialize)]
struct ListedAsset<'p> {
    asset: &'p str,
    address: &'p str,
    nodes: &'p [String],
    accounts: Vec<ListedAccount<'p>>,
}

#[derive(Serialize)]
struct ListedAccount<'p> {
    /// The account name, or `@INPUT` / `@USER` / `@ANON`.
    account: &'p str,
    /// The login on the asset, when known before connecting (for `@USER`,
    /// the bastion user's own name).
    username: Option<&'p str>,
    /// `real` (vaulted secret) or `virtual` (typed or none).
    kind: &'static str,
    protocols: Vec<&'static str>,
    actions: Vec<&'static str>,
}

impl<'p> ListedAsset<'p> {
    fn of(granted: &GrantedAsset<'p>, user: &'p str) -> Self {
        ListedAsset {
            asset: &granted.asset.name,
            address: &granted.asset.address,
            nodes: &granted.asset.nodes,
            accounts: granted
                .accounts
                .iter()
                .map(|g| ListedAccount {
                    account: g.account.name(),
                    username: match g.account {
                        AccountRef::Real(account) => Some(&account.username),
                        AccountRef::SameName => Some(user),
                        AccountRef::Input | AccountRef::Anon => None,
                    },
                    kind: match g.account {
                        AccountRef::Real(_) => "real",
                        _ => "virtual",
                    },
                    protocols: g.protocols.iter().map(Protocol::as_str).collect(),
                    actions: g.actions.iter().map(Action::as_str).collect(),
                })
                .collect(),
        }
    }
}

fn print_table(granted: &Listing<'_>) {
    for item in granted.iter() {
        let accounts: Vec<String> = item
            .accounts
            .iter()
            .map(|g| {
                let protocols: Vec<&str> = g.protocols.iter().map(Protocol::as_str).collect();
                let actions: Vec<&str> = g.actions.iter().map(Action::as_str).collect();
                let protocols = if protocols.is_empty() {
                    "no protocol the asset offers".to_string()
                } else {
                    protocols.join(",")
                };
                format!("{}({protocols}: {})", g.account.name(), actions.join(","))
            })
            .collect();
        println!(
            "{}\t{}\t{}\t{}",
            item.asset.name,
            item.asset.address,
            item.asset.nodes.join(","),
            accounts.join(" ")
        );
    }
}
