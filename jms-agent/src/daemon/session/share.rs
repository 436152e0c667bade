//! Session share, on one bastion: `share [SESSION] [--write] [--ttl 10m]`
//! makes a short-lived, single-use code for one of the caller's live
//! terminal sessions (when her grant for it has the `share` action,
//! checked against the policy in force); `join CODE` lets a second jms
//! user watch that session as it happens, and type into it when the owner
//! allowed (`--write`): her keys go through the owner's relay, decided by
//! the command filters, recorded and logged like the owner's, each command
//! naming her as the one who typed it (`typed_by`). The owner sees a line
//! when someone joins or leaves; every code, join and leave is an audit
//! event.
//!
//! This is the worker's side (the engineer's words, the joiner's relay);
//! the monitor makes and checks the codes (`monitor::share_codes`,
//! `monitor::live`) and decides.
//!
//! `share` and `join` are reserved words of `command_line` (an asset with
//! either name is reached as `ACCOUNT@share`).

use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, Instant};

use jms_proto::{Request, Response};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags};
use tracing::info;

use super::{connect, Session, Wanted};
use crate::wire::{Answer, Ask};

/// How long a code is valid unless `--ttl` says otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// The longest `--ttl`.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The key a joiner leaves with (Ctrl-]).
const LEAVE_KEY: u8 = 0x1d;

/// `share`'s arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareArgs {
    /// A session id (or its start); the newest live session when `None`.
    pub session: Option<String>,
    pub write: bool,
    pub ttl: Duration,
}

const SHARE_USAGE: &str = "usage: share [SESSION] [--write] [--ttl 10m]";

/// `share …` and `join …`; `None` for any other command line.
pub fn classify(line: &str) -> Option<Wanted> {
    let mut words = line.split_whitespace();
    match words.next()? {
        "share" => Some(Wanted::Share(parse_share(words))),
        "join" => Some(Wanted::Join(words.collect::<Vec<_>>().join(" "))),
        _ => None,
    }
}

fn parse_share<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<ShareArgs, String> {
    let mut args = ShareArgs {
        session: None,
        write: false,
        ttl: DEFAULT_TTL,
    };
    while let Some(word) = words.next() {
        match word {
            "--write" | "-w" => args.write = true,
            "--ttl" => {
                let value = words.next().ok_or(SHARE_USAGE)?;
                let ttl = humantime::parse_duration(value)
                    .map_err(|_| format!("--ttl: not a duration: {value} (e.g. 10m)"))?;
                if ttl.is_zero() || ttl > MAX_TTL {
                    return Err("--ttl: between 1s and 24h".into());
                }
                args.ttl = ttl;
            }
            w if w.starts_with('-') => return Err(format!("{w}: unknown option; {SHARE_USAGE}")),
            w if args.session.is_none() => args.session = Some(w.to_string()),
            _ => return Err(SHARE_USAGE.into()),
        }
    }
    Ok(args)
}

/// Writes all of `data` to `fd` (nonblocking or not), waiting up to 5 s
/// for room; false when the reader is gone or stuck.
fn write_all(fd: RawFd, mut data: &[u8]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: fd is one of the session's descriptors, open while it runs.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(borrowed, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if Instant::now() < deadline => {
                let mut fds = [PollFd::new(borrowed, PollFlags::POLLOUT)];
                let _ = poll(&mut fds, connect::poll_timeout(Duration::from_millis(100)));
            }
            Err(_) => return false,
        }
    }
    true
}

/// `share [SESSION] [--write] [--ttl D]`: prints a code for one of the
/// caller's live sessions (the monitor makes it).
pub fn serve_share(session: &mut Session<'_>, args: &Result<ShareArgs, String>) {
    let args = match args {
        Ok(args) => args.clone(),
        Err(e) => return session.deny(e),
    };
    let newline = if session.request.pty.is_some() {
        "\r\n"
    } else {
        "\n"
    };
    let text = match session.link.ask(Ask::Share {
        session: args.session.clone(),
        write: args.write,
        ttl_secs: args.ttl.as_secs(),
        newline: newline.to_string(),
    }) {
        Some(Answer::Share(Ok(text))) => text,
        Some(Answer::Share(Err(reason))) => return session.deny(&reason),
        _ => return session.deny("jms: the bastion daemon did not answer"),
    };
    if let Some(out) = session.fds[1].as_ref() {
        write_all(out.as_raw_fd(), text.as_bytes());
    }
    session.send(&Response::SessionEnded {
        exit_status: Some(0),
        message: None,
    });
}

/// `join CODE`: the shared session's output live on the joiner's terminal;
/// her keys into it when the owner allowed (the monitor checks the code,
/// gives the output pipe and forwards the keys).
pub fn serve_join(session: &mut Session<'_>, typed: &str) {
    let (joined, pipe) = match session.link.ask_with_fds(Ask::Join {
        code: typed.to_string(),
    }) {
        Some((Answer::Join(Ok(joined)), mut fds)) if fds.len() == 1 => (joined, fds.remove(0)),
        Some((Answer::Join(Err(reason)), _)) => return session.deny(&reason),
        _ => return session.deny("jms: the bastion daemon did not answer"),
    };
    let (Some(input), Some(output)) = (
        session.fds[0].as_ref().map(|f| f.as_raw_fd()),
        session.fds[1].as_ref().map(|f| f.as_raw_fd()),
    ) else {
        session.link.ask(Ask::JoinEnded);
        return session.deny("the agent must pass its terminal");
    };
    let write = joined.write;
    session.send(&Response::SessionStarted {
        session_id: session.id.clone(),
    });
    let banner = format!(
        "\r\n[jms: you joined {}'s session on {} as {} ({}); Ctrl-] leaves]\r\n",
        joined.owner,
        joined.asset,
        joined.account,
        if write { "you may type" } else { "read-only" }
    );
    let mut gone = !write_all(output, banner.as_bytes());
    let mut ended = false;
    let mut told_read_only = false;
    let mut buf = vec![0u8; 64 * 1024];
    while !gone && !ended {
        // SAFETY: these descriptors stay open for the whole loop.
        let (b_control, b_tap, b_in) = unsafe {
            (
                BorrowedFd::borrow_raw(session.control.as_raw_fd()),
                BorrowedFd::borrow_raw(pipe.as_raw_fd()),
                BorrowedFd::borrow_raw(input),
            )
        };
        let mut fds = [
            PollFd::new(b_control, PollFlags::POLLIN),
            PollFd::new(b_tap, PollFlags::POLLIN),
            PollFd::new(b_in, PollFlags::POLLIN),
        ];
        match poll(&mut fds, connect::poll_timeout(Duration::from_secs(30))) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => break,
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        let any = |r: PollFlags| {
            r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
        };
        if any(revents[0]) {
            match jms_proto::read_frame::<Request>(&mut &session.control) {
                Ok(_) | Err(jms_proto::FrameError::Malformed(_)) => {}
                Err(_) => gone = true,
            }
        }
        if any(revents[1]) {
            match nix::unistd::read(pipe.as_raw_fd(), &mut buf) {
                Ok(0) => ended = true,
                Ok(n) => gone |= !write_all(output, &buf[..n]),
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(_) => ended = true,
            }
        }
        if any(revents[2]) {
            match nix::unistd::read(input, &mut buf) {
                Ok(0) => gone = true,
                Ok(n) => {
                    let data = &buf[..n];
                    let (keys, leave) = match data.iter().position(|b| *b == LEAVE_KEY) {
                        Some(at) => (&data[..at], true),
                        None => (data, false),
                    };
                    if write {
                        for chunk in keys.chunks(crate::wire::INPUT_CHUNK) {
                            session
                                .link
                                .send(&crate::wire::FromWorker::JoinInput(chunk.to_vec()));
                        }
                    } else if !keys.is_empty() && !told_read_only {
                        told_read_only = true;
                        gone |= !write_all(
                            output,
                            b"\r\n[jms: read-only: your keys are not sent; Ctrl-] leaves]\r\n",
                        );
                    }
                    if leave {
                        break;
                    }
                }
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(_) => gone = true,
            }
        }
    }
    drop(pipe);
    let why = match session.link.ask(Ask::JoinEnded) {
        Some(Answer::JoinEnded(why)) => why,
        _ => None,
    };
    info!(event = "share_leave", shared = %joined.session, ended);
    let message = if ended {
        Some(match why.filter(|r| !r.is_empty()) {
            Some(why) => format!("the shared session ended ({why})"),
            None => "the shared session ended".to_string(),
        })
    } else {
        None
    };
    session.send(&Response::SessionEnded {
        exit_status: Some(0),
        message,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_and_join_are_reserved_words_with_their_arguments() {
        assert_eq!(
            classify("share"),
            Some(Wanted::Share(Ok(ShareArgs {
                session: None,
                write: false,
                ttl: DEFAULT_TTL
            })))
        );
        assert_eq!(
            classify("share 3f2a --write --ttl 5m"),
            Some(Wanted::Share(Ok(ShareArgs {
                session: Some("3f2a".into()),
                write: true,
                ttl: Duration::from_secs(300)
            })))
        );
        assert!(matches!(
            classify("share --bogus"),
            Some(Wanted::Share(Err(_)))
        ));
        assert!(matches!(
            classify("share --ttl 0s"),
            Some(Wanted::Share(Err(_)))
        ));
        assert_eq!(
            classify("join abcd-efgh"),
            Some(Wanted::Join("abcd-efgh".into()))
        );
        assert_eq!(classify("web01 share"), None);
        assert_eq!(classify("shared"), None);
    }
}
