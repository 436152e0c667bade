//! The server's orders for a bastion, as its signed control poll
//! (`GET` [`crate::paths::CONTROL`]) answers them: `{"orders": [...]}`,
//! each order tagged by `kind`. The server queues [`Order`]s; the bastion
//! reads them with [`parse_orders`], skipping one it does not know (a
//! newer server) without losing the others.
//!
//! An answer with [`Order::Job`]s carries their secrets in
//! [`ControlAnswer::secrets`]: a [`crate::job::SealedSecrets`] map sealed
//! ([`crate::bundle::seal_for`]) to the fresh X25519 key the poll sent in
//! its signed query (`transport=`), opened with [`open_secrets`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One order for a bastion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Order {
    /// End a session (`jmsctl session kill`).
    Kill {
        session: String,
        #[serde(default)]
        reason: String,
    },
    /// Stream a session's output to the server (a watcher came).
    Watch { session: String },
    /// Forget the user's failed logins and lockout (`jmsctl user unlock`).
    Unlock { user: String },
    /// Run an account job (push, verify, rotate) and report it.
    Job(Box<crate::job::JobOrder>),
}

/// The control poll's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAnswer {
    pub orders: Vec<Order>,
    /// Hex of the jobs' [`crate::job::SealedSecrets`], sealed to the
    /// poll's transport key; absent when no job came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<String>,
}

/// Opens an answer's job secrets with the poll's transport key (none
/// when the answer has none).
pub fn open_secrets(
    answer: &Value,
    key: crate::bundle::TransportKey,
) -> Result<crate::job::SealedSecrets, String> {
    let Some(hex) = answer["secrets"].as_str() else {
        return Ok(Default::default());
    };
    let sealed = crate::bundle::unhex(hex).ok_or("job secrets: not hex")?;
    let plain = key.open(&sealed).map_err(|e| format!("job secrets: {e}"))?;
    serde_json::from_slice(&plain).map_err(|e| format!("job secrets: {e}"))
}

/// Reads a control answer; an order of an unknown kind or shape is
/// skipped (a newer server), the others are kept.
pub fn parse_orders(answer: &Value) -> Vec<Order> {
    let Some(orders) = answer["orders"].as_array() else {
        return Vec::new();
    };
    orders
        .iter()
        .filter_map(|o| Order::deserialize(o).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_order_round_trips_through_the_answer() {
        let orders = vec![
            Order::Kill {
                session: "s1".into(),
                reason: "policy".into(),
            },
            Order::Watch {
                session: "s2".into(),
            },
            Order::Unlock {
                user: "alice".into(),
            },
        ];
        // A kind added without a case here fails to compile.
        for order in &orders {
            match order {
                Order::Kill { .. } | Order::Watch { .. } | Order::Unlock { .. } | Order::Job(_) => {
                }
            }
        }
        let answer = serde_json::to_value(ControlAnswer {
            orders: orders.clone(),
            secrets: None,
        })
        .unwrap();
        assert_eq!(
            answer,
            json!({"orders": [
                {"kind": "kill", "session": "s1", "reason": "policy"},
                {"kind": "watch", "session": "s2"},
                {"kind": "unlock", "user": "alice"},
            ]})
        );
        assert_eq!(parse_orders(&answer), orders);
    }

    #[test]
    fn orders_are_read_and_unknown_ones_skipped() {
        let answer = json!({"orders": [
            {"kind": "kill", "session": "s1", "reason": "policy"},
            {"kind": "watch", "session": "s2"},
            {"kind": "reboot", "session": "s3"},
            {"kind": "kill"},
            {"kind": "unlock", "user": "alice"},
            {"kind": "unlock"},
            {"kind": "kill", "session": "s4"},
        ]});
        assert_eq!(
            parse_orders(&answer),
            vec![
                Order::Kill {
                    session: "s1".into(),
                    reason: "policy".into()
                },
                Order::Watch {
                    session: "s2".into()
                },
                Order::Unlock {
                    user: "alice".into()
                },
                Order::Kill {
                    session: "s4".into(),
                    reason: String::new()
                },
            ]
        );
        assert!(parse_orders(&json!({})).is_empty());
    }

    #[test]
    fn job_secrets_open_only_with_the_polls_key() {
        use crate::bundle::{hex, seal_for, unhex, TransportKey};
        use crate::job::{JobSecrets, SealedSecrets};
        use jms_core::model::Secret;
        let key = TransportKey::generate();
        let mut secrets = SealedSecrets::new();
        secrets.insert(
            "j1".into(),
            JobSecrets {
                privileged: Some(Secret::new("root-pw-123")),
                current: None,
                new: Some(Secret::new("new-pw-456")),
            },
        );
        let plain = serde_json::to_vec(&secrets).unwrap();
        let sealed = seal_for(&unhex(&key.public_hex()).unwrap(), &plain).unwrap();
        let answer = serde_json::to_value(ControlAnswer {
            orders: vec![],
            secrets: Some(hex(&sealed)),
        })
        .unwrap();
        let text = answer.to_string();
        assert!(
            !text.contains("root-pw") && !text.contains("new-pw"),
            "{text}"
        );
        assert!(open_secrets(&answer, TransportKey::generate()).is_err());
        let opened = open_secrets(&answer, key).unwrap();
        assert_eq!(opened["j1"].new.as_ref().unwrap().expose(), "new-pw-456");
        assert!(
            open_secrets(&json!({"orders": []}), TransportKey::generate())
                .unwrap()
                .is_empty()
        );
    }
}
