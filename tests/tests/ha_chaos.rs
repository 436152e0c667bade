//! A highly available jms-server under kill -9: two real jms-server
//! instances on one PostgreSQL (a private cluster, scripts/pg-test) with
//! recordings in S3-compatible object storage (a real s3s-fs), two bare
//! jms-agentd bastions with both URLs in `[central] server` (in opposite
//! orders, so both instances serve), uploading spooled events and
//! recordings while the test kills one instance with SIGKILL, restarts
//! it, kills the other, … [`KILLS`] times. Each kill catches bastion b1
//! mid-upload on the instance it kills: the upload resumes on the other
//! instance and completes there. At the end every event the bastions
//! saw acknowledged is stored exactly once (counted by idempotency key,
//! and projected once), every recording is complete in the bucket and
//! matches the bastion's SHA-256, no chunk is left. Runs as root (CI does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jms_e2e::agentd::{shared_temp_dir, Agentd, EXAMPLE_POLICY};
use jms_e2e::central::Central;
use jms_e2e::pg::psql;
use jms_e2e::s3::S3Server;
use jms_sync::event::{Event, EventBody, Scope};

/// How many times an instance is killed.
const KILLS: usize = 6;
/// The bucket's prefix for recordings.
const PREFIX: &str = "ha";
/// How long the bastions get to drain (generous: the machine may be
/// loaded; nothing here measures time).
const DRAIN: Duration = Duration::from_secs(120);

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
}

/// A recording of about `size` bytes (asciicast lines) as `<session>.cast`
/// in `dir`, written aside and renamed in (the bastion never sees half a
/// file); its SHA-256.
fn put_recording(dir: &Path, session: &str, size: usize) -> String {
    let mut text = String::from("{\"version\": 2, \"width\": 80, \"height\": 24}\n");
    let mut i = 0u64;
    while text.len() < size {
        text.push_str(&format!(
            "[{i}.000000, \"o\", \"{session} line {i} of the chaos test\\r\\n\"]\n"
        ));
        i += 1;
    }
    std::fs::create_dir_all(dir).unwrap();
    let aside = dir.join(format!(".{session}.tmp"));
    std::fs::write(&aside, &text).unwrap();
    std::fs::rename(&aside, dir.join(format!("{session}.cast"))).unwrap();
    jms_sync::bundle::hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref())
}

/// Writes sealed spool segments into the bastions' spools (one session:
/// start, [`COMMANDS`] commands, end), one every few tens of milliseconds
/// until stopped; remembers every event id and each session's commands.
struct EventWriter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Idempotency keys written.
    keys: Arc<Mutex<Vec<String>>>,
    /// Commands written per session.
    sessions: Arc<Mutex<BTreeMap<String, usize>>>,
}

const COMMANDS: usize = 3;

impl EventWriter {
    fn start(spools: Vec<(String, PathBuf)>) -> EventWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let keys: Arc<Mutex<Vec<String>>> = Arc::default();
        let sessions: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
        let thread = std::thread::spawn({
            let (stop, keys, sessions) = (stop.clone(), keys.clone(), sessions.clone());
            move || {
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let (bastion, spool) = &spools[n % spools.len()];
                    let session = format!("chaos-{bastion}-s{n:04}");
                    let scope = Scope {
                        session: session.clone(),
                        user: "alice".into(),
                        asset: "web01".into(),
                        account: "root".into(),
                        username: Some("root".into()),
                    };
                    let mut bodies = vec![EventBody::SessionStart {
                        scope: scope.clone(),
                        kind: "shell".into(),
                        protocol: "ssh".into(),
                        client: Some("127.0.0.1".into()),
                        command: None,
                        recording: None,
                    }];
                    for c in 0..COMMANDS {
                        bodies.push(EventBody::Command {
                            scope: scope.clone(),
                            command: format!("echo {n} {c}"),
                            kind: "interactive".into(),
                            decision: "allow".into(),
                            filter: None,
                            typed_by: None,
                        });
                    }
                    bodies.push(EventBody::SessionEnd {
                        scope,
                        exit_status: Some(0),
                        reason: None,
                        duration_ms: 1000,
                        bytes_in: 1,
                        bytes_out: 2,
                        recording: None,
                        recording_truncated: false,
                        output: None,
                    });
                    let mut text = String::new();
                    let mut ids = Vec::new();
                    for (i, body) in bodies.into_iter().enumerate() {
                        let mut event = Event::now(body);
                        event.id = format!("{session}-e{i}");
                        ids.push(event.id.clone());
                        text.push_str(&serde_json::to_string(&event).unwrap());
                        text.push('\n');
                    }
                    std::fs::create_dir_all(spool).unwrap();
                    let aside = spool.join(format!(".chaos-{n}.tmp"));
                    std::fs::write(&aside, text).unwrap();
                    std::fs::rename(
                        &aside,
                        spool.join(format!("1767225600000-chaos{n:06}.jsonl")),
                    )
                    .unwrap();
                    keys.lock().unwrap().extend(ids);
                    sessions.lock().unwrap().insert(session, COMMANDS);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
        });
        EventWriter {
            stop,
            thread: Some(thread),
            keys,
            sessions,
        }
    }

    /// Stops writing; the keys and sessions written.
    fn finish(mut self) -> (Vec<String>, BTreeMap<String, usize>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        let mut keys = self.keys.lock().unwrap().clone();
        keys.sort();
        (keys, self.sessions.lock().unwrap().clone())
    }
}

/// A bare agentd enrolled (through `central`) as `name`, its
/// `[central] server` being `servers`; started.
fn bastion(root: &Path, central: &Central, name: &str, servers: &[&str]) -> Agentd {
    let dir = root.join(name);
    std::fs::create_dir(&dir).unwrap();
    let list = format!(
        "[{}]",
        servers
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut agentd = Agentd::with_servers(&dir, &list);
    let out = agentd.enroll_as(&central.url, &central.enrollment_token(), name);
    assert!(
        out.status.success(),
        "enroll {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    agentd.start();
    agentd
}

/// `.cast` files still waiting in `dir`.
fn waiting_recordings(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cast"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn two_instances_killed_in_turn_lose_and_double_nothing() {
    let s3 = S3Server::start("jms-recordings");
    let a = Central::start_on_postgres_with_s3(&s3, PREFIX);
    let b = a.peer();
    let mut instances = [a, b];
    let database = instances[0].database().unwrap().to_owned();
    instances[0].jmsctl(&["policy", "apply", EXAMPLE_POLICY]);
    let (a_url, b_url) = (instances[0].url.clone(), instances[1].url.clone());

    let root = shared_temp_dir();
    let b1 = bastion(root.path(), &instances[0], "b1", &[&a_url, &b_url]);
    let b2 = bastion(root.path(), &instances[1], "b2", &[&b_url, &a_url]);
    let writer = EventWriter::start(vec![("b1".into(), b1.spool()), ("b2".into(), b2.spool())]);
    let b1_recordings = b1.state().join("recordings");
    let b2_recordings = b2.state().join("recordings");
    // session -> SHA-256 of every recording the bastions were given.
    let mut recordings: BTreeMap<String, String> = BTreeMap::new();

    // b1 talks to the instance that answered last: A at first, then the
    // one it failed over to, which is the next one killed.
    let mut victim = 0;
    for kill in 0..KILLS {
        let survivor = 1 - victim;
        let pid = b1.pid().expect("b1 runs");
        // A recording for b1; b1 frozen while the bucket holds some of
        // its chunks but not the whole (if it slips through, another).
        let mut attempt = 0;
        let session = loop {
            attempt += 1;
            assert!(
                attempt <= 5,
                "b1's upload was never caught midway\n{}",
                b1.log()
            );
            let session = format!("chaos-b1-rec{kill}-{attempt}");
            recordings.insert(
                session.clone(),
                put_recording(&b1_recordings, &session, 6 << 20),
            );
            let chunks = format!("{PREFIX}/partial/{session}");
            let whole = format!("{PREFIX}/{session}.cast");
            let started = Instant::now();
            let caught = loop {
                signal(pid, nix::sys::signal::Signal::SIGSTOP);
                // A request already sent lands before we look.
                std::thread::sleep(Duration::from_millis(100));
                if s3.object(&whole).is_some() {
                    break false;
                }
                if !s3.files(&chunks).is_empty() {
                    break true;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "b1's upload of {session} never started\n{}",
                    b1.log()
                );
                signal(pid, nix::sys::signal::Signal::SIGCONT);
                std::thread::sleep(Duration::from_millis(30));
            };
            if caught {
                break session;
            }
            signal(pid, nix::sys::signal::Signal::SIGCONT);
        };
        let failovers_before = b1.log().matches("trying the next server URL").count();
        // A recording for b2 too, uploaded whenever b2 gets to it.
        if kill % 2 == 0 {
            let session = format!("chaos-b2-rec{kill}");
            recordings.insert(
                session.clone(),
                put_recording(&b2_recordings, &session, 3 << 20),
            );
        }

        instances[victim].stop();
        signal(pid, nix::sys::signal::Signal::SIGCONT);
        // The upload started on the victim finishes on the survivor.
        let local = b1_recordings.join(format!("{session}.cast"));
        b1.wait_for_within(
            &format!("{session} confirmed after instance {victim} was killed"),
            DRAIN,
            || !local.exists(),
        );
        let log = instances[survivor].log();
        assert!(
            log.lines()
                .any(|l| l.contains("recording uploaded") && l.contains(&session)),
            "instance {survivor} completed {session}:\n{log}"
        );
        assert!(
            b1.log().matches("trying the next server URL").count() > failovers_before,
            "b1 moved from the killed instance to the other:\n{}",
            b1.log()
        );
        instances[victim].restart();
        victim = survivor;
    }

    // Everything drains through whichever instance answers.
    let (keys, sessions) = writer.finish();
    for (bastion, dir) in [(&b1, &b1_recordings), (&b2, &b2_recordings)] {
        bastion.wait_for_within("the spool to drain", DRAIN, || bastion.spool_empty());
        bastion.wait_for_within("every recording to be confirmed", DRAIN, || {
            waiting_recordings(dir) == 0
        });
    }

    // Every acknowledged event exactly once, projected once.
    let stored = psql(
        &database,
        "SELECT idempotency_key FROM events WHERE idempotency_key LIKE 'chaos-%' \
         ORDER BY idempotency_key",
    );
    assert_eq!(stored.len(), keys.len(), "as many events as written");
    assert!(stored == keys, "the same keys, each once");
    let projected: BTreeMap<String, usize> = psql(
        &database,
        "SELECT s.id, (SELECT COUNT(*) FROM commands c WHERE c.session_id = s.id) \
         FROM sessions s WHERE s.id LIKE 'chaos-%' AND s.ended_at IS NOT NULL ORDER BY s.id",
    )
    .iter()
    .map(|row| {
        let (id, count) = row.split_once('|').unwrap();
        (id.to_string(), count.parse().unwrap())
    })
    .collect();
    assert!(
        projected == sessions,
        "every session ended, each command projected once"
    );

    // Every recording complete, whole in the bucket, checked; no chunk.
    let rows = psql(
        &database,
        "SELECT session_id, sha256, complete FROM recordings ORDER BY session_id",
    );
    let expected: Vec<String> = recordings
        .iter()
        .map(|(session, sha)| format!("{session}|{sha}|1"))
        .collect();
    assert_eq!(rows, expected, "each recording complete with its SHA-256");
    for (session, sha) in &recordings {
        let object = s3
            .object(&format!("{PREFIX}/{session}.cast"))
            .unwrap_or_else(|| panic!("{session} is in the bucket"));
        let got =
            jms_sync::bundle::hex(ring::digest::digest(&ring::digest::SHA256, &object).as_ref());
        assert_eq!(&got, sha, "{session}: the bastion's bytes");
    }
    assert_eq!(
        s3.files(&format!("{PREFIX}/partial")),
        Vec::<String>::new(),
        "no chunk left in the bucket"
    );
    assert!(recordings.len() > KILLS, "{recordings:?}");
}
