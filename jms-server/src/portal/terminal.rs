//! The engineers' web terminal: `GET /terminal?asset=A&account=B` (the
//! page: xterm.js and its fit addon, vendored by `scripts/vendor-xterm`,
//! and `terminal.js`) and `GET /terminal/ws?asset=A&account=B&cols=C&rows=R`
//! (the WebSocket). Both take the portal login ([`Engineer`]); the socket
//! also checks `Origin` (this site only), and the grant (ssh + connect on
//! that account) again.
//!
//! The socket is an ordinary bastion session: the server logs in to an
//! enrolled bastion's sshd as the engineer with a one-time ticket
//! ([`crate::bastion_ssh`]) and opens a pty on the target through the
//! ForceCommand path, so recording, command filters, the command log and
//! live watch/kill/share are the bastion's, unchanged. The audit's source
//! address is the browser's (in the ticket).
//!
//! Messages: browser → server, text frames of JSON `{"type":"input",
//! "data":…}`, `{"type":"paste","data":…}` (refused without the grant's
//! `paste`), `{"type":"resize","cols":…,"rows":…}`; server → browser,
//! binary frames (the terminal's output) and one final text frame
//! `{"type":"closed","message":…}`. Each browser tab is one socket and one
//! session. Copy is allowed in the page only with the grant's `copy`;
//! paste only with `paste` (the page cannot paste without it and the
//! server refuses a paste message). A browser someone modified can still
//! type what it wants: that is typing, which the command filters see.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRef, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use jms_core::model::{Action, Protocol};
use maud::html;
use russh::ChannelMsg;
use serde::Deserialize;

use crate::bastion_ssh::{self, WebLogin};
use crate::engineers::{Engineer, Portal};
use crate::sync::SyncService;

/// The largest message a browser may send (a paste of this size at once).
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Terminal sizes taken.
const MAX_COLS: u32 = 1000;
const MAX_ROWS: u32 = 500;

/// What the terminal routes need.
#[derive(Clone)]
pub struct TerminalState {
    pub portal: Arc<Portal>,
    pub sync: Arc<SyncService>,
}

impl FromRef<TerminalState> for Arc<Portal> {
    fn from_ref(state: &TerminalState) -> Arc<Portal> {
        state.portal.clone()
    }
}

/// The web terminal's routes, to merge into the server's router.
pub fn router<S>(state: TerminalState) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/terminal", get(page))
        .route("/terminal/ws", get(socket))
        .layer(axum::middleware::from_fn(crate::web::page_headers))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
pub struct Target {
    asset: String,
    account: String,
    #[serde(default)]
    cols: Option<u32>,
    #[serde(default)]
    rows: Option<u32>,
}

/// What the grant allows on the target's account.
#[derive(Debug, Clone, Copy)]
struct Allowed {
    copy: bool,
    paste: bool,
}

/// The grant on `target` for `engineer` now: `None` when no grant gives a
/// terminal (ssh and connect) on that account.
async fn allowed(portal: &Arc<Portal>, engineer: &Engineer, target: &Target) -> Option<Allowed> {
    let portal = portal.clone();
    let (user, asset, account) = (
        engineer.username.clone(),
        target.asset.clone(),
        target.account.clone(),
    );
    tokio::task::spawn_blocking(move || {
        let policy = portal.compiled().ok()?;
        let listing = policy.list(&user, chrono::Utc::now()).ok()?;
        let found = listing
            .iter()
            .filter(|g| g.asset.name == asset)
            .find_map(|g| {
                g.accounts
                    .iter()
                    .find(|a| {
                        a.account.name() == account
                            && a.protocols.contains(Protocol::Ssh)
                            && a.actions.contains(Action::Connect)
                    })
                    .map(|a| Allowed {
                        copy: a.actions.contains(Action::Copy),
                        paste: a.actions.contains(Action::Paste),
                    })
            });
        found
    })
    .await
    .ok()
    .flatten()
}

fn refused(engineer: &Engineer, target: &Target) -> Response {
    let body = html! {
        h1 { "Terminal" }
        p.error #error {
            "No grant gives you a terminal on " (target.account) "@" (target.asset) "."
        }
        p { a href="/" { "Back to my assets" } }
    };
    (
        StatusCode::FORBIDDEN,
        super::page("Terminal", Some(&engineer.username), body),
    )
        .into_response()
}

/// `GET /terminal?asset=A&account=B`: the page (one tab, one session).
pub async fn page(
    State(state): State<TerminalState>,
    engineer: Engineer,
    Query(target): Query<Target>,
) -> Response {
    let Some(allowed) = allowed(&state.portal, &engineer, &target).await else {
        return refused(&engineer, &target);
    };
    let title = format!("{}@{}", target.account, target.asset);
    let body = html! {
        link rel="stylesheet" href=(crate::web::assets::url("xterm.css"));
        div #terminal-bar {
            strong { (title) }
            " "
            span #terminal-status.mono role="status" { "connecting…" }
            " "
            button #reconnect type="button" hidden { "Reconnect" }
        }
        div #terminal
            data-asset=(target.asset)
            data-account=(target.account)
            data-copy=(allowed.copy)
            data-paste=(allowed.paste) {}
        script src=(crate::web::assets::url("xterm.js")) {}
        script src=(crate::web::assets::url("xterm-addon-fit.js")) {}
        script src=(crate::web::assets::url("terminal.js")) {}
    };
    super::page(&title, Some(&engineer.username), body).into_response()
}

/// A message from the browser.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FromBrowser {
    Input { data: String },
    Paste { data: String },
    Resize { cols: u32, rows: u32 },
}

/// Whether the request comes from this site's pages (`Origin` is this
/// host): no other site may open a terminal with the engineer's cookie.
fn same_origin(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ORIGIN) && crate::web::same_origin(headers)
}

/// `GET /terminal/ws?asset=A&account=B&cols=C&rows=R`: the session.
pub async fn socket(
    State(state): State<TerminalState>,
    engineer: Engineer,
    headers: HeaderMap,
    Query(target): Query<Target>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        tracing::warn!(
            user = engineer.username,
            "web terminal refused: Origin is not this site"
        );
        return (StatusCode::FORBIDDEN, "Origin is not this site").into_response();
    }
    let Some(allowed) = allowed(&state.portal, &engineer, &target).await else {
        return (StatusCode::FORBIDDEN, "no grant gives you this terminal").into_response();
    };
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |ws| run(ws, state, engineer, target, allowed))
}

fn closed(message: &str) -> Message {
    Message::Text(
        serde_json::json!({"type": "closed", "message": message})
            .to_string()
            .into(),
    )
}

/// Relays one session until either side ends it.
async fn run(
    mut ws: WebSocket,
    state: TerminalState,
    engineer: Engineer,
    target: Target,
    allowed: Allowed,
) {
    let Some(client) = engineer.client else {
        let _ = ws.send(closed("the browser's address is unknown")).await;
        return;
    };
    let cols = target.cols.unwrap_or(80).clamp(10, MAX_COLS);
    let rows = target.rows.unwrap_or(24).clamp(5, MAX_ROWS);
    let opened = async {
        let bastion_id = bastion_ssh::web_bastion(state.sync.clone()).await?;
        let login = WebLogin {
            user: engineer.username.clone(),
            bastion_id,
            asset: target.asset.clone(),
            account: target.account.clone(),
            client,
        };
        let connection = bastion_ssh::connect(state.sync.clone(), &login).await?;
        let channel = connection.open_shell("xterm-256color", cols, rows).await?;
        Ok::<_, bastion_ssh::BastionSshError>((connection, channel))
    };
    let (connection, mut channel) = match opened.await {
        Ok(opened) => opened,
        Err(e) => {
            tracing::warn!(user = engineer.username, error = %e, "web terminal: no session");
            let _ = ws.send(closed(&e.to_string())).await;
            return;
        }
    };
    tracing::info!(
        user = engineer.username,
        target = connection.target(),
        "web terminal opened"
    );
    let mut exit: Option<u32> = None;
    let reason = loop {
        tokio::select! {
            from_browser = ws.recv() => {
                let text = match from_browser {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => continue,
                };
                let sent = match serde_json::from_str::<FromBrowser>(text.as_str()) {
                    Ok(FromBrowser::Input { data }) => channel.data(data.as_bytes()).await,
                    Ok(FromBrowser::Paste { data }) if allowed.paste => {
                        channel.data(data.as_bytes()).await
                    }
                    Ok(FromBrowser::Paste { .. }) => {
                        let _ = ws
                            .send(Message::Text(
                                serde_json::json!({"type": "notice", "message": "paste is not allowed on this account"})
                                    .to_string()
                                    .into(),
                            ))
                            .await;
                        Ok(())
                    }
                    Ok(FromBrowser::Resize { cols, rows }) => {
                        channel
                            .window_change(cols.clamp(10, MAX_COLS), rows.clamp(5, MAX_ROWS), 0, 0)
                            .await
                    }
                    Err(_) => break Some("a malformed message from the browser".to_string()),
                };
                if sent.is_err() {
                    break Some("the bastion connection ended".to_string());
                }
            }
            from_bastion = channel.wait() => match from_bastion {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    if ws.send(Message::Binary(data.to_vec().into())).await.is_err() {
                        break None;
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => exit = Some(exit_status),
                Some(_) => {}
                None => break Some(match exit {
                    Some(status) => format!("session ended (exit status {status})"),
                    None => "session ended".to_string(),
                }),
            }
        }
    };
    if let Some(reason) = &reason {
        let _ = ws.send(closed(reason)).await;
    }
    let _ = ws.send(Message::Close(None)).await;
    connection.close().await;
    tracing::info!(
        user = engineer.username,
        target = format!("{}@{}", target.account, target.asset),
        "web terminal closed"
    );
}
