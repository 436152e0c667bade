//! Secrets at rest and API tokens.
//!
//! - Secrets (account secrets, password hashes, TOTP seeds, the mail
//!   password) are sealed with AES-256-GCM under a key kept in the data
//!   directory (`secret.key`, 32 random bytes, created at first start with
//!   mode 0600; the server refuses a key file others can read). Each sealed
//!   value is bound to where it belongs (`accounts.secret:web01/root`) as
//!   associated data, so a ciphertext copied to another row does not open.
//!   Layout: version byte `1`, 12-byte random nonce, ciphertext and tag.
//! - API tokens are 32 random bytes shown once (`jms_` + hex); the store
//!   keeps only their SHA-256.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// Name of the key file in the data directory.
pub const KEY_FILE: &str = "secret.key";
const KEY_LEN: usize = 32;
const SEALED_VERSION: u8 = 1;
/// Prefix of every API token (helps secret scanners spot a leaked one).
pub const TOKEN_PREFIX: &str = "jms_";

/// What went wrong with the key or a sealed value.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file could not be read or created: check the data directory.
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The key file is readable or writable by others: `chmod 600` it (and
    /// consider the secrets exposed).
    #[error("{path}: mode {mode:04o} is too open: the key file must be 0600 (chmod 600 it)")]
    UnsafeMode { path: PathBuf, mode: u32 },
    /// The key file is not 32 bytes: restore it from a backup; without it
    /// the stored secrets cannot be opened.
    #[error("{path}: not a key file ({len} bytes, expected {KEY_LEN})")]
    BadKey { path: PathBuf, len: usize },
    /// A sealed value does not open with this key (another key, tampered,
    /// or moved to another row).
    #[error("cannot open the sealed {what}: wrong key or tampered value")]
    Open { what: String },
}

pub type Result<T> = std::result::Result<T, CryptoError>;

/// The key that seals secrets at rest.
pub struct SealKey {
    key: LessSafeKey,
    rng: SystemRandom,
    /// For keys derived from this one ([`SealKey::derive`]).
    derive: ring::hmac::Key,
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(***)")
    }
}

impl SealKey {
    /// Loads `dir/secret.key`, creating it (0600, random) when absent.
    pub fn load_or_create(dir: &Path) -> Result<SealKey> {
        let path = dir.join(KEY_FILE);
        let io = |action| {
            let path = path.clone();
            move |source| CryptoError::Io {
                path,
                action,
                source,
            }
        };
        let rng = SystemRandom::new();
        let bytes = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(mut file) => {
                let mut bytes = [0u8; KEY_LEN];
                rng.fill(&mut bytes).expect("system random");
                file.write_all(&bytes).map_err(io("write"))?;
                file.sync_all().map_err(io("fsync"))?;
                if let Ok(dir) = fs::File::open(dir) {
                    let _ = dir.sync_all();
                }
                bytes.to_vec()
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
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::BadKey {
                path,
                len: bytes.len(),
            });
        }
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("32-byte AES key");
        Ok(SealKey {
            key: LessSafeKey::new(key),
            rng,
            derive: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
        })
    }

    /// Seals `plaintext`, bound to `place` (e.g. `accounts.secret:web01/root`).
    /// A 32-byte key for `purpose`, the same on every instance that has
    /// this key file (HMAC-SHA256 of the purpose; it tells nothing of the
    /// seal key).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let tag = ring::hmac::sign(&self.derive, purpose.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    pub fn seal(&self, place: &str, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).expect("system random");
        let mut body = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(place.as_bytes()),
                &mut body,
            )
            .expect("AES-GCM seals any length we store");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + body.len());
        sealed.push(SEALED_VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&body);
        sealed
    }

    /// Opens a value sealed for `place`.
    pub fn open(&self, place: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        let fail = || CryptoError::Open {
            what: place.to_string(),
        };
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_VERSION {
            return Err(fail());
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN]).map_err(|_| fail())?;
        let mut body = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(place.as_bytes()), &mut body)
            .map_err(|_| fail())?;
        Ok(plain.to_vec())
    }

    /// Opens a sealed UTF-8 string.
    pub fn open_text(&self, place: &str, sealed: &[u8]) -> Result<String> {
        String::from_utf8(self.open(place, sealed)?).map_err(|_| CryptoError::Open {
            what: place.to_string(),
        })
    }
}

/// A new API token: `jms_` and 64 hex digits.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("system random");
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

/// What the store keeps of a token.
pub fn token_hash(token: &str) -> Vec<u8> {
    digest(&SHA256, token.as_bytes()).as_ref().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_place() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal("accounts.secret:web01/root", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(
            key.open("accounts.secret:web01/root", &sealed).unwrap(),
            b"hunter2"
        );
        assert!(key.open("accounts.secret:web02/root", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(key.open("accounts.secret:web01/root", &tampered).is_err());
    }

    #[test]
    fn the_key_file_is_created_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = SealKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key file mode");
        let sealed = first.seal("x", b"y");
        let again = SealKey::load_or_create(dir.path()).unwrap();
        assert_eq!(again.open("x", &sealed).unwrap(), b"y");
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        SealKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(KEY_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = SealKey::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, CryptoError::UnsafeMode { .. }), "{err}");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == 4 + 64);
        assert_eq!(token_hash(&a).len(), 32);
        assert_ne!(token_hash(&a), token_hash(&b));
    }
}
