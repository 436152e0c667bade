//! The jobs pages: the account job history (newest first, optionally of
//! one asset) with each account's last verification, and one job with
//! each step's output, its attempts and the bastions' audit events
//! (`crate::jobs`). Read-only for every role; nothing shown here is ever a
//! secret (steps are scrubbed on the bastion, and the new secret a job
//! keeps is sealed in the store, never read for a page).

use axum::extract::{Path, Query, State};
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::WebAdmin;
use super::layout::{self, url_escape, Nav, Page};
use super::{blocking, WebError, WebState};
use crate::store::{AccountCheck, JobRow, JobStatus};

/// How many jobs the history shows.
const SHOWN: usize = 200;

#[derive(Debug, Default, Deserialize)]
pub struct JobsQuery {
    #[serde(default)]
    asset: Option<String>,
}

fn status(status: JobStatus) -> Markup {
    html! {
        @match status {
            JobStatus::Ok => span.badge.online { "ok" },
            JobStatus::Failed => span.badge.deny { "failed" },
            JobStatus::Running => span.badge { "running" },
        }
    }
}

fn ok_badge(ok: bool) -> Markup {
    html! {
        @if ok { span.badge.online { "ok" } } @else { span.badge.deny { "failed" } }
    }
}

/// `GET /web/jobs[?asset=A]`.
pub async fn list(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<JobsQuery>,
) -> Result<Markup, WebError> {
    let asset = query.asset.filter(|a| !a.is_empty() && a.len() <= 256);
    let wanted = asset.clone();
    let (jobs, mut checks) = blocking(&state, move |services| {
        let jobs = &services.api.services.jobs;
        Ok((
            jobs.jobs(wanted.as_deref(), SHOWN)?,
            jobs.checks()?.into_values().collect::<Vec<AccountCheck>>(),
        ))
    })
    .await?;
    checks.retain(|c| asset.as_ref().is_none_or(|a| &c.asset == a));
    checks.sort_by(|a, b| (&a.asset, &a.account).cmp(&(&b.asset, &b.account)));
    let body = html! {
        h1 { "Account jobs" }
        form.filters method="get" action="/web/jobs" {
            label { "Asset " input type="text" name="asset" value=(asset.as_deref().unwrap_or("")); }
            " " button type="submit" { "Filter" }
        }
        h2 { "Verification" }
        table.rows #checks {
            thead { tr { th { "Asset" } th { "Account" } th { "Result" } th { "When" } th { "Detail" } th { "Job" } } }
            tbody {
                @for c in &checks {
                    tr data-account=(format!("{}@{}", c.account, c.asset)) {
                        td { (layout::shown(&c.asset)) }
                        td { (layout::shown(&c.account)) }
                        td { (ok_badge(c.ok)) }
                        td.nowrap { (layout::time(&c.at)) }
                        td { (layout::shown(&c.detail)) }
                        td.mono {
                            @if let Some(job) = &c.job {
                                a href=(format!("/web/jobs/{}", url_escape(job))) { (layout::shown(job)) }
                            }
                        }
                    }
                }
            }
        }
        @if checks.is_empty() {
            p.muted { "No account was verified yet (jmsctl account verify ASSET ACCOUNT)." }
        }
        h2 { "History" }
        table.rows #jobs {
            thead { tr {
                th { "When" } th { "Job" } th { "Kind" } th { "Account" } th { "By" }
                th { "Bastion" } th { "Attempt" } th { "Result" } th { "Error" }
            } }
            tbody {
                @for j in &jobs {
                    (row(j))
                }
            }
        }
        @if jobs.is_empty() {
            p.muted #no-jobs { "No account job yet." }
        }
    };
    Ok(layout::page(&Page {
        title: "Account jobs",
        admin: Some(&me.username),
        nav: Some(Nav::Jobs),
        body,
    }))
}

fn target(j: &JobRow) -> String {
    if j.account.is_empty() {
        j.asset.clone()
    } else {
        format!("{}@{}", j.account, j.asset)
    }
}

fn row(j: &JobRow) -> Markup {
    html! {
        tr data-job=(j.id) {
            td.nowrap { (layout::time(&j.created_at)) }
            td.mono { a href=(format!("/web/jobs/{}", url_escape(&j.id))) { (layout::shown(&j.id)) } }
            td { (j.kind.as_str()) }
            td { (layout::shown(&target(j))) }
            td { (layout::shown(&j.actor)) }
            td { (layout::shown(j.bastion.as_deref().unwrap_or("—"))) }
            td { (j.attempt) }
            td { (status(j.status)) @if j.changed { " " span.muted { "changed" } } }
            td { (layout::shown(j.error.as_deref().unwrap_or(""))) }
        }
    }
}

/// `GET /web/jobs/{id}`.
pub async fn detail(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    let (job, events) = blocking(&state, move |services| {
        let jobs = &services.api.services.jobs;
        Ok((jobs.job(&id)?, jobs.job_events(&id)?))
    })
    .await?;
    let body = html! {
        h1 { "Job " span.mono { (layout::shown(&job.id)) } }
        table.detail {
            tr { th { "Kind" } td { (job.kind.as_str()) } }
            tr { th { "Account" } td { (layout::shown(&target(&job))) } }
            tr { th { "By" } td { (layout::shown(&job.actor)) } }
            tr { th { "Result" } td #result { (status(job.status)) @if job.changed { " " span.muted { "changed the target" } } } }
            tr { th { "Started" } td { (layout::time(&job.created_at)) } }
            @if let Some(at) = &job.finished_at { tr { th { "Finished" } td { (layout::time(at)) } } }
            tr { th { "Attempt" } td { (job.attempt) " (bastions: " (layout::shown(&job.tried.join(", "))) ")" } }
            @if let Some(error) = &job.error { tr { th { "Error" } td #error { (layout::shown(error)) } } }
        }
        h2 { "Steps" }
        table.rows #steps {
            thead { tr { th { "Step" } th { "Result" } th { "Output" } } }
            tbody {
                @for step in &job.steps {
                    tr data-step=(step.name) {
                        td { (layout::shown(&step.name)) }
                        td { (ok_badge(step.ok)) }
                        td { pre.output { @for line in step.detail.lines() { (layout::shown(line)) "\n" } } }
                    }
                }
            }
        }
        @if job.steps.is_empty() {
            p.muted { "No report yet." }
        }
        h2 { "Audit events from the bastions" }
        table.rows #events {
            thead { tr { th { "When" } th { "Bastion" } th { "Attempt" } th { "Step" } th { "Result" } th { "Output" } } }
            tbody {
                @for e in &events {
                    tr {
                        td.nowrap { (layout::shown(&e.at)) }
                        td { (layout::shown(e.bastion.as_deref().unwrap_or("—"))) }
                        td { (e.attempt) }
                        td { (layout::shown(&e.step)) }
                        td { (ok_badge(e.ok)) }
                        td { pre.output { @for line in e.detail.lines() { (layout::shown(line)) "\n" } } }
                    }
                }
            }
        }
        p { a href=(format!("/web/jobs?asset={}", url_escape(&job.asset))) { "Jobs of " (layout::shown(&job.asset)) } }
    };
    Ok(layout::page(&Page {
        title: "Account job",
        admin: Some(&me.username),
        nav: Some(Nav::Jobs),
        body,
    }))
}
