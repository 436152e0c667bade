//! Settings, the operation log and the whole policy (export / apply).

use std::collections::HashMap;
use std::path::Path;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jms_core::model::{Account, PolicyDocument, User};
use jms_core::{Format, Policy};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::extract::{merge, PageParams, Params, Patch};
use super::views::PageView;
use super::{blocking, Actor, ApiError, AppState};
use crate::error::AdminError;
use crate::policy::{policy_message, Applied};
use crate::settings::Settings;
use crate::store::{OpLogEntry, Scope};

// ---- settings -------------------------------------------------------------

/// The settings as read: the mail password replaced by `has_password`.
fn settings_view(settings: &Settings, has_password: bool) -> Value {
    let mut value = serde_json::to_value(settings).expect("settings serialise");
    value["mail"]["has_password"] = Value::Bool(has_password);
    value
}

/// Reads a settings document; `has_password` (from a read) is ignored.
fn parse_settings(mut value: Value) -> Result<Settings, AdminError> {
    if let Some(mail) = value.get_mut("mail").and_then(Value::as_object_mut) {
        mail.remove("has_password");
    }
    serde_json::from_value(value).map_err(|e| AdminError::BadInput(format!("settings: {e}")))
}

fn mentions_password(body: &Map<String, Value>) -> bool {
    body.get("mail")
        .and_then(Value::as_object)
        .is_some_and(|m| m.contains_key("password"))
}

pub async fn get_settings(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    blocking(&state, |services| {
        let (settings, has_password) = services.policy.settings()?;
        Ok(Json(settings_view(&settings, has_password)))
    })
    .await
}

/// PUT: the whole document (absent fields take their defaults; the mail
/// password is kept unless `mail.password` is given).
pub async fn put_settings(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Patch(body): Patch,
) -> Result<Json<Value>, ApiError> {
    blocking(&state, move |services| {
        let (settings, has_password, _) =
            services.policy.change_settings(&actor.name, |current| {
                let mut new = parse_settings(Value::Object(body.clone()))?;
                if !mentions_password(&body) {
                    new.mail.password = current.mail.password.clone();
                }
                *current = new;
                Ok(())
            })?;
        Ok(Json(settings_view(&settings, has_password)))
    })
    .await
}

/// PATCH: a merge patch of the document.
pub async fn patch_settings(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Patch(patch): Patch,
) -> Result<Json<Value>, ApiError> {
    blocking(&state, move |services| {
        let (settings, has_password, _) =
            services.policy.change_settings(&actor.name, |current| {
                let mut value = serde_json::to_value(&*current).expect("settings serialise");
                merge(&mut value, &Value::Object(patch.clone()));
                let mut new = parse_settings(value)?;
                if !mentions_password(&patch) {
                    new.mail.password = current.mail.password.clone();
                }
                *current = new;
                Ok(())
            })?;
        Ok(Json(settings_view(&settings, has_password)))
    })
    .await
}

// ---- operation log ------------------------------------------------------

pub async fn list_oplog(
    State(state): State<AppState>,
    Params(params): Params<PageParams>,
) -> Result<Json<PageView<OpLogEntry>>, ApiError> {
    let query = params.query()?;
    blocking(&state, move |services| {
        let page = services.policy.read()?.oplog(&query)?;
        Ok(Json(PageView::new(page, &query, |entry| entry)))
    })
    .await
}

// ---- the whole policy ---------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// Include secrets (admin tokens only; written to the operation log).
    #[serde(default)]
    with_secrets: bool,
}

pub async fn export_policy(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Params(params): Params<ExportParams>,
) -> Result<Json<PolicyDocument>, ApiError> {
    if params.with_secrets && actor.scope != Scope::Admin {
        return Err(AdminError::Forbidden(format!(
            "{} has the {} role: exporting secrets needs admin",
            actor.name, actor.scope
        ))
        .into());
    }
    blocking(&state, move |services| {
        if params.with_secrets {
            services.policy.log_secret_export(&actor.name)?;
        }
        let mut doc = services.policy.document(params.with_secrets)?;
        doc.plans = services.jobs.plans_for_export()?;
        Ok(Json(doc))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyParams {
    /// Only compute the changes.
    #[serde(default)]
    dry_run: bool,
}

/// PUT: make the server's policy equal to the document. Secrets left out
/// of the document (an export without secrets) keep their stored values.
pub async fn apply_policy(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Params(params): Params<ApplyParams>,
    body: axum::body::Bytes,
) -> Result<Json<AppliedWithPlans>, ApiError> {
    let mut desired = read_document(&body)?;
    // Plans live beside the policy: checked against the document being
    // applied, then made equal to the file's (left alone when it has none).
    let plans = desired.plans.take();
    blocking(&state, move |services| {
        let now = chrono::Utc::now();
        let check = plans.as_ref().map(|_| desired.clone());
        if let (Some(plans), Some(check)) = (&plans, &check) {
            services
                .jobs
                .apply_plans(&actor.name, check, plans, true, now)?;
        }
        let applied = services.policy.change(&actor.name, params.dry_run, |doc| {
            keep_secrets(&mut desired, doc);
            *doc = desired;
            Ok(())
        })?;
        let plan_changes = match (&plans, &check) {
            (Some(plans), Some(check)) => {
                services
                    .jobs
                    .apply_plans(&actor.name, check, plans, params.dry_run, now)?
            }
            _ => Vec::new(),
        };
        Ok(Json(AppliedWithPlans {
            applied,
            plans: plan_changes,
        }))
    })
    .await
}

/// The answer to `PUT /api/v1/policy`: the policy's changes and the plans'.
#[derive(Debug, serde::Serialize)]
pub struct AppliedWithPlans {
    #[serde(flatten)]
    pub applied: Applied,
    /// `+ plan NAME`, `~ plan NAME`, `- plan NAME`.
    pub plans: Vec<String>,
}

/// Parses a policy document; on error, jms-core's message naming the
/// entity and field.
fn read_document(body: &[u8]) -> Result<PolicyDocument, ApiError> {
    match serde_json::from_slice::<PolicyDocument>(body) {
        Ok(doc) => Ok(doc),
        Err(e) => {
            let text = std::str::from_utf8(body)
                .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
            // The typed parse failed, so jms-core's entity-by-entity parse
            // fails too, before any check could read a `secret_file`.
            match Policy::parse(text, Format::Json, "policy", Path::new("/nonexistent")) {
                Err(e) => Err(ApiError::bad_request(policy_message(&e))),
                Ok(_) => Err(ApiError::bad_request(e.to_string())),
            }
        }
    }
}

/// Secrets `desired` leaves out keep the values `current` has.
fn keep_secrets(desired: &mut PolicyDocument, current: &PolicyDocument) {
    let users: HashMap<&str, &User> = current
        .users
        .iter()
        .map(|u| (u.username.as_str(), u))
        .collect();
    for user in &mut desired.users {
        if let Some(old) = users.get(user.username.as_str()) {
            if user.password_hash.is_none() {
                user.password_hash = old.password_hash.clone();
            }
            if user.totp_secret.is_none() {
                user.totp_secret = old.totp_secret.clone();
            }
        }
    }
    let accounts: HashMap<(&str, &str), &Account> = current
        .assets
        .iter()
        .flat_map(|a| {
            a.accounts
                .iter()
                .map(move |acc| ((a.name.as_str(), acc.name.as_str()), acc))
        })
        .collect();
    for asset in &mut desired.assets {
        for account in &mut asset.accounts {
            if account.secret.is_some() || account.secret_file.is_some() {
                continue;
            }
            if let Some(old) = accounts.get(&(asset.name.as_str(), account.name.as_str())) {
                account.secret = old.secret.clone();
            }
        }
    }
}

pub async fn policy_version(State(state): State<AppState>) -> Result<Response, ApiError> {
    blocking(&state, |services| {
        let version = services.policy.version()?;
        Ok((
            StatusCode::OK,
            Json(serde_json::json!({ "version": version })),
        )
            .into_response())
    })
    .await
}
