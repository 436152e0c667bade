//! The admin web console end to end, in headless Chromium: a web admin
//! sets the mail up and sends a test mail (caught by a real SMTP server on
//! loopback), creates a user with an email (the set-password link is
//! mailed; the user sets her password on it in the browser), a node, an
//! asset (the harness target) with an account, and a grant whose coverage
//! the form previews as it is filled in. The user then logs in through the
//! bastion with real `ssh` and reaches the asset. The admin edits the
//! grant's expiry into the past in the console: the next ssh to the asset
//! is refused with the reason. An auditor sees no write control and gets
//! 403 from the write routes.
//!
//! Screenshots go to `target/test-artifacts/console/` (the path is
//! printed). Nothing here measures time: every wait polls with a deadline.

use std::process::Command;

use jms_e2e::browser::Browser;
use jms_e2e::central::{eventually, Central};
use jms_e2e::mail::{token_in, SmtpSink};
use jms_e2e::run::{self, Outcome, COMMAND_TIMEOUT};
use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::{BastionBuilder, PasswordMethod, Target};

const ADMIN_PASSWORD: &str = "a long web admin passphrase";
const DANA_PASSWORD: &str = "Dana-set-in-Chromium-42";

/// `jmsctl admin add NAME --role ROLE` on the server's data; her TOTP
/// secret.
fn add_web_admin(central: &Central, name: &str, role: &str) -> String {
    let data = central.data_dir();
    let out = run::run(
        Command::new(jmsctl_path(central))
            .args(["admin", "add", name, "--role", role, "--password-stdin"])
            .args(["--iterations", "1000", "--data"])
            .arg(&data)
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

fn jmsctl_path(central: &Central) -> std::path::PathBuf {
    let command = central.jmsctl_command(&[]);
    std::path::PathBuf::from(command.get_program())
}

fn totp_now(secret: &str) -> String {
    let now = chrono_now();
    format!(
        "{:06}",
        jms_core::password::totp_code(secret, now).expect("a TOTP code")
    )
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// Signs in on the login page.
fn sign_in(b: &Browser, base: &str, name: &str, secret: &str) {
    b.goto(&format!("{base}/web/login"));
    b.fill("#username", name);
    b.fill("#password", ADMIN_PASSWORD);
    b.fill("#code", &totp_now(secret));
    b.click("#login");
    b.wait_for("the signed-in console", |b| {
        b.count("#admin-name") == 1 && b.text("#admin-name") == name
    });
}

/// Opens `path`, fills text fields, submits the form `form`, and waits for
/// the page that follows to show `expect`.
fn submit(b: &Browser, form: &str, fields: &[(&str, &str)], expect: &str) {
    for (css, value) in fields {
        b.fill(css, value);
    }
    b.click(&format!("#{form} button[type=submit]"));
    b.wait_for(&format!("`{expect}` after submitting {form}"), |b| {
        b.body().contains(expect)
    });
}

/// Selects `value` in the multi-select `css` (a click on its option).
fn pick(b: &Browser, css: &str, value: &str) {
    b.click(&format!("{css} option[value=\"{value}\"]"));
}

/// `ssh dana@bastion "web01 id -un"` with her password.
fn on_target(bastion: &jms_e2e::Bastion) -> Outcome {
    bastion.ssh_password(
        "dana",
        DANA_PASSWORD,
        PasswordMethod::Password,
        Some("web01 id -un"),
    )
}

#[test]
fn an_admin_provisions_access_in_the_web_console_and_an_auditor_only_reads() {
    let sink = SmtpSink::start();
    let target = Target::start();
    let bastion = BastionBuilder::new().start();
    let central = Central::start_insecure();
    central.attach(&bastion, &central.url);
    let base = central.url.clone();
    let admin_secret = add_web_admin(&central, "root", "admin");
    let auditor_secret = add_web_admin(&central, "carol", "auditor");
    let b = Browser::start("console");

    // Settings: the mail, then a test mail that arrives.
    sign_in(&b, &base, "root", &admin_secret);
    b.goto(&format!("{base}/web/settings"));
    for (css, value) in [
        ("#f-mail-smtp_host", "127.0.0.1"),
        ("#f-mail-smtp_port", &sink.port.to_string()),
        ("#f-mail-from", "jms@corp.example"),
        ("#f-mail-site_url", &base),
    ] {
        b.fill(css, value);
    }
    b.script("document.getElementById('f-mail-smtp_security').value = 'none'; return null;");
    b.click("#f-mail-enabled");
    b.screenshot("01-settings");
    submit(&b, "settings-form", &[], "Saved.");
    submit(
        &b,
        "test-mail",
        &[("#f-to", "ops@corp.example")],
        "Test mail sent to ops@corp.example",
    );
    b.screenshot("02-test-mail");
    eventually("the test mail to arrive", || {
        let messages = sink.messages();
        if messages.iter().any(|m| m.contains("ops@corp.example")) {
            Ok(())
        } else {
            Err(format!("{messages:?}"))
        }
    });

    // A user with an email: the set-password link is mailed.
    b.goto(&format!("{base}/web/users"));
    submit(
        &b,
        "new-user",
        &[
            ("#f-username", "dana"),
            ("#f-name", "Dana Engineer"),
            ("#f-email", "dana@corp.example"),
        ],
        "a set-password link was mailed to dana@corp.example",
    );
    b.screenshot("03-user-created");
    let token = eventually("the set-password mail to arrive", || {
        sink.messages()
            .iter()
            .find(|m| m.contains("dana@corp.example"))
            .and_then(|m| token_in(m))
            .ok_or_else(|| format!("messages so far: {:?}", sink.messages()))
    });

    // A node, an asset in it with an account, from their pages.
    b.goto(&format!("{base}/web/nodes"));
    submit(&b, "new-node", &[("#f-path", "/Default/prod")], "Created.");
    b.goto(&format!("{base}/web/inventory"));
    b.fill("#f-name", "web01");
    b.fill("#f-address", target.address());
    b.fill("#f-protocols", &format!("ssh:{}", target.port()));
    pick(&b, "#f-nodes", "/Default/prod");
    submit(&b, "new-asset", &[], "Created.");
    submit(
        &b,
        "new-account",
        &[
            ("#f-name", "deploy"),
            ("#f-username", "deploy"),
            ("#f-secret", DEPLOY_PASSWORD),
        ],
        "Created.",
    );
    b.wait_for("the account listed", |b| {
        b.count("tr[data-account=deploy]") == 1
    });
    assert!(
        !b.script("return document.documentElement.outerHTML;")
            .as_str()
            .unwrap_or_default()
            .contains(DEPLOY_PASSWORD),
        "the account's secret is never sent back"
    );
    b.screenshot("04-asset");
    b.goto(&format!("{base}/web/nodes"));
    assert_eq!(b.text("tr[data-node='/Default/prod'] td.assets"), "1");
    b.screenshot("05-nodes");

    // A grant: the preview shows whom it covers as it is filled in.
    b.goto(&format!("{base}/web/grants"));
    b.fill("#f-name", "dana-web01");
    pick(&b, "#f-users", "dana");
    pick(&b, "#f-nodes", "/Default/prod");
    pick(&b, "#f-accounts", "deploy");
    b.wait_for("the coverage preview", |b| {
        b.body()
            .contains("It covers 1 user(s) × asset(s): 1 pair(s)")
    });
    let covered = b.text("#coverage-table tbody");
    assert!(
        covered.contains("dana") && covered.contains("web01") && covered.contains("deploy"),
        "{covered}"
    );
    b.screenshot("06-grant-preview");
    submit(&b, "grant-form", &[], "Created.");

    // Dana sets her password on the mailed link, in the browser.
    b.goto(&format!("{base}/password/set?token={token}"));
    b.fill("#password", DANA_PASSWORD);
    b.fill("#confirm", DANA_PASSWORD);
    b.screenshot("07-set-password");
    b.click("button[type=submit]");
    b.wait_for("the password set", |b| b.body().contains("Password set"));

    // Through the bastion with ssh, she reaches the asset.
    eventually("dana to reach web01 through the bastion", || {
        let out = on_target(&bastion);
        if out.success() && out.stdout.trim() == "deploy" {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });

    // The admin moves the grant's expiry into the past: refused, with why.
    b.goto(&format!("{base}/web/grants/dana-web01"));
    b.fill("#f-date_expired", "2020-01-01T00:00");
    b.wait_for("the preview to say it expired", |b| {
        b.text("#coverage-summary").contains("expired")
    });
    submit(&b, "grant-form", &[], "Saved.");
    b.screenshot("08-grant-expired");
    let refused = eventually("the expired grant to refuse dana", || {
        let out = on_target(&bastion);
        if out.code() == Some(1)
            && out.stderr.contains("jms-agent:")
            && !out.stdout.contains("deploy")
        {
            Ok(out)
        } else {
            Err(out.to_string())
        }
    });
    assert!(
        refused.stderr.contains("expired"),
        "the refusal says the grant expired:\n{refused}"
    );

    // The auditor: every page, no write control, 403 from every write.
    b.click("#logout");
    b.wait_for("the login page", |b| b.count("#username") == 1);
    sign_in(&b, &base, "carol", &auditor_secret);
    for page in [
        "/web/users",
        "/web/users/dana",
        "/web/nodes",
        "/web/inventory",
        "/web/inventory/web01",
        "/web/grants",
        "/web/grants/dana-web01",
        "/web/settings",
    ] {
        b.goto(&format!("{base}{page}"));
        b.wait_for(&format!("{page} to load"), |b| b.count("#admin-name") == 1);
        assert_eq!(
            b.count("form[method=post]"),
            1,
            "{page}: only the logout form"
        );
    }
    b.goto(&format!("{base}/web/grants/dana-web01"));
    b.screenshot("09-auditor-grant");
    for (path, form) in [
        ("/web/users", "username=mallory"),
        (
            "/web/grants/dana-web01",
            "date_expired=2099-01-01T00:00&users=dana",
        ),
        ("/web/grants/dana-web01/delete", "confirm=yes"),
        ("/web/inventory/web01/accounts/deploy", "username=root"),
        ("/web/nodes", "path=/Evil"),
        ("/web/settings", "mail.enabled=on"),
    ] {
        let status = b.script_async(&format!(
            "var done = arguments[0];
             fetch('{path}', {{method: 'POST', body: new URLSearchParams('{form}'),
                               credentials: 'same-origin'}})
               .then(function (r) {{ done(r.status); }}, function () {{ done(0); }});"
        ));
        assert_eq!(status, 403, "the auditor's POST {path}");
    }
    let (status, grant) = central.api("GET", "/api/v1/grants/dana-web01", None);
    assert_eq!(status, 200);
    assert!(
        grant.contains("\"date_expired\":\"2020-01-01T00:00:00Z\""),
        "unchanged by the auditor: {grant}"
    );
}
