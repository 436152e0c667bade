//! The engineers' web terminal end to end, in headless Chromium with a real
//! jms-server and a bastion enrolled with it: alice logs in to the portal,
//! opens a terminal on web01 (the server logs in to the bastion with a
//! one-time ticket and runs the target through the ForceCommand path),
//! types a command and reads its output from the xterm screen; a command
//! a filter denies is refused; the terminal is resized and the target sees
//! the new size; Unicode comes through; when the session ends the page says
//! so and offers to reconnect. The session's recording reaches the server
//! (with the browser's address as its source) and replays in the audit web.
//!
//! Screenshots go to `target/test-artifacts/web-terminal/`. Nothing here
//! measures time: every wait polls with a deadline.

use std::process::Command;

use jms_e2e::browser::Browser;
use jms_e2e::central::{eventually, Central};
use jms_e2e::run::{self, COMMAND_TIMEOUT};
use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::{BastionBuilder, Target};
use serde_json::Value;

const ALICE_PASSWORD: &str = "Alice-terminal-1";
const ADMIN_PASSWORD: &str = "a long web admin passphrase";

fn policy(target: &Target) -> String {
    let hash =
        jms_core::password::hash_password(ALICE_PASSWORD, jms_core::password::MIN_ITERATIONS)
            .expect("a password hash");
    format!(
        "users:
  - {{username: alice, name: Alice, password_hash: \"{hash}\"}}
assets:
  - name: web01
    address: {address}
    protocols: [{{name: ssh, port: {port}}}]
    accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]
grants:
  - {{name: alice-web, users: [alice], assets: [web01], accounts: [deploy], protocols: [ssh], actions: [connect]}}
command_filters:
  - name: no-forbidden
    priority: 10
    action: deny
    rules: ['forbidden-cmd']
    users: [\"@ALL\"]
    assets: [\"@ALL\"]
    accounts: [\"@ALL\"]
",
        address = target.address(),
        port = target.port(),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The xterm screen's text.
fn screen(b: &Browser) -> String {
    b.script("return window.jmsScreen ? window.jmsScreen() : '';")
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Types `keys` into the terminal (the real keyboard path: xterm's
/// textarea) and waits until the screen shows `expect`.
fn type_and_see(b: &Browser, keys: &str, expect: &str) {
    b.type_keys(".xterm-helper-textarea", keys);
    b.wait_for(&format!("`{expect}` on the terminal"), |b| {
        screen(b).contains(expect)
    });
}

/// A web admin (jmsctl on the server's data); her TOTP secret.
fn add_web_admin(central: &Central) -> String {
    let command = central.jmsctl_command(&[]);
    let out = run::run(
        Command::new(command.get_program())
            .args([
                "admin",
                "add",
                "audrey",
                "--role",
                "auditor",
                "--password-stdin",
            ])
            .args(["--iterations", "1000", "--data"])
            .arg(central.data_dir())
            .env_clear(),
        format!("{ADMIN_PASSWORD}\n").as_bytes(),
        COMMAND_TIMEOUT,
    );
    out.assert_success("jmsctl admin add");
    out.stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOTP secret: "))
        .unwrap_or_else(|| panic!("no TOTP secret in:\n{out}"))
        .to_string()
}

#[test]
fn a_web_terminal_is_an_ordinary_recorded_filtered_bastion_session() {
    let target = Target::start();
    let bastion = BastionBuilder::new().start();
    let central = Central::start_insecure();
    central.attach(&bastion, &central.url);
    let file = central.data_dir().join("../terminal-policy.yaml");
    std::fs::write(&file, policy(&target)).expect("write the policy");
    central
        .jmsctl(&["policy", "apply", file.to_str().expect("utf-8 path")])
        .assert_success("jmsctl policy apply");
    let base = central.url.clone();
    let b = Browser::start("web-terminal");

    b.goto(&format!("{base}/login"));
    b.fill("#username", "alice");
    b.fill("#password", ALICE_PASSWORD);
    b.click("#login");
    b.wait_for("alice's assets", |b| b.count("#engineer-name") == 1);

    // The bastion has the policy (alice reaches web01) before the terminal.
    let page = format!("{base}/terminal?asset=web01&account=deploy");
    eventually("a connected web terminal on web01", || {
        b.goto(&page);
        b.wait_for("the terminal to connect or drop", |b| {
            let status = b.text("#terminal-status");
            status == "connected" || status.starts_with("disconnected")
        });
        std::thread::sleep(std::time::Duration::from_millis(500));
        let status = b.text("#terminal-status");
        if status == "connected" {
            Ok(())
        } else {
            Err(status)
        }
    });
    type_and_see(&b, "echo web-$((6*7))\n", "web-42");
    // Unicode both ways: typed (through xterm's input path: WebDriver's
    // keyboard drops non-ASCII keys) and from the target (wide CJK).
    b.script(r"window.jmsTerminal.input('echo h\u00e9llo-\u4e16\r', true); return 1;");
    b.wait_for("typed Unicode echoed", |b| screen(b).contains("\nhéllo-世"));
    type_and_see(
        &b,
        "printf 'w\\344\\270\\226\\347\\225\\214w\\n'\n",
        "w世界w",
    );
    b.screenshot("1-command");

    // A denied command never runs.
    type_and_see(
        &b,
        "forbidden-cmd\n",
        "command refused by filter no-forbidden",
    );
    b.screenshot("2-denied");

    // Resize: the target sees the new size.
    b.script("window.jmsTerminal.resize(100, 30); return 1;");
    type_and_see(&b, "stty size\n", "30 100");
    b.screenshot("3-resized");

    // The session ends: the page says so and offers a new one.
    type_and_see(&b, "exit\n", "press Reconnect");
    b.wait_for("the reconnect button", |b| {
        b.script("return !document.getElementById('reconnect').hidden;") == Value::Bool(true)
    });
    b.screenshot("4-ended");

    // The recording reaches the server, from the browser's address.
    let session = eventually(
        "the web terminal's session and recording on the server",
        || {
            let (status, body) = central.api("GET", "/api/v1/sessions?user=alice", None);
            if status != 200 {
                return Err(format!("{status}: {body}"));
            }
            let page: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            let items = page["items"]
                .as_array()
                .or_else(|| page["sessions"].as_array())
                .cloned()
                .unwrap_or_default();
            let found = items.iter().find(|s| {
                s["source_ip"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("127.0.0.1 (web via 127.0.0.1)"))
            });
            let Some(found) = found else {
                return Err(format!("no web session yet: {body}"));
            };
            let id = found["id"].as_str().unwrap_or_default().to_string();
            let (status, cast) =
                central.api("GET", &format!("/api/v1/sessions/{id}/recording"), None);
            // The output as the terminal showed it: its events joined (under
            // load an echo arrives in pieces, so no one event holds a word).
            let shown = output_of(&cast);
            if status == 200 && shown.contains("web-42") && shown.contains("forbidden-cmd") {
                Ok(id)
            } else {
                Err(format!("recording {status}: {cast}"))
            }
        },
    );

    // It replays in the audit web.
    let secret = add_web_admin(&central);
    b.goto(&format!("{base}/web/login"));
    b.fill("#username", "audrey");
    b.fill("#password", ADMIN_PASSWORD);
    let code = jms_core::password::totp_code(&secret, now()).expect("a TOTP code");
    b.fill("#code", &format!("{code:06}"));
    b.click("#login");
    b.wait_for("the signed-in console", |b| b.count("#admin-name") == 1);
    b.goto(&format!("{base}/web/sessions/{session}/replay"));
    b.wait_for("the player", |b| b.count(".ap-player, .ap-wrapper") >= 1);
    b.screenshot("5-replay");
}

/// The output events of an asciicast v2 recording, joined.
fn output_of(cast: &str) -> String {
    cast.lines()
        .skip(1)
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event[1] == "o")
        .filter_map(|event| event[2].as_str().map(str::to_owned))
        .collect()
}

/// One raw HTTP/1.1 exchange with the server at `base` (`http://HOST:PORT`);
/// the head of the answer.
fn raw_http(base: &str, request: &str) -> String {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect to the server");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn the_terminal_socket_takes_a_portal_login_and_this_sites_origin_only() {
    let target = Target::start();
    let central = Central::start_insecure();
    let file = central.data_dir().join("../terminal-policy.yaml");
    std::fs::write(&file, policy(&target)).expect("write the policy");
    central
        .jmsctl(&["policy", "apply", file.to_str().expect("utf-8 path")])
        .assert_success("jmsctl policy apply");
    let base = central.url.clone();
    let host = base.trim_start_matches("http://").to_string();
    let form = format!("username=alice&password={ALICE_PASSWORD}&code=&next=%2F");
    let login = raw_http(
        &base,
        &format!(
            "POST /login HTTP/1.1\r\nHost: {host}\r\nOrigin: {base}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{form}",
            form.len()
        ),
    );
    let cookie = login
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("set-cookie")
                .then(|| value.trim().split(';').next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no session cookie in:\n{login}"));
    let upgrade = |origin: Option<&str>, cookie: Option<&str>| {
        let mut request = format!(
            "GET /terminal/ws?asset=web01&account=deploy HTTP/1.1\r\nHost: {host}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        );
        if let Some(origin) = origin {
            request.push_str(&format!("Origin: {origin}\r\n"));
        }
        if let Some(cookie) = cookie {
            request.push_str(&format!("Cookie: {cookie}\r\n"));
        }
        request.push_str("\r\n");
        let answer = raw_http(&base, &request);
        answer.lines().next().unwrap_or_default().to_string()
    };
    let foreign = upgrade(Some("http://evil.example"), Some(&cookie));
    assert!(foreign.contains(" 403"), "another site's page: {foreign}");
    let no_origin = upgrade(None, Some(&cookie));
    assert!(no_origin.contains(" 403"), "no Origin: {no_origin}");
    let no_login = upgrade(Some(&base), None);
    assert!(!no_login.contains(" 101"), "no portal login: {no_login}");
    let ours = upgrade(Some(&base), Some(&cookie));
    assert!(ours.contains(" 101"), "this site with the login: {ours}");
}
