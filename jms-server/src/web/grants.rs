//! Console pages for grants and command filters. The grant form shows,
//! as it is filled in, which users × assets (with which accounts) the
//! grant will cover: `GET /web/grants/coverage` evaluates the draft with
//! jms-core against the stored policy (the draft alone among the grants)
//! and `grant.js` puts the answer under the form. Every write is the API
//! handler's (see [`super::console`]).

use std::path::Path as FsPath;

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::{Extension, Form};
use chrono::Utc;
use jms_core::model::{CommandFilter, Grant};
use jms_core::Policy;
use maud::{html, Markup};
use serde_json::{json, Value};

use super::auth::WebAdmin;
use super::console::{self, actor, done, may, Names, Note, PageQuery};
use super::forms::{self, Fields};
use super::layout::{self, url_escape, Nav};
use super::{assets, WebError, WebState};
use crate::api::extract::{Body, PathParams};
use crate::api::resources;
use crate::policy::policy_message;

const PROTOCOLS: &[&str] = &["all", "ssh", "sftp"];
const ACTIONS: &[&str] = &[
    "all", "connect", "upload", "download", "delete", "copy", "paste", "share",
];
/// Rows of a coverage preview at most (the count is always whole).
pub const COVERAGE_ROWS: usize = 200;

// ---- grants ----------------------------------------------------------------

fn grant_fields(f: &Fields) -> Result<Value, WebError> {
    Ok(json!({
        "users": f.list("users"),
        "user_groups": f.list("user_groups"),
        "assets": f.list("assets"),
        "nodes": f.list("nodes"),
        "accounts": f.list("accounts"),
        "protocols": f.list("protocols"),
        "actions": f.list("actions"),
        "date_start": f.time("date_start")?,
        "date_expired": f.time("date_expired")?,
        "is_active": f.flag("is_active"),
        "comment": f.text("comment"),
    }))
}

fn words<T: serde::Serialize>(items: &[T]) -> Vec<String> {
    items
        .iter()
        .filter_map(|i| serde_json::to_value(i).ok())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

fn grant_form(grant: Option<&Grant>, names: &Names) -> Markup {
    let empty: &[String] = &[];
    let time = |t: Option<jms_core::model::Timestamp>| t.map(|t| t.to_string()).unwrap_or_default();
    html! {
        @if grant.is_none() { (forms::text("Name", "name", "")) }
        div.columns {
            (forms::pick("Users", "users", &names.users, grant.map_or(empty, |g| &g.users)))
            (forms::pick("User groups", "user_groups", &names.groups, grant.map_or(empty, |g| &g.user_groups)))
            (forms::pick("Assets", "assets", &names.assets, grant.map_or(empty, |g| &g.assets)))
            (forms::pick("Nodes", "nodes", &names.nodes, grant.map_or(empty, |g| &g.nodes)))
            (forms::pick("Accounts", "accounts", &names.accounts, grant.map_or(empty, |g| &g.accounts)))
        }
        (forms::ticks("Protocols", "protocols", PROTOCOLS,
            &grant.map_or(vec!["all".to_string()], |g| words(&g.protocols))))
        (forms::ticks("Actions", "actions", ACTIONS,
            &grant.map_or(vec!["all".to_string()], |g| words(&g.actions))))
        (forms::text_hint("Starts", "date_start", &time(grant.and_then(|g| g.date_start)), "2026-12-04T18:00 (UTC), blank: now"))
        (forms::text_hint("Expires", "date_expired", &time(grant.and_then(|g| g.date_expired)), "2027-01-01T00:00 (UTC), blank: never"))
        (forms::check("Active", "is_active", grant.is_none_or(|g| g.is_active)))
        (forms::text("Comment", "comment", grant.map_or("", |g| &g.comment)))
    }
}

/// The coverage panel: filled by the server for the stored grant, then
/// by `grant.js` as the form changes.
fn coverage_panel(initial: Markup) -> Markup {
    html! {
        section #coverage-panel {
            h2 { "Who it covers" }
            div #coverage aria-live="polite" { (initial) }
        }
        script src=(assets::url("grant.js")) {}
    }
}

/// `GET /web/grants`.
pub async fn grants(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let page = console::list_of::<Grant>(&state, &query).await?;
    let now = Utc::now();
    let rows = page
        .items
        .iter()
        .map(|v| {
            let g = &v.grant;
            let who: Vec<String> = g
                .users
                .iter()
                .cloned()
                .chain(g.user_groups.iter().map(|x| format!("group {x}")))
                .collect();
            let what: Vec<String> = g
                .assets
                .iter()
                .cloned()
                .chain(g.nodes.iter().map(|x| format!("node {x}")))
                .collect();
            let expired = g.date_expired.is_some_and(|t| t.0 <= now);
            html! { tr data-grant=(g.name) {
                td { (forms::link("grants", &g.name)) }
                td { (who.join(", ")) }
                td { (what.join(", ")) }
                td { (g.accounts.join(", ")) }
                td { (words(&g.protocols).join(", ")) " / " (words(&g.actions).join(", ")) }
                td.nowrap { (g.date_expired.map_or("never".to_string(), |t| t.to_string())) }
                td { @if !g.is_active { span.badge.deny { "disabled" } } @else if expired { span.badge.deny { "expired" } } @else { "active" } }
            } }
        })
        .collect();
    let names = Names::of(&console::document(&state).await?);
    let write = may(&me, Method::POST, "/api/v1/grants");
    let body = html! {
        h1 { "Grants" }
        (forms::notice(query.note()))
        (forms::search("/web/grants", &query.q))
        (forms::table("grants", &["Name", "Users", "Assets", "Accounts", "Protocols / actions", "Expires", "State"], rows))
        (layout::pager("/web/grants", &[("q", query.q.clone())], query.page, page.items.len(), page.total))
        @if write {
            h2 { "New grant" }
            (forms::form("grant-form", "/web/grants", grant_form(None, &names), "Create grant"))
            (coverage_panel(html! { p.muted { "Pick users and assets to see who the grant covers." } }))
        }
    };
    Ok(console::page(&me, Nav::Grants, "Grants", body))
}

/// `POST /web/grants`.
pub async fn create_grant(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/grants")?;
    let f = Fields(fields);
    let name = f.text("name");
    let mut value = grant_fields(&f)?;
    value["name"] = json!(name);
    let grant: Grant = console::model("grant", value)?;
    let _ = resources::create::<Grant>(state.api(), actor, Body(grant)).await?;
    Ok(done(
        &format!("/web/grants/{}", url_escape(&name)),
        Note::Created,
    ))
}

/// `GET /web/grants/{name}`.
pub async fn grant(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let view = console::view_of::<Grant>(&state, name).await?;
    let doc = console::document(&state).await?;
    let names = Names::of(&doc);
    let g = &view.grant;
    let base = format!("/web/grants/{}", url_escape(&g.name));
    let write = may(&me, Method::PATCH, "/api/v1/grants/{name}");
    let covered = coverage(doc, g.clone());
    let body = html! {
        p { a href="/web/grants" { "← Grants" } }
        h1 { "Grant " (g.name) }
        (forms::notice(query.note()))
        @if write {
            (forms::form("grant-form", &base, html! {
                input type="hidden" name="name" value=(g.name);
                (grant_form(Some(g), &names))
            }, "Save"))
            (coverage_panel(covered))
            h2 { "Delete" }
            (forms::delete(&format!("{base}/delete"), "delete this grant"))
        } @else {
            dl.facts {
                dt { "Users" } dd { (g.users.join(", ")) }
                dt { "User groups" } dd { (g.user_groups.join(", ")) }
                dt { "Assets" } dd { (g.assets.join(", ")) }
                dt { "Nodes" } dd { (g.nodes.join(", ")) }
                dt { "Accounts" } dd { (g.accounts.join(", ")) }
                dt { "Protocols" } dd { (words(&g.protocols).join(", ")) }
                dt { "Actions" } dd { (words(&g.actions).join(", ")) }
                dt { "Starts" } dd { (g.date_start.map_or("—".to_string(), |t| t.to_string())) }
                dt { "Expires" } dd { (g.date_expired.map_or("never".to_string(), |t| t.to_string())) }
            }
            section #coverage-panel { h2 { "Who it covers" } div #coverage { (covered) } }
        }
    };
    Ok(console::page(&me, Nav::Grants, &g.name, body))
}

/// `POST /web/grants/{name}`.
pub async fn update_grant(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/grants/{name}")?;
    let patch = console::patch(grant_fields(&Fields(fields))?);
    let _ = resources::patch::<Grant>(state.api(), actor, PathParams(name.clone()), patch).await?;
    Ok(done(
        &format!("/web/grants/{}", url_escape(&name)),
        Note::Saved,
    ))
}

/// `POST /web/grants/{name}/delete`.
pub async fn delete_grant(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::DELETE, "/api/v1/grants/{name}")?;
    forms::confirmed(&Fields(fields))?;
    let _ = resources::delete::<Grant>(state.api(), actor, PathParams(name)).await?;
    Ok(done("/web/grants", Note::Deleted))
}

/// `GET /web/grants/coverage?<the grant form's fields>`: an HTML fragment
/// saying whom the draft covers (a read: every role may ask).
pub async fn preview(
    State(state): State<WebState>,
    Query(pairs): Query<Vec<(String, String)>>,
) -> Result<Markup, WebError> {
    let f = Fields(pairs);
    let mut value = match grant_fields(&f) {
        Ok(value) => value,
        Err(e) => return Ok(html! { p.error { (e.message()) } }),
    };
    value["name"] = json!(f.opt("name").unwrap_or_else(|| "draft".to_string()));
    if value["date_start"].is_null() {
        value
            .as_object_mut()
            .expect("an object")
            .remove("date_start");
    }
    let draft: Grant = match serde_json::from_value(value) {
        Ok(draft) => draft,
        Err(e) => return Ok(html! { p.error { "grant: " (e) } }),
    };
    let doc = console::document(&state).await?;
    Ok(coverage(doc, draft))
}

/// Whom `draft` covers in `doc` if it were the only grant: users ×
/// assets with the accounts, protocols and actions, now (or at its start
/// when it has not started yet); jms-core's message when the draft is
/// not valid.
pub fn coverage(mut doc: jms_core::model::PolicyDocument, draft: Grant) -> Markup {
    doc.grants = vec![draft.clone()];
    // Filters cannot widen a grant; dropping them keeps the check about
    // the draft.
    doc.command_filters.clear();
    let users: Vec<String> = doc.users.iter().map(|u| u.username.clone()).collect();
    let policy = match Policy::from_document(doc, "draft", FsPath::new("/nonexistent")) {
        Ok(policy) => policy,
        Err(e) => return html! { p.error #coverage-error { (policy_message(&e)) } },
    };
    let now = Utc::now();
    let state = policy.grant_state(&draft, now);
    let at = match (&state, draft.date_start) {
        (jms_core::engine::GrantState::NotYetStarted(_), Some(start)) => start.0,
        _ => now,
    };
    let mut rows = Vec::new();
    let mut total = 0usize;
    let mut people = 0usize;
    for user in &users {
        let Ok(listing) = policy.list(user, at) else {
            continue;
        };
        if !listing.is_empty() {
            people += 1;
        }
        for granted in listing.iter() {
            total += 1;
            if rows.len() < COVERAGE_ROWS {
                let accounts: Vec<&str> =
                    granted.accounts.iter().map(|a| a.account.name()).collect();
                let protocols: Vec<String> = granted
                    .accounts
                    .iter()
                    .flat_map(|a| a.protocols.iter().map(|p| p.as_str().to_string()))
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect();
                rows.push(html! { tr {
                    td { (user) } td { (granted.asset.name) } td { (accounts.join(", ")) } td { (protocols.join(", ")) }
                } });
            }
        }
    }
    html! {
        p #coverage-summary {
            "Grant " (draft.name) " " (state.describe()) ". "
            @if total == 0 { "It covers no user × asset" @if at != now { " when it starts" } "." }
            @else { "It covers " (people) " user(s) × asset(s): " (total) " pair(s)" @if at != now { " from its start" } "." }
        }
        @if total > 0 {
            (forms::table("coverage-table", &["User", "Asset", "Accounts", "Protocols"], rows))
            @if total > COVERAGE_ROWS { p.muted { "The first " (COVERAGE_ROWS) " pairs are shown." } }
        }
    }
}

// ---- command filters -------------------------------------------------------

fn filter_fields(f: &Fields) -> Result<Value, WebError> {
    let priority = match f.opt("priority") {
        None => 50,
        Some(p) => p
            .parse::<u8>()
            .map_err(|_| WebError::BadRequest(format!("priority: `{p}` is not 0-255")))?,
    };
    Ok(json!({
        "priority": priority,
        "action": f.text("action"),
        "rules": f.list("rules"),
        "users": f.list("users"),
        "user_groups": f.list("user_groups"),
        "assets": f.list("assets"),
        "nodes": f.list("nodes"),
        "accounts": f.list("accounts"),
        "is_active": f.flag("is_active"),
    }))
}

fn filter_form(filter: Option<&CommandFilter>, names: &Names) -> Markup {
    let empty: &[String] = &[];
    let action = filter
        .and_then(|x| serde_json::to_value(x.action).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "deny".to_string());
    html! {
        @if filter.is_none() { (forms::text("Name", "name", "")) }
        (forms::text("Priority (1 runs first)", "priority", &filter.map_or(50, |x| x.priority).to_string()))
        (forms::choice("Action", "action", &["deny", "allow"], &action))
        (forms::lines("Rules (regular expressions, one per line)", "rules", filter.map_or(empty, |x| &x.rules)))
        div.columns {
            (forms::pick("Users", "users", &names.users, filter.map_or(empty, |x| &x.users)))
            (forms::pick("User groups", "user_groups", &names.groups, filter.map_or(empty, |x| &x.user_groups)))
            (forms::pick("Assets", "assets", &names.assets, filter.map_or(empty, |x| &x.assets)))
            (forms::pick("Nodes", "nodes", &names.nodes, filter.map_or(empty, |x| &x.nodes)))
            (forms::pick("Accounts", "accounts", &names.accounts, filter.map_or(empty, |x| &x.accounts)))
        }
        (forms::check("Active", "is_active", filter.is_none_or(|x| x.is_active)))
    }
}

/// `GET /web/filters`.
pub async fn filters(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let page = console::list_of::<CommandFilter>(&state, &query).await?;
    let names = Names::of(&console::document(&state).await?);
    let rows = page
        .items
        .iter()
        .map(|v| {
            let x = &v.filter;
            html! { tr data-filter=(x.name) {
                td { (forms::link("filters", &x.name)) }
                td { (x.priority) }
                td { (serde_json::to_value(x.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()) }
                td.mono { (x.rules.join(" | ")) }
                td { (x.users.iter().chain(&x.user_groups).cloned().collect::<Vec<_>>().join(", ")) }
                td { (x.is_active) }
            } }
        })
        .collect();
    let body = html! {
        h1 { "Command filters" }
        (forms::notice(query.note()))
        (forms::search("/web/filters", &query.q))
        (forms::table("filters", &["Name", "Priority", "Action", "Rules", "Users and groups", "Active"], rows))
        (layout::pager("/web/filters", &[("q", query.q.clone())], query.page, page.items.len(), page.total))
        @if may(&me, Method::POST, "/api/v1/filters") {
            h2 { "New filter" }
            (forms::form("new-filter", "/web/filters", filter_form(None, &names), "Create filter"))
        }
    };
    Ok(console::page(&me, Nav::Filters, "Command filters", body))
}

/// `GET /web/filters/{name}`.
pub async fn filter(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let view = console::view_of::<CommandFilter>(&state, name).await?;
    let names = Names::of(&console::document(&state).await?);
    let x = &view.filter;
    let base = format!("/web/filters/{}", url_escape(&x.name));
    let body = html! {
        p { a href="/web/filters" { "← Command filters" } }
        h1 { "Command filter " (x.name) }
        (forms::notice(query.note()))
        @if may(&me, Method::PATCH, "/api/v1/filters/{name}") {
            (forms::form("edit-filter", &base, filter_form(Some(x), &names), "Save"))
            (forms::delete(&format!("{base}/delete"), "delete this filter"))
        } @else {
            dl.facts {
                dt { "Rules" } dd.mono { (x.rules.join("\n")) }
                dt { "Users" } dd { (x.users.join(", ")) }
                dt { "Assets" } dd { (x.assets.join(", ")) }
                dt { "Accounts" } dd { (x.accounts.join(", ")) }
            }
        }
    };
    Ok(console::page(&me, Nav::Filters, &x.name, body))
}

/// `POST /web/filters`.
pub async fn create_filter(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/filters")?;
    let f = Fields(fields);
    let mut value = filter_fields(&f)?;
    value["name"] = json!(f.text("name"));
    let filter: CommandFilter = console::model("command filter", value)?;
    let _ = resources::create::<CommandFilter>(state.api(), actor, Body(filter)).await?;
    Ok(done("/web/filters", Note::Created))
}

/// `POST /web/filters/{name}`.
pub async fn update_filter(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/filters/{name}")?;
    let patch = console::patch(filter_fields(&Fields(fields))?);
    let _ = resources::patch::<CommandFilter>(state.api(), actor, PathParams(name.clone()), patch)
        .await?;
    Ok(done(
        &format!("/web/filters/{}", url_escape(&name)),
        Note::Saved,
    ))
}

/// `POST /web/filters/{name}/delete`.
pub async fn delete_filter(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::DELETE, "/api/v1/filters/{name}")?;
    forms::confirmed(&Fields(fields))?;
    let _ = resources::delete::<CommandFilter>(state.api(), actor, PathParams(name)).await?;
    Ok(done("/web/filters", Note::Deleted))
}
