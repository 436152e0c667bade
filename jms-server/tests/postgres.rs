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
        .query("SELECT version FROM schema_migrations ORDER BY version", &[])
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
