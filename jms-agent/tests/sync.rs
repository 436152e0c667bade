//! jms-agentd with the central policy source against a real jms-server:
//! enroll with a one-time token, get the policy into the NSS cache, pick
//! up a change within a poll, refuse a tampered bundle on disk at restart,
//! and fail closed when no fresh policy can be had. Runs as root (CI does).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use jms_core::nss_cache::NssCache;

const AGENTD: &str = env!("CARGO_BIN_EXE_jms-agentd");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.yaml");
const TIMEOUT: Duration = Duration::from_secs(10);

/// jms-server and jmsctl, built next to jms-agentd (built here if absent).
fn server_bins() -> (PathBuf, PathBuf) {
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

struct Central {
    child: Option<Child>,
    url: String,
    token: String,
    ctl: PathBuf,
}

impl Central {
    fn start(data: &Path) -> Central {
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
        let mut child = Command::new(&server)
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("jms-server did not start: {line:?}"))
            .to_string();
        Central {
            child: Some(child),
            url,
            token,
            ctl,
        }
    }

    fn jmsctl(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.ctl)
            .args(args)
            .env("JMS_SERVER", &self.url)
            .env("JMS_TOKEN", &self.token)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "jmsctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn stop(&mut self) {
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

struct Bastion {
    dir: PathBuf,
    child: Option<Child>,
}

impl Bastion {
    fn config(&self) -> PathBuf {
        self.dir.join("agentd.toml")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("agentd.sock")
    }
    fn state(&self) -> PathBuf {
        self.dir.join("state")
    }
    fn cache(&self) -> PathBuf {
        self.dir.join("nss.db")
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agentd.log")).unwrap_or_default()
    }

    fn new(dir: &Path, server: &str) -> Bastion {
        let bastion = Bastion {
            dir: dir.to_path_buf(),
            child: None,
        };
        std::fs::write(
            bastion.config(),
            format!(
                "socket = {:?}\nstate_dir = {:?}\nnss_cache = {:?}\n\n[central]\nserver = {server:?}\npoll_interval_secs = 1\nmax_staleness_secs = 3600\ntimeout_secs = 5\n",
                bastion.socket(),
                bastion.state(),
                bastion.cache()
            ),
        )
        .unwrap();
        bastion
    }

    fn enroll(&self, server: &str, token: &str) -> Output {
        Command::new(AGENTD)
            .arg("--config")
            .arg(self.config())
            .args([
                "enroll", "--server", server, "--token", token, "--name", "b1",
            ])
            .output()
            .unwrap()
    }

    fn start(&mut self) {
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

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    fn has_user(&self, name: &str) -> bool {
        NssCache::open(&self.cache())
            .ok()
            .and_then(|c| c.user_by_name(name).ok().flatten().map(|_| ()))
            .is_some()
    }

    fn wait_for(&self, what: &str, check: impl Fn() -> bool) {
        let started = Instant::now();
        while !check() {
            assert!(
                started.elapsed() < TIMEOUT,
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

#[test]
fn a_bastion_enrolls_follows_the_server_and_refuses_a_tampered_bundle() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests run as root (CI does): config and state ownership matter"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut central = Central::start(&dir.path().join("server"));
    central.jmsctl(&["policy", "apply", EXAMPLE]);
    let token_out = central.jmsctl(&["bastion", "token", "create", "--ttl", "10m"]);
    let token = String::from_utf8(token_out.stdout)
        .unwrap()
        .trim()
        .to_string();

    let bastion_dir = dir.path().join("bastion");
    std::fs::create_dir(&bastion_dir).unwrap();
    let mut bastion = Bastion::new(&bastion_dir, &central.url);

    let out = bastion.enroll(&central.url, &token);
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(bastion.state().join("bastion.key")),
        0o600,
        "private key 0600"
    );
    assert_eq!(mode(bastion.state().join("central.json")), 0o600);
    let again = bastion.enroll(&central.url, &token);
    assert!(!again.status.success(), "a token works once");

    // The policy arrives in the NSS cache.
    bastion.start();
    assert!(
        bastion.has_user("alice"),
        "alice published at start:\n{}",
        bastion.log()
    );
    assert!(!bastion.has_user("zed"));
    assert_eq!(
        mode(bastion.state().join("bundle.jms")),
        0o600,
        "last good bundle kept 0600"
    );

    // A change on the server shows up within a poll.
    central.jmsctl(&["user", "add", "zed", "--name", "Zed"]);
    bastion.wait_for("zed in the NSS cache", || bastion.has_user("zed"));
    bastion.stop();

    // A bundle altered on disk is refused at restart; the server gives a
    // fresh one.
    let bundle_path = bastion.state().join("bundle.jms");
    let mut bytes = std::fs::read(&bundle_path).unwrap();
    let at = bytes.windows(3).rposition(|w| w == b"zed").unwrap();
    bytes[at] = b'Z';
    std::fs::write(&bundle_path, &bytes).unwrap();
    bastion.start();
    assert!(
        bastion.log().contains("refused"),
        "the tampered bundle is refused:\n{}",
        bastion.log()
    );
    assert!(bastion.has_user("zed") && bastion.has_user("alice"));
    assert_ne!(
        std::fs::read(&bundle_path).unwrap(),
        bytes,
        "replaced by a good one"
    );
    bastion.stop();

    // Tampered again with the server down: no policy to trust, so jms users
    // are refused (the cache lists none) — fail closed.
    central.stop();
    let mut bytes = std::fs::read(&bundle_path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&bundle_path, &bytes).unwrap();
    bastion.start();
    assert!(
        !bastion.has_user("alice"),
        "failed closed: no jms user published\n{}",
        bastion.log()
    );
    assert!(bastion.log().contains("refused"), "{}", bastion.log());
}

/// Rows in the server's events table (read with the sqlite3 tool).
fn stored_events(data: &Path) -> Vec<String> {
    let out = Command::new("sqlite3")
        .arg(data.join("jms.db"))
        .arg("SELECT idempotency_key FROM events ORDER BY idempotency_key")
        .output()
        .expect("this test reads the server's database with the sqlite3 tool");
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

#[test]
fn spooled_events_reach_the_server_once_and_the_segment_is_deleted() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests run as root (CI does): config and state ownership matter"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = dir.path().join("server");
    let central = Central::start(&data);
    central.jmsctl(&["policy", "apply", EXAMPLE]);
    let token_out = central.jmsctl(&["bastion", "token", "create", "--ttl", "10m"]);
    let token = String::from_utf8(token_out.stdout)
        .unwrap()
        .trim()
        .to_string();
    let bastion_dir = dir.path().join("bastion");
    std::fs::create_dir(&bastion_dir).unwrap();
    let mut bastion = Bastion::new(&bastion_dir, &central.url);
    let out = bastion.enroll(&central.url, &token);
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A sealed segment as the spool writes it (one line without an id: its
    // key is derived from the segment and line), and an open one.
    let spool = bastion.state().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    let event = |id: Option<&str>, command: &str| {
        let mut v = serde_json::json!({
            "time": "2026-01-01T00:00:00.000Z", "event": "command",
            "session": "s1", "user": "alice", "asset": "web01", "account": "root",
            "username": "root", "command": command, "kind": "exec",
            "decision": "allow", "filter": null,
        });
        if let Some(id) = id {
            v["id"] = id.into();
        }
        format!("{v}\n")
    };
    let segment = spool.join("1767225600000-000001.jsonl");
    let sealed = format!(
        "{}{}{}",
        event(Some("ev-1"), "uptime"),
        event(None, "id"),
        event(Some("ev-3"), "w")
    );
    std::fs::write(&segment, &sealed).unwrap();
    std::fs::write(spool.join("current.jsonl"), event(Some("ev-4"), "ls")).unwrap();
    let expected = vec![
        "ev-1".to_string(),
        "ev-3".into(),
        "ev-4".into(),
        "spool:1767225600000-000001.jsonl:2".into(),
    ];

    let spool_empty = || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().ends_with(".jsonl"))
    };
    bastion.start();
    bastion.wait_for("the spool to drain", spool_empty);
    assert_eq!(stored_events(&data), expected, "each event stored once");
    bastion.stop();

    // The same segment again (as if agentd had died before deleting it):
    // sent again, stored nothing twice, deleted again.
    std::fs::write(&segment, &sealed).unwrap();
    bastion.start();
    bastion.wait_for("the resent segment to be deleted", || !segment.exists());
    assert_eq!(
        stored_events(&data),
        expected,
        "a resend stores nothing twice"
    );
    assert!(
        bastion.log().contains("spooled events uploaded"),
        "{}",
        bastion.log()
    );
}
