//! The sync half of the server: its signing key, bastion enrollment,
//! signed policy bundles, signed-request checks and event ingest.
//!
//! - The server's Ed25519 key (`sync.key`, PKCS#8, 0600) is created beside
//!   `secret.key` at first start; bastions pin its public key at enrollment.
//! - Enrollment: an admin creates a one-time token with an expiry (only its
//!   SHA-256 is stored); a bastion presents it once with its name and its
//!   Ed25519 public key and gets the server's public key and its id.
//! - Every later request is signed by the bastion key over method, path,
//!   query, timestamp, nonce and body hash (`jms_core::bundle::request_message`).
//!   The timestamp must be within [`CLOCK_SKEW_SECS`] of the server clock,
//!   the nonce must be new (kept in the store for twice that, so a replay
//!   fails even after a restart), the bastion must be enrolled.
//! - Bundles are full (a delta format can come later): the whole policy
//!   with secrets, the settings and the uids/gids, signed once per version
//!   (cached) and sealed per request to the bastion's transport key.
//! - Events are stored once per (bastion, idempotency key): `INSERT OR
//!   IGNORE`, so a retried batch stores nothing twice.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use jms_core::bundle::{self, Bundle, UnixIds};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

use crate::admin::{parse_settings, Admin, AdminError};
use crate::crypto::{token_hash, CryptoError};
use crate::store::{BastionRow, NewEvent, NewOpLogEntry};

/// Name of the server's signing key in the data directory.
pub const SYNC_KEY_FILE: &str = "sync.key";
/// How far a request's timestamp may be from the server clock.
pub const CLOCK_SKEW_SECS: i64 = 300;
/// Prefix of enrollment tokens.
pub const ENROLL_TOKEN_PREFIX: &str = "jmsb_";
/// Most events in one upload.
pub const MAX_BATCH: usize = 10_000;

/// Headers of a signed sync request.
pub mod headers {
    pub const BASTION: &str = "x-jms-bastion";
    pub const TIMESTAMP: &str = "x-jms-timestamp";
    pub const NONCE: &str = "x-jms-nonce";
    pub const SIGNATURE: &str = "x-jms-signature";
    /// On a bundle response: its version.
    pub const VERSION: &str = "x-jms-policy-version";
}

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

/// The signing key and the last signed bundle (signed once per version).
pub struct SyncState {
    key: ServerKey,
    signed: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl SyncState {
    pub fn new(key: ServerKey) -> SyncState {
        SyncState {
            key,
            signed: Mutex::new(None),
        }
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

impl Admin {
    /// The server's public signing key.
    pub fn server_public_key(&self) -> &[u8] {
        self.sync.key.public_key()
    }

    /// Creates a one-time bastion enrollment token valid for `ttl`;
    /// returns it (shown once) and its expiry.
    pub fn create_enroll_token(
        &self,
        actor: &str,
        ttl: std::time::Duration,
    ) -> std::result::Result<(String, DateTime<Utc>), AdminError> {
        let mut bytes = [0u8; 32];
        SystemRandom::new().fill(&mut bytes).expect("system random");
        let token = format!("{ENROLL_TOKEN_PREFIX}{}", bundle::hex(&bytes));
        let ttl = chrono::Duration::from_std(ttl)
            .map_err(|_| AdminError::BadInput("ttl is too long".into()))?;
        let expires_at = Utc::now() + ttl;
        let mut tx = self.store.write()?;
        let id = tx.insert_enroll_token(&token_hash(&token), expires_at)?;
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "create".into(),
            kind: "bastion-token".into(),
            name: format!("{id} (expires {})", expires_at.to_rfc3339()),
            fields: Vec::new(),
            version,
        })?;
        tx.commit()?;
        Ok((token, expires_at))
    }

    /// Enrolls a bastion with a one-time token: registers its public key
    /// (hex of 32 bytes) and returns its id. The token never works again.
    pub fn enroll(&self, token: &str, name: &str, public_key_hex: &str) -> Result<i64> {
        check_name(name)?;
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
        let id = tx.put_bastion(name, &public_key)?;
        tx.use_enroll_token(row.id, id)?;
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
        if !(16..=128).contains(&nonce.len()) || bundle::unhex(nonce).is_none() {
            return Err(SyncError::Unauthorized(
                "bad nonce: 16 to 128 hex digits".into(),
            ));
        }
        let signature = request
            .signature
            .and_then(bundle::unhex)
            .ok_or_else(|| missing(headers::SIGNATURE))?;
        let now = Utc::now().timestamp();
        if (now - timestamp).abs() > CLOCK_SKEW_SECS {
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
        let mut tx = self.store.write()?;
        if !tx.remember_nonce(id, nonce, now, now - 2 * CLOCK_SKEW_SECS)? {
            return Err(SyncError::Unauthorized(
                "replayed request (nonce already seen)".into(),
            ));
        }
        tx.touch_bastion(id, None)?;
        tx.commit()?;
        Ok(bastion)
    }

    /// The current signed bundle, or `None` when `since` is current.
    pub fn signed_bundle(
        &self,
        bastion: &BastionRow,
        since: u64,
    ) -> Result<Option<(u64, Arc<Vec<u8>>)>> {
        let version = self.version()?;
        if since >= version {
            return Ok(None);
        }
        if let Some((cached, bytes)) = &*lock(&self.sync.signed) {
            if *cached == version {
                return Ok(Some((version, bytes.clone())));
            }
        }
        // Version, policy, ids and settings from one read transaction.
        let (bundle, version) = {
            let tx = self.store.read()?;
            let version = tx.policy_version()?;
            let snapshot = tx.snapshot()?;
            let settings = parse_settings(tx.settings()?.document)?;
            drop(tx);
            let ids = UnixIds {
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
            let policy = self.open_snapshot(snapshot, true)?;
            let bundle = Bundle {
                version,
                issued_at: Utc::now(),
                server_id: self.sync.key.id(),
                policy,
                // The mail password stays on the server (it sends the mail).
                settings: serde_json::to_value(&settings).expect("settings serialise"),
                ids,
            };
            (bundle, version)
        };
        let signed = Arc::new(bundle.sign(&self.sync.key.pair));
        *lock(&self.sync.signed) = Some((version, signed.clone()));
        tracing::debug!(bastion = bastion.name, version, "bundle signed");
        Ok(Some((version, signed)))
    }

    /// Records the version a bastion reported holding.
    pub fn bastion_holds(&self, bastion: &BastionRow, version: u64) -> Result<()> {
        let mut tx = self.store.write()?;
        tx.touch_bastion(bastion.id, Some(version))?;
        tx.commit()?;
        Ok(())
    }

    /// Stores a batch of events from `bastion`, each once; returns the
    /// keys now stored (new or already there) and how many were new.
    pub fn store_events(
        &self,
        bastion: &BastionRow,
        events: &[NewEvent],
    ) -> Result<(Vec<String>, usize)> {
        if events.len() > MAX_BATCH {
            return Err(SyncError::BadInput(format!(
                "{} events in one batch: send at most {MAX_BATCH}",
                events.len()
            )));
        }
        let mut tx = self.store.write()?;
        let mut new = 0;
        for event in events {
            if tx.insert_event(bastion.id, event)? {
                new += 1;
            }
        }
        tx.commit()?;
        Ok((
            events.iter().map(|e| e.idempotency_key.clone()).collect(),
            new,
        ))
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
