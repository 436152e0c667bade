//! The engineers' web portal at the server's site root: jms users (not the
//! audit web's admins) log in and see the assets they are granted now.
//!
//! - The service behind it is [`crate::engineers`] ([`Portal`]): logins
//!   under the bastion's rules (password, TOTP, account checks, lockout),
//!   audited as logins; the login sessions; the compiled policy; the file
//!   manager's SFTP sessions.
//! - [`login`]: `GET/POST /login`, `POST /logout`, and the [`Engineer`]
//!   extractor every portal page (and the web terminal) takes: no session,
//!   no page.
//! - [`assets`]: "my assets" (`/`): paged, searched server-side, the node
//!   tree, accounts and actions per asset, links to a terminal and to the
//!   file manager.
//! - [`terminal`]: the web terminal (xterm.js over a WebSocket; an
//!   ordinary bastion session opened with a one-time ticket).
//! - [`files`]: the web file manager, through the engineer's own SFTP
//!   session on a bastion (the `sftp` command's proxy: grant actions and
//!   transfer audit unchanged).
//!
//! The rules of the audit web apply unchanged (one definition:
//! [`crate::web`]): the session cookie `jms_portal` is `HttpOnly`,
//! `SameSite=Strict` and `Secure` over TLS; a write (POST) must carry this
//! site's `Origin` (or `Referer`); every page gets the same
//! Content-Security-Policy and no-framing headers; nothing is loaded from
//! elsewhere.

pub mod assets;
pub mod files;
pub mod login;
pub mod terminal;

use std::sync::Arc;

use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, DOCTYPE};

pub use crate::engineers::{Engineer, Portal};
pub use login::COOKIE;

/// The portal's routes, to merge into the server's router.
pub fn router<S>(portal: Arc<Portal>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(assets::list))
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", post(login::logout))
        .route("/files", get(files::page))
        .route("/files/list", get(files::list))
        .route("/files/download", get(files::download))
        .route(
            "/files/upload",
            post(files::upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/files/delete", post(files::delete))
        .route("/files/mkdir", post(files::mkdir))
        .route("/files/rename", post(files::rename))
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::PUBLIC_FORM_LIMIT,
        ))
        .layer(middleware::from_fn(crate::web::same_origin_writes))
        .layer(middleware::from_fn(crate::web::page_headers))
        .with_state(portal)
}

/// The portal's page frame.
pub(crate) fn page(title: &str, engineer: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (title) " · jms" }
                link rel="stylesheet" href=(crate::web::assets::url("app.css"));
            }
            body {
                header.topbar {
                    a.brand href="/" { "jms" }
                    @if let Some(engineer) = engineer {
                        nav { a.current href="/" { "My assets" } }
                        div.who {
                            span #engineer-name { (engineer) }
                            form method="post" action="/logout" {
                                button.link #logout type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}
