//! New secrets for account jobs, made on the server (the vault's home):
//! random passwords ([`password`]) and Ed25519 key pairs in OpenSSH's
//! format ([`ed25519_pair`]), and the public key line of a vaulted
//! OpenSSH private key ([`public_key_of`]).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};

use jms_core::model::Secret;

const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const DIGITS: &[u8] = b"23456789";
/// Symbols no shell, sudoers or chpasswd line treats specially when quoted
/// (and none is `:`, chpasswd's separator).
const SYMBOLS: &[u8] = b"%+-./=@^_~";

/// Which character classes a password holds (each at least once).
#[derive(Debug, Clone, Copy)]
pub struct Classes {
    pub upper: bool,
    pub digits: bool,
    pub symbols: bool,
}

fn random_below(rng: &SystemRandom, n: usize) -> usize {
    // Rejection sampling: no modulo bias.
    let n32 = n as u32;
    let zone = u32::MAX - (u32::MAX % n32);
    loop {
        let mut b = [0u8; 4];
        rng.fill(&mut b).expect("system random");
        let v = u32::from_le_bytes(b);
        if v < zone {
            return (v % n32) as usize;
        }
    }
}

/// A random password of `length` (at least 8) characters: lower case
/// always, and one of each class asked for.
pub fn password(length: usize, classes: Classes) -> Secret {
    let rng = SystemRandom::new();
    let length = length.max(8);
    let mut sets: Vec<&[u8]> = vec![LOWER];
    if classes.upper {
        sets.push(UPPER);
    }
    if classes.digits {
        sets.push(DIGITS);
    }
    if classes.symbols {
        sets.push(SYMBOLS);
    }
    let all: Vec<u8> = sets.concat();
    let mut chars: Vec<u8> = sets
        .iter()
        .map(|set| set[random_below(&rng, set.len())])
        .collect();
    while chars.len() < length {
        chars.push(all[random_below(&rng, all.len())]);
    }
    // Fisher–Yates: the required characters are anywhere.
    for i in (1..chars.len()).rev() {
        chars.swap(i, random_below(&rng, i + 1));
    }
    Secret::new(String::from_utf8(chars).expect("ASCII"))
}

/// Standard alphabet, decoding with or without padding.
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

fn base64(data: &[u8]) -> String {
    BASE64.encode(data)
}

/// Standard base64, padded or not; `None` when it is not base64.
fn unbase64(text: &str) -> Option<Vec<u8>> {
    BASE64_LENIENT.decode(text).ok()
}

fn put_string(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(data);
}

fn public_blob(public: &[u8]) -> Vec<u8> {
    let mut blob = Vec::new();
    put_string(&mut blob, b"ssh-ed25519");
    put_string(&mut blob, public);
    blob
}

/// A new Ed25519 key pair: the private key in OpenSSH's format
/// (unencrypted, as the vault holds keys) and the public key line.
pub fn ed25519_pair(comment: &str) -> (Secret, String) {
    let rng = SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("system random");
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key ring made");
    let public = pair.public_key().as_ref().to_vec();
    // ring's PKCS#8 v2 document holds the 32-byte seed at offset 16.
    let seed = &pkcs8.as_ref()[16..48];
    let blob = public_blob(&public);
    let mut check = [0u8; 4];
    rng.fill(&mut check).expect("system random");
    let mut private = Vec::new();
    private.extend_from_slice(&check);
    private.extend_from_slice(&check);
    put_string(&mut private, b"ssh-ed25519");
    put_string(&mut private, &public);
    let mut both = seed.to_vec();
    both.extend_from_slice(&public);
    put_string(&mut private, &both);
    put_string(&mut private, comment.as_bytes());
    let mut pad = 1u8;
    while private.len() % 8 != 0 {
        private.push(pad);
        pad += 1;
    }
    let mut body = b"openssh-key-v1\0".to_vec();
    put_string(&mut body, b"none");
    put_string(&mut body, b"none");
    put_string(&mut body, b"");
    body.extend_from_slice(&1u32.to_be_bytes());
    put_string(&mut body, &blob);
    put_string(&mut body, &private);
    let encoded = base64(&body);
    let mut text = String::from("-----BEGIN OPENSSH PRIVATE KEY-----\n");
    for line in encoded.as_bytes().chunks(70) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str("-----END OPENSSH PRIVATE KEY-----\n");
    let line = format!("ssh-ed25519 {} {comment}", base64(&blob));
    (Secret::new(text), line)
}

fn take_string<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    if data.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes(data[..4].try_into().ok()?) as usize;
    let rest = &data[4..];
    if rest.len() < len {
        return None;
    }
    let (value, tail) = rest.split_at(len);
    *data = tail;
    Some(value)
}

/// The public key line (`type base64`) of an OpenSSH private key; `None`
/// when the text is not one.
pub fn public_key_of(private: &Secret) -> Option<String> {
    let text = private.expose();
    let start = text.find("-----BEGIN OPENSSH PRIVATE KEY-----")?;
    let end = text.find("-----END OPENSSH PRIVATE KEY-----")?;
    let body: String = text[start + 35..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let data = unbase64(&body)?;
    let mut rest = data.strip_prefix(b"openssh-key-v1\0".as_slice())?;
    take_string(&mut rest)?; // cipher
    take_string(&mut rest)?; // kdf
    take_string(&mut rest)?; // kdf options
    if rest.len() < 4 {
        return None;
    }
    rest = &rest[4..];
    let blob = take_string(&mut rest)?;
    let mut b = blob;
    let kind = std::str::from_utf8(take_string(&mut b)?).ok()?;
    Some(format!("{kind} {}", base64(blob)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_have_the_length_and_every_class_asked_for() {
        let classes = Classes {
            upper: true,
            digits: true,
            symbols: true,
        };
        for _ in 0..50 {
            let p = password(16, classes);
            let p = p.expose();
            assert_eq!(p.len(), 16);
            assert!(p.bytes().any(|c| UPPER.contains(&c)), "{p}");
            assert!(p.bytes().any(|c| DIGITS.contains(&c)), "{p}");
            assert!(p.bytes().any(|c| SYMBOLS.contains(&c)), "{p}");
            assert!(!p.contains(':') && !p.contains('\''));
        }
        assert_ne!(
            password(16, classes).expose(),
            password(16, classes).expose()
        );
    }

    #[test]
    fn a_generated_key_is_read_by_ssh_keygen_and_gives_its_public_line() {
        let (private, public) = ed25519_pair("deploy@web01");
        assert_eq!(
            public_key_of(&private).as_deref(),
            public.rsplit_once(' ').map(|p| p.0)
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, private.expose()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let out = std::process::Command::new("ssh-keygen")
            .arg("-y")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("ssh-keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let derived = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            derived.split_whitespace().nth(1),
            public.split_whitespace().nth(1)
        );
        assert_eq!(unbase64(&base64(b"abcde")).unwrap(), b"abcde");
    }
}
