//! The interactive menu (`ssh -t bastion`): the assets the engineer is
//! granted, searched and paged; a pick opens a session on the same
//! terminal, and its end brings the menu back.
//!
//! - [`catalog`]: rows from `Response::Assets`, and the search.
//! - [`state`]: the menu's state and how keys change it (pure).
//! - [`render`]: the screen as text (pure; only the visible page).
//! - [`keys`]: bytes from the terminal to keys.
//! - this file: the loop — terminal, signals, the daemon, sessions.

pub mod catalog;
pub mod keys;
pub mod render;
pub mod state;

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::Duration;

use jms_proto::{Client, ListedAsset, Request, Response, SessionRequest};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::client::invocation::Invocation;
use crate::client::session::{self, one_line, pty_info, Ending};
use crate::client::signals::Signals;
use crate::client::tty::{stdin_fd, write_all_stdout, Terminal};
use catalog::Catalog;
use keys::Decoder;
use state::{Effect, Menu, Status};

/// How long the daemon may take to list the assets.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the rest of an escape sequence after ESC.
const ESCAPE_WAIT_MS: u16 = 50;

/// Leaves the alternate screen, shows the cursor, resets colours.
const LEAVE_SCREEN: &str = "\x1b[0m\x1b[?25h\x1b[?1049l";

/// Undoes what a target session may have left on: application cursor
/// keys and keypad, mouse reporting, bracketed paste, hidden cursor,
/// colours; then the alternate screen.
const ENTER_SCREEN: &str =
    "\x1b[0m\x1b[?1l\x1b>\x1b[?1000l\x1b[?1002l\x1b[?1006l\x1b[?2004l\x1b[?25h\x1b[?1049h\x1b[H\x1b[2J";

/// Asks the daemon for the engineer's assets.
pub fn list_assets(socket: &Path) -> Result<Vec<ListedAsset>, String> {
    match Client::call_once(socket, LIST_TIMEOUT, &Request::ListAssets) {
        Ok(Response::Assets { assets }) => Ok(assets),
        Ok(Response::Forbidden { reason }) => Err(format!("jms-agentd refused the list: {reason}")),
        Ok(Response::Error { message }) => Err(format!("jms-agentd: {message}")),
        Ok(_) => Err("unexpected answer from jms-agentd".into()),
        Err(e) => Err(format!(
            "jms-agentd is unreachable at {}: {e}",
            socket.display()
        )),
    }
}

/// The menu on `terminal` until she quits; the agent's exit status.
pub fn run(
    socket: &Path,
    invocation: &Invocation,
    user: &str,
    terminal: &Terminal,
    signals: &Signals,
) -> u8 {
    let assets = match list_assets(socket) {
        Ok(assets) => assets,
        Err(line) => {
            eprintln!("jms-agent: {}", one_line(&line));
            return 1;
        }
    };
    let mut menu = Menu::new(user, Catalog::new(assets));
    let screen = match AlternateScreen::enter(terminal) {
        Ok(screen) => screen,
        Err(e) => {
            eprintln!("jms-agent: cannot prepare the terminal: {e}");
            return 1;
        }
    };
    let status = Looping {
        socket,
        invocation,
        terminal,
        signals,
        colour: invocation.term != "dumb",
    }
    .run(&mut menu);
    drop(screen);
    status
}

struct Looping<'a> {
    socket: &'a Path,
    invocation: &'a Invocation,
    terminal: &'a Terminal,
    signals: &'a Signals,
    colour: bool,
}

/// What woke the loop.
enum Wake {
    Terminated(i32),
    Resized,
    Byte(u8),
    EscapeTimeout,
    TerminalGone,
}

impl Looping<'_> {
    fn run(&self, menu: &mut Menu) -> u8 {
        let mut size = self.terminal.size();
        menu.set_page_size(render::layout(size.rows).page);
        let mut decoder = Decoder::new();
        let mut clear = true;
        let mut keys = Vec::new();
        loop {
            let frame = render::render(menu, size, self.colour);
            if write_all_stdout(render::paint(&frame, size, clear).as_bytes()).is_err() {
                return 1;
            }
            clear = false;
            keys.clear();
            match self.wait(decoder.pending()) {
                Wake::Terminated(sig) => return exit_for_signal(sig),
                Wake::TerminalGone => return 0,
                Wake::Resized => {
                    size = self.terminal.size();
                    menu.set_page_size(render::layout(size.rows).page);
                    clear = true;
                }
                Wake::EscapeTimeout => keys.extend(decoder.flush()),
                Wake::Byte(byte) => decoder.feed(byte, &mut keys),
            }
            for key in keys.drain(..) {
                match menu.handle(key) {
                    Effect::Draw => {}
                    Effect::Repaint => clear = true,
                    Effect::Quit => return 0,
                    Effect::Reload => self.reload(menu),
                    Effect::Connect(command_line) => {
                        if let Some(sig) = self.connect(menu, command_line) {
                            return exit_for_signal(sig);
                        }
                        size = self.terminal.size();
                        menu.set_page_size(render::layout(size.rows).page);
                        decoder = Decoder::new();
                        clear = true;
                        break;
                    }
                }
            }
        }
    }

    /// Waits for a byte from the terminal or a signal. With an escape
    /// sequence pending, waits at most [`ESCAPE_WAIT_MS`].
    fn wait(&self, escape_pending: bool) -> Wake {
        loop {
            let timeout = if escape_pending {
                PollTimeout::from(ESCAPE_WAIT_MS)
            } else {
                PollTimeout::NONE
            };
            let mut fds = [
                PollFd::new(stdin_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.winch_fd(), PollFlags::POLLIN),
                PollFd::new(self.signals.term_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Err(Errno::EINTR) => continue,
                Err(_) => return Wake::TerminalGone,
                Ok(0) => return Wake::EscapeTimeout,
                Ok(_) => {}
            }
            let input = fds[0].revents().unwrap_or(PollFlags::empty());
            if let Some(sig) = self.signals.take_termination() {
                return Wake::Terminated(sig);
            }
            if self.signals.take_winch() {
                return Wake::Resized;
            }
            if input.contains(PollFlags::POLLIN) {
                return match read_byte(stdin_fd()) {
                    Some(byte) => Wake::Byte(byte),
                    None => Wake::TerminalGone,
                };
            }
            if input.intersects(PollFlags::POLLHUP | PollFlags::POLLERR | PollFlags::POLLNVAL) {
                return Wake::TerminalGone;
            }
        }
    }

    fn reload(&self, menu: &mut Menu) {
        match list_assets(self.socket) {
            Ok(assets) => menu.replace_catalog(Catalog::new(assets)),
            Err(line) => menu.set_status(Status::Error(one_line(&line))),
        }
    }

    /// Runs a session on this terminal, then reloads the list and says
    /// how it ended. A terminating signal is returned.
    fn connect(&self, menu: &mut Menu, command_line: String) -> Option<i32> {
        let _ = write_all_stdout(
            format!("{LEAVE_SCREEN}jms: connecting to {command_line} …\r\n").as_bytes(),
        );
        let request = SessionRequest {
            command_line: command_line.clone(),
            pty: Some(pty_info(self.terminal, &self.invocation.term)),
            client: self.invocation.client.clone(),
        };
        let fds = [0, 1, 2].map(|fd| {
            // SAFETY: the agent's standard streams stay open while it runs.
            unsafe { BorrowedFd::borrow_raw(fd) }
        });
        let ending = session::run(
            self.socket,
            request,
            fds,
            Some(self.terminal),
            self.signals,
            || {},
        );
        if let Ending::Signalled(sig) = ending {
            return Some(sig);
        }
        let _ = self.terminal.raw();
        let _ = write_all_stdout(ENTER_SCREEN.as_bytes());
        self.reload(menu);
        let status = match &ending {
            Ending::Ended {
                message: Some(message),
                ..
            } => Status::Error(format!("{command_line}: {}", one_line(message))),
            Ending::Ended { exit_status, .. } => Status::Info(match exit_status {
                Some(code) => format!("session to {command_line} ended (exit status {code})"),
                None => format!("session to {command_line} ended"),
            }),
            Ending::Denied(reason) | Ending::Failed(reason) => Status::Error(one_line(reason)),
            Ending::Signalled(_) => unreachable!("returned above"),
        };
        menu.set_status(status);
        None
    }
}

/// One byte from the terminal (one per `read`, so bytes typed ahead of a
/// pick stay in the terminal for the session); `None` when it is gone.
fn read_byte(fd: BorrowedFd<'_>) -> Option<u8> {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(fd.as_raw_fd(), &mut byte) {
            Ok(1) => return Some(byte[0]),
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            _ => return None,
        }
    }
}

fn exit_for_signal(sig: i32) -> u8 {
    u8::try_from(128 + sig).unwrap_or(1)
}

/// Raw mode and the alternate screen while the menu shows; both undone
/// on drop (the terminal itself restores its settings on drop too).
struct AlternateScreen<'a> {
    terminal: &'a Terminal,
}

impl<'a> AlternateScreen<'a> {
    fn enter(terminal: &'a Terminal) -> std::io::Result<AlternateScreen<'a>> {
        terminal.raw()?;
        let screen = AlternateScreen { terminal };
        write_all_stdout(ENTER_SCREEN.as_bytes())?;
        Ok(screen)
    }
}

impl Drop for AlternateScreen<'_> {
    fn drop(&mut self) {
        let _ = write_all_stdout(LEAVE_SCREEN.as_bytes());
        self.terminal.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_map_to_shell_style_statuses() {
        assert_eq!(exit_for_signal(1), 129);
        assert_eq!(exit_for_signal(15), 143);
    }

    #[test]
    fn an_unreachable_daemon_is_one_line() {
        let dir = std::env::temp_dir().join(format!("jms-agent-menu-{}", std::process::id()));
        let line = list_assets(&dir.join("nothing.sock")).unwrap_err();
        assert!(
            line.contains("unreachable") && !line.contains('\n'),
            "{line}"
        );
    }
}
