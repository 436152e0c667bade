//! jms-agentd out of file descriptors: with a low RLIMIT_NOFILE and more
//! connections than it can accept, the accept loop pauses (growing pauses,
//! one alarm line each) instead of spinning on EMFILE, and serves again
//! once descriptors are free. Runs as root (CI does).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use jms_proto::{Client, Request, Response};

const TIMEOUT: Duration = Duration::from_secs(5);
/// The daemon's descriptor limit: enough to start, far fewer than the
/// connections the test opens.
const NOFILE: u32 = 64;

struct Agentd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Agentd {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agentd.log")).unwrap_or_default()
    }
}

impl Drop for Agentd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- jms-agentd log (tail) ---\n{}", tail(&self.log(), 40));
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn start_with_nofile(nofile: u32) -> Agentd {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs as root (CI does)"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(
        path("agentd.toml"),
        format!(
            "socket = {:?}\nstate_dir = {:?}\nnss_cache = {:?}\npolicy = {:?}\n\n[sessions]\nworker_user = \"nobody\"\n",
            path("agentd.sock"),
            path("state"),
            path("nss.db"),
            path("policy.yaml"),
        ),
    )
    .unwrap();
    std::fs::write(
        path("policy.yaml"),
        "user_groups: [{name: ops}]\nusers:\n  - {username: alice, groups: [ops]}\n",
    )
    .unwrap();
    std::fs::set_permissions(path("policy.yaml"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let log = std::fs::File::create(path("agentd.log")).unwrap();
    let child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_jms-agentd"))
        .arg("--config")
        .arg(path("agentd.toml"))
        .stderr(log)
        .spawn()
        .expect("start jms-agentd under prlimit (util-linux)");
    let mut agentd = Agentd { dir, child };
    let started = Instant::now();
    while UnixStream::connect(agentd.dir.path().join("agentd.sock")).is_err() {
        if let Some(status) = agentd.child.try_wait().unwrap() {
            panic!("jms-agentd exited with {status}: {}", agentd.log());
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "jms-agentd did not listen: {}",
            agentd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    agentd
}

fn user_status(agentd: &Agentd) -> Result<Response, jms_proto::FrameError> {
    Client::call_once(
        &agentd.dir.path().join("agentd.sock"),
        TIMEOUT,
        &Request::UserStatus {
            user: "alice".into(),
        },
    )
}

#[test]
fn out_of_descriptors_the_accept_loop_pauses_and_recovers() {
    let agentd = start_with_nofile(NOFILE);
    // Root's connections (the login lane, up to 512) are far more than
    // the daemon's 64 descriptors: accept fails with EMFILE while they
    // are held, and the rest wait in the listen backlog.
    let held: Vec<UnixStream> = (0..3 * NOFILE)
        .map(|_| {
            let s = UnixStream::connect(agentd.dir.path().join("agentd.sock"))
                .expect("connect (the backlog takes what accept does not)");
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let log = agentd.log();
    let failures = log.lines().filter(|l| l.contains("os error 24")).count();
    assert!(
        failures > 0,
        "the test should have driven the daemon out of descriptors (EMFILE):\n{}",
        tail(&log, 20)
    );
    // 50 ms, doubling to 1 s: about seven pauses in two seconds. A loop
    // that retried at once would log thousands of failures.
    assert!(
        failures <= 20,
        "accept should pause on EMFILE, not spin: {failures} failures logged in 2 s:\n{}",
        tail(&log, 20)
    );
    assert!(
        log.contains("out of resources; pausing"),
        "each pause should be logged as an alarm:\n{}",
        tail(&log, 20)
    );
    // Once descriptors are free again, the daemon serves as before.
    drop(held);
    let answer = user_status(&agentd);
    assert!(
        matches!(
            answer,
            Ok(Response::UserStatus {
                known: true,
                needs_totp: false
            })
        ),
        "the daemon should answer again once descriptors are free: {answer:?}\n{}",
        tail(&agentd.log(), 20)
    );
}
