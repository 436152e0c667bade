//! `jmsctl account push|verify|rotate ASSET ACCOUNT` (start an account job
//! and wait for its result) and `jmsctl job list|show` (the job history
//! with each step's output; never a secret).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::manage::JsonArg;
use crate::remote::{cell, connect, print_table, ServerArgs};
use crate::Outcome;

/// How long jmsctl waits for a job's result.
const WAIT: Duration = Duration::from_secs(200);

#[derive(Subcommand)]
pub enum JobCommand {
    /// Account jobs, newest first.
    List {
        /// Only this asset's.
        #[arg(long)]
        asset: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        out: JsonArg,
    },
    /// One job with each step's output.
    Show {
        id: String,
        #[command(flatten)]
        out: JsonArg,
    },
}

fn print_job(job: &Value) {
    println!(
        "job {}: {} {}@{} by {} on {}: {}{}",
        cell(job, "id"),
        cell(job, "kind"),
        cell(job, "account"),
        cell(job, "asset"),
        cell(job, "actor"),
        cell(job, "bastion"),
        cell(job, "status"),
        match job["changed"].as_bool() {
            Some(true) => " (changed)",
            Some(false) if job["status"] == "ok" => " (nothing to change)",
            _ => "",
        }
    );
    for step in job["steps"].as_array().into_iter().flatten() {
        let mark = if step["ok"].as_bool() == Some(true) {
            "ok  "
        } else {
            "FAIL"
        };
        let detail = step["detail"].as_str().unwrap_or_default();
        println!("  {mark} {}", cell(step, "name"));
        for line in detail.lines() {
            println!("       {}", crate::remote::cell(&json!({"l": line}), "l"));
        }
    }
    if let Some(error) = job["error"].as_str() {
        println!(
            "  error: {}",
            crate::remote::cell(&json!({"e": error}), "e")
        );
    }
}

/// Starts `kind` on ACCOUNT of ASSET and waits for its result: exit 0
/// when it succeeded, 1 when it failed.
pub fn run_job(
    server: &ServerArgs,
    kind: &str,
    asset: &str,
    account: &str,
    out: JsonArg,
) -> Result<Outcome> {
    let client = connect(server)?;
    let started = client
        .call(
            Method::POST,
            &["api", "v1", "jobs"],
            &[],
            Some(&json!({"kind": kind, "asset": asset, "account": account})),
        )?
        .unwrap_or_default();
    let Some(id) = started["id"].as_str().map(str::to_string) else {
        bail!("the server started no job");
    };
    let deadline = Instant::now() + WAIT;
    let job = loop {
        let job = client
            .call(Method::GET, &["api", "v1", "jobs", &id], &[], None)?
            .unwrap_or_default();
        if job["status"] != "running" {
            break job;
        }
        if Instant::now() > deadline {
            bail!(
                "job {id} is still running after {} s (see `jmsctl job show {id}`)",
                WAIT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    if out.json {
        println!("{}", serde_json::to_string_pretty(&job)?);
    } else {
        print_job(&job);
    }
    if job["status"] == "ok" {
        Ok(Outcome::Ok)
    } else {
        eprintln!(
            "jmsctl: job {id} failed: {}",
            cell(&job, "error").replace('\n', " ")
        );
        Ok(Outcome::Deny)
    }
}

pub fn job(server: &ServerArgs, command: JobCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        JobCommand::Show { id, out } => {
            let job = client
                .call(Method::GET, &["api", "v1", "jobs", &id], &[], None)?
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print_job(&job);
            }
        }
        JobCommand::List { asset, limit, out } => {
            let mut query = vec![("limit", limit.to_string())];
            if let Some(asset) = asset {
                query.push(("q", asset));
            }
            let list = client
                .call(Method::GET, &["api", "v1", "jobs"], &query, None)?
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(Outcome::Ok);
            }
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|j| {
                    [
                        "id",
                        "kind",
                        "asset",
                        "account",
                        "status",
                        "changed",
                        "actor",
                        "bastion",
                        "created_at",
                    ]
                    .iter()
                    .map(|f| cell(j, f))
                    .collect()
                })
                .collect();
            print_table(
                &[
                    "ID", "KIND", "ASSET", "ACCOUNT", "STATUS", "CHANGED", "BY", "BASTION",
                    "CREATED",
                ],
                &rows,
            );
        }
    }
    Ok(Outcome::Ok)
}
