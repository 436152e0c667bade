//! The email set-password flow end to end: a bastion follows a real
//! jms-server whose mail goes to a real SMTP server on loopback (Debian's
//! python3-aiosmtpd, `jms-server/tests/smtp_sink.py`). `jmsctl user add`
//! with an email and no password mails a one-time link; the user can't log
//! in yet; she opens the link (plain HTTP, as a browser would: the form's
//! cookie and hidden fields) and sets her password; with the next bundle
//! `ssh` (sshpass) with that password lands her in jms-agent. The link then
//! refuses a second use.
//!
//! Nothing here measures time: every wait polls with a generous deadline.

use std::io::{Read, Write};

use jms_e2e::central::{eventually, Central};
use jms_e2e::mail::{token_in, SmtpSink};
use jms_e2e::run::COMMAND_TIMEOUT;
use jms_e2e::{BastionBuilder, Outcome, PasswordMethod};

const PASSWORD: &str = "Dana-set-by-mail-42";

/// A browser's plain HTTP/1.1 request: status, headers, body.
fn http(central: &Central, request: &str) -> (u16, String, String) {
    let mut stream = central.connect(COMMAND_TIMEOUT);
    stream
        .write_all(request.replace("{host}", central.address()).as_bytes())
        .expect("send request");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status from jms-server: {text:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// The value of the hidden input `name` in a page.
fn hidden(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = page
        .find(&marker)
        .unwrap_or_else(|| panic!("no input {name} in the page:\n{page}"))
        + marker.len();
    page[start..start + page[start..].find('"').expect("end of the value")].to_owned()
}

#[test]
fn a_user_sets_her_password_from_the_mailed_link_and_logs_in_with_ssh() {
    let sink = SmtpSink::start();
    let bastion = BastionBuilder::new().start();
    let central = Central::start();
    central.attach(&bastion, &central.url);
    let port = sink.port.to_string();
    for (key, value) in [
        ("mail.smtp_host", "127.0.0.1"),
        ("mail.smtp_port", port.as_str()),
        ("mail.smtp_security", "none"),
        ("mail.from", "jms@corp.example"),
        ("mail.site_url", central.url.as_str()),
        ("mail.enabled", "true"),
    ] {
        central.jmsctl(&["settings", "set", key, value]);
    }

    // The admin creates her with an email and no password: a link is mailed.
    let out = central.jmsctl(&["user", "add", "dana", "--email", "dana@corp.example"]);
    assert!(
        out.stdout
            .contains("set-password link sent to dana@corp.example"),
        "jmsctl user add should say where the link went:\n{out}"
    );
    let token = eventually("the set-password mail to arrive", || {
        let messages = sink.messages();
        messages
            .first()
            .and_then(|m| token_in(m))
            .ok_or_else(|| format!("messages so far: {messages:?}"))
    });

    // She is on the bastion, but without a password she cannot log in.
    eventually("dana to reach the bastion with the next bundle", || {
        let out = bastion.getent(&["passwd", "dana"]);
        if out.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
    let refused = bastion.ssh_password("dana", PASSWORD, PasswordMethod::Password, None);
    assert_eq!(
        refused.code(),
        Some(255),
        "no password yet: ssh must be refused:\n{refused}"
    );

    // She follows the link and sets her password.
    let (status, head, page) = http(
        &central,
        &format!("GET /password/set?token={token} HTTP/1.1\r\nHost: {{host}}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "the link's page:\n{head}\n{page}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("the form page sets its cookie:\n{head}"))
        .to_owned();
    // Every value here is URL-safe as it is (hex, base32, letters, digits, `-`).
    let form = format!(
        "token={}&csrf={}&totp_secret={}&password={PASSWORD}&confirm={PASSWORD}&totp_code=",
        hidden(&page, "token"),
        hidden(&page, "csrf"),
        hidden(&page, "totp_secret"),
    );
    let post = format!(
        "POST /password/set HTTP/1.1\r\nHost: {{host}}\r\nCookie: {cookie}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{form}",
        form.len()
    );
    let (status, _, done) = http(&central, &post);
    assert_eq!(status, 200, "setting the password:\n{done}");
    assert!(done.contains("Password set"), "{done}");

    // With the next bundle, ssh with that password lands in jms-agent.
    let landed: Outcome = eventually("dana's new password to reach the bastion", || {
        let out = bastion.ssh_password("dana", PASSWORD, PasswordMethod::Password, None);
        let in_agent = out
            .stderr
            .lines()
            .any(|l| l.starts_with("jms-agent:") && l.contains("dana"));
        if in_agent && out.code() == Some(1) {
            Ok(out)
        } else {
            Err(out.to_string())
        }
    });
    assert!(landed.stderr.contains("dana"), "{landed}");

    // The link works once.
    let (status, _, again) = http(&central, &post);
    assert_eq!(status, 410, "a used link is refused:\n{again}");
    let wrong = bastion.ssh_password("dana", "not-her-password-1", PasswordMethod::Password, None);
    assert_eq!(
        wrong.code(),
        Some(255),
        "a wrong password is still refused:\n{wrong}"
    );
    assert!(
        !central.log().contains(&token),
        "the link's token must never be logged"
    );
}
