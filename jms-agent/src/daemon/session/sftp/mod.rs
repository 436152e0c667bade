//! The SFTP proxy: `sftp bastion` and scp 9.x (which speaks SFTP) land
//! here, in the daemon, on the engineer's stdin/stdout.
//!
//! The root `/` lists the assets she may use over SFTP now as folders
//! (`/web01`, or `/root@web01` and `/deploy@web01` when several accounts
//! are usable: see [`folders`] for the rule). A path inside a folder, or
//! scp's `web01:/path`, goes to an SFTP session on that asset as that
//! account, opened on first use through [`Upstream`] and kept for the
//! session. Requests are forwarded with their ids, handles and paths
//! rewritten; nothing the client sends reaches a target unparsed, and a
//! path only ever reaches the asset its folder names (see [`paths`]).
//!
//! Actions are checked with the grant engine at each operation:
//! OPEN for reading needs `download`; OPEN for writing, creating,
//! truncating or appending, MKDIR, SETSTAT/FSETSTAT, links and RENAME need
//! `upload`; REMOVE, RMDIR and a RENAME over an existing file also need
//! `delete`. A refusal is an SSH_FX_PERMISSION_DENIED with the reason, and
//! a transfer record. Each upload and download (per handle, with the bytes
//! written or read, at CLOSE), delete, rename, mkdir and link is logged
//! through [`TransferLog`] with its result. An OPEN without WRITE reads
//! (OpenSSH's sftp-server opens read-only then, whatever else the flags
//! say), so it needs `download` and is logged as one; READ and WRITE are
//! refused on a handle not opened for them; unknown open flags are refused.
//!
//! [`serve_watched`] ends the session from outside its input: the live
//! session's orders (an administrator's kill, a revoked grant) and the
//! idle timeout and maximum length ([`Ending`]).
//!
//! Why a hand-written codec rather than `russh-sftp`: the daemon is
//! synchronous (threads, no async runtime), and a proxy must pass on
//! packets it does not model (OpenSSH's extensions, attributes with
//! extended fields) byte for byte, patching ids and handles in place on
//! the hot READ/WRITE path; a typed client/server library would decode and
//! re-encode every packet. SFTP v3 is small: [`codec`] is the whole of it.

pub mod codec;
pub mod folders;
pub mod paths;
mod proxy;
mod upstream;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use jms_core::Policy;

pub use self::folders::Folder;
use crate::daemon::live_session::LiveSession;
use crate::daemon::session::connect;
use crate::daemon::session::relay::Limits;
use crate::daemon::session::transfer::TransferLog;

/// Subsystem command strings sshd may put in `SSH_ORIGINAL_COMMAND` for
/// sftp (Debian's, Red Hat's, the built-in server, a bare name).
pub const SUBSYSTEM_COMMANDS: &[&str] = &[
    "/usr/lib/openssh/sftp-server",
    "/usr/libexec/openssh/sftp-server",
    "/usr/libexec/sftp-server",
    "internal-sftp",
    "sftp-server",
];

/// Whether `command_line` is the sftp subsystem (its options, like
/// `-l INFO`, ignored).
pub fn is_subsystem_command(command_line: &str) -> bool {
    command_line
        .split_ascii_whitespace()
        .next()
        .is_some_and(|program| SUBSYSTEM_COMMANDS.contains(&program))
}

/// What one SFTP session needs from the daemon.
pub struct SftpContext<'a> {
    /// The jms user (her bastion username).
    pub user: &'a str,
    /// The grant decisions (the monitor's); asked at each decision, so a
    /// reload applies to the next operation.
    pub folders: &'a dyn FolderDecisions,
    /// Opens SFTP sessions on targets.
    pub upstream: &'a dyn Upstream,
    /// Receives the transfer records.
    pub log: &'a dyn TransferLog,
}

/// The decisions the SFTP proxy needs, for its user, now.
pub trait FolderDecisions: Sync {
    /// The root's folders: (folder name, folder).
    fn list(&self) -> Vec<(String, Folder)>;
    /// One folder name.
    fn resolve(&self, name: &str) -> Result<Folder, folders::Unresolved>;
    /// Whether `action` is granted on `folder`; `Err` is why not.
    fn check(&self, folder: &Folder, action: jms_core::model::Action) -> Result<(), String>;
}

/// [`FolderDecisions`] straight from a policy (the monitor's answers, and
/// tests).
pub struct PolicyFolders<'a> {
    pub user: &'a str,
    pub policy: &'a (dyn Fn() -> Arc<Policy> + Sync),
}

impl FolderDecisions for PolicyFolders<'_> {
    fn list(&self) -> Vec<(String, Folder)> {
        folders::list(&(self.policy)(), self.user, chrono::Utc::now())
    }
    fn resolve(&self, name: &str) -> Result<Folder, folders::Unresolved> {
        folders::resolve(&(self.policy)(), self.user, name, chrono::Utc::now())
    }
    fn check(&self, folder: &Folder, action: jms_core::model::Action) -> Result<(), String> {
        folders::check(
            &(self.policy)(),
            self.user,
            folder,
            action,
            chrono::Utc::now(),
        )
    }
}

/// Opens an SFTP subsystem on a target. The daemon implements it with
/// OpenSSH's `ssh -s … sftp` (the connect module); tests with a local
/// `sftp-server`.
pub trait Upstream: Sync {
    /// An SFTP byte stream to `asset` logged in as `account` (the
    /// account's name in the policy). The proxy runs the SFTP handshake.
    /// Called on the session's thread, at the first request for that
    /// folder and again after the connection died. The error's message
    /// goes to the engineer: it must not hold a secret.
    fn open(&self, asset: &str, account: &str) -> Result<UpstreamStreams, UpstreamError>;
}

/// The two directions of an upstream SFTP session.
pub struct UpstreamStreams {
    /// Requests to the target's SFTP server.
    pub writer: Box<dyn Write + Send>,
    /// Its replies.
    pub reader: Box<dyn Read + Send>,
    /// Held until the session ends, then dropped, after `writer` was
    /// closed and the target had a few seconds to finish. Dropping it must
    /// end `reader` (kill and reap the ssh process).
    pub guard: Box<dyn Send>,
}

/// An upstream that could not be opened; the message is for the engineer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

/// Why an SFTP session ended badly (a clean end of the engineer's input is
/// `Ok`).
#[derive(Debug, thiserror::Error)]
pub enum SftpError {
    /// Reading from or writing to the engineer failed: she is gone.
    #[error("engineer's stream: {0}")]
    Client(#[from] std::io::Error),
    /// She sent something that is not SFTP (an oversized or truncated
    /// packet): the session was closed.
    #[error("not an SFTP stream: {0}")]
    Protocol(String),
    /// Ended from outside: a limit, an administrator, a revoked grant
    /// (the line for the engineer and the audit), with what went through.
    #[error("{0}")]
    Ended(String, SftpStats),
}

/// Totals of a finished session, for its end record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SftpStats {
    /// File bytes written to targets.
    pub bytes_uploaded: u64,
    /// File bytes read from targets.
    pub bytes_downloaded: u64,
}

/// Serves the SFTP protocol on the engineer's `input` (her stdin) and
/// `output` (her stdout) until she closes her side; returns when every
/// upstream session is closed. Blocks; runs upstream readers on threads of
/// its own.
pub fn serve(
    ctx: &SftpContext<'_>,
    input: OwnedFd,
    output: OwnedFd,
) -> Result<SftpStats, SftpError> {
    serve_watched(ctx, input, output, Ending::default())
}

/// What ends an SFTP session besides the engineer: the live session's end
/// orders, the idle timeout (no request from her for that long) and the
/// maximum length.
#[derive(Default)]
pub struct Ending<'a> {
    pub live: Option<&'a LiveSession>,
    pub limits: Limits,
}

/// [`serve`], ended early by `ending` with [`SftpError::Ended`].
pub fn serve_watched(
    ctx: &SftpContext<'_>,
    input: OwnedFd,
    output: OwnedFd,
    ending: Ending<'_>,
) -> Result<SftpStats, SftpError> {
    for fd in [&input, &output] {
        widen_pipe(fd);
    }
    let ended = Mutex::new(None);
    let now = Instant::now();
    let input = Watched {
        file: File::from(input),
        ending,
        started: now,
        last_input: now,
        ended: &ended,
    };
    let (stats, result) = proxy::run(ctx, input, File::from(output));
    match ended.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(why) => Err(SftpError::Ended(why, stats)),
        None => result.map(|()| stats),
    }
}

/// The engineer's input, read only once it is readable: waiting, it
/// watches the live session's wake pipe and the limits, and fails with
/// the reason (kept in `ended`) when the session must end.
struct Watched<'a> {
    file: File,
    ending: Ending<'a>,
    started: Instant,
    last_input: Instant,
    ended: &'a Mutex<Option<String>>,
}

impl Watched<'_> {
    fn end(&self, why: String) -> std::io::Error {
        let error = std::io::Error::new(std::io::ErrorKind::ConnectionAborted, why.clone());
        *self.ended.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        error
    }
}

impl Read for Watched<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let now = Instant::now();
            let limits = self.ending.limits;
            if let Some(why) = limits.reached(now, self.started, self.last_input) {
                return Err(self.end(why));
            }
            let timeout = limits
                .deadline(self.started, self.last_input)
                .map_or(PollTimeout::NONE, |at| {
                    connect::poll_timeout(at.saturating_duration_since(now))
                });
            let wake = self.ending.live.map(LiveSession::wake_fd);
            let mut fds = vec![PollFd::new(self.file.as_fd(), PollFlags::POLLIN)];
            if let Some(fd) = wake {
                // SAFETY: the live session (and its pipe) outlives the proxy.
                fds.push(PollFd::new(
                    unsafe { BorrowedFd::borrow_raw(fd) },
                    PollFlags::POLLIN,
                ));
            }
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let revents: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            if revents
                .get(1)
                .is_some_and(|r| r.contains(PollFlags::POLLIN))
            {
                if let Some(why) = self.ending.live.and_then(|live| live.take().end) {
                    return Err(self.end(why));
                }
            }
            if revents[0].intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR) {
                let n = self.file.read(buf)?;
                self.last_input = Instant::now();
                return Ok(n);
            }
        }
    }
}

impl AsRawFd for Watched<'_> {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// Pipe capacity asked for on the engineer's descriptors when they are
/// pipes: a whole 256 KiB SFTP packet fits, so a WRITE or DATA crosses in
/// one go instead of four 64 KiB round trips through the scheduler.
const PIPE_SIZE: i32 = 1024 * 1024;

/// Enlarges a pipe's buffer (nothing for other descriptors; best effort).
pub fn widen_pipe(fd: &impl std::os::fd::AsRawFd) {
    use nix::fcntl::{fcntl, FcntlArg};
    let _ = fcntl(fd.as_raw_fd(), FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsystem_commands_are_recognised() {
        for line in [
            "/usr/lib/openssh/sftp-server",
            "/usr/libexec/openssh/sftp-server -l INFO",
            "internal-sftp",
            "sftp-server",
        ] {
            assert!(is_subsystem_command(line), "{line:?} is the sftp subsystem");
        }
        for line in ["web01", "sftp", "/tmp/sftp-server", "scp -t web01:/tmp", ""] {
            assert!(
                !is_subsystem_command(line),
                "{line:?} is not the sftp subsystem"
            );
        }
    }
}
