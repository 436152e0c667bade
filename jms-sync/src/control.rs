//! The server's orders for a bastion, as its signed control poll
//! (`GET` [`crate::paths::CONTROL`]) answers them: `{"orders": [...]}`,
//! each order tagged by `kind`. The server queues [`Order`]s; the bastion
//! reads them with [`parse_orders`], skipping one it does not know (a
//! newer server) without losing the others.

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
}

/// The control poll's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAnswer {
    pub orders: Vec<Order>,
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
                Order::Kill { .. } | Order::Watch { .. } | Order::Unlock { .. } => {}
            }
        }
        let answer = serde_json::to_value(ControlAnswer {
            orders: orders.clone(),
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
}
