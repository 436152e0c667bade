//! jms-agentd uploads a finished recording to a real jms-server: in
//! chunks, resuming from the server's offset after agentd is killed with
//! SIGKILL mid-upload, deleting its copy only once the server confirmed the
//! checksum; the server then serves the identical bytes and the session
//! shows it has a recording. A PAM login result travels the same way, as
//! a `login` event. The same against a server that keeps recordings in
//! S3-compatible object storage, through two server URLs of which the
//! first goes down mid-upload. Runs as root (CI does).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jms_agent::daemon::events::{EventBody, Scope};
use jms_agent::daemon::monitor::spool::Event;
use jms_agent::daemon::session::recording::{Asciicast, Recorder, SessionMeta};
use jms_e2e::agentd::{enrolled_agentd, enrolled_agentd_to, sqlite, Agentd};
use jms_e2e::central::{Central, Relay};
use jms_e2e::s3::S3Server;

/// Pid of the jms-agentd running with `config` (found in /proc: the
/// fixture keeps its child to itself).
fn agentd_pid(config: &Path) -> i32 {
    let config = config.to_string_lossy().into_owned();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if args.first().is_some_and(|a| a.ends_with("jms-agentd")) && args.contains(&config) {
            return pid;
        }
    }
    panic!("no jms-agentd running with {config}");
}

fn signal(pid: i32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
}

fn size_of(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// A recording as a session writes it: header, output, resizes; about
/// `size` bytes.
fn write_recording(dir: &Path, session: &str, size: usize) -> PathBuf {
    let meta = SessionMeta {
        user: "alice".into(),
        asset: "web01".into(),
        account: "root".into(),
        session: session.into(),
    };
    let mut cast = Asciicast::create(
        dir,
        &format!("{session}.cast"),
        &meta,
        (120, 40),
        "xterm-256color",
        u64::MAX,
        false,
    )
    .unwrap();
    let mut n = 0u64;
    let path = cast.path().to_path_buf();
    while (n as usize) * 80 < size {
        let line =
            format!("{n:08} the quick brown fox ☃ jumps over the lazy dog — output line\r\n");
        cast.output(line.as_bytes());
        if n.is_multiple_of(10_000) {
            cast.resize(100 + (n % 7) as u16, 30);
        }
        n += 1;
    }
    drop(cast);
    path
}

/// Spools the session's start and end so the server has the session.
fn spool_session(bastion: &Agentd, session: &str) {
    let spool = bastion.spool();
    std::fs::create_dir_all(&spool).unwrap();
    let scope = Scope {
        session: session.into(),
        user: "alice".into(),
        asset: "web01".into(),
        account: "root".into(),
        username: Some("root".into()),
    };
    let events = [
        Event::now(EventBody::SessionStart {
            scope: scope.clone(),
            kind: "shell".into(),
            protocol: "ssh".into(),
            client: Some("127.0.0.1".into()),
            command: None,
            recording: Some(format!("{session}.cast")),
        }),
        Event::now(EventBody::SessionEnd {
            scope,
            exit_status: Some(0),
            reason: None,
            duration_ms: 1000,
            bytes_in: 10,
            bytes_out: 20,
            recording: Some(format!("{session}.cast")),
            recording_truncated: false,
            output: None,
        }),
    ];
    let text: String = events
        .iter()
        .map(|e| format!("{}\n", serde_json::to_string(e).unwrap()))
        .collect();
    std::fs::write(spool.join("1767225600000-000001.jsonl"), text).unwrap();
}

#[test]
fn agentd_uploads_a_recording_resuming_after_a_kill_and_deletes_it_once_confirmed() {
    let (_dir, central, mut bastion) = enrolled_agentd(false);
    let session = jms_agent::daemon::events::new_id();
    let recordings = bastion.state().join("recordings");
    // 24 MiB: two dozen chunks, so the upload can be caught in the middle.
    let local = write_recording(&recordings, &session, 24 << 20);
    let original = std::fs::read(&local).unwrap();
    let total = original.len() as u64;
    spool_session(&bastion, &session);
    let partial = central
        .data_dir()
        .join("recordings")
        .join(format!("{session}.cast.part"));
    let complete = central
        .data_dir()
        .join("recordings")
        .join(format!("{session}.cast"));

    // Freeze agentd now and then; kill it while the server holds part of
    // the recording (frozen, it cannot finish the upload meanwhile).
    bastion.start();
    let pid = agentd_pid(&bastion.config());
    let started = Instant::now();
    let held = loop {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        // A request already sent lands before we look.
        std::thread::sleep(Duration::from_millis(100));
        let held = size_of(&partial).unwrap_or(0);
        if held > 0 && held < total {
            bastion.kill9();
            break held;
        }
        assert!(
            !complete.exists(),
            "the upload finished before it could be interrupted\n{}",
            bastion.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the upload never started\n{}",
            bastion.log()
        );
        signal(pid, nix::sys::signal::Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(30));
    };
    assert!(local.exists(), "not deleted before the server confirmed");
    assert!(!complete.exists());

    // Restarted, agentd resumes at the server's offset and completes.
    bastion.start();
    bastion.wait_for_within(
        "the recording to be confirmed and deleted locally",
        Duration::from_secs(120),
        || !local.exists(),
    );
    let log = bastion.log();
    assert!(
        log.contains("resuming a recording upload"),
        "resumed rather than started over (the server held {held} of {total} bytes):\n{log}"
    );
    assert!(!partial.exists());
    assert_eq!(
        std::fs::read(&complete).unwrap(),
        original,
        "the server holds the identical bytes"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&complete).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Through the admin API: the session has its recording, byte for byte.
    bastion.wait_for("the session's events", || bastion.spool_empty());
    let show = central.jmsctl(&["session", "show", &session, "--json"]);
    let detail: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(detail["has_recording"], true, "{detail}");
    assert_eq!(detail["recording"]["size"], total);
    let fetched = _dir.path().join("fetched.cast");
    central.jmsctl(&[
        "recording",
        "get",
        &session,
        "-o",
        fetched.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&fetched).unwrap(), original);
    let rows = sqlite(
        &central,
        &format!("SELECT size, complete FROM recordings WHERE session_id = '{session}'"),
    );
    assert_eq!(rows, vec![format!("{total}|1")]);

    // A failed PAM authentication is a login event on the server.
    let answer = jms_proto::Client::call_once(
        &bastion.socket(),
        Duration::from_secs(10),
        &jms_proto::Request::Authenticate {
            user: "alice".into(),
            password: jms_core::model::Secret::new("not her password"),
            totp: None,
            rhost: Some("192.0.2.7".into()),
            service: "sshd".into(),
        },
    )
    .unwrap();
    let outcome = match answer {
        jms_proto::Response::Auth {
            result: jms_proto::AuthResult::WrongSecret,
        } => "failure",
        jms_proto::Response::Auth {
            result: jms_proto::AuthResult::Denied { .. },
        } => "denied",
        other => panic!("alice is a known user: {other:?}"),
    };
    let logins = || {
        sqlite(
            &central,
            "SELECT username, remote_addr, service, outcome FROM logins",
        )
    };
    bastion.wait_for("the login result on the server", || !logins().is_empty());
    assert_eq!(logins(), vec![format!("alice|192.0.2.7|sshd|{outcome}")]);
}

#[test]
fn agentd_uploads_a_recording_to_object_storage_switching_server_url_mid_upload() {
    let s3 = S3Server::start("jms-recordings");
    let central = Central::start_with_s3(&s3, "bastions");
    // Two URLs of the server: a relay (another instance, a balancer) that
    // goes down mid-upload, then the server itself.
    let relay = Relay::start(&central);
    let servers = format!("[{:?}, {:?}]", relay.url, central.url);
    let (dir, mut bastion) = enrolled_agentd_to(&central, Some(&servers));
    let session = jms_agent::daemon::events::new_id();
    let recordings = bastion.state().join("recordings");
    // 12 MiB: a dozen chunks to interrupt, composed of two parts.
    let local = write_recording(&recordings, &session, 12 << 20);
    let original = std::fs::read(&local).unwrap();
    spool_session(&bastion, &session);
    let key = format!("bastions/{session}.cast");
    let chunks = format!("bastions/partial/{session}");

    // While the bucket holds some chunks and no recording yet, the relay
    // goes down and agentd is killed.
    bastion.start();
    let pid = agentd_pid(&bastion.config());
    let started = Instant::now();
    loop {
        signal(pid, nix::sys::signal::Signal::SIGSTOP);
        std::thread::sleep(Duration::from_millis(100));
        if !s3.files(&chunks).is_empty() {
            relay.stop();
            bastion.kill9();
            break;
        }
        assert!(
            s3.object(&key).is_none(),
            "finished before it could be interrupted\n{}",
            bastion.log()
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the upload never started\n{}",
            bastion.log()
        );
        signal(pid, nix::sys::signal::Signal::SIGCONT);
        std::thread::sleep(Duration::from_millis(30));
    }
    let held = s3.files(&chunks).len();
    assert!(local.exists() && s3.object(&key).is_none());

    // Restarted, agentd finds the first URL down, resumes through the
    // second where the bucket says, and completes once.
    bastion.start();
    bastion.wait_for_within(
        "the recording to be confirmed and deleted locally",
        Duration::from_secs(120),
        || !local.exists(),
    );
    let log = bastion.log();
    assert!(
        log.contains("trying the next server URL"),
        "failed over: {log}"
    );
    assert!(
        log.contains("resuming a recording upload"),
        "resumed where the bucket's {held} chunks end: {log}"
    );
    assert!(
        s3.object(&key) == Some(original.clone()),
        "the bucket holds the identical bytes"
    );
    assert!(
        s3.files(&chunks).is_empty(),
        "no chunk left: {:?}",
        s3.files("bastions")
    );
    assert!(
        !central.data_dir().join("recordings").exists(),
        "nothing on the server's disk"
    );

    // The server streams it back from the bucket: jmsctl, checksum.
    bastion.wait_for("the session's events", || bastion.spool_empty());
    let show = central.jmsctl(&["session", "show", &session, "--json"]);
    let detail: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(detail["has_recording"], true, "{detail}");
    let fetched = dir.path().join("fetched.cast");
    central.jmsctl(&[
        "recording",
        "get",
        &session,
        "-o",
        fetched.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&fetched).unwrap() == original,
        "jmsctl fetched the identical bytes"
    );
    let sha = jms_sync::recording::sha256_file(&fetched).unwrap().0;
    assert_eq!(detail["recording"]["sha256"], sha.as_str());
    let rows = sqlite(
        &central,
        &format!("SELECT size, complete FROM recordings WHERE session_id = '{session}'"),
    );
    assert_eq!(rows, vec![format!("{}|1", original.len())]);
}
