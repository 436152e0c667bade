//! One-time web tickets on the bastion ([`jms_sync::ticket`]): accepted as
//! a password (no TOTP: the web login did it), each nonce once, and bound
//! to the sshd connection that presented it, so that every session of that
//! connection reaches the ticket's target only and is audited from the
//! browser's address.
//!
//! The binding follows the processes sshd runs a login in, as the kernel
//! tells them (SO_PEERCRED and /proc, never what a client says): PAM's
//! authentication and account stages run in sshd's per-connection monitor
//! (password method) or in a child it forks (keyboard-interactive, OpenSSH
//! 9.2 as probed); the session stage (pam_jms's open_session) always runs
//! in the monitor, which claims the ticket there; the engineer's sessions
//! (jms-agent) are the monitor's descendants. A process is named by its
//! pid and start time, so a reused pid is never taken for the old one.
//!
//! Memory is bounded: used nonces are forgotten once their ticket expired
//! (a replay is refused as expired then), at most [`MAX_TICKETS`] are
//! remembered (more tickets in flight are refused), unclaimed bindings go
//! with their ticket's validity, claimed ones with their sshd process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jms_sync::ticket::{Ticket, TicketError, CLOCK_SKEW_SECS};

/// The most tickets remembered at once (used nonces within validity).
pub const MAX_TICKETS: usize = 10_000;
/// How many ancestors of a session's process are looked at.
const MAX_DEPTH: usize = 32;

/// A process: pid and start time (clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Proc {
    pub pid: u32,
    pub start: u64,
}

impl Proc {
    /// The process `pid` now, and its parent's pid.
    pub fn of(pid: u32) -> Option<(Proc, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (in parentheses) may hold spaces and ')'.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state (3), ppid (4), … starttime (22).
        let ppid = fields.get(1)?.parse().ok()?;
        let start = fields.get(19)?.parse().ok()?;
        Some((Proc { pid, start }, ppid))
    }

    fn alive(&self) -> bool {
        Proc::of(self.pid).is_some_and(|(now, _)| now == *self)
    }
}

struct Pending {
    /// The process that authenticated, and its parent (the monitor, when
    /// PAM ran in a forked child).
    auth: Proc,
    parent: Option<Proc>,
    ticket: Arc<Ticket>,
}

#[derive(Default)]
struct Inner {
    /// Nonce → expiry of tickets accepted.
    used: HashMap<String, i64>,
    pending: Vec<Pending>,
    /// The sshd monitor of a ticket login → its ticket.
    bound: HashMap<Proc, Arc<Ticket>>,
}

/// The tickets this daemon accepted and the logins they bound.
#[derive(Default)]
pub struct Tickets {
    inner: Mutex<Inner>,
}

impl Tickets {
    /// Accepts `text` for `user` if it verifies with the pinned server key
    /// for this bastion and its nonce was never used; remembers which
    /// process (`caller`, the PAM side of sshd) presented it.
    pub fn accept(
        &self,
        text: &str,
        pinned: &[u8],
        bastion_id: i64,
        user: &str,
        caller: Option<u32>,
        now: i64,
    ) -> Result<Arc<Ticket>, TicketError> {
        let ticket = Ticket::verify(text, pinned, user, bastion_id, now)?;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.prune(now);
        if inner.used.contains_key(&ticket.nonce) {
            return Err(TicketError::Replayed);
        }
        if inner.used.len() >= MAX_TICKETS {
            return Err(TicketError::TooMany);
        }
        let ticket = Arc::new(ticket);
        inner
            .used
            .insert(ticket.nonce.clone(), ticket.expires_at + CLOCK_SKEW_SECS);
        if let Some((auth, ppid)) = caller.and_then(Proc::of) {
            let parent = Proc::of(ppid).map(|(p, _)| p);
            inner.pending.push(Pending {
                auth,
                parent,
                ticket: Arc::clone(&ticket),
            });
        }
        Ok(ticket)
    }

    /// The ticket `user`'s login authenticated with in `caller` (the
    /// account stage's process), not bound yet: for the login ACL.
    pub fn pending(&self, user: &str, caller: u32, now: i64) -> Option<Arc<Ticket>> {
        let (me, _) = Proc::of(caller)?;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.prune(now);
        if let Some(ticket) = inner.bound.get(&me) {
            return (ticket.user == user).then(|| Arc::clone(ticket));
        }
        inner
            .pending
            .iter()
            .find(|p| p.ticket.user == user && (p.auth == me || p.parent == Some(me)))
            .map(|p| Arc::clone(&p.ticket))
    }

    /// The session stage of `user`'s login, run by `caller` (sshd's
    /// monitor): the ticket it authenticated with, if it did; the login's
    /// sessions are bound to it from now on.
    pub fn claim(&self, user: &str, caller: u32, now: i64) -> Option<Arc<Ticket>> {
        let (me, _) = Proc::of(caller)?;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.prune(now);
        if let Some(ticket) = inner.bound.get(&me) {
            return (ticket.user == user).then(|| Arc::clone(ticket));
        }
        let at = inner
            .pending
            .iter()
            .position(|p| p.ticket.user == user && (p.auth == me || p.parent == Some(me)))?;
        let ticket = inner.pending.swap_remove(at).ticket;
        inner.bound.insert(me, Arc::clone(&ticket));
        Some(ticket)
    }

    /// The ticket a session's process (`pid`, jms-agent) runs under: the
    /// one bound to the nearest ancestor that is a ticket login's monitor.
    pub fn of_session(&self, pid: u32) -> Option<Arc<Ticket>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.bound.is_empty() {
            return None;
        }
        let mut next = pid;
        for _ in 0..MAX_DEPTH {
            let (me, ppid) = Proc::of(next)?;
            if let Some(ticket) = inner.bound.get(&me) {
                return Some(Arc::clone(ticket));
            }
            if ppid <= 1 {
                return None;
            }
            next = ppid;
        }
        None
    }

    /// The login run by `caller` ended (PAM close_session).
    pub fn release(&self, caller: u32) {
        if let Some((me, _)) = Proc::of(caller) {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.bound.remove(&me);
        }
    }
}

impl Inner {
    fn prune(&mut self, now: i64) {
        self.used.retain(|_, until| *until > now);
        self.pending
            .retain(|p| p.ticket.expires_at + CLOCK_SKEW_SECS > now);
        self.bound.retain(|process, _| process.alive());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    #[test]
    fn a_ticket_is_accepted_once_and_binds_the_login_that_claims_it() {
        let key = key();
        let pinned = key.public_key().as_ref().to_vec();
        let now = chrono::Utc::now().timestamp();
        let ticket = Ticket::new(
            "alice",
            7,
            "web01",
            "root",
            "198.51.100.7".parse().unwrap(),
            now,
        );
        let text = ticket.sign(&key);
        let tickets = Tickets::default();
        let me = std::process::id();
        let accepted = tickets
            .accept(&text, &pinned, 7, "alice", Some(me), now)
            .unwrap();
        assert_eq!(*accepted, ticket);
        assert_eq!(
            tickets
                .accept(&text, &pinned, 7, "alice", Some(me), now)
                .unwrap_err(),
            TicketError::Replayed
        );
        // Another user's stages in this process see nothing.
        assert!(tickets.pending("bob", me, now).is_none());
        assert!(tickets.claim("bob", me, now).is_none());
        assert_eq!(tickets.pending("alice", me, now).as_deref(), Some(&ticket));
        // Authenticated, not bound yet: no session is the ticket's.
        assert!(tickets.of_session(me).is_none());
        assert_eq!(tickets.claim("alice", me, now).as_deref(), Some(&ticket));
        // This process and its descendants are bound now.
        assert_eq!(tickets.of_session(me).as_deref(), Some(&ticket));
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        assert_eq!(tickets.of_session(child.id()).as_deref(), Some(&ticket));
        tickets.release(me);
        assert!(tickets.of_session(child.id()).is_none());
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn used_nonces_are_forgotten_after_expiry_and_bounded() {
        let key = key();
        let pinned = key.public_key().as_ref().to_vec();
        let now = 1_000_000;
        let tickets = Tickets::default();
        for _ in 0..3 {
            let t = Ticket::new("alice", 1, "a", "b", "10.0.0.1".parse().unwrap(), now);
            tickets
                .accept(&t.sign(&key), &pinned, 1, "alice", None, now)
                .unwrap();
        }
        assert_eq!(tickets.inner.lock().unwrap().used.len(), 3);
        let later = now + 200;
        let t = Ticket::new("alice", 1, "a", "b", "10.0.0.1".parse().unwrap(), later);
        tickets
            .accept(&t.sign(&key), &pinned, 1, "alice", None, later)
            .unwrap();
        assert_eq!(tickets.inner.lock().unwrap().used.len(), 1);
        // Full: the next ticket is refused, never an old nonce forgotten early.
        {
            let mut inner = tickets.inner.lock().unwrap();
            for i in 0..MAX_TICKETS {
                inner.used.insert(format!("n{i}"), later + 60);
            }
        }
        let t = Ticket::new("alice", 1, "a", "b", "10.0.0.1".parse().unwrap(), later);
        assert_eq!(
            tickets
                .accept(&t.sign(&key), &pinned, 1, "alice", None, later)
                .unwrap_err(),
            TicketError::TooMany
        );
    }
}
