//! The web UI under `/web/`: server-rendered HTML (maud) for the people
//! who review what happened on the bastions (the audit pages) and for the
//! admins who change the policy (the admin console).
//!
//! - [`auth`]: login (password + TOTP), the session cookie, logout, backoff.
//! - [`admins`]: the web admins (`jmsctl admin add|list|remove`) and their
//!   login sessions.
//! - [`sessions`]: the session list (filters, pages) and a session's detail.
//! - [`commands`]: command search across sessions, each row linking to the
//!   replay at that moment.
//! - [`replay`]: the replay page (asciinema player) and the recording it
//!   plays.
//! - [`live`]: watch an online session as it happens, terminate it.
//! - [`fleet`]: the enrolled bastions, where each stands; revoke one.
//! - [`jobs`]: account job history with each step's output and the
//!   bastions' audit events, and each account's last verification.
//! - [`layout`]: the page frame and small formatting helpers.
//! - [`assets`]: CSS, JS and the vendored player, embedded in the binary.
//! - [`console`]: the admin console's bridge to the admin API (every write
//!   calls the API route's handler after that route's role check);
//!   [`forms`] its one set of form and table helpers; the pages:
//!   [`people`] (users, groups), [`inventory`] (nodes, assets, accounts),
//!   [`grants`] (grants with their coverage preview, command filters),
//!   [`system`] (settings with a test mail, the operation log).
//!
//! Every page needs a logged-in web admin. Her role (`jmsctl admin add
//! --role`) decides the write controls she sees and may use: an
//! `auditor` none (403 from every write), an `operator` may terminate
//! sessions and change the policy, an `admin` may also change the
//! settings and revoke bastions (each console write needs the role of the
//! API route it calls). No resource comes from another
//! site (the Content-Security-Policy says so too). A request that changes
//! something (POST) must come from this site: the cookie is
//! `SameSite=Strict` and the `Origin` (or `Referer`) must name this host.

pub mod admins;
pub(crate) mod assets;
pub(crate) mod auth;
mod commands;
mod console;
mod fleet;
mod forms;
mod grants;
mod inventory;
mod jobs;
pub(crate) mod layout;
mod live;
mod people;
mod replay;
mod sessions;
mod system;

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::html;

use crate::audit::AuditService;
use crate::error::AdminError;
use crate::fleet::Fleet;
use crate::live::LiveService;
use crate::recordings::Recordings;
use admins::WebAdmins;

/// The services the audit web uses.
#[derive(Clone)]
pub struct WebServices {
    pub audit: Arc<AuditService>,
    pub recordings: Arc<Recordings>,
    pub live: Arc<LiveService>,
    pub fleet: Arc<Fleet>,
    pub admins: Arc<WebAdmins>,
    /// The admin API's state: the console's writes call its handlers.
    pub api: crate::api::AppState,
}

/// What every web handler gets.
#[derive(Clone)]
pub struct WebState {
    services: WebServices,
    throttle: Arc<Mutex<auth::Throttle>>,
    /// Other instances on one PostgreSQL: failed logins count everywhere.
    bus: Option<Arc<crate::bus::Bus>>,
    /// Where login passwords (and the decoy) are checked.
    hashing: Arc<crate::hashpool::HashPool>,
}

/// The audit web's routes, to merge into the server's router.
pub fn router<S>(services: WebServices) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let throttle = Arc::new(Mutex::new(auth::Throttle::default()));
    let bus = services.live.hub().bus().filter(|bus| bus.shared());
    if let Some(bus) = &bus {
        let throttle = Arc::downgrade(&throttle);
        bus.subscribe(move |signal| {
            let Some(throttle) = throttle.upgrade() else {
                return;
            };
            let mut throttle = throttle.lock().unwrap_or_else(|p| p.into_inner());
            match signal {
                crate::bus::Signal::LoginFailed { name } => {
                    throttle.failed(name, std::time::Instant::now())
                }
                crate::bus::Signal::LoginSucceeded { name } => throttle.succeeded(name),
                _ => {}
            }
        });
    }
    let state = WebState {
        services,
        throttle,
        bus,
        hashing: Arc::new(crate::hashpool::HashPool::with_defaults()),
    };
    let pages = Router::new()
        .route("/web/sessions", get(sessions::list))
        .route("/web/sessions/{id}", get(sessions::detail))
        .route("/web/sessions/{id}/replay", get(replay::page))
        .route("/web/sessions/{id}/recording.cast", get(replay::recording))
        .route("/web/sessions/{id}/live", get(live::page))
        .route("/web/sessions/{id}/live/events", get(live::events))
        .route("/web/sessions/{id}/kill", post(live::kill))
        .route("/web/commands", get(commands::search))
        .route("/web/bastions", get(fleet::list))
        .route("/web/bastions/{name}/revoke", post(fleet::revoke))
        .route("/web/jobs", get(jobs::list))
        .route("/web/jobs/{id}", get(jobs::detail))
        .route("/web/logout", post(auth::logout))
        .merge(console_routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_login,
        ));
    Router::new()
        .route("/web", get(|| async { Redirect::to("/web/sessions") }))
        .route("/web/", get(|| async { Redirect::to("/web/sessions") }))
        .route("/web/login", get(auth::login_form).post(auth::login))
        .merge(pages)
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::PUBLIC_FORM_LIMIT,
        ))
        .layer(middleware::from_fn(same_origin_writes))
        .layer(middleware::from_fn(page_headers))
        .route("/web/assets/{name}", get(assets::serve))
        .with_state(state)
}

/// The admin console's pages; every write (POST) refused to an auditor
/// before anything else ([`console::auditors_read_only`]).
fn console_routes() -> Router<WebState> {
    Router::new()
        .route("/web/users", get(people::users).post(people::create_user))
        .route(
            "/web/users/{username}",
            get(people::user).post(people::update_user),
        )
        .route("/web/users/{username}/delete", post(people::delete_user))
        .route(
            "/web/users/{username}/password-link",
            post(people::password_link),
        )
        .route("/web/users/{username}/reset-mfa", post(people::reset_mfa))
        .route("/web/users/{username}/unlock", post(people::unlock))
        .route(
            "/web/groups",
            get(people::groups).post(people::create_group),
        )
        .route("/web/groups/{name}", post(people::update_group))
        .route("/web/groups/{name}/delete", post(people::delete_group))
        .route(
            "/web/nodes",
            get(inventory::nodes).post(inventory::create_node),
        )
        .route("/web/nodes/{id}", post(inventory::update_node))
        .route("/web/nodes/{id}/delete", post(inventory::delete_node))
        .route(
            "/web/inventory",
            get(inventory::assets).post(inventory::create_asset),
        )
        .route(
            "/web/inventory/{asset}",
            get(inventory::asset).post(inventory::update_asset),
        )
        .route(
            "/web/inventory/{asset}/delete",
            post(inventory::delete_asset),
        )
        .route(
            "/web/inventory/{asset}/accounts",
            post(inventory::create_account),
        )
        .route(
            "/web/inventory/{asset}/accounts/{account}",
            post(inventory::update_account),
        )
        .route(
            "/web/inventory/{asset}/accounts/{account}/delete",
            post(inventory::delete_account),
        )
        .route(
            "/web/grants",
            get(grants::grants).post(grants::create_grant),
        )
        .route("/web/grants/coverage", get(grants::preview))
        .route(
            "/web/grants/{name}",
            get(grants::grant).post(grants::update_grant),
        )
        .route("/web/grants/{name}/delete", post(grants::delete_grant))
        .route(
            "/web/filters",
            get(grants::filters).post(grants::create_filter),
        )
        .route(
            "/web/filters/{name}",
            get(grants::filter).post(grants::update_filter),
        )
        .route("/web/filters/{name}/delete", post(grants::delete_filter))
        .route(
            "/web/settings",
            get(system::settings).post(system::save_settings),
        )
        .route("/web/settings/mail/test", post(system::test_mail))
        .route("/web/oplog", get(system::oplog))
        .route_layer(middleware::from_fn(console::auditors_read_only))
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    state: &WebState,
    work: impl FnOnce(&WebServices) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, WebError> {
    let services = state.services.clone();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| work(&services))).await {
        Ok(result) => result.map_err(WebError::from),
        Err(e) => Err(WebError::Internal(format!("worker failed: {e}"))),
    }
}

/// A page that could not be shown; rendered as an HTML error page.
#[derive(Debug)]
pub enum WebError {
    /// 400: the query is malformed.
    BadRequest(String),
    /// 403: not allowed (not logged in, or a cross-site write).
    Forbidden(String),
    /// 404: no such session (or recording).
    NotFound(String),
    /// What the admin API answered a console write: its status and its
    /// one-line message.
    Api(StatusCode, String),
    /// 500: details in the server log only.
    Internal(String),
}

impl From<AdminError> for WebError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::NotFound(m) => WebError::NotFound(m),
            AdminError::BadInput(m) | AdminError::Invalid(m) | AdminError::Conflict(m) => {
                WebError::BadRequest(m)
            }
            AdminError::Forbidden(m) => WebError::Forbidden(m),
            other => WebError::Internal(other.to_string()),
        }
    }
}

impl WebError {
    /// The one-line message shown.
    pub fn message(&self) -> &str {
        match self {
            WebError::BadRequest(m)
            | WebError::Forbidden(m)
            | WebError::NotFound(m)
            | WebError::Api(_, m) => m,
            WebError::Internal(_) => "internal error (details in the server log)",
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            WebError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            WebError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            WebError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            WebError::Api(status, m) => (status, m),
            WebError::Internal(detail) => {
                tracing::error!(detail, "web page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error (details in the server log)".to_string(),
                )
            }
        };
        let body = html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error #error { (message) }
            p { "Go back to correct it, or " a href="/web/sessions" { "return to the sessions" } "." }
        };
        let page = layout::page(&layout::Page {
            title: "Error",
            admin: None,
            nav: None,
            body,
        });
        (status, page).into_response()
    }
}

/// Refuses a write (any method but GET/HEAD) whose `Origin` — or, without
/// one, `Referer` — is not this host: no other site can post a form here.
pub(crate) async fn same_origin_writes(request: Request, next: Next) -> Response {
    if matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    if !same_origin(request.headers()) {
        tracing::warn!(
            path = request.uri().path(),
            "cross-site write refused (Origin/Referer is not this host)"
        );
        return WebError::Forbidden(
            "this form must be sent from the jms console pages themselves".to_string(),
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether the request's `Origin` (or `Referer`) names the `Host` it was
/// sent to.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok());
    let Some(source) = source else {
        return false;
    };
    let Some(rest) = source
        .strip_prefix("https://")
        .or_else(|| source.strip_prefix("http://"))
    else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.eq_ignore_ascii_case(host)
}

/// Headers on every web response: no framing, no sniffing, resources only
/// from here, and pages never cached (assets set their own caching).
pub(crate) async fn page_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
         connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn writes_must_come_from_this_host() {
        use header::{HOST, ORIGIN, REFERER};
        let here = "127.0.0.1:8420";
        assert!(same_origin(&headers(&[
            (HOST, here),
            (ORIGIN, "http://127.0.0.1:8420")
        ])));
        assert!(same_origin(&headers(&[
            (HOST, here),
            (REFERER, "http://127.0.0.1:8420/web/login?next=/web/x")
        ])));
        assert!(!same_origin(&headers(&[
            (HOST, here),
            (ORIGIN, "http://evil.example")
        ])));
        assert!(!same_origin(&headers(&[
            (HOST, here),
            (ORIGIN, "http://127.0.0.1:8420.evil.example")
        ])));
        assert!(!same_origin(&headers(&[(HOST, here), (ORIGIN, "null")])));
        assert!(!same_origin(&headers(&[(HOST, here)])));
    }
}
