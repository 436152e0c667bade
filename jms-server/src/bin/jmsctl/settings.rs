//! `jmsctl settings get [KEY]` and `jmsctl settings set KEY VALUE`: the
//! system settings on the server, addressed by dotted keys such as
//! `security.lockout_threshold`; `jmsctl settings mail-test --to ADDRESS`
//! sends a test message (see `crate::mail`).

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{Map, Value};

use crate::remote::{connect, ServerArgs};
use crate::Outcome;

/// Keys whose values are secrets: never on argv.
const SECRET_KEYS: &[&str] = &["mail.password"];

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// Print every setting, a section (`security`) or one key.
    Get { key: Option<String> },
    /// Set one key. VALUE is read as JSON when it parses (3, true,
    /// ["ops"], null resets to the default), else as text (30m). For
    /// mail.password give `-` and type it or pipe it on stdin.
    Set { key: String, value: String },
    /// Send a test message with the mail settings (SMTP failures name the
    /// step that failed).
    MailTest {
        /// Where the message goes.
        #[arg(long, value_name = "ADDRESS")]
        to: String,
    },
}

fn show(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => serde_json::to_string_pretty(other).expect("JSON prints"),
    }
}

pub fn run(server: &ServerArgs, command: SettingsCommand) -> Result<Outcome> {
    match command {
        SettingsCommand::Get { key } => {
            let settings = connect(server)?.get(&["api", "v1", "settings"], &[])?;
            let value = match &key {
                None => &settings,
                Some(key) => key
                    .split('.')
                    .try_fold(&settings, |v, part| v.get(part))
                    .with_context(|| format!("unknown setting `{key}`"))?,
            };
            println!("{}", show(value));
            Ok(Outcome::Ok)
        }
        SettingsCommand::MailTest { to } => crate::mail::test(server, &to),
        SettingsCommand::Set { key, value } => {
            let parts: Vec<&str> = key.split('.').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
                bail!("bad key `{key}`: expected SECTION.NAME like security.lockout_threshold");
            }
            let value = if SECRET_KEYS.contains(&key.as_str()) {
                if value != "-" {
                    bail!("{key} is a secret: give `-` and type it or pipe it on stdin");
                }
                Value::String(read_secret(&key)?)
            } else {
                serde_json::from_str(&value).unwrap_or(Value::String(value))
            };
            let mut section = Map::new();
            section.insert(parts[1].to_string(), value);
            let mut patch = Map::new();
            patch.insert(parts[0].to_string(), Value::Object(section));
            let settings = connect(server)?
                .call(
                    Method::PATCH,
                    &["api", "v1", "settings"],
                    &[],
                    Some(&Value::Object(patch)),
                )?
                .unwrap_or_default();
            if SECRET_KEYS.contains(&key.as_str()) {
                println!("{key} set");
            } else {
                let now = &settings[parts[0]][parts[1]];
                println!("{key} = {}", show(now));
            }
            Ok(Outcome::Ok)
        }
    }
}

fn read_secret(key: &str) -> Result<String> {
    let text = if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{key}: ")).context("reading the secret")?
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the secret from stdin")?;
        line
    };
    let text = text.trim_end_matches(['\n', '\r']).to_string();
    if text.is_empty() {
        bail!("empty secret");
    }
    Ok(text)
}
