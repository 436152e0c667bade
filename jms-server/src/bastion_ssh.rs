//! The server's SSH client to an enrolled bastion (crate `russh`), for the
//! engineers' web terminal and file manager: it logs in to the bastion's
//! sshd as the engineer with a fresh one-time web ticket
//! ([`jms_sync::ticket`]) as the password, accepts only the host keys the
//! bastion gave at enrollment, and opens the ticket's target through the
//! bastion's normal ForceCommand path (jms-agent), so grants, recording,
//! command filters, transfer audit and live watch/kill apply unchanged.
//!
//! - [`connect`]: the authenticated connection for one target
//!   (`account@asset`), bound to it on the bastion (jms-agentd refuses any
//!   other target through it).
//! - [`Connection::open_shell`]: a pty session on the target (what
//!   `ssh -t bastion account@asset` gives).
//! - [`Connection::open_sftp`]: the sftp subsystem; the target's files are
//!   under [`Connection::sftp_root`] (`/account@asset`), as for `sftp`.
//!
//! Where the bastion's sshd is: `[sshd] address` of its agentd.toml, sent
//! at enrollment; without it, the address its sync requests come from,
//! port 22.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use jms_sync::ticket::Ticket;
use russh::client;
use russh::keys::{PublicKey, PublicKeyOrCertificate};

use crate::sync::SyncService;

/// How long connecting and logging in may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Keepalives on an idle connection (a web terminal left open).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Who opens what, from where.
#[derive(Debug, Clone)]
pub struct WebLogin {
    /// The engineer (jms user name) the portal logged in.
    pub user: String,
    /// The enrolled bastion to go through.
    pub bastion_id: i64,
    /// The target: asset and account names as granted.
    pub asset: String,
    pub account: String,
    /// The browser's address (the session's source in the audit).
    pub client: IpAddr,
}

/// Why the bastion could not be reached or refused the login.
#[derive(Debug, thiserror::Error)]
pub enum BastionSshError {
    #[error("bastion {0} is not enrolled")]
    NotEnrolled(i64),
    #[error("bastion {0} is revoked")]
    Revoked(String),
    #[error("bastion {0} gave no sshd host key at enrollment: enroll it again")]
    NoHostKey(String),
    #[error("bastion {0}: no sshd address known (set [sshd] address and enroll it again)")]
    NoAddress(String),
    #[error("bastion {name}: cannot reach {address}: {reason}")]
    Unreachable {
        name: String,
        address: String,
        reason: String,
    },
    #[error("bastion {0}: its sshd host key is not the one pinned at enrollment")]
    HostKeyMismatch(String),
    #[error("bastion {0} refused the login")]
    Refused(String),
    #[error("bastion {name}: {reason}")]
    Ssh { name: String, reason: String },
    #[error("no enrolled bastion gave an sshd host key: enroll one with [sshd] set")]
    NoBastion,
    #[error("{0}")]
    Store(String),
}

/// Accepts only the pinned host keys.
struct PinnedHost {
    keys: Vec<PublicKey>,
    mismatch: Arc<std::sync::atomic::AtomicBool>,
}

impl client::Handler for PinnedHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        offered: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let known = match offered {
            PublicKeyOrCertificate::PublicKey { key, .. } => self
                .keys
                .iter()
                .any(|pinned| pinned.key_data() == key.key_data()),
            PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !known {
            self.mismatch
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        Ok(known)
    }
}

/// A logged-in connection to a bastion, for one target.
pub struct Connection {
    handle: client::Handle<PinnedHost>,
    name: String,
    target: String,
}

/// Connects to `login`'s bastion and logs in with a fresh ticket.
pub async fn connect(
    sync: Arc<SyncService>,
    login: &WebLogin,
) -> Result<Connection, BastionSshError> {
    let id = login.bastion_id;
    let sshd = {
        let sync = Arc::clone(&sync);
        tokio::task::spawn_blocking(move || sync.bastion_sshd(id))
            .await
            .map_err(|e| BastionSshError::Store(e.to_string()))?
            .map_err(|e| BastionSshError::Store(e.to_string()))?
            .ok_or(BastionSshError::NotEnrolled(id))?
    };
    let name = sshd.name.clone();
    if sshd.revoked {
        return Err(BastionSshError::Revoked(name));
    }
    let keys: Vec<PublicKey> = sshd
        .host_keys
        .iter()
        .filter_map(|line| PublicKey::from_openssh(line).ok())
        .collect();
    if keys.is_empty() {
        return Err(BastionSshError::NoHostKey(name));
    }
    let address = address_of(&sshd).ok_or_else(|| BastionSshError::NoAddress(name.clone()))?;
    let ticket = Ticket::new(
        &login.user,
        id,
        &login.asset,
        &login.account,
        login.client,
        chrono::Utc::now().timestamp(),
    );
    let password = sync.sign_ticket(&ticket);
    let mismatch = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let handler = PinnedHost {
        keys,
        mismatch: Arc::clone(&mismatch),
    };
    let config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE),
        keepalive_max: 4,
        nodelay: true,
        ..Default::default()
    });
    let unreachable = |reason: String| BastionSshError::Unreachable {
        name: name.clone(),
        address: address.clone(),
        reason,
    };
    let login_to = async {
        let mut handle = match client::connect(config, address.as_str(), handler).await {
            Ok(handle) => handle,
            Err(_) if mismatch.load(std::sync::atomic::Ordering::SeqCst) => {
                return Err(BastionSshError::HostKeyMismatch(name.clone()))
            }
            Err(e) => return Err(unreachable(e.to_string())),
        };
        let auth = handle
            .authenticate_password(&login.user, password)
            .await
            .map_err(|e| BastionSshError::Ssh {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        if !auth.success() {
            return Err(BastionSshError::Refused(name.clone()));
        }
        Ok(handle)
    };
    let handle = tokio::time::timeout(CONNECT_TIMEOUT, login_to)
        .await
        .map_err(|_| unreachable("timed out".into()))??;
    Ok(Connection {
        handle,
        name,
        target: format!("{}@{}", login.account, login.asset),
    })
}

/// The bastion the web portal goes through ([`SyncService::web_bastion`]).
pub async fn web_bastion(sync: Arc<SyncService>) -> Result<i64, BastionSshError> {
    tokio::task::spawn_blocking(move || sync.web_bastion())
        .await
        .map_err(|e| BastionSshError::Store(e.to_string()))?
        .map_err(|e| BastionSshError::Store(e.to_string()))?
        .ok_or(BastionSshError::NoBastion)
}

/// `host:port` of a bastion's sshd.
fn address_of(sshd: &crate::store::fleet::BastionSshd) -> Option<String> {
    if let Some(address) = &sshd.address {
        return Some(address.clone());
    }
    let seen = sshd.sync_address.as_deref()?;
    let ip = seen
        .parse::<SocketAddr>()
        .map(|s| s.ip())
        .or_else(|_| seen.parse::<IpAddr>())
        .ok()?;
    Some(SocketAddr::new(ip, 22).to_string())
}

impl Connection {
    fn ssh_error(&self, e: russh::Error) -> BastionSshError {
        BastionSshError::Ssh {
            name: self.name.clone(),
            reason: e.to_string(),
        }
    }

    /// `account@asset`, what the bastion is asked for.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A terminal session on the target: a pty of `cols`×`rows` and the
    /// target as the command (the ForceCommand reads it from
    /// `SSH_ORIGINAL_COMMAND`). Resize with `Channel::window_change`.
    pub async fn open_shell(
        &self,
        term: &str,
        cols: u32,
        rows: u32,
    ) -> Result<russh::Channel<client::Msg>, BastionSshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.ssh_error(e))?;
        channel
            .request_pty(true, term, cols, rows, 0, 0, &[])
            .await
            .map_err(|e| self.ssh_error(e))?;
        channel
            .exec(true, self.target.as_bytes())
            .await
            .map_err(|e| self.ssh_error(e))?;
        Ok(channel)
    }

    /// The sftp subsystem (the bastion's SFTP proxy): the target's files
    /// are under [`Self::sftp_root`].
    pub async fn open_sftp(&self) -> Result<russh::Channel<client::Msg>, BastionSshError> {
        let channel = self
            .handle
            .channel_open_session()
            .await
            .map_err(|e| self.ssh_error(e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| self.ssh_error(e))?;
        Ok(channel)
    }

    /// Where the target's files are in the sftp session: `/account@asset`.
    pub fn sftp_root(&self) -> String {
        format!("/{}", self.target)
    }

    /// Ends the connection.
    pub async fn close(self) {
        let _ = self
            .handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    }
}
