//! Talking to the server: where it is (`--server` or `JMS_SERVER`), the
//! token (`JMS_TOKEN`, or `~/.config/jms/token`, which must be 0600) and
//! the CA its certificate must come from (`--ca`, `JMS_CA`, or
//! `~/.config/jms/ca.pem`; copy the server's `DATA/tls/ca.pem`): with one,
//! a server presenting a certificate from any other CA is refused; with
//! none, the system's roots decide.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use jms_core::escape::visible;
use jms_server::client::Client;
use serde_json::Value;

/// Where the server is; every server command takes it.
#[derive(Args, Clone)]
pub struct ServerArgs {
    /// Server URL (https://HOST:PORT), or several separated by commas
    /// (instances of one server: tried in turn when one is down or
    /// answers 5xx); default: $JMS_SERVER.
    #[arg(long, value_name = "URL", env = "JMS_SERVER", global = true)]
    pub server: Option<String>,
    /// The server's CA certificate (PEM; the server's DATA/tls/ca.pem):
    /// the only CA trusted. Default: $JMS_CA, else ~/.config/jms/ca.pem
    /// when it exists, else the system's roots.
    #[arg(long, value_name = "FILE", env = "JMS_CA", global = true)]
    pub ca: Option<PathBuf>,
}

fn ca_file(args: &ServerArgs) -> Option<PathBuf> {
    if let Some(path) = args.ca.as_ref().filter(|p| !p.as_os_str().is_empty()) {
        return Some(path.clone());
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/jms/ca.pem")).filter(|p| p.exists())
}

fn token_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/jms/token"))
}

fn token() -> Result<String> {
    if let Ok(token) = std::env::var("JMS_TOKEN") {
        if !token.trim().is_empty() {
            return Ok(token.trim().to_string());
        }
    }
    let Some(path) = token_file() else {
        bail!("no token: set JMS_TOKEN or write it to ~/.config/jms/token (mode 0600)");
    };
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "no token: set JMS_TOKEN or write it to {} (mode 0600)",
            path.display()
        ),
        Err(e) => return Err(e).with_context(|| path.display().to_string()),
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "{}: mode {mode:04o} is too open for a token: chmod 600 it",
            path.display()
        );
    }
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let token = text.trim();
    if token.is_empty() {
        bail!("{}: empty", path.display());
    }
    Ok(token.to_string())
}

/// A client for the configured server and token.
pub fn connect(args: &ServerArgs) -> Result<Client> {
    let server = args
        .server
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| anyhow!("no server: give --server URL or set JMS_SERVER"))?;
    let token = token()?;
    let ca = match ca_file(args) {
        Some(path) => Some(
            std::fs::read(&path)
                .with_context(|| format!("the CA certificate {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Client::with_ca(server, &token, ca.as_deref())?)
}

/// Prints rows as aligned columns under `headers`, every cell with its
/// control characters written visibly (`\r`, `\x1b`…: a command or path
/// must not move the cursor or erase the line it is shown on).
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|c| visible(c).into_owned()).collect())
        .collect();
    let rows = &rows;
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A field of a JSON object as text for a table cell or a detail line,
/// control characters written visibly ([`jms_core::escape::visible`]).
pub fn cell(value: &Value, field: &str) -> String {
    visible(&raw_cell(value, field)).into_owned()
}

fn raw_cell(value: &Value, field: &str) -> String {
    match value.get(field) {
        // The policy form leaves `is_active: true` out.
        None if field == "is_active" => "true".to_string(),
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(","),
        Some(other) => other.to_string(),
    }
}
