//! `jmsctl session list|show`, `jmsctl command search`, `jmsctl recording
//! get`: the audit trail on the server (any token; read scope is enough).
//! `jmsctl session watch` prints a running session's output as it happens;
//! `jmsctl session kill` terminates it (admin token).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use jms_core::model::Timestamp;
use jms_server::client::Client;
use serde_json::{json, Value};

use crate::remote::{cell, connect, print_table, ServerArgs};
use crate::Outcome;

#[derive(Subcommand)]
pub enum SessionCommand {
    /// List sessions, newest first.
    List {
        /// Only this jms user's sessions.
        #[arg(long)]
        user: Option<String>,
        /// Only sessions on this asset.
        #[arg(long)]
        asset: Option<String>,
        /// Only sessions as this account (its name in the policy).
        #[arg(long)]
        account: Option<String>,
        /// Started at or after (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_name = "TIME", value_parser = Timestamp::parse)]
        since: Option<Timestamp>,
        /// Started before (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_name = "TIME", value_parser = Timestamp::parse)]
        until: Option<Timestamp>,
        /// Only sessions still going.
        #[arg(long, conflicts_with = "ended")]
        online: bool,
        /// Only sessions that are over (ended or refused).
        #[arg(long)]
        ended: bool,
        #[command(flatten)]
        page: PageArgs,
    },
    /// A session's details, commands and transfers.
    Show {
        id: String,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a running session's output as it happens, until it ends (or
    /// Ctrl-C).
    Watch { id: String },
    /// Terminate a running session: its bastion ends it and tells the
    /// user why (admin token).
    Kill {
        id: String,
        /// Shown to the user and kept in the audit trail.
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum CommandCommand {
    /// Search commands, newest first.
    Search {
        /// Part of the command text (case-insensitive).
        text: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        asset: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// Only allowed or only refused commands.
        #[arg(long, value_parser = ["allow", "deny"])]
        decision: Option<String>,
        /// Run at or after (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_name = "TIME", value_parser = Timestamp::parse)]
        since: Option<Timestamp>,
        /// Run before (RFC 3339 or YYYY-MM-DD).
        #[arg(long, value_name = "TIME", value_parser = Timestamp::parse)]
        until: Option<Timestamp>,
        #[command(flatten)]
        page: PageArgs,
    },
}

#[derive(Subcommand)]
pub enum RecordingCommand {
    /// Download a session's recording (asciicast v2: `asciinema play FILE`).
    Get {
        /// The session id.
        id: String,
        /// Where to write it (default: ID.cast here).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
        /// Print what was written as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// `--limit`, `--offset`, `--json` of every list.
#[derive(Args)]
pub struct PageArgs {
    #[arg(long, default_value_t = 100)]
    limit: u32,
    #[arg(long, default_value_t = 0)]
    offset: u64,
    /// Print the items as JSON.
    #[arg(long)]
    json: bool,
}

/// Adds `name=value` when there is a value.
fn add(query: &mut Vec<(&'static str, String)>, name: &'static str, value: Option<String>) {
    if let Some(value) = value {
        query.push((name, value));
    }
}

fn time_value(at: Option<Timestamp>) -> Option<String> {
    at.map(|t| t.to_string())
}

/// An RFC 3339 time as `YYYY-MM-DD HH:MM:SS` (UTC).
fn short_time(value: &Value, field: &str) -> String {
    let text = cell(value, field);
    chrono::DateTime::parse_from_rfc3339(&text)
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or(text)
}

fn seconds(value: &Value, field: &str) -> String {
    match value[field].as_f64() {
        Some(secs) if secs >= 3600.0 => format!(
            "{}h{:02}m{:02}s",
            secs as u64 / 3600,
            secs as u64 % 3600 / 60,
            secs as u64 % 60
        ),
        Some(secs) if secs >= 60.0 => format!("{}m{:02}s", secs as u64 / 60, secs as u64 % 60),
        Some(secs) => format!("{secs:.1}s"),
        None => String::new(),
    }
}

/// Fetches a page and prints it: JSON, or a table and a count line.
fn show_page(
    client: &Client,
    segments: &[&str],
    mut query: Vec<(&'static str, String)>,
    page: &PageArgs,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> Result<Outcome> {
    query.push(("limit", page.limit.to_string()));
    query.push(("offset", page.offset.to_string()));
    let answer = client.get(segments, &query)?;
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    if page.json {
        println!("{}", serde_json::to_string_pretty(&items)?);
        return Ok(Outcome::Ok);
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    print_table(headers, &rows);
    let total = answer["total"].as_u64().unwrap_or(0);
    if total > page.offset + items.len() as u64 {
        println!(
            "({} of {total}; --offset {} for more)",
            items.len(),
            page.offset + items.len() as u64
        );
    }
    Ok(Outcome::Ok)
}

pub fn session(server: &ServerArgs, command: SessionCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        SessionCommand::List {
            user,
            asset,
            account,
            since,
            until,
            online,
            ended,
            page,
        } => {
            let mut query = Vec::new();
            add(&mut query, "user", user);
            add(&mut query, "asset", asset);
            add(&mut query, "account", account);
            add(&mut query, "since", time_value(since));
            add(&mut query, "until", time_value(until));
            if online || ended {
                query.push(("online", online.to_string()));
            }
            show_page(
                &client,
                &["api", "v1", "sessions"],
                query,
                &page,
                &[
                    "ID", "USER", "ASSET", "ACCOUNT", "KIND", "STARTED", "DURATION", "STATUS",
                    "SOURCE", "BASTION",
                ],
                |s| {
                    vec![
                        cell(s, "id"),
                        cell(s, "user"),
                        cell(s, "asset"),
                        cell(s, "account"),
                        cell(s, "kind"),
                        short_time(s, "started_at"),
                        seconds(s, "duration_secs"),
                        cell(s, "status"),
                        cell(s, "source_ip"),
                        cell(s, "bastion"),
                    ]
                },
            )
        }
        SessionCommand::Show { id, json } => {
            let detail = client.get(&["api", "v1", "sessions", &id], &[])?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
                return Ok(Outcome::Ok);
            }
            print_detail(&detail);
            Ok(Outcome::Ok)
        }
        SessionCommand::Kill { id, reason } => {
            let body = json!({"reason": reason.unwrap_or_default()});
            let answer = client.call(
                reqwest::Method::POST,
                &["api", "v1", "sessions", &id, "kill"],
                &[],
                Some(&body),
            )?;
            let bastion = answer
                .as_ref()
                .and_then(|a| a["bastion"].as_str())
                .unwrap_or("its bastion")
                .to_string();
            println!("session {id}: terminating (ordered to {bastion})");
            Ok(Outcome::Ok)
        }
        SessionCommand::Watch { id } => watch(&client, &id),
    }
}

/// Reads the session's Server-Sent Events and prints its output.
fn watch(client: &Client, id: &str) -> Result<Outcome> {
    use std::io::BufRead;
    let response = client.stream(&["api", "v1", "sessions", id, "live"])?;
    let mut out = std::io::stdout().lock();
    let (mut event, mut data) = (String::new(), String::new());
    for line in std::io::BufReader::new(response).lines() {
        let line = line.context("the live stream broke")?;
        if let Some(value) = line.strip_prefix("event:") {
            event = value.trim().to_string();
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
        } else if line.is_empty() {
            let message: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
            if event == "end" {
                out.flush()?;
                let reason = message["reason"].as_str().unwrap_or("");
                if reason.is_empty() {
                    eprintln!("\r\n[jmsctl: session {id} ended]");
                } else {
                    eprintln!("\r\n[jmsctl: session {id} ended: {reason}]");
                }
                return Ok(Outcome::Ok);
            }
            let text = match &message {
                Value::Array(e) if e.get(1).and_then(Value::as_str) == Some("o") => {
                    e.get(2).and_then(Value::as_str)
                }
                Value::Object(header) => header.get("init").and_then(Value::as_str),
                _ => None,
            };
            if let Some(text) = text {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            event.clear();
            data.clear();
        }
    }
    bail!("session {id}: the live stream ended without an end event")
}

fn print_detail(s: &Value) {
    let mut fields = vec![
        ("Session", cell(s, "id")),
        ("Status", cell(s, "status")),
        ("User", cell(s, "user")),
        ("Asset", cell(s, "asset")),
        ("Account", cell(s, "account")),
        ("Login", cell(s, "login")),
        ("Kind", cell(s, "kind")),
        ("Protocol", cell(s, "protocol")),
        ("Source", cell(s, "source_ip")),
        ("Bastion", cell(s, "bastion")),
        ("Started", short_time(s, "started_at")),
        ("Ended", short_time(s, "ended_at")),
        ("Duration", seconds(s, "duration_secs")),
        ("Exit status", cell(s, "exit_status")),
        ("Reason", cell(s, "reason")),
        ("Command", cell(s, "command")),
        ("Bytes in/out", {
            let (i, o) = (cell(s, "bytes_in"), cell(s, "bytes_out"));
            if i.is_empty() && o.is_empty() {
                String::new()
            } else {
                format!("{i}/{o}")
            }
        }),
        (
            "Recording",
            match (
                s["has_recording"].as_bool(),
                s["recording"]["size"].as_u64(),
            ) {
                (Some(true), Some(size)) => format!(
                    "{size} bytes{} (jmsctl recording get {})",
                    if s["recording_truncated"] == true {
                        ", cut at its cap"
                    } else {
                        ""
                    },
                    cell(s, "id")
                ),
                _ => "none".to_string(),
            },
        ),
    ];
    fields.retain(|(_, v)| !v.is_empty());
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, value) in fields {
        println!("{key:<width$}  {value}");
    }
    let commands = s["commands"].as_array().cloned().unwrap_or_default();
    println!();
    println!("Commands ({}):", commands.len());
    if !commands.is_empty() {
        let rows: Vec<Vec<String>> = commands
            .iter()
            .map(|c| {
                vec![
                    seconds(c, "offset_secs"),
                    short_time(c, "at"),
                    cell(c, "decision"),
                    cell(c, "filter"),
                    cell(c, "typed_by"),
                    cell(c, "command"),
                ]
            })
            .collect();
        print_table(
            &[
                "OFFSET", "TIME", "DECISION", "FILTER", "TYPED BY", "COMMAND",
            ],
            &rows,
        );
    }
    let transfers = s["transfers"].as_array().cloned().unwrap_or_default();
    println!();
    println!("Transfers ({}):", transfers.len());
    if !transfers.is_empty() {
        let rows: Vec<Vec<String>> = transfers
            .iter()
            .map(|t| {
                let mut path = cell(t, "path");
                let to = cell(t, "to");
                if !to.is_empty() {
                    path = format!("{path} -> {to}");
                }
                vec![
                    short_time(t, "at"),
                    cell(t, "via"),
                    cell(t, "operation"),
                    cell(t, "size"),
                    cell(t, "result"),
                    path,
                ]
            })
            .collect();
        print_table(
            &["TIME", "VIA", "OPERATION", "SIZE", "RESULT", "PATH"],
            &rows,
        );
    }
}

pub fn command(server: &ServerArgs, command: CommandCommand) -> Result<Outcome> {
    let client = connect(server)?;
    let CommandCommand::Search {
        text,
        user,
        asset,
        session,
        decision,
        since,
        until,
        page,
    } = command;
    let mut query = Vec::new();
    add(&mut query, "q", text.filter(|t| !t.is_empty()));
    add(&mut query, "user", user);
    add(&mut query, "asset", asset);
    add(&mut query, "session", session);
    add(&mut query, "decision", decision);
    add(&mut query, "since", time_value(since));
    add(&mut query, "until", time_value(until));
    show_page(
        &client,
        &["api", "v1", "commands"],
        query,
        &page,
        &[
            "TIME", "USER", "ASSET", "ACCOUNT", "SESSION", "OFFSET", "DECISION", "COMMAND",
        ],
        |c| {
            vec![
                short_time(c, "at"),
                cell(c, "user"),
                cell(c, "asset"),
                cell(c, "account"),
                cell(c, "session"),
                seconds(c, "offset_secs"),
                cell(c, "decision"),
                cell(c, "command"),
            ]
        },
    )
}

pub fn recording(server: &ServerArgs, command: RecordingCommand) -> Result<Outcome> {
    let RecordingCommand::Get {
        id,
        output,
        force,
        json,
    } = command;
    let client = connect(server)?;
    let path = output.unwrap_or_else(|| PathBuf::from(format!("{id}.cast")));
    if !force && path.exists() {
        bail!(
            "{} exists: give another -o FILE or --force to replace it",
            path.display()
        );
    }
    // Written beside the target, then moved into place: a failed download
    // leaves nothing behind and never a half file under the name.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| format!("{id}.cast"));
    let temp = dir.join(format!(".{name}.{}.part", std::process::id()));
    let result = (|| -> Result<u64> {
        let mut file =
            std::fs::File::create(&temp).with_context(|| format!("creating {}", temp.display()))?;
        let bytes = client.download(&["api", "v1", "sessions", &id, "recording"], &mut file)?;
        file.flush()?;
        file.sync_all()
            .with_context(|| format!("writing {}", temp.display()))?;
        if force {
            std::fs::rename(&temp, &path).with_context(|| format!("writing {}", path.display()))?;
        } else {
            // Fails if the file appeared meanwhile: never overwritten.
            std::fs::hard_link(&temp, &path).with_context(|| {
                format!("writing {} (give --force to replace it)", path.display())
            })?;
        }
        Ok(bytes)
    })();
    let _ = std::fs::remove_file(&temp);
    let bytes = result?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "session": id,
                "file": path.display().to_string(),
                "bytes": bytes,
            }))?
        );
    } else {
        println!("{} ({bytes} bytes)", path.display());
    }
    Ok(Outcome::Ok)
}
