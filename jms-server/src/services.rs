//! The server's services, wired in one place.
//!
//! Each service owns its state and its operations; what one needs of
//! another is a constructor argument here, so the dependencies read top
//! to bottom and none runs in a circle:
//!
//! - [`PolicyService`] (`policy`): the versioned policy document and
//!   settings: writes checked by jms-core, the version, what each recent
//!   version changed and a watch of it. Needs the store and the seal key.
//! - [`SyncService`] (`sync`): signed bundles and deltas, long-polls,
//!   enrollment and bastion request checks. Needs the policy service
//!   (version, document, changes, the watch) and the server key.
//! - [`AuditService`] (`audit`): event ingest (a request `sync` verified)
//!   and the audit queries.
//! - [`Recordings`] (`recordings`): uploaded session recordings.
//! - [`LiveService`] (`live`): orders for bastions, watched output, kill
//!   and unlock.
//! - [`Fleet`] (`fleet`): the bastions as admins see them, revocation,
//!   the silence alarm.
//! - [`Tokens`] (`tokens`): the admin API's tokens and roles.
//! - [`Links`] (`links`): self-service set-password links; a redeemed
//!   link writes through the policy service.
//! - [`JobService`] (`jobs`): account jobs (push, verify, rotate) run by
//!   a bastion; needs the policy service (vault), live (orders), fleet
//!   (who is online) and the seal key (secret history).
//! - [`WebAdmins`] (`web_admins`): the audit web's admin accounts, roles
//!   and login sessions; needs the seal key.
//! - [`Portal`](crate::engineers::Portal) (`portal`): the engineers' portal's
//!   logins and sessions; needs the policy service (users, settings, the
//!   policy it evaluates), audit (the login audit) and, for the file
//!   manager, sync (the server key that signs web tickets, the bastions'
//!   sshd).
//!
//! The store ([`Store`]) is shared: each service runs its own
//! transactions on it. The HTTP side (`crate::app`) gives each router the
//! services it uses.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::audit::AuditService;
use crate::bus::{Bus, Signal};
use crate::crypto::SealKey;
use crate::error::Result;
use crate::fleet::Fleet;
use crate::jobs::JobService;
use crate::live::LiveService;
use crate::policy::PolicyService;
use crate::recordings::{Recordings, RECORDINGS_DIR};
use crate::selfservice::links::Links;
use crate::store::{PgStore, SqliteStore, Store, StoreError};
use crate::sync::{ServerKey, SyncService};
use crate::tokens::Tokens;
use crate::web::admins::WebAdmins;

/// Name of the SQLite database in the data directory.
pub const DB_FILE: &str = "jms.db";

/// Every service of the server.
#[derive(Clone)]
pub struct Services {
    pub policy: Arc<PolicyService>,
    pub sync: Arc<SyncService>,
    pub audit: Arc<AuditService>,
    pub recordings: Arc<Recordings>,
    pub live: Arc<LiveService>,
    pub fleet: Arc<Fleet>,
    pub tokens: Arc<Tokens>,
    pub links: Arc<Links>,
    pub web_admins: Arc<WebAdmins>,
    pub jobs: Arc<JobService>,
    /// The engineers' portal: logins, sessions, the compiled policy.
    pub portal: Arc<crate::engineers::Portal>,
}

impl Services {
    /// Opens the data directory (created 0700 if absent; refused when
    /// others may write to it), its key files and its database.
    pub fn open(data_dir: &Path) -> Result<Services> {
        Services::open_with(data_dir, None)
    }

    /// Opens the data directory and its key files, and the database: the
    /// PostgreSQL one at `database` (`postgres://…`), else the SQLite one
    /// in the data directory. Instances sharing one PostgreSQL database
    /// share the key files too (the admin copies them: see
    /// docs/postgres.md); the database never holds them.
    pub fn open_with(data_dir: &Path, database: Option<&str>) -> Result<Services> {
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
        let server_key = ServerKey::load_or_create(data_dir)?;
        if let Some(url) = database {
            let store: Store = Arc::new(PgStore::open(url)?);
            return Ok(Services::with_bus(
                store,
                key,
                server_key,
                Some(data_dir.join(RECORDINGS_DIR)),
                Bus::postgres(url)?,
            ));
        }
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
        let store: Store = Arc::new(SqliteStore::open(&db)?);
        Ok(Services::new(
            store,
            key,
            server_key,
            Some(data_dir.join(RECORDINGS_DIR)),
        ))
    }

    /// The services over `store`: secrets sealed with `key`, bundles and
    /// answers signed with `server_key`, recordings kept in
    /// `recordings_dir` (none without one).
    pub fn new(
        store: Store,
        key: SealKey,
        server_key: ServerKey,
        recordings_dir: Option<PathBuf>,
    ) -> Services {
        Services::with_bus(store, key, server_key, recordings_dir, Bus::local())
    }

    /// The services, telling other instances on the same database what
    /// they must know over `bus` (see [`crate::bus`]).
    pub fn with_bus(
        store: Store,
        key: SealKey,
        server_key: ServerKey,
        recordings_dir: Option<PathBuf>,
        bus: Arc<Bus>,
    ) -> Services {
        let key = Arc::new(key);
        let policy = Arc::new(PolicyService::new(store.clone(), key.clone()));
        let sync = Arc::new(SyncService::new(server_key, policy.clone(), store.clone()));
        let live = Arc::new(LiveService::new(store.clone()));
        let fleet = Arc::new(Fleet::new(store.clone()));
        let jobs = Arc::new(JobService::new(
            store.clone(),
            policy.clone(),
            live.clone(),
            fleet.clone(),
            key.clone(),
        ));
        policy.set_bus(bus.clone());
        live.hub().set_bus(bus.clone());
        {
            let policy = Arc::downgrade(&policy);
            let live = Arc::downgrade(&live);
            bus.subscribe(move |signal| match signal {
                Signal::Version { version, changed } => {
                    if let Some(policy) = policy.upgrade() {
                        policy.remote_version(*version, changed.clone());
                    }
                }
                Signal::Order { bastion, order } => {
                    if let Some(live) = live.upgrade() {
                        live.hub().order_here(bastion, order.clone());
                    }
                }
                Signal::Jobs { bastion } => {
                    if let Some(live) = live.upgrade() {
                        live.hub().nudge_here(bastion);
                    }
                }
                Signal::Watching { bastion, session } => {
                    if let Some(live) = live.upgrade() {
                        live.hub().watched_elsewhere(bastion, session);
                    }
                }
                Signal::Output {
                    bastion,
                    session,
                    batch,
                } => {
                    if let Some(live) = live.upgrade() {
                        live.hub().push_here(bastion, session, batch.clone());
                    }
                }
                // The web's own subscriber (`crate::web::router`) and the
                // portal's (below).
                Signal::LoginFailed { .. }
                | Signal::LoginSucceeded { .. }
                | Signal::PortalLoginFailed { .. }
                | Signal::PortalLoginSucceeded { .. }
                | Signal::PortalUnlocked { .. }
                | Signal::PortalSignedOut { .. } => {}
            });
        }
        let audit = Arc::new(AuditService::new(store.clone()));
        let portal = Arc::new(crate::engineers::Portal::new(
            policy.clone(),
            audit.clone(),
            store.clone(),
        ));
        portal
            .files
            .set_opener(Arc::new(crate::engineers::sftp::BastionSftp::new(
                sync.clone(),
            )));
        portal.set_bus(bus.clone());
        {
            let portal = Arc::downgrade(&portal);
            bus.subscribe(move |signal| {
                if let Some(portal) = portal.upgrade() {
                    portal.remote(signal);
                }
            });
        }
        Services {
            audit,
            portal,
            recordings: Arc::new(Recordings::new(store.clone(), recordings_dir)),
            live,
            fleet,
            jobs,
            tokens: Arc::new(Tokens::new(store.clone())),
            links: Arc::new(Links::new(store.clone(), policy.clone())),
            web_admins: Arc::new(WebAdmins::new(store, key)),
            policy,
            sync,
        }
    }
}
