//! Console pages for the node tree (create, rename or move, delete; each
//! node with the assets under it) and the assets with their accounts
//! (secrets write-only: a page says whether one is set, never what it is).
//! Every write is the API handler's (see [`super::console`]).

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use axum::{Extension, Form};
use jms_core::model::{Account, Asset};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::auth::WebAdmin;
use super::console::{self, actor, done, may, Names, Note, PageQuery};
use super::forms::{self, Fields};
use super::layout::{self, url_escape, Nav};
use super::{WebError, WebState};
use crate::api::extract::{Body, PathParams};
use crate::api::nodes_accounts::{self as na, NewNode};
use crate::api::resources;
use crate::api::views::AssetView;

// ---- nodes -----------------------------------------------------------------

/// How many assets sit in `node` or under it.
fn assets_under(doc: &jms_core::model::PolicyDocument, node: &str) -> usize {
    let prefix = format!("{node}/");
    doc.assets
        .iter()
        .filter(|a| a.nodes.iter().any(|n| n == node || n.starts_with(&prefix)))
        .count()
}

/// `GET /web/nodes`: the tree, parents before children.
pub async fn nodes(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let (rows, doc) = console::run(&state, |services| {
        let every = crate::store::ListQuery {
            limit: u32::MAX,
            offset: 0,
            q: None,
        };
        Ok((
            services.policy.read()?.nodes(&every)?.items,
            services.policy.document(false)?,
        ))
    })
    .await?;
    // The tree: every declared node, and the parents they imply.
    let mut tree: std::collections::BTreeMap<String, Option<i64>> =
        std::collections::BTreeMap::new();
    for node in &rows {
        let mut at = 0;
        while let Some(i) = node.path[at + 1..].find('/') {
            at += i + 1;
            tree.entry(node.path[..at].to_string()).or_insert(None);
        }
        tree.insert(node.path.clone(), Some(node.id));
    }
    let write = may(&me, Method::PATCH, "/api/v1/nodes/{id}");
    let rows = tree
        .iter()
        .map(|(path, id)| {
            let depth = path.matches('/').count().saturating_sub(1);
            let leaf = path.rsplit('/').next().unwrap_or_default();
            html! { tr data-node=(path) {
                td { span.tree style=(format!("padding-left:{}em", depth * 2)) { (leaf) } }
                td.mono { (path) @if id.is_none() { span.muted { " (implied)" } } }
                td.assets { (assets_under(&doc, path)) }
                @if write {
                    @if let Some(id) = id {
                        td {
                            form.inline method="post" action=(format!("/web/nodes/{id}")) {
                                input type="text" name="path" value=(path) aria-label="new path";
                                button type="submit" { "Rename / move" }
                            }
                        }
                        td { (forms::delete(&format!("/web/nodes/{id}/delete"), "delete")) }
                    } @else {
                        td {} td {}
                    }
                }
            } }
        })
        .collect();
    let headings: &[&str] = if write {
        &["Node", "Path", "Assets", "Rename or move", ""]
    } else {
        &["Node", "Path", "Assets"]
    };
    let body = html! {
        h1 { "Nodes" }
        (forms::notice(query.note()))
        p.muted { "Assets counts every asset in the node or below it. Renaming or moving a node carries the nodes under it; the assets, grants and filters that name them follow." }
        (forms::table("nodes", headings, rows))
        @if may(&me, Method::POST, "/api/v1/nodes") {
            h2 { "New node" }
            (forms::form("new-node", "/web/nodes",
                forms::text_hint("Path", "path", "", "/Default/prod/web (parents are implied)"), "Create node"))
        }
    };
    Ok(console::page(&me, Nav::Nodes, "Nodes", body))
}

/// `POST /web/nodes`.
pub async fn create_node(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/nodes")?;
    let path = Fields(fields).text("path");
    let _ = na::create_node(state.api(), actor, Body(NewNode { path })).await?;
    Ok(done("/web/nodes", Note::Created))
}

/// `POST /web/nodes/{id}`: rename or move.
pub async fn update_node(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(id): Path<i64>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/nodes/{id}")?;
    let path = Fields(fields).text("path");
    let _ = na::patch_node(state.api(), actor, PathParams(id), Body(NewNode { path })).await?;
    Ok(done("/web/nodes", Note::Saved))
}

/// `POST /web/nodes/{id}/delete`.
pub async fn delete_node(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(id): Path<i64>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::DELETE, "/api/v1/nodes/{id}")?;
    forms::confirmed(&Fields(fields))?;
    let _ = na::delete_node(state.api(), actor, PathParams(id)).await?;
    Ok(done("/web/nodes", Note::Deleted))
}

// ---- assets ----------------------------------------------------------------

/// `ssh:2222 sftp` (spaces, commas or lines between): the protocols an
/// asset offers, 22 when no port is given.
fn protocols(text: &str) -> Result<Value, WebError> {
    let mut out = Vec::new();
    for item in text.split([',', ' ', '\n', '\r']).filter(|s| !s.is_empty()) {
        let (name, port) = match item.split_once(':') {
            Some((name, port)) => (
                name,
                port.parse::<u16>().map_err(|_| {
                    WebError::BadRequest(format!("protocols: `{item}`: the port is not a number"))
                })?,
            ),
            None => (item, 22),
        };
        out.push(json!({"name": name.to_ascii_lowercase(), "port": port}));
    }
    Ok(Value::Array(out))
}

fn protocols_text(view: &AssetView) -> String {
    view.protocols
        .iter()
        .map(|p| format!("{}:{}", p.name.as_str(), p.port))
        .collect::<Vec<_>>()
        .join(" ")
}

fn asset_fields(f: &Fields) -> Result<Value, WebError> {
    Ok(json!({
        "address": f.text("address"),
        "protocols": protocols(&f.text("protocols"))?,
        "nodes": f.list("nodes"),
        "host_keys": f.list("host_keys"),
        "is_active": f.flag("is_active"),
    }))
}

fn asset_form(view: Option<&AssetView>, names: &Names) -> Markup {
    html! {
        @if view.is_none() { (forms::text("Name", "name", "")) }
        (forms::text("Address", "address", view.map_or("", |v| &v.address)))
        (forms::text_hint("Protocols", "protocols", &view.map_or("ssh:22".to_string(), protocols_text), "ssh:22 sftp:22"))
        (forms::pick("Nodes", "nodes", &names.nodes, view.map_or(&[][..], |v| &v.nodes)))
        (forms::lines("Host keys (known_hosts lines)", "host_keys", view.map_or(&[][..], |v| &v.host_keys)))
        (forms::check("Active", "is_active", view.is_none_or(|v| v.is_active)))
    }
}

/// `GET /web/inventory`.
pub async fn assets(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let page = console::list_of::<Asset>(&state, &query).await?;
    let names = Names::of(&console::document(&state).await?);
    let rows = page
        .items
        .iter()
        .map(|v| {
            html! { tr data-asset=(v.name) {
                td { (forms::link("inventory", &v.name)) }
                td.mono { (v.address) }
                td { (protocols_text(v)) }
                td { (v.nodes.join(", ")) }
                td { (v.accounts.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")) }
                td { @if v.is_active { "yes" } @else { span.badge.deny { "inactive" } } }
            } }
        })
        .collect();
    let body = html! {
        h1 { "Assets" }
        (forms::notice(query.note()))
        (forms::search("/web/inventory", &query.q))
        (forms::table("assets", &["Name", "Address", "Protocols", "Nodes", "Accounts", "Active"], rows))
        (layout::pager("/web/inventory", &[("q", query.q.clone())], query.page, page.items.len(), page.total))
        @if may(&me, Method::POST, "/api/v1/assets") {
            h2 { "New asset" }
            (forms::form("new-asset", "/web/inventory", asset_form(None, &names), "Create asset"))
        }
    };
    Ok(console::page(&me, Nav::Assets, "Assets", body))
}

/// `POST /web/inventory`.
pub async fn create_asset(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/assets")?;
    let f = Fields(fields);
    let mut value = asset_fields(&f)?;
    let name = f.text("name");
    value["name"] = json!(name);
    let asset: Asset = console::model("asset", value)?;
    let _ = resources::create::<Asset>(state.api(), actor, Body(asset)).await?;
    Ok(done(
        &format!("/web/inventory/{}", url_escape(&name)),
        Note::Created,
    ))
}

const SECRET_TYPES: &[&str] = &["password", "ssh_key"];

fn account_fields(f: &Fields) -> Value {
    let mut value = json!({
        "username": f.text("username"),
        "secret_type": f.text("secret_type"),
        "privileged": f.flag("privileged"),
    });
    // Write-only: a blank field keeps the stored secret.
    if let Some(secret) = f.opt("secret") {
        value["secret"] = json!(secret);
    }
    value
}

/// `GET /web/inventory/{asset}`: the asset, its accounts, their forms.
pub async fn asset(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let view = console::view_of::<Asset>(&state, name).await?;
    let names = Names::of(&console::document(&state).await?);
    let base = format!("/web/inventory/{}", url_escape(&view.name));
    let write = may(&me, Method::PATCH, "/api/v1/assets/{asset}");
    let rows = view
        .accounts
        .iter()
        .map(|a| {
            let at = format!("{base}/accounts/{}", url_escape(&a.name));
            html! { tr data-account=(a.name) {
                td { (a.name) }
                @if write {
                    td { form.inline id=(format!("account-{}", a.name)) method="post" action=(at) {
                        input type="text" name="username" value=(a.username) aria-label="username";
                        select name="secret_type" aria-label="secret type" {
                            @for t in SECRET_TYPES {
                                option value=(t) selected[serde_json::to_value(a.secret_type).ok() == Some(json!(t))] { (t) }
                            }
                        }
                        input type="password" name="secret" autocomplete="new-password" placeholder=(if a.has_secret { "set (blank keeps it)" } else { "not set" }) aria-label="new secret";
                        label.check { input type="checkbox" name="privileged" checked[a.privileged]; " privileged" }
                        button type="submit" { "Save" }
                    } }
                    td { (forms::delete(&format!("{at}/delete"), "delete")) }
                } @else {
                    td { (a.username) " · " (serde_json::to_value(a.secret_type).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())
                        " · secret " @if a.has_secret { "set" } @else { "not set" } @if a.privileged { " · privileged" } }
                }
            } }
        })
        .collect();
    let body = html! {
        p { a href="/web/inventory" { "← Assets" } }
        h1 { "Asset " (view.name) }
        (forms::notice(query.note()))
        @if write {
            (forms::form("edit-asset", &base, asset_form(Some(&view), &names), "Save"))
        } @else {
            dl.facts {
                dt { "Address" } dd { (view.address) }
                dt { "Protocols" } dd { (protocols_text(&view)) }
                dt { "Nodes" } dd { (view.nodes.join(", ")) }
                dt { "Active" } dd { (view.is_active) }
            }
        }
        h2 { "Accounts" }
        (forms::table("accounts", if write { &["Account", "Username, type, secret", ""] } else { &["Account", "Details"] }, rows))
        @if may(&me, Method::POST, "/api/v1/assets/{asset}/accounts") {
            h3 { "New account" }
            (forms::form("new-account", &format!("{base}/accounts"), html! {
                (forms::text("Name", "name", ""))
                (forms::text("Username on the asset", "username", ""))
                (forms::choice("Secret type", "secret_type", SECRET_TYPES, "password"))
                (forms::secret("Secret", "secret", "write-only: never shown again"))
                (forms::check("Privileged", "privileged", false))
            }, "Add account"))
        }
        @if write {
            h2 { "Delete" }
            (forms::delete(&format!("{base}/delete"), "delete this asset and its accounts"))
        }
    };
    Ok(console::page(&me, Nav::Assets, &view.name, body))
}

/// `POST /web/inventory/{asset}`.
pub async fn update_asset(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/assets/{asset}")?;
    let patch = console::patch(asset_fields(&Fields(fields))?);
    let _ = resources::patch::<Asset>(state.api(), actor, PathParams(name.clone()), patch).await?;
    Ok(done(
        &format!("/web/inventory/{}", url_escape(&name)),
        Note::Saved,
    ))
}

/// `POST /web/inventory/{asset}/delete`.
pub async fn delete_asset(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::DELETE, "/api/v1/assets/{asset}")?;
    forms::confirmed(&Fields(fields))?;
    let _ = resources::delete::<Asset>(state.api(), actor, PathParams(name)).await?;
    Ok(done("/web/inventory", Note::Deleted))
}

/// `POST /web/inventory/{asset}/accounts`.
pub async fn create_account(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(asset): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/assets/{asset}/accounts")?;
    let f = Fields(fields);
    let mut value = account_fields(&f);
    value["name"] = json!(f.text("name"));
    let account: Account = console::model("account", value)?;
    let _ =
        na::create_account(state.api(), actor, PathParams(asset.clone()), Body(account)).await?;
    Ok(done(
        &format!("/web/inventory/{}", url_escape(&asset)),
        Note::Created,
    ))
}

/// `POST /web/inventory/{asset}/accounts/{account}`.
pub async fn update_account(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path((asset, account)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(
        &me,
        Method::PATCH,
        "/api/v1/assets/{asset}/accounts/{account}",
    )?;
    let patch = console::patch(account_fields(&Fields(fields)));
    let _ = na::patch_account(
        state.api(),
        actor,
        PathParams((asset.clone(), account)),
        patch,
    )
    .await?;
    Ok(done(
        &format!("/web/inventory/{}", url_escape(&asset)),
        Note::Saved,
    ))
}

/// `POST /web/inventory/{asset}/accounts/{account}/delete`.
pub async fn delete_account(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path((asset, account)): Path<(String, String)>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(
        &me,
        Method::DELETE,
        "/api/v1/assets/{asset}/accounts/{account}",
    )?;
    forms::confirmed(&Fields(fields))?;
    let _ = na::delete_account(state.api(), actor, PathParams((asset.clone(), account))).await?;
    Ok(done(
        &format!("/web/inventory/{}", url_escape(&asset)),
        Note::Deleted,
    ))
}
