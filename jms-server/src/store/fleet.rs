//! The bastion fleet as the store keeps it: each enrolled bastion's last
//! sync (time, address, the policy version it holds), what it last
//! reported about itself ([`jms_sync::fleet::StatusReport`]) and whether
//! an admin revoked it — and the admin roles of API tokens and web admins.
//! Migration 9 adds the columns; the trait methods are on
//! [`super::ReadTx`] / [`super::WriteTx`], written once for both backends.

use super::sql::{args, Conn, Row};
use super::Result;
use chrono::{DateTime, Utc};
use jms_sync::fleet::StatusReport;

/// Migration 9.
pub const MIGRATION: &str = r#"
-- What each bastion last said about itself (its control poll), where it
-- synced from, and its revocation (its key is refused from then on; its
-- sessions' audit stays).
ALTER TABLE bastions ADD COLUMN address TEXT;
ALTER TABLE bastions ADD COLUMN agent_version TEXT;
ALTER TABLE bastions ADD COLUMN open_sessions INTEGER;
ALTER TABLE bastions ADD COLUMN spool_backlog INTEGER;
ALTER TABLE bastions ADD COLUMN reported_at TEXT;
ALTER TABLE bastions ADD COLUMN revoked_at TEXT;

-- Admin roles: tokens were `read` (now `auditor`) or `admin`; `operator`
-- is new. SQLite cannot change a CHECK: the table is rebuilt.
CREATE TABLE api_tokens_roles (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    token_sha256 BLOB NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('auditor', 'operator', 'admin')),
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
INSERT INTO api_tokens_roles (id, name, token_sha256, scope, created_at, revoked_at)
    SELECT id, name, token_sha256,
           CASE scope WHEN 'read' THEN 'auditor' ELSE scope END,
           created_at, revoked_at
    FROM api_tokens;
DROP TABLE api_tokens;
ALTER TABLE api_tokens_roles RENAME TO api_tokens;

ALTER TABLE web_admins ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('auditor', 'operator', 'admin'));
"#;

/// Migration 11: what a bastion said about its sshd at enrollment (the
/// server's SSH client to it pins these keys).
pub const SSHD_MIGRATION: &str = r#"
ALTER TABLE bastions ADD COLUMN ssh_address TEXT;
-- JSON array of OpenSSH host key lines (`TYPE BASE64`).
ALTER TABLE bastions ADD COLUMN ssh_host_keys TEXT;
"#;

/// A bastion's sshd as the server's SSH client reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BastionSshd {
    pub id: i64,
    pub name: String,
    /// `host:port` from enrollment; none: [`Self::sync_address`], port 22.
    pub address: Option<String>,
    /// The address its last sync request came from.
    pub sync_address: Option<String>,
    /// Host key lines pinned at enrollment (`TYPE BASE64`).
    pub host_keys: Vec<String>,
    pub revoked: bool,
}

/// `id`'s sshd (an enrolled bastion's).
pub fn sshd(conn: &dyn Conn, id: i64) -> Result<Option<BastionSshd>> {
    conn.one(
        "SELECT id, name, ssh_address, address, ssh_host_keys, revoked_at IS NOT NULL \
         FROM bastions WHERE id = ?1 AND public_key IS NOT NULL",
        args![id],
        |row| {
            let keys: Option<String> = row.get(4)?;
            Ok(BastionSshd {
                id: row.get(0)?,
                name: row.get(1)?,
                address: row.get(2)?,
                sync_address: row.get(3)?,
                host_keys: keys
                    .and_then(|k| serde_json::from_str(&k).ok())
                    .unwrap_or_default(),
                revoked: row.get(5)?,
            })
        },
    )
}

/// Records `id`'s sshd as enrollment gave it.
pub fn set_sshd(
    conn: &dyn Conn,
    id: i64,
    address: Option<&str>,
    host_keys: &[String],
) -> Result<()> {
    let keys = serde_json::to_string(host_keys).expect("strings serialise");
    conn.exec(
        "UPDATE bastions SET ssh_address = ?2, ssh_host_keys = ?3 WHERE id = ?1",
        args![id, address, keys],
    )?;
    Ok(())
}

/// An enrolled bastion as the fleet view shows it.
/// Migration 9 in PostgreSQL's spelling: a CHECK is changed in place.
pub const PG_MIGRATION: &str = r#"
ALTER TABLE bastions ADD COLUMN address TEXT;
ALTER TABLE bastions ADD COLUMN agent_version TEXT;
ALTER TABLE bastions ADD COLUMN open_sessions BIGINT;
ALTER TABLE bastions ADD COLUMN spool_backlog BIGINT;
ALTER TABLE bastions ADD COLUMN reported_at TEXT;
ALTER TABLE bastions ADD COLUMN revoked_at TEXT;

ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scope_check;
UPDATE api_tokens SET scope = 'auditor' WHERE scope = 'read';
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope_check
    CHECK (scope IN ('auditor', 'operator', 'admin'));

ALTER TABLE web_admins ADD COLUMN role TEXT NOT NULL DEFAULT 'admin'
    CHECK (role IN ('auditor', 'operator', 'admin'));
"#;

#[derive(Debug, Clone)]
pub struct BastionInfo {
    pub id: i64,
    pub name: String,
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Its last authenticated request.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// The policy version it said it holds (its last bundle request).
    pub policy_version: Option<u64>,
    /// The address its last request came from.
    pub address: Option<String>,
    /// Its last report, and when it came.
    pub report: Option<(StatusReport, DateTime<Utc>)>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The zone an admin put it in (migration 14): it runs the jobs of
    /// that zone's assets.
    pub zone: Option<String>,
}

const COLUMNS: &str = "id, name, enrolled_at, last_seen_at, policy_version, address, \
     agent_version, open_sessions, spool_backlog, reported_at, revoked_at, zone";

fn time_at(row: &dyn Row, column: usize) -> Result<Option<DateTime<Utc>>> {
    let text: Option<String> = row.get(column)?;
    Ok(text.and_then(|t| {
        DateTime::parse_from_rfc3339(&t)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }))
}

fn info(row: &dyn Row) -> Result<BastionInfo> {
    let agent: Option<String> = row.get(6)?;
    let reported_at = time_at(row, 9)?;
    let report = match (agent, reported_at) {
        (Some(agent), Some(at)) => Some((
            StatusReport {
                agent,
                sessions: row.get::<Option<i64>>(7)?.unwrap_or(0).max(0) as u64,
                backlog: row.get::<Option<i64>>(8)?.unwrap_or(0).max(0) as u64,
            },
            at,
        )),
        _ => None,
    };
    Ok(BastionInfo {
        id: row.get(0)?,
        name: row.get(1)?,
        enrolled_at: time_at(row, 2)?,
        last_seen_at: time_at(row, 3)?,
        policy_version: row.get::<Option<i64>>(4)?.map(|v| v.max(0) as u64),
        address: row.get(5)?,
        report,
        revoked_at: time_at(row, 10)?,
        zone: row.get(11)?,
    })
}

/// Every enrolled bastion, by name.
pub fn bastions(conn: &dyn Conn) -> Result<Vec<BastionInfo>> {
    conn.all(
        &format!("SELECT {COLUMNS} FROM bastions WHERE public_key IS NOT NULL ORDER BY name"),
        args![],
        info,
    )
}

/// One enrolled bastion by name.
pub fn bastion_by_name(conn: &dyn Conn, name: &str) -> Result<Option<BastionInfo>> {
    conn.one(
        &format!("SELECT {COLUMNS} FROM bastions WHERE name = ?1 AND public_key IS NOT NULL"),
        args![name],
        info,
    )
}

/// Marks a bastion revoked at `at`; false when there is no such bastion
/// or it was revoked before.
pub fn revoke(conn: &dyn Conn, name: &str, at: &str) -> Result<bool> {
    Ok(conn.exec(
        "UPDATE bastions SET revoked_at = ?2 WHERE name = ?1 AND public_key IS NOT NULL \
         AND revoked_at IS NULL",
        args![name, at],
    )? == 1)
}

/// Puts enrolled bastion `name` in `zone` (none: no zone); false when
/// there is no such bastion.
pub fn set_zone(conn: &dyn Conn, name: &str, zone: Option<&str>) -> Result<bool> {
    Ok(conn.exec(
        "UPDATE bastions SET zone = ?2 WHERE name = ?1 AND public_key IS NOT NULL",
        args![name, zone],
    )? == 1)
}

/// Records where a bastion's request came from and, with its control
/// poll, its report.
pub fn note(
    conn: &dyn Conn,
    id: i64,
    address: Option<&str>,
    report: Option<&StatusReport>,
    at: &str,
) -> Result<()> {
    if let Some(address) = address {
        conn.exec(
            "UPDATE bastions SET address = ?2 WHERE id = ?1",
            args![id, address],
        )?;
    }
    if let Some(report) = report {
        conn.exec(
            "UPDATE bastions SET agent_version = ?2, open_sessions = ?3, spool_backlog = ?4, \
             reported_at = ?5 WHERE id = ?1",
            args![
                id,
                report.agent,
                i64::try_from(report.sessions).unwrap_or(i64::MAX),
                i64::try_from(report.backlog).unwrap_or(i64::MAX),
                at
            ],
        )?;
    }
    Ok(())
}
