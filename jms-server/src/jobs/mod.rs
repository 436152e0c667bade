//! Account jobs on the server ([`JobService`]): push, verify and rotate
//! an account on its asset through the asset's privileged account.
//!
//! - [`JobService::start`] checks the account (username, shell, groups,
//!   sudo rule: `jms_sync::job::check_order`), makes the new secret a
//!   rotation (or a push of an account without one) needs
//!   ([`secrets`]), picks an online bastion, records the job and queues
//!   a [`jms_sync::control::Order::Job`] for that bastion. The job's
//!   secrets stay in this process's memory until the bastion's next
//!   control poll, whose answer carries them sealed to the poll's
//!   transport key ([`JobService::seal_for_poll`]).
//! - [`JobService::report`] takes the bastion's typed report: records
//!   every step (never a secret), the account's verification, and — only
//!   when the bastion logged in with the new secret — commits it to the
//!   vault through the policy service, keeping the old one sealed in the
//!   secret history. A failed rotation leaves the vault unchanged.
//! - A job with no report after [`JOB_TIMEOUT`] is failed (its bastion
//!   went away); its new secret is forgotten, the vault keeps the old.

pub mod secrets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
use crate::store::{AccountCheck, JobRow, JobStatus, Store};

/// How long a job may run before it is failed.
pub const JOB_TIMEOUT: Duration = Duration::from_secs(180);

/// A job the server waits for.
struct Pending {
    bastion: String,
    secrets: JobSecrets,
    /// Whether its secrets went out on a control answer.
    sent: bool,
    started: Instant,
}

/// The account jobs service.
pub struct JobService {
    store: Store,
    policy: Arc<PolicyService>,
    live: Arc<LiveService>,
    fleet: Arc<Fleet>,
    key: Arc<SealKey>,
    pending: Mutex<HashMap<String, Pending>>,
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
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `kind` on `account` of `asset` for `actor`.
    pub fn start(&self, actor: &str, kind: JobKind, asset: &str, account: &str) -> Result<JobRow> {
        self.expire();
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
        let privileged = found.accounts.iter().find(|a| a.privileged);
        let privileged = match (kind, privileged) {
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
        if !matches!(kind, JobKind::Verify | JobKind::Discover)
            && privileged.is_some_and(|p| p.name == target.name)
        {
            return Err(AdminError::BadInput(format!(
                "`{account}` is the privileged account of `{asset}`: push and rotate manage other accounts"
            )));
        }
        if kind == JobKind::Verify && target.secret.is_none() {
            return Err(AdminError::BadInput(format!(
                "account `{account}` of `{asset}` has no secret to verify"
            )));
        }
        let (new_secret, new_public) = match kind {
            JobKind::Rotate => Some(self.new_secret(target, asset)?).unzip(),
            JobKind::Push if target.secret.is_none() => {
                Some(self.new_secret(target, asset)?).unzip()
            }
            _ => (None, None),
        };
        let new_public = new_public.flatten();
        let public_key = match (target.secret_type, &target.secret) {
            (SecretType::SshKey, Some(secret)) => Some(secrets::public_key_of(secret).ok_or_else(
                || {
                    AdminError::BadInput(format!(
                        "account `{account}` of `{asset}`: the vaulted key is not an OpenSSH private key"
                    ))
                },
            )?),
            _ => None,
        };
        let id = new_id();
        let order = JobOrder {
            id: id.clone(),
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
        };
        check_order(&order)
            .map_err(|e| AdminError::BadInput(format!("account `{account}` of `{asset}`: {e}")))?;
        let bastion = self.pick_bastion()?;
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
            created_at: Utc::now(),
            finished_at: None,
        };
        let mut tx = self.store.write()?;
        tx.insert_job(&row)?;
        tx.commit()?;
        self.pending().insert(
            id.clone(),
            Pending {
                bastion: bastion.clone(),
                secrets: JobSecrets {
                    privileged: privileged.and_then(|p| p.secret.clone()),
                    current: target.secret.clone(),
                    new: new_secret,
                },
                sent: false,
                started: Instant::now(),
            },
        );
        tracing::info!(
            event = "account_job_started",
            job = %id,
            kind = kind.as_str(),
            asset,
            account,
            actor,
            bastion = %bastion,
        );
        self.live.hub().order(&bastion, Order::Job(Box::new(order)));
        Ok(row)
    }

    fn new_secret(&self, account: &Account, asset: &str) -> Result<(Secret, Option<String>)> {
        Ok(match account.secret_type {
            SecretType::Password => {
                let rules = self.policy.settings()?.0.accounts;
                (
                    secrets::password(
                        rules.password_length as usize,
                        secrets::Classes {
                            upper: rules.password_uppercase,
                            digits: rules.password_digits,
                            symbols: rules.password_symbols,
                        },
                    ),
                    None,
                )
            }
            SecretType::SshKey => {
                let (private, public) =
                    secrets::ed25519_pair(&format!("{}@{asset} (jms)", account.username));
                (private, Some(public))
            }
        })
    }

    /// An online bastion that polls for orders.
    fn pick_bastion(&self) -> Result<String> {
        let fleet = self.fleet.fleet()?;
        fleet
            .into_iter()
            .filter(|b| b.status == Status::Online && b.agent_version.is_some())
            .max_by_key(|b| b.last_seen_at)
            .map(|b| b.name)
            .ok_or_else(|| AdminError::Conflict("no bastion is online to run the job".to_string()))
    }

    /// The sealed secrets of the jobs among `orders` (taken by `bastion`'s
    /// control poll), sealed to the poll's transport key. A job whose
    /// secrets cannot be sealed (an agent that sent no key) is failed and
    /// its order dropped.
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
            orders.retain(|order| {
                let Order::Job(job) = order else { return true };
                let key = transport.and_then(jms_sync::bundle::unhex);
                match (pending.get_mut(&job.id), key) {
                    (Some(p), Some(_)) if p.bastion == bastion => {
                        p.sent = true;
                        sealed.insert(job.id.clone(), p.secrets.clone());
                        true
                    }
                    _ => {
                        failed.push(job.id.clone());
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

    /// Fails jobs with no report after [`JOB_TIMEOUT`].
    pub fn expire(&self) {
        let expired: Vec<(String, String)> = {
            let mut pending = self.pending();
            let ids: Vec<String> = pending
                .iter()
                .filter(|(_, p)| p.started.elapsed() > JOB_TIMEOUT)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| pending.remove(&id).map(|p| (id, p.bastion)))
                .collect()
        };
        for (id, bastion) in expired {
            self.fail(
                &id,
                &format!("no report from bastion {bastion}: the vault keeps the old secret"),
            );
        }
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
                "a bastion reported a job it was not given"
            );
            return Err(AdminError::Forbidden(format!(
                "job `{id}` was not given to bastion {bastion}"
            )));
        }
        let pending = self.pending().remove(id);
        if row.status != JobStatus::Running {
            return Ok(row);
        }
        let Some(pending) = pending.filter(|p| p.sent) else {
            self.fail(id, "the server no longer knows this job's secrets");
            return self.job(id);
        };
        let mut error = report.error.clone();
        let mut ok = report.ok;
        // Commit the new secret only when the bastion logged in with it.
        if ok && report.new_secret_in_place {
            if let Some(new) = &pending.secrets.new {
                if let Err(e) = self.commit_secret(id, &row, pending.secrets.current.as_ref(), new)
                {
                    ok = false;
                    error = Some(format!(
                        "the new secret works on the target but was not committed: {e}"
                    ));
                    tracing::error!(alarm = "job_commit_failed", job = id, "{e}");
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
        let status = if ok { JobStatus::Ok } else { JobStatus::Failed };
        tx.finish_job(id, status, report.changed, &steps, error.as_deref())?;
        tx.commit()?;
        tracing::info!(
            event = "account_job_done",
            job = id,
            kind = row.kind.as_str(),
            asset = %row.asset,
            account = %row.account,
            result = status.as_str(),
            changed = report.changed,
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
    fn commit_secret(
        &self,
        id: &str,
        row: &JobRow,
        old: Option<&Secret>,
        new: &Secret,
    ) -> Result<()> {
        if let Some(old) = old {
            let sealed = self.key.seal(
                &place_history(&row.asset, &row.account),
                old.expose().as_bytes(),
            );
            let mut tx = self.store.write()?;
            tx.add_secret_history(&row.asset, &row.account, &sealed, Some(id))?;
            tx.commit()?;
        }
        let (asset, account) = (row.asset.clone(), row.account.clone());
        let new = new.clone();
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
                found.secret = Some(new);
                found.secret_file = None;
                Ok(())
            })?;
        Ok(())
    }

    pub fn job(&self, id: &str) -> Result<JobRow> {
        self.expire();
        self.store
            .read()?
            .job(id)?
            .ok_or_else(|| AdminError::NotFound(format!("job `{id}` not found")))
    }

    pub fn jobs(&self, asset: Option<&str>, limit: usize) -> Result<Vec<JobRow>> {
        self.expire();
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
        };
        let mut tx = services.jobs.store.write().unwrap();
        tx.insert_job(&row).unwrap();
        tx.commit().unwrap();
        services.jobs.pending().insert(
            "job-1".into(),
            Pending {
                bastion: "b1".into(),
                secrets: JobSecrets {
                    privileged: Some(Secret::new("root-pw")),
                    current: Some(Secret::new("old-pw")),
                    new: Some(Secret::new("new-pw")),
                },
                sent: true,
                started: Instant::now(),
            },
        );
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
