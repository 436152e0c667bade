//! Live sessions on this bastion, as the monitor sees them: the registry
//! of running target sessions (each a [`LiveSession`] handle whose orders
//! go to the worker that runs it), revocation and share codes.
//!
//! - [`Registry`]: session id → [`LiveSession`]; share codes
//!   (`session::share` asks for them, `monitor::workers` answers).
//! - Revocation ([`Registry::revoke`]): when a new policy is swapped in,
//!   and every [`RECHECK_EVERY`] (grants and users expire with time),
//!   every live session whose targets it no longer allows is ended
//!   ("access revoked").
//! - Share codes: single use, and [`Registry::join_attempt`] limits wrong
//!   codes per user.
//!
//! The central server's orders for them (kill, watch) are
//! `monitor::control`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jms_core::Policy;
use tracing::warn;

use crate::daemon::live_session::LiveSession;
use crate::wire::WireLimits;

/// How often live sessions are checked against the policy in force even
/// when it did not change (a grant or user that expired with time).
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// Wrong share codes a user may try within [`JOIN_WINDOW`].
pub const JOIN_ATTEMPTS: usize = 5;
pub const JOIN_WINDOW: Duration = Duration::from_secs(10 * 60);

/// A share code (see `session::share`): valid once, until `expires`.
#[derive(Debug, Clone)]
pub struct ShareCode {
    pub session: String,
    pub owner: String,
    pub write: bool,
    pub expires: Instant,
}

/// Every live session on this bastion, and the share codes.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<String, Arc<LiveSession>>>,
    codes: Mutex<HashMap<String, ShareCode>>,
    /// Wrong share codes by jms user: when, within [`JOIN_WINDOW`].
    join_failures: Mutex<HashMap<String, Vec<Instant>>>,
}

/// Removes a session from the registry when dropped.
pub struct Registered<'r> {
    registry: &'r Registry,
    pub session: Arc<LiveSession>,
    reason: Option<String>,
}

impl Registered<'_> {
    /// Why the session ended, for watchers.
    pub fn set_reason(&mut self, reason: Option<String>) {
        self.reason = reason;
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.session.close(self.reason.take());
        self.registry
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.session.id);
        self.registry
            .codes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, c| c.session != self.session.id);
    }
}

impl Registry {
    /// Tells every worker the limits in force (after a policy or settings
    /// swap).
    pub fn push_settings(&self, limits: WireLimits) {
        for live in self.all() {
            live.send_settings(limits);
        }
    }

    pub fn register(&self, session: LiveSession) -> Registered<'_> {
        let session = Arc::new(session);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(session.id.clone(), Arc::clone(&session));
        Registered {
            registry: self,
            session,
            reason: None,
        }
    }

    /// Every live session.
    pub fn all(&self) -> Vec<Arc<LiveSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Ends every live session `policy` no longer allows (a grant
    /// revoked, the user disabled…), with "access revoked" and why.
    /// Returns how many were ended.
    pub fn revoke(&self, policy: &Policy) -> usize {
        let sessions: Vec<_> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        let mut ended = 0;
        for session in sessions {
            if let Some(reason) = session.revoked_by(policy) {
                warn!(event = "session_revoked", session = %session.id, user = %session.user, reason = %reason);
                session.end(format!("access revoked: {}", clean(&reason)));
                ended += 1;
            }
        }
        ended
    }

    /// `user`'s live sessions, newest first.
    pub fn of_user(&self, user: &str) -> Vec<Arc<LiveSession>> {
        let mut found: Vec<_> = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|s| s.user == user)
            .cloned()
            .collect();
        found.sort_by_key(|s| std::cmp::Reverse(s.started));
        found
    }

    /// Ends session `id` on an administrator's order; false when it is
    /// not running here.
    pub fn kill(&self, id: &str, reason: &str) -> bool {
        let Some(session) = self.get(id) else {
            return false;
        };
        let reason = reason.trim();
        let line = if reason.is_empty() {
            "session terminated by an administrator".to_string()
        } else {
            format!("session terminated by an administrator: {}", clean(reason))
        };
        session.end(line);
        true
    }

    /// Keeps a new share code.
    pub fn add_code(&self, code: &str, share: ShareCode) {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        codes.retain(|_, c| c.expires > now);
        codes.insert(code.to_string(), share);
    }

    /// The share code `code`, while valid (not used yet).
    pub fn code(&self, code: &str) -> Option<ShareCode> {
        let codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes
            .get(code)
            .filter(|c| c.expires > Instant::now())
            .cloned()
    }

    /// Takes the share code `code` (valid once), while valid.
    pub fn take_code(&self, code: &str) -> Option<ShareCode> {
        let mut codes = self.codes.lock().unwrap_or_else(|e| e.into_inner());
        codes.remove(code).filter(|c| c.expires > Instant::now())
    }

    /// Counts one share-code attempt by `user` before the code is looked
    /// at (so parallel tries count too): `Err` (the line for her) when she
    /// already has [`JOIN_ATTEMPTS`] within [`JOIN_WINDOW`]. A right code
    /// takes its attempt back ([`Registry::join_ok`]).
    pub fn join_attempt(&self, user: &str) -> Result<(), String> {
        let mut failures = self.join_failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        failures.retain(|_, times| {
            times.retain(|t| now.duration_since(*t) < JOIN_WINDOW);
            !times.is_empty()
        });
        let times = failures.entry(user.to_string()).or_default();
        if times.len() >= JOIN_ATTEMPTS {
            let wait = JOIN_WINDOW.saturating_sub(now.duration_since(times[0]));
            return Err(format!(
                "too many wrong share codes: try again in {}",
                humantime::format_duration(Duration::from_secs(wait.as_secs().max(1)))
            ));
        }
        times.push(now);
        Ok(())
    }

    /// `user`'s last attempt was a right code: it does not count.
    pub fn join_ok(&self, user: &str) {
        let mut failures = self.join_failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(times) = failures.get_mut(user) {
            times.pop();
            if times.is_empty() {
                failures.remove(user);
            }
        }
    }
}

/// A line from outside (a reason) made safe for a terminal.
fn clean(text: &str) -> String {
    text.replace(|c: char| c.is_control(), " ")
}

// ---- the central server's orders ----------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::live_session::Woken;
    use jms_core::model::Protocol;
    use nix::poll::{poll, PollFd, PollFlags};
    use std::os::fd::{AsRawFd, BorrowedFd};

    #[test]
    fn wrong_share_codes_are_limited_per_user() {
        let registry = Registry::default();
        for _ in 0..10 {
            registry.join_attempt("bob").unwrap();
            registry.join_ok("bob");
        }
        for _ in 0..JOIN_ATTEMPTS {
            assert!(registry.join_attempt("mallory").is_ok());
        }
        let refusal = registry.join_attempt("mallory").unwrap_err();
        assert!(refusal.contains("too many wrong share codes"), "{refusal}");
        assert!(
            registry.join_attempt("bob").is_ok(),
            "right codes do not count, other users are not affected"
        );
    }

    #[test]
    fn share_codes_work_once() {
        let registry = Registry::default();
        let share = ShareCode {
            session: "s1".into(),
            owner: "alice".into(),
            write: false,
            expires: Instant::now() + Duration::from_secs(60),
        };
        registry.add_code("C", share);
        assert!(registry.take_code("C").is_some());
        assert!(registry.take_code("C").is_none(), "a used code is gone");
    }

    #[test]
    fn a_policy_without_the_grant_ends_the_sessions_it_covered() {
        let yaml = |protocols: &str| {
            format!(
                "users:\n  - {{username: alice}}\n\
                 assets:\n  - name: web01\n    address: 10.0.0.1\n\
                 \x20   protocols: [{{name: ssh, port: 22}}, {{name: sftp, port: 22}}]\n\
                 \x20   accounts: [{{name: root, username: root, secret_type: password, secret: x}}]\n\
                 grants:\n  - {{name: g, users: [alice], assets: [web01], accounts: ['@ALL'], protocols: [{protocols}], actions: [all]}}\n"
            )
        };
        let parse = |text: &str| {
            Policy::parse(
                text,
                jms_core::policy::Format::Yaml,
                "t.yaml",
                std::path::Path::new("."),
            )
            .expect("policy")
        };
        let registry = Registry::default();
        let shell =
            registry.register(LiveSession::new("s1", "alice", "web01", "root", (80, 24)).unwrap());
        let sftp = registry.register(
            LiveSession::new("s2", "alice", "", "", (80, 24))
                .unwrap()
                .of_kind("sftp", Protocol::Sftp),
        );
        sftp.session.add_target("web01", "root", Protocol::Sftp);
        assert_eq!(registry.revoke(&parse(&yaml("all"))), 0, "still granted");
        assert_eq!(shell.session.take(), Woken::default());
        // ssh revoked, sftp kept.
        assert_eq!(registry.revoke(&parse(&yaml("sftp"))), 1);
        let end = shell.session.take().end.expect("the shell is ended");
        assert!(end.starts_with("access revoked: root@web01"), "{end}");
        assert_eq!(sftp.session.take().end, None);
        // Nothing granted any more.
        let none = "users:\n  - {username: alice}\nassets: []\ngrants: []\n";
        assert_eq!(registry.revoke(&parse(none)), 2);
        assert!(sftp.session.take().end.is_some());
    }

    #[test]
    fn a_kill_wakes_the_relay_and_watchers_see_output_then_eof() {
        let registry = Registry::default();
        let live = LiveSession::new("s1", "alice", "web01", "deploy", (80, 24)).unwrap();
        let registered = registry.register(live);
        let session = Arc::clone(&registered.session);
        session.output(b"before\n");
        let tap = session.tap().expect("a running session can be watched");
        assert_eq!(tap.recent, b"before\n");
        session.output(b"after\n");
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(tap.pipe.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"after\n");
        assert!(registry.kill("s1", "maintenance\r\n"));
        assert!(!registry.kill("nope", ""));
        let mut fds = [PollFd::new(
            unsafe { BorrowedFd::borrow_raw(session.wake_fd()) },
            PollFlags::POLLIN,
        )];
        assert_eq!(
            poll(&mut fds, 0u16).unwrap(),
            1,
            "the wake pipe is readable"
        );
        let woken = session.take();
        assert_eq!(
            woken.end.as_deref(),
            Some("session terminated by an administrator: maintenance")
        );
        drop(registered);
        assert!(registry.get("s1").is_none());
        assert_eq!(nix::unistd::read(tap.pipe.as_raw_fd(), &mut buf), Ok(0));
    }
}
