//! Shared fixtures of the tests that run jms-agentd against a real
//! jms-server: the server (binary, temporary data dir, a fixed loopback
//! port so it can be killed and restarted at the same address), a bastion
//! (agentd config, enrollment, start, stop, kill -9) and a reader of the
//! server's events table. Everything runs as root (CI does).

#![allow(dead_code)] // each test binary uses its own part

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jms_core::nss_cache::NssCache;

pub const AGENTD: &str = env!("CARGO_BIN_EXE_jms-agentd");
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.yaml");
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// jms-server and jmsctl, built next to jms-agentd (built here if absent).
pub fn server_bins() -> (PathBuf, PathBuf) {
    let dir = Path::new(AGENTD).parent().unwrap();
    let (server, ctl) = (dir.join("jms-server"), dir.join("jmsctl"));
    if !server.exists() || !ctl.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "jms-server", "--bins"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building jms-server failed");
    }
    (server, ctl)
}

/// Fails the test unless it runs as root.
pub fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests run as root (CI does): config and state ownership matter"
    );
}

/// A free port on 127.0.0.1 (the server binds it right after).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A jms-server on a fixed loopback port, with an admin token: plain
/// HTTP (`--insecure-http`, as behind a TLS proxy: these tests put HTTP
/// proxies in front of it) from [`Central::start`], TLS with its own CA
/// from [`Central::start_tls`].
pub struct Central {
    child: Option<Child>,
    pub url: String,
    tls: bool,
    pub token: String,
    pub data: PathBuf,
    ctl: PathBuf,
    server: PathBuf,
    listen: String,
}

impl Central {
    /// Creates an admin token in `data` and starts the server on it
    /// (plain HTTP).
    pub fn start(data: &Path) -> Central {
        Central::launch(data, false)
    }

    /// The same over TLS with the server's own CA.
    pub fn start_tls(data: &Path) -> Central {
        Central::launch(data, true)
    }

    fn launch(data: &Path, tls: bool) -> Central {
        let (server, ctl) = server_bins();
        let out = Command::new(&server)
            .args(["token", "create", "--scope", "admin", "--data"])
            .arg(data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let listen = format!("127.0.0.1:{}", free_port());
        let mut central = Central {
            child: None,
            url: format!("{}://{listen}", if tls { "https" } else { "http" }),
            tls,
            token,
            data: data.to_path_buf(),
            ctl,
            server,
            listen,
        };
        central.restart();
        central
    }

    /// Starts the server (again) on the same data dir and address.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "jms-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.with_extension("log"))
            .unwrap();
        let mut child = Command::new(&self.server)
            .arg("--data")
            .arg(&self.data)
            .args(["--listen", &self.listen])
            .args((!self.tls).then_some("--insecure-http"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            format!("listening on {}", self.url),
            "jms-server did not start: {}",
            self.log()
        );
        self.child = Some(child);
    }

    /// The server's stderr, every run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    pub fn jmsctl(&self, args: &[&str]) -> Output {
        let mut command = Command::new(&self.ctl);
        command
            .args(args)
            .env("JMS_SERVER", &self.url)
            .env("JMS_TOKEN", &self.token)
            .env_remove("JMS_CA")
            .stdin(Stdio::null());
        if let Some(ca) = self.ca_file() {
            command.env("JMS_CA", ca);
        }
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "jmsctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The server's CA file (over TLS).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.data.join("tls/ca.pem"))
    }

    /// A one-time bastion enrollment token.
    pub fn enroll_token(&self) -> String {
        let out = self.jmsctl(&["bastion", "token", "create", "--ttl", "10m"]);
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// kill -9 (the process gets no chance to clean up).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One bastion: a jms-agentd config in its own directory.
pub struct Bastion {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Bastion {
    pub fn config(&self) -> PathBuf {
        self.dir.join("agentd.toml")
    }
    pub fn socket(&self) -> PathBuf {
        self.dir.join("agentd.sock")
    }
    pub fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    pub fn cache(&self) -> PathBuf {
        self.dir.join("nss.db")
    }
    pub fn spool(&self) -> PathBuf {
        self.state().join("spool")
    }
    /// The log of the current (or last) run.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agentd.log")).unwrap_or_default()
    }

    /// Writes the agentd config for `server` (poll every second).
    pub fn new(dir: &Path, server: &str) -> Bastion {
        let bastion = Bastion {
            dir: dir.to_path_buf(),
            child: None,
        };
        std::fs::write(
            bastion.config(),
            format!(
                "socket = {:?}\nstate_dir = {:?}\nnss_cache = {:?}\n\n[central]\nserver = {server:?}\npoll_interval_secs = 1\nmax_staleness_secs = 3600\ntimeout_secs = 5\n\n[sessions]\nworker_user = \"nobody\"\n",
                bastion.socket(),
                bastion.state(),
                bastion.cache()
            ),
        )
        .unwrap();
        bastion
    }

    pub fn enroll(&self, server: &str, token: &str) -> Output {
        Command::new(AGENTD)
            .arg("--config")
            .arg(self.config())
            .args([
                "enroll", "--server", server, "--token", token, "--name", "b1",
            ])
            .output()
            .unwrap()
    }

    /// Starts jms-agentd (log truncated) and waits for its socket.
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("agentd.log")).unwrap();
        let mut child = Command::new(AGENTD)
            .arg("--config")
            .arg(self.config())
            .env("JMS_LOG", "info")
            .stderr(log)
            .spawn()
            .unwrap();
        let started = Instant::now();
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("jms-agentd exited with {status}: {}", self.log());
            }
            assert!(started.elapsed() < TIMEOUT, "no socket: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// kill -9 and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn has_user(&self, name: &str) -> bool {
        NssCache::open(&self.cache())
            .ok()
            .and_then(|c| c.user_by_name(name).ok().flatten().map(|_| ()))
            .is_some()
    }

    /// The (uid, gid) the NSS cache gives a jms user.
    pub fn ids_of(&self, name: &str) -> (u32, u32) {
        let cache = NssCache::open(&self.cache()).expect("the NSS cache opens");
        let user = cache
            .user_by_name(name)
            .expect("the NSS cache reads")
            .unwrap_or_else(|| panic!("{name} is not in the NSS cache"));
        (user.uid, user.gid)
    }

    /// True when no spooled segment is left (everything uploaded).
    pub fn spool_empty(&self) -> bool {
        std::fs::read_dir(self.spool())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .all(|e| !e.file_name().to_string_lossy().ends_with(".jsonl"))
            })
            .unwrap_or(true)
    }

    pub fn wait_for(&self, what: &str, check: impl Fn() -> bool) {
        self.wait_for_within(what, TIMEOUT, check)
    }

    pub fn wait_for_within(&self, what: &str, timeout: Duration, check: impl Fn() -> bool) {
        let started = Instant::now();
        while !check() {
            assert!(
                started.elapsed() < timeout,
                "timed out waiting for {what}\n--- jms-agentd log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- jms-agentd log ---\n{}", self.log());
        }
    }
}

/// A temp dir others may enter (agentd's socket is used by jms users),
/// a server with the example policy, and a bastion enrolled to it (not
/// started).
pub fn enrolled_bastion() -> (tempfile::TempDir, Central, Bastion) {
    assert_root();
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let central = Central::start(&dir.path().join("server"));
    central.jmsctl(&["policy", "apply", EXAMPLE]);
    let token = central.enroll_token();
    let bastion_dir = dir.path().join("bastion");
    std::fs::create_dir(&bastion_dir).unwrap();
    let bastion = Bastion::new(&bastion_dir, &central.url);
    let out = bastion.enroll(&central.url, &token);
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, central, bastion)
}

/// Runs one query on the server's database with the sqlite3 tool; one
/// line per row, columns separated by `|`.
pub fn sqlite(data: &Path, query: &str) -> Vec<String> {
    let out = Command::new("sqlite3")
        .arg(data.join("jms.db"))
        .arg(query)
        .output()
        .expect("these tests read the server's database with the sqlite3 tool");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Idempotency keys in the server's events table, sorted.
pub fn stored_events(data: &Path) -> Vec<String> {
    sqlite(
        data,
        "SELECT idempotency_key FROM events ORDER BY idempotency_key",
    )
}
