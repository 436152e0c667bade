//! "My assets" (`GET /`): the assets the signed-in engineer is granted
//! now, as jms-core evaluates the current policy (the bastions' own
//! engine), [`PAGE_SIZE`] to a page, searched server-side by name, address
//! or node path, narrowed to a node of the tree beside it; per asset its
//! granted accounts (`@INPUT`: she types a username and password when she
//! opens it; `@USER`: her own name, as on ssh) with the protocols and
//! actions the grants allow, and links to a terminal and to the file
//! manager.
//!
//! Only one page of rows is rendered; the search and the tree read every
//! granted asset's name, address and nodes (no accounts), so 10,000
//! granted assets cost one pass over them per request.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jms_core::engine::AccountRef;
use jms_core::model::{Action, Protocol};
use maud::{html, Markup};
use serde::Deserialize;

use crate::engineers::{Engineer, Portal};
use crate::web::layout::url_escape;

/// Rows on one page.
pub const PAGE_SIZE: usize = 50;
/// Nodes shown in the tree at most.
pub const MAX_TREE_NODES: usize = 500;
/// Longest search text taken.
const MAX_QUERY_CHARS: usize = 200;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    node: String,
    #[serde(default)]
    page: Option<usize>,
}

/// Where the web terminal of one account is opened.
pub fn terminal_link(asset: &str, account: &str) -> String {
    format!(
        "/terminal?asset={}&account={}",
        url_escape(asset),
        url_escape(account)
    )
}

/// Where the file manager of one account is opened.
pub fn files_link(asset: &str, account: &str) -> String {
    format!(
        "/files?asset={}&account={}",
        url_escape(asset),
        url_escape(account)
    )
}

/// One account's row part, as the page shows it.
struct AccountView {
    name: String,
    /// What it logs in as: the account's username, her name (`@USER`), or
    /// "asked" (`@INPUT`).
    login: String,
    protocols: Vec<&'static str>,
    actions: Vec<&'static str>,
    terminal: bool,
    files: bool,
}

/// `GET /`.
pub async fn list(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Query(query): Query<ListQuery>,
) -> Response {
    let rendered = tokio::task::spawn_blocking(move || render(&portal, &engineer, &query)).await;
    match rendered {
        Ok(Ok(page)) => page.into_response(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "my assets failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (details in the server log)",
            )
                .into_response()
        }
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

fn matches(text: &str, needle: &str) -> bool {
    needle.is_empty() || text.to_lowercase().contains(needle)
}

fn under(path: &str, node: &str) -> bool {
    node.is_empty()
        || path == node
        || (path.starts_with(node) && path.as_bytes().get(node.len()) == Some(&b'/'))
}

fn render(portal: &Portal, engineer: &Engineer, query: &ListQuery) -> crate::error::Result<Markup> {
    let policy = portal.compiled()?;
    let listing = match policy.list(&engineer.username, chrono::Utc::now()) {
        Ok(listing) => listing,
        Err(_) => return Ok(page(engineer, query, 0, 0, &BTreeMap::new(), Vec::new())),
    };
    let needle: String = query
        .q
        .trim()
        .chars()
        .take(MAX_QUERY_CHARS)
        .collect::<String>()
        .to_lowercase();
    let node = query.node.trim().trim_end_matches('/').to_string();
    let mut tree: BTreeMap<String, usize> = BTreeMap::new();
    let mut selected: Vec<usize> = Vec::new();
    for i in 0..listing.len() {
        let Some(asset) = listing.name(i).and_then(|name| policy.asset(name)) else {
            continue;
        };
        for path in &asset.nodes {
            let mut end = 0;
            while let Some(next) = path[end + 1..].find('/').map(|p| p + end + 1) {
                *tree.entry(path[..next].to_string()).or_default() += 1;
                end = next;
            }
            *tree.entry(path.clone()).or_default() += 1;
        }
        let in_node = node.is_empty() || asset.nodes.iter().any(|p| under(p, &node));
        let found = needle.is_empty()
            || matches(&asset.name, &needle)
            || matches(&asset.address, &needle)
            || asset.nodes.iter().any(|p| matches(p, &needle));
        if in_node && found {
            selected.push(i);
        }
    }
    let total = selected.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let current = query.page.unwrap_or(1).clamp(1, pages);
    let rows = selected
        .iter()
        .skip((current - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .filter_map(|&i| listing.get(i))
        .map(|granted| {
            let accounts = granted
                .accounts
                .iter()
                .map(|a| {
                    let actions: Vec<&'static str> = Action::ALL
                        .into_iter()
                        .filter(|x| a.actions.contains(*x))
                        .map(Action::as_str)
                        .collect();
                    let protocols: Vec<&'static str> =
                        a.protocols.iter().map(Protocol::as_str).collect();
                    AccountView {
                        name: a.account.name().to_string(),
                        login: match a.account {
                            AccountRef::Real(account) => account.username.clone(),
                            AccountRef::Input => "asked when opened".to_string(),
                            AccountRef::SameName => engineer.username.clone(),
                            AccountRef::Anon => "none".to_string(),
                        },
                        terminal: a.protocols.contains(Protocol::Ssh)
                            && a.actions.contains(Action::Connect),
                        // As the bastion's SFTP root offers it: a real
                        // account (no prompt can reach an SFTP stream).
                        files: matches!(a.account, AccountRef::Real(_))
                            && a.protocols.contains(Protocol::Sftp)
                            && a.actions.contains(Action::Connect),
                        protocols,
                        actions,
                    }
                })
                .collect::<Vec<_>>();
            (
                granted.asset.name.clone(),
                granted.asset.address.clone(),
                granted.asset.nodes.clone(),
                accounts,
            )
        })
        .collect();
    Ok(page(engineer, query, total, current, &tree, rows))
}

type Row = (String, String, Vec<String>, Vec<AccountView>);

fn page_link(query: &ListQuery, page: usize) -> String {
    format!(
        "/?q={}&node={}&page={page}",
        url_escape(query.q.trim()),
        url_escape(query.node.trim())
    )
}

fn page(
    engineer: &Engineer,
    query: &ListQuery,
    total: usize,
    current: usize,
    tree: &BTreeMap<String, usize>,
    rows: Vec<Row>,
) -> Markup {
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let node = query.node.trim();
    let body = html! {
        h1 { "My assets" }
        div.portal {
            aside.tree #node-tree {
                h2 { "Nodes" }
                ul {
                    li { a href="/" class=[node.is_empty().then_some("current")] { "All" } }
                    @for (path, count) in tree.iter().take(MAX_TREE_NODES) {
                        @let depth = path.matches('/').count().saturating_sub(1);
                        @let label = path.rsplit('/').next().unwrap_or(path);
                        li style=(format!("padding-left: {}px", depth * 14)) {
                            a href=(format!("/?node={}", url_escape(path)))
                                class=[(path == node).then_some("current")] title=(path) {
                                (label) " " span.muted { "(" (count) ")" }
                            }
                        }
                    }
                }
                @if tree.len() > MAX_TREE_NODES {
                    p.muted { "The first " (MAX_TREE_NODES) " nodes are shown; search to find others." }
                }
            }
            section.assets {
                form.filters method="get" action="/" {
                    label { "Search (name, address, node)"
                        input #search type="search" name="q" value=(query.q.trim()) maxlength="200"; }
                    input type="hidden" name="node" value=(node);
                    div.buttons {
                        button #search-go type="submit" { "Search" }
                        @if !query.q.trim().is_empty() || !node.is_empty() { a.reset href="/" { "Show all" } }
                    }
                }
                p #asset-count.muted {
                    (total) " asset" @if total != 1 { "s" }
                    @if !node.is_empty() { " in " code { (node) } }
                    @if !query.q.trim().is_empty() { " matching " code { (query.q.trim()) } }
                }
                @if rows.is_empty() {
                    p #no-assets { "No granted asset matches." }
                } @else {
                    table.rows #assets {
                        thead { tr { th { "Asset" } th { "Address" } th { "Nodes" } th { "Accounts" } } }
                        tbody {
                            @for (name, address, nodes, accounts) in &rows {
                                tr.asset data-asset=(name) {
                                    td.asset-name { (name) }
                                    td.mono { (address) }
                                    td { @for n in nodes { div.mono { (n) } } }
                                    td {
                                        @for a in accounts {
                                            div.account data-account=(a.name) {
                                                strong { (a.name) } " "
                                                span.muted { "(" (a.login) ")" } " "
                                                @for p in &a.protocols { span.badge { (p) } " " }
                                                @for x in &a.actions { span.badge.allow { (x) } " " }
                                                @if a.terminal {
                                                    a.terminal-link href=(terminal_link(name, &a.name)) target="_blank" { "Terminal" } " "
                                                }
                                                @if a.files {
                                                    a.files-link href=(files_link(name, &a.name)) target="_blank" { "Files" }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pager #pager {
                    @if current > 1 { a #prev href=(page_link(query, current - 1)) { "← Previous" } }
                    span { "Page " (current) " of " (pages) }
                    @if current < pages { a #next href=(page_link(query, current + 1)) { "Next →" } }
                }
            }
        }
    };
    super::page("My assets", Some(&engineer.username), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_holds_its_subnodes_only() {
        assert!(under("/Default/prod/web", "/Default/prod"));
        assert!(under("/Default/prod", "/Default/prod"));
        assert!(!under("/Default/production", "/Default/prod"));
        assert!(under("/x", ""));
    }
}
