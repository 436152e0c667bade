//! Outgoing mail over SMTP, with `lettre`: one connection per message,
//! driven step by step (connect and greeting, STARTTLS, AUTH, MAIL/RCPT/DATA)
//! so that a failure names the step that failed and the server's answer.
//!
//! The settings are `crate::settings::Mail`: `smtp_security` is `none`
//! (plain text; for a relay on the same host or network), `starttls` (plain
//! connection upgraded before anything else is said; refused if the server
//! does not offer it) or `tls` (TLS from the first byte, usually port 465).
//! Certificates are checked against the system's roots. The password is
//! sent only in AUTH and never logged; message bodies (they carry one-time
//! links) are never logged either.

use std::fmt;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;

use crate::settings::{Mail, SmtpSecurity};

/// How long one SMTP step may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// The SMTP step that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// TCP connection, greeting, EHLO (and the TLS handshake with `tls`).
    Connect,
    /// STARTTLS and its handshake.
    Starttls,
    /// AUTH with `mail.username` / `mail.password`.
    Authenticate,
    /// MAIL FROM, RCPT TO, DATA.
    Send,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Connect => "connect",
            Step::Starttls => "STARTTLS",
            Step::Authenticate => "authentication",
            Step::Send => "delivery (MAIL FROM/RCPT TO/DATA)",
        })
    }
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The mail settings (or an address) cannot make a message: fix them.
    #[error("{0}")]
    Settings(String),
    /// The SMTP server could not be reached or refused a step.
    #[error("SMTP {step} failed ({server}): {message}")]
    Smtp {
        step: Step,
        server: String,
        message: String,
    },
}

/// A plain-text message to one recipient.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub to: Mailbox,
    pub subject: String,
    pub text: String,
}

/// Parses an address (`a@example.com` or `Alice <a@example.com>`).
pub fn mailbox(text: &str) -> Result<Mailbox, MailError> {
    text.trim()
        .parse()
        .map_err(|_| MailError::Settings(format!("`{text}` is not an email address")))
}

/// What the server said when it accepted the message.
#[derive(Debug, Clone)]
pub struct Sent {
    /// `host:port`.
    pub server: String,
    /// The server's last reply (`250 OK queued as …`).
    pub reply: String,
}

/// lettre's error and its causes, on one line.
fn describe(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Sends `outgoing` with the mail settings (`enabled` is the caller's
/// business: the test action sends with mail disabled).
pub async fn send(settings: &Mail, outgoing: Outgoing) -> Result<Sent, MailError> {
    let host = settings.smtp_host.trim();
    if host.is_empty() {
        return Err(MailError::Settings(
            "mail.smtp_host is not set (jmsctl settings set mail.smtp_host HOST)".to_string(),
        ));
    }
    if settings.from.trim().is_empty() {
        return Err(MailError::Settings(
            "mail.from is not set (jmsctl settings set mail.from ADDRESS)".to_string(),
        ));
    }
    let from =
        mailbox(&settings.from).map_err(|e| MailError::Settings(format!("mail.from: {e}")))?;
    let message = Message::builder()
        .from(from)
        .to(outgoing.to.clone())
        .subject(outgoing.subject)
        .header(ContentType::TEXT_PLAIN)
        .body(outgoing.text)
        .map_err(|e| MailError::Settings(format!("cannot build the message: {e}")))?;
    let server = format!("{host}:{}", settings.smtp_port);
    let fail = |step: Step, message: String| MailError::Smtp {
        step,
        server: server.clone(),
        message,
    };
    let timed_out = |step: Step| fail(step, format!("no answer within {STEP_TIMEOUT:?}"));
    let tls = || {
        TlsParameters::new(host.to_string())
            .map_err(|e| MailError::Settings(format!("TLS settings for {host}: {}", describe(&e))))
    };
    let hello = ClientId::Domain(hello_name(settings));

    let implicit_tls = match settings.smtp_security {
        SmtpSecurity::Tls => Some(tls()?),
        SmtpSecurity::Starttls | SmtpSecurity::None => None,
    };
    let connect = AsyncSmtpConnection::connect_tokio1(
        (host, settings.smtp_port),
        Some(STEP_TIMEOUT),
        &hello,
        implicit_tls,
        None,
    );
    let mut conn = tokio::time::timeout(STEP_TIMEOUT * 2, connect)
        .await
        .map_err(|_| timed_out(Step::Connect))?
        .map_err(|e| fail(Step::Connect, describe(&e)))?;

    if settings.smtp_security == SmtpSecurity::Starttls {
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(fail(
                Step::Starttls,
                "the server does not offer STARTTLS (set mail.smtp_security to tls or none)"
                    .to_string(),
            ));
        }
        tokio::time::timeout(STEP_TIMEOUT, conn.starttls(tls()?, &hello))
            .await
            .map_err(|_| timed_out(Step::Starttls))?
            .map_err(|e| fail(Step::Starttls, describe(&e)))?;
    }

    if !settings.username.is_empty() {
        let password = settings
            .password
            .as_ref()
            .map(|p| p.expose().to_string())
            .unwrap_or_default();
        let credentials = Credentials::new(settings.username.clone(), password);
        let auth = conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials);
        let result = tokio::time::timeout(STEP_TIMEOUT, auth)
            .await
            .map_err(|_| timed_out(Step::Authenticate))?;
        if let Err(e) = result {
            conn.abort().await;
            return Err(fail(Step::Authenticate, describe(&e)));
        }
    }

    let envelope = message.envelope().clone();
    let body = message.formatted();
    let reply = tokio::time::timeout(STEP_TIMEOUT * 3, conn.send(&envelope, &body))
        .await
        .map_err(|_| timed_out(Step::Send))?
        .map_err(|e| fail(Step::Send, describe(&e)))?;
    let _ = tokio::time::timeout(STEP_TIMEOUT, conn.quit()).await;
    let reply = format!(
        "{} {}",
        reply.code(),
        reply.message().collect::<Vec<_>>().join(" ")
    );
    tracing::info!(server, to = %outgoing.to.email, "mail sent");
    Ok(Sent { server, reply })
}

/// The name given in EHLO: the site URL's host, else `localhost`.
fn hello_name(settings: &Mail) -> String {
    reqwest::Url::parse(&settings.site_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".to_string())
}
