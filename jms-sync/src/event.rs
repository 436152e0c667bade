//! The audit events, one definition for both sides of the sync API: a
//! bastion's worker makes them, its monitor spools them as JSON lines
//! ([`Event`]) and uploads them (`POST` [`crate::paths::EVENTS`]); the
//! server stores each line as received and projects it through
//! [`EventBody`] into its audit tables. Both sides match every kind with
//! no catch-all, so a kind added here is handled on both or compiles on
//! neither. Fields a bastion may leave out (older spools) have defaults;
//! fields nobody knows are ignored, and a kind a server does not know is
//! stored but not projected. Free-text fields are bounded
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
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub asset: String,
    /// The account's name in the policy (`root`, `@INPUT`, …).
    #[serde(default)]
    pub account: String,
    /// The login used on the target, when known.
    #[serde(default)]
    pub username: Option<String>,
}

/// An exec session's output as the audit keeps it, like a transfer's:
/// each stream's size and SHA-256 (hex), whatever the recording kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct OutputDigest {
    pub stdout_bytes: u64,
    pub stdout_sha256: String,
    pub stderr_bytes: u64,
    pub stderr_sha256: String,
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
        #[serde(default)]
        kind: String,
        #[serde(default)]
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
        #[serde(default)]
        duration_ms: u64,
        #[serde(default)]
        bytes_in: u64,
        #[serde(default)]
        bytes_out: u64,
        recording: Option<String>,
        #[serde(default)]
        recording_truncated: bool,
        /// An exec on pipes: what its output was (the recording keeps only
        /// its head and tail). Absent for terminals, transfers and older
        /// spools.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        output: Option<Box<OutputDigest>>,
    },
    /// A session request refused before any target connection.
    SessionDenied {
        /// The refused session's id (absent in older spools).
        #[serde(default)]
        session: Option<String>,
        #[serde(default)]
        user: String,
        #[serde(default)]
        command_line: String,
        #[serde(default)]
        reason: String,
        client: Option<String>,
    },
    /// One command: typed in a shell, or an exec request.
    Command {
        #[serde(flatten)]
        scope: Scope,
        command: String,
        /// `interactive` or `exec`.
        #[serde(default)]
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
        #[serde(default)]
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
        #[serde(default)]
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
    /// One step of an account job as the bastion ran it (`login`,
    /// `apply`, `verify_new`, …), written by the monitor as the job
    /// worker reports it, so the audit keeps what reached the target even
    /// when the job's report never comes. Never a secret: the worker
    /// scrubs every secret of the job from the output.
    JobStep {
        job: String,
        /// push, verify, rotate, remove, discover.
        kind: String,
        asset: String,
        /// The account's name in the policy (empty for a discovery).
        #[serde(default)]
        account: String,
        /// Which attempt of the job (1 on its first bastion).
        #[serde(default)]
        attempt: u32,
        step: String,
        ok: bool,
        /// What the step said (cut like the report's).
        #[serde(default)]
        detail: String,
    },
}

impl EventBody {
    /// The event with every free-text field cut to [`MAX_TEXT_BYTES`].
    pub fn bounded(mut self) -> EventBody {
        match &mut self {
            EventBody::SessionStart {
                command, client, ..
            } => {
                bound_opt(command);
                bound_opt(client);
            }
            EventBody::SessionEnd { reason, output, .. } => {
                bound_opt(reason);
                if let Some(output) = output {
                    bound(&mut output.stdout_sha256);
                    bound(&mut output.stderr_sha256);
                }
            }
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
            EventBody::Share { peer, .. } => bound_opt(peer),
            EventBody::JobStep {
                job,
                kind,
                asset,
                account,
                step,
                detail,
                ..
            } => {
                for text in [job, kind, asset, account, step, detail] {
                    bound(text);
                }
            }
        }
        self
    }
}

impl EventBody {
    /// The kind, as the `event` field names it.
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::SessionStart { .. } => "session_start",
            EventBody::SessionEnd { .. } => "session_end",
            EventBody::SessionDenied { .. } => "session_denied",
            EventBody::Command { .. } => "command",
            EventBody::Login { .. } => "login",
            EventBody::Transfer { .. } => "transfer",
            EventBody::Share { .. } => "share",
            EventBody::JobStep { .. } => "job_step",
        }
    }

    /// One event of every kind, all in session `s1` of `alice` on `web01`
    /// (what a session start to end writes), for the tests of both sides:
    /// a kind added to [`EventBody`] and not here fails to compile (the
    /// match below) or fails `every_kind_has_an_example`.
    pub fn one_of_each() -> Vec<EventBody> {
        let scope = Scope {
            session: "s1".into(),
            user: "alice".into(),
            asset: "web01".into(),
            account: "root".into(),
            username: Some("root".into()),
        };
        let all = vec![
            EventBody::SessionStart {
                scope: scope.clone(),
                kind: "shell".into(),
                protocol: "ssh".into(),
                client: Some("10.0.0.1".into()),
                command: None,
                recording: Some("s1.cast".into()),
            },
            EventBody::Command {
                scope: scope.clone(),
                command: "id".into(),
                kind: "interactive".into(),
                decision: "allow".into(),
                filter: None,
                typed_by: Some("bob".into()),
            },
            EventBody::Transfer {
                scope: scope.clone(),
                via: "sftp".into(),
                operation: "upload".into(),
                path: "/tmp/f".into(),
                to: None,
                size: Some(5),
                result: "ok".into(),
            },
            EventBody::Share {
                scope: scope.clone(),
                action: "join".into(),
                mode: "read".into(),
                peer: Some("bob".into()),
            },
            EventBody::SessionEnd {
                scope,
                exit_status: Some(0),
                reason: None,
                duration_ms: 9000,
                bytes_in: 5,
                bytes_out: 7,
                recording: Some("s1.cast".into()),
                recording_truncated: false,
                output: Some(Box::new(OutputDigest {
                    stdout_bytes: 7,
                    stdout_sha256: "ab".repeat(32),
                    stderr_bytes: 0,
                    stderr_sha256: "cd".repeat(32),
                })),
            },
            EventBody::SessionDenied {
                session: Some("s2".into()),
                user: "bob".into(),
                command_line: "db01".into(),
                reason: "no grant".into(),
                client: Some("10.0.0.9".into()),
            },
            EventBody::Login {
                user: "alice".into(),
                rhost: Some("10.0.0.1".into()),
                service: "sshd".into(),
                outcome: "success".into(),
                reason: None,
            },
            EventBody::JobStep {
                job: "job-1".into(),
                kind: "rotate".into(),
                asset: "web01".into(),
                account: "app".into(),
                attempt: 1,
                step: "apply".into(),
                ok: true,
                detail: "changed: password set".into(),
            },
        ];
        let mut seen = [false; 8];
        for event in &all {
            let i = match event {
                EventBody::SessionStart { .. } => 0,
                EventBody::SessionEnd { .. } => 1,
                EventBody::SessionDenied { .. } => 2,
                EventBody::Command { .. } => 3,
                EventBody::Login { .. } => 4,
                EventBody::Transfer { .. } => 5,
                EventBody::Share { .. } => 6,
                EventBody::JobStep { .. } => 7,
            };
            seen[i] = true;
        }
        assert!(seen.iter().all(|s| *s), "one_of_each misses a kind");
        all
    }
}

/// `POST` [`crate::paths::EVENTS`]: one upload, each event as spooled. The
/// events stay JSON values here: the server stores each as received (a
/// line of a newer bastion included) and projects it through
/// [`EventBody`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventBatch<E = serde_json::Value> {
    /// Each event; the server reads them as raw JSON text
    /// (`EventBatch<&RawValue>`), storing each as sent.
    pub events: Vec<E>,
}

/// The answer to an upload: the idempotency keys now stored (new or
/// before; the bastion deletes exactly these) and how many were new.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsAccepted {
    pub accepted: Vec<String>,
    pub stored: u64,
}

/// One event as spooled and uploaded: a JSON line whose `id` is the
/// upload's idempotency key, `time` RFC 3339 UTC and `event` its kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// Unique id: the idempotency key of the upload.
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    #[serde(flatten)]
    pub body: EventBody,
}

impl Event {
    /// An event happening now, with a fresh id.
    pub fn now(body: EventBody) -> Event {
        Event {
            id: new_id(),
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            body,
        }
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

    #[test]
    fn every_kind_has_an_example_and_round_trips() {
        let all = EventBody::one_of_each();
        let kinds: std::collections::BTreeSet<&str> = all.iter().map(EventBody::kind).collect();
        assert_eq!(kinds.len(), all.len(), "one example per kind");
        for body in all {
            let event = Event::now(body.clone());
            let line = serde_json::to_string(&event).unwrap();
            let value: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(value["event"], body.kind(), "{line}");
            assert_eq!(value["id"], event.id.as_str());
            let back: Event = serde_json::from_str(&line).unwrap();
            assert_eq!(back, event, "{line}");
            assert_eq!(body.clone().bounded(), body);
        }
    }

    /// The spool's lines keep the shape stored events have: the same
    /// bytes for the same event (fields in declaration order, scope
    /// flattened, absent options as `null`).
    #[test]
    fn the_line_format_is_stable() {
        let event = Event {
            id: "e1".into(),
            time: "2026-01-01T00:00:00.000Z".into(),
            body: EventBody::one_of_each().remove(0),
        };
        assert_eq!(
            serde_json::to_string(&event).unwrap(),
            r#"{"id":"e1","time":"2026-01-01T00:00:00.000Z","event":"session_start","session":"s1","user":"alice","asset":"web01","account":"root","username":"root","kind":"shell","protocol":"ssh","client":"10.0.0.1","command":null,"recording":"s1.cast"}"#
        );
    }

    /// Lines of older bastions (fields left out) and of newer ones
    /// (fields added) still parse; a kind nobody knows does not.
    #[test]
    fn old_and_new_lines_parse_unknown_kinds_do_not() {
        let old: EventBody = serde_json::from_value(serde_json::json!({
            "event": "session_end", "session": "s1", "exit_status": 0, "later_field": 1
        }))
        .unwrap();
        assert!(
            matches!(old, EventBody::SessionEnd { ref scope, bytes_in: 0, .. } if scope.user.is_empty())
        );
        let denied: EventBody = serde_json::from_value(serde_json::json!({
            "event": "session_denied", "user": "bob", "command_line": "x", "reason": "r", "client": null
        }))
        .unwrap();
        assert!(matches!(
            denied,
            EventBody::SessionDenied { session: None, .. }
        ));
        assert!(
            serde_json::from_value::<EventBody>(serde_json::json!({"event": "new_kind"})).is_err()
        );
    }

    #[test]
    fn long_text_is_cut_with_a_marker() {
        let long = "x".repeat(MAX_TEXT_BYTES * 2);
        let EventBody::Command { command, .. } = (EventBody::Command {
            scope: Scope {
                session: "s".into(),
                user: String::new(),
                asset: String::new(),
                account: String::new(),
                username: None,
            },
            command: long,
            kind: String::new(),
            decision: "allow".into(),
            filter: None,
            typed_by: None,
        })
        .bounded() else {
            unreachable!()
        };
        assert!(command.len() <= MAX_TEXT_BYTES && command.contains("more bytes cut"));
    }
}
