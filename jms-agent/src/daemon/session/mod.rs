//! The session worker (`jms-session`, one unprivileged process per
//! session): one engineer's connection to one target, from the request
//! (with her stdio passed by SCM_RIGHTS) to the end, relayed, recorded and
//! reported to the monitor (docs/sessions.md is the contract). It depends
//! on the typed messages ([`crate::wire`]) and the shared types beside it
//! (`daemon::{config, events, target, live_session}`), never on the
//! monitor's state (`daemon::monitor`; `tests/layout.rs`).
//!
//! - [`worker_main`]: the worker's start; [`serve`]: reads `command_line`
//!   (the agent's reading is never trusted) and dispatches: the sftp
//!   subsystem, legacy scp / rsync transfers, or `[account@]asset
//!   [command]`.
//! - `link`: the worker's channel to the monitor (asks for grant
//!   decisions, credentials, folder decisions; events; the monitor's
//!   orders).
//! - `connect`: the OpenSSH client to the target (host keys, askpass).
//! - `relay`: the poll loop; `recording`: asciicast v2; `commands`: line
//!   reconstruction and command filters; `screen`, `stdin_check`.
//! - `transfer` (legacy scp, rsync) and `sftp` (the SFTP proxy) read their
//!   protocols; this module gives them targets ([`SshUpstream`], an exec
//!   through [`connect::open`]) and the spool, through the monitor
//!   ([`SpoolTransferLog`]).
//! - `share`: `share [SESSION] [--write]` and `join CODE` (reserved words
//!   in `command_line`); target sessions are registered with the monitor
//!   as live sessions (`crate::daemon::live_session`) so they can be
//!   watched, joined and ended.
//! - `job`: an account job (push, verify, rotate) in a worker of its own
//!   (`jms-job`), confined like a session's worker ([`confine`]).

pub mod commands;
pub mod connect;
pub mod job;
pub mod link;
pub mod recording;
pub mod relay;
pub mod screen;
pub mod sftp;
pub mod share;
pub mod stdin_check;
pub mod transfer;

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jms_core::model::{Action, ExecStdin, Protocol};
use jms_proto::{Response, SessionRequest};
use tracing::{info, info_span, warn};

use crate::daemon::events::{self, EventBody, Scope};
use crate::daemon::live_session::LiveSession;
use crate::daemon::target::{Credential, Login, Resolved, Target, TargetSpec};
use crate::wire::{Answer, Ask, SessionSettings};
use commands::{Filters, LineTracker, Verdict};
use connect::{Mode, Stdin};
use link::Link;
use recording::{Asciicast, ExecRecording, NoRecording, Recorder, SessionMeta};

/// What `command_line` asks for (contract, "command_line, as the daemon
/// reads it").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wanted {
    /// The sftp subsystem.
    Sftp,
    /// Legacy `scp -t|-f …` or `rsync --server …`: the whole command line.
    Transfer(String),
    /// `[account@]asset`, and the command to run (none: a shell).
    Target {
        target: String,
        command: Option<String>,
    },
    /// `share [SESSION] [--write]`: a share code for a live session.
    Share(Result<share::ShareArgs, String>),
    /// `join CODE`: watch (or type into) a shared session.
    Join(String),
    /// Nothing at all.
    Nothing,
}

/// Reads `command_line`.
pub fn classify(command_line: &str) -> Wanted {
    let line = command_line.trim_start();
    if line.trim().is_empty() {
        return Wanted::Nothing;
    }
    if sftp::is_subsystem_command(line) {
        return Wanted::Sftp;
    }
    if transfer::parse(line).is_some() {
        return Wanted::Transfer(line.to_string());
    }
    if let Some(wanted) = share::classify(line) {
        return wanted;
    }
    let (target, command) = match line.split_once(' ') {
        Some((target, command)) => (target, Some(command.trim())),
        None => (line.trim_end(), None),
    };
    Wanted::Target {
        target: target.to_string(),
        command: command.filter(|c| !c.is_empty()).map(str::to_string),
    }
}

/// What the agent reads when the monitor died before an event was spooled.
pub const NOT_RECORDED: &str =
    "the bastion daemon stopped before this was audited; nothing was done";

/// Sends `response` to the agent only once `event` is in the spool: the
/// worker can outlive a monitor killed mid-request, and an engineer is
/// never told of a decision the audit does not hold. Without the spool
/// she gets an error instead. True when `response` went out.
pub fn answer_once_recorded(
    link: &Link,
    control: &UnixStream,
    event: EventBody,
    response: &Response,
) -> bool {
    if link.event(event) {
        relay::send(control, response)
    } else {
        relay::send(
            control,
            &Response::Error {
                message: NOT_RECORDED.into(),
            },
        );
        false
    }
}

/// One session being served in its worker: the caller, her request and
/// descriptors, the settings it began with, the monitor's link and the
/// control connection.
pub struct Session<'d> {
    /// The monitor: grant decisions, credentials, the spool, live orders.
    pub link: &'d Link,
    pub settings: SessionSettings,
    pub id: String,
    /// The jms user (from the caller's uid).
    pub user: String,
    pub request: SessionRequest,
    /// The agent's connection: responses out, Resize / Credentials in.
    pub control: UnixStream,
    /// stdin, stdout, stderr as passed (taken as they are used).
    pub fds: Vec<Option<OwnedFd>>,
    pub started: Instant,
}

impl Session<'_> {
    /// Sends one response to the agent; false when it is gone.
    pub fn send(&self, response: &Response) -> bool {
        relay::send(&self.control, response)
    }

    /// Refuses with one line, logs and spools the refusal.
    pub fn deny(&self, reason: &str) {
        info!(event = "session_denied", session = %self.id, user = %self.user, command_line = %self.request.command_line, reason);
        let denial = EventBody::SessionDenied {
            session: Some(self.id.clone()),
            user: self.user.clone(),
            command_line: self.request.command_line.clone(),
            reason: reason.to_string(),
            client: self.request.client.clone(),
        };
        answer_once_recorded(
            self.link,
            &self.control,
            denial,
            &Response::Denied {
                reason: reason.to_string(),
            },
        );
    }

    /// Spools one event (through the monitor); false when it could not be.
    pub fn record(&self, body: EventBody) -> bool {
        self.link.event(body)
    }

    /// Connection settings.
    pub fn connect_settings(&self) -> connect::Settings {
        connect_settings(&self.settings)
    }

    /// The audit scope of a resolved target logged in as `username`.
    pub fn scope(&self, resolved: &Resolved, username: Option<&str>) -> Scope {
        Scope {
            session: self.id.clone(),
            user: self.user.clone(),
            asset: resolved.asset.name.clone(),
            account: resolved.account.clone(),
            username: username.map(str::to_string),
        }
    }

    /// Resolves `spec` for this user, for `protocol` and `action`, now
    /// (the monitor decides), with the filters for the target.
    pub fn resolve(
        &self,
        spec: &TargetSpec,
        protocol: Protocol,
        action: Action,
    ) -> Result<(Resolved, Filters), String> {
        ask_grant(self.link, spec, protocol, action)
            .map(|g| (g.resolved, Filters::from_rules(&g.filters)))
    }

    /// Takes passed descriptor `i` (0 stdin, 1 stdout, 2 stderr).
    pub fn take_fd(&mut self, i: usize) -> Option<OwnedFd> {
        self.fds.get_mut(i).and_then(Option::take)
    }

    /// The target of `resolved`, asking the engineer for what the vault
    /// does not hold; `Err` is the line for her.
    pub fn login_target(&self, resolved: &Resolved) -> Result<Target, String> {
        if let Some(target) = vault_target(self.link, resolved)? {
            return Ok(target);
        }
        let Login::Ask { username } = &resolved.login else {
            return Err(format!("{}: no credential", resolved.asset.name));
        };
        if !self.send(&Response::NeedCredentials {
            username: username.is_none(),
        }) {
            return Err("the agent went away".into());
        }
        let timeout = Duration::from_secs(self.settings.credentials_timeout_secs);
        let Some((typed_user, password)) =
            relay::await_credentials(&self.control, timeout, &mut |_, _| {})
        else {
            return Err(format!(
                "{}: no credentials were given",
                resolved.asset.name
            ));
        };
        let username = match (username, typed_user) {
            (Some(known), _) => known.clone(),
            (None, Some(typed)) if connect::valid_username(typed.trim()) => {
                typed.trim().to_string()
            }
            (None, _) => {
                return Err(format!(
                    "{}: a valid username is needed",
                    resolved.asset.name
                ))
            }
        };
        Ok(resolved.target(username, Credential::Password(password)))
    }

    /// Registers the session as live with the monitor (watchable,
    /// terminable, joinable for terminal sessions).
    pub fn go_live(
        &self,
        kind: &'static str,
        protocol: Protocol,
        asset: &str,
        account: &str,
        size: (u16, u16),
    ) -> Option<Arc<LiveSession>> {
        let live = LiveSession::new(&self.id, &self.user, asset, account, size)
            .map_err(|e| warn!(error = %e, "the session cannot be watched or ended from outside"))
            .ok()?;
        let live = Arc::new(live.of_kind(kind, protocol));
        self.link.register(
            crate::wire::Register {
                kind: kind.to_string(),
                protocol,
                asset: asset.to_string(),
                account: account.to_string(),
                cols: size.0,
                rows: size.1,
            },
            Arc::clone(&live),
        );
        Some(live)
    }
}

/// The connection settings of a worker.
pub fn connect_settings(settings: &SessionSettings) -> connect::Settings {
    connect::Settings {
        ssh: settings.ssh.clone(),
        runtime_dir: settings.runtime_dir.clone(),
        known_hosts_dir: settings.known_hosts_dir.clone(),
        connect_timeout: Duration::from_secs(settings.connect_timeout_secs),
        login_timeout: Duration::from_secs(settings.login_timeout_secs),
        agentd_exe: std::env::current_exe()
            .unwrap_or_else(|_| std::path::PathBuf::from("/usr/sbin/jms-agentd")),
        // Checked when the monitor loaded its configuration.
        ciphers: crate::daemon::config::cipher_option(
            &settings.target_ciphers,
            crate::daemon::config::cpu_has_aes(),
        )
        .unwrap_or_default(),
    }
}

/// The monitor's grant decision for `spec`.
fn ask_grant(
    link: &Link,
    spec: &TargetSpec,
    protocol: Protocol,
    action: Action,
) -> Result<crate::wire::Grant, String> {
    match link.ask(Ask::Resolve {
        account: spec.account.clone(),
        asset: spec.asset.clone(),
        protocol,
        action,
    }) {
        Some(Answer::Grant(grant)) => grant,
        _ => Err("jms: the bastion daemon did not answer".into()),
    }
}

/// The target of `resolved` when it needs nothing typed, with the vaulted
/// credential the monitor gives for it (`None` for [`Login::Ask`]).
pub fn vault_target(link: &Link, resolved: &Resolved) -> Result<Option<Target>, String> {
    match &resolved.login {
        Login::Vault { username, .. } => match link.ask(Ask::Credential {
            asset: resolved.asset.name.clone(),
            account: resolved.account.clone(),
        }) {
            Some(Answer::Credential(Some(credential))) => {
                Ok(Some(resolved.target(username.clone(), credential)))
            }
            _ => Err(format!(
                "{}@{}: no credential",
                resolved.account, resolved.asset.name
            )),
        },
        Login::Anon { .. } => Ok(resolved.vault_target()),
        Login::Ask { .. } => Ok(None),
    }
}

/// Debug builds only, for the e2e test of a worker over its memory limit:
/// SIGUSR1 makes the worker ask for one allocation the size of its whole
/// address-space limit, as a bug would. The allocator fails, says so on
/// stderr and aborts; the monitor ends the session with that reason.
/// Release builds have no such hook (SIGUSR1 ends a worker as usual).
#[cfg(debug_assertions)]
fn allocate_past_the_limit_on_sigusr1() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let asked = Arc::new(AtomicBool::new(false));
    if signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&asked)).is_err() {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("test-allocation".into())
        .spawn(move || loop {
            if asked.load(Ordering::SeqCst) {
                let (limit, _) =
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS)
                        .unwrap_or((u64::MAX, u64::MAX));
                let size = usize::try_from(limit)
                    .unwrap_or(usize::MAX / 2)
                    .min(isize::MAX as usize);
                std::hint::black_box(Vec::<u8>::with_capacity(size));
            }
            std::thread::sleep(Duration::from_millis(20));
        });
}

/// A session worker: jms-agentd run as `jms-session AS NOFILE CPU CLASS` by the
/// monitor (`crate::daemon::monitor::workers`), its stdin a socket to the monitor.
/// Its first acts, before reading anything: no new privileges, then its
/// resource limits; then it serves the one session in the start message
/// and exits.
/// Confines this worker process (a session's or a job's): no new
/// privileges, the resource limits the monitor passed (argv 1..3), the
/// idle CPU class when argv 4 says so.
pub fn confine(name: &str) -> Result<(), String> {
    if let Err(e) = nix::sys::prctl::set_no_new_privs() {
        return Err(format!("{name}: PR_SET_NO_NEW_PRIVS: {e}"));
    }
    let limit = |i: usize| -> u64 {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0)
    };
    use nix::sys::resource::{setrlimit, Resource};
    for (resource, value) in [
        (Resource::RLIMIT_AS, limit(1)),
        (Resource::RLIMIT_NOFILE, limit(2)),
        (Resource::RLIMIT_CPU, limit(3)),
    ] {
        if value > 0 {
            if let Err(e) = setrlimit(resource, value, value) {
                return Err(format!("{name}: setrlimit {resource:?}: {e}"));
            }
        }
    }
    if std::env::args().nth(4).as_deref() == Some("idle") {
        // Sessions take the CPU nothing else wants: a login, or the
        // monitor answering one, preempts any number of busy sessions.
        // The target ssh inherits the class.
        let param = nix::libc::sched_param { sched_priority: 0 };
        // SAFETY: sched_setscheduler reads `param` only; pid 0 is this process.
        if unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &param) } != 0 {
            // The session still runs, at the normal class (a sandbox that
            // forbids the call): said in the monitor's log.
            eprintln!(
                "{name}: SCHED_IDLE refused ({}): this session runs at the normal class",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

pub fn worker_main() -> std::process::ExitCode {
    use std::process::ExitCode;
    // Named in ps and /proc (exec of /proc/self/exe would say `exe`).
    let _ = nix::sys::prctl::set_name(c"jms-session");
    if let Err(e) = confine("jms-session") {
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    #[cfg(debug_assertions)]
    allocate_past_the_limit_on_sigusr1();
    let stream = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("jms-session: stdin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (start, mut fds) = match jms_proto::read_frame_with_fds_limited::<crate::wire::Start>(
        &stream,
        crate::wire::START_FDS,
        jms_proto::MAX_RESPONSE_FRAME,
    ) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("jms-session: no start message: {e}");
            return ExitCode::FAILURE;
        }
    };
    if fds.len() != crate::wire::START_FDS {
        eprintln!("jms-session: the start message lacks descriptors");
        return ExitCode::FAILURE;
    }
    let engineer: Vec<Option<OwnedFd>> = fds.split_off(1).into_iter().map(Some).collect();
    let control = UnixStream::from(fds.remove(0));
    let link = match Link::new(stream, start.settings.limits) {
        Ok(link) => link,
        Err(e) => {
            eprintln!("jms-session: {e}");
            return ExitCode::FAILURE;
        }
    };
    let span = info_span!("session", id = %start.session, user = %start.user);
    let _entered = span.enter();
    serve(Session {
        link: &link,
        settings: start.settings,
        id: start.session,
        user: start.user,
        request: start.request,
        control,
        fds: engineer,
        started: Instant::now(),
    });
    link.send(&crate::wire::FromWorker::Done);
    ExitCode::SUCCESS
}

/// Serves one session in its worker.
pub fn serve(mut session: Session<'_>) {
    let _ = session.control.set_read_timeout(None);
    let _ = session
        .control
        .set_write_timeout(Some(Duration::from_secs(10)));
    let wanted = classify(&session.request.command_line);
    let session = &mut session;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match wanted {
        Wanted::Sftp => serve_sftp(session),
        Wanted::Transfer(line) => serve_transfer(session, &line),
        Wanted::Target { target, command } => serve_target(session, &target, command),
        Wanted::Share(args) => share::serve_share(session, &args),
        Wanted::Join(code) => share::serve_join(session, &code),
        Wanted::Nothing => session.deny("no target given: ssh -t bastion ASSET, or ACCOUNT@ASSET"),
    }));
    if result.is_err() {
        warn!("session failed with an internal error");
        session.send(&Response::SessionEnded {
            exit_status: None,
            message: Some("internal error; the session was ended".into()),
        });
    }
}

/// Transfer records of this session, to the spool (through the monitor).
pub struct SpoolTransferLog<'a> {
    link: &'a Link,
    session: String,
    user: String,
}

impl transfer::TransferLog for SpoolTransferLog<'_> {
    fn record(&self, event: transfer::TransferEvent) {
        info!(event = "transfer", asset = %event.asset, account = %event.account, via = event.via, operation = event.operation.as_str(), path = %event.path, size = event.size, result = %event.result);
        self.link.event(EventBody::Transfer {
            scope: Scope {
                session: self.session.clone(),
                user: self.user.clone(),
                asset: event.asset,
                account: event.account,
                username: None,
            },
            via: event.via.to_string(),
            operation: event.operation.as_str().to_string(),
            path: event.path,
            to: event.to,
            size: Some(event.size),
            result: event.result.to_string(),
        });
    }
}

/// SFTP sessions on targets for the SFTP proxy: `ssh -s … sftp` as the
/// folder's account, with its vaulted credential.
pub struct SshUpstream<'a> {
    link: &'a Link,
    session: String,
    settings: connect::Settings,
    opened: std::sync::atomic::AtomicUsize,
}

impl sftp::Upstream for SshUpstream<'_> {
    fn open(
        &self,
        asset: &str,
        account: &str,
    ) -> Result<sftp::UpstreamStreams, sftp::UpstreamError> {
        let refuse = |message: String| sftp::UpstreamError(message);
        let spec = TargetSpec {
            account: Some(account.to_string()),
            asset: asset.to_string(),
        };
        // The monitor checks the target again when the policy changes (a
        // revoked grant ends the session).
        let resolved = ask_grant(self.link, &spec, Protocol::Sftp, Action::Connect)
            .map_err(refuse)?
            .resolved;
        let target = vault_target(self.link, &resolved)
            .map_err(refuse)?
            .ok_or_else(|| {
                refuse(format!(
                "{account}@{asset}: this account needs typed credentials, which SFTP cannot carry"
            ))
            })?;
        let n = self
            .opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut conn = connect::open(
            &self.settings,
            &format!("{}-sftp{n}", self.session),
            &target,
            Mode::Subsystem {
                name: "sftp".into(),
            },
            Stdin::Pipe,
        )
        .map_err(|e| refuse(e.to_string()))?;
        conn.wait_ready().map_err(|e| refuse(e.to_string()))?;
        let (writer, reader, errors) = conn
            .take_blocking_pipes()
            .ok_or_else(|| refuse(format!("{asset}: no SFTP stream")))?;
        // The target's stderr (sftp-server's complaints) is drained, never shown.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::fs::File::from(errors), &mut std::io::sink());
        });
        Ok(sftp::UpstreamStreams {
            writer: Box::new(std::fs::File::from(writer)),
            reader: Box::new(std::fs::File::from(reader)),
            guard: Box::new(conn),
        })
    }
}

/// The sftp subsystem: the SFTP proxy on the engineer's stdin/stdout.
fn serve_sftp(session: &mut Session<'_>) {
    let (Some(input), Some(output)) = (session.take_fd(0), session.take_fd(1)) else {
        return session.deny("the agent must pass stdin and stdout");
    };
    let scope = Scope {
        session: session.id.clone(),
        user: session.user.clone(),
        asset: String::new(),
        account: String::new(),
        username: None,
    };
    info!(event = "session_start", kind = "sftp");
    session.record(EventBody::SessionStart {
        scope: scope.clone(),
        kind: "sftp".into(),
        protocol: "sftp".into(),
        client: session.request.client.clone(),
        command: None,
        recording: None,
    });
    session.send(&Response::SessionStarted {
        session_id: session.id.clone(),
    });
    let link = session.link;
    let upstream = SshUpstream {
        link,
        session: session.id.clone(),
        settings: session.connect_settings(),
        opened: Default::default(),
    };
    let log = SpoolTransferLog {
        link,
        session: session.id.clone(),
        user: session.user.clone(),
    };
    let folders = MonitorFolders { link };
    let ctx = sftp::SftpContext {
        user: &session.user,
        folders: &folders,
        upstream: &upstream,
        log: &log,
    };
    // Live like the others: an administrator can end it, a revoked grant
    // ends it, and the idle timeout and maximum length apply.
    let registered = session.go_live("sftp", Protocol::Sftp, "", "", (80, 24));
    let ending = sftp::Ending {
        live: registered.as_deref(),
        limits: link.limits(),
    };
    let result = sftp::serve_watched(&ctx, input, output, ending);
    let (stats, reason, message) = match result {
        Ok(stats) => (stats, None, None),
        Err(sftp::SftpError::Ended(why, stats)) => (stats, Some(why.clone()), Some(why)),
        Err(e) => (sftp::SftpStats::default(), Some(e.to_string()), None),
    };
    if let Some(registered) = &registered {
        registered.close(reason.clone());
    }
    drop(registered);
    info!(
        event = "session_end",
        kind = "sftp",
        uploaded = stats.bytes_uploaded,
        downloaded = stats.bytes_downloaded,
        reason = reason.as_deref().unwrap_or("")
    );
    session.record(EventBody::SessionEnd {
        scope,
        exit_status: Some(0),
        reason: reason.clone(),
        duration_ms: session.started.elapsed().as_millis() as u64,
        bytes_in: stats.bytes_uploaded,
        bytes_out: stats.bytes_downloaded,
        recording: None,
        recording_truncated: false,
        output: None,
    });
    session.send(&Response::SessionEnded {
        exit_status: Some(if reason.is_none() { 0 } else { 1 }),
        message,
    });
}

/// Legacy scp and rsync: the rewritten command runs on the target as an
/// exec, the engineer's stdin given to ssh, stdout and stderr relayed (not
/// recorded: transfers are logged as transfers).
fn serve_transfer(session: &mut Session<'_>, command_line: &str) {
    let transfer = match transfer::parse(command_line) {
        Some(Ok(transfer)) => transfer,
        Some(Err(e)) => return session.deny(&e.to_string()),
        None => return session.deny("not a file transfer"),
    };
    let spec = TargetSpec {
        account: transfer.target.account.clone(),
        asset: transfer.target.asset.clone(),
    };
    let log = SpoolTransferLog {
        link: session.link,
        session: session.id.clone(),
        user: session.user.clone(),
    };
    let record = |account: &str, bytes: u64, result: transfer::TransferResult| {
        for event in transfer.events(account, bytes, result) {
            transfer::TransferLog::record(&log, event);
        }
    };
    let resolved = match session.resolve(&spec, transfer.protocol(), transfer.required_action()) {
        Ok((resolved, _)) => resolved,
        Err(reason) => return session.deny(&reason),
    };
    for action in transfer.required_actions() {
        let decision = session.link.ask(Ask::Decide {
            asset: resolved.asset.name.clone(),
            account: resolved.account.clone(),
            protocol: transfer.protocol(),
            action,
        });
        let refusal = match decision {
            Some(Answer::Decision(Ok(()))) => None,
            Some(Answer::Decision(Err(reason))) => Some(reason),
            _ => Some("the bastion daemon did not answer".to_string()),
        };
        if let Some(reason) = refusal {
            record(
                &resolved.account,
                0,
                transfer::TransferResult::Denied(reason.clone()),
            );
            return session.deny(&format!("{}: {reason}", resolved.asset.name));
        }
    }
    let target = match vault_target(session.link, &resolved) {
        Ok(target) => target,
        Err(reason) => return session.deny(&reason),
    };
    let Some(target) = target else {
        return session.deny(&format!(
            "{}@{}: this account needs typed credentials, which file transfers cannot carry",
            resolved.account, resolved.asset.name
        ));
    };
    let scope = session.scope(&resolved, Some(&target.username));
    let stdin = match session.take_fd(0) {
        Some(fd) => Stdin::Fd(fd),
        None => Stdin::Null,
    };
    let conn = match connect::open(
        &session.connect_settings(),
        &session.id,
        &target,
        Mode::Exec {
            command: transfer.remote_command.clone(),
            pty: None,
        },
        stdin,
    ) {
        Ok(conn) => conn,
        Err(e) => {
            record(
                &resolved.account,
                0,
                transfer::TransferResult::Failed(e.to_string()),
            );
            return session.deny(&e.to_string());
        }
    };
    let kind = transfer.tool.as_str();
    // Live: an administrator can end it, a revoked grant ends it.
    let registered = session.go_live(
        kind,
        transfer.protocol(),
        &resolved.asset.name,
        &resolved.account,
        (80, 24),
    );
    let mut events = TargetEvents {
        session,
        scope: scope.clone(),
        kind,
        command: Some(transfer.remote_command.clone()),
        recording: None,
        ready_at: None,
        live: registered.clone(),
    };
    let (Some(output), Some(errors)) = (session.fds[1].as_ref(), session.fds[2].as_ref()) else {
        return session.deny("the agent must pass stdout and stderr");
    };
    let outcome = relay::relay_pipes(
        conn,
        output.as_fd(),
        errors.as_fd(),
        &session.control,
        &mut NoRecording,
        &mut events,
        None,
    );
    let ready_at = events.ready_at;
    // Ended from outside (a limit, an administrator, a revoked grant) or
    // failed.
    let error_line = outcome
        .limit
        .clone()
        .or_else(|| outcome.ended.error.as_ref().map(|e| e.to_string()));
    if let Some(registered) = &registered {
        registered.close(error_line.clone());
    }
    drop(registered);
    let result = match (&error_line, outcome.ended.exit_status) {
        (Some(e), _) => transfer::TransferResult::Failed(e.clone()),
        (None, Some(0)) => transfer::TransferResult::Ok,
        (None, status) => transfer::TransferResult::Failed(format!(
            "{} exited with {}",
            kind,
            status
                .map(|s| s.to_string())
                .unwrap_or_else(|| "a signal".into())
        )),
    };
    // Uploads go straight from the engineer to ssh: their size is not seen
    // here; downloads count what came back.
    let bytes = match transfer.direction {
        transfer::Direction::Download => outcome.bytes_out,
        transfer::Direction::Upload => 0,
    };
    record(&resolved.account, bytes, result);
    if !outcome.ready {
        let reason =
            error_line.unwrap_or_else(|| format!("{}: the connection failed", resolved.asset.name));
        return session.deny(&reason);
    }
    session.record(EventBody::SessionEnd {
        scope,
        exit_status: outcome.ended.exit_status,
        reason: error_line.clone(),
        duration_ms: ready_at
            .map(|t| t.elapsed().as_millis() as u64)
            .unwrap_or(0),
        bytes_in: outcome.bytes_in,
        bytes_out: outcome.bytes_out,
        recording: None,
        recording_truncated: false,
        output: None,
    });
    session.send(&Response::SessionEnded {
        exit_status: outcome.ended.exit_status,
        message: error_line,
    });
}

/// Relay hooks of a target session: SessionStarted, spool, command log.
struct TargetEvents<'s, 'd> {
    session: &'s Session<'d>,
    scope: Scope,
    kind: &'static str,
    command: Option<String>,
    recording: Option<String>,
    ready_at: Option<Instant>,
    live: Option<Arc<crate::daemon::live_session::LiveSession>>,
}

impl relay::Events for TargetEvents<'_, '_> {
    fn ready(&mut self) {
        if self.ready_at.is_some() {
            return;
        }
        self.ready_at = Some(Instant::now());
        info!(event = "session_start", asset = %self.scope.asset, account = %self.scope.account, kind = self.kind);
        self.session.record(EventBody::SessionStart {
            scope: self.scope.clone(),
            kind: self.kind.to_string(),
            protocol: "ssh".into(),
            client: self.session.request.client.clone(),
            command: self.command.clone(),
            recording: self.recording.clone(),
        });
        self.session.send(&Response::SessionStarted {
            session_id: self.session.id.clone(),
        });
    }

    fn command(&mut self, command: &str, verdict: &Verdict) {
        self.command_by(command, verdict, None);
    }

    fn command_by(&mut self, command: &str, verdict: &Verdict, typed_by: Option<&str>) {
        log_command_by(
            self.session,
            &self.scope,
            command,
            "interactive",
            verdict,
            typed_by,
        );
    }

    fn stdin_command(&mut self, command: &str, verdict: &Verdict) {
        log_command(self.session, &self.scope, command, "stdin", verdict);
    }

    fn limits(&self) -> relay::Limits {
        self.session.link.limits()
    }

    fn live(&self) -> Option<&crate::daemon::live_session::LiveSession> {
        self.live.as_deref()
    }

    fn resized(&mut self, cols: u16, rows: u16) {
        if let Some(live) = &self.live {
            live.resize(cols, rows);
            self.session.link.resized(cols, rows);
        }
    }
}

fn log_command(session: &Session<'_>, scope: &Scope, command: &str, kind: &str, verdict: &Verdict) {
    log_command_by(session, scope, command, kind, verdict, None);
}

/// Logs and spools a decided command; `typed_by` names a joiner who typed it.
fn log_command_by(
    session: &Session<'_>,
    scope: &Scope,
    command: &str,
    kind: &str,
    verdict: &Verdict,
    typed_by: Option<&str>,
) {
    info!(event = "command", asset = %scope.asset, account = %scope.account, command = %events::bounded_text(command), decision = verdict.decision(), filter = verdict.filter().unwrap_or_default(), typed_by = typed_by.unwrap_or_default());
    session.record(EventBody::Command {
        scope: scope.clone(),
        command: command.to_string(),
        kind: kind.to_string(),
        decision: verdict.decision().to_string(),
        filter: verdict.filter(),
        typed_by: typed_by.map(str::to_string),
    });
}

/// `[account@]asset [command]`: a shell or an exec on the target.
fn serve_target(session: &mut Session<'_>, target: &str, command: Option<String>) {
    let Some(spec) = TargetSpec::parse(target) else {
        session.deny(&format!("no such asset: {target}"));
        return;
    };
    let (resolved, filters) = match session.resolve(&spec, Protocol::Ssh, Action::Connect) {
        Ok(resolved) => resolved,
        Err(reason) => return session.deny(&reason),
    };
    let asset = resolved.asset.name.clone();
    let pty = session.request.pty.clone();
    if command.is_none() && pty.is_none() {
        return session.deny(&format!(
            "{asset}: an interactive session needs a terminal (ssh -t)"
        ));
    }
    let effective = session.settings.clone();
    let filters = filters.with_default(effective.command_filter_default);
    if let Some(command) = &command {
        let verdict = filters.check_exec(command);
        let scope = session.scope(&resolved, None);
        log_command(session, &scope, command, "exec", &verdict);
        if let Verdict::Deny { filter } = verdict {
            return session.deny(&format!("{asset}: command refused by filter {filter}"));
        }
    }
    // An exec without a terminal whose command reads commands from its
    // input: that input is checked line by line, or the exec refused.
    let stdin_mode = match &command {
        Some(command)
            if pty.is_none()
                && stdin_check::reads_commands(command, &effective.stdin_interpreters) =>
        {
            effective.exec_stdin
        }
        _ => ExecStdin::Pass,
    };
    if stdin_mode == ExecStdin::Refuse {
        return session.deny(&format!(
            "{asset}: commands piped into a shell or interpreter are refused here (use ssh -t for a shell)"
        ));
    }
    let target = match session.login_target(&resolved) {
        Ok(target) => target,
        Err(reason) => return session.deny(&reason),
    };
    let scope = session.scope(&resolved, Some(&target.username));
    let (term, cols, rows) = match &pty {
        Some(p) => (p.term.clone(), p.cols, p.rows),
        None => ("xterm".to_string(), 80, 24),
    };
    let mode = match (&command, &pty) {
        (None, _) => Mode::Shell {
            term: term.clone(),
            cols,
            rows,
        },
        (Some(command), pty) => Mode::Exec {
            command: command.clone(),
            pty: pty.as_ref().map(|p| (p.term.clone(), p.cols, p.rows)),
        },
    };
    let stdin = match (&mode, pty.is_some()) {
        // Read by the relay, forwarded line by line.
        (Mode::Exec { .. }, false) if stdin_mode == ExecStdin::Check => Stdin::Pipe,
        (Mode::Exec { .. }, false) => match session.take_fd(0) {
            Some(fd) => Stdin::Fd(fd),
            None => Stdin::Null,
        },
        _ => Stdin::Null,
    };
    let settings = session.connect_settings();
    let conn = match connect::open(&settings, &session.id, &target, mode, stdin) {
        Ok(conn) => conn,
        Err(e) => {
            warn!(error = %e, "target connection failed to start");
            return session.deny(&e.to_string());
        }
    };
    let recording_name = format!("{}.cast", session.id);
    let meta = SessionMeta {
        user: session.user.clone(),
        asset: asset.clone(),
        account: resolved.account.clone(),
        session: session.id.clone(),
    };
    let mut cast: Box<dyn Recorder> = match Asciicast::create(
        &effective.recordings_dir,
        &recording_name,
        &meta,
        (cols, rows),
        &term,
        effective.recording_cap_bytes,
        effective.record_input,
    ) {
        Ok(cast) => Box::new(cast),
        Err(e) if effective.audit_on_failure == jms_core::model::AuditOnFailure::Refuse => {
            tracing::error!(alarm = "recording_unavailable", error = %e, "the session is refused (audit.on_failure = refuse)");
            return session.deny(
                "sessions are refused: the recording cannot be written (audit.on_failure = refuse); tell an administrator",
            );
        }
        Err(e) => {
            warn!(alarm = "recording_unavailable", error = %e, "the session goes on unrecorded");
            Box::new(NoRecording)
        }
    };
    let kind = if command.is_some() { "exec" } else { "shell" };
    // Watchable, joinable and terminable while it runs.
    let registered = session.go_live(kind, Protocol::Ssh, &asset, &resolved.account, (cols, rows));
    if effective.audit_on_failure == jms_core::model::AuditOnFailure::Refuse {
        // A recording that stops ends the session (docs/sessions.md).
        if let Some(live) = registered.clone() {
            cast.on_stop(Box::new(move |line| live.end(line)));
        }
    }
    let mut events = TargetEvents {
        session,
        scope: scope.clone(),
        kind,
        command: command.clone(),
        recording: Some(recording_name.clone()),
        ready_at: None,
        live: registered.clone(),
    };
    let mut digest = None;
    let outcome = match &conn.io {
        connect::Io::Pty { .. } => {
            let (Some(input), Some(output)) = (session.fds[0].as_ref(), session.fds[1].as_ref())
            else {
                return session.deny("the agent must pass its terminal");
            };
            // A shell, or an exec on a terminal (`ssh -t bastion 'web01
            // bash'`): what is typed is a command line either way.
            let mut tracker = LineTracker::default();
            let commands = Some((&mut tracker, &filters));
            relay::relay_pty(
                conn,
                input.as_fd(),
                output.as_fd(),
                &session.control,
                cast.as_mut(),
                commands,
                &mut events,
            )
        }
        connect::Io::Pipes { .. } => {
            let (Some(output), Some(errors)) = (session.fds[1].as_ref(), session.fds[2].as_ref())
            else {
                return session.deny("the agent must pass stdout and stderr");
            };
            let checked = match (stdin_mode, session.fds[0].as_ref()) {
                (ExecStdin::Check, Some(input)) => Some(relay::CheckedStdin {
                    engineer_in: input.as_fd(),
                    filters: &filters,
                }),
                _ => None,
            };
            // Recorded as what it is: head, tail, size and SHA-256.
            let keep = match effective.exec_recording_keep_bytes {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            };
            let mut bounded = ExecRecording::new(cast.as_mut(), keep);
            let outcome = relay::relay_pipes(
                conn,
                output.as_fd(),
                errors.as_fd(),
                &session.control,
                &mut bounded,
                &mut events,
                checked,
            );
            digest = bounded.digest();
            outcome
        }
    };
    let truncated = cast.truncated();
    if !outcome.ready {
        // Removed while still open, so the uploader never takes it for a
        // finished recording.
        let _ = std::fs::remove_file(effective.recordings_dir.join(&recording_name));
    }
    drop(cast);
    let ready_at = events.ready_at;
    let error_line = outcome.ended.error.as_ref().map(|e| e.to_string());
    if !outcome.ready {
        // The login never succeeded: a refusal, with ssh's reason.
        let reason = error_line.unwrap_or_else(|| format!("{asset}: the connection failed"));
        warn!(event = "connect_failed", asset = %asset, reason = %reason);
        return session.deny(&reason);
    }
    let duration_ms = ready_at
        .map(|t| t.elapsed().as_millis() as u64)
        .unwrap_or(0);
    let reason = if outcome.engineer_gone {
        Some("the engineer disconnected".to_string())
    } else if outcome.limit.is_some() {
        outcome.limit.clone()
    } else if outcome.refused.is_some() {
        outcome.refused.clone()
    } else {
        error_line.clone()
    };
    if let Some(registered) = &registered {
        registered.close(reason.clone());
    }
    drop(registered);
    info!(event = "session_end", asset = %asset, exit_status = ?outcome.ended.exit_status, reason = reason.as_deref().unwrap_or(""), bytes_in = outcome.bytes_in, bytes_out = outcome.bytes_out);
    session.record(EventBody::SessionEnd {
        scope,
        exit_status: outcome.ended.exit_status,
        reason,
        duration_ms,
        bytes_in: outcome.bytes_in,
        bytes_out: outcome.bytes_out,
        recording: Some(recording_name),
        recording_truncated: truncated,
        output: digest.map(Box::new),
    });
    // Refused input ends the exec as a failure, whatever the target said.
    let exit_status = match &outcome.refused {
        Some(_) => Some(1),
        None => outcome.ended.exit_status,
    };
    session.send(&Response::SessionEnded {
        exit_status,
        message: outcome.refused.or(outcome.limit).or(error_line),
    });
}

/// SFTP folder decisions asked of the monitor.
struct MonitorFolders<'a> {
    link: &'a Link,
}

impl sftp::FolderDecisions for MonitorFolders<'_> {
    fn list(&self) -> Vec<(String, sftp::Folder)> {
        match self.link.ask(Ask::Folders) {
            Some(Answer::Folders(list)) => list,
            _ => Vec::new(),
        }
    }
    fn resolve(&self, name: &str) -> Result<sftp::Folder, sftp::folders::Unresolved> {
        match self.link.ask(Ask::Folder {
            name: name.to_string(),
        }) {
            Some(Answer::Folder(folder)) => folder,
            _ => Err(sftp::folders::Unresolved::NoSuchAsset(name.to_string())),
        }
    }
    fn check(&self, folder: &sftp::Folder, action: Action) -> Result<(), String> {
        match self.link.ask(Ask::FolderCheck {
            folder: folder.clone(),
            action,
        }) {
            Some(Answer::Decision(decision)) => decision,
            _ => Err("the bastion daemon did not answer".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_denial_the_spool_does_not_hold_is_never_told() {
        // A worker whose monitor died (kill -9) before the denial was spooled.
        let (monitor, worker) = UnixStream::pair().unwrap();
        drop(monitor);
        let link = Link::new(worker, crate::wire::WireLimits::default()).unwrap();
        let (control, agent) = UnixStream::pair().unwrap();
        let denial = EventBody::SessionDenied {
            session: Some("s1".into()),
            user: "alice".into(),
            command_line: "nosuch".into(),
            reason: "no such asset: nosuch".into(),
            client: None,
        };
        let told = answer_once_recorded(
            &link,
            &control,
            denial,
            &Response::Denied {
                reason: "no such asset: nosuch".into(),
            },
        );
        assert!(!told);
        let answer: Response = jms_proto::read_response(&mut &agent).unwrap();
        assert!(
            matches!(&answer, Response::Error { message } if message == NOT_RECORDED),
            "{answer:?}"
        );
    }

    #[test]
    fn command_lines_are_classified_as_the_contract_says() {
        assert_eq!(classify("/usr/lib/openssh/sftp-server"), Wanted::Sftp);
        assert_eq!(classify("internal-sftp"), Wanted::Sftp);
        assert_eq!(
            classify("/usr/libexec/openssh/sftp-server -l INFO"),
            Wanted::Sftp
        );
        assert_eq!(
            classify("scp -t web01:/tmp/"),
            Wanted::Transfer("scp -t web01:/tmp/".into())
        );
        assert_eq!(
            classify("rsync --server -e.LsfxCIvu . web01:/tmp/"),
            Wanted::Transfer("rsync --server -e.LsfxCIvu . web01:/tmp/".into())
        );
        assert_eq!(
            classify("web01"),
            Wanted::Target {
                target: "web01".into(),
                command: None
            }
        );
        assert_eq!(
            classify("root@web01 uptime; id"),
            Wanted::Target {
                target: "root@web01".into(),
                command: Some("uptime; id".into())
            }
        );
        assert_eq!(
            classify("bash"),
            Wanted::Target {
                target: "bash".into(),
                command: None
            }
        );
        assert_eq!(classify("  "), Wanted::Nothing);
    }
}
