//! Sliding-window rate limits of "forgot password", kept in memory (a
//! restart forgets them): per source IP (answered 429, which says nothing
//! about any account) and per user (the link is silently not sent, so the
//! answer stays the same).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// "Forgot password" requests one source IP may make per window.
pub const PER_IP_MAX: usize = 10;
pub const PER_IP_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Links "forgot password" mails one user per window.
pub const PER_USER_MAX: usize = 3;
pub const PER_USER_WINDOW: Duration = Duration::from_secs(3600);
/// Keys kept before old ones are swept.
const SWEEP_AT: usize = 10_000;

/// At most `max` events per key in any `window`.
pub struct RateLimiter {
    max: usize,
    window: Duration,
    hits: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    pub fn new(max: usize, window: Duration) -> RateLimiter {
        RateLimiter {
            max,
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// Records an event for `key` if it is within the limit.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        let mut hits = self
            .hits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let window = self.window;
        let fresh = |at: &Instant| now.saturating_duration_since(*at) < window;
        if hits.len() >= SWEEP_AT {
            hits.retain(|_, times| times.back().is_some_and(fresh));
        }
        let times = hits.entry(key.to_string()).or_default();
        while times.front().is_some_and(|at| !fresh(at)) {
            times.pop_front();
        }
        if times.len() >= self.max {
            return false;
        }
        times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_max_events_per_window() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert!(limiter.allow_at("a", start));
        assert!(limiter.allow_at("a", start));
        assert!(!limiter.allow_at("a", start + Duration::from_secs(59)));
        assert!(limiter.allow_at("b", start), "keys are counted apart");
        assert!(limiter.allow_at("a", start + Duration::from_secs(61)));
    }
}
