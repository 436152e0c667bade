//! The audit trail as rows: sessions, commands, transfers, login results
//! and recordings, projected from the events bastions upload.
//!
//! - Events are read as the sync contract defines them
//!   ([`jms_sync::event::EventBody`], the bastion's own type): fields it
//!   does not know are ignored, kinds it does not know are kept only in
//!   `events`.
//! - The projection runs in the transaction that stored the event, and only
//!   when that event was new: a retried batch projects nothing twice. It runs
//!   per batch ([`store_events`]): each event parsed once, one upsert per
//!   session however many of its events the batch holds. It is
//!   order-independent: every event upserts its session (a command or a
//!   `session_end` may arrive before the `session_start`), each session
//!   field is set by one kind of event, and the start time falls back to the
//!   earliest time any event implies until the `session_start` arrives.
//! - Query types and rows ([`SessionQuery`], [`SessionRecord`], …) and the
//!   SQLite statements behind the storage trait's audit methods.
//!
//! Times are stored as RFC 3339 UTC with microseconds, so text order is time
//! order; a bastion's unparsable time is replaced by the time of receipt.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use jms_sync::event::{EventBody, Scope};

use std::collections::{HashMap, HashSet};

use super::sql::{args, bad, Arg, Conn, Row, Value};
use super::{NewEvent, Page, Result};

/// Migration 3. The audit tables of migration 1 were never written; they
/// are recreated in the shape the projection needs (no foreign key from a
/// recording to its session: either may arrive first).
pub const MIGRATION: &str = r#"
DROP TABLE recordings;
DROP TABLE transfers;
DROP TABLE commands;
DROP TABLE sessions;

-- One row per bastion session, upserted by each of its events.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    bastion_id INTEGER NOT NULL REFERENCES bastions (id),
    username TEXT NOT NULL DEFAULT '',
    asset TEXT NOT NULL DEFAULT '',
    account TEXT NOT NULL DEFAULT '',
    -- the login used on the target
    login TEXT,
    -- shell, exec, sftp, scp, rsync
    kind TEXT,
    protocol TEXT,
    -- the engineer's address
    client TEXT,
    command TEXT,
    -- the session_start's time (NULL until it arrives)
    started_at TEXT,
    -- the earliest time any event of the session implies
    first_seen_at TEXT NOT NULL,
    -- COALESCE(started_at, first_seen_at): list order and time filters
    at TEXT NOT NULL,
    ended_at TEXT,
    denied INTEGER NOT NULL DEFAULT 0,
    exit_status INTEGER,
    end_reason TEXT,
    duration_ms INTEGER,
    bytes_in INTEGER,
    bytes_out INTEGER,
    recording TEXT,
    recording_truncated INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_by_time ON sessions (at);
CREATE INDEX sessions_by_user ON sessions (username, at);
CREATE INDEX sessions_by_asset ON sessions (asset, at);

CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL UNIQUE REFERENCES events (id),
    session_id TEXT NOT NULL REFERENCES sessions (id),
    at TEXT NOT NULL,
    username TEXT NOT NULL,
    asset TEXT NOT NULL,
    account TEXT NOT NULL,
    input TEXT NOT NULL,
    -- interactive or exec
    kind TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny')),
    filter TEXT
);
CREATE INDEX commands_by_session ON commands (session_id, at);
CREATE INDEX commands_by_time ON commands (at);
CREATE INDEX commands_by_user ON commands (username, at);

CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL UNIQUE REFERENCES events (id),
    session_id TEXT NOT NULL REFERENCES sessions (id),
    at TEXT NOT NULL,
    username TEXT NOT NULL,
    asset TEXT NOT NULL,
    account TEXT NOT NULL,
    -- sftp, scp or rsync
    via TEXT NOT NULL,
    operation TEXT NOT NULL,
    path TEXT NOT NULL,
    to_path TEXT,
    size INTEGER,
    -- ok, or why it failed or was refused
    result TEXT NOT NULL,
    ok INTEGER NOT NULL
);
CREATE INDEX transfers_by_session ON transfers (session_id, at);
CREATE INDEX transfers_by_time ON transfers (at);

-- Login results (PAM authentication on the bastion).
CREATE TABLE logins (
    id INTEGER PRIMARY KEY,
    event_id INTEGER NOT NULL UNIQUE REFERENCES events (id),
    bastion_id INTEGER NOT NULL REFERENCES bastions (id),
    at TEXT NOT NULL,
    username TEXT NOT NULL,
    remote_addr TEXT,
    service TEXT,
    outcome TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX logins_by_time ON logins (at);

-- Recording files (<data>/recordings/<session>.cast); complete once the
-- uploaded bytes matched the bastion's size and SHA-256.
CREATE TABLE recordings (
    session_id TEXT PRIMARY KEY,
    bastion_id INTEGER NOT NULL REFERENCES bastions (id),
    format TEXT NOT NULL DEFAULT 'asciicast-v2',
    size INTEGER,
    sha256 TEXT,
    complete INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    completed_at TEXT
);
"#;

// ---- events as the projection reads them ---------------------------------

/// Stored time text: RFC 3339 UTC with microseconds.
pub fn time_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

// ---- queries and rows ------------------------------------------------------

/// `GET /api/v1/sessions` filters (exact names; times on the start).
#[derive(Debug, Clone, Default)]
pub struct SessionQuery {
    pub user: Option<String>,
    pub asset: Option<String>,
    pub account: Option<String>,
    /// Started at or after.
    pub since: Option<DateTime<Utc>>,
    /// Started before.
    pub until: Option<DateTime<Utc>>,
    /// Only sessions still going (true) or over (false).
    pub online: Option<bool>,
    pub limit: u32,
    pub offset: u64,
}

/// `GET /api/v1/commands` filters.
#[derive(Debug, Clone, Default)]
pub struct CommandQuery {
    pub user: Option<String>,
    pub asset: Option<String>,
    pub session: Option<String>,
    /// Case-insensitive substring of the command text.
    pub q: Option<String>,
    /// `allow` or `deny`.
    pub decision: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    pub offset: u64,
}

/// `GET /api/v1/transfers` filters.
#[derive(Debug, Clone, Default)]
pub struct TransferQuery {
    pub user: Option<String>,
    pub asset: Option<String>,
    pub session: Option<String>,
    pub operation: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub limit: u32,
    pub offset: u64,
}

/// A session as projected.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub id: String,
    /// The bastion's name.
    pub bastion: Option<String>,
    pub user: String,
    pub asset: String,
    pub account: String,
    pub login: Option<String>,
    pub kind: Option<String>,
    pub protocol: Option<String>,
    pub client: Option<String>,
    pub command: Option<String>,
    /// The session_start's time, else the earliest any event implies.
    pub started_at: DateTime<Utc>,
    /// Whether the session_start arrived.
    pub start_seen: bool,
    pub ended_at: Option<DateTime<Utc>>,
    pub denied: bool,
    pub exit_status: Option<i32>,
    pub reason: Option<String>,
    pub duration_ms: Option<u64>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub recording_truncated: bool,
    /// A complete recording is stored.
    pub has_recording: bool,
    pub command_count: u64,
    pub transfer_count: u64,
}

/// A command, with its session's start (for the replay offset).
#[derive(Debug, Clone)]
pub struct CommandRecord {
    pub id: i64,
    pub session: String,
    pub at: DateTime<Utc>,
    pub session_started_at: DateTime<Utc>,
    pub user: String,
    pub asset: String,
    pub account: String,
    pub command: String,
    pub kind: String,
    pub decision: String,
    pub filter: Option<String>,
    /// The write joiner(s) who typed it, when not the owner alone.
    pub typed_by: Option<String>,
}

/// A file transfer; the API serves it as is (schema `TransferView`).
#[derive(Debug, Clone, Serialize)]
pub struct TransferRecord {
    pub id: i64,
    pub session: String,
    pub at: DateTime<Utc>,
    pub user: String,
    pub asset: String,
    pub account: String,
    /// `sftp`, `scp` or `rsync`.
    pub via: String,
    /// `upload`, `download`, `delete`, `rename`, `mkdir`, …
    pub operation: String,
    pub path: String,
    /// A rename's or link's destination.
    pub to: Option<String>,
    pub size: Option<u64>,
    /// `ok`, or why it failed or was refused.
    pub result: String,
    pub ok: bool,
}

/// A recording as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    pub session: String,
    pub bastion_id: i64,
    pub size: Option<u64>,
    pub sha256: Option<String>,
    pub complete: bool,
}

// ---- SQLite: projection ----------------------------------------------------

/// What one event (or, merged, several) sets on its session row (None:
/// leaves it).
#[derive(Default)]
struct SessionUpdate<'a> {
    id: &'a str,
    /// user/asset/account, each with whether it overrides the stored
    /// value (else it only fills an empty one); an empty value never
    /// overrides.
    user: (&'a str, bool),
    asset: (&'a str, bool),
    account: (&'a str, bool),
    login: Option<&'a str>,
    kind: Option<&'a str>,
    protocol: Option<&'a str>,
    client: Option<&'a str>,
    command: Option<&'a str>,
    started_at: Option<String>,
    seen_at: String,
    ended_at: Option<String>,
    denied: bool,
    exit_status: Option<i32>,
    reason: Option<&'a str>,
    duration_ms: Option<u64>,
    bytes_in: Option<u64>,
    bytes_out: Option<u64>,
    recording: Option<&'a str>,
    recording_truncated: bool,
}

impl<'a> SessionUpdate<'a> {
    /// A scope's names, overriding the stored ones when `authoritative`.
    fn scoped(scope: &'a Scope, authoritative: bool, seen_at: String) -> Self {
        SessionUpdate {
            id: &scope.session,
            user: (&scope.user, authoritative),
            asset: (&scope.asset, authoritative),
            account: (&scope.account, authoritative),
            login: scope.username.as_deref(),
            seen_at,
            ..Default::default()
        }
    }

    /// Folds `next` into `self`: upserting the result does what upserting
    /// `self` and then `next` does (the upsert's rules, field by field).
    fn then(&mut self, next: SessionUpdate<'a>) {
        fn name<'a>(mine: &mut (&'a str, bool), next: (&'a str, bool)) {
            if next.1 && !next.0.is_empty() {
                *mine = next;
            } else if mine.0.is_empty() {
                *mine = (next.0, false);
            }
        }
        fn later<T>(mine: &mut Option<T>, next: Option<T>) {
            if next.is_some() {
                *mine = next;
            }
        }
        name(&mut self.user, next.user);
        name(&mut self.asset, next.asset);
        name(&mut self.account, next.account);
        later(&mut self.login, next.login);
        later(&mut self.kind, next.kind);
        later(&mut self.protocol, next.protocol);
        later(&mut self.client, next.client);
        later(&mut self.command, next.command);
        later(&mut self.started_at, next.started_at);
        if next.seen_at < self.seen_at {
            self.seen_at = next.seen_at;
        }
        later(&mut self.ended_at, next.ended_at);
        self.denied |= next.denied;
        later(&mut self.exit_status, next.exit_status);
        later(&mut self.reason, next.reason);
        later(&mut self.duration_ms, next.duration_ms);
        later(&mut self.bytes_in, next.bytes_in);
        later(&mut self.bytes_out, next.bytes_out);
        later(&mut self.recording, next.recording);
        self.recording_truncated |= next.recording_truncated;
    }
}

/// A newly stored event, parsed once.
struct Parsed<'e> {
    /// Its row in `events`.
    event_id: i64,
    key: &'e str,
    at: DateTime<Utc>,
    at_text: String,
    event: EventBody,
}

/// Stores a batch of events of `bastion_id`, each unless its idempotency
/// key is already stored, and projects the new ones (see the module doc);
/// returns how many were new. Runs in the caller's transaction: a retried
/// batch stores and projects nothing twice.
///
/// The projection is batched: each new event is parsed once, the updates
/// of one session are folded into one upsert, then its commands,
/// transfers and logins are inserted. An event that cannot be projected
/// (malformed, or naming a session of another bastion) is logged and left
/// in `events` only: the batch never fails for it.
pub fn store_events(conn: &dyn Conn, bastion_id: i64, events: &[NewEvent<'_>]) -> Result<usize> {
    let received = time_text(Utc::now());
    // A key twice in the batch: its first event counts (as if uploaded
    // one by one), so no statement holds one key twice.
    let mut seen = HashSet::with_capacity(events.len());
    let unique: Vec<&NewEvent<'_>> = events
        .iter()
        .filter(|e| seen.insert(e.idempotency_key.as_ref()))
        .collect();
    // Exactly once per (bastion, key): the unique key decides, in either
    // backend (a concurrent duplicate waits for the first one's
    // transaction, then inserts nothing); the rows inserted come back.
    let mut ids: HashMap<String, i64> = HashMap::with_capacity(unique.len());
    insert_rows(
        conn,
        "INSERT INTO events (bastion_id, idempotency_key, kind, at, body, received_at)",
        "ON CONFLICT DO NOTHING RETURNING id, idempotency_key",
        &unique,
        |e, out| {
            out.extend([
                Value::Int(bastion_id),
                e.idempotency_key.value(),
                e.kind.value(),
                e.at.value(),
                e.body.value(),
                received.value(),
            ])
        },
        &mut |row| {
            ids.insert(row.get(1)?, row.get(0)?);
            Ok(())
        },
    )?;
    let new: Vec<(i64, &NewEvent<'_>)> = unique
        .into_iter()
        .filter_map(|e| ids.get(e.idempotency_key.as_ref()).map(|&id| (id, e)))
        .collect();
    let count = new.len();
    let parsed: Vec<Parsed<'_>> = new
        .into_iter()
        .filter_map(
            |(event_id, event)| match serde_json::from_str::<EventBody>(event.body) {
                Ok(parsed) => {
                    let at = parse_time(&event.at).unwrap_or_else(Utc::now);
                    Some(Parsed {
                        event_id,
                        key: &event.idempotency_key,
                        at,
                        at_text: time_text(at),
                        event: parsed,
                    })
                }
                Err(e) => {
                    tracing::warn!(
                        bastion_id,
                        key = %event.idempotency_key,
                        kind = %event.kind,
                        error = %e,
                        "event stored but not projected: unexpected shape"
                    );
                    None
                }
            },
        )
        .collect();
    project(conn, bastion_id, &parsed)?;
    Ok(count)
}

/// Projects newly stored events: every session's folded update first (in
/// the order the sessions first appear), then the rows that hang off a
/// session the update reached.
fn project(conn: &dyn Conn, bastion_id: i64, events: &[Parsed<'_>]) -> Result<()> {
    let mut sessions: Vec<SessionUpdate<'_>> = Vec::new();
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    // Events with a row of their own (commands, transfers, logins).
    let mut rows: Vec<&Parsed<'_>> = Vec::new();
    for p in events {
        let update = match &p.event {
            EventBody::SessionStart {
                scope,
                kind,
                protocol,
                client,
                command,
                recording,
            } => SessionUpdate {
                kind: Some(kind.as_str()).filter(|k| !k.is_empty()),
                protocol: Some(protocol.as_str()).filter(|p| !p.is_empty()),
                client: client.as_deref(),
                command: command.as_deref(),
                started_at: Some(p.at_text.clone()),
                recording: recording.as_deref(),
                ..SessionUpdate::scoped(scope, true, p.at_text.clone())
            },
            EventBody::SessionEnd {
                scope,
                exit_status,
                reason,
                duration_ms,
                bytes_in,
                bytes_out,
                recording,
                recording_truncated,
                ..
            } => {
                let begun = p.at - chrono::Duration::milliseconds(*duration_ms as i64);
                SessionUpdate {
                    ended_at: Some(p.at_text.clone()),
                    exit_status: *exit_status,
                    reason: reason.as_deref(),
                    duration_ms: Some(*duration_ms),
                    bytes_in: Some(*bytes_in),
                    bytes_out: Some(*bytes_out),
                    recording: recording.as_deref(),
                    recording_truncated: *recording_truncated,
                    ..SessionUpdate::scoped(scope, true, time_text(begun))
                }
            }
            EventBody::SessionDenied {
                session: Some(session),
                user,
                reason,
                client,
                ..
            } => SessionUpdate {
                id: session,
                user: (user, false),
                client: client.as_deref(),
                seen_at: p.at_text.clone(),
                ended_at: Some(p.at_text.clone()),
                denied: true,
                reason: Some(reason),
                ..Default::default()
            },
            EventBody::SessionDenied { session: None, .. } => continue,
            EventBody::Command {
                scope, decision, ..
            } => {
                if !matches!(decision.as_str(), "allow" | "deny") {
                    tracing::warn!(
                        bastion_id,
                        key = p.key,
                        decision,
                        "command event stored but not projected: decision is neither allow nor deny"
                    );
                    continue;
                }
                rows.push(p);
                SessionUpdate::scoped(scope, false, p.at_text.clone())
            }
            EventBody::Transfer { scope, .. } => {
                rows.push(p);
                SessionUpdate::scoped(scope, false, p.at_text.clone())
            }
            // A share (code made, peer joined or left): the shared session
            // is known by its scope; the event itself stays in `events`.
            EventBody::Share { scope, .. } => {
                SessionUpdate::scoped(scope, false, p.at_text.clone())
            }
            EventBody::Login { .. } | EventBody::JobStep { .. } => {
                rows.push(p);
                continue;
            }
        };
        match index.get(update.id) {
            Some(&i) => sessions[i].then(update),
            None => {
                index.insert(update.id, sessions.len());
                sessions.push(update);
            }
        }
    }
    let mut reached: std::collections::HashSet<&str> = std::collections::HashSet::new();
    for update in &sessions {
        if upsert_session(conn, bastion_id, update)? {
            reached.insert(update.id);
        }
    }
    // The rows of each table, in the batch's order, each table's in
    // multi-row statements.
    let (mut commands, mut transfers, mut logins, mut steps) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in rows {
        match &p.event {
            EventBody::Command { scope, .. } if reached.contains(scope.session.as_str()) => {
                commands.push(p)
            }
            EventBody::Transfer { scope, .. } if reached.contains(scope.session.as_str()) => {
                transfers.push(p)
            }
            EventBody::Login { .. } => logins.push(p),
            EventBody::JobStep { .. } => steps.push(p),
            // A command or transfer of a session its update did not reach.
            EventBody::Command { .. } | EventBody::Transfer { .. } => {}
            // Never in `rows`.
            EventBody::SessionStart { .. }
            | EventBody::SessionEnd { .. }
            | EventBody::SessionDenied { .. }
            | EventBody::Share { .. } => {}
        }
    }
    let clamp = |v: u64| Value::Int(v.min(i64::MAX as u64) as i64);
    insert_rows(
        conn,
        "INSERT INTO commands (event_id, session_id, at, username, asset, \
         account, input, kind, decision, filter, typed_by)",
        "ON CONFLICT DO NOTHING",
        &commands,
        |p, out| {
            if let EventBody::Command {
                scope,
                command,
                kind,
                decision,
                filter,
                typed_by,
            } = &p.event
            {
                out.extend([
                    Value::Int(p.event_id),
                    scope.session.value(),
                    p.at_text.value(),
                    scope.user.value(),
                    scope.asset.value(),
                    scope.account.value(),
                    command.value(),
                    kind.value(),
                    decision.value(),
                    filter.value(),
                    typed_by.value(),
                ])
            }
        },
        &mut |_| Ok(()),
    )?;
    insert_rows(
        conn,
        "INSERT INTO transfers (event_id, session_id, at, username, asset, \
         account, via, operation, path, to_path, size, result, ok)",
        "ON CONFLICT DO NOTHING",
        &transfers,
        |p, out| {
            if let EventBody::Transfer {
                scope,
                via,
                operation,
                path,
                to,
                size,
                result,
            } = &p.event
            {
                out.extend([
                    Value::Int(p.event_id),
                    scope.session.value(),
                    p.at_text.value(),
                    scope.user.value(),
                    scope.asset.value(),
                    scope.account.value(),
                    via.value(),
                    operation.value(),
                    path.value(),
                    to.value(),
                    size.map_or(Value::Null, clamp),
                    result.value(),
                    Value::Bool(result == "ok"),
                ])
            }
        },
        &mut |_| Ok(()),
    )?;
    insert_rows(
        conn,
        "INSERT INTO logins (event_id, bastion_id, at, username, \
         remote_addr, service, outcome, reason)",
        "ON CONFLICT DO NOTHING",
        &logins,
        |p, out| {
            if let EventBody::Login {
                user,
                rhost,
                service,
                outcome,
                reason,
            } = &p.event
            {
                out.extend([
                    Value::Int(p.event_id),
                    Value::Int(bastion_id),
                    p.at_text.value(),
                    user.value(),
                    rhost.value(),
                    nonempty(service),
                    outcome.value(),
                    reason.as_deref().map_or(Value::Null, nonempty),
                ])
            }
        },
        &mut |_| Ok(()),
    )?;
    insert_rows(
        conn,
        "INSERT INTO job_events (event_id, job, bastion_id, at, attempt, step, ok, detail)",
        "ON CONFLICT DO NOTHING",
        &steps,
        |p, out| {
            if let EventBody::JobStep {
                job,
                attempt,
                step,
                ok,
                detail,
                ..
            } = &p.event
            {
                out.extend([
                    Value::Int(p.event_id),
                    job.value(),
                    Value::Int(bastion_id),
                    p.at_text.value(),
                    Value::Int((*attempt).into()),
                    step.value(),
                    Value::Bool(*ok),
                    detail.value(),
                ])
            }
        },
        &mut |_| Ok(()),
    )?;
    Ok(())
}

/// Rows one multi-row `INSERT` carries at most. A batch goes in chunks of
/// 256, 64, 16, 4 and 1 rows: each statement has five texts, kept prepared
/// per connection, and a batch of 1000 takes ten statements (on
/// PostgreSQL ten round trips instead of a thousand).
const CHUNK: usize = 256;

/// `head VALUES (?1, …, ?n), (…) tail`: `rows` rows of `columns`
/// parameters.
fn values_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    use std::fmt::Write;
    let mut sql = String::with_capacity(head.len() + tail.len() + rows * columns * 6 + 16);
    sql.push_str(head);
    sql.push_str(" VALUES ");
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            let _ = write!(
                sql,
                "{}?{}",
                if c == 0 { "" } else { ", " },
                r * columns + c + 1
            );
        }
        sql.push(')');
    }
    sql.push(' ');
    sql.push_str(tail);
    sql
}

/// Inserts `rows` (`bind` gives one row's values, the same number for
/// each) with multi-row `head VALUES … tail` statements (see [`CHUNK`]),
/// each row returned (`RETURNING` in `tail`) handed to `each`.
fn insert_rows<'r, R>(
    conn: &dyn Conn,
    head: &str,
    tail: &str,
    rows: &'r [R],
    bind: impl Fn(&'r R, &mut Vec<Value<'r>>),
    each: &mut dyn FnMut(&dyn Row) -> Result<()>,
) -> Result<()> {
    let mut args = Vec::new();
    let mut rest = rows;
    while !rest.is_empty() {
        let mut n = CHUNK;
        while n > rest.len() {
            n /= 4;
        }
        let (chunk, next) = rest.split_at(n);
        rest = next;
        args.clear();
        for row in chunk {
            bind(row, &mut args);
        }
        if args.is_empty() || args.len() % n != 0 {
            return Err(bad(0, format!("`{head}`: rows of unequal width")));
        }
        let sql = values_sql(head, args.len() / n, n, tail);
        conn.query(&sql, &args, each)?;
    }
    Ok(())
}

/// `text`, or NULL when empty.
fn nonempty(text: &str) -> Value<'_> {
    if text.is_empty() {
        Value::Null
    } else {
        text.value()
    }
}

/// Runs one statement through the connection's statement cache.
fn run(conn: &dyn Conn, sql: &str, args: &[Value<'_>]) -> Result<usize> {
    Ok(conn.exec(sql, args)? as usize)
}

/// Inserts or merges the session row; false (logged) when the id belongs
/// to another bastion's session (the update's condition leaves it) or is
/// empty.
fn upsert_session(conn: &dyn Conn, bastion_id: i64, u: &SessionUpdate<'_>) -> Result<bool> {
    if u.id.is_empty() {
        tracing::warn!(bastion_id, "event without a session id: not projected");
        return Ok(false);
    }
    let clamp = |v: Option<u64>| v.map(|v| v.min(i64::MAX as u64) as i64);
    let changed = run(
        conn,
        "INSERT INTO sessions (id, bastion_id, username, asset, account, login, kind, protocol, \
         client, command, started_at, first_seen_at, at, ended_at, denied, exit_status, \
         end_reason, duration_ms, bytes_in, bytes_out, recording, recording_truncated) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, COALESCE(?11, ?12), ?13, \
         ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) \
         ON CONFLICT (id) DO UPDATE SET \
         username = CASE WHEN (?22 OR sessions.username = '') AND excluded.username <> '' \
             THEN excluded.username ELSE sessions.username END, \
         asset = CASE WHEN (?23 OR sessions.asset = '') AND excluded.asset <> '' \
             THEN excluded.asset ELSE sessions.asset END, \
         account = CASE WHEN (?24 OR sessions.account = '') AND excluded.account <> '' \
             THEN excluded.account ELSE sessions.account END, \
         login = COALESCE(excluded.login, sessions.login), \
         kind = COALESCE(excluded.kind, sessions.kind), \
         protocol = COALESCE(excluded.protocol, sessions.protocol), \
         client = COALESCE(excluded.client, sessions.client), \
         command = COALESCE(excluded.command, sessions.command), \
         started_at = COALESCE(excluded.started_at, sessions.started_at), \
         first_seen_at = MIN(sessions.first_seen_at, excluded.first_seen_at), \
         at = COALESCE(excluded.started_at, sessions.started_at, \
             MIN(sessions.first_seen_at, excluded.first_seen_at)), \
         ended_at = COALESCE(excluded.ended_at, sessions.ended_at), \
         denied = MAX(sessions.denied, excluded.denied), \
         exit_status = COALESCE(excluded.exit_status, sessions.exit_status), \
         end_reason = COALESCE(excluded.end_reason, sessions.end_reason), \
         duration_ms = COALESCE(excluded.duration_ms, sessions.duration_ms), \
         bytes_in = COALESCE(excluded.bytes_in, sessions.bytes_in), \
         bytes_out = COALESCE(excluded.bytes_out, sessions.bytes_out), \
         recording = COALESCE(excluded.recording, sessions.recording), \
         recording_truncated = MAX(sessions.recording_truncated, excluded.recording_truncated) \
         WHERE sessions.bastion_id = excluded.bastion_id",
        args![
            u.id,
            bastion_id,
            u.user.0,
            u.asset.0,
            u.account.0,
            u.login,
            u.kind,
            u.protocol,
            u.client,
            u.command,
            u.started_at,
            u.seen_at,
            u.ended_at,
            u.denied,
            u.exit_status,
            u.reason,
            clamp(u.duration_ms),
            clamp(u.bytes_in),
            clamp(u.bytes_out),
            u.recording,
            u.recording_truncated,
            u.user.1,
            u.asset.1,
            u.account.1,
        ],
    )?;
    if changed == 0 {
        tracing::warn!(
            bastion_id,
            session = u.id,
            "events name a session of another bastion: not projected"
        );
        return Ok(false);
    }
    Ok(true)
}

// ---- SQLite: reads -----------------------------------------------------------

fn time(row: &dyn Row, column: usize) -> Result<DateTime<Utc>> {
    let text: String = row.get(column)?;
    parse_time(&text).ok_or_else(|| bad(column, format!("bad time `{text}`")))
}

fn opt_time(row: &dyn Row, column: usize) -> Result<Option<DateTime<Utc>>> {
    match row.get::<Option<String>>(column)? {
        Some(_) => time(row, column).map(Some),
        None => Ok(None),
    }
}

fn opt_u64(row: &dyn Row, column: usize) -> Result<Option<u64>> {
    Ok(row.get::<Option<i64>>(column)?.map(|v| v.max(0) as u64))
}

/// `%q%` for LIKE, with LIKE's own wildcards escaped.
pub(crate) fn like_pattern(q: &str) -> String {
    let mut pattern = String::from("%");
    for c in q.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// Conditions and their positional parameters.
#[derive(Default)]
struct Filter {
    conditions: Vec<String>,
    params: Vec<Value<'static>>,
}

impl Filter {
    fn add(&mut self, condition: &str, value: String) {
        self.conditions
            .push(condition.replace('?', &format!("?{}", self.params.len() + 1)));
        self.params.push(Value::Text(value.into()));
    }
    fn equal(&mut self, column: &str, value: &Option<String>) {
        if let Some(value) = value {
            self.add(&format!("{column} = ?"), value.clone());
        }
    }
    fn times(&mut self, column: &str, since: Option<DateTime<Utc>>, until: Option<DateTime<Utc>>) {
        if let Some(since) = since {
            self.add(&format!("{column} >= ?"), time_text(since));
        }
        if let Some(until) = until {
            self.add(&format!("{column} < ?"), time_text(until));
        }
    }
    fn sql(&self) -> String {
        if self.conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.conditions.join(" AND "))
        }
    }
    fn page<T>(
        mut self,
        conn: &dyn Conn,
        from: &str,
        columns: &str,
        order: &str,
        (limit, offset): (u32, u64),
        map: impl FnMut(&dyn Row) -> Result<T>,
    ) -> Result<Page<T>> {
        let filter = self.sql();
        let total: u64 = conn.value(
            &format!("SELECT COUNT(*) FROM {from} {filter}"),
            &self.params,
        )?;
        let n = self.params.len();
        self.params.push(Value::Int(i64::from(limit)));
        self.params
            .push(Value::Int(i64::try_from(offset).unwrap_or(i64::MAX)));
        let sql = format!(
            "SELECT {columns} FROM {from} {filter} ORDER BY {order} LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        );
        let items = conn.all(&sql, &self.params, map)?;
        Ok(Page { items, total })
    }
}

const SESSION_FROM: &str = "sessions s LEFT JOIN bastions b ON b.id = s.bastion_id";
const SESSION_COLUMNS: &str = "s.id, b.name, s.username, s.asset, s.account, s.login, s.kind, \
     s.protocol, s.client, s.command, s.at, s.started_at IS NOT NULL, s.ended_at, s.denied, \
     s.exit_status, s.end_reason, s.duration_ms, s.bytes_in, s.bytes_out, \
     s.recording_truncated, \
     EXISTS (SELECT 1 FROM recordings r WHERE r.session_id = s.id AND r.complete = 1), \
     (SELECT COUNT(*) FROM commands c WHERE c.session_id = s.id), \
     (SELECT COUNT(*) FROM transfers t WHERE t.session_id = s.id)";

fn session_row(row: &dyn Row) -> Result<SessionRecord> {
    Ok(SessionRecord {
        id: row.get(0)?,
        bastion: row.get(1)?,
        user: row.get(2)?,
        asset: row.get(3)?,
        account: row.get(4)?,
        login: row.get(5)?,
        kind: row.get(6)?,
        protocol: row.get(7)?,
        client: row.get(8)?,
        command: row.get(9)?,
        started_at: time(row, 10)?,
        start_seen: row.get(11)?,
        ended_at: opt_time(row, 12)?,
        denied: row.get(13)?,
        exit_status: row.get(14)?,
        reason: row.get(15)?,
        duration_ms: opt_u64(row, 16)?,
        bytes_in: opt_u64(row, 17)?,
        bytes_out: opt_u64(row, 18)?,
        recording_truncated: row.get(19)?,
        has_recording: row.get(20)?,
        command_count: row.get(21)?,
        transfer_count: row.get(22)?,
    })
}

/// Sessions, newest first.
pub fn sessions(conn: &dyn Conn, q: &SessionQuery) -> Result<Page<SessionRecord>> {
    let mut filter = Filter::default();
    filter.equal("s.username", &q.user);
    filter.equal("s.asset", &q.asset);
    filter.equal("s.account", &q.account);
    filter.times("s.at", q.since, q.until);
    match q.online {
        Some(true) => filter
            .conditions
            .push("(s.ended_at IS NULL AND s.denied = 0)".into()),
        Some(false) => filter
            .conditions
            .push("(s.ended_at IS NOT NULL OR s.denied = 1)".into()),
        None => {}
    }
    filter.page(
        conn,
        SESSION_FROM,
        SESSION_COLUMNS,
        "s.at DESC, s.id DESC",
        (q.limit, q.offset),
        session_row,
    )
}

pub fn session(conn: &dyn Conn, id: &str) -> Result<Option<SessionRecord>> {
    conn.one(
        &format!("SELECT {SESSION_COLUMNS} FROM {SESSION_FROM} WHERE s.id = ?1"),
        args![id],
        session_row,
    )
}

const COMMAND_FROM: &str = "commands c JOIN sessions s ON s.id = c.session_id";
const COMMAND_COLUMNS: &str = "c.id, c.session_id, c.at, s.at, c.username, c.asset, c.account, \
     c.input, c.kind, c.decision, c.filter, c.typed_by";

fn command_row(row: &dyn Row) -> Result<CommandRecord> {
    Ok(CommandRecord {
        id: row.get(0)?,
        session: row.get(1)?,
        at: time(row, 2)?,
        session_started_at: time(row, 3)?,
        user: row.get(4)?,
        asset: row.get(5)?,
        account: row.get(6)?,
        command: row.get(7)?,
        kind: row.get(8)?,
        decision: row.get(9)?,
        filter: row.get(10)?,
        typed_by: row.get(11)?,
    })
}

/// Commands; newest first, or in the order typed within one session when
/// `oldest_first`.
pub fn commands(
    conn: &dyn Conn,
    q: &CommandQuery,
    oldest_first: bool,
) -> Result<Page<CommandRecord>> {
    let mut filter = Filter::default();
    filter.equal("c.username", &q.user);
    filter.equal("c.asset", &q.asset);
    filter.equal("c.session_id", &q.session);
    filter.equal("c.decision", &q.decision);
    if let Some(text) = &q.q {
        filter.add("c.input LIKE ? ESCAPE '\\'", like_pattern(text));
    }
    filter.times("c.at", q.since, q.until);
    let order = if oldest_first {
        "c.at ASC, c.id ASC"
    } else {
        "c.at DESC, c.id DESC"
    };
    filter.page(
        conn,
        COMMAND_FROM,
        COMMAND_COLUMNS,
        order,
        (q.limit, q.offset),
        command_row,
    )
}

const TRANSFER_COLUMNS: &str = "t.id, t.session_id, t.at, t.username, t.asset, t.account, t.via, \
     t.operation, t.path, t.to_path, t.size, t.result, t.ok";

fn transfer_row(row: &dyn Row) -> Result<TransferRecord> {
    Ok(TransferRecord {
        id: row.get(0)?,
        session: row.get(1)?,
        at: time(row, 2)?,
        user: row.get(3)?,
        asset: row.get(4)?,
        account: row.get(5)?,
        via: row.get(6)?,
        operation: row.get(7)?,
        path: row.get(8)?,
        to: row.get(9)?,
        size: opt_u64(row, 10)?,
        result: row.get(11)?,
        ok: row.get(12)?,
    })
}

/// Transfers; newest first, or in order within one session.
pub fn transfers(
    conn: &dyn Conn,
    q: &TransferQuery,
    oldest_first: bool,
) -> Result<Page<TransferRecord>> {
    let mut filter = Filter::default();
    filter.equal("t.username", &q.user);
    filter.equal("t.asset", &q.asset);
    filter.equal("t.session_id", &q.session);
    filter.equal("t.operation", &q.operation);
    filter.times("t.at", q.since, q.until);
    let order = if oldest_first {
        "t.at ASC, t.id ASC"
    } else {
        "t.at DESC, t.id DESC"
    };
    filter.page(
        conn,
        "transfers t",
        TRANSFER_COLUMNS,
        order,
        (q.limit, q.offset),
        transfer_row,
    )
}

// ---- SQLite: recordings --------------------------------------------------------

pub fn recording(conn: &dyn Conn, session: &str) -> Result<Option<RecordingRow>> {
    conn.one(
        "SELECT session_id, bastion_id, size, sha256, complete FROM recordings \
             WHERE session_id = ?1",
        args![session],
        |row| {
            Ok(RecordingRow {
                session: row.get(0)?,
                bastion_id: row.get(1)?,
                size: opt_u64(row, 2)?,
                sha256: row.get(3)?,
                complete: row.get(4)?,
            })
        },
    )
}

pub fn put_recording(conn: &dyn Conn, row: &RecordingRow) -> Result<()> {
    let now = time_text(Utc::now());
    conn.exec(
        "INSERT INTO recordings (session_id, bastion_id, size, sha256, complete, created_at, \
         completed_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (session_id) DO UPDATE SET size = excluded.size, \
         sha256 = excluded.sha256, complete = excluded.complete, \
         completed_at = excluded.completed_at",
        args![
            row.session,
            row.bastion_id,
            row.size.map(|s| s.min(i64::MAX as u64) as i64),
            row.sha256,
            row.complete,
            now,
            row.complete.then_some(&now)
        ],
    )?;
    Ok(())
}

pub fn delete_recording(conn: &dyn Conn, session: &str) -> Result<()> {
    conn.exec(
        "DELETE FROM recordings WHERE session_id = ?1",
        args![session],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spool_lines_parse_as_audit_events() {
        let start: EventBody = serde_json::from_value(json!({
            "id": "e1", "time": "2026-01-01T00:00:00.000Z", "event": "session_start",
            "session": "s1", "user": "alice", "asset": "web01", "account": "root",
            "username": "root", "kind": "shell", "protocol": "ssh", "client": "10.0.0.1",
            "command": null, "recording": "s1.cast", "later_field": 1
        }))
        .unwrap();
        assert!(
            matches!(start, EventBody::SessionStart { ref scope, .. } if scope.session == "s1" && scope.username.as_deref() == Some("root"))
        );
        // A kind this server does not know does not parse: stored, not
        // projected (`store_events`).
        assert!(
            serde_json::from_value::<EventBody>(json!({"event": "something_new", "x": 1})).is_err()
        );
        let denied: EventBody = serde_json::from_value(json!({
            "event": "session_denied", "user": "bob", "command_line": "nope", "reason": "no such asset", "client": null
        }))
        .unwrap();
        assert!(matches!(
            denied,
            EventBody::SessionDenied { session: None, .. }
        ));
    }

    /// A session's events in one batch give the row they give one by one
    /// (the batch folds them into one upsert), in any order.
    #[test]
    fn a_batch_projects_what_its_events_project_one_by_one() {
        use crate::store::{SqliteStore, Storage};
        let bodies: Vec<serde_json::Value> = [
            json!({"event": "command", "session": "s1", "user": "", "asset": "web01",
                   "account": "", "command": "ls", "kind": "interactive", "decision": "allow",
                   "time": "2026-01-01T00:00:05.000Z"}),
            json!({"event": "session_denied", "session": "s2", "user": "bob",
                   "reason": "no grant", "client": "10.0.0.9", "time": "2026-01-01T00:00:01.000Z"}),
            json!({"event": "session_end", "session": "s1", "user": "alice", "asset": "web01",
                   "account": "root", "exit_status": 0, "duration_ms": 9000, "bytes_in": 5,
                   "time": "2026-01-01T00:00:10.000Z"}),
            json!({"event": "transfer", "session": "s1", "user": "mallory", "asset": "x",
                   "account": "y", "via": "sftp", "operation": "upload", "path": "/tmp/f",
                   "result": "ok", "time": "2026-01-01T00:00:06.000Z"}),
            json!({"event": "session_start", "session": "s1", "user": "alice", "asset": "web01",
                   "account": "root", "username": "root", "kind": "shell", "protocol": "ssh",
                   "time": "2026-01-01T00:00:02.000Z"}),
            json!({"event": "command", "session": "s1", "user": "alice", "asset": "web01",
                   "account": "root", "command": "id", "kind": "interactive", "decision": "deny",
                   "time": "2026-01-01T00:00:07.000Z"}),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, mut body)| {
            body["id"] = format!("e{i}").into();
            body
        })
        .collect();
        let texts: Vec<String> = bodies.iter().map(|b| b.to_string()).collect();
        let events: Vec<NewEvent<'_>> = bodies
            .iter()
            .zip(&texts)
            .map(|(body, text)| NewEvent {
                idempotency_key: body["id"].as_str().unwrap().into(),
                kind: body["event"].as_str().unwrap().into(),
                at: body["time"].as_str().unwrap().into(),
                body: text,
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let project = |name: &str, batches: Vec<&[NewEvent<'_>]>| {
            let store = SqliteStore::open(&dir.path().join(name)).unwrap();
            let mut tx = store.write().unwrap();
            let bastion = tx.put_bastion("b", &[7; 32], false).unwrap().unwrap();
            for batch in batches {
                tx.store_events(bastion, batch).unwrap();
            }
            tx.commit().unwrap();
            let read = store.read().unwrap();
            let rows = ["s1", "s2"].map(|id| format!("{:?}", read.session(id).unwrap()));
            let commands = read
                .commands(
                    &CommandQuery {
                        limit: 100,
                        ..Default::default()
                    },
                    true,
                )
                .unwrap()
                .items
                .iter()
                .map(|c| format!("{} {} {}", c.command, c.user, c.at))
                .collect::<Vec<_>>();
            (rows, commands)
        };
        let batched = project("batched.db", vec![&events[..]]);
        let one_by_one = project("single.db", events.chunks(1).collect());
        assert_eq!(batched, one_by_one);
        assert!(
            batched.0[0].contains("user: \"alice\"") && batched.0[0].contains("start_seen: true"),
            "{:?}",
            batched.0[0]
        );
        assert_eq!(batched.1.len(), 2);
    }

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("a%b_c\\"), "%a\\%b\\_c\\\\%");
    }
}
