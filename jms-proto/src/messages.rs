//! The messages. Each request variant's doc says who may send it; jms-agentd
//! checks the caller's uid (SO_PEERCRED) against that on every request.

use jms_core::model::Secret;
use serde::{Deserialize, Serialize};

/// A request to jms-agentd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Is `user` a jms user, and does her login need a TOTP code?
    /// Caller: root. (pam_jms no longer asks it: it reads the NSS cache and
    /// learns about TOTP from [`AuthResult::NeedCode`].)
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
    /// Every asset the caller is granted now, for the menu.
    /// Caller: a jms user (her uid from the id map); answers for her only.
    ListAssets,
    /// Start a session for the caller. Sent with SCM_RIGHTS file
    /// descriptors [stdin, stdout, stderr] (for a pty session, the pty
    /// three times). The connection then stays open: the agent may send
    /// [`Request::Resize`] and [`Request::Credentials`]; the daemon answers
    /// [`Response::NeedCredentials`], [`Response::SessionStarted`],
    /// [`Response::Denied`] and finally [`Response::SessionEnded`].
    /// Caller: a jms user.
    OpenSession(SessionRequest),
    /// The engineer's terminal was resized (during a session).
    Resize { cols: u16, rows: u16 },
    /// Typed credentials, answering [`Response::NeedCredentials`] (for
    /// `@INPUT`, or `@USER` without a vaulted secret).
    Credentials {
        username: Option<String>,
        password: Secret,
    },
}

/// What the engineer asked sshd for, as jms-agent saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// `SSH_ORIGINAL_COMMAND` as sshd gave it (`web01`, `root@web01`,
    /// `web01 uptime; id`, `scp -t web01:/tmp/`, `rsync --server …`, the
    /// sftp subsystem command), or what the menu picked (`root@web01`).
    /// The daemon parses it; the agent's reading is never trusted.
    pub command_line: String,
    /// The engineer's terminal, when the session has one.
    pub pty: Option<PtyInfo>,
    /// Source address of the engineer (from `SSH_CONNECTION`), for audit.
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PtyInfo {
    pub term: String,
    pub cols: u16,
    pub rows: u16,
}

/// One asset of [`Response::Assets`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedAsset {
    pub name: String,
    pub address: String,
    pub nodes: Vec<String>,
    pub accounts: Vec<ListedAccount>,
}

/// One account of a [`ListedAsset`]: a real account (`username` known) or
/// a virtual one (`@INPUT`, `@USER`, `@ANON`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedAccount {
    pub name: String,
    pub username: Option<String>,
    pub protocols: Vec<jms_core::model::Protocol>,
    pub actions: Vec<jms_core::model::Action>,
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
            Request::ListAssets => "list_assets",
            Request::OpenSession(_) => "open_session",
            Request::Resize { .. } => "resize",
            Request::Credentials { .. } => "credentials",
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
    /// Answer to [`Request::ListAssets`], in asset-name order.
    Assets {
        assets: Vec<ListedAsset>,
    },
    /// The session needs typed credentials: ask the engineer (the username
    /// too when `username` is true) and send [`Request::Credentials`].
    NeedCredentials {
        username: bool,
    },
    /// The target connection is up; the relay runs.
    SessionStarted {
        session_id: String,
    },
    /// Refused, with one line for the engineer (never naming assets she
    /// cannot see).
    Denied {
        reason: String,
    },
    /// The session is over; `exit_status` is the target command's, and
    /// `message` a line for the engineer when it ended abnormally.
    SessionEnded {
        exit_status: Option<i32>,
        message: Option<String>,
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
    /// The password is right and the user has TOTP, but no code was sent:
    /// ask for it and send [`Request::Authenticate`] again with both. The
    /// code is asked only after the password, so the prompts tell nothing
    /// about a name to someone without its password.
    NeedCode,
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
