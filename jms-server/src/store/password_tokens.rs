//! What the store keeps for self-service set-password links
//! (`crate::selfservice`): one row per link mailed to a user, holding only
//! the SHA-256 of its token. A new link for a user revokes her older unused
//! ones; a link works once (`used_at`) and only until `expires_at`.
//! Migration 5 creates the table; the trait methods are on
//! [`super::ReadTx`] / [`super::WriteTx`], implemented by the SQLite backend.

use chrono::{DateTime, Utc};

/// Migration 5.
pub const MIGRATION: &str = r#"
CREATE TABLE password_tokens (
    id INTEGER PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_sha256 BLOB NOT NULL UNIQUE,
    purpose TEXT NOT NULL CHECK (purpose IN ('welcome', 'reset')),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    revoked_at TEXT
);
CREATE INDEX password_tokens_by_user ON password_tokens (user_id);
"#;

/// Why a link was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A new user without a password.
    Welcome,
    /// An admin's resend or a "forgot password" request.
    Reset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Welcome => "welcome",
            Purpose::Reset => "reset",
        }
    }

    pub fn parse(text: &str) -> Option<Purpose> {
        match text {
            "welcome" => Some(Purpose::Welcome),
            "reset" => Some(Purpose::Reset),
            _ => None,
        }
    }
}

/// A set-password link as stored (found by its token's SHA-256).
#[derive(Debug, Clone)]
pub struct PasswordTokenRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub purpose: Purpose,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}
