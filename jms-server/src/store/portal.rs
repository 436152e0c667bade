//! What the store keeps so that any instance serves any request of the
//! engineers' portal and the self-service pages (`crate::engineers`,
//! `crate::selfservice`): the portal's login sessions (only the SHA-256 of
//! each session token) and the hits of the "forgot password" rate limits.
//! Migration 15 creates the tables; the trait methods are on
//! [`super::ReadTx`] / [`super::WriteTx`].

use chrono::{DateTime, Utc};

/// Migration 15.
pub const MIGRATION: &str = r#"
-- Engineers signed in to the portal: only the SHA-256 of the cookie's
-- token is kept.
CREATE TABLE portal_sessions (
    token_sha256 BLOB PRIMARY KEY,
    username TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    last_seen_at TEXT NOT NULL
);
CREATE INDEX portal_sessions_by_user ON portal_sessions (username, created_at);
CREATE INDEX portal_sessions_by_use ON portal_sessions (last_seen_at);

-- One row per event a sliding-window rate limit let through (`limiter`:
-- which limit, `subject`: whom it counts), kept for the window.
CREATE TABLE rate_limit_hits (
    id INTEGER PRIMARY KEY,
    limiter TEXT NOT NULL,
    subject TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX rate_limit_hits_by_subject ON rate_limit_hits (limiter, subject, at);
CREATE INDEX rate_limit_hits_by_time ON rate_limit_hits (limiter, at);
"#;

/// A portal login session as stored (found by its token's SHA-256).
#[derive(Debug, Clone)]
pub struct PortalSessionRow {
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

/// The bounds a new portal session is inserted under.
#[derive(Debug, Clone, Copy)]
pub struct PortalSessionLimits {
    /// Sessions used before this are dead (idle) and deleted.
    pub idle_since: DateTime<Utc>,
    /// One engineer's sessions at most (then her oldest go).
    pub per_user: u64,
    /// Sessions at most, everyone's (then the least recently used go).
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Storage};

    #[test]
    fn a_new_session_makes_room_under_both_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("jms.db")).unwrap();
        let limits = PortalSessionLimits {
            idle_since: Utc::now() - chrono::Duration::minutes(30),
            per_user: 2,
            total: 3,
        };
        let later = Utc::now() + chrono::Duration::hours(1);
        let add = |token: u8, name: &str| {
            let mut tx = store.write().unwrap();
            tx.insert_portal_session(&[token], name, later, limits)
                .unwrap();
            tx.commit().unwrap();
        };
        let held = |token: u8| store.read().unwrap().portal_session(&[token]).unwrap();
        add(1, "eve");
        add(2, "eve");
        add(3, "eve");
        assert!(held(1).is_none(), "her oldest made room");
        assert_eq!(held(3).unwrap().username, "eve");
        add(4, "bob");
        add(5, "bob");
        assert!(held(2).is_none(), "the least recently used made room");
        assert!(held(3).is_some() && held(4).is_some() && held(5).is_some());
        let tx = store.read().unwrap();
        assert_eq!(
            tx.live_portal_sessions("bob", Utc::now(), limits.idle_since)
                .unwrap(),
            2
        );
        drop(tx);
        let mut tx = store.write().unwrap();
        assert_eq!(
            tx.delete_portal_session(&[4]).unwrap().as_deref(),
            Some("bob")
        );
        assert_eq!(tx.delete_portal_session(&[4]).unwrap(), None);
        tx.commit().unwrap();
    }
}
