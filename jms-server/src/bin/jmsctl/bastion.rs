//! `jmsctl bastion token create [--ttl 1h] [--replace NAME]`: a one-time
//! token a bastion enrolls with (`jms-agentd enroll --server URL --token
//! T`). Enrolling a name that is already enrolled needs `--replace NAME`.

use anyhow::Result;
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;

use crate::remote::{connect, ServerArgs};
use crate::Outcome;

#[derive(Subcommand)]
pub enum BastionCommand {
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a one-time enrollment token and print it (shown once).
    Create {
        /// How long it stays valid (30m, 1h, 2d; at most 30 days).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// Let this token give the already enrolled bastion NAME a new key
        /// (a reinstalled bastion); it then enrolls only NAME.
        #[arg(long, value_name = "NAME")]
        replace: Option<String>,
    },
}

pub fn run(server: &ServerArgs, command: BastionCommand) -> Result<Outcome> {
    match command {
        BastionCommand::Token(TokenCommand::Create { ttl, replace }) => {
            let answer = connect(server)?
                .call(
                    Method::POST,
                    &["api", "v1", "bastions", "tokens"],
                    &[],
                    Some(&json!({"ttl_seconds": ttl.as_secs().max(1), "replace": replace})),
                )?
                .unwrap_or_default();
            println!("{}", answer["token"].as_str().unwrap_or_default());
            eprintln!(
                "enrollment token created, valid until {}; it works once and is shown only now",
                answer["expires_at"].as_str().unwrap_or("?")
            );
            Ok(Outcome::Ok)
        }
    }
}
