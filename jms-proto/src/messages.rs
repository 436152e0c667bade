//! The messages. Each request variant's doc says who may send it; jms-agentd
//! checks the caller's uid (SO_PEERCRED) against that on every request.

use jms_core::model::Secret;
use serde::{Deserialize, Serialize};

/// A request to jms-agentd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Is `user` a jms user, and does her login need a TOTP code?
    /// Caller: root (PAM inside sshd).
    UserStatus { user: String },
    /// Check a password (and TOTP code) for `user`, counting failures.
    /// Caller: root (PAM).
    Authenticate {
        user: String,
        password: Secret,
        totp: Option<Secret>,
        rhost: Option<String>,
        service: String,
    },
    /// May `user` log in now from `rhost` (active, not expired, login ACL,
    /// not locked)? Runs for key logins too. Caller: root (PAM).
    AccountCheck { user: String, rhost: Option<String> },
    /// A login session started (PAM open_session). Caller: root.
    SessionOpen {
        user: String,
        rhost: Option<String>,
        tty: Option<String>,
        pid: u32,
    },
    /// A login session ended (PAM close_session). Caller: root.
    SessionClose { user: String, pid: u32 },
    /// The public keys `user` may log in with, in authorized_keys format.
    /// Caller: root or the configured AuthorizedKeysCommandUser.
    AuthorizedKeys { user: String },
}

impl Request {
    /// The variant's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::UserStatus { .. } => "user_status",
            Request::Authenticate { .. } => "authenticate",
            Request::AccountCheck { .. } => "account_check",
            Request::SessionOpen { .. } => "session_open",
            Request::SessionClose { .. } => "session_close",
            Request::AuthorizedKeys { .. } => "authorized_keys",
        }
    }
}

/// jms-agentd's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "response", rename_all = "snake_case", deny_unknown_fields)]
pub enum Response {
    UserStatus {
        known: bool,
        needs_totp: bool,
    },
    Auth {
        result: AuthResult,
    },
    Account {
        result: AccountResult,
    },
    /// The request was done.
    Done,
    /// `authorized_keys` lines (empty for unknown users).
    Keys {
        keys: Vec<String>,
    },
    /// The caller may not send this request.
    Forbidden {
        reason: String,
    },
    /// The request was malformed or the daemon failed; nothing was done.
    Error {
        message: String,
    },
}

/// The outcome of [`Request::Authenticate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthResult {
    Success,
    /// Wrong password or code (a failure was counted).
    WrongSecret,
    /// Not a jms user: other PAM modules decide.
    UnknownUser,
    /// Refused before checking the secret (locked, no password set, …).
    Denied {
        reason: String,
    },
}

/// The outcome of [`Request::AccountCheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case", deny_unknown_fields)]
pub enum AccountResult {
    Allowed,
    UnknownUser,
    /// The account's expiry date has passed.
    Expired {
        reason: String,
    },
    /// Disabled, outside the login ACL, or locked.
    Denied {
        reason: String,
    },
}
