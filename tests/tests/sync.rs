//! jms-agentd with the central policy source against a real jms-server:
//! enroll with a one-time token, get the policy into the NSS cache, pick
//! up a change within a poll, refuse a tampered bundle on disk at restart,
//! and fail closed when no fresh policy can be had. Runs as root (CI does).

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use jms_e2e::agentd::{enrolled_agentd, shared_temp_dir, stored_events, Agentd, EXAMPLE_POLICY};
use jms_e2e::central::Central;

#[test]
fn a_bastion_enrolls_follows_the_server_and_refuses_a_tampered_bundle() {
    let dir = shared_temp_dir();
    let mut central = Central::start();
    central.jmsctl(&["policy", "apply", EXAMPLE_POLICY]);
    let token = central.enrollment_token();

    let bastion_dir = dir.path().join("bastion");
    std::fs::create_dir(&bastion_dir).unwrap();
    let mut bastion = Agentd::new(&bastion_dir, &central.url);

    let out = bastion.enroll(&central.url, &token);
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(bastion.state().join("bastion.key")),
        0o600,
        "private key 0600"
    );
    assert_eq!(mode(bastion.state().join("central.json")), 0o600);
    let again = bastion.enroll(&central.url, &token);
    assert!(!again.status.success(), "a token works once");

    // The policy arrives in the NSS cache.
    bastion.start();
    assert!(
        bastion.has_user("alice"),
        "alice published at start:\n{}",
        bastion.log()
    );
    assert!(!bastion.has_user("zed"));
    assert_eq!(
        mode(bastion.state().join("bundle.jms")),
        0o600,
        "last good bundle kept 0600"
    );

    // A change on the server shows up within a poll.
    central.jmsctl(&["user", "add", "zed", "--name", "Zed"]);
    bastion.wait_for("zed in the NSS cache", || bastion.has_user("zed"));
    bastion.stop();

    // The change came as a delta, kept beside the full bundle.
    assert!(
        bastion.state().join("deltas.jms").exists(),
        "the delta is kept on disk:\n{}",
        bastion.log()
    );

    // A bundle altered on disk is refused at restart; the server gives a
    // fresh one.
    let bundle_path = bastion.state().join("bundle.jms");
    let mut bytes = std::fs::read(&bundle_path).unwrap();
    let at = bytes.windows(5).rposition(|w| w == b"alice").unwrap();
    bytes[at] = b'A';
    std::fs::write(&bundle_path, &bytes).unwrap();
    bastion.start();
    assert!(
        bastion.log().contains("refused"),
        "the tampered bundle is refused:\n{}",
        bastion.log()
    );
    assert!(bastion.has_user("zed") && bastion.has_user("alice"));
    assert_ne!(
        std::fs::read(&bundle_path).unwrap(),
        bytes,
        "replaced by a good one"
    );
    bastion.stop();

    // Tampered again with the server down: no policy to trust, so jms users
    // are refused (the cache lists none) — fail closed.
    central.stop();
    let mut bytes = std::fs::read(&bundle_path).unwrap();
    let last = bytes.len() - 2;
    bytes[last] ^= 1;
    std::fs::write(&bundle_path, &bytes).unwrap();
    bastion.start();
    assert!(
        !bastion.has_user("alice"),
        "failed closed: no jms user published\n{}",
        bastion.log()
    );
    assert!(bastion.log().contains("refused"), "{}", bastion.log());
}

#[test]
fn spooled_events_reach_the_server_once_and_the_segment_is_deleted() {
    let (_dir, central, mut bastion) = enrolled_agentd(false);

    // A sealed segment as the spool writes it (one line without an id: its
    // key is derived from the segment and line), and an open one.
    let spool = bastion.state().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o700)).unwrap();
    let event = |id: Option<&str>, command: &str| {
        let mut v = serde_json::json!({
            "time": "2026-01-01T00:00:00.000Z", "event": "command",
            "session": "s1", "user": "alice", "asset": "web01", "account": "root",
            "username": "root", "command": command, "kind": "exec",
            "decision": "allow", "filter": null,
        });
        if let Some(id) = id {
            v["id"] = id.into();
        }
        format!("{v}\n")
    };
    let segment = spool.join("1767225600000-000001.jsonl");
    let sealed = format!(
        "{}{}{}",
        event(Some("ev-1"), "uptime"),
        event(None, "id"),
        event(Some("ev-3"), "w")
    );
    std::fs::write(&segment, &sealed).unwrap();
    std::fs::write(spool.join("current.jsonl"), event(Some("ev-4"), "ls")).unwrap();
    let expected = vec![
        "ev-1".to_string(),
        "ev-3".into(),
        "ev-4".into(),
        "spool:1767225600000-000001.jsonl:2".into(),
    ];

    let spool_empty = || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok())
            .all(|e| !e.file_name().to_string_lossy().ends_with(".jsonl"))
    };
    bastion.start();
    bastion.wait_for("the spool to drain", spool_empty);
    assert_eq!(stored_events(&central), expected, "each event stored once");
    bastion.stop();

    // The same segment again (as if agentd had died before deleting it):
    // sent again, stored nothing twice, deleted again.
    std::fs::write(&segment, &sealed).unwrap();
    bastion.start();
    bastion.wait_for("the resent segment to be deleted", || !segment.exists());
    assert_eq!(
        stored_events(&central),
        expected,
        "a resend stores nothing twice"
    );
    assert!(
        bastion.log().contains("spooled events uploaded"),
        "{}",
        bastion.log()
    );
}
