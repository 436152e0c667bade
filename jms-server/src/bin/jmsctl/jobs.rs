//! `jmsctl account push|verify|rotate ASSET ACCOUNT` (start an account job
//! and wait for its result), `jmsctl job list|show` (the job history
//! with each step's output; never a secret) and `jmsctl plan
//! add|list|show|remove` (scheduled jobs).

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
    if job["attempt"].as_u64().is_some_and(|n| n > 1) {
        println!(
            "  attempt {} (bastions tried: {})",
            cell(job, "attempt"),
            crate::remote::cell(
                &json!({ "t": job["tried"].as_array().into_iter().flatten().filter_map(Value::as_str).collect::<Vec<_>>().join(", ") }),
                "t"
            )
        );
    }
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
    let events = job["events"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if !events.is_empty() {
        println!("  audit events from the bastions:");
        for event in events {
            println!(
                "    {} {} attempt {} {} {}",
                cell(event, "at"),
                cell(event, "bastion"),
                cell(event, "attempt"),
                cell(event, "step"),
                if event["ok"].as_bool() == Some(true) {
                    "ok"
                } else {
                    "FAIL"
                }
            );
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

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Schedule a job kind on a node's assets, an asset, or one account:
    /// every N days or on a cron expression (UTC).
    Add {
        name: String,
        /// rotate, verify, push or discover.
        #[arg(long, default_value = "rotate")]
        kind: String,
        /// Every asset in this node and below…
        #[arg(long, conflicts_with = "asset", required_unless_present = "asset")]
        node: Option<String>,
        /// …or this asset.
        #[arg(long)]
        asset: Option<String>,
        /// Only this account of the asset (default: every account with a
        /// secret; the privileged one only for verify).
        #[arg(long, requires = "asset")]
        account: Option<String>,
        /// Every N days…
        #[arg(long, conflicts_with = "cron", required_unless_present = "cron")]
        every_days: Option<u32>,
        /// …or at the times of a five-field cron expression, read in UTC
        /// (`30 3 * * 0`: Sundays at 03:30).
        #[arg(long)]
        cron: Option<String>,
        /// First run of an every-N-days plan (RFC 3339 or a date; default:
        /// one period from now).
        #[arg(long, requires = "every_days")]
        start: Option<String>,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Scheduled plans with their next and last run.
    List {
        #[command(flatten)]
        out: JsonArg,
    },
    /// One plan, with the jobs its last run started.
    Show {
        name: String,
        #[command(flatten)]
        out: JsonArg,
    },
    /// Remove a plan (jobs it started run on).
    Remove { name: String },
}

fn print_plan(plan: &Value) {
    let scope = match (plan["asset"].as_str(), plan["node"].as_str()) {
        (Some(asset), _) => match plan["account"].as_str() {
            Some(account) => format!("{account}@{asset}"),
            None => format!("asset {asset}"),
        },
        (None, Some(node)) => format!("node {node}"),
        _ => String::new(),
    };
    let schedule = match (plan["cron"].as_str(), plan["every_days"].as_u64()) {
        (Some(cron), _) => format!("cron `{cron}` (UTC)"),
        (None, Some(days)) => format!("every {days} day(s)"),
        _ => String::new(),
    };
    println!(
        "plan {}: {} {} {}, next run {}",
        cell(plan, "name"),
        cell(plan, "kind"),
        crate::remote::cell(&json!({ "s": scope }), "s"),
        schedule,
        cell(plan, "next_run")
    );
    if plan["last_run"].is_string() {
        println!(
            "  last run {}: {} job(s) {}",
            cell(plan, "last_run"),
            plan["last_jobs"].as_array().map_or(0, Vec::len),
            plan["last_jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some(error) = plan["last_error"].as_str() {
        for line in error.lines() {
            println!(
                "  error: {}",
                crate::remote::cell(&json!({ "e": line }), "e")
            );
        }
    }
}

pub fn plan(server: &ServerArgs, command: PlanCommand) -> Result<Outcome> {
    let client = connect(server)?;
    match command {
        PlanCommand::Add {
            name,
            kind,
            node,
            asset,
            account,
            every_days,
            cron,
            start,
            out,
        } => {
            let start = start
                .map(|s| {
                    jms_core::model::Timestamp::parse(&s)
                        .map(|t| t.0)
                        .map_err(|e| anyhow::anyhow!("--start: {e}"))
                })
                .transpose()?;
            let body = json!({
                "name": name, "kind": kind, "node": node, "asset": asset,
                "account": account, "every_days": every_days, "cron": cron, "start": start,
            });
            let plan = client
                .call(Method::POST, &["api", "v1", "plans"], &[], Some(&body))?
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print_plan(&plan);
            }
        }
        PlanCommand::List { out } => {
            let list = client
                .call(Method::GET, &["api", "v1", "plans"], &[], None)?
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(Outcome::Ok);
            }
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let scope = p["asset"]
                        .as_str()
                        .map(|a| match p["account"].as_str() {
                            Some(account) => format!("{account}@{a}"),
                            None => a.to_string(),
                        })
                        .or_else(|| p["node"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    let schedule = p["cron"]
                        .as_str()
                        .map(|c| format!("cron {c}"))
                        .or_else(|| p["every_days"].as_u64().map(|d| format!("every {d}d")))
                        .unwrap_or_default();
                    vec![
                        cell(p, "name"),
                        cell(p, "kind"),
                        crate::remote::cell(&json!({ "s": scope }), "s"),
                        crate::remote::cell(&json!({ "s": schedule }), "s"),
                        cell(p, "next_run"),
                        cell(p, "last_run"),
                    ]
                })
                .collect();
            print_table(
                &["NAME", "KIND", "SCOPE", "SCHEDULE", "NEXT RUN", "LAST RUN"],
                &rows,
            );
        }
        PlanCommand::Show { name, out } => {
            let plan = client
                .call(Method::GET, &["api", "v1", "plans", &name], &[], None)?
                .unwrap_or_default();
            if out.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print_plan(&plan);
            }
        }
        PlanCommand::Remove { name } => {
            client.call(Method::DELETE, &["api", "v1", "plans", &name], &[], None)?;
            println!("plan {name} removed");
        }
    }
    Ok(Outcome::Ok)
}
