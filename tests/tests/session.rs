//! Target sessions end to end: a real `ssh` to the bastion's sshd, the
//! ForceCommand agent passing its stdio to jms-agentd, agentd's OpenSSH
//! client to a real target sshd (src/target.rs, 127.0.0.2, own accounts),
//! and back: shells, exec with exact stdout/stderr/exit status and binary
//! stdin, named, vaulted-key and typed (`@INPUT`) accounts, every denial,
//! host key pinning, recordings (`asciinema cat`), the command log and
//! command filters (a refused command never reaches the target).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use jms_e2e::clients::CLIENT_OPTIONS;
use jms_e2e::procfs::{
    assert_runs_as_the_worker_user, children, children_names, sched_policy, status_field,
};
use jms_e2e::run::{self, Outcome, COMMAND_TIMEOUT};
use jms_e2e::target::{DEPLOY_PASSWORD, DEPLOY_UID, ROOT_PASSWORD};
use jms_e2e::terminal::Terminal;
use jms_e2e::{Bastion, BastionBuilder, ClientKey, Target};

struct Scene {
    target: Target,
    bastion: Bastion,
    alice: ClientKey,
    bob: ClientKey,
}

/// How the policy pins web01's host key.
enum Pin<'a> {
    None,
    Key(&'a str),
}

fn policy(target: &Target, alice: &ClientKey, bob: &ClientKey, pin: Pin<'_>) -> String {
    let port = target.port();
    let address = target.address();
    let key_block: String = target
        .keyuser_key()
        .lines()
        .map(|l| format!("          {l}\n"))
        .collect();
    let host_keys = match pin {
        Pin::None => String::new(),
        Pin::Key(key) => format!("    host_keys: [\"{key}\"]\n"),
    };
    let simple = |name: &str| {
        format!(
            "  - name: {name}\n    address: {address}\n    protocols: [{{name: ssh, port: {port}}}, {{name: sftp, port: {port}}}]\n\
             \x20   accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]\n"
        )
    };
    format!(
        "users:\n\
         \x20 - {{username: alice, name: Alice, groups: [ops], public_keys: [\"{alice}\"]}}\n\
         \x20 - {{username: bob, name: Bob, public_keys: [\"{bob}\"]}}\n\
         user_groups: [{{name: ops}}]\n\
         nodes: [/Default/prod/web]\n\
         assets:\n\
         \x20 - name: web01\n    address: {address}\n    protocols: [{{name: ssh, port: {port}}}, {{name: sftp, port: {port}}}]\n    nodes: [/Default/prod/web]\n\
         {host_keys}\
         \x20   accounts:\n\
         \x20     - {{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}\n\
         \x20     - {{name: root, username: root, secret_type: password, secret: \"{ROOT_PASSWORD}\"}}\n\
         \x20 - name: web02\n    address: {address}\n    protocols: [{{name: ssh, port: {port}}}]\n\
         \x20   accounts:\n\
         \x20     - name: keyuser\n        username: keyuser\n        secret_type: ssh_key\n        secret: |\n{key_block}\
         \x20 - name: web03\n    address: {address}\n    protocols: [{{name: ssh, port: {port}}}]\n\
         {db01}{old01}{ftp01}{up01}\
         grants:\n\
         \x20 - {{name: alice-web01, users: [alice], assets: [web01], accounts: [deploy], protocols: [ssh], actions: [connect]}}\n\
         \x20 - {{name: alice-files, users: [alice], assets: [web01], accounts: [deploy], protocols: [sftp], actions: [connect, upload, download]}}\n\
         \x20 - {{name: alice-web02, users: [alice], assets: [web02], accounts: ['@ALL'], protocols: [ssh], actions: [connect]}}\n\
         \x20 - {{name: alice-web03, users: [alice], assets: [web03], accounts: ['@INPUT'], protocols: [all], actions: [all]}}\n\
         \x20 - {{name: alice-old, users: [alice], assets: [old01], accounts: ['@ALL'], protocols: [all], actions: [all], date_expired: 2020-01-01T00:00:00Z}}\n\
         \x20 - {{name: alice-ftp, users: [alice], assets: [ftp01], accounts: ['@ALL'], protocols: [sftp], actions: [all]}}\n\
         \x20 - {{name: alice-up, users: [alice], assets: [up01], accounts: ['@ALL'], protocols: [ssh], actions: [upload]}}\n\
         \x20 - {{name: bob-prod, users: [bob], nodes: [/Default/prod], accounts: ['@ALL'], protocols: [ssh], actions: [connect]}}\n\
         command_filters:\n\
         \x20 - {{name: no-markers, priority: 10, action: deny, rules: ['marker-denied'], users: ['@ALL'], assets: ['@ALL'], accounts: ['@ALL']}}\n",
        alice = alice.public,
        bob = bob.public,
        db01 = simple("db01"),
        old01 = simple("old01"),
        ftp01 = simple("ftp01"),
        up01 = simple("up01"),
    )
}

fn scene_with(pin: impl FnOnce(&Target) -> Option<String>) -> Scene {
    scene_configured(pin, "")
}

/// A scene whose agentd.toml ends with `agentd_extra`.
fn scene_configured(pin: impl FnOnce(&Target) -> Option<String>, agentd_extra: &str) -> Scene {
    let target = Target::start();
    let builder = BastionBuilder::new().agentd_extra(agentd_extra);
    let alice = builder.client_key("alice");
    let bob = builder.client_key("bob");
    let pinned = pin(&target);
    let pin = match &pinned {
        Some(key) => Pin::Key(key),
        None => Pin::None,
    };
    let bastion = builder.policy(&policy(&target, &alice, &bob, pin)).start();
    Scene {
        target,
        bastion,
        alice,
        bob,
    }
}

fn scene() -> Scene {
    scene_with(|_| None)
}

impl Scene {
    /// `ssh [-tt] USER@bastion REMOTE…` with the user's key.
    fn ssh(&self, key: &ClientKey, user: &str, tty: bool, remote: &[&str]) -> Command {
        let mut cmd = self.bastion.ssh_command("ssh");
        cmd.args(CLIENT_OPTIONS)
            .args(["-p", &self.bastion.port().to_string()])
            .args([
                "-o",
                "PreferredAuthentications=publickey",
                "-o",
                "BatchMode=yes",
                "-i",
            ])
            .arg(&key.private)
            .args(["-l", user])
            .arg(if tty { "-tt" } else { "-T" })
            .arg("127.0.0.1")
            .args(remote);
        cmd
    }

    fn exec(&self, key: &ClientKey, user: &str, remote: &str) -> Outcome {
        run::run(
            &mut self.ssh(key, user, false, &[remote]),
            b"",
            COMMAND_TIMEOUT,
        )
    }

    /// An interactive session through `expect`: for each (pattern, text),
    /// waits for the exact text `pattern` in the output, then types `text` and
    /// Enter (`!resize COLS ROWS` resizes the terminal instead). Waits for
    /// the end and exits with ssh's status.
    fn interactive(
        &self,
        key: &ClientKey,
        user: &str,
        target: &str,
        steps: &[(&str, &str)],
    ) -> Outcome {
        let cmd = self.ssh(key, user, true, &[target]);
        let mut script = String::from("set timeout 20\nlog_user 1\n");
        script.push_str("spawn -noecho");
        script.push_str(&format!(" {{{}}}", cmd.get_program().to_string_lossy()));
        for arg in cmd.get_args() {
            script.push_str(&format!(" {{{}}}", arg.to_string_lossy()));
        }
        script.push('\n');
        for (i, (pattern, text)) in steps.iter().enumerate() {
            script.push_str(&format!(
                "expect {{\n  -ex {{{pattern}}} {{}}\n  timeout {{puts \"\\nEXPECT: timed out waiting for step {i}\"; exit 91}}\n  eof {{puts \"\\nEXPECT: ended before step {i}\"; exit 92}}\n}}\n"
            ));
            match text.strip_prefix("!resize ") {
                // Resize the engineer's terminal (ssh gets SIGWINCH).
                Some(size) => {
                    let (cols, rows) = size.split_once(' ').expect("!resize COLS ROWS");
                    script.push_str(&format!(
                        "stty rows {rows} columns {cols} < $spawn_out(slave,name)\n"
                    ));
                }
                None => script.push_str(&format!("send -- {{{text}}}\nsend \"\\r\"\n")),
            }
        }
        script.push_str(
            "expect {\n  eof {}\n  timeout {puts \"\\nEXPECT: no end\"; exit 93}\n}\n\
             set result [wait]\nexit [lindex $result 3]\n",
        );
        let path = self.bastion.dir().join(format!("expect-{}.tcl", unique()));
        std::fs::write(&path, script).expect("expect script");
        let mut expect = self.bastion.ssh_command("expect");
        expect.arg("-f").arg(&path);
        run::run(&mut expect, b"", Duration::from_secs(60))
    }

    fn state(&self) -> PathBuf {
        self.bastion.dir().join("state")
    }

    /// The recordings agentd wrote (`<state>/recordings/*.cast`).
    fn recordings(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.state().join("recordings"))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        found.sort();
        found
    }

    /// The spooled events (`<state>/spool/*.jsonl`), in order.
    fn events(&self) -> Vec<serde_like::Value> {
        let mut events = Vec::new();
        if let Ok(dir) = std::fs::read_dir(self.state().join("spool")) {
            let mut files: Vec<PathBuf> = dir.filter_map(|e| e.ok()).map(|e| e.path()).collect();
            files.sort_by_key(|p| p.file_name().map(|n| n == "current.jsonl"));
            for file in files {
                for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
                    events.push(serde_like::Value(line.to_string()));
                }
            }
        }
        events
    }
}

/// Just enough JSON for assertions on spool lines (the test crate keeps
/// its dependencies small): field lookups by text.
mod serde_like {
    #[derive(Debug, Clone)]
    pub struct Value(pub String);

    impl Value {
        /// The string value of `"key":"…"`.
        pub fn get(&self, key: &str) -> Option<String> {
            let needle = format!("\"{key}\":\"");
            let start = self.0.find(&needle)? + needle.len();
            let mut out = String::new();
            let mut chars = self.0[start..].chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(out),
                    '\\' => {
                        if let Some(next) = chars.next() {
                            out.push(match next {
                                'n' => '\n',
                                'r' => '\r',
                                't' => '\t',
                                other => other,
                            });
                        }
                    }
                    c => out.push(c),
                }
            }
            None
        }
    }
}

fn unique() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The end of a prompt of the target's bash (`deploy@host:~$ `).
const PROMPT: &str = "$ ";

#[test]
fn interactive_shell_reaches_the_target_and_is_recorded_and_logged() {
    let s = scene();
    let out = s.interactive(
        &s.alice,
        "alice",
        "web01",
        &[
            (PROMPT, "id; echo done-$((40+2))"),
            ("done-42", "read -s -p 'secret? ' x; echo got-${#x}"),
            ("secret? ", "hunter2"),
            ("got-7", "exit"),
        ],
    );
    out.assert_success("alice's shell on web01 should run and exit cleanly");
    assert!(
        out.stdout.contains(&format!("uid={DEPLOY_UID}(deploy)")),
        "`id` should run on the target as deploy, but:\n{out}"
    );
    let recordings = s.recordings();
    assert_eq!(
        recordings.len(),
        1,
        "one recording for one session: {recordings:?}"
    );
    // asciinema 2.2 opens /dev/tty even for `cat`: give it one with script(1).
    let cat = run::run(
        Command::new("script")
            .args(["-q", "-e", "-c"])
            .arg(format!("asciinema cat '{}'", recordings[0].display()))
            .arg("/dev/null"),
        b"",
        COMMAND_TIMEOUT,
    );
    cat.assert_success("asciinema cat should read the recording");
    assert!(
        cat.stdout.contains("done-42") && cat.stdout.contains("uid=40200(deploy)"),
        "the recording should hold the command's output, but:\n{cat}"
    );
    let header = std::fs::read_to_string(&recordings[0]).unwrap();
    let header = header.lines().next().unwrap();
    assert!(
        header.contains("\"version\":2")
            && header.contains("\"user\":\"alice\"")
            && header.contains("\"asset\":\"web01\""),
        "the asciicast header should name the session: {header}"
    );
    let events = s.events();
    let command = events
        .iter()
        .find(|e| e.get("event").as_deref() == Some("command"))
        .unwrap_or_else(|| panic!("the command log should have the typed command: {events:?}"));
    assert_eq!(
        command.get("command").as_deref(),
        Some("id; echo done-$((40+2))")
    );
    assert_eq!(command.get("decision").as_deref(), Some("allow"));
    assert_eq!(command.get("user").as_deref(), Some("alice"));
    assert_eq!(command.get("account").as_deref(), Some("deploy"));
    let state = s.state();
    // The session workers write recordings and host keys (as their own
    // system user); the spool is the monitor's (root's); the state dir
    // lets the workers' group through to their directories, nobody else.
    let worker = jms_e2e::WORKER_ID;
    for (path, mode, owner, group) in [
        (state.clone(), 0o710, 0, worker),
        (state.join("recordings"), 0o700, worker, worker),
        (recordings[0].clone(), 0o600, worker, worker),
        (state.join("spool"), 0o700, 0, 0),
        (state.join("spool/current.jsonl"), 0o600, 0, 0),
        (state.join("known_hosts"), 0o700, worker, worker),
        (state.join("known_hosts/tofu-web01"), 0o600, worker, worker),
    ] {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            (meta.mode() & 0o777, meta.uid(), meta.gid()),
            (mode, owner, group),
            "{}: mode {mode:o}, owner {owner}:{group}",
            path.display()
        );
    }
    let logged: Vec<String> = events.iter().filter_map(|e| e.get("command")).collect();
    assert!(
        logged.iter().all(|c| !c.contains("hunter2"))
            && logged.iter().any(|c| c == "(input not echoed)"),
        "input typed without echo (a password) is never logged: {logged:?}"
    );
    for kind in ["session_start", "session_end"] {
        assert!(
            events
                .iter()
                .any(|e| e.get("event").as_deref() == Some(kind)),
            "the spool should have a {kind} event: {events:?}"
        );
    }
}

#[test]
fn exec_passes_stdout_stderr_and_exit_status_exactly() {
    let s = scene();
    let out = s.exec(&s.alice, "alice", "web01 echo out; echo err >&2; exit 3");
    assert_eq!(
        out.code(),
        Some(3),
        "the exit status should be the command's:\n{out}"
    );
    assert_eq!(out.stdout, "out\n", "stdout exactly:\n{out}");
    assert_eq!(out.stderr, "err\n", "stderr exactly:\n{out}");
    let out = s.exec(&s.alice, "alice", "web01 uptime; id -un");
    out.assert_success("uptime; id should run");
    assert!(
        out.stdout.contains("load average") && out.stdout.ends_with("deploy\n"),
        "{out}"
    );
    let events = s.events();
    assert!(
        events
            .iter()
            .any(|e| e.get("event").as_deref() == Some("command")
                && e.get("command").as_deref() == Some("uptime; id -un")
                && e.get("kind").as_deref() == Some("exec")),
        "exec commands are logged as given: {events:?}"
    );
}

/// Runs `cmd` with `input` on stdin, returning (status, stdout bytes, stderr).
fn run_binary(mut cmd: Command, input: Vec<u8>) -> (Option<i32>, Vec<u8>, String) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = run::wait_until(&mut child, std::time::Instant::now() + COMMAND_TIMEOUT);
    let _ = writer.join();
    (
        status.and_then(|s| s.code()),
        out,
        errors.join().unwrap_or_default(),
    )
}

fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("random bytes");
    bytes
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn binary_stdin_arrives_byte_exact() {
    let s = scene();
    let data = random_bytes(1024 * 1024);
    let (status, out, err) = run_binary(
        s.ssh(&s.alice, "alice", false, &["web01 sha256sum"]),
        data.clone(),
    );
    assert_eq!(
        status,
        Some(0),
        "sha256sum on the target should succeed: {err}"
    );
    let printed = String::from_utf8_lossy(&out);
    assert!(
        printed.starts_with(&sha256_hex(&data)),
        "the target should hash exactly the bytes sent: got {printed:?}, stderr {err}"
    );
    let (status, out, err) = run_binary(
        s.ssh(&s.alice, "alice", false, &["web01 cat"]),
        data.clone(),
    );
    assert_eq!(status, Some(0), "cat should succeed: {err}");
    assert!(
        out == data,
        "cat through the bastion should return the same {} bytes, got {}",
        data.len(),
        out.len()
    );
    // Recorded as what it is: the audit has its size and SHA-256, the
    // recording its head and tail and a notice of what was left out.
    let sha = sha256_hex(&data);
    let events = s.events();
    let end = events
        .iter()
        .find(|e| {
            e.get("event").as_deref() == Some("session_end")
                && e.get("stdout_sha256").as_deref() == Some(sha.as_str())
        })
        .unwrap_or_else(|| panic!("a session_end with the output's SHA-256 {sha}: {events:?}"));
    assert!(
        end.0.contains(&format!("\"stdout_bytes\":{}", data.len()))
            && end.0.contains("\"stderr_bytes\":0"),
        "the session end should count the output: {end:?}"
    );
    let recording = s
        .state()
        .join("recordings")
        .join(end.get("recording").expect("the exec's recording"));
    let size = std::fs::metadata(&recording).expect("the recording").len();
    assert!(
        size < data.len() as u64,
        "the recording of a {}-byte output should be bounded, not {size} bytes",
        data.len()
    );
    let cat = run::run(
        Command::new("script")
            .args(["-q", "-e", "-c"])
            .arg(format!("asciinema cat '{}'", recording.display()))
            .arg("/dev/null"),
        b"",
        COMMAND_TIMEOUT,
    );
    cat.assert_success("asciinema cat should read the bounded recording");
    let left_out = data.len() - 2 * 64 * 1024;
    assert!(
        cat.stdout.contains(&format!(
            "{left_out} of {} bytes of output left out",
            data.len()
        )) && cat.stdout.contains(&sha),
        "the replay should say how much was left out and the output's SHA-256"
    );
}

#[test]
fn named_vaulted_password_and_key_accounts_log_in() {
    let s = scene();
    let out = s.exec(&s.bob, "bob", "root@web01 id -un");
    out.assert_success("bob may use root@web01");
    assert_eq!(out.stdout, "root\n");
    let out = s.exec(&s.bob, "bob", "deploy@web01 id -un");
    out.assert_success("bob may use deploy@web01");
    assert_eq!(out.stdout, "deploy\n");
    let out = s.exec(&s.alice, "alice", "web02 id -un");
    out.assert_success("alice's key account on web02 should log in with the vaulted key");
    assert_eq!(out.stdout, "keyuser\n");
}

#[test]
fn input_account_asks_for_credentials() {
    let s = scene();
    let out = s.interactive(
        &s.alice,
        "alice",
        "web03",
        &[
            ("Username: ", "deploy"),
            ("Password: ", DEPLOY_PASSWORD),
            (PROMPT, "echo I am $(id -un)"),
            ("I am deploy", "exit"),
        ],
    );
    out.assert_success("@INPUT should log in with the typed credentials");
    assert!(
        !out.output().contains(DEPLOY_PASSWORD),
        "the password is not echoed: {out}"
    );
}

#[test]
fn denials_are_one_clear_line() {
    let s = scene();
    let cases: &[(&ClientKey, &str, &str, &str)] = &[
        (&s.alice, "alice", "db01 true", "no such asset: db01"),
        (&s.alice, "alice", "bash", "no such asset: bash"),
        (&s.alice, "alice", "nosuch true", "no such asset: nosuch"),
        (&s.alice, "alice", "old01 true", "expired"),
        (&s.alice, "alice", "ftp01 true", "ssh"),
        (&s.alice, "alice", "up01 true", "connect"),
        (
            &s.bob,
            "bob",
            "web01 true",
            "web01: choose an account: deploy@web01 or root@web01",
        ),
        (&s.alice, "alice", "web01", "needs a terminal"),
    ];
    for (key, user, remote, needle) in cases {
        let out = s.exec(key, user, remote);
        out.assert_failure(&format!("{user} `{remote}` should be refused"));
        out.assert_output_contains(needle, &format!("{user} `{remote}` should say why"));
        assert_eq!(
            out.stderr.trim().lines().count(),
            1,
            "one line for `{remote}`:\n{out}"
        );
    }
}

#[test]
fn denied_commands_never_reach_the_target() {
    let s = scene();
    let marker = s.target.srv().join("home/deploy/marker-denied");
    let out = s.exec(&s.alice, "alice", "web01 touch ~/marker-denied");
    out.assert_failure("an exec matching a deny filter is refused");
    out.assert_output_contains(
        "refused by filter no-markers",
        "the refusal names the filter",
    );
    let out = s.interactive(
        &s.alice,
        "alice",
        "web01",
        &[
            (PROMPT, "touch ~/marker-denied"),
            ("refused by filter no-markers", ""),
            (PROMPT, "touch ~/marker-allowed; exit"),
        ],
    );
    out.assert_success("the session goes on after a refused command");
    assert!(
        s.target.srv().join("home/deploy/marker-allowed").exists(),
        "the allowed command should have run:\n{out}"
    );
    assert!(
        !marker.exists(),
        "the refused command must never run on the target:\n{out}"
    );
    let events = s.events();
    let denied: Vec<_> = events
        .iter()
        .filter(|e| e.get("decision").as_deref() == Some("deny"))
        .collect();
    assert_eq!(
        denied.len(),
        2,
        "both refusals are in the command log: {events:?}"
    );
    assert!(denied
        .iter()
        .all(|e| e.get("filter").as_deref() == Some("no-markers")));
}

#[test]
fn a_changed_host_key_is_refused() {
    let mut s = scene();
    s.exec(&s.alice, "alice", "web01 true")
        .assert_success("the first connection records the host key");
    s.target.replace_host_key();
    let out = s.exec(&s.alice, "alice", "web01 true");
    out.assert_failure("a changed host key must be refused");
    out.assert_output_contains("web01: the host key has changed", "the refusal says why");
}

#[test]
fn pinned_host_keys_are_enforced() {
    let s = scene_with(|t| Some(t.host_key()));
    s.exec(&s.alice, "alice", "web01 true")
        .assert_success("the pinned key matches the target's");
    let other = scene_with(|_| {
        Some(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJmsyBWMC1Ef6BqQLXTlkAPT2MtBUBY6hOLBYZd7xRRu"
                .into(),
        )
    });
    let out = other.exec(&other.alice, "alice", "web01 true");
    out.assert_failure("a key other than the pinned one must be refused");
    out.assert_output_contains("web01: the host key has changed", "the refusal says why");
}

/// `scp`/`rsync` with the bastion's port and `key` (`-e` for rsync).
fn copy_command(s: &Scene, key: &ClientKey, program: &str, extra: &[&str]) -> Command {
    let options = [
        "-F",
        "/dev/null",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "IdentityAgent=none",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
    ];
    let mut cmd = s.bastion.ssh_command(program);
    let key = key.private.display().to_string();
    let port = s.bastion.port().to_string();
    if program == "rsync" {
        cmd.arg("-e")
            .arg(format!("ssh {} -i {key} -p {port}", options.join(" ")));
    } else {
        cmd.args(options).args(["-i", &key, "-P", &port]);
    }
    cmd.args(extra);
    cmd
}

#[test]
fn file_transfers_reach_the_target_and_are_logged() {
    let s = scene();
    let local = s.bastion.dir().join("upload.txt");
    std::fs::write(&local, "uploaded through jms\n").unwrap();
    let home = s.target.srv().join("home/deploy");
    let local_arg = local.display().to_string();
    // Legacy scp (scp -t on the target) upload.
    run::run(
        &mut copy_command(
            &s,
            &s.alice,
            "scp",
            &[
                "-O",
                &local_arg,
                "alice@127.0.0.1:web01:/srv/home/deploy/legacy.txt",
            ],
        ),
        b"",
        COMMAND_TIMEOUT,
    )
    .assert_success("scp -O upload through the bastion");
    assert_eq!(
        std::fs::read_to_string(home.join("legacy.txt")).unwrap(),
        "uploaded through jms\n"
    );
    // scp 9.x (SFTP) download.
    let back = s.bastion.dir().join("back.txt");
    run::run(
        &mut copy_command(
            &s,
            &s.alice,
            "scp",
            &[
                "alice@127.0.0.1:web01:/srv/home/deploy/legacy.txt",
                &back.display().to_string(),
            ],
        ),
        b"",
        COMMAND_TIMEOUT,
    )
    .assert_success("scp (SFTP) download through the bastion");
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "uploaded through jms\n"
    );
    // rsync push.
    run::run(
        &mut copy_command(
            &s,
            &s.alice,
            "rsync",
            &[
                &local_arg,
                "alice@127.0.0.1:web01:/srv/home/deploy/rsynced.txt",
            ],
        ),
        b"",
        COMMAND_TIMEOUT,
    )
    .assert_success("rsync upload through the bastion");
    assert_eq!(
        std::fs::read_to_string(home.join("rsynced.txt")).unwrap(),
        "uploaded through jms\n"
    );
    // Bob has no sftp grant: refused before anything reaches the target.
    let out = run::run(
        &mut copy_command(
            &s,
            &s.bob,
            "scp",
            &[
                "-O",
                &local_arg,
                "bob@127.0.0.1:deploy@web01:/srv/home/deploy/bob.txt",
            ],
        ),
        b"",
        COMMAND_TIMEOUT,
    );
    out.assert_failure("bob has no sftp grant on web01");
    assert!(
        !home.join("bob.txt").exists(),
        "a refused upload must not reach the target"
    );
    let events = s.events();
    let transfers: Vec<_> = events
        .iter()
        .filter(|e| e.get("event").as_deref() == Some("transfer"))
        .collect();
    for (via, operation) in [("scp", "upload"), ("sftp", "download"), ("rsync", "upload")] {
        assert!(
            transfers
                .iter()
                .any(|e| e.get("via").as_deref() == Some(via)
                    && e.get("operation").as_deref() == Some(operation)
                    && e.get("result").as_deref() == Some("ok")),
            "a {via} {operation} record should be in the spool: {transfers:?}"
        );
    }
}

#[test]
fn window_size_follows_the_engineer_and_is_recorded() {
    let s = scene();
    let out = s.interactive(
        &s.alice,
        "alice",
        "web01",
        &[
            (PROMPT, "!resize 100 40"),
            (PROMPT, "sleep 0.5; echo size-$(stty size | tr ' ' x)"),
            ("size-40x100", "exit"),
        ],
    );
    out.assert_success("the session should see the new size");
    let cast = std::fs::read_to_string(&s.recordings()[0]).expect("recording");
    assert!(
        cast.contains("\"r\", \"100x40\"]"),
        "the recording should have the resize event: {cast}"
    );
}

/// agentd's resident memory now, in KiB (`VmRSS` in /proc).
fn agentd_rss_kib(s: &Scene) -> u64 {
    let pid = s.bastion.agentd_pid().expect("agentd runs");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("agentd status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in agentd's status:\n{status}"))
}

/// How much agentd's memory may grow while one session prints huge cursor
/// counts: the screen model keeps one line of at most 8192 characters
/// (32 KiB) whatever the target prints; this leaves room for allocator
/// noise and still catches a model that pads to the count (the count
/// 99999999 alone would take 400 MB).
const RSS_GROWTH_BOUND_KIB: u64 = 16 * 1024;

/// Waits until the terminal's output holds `count` refusals.
#[track_caller]
fn wait_for_refusals(terminal: &Terminal, count: usize, timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let transcript = terminal.transcript();
        if transcript.matches("refused by filter no-markers").count() >= count {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "refusal {count} never came; output:\n{transcript}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bash prompt at the end of the screen's last non-empty row.
fn at_prompt(screen: &jms_e2e::terminal::Screen) -> bool {
    screen
        .rows
        .iter()
        .rev()
        .find(|r| !r.trim().is_empty())
        .is_some_and(|r| r.ends_with('$'))
}

#[test]
fn terminal_sessions_survive_huge_counts_and_check_every_key_that_runs_a_line() {
    let s = scene();
    let wait = Duration::from_secs(20);
    let home = s.target.srv().join("home/deploy");
    // A shell: huge CSI counts from the target, then the keys that run a line.
    let mut shell = Terminal::spawn(s.ssh(&s.alice, "alice", true, &["web01"]), 160, 50);
    shell.wait_for("the target's prompt", wait, at_prompt);
    let before = agentd_rss_kib(&s);
    let mut sequences = String::new();
    for count in ["9000000000000000000", "99999999"] {
        for seq in ["C.", "D", "G.", "@", "P", "X", "K", "`."] {
            sequences.push_str(&format!("\\033[{count}{seq}"));
        }
    }
    shell.type_slowly(&format!(
        "printf '{sequences}\\n'; printf '\\033[99999999C.\\033[9000000000000000000C.\\n'; echo after-$((6*7))\r"
    ));
    shell.wait_for_text("after-42", wait);
    let after = agentd_rss_kib(&s);
    eprintln!("agentd RSS: {before} KiB before the huge counts, {after} KiB after");
    assert!(
        after.saturating_sub(before) <= RSS_GROWTH_BOUND_KIB,
        "agentd's memory grew from {before} KiB to {after} KiB (bound {RSS_GROWTH_BOUND_KIB} KiB) while the target printed huge cursor counts"
    );
    // Each of these would run the line: each is checked and refused.
    // (name, prefix, key): in vi mode ESC leaves insert mode and Enter
    // runs the line; readline takes an ambiguous prefix once its key
    // sequence timeout (0.5 s) passed, so the key comes later.
    let keys: [(&str, &[u8], &[u8]); 4] = [
        ("ctrl-o", b"", b"\x0f"),
        ("esc-enter", b"\x1b", b"\r"),
        ("csi-enter", b"\x1b[", b"\r"),
        ("esc-ctrl-j", b"\x1b", b"\n"),
    ];
    for (i, (name, prefix, key)) in keys.iter().enumerate() {
        if !prefix.is_empty() {
            shell.wait_for("the prompt", wait, at_prompt);
            shell.type_slowly(&format!("set -o vi; echo vi-{i}\r"));
            shell.wait_for_text(&format!("vi-{i}"), wait);
        }
        shell.wait_for("the prompt", wait, at_prompt);
        shell.type_slowly(&format!("touch ~/marker-denied-{name}"));
        if !prefix.is_empty() {
            shell.send(prefix);
            std::thread::sleep(Duration::from_millis(700));
        }
        shell.send(key);
        wait_for_refusals(&shell, i + 1, wait);
    }
    shell.wait_for("the prompt", wait, at_prompt);
    shell.type_slowly("touch ~/marker-shell-ok; echo still-$((20+1))\r");
    shell.wait_for_text("still-21", wait);
    shell.type_slowly("exit\r");
    assert!(shell.wait_exit(wait).is_some(), "the shell should end");
    // An exec with a terminal (`ssh -t bastion 'web01 bash'`) is a shell too.
    let mut exec = Terminal::spawn(s.ssh(&s.alice, "alice", true, &["web01 bash"]), 80, 24);
    exec.wait_for("bash's prompt", wait, at_prompt);
    exec.type_slowly("touch ~/marker-denied-exec-tty\r");
    wait_for_refusals(&exec, 1, wait);
    exec.wait_for("the prompt", wait, at_prompt);
    exec.type_slowly("touch ~/marker-exec-ok; exit\r");
    assert!(exec.wait_exit(wait).is_some(), "the exec should end");
    for ok in ["marker-shell-ok", "marker-exec-ok"] {
        assert!(
            home.join(ok).exists(),
            "{ok}: the allowed command after the refusals should have run"
        );
    }
    let events = s.events();
    let names = keys.iter().map(|k| k.0).chain(["exec-tty"]);
    for name in names {
        let marker = format!("marker-denied-{name}");
        assert!(
            !home.join(&marker).exists(),
            "{marker}: the refused command must never run on the target"
        );
        assert!(
            events
                .iter()
                .any(|e| e.get("decision").as_deref() == Some("deny")
                    && e.get("command").is_some_and(|c| c.contains(&marker))),
            "{marker}: the refusal should be in the command log: {events:?}"
        );
    }
}

#[test]
fn input_piped_into_a_shell_is_checked_line_by_line() {
    let s = scene();
    let home = s.target.srv().join("home/deploy");
    let piped = |remote: &str, input: &str| {
        run::run(
            &mut s.ssh(&s.alice, "alice", false, &[remote]),
            input.as_bytes(),
            COMMAND_TIMEOUT,
        )
    };
    let out = piped(
        "web01 sh",
        "touch ~/marker-piped-ok\necho piped-$((40+2))\n",
    );
    out.assert_success("allowed piped commands run");
    assert_eq!(out.stdout, "piped-42\n");
    assert!(home.join("marker-piped-ok").exists());
    for (remote, input) in [
        ("web01 sh", "touch ~/marker-denied-sh\n"),
        (
            "web01 /bin/bash -s",
            "echo first\ntouch ~/marker-denied-bash\n",
        ),
        (
            "web01 python3",
            "import os\nos.system('touch ~/marker-denied-py')\n",
        ),
        ("web01 sh", "touch ~/marker-\\\ndenied-joined\n"),
        ("web01 sh", "echo unterminated; touch ~/marker-denied-eof"),
    ] {
        let out = piped(remote, input);
        out.assert_failure(&format!("{remote} with {input:?} must be refused"));
        out.assert_output_contains(
            "refused by filter no-markers",
            "the refusal names the filter",
        );
    }
    let events = s.events();
    let stdin: Vec<_> = events
        .iter()
        .filter(|e| e.get("kind").as_deref() == Some("stdin"))
        .collect();
    for name in ["sh", "bash", "py", "joined", "eof"] {
        let marker = format!("marker-denied-{name}");
        assert!(
            !home.join(&marker).exists(),
            "{marker}: a refused input line must never reach the target"
        );
        assert!(
            stdin
                .iter()
                .any(|e| e.get("decision").as_deref() == Some("deny")
                    && e.get("command").is_some_and(|c| c.contains(&marker))),
            "{marker}: the refused line is in the command log: {stdin:?}"
        );
    }
    assert!(
        stdin
            .iter()
            .any(|e| e.get("decision").as_deref() == Some("allow")
                && e.get("command").as_deref() == Some("touch ~/marker-piped-ok")),
        "allowed input lines are logged: {stdin:?}"
    );
    // exec_stdin = refuse: such an exec is refused outright; others run.
    let toml = s.bastion.dir().join("agentd.toml");
    let mut config = std::fs::read_to_string(&toml).expect("agentd.toml");
    config.push_str("\n[sessions]\nexec_stdin = \"refuse\"\n");
    std::fs::write(&toml, config).expect("agentd.toml");
    s.bastion.kill_agentd();
    s.bastion.restart_agentd();
    let out = piped("web01 sh", "touch ~/marker-refuse-mode\n");
    out.assert_failure("exec_stdin = refuse refuses a piped shell");
    out.assert_output_contains("refused here", "the refusal says why");
    assert!(!home.join("marker-refuse-mode").exists());
    let out = piped("web01 cat", "plain data\n");
    out.assert_success("an exec that is no interpreter keeps its input");
    assert_eq!(out.stdout, "plain data\n");
}

/// The session workers (`jms-session`) agentd runs now, by pid.
fn workers(s: &Scene) -> Vec<u32> {
    s.bastion.session_workers()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A live session whose stdin stays open until it is dropped.
struct Open(std::process::Child);

impl Drop for Open {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn open(mut cmd: Command) -> Open {
    Open(
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ssh"),
    )
}

/// Starts a copy client and stops it (SIGSTOP) as soon as it has started
/// its `ssh`: the session goes on at the bastion, its transfer blocked.
fn held(cmd: Command) -> Open {
    let client = open(cmd);
    let pid = client.0.id();
    wait_until("the copy client's ssh", || {
        children_names(pid).iter().any(|c| c == "ssh")
    });
    run::run(
        Command::new("kill").args(["-STOP", &pid.to_string()]),
        b"",
        COMMAND_TIMEOUT,
    )
    .assert_success("stop the copy client");
    client
}

#[test]
fn every_session_runs_in_a_worker_of_its_own_as_the_worker_user_without_new_privileges() {
    let s = scene();
    assert!(workers(&s).is_empty(), "no session, no worker");
    let shell = open(s.ssh(&s.alice, "alice", true, &["web01"]));
    wait_until("the shell's worker", || workers(&s).len() == 1);
    let exec = open(s.ssh(&s.alice, "alice", false, &["web01", "cat"]));
    wait_until("the exec's worker", || workers(&s).len() == 2);
    let mut sftp_cmd = s.bastion.ssh_command("sftp");
    sftp_cmd
        .args(CLIENT_OPTIONS)
        .args(["-P", &s.bastion.port().to_string()])
        .args(["-o", "BatchMode=yes", "-i"])
        .arg(&s.alice.private)
        .arg("alice@127.0.0.1");
    let sftp = open(sftp_cmd);
    wait_until("the sftp session's worker", || workers(&s).len() == 3);
    // Legacy scp and rsync downloads of a big file, held live: the local
    // client is stopped once its ssh runs, so the transfer blocks (the
    // target's sender waits on a full pipe) until the client is dropped.
    let big = s.target.srv().join("home/deploy/big.bin");
    std::fs::File::create(&big)
        .and_then(|f| f.set_len(256 << 20))
        .expect("a big sparse file on the target");
    let into = s.bastion.dir().join("big.copy").display().to_string();
    let scp = held(copy_command(
        &s,
        &s.alice,
        "scp",
        &[
            "-O",
            "alice@127.0.0.1:web01:/srv/home/deploy/big.bin",
            &into,
        ],
    ));
    wait_until("the scp session's worker", || workers(&s).len() == 4);
    let rsync = held(copy_command(
        &s,
        &s.alice,
        "rsync",
        &["alice@127.0.0.1:web01:/srv/home/deploy/big.bin", &into],
    ));
    wait_until("the rsync session's worker", || workers(&s).len() == 5);
    // Each target connection runs under its worker (sftp opens one with the
    // first folder it is asked for).
    wait_until("ssh under the shell, exec, scp and rsync workers", || {
        workers(&s)
            .iter()
            .filter(|w| children_names(**w).iter().any(|c| c == "ssh"))
            .count()
            >= 4
    });
    // The target leg prefers AES-GCM when this CPU has AES instructions
    // (`target_ciphers = "auto"`, the default), OpenSSH's order otherwise.
    let aes = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "aes"));
    let mut target_clients = 0;
    for pid in workers(&s) {
        for ssh in children(pid) {
            let argv = std::fs::read(format!("/proc/{ssh}/cmdline")).unwrap_or_default();
            let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
            if !argv.contains("HostKeyAlias=web01") {
                continue;
            }
            target_clients += 1;
            let aes_first =
                argv.contains(" Ciphers=^aes128-gcm@openssh.com,aes256-gcm@openssh.com ");
            assert_eq!(
                (aes_first, argv.contains("Ciphers=")),
                (aes, aes),
                "the target ssh's ciphers (CPU with AES: {aes}): {argv}"
            );
        }
    }
    assert!(target_clients >= 4, "{target_clients} target ssh clients");
    // Alice's first four sessions keep the normal class; the fifth (rsync,
    // the newest worker) and its ssh run SCHED_IDLE
    // (`worker_idle_after_sessions = 4`).
    let newest = *workers(&s).iter().max().unwrap();
    for pid in workers(&s) {
        assert_runs_as_the_worker_user(pid);
        let class = if pid == newest { 5 } else { 0 };
        for p in std::iter::once(pid).chain(children(pid)) {
            assert_eq!(sched_policy(p), Some(class), "{p}: scheduling class");
        }
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let address = limits
            .lines()
            .find(|l| l.starts_with("Max address space"))
            .unwrap()
            .to_string();
        assert!(address.contains("1073741824"), "worker {pid}: {address}");
    }
    drop((shell, exec, sftp, scp, rsync));
    wait_until("the workers to exit with their sessions", || {
        workers(&s).is_empty()
    });
}

/// Two workers die mid-session among 22 live ones: one by kill -9, one by
/// an allocation past its address-space limit (SIGUSR1 asks a debug
/// build's worker for one, as a bug would make). Each engineer reads one
/// line saying why, the audit has both reasons, and the 20 other sessions
/// and new logins go on.
#[test]
fn a_crashed_worker_ends_its_session_only_with_the_reason_audited() {
    use std::io::{BufRead, BufReader, Write};
    let s = scene();
    let mut sessions: Vec<Open> = Vec::new();
    // Each session's worker, by the order the sessions were opened.
    let mut their_workers: Vec<u32> = Vec::new();
    for n in 0..22 {
        sessions.push(open(s.ssh(&s.alice, "alice", false, &["web01", "cat"])));
        wait_until("the session's worker", || workers(&s).len() == n + 1);
        let new = workers(&s).into_iter().find(|w| !their_workers.contains(w));
        their_workers.push(new.expect("the new session's worker"));
    }
    // Every session echoes through its own worker.
    let mut readers: Vec<_> = sessions
        .iter_mut()
        .map(|o| BufReader::new(o.0.stdout.take().unwrap()))
        .collect();
    let echo = |i: usize,
                sessions: &mut Vec<Open>,
                readers: &mut Vec<BufReader<std::process::ChildStdout>>| {
        let line = format!("ping-{i}\n");
        sessions[i]
            .0
            .stdin
            .as_mut()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        let mut got = String::new();
        readers[i].read_line(&mut got).unwrap();
        assert_eq!(got, line, "session {i} echoes");
    };
    for i in 0..22 {
        echo(i, &mut sessions, &mut readers);
    }
    // The last two sessions' workers crash, one after the other.
    for (signal, reason) in [
        ("-9", "worker died: signal 9"),
        ("-USR1", "worker over its memory limit"),
    ] {
        let victim = their_workers.pop().unwrap();
        run::run(
            Command::new("kill").args([signal, &victim.to_string()]),
            b"",
            COMMAND_TIMEOUT,
        )
        .assert_success("signal the worker");
        let mut crashed = sessions.pop().unwrap();
        readers.pop();
        // Its stdin stays open (waiting would close it): the session ends
        // by the crash alone.
        let mut stderr = String::new();
        std::io::Read::read_to_string(crashed.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let status = crashed.0.wait().unwrap();
        assert!(!status.success(), "the crashed session fails");
        assert_eq!(
            stderr.trim_end(),
            format!("jms-agent: the session ended: {reason}"),
            "the engineer reads one line saying why"
        );
        // The 20 others go on, and new logins too.
        for i in 0..20 {
            echo(i, &mut sessions, &mut readers);
        }
        let out = s.exec(&s.alice, "alice", "web01 echo still-here");
        out.assert_success("a new session after the crash");
        assert!(out.stdout.contains("still-here"), "{out}");
        wait_until(&format!("{reason:?} in the audit"), || {
            s.events().iter().any(|e| {
                e.get("event").as_deref() == Some("session_end")
                    && e.get("reason").as_deref() == Some(reason)
            })
        });
    }
    drop(sessions);
}

/// An sftp session (batch commands on stdin) with big, many in-flight
/// writes: `-B` the largest request the bastion announces, `-R` requests
/// at once.
fn sftp_session(s: &Scene) -> Open {
    let mut cmd = s.bastion.ssh_command("sftp");
    cmd.args(CLIENT_OPTIONS)
        .args(["-P", &s.bastion.port().to_string()])
        .args(["-B", "261120", "-R", "256", "-o", "BatchMode=yes", "-i"])
        .arg(&s.alice.private)
        .arg("alice@127.0.0.1");
    open(cmd)
}

/// Types `command` into the sftp session and reads its output up to the
/// echo of a marker command after it.
fn sftp_step(
    session: &mut Open,
    out: &mut std::io::BufReader<std::process::ChildStdout>,
    command: &str,
) -> String {
    use std::io::BufRead;
    let marker = format!("pwd-{}", unique());
    let stdin = session.0.stdin.as_mut().unwrap();
    write!(stdin, "{command}\nlcd /\n!echo {marker}\n").unwrap();
    stdin.flush().unwrap();
    let mut text = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if line.trim() == marker {
            break;
        }
        text.push_str(&line);
    }
    text
}

/// A worker's memory does not grow with what it relays: measured on a
/// first bastion, an sftp worker's peak address space (`VmPeak`) once its
/// target connection is up; a second bastion limits its workers to that
/// plus 16 MiB (`[sessions] worker_memory_max_bytes`), and a 64 MiB upload
/// with 256 requests of 255 KiB in flight (64 MiB, were they all held)
/// goes through whole, beside another session, and new logins work.
/// (No relay path was found that grows a worker past its start-up peak;
/// `a_crashed_worker_ends_its_session_only_with_the_reason_audited` makes
/// one allocate past its limit on purpose.)
#[test]
fn a_worker_relays_a_big_upload_within_its_measured_start_up_peak() {
    use std::io::{BufRead, BufReader};
    let peak_kib = {
        let s = scene();
        let mut sftp = sftp_session(&s);
        let mut out = BufReader::new(sftp.0.stdout.take().unwrap());
        sftp_step(&mut sftp, &mut out, "ls /web01/srv/home/deploy");
        wait_until("the sftp worker's target connection", || {
            workers(&s)
                .iter()
                .any(|w| children_names(*w).iter().any(|c| c == "ssh"))
        });
        let worker = workers(&s)[0];
        let peak = status_field(worker, "VmPeak:");
        peak.split_whitespace()
            .next()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let limit = (peak_kib + 16 * 1024) * 1024;
    let s = scene_configured(
        |_| None,
        &format!("[sessions]\nworker_memory_max_bytes = {limit}\n"),
    );
    let mut other = open(s.ssh(&s.alice, "alice", false, &["web01", "cat"]));
    let mut other_out = BufReader::new(other.0.stdout.take().unwrap());
    let mut echo = |text: &str| {
        let stdin = other.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{text}").unwrap();
        stdin.flush().unwrap();
        let mut got = String::new();
        other_out.read_line(&mut got).unwrap();
        assert_eq!(got, format!("{text}\n"), "the other session echoes");
    };
    echo("before");
    let data = random_bytes(64 << 20);
    let big = s.bastion.dir().join("big-upload.bin");
    std::fs::write(&big, &data).unwrap();
    let mut sftp = sftp_session(&s);
    let mut out = BufReader::new(sftp.0.stdout.take().unwrap());
    sftp_step(&mut sftp, &mut out, "ls /web01/srv/home/deploy");
    let worker = *workers(&s).iter().max().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{worker}/limits")).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max address space") && l.contains(&limit.to_string())),
        "the worker runs under the configured limit {limit}: {limits}"
    );
    let stdin = sftp.0.stdin.as_mut().unwrap();
    writeln!(
        stdin,
        "put {} /web01/srv/home/deploy/big-upload.bin",
        big.display()
    )
    .unwrap();
    drop(sftp.0.stdin.take());
    let status = sftp.0.wait().unwrap();
    let mut stderr = String::new();
    sftp.0
        .stderr
        .as_mut()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "the upload goes through: {stderr}");
    let landed = std::fs::read(s.target.srv().join("home/deploy/big-upload.bin")).unwrap();
    assert!(landed == data, "the upload arrives whole");
    assert!(
        !s.bastion
            .agentd_log()
            .contains("worker over its memory limit"),
        "no worker went over its limit"
    );
    echo("after");
    let out = s.exec(&s.alice, "alice", "web01 echo still-here");
    out.assert_success("a new session beside the upload");
    assert!(out.stdout.contains("still-here"), "{out}");
}
