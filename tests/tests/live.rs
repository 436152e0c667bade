//! Live sessions end to end, through a real jms-server and an enrolled
//! bastion: real `ssh -tt` (in a scripted terminal) → sshd → jms-agent →
//! jms-agentd → the target.
//!
//! - An admin watches a running session as it happens (`jmsctl session
//!   watch`, over the SSE API) and terminates it (`jmsctl session kill`):
//!   the user's terminal says why, the session's end carries the reason.
//! - Session share: `ssh bastion share` prints a code; a second user joins
//!   with `ssh -t bastion join CODE`: read-only she sees the owner's output
//!   and her keys never reach the target; with `share --write` her command
//!   runs (and is logged as typed by her). Codes are 80 bits and work
//!   once; a wrong code, and a grant without `share`, are refused with one
//!   clear line; after 5 wrong codes a user is refused for a while.
//! - A grant deleted on the server (`jmsctl grant delete`) ends the
//!   session it allowed at the bastion's next sync: "access revoked".
//!
//! Nothing here measures time: every wait polls with a generous deadline.

use std::fs;
use std::process::{Child, Stdio};
use std::time::Duration;

use jms_e2e::central::{eventually, Central};
use jms_e2e::procfs;
use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::terminal::Terminal;
use jms_e2e::{Bastion, BastionBuilder, ClientKey, Target};

const SCREEN_WAIT: Duration = Duration::from_secs(60);

struct Scene {
    _target: Target,
    bastion: Bastion,
    central: Central,
    alice: ClientKey,
    bob: ClientKey,
    carol: ClientKey,
}

/// A target, a bastion following a server; alice (grant with `share`),
/// bob (a jms user, no grant), carol (grant without `share`).
fn scene() -> Scene {
    let target = Target::start();
    let builder = BastionBuilder::new();
    let (alice, bob, carol) = (
        builder.client_key("alice"),
        builder.client_key("bob"),
        builder.client_key("carol"),
    );
    let bastion = builder.start();
    let central = Central::start();
    central.attach(&bastion, &central.url);
    for (name, key) in [("alice", &alice), ("bob", &bob), ("carol", &carol)] {
        central.jmsctl(&[
            "user",
            "add",
            name,
            "--name",
            name,
            "--public-key",
            &key.public,
        ]);
    }
    let protocol = format!("ssh:{}", target.port());
    central.jmsctl(&[
        "asset",
        "add",
        "web01",
        "--address",
        target.address(),
        "--protocol",
        &protocol,
    ]);
    central
        .jmsctl_with(
            &[
                "account",
                "add",
                "web01",
                "deploy",
                "--username",
                "deploy",
                "--type",
                "password",
            ],
            DEPLOY_PASSWORD.as_bytes(),
        )
        .assert_success("jmsctl account add with the secret on stdin");
    for (grant, user, actions) in [
        ("alice-web01", "alice", &["connect", "share"][..]),
        ("carol-web01", "carol", &["connect"][..]),
    ] {
        let mut args = vec![
            "grant",
            "add",
            grant,
            "--user",
            user,
            "--asset",
            "web01",
            "--account",
            "deploy",
            "--protocol",
            "ssh",
        ];
        for action in actions {
            args.extend(["--action", action]);
        }
        central.jmsctl(&args);
    }
    let s = Scene {
        _target: target,
        bastion,
        central,
        alice,
        bob,
        carol,
    };
    for (user, key) in [("alice", &s.alice), ("carol", &s.carol)] {
        eventually(
            &format!("{user} to reach web01 once the grant is synced"),
            || {
                let out = s.bastion.ssh_key(user, key, Some("web01 id -un"));
                if out.success() && out.stdout.trim() == "deploy" {
                    Ok(())
                } else {
                    Err(out.to_string())
                }
            },
        );
    }
    s
}

impl Scene {
    /// `user`'s interactive shell on web01, ready for commands.
    fn shell(&self, user: &str, key: &ClientKey) -> Terminal {
        let mut terminal = self
            .bastion
            .ssh_terminal(user, key, &[], Some("web01"), (100, 30));
        terminal.type_slowly("echo ready-$((40+2))\r");
        terminal.wait_for_text("ready-42", SCREEN_WAIT);
        terminal
    }

    /// The id of `user`'s online shell session, once the server knows it
    /// (an exec that just ended may still be listed online a moment).
    fn online_session(&self, user: &str) -> String {
        eventually(
            &format!("the server to list {user}'s online shell session"),
            || {
                let (status, body) = self.central.api(
                    "GET",
                    &format!("/api/v1/sessions?user={user}&online=true"),
                    None,
                );
                let page: serde_json::Value =
                    serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
                page["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["kind"] == "shell")
                    .and_then(|s| s["id"].as_str())
                    .map(str::to_owned)
                    .ok_or(format!("{status}: {body}"))
            },
        )
    }

    /// `ssh USER@bastion share ARGS`: the code it printed.
    fn share(&self, user: &str, key: &ClientKey, args: &str) -> String {
        let command = format!("share {args}");
        let out = self.bastion.ssh_key(user, key, Some(command.trim()));
        out.assert_success("share should print a code");
        let code: String = out
            .stdout
            .split_once("share code: ")
            .map(|(_, rest)| rest.chars().take(19).collect())
            .unwrap_or_default();
        let symbols: Vec<char> = code.chars().filter(|c| *c != '-').collect();
        assert!(
            code.len() == 19
                && symbols.len() == 16
                && symbols
                    .iter()
                    .all(|c| "ABCDEFGHJKLMNPQRSTUVWXYZ23456789".contains(*c)),
            "share prints `share code: XXXX-XXXX-XXXX-XXXX` (16 symbols of 32: 80 bits):\n{out}"
        );
        assert!(
            out.stdout.contains(&format!("join {code}")),
            "share says how to join:\n{out}"
        );
        code
    }
}

/// `GET /api/v1/sessions/{id}/live` (over TLS): the response head and
/// the first event.
fn first_sse_event(central: &Central, id: &str) -> String {
    use std::io::{Read, Write};
    let address = central.address();
    let mut stream = central.connect(SCREEN_WAIT);
    write!(
        stream,
        "GET /api/v1/sessions/{id}/live HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Accept: text/event-stream\r\n\r\n",
        central.token()
    )
    .expect("send the request");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // The head, then one event (ends with a blank line).
    while !String::from_utf8_lossy(&seen)
        .split_once("\r\n\r\n")
        .is_some_and(|(_, body)| body.contains("\n\n"))
    {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&seen).into_owned()
}

fn spawn_watch(central: &Central, id: &str, dir: &std::path::Path) -> Child {
    central
        .jmsctl_command(&["session", "watch", id])
        .stdin(Stdio::null())
        .stdout(fs::File::create(dir.join("watch.out")).expect("watch.out"))
        .stderr(fs::File::create(dir.join("watch.err")).expect("watch.err"))
        .spawn()
        .expect("start jmsctl session watch")
}

#[test]
fn an_admin_watches_a_live_session_and_terminates_it_and_the_user_sees_why() {
    let s = scene();
    let mut terminal = s.shell("alice", &s.alice);
    let id = s.online_session("alice");

    // The SSE API answers as an event stream; unknown sessions are 404.
    let (status, body) = s.central.api(
        "POST",
        "/api/v1/sessions/00000000-0000-4000-8000-000000000000/kill",
        None,
    );
    assert_eq!(status, 404, "killing an unknown session: {body}");

    // The watch API is a Server-Sent Events stream starting with the
    // terminal's size (as it is now: alice resized it since she logged
    // in) and screen.
    terminal.resize(132, 40);
    terminal.type_slowly("stty size\r");
    terminal.wait_for_text("40 132", SCREEN_WAIT);
    let first = first_sse_event(&s.central, &id);
    assert!(
        first.contains("text/event-stream")
            && first.contains("data: {")
            && first.contains("\"cols\":132")
            && first.contains("\"rows\":40"),
        "an event stream whose first event is the header at the size now: {first}"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let mut watch = spawn_watch(&s.central, &id, dir.path());
    terminal.type_slowly("echo marker-$((100+23))\r");
    terminal.wait_for_text("marker-123", SCREEN_WAIT);
    eventually(
        "jmsctl session watch to print what alice's session shows",
        || {
            let seen = fs::read_to_string(dir.path().join("watch.out")).unwrap_or_default();
            if seen.contains("marker-123") {
                Ok(())
            } else {
                Err(format!(
                    "stdout: {seen:?}\nstderr: {}",
                    fs::read_to_string(dir.path().join("watch.err")).unwrap_or_default()
                ))
            }
        },
    );
    // Still live: what she types next arrives too.
    terminal.type_slowly("echo second-$((200+34))\r");
    eventually("the watch to follow the session", || {
        let seen = fs::read_to_string(dir.path().join("watch.out")).unwrap_or_default();
        if seen.contains("second-234") {
            Ok(())
        } else {
            Err(seen)
        }
    });

    let ordered = std::time::Instant::now();
    s.central
        .jmsctl(&["session", "kill", &id, "--reason", "e2e maintenance window"]);
    terminal.wait_for_text(
        "session terminated by an administrator: e2e maintenance window",
        SCREEN_WAIT,
    );
    // A figure for the log, not a check (the machine may be loaded).
    eprintln!(
        "jms-e2e: from `jmsctl session kill` to the line on alice's screen: {:?}",
        ordered.elapsed()
    );
    let status = terminal.wait_exit(SCREEN_WAIT);
    assert!(
        status.is_some(),
        "alice's ssh ends once her session is terminated"
    );
    let watched = jms_e2e::run::wait_until(&mut watch, std::time::Instant::now() + SCREEN_WAIT);
    assert!(
        watched.is_some_and(|st| st.success()),
        "jmsctl session watch ends with the session: {watched:?}\n{}",
        fs::read_to_string(dir.path().join("watch.err")).unwrap_or_default()
    );
    let said = fs::read_to_string(dir.path().join("watch.err")).unwrap_or_default();
    assert!(
        said.contains("ended") && said.contains("terminated by an administrator"),
        "the watcher is told why it ended: {said}"
    );

    // The session's end carries the reason; a second kill is a conflict;
    // the kill is in the operation log.
    eventually(
        "the session's end to reach the server with the reason",
        || {
            let (_, body) = s
                .central
                .api("GET", &format!("/api/v1/sessions/{id}"), None);
            if body.contains("terminated by an administrator: e2e maintenance window") {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
    let (status, body) = s
        .central
        .api("POST", &format!("/api/v1/sessions/{id}/kill"), None);
    assert_eq!(status, 409, "killing an ended session: {body}");
    let (_, oplog) = s.central.api("GET", "/api/v1/oplog", None);
    assert!(
        oplog.contains("kill") && oplog.contains(&id),
        "the kill is logged: {oplog}"
    );
    assert!(
        s.central.log().contains("kill ordered"),
        "the server logs the order"
    );
}

#[test]
fn a_shared_session_is_joined_read_only_or_with_write_and_bad_codes_are_refused() {
    let s = scene();
    let mut owner = s.shell("alice", &s.alice);

    // Read-only: bob sees alice's output, his keys never reach web01.
    let code = s.share("alice", &s.alice, "");
    let mut joiner =
        s.bastion
            .ssh_terminal("bob", &s.bob, &[], Some(&format!("join {code}")), (100, 30));
    joiner.wait_for_text("you joined alice's session on web01", SCREEN_WAIT);
    owner.wait_for_text("bob joined your session", SCREEN_WAIT);
    owner.type_slowly("echo owner-$((1+1))\r");
    owner.wait_for_text("owner-2", SCREEN_WAIT);
    joiner.wait_for_text("owner-2", SCREEN_WAIT);
    // Both sides run in workers as the worker user: the owner's with its
    // target ssh, the joiner's with none (it is fed by the owner's).
    let workers = s.bastion.session_workers();
    assert_eq!(workers.len(), 2, "the owner's and the joiner's workers");
    let with_ssh = |w: &u32| procfs::children_names(*w).iter().any(|c| c == "ssh");
    assert_eq!(
        workers.iter().filter(|w| with_ssh(w)).count(),
        1,
        "one target connection, the owner's"
    );
    for worker in workers {
        procfs::assert_runs_as_the_worker_user(worker);
    }
    joiner.type_slowly("echo joiner-$((2+3))\r");
    joiner.wait_for_text("read-only: your keys are not sent", SCREEN_WAIT);
    owner.type_slowly("echo after-$((3+4))\r");
    owner.wait_for_text("after-7", SCREEN_WAIT);
    joiner.wait_for_text("after-7", SCREEN_WAIT);
    assert!(
        !owner.transcript().contains("joiner"),
        "a read-only joiner's keys reach nothing:\n{}",
        owner.transcript()
    );
    joiner.send(&[0x1d]);
    assert!(
        joiner.wait_exit(SCREEN_WAIT).is_some(),
        "Ctrl-] leaves the shared session"
    );
    owner.wait_for_text("bob left your session", SCREEN_WAIT);
    // A code works once.
    let out = s
        .bastion
        .ssh_key("bob", &s.bob, Some(&format!("join {code}")));
    out.assert_failure("a used code is refused");
    assert!(
        out.stderr.contains("was used"),
        "one clear line for a used code:\n{out}"
    );

    // Write: bob's command runs in alice's session and is logged.
    let code = s.share("alice", &s.alice, "--write");
    let mut joiner =
        s.bastion
            .ssh_terminal("bob", &s.bob, &[], Some(&format!("join {code}")), (100, 30));
    joiner.wait_for_text("you may type", SCREEN_WAIT);
    joiner.type_slowly("echo joiner-$((2+3))\r");
    owner.wait_for_text("joiner-5", SCREEN_WAIT);
    joiner.wait_for_text("joiner-5", SCREEN_WAIT);
    eventually(
        "bob's command to be in the command log, typed by bob",
        || {
            let log = s.bastion.agentd_log();
            let line = log
                .lines()
                .find(|l| l.contains("event=\"command\"") && l.contains("echo joiner-$((2+3))"));
            match line {
                Some(l) if l.contains("typed_by=\"bob\"") => Ok(()),
                _ => Err(log),
            }
        },
    );
    // The owner ends her session: the joiner is told.
    owner.type_slowly("exit\r");
    joiner.wait_for_text("the shared session ended", SCREEN_WAIT);
    assert!(
        joiner.wait_exit(SCREEN_WAIT).is_some(),
        "bob's ssh ends too"
    );
    assert!(
        s.bastion.agentd_log().contains("share_join"),
        "joins are audited:\n{}",
        s.bastion.agentd_log()
    );

    // Refusals: a wrong code, a code for a session that ended, no `share`.
    let out = s
        .bastion
        .ssh_key("bob", &s.bob, Some("join ZZZZ-ZZZZ-ZZZZ-ZZZZ"));
    out.assert_failure("a wrong code is refused");
    assert!(
        out.stderr.contains("no such share code"),
        "one clear line for a wrong code:\n{out}"
    );
    let out = s
        .bastion
        .ssh_key("bob", &s.bob, Some(&format!("join {code}")));
    out.assert_failure("a code for a session that ended is refused");
    let _carol = s.shell("carol", &s.carol);
    let out = s.bastion.ssh_key("carol", &s.carol, Some("share"));
    out.assert_failure("a grant without share cannot share");
    assert!(
        out.stderr.contains("sharing this session is not granted"),
        "one clear line for a grant without share:\n{out}"
    );
    let out = s.bastion.ssh_key("bob", &s.bob, Some("share"));
    out.assert_failure("nothing to share without a live session");
    assert!(
        out.stderr.contains("no live session"),
        "one clear line without a session:\n{out}"
    );
    // Guessing is limited: after 5 wrong codes (bob has typed 3: a used
    // one, a wrong one, one for an ended session) he is refused for a while.
    for _ in 0..2 {
        s.bastion
            .ssh_key("bob", &s.bob, Some("join 2345-6789-ABCD-EFGH"))
            .assert_failure("a wrong code is refused");
    }
    let out = s
        .bastion
        .ssh_key("bob", &s.bob, Some("join 2345-6789-ABCD-EFGH"));
    out.assert_failure("a sixth try is refused");
    assert!(
        out.stderr.contains("too many wrong share codes"),
        "the sixth try is refused as such:\n{out}"
    );
}

#[test]
fn a_revoked_grant_ends_the_session_it_allowed_with_a_message() {
    let s = scene();
    let mut terminal = s.shell("carol", &s.carol);
    let id = s.online_session("carol");
    s.central
        .jmsctl(&["grant", "delete", "carol-web01", "--yes"]);
    terminal.wait_for_text("access revoked", SCREEN_WAIT);
    assert!(
        terminal.wait_exit(SCREEN_WAIT).is_some(),
        "carol's ssh ends once her grant is gone"
    );
    eventually("the session's end to say access was revoked", || {
        let (_, body) = s
            .central
            .api("GET", &format!("/api/v1/sessions/{id}"), None);
        if body.contains("access revoked") && body.contains("\"status\":\"ended\"") {
            Ok(())
        } else {
            Err(body)
        }
    });
}

#[test]
fn a_session_cut_short_by_an_agentd_crash_is_closed_on_the_server_after_restart() {
    let s = scene();
    let mut terminal = s.shell("alice", &s.alice);
    let id = s.online_session("alice");
    // agentd dies with the session (kill -9): no session_end is spooled.
    s.bastion.kill_agentd();
    let _ = terminal.wait_exit(SCREEN_WAIT);
    s.bastion.restart_agentd();
    eventually(
        "the restarted agentd to close the session on the server",
        || {
            let (_, body) = s
                .central
                .api("GET", &format!("/api/v1/sessions/{id}"), None);
            if body.contains("jms-agentd stopped while the session ran")
                && body.contains("\"status\":\"ended\"")
            {
                Ok(())
            } else {
                Err(body)
            }
        },
    );
    let (_, online) = s
        .central
        .api("GET", "/api/v1/sessions?user=alice&online=true", None);
    assert!(!online.contains(&id), "no longer online: {online}");
}

/// `ssh -s USER@bastion sftp` with its stdin held open (an SFTP session
/// that waits); its stderr goes to `dir`/sftp.err.
fn idle_sftp(s: &Scene, user: &str, key: &ClientKey, dir: &std::path::Path) -> Child {
    let port = s.bastion.port().to_string();
    s.bastion
        .ssh_command("ssh")
        .args(jms_e2e::clients::CLIENT_OPTIONS)
        .args([
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "BatchMode=yes",
            "-i",
        ])
        .arg(&key.private)
        .args(["-p", &port, "-l", user, "-s", "127.0.0.1", "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.join("sftp.err")).expect("sftp.err"))
        .spawn()
        .expect("start ssh -s sftp")
}

#[test]
fn sftp_sessions_are_live_ended_by_an_admin_and_by_the_idle_timeout() {
    let s = scene();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sftp = idle_sftp(&s, "alice", &s.alice, dir.path());
    let id = eventually("the server to list alice's online SFTP session", || {
        let (status, body) = s
            .central
            .api("GET", "/api/v1/sessions?user=alice&online=true", None);
        let id = body
            .split("{\"id\":\"")
            .find(|object| object.contains("\"kind\":\"sftp\""))
            .map(|object| object.chars().take(36).collect::<String>());
        match (status, id) {
            (200, Some(id)) if id.len() == 36 => Ok(id),
            _ => Err(format!("{status}: {body}")),
        }
    });
    s.central
        .jmsctl(&["session", "kill", &id, "--reason", "e2e sftp"]);
    // (sshd drops a subsystem's stderr: the reason reaches the audit, and
    // the client sees the connection close.)
    let status = jms_e2e::run::wait_until(&mut sftp, std::time::Instant::now() + SCREEN_WAIT);
    assert!(
        status.is_some(),
        "the SFTP session ends on the order:\n{}",
        s.bastion.agentd_log()
    );
    eventually("the SFTP session's end to carry the reason", || {
        let (_, body) = s
            .central
            .api("GET", &format!("/api/v1/sessions/{id}"), None);
        if body.contains("terminated by an administrator: e2e sftp") {
            Ok(())
        } else {
            Err(body)
        }
    });
    // The idle timeout applies to SFTP sessions too.
    s.central
        .jmsctl(&["settings", "set", "security.session_idle_timeout", "2s"]);
    eventually(
        "an idle SFTP session to be ended once the setting is synced",
        || {
            let mut sftp = idle_sftp(&s, "alice", &s.alice, dir.path());
            let status = jms_e2e::run::wait_until(
                &mut sftp,
                std::time::Instant::now() + Duration::from_secs(15),
            );
            let _ = sftp.kill();
            let _ = sftp.wait();
            let log = s.bastion.agentd_log();
            match status {
                Some(_)
                    if log.contains("kind=\"sftp\"")
                        && log.contains("reason=\"session ended: idle for 2s") =>
                {
                    Ok(())
                }
                _ => Err(format!("{status:?}:\n{log}")),
            }
        },
    );
}
