//! jms-agent as sshd runs it, outside the menu: a login without a
//! terminal or a target gets one line; anything that would be a shell on
//! the bastion is refused with one line; SendEnv/SetEnv and agent
//! forwarding never reach the agent; port forwarding (-L/-R/-D/-W) is
//! refused; and (with a real target) exec passes stdin byte-exact and the
//! exit status back.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jms_e2e::fixture::{self, Keys};
use jms_e2e::run::{self, Outcome, COMMAND_TIMEOUT};
use jms_e2e::target::{Target, DEPLOY_PASSWORD};
use jms_e2e::terminal::Terminal;
use jms_e2e::Bastion;

fn scene() -> (Bastion, Keys) {
    let (builder, keys) = fixture::standard();
    (builder.start(), keys)
}

/// The non-empty lines of `text`.
fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[track_caller]
fn assert_one_line_refusal(out: &Outcome, what: &str) {
    assert_eq!(
        out.code(),
        Some(1),
        "{what}: jms-agent should exit 1 (255 would be ssh's own failure):\n{out}"
    );
    assert!(out.stdout.is_empty(), "{what}: nothing on stdout:\n{out}");
    let errors = lines(&out.stderr);
    assert!(
        errors.len() == 1 && errors[0].starts_with("jms-agent: "),
        "{what}: exactly one `jms-agent: …` line on stderr:\n{out}"
    );
}

#[test]
fn a_login_without_terminal_or_target_gets_one_line() {
    let (bastion, keys) = scene();
    let out = bastion.ssh_key("alice", &keys.alice, None);
    assert_one_line_refusal(&out, "ssh bastion (no tty, no command)");
    assert!(
        out.stderr.contains("alice") && out.stderr.contains("ssh -t"),
        "the line names her and says how to get the menu:\n{out}"
    );
}

#[test]
fn a_shell_on_the_bastion_is_refused_with_one_line() {
    let (bastion, keys) = scene();
    for command in [
        "bash",
        "sh -c id",
        "/bin/sh -i",
        "id; echo escaped-to-a-shell",
        "exec /bin/bash -l",
    ] {
        let out = bastion.ssh_key("alice", &keys.alice, Some(command));
        assert_one_line_refusal(&out, &format!("ssh bastion '{command}'"));
        assert!(
            !out.output().contains("uid=") && !out.output().contains("escaped-to-a-shell"),
            "`{command}` must never run on the bastion:\n{out}"
        );
    }
    // With a terminal too: one line, then the connection ends.
    let mut terminal = bastion.ssh_terminal("alice", &keys.alice, &[], Some("bash"), (80, 24));
    let status = terminal.wait_exit(Duration::from_secs(20));
    let screen = terminal.screen();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(1),
        "ssh -tt bastion bash should end with status 1:\n{screen}"
    );
    let shown = lines(&screen.text())
        .into_iter()
        .filter(|l| !l.starts_with("Connection to"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(
        shown.len() == 1 && shown[0].starts_with("jms-agent: "),
        "one line on the terminal:\n{screen}"
    );
}

/// The pids of `jms-agent` sessions (not authorized-keys) in the
/// bastion's namespace.
fn agent_pids(bastion: &Bastion) -> Vec<u32> {
    let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let bastion_ns = ns(&bastion.sshd_pid().to_string());
    fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| ns(&pid.to_string()) == bastion_ns)
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline.contains("jms-agent")
                && !cmdline.contains("authorized-keys")
                && !cmdline.contains("jms-agentd")
        })
        .collect()
}

/// The environment sshd gave process `pid` (what /proc shows: the
/// initial block, before the agent dropped it).
fn environment_of(pid: u32) -> Vec<String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn sendenv_setenv_and_agent_forwarding_never_reach_the_agent() {
    let (bastion, keys) = scene();
    // A real ssh-agent, so that -A asks for agent forwarding.
    let agent_socket = bastion.dir().join("ssh-agent.sock");
    let mut ssh_agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&agent_socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ssh-agent (openssh-client)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent_socket.exists() {
        assert!(Instant::now() < deadline, "ssh-agent made no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut ssh = bastion.ssh_terminal_command(
        "alice",
        &keys.alice,
        &[
            "-A",
            "-o",
            "SendEnv=LC_JMSLEAK JMS_LEAK LD_LIBRARY_PATH",
            "-o",
            "SetEnv=LD_PRELOAD=/nonexistent/evil.so LD_AUDIT=/nonexistent/audit.so JMS_SETENV=1",
        ],
        None,
    );
    ssh.env("LC_JMSLEAK", "leaked")
        .env("JMS_LEAK", "leaked")
        .env("SSH_AUTH_SOCK", &agent_socket);
    let mut terminal = Terminal::spawn(ssh, 80, 24);
    terminal.wait_for("the menu", Duration::from_secs(15), |s| {
        s.rows.last().is_some_and(|r| r.starts_with("Opt>"))
    });
    let pids = agent_pids(&bastion);
    assert_eq!(pids.len(), 1, "one jms-agent for the login: {pids:?}");
    let environment = environment_of(pids[0]);
    assert!(
        environment.iter().any(|v| v.starts_with("SSH_CONNECTION=")),
        "sanity: the agent's environment was read: {environment:?}"
    );
    for name in [
        "LC_JMSLEAK=",
        "JMS_LEAK=",
        "LD_LIBRARY_PATH=",
        "LD_PRELOAD=",
        "LD_AUDIT=",
        "JMS_SETENV=",
        "SSH_AUTH_SOCK=",
    ] {
        assert!(
            !environment.iter().any(|v| v.starts_with(name)),
            "{name} must not reach jms-agent; its environment: {environment:?}"
        );
    }
    assert!(
        !terminal.transcript().contains("ld.so"),
        "no loader message:\n{}",
        terminal.transcript()
    );
    terminal.type_slowly("q\r");
    assert!(terminal
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let _ = ssh_agent.kill();
    let _ = ssh_agent.wait();
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts `ssh -N` with `forward` and waits until its local port listens.
fn start_forward(
    bastion: &Bastion,
    keys: &Keys,
    forward: &[&str],
    port: u16,
) -> std::process::Child {
    let mut cmd = bastion.ssh_command("ssh");
    cmd.args([
        "-N",
        "-o",
        "PreferredAuthentications=publickey",
        "-o",
        "BatchMode=yes",
        "-i",
    ])
    .arg(&keys.alice.private)
    .args(forward)
    .args([
        "-F",
        "/dev/null",
        "-p",
        &bastion.port().to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        "-l",
        "alice",
        "127.0.0.1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = cmd.spawn().expect("start ssh -N");
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "ssh {forward:?} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// What comes back on `stream` within a few seconds (until EOF).
fn read_some(mut stream: TcpStream) -> Vec<u8> {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut got = Vec::new();
    let mut buffer = [0u8; 256];
    while let Ok(n) = stream.read(&mut buffer) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buffer[..n]);
    }
    got
}

#[test]
fn port_forwarding_is_refused() {
    let (bastion, keys) = scene();
    // -L: the tunnel opens locally, but the bastion refuses the channel:
    // no SSH banner of the bastion's own sshd comes through.
    let port = free_port();
    let forward = format!("{port}:127.0.0.1:{}", bastion.port());
    let mut local = start_forward(&bastion, &keys, &["-L", &forward], port);
    let got = read_some(TcpStream::connect(("127.0.0.1", port)).expect("connect to -L"));
    let _ = local.kill();
    let _ = local.wait();
    assert!(
        !String::from_utf8_lossy(&got).contains("SSH-2.0"),
        "-L must not reach anything through the bastion, got {got:?}"
    );

    // -D: a SOCKS5 CONNECT through the bastion fails.
    let port = free_port();
    let mut socks = start_forward(&bastion, &keys, &["-D", &port.to_string()], port);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to -D");
    stream.write_all(&[5, 1, 0]).expect("socks greeting");
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).expect("socks method reply");
    let target = bastion.port().to_be_bytes();
    stream
        .write_all(&[5, 1, 0, 1, 127, 0, 0, 1, target[0], target[1]])
        .expect("socks connect");
    let got = read_some(stream);
    let _ = socks.kill();
    let _ = socks.wait();
    assert!(
        !(got.len() >= 2 && got[0] == 5 && got[1] == 0),
        "-D must not connect through the bastion, got {got:?}"
    );
    assert!(
        bastion.sshd_log().contains("refused local port forward"),
        "sshd should log the refused forwards:\n{}",
        bastion.sshd_log()
    );

    // -R: the bastion refuses to listen for her.
    bastion
        .ssh_key_with(
            "alice",
            &keys.alice,
            &[
                "-N",
                "-o",
                "ExitOnForwardFailure=yes",
                "-R",
                "0:127.0.0.1:9",
            ],
            None,
        )
        .assert_failure("-R must be refused")
        .assert_output_contains("forwarding failed", "ssh says the remote forward failed");

    // -W: a stdio forward is refused before any session.
    let target = format!("127.0.0.1:{}", bastion.port());
    bastion
        .ssh_key_with("alice", &keys.alice, &["-W", &target], None)
        .assert_failure("-W must be refused")
        .assert_output_contains(
            "stdio forwarding failed",
            "the client's view of the refusal",
        );
}

#[test]
fn exec_through_the_agent_keeps_stdin_byte_exact_and_the_exit_status() {
    let target = Target::start();
    let (builder, keys) = fixture::standard();
    let mut policy = fixture::standard_policy(&keys);
    policy.push_str(&format!(
        "nodes:\n  - /Default/prod\nassets:\n  - {{name: web01, address: {}, protocols: [{{name: ssh, port: {}}}], nodes: [/Default/prod], accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]}}\n\
         grants:\n  - {{name: ops-prod, user_groups: [ops], nodes: [/Default/prod], accounts: [\"@ALL\"], protocols: [ssh], actions: [connect]}}\n",
        target.address(),
        target.port()
    ));
    let bastion = builder.policy(&policy).start();
    // Binary input, there from the first moment.
    let input: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    let expected: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = bastion.ssh_command("ssh");
    cmd.args([
        "-o",
        "PreferredAuthentications=publickey",
        "-o",
        "BatchMode=yes",
        "-i",
    ])
    .arg(&keys.alice.private)
    .args([
        "-F",
        "/dev/null",
        "-p",
        &bastion.port().to_string(),
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentitiesOnly=yes",
        "-l",
        "alice",
        "127.0.0.1",
        "web01",
        "sha256sum; echo to-stderr >&2; exit 7",
    ]);
    let out = run::run(&mut cmd, &input, COMMAND_TIMEOUT);
    assert_eq!(
        out.code(),
        Some(7),
        "the target's exit status comes back:\n{out}"
    );
    assert!(
        out.stdout.starts_with(&expected),
        "4 MiB of binary stdin should arrive byte-exact (sha256 {expected}):\n{out}"
    );
    assert_eq!(
        lines(&out.stderr),
        ["to-stderr"],
        "the target's stderr, alone:\n{out}"
    );
}

#[test]
fn a_terminating_signal_leaves_the_menu_cleanly() {
    let (bastion, keys) = scene();
    let mut terminal = bastion.ssh_terminal("alice", &keys.alice, &[], None, (80, 24));
    terminal.wait_for("the menu", Duration::from_secs(15), |s| {
        s.alternate && s.rows.last().is_some_and(|r| r.starts_with("Opt>"))
    });
    let pids = agent_pids(&bastion);
    assert_eq!(pids.len(), 1, "one jms-agent for the login: {pids:?}");
    // SAFETY: kill has no memory preconditions; the pid is the agent's.
    unsafe { libc::kill(pids[0] as i32, libc::SIGTERM) };
    let status = terminal.wait_exit(Duration::from_secs(10));
    let screen = terminal.screen();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(128 + libc::SIGTERM),
        "the agent ends as a shell would on SIGTERM:\n{screen}"
    );
    assert!(
        !screen.alternate && terminal.transcript().contains("\\u{1b}[?1049l"),
        "the agent leaves the alternate screen before it goes:\n{screen}\n{}",
        terminal.transcript()
    );
}

#[test]
fn a_direct_target_with_a_terminal_follows_resizes_and_returns_the_status() {
    let target = Target::start();
    let (builder, keys) = fixture::standard();
    let mut policy = fixture::standard_policy(&keys);
    policy.push_str(&format!(
        "nodes:\n  - /Default/prod\nassets:\n  - {{name: web01, address: {}, protocols: [{{name: ssh, port: {}}}], nodes: [/Default/prod], accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]}}\n\
         grants:\n  - {{name: ops-prod, user_groups: [ops], nodes: [/Default/prod], accounts: [\"@ALL\"], protocols: [ssh], actions: [connect]}}\n",
        target.address(),
        target.port()
    ));
    let bastion = builder.policy(&policy).start();
    let mut terminal =
        bastion.ssh_terminal("alice", &keys.alice, &[], Some("deploy@web01"), (80, 24));
    terminal.wait_for_text("$", Duration::from_secs(30));
    terminal.type_slowly("stty size\r");
    terminal.wait_for_text("24 80", Duration::from_secs(15));
    terminal.resize(132, 43);
    std::thread::sleep(Duration::from_millis(300));
    terminal.type_slowly("stty size\r");
    terminal.wait_for_text("43 132", Duration::from_secs(15));
    terminal.type_slowly("exit 5\r");
    let status = terminal.wait_exit(Duration::from_secs(20));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(5),
        "the target shell's exit status comes back through ssh:\n{}",
        terminal.screen()
    );
}
