//! Live sessions on this bastion: the registry of running target sessions,
//! and what reaches into them from outside their relay thread.
//!
//! - [`Registry`]: session id → [`LiveSession`]; share codes
//!   (`session::share`).
//! - [`LiveSession`]: a wake pipe the relay polls (so an order is acted on
//!   at once, never on a timer), the pending order (end the session, a
//!   line for the owner), the keys of joiners allowed to type (a bounded
//!   queue: past [`JOINER_QUEUE`] bytes waiting, a joiner's keys are
//!   refused and she is told), and the output taps: each
//!   watcher (the central server's stream, a joiner) reads a pipe of its
//!   own that the relay writes the target's output into, never blocking
//!   (a watcher that falls more than a pipe behind loses output, the
//!   session never waits for it). The last 64 KiB of output are kept so a
//!   new watcher starts with some screen.
//! - Revocation ([`Registry::revoke`]): when a new policy is swapped in,
//!   and every [`RECHECK_EVERY`] (grants and users expire with time),
//!   every live session whose targets it no longer allows is ended
//!   ("access revoked").
//! - Share codes: single use, and [`Registry::join_attempt`] limits wrong
//!   codes per user.
//! - [`run_control`]: the signed long-poll `GET /api/v1/sync/control` for
//!   the server's orders (`kill`, `watch`), believed only when the server
//!   signed the answer for that request (a forged or replayed order is
//!   ignored, with an alarm); [`stream_to_server`] pushes a
//!   watched session's output (`POST /api/v1/sync/live/{session}`) in
//!   batches every 200 ms until the server says nobody watches.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use jms_core::model::{Action, Protocol};
use jms_core::{Decision, Policy, Query};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::daemon::config::CentralConfig;
use crate::daemon::enroll::{self, Call, Identity};
use crate::daemon::handlers::Daemon;

/// Output kept for a new watcher.
const TAIL_BYTES: usize = 64 * 1024;
/// How often a watched session's output goes to the server.
const PUSH_EVERY: Duration = Duration::from_millis(200);
/// A push with nothing new, so the server can say nobody watches.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a finished stream waits for its session's end reason.
const END_REASON_WAIT: Duration = Duration::from_secs(5);
/// Seconds the server may hold a control request.
const CONTROL_WAIT_SECS: u64 = 25;
/// How often live sessions are checked against the policy in force even
/// when it did not change (a grant or user that expired with time).
pub const RECHECK_EVERY: Duration = Duration::from_secs(30);
/// Joiners' keys waiting for the relay, at most (all joiners together).
pub const JOINER_QUEUE: usize = 64 * 1024;
/// Wrong share codes a user may try within [`JOIN_WINDOW`].
pub const JOIN_ATTEMPTS: usize = 5;
pub const JOIN_WINDOW: Duration = Duration::from_secs(10 * 60);

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
    remote: Option<Arc<crate::daemon::workers::WorkerChannel>>,
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
    pub fn remote(mut self, channel: Arc<crate::daemon::workers::WorkerChannel>) -> LiveSession {
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
            remote.send(&crate::wire::ToWorker::End(line), None);
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
                    &crate::wire::ToWorker::Input {
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
            remote.send(&crate::wire::ToWorker::Notice(line), None);
            return;
        }
        self.state().pending.notices.push(line);
        self.wake();
    }

    /// The target's output: kept and copied to every watcher.
    pub fn output(&self, data: &[u8]) {
        let mut state = self.state();
        state.tail.extend_from_slice(data);
        if state.tail.len() > TAIL_BYTES {
            let cut = state.tail.len() - TAIL_BYTES;
            state.tail.drain(..cut);
        }
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
            if !remote.send(&crate::wire::ToWorker::Tap, Some(write.as_fd())) {
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
            recent: state.tail.clone(),
            size: state.size,
            pipe: read,
        })
    }

    /// New limits for the worker that runs this session (monitor side).
    pub fn send_settings(&self, limits: crate::wire::WireLimits) {
        if let Some(remote) = &self.remote {
            remote.send(&crate::wire::ToWorker::Settings(limits), None);
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
        let _ = nix::unistd::write(pipe.as_fd(), &state.tail);
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
}

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

/// One order from `GET /api/v1/sync/control`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Order {
    Kill {
        session: String,
        reason: String,
    },
    Watch {
        session: String,
    },
    /// Forget a user's failed logins and lockout.
    Unlock {
        user: String,
    },
}

/// Reads the control answer (`{"orders": [...]}`); unknown orders are
/// skipped (a newer server).
pub fn parse_orders(answer: &Value) -> Vec<Order> {
    let Some(orders) = answer["orders"].as_array() else {
        return Vec::new();
    };
    orders
        .iter()
        .filter_map(|o| {
            let session = || o["session"].as_str().map(str::to_string);
            match o["kind"].as_str()? {
                "kill" => Some(Order::Kill {
                    session: session()?,
                    reason: o["reason"].as_str().unwrap_or("").to_string(),
                }),
                "watch" => Some(Order::Watch {
                    session: session()?,
                }),
                "unlock" => Some(Order::Unlock {
                    user: o["user"].as_str()?.to_string(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// A signed JSON exchange with the central server.
struct Central {
    server: String,
    identity: Identity,
    http: reqwest::blocking::Client,
    timeout: Duration,
}

impl Central {
    fn new(state_dir: &std::path::Path, config: &CentralConfig) -> anyhow::Result<Central> {
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        Ok(Central {
            server: config.server.clone(),
            identity: Identity::load(state_dir)?,
            http: enroll::http_client(Duration::from_secs(CONTROL_WAIT_SECS) + timeout * 2)?,
            timeout,
        })
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &str,
        body: Option<&Value>,
        wait: Duration,
    ) -> anyhow::Result<Value> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        // Only an answer the server signed for this request is believed.
        let call = Call {
            timeout: Some(wait + self.timeout),
            ..Call::new(method, path, query)
        };
        let answer = self.identity.call(&self.http, &self.server, call, body)?;
        if !answer.status.is_success() {
            return Err(answer.refusal(path));
        }
        Ok(answer.json())
    }
}

/// The control thread: waits for the server's orders and carries them out.
pub fn run_control(daemon: Arc<Daemon>, config: CentralConfig) {
    let central = match Central::new(&daemon.config.state_dir, &config) {
        Ok(central) => Arc::new(central),
        Err(e) => {
            warn!("live control disabled: {e:#}");
            return;
        }
    };
    let retry = Duration::from_secs(config.poll_interval_secs.max(1));
    loop {
        // Each poll carries the bastion's report (`jmsctl bastion list`).
        let report = jms_core::fleet::StatusReport {
            agent: env!("CARGO_PKG_VERSION").to_string(),
            sessions: crate::daemon::session::open_sessions::count(&daemon.config),
            backlog: crate::daemon::session::spool::backlog(&daemon.config),
        };
        let answer = central.call(
            reqwest::Method::GET,
            "/api/v1/sync/control",
            &format!("wait={CONTROL_WAIT_SECS}&{}", report.query()),
            None,
            Duration::from_secs(CONTROL_WAIT_SECS),
        );
        let orders = match answer {
            Ok(answer) => parse_orders(&answer),
            Err(e) => {
                warn!("control poll: {e:#}");
                std::thread::sleep(retry);
                continue;
            }
        };
        for order in orders {
            match order {
                Order::Unlock { user } => {
                    let lifted = daemon.unlock(&user);
                    info!(event = "user_unlock_order", user = %user, lifted, "lockout lifted by the server's order");
                }
                Order::Kill { session, reason } => {
                    let found = daemon.live.kill(&session, &reason);
                    info!(event = "session_kill_order", session = %session, reason = %reason, found);
                }
                Order::Watch { session } => {
                    let Some(live) = daemon.live.get(&session) else {
                        // Over already (its end not yet uploaded): the
                        // watchers are told instead of waiting.
                        let central = Arc::clone(&central);
                        let _ = std::thread::Builder::new()
                            .name("live-stream".into())
                            .spawn(move || {
                                let body = json!({"events": [], "ended": true,
                                    "reason": "the session is not running on its bastion"});
                                let path = format!("/api/v1/sync/live/{session}");
                                let _ = central.call(
                                    reqwest::Method::POST,
                                    &path,
                                    "",
                                    Some(&body),
                                    Duration::ZERO,
                                );
                            });
                        continue;
                    };
                    {
                        let mut state = live.state();
                        if state.streaming {
                            state.rewatch = true;
                            continue;
                        }
                        state.streaming = true;
                    }
                    let central = Arc::clone(&central);
                    let spawned = std::thread::Builder::new()
                        .name("live-stream".into())
                        .spawn(move || stream_to_server(&central, &live));
                    if let Err(e) = spawned {
                        warn!("cannot start a live stream: {e}");
                    }
                }
            }
        }
    }
}

/// Splits `bytes` into the longest UTF-8 text and the incomplete tail (a
/// character cut between two reads); invalid bytes become U+FFFD.
fn utf8_prefix(bytes: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(bytes) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => bytes.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let rest = bytes.split_off(bytes.len() - keep);
    let text = String::from_utf8_lossy(bytes).into_owned();
    *bytes = rest;
    text
}

/// Streams `live` to the server for as long as anyone watches; a watch
/// order that came while a stream was stopping starts it again.
fn stream_to_server(central: &Central, live: &LiveSession) {
    loop {
        let ended = stream_once(central, live);
        let mut state = live.state();
        if !ended && state.rewatch && state.ended.is_none() {
            state.rewatch = false;
            continue;
        }
        state.streaming = false;
        state.rewatch = false;
        return;
    }
}

/// Pushes `live`'s output to the server until nobody watches (false) or
/// it ends (true).
fn stream_once(central: &Central, live: &LiveSession) -> bool {
    let Some(tap) = live.tap() else { return true };
    let path = format!("/api/v1/sync/live/{}", live.id);
    let started = Instant::now();
    let mut pending = tap.recent;
    let first = json!({
        "size": [tap.size.0, tap.size.1],
        "init": utf8_prefix(&mut pending),
        "events": [],
    });
    let push = |body: &Value| -> bool {
        match central.call(reqwest::Method::POST, &path, "", Some(body), Duration::ZERO) {
            Ok(answer) => answer["watching"].as_bool().unwrap_or(false),
            Err(e) => {
                warn!(session = %live.id, "live push: {e:#}");
                false
            }
        }
    };
    if !push(&first) {
        return false;
    }
    let mut events: Vec<Value> = Vec::new();
    let mut last_push = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    let mut open = true;
    while open {
        let deadline = last_push
            + if events.is_empty() {
                HEARTBEAT
            } else {
                PUSH_EVERY
            };
        let wait = deadline.saturating_duration_since(Instant::now());
        // SAFETY: the tap's pipe is open for this whole function.
        let fd = unsafe { BorrowedFd::borrow_raw(tap.pipe.as_raw_fd()) };
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        let _ = poll(
            &mut fds,
            crate::daemon::session::connect::poll_timeout(wait),
        );
        loop {
            match nix::unistd::read(tap.pipe.as_raw_fd(), &mut buf) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            let text = utf8_prefix(&mut pending);
            if !text.is_empty() {
                let t = (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0;
                events.push(json!([t, "o", text]));
            }
        }
        if !open || Instant::now() >= deadline {
            if !push(&json!({"events": std::mem::take(&mut events)})) && open {
                info!(session = %live.id, "nobody watches any more: live stream stopped");
                return false;
            }
            last_push = Instant::now();
        }
    }
    let reason = live.wait_ended(END_REASON_WAIT).unwrap_or_default();
    push(&json!({"events": [], "ended": true, "reason": reason}));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_read_and_unknown_ones_skipped() {
        let answer = json!({"orders": [
            {"kind": "kill", "session": "s1", "reason": "policy"},
            {"kind": "watch", "session": "s2"},
            {"kind": "reboot", "session": "s3"},
            {"kind": "kill"},
            {"kind": "unlock", "user": "alice"},
            {"kind": "unlock"},
        ]});
        assert_eq!(
            parse_orders(&answer),
            vec![
                Order::Kill {
                    session: "s1".into(),
                    reason: "policy".into()
                },
                Order::Watch {
                    session: "s2".into()
                },
                Order::Unlock {
                    user: "alice".into()
                },
            ]
        );
        assert!(parse_orders(&json!({})).is_empty());
    }

    #[test]
    fn a_character_cut_between_reads_waits_for_its_rest() {
        let mut bytes = "ab\u{e9}".as_bytes().to_vec();
        let last = bytes.pop().unwrap();
        assert_eq!(utf8_prefix(&mut bytes), "ab");
        bytes.push(last);
        assert_eq!(utf8_prefix(&mut bytes), "\u{e9}");
        assert!(bytes.is_empty());
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
