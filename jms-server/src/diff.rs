//! What differs between two policy documents, entity by entity: the dry run
//! of `policy apply`, the operation log and the server's write path all
//! speak in these changes.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use jms_core::model::PolicyDocument;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::Kind;

/// Added, changed or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Add,
    Change,
    Remove,
}

/// One entity that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub op: Op,
    pub kind: Kind,
    /// Its name; accounts are `asset/account`, nodes their path.
    pub name: String,
    /// With `change`: the fields that differ (names only, never values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = match self.op {
            Op::Add => '+',
            Op::Change => '~',
            Op::Remove => '-',
        };
        write!(f, "{sign} {} {}", self.kind, self.name)?;
        if !self.fields.is_empty() {
            write!(f, " ({})", self.fields.join(", "))?;
        }
        Ok(())
    }
}

/// The entities of one kind, by name, in document order.
fn entities(doc: &PolicyDocument, kind: Kind) -> Vec<(String, Value)> {
    fn value<T: Serialize>(entity: &T) -> Value {
        serde_json::to_value(entity).expect("model values serialise")
    }
    match kind {
        Kind::Group => doc
            .user_groups
            .iter()
            .map(|g| (g.name.clone(), value(g)))
            .collect(),
        Kind::User => doc
            .users
            .iter()
            .map(|u| (u.username.clone(), value(u)))
            .collect(),
        Kind::Node => doc
            .nodes
            .iter()
            .map(|path| (path.clone(), Value::Null))
            .collect(),
        Kind::Asset => doc
            .assets
            .iter()
            .map(|a| {
                let mut v = value(a);
                if let Value::Object(map) = &mut v {
                    map.remove("accounts");
                }
                (a.name.clone(), v)
            })
            .collect(),
        Kind::Account => doc
            .assets
            .iter()
            .flat_map(|a| {
                a.accounts
                    .iter()
                    .map(move |acc| (format!("{}/{}", a.name, acc.name), value(acc)))
            })
            .collect(),
        Kind::Grant => doc
            .grants
            .iter()
            .map(|g| (g.name.clone(), value(g)))
            .collect(),
        Kind::Filter => doc
            .command_filters
            .iter()
            .map(|c| (c.name.clone(), value(c)))
            .collect(),
    }
}

/// Names of the fields whose values differ.
fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let (Value::Object(old), Value::Object(new)) = (old, new) else {
        return if old == new {
            Vec::new()
        } else {
            vec!["value".to_string()]
        };
    };
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

/// Every change that turns `old` into `new`: kind by kind in dependency
/// order (groups, users, nodes, assets, accounts, grants, filters); within
/// a kind, removals in `old`'s order, then additions and changes in `new`'s.
pub fn diff(old: &PolicyDocument, new: &PolicyDocument) -> Vec<Change> {
    let mut changes = Vec::new();
    for kind in Kind::ALL {
        let before = entities(old, kind);
        let after = entities(new, kind);
        let after_names: HashMap<&str, &Value> =
            after.iter().map(|(n, v)| (n.as_str(), v)).collect();
        let before_names: HashMap<&str, &Value> =
            before.iter().map(|(n, v)| (n.as_str(), v)).collect();
        for (name, _) in &before {
            if !after_names.contains_key(name.as_str()) {
                changes.push(Change {
                    op: Op::Remove,
                    kind,
                    name: name.clone(),
                    fields: Vec::new(),
                });
            }
        }
        for (name, value) in &after {
            match before_names.get(name.as_str()) {
                None => changes.push(Change {
                    op: Op::Add,
                    kind,
                    name: name.clone(),
                    fields: Vec::new(),
                }),
                Some(old_value) => {
                    let fields = changed_fields(old_value, value);
                    if !fields.is_empty() {
                        changes.push(Change {
                            op: Op::Change,
                            kind,
                            name: name.clone(),
                            fields,
                        });
                    }
                }
            }
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(yaml: &str) -> PolicyDocument {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn added_changed_and_removed_entities_are_named_with_their_fields() {
        let old = doc(r#"
user_groups: [{name: ops}]
users: [{username: alice, groups: [ops]}, {username: bob}]
nodes: [/a]
assets:
  - {name: web01, address: 10.0.0.1, protocols: [{name: ssh, port: 22}],
     accounts: [{name: root, username: root, secret_type: password, secret: one}]}
"#);
        let new = doc(r#"
user_groups: [{name: ops}]
users: [{username: alice, name: Alice, groups: []}, {username: carol}]
nodes: [/a, /b]
assets:
  - {name: web01, address: 10.0.0.2, protocols: [{name: ssh, port: 22}],
     accounts: [{name: root, username: root, secret_type: password, secret: two}]}
"#);
        let shown: Vec<String> = diff(&old, &new).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            shown,
            [
                "- user bob",
                "~ user alice (groups, name)",
                "+ user carol",
                "+ node /b",
                "~ asset web01 (address)",
                "~ account web01/root (secret)",
            ]
        );
        assert!(diff(&new, &new).is_empty(), "a document equals itself");
    }
}
