//! Signals as readable file descriptors (self-pipes), so the menu and the
//! session loop can `poll` them next to the terminal and the socket.
//!
//! - SIGWINCH: the terminal was resized (redraw, or send `Resize`).
//! - SIGTERM, SIGHUP, SIGINT, SIGQUIT: stop — restore the terminal first.
//!   (In raw mode the terminal sends no SIGINT; in a cooked prompt Ctrl-C
//!   cancels through here.)
//! - SIGTSTP, SIGTTIN, SIGTTOU are ignored: there is no job control.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::libc;
use nix::sys::signal::{signal, SigHandler, Signal};
use signal_hook::SigId;

/// The signals that end the agent.
pub const TERMINATING: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT];

/// The two self-pipes and which terminating signal came last.
pub struct Signals {
    winch: UnixStream,
    winch_tx: UnixStream,
    term: UnixStream,
    term_tx: UnixStream,
    last: Arc<AtomicUsize>,
    ids: Vec<SigId>,
}

impl Signals {
    /// Pipes that no signal writes to (tests call [`Signals::notify`]).
    pub fn unregistered() -> io::Result<Signals> {
        let (winch, winch_tx) = UnixStream::pair()?;
        let (term, term_tx) = UnixStream::pair()?;
        for stream in [&winch, &term, &winch_tx, &term_tx] {
            stream.set_nonblocking(true)?;
        }
        Ok(Signals {
            winch,
            winch_tx,
            term,
            term_tx,
            last: Arc::new(AtomicUsize::new(0)),
            ids: Vec::new(),
        })
    }

    /// Routes the signals to the pipes (and ignores the job-control ones).
    pub fn install() -> io::Result<Signals> {
        let mut signals = Signals::unregistered()?;
        signals.ids.push(signal_hook::low_level::pipe::register(
            libc::SIGWINCH,
            signals.winch_tx.try_clone()?,
        )?);
        for sig in TERMINATING {
            signals.ids.push(signal_hook::flag::register_usize(
                sig,
                Arc::clone(&signals.last),
                sig as usize,
            )?);
            signals.ids.push(signal_hook::low_level::pipe::register(
                sig,
                signals.term_tx.try_clone()?,
            )?);
        }
        for sig in [Signal::SIGTSTP, Signal::SIGTTIN, Signal::SIGTTOU] {
            // SAFETY: SIG_IGN installs no handler code.
            unsafe { signal(sig, SigHandler::SigIgn) }.map_err(io::Error::from)?;
        }
        Ok(signals)
    }

    /// Readable when the window changed.
    pub fn winch_fd(&self) -> BorrowedFd<'_> {
        self.winch.as_fd()
    }

    /// Readable when a terminating signal came.
    pub fn term_fd(&self) -> BorrowedFd<'_> {
        self.term.as_fd()
    }

    /// Whether the window changed since the last call (drains the pipe).
    pub fn take_winch(&self) -> bool {
        drain(&self.winch)
    }

    /// The terminating signal that came, if any (drains the pipe).
    pub fn take_termination(&self) -> Option<i32> {
        if drain(&self.term) {
            match self.last.load(Ordering::SeqCst) {
                0 => Some(libc::SIGTERM),
                sig => Some(sig as i32),
            }
        } else {
            None
        }
    }

    /// Simulates a signal (for tests): `SIGWINCH` or a terminating one.
    pub fn notify(&self, sig: libc::c_int) {
        use std::io::Write;
        if sig == libc::SIGWINCH {
            let _ = (&self.winch_tx).write(b"W");
        } else {
            self.last.store(sig as usize, Ordering::SeqCst);
            let _ = (&self.term_tx).write(b"T");
        }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// Reads everything pending on a non-blocking pipe; whether there was any.
fn drain(mut pipe: &UnixStream) -> bool {
    let mut any = false;
    let mut buffer = [0u8; 64];
    while let Ok(n) = pipe.read(&mut buffer) {
        if n == 0 {
            break;
        }
        any = true;
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_resize_is_seen_once() {
        let signals = Signals::unregistered().unwrap();
        assert!(!signals.take_winch());
        signals.notify(libc::SIGWINCH);
        signals.notify(libc::SIGWINCH);
        assert!(signals.take_winch());
        assert!(!signals.take_winch(), "drained");
    }

    #[test]
    fn a_simulated_termination_names_its_signal() {
        let signals = Signals::unregistered().unwrap();
        assert_eq!(signals.take_termination(), None);
        signals.notify(libc::SIGHUP);
        assert_eq!(signals.take_termination(), Some(libc::SIGHUP));
    }
}
