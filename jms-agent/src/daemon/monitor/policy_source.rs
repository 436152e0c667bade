//! Where the policy comes from: the one seam between the daemon and its
//! policy. A local file ([`LocalFile`]) or the central server ([`Central`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use jms_core::Policy;
use jms_sync::bundle::{self, Bundle, HeldBundle, TransportKey, UnixIds};
use jms_sync::queries::BundleQuery;
use tracing::{error, info, warn};

use crate::daemon::config::CentralConfig;
use crate::daemon::monitor::central::CentralClient;
use crate::daemon::monitor::enroll::{self, Call};

/// A source of checked policies.
pub trait PolicySource: Send + Sync {
    /// Loads the current policy; an error keeps the last good one in use.
    fn load(&self) -> Result<Policy>;
    /// Uids/gids assigned elsewhere (the central server) for the names of
    /// the policy last loaded; `None`: the bastion assigns them.
    fn ids(&self) -> Option<UnixIds> {
        None
    }
    /// The central server's settings document of the policy last loaded
    /// (overrides the local defaults); `None`: local configuration only.
    fn settings(&self) -> Option<serde_json::Value> {
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

/// The signed deltas applied on top of the last full bundle, in order
/// (each: 4-byte big-endian length, then the signed delta).
pub const DELTAS_FILE: &str = "deltas.jms";
/// Appends one signed delta to the deltas file at `path` and syncs it
/// (`first`, or no file: the file starts over with it, written whole and
/// atomically). What a crash left cut at the end is cut off first, so
/// every record kept is read back.
pub fn append_delta(path: &Path, signed: &[u8], first: bool) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let length = u32::try_from(signed.len()).context("a delta over 4 GiB")?;
    let mut record = Vec::with_capacity(4 + signed.len());
    record.extend_from_slice(&length.to_be_bytes());
    record.extend_from_slice(signed);
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(file) if !first => file,
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("opening {}", path.display()))
        }
        _ => return enroll::write_private(path, &record),
    };
    let mut kept = Vec::new();
    file.read_to_end(&mut kept)
        .with_context(|| format!("reading {}", path.display()))?;
    let whole: usize = split_records(&kept).iter().map(|r| 4 + r.len()).sum();
    (|| {
        file.set_len(whole as u64)?;
        file.seek(SeekFrom::Start(whole as u64))?;
        file.write_all(&record)?;
        file.sync_data()
    })()
    .with_context(|| format!("appending to {}", path.display()))
}

/// Deltas kept on disk before a full bundle is asked for instead.
const MAX_DELTAS_ON_DISK: usize = 64;

/// The policy from the central server: signed bundles and deltas, pulled
/// by a long-poll loop ([`Central::run`]) and kept on disk to start offline.
///
/// - Startup ([`PolicySource::load`]): the last good full bundle on disk
///   and the deltas after it, each verified again against the pinned
///   server key. A bundle altered on disk is refused (alarm) and a fresh
///   one fetched; an altered delta is refused and the chain stops there
///   (the next poll catches up); with nothing usable and the server
///   unreachable, the daemon starts failed closed.
/// - Poll: `GET /api/v1/sync/bundle?since=V&wait=S` signed by the bastion,
///   held by the server until the version moves or S seconds pass. Every
///   answer must be signed by the pinned server key for this request
///   (`Identity::call`), else it is no answer. A signed 304 about a
///   version not past V keeps the policy; a full bundle must verify
///   (pinned key, signature, version > V, the version the answer names),
///   a delta must verify and start exactly at V (else the next request
///   asks for a full bundle); either must pass jms-core's checks before it
///   is written to disk and applied. Anything refused leaves the last good
///   policy in place.
/// - Synced: only when the bastion holds the server's current version (a
///   signed 304, or a new bundle or delta applied). No answer, an answer
///   not signed for the request (a man in the middle, a replay), a
///   refusal or a bundle refused all leave the staleness clock running.
/// - Fail closed: when the server has not been reached for
///   `max_staleness_secs`, the applied policy becomes the empty one: the
///   NSS cache lists no jms user, so sshd/PAM see jms users as unknown and
///   refuse them; local accounts never go through jms and are unaffected.
///   The first successful poll restores the last good (or a newer) policy.
pub struct Central {
    state_dir: PathBuf,
    config: CentralConfig,
    client: Arc<CentralClient>,
    state: Mutex<CentralState>,
}

#[derive(Default)]
struct CentralState {
    /// The last good bundle (deltas applied) with its checked policy, or
    /// none.
    last: Option<HeldBundle>,
    /// Deltas on disk after the full bundle.
    deltas: usize,
    /// Ask for a full bundle next time (a delta did not fit).
    want_full: bool,
    /// Failed closed for staleness.
    closed: bool,
}

impl CentralState {
    fn version(&self) -> u64 {
        self.last.as_ref().map_or(0, |b| b.version)
    }
}

/// What a poll asks the daemon to do.
pub enum Update {
    /// Nothing changed.
    Keep,
    /// Publish and swap in this policy (why: for the log).
    Apply(Box<Policy>, &'static str),
}

/// How a poll went, for the loop's pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Polled {
    /// The server answered (304 or something new), signed.
    Answered,
    /// The server could not be reached, refused the request, or sent
    /// nothing this bastion could believe or apply.
    Failed,
}

impl Central {
    pub fn new(state_dir: &Path, config: CentralConfig, client: Arc<CentralClient>) -> Central {
        Central {
            state_dir: state_dir.to_path_buf(),
            config,
            client,
            state: Mutex::new(CentralState::default()),
        }
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.config.poll_interval_secs.max(1))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, CentralState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(bundle: Bundle) -> Result<HeldBundle> {
        Ok(HeldBundle::check(bundle)?)
    }

    /// Verifies a signed full bundle newer than `have` and checks its policy.
    fn accept(&self, bytes: &[u8], have: u64) -> Result<HeldBundle> {
        Self::check(bundle::verify(
            bytes,
            &self.client.identity().server_key,
            have,
        )?)
    }

    /// Verifies a signed delta from `base`'s version and applies it to
    /// `base` (sharing what it does not change, see jms-core's
    /// `HeldBundle::apply`).
    fn accept_delta(&self, bytes: &[u8], base: &HeldBundle) -> Result<HeldBundle> {
        let delta = bundle::verify_delta(bytes, &self.client.identity().server_key, base.version)?;
        Ok(base.apply(&delta)?)
    }

    /// The last good bundle on disk with the deltas after it, verified
    /// again. A delta that does not verify ends the chain (alarm).
    fn last_good_on_disk(&self) -> Result<Option<HeldBundle>> {
        let path = self.state_dir.join(enroll::BUNDLE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        enroll::refuse_readable(&path)?;
        let mut bundle = self
            .accept(&bytes, 0)
            .with_context(|| format!("{} refused", path.display()))?;
        let mut applied = 0;
        for signed in self.deltas_on_disk() {
            match bundle::verify_delta(&signed, &self.client.identity().server_key, bundle.version)
            {
                Ok(_) => match self.accept_delta(&signed, &bundle) {
                    Ok(next) => {
                        bundle = next;
                        applied += 1;
                    }
                    Err(e) => {
                        error!(
                            alarm = "bundle_refused",
                            "a delta on disk is refused: {e:#}"
                        );
                        break;
                    }
                },
                // Left over from before the last full bundle.
                Err(bundle::BundleError::NotNewer { .. }) => {}
                Err(e) => {
                    error!(
                        alarm = "bundle_refused",
                        "a delta on disk is refused: {e:#}"
                    );
                    break;
                }
            }
        }
        self.state().deltas = applied;
        Ok(Some(bundle))
    }

    /// The signed deltas in the deltas file (none when it is absent or
    /// unsafe; a cut record ends the list).
    fn deltas_on_disk(&self) -> Vec<Vec<u8>> {
        let path = self.state_dir.join(DELTAS_FILE);
        let Ok(bytes) = std::fs::read(&path) else {
            return Vec::new();
        };
        if let Err(e) = enroll::refuse_readable(&path) {
            error!(alarm = "bundle_refused", "{e:#}");
            return Vec::new();
        }
        split_records(&bytes)
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

    /// Asks the server for what is newer than `since`: `None` on a signed
    /// 304, else the signed bundle or delta (opened) and the version the
    /// signed answer names. With `wait`, the server may hold the request
    /// that long for a change. An answer the server did not sign for this
    /// request is an error, like no answer.
    fn fetch(&self, since: u64, wait: u64) -> Result<Option<(Vec<u8>, u64)>> {
        let transport = TransportKey::generate();
        let query = jms_sync::queries::encode(&BundleQuery {
            since,
            transport: transport.public_hex(),
            wait,
        });
        let call = Call {
            timeout: Some(Duration::from_secs(wait + self.config.timeout_secs.max(1))),
            ..Call::new(reqwest::Method::GET, jms_sync::paths::BUNDLE, &query)
        };
        let answer = self.client.call(call, Vec::new())?;
        if answer.status == reqwest::StatusCode::NOT_MODIFIED {
            return match answer.version {
                Some(version) if version <= since => Ok(None),
                other => anyhow::bail!(
                    "the server says version {other:?} is current, but this bastion asked with {since}"
                ),
            };
        }
        if !answer.status.is_success() {
            return Err(answer.refusal("the bundle request"));
        }
        let version = answer
            .version
            .context("a bundle answer that names no version")?;
        Ok(Some((transport.open(&answer.body)?, version)))
    }

    /// Keeps a newly accepted full bundle: on disk first (the deltas
    /// before it go), then in memory.
    fn keep(&self, bytes: &[u8], bundle: HeldBundle) -> Result<()> {
        enroll::write_private(&self.state_dir.join(enroll::BUNDLE_FILE), bytes)?;
        match std::fs::remove_file(self.state_dir.join(DELTAS_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => warn!("cannot remove the old deltas: {e}"),
        }
        let mut state = self.state();
        state.last = Some(bundle);
        state.deltas = 0;
        state.want_full = false;
        state.closed = false;
        Ok(())
    }

    /// Keeps a newly accepted delta: appended to the deltas on disk, then
    /// the bundle it made in memory.
    fn keep_delta(&self, bytes: &[u8], bundle: HeldBundle) -> Result<()> {
        let first = self.state().deltas == 0;
        append_delta(&self.state_dir.join(DELTAS_FILE), bytes, first)?;
        let mut state = self.state();
        state.last = Some(bundle);
        state.deltas += 1;
        state.want_full = state.deltas >= MAX_DELTAS_ON_DISK;
        state.closed = false;
        Ok(())
    }

    /// Polls until the process ends, handing every update to `apply`:
    /// long-polls back to back while the server answers, one
    /// `poll_interval` apart while it cannot be reached.
    pub fn run(&self, apply: &dyn Fn(Update)) -> ! {
        let wait = self.config.long_poll_secs.min(60);
        loop {
            let started = std::time::Instant::now();
            let (update, polled) = self.poll_once(wait);
            let changed = matches!(update, Update::Apply(..));
            apply(update);
            let quick = started.elapsed() < Duration::from_secs(1);
            if polled == Polled::Failed || wait == 0 || (quick && !changed) {
                // Unreachable, plain polling, or a server that does not hold
                // requests: pace ourselves.
                std::thread::sleep(self.poll_interval());
            }
        }
    }

    /// One poll without waiting; never fails (what went wrong is logged).
    pub fn poll(&self) -> Update {
        self.poll_once(0).0
    }

    fn poll_once(&self, wait: u64) -> (Update, Polled) {
        let (have, base, want_full) = {
            let state = self.state();
            (state.version(), state.last.clone(), state.want_full)
        };
        let since = if want_full { 0 } else { have };
        let refused = |e: anyhow::Error| {
            error!(
                alarm = "bundle_refused",
                "bundle refused, keeping the last good policy: {e:#}"
            )
        };
        match self.fetch(since, wait) {
            Ok(None) => {
                self.mark_synced();
                if self.state().closed {
                    match self.last_good_on_disk() {
                        Ok(Some(bundle)) => {
                            let policy = bundle.policy.clone();
                            let mut state = self.state();
                            state.closed = false;
                            state.last = Some(bundle);
                            return (
                                Update::Apply(Box::new(policy), "server reachable again"),
                                Polled::Answered,
                            );
                        }
                        Ok(None) => self.state().closed = false,
                        Err(e) => error!("{e:#}"),
                    }
                }
                return (Update::Keep, Polled::Answered);
            }
            Ok(Some((bytes, named))) if bundle::format_of(&bytes) == Some(bundle::DELTA_FORMAT) => {
                let accepted = match &base {
                    Some(base) => self
                        .accept_delta(&bytes, base)
                        .and_then(|bundle| named_version(bundle, named)),
                    None => Err(anyhow::anyhow!("a delta, but no bundle to apply it to")),
                };
                match accepted {
                    Ok(bundle) => {
                        let (version, policy) = (bundle.version, bundle.policy.clone());
                        match self.keep_delta(&bytes, bundle) {
                            Ok(()) => {
                                self.mark_synced();
                                info!(from = have, version, "policy delta accepted");
                                return (
                                    Update::Apply(Box::new(policy), "delta"),
                                    Polled::Answered,
                                );
                            }
                            Err(e) => error!("cannot keep the delta, not applied: {e:#}"),
                        }
                    }
                    Err(e) => {
                        // Next time, the whole bundle.
                        self.state().want_full = true;
                        if e.downcast_ref::<bundle::HoldError>().is_some_and(|b| {
                            matches!(
                                b,
                                bundle::HoldError::Bundle(bundle::BundleError::Gap { .. })
                            )
                        }) || e
                            .downcast_ref::<bundle::BundleError>()
                            .is_some_and(|b| matches!(b, bundle::BundleError::Gap { .. }))
                        {
                            warn!("a delta that does not fit, asking for the full bundle: {e:#}");
                        } else {
                            refused(e);
                        }
                    }
                }
            }
            Ok(Some((bytes, named))) => match self
                .accept(&bytes, since)
                .and_then(|bundle| named_version(bundle, named))
            {
                Ok(bundle) => {
                    let (version, policy) = (bundle.version, bundle.policy.clone());
                    if version <= have {
                        refused(anyhow::anyhow!(
                            "bundle version {version} is not newer than {have}"
                        ));
                    } else {
                        match self.keep(&bytes, bundle) {
                            Ok(()) => {
                                self.mark_synced();
                                info!(version, "new policy bundle accepted");
                                return (
                                    Update::Apply(Box::new(policy), "new bundle"),
                                    Polled::Answered,
                                );
                            }
                            Err(e) => error!("cannot keep the new bundle, not applied: {e:#}"),
                        }
                    }
                }
                Err(e) => refused(e),
            },
            Err(e) => {
                warn!("policy poll failed: {e:#}");
                return (self.fail_closed_if_stale(), Polled::Failed);
            }
        }
        // The server answered with something we refused: this bastion
        // does not hold the server's policy, so it is not synced (the
        // staleness clock runs on).
        (self.fail_closed_if_stale(), Polled::Failed)
    }

    /// Posts a batch of spooled events (`{"events": [...]}`, signed like
    /// every bastion request); returns the idempotency keys the server
    /// answered as stored.
    pub fn post_events(
        &self,
        events: &[serde_json::Value],
    ) -> std::result::Result<Vec<String>, crate::daemon::monitor::upload::SendError> {
        use crate::daemon::monitor::upload::SendError;
        let body = serde_json::to_vec(&jms_sync::event::EventBatch {
            events: events.to_vec(),
        })
        .map_err(|e| SendError::Refused(e.into()))?;
        // An answer not signed for this request is none: the events stay
        // spooled.
        let answer = self
            .client
            .call(
                Call::new(reqwest::Method::POST, jms_sync::paths::EVENTS, ""),
                body,
            )
            .map_err(SendError::Unreachable)?;
        if !answer.status.is_success() {
            return Err(SendError::Refused(answer.refusal("the events")));
        }
        let answer: jms_sync::event::EventsAccepted = serde_json::from_value(answer.json())
            .map_err(|e| SendError::Refused(anyhow::anyhow!("the events answer: {e}")))?;
        Ok(answer.accepted)
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

/// Refuses a bundle whose version is not the one the signed answer named.
fn named_version(bundle: HeldBundle, named: u64) -> Result<HeldBundle> {
    if bundle.version != named {
        anyhow::bail!(
            "the answer names version {named} but carries version {}",
            bundle.version
        );
    }
    Ok(bundle)
}

/// Splits length-prefixed records; a cut record ends the list.
fn split_records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while bytes.len() >= 4 {
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        let Some(record) = bytes.get(4..4 + len) else {
            warn!("the deltas file ends in a cut record: ignored");
            break;
        };
        out.push(record.to_vec());
        bytes = &bytes[4 + len..];
    }
    out
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
        let have = on_disk.as_ref().map_or(0, |b| b.version);
        let mut from_disk = None;
        if let Some(bundle) = on_disk {
            let policy = bundle.policy.clone();
            self.state().last = Some(bundle);
            if !self.stale() {
                return Ok(policy);
            }
            from_disk = Some(policy);
        }
        // Nothing usable on disk: ask the server once.
        match self.poll_once(0) {
            (Update::Apply(policy, _), _) => Ok(*policy),
            (Update::Keep, Polled::Answered) if self.state().last.is_some() => match from_disk {
                Some(policy) => Ok(policy),
                None => Ok(self.state().last.as_ref().expect("checked").policy.clone()),
            },
            (Update::Keep, Polled::Answered) => {
                warn!(have, "the server has no newer policy and none is kept here");
                Ok(empty_policy())
            }
            (Update::Keep, Polled::Failed) => {
                self.state().closed = true;
                error!(
                    alarm = "policy_stale",
                    "no policy fresh enough: jms users are refused until the server is reached"
                );
                Ok(empty_policy())
            }
        }
    }

    fn settings(&self) -> Option<serde_json::Value> {
        self.state().last.as_ref().map(|b| b.settings.clone())
    }

    fn ids(&self) -> Option<UnixIds> {
        self.state().last.as_ref().map(|b| b.ids.clone())
    }

    fn describe(&self) -> String {
        format!(
            "central server {} (bastion {} `{}`, server key {})",
            self.config.servers(),
            self.client.identity().enrollment.bastion_id,
            self.client.identity().enrollment.bastion_name,
            self.client.identity().enrollment.server_id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jms_core::model::PolicyDocument;

    /// Deltas appended one by one read back in order; a record a crash
    /// cut short is cut off before the next one goes after it.
    #[test]
    fn deltas_appended_read_back_past_a_cut_record() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DELTAS_FILE);
        append_delta(&path, b"one", true).unwrap();
        append_delta(&path, b"two", false).unwrap();
        // A crash in the middle of the third.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(&[0, 0, 0, 9, b't']).unwrap();
        drop(file);
        append_delta(&path, b"three", false).unwrap();
        let read = split_records(&std::fs::read(&path).unwrap());
        assert_eq!(read, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);
        // The first delta after a full bundle starts the file over.
        append_delta(&path, b"four", true).unwrap();
        assert_eq!(
            split_records(&std::fs::read(&path).unwrap()),
            [b"four".to_vec()]
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    /// A bundle (even one the server signed) naming a file to read is
    /// refused: agentd is root and would read whatever it names.
    #[test]
    fn a_bundle_naming_a_secret_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("root-only");
        std::fs::write(&secret, "local secret\n").unwrap();
        let doc: PolicyDocument = serde_json::from_value(serde_json::json!({
            "assets": [{
                "name": "web01",
                "address": "10.0.0.1",
                "protocols": [{"name": "ssh", "port": 22}],
                "accounts": [{"name": "root", "username": "root", "secret_type": "password", "secret_file": secret}],
            }],
        }))
        .unwrap();
        let bundle = Bundle {
            version: 3,
            issued_at: chrono::Utc::now(),
            server_id: "test".into(),
            policy: doc,
            settings: serde_json::Value::Null,
            ids: Default::default(),
        };
        let err = Central::check(bundle).expect_err("a received secret_file must be refused");
        let chain = format!("{err:#}");
        assert!(chain.contains("secret_file"), "{chain}");
        assert!(!chain.contains("local secret"), "{chain}");
    }
}
