//! A scripted terminal: a program (usually `ssh -tt`) on a fresh pty of a
//! given size, its output kept in a terminal emulator (`vt100`) so a test
//! reads the screen as a person would see it, types keys, and resizes the
//! window (the kernel sends SIGWINCH, ssh forwards the new size).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::run::wait_until;

/// What the emulator and the raw transcript hold.
#[derive(Default)]
struct Shared {
    parser: Option<vt100::Parser>,
    transcript: Vec<u8>,
    closed: bool,
}

/// A program running on a pty of its own.
pub struct Terminal {
    child: Child,
    master: File,
    shared: Arc<Mutex<Shared>>,
    description: String,
}

/// The visible screen at one moment.
#[derive(Debug, Clone)]
pub struct Screen {
    /// One string per row, trailing blanks trimmed.
    pub rows: Vec<String>,
    /// (row, column) of the cursor.
    pub cursor: (u16, u16),
    /// Whether the program switched to the alternate screen.
    pub alternate: bool,
    /// Rows (indices) that contain reverse-video cells.
    pub highlighted: Vec<usize>,
    /// Whether the cursor is shown (full-screen programs such as the menu
    /// hide it while they draw a frame).
    pub cursor_visible: bool,
}

impl Screen {
    /// The screen as text, one row per line.
    pub fn text(&self) -> String {
        self.rows.join("\n")
    }

    /// Whether any row contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.rows.iter().any(|r| r.contains(needle))
    }
}

impl std::fmt::Display for Screen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self
            .rows
            .iter()
            .map(|r| r.chars().count())
            .max()
            .unwrap_or(0);
        writeln!(f, "┌{}┐", "─".repeat(width))?;
        for row in &self.rows {
            let pad = width - row.chars().count();
            writeln!(f, "│{row}{}│", " ".repeat(pad))?;
        }
        write!(f, "└{}┘ cursor at {:?}", "─".repeat(width), self.cursor)
    }
}

fn winsize(cols: u16, rows: u16) -> libc::winsize {
    libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Starts `command` as the session leader of a new `cols`×`rows` pty (its
/// controlling terminal), with `TERM=xterm-256color`: the child and the
/// pty's master side (the one pty opener of the suite and its benches).
pub fn spawn_on_pty(mut command: Command, cols: u16, rows: u16) -> std::io::Result<(Child, File)> {
    let (mut master, mut slave) = (-1, -1);
    let size = winsize(cols, rows);
    // SAFETY: openpty writes two descriptors into the ints we own; the
    // name and termios pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened for us and are owned by
    // nothing else.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        // SAFETY: F_SETFD on a descriptor we own. Other tests' children
        // must not inherit this pty (it would never report the end).
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    command
        .env("TERM", "xterm-256color")
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    Ok((child, File::from(master)))
}

impl Terminal {
    /// Starts `command` as the session leader of a new `cols`×`rows` pty
    /// (its controlling terminal), with `TERM=xterm-256color`.
    pub fn spawn(command: Command, cols: u16, rows: u16) -> Terminal {
        let description = format!("{command:?}");
        let (child, master) = spawn_on_pty(command, cols, rows)
            .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        let shared = Arc::new(Mutex::new(Shared {
            parser: Some(vt100::Parser::new(rows, cols, 0)),
            ..Shared::default()
        }));
        let mut reader = master.try_clone().expect("dup pty master");
        let feed = Arc::clone(&shared);
        thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let mut shared = feed.lock().expect("terminal lock");
                        shared.transcript.extend_from_slice(&buffer[..n]);
                        if let Some(parser) = shared.parser.as_mut() {
                            parser.process(&buffer[..n]);
                        }
                    }
                }
            }
            feed.lock().expect("terminal lock").closed = true;
        });
        Terminal {
            child,
            master,
            shared,
            description,
        }
    }

    /// Types `bytes` (keys as the terminal would send them).
    pub fn send(&mut self, bytes: &[u8]) {
        self.master
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("typing into {}: {e}", self.description));
    }

    /// Types `text` one byte at a time, as a person would.
    pub fn type_slowly(&mut self, text: &str) {
        for byte in text.bytes() {
            self.send(&[byte]);
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The screen now.
    pub fn screen(&self) -> Screen {
        let shared = self.shared.lock().expect("terminal lock");
        let screen = shared.parser.as_ref().expect("parser").screen();
        let (rows, cols) = screen.size();
        let text: Vec<String> = screen
            .rows(0, cols)
            .map(|r| r.trim_end().to_owned())
            .collect();
        let highlighted = (0..rows)
            .filter(|&r| (0..cols).any(|c| screen.cell(r, c).is_some_and(|cell| cell.inverse())))
            .map(usize::from)
            .collect();
        Screen {
            rows: text,
            cursor: screen.cursor_position(),
            alternate: screen.alternate_screen(),
            highlighted,
            cursor_visible: !screen.hide_cursor(),
        }
    }

    /// Everything the program printed so far, escape sequences shown.
    pub fn transcript(&self) -> String {
        let shared = self.shared.lock().expect("terminal lock");
        String::from_utf8_lossy(&shared.transcript)
            .escape_debug()
            .to_string()
    }

    /// How many bytes the program printed so far.
    pub fn transcript_len(&self) -> usize {
        self.shared.lock().expect("terminal lock").transcript.len()
    }

    /// Waits until `ready` holds for a complete frame (the cursor shown:
    /// a half-drawn frame is never judged); panics with the screen and
    /// `what` after `timeout`.
    #[track_caller]
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Screen) -> bool,
    ) -> Screen {
        let deadline = Instant::now() + timeout;
        loop {
            let screen = self.screen();
            if screen.cursor_visible && ready(&screen) {
                return screen;
            }
            let exited = self.child.try_wait().ok().flatten();
            let closed = self.shared.lock().expect("terminal lock").closed;
            if Instant::now() > deadline || (exited.is_some() && closed) {
                panic!(
                    "{what}: not on the screen within {timeout:?} ({}).\nScreen:\n{screen}\nTranscript (last 3000 chars):\n{}",
                    match exited {
                        Some(status) => format!("the program exited: {status}"),
                        None => "the program still runs".to_owned(),
                    },
                    tail(&self.transcript(), 3000)
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `needle` shows anywhere on the screen.
    #[track_caller]
    pub fn wait_for_text(&mut self, needle: &str, timeout: Duration) -> Screen {
        self.wait_for(&format!("{needle:?}"), timeout, |s| s.contains(needle))
    }

    /// Resizes the window: the emulator and the pty (the kernel sends
    /// SIGWINCH to the program).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        {
            let mut shared = self.shared.lock().expect("terminal lock");
            if let Some(parser) = shared.parser.as_mut() {
                parser.screen_mut().set_size(rows, cols);
            }
        }
        let size = winsize(cols, rows);
        // SAFETY: TIOCSWINSZ reads one winsize from the struct we own.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        assert_eq!(rc, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    }

    /// Waits for the program to exit and for the last of its output to
    /// reach the screen; `None` if it did not exit in time.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let status = wait_until(&mut self.child, deadline)?;
        while !self.shared.lock().expect("terminal lock").closed && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        Some(status)
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str, chars: usize) -> String {
    let count = text.chars().count();
    text.chars().skip(count.saturating_sub(chars)).collect()
}

impl crate::Bastion {
    /// The `ssh -tt` command [`crate::Bastion::ssh_terminal`] runs (to
    /// add environment variables before [`Terminal::spawn`]).
    pub fn ssh_terminal_command(
        &self,
        user: &str,
        key: &crate::ClientKey,
        extra: &[&str],
        command: Option<&str>,
    ) -> Command {
        let mut cmd = self.ssh_command("ssh");
        cmd.args([
            "-tt",
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "BatchMode=yes",
            "-i",
        ])
        .arg(&key.private)
        .args(extra)
        .args(self.ssh_args(user))
        .args(command);
        cmd
    }

    /// `ssh -tt` to the bastion as `user` with `key` (public key only) on
    /// a `cols`×`rows` terminal, with `extra` ssh options and an optional
    /// remote command.
    pub fn ssh_terminal(
        &self,
        user: &str,
        key: &crate::ClientKey,
        extra: &[&str],
        command: Option<&str>,
        (cols, rows): (u16, u16),
    ) -> Terminal {
        Terminal::spawn(
            self.ssh_terminal_command(user, key, extra, command),
            cols,
            rows,
        )
    }
}
