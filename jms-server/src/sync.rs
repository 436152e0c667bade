//! The sync service: the server's signing key, bastion enrollment,
//! signed policy bundles and deltas, long-polls and signed-request checks
//! (event ingest is the audit service's, `crate::audit`).
//!
//! - The server's Ed25519 key (`sync.key`, PKCS#8, 0600) is created beside
//!   `secret.key` at first start; bastions pin its public key at enrollment.
//! - Enrollment: an admin creates a one-time token with an expiry (only its
//!   SHA-256 is stored); a bastion presents it once with its name and its
//!   Ed25519 public key and gets the server's public key and its id.
//! - Every later request is signed by the bastion key over method, path,
//!   query, timestamp, nonce and body hash (`jms_sync::bundle::request_message`).
//!   The timestamp must be within [`CLOCK_SKEW_SECS`] of the server clock,
//!   the nonce must be new (kept in the store for twice that, so a replay
//!   fails even after a restart), the bastion must be enrolled.
//! - Bundles: a bastion asks with the version it holds and gets
//!   not-modified, a delta or a full bundle ([`SyncService::answer`]). A full
//!   bundle is the whole policy with secrets, the settings and the
//!   uids/gids, signed once per version (cached). A delta names what
//!   changed since the bastion's version: the server remembers, in memory,
//!   which entities each of its last [`HISTORY`] versions changed (from
//!   the write path), so after a restart, for a bastion too far behind, or
//!   when the delta would not be smaller, the answer is a full bundle. The
//!   delta holds the changed entities as they are now (read one by one
//!   from the store) and is signed like a bundle. Either is sealed per
//!   request to the bastion's transport key.
//! - Long-poll: with `wait=SECONDS` (at most [`MAX_WAIT_SECS`]) a request
//!   from a bastion that is current is held until the version moves (a
//!   `tokio::sync::watch` the write path bumps) or the time is up; at most
//!   [`MAX_WAITERS`] are held at once, more are answered at once.
//! - Answers: every answer to an authenticated request (304 and control
//!   orders included) is signed by the server key for that request
//!   ([`SyncService::sign_answer`], `jms_sync::bundle::answer_message`), so a
//!   bastion believes no answer a man in the middle made or replayed.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use jms_core::model::PolicyDocument;
use jms_core::nss_cache::DEFAULT_PRIMARY_GROUP;
use jms_sync::bundle::{self, AssetAccount, Bundle, Delta, EntityKind, Removal, UnixIds};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::crypto::{token_hash, CryptoError};
use crate::policy::{parse_settings, AdminError, PolicyService};
use crate::store::{BastionRow, Kind, NewOpLogEntry, Store, WriteTx};

/// Name of the server's signing key in the data directory.
pub const SYNC_KEY_FILE: &str = "sync.key";
pub use jms_sync::auth::CLOCK_SKEW_SECS;
/// Prefix of enrollment tokens.
pub const ENROLL_TOKEN_PREFIX: &str = "jmsb_";
/// Versions whose changes are remembered for deltas (by the policy
/// service, which sees every write).
pub use crate::policy::HISTORY;
/// Longest a bundle request may be held (long-poll).
pub const MAX_WAIT_SECS: u64 = 60;
/// Most bundle requests held at once; more are answered at once.
pub const MAX_WAITERS: usize = 4096;
/// Most entities in a delta; past it a full bundle is sent.
pub const MAX_DELTA_ENTITIES: usize = 10_000;

/// Headers of a signed sync request: the sync contract's.
pub use jms_sync::auth::headers;

/// Why a sync request was refused.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Unknown or used or expired token, unknown bastion, bad signature,
    /// stale timestamp, replayed nonce (401): enroll again or fix the clock.
    #[error("{0}")]
    Unauthorized(String),
    /// The request is malformed (400).
    #[error("{0}")]
    BadInput(String),
    /// Signed by the key of a bastion an admin revoked (401): its answer
    /// is signed, so the bastion believes it and says why in its log.
    #[error("bastion {name} ({id}) is revoked: an admin must enroll it again (jmsctl bastion token create --replace {name})")]
    Revoked { id: i64, name: String },
    #[error(transparent)]
    Admin(#[from] AdminError),
}

impl From<crate::store::StoreError> for SyncError {
    fn from(e: crate::store::StoreError) -> Self {
        SyncError::Admin(e.into())
    }
}

pub type Result<T> = std::result::Result<T, SyncError>;

/// The server's Ed25519 signing key.
pub struct ServerKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerKey({})", self.id())
    }
}

impl ServerKey {
    /// Loads `dir/sync.key`, creating it (0600) at first start; refuses a
    /// key file others can read.
    pub fn load_or_create(dir: &Path) -> std::result::Result<ServerKey, CryptoError> {
        let path = dir.join(SYNC_KEY_FILE);
        let io = |action| {
            let path = path.clone();
            move |source| CryptoError::Io {
                path,
                action,
                source,
            }
        };
        let bytes = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                let pkcs8 =
                    Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("system random");
                file.write_all(pkcs8.as_ref()).map_err(io("write"))?;
                file.sync_all().map_err(io("fsync"))?;
                if let Ok(dir) = fs::File::open(dir) {
                    let _ = dir.sync_all();
                }
                pkcs8.as_ref().to_vec()
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let mut file = fs::File::open(&path).map_err(io("open"))?;
                let mode = file.metadata().map_err(io("stat"))?.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(CryptoError::UnsafeMode { path, mode });
                }
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).map_err(io("read"))?;
                bytes
            }
            Err(e) => return Err(io("create")(e)),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| CryptoError::BadKey {
            path: path.clone(),
            len: bytes.len(),
        })?;
        Ok(ServerKey { pair })
    }

    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// `ed25519:` and a fingerprint.
    pub fn id(&self) -> String {
        bundle::server_id(self.public_key())
    }
}

/// The sync service: the signing key, the last signed bundle (signed once
/// per version), the signed deltas and the long-polls held. The policy
/// service gives it the version, the document and what each version
/// changed.
pub struct SyncService {
    key: ServerKey,
    policy: Arc<PolicyService>,
    store: Store,
    signed: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
    deltas: Mutex<DeltaCache>,
    waiters: Arc<tokio::sync::Semaphore>,
}

/// Signed deltas to one version (the first), by their from_version.
type DeltaCache = (u64, HashMap<u64, Arc<Vec<u8>>>);

impl SyncService {
    /// The service signing with `key` for the policy `policy` holds, its
    /// bastions in `store`.
    pub fn new(key: ServerKey, policy: Arc<PolicyService>, store: Store) -> SyncService {
        let version = policy.version().unwrap_or(0);
        SyncService {
            key,
            policy,
            store,
            signed: Mutex::new(None),
            deltas: Mutex::new((version, HashMap::new())),
            waiters: Arc::new(tokio::sync::Semaphore::new(MAX_WAITERS)),
        }
    }

    /// Waits (at most `wait`) until the version is past `since`. Returns
    /// at once when too many requests wait already.
    pub async fn wait_past(&self, since: u64, wait: std::time::Duration) {
        let Ok(_permit) = self.waiters.clone().try_acquire_owned() else {
            tracing::warn!("too many long-polls held: answering at once");
            return;
        };
        let mut rx = self.policy.watch_version();
        let changed = tokio::time::timeout(wait, rx.wait_for(|v| *v > since));
        // A server shutting down answers at once (it waits for requests
        // in flight).
        let stopping = async {
            use tokio::signal::unix::{signal, SignalKind};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = changed => {}
            _ = stopping => {}
        }
    }
}

/// What a bastion gets for the version it holds.
#[derive(Debug, Clone)]
pub enum Answer {
    /// It is current: the server is at `version` (at most the bastion's).
    Current { version: u64 },
    /// A signed delta from `from` to `to`.
    Delta {
        from: u64,
        to: u64,
        signed: Arc<Vec<u8>>,
    },
    /// The signed full bundle at `version`.
    Full { version: u64, signed: Arc<Vec<u8>> },
}

fn entity_kind(kind: Kind) -> EntityKind {
    match kind {
        Kind::Group => EntityKind::Group,
        Kind::User => EntityKind::User,
        Kind::Node => EntityKind::Node,
        Kind::Asset => EntityKind::Asset,
        Kind::Account => EntityKind::Account,
        Kind::Grant => EntityKind::Grant,
        Kind::Filter => EntityKind::Filter,
    }
}

/// The parts of a signed request the server checks.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
    pub bastion: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub nonce: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// A bastion name: letters, digits, `.`, `_`, `-`; 1 to 64 of them.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(SyncError::BadInput(format!(
            "bastion_name `{name}`: use 1 to 64 letters, digits, `.`, `_` or `-`"
        )))
    }
}

impl SyncService {
    /// The server's public signing key.
    pub fn server_public_key(&self) -> &[u8] {
        self.key.public_key()
    }

    /// A one-time web ticket in its signed text form (the password the
    /// server's SSH client types on the bastion).
    pub fn sign_ticket(&self, ticket: &jms_sync::ticket::Ticket) -> String {
        ticket.sign(&self.key.pair)
    }

    /// The bastion the web portal goes through: of the enrolled, not
    /// revoked bastions that gave an sshd host key, the one seen last.
    pub fn web_bastion(&self) -> Result<Option<i64>> {
        let tx = self.store.read()?;
        let mut best: Option<(Option<chrono::DateTime<Utc>>, i64)> = None;
        for bastion in tx.bastions()? {
            if bastion.revoked_at.is_some() {
                continue;
            }
            let usable = tx
                .bastion_sshd(bastion.id)?
                .is_some_and(|s| !s.host_keys.is_empty());
            if usable
                && best
                    .as_ref()
                    .is_none_or(|(seen, _)| bastion.last_seen_at > *seen)
            {
                best = Some((bastion.last_seen_at, bastion.id));
            }
        }
        Ok(best.map(|(_, id)| id))
    }

    /// An enrolled bastion's sshd: address and pinned host keys.
    pub fn bastion_sshd(&self, id: i64) -> Result<Option<crate::store::fleet::BastionSshd>> {
        Ok(self.store.read()?.bastion_sshd(id)?)
    }

    /// The signature of an answer to the authenticated request `binding`
    /// (the value of [`headers::ANSWER_SIGNATURE`]).
    pub fn sign_answer(
        &self,
        binding: &bundle::AnswerBinding<'_>,
        status: u16,
        version: Option<u64>,
        body: &[u8],
    ) -> String {
        bundle::sign_answer(&self.key.pair, binding, status, version, body)
    }

    /// Creates a one-time bastion enrollment token valid for `ttl`;
    /// returns it (shown once) and its expiry. With `replaces`, the token
    /// enrolls only that (already enrolled) bastion name, with a new key.
    pub fn create_enroll_token(
        &self,
        actor: &str,
        ttl: std::time::Duration,
        replaces: Option<&str>,
    ) -> std::result::Result<(String, DateTime<Utc>), AdminError> {
        if let Some(name) = replaces {
            check_name(name).map_err(|e| AdminError::BadInput(format!("replace: {e}")))?;
        }
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).expect("system random");
        let token = format!("{ENROLL_TOKEN_PREFIX}{}", bundle::hex(&bytes));
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| AdminError::BadInput("ttl is too long".into()))?;
        let expires_at = Utc::now() + ttl;
        let mut tx = self.store.write()?;
        let id = tx.insert_enroll_token(&token_hash(&token), expires_at, replaces)?;
        let version = tx.policy_version()?;
        let replacing = replaces
            .map(|name| format!(", replaces bastion {name}"))
            .unwrap_or_default();
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "create".into(),
            kind: "bastion-token".into(),
            name: format!("{id} (expires {}{replacing})", expires_at.to_rfc3339()),
            fields: Vec::new(),
            version,
        })?;
        tx.commit()?;
        Ok((token, expires_at))
    }

    /// Enrolls a bastion with a one-time token: registers its public key
    /// (hex of 32 bytes) and returns its id. The token never works again.
    pub fn enroll(&self, token: &str, request: &jms_sync::enroll::EnrollRequest) -> Result<i64> {
        let (name, public_key_hex) = (request.bastion_name.as_str(), request.public_key.as_str());
        check_name(name)?;
        if request.ssh_host_keys.len() > jms_sync::enroll::MAX_SSH_HOST_KEYS {
            return Err(SyncError::BadInput(format!(
                "ssh_host_keys: at most {}",
                jms_sync::enroll::MAX_SSH_HOST_KEYS
            )));
        }
        let host_keys = request
            .ssh_host_keys
            .iter()
            .map(|k| jms_sync::enroll::check_ssh_host_key(k))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(SyncError::BadInput)?;
        if let Some(address) = &request.ssh_address {
            jms_sync::enroll::check_ssh_address(address).map_err(SyncError::BadInput)?;
        }
        let public_key = bundle::unhex(public_key_hex)
            .filter(|k| k.len() == 32)
            .ok_or_else(|| {
                SyncError::BadInput("public_key: expected 64 hex digits (Ed25519)".into())
            })?;
        let mut tx = self.store.write()?;
        let Some(row) = tx.enroll_token(&token_hash(token))? else {
            return Err(SyncError::Unauthorized("unknown enrollment token".into()));
        };
        if row.used_at.is_some() {
            return Err(SyncError::Unauthorized(
                "enrollment token already used: create another (jmsctl bastion token create)"
                    .into(),
            ));
        }
        if row.expires_at <= Utc::now() {
            return Err(SyncError::Unauthorized(format!(
                "enrollment token expired at {}: create another",
                row.expires_at.to_rfc3339()
            )));
        }
        if let Some(replaces) = row.replaces.as_deref().filter(|r| *r != name) {
            return Err(SyncError::Unauthorized(format!(
                "this enrollment token only replaces bastion `{replaces}`"
            )));
        }
        let replace = row.replaces.is_some();
        let Some(id) = tx.put_bastion(name, &public_key, replace)? else {
            return Err(AdminError::Conflict(format!(
                "a bastion named `{name}` is already enrolled; to give it a new key, an admin \
                 creates a token with `jmsctl bastion token create --replace {name}`"
            ))
            .into());
        };
        tx.use_enroll_token(row.id, id)?;
        tx.set_bastion_sshd(id, request.ssh_address.as_deref(), &host_keys)?;
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: format!("enrollment token {}", row.id),
            action: "enroll".into(),
            kind: "bastion".into(),
            name: name.to_string(),
            fields: vec!["public_key".into()],
            version,
        })?;
        tx.commit()?;
        tracing::info!(bastion = name, id, "bastion enrolled");
        Ok(id)
    }

    /// Checks a signed request; returns the bastion that signed it. The
    /// nonce is remembered only once the signature holds.
    pub fn authenticate_bastion(&self, request: &SignedRequest<'_>) -> Result<BastionRow> {
        let verified = self.verify_bastion_request(request)?;
        self.remember(verified)
    }

    /// Checks a signed request's headers, clock and signature, writing
    /// nothing: the caller remembers its nonce ([`Verified::remember`]) in
    /// the transaction that acts on the request.
    pub fn verify_bastion_request(&self, request: &SignedRequest<'_>) -> Result<Verified> {
        let missing = |h: &str| SyncError::Unauthorized(format!("unsigned request: no {h} header"));
        let id: i64 = request
            .bastion
            .ok_or_else(|| missing(headers::BASTION))?
            .parse()
            .map_err(|_| SyncError::Unauthorized("bad bastion id".into()))?;
        let timestamp: i64 = request
            .timestamp
            .ok_or_else(|| missing(headers::TIMESTAMP))?
            .parse()
            .map_err(|_| SyncError::Unauthorized("bad timestamp".into()))?;
        let nonce = request.nonce.ok_or_else(|| missing(headers::NONCE))?;
        if !jms_sync::auth::nonce_ok(nonce) {
            return Err(SyncError::Unauthorized(
                "bad nonce: 16 to 128 hex digits".into(),
            ));
        }
        let signature = request
            .signature
            .and_then(bundle::unhex)
            .ok_or_else(|| missing(headers::SIGNATURE))?;
        let now = Utc::now().timestamp();
        if !jms_sync::auth::timestamp_ok(timestamp, now) {
            return Err(SyncError::Unauthorized(format!(
                "request timestamp {timestamp} is more than {CLOCK_SKEW_SECS}s from the server clock ({now}): fix the bastion's clock"
            )));
        }
        let Some(bastion) = self.store.read()?.bastion(id)? else {
            return Err(SyncError::Unauthorized(format!(
                "unknown bastion {id}: enroll it"
            )));
        };
        let message = bundle::request_message(
            request.method,
            request.path,
            request.query,
            timestamp,
            nonce,
            request.body,
        );
        if !bundle::verify_signature(&bastion.public_key, &message, &signature) {
            return Err(SyncError::Unauthorized(format!(
                "bad signature for bastion {id}"
            )));
        }
        if bastion.revoked {
            tracing::warn!(
                alarm = "revoked_bastion",
                bastion = bastion.name,
                path = request.path,
                "a request signed with a revoked bastion's key was refused"
            );
            return Err(SyncError::Revoked {
                id,
                name: bastion.name,
            });
        }
        Ok(Verified {
            bastion,
            nonce: nonce.to_string(),
            now,
        })
    }

    /// What a bastion holding `since` gets now: not-modified, a delta
    /// (when the history since is here and the delta is smaller than the
    /// full bundle) or the full bundle.
    pub fn answer(&self, bastion: &BastionRow, since: u64) -> Result<Answer> {
        let version = self.policy.version()?;
        if since >= version {
            return Ok(Answer::Current { version });
        }
        if since > 0 {
            match self.signed_delta(since, version) {
                Ok(Some(signed)) => {
                    tracing::debug!(bastion = bastion.name, since, version, "delta");
                    return Ok(Answer::Delta {
                        from: since,
                        to: version,
                        signed,
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("no delta from {since}, sending the full bundle: {e}"),
            }
        }
        let (version, signed) = self.signed_bundle(bastion)?;
        Ok(Answer::Full { version, signed })
    }

    /// The signed delta from `since` to `version`, or `None` when the
    /// history is not here or the delta would not be smaller.
    fn signed_delta(&self, since: u64, version: u64) -> Result<Option<Arc<Vec<u8>>>> {
        {
            let cache = lock(&self.deltas);
            if cache.0 == version {
                if let Some(signed) = cache.1.get(&since) {
                    return Ok(Some(signed.clone()));
                }
            }
        }
        let Some(changed) = self.policy.changes_since(since, version) else {
            return Ok(None);
        };
        if changed.len() > MAX_DELTA_ENTITIES {
            return Ok(None);
        }
        let Some(delta) = self.build_delta(since, version, &changed)? else {
            return Ok(None);
        };
        let signed = Arc::new(delta.sign(&self.key.pair));
        if let Some((full_version, full)) = &*lock(&self.signed) {
            if *full_version == version && signed.len() >= full.len() {
                return Ok(None);
            }
        }
        let mut cache = lock(&self.deltas);
        if cache.0 != version {
            *cache = (version, HashMap::new());
        }
        if cache.1.len() < 256 {
            cache.1.insert(since, signed.clone());
        }
        Ok(Some(signed))
    }

    /// The delta for `changed` entities as they are at `version`: those
    /// that exist are upserted, the others removed. `None` if the store
    /// moved on meanwhile.
    fn build_delta(
        &self,
        since: u64,
        version: u64,
        changed: &[(Kind, String)],
    ) -> Result<Option<Delta>> {
        let tx = self.store.read()?;
        if tx.policy_version()? != version {
            return Ok(None);
        }
        let mut upsert = PolicyDocument::default();
        let mut accounts = Vec::new();
        let mut remove = Vec::new();
        let mut ids = UnixIds::default();
        let mut gone = |kind: Kind, name: &str| {
            remove.push(Removal {
                kind: entity_kind(kind),
                name: name.to_string(),
            })
        };
        for (kind, name) in changed {
            match kind {
                Kind::Group => match tx.group(name)? {
                    Some(row) => {
                        ids.groups.insert(name.clone(), row.gid);
                        upsert.user_groups.push(row.group);
                    }
                    None => gone(*kind, name),
                },
                Kind::User => match tx.user(name)? {
                    Some(row) => {
                        ids.users.insert(name.clone(), row.uid);
                        upsert.users.push(self.policy.open_user_row(row, true)?);
                    }
                    None => gone(*kind, name),
                },
                Kind::Node => match tx.node_by_path(name)? {
                    Some(row) => upsert.nodes.push(row.path),
                    None => gone(*kind, name),
                },
                Kind::Asset => match tx.asset(name)? {
                    Some(row) => upsert.assets.push(row.asset),
                    None => gone(*kind, name),
                },
                Kind::Account => {
                    let (asset, account) = name.split_once('/').unwrap_or((name, ""));
                    match tx.account(asset, account)? {
                        Some(row) => accounts.push(AssetAccount {
                            asset: row.asset.clone(),
                            account: self.policy.open_account_row(row, true)?,
                        }),
                        None => gone(*kind, name),
                    }
                }
                Kind::Grant => match tx.grant(name)? {
                    Some(row) => upsert.grants.push(row.grant),
                    None => gone(*kind, name),
                },
                Kind::Filter => match tx.filter(name)? {
                    Some(row) => upsert.command_filters.push(row.filter),
                    None => gone(*kind, name),
                },
            }
        }
        let settings = parse_settings(tx.settings()?.document)?;
        Ok(Some(Delta {
            from_version: since,
            to_version: version,
            issued_at: Utc::now(),
            server_id: self.key.id(),
            upsert,
            accounts,
            remove,
            // The mail password stays on the server (it sends the mail).
            settings: serde_json::to_value(&settings).expect("settings serialise"),
            ids,
        }))
    }

    /// The current signed full bundle.
    pub fn signed_bundle(&self, bastion: &BastionRow) -> Result<(u64, Arc<Vec<u8>>)> {
        let version = self.policy.version()?;
        if let Some((cached, bytes)) = &*lock(&self.signed) {
            if *cached == version {
                return Ok((version, bytes.clone()));
            }
        }
        // Version, policy, ids and settings from one read transaction.
        let (bundle, version) = {
            let tx = self.store.read()?;
            let version = tx.policy_version()?;
            let snapshot = tx.snapshot()?;
            let settings = parse_settings(tx.settings()?.document)?;
            let primary_gid = tx.primary_group_gid()?;
            drop(tx);
            let mut ids = UnixIds {
                users: snapshot
                    .users
                    .iter()
                    .map(|u| (u.user.username.clone(), u.uid))
                    .collect(),
                groups: snapshot
                    .groups
                    .iter()
                    .map(|g| (g.group.name.clone(), g.gid))
                    .collect(),
            };
            ids.groups
                .extend(primary_gid.map(|gid| (DEFAULT_PRIMARY_GROUP.to_string(), gid)));
            let policy = self.policy.open_snapshot(snapshot, true)?;
            let bundle = Bundle {
                version,
                issued_at: Utc::now(),
                server_id: self.key.id(),
                policy,
                // The mail password stays on the server (it sends the mail).
                settings: serde_json::to_value(&settings).expect("settings serialise"),
                ids,
            };
            (bundle, version)
        };
        let signed = Arc::new(bundle.sign(&self.key.pair));
        *lock(&self.signed) = Some((version, signed.clone()));
        tracing::debug!(bastion = bastion.name, version, "bundle signed");
        Ok((version, signed))
    }

    /// Remembers the nonce of a request [`Self::verify_bastion_request`]
    /// let through (a replay is refused) and the bastion's last contact;
    /// returns its bastion.
    pub fn remember(&self, verified: Verified) -> Result<BastionRow> {
        self.remember_holding(verified, None)
    }

    /// [`Self::remember`], and the policy version the bastion reported
    /// holding (a bundle poll's `since`), in the same transaction: one
    /// commit per request. Unordered ([`crate::store::Storage::write_unordered`]:
    /// on PostgreSQL no instance-wide writer lock), as every statement
    /// stands on its own: the nonce is new to exactly one request by its
    /// unique key whatever runs beside it, and last contact and version
    /// held are blind updates of this bastion's row (the last report
    /// wins, as it did in lock order) that nothing reads to decide a
    /// write.
    pub fn remember_holding(&self, verified: Verified, holds: Option<u64>) -> Result<BastionRow> {
        let mut tx = self.store.write_unordered()?;
        verified.remember_holding(tx.as_mut(), holds)?;
        tx.commit()?;
        Ok(verified.bastion)
    }
}

/// A bastion request whose signature holds, its nonce not yet remembered.
pub struct Verified {
    pub bastion: BastionRow,
    nonce: String,
    /// The server's clock when it was checked (Unix seconds).
    now: i64,
}

impl Verified {
    /// Remembers the nonce in `tx` (and that the bastion was seen); a
    /// nonce seen before is a replay.
    pub fn remember(&self, tx: &mut dyn WriteTx) -> Result<()> {
        self.remember_holding(tx, None)
    }

    /// [`Self::remember`], and the policy version the bastion holds when
    /// it told one.
    pub fn remember_holding(&self, tx: &mut dyn WriteTx, holds: Option<u64>) -> Result<()> {
        let id = self.bastion.id;
        if !tx.remember_nonce(id, &self.nonce, self.now, self.now - 2 * CLOCK_SKEW_SECS)? {
            return Err(SyncError::Unauthorized(
                "replayed request (nonce already seen)".into(),
            ));
        }
        tx.touch_bastion(id, holds)?;
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_key_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServerKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SYNC_KEY_FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = ServerKey::load_or_create(dir.path()).unwrap();
        assert_eq!(
            first.public_key(),
            again.public_key(),
            "same key after restart"
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            ServerKey::load_or_create(dir.path()).unwrap_err(),
            CryptoError::UnsafeMode { .. }
        ));
    }

    #[test]
    fn bastion_names_are_checked() {
        assert!(check_name("bastion-1.dc2").is_ok());
        for bad in ["", "a b", "a/b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
