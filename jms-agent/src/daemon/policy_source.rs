//! Where the policy comes from: the one seam between the daemon and its
//! policy. A local file ([`LocalFile`]) or the central server ([`Central`]).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use jms_core::bundle::{self, Bundle, TransportKey, UnixIds};
use jms_core::Policy;
use tracing::{error, info, warn};

use crate::daemon::config::CentralConfig;
use crate::daemon::enroll::{self, Identity};

/// A source of checked policies.
pub trait PolicySource: Send + Sync {
    /// Loads the current policy; an error keeps the last good one in use.
    fn load(&self) -> Result<Policy>;
    /// Uids/gids assigned elsewhere (the central server) for the names of
    /// the policy last loaded; `None`: the bastion assigns them.
    fn ids(&self) -> Option<UnixIds> {
        None
    }
    /// For logs.
    fn describe(&self) -> String;
}

/// A policy file on the bastion, re-read on SIGHUP.
pub struct LocalFile {
    pub path: PathBuf,
}

impl PolicySource for LocalFile {
    fn load(&self) -> Result<Policy> {
        use std::os::unix::fs::MetadataExt;
        crate::daemon::config::refuse_unsafe_file(&self.path)?;
        let mode = std::fs::metadata(&self.path)?.mode();
        if mode & 0o007 != 0 {
            anyhow::bail!(
                "{} is readable by others (mode {:o}) but holds secrets: chmod o-rwx",
                self.path.display(),
                mode & 0o7777
            );
        }
        Policy::load(&self.path).context("loading the policy")
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

// ---- the central server -----------------------------------------------------

/// The policy from the central server: signed bundles, pulled by a poll
/// thread (see [`Central::poll`]) and kept on disk to start offline.
///
/// - Startup ([`PolicySource::load`]): the last good bundle on disk,
///   verified again against the pinned server key. A bundle altered on
///   disk is refused (alarm) and a fresh one fetched; with none usable and
///   the server unreachable, the daemon starts failed closed.
/// - Poll: `GET /api/v1/sync/bundle?since=V` signed by the bastion; 304
///   keeps the policy; a new bundle must verify (pinned key, signature,
///   version > V) and pass jms-core's checks before it is written to disk
///   and applied. Anything refused leaves the last good policy in place.
/// - Fail closed: when the server has not been reached for
///   `max_staleness_secs`, the applied policy becomes the empty one: the
///   NSS cache lists no jms user, so sshd/PAM see jms users as unknown and
///   refuse them; local accounts never go through jms and are unaffected.
///   The first successful poll restores the last good (or a newer) policy.
pub struct Central {
    state_dir: PathBuf,
    config: CentralConfig,
    identity: Identity,
    http: reqwest::blocking::Client,
    state: Mutex<CentralState>,
}

#[derive(Default)]
struct CentralState {
    /// Version of the last good bundle (0: none).
    version: u64,
    /// Uid/gid assignments of the last good bundle.
    ids: Option<UnixIds>,
    /// Failed closed for staleness.
    closed: bool,
}

/// What a poll asks the daemon to do.
pub enum Update {
    /// Nothing changed.
    Keep,
    /// Publish and swap in this policy (why: for the log).
    Apply(Box<Policy>, &'static str),
}

impl Central {
    pub fn new(state_dir: &Path, config: CentralConfig) -> Result<Central> {
        let identity = Identity::load(state_dir)?;
        let http = enroll::http_client(Duration::from_secs(config.timeout_secs.max(1)))?;
        Ok(Central {
            state_dir: state_dir.to_path_buf(),
            config,
            identity,
            http,
            state: Mutex::new(CentralState::default()),
        })
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.config.poll_interval_secs.max(1))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CentralState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Verifies a signed bundle newer than `have` and checks its policy.
    fn accept(&self, bytes: &[u8], have: u64) -> Result<(Bundle, Policy)> {
        let bundle = bundle::verify(bytes, &self.identity.server_key, have)?;
        let policy = Policy::from_document(
            bundle.policy.clone(),
            &format!("bundle v{}", bundle.version),
            Path::new("/nonexistent"),
        )
        .context("the bundle's policy does not check")?;
        Ok((bundle, policy))
    }

    /// The last good bundle on disk, verified again.
    fn last_good_on_disk(&self) -> Result<Option<(Bundle, Policy)>> {
        let path = self.state_dir.join(enroll::BUNDLE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        enroll::refuse_readable(&path)?;
        let accepted = self
            .accept(&bytes, 0)
            .with_context(|| format!("{} refused", path.display()))?;
        Ok(Some(accepted))
    }

    /// Seconds since the server was last reached (None: never).
    fn since_last_sync(&self) -> Option<i64> {
        let text = std::fs::read_to_string(self.state_dir.join(enroll::LAST_SYNC_FILE)).ok()?;
        let at: i64 = text.trim().parse().ok()?;
        Some(chrono::Utc::now().timestamp() - at)
    }

    fn mark_synced(&self) {
        let now = chrono::Utc::now().timestamp().to_string();
        if let Err(e) =
            enroll::write_private(&self.state_dir.join(enroll::LAST_SYNC_FILE), now.as_bytes())
        {
            warn!("cannot record the sync time: {e:#}");
        }
    }

    fn stale(&self) -> bool {
        self.since_last_sync()
            .is_none_or(|secs| secs > self.config.max_staleness_secs as i64)
    }

    /// Asks the server for a bundle newer than `since`: `None` on 304.
    fn fetch(&self, since: u64) -> Result<Option<Vec<u8>>> {
        let transport = TransportKey::generate();
        let query = format!("since={since}&transport={}", transport.public_hex());
        let response = self
            .identity
            .signed(
                &self.http,
                &self.config.server,
                reqwest::Method::GET,
                "/api/v1/sync/bundle",
                &query,
                Vec::new(),
            )
            .send()
            .with_context(|| format!("cannot reach {}", self.config.server))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(None);
        }
        let body = response.bytes().context("reading the bundle")?;
        if !status.is_success() {
            let reason: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            anyhow::bail!(
                "the server refused the bundle request ({status}): {}",
                reason["error"].as_str().unwrap_or("no reason given")
            );
        }
        Ok(Some(transport.open(&body)?))
    }

    /// Keeps a newly accepted bundle: on disk first, then in memory.
    fn keep(&self, bytes: &[u8], bundle: &Bundle) -> Result<()> {
        enroll::write_private(&self.state_dir.join(enroll::BUNDLE_FILE), bytes)?;
        let mut state = self.state();
        state.version = bundle.version;
        state.ids = Some(bundle.ids.clone());
        state.closed = false;
        Ok(())
    }

    /// One poll; never fails (what went wrong is logged).
    pub fn poll(&self) -> Update {
        let have = self.state().version;
        match self.fetch(have) {
            Ok(None) => {
                self.mark_synced();
                if self.state().closed {
                    match self.last_good_on_disk() {
                        Ok(Some((bundle, policy))) => {
                            let mut state = self.state();
                            state.closed = false;
                            state.ids = Some(bundle.ids);
                            return Update::Apply(Box::new(policy), "server reachable again");
                        }
                        Ok(None) => self.state().closed = false,
                        Err(e) => error!("{e:#}"),
                    }
                }
                return Update::Keep;
            }
            Ok(Some(bytes)) => match self.accept(&bytes, have) {
                Ok((bundle, policy)) => match self.keep(&bytes, &bundle) {
                    Ok(()) => {
                        self.mark_synced();
                        info!(version = bundle.version, "new policy bundle accepted");
                        return Update::Apply(Box::new(policy), "new bundle");
                    }
                    Err(e) => error!("cannot keep the new bundle, not applied: {e:#}"),
                },
                Err(e) => error!(
                    alarm = "bundle_refused",
                    "bundle refused, keeping the last good policy: {e:#}"
                ),
            },
            Err(e) => warn!("policy poll failed: {e:#}"),
        }
        self.fail_closed_if_stale()
    }

    /// Posts a batch of spooled events (`{"events": [...]}`, signed like
    /// every bastion request); returns the idempotency keys the server
    /// answered as stored.
    pub fn post_events(
        &self,
        events: &[serde_json::Value],
    ) -> std::result::Result<Vec<String>, crate::daemon::upload::SendError> {
        use crate::daemon::upload::SendError;
        let body = serde_json::to_vec(&serde_json::json!({ "events": events }))
            .map_err(|e| SendError::Refused(e.into()))?;
        let response = self
            .identity
            .signed(
                &self.http,
                &self.config.server,
                reqwest::Method::POST,
                "/api/v1/sync/events",
                "",
                body,
            )
            .send()
            .with_context(|| format!("cannot reach {}", self.config.server))
            .map_err(SendError::Unreachable)?;
        let status = response.status();
        let body = response
            .bytes()
            .context("reading the events answer")
            .map_err(SendError::Unreachable)?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !status.is_success() {
            return Err(SendError::Refused(anyhow::anyhow!(
                "the server refused the events ({status}): {}",
                answer["error"].as_str().unwrap_or("no reason given")
            )));
        }
        let accepted = answer["accepted"]
            .as_array()
            .ok_or_else(|| {
                SendError::Refused(anyhow::anyhow!("the events answer has no `accepted`"))
            })?
            .iter()
            .filter_map(|k| k.as_str().map(str::to_string))
            .collect();
        Ok(accepted)
    }

    fn fail_closed_if_stale(&self) -> Update {
        if !self.stale() || self.state().closed {
            return Update::Keep;
        }
        self.state().closed = true;
        error!(
            alarm = "policy_stale",
            max_staleness_secs = self.config.max_staleness_secs,
            "the central server has not been reached for too long: jms users are refused until it is"
        );
        Update::Apply(Box::new(empty_policy()), "failed closed: policy too stale")
    }
}

/// The policy with no users: what a bastion serves when it fails closed.
pub fn empty_policy() -> Policy {
    Policy::from_document(
        Default::default(),
        "empty policy",
        Path::new("/nonexistent"),
    )
    .expect("the empty policy checks")
}

impl PolicySource for Central {
    fn load(&self) -> Result<Policy> {
        let on_disk = self.last_good_on_disk().unwrap_or_else(|e| {
            error!(
                alarm = "bundle_refused",
                "the bundle on disk is refused, asking the server for a fresh one: {e:#}"
            );
            None
        });
        let have = on_disk.as_ref().map_or(0, |(b, _)| b.version);
        if let Some((bundle, policy)) = on_disk {
            let mut state = self.state();
            state.version = bundle.version;
            state.ids = Some(bundle.ids);
            drop(state);
            if !self.stale() {
                return Ok(policy);
            }
        }
        // Nothing usable on disk: ask the server once.
        match self.fetch(have) {
            Ok(Some(bytes)) => {
                let (bundle, policy) = self.accept(&bytes, have)?;
                self.keep(&bytes, &bundle)?;
                self.mark_synced();
                Ok(policy)
            }
            Ok(None) => {
                self.mark_synced();
                match self.last_good_on_disk() {
                    Ok(Some((_, policy))) => Ok(policy),
                    _ => Ok(empty_policy()),
                }
            }
            Err(e) => {
                warn!("the central server cannot be reached: {e:#}");
                self.state().closed = true;
                error!(
                    alarm = "policy_stale",
                    "no policy fresh enough: jms users are refused until the server is reached"
                );
                Ok(empty_policy())
            }
        }
    }

    fn ids(&self) -> Option<UnixIds> {
        self.state().ids.clone()
    }

    fn describe(&self) -> String {
        format!(
            "central server {} (bastion {} `{}`, server key {})",
            self.config.server,
            self.identity.enrollment.bastion_id,
            self.identity.enrollment.bastion_name,
            self.identity.enrollment.server_id
        )
    }
}
