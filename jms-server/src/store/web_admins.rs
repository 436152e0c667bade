//! What the store keeps for the audit web's logins (`crate::web`): the web
//! admins (a Django pbkdf2 password hash and a TOTP secret, both sealed
//! like every other secret) and their login sessions (only the SHA-256 of
//! each session token). Migration 6 creates the tables; the trait methods
//! are on [`super::ReadTx`] / [`super::WriteTx`], implemented by the SQLite
//! backend.

use chrono::{DateTime, Utc};

use super::Sealed;

/// Migration 6.
pub const MIGRATION: &str = r#"
-- Who may log in to the audit web (password + TOTP). Both secrets are
-- sealed (crate::crypto), bound to `web_admins.<column>:<username>`.
CREATE TABLE web_admins (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash BLOB NOT NULL,
    totp_secret BLOB NOT NULL,
    -- The last TOTP step a login used: a code is never accepted twice.
    totp_last_step INTEGER,
    created_at TEXT NOT NULL,
    last_login_at TEXT
);

-- Logged-in browsers: only the SHA-256 of the cookie's token is kept.
CREATE TABLE web_sessions (
    token_sha256 BLOB PRIMARY KEY,
    admin_id INTEGER NOT NULL REFERENCES web_admins (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    remote_addr TEXT
);
CREATE INDEX web_sessions_by_expiry ON web_sessions (expires_at);
"#;

/// A web admin as stored.
#[derive(Debug, Clone)]
pub struct WebAdminRow {
    pub id: i64,
    pub username: String,
    /// Sealed `pbkdf2_sha256$…` hash.
    pub password_hash: Sealed,
    /// Sealed base32 TOTP secret.
    pub totp_secret: Sealed,
    pub totp_last_step: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
    /// What she may do (migration 9; `admin` before it).
    pub role: super::Scope,
}

/// A web login session as stored (found by its token's SHA-256).
#[derive(Debug, Clone)]
pub struct WebSessionRow {
    pub admin_id: i64,
    pub username: String,
    pub role: super::Scope,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}
