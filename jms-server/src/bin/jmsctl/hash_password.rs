//! `jmsctl hash-password`: a Django/JumpServer `pbkdf2_sha256$…` hash for a
//! policy's `password_hash`. The password comes from the terminal (asked
//! twice, not echoed) or from the first line of stdin — never from argv,
//! where other users could see it in the process list.

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context, Result};
use clap::Args;
use jms_core::password::{hash_password, DEFAULT_ITERATIONS};

use crate::Outcome;

#[derive(Args)]
pub struct HashPasswordArgs {
    /// PBKDF2 iterations.
    #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
    iterations: u32,
}

pub fn run(args: HashPasswordArgs) -> Result<Outcome> {
    let password = read_password()?;
    println!("{}", hash_password(&password, args.iterations)?);
    Ok(Outcome::Ok)
}

/// A new password: from the terminal (asked twice, not echoed) or the
/// first line of stdin.
pub fn read_password() -> Result<String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let second = rpassword::prompt_password("Again: ").context("reading the password")?;
        if first != second {
            bail!("the two passwords differ");
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}
