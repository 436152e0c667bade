//! The fleet page: every enrolled bastion with its status (online, silent
//! past the alarm threshold, revoked), address, last sync, the policy
//! version it holds, open sessions, spool backlog and jms-agentd version
//! (`crate::fleet`). A web admin with the `admin` role may revoke one (a
//! same-site POST with a confirmation box ticked); other roles see no
//! such control and get 403 from the POST.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::WebAdmin;
use super::layout::url_escape;
use super::layout::{self, Nav, Page};
use super::{blocking, WebError, WebState};
use crate::fleet::{BastionView, Status};
use crate::store::Scope;

fn badge(status: Status) -> Markup {
    html! {
        @match status {
            Status::Online => span.badge.online { "online" },
            Status::Silent => span.badge.deny { "silent" },
            Status::Revoked => span.badge { "revoked" },
        }
    }
}

fn or_dash<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "—".to_string(), ToString::to_string)
}

/// `GET /web/bastions`.
pub async fn list(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
) -> Result<Markup, WebError> {
    let (bastions, after) = blocking(&state, |services| {
        Ok((
            services.fleet.fleet()?,
            services.fleet.bastion_silent_after(),
        ))
    })
    .await?;
    let revoke = me.role >= Scope::Admin;
    let body = html! {
        h1 { "Bastions" }
        p.muted { "Silent: no sync request for more than " (layout::duration(after.as_secs() as i64)) " (the server logs the bastion_silent alarm)." }
        table.rows #bastions {
            thead { tr {
                th { "Name" } th { "Status" } th { "Address" } th { "Last seen" } th { "Policy" }
                th { "Sessions" } th { "Spool backlog" } th { "jms-agentd" }
                @if revoke { th { "Revoke" } }
            } }
            tbody {
                @for b in &bastions {
                    (row(b, revoke))
                }
            }
        }
        @if bastions.is_empty() {
            p.muted #no-bastions { "No bastion is enrolled (jmsctl bastion token create)." }
        }
    };
    Ok(layout::page(&Page {
        title: "Bastions",
        admin: Some(&me.username),
        nav: Some(Nav::Bastions),
        body,
    }))
}

fn row(b: &BastionView, revoke: bool) -> Markup {
    let policy = match (b.policy_version, b.versions_behind) {
        (Some(held), Some(0)) => format!("{held} (current)"),
        (Some(held), Some(behind)) => format!("{held} ({behind} behind)"),
        _ => "—".to_string(),
    };
    html! {
        tr data-bastion=(b.name) {
            td { (layout::shown(&b.name)) }
            td { (badge(b.status)) }
            td.mono { (or_dash(&b.address)) }
            td.nowrap {
                @match (&b.last_seen_at, b.silent_for_secs) {
                    (Some(at), Some(secs)) => { (layout::time(at)) span.muted { " (" (layout::duration(secs)) " ago)" } },
                    _ => "never",
                }
            }
            td { (policy) }
            td { (or_dash(&b.open_sessions)) }
            td { (b.spool_backlog.map_or_else(|| "—".to_string(), layout::bytes)) }
            td.mono { (or_dash(&b.agent_version)) }
            @if revoke {
                td {
                    @if b.status != Status::Revoked {
                        form.revoke method="post" action=(format!("/web/bastions/{}/revoke", url_escape(&b.name))) {
                            label.check { input type="checkbox" name="confirm" value="yes" required; " its key is refused from now on" }
                            " " button.danger type="submit" { "Revoke" }
                        }
                    } @else if let Some(at) = &b.revoked_at {
                        span.muted { (layout::time(at)) }
                    }
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    #[serde(default)]
    confirm: String,
}

/// `POST /web/bastions/{name}/revoke` (admin role).
pub async fn revoke(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(name): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, WebError> {
    if me.role < Scope::Admin {
        return Err(WebError::Forbidden(format!(
            "revoking a bastion needs the admin role ({} has {})",
            me.username, me.role
        )));
    }
    if form.confirm != "yes" {
        return Err(WebError::BadRequest(
            "tick the box to confirm the revocation".to_string(),
        ));
    }
    let actor = format!("web admin {}", me.username);
    blocking(&state, move |services| {
        services.fleet.revoke_bastion(&actor, &name)
    })
    .await?;
    Ok(Redirect::to("/web/bastions").into_response())
}
