//! The audit web's fleet page and its admin roles, over plain HTTP against
//! a real server: web admins made with `jmsctl admin add --role`; an
//! auditor sees the bastions and a live session but no write control
//! (Terminate, Revoke) and gets 403 from every write; an admin revokes a
//! bastion from the page. The jobs page shows an account job's steps,
//! its bastion's audit events and the accounts' verifications, never a
//! secret.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{enrolled, outcome, Server, JMSCTL};
use jms_core::password::totp_code;
use reqwest::blocking::Client as Http;
use reqwest::redirect::Policy;
use serde_json::json;

const PASSWORD: &str = "a long web admin passphrase";

/// `jmsctl admin add NAME --role ROLE`; returns the TOTP secret.
fn add_web_admin(server: &Server, name: &str, role: &str) -> String {
    let mut child = Command::new(JMSCTL)
        .args([
            "admin",
            "add",
            name,
            "--role",
            role,
            "--password-stdin",
            "--iterations",
            "1000",
            "--data",
        ])
        .arg(&server.data)
        .args(common::database_args(&server.data))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
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
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOTP secret: "))
        .unwrap()
        .to_string()
}

fn http() -> Http {
    Http::builder().redirect(Policy::none()).build().unwrap()
}

/// Signs in; returns the session cookie.
fn sign_in(server: &Server, name: &str, secret: &str) -> String {
    let code = format!(
        "{:06}",
        totp_code(secret, chrono::Utc::now().timestamp()).unwrap()
    );
    let response = http()
        .post(format!("{}/web/login", server.url))
        .header("origin", &server.url)
        .form(&[
            ("username", name),
            ("password", PASSWORD),
            ("code", &code),
            ("next", "/web/bastions"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 303, "{name} signs in");
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

fn get(server: &Server, cookie: &str, path: &str) -> (u16, String) {
    let response = http()
        .get(format!("{}{path}", server.url))
        .header("cookie", cookie)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

fn post(server: &Server, cookie: &str, path: &str, form: &[(&str, &str)]) -> u16 {
    http()
        .post(format!("{}{path}", server.url))
        .header("cookie", cookie)
        .header("origin", &server.url)
        .form(form)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn an_auditor_sees_no_write_control_and_an_admin_revokes_a_bastion() {
    let server = Server::start();
    let bastion = enrolled(&server, "bastion-1");
    let (status, _) = bastion.send_json(
        &server,
        "GET",
        "/api/v1/sync/control",
        "wait=0&agent=0.1.0&sessions=1&backlog=2048",
        b"",
    );
    assert_eq!(status, 200);
    bastion.upload(
        &server,
        &[json!({
            "id": "l1", "time": chrono::Utc::now().to_rfc3339(), "event": "session_start",
            "session": "s-live", "user": "alice", "asset": "db01", "account": "postgres",
            "username": "postgres", "kind": "shell", "protocol": "ssh", "client": "10.1.2.3",
            "command": null, "recording": null,
        })],
    );
    let auditor_secret = add_web_admin(&server, "carol", "auditor");
    let admin_secret = add_web_admin(&server, "root-admin", "admin");
    let list = Command::new(JMSCTL)
        .args(["admin", "list", "--data"])
        .arg(&server.data)
        .args(common::database_args(&server.data))
        .env_clear()
        .output()
        .unwrap();
    let (_, listed, _) = outcome(&list);
    assert!(
        listed.contains("carol\tauditor\t") && listed.contains("root-admin\tadmin\t"),
        "{listed}"
    );

    // The auditor: the fleet and the live session, no write control.
    let carol = sign_in(&server, "carol", &auditor_secret);
    let (status, page) = get(&server, &carol, "/web/bastions");
    assert_eq!(status, 200);
    assert!(page.contains("data-bastion=\"bastion-1\""), "{page}");
    assert!(
        page.contains("online") && page.contains("0.1.0") && page.contains("2.0 KiB"),
        "{page}"
    );
    assert!(
        !page.contains("Revoke") && !page.contains("<form class=\"revoke\""),
        "{page}"
    );
    let (status, page) = get(&server, &carol, "/web/sessions/s-live");
    assert_eq!(status, 200);
    assert!(
        page.contains(">Watch<") && !page.contains("Terminate"),
        "{page}"
    );
    let (status, page) = get(&server, &carol, "/web/sessions/s-live/live");
    assert_eq!(status, 200);
    assert!(
        page.contains("live-player") && !page.contains("terminate-form"),
        "{page}"
    );
    assert_eq!(
        post(
            &server,
            &carol,
            "/web/sessions/s-live/kill",
            &[("reason", "x")]
        ),
        403
    );
    assert_eq!(
        post(
            &server,
            &carol,
            "/web/bastions/bastion-1/revoke",
            &[("confirm", "yes")]
        ),
        403
    );
    assert_eq!(
        server.expect(200, "GET", "/api/v1/bastions/bastion-1", None)["status"],
        "online"
    );

    // The admin: a revoke form that needs its box ticked.
    let root = sign_in(&server, "root-admin", &admin_secret);
    let (_, page) = get(&server, &root, "/web/bastions");
    assert!(
        page.contains("action=\"/web/bastions/bastion-1/revoke\""),
        "{page}"
    );
    let (_, page) = get(&server, &root, "/web/sessions/s-live/live");
    assert!(page.contains("terminate-form"), "{page}");
    assert_eq!(
        post(&server, &root, "/web/bastions/bastion-1/revoke", &[]),
        400
    );
    assert_eq!(
        post(
            &server,
            &root,
            "/web/bastions/bastion-1/revoke",
            &[("confirm", "yes")]
        ),
        303
    );
    let (_, page) = get(&server, &root, "/web/bastions");
    assert!(page.contains(">revoked<"), "{page}");
    let oplog = server.expect(200, "GET", "/api/v1/oplog", None);
    assert_eq!(oplog["items"][0]["actor"], "web admin root-admin");
    assert_eq!(oplog["items"][0]["action"], "revoke");
    // The revoked bastion's session stays readable.
    let (status, _) = get(&server, &carol, "/web/sessions/s-live");
    assert_eq!(status, 200);
}

/// A same-site POST: status and page.
fn post_page(server: &Server, cookie: &str, path: &str, form: &[(&str, &str)]) -> (u16, String) {
    let response = http()
        .post(format!("{}{path}", server.url))
        .header("cookie", cookie)
        .header("origin", &server.url)
        .form(form)
        .send()
        .unwrap();
    (response.status().as_u16(), response.text().unwrap())
}

/// The `{"error"}` the API answers an admin token.
fn api_error(server: &Server, method: &str, path: &str, body: serde_json::Value) -> (u16, String) {
    let (status, answer) = server.admin(method, path, Some(body));
    (
        status,
        answer["error"].as_str().unwrap_or_default().to_string(),
    )
}

/// maud's escaping of a message inside a page.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Every console write route, with a form that would succeed.
const WRITES: &[(&str, &[(&str, &str)])] = &[
    ("/web/users", &[("username", "mallory")]),
    ("/web/users/alice", &[("name", "x")]),
    ("/web/users/alice/delete", &[("confirm", "yes")]),
    ("/web/users/alice/password-link", &[]),
    ("/web/users/alice/reset-mfa", &[]),
    ("/web/users/alice/unlock", &[]),
    ("/web/groups", &[("name", "evil")]),
    ("/web/groups/ops", &[("comment", "x")]),
    ("/web/groups/ops/delete", &[("confirm", "yes")]),
    ("/web/nodes", &[("path", "/Evil")]),
    ("/web/nodes/1", &[("path", "/Evil")]),
    ("/web/nodes/1/delete", &[("confirm", "yes")]),
    (
        "/web/inventory",
        &[("name", "evil"), ("address", "10.0.0.9")],
    ),
    ("/web/inventory/web01", &[("address", "10.0.0.9")]),
    ("/web/inventory/web01/delete", &[("confirm", "yes")]),
    (
        "/web/inventory/web01/accounts",
        &[("name", "x"), ("username", "x")],
    ),
    ("/web/inventory/web01/accounts/deploy", &[("username", "x")]),
    (
        "/web/inventory/web01/accounts/deploy/delete",
        &[("confirm", "yes")],
    ),
    ("/web/grants", &[("name", "evil")]),
    ("/web/grants/alice-web01", &[("comment", "x")]),
    ("/web/grants/alice-web01/delete", &[("confirm", "yes")]),
    ("/web/filters", &[("name", "evil")]),
    ("/web/filters/no-rm", &[("action", "allow")]),
    ("/web/filters/no-rm/delete", &[("confirm", "yes")]),
    ("/web/settings", &[("security.lockout_threshold", "99")]),
    ("/web/settings/mail/test", &[("to", "a@b.example")]),
];

#[test]
fn the_console_writes_through_the_api_with_its_messages_and_roles() {
    let server = Server::start();
    let admin = sign_in(&server, "root", &add_web_admin(&server, "root", "admin"));
    let version = server.version();

    // Create through the console: the API sees it, the log names her.
    let (status, _) = post_page(&server, &admin, "/web/groups", &[("name", "ops")]);
    assert_eq!(status, 303);
    let (status, page) = post_page(
        &server,
        &admin,
        "/web/users",
        &[
            ("username", "alice"),
            ("name", "Alice"),
            ("groups", "ops"),
            ("is_active", "on"),
        ],
    );
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Created alice."), "{page}");
    let alice = server.expect(200, "GET", "/api/v1/users/alice", None);
    assert_eq!(alice["groups"], json!(["ops"]));
    assert!(server.version() > version);
    let oplog = server.expect(200, "GET", "/api/v1/oplog", None);
    assert_eq!(oplog["items"][0]["actor"], "web admin root");

    // A refused write shows the API's own status and one-line message.
    let (api_status, message) = api_error(
        &server,
        "POST",
        "/api/v1/users",
        json!({"username": "bad name!"}),
    );
    let (status, page) = post_page(&server, &admin, "/web/users", &[("username", "bad name!")]);
    assert_eq!(status, api_status, "{page}");
    assert!(
        !message.is_empty() && page.contains(&escaped(&message)),
        "{message}\n{page}"
    );

    // Nodes with asset counts; an asset with an account whose secret is
    // write-only.
    for (path, form) in [
        ("/web/nodes", vec![("path", "/Default/prod")]),
        (
            "/web/inventory",
            vec![
                ("name", "web01"),
                ("address", "10.0.0.5"),
                ("protocols", "ssh:2222"),
                ("nodes", "/Default/prod"),
                ("is_active", "on"),
            ],
        ),
        (
            "/web/inventory/web01/accounts",
            vec![
                ("name", "deploy"),
                ("username", "deploy"),
                ("secret_type", "password"),
                ("secret", "Very-Secret-42"),
            ],
        ),
    ] {
        let (status, page) = post_page(&server, &admin, path, &form);
        assert_eq!(status, 303, "{path}: {page}");
    }
    let (_, page) = get(&server, &admin, "/web/nodes");
    assert!(page.contains("<td class=\"assets\">1</td>"), "{page}");
    assert!(
        page.contains("data-node=\"/Default\"") && page.contains("(implied)"),
        "{page}"
    );
    let node = server.expect(200, "GET", "/api/v1/nodes", None)["items"][0]["id"].clone();
    let (api_status, message) = api_error(
        &server,
        "DELETE",
        &format!("/api/v1/nodes/{node}"),
        json!(null),
    );
    let (status, page) = post_page(
        &server,
        &admin,
        &format!("/web/nodes/{node}/delete"),
        &[("confirm", "yes")],
    );
    assert_eq!(
        (status, api_status),
        (422, 422),
        "an asset names it: {page}"
    );
    assert!(page.contains(&escaped(&message)), "{message}\n{page}");
    let (_, page) = get(&server, &admin, "/web/inventory/web01");
    assert!(
        !page.contains("Very-Secret-42") && page.contains("set (blank keeps it)"),
        "{page}"
    );
    let account = server.expect(200, "GET", "/api/v1/assets/web01/accounts/deploy", None);
    assert_eq!(account["has_secret"], true);
    assert_eq!(
        server.expect(200, "GET", "/api/v1/assets/web01", None)["protocols"],
        json!([{"name": "ssh", "port": 2222}])
    );

    // A grant naming nobody: the API's message; then a good one, and the
    // coverage preview of a draft.
    let (api_status, message) = api_error(
        &server,
        "POST",
        "/api/v1/grants",
        json!({"name": "g1", "users": ["nobody"], "assets": ["web01"], "accounts": ["deploy"],
               "protocols": ["all"], "actions": ["all"]}),
    );
    let grant = |users: &'static str| {
        vec![
            ("name", "alice-web01"),
            ("users", users),
            ("assets", "web01"),
            ("accounts", "deploy"),
            ("accounts", "@INPUT"),
            ("protocols", "all"),
            ("actions", "all"),
            ("is_active", "on"),
        ]
    };
    let (status, page) = post_page(&server, &admin, "/web/grants", &grant("nobody"));
    assert_eq!(status, api_status, "{page}");
    assert!(
        page.contains(&escaped(&message.replace("g1", "alice-web01"))),
        "{message}\n{page}"
    );
    let (status, _) = post_page(&server, &admin, "/web/grants", &grant("alice"));
    assert_eq!(status, 303);
    let (status, page) = get(
        &server,
        &admin,
        "/web/grants/coverage?name=draft&users=alice&assets=web01&accounts=deploy&protocols=ssh&actions=connect&is_active=on",
    );
    assert_eq!(status, 200);
    assert!(
        page.contains("It covers 1 user(s) × asset(s): 1 pair(s)"),
        "{page}"
    );
    assert!(
        page.contains("<td>alice</td><td>web01</td><td>deploy</td>"),
        "{page}"
    );
    let (_, page) = get(&server, &admin, "/web/grants/coverage?name=d&users=nobody&assets=web01&accounts=deploy&protocols=ssh&actions=connect");
    assert!(
        page.contains("coverage-error") && page.contains("nobody"),
        "{page}"
    );
    let (status, _) = post_page(
        &server,
        &admin,
        "/web/filters",
        &[
            ("name", "no-rm"),
            ("action", "deny"),
            ("rules", "^rm "),
            ("users", "alice"),
            ("accounts", "@ALL"),
            ("is_active", "on"),
        ],
    );
    assert_eq!(status, 303);

    // A cross-site form is refused before anything happens.
    let response = http()
        .post(format!("{}/web/groups", server.url))
        .header("cookie", &admin)
        .header("origin", "http://evil.example")
        .form(&[("name", "evil")])
        .send()
        .unwrap();
    assert_eq!(response.status(), 403);
    server.expect(404, "GET", "/api/v1/groups/evil", None);

    // The auditor: every page, no write control; every write 403.
    let auditor = sign_in(
        &server,
        "carol",
        &add_web_admin(&server, "carol", "auditor"),
    );
    for path in [
        "/web/users",
        "/web/users/alice",
        "/web/groups",
        "/web/nodes",
        "/web/inventory",
        "/web/inventory/web01",
        "/web/grants",
        "/web/grants/alice-web01",
        "/web/filters",
        "/web/filters/no-rm",
        "/web/settings",
        "/web/oplog",
    ] {
        let (status, page) = get(&server, &auditor, path);
        assert_eq!(status, 200, "{path}");
        assert_eq!(
            page.matches("method=\"post\"").count(),
            1,
            "{path}: the logout form only:\n{page}"
        );
        assert!(!page.contains("Very-Secret-42"));
    }
    let before = server.version();
    for (path, form) in WRITES {
        let (status, page) = post_page(&server, &auditor, path, form);
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains("auditor role (read-only)"), "{path}: {page}");
    }
    assert_eq!(server.version(), before, "nothing changed");

    // The operator: policy writes, but not the settings.
    let operator = sign_in(&server, "olga", &add_web_admin(&server, "olga", "operator"));
    let (status, page) = post_page(&server, &operator, "/web/groups", &[("name", "devs")]);
    assert_eq!(status, 303, "{page}");
    for (path, form) in &WRITES[WRITES.len() - 2..] {
        let (status, page) = post_page(&server, &operator, path, form);
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains("needs admin"), "{path}: {page}");
    }
    let (_, page) = get(&server, &operator, "/web/settings");
    assert!(
        !page.contains("id=\"settings-form\"") && !page.contains("test-mail"),
        "{page}"
    );

    // The admin changes a setting; the API reads it.
    let (_, page) = get(&server, &admin, "/web/settings");
    assert!(page.contains("id=\"settings-form\""), "{page}");
    let settings = server.expect(200, "GET", "/api/v1/settings", None);
    let mut form: Vec<(String, String)> = Vec::new();
    for section in ["security", "audit", "mail"] {
        for (key, value) in settings[section].as_object().unwrap() {
            let name = format!("{section}.{key}");
            match value {
                serde_json::Value::Bool(true) => form.push((name, "on".into())),
                serde_json::Value::Bool(false) => {}
                serde_json::Value::String(s) => form.push((name, s.clone())),
                serde_json::Value::Array(_) => form.push((name, String::new())),
                other => form.push((name, other.to_string())),
            }
        }
    }
    for (name, value) in &mut form {
        if name == "security.lockout_threshold" {
            *value = "7".into();
        }
    }
    let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, page) = post_page(&server, &admin, "/web/settings", &form);
    assert_eq!(status, 303, "{page}");
    let settings = server.expect(200, "GET", "/api/v1/settings", None);
    assert_eq!(settings["security"]["lockout_threshold"], 7);
    let (status, page) = post_page(
        &server,
        &admin,
        "/web/settings/mail/test",
        &[("to", "a@b.example")],
    );
    let (api_status, message) = api_error(
        &server,
        "POST",
        "/api/v1/settings/mail/test",
        json!({"to": "a@b.example"}),
    );
    assert_eq!(status, api_status, "{page}");
    assert!(page.contains(&escaped(&message)), "{message}\n{page}");

    // Unlock: the API's answer, then the user's page says so.
    let (status, page) = post_page(&server, &admin, "/web/users/alice/unlock", &[]);
    assert_eq!(status, 303, "{page}");
    let (_, page) = get(&server, &admin, "/web/users/alice?note=unlocked");
    assert!(page.contains("Her lockout is lifted"), "{page}");
    assert_eq!(
        server.expect(200, "GET", "/api/v1/oplog", None)["items"][0]["actor"],
        "web admin root"
    );

    // Deletes need the box ticked, then go through.
    let (status, _) = post_page(&server, &admin, "/web/grants/alice-web01/delete", &[]);
    assert_eq!(status, 400);
    let (status, _) = post_page(
        &server,
        &admin,
        "/web/grants/alice-web01/delete",
        &[("confirm", "yes")],
    );
    assert_eq!(status, 303);
    server.expect(404, "GET", "/api/v1/grants/alice-web01", None);
    let (_, page) = get(&server, &admin, "/web/oplog");
    assert!(
        page.contains("web admin root") && page.contains("alice-web01"),
        "{page}"
    );
}

#[test]
fn the_jobs_page_shows_steps_events_and_verifications_and_never_a_secret() {
    let server = Server::start();
    let bastion = enrolled(&server, "bastion-1");
    let (status, _) = bastion.send_json(
        &server,
        "GET",
        "/api/v1/sync/control",
        "wait=0&agent=0.1.0&sessions=0&backlog=0",
        b"",
    );
    assert_eq!(status, 200);
    server.expect(
        201,
        "POST",
        "/api/v1/assets",
        Some(json!({"name": "web01", "address": "10.0.0.1",
                    "protocols": [{"name": "ssh", "port": 22}]})),
    );
    for (name, secret, privileged) in [
        ("root", "root-secret-4242", true),
        ("app", "app-secret-4242", false),
    ] {
        server.expect(
            201,
            "POST",
            "/api/v1/assets/web01/accounts",
            Some(
                json!({"name": name, "username": name, "secret_type": "password",
                        "secret": secret, "privileged": privileged}),
            ),
        );
    }
    let job = server.expect(
        201,
        "POST",
        "/api/v1/jobs",
        Some(json!({"kind": "rotate", "asset": "web01", "account": "app"})),
    );
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(job["bastion"], "bastion-1", "{job}");
    let report = json!({
        "ok": true, "changed": true, "new_secret_in_place": true,
        "steps": [
            {"name": "apply", "ok": true, "detail": "changed: password set\n<script>x</script>"},
            {"name": "verify_new", "ok": true, "detail": "logged in as app"},
        ],
    });
    let (status, done) = bastion.send_json(
        &server,
        "POST",
        &format!("/api/v1/sync/jobs/{id}"),
        "",
        serde_json::to_vec(&report).unwrap(),
    );
    assert_eq!(
        (status, done["status"].as_str()),
        (200, Some("ok")),
        "{done}"
    );
    bastion.upload(
        &server,
        &[json!({
            "id": "j1", "time": chrono::Utc::now().to_rfc3339(), "event": "job_step",
            "job": id, "kind": "rotate", "asset": "web01", "account": "app", "attempt": 1,
            "step": "apply", "ok": true, "detail": "changed: password set",
        })],
    );
    let shown = server.expect(200, "GET", &format!("/api/v1/jobs/{id}"), None);
    assert_eq!(shown["events"][0]["bastion"], "bastion-1", "{shown}");
    assert_eq!(shown["events"][0]["step"], "apply", "{shown}");

    let secret = add_web_admin(&server, "carol", "auditor");
    let carol = sign_in(&server, "carol", &secret);
    let (status, list) = get(&server, &carol, "/web/jobs");
    assert_eq!(status, 200, "{list}");
    assert!(list.contains(&format!("data-job=\"{id}\"")), "{list}");
    assert!(
        list.contains("data-account=\"app@web01\""),
        "the verification: {list}"
    );
    assert!(
        list.contains("href=\"/web/jobs\""),
        "the top bar links the page"
    );
    let (status, page) = get(&server, &carol, &format!("/web/jobs/{id}"));
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-step=\"verify_new\""), "{page}");
    assert!(page.contains("changed: password set"), "{page}");
    assert!(
        page.contains("&lt;script&gt;") && !page.contains("<script>x"),
        "output is escaped: {page}"
    );
    assert!(
        page.contains("bastion-1"),
        "the bastion's audit event: {page}"
    );
    let (status, _) = get(&server, &carol, "/web/jobs/job-none");
    assert_eq!(status, 404);
    // The new secret is in the vault now; it shows nowhere.
    let vault = server.expect(200, "GET", "/api/v1/policy?with_secrets=true", None);
    let new = vault["assets"][0]["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "app")
        .and_then(|a| a["secret"].as_str())
        .unwrap()
        .to_string();
    assert_ne!(new, "app-secret-4242", "the rotation was committed");
    for secret in ["root-secret-4242", "app-secret-4242", new.as_str()] {
        assert!(
            !list.contains(secret) && !page.contains(secret),
            "a secret on the jobs pages"
        );
    }
}
