//! The typed messages between jms-agentd (the monitor, root) and a session
//! worker (`jms-session`, one unprivileged process per session): the one
//! definition both sides use. Framed like the socket protocol
//! (`jms_proto::write_frame`): the monitor reads at most
//! [`jms_proto::MAX_FRAME`] from a worker (whose bytes it does not trust);
//! the worker reads up to [`jms_proto::MAX_RESPONSE_FRAME`].
//!
//! - [`JobStart`]: the only message to an account job's worker, which
//!   answers with [`FromJob`] frames: each step as it ends, then its report.
//! - [`Start`]: the first message on the worker's stdin, with the agent's
//!   control stream, stdin, stdout and stderr attached (SCM_RIGHTS) and,
//!   after them, the directories the worker writes into.
//! - [`FromWorker`]: asks (each answered by exactly one [`ToWorker::Answer`],
//!   in order), events for the spool, live-session notes.
//! - [`ToWorker`]: answers and orders (end, notice, a joiner's keys, a
//!   watcher's pipe, new settings).

use jms_core::model::{Action, AuditOnFailure, ExecStdin, FilterAction, Protocol};
use jms_proto::SessionRequest;
use serde::{Deserialize, Serialize};

use crate::daemon::events::EventBody;
use crate::daemon::target::{Credential, Resolved};

/// argv[0] of a worker (jms-agentd re-executed).
pub const WORKER_NAME: &str = "jms-session";
/// argv[0] of an account job's worker.
pub const JOB_WORKER_NAME: &str = "jms-job";
/// Descriptors that come with [`Start`]: control, stdin, stdout, stderr.
pub const START_FDS: usize = 4;
/// Largest chunk of a joiner's keys in one message.
pub const INPUT_CHUNK: usize = 4096;

/// The settings a session needs (the effective ones when it starts;
/// limits change with [`ToWorker::Settings`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SessionSettings {
    pub limits: WireLimits,
    pub record_input: bool,
    pub recording_cap_bytes: u64,
    pub command_filter_default: FilterAction,
    pub exec_stdin: ExecStdin,
    pub stdin_interpreters: Vec<String>,
    pub audit_on_failure: AuditOnFailure,
    pub credentials_timeout_secs: u64,
    /// The OpenSSH client.
    pub ssh: std::path::PathBuf,
    /// Per-session scratch space (owned by the worker user).
    pub runtime_dir: std::path::PathBuf,
    /// Where recordings are written (owned by the worker user).
    pub recordings_dir: std::path::PathBuf,
    /// Pinned and first-seen host keys (owned by the worker user).
    pub known_hosts_dir: std::path::PathBuf,
    pub connect_timeout_secs: u64,
    pub login_timeout_secs: u64,
    /// `[sessions] target_ciphers` (see `config::cipher_option`).
    pub target_ciphers: String,
    /// `[sessions] exec_recording_keep_bytes` (0: the whole output).
    pub exec_recording_keep_bytes: u64,
}

/// Idle and maximum session length, in seconds (`None`: no limit).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireLimits {
    pub idle_secs: Option<u64>,
    pub max_secs: Option<u64>,
}

impl WireLimits {
    /// The limits in force.
    pub fn of(effective: &crate::daemon::config::Effective) -> WireLimits {
        WireLimits {
            idle_secs: effective.idle_timeout.map(|d| d.as_secs()),
            max_secs: effective.max_session.map(|d| d.as_secs()),
        }
    }
}

/// The first message to a worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Start {
    pub session: String,
    /// The jms user (from the caller's uid).
    pub user: String,
    pub request: SessionRequest,
    pub settings: SessionSettings,
}

/// The only message to a job worker (`jms-job`, same user and limits as
/// a session's): the server's order and its opened secrets. The worker
/// answers with [`FromJob`] frames, the report last, and exits.
/// What an account job's worker sends: each step as it ends (the monitor
/// spools it as an audit event), then the report, last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum FromJob {
    Step(jms_sync::job::JobStep),
    Report(jms_sync::job::JobReport),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStart {
    pub order: jms_sync::job::JobOrder,
    pub secrets: jms_sync::job::JobSecrets,
    pub settings: SessionSettings,
}

/// One command filter as the policy states it, compiled by the worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FilterRule {
    pub name: String,
    pub action: FilterAction,
    pub rules: Vec<String>,
}

/// A grant decision the monitor made for this session: the target without
/// any secret (the asset's accounts are left out), and the filters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Grant {
    pub resolved: Resolved,
    pub filters: Vec<FilterRule>,
}

/// What a worker asks the monitor; one [`ToWorker::Answer`] each.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Ask {
    /// `[account@]asset` for `protocol` and `action`: a [`Answer::Grant`].
    Resolve {
        account: Option<String>,
        asset: String,
        protocol: Protocol,
        action: Action,
    },
    /// The vaulted credential of a target this session resolved.
    Credential { asset: String, account: String },
    /// Whether `action` is granted on a target this session resolved.
    Decide {
        asset: String,
        account: String,
        protocol: Protocol,
        action: Action,
    },
    /// The SFTP root's folders.
    Folders,
    /// One SFTP folder name.
    Folder { name: String },
    /// An SFTP operation on a folder.
    FolderCheck { folder: Folder, action: Action },
    /// `share [SESSION] [--write] [--ttl D]`: the text for the engineer.
    Share {
        session: Option<String>,
        write: bool,
        ttl_secs: u64,
        newline: String,
    },
    /// `join CODE`: the tap's read end comes with the answer.
    Join { code: String },
    /// Why the joined session ended, once it did.
    JoinEnded,
    /// One event for the spool (the monitor sets the session and user
    /// itself); answered once it is durable, so that what the engineer is
    /// told next is on record first.
    Record(EventBody),
}

/// The monitor's answers.
#[derive(Serialize, Deserialize)]
pub enum Answer {
    Grant(Result<Grant, String>),
    Credential(Option<Credential>),
    Decision(Result<(), String>),
    Folders(Vec<(String, Folder)>),
    Folder(Result<Folder, Unresolved>),
    Share(Result<String, String>),
    /// The joined session (its pipe attached).
    Join(Result<Joined, String>),
    JoinEnded(Option<String>),
    Recorded,
    /// The ask is not valid here.
    Refused(String),
}

/// A session the worker's user joined.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Joined {
    pub session: String,
    pub owner: String,
    pub asset: String,
    pub account: String,
    pub write: bool,
}

/// A worker's target session as the live registry sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Register {
    pub kind: String,
    pub protocol: Protocol,
    pub asset: String,
    pub account: String,
    pub cols: u16,
    pub rows: u16,
}

/// Worker → monitor.
#[derive(Serialize, Deserialize)]
pub enum FromWorker {
    Ask(Ask),
    /// The session is live: watchable, terminable.
    Register(Register),
    /// Keys of the joining user for the joined session.
    JoinInput(Vec<u8>),
    /// The engineer's terminal changed size: a watcher or joiner who
    /// comes later starts at it.
    Resized {
        cols: u16,
        rows: u16,
    },
    /// The session is over; the worker exits next.
    Done,
}

/// Monitor → worker.
#[derive(Serialize, Deserialize)]
pub enum ToWorker {
    Answer(Box<Answer>),
    /// End the session with this line.
    End(String),
    /// A line for the engineer (someone joined or left).
    Notice(String),
    /// A joiner's keys (who typed them).
    Input {
        joiner: String,
        data: Vec<u8>,
    },
    /// A watcher's pipe (its write end attached): the recent output, then
    /// the rest.
    Tap,
    /// New limits (the settings changed).
    Settings(WireLimits),
}

/// One asset folder: the target of an upstream session.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Folder {
    pub asset: String,
    /// The account's name in the policy.
    pub account: String,
}

/// Why a folder name does not resolve (the message names only what the
/// user typed or may use).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Unresolved {
    /// Unknown, not granted, or no account usable over SFTP.
    NoSuchAsset(String),
    /// Several accounts: the message lists the folder names to use.
    Ambiguous(String),
}

impl Unresolved {
    pub fn message(&self) -> String {
        match self {
            Unresolved::NoSuchAsset(name) => format!("no such asset: {name}"),
            Unresolved::Ambiguous(choices) => choices.clone(),
        }
    }
}
