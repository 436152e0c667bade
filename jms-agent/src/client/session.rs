//! One session: `Request::OpenSession` on a fresh connection to
//! jms-agentd, carrying stdin, stdout and stderr (SCM_RIGHTS), then the
//! conversation until `SessionEnded` — resizes forwarded, typed
//! credentials asked when the daemon needs them. The agent never reads
//! stdin here: after the hand-off the bytes are the daemon's.

use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use jms_core::model::Secret;
use jms_proto::{
    read_response, write_frame, write_frame_with_fds, FrameError, PtyInfo, Request, Response,
    SessionRequest,
};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::client::signals::Signals;
use crate::client::tty::{Answer, Terminal};

/// How long one frame may take to arrive once it started, or to be sent.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// How a session ended, as the engineer is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The daemon's `SessionEnded`.
    Ended {
        exit_status: Option<i32>,
        message: Option<String>,
    },
    /// The daemon refused the session (one line).
    Denied(String),
    /// Something failed on the way (one line, for the engineer).
    Failed(String),
    /// A terminating signal came to the agent.
    Signalled(i32),
}

impl Ending {
    /// The agent's exit status for this ending.
    pub fn exit_code(&self) -> u8 {
        match self {
            Ending::Ended {
                exit_status: Some(status),
                ..
            } => u8::try_from(*status).unwrap_or(1),
            Ending::Ended { .. } | Ending::Denied(_) | Ending::Failed(_) => 1,
            Ending::Signalled(sig) => u8::try_from(128 + sig).unwrap_or(1),
        }
    }

    /// The one line for stderr, if any.
    pub fn line(&self) -> Option<String> {
        let text = match self {
            Ending::Ended { message, .. } => message.clone()?,
            Ending::Denied(reason) => reason.clone(),
            Ending::Failed(reason) => reason.clone(),
            Ending::Signalled(_) => return None,
        };
        Some(format!("jms-agent: {}", one_line(&text)))
    }
}

/// A line from the daemon made safe for the terminal: control characters
/// shown as `?`, one line.
pub fn one_line(text: &str) -> String {
    text.trim()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The `PtyInfo` of a terminal.
pub fn pty_info(terminal: &Terminal, term: &str) -> PtyInfo {
    let size = terminal.size();
    PtyInfo {
        term: term.to_owned(),
        cols: size.cols,
        rows: size.rows,
    }
}

/// Connects to the daemon at `socket` and runs one session (see
/// [`run_on`]).
pub fn run(
    socket: &Path,
    request: SessionRequest,
    fds: [BorrowedFd<'_>; 3],
    terminal: Option<&Terminal>,
    signals: &Signals,
    after_handoff: impl FnOnce(),
) -> Ending {
    match UnixStream::connect(socket) {
        Ok(stream) => run_on(stream, request, fds, terminal, signals, after_handoff),
        Err(e) => Ending::Failed(format!(
            "jms-agentd is unreachable at {}: {e}",
            socket.display()
        )),
    }
}

/// Runs one session on a connected stream. With a `terminal`, it is put
/// in raw mode before the request goes out (the caller restores it).
/// `after_handoff` runs once the daemon has the fds.
pub fn run_on(
    stream: UnixStream,
    request: SessionRequest,
    fds: [BorrowedFd<'_>; 3],
    terminal: Option<&Terminal>,
    signals: &Signals,
    after_handoff: impl FnOnce(),
) -> Ending {
    if let Err(e) = stream
        .set_read_timeout(Some(FRAME_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(FRAME_TIMEOUT)))
    {
        return Ending::Failed(format!("socket: {e}"));
    }
    if let Some(terminal) = terminal {
        if let Err(e) = terminal.raw() {
            return Ending::Failed(format!("cannot put the terminal in raw mode: {e}"));
        }
    }
    if let Err(e) = write_frame_with_fds(&stream, &Request::OpenSession(request), &fds) {
        return Ending::Failed(format!("cannot hand the session to jms-agentd: {e}"));
    }
    after_handoff();
    converse(&stream, terminal, signals)
}

fn converse(stream: &UnixStream, terminal: Option<&Terminal>, signals: &Signals) -> Ending {
    use std::os::fd::AsFd;
    loop {
        let (socket_ready, winch, term) = {
            let mut fds = [
                PollFd::new(stream.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.winch_fd(), PollFlags::POLLIN),
                PollFd::new(signals.term_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(Errno::EINTR) => continue,
                Err(e) => return Ending::Failed(format!("poll: {e}")),
                Ok(_) => {}
            }
            let ready = |fd: &PollFd<'_>| fd.any().unwrap_or(false);
            (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]))
        };
        if term {
            if let Some(sig) = signals.take_termination() {
                return Ending::Signalled(sig);
            }
        }
        if winch && signals.take_winch() {
            if let Some(terminal) = terminal {
                let size = terminal.size();
                let resize = Request::Resize {
                    cols: size.cols,
                    rows: size.rows,
                };
                // A failed write means the daemon is gone: the read says so.
                let _ = write_frame(&mut &*stream, &resize);
            }
        }
        if !socket_ready {
            continue;
        }
        let response = match read_response::<Response>(&mut &*stream) {
            Ok(response) => response,
            Err(FrameError::Closed) => {
                return Ending::Failed("jms-agentd ended the session without a word".into())
            }
            Err(e) => return Ending::Failed(format!("lost jms-agentd: {e}")),
        };
        match response {
            Response::SessionStarted { .. } => {}
            Response::NeedCredentials { username } => {
                match ask_credentials(terminal, username, signals) {
                    Ok(credentials) => {
                        if let Err(e) = write_frame(&mut &*stream, &credentials) {
                            return Ending::Failed(format!("lost jms-agentd: {e}"));
                        }
                    }
                    Err(ending) => return ending,
                }
            }
            Response::SessionEnded {
                exit_status,
                message,
            } => {
                return Ending::Ended {
                    exit_status,
                    message,
                }
            }
            Response::Denied { reason } => return Ending::Denied(reason),
            Response::Forbidden { reason } => return Ending::Denied(reason),
            Response::Error { message } => return Ending::Failed(format!("jms-agentd: {message}")),
            other => {
                return Ending::Failed(format!(
                    "unexpected answer from jms-agentd: {}",
                    response_kind(&other)
                ))
            }
        }
    }
}

/// Asks the engineer for a username (when wanted) and a password, in
/// cooked mode, then puts the terminal back in raw mode.
fn ask_credentials(
    terminal: Option<&Terminal>,
    want_username: bool,
    signals: &Signals,
) -> Result<Request, Ending> {
    let Some(terminal) = terminal else {
        return Err(Ending::Failed(
            "this account needs a typed password: connect with a terminal (ssh -t)".into(),
        ));
    };
    let ask = |label: &str, echo: bool| -> Result<String, Ending> {
        match terminal.prompt(label, echo, signals) {
            Ok(Answer::Line(line)) => Ok(line),
            Ok(Answer::Closed) => Err(Ending::Failed("no credentials given".into())),
            Ok(Answer::Signalled(sig)) => Err(Ending::Signalled(sig)),
            Err(e) => Err(Ending::Failed(format!(
                "cannot read from the terminal: {e}"
            ))),
        }
    };
    let username = if want_username {
        Some(ask("Username: ", true)?)
    } else {
        None
    };
    let password = Secret::new(ask("Password: ", false)?);
    terminal
        .raw()
        .map_err(|e| Ending::Failed(format!("cannot put the terminal in raw mode: {e}")))?;
    Ok(Request::Credentials { username, password })
}

fn response_kind(response: &Response) -> &'static str {
    match response {
        Response::UserStatus { .. } => "user_status",
        Response::Auth { .. } => "auth",
        Response::Account { .. } => "account",
        Response::Done => "done",
        Response::Keys { .. } => "keys",
        Response::Assets { .. } => "assets",
        Response::NeedCredentials { .. } => "need_credentials",
        Response::SessionStarted { .. } => "session_started",
        Response::Denied { .. } => "denied",
        Response::SessionEnded { .. } => "session_ended",
        Response::Forbidden { .. } => "forbidden",
        Response::Error { .. } => "error",
    }
}

/// After a pipe hand-off: point the agent's own stdin and stdout at
/// /dev/null so that only the daemon holds the engineer's streams (her
/// stdout ends when the daemon closes it). stderr stays, for the last line.
pub fn release_pipes() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in [0, 1] {
        nix::unistd::dup2(null.as_raw_fd(), fd).map_err(io::Error::from)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::thread;

    use jms_proto::read_frame_with_fds;

    use super::*;

    fn request(command_line: &str) -> SessionRequest {
        SessionRequest {
            command_line: command_line.into(),
            pty: None,
            client: Some("127.0.0.1".into()),
        }
    }

    /// A fake daemon: reads the OpenSession with its fds, hands them to
    /// `script`, which answers.
    fn with_daemon(
        script: impl FnOnce(SessionRequest, Vec<std::os::fd::OwnedFd>, &mut UnixStream) + Send + 'static,
        signals: &Signals,
    ) -> Ending {
        let (agent, mut daemon) = UnixStream::pair().unwrap();
        let daemon = thread::spawn(move || {
            let (request, fds): (Request, _) = read_frame_with_fds(&daemon).unwrap();
            let Request::OpenSession(request) = request else {
                panic!("expected OpenSession, got {request:?}");
            };
            script(request, fds, &mut daemon);
        });
        let (mut input, input_peer) = UnixStream::pair().unwrap();
        let (output, mut output_peer) = UnixStream::pair().unwrap();
        input.write_all(b"stdin-bytes").unwrap();
        drop(input);
        let ending = run_on(
            agent,
            request("web01 uptime"),
            [input_peer.as_fd(), output.as_fd(), output.as_fd()],
            None,
            signals,
            || {},
        );
        daemon.join().unwrap();
        drop(output);
        let mut echoed = String::new();
        output_peer.read_to_string(&mut echoed).unwrap();
        assert!(
            echoed.is_empty() || echoed == "out:stdin-bytes",
            "the daemon's writes to the passed stdout: {echoed:?}"
        );
        ending
    }

    #[test]
    fn the_session_passes_three_fds_and_ends_with_the_daemons_status() {
        let signals = Signals::unregistered().unwrap();
        let ending = with_daemon(
            |request, fds, daemon| {
                assert_eq!(request.command_line, "web01 uptime");
                assert_eq!(fds.len(), 3, "stdin, stdout, stderr");
                let mut stdin = std::fs::File::from(fds[0].try_clone().unwrap());
                let mut bytes = String::new();
                stdin.read_to_string(&mut bytes).unwrap();
                let mut stdout = std::fs::File::from(fds[1].try_clone().unwrap());
                write!(stdout, "out:{bytes}").unwrap();
                write_frame(
                    daemon,
                    &Response::SessionStarted {
                        session_id: "s1".into(),
                    },
                )
                .unwrap();
                write_frame(
                    daemon,
                    &Response::SessionEnded {
                        exit_status: Some(3),
                        message: None,
                    },
                )
                .unwrap();
            },
            &signals,
        );
        assert_eq!(
            ending,
            Ending::Ended {
                exit_status: Some(3),
                message: None
            }
        );
        assert_eq!(ending.exit_code(), 3);
        assert_eq!(ending.line(), None);
    }

    #[test]
    fn a_denial_is_one_line_and_exit_1() {
        let signals = Signals::unregistered().unwrap();
        let ending = with_daemon(
            |_, _, daemon| {
                write_frame(
                    daemon,
                    &Response::Denied {
                        reason: "no such asset: bash\n".into(),
                    },
                )
                .unwrap();
            },
            &signals,
        );
        assert_eq!(ending.exit_code(), 1);
        assert_eq!(
            ending.line().as_deref(),
            Some("jms-agent: no such asset: bash")
        );
    }

    #[test]
    fn a_daemon_that_hangs_up_is_a_failure() {
        let signals = Signals::unregistered().unwrap();
        let ending = with_daemon(|_, _, _| {}, &signals);
        assert!(
            matches!(&ending, Ending::Failed(line) if line.contains("without a word")),
            "{ending:?}"
        );
        assert_eq!(ending.exit_code(), 1);
    }

    #[test]
    fn no_status_means_exit_1_and_the_message_is_shown() {
        let signals = Signals::unregistered().unwrap();
        let ending = with_daemon(
            |_, _, daemon| {
                write_frame(
                    daemon,
                    &Response::SessionEnded {
                        exit_status: None,
                        message: Some("web01: host key changed".into()),
                    },
                )
                .unwrap();
            },
            &signals,
        );
        assert_eq!(ending.exit_code(), 1);
        assert_eq!(
            ending.line().as_deref(),
            Some("jms-agent: web01: host key changed")
        );
    }

    #[test]
    fn credentials_without_a_terminal_are_refused_not_read_from_stdin() {
        let signals = Signals::unregistered().unwrap();
        let ending = with_daemon(
            |_, _, daemon| {
                write_frame(daemon, &Response::NeedCredentials { username: true }).unwrap();
                // The agent gives up and closes: no Credentials come.
                assert!(matches!(
                    jms_proto::read_frame::<Request>(daemon),
                    Err(FrameError::Closed)
                ));
            },
            &signals,
        );
        assert!(
            matches!(&ending, Ending::Failed(line) if line.contains("ssh -t")),
            "{ending:?}"
        );
    }

    #[test]
    fn a_terminating_signal_ends_the_session() {
        let signals = Signals::unregistered().unwrap();
        signals.notify(nix::libc::SIGHUP);
        let ending = with_daemon(
            |_, _, daemon| {
                // The agent leaves; the daemon sees the end of the socket.
                assert!(matches!(
                    jms_proto::read_frame::<Request>(daemon),
                    Err(FrameError::Closed)
                ));
            },
            &signals,
        );
        assert_eq!(ending, Ending::Signalled(nix::libc::SIGHUP));
        assert_eq!(ending.exit_code(), 129);
    }

    #[test]
    fn out_of_range_statuses_are_failures() {
        let ended = |s| Ending::Ended {
            exit_status: Some(s),
            message: None,
        };
        assert_eq!(ended(0).exit_code(), 0);
        assert_eq!(ended(255).exit_code(), 255);
        assert_eq!(ended(256).exit_code(), 1);
        assert_eq!(ended(-1).exit_code(), 1);
    }
}
