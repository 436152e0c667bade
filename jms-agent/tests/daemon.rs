//! jms-agentd as a process: its socket under bad input, concurrency and
//! callers of the wrong uid; reload on SIGHUP; state that survives a
//! restart; stable ids; refusal of unsafe files. Runs as root (CI does).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jms_core::model::Secret;
use jms_core::nss_cache::NssCache;
use jms_proto::{AccountResult, AuthResult, Client, Request, Response};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Django-format hash of "pw" (salt "salt", 1000 iterations).
fn hash_of_pw() -> String {
    jms_core::password::hash_password("pw", 1000).expect("hash")
}

struct Agentd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Agentd {
    fn socket(&self) -> PathBuf {
        self.dir.path().join("agentd.sock")
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("agentd.toml")
    }
    fn policy(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    fn new(policy: &str, lockout: &str) -> Agentd {
        assert!(
            nix::unistd::geteuid().is_root(),
            "these tests run as root (CI does): SO_PEERCRED callers and file owners matter"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        // Others must reach the socket; what is private sits in state/ (0700).
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let agentd = Agentd { dir, child: None };
        let config = format!(
            "socket = {:?}\nstate_dir = {:?}\nnss_cache = {:?}\npolicy = {:?}\nauthorized_keys_user = \"nobody\"\n{lockout}\n\n[sessions]\nworker_user = \"nobody\"\n",
            agentd.socket(),
            agentd.dir.path().join("state"),
            agentd.dir.path().join("nss.db"),
            agentd.policy(),
        );
        std::fs::write(agentd.config(), config).unwrap();
        std::fs::write(agentd.policy(), policy).unwrap();
        std::fs::set_permissions(agentd.policy(), std::fs::Permissions::from_mode(0o600)).unwrap();
        agentd
    }

    fn start(mut self) -> Agentd {
        self.spawn();
        self
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("agentd.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jms-agentd"))
            .arg("--config")
            .arg(self.config())
            .stderr(log)
            .spawn()
            .expect("start jms-agentd");
        self.child = Some(child);
        let started = Instant::now();
        while UnixStream::connect(self.socket()).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("jms-agentd exited with {status}: {}", self.log());
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "jms-agentd did not listen within {TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
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

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agentd.log")).unwrap_or_default()
    }

    fn call(&self, request: &Request) -> Response {
        Client::call_once(&self.socket(), TIMEOUT, request)
            .unwrap_or_else(|e| panic!("call failed: {e}\n{}", self.log()))
    }

    fn hup(&self) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGHUP).unwrap();
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

fn policy_with(users: &str) -> String {
    format!("user_groups: [{{name: ops}}]\nusers:\n{users}")
}

fn alice() -> String {
    policy_with(&format!(
        "  - {{username: alice, groups: [ops], password_hash: '{}'}}\n",
        hash_of_pw()
    ))
}

fn authenticate(agentd: &Agentd, user: &str, password: &str) -> Response {
    agentd.call(&Request::Authenticate {
        user: user.into(),
        password: Secret::new(password),
        totp: None,
        rhost: Some("127.0.0.1".into()),
        service: "sshd".into(),
    })
}

/// Sends raw bytes, returns what the daemon answered before closing.
fn raw(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.write_all(bytes).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    answer
}

#[test]
fn malformed_and_oversized_messages_get_errors_and_never_crash_it() {
    let agentd = Agentd::new(&alice(), "").start();
    let oversized = raw(&agentd.socket(), &u32::MAX.to_be_bytes());
    assert!(
        String::from_utf8_lossy(&oversized).contains("outside 1..="),
        "oversized frame answered {oversized:?}"
    );
    let mut garbage = 5u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[1, b'n', b'o', b'p', b'e']);
    assert!(String::from_utf8_lossy(&raw(&agentd.socket(), &garbage)).contains("malformed message"));
    let mut version = 3u32.to_be_bytes().to_vec();
    version.extend_from_slice(&[7, b'{', b'}']);
    assert!(
        String::from_utf8_lossy(&raw(&agentd.socket(), &version)).contains("protocol version 7")
    );
    raw(&agentd.socket(), &[0, 0]);
    // Still serving.
    assert_eq!(
        agentd.call(&Request::UserStatus {
            user: "alice".into()
        }),
        Response::UserStatus {
            known: true,
            needs_totp: false
        }
    );
}

#[test]
fn concurrent_clients_are_served() {
    let agentd = Agentd::new(&alice(), "").start();
    let socket = agentd.socket();
    let workers: Vec<_> = (0..32)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket, TIMEOUT).unwrap();
                for _ in 0..20 {
                    let user = if i % 2 == 0 { "alice" } else { "mallory" };
                    let answer = client
                        .call(&Request::UserStatus { user: user.into() })
                        .unwrap();
                    assert_eq!(
                        answer,
                        Response::UserStatus {
                            known: i % 2 == 0,
                            needs_totp: false
                        }
                    );
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("client thread");
    }
}

#[test]
fn only_root_may_authenticate_and_only_the_keys_user_may_ask_for_keys() {
    let agentd = Agentd::new(&alice(), "").start();
    // A python client running as nobody sends one frame and prints the answer.
    let script = r#"
import socket, struct, sys, json
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
body = b'\x01' + json.dumps(json.loads(sys.argv[2])).encode()
s.sendall(struct.pack('>I', len(body)) + body)
n = struct.unpack('>I', s.recv(4))[0]; print(s.recv(n)[1:].decode())
"#;
    let as_nobody = |request: &str| {
        let out = Command::new("setpriv")
            .args([
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                script,
            ])
            .arg(agentd.socket())
            .arg(request)
            .stderr(Stdio::inherit())
            .output()
            .expect("setpriv + python3");
        String::from_utf8(out.stdout).unwrap()
    };
    let answer = as_nobody(r#"{"request": "user_status", "user": "alice"}"#);
    assert!(
        answer.contains("\"forbidden\""),
        "nobody must not query users: {answer}"
    );
    let answer = as_nobody(
        r#"{"request": "authenticate", "user": "alice", "password": "pw", "totp": null, "rhost": null, "service": "x"}"#,
    );
    assert!(
        answer.contains("\"forbidden\""),
        "nobody must not authenticate: {answer}"
    );
    let answer = as_nobody(r#"{"request": "authorized_keys", "user": "alice"}"#);
    assert!(
        answer.contains("\"keys\""),
        "the keys user may ask for keys: {answer}"
    );
}

#[test]
fn sighup_reloads_the_policy_and_keeps_the_last_good_one_on_error() {
    let agentd = Agentd::new(&alice(), "").start();
    assert_eq!(
        agentd.call(&Request::UserStatus { user: "bob".into() }),
        Response::UserStatus {
            known: false,
            needs_totp: false
        }
    );
    let with_bob = format!("{}  - {{username: bob, groups: [ops]}}\n", alice());
    std::fs::write(agentd.policy(), with_bob).unwrap();
    agentd.hup();
    wait_for(|| {
        agentd.call(&Request::UserStatus { user: "bob".into() })
            == Response::UserStatus {
                known: true,
                needs_totp: false,
            }
    });
    let cache = NssCache::open(&agentd.dir.path().join("nss.db")).unwrap();
    assert!(
        cache.user_by_name("bob").unwrap().is_some(),
        "the NSS cache follows the reload"
    );

    std::fs::write(agentd.policy(), "users: [{username: 'bad name'}]\n").unwrap();
    agentd.hup();
    wait_for(|| {
        agentd
            .log()
            .contains("reload failed, keeping the last good policy")
    });
    assert_eq!(
        agentd.call(&Request::UserStatus { user: "bob".into() }),
        Response::UserStatus {
            known: true,
            needs_totp: false
        }
    );
}

fn wait_for(mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(
            started.elapsed() < TIMEOUT,
            "condition not met within {TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn lockout_counts_failures_and_survives_a_restart() {
    let mut agentd = Agentd::new(
        &alice(),
        "[lockout]\nmax_failures = 3\nwindow_secs = 600\nlock_secs = 600",
    )
    .start();
    assert_eq!(
        authenticate(&agentd, "alice", "pw"),
        Response::Auth {
            result: AuthResult::Success
        }
    );
    for _ in 0..3 {
        assert_eq!(
            authenticate(&agentd, "alice", "wrong"),
            Response::Auth {
                result: AuthResult::WrongSecret
            }
        );
    }
    let locked = |agentd: &Agentd| matches!(authenticate(agentd, "alice", "pw"), Response::Auth { result: AuthResult::Denied { reason } } if reason.starts_with("account locked until"));
    assert!(
        locked(&agentd),
        "the right password is refused while locked"
    );
    agentd.stop();
    agentd.spawn();
    assert!(locked(&agentd), "the lock survives a restart");
    let account = agentd.call(&Request::AccountCheck {
        user: "alice".into(),
        rhost: None,
    });
    assert!(
        matches!(
            account,
            Response::Account {
                result: AccountResult::Denied { .. }
            }
        ),
        "{account:?}"
    );
    let mode = std::fs::metadata(agentd.dir.path().join("state/private.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "private state must be 0600");
}

#[test]
fn ids_are_stable_across_restarts_and_never_reused() {
    let two =
        policy_with("  - {username: alice, groups: [ops]}\n  - {username: bob, groups: [ops]}\n");
    let mut agentd = Agentd::new(&two, "").start();
    let cache_path = agentd.dir.path().join("nss.db");
    let uid_of = |name: &str| {
        NssCache::open(&cache_path)
            .unwrap()
            .user_by_name(name)
            .unwrap()
            .map(|u| u.uid)
    };
    let (alice_uid, bob_uid) = (uid_of("alice").unwrap(), uid_of("bob").unwrap());
    agentd.stop();
    std::fs::write(
        agentd.policy(),
        policy_with("  - {username: carol, groups: [ops]}\n  - {username: alice, groups: [ops]}\n"),
    )
    .unwrap();
    agentd.spawn();
    assert_eq!(uid_of("alice"), Some(alice_uid), "alice keeps her uid");
    assert_eq!(uid_of("bob"), None);
    let carol = uid_of("carol").unwrap();
    assert_ne!(carol, bob_uid, "bob's uid is never given to someone else");
    assert_ne!(carol, alice_uid);
    let mode = std::fs::metadata(&cache_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "the public cache is 0644");
    let text = std::fs::read(&cache_path).unwrap();
    assert!(
        !String::from_utf8_lossy(&text).contains("pbkdf2"),
        "no secret in the public cache"
    );
}

#[test]
fn unsafe_permissions_are_refused_at_start() {
    let agentd = Agentd::new(&alice(), "");
    std::fs::set_permissions(agentd.config(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jms-agentd"))
        .arg("--config")
        .arg(agentd.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is writable by group or others"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::set_permissions(agentd.config(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::set_permissions(agentd.policy(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jms-agentd"))
        .arg("--config")
        .arg(agentd.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is readable by others"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    std::fs::set_permissions(agentd.policy(), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::create_dir_all(agentd.dir.path().join("state")).unwrap();
    std::fs::set_permissions(
        agentd.dir.path().join("state"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jms-agentd"))
        .arg("--config")
        .arg(agentd.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be 0700"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_worker_user_stops_it_at_start_with_the_line_that_says_so() {
    let agentd = Agentd::new(&alice(), "");
    let config = std::fs::read_to_string(agentd.config()).unwrap().replace(
        "worker_user = \"nobody\"",
        "worker_user = \"jms-no-such-user\"",
    );
    std::fs::write(agentd.config(), config).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_jms-agentd"))
        .arg("--config")
        .arg(agentd.config())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("worker_user = \"jms-no-such-user\" does not exist"),
        "{stderr}"
    );
    assert!(!agentd.socket().exists(), "it never listened");
}
