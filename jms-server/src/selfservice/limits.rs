//! Sliding-window rate limits of "forgot password": per source IP
//! (answered 429, which says nothing about any account) and per user (the
//! link is silently not sent, so the answer stays the same). Counted in
//! the store (`rate_limit_hits`), so every instance on one database counts
//! the same requests, and a restart forgets nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::store::{Store, StoreError};

/// "Forgot password" requests one source IP may make per window.
pub const PER_IP_MAX: u64 = 10;
pub const PER_IP_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Links "forgot password" mails one user per window.
pub const PER_USER_MAX: u64 = 3;
pub const PER_USER_WINDOW: Duration = Duration::from_secs(3600);

/// At most `max` events per key in any `window`.
pub struct RateLimiter {
    store: Store,
    /// Which limit this is, in the store.
    name: &'static str,
    max: u64,
    window: Duration,
}

impl RateLimiter {
    pub fn new(store: Store, name: &'static str, max: u64, window: Duration) -> RateLimiter {
        RateLimiter {
            store,
            name,
            max,
            window,
        }
    }

    /// Records an event for `key` if it is within the limit (blocking: a
    /// write transaction).
    pub fn allow(&self, key: &str) -> Result<bool, StoreError> {
        self.allow_at(key, Utc::now())
    }

    fn allow_at(&self, key: &str, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let window = chrono::Duration::from_std(self.window).unwrap_or(chrono::Duration::MAX);
        let mut tx = self.store.write()?;
        let allowed = tx.rate_limit_hit(self.name, key, self.max, now - window, now)?;
        tx.commit()?;
        Ok(allowed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_max_events_per_window_whoever_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store: Store = std::sync::Arc::new(
            crate::store::SqliteStore::open(&dir.path().join("jms.db")).unwrap(),
        );
        let limiter = RateLimiter::new(store.clone(), "test", 2, Duration::from_secs(60));
        // Another instance: the same limit on the same store.
        let other = RateLimiter::new(store.clone(), "test", 2, Duration::from_secs(60));
        let start = Utc::now();
        let later = |secs| start + chrono::Duration::seconds(secs);
        assert!(limiter.allow_at("a", start).unwrap());
        assert!(other.allow_at("a", start).unwrap());
        assert!(!limiter.allow_at("a", later(59)).unwrap());
        assert!(
            limiter.allow_at("b", start).unwrap(),
            "keys are counted apart"
        );
        let elsewhere = RateLimiter::new(store, "another", 2, Duration::from_secs(60));
        assert!(elsewhere.allow_at("a", start).unwrap(), "limits too");
        assert!(limiter.allow_at("a", later(61)).unwrap());
    }
}
