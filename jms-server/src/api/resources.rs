//! The five top-level policy collections (users, user groups, assets,
//! grants, command filters) share one shape, so they share these handlers:
//!
//! - `GET /api/v1/{kind}?limit=&offset=&q=`: a page of views;
//! - `POST /api/v1/{kind}`: the entity in its policy-file form (the same
//!   fields and checks as in a policy file); 201 with its view;
//! - `GET /api/v1/{kind}/{name}`;
//! - `PATCH /api/v1/{kind}/{name}`: a JSON merge patch (RFC 7386) of the
//!   policy-file form; write-only fields left out of the patch are kept;
//!   names never change;
//! - `DELETE /api/v1/{kind}/{name}`: 204.
//!
//! Every write is checked by jms-core against the whole policy before it
//! is committed (see `crate::admin`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use chrono::{Timelike, Utc};
use jms_core::model::{
    Account, Asset, CommandFilter, Grant, PolicyDocument, Timestamp, User, UserGroup,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use super::extract::{merge, Body, PageParams, Params, Patch, PathParams};
use super::views::{AssetView, FilterView, GrantView, GroupView, PageView, UserView};
use super::{blocking, Actor, ApiError, AppState};
use crate::error::AdminError;
use crate::store::{self, ListQuery, Page, ReadTx};

/// An entity that a merge patch can change.
pub trait Patchable: Serialize + DeserializeOwned + Send + 'static {
    /// In messages: `user`, `user group`, ….
    const KIND: &'static str;
    /// The field that names it.
    const KEY: &'static str;
    /// Write-only fields: never read back; kept when a patch omits them.
    const SECRETS: &'static [&'static str] = &[];
    /// Fields managed elsewhere (their own routes); a patch may not name them.
    const FIXED: &'static [&'static str] = &[];

    fn key(&self) -> &str;
    /// Copies from the stored entity what the patch does not replace.
    fn carry_over(&mut self, _old: &Self, _patch: &Map<String, Value>) {}
}

/// A top-level collection of the policy document.
pub trait Resource: Patchable {
    type View: Serialize + Send + 'static;

    fn items(doc: &mut PolicyDocument) -> &mut Vec<Self>;
    fn list(tx: &dyn ReadTx, query: &ListQuery) -> store::Result<Page<Self::View>>;
    fn view(tx: &dyn ReadTx, key: &str) -> store::Result<Option<Self::View>>;
    /// Fills server defaults before a create.
    fn prepare(&mut self) {}
    /// After `key` left the document: drop what belonged to it.
    fn on_remove(_doc: &mut PolicyDocument, _key: &str) {}
}

pub fn not_found<P: Patchable>(key: &str) -> AdminError {
    AdminError::NotFound(format!("{} `{key}` not found", P::KIND))
}

/// `old` with `patch` merged in.
pub fn patched<P: Patchable>(old: &P, patch: &Map<String, Value>) -> Result<P, AdminError> {
    for field in P::FIXED {
        if patch.contains_key(*field) {
            return Err(AdminError::BadInput(format!(
                "{} `{}`: `{field}` has its own routes and cannot be patched here",
                P::KIND,
                old.key()
            )));
        }
    }
    if let Some(name) = patch.get(P::KEY) {
        if name.as_str() != Some(old.key()) {
            return Err(AdminError::BadInput(format!(
                "{} `{}`: `{}` cannot change (create a new one and delete this one)",
                P::KIND,
                old.key(),
                P::KEY
            )));
        }
    }
    let mut value = serde_json::to_value(old).expect("model values serialise");
    if let Value::Object(map) = &mut value {
        for field in P::SECRETS.iter().chain(P::FIXED) {
            map.remove(*field);
        }
    }
    merge(&mut value, &Value::Object(patch.clone()));
    let mut new: P = serde_json::from_value(value)
        .map_err(|e| AdminError::BadInput(format!("{} `{}`: {e}", P::KIND, old.key())))?;
    new.carry_over(old, patch);
    Ok(new)
}

pub async fn list<R: Resource>(
    State(state): State<AppState>,
    Params(params): Params<PageParams>,
) -> Result<Json<PageView<R::View>>, ApiError> {
    let query = params.query()?;
    blocking(&state, move |services| {
        let page = R::list(&*services.policy.read()?, &query)?;
        Ok(Json(PageView::new(page, &query, |view| view)))
    })
    .await
}

pub async fn get<R: Resource>(
    State(state): State<AppState>,
    PathParams(key): PathParams<String>,
) -> Result<Json<R::View>, ApiError> {
    blocking(&state, move |services| {
        R::view(&*services.policy.read()?, &key)?
            .map(Json)
            .ok_or_else(|| not_found::<R>(&key))
    })
    .await
}

pub async fn create<R: Resource>(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(mut item): Body<R>,
) -> Result<(StatusCode, Json<R::View>), ApiError> {
    item.prepare();
    blocking(&state, move |services| {
        let key = item.key().to_string();
        services.policy.change(&actor.name, false, |doc| {
            let items = R::items(doc);
            if items.iter().any(|i| i.key() == key) {
                return Err(AdminError::Conflict(format!(
                    "{} `{key}` already exists",
                    R::KIND
                )));
            }
            items.push(item);
            Ok(())
        })?;
        let view = R::view(&*services.policy.read()?, &key)?.ok_or_else(|| not_found::<R>(&key))?;
        Ok((StatusCode::CREATED, Json(view)))
    })
    .await
}

pub async fn patch<R: Resource>(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(key): PathParams<String>,
    Patch(patch): Patch,
) -> Result<Json<R::View>, ApiError> {
    blocking(&state, move |services| {
        services.policy.change(&actor.name, false, |doc| {
            let items = R::items(doc);
            let at = items
                .iter()
                .position(|i| i.key() == key)
                .ok_or_else(|| not_found::<R>(&key))?;
            items[at] = patched(&items[at], &patch)?;
            Ok(())
        })?;
        let view = R::view(&*services.policy.read()?, &key)?.ok_or_else(|| not_found::<R>(&key))?;
        Ok(Json(view))
    })
    .await
}

pub async fn delete<R: Resource>(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(key): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    blocking(&state, move |services| {
        services.policy.change(&actor.name, false, |doc| {
            let items = R::items(doc);
            let before = items.len();
            items.retain(|i| i.key() != key);
            if items.len() == before {
                return Err(not_found::<R>(&key));
            }
            R::on_remove(doc, &key);
            Ok(())
        })?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

fn every() -> ListQuery {
    ListQuery {
        limit: u32::MAX,
        offset: 0,
        q: None,
    }
}

fn map_page<R, V>(
    page: Page<R>,
    view: impl FnMut(R) -> store::Result<V>,
) -> store::Result<Page<V>> {
    Ok(Page {
        items: page
            .items
            .into_iter()
            .map(view)
            .collect::<store::Result<_>>()?,
        total: page.total,
    })
}

impl Patchable for User {
    const KIND: &'static str = "user";
    const KEY: &'static str = "username";
    const SECRETS: &'static [&'static str] = &["password_hash", "totp_secret"];

    fn key(&self) -> &str {
        &self.username
    }
    fn carry_over(&mut self, old: &Self, patch: &Map<String, Value>) {
        if !patch.contains_key("password_hash") {
            self.password_hash = old.password_hash.clone();
        }
        if !patch.contains_key("totp_secret") {
            self.totp_secret = old.totp_secret.clone();
        }
    }
}

impl Resource for User {
    type View = UserView;

    fn items(doc: &mut PolicyDocument) -> &mut Vec<Self> {
        &mut doc.users
    }
    fn list(tx: &dyn ReadTx, query: &ListQuery) -> store::Result<Page<UserView>> {
        map_page(tx.users(query)?, |row| Ok(UserView::from(row)))
    }
    fn view(tx: &dyn ReadTx, key: &str) -> store::Result<Option<UserView>> {
        Ok(tx.user(key)?.map(UserView::from))
    }
}

impl Patchable for UserGroup {
    const KIND: &'static str = "user group";
    const KEY: &'static str = "name";

    fn key(&self) -> &str {
        &self.name
    }
}

impl Resource for UserGroup {
    type View = GroupView;

    fn items(doc: &mut PolicyDocument) -> &mut Vec<Self> {
        &mut doc.user_groups
    }
    fn list(tx: &dyn ReadTx, query: &ListQuery) -> store::Result<Page<GroupView>> {
        map_page(tx.groups(query)?, |row| {
            let members = tx.group_members(&row.group.name)?;
            Ok(GroupView::new(row, members))
        })
    }
    fn view(tx: &dyn ReadTx, key: &str) -> store::Result<Option<GroupView>> {
        match tx.group(key)? {
            Some(row) => Ok(Some(GroupView::new(row, tx.group_members(key)?))),
            None => Ok(None),
        }
    }
    /// Membership belongs to the group: it goes with it. Grants and
    /// filters that name the group still do, so jms-core refuses those.
    fn on_remove(doc: &mut PolicyDocument, key: &str) {
        for user in &mut doc.users {
            user.groups.retain(|g| g != key);
        }
    }
}

impl Patchable for Asset {
    const KIND: &'static str = "asset";
    const KEY: &'static str = "name";
    const FIXED: &'static [&'static str] = &["accounts"];

    fn key(&self) -> &str {
        &self.name
    }
    fn carry_over(&mut self, old: &Self, _patch: &Map<String, Value>) {
        self.accounts = old.accounts.clone();
    }
}

impl Resource for Asset {
    type View = AssetView;

    fn items(doc: &mut PolicyDocument) -> &mut Vec<Self> {
        &mut doc.assets
    }
    fn list(tx: &dyn ReadTx, query: &ListQuery) -> store::Result<Page<AssetView>> {
        map_page(tx.assets(query)?, |row| {
            let accounts = tx.accounts(Some(&row.asset.name), &every())?.items;
            let details = tx.asset_facts(&row.asset.name)?;
            Ok(AssetView::new(row, accounts, details))
        })
    }
    fn view(tx: &dyn ReadTx, key: &str) -> store::Result<Option<AssetView>> {
        match tx.asset(key)? {
            Some(row) => Ok(Some(AssetView::new(
                row,
                tx.accounts(Some(key), &every())?.items,
                tx.asset_facts(key)?,
            ))),
            None => Ok(None),
        }
    }
}

impl Patchable for Account {
    const KIND: &'static str = "account";
    const KEY: &'static str = "name";
    const SECRETS: &'static [&'static str] = &["secret"];

    fn key(&self) -> &str {
        &self.name
    }
    fn carry_over(&mut self, old: &Self, patch: &Map<String, Value>) {
        if !patch.contains_key("secret") {
            self.secret = old.secret.clone();
        }
    }
}

impl Patchable for Grant {
    const KIND: &'static str = "grant";
    const KEY: &'static str = "name";

    fn key(&self) -> &str {
        &self.name
    }
}

impl Resource for Grant {
    type View = GrantView;

    fn items(doc: &mut PolicyDocument) -> &mut Vec<Self> {
        &mut doc.grants
    }
    fn list(tx: &dyn ReadTx, query: &ListQuery) -> store::Result<Page<GrantView>> {
        map_page(tx.grants(query)?, |row| Ok(GrantView::from(row)))
    }
    fn view(tx: &dyn ReadTx, key: &str) -> store::Result<Option<GrantView>> {
        Ok(tx.grant(key)?.map(GrantView::from))
    }
    /// A grant created without `date_start` starts at its creation.
    fn prepare(&mut self) {
        if self.date_start.is_none() {
            self.date_start = Some(Timestamp(
                Utc::now().with_nanosecond(0).expect("0 is valid"),
            ));
        }
    }
}

impl Patchable for CommandFilter {
    const KIND: &'static str = "command filter";
    const KEY: &'static str = "name";

    fn key(&self) -> &str {
        &self.name
    }
}

impl Resource for CommandFilter {
    type View = FilterView;

    fn items(doc: &mut PolicyDocument) -> &mut Vec<Self> {
        &mut doc.command_filters
    }
    fn list(tx: &dyn ReadTx, query: &ListQuery) -> store::Result<Page<FilterView>> {
        map_page(tx.filters(query)?, |row| Ok(FilterView::from(row)))
    }
    fn view(tx: &dyn ReadTx, key: &str) -> store::Result<Option<FilterView>> {
        Ok(tx.filter(key)?.map(FilterView::from))
    }
}
