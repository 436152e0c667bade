//! Test secrets made independently of jms-core: a Django password hash
//! (`pbkdf2_sha256$ITER$SALT$HASH`) and RFC 6238 TOTP codes, computed with
//! `ring` directly so the suite does not verify jms with jms's own code.

use std::num::NonZeroU32;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::{hmac, pbkdf2};

/// Iterations for test hashes: the lowest jms accepts, to keep tests fast.
pub const TEST_ITERATIONS: u32 = 1000;

/// TOTP time step in seconds (RFC 6238 default, and jms's).
pub const TOTP_STEP: u64 = 30;

/// `pbkdf2_sha256$1000$SALT$HASH` for `password`, as Django writes it
/// (standard base64 with padding for the 32-byte derived key).
pub fn django_hash(password: &str, salt: &str) -> String {
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(TEST_ITERATIONS).expect("non-zero"),
        salt.as_bytes(),
        password.as_bytes(),
        &mut out,
    );
    format!(
        "pbkdf2_sha256${TEST_ITERATIONS}${salt}${}",
        base64_encode(&out)
    )
}

/// A TOTP secret: the base32 text for the policy and the raw key.
#[derive(Debug, Clone)]
pub struct TotpSecret {
    raw: Vec<u8>,
}

impl TotpSecret {
    /// A fixed 20-byte key derived from `seed` (tests need no randomness).
    pub fn from_seed(seed: &str) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, seed.as_bytes());
        TotpSecret {
            raw: digest.as_ref()[..20].to_vec(),
        }
    }

    /// The RFC 4648 base32 form (no padding: 20 bytes are 32 characters).
    pub fn base32(&self) -> String {
        base32_encode(&self.raw)
    }

    /// The 6-digit code of time step `step` (HMAC-SHA1, RFC 4226 truncation).
    pub fn code_at_step(&self, step: u64) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &self.raw);
        let mac = hmac::sign(&key, &step.to_be_bytes());
        let mac = mac.as_ref();
        let offset = (mac[mac.len() - 1] & 0x0f) as usize;
        let binary = u32::from_be_bytes([
            mac[offset] & 0x7f,
            mac[offset + 1],
            mac[offset + 2],
            mac[offset + 3],
        ]);
        format!("{:06}", binary % 1_000_000)
    }

    /// The code valid now.
    pub fn code_now(&self) -> String {
        self.code_at_step(current_step())
    }

    /// A six-digit code that is none of the codes accepted now (the current
    /// step and one step either side).
    pub fn wrong_code_now(&self) -> String {
        let step = current_step();
        let near: Vec<String> = (step.saturating_sub(2)..=step + 2)
            .map(|s| self.code_at_step(s))
            .collect();
        ["000000", "111111", "222222", "333333", "444444", "555555"]
            .iter()
            .map(|c| c.to_string())
            .find(|c| !near.contains(c))
            .expect("six candidates, at most five excluded")
    }
}

/// The current TOTP step.
pub fn current_step() -> u64 {
    unix_now() / TOTP_STEP
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Today's weekday in UTC as jms policies spell it, shifted by `offset` days.
pub fn utc_weekday(offset: u64) -> &'static str {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    // 1970-01-01 was a Thursday (index 3 counting from Monday).
    let days = unix_now() / 86_400;
    DAYS[((days + 3 + offset) % 7) as usize]
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 0x3f) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base32_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 0x1f) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 0x1f) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn base32_matches_rfc4648_vectors() {
        assert_eq!(base32_encode(b"f"), "MY");
        assert_eq!(base32_encode(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn totp_matches_rfc6238_sha1_vectors() {
        let secret = TotpSecret {
            raw: b"12345678901234567890".to_vec(),
        };
        // RFC 6238 appendix B gives 8 digits; the last 6 are the 6-digit code.
        assert_eq!(secret.code_at_step(59 / 30), "287082");
        assert_eq!(secret.code_at_step(1_111_111_109 / 30), "081804");
        assert_eq!(secret.code_at_step(2_000_000_000 / 30), "279037");
    }

    #[test]
    fn django_hash_matches_python_hashlib() {
        // python3 -c "import hashlib,base64;print(base64.b64encode(
        //   hashlib.pbkdf2_hmac('sha256',b'secret',b'salt',1000)).decode())"
        assert_eq!(
            django_hash("secret", "salt"),
            "pbkdf2_sha256$1000$salt$qN+JnzxPIE2WfgrWPAkph8EAVeuwF7PZ0ordIY1Peq0="
        );
    }
}
