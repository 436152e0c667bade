//! Scheduled plans: a job kind (rotate, verify, push, discover) on a node's
//! assets, one asset, or one account, every N days or on a five-field cron
//! expression read in UTC (parsed by the `croner` crate). The scheduler
//! ([`JobService::run_due`], every second from [`super::watch`], the
//! clock passed in) claims each due plan in the database before starting
//! its jobs, so that several server instances on one database run it
//! once; a run that was missed (the server was down) runs once, then the
//! plan resumes its schedule. Every job a plan starts is an ordinary job
//! (actor `plan:NAME`), retried and never half-committed like any other.

use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use jms_sync::job::JobKind;
use serde::Deserialize;

use super::JobService;
use crate::error::{AdminError, Result};
use crate::store::PlanRow;
use jms_core::model::{Plan, PolicyDocument};

/// Longest cron expression.
const MAX_CRON: usize = 128;
/// Most days between two runs.
const MAX_EVERY_DAYS: u32 = 3650;
/// Longest error kept with a plan's last run.
const MAX_PLAN_ERROR: usize = 2048;

/// `POST /api/v1/plans`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    pub name: String,
    pub kind: JobKind,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub asset: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    #[serde(default)]
    pub every_days: Option<u32>,
    #[serde(default)]
    pub cron: Option<String>,
    /// Its first run (default: one period from now, or the cron
    /// expression's next time).
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::BadInput(format!(
            "plan `{}`: use [A-Za-z0-9][A-Za-z0-9._-]*, at most 64 characters",
            name.escape_debug()
        )))
    }
}

fn parse_cron(expression: &str) -> Result<croner::Cron> {
    if expression.len() > MAX_CRON || expression.split_whitespace().count() != 5 {
        return Err(AdminError::BadInput(format!(
            "cron `{}`: five fields (minute hour day-of-month month day-of-week), read in UTC",
            expression.escape_debug()
        )));
    }
    croner::Cron::from_str(expression)
        .map_err(|e| AdminError::BadInput(format!("cron `{}`: {e}", expression.escape_debug())))
}

/// The first run of `plan` strictly after `after`: the plan's period
/// added to its due time as often as needed, or the cron expression's
/// next time.
pub fn next_after(plan: &PlanRow, after: DateTime<Utc>) -> Result<DateTime<Utc>> {
    match (&plan.cron, plan.every_days) {
        (Some(expression), _) => parse_cron(expression)?
            .find_next_occurrence(&after, false)
            .map_err(|e| AdminError::BadInput(format!("cron `{expression}`: {e}"))),
        (None, Some(days)) => {
            let period = Duration::days(i64::from(days.clamp(1, MAX_EVERY_DAYS)));
            if plan.next_run > after {
                return Ok(plan.next_run);
            }
            let behind = (after - plan.next_run).num_seconds() / period.num_seconds();
            Ok(plan.next_run + period * (behind as i32 + 1))
        }
        (None, None) => Err(AdminError::BadInput(format!(
            "plan `{}` has no schedule",
            plan.name
        ))),
    }
}

fn cut(text: String) -> String {
    if text.len() <= MAX_PLAN_ERROR {
        return text;
    }
    let mut end = MAX_PLAN_ERROR;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `plan` checked against `doc` (its node, asset and account exist; one
/// scope, one schedule), as a row whose first run is computed from `now`.
fn checked(
    doc: &PolicyDocument,
    actor: &str,
    plan: NewPlan,
    now: DateTime<Utc>,
) -> Result<PlanRow> {
    check_name(&plan.name)?;
    if plan.kind == JobKind::Remove {
        return Err(AdminError::BadInput(
            "a plan rotates, verifies, pushes or discovers; removal is on demand only".into(),
        ));
    }
    match (&plan.node, &plan.asset) {
        (Some(node), None) => {
            if plan.account.is_some() {
                return Err(AdminError::BadInput(
                    "a plan of one account names its asset (--asset), not a node".into(),
                ));
            }
            let below = format!("{}/", node.trim_end_matches('/'));
            let known = doc
                .nodes
                .iter()
                .chain(doc.assets.iter().flat_map(|a| &a.nodes))
                .any(|n| n == node || n.starts_with(&below));
            if !known {
                return Err(AdminError::NotFound(format!("node `{node}` not found")));
            }
        }
        (None, Some(asset)) => {
            let found = doc
                .assets
                .iter()
                .find(|a| &a.name == asset)
                .ok_or_else(|| AdminError::NotFound(format!("asset `{asset}` not found")))?;
            if let Some(account) = &plan.account {
                if !found.accounts.iter().any(|a| &a.name == account) {
                    return Err(AdminError::NotFound(format!(
                        "account `{account}` of `{asset}` not found"
                    )));
                }
            }
        }
        _ => {
            return Err(AdminError::BadInput(
                "a plan is of a node or of an asset: name one".into(),
            ))
        }
    }
    let mut row = PlanRow {
        name: plan.name.clone(),
        kind: plan.kind,
        node: plan.node,
        asset: plan.asset,
        account: plan.account,
        every_days: plan.every_days,
        cron: plan.cron,
        created_by: actor.to_string(),
        created_at: now,
        next_run: now,
        last_run: None,
        last_jobs: Vec::new(),
        last_error: None,
    };
    row.next_run = match (&row.cron, row.every_days, plan.start) {
        (Some(_), None, None) => next_after(&row, now)?,
        (Some(expression), None, Some(_)) => {
            parse_cron(expression)?;
            return Err(AdminError::BadInput(
                "--start goes with --every-days; a cron plan runs at the expression's times".into(),
            ));
        }
        (None, Some(days), start) if (1..=MAX_EVERY_DAYS).contains(&days) => {
            start.unwrap_or(now + Duration::days(i64::from(days)))
        }
        (None, Some(_), _) => {
            return Err(AdminError::BadInput(format!(
                "every_days: 1 to {MAX_EVERY_DAYS}"
            )))
        }
        _ => {
            return Err(AdminError::BadInput(
                "a plan runs every N days or on a cron expression: give one".into(),
            ))
        }
    };
    Ok(row)
}

impl JobService {
    /// Adds a plan for `actor`; refuses one whose scope or schedule is
    /// wrong, or whose name is taken.
    pub fn add_plan(&self, actor: &str, plan: NewPlan, now: DateTime<Utc>) -> Result<PlanRow> {
        let doc = self.policy.document(false)?;
        let row = checked(&doc, actor, plan, now)?;
        let mut tx = self.store.write()?;
        if !tx.insert_plan(&row)? {
            return Err(AdminError::Conflict(format!(
                "plan `{}` already exists",
                row.name
            )));
        }
        tx.commit()?;
        tracing::info!(event = "plan_added", plan = %row.name, kind = row.kind.as_str(), actor, next_run = %row.next_run);
        Ok(row)
    }

    /// Makes the plans equal to a policy file's `plans` (checked against
    /// `doc`, the policy being applied): a plan whose definition did not
    /// change keeps its schedule. Returns what changed (`dry_run`: what
    /// would).
    pub fn apply_plans(
        &self,
        actor: &str,
        doc: &PolicyDocument,
        plans: &[Plan],
        dry_run: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let mut wanted = Vec::new();
        for plan in plans {
            let kind = plan.kind.parse().map_err(|e: String| {
                AdminError::BadInput(format!("plan `{}`: {e}", plan.name.escape_debug()))
            })?;
            if wanted.iter().any(|w: &PlanRow| w.name == plan.name) {
                return Err(AdminError::BadInput(format!(
                    "plan `{}` is given twice",
                    plan.name.escape_debug()
                )));
            }
            let new = NewPlan {
                name: plan.name.clone(),
                kind,
                node: plan.node.clone(),
                asset: plan.asset.clone(),
                account: plan.account.clone(),
                every_days: plan.every_days,
                cron: plan.cron.clone(),
                start: None,
            };
            wanted.push(checked(doc, actor, new, now)?);
        }
        let current = self.plans()?;
        let same = |a: &PlanRow, b: &PlanRow| {
            (a.kind, &a.node, &a.asset, &a.account, a.every_days, &a.cron)
                == (b.kind, &b.node, &b.asset, &b.account, b.every_days, &b.cron)
        };
        let mut changes = Vec::new();
        let mut tx = self.store.write()?;
        for old in &current {
            match wanted.iter().find(|w| w.name == old.name) {
                Some(new) if same(old, new) => {}
                Some(_) => {
                    changes.push(format!("~ plan {}", old.name));
                    tx.delete_plan(&old.name)?;
                }
                None => {
                    changes.push(format!("- plan {}", old.name));
                    tx.delete_plan(&old.name)?;
                }
            }
        }
        for new in &wanted {
            match current.iter().find(|c| c.name == new.name) {
                Some(old) if same(old, new) => {}
                Some(_) => {
                    tx.insert_plan(new)?;
                }
                None => {
                    changes.push(format!("+ plan {}", new.name));
                    tx.insert_plan(new)?;
                }
            }
        }
        if dry_run {
            drop(tx);
        } else {
            tx.commit()?;
            for change in &changes {
                tracing::info!(event = "plan_applied", change = %change, actor);
            }
        }
        Ok(changes)
    }

    /// The plans as a policy file writes them (none: `None`).
    pub fn plans_for_export(&self) -> Result<Option<Vec<Plan>>> {
        let plans: Vec<Plan> = self
            .plans()?
            .into_iter()
            .map(|p| Plan {
                name: p.name,
                kind: p.kind.as_str().to_string(),
                node: p.node,
                asset: p.asset,
                account: p.account,
                every_days: p.every_days,
                cron: p.cron,
            })
            .collect();
        Ok((!plans.is_empty()).then_some(plans))
    }

    pub fn plans(&self) -> Result<Vec<PlanRow>> {
        Ok(self.store.read()?.plans()?)
    }

    pub fn plan(&self, name: &str) -> Result<PlanRow> {
        self.store
            .read()?
            .plan(name)?
            .ok_or_else(|| AdminError::NotFound(format!("plan `{name}` not found")))
    }

    pub fn remove_plan(&self, actor: &str, name: &str) -> Result<()> {
        let mut tx = self.store.write()?;
        if !tx.delete_plan(name)? {
            return Err(AdminError::NotFound(format!("plan `{name}` not found")));
        }
        tx.commit()?;
        tracing::info!(event = "plan_removed", plan = name, actor);
        Ok(())
    }

    /// Runs the plans due at `now` that this instance claims; their names.
    pub fn run_due(&self, now: DateTime<Utc>) -> Result<Vec<String>> {
        let due = self.store.read()?.due_plans(now)?;
        let mut ran = Vec::new();
        for plan in due {
            let next = match next_after(&plan, now) {
                Ok(next) => next,
                // A schedule that no longer parses: parked a year out.
                Err(e) => {
                    tracing::warn!(plan = %plan.name, "plan schedule: {e}");
                    now + Duration::days(365)
                }
            };
            let mut tx = self.store.write()?;
            let claimed = tx.claim_plan(&plan.name, plan.next_run, next, now)?;
            tx.commit()?;
            if !claimed {
                continue;
            }
            let actor = format!("plan:{}", plan.name);
            let mut started = Vec::new();
            let mut errors = Vec::new();
            match self.targets(&plan) {
                Ok(targets) => {
                    for (asset, account) in targets {
                        match self.start(&actor, plan.kind, &asset, &account) {
                            Ok(job) => started.push(job.id),
                            Err(e) => errors.push(format!("{account}@{asset}: {e}")),
                        }
                    }
                }
                Err(e) => errors.push(e.to_string()),
            }
            let error = (!errors.is_empty()).then(|| cut(errors.join("\n")));
            let mut tx = self.store.write()?;
            tx.plan_ran(&plan.name, &started, error.as_deref())?;
            tx.commit()?;
            tracing::info!(
                event = "plan_run",
                plan = %plan.name,
                jobs = started.len(),
                failed = errors.len(),
                next_run = %next,
            );
            ran.push(plan.name);
        }
        Ok(ran)
    }

    /// The (asset, account) pairs a plan's run covers: its account, or
    /// every account with a secret (push: every account) of its asset or
    /// of the node's assets — the privileged account only when named or
    /// verified, since the others' jobs log in with it; discovery, one
    /// per asset.
    fn targets(&self, plan: &PlanRow) -> Result<Vec<(String, String)>> {
        let doc = self.policy.document(true)?;
        let in_scope = |asset: &jms_core::model::Asset| match (&plan.asset, &plan.node) {
            (Some(name), _) => &asset.name == name,
            (None, Some(node)) => asset
                .nodes
                .iter()
                .any(|n| n == node || n.starts_with(&format!("{}/", node.trim_end_matches('/')))),
            (None, None) => false,
        };
        let mut out = Vec::new();
        for asset in doc.assets.iter().filter(|a| a.is_active && in_scope(a)) {
            if plan.kind == JobKind::Discover {
                out.push((asset.name.clone(), String::new()));
                continue;
            }
            for account in &asset.accounts {
                let wanted = match &plan.account {
                    Some(name) => &account.name == name,
                    None => {
                        !account.name.starts_with('@')
                            && (plan.kind == JobKind::Verify || !account.privileged)
                            && (plan.kind == JobKind::Push || account.secret.is_some())
                    }
                };
                if wanted {
                    out.push((asset.name.clone(), account.name.clone()));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use jms_core::model::PolicyDocument;

    const POLICY: &str = r#"
nodes: [/Default/prod, /Default/prod/web]
assets:
  - name: web01
    address: 10.0.0.1
    nodes: [/Default/prod/web]
    protocols: [{name: ssh, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: root-pw, privileged: true}
      - {name: app, username: app, secret_type: password, secret: old-pw}
      - {name: bare, username: bare, secret_type: password}
"#;

    fn services() -> (tempfile::TempDir, crate::services::Services) {
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
        (dir, services)
    }

    fn at(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, day, hour, minute, 0).unwrap()
    }

    fn plan(name: &str, every_days: Option<u32>, cron: Option<&str>) -> NewPlan {
        NewPlan {
            name: name.into(),
            kind: JobKind::Rotate,
            node: Some("/Default/prod".into()),
            asset: None,
            account: None,
            every_days,
            cron: cron.map(str::to_string),
            start: None,
        }
    }

    #[test]
    fn a_plan_runs_when_due_once_per_due_time_and_then_resumes_its_schedule() {
        let (_dir, services) = services();
        let jobs = &services.jobs;
        let weekly = jobs
            .add_plan("admin", plan("weekly", Some(7), None), at(1, 10, 0))
            .unwrap();
        assert_eq!(weekly.next_run, at(8, 10, 0));
        let nightly = jobs
            .add_plan(
                "admin",
                plan("nightly", None, Some("30 3 * * *")),
                at(1, 10, 0),
            )
            .unwrap();
        assert_eq!(nightly.next_run, at(2, 3, 30));

        // Not yet due: nothing runs.
        assert!(jobs.run_due(at(2, 3, 29)).unwrap().is_empty());
        // Due: it runs once; a second tick at the same time finds it claimed.
        assert_eq!(jobs.run_due(at(2, 3, 30)).unwrap(), ["nightly"]);
        assert!(jobs.run_due(at(2, 3, 30)).unwrap().is_empty());
        let ran = jobs.plan("nightly").unwrap();
        assert_eq!(ran.next_run, at(3, 3, 30));
        assert_eq!(ran.last_run, Some(at(2, 3, 30)));
        // Its one target (app: root is privileged, bare has no secret)
        // could not start here: no bastion is online, and it says so.
        let error = ran.last_error.unwrap_or_default();
        assert!(error.starts_with("app@web01: "), "{error}");
        assert!(error.contains("no bastion is online"), "{error}");
        assert!(
            !error.contains("root@") && !error.contains("bare@"),
            "{error}"
        );

        // The server was down for three weeks: the weekly plan runs once,
        // then on its own weekday again.
        assert_eq!(jobs.run_due(at(29, 12, 0)).unwrap(), ["nightly", "weekly"]);
        assert_eq!(
            jobs.plan("weekly").unwrap().next_run,
            at(29, 10, 0) + Duration::days(7)
        );
        assert_eq!(jobs.plan("nightly").unwrap().next_run, at(30, 3, 30));

        // Two instances racing for one due time: one claim wins.
        let mut tx = jobs.store.write().unwrap();
        let due = at(30, 3, 30);
        assert!(tx.claim_plan("nightly", due, at(31, 3, 30), due).unwrap());
        assert!(!tx.claim_plan("nightly", due, at(31, 3, 30), due).unwrap());
        tx.commit().unwrap();
    }

    #[test]
    fn plans_with_a_wrong_scope_or_schedule_are_refused() {
        let (_dir, services) = services();
        let jobs = &services.jobs;
        let now = at(1, 0, 0);
        for (what, bad) in [
            ("no schedule", plan("a", None, None)),
            ("two schedules", plan("a", Some(1), Some("0 3 * * *"))),
            ("seconds field", plan("a", None, Some("0 0 3 * * *"))),
            ("nonsense cron", plan("a", None, Some("61 3 * * *"))),
            ("zero days", plan("a", Some(0), None)),
            ("bad name", plan("-a", Some(1), None)),
            (
                "unknown node",
                NewPlan {
                    node: Some("/Nowhere".into()),
                    ..plan("a", Some(1), None)
                },
            ),
            (
                "account without asset",
                NewPlan {
                    account: Some("app".into()),
                    ..plan("a", Some(1), None)
                },
            ),
            (
                "removal",
                NewPlan {
                    kind: JobKind::Remove,
                    ..plan("a", Some(1), None)
                },
            ),
        ] {
            assert!(
                jobs.add_plan("admin", bad, now).is_err(),
                "{what} should be refused"
            );
        }
        jobs.add_plan("admin", plan("a", Some(1), None), now)
            .unwrap();
        assert!(matches!(
            jobs.add_plan("admin", plan("a", Some(2), None), now),
            Err(AdminError::Conflict(_))
        ));
        jobs.remove_plan("admin", "a").unwrap();
        assert!(jobs.plans().unwrap().is_empty());
    }
}
