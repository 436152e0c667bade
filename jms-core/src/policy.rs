//! Reading and checking policy files (YAML or JSON, one schema).
//!
//! Each entity is read on its own so that an error names the file, the
//! entity (`grant `ops-prod``) and the field; then every reference between
//! entities is checked and account secrets given as `secret_file` are read
//! relative to the policy file. The result is a [`Policy`], ready for the
//! grant engine.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{GrantIndex, GrantsIndex, PeopleIndex};
use crate::model::{
    alias, Asset, CommandFilter, EntityKind, Grant, PolicyDocument, Secret, User, UserGroup,
};
use crate::nodes::NodeTree;
use crate::section::Section;

/// What went wrong with a policy file; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read: fix its path or permissions.
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        source: std::io::Error,
    },
    /// The file is not valid YAML/JSON, or its top level is wrong.
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    /// One entity is wrong: fix the named field.
    #[error("{file}: {entity}: field `{field}`: {message}")]
    Invalid {
        file: String,
        entity: String,
        field: String,
        message: String,
    },
}

pub type Result<T> = std::result::Result<T, PolicyError>;

/// A checked policy with its grant indexes built. Cloning it is cheap:
/// its entities, node tree and indexes are shared.
#[derive(Debug, Clone)]
pub struct Policy {
    pub doc: PolicyDoc,
    pub nodes: Arc<NodeTree>,
    pub(crate) index: GrantIndex,
}

/// A checked policy's entities (a [`PolicyDocument`]'s, shared), in
/// document order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PolicyDoc {
    pub users: Section<User>,
    pub user_groups: Section<UserGroup>,
    pub nodes: Section<String>,
    pub assets: Section<Asset>,
    pub grants: Section<Grant>,
    pub command_filters: Section<CommandFilter>,
    /// The server's scheduled plans, carried through untouched (nothing
    /// here evaluates them).
    pub plans: Option<Vec<crate::model::Plan>>,
}

impl PolicyDoc {
    fn of(doc: PolicyDocument) -> PolicyDoc {
        PolicyDoc {
            users: doc.users.into(),
            user_groups: doc.user_groups.into(),
            nodes: doc.nodes.into(),
            assets: doc.assets.into(),
            grants: doc.grants.into(),
            command_filters: doc.command_filters.into(),
            plans: doc.plans,
        }
    }

    /// A plain copy of the document.
    pub fn to_document(&self) -> PolicyDocument {
        PolicyDocument {
            users: self.users.to_vec(),
            user_groups: self.user_groups.to_vec(),
            nodes: self.nodes.to_vec(),
            assets: self.assets.to_vec(),
            grants: self.grants.to_vec(),
            command_filters: self.command_filters.to_vec(),
            plans: self.plans.clone(),
        }
    }
}

/// The format of a policy text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `.json` is JSON; anything else is read as YAML (a superset of JSON).
    pub fn of_path(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

impl Policy {
    /// Reads, parses and checks the policy file at `path`.
    pub fn load(path: &Path) -> Result<Policy> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: file.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        Policy::parse(&text, Format::of_path(path), &file, &base)
    }

    /// Parses and checks a policy text; `file` names it in errors and
    /// `base` is where relative `secret_file` paths start.
    pub fn parse(text: &str, format: Format, file: &str, base: &Path) -> Result<Policy> {
        let doc = parse_document(text, format, file)?;
        Policy::from_document(doc, file, base)
    }

    /// Checks a document that came from elsewhere (a bundle from the
    /// server): it may carry secrets but never `secret_file`, which only a
    /// policy file an admin names on this host may use — a received one
    /// would make the reader (root on a bastion) read any file, `/dev/zero`
    /// included.
    pub fn from_received(doc: PolicyDocument, file: &str) -> Result<Policy> {
        for asset in &doc.assets {
            if let Some(account) = asset.accounts.iter().find(|a| a.secret_file.is_some()) {
                return Err(PolicyError::Invalid {
                    file: file.to_string(),
                    entity: format!("asset `{}` account `{}`", asset.name, account.name),
                    field: "secret_file".into(),
                    message: "not accepted from elsewhere: only a local policy file may name files"
                        .into(),
                });
            }
        }
        Policy::from_document(doc, file, Path::new("/nonexistent"))
    }

    /// Checks a document built in memory (tests, generators, the server).
    pub fn from_document(mut doc: PolicyDocument, file: &str, base: &Path) -> Result<Policy> {
        let checker = Checker { file };
        let nodes = checker.check(&mut doc, base)?;
        let doc = PolicyDoc::of(doc);
        let index = GrantIndex::build(&doc, &nodes);
        Ok(Policy {
            doc,
            nodes: Arc::new(nodes),
            index,
        })
    }
}

/// A change to a checked policy as the grant engine applies it: what it
/// adds or replaces (whole entities), what it removes by kind and name, and
/// how it applies to a plain document. The sync format's delta
/// (`jms_sync::bundle::Delta`) is one; the engine knows nothing of its
/// wire form.
pub trait PolicyChange {
    /// The entities added or replaced, whole.
    fn upserted(&self) -> &PolicyDocument;
    /// The entities removed, by kind and name.
    fn removed(&self) -> impl Iterator<Item = (EntityKind, &str)>;
    /// Whether nodes, assets or accounts change (then the engine rebuilds
    /// everything from the document).
    fn touches_assets(&self) -> bool;
    /// Applies the change to a document; the error says why it does not.
    fn apply_to_document(&self, doc: &mut PolicyDocument) -> std::result::Result<(), String>;
}

impl Policy {
    /// The policy `delta` makes of this one, as the grant engine sees it:
    /// the same answers (and the same errors) as applying the delta to
    /// this policy's document ([`PolicyChange::apply_to_document`]) and checking
    /// the result with [`Policy::from_received`], at the cost of what it
    /// changes. A delta that adds, changes or removes users, groups,
    /// grants or command filters shares everything else with this policy
    /// (assets, nodes and their indexes are not even copied) and checks
    /// the entities it brings plus every reference between the sections;
    /// one that touches nodes, assets or accounts takes the full path.
    pub fn apply_delta(&self, delta: &impl PolicyChange, file: &str) -> Result<Policy> {
        if delta.touches_assets() {
            let mut doc = self.doc.to_document();
            delta
                .apply_to_document(&mut doc)
                .map_err(|message| PolicyError::Syntax {
                    file: file.to_string(),
                    message,
                })?;
            return Policy::from_received(doc, file);
        }
        let mut doc = self.doc.clone();
        for (kind, name) in delta.removed() {
            match kind {
                EntityKind::Group => retain(&mut doc.user_groups, |g| g.name != name),
                EntityKind::User => retain(&mut doc.users, |u| u.username != name),
                EntityKind::Grant => retain(&mut doc.grants, |g| g.name != name),
                EntityKind::Filter => retain(&mut doc.command_filters, |f| f.name != name),
                EntityKind::Node | EntityKind::Asset | EntityKind::Account => {
                    unreachable!("touches_assets() took the full path")
                }
            }
        }
        let up = delta.upserted();
        upsert(&mut doc.user_groups, &up.user_groups, |g| g.name.as_str());
        // No user removed: every old user is where the index says, and
        // the old names are the index's (unique, checked).
        let old_users = doc
            .users
            .same(&self.doc.users)
            .then_some(&self.index.people.user_by_name);
        match old_users {
            Some(at) => upsert_at(&mut doc.users, &up.users, at, |u| u.username.as_str()),
            None => upsert(&mut doc.users, &up.users, |u| u.username.as_str()),
        }
        upsert(&mut doc.grants, &up.grants, |g| g.name.as_str());
        upsert(&mut doc.command_filters, &up.command_filters, |f| {
            f.name.as_str()
        });

        let checker = Checker { file };
        let removed = |kind: EntityKind| delta.removed().any(|(k, _)| k == kind);
        let changed = Changed {
            groups: !doc.user_groups.same(&self.doc.user_groups),
            names_removed: removed(EntityKind::User) || removed(EntityKind::Group),
        };
        checker.check_people_and_grants(
            &doc,
            up,
            changed,
            old_users,
            &self.index.assets.asset_by_name,
            &self.nodes,
        )?;

        let groups_and_grants_same =
            doc.user_groups.same(&self.doc.user_groups) && doc.grants.same(&self.doc.grants);
        let people = if !groups_and_grants_same {
            Arc::new(PeopleIndex::build(
                &doc.users,
                &doc.user_groups,
                &doc.grants,
            ))
        } else if doc.users.same(&self.doc.users) {
            Arc::clone(&self.index.people)
        } else {
            Arc::new(self.index.people.with_users(&self.doc.users, &doc.users))
        };
        let grants = if doc.grants.same(&self.doc.grants) {
            Arc::clone(&self.index.grants)
        } else {
            Arc::new(GrantsIndex::build(
                &doc.grants,
                &self.index.assets,
                &self.nodes,
            ))
        };
        Ok(Policy {
            doc,
            nodes: Arc::clone(&self.nodes),
            index: GrantIndex {
                people,
                assets: Arc::clone(&self.index.assets),
                grants,
            },
        })
    }
}

/// [`Vec::retain`] on a section, copying it only when something goes.
fn retain<T>(section: &mut Section<T>, keep: impl Fn(&T) -> bool) {
    if section.iter().all(|item| keep(item)) {
        return;
    }
    section.make_mut().retain(|item| keep(item));
}

/// As the bundle's upsert: replaces the items named like those of
/// `items` in place and appends the others.
fn upsert<T: Clone>(section: &mut Section<T>, items: &[T], key: impl Fn(&T) -> &str) {
    if items.is_empty() {
        return;
    }
    let at: HashMap<&str, usize> = section
        .iter()
        .enumerate()
        .map(|(i, item)| (key(item), i))
        .collect();
    let mut placed = Vec::new();
    let mut added = Vec::new();
    for item in items {
        match at.get(key(item)) {
            Some(&i) => placed.push((i, Arc::new(item.clone()))),
            None => added.push(Arc::new(item.clone())),
        }
    }
    let list = section.make_mut();
    for (i, item) in placed {
        list[i] = item;
    }
    list.extend(added);
}

/// [`upsert`] where `at` already gives each item's position by name.
fn upsert_at<T: Clone>(
    section: &mut Section<T>,
    items: &[T],
    at: &HashMap<Arc<str>, u32>,
    key: impl Fn(&T) -> &str,
) {
    if items.is_empty() {
        return;
    }
    let list = section.make_mut();
    for item in items {
        match at.get(key(item)) {
            Some(&i) => list[i as usize] = Arc::new(item.clone()),
            None => list.push(Arc::new(item.clone())),
        }
    }
}

/// The top level, with each entity kept as a raw value until it is read on
/// its own (so its errors can name it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDocument {
    #[serde(default)]
    users: Vec<Value>,
    #[serde(default)]
    user_groups: Vec<Value>,
    #[serde(default)]
    nodes: Vec<Value>,
    #[serde(default)]
    assets: Vec<Value>,
    #[serde(default)]
    grants: Vec<Value>,
    #[serde(default)]
    command_filters: Vec<Value>,
    #[serde(default)]
    plans: Option<Vec<Value>>,
}

fn parse_document(text: &str, format: Format, file: &str) -> Result<PolicyDocument> {
    // Fast path: straight into the typed document. Only when that fails is
    // the file read again entity by entity, for an error that names them.
    let typed = match format {
        Format::Json => serde_json::from_str::<PolicyDocument>(text).map_err(|e| e.to_string()),
        Format::Yaml => serde_yaml_ng::from_str::<PolicyDocument>(text).map_err(|e| e.to_string()),
    };
    let typed_error = match typed {
        Ok(doc) => return Ok(doc),
        Err(e) => e,
    };
    let syntax = |message: String| PolicyError::Syntax {
        file: file.to_string(),
        message,
    };
    let value: Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?,
        Format::Yaml => serde_yaml_ng::from_str(text).map_err(|e| syntax(e.to_string()))?,
    };
    // An empty file is the empty policy.
    if value.is_null() {
        return Ok(PolicyDocument::default());
    }
    let raw: RawDocument =
        serde_json::from_value(value).map_err(|e| syntax(format!("top level: {e}")))?;
    // The slow path only names the entity at fault. What the typed parse
    // refuses is never a policy, whatever the generic value makes of it (a
    // key given twice is kept once there, the last one winning).
    read_all::<crate::model::User>(file, "users", "user", "username", raw.users)?;
    read_all::<crate::model::UserGroup>(
        file,
        "user_groups",
        "user group",
        "name",
        raw.user_groups,
    )?;
    read_all::<String>(file, "nodes", "node", "", raw.nodes)?;
    read_all::<crate::model::Asset>(file, "assets", "asset", "name", raw.assets)?;
    read_all::<crate::model::Grant>(file, "grants", "grant", "name", raw.grants)?;
    read_all::<crate::model::CommandFilter>(
        file,
        "command_filters",
        "command filter",
        "name",
        raw.command_filters,
    )?;
    read_all::<crate::model::Plan>(file, "plans", "plan", "name", raw.plans.unwrap_or_default())?;
    Err(syntax(typed_error))
}

/// Reads each value of a section as `T`, naming the entity in errors by its
/// `name_key` (or by itself when it is a plain string).
fn read_all<T: DeserializeOwned>(
    file: &str,
    section: &str,
    kind: &str,
    name_key: &str,
    values: Vec<Value>,
) -> Result<Vec<T>> {
    values
        .into_iter()
        .enumerate()
        .map(|(position, value)| {
            let name = match &value {
                Value::String(s) => Some(s.as_str()),
                other => other.get(name_key).and_then(Value::as_str),
            };
            let entity = match name {
                Some(name) => format!("{kind} `{name}` ({section}[{position}])"),
                None => format!("{kind} {section}[{position}]"),
            };
            serde_path_to_error::deserialize(&value).map_err(|e| {
                let message = e.inner().to_string();
                let path = e.path().to_string();
                let field = if path == "." {
                    named_in(&message).unwrap_or(".").to_string()
                } else {
                    path
                };
                PolicyError::Invalid {
                    file: file.to_string(),
                    entity,
                    field,
                    message,
                }
            })
        })
        .collect()
}

/// The field named in serde's "unknown field `x`" / "missing field `x`".
fn named_in(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    rest.split('`').next()
}

/// A login name usable as a Unix user or group name.
fn check_unix_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad name `{name}`: use 1-32 of a-z A-Z 0-9 _ . - (it becomes a Unix name)"
        ))
    }
}

/// An asset or account name: used in `account@asset` and `asset:/path`.
fn check_target_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("bad name {name:?}: empty or has blanks"));
    }
    if let Some(c) = name.chars().find(|c| matches!(c, '/' | ':' | '@')) {
        return Err(format!("bad name `{name}`: `{c}` is not allowed"));
    }
    Ok(())
}

struct Checker<'a> {
    file: &'a str,
}

impl Checker<'_> {
    fn err(
        &self,
        entity: String,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> PolicyError {
        PolicyError::Invalid {
            file: self.file.to_string(),
            entity,
            field: field.into(),
            message: message.into(),
        }
    }

    fn check(&self, doc: &mut PolicyDocument, base: &Path) -> Result<NodeTree> {
        let groups = self.unique(
            "user group",
            "name",
            doc.user_groups.iter().map(|g| g.name.as_str()),
        )?;
        for group in &doc.user_groups {
            check_unix_name(&group.name)
                .map_err(|m| self.err(format!("user group `{}`", group.name), "name", m))?;
        }
        let users = self.unique(
            "user",
            "username",
            doc.users.iter().map(|u| u.username.as_str()),
        )?;
        for user in &doc.users {
            let entity = || format!("user `{}`", user.username);
            check_unix_name(&user.username).map_err(|m| self.err(entity(), "username", m))?;
            for (i, group) in user.groups.iter().enumerate() {
                if !groups.contains(group.as_str()) {
                    return Err(self.err(
                        entity(),
                        format!("groups[{i}]"),
                        format!("unknown user group `{group}`"),
                    ));
                }
            }
            if let Some(hash) = &user.password_hash {
                crate::password::check_format(hash.expose())
                    .map_err(|m| self.err(entity(), "password_hash", m))?;
            }
            if let Some(seed) = &user.totp_secret {
                crate::password::check_totp_secret(seed.expose())
                    .map_err(|m| self.err(entity(), "totp_secret", m))?;
            }
        }

        let mut nodes = NodeTree::default();
        let mut declared = HashSet::new();
        for path in &doc.nodes {
            let entity = || format!("node `{path}`");
            if !declared.insert(path.as_str()) {
                return Err(self.err(entity(), "path", "duplicate node"));
            }
            nodes
                .insert(path)
                .map_err(|m| self.err(entity(), "path", m))?;
        }

        for asset in &mut doc.assets {
            let entity = || format!("asset `{}`", asset.name);
            check_target_name(&asset.name).map_err(|m| self.err(entity(), "name", m))?;
            if asset.address.trim().is_empty() {
                return Err(self.err(entity(), "address", "empty address"));
            }
            let mut seen = HashSet::new();
            for (i, protocol) in asset.protocols.iter().enumerate() {
                if !seen.insert(protocol.name) {
                    return Err(self.err(
                        entity(),
                        format!("protocols[{i}]"),
                        format!("protocol {} listed twice", protocol.name),
                    ));
                }
                if protocol.port == 0 {
                    return Err(self.err(entity(), format!("protocols[{i}].port"), "port 0"));
                }
            }
            self.known_nodes(&nodes, &entity(), &asset.nodes)?;
            if let Some(zone) = &asset.zone {
                crate::model::check_zone(zone).map_err(|m| self.err(entity(), "zone", m))?;
            }
            let mut names = HashSet::new();
            for (i, account) in asset.accounts.iter_mut().enumerate() {
                let field = |f: &str| format!("accounts[{i}].{f}");
                if !names.insert(account.name.clone()) {
                    return Err(self.err(
                        entity(),
                        field("name"),
                        format!("duplicate account `{}`", account.name),
                    ));
                }
                check_target_name(&account.name)
                    .map_err(|m| self.err(entity(), field("name"), m))?;
                if account.username.trim().is_empty() {
                    return Err(self.err(entity(), field("username"), "empty username"));
                }
                if let Some(relative) = &account.secret_file {
                    if account.secret.is_some() {
                        return Err(self.err(
                            entity(),
                            field("secret_file"),
                            "give `secret` or `secret_file`, not both",
                        ));
                    }
                    let path: PathBuf = base.join(relative);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        self.err(
                            entity(),
                            field("secret_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    account.secret = Some(Secret::new(text.trim_end_matches(['\n', '\r'])));
                }
            }
        }

        let assets = self.unique("asset", "name", doc.assets.iter().map(|a| a.name.as_str()))?;

        self.unique("grant", "name", doc.grants.iter().map(|g| g.name.as_str()))?;
        for grant in &doc.grants {
            let entity = format!("grant `{}`", grant.name);
            if grant.name.is_empty() {
                return Err(self.err(entity, "name", "empty name"));
            }
            self.grant_references(&entity, grant, &users, &groups, &assets, &nodes)?;
            self.grant_accounts(&entity, grant)?;
        }

        self.unique(
            "command filter",
            "name",
            doc.command_filters.iter().map(|f| f.name.as_str()),
        )?;
        for filter in &doc.command_filters {
            let entity = format!("command filter `{}`", filter.name);
            self.filter_fields(&entity, filter)?;
            self.filter_references(&entity, filter, &users, &groups, &assets, &nodes)?;
            self.filter_accounts(&entity, filter)?;
        }
        Ok(nodes)
    }

    /// The checks of [`Checker::check`] that a delta changing only users,
    /// groups, grants and command filters can break: each entity `up`
    /// brings is checked on its own (name, hash and secret formats,
    /// aliases, priorities, rules), every name is unique, and every
    /// reference from users, grants and filters is checked again, against
    /// the unchanged assets (`assets`) and nodes.
    fn check_people_and_grants(
        &self,
        doc: &PolicyDoc,
        up: &PolicyDocument,
        changed: Changed,
        old_users: Option<&HashMap<Arc<str>, u32>>,
        assets: &HashMap<String, u32>,
        nodes: &NodeTree,
    ) -> Result<()> {
        // References that held before hold still unless what they name
        // may have gone: then every one is checked, else the new ones.
        let recheck_all = changed.groups || changed.names_removed;
        let groups = self.unique(
            "user group",
            "name",
            doc.user_groups.iter().map(|g| g.name.as_str()),
        )?;
        for group in &up.user_groups {
            check_unix_name(&group.name)
                .map_err(|m| self.err(format!("user group `{}`", group.name), "name", m))?;
        }
        // With the old names at hand (`old_users`: no user removed, the
        // upserted ones replace theirs or come after), only names that
        // are new can repeat.
        let users: Box<dyn Names + '_> = match old_users {
            Some(old) => Box::new(OldAndNew {
                old,
                new: self.unique(
                    "user",
                    "username",
                    up.users
                        .iter()
                        .map(|u| u.username.as_str())
                        .filter(|name| !old.contains_key(*name)),
                )?,
            }),
            None => Box::new(self.unique(
                "user",
                "username",
                doc.users.iter().map(|u| u.username.as_str()),
            )?),
        };
        for user in &up.users {
            let entity = || format!("user `{}`", user.username);
            check_unix_name(&user.username).map_err(|m| self.err(entity(), "username", m))?;
            if let Some(hash) = &user.password_hash {
                crate::password::check_format(hash.expose())
                    .map_err(|m| self.err(entity(), "password_hash", m))?;
            }
            if let Some(seed) = &user.totp_secret {
                crate::password::check_totp_secret(seed.expose())
                    .map_err(|m| self.err(entity(), "totp_secret", m))?;
            }
        }
        let referring: Vec<&User> = if recheck_all {
            doc.users.iter().map(|u| &**u).collect()
        } else {
            up.users.iter().collect()
        };
        for user in referring {
            for (i, group) in user.groups.iter().enumerate() {
                if !groups.contains(group.as_str()) {
                    return Err(self.err(
                        format!("user `{}`", user.username),
                        format!("groups[{i}]"),
                        format!("unknown user group `{group}`"),
                    ));
                }
            }
        }
        let asset_names = AssetNames(assets);
        // A section the delta did not touch has unique names already.
        if !up.grants.is_empty() {
            self.unique("grant", "name", doc.grants.iter().map(|g| g.name.as_str()))?;
        }
        for grant in &up.grants {
            let entity = format!("grant `{}`", grant.name);
            if grant.name.is_empty() {
                return Err(self.err(entity, "name", "empty name"));
            }
            self.grant_accounts(&entity, grant)?;
        }
        let referring: Vec<&Grant> = if recheck_all {
            doc.grants.iter().map(|g| &**g).collect()
        } else {
            up.grants.iter().collect()
        };
        for grant in referring {
            let entity = format!("grant `{}`", grant.name);
            self.grant_references(&entity, grant, &*users, &groups, &asset_names, nodes)?;
        }
        if !up.command_filters.is_empty() {
            self.unique(
                "command filter",
                "name",
                doc.command_filters.iter().map(|f| f.name.as_str()),
            )?;
        }
        for filter in &up.command_filters {
            let entity = format!("command filter `{}`", filter.name);
            self.filter_fields(&entity, filter)?;
            self.filter_accounts(&entity, filter)?;
        }
        let referring: Vec<&CommandFilter> = if recheck_all {
            doc.command_filters.iter().map(|f| &**f).collect()
        } else {
            up.command_filters.iter().collect()
        };
        for filter in referring {
            let entity = format!("command filter `{}`", filter.name);
            self.filter_references(&entity, filter, &*users, &groups, &asset_names, nodes)?;
        }
        Ok(())
    }

    /// Checks names are unique; returns them as a set.
    fn unique<'d>(
        &self,
        kind: &str,
        field: &str,
        names: impl Iterator<Item = &'d str>,
    ) -> Result<HashSet<&'d str>> {
        let mut seen = HashSet::new();
        for name in names {
            if !seen.insert(name) {
                return Err(self.err(
                    format!("{kind} `{name}`"),
                    field,
                    format!("duplicate {kind} name"),
                ));
            }
        }
        Ok(seen)
    }

    /// A grant's account aliases (`@ALL`, `@INPUT`, `@USER`, `@ANON`).
    fn grant_accounts(&self, entity: &str, grant: &Grant) -> Result<()> {
        for (i, account) in grant.accounts.iter().enumerate() {
            let known = [alias::ALL, alias::INPUT, alias::USER, alias::ANON];
            if account.starts_with('@') && !known.contains(&account.as_str()) {
                return Err(self.err(
                    entity.to_string(),
                    format!("accounts[{i}]"),
                    format!(
                        "unknown account alias `{account}` (expected @ALL, @INPUT, @USER or @ANON)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What a grant names: users, user groups, assets, nodes.
    fn grant_references(
        &self,
        entity: &str,
        grant: &Grant,
        users: &dyn Names,
        groups: &dyn Names,
        assets: &dyn Names,
        nodes: &NodeTree,
    ) -> Result<()> {
        self.known(entity, "users", &grant.users, users, "user", false)?;
        self.known(
            entity,
            "user_groups",
            &grant.user_groups,
            groups,
            "user group",
            false,
        )?;
        self.known(entity, "assets", &grant.assets, assets, "asset", false)?;
        self.known_nodes(nodes, entity, &grant.nodes)
    }

    /// A command filter's priority and rules.
    fn filter_fields(&self, entity: &str, filter: &CommandFilter) -> Result<()> {
        if !(1..=100).contains(&filter.priority) {
            return Err(self.err(
                entity.to_string(),
                "priority",
                format!("priority {} is outside 1..=100", filter.priority),
            ));
        }
        for (i, rule) in filter.rules.iter().enumerate() {
            regex::Regex::new(rule).map_err(|e| {
                self.err(
                    entity.to_string(),
                    format!("rules[{i}]"),
                    format!("bad regex: {e}"),
                )
            })?;
        }
        Ok(())
    }

    /// A command filter's account aliases (`@ALL` only).
    fn filter_accounts(&self, entity: &str, filter: &CommandFilter) -> Result<()> {
        for (i, account) in filter.accounts.iter().enumerate() {
            if account.starts_with('@') && account != alias::ALL {
                return Err(self.err(
                    entity.to_string(),
                    format!("accounts[{i}]"),
                    format!(
                        "unknown account alias `{account}` (command filters take @ALL or names)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What a command filter names: users, user groups, assets (each may
    /// be `@ALL` but the groups), nodes.
    fn filter_references(
        &self,
        entity: &str,
        filter: &CommandFilter,
        users: &dyn Names,
        groups: &dyn Names,
        assets: &dyn Names,
        nodes: &NodeTree,
    ) -> Result<()> {
        self.known(entity, "users", &filter.users, users, "user", true)?;
        self.known(
            entity,
            "user_groups",
            &filter.user_groups,
            groups,
            "user group",
            false,
        )?;
        self.known(entity, "assets", &filter.assets, assets, "asset", true)?;
        self.known_nodes(nodes, entity, &filter.nodes)
    }

    /// Checks every name in `list` is in `known` (or `@ALL` when allowed).
    fn known(
        &self,
        entity: &str,
        field: &str,
        list: &[String],
        known: &dyn Names,
        kind: &str,
        all_allowed: bool,
    ) -> Result<()> {
        for (i, name) in list.iter().enumerate() {
            if all_allowed && name == alias::ALL {
                continue;
            }
            if !known.has(name) {
                let hint = if name == "*" {
                    " (`*` is not a wildcard: name them)"
                } else {
                    ""
                };
                return Err(self.err(
                    entity.to_string(),
                    format!("{field}[{i}]"),
                    format!("unknown {kind} `{name}`{hint}"),
                ));
            }
        }
        Ok(())
    }

    fn known_nodes(&self, nodes: &NodeTree, entity: &str, list: &[String]) -> Result<()> {
        for (i, path) in list.iter().enumerate() {
            if nodes.get(path).is_none() {
                return Err(self.err(
                    entity.to_string(),
                    format!("nodes[{i}]"),
                    format!("unknown node `{path}` (declare it under `nodes:`)"),
                ));
            }
        }
        Ok(())
    }
}

/// What a delta changed that references may depend on.
#[derive(Debug, Clone, Copy)]
struct Changed {
    /// The user groups section changed.
    groups: bool,
    /// A user or group was removed.
    names_removed: bool,
}

/// A set of names a reference must be in.
trait Names {
    fn has(&self, name: &str) -> bool;
}

impl Names for HashSet<&str> {
    fn has(&self, name: &str) -> bool {
        self.contains(name)
    }
}

/// The asset names of a checked policy's index.
struct AssetNames<'a>(&'a HashMap<String, u32>);

/// The users of a policy with users upserted: the old names and the new.
struct OldAndNew<'a> {
    old: &'a HashMap<Arc<str>, u32>,
    new: HashSet<&'a str>,
}

impl Names for OldAndNew<'_> {
    fn has(&self, name: &str) -> bool {
        self.old.contains_key(name) || self.new.contains(name)
    }
}

impl Names for AssetNames<'_> {
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// Counts of what a policy holds, for `jmsctl policy check`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub users: usize,
    pub user_groups: usize,
    pub nodes: usize,
    pub assets: usize,
    pub accounts: usize,
    pub grants: usize,
    pub command_filters: usize,
}

impl Policy {
    pub fn summary(&self) -> Summary {
        Summary {
            users: self.doc.users.len(),
            user_groups: self.doc.user_groups.len(),
            nodes: self.nodes.len(),
            assets: self.doc.assets.len(),
            accounts: self.doc.assets.iter().map(|a| a.accounts.len()).sum(),
            grants: self.doc.grants.len(),
            command_filters: self.doc.command_filters.len(),
        }
    }

    /// The position of user `name` in the document, if the policy has her.
    pub fn user_rank(&self, name: &str) -> Option<usize> {
        self.index
            .people
            .user_by_name
            .get(name)
            .map(|u| *u as usize)
    }

    /// Groups by name, for callers that need members.
    pub fn group_members(&self) -> HashMap<&str, Vec<&str>> {
        let mut members: HashMap<&str, Vec<&str>> = self
            .doc
            .user_groups
            .iter()
            .map(|g| (g.name.as_str(), Vec::new()))
            .collect();
        for user in &self.doc.users {
            for group in &user.groups {
                if let Some(list) = members.get_mut(group.as_str()) {
                    list.push(&user.username);
                }
            }
        }
        members
    }
}
