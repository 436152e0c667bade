//! Account jobs: `POST /api/v1/jobs` starts one (push, verify, rotate;
//! operator), `GET /api/v1/jobs[/{job}]` shows them with each step's
//! output (auditor), and the bastion's signed report
//! (`POST /api/v1/sync/jobs/{job}`); scheduled plans
//! (`/api/v1/plans[/{plan}]`: add and remove, operator; read, auditor).
//! No answer ever holds a secret.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::{Extension, Json};
use jms_sync::job::{JobKind, JobReport, MAX_REPORT_BYTES};
use serde::{Deserialize, Serialize};

use super::extract::{Body, PageParams, Params, PathParams};
use super::{blocking, Actor, ApiError, AppState};
use crate::jobs::plans::NewPlan;
use crate::store::{JobEvent, JobRow, PlanRow};

/// `POST /api/v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    pub kind: JobKind,
    pub asset: String,
    pub account: String,
}

/// `GET /api/v1/jobs`.
#[derive(Debug, Serialize)]
pub struct JobList {
    pub items: Vec<JobRow>,
}

pub async fn create_job(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(job): Body<NewJob>,
) -> Result<(StatusCode, Json<JobRow>), ApiError> {
    blocking(&state, move |services| {
        let row = services
            .jobs
            .start(&actor.name, job.kind, &job.asset, &job.account)?;
        Ok((StatusCode::CREATED, Json(row)))
    })
    .await
}

/// Newest first; `q` names an asset, `limit` how many.
pub async fn list_jobs(
    State(state): State<AppState>,
    Params(params): Params<PageParams>,
) -> Result<Json<JobList>, ApiError> {
    let query = params.query()?;
    blocking(&state, move |services| {
        let items = services
            .jobs
            .jobs(query.q.as_deref(), query.limit as usize)?;
        Ok(Json(JobList { items }))
    })
    .await
}

/// `GET /api/v1/jobs/{job}`: the job and its bastions' audit events.
#[derive(Debug, Serialize)]
pub struct JobDetail {
    #[serde(flatten)]
    pub job: JobRow,
    pub events: Vec<JobEvent>,
}

pub async fn get_job(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<JobDetail>, ApiError> {
    blocking(&state, move |services| {
        Ok(Json(JobDetail {
            job: services.jobs.job(&id)?,
            events: services.jobs.job_events(&id)?,
        }))
    })
    .await
}

/// `POST /api/v1/sync/jobs/{job}` (signed): the bastion's report.
pub async fn report(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
    PathParams(id): PathParams<String>,
    body: Bytes,
) -> Result<Json<JobRow>, ApiError> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(ApiError::bad_request("job report: too large"));
    }
    let bastion = super::sync::signed(&state, &method, &uri, &headers_in, body.clone()).await?;
    let report: JobReport = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("job report: {e}")))?;
    blocking(&state, move |services| {
        Ok(Json(services.jobs.report(&bastion.name, &id, report)?))
    })
    .await
}

/// `GET /api/v1/plans`.
#[derive(Debug, Serialize)]
pub struct PlanList {
    pub items: Vec<PlanRow>,
}

/// `POST /api/v1/plans`.
pub async fn create_plan(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(plan): Body<NewPlan>,
) -> Result<(StatusCode, Json<PlanRow>), ApiError> {
    blocking(&state, move |services| {
        let row = services
            .jobs
            .add_plan(&actor.name, plan, chrono::Utc::now())?;
        Ok((StatusCode::CREATED, Json(row)))
    })
    .await
}

pub async fn list_plans(State(state): State<AppState>) -> Result<Json<PlanList>, ApiError> {
    blocking(&state, move |services| {
        Ok(Json(PlanList {
            items: services.jobs.plans()?,
        }))
    })
    .await
}

pub async fn get_plan(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<PlanRow>, ApiError> {
    blocking(&state, move |services| Ok(Json(services.jobs.plan(&name)?))).await
}

pub async fn delete_plan(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(name): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |services| {
        services.jobs.remove_plan(&actor.name, &name)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
