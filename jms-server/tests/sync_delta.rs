//! Deltas and long-polls of the sync API against a real server: a bastion
//! that holds a version the server still has history for gets a signed
//! delta that turns its bundle into the current one; one that is current
//! and asks to wait is answered as soon as the policy changes, or with 304
//! when the time is up; a bastion from before a server restart gets the
//! full bundle.

mod common;

use std::time::Duration;

use common::{enrolled, outcome, Server, SyncBastion};
use jms_sync::bundle::{self, TransportKey};
use reqwest::blocking::Client;

/// What one bundle request got: status, `x-jms-bundle-kind`, opened body.
struct Got {
    status: u16,
    kind: String,
    signed: Vec<u8>,
}

fn request(url: &str, bastion: &SyncBastion, since: u64, wait: u64) -> Got {
    let transport = TransportKey::generate();
    let mut query = format!("since={since}&transport={}", transport.public_hex());
    if wait > 0 {
        query.push_str(&format!("&wait={wait}"));
    }
    let path = "/api/v1/sync/bundle";
    let mut request = Client::builder()
        .timeout(Duration::from_secs(wait + 30))
        .build()
        .unwrap()
        .get(format!("{url}{path}?{query}"));
    for (name, value) in bastion.sign("GET", path, &query, b"") {
        request = request.header(name, value);
    }
    let response = request.send().expect("the server answers");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get(jms_sync::auth::headers::BUNDLE_KIND)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response.bytes().unwrap().to_vec();
    let signed = if status == 200 {
        transport.open(&body).expect("sealed to our transport key")
    } else {
        body
    };
    Got {
        status,
        kind,
        signed,
    }
}

fn apply_ok(server: &Server, args: &[&str]) {
    let out = server.jmsctl(args);
    let (code, _, stderr) = outcome(&out);
    assert_eq!(code, 0, "jmsctl {args:?}: {stderr}");
}

#[test]
fn a_bastion_one_change_behind_gets_a_signed_delta_that_makes_the_current_bundle() {
    let server = Server::start();
    apply_ok(&server, &["policy", "apply", common::EXAMPLE]);
    let bastion = enrolled(&server, "b1");
    let first = request(&server.url, &bastion, 0, 0);
    assert_eq!((first.status, first.kind.as_str()), (200, "full"));
    let mut held = bundle::verify(&first.signed, &bastion.server_key, 0).unwrap();

    apply_ok(&server, &["user", "add", "zed", "--name", "Zed"]);
    apply_ok(
        &server,
        &["settings", "set", "security.lockout_threshold", "2"],
    );
    let got = request(&server.url, &bastion, held.version, 0);
    assert_eq!(
        (got.status, got.kind.as_str()),
        (200, "delta"),
        "a bastion one change behind gets a delta"
    );
    let delta = bundle::verify_delta(&got.signed, &bastion.server_key, held.version)
        .expect("a genuine delta from the version held");
    assert_eq!(delta.to_version, server.version());
    assert!(
        got.signed.len() < first.signed.len(),
        "the delta ({} bytes) is smaller than the full bundle ({} bytes)",
        got.signed.len(),
        first.signed.len()
    );
    delta.apply(&mut held).unwrap();
    let full = request(&server.url, &bastion, 0, 0);
    let current = bundle::verify(&full.signed, &bastion.server_key, 0).unwrap();
    assert_eq!(held.version, current.version);
    assert_eq!(
        serde_json::to_value(&held.policy).unwrap(),
        serde_json::to_value(&current.policy).unwrap(),
        "bundle + delta = the current bundle"
    );
    assert_eq!(held.ids, current.ids, "the new user's uid came with it");
    assert_eq!(held.settings["security"]["lockout_threshold"], 2);

    // Removals travel too.
    let (status, body) = server.admin("DELETE", "/api/v1/users/zed", None);
    assert_eq!(status, 204, "{body}");
    let got = request(&server.url, &bastion, held.version, 0);
    let delta = bundle::verify_delta(&got.signed, &bastion.server_key, held.version).unwrap();
    assert!(delta
        .remove
        .iter()
        .any(|r| r.kind == bundle::EntityKind::User && r.name == "zed"));
}

#[test]
fn a_long_poll_is_answered_when_the_policy_changes_or_with_304_when_time_is_up() {
    let server = Server::start();
    apply_ok(&server, &["policy", "apply", common::EXAMPLE]);
    let bastion = enrolled(&server, "b1");
    let version = server.version();

    let quiet = request(&server.url, &bastion, version, 1);
    assert_eq!(quiet.status, 304, "nothing changed within the wait");

    let url = server.url.clone();
    let waiting = std::thread::spawn(move || {
        let got = request(&url, &bastion, version, 60);
        (got, bastion)
    });
    // The change lands while the request is held (or before it arrives:
    // either way the answer is the new version, never a 304).
    std::thread::sleep(Duration::from_millis(300));
    apply_ok(&server, &["user", "add", "zed"]);
    let (got, bastion) = waiting.join().unwrap();
    assert_eq!(got.status, 200, "the held request gets the change");
    let delta = bundle::verify_delta(&got.signed, &bastion.server_key, version).unwrap();
    assert!(delta.upsert.users.iter().any(|u| u.username == "zed"));

    let too_long = request(&server.url, &bastion, version, 61);
    assert_eq!(too_long.status, 400, "wait is at most 60 s");
}

#[test]
fn after_a_server_restart_a_bastion_gets_the_full_bundle() {
    let mut server = Server::start();
    apply_ok(&server, &["policy", "apply", common::EXAMPLE]);
    let bastion = enrolled(&server, "b1");
    let before = server.version();
    apply_ok(&server, &["user", "add", "zed"]);
    server.restart();
    let got = request(&server.url, &bastion, before, 0);
    assert_eq!(
        (got.status, got.kind.as_str()),
        (200, "full"),
        "no history from before the restart: the full bundle"
    );
    bundle::verify(&got.signed, &bastion.server_key, before).unwrap();
}
