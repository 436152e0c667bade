//! The audit web's fleet page and its admin roles, over plain HTTP against
//! a real server: web admins made with `jmsctl admin add --role`; an
//! auditor sees the bastions and a live session but no write control
//! (Terminate, Revoke) and gets 403 from every write; an admin revokes a
//! bastion from the page.

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
