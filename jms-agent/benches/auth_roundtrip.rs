//! What a PAM login costs at jms-agentd, the hash aside: the round trips
//! pam_jms makes (UserStatus + Authenticate; AccountCheck) against a running
//! jms-agentd, each on a fresh connection as pam_jms does, next to the
//! PBKDF2 verification alone measured in the same run.
//!
//! `cargo bench -p jms-agent --bench auth_roundtrip` (release). Prints p50/p99.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jms_core::model::Secret;
use jms_core::password::{hash_password, verify_password};
use jms_proto::{AuthResult, Client, Request, Response};

const ROUNDS: usize = 3000;
const ITERATIONS: u32 = 1000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn measure(mut f: impl FnMut()) -> (Duration, Duration) {
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed()
        })
        .collect();
    times.sort_unstable();
    (percentile(&times, 0.50), percentile(&times, 0.99))
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("auth_roundtrip: run with `cargo bench` to measure");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let hash = hash_password("pw", ITERATIONS).expect("hash");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!("users: [{{username: alice, password_hash: '{hash}'}}]\n"),
    )
    .unwrap();
    let socket = dir.path().join("agentd.sock");
    let config = dir.path().join("agentd.toml");
    std::fs::write(
        &config,
        format!(
            "socket = {socket:?}\nstate_dir = {:?}\nnss_cache = {:?}\npolicy = {policy:?}\n",
            dir.path().join("state"),
            dir.path().join("nss.db")
        ),
    )
    .unwrap();
    for file in [&policy, &config] {
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let mut agentd = Command::new(env!("CARGO_BIN_EXE_jms-agentd"))
        .arg("--config")
        .arg(&config)
        .env("JMS_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start jms-agentd");
    wait_for(&socket);

    let timeout = Duration::from_secs(3);
    let call =
        |request: &Request| Client::call_once(&socket, timeout, request).expect("round trip");
    let (hash_p50, hash_p99) = measure(|| assert!(verify_password(b"pw", &hash).unwrap()));
    let (auth_p50, auth_p99) = measure(|| {
        assert_eq!(
            call(&Request::UserStatus {
                user: "alice".into()
            }),
            Response::UserStatus {
                known: true,
                needs_totp: false
            }
        );
        let answer = call(&Request::Authenticate {
            user: "alice".into(),
            password: Secret::new("pw"),
            totp: None,
            rhost: Some("127.0.0.1".into()),
            service: "sshd".into(),
        });
        assert_eq!(
            answer,
            Response::Auth {
                result: AuthResult::Success
            }
        );
    });
    let (account_p50, account_p99) = measure(|| {
        drop(call(&Request::AccountCheck {
            user: "alice".into(),
            rhost: Some("127.0.0.1".into()),
        }))
    });
    let _ = agentd.kill();
    let _ = agentd.wait();

    println!("== PAM round trips at jms-agentd ({ROUNDS} each, fresh connection per call as pam_jms does)");
    println!(
        "  pbkdf2 verify alone ({ITERATIONS} iterations)   p50 {:8.1} µs  p99 {:8.1} µs",
        us(hash_p50),
        us(hash_p99)
    );
    println!(
        "  authenticate (UserStatus + Authenticate)  p50 {:8.1} µs  p99 {:8.1} µs",
        us(auth_p50),
        us(auth_p99)
    );
    println!(
        "  authenticate less the hash                p50 {:8.1} µs  p99 {:8.1} µs  (target p99 <= 2000 µs: {})",
        us(auth_p50.saturating_sub(hash_p50)),
        us(auth_p99.saturating_sub(hash_p50)),
        if auth_p99.saturating_sub(hash_p50) <= Duration::from_millis(2) { "PASS" } else { "MISS" }
    );
    println!(
        "  account check (AccountCheck)             p50 {:8.1} µs  p99 {:8.1} µs",
        us(account_p50),
        us(account_p99)
    );
}

fn wait_for(socket: &Path) {
    let started = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "jms-agentd did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
