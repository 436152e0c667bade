//! `jmsctl policy check FILE` validates a policy file offline and
//! summarises it, naming every grant that is inactive and why.
//! `jmsctl policy export` and `jmsctl policy apply FILE [--dry-run]` work
//! with the server's policy as a whole (declaratively: apply makes the
//! server match the file and prints what it changed).

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;
use clap::Subcommand;
use jms_core::model::PolicyDocument;
use jms_core::{GrantState, Policy};
use reqwest::Method;
use serde::Deserialize;

use crate::remote::{connect, ServerArgs};
use crate::Outcome;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and print what it holds.
    Check {
        /// Policy file (YAML, or JSON when it ends in .json).
        file: PathBuf,
    },
    /// Print the server's whole policy as a policy file (YAML).
    Export {
        /// Include secrets (admin token; the server logs it).
        #[arg(long)]
        with_secrets: bool,
        /// Print JSON instead of YAML.
        #[arg(long)]
        json: bool,
    },
    /// Make the server's policy match FILE; prints each change
    /// (+ added, ~ changed, - removed). Secrets the file leaves out keep
    /// their stored values.
    Apply {
        /// Policy file (YAML, or JSON when it ends in .json).
        file: PathBuf,
        /// Only print what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(server: &ServerArgs, command: PolicyCommand) -> Result<Outcome> {
    match command {
        PolicyCommand::Check { file } => check(&file),
        PolicyCommand::Export { with_secrets, json } => export(server, with_secrets, json),
        PolicyCommand::Apply { file, dry_run } => apply(server, &file, dry_run),
    }
}

fn check(file: &std::path::Path) -> Result<Outcome> {
    let policy = Policy::load(file)?;
    let s = policy.summary();
    println!(
        "{}: ok: {} users, {} user groups, {} nodes, {} assets, {} accounts, {} grants, {} command filters",
        file.display(),
        s.users,
        s.user_groups,
        s.nodes,
        s.assets,
        s.accounts,
        s.grants,
        s.command_filters
    );
    let now = Utc::now();
    for grant in &policy.doc.grants {
        let state = policy.grant_state(grant, now);
        if state != GrantState::Active {
            println!("inactive: grant {} {}", grant.name, state.describe());
        }
    }
    Ok(Outcome::Ok)
}

fn export(server: &ServerArgs, with_secrets: bool, json: bool) -> Result<Outcome> {
    let value = connect(server)?.get(
        &["api", "v1", "policy"],
        &[("with_secrets", with_secrets.to_string())],
    )?;
    let doc: PolicyDocument = serde_json::from_value(value)
        .context("the server sent a policy this jmsctl cannot read")?;
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", serde_yaml_ng::to_string(&doc)?);
    }
    Ok(Outcome::Ok)
}

#[derive(Deserialize)]
struct Applied {
    changes: Vec<jms_server::diff::Change>,
    version: u64,
    /// The plans' changes (`+ plan NAME`…).
    #[serde(default)]
    plans: Vec<String>,
}

fn apply(server: &ServerArgs, file: &std::path::Path, dry_run: bool) -> Result<Outcome> {
    // Checked here first: errors name the file, and `secret_file`s are
    // read relative to it (the server never sees those paths).
    let mut doc = Policy::load(file)?.doc.to_document();
    for asset in &mut doc.assets {
        for account in &mut asset.accounts {
            account.secret_file = None;
        }
    }
    let client = connect(server)?;
    let answer = client
        .call(
            Method::PUT,
            &["api", "v1", "policy"],
            &[("dry_run", dry_run.to_string())],
            Some(&serde_json::to_value(&doc)?),
        )?
        .unwrap_or_default();
    let applied: Applied =
        serde_json::from_value(answer).context("unexpected answer to policy apply")?;
    for change in &applied.changes {
        println!("{change}");
    }
    for change in &applied.plans {
        println!("{change}");
    }
    let count = applied.changes.len() + applied.plans.len();
    let noun = if count == 1 { "change" } else { "changes" };
    if count == 0 {
        println!("no changes (policy version {})", applied.version);
    } else if dry_run {
        println!("{count} {noun} (dry run: nothing applied)");
    } else {
        println!(
            "{count} {noun} applied (policy version {})",
            applied.version
        );
    }
    Ok(Outcome::Ok)
}
