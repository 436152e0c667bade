//! `/etc/jms/agentd.toml`: every path the daemon uses, overridable for tests,
//! with defaults from named functions. Unknown keys are refused.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use jms_core::login::LockoutPolicy;
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
    /// How many connections are served at once (a session holds one for
    /// its whole life); more are refused with "daemon busy".
    #[serde(default = "default_max_clients")]
    pub max_clients: usize,
    /// Target sessions: the ssh client, recordings, spool.
    #[serde(default)]
    pub sessions: SessionsConfig,
}

/// `[central]`: where the policy comes from when a central server holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralConfig {
    /// The server's origin, `http://127.0.0.1:8420` or `https://jms.example`.
    pub server: String,
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
    /// recording stops while the session goes on.
    #[serde(default = "default_recording_cap")]
    pub recording_cap_bytes: u64,
    /// Record the engineer's keystrokes too (asciicast "i" events).
    #[serde(default)]
    pub record_input: bool,
    /// Bytes the spool may hold; past it new events are dropped with an
    /// alarm in the log until the uploader drains it.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    /// Seconds to wait for a target's TCP connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds from starting the target connection until it must be up
    /// (TCP, key exchange and authentication).
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Seconds the engineer has to type credentials when asked.
    #[serde(default = "default_credentials_timeout")]
    pub credentials_timeout_secs: u64,
}

impl Default for SessionsConfig {
    fn default() -> Self {
        SessionsConfig {
            ssh: default_ssh(),
            recordings_dir: None,
            spool_dir: None,
            runtime_dir: default_runtime_dir(),
            recording_cap_bytes: default_recording_cap(),
            record_input: false,
            spool_max_bytes: default_spool_max(),
            connect_timeout_secs: default_connect_timeout(),
            login_timeout_secs: default_login_timeout(),
            credentials_timeout_secs: default_credentials_timeout(),
        }
    }
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
