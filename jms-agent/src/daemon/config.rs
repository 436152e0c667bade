//! `/etc/jms/agentd.toml`: every path the daemon uses, overridable for tests,
//! with defaults from named functions. Unknown keys are refused.
//!
//! [`Effective`] is the one place the daemon keeps the settings that the
//! central server may override (lockout, MFA, session limits, recording,
//! command filter default): this file's values, with the bundle's
//! `settings` document laid over them ([`Effective::with_server`]).

use std::path::{Path, PathBuf};

use std::time::Duration;

use anyhow::{bail, Context, Result};
use jms_core::login::LockoutPolicy;
use jms_core::model::{AuditOnFailure, ExecStdin, FilterAction, User};
use jms_core::nss_cache::{NssSettings, DEFAULT_NSS_CACHE_PATH};
use jms_core::uids::IdRanges;
use serde::Deserialize;

/// Where the daemon looks for its configuration unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/jms/agentd.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentdConfig {
    /// The socket PAM and jms-agent connect to.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Private state (0700): login state, id map.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The public NSS cache (0644) that libnss_jms reads.
    #[serde(default = "default_nss_cache")]
    pub nss_cache: PathBuf,
    /// The local policy file. Either this or `[central]`.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// The central server the policy comes from (after `jms-agentd enroll`).
    #[serde(default)]
    pub central: Option<CentralConfig>,
    /// `[sshd]`: what enrollment tells the server about this bastion's
    /// sshd, for the server's SSH client (web terminal, file manager).
    #[serde(default)]
    pub sshd: SshdConfig,
    /// The only non-root user allowed to ask for public keys
    /// (sshd's AuthorizedKeysCommandUser).
    #[serde(default = "default_keys_user")]
    pub authorized_keys_user: String,
    /// Time zone of login time windows (IANA name).
    #[serde(default = "default_timezone")]
    pub timezone: String,
    #[serde(default = "default_shell")]
    pub shell: String,
    #[serde(default = "default_home")]
    pub home: String,
    #[serde(default)]
    pub ids: IdRanges,
    #[serde(default)]
    pub lockout: LockoutConfig,
    /// Who must have a second factor (TOTP) to log in: `none`, `all`, or
    /// `groups` (members of `mfa_groups`). The central server's
    /// `security.mfa_required` overrides it.
    #[serde(default)]
    pub mfa_required: MfaRequired,
    #[serde(default)]
    pub mfa_groups: Vec<String>,
    /// Connections of all engineers' uids together (a session holds one
    /// for its whole life); more are refused with "busy". Root's and the
    /// keys user's connections (the login lane) are not counted here.
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Connections one uid other than root and the keys user may hold at
    /// once (its sessions, menus, requests); more are refused with a line
    /// that names this limit.
    #[serde(default = "default_max_clients_per_uid")]
    pub max_clients_per_uid: usize,
    /// Connections root (pam_jms inside sshd, su, sudo) may hold at once,
    /// and, separately, the keys user (AuthorizedKeysCommandUser): the
    /// login lane, which engineers' connections can never take.
    #[serde(default = "default_max_login_clients")]
    pub max_login_clients: usize,
    /// Target sessions: the ssh client, recordings, spool.
    #[serde(default)]
    pub sessions: SessionsConfig,
    /// What happens when the audit store is full.
    #[serde(default)]
    pub audit: AuditConfig,
}

/// `[audit]`: what happens when the event spool or the recording store
/// cannot take more. The central server's `audit.on_failure` overrides it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// `refuse` (new sessions are refused with a message, and a session
    /// whose recording stops is ended) or `continue` (sessions go on
    /// unaudited); an alarm is logged either way.
    #[serde(default)]
    pub on_failure: AuditOnFailure,
}

/// `[sshd]`: this bastion's sshd as the server's SSH client reaches it.
/// Sent at enrollment; the server pins the host keys (re-enroll to change
/// them).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshdConfig {
    /// `host:port` the server connects to; none: the address this
    /// bastion's sync requests come from, port 22.
    #[serde(default)]
    pub address: Option<String>,
    /// Host public key files (those that exist are sent).
    #[serde(default = "default_host_key_files")]
    pub host_keys: Vec<PathBuf>,
}

impl Default for SshdConfig {
    fn default() -> Self {
        SshdConfig {
            address: None,
            host_keys: default_host_key_files(),
        }
    }
}

fn default_host_key_files() -> Vec<PathBuf> {
    ["ed25519", "ecdsa", "rsa"]
        .iter()
        .map(|kind| PathBuf::from(format!("/etc/ssh/ssh_host_{kind}_key.pub")))
        .collect()
}

/// `[central]`: where the policy comes from when a central server holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// The server's origin, `http://127.0.0.1:8420` or `https://jms.example`,
    /// or a list of them (instances of one server, all holding the same
    /// keys): each request goes to the one that answered last and, when it
    /// cannot be reached, answers 5xx or an answer is not the server's, to
    /// the next. Every sync request is safe to send again (event ids,
    /// recording offsets, nonces), so any request may move on.
    #[serde(deserialize_with = "one_or_more_urls")]
    pub server: Vec<String>,
    /// Seconds between polls for a newer bundle.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_secs: u64,
    /// Seconds the last good policy may be used without reaching the
    /// server; past it jms users are refused (local users never are).
    #[serde(default = "default_max_staleness")]
    pub max_staleness_secs: u64,
    /// Seconds one HTTP request may take.
    #[serde(default = "default_http_timeout")]
    pub timeout_secs: u64,
    /// Long-poll: seconds the server may hold a bundle request until the
    /// policy changes (at most 60; 0 polls every `poll_interval_secs`).
    #[serde(default = "default_long_poll")]
    pub long_poll_secs: u64,
    /// Days before its end that the bastion's client certificate is
    /// renewed (the server issues them for 365 days).
    #[serde(default = "default_renew_cert_before_days")]
    pub renew_cert_before_days: u64,
}

/// `server = "URL"` or `server = ["URL", ...]` (at least one, none empty).
fn one_or_more_urls<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMore {
        One(String),
        More(Vec<String>),
    }
    let urls = match OneOrMore::deserialize(deserializer)? {
        OneOrMore::One(url) => vec![url],
        OneOrMore::More(urls) => urls,
    };
    if urls.is_empty() || urls.iter().any(|u| u.trim().is_empty()) {
        return Err(serde::de::Error::custom(
            "server: give a URL or a list of URLs, none empty",
        ));
    }
    Ok(urls)
}

impl CentralConfig {
    /// The server URLs, for messages.
    pub fn servers(&self) -> String {
        self.server.join(", ")
    }
}

fn default_renew_cert_before_days() -> u64 {
    30
}

fn default_long_poll() -> u64 {
    30
}

fn default_poll_interval() -> u64 {
    10
}
fn default_max_staleness() -> u64 {
    24 * 3600
}
fn default_http_timeout() -> u64 {
    30
}

/// `[sessions]`: how target sessions are opened, recorded and audited.
/// Every key has a default; directories default to places under
/// `state_dir` (root-only, 0700).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsConfig {
    /// The OpenSSH client that opens target connections.
    #[serde(default = "default_ssh")]
    pub ssh: PathBuf,
    /// Asciicast recordings (default `<state_dir>/recordings`).
    #[serde(default)]
    pub recordings_dir: Option<PathBuf>,
    /// The durable event spool (default `<state_dir>/spool`).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Per-session scratch space: askpass pipes and private keys, removed
    /// when the session ends (default `/run/jms/sessions`, a tmpfs).
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// Bytes one recording may take; past it a notice is written and the
    /// recording stops; under `audit.on_failure = refuse` the session is
    /// ended too, otherwise it goes on unrecorded.
    #[serde(default = "default_recording_cap")]
    pub recording_cap_bytes: u64,
    /// Bytes all recordings in `recordings_dir` may take together; past
    /// it an alarm is logged and (under `audit.on_failure = refuse`) new
    /// sessions are refused until the uploader or an administrator frees
    /// space.
    #[serde(default = "default_recordings_total_max")]
    pub recordings_total_max_bytes: u64,
    /// Record the engineer's keystrokes too (asciicast "i" events).
    #[serde(default)]
    pub record_input: bool,
    /// Seconds without a keystroke (or, for an exec without a terminal,
    /// without output) before a session is ended; 0 never.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Seconds a session may last; 0 without limit.
    #[serde(default = "default_max_session")]
    pub max_session_secs: u64,
    /// What happens to a command no filter matches: `allow` or `deny`.
    #[serde(default = "default_filter_action")]
    pub command_filter_default: FilterAction,
    /// An exec without a terminal whose command is a shell or interpreter
    /// reading its input (`sh`, `bash`, `python3`, `sudo -s`…, and
    /// `stdin_interpreters`): `check` each input line against the command
    /// filters before forwarding it, `refuse` the exec, or `pass` it.
    #[serde(default)]
    pub exec_stdin: ExecStdin,
    /// More program names (basenames) treated as interpreters for
    /// `exec_stdin`.
    #[serde(default)]
    pub stdin_interpreters: Vec<String>,
    /// Bytes the spool may hold; past it new events are dropped with an
    /// alarm in the log until the uploader drains it, and (under
    /// `audit.on_failure = refuse`) new sessions are refused.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// Seconds to wait for a target's TCP connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds from starting the target connection until it must be up
    /// (TCP, key exchange and authentication).
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// An exec on pipes keeps this many bytes of its output at each end of
    /// its recording (the rest is counted and hashed, and a notice says
    /// how much was left out); 0: the whole output, up to
    /// `recording_cap_bytes`.
    #[serde(default = "default_exec_recording_keep")]
    pub exec_recording_keep_bytes: u64,
    /// The target leg's ciphers (jms's own ssh client): `auto` puts
    /// AES-GCM first when the CPU has AES instructions (OpenSSH's default
    /// order otherwise), `default` keeps OpenSSH's order, anything else is
    /// an OpenSSH cipher list given to ssh as `Ciphers` (`ssh_config(5)`).
    #[serde(default = "default_target_ciphers")]
    pub target_ciphers: String,
    /// Seconds the engineer has to type credentials when asked.
    #[serde(default = "default_credentials_timeout")]
    pub credentials_timeout_secs: u64,
    /// The system user every session worker runs as (when jms-agentd runs
    /// as root; otherwise workers keep its uid). It must exist.
    #[serde(default = "default_worker_user")]
    pub worker_user: String,
    /// A worker's address space limit in bytes (RLIMIT_AS; its ssh child
    /// inherits it); 0: none.
    #[serde(default = "default_worker_memory")]
    pub worker_memory_max_bytes: u64,
    /// A worker's open files (RLIMIT_NOFILE); 0: unchanged.
    #[serde(default = "default_worker_files")]
    pub worker_open_files_max: u64,
    /// A worker's CPU seconds (RLIMIT_CPU); 0: none.
    #[serde(default)]
    pub worker_cpu_max_secs: u64,
    /// A user's sessions beyond this many at once run in the SCHED_IDLE
    /// class (worker and target ssh): they take only CPU nothing else
    /// wants, so one user's flood of sessions never starves logins or the
    /// monitor, while everyone's first sessions keep the normal class. 0:
    /// every session idle.
    #[serde(default = "default_worker_idle_after")]
    pub worker_idle_after_sessions: u32,
    /// Account jobs (`jms-job` workers) run at once; the server's further
    /// orders wait for a slot (in order). Bounds the bastion's CPU and the
    /// connections a big plan opens to targets (sshd's `MaxStartups`).
    /// 0 is read as 1.
    #[serde(default = "default_max_parallel_jobs")]
    pub max_parallel_jobs: usize,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ssh: default_ssh(),
            recordings_dir: None,
            spool_dir: None,
            runtime_dir: default_runtime_dir(),
            recording_cap_bytes: default_recording_cap(),
            recordings_total_max_bytes: default_recordings_total_max(),
            record_input: false,
            idle_timeout_secs: default_idle_timeout(),
            max_session_secs: default_max_session(),
            command_filter_default: default_filter_action(),
            exec_stdin: ExecStdin::default(),
            stdin_interpreters: Vec::new(),
            spool_max_bytes: default_spool_max(),
            connect_timeout_secs: default_connect_timeout(),
            login_timeout_secs: default_login_timeout(),
            target_ciphers: default_target_ciphers(),
            exec_recording_keep_bytes: default_exec_recording_keep(),
            credentials_timeout_secs: default_credentials_timeout(),
            worker_user: default_worker_user(),
            worker_memory_max_bytes: default_worker_memory(),
            worker_open_files_max: default_worker_files(),
            worker_cpu_max_secs: 0,
            worker_idle_after_sessions: default_worker_idle_after(),
            max_parallel_jobs: default_max_parallel_jobs(),
        }
    }
}

fn default_exec_recording_keep() -> u64 {
    EXEC_KEEP as u64
}
fn default_target_ciphers() -> String {
    CIPHERS_AUTO.into()
}
fn default_worker_user() -> String {
    "jms-session".into()
}
fn default_worker_memory() -> u64 {
    1024 * 1024 * 1024
}
fn default_worker_files() -> u64 {
    256
}
fn default_worker_idle_after() -> u32 {
    4
}
fn default_max_parallel_jobs() -> usize {
    8
}

fn default_ssh() -> PathBuf {
    PathBuf::from("/usr/bin/ssh")
}
fn default_runtime_dir() -> PathBuf {
    PathBuf::from("/run/jms/sessions")
}
fn default_recording_cap() -> u64 {
    64 * 1024 * 1024
}
fn default_recordings_total_max() -> u64 {
    8 * 1024 * 1024 * 1024
}
fn default_idle_timeout() -> u64 {
    30 * 60
}
fn default_max_session() -> u64 {
    24 * 3600
}
fn default_filter_action() -> FilterAction {
    FilterAction::Allow
}
fn default_spool_max() -> u64 {
    512 * 1024 * 1024
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_login_timeout() -> u64 {
    60
}
fn default_credentials_timeout() -> u64 {
    300
}

/// Failed-login lockout: `max_failures` within `window_secs` locks the
/// account for `lock_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockoutConfig {
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    #[serde(default = "default_lock_secs")]
    pub lock_secs: u64,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        LockoutConfig {
            max_failures: default_max_failures(),
            window_secs: default_window_secs(),
            lock_secs: default_lock_secs(),
        }
    }
}

impl LockoutConfig {
    pub fn policy(&self) -> LockoutPolicy {
        LockoutPolicy {
            max_failures: self.max_failures,
            window: std::time::Duration::from_secs(self.window_secs),
            lock_for: std::time::Duration::from_secs(self.lock_secs),
        }
    }
}

fn default_socket() -> PathBuf {
    PathBuf::from(jms_proto::DEFAULT_SOCKET_PATH)
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/jms")
}
fn default_nss_cache() -> PathBuf {
    PathBuf::from(DEFAULT_NSS_CACHE_PATH)
}
fn default_keys_user() -> String {
    "nobody".into()
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_shell() -> String {
    NssSettings::default().shell
}
fn default_home() -> String {
    NssSettings::default().home
}
fn default_max_clients() -> usize {
    // Sessions hold a connection each for their whole life.
    1024
}
fn default_max_clients_per_uid() -> usize {
    // An Ansible run with 100 forks through one engineer's account fits;
    // eight such engineers fill max_clients.
    128
}
fn default_max_login_clients() -> usize {
    // sshd's pending logins (the package's MaxStartups full = 1024) each
    // hold a pam_jms connection for one short request at a time.
    512
}
fn default_max_failures() -> u32 {
    LockoutPolicy::default().max_failures
}
fn default_window_secs() -> u64 {
    LockoutPolicy::default().window.as_secs()
}
fn default_lock_secs() -> u64 {
    LockoutPolicy::default().lock_for.as_secs()
}

impl AgentdConfig {
    /// Reads the file, refusing one that others could have written.
    pub fn load(path: &Path) -> Result<AgentdConfig> {
        refuse_unsafe_file(path)?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let config: AgentdConfig =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        config.timezone()?;
        cipher_option(&config.sessions.target_ciphers, false)
            .map_err(|e| anyhow::anyhow!("{}: [sessions] {e}", path.display()))?;
        Ok(config)
    }

    pub fn timezone(&self) -> Result<chrono_tz::Tz> {
        self.timezone.parse().map_err(|_| {
            anyhow::anyhow!("timezone `{}` is not an IANA time zone name", self.timezone)
        })
    }

    /// Where recordings go.
    pub fn recordings_dir(&self) -> PathBuf {
        self.sessions
            .recordings_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("recordings"))
    }

    /// Where the event spool lives.
    pub fn spool_dir(&self) -> PathBuf {
        self.sessions
            .spool_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("spool"))
    }

    /// Pinned and first-seen target host keys, one file per asset.
    pub fn known_hosts_dir(&self) -> PathBuf {
        self.state_dir.join("known_hosts")
    }

    pub fn nss_settings(&self) -> NssSettings {
        NssSettings {
            home: self.home.clone(),
            shell: self.shell.clone(),
            ..NssSettings::default()
        }
    }
}

/// Who must use a second factor: the sync contract's setting, which the
/// configuration file's `mfa_required` reads too.
pub use jms_sync::settings::MfaRequired;

/// The settings in force: the configuration file's, with the central
/// server's laid over them.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    pub lockout: LockoutPolicy,
    /// No keystroke for this long ends a session.
    pub idle_timeout: Option<Duration>,
    /// A session ends once it is this old.
    pub max_session: Option<Duration>,
    pub record_input: bool,
    pub recording_cap_bytes: u64,
    pub command_filter_default: FilterAction,
    /// What happens to the input of an exec'd interpreter.
    pub exec_stdin: ExecStdin,
    /// More interpreter names for `exec_stdin`.
    pub stdin_interpreters: Vec<String>,
    pub mfa_required: MfaRequired,
    pub mfa_groups: Vec<String>,
    /// What a full audit store does to sessions.
    pub audit_on_failure: AuditOnFailure,
}

fn positive(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

impl Effective {
    /// The configuration file's values.
    pub fn local(config: &AgentdConfig) -> Effective {
        let s = &config.sessions;
        Effective {
            lockout: config.lockout.policy(),
            idle_timeout: positive(s.idle_timeout_secs),
            max_session: positive(s.max_session_secs),
            record_input: s.record_input,
            recording_cap_bytes: s.recording_cap_bytes,
            command_filter_default: s.command_filter_default,
            exec_stdin: s.exec_stdin,
            stdin_interpreters: s.stdin_interpreters.clone(),
            mfa_required: config.mfa_required,
            mfa_groups: config.mfa_groups.clone(),
            audit_on_failure: config.audit.on_failure,
        }
    }

    /// `self` with the central server's settings document laid over it
    /// (`security.lockout_threshold`, `lockout_duration`, `mfa_required`,
    /// `mfa_groups`, `session_idle_timeout`, `max_session_length`;
    /// `audit.record_input`, `recording_max_bytes`,
    /// `command_filter_default`, `exec_stdin`, `stdin_interpreters`,
    /// `on_failure`). A field that is absent keeps the local
    /// value; one that does not read is logged and keeps it too.
    pub fn with_server(mut self, settings: &serde_json::Value) -> Effective {
        let security = &settings["security"];
        let audit = &settings["audit"];
        let bad = |key: &str, value: &serde_json::Value| {
            tracing::warn!(
                setting = key,
                %value,
                "the server's setting does not read: the local value stays"
            )
        };
        let span = |key: &str, value: &serde_json::Value| -> Option<Duration> {
            if value.is_null() {
                return None;
            }
            let parsed = serde_json::from_value::<jms_sync::settings::Span>(value.clone())
                .ok()
                .map(|span| span.0);
            if parsed.is_none() {
                bad(key, value);
            }
            parsed
        };
        let value = &security["lockout_threshold"];
        if !value.is_null() {
            match value.as_u64().and_then(|n| u32::try_from(n).ok()) {
                Some(n) => self.lockout.max_failures = n,
                None => bad("security.lockout_threshold", value),
            }
        }
        if let Some(d) = span("security.lockout_duration", &security["lockout_duration"]) {
            self.lockout.lock_for = d;
        }
        if let Some(d) = span(
            "security.session_idle_timeout",
            &security["session_idle_timeout"],
        ) {
            self.idle_timeout = (!d.is_zero()).then_some(d);
        }
        if let Some(d) = span(
            "security.max_session_length",
            &security["max_session_length"],
        ) {
            self.max_session = (!d.is_zero()).then_some(d);
        }
        let value = &security["mfa_required"];
        if !value.is_null() {
            match serde_json::from_value::<MfaRequired>(value.clone()) {
                Ok(m) => self.mfa_required = m,
                Err(_) => bad("security.mfa_required", value),
            }
        }
        let value = &security["mfa_groups"];
        if !value.is_null() {
            match serde_json::from_value::<Vec<String>>(value.clone()) {
                Ok(groups) => self.mfa_groups = groups,
                Err(_) => bad("security.mfa_groups", value),
            }
        }
        let value = &audit["record_input"];
        if !value.is_null() {
            match value.as_bool() {
                Some(b) => self.record_input = b,
                None => bad("audit.record_input", value),
            }
        }
        let value = &audit["recording_max_bytes"];
        if !value.is_null() {
            match value.as_u64().filter(|n| *n > 0) {
                Some(n) => self.recording_cap_bytes = n,
                None => bad("audit.recording_max_bytes", value),
            }
        }
        let value = &audit["command_filter_default"];
        if !value.is_null() {
            match serde_json::from_value::<FilterAction>(value.clone()) {
                Ok(action) => self.command_filter_default = action,
                Err(_) => bad("audit.command_filter_default", value),
            }
        }
        let value = &audit["exec_stdin"];
        if !value.is_null() {
            match serde_json::from_value::<ExecStdin>(value.clone()) {
                Ok(mode) => self.exec_stdin = mode,
                Err(_) => bad("audit.exec_stdin", value),
            }
        }
        let value = &audit["stdin_interpreters"];
        if !value.is_null() {
            match serde_json::from_value::<Vec<String>>(value.clone()) {
                Ok(names) => self.stdin_interpreters = names,
                Err(_) => bad("audit.stdin_interpreters", value),
            }
        }
        let value = &audit["on_failure"];
        if !value.is_null() {
            match serde_json::from_value::<AuditOnFailure>(value.clone()) {
                Ok(mode) => self.audit_on_failure = mode,
                Err(_) => bad("audit.on_failure", value),
            }
        }
        self
    }

    /// The local values, with `server` settings over them when there are.
    pub fn resolve(config: &AgentdConfig, server: Option<&serde_json::Value>) -> Effective {
        let local = Effective::local(config);
        match server {
            Some(settings) => local.with_server(settings),
            None => local,
        }
    }

    /// Why `user` may not log in for want of a second factor, if so.
    pub fn missing_second_factor(&self, user: &User) -> Option<String> {
        self.mfa_required
            .missing_second_factor(&self.mfa_groups, user)
    }
}

/// Refuses a file (or directory) that is writable by group or others, or
/// owned by someone other than root or the daemon's own user.
pub fn refuse_unsafe_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        bail!(
            "{} is owned by uid {}: it must belong to root",
            path.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "{} is writable by group or others (mode {:o}): fix with chmod go-w",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}

/// `[sessions] exec_recording_keep_bytes` by default: how much of the
/// start and of the end of an exec's output its recording keeps.
pub const EXEC_KEEP: usize = 64 * 1024;

/// `target_ciphers = "auto"`: AES-GCM first when the CPU has AES.
pub const CIPHERS_AUTO: &str = "auto";
/// `target_ciphers = "default"`: OpenSSH's own order.
pub const CIPHERS_DEFAULT: &str = "default";
/// What `auto` puts at the head of OpenSSH's default list.
pub const AES_GCM_FIRST: &str = "^aes128-gcm@openssh.com,aes256-gcm@openssh.com";

/// The ssh `Ciphers` option for the setting `target_ciphers`: `auto`
/// (AES-GCM first when `cpu_has_aes`, else none), `default` (none), or an
/// OpenSSH cipher list as `ssh_config(5)` takes it (`+`, `-`, `^` prefixes
/// allowed), refused when it is anything else.
pub fn cipher_option(setting: &str, cpu_has_aes: bool) -> Result<Option<String>, String> {
    match setting {
        CIPHERS_AUTO => Ok(cpu_has_aes.then(|| format!("Ciphers={AES_GCM_FIRST}"))),
        CIPHERS_DEFAULT => Ok(None),
        list => {
            let body = list.strip_prefix(['+', '-', '^']).unwrap_or(list);
            let names_ok = !body.is_empty()
                && list.len() <= 512
                && body.split(',').all(|name| {
                    !name.is_empty()
                        && name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "@.-_".contains(c))
                });
            if names_ok {
                Ok(Some(format!("Ciphers={list}")))
            } else {
                Err(format!(
                    "target_ciphers `{list}`: expected `auto`, `default` or an OpenSSH cipher list (aes128-gcm@openssh.com,chacha20-poly1305@openssh.com…)"
                ))
            }
        }
    }
}

/// Whether this CPU has AES instructions (`aes` among the flags in
/// /proc/cpuinfo: x86's AES-NI, arm64's `aes` feature); read once.
pub fn cpu_has_aes() -> bool {
    static AES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AES.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .map(|text| cpuinfo_has_aes(&text))
            .unwrap_or(false)
    })
}

fn cpuinfo_has_aes(cpuinfo: &str) -> bool {
    cpuinfo.lines().any(|line| {
        let Some((key, value)) = line.split_once(':') else {
            return false;
        };
        matches!(key.trim(), "flags" | "Features") && value.split_whitespace().any(|f| f == "aes")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> AgentdConfig {
        toml::from_str(text).expect("a valid config")
    }

    #[test]
    fn the_central_server_is_one_url_or_a_list() {
        let one = config("[central]\nserver = \"https://a:8420\"\n");
        assert_eq!(one.central.unwrap().server, ["https://a:8420"]);
        let two = config("[central]\nserver = [\"https://a:8420\", \"https://b:8420\"]\n");
        let two = two.central.unwrap();
        assert_eq!(two.server, ["https://a:8420", "https://b:8420"]);
        assert_eq!(two.servers(), "https://a:8420, https://b:8420");
        for bad in [
            "server = []",
            "server = [\"\"]",
            "server = \"\"",
            "server = 3",
        ] {
            let text = format!("[central]\n{bad}\n");
            assert!(
                toml::from_str::<AgentdConfig>(&text).is_err(),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn the_servers_settings_override_the_local_defaults() {
        let local = Effective::local(&config(
            "[lockout]\nmax_failures = 7\nwindow_secs = 60\nlock_secs = 100\n\n[sessions]\nrecord_input = false\nidle_timeout_secs = 0\n",
        ));
        assert_eq!(local.lockout.max_failures, 7);
        assert_eq!(local.idle_timeout, None, "0 means never");
        let settings = serde_json::json!({
            "security": {
                "lockout_threshold": 2,
                "lockout_duration": "1h 30m",
                "mfa_required": "groups",
                "mfa_groups": ["ops"],
                "session_idle_timeout": "5m",
                "max_session_length": "8h",
                "password_min_length": 12
            },
            "audit": {
                "record_input": true,
                "recording_max_bytes": 1048576,
                "command_filter_default": "deny",
                "exec_stdin": "refuse",
                "stdin_interpreters": ["gdb"],
                "on_failure": "continue"
            },
            "mail": {"enabled": false}
        });
        let effective = local.clone().with_server(&settings);
        assert_eq!(effective.lockout.max_failures, 2);
        assert_eq!(effective.lockout.lock_for, Duration::from_secs(5400));
        assert_eq!(
            effective.lockout.window,
            Duration::from_secs(60),
            "the server has no window: the local one stays"
        );
        assert_eq!(effective.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(effective.max_session, Some(Duration::from_secs(8 * 3600)));
        assert!(effective.record_input);
        assert_eq!(effective.recording_cap_bytes, 1_048_576);
        assert_eq!(effective.command_filter_default, FilterAction::Deny);
        assert_eq!(local.exec_stdin, ExecStdin::Check, "check by default");
        assert_eq!(effective.exec_stdin, ExecStdin::Refuse);
        assert_eq!(effective.stdin_interpreters, ["gdb"]);
        assert_eq!(effective.audit_on_failure, AuditOnFailure::Continue);
        assert_eq!(
            local.audit_on_failure,
            AuditOnFailure::Refuse,
            "refuse is the default"
        );
        assert_eq!(effective.mfa_required, MfaRequired::Groups);
        assert_eq!(effective.mfa_groups, ["ops"]);
    }

    /// Every setting of the server's document, written out field by field
    /// (no `..`): one added to `jms_sync::settings` fails to compile here
    /// until it is either read by `with_server` (and checked below) or
    /// named as the server's own.
    #[test]
    fn every_server_setting_is_read_or_named_server_only() {
        use jms_sync::settings::{Audit, Security, Settings, Span};
        let local = Effective::local(&config(""));
        let settings = Settings {
            security: Security {
                // The server's own: passwords are set on the server.
                password_min_length: 12,
                password_require_uppercase: false,
                password_require_lowercase: false,
                password_require_digit: false,
                password_require_symbol: true,
                // Read by the bastion.
                lockout_threshold: 9,
                lockout_duration: Span(Duration::from_secs(77)),
                mfa_required: MfaRequired::All,
                mfa_groups: vec!["ops".into()],
                session_idle_timeout: Span(Duration::from_secs(78)),
                max_session_length: Span(Duration::from_secs(79)),
            },
            audit: Audit {
                record_input: !local.record_input,
                recording_max_bytes: 4321,
                command_filter_default: FilterAction::Deny,
                exec_stdin: ExecStdin::Pass,
                stdin_interpreters: vec!["gdb".into()],
                on_failure: AuditOnFailure::Continue,
            },
            // The server's own: mail goes out from the server.
            mail: Default::default(),
            // The server's own: it makes managed accounts' secrets.
            accounts: Default::default(),
        };
        let effective = local
            .clone()
            .with_server(&serde_json::to_value(&settings).unwrap());
        assert_eq!(
            effective,
            Effective {
                lockout: LockoutPolicy {
                    max_failures: 9,
                    lock_for: Duration::from_secs(77),
                    ..local.lockout
                },
                idle_timeout: Some(Duration::from_secs(78)),
                max_session: Some(Duration::from_secs(79)),
                record_input: !local.record_input,
                recording_cap_bytes: 4321,
                command_filter_default: FilterAction::Deny,
                exec_stdin: ExecStdin::Pass,
                stdin_interpreters: vec!["gdb".into()],
                mfa_required: MfaRequired::All,
                mfa_groups: vec!["ops".into()],
                audit_on_failure: AuditOnFailure::Continue,
            }
        );
    }

    #[test]
    fn absent_or_unreadable_server_settings_keep_the_local_values() {
        let local = Effective::local(&config(""));
        assert_eq!(local.clone().with_server(&serde_json::json!({})), local);
        assert_eq!(local.clone().with_server(&serde_json::Value::Null), local);
        let odd = serde_json::json!({
            "security": {"lockout_threshold": "many", "session_idle_timeout": "soon", "mfa_required": "sometimes"},
            "audit": {"recording_max_bytes": 0, "command_filter_default": "maybe", "exec_stdin": "sometimes", "on_failure": "shrug"}
        });
        assert_eq!(local.clone().with_server(&odd), local);
    }

    #[test]
    fn mfa_required_refuses_only_users_without_totp_in_scope() {
        let user = |groups: &[&str], totp: bool| -> User {
            serde_json::from_value(serde_json::json!({
                "username": "u",
                "groups": groups,
                "totp_secret": if totp { Some("JBSWY3DPEHPK3PXP") } else { None },
            }))
            .unwrap()
        };
        let mut effective = Effective::local(&config(""));
        assert!(effective.missing_second_factor(&user(&[], false)).is_none());
        effective.mfa_required = MfaRequired::All;
        assert!(effective.missing_second_factor(&user(&[], false)).is_some());
        assert!(effective.missing_second_factor(&user(&[], true)).is_none());
        effective.mfa_required = MfaRequired::Groups;
        effective.mfa_groups = vec!["ops".into()];
        assert!(effective
            .missing_second_factor(&user(&["dev"], false))
            .is_none());
        assert!(effective
            .missing_second_factor(&user(&["ops"], false))
            .is_some());
    }

    #[test]
    fn target_ciphers_auto_puts_aes_gcm_first_only_with_aes_and_lists_are_checked() {
        let aes = Some(format!("Ciphers={AES_GCM_FIRST}"));
        assert_eq!(cipher_option("auto", true), Ok(aes));
        assert_eq!(cipher_option("auto", false), Ok(None));
        assert_eq!(cipher_option("default", true), Ok(None));
        assert_eq!(
            cipher_option("chacha20-poly1305@openssh.com,aes256-ctr", true),
            Ok(Some(
                "Ciphers=chacha20-poly1305@openssh.com,aes256-ctr".into()
            ))
        );
        assert_eq!(
            cipher_option("-aes128-cbc", false),
            Ok(Some("Ciphers=-aes128-cbc".into()))
        );
        for bad in [
            "",
            "^",
            "aes128-ctr,",
            "aes128-ctr Ciphers=x",
            "a;b",
            "x\ny",
            "-o ProxyCommand=x",
        ] {
            assert!(
                cipher_option(bad, true).is_err(),
                "{bad:?} should be refused"
            );
        }
        assert!(cpuinfo_has_aes(
            "processor\t: 0\nflags\t\t: fpu sse2 aes avx2\n"
        ));
        assert!(cpuinfo_has_aes("Features\t: fp asimd aes pmull sha1\n"));
        assert!(!cpuinfo_has_aes("flags\t\t: fpu sse2 avx2 vaes_x\n"));
        assert!(!cpuinfo_has_aes(""));
    }
}
