//! Nodes (keyed by id: their paths hold slashes) and accounts (nested
//! under their asset: `/api/v1/assets/{asset}/accounts/{name}`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use jms_core::model::{Account, PolicyDocument};
use serde::Deserialize;

use super::extract::{Body, PageParams, Params, Patch, PathParams};
use super::resources::{not_found, patched};
use super::views::{AccountView, NodeView, PageView};
use super::{blocking, Actor, ApiError, AppState};
use crate::error::AdminError;
use crate::policy::PolicyService;

/// `POST /api/v1/nodes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewNode {
    /// `/Default/prod/web`; its parents are implied.
    pub path: String,
}

fn node_not_found(id: i64) -> AdminError {
    AdminError::NotFound(format!("node {id} not found"))
}

pub async fn list_nodes(
    State(state): State<AppState>,
    Params(params): Params<PageParams>,
) -> Result<Json<PageView<NodeView>>, ApiError> {
    let query = params.query()?;
    blocking(&state, move |services| {
        let page = services.policy.read()?.nodes(&query)?;
        Ok(Json(PageView::new(page, &query, NodeView::from)))
    })
    .await
}

pub async fn get_node(
    State(state): State<AppState>,
    PathParams(id): PathParams<i64>,
) -> Result<Json<NodeView>, ApiError> {
    blocking(&state, move |services| {
        let row = services
            .policy
            .read()?
            .node(id)?
            .ok_or_else(|| node_not_found(id))?;
        Ok(Json(NodeView::from(row)))
    })
    .await
}

pub async fn create_node(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(node): Body<NewNode>,
) -> Result<(StatusCode, Json<NodeView>), ApiError> {
    blocking(&state, move |services| {
        let path = node.path;
        services.policy.change(&actor.name, false, |doc| {
            if doc.nodes.contains(&path) {
                return Err(AdminError::Conflict(format!(
                    "node `{path}` already exists"
                )));
            }
            doc.nodes.push(path.clone());
            Ok(())
        })?;
        let row = services
            .policy
            .read()?
            .node_by_path(&path)?
            .ok_or_else(|| AdminError::NotFound(format!("node `{path}` not found")))?;
        Ok((StatusCode::CREATED, Json(NodeView::from(row))))
    })
    .await
}

/// `path` moved from under `old` to under `new` (`None`: not under it).
fn moved(path: &str, old: &str, new: &str) -> Option<String> {
    if path == old {
        return Some(new.to_string());
    }
    path.strip_prefix(old)
        .filter(|rest| rest.starts_with('/'))
        .map(|rest| format!("{new}{rest}"))
}

/// `PATCH /api/v1/nodes/{id}` `{"path": NEW}`: renames or moves the node
/// and everything under it; the assets, grants and filters that name them
/// follow. One change, checked like any other.
pub async fn patch_node(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(id): PathParams<i64>,
    Body(node): Body<NewNode>,
) -> Result<Json<NodeView>, ApiError> {
    blocking(&state, move |services| {
        let old = services
            .policy
            .read()?
            .node(id)?
            .ok_or_else(|| node_not_found(id))?
            .path;
        let new = node.path;
        if new != old && (new.starts_with(&format!("{old}/"))) {
            return Err(AdminError::BadInput(format!(
                "node `{old}` cannot move under itself (`{new}`)"
            )));
        }
        services.policy.change(&actor.name, false, |doc| {
            if new != old && doc.nodes.contains(&new) {
                return Err(AdminError::Conflict(format!("node `{new}` already exists")));
            }
            let rename = |list: &mut Vec<String>| {
                for path in list.iter_mut() {
                    if let Some(moved) = moved(path, &old, &new) {
                        *path = moved;
                    }
                }
            };
            rename(&mut doc.nodes);
            for asset in &mut doc.assets {
                rename(&mut asset.nodes);
            }
            for grant in &mut doc.grants {
                rename(&mut grant.nodes);
            }
            for filter in &mut doc.command_filters {
                rename(&mut filter.nodes);
            }
            Ok(())
        })?;
        let row = services
            .policy
            .read()?
            .node_by_path(&new)?
            .ok_or_else(|| AdminError::NotFound(format!("node `{new}` not found")))?;
        Ok(Json(NodeView::from(row)))
    })
    .await
}

pub async fn delete_node(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(id): PathParams<i64>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |services| {
        let row = services
            .policy
            .read()?
            .node(id)?
            .ok_or_else(|| node_not_found(id))?;
        services.policy.change(&actor.name, false, |doc| {
            doc.nodes.retain(|p| *p != row.path);
            Ok(())
        })?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

/// The accounts of `asset` in the document, or 404.
fn accounts_of<'d>(
    doc: &'d mut PolicyDocument,
    asset: &str,
) -> Result<&'d mut Vec<Account>, AdminError> {
    doc.assets
        .iter_mut()
        .find(|a| a.name == asset)
        .map(|a| &mut a.accounts)
        .ok_or_else(|| AdminError::NotFound(format!("asset `{asset}` not found")))
}

fn account_not_found(asset: &str, name: &str) -> AdminError {
    AdminError::NotFound(format!("account `{name}` not found on asset `{asset}`"))
}

pub async fn list_all_accounts(
    State(state): State<AppState>,
    Params(params): Params<PageParams>,
) -> Result<Json<PageView<AccountView>>, ApiError> {
    let query = params.query()?;
    blocking(&state, move |services| {
        let page = services.policy.read()?.accounts(None, &query)?;
        let checks = services.jobs.checks()?;
        Ok(Json(PageView::new(page, &query, |row| {
            AccountView::from(row).with_check(&checks)
        })))
    })
    .await
}

pub async fn list_accounts(
    State(state): State<AppState>,
    PathParams(asset): PathParams<String>,
    Params(params): Params<PageParams>,
) -> Result<Json<PageView<AccountView>>, ApiError> {
    let query = params.query()?;
    blocking(&state, move |services| {
        let tx = services.policy.read()?;
        if tx.asset(&asset)?.is_none() {
            return Err(not_found::<jms_core::model::Asset>(&asset));
        }
        let page = tx.accounts(Some(&asset), &query)?;
        let checks = services.jobs.checks()?;
        Ok(Json(PageView::new(page, &query, |row| {
            AccountView::from(row).with_check(&checks)
        })))
    })
    .await
}

pub async fn get_account(
    State(state): State<AppState>,
    PathParams((asset, name)): PathParams<(String, String)>,
) -> Result<Json<AccountView>, ApiError> {
    blocking(&state, move |services| {
        let row = services
            .policy
            .read()?
            .account(&asset, &name)?
            .ok_or_else(|| account_not_found(&asset, &name))?;
        let checks = services.jobs.checks()?;
        Ok(Json(AccountView::from(row).with_check(&checks)))
    })
    .await
}

fn account_view(
    policy: &PolicyService,
    asset: &str,
    name: &str,
) -> Result<AccountView, AdminError> {
    let row = policy
        .read()?
        .account(asset, name)?
        .ok_or_else(|| account_not_found(asset, name))?;
    Ok(AccountView::from(row))
}

pub async fn create_account(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(asset): PathParams<String>,
    Body(account): Body<Account>,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    blocking(&state, move |services| {
        let name = account.name.clone();
        services.policy.change(&actor.name, false, |doc| {
            let accounts = accounts_of(doc, &asset)?;
            if accounts.iter().any(|a| a.name == name) {
                return Err(AdminError::Conflict(format!(
                    "account `{name}` already exists on asset `{asset}`"
                )));
            }
            accounts.push(account);
            Ok(())
        })?;
        Ok((
            StatusCode::CREATED,
            Json(account_view(&services.policy, &asset, &name)?),
        ))
    })
    .await
}

pub async fn patch_account(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams((asset, name)): PathParams<(String, String)>,
    Patch(patch): Patch,
) -> Result<Json<AccountView>, ApiError> {
    blocking(&state, move |services| {
        services.policy.change(&actor.name, false, |doc| {
            let accounts = accounts_of(doc, &asset)?;
            let at = accounts
                .iter()
                .position(|a| a.name == name)
                .ok_or_else(|| account_not_found(&asset, &name))?;
            accounts[at] = patched(&accounts[at], &patch)?;
            Ok(())
        })?;
        Ok(Json(account_view(&services.policy, &asset, &name)?))
    })
    .await
}

pub async fn delete_account(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams((asset, name)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |services| {
        services.policy.change(&actor.name, false, |doc| {
            let accounts = accounts_of(doc, &asset)?;
            let before = accounts.len();
            accounts.retain(|a| a.name != name);
            if accounts.len() == before {
                return Err(account_not_found(&asset, &name));
            }
            Ok(())
        })?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
