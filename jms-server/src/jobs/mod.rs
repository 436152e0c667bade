//! Account jobs on the server ([`JobService`]): push, verify, rotate,
//! remove and discover on an asset through its privileged account.
//!
//! - [`JobService::start`] checks the account (username, shell, groups,
//!   sudo rule: `jms_sync::job::check_order`), makes the new secret a
//!   rotation (or a push of an account without one) needs
//!   ([`secrets`]), picks an online bastion of the asset's zone
//!   ([`pick`]), the one with the fewest jobs in flight first
//!   ([`fewest_in_flight_first`]), records the job — its new secret sealed with it in the
//!   database — and wakes that bastion's control poll on every instance.
//! - [`JobService::deliver`]: the bastion's control poll, on whichever
//!   server instance it lands, builds the [`jms_sync::control::Order::Job`]
//!   of each job given to it from the policy and the job's row, and its
//!   secrets sealed to the poll's transport key; a claim on the row hands
//!   each attempt's order out once. Nothing of a job is kept in one
//!   instance's memory.
//! - Zones: an asset with a `zone` has its jobs run only by online
//!   bastions an admin put in that zone (`jmsctl bastion zone`); an asset
//!   with none by any online bastion, those in no zone first. A job whose
//!   zone has no online bastion is refused, naming the zone; a retry
//!   stays in the zone.
//! - [`JobService::report`] takes the bastion's typed report: records
//!   every step (never a secret), the account's verification, and — only
//!   when the bastion logged in with the new secret — commits it to the
//!   vault through the policy service, keeping the old one sealed in the
//!   secret history. A failed rotation leaves the vault unchanged.
//! - [`JobService::recover`] (every second, [`watch`]): a running job
//!   whose bastion went silent, or whose attempt outlived the attempt
//!   timeout, is handed to another online bastion — a claim on the job's
//!   row, so that one server instance among several does it — with the
//!   same new secret, at most [`MAX_ATTEMPTS`] times. A rotation is never
//!   half-committed: the retry finds out which secret is live (it
//!   re-applies the new one and logs in with it; the privileged account
//!   rotating itself tries the vault's, then the new one). A job that runs
//!   out of attempts fails and keeps its new secret sealed: the account's
//!   next verification tries it when the vault's fails, and commits it
//!   when it logs in.
//! - The privileged account may rotate itself (verified with the new
//!   secret before commit); push and remove manage other accounts.

pub mod plans;
pub mod secrets;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use jms_core::model::{Account, Asset, Protocol, Secret, SecretType};
use jms_sync::control::Order;
use jms_sync::job::{
    check_order, JobAccount, JobAsset, JobKind, JobOrder, JobPrivileged, JobReport, JobSecrets,
    SealedSecrets,
};

use crate::crypto::SealKey;
use crate::error::{AdminError, Result};
use crate::fleet::{Fleet, Status};
use crate::live::LiveService;
use crate::policy::PolicyService;
use crate::store::jobs::new_secret_place;
use crate::store::{AccountCheck, JobRow, JobStatus, Store};

/// How long one attempt of a job may run before it is handed to another
/// bastion, by default (`jms-server --job-attempt-timeout`).
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(180);

/// How many jobs a bastion holds at once by default: jms-agentd's
/// `[sessions] max_parallel_jobs` default, so none waits on the bastion.
pub const DEFAULT_PER_BASTION: u64 = 8;
/// How many bastions a job is given, at most.
pub const MAX_ATTEMPTS: u32 = 3;

/// An online bastion that runs jobs, and the zone an admin put it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    pub name: String,
    pub zone: Option<String>,
}

/// A job's new secret as [`JobService::prepare`] takes it.
enum NewSecret {
    /// A new job: made fresh when its kind needs one (a verification
    /// takes an earlier job's unsettled secret).
    Fresh,
    /// The one sealed with the job's row (an order handed out, a retry).
    Kept(Option<Secret>),
}

/// The account jobs service.
pub struct JobService {
    store: Store,
    policy: Arc<PolicyService>,
    live: Arc<LiveService>,
    fleet: Arc<Fleet>,
    key: Arc<SealKey>,
    attempt_timeout_secs: AtomicU64,
    per_bastion: AtomicU64,
}

fn place_history(asset: &str, account: &str) -> String {
    format!("secret_history:{asset}/{account}")
}

fn new_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random");
    format!("job-{}", jms_sync::bundle::hex(&bytes))
}

fn ssh_port(asset: &Asset) -> u16 {
    asset
        .protocols
        .iter()
        .find(|p| p.name == Protocol::Ssh)
        .map(|p| p.port)
        .unwrap_or(22)
}

/// Whether a rotation's failed report leaves its new secret possibly
/// live on the target (applied, and the old one not verified back).
fn maybe_applied(row: &JobRow, report: &JobReport) -> bool {
    let step_ok = |name: &str| report.steps.iter().any(|s| s.name == name && s.ok);
    row.kind == JobKind::Rotate && !step_ok("verify_old") && (step_ok("apply") || row.attempt > 1)
}

impl JobService {
    pub fn new(
        store: Store,
        policy: Arc<PolicyService>,
        live: Arc<LiveService>,
        fleet: Arc<Fleet>,
        key: Arc<SealKey>,
    ) -> JobService {
        JobService {
            store,
            policy,
            live,
            fleet,
            key,
            attempt_timeout_secs: AtomicU64::new(DEFAULT_ATTEMPT_TIMEOUT.as_secs()),
            per_bastion: AtomicU64::new(DEFAULT_PER_BASTION),
        }
    }

    /// Sets how many jobs a bastion holds at once (running or queued on
    /// it); the rest wait on the server, their attempt clock not started.
    pub fn set_jobs_per_bastion(&self, jobs: u64) {
        self.per_bastion.store(jobs.max(1), Ordering::Relaxed);
    }

    /// Sets how long one attempt may run before another bastion gets it.
    pub fn set_attempt_timeout(&self, after: Duration) {
        self.attempt_timeout_secs
            .store(after.as_secs().max(1), Ordering::Relaxed);
    }

    fn attempt_timeout(&self) -> Duration {
        Duration::from_secs(self.attempt_timeout_secs.load(Ordering::Relaxed))
    }

    /// The order and secrets of job `id`: `kind` on `account` of `asset`
    /// as the policy has them now, with the job's kept new secret or a
    /// fresh one.
    fn prepare(
        &self,
        id: &str,
        attempt: u32,
        kind: JobKind,
        asset: &str,
        account: &str,
        new: NewSecret,
    ) -> Result<(JobOrder, JobSecrets)> {
        let doc = self.policy.document(true)?;
        let found = doc
            .assets
            .iter()
            .find(|a| a.name == asset)
            .ok_or_else(|| AdminError::NotFound(format!("asset `{asset}` not found")))?;
        let privileged_account = found.accounts.iter().find(|a| a.privileged);
        let target = match (kind, privileged_account) {
            // Discovery is of the asset: it runs as its privileged account.
            (JobKind::Discover, Some(p)) => p,
            (JobKind::Discover, None) => {
                return Err(AdminError::BadInput(format!(
                    "asset `{asset}` has no privileged account (mark one `privileged: true`)"
                )))
            }
            _ => found
                .accounts
                .iter()
                .find(|a| a.name == account)
                .ok_or_else(|| {
                    AdminError::NotFound(format!("account `{account}` of `{asset}` not found"))
                })?,
        };
        if account.starts_with('@') {
            return Err(AdminError::BadInput(format!(
                "`{account}` is a virtual account: nothing to manage"
            )));
        }
        let privileged = match (kind, privileged_account) {
            (JobKind::Verify, p) => p,
            (_, None) => {
                return Err(AdminError::BadInput(format!(
                    "asset `{asset}` has no privileged account (mark one `privileged: true`)"
                )))
            }
            (_, Some(p)) if p.secret.is_none() => {
                return Err(AdminError::BadInput(format!(
                    "the privileged account `{}` of `{asset}` has no secret",
                    p.name
                )))
            }
            (_, Some(p)) => Some(p),
        };
        if matches!(kind, JobKind::Push | JobKind::Remove)
            && privileged.is_some_and(|p| p.name == target.name)
        {
            return Err(AdminError::BadInput(format!(
                "`{account}` is the privileged account of `{asset}`: push and remove manage other accounts"
            )));
        }
        if matches!(kind, JobKind::Verify | JobKind::Rotate) && target.secret.is_none() {
            return Err(AdminError::BadInput(format!(
                "account `{account}` of `{asset}` has no secret to {}",
                kind.as_str()
            )));
        }
        let new_secret = match (kind, new) {
            // A job's own secret, never a fresh one: the row holds the one
            // the target may have taken.
            (JobKind::Rotate, NewSecret::Kept(None)) => {
                return Err(AdminError::Conflict(format!(
                    "job `{id}`: its new secret is unreadable (see the job_secret_unreadable alarm)"
                )))
            }
            (JobKind::Rotate | JobKind::Push | JobKind::Verify, NewSecret::Kept(kept)) => kept,
            (JobKind::Rotate, NewSecret::Fresh) => Some(self.new_secret(target, asset)?),
            (JobKind::Push, NewSecret::Fresh) if target.secret.is_none() => {
                Some(self.new_secret(target, asset)?)
            }
            // A verification tries an earlier job's unsettled secret when
            // the vault's fails.
            (JobKind::Verify, NewSecret::Fresh) => self.unsettled(asset, account)?,
            _ => None,
        };
        if kind == JobKind::Push && target.secret.is_none() && new_secret.is_none() {
            return Err(AdminError::Conflict(format!(
                "job `{id}`: its new secret is unreadable (see the job_secret_unreadable alarm)"
            )));
        }
        let public_of = |secret: &Secret| {
            secrets::public_key_of(secret).ok_or_else(|| {
                AdminError::BadInput(format!(
                    "account `{account}` of `{asset}`: the key is not an OpenSSH private key"
                ))
            })
        };
        let (public_key, new_public) = match target.secret_type {
            SecretType::SshKey => (
                target.secret.as_ref().map(public_of).transpose()?,
                new_secret.as_ref().map(public_of).transpose()?,
            ),
            SecretType::Password => (None, None),
        };
        let order = JobOrder {
            id: id.to_string(),
            action: kind,
            asset: JobAsset {
                name: found.name.clone(),
                address: found.address.clone(),
                port: ssh_port(found),
                host_keys: found.host_keys.clone(),
            },
            account: JobAccount {
                name: target.name.clone(),
                username: target.username.clone(),
                secret_type: target.secret_type,
                shell: target.shell.clone(),
                groups: target.groups.clone(),
                sudo: target.sudo.clone(),
                public_key,
                new_public_key: new_public,
            },
            privileged: privileged.map(|p| JobPrivileged {
                name: p.name.clone(),
                username: p.username.clone(),
                secret_type: p.secret_type,
            }),
            attempt,
        };
        check_order(&order)
            .map_err(|e| AdminError::BadInput(format!("account `{account}` of `{asset}`: {e}")))?;
        let secrets = JobSecrets {
            privileged: privileged.and_then(|p| p.secret.clone()),
            current: target.secret.clone(),
            new: new_secret,
        };
        Ok((order, secrets))
    }

    /// The new secret an ended job of the account kept (its outcome
    /// unknown), if any.
    fn unsettled(&self, asset: &str, account: &str) -> Result<Option<Secret>> {
        let Some(row) = self.store.read()?.unsettled_job(asset, account)? else {
            return Ok(None);
        };
        Ok(self.open_new(&row))
    }

    fn open_new(&self, row: &JobRow) -> Option<Secret> {
        let sealed = row.new_secret.as_ref()?;
        match self.key.open_text(&new_secret_place(&row.id), sealed) {
            Ok(text) => Some(Secret::new(text)),
            Err(e) => {
                tracing::error!(alarm = "job_secret_unreadable", job = %row.id, "{e}");
                None
            }
        }
    }

    /// The zone of `asset` (none when it has none or is gone).
    fn zone_of(&self, asset: &str) -> Result<Option<String>> {
        Ok(self
            .store
            .read()?
            .asset(asset)?
            .and_then(|row| row.asset.zone))
    }

    /// Starts `kind` on `account` of `asset` for `actor`.
    pub fn start(&self, actor: &str, kind: JobKind, asset: &str, account: &str) -> Result<JobRow> {
        let id = new_id();
        let (_, secrets) = self.prepare(&id, 1, kind, asset, account, NewSecret::Fresh)?;
        let zone = self.zone_of(asset)?;
        let mut online = self.online()?;
        let running = self.store.read()?.running_jobs()?;
        fewest_in_flight_first(
            &mut online,
            running.iter().filter_map(|j| j.bastion.as_deref()),
        );
        let bastion = pick(&online, zone.as_deref(), &[], None)
            .ok_or_else(|| AdminError::Conflict(nobody_online(zone.as_deref(), asset)))?;
        let now = Utc::now();
        let row = JobRow {
            id: id.clone(),
            kind,
            asset: asset.to_string(),
            account: if kind == JobKind::Discover {
                String::new()
            } else {
                account.to_string()
            },
            actor: actor.to_string(),
            bastion: Some(bastion.clone()),
            status: JobStatus::Running,
            changed: false,
            steps: Vec::new(),
            error: None,
            created_at: now,
            finished_at: None,
            attempt: 1,
            attempt_at: Some(now),
            tried: vec![bastion.clone()],
            delivered: 0,
            new_secret: secrets
                .new
                .as_ref()
                .map(|s| self.key.seal(&new_secret_place(&id), s.expose().as_bytes())),
        };
        let mut tx = self.store.write()?;
        tx.insert_job(&row)?;
        tx.commit()?;
        tracing::info!(
            event = "account_job_started",
            job = %id,
            kind = kind.as_str(),
            asset,
            account,
            actor,
            bastion = %bastion,
            zone = zone.as_deref().unwrap_or(""),
        );
        self.live.hub().jobs_for(&bastion);
        Ok(row)
    }

    fn new_secret(&self, account: &Account, asset: &str) -> Result<Secret> {
        Ok(match account.secret_type {
            SecretType::Password => {
                let rules = self.policy.settings()?.0.accounts;
                secrets::password(
                    rules.password_length as usize,
                    secrets::Classes {
                        upper: rules.password_uppercase,
                        digits: rules.password_digits,
                        symbols: rules.password_symbols,
                    },
                )
            }
            SecretType::SshKey => {
                secrets::ed25519_pair(&format!("{}@{asset} (jms)", account.username)).0
            }
        })
    }

    /// The online bastions that run jobs, most recently seen first.
    fn online(&self) -> Result<Vec<Runner>> {
        let mut fleet: Vec<_> = self
            .fleet
            .fleet()?
            .into_iter()
            .filter(|b| b.status == Status::Online && b.agent_version.is_some())
            .collect();
        fleet.sort_by_key(|b| std::cmp::Reverse(b.last_seen_at));
        Ok(fleet
            .into_iter()
            .map(|b| Runner {
                name: b.name,
                zone: b.zone,
            })
            .collect())
    }

    /// The orders of the jobs given to `bastion` whose current attempt
    /// it has not taken yet, and their secrets sealed to its control
    /// poll's `transport` key: built from the policy and the job's row
    /// (its new secret sealed there) by whichever instance the bastion
    /// polls, each attempt's order once (a claim on the row). A job whose
    /// secrets cannot be sealed (a poll without a key) or whose order
    /// cannot be built (its account was removed) is failed. A bastion
    /// holds at most [`Self::set_jobs_per_bastion`] jobs at once; the
    /// next go out as it reports ([`Self::report`] wakes its poll).
    pub fn deliver(
        &self,
        bastion: &str,
        transport: Option<&str>,
    ) -> Result<(Vec<Order>, Option<String>)> {
        let rows = {
            let read = self.store.read()?;
            let per_bastion = self.per_bastion.load(Ordering::Relaxed);
            let room = per_bastion.saturating_sub(read.delivered_jobs(bastion)?);
            if room == 0 {
                return Ok((Vec::new(), None));
            }
            read.undelivered_jobs(bastion, room as usize)?
        };
        if rows.is_empty() {
            return Ok((Vec::new(), None));
        }
        let key = transport.and_then(jms_sync::bundle::unhex);
        let mut orders = Vec::new();
        let mut sealed = SealedSecrets::new();
        for row in rows {
            let mut tx = self.store.write()?;
            let claimed = tx.claim_job_delivery(&row.id, row.attempt, bastion)?;
            tx.commit()?;
            if !claimed {
                continue;
            }
            if key.is_none() {
                self.fail(
                    &row.id,
                    "the bastion's control poll carried no transport key",
                );
                continue;
            }
            let kept = self.open_new(&row);
            match self.prepare(
                &row.id,
                row.attempt,
                row.kind,
                &row.asset,
                &row.account,
                NewSecret::Kept(kept),
            ) {
                Ok((order, secrets)) => {
                    tracing::info!(
                        event = "account_job_delivered",
                        job = %row.id,
                        attempt = row.attempt,
                        bastion,
                    );
                    sealed.insert(row.id.clone(), secrets);
                    orders.push(Order::Job(Box::new(order)));
                }
                Err(e) => self.fail(&row.id, &format!("the job could not start: {e}")),
            }
        }
        let Some(key) = key.filter(|_| !sealed.is_empty()) else {
            return Ok((orders, None));
        };
        let plain = serde_json::to_vec(&sealed).expect("secrets serialise");
        match jms_sync::bundle::seal_for(&key, &plain) {
            Ok(out) => Ok((orders, Some(jms_sync::bundle::hex(&out)))),
            Err(e) => {
                // The orders are taken: their attempts time out and are
                // retried.
                tracing::warn!("sealing job secrets: {e}");
                Ok((Vec::new(), None))
            }
        }
    }

    fn fail(&self, id: &str, error: &str) {
        let result = self.store.write().and_then(|mut tx| {
            tx.finish_job(id, JobStatus::Failed, false, &[], Some(error))?;
            tx.commit()
        });
        if let Err(e) = result {
            tracing::warn!(job = id, "recording a failed job: {e}");
        }
        tracing::warn!(event = "account_job_failed", job = id, error);
    }

    /// Hands each running job whose bastion went silent, or whose attempt
    /// outlived the attempt timeout, to another online bastion (the
    /// current one when it is the only one online and not silent); fails
    /// it after [`MAX_ATTEMPTS`].
    pub fn recover(&self) -> Result<()> {
        let running = self.store.read()?.running_jobs()?;
        if running.is_empty() {
            return Ok(());
        }
        let online = self.online()?;
        let timeout = chrono::Duration::from_std(self.attempt_timeout()).unwrap_or_default();
        let now = Utc::now();
        for row in running {
            // The clock runs from when the bastion took the order: a job
            // waiting on the server for room on its bastion is not late.
            let taken = row.delivered == row.attempt;
            let timed_out = taken && now - row.attempt_at.unwrap_or(row.created_at) > timeout;
            let lost = row
                .bastion
                .as_ref()
                .is_none_or(|b| !online.iter().any(|r| &r.name == b));
            if !timed_out && !lost {
                continue;
            }
            let was = row.bastion.clone().unwrap_or_default();
            let why = if lost {
                format!("bastion {was} went silent")
            } else {
                format!("no report from bastion {was} in {}s", timeout.num_seconds())
            };
            if row.attempt >= MAX_ATTEMPTS {
                self.give_up(
                    &row,
                    &format!("{why} (attempt {} of {MAX_ATTEMPTS})", row.attempt),
                );
                continue;
            }
            let fallback = (!lost).then_some(was.as_str());
            // A retry stays in the asset's zone.
            let zone = self.zone_of(&row.asset)?;
            let Some(next) = pick(&online, zone.as_deref(), &row.tried, fallback) else {
                if timed_out {
                    let other = match &zone {
                        Some(zone) => format!("no other bastion of zone `{zone}` is online"),
                        None => "no other bastion is online".to_string(),
                    };
                    self.give_up(&row, &format!("{why}, and {other}"));
                }
                continue;
            };
            let mut tx = self.store.write()?;
            let claimed = tx.claim_job_retry(&row.id, row.attempt, &next)?;
            tx.commit()?;
            if !claimed {
                continue;
            }
            tracing::warn!(
                event = "account_job_retried",
                job = %row.id,
                attempt = row.attempt + 1,
                from = %was,
                bastion = %next,
                reason = %why,
            );
            // Its poll builds the order (and fails the job when it cannot).
            self.live.hub().jobs_for(&next);
        }
        Ok(())
    }

    /// Fails a job that ran out of bastions; a rotation keeps its new
    /// secret sealed (the target may hold it).
    fn give_up(&self, row: &JobRow, why: &str) {
        let kept = row.kind == JobKind::Rotate && row.new_secret.is_some();
        let error = if kept {
            format!(
                "{why}: the target may hold the new secret; it stays sealed with the job, \
                 and the account's next verify commits it if it is the one that logs in"
            )
        } else {
            format!("{why}: the vault keeps the old secret")
        };
        self.fail(&row.id, &error);
        if !kept {
            if let Err(e) = self.settle(&row.id, None) {
                tracing::warn!(job = %row.id, "forgetting a job's secret: {e}");
            }
        }
    }

    fn settle(&self, id: &str, account: Option<(&str, &str)>) -> Result<()> {
        let mut tx = self.store.write()?;
        tx.settle_job_secrets(id, account)?;
        Ok(tx.commit()?)
    }

    /// The bastion's report of job `id`.
    pub fn report(&self, bastion: &str, id: &str, report: JobReport) -> Result<JobRow> {
        report.check().map_err(AdminError::BadInput)?;
        let row = self
            .store
            .read()?
            .job(id)?
            .ok_or_else(|| AdminError::NotFound(format!("job `{id}` not found")))?;
        if row.bastion.as_deref() != Some(bastion) {
            tracing::warn!(
                alarm = "job_report_from_another_bastion",
                job = id,
                bastion,
                "a bastion reported a job that is not (or no longer) its own"
            );
            return Err(AdminError::Forbidden(format!(
                "job `{id}` is not bastion {bastion}'s"
            )));
        }
        if row.status != JobStatus::Running {
            return Ok(row);
        }
        let mut error = report.error.clone();
        let mut ok = report.ok;
        let mut committed = false;
        // Commit the new secret only when the bastion logged in with it.
        if ok && report.new_secret_in_place {
            if let Some(new) = self.open_new(&row) {
                match self.commit_secret(id, &row, &new) {
                    Ok(()) => committed = true,
                    Err(e) => {
                        ok = false;
                        error = Some(format!(
                            "the new secret works on the target but was not committed: {e}"
                        ));
                        tracing::error!(alarm = "job_commit_failed", job = id, "{e}");
                    }
                }
            }
        }
        let mut steps = report.steps.clone();
        if row.kind == JobKind::Discover && ok {
            steps.push(self.unmanaged(&row.asset, &report)?);
        }
        let verified = report
            .steps
            .iter()
            .rev()
            .find(|s| s.name.starts_with("verify") || s.name == "login");
        let mut tx = self.store.write()?;
        if let Some(step) = verified {
            tx.put_account_check(&AccountCheck {
                asset: row.asset.clone(),
                account: row.account.clone(),
                ok: step.ok,
                detail: step.detail.clone(),
                at: Utc::now(),
                job: Some(id.to_string()),
            })?;
        }
        if row.kind == JobKind::Discover && ok {
            let output: String = report
                .steps
                .iter()
                .filter(|s| s.name == "discover")
                .map(|s| s.detail.as_str())
                .collect();
            let facts = crate::store::AssetFacts {
                discovered_at: Some(Utc::now()),
                job: Some(id.to_string()),
                ..crate::store::AssetFacts::parse(&output)
            };
            tx.put_asset_facts(&row.asset, &facts)?;
        }
        let status = if ok { JobStatus::Ok } else { JobStatus::Failed };
        tx.finish_job(id, status, report.changed, &steps, error.as_deref())?;
        // Which secret is live is settled when one was committed or the
        // vault's logged in; a rotation that may have applied its new
        // secret keeps it.
        let settled_account = committed || (ok && row.kind == JobKind::Verify);
        if settled_account {
            tx.settle_job_secrets(id, Some((&row.asset, &row.account)))?;
        } else if !maybe_applied(&row, &report) {
            tx.settle_job_secrets(id, None)?;
        }
        tx.commit()?;
        tracing::info!(
            event = "account_job_done",
            job = id,
            kind = row.kind.as_str(),
            asset = %row.asset,
            account = %row.account,
            result = status.as_str(),
            changed = report.changed,
            attempt = row.attempt,
        );
        // Room on the bastion: its poll takes the next job waiting.
        if !self.store.read()?.undelivered_jobs(bastion, 1)?.is_empty() {
            self.live.hub().jobs_for(bastion);
        }
        self.job(id)
    }

    /// The discovered users jms does not manage on `asset` (a step).
    fn unmanaged(&self, asset: &str, report: &JobReport) -> Result<jms_sync::job::JobStep> {
        let doc = self.policy.document(false)?;
        let managed: Vec<&str> = doc
            .assets
            .iter()
            .filter(|a| a.name == asset)
            .flat_map(|a| a.accounts.iter().map(|acc| acc.username.as_str()))
            .collect();
        let found: Vec<&str> = report
            .steps
            .iter()
            .filter(|s| s.name == "discover")
            .flat_map(|s| s.detail.lines())
            .filter_map(|l| l.strip_prefix("user "))
            .filter_map(|l| l.split(' ').next())
            .filter(|name| !managed.contains(name))
            .collect();
        Ok(jms_sync::job::JobStep {
            name: "unmanaged".into(),
            ok: true,
            detail: jms_sync::job::cut_detail(&found.join("\n")),
        })
    }

    /// Puts `new` in the vault, the replaced secret in the history.
    fn commit_secret(&self, id: &str, row: &JobRow, new: &Secret) -> Result<()> {
        let (asset, account) = (row.asset.clone(), row.account.clone());
        let new = new.clone();
        let replaced: Arc<Mutex<Option<Secret>>> = Arc::default();
        let keep = Arc::clone(&replaced);
        self.policy
            .change(&format!("job {id}"), false, move |doc| {
                let found = doc
                    .assets
                    .iter_mut()
                    .find(|a| a.name == asset)
                    .and_then(|a| a.accounts.iter_mut().find(|a| a.name == account))
                    .ok_or_else(|| {
                        AdminError::Conflict(format!(
                            "account `{account}` of `{asset}` was removed while the job ran"
                        ))
                    })?;
                *keep.lock().unwrap_or_else(|e| e.into_inner()) = found.secret.replace(new);
                found.secret_file = None;
                Ok(())
            })?;
        let old = replaced.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(old) = old {
            let sealed = self.key.seal(
                &place_history(&row.asset, &row.account),
                old.expose().as_bytes(),
            );
            let mut tx = self.store.write()?;
            tx.add_secret_history(&row.asset, &row.account, &sealed, Some(id))?;
            tx.commit()?;
        }
        Ok(())
    }

    /// A job's steps as its bastions' audit events said them.
    pub fn job_events(&self, id: &str) -> Result<Vec<crate::store::JobEvent>> {
        Ok(self.store.read()?.job_events(id)?)
    }

    pub fn job(&self, id: &str) -> Result<JobRow> {
        self.store
            .read()?
            .job(id)?
            .ok_or_else(|| AdminError::NotFound(format!("job `{id}` not found")))
    }

    pub fn jobs(&self, asset: Option<&str>, limit: usize) -> Result<Vec<JobRow>> {
        Ok(self.store.read()?.jobs(asset, limit)?)
    }

    /// Every account's last verification, keyed by (asset, account).
    pub fn checks(&self) -> Result<HashMap<(String, String), AccountCheck>> {
        Ok(self
            .store
            .read()?
            .account_checks()?
            .into_iter()
            .map(|c| ((c.asset.clone(), c.account.clone()), c))
            .collect())
    }

    /// How many replaced secrets of an account the history keeps.
    pub fn history_count(&self, asset: &str, account: &str) -> Result<u64> {
        Ok(self.store.read()?.secret_history_count(asset, account)?)
    }
}

/// Whether a bastion in `bastion` zone runs the jobs of an asset in
/// `asset` zone: an asset's zone is a fence (only its bastions reach it);
/// an asset with no zone is any bastion's.
fn serves(bastion: Option<&str>, asset: Option<&str>) -> bool {
    asset.is_none_or(|zone| bastion == Some(zone))
}

/// The bastion for a job on an asset in `zone`: the first of `online`
/// that serves the zone and was not yet `tried` (for an asset with no
/// zone, bastions in no zone first), else `fallback` when it is online
/// and serves the zone.
fn pick(
    online: &[Runner],
    zone: Option<&str>,
    tried: &[String],
    fallback: Option<&str>,
) -> Option<String> {
    let tried: HashSet<&str> = tried.iter().map(String::as_str).collect();
    let mut fit: Vec<&Runner> = online
        .iter()
        .filter(|b| serves(b.zone.as_deref(), zone))
        .collect();
    // Stable: most recently seen first within each kind.
    fit.sort_by_key(|b| b.zone.is_some() && zone.is_none());
    fit.iter()
        .find(|b| !tried.contains(b.name.as_str()))
        .or_else(|| fit.iter().find(|b| Some(b.name.as_str()) == fallback))
        .map(|b| b.name.clone())
}

/// Orders `online` by the jobs each runs (`busy`: the bastion of every
/// running job, on any instance), fewest first, the most recently seen
/// first among equals: a plan's jobs spread over every online bastion of
/// the zone instead of all going to the one that polled last.
fn fewest_in_flight_first<'a>(online: &mut [Runner], busy: impl Iterator<Item = &'a str>) {
    let mut load: HashMap<&str, usize> = HashMap::new();
    for bastion in busy {
        *load.entry(bastion).or_default() += 1;
    }
    online.sort_by_key(|b| load.get(b.name.as_str()).copied().unwrap_or(0));
}

/// Why a job on `asset` (in `zone`) has no bastion.
fn nobody_online(zone: Option<&str>, asset: &str) -> String {
    match zone {
        Some(zone) => format!(
            "no bastion of zone `{zone}` (the zone of asset `{asset}`) is online to run the job: \
             put an online bastion in it (jmsctl bastion zone NAME {zone})"
        ),
        None => "no bastion is online to run the job".to_string(),
    }
}

/// Runs [`JobService::recover`] and the due plans
/// ([`JobService::run_due`]) every second for the life of the server.
pub async fn watch(service: Arc<JobService>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let jobs = service.clone();
        let tick = move || {
            jobs.recover()?;
            jobs.run_due(Utc::now()).map(drop)
        };
        match tokio::task::spawn_blocking(tick).await {
            Ok(Err(e)) => tracing::warn!(error = %e, "account job recovery"),
            Err(e) => tracing::warn!(error = %e, "account job recovery"),
            Ok(Ok(())) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jms_core::model::PolicyDocument;
    use jms_sync::job::JobStep;

    const POLICY: &str = r#"
assets:
  - name: web01
    address: 10.0.0.1
    protocols: [{name: ssh, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: root-pw, privileged: true}
      - {name: app, username: app, secret_type: password, secret: old-pw}
"#;

    /// The services with POLICY, and a running rotation of app@web01 given
    /// to bastion `b1` whose secrets went out (new password `new-pw`).
    fn rotation() -> (tempfile::TempDir, crate::services::Services) {
        let dir = tempfile::tempdir().unwrap();
        let services = crate::services::Services::open(&dir.path().join("data")).unwrap();
        let doc: PolicyDocument = serde_yaml_ng::from_str(POLICY).unwrap();
        services
            .policy
            .change("test", false, |d| {
                *d = doc;
                Ok(())
            })
            .unwrap();
        let row = JobRow {
            id: "job-1".into(),
            kind: JobKind::Rotate,
            asset: "web01".into(),
            account: "app".into(),
            actor: "test".into(),
            bastion: Some("b1".into()),
            status: JobStatus::Running,
            changed: false,
            steps: Vec::new(),
            error: None,
            created_at: Utc::now(),
            finished_at: None,
            attempt: 1,
            attempt_at: Some(Utc::now()),
            tried: vec!["b1".into()],
            delivered: 0,
            new_secret: Some(
                services
                    .jobs
                    .key
                    .seal(&new_secret_place("job-1"), b"new-pw"),
            ),
        };
        let mut tx = services.jobs.store.write().unwrap();
        tx.insert_job(&row).unwrap();
        tx.commit().unwrap();
        (dir, services)
    }

    fn report(ok: bool, in_place: bool) -> JobReport {
        JobReport {
            ok,
            changed: true,
            new_secret_in_place: in_place,
            steps: vec![JobStep {
                name: "verify_new".into(),
                ok,
                detail: String::new(),
            }],
            error: (!ok).then(|| "verify_new: refused".to_string()),
        }
    }

    fn vault(services: &crate::services::Services) -> String {
        let doc = services.policy.document(true).unwrap();
        doc.assets[0].accounts[1]
            .secret
            .as_ref()
            .unwrap()
            .expose()
            .to_string()
    }

    #[test]
    fn a_rotation_is_committed_only_on_its_bastions_verified_report() {
        let (_dir, services) = rotation();
        let jobs = &services.jobs;
        // Another bastion's report is refused and changes nothing.
        assert!(matches!(
            jobs.report("b2", "job-1", report(true, true)),
            Err(AdminError::Forbidden(_))
        ));
        assert_eq!(vault(&services), "old-pw");
        // A failed rotation leaves the old secret in the vault.
        let done = jobs.report("b1", "job-1", report(false, false)).unwrap();
        assert_eq!(done.status, JobStatus::Failed);
        assert_eq!(vault(&services), "old-pw");
        assert_eq!(jobs.history_count("web01", "app").unwrap(), 0);
        // A second (late) report of a finished job changes nothing.
        let late = jobs.report("b1", "job-1", report(true, true)).unwrap();
        assert_eq!(late.status, JobStatus::Failed);
        assert_eq!(vault(&services), "old-pw");

        let (_dir, services) = rotation();
        let done = services
            .jobs
            .report("b1", "job-1", report(true, true))
            .unwrap();
        assert_eq!(done.status, JobStatus::Ok);
        assert_eq!(vault(&services), "new-pw");
        assert_eq!(services.jobs.history_count("web01", "app").unwrap(), 1);
        let check = &services.jobs.checks().unwrap()[&("web01".into(), "app".into())];
        assert!(check.ok, "the verification is recorded");
    }

    #[test]
    fn a_retry_is_claimed_once_and_a_lost_rotation_keeps_its_secret_for_the_next_verify() {
        let (_dir, services) = rotation();
        let jobs = &services.jobs;
        // Two instances racing for the same attempt: one claim wins.
        let mut tx = jobs.store.write().unwrap();
        assert!(tx.claim_job_retry("job-1", 1, "b2").unwrap());
        assert!(!tx.claim_job_retry("job-1", 1, "b3").unwrap());
        tx.commit().unwrap();
        let row = jobs.job("job-1").unwrap();
        assert_eq!((row.attempt, row.bastion.as_deref()), (2, Some("b2")));
        assert_eq!(row.tried, ["b1", "b2"]);
        // The first bastion's late report is refused: the job is b2's.
        assert!(matches!(
            jobs.report("b1", "job-1", report(true, true)),
            Err(AdminError::Forbidden(_))
        ));
        // Out of bastions: failed, the vault unchanged, the new secret kept.
        jobs.give_up(&row, "bastion b2 went silent");
        assert_eq!(jobs.job("job-1").unwrap().status, JobStatus::Failed);
        assert_eq!(vault(&services), "old-pw");
        let kept = jobs.unsettled("web01", "app").unwrap();
        assert_eq!(kept.as_ref().map(Secret::expose), Some("new-pw"));
        // The next verification carries it as its candidate, and commits
        // it when it is the one that logs in.
        let (order, secrets) = jobs
            .prepare(
                "job-2",
                1,
                JobKind::Verify,
                "web01",
                "app",
                NewSecret::Fresh,
            )
            .unwrap();
        assert_eq!(order.action, JobKind::Verify);
        assert_eq!(secrets.new.as_ref().map(Secret::expose), Some("new-pw"));
        let verify = JobRow {
            id: "job-2".into(),
            kind: JobKind::Verify,
            bastion: Some("b2".into()),
            new_secret: Some(jobs.key.seal(&new_secret_place("job-2"), b"new-pw")),
            ..row
        };
        let mut tx = jobs.store.write().unwrap();
        tx.insert_job(&JobRow {
            status: JobStatus::Running,
            ..verify
        })
        .unwrap();
        tx.commit().unwrap();
        let done = jobs.report("b2", "job-2", report(true, true)).unwrap();
        assert_eq!(done.status, JobStatus::Ok);
        assert_eq!(vault(&services), "new-pw");
        assert!(
            jobs.unsettled("web01", "app").unwrap().is_none(),
            "settled: no candidate is kept"
        );
    }

    /// Before, every new job went to the online bastion seen last (all
    /// of a plan's 500 to one of two bastions).
    #[test]
    fn new_jobs_go_to_the_online_bastion_with_the_fewest_in_flight() {
        // Most recently seen first.
        let online = || vec![runner("b1", None), runner("b2", None), runner("b3", None)];
        let first = |busy: &[String]| {
            let mut online = online();
            fewest_in_flight_first(&mut online, busy.iter().map(String::as_str));
            pick(&online, None, &[], None)
        };
        // Nothing in flight: the most recently seen.
        assert_eq!(first(&[]).as_deref(), Some("b1"));
        let mut busy = Vec::new();
        for _ in 0..6 {
            busy.push(first(&busy).unwrap());
        }
        assert_eq!(busy, ["b1", "b2", "b3", "b1", "b2", "b3"]);
        // b2's jobs ended: b2 gets the next one.
        busy.retain(|b| *b != "b2");
        assert_eq!(first(&busy).as_deref(), Some("b2"));
        // Within a zone, the fewest in flight of that zone.
        let mut zoned = vec![
            runner("a1", Some("A")),
            runner("b1", Some("B")),
            runner("b2", Some("B")),
        ];
        fewest_in_flight_first(&mut zoned, ["b1", "a1"].into_iter());
        assert_eq!(pick(&zoned, Some("B"), &[], None).as_deref(), Some("b2"));
    }

    #[test]
    fn the_privileged_account_may_rotate_itself_but_not_push_or_remove_itself() {
        let (_dir, services) = rotation();
        let jobs = &services.jobs;
        let (order, secrets) = jobs
            .prepare(
                "job-3",
                1,
                JobKind::Rotate,
                "web01",
                "root",
                NewSecret::Fresh,
            )
            .unwrap();
        assert_eq!(
            order.privileged.as_ref().map(|p| p.name.as_str()),
            Some("root")
        );
        assert_eq!(
            secrets.current.as_ref().map(Secret::expose),
            Some("root-pw")
        );
        assert!(secrets.new.is_some());
        for kind in [JobKind::Push, JobKind::Remove] {
            assert!(matches!(
                jobs.prepare("job-4", 1, kind, "web01", "root", NewSecret::Fresh),
                Err(AdminError::BadInput(_))
            ));
        }
    }

    #[test]
    fn a_report_that_claims_success_without_the_new_secret_in_place_commits_nothing() {
        let (_dir, services) = rotation();
        let done = services
            .jobs
            .report("b1", "job-1", report(true, false))
            .unwrap();
        assert_eq!(done.status, JobStatus::Ok);
        assert_eq!(vault(&services), "old-pw");
    }

    fn runner(name: &str, zone: Option<&str>) -> Runner {
        Runner {
            name: name.into(),
            zone: zone.map(str::to_string),
        }
    }

    #[test]
    fn pick_keeps_a_job_in_its_assets_zone() {
        // Most recently seen first: a1 (zone A), b1 and b2 (zone B), any1.
        let online = [
            runner("a1", Some("A")),
            runner("b1", Some("B")),
            runner("b2", Some("B")),
            runner("any1", None),
        ];
        let tried = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        // An asset in zone B: only B's bastions, in order, retries too.
        assert_eq!(pick(&online, Some("B"), &[], None).as_deref(), Some("b1"));
        assert_eq!(
            pick(&online, Some("B"), &tried(&["b1"]), None).as_deref(),
            Some("b2")
        );
        assert_eq!(pick(&online, Some("B"), &tried(&["b1", "b2"]), None), None);
        assert_eq!(
            pick(&online, Some("B"), &tried(&["b1", "b2"]), Some("b2")).as_deref(),
            Some("b2"),
            "the current bastion of the zone when it is the only one left"
        );
        assert_eq!(
            pick(&online, Some("B"), &tried(&["b1", "b2"]), Some("a1")),
            None,
            "never a bastion of another zone, even as the fallback"
        );
        // A zone no online bastion is in: nobody (the bastion in no zone
        // neither).
        assert_eq!(pick(&online, Some("C"), &[], None), None);
        // An asset in no zone: the bastions in no zone first, then any.
        assert_eq!(pick(&online, None, &[], None).as_deref(), Some("any1"));
        assert_eq!(
            pick(&online, None, &tried(&["any1"]), None).as_deref(),
            Some("a1")
        );
        assert_eq!(pick(&[], None, &[], None), None);
    }

    #[test]
    fn a_job_whose_zone_has_no_online_bastion_is_refused_naming_the_zone() {
        let (_dir, services) = rotation();
        services
            .policy
            .change("test", false, |doc| {
                doc.assets[0].zone = Some("dmz".into());
                Ok(())
            })
            .unwrap();
        let err = services
            .jobs
            .start("test", JobKind::Verify, "web01", "app")
            .unwrap_err();
        assert!(matches!(err, AdminError::Conflict(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("no bastion of zone `dmz`") && text.contains("web01"),
            "{text}"
        );
        assert_eq!(
            services.jobs.jobs(None, 10).unwrap().len(),
            1,
            "nothing recorded"
        );
    }

    #[test]
    fn a_jobs_order_is_handed_out_once_per_attempt_to_its_bastion_from_the_database() {
        let (_dir, services) = rotation();
        let jobs = &services.jobs;
        let transport = jms_sync::bundle::TransportKey::generate();
        let public = transport.public_hex();
        // Another bastion's poll gets nothing.
        let (orders, sealed) = jobs.deliver("b2", Some(&public)).unwrap();
        assert!(orders.is_empty() && sealed.is_none());
        // b1's poll gets the order, built from the policy and the row,
        // and the new secret sealed to its transport key.
        let (orders, sealed) = jobs.deliver("b1", Some(&public)).unwrap();
        let [Order::Job(order)] = orders.as_slice() else {
            panic!("one job order: {orders:?}");
        };
        assert_eq!((order.id.as_str(), order.attempt), ("job-1", 1));
        assert_eq!(order.account.username, "app");
        let sealed = jms_sync::bundle::unhex(&sealed.expect("secrets")).unwrap();
        let opened: SealedSecrets =
            serde_json::from_slice(&transport.open(&sealed).unwrap()).unwrap();
        let secrets = &opened["job-1"];
        assert_eq!(secrets.new.as_ref().map(Secret::expose), Some("new-pw"));
        assert_eq!(secrets.current.as_ref().map(Secret::expose), Some("old-pw"));
        // Once: b1's next poll (on this or another instance) gets nothing.
        let (orders, _) = jobs.deliver("b1", Some(&public)).unwrap();
        assert!(orders.is_empty(), "{orders:?}");
        // A retry on b2 is handed out again, as attempt 2, with the same
        // new secret.
        let mut tx = jobs.store.write().unwrap();
        assert!(tx.claim_job_retry("job-1", 1, "b2").unwrap());
        tx.commit().unwrap();
        let other = jms_sync::bundle::TransportKey::generate();
        let public = other.public_hex();
        assert!(jobs.deliver("b1", Some(&public)).unwrap().0.is_empty());
        let (orders, sealed) = jobs.deliver("b2", Some(&public)).unwrap();
        let [Order::Job(order)] = orders.as_slice() else {
            panic!("one job order: {orders:?}");
        };
        assert_eq!(order.attempt, 2);
        let sealed = jms_sync::bundle::unhex(&sealed.unwrap()).unwrap();
        let opened: SealedSecrets = serde_json::from_slice(&other.open(&sealed).unwrap()).unwrap();
        assert_eq!(
            opened["job-1"].new.as_ref().map(Secret::expose),
            Some("new-pw")
        );
    }

    #[test]
    fn a_poll_without_a_transport_key_fails_the_job_it_would_get() {
        let (_dir, services) = rotation();
        let (orders, sealed) = services.jobs.deliver("b1", None).unwrap();
        assert!(orders.is_empty() && sealed.is_none());
        let row = services.jobs.job("job-1").unwrap();
        assert_eq!(row.status, JobStatus::Failed);
        assert!(row.error.unwrap().contains("transport key"));
    }

    /// Before, a bastion was handed every job given to it at once, and
    /// the attempt clock of those queued behind its running ones ran
    /// out: they were retried while they waited.
    #[test]
    fn a_bastion_holds_at_most_its_share_of_jobs_and_the_clock_starts_when_it_takes_one() {
        let (_dir, services) = rotation();
        let jobs = &services.jobs;
        jobs.set_jobs_per_bastion(1);
        let long_ago = Utc::now() - chrono::Duration::hours(1);
        let second = JobRow {
            attempt_at: Some(long_ago),
            created_at: long_ago + chrono::Duration::seconds(1),
            ..jobs.job("job-1").unwrap()
        };
        let mut tx = jobs.store.write().unwrap();
        tx.insert_job(&JobRow {
            id: "job-2".into(),
            kind: JobKind::Verify,
            new_secret: None,
            ..second
        })
        .unwrap();
        tx.commit().unwrap();
        let public = jms_sync::bundle::TransportKey::generate().public_hex();
        let ids = |orders: Vec<Order>| -> Vec<String> {
            orders
                .into_iter()
                .map(|o| match o {
                    Order::Job(job) => job.id,
                    other => panic!("a job order: {other:?}"),
                })
                .collect()
        };
        let taken = ids(jobs.deliver("b1", Some(&public)).unwrap().0);
        assert_eq!(taken.len(), 1, "one at a time: {taken:?}");
        assert!(ids(jobs.deliver("b1", Some(&public)).unwrap().0).is_empty());
        // Its report makes room: the other goes out, its clock started
        // when b1 took it, not when it was queued an hour ago.
        jobs.report("b1", &taken[0], report(false, false)).unwrap();
        let next = ids(jobs.deliver("b1", Some(&public)).unwrap().0);
        assert_eq!(next.len(), 1);
        assert_ne!(next, taken);
        let row = jobs.job(&next[0]).unwrap();
        assert_eq!(row.delivered, row.attempt);
        assert!(Utc::now() - row.attempt_at.unwrap() < chrono::Duration::minutes(1));
    }
}
