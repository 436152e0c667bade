//! Password hashes and TOTP codes: everything a bastion login needs to check
//! what the user typed, as pure functions.
//!
//! This file owns:
//! - the Django/JumpServer password hash format `pbkdf2_sha256$ITER$SALT$HASH`
//!   ([`hash_password`], [`verify_password`], and [`check_format`], which the
//!   policy loader calls so that a hash that can never verify is refused early);
//! - TOTP per RFC 6238 with HMAC-SHA1, 30 s steps and 6 digits ([`totp_code`],
//!   [`verify_totp`], [`generate_totp_secret`], and [`check_totp_secret`] for
//!   the policy loader);
//! - the small base64 and base32 codecs those formats need.
//!
//! Nothing here panics on any input, and no error carries any part of a
//! password, hash, salt, secret or code: errors are safe to log.

use std::num::NonZeroU32;

use ring::rand::{SecureRandom, SystemRandom};
use ring::{hmac, pbkdf2};

/// The only password hash algorithm understood (Django's default).
pub const ALGORITHM: &str = "pbkdf2_sha256";
/// Iterations for new hashes: Django 4.2's default (Django 5.x uses more;
/// any count in [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`] verifies).
pub const DEFAULT_ITERATIONS: u32 = 600_000;
/// Fewest iterations accepted in a stored hash.
pub const MIN_ITERATIONS: u32 = 1_000;
/// Most iterations accepted in a stored hash, so that a crafted hash cannot
/// stall the daemon (10 million is a few seconds of CPU).
pub const MAX_ITERATIONS: u32 = 10_000_000;
/// Length of a PBKDF2-HMAC-SHA256 output, in bytes.
const HASH_LEN: usize = 32;
/// Length of a generated salt, in characters (as Django).
const SALT_LEN: usize = 22;
const SALT_CHARS: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// Length of a TOTP time step, in seconds.
pub const TOTP_STEP_SECS: i64 = 30;
/// Digits in a TOTP code.
pub const TOTP_DIGITS: u32 = 6;
/// Fewest key bytes accepted in a TOTP secret (80 bits, 16 base32 chars).
const TOTP_MIN_KEY_BYTES: usize = 10;
/// Most characters accepted in a TOTP secret's text (bounds the work).
const TOTP_MAX_SECRET_CHARS: usize = 1024;
/// Key bytes in a generated TOTP secret (160 bits, as RFC 4226 recommends).
const TOTP_SECRET_BYTES: usize = 20;

/// Why a hash, a TOTP secret or a random draw is unusable.
///
/// No variant carries any of the input: the message is safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The stored hash is not `pbkdf2_sha256$ITERATIONS$SALT$HASH` with a
    /// base64 32-byte HASH. The caller denies the login (the user has no
    /// usable password) and reports the broken policy entry to the admin.
    #[error("malformed password hash: {0}")]
    MalformedHash(&'static str),
    /// The stored hash names another algorithm (argon2, bcrypt, an unusable
    /// `!…` Django marker, …). The caller denies the login, as for
    /// [`PasswordError::MalformedHash`].
    #[error("unsupported password hash algorithm (only pbkdf2_sha256)")]
    UnsupportedAlgorithm,
    /// The iteration count (stored, or asked of [`hash_password`]) is outside
    /// [`MIN_ITERATIONS`]..=[`MAX_ITERATIONS`]. The caller denies the login,
    /// or picks a sane count when hashing.
    #[error(
        "password hash iterations must be between {} and {}",
        MIN_ITERATIONS,
        MAX_ITERATIONS
    )]
    IterationsOutOfRange,
    /// The TOTP secret is not RFC 4648 base32 (A-Z, 2-7, optional `=`
    /// padding, spaces ignored) of 80 bits or more. The caller denies the
    /// login and reports the broken enrolment to the admin.
    #[error("bad TOTP secret: {0}")]
    BadTotpSecret(&'static str),
    /// The time given for a TOTP code is before 1970. The caller's clock is
    /// wrong: deny, and log it.
    #[error("time is before the Unix epoch")]
    TimeBeforeEpoch,
    /// The system random number generator failed. The caller gives up (no
    /// salt or secret can be made safely) and retries later.
    #[error("the system random number generator failed")]
    Random,
}

/// Result of this module's functions.
pub type Result<T> = std::result::Result<T, PasswordError>;

// ---------------------------------------------------------------- passwords

/// A stored hash, split and checked; borrows the salt from the text.
struct ParsedHash<'a> {
    iterations: NonZeroU32,
    salt: &'a str,
    hash: [u8; HASH_LEN],
}

fn parse_hash(encoded: &str) -> Result<ParsedHash<'_>> {
    let mut parts = encoded.split('$');
    let (Some(algorithm), Some(iterations), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(PasswordError::MalformedHash(
            "expected pbkdf2_sha256$ITERATIONS$SALT$HASH",
        ));
    };
    if algorithm != ALGORITHM {
        return Err(PasswordError::UnsupportedAlgorithm);
    }
    if iterations.is_empty() || !iterations.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PasswordError::MalformedHash("iterations is not a number"));
    }
    let iterations = match iterations.parse::<u32>() {
        Ok(n) => check_iterations(n)?,
        // All digits but no u32: far too many.
        Err(_) => return Err(PasswordError::IterationsOutOfRange),
    };
    if salt.is_empty() {
        return Err(PasswordError::MalformedHash("empty salt"));
    }
    let hash = decode_base64(hash)
        .and_then(|bytes| <[u8; HASH_LEN]>::try_from(bytes).ok())
        .ok_or(PasswordError::MalformedHash(
            "HASH is not base64 of 32 bytes",
        ))?;
    Ok(ParsedHash {
        iterations,
        salt,
        hash,
    })
}

fn check_iterations(iterations: u32) -> Result<NonZeroU32> {
    if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
        return Err(PasswordError::IterationsOutOfRange);
    }
    NonZeroU32::new(iterations).ok_or(PasswordError::IterationsOutOfRange)
}

/// Checks the Django/JumpServer format `pbkdf2_sha256$ITER$SALT$HASH`
/// without running PBKDF2: exactly what [`verify_password`] accepts.
pub fn check_format(hash: &str) -> std::result::Result<(), String> {
    parse_hash(hash).map(|_| ()).map_err(|e| e.to_string())
}

/// Hashes `password` as Django does: `pbkdf2_sha256$ITER$SALT$HASH` with a
/// fresh 22-character alphanumeric salt and HASH the standard base64 (with
/// padding) of PBKDF2-HMAC-SHA256(password, salt, ITER, 32 bytes).
///
/// Use [`DEFAULT_ITERATIONS`] unless a test needs speed. Fails only when
/// `iterations` is out of range or the system random generator fails.
pub fn hash_password(password: &str, iterations: u32) -> Result<String> {
    let iterations = check_iterations(iterations)?;
    let salt = random_salt()?;
    let mut hash = [0u8; HASH_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt.as_bytes(),
        password.as_bytes(),
        &mut hash,
    );
    Ok(format!(
        "{ALGORITHM}${iterations}${salt}${}",
        encode_base64(&hash)
    ))
}

/// Checks `password` against a stored Django hash, in constant time
/// (`ring::pbkdf2::verify`).
///
/// `Ok(true)` on a match, `Ok(false)` on a wrong password, `Err` when the
/// stored hash is unusable (the login must then be denied too).
pub fn verify_password(password: &[u8], encoded: &str) -> Result<bool> {
    let parsed = parse_hash(encoded)?;
    Ok(pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        parsed.iterations,
        parsed.salt.as_bytes(),
        password,
        &parsed.hash,
    )
    .is_ok())
}

/// 22 characters drawn uniformly from `[a-zA-Z0-9]` (rejection sampling).
fn random_salt() -> Result<String> {
    let rng = SystemRandom::new();
    let mut salt = String::with_capacity(SALT_LEN);
    let mut bytes = [0u8; 64];
    while salt.len() < SALT_LEN {
        rng.fill(&mut bytes).map_err(|_| PasswordError::Random)?;
        // 248 = 4 × 62: bytes at or above it would bias the draw.
        for &b in bytes.iter().filter(|&&b| b < 248) {
            if salt.len() == SALT_LEN {
                break;
            }
            salt.push(char::from(SALT_CHARS[usize::from(b % 62)]));
        }
    }
    Ok(salt)
}

// --------------------------------------------------------------------- TOTP

/// Checks a TOTP secret is base32 (RFC 4648 upper case, padding optional,
/// spaces ignored) of ≥ 80 bits: exactly what [`totp_code`] accepts.
pub fn check_totp_secret(secret: &str) -> std::result::Result<(), String> {
    totp_key(secret).map(|_| ()).map_err(|e| e.to_string())
}

/// A fresh TOTP secret: 20 random bytes as unpadded base32 (32 characters,
/// what authenticator apps expect in an `otpauth://` URI).
pub fn generate_totp_secret() -> Result<String> {
    let mut key = [0u8; TOTP_SECRET_BYTES];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| PasswordError::Random)?;
    Ok(encode_base32(&key))
}

/// The 6-digit TOTP code (RFC 6238: HMAC-SHA1, 30 s steps from the epoch)
/// for `unix_time`, as a number (print it with `{:06}`).
pub fn totp_code(secret_base32: &str, unix_time: i64) -> Result<u32> {
    let key = totp_key(secret_base32)?;
    // A step is never negative, so its absolute value is itself.
    Ok(hotp(
        &key,
        totp_step(unix_time)?.unsigned_abs(),
        TOTP_DIGITS,
    ))
}

/// Checks a code the user typed against the secret at `unix_time`,
/// accepting the current step and one step either side (clock drift).
///
/// Returns the matched step (`unix_time / 30` ± 1), which the caller stores
/// and passes back as `last_used_step` next time: a step at or before it is
/// refused, so a code cannot be replayed. `Ok(None)` means no match,
/// including a code that is not six digits (spaces in it are ignored) and a
/// replayed code. `Err` means the secret or the clock is unusable.
pub fn verify_totp(
    secret: &str,
    code: &str,
    unix_time: i64,
    last_used_step: Option<i64>,
) -> Result<Option<i64>> {
    let key = totp_key(secret)?;
    let step = totp_step(unix_time)?;
    let Some(code) = parse_code(code) else {
        return Ok(None);
    };
    let mut matched = None;
    // No early exit: the time taken does not depend on which step matched.
    for candidate in [step - 1, step, step + 1] {
        let Ok(counter) = u64::try_from(candidate) else {
            continue;
        };
        let fresh = last_used_step.is_none_or(|last| candidate > last);
        if hotp(&key, counter, TOTP_DIGITS) == code && fresh && matched.is_none() {
            matched = Some(candidate);
        }
    }
    Ok(matched)
}

/// The RFC 6238 time step of `unix_time` (T0 = 0).
fn totp_step(unix_time: i64) -> Result<i64> {
    if unix_time < 0 {
        return Err(PasswordError::TimeBeforeEpoch);
    }
    Ok(unix_time / TOTP_STEP_SECS)
}

/// Six ASCII digits, spaces ignored (apps show `123 456`).
fn parse_code(code: &str) -> Option<u32> {
    let mut value = 0u32;
    let mut digits = 0u32;
    for b in code.bytes().filter(|&b| b != b' ') {
        if !b.is_ascii_digit() || digits == TOTP_DIGITS {
            return None;
        }
        value = value * 10 + u32::from(b - b'0');
        digits += 1;
    }
    (digits == TOTP_DIGITS).then_some(value)
}

fn totp_key(secret: &str) -> Result<Vec<u8>> {
    if secret.len() > TOTP_MAX_SECRET_CHARS {
        return Err(PasswordError::BadTotpSecret("longer than 1024 characters"));
    }
    let key = decode_base32(secret).map_err(PasswordError::BadTotpSecret)?;
    if key.len() < TOTP_MIN_KEY_BYTES {
        return Err(PasswordError::BadTotpSecret(
            "shorter than 80 bits (16 base32 characters)",
        ));
    }
    Ok(key)
}

/// HOTP (RFC 4226 §5.3): dynamic truncation of HMAC-SHA1(key, counter).
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let mac: &[u8] = tag.as_ref();
    // A SHA-1 tag is 20 bytes, so offset + 3 ≤ 18 is always in bounds.
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        mac[offset] & 0x7f,
        mac[offset + 1],
        mac[offset + 2],
        mac[offset + 3],
    ]);
    binary % 10u32.pow(digits)
}

// ------------------------------------------------------------------- codecs

const BASE64_CHARS: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE32_CHARS: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Standard base64 (RFC 4648 §4) with `=` padding, as Python's `b64encode`.
fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b1 = chunk.get(1).copied().unwrap_or(0);
        let b2 = chunk.get(2).copied().unwrap_or(0);
        let n = u32::from(chunk[0]) << 16 | u32::from(b1) << 8 | u32::from(b2);
        let sextet = |shift: u32| char::from(BASE64_CHARS[(n >> shift & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Strict standard base64: length a multiple of 4, padding only at the end,
/// unused bits zero. `None` on anything else.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let quads = bytes.len() / 4;
    let mut out = Vec::with_capacity(quads * 3);
    for (i, quad) in bytes.chunks(4).enumerate() {
        let padding = quad.iter().rev().take_while(|&&b| b == b'=').count();
        if padding > 2 || (padding > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &b in &quad[..4 - padding] {
            let value = match b {
                b'A'..=b'Z' => b - b'A',
                b'a'..=b'z' => b - b'a' + 26,
                b'0'..=b'9' => b - b'0' + 52,
                b'+' => 62,
                b'/' => 63,
                _ => return None,
            };
            n = n << 6 | u32::from(value);
        }
        n <<= 6 * padding as u32;
        let [_, b0, b1, b2] = n.to_be_bytes();
        match padding {
            0 => out.extend_from_slice(&[b0, b1, b2]),
            1 if b2 == 0 => out.extend_from_slice(&[b0, b1]),
            2 if b1 == 0 && b2 == 0 => out.push(b0),
            _ => return None,
        }
    }
    Some(out)
}

/// Base32 (RFC 4648 §6) without padding.
fn encode_base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity((bytes.len() * 8).div_ceil(5));
    let mut buffer = 0u32;
    let mut bits = 0u32;
    for &b in bytes {
        buffer = buffer << 8 | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32_CHARS[(buffer >> bits & 31) as usize]));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_CHARS[(buffer << (5 - bits) & 31) as usize],
        ));
    }
    out
}

/// Base32 (RFC 4648 §6): upper case `A-Z2-7`, spaces ignored, `=` padding
/// optional but, when present, complete and only at the end. Leftover bits
/// of the last character are ignored.
fn decode_base32(text: &str) -> std::result::Result<Vec<u8>, &'static str> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer = 0u32;
    let mut bits = 0u32;
    let mut symbols = 0usize;
    let mut padding = 0usize;
    for b in text.bytes() {
        let value = match b {
            b' ' => continue,
            b'=' => {
                padding += 1;
                continue;
            }
            _ if padding > 0 => return Err("`=` padding before the end"),
            b'A'..=b'Z' => b - b'A',
            b'2'..=b'7' => b - b'2' + 26,
            _ => return Err("not base32 (A-Z, 2-7)"),
        };
        buffer = buffer << 5 | u32::from(value);
        bits += 5;
        symbols += 1;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    // 8 symbols carry 5 bytes; 1, 3 or 6 leftover symbols are no whole byte.
    let rest = symbols % 8;
    if matches!(rest, 1 | 3 | 6) {
        return Err("wrong length for base32");
    }
    if padding > 0 && padding != (8 - rest) % 8 {
        return Err("wrong `=` padding");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Test vectors, computed with Python (the primitive Django uses):
    //   import hashlib, base64
    //   h = hashlib.pbkdf2_hmac("sha256", PASSWORD.encode(), SALT.encode(), ITER)
    //   f"pbkdf2_sha256${ITER}${SALT}${base64.b64encode(h).decode()}"
    // The first is also Django 3.2's own `test_pbkdf2` vector
    // (make_password("lètmein", "seasalt", "pbkdf2_sha256")).
    const DJANGO_260K: &str =
        "pbkdf2_sha256$260000$seasalt$YlZ2Vggtqdc61YjArZuoApoBh9JNGYoDRBUGu6tcJQo=";
    const DJANGO_600K: &str =
        "pbkdf2_sha256$600000$Qk8rZ2YxS1pRdW5mWmFy$RzP9xfzN1vNBAz72W06wTEOxMZkCPU5X/8qJ+9fXpLY=";
    const EMPTY_PASSWORD_1K: &str =
        "pbkdf2_sha256$1000$seasalt$XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXk=";

    /// "12345678901234567890" (RFC 6238 appendix B's SHA1 seed) in base32.
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn verifies_a_real_django_hash() {
        assert_eq!(verify_password("lètmein".as_bytes(), DJANGO_260K), Ok(true));
        assert_eq!(
            verify_password("lètmeinz".as_bytes(), DJANGO_260K),
            Ok(false)
        );
        assert_eq!(verify_password(b"letmein", DJANGO_260K), Ok(false));
    }

    #[test]
    fn verifies_a_default_iterations_hash() {
        assert_eq!(
            verify_password(b"correct horse battery staple", DJANGO_600K),
            Ok(true)
        );
        assert_eq!(
            verify_password(b"correct horse battery stapl", DJANGO_600K),
            Ok(false)
        );
    }

    #[test]
    fn verifies_an_empty_password_hash() {
        assert_eq!(verify_password(b"", EMPTY_PASSWORD_1K), Ok(true));
        assert_eq!(verify_password(b" ", EMPTY_PASSWORD_1K), Ok(false));
    }

    #[test]
    fn hash_then_verify_round_trips_with_a_django_shaped_salt() {
        let encoded = hash_password("s3cret", MIN_ITERATIONS).expect("hash");
        let parts: Vec<&str> = encoded.split('$').collect();
        assert_eq!(parts.len(), 4, "four `$` parts in {encoded}");
        assert_eq!(parts[0], "pbkdf2_sha256");
        assert_eq!(parts[1], "1000");
        assert_eq!(parts[2].len(), 22, "22-char salt in {encoded}");
        assert!(
            parts[2].bytes().all(|b| b.is_ascii_alphanumeric()),
            "alphanumeric salt"
        );
        assert_eq!(parts[3].len(), 44, "base64 of 32 bytes with padding");
        assert_eq!(check_format(&encoded), Ok(()));
        assert_eq!(verify_password(b"s3cret", &encoded), Ok(true));
        assert_eq!(verify_password(b"s3cret!", &encoded), Ok(false));
        let again = hash_password("s3cret", MIN_ITERATIONS).expect("hash");
        assert_ne!(encoded, again, "each hash has a fresh salt");
    }

    #[test]
    fn hash_password_refuses_out_of_range_iterations() {
        assert_eq!(
            hash_password("x", 0),
            Err(PasswordError::IterationsOutOfRange)
        );
        assert_eq!(
            hash_password("x", 999),
            Err(PasswordError::IterationsOutOfRange)
        );
        assert_eq!(
            hash_password("x", MAX_ITERATIONS + 1),
            Err(PasswordError::IterationsOutOfRange)
        );
        assert_eq!(DEFAULT_ITERATIONS, 600_000);
    }

    #[test]
    fn crafted_iteration_counts_are_refused_before_any_work() {
        let hash = "XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXk=";
        for iterations in ["4294967295", "99999999999999999999", "10000001", "999", "0"] {
            let encoded = format!("pbkdf2_sha256${iterations}$salt${hash}");
            assert_eq!(
                verify_password(b"", &encoded),
                Err(PasswordError::IterationsOutOfRange),
                "iterations {iterations}"
            );
        }
    }

    #[test]
    fn malformed_hashes_are_errors_not_mismatches() {
        let good_hash = "XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXk=";
        let cases = [
            (
                "",
                PasswordError::MalformedHash("expected pbkdf2_sha256$ITERATIONS$SALT$HASH"),
            ),
            (
                "pbkdf2_sha256$1000$salt",
                PasswordError::MalformedHash("expected pbkdf2_sha256$ITERATIONS$SALT$HASH"),
            ),
            (
                "pbkdf2_sha256$1000$a$b$c",
                PasswordError::MalformedHash("expected pbkdf2_sha256$ITERATIONS$SALT$HASH"),
            ),
            ("argon2$1000$salt$hash", PasswordError::UnsupportedAlgorithm),
            (
                "!unusablepassword$1$2$3",
                PasswordError::UnsupportedAlgorithm,
            ),
            (
                "pbkdf2_sha256$+1000$salt$hash",
                PasswordError::MalformedHash("iterations is not a number"),
            ),
            (
                "pbkdf2_sha256$$salt$hash",
                PasswordError::MalformedHash("iterations is not a number"),
            ),
            (
                "pbkdf2_sha256$1000$$hash",
                PasswordError::MalformedHash("empty salt"),
            ),
        ];
        for (encoded, expected) in cases {
            assert_eq!(
                verify_password(b"pw", encoded),
                Err(expected),
                "hash {encoded:?}"
            );
        }
        let bad_hashes = [
            "",
            "hash",
            // 31 bytes, 33 bytes, no padding, non-zero unused bits
            "XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCQ==",
            "XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXkA",
            "XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXk",
            "XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXl=",
            "XHfRVmyE=RTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXk=",
            "XHfRVmyEZRTCcSbqGP00JKv0fRwYHK0ogjPZdSJxCXk-",
        ];
        for hash in bad_hashes {
            let encoded = format!("pbkdf2_sha256$1000$salt${hash}");
            assert_eq!(
                verify_password(b"pw", &encoded),
                Err(PasswordError::MalformedHash(
                    "HASH is not base64 of 32 bytes"
                )),
                "hash {hash:?}"
            );
        }
        assert_eq!(
            check_format(&format!("pbkdf2_sha256$1000$salt${good_hash}")),
            Ok(())
        );
    }

    #[test]
    fn errors_never_echo_the_input() {
        let secret_looking = "pbkdf2_sha256$1000$SALTSALT$NOTBASE64!!";
        let message = check_format(secret_looking).expect_err("malformed");
        assert!(
            !message.contains("SALTSALT") && !message.contains("NOTBASE64"),
            "{message}"
        );
        let message = check_totp_secret("HUNTER2HUNTER2HUNTER2!").expect_err("bad secret");
        assert!(!message.contains("HUNTER"), "{message}");
        let message = check_format("supersecretpassword").expect_err("malformed");
        assert!(!message.contains("supersecret"), "{message}");
    }

    #[test]
    fn garbage_never_panics() {
        let garbage = [
            "",
            "$",
            "$$$",
            "$$$$",
            "$$$$$",
            "pbkdf2_sha256$",
            "pbkdf2_sha256$$$",
            "pbkdf2_sha256$1000$$",
            "pbkdf2_sha256$1000$s$",
            "pbkdf2_sha256$1000$s$=",
            "pbkdf2_sha256$1000$s$====",
            "pbkdf2_sha256$1000$s$A===",
            "pbkdf2_sha256$1000$s$AA==",
            "pbkdf2_sha256$-1$s$AA==",
            "pbkdf2_sha256$١٠٠٠$s$AA==",
            "\u{0}\u{0}",
            "é$é$é$é",
            "=",
            "========",
            "A",
            "AB",
            "ABC=",
            "AAAAAAAA=",
            "a b c",
            "  ",
            "GEZDGNBVGY3TQOJQ====",
            "GEZDGNBVGY3TQOJQ=GEZDGNBVGY3TQOJQ",
            "\u{1F600}\u{1F600}\u{1F600}",
        ];
        for text in garbage {
            let _ = check_format(text);
            let _ = verify_password(text.as_bytes(), text);
            let _ = check_totp_secret(text);
            let _ = totp_code(text, 0);
            let _ = totp_code(text, i64::MIN);
            let _ = totp_code(text, i64::MAX);
            let _ = verify_totp(text, text, 59, None);
            let _ = verify_totp(RFC_SECRET, text, i64::MAX, Some(i64::MAX));
            let _ = decode_base64(text);
            let _ = decode_base32(text);
        }
        let long = "A".repeat(100_000);
        assert!(
            check_totp_secret(&long).is_err(),
            "a huge secret is refused"
        );
        let _ = check_format(&long);
    }

    #[test]
    fn base64_matches_python_b64encode() {
        assert_eq!(encode_base64(b""), "");
        assert_eq!(encode_base64(b"f"), "Zg==");
        assert_eq!(encode_base64(b"fo"), "Zm8=");
        assert_eq!(encode_base64(b"foo"), "Zm9v");
        assert_eq!(encode_base64(b"foob"), "Zm9vYg==");
        assert_eq!(encode_base64(&[0xfb, 0xff]), "+/8=");
        for len in 0..40u8 {
            let bytes: Vec<u8> = (0..len)
                .map(|i| i.wrapping_mul(97).wrapping_add(len))
                .collect();
            assert_eq!(
                decode_base64(&encode_base64(&bytes)),
                Some(bytes),
                "length {len}"
            );
        }
    }

    #[test]
    fn base32_matches_rfc4648() {
        // RFC 4648 §10 test vectors, with and without padding.
        let vectors = [
            ("", ""),
            ("f", "MY======"),
            ("fo", "MZXQ===="),
            ("foo", "MZXW6==="),
            ("foob", "MZXW6YQ="),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI======"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(
                decode_base32(encoded).as_deref(),
                Ok(plain.as_bytes()),
                "{encoded}"
            );
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(
                decode_base32(unpadded).as_deref(),
                Ok(plain.as_bytes()),
                "{unpadded}"
            );
            assert_eq!(encode_base32(plain.as_bytes()), unpadded);
        }
        assert_eq!(
            decode_base32("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ").as_deref(),
            Ok(&b"12345678901234567890"[..]),
            "spaces are ignored"
        );
    }

    #[test]
    fn bad_base32_is_refused() {
        for bad in [
            "gezdgnbvgy3tqojqgezdgnbvgy3tqojq", // lower case
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1", // 1 is not base32
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ8",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQA", // 33 symbols: 1 left over
            "GEZDGNBVGY3TQOJQ=GEZDGNBVGY3TQOJQ", // padding in the middle
            "MZXW6YQ==",                         // too much padding
            "MZXW6===A",
            "GEZDGNBVGY3TQOJQ\tGEZDGNBVGY3TQOJQ",
        ] {
            assert!(
                matches!(totp_code(bad, 59), Err(PasswordError::BadTotpSecret(_))),
                "{bad:?} must be refused"
            );
            assert!(
                check_totp_secret(bad).is_err(),
                "{bad:?} must fail the policy check"
            );
        }
        assert_eq!(
            totp_code("GEZDGNBVGY3TQOJQG", 59),
            Err(PasswordError::BadTotpSecret("wrong length for base32"))
        );
        assert_eq!(
            totp_code("GEZDGNBVGY3TQOI=", 59),
            Err(PasswordError::BadTotpSecret(
                "shorter than 80 bits (16 base32 characters)"
            )),
            "9 bytes is too short"
        );
        assert_eq!(
            check_totp_secret("GEZDGNBVGY3TQOJQ"),
            Ok(()),
            "80 bits is enough"
        );
    }

    #[test]
    fn totp_matches_rfc6238_sha1_vectors() {
        let key = b"12345678901234567890";
        let vectors: [(i64, u32); 6] = [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ];
        for (time, eight) in vectors {
            let step = u64::try_from(time / 30).expect("positive");
            assert_eq!(hotp(key, step, 8), eight, "8 digits at {time}");
            assert_eq!(
                totp_code(RFC_SECRET, time),
                Ok(eight % 1_000_000),
                "6 digits at {time}"
            );
            let typed = format!("{:06}", eight % 1_000_000);
            assert_eq!(
                verify_totp(RFC_SECRET, &typed, time, None),
                Ok(Some(time / 30)),
                "{typed} accepted at {time}"
            );
        }
        assert_eq!(
            totp_code(RFC_SECRET, 1111111109),
            Ok(81804),
            "leading zero kept as number"
        );
        assert_eq!(
            verify_totp(RFC_SECRET, "081804", 1111111109, None),
            Ok(Some(37037036))
        );
        assert_eq!(
            verify_totp(RFC_SECRET, "81804", 1111111109, None),
            Ok(None),
            "5 digits"
        );
    }

    #[test]
    fn totp_accepts_one_step_either_side_and_no_further() {
        let step = 1234567890 / 30;
        let code = format!("{:06}", totp_code(RFC_SECRET, 1234567890).expect("code"));
        let at_step = |s: i64| s * 30 + 7;
        assert_eq!(
            verify_totp(RFC_SECRET, &code, at_step(step - 1), None),
            Ok(Some(step))
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &code, at_step(step), None),
            Ok(Some(step))
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &code, at_step(step + 1), None),
            Ok(Some(step))
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &code, at_step(step - 2), None),
            Ok(None)
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &code, at_step(step + 2), None),
            Ok(None)
        );
    }

    #[test]
    fn totp_refuses_a_replayed_or_older_step() {
        let time = 2000000000;
        let step = time / 30;
        let code = format!("{:06}", totp_code(RFC_SECRET, time).expect("code"));
        assert_eq!(
            verify_totp(RFC_SECRET, &code, time, Some(step - 1)),
            Ok(Some(step))
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &code, time, Some(step)),
            Ok(None),
            "replay"
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &code, time + 30, Some(step)),
            Ok(None),
            "replay later"
        );
        assert_eq!(
            verify_totp(RFC_SECRET, &code, time, Some(step + 1)),
            Ok(None),
            "older step"
        );
        let next = format!("{:06}", totp_code(RFC_SECRET, time + 30).expect("code"));
        assert_eq!(
            verify_totp(RFC_SECRET, &next, time, Some(step)),
            Ok(Some(step + 1))
        );
    }

    #[test]
    fn totp_code_input_is_lenient_on_spaces_only() {
        let time = 59;
        assert_eq!(verify_totp(RFC_SECRET, "287 082", time, None), Ok(Some(1)));
        assert_eq!(verify_totp(RFC_SECRET, " 287082 ", time, None), Ok(Some(1)));
        for wrong in [
            "",
            "28708",
            "2870822",
            "28708a",
            "-287082",
            "+287082",
            "２８７０８２",
            "287082\n",
        ] {
            assert_eq!(
                verify_totp(RFC_SECRET, wrong, time, None),
                Ok(None),
                "{wrong:?}"
            );
        }
    }

    #[test]
    fn totp_refuses_times_before_the_epoch() {
        assert_eq!(
            totp_code(RFC_SECRET, -1),
            Err(PasswordError::TimeBeforeEpoch)
        );
        assert_eq!(
            verify_totp(RFC_SECRET, "000000", -1, None),
            Err(PasswordError::TimeBeforeEpoch)
        );
        // Step 0 has no step before it; that is not an error.
        let code = format!("{:06}", totp_code(RFC_SECRET, 0).expect("code"));
        assert_eq!(verify_totp(RFC_SECRET, &code, 0, None), Ok(Some(0)));
    }

    #[test]
    fn a_bad_secret_is_an_error_even_with_a_bad_code() {
        assert!(matches!(
            verify_totp("not base32", "abc", 59, None),
            Err(PasswordError::BadTotpSecret(_))
        ));
    }

    #[test]
    fn generated_totp_secrets_are_160_bit_base32_and_usable() {
        let secret = generate_totp_secret().expect("secret");
        assert_eq!(secret.len(), 32, "{secret}");
        assert_eq!(check_totp_secret(&secret), Ok(()));
        assert_eq!(decode_base32(&secret).map(|k| k.len()), Ok(20));
        assert!(totp_code(&secret, 1_700_000_000).is_ok());
        assert_ne!(
            secret,
            generate_totp_secret().expect("secret"),
            "fresh each time"
        );
    }
}
