//! `jmsctl admin add|list|remove`: the audit web's admins (who may log in
//! to `/web/` with a password and a TOTP code).
//!
//! These work on the server's data directory (`--data DIR` or
//! `JMS_SERVER_DATA`), like `jms-server token create`, not through the API:
//! an API token alone cannot mint a web login. The server may be running
//! (SQLite in WAL mode takes both). `add` prints the TOTP secret and its
//! `otpauth://` URI once; the password comes from the terminal (asked
//! twice) or, with `--password-stdin`, from the first line of stdin —
//! never from argv.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use jms_core::password::DEFAULT_ITERATIONS;
use jms_server::store::Scope;
use jms_server::web::admins;
use jms_server::Services;

use crate::Outcome;

#[derive(Args)]
pub struct AdminArgs {
    /// The server's data directory.
    #[arg(long, value_name = "DIR", env = "JMS_SERVER_DATA", global = true)]
    data: Option<PathBuf>,
    /// The server's PostgreSQL database (`postgres://…`), when it runs on
    /// one (the server's --database).
    #[arg(long, value_name = "URL", env = "JMS_DATABASE", global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Add a web admin; prints her TOTP secret and otpauth:// URI (once).
    Add {
        /// Login name (letters, digits, . _ @ -).
        name: String,
        /// Read the password from the first line of stdin instead of
        /// asking on the terminal.
        #[arg(long)]
        password_stdin: bool,
        /// PBKDF2 iterations of the password hash.
        #[arg(long, default_value_t = DEFAULT_ITERATIONS)]
        iterations: u32,
        /// auditor (reads only), operator (may also terminate sessions)
        /// or admin (everything; the default).
        #[arg(long, default_value = "admin", value_parser = parse_role)]
        role: Scope,
    },
    /// List the web admins.
    List,
    /// Remove a web admin (her browser sessions end at once).
    Remove { name: String },
}

pub fn run(args: AdminArgs) -> Result<Outcome> {
    let Some(data) = args.data else {
        bail!("give the server's data directory with --data DIR (or JMS_SERVER_DATA)");
    };
    if !data.is_dir() {
        bail!(
            "{}: no such data directory (the one jms-server --data uses)",
            data.display()
        );
    }
    let open = || {
        Services::open_with(&data, args.database.as_deref())
            .map(|services| services.web_admins)
            .with_context(|| data.display().to_string())
    };
    let actor = format!("jmsctl admin (uid {})", caller_uid());
    match args.command {
        AdminCommand::Add {
            name,
            password_stdin,
            iterations,
            role,
        } => {
            admins::check_username(&name).map_err(anyhow::Error::msg)?;
            let password = read_password(password_stdin)?;
            let enrollment =
                admins::add_with_role(&*open()?, &actor, &name, &password, iterations, role)?;
            println!("TOTP secret: {}", enrollment.totp_secret);
            println!("{}", enrollment.otpauth_uri);
            eprintln!(
                "web admin `{name}` added; add the secret to an authenticator app now: \
                 it is shown only this once"
            );
        }
        AdminCommand::List => {
            let list = admins::list(&*open()?)?;
            if list.is_empty() {
                eprintln!("no web admins (jmsctl admin add NAME)");
            }
            for admin in list {
                let last = admin
                    .last_login_at
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "never".to_string());
                println!(
                    "{}\t{}\tcreated {}\tlast login {last}",
                    admin.username,
                    admin.role,
                    admin.created_at.format("%Y-%m-%d %H:%M:%S UTC")
                );
            }
        }
        AdminCommand::Remove { name } => {
            admins::remove(&*open()?, &actor, &name)?;
            eprintln!("web admin `{name}` removed");
        }
    }
    Ok(Outcome::Ok)
}

/// The new admin's password: from the terminal (asked twice, not echoed)
/// or the first line of stdin.
fn read_password(from_stdin: bool) -> Result<String> {
    let password = if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        line.trim_end_matches(['\n', '\r']).to_string()
    } else {
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask the password on: use --password-stdin");
        }
        let first = rpassword::prompt_password("Password: ").context("reading the password")?;
        let second = rpassword::prompt_password("Again: ").context("reading the password")?;
        if first != second {
            bail!("the two passwords differ");
        }
        first
    };
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}

fn parse_role(text: &str) -> std::result::Result<Scope, String> {
    text.parse()
}

fn caller_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the caller's uid.
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}
