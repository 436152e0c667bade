//! The socket server: a unix socket (mode 0666; every request is checked
//! against the caller's uid from SO_PEERCRED), one thread per connection,
//! bounded frames and timeouts. A malformed or oversized message gets an
//! error response and never takes the daemon down.
//!
//! Capacity ([`Slots`]): every connection is charged to its caller's uid
//! the moment it is accepted (SO_PEERCRED, before a byte is read), so that
//! a connection that never sends a request counts too. Two lanes:
//! - the login lane: root (pam_jms inside sshd, su, sudo…) and the
//!   AuthorizedKeysCommandUser, each with its own `max_login_clients`
//!   connections; nobody else can take them. Only these callers may send
//!   the PAM-path requests, so logins never wait behind sessions;
//! - every other uid (engineers' jms-agent: menus, sessions) at most
//!   `max_clients_per_uid` connections each, `max_clients` in all.
//!
//! Past a limit the connection gets one [`Response::Error`] saying which
//! limit, and is closed. Out of descriptors (EMFILE/ENFILE) the accept
//! loop sleeps with a growing pause instead of spinning; the pending
//! connections wait in the listen backlog.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use jms_proto::{read_frame_with_fds, write_frame, FrameError, Request, Response};
use nix::errno::Errno;
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tracing::{debug, error, warn};

use crate::daemon::monitor::handlers::Daemon;

/// How long a client may take to send a request or read a response.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer later than this after the connection was accepted is logged.
const SLOW_ANSWER: Duration = Duration::from_secs(1);
/// The first pause of the accept loop when out of descriptors; it doubles
/// up to [`ACCEPT_PAUSE_MAX`] while accept keeps failing.
const ACCEPT_PAUSE_MIN: Duration = Duration::from_millis(50);
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Binds the socket, replacing a stale one, with its directory created.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// The connection limits (from agentd.toml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections of each login-lane caller (root, the keys user).
    pub login_per_uid: usize,
    /// Connections of any other uid.
    pub per_uid: usize,
    /// Connections of all other uids together.
    pub users_total: usize,
}

/// Who holds how many connections; see the module doc.
pub struct Slots {
    limits: Limits,
    keys_uid: Option<u32>,
    held: Mutex<Held>,
}

#[derive(Default)]
struct Held {
    per_uid: HashMap<u32, usize>,
    users_total: usize,
}

/// One connection's place; given back when dropped (a panic included).
pub struct Slot {
    slots: Arc<Slots>,
    uid: u32,
    login_lane: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                held.per_uid.remove(&self.uid);
            }
        }
        if !self.login_lane {
            held.users_total -= 1;
        }
    }
}

impl Slots {
    pub fn new(limits: Limits, keys_uid: Option<u32>) -> Arc<Slots> {
        Arc::new(Slots {
            limits,
            keys_uid,
            held: Mutex::new(Held::default()),
        })
    }

    /// Whether `uid` is served on the login lane.
    pub fn login_lane(&self, uid: u32) -> bool {
        uid == 0 || Some(uid) == self.keys_uid
    }

    /// A place for one more connection of `uid`, or the line that says
    /// which limit refuses it.
    pub fn take(self: &Arc<Self>, uid: u32) -> std::result::Result<Slot, String> {
        let login_lane = self.login_lane(uid);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.per_uid.get(&uid).copied().unwrap_or(0);
        if login_lane {
            if mine >= self.limits.login_per_uid {
                return Err(format!(
                    "busy: uid {uid} holds {mine} connections (max_login_clients); try again"
                ));
            }
        } else {
            if mine >= self.limits.per_uid {
                return Err(format!(
                    "too many connections from uid {uid}: {mine} are open, the limit is {} \
                     (max_clients_per_uid); end some sessions and try again",
                    self.limits.per_uid
                ));
            }
            if held.users_total >= self.limits.users_total {
                return Err(format!(
                    "busy: {} connections are open, the limit is {} (max_clients); try again later",
                    held.users_total, self.limits.users_total
                ));
            }
            held.users_total += 1;
        }
        *held.per_uid.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            slots: Arc::clone(self),
            uid,
            login_lane,
        })
    }
}

/// Whether a failed accept means the process (or system) is out of
/// descriptors or memory: worth a pause, since retrying at once fails too.
fn out_of_resources(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)
    )
}

/// Serves clients until the listener fails.
pub fn serve(listener: UnixListener, daemon: Arc<Daemon>) -> Result<()> {
    let config = &daemon.config;
    let slots = Slots::new(
        Limits {
            login_per_uid: config.max_login_clients,
            per_uid: config.max_clients_per_uid,
            users_total: config.max_clients,
        },
        daemon.keys_uid,
    );
    let mut pause = ACCEPT_PAUSE_MIN;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => {
                pause = ACCEPT_PAUSE_MIN;
                stream
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if out_of_resources(&e) => {
                // Retrying at once would spin on the same error: the
                // connection stays in the backlog until descriptors free up.
                error!(
                    alarm = "agentd_out_of_descriptors",
                    error = %e,
                    pause_ms = pause.as_millis() as u64,
                    "accept failed: out of resources; pausing"
                );
                std::thread::sleep(pause);
                pause = (pause * 2).min(ACCEPT_PAUSE_MAX);
                continue;
            }
            Err(e) => {
                warn!(error = %e, "accept failed");
                std::thread::sleep(ACCEPT_PAUSE_MIN);
                continue;
            }
        };
        let (uid, pid) = match getsockopt(&stream, PeerCredentials) {
            Ok(credentials) => (credentials.uid(), u32::try_from(credentials.pid()).ok()),
            Err(e) => {
                warn!(error = %e, "no peer credentials; closing");
                continue;
            }
        };
        let slot = match slots.take(uid) {
            Ok(slot) => slot,
            Err(message) => {
                warn!(uid, "connection refused: {message}");
                refuse(stream, message);
                continue;
            }
        };
        let daemon = Arc::clone(&daemon);
        let accepted = std::time::Instant::now();
        let spawned = std::thread::Builder::new()
            .name(format!("client-{uid}"))
            .spawn(move || {
                let _slot = slot;
                serve_client(stream, uid, pid, &daemon, accepted);
            });
        if let Err(e) = spawned {
            // The closure (with the stream and the slot) was dropped.
            error!(alarm = "agentd_no_threads", error = %e, "cannot start a thread for a client");
            std::thread::sleep(pause);
        }
    }
}

/// Answers a refused connection with one error, never blocking the
/// accept loop on a client that does not read.
fn refuse(mut stream: UnixStream, message: String) {
    let _ = stream.set_nonblocking(true);
    let _ = write_frame(&mut stream, &Response::Error { message });
}

/// `pid`: the peer's process (SO_PEERCRED), which web tickets are bound to.
fn serve_client(
    mut stream: UnixStream,
    uid: u32,
    pid: Option<u32>,
    daemon: &Daemon,
    accepted: std::time::Instant,
) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    loop {
        let response = match read_frame_with_fds::<Request>(&stream) {
            Ok((Request::OpenSession(request), fds)) => {
                // The session owns the connection until it ends.
                crate::daemon::monitor::workers::serve(daemon, uid, pid, request, fds, stream);
                return;
            }
            Ok((request, _unexpected_fds)) => {
                let kind = request.kind();
                let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    daemon.handle(request, uid, pid)
                }))
                .unwrap_or_else(|_| Response::Error {
                    message: "internal error".into(),
                });
                let took = accepted.elapsed();
                if took > SLOW_ANSWER {
                    warn!(
                        request = kind,
                        uid,
                        took_ms = took.as_millis() as u64,
                        "slow answer (callers such as pam_jms give up after a few seconds)"
                    );
                } else {
                    debug!(request = kind, uid, "served");
                }
                response
            }
            Err(FrameError::Closed) => return,
            Err(e @ (FrameError::Malformed(_) | FrameError::Version(_))) => {
                warn!(uid, error = %e, "bad request");
                Response::Error {
                    message: e.to_string(),
                }
            }
            Err(e) => {
                // Bad length or I/O: the stream is out of sync; say why and drop it.
                warn!(uid, error = %e, "dropping client");
                let _ = write_frame(
                    &mut stream,
                    &Response::Error {
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        if write_frame(&mut stream, &response).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        login_per_uid: 3,
        per_uid: 2,
        users_total: 3,
    };

    #[test]
    fn engineers_cannot_take_the_login_lane() {
        let slots = Slots::new(LIMITS, Some(65534));
        let a: Vec<Slot> = (0..2).map(|_| slots.take(1000).unwrap()).collect();
        let refused = slots
            .take(1000)
            .err()
            .expect("a third connection of uid 1000");
        assert!(
            refused.contains("too many connections from uid 1000")
                && refused.contains("max_clients_per_uid"),
            "{refused}"
        );
        let b = slots.take(1001).unwrap();
        let full = slots.take(1002).err().expect("max_clients reached");
        assert!(full.contains("max_clients"), "{full}");
        // Root and the keys user each keep their own connections.
        let root: Vec<Slot> = (0..3).map(|_| slots.take(0).unwrap()).collect();
        assert!(slots.take(0).is_err(), "root's own limit");
        let keys: Vec<Slot> = (0..3).map(|_| slots.take(65534).unwrap()).collect();
        drop((root, keys));
        // Places come back when connections end.
        drop(a);
        drop(b);
        let again: Vec<Slot> = (0..2).map(|_| slots.take(1000).unwrap()).collect();
        assert_eq!(again.len(), 2);
        assert!(!slots.held.lock().unwrap().per_uid.contains_key(&0));
    }
}
