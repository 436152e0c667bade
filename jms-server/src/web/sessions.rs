//! The sessions pages: the list (filters: user, asset, account, time range,
//! still online; 50 a page, newest first) and one session's detail (source
//! IP, bastion, duration, its commands and transfers, a link to the
//! replay). Rows come from the store's audit queries — the same ones the
//! API's `/api/v1/sessions` uses — and are shown through the API's views,
//! so a status or a duration reads the same in both.
//!
//! Live sessions: an online session carries an "online" badge, and its
//! detail page and its row link to the live page (`super::live`: watch,
//! terminate).

use axum::extract::{Path, Query, State};
use axum::Extension;
use maud::{html, Markup};
use serde::Deserialize;

use super::auth::WebAdmin;
use super::layout::url_escape;
use super::layout::{self, Nav, Page, PAGE_SIZE};
use super::{blocking, WebError, WebState};
use crate::api::audit::{session_activity, CommandView, SessionView};
use crate::error::AdminError;
use crate::store::SessionQuery;

/// The list's filters, as the filter form sends them (empty = any).
#[derive(Debug, Default, Deserialize)]
pub struct SessionFilters {
    #[serde(default)]
    user: String,
    #[serde(default)]
    asset: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    /// `1`: only sessions still going.
    #[serde(default)]
    online: String,
    page: Option<u64>,
}

/// A filter field as typed, trimmed; empty means any.
pub(super) fn given(text: &str) -> Option<String> {
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A time filter field (`name` in the error), empty means any.
pub(super) fn time_filter(
    name: &str,
    text: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, WebError> {
    given(text)
        .map(|t| layout::parse_time(&t).map_err(|e| WebError::BadRequest(format!("{name}: {e}"))))
        .transpose()
}

impl SessionFilters {
    fn query(&self) -> Result<SessionQuery, WebError> {
        let page = self.page.unwrap_or(0);
        Ok(SessionQuery {
            user: given(&self.user),
            asset: given(&self.asset),
            account: given(&self.account),
            since: time_filter("from", &self.since)?,
            until: time_filter("to", &self.until)?,
            online: (!self.online.is_empty()).then_some(true),
            limit: PAGE_SIZE,
            offset: page.saturating_mul(u64::from(PAGE_SIZE)),
        })
    }

    /// The filters again, for pager links.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("user", self.user.trim().to_string()),
            ("asset", self.asset.trim().to_string()),
            ("account", self.account.trim().to_string()),
            ("since", self.since.trim().to_string()),
            ("until", self.until.trim().to_string()),
            ("online", self.online.clone()),
        ]
    }
}

/// Session `id` as the API shows it; 404 when there is none.
pub async fn find_session(state: &WebState, id: String) -> Result<SessionView, WebError> {
    let session = blocking(state, move |services| {
        services
            .audit
            .read()?
            .session(&id)?
            .ok_or_else(|| AdminError::NotFound(format!("no session `{id}`")))
    })
    .await?;
    Ok(SessionView::from(session))
}

/// The head of a session's replay or live page: `title`, a link to the
/// session's `detail` page, who went where, when, and its status.
pub fn player_head(title: &str, s: &SessionView, detail: &str) -> Markup {
    html! {
        div.replay-head {
            h1 { (title) }
            a href=(detail) { "Session " span.mono { (s.id) } }
            span { (s.user) " → " (s.asset) " as " (s.account) }
            span.muted { "started " (layout::time(&s.started_at)) }
            (status_badge(s))
        }
    }
}

/// A status badge: online (green), denied (red) or ended (grey).
pub fn status_badge(session: &SessionView) -> Markup {
    html! {
        @match session.status {
            "online" => span.badge.online { "online" },
            "denied" => span.badge.deny { "denied" },
            other => span.badge { (other) },
        }
    }
}

fn duration_text(session: &SessionView) -> String {
    match session.duration_secs {
        Some(secs) => layout::duration(secs.round() as i64),
        None if session.online => {
            let secs = (chrono::Utc::now() - session.started_at).num_seconds();
            format!("{} so far", layout::duration(secs))
        }
        None => "—".to_string(),
    }
}

/// The replay link of a session at `offset` seconds.
pub fn replay_link(session: &str, offset: f64) -> String {
    let base = format!("/web/sessions/{}/replay", url_escape(session));
    if offset > 0.0 {
        format!("{base}#t={:.1}", offset)
    } else {
        base
    }
}

/// `mm:ss` of an offset in a session.
pub fn offset_text(offset: f64) -> String {
    let secs = offset.max(0.0).floor() as i64;
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// `GET /web/sessions`.
pub async fn list(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(filters): Query<SessionFilters>,
) -> Result<Markup, WebError> {
    let query = filters.query()?;
    let page = blocking(&state, move |services| {
        Ok(services.audit.read()?.sessions(&query)?)
    })
    .await?;
    let total = page.total;
    let sessions: Vec<SessionView> = page.items.into_iter().map(SessionView::from).collect();
    let body = html! {
        h1 { "Sessions" }
        form.filters #session-filters method="get" action="/web/sessions" {
            label { "User" input type="text" name="user" value=(filters.user) placeholder="any"; }
            label { "Asset" input type="text" name="asset" value=(filters.asset) placeholder="any"; }
            label { "Account" input type="text" name="account" value=(filters.account) placeholder="any"; }
            label { "From (UTC)" input type="datetime-local" name="since" value=(filters.since); }
            label { "To (UTC)" input type="datetime-local" name="until" value=(filters.until); }
            label.check { input type="checkbox" name="online" value="1" checked[!filters.online.is_empty()]; "Still online" }
            span.buttons {
                button type="submit" { "Filter" }
                a.reset href="/web/sessions" { "Reset" }
            }
        }
        table.rows #sessions {
            thead { tr {
                th { "Started" } th { "User" } th { "Asset" } th { "Account" } th { "Source IP" }
                th { "Bastion" } th { "Duration" } th { "Commands" } th { "Status" } th { "Replay" }
            } }
            tbody {
                @for s in &sessions {
                    tr data-session=(s.id) {
                        td.nowrap { a href=(format!("/web/sessions/{}", url_escape(&s.id))) { (layout::time(&s.started_at)) } }
                        td { (s.user) }
                        td { (s.asset) }
                        td { (s.account) @if let Some(login) = &s.login { @if login != &s.account { span.muted { " (" (layout::shown(login)) ")" } } } }
                        td.mono { (s.source_ip.as_deref().unwrap_or("—")) }
                        td { (s.bastion.as_deref().unwrap_or("—")) }
                        td.nowrap { (duration_text(s)) }
                        td { (s.command_count) }
                        td { (status_badge(s)) }
                        td {
                            @if s.has_recording { a href=(replay_link(&s.id, 0.0)) { "Replay" } }
                            @else if s.online { a.watch href=(format!("/web/sessions/{}/live", url_escape(&s.id))) { "Watch" } }
                            @else { span.muted { "—" } }
                        }
                    }
                }
            }
        }
        (layout::pager("/web/sessions", &filters.pairs(), filters.page.unwrap_or(0), sessions.len(), total))
    };
    Ok(layout::page(&Page {
        title: "Sessions",
        admin: Some(&me.username),
        nav: Some(Nav::Sessions),
        body,
    }))
}

/// `GET /web/sessions/{id}`.
pub async fn detail(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    let wanted = id.clone();
    let (session, commands, transfers) = blocking(&state, move |services| {
        session_activity(&*services.audit.read()?, &wanted)
    })
    .await?;
    let s = SessionView::from(session);
    let commands: Vec<CommandView> = commands.items.into_iter().map(CommandView::from).collect();
    let transfers = transfers.items;
    let body = html! {
        h1 { "Session " span.mono { (s.id) } " " (status_badge(&s)) }
        div.actions {
            @if s.has_recording {
                a.button #replay href=(replay_link(&s.id, 0.0)) { "Replay" }
            } @else {
                span.button.disabled { "No recording" }
            }
            @if s.online {
                span.live-slot #live-actions data-session=(s.id) {
                    a.button #watch href=(format!("/web/sessions/{}/live", url_escape(&s.id))) {
                        @if me.role >= crate::store::Scope::Operator { "Watch / Terminate" } @else { "Watch" }
                    }
                }
            }
        }
        dl.facts #facts {
            dt { "User" } dd #fact-user { (s.user) }
            dt { "Asset" } dd #fact-asset { (s.asset) }
            dt { "Account" } dd { (s.account) @if let Some(login) = &s.login { span.muted { " (login " (layout::shown(login)) ")" } } }
            dt { "Kind" } dd { (s.kind.as_deref().unwrap_or("—")) @if let Some(p) = &s.protocol { span.muted { " over " (p) } } }
            @if let Some(command) = &s.command { dt { "Command" } dd.mono { (layout::shown(command)) } }
            dt { "Source IP" } dd.mono #fact-source { (s.source_ip.as_deref().unwrap_or("—")) }
            dt { "Bastion" } dd #fact-bastion { (s.bastion.as_deref().unwrap_or("—")) }
            dt { "Started" } dd { (layout::time(&s.started_at)) }
            dt { "Ended" } dd { @if let Some(end) = &s.ended_at { (layout::time(end)) } @else { "—" } }
            dt { "Duration" } dd #fact-duration { (duration_text(&s)) }
            @if let Some(code) = s.exit_status { dt { "Exit status" } dd { (code) } }
            @if let Some(reason) = &s.reason { dt { "Reason" } dd { (layout::shown(reason)) } }
            dt { "Traffic" } dd {
                (s.bytes_in.map(layout::bytes).unwrap_or_else(|| "—".into())) " in, "
                (s.bytes_out.map(layout::bytes).unwrap_or_else(|| "—".into())) " out"
            }
            @if s.recording_truncated { dt { "Recording" } dd { "cut at the size cap" } }
        }
        h2 { "Commands (" (commands.len()) ")" }
        @if commands.is_empty() {
            p.muted { "No commands recorded." }
        } @else {
            table.rows #commands {
                thead { tr { th { "At" } th { "Time" } th { "Command" } th { "Decision" } th { "Filter" } th { "Typed by" } } }
                tbody {
                    @for c in &commands {
                        tr {
                            td.nowrap { a href=(replay_link(&s.id, c.offset_secs)) title="Replay from here" { (offset_text(c.offset_secs)) } }
                            td.nowrap { (layout::time(&c.at)) }
                            td.cmd { (layout::shown(&c.command)) }
                            td { span class=(format!("badge {}", c.decision)) { (c.decision) } }
                            td { (c.filter.as_deref().unwrap_or("")) }
                            td { (layout::shown(c.typed_by.as_deref().unwrap_or(""))) }
                        }
                    }
                }
            }
        }
        h2 { "File transfers (" (transfers.len()) ")" }
        @if transfers.is_empty() {
            p.muted { "No file transfers." }
        } @else {
            table.rows #transfers {
                thead { tr { th { "Time" } th { "Via" } th { "Operation" } th { "Path" } th { "Size" } th { "Result" } } }
                tbody {
                    @for t in &transfers {
                        tr {
                            td.nowrap { (layout::time(&t.at)) }
                            td { (t.via) }
                            td { (t.operation) }
                            td.cmd { (layout::shown(&t.path)) @if let Some(to) = &t.to { " → " (layout::shown(to)) } }
                            td.nowrap { (t.size.map(layout::bytes).unwrap_or_default()) }
                            td { @if t.ok { span.badge.allow { "ok" } } @else { span.badge.deny { (t.result) } } }
                        }
                    }
                }
            }
        }
    };
    Ok(layout::page(&Page {
        title: "Session",
        admin: Some(&me.username),
        nav: Some(Nav::Sessions),
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_links_carry_the_moment() {
        assert_eq!(replay_link("s1", 0.0), "/web/sessions/s1/replay");
        assert_eq!(replay_link("s1", 12.345), "/web/sessions/s1/replay#t=12.3");
        assert_eq!(offset_text(75.9), "1:15");
        assert_eq!(offset_text(3725.0), "1:02:05");
    }
}
