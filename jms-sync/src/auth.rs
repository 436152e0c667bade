//! The signed-request scheme of the sync API: the headers a bastion signs
//! its requests with and the server answers in, and the rules on their
//! values (nonce length, clock skew). What is signed is
//! [`crate::bundle::request_message`] (request) and
//! [`crate::bundle::answer_message`] (answer).

use ring::rand::{SecureRandom, SystemRandom};

/// Header names (lower case, as HTTP/2 and the `http` crate want them).
pub mod headers {
    /// The bastion's id (its enrollment number).
    pub const BASTION: &str = "x-jms-bastion";
    /// Unix seconds when the bastion signed the request.
    pub const TIMESTAMP: &str = "x-jms-timestamp";
    /// A fresh random hex string per request ([`super::new_nonce`]).
    pub const NONCE: &str = "x-jms-nonce";
    /// The bastion's Ed25519 signature of the request (hex).
    pub const SIGNATURE: &str = "x-jms-signature";
    /// On every answer to an authenticated request: the server's
    /// signature (hex) of the answer.
    pub const ANSWER_SIGNATURE: &str = "x-jms-answer-signature";
    /// On a bundle answer (304 included): the policy version it talks about.
    pub const VERSION: &str = "x-jms-policy-version";
    /// On a bundle answer: `full` or `delta`.
    pub const BUNDLE_KIND: &str = "x-jms-bundle-kind";
    /// On a delta answer: the version it applies to.
    pub const FROM_VERSION: &str = "x-jms-from-version";
}

/// Most seconds a request's timestamp may be from the server's clock;
/// the server remembers nonces for twice that.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Random bytes in a nonce the bastion makes.
pub const NONCE_BYTES: usize = 16;

/// Hex digits a nonce the server accepts may have.
pub const NONCE_HEX_LEN: std::ops::RangeInclusive<usize> = 16..=128;

/// A fresh nonce: [`NONCE_BYTES`] random bytes in hex.
pub fn new_nonce() -> String {
    let mut nonce = [0u8; NONCE_BYTES];
    SystemRandom::new().fill(&mut nonce).expect("system random");
    crate::bundle::hex(&nonce)
}

/// Whether the server accepts `nonce`'s form: hex, of a length in
/// [`NONCE_HEX_LEN`].
pub fn nonce_ok(nonce: &str) -> bool {
    NONCE_HEX_LEN.contains(&nonce.len()) && crate::bundle::unhex(nonce).is_some()
}

/// Whether a request signed at `timestamp` is fresh at `now` (both Unix
/// seconds): within [`CLOCK_SKEW_SECS`] either way.
pub fn timestamp_ok(timestamp: i64, now: i64) -> bool {
    (now - timestamp).abs() <= CLOCK_SKEW_SECS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bastions_nonce_is_one_the_server_accepts() {
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert!(nonce_ok(&a));
        assert!(!nonce_ok("abc"), "too short");
        assert!(!nonce_ok(&"z".repeat(32)), "not hex");
        assert!(!nonce_ok(&"a".repeat(130)), "too long");
    }

    #[test]
    fn timestamps_are_fresh_within_the_skew() {
        assert!(timestamp_ok(1000, 1000 + CLOCK_SKEW_SECS));
        assert!(timestamp_ok(1000 + CLOCK_SKEW_SECS, 1000));
        assert!(!timestamp_ok(1000, 1001 + CLOCK_SKEW_SECS));
    }
}
