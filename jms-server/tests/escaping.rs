//! Commands and paths with control characters (`\r`, ESC sequences) as an
//! auditor sees them: `jmsctl` and the audit web write them visibly escaped,
//! so a typed `\r` or `ESC [2K` cannot hide what ran; `--json` keeps the
//! exact text.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::{enrolled, outcome, Server, JMSCTL};
use jms_core::password::totp_code;
use serde_json::{json, Value};

/// What was typed: a harmless-looking line that really ran `rm -rf /srv`.
const HIDDEN: &str = "rm -rf /srv\r\x1b[2Kls -la";
const HIDDEN_SHOWN: &str = "rm -rf /srv\\r\\x1b[2Kls -la";
const PATH: &str = "/tmp/\x1b[8msecret\x1b[0m.txt";
const PATH_SHOWN: &str = "/tmp/\\x1b[8msecret\\x1b[0m.txt";

fn events() -> Vec<Value> {
    let scope = json!({"session": "s-esc", "user": "alice", "asset": "web01", "account": "root", "username": "root"});
    let event = |id: &str, time: &str, kind: &str, fields: Value| {
        let mut e = scope.clone();
        e["id"] = id.into();
        e["time"] = time.into();
        e["event"] = kind.into();
        for (k, v) in fields.as_object().unwrap() {
            e[k] = v.clone();
        }
        e
    };
    vec![
        event(
            "e1",
            "2026-03-01T10:00:00.000Z",
            "session_start",
            json!({"kind": "shell", "protocol": "ssh", "client": "10.0.0.7", "command": null, "recording": null}),
        ),
        event(
            "e2",
            "2026-03-01T10:00:05.000Z",
            "command",
            json!({"command": HIDDEN, "kind": "interactive", "decision": "allow", "filter": null}),
        ),
        event(
            "e3",
            "2026-03-01T10:00:09.000Z",
            "transfer",
            json!({"via": "sftp", "operation": "upload", "path": PATH, "to": null, "size": 1, "result": "ok"}),
        ),
    ]
}

fn assert_no_raw_controls(text: &str, what: &str) {
    assert!(
        !text.contains(['\r', '\x1b']),
        "{what} must show no raw CR or ESC: {text:?}"
    );
}

#[test]
fn jmsctl_shows_control_characters_escaped_and_json_keeps_them_exact() {
    let server = Server::start();
    enrolled(&server, "b1").upload(&server, &events());
    let run = |args: &[&str]| {
        let (code, out, err) = outcome(&server.jmsctl(args));
        assert_eq!(code, 0, "jmsctl {args:?}: {err}");
        out
    };
    let found = run(&["command", "search", "srv"]);
    assert!(found.contains(HIDDEN_SHOWN), "{found:?}");
    assert_no_raw_controls(&found, "jmsctl command search");

    let show = run(&["session", "show", "s-esc"]);
    assert!(
        show.contains(HIDDEN_SHOWN) && show.contains(PATH_SHOWN),
        "{show:?}"
    );
    assert_no_raw_controls(&show, "jmsctl session show");

    let json: Value = serde_json::from_str(&run(&["command", "search", "srv", "--json"])).unwrap();
    assert_eq!(json[0]["command"], HIDDEN, "--json keeps the exact text");
}

#[test]
fn the_audit_web_shows_control_characters_escaped() {
    let server = Server::start();
    enrolled(&server, "b1").upload(&server, &events());
    // A web admin (jmsctl admin add), then a signed-in session cookie.
    let mut child = Command::new(JMSCTL)
        .args([
            "admin",
            "add",
            "auditor",
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
        .write_all(b"a long web admin passphrase\n")
        .unwrap();
    let (code, stdout, stderr) = outcome(&child.wait_with_output().unwrap());
    assert_eq!(code, 0, "{stderr}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOTP secret: "))
        .unwrap()
        .to_string();
    let http = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let code = format!(
        "{:06}",
        totp_code(&secret, chrono::Utc::now().timestamp()).unwrap()
    );
    let response = http
        .post(format!("{}/web/login", server.url))
        .header("origin", &server.url)
        .form(&[
            ("username", "auditor"),
            ("password", "a long web admin passphrase"),
            ("code", code.as_str()),
            ("next", "/web/commands"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 303, "signed in");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = |path: &str| {
        let response = http
            .get(format!("{}{path}", server.url))
            .header("cookie", &cookie)
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        response.text().unwrap()
    };
    let commands = page("/web/commands");
    assert!(commands.contains(HIDDEN_SHOWN), "{commands}");
    assert_no_raw_controls(&commands, "the commands page");
    let session = page("/web/sessions/s-esc");
    assert!(
        session.contains(HIDDEN_SHOWN) && session.contains(PATH_SHOWN),
        "{session}"
    );
    assert_no_raw_controls(&session, "the session page");
}
