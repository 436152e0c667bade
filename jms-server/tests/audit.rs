//! The audit trail against a real server: uploaded events projected into
//! sessions, commands and transfers exactly once and in any order; the
//! admin API's filters and its refusals of bad input; the resumable
//! recording upload (resume, wrong offset, bad checksum, download); and
//! `jmsctl session|command|recording`.

mod common;

use common::{enrolled, outcome, Server};
use jms_sync::bundle::hex;
use reqwest::blocking::Client;
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};

fn scope(session: &str, user: &str, asset: &str) -> Value {
    json!({"session": session, "user": user, "asset": asset, "account": "root", "username": "root"})
}

fn event(id: &str, time: &str, kind: &str, scope: &Value, fields: Value) -> Value {
    let mut e = scope.clone();
    e["id"] = id.into();
    e["time"] = time.into();
    e["event"] = kind.into();
    for (k, v) in fields.as_object().unwrap() {
        e[k] = v.clone();
    }
    e
}

/// One shell session of alice on web01 (start, two commands, a transfer,
/// end) and an exec session of bob on db01 that is still going.
fn sample_events() -> Vec<Value> {
    let s1 = scope("s-1", "alice", "web01");
    let s2 = scope("s-2", "bob", "db01");
    vec![
        event(
            "e1",
            "2026-03-01T10:00:00.000Z",
            "session_start",
            &s1,
            json!({"kind": "shell", "protocol": "ssh", "client": "10.0.0.7", "command": null, "recording": "s-1.cast"}),
        ),
        event(
            "e2",
            "2026-03-01T10:00:05.500Z",
            "command",
            &s1,
            json!({"command": "uptime", "kind": "interactive", "decision": "allow", "filter": null}),
        ),
        event(
            "e3",
            "2026-03-01T10:00:09.000Z",
            "command",
            &s1,
            json!({"command": "rm -rf /srv", "kind": "interactive", "decision": "deny", "filter": "no-rm", "typed_by": "alice,bob"}),
        ),
        event(
            "e4",
            "2026-03-01T10:00:20.000Z",
            "transfer",
            &s1,
            json!({"via": "sftp", "operation": "upload", "path": "/tmp/a.txt", "to": null, "size": 12, "result": "ok"}),
        ),
        event(
            "e5",
            "2026-03-01T10:01:00.000Z",
            "session_end",
            &s1,
            json!({"exit_status": 0, "reason": null, "duration_ms": 60000, "bytes_in": 100, "bytes_out": 2000, "recording": "s-1.cast", "recording_truncated": false}),
        ),
        event(
            "e6",
            "2026-03-02T08:00:00.000Z",
            "session_start",
            &s2,
            json!({"kind": "exec", "protocol": "ssh", "client": "10.0.0.8", "command": "psql -c 'select 1'", "recording": "s-2.cast"}),
        ),
        event(
            "e7",
            "2026-03-02T07:59:59.000Z",
            "command",
            &s2,
            json!({"command": "psql -c 'select 1'", "kind": "exec", "decision": "allow", "filter": null}),
        ),
        event(
            "e8",
            "2026-03-02T09:00:00.000Z",
            "login",
            &json!({}),
            json!({"user": "bob", "rhost": "10.0.0.8", "service": "sshd", "outcome": "success", "reason": null}),
        ),
    ]
}

fn get(server: &Server, path: &str) -> Value {
    server.expect(200, "GET", path, None)
}

#[test]
fn events_project_into_sessions_commands_and_transfers_in_any_order_once() {
    let server = Server::start();
    let bastion = enrolled(&server, "bastion-1");
    let events = sample_events();
    // Out of order, split across batches, with a retried batch.
    let reversed: Vec<Value> = events.iter().rev().cloned().collect();
    assert_eq!(bastion.upload(&server, &reversed[..4]), 4);
    assert_eq!(
        bastion.upload(&server, &reversed[..4]),
        0,
        "a retry stores nothing"
    );
    assert_eq!(bastion.upload(&server, &events), 4, "only the rest is new");
    assert_eq!(bastion.upload(&server, &events), 0);

    let page = get(&server, "/api/v1/sessions");
    assert_eq!(page["total"], 2, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items[0]["id"], "s-2", "newest first: {page}");
    assert_eq!(items[1]["id"], "s-1");
    let s1 = &items[1];
    assert_eq!(s1["user"], "alice");
    assert_eq!(s1["asset"], "web01");
    assert_eq!(s1["account"], "root");
    assert_eq!(s1["login"], "root");
    assert_eq!(s1["bastion"], "bastion-1");
    assert_eq!(s1["source_ip"], "10.0.0.7");
    assert_eq!(s1["status"], "ended");
    assert_eq!(s1["online"], false);
    assert_eq!(s1["duration_secs"], 60.0);
    assert_eq!(s1["exit_status"], 0);
    assert_eq!(s1["bytes_out"], 2000);
    assert_eq!(s1["command_count"], 2);
    assert_eq!(s1["transfer_count"], 1);
    assert_eq!(s1["has_recording"], false);
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(s1["started_at"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap()
    );
    let s2 = &items[0];
    assert_eq!(s2["status"], "online");
    assert_eq!(s2["kind"], "exec");
    assert_eq!(s2["command"], "psql -c 'select 1'");
    assert_eq!(s2["duration_secs"], Value::Null);

    let detail = get(&server, "/api/v1/sessions/s-1");
    let commands = detail["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 2, "each command once: {detail}");
    assert_eq!(commands[0]["command"], "uptime", "in the order typed");
    assert_eq!(commands[0]["offset_secs"], 5.5);
    assert_eq!(commands[1]["decision"], "deny");
    assert_eq!(commands[1]["filter"], "no-rm");
    assert_eq!(
        commands[0]["typed_by"],
        Value::Null,
        "the owner alone typed it"
    );
    assert_eq!(
        commands[1]["typed_by"], "alice,bob",
        "a write joiner's part in a command is kept"
    );
    assert_eq!(detail["transfers"][0]["path"], "/tmp/a.txt");
    assert_eq!(detail["transfers"][0]["ok"], true);
    assert_eq!(detail["transfers"][0]["size"], 12);
    assert_eq!(detail["recording"], Value::Null);
    // An exec command logged before its session started seeks to 0.
    let exec = get(&server, "/api/v1/commands?session=s-2");
    assert_eq!(exec["items"][0]["offset_secs"], 0.0, "{exec}");

    // The same events through a second bastion with the same session ids
    // do not touch the first bastion's sessions.
    let other = enrolled(&server, "bastion-2");
    let forged = vec![event(
        "x1",
        "2026-03-01T10:00:30.000Z",
        "command",
        &scope("s-1", "mallory", "web01"),
        json!({"command": "forged", "kind": "interactive", "decision": "allow", "filter": null}),
    )];
    assert_eq!(other.upload(&server, &forged), 1, "stored as an event");
    let detail = get(&server, "/api/v1/sessions/s-1");
    assert_eq!(detail["commands"].as_array().unwrap().len(), 2, "{detail}");
    assert_eq!(detail["user"], "alice");
}

#[test]
fn a_session_end_before_its_start_still_makes_one_whole_session() {
    let server = Server::start();
    let bastion = enrolled(&server, "b");
    let events = sample_events();
    assert_eq!(bastion.upload(&server, &[events[4].clone()]), 1);
    let early = get(&server, "/api/v1/sessions/s-1");
    assert_eq!(early["status"], "ended");
    assert_eq!(early["user"], "alice");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(early["started_at"].as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap(),
        "the start is implied by the end and its duration"
    );
    assert_eq!(bastion.upload(&server, &[events[2].clone()]), 1);
    assert_eq!(bastion.upload(&server, &events[..4]), 3);
    let detail = get(&server, "/api/v1/sessions/s-1");
    assert_eq!(detail["source_ip"], "10.0.0.7", "filled by the late start");
    assert_eq!(detail["kind"], "shell");
    assert_eq!(detail["commands"].as_array().unwrap().len(), 2);

    // A refusal with a session id closes the session an exec command opened.
    let denied = vec![
        event(
            "d1",
            "2026-03-03T00:00:00.000Z",
            "command",
            &scope("s-3", "carol", "web01"),
            json!({"command": "reboot", "kind": "exec", "decision": "deny", "filter": "no-reboot"}),
        ),
        json!({"id": "d2", "time": "2026-03-03T00:00:00.100Z", "event": "session_denied",
            "session": "s-3", "user": "carol", "command_line": "web01 reboot",
            "reason": "web01: command refused by filter no-reboot", "client": "10.0.0.9"}),
    ];
    assert_eq!(bastion.upload(&server, &denied), 2);
    let s3 = get(&server, "/api/v1/sessions/s-3");
    assert_eq!(s3["status"], "denied", "{s3}");
    assert_eq!(s3["online"], false);
    assert_eq!(s3["reason"], "web01: command refused by filter no-reboot");
    assert_eq!(s3["asset"], "web01");
}

#[test]
fn lists_filter_and_refuse_bad_input_with_400() {
    let server = Server::start();
    let bastion = enrolled(&server, "b");
    bastion.upload(&server, &sample_events());
    let total = |path: &str| get(&server, path)["total"].as_u64().unwrap();
    assert_eq!(total("/api/v1/sessions?user=alice"), 1);
    assert_eq!(total("/api/v1/sessions?user=nobody"), 0);
    assert_eq!(total("/api/v1/sessions?asset=db01"), 1);
    assert_eq!(total("/api/v1/sessions?account=root"), 2);
    assert_eq!(total("/api/v1/sessions?online=true"), 1);
    assert_eq!(total("/api/v1/sessions?online=false"), 1);
    assert_eq!(total("/api/v1/sessions?since=2026-03-02"), 1);
    assert_eq!(total("/api/v1/sessions?until=2026-03-02"), 1);
    assert_eq!(
        total("/api/v1/sessions?since=2026-03-01T00:00:00Z&until=2026-03-03T00:00:00Z"),
        2
    );
    assert_eq!(total("/api/v1/sessions?user="), 2, "empty means no filter");
    let page = get(&server, "/api/v1/sessions?limit=1&offset=1");
    assert_eq!(
        (
            page["total"].as_u64(),
            page["limit"].as_u64(),
            page["offset"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    assert_eq!(page["items"][0]["id"], "s-1");

    assert_eq!(total("/api/v1/commands"), 3);
    assert_eq!(total("/api/v1/commands?q=UPTIME"), 1, "case-insensitive");
    assert_eq!(
        total("/api/v1/commands?q=%25"),
        0,
        "LIKE wildcards are literal"
    );
    assert_eq!(total("/api/v1/commands?decision=deny"), 1);
    assert_eq!(total("/api/v1/commands?user=bob"), 1);
    assert_eq!(total("/api/v1/commands?asset=web01&decision=allow"), 1);
    assert_eq!(total("/api/v1/commands?session=s-1"), 2);
    assert_eq!(
        total("/api/v1/commands?since=2026-03-01T10:00:06Z&until=2026-03-02"),
        1
    );
    let newest = get(&server, "/api/v1/commands");
    assert_eq!(newest["items"][0]["session"], "s-2", "newest first");
    assert_eq!(total("/api/v1/transfers"), 1);
    assert_eq!(total("/api/v1/transfers?operation=download"), 0);
    assert_eq!(
        total("/api/v1/transfers?operation=upload&user=alice&session=s-1"),
        1
    );

    // The read-only token may read the audit trail.
    let (status, _) = server.call(Some(&server.read), "GET", "/api/v1/sessions", None);
    assert_eq!(status, 200);
    let (status, _) = server.call(None, "GET", "/api/v1/sessions", None);
    assert_eq!(status, 401);

    for path in [
        "/api/v1/sessions?online=maybe",
        "/api/v1/sessions?since=yesterday",
        "/api/v1/sessions?until=2026-13-01",
        "/api/v1/sessions?limit=0",
        "/api/v1/sessions?limit=abc",
        "/api/v1/sessions?offset=-1",
        "/api/v1/sessions?color=red",
        "/api/v1/commands?decision=maybe",
        "/api/v1/commands?since=x",
        "/api/v1/commands?limit=100000",
        "/api/v1/transfers?bogus=1",
        "/api/v1/transfers?until=soon",
        "/api/v1/sessions/..%2Fetc/recording",
    ] {
        let (status, body) = server.admin("GET", path, None);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}: {body}"
        );
    }
    let (status, body) = server.admin("GET", "/api/v1/sessions/nope", None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = server.admin("GET", "/api/v1/sessions/s-1/recording", None);
    assert_eq!(status, 404, "no recording yet: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("recording"),
        "{body}"
    );
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest(&SHA256, bytes).as_ref())
}

fn complete_body(size: usize, sha256: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"size": size, "sha256": sha256})).unwrap()
}

/// A recording of `size` bytes (asciicast-looking lines).
fn recording_bytes(size: usize) -> Vec<u8> {
    let mut text = String::from(
        "{\"version\": 2, \"width\": 80, \"height\": 24, \"timestamp\": 1767225600}\n",
    );
    let mut i = 0u64;
    while text.len() < size {
        text.push_str(&format!("[{}.000000, \"o\", \"line {i}\\r\\n\"]\n", i));
        i += 1;
    }
    text.truncate(size);
    text.into_bytes()
}

#[test]
fn recordings_upload_in_chunks_resume_and_are_checked() {
    let server = Server::start();
    let bastion = enrolled(&server, "b");
    bastion.upload(&server, &sample_events());
    let path = "/api/v1/sync/recordings/s-1";
    let bytes = recording_bytes(2_500_000);
    let chunk = 1 << 20;

    let (status, state) = bastion.send_json(&server, "GET", path, "", Vec::new());
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        (state["offset"].as_u64(), state["complete"].as_bool()),
        (Some(0), Some(false))
    );

    // First chunk, then a "crash": the server keeps the partial.
    let (status, answer) = bastion.send_json(&server, "PUT", path, "offset=0", &bytes[..chunk]);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["offset"], chunk);
    let partial = server.data.join("recordings/s-1.cast.part");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&partial).unwrap().permissions().mode() & 0o777,
        0o600,
        "partials are 0600"
    );
    // A resend of the same chunk (the answer was lost): 409 with the offset.
    let (status, answer) = bastion.send_json(&server, "PUT", path, "offset=0", &bytes[..chunk]);
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["offset"], chunk, "where to resume: {answer}");
    let (status, answer) = bastion.send_json(&server, "PUT", path, "offset=5", b"xx");
    assert_eq!(
        (status, answer["offset"].as_u64()),
        (409, Some(chunk as u64))
    );
    // Too big a chunk, a bad offset, an unsigned request.
    let (status, _) = bastion.send_json(
        &server,
        "PUT",
        path,
        &format!("offset={chunk}"),
        vec![b'x'; chunk + 1],
    );
    assert_eq!(status, 413);
    let (status, _) = bastion.send_json(&server, "PUT", path, "offset=abc", b"x");
    assert_eq!(status, 400);
    let (status, _) = bastion.send_json(&server, "PUT", path, "", b"x");
    assert_eq!(status, 400, "offset is required");
    let (status, _) = server.call(None, "GET", path, None);
    assert_eq!(status, 401);
    let (status, _) = bastion.send_json(
        &server,
        "GET",
        "/api/v1/sync/recordings/..hidden",
        "",
        Vec::new(),
    );
    assert_eq!(status, 400);

    // Resume from the server's offset.
    let (_, state) = bastion.send_json(&server, "GET", path, "", Vec::new());
    let mut offset = state["offset"].as_u64().unwrap() as usize;
    assert_eq!(offset, chunk);
    while offset < bytes.len() {
        let end = (offset + chunk).min(bytes.len());
        let (status, answer) = bastion.send_json(
            &server,
            "PUT",
            path,
            &format!("offset={offset}"),
            &bytes[offset..end],
        );
        assert_eq!(status, 200, "{answer}");
        offset = answer["offset"].as_u64().unwrap() as usize;
    }

    // Another bastion may neither read nor touch it.
    let other = enrolled(&server, "other");
    let (status, _) = other.send_json(&server, "GET", path, "", Vec::new());
    assert_eq!(status, 403);

    // A wrong checksum: 422, the partial is discarded, start again at 0.
    let (status, answer) = bastion.send_json(
        &server,
        "POST",
        &format!("{path}/complete"),
        "",
        complete_body(bytes.len(), &sha256_hex(b"something else")),
    );
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["offset"], 0);
    assert!(!partial.exists(), "the partial is discarded");
    let (_, state) = bastion.send_json(&server, "GET", path, "", Vec::new());
    assert_eq!(state["offset"], 0);
    let (status, _) = bastion.send_json(
        &server,
        "POST",
        &format!("{path}/complete"),
        "",
        complete_body(bytes.len(), "zz"),
    );
    assert_eq!(status, 400, "a malformed hash is refused");

    // The whole upload again, then complete.
    let mut offset = 0;
    while offset < bytes.len() {
        let end = (offset + chunk).min(bytes.len());
        let (status, answer) = bastion.send_json(
            &server,
            "PUT",
            path,
            &format!("offset={offset}"),
            &bytes[offset..end],
        );
        assert_eq!(status, 200, "{answer}");
        offset = end;
    }
    let sha = sha256_hex(&bytes);
    let (status, answer) = bastion.send_json(
        &server,
        "POST",
        &format!("{path}/complete"),
        "",
        complete_body(bytes.len(), &sha),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["complete"], true);
    assert_eq!(answer["sha256"], sha.as_str());
    // Completing again (a lost answer) is fine; appending is not.
    let (status, _) = bastion.send_json(
        &server,
        "POST",
        &format!("{path}/complete"),
        "",
        complete_body(bytes.len(), &sha),
    );
    assert_eq!(status, 200);
    let (status, answer) = bastion.send_json(
        &server,
        "PUT",
        path,
        &format!("offset={}", bytes.len()),
        b"more",
    );
    assert_eq!(status, 409, "{answer}");
    let stored = server.data.join("recordings/s-1.cast");
    assert_eq!(
        std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Downloadable, identical.
    let response = Client::new()
        .get(format!("{}/api/v1/sessions/s-1/recording", server.url))
        .bearer_auth(&server.read)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-asciicast"
    );
    assert_eq!(response.bytes().unwrap().to_vec(), bytes, "the same bytes");
    let detail = get(&server, "/api/v1/sessions/s-1");
    assert_eq!(detail["has_recording"], true);
    assert_eq!(detail["recording"]["size"], bytes.len());
    assert_eq!(detail["recording"]["sha256"], sha.as_str());
}

#[test]
fn a_recording_survives_a_server_restart_mid_upload() {
    let mut server = Server::start();
    let bastion = enrolled(&server, "b");
    let path = "/api/v1/sync/recordings/s-9";
    let bytes = recording_bytes(300_000);
    let (status, _) = bastion.send_json(&server, "PUT", path, "offset=0", &bytes[..100_000]);
    assert_eq!(status, 200);
    server.restart();
    let (status, state) = bastion.send_json(&server, "GET", path, "", Vec::new());
    assert_eq!((status, state["offset"].as_u64()), (200, Some(100_000)));
    let (status, _) = bastion.send_json(&server, "PUT", path, "offset=100000", &bytes[100_000..]);
    assert_eq!(status, 200);
    let (status, answer) = bastion.send_json(
        &server,
        "POST",
        &format!("{path}/complete"),
        "",
        complete_body(bytes.len(), &sha256_hex(&bytes)),
    );
    assert_eq!(status, 200, "{answer}");
}

#[test]
fn jmsctl_lists_shows_searches_and_fetches_recordings() {
    let server = Server::start();
    let bastion = enrolled(&server, "bastion-1");
    bastion.upload(&server, &sample_events());
    let run = |args: &[&str]| {
        let (code, out, err) = outcome(&server.jmsctl(args));
        assert_eq!(code, 0, "jmsctl {args:?}: {err}");
        out
    };

    let list = run(&["session", "list"]);
    assert!(list.lines().next().unwrap().contains("ID"), "{list}");
    assert!(list.contains("s-1") && list.contains("s-2"), "{list}");
    let alice = run(&["session", "list", "--user", "alice"]);
    assert!(alice.contains("s-1") && !alice.contains("s-2"), "{alice}");
    let online = run(&["session", "list", "--online"]);
    assert!(
        online.contains("s-2") && !online.contains("s-1"),
        "{online}"
    );
    let since = run(&["session", "list", "--since", "2026-03-02"]);
    assert!(since.contains("s-2") && !since.contains("s-1"), "{since}");
    let json: Value =
        serde_json::from_str(&run(&["session", "list", "--json", "--asset", "web01"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["id"], "s-1");

    let show = run(&["session", "show", "s-1"]);
    for expected in [
        "alice",
        "web01",
        "bastion-1",
        "10.0.0.7",
        "uptime",
        "rm -rf /srv",
        "no-rm",
        "TYPED BY",
        "alice,bob",
        "/tmp/a.txt",
    ] {
        assert!(show.contains(expected), "`{expected}` in:\n{show}");
    }
    let shown: Value = serde_json::from_str(&run(&["session", "show", "s-1", "--json"])).unwrap();
    assert_eq!(shown["commands"].as_array().unwrap().len(), 2);

    let found = run(&["command", "search", "rm"]);
    assert!(
        found.contains("rm -rf /srv") && !found.contains("uptime"),
        "{found}"
    );
    let denied = run(&["command", "search", "--decision", "deny", "--json"]);
    let denied: Value = serde_json::from_str(&denied).unwrap();
    assert_eq!(denied.as_array().unwrap().len(), 1);
    let by_session = run(&[
        "command",
        "search",
        "--session",
        "s-2",
        "--user",
        "bob",
        "--asset",
        "db01",
    ]);
    assert!(by_session.contains("psql"), "{by_session}");

    // Bad input: exit 2 (local) or 1 (the server refused), one line.
    let (code, _, err) = outcome(&server.jmsctl(&["session", "list", "--since", "soon"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = outcome(&server.jmsctl(&["session", "show", "nope"]));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no session"), "{err}");
    let (code, _, err) = outcome(&server.jmsctl(&["recording", "get", "s-1"]));
    assert_eq!(code, 1, "no recording yet: {err}");

    // A recording, fetched to a file; never over an existing one unless --force.
    let bytes = recording_bytes(1500);
    let path = "/api/v1/sync/recordings/s-1";
    assert_eq!(
        bastion.send(&server, "PUT", path, "offset=0", &bytes).0,
        200
    );
    let (status, _) = bastion.send(
        &server,
        "POST",
        &format!("{path}/complete"),
        "",
        complete_body(bytes.len(), &sha256_hex(&bytes)),
    );
    assert_eq!(status, 200);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.cast");
    let file_arg = file.to_str().unwrap();
    run(&["recording", "get", "s-1", "-o", file_arg]);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    std::fs::write(&file, b"keep me").unwrap();
    let (code, _, err) = outcome(&server.jmsctl(&["recording", "get", "s-1", "-o", file_arg]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    run(&["recording", "get", "s-1", "-o", file_arg, "--force"]);
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    // Default name: <ID>.cast in the current directory.
    let out = std::process::Command::new(common::JMSCTL)
        .args(["recording", "get", "s-1", "--json"])
        .current_dir(dir.path())
        .env_clear()
        .env("JMS_SERVER", &server.url)
        .env("JMS_TOKEN", &server.read)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(dir.path().join("s-1.cast")).unwrap(), bytes);
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["bytes"], bytes.len());
}

/// One event of every kind, as the bastion writes it (jms-agentd's own
/// spool, the sync contract's `EventBody`), is stored and projected by the
/// server: the session, its command, transfer and end, the refused
/// session, the login, and the share (a share alone makes its session
/// known).
#[test]
fn every_kind_the_agent_spools_is_stored_and_projected() {
    use jms_agent::daemon::monitor::spool::{Event, Spool};
    use jms_sync::event::{EventBody, Scope};

    let mut bodies = EventBody::one_of_each();
    bodies.push(EventBody::Share {
        scope: Scope {
            session: "s3".into(),
            user: "carol".into(),
            asset: "db01".into(),
            account: "postgres".into(),
            username: None,
        },
        action: "create".into(),
        mode: "write".into(),
        peer: None,
    });
    let dir = tempfile::tempdir().unwrap();
    let spool = Spool::open(&dir.path().join("spool"), 1 << 20).unwrap();
    for body in &bodies {
        spool.append(&Event::now(body.clone())).unwrap();
    }
    spool.seal().unwrap();
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("spool")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
    }
    assert_eq!(lines.len(), bodies.len());

    let server = Server::start();
    let bastion = enrolled(&server, "bastion-1");
    assert_eq!(
        bastion.upload(&server, &lines),
        bodies.len() as u64,
        "every kind stored"
    );
    let s1 = get(&server, "/api/v1/sessions/s1");
    assert_eq!(s1["user"], "alice", "{s1}");
    assert_eq!(s1["kind"], "shell");
    assert_eq!(s1["status"], "ended");
    assert_eq!(s1["bytes_out"], 7);
    assert_eq!(s1["commands"][0]["command"], "id");
    assert_eq!(s1["commands"][0]["typed_by"], "bob");
    assert_eq!(s1["transfers"][0]["path"], "/tmp/f");
    let s2 = get(&server, "/api/v1/sessions/s2");
    assert_eq!(s2["status"], "denied", "{s2}");
    let s3 = get(&server, "/api/v1/sessions/s3");
    assert_eq!(s3["user"], "carol", "a share reaches its session: {s3}");
    assert_eq!(s3["asset"], "db01");
    let logins = common::query_text(
        &server.data,
        "SELECT CAST(COUNT(*) AS TEXT) FROM logins WHERE username = 'alice'",
    );
    assert_eq!(logins, "1", "the login is projected");
}
