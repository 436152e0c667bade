//! A bare jms-agentd against a real jms-server, without sshd or a mount
//! namespace: its config, state and NSS cache in a directory of the test's
//! own, `enroll`, start, SIGTERM, kill -9, what its NSS cache lists, and a
//! reader of the server's database. For the tests of the sync path itself
//! (enrollment, bundles, deltas, faults on the wire, event and recording
//! upload); sessions go through [`crate::Bastion`].

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use jms_core::nss_cache::{overlay_path, NssView};

use crate::central::Central;
use crate::preflight;

/// The example policy of the repository.
pub const EXAMPLE_POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.yaml");

/// How long [`Agentd::wait_for`] waits.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A temp dir others may enter (agentd's socket is used by jms users),
/// after [`preflight::require_all`] (root, tools, the built artifacts).
pub fn shared_temp_dir() -> tempfile::TempDir {
    preflight::require_all();
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temp dir");
    dir
}

/// One bare jms-agentd: its config in its own directory.
pub struct Agentd {
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Agentd {
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

    /// Writes the agentd config for `server` (poll every second) in `dir`.
    pub fn new(dir: &Path, server: &str) -> Agentd {
        Agentd::with_servers(dir, &format!("{server:?}"))
    }

    /// Writes the agentd config for `servers` (a TOML string or list:
    /// `["URL", "URL"]`), polling every second, in `dir`.
    pub fn with_servers(dir: &Path, servers: &str) -> Agentd {
        let agentd = Agentd {
            dir: dir.to_path_buf(),
            child: None,
        };
        std::fs::write(
            agentd.config(),
            format!(
                "socket = {:?}\nstate_dir = {:?}\nnss_cache = {:?}\n\n[central]\nserver = {servers}\npoll_interval_secs = 1\nmax_staleness_secs = 3600\ntimeout_secs = 5\n\n[sessions]\nworker_user = \"nobody\"\n",
                agentd.socket(),
                agentd.state(),
                agentd.cache()
            ),
        )
        .expect("write agentd.toml");
        agentd
    }

    /// `jms-agentd enroll` with `token` at `server`, as bastion `b1`.
    pub fn enroll(&self, server: &str, token: &str) -> Output {
        self.enroll_as(server, token, "b1")
    }

    /// `jms-agentd enroll` with `token` at `server`, as bastion `name`.
    pub fn enroll_as(&self, server: &str, token: &str, name: &str) -> Output {
        self.command()
            .args([
                "enroll", "--server", server, "--token", token, "--name", name,
            ])
            .output()
            .expect("run jms-agentd enroll")
    }

    /// jms-agentd with this config, to give a subcommand.
    pub fn command(&self) -> Command {
        let mut command = Command::new(preflight::artifacts().agentd);
        command.arg("--config").arg(self.config());
        command
    }

    /// Starts jms-agentd (log truncated) and waits for its socket.
    pub fn start(&mut self) {
        let log = std::fs::File::create(self.dir.join("agentd.log")).expect("agentd.log");
        let mut child = self
            .command()
            .env("JMS_LOG", "info")
            .stderr(log)
            .spawn()
            .expect("start jms-agentd");
        let started = Instant::now();
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = child.try_wait().expect("wait for jms-agentd") {
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
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// The running jms-agentd's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9 and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn has_user(&self, name: &str) -> bool {
        NssView::open(&self.cache(), &overlay_path(&self.cache()))
            .ok()
            .and_then(|c| c.user_by_name(name).ok().flatten().map(|_| ()))
            .is_some()
    }

    /// The (uid, gid) the NSS cache gives a jms user.
    pub fn ids_of(&self, name: &str) -> (u32, u32) {
        let cache = NssView::open(&self.cache(), &overlay_path(&self.cache()))
            .expect("the NSS cache opens");
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

impl Drop for Agentd {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("--- jms-agentd log ---\n{}", self.log());
        }
    }
}

/// A server with the example policy and a bastion's agentd enrolled to it
/// (not started) in a [`shared_temp_dir`]. Plain HTTP (the server as
/// behind a TLS proxy) when `insecure`: for the tests that put their own
/// HTTP proxies on the wire.
pub fn enrolled_agentd(insecure: bool) -> (tempfile::TempDir, Central, Agentd) {
    let central = if insecure {
        Central::start_insecure()
    } else {
        Central::start()
    };
    let (dir, agentd) = enrolled_agentd_to(&central, None);
    (dir, central, agentd)
}

/// The example policy on `central` and a bastion's agentd enrolled to it
/// (not started) in a [`shared_temp_dir`], its `[central] server` being
/// `servers` (a TOML list of URLs) when given.
pub fn enrolled_agentd_to(central: &Central, servers: Option<&str>) -> (tempfile::TempDir, Agentd) {
    let dir = shared_temp_dir();
    central.jmsctl(&["policy", "apply", EXAMPLE_POLICY]);
    let token = central.enrollment_token();
    let agentd_dir = dir.path().join("bastion");
    std::fs::create_dir(&agentd_dir).expect("the bastion's dir");
    let agentd = match servers {
        Some(servers) => Agentd::with_servers(&agentd_dir, servers),
        None => Agentd::new(&agentd_dir, &central.url),
    };
    let out = agentd.enroll(&central.url, &token);
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (dir, agentd)
}

/// Runs one query on the server's database with the sqlite3 tool; one
/// line per row, columns separated by `|`.
pub fn sqlite(central: &Central, query: &str) -> Vec<String> {
    let out = Command::new("sqlite3")
        .arg(central.data_dir().join("jms.db"))
        .arg(query)
        .output()
        .expect("these tests read the server's database with the sqlite3 tool");
    assert!(
        out.status.success(),
        "sqlite3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("sqlite3 prints UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// Idempotency keys in the server's events table, sorted.
pub fn stored_events(central: &Central) -> Vec<String> {
    sqlite(
        central,
        "SELECT idempotency_key FROM events ORDER BY idempotency_key",
    )
}
