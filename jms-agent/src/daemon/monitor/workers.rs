//! Session workers, the monitor's side: every session runs in a process of
//! its own, jms-agentd re-executed as `jms-session` (`session::worker_main`)
//! under `[sessions] worker_user`, with no new privileges and resource
//! limits. The monitor (this process, root) keeps the policy, the vault,
//! the spool and the live registry, and answers the worker's asks
//! (`crate::wire`): grant decisions, the credential of a target it
//! resolved, SFTP folder decisions, share codes and joins. It never reads
//! the session's byte stream.
//!
//! A worker that dies (a signal, its memory limit) ends its own session
//! only: the monitor writes `session_end` with the reason and the engineer
//! reads one line saying so.

use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::Utc;
use jms_core::model::{Action, Protocol};
use jms_core::{Decision, Query};
use jms_proto::{
    read_frame_with_fds_limited, write_frame, write_frame_with_fds, Response, SessionRequest,
    MAX_FRAME,
};
use tracing::{info, warn};

use crate::daemon::events::new_id;
use crate::daemon::events::{EventBody, Scope};
use crate::daemon::live_session::{LiveSession, Remote};
use crate::daemon::monitor::audit;
use crate::daemon::monitor::handlers::Daemon;
use crate::daemon::monitor::live::{Registered, ShareCode};
use crate::daemon::monitor::running;
use crate::daemon::monitor::{resolve, share_codes, spool};
use crate::daemon::session::commands::Filters;
use crate::daemon::session::sftp::{FolderDecisions, PolicyFolders};
use crate::daemon::target::{Login, TargetSpec};
use crate::wire::{
    Answer, Ask, FromWorker, Grant, Joined, Register, SessionSettings, Start, ToWorker, WireLimits,
    WORKER_NAME,
};

/// How long a write to a worker may block.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest line of a worker's stderr kept (longer ones are cut).
const STDERR_LINE: usize = 8192;
/// What Rust's allocator prints when an allocation fails.
const ALLOCATION_FAILED: &str = "memory allocation of";

/// The monitor's end of one worker's channel; orders from any thread.
pub struct WorkerChannel {
    stream: Mutex<UnixStream>,
}

impl WorkerChannel {
    /// Sends one message (with a descriptor); false when the worker is
    /// gone or does not read.
    pub fn send(&self, message: &ToWorker, fd: Option<BorrowedFd<'_>>) -> bool {
        let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner());
        let fds: Vec<BorrowedFd<'_>> = fd.into_iter().collect();
        write_frame_with_fds(&stream, message, &fds).is_ok()
    }
}

/// A web ticket's session over SFTP: the folder of the ticket's target
/// only.
struct TicketFolders<'a> {
    inner: &'a dyn FolderDecisions,
    ticket: &'a jms_sync::ticket::Ticket,
}

impl TicketFolders<'_> {
    fn is_target(&self, folder: &crate::wire::Folder) -> bool {
        folder.asset == self.ticket.asset && folder.account == self.ticket.account
    }
}

impl FolderDecisions for TicketFolders<'_> {
    fn list(&self) -> Vec<(String, crate::wire::Folder)> {
        let mut list = self.inner.list();
        list.retain(|(_, folder)| self.is_target(folder));
        list
    }
    fn resolve(
        &self,
        name: &str,
    ) -> Result<crate::wire::Folder, crate::daemon::session::sftp::folders::Unresolved> {
        let folder = self.inner.resolve(name)?;
        if self.is_target(&folder) {
            Ok(folder)
        } else {
            // As for any asset out of reach.
            Err(crate::wire::Unresolved::NoSuchAsset(name.to_string()))
        }
    }
    fn check(&self, folder: &crate::wire::Folder, action: Action) -> Result<(), String> {
        if !self.is_target(folder) {
            return Err(format!(
                "this web session may reach {}@{} only",
                self.ticket.account, self.ticket.asset
            ));
        }
        self.inner.check(folder, action)
    }
}

/// The monitor's handle of a live session sends its orders here.
impl Remote for WorkerChannel {
    fn send(&self, message: &ToWorker, fd: Option<BorrowedFd<'_>>) -> bool {
        WorkerChannel::send(self, message, fd)
    }
}

/// The settings a worker's session needs, now.
pub fn session_settings(daemon: &Daemon) -> SessionSettings {
    let effective = daemon.effective();
    let s = &daemon.config.sessions;
    SessionSettings {
        limits: WireLimits::of(&effective),
        record_input: effective.record_input,
        recording_cap_bytes: effective.recording_cap_bytes,
        command_filter_default: effective.command_filter_default,
        exec_stdin: effective.exec_stdin,
        stdin_interpreters: effective.stdin_interpreters.clone(),
        audit_on_failure: effective.audit_on_failure,
        credentials_timeout_secs: s.credentials_timeout_secs,
        ssh: s.ssh.clone(),
        runtime_dir: s.runtime_dir.clone(),
        recordings_dir: daemon.config.recordings_dir(),
        known_hosts_dir: daemon.config.known_hosts_dir(),
        connect_timeout_secs: s.connect_timeout_secs,
        login_timeout_secs: s.login_timeout_secs,
        target_ciphers: s.target_ciphers.clone(),
        exec_recording_keep_bytes: s.exec_recording_keep_bytes,
    }
}

/// Serves one session request: checks the caller, starts its worker and
/// answers it until it is done or dead.
pub fn serve(
    daemon: &Daemon,
    uid: u32,
    pid: Option<u32>,
    mut request: SessionRequest,
    fds: Vec<OwnedFd>,
    stream: UnixStream,
) {
    let _ = stream.set_read_timeout(None);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let Some(user) = daemon.user_of_uid(uid) else {
        warn!(uid, "session refused: the caller is not a jms user");
        let _ = write_frame(
            &mut &stream,
            &Response::Forbidden {
                reason: format!("uid {uid} is not a jms user"),
            },
        );
        return;
    };
    // A web ticket's login reaches the ticket's target only, and is
    // audited from the browser's address (with the real peer noted).
    let ticket = pid.and_then(|p| daemon.tickets.of_session(p));
    if let Some(ticket) = &ticket {
        request.client = Some(ticket.audit_client(request.client.as_deref()));
    }
    let id = new_id();
    let span = tracing::info_span!("session", id = %id, user = %user);
    let _entered = span.enter();
    let deny = |reason: &str| {
        info!(event = "session_denied", command_line = %request.command_line, reason);
        spool::record(
            &daemon.config,
            EventBody::SessionDenied {
                session: Some(id.clone()),
                user: user.clone(),
                command_line: request.command_line.clone(),
                reason: reason.to_string(),
                client: request.client.clone(),
            },
        );
        let _ = write_frame(
            &mut &stream,
            &Response::Denied {
                reason: reason.to_string(),
            },
        );
    };
    if fds.len() != 3 {
        return deny("the agent must pass stdin, stdout and stderr");
    }
    // audit.on_failure: no session while the audit store is full.
    if let Err(reason) = audit::admit(daemon) {
        return deny(&reason);
    }
    // Listed before the worker can create the recording, until it exited.
    // This user's sessions beyond the first few take only idle CPU.
    let idle =
        running::of_user(&user) >= daemon.config.sessions.worker_idle_after_sessions as usize;
    let _running = running::Running::new(&id, &user);
    let mut worker = match spawn(daemon, idle, WORKER_NAME) {
        Ok(worker) => worker,
        Err(e) => {
            tracing::error!(
                alarm = "worker_start_failed",
                error = format!("{e:#}"),
                "no session worker"
            );
            return deny("no session worker could be started; tell an administrator");
        }
    };
    let start = Start {
        session: id.clone(),
        user: user.clone(),
        request: request.clone(),
        settings: session_settings(daemon),
    };
    let passed: Vec<BorrowedFd<'_>> = std::iter::once(stream.as_fd())
        .chain(fds.iter().map(|f| f.as_fd()))
        .collect();
    if let Err(e) = write_frame_with_fds(&worker.channel_stream, &start, &passed) {
        warn!(error = %e, "the worker did not take its session");
    }
    // The engineer's descriptors are the worker's now.
    drop(fds);
    let mut served = Served {
        daemon,
        id,
        user,
        channel: Arc::clone(&worker.channel),
        resolved: Vec::new(),
        registered: None,
        started: None,
        ended: false,
        joined: None,
        began: Instant::now(),
        terminal: request.pty.is_some(),
        ticket,
    };
    let done = served.answer_until_done(&worker.channel_stream);
    let reason = worker.finish(done);
    served.after_worker(reason, &stream);
}

/// A running worker.
pub(crate) struct Worker {
    child: std::process::Child,
    pub(crate) channel_stream: UnixStream,
    channel: Arc<WorkerChannel>,
    /// Set by the stderr reader when the worker ran out of memory.
    out_of_memory: Arc<AtomicBool>,
    stderr_done: std::sync::mpsc::Receiver<()>,
}

/// Starts a worker named `name` (a session's, or an account job's) as
/// `[sessions] worker_user` with the workers' limits.
pub(crate) fn spawn(daemon: &Daemon, idle: bool, name: &str) -> Result<Worker> {
    let (ours, theirs) = UnixStream::pair().context("socketpair")?;
    let s = &daemon.config.sessions;
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(name)
        .arg(s.worker_memory_max_bytes.to_string())
        .arg(s.worker_open_files_max.to_string())
        .arg(s.worker_cpu_max_secs.to_string())
        .arg(if idle { "idle" } else { "normal" })
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .current_dir("/");
    if let Ok(filter) = std::env::var("JMS_LOG") {
        command.env("JMS_LOG", filter);
    }
    if let Some(user) = daemon.worker {
        // std drops the supplementary groups when it changes the uid.
        command.uid(user.uid).gid(user.gid);
    }
    let mut child = command.spawn().context("starting the session worker")?;
    let stderr = child.stderr.take().context("the worker's stderr")?;
    let out_of_memory = Arc::new(AtomicBool::new(false));
    let (stderr_tx, stderr_done) = std::sync::mpsc::channel();
    {
        let out_of_memory = Arc::clone(&out_of_memory);
        let pid = child.id();
        std::thread::Builder::new()
            .name(format!("worker-{pid}-stderr"))
            .spawn(move || {
                forward_stderr(stderr, &out_of_memory);
                let _ = stderr_tx.send(());
            })
            .context("starting the worker's stderr reader")?;
    }
    ours.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let channel = Arc::new(WorkerChannel {
        stream: Mutex::new(ours.try_clone()?),
    });
    Ok(Worker {
        child,
        channel_stream: ours,
        channel,
        out_of_memory,
        stderr_done,
    })
}

/// Copies a worker's log lines to ours; notes an allocation failure.
fn forward_stderr(stderr: impl Read, out_of_memory: &AtomicBool) {
    let mut reader = BufReader::new(stderr.take(u64::MAX));
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(STDERR_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line);
        if text.contains(ALLOCATION_FAILED) {
            out_of_memory.store(true, Ordering::SeqCst);
        }
        eprint!("{text}");
        if !text.ends_with('\n') {
            eprintln!();
        }
    }
}

impl Worker {
    /// Waits for the worker to exit (killing it when it did not say it was
    /// done); the reason its session ended early, if it did.
    pub(crate) fn finish(&mut self, done: bool) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(if done { 5 } else { 1 });
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        // The allocator's last words come through stderr.
        let _ = self.stderr_done.recv_timeout(Duration::from_secs(2));
        if done {
            return None;
        }
        let reason = if self.out_of_memory.load(Ordering::SeqCst) {
            "worker over its memory limit".to_string()
        } else {
            match status {
                Some(s) if s.signal().is_some() => {
                    format!("worker died: signal {}", s.signal().unwrap_or_default())
                }
                Some(s) => format!("worker died: exit status {}", s.code().unwrap_or_default()),
                None => "worker died".to_string(),
            }
        };
        Some(reason)
    }
}

/// One session's state in the monitor.
struct Served<'d> {
    daemon: &'d Daemon,
    id: String,
    user: String,
    channel: Arc<WorkerChannel>,
    /// Targets this session was granted: (asset, account, protocol).
    resolved: Vec<(String, String, Protocol)>,
    registered: Option<Registered<'d>>,
    /// The scope of its session_start, once written.
    started: Option<Scope>,
    ended: bool,
    /// The session this one joined, and whether it may type.
    joined: Option<(Arc<LiveSession>, bool)>,
    began: Instant,
    /// The engineer has a terminal (`join` needs one).
    terminal: bool,
    /// The web ticket this session's login was bound to: its target is the
    /// only one the session may reach.
    ticket: Option<Arc<jms_sync::ticket::Ticket>>,
}

impl<'d> Served<'d> {
    /// Answers the worker until it says it is done (true) or goes away.
    fn answer_until_done(&mut self, stream: &UnixStream) -> bool {
        loop {
            let message = match read_frame_with_fds_limited::<FromWorker>(stream, 0, MAX_FRAME) {
                Ok((message, _)) => message,
                Err(jms_proto::FrameError::Closed) => return false,
                Err(e) => {
                    warn!(error = %e, "bad message from the session worker");
                    return false;
                }
            };
            match message {
                FromWorker::Done => return true,
                FromWorker::Ask(ask) => {
                    let (answer, fd) = self.answer(ask);
                    let sent = self.channel.send(
                        &ToWorker::Answer(Box::new(answer)),
                        fd.as_ref().map(|f| f.as_fd()),
                    );
                    if !sent {
                        return false;
                    }
                }
                FromWorker::Register(register) => self.register(register),
                FromWorker::Resized { cols, rows } => {
                    if let Some(registered) = &self.registered {
                        registered.session.resize(cols, rows);
                    }
                }
                FromWorker::JoinInput(data) => match &self.joined {
                    Some((live, true)) => {
                        live.input(&self.user, &data);
                    }
                    _ => warn!("keys from a worker that may not type into a session: dropped"),
                },
            }
        }
    }

    fn policy(&self) -> Arc<jms_core::Policy> {
        self.daemon.current_policy()
    }

    fn granted(&self, asset: &str, account: &str) -> Option<Protocol> {
        self.resolved
            .iter()
            .find(|(a, b, _)| a == asset && b == account)
            .map(|t| t.2)
    }

    fn answer(&mut self, ask: Ask) -> (Answer, Option<OwnedFd>) {
        let answer = match ask {
            Ask::Resolve {
                account,
                asset,
                protocol,
                action,
            } => {
                let policy = self.policy();
                let spec = TargetSpec { account, asset };
                Answer::Grant(
                    resolve::resolve(&policy, &self.user, &spec, protocol, action, Utc::now())
                        .and_then(|resolved| {
                            self.within_ticket(&resolved.asset.name, &resolved.account)?;
                            Ok(resolved)
                        })
                        .map(|mut resolved| {
                            let target = (
                                resolved.asset.name.clone(),
                                resolved.account.clone(),
                                protocol,
                            );
                            if let Some(registered) = &self.registered {
                                registered
                                    .session
                                    .add_target(&target.0, &target.1, protocol);
                            }
                            if !self.resolved.contains(&target) {
                                self.resolved.push(target);
                            }
                            let filters = Filters::rules_for_session(
                                &policy,
                                &self.user,
                                &resolved.asset,
                                &resolved.account,
                            );
                            // The vault's secrets stay here (asked for
                            // with Ask::Credential when connecting).
                            resolved.asset.accounts.clear();
                            if let Login::Vault { credential, .. } = &mut resolved.login {
                                *credential = Default::default();
                            }
                            Grant { resolved, filters }
                        }),
                )
            }
            Ask::Credential { asset, account } => match self.granted(&asset, &account) {
                None => {
                    Answer::Refused(format!("{account}@{asset} was not granted to this session"))
                }
                Some(protocol) => {
                    let spec = TargetSpec {
                        account: Some(account),
                        asset,
                    };
                    let resolved = resolve::resolve(
                        &self.policy(),
                        &self.user,
                        &spec,
                        protocol,
                        Action::Connect,
                        Utc::now(),
                    );
                    Answer::Credential(match resolved {
                        Ok(resolved) => match resolved.login {
                            Login::Vault { credential, .. } => Some(credential),
                            _ => None,
                        },
                        Err(_) => None,
                    })
                }
            },
            Ask::Decide {
                asset,
                account,
                protocol,
                action,
            } => {
                if self.granted(&asset, &account).is_none() {
                    Answer::Refused(format!("{account}@{asset} was not granted to this session"))
                } else {
                    let query = Query {
                        user: &self.user,
                        asset: &asset,
                        account: Some(&account),
                        protocol: Some(protocol),
                        action,
                        at: Utc::now(),
                    };
                    Answer::Decision(match self.policy().decide(&query) {
                        Ok(Decision::Deny(reason)) => Err(reason),
                        _ => Ok(()),
                    })
                }
            }
            Ask::Folders => Answer::Folders(self.folders(|f| f.list())),
            Ask::Folder { name } => Answer::Folder(self.folders(|f| f.resolve(&name))),
            Ask::FolderCheck { folder, action } => {
                Answer::Decision(self.folders(|f| f.check(&folder, action)))
            }
            Ask::Share {
                session,
                write,
                ttl_secs,
                newline,
            } => Answer::Share(self.share(session, write, ttl_secs, &newline)),
            Ask::Join { .. } if self.ticket.is_some() => {
                Answer::Join(Err("a web session may not join another session".to_string()))
            }
            Ask::Join { code } => match self.join(&code) {
                Ok((joined, pipe)) => return (Answer::Join(Ok(joined)), Some(pipe)),
                Err(reason) => Answer::Join(Err(reason)),
            },
            Ask::JoinEnded => Answer::JoinEnded(self.leave()),
            Ask::Record(body) => {
                self.event(body);
                Answer::Recorded
            }
        };
        (answer, None)
    }

    fn folders<T>(&self, f: impl FnOnce(&dyn FolderDecisions) -> T) -> T {
        let daemon = self.daemon;
        let policy = move || daemon.current_policy();
        let folders = PolicyFolders {
            user: &self.user,
            policy: &policy,
        };
        match &self.ticket {
            None => f(&folders),
            Some(ticket) => f(&TicketFolders {
                inner: &folders,
                ticket,
            }),
        }
    }

    /// `Err` (the line for the engineer) when this session is a web
    /// ticket's and `account@asset` is not its target.
    fn within_ticket(&self, asset: &str, account: &str) -> Result<(), String> {
        match &self.ticket {
            Some(t) if t.asset != asset || t.account != account => Err(format!(
                "this web session may reach {}@{} only",
                t.account, t.asset
            )),
            _ => Ok(()),
        }
    }

    /// A worker's event, in this session's name.
    fn event(&mut self, mut body: EventBody) {
        match &mut body {
            EventBody::SessionStart { scope, .. }
            | EventBody::SessionEnd { scope, .. }
            | EventBody::Command { scope, .. }
            | EventBody::Transfer { scope, .. } => {
                scope.session = self.id.clone();
                scope.user = self.user.clone();
            }
            EventBody::SessionDenied { session, user, .. } => {
                *session = Some(self.id.clone());
                *user = self.user.clone();
            }
            // Written by the monitor itself.
            EventBody::Login { .. } | EventBody::Share { .. } | EventBody::JobStep { .. } => {
                warn!("a session worker sent an event only the monitor writes: dropped");
                return;
            }
        }
        match &body {
            EventBody::SessionStart { scope, .. } => self.started = Some(scope.clone()),
            EventBody::SessionEnd { reason, .. } => {
                self.ended = true;
                if let Some(registered) = self.registered.as_mut() {
                    registered.set_reason(reason.clone());
                }
            }
            _ => {}
        }
        spool::record(&self.daemon.config, body);
    }

    fn register(&mut self, register: Register) {
        if self.registered.is_some() {
            return;
        }
        let kind = match register.kind.as_str() {
            "shell" => "shell",
            "exec" => "exec",
            "sftp" => "sftp",
            "scp" => "scp",
            "rsync" => "rsync",
            _ => "other",
        };
        // The worker names its target; the monitor keeps it only if it
        // granted it to this session.
        let (asset, account) = match self.granted(&register.asset, &register.account) {
            Some(_) => (register.asset, register.account),
            None => (String::new(), String::new()),
        };
        let live = match LiveSession::new(
            &self.id,
            &self.user,
            &asset,
            &account,
            (register.cols, register.rows),
        ) {
            Ok(live) => live
                .of_kind(kind, register.protocol)
                .remote(Arc::clone(&self.channel) as Arc<dyn Remote>),
            Err(e) => {
                warn!(error = %e, "the session cannot be watched or ended from outside");
                return;
            }
        };
        for (asset, account, protocol) in &self.resolved {
            live.add_target(asset, account, *protocol);
        }
        self.registered = Some(self.daemon.live.register(live));
    }

    /// `share`: a code for one of this user's live sessions.
    fn share(
        &self,
        wanted: Option<String>,
        write: bool,
        ttl_secs: u64,
        newline: &str,
    ) -> Result<String, String> {
        let ttl = Duration::from_secs(ttl_secs.clamp(1, 24 * 3600));
        let mine: Vec<_> = self
            .daemon
            .live
            .of_user(&self.user)
            .into_iter()
            .filter(|s| matches!(s.kind, "shell" | "exec"))
            .collect();
        let chosen = match &wanted {
            None => mine.first().cloned(),
            Some(wanted) => {
                let matching: Vec<_> = mine
                    .iter()
                    .filter(|s| s.id.starts_with(wanted.as_str()))
                    .collect();
                match matching.as_slice() {
                    [one] => Some(Arc::clone(one)),
                    [] => None,
                    _ => return Err(format!("{wanted}: names more than one of your sessions")),
                }
            }
        };
        let Some(live) = chosen else {
            return Err(match &wanted {
                Some(wanted) => format!("{wanted}: no live session of yours on this bastion"),
                None => "you have no live session on this bastion to share".to_string(),
            });
        };
        share_granted(&self.policy(), &live)?;
        let Some(code) = share_codes::new_code() else {
            warn!(
                alarm = "random_unavailable",
                "no share code: the OS random source failed"
            );
            return Err("no share code could be made (the bastion's random source failed)".into());
        };
        self.daemon.live.add_code(
            &code,
            ShareCode {
                session: live.id.clone(),
                owner: self.user.clone(),
                write,
                expires: Instant::now() + ttl,
            },
        );
        info!(event = "share_created", shared = %live.id, mode = share_codes::mode(write), ttl = ?ttl);
        spool::record(
            &self.daemon.config,
            EventBody::Share {
                scope: share_codes::scope_of(&live),
                action: "create".into(),
                mode: share_codes::mode(write).into(),
                peer: None,
            },
        );
        let expires = (Utc::now() + chrono::Duration::from_std(ttl).unwrap_or_default())
            .with_timezone(&self.daemon.timezone)
            .format("%Y-%m-%d %H:%M:%S %Z");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "BASTION".into());
        let mut text = String::from("your live sessions:");
        text.push_str(newline);
        for s in &mine {
            let marker = if s.id == live.id { "*" } else { " " };
            text.push_str(&format!(
                " {marker} {}  {} as {}, for {}{newline}",
                s.id,
                s.asset,
                s.account,
                humantime::format_duration(Duration::from_secs(s.started.elapsed().as_secs()))
            ));
        }
        text.push_str(&format!(
            "share code: {code} ({}), valid until {expires} ({}){newline}\
             the other user joins with: ssh -t {host} join {code}{newline}",
            if write {
                "read-write: the joiner may type"
            } else {
                "read-only"
            },
            humantime::format_duration(ttl)
        ));
        Ok(text)
    }

    /// `join CODE`: the shared session's tap.
    fn join(&mut self, typed: &str) -> Result<(Joined, OwnedFd), String> {
        let registry = &self.daemon.live;
        // Counted before the code is looked at; a right code takes it back.
        if let Err(refusal) = registry.join_attempt(&self.user) {
            warn!(event = "share_join_refused", reason = %refusal);
            return Err(refusal);
        }
        let Some(code) = share_codes::normalize_code(typed) else {
            return Err("usage: ssh -t BASTION join CODE (the code `share` printed)".into());
        };
        let unknown = format!("{code}: no such share code, or it expired or was used");
        if registry.code(&code).is_none() {
            return Err(unknown);
        }
        registry.join_ok(&self.user);
        if !self.terminal {
            return Err("join needs a terminal: ssh -t BASTION join CODE".into());
        }
        // Used now: nobody else joins with it.
        let Some(shared) = registry.take_code(&code) else {
            return Err(unknown);
        };
        let Some(live) = registry.get(&shared.session) else {
            return Err(format!("{code}: the shared session has ended"));
        };
        share_granted(&self.policy(), &live)?;
        let Some(tap) = live.tap() else {
            return Err(format!("{code}: the shared session has ended"));
        };
        let write = shared.write;
        info!(event = "share_join", shared = %live.id, owner = %shared.owner, mode = share_codes::mode(write));
        spool::record(
            &self.daemon.config,
            EventBody::Share {
                scope: share_codes::scope_of(&live),
                action: "join".into(),
                mode: share_codes::mode(write).into(),
                peer: Some(self.user.clone()),
            },
        );
        live.notice(format!(
            "{} joined your session ({})",
            self.user,
            if write { "may type" } else { "watching" }
        ));
        let joined = Joined {
            session: live.id.clone(),
            owner: live.user.clone(),
            asset: live.asset.clone(),
            account: live.account.clone(),
            write,
        };
        self.joined = Some((live, write));
        Ok((joined, tap.pipe))
    }

    /// The joiner left (or her worker died): why the shared session ended,
    /// if it did.
    fn leave(&mut self) -> Option<String> {
        let (live, write) = self.joined.take()?;
        let ended = live.ended();
        if ended.is_none() {
            live.notice(format!("{} left your session", self.user));
        }
        info!(event = "share_leave", shared = %live.id, ended = ended.is_some());
        spool::record(
            &self.daemon.config,
            EventBody::Share {
                scope: share_codes::scope_of(&live),
                action: "leave".into(),
                mode: share_codes::mode(write).into(),
                peer: Some(self.user.clone()),
            },
        );
        ended
    }

    /// The worker is gone: when it died, its session ends here, with why.
    fn after_worker(&mut self, died: Option<String>, control: &UnixStream) {
        let Some(reason) = died else {
            drop(self.registered.take());
            return;
        };
        tracing::error!(event = "worker_died", reason = %reason, "the session's worker died; its session is ended");
        self.leave();
        if let Some(registered) = self.registered.as_mut() {
            registered.set_reason(Some(reason.clone()));
        }
        drop(self.registered.take());
        if !self.ended {
            match self.started.take() {
                Some(scope) => spool::record(
                    &self.daemon.config,
                    EventBody::SessionEnd {
                        scope,
                        exit_status: None,
                        reason: Some(reason.clone()),
                        duration_ms: self.began.elapsed().as_millis() as u64,
                        bytes_in: 0,
                        bytes_out: 0,
                        recording: None,
                        recording_truncated: false,
                        output: None,
                    },
                ),
                None => spool::record(
                    &self.daemon.config,
                    EventBody::SessionDenied {
                        session: Some(self.id.clone()),
                        user: self.user.clone(),
                        command_line: String::new(),
                        reason: reason.clone(),
                        client: None,
                    },
                ),
            }
        }
        let _ = write_frame(
            &mut &*control,
            &Response::SessionEnded {
                exit_status: None,
                message: Some(format!("the session ended: {reason}")),
            },
        );
    }
}

/// Whether the owner's grant for `live` allows sharing now; `Err` is why not.
fn share_granted(policy: &jms_core::Policy, live: &LiveSession) -> Result<(), String> {
    let query = Query {
        user: &live.user,
        asset: &live.asset,
        account: Some(&live.account),
        protocol: Some(Protocol::Ssh),
        action: Action::Share,
        at: Utc::now(),
    };
    match policy.decide(&query) {
        Ok(Decision::Allow) => Ok(()),
        Ok(Decision::Deny(reason)) => Err(format!(
            "{}: sharing this session is not granted ({reason})",
            live.asset
        )),
        Err(e) => Err(format!(
            "{}: sharing this session is not granted ({e})",
            live.asset
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allocation_failure_on_a_workers_stderr_is_noticed() {
        let flag = AtomicBool::new(false);
        forward_stderr(&b"INFO session: started\nmore\n"[..], &flag);
        assert!(!flag.load(Ordering::SeqCst));
        forward_stderr(
            &b"INFO session: started\nmemory allocation of 1048576 bytes failed\n"[..],
            &flag,
        );
        assert!(flag.load(Ordering::SeqCst));
    }
}
