//! `jmsctl policy check FILE`: validate a policy file and summarise it,
//! naming every grant that is inactive and why.

use std::path::PathBuf;

use anyhow::Result;
use chrono::Utc;
use clap::Subcommand;
use jms_core::{GrantState, Policy};

use crate::Outcome;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and print what it holds.
    Check {
        /// Policy file (YAML, or JSON when it ends in .json).
        file: PathBuf,
    },
}

pub fn run(command: PolicyCommand) -> Result<Outcome> {
    match command {
        PolicyCommand::Check { file } => check(&file),
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
