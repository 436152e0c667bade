//! The engineers' portal at the server's site root, in headless Chromium
//! with a real jms-server: a login is refused for a wrong password, a
//! missing or wrong TOTP code, an address outside the user's networks and
//! while the name is locked after failed attempts (each outcome in the
//! server's login audit, service `jms-portal`); two engineers with
//! different grants each see exactly their granted assets, with accounts
//! and actions; the search and the node tree narrow the list server-side;
//! 10,000 granted assets come one page at a time.
//!
//! Screenshots go to `target/test-artifacts/portal/`. Nothing here
//! measures time: every wait polls with a deadline.

use std::collections::BTreeSet;
use std::process::Command;

use jms_e2e::browser::Browser;
use jms_e2e::central::Central;
use jms_e2e::run::{self, COMMAND_TIMEOUT};

const ALICE_PASSWORD: &str = "Alice-portal-1";
const BOB_PASSWORD: &str = "Bob-portal-2";
const OTHER_PASSWORD: &str = "Other-portal-3";
const ALICE_TOTP: &str = "JBSWY3DPEHPK3PXP";
/// Assets granted to zoe (under /Bulk).
const BULK: usize = 10_000;

fn hash(password: &str) -> String {
    jms_core::password::hash_password(password, jms_core::password::MIN_ITERATIONS)
        .expect("a password hash")
}

fn policy() -> String {
    let mut yaml = format!(
        "users:
  - {{username: alice, name: Alice, groups: [ops], password_hash: \"{alice}\", totp_secret: \"{ALICE_TOTP}\"}}
  - {{username: bob, name: Bob, groups: [dev], password_hash: \"{bob}\"}}
  - {{username: mallory, name: Mallory, groups: [dev], password_hash: \"{other}\"}}
  - {{username: erin, name: Erin, groups: [dev], password_hash: \"{other}\", login_acl: {{allow_from: [10.0.0.0/8]}}}}
  - {{username: zoe, name: Zoe, groups: [dev], password_hash: \"{other}\"}}
user_groups:
  - {{name: ops}}
  - {{name: dev}}
nodes: [/Default/prod/web, /Default/prod/db, /Default/test, /Bulk]
assets:
  - name: web01
    address: 10.1.0.1
    protocols: [{{name: ssh, port: 22}}, {{name: sftp, port: 22}}]
    nodes: [/Default/prod/web]
    accounts: [{{name: root, username: root, secret_type: password, secret: pw}}]
  - name: web02
    address: 10.1.0.2
    protocols: [{{name: ssh, port: 22}}]
    nodes: [/Default/prod/web]
    accounts: [{{name: root, username: root, secret_type: password, secret: pw}}]
  - name: db01
    address: 10.2.0.1
    protocols: [{{name: ssh, port: 22}}, {{name: sftp, port: 22}}]
    nodes: [/Default/prod/db]
    accounts: [{{name: root, username: root, secret_type: password, secret: pw}}]
  - name: test01
    address: 10.3.0.1
    protocols: [{{name: ssh, port: 22}}]
    nodes: [/Default/test]
    accounts: [{{name: root, username: root, secret_type: password, secret: pw}}]
",
        alice = hash(ALICE_PASSWORD),
        bob = hash(BOB_PASSWORD),
        other = hash(OTHER_PASSWORD),
    );
    for n in 0..BULK {
        yaml.push_str(&format!(
            "  - {{name: bulk{n:05}, address: 10.9.{}.{}, protocols: [{{name: ssh, port: 22}}], nodes: [/Bulk]}}\n",
            n / 250,
            n % 250 + 1
        ));
    }
    yaml.push_str(
        "grants:
  - {name: alice-prod, users: [alice], nodes: [/Default/prod], accounts: [root], protocols: [all], actions: [connect, upload, download]}
  - {name: bob-test, users: [bob], assets: [test01], accounts: [\"@INPUT\"], protocols: [ssh], actions: [connect]}
  - {name: erin-test, users: [erin], assets: [test01], accounts: [\"@USER\"], protocols: [ssh], actions: [connect]}
  - {name: zoe-bulk, users: [zoe], nodes: [/Bulk], accounts: [\"@INPUT\"], protocols: [ssh], actions: [connect]}
",
    );
    yaml
}

fn totp_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    format!(
        "{:06}",
        jms_core::password::totp_code(ALICE_TOTP, now).expect("a TOTP code")
    )
}

/// Fills the login form and sends it; waits for the next page.
fn log_in(b: &Browser, base: &str, name: &str, password: &str, code: &str) {
    b.goto(&format!("{base}/login"));
    b.fill("#username", name);
    b.fill("#password", password);
    b.fill("#code", code);
    b.click("#login");
    b.wait_for("the page after the login", |b| {
        b.count("#error") == 1 || b.count("#engineer-name") == 1
    });
}

fn error_line(b: &Browser) -> String {
    b.text("#error")
}

/// The asset names on the page.
fn listed(b: &Browser) -> BTreeSet<String> {
    let names = b.script(
        "return Array.from(document.querySelectorAll('tr.asset')).map(function (r) { return r.dataset.asset; });",
    );
    names
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_str().expect("a name").to_string())
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// The portal's rows of the server's login audit: (user, outcome).
fn portal_logins(central: &Central) -> Vec<(String, String)> {
    let db = central.data_dir().join("jms.db");
    let out = run::run(
        Command::new("python3").arg("-c").arg(format!(
            "import sqlite3\n\
             c = sqlite3.connect('file:{}?mode=ro', uri=True)\n\
             for u, o in c.execute(\"SELECT username, outcome FROM logins WHERE service = 'jms-portal' ORDER BY id\"):\n    print(u, o)\n",
            db.display()
        )),
        b"",
        COMMAND_TIMEOUT,
    );
    out.assert_success("reading the login audit");
    out.stdout
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(u, o)| (u.to_string(), o.to_string()))
        .collect()
}

#[test]
fn engineers_log_in_under_the_bastion_rules_and_see_exactly_their_grants() {
    let central = Central::start_insecure();
    let base = central.url.clone();
    let file = central.data_dir().join("../portal-policy.yaml");
    std::fs::write(&file, policy()).expect("write the policy");
    central
        .jmsctl(&["policy", "apply", file.to_str().expect("utf-8 path")])
        .assert_success("jmsctl policy apply");
    let b = Browser::start("portal");

    // Not signed in: the site root sends her to the login page.
    b.goto(&format!("{base}/"));
    b.wait_for("the login page", |b| b.count("#username") == 1);
    assert!(b.url().contains("/login"), "{}", b.url());

    // Wrong password; right password without the code; wrong code.
    log_in(&b, &base, "alice", "not her password", "");
    assert_eq!(error_line(&b), "Wrong name, password or code.");
    b.screenshot("01-wrong-password");
    log_in(&b, &base, "alice", ALICE_PASSWORD, "");
    assert_eq!(
        error_line(&b),
        "Enter the code from your authenticator app too."
    );
    let wrong_code = if totp_now() == "000000" {
        "111111"
    } else {
        "000000"
    };
    log_in(&b, &base, "alice", ALICE_PASSWORD, wrong_code);
    assert_eq!(error_line(&b), "Wrong name, password or code.");
    b.screenshot("02-wrong-code");

    // An address outside her networks: the bastion's account rule.
    log_in(&b, &base, "erin", OTHER_PASSWORD, "");
    assert_eq!(
        error_line(&b),
        "You may not log in now: login from 127.0.0.1 is not allowed."
    );

    // Five failures lock the name: then even the right password is refused.
    for _ in 0..5 {
        log_in(&b, &base, "mallory", "guess", "");
        assert_eq!(error_line(&b), "Wrong name, password or code.");
    }
    log_in(&b, &base, "mallory", OTHER_PASSWORD, "");
    assert!(
        error_line(&b).starts_with("Locked after too many failed attempts"),
        "{}",
        error_line(&b)
    );
    b.screenshot("03-locked");
    // The admins' unlock lifts it.
    central
        .jmsctl(&["user", "unlock", "mallory"])
        .assert_success("jmsctl user unlock");
    log_in(&b, &base, "mallory", OTHER_PASSWORD, "");
    assert_eq!(b.text("#engineer-name"), "mallory");
    assert_eq!(b.text("#asset-count"), "0 assets");
    b.click("#logout");
    b.wait_for("the login page", |b| b.count("#username") == 1);

    // Alice, with her code: exactly her grant (the /Default/prod node).
    log_in(&b, &base, "alice", ALICE_PASSWORD, &totp_now());
    assert_eq!(b.text("#engineer-name"), "alice");
    assert_eq!(listed(&b), set(&["db01", "web01", "web02"]));
    let web01 = b.text("tr[data-asset=web01]");
    for part in ["root", "ssh", "sftp", "connect", "upload", "download"] {
        assert!(web01.contains(part), "web01's row names {part}: {web01}");
    }
    assert!(!web01.contains("delete"), "{web01}");
    assert_eq!(b.count("tr[data-asset=web01] a.terminal-link"), 1);
    assert_eq!(b.count("tr[data-asset=web01] a.files-link"), 1);
    assert_eq!(
        b.count("tr[data-asset=web02] a.files-link"),
        0,
        "web02 offers no sftp"
    );
    b.screenshot("04-alice-assets");
    // Server-side search by name, address and node path; the node tree.
    b.goto(&format!("{base}/?q=db"));
    assert_eq!(listed(&b), set(&["db01"]));
    b.goto(&format!("{base}/?q=10.1.0."));
    assert_eq!(listed(&b), set(&["web01", "web02"]));
    b.goto(&format!("{base}/?q=prod/db"));
    assert_eq!(listed(&b), set(&["db01"]));
    b.goto(&format!("{base}/"));
    b.click("#node-tree a[title='/Default/prod/web']");
    b.wait_for("the node's assets", |b| {
        b.text("#asset-count").contains("/Default/prod/web")
    });
    assert_eq!(listed(&b), set(&["web01", "web02"]));
    b.screenshot("05-alice-node");
    b.click("#logout");
    b.wait_for("the login page", |b| b.count("#username") == 1);

    // Bob: exactly his grant, an @INPUT account.
    log_in(&b, &base, "bob", BOB_PASSWORD, "");
    assert_eq!(listed(&b), set(&["test01"]));
    let test01 = b.text("tr[data-asset=test01]");
    assert!(
        test01.contains("@INPUT") && test01.contains("asked when opened"),
        "{test01}"
    );
    b.goto(&format!("{base}/?q=web"));
    assert_eq!(listed(&b), set(&[]), "no search reaches an ungranted asset");
    b.screenshot("06-bob-assets");
    b.click("#logout");
    b.wait_for("the login page", |b| b.count("#username") == 1);

    // Zoe: 10,000 granted assets, one page at a time.
    log_in(&b, &base, "zoe", OTHER_PASSWORD, "");
    assert_eq!(b.text("#asset-count"), format!("{BULK} assets"));
    assert_eq!(b.count("tr.asset"), 50);
    assert!(b.text("#pager").contains("Page 1 of 200"));
    b.click("#next");
    b.wait_for("page 2", |b| b.text("#pager").contains("Page 2 of 200"));
    assert!(listed(&b).contains("bulk00050"));
    b.goto(&format!("{base}/?q=bulk09999"));
    assert_eq!(listed(&b), set(&["bulk09999"]));
    b.screenshot("07-zoe-bulk");

    // Every outcome is in the login audit, beside the bastions' logins.
    let audit = portal_logins(&central);
    for (user, outcome) in [
        ("alice", "failure"),
        ("erin", "denied"),
        ("mallory", "failure"),
        ("mallory", "denied"),
        ("mallory", "success"),
        ("alice", "success"),
        ("bob", "success"),
    ] {
        assert!(
            audit.iter().any(|(u, o)| u == user && o == outcome),
            "{user} {outcome} in the login audit: {audit:?}"
        );
    }
    assert_eq!(
        audit
            .iter()
            .filter(|(u, o)| u == "alice" && o == "failure")
            .count(),
        2,
        "the wrong password and the wrong code; the missing code is no attempt: {audit:?}"
    );
}

/// The file manager's scene: a target, a bastion enrolled with its sshd,
/// and two engineers on web01's `deploy` account: alice may upload,
/// download and delete, bob only download.
mod files {
    use super::*;
    use jms_e2e::central::eventually;
    use jms_e2e::target::DEPLOY_PASSWORD;
    use jms_e2e::{BastionBuilder, PasswordMethod, Target};

    const BIG_MIB: usize = 50;

    fn sha256_hex(bytes: &[u8]) -> String {
        ring::digest::digest(&ring::digest::SHA256, bytes)
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Opens the file manager on deploy@web01 and goes to `/tmp/DIR`.
    fn open_dir(b: &Browser, base: &str, dir: &str) {
        b.goto(&format!("{base}/"));
        b.wait_for("web01's Files link", |b| {
            b.count("tr[data-asset=web01] a.files-link") == 1
        });
        b.goto(&format!("{base}/files?asset=web01&account=deploy"));
        loaded(b, "/");
        assert_eq!(b.count("#error:not([hidden])"), 0, "{}", b.body());
        b.click("tr[data-name=tmp] a.open");
        loaded(b, "/tmp");
        b.click(&format!("tr[data-name='{dir}'] a.open"));
        loaded(b, &format!("/tmp/{dir}"));
        // The picker is hidden behind its label; WebDriver needs it shown.
        b.script("var p = document.getElementById('pick'); p.hidden = false; p.style.display = 'block'; return null;");
    }

    fn loaded(b: &Browser, path: &str) {
        b.wait_for(&format!("the {path} listing"), |b| {
            b.script("return document.getElementById('files').dataset.loaded || '';") == path
        });
    }

    fn upload(b: &Browser, file: &std::path::Path) -> String {
        b.script("document.getElementById('files').dataset.uploading = ''; return null;");
        b.type_keys("#pick", &file.display().to_string());
        b.wait_for("the upload to end", |b| {
            let state =
                b.script("return document.getElementById('files').dataset.uploading || '';");
            state == "done" || state == "failed"
        });
        b.script("return document.getElementById('files').dataset.uploading;")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The SHA-256 the page computes of a download (streamed by the server).
    fn download_sha256(b: &Browser, path: &str) -> String {
        let path = path.replace('/', "%2F");
        b.script_async(&format!(
            "var done = arguments[0];
             fetch('/files/download?asset=web01&account=deploy&path={path}', {{credentials: 'same-origin'}})
               .then(function (r) {{ if (!r.ok) {{ throw new Error('HTTP ' + r.status); }} return r.arrayBuffer(); }})
               .then(function (b) {{ return crypto.subtle.digest('SHA-256', b); }})
               .then(function (d) {{ done(Array.from(new Uint8Array(d)).map(function (x) {{ return x.toString(16).padStart(2, '0'); }}).join('')); }},
                     function (e) {{ done('error: ' + e.message); }});"
        ))
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    #[test]
    fn the_file_manager_goes_through_the_bastions_sftp_with_the_grants_actions() {
        let target = Target::start();
        let bastion = BastionBuilder::new().start();
        let central = Central::start_insecure();
        central.attach(&bastion, &central.url);
        let base = central.url.clone();
        let policy = format!(
            "users:
  - {{username: alice, name: Alice, password_hash: \"{alice}\"}}
  - {{username: bob, name: Bob, password_hash: \"{bob}\"}}
assets:
  - name: web01
    address: {address}
    protocols: [{{name: ssh, port: {port}}}, {{name: sftp, port: {port}}}]
    accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]
grants:
  - {{name: alice-web01, users: [alice], assets: [web01], accounts: [deploy], protocols: [all], actions: [connect, upload, download, delete]}}
  - {{name: bob-web01, users: [bob], assets: [web01], accounts: [deploy], protocols: [all], actions: [connect, download]}}
",
            alice = hash(ALICE_PASSWORD),
            bob = hash(BOB_PASSWORD),
            address = target.address(),
            port = target.port(),
        );
        let file = central.data_dir().join("../files-policy.yaml");
        std::fs::write(&file, policy).expect("write the policy");
        central
            .jmsctl(&["policy", "apply", file.to_str().expect("utf-8 path")])
            .assert_success("jmsctl policy apply");
        let on_target = |command: &str| {
            eventually(&format!("`{command}` on web01 through the bastion"), || {
                let out = bastion.ssh_password(
                    "bob",
                    BOB_PASSWORD,
                    PasswordMethod::Password,
                    Some(&format!("web01 {command}")),
                );
                if out.success() {
                    Ok(out.stdout)
                } else {
                    Err(out.to_string())
                }
            })
        };
        on_target("true");
        // Everything happens in a folder of this run's own, made on the
        // target and removed at the end.
        let work = format!(
            "portal-e2e-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("after 1970")
                .as_nanos()
        );
        on_target(&format!("mkdir -m 0777 /tmp/{work}"));
        struct Cleanup<'a>(&'a jms_e2e::Bastion, String);
        impl Drop for Cleanup<'_> {
            fn drop(&mut self) {
                let _ = self.0.ssh_password(
                    "alice",
                    ALICE_PASSWORD,
                    PasswordMethod::Password,
                    Some(&format!("web01 rm -rf /tmp/{}", self.1)),
                );
            }
        }
        let _cleanup = Cleanup(&bastion, work.clone());

        // A 50 MiB file of varied bytes, and a small one.
        let dir = tempfile::tempdir().expect("a temp dir");
        let big = dir.path().join("portal-big.bin");
        let mut bytes = Vec::with_capacity(BIG_MIB << 20);
        let mut x: u32 = 0x1234_5678;
        while bytes.len() < BIG_MIB << 20 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        std::fs::write(&big, &bytes).expect("write the big file");
        let big_sum = sha256_hex(&bytes);
        drop(bytes);
        let small = dir.path().join("portal-small.txt");
        std::fs::write(&small, "hello from the portal\n").expect("write the small file");
        let b = Browser::start("portal-files");

        // Alice uploads both; the target has exactly the bytes.
        log_in(&b, &base, "alice", ALICE_PASSWORD, "");
        open_dir(&b, &base, &work);
        b.screenshot("11-files-dir");
        assert_eq!(upload(&b, &big), "done", "{}", b.body());
        assert_eq!(upload(&b, &small), "done", "{}", b.body());
        b.wait_for("both files listed", |b| {
            b.count("tr[data-name='portal-big.bin']") == 1
                && b.count("tr[data-name='portal-small.txt']") == 1
        });
        b.screenshot("12-files-uploaded");
        let on_web01 = on_target(&format!("sha256sum /tmp/{work}/portal-big.bin"));
        assert_eq!(
            on_web01.split_whitespace().next(),
            Some(big_sum.as_str()),
            "the target holds the uploaded bytes"
        );
        // Download: streamed back, the same bytes.
        assert_eq!(
            download_sha256(&b, &format!("/tmp/{work}/portal-big.bin")),
            big_sum
        );
        // New folder, rename, delete.
        b.script("window.prompt = function () { return 'portal-dir'; }; return null;");
        b.click("#mkdir");
        b.wait_for("the new folder", |b| {
            b.count("tr[data-name='portal-dir']") == 1
        });
        b.script("window.prompt = function () { return 'portal-renamed.txt'; }; window.confirm = function () { return true; }; return null;");
        b.click("tr[data-name='portal-small.txt'] button.rename");
        b.wait_for("the renamed file", |b| {
            b.count("tr[data-name='portal-renamed.txt']") == 1
        });
        b.click("tr[data-name='portal-dir'] button.delete");
        b.wait_for("the folder gone", |b| {
            b.count("tr[data-name='portal-dir']") == 0
        });
        assert_eq!(
            on_target(&format!("cat /tmp/{work}/portal-renamed.txt")),
            "hello from the portal\n"
        );
        b.click("#logout");
        b.wait_for("the login page", |b| b.count("#username") == 1);

        // Bob may download, not upload or delete: the bastion's line.
        log_in(&b, &base, "bob", BOB_PASSWORD, "");
        open_dir(&b, &base, &work);
        assert_eq!(
            download_sha256(&b, &format!("/tmp/{work}/portal-big.bin")),
            big_sum
        );
        b.script("window.confirm = function () { return true; }; return null;");
        b.click("tr[data-name='portal-renamed.txt'] button.delete");
        b.wait_for("the refusal", |b| b.count("#error:not([hidden])") == 1);
        let refused = b.text("#error");
        assert!(
            refused.contains("permission denied by the bastion") && refused.contains("delete"),
            "{refused}"
        );
        b.script("window.scrollTo(0, 0); return null;");
        b.screenshot("13-files-delete-refused");
        let other = dir.path().join("bob-upload.txt");
        std::fs::write(&other, "bob was here\n").expect("write bob's file");
        assert_eq!(upload(&b, &other), "failed");
        let refused = b.text("#error");
        assert!(
            refused.contains("permission denied by the bastion") && refused.contains("upload"),
            "{refused}"
        );
        b.script("window.scrollTo(0, 0); return null;");
        b.screenshot("14-files-upload-refused");
        assert!(
            on_target(&format!(
                "test -e /tmp/{work}/portal-renamed.txt && echo kept"
            ))
            .contains("kept"),
            "bob's delete was refused"
        );
        assert!(
            on_target(&format!(
                "test -e /tmp/{work}/bob-upload.txt && echo there || echo absent"
            ))
            .contains("absent"),
            "bob's upload was refused"
        );
    }
}
