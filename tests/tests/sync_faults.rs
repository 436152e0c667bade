//! Faults on the sync path, with real processes (runs as root, as CI does):
//!
//! - kill -9 of jms-agentd and of jms-server at pseudo-random points while
//!   a jms user streams session requests into agentd (each refused request
//!   spools a `session_denied`, and a filter-refused command a `command`
//!   too, fsync'd before the refusal is answered): once the spool drains,
//!   the server holds every event agentd answered for exactly once, and no
//!   event twice.
//! - a fake server (a tiny HTTP server here) serves agentd a tampered
//!   bundle, a replayed older one, one signed by another key, one with the
//!   pinned key but another key's signature and one cut short: each is
//!   refused and agentd keeps serving the last good policy, even when the
//!   answer around it is signed (the fake server holds the real server
//!   key). (A bundle altered on disk is `tests/sync.rs`'s.)
//! - a man in the middle ([`Mitm`]) in front of the real server: answers
//!   turned into bare 304s, a genuine signed 304 replayed for later
//!   requests, forged control orders (unsigned, or signed by another
//!   key), a forged acknowledgement of uploaded events. None is believed: the staleness clock runs, agentd fails
//!   closed (jms users unknown) and comes back once the path is clean;
//!   the forged orders are never carried out and the events stay spooled
//!   until the server itself stores them.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jms_e2e::agentd::{enrolled_agentd, sqlite, Agentd};
use jms_e2e::central::{header_of, signed_answer_headers, Central};
use jms_proto::{read_response, write_frame_with_fds, Request, Response, SessionRequest};
use jms_sync::bundle::{self, server_id, unhex};
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

// ---- kill -9 during an event stream -------------------------------------------

/// Events the stream must have had acknowledged before it stops.
const TARGET_EVENTS: usize = 10_000;
/// Kills of each process, at least.
const KILLS_EACH: usize = 3;
/// Concurrent requests in the generator.
const GENERATOR_THREADS: usize = 4;
/// How long the whole stream may take (a loaded machine is slow, never
/// this slow).
const STREAM_LIMIT: Duration = Duration::from_secs(600);

const SOCKET_ENV: &str = "JMS_FAULT_GENERATOR_SOCKET";
const STOP_ENV: &str = "JMS_FAULT_GENERATOR_STOP";

/// The request with marker `n`: even ones name no asset (one
/// `session_denied`), odd ones a command the `no-rm-root` filter refuses
/// on a granted asset (a `command` and a `session_denied`).
fn command_line(n: usize) -> String {
    if n.is_multiple_of(2) {
        format!("nosuch-{n} fault-{n}")
    } else {
        format!("db01 reboot fault-{n}")
    }
}

fn events_of(n: usize) -> usize {
    if n.is_multiple_of(2) {
        1
    } else {
        2
    }
}

/// One request as the jms user: `Ok` when agentd answered with the
/// refusal (so its events are in the spool, fsync'd), else why not (agentd
/// down, or killed mid-request).
fn one_request(socket: &Path, n: usize, null: &std::fs::File) -> Result<(), String> {
    let stream = UnixStream::connect(socket).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let request = Request::OpenSession(SessionRequest {
        command_line: command_line(n),
        pty: None,
        client: Some("127.0.0.1".into()),
    });
    let fds = [null.as_fd(), null.as_fd(), null.as_fd()];
    write_frame_with_fds(&stream, &request, &fds).map_err(|e| format!("send: {e}"))?;
    match read_response::<Response>(&mut &stream) {
        Ok(Response::Denied { .. }) => Ok(()),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(format!("no answer: {e}")),
    }
}

/// The stream's generator: a child process of the kill test, run as the
/// jms user `alice` (agentd serves sessions to jms users only). Prints
/// `ACK n` for each acknowledged request and `NAK n` for each attempted
/// one that was not; stops when the stop file appears.
#[test]
#[ignore = "the generator of the kill -9 test: a child process, run as a jms user"]
fn generator_process() {
    let Some(socket) = std::env::var_os(SOCKET_ENV) else {
        return;
    };
    let socket = PathBuf::from(socket);
    let stop = PathBuf::from(std::env::var_os(STOP_ENV).expect("stop file"));
    let threads: Vec<_> = (0..GENERATOR_THREADS)
        .map(|t| {
            let (socket, stop) = (socket.clone(), stop.clone());
            std::thread::spawn(move || {
                let null = std::fs::File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .unwrap();
                let mut n = t;
                while !stop.exists() {
                    match one_request(&socket, n, &null) {
                        Ok(()) => println!("ACK {n}"),
                        Err(why) => {
                            println!("NAK {n} {why}");
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    n += GENERATOR_THREADS;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// A small deterministic generator for the kill points (seed printed).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.next() % (high - low))
    }
}

/// The generator process, killed if the test fails before stopping it.
struct Generator(std::process::Child);

impl Drop for Generator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the generator reported so far.
#[derive(Default)]
struct Stream {
    acked: HashSet<usize>,
    attempted: HashSet<usize>,
    acked_events: usize,
    last_refusal: Option<String>,
}

#[test]
fn every_event_reaches_the_server_exactly_once_across_kill_9s() {
    let (dir, mut central, mut bastion) = enrolled_agentd(true);
    bastion.start();
    let (uid, gid) = bastion.ids_of("alice");
    let seed = std::env::var("JMS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("kill points: JMS_FAULT_SEED={seed}");
    let mut rng = XorShift(seed);

    let stop = dir.path().join("stop-generator");
    let generator_log = std::fs::File::create(dir.path().join("generator.log")).unwrap();
    let mut generator = Generator(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "generator_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SOCKET_ENV, bastion.socket())
            .env(STOP_ENV, &stop)
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::piped())
            .stderr(generator_log)
            .spawn()
            .expect("start the generator"),
    );
    let stream = Arc::new(Mutex::new(Stream::default()));
    let reader = {
        let stream = Arc::clone(&stream);
        let out = generator.0.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                // libtest may print its "test … " on the same line first.
                let Some(at) = line.find("ACK ").or_else(|| line.find("NAK ")) else {
                    continue;
                };
                let mut words = line[at..].splitn(3, ' ');
                let (Some(tag), Some(Ok(n))) = (words.next(), words.next().map(str::parse)) else {
                    continue;
                };
                let mut s = stream.lock().unwrap();
                s.attempted.insert(n);
                match tag {
                    "ACK" => {
                        s.acked.insert(n);
                        s.acked_events += events_of(n);
                    }
                    _ => s.last_refusal = words.next().map(str::to_string),
                }
            }
        })
    };
    let acked_events = || stream.lock().unwrap().acked_events;

    // Kill one or the other at pseudo-random points until the stream is
    // long enough and each was killed often enough; wait for progress
    // after each restart so every kill lands in a live stream.
    let started = Instant::now();
    let mut agentd_logs = String::new();
    let (mut agentd_kills, mut server_kills) = (0, 0);
    while acked_events() < TARGET_EVENTS || agentd_kills < KILLS_EACH || server_kills < KILLS_EACH {
        let before = acked_events();
        let progressed = Instant::now();
        while acked_events() < before + 200 {
            assert!(
                progressed.elapsed() < Duration::from_secs(60),
                "the stream stalled at {} events (last refusal: {:?})\n{}",
                acked_events(),
                stream.lock().unwrap().last_refusal,
                bastion.log()
            );
            assert!(started.elapsed() < STREAM_LIMIT, "the stream is too slow");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(rng.millis(100, 1500));
        let kill_agentd = if agentd_kills < KILLS_EACH && server_kills >= KILLS_EACH {
            true
        } else if server_kills < KILLS_EACH && agentd_kills >= KILLS_EACH {
            false
        } else {
            rng.next().is_multiple_of(2)
        };
        if kill_agentd {
            bastion.kill9();
            agentd_kills += 1;
            agentd_logs.push_str(&bastion.log());
            std::thread::sleep(rng.millis(0, 500));
            bastion.start();
        } else {
            central.stop();
            server_kills += 1;
            std::thread::sleep(rng.millis(0, 2000));
            central.restart();
        }
        eprintln!(
            "{:>5.1}s: killed {} ({} events acknowledged)",
            started.elapsed().as_secs_f64(),
            if kill_agentd {
                "jms-agentd"
            } else {
                "jms-server"
            },
            acked_events()
        );
    }
    std::fs::write(&stop, "").unwrap();
    let status = generator.0.wait().unwrap();
    assert!(status.success(), "the generator failed: {status}");
    reader.join().unwrap();
    let stream = stream.lock().unwrap();

    bastion.wait_for_within("the spool to drain", Duration::from_secs(300), || {
        bastion.spool_empty()
    });
    agentd_logs.push_str(&bastion.log());
    for lost in ["spool full", "spool write failed", "event lost"] {
        assert!(
            !agentd_logs.contains(lost),
            "agentd dropped an event (`{lost}`)"
        );
    }

    // (kind, marker) → how many rows hold it.
    let mut stored: BTreeMap<(String, usize), usize> = BTreeMap::new();
    let rows = sqlite(
        &central,
        "SELECT kind, COALESCE(json_extract(body, '$.command_line'), \
         json_extract(body, '$.command')) FROM events",
    );
    for row in &rows {
        let (kind, text) = row.split_once('|').expect("kind|text");
        let Some(n) = text
            .rsplit_once("fault-")
            .and_then(|(_, n)| n.parse::<usize>().ok())
        else {
            continue;
        };
        *stored.entry((kind.to_string(), n)).or_default() += 1;
    }
    let twice: Vec<_> = stored.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "events stored twice: {twice:?}");
    let mut missing = Vec::new();
    for &n in &stream.acked {
        let mut kinds = vec!["session_denied"];
        if n % 2 == 1 {
            kinds.push("command");
        }
        for kind in kinds {
            if !stored.contains_key(&(kind.to_string(), n)) {
                missing.push((kind, n));
            }
        }
    }
    missing.sort();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never reached the server, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let strays: Vec<_> = stored
        .keys()
        .filter(|(_, n)| !stream.attempted.contains(n))
        .collect();
    assert!(strays.is_empty(), "events nobody sent: {strays:?}");
    let unacked_stored = stored
        .keys()
        .filter(|(_, n)| !stream.acked.contains(n))
        .count();
    let keys = sqlite(
        &central,
        "SELECT count(*), count(DISTINCT idempotency_key) FROM events",
    );
    let (all, distinct) = keys[0].split_once('|').unwrap();
    assert_eq!(all, distinct, "one row per idempotency key");
    assert!(stored.len() >= TARGET_EVENTS);
    eprintln!(
        "{} events acknowledged ({} requests), {} stored once each ({} of them from requests cut \
         by a kill before the answer), {} requests unanswered; {agentd_kills} agentd and \
         {server_kills} server kill -9s in {:.0}s",
        stream.acked_events,
        stream.acked.len(),
        stored.len(),
        unacked_stored,
        stream.attempted.len() - stream.acked.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---- bad bundles from a fake server ---------------------------------------------

/// A fake central server holding the real server's signing key: answers
/// every bundle request with the bytes in `bundle`, sealed to the
/// request's transport key, the answer signed for the request as the
/// server would; anything else 404.
struct FakeServer {
    url: String,
    bundle: Arc<Mutex<Vec<u8>>>,
    served: Arc<AtomicUsize>,
}

impl FakeServer {
    fn start(key: Ed25519KeyPair) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bundle = Arc::new(Mutex::new(Vec::new()));
        let served = Arc::new(AtomicUsize::new(0));
        let (b, s) = (Arc::clone(&bundle), Arc::clone(&served));
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(connection) = connection else { continue };
                let _ = Self::answer(connection, &b, &s, &key);
            }
        });
        FakeServer {
            url,
            bundle,
            served,
        }
    }

    fn answer(
        mut connection: TcpStream,
        bundle: &Mutex<Vec<u8>>,
        served: &AtomicUsize,
        key: &Ed25519KeyPair,
    ) -> std::io::Result<()> {
        connection.set_read_timeout(Some(Duration::from_secs(5)))?;
        let Some((head, _)) = read_request(&mut connection)? else {
            return Ok(());
        };
        let target = head.split(' ').nth(1).unwrap_or("");
        let transport = target
            .strip_prefix("/api/v1/sync/bundle?")
            .and_then(|query| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("transport="))
            })
            .and_then(unhex);
        let (status, body, signed) = match transport {
            Some(transport) => {
                let plain = bundle.lock().unwrap().clone();
                served.fetch_add(1, Ordering::SeqCst);
                // The version the bundle claims, as the server would name it.
                let version = serde_json::from_slice::<serde_json::Value>(
                    plain.get(HEADER..).unwrap_or_default(),
                )
                .ok()
                .and_then(|b| b["version"].as_u64())
                .unwrap_or(1);
                let body = bundle::seal_for(&transport, &plain).unwrap();
                let signed = signed_answer_headers(key, &head, 200, Some(version), &body);
                ("200 OK", body, signed)
            }
            None => (
                "404 Not Found",
                br#"{"error":"fake server"}"#.to_vec(),
                String::new(),
            ),
        };
        write!(
            connection,
            "HTTP/1.1 {status}\r\ncontent-type: application/octet-stream\r\n\
             content-length: {}\r\n{signed}connection: close\r\n\r\n",
            body.len()
        )?;
        connection.write_all(&body)?;
        connection.flush()
    }

    fn serve(&self, bytes: Vec<u8>) {
        *self.bundle.lock().unwrap() = bytes;
    }
}

fn new_key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// The server key the bastion pinned at enrollment.
fn pinned_key(bastion: &Agentd) -> Vec<u8> {
    let text = std::fs::read_to_string(bastion.state().join("central.json")).unwrap();
    let enrollment: serde_json::Value = serde_json::from_str(&text).unwrap();
    unhex(enrollment["server_public_key"].as_str().unwrap()).unwrap()
}

/// Header length of a signed bundle: magic, format, key, signature.
const HEADER: usize = 4 + 1 + 32 + 64;

#[test]
fn bundles_tampered_replayed_or_signed_by_another_key_are_refused_and_the_last_good_one_kept() {
    let (_dir, central, mut bastion) = enrolled_agentd(true);
    let bundle_path = bastion.state().join("bundle.jms");
    bastion.start();
    assert!(bastion.has_user("alice"), "{}", bastion.log());
    let older = std::fs::read(&bundle_path).unwrap();
    central.jmsctl(&["user", "add", "zed", "--name", "Zed"]);
    bastion.wait_for("zed in the NSS cache", || bastion.has_user("zed"));
    let good = std::fs::read(&bundle_path).unwrap();
    bastion.stop();

    let pinned = pinned_key(&bastion);
    let current = bundle::verify(&good, &pinned, 0).expect("the kept bundle verifies");
    let have = current.version;

    // Newer by its version, but altered after signing.
    let tampered = {
        let body = String::from_utf8(good[HEADER..].to_vec()).unwrap();
        let body = body.replacen(
            &format!("\"version\":{have}"),
            &format!("\"version\":{}", have + 1000),
            1,
        );
        let body = body.replacen("\"zed\"", "\"mallory\"", 1);
        [&good[..HEADER], body.as_bytes()].concat()
    };
    // A well-formed newer bundle signed by another server's key.
    let other = new_key();
    let mut forged = current.clone();
    forged.version = have + 1000;
    forged.server_id = server_id(other.public_key().as_ref());
    forged.policy.users.retain(|u| u.username != "zed");
    let foreign = forged.sign(&other);
    // The same, claiming the pinned key in its header.
    let mut claims_pinned = foreign.clone();
    claims_pinned[5..37].copy_from_slice(&pinned);
    // Cut short.
    let cut = good[..good.len() / 2].to_vec();

    let fake = FakeServer::start(server_key(&central));
    let _ = Agentd::new(&bastion.dir, &fake.url);
    bastion.start();
    let cases = [
        ("tampered", tampered, "signature does not verify"),
        ("replayed older", older, "is not newer than"),
        (
            "signed by another key",
            foreign,
            "signed by another server key",
        ),
        (
            "pinned key, foreign signature",
            claims_pinned,
            "signature does not verify",
        ),
        ("cut short", cut, "signature does not verify"),
    ];
    for (what, bytes, reason) in cases {
        fake.serve(bytes);
        // Every poll answered from now on gets these bytes; agentd polls
        // one at a time, so once one is answered every older refusal is
        // logged: what is logged after that is about these bytes.
        let first = fake.served.load(Ordering::SeqCst) + 1;
        bastion.wait_for(&format!("a poll for the {what} bundle"), || {
            fake.served.load(Ordering::SeqCst) >= first
        });
        let before = bastion.log().matches(reason).count();
        bastion.wait_for(&format!("the {what} bundle to be refused"), || {
            bastion.log().matches(reason).count() > before
        });
        assert!(
            bastion
                .log()
                .contains("bundle refused, keeping the last good policy"),
            "{}",
            bastion.log()
        );
        assert!(
            bastion.has_user("alice") && bastion.has_user("zed") && !bastion.has_user("mallory"),
            "the {what} bundle changed the published policy\n{}",
            bastion.log()
        );
        assert_eq!(
            std::fs::read(&bundle_path).unwrap(),
            good,
            "the {what} bundle replaced the last good one"
        );
    }
    // Still serving its jms users from the last good policy.
    let mut client = jms_proto::Client::connect(&bastion.socket(), Duration::from_secs(5)).unwrap();
    let answer = client
        .call(&Request::UserStatus { user: "zed".into() })
        .unwrap();
    assert!(
        matches!(answer, Response::UserStatus { known: true, .. }),
        "{answer:?}"
    );
    bastion.stop();

    // Back to the real server: the next genuine bundle is taken.
    let _ = Agentd::new(&bastion.dir, &central.url);
    central.jmsctl(&["user", "add", "yan", "--name", "Yan"]);
    bastion.start();
    bastion.wait_for("yan in the NSS cache", || bastion.has_user("yan"));
    assert!(bastion.has_user("zed"));
}

// ---- raw HTTP for the fakes ------------------------------------------------------

/// Reads one request: its head (up to the blank line) and its body
/// (`content-length`); `None` when the peer closed first.
fn read_request(connection: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
        if connection.read(&mut byte)? == 0 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = header_of(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    connection.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

/// The real server's signing key (its data dir's `sync.key`).
fn server_key(central: &Central) -> Ed25519KeyPair {
    let pkcs8 = std::fs::read(central.data_dir().join("sync.key")).expect("the server's sync.key");
    Ed25519KeyPair::from_pkcs8(&pkcs8).expect("an Ed25519 key")
}

// ---- a man in the middle ---------------------------------------------------------

/// What the man in the middle does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MitmMode {
    /// Forwards everything (and records the last genuine 304).
    Forward,
    /// Answers every request with a bare 304, the server never asked.
    Bare304,
    /// Answers bundle requests with the last genuine signed 304 (another
    /// request's); forwards the rest.
    Replay304,
    /// Answers control polls with a kill order of its own (unsigned, or
    /// signed by another key, in turn); forwards the rest.
    ForgeControl,
    /// Acknowledges every events upload as stored (unsigned), the server
    /// never asked; forwards the rest.
    ForgeEventsAck,
}

/// The session id of the forged kill orders.
const FORGED_SESSION: &str = "forged-by-the-mitm";

/// A man in the middle between agentd and the real server.
struct Mitm {
    url: String,
    mode: Arc<Mutex<MitmMode>>,
    /// The last genuine 304 answer seen, raw.
    recorded: Arc<Mutex<Option<Vec<u8>>>>,
    /// Answers it made up so far.
    forged: Arc<AtomicUsize>,
}

impl Mitm {
    fn start(upstream: &str, mode: MitmMode) -> Mitm {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let upstream = upstream.trim_start_matches("http://").to_string();
        let mode = Arc::new(Mutex::new(mode));
        let recorded = Arc::new(Mutex::new(None));
        let forged = Arc::new(AtomicUsize::new(0));
        let (m, r, f) = (mode.clone(), recorded.clone(), forged.clone());
        let other = Arc::new(new_key());
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(connection) = connection else { continue };
                let (m, r, f, o, up) = (
                    m.clone(),
                    r.clone(),
                    f.clone(),
                    other.clone(),
                    upstream.clone(),
                );
                std::thread::spawn(move || {
                    let _ = Self::serve(connection, &up, &m, &r, &f, &o);
                });
            }
        });
        Mitm {
            url,
            mode,
            recorded,
            forged,
        }
    }

    fn set(&self, mode: MitmMode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn forged(&self) -> usize {
        self.forged.load(Ordering::SeqCst)
    }

    fn serve(
        mut client: TcpStream,
        upstream: &str,
        mode: &Mutex<MitmMode>,
        recorded: &Mutex<Option<Vec<u8>>>,
        forged: &AtomicUsize,
        other: &Ed25519KeyPair,
    ) -> std::io::Result<()> {
        client.set_read_timeout(Some(Duration::from_secs(90)))?;
        let Some((head, body)) = read_request(&mut client)? else {
            return Ok(());
        };
        let target = head.split(' ').nth(1).unwrap_or("").to_string();
        let mode = *mode.lock().unwrap();
        let bundle_request = target.starts_with("/api/v1/sync/bundle?");
        let made_up = match mode {
            MitmMode::Bare304 => {
                Some(b"HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n".to_vec())
            }
            MitmMode::Replay304 if bundle_request => recorded.lock().unwrap().clone(),
            MitmMode::ForgeControl if target.starts_with("/api/v1/sync/control") => {
                let n = forged.load(Ordering::SeqCst);
                let body = format!(
                    r#"{{"orders":[{{"kind":"kill","session":"{FORGED_SESSION}","reason":"mitm {n}"}}]}}"#
                );
                // Every other one signed for this very request, but by
                // another key than the pinned one.
                let signed = if n % 2 == 1 {
                    signed_answer_headers(other, &head, 200, None, body.as_bytes())
                } else {
                    String::new()
                };
                Some(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\n{signed}connection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .into_bytes(),
                )
            }
            MitmMode::ForgeEventsAck if target.starts_with("/api/v1/sync/events") => {
                let batch: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let ids: Vec<&str> = batch["events"]
                    .as_array()
                    .map(|events| events.iter().filter_map(|e| e["id"].as_str()).collect())
                    .unwrap_or_default();
                let answer = serde_json::json!({"accepted": ids, "stored": ids.len()}).to_string();
                Some(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    )
                    .into_bytes(),
                )
            }
            _ => None,
        };
        if let Some(answer) = made_up {
            forged.fetch_add(1, Ordering::SeqCst);
            client.write_all(&answer)?;
            return client.shutdown(std::net::Shutdown::Both);
        }
        let response = jms_e2e::central::forward(upstream, &head, &body)?;
        if bundle_request && response.starts_with(b"HTTP/1.1 304") {
            *recorded.lock().unwrap() = Some(response.clone());
        }
        client.write_all(&response)?;
        client.shutdown(std::net::Shutdown::Both)
    }
}

/// Whether agentd answers `user` as a known jms user (what PAM asks).
fn known(bastion: &Agentd, user: &str) -> bool {
    let Ok(mut client) = jms_proto::Client::connect(&bastion.socket(), Duration::from_secs(5))
    else {
        return false;
    };
    matches!(
        client.call(&Request::UserStatus { user: user.into() }),
        Ok(Response::UserStatus { known: true, .. })
    )
}

#[test]
fn answers_a_man_in_the_middle_makes_or_replays_are_not_believed_and_the_bastion_fails_closed() {
    let (_dir, central, mut bastion) = enrolled_agentd(true);
    // Forged control orders from the start (before any genuine control
    // poll is held at the server); bundles and events go through.
    let mitm = Mitm::start(&central.url, MitmMode::ForgeControl);
    let _ = Agentd::new(&bastion.dir, &mitm.url);
    let config = std::fs::read_to_string(bastion.config()).unwrap();
    std::fs::write(
        bastion.config(),
        config.replace(
            "max_staleness_secs = 3600\n",
            "max_staleness_secs = 3\nlong_poll_secs = 2\n",
        ),
    )
    .unwrap();
    bastion.start();
    assert!(bastion.has_user("alice"), "{}", bastion.log());

    // Forged orders, unsigned and signed by another key: refused, never
    // carried out.
    bastion.wait_for("forged control orders", || mitm.forged() >= 4);
    let log = bastion.log();
    assert!(
        !log.contains("session_kill_order") && !log.contains(FORGED_SESSION),
        "a forged kill order was carried out:\n{log}"
    );
    assert!(
        log.contains("sync_answer_refused") && log.contains("/api/v1/sync/control"),
        "the forged control answers raise the alarm:\n{log}"
    );

    // The normal path: a change on the server reaches the bastion.
    mitm.set(MitmMode::Forward);
    central.jmsctl(&["user", "add", "zed", "--name", "Zed"]);
    bastion.wait_for("zed known", || {
        bastion.has_user("zed") && known(&bastion, "zed")
    });

    // Every answer a bare 304: no answer at all, so the staleness clock
    // runs out and the bastion fails closed.
    mitm.set(MitmMode::Bare304);
    bastion.wait_for_within(
        "agentd to fail closed behind bare 304s",
        Duration::from_secs(60),
        || !bastion.has_user("alice") && !bastion.has_user("zed") && !known(&bastion, "alice"),
    );
    let log = bastion.log();
    assert!(
        log.contains("not signed by the server") && log.contains("policy_stale"),
        "the bare 304s are refused and the staleness alarm raised:\n{log}"
    );

    // The clean path again: the policy comes back.
    mitm.set(MitmMode::Forward);
    bastion.wait_for_within("the policy back", Duration::from_secs(60), || {
        bastion.has_user("alice") && bastion.has_user("zed")
    });

    // A genuine signed 304, replayed for later requests: bound to another
    // nonce, so refused; the bastion fails closed again.
    bastion.wait_for_within("a genuine 304 to replay", Duration::from_secs(60), || {
        mitm.recorded.lock().unwrap().is_some()
    });
    let before = bastion.log().matches("does not verify").count();
    mitm.set(MitmMode::Replay304);
    bastion.wait_for_within(
        "agentd to fail closed behind a replayed 304",
        Duration::from_secs(60),
        || !bastion.has_user("alice"),
    );
    assert!(
        bastion.log().matches("does not verify").count() > before,
        "the replayed 304 is refused for its signature:\n{}",
        bastion.log()
    );

    mitm.set(MitmMode::Forward);
    bastion.wait_for_within("the policy back", Duration::from_secs(60), || {
        bastion.has_user("alice") && bastion.has_user("zed") && known(&bastion, "alice")
    });

    // A forged acknowledgement of an events upload: not believed, so the
    // event stays spooled and reaches the server once the path is clean.
    mitm.set(MitmMode::ForgeEventsAck);
    let forged = mitm.forged();
    let answer = jms_proto::Client::call_once(
        &bastion.socket(),
        Duration::from_secs(10),
        &Request::Authenticate {
            user: "alice".into(),
            password: jms_core::model::Secret::new("not her password"),
            totp: None,
            rhost: Some("192.0.2.99".into()),
            service: "sshd".into(),
        },
    )
    .unwrap();
    assert!(matches!(answer, Response::Auth { .. }), "{answer:?}");
    bastion.wait_for("a forged events acknowledgement", || mitm.forged() > forged);
    assert!(
        !bastion.spool_empty(),
        "a forged acknowledgement emptied the spool:\n{}",
        bastion.log()
    );
    mitm.set(MitmMode::Forward);
    bastion.wait_for("the login event on the server", || {
        !sqlite(
            &central,
            "SELECT outcome FROM logins WHERE remote_addr = '192.0.2.99'",
        )
        .is_empty()
    });
}
