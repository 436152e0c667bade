//! Share codes and the share/join audit fields, made and checked by the
//! monitor (`session::share` is the worker's side).
//!
//! A code is 16 symbols of a 32-symbol alphabet (80 bits) from the OS
//! random source (no code at all when it fails); a user who typed
//! `JOIN_ATTEMPTS` wrong codes within `JOIN_WINDOW` is refused until the
//! window passes (`monitor::live`).

use crate::daemon::events::Scope;
use crate::daemon::live_session::LiveSession;

/// Code symbols: no 0/O, 1/I. 32 of them: 5 bits each, unbiased from a byte.
const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Symbols in a code: 16 × 5 = 80 bits.
const CODE_SYMBOLS: usize = 16;
/// Symbols between dashes.
const GROUP: usize = 4;

/// A code as typed (any case, with or without the dash) in its one form.
pub fn normalize_code(typed: &str) -> Option<String> {
    let symbols: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if symbols.len() != CODE_SYMBOLS || !symbols.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    Some(grouped(&symbols))
}

/// `ABCD-EFGH-…`.
fn grouped(symbols: &str) -> String {
    symbols
        .as_bytes()
        .chunks(GROUP)
        .map(|g| String::from_utf8_lossy(g).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// A new code from the OS random source; `None` when it fails (never a
/// weaker fallback).
pub fn new_code() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; CODE_SYMBOLS];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    let symbols: String = bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect();
    Some(grouped(&symbols))
}

pub fn scope_of(live: &LiveSession) -> Scope {
    Scope {
        session: live.id.clone(),
        user: live.user.clone(),
        asset: live.asset.clone(),
        account: live.account.clone(),
        username: None,
    }
}

pub fn mode(write: bool) -> &'static str {
    if write {
        "write"
    } else {
        "read"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_read_in_any_case_with_or_without_the_dash() {
        let code = new_code().expect("the OS random source works");
        assert_eq!(normalize_code(&code).as_deref(), Some(code.as_str()));
        assert_eq!(
            normalize_code("abcd efgh jkmn pqrs").as_deref(),
            Some("ABCD-EFGH-JKMN-PQRS")
        );
        assert_eq!(
            normalize_code("ABCDEFGHJKMNPQRS").as_deref(),
            Some("ABCD-EFGH-JKMN-PQRS")
        );
        assert_eq!(
            normalize_code("ABCD-EFGH-JKMN-PQR0"),
            None,
            "0 is not a code symbol"
        );
        assert_eq!(
            normalize_code("ABCD-EFGH"),
            None,
            "the old 8-symbol codes are gone"
        );
        assert_eq!(normalize_code(""), None);
    }

    #[test]
    fn codes_carry_80_random_bits() {
        let codes: Vec<String> = (0..2000).map(|_| new_code().unwrap()).collect();
        for code in &codes {
            let symbols: Vec<u8> = code.bytes().filter(|b| *b != b'-').collect();
            assert_eq!(symbols.len() * 5, 80, "{code}: 16 symbols of 5 bits");
            assert!(symbols.iter().all(|b| ALPHABET.contains(b)), "{code}");
        }
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), codes.len(), "no code repeats");
        // Every symbol appears in every position (a fixed or narrowed
        // position would show here: 2000 draws, 32 symbols).
        for position in 0..CODE_SYMBOLS {
            let seen: std::collections::HashSet<u8> = codes
                .iter()
                .map(|c| c.bytes().filter(|b| *b != b'-').nth(position).unwrap())
                .collect();
            assert_eq!(seen.len(), ALPHABET.len(), "position {position}");
        }
    }
}
