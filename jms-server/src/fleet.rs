//! The bastion fleet: what the server shows of each enrolled bastion
//! (`GET /api/v1/bastions`, `jmsctl bastion list|show`, the audit web's
//! fleet page), revocation (`jmsctl bastion revoke NAME`: its key is
//! refused from then on for every sync request; the audit it uploaded
//! stays), and the alarm raised when a bastion stops polling
//! (`--bastion-silent-after`, default 5 minutes).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jms_sync::fleet::StatusReport;
use serde::Serialize;

use crate::error::{AdminError, Result};
use crate::store::{BastionInfo, NewOpLogEntry, Store};

/// How long a bastion may stay silent before the alarm, by default.
pub const DEFAULT_SILENT_AFTER: Duration = Duration::from_secs(300);

/// The fleet service: the enrolled bastions (rows the sync service writes
/// at enrollment and on every signed request) as admins see them, and the
/// alarm threshold, settable at start (`--bastion-silent-after`).
pub struct Fleet {
    store: Store,
    silent_after_secs: AtomicU64,
}

/// Where a bastion stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It polled within the alarm threshold.
    Online,
    /// No request for longer than the threshold: the alarm is raised.
    Silent,
    /// Revoked by an admin: its requests are refused.
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Silent => "silent",
            Status::Revoked => "revoked",
        }
    }
}

/// One bastion as the API, jmsctl and the web show it.
#[derive(Debug, Clone, Serialize)]
pub struct BastionView {
    pub name: String,
    pub status: Status,
    /// Where its last control poll came from (a proxy's address when the
    /// server sits behind one).
    pub address: Option<String>,
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Its last authenticated request.
    pub last_seen_at: Option<DateTime<Utc>>,
    /// Seconds since then (since enrollment when it never synced).
    pub silent_for_secs: Option<i64>,
    /// The policy version it holds, and how far behind the server's it is.
    pub policy_version: Option<u64>,
    pub server_version: u64,
    pub versions_behind: Option<u64>,
    /// From its last report (none from a jms-agentd too old to report).
    pub agent_version: Option<String>,
    pub open_sessions: Option<u64>,
    /// Bytes of audit events spooled on it and not yet uploaded.
    pub spool_backlog: Option<u64>,
    pub reported_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The zone an admin put it in: it runs the account jobs of that
    /// zone's assets (and of assets with no zone).
    pub zone: Option<String>,
}

fn view(
    info: BastionInfo,
    server_version: u64,
    silent_after: Duration,
    now: DateTime<Utc>,
) -> BastionView {
    let since = info.last_seen_at.or(info.enrolled_at);
    let silent_for = since.map(|at| (now - at).num_seconds().max(0));
    let status = if info.revoked_at.is_some() {
        Status::Revoked
    } else if silent_for.is_none_or(|secs| secs as u64 > silent_after.as_secs()) {
        Status::Silent
    } else {
        Status::Online
    };
    let (report, reported_at) = match info.report {
        Some((report, at)) => (Some(report), Some(at)),
        None => (None, None),
    };
    BastionView {
        name: info.name,
        status,
        address: info.address,
        enrolled_at: info.enrolled_at,
        last_seen_at: info.last_seen_at,
        silent_for_secs: silent_for,
        policy_version: info.policy_version,
        server_version,
        versions_behind: info
            .policy_version
            .map(|held| server_version.saturating_sub(held)),
        agent_version: report.as_ref().map(|r| r.agent.clone()),
        open_sessions: report.as_ref().map(|r| r.sessions),
        spool_backlog: report.as_ref().map(|r| r.backlog),
        reported_at,
        revoked_at: info.revoked_at,
        zone: info.zone,
    }
}

impl Fleet {
    pub fn new(store: Store) -> Fleet {
        Fleet {
            store,
            silent_after_secs: AtomicU64::new(DEFAULT_SILENT_AFTER.as_secs()),
        }
    }

    /// Sets the silence after which a bastion raises the alarm.
    pub fn set_bastion_silent_after(&self, after: Duration) {
        self.silent_after_secs
            .store(after.as_secs().max(1), Ordering::Relaxed);
    }

    pub fn bastion_silent_after(&self) -> Duration {
        Duration::from_secs(self.silent_after_secs.load(Ordering::Relaxed))
    }

    /// Every enrolled bastion, by name.
    pub fn fleet(&self) -> Result<Vec<BastionView>> {
        let tx = self.store.read()?;
        let version = tx.policy_version()?;
        let (after, now) = (self.bastion_silent_after(), Utc::now());
        Ok(tx
            .bastions()?
            .into_iter()
            .map(|info| view(info, version, after, now))
            .collect())
    }

    /// One enrolled bastion.
    pub fn fleet_member(&self, name: &str) -> Result<BastionView> {
        let tx = self.store.read()?;
        let version = tx.policy_version()?;
        let info = tx
            .bastion_by_name(name)?
            .ok_or_else(|| not_enrolled(name))?;
        Ok(view(info, version, self.bastion_silent_after(), Utc::now()))
    }

    /// Puts bastion `name` in `zone` (none: takes it out of its zone). A
    /// zone is the admin's word, not the bastion's: a bastion cannot put
    /// itself in another zone to be given that zone's jobs and secrets.
    pub fn set_bastion_zone(
        &self,
        actor: &str,
        name: &str,
        zone: Option<&str>,
    ) -> Result<BastionView> {
        if let Some(zone) = zone {
            jms_core::model::check_zone(zone).map_err(AdminError::BadInput)?;
        }
        let mut tx = self.store.write()?;
        if !tx.set_bastion_zone(name, zone)? {
            return Err(not_enrolled(name));
        }
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "update".into(),
            kind: "bastion".into(),
            name: name.to_string(),
            fields: vec!["zone".into()],
            version,
        })?;
        tx.commit()?;
        tracing::info!(bastion = name, zone, actor, "bastion zone set");
        self.fleet_member(name)
    }

    /// Revokes a bastion: from now on its key is refused for every sync
    /// request (bundle, events, recordings, control, live). Its uploaded
    /// audit stays. Only a token made with `--replace NAME` enrolls it
    /// again, with a new key.
    pub fn revoke_bastion(&self, actor: &str, name: &str) -> Result<BastionView> {
        let mut tx = self.store.write()?;
        let Some(info) = tx.bastion_by_name(name)? else {
            return Err(not_enrolled(name));
        };
        if info.revoked_at.is_some() {
            return Err(AdminError::Conflict(format!(
                "bastion `{name}` is already revoked"
            )));
        }
        tx.revoke_bastion(name)?;
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "revoke".into(),
            kind: "bastion".into(),
            name: name.to_string(),
            fields: vec!["public_key".into()],
            version,
        })?;
        tx.commit()?;
        tracing::warn!(
            bastion = name,
            actor,
            "bastion revoked: its key is refused from now on"
        );
        self.fleet_member(name)
    }

    /// Records a control poll: where it came from, what it reported.
    pub fn note_bastion(
        &self,
        id: i64,
        address: Option<&str>,
        report: Option<&StatusReport>,
    ) -> Result<()> {
        let mut tx = self.store.write()?;
        tx.note_bastion(id, address, report)?;
        tx.commit()?;
        Ok(())
    }
}

fn not_enrolled(name: &str) -> AdminError {
    AdminError::NotFound(format!("bastion `{name}` is not enrolled"))
}

/// Raises `alarm = "bastion_silent"` (an error in the log) once when a
/// bastion stays silent past the threshold, and says so when it polls
/// again. Runs for the life of the server.
pub async fn watch(service: Arc<Fleet>) {
    let mut alarmed: HashSet<String> = HashSet::new();
    loop {
        let after = service.bastion_silent_after();
        let pause = (after / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        tokio::time::sleep(pause).await;
        let checked = service.clone();
        let fleet = match tokio::task::spawn_blocking(move || checked.fleet()).await {
            Ok(Ok(fleet)) => fleet,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the fleet for the silence alarm");
                continue;
            }
            Err(_) => continue,
        };
        for bastion in fleet {
            match bastion.status {
                Status::Silent => {
                    if alarmed.insert(bastion.name.clone()) {
                        tracing::error!(
                            alarm = "bastion_silent",
                            bastion = bastion.name,
                            last_seen = ?bastion.last_seen_at,
                            silent_for_secs = bastion.silent_for_secs,
                            "bastion {} has not polled for more than {}s",
                            bastion.name,
                            after.as_secs()
                        );
                    }
                }
                Status::Online => {
                    if alarmed.remove(&bastion.name) {
                        tracing::info!(bastion = bastion.name, "bastion polls again");
                    }
                }
                Status::Revoked => {
                    alarmed.remove(&bastion.name);
                }
            }
        }
    }
}
