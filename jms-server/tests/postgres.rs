//! The store on PostgreSQL, where it differs from one SQLite process:
//! migrations and exactly-once writes when several instances share one
//! database. (The API, sync and audit suites run on it too: scripts/test
//! runs them again with `JMS_TEST_DATABASE`.) A cluster of its own when
//! `JMS_TEST_DATABASE` is not set ([`common::pg_cluster`]).

mod common;

use std::sync::{Arc, Barrier};

use jms_server::store::migrations::MIGRATIONS;
use jms_server::store::{NewEvent, PgStore, Purpose, Storage, StoreError};

/// A new database on the cluster.
fn database() -> String {
    common::create_pg_database(&common::pg_cluster())
}

fn client(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap()
}

/// Runs `work` on `n` threads released at once; returns their results.
fn at_once<T: Send + 'static>(
    n: usize,
    work: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let barrier = Arc::new(Barrier::new(n));
    let work = Arc::new(work);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let work = work.clone();
            std::thread::spawn(move || {
                barrier.wait();
                work(i)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Instances starting at once on an empty database apply each migration
/// once (no instance fails on a half-made schema), and a database a newer
/// server migrated is refused.
#[test]
fn instances_starting_at_once_migrate_once_and_a_newer_database_is_refused() {
    let url = database();
    let opened = {
        let url = url.clone();
        at_once(4, move |_| PgStore::open(&url).map(|_| ()))
    };
    for result in opened {
        result.expect("every instance opens the database");
    }
    let mut db = client(&url);
    let versions: Vec<i64> = db
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, (1..=MIGRATIONS.len() as i64).collect::<Vec<_>>());
    db.execute(
        "INSERT INTO schema_migrations VALUES (999, 'future', 'now')",
        &[],
    )
    .unwrap();
    match PgStore::open(&url) {
        Err(StoreError::TooNew { found: 999, .. }) => {}
        Err(other) => panic!("expected TooNew, got {other}"),
        Ok(_) => panic!("expected TooNew, got a store"),
    }
}

/// Two instances (two stores on one database) given the same event batch,
/// the same request nonce and the same one-time link at the same moment:
/// each event is stored and projected once, the nonce is new to exactly
/// one, the link works for exactly one.
#[test]
fn events_nonces_and_links_are_exactly_once_across_instances() {
    let url = database();
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let (bastion, link) = {
        let mut tx = a.write().unwrap();
        let bastion = tx.put_bastion("b1", &[7; 32], false).unwrap().unwrap();
        tx.put_user(
            &serde_json::from_value(serde_json::json!({"username": "alice"})).unwrap(),
            None,
            None,
        )
        .unwrap();
        let user = tx.user("alice").unwrap().unwrap().id;
        let link = tx
            .insert_password_token(
                user,
                Purpose::Welcome,
                &[1; 32],
                chrono::Utc::now() + chrono::Duration::hours(1),
            )
            .unwrap();
        tx.commit().unwrap();
        (bastion, link)
    };
    let bodies: Vec<String> = (0..50)
        .map(|i| {
            serde_json::json!({
                "id": format!("e{i}"), "event": "command", "time": "2026-01-01T00:00:00.000Z",
                "session": "s1", "user": "alice", "asset": "web01", "account": "root",
                "command": format!("echo {i}"), "kind": "interactive", "decision": "allow"
            })
            .to_string()
        })
        .collect();
    let bodies = Arc::new(bodies);
    let stores = [a.clone(), b.clone()];
    let results = at_once(4, move |i| {
        let store = &stores[i % 2];
        let events: Vec<NewEvent<'_>> = bodies
            .iter()
            .enumerate()
            .map(|(n, body)| NewEvent {
                idempotency_key: format!("e{n}").into(),
                kind: "command".into(),
                at: "2026-01-01T00:00:00.000Z".into(),
                body,
            })
            .collect();
        let mut tx = store.write().unwrap();
        let stored = tx.store_events(bastion, &events).unwrap();
        let nonce = tx.remember_nonce(bastion, "n-1", 100, 0).unwrap();
        let used = tx.use_password_token(link).unwrap();
        tx.commit().unwrap();
        (stored, nonce, used)
    });
    let stored: usize = results.iter().map(|r| r.0).sum();
    assert_eq!(stored, 50, "each event new to exactly one instance");
    assert_eq!(results.iter().filter(|r| r.1).count(), 1, "the nonce");
    assert_eq!(results.iter().filter(|r| r.2).count(), 1, "the link");
    let read = b.read().unwrap();
    assert_eq!(read.count_events(None).unwrap(), 50);
    let session = read.session("s1").unwrap().unwrap();
    assert_eq!(session.command_count, 50, "projected once each");
}

/// A bastion request's writes (nonce, last contact, version held) run
/// unordered, not behind the writer lock every instance's `write()` takes:
/// with that lock held by another connection, requests on two instances
/// giving the same nonce still finish, the nonce new to exactly one of
/// them (and a replay later refused); pruning forgets only that bastion's
/// old nonces.
#[test]
fn bastion_request_writes_skip_the_writer_lock_and_nonces_stay_exactly_once() {
    let url = database();
    let a = Arc::new(PgStore::open(&url).unwrap());
    let b = Arc::new(PgStore::open(&url).unwrap());
    let (b1, b2) = {
        let mut tx = a.write().unwrap();
        let b1 = tx.put_bastion("b1", &[7; 32], false).unwrap().unwrap();
        let b2 = tx.put_bastion("b2", &[8; 32], false).unwrap().unwrap();
        tx.remember_nonce(b1, "old-1", 10, 0).unwrap();
        tx.remember_nonce(b2, "old-2", 10, 0).unwrap();
        tx.commit().unwrap();
        (b1, b2)
    };
    // Another connection holds the writer lock until told (or, if the
    // requests wait for it, until it gives up and says so).
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let url = url.clone();
        std::thread::spawn(move || {
            let mut db = client(&url);
            let mut tx = db.transaction().unwrap();
            tx.execute(
                "SELECT pg_advisory_xact_lock($1)",
                &[&jms_server::store::postgres::WRITE_LOCK],
            )
            .unwrap();
            locked_tx.send(()).unwrap();
            let gave_up = done_rx
                .recv_timeout(std::time::Duration::from_secs(60))
                .is_err();
            tx.commit().unwrap();
            gave_up
        })
    };
    locked.recv().unwrap();
    let stores = [a.clone(), b.clone()];
    let fresh = at_once(4, move |i| {
        let mut tx = stores[i % 2].write_unordered().unwrap();
        let fresh = tx.remember_nonce(b1, "n-1", 100, 50).unwrap();
        tx.touch_bastion(b1, Some(7)).unwrap();
        tx.commit().unwrap();
        fresh
    });
    done.send(()).ok();
    assert!(
        !holder.join().unwrap(),
        "the bastion's writes waited for the writer lock"
    );
    assert_eq!(fresh.iter().filter(|f| **f).count(), 1, "the nonce");
    let mut tx = b.write_unordered().unwrap();
    assert!(
        !tx.remember_nonce(b1, "n-1", 101, 50).unwrap(),
        "a replay, later, on the other instance"
    );
    drop(tx);
    let mut db = client(&url);
    let nonces: Vec<(i64, String)> = db
        .query(
            "SELECT bastion_id, nonce FROM sync_nonces ORDER BY bastion_id, nonce",
            &[],
        )
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        nonces,
        [(b1, "n-1".to_string()), (b2, "old-2".to_string())],
        "b1's old nonce forgotten by its request, b2's left for its own"
    );
    let held: i64 = db
        .query_one("SELECT policy_version FROM bastions WHERE id = $1", &[&b1])
        .unwrap()
        .get(0);
    assert_eq!(held, 7, "the version held, in the same transaction");
}

/// A batch holding one key twice and keys an earlier batch stored, of more
/// events than one multi-row statement carries: each event stored and
/// projected once, the first of a key kept (in the batch and across
/// batches), the count of new events right.
#[test]
fn a_batch_with_duplicates_inside_and_against_earlier_rows_stores_each_event_once() {
    let url = database();
    let store = PgStore::open(&url).unwrap();
    let bastion = {
        let mut tx = store.write().unwrap();
        let bastion = tx.put_bastion("b1", &[7; 32], false).unwrap().unwrap();
        tx.commit().unwrap();
        bastion
    };
    let body = |key: &str, text: &str| {
        serde_json::json!({
            "id": key, "event": "command", "time": "2026-01-01T00:00:00.000Z",
            "session": "s1", "user": "alice", "asset": "web01", "account": "root",
            "command": text, "kind": "interactive", "decision": "allow"
        })
        .to_string()
    };
    let store_batch = |batch: &[(String, String)]| {
        let events: Vec<NewEvent<'_>> = batch
            .iter()
            .map(|(key, body)| NewEvent {
                idempotency_key: key.as_str().into(),
                kind: "command".into(),
                at: "2026-01-01T00:00:00.000Z".into(),
                body,
            })
            .collect();
        let mut tx = store.write().unwrap();
        let stored = tx.store_events(bastion, &events).unwrap();
        tx.commit().unwrap();
        stored
    };
    let first: Vec<(String, String)> = (0..100)
        .map(|i| {
            (
                format!("e{i}"),
                body(&format!("e{i}"), &format!("first {i}")),
            )
        })
        .collect();
    assert_eq!(store_batch(&first), 100);
    // e50..e349 (e50..e99 stored already), e200 twice.
    let mut second: Vec<(String, String)> = (50..350)
        .map(|i| {
            (
                format!("e{i}"),
                body(&format!("e{i}"), &format!("second {i}")),
            )
        })
        .collect();
    second.insert(170, ("e200".into(), body("e200", "second 200 again")));
    second.push(("e60".into(), body("e60", "second 60 again")));
    assert_eq!(store_batch(&second), 250, "e100..e349 new, each once");
    assert_eq!(store_batch(&second), 0, "the batch again: nothing new");

    let mut db = client(&url);
    let count =
        |db: &mut postgres::Client, sql: &str| -> i64 { db.query_one(sql, &[]).unwrap().get(0) };
    assert_eq!(count(&mut db, "SELECT COUNT(*) FROM events"), 350);
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(DISTINCT idempotency_key) FROM events"
        ),
        350
    );
    assert_eq!(
        count(&mut db, "SELECT COUNT(*) FROM commands"),
        350,
        "projected once each"
    );
    let input = |db: &mut postgres::Client, key: &str| -> String {
        db.query_one(
            "SELECT c.input FROM commands c JOIN events e ON e.id = c.event_id \
             WHERE e.idempotency_key = $1",
            &[&key],
        )
        .unwrap()
        .get(0)
    };
    assert_eq!(input(&mut db, "e60"), "first 60", "an earlier row stays");
    assert_eq!(
        input(&mut db, "e200"),
        "second 200",
        "the first in the batch"
    );
    assert_eq!(input(&mut db, "e349"), "second 349");
    let read = store.read().unwrap();
    assert_eq!(read.session("s1").unwrap().unwrap().command_count, 350);
}

// ---- several instances on one database ----------------------------------------

use common::{enrolled, outcome, Server, SyncBastion};
use serde_json::{json, Value};

/// Events of a live session `session` started on bastion `b1`.
fn session_start(session: &str) -> Value {
    json!({
        "id": format!("{session}-start"), "event": "session_start",
        "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "session": session, "user": "alice", "asset": "web01", "account": "root",
        "username": "root", "kind": "shell", "protocol": "ssh", "client": "10.0.0.1",
        "command": null, "recording": null
    })
}

/// A signed request of `bastion` to `server` with a client that waits as
/// long as the request may.
fn long_request(url: &str, bastion: &SyncBastion, path: &str, query: &str) -> (u16, Vec<u8>) {
    let mut request = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
        .get(format!("{url}{path}?{query}"));
    for (name, value) in bastion.sign("GET", path, query, b"") {
        request = request.header(name, value);
    }
    let response = request.send().expect("the server answers");
    (
        response.status().as_u16(),
        response.bytes().unwrap().to_vec(),
    )
}

fn jmsctl_ok(server: &Server, args: &[&str]) {
    let (code, _, stderr) = outcome(&server.jmsctl(args));
    assert_eq!(code, 0, "jmsctl {args:?}: {stderr}");
}

/// A policy change made through instance A wakes a bastion long-polling
/// instance B: B answers with the new bundle, not with 304 when its wait
/// (60 s here) is up.
#[test]
fn a_policy_change_through_one_instance_wakes_a_long_poll_on_the_other() {
    let a = Server::start_on_postgres();
    let b = a.peer();
    jmsctl_ok(&a, &["policy", "apply", common::EXAMPLE]);
    let bastion = enrolled(&a, "b1");
    let version = b.version();
    let transport = jms_sync::bundle::TransportKey::generate();
    let query = format!(
        "since={version}&transport={}&wait=60",
        transport.public_hex()
    );
    let server_key = bastion.server_key.clone();
    let poll = std::thread::spawn({
        let url = b.url.clone();
        move || long_request(&url, &bastion, "/api/v1/sync/bundle", &query)
    });
    // The poll waits on B (nothing newer yet), then A writes.
    std::thread::sleep(std::time::Duration::from_millis(300));
    jmsctl_ok(&a, &["user", "add", "zed", "--name", "Zed"]);
    let (status, body) = poll.join().unwrap();
    assert_eq!(
        status,
        200,
        "B answered the change: {}",
        String::from_utf8_lossy(&body)
    );
    let opened = transport.open(&body).expect("sealed to the transport key");
    // A delta: B knew what A's write changed (the signal said).
    let delta = jms_sync::bundle::verify_delta(&opened, &server_key, version).unwrap();
    assert_eq!(delta.from_version, version);
    assert!(delta.to_version > version);
    assert!(
        String::from_utf8_lossy(&opened).contains("zed"),
        "the change itself"
    );
}

/// A kill order given to instance A reaches the bastion whose control
/// poll waits on instance B (not when the poll's 60 s are up), and the
/// session it ends is seen ended through A.
#[test]
fn a_kill_order_given_to_one_instance_reaches_a_bastion_polling_the_other() {
    let a = Server::start_on_postgres();
    let b = a.peer();
    let bastion = enrolled(&a, "b1");
    assert_eq!(bastion.upload(&b, &[session_start("s-kill")]), 1);
    let poll = std::thread::spawn({
        let url = b.url.clone();
        move || {
            let got = long_request(&url, &bastion, "/api/v1/sync/control", "wait=60");
            (got, bastion)
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let answer = a.expect(
        202,
        "POST",
        "/api/v1/sessions/s-kill/kill",
        Some(json!({"reason": "two instances"})),
    );
    assert_eq!(answer["bastion"], "b1");
    let ((status, body), bastion) = poll.join().unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let orders: Value = serde_json::from_slice(&body).unwrap();
    let kill = &orders["orders"][0];
    assert_eq!(
        (kill["kind"].as_str(), kill["session"].as_str()),
        (Some("kill"), Some("s-kill")),
        "{orders}"
    );
    // The bastion ends it and says so to B; A sees it ended.
    let mut end = session_start("s-kill");
    end["id"] = "s-kill-end".into();
    end["event"] = "session_end".into();
    end["reason"] = "session terminated by an administrator: two instances".into();
    end["exit_status"] = Value::Null;
    end["duration_ms"] = 1000.into();
    end["bytes_in"] = 0.into();
    end["bytes_out"] = 0.into();
    end["recording_truncated"] = false.into();
    assert_eq!(bastion.upload(&b, &[end]), 1);
    let session = a.expect(200, "GET", "/api/v1/sessions/s-kill", None);
    assert_eq!(session["status"], "ended", "{session}");
}

/// A watcher on instance B sees the output the bastion pushes to
/// instance A (the bastion got the watch order from A).
#[test]
fn a_watcher_on_one_instance_sees_output_pushed_to_the_other() {
    use std::io::Read;
    let a = Server::start_on_postgres();
    let b = a.peer();
    let bastion = enrolled(&a, "b1");
    assert_eq!(bastion.upload(&a, &[session_start("s-live")]), 1);
    // The watcher, on B.
    let mut stream = reqwest::blocking::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .build()
        .unwrap()
        .get(format!("{}/api/v1/sessions/s-live/live", b.url))
        .bearer_auth(&b.admin)
        .send()
        .unwrap();
    assert_eq!(stream.status().as_u16(), 200);
    // The bastion polls A, gets the watch order, pushes to A.
    let (status, body) = long_request(&a.url, &bastion, "/api/v1/sync/control", "wait=60");
    assert_eq!(status, 200);
    let orders: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(orders["orders"][0]["kind"], "watch", "{orders}");
    let push = |batch: Value| -> Value {
        let body = serde_json::to_vec(&batch).unwrap();
        let (status, answer) = bastion.send_json(&a, "POST", "/api/v1/sync/live/s-live", "", &body);
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let answer = push(json!({"size": [80, 24], "init": "$ live-marker-77\r\n", "events": []}));
    assert_eq!(answer["watching"], true, "A knows B's watcher");
    let answer = push(json!({"events": [[0.5, "o", "tick-from-a\r\n"]]}));
    assert_eq!(answer["watching"], true);
    // What B's watcher reads.
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !(seen.contains("live-marker-77") && seen.contains("tick-from-a")) {
        let n = stream.read(&mut buf).expect("the watcher's stream");
        assert!(n > 0, "the stream ended: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

// ---- from SQLite --------------------------------------------------------------

/// `jms-server migrate` copies a SQLite store with policy, tokens,
/// bastions and audit into PostgreSQL, compares every row; the server
/// then runs on PostgreSQL with the same data directory (keys) and
/// answers as before. A second copy into the now full database is
/// refused.
#[test]
fn migrate_copies_a_sqlite_store_into_postgres_row_for_row() {
    let mut server = Server::start_on_sqlite();
    jmsctl_ok(&server, &["policy", "apply", common::EXAMPLE]);
    jmsctl_ok(&server, &["user", "add", "zed", "--name", "Zed"]);
    let bastion = enrolled(&server, "b1");
    assert_eq!(bastion.upload(&server, &[session_start("s-old")]), 1);
    let before: Vec<Value> = [
        "/api/v1/policy/version",
        "/api/v1/users",
        "/api/v1/sessions",
        "/api/v1/grants",
    ]
    .iter()
    .map(|path| server.expect(200, "GET", path, None))
    .collect();
    server.stop();

    let url = database();
    let out = std::process::Command::new(common::SERVER)
        .args(["migrate", "--from"])
        .arg(&server.data)
        .args(["--to", &url])
        .output()
        .unwrap();
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, 0, "migrate: {stderr}");
    assert!(stderr.contains("row for row: identical"), "{stderr}");
    assert!(stdout.contains("users\t"), "{stdout}");
    assert!(stdout.contains("events\t1"), "{stdout}");

    server.move_to(&url);
    let after: Vec<Value> = [
        "/api/v1/policy/version",
        "/api/v1/users",
        "/api/v1/sessions",
        "/api/v1/grants",
    ]
    .iter()
    .map(|path| server.expect(200, "GET", path, None))
    .collect();
    assert_eq!(before, after, "the same answers on PostgreSQL");
    // New rows continue after the copied ids, the secrets still open.
    jmsctl_ok(&server, &["user", "add", "yan", "--name", "Yan"]);
    assert_eq!(bastion.upload(&server, &[session_start("s-new")]), 1);

    let out = std::process::Command::new(common::SERVER)
        .args(["migrate", "--from"])
        .arg(&server.data)
        .args(["--to", &url])
        .output()
        .unwrap();
    let (code, _, stderr) = outcome(&out);
    assert_eq!(code, 1);
    assert!(stderr.contains("is not empty"), "{stderr}");
}

/// Failed web logins on instance A lock the name on instance B too: after
/// A's free attempts, B refuses even the right password (429).
#[test]
fn failed_web_logins_on_one_instance_lock_the_name_on_the_other() {
    use std::io::Write;
    const PASSWORD: &str = "a long web admin passphrase";
    let a = Server::start_on_postgres();
    let b = a.peer();
    let mut child = std::process::Command::new(common::JMSCTL)
        .args([
            "admin",
            "add",
            "root",
            "--password-stdin",
            "--iterations",
            "1000",
            "--data",
        ])
        .arg(&a.data)
        .args(common::database_args(&a.data))
        .env_clear()
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let (code, stdout, stderr) = outcome(&child.wait_with_output().unwrap());
    assert_eq!(code, 0, "jmsctl admin add: {stderr}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOTP secret: "))
        .unwrap()
        .to_string();
    let login = |server: &Server, password: &str| -> u16 {
        let code = format!(
            "{:06}",
            jms_core::password::totp_code(&secret, chrono::Utc::now().timestamp()).unwrap()
        );
        reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(format!("{}/web/login", server.url))
            .header("origin", &server.url)
            .form(&[
                ("username", "root"),
                ("password", password),
                ("code", &code),
                ("next", "/web/sessions"),
            ])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    // The free attempts (`web::auth::FREE_ATTEMPTS`).
    for _ in 0..5 {
        assert_eq!(login(&a, "wrong"), 401);
    }
    // A policy write on A after the failures; once B's long-poll wakes
    // for it, B has heard of the failures too (one sender, in order).
    let bastion = enrolled(&a, "b1");
    let version = b.version();
    let transport = jms_sync::bundle::TransportKey::generate();
    let query = format!(
        "since={version}&transport={}&wait=60",
        transport.public_hex()
    );
    let poll = std::thread::spawn({
        let url = b.url.clone();
        move || long_request(&url, &bastion, "/api/v1/sync/bundle", &query)
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    jmsctl_ok(&a, &["user", "add", "zed", "--name", "Zed"]);
    assert_eq!(poll.join().unwrap().0, 200);
    assert_eq!(
        login(&b, PASSWORD),
        429,
        "B holds the lock A's failures made"
    );
}

/// The engineers' portal counts failed logins across instances: failures
/// on A lock the engineer out on B, and an admin's unlock through A
/// lifts it on B.
#[test]
fn failed_portal_logins_on_one_instance_lock_the_engineer_on_the_other() {
    const PASSWORD: &str = "eve's long portal passphrase";
    let a = Server::start_on_postgres();
    let b = a.peer();
    add_engineer(&a, "eve", PASSWORD);
    let login =
        |server: &Server, password: &str| -> u16 { portal_login(server, "eve", password).0 };
    // B has heard everything A said before a policy write on A once B's
    // long-poll wakes for that write (one sender, in order).
    let bastion = enrolled(&a, "b1");
    let heard_on_b = |user: &str| {
        let transport = jms_sync::bundle::TransportKey::generate();
        let query = format!(
            "since={}&transport={}&wait=60",
            b.version(),
            transport.public_hex()
        );
        std::thread::scope(|scope| {
            let poll =
                scope.spawn(|| long_request(&b.url, &bastion, "/api/v1/sync/bundle", &query));
            std::thread::sleep(std::time::Duration::from_millis(300));
            jmsctl_ok(&a, &["user", "add", user, "--name", user]);
            assert_eq!(poll.join().unwrap().0, 200);
        });
    };
    assert_eq!(
        login(&b, PASSWORD),
        303,
        "B signs eve in before any failure"
    );
    // The default threshold: 5 failures lock.
    for _ in 0..5 {
        assert_eq!(login(&a, "wrong"), 401);
    }
    heard_on_b("zed");
    assert_eq!(
        login(&b, PASSWORD),
        429,
        "B holds the lock A's failures made"
    );
    jmsctl_ok(&a, &["user", "unlock", "eve"]);
    heard_on_b("yan");
    assert_eq!(login(&b, PASSWORD), 303, "A's unlock lifted B's lock");
}

// ---- account jobs across instances --------------------------------------------

/// web01 with a privileged root and an account `app` to rotate.
const JOB_POLICY: &str = r#"
assets:
  - name: web01
    address: 10.0.0.1
    protocols: [{name: ssh, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: root-pw, privileged: true}
      - {name: app, username: app, secret_type: password, secret: old-pw}
"#;

/// A control poll of `bastion` to `server` with its report, waiting up to
/// `wait` seconds: the answer and the transport key its secrets are
/// sealed to.
fn control_poll(
    url: &str,
    bastion: &SyncBastion,
    wait: u64,
) -> (Value, jms_sync::bundle::TransportKey) {
    let transport = jms_sync::bundle::TransportKey::generate();
    let query = jms_sync::queries::encode(&jms_sync::queries::ControlQuery::new(
        wait,
        jms_sync::fleet::StatusReport {
            agent: "0.1.0-test".into(),
            sessions: 0,
            backlog: 0,
        },
        transport.public_hex(),
    ));
    let (status, body) = long_request(url, bastion, "/api/v1/sync/control", &query);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    (serde_json::from_slice(&body).unwrap(), transport)
}

/// A rotation started through `a` reaches bastion b1 polling `b` (woken
/// at once, not when its 60 s wait is up), once, with its secrets sealed
/// to the poll's key; b1's report through `b` commits it, as `a` shows.
fn a_rotation_runs_across(a: &Server, b: &Server) {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, JOB_POLICY).unwrap();
    jmsctl_ok(a, &["policy", "apply", policy.to_str().unwrap()]);
    let bastion = enrolled(a, "b1");
    // Its first poll reports it: online, running jobs.
    let (idle, _) = control_poll(&b.url, &bastion, 0);
    assert_eq!(idle["orders"], json!([]), "{idle}");
    let poll = std::thread::spawn({
        let url = b.url.clone();
        move || {
            let got = control_poll(&url, &bastion, 60);
            (got, bastion)
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    let job = a.expect(
        201,
        "POST",
        "/api/v1/jobs",
        Some(json!({"kind": "rotate", "asset": "web01", "account": "app"})),
    );
    assert_eq!(job["bastion"], "b1", "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let ((answer, transport), bastion) = poll.join().unwrap();
    let order = &answer["orders"][0];
    assert_eq!(
        (order["kind"].as_str(), order["id"].as_str()),
        (Some("job"), Some(id.as_str())),
        "{answer}"
    );
    let sealed = jms_sync::bundle::unhex(answer["secrets"].as_str().expect("secrets")).unwrap();
    let secrets: Value = serde_json::from_slice(&transport.open(&sealed).unwrap()).unwrap();
    let new = secrets[&id]["new"]
        .as_str()
        .expect("the new secret")
        .to_string();
    assert_eq!(secrets[&id]["current"], "old-pw");
    assert!(
        !answer.to_string().contains(&new),
        "the new secret travels sealed only"
    );
    // Once: the next poll, on either instance, has no order.
    for server in [a, b] {
        let (again, _) = control_poll(&server.url, &bastion, 0);
        assert_eq!(again["orders"], json!([]), "{again}");
    }
    let report = json!({
        "ok": true, "changed": true, "new_secret_in_place": true,
        "steps": [{"name": "apply", "ok": true, "detail": ""},
                  {"name": "verify_new", "ok": true, "detail": ""}],
        "error": null
    });
    let (status, done) = bastion.send_json(
        b,
        "POST",
        &jms_sync::paths::job(&id),
        "",
        serde_json::to_vec(&report).unwrap(),
    );
    assert_eq!(status, 200, "{done}");
    let shown = a.expect(200, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(shown["status"], "ok", "{shown}");
    // Committed: the vault holds the new secret.
    let out = a.jmsctl(&["policy", "export", "--with-secrets"]);
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(&new) && !stdout.contains("old-pw"),
        "{stdout}"
    );
}

/// Two instances on one PostgreSQL: the job's order is in the database,
/// not in the memory of the instance that started it.
#[test]
fn a_job_started_through_one_instance_runs_on_a_bastion_polling_the_other() {
    let a = Server::start_on_postgres();
    let b = a.peer();
    a_rotation_runs_across(&a, &b);
}

/// One instance on SQLite: as before, the instance that starts a job
/// hands it to the bastion's poll.
#[test]
fn a_job_runs_on_a_bastion_polling_the_one_sqlite_instance() {
    let server = Server::start_on_sqlite();
    a_rotation_runs_across(&server, &server);
}

/// Adds the jms user `name` with `password` (a policy file applied
/// through `server`).
fn add_engineer(server: &Server, name: &str, password: &str) {
    let hash = jms_core::password::hash_password(password, jms_core::password::MIN_ITERATIONS)
        .expect("a password hash");
    let file = server.data.with_extension(format!("{name}-policy.yaml"));
    std::fs::write(
        &file,
        format!("users:\n  - {{username: {name}, name: {name}, password_hash: \"{hash}\"}}\n"),
    )
    .unwrap();
    jmsctl_ok(server, &["policy", "apply", file.to_str().unwrap()]);
}

fn browser() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A portal login through `server`: the status and the session cookie
/// (`jms_portal=…`) it set, if any.
fn portal_login(server: &Server, name: &str, password: &str) -> (u16, Option<String>) {
    let response = browser()
        .post(format!("{}/login", server.url))
        .header("origin", &server.url)
        .form(&[("username", name), ("password", password), ("next", "/")])
        .send()
        .unwrap();
    let cookie = response
        .headers()
        .get("set-cookie")
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string());
    (response.status().as_u16(), cookie)
}

/// `GET /` of the portal with `cookie`: the status and where it sends
/// the browser (a redirect to the login page without a live session).
fn portal_page(server: &Server, cookie: &str) -> (u16, String) {
    let response = browser()
        .get(format!("{}/", server.url))
        .header("cookie", cookie)
        .send()
        .unwrap();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string())
        .unwrap_or_default();
    (response.status().as_u16(), location)
}

/// An engineer signed in to the portal through instance A is served by
/// instance B (the session is in the database, not in A's memory), and
/// signing out on B ends the session on A too. Across a restart of A
/// she stays signed in.
#[test]
fn a_portal_session_made_on_one_instance_is_served_and_ended_by_the_other() {
    const PASSWORD: &str = "eve's long portal passphrase";
    let mut a = Server::start_on_postgres();
    let b = a.peer();
    add_engineer(&a, "eve", PASSWORD);
    let (status, cookie) = portal_login(&a, "eve", PASSWORD);
    assert_eq!(status, 303, "A signs eve in");
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.starts_with("jms_portal="), "{cookie}");
    assert_eq!(portal_page(&a, &cookie).0, 200, "A serves her page");
    assert_eq!(
        portal_page(&b, &cookie),
        (200, String::new()),
        "B serves her page with A's session"
    );
    a.restart();
    assert_eq!(
        portal_page(&a, &cookie).0,
        200,
        "A restarted still knows her"
    );

    let response = browser()
        .post(format!("{}/logout", b.url))
        .header("origin", &b.url)
        .header("cookie", &cookie)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 303, "B signs her out");
    for server in [&a, &b] {
        let (status, location) = portal_page(server, &cookie);
        assert_eq!(status, 303, "the session is over everywhere");
        assert!(location.starts_with("/login"), "{location}");
    }
    let sessions = common::query_text(
        &a.data,
        "SELECT CAST(COUNT(*) AS TEXT) FROM portal_sessions",
    );
    assert_eq!(sessions, "0", "nothing of it is kept");
}

/// "Forgot password" requests from one address count against one limit
/// whichever instance they reach: after 6 through A and 4 through B, the
/// 11th is refused by both.
#[test]
fn the_forgot_password_limit_counts_requests_on_both_instances() {
    let a = Server::start_on_postgres();
    let b = a.peer();
    // Mail on (the page needs it); nobody asked for exists, nothing is sent.
    a.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {
            "enabled": true, "smtp_host": "127.0.0.1", "smtp_port": 9,
            "smtp_security": "none", "from": "jms <jms@corp.example>",
            "site_url": a.url,
        }})),
    );
    // The form's cookie and token from A (the key is shared: B takes them).
    let form = browser()
        .get(format!("{}/password/forgot", a.url))
        .send()
        .unwrap();
    assert_eq!(form.status().as_u16(), 200);
    let cookie = form.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = form.text().unwrap();
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker).expect("the form's token") + marker.len();
    let csrf = page[start..start + page[start..].find('"').unwrap()].to_string();
    let ask = |server: &Server| -> u16 {
        browser()
            .post(format!("{}/password/forgot", server.url))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("login", "nobody")])
            .send()
            .unwrap()
            .status()
            .as_u16()
    };
    for i in 0..10 {
        let server = if i < 6 { &a } else { &b };
        assert_eq!(ask(server), 200, "request {} within the limit", i + 1);
    }
    assert_eq!(ask(&b), 429, "B counted A's requests");
    assert_eq!(ask(&a), 429, "and A B's");
}
