//! Scheduled account plans as the store keeps them (migration 13): what
//! each plan does (a job kind on a node, an asset or one account), its
//! schedule (every N days, or a cron expression), when it runs next and
//! what its last run started. The scheduler claims a due plan by moving
//! its `next_run` forward in one conditional `UPDATE` ([`claim_plan`]),
//! so that of several server instances on one database exactly one runs
//! it. The trait methods are on [`super::ReadTx`] / [`super::WriteTx`].

use super::sql::{args, Conn, Row};
use super::Result;
use chrono::{DateTime, SecondsFormat, Utc};
use jms_sync::job::JobKind;

/// Migration 13.
pub const MIGRATION: &str = r#"
-- Scheduled account jobs: a kind on a node, an asset or one account,
-- every N days or on a cron expression (UTC).
CREATE TABLE plans (
    name TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('push', 'verify', 'rotate', 'discover')),
    node TEXT,
    asset TEXT,
    account TEXT,
    every_days INTEGER,
    cron TEXT,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    next_run TEXT NOT NULL,
    last_run TEXT,
    last_jobs TEXT NOT NULL DEFAULT '[]',
    last_error TEXT,
    CHECK ((every_days IS NULL) != (cron IS NULL)),
    CHECK ((node IS NULL) != (asset IS NULL))
);
CREATE INDEX plans_by_next_run ON plans (next_run);
"#;

/// One plan as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PlanRow {
    pub name: String,
    pub kind: JobKind,
    /// Every asset in this node (and the nodes below it)…
    #[serde(default)]
    pub node: Option<String>,
    /// …or this asset.
    #[serde(default)]
    pub asset: Option<String>,
    /// Only this account (else every managed account: see the job service).
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub every_days: Option<u32>,
    /// A five-field cron expression (`0 3 * * 0`), read in UTC.
    #[serde(default)]
    pub cron: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub next_run: DateTime<Utc>,
    pub last_run: Option<DateTime<Utc>>,
    /// The jobs its last run started.
    pub last_jobs: Vec<String>,
    /// What kept its last run from starting a job (no bastion online, an
    /// asset removed since…).
    pub last_error: Option<String>,
}

/// Plan times are stored to the second, `Z`: text order is time order,
/// and a claim compares the very text it read.
fn text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

const COLUMNS: &str = "name, kind, node, asset, account, every_days, cron, created_by, \
     created_at, next_run, last_run, last_jobs, last_error";

fn plan_row(row: &dyn Row) -> Result<PlanRow> {
    let kind: String = row.get(1)?;
    let jobs: String = row.get(11)?;
    Ok(PlanRow {
        name: row.get(0)?,
        kind: kind.parse().unwrap_or(JobKind::Verify),
        node: row.get(2)?,
        asset: row.get(3)?,
        account: row.get(4)?,
        every_days: row
            .get::<Option<i64>>(5)?
            .map(|d| d.clamp(1, u32::MAX as i64) as u32),
        cron: row.get(6)?,
        created_by: row.get(7)?,
        created_at: time(row.get(8)?).unwrap_or_default(),
        next_run: time(row.get(9)?).unwrap_or_default(),
        last_run: time(row.get(10)?),
        last_jobs: serde_json::from_str(&jobs).unwrap_or_default(),
        last_error: row.get(12)?,
    })
}

pub fn plans(conn: &dyn Conn) -> Result<Vec<PlanRow>> {
    conn.all(
        &format!("SELECT {COLUMNS} FROM plans ORDER BY name"),
        args![],
        plan_row,
    )
}

pub fn plan(conn: &dyn Conn, name: &str) -> Result<Option<PlanRow>> {
    conn.one(
        &format!("SELECT {COLUMNS} FROM plans WHERE name = ?1"),
        args![name],
        plan_row,
    )
}

/// The plans due at `now`.
pub fn due_plans(conn: &dyn Conn, now: DateTime<Utc>) -> Result<Vec<PlanRow>> {
    conn.all(
        &format!("SELECT {COLUMNS} FROM plans WHERE next_run <= ?1 ORDER BY next_run"),
        args![text(now)],
        plan_row,
    )
}

/// Adds a plan; false when one has that name.
pub fn insert_plan(conn: &dyn Conn, plan: &PlanRow) -> Result<bool> {
    Ok(conn.exec(
        &format!(
            "INSERT INTO plans ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT (name) DO NOTHING"
        ),
        args![
            plan.name,
            plan.kind.as_str(),
            plan.node,
            plan.asset,
            plan.account,
            plan.every_days.map(i64::from),
            plan.cron,
            plan.created_by,
            text(plan.created_at),
            text(plan.next_run),
            plan.last_run.map(text),
            serde_json::to_string(&plan.last_jobs).unwrap_or_else(|_| "[]".into()),
            plan.last_error,
        ],
    )? == 1)
}

pub fn delete_plan(conn: &dyn Conn, name: &str) -> Result<bool> {
    Ok(conn.exec("DELETE FROM plans WHERE name = ?1", args![name])? == 1)
}

/// Claims plan `name`'s run due at `due`: moves its next run to `next`
/// and notes `now` as its last run, only if no one did first (another
/// server instance on the same database). True when this caller runs it.
pub fn claim_plan(
    conn: &dyn Conn,
    name: &str,
    due: DateTime<Utc>,
    next: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(conn.exec(
        "UPDATE plans SET next_run = ?3, last_run = ?4 WHERE name = ?1 AND next_run = ?2",
        args![name, text(due), text(next), text(now)],
    )? == 1)
}

/// What a claimed run started.
pub fn plan_ran(conn: &dyn Conn, name: &str, jobs: &[String], error: Option<&str>) -> Result<()> {
    conn.exec(
        "UPDATE plans SET last_jobs = ?2, last_error = ?3 WHERE name = ?1",
        args![
            name,
            serde_json::to_string(jobs).unwrap_or_else(|_| "[]".into()),
            error
        ],
    )?;
    Ok(())
}
