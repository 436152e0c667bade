//! Command search across sessions (filters: user, asset, session, text,
//! filter decision, time range; 50 a page, newest first). Each row links to
//! the replay of its session at the moment the command was typed
//! (`/web/sessions/{id}/replay#t=SECONDS`). Rows come from the store's
//! audit query behind `/api/v1/commands`, shown through the API's view.

use axum::extract::{Query, State};
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::WebAdmin;
use super::layout::url_escape;
use super::layout::{self, Nav, Page, PAGE_SIZE};
use super::sessions::{given, offset_text, replay_link, time_filter};
use super::{blocking, WebError, WebState};
use crate::api::audit::CommandView;
use crate::store::CommandQuery;

/// The search's filters, as the form sends them (empty = any).
#[derive(Debug, Default, Deserialize)]
pub struct CommandFilters {
    #[serde(default)]
    user: String,
    #[serde(default)]
    asset: String,
    #[serde(default)]
    session: String,
    #[serde(default)]
    q: String,
    /// `allow`, `deny` or empty.
    #[serde(default)]
    decision: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    page: Option<u64>,
}

impl CommandFilters {
    fn query(&self) -> Result<CommandQuery, WebError> {
        let decision = match self.decision.as_str() {
            "" => None,
            "allow" | "deny" => Some(self.decision.clone()),
            other => {
                return Err(WebError::BadRequest(format!(
                    "decision `{other}`: expected allow or deny"
                )))
            }
        };
        let page = self.page.unwrap_or(0);
        Ok(CommandQuery {
            user: given(&self.user),
            asset: given(&self.asset),
            session: given(&self.session),
            // The text is searched as typed (spaces included).
            q: (!self.q.is_empty()).then(|| self.q.clone()),
            decision,
            since: time_filter("from", &self.since)?,
            until: time_filter("to", &self.until)?,
            limit: PAGE_SIZE,
            offset: page.saturating_mul(u64::from(PAGE_SIZE)),
        })
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("user", self.user.trim().to_string()),
            ("asset", self.asset.trim().to_string()),
            ("session", self.session.trim().to_string()),
            ("q", self.q.clone()),
            ("decision", self.decision.clone()),
            ("since", self.since.trim().to_string()),
            ("until", self.until.trim().to_string()),
        ]
    }
}

/// `GET /web/commands`.
pub async fn search(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(filters): Query<CommandFilters>,
) -> Result<Markup, WebError> {
    let query = filters.query()?;
    let page = blocking(&state, move |services| {
        Ok(services.audit.read()?.commands(&query, false)?)
    })
    .await?;
    let total = page.total;
    let commands: Vec<CommandView> = page.items.into_iter().map(CommandView::from).collect();
    let body = html! {
        h1 { "Commands" }
        form.filters #command-filters method="get" action="/web/commands" {
            label { "Text" input #q type="search" name="q" value=(filters.q) placeholder="part of the command"; }
            label { "User" input type="text" name="user" value=(filters.user) placeholder="any"; }
            label { "Asset" input type="text" name="asset" value=(filters.asset) placeholder="any"; }
            label { "Session" input type="text" name="session" value=(filters.session) placeholder="any"; }
            label { "Decision" select name="decision" {
                option value="" selected[filters.decision.is_empty()] { "any" }
                option value="allow" selected[filters.decision == "allow"] { "allowed" }
                option value="deny" selected[filters.decision == "deny"] { "denied" }
            } }
            label { "From (UTC)" input type="datetime-local" name="since" value=(filters.since); }
            label { "To (UTC)" input type="datetime-local" name="until" value=(filters.until); }
            span.buttons {
                button type="submit" { "Search" }
                a.reset href="/web/commands" { "Reset" }
            }
        }
        table.rows #commands {
            thead { tr {
                th { "Time" } th { "User" } th { "Asset" } th { "Account" } th { "Command" }
                th { "Decision" } th { "Filter" } th { "Session" } th { "Replay" }
            } }
            tbody {
                @for c in &commands {
                    tr {
                        td.nowrap { (layout::time(&c.at)) }
                        td { (c.user) }
                        td { (c.asset) }
                        td { (c.account) }
                        td.cmd { (layout::shown(&c.command)) }
                        td { span class=(format!("badge {}", c.decision)) { (c.decision) } }
                        td { (c.filter.as_deref().unwrap_or("")) }
                        td.mono { a href=(format!("/web/sessions/{}", url_escape(&c.session))) title=(c.session) {
                            (c.session.chars().take(8).collect::<String>())
                        } }
                        td.nowrap { a.replay-at href=(replay_link(&c.session, c.offset_secs)) { "▶ " (offset_text(c.offset_secs)) } }
                    }
                }
            }
        }
        (layout::pager("/web/commands", &filters.pairs(), filters.page.unwrap_or(0), commands.len(), total))
    };
    Ok(layout::page(&Page {
        title: "Commands",
        admin: Some(&me.username),
        nav: Some(Nav::Commands),
        body,
    }))
}
