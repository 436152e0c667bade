//! Account jobs on the server ([`JobService`]): push, verify, rotate,
//! remove and discover on an asset through its privileged account.
//!
//! - [`JobService::start`] checks the account (username, shell, groups,
//!   sudo rule: `jms_sync::job::check_order`), makes the new secret a
//!   rotation (or a push of an account without one) needs
//!   ([`secrets`]), picks the online bastion with the fewest jobs in
//!   flight, records the job — its new
//!   secret sealed with it in the database — and queues a
//!   [`jms_sync::control::Order::Job`] for that bastion. The job's
//!   secrets go out on the bastion's next control poll, sealed to the
//!   poll's transport key ([`JobService::seal_for_poll`]).
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
/// How many bastions a job is given, at most.
pub const MAX_ATTEMPTS: u32 = 3;

/// A job's secrets waiting for its bastion's control poll.
struct Pending {
    bastion: String,
    secrets: JobSecrets,
}

/// The account jobs service.
pub struct JobService {
    store: Store,
    policy: Arc<PolicyService>,
    live: Arc<LiveService>,
    fleet: Arc<Fleet>,
    key: Arc<SealKey>,
    pending: Mutex<HashMap<String, Pending>>,
    attempt_timeout_secs: AtomicU64,
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
            pending: Mutex::new(HashMap::new()),
            attempt_timeout_secs: AtomicU64::new(DEFAULT_ATTEMPT_TIMEOUT.as_secs()),
        }
    }

    /// Sets how long one attempt may run before another bastion gets it.
    pub fn set_attempt_timeout(&self, after: Duration) {
        self.attempt_timeout_secs
            .store(after.as_secs().max(1), Ordering::Relaxed);
    }

    fn attempt_timeout(&self) -> Duration {
        Duration::from_secs(self.attempt_timeout_secs.load(Ordering::Relaxed))
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The order and secrets of job `id`: `kind` on `account` of `asset`
    /// as the policy has them now, with `new` as the new secret (a
    /// retry's) or a fresh one.
    fn prepare(
        &self,
        id: &str,
        attempt: u32,
        kind: JobKind,
        asset: &str,
        account: &str,
        new: Option<Secret>,
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
            (JobKind::Rotate | JobKind::Push | JobKind::Verify, Some(new)) => Some(new),
            (JobKind::Rotate, None) => Some(self.new_secret(target, asset)?),
            (JobKind::Push, None) if target.secret.is_none() => {
                Some(self.new_secret(target, asset)?)
            }
            // A verification tries an earlier job's unsettled secret when
            // the vault's fails.
            (JobKind::Verify, None) => self.unsettled(asset, account)?,
            _ => None,
        };
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

    /// Starts `kind` on `account` of `asset` for `actor`.
    pub fn start(&self, actor: &str, kind: JobKind, asset: &str, account: &str) -> Result<JobRow> {
        let id = new_id();
        let (order, secrets) = self.prepare(&id, 1, kind, asset, account, None)?;
        let online = self.online()?;
        let bastion = self.least_busy(&online).ok_or_else(|| {
            AdminError::Conflict("no bastion is online to run the job".to_string())
        })?;
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
        );
        self.send(&bastion, order, secrets);
        Ok(row)
    }

    fn send(&self, bastion: &str, order: JobOrder, secrets: JobSecrets) {
        self.pending().insert(
            order.id.clone(),
            Pending {
                bastion: bastion.to_string(),
                secrets,
            },
        );
        self.live.hub().order(bastion, Order::Job(Box::new(order)));
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
    fn online(&self) -> Result<Vec<String>> {
        let mut fleet: Vec<_> = self
            .fleet
            .fleet()?
            .into_iter()
            .filter(|b| b.status == Status::Online && b.agent_version.is_some())
            .collect();
        fleet.sort_by_key(|b| std::cmp::Reverse(b.last_seen_at));
        Ok(fleet.into_iter().map(|b| b.name).collect())
    }

    /// The bastion for a new job: the one of `online` with the fewest
    /// jobs in flight (sent by this instance and not yet reported), the
    /// most recently seen among equals — so a plan's jobs spread over
    /// every online bastion instead of all going to the one that polled
    /// last.
    fn least_busy(&self, online: &[String]) -> Option<String> {
        let pending = self.pending();
        let mut load: HashMap<&str, usize> = HashMap::new();
        for p in pending.values() {
            *load.entry(p.bastion.as_str()).or_default() += 1;
        }
        online
            .iter()
            .min_by_key(|b| load.get(b.as_str()).copied().unwrap_or(0))
            .cloned()
    }

    /// The sealed secrets of the jobs among `orders` (taken by `bastion`'s
    /// control poll), sealed to the poll's transport key. An order of an
    /// earlier attempt (the job is another bastion's now) is dropped; a
    /// job whose secrets cannot be sealed (an agent that sent no key) is
    /// failed and its order dropped.
    pub fn seal_for_poll(
        &self,
        bastion: &str,
        orders: &mut Vec<Order>,
        transport: Option<&str>,
    ) -> Option<String> {
        let mut sealed = SealedSecrets::new();
        let mut failed = Vec::new();
        {
            let mut pending = self.pending();
            let key = transport.and_then(jms_sync::bundle::unhex);
            orders.retain(|order| {
                let Order::Job(job) = order else { return true };
                match pending.get(&job.id) {
                    Some(p) if p.bastion == bastion => {
                        if key.is_some() {
                            sealed.insert(job.id.clone(), p.secrets.clone());
                            true
                        } else {
                            failed.push(job.id.clone());
                            false
                        }
                    }
                    _ => {
                        tracing::info!(job = %job.id, bastion, "an order of an earlier attempt is dropped");
                        false
                    }
                }
            });
            for id in &failed {
                pending.remove(id);
            }
        }
        for id in failed {
            self.fail(&id, "the bastion's control poll carried no transport key");
        }
        if sealed.is_empty() {
            return None;
        }
        let key = jms_sync::bundle::unhex(transport?)?;
        let plain = serde_json::to_vec(&sealed).expect("secrets serialise");
        match jms_sync::bundle::seal_for(&key, &plain) {
            Ok(out) => Some(jms_sync::bundle::hex(&out)),
            Err(e) => {
                tracing::warn!("sealing job secrets: {e}");
                None
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
            let timed_out = now - row.attempt_at.unwrap_or(row.created_at) > timeout;
            let lost = row.bastion.as_ref().is_none_or(|b| !online.contains(b));
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
            let Some(next) = pick(&online, &row.tried, fallback) else {
                if timed_out {
                    self.give_up(&row, &format!("{why}, and no other bastion is online"));
                }
                continue;
            };
            let mut tx = self.store.write()?;
            let claimed = tx.claim_job_retry(&row.id, row.attempt, &next)?;
            tx.commit()?;
            if !claimed {
                continue;
            }
            self.pending().remove(&row.id);
            let new = self.open_new(&row);
            match self.prepare(
                &row.id,
                row.attempt + 1,
                row.kind,
                &row.asset,
                &row.account,
                new,
            ) {
                Ok((order, secrets)) => {
                    tracing::warn!(
                        event = "account_job_retried",
                        job = %row.id,
                        attempt = row.attempt + 1,
                        from = %was,
                        bastion = %next,
                        reason = %why,
                    );
                    self.send(&next, order, secrets);
                }
                Err(e) => self.fail(&row.id, &format!("{why}; the retry could not start: {e}")),
            }
        }
        Ok(())
    }

    /// Fails a job that ran out of bastions; a rotation keeps its new
    /// secret sealed (the target may hold it).
    fn give_up(&self, row: &JobRow, why: &str) {
        self.pending().remove(&row.id);
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
        self.pending().remove(id);
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

/// The bastion for a job: the first of `online` not yet `tried`, else
/// `fallback` when it is online.
fn pick(online: &[String], tried: &[String], fallback: Option<&str>) -> Option<String> {
    let tried: HashSet<&str> = tried.iter().map(String::as_str).collect();
    online
        .iter()
        .find(|b| !tried.contains(b.as_str()))
        .or_else(|| online.iter().find(|b| Some(b.as_str()) == fallback))
        .cloned()
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
            .prepare("job-2", 1, JobKind::Verify, "web01", "app", None)
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
        let (_dir, services) = rotation();
        let jobs = &services.jobs;
        let online = vec!["b1".to_string(), "b2".to_string(), "b3".to_string()];
        // Nothing in flight: the most recently seen (first).
        assert_eq!(jobs.least_busy(&online).as_deref(), Some("b1"));
        let secrets = || JobSecrets {
            privileged: None,
            current: None,
            new: None,
        };
        let mut picked = Vec::new();
        for n in 0..6 {
            let bastion = jobs.least_busy(&online).unwrap();
            jobs.pending().insert(
                format!("job-{n}"),
                Pending {
                    bastion: bastion.clone(),
                    secrets: secrets(),
                },
            );
            picked.push(bastion);
        }
        assert_eq!(picked, ["b1", "b2", "b3", "b1", "b2", "b3"]);
        // b2's jobs reported: b2 gets the next ones.
        jobs.pending().retain(|_, p| p.bastion != "b2");
        assert_eq!(jobs.least_busy(&online).as_deref(), Some("b2"));
        // A bastion that is not online is never picked.
        assert_eq!(jobs.least_busy(&[]), None);
    }

    #[test]
    fn the_privileged_account_may_rotate_itself_but_not_push_or_remove_itself() {
        let (_dir, services) = rotation();
        let jobs = &services.jobs;
        let (order, secrets) = jobs
            .prepare("job-3", 1, JobKind::Rotate, "web01", "root", None)
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
                jobs.prepare("job-4", 1, kind, "web01", "root", None),
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
}
