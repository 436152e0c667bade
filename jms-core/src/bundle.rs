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

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::digest::{digest, SHA256};
use ring::hkdf::{Salt, HKDF_SHA256};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey as SigKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::model::PolicyDocument;

/// First bytes of a signed bundle.
pub const MAGIC: &[u8; 4] = b"JMSB";
/// Layout version of the signed form.
pub const FORMAT: u8 = 1;
/// What a bundle signature covers before the body.
pub const SIGN_CONTEXT: &[u8] = b"jms-bundle-v1\0";
/// HKDF info of the transport key.
const TRANSPORT_INFO: &[u8] = b"jms-bundle-transport-v1";
/// What a request signature covers first.
const REQUEST_CONTEXT: &str = "jms-sync-request-v1";
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

/// One full policy bundle (deltas are a later format).
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
        let body = self.to_bytes();
        let mut message = Vec::with_capacity(SIGN_CONTEXT.len() + body.len());
        message.extend_from_slice(SIGN_CONTEXT);
        message.extend_from_slice(&body);
        let signature = key.sign(&message);
        let mut out = Vec::with_capacity(HEADER_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.extend_from_slice(key.public_key().as_ref());
        out.extend_from_slice(signature.as_ref());
        out.extend_from_slice(&body);
        out
    }
}

/// A short, stable name of a server public key: `ed25519:` and the first
/// 16 hex digits of its SHA-256.
pub fn server_id(public_key: &[u8]) -> String {
    format!(
        "ed25519:{}",
        &hex(digest(&SHA256, public_key).as_ref())[..16]
    )
}

/// Checks a signed bundle against the pinned server key and the version
/// the bastion has (`have`: only a greater version is accepted), and
/// returns it.
pub fn verify(bytes: &[u8], pinned: &[u8], have: u64) -> Result<Bundle> {
    if bytes.len() < HEADER_LEN {
        return Err(BundleError::Truncated { len: bytes.len() });
    }
    if &bytes[..4] != MAGIC {
        return Err(BundleError::Malformed("bad magic".into()));
    }
    if bytes[4] != FORMAT {
        return Err(BundleError::Malformed(format!(
            "unknown format {}",
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
    let mut message = Vec::with_capacity(SIGN_CONTEXT.len() + body.len());
    message.extend_from_slice(SIGN_CONTEXT);
    message.extend_from_slice(body);
    SigKey::new(&ED25519, pinned)
        .verify(&message, signature)
        .map_err(|_| BundleError::BadSignature)?;
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
    use crate::model::{Secret, User};
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

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(unhex("00ff10").unwrap(), vec![0, 255, 16]);
        assert!(unhex("0g").is_none() && unhex("abc").is_none());
    }
}
