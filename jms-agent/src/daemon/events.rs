//! The audit events, one definition for both sides: a worker sends them
//! to the monitor ([`crate::wire::FromWorker`]), the monitor writes them
//! into its spool (`crate::daemon::monitor::spool`), as JSON lines whose
//! shape the central server reads. Free-text fields are bounded
//! ([`MAX_TEXT_BYTES`]) so one line typed by an engineer cannot take the
//! spool.

use serde::{Deserialize, Serialize};

/// Most bytes one free-text field of an event may take (a command, a
/// command line, a path, a reason): a longer one is cut with a marker, so
/// that one line typed (or sent) by an engineer cannot take the spool.
pub const MAX_TEXT_BYTES: usize = 4096;

/// `text` cut to [`MAX_TEXT_BYTES`] (on a character boundary) with a
/// marker saying how much was cut; unchanged when it fits.
pub fn bounded_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_TEXT_BYTES {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = MAX_TEXT_BYTES - 64;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}…[jms: {} more bytes cut]",
        &text[..end],
        text.len() - end
    ))
}

fn bound(text: &mut String) {
    if text.len() > MAX_TEXT_BYTES {
        *text = bounded_text(text).into_owned();
    }
}

fn bound_opt(text: &mut Option<String>) {
    if let Some(text) = text {
        bound(text);
    }
}

/// Who did it where: every session-scoped event carries this.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Scope {
    pub session: String,
    pub user: String,
    pub asset: String,
    /// The account's name in the policy (`root`, `@INPUT`, …).
    pub account: String,
    /// The login used on the target, when known.
    pub username: Option<String>,
}

/// What happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventBody {
    /// The target connection is up.
    SessionStart {
        #[serde(flatten)]
        scope: Scope,
        /// `shell`, `exec`, `sftp`, `scp`, `rsync`.
        kind: String,
        protocol: String,
        client: Option<String>,
        command: Option<String>,
        /// File name of the recording in the recordings dir.
        recording: Option<String>,
    },
    /// The session is over.
    SessionEnd {
        #[serde(flatten)]
        scope: Scope,
        exit_status: Option<i32>,
        /// Why it ended abnormally.
        reason: Option<String>,
        duration_ms: u64,
        bytes_in: u64,
        bytes_out: u64,
        recording: Option<String>,
        recording_truncated: bool,
    },
    /// A session request refused before any target connection.
    SessionDenied {
        /// The refused session's id (absent in older spools).
        #[serde(default)]
        session: Option<String>,
        user: String,
        command_line: String,
        reason: String,
        client: Option<String>,
    },
    /// One command: typed in a shell, or an exec request.
    Command {
        #[serde(flatten)]
        scope: Scope,
        command: String,
        /// `interactive` or `exec`.
        kind: String,
        /// `allow` or `deny`.
        decision: String,
        /// The filter that decided, when one did.
        filter: Option<String>,
        /// Who typed the line when it was not the session's user alone:
        /// a joiner of a shared session (`bob`), or each who typed into
        /// the line (`alice,bob`). Absent: the session's user.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        typed_by: Option<String>,
    },
    /// A PAM authentication on the bastion (password, and TOTP code when
    /// the user has one): its outcome.
    Login {
        user: String,
        /// Where the engineer connected from (PAM_RHOST).
        rhost: Option<String>,
        /// The PAM service (`sshd`).
        service: String,
        /// `success`, `failure` (wrong password or code), `unknown_user`
        /// or `denied` (locked, no password set, second factor missing).
        outcome: String,
        reason: Option<String>,
    },
    /// One file operation (upload, download, delete, rename, mkdir, …).
    Transfer {
        #[serde(flatten)]
        scope: Scope,
        /// The wire: `sftp`, `scp` (legacy) or `rsync`.
        via: String,
        operation: String,
        path: String,
        /// A rename's or link's destination.
        to: Option<String>,
        size: Option<u64>,
        /// `ok`, or why it failed or was refused.
        result: String,
    },
    /// A session share: a code made (`create`), a second user joining or
    /// leaving (`join`, `leave`). The scope is the shared session's.
    Share {
        #[serde(flatten)]
        scope: Scope,
        action: String,
        /// `read` or `write`.
        mode: String,
        /// The user who joined or left.
        peer: Option<String>,
    },
}

impl EventBody {
    /// The event with every free-text field cut to [`MAX_TEXT_BYTES`].
    pub fn bounded(mut self) -> EventBody {
        #[allow(unreachable_patterns)]
        match &mut self {
            EventBody::SessionStart {
                command, client, ..
            } => {
                bound_opt(command);
                bound_opt(client);
            }
            EventBody::SessionEnd { reason, .. } => bound_opt(reason),
            EventBody::SessionDenied {
                command_line,
                reason,
                client,
                ..
            } => {
                bound(command_line);
                bound(reason);
                bound_opt(client);
            }
            EventBody::Command { command, .. } => bound(command),
            EventBody::Login {
                user,
                rhost,
                reason,
                ..
            } => {
                bound(user);
                bound_opt(rhost);
                bound_opt(reason);
            }
            EventBody::Transfer {
                path, to, result, ..
            } => {
                bound(path);
                bound_opt(to);
                bound(result);
            }
            _ => {}
        }
        self
    }
}

/// A new random id (UUID v4 text) for sessions and events.
pub fn new_id() -> String {
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_err()
    {
        // Not expected on Linux; still unique enough within this daemon.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ (std::process::id() as u128) << 64).to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_uuid_v4_and_unique() {
        let (a, b) = (new_id(), new_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
