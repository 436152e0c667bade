//! The central store: what the server keeps, behind a storage trait.
//!
//! The trait speaks in rows of the policy model (`jms_core::model` types,
//! with secrets **sealed**: the store never sees a plaintext secret) and in
//! the server's own records (tokens, operation log, settings). It is shaped
//! so that a PostgreSQL backend can follow the SQLite one: plain
//! transactions, upserts keyed by names, pagination with limit/offset and a
//! substring filter, and no SQLite-only types in the interface.
//!
//! - [`sqlite`]: the default backend (embedded, WAL).
//! - [`postgres`]: PostgreSQL, for several instances on one database.
//! - [`tx`]: every statement, written once for both ([`sql`]: the layer
//!   they share).
//! - [`migrations`]: numbered, append-only schema migrations.

pub mod audit;
pub mod copy;
pub mod fleet;
pub mod jobs;
pub mod migrations;
pub mod password_tokens;
pub mod plans;
pub mod portal;
pub mod postgres;
pub mod sql;
pub mod sqlite;
pub mod tx;
pub mod web_admins;

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use jms_core::model::{Account, Asset, CommandFilter, Grant, User, UserGroup};
use serde::{Deserialize, Serialize};

pub use audit::{
    CommandQuery, CommandRecord, RecordingRow, SessionQuery, SessionRecord, TransferQuery,
    TransferRecord,
};
pub use fleet::BastionInfo;
pub use jobs::{AccountCheck, AssetFacts, JobEvent, JobRow, JobStatus};
pub use password_tokens::{PasswordTokenRow, Purpose};
pub use plans::PlanRow;
pub use portal::{PortalSessionLimits, PortalSessionRow};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;
pub use web_admins::{WebAdminRow, WebSessionRow};

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, locked for too long, constraint): the
    /// request fails with 500; look at the server log.
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL failed (connection, constraint, serialization).
    #[error("database: {0}")]
    Pg(#[from] ::postgres::Error),
    /// No PostgreSQL connection could be had from the pool in time.
    #[error("database: no connection: {0}")]
    Pool(String),
    /// A stored value does not decode (hand-edited or corrupt database):
    /// repair the named row.
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        table: &'static str,
        message: String,
    },
    /// The database was written by a newer jms-server: upgrade this one.
    #[error("database schema version {found} is newer than this jms-server knows ({known})")]
    TooNew { found: u32, known: u32 },
    /// No uid/gid left in the range: ids are never reused; widen the range.
    #[error("no free {kind} left for `{name}` (ids are never reused)")]
    IdsExhausted { kind: &'static str, name: String },
    /// The data directory could not be prepared.
    #[error("{path}: {message}")]
    Io { path: String, message: String },
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A kind of policy entity, as named in URLs, diffs and the operation log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Group,
    User,
    Node,
    Asset,
    Account,
    Grant,
    Filter,
}

impl Kind {
    /// In dependency order: a kind only refers to kinds before it.
    pub const ALL: [Kind; 7] = [
        Kind::Group,
        Kind::User,
        Kind::Node,
        Kind::Asset,
        Kind::Account,
        Kind::Grant,
        Kind::Filter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Group => "group",
            Kind::User => "user",
            Kind::Node => "node",
            Kind::Asset => "asset",
            Kind::Account => "account",
            Kind::Grant => "grant",
            Kind::Filter => "filter",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Creation and last-change times of a row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Stamps {
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A sealed secret: `crate::crypto` output, opaque to the store.
pub type Sealed = Vec<u8>;

/// A user row; `user.password_hash` and `user.totp_secret` are always
/// `None` here, the sealed values are beside them.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub uid: u32,
    pub user: User,
    pub password_hash: Option<Sealed>,
    pub totp_secret: Option<Sealed>,
    pub stamps: Stamps,
}

#[derive(Debug, Clone)]
pub struct GroupRow {
    pub id: i64,
    pub gid: u32,
    pub group: UserGroup,
    pub stamps: Stamps,
}

#[derive(Debug, Clone)]
pub struct NodeRow {
    pub id: i64,
    pub path: String,
    pub created_at: DateTime<Utc>,
}

/// An asset row; `asset.accounts` is always empty (accounts are rows of
/// their own).
#[derive(Debug, Clone)]
pub struct AssetRow {
    pub id: i64,
    pub asset: Asset,
    pub stamps: Stamps,
}

/// An account row; `account.secret` and `account.secret_file` are `None`.
#[derive(Debug, Clone)]
pub struct AccountRow {
    pub id: i64,
    pub asset: String,
    pub account: Account,
    pub secret: Option<Sealed>,
    pub stamps: Stamps,
}

#[derive(Debug, Clone)]
pub struct GrantRow {
    pub id: i64,
    pub grant: Grant,
    pub stamps: Stamps,
}

#[derive(Debug, Clone)]
pub struct FilterRow {
    pub id: i64,
    pub filter: CommandFilter,
    pub stamps: Stamps,
}

/// Every policy row, each kind in id (creation) order.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub groups: Vec<GroupRow>,
    pub users: Vec<UserRow>,
    pub nodes: Vec<NodeRow>,
    pub assets: Vec<AssetRow>,
    pub accounts: Vec<AccountRow>,
    pub grants: Vec<GrantRow>,
    pub filters: Vec<FilterRow>,
}

/// Which rows a list returns.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub limit: u32,
    pub offset: u64,
    /// Case-insensitive substring of the kind's searchable columns.
    pub q: Option<String>,
}

/// One page of a list, and how many rows match in all.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// An admin role: what an API token or a web admin may do. Each role may
/// do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Reads the policy (never a secret), the audit trail and the fleet;
    /// watches sessions. No writes. (Tokens made as `read` are auditors.)
    Auditor,
    /// Also writes the policy (users, groups, nodes, assets, accounts,
    /// grants, filters), ends sessions. No settings, tokens, bastions.
    Operator,
    /// Everything: settings, enrollment tokens, revoking bastions,
    /// exporting secrets.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Auditor, Scope::Operator, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Auditor => "auditor",
            Scope::Operator => "operator",
            Scope::Admin => "admin",
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auditor" | "read" => Ok(Scope::Auditor),
            "operator" => Ok(Scope::Operator),
            "admin" => Ok(Scope::Admin),
            other => Err(format!(
                "unknown role `{other}` (expected auditor, operator or admin)"
            )),
        }
    }
}

/// An API token as stored (only the SHA-256 of the token itself).
#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub scope: Scope,
    pub created_at: DateTime<Utc>,
}

/// One entry of the operation log: who changed what, when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpLogEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// The token that made the change (`token 3 (ci)`), or the local command.
    pub actor: String,
    /// `create`, `update`, `delete`, `settings`, `token`, `export-secrets`.
    pub action: String,
    /// `user`, `group`, …, `settings`, `token`, `policy`.
    pub kind: String,
    /// Name of the entity (`alice`, `web01/root`, `/Default/prod`).
    pub name: String,
    /// Fields that changed (names only, never values).
    pub fields: Vec<String>,
    /// Policy version after the change.
    pub version: u64,
}

/// An entry to append (id and time are the store's).
#[derive(Debug, Clone)]
pub struct NewOpLogEntry {
    pub actor: String,
    pub action: String,
    pub kind: String,
    pub name: String,
    pub fields: Vec<String>,
    pub version: u64,
}

/// The stored system settings: the document (JSON, secrets removed) and
/// the sealed mail password.
#[derive(Debug, Clone, Default)]
pub struct StoredSettings {
    pub document: Option<serde_json::Value>,
    pub mail_password: Option<Sealed>,
}

/// An enrolled bastion.
#[derive(Debug, Clone)]
pub struct BastionRow {
    pub id: i64,
    pub name: String,
    /// Its Ed25519 public key (32 bytes).
    pub public_key: Vec<u8>,
    /// An admin revoked it: its requests are refused.
    pub revoked: bool,
}

/// A bastion enrollment token as stored (only its SHA-256 is kept).
#[derive(Debug, Clone)]
pub struct EnrollTokenRow {
    pub id: i64,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    /// The enrolled bastion this token may give a new key (the admin's
    /// `--replace NAME`); without it, an enrolled name is refused.
    pub replaces: Option<String>,
}

/// One audit event uploaded by a bastion, borrowed from the upload.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    /// Unique per bastion: a retried upload stores nothing new.
    pub idempotency_key: Cow<'a, str>,
    /// `session_start`, `command`, …
    pub kind: Cow<'a, str>,
    /// When it happened (RFC 3339, the bastion's clock).
    pub at: Cow<'a, str>,
    /// The whole event as the bastion sent it (a JSON object's text):
    /// stored as is, and parsed (typed) by the projection when new.
    pub body: &'a str,
}

/// A backend: hands out transactions.
/// The store as the services share it: each service keeps a handle and
/// runs its own transactions.
pub type Store = std::sync::Arc<dyn Storage>;

pub trait Storage: Send + Sync + 'static {
    /// A consistent read-only view.
    fn read(&self) -> Result<Box<dyn ReadTx + '_>>;
    /// The one write transaction at a time; dropped without
    /// [`WriteTx::commit`], it rolls back.
    fn write(&self) -> Result<Box<dyn WriteTx + '_>>;
    /// A write transaction that does not wait to be the one writer: on
    /// PostgreSQL it skips the advisory lock every [`Self::write`] takes
    /// across instances, so many run (and their commits flush) at once;
    /// SQLite has one writer anyway and runs [`Self::write`]. Only for
    /// statements whose guarantee is their own (a unique key with `ON
    /// CONFLICT DO NOTHING`, a blind update of one row, a delete of rows
    /// nothing reads again): the per-request writes of a bastion's
    /// signed requests (its nonce, last contact, version held; see
    /// `crate::sync::Verified::remember`). Never for a read-then-write
    /// that relies on seeing every earlier write (versions, ids, the
    /// oplog, one-time tokens read before use).
    fn write_unordered(&self) -> Result<Box<dyn WriteTx + '_>> {
        self.write()
    }
}

/// Reads, inside a transaction.
pub trait ReadTx {
    /// The global policy version (0 on an empty store).
    fn policy_version(&self) -> Result<u64>;
    /// Every policy row.
    fn snapshot(&self) -> Result<Snapshot>;
    /// The gid the server gave the bastions' primary group (`jms-users`,
    /// migration 4).
    fn primary_group_gid(&self) -> Result<Option<u32>>;

    fn users(&self, query: &ListQuery) -> Result<Page<UserRow>>;
    fn user(&self, username: &str) -> Result<Option<UserRow>>;
    fn groups(&self, query: &ListQuery) -> Result<Page<GroupRow>>;
    fn group(&self, name: &str) -> Result<Option<GroupRow>>;
    /// Usernames of a group's members.
    fn group_members(&self, name: &str) -> Result<Vec<String>>;
    fn nodes(&self, query: &ListQuery) -> Result<Page<NodeRow>>;
    fn node(&self, id: i64) -> Result<Option<NodeRow>>;
    fn node_by_path(&self, path: &str) -> Result<Option<NodeRow>>;
    fn assets(&self, query: &ListQuery) -> Result<Page<AssetRow>>;
    fn asset(&self, name: &str) -> Result<Option<AssetRow>>;
    /// Accounts of one asset, or of every asset.
    fn accounts(&self, asset: Option<&str>, query: &ListQuery) -> Result<Page<AccountRow>>;
    fn account(&self, asset: &str, name: &str) -> Result<Option<AccountRow>>;
    fn grants(&self, query: &ListQuery) -> Result<Page<GrantRow>>;
    fn grant(&self, name: &str) -> Result<Option<GrantRow>>;
    fn filters(&self, query: &ListQuery) -> Result<Page<FilterRow>>;
    fn filter(&self, name: &str) -> Result<Option<FilterRow>>;

    fn settings(&self) -> Result<StoredSettings>;
    /// Newest first.
    fn oplog(&self, query: &ListQuery) -> Result<Page<OpLogEntry>>;
    /// The live (not revoked) token with this SHA-256.
    fn token_by_hash(&self, sha256: &[u8]) -> Result<Option<TokenRow>>;

    /// An enrolled bastion by id.
    fn bastion(&self, id: i64) -> Result<Option<BastionRow>>;
    /// An enrolled bastion's sshd (address, pinned host keys).
    fn bastion_sshd(&self, id: i64) -> Result<Option<fleet::BastionSshd>>;
    /// An enrollment token by its SHA-256 (used or not, expired or not).
    fn enroll_token(&self, sha256: &[u8]) -> Result<Option<EnrollTokenRow>>;
    /// Every enrolled bastion (revoked ones too), by name.
    fn bastions(&self) -> Result<Vec<BastionInfo>>;
    fn bastion_by_name(&self, name: &str) -> Result<Option<BastionInfo>>;
    /// How many events are stored (of one bastion, or of all).
    fn count_events(&self, bastion_id: Option<i64>) -> Result<u64>;

    /// The newest `limit` account jobs, newest first (of one asset).
    fn jobs(&self, asset: Option<&str>, limit: usize) -> Result<Vec<JobRow>>;
    fn job(&self, id: &str) -> Result<Option<JobRow>>;
    /// Every scheduled plan, by name.
    fn plans(&self) -> Result<Vec<PlanRow>>;
    fn plan(&self, name: &str) -> Result<Option<PlanRow>>;
    /// The plans due at `now`.
    fn due_plans(&self, now: DateTime<Utc>) -> Result<Vec<PlanRow>>;
    /// An asset's facts from its last discovery.
    fn asset_facts(&self, asset: &str) -> Result<Option<AssetFacts>>;
    /// A job's steps as its bastions' audit events said them.
    fn job_events(&self, id: &str) -> Result<Vec<JobEvent>>;
    /// Every running account job.
    fn running_jobs(&self) -> Result<Vec<JobRow>>;
    /// The running jobs of `bastion` whose current order it has not
    /// taken, oldest first, at most `limit` (and 64).
    fn undelivered_jobs(&self, bastion: &str, limit: usize) -> Result<Vec<JobRow>>;
    /// How many running jobs `bastion` took the current order of.
    fn delivered_jobs(&self, bastion: &str) -> Result<u64>;
    /// The newest ended job of an account that kept its new secret.
    fn unsettled_job(&self, asset: &str, account: &str) -> Result<Option<JobRow>>;
    /// The last verification of every account checked.
    fn account_checks(&self) -> Result<Vec<AccountCheck>>;
    /// How many replaced secrets of an account are kept (sealed).
    fn secret_history_count(&self, asset: &str, account: &str) -> Result<u64>;

    /// Sessions matching `query`, newest first (see [`audit`]).
    fn sessions(&self, query: &SessionQuery) -> Result<Page<SessionRecord>>;
    fn session(&self, id: &str) -> Result<Option<SessionRecord>>;
    /// Commands matching `query`: newest first, or oldest first (the order
    /// typed, for one session's detail).
    fn commands(&self, query: &CommandQuery, oldest_first: bool) -> Result<Page<CommandRecord>>;
    /// Transfers matching `query`: newest first, or oldest first.
    fn transfers(&self, query: &TransferQuery, oldest_first: bool) -> Result<Page<TransferRecord>>;
    /// A session's recording, complete or not.
    fn recording(&self, session: &str) -> Result<Option<RecordingRow>>;
    /// A set-password link by its token's SHA-256 (used, revoked or
    /// expired too).
    fn password_token(&self, sha256: &[u8]) -> Result<Option<PasswordTokenRow>>;

    /// Every web admin (audit web logins), by username.
    fn web_admins(&self) -> Result<Vec<WebAdminRow>>;
    fn web_admin(&self, username: &str) -> Result<Option<WebAdminRow>>;
    /// The web login session with this token SHA-256 (expired or not).
    fn web_session(&self, sha256: &[u8]) -> Result<Option<WebSessionRow>>;
    /// The portal login session with this token SHA-256 (dead or not).
    fn portal_session(&self, sha256: &[u8]) -> Result<Option<PortalSessionRow>>;
    /// How many portal sessions `username` holds that expire after `now`
    /// and were used at or after `idle_since`.
    fn live_portal_sessions(
        &self,
        username: &str,
        now: DateTime<Utc>,
        idle_since: DateTime<Utc>,
    ) -> Result<u64>;
}

/// Writes, inside the write transaction.
pub trait WriteTx: ReadTx {
    /// Inserts or replaces the user (by username) and her group
    /// memberships; a new user gets her uid here (her old one if the name
    /// had one before: ids are never given to another name).
    fn put_user(
        &mut self,
        user: &User,
        password_hash: Option<&[u8]>,
        totp_secret: Option<&[u8]>,
    ) -> Result<()>;
    fn delete_user(&mut self, username: &str) -> Result<()>;
    /// Inserts or replaces the group; a new group gets its gid here.
    fn put_group(&mut self, group: &UserGroup) -> Result<()>;
    fn delete_group(&mut self, name: &str) -> Result<()>;
    fn put_node(&mut self, path: &str) -> Result<()>;
    fn delete_node(&mut self, path: &str) -> Result<()>;
    /// Inserts or replaces the asset (its `accounts` are ignored).
    fn put_asset(&mut self, asset: &Asset) -> Result<()>;
    /// Deletes the asset and its accounts.
    fn delete_asset(&mut self, name: &str) -> Result<()>;
    fn put_account(&mut self, asset: &str, account: &Account, secret: Option<&[u8]>) -> Result<()>;
    fn delete_account(&mut self, asset: &str, name: &str) -> Result<()>;
    fn put_grant(&mut self, grant: &Grant) -> Result<()>;
    fn delete_grant(&mut self, name: &str) -> Result<()>;
    fn put_filter(&mut self, filter: &CommandFilter) -> Result<()>;
    fn delete_filter(&mut self, name: &str) -> Result<()>;

    /// Bumps the global policy version; returns the new one.
    fn bump_version(&mut self) -> Result<u64>;
    fn append_oplog(&mut self, entry: &NewOpLogEntry) -> Result<()>;
    fn put_settings(
        &mut self,
        document: &serde_json::Value,
        mail_password: Option<&[u8]>,
    ) -> Result<()>;
    /// Stores a token by its SHA-256; returns its id.
    fn insert_token(&mut self, name: &str, scope: Scope, sha256: &[u8]) -> Result<i64>;

    /// Stores an enrollment token by its SHA-256 (allowed to replace the
    /// key of bastion `replaces`, if given); returns its id.
    fn insert_enroll_token(
        &mut self,
        sha256: &[u8],
        expires_at: DateTime<Utc>,
        replaces: Option<&str>,
    ) -> Result<i64>;
    /// Marks a token used by `bastion_id` (it never works again).
    fn use_enroll_token(&mut self, id: i64, bastion_id: i64) -> Result<()>;
    /// Registers a new bastion and returns its id. An existing name gets
    /// the new key only with `replace` (the token says so); otherwise
    /// nothing changes and `None` is returned.
    fn put_bastion(&mut self, name: &str, public_key: &[u8], replace: bool) -> Result<Option<i64>>;
    /// Records a bastion's sshd as its enrollment gave it.
    fn set_bastion_sshd(
        &mut self,
        id: i64,
        address: Option<&str>,
        host_keys: &[String],
    ) -> Result<()>;
    /// Records that the bastion was seen (and the version it holds).
    fn touch_bastion(&mut self, id: i64, policy_version: Option<u64>) -> Result<()>;
    /// Revokes a bastion: its key is refused from then on; false when no
    /// such bastion is enrolled or it was revoked before.
    fn revoke_bastion(&mut self, name: &str) -> Result<bool>;
    /// Puts an enrolled bastion in `zone` (none: no zone); false when no
    /// such bastion is enrolled.
    fn set_bastion_zone(&mut self, name: &str, zone: Option<&str>) -> Result<bool>;
    /// Records where a bastion's request came from and, with its control
    /// poll, what it reported.
    fn note_bastion(
        &mut self,
        id: i64,
        address: Option<&str>,
        report: Option<&jms_sync::fleet::StatusReport>,
    ) -> Result<()>;
    /// Remembers a request nonce; false when it was seen before (a
    /// replay). Forgets this bastion's nonces older than `forget_before`
    /// (Unix seconds).
    fn remember_nonce(
        &mut self,
        bastion_id: i64,
        nonce: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<bool>;
    /// The id of an event source that is not a bastion (the engineers'
    /// portal: `@portal`): a `bastions` row without a key, made on first
    /// use, never listed, enrolled or verified (its name is not a bastion
    /// name). Its events are the server's own.
    fn local_source(&mut self, name: &str) -> Result<i64>;
    /// Stores a batch of events, each unless its idempotency key is
    /// already stored, and projects the new ones into sessions, commands,
    /// transfers and logins (see [`audit`]); returns how many were new.
    fn store_events(&mut self, bastion_id: i64, events: &[NewEvent<'_>]) -> Result<usize>;
    /// Inserts or replaces a recording's row.
    fn put_recording(&mut self, row: &RecordingRow) -> Result<()>;
    fn delete_recording(&mut self, session: &str) -> Result<()>;
    /// Stores a set-password link for the user by its token's SHA-256,
    /// revoking her older unused ones; returns its id.
    fn insert_password_token(
        &mut self,
        user_id: i64,
        purpose: Purpose,
        sha256: &[u8],
        expires_at: DateTime<Utc>,
    ) -> Result<i64>;
    /// Marks a link used if it is still unused, unrevoked and unexpired;
    /// false when it was not (it never works twice).
    fn use_password_token(&mut self, id: i64) -> Result<bool>;
    /// Revokes a link (its mail could not be sent).
    fn revoke_password_token(&mut self, id: i64) -> Result<()>;

    /// Adds a web admin (the name must be free); returns its id.
    fn insert_web_admin(
        &mut self,
        username: &str,
        password_hash: &[u8],
        totp_secret: &[u8],
        role: Scope,
    ) -> Result<i64>;
    /// Removes a web admin and its sessions; false when there was none.
    fn delete_web_admin(&mut self, username: &str) -> Result<bool>;
    /// Records a successful login: the TOTP step it used (never accepted
    /// again) and the time.
    fn record_web_login(&mut self, admin_id: i64, totp_step: i64) -> Result<()>;
    /// Stores a login session by its token's SHA-256.
    fn insert_web_session(
        &mut self,
        sha256: &[u8],
        admin_id: i64,
        expires_at: DateTime<Utc>,
        remote_addr: Option<&str>,
    ) -> Result<()>;
    /// Marks a session used now (for the idle timeout).
    fn touch_web_session(&mut self, sha256: &[u8]) -> Result<()>;
    /// Ends one session (logout).
    fn delete_web_session(&mut self, sha256: &[u8]) -> Result<()>;
    /// Forgets sessions that expired before `now`; returns how many.
    fn delete_expired_web_sessions(&mut self, now: DateTime<Utc>) -> Result<u64>;

    /// A new portal login session of `username` until `expires_at`. Dead
    /// sessions (expired, or idle before `limits.idle_since`) are deleted
    /// first; then her oldest and everyone's least recently used, so that
    /// with the new one she holds at most `limits.per_user` and all
    /// together at most `limits.total`.
    fn insert_portal_session(
        &mut self,
        sha256: &[u8],
        username: &str,
        expires_at: DateTime<Utc>,
        limits: PortalSessionLimits,
    ) -> Result<()>;
    /// Marks a portal session used now.
    fn touch_portal_session(&mut self, sha256: &[u8]) -> Result<()>;
    /// Ends one portal session; the engineer it belonged to, if any.
    fn delete_portal_session(&mut self, sha256: &[u8]) -> Result<Option<String>>;
    /// One event of rate limit `limiter` for `subject` at `now`, if fewer
    /// than `max` were let through since `since`: recorded and `true`;
    /// else `false`. Hits of `limiter` older than `since` are deleted.
    fn rate_limit_hit(
        &mut self,
        limiter: &str,
        subject: &str,
        max: u64,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;

    /// Records a new account job.
    fn insert_job(&mut self, job: &JobRow) -> Result<()>;
    /// Ends a running job; false when it was not running.
    fn finish_job(
        &mut self,
        id: &str,
        status: JobStatus,
        changed: bool,
        steps: &[jms_sync::job::JobStep],
        error: Option<&str>,
    ) -> Result<bool>;
    /// Gives running job `id` (at `attempt`) to `bastion` as its next
    /// attempt; false when another instance or its report got there first.
    fn claim_job_retry(&mut self, id: &str, attempt: u32, bastion: &str) -> Result<bool>;
    /// Marks the order of `id`'s attempt `attempt` taken by `bastion`'s
    /// control poll; false when it was taken before (or the job moved on).
    fn claim_job_delivery(&mut self, id: &str, attempt: u32, bastion: &str) -> Result<bool>;
    /// Forgets `id`'s new secret and those kept for its account.
    fn settle_job_secrets(&mut self, id: &str, account: Option<(&str, &str)>) -> Result<()>;
    /// Adds a plan; false when one has that name.
    fn insert_plan(&mut self, plan: &PlanRow) -> Result<bool>;
    fn delete_plan(&mut self, name: &str) -> Result<bool>;
    /// Claims a due plan's run (moves `next_run` from `due` to `next`);
    /// false when another instance claimed it first.
    fn claim_plan(
        &mut self,
        name: &str,
        due: DateTime<Utc>,
        next: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool>;
    /// Notes what a claimed run started.
    fn plan_ran(&mut self, name: &str, jobs: &[String], error: Option<&str>) -> Result<()>;
    /// Keeps an asset's facts from a discovery.
    fn put_asset_facts(&mut self, asset: &str, facts: &AssetFacts) -> Result<()>;
    /// Records an account's verification.
    fn put_account_check(&mut self, check: &AccountCheck) -> Result<()>;
    /// Keeps a replaced secret (sealed by the caller).
    fn add_secret_history(
        &mut self,
        asset: &str,
        account: &str,
        sealed: &[u8],
        job: Option<&str>,
    ) -> Result<()>;

    fn commit(self: Box<Self>) -> Result<()>;
}
