//! The server's write path: every change to the policy is an edit of the
//! whole document, checked by jms-core before it is committed.
//!
//! A change runs in the store's write transaction: load every row, open
//! the sealed secrets, apply the edit in memory, run
//! [`Policy::from_document`] (the same checks a policy file gets: names,
//! references, regexes, hash formats), diff the result against what was
//! stored, write only what differs (sealing secrets again), bump the global
//! policy version and append one operation-log entry per changed entity —
//! or roll everything back and return jms-core's message.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use jms_core::model::{Account, PolicyDocument, Secret, User};
use jms_core::{Policy, PolicyError};

use crate::crypto::{self, CryptoError, SealKey};
use crate::diff::{diff, Change, Op};
use crate::settings::Settings;
use crate::store::{
    AccountRow, Kind, NewOpLogEntry, ReadTx, Scope, Snapshot, SqliteStore, Storage, StoreError,
    TokenRow, UserRow, WriteTx,
};

/// Name of the SQLite database in the data directory.
pub const DB_FILE: &str = "jms.db";

/// Why a request was not carried out; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The named entity does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// An entity of that name already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (400): fix it and retry.
    #[error("{0}")]
    BadInput(String),
    /// The change would make the policy invalid (422): jms-core's message
    /// names the entity and field to fix.
    #[error("{0}")]
    Invalid(String),
    /// The token's scope does not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A secret could not be opened (500): wrong key file.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

pub type Result<T> = std::result::Result<T, AdminError>;

/// What a change did (or, dry, would do).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Applied {
    pub changes: Vec<Change>,
    /// The policy version after the change (unchanged by a dry run or an
    /// edit that changed nothing).
    pub version: u64,
    pub dry_run: bool,
}

/// The central server's state: the store and the key that seals secrets.
pub struct Admin {
    pub(crate) store: Box<dyn Storage>,
    key: SealKey,
    pub(crate) sync: crate::sync::SyncState,
    /// Uploaded session recordings (`crate::recordings`).
    pub(crate) recordings: crate::recordings::Recordings,
}

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

impl Admin {
    /// Opens the data directory (created 0700 if absent; refused when
    /// others may write to it), its key file and its database.
    pub fn open(data_dir: &Path) -> Result<Admin> {
        let io = |message: String| StoreError::Io {
            path: data_dir.display().to_string(),
            message,
        };
        if !data_dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|e| io(format!("cannot create: {e}")))?;
        }
        let mode = fs::metadata(data_dir)
            .map_err(|e| io(format!("cannot stat: {e}")))?
            .permissions()
            .mode();
        if mode & 0o022 != 0 {
            return Err(io(format!(
                "mode {:04o}: others may write to the data directory (chmod 700 it)",
                mode & 0o7777
            ))
            .into());
        }
        let key = SealKey::load_or_create(data_dir)?;
        let server_key = crate::sync::ServerKey::load_or_create(data_dir)?;
        let db = data_dir.join(DB_FILE);
        // Created 0600 before SQLite opens it; its -wal and -shm files
        // inherit the mode.
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&db)
            .map_err(|e| io(format!("{}: {e}", db.display())))?;
        let db_mode = fs::metadata(&db)
            .map_err(|e| io(format!("{}: {e}", db.display())))?
            .permissions()
            .mode();
        if db_mode & 0o077 != 0 {
            return Err(io(format!(
                "{}: mode {:04o} is too open: the database must be 0600 (chmod 600 it)",
                db.display(),
                db_mode & 0o7777
            ))
            .into());
        }
        let store = SqliteStore::open(&db)?;
        let admin = Admin::new(Box::new(store), key, server_key);
        let recordings = data_dir.join(crate::recordings::RECORDINGS_DIR);
        admin
            .recordings
            .set_dir(recordings.clone())
            .map_err(|e| io(format!("{}: {e}", recordings.display())))?;
        Ok(admin)
    }

    pub fn new(store: Box<dyn Storage>, key: SealKey, server_key: crate::sync::ServerKey) -> Admin {
        // An unreadable version only costs deltas until the next write.
        let version = store
            .read()
            .and_then(|tx| tx.policy_version())
            .unwrap_or(0);
        Admin {
            store,
            key,
            sync: crate::sync::SyncState::new(server_key, version),
            recordings: Default::default(),
        }
    }

    /// The key that seals secrets at rest, for modules that keep sealed
    /// rows of their own (the audit web's admins).
    pub(crate) fn seal_key(&self) -> &SealKey {
        &self.key
    }

    /// A read transaction.
    pub fn read(&self) -> Result<Box<dyn ReadTx + '_>> {
        Ok(self.store.read()?)
    }

    pub fn version(&self) -> Result<u64> {
        Ok(self.store.read()?.policy_version()?)
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
            account.secret = self.open_secret(place_account(&row.asset, &account.name), &row.secret)?;
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
        let old = self.open_snapshot(tx.snapshot()?, true)?;
        let mut new = old.clone();
        edit(&mut new)?;
        refuse_secret_files(&new)?;
        let new = Policy::from_document(new, "policy", Path::new("/nonexistent"))
            .map_err(|e| AdminError::Invalid(policy_message(&e)))?
            .doc;
        let changes = diff(&old, &new);
        let version = tx.policy_version()?;
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
        self.sync.committed(
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
        self.sync.committed(version, Vec::new());
        new.mail.password = None;
        Ok((new, has_password, version))
    }

    /// Creates an API token; returns its id and the token itself (shown
    /// once: only its SHA-256 is kept).
    pub fn create_token(&self, actor: &str, name: &str, scope: Scope) -> Result<(i64, String)> {
        let token = crypto::new_token();
        let mut tx = self.store.write()?;
        let id = tx.insert_token(name, scope, &crypto::token_hash(&token))?;
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "create".to_string(),
            kind: "token".to_string(),
            name: format!("{id} ({name}, {})", scope.as_str()),
            fields: Vec::new(),
            version,
        })?;
        tx.commit()?;
        Ok((id, token))
    }

    /// The live token behind a bearer string.
    pub fn authenticate(&self, token: &str) -> Result<Option<TokenRow>> {
        Ok(self
            .store
            .read()?
            .token_by_hash(&crypto::token_hash(token))?)
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
