//! The admin API against a real server: CRUD on every collection, secrets
//! never returned, scopes, jms-core's refusals, the operation log, the
//! policy version, pagination and errors.

mod common;

use common::Server;
use serde_json::{json, Value};

/// A small valid policy to work on: group ops, user alice, node, asset
/// web01 with account root, grant ops-web.
fn seed(server: &Server) {
    server.expect(201, "POST", "/api/v1/groups", Some(json!({"name": "ops"})));
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "alice", "groups": ["ops"]})),
    );
    server.expect(
        201,
        "POST",
        "/api/v1/nodes",
        Some(json!({"path": "/Default/prod"})),
    );
    server.expect(
        201,
        "POST",
        "/api/v1/assets",
        Some(json!({"name": "web01", "address": "10.0.0.1",
                    "protocols": [{"name": "ssh", "port": 22}], "nodes": ["/Default/prod"]})),
    );
    server.expect(
        201,
        "POST",
        "/api/v1/assets/web01/accounts",
        Some(json!({"name": "root", "username": "root", "secret_type": "password", "secret": "pw-root-1"})),
    );
    server.expect(
        201,
        "POST",
        "/api/v1/grants",
        Some(
            json!({"name": "ops-web", "user_groups": ["ops"], "nodes": ["/Default/prod"],
                    "accounts": ["@ALL"], "protocols": ["all"], "actions": ["connect"]}),
        ),
    );
}

#[test]
fn every_collection_supports_create_read_update_delete() {
    let server = Server::start();
    seed(&server);

    let alice = server.expect(200, "GET", "/api/v1/users/alice", None);
    assert_eq!(alice["groups"], json!(["ops"]));
    let patched = server.expect(
        200,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"name": "Alice Liu", "email": "a@example.com"})),
    );
    assert_eq!(
        (patched["name"].as_str(), patched["email"].as_str()),
        (Some("Alice Liu"), Some("a@example.com"))
    );
    assert_eq!(
        patched["groups"],
        json!(["ops"]),
        "a patch keeps what it does not name"
    );

    let ops = server.expect(200, "GET", "/api/v1/groups/ops", None);
    assert_eq!(ops["members"], json!(["alice"]));
    server.expect(
        200,
        "PATCH",
        "/api/v1/groups/ops",
        Some(json!({"comment": "operations"})),
    );

    let nodes = server.expect(200, "GET", "/api/v1/nodes", None);
    let node_id = nodes["items"][0]["id"].as_i64().unwrap();
    assert_eq!(
        server.expect(200, "GET", &format!("/api/v1/nodes/{node_id}"), None)["path"],
        "/Default/prod"
    );

    let asset = server.expect(
        200,
        "PATCH",
        "/api/v1/assets/web01",
        Some(json!({"address": "10.0.0.2"})),
    );
    assert_eq!(asset["address"], "10.0.0.2");
    assert_eq!(
        asset["accounts"][0]["name"], "root",
        "accounts survive an asset patch"
    );

    let account = server.expect(
        200,
        "PATCH",
        "/api/v1/assets/web01/accounts/root",
        Some(json!({"privileged": true})),
    );
    assert_eq!(
        (
            account["privileged"].as_bool(),
            account["has_secret"].as_bool()
        ),
        (Some(true), Some(true))
    );

    let grant = server.expect(200, "GET", "/api/v1/grants/ops-web", None);
    assert!(
        grant["date_start"].is_string(),
        "a created grant starts at its creation: {grant}"
    );
    let grant = server.expect(
        200,
        "PATCH",
        "/api/v1/grants/ops-web",
        Some(json!({"actions": ["connect", "upload"]})),
    );
    assert_eq!(grant["actions"], json!(["connect", "upload"]));

    server.expect(
        201,
        "POST",
        "/api/v1/filters",
        Some(json!({"name": "no-reboot", "action": "deny", "rules": ["^reboot"], "users": ["@ALL"], "assets": ["@ALL"], "accounts": ["@ALL"]})),
    );
    let filter = server.expect(
        200,
        "PATCH",
        "/api/v1/filters/no-reboot",
        Some(json!({"priority": 10})),
    );
    assert_eq!(filter["priority"], 10);

    // Delete, in an order the policy allows.
    server.expect(204, "DELETE", "/api/v1/filters/no-reboot", None);
    server.expect(204, "DELETE", "/api/v1/grants/ops-web", None);
    server.expect(204, "DELETE", "/api/v1/assets/web01/accounts/root", None);
    server.expect(204, "DELETE", "/api/v1/assets/web01", None);
    server.expect(204, "DELETE", &format!("/api/v1/nodes/{node_id}"), None);
    server.expect(204, "DELETE", "/api/v1/groups/ops", None);
    assert_eq!(
        server.expect(200, "GET", "/api/v1/users/alice", None)["groups"],
        json!([]),
        "deleting a group ends its memberships"
    );
    server.expect(204, "DELETE", "/api/v1/users/alice", None);
    for path in [
        "/api/v1/users/alice",
        "/api/v1/groups/ops",
        "/api/v1/assets/web01",
        "/api/v1/grants/ops-web",
        "/api/v1/filters/no-reboot",
    ] {
        let body = server.expect(404, "GET", path, None);
        assert!(
            body["error"].as_str().unwrap().contains("not found"),
            "{path}: {body}"
        );
    }
}

#[test]
fn secrets_are_never_returned_by_any_read() {
    let server = Server::start();
    seed(&server);
    let hash = "pbkdf2_sha256$600000$c2FsdHNhbHQ$9Yw3T3XJ3cqvTtM6pXZ3pX9pVQKZ7r2d5w5uJb8m0Vg=";
    server.expect(
        200,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"password_hash": hash, "totp_secret": "JBSWY3DPEHPK3PXP"})),
    );
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {"password": "mail-pw-9"}})),
    );

    let mut everything = String::new();
    for path in [
        "/api/v1/users",
        "/api/v1/users/alice",
        "/api/v1/assets",
        "/api/v1/assets/web01",
        "/api/v1/assets/web01/accounts",
        "/api/v1/assets/web01/accounts/root",
        "/api/v1/accounts",
        "/api/v1/policy",
        "/api/v1/settings",
        "/api/v1/oplog",
    ] {
        everything.push_str(&server.expect(200, "GET", path, None).to_string());
    }
    for secret in ["pw-root-1", "JBSWY3DPEHPK3PXP", "c2FsdHNhbHQ", "mail-pw-9"] {
        assert!(
            !everything.contains(secret),
            "a read returned the secret {secret}"
        );
    }
    let alice = server.expect(200, "GET", "/api/v1/users/alice", None);
    assert_eq!(
        (alice["has_password"].as_bool(), alice["has_totp"].as_bool()),
        (Some(true), Some(true))
    );
    assert!(alice.get("password_hash").is_none() && alice.get("totp_secret").is_none());
    let account = server.expect(200, "GET", "/api/v1/assets/web01/accounts/root", None);
    assert_eq!(account["has_secret"], true);
    assert!(account.get("secret").is_none());
    assert_eq!(
        server.expect(200, "GET", "/api/v1/settings", None)["mail"]["has_password"],
        true
    );

    // A patch that leaves the secret out keeps it; null clears it.
    server.expect(
        200,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"name": "A"})),
    );
    assert_eq!(
        server.expect(200, "GET", "/api/v1/users/alice", None)["has_password"],
        true
    );
    server.expect(
        200,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"password_hash": null})),
    );
    assert_eq!(
        server.expect(200, "GET", "/api/v1/users/alice", None)["has_password"],
        false
    );

    // Only an admin export with with_secrets shows them, and it is logged.
    let doc = server.expect(200, "GET", "/api/v1/policy?with_secrets=true", None);
    assert_eq!(doc["assets"][0]["accounts"][0]["secret"], "pw-root-1");
    let log = server.expect(200, "GET", "/api/v1/oplog?limit=1", None);
    assert_eq!(log["items"][0]["action"], "export-secrets");
}

#[test]
fn tokens_are_required_and_read_only_tokens_cannot_write() {
    let server = Server::start();
    let (status, body) = server.call(None, "GET", "/api/v1/users", None);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    let (status, _) = server.call(Some("jms_not-a-token"), "GET", "/api/v1/users", None);
    assert_eq!(status, 401);

    let (status, _) = server.call(Some(&server.read), "GET", "/api/v1/users", None);
    assert_eq!(status, 200, "read tokens read");
    for (method, path, body) in [
        ("POST", "/api/v1/groups", Some(json!({"name": "ops"}))),
        ("PATCH", "/api/v1/settings", Some(json!({}))),
        ("PUT", "/api/v1/policy", Some(json!({}))),
        ("DELETE", "/api/v1/users/alice", None),
    ] {
        let (status, answer) = server.call(Some(&server.read), method, path, body);
        assert_eq!(status, 403, "{method} {path} with a read token: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("read-only"),
            "{answer}"
        );
    }
    let (status, _) = server.call(
        Some(&server.read),
        "GET",
        "/api/v1/policy?with_secrets=true",
        None,
    );
    assert_eq!(status, 403, "read tokens never see secrets");
    assert_eq!(server.version(), 0, "nothing was written");
}

#[test]
fn a_change_that_breaks_the_policy_is_refused_with_jms_cores_message() {
    let server = Server::start();
    seed(&server);
    let version = server.version();
    let refused = [
        (
            "POST",
            "/api/v1/grants",
            json!({"name": "g", "users": ["nobody"], "assets": ["web01"], "accounts": ["@ALL"], "protocols": ["all"], "actions": ["all"]}),
            "grant `g`: field `users[0]`: unknown user `nobody`",
        ),
        (
            "POST",
            "/api/v1/filters",
            json!({"name": "f", "action": "deny", "rules": ["(unclosed"], "accounts": ["@ALL"]}),
            "command filter `f`: field `rules[0]`: bad regex",
        ),
        (
            "POST",
            "/api/v1/users",
            json!({"username": "bad name"}),
            "user `bad name`: field `username`: bad name `bad name`",
        ),
        (
            "PATCH",
            "/api/v1/assets/web01",
            json!({"nodes": ["/Nowhere"]}),
            "asset `web01`: field `nodes[0]`: unknown node `/Nowhere`",
        ),
    ];
    for (method, path, body, message) in refused {
        let (status, answer) = server.admin(method, path, Some(body));
        assert_eq!(status, 422, "{method} {path}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(
            error.starts_with(message),
            "{method} {path}: expected `{message}…`, got `{error}`"
        );
    }
    // Deleting what a grant names is refused too.
    let (status, answer) = server.admin("DELETE", "/api/v1/groups/ops", None);
    assert_eq!(status, 422, "{answer}");
    assert_eq!(
        answer["error"],
        "grant `ops-web`: field `user_groups[0]`: unknown user group `ops`"
    );
    assert_eq!(server.version(), version, "refused changes change nothing");
    server.expect(200, "GET", "/api/v1/groups/ops", None);
}

#[test]
fn every_write_is_logged_and_bumps_the_policy_version() {
    let server = Server::start();
    assert_eq!(server.version(), 0);
    server.expect(201, "POST", "/api/v1/groups", Some(json!({"name": "ops"})));
    assert_eq!(server.version(), 1);
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "alice"})),
    );
    server.expect(
        200,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"groups": ["ops"], "email": "a@x"})),
    );
    assert_eq!(server.version(), 3);
    server.expect(
        200,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"email": "a@x"})),
    );
    assert_eq!(
        server.version(),
        3,
        "a patch that changes nothing bumps nothing"
    );
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"security": {"lockout_threshold": 3}})),
    );
    assert_eq!(
        server.version(),
        4,
        "settings travel in the bundle: they bump it too"
    );
    server.expect(204, "DELETE", "/api/v1/users/alice", None);

    let log = server.expect(200, "GET", "/api/v1/oplog", None);
    let entries: Vec<(String, String, String, Vec<String>, u64)> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["kind"].as_str().unwrap().to_string(),
                e["name"].as_str().unwrap().to_string(),
                serde_json::from_value(e["fields"].clone()).unwrap(),
                e["version"].as_u64().unwrap(),
            )
        })
        .collect();
    let s = |x: &str| x.to_string();
    assert_eq!(
        &entries[..5],
        &[
            (s("delete"), s("user"), s("alice"), vec![], 5),
            (
                s("update"),
                s("settings"),
                s("system"),
                vec![s("security.lockout_threshold")],
                4
            ),
            (
                s("update"),
                s("user"),
                s("alice"),
                vec![s("email"), s("groups")],
                3
            ),
            (s("create"), s("user"), s("alice"), vec![], 2),
            (s("create"), s("group"), s("ops"), vec![], 1),
        ],
        "newest first"
    );
    assert_eq!(log["items"][0]["actor"], "token 1 (admin)");
    // The two token creations are logged too (by the local command).
    assert_eq!(log["total"], 7);
}

#[test]
fn lists_paginate_and_filter() {
    let server = Server::start();
    for name in ["ann", "bea", "cat", "dan", "eve"] {
        server.expect(
            201,
            "POST",
            "/api/v1/users",
            Some(json!({"username": name, "email": format!("{name}@corp.example")})),
        );
    }
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "zed", "name": "Zed Annex"})),
    );
    let page = server.expect(200, "GET", "/api/v1/users?limit=2&offset=0", None);
    let names = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        (names(&page), page["total"].as_u64()),
        (vec!["ann".to_string(), "bea".to_string()], Some(6))
    );
    let page = server.expect(200, "GET", "/api/v1/users?limit=2&offset=4", None);
    assert_eq!(names(&page), ["eve", "zed"]);
    let page = server.expect(200, "GET", "/api/v1/users?offset=10", None);
    assert_eq!((names(&page).len(), page["total"].as_u64()), (0, Some(6)));
    let page = server.expect(200, "GET", "/api/v1/users?q=ANN", None);
    assert_eq!(
        names(&page),
        ["ann", "zed"],
        "q matches username and name, case-insensitively"
    );
    let page = server.expect(200, "GET", "/api/v1/users?q=corp.example&limit=1", None);
    assert_eq!(
        (names(&page), page["total"].as_u64()),
        (vec!["ann".to_string()], Some(5))
    );
    let page = server.expect(200, "GET", "/api/v1/users?q=%25", None);
    assert_eq!(page["total"], 0, "LIKE wildcards in q are literal");
    for bad in ["limit=0", "limit=5000", "limit=x", "offset=-1", "color=red"] {
        let body = server.expect(400, "GET", &format!("/api/v1/users?{bad}"), None);
        assert!(body["error"].is_string(), "{bad}: {body}");
    }
}

#[test]
fn bad_requests_get_a_4xx_and_a_json_error() {
    let server = Server::start();
    seed(&server);
    let cases = [
        (
            "POST",
            "/api/v1/users",
            json!({"username": "x", "colour": "red"}),
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/api/v1/users",
            json!({"name": "no username"}),
            400,
            "missing field `username`",
        ),
        (
            "POST",
            "/api/v1/users",
            json!({"username": "alice"}),
            409,
            "user `alice` already exists",
        ),
        (
            "PATCH",
            "/api/v1/users/alice",
            json!({"username": "alicia"}),
            400,
            "`username` cannot change",
        ),
        (
            "PATCH",
            "/api/v1/users/nobody",
            json!({"name": "x"}),
            404,
            "user `nobody` not found",
        ),
        (
            "PATCH",
            "/api/v1/assets/web01",
            json!({"accounts": []}),
            400,
            "`accounts` has its own routes",
        ),
        (
            "POST",
            "/api/v1/assets/nowhere/accounts",
            json!({"name": "a", "username": "a", "secret_type": "password"}),
            404,
            "asset `nowhere` not found",
        ),
        (
            "POST",
            "/api/v1/assets/web01/accounts",
            json!({"name": "k", "username": "k", "secret_type": "ssh_key", "secret_file": "/etc/shadow"}),
            400,
            "`secret_file` is read by jmsctl",
        ),
        (
            "PATCH",
            "/api/v1/settings",
            json!({"security": {"lockout": 1}}),
            400,
            "unknown field `lockout`",
        ),
        (
            "PATCH",
            "/api/v1/settings",
            json!({"security": {"mfa_required": "groups", "mfa_groups": ["nobody"]}}),
            422,
            "unknown user group `nobody`",
        ),
        (
            "PUT",
            "/api/v1/policy",
            json!({"users": [{"username": "u", "groups": "ops"}]}),
            400,
            "user `u` (users[0]): field `groups`",
        ),
    ];
    for (method, path, body, status, message) in cases {
        let (got, answer) = server.admin(method, path, Some(body));
        assert_eq!(got, status, "{method} {path}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(
            error.contains(message),
            "{method} {path}: expected `{message}` in `{error}`"
        );
    }
    let (status, answer) = server.admin("GET", "/api/v1/nodes/not-a-number", None);
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = server.admin("GET", "/api/v1/sessionz", None);
    assert_eq!(status, 404, "{answer}");
    assert!(answer["error"].as_str().unwrap().starts_with("no route"));

    // Raw bodies: not JSON, and no content type.
    let client = reqwest::blocking::Client::new();
    let response = client
        .post(format!("{}/api/v1/users", server.url))
        .bearer_auth(&server.admin)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let response = client
        .post(format!("{}/api/v1/users", server.url))
        .bearer_auth(&server.admin)
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 415);
    assert!(response.json::<Value>().unwrap()["error"].is_string());
}

#[test]
fn uids_are_assigned_once_and_never_given_to_another_name() {
    let server = Server::start();
    let uid = |name: &str| {
        server.expect(
            201,
            "POST",
            "/api/v1/users",
            Some(json!({"username": name})),
        )["uid"]
            .as_u64()
            .unwrap()
    };
    let alice = uid("alice");
    let bob = uid("bob");
    assert_ne!(alice, bob);
    server.expect(204, "DELETE", "/api/v1/users/alice", None);
    let carol = uid("carol");
    assert!(
        carol != alice && carol != bob,
        "carol got a used uid {carol}"
    );
    assert_eq!(
        uid("alice"),
        alice,
        "a returning name gets her old uid back"
    );
    let gid =
        server.expect(201, "POST", "/api/v1/groups", Some(json!({"name": "ops"})))["gid"].as_u64();
    assert!(gid.is_some());
}

#[test]
fn settings_have_defaults_and_changes_are_checked() {
    let server = Server::start();
    let settings = server.expect(200, "GET", "/api/v1/settings", None);
    assert_eq!(settings["security"]["lockout_threshold"], 5);
    assert_eq!(settings["security"]["session_idle_timeout"], "30m");
    assert_eq!(settings["audit"]["command_filter_default"], "allow");
    assert_eq!(settings["mail"]["has_password"], false);

    let changed = server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"security": {"session_idle_timeout": "1h 30m"}})),
    );
    assert_eq!(changed["security"]["session_idle_timeout"], "1h 30m");
    assert_eq!(
        changed["security"]["lockout_threshold"], 5,
        "a patch keeps the rest"
    );

    // PUT replaces the document (absent fields: defaults), and a GET's
    // has_password can be sent back as it is.
    let mut whole = server.expect(200, "GET", "/api/v1/settings", None);
    whole["audit"]["record_input"] = json!(true);
    whole["security"] = json!({});
    let put = server.expect(200, "PUT", "/api/v1/settings", Some(whole));
    assert_eq!(
        (
            put["audit"]["record_input"].as_bool(),
            put["security"]["session_idle_timeout"].as_str()
        ),
        (Some(true), Some("30m"))
    );

    let body = server.expect(
        422,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"security": {"password_min_length": 0}})),
    );
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("password_min_length"));
    let body = server.expect(
        400,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"security": {"lockout_duration": "soon"}})),
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("bad duration `soon`"),
        "{body}"
    );
}

#[test]
fn apply_replaces_the_policy_and_dry_run_only_reports() {
    let server = Server::start();
    seed(&server);
    let mut doc = server.expect(200, "GET", "/api/v1/policy", None);
    doc["users"]
        .as_array_mut()
        .unwrap()
        .push(json!({"username": "bob"}));
    doc["grants"] = json!([]);
    let version = server.version();
    let dry = server.expect(200, "PUT", "/api/v1/policy?dry_run=true", Some(doc.clone()));
    assert_eq!(
        dry["changes"],
        json!([
            {"op": "add", "kind": "user", "name": "bob"},
            {"op": "remove", "kind": "grant", "name": "ops-web"},
        ])
    );
    assert_eq!(
        (dry["dry_run"].as_bool(), server.version()),
        (Some(true), version)
    );
    server.expect(200, "GET", "/api/v1/grants/ops-web", None);

    let applied = server.expect(200, "PUT", "/api/v1/policy", Some(doc));
    assert_eq!(
        applied["version"].as_u64(),
        Some(version + 1),
        "one apply, one version"
    );
    server.expect(404, "GET", "/api/v1/grants/ops-web", None);
    // The document had no secrets: the stored ones stay.
    assert_eq!(
        server.expect(200, "GET", "/api/v1/assets/web01/accounts/root", None)["has_secret"],
        true
    );
}

/// Plans in the policy file: `policy apply` makes the server's plans
/// equal to the file's (checked against the document applied; an
/// unchanged plan keeps its schedule), leaves them alone when the file
/// has no `plans`, and export writes them back.
#[test]
fn policy_apply_carries_plans_and_leaves_them_alone_without_a_plans_key() {
    let server = Server::start();
    let doc = |plans: Option<Value>| {
        let mut doc = json!({
            "assets": [{"name": "web01", "address": "10.0.0.1",
                        "protocols": [{"name": "ssh", "port": 22}],
                        "accounts": [{"name": "app", "username": "app",
                                      "secret_type": "password", "secret": "app-pw-1"}]}],
        });
        if let Some(plans) = plans {
            doc["plans"] = plans;
        }
        doc
    };
    let weekly = json!([{"name": "weekly", "kind": "rotate", "asset": "web01",
                         "account": "app", "every_days": 7}]);
    let applied = server.expect(
        200,
        "PUT",
        "/api/v1/policy",
        Some(doc(Some(weekly.clone()))),
    );
    assert_eq!(applied["plans"], json!(["+ plan weekly"]), "{applied}");
    let first = server.expect(200, "GET", "/api/v1/plans/weekly", None);
    assert_eq!(first["kind"], "rotate");
    // The same file again: nothing changes, the schedule is kept.
    let again = server.expect(
        200,
        "PUT",
        "/api/v1/policy",
        Some(doc(Some(weekly.clone()))),
    );
    assert_eq!(again["plans"], json!([]), "{again}");
    let kept = server.expect(200, "GET", "/api/v1/plans/weekly", None);
    assert_eq!(kept["next_run"], first["next_run"]);
    // A file without `plans` leaves them alone; export writes them.
    let without = server.expect(200, "PUT", "/api/v1/policy", Some(doc(None)));
    assert_eq!(without["plans"], json!([]), "{without}");
    let exported = server.expect(200, "GET", "/api/v1/policy", None);
    assert_eq!(exported["plans"], weekly, "{exported}");
    // A plan of an unknown asset is refused before anything is applied.
    let bad = json!([{"name": "bad", "kind": "verify", "asset": "db01", "every_days": 1}]);
    let (status, _) = server.admin("PUT", "/api/v1/policy", Some(doc(Some(bad))));
    assert_eq!(status, 404, "the unknown asset is named");
    assert_eq!(
        server.expect(200, "GET", "/api/v1/plans", None)["items"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    // `plans: []` removes them.
    let emptied = server.expect(200, "PUT", "/api/v1/policy", Some(doc(Some(json!([])))));
    assert_eq!(emptied["plans"], json!(["- plan weekly"]), "{emptied}");
    let exported = server.expect(200, "GET", "/api/v1/policy", None);
    assert!(exported.get("plans").is_none(), "{exported}");
}
