//! What differs between two policy documents, entity by entity: the dry run
//! of `policy apply`, the operation log and the server's write path all
//! speak in these changes.

use std::collections::{BTreeSet, HashMap, HashSet};
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

/// The fields of one entity that differ between `old` and `new`: none
/// when they are equal (the cheap test every entity gets), else named from
/// their JSON values without `skip` (an asset's accounts are entities of
/// their own).
fn differing<T: Serialize + PartialEq>(old: &T, new: &T, skip: Option<&str>) -> Vec<String> {
    if old == new {
        return Vec::new();
    }
    let value = |entity: &T| {
        let mut v = serde_json::to_value(entity).expect("model values serialise");
        if let (Some(skip), Value::Object(map)) = (skip, &mut v) {
            map.remove(skip);
        }
        v
    };
    changed_fields(&value(old), &value(new))
}

/// An entity's key: its name, or (asset, account) for an account.
type Key<'d> = (&'d str, &'d str);

fn key_name((first, second): Key<'_>) -> String {
    if second.is_empty() {
        first.to_string()
    } else {
        format!("{first}/{second}")
    }
}

/// The changes of one kind: removals in `before`'s order, then additions
/// and changes in `after`'s.
fn diff_kind<T: Serialize + PartialEq>(
    kind: Kind,
    before: &[(Key<'_>, &T)],
    after: &[(Key<'_>, &T)],
    changes: &mut Vec<Change>,
) {
    let after_keys: HashSet<Key<'_>> = after.iter().map(|(k, _)| *k).collect();
    let before_keys: HashMap<Key<'_>, &T> = before.iter().map(|(k, e)| (*k, *e)).collect();
    let change = |op, key: Key<'_>, fields| Change {
        op,
        kind,
        name: key_name(key),
        fields,
    };
    for (key, _) in before {
        if !after_keys.contains(key) {
            changes.push(change(Op::Remove, *key, Vec::new()));
        }
    }
    let skip = (kind == Kind::Asset).then_some("accounts");
    for (key, entity) in after {
        match before_keys.get(key) {
            None => changes.push(change(Op::Add, *key, Vec::new())),
            Some(old) => {
                let fields = differing(*old, *entity, skip);
                if !fields.is_empty() {
                    changes.push(change(Op::Change, *key, fields));
                }
            }
        }
    }
}

/// Every change that turns `old` into `new`: kind by kind in dependency
/// order (groups, users, nodes, assets, accounts, grants, filters); within
/// a kind, removals in `old`'s order, then additions and changes in `new`'s.
pub fn diff(old: &PolicyDocument, new: &PolicyDocument) -> Vec<Change> {
    fn named<'d, T>(items: &'d [T], name: impl Fn(&'d T) -> &'d str) -> Vec<(Key<'d>, &'d T)> {
        items.iter().map(|i| ((name(i), ""), i)).collect()
    }
    fn accounts(doc: &PolicyDocument) -> Vec<(Key<'_>, &jms_core::model::Account)> {
        doc.assets
            .iter()
            .flat_map(|a| {
                a.accounts
                    .iter()
                    .map(move |acc| ((a.name.as_str(), acc.name.as_str()), acc))
            })
            .collect()
    }
    let mut changes = Vec::new();
    for kind in Kind::ALL {
        let c = &mut changes;
        match kind {
            Kind::Group => diff_kind(
                kind,
                &named(&old.user_groups, |g| &g.name),
                &named(&new.user_groups, |g| &g.name),
                c,
            ),
            Kind::User => diff_kind(
                kind,
                &named(&old.users, |u| &u.username),
                &named(&new.users, |u| &u.username),
                c,
            ),
            Kind::Node => diff_kind(
                kind,
                &named(&old.nodes, |n| n),
                &named(&new.nodes, |n| n),
                c,
            ),
            Kind::Asset => diff_kind(
                kind,
                &named(&old.assets, |a| &a.name),
                &named(&new.assets, |a| &a.name),
                c,
            ),
            Kind::Account => diff_kind(kind, &accounts(old), &accounts(new), c),
            Kind::Grant => diff_kind(
                kind,
                &named(&old.grants, |g| &g.name),
                &named(&new.grants, |g| &g.name),
                c,
            ),
            Kind::Filter => diff_kind(
                kind,
                &named(&old.command_filters, |f| &f.name),
                &named(&new.command_filters, |f| &f.name),
                c,
            ),
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
