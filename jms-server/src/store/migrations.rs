//! Schema migrations: numbered, append-only, one list for both backends.
//! A released migration is never edited; a change to the schema is a new
//! entry at the end of [`MIGRATIONS`]. Each runs in its own transaction
//! together with its row in `schema_migrations`, so a crash leaves the
//! database at a known version. PostgreSQL runs the same SQL translated
//! ([`super::sql::pg_ddl`]) or, where SQLite's spelling has no translation
//! (a table rebuilt to change a CHECK, `strftime`), its own text; several
//! instances starting at once apply each migration once (each migration's
//! transaction holds an advisory lock and reads the version again).

use std::borrow::Cow;

use chrono::Utc;

use super::sql::{args, pg_ddl, Conn, Dialect};
use super::{Result, StoreError};

/// One migration: its number (1, 2, … without gaps), a name and its SQL.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    /// In SQLite's spelling.
    pub sql: &'static str,
    /// What PostgreSQL runs.
    pub pg: Pg,
}

/// A migration's PostgreSQL text.
pub enum Pg {
    /// The SQLite text, translated.
    Translated,
    /// The SQLite text translated, then this.
    TranslatedThen(&'static str),
    /// Its own.
    Own(&'static str),
}

impl Migration {
    /// The SQL `dialect` runs.
    pub fn sql_for(&self, dialect: Dialect) -> Cow<'static, str> {
        match (dialect, &self.pg) {
            (Dialect::Sqlite, _) => Cow::Borrowed(self.sql),
            (Dialect::Postgres, Pg::Translated) => Cow::Owned(pg_ddl(self.sql)),
            (Dialect::Postgres, Pg::TranslatedThen(then)) => {
                Cow::Owned(format!("{}\n{then}", pg_ddl(self.sql)))
            }
            (Dialect::Postgres, Pg::Own(sql)) => Cow::Borrowed(sql),
        }
    }
}

/// The advisory lock key PostgreSQL migrations hold (`jms` in ASCII).
pub const PG_MIGRATION_LOCK: i64 = 0x006a_6d73_5f6d_6967;

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        sql: INITIAL,
        pg: Pg::Translated,
    },
    Migration {
        version: 2,
        name: "sync: enrollment tokens, request nonces, events",
        sql: SYNC,
        pg: Pg::Translated,
    },
    Migration {
        version: 3,
        name: "audit projection",
        sql: super::audit::MIGRATION,
        pg: Pg::Translated,
    },
    Migration {
        version: 4,
        name: "the bastions' primary group gets a server gid",
        sql: PRIMARY_GROUP_GID,
        pg: Pg::Own(PG_PRIMARY_GROUP_GID),
    },
    Migration {
        version: 5,
        name: "self-service: set-password links",
        sql: super::password_tokens::MIGRATION,
        pg: Pg::Translated,
    },
    Migration {
        version: 6,
        name: "audit web: web admins and their login sessions",
        sql: super::web_admins::MIGRATION,
        pg: Pg::Translated,
    },
    Migration {
        version: 7,
        name: "enrollment tokens may name the bastion they replace",
        sql: ENROLL_REPLACES,
        pg: Pg::Translated,
    },
    Migration {
        version: 8,
        name: "commands name the joiner who typed them",
        sql: COMMAND_TYPED_BY,
        pg: Pg::Translated,
    },
    Migration {
        version: 9,
        name: "fleet: bastion reports and revocation; admin roles",
        sql: super::fleet::MIGRATION,
        pg: Pg::Own(super::fleet::PG_MIGRATION),
    },
    Migration {
        version: 10,
        name: "account jobs: push fields, job history, checks, secret history",
        sql: super::jobs::MIGRATION,
        pg: Pg::TranslatedThen(super::jobs::PG_MIGRATION_THEN),
    },
    Migration {
        version: 11,
        name: "fleet: each bastion's sshd address and pinned host keys",
        sql: super::fleet::SSHD_MIGRATION,
        pg: Pg::Translated,
    },
    Migration {
        version: 12,
        name: "account jobs: attempts and their bastions, the new secret sealed with the job; asset facts",
        sql: super::jobs::MIGRATION_RETRY,
        pg: Pg::Translated,
    },
    Migration {
        version: 13,
        name: "scheduled account plans",
        sql: super::plans::MIGRATION,
        pg: Pg::Translated,
    },
    Migration {
        version: 14,
        name: "zones of assets and bastions; job orders handed out from the database",
        sql: super::jobs::MIGRATION_ZONES,
        pg: Pg::Translated,
    },
    Migration {
        version: 15,
        name: "portal sessions and rate limits shared by the instances",
        sql: super::portal::MIGRATION,
        pg: Pg::Translated,
    },
    Migration {
        version: 16,
        name: "sync nonces pruned per bastion",
        sql: NONCES_BY_BASTION,
        pg: Pg::Translated,
    },
];

/// Migration 16: a request prunes only its own bastion's old nonces
/// (`WHERE bastion_id = ? AND seen_at < ?`), not the whole table's: this
/// index serves that, and the one by time alone has no user left.
const NONCES_BY_BASTION: &str = "
DROP INDEX sync_nonces_by_time;
CREATE INDEX sync_nonces_by_bastion_time ON sync_nonces (bastion_id, seen_at);
";

/// Migration 7: an enrollment token created with `--replace NAME` may
/// give the already-enrolled bastion NAME a new key; no other token can.
const ENROLL_REPLACES: &str = "ALTER TABLE enroll_tokens ADD COLUMN replaces TEXT;";

/// Migration 8: a command typed (in part) by a write joiner of a shared
/// session names who typed it (`alice,bob`); NULL when the owner alone did.
const COMMAND_TYPED_BY: &str = "ALTER TABLE commands ADD COLUMN typed_by TEXT;";

/// Applies the migrations the database lacks; returns how many ran.
/// `conn` is outside any transaction.
pub fn apply(conn: &dyn Conn) -> Result<usize> {
    let dialect = conn.dialect();
    let begin = || -> Result<()> {
        match dialect {
            Dialect::Sqlite => conn.batch("BEGIN IMMEDIATE"),
            Dialect::Postgres => {
                conn.batch("BEGIN")?;
                conn.exec("SELECT pg_advisory_xact_lock(?1)", args![PG_MIGRATION_LOCK])?;
                Ok(())
            }
        }
    };
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    let mut ran = 0;
    loop {
        begin()?;
        let step = (|| -> Result<bool> {
            conn.batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version BIGINT PRIMARY KEY,
                     name TEXT NOT NULL,
                     applied_at TEXT NOT NULL
                 )",
            )?;
            let current: u32 = conn.value(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                args![],
            )?;
            if current > known {
                return Err(StoreError::TooNew {
                    found: current,
                    known,
                });
            }
            let Some(migration) = MIGRATIONS.iter().find(|m| m.version > current) else {
                return Ok(false);
            };
            conn.batch(&migration.sql_for(dialect))?;
            conn.exec(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                args![migration.version, migration.name, Utc::now().to_rfc3339()],
            )?;
            Ok(true)
        })();
        match step {
            Ok(true) => {
                conn.batch("COMMIT")?;
                ran += 1;
            }
            Ok(false) => {
                conn.batch("COMMIT")?;
                return Ok(ran);
            }
            Err(e) => {
                let _ = conn.batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

/// Migration 1. JSON columns hold lists and nested values in the same shape
/// as the policy file; secrets are sealed blobs (`crate::crypto`).
const INITIAL: &str = r#"
CREATE TABLE policy_state (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT INTO policy_state (id, version) VALUES (1, 0);

-- Every uid/gid ever assigned; rows are never deleted, so an id is never
-- given to another name (a returning name gets its old id back).
CREATE TABLE unix_ids (
    kind TEXT NOT NULL CHECK (kind IN ('uid', 'gid')),
    id INTEGER NOT NULL,
    name TEXT NOT NULL,
    assigned_at TEXT NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, name)
);

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    uid INTEGER NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    email TEXT,
    is_active INTEGER NOT NULL DEFAULT 1,
    date_expired TEXT,
    public_keys TEXT NOT NULL DEFAULT '[]',
    login_acl TEXT NOT NULL DEFAULT '{}',
    password_hash BLOB,
    totp_secret BLOB,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE user_groups (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    gid INTEGER NOT NULL UNIQUE,
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE user_group_members (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    group_id INTEGER NOT NULL REFERENCES user_groups (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    PRIMARY KEY (user_id, group_id)
);
CREATE INDEX user_group_members_by_group ON user_group_members (group_id);

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE assets (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    address TEXT NOT NULL,
    protocols TEXT NOT NULL DEFAULT '[]',
    nodes TEXT NOT NULL DEFAULT '[]',
    is_active INTEGER NOT NULL DEFAULT 1,
    host_keys TEXT NOT NULL DEFAULT '[]',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY,
    asset_id INTEGER NOT NULL REFERENCES assets (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    username TEXT NOT NULL,
    secret_type TEXT NOT NULL CHECK (secret_type IN ('password', 'ssh_key')),
    secret BLOB,
    privileged INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (asset_id, name)
);

CREATE TABLE grants (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    users TEXT NOT NULL DEFAULT '[]',
    user_groups TEXT NOT NULL DEFAULT '[]',
    assets TEXT NOT NULL DEFAULT '[]',
    nodes TEXT NOT NULL DEFAULT '[]',
    accounts TEXT NOT NULL DEFAULT '[]',
    protocols TEXT NOT NULL DEFAULT '[]',
    actions TEXT NOT NULL DEFAULT '[]',
    date_start TEXT,
    date_expired TEXT,
    is_active INTEGER NOT NULL DEFAULT 1,
    comment TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE command_filters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    priority INTEGER NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('deny', 'allow')),
    rules TEXT NOT NULL DEFAULT '[]',
    users TEXT NOT NULL DEFAULT '[]',
    user_groups TEXT NOT NULL DEFAULT '[]',
    assets TEXT NOT NULL DEFAULT '[]',
    nodes TEXT NOT NULL DEFAULT '[]',
    accounts TEXT NOT NULL DEFAULT '[]',
    is_active INTEGER NOT NULL DEFAULT 1,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

-- Enrolled bastions (the sync half fills this in).
CREATE TABLE bastions (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    public_key TEXT,
    enrolled_at TEXT,
    last_seen_at TEXT,
    policy_version INTEGER,
    created_at TEXT NOT NULL
);

-- Audit trail uploaded by bastions (the sync half fills these in); each
-- upload carries an idempotency key so that retries store it once.
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    bastion_id INTEGER REFERENCES bastions (id),
    username TEXT NOT NULL,
    asset TEXT NOT NULL,
    account TEXT NOT NULL,
    protocol TEXT NOT NULL,
    remote_addr TEXT,
    started_at TEXT NOT NULL,
    ended_at TEXT,
    end_reason TEXT,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX sessions_by_user ON sessions (username, started_at);

CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    at TEXT NOT NULL,
    input TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('allow', 'deny')),
    filter TEXT,
    idempotency_key TEXT UNIQUE
);
CREATE INDEX commands_by_session ON commands (session_id, at);

CREATE TABLE transfers (
    id INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    at TEXT NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN ('upload', 'download', 'delete')),
    path TEXT NOT NULL,
    size INTEGER,
    ok INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE
);

CREATE TABLE recordings (
    session_id TEXT PRIMARY KEY REFERENCES sessions (id),
    format TEXT NOT NULL DEFAULT 'asciicast-v2',
    size INTEGER,
    sha256 TEXT,
    stored_path TEXT,
    complete INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    token_sha256 BLOB NOT NULL UNIQUE,
    scope TEXT NOT NULL CHECK (scope IN ('read', 'admin')),
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

CREATE TABLE oplog (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    fields TEXT NOT NULL DEFAULT '[]',
    version INTEGER NOT NULL
);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT,
    sealed BLOB
);
"#;

/// Migration 2: the sync half. `bastions.public_key` (from migration 1)
/// holds the hex of the bastion's Ed25519 public key.
const SYNC: &str = r#"
-- One-time enrollment tokens (only their SHA-256), with an expiry.
CREATE TABLE enroll_tokens (
    id INTEGER PRIMARY KEY,
    token_sha256 BLOB NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    bastion_id INTEGER REFERENCES bastions (id)
);

-- Nonces of signed sync requests, kept past the timestamp window so a
-- replayed request is refused even across a server restart.
CREATE TABLE sync_nonces (
    bastion_id INTEGER NOT NULL,
    nonce TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (bastion_id, nonce)
);
CREATE INDEX sync_nonces_by_time ON sync_nonces (seen_at);

-- Every audit event a bastion uploaded, stored once per idempotency key.
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    bastion_id INTEGER NOT NULL REFERENCES bastions (id),
    idempotency_key TEXT NOT NULL,
    kind TEXT NOT NULL,
    at TEXT NOT NULL,
    body TEXT NOT NULL,
    received_at TEXT NOT NULL,
    UNIQUE (bastion_id, idempotency_key)
);
CREATE INDEX events_by_time ON events (at);
"#;

/// Migration 4: every bastion publishes its jms users' primary group
/// (`jms-users`, [`jms_core::nss_cache::DEFAULT_PRIMARY_GROUP`]). Its gid is
/// assigned here, by the server, like any user group's, and travels in every
/// bundle: otherwise each bastion would pick one locally from the same range
/// and could collide with a gid the server later gives a user group. (Policy
/// deltas need no table: the server keeps recent history in memory.)
const PRIMARY_GROUP_GID: &str = r#"
INSERT INTO unix_ids (kind, id, name, assigned_at)
SELECT 'gid', next_gid, 'jms-users', strftime('%Y-%m-%dT%H:%M:%SZ', 'now')
FROM (SELECT COALESCE(MAX(id) + 1, 200000) AS next_gid FROM unix_ids WHERE kind = 'gid')
WHERE NOT EXISTS (SELECT 1 FROM unix_ids WHERE kind = 'gid' AND name = 'jms-users');
"#;

/// Migration 4 in PostgreSQL's spelling.
const PG_PRIMARY_GROUP_GID: &str = r#"
INSERT INTO unix_ids (kind, id, name, assigned_at)
SELECT 'gid', next_gid, 'jms-users', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
FROM (SELECT COALESCE(MAX(id) + 1, 200000) AS next_gid FROM unix_ids WHERE kind = 'gid') AS next
WHERE NOT EXISTS (SELECT 1 FROM unix_ids WHERE kind = 'gid' AND name = 'jms-users');
"#;
