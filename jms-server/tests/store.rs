//! The store on disk: migrations, the key file, secrets sealed at rest.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use jms_core::model::{Account, Asset, AssetProtocol, Protocol, SecretType, User};
use jms_server::crypto::KEY_FILE;
use jms_server::services::{Services, DB_FILE};
use jms_server::store::migrations::{self, MIGRATIONS};
use jms_server::store::{SqliteStore, StoreError};
use rusqlite::Connection;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn migrations_apply_on_an_empty_database_and_are_idempotent() {
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(
            m.version as usize,
            i + 1,
            "migrations are numbered 1, 2, … without gaps"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jms.db");
    SqliteStore::open(&path).unwrap();
    SqliteStore::open(&path).unwrap();
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        migrations::apply(&conn).unwrap(),
        0,
        "nothing left to apply"
    );
    let versions: Vec<u32> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(versions, (1..=MIGRATIONS.len() as u32).collect::<Vec<_>>());
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    for table in [
        "users",
        "user_groups",
        "user_group_members",
        "nodes",
        "assets",
        "accounts",
        "grants",
        "command_filters",
        "bastions",
        "sessions",
        "commands",
        "transfers",
        "recordings",
        "api_tokens",
        "oplog",
        "settings",
        "policy_state",
        "unix_ids",
    ] {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 1, "table {table} exists");
    }
}

#[test]
fn a_database_from_a_newer_server_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jms.db");
    SqliteStore::open(&path).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schema_migrations VALUES (999, 'future', 'now')",
        [],
    )
    .unwrap();
    drop(conn);
    match SqliteStore::open(&path) {
        Err(StoreError::TooNew { found: 999, .. }) => {}
        Err(other) => panic!("expected TooNew, got {other}"),
        Ok(_) => panic!("expected TooNew, got a store"),
    }
}

#[test]
fn secrets_are_ciphertext_in_the_database_and_the_key_file_is_0600() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let admin = Services::open(&data).unwrap().policy;
    assert_eq!(mode(&data), 0o700, "data directory");
    assert_eq!(mode(&data.join(KEY_FILE)), 0o600, "key file");
    assert_eq!(mode(&data.join(DB_FILE)), 0o600, "database");
    assert_eq!(fs::metadata(data.join(KEY_FILE)).unwrap().len(), 32);

    let plaintext = "correct-horse-battery-staple";
    let totp = "JBSWY3DPEHPK3PXP";
    admin
        .change("test", false, |doc| {
            doc.users.push(User {
                username: "alice".into(),
                name: String::new(),
                email: None,
                is_active: true,
                date_expired: None,
                groups: vec![],
                public_keys: vec![],
                password_hash: None,
                totp_secret: Some(jms_core::model::Secret::new(totp)),
                login_acl: Default::default(),
            });
            doc.assets.push(Asset {
                name: "web01".into(),
                address: "10.0.0.1".into(),
                protocols: vec![AssetProtocol {
                    name: Protocol::Ssh,
                    port: 22,
                }],
                nodes: vec![],
                is_active: true,
                accounts: vec![Account {
                    name: "root".into(),
                    username: "root".into(),
                    secret_type: SecretType::Password,
                    secret: Some(jms_core::model::Secret::new(plaintext)),
                    secret_file: None,
                    privileged: false,
                    shell: None,
                    groups: Vec::new(),
                    sudo: None,
                }],
                host_keys: vec![],
                zone: None,
            });
            Ok(())
        })
        .unwrap();

    let conn = Connection::open(data.join(DB_FILE)).unwrap();
    let sealed: Vec<u8> = conn
        .query_row("SELECT secret FROM accounts", [], |r| r.get(0))
        .unwrap();
    assert!(
        sealed.len() > plaintext.len(),
        "sealed: nonce and tag added"
    );
    assert!(!sealed
        .windows(plaintext.len())
        .any(|w| w == plaintext.as_bytes()));
    drop(conn);
    drop(admin);
    // Nowhere on disk in the clear: database, WAL, anything in the directory.
    for entry in fs::read_dir(&data).unwrap() {
        let bytes = fs::read(entry.unwrap().path()).unwrap();
        for secret in [plaintext, totp] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in the clear"
            );
        }
    }
    // And the server opens them again with the same key.
    let admin = Services::open(&data).unwrap().policy;
    let doc = admin.document(true).unwrap();
    assert_eq!(
        doc.assets[0].accounts[0].secret.as_ref().unwrap().expose(),
        plaintext
    );
    assert_eq!(doc.users[0].totp_secret.as_ref().unwrap().expose(), totp);
    assert!(admin.document(false).unwrap().assets[0].accounts[0]
        .secret
        .is_none());
}

#[test]
fn unsafe_permissions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    Services::open(&data).unwrap();
    fs::set_permissions(data.join(KEY_FILE), fs::Permissions::from_mode(0o640)).unwrap();
    let err = Services::open(&data)
        .err()
        .expect("a readable key file is refused")
        .to_string();
    assert!(err.contains("too open"), "{err}");
    fs::set_permissions(data.join(KEY_FILE), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(data.join(DB_FILE), fs::Permissions::from_mode(0o644)).unwrap();
    let err = Services::open(&data)
        .err()
        .expect("a readable database is refused")
        .to_string();
    assert!(err.contains("too open"), "{err}");
    fs::set_permissions(data.join(DB_FILE), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o777)).unwrap();
    let err = Services::open(&data)
        .err()
        .expect("a world-writable data dir is refused")
        .to_string();
    assert!(err.contains("others may write"), "{err}");
}
