//! The fleet against a real server: `jmsctl bastion list|show` with what
//! bastions report on their control poll, `bastion revoke` (the key is
//! refused for every sync request, the audit it uploaded stays readable,
//! only a `--replace` token enrolls it again), the silence alarm; and the
//! admin roles: an auditor gets 403 from every route the OpenAPI document
//! says needs more, an operator from the admin ones.

mod common;

use common::{create_token, enrolled, outcome, Server};
use jms_sync::bundle::hex;
use serde_json::{json, Value};

const REPORT: &str = "wait=0&agent=0.1.0&sessions=2&backlog=512";

fn session_start(id: &str) -> Value {
    json!({
        "id": format!("{id}-start"), "time": "2026-03-01T10:00:00.000Z", "event": "session_start",
        "session": id, "user": "alice", "asset": "web01", "account": "root", "username": "root",
        "kind": "shell", "protocol": "ssh", "client": "10.0.0.7", "command": null, "recording": null,
    })
}

#[test]
fn the_fleet_shows_reports_and_a_revoked_bastion_is_refused_but_its_audit_stays() {
    let server = Server::start();
    let b1 = enrolled(&server, "b1");
    let b2 = enrolled(&server, "b2");
    server.expect(201, "POST", "/api/v1/groups", Some(json!({"name": "ops"})));

    // b1 polls its control route with a report; b2 with none (an older
    // jms-agentd).
    let (status, _) = b1.send_json(&server, "GET", "/api/v1/sync/control", REPORT, b"");
    assert_eq!(status, 200);
    let (status, _) = b2.send_json(&server, "GET", "/api/v1/sync/control", "wait=0", b"");
    assert_eq!(status, 200);
    // A bad report is refused (and stores nothing).
    let (status, answer) = b2.send_json(
        &server,
        "GET",
        "/api/v1/sync/control",
        "wait=0&agent=1.0%20beta&sessions=1&backlog=1",
        b"",
    );
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = b2.send_json(
        &server,
        "GET",
        "/api/v1/sync/control",
        "wait=0&agent=1.0",
        b"",
    );
    assert_eq!(status, 400, "{answer}");
    // b1 holds an old policy version (its bundle request said so).
    let transport = hex(&[7u8; 32]);
    let (status, _) = b1.send(
        &server,
        "GET",
        "/api/v1/sync/bundle",
        &format!("since=0&transport={transport}"),
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(b1.upload(&server, &[session_start("s-1")]), 1);

    let (code, out, err) = outcome(&server.jmsctl(&["bastion", "list"]));
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        "NAME  STATUS  ZONE  ADDRESS    LAST SEEN  POLICY        SESSIONS  BACKLOG  AGENTD"
    );
    assert!(
        lines[1].starts_with("b1    online  -     127.0.0.1  "),
        "{out}"
    );
    assert!(
        lines[1].ends_with("0 (1 behind)  2         512      0.1.0"),
        "{out}"
    );
    assert!(
        lines[2].starts_with("b2    online  -     127.0.0.1  ")
            && lines[2].ends_with("-         -        -"),
        "{out}"
    );
    // An admin puts b1 in a zone (a label checked like a name), and takes
    // it out again.
    let (code, out, err) = outcome(&server.jmsctl(&["bastion", "zone", "b1", "dmz"]));
    assert_eq!(
        (code, out.trim()),
        (0, "bastion b1 is in zone dmz"),
        "{err}"
    );
    let (code, out, _) = outcome(&server.jmsctl(&["bastion", "list"]));
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .nth(1)
            .unwrap()
            .starts_with("b1    online  dmz "),
        "{out}"
    );
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "zone", "b1", "a b"]));
    assert!(code != 0 && err.contains("bad zone"), "{err}");
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "zone", "b9", "dmz"]));
    assert!(code != 0 && err.contains("not enrolled"), "{err}");
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "zone", "b1", "--none"]));
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = outcome(&server.jmsctl(&["bastion", "show", "b1", "--json"]));
    assert_eq!(code, 0);
    let b1_view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(b1_view["zone"], Value::Null, "{b1_view}");
    assert_eq!(b1_view["status"], "online");
    assert_eq!(b1_view["policy_version"], 0);
    assert_eq!(b1_view["server_version"], 1);
    assert_eq!(b1_view["open_sessions"], 2);
    assert_eq!(b1_view["spool_backlog"], 512);
    assert_eq!(b1_view["agent_version"], "0.1.0");
    assert!(b1_view["revoked_at"].is_null());
    let list = server.call(Some(&server.read), "GET", "/api/v1/bastions", None);
    assert_eq!(
        (list.0, list.1["items"].as_array().map(Vec::len)),
        (200, Some(2)),
        "auditors read the fleet"
    );

    // Revoking needs a terminal or --yes, and the admin role.
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "revoke", "b1"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.ends_with(
            "jmsctl: not revoking bastion b1 without a terminal to confirm: give --yes\n"
        ),
        "{err}"
    );
    let (status, answer) = server.call(
        Some(&server.read),
        "POST",
        "/api/v1/bastions/b1/revoke",
        None,
    );
    assert_eq!(status, 403, "{answer}");
    let (status, _) = b1.send_json(&server, "GET", "/api/v1/sync/control", REPORT, b"");
    assert_eq!(status, 200, "not revoked yet");
    let (code, out, err) = outcome(&server.jmsctl(&["bastion", "revoke", "b1", "--yes"]));
    assert_eq!((code, out.as_str()), (0, "revoked bastion b1\n"), "{err}");
    assert!(err.contains("its key is refused from now on"), "{err}");
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "revoke", "b1", "--yes"]));
    assert_eq!(
        (code, err.as_str()),
        (1, "jmsctl: bastion `b1` is already revoked (HTTP 409)\n")
    );
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "revoke", "nosuch", "--yes"]));
    assert_eq!(
        (code, err.as_str()),
        (1, "jmsctl: bastion `nosuch` is not enrolled (HTTP 404)\n")
    );

    // Every sync request signed with its key is refused from now on.
    let body = serde_json::to_vec(&json!({"events": [session_start("s-2")]})).unwrap();
    let (status, answer) = b1.send_json(&server, "POST", "/api/v1/sync/events", "", &body);
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("bastion b1 (")
            && answer["error"].as_str().unwrap().contains("is revoked"),
        "{answer}"
    );
    let (status, _) = b1.send(
        &server,
        "GET",
        "/api/v1/sync/bundle",
        &format!("since=0&transport={transport}"),
        b"",
    );
    assert_eq!(status, 401);
    let (status, _) = b1.send(&server, "GET", "/api/v1/sync/control", REPORT, b"");
    assert_eq!(status, 401);
    let (status, _) = b1.send(&server, "GET", "/api/v1/sync/recordings/s-1", "", b"");
    assert_eq!(status, 401);
    assert!(server.log().contains("revoked_bastion"), "{}", server.log());
    // b2 is untouched.
    let (status, _) = b2.send_json(&server, "GET", "/api/v1/sync/control", "wait=0", b"");
    assert_eq!(status, 200);

    // Its audit stays readable; the second session never arrived.
    server.expect(200, "GET", "/api/v1/sessions/s-1", None);
    assert_eq!(
        server
            .call(Some(&server.admin), "GET", "/api/v1/sessions/s-2", None)
            .0,
        404
    );
    let (code, out, _) = outcome(&server.jmsctl(&["session", "list"]));
    assert!(code == 0 && out.contains("s-1"), "{out}");
    let (code, out, _) = outcome(&server.jmsctl(&["bastion", "list"]));
    assert!(
        code == 0 && out.lines().nth(1).unwrap().starts_with("b1    revoked"),
        "{out}"
    );
    let oplog = server.expect(200, "GET", "/api/v1/oplog", None);
    assert_eq!(oplog["items"][0]["action"], "revoke");
    assert_eq!(oplog["items"][0]["name"], "b1");

    // Only a --replace token enrolls it again, with a new key.
    let key = common::new_bastion_key();
    let (status, _) = common::enroll(&server, &common::bastion_token(&server, "1h"), "b1", &key);
    assert_eq!(status, 409);
    let out = server.jmsctl(&["bastion", "token", "create", "--replace", "b1"]);
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (status, answer) = common::enroll(&server, &token, "b1", &key);
    assert_eq!(status, 200, "{answer}");
    let again = common::SyncBastion {
        id: answer["bastion_id"].as_i64().unwrap(),
        key,
        server_key: b1.server_key.clone(),
        http: b1.http.clone(),
    };
    let (status, _) = again.send_json(&server, "GET", "/api/v1/sync/control", REPORT, b"");
    assert_eq!(status, 200, "the new key works");
    let (status, _) = b1.send(&server, "GET", "/api/v1/sync/control", REPORT, b"");
    assert_eq!(status, 401, "the old key stays refused");
    assert_eq!(
        server.expect(200, "GET", "/api/v1/bastions/b1", None)["status"],
        "online"
    );
}

#[test]
fn a_silent_bastion_raises_the_alarm_and_clears_it_when_it_polls_again() {
    let server = Server::start_with(&["--bastion-silent-after", "1s"]);
    let b1 = enrolled(&server, "quiet");
    let (status, _) = b1.send_json(&server, "GET", "/api/v1/sync/control", REPORT, b"");
    assert_eq!(status, 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !server.log().contains("alarm=\"bastion_silent\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "no alarm: {}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let log = server.log();
    assert!(
        log.contains("bastion=\"quiet\"") || log.contains("bastion=quiet"),
        "{log}"
    );
    let view = server.expect(200, "GET", "/api/v1/bastions/quiet", None);
    assert_eq!(view["status"], "silent");
    let (code, out, _) = outcome(&server.jmsctl(&["bastion", "list"]));
    assert!(
        code == 0 && out.contains("quiet  silent") && out.contains("1 silent for more than 1s"),
        "{out}"
    );
}

#[test]
fn roles_an_auditor_only_reads_an_operator_writes_the_policy_only() {
    let server = Server::start();
    let operator = create_token(&server.data, "operator", "ops-bot");
    let auditor = create_token(&server.data, "auditor", "audit-team");

    // Every route the OpenAPI document says needs more than auditor
    // refuses an auditor (both the `read` and the `auditor` token) before
    // looking at the request.
    let doc = server.expect(200, "GET", "/api/openapi.json", None);
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(role) = op["x-required-role"].as_str() else {
                assert!(
                    path.contains("/sync/") || path == "/api/openapi.json",
                    "{method} {path} names no role"
                );
                continue;
            };
            let concrete = path.replace("{id}", "1").replace(['{', '}'], "");
            let body = (method != "get").then(|| json!({}));
            for token in [&server.read, &auditor] {
                let (status, answer) =
                    server.call(Some(token), &method.to_uppercase(), &concrete, body.clone());
                if role == "auditor" {
                    assert_ne!(status, 403, "{method} {path}: {answer}");
                } else {
                    assert_eq!(status, 403, "{method} {path} ({role}): {answer}");
                    assert!(
                        answer["error"]
                            .as_str()
                            .unwrap()
                            .contains("auditor role (read-only)"),
                        "{answer}"
                    );
                    checked += 1;
                }
            }
            if role == "admin" {
                let (status, answer) = server.call(
                    Some(&operator),
                    &method.to_uppercase(),
                    &concrete,
                    body.clone(),
                );
                assert_eq!(status, 403, "operator: {method} {path}: {answer}");
                assert!(
                    answer["error"].as_str().unwrap().contains("needs admin"),
                    "{answer}"
                );
            }
        }
    }
    assert!(checked >= 2 * 25, "write routes checked: {checked}");

    // An operator writes the policy, not the settings nor the fleet.
    let (status, answer) = server.call(
        Some(&operator),
        "POST",
        "/api/v1/groups",
        Some(json!({"name": "ops"})),
    );
    assert_eq!(status, 201, "{answer}");
    let (code, _, err) =
        outcome(&server.jmsctl_with(&["user", "add", "alice", "--group", "ops"], &operator, None));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = outcome(&server.jmsctl_with(
        &["settings", "set", "security.lockout_threshold", "3"],
        &operator,
        None,
    ));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("has the operator role: PATCH /api/v1/settings needs admin (HTTP 403)"),
        "{err}"
    );
    let (code, _, err) =
        outcome(&server.jmsctl_with(&["bastion", "token", "create"], &operator, None));
    assert_eq!(code, 1, "{err}");
    let (status, _) = server.call(
        Some(&operator),
        "GET",
        "/api/v1/policy?with_secrets=true",
        None,
    );
    assert_eq!(status, 403, "secrets are the admin's");
    // An auditor reads, through jmsctl too, and changes nothing.
    let (code, out, err) = outcome(&server.jmsctl_with(&["user", "show", "alice"], &auditor, None));
    assert!(code == 0 && out.contains("alice"), "{err}");
    let (code, _, err) =
        outcome(&server.jmsctl_with(&["user", "set", "alice", "--name", "A"], &auditor, None));
    assert_eq!(code, 1, "{err}");
    let (code, _, err) =
        outcome(&server.jmsctl_with(&["user", "delete", "alice", "--yes"], &auditor, None));
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        server.expect(200, "GET", "/api/v1/users/alice", None)["name"],
        ""
    );
}

#[test]
fn unlock_reaches_every_bastion_on_its_control_poll() {
    let server = Server::start();
    let b1 = enrolled(&server, "b1");
    let b2 = enrolled(&server, "b2");
    let gone = enrolled(&server, "gone");
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "alice"})),
    );
    let (code, _, _) = outcome(&server.jmsctl(&["bastion", "revoke", "gone", "--yes"]));
    assert_eq!(code, 0);
    let (code, out, err) = outcome(&server.jmsctl(&["user", "unlock", "alice"]));
    assert_eq!(
        (code, out.as_str()),
        (0, "unlock of user alice sent to 2 bastions (each lifts her lockout at its next control poll)\n"),
        "{err}"
    );
    for bastion in [&b1, &b2] {
        let (status, answer) =
            bastion.send_json(&server, "GET", "/api/v1/sync/control", REPORT, b"");
        assert_eq!(status, 200);
        assert_eq!(
            answer["orders"],
            json!([{"kind": "unlock", "user": "alice"}])
        );
        let (_, answer) = bastion.send_json(&server, "GET", "/api/v1/sync/control", REPORT, b"");
        assert_eq!(answer["orders"], json!([]), "once");
    }
    let (status, _) = gone.send(&server, "GET", "/api/v1/sync/control", REPORT, b"");
    assert_eq!(status, 401);
    let (code, _, err) = outcome(&server.jmsctl(&["user", "unlock", "nobody"]));
    assert_eq!(
        (code, err.as_str()),
        (1, "jmsctl: user `nobody` not found (HTTP 404)\n")
    );
    let (status, _) = server.call(
        Some(&server.read),
        "POST",
        "/api/v1/users/alice/unlock",
        None,
    );
    assert_eq!(status, 403);
    assert_eq!(
        server.expect(200, "GET", "/api/v1/oplog", None)["items"][0]["action"],
        "unlock"
    );
}
