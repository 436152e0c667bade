//! Console pages for users and user groups: list and search, create (a
//! user with an email and no password is mailed a set-password link, as
//! `POST /api/v1/users` does), edit, delete, mail a new link. Every write
//! is the API handler's (see [`super::console`]).

use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use jms_core::model::{User, UserGroup};
use maud::{html, Markup};
use serde_json::{json, Value};

use super::auth::WebAdmin;
use super::console::{self, actor, done, may, Names, Note, PageQuery};
use super::forms::{self, Fields};
use super::layout::{self, url_escape, Nav};
use super::{WebError, WebState};
use crate::api::extract::{Body, PathParams};
use crate::api::resources;
use crate::api::views::{GroupView, UserView};
use crate::selfservice::api as selfservice;

// ---- users -----------------------------------------------------------------

/// The fields a user form edits, in the policy-file form.
fn user_fields(f: &Fields) -> Result<Value, WebError> {
    Ok(json!({
        "name": f.text("name"),
        "email": f.opt("email"),
        "is_active": f.flag("is_active"),
        "date_expired": f.time("date_expired")?,
        "groups": f.list("groups"),
        "public_keys": f.list("public_keys"),
    }))
}

fn user_form(user: Option<&UserView>, names: &Names) -> Markup {
    let u = user.map(|v| &v.user);
    let expired = u
        .and_then(|u| u.date_expired)
        .map(|t| t.to_string())
        .unwrap_or_default();
    html! {
        @if u.is_none() { (forms::text("Username", "username", "")) }
        (forms::text("Full name", "name", u.map_or("", |u| &u.name)))
        (forms::text_hint("Email", "email", u.and_then(|u| u.email.as_deref()).unwrap_or(""),
            "a set-password link is mailed here"))
        (forms::text_hint("Expires", "date_expired", &expired, "2027-12-31T00:00 (UTC), blank: never"))
        (forms::pick("Groups", "groups", &names.groups, u.map_or(&[][..], |u| &u.groups)))
        (forms::lines("SSH public keys (one per line)", "public_keys", u.map_or(&[][..], |u| &u.public_keys)))
        (forms::check("Active", "is_active", u.is_none_or(|u| u.is_active)))
    }
}

/// `GET /web/users`.
pub async fn users(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let page = console::list_of::<User>(&state, &query).await?;
    let names = Names::of(&console::document(&state).await?);
    let rows = page
        .items
        .iter()
        .map(|v| {
            html! { tr data-user=(v.user.username) {
                td { (forms::link("users", &v.user.username)) }
                td { (v.user.name) }
                td { (v.user.email.as_deref().unwrap_or("—")) }
                td { (v.user.groups.join(", ")) }
                td { @if v.user.is_active { "yes" } @else { span.badge.deny { "disabled" } } }
                td { @if v.has_password { "set" } @else { "—" } }
                td { (v.uid) }
            } }
        })
        .collect();
    let body = html! {
        h1 { "Users" }
        (forms::notice(query.note()))
        (forms::search("/web/users", &query.q))
        (forms::table("users", &["Username", "Name", "Email", "Groups", "Active", "Password", "uid"], rows))
        (layout::pager("/web/users", &[("q", query.q.clone())], query.page, page.items.len(), page.total))
        @if may(&me, Method::POST, "/api/v1/users") {
            h2 { "New user" }
            (forms::form("new-user", "/web/users", user_form(None, &names), "Create user"))
        }
    };
    Ok(console::page(&me, Nav::Users, "Users", body))
}

/// `POST /web/users`: `POST /api/v1/users`.
pub async fn create_user(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let f = Fields(fields);
    let actor = actor(&me, Method::POST, "/api/v1/users")?;
    let mut value = user_fields(&f)?;
    value["username"] = json!(f.text("username"));
    let user: User = console::model("user", value)?;
    let username = user.username.clone();
    let answer = selfservice::create_user(state.api(), actor, Body(user)).await?;
    let bytes = axum::body::to_bytes(answer.into_body(), 1 << 20)
        .await
        .map_err(|e| WebError::Internal(format!("reading the API's answer: {e}")))?;
    let created: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let link = &created["password_link"];
    let note = if link["sent"] == json!(true) {
        format!(
            "Created {username}; a set-password link was mailed to {}.",
            link["to"].as_str().unwrap_or("her")
        )
    } else if let Some(error) = link["error"].as_str() {
        format!("Created {username}, but the set-password link was not mailed: {error}")
    } else {
        format!("Created {username}.")
    };
    Ok(user_page(&state, &me, username, Some(&note))
        .await?
        .into_response())
}

async fn user_page(
    state: &WebState,
    me: &WebAdmin,
    username: String,
    note: Option<&str>,
) -> Result<Markup, WebError> {
    let view = console::view_of::<User>(state, username).await?;
    let names = Names::of(&console::document(state).await?);
    let name = &view.user.username;
    let base = format!("/web/users/{}", url_escape(name));
    let body = html! {
        p { a href="/web/users" { "← Users" } }
        h1 { "User " (name) }
        (forms::notice(note))
        dl.facts {
            dt { "uid" } dd { (view.uid) }
            dt { "Password" } dd #has-password { @if view.has_password { "set" } @else { "not set" } }
            dt { "TOTP" } dd { @if view.has_totp { "enrolled" } @else { "not enrolled" } }
            dt { "Created" } dd { (layout::time(&view.created_at)) }
        }
        @if may(me, Method::PATCH, "/api/v1/users/{username}") {
            (forms::form("edit-user", &base, user_form(Some(&view), &names), "Save"))
            div.actions {
                form.inline method="post" action=(format!("{base}/password-link")) {
                    button #send-link type="submit" { "Mail a set-password link" }
                }
                @if view.has_totp {
                    form.inline method="post" action=(format!("{base}/reset-mfa")) {
                        button #reset-mfa type="submit" { "Reset TOTP (she enrolls again)" }
                    }
                }
                @if may(me, Method::POST, "/api/v1/users/{username}/unlock") {
                    form.inline method="post" action=(format!("{base}/unlock")) {
                        button #unlock type="submit" { "Lift a lockout" }
                    }
                }
            }
            (forms::delete(&format!("{base}/delete"), "delete this user (her uid is never reused)"))
        } @else {
            (readonly_user(&view))
        }
    };
    Ok(console::page(me, Nav::Users, name, body))
}

fn readonly_user(view: &UserView) -> Markup {
    let u = &view.user;
    html! {
        dl.facts {
            dt { "Name" } dd { (u.name) }
            dt { "Email" } dd { (u.email.as_deref().unwrap_or("—")) }
            dt { "Groups" } dd { (u.groups.join(", ")) }
            dt { "Active" } dd { (u.is_active) }
            dt { "Expires" } dd { (u.date_expired.map_or("never".to_string(), |t| t.to_string())) }
            dt { "Public keys" } dd { (u.public_keys.len()) }
        }
    }
}

/// `GET /web/users/{username}`.
pub async fn user(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(username): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    user_page(&state, &me, username, query.note()).await
}

/// `POST /web/users/{username}`: `PATCH /api/v1/users/{username}`.
pub async fn update_user(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(username): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/users/{username}")?;
    let patch = console::patch(user_fields(&Fields(fields))?);
    let _ =
        resources::patch::<User>(state.api(), actor, PathParams(username.clone()), patch).await?;
    Ok(done(
        &format!("/web/users/{}", url_escape(&username)),
        Note::Saved,
    ))
}

/// `POST /web/users/{username}/delete`.
pub async fn delete_user(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(username): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::DELETE, "/api/v1/users/{username}")?;
    forms::confirmed(&Fields(fields))?;
    let _ = resources::delete::<User>(state.api(), actor, PathParams(username)).await?;
    Ok(done("/web/users", Note::Deleted))
}

/// `POST /web/users/{username}/password-link`.
pub async fn password_link(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(username): Path<String>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/users/{username}/password-link")?;
    let _ =
        selfservice::send_password_link(state.api(), actor, PathParams(username.clone())).await?;
    Ok(done(
        &format!("/web/users/{}", url_escape(&username)),
        Note::LinkSent,
    ))
}

/// `POST /web/users/{username}/reset-mfa`: `PATCH` her `totp_secret`
/// away, as `jmsctl user reset-mfa` does.
pub async fn reset_mfa(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(username): Path<String>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/users/{username}")?;
    let patch = console::patch(json!({"totp_secret": null}));
    let _ =
        resources::patch::<User>(state.api(), actor, PathParams(username.clone()), patch).await?;
    Ok(done(
        &format!("/web/users/{}", url_escape(&username)),
        Note::Saved,
    ))
}

/// `POST /web/users/{username}/unlock`: every bastion forgets her failed
/// logins at its next control poll.
pub async fn unlock(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(username): Path<String>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/users/{username}/unlock")?;
    let _ = crate::api::live::unlock(state.api(), actor, PathParams(username.clone())).await?;
    Ok(done(
        &format!("/web/users/{}", url_escape(&username)),
        Note::Unlocked,
    ))
}

// ---- groups ----------------------------------------------------------------

/// `GET /web/groups`.
pub async fn groups(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let page = console::list_of::<UserGroup>(&state, &query).await?;
    let write = may(&me, Method::PATCH, "/api/v1/groups/{name}");
    let rows = page.items.iter().map(|v| group_row(v, write)).collect();
    let body = html! {
        h1 { "User groups" }
        (forms::notice(query.note()))
        (forms::search("/web/groups", &query.q))
        (forms::table("groups", &["Name", "gid", "Comment", "Members", ""], rows))
        (layout::pager("/web/groups", &[("q", query.q.clone())], query.page, page.items.len(), page.total))
        @if may(&me, Method::POST, "/api/v1/groups") {
            h2 { "New group" }
            (forms::form("new-group", "/web/groups", html! {
                (forms::text("Name", "name", ""))
                (forms::text("Comment", "comment", ""))
            }, "Create group"))
        }
    };
    Ok(console::page(&me, Nav::Groups, "User groups", body))
}

fn group_row(v: &GroupView, write: bool) -> Markup {
    let base = format!("/web/groups/{}", url_escape(&v.group.name));
    html! { tr data-group=(v.group.name) {
        td { (v.group.name) }
        td { (v.gid) }
        td {
            @if write {
                form.inline method="post" action=(base) {
                    input type="text" name="comment" value=(v.group.comment) aria-label="comment";
                    button type="submit" { "Save" }
                }
            } @else { (v.group.comment) }
        }
        td { (v.members.join(", ")) }
        td { @if write { (forms::delete(&format!("{base}/delete"), "delete (members leave it)")) } }
    } }
}

/// `POST /web/groups`.
pub async fn create_group(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/groups")?;
    let f = Fields(fields);
    let group: UserGroup = console::model(
        "user group",
        json!({"name": f.text("name"), "comment": f.text("comment")}),
    )?;
    let _ = resources::create::<UserGroup>(state.api(), actor, Body(group)).await?;
    Ok(done("/web/groups", Note::Created))
}

/// `POST /web/groups/{name}`.
pub async fn update_group(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/groups/{name}")?;
    let patch = console::patch(json!({"comment": Fields(fields).text("comment")}));
    let _ = resources::patch::<UserGroup>(state.api(), actor, PathParams(name), patch).await?;
    Ok(done("/web/groups", Note::Saved))
}

/// `POST /web/groups/{name}/delete`.
pub async fn delete_group(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::DELETE, "/api/v1/groups/{name}")?;
    forms::confirmed(&Fields(fields))?;
    let _ = resources::delete::<UserGroup>(state.api(), actor, PathParams(name)).await?;
    Ok(done("/web/groups", Note::Deleted))
}
