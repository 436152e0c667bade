//! Enrollment (`POST` [`crate::paths::ENROLL`], the only unsigned sync
//! request): the bastion's one-time token, name and Ed25519 public key;
//! the answer names the bastion's id and the server's key it pins.

use serde::{Deserialize, Serialize};

/// What a bastion sends to enroll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    pub bastion_name: String,
    /// Hex of the bastion's Ed25519 public key.
    pub public_key: String,
    /// The bastion's sshd host public keys (OpenSSH one-line form): the
    /// server's SSH client to the bastion (web terminal, file manager)
    /// accepts these and no other ([`check_ssh_host_key`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_host_keys: Vec<String>,
    /// Where the server reaches the bastion's sshd, `host:port`; none: the
    /// address the bastion's requests come from, port 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh_address: Option<String>,
}

/// The most sshd host keys a bastion may send.
pub const MAX_SSH_HOST_KEYS: usize = 8;
/// The longest host key line taken (an RSA 16384-bit key fits).
pub const MAX_SSH_HOST_KEY_LINE: usize = 4096;
/// The longest `ssh_address`.
pub const MAX_SSH_ADDRESS: usize = 255;

/// The host key types taken.
const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// Checks one host key line: `TYPE BASE64 [comment]`, a known type, at
/// most [`MAX_SSH_HOST_KEY_LINE`] printable characters. Gives the line
/// without its comment.
pub fn check_ssh_host_key(line: &str) -> Result<String, String> {
    if line.len() > MAX_SSH_HOST_KEY_LINE || line.chars().any(|c| c.is_control()) {
        return Err("an ssh host key line is too long or not printable".into());
    }
    let mut words = line.split_whitespace();
    let (Some(kind), Some(blob)) = (words.next(), words.next()) else {
        return Err("an ssh host key is `TYPE BASE64 [comment]`".into());
    };
    if !HOST_KEY_TYPES.contains(&kind) {
        return Err(format!("unknown ssh host key type `{kind}`"));
    }
    let base64 = |c: char| c.is_ascii_alphanumeric() || "+/=".contains(c);
    if blob.len() < 16 || !blob.chars().all(base64) {
        return Err("an ssh host key's key is not base64".into());
    }
    Ok(format!("{kind} {blob}"))
}

/// Checks `host:port` (a name or an address; IPv6 in brackets).
pub fn check_ssh_address(address: &str) -> Result<(), String> {
    let bad = || format!("ssh_address: expected host:port, got {address:?}");
    if address.is_empty() || address.len() > MAX_SSH_ADDRESS {
        return Err(bad());
    }
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(bad)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:_".contains(c));
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// The server's answer to an enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub bastion_id: i64,
    /// Hex of the server's Ed25519 public key (bundles and answers are
    /// signed by it).
    pub server_public_key: String,
    /// [`crate::bundle::server_id`] of that key.
    pub server_id: String,
    /// Over TLS: the bastion's client certificate (PEM), issued by the
    /// server's CA for the bastion's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
}

/// The server's answer to a certificate renewal (`POST`
/// [`crate::paths::CERTIFICATE`], signed, over mutual TLS with the current
/// certificate).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRenewed {
    /// The new client certificate (PEM) for the bastion's public key.
    pub client_cert: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enrollment_messages_round_trip() {
        let request = EnrollRequest {
            token: "t".into(),
            bastion_name: "b1".into(),
            public_key: "ab".into(),
            ssh_host_keys: Vec::new(),
            ssh_address: None,
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"token":"t","bastion_name":"b1","public_key":"ab"}"#
        );
        assert_eq!(
            serde_json::from_str::<EnrollRequest>(&text).unwrap(),
            request
        );
        let answer = Enrolled {
            bastion_id: 3,
            server_public_key: "cd".into(),
            server_id: "id".into(),
            client_cert: Some("PEM".into()),
        };
        let text = serde_json::to_string(&answer).unwrap();
        assert_eq!(serde_json::from_str::<Enrolled>(&text).unwrap(), answer);
    }

    #[test]
    fn host_keys_and_addresses_are_checked() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        assert_eq!(check_ssh_host_key(&format!("{key} root@b1")).unwrap(), key);
        for bad in [
            "ssh-dss AAAAB3NzaC1kc3MAAACBAP",
            "ssh-ed25519",
            "ssh-ed25519 not*base64*at*all*here",
            &format!("ssh-ed25519 {}", "A".repeat(5000)),
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\nAAAA",
        ] {
            assert!(check_ssh_host_key(bad).is_err(), "{bad}");
        }
        for good in ["b1.example:22", "127.0.0.1:2222", "[::1]:22"] {
            assert!(check_ssh_address(good).is_ok(), "{good}");
        }
        for bad in ["b1", "b1:0", "b1:99999", ":22", "b 1:22", "b1:22/x"] {
            assert!(check_ssh_address(bad).is_err(), "{bad}");
        }
    }
}
