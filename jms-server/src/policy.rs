//! The policy service ([`PolicyService`]), the server's write path: every
//! change to the policy is an edit of the whole document, checked by
//! jms-core before it is committed. It also keeps what each recent version
//! changed and a watch of the version, which the sync service reads for
//! deltas and long-polls.
//!
//! A change runs in the store's write transaction: take the document as
//! stored (kept in memory between writes, keyed by the policy version;
//! loaded and its secrets opened when the version moved), apply the edit
//! to a copy, diff the result against what was stored, check it with
//! jms-core ([`Policy::from_document`]: the same checks a policy file gets:
//! names, references, regexes, hash formats), write only what differs
//! (sealing secrets again), bump the global policy version and append one
//! operation-log entry per changed entity — or roll everything back and
//! return jms-core's message.
//!
//! The check is incremental (`check_changes`): the stored document was
//! valid, so only what a change can affect is checked again — the changed
//! entities, what they refer to and what refers to a removed one — by
//! running jms-core on that part of the document (all nodes included),
//! in the document's order. That gives the message the whole check gives,
//! since every other entity checked before. Duplicate names and large
//! changes (a `policy apply`) take the whole check.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use jms_core::model::{alias, Account, PolicyDocument, Secret, User};
use jms_core::{Policy, PolicyError};

use crate::crypto::SealKey;
use crate::diff::{diff, Change, Op};
pub use crate::error::{AdminError, Result};
use crate::settings::{Settings, SettingsCheck};
use crate::store::{
    AccountRow, Kind, NewOpLogEntry, ReadTx, Snapshot, Store, StoreError, UserRow, WriteTx,
};

/// Versions whose changes are remembered for deltas.
pub const HISTORY: usize = 4096;

/// What a change did (or, dry, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub changes: Vec<Change>,
    /// The policy version after the change (unchanged by a dry run or an
    /// edit that changed nothing).
    pub version: u64,
    pub dry_run: bool,
}

/// The policy service: the versioned policy document (entities and
/// settings) in the store, the key that seals its secrets, and what each
/// recent version changed.
pub struct PolicyService {
    store: Store,
    key: Arc<SealKey>,
    /// What each recent version changed, and the version watch.
    versions: Versions,
    /// The stored document (secrets opened) at a policy version, as the
    /// last write left it.
    stored: Mutex<Option<(u64, Arc<PolicyDocument>)>>,
}

/// Past this many changed entities, the whole policy is checked.
const INCREMENTAL_CHECK_MAX: usize = 256;

/// Where each kind of secret is sealed (bound as associated data).
fn place_password_hash(user: &str) -> String {
    format!("users.password_hash:{user}")
}
fn place_totp(user: &str) -> String {
    format!("users.totp_secret:{user}")
}
fn place_account(asset: &str, account: &str) -> String {
    format!("accounts.secret:{asset}/{account}")
}
const PLACE_MAIL_PASSWORD: &str = "settings.mail.password";

/// jms-core's message without the file name (there is no file here).
pub fn policy_message(e: &PolicyError) -> String {
    match e {
        PolicyError::Invalid {
            entity,
            field,
            message,
            ..
        } => format!("{entity}: field `{field}`: {message}"),
        PolicyError::Syntax { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

impl PolicyService {
    /// The policy in `store`, its secrets sealed with `key`.
    pub fn new(store: Store, key: Arc<SealKey>) -> PolicyService {
        // An unreadable version only costs deltas until the next write.
        let version = store.read().and_then(|tx| tx.policy_version()).unwrap_or(0);
        PolicyService {
            store,
            key,
            versions: Versions::new(version),
            stored: Mutex::new(None),
        }
    }

    /// The seal key (for keys derived from it).
    pub fn seal_key(&self) -> &SealKey {
        &self.key
    }

    /// A read transaction.
    pub fn read(&self) -> Result<Box<dyn ReadTx + '_>> {
        Ok(self.store.read()?)
    }

    pub fn version(&self) -> Result<u64> {
        Ok(self.store.read()?.policy_version()?)
    }

    /// The entities changed after version `since` up to `to` (the
    /// current one), first change first; `None` when this process does
    /// not remember all of them (after a restart, or too far back).
    pub fn changes_since(&self, since: u64, to: u64) -> Option<Vec<(Kind, String)>> {
        lock(&self.versions.history).since(since, to)
    }

    /// A watch of the policy version, moved by every committed write
    /// (of any instance sharing the database, once [`Self::set_bus`]).
    pub fn watch_version(&self) -> tokio::sync::watch::Receiver<u64> {
        self.versions.version.subscribe()
    }

    /// Tells other instances of each commit from now on.
    pub fn set_bus(&self, bus: Arc<crate::bus::Bus>) {
        let _ = self.versions.bus.set(bus);
    }

    /// Another instance committed `version` (having changed `changed`,
    /// when it said).
    pub fn remote_version(&self, version: u64, changed: Option<Vec<(Kind, String)>>) {
        self.versions.moved(version, changed);
    }

    /// The whole policy; secrets only when asked.
    pub fn document(&self, with_secrets: bool) -> Result<PolicyDocument> {
        let snapshot = self.store.read()?.snapshot()?;
        self.open_snapshot(snapshot, with_secrets)
    }

    /// A user row with its secrets opened (when asked).
    pub(crate) fn open_user_row(&self, row: UserRow, with_secrets: bool) -> Result<User> {
        let mut user = row.user;
        if with_secrets {
            user.password_hash =
                self.open_secret(place_password_hash(&user.username), &row.password_hash)?;
            user.totp_secret = self.open_secret(place_totp(&user.username), &row.totp_secret)?;
        }
        Ok(user)
    }

    /// An account row with its secret opened (when asked).
    pub(crate) fn open_account_row(&self, row: AccountRow, with_secrets: bool) -> Result<Account> {
        let mut account = row.account;
        if with_secrets {
            account.secret =
                self.open_secret(place_account(&row.asset, &account.name), &row.secret)?;
        }
        Ok(account)
    }

    fn open_secret(&self, place: String, sealed: &Option<Vec<u8>>) -> Result<Option<Secret>> {
        match sealed {
            Some(sealed) => Ok(Some(Secret::new(self.key.open_text(&place, sealed)?))),
            None => Ok(None),
        }
    }

    pub(crate) fn open_snapshot(&self, s: Snapshot, with_secrets: bool) -> Result<PolicyDocument> {
        let open = |place: String, sealed: &Option<Vec<u8>>| -> Result<Option<Secret>> {
            match sealed {
                Some(sealed) if with_secrets => {
                    Ok(Some(Secret::new(self.key.open_text(&place, sealed)?)))
                }
                _ => Ok(None),
            }
        };
        let mut users = Vec::with_capacity(s.users.len());
        for row in s.users {
            let mut user = row.user;
            user.password_hash = open(place_password_hash(&user.username), &row.password_hash)?;
            user.totp_secret = open(place_totp(&user.username), &row.totp_secret)?;
            users.push(user);
        }
        let mut accounts: HashMap<String, Vec<Account>> = HashMap::new();
        for row in s.accounts {
            let mut account = row.account;
            account.secret = open(place_account(&row.asset, &account.name), &row.secret)?;
            accounts.entry(row.asset).or_default().push(account);
        }
        Ok(PolicyDocument {
            users,
            user_groups: s.groups.into_iter().map(|r| r.group).collect(),
            nodes: s.nodes.into_iter().map(|r| r.path).collect(),
            assets: s
                .assets
                .into_iter()
                .map(|r| {
                    let mut asset = r.asset;
                    asset.accounts = accounts.remove(&asset.name).unwrap_or_default();
                    asset
                })
                .collect(),
            grants: s.grants.into_iter().map(|r| r.grant).collect(),
            command_filters: s.filters.into_iter().map(|r| r.filter).collect(),
            plans: None,
        })
    }

    /// Applies `edit` to the policy, checks the result with jms-core and
    /// commits it (unless `dry_run`), logging every changed entity as
    /// `actor`.
    pub fn change(
        &self,
        actor: &str,
        dry_run: bool,
        edit: impl FnOnce(&mut PolicyDocument) -> Result<()>,
    ) -> Result<Applied> {
        let mut tx = self.store.write()?;
        let version = tx.policy_version()?;
        let cached = lock(&self.stored)
            .as_ref()
            .filter(|(at, _)| *at == version)
            .map(|(_, doc)| Arc::clone(doc));
        let old = match cached {
            Some(doc) => doc,
            None => {
                let doc = Arc::new(self.open_snapshot(tx.snapshot()?, true)?);
                *lock(&self.stored) = Some((version, Arc::clone(&doc)));
                doc
            }
        };
        let mut new = (*old).clone();
        edit(&mut new)?;
        refuse_secret_files(&new)?;
        let changes = diff(&old, &new);
        refuse_reserved_names(&changes)?;
        check_changes(&new, &changes)?;
        if dry_run || changes.is_empty() {
            return Ok(Applied {
                changes,
                version,
                dry_run,
            });
        }
        self.persist(tx.as_mut(), &new, &changes)?;
        let version = tx.bump_version()?;
        for change in &changes {
            tx.append_oplog(&NewOpLogEntry {
                actor: actor.to_string(),
                action: match change.op {
                    Op::Add => "create",
                    Op::Change => "update",
                    Op::Remove => "delete",
                }
                .to_string(),
                kind: change.kind.as_str().to_string(),
                name: change.name.clone(),
                fields: change.fields.clone(),
                version,
            })?;
        }
        tx.commit()?;
        // What is stored now, in the store's order (creation order) when
        // every new entity came last; else it is read again next time.
        *lock(&self.stored) = appended_in_order(&new, &changes).then(|| (version, Arc::new(new)));
        self.versions.committed(
            version,
            changes.iter().map(|c| (c.kind, c.name.clone())).collect(),
        );
        tracing::info!(actor, version, changes = changes.len(), "policy changed");
        Ok(Applied {
            changes,
            version,
            dry_run,
        })
    }

    /// Writes what `changes` name, from `new`: removals first (filters
    /// back to groups), then additions and changes (groups to filters).
    fn persist(
        &self,
        tx: &mut dyn WriteTx,
        new: &PolicyDocument,
        changes: &[Change],
    ) -> Result<()> {
        let seal = |place: String, secret: &Option<Secret>| {
            secret
                .as_ref()
                .map(|s| self.key.seal(&place, s.expose().as_bytes()))
        };
        for change in changes.iter().rev().filter(|c| c.op == Op::Remove) {
            match change.kind {
                Kind::Group => tx.delete_group(&change.name)?,
                Kind::User => tx.delete_user(&change.name)?,
                Kind::Node => tx.delete_node(&change.name)?,
                Kind::Asset => tx.delete_asset(&change.name)?,
                Kind::Account => {
                    let (asset, account) = split_account(&change.name);
                    tx.delete_account(asset, account)?
                }
                Kind::Grant => tx.delete_grant(&change.name)?,
                Kind::Filter => tx.delete_filter(&change.name)?,
            }
        }
        // Indexes by name: an apply may change every entity.
        let groups: HashMap<&str, _> = new
            .user_groups
            .iter()
            .map(|g| (g.name.as_str(), g))
            .collect();
        let users: HashMap<&str, _> = new.users.iter().map(|u| (u.username.as_str(), u)).collect();
        let assets: HashMap<&str, _> = new.assets.iter().map(|a| (a.name.as_str(), a)).collect();
        let accounts: HashMap<(&str, &str), _> = new
            .assets
            .iter()
            .flat_map(|a| {
                a.accounts
                    .iter()
                    .map(move |acc| ((a.name.as_str(), acc.name.as_str()), acc))
            })
            .collect();
        let grants: HashMap<&str, _> = new.grants.iter().map(|g| (g.name.as_str(), g)).collect();
        let filters: HashMap<&str, _> = new
            .command_filters
            .iter()
            .map(|f| (f.name.as_str(), f))
            .collect();
        for change in changes.iter().filter(|c| c.op != Op::Remove) {
            let name = change.name.as_str();
            let missing = || {
                AdminError::Store(StoreError::Corrupt {
                    table: "policy",
                    message: format!("changed {} `{name}` is not in the document", change.kind),
                })
            };
            match change.kind {
                Kind::Group => tx.put_group(groups.get(name).ok_or_else(missing)?)?,
                Kind::User => {
                    let user = users.get(name).ok_or_else(missing)?;
                    let hash = seal(place_password_hash(name), &user.password_hash);
                    let totp = seal(place_totp(name), &user.totp_secret);
                    tx.put_user(&without_secrets(user), hash.as_deref(), totp.as_deref())?
                }
                Kind::Node => tx.put_node(name)?,
                Kind::Asset => tx.put_asset(assets.get(name).ok_or_else(missing)?)?,
                Kind::Account => {
                    let (asset, account) = split_account(name);
                    let found = accounts.get(&(asset, account)).ok_or_else(missing)?;
                    let secret = seal(place_account(asset, account), &found.secret);
                    let mut stored = (*found).clone();
                    stored.secret = None;
                    stored.secret_file = None;
                    tx.put_account(asset, &stored, secret.as_deref())?
                }
                Kind::Grant => tx.put_grant(grants.get(name).ok_or_else(missing)?)?,
                Kind::Filter => tx.put_filter(filters.get(name).ok_or_else(missing)?)?,
            }
        }
        Ok(())
    }

    /// The settings, and whether a mail password is set.
    pub fn settings(&self) -> Result<(Settings, bool)> {
        let stored = self.store.read()?.settings()?;
        let has_password = stored.mail_password.is_some();
        Ok((parse_settings(stored.document)?, has_password))
    }

    /// The settings with the mail password opened: for sending mail only,
    /// never for a read.
    pub(crate) fn settings_with_mail_password(&self) -> Result<Settings> {
        let stored = self.store.read()?.settings()?;
        let mut settings = parse_settings(stored.document)?;
        if let Some(sealed) = &stored.mail_password {
            settings.mail.password = Some(Secret::new(
                self.key.open_text(PLACE_MAIL_PASSWORD, sealed)?,
            ));
        }
        Ok(settings)
    }

    /// Applies `edit` to the settings, checks and stores them, bumps the
    /// policy version (settings travel in the bundle) and logs the fields
    /// that changed. Returns the new settings, whether a mail password is
    /// set, and the version.
    pub fn change_settings(
        &self,
        actor: &str,
        edit: impl FnOnce(&mut Settings) -> Result<()>,
    ) -> Result<(Settings, bool, u64)> {
        let mut tx = self.store.write()?;
        let stored = tx.settings()?;
        let mut old = parse_settings(stored.document)?;
        if let Some(sealed) = &stored.mail_password {
            old.mail.password = Some(Secret::new(
                self.key.open_text(PLACE_MAIL_PASSWORD, sealed)?,
            ));
        }
        let mut new = old.clone();
        edit(&mut new)?;
        let snapshot = tx.snapshot()?;
        let groups: Vec<&str> = snapshot
            .groups
            .iter()
            .map(|g| g.group.name.as_str())
            .collect();
        new.check(&groups).map_err(AdminError::Invalid)?;
        let mut fields = settings_fields(&old, &new);
        if old.mail.password != new.mail.password {
            fields.push("mail.password".to_string());
        }
        let has_password = new.mail.password.is_some();
        if fields.is_empty() {
            let version = tx.policy_version()?;
            return Ok((new, has_password, version));
        }
        let sealed = new
            .mail
            .password
            .as_ref()
            .map(|p| self.key.seal(PLACE_MAIL_PASSWORD, p.expose().as_bytes()));
        let document = serde_json::to_value(&new).expect("settings serialise");
        tx.put_settings(&document, sealed.as_deref())?;
        let version = tx.bump_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "update".to_string(),
            kind: "settings".to_string(),
            name: "system".to_string(),
            fields,
            version,
        })?;
        tx.commit()?;
        self.versions.committed(version, Vec::new());
        new.mail.password = None;
        Ok((new, has_password, version))
    }

    /// Records that `actor` read the policy with its secrets.
    pub fn log_secret_export(&self, actor: &str) -> Result<()> {
        let mut tx = self.store.write()?;
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "export-secrets".to_string(),
            kind: "policy".to_string(),
            name: "policy".to_string(),
            fields: Vec::new(),
            version,
        })?;
        tx.commit()?;
        Ok(())
    }
}

/// The policy version as writes move it: which entities each recent
/// version changed (for deltas) and a watch of the version (long-polls
/// wait on it).
struct Versions {
    history: Mutex<History>,
    version: tokio::sync::watch::Sender<u64>,
    /// Tells other instances (on one PostgreSQL) of each commit.
    bus: std::sync::OnceLock<Arc<crate::bus::Bus>>,
}

impl Versions {
    fn new(version: u64) -> Versions {
        Versions {
            history: Mutex::new(History {
                floor: version,
                changes: VecDeque::new(),
            }),
            version: tokio::sync::watch::channel(version).0,
            bus: std::sync::OnceLock::new(),
        }
    }

    /// `version` is committed, having changed `changed`: remembered, and
    /// whoever waits for a newer version wakes.
    fn committed(&self, version: u64, changed: Vec<(Kind, String)>) {
        if let Some(bus) = self.bus.get() {
            let signal = |changed| crate::bus::Signal::Version { version, changed };
            let full = signal(Some(changed.clone()));
            // Too many changes for one notification: the version alone.
            let fits = serde_json::to_string(&full)
                .is_ok_and(|text| text.len() < crate::bus::MAX_PAYLOAD - 100);
            bus.publish(if fits { full } else { signal(None) });
        }
        self.moved(version, Some(changed));
    }

    /// `version` is committed (here or by another instance, which says
    /// what it changed when it could).
    fn moved(&self, version: u64, changed: Option<Vec<(Kind, String)>>) {
        {
            let mut history = lock(&self.history);
            match changed {
                Some(changed) => history.record(version, changed),
                None => history.forget(version),
            }
        }
        self.version.send_if_modified(|v| {
            let moved = version > *v;
            if moved {
                *v = version;
            }
            moved
        });
    }
}

/// Which entities each recent version changed: versions `floor + 1` to
/// `floor + changes.len()`, in order.
#[derive(Debug, Default)]
struct History {
    floor: u64,
    changes: VecDeque<Vec<(Kind, String)>>,
}

impl History {
    fn top(&self) -> u64 {
        self.floor + self.changes.len() as u64
    }

    /// Versions up to `version` moved without us knowing what they
    /// changed.
    fn forget(&mut self, version: u64) {
        if version > self.top() {
            self.floor = version;
            self.changes.clear();
        }
    }

    fn record(&mut self, version: u64, changed: Vec<(Kind, String)>) {
        if version <= self.top() {
            // Already known (told twice, or late).
            return;
        }
        if version != self.top() + 1 {
            // Versions moved without us (another process wrote the store):
            // nothing before this one can be told apart.
            self.floor = version;
            self.changes.clear();
            return;
        }
        self.changes.push_back(changed);
        while self.changes.len() > HISTORY {
            self.changes.pop_front();
            self.floor += 1;
        }
    }

    /// The entities changed after `since` up to `to`, first change first;
    /// `None` when that history is not (all) here.
    fn since(&self, since: u64, to: u64) -> Option<Vec<(Kind, String)>> {
        if since < self.floor || to != self.top() || since >= to {
            return None;
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for changed in self.changes.iter().skip((since - self.floor) as usize) {
            for entry in changed {
                if seen.insert(entry.clone()) {
                    out.push(entry.clone());
                }
            }
        }
        Some(out)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Checks `new` (the stored document with `changes` made) as jms-core
/// would check the whole of it, with the same message; only what the
/// changes can affect is checked when they are few (see the module doc).
fn check_changes(new: &PolicyDocument, changes: &[Change]) -> Result<()> {
    let whole = changes.len() > INCREMENTAL_CHECK_MAX || has_duplicate_names(new);
    let doc = if whole {
        new.clone()
    } else {
        affected_part(new, changes)
    };
    // No secret_file here (refused before): the check changes nothing.
    Policy::from_document(doc, "policy", Path::new("/nonexistent"))
        .map_err(|e| AdminError::Invalid(policy_message(&e)))?;
    Ok(())
}

/// Whether two entities of a kind (or two accounts of an asset, or two
/// nodes) share a name: jms-core names the first such one.
fn has_duplicate_names(doc: &PolicyDocument) -> bool {
    fn dup<'d>(names: impl Iterator<Item = &'d str>) -> bool {
        let mut seen = HashSet::new();
        names.into_iter().any(|n| !seen.insert(n))
    }
    dup(doc.user_groups.iter().map(|g| g.name.as_str()))
        || dup(doc.users.iter().map(|u| u.username.as_str()))
        || dup(doc.nodes.iter().map(String::as_str))
        || dup(doc.assets.iter().map(|a| a.name.as_str()))
        || doc
            .assets
            .iter()
            .any(|a| dup(a.accounts.iter().map(|acc| acc.name.as_str())))
        || dup(doc.grants.iter().map(|g| g.name.as_str()))
        || dup(doc.command_filters.iter().map(|f| f.name.as_str()))
}

fn grant_name(g: &jms_core::model::Grant) -> &str {
    &g.name
}

fn filter_name(f: &jms_core::model::CommandFilter) -> &str {
    &f.name
}

/// Names of entities that list `name` in the field `list` picks.
fn naming<'d, T>(
    items: &'d [T],
    name: &str,
    list: impl Fn(&T) -> &Vec<String>,
    key: impl Fn(&'d T) -> &'d str,
) -> Vec<&'d str> {
    items
        .iter()
        .filter(|item| list(item).iter().any(|n| n == name))
        .map(key)
        .collect()
}

/// The part of `doc` that `changes` can make invalid, in document order:
/// changed entities, entities that refer to a removed one, and what all of
/// those refer to (users' groups; grants' and filters' users, groups and
/// assets); every node (the tree is checked as a whole).
fn affected_part(doc: &PolicyDocument, changes: &[Change]) -> PolicyDocument {
    let mut groups: HashSet<&str> = HashSet::new();
    let mut users: HashSet<&str> = HashSet::new();
    let mut assets: HashSet<&str> = HashSet::new();
    let mut grants: HashSet<&str> = HashSet::new();
    let mut filters: HashSet<&str> = HashSet::new();
    for change in changes {
        let name = change.name.as_str();
        match (change.op, change.kind) {
            (Op::Remove, Kind::Group) => {
                users.extend(naming(&doc.users, name, |u| &u.groups, |u| &u.username));
                grants.extend(naming(&doc.grants, name, |g| &g.user_groups, grant_name));
                filters.extend(naming(
                    &doc.command_filters,
                    name,
                    |f| &f.user_groups,
                    filter_name,
                ));
            }
            (Op::Remove, Kind::User) => {
                grants.extend(naming(&doc.grants, name, |g| &g.users, grant_name));
                filters.extend(naming(
                    &doc.command_filters,
                    name,
                    |f| &f.users,
                    filter_name,
                ));
            }
            (Op::Remove, Kind::Node) => {
                assets.extend(naming(&doc.assets, name, |a| &a.nodes, |a| &a.name));
                grants.extend(naming(&doc.grants, name, |g| &g.nodes, grant_name));
                filters.extend(naming(
                    &doc.command_filters,
                    name,
                    |f| &f.nodes,
                    filter_name,
                ));
            }
            (Op::Remove, Kind::Asset) => {
                grants.extend(naming(&doc.grants, name, |g| &g.assets, grant_name));
                filters.extend(naming(
                    &doc.command_filters,
                    name,
                    |f| &f.assets,
                    filter_name,
                ));
            }
            // Nothing refers to these by a checked name.
            (Op::Remove, Kind::Account | Kind::Grant | Kind::Filter) => {}
            (_, Kind::Group) => {
                groups.insert(name);
            }
            (_, Kind::User) => {
                users.insert(name);
            }
            (_, Kind::Node) => {}
            (_, Kind::Asset) => {
                assets.insert(name);
            }
            (_, Kind::Account) => {
                assets.insert(split_account(name).0);
            }
            (_, Kind::Grant) => {
                grants.insert(name);
            }
            (_, Kind::Filter) => {
                filters.insert(name);
            }
        }
    }
    // What the included grants and filters refer to.
    for g in doc
        .grants
        .iter()
        .filter(|g| grants.contains(g.name.as_str()))
    {
        users.extend(g.users.iter().map(String::as_str));
        groups.extend(g.user_groups.iter().map(String::as_str));
        assets.extend(g.assets.iter().map(String::as_str));
    }
    for f in doc
        .command_filters
        .iter()
        .filter(|f| filters.contains(f.name.as_str()))
    {
        users.extend(
            f.users
                .iter()
                .map(String::as_str)
                .filter(|u| *u != alias::ALL),
        );
        groups.extend(f.user_groups.iter().map(String::as_str));
        assets.extend(
            f.assets
                .iter()
                .map(String::as_str)
                .filter(|a| *a != alias::ALL),
        );
    }
    // The groups of every included user.
    for u in doc
        .users
        .iter()
        .filter(|u| users.contains(u.username.as_str()))
    {
        groups.extend(u.groups.iter().map(String::as_str));
    }
    fn kept<T: Clone>(items: &[T], keep: impl Fn(&T) -> bool) -> Vec<T> {
        items.iter().filter(|i| keep(i)).cloned().collect()
    }
    PolicyDocument {
        user_groups: kept(&doc.user_groups, |g| groups.contains(g.name.as_str())),
        users: kept(&doc.users, |u| users.contains(u.username.as_str())),
        nodes: doc.nodes.clone(),
        assets: kept(&doc.assets, |a| assets.contains(a.name.as_str())),
        grants: kept(&doc.grants, |g| grants.contains(g.name.as_str())),
        command_filters: kept(&doc.command_filters, |f| filters.contains(f.name.as_str())),
        plans: None,
    }
}

/// Whether the entities `changes` added are the last of their lists in
/// `doc` (as the store lists them: in creation order).
fn appended_in_order(doc: &PolicyDocument, changes: &[Change]) -> bool {
    fn tail_is<'d>(names: impl DoubleEndedIterator<Item = &'d str>, added: &HashSet<&str>) -> bool {
        names.rev().take(added.len()).all(|n| added.contains(n))
    }
    let added = |kind: Kind| -> HashSet<&str> {
        changes
            .iter()
            .filter(|c| c.op == Op::Add && c.kind == kind)
            .map(|c| c.name.as_str())
            .collect()
    };
    let mut accounts: HashMap<&str, HashSet<&str>> = HashMap::new();
    for c in changes
        .iter()
        .filter(|c| c.op == Op::Add && c.kind == Kind::Account)
    {
        let (asset, account) = split_account(&c.name);
        accounts.entry(asset).or_default().insert(account);
    }
    tail_is(
        doc.user_groups.iter().map(|g| g.name.as_str()),
        &added(Kind::Group),
    ) && tail_is(
        doc.users.iter().map(|u| u.username.as_str()),
        &added(Kind::User),
    ) && tail_is(doc.nodes.iter().map(String::as_str), &added(Kind::Node))
        && tail_is(
            doc.assets.iter().map(|a| a.name.as_str()),
            &added(Kind::Asset),
        )
        && tail_is(
            doc.grants.iter().map(|g| g.name.as_str()),
            &added(Kind::Grant),
        )
        && tail_is(
            doc.command_filters.iter().map(|f| f.name.as_str()),
            &added(Kind::Filter),
        )
        && {
            // By name: a whole apply adds accounts to every asset.
            let assets: HashMap<&str, &jms_core::model::Asset> =
                doc.assets.iter().map(|a| (a.name.as_str(), a)).collect();
            accounts.iter().all(|(asset, names)| {
                assets
                    .get(asset)
                    .is_some_and(|a| tail_is(a.accounts.iter().map(|acc| acc.name.as_str()), names))
            })
        }
}

fn split_account(name: &str) -> (&str, &str) {
    // Asset names cannot hold `/` (jms-core refuses it).
    name.split_once('/').unwrap_or((name, ""))
}

fn without_secrets(user: &User) -> User {
    let mut user = user.clone();
    user.password_hash = None;
    user.totp_secret = None;
    user
}

/// A new user or user group may not take a system name (`root`, `sudo`,
/// `wheel`, …: [`jms_core::local_accounts::RESERVED_NAMES`]): on a bastion
/// the local account would win and the jms password or key could open a
/// real shell. Entities created before the rule stay editable and
/// removable.
fn refuse_reserved_names(changes: &[Change]) -> Result<()> {
    for change in changes {
        let what = match change.kind {
            Kind::User => "user",
            Kind::Group => "user group",
            _ => continue,
        };
        if change.op == Op::Add && jms_core::local_accounts::is_reserved_name(&change.name) {
            return Err(AdminError::Invalid(format!(
                "{what} `{}`: the name is reserved for system accounts and groups on the bastions \
                 (root, daemon, bin, sys, adm, sudo, wheel, sshd, nobody, …); choose another name",
                change.name
            )));
        }
    }
    Ok(())
}

fn refuse_secret_files(doc: &PolicyDocument) -> Result<()> {
    for asset in &doc.assets {
        for account in &asset.accounts {
            if account.secret_file.is_some() {
                return Err(AdminError::BadInput(format!(
                    "asset `{}`: account `{}`: `secret_file` is read by jmsctl, not by the server: send `secret`",
                    asset.name, account.name
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn parse_settings(document: Option<serde_json::Value>) -> Result<Settings> {
    match document {
        None => Ok(Settings::default()),
        Some(value) => serde_json::from_value(value).map_err(|e| {
            AdminError::Store(StoreError::Corrupt {
                table: "settings",
                message: e.to_string(),
            })
        }),
    }
}

/// `section.field` names whose values differ (the password aside).
fn settings_fields(old: &Settings, new: &Settings) -> Vec<String> {
    let (old, new) = (
        serde_json::to_value(old).expect("settings serialise"),
        serde_json::to_value(new).expect("settings serialise"),
    );
    let mut fields = Vec::new();
    if let (Some(old), Some(new)) = (old.as_object(), new.as_object()) {
        for (section, new_section) in new {
            let old_section = &old[section];
            if let Some(map) = new_section.as_object() {
                for (key, value) in map {
                    if old_section.get(key) != Some(value) {
                        fields.push(format!("{section}.{key}"));
                    }
                }
            }
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
users:
  - {username: alice, groups: [ops]}
  - {username: bob, groups: [dev]}
  - {username: carol}
user_groups: [{name: ops}, {name: dev}, {name: idle}]
nodes: [/Default/prod/web, /Default/test]
assets:
  - name: web01
    address: 10.0.0.1
    protocols: [{name: ssh, port: 22}]
    nodes: [/Default/prod/web]
    accounts: [{name: root, username: root, secret_type: password, secret: pw}]
  - {name: test01, address: 10.0.0.2, protocols: [{name: ssh, port: 22}], nodes: [/Default/test]}
grants:
  - {name: ops-web, user_groups: [ops], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all]}
  - {name: bob-test, users: [bob], nodes: [/Default/test], accounts: ["@INPUT"], protocols: [ssh], actions: [connect]}
command_filters:
  - {name: no-rm, action: deny, rules: ['^rm'], users: [carol], user_groups: [dev], assets: ['@ALL'], accounts: ['@ALL']}
"#;

    fn admin() -> (tempfile::TempDir, Arc<PolicyService>) {
        let dir = tempfile::tempdir().unwrap();
        let admin = crate::services::Services::open(&dir.path().join("data"))
            .unwrap()
            .policy;
        let doc: PolicyDocument = serde_yaml_ng::from_str(POLICY).unwrap();
        admin
            .change("test", false, |d| {
                *d = doc;
                Ok(())
            })
            .unwrap();
        (dir, admin)
    }

    /// What the whole check says about the document `edit` makes.
    fn whole_check(admin: &PolicyService, edit: &dyn Fn(&mut PolicyDocument)) -> String {
        let mut doc = admin.document(true).unwrap();
        edit(&mut doc);
        match Policy::from_document(doc, "policy", Path::new("/nonexistent")) {
            Ok(_) => "valid".into(),
            Err(e) => policy_message(&e),
        }
    }

    #[test]
    fn a_bad_single_write_is_refused_with_the_whole_checks_message() {
        let (_dir, admin) = admin();
        type Edit = Box<dyn Fn(&mut PolicyDocument)>;
        let edits: Vec<(&str, Edit)> = vec![
            (
                "user a grant names",
                Box::new(|d| d.users.retain(|u| u.username != "bob")),
            ),
            (
                "group a user, a grant and a filter name",
                Box::new(|d| d.user_groups.retain(|g| g.name != "dev")),
            ),
            (
                "node an asset sits in",
                Box::new(|d| d.nodes.retain(|n| n != "/Default/test")),
            ),
            (
                "asset a grant names",
                Box::new(|d| d.assets.retain(|a| a.name != "web01")),
            ),
            (
                "user in an unknown group",
                Box::new(|d| d.users[2].groups.push("nope".into())),
            ),
            (
                "grant with an unknown asset",
                Box::new(|d| {
                    let mut g = d.grants[0].clone();
                    g.name = "more".into();
                    g.assets.push("db99".into());
                    d.grants.push(g);
                }),
            ),
            (
                "filter with a bad regex",
                Box::new(|d| d.command_filters[0].rules.push("(".into())),
            ),
            (
                "account with an empty username",
                Box::new(|d| d.assets[0].accounts[0].username = " ".into()),
            ),
            (
                "a duplicate user",
                Box::new(|d| {
                    let u = d.users[0].clone();
                    d.users.push(u);
                }),
            ),
            (
                "a bad password hash",
                Box::new(|d| d.users[0].password_hash = Some(Secret::new("plain"))),
            ),
        ];
        let version = admin.version().unwrap();
        for (what, edit) in &edits {
            let expected = whole_check(&admin, edit.as_ref());
            assert_ne!(expected, "valid", "{what}: the edit must be bad");
            let err = admin
                .change("test", false, |d| {
                    edit(d);
                    Ok(())
                })
                .expect_err(what);
            let AdminError::Invalid(message) = err else {
                panic!("{what}: expected a policy error, got {err}");
            };
            assert_eq!(
                message, expected,
                "{what}: the same message as the whole check"
            );
        }
        assert_eq!(admin.version().unwrap(), version, "nothing was written");
    }

    #[test]
    fn reserved_names_are_refused_for_new_users_and_groups() {
        let (_dir, admin) = admin();
        let version = admin.version().unwrap();
        for name in ["root", "sudo", "wheel", "Daemon", "sshd", "nobody"] {
            let err = admin
                .change("test", false, |d| {
                    let mut u = d.users[0].clone();
                    u.username = name.into();
                    d.users.push(u);
                    Ok(())
                })
                .expect_err(name);
            assert!(
                matches!(&err, AdminError::Invalid(m) if m.contains("reserved") && m.contains(name)),
                "user {name}: {err}"
            );
            let err = admin
                .change("test", false, |d| {
                    let mut g = d.user_groups[0].clone();
                    g.name = name.into();
                    d.user_groups.push(g);
                    Ok(())
                })
                .expect_err(name);
            assert!(
                matches!(&err, AdminError::Invalid(m) if m.contains("reserved")),
                "group {name}: {err}"
            );
        }
        assert_eq!(admin.version().unwrap(), version, "nothing was written");
    }

    #[test]
    fn good_single_writes_pass_and_the_kept_document_matches_the_store() {
        let (_dir, admin) = admin();
        admin
            .change("test", false, |d| {
                d.users.retain(|u| u.username != "carol");
                d.command_filters[0].users.clear();
                Ok(())
            })
            .unwrap();
        admin
            .change("test", false, |d| {
                let mut u = d.users[0].clone();
                u.username = "zed".into();
                d.users.push(u);
                d.grants[1].users.push("zed".into());
                Ok(())
            })
            .unwrap();
        let kept = lock(&admin.stored).clone().expect("kept after the write").1;
        let stored = admin.document(true).unwrap();
        assert_eq!(
            serde_json::to_value(&*kept).unwrap(),
            serde_json::to_value(&stored).unwrap(),
            "the document kept in memory is the one stored"
        );
        // A whole document in another order is not kept (the store has its own).
        admin
            .change("test", false, |d| {
                let mut u = d.users[0].clone();
                u.username = "amy".into();
                d.users.insert(0, u);
                Ok(())
            })
            .unwrap();
        assert!(lock(&admin.stored).is_none());
        assert_eq!(admin.document(true).unwrap().users.len(), 4);
    }

    #[test]
    fn history_gives_the_changes_since_a_version_it_still_holds() {
        let mut history = History {
            floor: 10,
            changes: VecDeque::new(),
        };
        history.record(11, vec![(Kind::User, "alice".into())]);
        history.record(
            12,
            vec![(Kind::Grant, "g1".into()), (Kind::User, "alice".into())],
        );
        history.record(13, vec![]);
        assert_eq!(
            history.since(10, 13).unwrap(),
            vec![(Kind::User, "alice".into()), (Kind::Grant, "g1".into())]
        );
        assert_eq!(history.since(12, 13).unwrap(), vec![]);
        assert!(history.since(9, 13).is_none(), "before the floor");
        assert!(history.since(11, 14).is_none(), "a version it never saw");
        // A version that skips one (another writer): the past is unknown.
        history.record(15, vec![(Kind::User, "bob".into())]);
        assert!(history.since(13, 15).is_none());
        assert!(history.since(15, 15).is_none());
        for v in 16..16 + HISTORY as u64 + 5 {
            history.record(v, vec![]);
        }
        assert_eq!(history.changes.len(), HISTORY, "bounded");
        assert!(history.since(16, history.top()).is_none(), "evicted");
    }
}
