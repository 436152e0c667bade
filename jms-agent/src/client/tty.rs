//! The engineer's terminal (stdin, when sshd gave the session a pty): raw
//! mode with the original settings always restored (on drop, hence on
//! errors and panics too; the loops restore before acting on a signal),
//! the window size, and cooked-mode prompts for typed credentials.

use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{self, InputFlags, LocalFlags, SetArg, Termios};

use crate::client::signals::Signals;

nix::ioctl_read_bad!(get_window_size, libc::TIOCGWINSZ, libc::winsize);

/// Used when the terminal reports no size.
pub const FALLBACK_SIZE: Size = Size { cols: 80, rows: 24 };

/// A terminal size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub cols: u16,
    pub rows: u16,
}

/// stdin as a terminal, with the settings it had when the agent started.
pub struct Terminal {
    original: Termios,
}

/// What a prompt got.
#[derive(Debug)]
pub enum Answer {
    Line(String),
    /// End of input (Ctrl-D on an empty line, or the terminal is gone).
    Closed,
    /// A terminating signal (Ctrl-C in the prompt): the number.
    Signalled(i32),
}

fn stdin() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the life of the process (the agent never
    // closes it; after a pipe hand-off it is replaced, never closed).
    unsafe { BorrowedFd::borrow_raw(0) }
}

impl Terminal {
    /// stdin, when it is a terminal.
    pub fn stdin() -> Option<Terminal> {
        let fd = stdin();
        if !nix::unistd::isatty(fd.as_raw_fd()).unwrap_or(false) {
            return None;
        }
        termios::tcgetattr(fd)
            .ok()
            .map(|original| Terminal { original })
    }

    /// The window size (the fallback when the terminal reports 0×0).
    pub fn size(&self) -> Size {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the struct we own.
        match unsafe { get_window_size(stdin().as_raw_fd(), &mut ws) } {
            Ok(_) if ws.ws_col > 0 && ws.ws_row > 0 => Size {
                cols: ws.ws_col,
                rows: ws.ws_row,
            },
            _ => FALLBACK_SIZE,
        }
    }

    /// Raw mode: bytes pass untouched, no echo, no signals from keys.
    pub fn raw(&self) -> io::Result<()> {
        let mut raw = self.original.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin(), SetArg::TCSADRAIN, &raw).map_err(io::Error::from)
    }

    /// The settings the terminal had when the agent started.
    pub fn restore(&self) {
        let _ = termios::tcsetattr(stdin(), SetArg::TCSADRAIN, &self.original);
    }

    /// Asks one line in cooked mode (the terminal's own line editing),
    /// echoing it or not, then leaves the terminal in its original mode.
    /// A terminating signal cancels the prompt.
    pub fn prompt(&self, label: &str, echo: bool, signals: &Signals) -> io::Result<Answer> {
        let mut cooked = self.original.clone();
        cooked.local_flags |= LocalFlags::ICANON | LocalFlags::ISIG;
        cooked.input_flags |= InputFlags::ICRNL;
        if echo {
            cooked.local_flags |= LocalFlags::ECHO;
        } else {
            cooked.local_flags &= !(LocalFlags::ECHO | LocalFlags::ECHONL);
        }
        termios::tcsetattr(stdin(), SetArg::TCSAFLUSH, &cooked).map_err(io::Error::from)?;
        let answer = read_line(label, signals);
        if !echo {
            let _ = write_all_stdout(b"\r\n");
        }
        self.restore();
        answer
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        self.restore();
    }
}

fn read_line(label: &str, signals: &Signals) -> io::Result<Answer> {
    write_all_stdout(label.as_bytes())?;
    let mut line = Vec::new();
    loop {
        let mut fds = [
            PollFd::new(stdin(), PollFlags::POLLIN),
            PollFd::new(signals.term_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(_) => {}
        }
        if let Some(sig) = signals.take_termination() {
            return Ok(Answer::Signalled(sig));
        }
        if fds[0].any().unwrap_or(false) {
            let mut buffer = [0u8; 1024];
            // Cooked mode hands over at most one line per read.
            match nix::unistd::read(stdin().as_raw_fd(), &mut buffer) {
                Ok(0) | Err(Errno::EIO) => return Ok(Answer::Closed),
                Ok(n) => {
                    line.extend_from_slice(&buffer[..n]);
                    if line.ends_with(b"\n") {
                        line.pop();
                        if line.ends_with(b"\r") {
                            line.pop();
                        }
                        return Ok(Answer::Line(String::from_utf8_lossy(&line).into_owned()));
                    }
                    if line.len() > 4096 {
                        return Ok(Answer::Closed);
                    }
                }
                Err(Errno::EINTR | Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Writes everything to stdout (the terminal in a pty session), unbuffered.
pub fn write_all_stdout(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// Whether `fd` is readable within `timeout_ms` (for escape sequences).
pub fn readable_within(fd: BorrowedFd<'_>, timeout_ms: u16) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(timeout_ms)), Ok(n) if n > 0)
}

/// stdin, borrowed (for polling).
pub fn stdin_fd() -> BorrowedFd<'static> {
    stdin()
}
