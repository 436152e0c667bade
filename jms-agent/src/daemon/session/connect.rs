//! The target connection: OpenSSH's own `ssh` client, run by the daemon
//! with a clean environment and `-F /dev/null`, so every option is ours.
//!
//! - Host keys: one known_hosts file per asset under the state dir, keyed
//!   by the asset name (`HostKeyAlias`). Keys pinned in the policy are
//!   written there and checked strictly; without them the first key seen is
//!   recorded (`accept-new`) and any other key is refused afterwards.
//! - Credentials never appear in an argument or the environment: a
//!   password goes through `SSH_ASKPASS` = `jms-askpass` (a link to this
//!   daemon's binary, see [`askpass_main`]), which reads it from a FIFO in
//!   the session's 0700 scratch dir (ssh closes every inherited descriptor
//!   above 2 at start, so a plain inherited pipe cannot reach the helper);
//!   a private key goes to a 0600 file there. The scratch dir is removed
//!   when the [`Connection`] is dropped.
//! - "Logged in" is signalled by ssh itself: `LocalCommand` (run once
//!   authentication succeeded) writes to a second FIFO, [`Connection::ready_fd`].
//! - ssh's own messages go to a log file (`-E`), never to the engineer's
//!   stream; at the end they are read to explain a failure
//!   ([`ConnectError`]: changed host key, refused login, unreachable).
//!
//! - Ciphers: `[sessions] target_ciphers` ([`crate::daemon::config::cipher_option`]); by default
//!   (`auto`) AES-GCM goes first when the CPU has AES instructions (the
//!   bulk leg of a relayed download is this client's decryption), the
//!   rest of OpenSSH's default list after it.
//!
//! Modes: an interactive shell on a pty of the engineer's size
//! ([`Mode::Shell`]), an exec with pipes or a pty ([`Mode::Exec`]), and a
//! subsystem such as `sftp` with pipes ([`Mode::Subsystem`]).

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::daemon::config::AgentdConfig;
use crate::daemon::target::{Credential, Target};

/// Name of the askpass link; jms-agentd run under this name is the helper.
pub const ASKPASS_NAME: &str = "jms-askpass";
/// Environment variable naming the FIFO the helper reads the secret from.
pub const ASKPASS_PIPE_ENV: &str = "JMS_ASKPASS_PIPE";

/// Where and how connections are made (from the daemon's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    pub ssh: PathBuf,
    pub runtime_dir: PathBuf,
    pub known_hosts_dir: PathBuf,
    pub connect_timeout: Duration,
    pub login_timeout: Duration,
    /// This daemon's binary (the askpass helper).
    pub agentd_exe: PathBuf,
    /// `Ciphers=…` for the target leg, if any ([`crate::daemon::config::cipher_option`]).
    pub ciphers: Option<String>,
}

impl Settings {
    pub fn from_config(config: &AgentdConfig) -> Settings {
        Settings {
            ssh: config.sessions.ssh.clone(),
            runtime_dir: config.sessions.runtime_dir.clone(),
            known_hosts_dir: config.known_hosts_dir(),
            connect_timeout: Duration::from_secs(config.sessions.connect_timeout_secs),
            login_timeout: Duration::from_secs(config.sessions.login_timeout_secs),
            agentd_exe: std::env::current_exe()
                .unwrap_or_else(|_| PathBuf::from("/usr/sbin/jms-agentd")),
            // Checked when the configuration was loaded.
            ciphers: crate::daemon::config::cipher_option(
                &config.sessions.target_ciphers,
                crate::daemon::config::cpu_has_aes(),
            )
            .unwrap_or_default(),
        }
    }
}

/// What to run on the target.
#[derive(Debug, Clone)]
pub enum Mode {
    /// A login shell on a pty of this size.
    Shell { term: String, cols: u16, rows: u16 },
    /// A command; with `pty` on a pty of that size, else on pipes.
    Exec {
        command: String,
        pty: Option<(String, u16, u16)>,
    },
    /// A subsystem (`sftp`) on pipes.
    Subsystem { name: String },
}

/// Where a pipe-mode connection's stdin comes from.
pub enum Stdin {
    /// A pipe: [`Io::Pipes::stdin`] is its write end.
    Pipe,
    /// This descriptor, given straight to ssh (the engineer's stdin: every
    /// byte reaches the target exactly, from the first moment).
    Fd(OwnedFd),
    /// Nothing (`/dev/null`).
    Null,
}

/// The connection's side of the data.
pub enum Io {
    /// The pty master (read: output; write: input; set its size with
    /// [`set_window_size`]).
    Pty { master: OwnedFd },
    /// Pipes (nonblocking on our side). `stdin` is `None` unless
    /// [`Stdin::Pipe`] was asked for.
    Pipes {
        stdin: Option<OwnedFd>,
        stdout: OwnedFd,
        stderr: OwnedFd,
    },
}

/// Why a target connection failed, as one line for the engineer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The target's host key is not the pinned or first-seen one: an admin
    /// must check the host and update the policy or the known_hosts file.
    #[error("{asset}: the host key has changed (it is not the key jms {how}): connection refused")]
    HostKeyChanged { asset: String, how: &'static str },
    /// The account's credential was refused.
    #[error("{asset}: the target refused the login as {username}")]
    AuthFailed { asset: String, username: String },
    /// No TCP connection.
    #[error("{asset}: cannot connect: {detail}")]
    Unreachable { asset: String, detail: String },
    /// Login did not finish in time.
    #[error("{asset}: the login did not complete within {seconds} s")]
    Timeout { asset: String, seconds: u64 },
    /// ssh could not be started or the scratch dir made (daemon side).
    #[error("{asset}: the connection could not be started: {detail}")]
    Local { asset: String, detail: String },
    /// ssh failed otherwise; its last message.
    #[error("{asset}: connection failed: {detail}")]
    Other { asset: String, detail: String },
}

/// The per-session scratch dir (0700), removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `ssh` to the target.
pub struct Connection {
    child: Child,
    pub io: Io,
    ready: File,
    is_ready: bool,
    pidfd: Option<OwnedFd>,
    log_path: PathBuf,
    asset: String,
    username: String,
    pinned: bool,
    started: Instant,
    login_timeout: Duration,
    /// New input on the engineer's stdin that ssh reads directly.
    input_watch: Option<InputWatch>,
    /// ssh's read count (`rchar` in /proc/PID/io) at the last look.
    reads_seen: std::cell::Cell<u64>,
    // Dropped last: the FIFOs and key live in it.
    _askpass: Option<File>,
    _scratch: Scratch,
}

/// How the target side ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The remote command's exit status (ssh's own, 255 on ssh errors).
    pub exit_status: Option<i32>,
    /// Set when ssh itself failed (the status is then not the command's).
    pub error: Option<ConnectError>,
}

fn mkfifo(path: &Path) -> std::io::Result<File> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(std::io::Error::from)?;
    // Read-write: never blocks, and never reports a hang-up while we hold it.
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(path)
}

fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The known_hosts file of `asset` and whether it holds pinned keys;
/// `unique` (the session id) names this session's temp file.
fn known_hosts(
    settings: &Settings,
    target: &Target,
    unique: &str,
) -> std::io::Result<(PathBuf, bool)> {
    private_dir(&settings.known_hosts_dir)?;
    if target.host_keys.is_empty() {
        return Ok((
            settings
                .known_hosts_dir
                .join(format!("tofu-{}", target.asset)),
            false,
        ));
    }
    let path = settings
        .known_hosts_dir
        .join(format!("pinned-{}", target.asset));
    let mut text = String::new();
    for key in &target.host_keys {
        let key = key.trim();
        if key.contains('\n') || key.is_empty() {
            continue;
        }
        text.push_str(&target.asset);
        text.push(' ');
        text.push_str(key);
        text.push('\n');
    }
    // Sessions to one asset open concurrently: the file is replaced only
    // when its text changes, through a temp file of this session's own, so
    // a reader (another session's ssh) always sees a whole file and two
    // writers never share (and truncate) one temp file.
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok((path, true));
    }
    let temp = settings
        .known_hosts_dir
        .join(format!(".pinned-{}.{unique}.tmp", target.asset));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .and_then(|_| std::fs::rename(&temp, &path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written?;
    Ok((path, true))
}

/// A username ssh gets as `-l`: no blanks, controls or option look-alikes.
pub fn valid_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '$'))
}

/// Starts `ssh` to `target` in `mode`. Returns once ssh runs; wait for
/// [`Connection::ready_fd`] (or call [`Connection::wait_ready`]) to know
/// the login succeeded. `stdin` matters for pipe modes only.
pub fn open(
    settings: &Settings,
    session_id: &str,
    target: &Target,
    mode: Mode,
    stdin: Stdin,
) -> Result<Connection, ConnectError> {
    let local = |detail: String| ConnectError::Local {
        asset: target.asset.clone(),
        detail,
    };
    if !valid_username(&target.username) {
        return Err(ConnectError::AuthFailed {
            asset: target.asset.clone(),
            username: target.username.clone(),
        });
    }
    private_dir(&settings.runtime_dir).map_err(|e| local(format!("runtime dir: {e}")))?;
    let scratch = Scratch {
        dir: settings.runtime_dir.join(session_id),
    };
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&scratch.dir)
        .map_err(|e| local(format!("scratch dir: {e}")))?;
    let (known_hosts, pinned) = known_hosts(settings, target, session_id)
        .map_err(|e| local(format!("known_hosts: {e}")))?;
    let ready_path = scratch.dir.join("ready");
    let ready = mkfifo(&ready_path).map_err(|e| local(format!("fifo: {e}")))?;
    let log_path = scratch.dir.join("ssh.log");

    let mut cmd = Command::new(&settings.ssh);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &scratch.dir)
        .env("SHELL", "/bin/sh")
        .env("LANG", "C.UTF-8")
        .current_dir(&scratch.dir);
    let mut options: Vec<String> = vec![
        format!("UserKnownHostsFile={}", known_hosts.display()),
        "GlobalKnownHostsFile=/dev/null".into(),
        format!("HostKeyAlias={}", target.asset),
        format!(
            "StrictHostKeyChecking={}",
            if pinned { "yes" } else { "accept-new" }
        ),
        "CheckHostIP=no".into(),
        "UpdateHostKeys=no".into(),
        "HashKnownHosts=no".into(),
        format!(
            "ConnectTimeout={}",
            settings.connect_timeout.as_secs().max(1)
        ),
        "ServerAliveInterval=30".into(),
        "ServerAliveCountMax=4".into(),
        "LogLevel=ERROR".into(),
        "IdentityAgent=none".into(),
        "ForwardAgent=no".into(),
        "ForwardX11=no".into(),
        "ClearAllForwardings=yes".into(),
        "Tunnel=no".into(),
        "ControlMaster=no".into(),
        "ControlPath=none".into(),
        "EscapeChar=none".into(),
        "PermitLocalCommand=yes".into(),
        format!("LocalCommand=echo up >{}", ready_path.display()),
        "NumberOfPasswordPrompts=1".into(),
        "PasswordAuthentication=yes".into(),
    ];
    options.extend(settings.ciphers.clone());
    let mut askpass = None;
    match &target.credential {
        Credential::Password(secret) => {
            let pipe_path = scratch.dir.join("askpass");
            let mut pipe = mkfifo(&pipe_path).map_err(|e| local(format!("fifo: {e}")))?;
            let mut line = secret.expose().as_bytes().to_vec();
            line.push(b'\n');
            if line.len() > 4096 || pipe.write_all(&line).is_err() {
                return Err(local("the password is too long".into()));
            }
            let link = scratch.dir.join(ASKPASS_NAME);
            std::os::unix::fs::symlink(&settings.agentd_exe, &link)
                .map_err(|e| local(format!("askpass link: {e}")))?;
            cmd.env("SSH_ASKPASS", &link)
                .env("SSH_ASKPASS_REQUIRE", "force")
                .env(ASKPASS_PIPE_ENV, &pipe_path);
            askpass = Some(pipe);
            options.extend([
                "PreferredAuthentications=password,keyboard-interactive".into(),
                "PubkeyAuthentication=no".into(),
                "KbdInteractiveAuthentication=yes".into(),
                "BatchMode=no".into(),
            ]);
        }
        Credential::Key(key) => {
            let key_path = scratch.dir.join("id");
            let mut text = key.expose().trim_end().to_string();
            text.push('\n');
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key_path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| local(format!("key file: {e}")))?;
            options.extend([
                "PreferredAuthentications=publickey".into(),
                format!("IdentityFile={}", key_path.display()),
                "IdentitiesOnly=yes".into(),
                "PasswordAuthentication=no".into(),
                "KbdInteractiveAuthentication=no".into(),
                "BatchMode=yes".into(),
            ]);
        }
        Credential::None => {
            options.extend([
                "PreferredAuthentications=keyboard-interactive".into(),
                "PubkeyAuthentication=no".into(),
                "PasswordAuthentication=no".into(),
                "BatchMode=yes".into(),
            ]);
            cmd.env("SSH_ASKPASS_REQUIRE", "never");
        }
    }
    let mut args: Vec<OsString> = vec!["-F".into(), "/dev/null".into()];
    for option in options {
        args.push("-o".into());
        args.push(option.into());
    }
    args.extend(["-E".into(), log_path.clone().into_os_string()]);
    args.extend(["-p".into(), target.port.to_string().into()]);
    args.extend(["-l".into(), target.username.clone().into()]);

    let mut input_watch = None;
    let (io, child_stdio, pty_slave): (Io, [Stdio; 3], Option<OwnedFd>) = match &mode {
        Mode::Shell { cols, rows, .. }
        | Mode::Exec {
            pty: Some((_, cols, rows)),
            ..
        } => {
            let size = winsize(*cols, *rows);
            let pty =
                nix::pty::openpty(Some(&size), None).map_err(|e| local(format!("openpty: {e}")))?;
            set_cloexec(pty.master.as_raw_fd());
            set_cloexec(pty.slave.as_raw_fd());
            let stdio = [
                Stdio::from(clone_fd(&pty.slave).map_err(|e| local(e.to_string()))?),
                Stdio::from(clone_fd(&pty.slave).map_err(|e| local(e.to_string()))?),
                Stdio::from(clone_fd(&pty.slave).map_err(|e| local(e.to_string()))?),
            ];
            set_nonblocking(pty.master.as_raw_fd());
            (Io::Pty { master: pty.master }, stdio, Some(pty.slave))
        }
        _ => {
            let (stdin_end, child_stdin) = match stdin {
                Stdin::Pipe => {
                    let (read, write) = pipe().map_err(|e| local(format!("pipe: {e}")))?;
                    set_nonblocking(write.as_raw_fd());
                    (Some(write), Stdio::from(read))
                }
                Stdin::Fd(fd) => {
                    input_watch = InputWatch::new(fd.as_fd());
                    (None, Stdio::from(fd))
                }
                Stdin::Null => (None, Stdio::null()),
            };
            let (out_read, out_write) = pipe().map_err(|e| local(format!("pipe: {e}")))?;
            let (err_read, err_write) = pipe().map_err(|e| local(format!("pipe: {e}")))?;
            set_nonblocking(out_read.as_raw_fd());
            set_nonblocking(err_read.as_raw_fd());
            (
                Io::Pipes {
                    stdin: stdin_end,
                    stdout: out_read,
                    stderr: err_read,
                },
                [child_stdin, Stdio::from(out_write), Stdio::from(err_write)],
                None,
            )
        }
    };
    match &mode {
        Mode::Shell { term, .. } => {
            cmd.env("TERM", term);
            args.extend(["-tt".into(), "--".into(), target.address.clone().into()]);
        }
        Mode::Exec { command, pty } => {
            if let Some((term, _, _)) = pty {
                cmd.env("TERM", term);
                args.push("-tt".into());
            } else {
                args.push("-T".into());
            }
            args.extend([
                "--".into(),
                target.address.clone().into(),
                command.clone().into(),
            ]);
        }
        Mode::Subsystem { name } => {
            args.extend([
                "-T".into(),
                "-s".into(),
                "--".into(),
                target.address.clone().into(),
                name.clone().into(),
            ]);
        }
    }
    let [child_in, child_out, child_err] = child_stdio;
    cmd.args(&args)
        .stdin(child_in)
        .stdout(child_out)
        .stderr(child_err);
    let with_tty = pty_slave.is_some();
    // SAFETY: the closure only calls async-signal-safe functions (signal,
    // sigprocmask, umask, setsid, ioctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            // known_hosts, ssh's log: private whatever the daemon's umask.
            libc::umask(0o077);
            for signal in [
                libc::SIGPIPE,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGHUP,
                libc::SIGCHLD,
            ] {
                libc::signal(signal, libc::SIG_DFL);
            }
            if with_tty {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| local(format!("{}: {e}", settings.ssh.display())))?;
    // The child has its copies now; ours would keep the pty open after it ends.
    drop(pty_slave);
    drop(cmd);
    let pidfd = pidfd_open(child.id());
    Ok(Connection {
        child,
        io,
        ready,
        is_ready: false,
        pidfd,
        log_path,
        asset: target.asset.clone(),
        username: target.username.clone(),
        pinned,
        started: Instant::now(),
        login_timeout: settings.login_timeout,
        input_watch,
        reads_seen: std::cell::Cell::new(0),
        _askpass: askpass,
        _scratch: scratch,
    })
}

/// Sees input arrive on a descriptor another process (ssh) reads: an
/// edge-triggered epoll on a duplicate of it, itself readable (in a poll
/// set) each time new data came in since [`InputWatch::take`]. Lets the
/// relay count an exec's stdin as activity (the idle timeout) without
/// copying it. `None` where epoll cannot watch the descriptor (a regular
/// file, /dev/null): such input is never waited on anyway.
pub struct InputWatch {
    epoll: nix::sys::epoll::Epoll,
    _watched: OwnedFd,
}

impl InputWatch {
    fn new(fd: BorrowedFd<'_>) -> Option<InputWatch> {
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let watched = fd.try_clone_to_owned().ok()?;
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok()?;
        epoll
            .add(
                &watched,
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 0),
            )
            .ok()?;
        Some(InputWatch {
            epoll,
            _watched: watched,
        })
    }

    /// Readable when input arrived since the last [`InputWatch::take`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    /// Consumes the pending edge; true when input arrived.
    pub fn take(&self) -> bool {
        let mut events = [nix::sys::epoll::EpollEvent::empty()];
        matches!(
            self.epoll
                .wait(&mut events, nix::sys::epoll::EpollTimeout::ZERO),
            Ok(n) if n > 0
        )
    }
}

impl Connection {
    /// Input arriving on the engineer's stdin (given to ssh directly).
    pub fn input_watch(&self) -> Option<&InputWatch> {
        self.input_watch.as_ref()
    }

    /// Whether ssh read anything (the engineer's stdin it reads directly,
    /// or the target) since the last look, from `rchar` in /proc/PID/io.
    /// The [`InputWatch`]'s edge can be missed when ssh drains the input
    /// before the relay looks (epoll re-checks readiness when asked), so
    /// the relay asks this before ending a session as idle.
    pub fn read_since_last_look(&self) -> bool {
        let Ok(io) = std::fs::read_to_string(format!("/proc/{}/io", self.child.id())) else {
            return false;
        };
        let rchar = io
            .lines()
            .find_map(|line| line.strip_prefix("rchar:"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        match rchar {
            Some(n) if n != self.reads_seen.get() => {
                self.reads_seen.set(n);
                true
            }
            _ => false,
        }
    }

    /// Readable once the login succeeded (then call [`Connection::mark_ready`]).
    pub fn ready_fd(&self) -> BorrowedFd<'_> {
        self.ready.as_fd()
    }

    /// Readable once ssh exited (Linux pidfd), when available.
    pub fn exit_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Consumes the login signal; true once logged in.
    pub fn mark_ready(&mut self) -> bool {
        let mut buf = [0u8; 64];
        while let Ok(n) = (&self.ready).read(&mut buf) {
            if n == 0 {
                break;
            }
            self.is_ready = true;
        }
        self.is_ready
    }

    pub fn is_ready(&self) -> bool {
        self.is_ready
    }

    /// When the login must have completed by.
    pub fn login_deadline(&self) -> Instant {
        self.started + self.login_timeout
    }

    /// The asset's name.
    pub fn asset(&self) -> &str {
        &self.asset
    }

    /// How long the login may take.
    pub fn login_timeout(&self) -> Duration {
        self.login_timeout
    }

    /// ssh's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Blocks until the login succeeded, ssh failed, or the login timeout
    /// passed (ssh is then killed). For callers without their own poll loop
    /// (file transfers); the relay polls [`Connection::ready_fd`] instead.
    pub fn wait_ready(&mut self) -> Result<(), ConnectError> {
        loop {
            if self.mark_ready() {
                return Ok(());
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                // It may have signalled just before exiting.
                if self.mark_ready() {
                    return Ok(());
                }
                return Err(self.failure().unwrap_or_else(|| ConnectError::Other {
                    asset: self.asset.clone(),
                    detail: "ssh exited before logging in".into(),
                }));
            }
            let now = Instant::now();
            if now >= self.login_deadline() {
                self.kill();
                return Err(ConnectError::Timeout {
                    asset: self.asset.clone(),
                    seconds: self.login_timeout.as_secs(),
                });
            }
            let left = (self.login_deadline() - now).min(Duration::from_millis(200));
            let mut fds = vec![PollFd::new(self.ready.as_fd(), PollFlags::POLLIN)];
            if let Some(pidfd) = &self.pidfd {
                fds.push(PollFd::new(pidfd.as_fd(), PollFlags::POLLIN));
            }
            let _ = poll(&mut fds, poll_timeout(left));
        }
    }

    /// The pipes, blocking again, for callers that read and write them
    /// with plain `Read`/`Write` on threads (the SFTP proxy): (stdin,
    /// stdout, stderr). `None` for a pty connection or without a stdin pipe.
    pub fn take_blocking_pipes(&mut self) -> Option<(OwnedFd, OwnedFd, OwnedFd)> {
        let io = std::mem::replace(
            &mut self.io,
            Io::Pipes {
                stdin: None,
                stdout: self.ready.try_clone().ok()?.into(),
                stderr: self.ready.try_clone().ok()?.into(),
            },
        );
        match io {
            Io::Pipes {
                stdin: Some(stdin),
                stdout,
                stderr,
            } => {
                for fd in [&stdin, &stdout, &stderr] {
                    set_blocking(fd.as_raw_fd());
                }
                Some((stdin, stdout, stderr))
            }
            other => {
                self.io = other;
                None
            }
        }
    }

    /// Ends ssh now (the engineer left, or the login timed out).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
    }

    /// Reaps ssh and says how it ended. Read all output first.
    pub fn wait(mut self) -> Ended {
        let status = self.child.wait().ok();
        let code = status.and_then(|s| s.code());
        let error = match (code, status.and_then(|s| s.signal())) {
            (Some(255), _) | (None, Some(_)) => self.failure(),
            _ => None,
        };
        let error = error.or_else(|| {
            (!self.is_ready && code != Some(0))
                .then(|| self.failure())
                .flatten()
        });
        Ended {
            exit_status: code,
            error,
        }
    }

    /// ssh's own complaint, from its log, as a [`ConnectError`].
    fn failure(&self) -> Option<ConnectError> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        interpret_log(&log, &self.asset, &self.username, self.pinned)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Reaped already (wait) or still running (abandoned): never leave
        // a process or a zombie behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Turns ssh's error log into one of our errors (`None`: nothing said).
pub fn interpret_log(log: &str, asset: &str, username: &str, pinned: bool) -> Option<ConnectError> {
    let asset = asset.to_string();
    let how = if pinned {
        "has pinned for this asset"
    } else {
        "recorded the first time it connected"
    };
    if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || log.contains("Host key verification failed")
        || log.contains("host key is known for")
    {
        return Some(ConnectError::HostKeyChanged { asset, how });
    }
    if log.contains("Permission denied") || log.contains("Too many authentication failures") {
        return Some(ConnectError::AuthFailed {
            asset,
            username: username.to_string(),
        });
    }
    for line in log.lines() {
        if line.contains("connect to host") || line.contains("Could not resolve hostname") {
            let detail = line.rsplit(": ").next().unwrap_or(line).trim().to_string();
            return Some(ConnectError::Unreachable { asset, detail });
        }
    }
    log.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|line| ConnectError::Other {
            asset,
            detail: line.chars().take(200).collect(),
        })
}

/// The askpass helper: `jms-agentd` run as `jms-askpass PROMPT` by ssh.
/// Prints the secret from the FIFO named in `JMS_ASKPASS_PIPE` for a
/// password prompt; refuses anything else (host key questions, codes).
pub fn askpass_main() -> ExitCode {
    askpass_main_with(std::env::args().nth(1).unwrap_or_default())
}

/// [`askpass_main`] for an explicit prompt (`jms-agentd askpass PROMPT`).
pub fn askpass_main_with(prompt: String) -> ExitCode {
    let lower = prompt.to_lowercase();
    if lower.contains("yes/no") {
        println!("no");
        return ExitCode::SUCCESS;
    }
    if !lower.contains("password") && !lower.contains("passphrase") {
        return ExitCode::FAILURE;
    }
    let Some(path) = std::env::var_os(ASKPASS_PIPE_ENV) else {
        return ExitCode::FAILURE;
    };
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
    else {
        return ExitCode::FAILURE;
    };
    // The secret is written once; a second prompt (a refused password)
    // finds the pipe empty and gives up.
    let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
    if !matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(n) if n > 0) {
        return ExitCode::FAILURE;
    }
    let mut buf = vec![0u8; 4096];
    let Ok(n) = (&file).read(&mut buf) else {
        return ExitCode::FAILURE;
    };
    let line = buf[..n].split(|b| *b == b'\n').next().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if out
        .write_all(line)
        .and_then(|_| out.write_all(b"\n"))
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    buf.fill(0);
    ExitCode::SUCCESS
}

fn winsize(cols: u16, rows: u16) -> nix::pty::Winsize {
    nix::pty::Winsize {
        ws_row: rows.max(1),
        ws_col: cols.max(1),
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

/// Sets the size of a pty (through its master); the kernel tells ssh
/// with SIGWINCH and ssh tells the target.
pub fn set_window_size(master: BorrowedFd<'_>, cols: u16, rows: u16) {
    let size = winsize(cols, rows);
    // SAFETY: TIOCSWINSZ reads one Winsize from the pointer, which is valid.
    unsafe {
        nix::libc::ioctl(master.as_raw_fd(), nix::libc::TIOCSWINSZ, &size);
    }
}

pub(crate) fn set_nonblocking(fd: RawFd) -> Option<i32> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd, FcntlArg::F_GETFL).ok()?;
    let new = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd, FcntlArg::F_SETFL(new)).ok()?;
    Some(flags)
}

fn set_blocking(fd: RawFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let new = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(new));
    }
}

pub(crate) fn restore_flags(fd: RawFd, flags: i32) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags)));
}

fn set_cloexec(fd: RawFd) {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
}

fn clone_fd(fd: &OwnedFd) -> std::io::Result<OwnedFd> {
    fd.try_clone()
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // (or -1); nothing is borrowed.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid as nix::libc::pid_t, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: the kernel just returned this descriptor; we are its only owner.
    Some(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A poll timeout from a duration (capped, rounded up to 1 ms).
pub(crate) fn poll_timeout(d: Duration) -> PollTimeout {
    let ms = d.as_millis().clamp(1, 60_000) as u16;
    PollTimeout::from(ms)
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn ssh_complaints_become_clear_errors() {
        let changed = "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\r\n\
            @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n\
            Host key verification failed.\r\n";
        let e = interpret_log(changed, "web01", "root", false).unwrap();
        assert!(matches!(e, ConnectError::HostKeyChanged { .. }));
        assert!(
            e.to_string().contains("web01: the host key has changed"),
            "{e}"
        );
        let e = interpret_log(
            "deploy@web01: Permission denied (publickey,password).\r\n",
            "web01",
            "deploy",
            false,
        )
        .unwrap();
        assert_eq!(
            e.to_string(),
            "web01: the target refused the login as deploy"
        );
        let e = interpret_log(
            "ssh: connect to host 127.0.0.9 port 22: Connection refused\r\n",
            "web01",
            "x",
            false,
        )
        .unwrap();
        assert_eq!(e.to_string(), "web01: cannot connect: Connection refused");
        assert_eq!(interpret_log("", "web01", "x", false), None);
    }

    #[test]
    fn usernames_that_could_be_options_are_refused() {
        assert!(valid_username("deploy"));
        assert!(valid_username("svc_app-1.x"));
        assert!(!valid_username("-oProxyCommand=x"));
        assert!(!valid_username("a b"));
        assert!(!valid_username("root@x"));
        assert!(!valid_username(""));
    }

    #[test]
    fn pinned_keys_are_written_under_the_asset_name() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            ssh: "/usr/bin/ssh".into(),
            runtime_dir: dir.path().join("run"),
            known_hosts_dir: dir.path().join("kh"),
            connect_timeout: Duration::from_secs(1),
            login_timeout: Duration::from_secs(1),
            agentd_exe: "/bin/false".into(),
            ciphers: None,
        };
        let mut target = Target {
            asset: "web01".into(),
            address: "127.0.0.1".into(),
            port: 22,
            host_keys: vec!["ssh-ed25519 AAAAkey".into()],
            username: "root".into(),
            credential: Credential::None,
        };
        let (path, pinned) = known_hosts(&settings, &target, "s1").unwrap();
        assert!(pinned);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "web01 ssh-ed25519 AAAAkey\n"
        );
        target.host_keys.clear();
        let (path, pinned) = known_hosts(&settings, &target, "s1").unwrap();
        assert!(!pinned);
        assert!(path.ends_with("tofu-web01"));
    }
}
