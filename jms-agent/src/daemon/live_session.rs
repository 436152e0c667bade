//! A live session's handle: what reaches into a running target session
//! from outside its relay thread. The worker holds the session itself
//! (its relay polls [`LiveSession::wake_fd`] and takes the orders, the
//! joiners' keys and feeds the watchers' taps); the monitor holds a
//! handle of the same type made [`LiveSession::remote`], whose orders and
//! watchers go to the worker that runs the session through a [`Remote`]
//! (the monitor's channel to that worker), so neither side depends on the
//! other's state.
//!
//! - A wake pipe the relay polls (so an order is acted on at once, never
//!   on a timer), the pending order (end the session, a line for the
//!   owner), the keys of joiners allowed to type (a bounded queue: past
//!   [`JOINER_QUEUE`] bytes waiting, a joiner's keys are refused and she
//!   is told), and the output taps: each watcher (the central server's
//!   stream, a joiner) reads a pipe of its own that the relay writes the
//!   target's output into, never blocking (a watcher that falls more than
//!   a pipe behind loses output, the session never waits for it). The
//!   last 64 KiB of output are kept so a new watcher starts with some
//!   screen.
//! - The targets it reaches, checked again when the policy changes
//!   ([`LiveSession::revoked_by`]).

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use jms_core::model::{Action, Protocol};
use jms_core::{Decision, Policy, Query};
use nix::errno::Errno;
use nix::fcntl::OFlag;

use crate::wire::ToWorker;

/// Output kept for a new watcher.
const TAIL_BYTES: usize = 64 * 1024;
/// Joiners' keys waiting for the relay, at most (all joiners together).
pub const JOINER_QUEUE: usize = 64 * 1024;

/// Where a session's orders go when it runs in another process: the
/// monitor's channel to the worker that runs it.
pub trait Remote: Send + Sync {
    /// Sends one message (with a descriptor); false when the worker is
    /// gone or does not read.
    fn send(&self, message: &ToWorker, fd: Option<BorrowedFd<'_>>) -> bool;
}

/// What an order asks of a session's relay (taken when it wakes).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Woken {
    /// End the session with this line.
    pub end: Option<String>,
    /// Lines for the owner (someone joined or left).
    pub notices: Vec<String>,
}

/// A running target session as the outside sees it.
pub struct LiveSession {
    pub id: String,
    pub user: String,
    pub asset: String,
    pub account: String,
    /// `shell`, `exec` or `sftp`: only terminal sessions can be shared.
    pub kind: &'static str,
    pub started: Instant,
    wake_read: OwnedFd,
    wake_write: OwnedFd,
    state: Mutex<LiveState>,
    /// Signalled when the session is closed ([`LiveSession::wait_ended`]).
    closed: Condvar,
    /// In the monitor: the worker that runs the session, which the orders
    /// go to (the relay and its output are there).
    remote: Option<Arc<dyn Remote>>,
}

#[derive(Default)]
struct LiveState {
    pending: Woken,
    /// Joiners' keys (who typed them), at most [`JOINER_QUEUE`] bytes.
    input: VecDeque<(String, Vec<u8>)>,
    input_bytes: usize,
    /// What the session reaches: (asset, account, protocol), checked
    /// again when the policy changes.
    targets: Vec<(String, String, Protocol)>,
    taps: Vec<OwnedFd>,
    /// The latest output: its last [`TAIL_BYTES`] are the recent output
    /// (see [`keep_tail`]).
    tail: Vec<u8>,
    size: (u16, u16),
    /// Set once the session is over.
    ended: Option<String>,
    /// The central server is being sent this session's output.
    streaming: bool,
    /// A watch order came while a stream was stopping: start again.
    rewatch: bool,
}

/// A watcher's view: the recent output, the terminal size, and the pipe
/// the rest arrives on (EOF when the session ends).
pub struct Tap {
    pub recent: Vec<u8>,
    pub size: (u16, u16),
    pub pipe: OwnedFd,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    Ok((read, write))
}

impl LiveSession {
    pub fn new(
        id: &str,
        user: &str,
        asset: &str,
        account: &str,
        size: (u16, u16),
    ) -> std::io::Result<LiveSession> {
        let (wake_read, wake_write) = pipe()?;
        let targets = if asset.is_empty() {
            Vec::new()
        } else {
            vec![(asset.to_string(), account.to_string(), Protocol::Ssh)]
        };
        Ok(LiveSession {
            id: id.to_string(),
            user: user.to_string(),
            asset: asset.to_string(),
            account: account.to_string(),
            kind: "shell",
            started: Instant::now(),
            wake_read,
            wake_write,
            closed: Condvar::new(),
            state: Mutex::new(LiveState {
                size,
                targets,
                ..LiveState::default()
            }),
            remote: None,
        })
    }

    /// The monitor's view of a session that `channel`'s worker runs:
    /// orders and watchers go to the worker.
    pub fn remote(mut self, channel: Arc<dyn Remote>) -> LiveSession {
        self.remote = Some(channel);
        self
    }

    /// The same, of kind `kind` (`exec`, `sftp`, `rsync`…), its target
    /// reached over `protocol` (as the grants name it).
    pub fn of_kind(mut self, kind: &'static str, protocol: Protocol) -> LiveSession {
        self.kind = kind;
        for target in &mut self.state().targets {
            target.2 = protocol;
        }
        self
    }

    /// One more target the session reaches (an SFTP folder opened).
    pub fn add_target(&self, asset: &str, account: &str, protocol: Protocol) {
        let mut state = self.state();
        let target = (asset.to_string(), account.to_string(), protocol);
        if !state.targets.contains(&target) {
            state.targets.push(target);
        }
    }

    /// Why `policy` no longer lets the user reach one of the session's
    /// targets, if it does not.
    pub fn revoked_by(&self, policy: &Policy) -> Option<String> {
        let targets = self.state().targets.clone();
        let now = Utc::now();
        targets.iter().find_map(|(asset, account, protocol)| {
            let query = Query {
                user: &self.user,
                asset,
                account: Some(account),
                protocol: Some(*protocol),
                action: Action::Connect,
                at: now,
            };
            match policy.decide(&query) {
                Ok(Decision::Allow) => None,
                Ok(Decision::Deny(reason)) => Some(format!("{account}@{asset}: {reason}")),
                Err(e) => Some(format!("{account}@{asset}: {e}")),
            }
        })
    }

    fn state(&self) -> MutexGuard<'_, LiveState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        let _ = nix::unistd::write(self.wake_write.as_fd(), &[1]);
    }

    /// The descriptor the relay polls.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    /// Empties the wake pipe and takes what is pending.
    pub fn take(&self) -> Woken {
        let mut buf = [0u8; 64];
        while let Ok(n) = nix::unistd::read(self.wake_read.as_raw_fd(), &mut buf) {
            if n == 0 {
                break;
            }
        }
        std::mem::take(&mut self.state().pending)
    }

    /// Asks the relay to end the session with `line`.
    pub fn end(&self, line: String) {
        if let Some(remote) = &self.remote {
            remote.send(&ToWorker::End(line), None);
            return;
        }
        self.state().pending.end = Some(line);
        self.wake();
    }

    /// Keystrokes for the session from `joiner` (allowed to type); false
    /// when they were refused: the queue holds [`JOINER_QUEUE`] bytes the
    /// session has not taken yet.
    pub fn input(&self, joiner: &str, data: &[u8]) -> bool {
        if let Some(remote) = &self.remote {
            return data.chunks(crate::wire::INPUT_CHUNK).all(|chunk| {
                remote.send(
                    &ToWorker::Input {
                        joiner: joiner.to_string(),
                        data: chunk.to_vec(),
                    },
                    None,
                )
            });
        }
        {
            let mut state = self.state();
            if state.input_bytes + data.len() > JOINER_QUEUE {
                return false;
            }
            state.input_bytes += data.len();
            state.input.push_back((joiner.to_string(), data.to_vec()));
        }
        self.wake();
        true
    }

    /// Takes the oldest chunk of joiners' keys, at most `room` bytes (the
    /// rest of a longer chunk stays first in the queue), with who typed it.
    pub fn take_input(&self, room: usize) -> Option<(String, Vec<u8>)> {
        if room == 0 {
            return None;
        }
        let mut state = self.state();
        let (joiner, mut keys) = state.input.pop_front()?;
        if keys.len() > room {
            let rest = keys.split_off(room);
            state.input.push_front((joiner.clone(), rest));
        }
        state.input_bytes -= keys.len();
        Some((joiner, keys))
    }

    /// A line for the owner.
    pub fn notice(&self, line: String) {
        if let Some(remote) = &self.remote {
            remote.send(&ToWorker::Notice(line), None);
            return;
        }
        self.state().pending.notices.push(line);
        self.wake();
    }

    /// The target's output: kept and copied to every watcher.
    pub fn output(&self, data: &[u8]) {
        let mut state = self.state();
        keep_tail(&mut state.tail, data);
        state
            .taps
            .retain(|fd| match nix::unistd::write(fd.as_fd(), data) {
                Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => true,
                Err(_) => false,
            });
    }

    pub fn resize(&self, cols: u16, rows: u16) {
        self.state().size = (cols, rows);
    }

    /// A new watcher; `None` once the session is over.
    pub fn tap(&self) -> Option<Tap> {
        let mut state = self.state();
        if state.ended.is_some() {
            return None;
        }
        let (read, write) = pipe().ok()?;
        // Room for bursts (a screenful redrawn); the default is 64 KiB.
        let _ = nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20),
        );
        if let Some(remote) = &self.remote {
            // The worker writes its recent output first, then the rest.
            if !remote.send(&ToWorker::Tap, Some(write.as_fd())) {
                return None;
            }
            return Some(Tap {
                recent: Vec::new(),
                size: state.size,
                pipe: read,
            });
        }
        state.taps.push(write);
        Some(Tap {
            recent: recent(&state.tail).to_vec(),
            size: state.size,
            pipe: read,
        })
    }

    /// New limits for the worker that runs this session (monitor side).
    pub fn send_settings(&self, limits: crate::wire::WireLimits) {
        if let Some(remote) = &self.remote {
            remote.send(&ToWorker::Settings(limits), None);
        }
    }

    /// A watcher's pipe made elsewhere (by the monitor, for a session this
    /// worker runs): the recent output goes into it first.
    pub fn add_tap(&self, pipe: OwnedFd) {
        let mut state = self.state();
        if state.ended.is_some() {
            return;
        }
        let _ = nix::fcntl::fcntl(
            pipe.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
        );
        let _ = nix::unistd::write(pipe.as_fd(), recent(&state.tail));
        state.taps.push(pipe);
    }

    /// The session is over: watchers see EOF.
    pub fn close(&self, reason: Option<String>) {
        let mut state = self.state();
        state.ended = Some(reason.unwrap_or_default());
        state.taps.clear();
        self.closed.notify_all();
    }

    /// Why it ended, waiting up to `at_most` for the end: a watcher's pipe
    /// can close (the worker's relay is done) just before the monitor
    /// hears the session's end and its reason.
    pub fn wait_ended(&self, at_most: Duration) -> Option<String> {
        let state = self.state();
        let (state, _) = self
            .closed
            .wait_timeout_while(state, at_most, |s| s.ended.is_none())
            .unwrap_or_else(|e| e.into_inner());
        state.ended.clone()
    }

    /// Why it ended (empty when it just ended), once over.
    pub fn ended(&self) -> Option<String> {
        self.state().ended.clone()
    }

    /// Marks the session as streamed to the central server (monitor
    /// side); false when a stream runs already, which is then asked to
    /// start again once it stops.
    pub fn begin_stream(&self) -> bool {
        let mut state = self.state();
        if state.streaming {
            state.rewatch = true;
            return false;
        }
        state.streaming = true;
        true
    }

    /// A stream to the central server stopped (`ended`: with the
    /// session): true when it starts again (a watch order came while it
    /// was stopping), else the session is no longer streamed.
    pub fn stream_stopped(&self, ended: bool) -> bool {
        let mut state = self.state();
        if !ended && state.rewatch && state.ended.is_none() {
            state.rewatch = false;
            return true;
        }
        state.streaming = false;
        state.rewatch = false;
        false
    }
}

/// Adds `data` to `tail`, which holds at most twice [`TAIL_BYTES`]: the
/// older half is dropped only when it is full, so a bulk stream costs one
/// copy per byte (and a chunk of [`TAIL_BYTES`] or more replaces it),
/// where trimming to [`TAIL_BYTES`] on every chunk moved the whole tail
/// each time.
fn keep_tail(tail: &mut Vec<u8>, data: &[u8]) {
    if data.len() >= TAIL_BYTES {
        tail.clear();
        tail.extend_from_slice(&data[data.len() - TAIL_BYTES..]);
        return;
    }
    if tail.len() + data.len() > 2 * TAIL_BYTES {
        let cut = tail.len() - TAIL_BYTES;
        tail.drain(..cut);
    }
    tail.extend_from_slice(data);
}

/// The recent output: the last [`TAIL_BYTES`] of `tail`.
fn recent(tail: &[u8]) -> &[u8] {
    &tail[tail.len().saturating_sub(TAIL_BYTES)..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recent_output_is_the_last_tail_bytes_whatever_the_chunks() {
        let mut tail = Vec::new();
        let mut all = Vec::new();
        let mut n = 0u32;
        for size in [
            1usize,
            7,
            1000,
            30_000,
            65_536,
            3,
            200_000,
            40_000,
            9,
            64 * 1024 - 1,
        ] {
            let chunk: Vec<u8> = (0..size)
                .map(|_| {
                    n = n.wrapping_add(1);
                    (n % 251) as u8
                })
                .collect();
            keep_tail(&mut tail, &chunk);
            all.extend_from_slice(&chunk);
            assert!(tail.len() <= 2 * TAIL_BYTES, "bounded: {}", tail.len());
            assert_eq!(recent(&tail), &all[all.len().saturating_sub(TAIL_BYTES)..]);
        }
    }

    #[test]
    fn joiner_keys_are_bounded_and_taken_in_order_with_who_typed_them() {
        let live = LiveSession::new("s1", "alice", "web01", "deploy", (80, 24)).unwrap();
        assert!(live.input("bob", b"ls"));
        assert!(live.input("carol", b"id\r"));
        let chunk = vec![b'x'; 16 * 1024];
        let mut accepted = 5;
        while live.input("bob", &chunk) {
            accepted += chunk.len();
            assert!(
                accepted <= JOINER_QUEUE,
                "the queue never holds more than its bound"
            );
        }
        assert!(
            accepted + chunk.len() > JOINER_QUEUE,
            "refused only when full"
        );
        // Taken in order, as far as the relay has room, a chunk split if
        // need be.
        assert_eq!(live.take_input(0), None);
        assert_eq!(
            live.take_input(4),
            Some(("bob".to_string(), b"ls".to_vec()))
        );
        assert_eq!(
            live.take_input(2),
            Some(("carol".to_string(), b"id".to_vec()))
        );
        assert_eq!(
            live.take_input(9),
            Some(("carol".to_string(), b"\r".to_vec()))
        );
        let mut rest = 0;
        while let Some((who, keys)) = live.take_input(usize::MAX) {
            assert_eq!(who, "bob");
            rest += keys.len();
        }
        assert_eq!(rest, accepted - 5);
        assert!(live.input("bob", &chunk), "room again once taken");
    }
}
