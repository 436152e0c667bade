//! Load the bastion must take: bursts of simultaneous logins with the
//! package's sshd settings (packaging/lib/sshd-startups.conf, which the
//! harness writes into the bastion's sshd_config as the package does into
//! sshd_config.d), one uid flooding jms-agentd's socket while others log
//! in, and idle exec sessions giving their place back.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::thread;

use jms_e2e::fixture::{self, ALICE_PASSWORD, BOB_PASSWORD, KIM_USER};
use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::{BastionBuilder, Outcome, Pam, PasswordMethod, Target};

/// How many logins start at once (issue 13, item 19: an Ansible run with
/// many forks through the bastion).
const SIMULTANEOUS: usize = 200;

/// The tests of this file run one at a time: the burst of 200 logins
/// saturates the machine, and the idle test measures quiet seconds.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn two_hundred_simultaneous_password_logins_all_succeed() {
    let _alone = alone();
    let (builder, _keys) = fixture::standard();
    let bastion = builder.start();
    let config = std::fs::read_to_string(bastion.dir().join("sshd_config")).expect("sshd_config");
    assert!(
        config.contains(&format!("MaxStartups {}", jms_e2e::packaged_max_startups())),
        "the harness should give sshd the package's MaxStartups:\n{config}"
    );
    let outcomes: Vec<Outcome> = thread::scope(|s| {
        let handles: Vec<_> = (0..SIMULTANEOUS)
            .map(|_| {
                let bastion = &bastion;
                s.spawn(move || {
                    bastion.ssh_password("alice", ALICE_PASSWORD, PasswordMethod::Password, None)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    // Each login that got through sshd, PAM (pam_jms → jms-agentd) and
    // ForceCommand ends in jms-agent's one line naming alice, status 1.
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|out| {
            !(out.code() == Some(1)
                && out
                    .stderr
                    .lines()
                    .any(|l| l.starts_with("jms-agent:") && l.contains("alice")))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "all {SIMULTANEOUS} simultaneous logins should succeed; {} failed, e.g.:\n{}\n\
         sshd log tail:\n{}",
        failed.len(),
        failed
            .iter()
            .take(3)
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n"),
        tail(&bastion.sshd_log(), 30)
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Opens `sys.argv[2]` connections to the agentd socket `sys.argv[1]` and
/// holds them; prints `held=H refused=R message=M` (M: the first refusal)
/// once the daemon has dealt with every one, then waits for stdin to close.
const HOLD_CONNECTIONS: &str = r#"
import socket, sys
path, n = sys.argv[1], int(sys.argv[2])
socks = []
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    socks.append(s)
# The daemon takes connections in order: once the last one is answered
# (or 15 s passed), every earlier one was dealt with.
socks[-1].settimeout(15)
answers = {}
try:
    data = socks[-1].recv(65536)
    if data:
        answers[n - 1] = data
except OSError:
    pass
for i, s in enumerate(socks[:-1]):
    s.setblocking(False)
    try:
        data = s.recv(65536)
        if data:
            answers[i] = data
    except BlockingIOError:
        pass
first = answers[min(answers)].decode("utf-8", "replace").replace("\n", " ") if answers else ""
print(f"held={n - len(answers)} refused={len(answers)} message={first}", flush=True)
sys.stdin.read()
"#;

#[test]
fn one_uid_holding_many_connections_cannot_starve_logins() {
    let _alone = alone();
    let (builder, keys) = fixture::standard();
    let bastion = builder.start();
    let passwd = bastion.getent(&["passwd", "alice"]);
    passwd.assert_success("alice should be known through NSS");
    let fields: Vec<&str> = passwd.stdout.trim().split(':').collect();
    let (uid, gid) = (fields[2], fields[3]);
    // More than the old shared pool (1024 slots for every caller).
    let attempts = 1100;
    let mut attacker = bastion
        .ns_command("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={gid}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            HOLD_CONNECTIONS,
            jms_e2e::bastion::AGENTD_SOCKET,
            &attempts.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the connection holder");
    let mut line = String::new();
    BufReader::new(attacker.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("the holder's report");
    let report = line.trim().to_owned();

    // While she holds them: PAM (root, the login lane), a password login
    // through ssh and a key login (AuthorizedKeysCommand as nobody) work.
    let pam = bastion.pamtester(&Pam::login("bob", BOB_PASSWORD));
    let bob = bastion.ssh_password("bob", BOB_PASSWORD, PasswordMethod::Password, None);
    let kim = bastion.ssh_key(KIM_USER, &keys.kim, None);
    drop(attacker.stdin.take());
    let _ = attacker.wait();

    let limit = 128; // max_clients_per_uid's default
    assert!(
        report.starts_with(&format!("held={limit} refused={} ", attempts - limit)),
        "uid {uid} should hold exactly max_clients_per_uid = {limit} connections, the rest refused: {report}"
    );
    assert!(
        report.contains(&format!("too many connections from uid {uid}"))
            && report.contains("max_clients_per_uid"),
        "a refused connection should get a line naming the per-uid limit: {report}"
    );
    pam.assert_success("pamtester login for bob while alice's uid holds its connections");
    for (who, out) in [("bob", &bob), (KIM_USER, &kim)] {
        assert!(
            out.code() == Some(1)
                && out
                    .stderr
                    .lines()
                    .any(|l| l.starts_with("jms-agent:") && l.contains(who)),
            "{who}'s ssh login should land in jms-agent while another uid holds its connections:\n{out}"
        );
    }
    assert!(
        bastion.agentd_log().contains(&format!(
            "connection refused: too many connections from uid {uid}"
        )),
        "agentd should log the refusals:\n{}",
        tail(&bastion.agentd_log(), 20)
    );
}

/// An exec without a terminal (and so scp and rsync, on the same relay)
/// with no byte either way for the idle timeout is ended with a line
/// saying why; one whose output or input keeps flowing is not.
#[test]
fn idle_exec_sessions_end_while_busy_ones_go_on() {
    let _alone = alone();
    let target = Target::start();
    let builder = BastionBuilder::new();
    let alice = builder.client_key("alice");
    let yaml = format!(
        "users:\n\
         \x20 - {{username: alice, name: Alice, public_keys: [\"{key}\"]}}\n\
         assets:\n\
         \x20 - name: web01\n    address: {address}\n    protocols: [{{name: ssh, port: {port}}}]\n\
         \x20   accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]\n\
         grants:\n\
         \x20 - {{name: alice-web01, users: [alice], assets: [web01], accounts: [deploy], protocols: [ssh], actions: [connect]}}\n",
        key = alice.public,
        address = target.address(),
        port = target.port(),
    );
    let bastion = builder.policy(&yaml).start();
    let config = bastion.dir().join("agentd.toml");
    let base = std::fs::read_to_string(&config).expect("agentd.toml");
    std::fs::write(
        &config,
        format!("{base}\n[sessions]\nidle_timeout_secs = 3\n"),
    )
    .expect("agentd.toml");
    bastion.kill_agentd();
    bastion.restart_agentd();

    // Nothing either way: ended (it would otherwise sleep for a minute).
    let idle = bastion.ssh_key("alice", &alice, Some("web01 sleep 60"));
    assert!(
        !idle.success() && idle.stderr.contains("idle for 3s (the idle timeout)"),
        "an exec with no input or output should end at the idle timeout, saying so:\n{idle}"
    );
    // Output every half second for longer than the timeout: not idle.
    let busy = bastion.ssh_key(
        "alice",
        &alice,
        Some("web01 for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 0.5; echo $i; done"),
    );
    assert!(
        busy.success() && busy.stdout.ends_with("11\n12\n"),
        "an exec whose output keeps flowing is not idle:\n{busy}"
    );
    // Input every half second (an upload, a pipe into a command), no
    // output until the end: not idle either.
    let mut cmd = bastion.ssh_command("ssh");
    cmd.args([
        "-o",
        "PreferredAuthentications=publickey",
        "-o",
        "BatchMode=yes",
        "-i",
    ])
    .arg(&alice.private)
    .args(bastion.ssh_args("alice"))
    .arg("web01 wc -l")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("ssh");
    let mut stdin = child.stdin.take().expect("stdin");
    for i in 0..12 {
        std::io::Write::write_all(&mut stdin, format!("line {i}\n").as_bytes())
            .expect("the session should still take input");
        thread::sleep(std::time::Duration::from_millis(500));
    }
    drop(stdin);
    let out = child.wait_with_output().expect("ssh output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "12",
        "an exec whose input keeps flowing is not idle: status {}, stdout {stdout:?}, stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
