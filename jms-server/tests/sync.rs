//! The sync API against a real server: enrollment with one-time tokens,
//! signed bundle requests (unsigned, replayed, foreign-key, stale and
//! unknown-bastion requests refused; 304 when current; every answer signed
//! for its request) and exactly-once event ingest.

mod common;

use common::{
    bastion_token, enroll, enrolled, new_bastion_key, outcome, send_with_headers, sign_request,
    Server, SyncBastion,
};
use jms_sync::bundle::{self, TransportKey};
use serde_json::{json, Value};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn get_bundle(server: &Server, bastion: &SyncBastion, since: u64) -> (u16, Option<bundle::Bundle>) {
    let transport = TransportKey::generate();
    let query = format!("since={since}&transport={}", transport.public_hex());
    let (status, body) = bastion.send(server, "GET", "/api/v1/sync/bundle", &query, b"");
    if status != 200 {
        return (status, None);
    }
    let signed = transport.open(&body).expect("sealed to our transport key");
    let bundle = bundle::verify(&signed, &bastion.server_key, since).expect("a genuine bundle");
    (status, Some(bundle))
}

#[test]
fn an_enrollment_token_works_once() {
    let server = Server::start();
    let token = bastion_token(&server, "1h");
    let (status, body) = enroll(&server, &token, "bastion-1", &new_bastion_key());
    assert_eq!(status, 200, "first use enrolls: {body}");
    assert_eq!(body["server_public_key"].as_str().unwrap().len(), 64);
    let (status, body) = enroll(&server, &token, "bastion-2", &new_bastion_key());
    assert_eq!(status, 401, "second use refused: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    let (status, _) = enroll(&server, "jmsb_nope", "bastion-3", &new_bastion_key());
    assert_eq!(status, 401, "an unknown token is refused");
}

#[test]
fn an_expired_enrollment_token_is_refused() {
    let server = Server::start();
    let token = bastion_token(&server, "1s");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (status, body) = enroll(&server, &token, "late", &new_bastion_key());
    assert_eq!(status, 401, "expired token refused: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

#[test]
fn enrollment_checks_its_input() {
    let server = Server::start();
    let token = bastion_token(&server, "1h");
    let (status, _) = enroll(&server, &token, "bad name!", &new_bastion_key());
    assert_eq!(status, 400, "a bad bastion name is refused");
    let (status, _) = server.call(
        None,
        "POST",
        "/api/v1/sync/enroll",
        Some(json!({"token": token, "bastion_name": "b", "public_key": "abcd"})),
    );
    assert_eq!(status, 400, "a short key is refused");
    // Refusals did not spend the token.
    let (status, body) = enroll(&server, &token, "good", &new_bastion_key());
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_signed_bundle_request_gets_the_policy_and_304_when_current() {
    let server = Server::start();
    let out = server.jmsctl(&["policy", "apply", common::EXAMPLE]);
    assert_eq!(outcome(&out).0, 0, "apply: {}", outcome(&out).2);
    let bastion = enrolled(&server, "b1");
    let version = server.version();
    let (status, bundle) = get_bundle(&server, &bastion, 0);
    assert_eq!(status, 200);
    let bundle = bundle.unwrap();
    assert_eq!(bundle.version, version);
    assert!(bundle.policy.users.iter().any(|u| u.username == "alice"));
    let root = bundle
        .policy
        .assets
        .iter()
        .find(|a| a.name == "web01")
        .unwrap()
        .accounts
        .iter()
        .find(|a| a.name == "root")
        .unwrap();
    assert_eq!(
        root.secret.as_ref().unwrap().expose(),
        "demo-only-root-pw",
        "secrets travel in the (sealed) bundle"
    );
    assert!(bundle.ids.users.contains_key("alice"), "server uids travel");
    // The bastions' primary group has a server gid too, distinct from every
    // user group's, so no bastion picks one locally that could collide.
    let primary = bundle.ids.groups["jms-users"];
    let others: Vec<u32> = bundle
        .ids
        .groups
        .iter()
        .filter(|(name, _)| *name != "jms-users")
        .map(|(_, gid)| *gid)
        .collect();
    assert!(
        !others.is_empty() && !others.contains(&primary),
        "{:?}",
        bundle.ids.groups
    );
    let (status, _) = get_bundle(&server, &bastion, version);
    assert_eq!(status, 304, "current version: not modified");
}

#[test]
fn unsigned_replayed_foreign_and_stale_requests_are_refused() {
    let server = Server::start();
    let bastion = enrolled(&server, "b1");
    let transport = TransportKey::generate();
    let query = format!("since=0&transport={}", transport.public_hex());
    let path_query = format!("/api/v1/sync/bundle?{query}");
    let get = |headers: &[(&'static str, String)]| {
        send_with_headers(&server, "GET", &path_query, headers, b"").0
    };
    let path = "/api/v1/sync/bundle";

    assert_eq!(get(&[]), 401, "unsigned");

    let headers = sign_request(&bastion.key, bastion.id, "GET", path, &query, b"", now());
    assert_ne!(get(&headers), 401, "first use of a signed request");
    assert_eq!(get(&headers), 401, "the same request replayed");

    let foreign = new_bastion_key();
    let headers = sign_request(&foreign, bastion.id, "GET", path, &query, b"", now());
    assert_eq!(get(&headers), 401, "signed by another key");

    let headers = sign_request(
        &bastion.key,
        bastion.id + 100,
        "GET",
        path,
        &query,
        b"",
        now(),
    );
    assert_eq!(get(&headers), 401, "unknown bastion");

    let headers = sign_request(
        &bastion.key,
        bastion.id,
        "GET",
        path,
        &query,
        b"",
        now() - 600,
    );
    assert_eq!(get(&headers), 401, "timestamp outside the window");

    let headers = sign_request(
        &bastion.key,
        bastion.id,
        "GET",
        path,
        "since=5&transport=00",
        b"",
        now(),
    );
    assert_eq!(get(&headers), 401, "the signature covers the query");

    // An admin API token is no bastion signature.
    let (status, _) = server.admin("GET", &path_query, None);
    assert_eq!(status, 401);
}

#[test]
fn the_same_event_batch_twice_is_stored_once() {
    let server = Server::start();
    let bastion = enrolled(&server, "b1");
    let batch = json!({"events": [
        {"id": "e1", "time": "2026-01-01T00:00:00.000Z", "event": "command",
         "session": "s1", "user": "alice", "asset": "web01", "account": "root",
         "username": "root", "command": "uptime", "kind": "interactive", "decision": "allow", "filter": null},
        {"id": "e2", "time": "2026-01-01T00:00:01.000Z", "event": "session_denied",
         "user": "bob", "command_line": "x", "reason": "no grant", "client": null},
    ]});
    let body = serde_json::to_vec(&batch).unwrap();
    let post = |body: &[u8]| {
        let (status, answer) = bastion.send(&server, "POST", "/api/v1/sync/events", "", body);
        (status, serde_json::from_slice::<Value>(&answer).unwrap())
    };
    let (status, first) = post(&body);
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["accepted"], json!(["e1", "e2"]));
    assert_eq!(first["stored"], 2);
    let (status, again) = post(&body);
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        again["accepted"],
        json!(["e1", "e2"]),
        "a retry is accepted"
    );
    assert_eq!(again["stored"], 0, "and stores nothing twice");

    // A body altered after signing is refused.
    let headers = sign_request(
        &bastion.key,
        bastion.id,
        "POST",
        "/api/v1/sync/events",
        "",
        &body,
        now(),
    );
    let mut altered = body.clone();
    altered.extend_from_slice(b" ");
    let (status, _) = send_with_headers(&server, "POST", "/api/v1/sync/events", &headers, &altered);
    assert_eq!(status, 401, "the signature covers the body");

    let admin = common::services(&server.data).audit;
    assert_eq!(admin.read().unwrap().count_events(None).unwrap(), 2);
}

/// Each event is stored as the bastion sent it (its JSON text, byte for
/// byte: key order, spacing and escapes kept), and an upload with an event
/// lacking a string `id`, `event` or `time` is refused whole, naming it.
#[test]
fn events_are_stored_as_sent_and_malformed_ones_refused_by_field() {
    let server = Server::start();
    let bastion = enrolled(&server, "b1");
    let event = r#"{"time":"2026-01-01T00:00:00.000Z", "id":"e\u0031","event":"command","session":"s1","user":"alice","asset":"web01","account":"root","command":"caf\u00e9 \"x\"","kind":"interactive","decision":"allow","later":{"a":[1,2.5e3,null]}}"#;
    let body = format!("{{ \"events\": [ {event} ] }}");
    let (status, answer) = bastion.send(&server, "POST", "/api/v1/sync/events", "", &body);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["accepted"], json!(["e1"]), "the key unescaped");
    let stored = common::query_text(
        &server.data,
        "SELECT body FROM events WHERE idempotency_key = 'e1'",
    );
    assert_eq!(stored, event);
    let command = common::query_text(&server.data, "SELECT input FROM commands");
    assert_eq!(command, "café \"x\"", "projected from the same text");

    let long = "x".repeat(257);
    for (events, message) in [
        ("[5]", "events[0]: `id` must be a non-empty string"),
        (
            r#"[{"id":"a","event":"command","time":"t"},[]]"#,
            "events[1]: `id` must be a non-empty string",
        ),
        (
            r#"[{"id":"a","event":"command","time":7}]"#,
            "events[0]: `time` must be a non-empty string",
        ),
        (
            r#"[{"id":"a","event":"","time":"t"}]"#,
            "events[0]: `event` must be a non-empty string",
        ),
        (
            r#"[{"id":"a","id":{"x":1},"event":"command","time":"t"}]"#,
            "events[0]: `id` must be a non-empty string",
        ),
        (
            &format!(r#"[{{"id":"{long}","event":"command","time":"t"}}]"#),
            "events[0]: `id` must be a non-empty string",
        ),
    ] {
        let body = format!(r#"{{"events":{events}}}"#);
        let (status, answer) = bastion.send(&server, "POST", "/api/v1/sync/events", "", &body);
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(status, 400, "{events}: {answer}");
        assert_eq!(answer["error"], message, "{events}");
    }
    let admin = common::services(&server.data).audit;
    assert_eq!(admin.read().unwrap().count_events(None).unwrap(), 1);
}

/// Sends a request signed by `bastion`; returns the status, the headers
/// and the body, and the binding its answer must be signed for.
fn signed_exchange(
    server: &Server,
    bastion: &SyncBastion,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>, String) {
    let headers = bastion.sign(method, path, query, body);
    let nonce = headers
        .iter()
        .find(|(k, _)| *k == jms_sync::auth::headers::NONCE)
        .unwrap()
        .1
        .clone();
    let http = reqwest::blocking::Client::new();
    let url = format!("{}{path}?{query}", server.url);
    let mut request = http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    for (k, v) in &headers {
        request = request.header(*k, v);
    }
    if !body.is_empty() {
        request = request
            .header("content-type", "application/json")
            .body(body.to_vec());
    }
    let response = request.send().expect("server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().unwrap().to_vec(), nonce)
}

#[test]
fn every_answer_to_a_signed_request_is_signed_for_that_request() {
    use jms_sync::bundle::{verify_answer, AnswerBinding, AnswerError};
    let server = Server::start();
    let out = server.jmsctl(&["policy", "apply", common::EXAMPLE]);
    assert_eq!(outcome(&out).0, 0, "apply: {}", outcome(&out).2);
    let bastion = enrolled(&server, "b1");
    let version = server.version();
    let check = |method: &str, path: &str, query: &str, body: &[u8], want: u16| {
        let (status, headers, answer, nonce) =
            signed_exchange(&server, &bastion, method, path, query, body);
        assert_eq!(status, want, "{method} {path}?{query}");
        let header = |name: &str| headers.get(name).map(|v| v.as_bytes().to_vec());
        let (v, sig) = (
            header(jms_sync::auth::headers::VERSION),
            header(jms_sync::auth::headers::ANSWER_SIGNATURE),
        );
        let binding = AnswerBinding {
            bastion_id: bastion.id,
            nonce: &nonce,
            method,
            path,
            query,
        };
        let verified = verify_answer(
            &bastion.server_key,
            &binding,
            status,
            v.as_deref(),
            &answer,
            sig.as_deref(),
        );
        let replayed = verify_answer(
            &bastion.server_key,
            &AnswerBinding {
                nonce: "00000000000000000000000000000000",
                ..binding
            },
            status,
            v.as_deref(),
            &answer,
            sig.as_deref(),
        );
        assert_eq!(
            replayed,
            Err(AnswerError::BadSignature),
            "{method} {path}: bound to its nonce"
        );
        verified.unwrap_or_else(|e| panic!("{method} {path}?{query} ({status}): {e}"))
    };
    let transport = TransportKey::generate().public_hex();
    assert_eq!(
        check(
            "GET",
            "/api/v1/sync/bundle",
            &format!("since=0&transport={transport}"),
            b"",
            200
        ),
        Some(version),
        "a bundle answer names its version"
    );
    assert_eq!(
        check(
            "GET",
            "/api/v1/sync/bundle",
            &format!("since={version}&transport={transport}"),
            b"",
            304
        ),
        Some(version),
        "a 304 names the server's version"
    );
    assert_eq!(
        check("GET", "/api/v1/sync/control", "wait=0", b"", 200),
        None,
        "control orders are signed"
    );
    check("POST", "/api/v1/sync/events", "", br#"{"events":[]}"#, 200);
    // A refusal after authentication is signed too (the bastion treats it
    // as a failure either way).
    check("GET", "/api/v1/sync/control", "wait=999", b"", 400);

    // An unauthenticated request gets no signed answer.
    let response = reqwest::blocking::Client::new()
        .get(format!("{}/api/v1/sync/control?wait=0", server.url))
        .send()
        .unwrap();
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    assert_eq!(status, 401);
    assert!(
        headers
            .get(jms_sync::auth::headers::ANSWER_SIGNATURE)
            .is_none(),
        "an answer to an unauthenticated request is not signed"
    );
}
