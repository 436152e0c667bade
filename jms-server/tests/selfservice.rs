//! The email set-password flow against a real SMTP server on loopback
//! (Debian's python3-aiosmtpd, `tests/smtp_sink.py`): a new user is mailed
//! a one-time link, the link's page lists the password rules, refuses a
//! weak password naming each unmet rule, sets a good one (the policy
//! version moves and the exported hash verifies), enrolls TOTP only with a
//! right code, and never works twice; expired and replaced links are
//! refused; "forgot password" answers the same for everyone and mails only
//! real accounts; the "send test email" action reports SMTP failures as
//! 502 naming the step.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{outcome, Server};
use jms_core::password::{totp_code, verify_password};
use serde_json::{json, Value};

const SINK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/smtp_sink.py");
/// Debian's interpreter, where python3-aiosmtpd installs (not a pyenv one
/// that may come first on PATH).
const PYTHON: &str = "/usr/bin/python3";
/// How long a mail may take to arrive on a loaded machine.
const MAIL_WAIT: Duration = Duration::from_secs(90);

/// A loopback SMTP server writing each message to a directory.
struct SmtpSink {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        SmtpSink::start_with(None)
    }

    /// With `auth`, only that user and password may send.
    fn start_with(auth: Option<(&str, &str)>) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let mut command = Command::new(PYTHON);
        command
            .arg(SINK)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((user, password)) = auth {
            command
                .args(["--auth-user", user])
                .env("SMTP_SINK_PASSWORD", password);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot run {PYTHON} (apt-get install python3-aiosmtpd): {e}")
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(port) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("the SMTP sink did not start (is python3-aiosmtpd installed?): {line:?}");
        };
        SmtpSink {
            port: port.parse().unwrap(),
            child,
            dir,
        }
    }

    /// Every message delivered so far, in order.
    fn messages(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }

    /// Waits until `count` messages were delivered; returns them all.
    fn wait_for(&self, count: usize) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let messages = self.messages();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                started.elapsed() < MAIL_WAIT,
                "expected {count} messages, {} arrived in {MAIL_WAIT:?}: {messages:?}",
                messages.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Points the server's mail settings at the sink and enables mail.
fn configure_mail(server: &Server, sink: &SmtpSink, extra: Value) {
    let mut patch = json!({"mail": {
        "enabled": true,
        "smtp_host": "127.0.0.1",
        "smtp_port": sink.port,
        "smtp_security": "none",
        "from": "jms <jms@corp.example>",
        "site_url": server.url,
    }});
    common_merge(&mut patch, &extra);
    server.expect(200, "PATCH", "/api/v1/settings", Some(patch));
}

fn common_merge(target: &mut Value, patch: &Value) {
    if let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) {
        for (key, value) in patch {
            match target.get_mut(key) {
                Some(existing) if existing.is_object() && value.is_object() => {
                    common_merge(existing, value)
                }
                _ => {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
    }
}

/// The set-password link in a message.
fn link_in(server: &Server, message: &Value) -> String {
    let body = message["body"].as_str().unwrap();
    let prefix = format!("{}/password/set?token=", server.url);
    body.lines()
        .map(str::trim)
        .find(|line| line.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no link starting {prefix} in: {body}"))
        .to_string()
}

/// A browser: keeps the form cookie the pages set.
struct Browser {
    http: reqwest::blocking::Client,
    cookie: Option<String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            http: reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    fn keep_cookie(&mut self, response: &reqwest::blocking::Response) {
        if let Some(value) = response.headers().get("set-cookie") {
            let value = value.to_str().unwrap();
            assert!(
                value.contains("HttpOnly") && value.contains("SameSite=Strict"),
                "{value}"
            );
            self.cookie = Some(value.split(';').next().unwrap().to_string());
        }
    }

    fn get(&mut self, url: &str) -> (u16, String) {
        let response = self.http.get(url).send().unwrap();
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(headers["referrer-policy"], "same-origin");
        self.keep_cookie(&response);
        (response.status().as_u16(), response.text().unwrap())
    }

    fn post(&mut self, url: &str, form: &[(&str, &str)]) -> (u16, String) {
        self.post_with(url, form, None)
    }

    fn post_with(
        &mut self,
        url: &str,
        form: &[(&str, &str)],
        origin: Option<&str>,
    ) -> (u16, String) {
        let mut request = self.http.post(url).form(form);
        if let Some(cookie) = &self.cookie {
            request = request.header("cookie", cookie);
        }
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().unwrap();
        (response.status().as_u16(), response.text().unwrap())
    }
}

/// The value of the hidden input `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} in: {html}"))
        + marker.len();
    html[start..start + html[start..].find('"').unwrap()].to_string()
}

/// Fills the set-password form of `page` (fetched from `link`).
fn set_password(
    browser: &mut Browser,
    server: &Server,
    page: &str,
    password: &str,
    totp_code: &str,
) -> (u16, String) {
    let (token, csrf, secret) = (
        hidden(page, "token"),
        hidden(page, "csrf"),
        hidden(page, "totp_secret"),
    );
    browser.post(
        &format!("{}/password/set", server.url),
        &[
            ("token", &token),
            ("csrf", &csrf),
            ("totp_secret", &secret),
            ("password", password),
            ("confirm", password),
            ("totp_code", totp_code),
        ],
    )
}

/// A user's entry in the export with secrets.
fn exported_user(server: &Server, username: &str) -> Value {
    let doc = server.expect(200, "GET", "/api/v1/policy?with_secrets=true", None);
    doc["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == username)
        .unwrap_or_else(|| panic!("{username} not exported: {doc}"))
        .clone()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_new_user_is_mailed_a_link_that_sets_her_password_once() {
    let sink = SmtpSink::start();
    let server = Server::start();
    configure_mail(
        &server,
        &sink,
        json!({"security": {"password_min_length": 10, "password_require_symbol": true}}),
    );
    let created = server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "alice", "name": "Alice Liu", "email": "alice@corp.example"})),
    );
    assert_eq!(created["password_link"]["sent"], true, "{created}");
    assert_eq!(created["password_link"]["to"], "alice@corp.example");
    assert_eq!(created["has_password"], false);

    let messages = sink.wait_for(1);
    let mail = &messages[0];
    assert_eq!(mail["to"], json!(["alice@corp.example"]));
    assert_eq!(mail["from"], "jms@corp.example");
    assert_eq!(mail["subject"], "jms: set your password");
    assert!(mail["body"].as_str().unwrap().contains("Hello Alice Liu"));
    let link = link_in(&server, mail);

    // The page lists the rules of the settings.
    let mut browser = Browser::new();
    let (status, page) = browser.get(&link);
    assert_eq!(status, 200, "{page}");
    for rule in [
        "At least 10 characters",
        "At least one upper-case letter (A-Z)",
        "At least one lower-case letter (a-z)",
        "At least one digit (0-9)",
        "At least one symbol",
    ] {
        assert!(page.contains(rule), "rule {rule:?} not listed: {page}");
    }
    assert!(page.contains("<svg"), "the QR code is inline");
    assert!(
        !page.contains("src=\"http"),
        "nothing is loaded from elsewhere"
    );

    // A weak password is refused, each unmet rule named; nothing changes.
    let version = server.version();
    let (status, refused) = set_password(&mut browser, &server, &page, "weakpass", "");
    assert_eq!(status, 422, "{refused}");
    for unmet in [
        "Not met: At least 10 characters",
        "Not met: At least one upper-case letter (A-Z)",
        "Not met: At least one digit (0-9)",
        "Not met: At least one symbol",
    ] {
        assert!(refused.contains(unmet), "{unmet:?} not named: {refused}");
    }
    assert!(!refused.contains("Not met: At least one lower-case"));
    assert_eq!(server.version(), version);

    // A form without its cookie (another site's POST) is refused.
    let mut stranger = Browser::new();
    let (status, _) = set_password(&mut stranger, &server, &page, "Correct-Horse-9!", "");
    assert_eq!(status, 403);
    let (status, _) = browser.post_with(
        &format!("{}/password/set", server.url),
        &[
            ("token", &hidden(&page, "token")),
            ("csrf", &hidden(&page, "csrf")),
        ],
        Some("https://evil.example"),
    );
    assert_eq!(status, 403, "a foreign Origin is refused");

    // A good one is set: the version moves and the hash verifies.
    let (status, done) = set_password(&mut browser, &server, &page, "Correct-Horse-9!", "");
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("Password set"), "{done}");
    assert!(server.version() > version, "the policy version moves");
    let alice = exported_user(&server, "alice");
    let hash = alice["password_hash"].as_str().unwrap();
    assert!(hash.starts_with("pbkdf2_sha256$"), "{hash}");
    assert!(verify_password(b"Correct-Horse-9!", hash).unwrap());
    assert!(alice.get("totp_secret").is_none() || alice["totp_secret"].is_null());
    let view = server.expect(200, "GET", "/api/v1/users/alice", None);
    assert_eq!(view["has_password"], true);

    // Logged: the link sent, then the change by the user herself.
    let log = server.expect(200, "GET", "/api/v1/oplog", None);
    let entries = log["items"].as_array().unwrap();
    assert!(entries.iter().any(|e| e["action"] == "send-password-link"
        && e["name"] == "alice"
        && e["actor"] == "token 1 (admin)"));
    assert!(entries.iter().any(|e| e["action"] == "update"
        && e["name"] == "alice"
        && e["actor"]
            .as_str()
            .unwrap()
            .starts_with("self-service: alice")
        && e["fields"]
            .as_array()
            .unwrap()
            .contains(&json!("password_hash"))));

    // The link never works twice.
    let (status, again) = browser.get(&link);
    assert_eq!(status, 410, "{again}");
    assert!(again.contains("already used"), "{again}");
    let (status, _) = set_password(&mut browser, &server, &page, "Another-Horse-7!", "");
    assert_eq!(status, 410);
    let alice = exported_user(&server, "alice");
    assert!(verify_password(
        b"Correct-Horse-9!",
        alice["password_hash"].as_str().unwrap()
    )
    .unwrap());

    // Links that never were.
    let (status, unknown) = browser.get(&format!(
        "{}/password/set?token={}",
        server.url,
        "ab".repeat(32)
    ));
    assert_eq!(status, 404, "{unknown}");
    let (status, _) = browser.get(&format!("{}/password/set?token=junk", server.url));
    assert_eq!(status, 404);
    let (status, _) = browser.get(&format!("{}/password/set", server.url));
    assert_eq!(status, 404);
}

#[test]
fn expired_and_replaced_links_are_refused_and_admins_can_resend() {
    let sink = SmtpSink::start();
    let server = Server::start();
    configure_mail(&server, &sink, json!({"mail": {"link_lifetime": "1s"}}));
    let created = server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "bob", "email": "bob@corp.example"})),
    );
    assert_eq!(created["password_link"]["sent"], true, "{created}");
    let expired = link_in(&server, &sink.wait_for(1)[0]);
    std::thread::sleep(Duration::from_millis(2100));
    let mut browser = Browser::new();
    let (status, page) = browser.get(&expired);
    assert_eq!(status, 410, "{page}");
    assert!(page.contains("expired"), "{page}");

    // Resends (API, then jmsctl): each new link replaces the older ones.
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {"link_lifetime": "2h"}})),
    );
    let sent = server.expect(200, "POST", "/api/v1/users/bob/password-link", None);
    assert_eq!(sent["sent_to"], "bob@corp.example");
    let second = link_in(&server, &sink.wait_for(2)[1]);
    assert_eq!(sink.messages()[1]["subject"], "jms: set a new password");
    let (status, page) = browser.get(&second);
    assert_eq!(status, 200, "{page}");

    let (code, out, err) = outcome(&server.jmsctl(&["user", "send-link", "bob"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("set-password link for bob sent to bob@corp.example"),
        "{out}"
    );
    let third = link_in(&server, &sink.wait_for(3)[2]);
    let (status, replaced) = browser.get(&second);
    assert_eq!(status, 410, "{replaced}");
    assert!(replaced.contains("newer link"), "{replaced}");
    // A form opened before the resend is refused too.
    let (status, _) = set_password(&mut browser, &server, &page, "Correct-Horse-9", "");
    assert_eq!(status, 410);
    let (status, page) = browser.get(&third);
    assert_eq!(status, 200);
    let (status, _) = set_password(&mut browser, &server, &page, "Correct-Horse-9", "");
    assert_eq!(status, 200);

    // What cannot be sent.
    let (code, _, err) = outcome(&server.jmsctl(&["user", "send-link", "ghost"]));
    assert_eq!(
        (code, err.as_str()),
        (1, "jmsctl: user `ghost` not found (HTTP 404)\n")
    );
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "carl"})),
    );
    let body = server.expect(409, "POST", "/api/v1/users/carl/password-link", None);
    assert_eq!(
        body["error"],
        "user `carl` has no email address: set one first"
    );
    assert_eq!(sink.messages().len(), 3, "nothing else was mailed");

    // jmsctl user add says where the link went.
    let (code, out, err) =
        outcome(&server.jmsctl(&["user", "add", "gina", "--email", "gina@corp.example"]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created user gina"), "{out}");
    assert!(
        out.contains("set-password link sent to gina@corp.example"),
        "{out}"
    );
    assert_eq!(sink.wait_for(4)[3]["to"], json!(["gina@corp.example"]));
}

#[test]
fn forgot_password_answers_the_same_and_mails_only_real_accounts() {
    let sink = SmtpSink::start();
    let server = Server::start();
    configure_mail(&server, &sink, json!({}));
    for name in ["carol", "dave"] {
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
        Some(json!({"username": "idle", "email": "idle@corp.example", "is_active": false})),
    );
    assert_eq!(sink.wait_for(3).len(), 3, "three welcome mails");

    let forgot = format!("{}/password/forgot", server.url);
    let mut browser = Browser::new();
    let (status, form) = browser.get(&forgot);
    assert_eq!(status, 200, "{form}");
    let csrf = hidden(&form, "csrf");
    let ask = |browser: &mut Browser, login: &str| {
        browser.post(&forgot, &[("csrf", &csrf), ("login", login)])
    };

    // Unknown, disabled and real accounts get the very same answer.
    let answers: Vec<(u16, String)> = [
        "nobody",
        "nobody@corp.example",
        "idle",
        "carol",
        "CAROL@corp.example",
    ]
    .iter()
    .map(|login| ask(&mut browser, login))
    .collect();
    assert_eq!(answers[0].0, 200, "{}", answers[0].1);
    assert!(answers[0].1.contains("If an account matches"));
    for (status, body) in &answers[1..] {
        assert_eq!((*status, body), (answers[0].0, &answers[0].1));
    }
    // The queue is handled in order: once carol's second mail is in,
    // every earlier request was handled.
    let messages = sink.wait_for(5);
    assert_eq!(messages.len(), 5, "{messages:?}");
    for mail in &messages[3..] {
        assert_eq!(mail["to"], json!(["carol@corp.example"]));
        assert_eq!(mail["subject"], "jms: set a new password");
    }

    // Per user: a third link, then no more (the answer stays the same).
    assert_eq!(ask(&mut browser, "carol"), answers[0]);
    sink.wait_for(6);
    assert_eq!(ask(&mut browser, "carol"), answers[0]);
    assert_eq!(ask(&mut browser, "dave"), answers[0]);
    let messages = sink.wait_for(7);
    assert_eq!(messages.len(), 7, "{messages:?}");
    assert_eq!(
        messages[6]["to"],
        json!(["dave@corp.example"]),
        "carol got no 4th link"
    );

    // Forms from elsewhere are refused.
    let (status, _) = Browser::new().post(&forgot, &[("csrf", &csrf), ("login", "carol")]);
    assert_eq!(status, 403, "no cookie");
    let (status, _) = browser.post_with(
        &forgot,
        &[("csrf", &csrf), ("login", "carol")],
        Some("https://evil.example"),
    );
    assert_eq!(status, 403, "foreign Origin");

    // Per source IP: 10 requests in the window (8 so far), then 429.
    for _ in 9..=10 {
        let (status, _) = ask(&mut browser, "nobody");
        assert_eq!(status, 200);
    }
    let (status, body) = ask(&mut browser, "nobody");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("Too many requests"));
}

#[test]
fn totp_enrollment_needs_one_right_code() {
    let sink = SmtpSink::start();
    let server = Server::start();
    configure_mail(&server, &sink, json!({}));
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "erin", "email": "erin@corp.example"})),
    );
    let link = link_in(&server, &sink.wait_for(1)[0]);
    let mut browser = Browser::new();
    let (_, page) = browser.get(&link);
    assert!(page.contains("(optional)"), "{page}");
    let secret = hidden(&page, "totp_secret");
    assert_eq!(secret.len(), 32, "{secret}");
    let shown: String = secret
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(page.contains(&shown), "the secret is shown for typing in");

    // A wrong code is refused and nothing is saved.
    let step = now() / 30;
    let valid: Vec<u32> = (step - 2..=step + 2)
        .map(|s| totp_code(&secret, s * 30).unwrap())
        .collect();
    let wrong = (0..1_000_000u32).find(|c| !valid.contains(c)).unwrap();
    let (status, refused) = set_password(
        &mut browser,
        &server,
        &page,
        "Correct-Horse-9",
        &format!("{wrong:06}"),
    );
    assert_eq!(status, 422, "{refused}");
    assert!(refused.contains("two-factor code is wrong"), "{refused}");
    assert_eq!(
        server.expect(200, "GET", "/api/v1/users/erin", None)["has_password"],
        false
    );

    // The secret is bound to the form: another one is refused.
    let tampered = page.replace(&secret, "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP");
    let (status, _) = set_password(
        &mut browser,
        &server,
        &tampered,
        "Correct-Horse-9",
        "123456",
    );
    assert_eq!(status, 403);

    // The right code enrolls it with the password.
    let code = format!("{:06}", totp_code(&secret, now()).unwrap());
    let (status, done) = set_password(&mut browser, &server, &page, "Correct-Horse-9", &code);
    assert_eq!(status, 200, "{done}");
    assert!(done.contains("authenticator app is enrolled"), "{done}");
    let erin = exported_user(&server, "erin");
    assert_eq!(erin["totp_secret"], secret);
    assert!(verify_password(b"Correct-Horse-9", erin["password_hash"].as_str().unwrap()).unwrap());

    // Where the settings require a second factor, the code is required.
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"security": {"mfa_required": "all"}})),
    );
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "finn", "email": "finn@corp.example"})),
    );
    let link = link_in(&server, &sink.wait_for(2)[1]);
    let (_, page) = browser.get(&link);
    assert!(page.contains("(required)"), "{page}");
    let (status, refused) = set_password(&mut browser, &server, &page, "Correct-Horse-9", "");
    assert_eq!(status, 422);
    assert!(
        refused.contains("Two-factor authentication is required"),
        "{refused}"
    );
}

#[test]
fn a_mailed_link_never_replaces_an_enrolled_second_factor() {
    let sink = SmtpSink::start();
    let server = Server::start();
    configure_mail(&server, &sink, json!({}));
    server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "erin", "email": "erin@corp.example"})),
    );
    let mut browser = Browser::new();
    let (_, page) = browser.get(&link_in(&server, &sink.wait_for(1)[0]));
    let enrolled = hidden(&page, "totp_secret");
    let code = format!("{:06}", totp_code(&enrolled, now()).unwrap());
    let (status, done) = set_password(&mut browser, &server, &page, "Correct-Horse-9", &code);
    assert_eq!(status, 200, "{done}");
    assert_eq!(exported_user(&server, "erin")["totp_secret"], enrolled);

    // Whoever reads her mail asks for a new password...
    let forgot = format!("{}/password/forgot", server.url);
    let mut attacker = Browser::new();
    let (_, form) = attacker.get(&forgot);
    let csrf = hidden(&form, "csrf");
    let (status, _) = attacker.post(&forgot, &[("csrf", &csrf), ("login", "erin")]);
    assert_eq!(status, 200);
    let link = link_in(&server, &sink.wait_for(2)[1]);
    let (status, page) = attacker.get(&link);
    assert_eq!(status, 200, "{page}");
    assert!(
        !page.contains("Scan this code") && page.contains("stays enrolled"),
        "the page must not offer to enroll another app: {page}"
    );
    // ...and tries to enroll her own app with the form's secret anyway.
    let offered = hidden(&page, "totp_secret");
    let code = format!("{:06}", totp_code(&offered, now()).unwrap());
    let (status, refused) = set_password(&mut attacker, &server, &page, "Attacker-Horse-9", &code);
    assert_eq!(status, 422, "{refused}");
    assert!(refused.contains("cannot replace"), "{refused}");
    let erin = exported_user(&server, "erin");
    assert_eq!(
        erin["totp_secret"], enrolled,
        "the second factor is unchanged"
    );
    assert!(
        verify_password(b"Correct-Horse-9", erin["password_hash"].as_str().unwrap()).unwrap(),
        "nothing changed"
    );

    // The link still sets the password alone; the second factor stays.
    let (status, done) = set_password(&mut attacker, &server, &page, "Another-Horse-9", "");
    assert_eq!(status, 200, "{done}");
    let erin = exported_user(&server, "erin");
    assert_eq!(
        erin["totp_secret"], enrolled,
        "the second factor is unchanged"
    );

    // An admin reset clears it; the next link may enroll a new app.
    server.expect(
        200,
        "PATCH",
        "/api/v1/users/erin",
        Some(json!({"totp_secret": null})),
    );
    assert_eq!(
        server.expect(200, "GET", "/api/v1/users/erin", None)["has_totp"],
        false
    );
}

#[test]
fn the_test_email_goes_out_and_smtp_failures_name_the_step() {
    let sink = SmtpSink::start_with(Some(("jms", "mail-pw-7")));
    let server = Server::start();
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {
            "smtp_host": "127.0.0.1",
            "smtp_port": sink.port,
            "smtp_security": "none",
            "username": "jms",
            "password": "mail-pw-7",
            "from": "jms@corp.example",
        }})),
    );
    let settings = server.expect(200, "GET", "/api/v1/settings", None);
    assert_eq!(settings["mail"]["has_password"], true);
    assert!(settings["mail"].get("password").is_none(), "write-only");

    // Mail needs not be enabled to try the settings.
    let sent = server.expect(
        200,
        "POST",
        "/api/v1/settings/mail/test",
        Some(json!({"to": "ops@corp.example"})),
    );
    assert_eq!(sent["sent_to"], "ops@corp.example");
    assert!(sent["reply"].as_str().unwrap().starts_with("250"), "{sent}");
    let mail = &sink.wait_for(1)[0];
    assert_eq!(mail["subject"], "jms: test message");
    assert_eq!(mail["to"], json!(["ops@corp.example"]));

    let (code, out, err) =
        outcome(&server.jmsctl(&["settings", "mail-test", "--to", "ops2@corp.example"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "test message sent to ops2@corp.example via 127.0.0.1:{} (250",
            sink.port
        )),
        "{out}"
    );
    sink.wait_for(2);

    let body = server.expect(
        400,
        "POST",
        "/api/v1/settings/mail/test",
        Some(json!({"to": "not an address"})),
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not an email address"),
        "{body}"
    );

    // A wrong password: 502 naming authentication.
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {"password": "wrong"}})),
    );
    let body = server.expect(
        502,
        "POST",
        "/api/v1/settings/mail/test",
        Some(json!({"to": "ops@corp.example"})),
    );
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("SMTP authentication failed"), "{error}");
    assert!(
        !error.contains("wrong"),
        "the password is not echoed: {error}"
    );

    // STARTTLS asked of a server without it.
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {"smtp_security": "starttls", "password": "mail-pw-7"}})),
    );
    let body = server.expect(
        502,
        "POST",
        "/api/v1/settings/mail/test",
        Some(json!({"to": "ops@corp.example"})),
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("SMTP STARTTLS failed"),
        "{body}"
    );

    // Nobody listening: 502 naming the connection, also through jmsctl.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    server.expect(
        200,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {"smtp_security": "none", "smtp_port": closed}})),
    );
    let body = server.expect(
        502,
        "POST",
        "/api/v1/settings/mail/test",
        Some(json!({"to": "ops@corp.example"})),
    );
    let error = body["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!("SMTP connect failed (127.0.0.1:{closed})")),
        "{error}"
    );
    let (code, _, err) =
        outcome(&server.jmsctl(&["settings", "mail-test", "--to", "ops@corp.example"]));
    assert_eq!(code, 1);
    assert!(
        err.starts_with("jmsctl: SMTP connect failed") && err.ends_with("(HTTP 502)\n"),
        "{err}"
    );
    assert_eq!(sink.messages().len(), 2);

    // With mail off, a new user gets no link (and is still created).
    let created = server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "hana", "email": "hana@corp.example"})),
    );
    assert_eq!(created["password_link"]["sent"], false);
    assert!(created["password_link"]["error"]
        .as_str()
        .unwrap()
        .starts_with("mail is not enabled"));
    server.expect(409, "POST", "/api/v1/users/hana/password-link", None);
    // A user created with a password gets none either.
    let created = server.expect(
        201,
        "POST",
        "/api/v1/users",
        Some(json!({"username": "ivan", "email": "ivan@corp.example",
                    "password_hash": jms_core::password::hash_password("Correct-Horse-9", 1000).unwrap()})),
    );
    assert!(created.get("password_link").is_none(), "{created}");

    // Enabling mail needs a site URL for the links.
    let body = server.expect(
        422,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {"enabled": true}})),
    );
    assert_eq!(
        body["error"],
        "mail: enabled needs smtp_host, from and site_url"
    );
    let body = server.expect(
        422,
        "PATCH",
        "/api/v1/settings",
        Some(json!({"mail": {"site_url": "ftp://x"}})),
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("mail.site_url:"),
        "{body}"
    );
}

/// A server whose log (at debug level) goes to a file.
struct LoggedServer {
    child: Child,
    url: String,
    admin: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoggedServer {
    fn start() -> LoggedServer {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let admin = common::create_token(&data, "admin", "admin");
        let log = dir.path().join("server.log");
        let mut child = Command::new(common::SERVER)
            .arg("--data")
            .arg(&data)
            .args(common::database_args(&data))
            .args(["--listen", "127.0.0.1:0", "--insecure-http"])
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("jms-server did not start: {line:?}"))
            .to_string();
        LoggedServer {
            child,
            url,
            admin,
            log,
            _dir: dir,
        }
    }

    fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().unwrap()
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        common::drop_test_database(&self._dir.path().join("data"));
    }
}

#[test]
fn tokens_passwords_and_secrets_never_reach_the_log() {
    let sink = SmtpSink::start_with(Some(("jms", "mail-pw-7")));
    let mut server = LoggedServer::start();
    server.call(
        reqwest::Method::PATCH,
        "/api/v1/settings",
        json!({"mail": {
            "enabled": true, "smtp_host": "127.0.0.1", "smtp_port": sink.port,
            "smtp_security": "none", "username": "jms", "password": "mail-pw-7",
            "from": "jms@corp.example", "site_url": server.url,
        }}),
    );
    server.call(
        reqwest::Method::POST,
        "/api/v1/users",
        json!({"username": "kim", "email": "kim@corp.example"}),
    );
    let body = sink.wait_for(1)[0]["body"].as_str().unwrap().to_string();
    let prefix = format!("{}/password/set?token=", server.url);
    let link = body
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap()
        .to_string();
    let token = link.strip_prefix(&prefix).unwrap().to_string();
    let mut browser = Browser::new();
    let (_, page) = browser.get(&link);
    let secret = hidden(&page, "totp_secret");
    let code = format!("{:06}", totp_code(&secret, now()).unwrap());
    let (token_field, csrf) = (hidden(&page, "token"), hidden(&page, "csrf"));
    let form = [
        ("token", token_field.as_str()),
        ("csrf", csrf.as_str()),
        ("totp_secret", secret.as_str()),
        ("password", "Secret-Horse-42"),
        ("confirm", "Secret-Horse-42"),
        ("totp_code", code.as_str()),
    ];
    let (status, done) = browser.post(&format!("{}/password/set", server.url), &form);
    assert_eq!(status, 200, "{done}");
    let _ = server.child.kill();
    let _ = server.child.wait();

    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("/password/set") && log.contains("password set by link"),
        "the log records the requests: {log}"
    );
    for secret in [
        token.as_str(),
        "Secret-Horse-42",
        secret.as_str(),
        "mail-pw-7",
        csrf.as_str(),
    ] {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
    }
}
