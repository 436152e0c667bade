//! The relay: one thread per session, one `poll` loop, no busy waiting.
//!
//! - Interactive (`relay_pty`): the engineer's pty (passed by jms-agent) ↔
//!   the pty ssh runs on. Input waits until the target login succeeded, so
//!   nothing typed ahead can slip past the command filters; each Enter is
//!   decided before it is forwarded (see `commands`). Resizes from the
//!   control connection go to the pty (ssh passes them on) and the
//!   recording.
//! - Exec (`relay_pipes`): the engineer's stdin was given to ssh itself, so
//!   it is byte-exact from the first moment; stdout and stderr come back
//!   through pipes, recorded; the exit status is ssh's (the command's).
//!   Except for a shell or interpreter reading its input
//!   ([`CheckedStdin`], `exec_stdin = check`): then the relay reads the
//!   input and forwards it line by line once each line is allowed.
//!
//! Every descriptor we touch is nonblocking while the relay runs (the
//! engineer's get their flags back at the end), with a bounded buffer per
//! direction, so a slow side slows its peer and never deadlocks the loop.
//! The engineer leaving (EOF/EIO on her side, or the control connection
//! closing) ends ssh.
//!
//! Limits ([`Limits`], from the settings in force): a session on a
//! terminal with no keystroke for the idle timeout, an exec on pipes
//! (exec without a terminal, scp, rsync) with no byte either way (input
//! seen through [`connect::InputWatch`], output from the target) for the
//! idle timeout, or any session older than the maximum session length, is
//! ended; the engineer is told why ([`Outcome::limit`]).
//!
//! Live hooks ([`Events::live`], see `daemon::live_session`): the target's output
//! is copied to the session's watchers, and a wake pipe in the poll set
//! brings orders from outside at once: end the session (an administrator
//! terminated it, or revoked her access: reported like a limit, in
//! [`Outcome::limit`]), lines for the owner. Keys from a joiner allowed to
//! type wait in the live session's bounded queue and are taken only as
//! far as the buffer to the target has room, then decided and recorded
//! like the owner's; a command line a joiner typed (in part) names her
//! ([`Events::command_by`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use jms_proto::{Request, Response};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::commands::{Enter, Filters, LineTracker, Submitted, Verdict, UNREADABLE};
use super::connect::{self, Connection, Ended, Io};
use super::recording::{Recorder, Stream};
use super::stdin_check::{Checked, StdinLines};
use crate::daemon::live_session::LiveSession;

/// Bytes buffered per direction before its source is paused.
const BUFFER_LIMIT: usize = 256 * 1024;
/// How long a recording may hold unflushed events.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// A line edited on the target's side is decided once its echo has been
/// quiet this long (or after `ECHO_MAX`).
const ECHO_QUIET: Duration = Duration::from_millis(80);
const ECHO_MAX: Duration = Duration::from_millis(1000);

/// When a session is ended for being idle or too long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    pub idle: Option<Duration>,
    pub max: Option<Duration>,
}

impl Limits {
    /// The limits the monitor sent.
    pub fn from_wire(wire: &crate::wire::WireLimits) -> Limits {
        let d = |s: Option<u64>| s.map(Duration::from_secs);
        Limits {
            idle: d(wire.idle_secs),
            max: d(wire.max_secs),
        }
    }

    /// Why the session must end now, if it must.
    pub fn reached(
        &self,
        now: Instant,
        started: Instant,
        last_activity: Instant,
    ) -> Option<String> {
        let human = |d: Duration| humantime::format_duration(d).to_string();
        if let Some(max) = self.max {
            if now.duration_since(started) >= max {
                return Some(format!(
                    "session ended: it reached the maximum session length ({})",
                    human(max)
                ));
            }
        }
        if let Some(idle) = self.idle {
            if now.duration_since(last_activity) >= idle {
                return Some(format!(
                    "session ended: idle for {} (the idle timeout)",
                    human(idle)
                ));
            }
        }
        None
    }

    /// The next instant a limit can be reached.
    pub fn deadline(&self, started: Instant, last_activity: Instant) -> Option<Instant> {
        let max = self.max.map(|m| started + m);
        let idle = self.idle.map(|i| last_activity + i);
        match (max, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// What the relay reports to the session as it runs.
pub trait Events {
    /// The target login succeeded (once).
    fn ready(&mut self);
    /// A command line was decided.
    fn command(&mut self, command: &str, verdict: &Verdict);
    /// A line of an exec'd interpreter's input was decided.
    fn stdin_command(&mut self, command: &str, verdict: &Verdict) {
        self.command(command, verdict);
    }
    /// A command line was decided; `typed_by` names who typed it when a
    /// joiner did (in part): the joiners, and the owner if she typed too.
    fn command_by(&mut self, command: &str, verdict: &Verdict, typed_by: Option<&str>) {
        let _ = typed_by;
        self.command(command, verdict);
    }
    /// The idle and length limits of this session (none by default).
    fn limits(&self) -> Limits {
        Limits::default()
    }
    /// The live session (watchers, orders), if this one is registered.
    fn live(&self) -> Option<&LiveSession> {
        None
    }
    /// The engineer's terminal changed size.
    fn resized(&mut self, cols: u16, rows: u16) {
        if let Some(live) = self.live() {
            live.resize(cols, rows);
        }
    }
}

/// How the relay ended.
pub struct Outcome {
    pub ended: Ended,
    /// The login succeeded at some point.
    pub ready: bool,
    /// The engineer (or her agent) went away first.
    pub engineer_gone: bool,
    /// The session was ended by a limit: the line that says which.
    pub limit: Option<String>,
    /// A line of checked input was refused: the line that says so.
    pub refused: Option<String>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The engineer's descriptors, nonblocking until dropped.
struct EngineerFds {
    saved: Vec<(RawFd, i32)>,
}

impl EngineerFds {
    fn take(fds: &[RawFd]) -> EngineerFds {
        // Save every flag first: the descriptors may share one description.
        let saved: Vec<(RawFd, i32)> = fds
            .iter()
            .filter_map(|fd| {
                nix::fcntl::fcntl(*fd, nix::fcntl::FcntlArg::F_GETFL)
                    .ok()
                    .map(|f| (*fd, f))
            })
            .collect();
        for (fd, _) in &saved {
            connect::set_nonblocking(*fd);
        }
        EngineerFds { saved }
    }
}

impl Drop for EngineerFds {
    fn drop(&mut self) {
        for (fd, flags) in self.saved.iter().rev() {
            connect::restore_flags(*fd, *flags);
        }
    }
}

enum Read_ {
    Data(usize),
    Nothing,
    Closed,
}

fn read_fd(fd: RawFd, buf: &mut [u8]) -> Read_ {
    match nix::unistd::read(fd, buf) {
        Ok(0) => Read_::Closed,
        Ok(n) => Read_::Data(n),
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => Read_::Nothing,
        Err(_) => Read_::Closed,
    }
}

/// Writes what it can of `buf`; `Err` when the reader is gone.
fn write_some(fd: RawFd, buf: &mut Vec<u8>) -> Result<(), ()> {
    if buf.is_empty() {
        return Ok(());
    }
    // SAFETY: fd is open for the whole relay (owned by the session).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match nix::unistd::write(borrowed, buf) {
        Ok(n) => {
            buf.drain(..n);
            Ok(())
        }
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(()),
        Err(_) => Err(()),
    }
}

/// Writes what it can of `data` now: how much went; `Err` when the reader
/// is gone.
fn write_now(fd: RawFd, data: &[u8]) -> Result<usize, ()> {
    // SAFETY: fd is open for the whole relay (owned by the session).
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    match nix::unistd::write(borrowed, data) {
        Ok(n) => Ok(n),
        Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(0),
        Err(_) => Err(()),
    }
}

/// Writes `buf` out within `limit` (at the end, when the target is done).
fn drain(fd: RawFd, buf: &mut Vec<u8>, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !buf.is_empty() && Instant::now() < deadline {
        if write_some(fd, buf).is_err() {
            return;
        }
        if buf.is_empty() {
            return;
        }
        // SAFETY: as in write_some.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let mut fds = [PollFd::new(borrowed, PollFlags::POLLOUT)];
        let _ = poll(&mut fds, PollTimeout::from(100u16));
    }
}

/// Handles one control message during the relay; `false` when the
/// control connection closed (the agent is gone).
fn control_message(control: &UnixStream, on_resize: &mut dyn FnMut(u16, u16)) -> bool {
    match jms_proto::read_frame::<Request>(&mut &*control) {
        Ok(Request::Resize { cols, rows }) => {
            on_resize(cols, rows);
            true
        }
        Ok(_) => true,
        Err(jms_proto::FrameError::Malformed(_)) => true,
        Err(_) => false,
    }
}

/// An Enter held until the target's echo settles.
struct Held {
    enter: Enter,
    rest: Vec<u8>,
    since: Instant,
}

struct PtyState<'a> {
    to_target: Vec<u8>,
    to_engineer: Vec<u8>,
    tracker: Option<(&'a mut LineTracker, &'a Filters)>,
    held: Option<Held>,
    /// Who typed into the current line (`None`: the owner), in order.
    typists: Vec<Option<String>>,
    /// Who typed the input being read now.
    typing: Option<String>,
}

impl PtyState<'_> {
    /// Input typed by `joiner` (`None`: the session's owner).
    fn input_from(&mut self, joiner: Option<&str>, data: &[u8], events: &mut dyn Events) {
        self.typing = joiner.map(str::to_string);
        self.input(data, events);
    }

    /// The one typing now takes part in the current line.
    fn note_typist(&mut self) {
        if !self.typists.contains(&self.typing) {
            self.typists.push(self.typing.clone());
        }
    }

    /// Who typed the line, when a joiner took part.
    fn typed_by(typists: &[Option<String>], owner: &str) -> Option<String> {
        if typists.iter().all(Option::is_none) {
            return None;
        }
        let names: Vec<&str> = typists
            .iter()
            .map(|t| t.as_deref().unwrap_or(owner))
            .collect();
        Some(names.join(","))
    }

    fn input(&mut self, data: &[u8], events: &mut dyn Events) {
        if self.tracker.is_none() {
            self.to_target.extend_from_slice(data);
            return;
        }
        let mut rest = data;
        while !rest.is_empty() {
            self.note_typist();
            let Some((tracker, _)) = self.tracker.as_mut() else {
                return;
            };
            let step = tracker.step(rest);
            self.to_target.extend_from_slice(&step.forward);
            rest = &rest[step.consumed..];
            let Some(enter) = step.enter else { continue };
            // Held for the echo: a line edited on the target's side, or a
            // typed line not (yet) echoed — a password prompt, or a paste
            // running ahead of its echo.
            if enter.from_echo || (!enter.typed.is_empty() && !tracker.echoes(&enter.typed)) {
                self.held = Some(Held {
                    enter,
                    rest: rest.to_vec(),
                    since: Instant::now(),
                });
                return;
            }
            if !self.decide(&enter, events) {
                // A refused line takes the rest of the paste with it.
                return;
            }
        }
    }

    /// Forwards or refuses the line `enter` submitted; true when forwarded.
    /// A hidden line (typed without echo: a password) is judged as typed
    /// but logged and shown only as "(input not echoed)". A line whose
    /// reading is uncertain is refused when any deny rule applies.
    fn decide(&mut self, enter: &Enter, events: &mut dyn Events) -> bool {
        let Some((tracker, filters)) = self.tracker.as_mut() else {
            return true;
        };
        let line = match tracker.submitted(enter) {
            Submitted::Continued => {
                self.to_target.push(enter.key);
                return true;
            }
            Submitted::Line(line) => line,
        };
        let owner = events.live().map(|l| l.user.clone()).unwrap_or_default();
        let typed_by = Self::typed_by(&self.typists, &owner);
        // The next line starts with whoever types next.
        self.typists.clear();
        if line.command.is_empty() && line.uncertain.is_none() {
            self.to_target.push(enter.key);
            return true;
        }
        let verdict = match line.uncertain {
            Some(_) if filters.any_deny() => Verdict::Deny {
                filter: UNREADABLE.to_string(),
            },
            _ => filters.check_exec(&line.command),
        };
        let shown = if line.hidden {
            "(input not echoed)"
        } else {
            line.command.as_str()
        };
        if !line.command.is_empty() || verdict.is_deny() {
            events.command_by(shown, &verdict, typed_by.as_deref());
        }
        match &verdict {
            Verdict::Deny { filter } => {
                tracker.refused();
                self.to_target.extend_from_slice(&line.refusal);
                let why = match line.uncertain {
                    Some(why) if filter == UNREADABLE => format!(
                        "command refused: jms cannot read this line reliably ({why}); retype it plainly"
                    ),
                    _ => format!("command refused by filter {filter}"),
                };
                self.to_engineer.extend_from_slice(
                    format!(
                        "\r\n\x1b[31mjms: {why}: {}\x1b[0m\r\n",
                        shown.replace(|c: char| c.is_control(), " ")
                    )
                    .as_bytes(),
                );
                false
            }
            Verdict::Allow { .. } => {
                self.to_target.push(enter.key);
                true
            }
        }
    }

    /// Decides a held Enter once the echo settled; returns whether it did.
    fn settle(&mut self, last_output: Instant, events: &mut dyn Events) -> bool {
        let Some(held) = self.held.as_ref() else {
            return false;
        };
        let now = Instant::now();
        let quiet = now.duration_since(last_output.max(held.since)) >= ECHO_QUIET;
        if !quiet && now.duration_since(held.since) < ECHO_MAX {
            return false;
        }
        let held = self.held.take().expect("checked");
        if self.decide(&held.enter, events) {
            self.input(&held.rest, events);
        }
        true
    }

    fn settle_deadline(&self, last_output: Instant) -> Option<Instant> {
        self.held
            .as_ref()
            .map(|h| (last_output.max(h.since) + ECHO_QUIET).min(h.since + ECHO_MAX))
    }
}

/// Relays a session on a pty (a shell, or an exec with a terminal: both
/// with `commands`) until the target or the engineer ends it.
#[allow(clippy::too_many_arguments)]
pub fn relay_pty(
    mut conn: Connection,
    engineer_in: BorrowedFd<'_>,
    engineer_out: BorrowedFd<'_>,
    control: &UnixStream,
    recorder: &mut dyn Recorder,
    commands: Option<(&mut LineTracker, &Filters)>,
    events: &mut dyn Events,
) -> Outcome {
    let master = match &conn.io {
        Io::Pty { master } => master.as_raw_fd(),
        Io::Pipes { .. } => unreachable!("relay_pty needs a pty connection"),
    };
    let (eng_in, eng_out) = (engineer_in.as_raw_fd(), engineer_out.as_raw_fd());
    let _restore = EngineerFds::take(&[eng_in, eng_out]);
    let mut state = PtyState {
        to_target: Vec::new(),
        to_engineer: Vec::new(),
        tracker: commands,
        held: None,
        typists: Vec::new(),
        typing: None,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let (mut bytes_in, mut bytes_out) = (0u64, 0u64);
    let mut last_output = Instant::now();
    let mut last_flush = Instant::now();
    let mut engineer_gone = false;
    let mut target_done = false;
    let mut login_failed = false;
    let limits = events.limits();
    let wake = events.live().map(LiveSession::wake_fd);
    let started = Instant::now();
    let mut last_input = started;
    let mut limit = None;
    while !target_done && !engineer_gone {
        let ready = conn.is_ready();
        let now = Instant::now();
        if !ready && now >= conn.login_deadline() {
            login_failed = true;
            break;
        }
        if let Some(why) = limits.reached(now, started, last_input) {
            state
                .to_engineer
                .extend_from_slice(format!("\r\n[jms: {why}]\r\n").as_bytes());
            limit = Some(why);
            break;
        }
        let want_input = ready && state.held.is_none() && state.to_target.len() < BUFFER_LIMIT;
        // Joiners' keys, as far as the buffer to the target has room and
        // no Enter is held (the rest waits in the live session's bounded
        // queue).
        while ready && state.held.is_none() && state.to_target.len() < BUFFER_LIMIT {
            let room = BUFFER_LIMIT - state.to_target.len();
            let Some((joiner, keys)) = events.live().and_then(|live| live.take_input(room)) else {
                break;
            };
            bytes_in += keys.len() as u64;
            last_input = Instant::now();
            recorder.input(&keys);
            state.input_from(Some(&joiner), &keys, events);
        }
        let want_output = state.to_engineer.len() < BUFFER_LIMIT;
        let mut master_flags = PollFlags::empty();
        if want_output {
            master_flags |= PollFlags::POLLIN;
        }
        if !state.to_target.is_empty() {
            master_flags |= PollFlags::POLLOUT;
        }
        let mut deadline = last_flush + FLUSH_EVERY;
        if !ready {
            deadline = deadline.min(conn.login_deadline());
        }
        if let Some(settle) = state.settle_deadline(last_output) {
            deadline = deadline.min(settle);
        }
        if let Some(at) = limits.deadline(started, last_input) {
            deadline = deadline.min(at);
        }
        let timeout = connect::poll_timeout(deadline.saturating_duration_since(now));
        // SAFETY: these descriptors stay open for the whole loop.
        let (b_master, b_in, b_out) = unsafe {
            (
                BorrowedFd::borrow_raw(master),
                BorrowedFd::borrow_raw(eng_in),
                BorrowedFd::borrow_raw(eng_out),
            )
        };
        let mut fds = vec![
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(b_master, master_flags),
            PollFd::new(
                b_in,
                if want_input {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                },
            ),
            PollFd::new(
                b_out,
                if state.to_engineer.is_empty() {
                    PollFlags::empty()
                } else {
                    PollFlags::POLLOUT
                },
            ),
        ];
        if !ready {
            fds.push(PollFd::new(conn.ready_fd(), PollFlags::POLLIN));
        }
        let wake_at = wake.map(|fd| {
            // SAFETY: the live session (and its pipe) outlives the relay.
            fds.push(PollFd::new(
                unsafe { BorrowedFd::borrow_raw(fd) },
                PollFlags::POLLIN,
            ));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        let any =
            |r: PollFlags, f: PollFlags| r.intersects(f | PollFlags::POLLHUP | PollFlags::POLLERR);
        // Orders from outside (see the module doc).
        if let Some(woken) = wake_at
            .filter(|&i| revents[i].contains(PollFlags::POLLIN))
            .and_then(|_| events.live().map(LiveSession::take))
        {
            for notice in &woken.notices {
                state
                    .to_engineer
                    .extend_from_slice(format!("\r\n[jms: {notice}]\r\n").as_bytes());
            }
            if let Some(why) = woken.end {
                state
                    .to_engineer
                    .extend_from_slice(format!("\r\n[jms: {why}]\r\n").as_bytes());
                limit = Some(why);
                break;
            }
        }
        // Login signal.
        if !ready
            && revents
                .get(4)
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
            && conn.mark_ready()
        {
            events.ready();
        }
        // Control: resizes, or the agent gone.
        if any(revents[0], PollFlags::POLLIN) {
            let mut resize = |cols: u16, rows: u16| {
                // SAFETY: master is open for the whole loop.
                connect::set_window_size(unsafe { BorrowedFd::borrow_raw(master) }, cols, rows);
                recorder.resize(cols, rows);
                events.resized(cols, rows);
            };
            if !control_message(control, &mut resize) {
                engineer_gone = true;
                break;
            }
        }
        // Target output.
        if want_output && any(revents[1], PollFlags::POLLIN) {
            match read_fd(master, &mut buf) {
                Read_::Data(n) => {
                    let data = &buf[..n];
                    bytes_out += n as u64;
                    recorder.output(data);
                    if let Some(live) = events.live() {
                        live.output(data);
                    }
                    if let Some((tracker, _)) = state.tracker.as_mut() {
                        tracker.output(data);
                    }
                    state.to_engineer.extend_from_slice(data);
                    last_output = Instant::now();
                }
                Read_::Nothing => {}
                Read_::Closed => target_done = true,
            }
        }
        // Engineer input.
        if want_input && any(revents[2], PollFlags::POLLIN) {
            match read_fd(eng_in, &mut buf) {
                Read_::Data(n) => {
                    let data = buf[..n].to_vec();
                    bytes_in += n as u64;
                    last_input = Instant::now();
                    recorder.input(&data);
                    state.input_from(None, &data, events);
                }
                Read_::Nothing => {}
                Read_::Closed => engineer_gone = true,
            }
        }
        state.settle(last_output, events);
        if write_some(master, &mut state.to_target).is_err() {
            target_done = true;
        }
        if write_some(eng_out, &mut state.to_engineer).is_err() {
            engineer_gone = true;
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            recorder.flush();
            last_flush = Instant::now();
        }
    }
    if target_done {
        drain(eng_out, &mut state.to_engineer, Duration::from_secs(5));
    } else {
        conn.kill();
        if limit.is_some() {
            drain(eng_out, &mut state.to_engineer, Duration::from_secs(2));
        }
    }
    recorder.flush();
    let mut outcome = finish(conn, login_failed, engineer_gone, bytes_in, bytes_out);
    outcome.limit = limit;
    outcome
}

fn finish(
    mut conn: Connection,
    login_failed: bool,
    engineer_gone: bool,
    bytes_in: u64,
    bytes_out: u64,
) -> Outcome {
    let ready = conn.is_ready();
    let timed_out = login_failed.then(|| connect::ConnectError::Timeout {
        asset: conn.asset().to_string(),
        seconds: conn.login_timeout().as_secs(),
    });
    if login_failed {
        conn.kill();
    }
    let mut ended = conn.wait();
    if ended.error.is_none() {
        ended.error = timed_out;
    }
    Outcome {
        ended,
        ready,
        engineer_gone,
        limit: None,
        refused: None,
        bytes_in,
        bytes_out,
    }
}

/// The engineer's input to an exec'd shell or interpreter, judged line by
/// line before it is forwarded (`exec_stdin = check`; see `stdin_check`).
/// The connection must have been opened with [`connect::Stdin::Pipe`].
pub struct CheckedStdin<'a> {
    pub engineer_in: BorrowedFd<'a>,
    pub filters: &'a Filters,
}

/// [`CheckedStdin`] while the relay runs.
struct StdinState<'a> {
    engineer_in: RawFd,
    filters: &'a Filters,
    /// ssh's stdin (closed once the input ended and was written out).
    to_ssh: Option<std::os::fd::OwnedFd>,
    lines: StdinLines,
    pending: Vec<u8>,
    /// No more input is taken (end of file, or a line was refused).
    ended: bool,
}

impl StdinState<'_> {
    fn take(&mut self, checked: Checked, refused: &mut Option<String>) {
        self.pending.extend_from_slice(&checked.forward);
        if let Some(why) = checked.refused {
            *refused = Some(why);
            self.ended = true;
        }
    }
}

/// Relays an exec session on pipes until ssh's stdout and stderr close.
pub fn relay_pipes(
    mut conn: Connection,
    engineer_out: BorrowedFd<'_>,
    engineer_err: BorrowedFd<'_>,
    control: &UnixStream,
    recorder: &mut dyn Recorder,
    events: &mut dyn Events,
    stdin: Option<CheckedStdin<'_>>,
) -> Outcome {
    let (stdout, stderr) = match &conn.io {
        Io::Pipes { stdout, stderr, .. } => (stdout.as_raw_fd(), stderr.as_raw_fd()),
        Io::Pty { .. } => unreachable!("relay_pipes needs a pipe connection"),
    };
    let (eng_out, eng_err) = (engineer_out.as_raw_fd(), engineer_err.as_raw_fd());
    let mut checked = stdin.map(|s| StdinState {
        engineer_in: s.engineer_in.as_raw_fd(),
        filters: s.filters,
        to_ssh: match &mut conn.io {
            Io::Pipes { stdin, .. } => stdin.take(),
            Io::Pty { .. } => None,
        },
        lines: StdinLines::default(),
        pending: Vec::new(),
        ended: false,
    });
    let mut ours = vec![eng_out, eng_err];
    ours.extend(checked.as_ref().map(|c| c.engineer_in));
    let _restore = EngineerFds::take(&ours);
    let mut refused: Option<String> = None;
    let mut bytes_in = 0u64;
    // Large reads: fewer wake-ups per byte on a bulk transfer.
    let mut buf = vec![0u8; 256 * 1024];
    let mut to_out: Vec<u8> = Vec::new();
    let mut to_err: Vec<u8> = Vec::new();
    let (mut out_open, mut err_open) = (true, true);
    let mut bytes_out = 0u64;
    let mut engineer_gone = false;
    let mut login_failed = false;
    let mut last_flush = Instant::now();
    let limits = events.limits();
    let wake = events.live().map(LiveSession::wake_fd);
    let started = Instant::now();
    // Output from the target, or input from the engineer (module doc).
    let mut last_activity = started;
    let mut limit = None;
    while (out_open || err_open || !to_out.is_empty() || !to_err.is_empty()) && !engineer_gone {
        let ready = conn.is_ready();
        let now = Instant::now();
        if !ready && now >= conn.login_deadline() {
            login_failed = true;
            break;
        }
        if !ready {
            // The login phase has its own deadline: idle counts from the
            // moment the target session is up (and ssh's reads from then).
            last_activity = now;
            if conn.input_watch().is_some() {
                let _ = conn.read_since_last_look();
            }
        }
        if limits.reached(now, started, last_activity).is_some()
            && conn.input_watch().is_some()
            && conn.read_since_last_look()
        {
            // Input went straight to ssh since the last look.
            last_activity = now;
        }
        if let Some(why) = limits.reached(now, started, last_activity) {
            to_err.extend_from_slice(format!("\n[jms: {why}]\n").as_bytes());
            limit = Some(why);
            break;
        }
        let mut deadline = last_flush + FLUSH_EVERY;
        if !ready {
            deadline = deadline.min(conn.login_deadline());
        }
        if let Some(at) = limits.deadline(started, last_activity) {
            deadline = deadline.min(at);
        }
        let timeout = connect::poll_timeout(deadline.saturating_duration_since(now));
        let flag = |on: bool, f: PollFlags| if on { f } else { PollFlags::empty() };
        // SAFETY: these descriptors stay open for the whole loop.
        let (b_stdout, b_stderr, b_out, b_err) = unsafe {
            (
                BorrowedFd::borrow_raw(stdout),
                BorrowedFd::borrow_raw(stderr),
                BorrowedFd::borrow_raw(eng_out),
                BorrowedFd::borrow_raw(eng_err),
            )
        };
        let mut fds = vec![
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(
                b_stdout,
                flag(out_open && to_out.len() < BUFFER_LIMIT, PollFlags::POLLIN),
            ),
            PollFd::new(
                b_stderr,
                flag(err_open && to_err.len() < BUFFER_LIMIT, PollFlags::POLLIN),
            ),
            PollFd::new(b_out, flag(!to_out.is_empty(), PollFlags::POLLOUT)),
            PollFd::new(b_err, flag(!to_err.is_empty(), PollFlags::POLLOUT)),
        ];
        if !ready {
            fds.push(PollFd::new(conn.ready_fd(), PollFlags::POLLIN));
        }
        let wake_at = wake.map(|fd| {
            // SAFETY: the live session (and its pipe) outlives the relay.
            fds.push(PollFd::new(
                unsafe { BorrowedFd::borrow_raw(fd) },
                PollFlags::POLLIN,
            ));
            fds.len() - 1
        });
        // Checked input: the engineer's side, then ssh's.
        let (mut input_at, mut to_ssh_at) = (None, None);
        if let Some(c) = checked.as_ref() {
            if !c.ended && c.pending.len() < BUFFER_LIMIT {
                // SAFETY: the engineer's stdin stays open for the whole relay.
                let fd = unsafe { BorrowedFd::borrow_raw(c.engineer_in) };
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
                input_at = Some(fds.len() - 1);
            }
            if let Some(to_ssh) = c.to_ssh.as_ref().filter(|_| !c.pending.is_empty()) {
                fds.push(PollFd::new(to_ssh.as_fd(), PollFlags::POLLOUT));
                to_ssh_at = Some(fds.len() - 1);
            }
        }
        // Unchecked input goes straight to ssh; a watch on it tells activity.
        let watch_at = conn.input_watch().map(|watch| {
            fds.push(PollFd::new(watch.fd(), PollFlags::POLLIN));
            fds.len() - 1
        });
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if let Some(c) = checked.as_mut() {
            let readable = input_at.is_some_and(|i| {
                revents[i].intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
            });
            if readable {
                let mut log =
                    |command: &str, verdict: &Verdict| events.stdin_command(command, verdict);
                match read_fd(c.engineer_in, &mut buf) {
                    Read_::Data(n) => {
                        bytes_in += n as u64;
                        last_activity = Instant::now();
                        let out = c.lines.feed(&buf[..n], c.filters, &mut log);
                        c.take(out, &mut refused);
                    }
                    Read_::Nothing => {}
                    Read_::Closed => {
                        let out = c.lines.finish(c.filters, &mut log);
                        c.take(out, &mut refused);
                        c.ended = true;
                    }
                }
            }
            if to_ssh_at.is_some_and(|i| !revents[i].is_empty()) {
                let fd = c.to_ssh.as_ref().map(|f| f.as_raw_fd());
                if fd.is_some_and(|fd| write_some(fd, &mut c.pending).is_err()) {
                    // The target stopped reading: nothing more goes there.
                    c.to_ssh = None;
                    c.pending.clear();
                    c.ended = true;
                }
            }
            if c.ended && c.pending.is_empty() {
                // End of input for the target.
                c.to_ssh = None;
            }
        }
        let any = |r: PollFlags| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        };
        if watch_at.is_some_and(|i| revents[i].contains(PollFlags::POLLIN))
            && conn.input_watch().is_some_and(|w| w.take())
        {
            last_activity = Instant::now();
        }
        // Only an end order matters here (no terminal, no joiner input).
        if let Some(why) = wake_at
            .filter(|&i| revents[i].contains(PollFlags::POLLIN))
            .and_then(|_| events.live().and_then(|live| live.take().end))
        {
            to_err.extend_from_slice(format!("\n[jms: {why}]\n").as_bytes());
            limit = Some(why);
            break;
        }
        if !ready
            && revents
                .get(5)
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
            && conn.mark_ready()
        {
            events.ready();
        }
        if any(revents[0]) && !control_message(control, &mut |_, _| {}) {
            engineer_gone = true;
            break;
        }
        for (open, fd, pending, revent, stream, eng) in [
            (
                &mut out_open,
                stdout,
                &mut to_out,
                revents[1],
                Stream::Stdout,
                eng_out,
            ),
            (
                &mut err_open,
                stderr,
                &mut to_err,
                revents[2],
                Stream::Stderr,
                eng_err,
            ),
        ] {
            if *open && any(revent) {
                match read_fd(fd, &mut buf) {
                    Read_::Data(n) => {
                        if !conn.is_ready() && conn.mark_ready() {
                            events.ready();
                        }
                        bytes_out += n as u64;
                        last_activity = Instant::now();
                        recorder.stream_output(stream, &buf[..n]);
                        if let Some(live) = events.live() {
                            live.output(&buf[..n]);
                        }
                        // Straight from the read buffer when nothing
                        // waits before it; only what the engineer's side
                        // did not take is copied aside.
                        let sent = if pending.is_empty() {
                            match write_now(eng, &buf[..n]) {
                                Ok(sent) => sent,
                                Err(()) => {
                                    engineer_gone = true;
                                    n
                                }
                            }
                        } else {
                            0
                        };
                        pending.extend_from_slice(&buf[sent..n]);
                    }
                    Read_::Nothing => {}
                    Read_::Closed => *open = false,
                }
            }
        }
        if engineer_gone
            || write_some(eng_out, &mut to_out).is_err()
            || write_some(eng_err, &mut to_err).is_err()
        {
            engineer_gone = true;
        }
        if last_flush.elapsed() >= FLUSH_EVERY {
            recorder.flush();
            last_flush = Instant::now();
        }
    }
    if engineer_gone || login_failed || limit.is_some() {
        conn.kill();
    }
    if limit.is_some() {
        drain(eng_out, &mut to_out, Duration::from_secs(2));
        drain(eng_err, &mut to_err, Duration::from_secs(2));
    }
    if !conn.is_ready() && conn.mark_ready() {
        events.ready();
    }
    recorder.finish();
    drop(checked);
    let mut outcome = finish(conn, login_failed, engineer_gone, bytes_in, bytes_out);
    outcome.limit = limit;
    outcome.refused = refused;
    outcome
}

/// Waits for the agent to answer [`Response::NeedCredentials`] (resizes
/// may come first); `None` if it went away or took longer than `timeout`.
pub fn await_credentials(
    control: &UnixStream,
    timeout: Duration,
    on_resize: &mut dyn FnMut(u16, u16),
) -> Option<(Option<String>, jms_core::model::Secret)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let mut fds = [PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, connect::poll_timeout(left)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => return None,
        }
        match jms_proto::read_frame::<Request>(&mut &*control) {
            Ok(Request::Credentials { username, password }) => return Some((username, password)),
            Ok(Request::Resize { cols, rows }) => on_resize(cols, rows),
            Ok(_) | Err(jms_proto::FrameError::Malformed(_)) => {}
            Err(_) => return None,
        }
    }
}

/// Writes a response on the control connection (errors mean the agent left).
pub fn send(control: &UnixStream, response: &Response) -> bool {
    jms_proto::write_frame(&mut &*control, response).is_ok()
}

#[cfg(test)]
mod limit_tests {
    use super::*;

    #[test]
    fn limits_say_which_was_reached_and_when_the_next_is_due() {
        let start = Instant::now();
        let limits = Limits {
            idle: Some(Duration::from_secs(60)),
            max: Some(Duration::from_secs(3600)),
        };
        assert_eq!(limits.reached(start, start, start), None);
        let idle = limits
            .reached(start + Duration::from_secs(61), start, start)
            .expect("idle past the timeout");
        assert!(idle.contains("idle for 1m"), "{idle}");
        let long = limits
            .reached(
                start + Duration::from_secs(3600),
                start,
                start + Duration::from_secs(3599),
            )
            .expect("past the maximum length");
        assert!(long.contains("maximum session length (1h)"), "{long}");
        assert_eq!(
            limits.deadline(start, start + Duration::from_secs(10)),
            Some(start + Duration::from_secs(70))
        );
        assert_eq!(Limits::default().deadline(start, start), None);
        assert_eq!(
            Limits::default().reached(start + Duration::from_secs(1 << 20), start, start),
            None
        );
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;
    use jms_core::model::FilterAction;

    #[derive(Default)]
    struct Log(Vec<(String, bool)>);

    impl Events for Log {
        fn ready(&mut self) {}
        fn command(&mut self, command: &str, verdict: &Verdict) {
            self.0.push((command.to_string(), verdict.is_deny()));
        }
    }

    /// Types `input` after a prompt, with the target echoing `echo`, and
    /// returns what reached the target and the command log.
    fn run(filters: &Filters, input: &[u8], echo: &[u8]) -> (Vec<u8>, Vec<(String, bool)>) {
        let mut tracker = LineTracker::default();
        tracker.output(b"$ ");
        let mut state = PtyState {
            to_target: Vec::new(),
            to_engineer: Vec::new(),
            tracker: Some((&mut tracker, filters)),
            held: None,
            typing: None,
            typists: Vec::new(),
        };
        let mut log = Log::default();
        state.input(input, &mut log);
        if let Some((tracker, _)) = state.tracker.as_mut() {
            tracker.output(echo);
        }
        let long_ago = Instant::now() - ECHO_MAX;
        while let Some(held) = state.held.as_mut() {
            held.since = long_ago;
            state.settle(long_ago, &mut log);
        }
        (state.to_target, log.0)
    }

    #[test]
    fn keys_that_run_a_line_never_pass_a_denied_or_unreadable_one() {
        let all_denied = Filters::none().with_default(FilterAction::Deny);
        for (input, echo) in [
            (&b"reboot\x0f"[..], &b"reboot"[..]),
            (b"reboot\x1b\r", b"reboot"),
            (b"reboot\x1b[\r", b"reboot"),
            (b"reboot\x1bO\n", b"reboot"),
            (b"re\\\rboot\r", b""),
            (b"reboot\x04", b"reboot"),
            (b"reboo\x1b[Dt\r", b""),
        ] {
            let (sent, log) = run(&all_denied, input, echo);
            let submit = *input.last().unwrap();
            let kill = sent.iter().rposition(|&b| b == 0x15);
            assert!(
                !sent.ends_with(&[submit]) && (kill.is_some() || log.is_empty()),
                "{input:?}: the submit key must not reach the target: {sent:?} {log:?}"
            );
        }
        // Allowed, the same keys go through, and are logged.
        let open = Filters::none();
        for input in [&b"uptime\x0f"[..], b"uptime\x1b\r", b"uptime\r"] {
            let (sent, log) = run(&open, input, b"uptime");
            assert!(
                sent.ends_with(&[*input.last().unwrap()]),
                "{input:?}: {sent:?}"
            );
            assert_eq!(log, [("uptime".to_string(), false)]);
        }
        // A continuation is forwarded unchecked; the joined line is judged.
        let (sent, log) = run(&open, b"up\\\r", b"");
        assert_eq!((sent.as_slice(), log.len()), (&b"up\\\r"[..], 0));
    }
}
