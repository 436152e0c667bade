//! Policy bundles: what the central server sends a bastion, and how the
//! bastion knows it is genuine, whole and new.
//!
//! # The signed bundle
//!
//! A [`Bundle`] (version, issue time, server id, the whole policy with its
//! secrets, the system settings and the uids/gids the server assigned) is
//! serialised once as JSON (struct fields in declaration order, maps as
//! `BTreeMap`s: the same bundle gives the same bytes) and signed with the
//! server's Ed25519 key. The signed form, on the wire and on the bastion's
//! disk, is binary:
//!
//! ```text
//! "JMSB" | format 1 (1 byte) | server public key (32) | signature (64) | body (JSON)
//! ```
//!
//! The signature covers [`SIGN_CONTEXT`] followed by the body, so a bundle
//! signature can never be mistaken for a request signature. [`verify`]
//! refuses a bundle that is cut short, signed by another key than the one
//! the bastion pinned at enrollment, altered after signing, or not newer
//! than the version the bastion already has.
//!
//! # Deltas
//!
//! A [`Delta`] takes a bastion from `from_version` to `to_version`: the
//! entities added or changed since (whole, secrets included), those removed,
//! the settings and the uids/gids of the users and groups it carries. It is
//! signed like a bundle, under its own format byte and signing context (a
//! delta can never pass for a bundle, nor the reverse):
//!
//! ```text
//! "JMSB" | format 2 (1 byte) | server public key (32) | signature (64) | body (JSON)
//! ```
//!
//! [`verify_delta`] refuses one that does not start exactly at the version
//! the bastion holds ([`BundleError::Gap`]): the bastion then asks for a
//! full bundle. [`Delta::apply`] turns the last good bundle into the next.
//!
//! # How secrets travel
//!
//! The bundle carries account secrets, password hashes and TOTP seeds in
//! the clear *inside* the signature, and is **encrypted to the bastion for
//! transport**: jms-server speaks plain HTTP (loopback, or behind a TLS
//! proxy that may terminate anywhere), so confidentiality must not depend on
//! the channel. Each bundle request carries a fresh X25519 public key from
//! the bastion, inside the bastion's signed request (so nobody can swap it);
//! the server answers with its own fresh X25519 key and the signed bundle
//! sealed with AES-256-GCM under HKDF-SHA256(shared secret) ([`seal_for`],
//! [`TransportKey::open`]). Both keys are ephemeral (ring only does
//! ephemeral agreement), which also gives forward secrecy: a bastion key
//! stolen later does not open recorded traffic. What the bastion keeps on
//! disk is the signed bundle (0600, root-only state dir), so it can verify
//! it again when it starts offline.
//!
//! # Signed sync requests
//!
//! A bastion signs each sync request with its own Ed25519 key over
//! [`request_message`]: method, path, query, timestamp, nonce and the
//! SHA-256 of the body. The server checks the signature against the key
//! registered at enrollment, the timestamp against its clock and the nonce
//! against those it has seen.
//!
//! # Signed answers
//!
//! Every answer to an authenticated sync request (304 included, and the
//! control orders) is signed by the server key over [`answer_message`]:
//! the bastion id and the request's nonce, method, path and query (so an
//! answer fits one request only and can never be replayed for another),
//! the HTTP status, the policy version the answer talks about (the
//! [`crate::auth::headers::VERSION`]: for a 304 the server's version, for a bundle or
//! delta the version it brings) and the SHA-256 of the body. The signature
//! travels in [`crate::auth::headers::ANSWER_SIGNATURE`]; [`verify_answer`] is what the
//! bastion runs on every answer before it believes anything in it. An
//! answer that is unsigned, badly signed or bound to another request is
//! no answer: the bastion counts the server as unreachable, so its
//! staleness clock runs and it fails closed at `max_staleness_secs`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{digest, SHA256};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey as SigKey, ED25519};
use serde::{Deserialize, Serialize};

use jms_core::model::PolicyDocument;
use jms_core::policy::Policy;

/// First bytes of a signed bundle.
pub const MAGIC: &[u8; 4] = b"JMSB";
/// Layout version of the signed form of a full bundle.
pub const FORMAT: u8 = 1;
/// Layout version of the signed form of a delta.
pub const DELTA_FORMAT: u8 = 2;
/// What a bundle signature covers before the body.
pub const SIGN_CONTEXT: &[u8] = b"jms-bundle-v1\0";
/// What a delta signature covers before the body.
pub const DELTA_SIGN_CONTEXT: &[u8] = b"jms-delta-v1\0";
/// HKDF info of the transport key.
const TRANSPORT_INFO: &[u8] = b"jms-bundle-transport-v1";
/// What a request signature covers first.
const REQUEST_CONTEXT: &str = "jms-sync-request-v1";
/// What an answer signature covers first.
const ANSWER_CONTEXT: &str = "jms-sync-answer-v1";
const KEY_LEN: usize = 32;
const SIG_LEN: usize = 64;
const HEADER_LEN: usize = MAGIC.len() + 1 + KEY_LEN + SIG_LEN;

/// Why a bundle was refused. Every variant means: keep the last good
/// policy and log the reason (an alarm: someone may be tampering).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    /// Shorter than its header: an interrupted transfer or a cut file.
    #[error("bundle truncated ({len} bytes)")]
    Truncated { len: usize },
    /// Not a signed bundle, or a signed body that is not a bundle.
    #[error("not a jms bundle: {0}")]
    Malformed(String),
    /// Signed by another server than the one pinned at enrollment.
    #[error("bundle signed by another server key (pinned {pinned}, got {got})")]
    Foreign { pinned: String, got: String },
    /// The signature does not match the body: altered or cut after signing.
    #[error("bundle signature does not verify: tampered or truncated")]
    BadSignature,
    /// Not newer than what the bastion has: a replayed or stale bundle.
    #[error("bundle version {version} is not newer than {have}")]
    NotNewer { version: u64, have: u64 },
    /// The transport envelope could not be opened (wrong key, altered).
    #[error("sealed bundle does not open: {0}")]
    Transport(&'static str),
    /// A delta that does not start at the version the bastion holds: ask
    /// for a full bundle.
    #[error("delta from version {from} to {to} does not apply to version {have}")]
    Gap { from: u64, to: u64, have: u64 },
}

pub type Result<T> = std::result::Result<T, BundleError>;

/// Unix ids the central server assigned (never reused), so every bastion
/// gives a user the same uid.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixIds {
    #[serde(default)]
    pub users: BTreeMap<String, u32>,
    #[serde(default)]
    pub groups: BTreeMap<String, u32>,
}

/// One full policy bundle (see [`Delta`] for the changes between two).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The server's global policy version; bastions only move forward.
    pub version: u64,
    pub issued_at: DateTime<Utc>,
    /// [`server_id`] of the signing key.
    pub server_id: String,
    /// The whole policy, secrets included.
    pub policy: PolicyDocument,
    /// The server's system settings document.
    #[serde(default)]
    pub settings: serde_json::Value,
    #[serde(default)]
    pub ids: UnixIds,
}

impl Bundle {
    /// The body bytes that get signed.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("bundles serialise")
    }

    /// Signs the bundle with the server key: the signed form.
    pub fn sign(&self, key: &Ed25519KeyPair) -> Vec<u8> {
        sign_body(FORMAT, SIGN_CONTEXT, &self.to_bytes(), key)
    }
}

fn sign_body(format: u8, context: &[u8], body: &[u8], key: &Ed25519KeyPair) -> Vec<u8> {
    let mut message = Vec::with_capacity(context.len() + body.len());
    message.extend_from_slice(context);
    message.extend_from_slice(body);
    let signature = key.sign(&message);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.push(format);
    out.extend_from_slice(key.public_key().as_ref());
    out.extend_from_slice(signature.as_ref());
    out.extend_from_slice(body);
    out
}

/// The kind of a removed entity: the policy model's own ([`EntityKind`]).
pub use jms_core::model::EntityKind;

/// An account of a delta, with the asset it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssetAccount {
    pub asset: String,
    pub account: jms_core::model::Account,
}

/// One entity a delta removes; accounts are named `asset/account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removal {
    pub kind: EntityKind,
    pub name: String,
}

/// What changed between two versions (see the module doc).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    /// The version it applies to (exactly).
    pub from_version: u64,
    /// The version it brings the bastion to.
    pub to_version: u64,
    pub issued_at: DateTime<Utc>,
    pub server_id: String,
    /// Entities added or changed, whole. Assets come without their
    /// accounts (an upserted asset keeps the accounts it has).
    #[serde(default)]
    pub upsert: PolicyDocument,
    /// Accounts added or changed.
    #[serde(default)]
    pub accounts: Vec<AssetAccount>,
    /// Entities removed (an asset's accounts go with it).
    #[serde(default)]
    pub remove: Vec<Removal>,
    /// The whole settings document as of `to_version`.
    #[serde(default)]
    pub settings: serde_json::Value,
    /// Ids of the users and groups in `upsert`.
    #[serde(default)]
    pub ids: UnixIds,
}

impl Delta {
    /// Entities it adds, changes or removes.
    pub fn len(&self) -> usize {
        let u = &self.upsert;
        u.users.len()
            + u.user_groups.len()
            + u.nodes.len()
            + u.assets.len()
            + u.grants.len()
            + u.command_filters.len()
            + self.accounts.len()
            + self.remove.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Signs the delta with the server key: the signed form.
    pub fn sign(&self, key: &Ed25519KeyPair) -> Vec<u8> {
        let body = serde_json::to_vec(self).expect("deltas serialise");
        sign_body(DELTA_FORMAT, DELTA_SIGN_CONTEXT, &body, key)
    }

    /// Turns `bundle` (at `from_version`) into the bundle at `to_version`:
    /// removals, then upserts (a changed entity keeps its place, a new one
    /// goes last, as on the server), then settings, ids and version.
    pub fn apply(&self, bundle: &mut Bundle) -> Result<()> {
        if bundle.version != self.from_version {
            return Err(BundleError::Gap {
                from: self.from_version,
                to: self.to_version,
                have: bundle.version,
            });
        }
        self.apply_to_document(&mut bundle.policy)?;
        for removal in &self.remove {
            match removal.kind {
                EntityKind::Group => {
                    bundle.ids.groups.remove(&removal.name);
                }
                EntityKind::User => {
                    bundle.ids.users.remove(&removal.name);
                }
                _ => {}
            }
        }
        for (name, id) in &self.ids.users {
            bundle.ids.users.insert(name.clone(), *id);
        }
        for (name, id) in &self.ids.groups {
            bundle.ids.groups.insert(name.clone(), *id);
        }
        bundle.settings = self.settings.clone();
        bundle.version = self.to_version;
        bundle.issued_at = self.issued_at;
        Ok(())
    }

    /// The policy part of [`Delta::apply`]: removals, then upserts (a
    /// changed entity keeps its place, a new one goes last, as on the
    /// server).
    pub fn apply_to_document(&self, doc: &mut PolicyDocument) -> Result<()> {
        for removal in &self.remove {
            let name = removal.name.as_str();
            match removal.kind {
                EntityKind::Group => doc.user_groups.retain(|g| g.name != name),
                EntityKind::User => doc.users.retain(|u| u.username != name),
                EntityKind::Node => doc.nodes.retain(|n| n != name),
                EntityKind::Asset => doc.assets.retain(|a| a.name != name),
                EntityKind::Account => {
                    // Asset names hold no `/`.
                    let (asset, account) = name.split_once('/').unwrap_or((name, ""));
                    if let Some(a) = doc.assets.iter_mut().find(|a| a.name == asset) {
                        a.accounts.retain(|acc| acc.name != account);
                    }
                }
                EntityKind::Grant => doc.grants.retain(|g| g.name != name),
                EntityKind::Filter => doc.command_filters.retain(|f| f.name != name),
            }
        }
        let up = &self.upsert;
        upsert(&mut doc.user_groups, &up.user_groups, |g| g.name.as_str());
        upsert(&mut doc.users, &up.users, |u| u.username.as_str());
        upsert(&mut doc.nodes, &up.nodes, |n| n.as_str());
        // An upserted asset keeps its accounts.
        let mut assets: Vec<jms_core::model::Asset> = up.assets.clone();
        {
            let kept: std::collections::HashMap<&str, &jms_core::model::Asset> =
                doc.assets.iter().map(|a| (a.name.as_str(), a)).collect();
            for asset in &mut assets {
                if let Some(old) = kept.get(asset.name.as_str()) {
                    asset.accounts = old.accounts.clone();
                }
            }
        }
        upsert(&mut doc.assets, &assets, |a| a.name.as_str());
        if !self.accounts.is_empty() {
            let at: std::collections::HashMap<String, usize> = doc
                .assets
                .iter()
                .enumerate()
                .map(|(i, a)| (a.name.clone(), i))
                .collect();
            for AssetAccount { asset, account } in &self.accounts {
                let Some(&i) = at.get(asset) else {
                    return Err(BundleError::Malformed(format!(
                        "delta account `{}` of unknown asset `{asset}`",
                        account.name
                    )));
                };
                upsert(
                    &mut doc.assets[i].accounts,
                    std::slice::from_ref(account),
                    |a| a.name.as_str(),
                );
            }
        }
        upsert(&mut doc.grants, &up.grants, |g| g.name.as_str());
        upsert(&mut doc.command_filters, &up.command_filters, |f| {
            f.name.as_str()
        });
        Ok(())
    }

    /// Whether it changes nodes, assets or accounts (the grant engine
    /// then rebuilds its asset indexes; otherwise a delta is applied to a
    /// checked policy in place of a rebuild, see `Policy::apply_delta`).
    pub fn touches_assets(&self) -> bool {
        !self.upsert.nodes.is_empty()
            || !self.upsert.assets.is_empty()
            || !self.accounts.is_empty()
            || self.remove.iter().any(|r| {
                matches!(
                    r.kind,
                    EntityKind::Node | EntityKind::Asset | EntityKind::Account
                )
            })
    }
}

impl jms_core::PolicyChange for Delta {
    fn upserted(&self) -> &PolicyDocument {
        &self.upsert
    }

    fn removed(&self) -> impl Iterator<Item = (EntityKind, &str)> {
        self.remove.iter().map(|r| (r.kind, r.name.as_str()))
    }

    fn touches_assets(&self) -> bool {
        Delta::touches_assets(self)
    }

    fn apply_to_document(&self, doc: &mut PolicyDocument) -> std::result::Result<(), String> {
        Delta::apply_to_document(self, doc).map_err(|e| e.to_string())
    }
}

/// A verified bundle as a bastion holds it: its checked policy (whose
/// entities and indexes are shared, so holding and cloning it is cheap)
/// and what else the bundle carries. Deltas apply to it without copying
/// what they do not touch ([`Policy::apply_delta`]).
#[derive(Debug, Clone)]
pub struct HeldBundle {
    pub version: u64,
    pub issued_at: DateTime<Utc>,
    pub server_id: String,
    pub settings: serde_json::Value,
    pub ids: UnixIds,
    pub policy: Policy,
}

/// Why a verified bundle or delta is not held.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("the bundle's policy does not check: {0}")]
    Policy(#[from] jms_core::policy::PolicyError),
}

impl HeldBundle {
    /// Checks a verified bundle's policy (as received: no `secret_file`).
    pub fn check(bundle: Bundle) -> std::result::Result<HeldBundle, HoldError> {
        let file = format!("bundle v{}", bundle.version);
        Ok(HeldBundle {
            policy: Policy::from_received(bundle.policy, &file)?,
            version: bundle.version,
            issued_at: bundle.issued_at,
            server_id: bundle.server_id,
            settings: bundle.settings,
            ids: bundle.ids,
        })
    }

    /// What [`Delta::apply`] then [`HeldBundle::check`] make of this
    /// bundle, at the cost of what the delta changes.
    pub fn apply(&self, delta: &Delta) -> std::result::Result<HeldBundle, HoldError> {
        if self.version != delta.from_version {
            return Err(BundleError::Gap {
                from: delta.from_version,
                to: delta.to_version,
                have: self.version,
            }
            .into());
        }
        let policy = self
            .policy
            .apply_delta(delta, &format!("bundle v{}", delta.to_version))?;
        let mut ids = self.ids.clone();
        for removal in &delta.remove {
            match removal.kind {
                EntityKind::Group => {
                    ids.groups.remove(&removal.name);
                }
                EntityKind::User => {
                    ids.users.remove(&removal.name);
                }
                _ => {}
            }
        }
        for (name, id) in &delta.ids.users {
            ids.users.insert(name.clone(), *id);
        }
        for (name, id) in &delta.ids.groups {
            ids.groups.insert(name.clone(), *id);
        }
        Ok(HeldBundle {
            version: delta.to_version,
            issued_at: delta.issued_at,
            server_id: self.server_id.clone(),
            settings: delta.settings.clone(),
            ids,
            policy,
        })
    }
}

/// Replaces the items of `list` named like those of `items`, in place, and
/// appends the others.
fn upsert<T: Clone>(list: &mut Vec<T>, items: &[T], key: impl Fn(&T) -> &str) {
    if items.is_empty() {
        return;
    }
    let at: std::collections::HashMap<String, usize> = list
        .iter()
        .enumerate()
        .map(|(i, item)| (key(item).to_string(), i))
        .collect();
    let mut added = Vec::new();
    for item in items {
        match at.get(key(item)) {
            Some(&i) => list[i] = item.clone(),
            None => added.push(item.clone()),
        }
    }
    list.extend(added);
}

/// A short, stable name of a server public key: `ed25519:` and the first
/// 16 hex digits of its SHA-256.
pub fn server_id(public_key: &[u8]) -> String {
    format!(
        "ed25519:{}",
        &hex(digest(&SHA256, public_key).as_ref())[..16]
    )
}

/// The format byte of a signed form (1 bundle, 2 delta), if it has one.
pub fn format_of(bytes: &[u8]) -> Option<u8> {
    (bytes.len() > 4 && &bytes[..4] == MAGIC).then(|| bytes[4])
}

/// Checks the envelope (length, magic, format, pinned key, signature over
/// `context` and the body); returns the body.
fn verified_body<'b>(
    bytes: &'b [u8],
    pinned: &[u8],
    format: u8,
    context: &[u8],
) -> Result<&'b [u8]> {
    if bytes.len() < HEADER_LEN {
        return Err(BundleError::Truncated { len: bytes.len() });
    }
    if &bytes[..4] != MAGIC {
        return Err(BundleError::Malformed("bad magic".into()));
    }
    if bytes[4] != format {
        return Err(BundleError::Malformed(format!(
            "format {} where {format} was expected",
            bytes[4]
        )));
    }
    let key = &bytes[5..5 + KEY_LEN];
    if key != pinned {
        return Err(BundleError::Foreign {
            pinned: server_id(pinned),
            got: server_id(key),
        });
    }
    let signature = &bytes[5 + KEY_LEN..HEADER_LEN];
    let body = &bytes[HEADER_LEN..];
    let mut message = Vec::with_capacity(context.len() + body.len());
    message.extend_from_slice(context);
    message.extend_from_slice(body);
    SigKey::new(&ED25519, pinned)
        .verify(&message, signature)
        .map_err(|_| BundleError::BadSignature)?;
    Ok(body)
}

/// Checks a signed delta against the pinned server key; it must start
/// exactly at `have` and move forward.
pub fn verify_delta(bytes: &[u8], pinned: &[u8], have: u64) -> Result<Delta> {
    let body = verified_body(bytes, pinned, DELTA_FORMAT, DELTA_SIGN_CONTEXT)?;
    let delta: Delta = serde_json::from_slice(body)
        .map_err(|e| BundleError::Malformed(format!("signed delta: {e}")))?;
    if delta.server_id != server_id(pinned) {
        return Err(BundleError::Malformed(format!(
            "server_id {} does not name the signing key",
            delta.server_id
        )));
    }
    if delta.to_version <= delta.from_version || delta.to_version <= have {
        return Err(BundleError::NotNewer {
            version: delta.to_version,
            have: have.max(delta.from_version),
        });
    }
    if delta.from_version != have {
        return Err(BundleError::Gap {
            from: delta.from_version,
            to: delta.to_version,
            have,
        });
    }
    Ok(delta)
}

/// Checks a signed bundle against the pinned server key and the version
/// the bastion has (`have`: only a greater version is accepted), and
/// returns it.
pub fn verify(bytes: &[u8], pinned: &[u8], have: u64) -> Result<Bundle> {
    let body = verified_body(bytes, pinned, FORMAT, SIGN_CONTEXT)?;
    let bundle: Bundle = serde_json::from_slice(body)
        .map_err(|e| BundleError::Malformed(format!("signed body: {e}")))?;
    if bundle.server_id != server_id(pinned) {
        return Err(BundleError::Malformed(format!(
            "server_id {} does not name the signing key",
            bundle.server_id
        )));
    }
    if bundle.version <= have {
        return Err(BundleError::NotNewer {
            version: bundle.version,
            have,
        });
    }
    Ok(bundle)
}

// ---- transport sealing ----------------------------------------------------

/// The bastion's half of one bundle transfer: a fresh X25519 key whose
/// public part goes in the (signed) request.
pub struct TransportKey {
    private: EphemeralPrivateKey,
    public: Vec<u8>,
}

impl TransportKey {
    pub fn generate() -> TransportKey {
        let rng = SystemRandom::new();
        let private = EphemeralPrivateKey::generate(&X25519, &rng).expect("system random");
        let public = private
            .compute_public_key()
            .expect("X25519 public key")
            .as_ref()
            .to_vec();
        TransportKey { private, public }
    }

    /// Hex of the public key, for the request's query.
    pub fn public_hex(&self) -> String {
        hex(&self.public)
    }

    /// Opens what [`seal_for`] sealed to this key.
    pub fn open(self, sealed: &[u8]) -> Result<Vec<u8>> {
        if sealed.len() < KEY_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(BundleError::Truncated { len: sealed.len() });
        }
        let (server_public, rest) = sealed.split_at(KEY_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let key = agreement::agree_ephemeral(
            self.private,
            &UnparsedPublicKey::new(&X25519, server_public),
            |shared| transport_key(shared, &self.public, server_public),
        )
        .map_err(|_| BundleError::Transport("bad server key"))?;
        let mut body = body.to_vec();
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| BundleError::Transport("bad nonce"))?;
        let plain = key
            .open_in_place(nonce, Aad::from(TRANSPORT_INFO), &mut body)
            .map_err(|_| BundleError::Transport("tampered or wrong key"))?;
        Ok(plain.to_vec())
    }
}

/// Seals `plaintext` to the bastion's transport key (32 bytes):
/// server public key (32) | nonce (12) | AES-256-GCM ciphertext and tag.
pub fn seal_for(bastion_public: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    if bastion_public.len() != KEY_LEN {
        return Err(BundleError::Transport("transport key is not 32 bytes"));
    }
    let rng = SystemRandom::new();
    let private = EphemeralPrivateKey::generate(&X25519, &rng).expect("system random");
    let public = private.compute_public_key().expect("X25519 public key");
    let key = agreement::agree_ephemeral(
        private,
        &UnparsedPublicKey::new(&X25519, bastion_public),
        |shared| transport_key(shared, bastion_public, public.as_ref()),
    )
    .map_err(|_| BundleError::Transport("bad transport key"))?;
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).expect("system random");
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(TRANSPORT_INFO),
        &mut body,
    )
    .expect("AES-GCM seals any bundle size");
    let mut out = Vec::with_capacity(KEY_LEN + NONCE_LEN + body.len());
    out.extend_from_slice(public.as_ref());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

fn transport_key(shared: &[u8], bastion_public: &[u8], server_public: &[u8]) -> LessSafeKey {
    let mut salt = Vec::with_capacity(2 * KEY_LEN);
    salt.extend_from_slice(bastion_public);
    salt.extend_from_slice(server_public);
    let prk = Salt::new(HKDF_SHA256, &salt).extract(shared);
    let okm = prk
        .expand(&[TRANSPORT_INFO], &AES_256_GCM)
        .expect("HKDF output of one AES key");
    LessSafeKey::new(UnboundKey::from(okm))
}

// ---- request signatures ---------------------------------------------------

/// What a bastion signs for one sync request. `query` is the raw query
/// string (without `?`), `timestamp` Unix seconds, `nonce` random hex.
pub fn request_message(
    method: &str,
    path: &str,
    query: &str,
    timestamp: i64,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    format!(
        "{REQUEST_CONTEXT}\n{method}\n{path}\n{query}\n{timestamp}\n{nonce}\n{}",
        hex(digest(&SHA256, body).as_ref())
    )
    .into_bytes()
}

/// Checks an Ed25519 signature by `public_key` over `message`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    SigKey::new(&ED25519, public_key)
        .verify(message, signature)
        .is_ok()
}

// ---- answer signatures -------------------------------------------------------

/// The request an answer belongs to: what the bastion sent (and signed),
/// as the server authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerBinding<'a> {
    /// The enrolled bastion's id (`X-Jms-Bastion`).
    pub bastion_id: i64,
    /// The request's nonce (`X-Jms-Nonce`), fresh for every request.
    pub nonce: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
}

/// Why an answer was not believed. Every variant means: this is no
/// answer from the server (count it as unreachable, log it as an alarm).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnswerError {
    /// No signature header: a proxy or a man in the middle answered.
    #[error("the answer is not signed by the server")]
    Unsigned,
    /// A header that is not what the server writes.
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    /// Signed by another key, for another request (a replay), or altered.
    #[error("the answer's signature does not verify (another key, another request, or altered)")]
    BadSignature,
}

/// Longest header value [`verify_answer`] looks at (a signature is 128
/// hex digits, a version 20 digits).
const MAX_ANSWER_HEADER: usize = 256;

/// What the server signs for one answer: the request it answers, the
/// status, the version it talks about (none for answers about no
/// version) and the SHA-256 of the body.
pub fn answer_message(
    binding: &AnswerBinding<'_>,
    status: u16,
    version: Option<u64>,
    body: &[u8],
) -> Vec<u8> {
    let AnswerBinding {
        bastion_id,
        nonce,
        method,
        path,
        query,
    } = binding;
    let version = version.map(|v| v.to_string()).unwrap_or_default();
    format!(
        "{ANSWER_CONTEXT}\n{bastion_id}\n{nonce}\n{method}\n{path}\n{query}\n{status}\n{version}\n{}",
        hex(digest(&SHA256, body).as_ref())
    )
    .into_bytes()
}

/// The server's signature of an answer: the value of
/// [`crate::auth::headers::ANSWER_SIGNATURE`] (hex).
pub fn sign_answer(
    key: &Ed25519KeyPair,
    binding: &AnswerBinding<'_>,
    status: u16,
    version: Option<u64>,
    body: &[u8],
) -> String {
    hex(key
        .sign(&answer_message(binding, status, version, body))
        .as_ref())
}

/// Checks an answer to the request `binding` against the pinned server
/// key: `version` and `signature` are the raw values of
/// [`crate::auth::headers::VERSION`] and [`crate::auth::headers::ANSWER_SIGNATURE`] (absent: `None`).
/// Returns the version the answer talks about, once it is believed.
pub fn verify_answer(
    pinned: &[u8],
    binding: &AnswerBinding<'_>,
    status: u16,
    version: Option<&[u8]>,
    body: &[u8],
    signature: Option<&[u8]>,
) -> std::result::Result<Option<u64>, AnswerError> {
    let signature = signature.ok_or(AnswerError::Unsigned)?;
    if signature.len() > MAX_ANSWER_HEADER {
        return Err(AnswerError::Malformed("signature header too long"));
    }
    let signature = std::str::from_utf8(signature)
        .ok()
        .and_then(|s| unhex(s.trim()))
        .filter(|s| s.len() == SIG_LEN)
        .ok_or(AnswerError::Malformed("signature: expected 128 hex digits"))?;
    let version = match version {
        None => None,
        Some(v) if v.len() > MAX_ANSWER_HEADER => {
            return Err(AnswerError::Malformed("version header too long"))
        }
        Some(v) => Some(
            std::str::from_utf8(v)
                .ok()
                .map(str::trim)
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or(AnswerError::Malformed("version: expected a decimal number"))?,
        ),
    };
    let message = answer_message(binding, status, version, body);
    if verify_signature(pinned, &message, &signature) {
        Ok(version)
    } else {
        Err(AnswerError::BadSignature)
    }
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Bytes of a hex string, or `None` when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_hash_as_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(
            crate::recording::sha256_file(&path).unwrap(),
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string(),
                3
            )
        );
    }
    use jms_core::model::{Secret, User};
    use ring::signature::Ed25519KeyPair;

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn bundle(key: &Ed25519KeyPair, version: u64) -> Bundle {
        Bundle {
            version,
            issued_at: Utc::now(),
            server_id: server_id(key.public_key().as_ref()),
            policy: PolicyDocument {
                users: vec![User {
                    username: "alice".into(),
                    name: "Alice".into(),
                    email: None,
                    is_active: true,
                    date_expired: None,
                    groups: vec![],
                    public_keys: vec![],
                    password_hash: Some(Secret::new("pbkdf2_sha256$1$s$h")),
                    totp_secret: None,
                    login_acl: Default::default(),
                }],
                ..Default::default()
            },
            settings: serde_json::json!({"security": {"lockout_threshold": 3}}),
            ids: UnixIds {
                users: [("alice".to_string(), 200_000)].into(),
                groups: BTreeMap::new(),
            },
        }
    }

    fn pinned(key: &Ed25519KeyPair) -> Vec<u8> {
        key.public_key().as_ref().to_vec()
    }

    #[test]
    fn a_signed_bundle_verifies_with_the_pinned_key() {
        let key = key();
        let signed = bundle(&key, 7).sign(&key);
        let got = verify(&signed, &pinned(&key), 6).expect("a genuine newer bundle verifies");
        assert_eq!(got.version, 7);
        assert_eq!(got.policy.users[0].username, "alice");
        assert_eq!(got.ids.users["alice"], 200_000);
    }

    #[test]
    fn a_tampered_bundle_is_refused() {
        let key = key();
        let mut signed = bundle(&key, 7).sign(&key);
        let at = signed
            .windows(5)
            .position(|w| w == b"alice")
            .expect("body holds the user");
        signed[at] = b'm'; // "mlice"
        assert_eq!(
            verify(&signed, &pinned(&key), 0).unwrap_err(),
            BundleError::BadSignature
        );
        let mut flipped = bundle(&key, 7).sign(&key);
        flipped[HEADER_LEN - 1] ^= 1; // the signature itself
        assert_eq!(
            verify(&flipped, &pinned(&key), 0).unwrap_err(),
            BundleError::BadSignature
        );
    }

    #[test]
    fn a_truncated_bundle_is_refused() {
        let key = key();
        let signed = bundle(&key, 7).sign(&key);
        assert_eq!(
            verify(&signed[..signed.len() - 1], &pinned(&key), 0).unwrap_err(),
            BundleError::BadSignature,
            "a body cut short does not verify"
        );
        assert_eq!(
            verify(&signed[..HEADER_LEN - 1], &pinned(&key), 0).unwrap_err(),
            BundleError::Truncated {
                len: HEADER_LEN - 1
            }
        );
        assert!(matches!(
            verify(&[], &pinned(&key), 0).unwrap_err(),
            BundleError::Truncated { len: 0 }
        ));
    }

    #[test]
    fn an_older_or_equal_version_is_refused() {
        let key = key();
        let signed = bundle(&key, 7).sign(&key);
        assert_eq!(
            verify(&signed, &pinned(&key), 7).unwrap_err(),
            BundleError::NotNewer {
                version: 7,
                have: 7
            }
        );
        assert_eq!(
            verify(&signed, &pinned(&key), 9).unwrap_err(),
            BundleError::NotNewer {
                version: 7,
                have: 9
            }
        );
    }

    #[test]
    fn a_bundle_from_another_server_key_is_refused() {
        let (ours, theirs) = (key(), key());
        let mut foreign = bundle(&theirs, 8);
        foreign.server_id = server_id(ours.public_key().as_ref());
        let signed = foreign.sign(&theirs);
        assert!(matches!(
            verify(&signed, &pinned(&ours), 0).unwrap_err(),
            BundleError::Foreign { .. }
        ));
        // Claiming our key in the header does not help: the signature is theirs.
        let mut claimed = signed.clone();
        claimed[5..5 + KEY_LEN].copy_from_slice(&pinned(&ours));
        assert_eq!(
            verify(&claimed, &pinned(&ours), 0).unwrap_err(),
            BundleError::BadSignature
        );
    }

    #[test]
    fn garbage_is_not_a_bundle() {
        let key = key();
        let mut bytes = vec![0u8; 200];
        bytes[..4].copy_from_slice(b"NOPE");
        assert!(matches!(
            verify(&bytes, &pinned(&key), 0).unwrap_err(),
            BundleError::Malformed(_)
        ));
    }

    #[test]
    fn sealed_transport_opens_only_with_the_requesting_key() {
        let key = key();
        let signed = bundle(&key, 3).sign(&key);
        let transport = TransportKey::generate();
        let public = unhex(&transport.public_hex()).unwrap();
        let sealed = seal_for(&public, &signed).unwrap();
        assert!(
            !sealed.windows(5).any(|w| w == b"alice"),
            "the body is not readable in transit"
        );
        assert_eq!(transport.open(&sealed).unwrap(), signed);

        let other = TransportKey::generate();
        assert!(matches!(
            other.open(&sealed).unwrap_err(),
            BundleError::Transport(_)
        ));
        let again = TransportKey::generate();
        let resealed = seal_for(&unhex(&again.public_hex()).unwrap(), &signed).unwrap();
        let mut altered2 = resealed.clone();
        *altered2.last_mut().unwrap() ^= 1;
        assert!(again.open(&altered2).is_err(), "altered ciphertext refused");
    }

    #[test]
    fn request_signatures_cover_every_part() {
        let key = key();
        let message = request_message("GET", "/api/v1/sync/bundle", "since=3", 100, "ab", b"");
        let signature = key.sign(&message);
        assert!(verify_signature(
            &pinned(&key),
            &message,
            signature.as_ref()
        ));
        for other in [
            request_message("POST", "/api/v1/sync/bundle", "since=3", 100, "ab", b""),
            request_message("GET", "/api/v1/sync/events", "since=3", 100, "ab", b""),
            request_message("GET", "/api/v1/sync/bundle", "since=4", 100, "ab", b""),
            request_message("GET", "/api/v1/sync/bundle", "since=3", 101, "ab", b""),
            request_message("GET", "/api/v1/sync/bundle", "since=3", 100, "ac", b""),
            request_message("GET", "/api/v1/sync/bundle", "since=3", 100, "ab", b"x"),
        ] {
            assert!(!verify_signature(&pinned(&key), &other, signature.as_ref()));
        }
    }

    fn binding<'a>(nonce: &'a str) -> AnswerBinding<'a> {
        AnswerBinding {
            bastion_id: 3,
            nonce,
            method: "GET",
            path: "/api/v1/sync/bundle",
            query: "since=7&transport=ab",
        }
    }

    #[test]
    fn a_signed_answer_verifies_for_its_own_request_only() {
        let key = key();
        let at = binding("00112233445566778899aabbccddeeff");
        let signature = sign_answer(&key, &at, 304, Some(7), b"");
        let verify = |pinned: &[u8], b: &AnswerBinding<'_>, status, version: &str, body: &[u8]| {
            verify_answer(
                pinned,
                b,
                status,
                Some(version.as_bytes()),
                body,
                Some(signature.as_bytes()),
            )
        };
        assert_eq!(verify(&pinned(&key), &at, 304, "7", b""), Ok(Some(7)));

        let other = self::key();
        assert_eq!(
            verify(&pinned(&other), &at, 304, "7", b""),
            Err(AnswerError::BadSignature),
            "another server key"
        );
        let replayed = binding("ffeeddccbbaa99887766554433221100");
        assert_eq!(
            verify(&pinned(&key), &replayed, 304, "7", b""),
            Err(AnswerError::BadSignature),
            "an answer to an earlier request (another nonce)"
        );
        let other_bastion = AnswerBinding {
            bastion_id: 4,
            ..at
        };
        assert_eq!(
            verify(&pinned(&key), &other_bastion, 304, "7", b""),
            Err(AnswerError::BadSignature),
            "an answer to another bastion"
        );
        for (what, b) in [
            (
                "method",
                AnswerBinding {
                    method: "POST",
                    ..at
                },
            ),
            (
                "path",
                AnswerBinding {
                    path: "/api/v1/sync/control",
                    ..at
                },
            ),
            (
                "query",
                AnswerBinding {
                    query: "since=8&transport=ab",
                    ..at
                },
            ),
        ] {
            assert_eq!(
                verify(&pinned(&key), &b, 304, "7", b""),
                Err(AnswerError::BadSignature),
                "another {what}"
            );
        }
        assert_eq!(
            verify(&pinned(&key), &at, 304, "8", b""),
            Err(AnswerError::BadSignature),
            "a tampered version"
        );
        assert_eq!(
            verify(&pinned(&key), &at, 200, "7", b""),
            Err(AnswerError::BadSignature),
            "a tampered status"
        );
        assert_eq!(
            verify(&pinned(&key), &at, 304, "7", b"x"),
            Err(AnswerError::BadSignature),
            "a tampered body"
        );
        assert_eq!(
            verify_answer(
                &pinned(&key),
                &at,
                304,
                None,
                b"",
                Some(signature.as_bytes())
            ),
            Err(AnswerError::BadSignature),
            "the version header dropped"
        );
    }

    #[test]
    fn an_unsigned_or_malformed_answer_is_refused() {
        let key = key();
        let at = binding("00112233445566778899aabbccddeeff");
        assert_eq!(
            verify_answer(&pinned(&key), &at, 304, Some(b"7"), b"", None),
            Err(AnswerError::Unsigned)
        );
        let signature = sign_answer(&key, &at, 304, Some(7), b"");
        for (version, sig) in [
            (&b"7"[..], &b"zz"[..]),
            (b"7", &signature.as_bytes()[..126]),
            (b"7", &[b'a'; 4096][..]),
            (b"-7", signature.as_bytes()),
            (b"+7", signature.as_bytes()),
            (b"", signature.as_bytes()),
            (b"99999999999999999999999", signature.as_bytes()),
            (b"\xff", signature.as_bytes()),
        ] {
            assert!(
                matches!(
                    verify_answer(&pinned(&key), &at, 304, Some(version), b"", Some(sig)),
                    Err(AnswerError::Malformed(_))
                ),
                "{version:?} / {sig:?}"
            );
        }
        // No answer at all for a key that is not a key.
        assert_eq!(
            verify_answer(
                &[1, 2, 3],
                &at,
                304,
                Some(b"7"),
                b"",
                Some(signature.as_bytes())
            ),
            Err(AnswerError::BadSignature)
        );
    }

    #[test]
    fn an_answer_without_a_version_signs_none() {
        let key = key();
        let at = AnswerBinding {
            method: "GET",
            path: "/api/v1/sync/control",
            query: "wait=25",
            ..binding("0123456789abcdef")
        };
        let body = br#"{"orders":[]}"#;
        let signature = sign_answer(&key, &at, 200, None, body);
        assert_eq!(
            verify_answer(
                &pinned(&key),
                &at,
                200,
                None,
                body,
                Some(signature.as_bytes())
            ),
            Ok(None)
        );
        assert_eq!(
            verify_answer(
                &pinned(&key),
                &at,
                200,
                Some(b"0"),
                body,
                Some(signature.as_bytes())
            ),
            Err(AnswerError::BadSignature),
            "a version added in transit"
        );
    }

    fn delta(key: &Ed25519KeyPair, from: u64, to: u64) -> Delta {
        let mut carol = bundle(key, 1).policy.users[0].clone();
        carol.username = "carol".into();
        Delta {
            from_version: from,
            to_version: to,
            issued_at: Utc::now(),
            server_id: server_id(key.public_key().as_ref()),
            upsert: PolicyDocument {
                users: vec![carol],
                ..Default::default()
            },
            accounts: vec![],
            remove: vec![Removal {
                kind: EntityKind::User,
                name: "alice".into(),
            }],
            settings: serde_json::json!({"security": {"lockout_threshold": 2}}),
            ids: UnixIds {
                users: [("carol".to_string(), 200_001)].into(),
                groups: BTreeMap::new(),
            },
        }
    }

    #[test]
    fn a_delta_verifies_only_from_the_version_held_and_applies() {
        let key = key();
        let signed = delta(&key, 7, 9).sign(&key);
        assert_eq!(format_of(&signed), Some(DELTA_FORMAT));
        assert_eq!(
            verify_delta(&signed, &pinned(&key), 6).unwrap_err(),
            BundleError::Gap {
                from: 7,
                to: 9,
                have: 6
            }
        );
        assert!(matches!(
            verify_delta(&signed, &pinned(&key), 9).unwrap_err(),
            BundleError::NotNewer { .. }
        ));
        let got = verify_delta(&signed, &pinned(&key), 7).expect("a delta from 7 verifies at 7");
        let mut full = bundle(&key, 7);
        got.apply(&mut full).unwrap();
        assert_eq!(full.version, 9);
        let names: Vec<&str> = full
            .policy
            .users
            .iter()
            .map(|u| u.username.as_str())
            .collect();
        assert_eq!(names, ["carol"]);
        assert_eq!(full.ids.users.get("carol"), Some(&200_001));
        assert!(
            !full.ids.users.contains_key("alice"),
            "removed user's id goes"
        );
        assert_eq!(full.settings["security"]["lockout_threshold"], 2);
        assert!(
            got.apply(&mut full).is_err(),
            "a delta applies to its from_version only"
        );
    }

    #[test]
    fn a_delta_is_never_taken_for_a_bundle_nor_the_reverse() {
        let key = key();
        let signed = delta(&key, 7, 9).sign(&key);
        assert!(matches!(
            verify(&signed, &pinned(&key), 0).unwrap_err(),
            BundleError::Malformed(_)
        ));
        let full = bundle(&key, 8).sign(&key);
        assert!(matches!(
            verify_delta(&full, &pinned(&key), 7).unwrap_err(),
            BundleError::Malformed(_)
        ));
        // Relabelled as a delta, the bundle's signature does not hold.
        let mut relabelled = full.clone();
        relabelled[4] = DELTA_FORMAT;
        assert_eq!(
            verify_delta(&relabelled, &pinned(&key), 7).unwrap_err(),
            BundleError::BadSignature
        );
        let mut tampered = signed.clone();
        let at = tampered.windows(5).position(|w| w == b"carol").unwrap();
        tampered[at] = b'k';
        assert_eq!(
            verify_delta(&tampered, &pinned(&key), 7).unwrap_err(),
            BundleError::BadSignature
        );
        let other = self::key();
        let foreign = delta(&other, 7, 9).sign(&other);
        assert!(matches!(
            verify_delta(&foreign, &pinned(&key), 7).unwrap_err(),
            BundleError::Foreign { .. }
        ));
    }

    #[test]
    fn a_delta_upserts_assets_keeping_their_accounts_and_adds_accounts() {
        use jms_core::model::{Account, Asset};
        let key = key();
        let asset: Asset = serde_json::from_value(serde_json::json!({
            "name": "web01", "address": "10.0.0.1",
            "protocols": [{"name": "ssh", "port": 22}],
            "accounts": [{"name": "root", "username": "root", "secret_type": "password", "secret": "s1"}]
        }))
        .unwrap();
        let mut full = bundle(&key, 3);
        full.policy.assets.push(asset.clone());
        let mut moved = asset.clone();
        moved.address = "10.0.0.2".into();
        moved.accounts.clear();
        let deploy: Account = serde_json::from_value(serde_json::json!(
            {"name": "deploy", "username": "deploy", "secret_type": "password", "secret": "s2"}
        ))
        .unwrap();
        let change = Delta {
            from_version: 3,
            to_version: 4,
            issued_at: Utc::now(),
            server_id: server_id(key.public_key().as_ref()),
            upsert: PolicyDocument {
                assets: vec![moved],
                ..Default::default()
            },
            accounts: vec![AssetAccount {
                asset: "web01".into(),
                account: deploy,
            }],
            remove: vec![],
            settings: serde_json::Value::Null,
            ids: UnixIds::default(),
        };
        change.apply(&mut full).unwrap();
        let web01 = &full.policy.assets[0];
        assert_eq!(web01.address, "10.0.0.2");
        let accounts: Vec<&str> = web01.accounts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(accounts, ["root", "deploy"]);
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(unhex("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(unhex("0g").is_none() && unhex("abc").is_none());
    }
}
