//! The audit web against a real jms-server, seeded through the real sync
//! API (an enrolled bastion's signed event batch and resumable recording
//! upload), driven in headless Chromium through chromedriver (WebDriver,
//! `fantoccini`): a web admin made with `jmsctl admin add` signs in with
//! password + TOTP (a wrong code is refused), lists and filters sessions,
//! opens one, searches a command and follows its link into the replay,
//! where the player shows the recorded text at that moment, seeks, plays,
//! pauses and changes speed. Screenshots go to
//! `target/test-artifacts/web/`.
//!
//! The login rules (cookie flags, cross-site POSTs, TOTP replay, lockout,
//! logout, headers, assets) are checked over plain HTTP as well.
//!
//! Needs Debian's `chromium` and `chromium-driver`: without them the test
//! fails, saying so.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{enrolled, outcome, Server, SyncBastion, JMSCTL};
use fantoccini::{Client, ClientBuilder, Locator};
use jms_core::password::totp_code;
use jms_sync::bundle::hex;
use reqwest::blocking::Client as Http;
use reqwest::redirect::Policy;
use ring::digest::{digest, SHA256};
use serde_json::{json, Value};

const ADMIN: &str = "auditor";
const PASSWORD: &str = "a long web admin passphrase";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest wait for anything in the browser (the machine may be loaded).
const PATIENCE: Duration = Duration::from_secs(60);

// ---- the server side -------------------------------------------------------

/// Adds the web admin with `jmsctl admin add`; returns her TOTP secret.
fn add_web_admin(server: &Server) -> String {
    let mut child = Command::new(JMSCTL)
        .args([
            "admin",
            "add",
            ADMIN,
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
        .expect("run jmsctl admin add");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, 0, "jmsctl admin add failed: {stderr}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOTP secret: "))
        .unwrap_or_else(|| panic!("no TOTP secret in: {stdout}"))
        .to_string();
    assert!(
        stdout.contains(&format!("otpauth://totp/jms:{ADMIN}?secret={secret}")),
        "the otpauth URI is printed: {stdout}"
    );
    let list = Command::new(JMSCTL)
        .args(["admin", "list", "--data"])
        .arg(&server.data)
        .env_clear()
        .output()
        .unwrap();
    let (code, stdout, stderr) = outcome(&list);
    assert_eq!(code, 0, "jmsctl admin list: {stderr}");
    assert!(
        stdout.starts_with(&format!("{ADMIN}\t")),
        "listed: {stdout}"
    );
    assert!(!stdout.contains(&secret), "list never shows the secret");
    secret
}

/// A TOTP code `steps` 30-second steps from now (the server accepts ±1).
fn code(secret: &str, steps: i64) -> String {
    let at = chrono::Utc::now().timestamp() + steps * 30;
    format!("{:06}", totp_code(secret, at).unwrap())
}

/// Six digits that are not a valid code anywhere near now.
fn wrong_code(secret: &str) -> String {
    let valid: Vec<String> = (-2..=2).map(|s| code(secret, s)).collect();
    (0..)
        .map(|n| format!("{:06}", (123_456 + n * 7919) % 1_000_000))
        .find(|c| !valid.contains(c))
        .unwrap()
}

/// When the seeded sessions happened: an hour ago, so that time filters
/// can cut between them.
struct Timeline {
    start: chrono::DateTime<chrono::Utc>,
}

impl Timeline {
    fn at(&self, seconds: f64) -> String {
        let t = self.start + chrono::Duration::milliseconds((seconds * 1000.0) as i64);
        t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }
}

/// The recording of `s-web`: what the engineer saw, second by second.
fn web_recording(start: i64) -> Vec<u8> {
    let header = json!({
        "version": 2, "width": 80, "height": 24, "timestamp": start,
        "title": "alice@web01", "env": {"TERM": "xterm-256color"},
    });
    // Typed characters echo before Enter; output follows it.
    let events = [
        (0.5, "alice@web01:~$ "),
        (1.5, "uptime"),
        (2.2, "\r\n 17:00:01 up 3 days,  2 users\r\nalice@web01:~$ "),
        (4.0, "cat /etc/hostname"),
        (5.2, "\r\nweb01-prod-hostname\r\nalice@web01:~$ "),
        (7.5, "rm -rf /tmp/x"),
        (
            8.1,
            "\r\njms: command refused by filter no-rm\r\nalice@web01:~$ ",
        ),
        (10.5, "echo done"),
        (11.2, "\r\nLATE-OUTPUT-MARKER\r\nalice@web01:~$ "),
        (12.0, "exit\r\n"),
    ];
    let mut cast = serde_json::to_string(&header).unwrap();
    cast.push('\n');
    for (t, text) in events {
        cast.push_str(&serde_json::to_string(&json!([t, "o", text])).unwrap());
        cast.push('\n');
    }
    cast.into_bytes()
}

/// Three sessions through the sync API: `s-web` (alice on web01, ended,
/// 3 commands, 1 transfer, a recording), `s-db` (bob on db01, ended, 30
/// minutes later) and `s-live` (alice on db01, still online).
fn seed(server: &Server) -> Timeline {
    let bastion = enrolled(server, "bastion-1");
    let timeline = Timeline {
        start: chrono::Utc::now() - chrono::Duration::hours(1),
    };
    let t = |s: f64| timeline.at(s);
    let scope = |session: &str, user: &str, asset: &str, account: &str| json!({"session": session, "user": user, "asset": asset, "account": account, "username": account});
    let event = |id: &str, time: String, kind: &str, scope: &Value, extra: Value| {
        let mut e = scope.clone();
        let map = e.as_object_mut().unwrap();
        map.insert("id".into(), json!(id));
        map.insert("time".into(), json!(time));
        map.insert("event".into(), json!(kind));
        map.extend(extra.as_object().unwrap().clone());
        e
    };
    let web = scope("s-web", "alice", "web01", "root");
    let db = scope("s-db", "bob", "db01", "postgres");
    let live = scope("s-live", "alice", "db01", "postgres");
    let events = vec![
        event(
            "w1",
            t(0.0),
            "session_start",
            &web,
            json!({"kind": "shell", "protocol": "ssh", "client": "10.1.2.3", "command": null, "recording": "s-web.cast"}),
        ),
        event(
            "w2",
            t(2.0),
            "command",
            &web,
            json!({"command": "uptime", "kind": "interactive", "decision": "allow", "filter": null}),
        ),
        event(
            "w3",
            t(5.0),
            "command",
            &web,
            json!({"command": "cat /etc/hostname", "kind": "interactive", "decision": "allow", "filter": null}),
        ),
        event(
            "w4",
            t(8.0),
            "command",
            &web,
            json!({"command": "rm -rf /tmp/x", "kind": "interactive", "decision": "deny", "filter": "no-rm"}),
        ),
        event(
            "w5",
            t(9.0),
            "transfer",
            &web,
            json!({"via": "sftp", "operation": "upload", "path": "/root/deploy.tar.gz", "to": null, "size": 2_621_440, "result": "ok"}),
        ),
        event(
            "w6",
            t(12.0),
            "session_end",
            &web,
            json!({"exit_status": 0, "reason": null, "duration_ms": 12_000, "bytes_in": 120, "bytes_out": 4096, "recording": "s-web.cast", "recording_truncated": false}),
        ),
        event(
            "d1",
            t(1800.0),
            "session_start",
            &db,
            json!({"kind": "shell", "protocol": "ssh", "client": "10.9.8.7", "command": null, "recording": null}),
        ),
        event(
            "d2",
            t(1803.0),
            "command",
            &db,
            json!({"command": "psql -c 'select 1'", "kind": "interactive", "decision": "allow", "filter": null}),
        ),
        event(
            "d4",
            t(1804.0),
            "command",
            &db,
            json!({"command": "echo '<script>alert(1)</script>'", "kind": "interactive", "decision": "allow", "filter": null}),
        ),
        event(
            "d3",
            t(1830.0),
            "session_end",
            &db,
            json!({"exit_status": 0, "reason": null, "duration_ms": 30_000, "bytes_in": 50, "bytes_out": 300, "recording": null, "recording_truncated": false}),
        ),
        event(
            "l1",
            t(3000.0),
            "session_start",
            &live,
            json!({"kind": "shell", "protocol": "ssh", "client": "10.1.2.3", "command": null, "recording": null}),
        ),
        event(
            "l2",
            t(3001.0),
            "command",
            &live,
            json!({"command": "top", "kind": "interactive", "decision": "allow", "filter": null}),
        ),
    ];
    let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
    let (status, answer) = bastion.send_json(server, "POST", "/api/v1/sync/events", "", &body);
    assert_eq!(status, 200, "events: {answer}");
    assert_eq!(answer["stored"], 12, "every event stored: {answer}");
    // And 55 short sessions of `load` two hours ago, to page through.
    let bulk: Vec<Value> = (0..55)
        .map(|n| {
            let session = format!("s-load-{n:02}");
            let time = (timeline.start - chrono::Duration::hours(1) + chrono::Duration::seconds(n))
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            event(&format!("b{n}"), time, "session_denied", &json!({}), json!({
                "session": session, "user": "load", "command_line": "", "reason": "no grant", "client": "10.5.5.5",
            }))
        })
        .collect();
    let body = serde_json::to_vec(&json!({ "events": bulk })).unwrap();
    let (status, answer) = bastion.send_json(server, "POST", "/api/v1/sync/events", "", &body);
    assert_eq!(status, 200, "events: {answer}");
    assert_eq!(answer["stored"], 55, "every event stored: {answer}");

    let cast = web_recording(timeline.start.timestamp());
    let path = "/api/v1/sync/recordings/s-web";
    let (status, answer) = bastion.send_json(server, "PUT", path, "offset=0", &cast);
    assert_eq!(status, 200, "recording chunk: {answer}");
    let sha256 = hex(digest(&SHA256, &cast).as_ref());
    let complete = serde_json::to_vec(&json!({"size": cast.len(), "sha256": sha256})).unwrap();
    let (status, answer) =
        bastion.send_json(server, "POST", &format!("{path}/complete"), "", &complete);
    assert_eq!(status, 200, "recording complete: {answer}");
    assert_eq!(answer["complete"], true, "{answer}");
    timeline
}

// ---- the browser -----------------------------------------------------------

/// chromedriver on a loopback port (killed on drop) and the fresh
/// Chromium profile it drives.
struct Driver {
    child: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A WebDriver session in headless Chromium.
#[derive(Clone)]
struct Browser {
    client: Client,
}

fn target_dir() -> PathBuf {
    // The test binary is target/<profile>/deps/web-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    exe.ancestors()
        .nth(3)
        .expect("target directory above the test binary")
        .to_path_buf()
}

fn artifacts() -> PathBuf {
    let dir = target_dir().join("test-artifacts/web");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts/web");
    dir
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_chromedriver() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromedriver"))
            .find(|p| p.is_file())
    });
    let hint =
        "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)";
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: {hint}"
    );
    found.unwrap_or_else(|| panic!("chromedriver is not on PATH: {hint}"))
}

impl Browser {
    /// Starts chromedriver and a Chromium session; fails loudly when
    /// either is missing.
    async fn start() -> (Driver, Browser) {
        let chromedriver = find_chromedriver();
        let profile = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(artifacts().join("chromedriver.log")).unwrap();
        // HOME too: Chromium keeps nothing outside the fresh profile.
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .env("HOME", profile.path())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        // chromedriver says "... started successfully on port N" when ready.
        let mut ready = String::new();
        let mut lines = BufReader::new(driver.stdout.take().unwrap());
        while !ready.contains("successfully") {
            ready.clear();
            if lines.read_line(&mut ready).unwrap_or(0) == 0 {
                let _ = driver.kill();
                panic!("chromedriver exited before it was ready (see chromedriver.log)");
            }
        }
        std::thread::spawn(move || {
            // Keep draining its stdout so it never blocks.
            let mut sink = String::new();
            while lines.read_line(&mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--disable-crash-reporter",
                    "--window-size=1360,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let driver = Driver {
            child: driver,
            _profile: profile,
        };
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session from chromedriver");
        (driver, Browser { client })
    }

    fn c(&self) -> &Client {
        &self.client
    }

    async fn goto(&self, url: &str) {
        self.c()
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    async fn url(&self) -> String {
        self.c().current_url().await.unwrap().to_string()
    }

    async fn text(&self, css: &str) -> String {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no `{css}` on the page: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// The page's text; empty while a page is loading.
    async fn body(&self) -> String {
        self.c()
            .execute(
                "return document.body ? document.body.innerText : '';",
                Vec::new(),
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self
            .c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no field `{css}`: {e}"));
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("nothing to click at `{css}`: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Rows of a table body.
    async fn rows(&self, css: &str) -> Vec<String> {
        let mut rows = Vec::new();
        for row in self
            .c()
            .find_all(Locator::Css(&format!("{css} tbody tr")))
            .await
            .unwrap()
        {
            rows.push(row.text().await.unwrap());
        }
        rows
    }

    async fn script(&self, js: &str) -> Value {
        self.c()
            .execute(js, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script `{js}` failed: {e}"))
    }

    /// Waits until `check` holds, or fails with `what`.
    async fn wait_for<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + PATIENCE;
        while !check().await {
            if Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!("waited {PATIENCE:?} for {what} (screenshot timeout.png)");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The text the asciinema player shows (its terminal's DOM text).
    async fn player_text(&self) -> String {
        self.c()
            .execute(
                "var t = document.querySelector('#player .ap-term'); return t ? t.textContent : '';",
                Vec::new(),
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }

    async fn screenshot(&self, name: &str) {
        let png = self.c().screenshot().await.expect("screenshot");
        let path = artifacts().join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
    }

    /// Ends the session (Chromium quits).
    async fn close(self) {
        let _ = self.client.close().await;
    }
}

// ---- the tests ---------------------------------------------------------------

#[test]
fn an_admin_reviews_sessions_commands_and_a_replay_in_chromium() {
    let server = Server::start();
    let secret = add_web_admin(&server);
    let timeline = seed(&server);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = server.url.clone();
    runtime.block_on(async move {
        let (_driver, browser) = Browser::start().await;
        let outcome = tokio::spawn(review(browser.clone(), base, secret, timeline.start)).await;
        // Chromium quits even when an assertion failed.
        browser.close().await;
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("the browser test did not finish: {e}"),
            }
        }
    });
}

async fn review(b: Browser, base: String, secret: String, start: chrono::DateTime<chrono::Utc>) {
    let (base, secret) = (&base, &secret);

    // Anyone not signed in is sent to the login page.
    b.goto(&format!("{base}/web/sessions")).await;
    assert!(
        b.url().await.contains("/web/login?next=/web/sessions"),
        "sent to the login page: {}",
        b.url().await
    );
    b.screenshot("01-login").await;

    // Right password, wrong code: refused.
    b.fill("#username", ADMIN).await;
    b.fill("#password", PASSWORD).await;
    b.fill("#code", &wrong_code(secret)).await;
    b.click("#login").await;
    b.wait_for("the refusal", || async {
        b.body().await.contains("Wrong name, password or code.")
    })
    .await;
    assert!(
        b.url().await.ends_with("/web/login"),
        "still on the login page"
    );
    b.screenshot("02-wrong-code").await;

    // Right password and code: in, on the sessions list.
    b.fill("#password", PASSWORD).await;
    b.fill("#code", &code(secret, 0)).await;
    b.click("#login").await;
    b.wait_for("the sessions list", || async {
        b.url().await.ends_with("/web/sessions")
    })
    .await;
    assert_eq!(b.text("#admin-name").await, ADMIN);
    let rows = b.rows("#sessions").await;
    assert_eq!(rows.len(), 50, "a page of sessions: {rows:#?}");
    assert!(
        rows[0].contains("alice") && rows[0].contains("online"),
        "newest first, online: {}",
        rows[0]
    );
    assert!(
        rows[2].contains("web01") && rows[2].contains("10.1.2.3") && rows[2].contains("12s"),
        "{}",
        rows[2]
    );
    assert!(rows[50 - 1].contains("load") && rows[50 - 1].contains("denied"));
    assert_eq!(b.text("#row-count").await, "Rows 1–50 of 58");
    b.screenshot("03-sessions").await;
    b.click("#next-page").await;
    b.wait_for("the second page", || async {
        b.url().await.ends_with("page=1")
    })
    .await;
    let rows = b.rows("#sessions").await;
    assert_eq!(rows.len(), 8, "the rest: {rows:#?}");
    assert!(rows.iter().all(|r| r.contains("load")));
    assert_eq!(b.text("#row-count").await, "Rows 51–58 of 58");
    b.click("#prev-page").await;
    b.wait_for("the first page", || async {
        b.url().await.ends_with("/web/sessions")
    })
    .await;

    // Filters through the form: user, then still online.
    b.fill("#session-filters input[name=user]", "alice").await;
    b.click("#session-filters button[type=submit]").await;
    b.wait_for("the user filter", || async {
        b.url().await.contains("user=alice")
    })
    .await;
    let rows = b.rows("#sessions").await;
    assert_eq!(rows.len(), 2, "alice's sessions: {rows:#?}");
    assert!(rows.iter().all(|r| r.contains("alice")));
    b.click("#session-filters input[name=online]").await;
    b.click("#session-filters button[type=submit]").await;
    b.wait_for("the online filter", || async {
        b.url().await.contains("online=1")
    })
    .await;
    let rows = b.rows("#sessions").await;
    assert_eq!(rows.len(), 1, "alice's live session: {rows:#?}");
    assert!(rows[0].contains("db01") && rows[0].contains("online"));
    b.screenshot("04-sessions-filtered").await;
    // Asset and account, and a time range that cuts off the first session.
    b.goto(&format!("{base}/web/sessions?asset=db01&account=postgres"))
        .await;
    assert_eq!(b.rows("#sessions").await.len(), 2);
    let since = (start + chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M");
    b.goto(&format!("{base}/web/sessions?since={since}")).await;
    let rows = b.rows("#sessions").await;
    assert_eq!(rows.len(), 2, "after {since}: {rows:#?}");
    assert!(rows.iter().all(|r| !r.contains("web01")));
    let until = (start + chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M");
    b.goto(&format!("{base}/web/sessions?user=alice&until={until}"))
        .await;
    let rows = b.rows("#sessions").await;
    assert_eq!(rows.len(), 1, "before {until}: {rows:#?}");
    assert!(rows[0].contains("web01"));

    // The session's detail.
    b.click("#sessions tbody tr[data-session=s-web] td a").await;
    b.wait_for("the session detail", || async {
        b.url().await.ends_with("/web/sessions/s-web")
    })
    .await;
    assert_eq!(b.text("#fact-source").await, "10.1.2.3");
    assert_eq!(b.text("#fact-bastion").await, "bastion-1");
    assert_eq!(b.text("#fact-duration").await, "12s");
    let commands = b.rows("#commands").await;
    assert_eq!(commands.len(), 3, "{commands:#?}");
    assert!(
        commands[0].starts_with("0:02") && commands[0].contains("uptime"),
        "{}",
        commands[0]
    );
    assert!(
        commands[2].contains("rm -rf /tmp/x")
            && commands[2].contains("deny")
            && commands[2].contains("no-rm")
    );
    let transfers = b.rows("#transfers").await;
    assert_eq!(transfers.len(), 1, "{transfers:#?}");
    assert!(
        transfers[0].contains("/root/deploy.tar.gz") && transfers[0].contains("2.5 MiB"),
        "{}",
        transfers[0]
    );
    b.screenshot("05-session-detail").await;

    // Command search, then its link into the replay at that moment.
    b.click("header nav a[href='/web/commands']").await;
    b.wait_for("the command search", || async {
        b.url().await.ends_with("/web/commands")
    })
    .await;
    let every = b.rows("#commands").await;
    assert_eq!(every.len(), 6, "every command: {every:#?}");
    assert!(
        every
            .iter()
            .any(|r| r.contains("echo '<script>alert(1)</script>'")),
        "markup in a command is shown as text: {every:#?}"
    );
    b.fill("#q", "hostname").await;
    b.click("#command-filters button[type=submit]").await;
    b.wait_for("the search", || async {
        b.url().await.contains("q=hostname")
    })
    .await;
    let rows = b.rows("#commands").await;
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(
        rows[0].contains("cat /etc/hostname") && rows[0].contains("0:05"),
        "{}",
        rows[0]
    );
    b.screenshot("06-command-search").await;
    b.goto(&format!("{base}/web/commands?decision=deny")).await;
    let denied = b.rows("#commands").await;
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert!(denied[0].contains("rm -rf"));
    b.goto(&format!(
        "{base}/web/commands?user=alice&asset=web01&q=hostname"
    ))
    .await;
    b.click("#commands a.replay-at").await;
    b.wait_for("the replay page", || async {
        b.url().await.ends_with("/web/sessions/s-web/replay#t=5.0")
    })
    .await;
    b.wait_for("the player showing the moment of the command", || async {
        b.player_text().await.contains("cat /etc/hostname")
    })
    .await;
    let shown = b.player_text().await;
    assert!(
        shown.contains("17:00:01 up 3 days"),
        "earlier output is on screen: {shown}"
    );
    assert!(
        !shown.contains("web01-prod-hostname") && !shown.contains("LATE-OUTPUT-MARKER"),
        "the command's output is not, yet: {shown}"
    );
    b.screenshot("07-replay-at-command").await;

    // Play: the command's output comes; then pause.
    b.click("#play-pause").await;
    b.wait_for("playback", || async {
        b.player_text().await.contains("web01-prod-hostname")
    })
    .await;
    b.click("#play-pause").await;
    b.wait_for("the pause", || async {
        b.script("return window.jmsReplay.isPlaying();").await == json!(false)
    })
    .await;
    b.screenshot("08-replay-played").await;

    // Seek to 11.5 s with the "go to" box: the later output appears.
    b.fill("#seek-to", "11.5").await;
    b.click("#seek-form button").await;
    b.wait_for("the seek", || async {
        b.player_text().await.contains("LATE-OUTPUT-MARKER")
    })
    .await;
    let shown = b.player_text().await;
    assert!(
        shown.contains("alice@web01:~$ uptime") && shown.contains("web01-prod-hostname"),
        "the whole screen up to that moment: {shown}"
    );
    let at = b.script("return window.jmsReplay.currentTime();").await;
    assert!(
        at.as_f64().is_some_and(|t| t >= 11.0),
        "the player is at {at}"
    );
    b.wait_for("the clock at the new moment", || async {
        b.text("#clock").await.starts_with("0:11")
    })
    .await;
    b.screenshot("09-replay-seek").await;

    // Back 10 s: the later output is gone again.
    b.click("#back-10").await;
    b.wait_for("seeking back", || async {
        let text = b.player_text().await;
        text.contains("uptime") && !text.contains("LATE-OUTPUT-MARKER")
    })
    .await;

    // Speed: the player is made again at the same moment with the new speed.
    b.script("window.jmsReplay.seek(11.5); return true;").await;
    b.wait_for("the seek", || async {
        b.player_text().await.contains("LATE-OUTPUT-MARKER")
    })
    .await;
    let select = b.c().find(Locator::Id("speed")).await.unwrap();
    select.select_by_value("4").await.unwrap();
    b.wait_for("the player at 4×", || async {
        let t = b.script("return window.jmsReplay.currentTime();").await;
        t.as_f64().is_some_and(|t| t >= 11.0)
            && b.player_text().await.contains("LATE-OUTPUT-MARKER")
    })
    .await;
    b.screenshot("10-replay-speed").await;

    // A session without a recording says so.
    b.goto(&format!("{base}/web/sessions/s-live/replay")).await;
    assert!(b.text("#no-recording").await.contains("still going"));
    // The live slot is there for an online session.
    b.goto(&format!("{base}/web/sessions/s-live")).await;
    assert_eq!(
        b.script("return document.querySelectorAll('#live-actions[data-session=s-live]').length;")
            .await,
        json!(1)
    );

    // Sign out: the session is over.
    b.click("#logout").await;
    b.wait_for("the login page", || async {
        b.url().await.ends_with("/web/login")
    })
    .await;
    b.goto(&format!("{base}/web/commands")).await;
    assert!(
        b.url().await.contains("/web/login?next="),
        "signed out: {}",
        b.url().await
    );
}

/// A client that keeps cookies out of it: the tests pass them by hand.
fn http() -> Http {
    Http::builder().redirect(Policy::none()).build().unwrap()
}

fn login(server: &Server, origin: &str, password: &str, code: &str) -> reqwest::blocking::Response {
    http()
        .post(format!("{}/web/login", server.url))
        .header("origin", origin)
        .form(&[
            ("username", ADMIN),
            ("password", password),
            ("code", code),
            ("next", "/web/commands"),
        ])
        .send()
        .unwrap()
}

#[test]
fn web_logins_are_guarded() {
    let server = Server::start();
    let secret = add_web_admin(&server);
    let origin = server.url.clone();

    // A cross-site login form is refused before anything is checked.
    let response = login(&server, "http://evil.example", PASSWORD, &code(&secret, 0));
    assert_eq!(response.status(), 403);

    // A good login: a session cookie that scripts and other sites never get.
    let used = code(&secret, 0);
    let response = login(&server, &origin, PASSWORD, &used);
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/web/commands");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/web", "Max-Age="] {
        assert!(cookie.contains(flag), "{flag} in {cookie}");
    }
    let session = cookie.split(';').next().unwrap().to_string();
    let page = http()
        .get(format!("{}/web/sessions", server.url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(page.headers()["cache-control"], "no-store");
    assert!(page.text().unwrap().contains("Sessions"));

    // The same code again is a replay: refused (even in the next step,
    // where it is still inside the ±1 step window).
    let response = login(&server, &origin, PASSWORD, &used);
    assert_eq!(response.status(), 401, "a TOTP code works once");

    // Logout from another site is refused; from here it ends the session.
    let logout = |origin: &str| {
        http()
            .post(format!("{}/web/logout", server.url))
            .header("cookie", &session)
            .header("origin", origin)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(logout("http://evil.example"), 403);
    assert_eq!(logout(&origin), 303);
    let page = http()
        .get(format!("{}/web/sessions", server.url))
        .header("cookie", &session)
        .send()
        .unwrap();
    assert_eq!(page.status(), 303, "the old cookie no longer works");
    assert_eq!(page.headers()["location"], "/web/login?next=/web/sessions");

    // Failed attempts lock the name, even for the right password and code.
    // (The replayed code above was the first failure.)
    let wrong = wrong_code(&secret);
    for _ in 0..4 {
        assert_eq!(login(&server, &origin, PASSWORD, &wrong).status(), 401);
    }
    let response = login(&server, &origin, PASSWORD, &code(&secret, 1));
    assert_eq!(response.status(), 429);
    assert!(response
        .text()
        .unwrap()
        .contains("Too many failed attempts"));
    // An unknown name gets the same answer as a wrong password.
    let unknown = http()
        .post(format!("{}/web/login", server.url))
        .header("origin", &origin)
        .form(&[
            ("username", "nobody"),
            ("password", PASSWORD),
            ("code", "123456"),
        ])
        .send()
        .unwrap();
    assert_eq!(unknown.status(), 401);
    assert!(unknown
        .text()
        .unwrap()
        .contains("Wrong name, password or code."));

    // The player's files are served from here, cached for good.
    let asset = http()
        .get(format!("{}/web/assets/asciinema-player.min.js", server.url))
        .send()
        .unwrap();
    assert_eq!(asset.status(), 200);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(asset.bytes().unwrap().len() > 100_000);

    // Removing the admin ends her web logins.
    let out = Command::new(JMSCTL)
        .args(["admin", "remove", ADMIN, "--data"])
        .arg(&server.data)
        .env_clear()
        .output()
        .unwrap();
    let (code_, _, stderr) = outcome(&out);
    assert_eq!(code_, 0, "jmsctl admin remove: {stderr}");
    let out = Command::new(JMSCTL)
        .args(["admin", "remove", ADMIN, "--data"])
        .arg(&server.data)
        .env_clear()
        .output()
        .unwrap();
    let (code_, _, stderr) = outcome(&out);
    assert_ne!(code_, 0);
    assert!(stderr.contains("no web admin `auditor`"), "{stderr}");
}

// ---- live: watch and terminate ------------------------------------------------

/// A bastion's side of a live session, faked over the real sync API: it
/// long-polls its orders; on `watch` it pushes the screen and then a line
/// of output per round; on `kill` it keeps the reason and pushes the end.
fn fake_live_bastion(
    server: &Server,
    bastion: &SyncBastion,
    session: &str,
    stop: &std::sync::atomic::AtomicBool,
    kills: &std::sync::Mutex<Vec<String>>,
) {
    use std::sync::atomic::Ordering;
    let path = format!("/api/v1/sync/live/{session}");
    let push = |batch: Value| -> bool {
        let body = serde_json::to_vec(&batch).unwrap();
        let (status, answer) = bastion.send_json(server, "POST", &path, "", &body);
        assert_eq!(status, 200, "live push: {answer}");
        answer["watching"] == true
    };
    let (mut watching, mut tick) = (false, 0u32);
    while !stop.load(Ordering::SeqCst) {
        let (status, answer) =
            bastion.send_json(server, "GET", "/api/v1/sync/control", "wait=1", b"");
        assert_eq!(status, 200, "control poll: {answer}");
        for order in answer["orders"].as_array().cloned().unwrap_or_default() {
            if order["session"] != session {
                continue;
            }
            match order["kind"].as_str() {
                Some("watch") => {
                    watching = push(json!({
                        "size": [80, 24],
                        "init": "$ echo live-marker-77\r\nlive-marker-77\r\n$ ",
                        "events": [],
                    }));
                }
                Some("kill") => {
                    let reason = order["reason"].as_str().unwrap_or("").to_string();
                    kills.lock().unwrap().push(reason.clone());
                    let end = json!({"events": [{
                        "id": "live-2", "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        "event": "session_end", "session": session, "user": "alice", "asset": "web01",
                        "account": "root", "username": "root", "exit_status": null,
                        "reason": format!("session terminated by an administrator: {reason}"),
                        "duration_ms": 1000, "bytes_in": 0, "bytes_out": 0, "recording": null,
                        "recording_truncated": false,
                    }]});
                    let body = serde_json::to_vec(&end).unwrap();
                    let (status, answer) =
                        bastion.send_json(server, "POST", "/api/v1/sync/events", "", &body);
                    assert_eq!(status, 200, "events: {answer}");
                    push(json!({
                        "events": [],
                        "ended": true,
                        "reason": format!("session terminated by an administrator: {reason}"),
                    }));
                    watching = false;
                }
                _ => {}
            }
        }
        if watching {
            tick += 1;
            watching = push(json!({
                "events": [[f64::from(tick) * 0.5, "o", format!("tick-{tick}\r\n")]],
            }));
        }
    }
}

#[test]
fn an_admin_watches_a_live_session_and_terminates_it_in_chromium() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let server = Server::start();
    let secret = add_web_admin(&server);
    let bastion = enrolled(&server, "bastion-live");
    let start = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let events = json!({"events": [{
        "id": "live-1", "time": start, "event": "session_start",
        "session": "s-watch", "user": "alice", "asset": "web01", "account": "root", "username": "root",
        "kind": "shell", "protocol": "ssh", "client": "10.9.9.9", "command": null, "recording": "s-watch.cast",
    }]});
    let body = serde_json::to_vec(&events).unwrap();
    let (status, answer) = bastion.send_json(&server, "POST", "/api/v1/sync/events", "", &body);
    assert_eq!(status, 200, "events: {answer}");
    let stop = AtomicBool::new(false);
    let kills = Mutex::new(Vec::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = server.url.clone();
    std::thread::scope(|scope| {
        scope.spawn(|| fake_live_bastion(&server, &bastion, "s-watch", &stop, &kills));
        runtime.block_on(async {
            let (_driver, browser) = Browser::start().await;
            let outcome = tokio::spawn(watch_and_terminate(
                browser.clone(),
                base.clone(),
                secret.clone(),
            ))
            .await;
            browser.close().await;
            stop.store(true, Ordering::SeqCst);
            if let Err(e) = outcome {
                match e.try_into_panic() {
                    Ok(panic) => std::panic::resume_unwind(panic),
                    Err(e) => panic!("the browser test did not finish: {e}"),
                }
            }
        });
    });
    assert_eq!(
        kills.lock().unwrap().as_slice(),
        ["browser test"],
        "the bastion got one kill order, with the reason typed"
    );
    let oplog = server.expect(200, "GET", "/api/v1/oplog", None).to_string();
    assert!(
        oplog.contains("web admin auditor") && oplog.contains("s-watch"),
        "the termination is in the operation log under the web admin: {oplog}"
    );
}

async fn watch_and_terminate(b: Browser, base: String, secret: String) {
    b.goto(&format!("{base}/web/login")).await;
    b.fill("#username", ADMIN).await;
    b.fill("#password", PASSWORD).await;
    b.fill("#code", &code(&secret, 0)).await;
    b.click("#login").await;
    b.wait_for("the sessions list", || async {
        b.url().await.ends_with("/web/sessions")
    })
    .await;
    // The online session links to its live page.
    b.goto(&format!("{base}/web/sessions/s-watch")).await;
    b.click("#watch").await;
    b.wait_for("the live page", || async {
        b.url().await.ends_with("/web/sessions/s-watch/live")
    })
    .await;
    b.wait_for("the live text with the screen and new output", || async {
        let text = b
            .script("var t = document.getElementById('live-text'); return t ? t.textContent : '';")
            .await;
        let text = text.as_str().unwrap_or_default();
        text.contains("live-marker-77") && text.contains("tick-")
    })
    .await;
    b.wait_for("the player to show the session", || async {
        let shown = b
            .script("var t = document.querySelector('#live-player .ap-term'); return t ? t.textContent : '';")
            .await;
        shown.as_str().unwrap_or_default().contains("live-marker-77")
    })
    .await;
    b.screenshot("live-01-watching").await;

    b.fill("#terminate-reason", "browser test").await;
    b.click("#terminate").await;
    // The confirmation dialog.
    b.c()
        .accept_alert()
        .await
        .expect("a confirmation before terminating");
    b.wait_for("the end and its reason on the page", || async {
        b.text("#live-status")
            .await
            .contains("The session ended: session terminated by an administrator: browser test")
    })
    .await;
    b.screenshot("live-02-terminated").await;
}
