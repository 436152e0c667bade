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
}
