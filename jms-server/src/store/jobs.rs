//! Account jobs as the store keeps them: each job's history with its
//! per-step output (never a secret), the last verification of each
//! account, and the sealed history of replaced secrets. Migration 10 adds
//! the tables and the accounts' push fields (shell, groups, sudo);
//! migration 11 ([`MIGRATION_RETRY`]) each job's attempts (which bastion,
//! since when, which ones were tried) and its new secret sealed with it,
//! so that any server instance can hand a job that lost its bastion to
//! another and tell which secret is live. The trait methods are on
//! [`super::ReadTx`] / [`super::WriteTx`], implemented here for SQLite.

use chrono::{DateTime, Utc};
use jms_sync::job::{JobKind, JobStep};
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::Result;

/// Migration 10.
pub const MIGRATION: &str = r#"
-- What a push puts on the target besides the secret.
ALTER TABLE accounts ADD COLUMN shell TEXT;
ALTER TABLE accounts ADD COLUMN groups TEXT;
ALTER TABLE accounts ADD COLUMN sudo TEXT;

-- Every account job: who asked, which bastion ran it, each step's output
-- (never a secret) and the result.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('push', 'verify', 'rotate', 'remove', 'discover')),
    asset TEXT NOT NULL,
    account TEXT NOT NULL,
    actor TEXT NOT NULL,
    bastion TEXT,
    status TEXT NOT NULL CHECK (status IN ('running', 'ok', 'failed')),
    changed INTEGER NOT NULL DEFAULT 0,
    steps TEXT NOT NULL DEFAULT '[]',
    error TEXT,
    created_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE INDEX jobs_by_time ON jobs (created_at);

-- The last verification (or job login) of each account.
CREATE TABLE account_checks (
    asset TEXT NOT NULL,
    account TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    job TEXT,
    PRIMARY KEY (asset, account)
);

-- Secrets replaced by a rotation or a push, sealed like the vault's.
CREATE TABLE secret_history (
    id INTEGER PRIMARY KEY,
    asset TEXT NOT NULL,
    account TEXT NOT NULL,
    sealed BLOB NOT NULL,
    replaced_at TEXT NOT NULL,
    job TEXT
);
CREATE INDEX secret_history_by_account ON secret_history (asset, account);
"#;

/// Migration 11.
pub const MIGRATION_RETRY: &str = r#"
-- The job's attempt (1 for its first bastion), when it began, the
-- bastions tried (comma-separated), and the new secret it applies (a
-- rotation's, a push's generated one, or a verification's candidate),
-- sealed like the vault's: kept after a job that ended without knowing
-- whether the target took it, cleared once a job settles the account.
ALTER TABLE jobs ADD COLUMN attempt INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN attempt_at TEXT;
ALTER TABLE jobs ADD COLUMN tried TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN new_secret BLOB;
CREATE INDEX jobs_by_status ON jobs (status);

-- Each job step as a bastion's audit events said it (never a secret).
CREATE TABLE job_events (
    event_id INTEGER PRIMARY KEY,
    job TEXT NOT NULL,
    bastion_id INTEGER,
    at TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    step TEXT NOT NULL,
    ok INTEGER NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX job_events_by_job ON job_events (job, at);

-- The facts the last discovery gathered on each asset.
CREATE TABLE asset_facts (
    asset TEXT PRIMARY KEY,
    facts TEXT NOT NULL,
    job TEXT,
    at TEXT NOT NULL
);
"#;

/// An asset's facts as the last discovery gathered them (what the target
/// said, each value cut to [`MAX_FACT`] characters).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AssetFacts {
    pub hostname: Option<String>,
    pub os: Option<String>,
    pub kernel: Option<String>,
    pub cpus: Option<u32>,
    pub memory_kib: Option<u64>,
    /// When, and by which job (not stored in the facts column).
    #[serde(default)]
    pub discovered_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub job: Option<String>,
}

/// Longest fact value kept.
pub const MAX_FACT: usize = 256;

impl AssetFacts {
    /// The facts among a discovery's `fact NAME VALUE` lines (others are
    /// ignored; control characters dropped; values cut).
    pub fn parse(output: &str) -> AssetFacts {
        let mut facts = AssetFacts::default();
        for line in output.lines() {
            let Some(rest) = line.strip_prefix("fact ") else {
                continue;
            };
            let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
            let value: String = value
                .trim()
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_FACT)
                .collect();
            if value.is_empty() || value == "unknown" {
                continue;
            }
            match name {
                "hostname" => facts.hostname = Some(value),
                "os" => facts.os = Some(value),
                "kernel" => facts.kernel = Some(value),
                "cpus" => facts.cpus = value.parse().ok(),
                "memory_kib" => facts.memory_kib = value.parse().ok(),
                _ => {}
            }
        }
        facts
    }
}

pub fn put_asset_facts(conn: &Connection, asset: &str, facts: &AssetFacts) -> Result<()> {
    let stored = AssetFacts {
        discovered_at: None,
        job: None,
        ..facts.clone()
    };
    conn.execute(
        "INSERT INTO asset_facts (asset, facts, job, at) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (asset) DO UPDATE SET facts = excluded.facts, job = excluded.job, at = excluded.at",
        params![
            asset,
            serde_json::to_string(&stored).unwrap_or_else(|_| "{}".into()),
            facts.job,
            facts.discovered_at.unwrap_or_else(Utc::now).to_rfc3339()
        ],
    )?;
    Ok(())
}

pub fn asset_facts(conn: &Connection, asset: &str) -> Result<Option<AssetFacts>> {
    Ok(conn
        .query_row(
            "SELECT facts, job, at FROM asset_facts WHERE asset = ?1",
            [asset],
            |row| {
                let facts: String = row.get(0)?;
                let mut facts: AssetFacts = serde_json::from_str(&facts).unwrap_or_default();
                facts.job = row.get(1)?;
                facts.discovered_at = time(row.get(2)?);
                Ok(facts)
            },
        )
        .optional()?)
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Running,
    Ok,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Ok => "ok",
            JobStatus::Failed => "failed",
        }
    }
    fn parse(text: &str) -> JobStatus {
        match text {
            "ok" => JobStatus::Ok,
            "running" => JobStatus::Running,
            _ => JobStatus::Failed,
        }
    }
}

/// One job as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobRow {
    pub id: String,
    pub kind: JobKind,
    pub asset: String,
    pub account: String,
    pub actor: String,
    pub bastion: Option<String>,
    pub status: JobStatus,
    pub changed: bool,
    pub steps: Vec<JobStep>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// 1 on its first bastion, one more on each retry.
    pub attempt: u32,
    /// When the current attempt began.
    pub attempt_at: Option<DateTime<Utc>>,
    /// The bastions given the job, in order.
    pub tried: Vec<String>,
    /// The new secret, sealed (place [`new_secret_place`]); never shown.
    #[serde(skip)]
    pub new_secret: Option<Vec<u8>>,
}

/// Where a job's new secret is sealed.
pub fn new_secret_place(id: &str) -> String {
    format!("job_new_secret:{id}")
}

/// An account's last verification.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AccountCheck {
    pub asset: String,
    pub account: String,
    pub ok: bool,
    pub detail: String,
    pub at: DateTime<Utc>,
    pub job: Option<String>,
}

fn time(text: Option<String>) -> Option<DateTime<Utc>> {
    text.and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc))
}

const COLUMNS: &str = "id, kind, asset, account, actor, bastion, status, changed, steps, error, \
     created_at, finished_at, attempt, attempt_at, tried, new_secret";

fn job_row(row: &Row) -> rusqlite::Result<JobRow> {
    let kind: String = row.get(1)?;
    let steps: String = row.get(8)?;
    Ok(JobRow {
        id: row.get(0)?,
        kind: kind.parse().unwrap_or(JobKind::Verify),
        asset: row.get(2)?,
        account: row.get(3)?,
        actor: row.get(4)?,
        bastion: row.get(5)?,
        status: JobStatus::parse(&row.get::<_, String>(6)?),
        changed: row.get(7)?,
        steps: serde_json::from_str(&steps).unwrap_or_default(),
        error: row.get(9)?,
        created_at: time(row.get(10)?).unwrap_or_default(),
        finished_at: time(row.get(11)?),
        attempt: row.get::<_, i64>(12)?.clamp(1, u32::MAX as i64) as u32,
        attempt_at: time(row.get(13)?),
        tried: row
            .get::<_, String>(14)?
            .split(',')
            .filter(|b| !b.is_empty())
            .map(str::to_string)
            .collect(),
        new_secret: row.get(15)?,
    })
}

/// A job step as a bastion's audit event said it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JobEvent {
    pub at: String,
    /// The bastion that sent it.
    pub bastion: Option<String>,
    pub attempt: u32,
    pub step: String,
    pub ok: bool,
    pub detail: String,
}

/// The audit events of job `id`, oldest first (at most 200).
pub fn job_events(conn: &Connection, id: &str) -> Result<Vec<JobEvent>> {
    let mut stmt = conn.prepare(
        "SELECT e.at, b.name, e.attempt, e.step, e.ok, e.detail FROM job_events e \
         LEFT JOIN bastions b ON b.id = e.bastion_id WHERE e.job = ?1 \
         ORDER BY e.at, e.event_id LIMIT 200",
    )?;
    let rows = stmt.query_map([id], |row| {
        Ok(JobEvent {
            at: row.get(0)?,
            bastion: row.get(1)?,
            attempt: row.get::<_, i64>(2)?.clamp(0, u32::MAX as i64) as u32,
            step: row.get(3)?,
            ok: row.get(4)?,
            detail: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every running job (the recovery tick looks for lost bastions).
pub fn running_jobs(conn: &Connection) -> Result<Vec<JobRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE status = 'running' ORDER BY created_at"
    ))?;
    let rows = stmt.query_map([], job_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// The newest ended job of an account that kept its new secret (the
/// target may hold it: its bastion was lost after applying it).
pub fn unsettled_job(conn: &Connection, asset: &str, account: &str) -> Result<Option<JobRow>> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM jobs WHERE asset = ?1 AND account = ?2 \
                 AND status != 'running' AND new_secret IS NOT NULL \
                 ORDER BY created_at DESC, rowid DESC LIMIT 1"
            ),
            [asset, account],
            job_row,
        )
        .optional()?)
}

/// Hands running job `id`, at attempt `attempt`, to `bastion` as the next
/// attempt: a claim in the database (false when another server instance,
/// or the job's report, got there first).
pub fn claim_retry(conn: &Connection, id: &str, attempt: u32, bastion: &str) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE jobs SET bastion = ?3, attempt = attempt + 1, attempt_at = ?4, \
         tried = CASE WHEN tried = '' THEN ?3 ELSE tried || ',' || ?3 END \
         WHERE id = ?1 AND attempt = ?2 AND status = 'running'",
        params![id, attempt as i64, bastion, Utc::now().to_rfc3339()],
    )? == 1)
}

/// Forgets `id`'s new secret and, with `account` (a job settled which
/// secret is live), those every ended job of the account kept.
pub fn settle_secrets(conn: &Connection, id: &str, account: Option<(&str, &str)>) -> Result<()> {
    match account {
        Some((asset, account)) => conn.execute(
            "UPDATE jobs SET new_secret = NULL WHERE id = ?1 \
             OR (asset = ?2 AND account = ?3 AND status != 'running')",
            params![id, asset, account],
        )?,
        None => conn.execute("UPDATE jobs SET new_secret = NULL WHERE id = ?1", [id])?,
    };
    Ok(())
}

/// The newest `limit` jobs, newest first (optionally of one asset).
pub fn jobs(conn: &Connection, asset: Option<&str>, limit: usize) -> Result<Vec<JobRow>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE ?1 IS NULL OR asset = ?1 \
         ORDER BY created_at DESC, rowid DESC LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![asset, limit as i64], job_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn job(conn: &Connection, id: &str) -> Result<Option<JobRow>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"),
            [id],
            job_row,
        )
        .optional()?)
}

pub fn insert_job(conn: &Connection, job: &JobRow) -> Result<()> {
    conn.execute(
        &format!(
            "INSERT INTO jobs ({COLUMNS}) VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ),
        params![
            job.id,
            job.kind.as_str(),
            job.asset,
            job.account,
            job.actor,
            job.bastion,
            job.status.as_str(),
            job.changed,
            serde_json::to_string(&job.steps).unwrap_or_else(|_| "[]".into()),
            job.error,
            job.created_at.to_rfc3339(),
            job.finished_at.map(|t| t.to_rfc3339()),
            job.attempt as i64,
            job.attempt_at.map(|t| t.to_rfc3339()),
            job.tried.join(","),
            job.new_secret,
        ],
    )?;
    Ok(())
}

/// Ends a running job; false when it was not running (a late or second
/// report changes nothing).
pub fn finish_job(
    conn: &Connection,
    id: &str,
    status: JobStatus,
    changed: bool,
    steps: &[JobStep],
    error: Option<&str>,
) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE jobs SET status = ?2, changed = ?3, steps = ?4, error = ?5, finished_at = ?6 \
         WHERE id = ?1 AND status = 'running'",
        params![
            id,
            status.as_str(),
            changed,
            serde_json::to_string(steps).unwrap_or_else(|_| "[]".into()),
            error,
            Utc::now().to_rfc3339()
        ],
    )? == 1)
}

pub fn put_account_check(conn: &Connection, check: &AccountCheck) -> Result<()> {
    conn.execute(
        "INSERT INTO account_checks (asset, account, ok, detail, at, job) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (asset, account) DO UPDATE SET \
         ok = excluded.ok, detail = excluded.detail, at = excluded.at, job = excluded.job",
        params![
            check.asset,
            check.account,
            check.ok,
            check.detail,
            check.at.to_rfc3339(),
            check.job
        ],
    )?;
    Ok(())
}

pub fn account_checks(conn: &Connection) -> Result<Vec<AccountCheck>> {
    let mut stmt =
        conn.prepare("SELECT asset, account, ok, detail, at, job FROM account_checks")?;
    let rows = stmt.query_map([], |row| {
        Ok(AccountCheck {
            asset: row.get(0)?,
            account: row.get(1)?,
            ok: row.get(2)?,
            detail: row.get(3)?,
            at: time(row.get(4)?).unwrap_or_default(),
            job: row.get(5)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

pub fn add_secret_history(
    conn: &Connection,
    asset: &str,
    account: &str,
    sealed: &[u8],
    job: Option<&str>,
) -> Result<()> {
    conn.execute(
        "INSERT INTO secret_history (asset, account, sealed, replaced_at, job) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![asset, account, sealed, Utc::now().to_rfc3339(), job],
    )?;
    Ok(())
}

/// How many replaced secrets of an account are kept.
pub fn secret_history_count(conn: &Connection, asset: &str, account: &str) -> Result<u64> {
    Ok(conn.query_row(
        "SELECT COUNT(*) FROM secret_history WHERE asset = ?1 AND account = ?2",
        [asset, account],
        |row| row.get::<_, i64>(0),
    )? as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_are_read_from_fact_lines_bounded_and_without_control_characters() {
        let facts = AssetFacts::parse(
            "user root 0 /bin/bash never\n\
             fact hostname web01\n\
             fact os Debian GNU/Linux 13 \u{1b}[31m(trixie)\n\
             fact kernel Linux 6.12.0\n\
             fact cpus 4\n\
             fact memory_kib lots\n\
             fact unknown_fact x\n",
        );
        assert_eq!(facts.hostname.as_deref(), Some("web01"));
        assert_eq!(
            facts.os.as_deref(),
            Some("Debian GNU/Linux 13 [31m(trixie)")
        );
        assert_eq!(facts.kernel.as_deref(), Some("Linux 6.12.0"));
        assert_eq!(facts.cpus, Some(4));
        assert_eq!(facts.memory_kib, None, "not a number: dropped");
        let long = AssetFacts::parse(&format!("fact hostname {}", "h".repeat(5000)));
        assert_eq!(long.hostname.map(|h| h.len()), Some(MAX_FACT));
    }
}
