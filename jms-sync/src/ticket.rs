//! One-time web tickets: what the server's SSH client to a bastion types as
//! the engineer's password when the web portal opens a terminal or a file
//! manager for her. The web login already did the password and the second
//! factor; the ticket carries that to the bastion for one connection.
//!
//! A ticket is signed by the server's Ed25519 key (the key the bastion
//! pinned at enrollment for bundles) and bound to the user, the bastion
//! (its id from enrollment), the target (asset and account), the browser's
//! address and a random nonce; it is valid for at most [`MAX_VALIDITY_SECS`]
//! and jms-agentd accepts each nonce once. The text form is
//! `jmst1.<base64url(JSON claims)>.<base64url(signature)>`; the signature
//! covers [`SIGN_CONTEXT`] and the claims' bytes exactly as sent.

use std::net::IpAddr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::bundle::hex;

/// What every ticket's text starts with (a password never does by chance:
/// the bastion tries a password that starts with it as a ticket only).
pub const PREFIX: &str = "jmst1.";
/// The longest a ticket may live.
pub const MAX_VALIDITY_SECS: i64 = 60;
/// How far a bastion's clock may be behind the server's (a ticket issued
/// "in the future" by at most this is accepted).
pub const CLOCK_SKEW_SECS: i64 = 30;
/// The longest ticket text a bastion reads.
pub const MAX_TEXT: usize = 2048;
/// Domain separation of the signature.
pub const SIGN_CONTEXT: &[u8] = b"jms web ticket v1\n";
/// Longest user, asset or account name in a ticket.
const MAX_NAME: usize = 256;

/// A ticket's claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ticket {
    /// The engineer (jms user name).
    pub user: String,
    /// The bastion it is for (its enrollment id).
    pub bastion_id: i64,
    /// The target: asset name and account name (as granted).
    pub asset: String,
    pub account: String,
    /// The browser's address, as the server saw it (the session's source
    /// in the audit).
    pub client: IpAddr,
    /// 32 hex digits of randomness; used once.
    pub nonce: String,
    /// Unix seconds.
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Why a ticket was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("not a ticket")]
    NotATicket,
    #[error("malformed ticket: {0}")]
    Malformed(&'static str),
    #[error("bad ticket signature")]
    BadSignature,
    #[error("ticket expired")]
    Expired,
    #[error("ticket not valid yet")]
    NotYetValid,
    #[error("ticket lives longer than {MAX_VALIDITY_SECS} s")]
    TooLong,
    #[error("ticket for another user")]
    OtherUser,
    #[error("ticket for another bastion")]
    OtherBastion,
    #[error("ticket already used")]
    Replayed,
    #[error("too many tickets in flight")]
    TooMany,
}

impl Ticket {
    /// A fresh ticket issued at `now` (Unix seconds), valid
    /// [`MAX_VALIDITY_SECS`].
    pub fn new(
        user: &str,
        bastion_id: i64,
        asset: &str,
        account: &str,
        client: IpAddr,
        now: i64,
    ) -> Ticket {
        let mut nonce = [0u8; 16];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("system randomness");
        Ticket {
            user: user.into(),
            bastion_id,
            asset: asset.into(),
            account: account.into(),
            client,
            nonce: hex(&nonce),
            issued_at: now,
            expires_at: now + MAX_VALIDITY_SECS,
        }
    }

    /// The signed text form (what is typed as the password).
    pub fn sign(&self, key: &Ed25519KeyPair) -> String {
        let claims = serde_json::to_vec(self).expect("a ticket serialises");
        let signature = key.sign(&message(&claims));
        format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(&claims),
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    /// Checks `text` against the server key the bastion pinned, the user
    /// who logs in and this bastion's id, at `now`. Whether the nonce was
    /// used before is the caller's to check (it keeps the used ones).
    pub fn verify(
        text: &str,
        pinned: &[u8],
        user: &str,
        bastion_id: i64,
        now: i64,
    ) -> Result<Ticket, TicketError> {
        let Some(rest) = text.strip_prefix(PREFIX) else {
            return Err(TicketError::NotATicket);
        };
        if text.len() > MAX_TEXT {
            return Err(TicketError::Malformed("too long"));
        }
        let (claims, signature) = rest
            .split_once('.')
            .ok_or(TicketError::Malformed("no signature"))?;
        let claims = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| TicketError::Malformed("claims are not base64url"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TicketError::Malformed("signature is not base64url"))?;
        UnparsedPublicKey::new(&ED25519, pinned)
            .verify(&message(&claims), &signature)
            .map_err(|_| TicketError::BadSignature)?;
        let ticket: Ticket = serde_json::from_slice(&claims)
            .map_err(|_| TicketError::Malformed("claims are not a ticket"))?;
        ticket.check_shape()?;
        if ticket.expires_at - ticket.issued_at > MAX_VALIDITY_SECS {
            return Err(TicketError::TooLong);
        }
        if now >= ticket.expires_at {
            return Err(TicketError::Expired);
        }
        if ticket.issued_at > now + CLOCK_SKEW_SECS {
            return Err(TicketError::NotYetValid);
        }
        if ticket.user != user {
            return Err(TicketError::OtherUser);
        }
        if ticket.bastion_id != bastion_id {
            return Err(TicketError::OtherBastion);
        }
        Ok(ticket)
    }

    fn check_shape(&self) -> Result<(), TicketError> {
        let name_ok =
            |n: &str| !n.is_empty() && n.len() <= MAX_NAME && !n.chars().any(|c| c.is_control());
        if !name_ok(&self.user) || !name_ok(&self.asset) || !name_ok(&self.account) {
            return Err(TicketError::Malformed("bad name"));
        }
        if self.nonce.len() != 32 || !self.nonce.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(TicketError::Malformed("bad nonce"));
        }
        Ok(())
    }

    /// The session's source for the audit: the browser's address, with
    /// the real peer (the server's connection) noted.
    pub fn audit_client(&self, peer: Option<&str>) -> String {
        format!("{} (web via {})", self.client, peer.unwrap_or("-"))
    }
}

fn message(claims: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(SIGN_CONTEXT.len() + claims.len());
    message.extend_from_slice(SIGN_CONTEXT);
    message.extend_from_slice(claims);
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::KeyPair;

    fn key() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn ticket(now: i64) -> Ticket {
        Ticket::new(
            "alice",
            3,
            "web01",
            "root",
            "198.51.100.7".parse().unwrap(),
            now,
        )
    }

    #[test]
    fn a_signed_ticket_verifies_for_its_user_and_bastion_only() {
        let key = key();
        let pinned = key.public_key().as_ref();
        let t = ticket(1000);
        let text = t.sign(&key);
        assert!(text.starts_with(PREFIX) && text.len() < MAX_TEXT);
        assert_eq!(Ticket::verify(&text, pinned, "alice", 3, 1010), Ok(t));
        assert_eq!(
            Ticket::verify(&text, pinned, "bob", 3, 1010),
            Err(TicketError::OtherUser)
        );
        assert_eq!(
            Ticket::verify(&text, pinned, "alice", 4, 1010),
            Err(TicketError::OtherBastion)
        );
        assert_eq!(
            Ticket::verify(&text, pinned, "alice", 3, 1060),
            Err(TicketError::Expired)
        );
        assert_eq!(
            Ticket::verify(&text, pinned, "alice", 3, 900),
            Err(TicketError::NotYetValid)
        );
        let other = key_public(&self::key());
        assert_eq!(
            Ticket::verify(&text, &other, "alice", 3, 1010),
            Err(TicketError::BadSignature)
        );
        assert_eq!(
            Ticket::verify("hunter2", pinned, "alice", 3, 1010),
            Err(TicketError::NotATicket)
        );
    }

    fn key_public(key: &Ed25519KeyPair) -> Vec<u8> {
        key.public_key().as_ref().to_vec()
    }

    #[test]
    fn tampered_or_overlong_tickets_are_refused() {
        let key = key();
        let pinned = key_public(&key);
        let mut t = ticket(1000);
        // Claims changed after signing: the signature no longer matches.
        let text = t.sign(&key);
        let (head, sig) = text.rsplit_once('.').unwrap();
        t.asset = "db01".into();
        let forged_claims = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&t).unwrap());
        let forged = format!("{PREFIX}{forged_claims}.{sig}");
        assert_ne!(head, forged_claims);
        assert_eq!(
            Ticket::verify(&forged, &pinned, "alice", 3, 1010),
            Err(TicketError::BadSignature)
        );
        // A validity beyond the limit, even signed, is refused.
        let mut long = ticket(1000);
        long.expires_at = 1000 + 3600;
        assert_eq!(
            Ticket::verify(&long.sign(&key), &pinned, "alice", 3, 1010),
            Err(TicketError::TooLong)
        );
        for junk in [
            PREFIX.to_string(),
            format!("{PREFIX}!!.!!"),
            format!("{PREFIX}{}", "A".repeat(5000)),
        ] {
            assert!(matches!(
                Ticket::verify(&junk, &pinned, "alice", 3, 1010),
                Err(TicketError::Malformed(_))
            ));
        }
    }
}
