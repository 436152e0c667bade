//! `jmsctl settings mail-test --to ADDRESS`, `jmsctl user send-link NAME`,
//! and what `jmsctl user add` says about the set-password link the server
//! mails to a new user with an email address and no password.

use anyhow::Result;
use reqwest::Method;
use serde_json::{json, Value};

use crate::remote::{connect, ServerArgs};
use crate::Outcome;

/// Sends a test message with the server's mail settings.
pub fn test(server: &ServerArgs, to: &str) -> Result<Outcome> {
    let sent = connect(server)?
        .call(
            Method::POST,
            &["api", "v1", "settings", "mail", "test"],
            &[],
            Some(&json!({ "to": to })),
        )?
        .unwrap_or_default();
    println!(
        "test message sent to {} via {} ({})",
        text(&sent["sent_to"]),
        text(&sent["server"]),
        text(&sent["reply"])
    );
    Ok(Outcome::Ok)
}

/// Mails a user a new set-password link.
pub fn send_link(server: &ServerArgs, username: &str) -> Result<Outcome> {
    let sent = connect(server)?
        .call(
            Method::POST,
            &["api", "v1", "users", username, "password-link"],
            &[],
            None,
        )?
        .unwrap_or_default();
    println!(
        "set-password link for {username} sent to {} (works once, until {})",
        text(&sent["sent_to"]),
        text(&sent["expires_at"])
    );
    Ok(Outcome::Ok)
}

/// After `user add`: whether the set-password link went out (a failure is
/// a warning: the user exists; `jmsctl user send-link` retries).
pub fn report_link(username: &str, created: &Value) {
    let link = &created["password_link"];
    if link.is_null() {
        return;
    }
    if link["sent"].as_bool() == Some(true) {
        println!(
            "set-password link sent to {} (works once, until {})",
            text(&link["to"]),
            text(&link["expires_at"])
        );
    } else {
        eprintln!(
            "jmsctl: warning: no set-password link was mailed: {} (retry with: jmsctl user send-link {username})",
            text(&link["error"])
        );
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
