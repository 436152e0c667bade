//! The live page: an online session as it happens, in the vendored
//! asciinema player (its eventsource driver reads the same Server-Sent
//! Events as `GET /api/v1/sessions/{id}/live`), with its text beside it
//! and a "Terminate" form (a same-site POST: see the module doc of
//! `web`). Terminating orders the bastion to end the session; the user
//! sees why, and the order is in the operation log under this admin.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::assets;
use super::auth::WebAdmin;
use super::layout::url_escape;
use super::layout::{self, Nav, Page};
use super::sessions::{find_session, player_head};
use super::{blocking, WebError, WebState};
use crate::api::live::{watch_response, WatchError};
use crate::store::Scope;

/// `GET /web/sessions/{id}/live`.
pub async fn page(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    let s = find_session(&state, id).await?;
    let base = format!("/web/sessions/{}", url_escape(&s.id));
    let body = html! {
        (player_head("Live", &s, &base))
        @if s.online && me.role >= Scope::Operator {
            form.actions #terminate-form method="post" action=(format!("{base}/kill")) {
                label { "Reason " input #terminate-reason type="text" name="reason" maxlength="500" placeholder="shown to the user"; }
                " " button.danger #terminate type="submit" { "Terminate" }
            }
        }
        @if s.online {
            p.muted #live-status { "Connecting…" }
            link rel="stylesheet" href=(assets::url("asciinema-player.css"));
            div #live-player data-src=(format!("{base}/live/events")) {}
            details {
                summary { "Text" }
                pre #live-text {}
            }
            script src=(assets::url("asciinema-player.min.js")) {}
            script src=(assets::url("live.js")) {}
        } @else {
            p.error #not-live {
                "This session is over. " a href=(base) { "Details" }
            }
        }
    };
    Ok(layout::page(&Page {
        title: "Live session",
        admin: Some(&me.username),
        nav: Some(Nav::Sessions),
        body,
    }))
}

/// `GET /web/sessions/{id}/live/events`: the session's Server-Sent Events.
pub async fn events(
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    watch_response(state.services.live.clone(), id)
        .await
        .map_err(|e| match e {
            WatchError::Admin(e) => WebError::from(e),
            WatchError::Worker(m) => WebError::Internal(m),
        })
}

#[derive(Debug, Deserialize)]
pub struct KillForm {
    #[serde(default)]
    reason: String,
}

/// `POST /web/sessions/{id}/kill`: terminates it, back to the live page.
pub async fn kill(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(id): Path<String>,
    Form(form): Form<KillForm>,
) -> Result<Response, WebError> {
    if me.role < Scope::Operator {
        return Err(WebError::Forbidden(format!(
            "terminating a session needs the operator role ({} has {})",
            me.username, me.role
        )));
    }
    let reason: String = form.reason.trim().chars().take(500).collect();
    let actor = format!("web admin {}", me.username);
    let session = id.clone();
    blocking(&state, move |services| {
        services.live.kill_session(&actor, &session, &reason)
    })
    .await?;
    Ok(Redirect::to(&format!("/web/sessions/{}/live", url_escape(&id))).into_response())
}
