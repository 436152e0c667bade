//! Users' self-service: the mailed one-time set-password link and the pages
//! behind it (the seed's 邮件设置密码 flow).
//!
//! - [`links`]: issuing a link (32 random bytes, only their SHA-256 stored,
//!   expiring after `mail.link_lifetime`, single use; a new link revokes the
//!   user's older ones), mailing it, and redeeming it.
//! - [`pages`]: server-rendered HTML (maud, inline CSS, nothing loaded from
//!   elsewhere): `GET/POST /password/set?token=…` (password rules from the
//!   settings, optional TOTP enrollment confirmed by one code) and
//!   `GET/POST /password/forgot` (same answer whether or not the account
//!   exists; the lookup and the mail happen in a background queue).
//! - [`api`]: the admin side: user creation that mails the link, resending
//!   it, and the "send test email" action.
//! - [`csrf`]: forms carry an HMAC of a `SameSite=Strict` cookie (and of the
//!   link), and a browser's `Origin` must be this site.
//! - [`limits`]: per source IP and per user rate limits of "forgot password",
//!   counted in the store (every instance counts the same requests).
//! - [`rules`]: the password rules (`security.password_*`).
//!
//! Tokens, passwords and TOTP secrets are never logged: the request log
//! records paths without their query strings.

pub mod api;
mod csrf;
mod limits;
pub mod links;
mod pages;
pub mod rules;

use std::sync::{Arc, OnceLock};

use axum::routing::get;
use axum::Router;
use tokio::sync::mpsc;

use crate::error::AdminError;
use links::Links;

/// What the self-service pages share.
pub(crate) struct SelfService {
    links: Arc<Links>,
    csrf: csrf::CsrfKey,
    /// "Forgot password" requests per source IP.
    per_ip: Arc<limits::RateLimiter>,
    /// Links sent by "forgot password", per user.
    per_user: Arc<limits::RateLimiter>,
    /// The background queue of "forgot password" lookups (started on first
    /// use, inside the server's runtime).
    forgot: OnceLock<mpsc::Sender<String>>,
}

/// The self-service pages, for the server's router (whatever its state):
/// they need the self-service service only.
pub fn router<S: Clone + Send + Sync + 'static>(links: Arc<Links>) -> Router<S> {
    let csrf = csrf::CsrfKey::shared(links.seal_key());
    let store = links.store();
    let state = Arc::new(SelfService {
        links,
        csrf,
        per_ip: Arc::new(limits::RateLimiter::new(
            store.clone(),
            "forgot_password_ip",
            limits::PER_IP_MAX,
            limits::PER_IP_WINDOW,
        )),
        per_user: Arc::new(limits::RateLimiter::new(
            store,
            "forgot_password_user",
            limits::PER_USER_MAX,
            limits::PER_USER_WINDOW,
        )),
        forgot: OnceLock::new(),
    });
    Router::new()
        .route(
            links::SET_PATH,
            get(pages::set_form).post(pages::set_submit),
        )
        .route(
            pages::FORGOT_PATH,
            get(pages::forgot_form).post(pages::forgot_submit),
        )
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::api::PUBLIC_FORM_LIMIT,
        ))
        .with_state(state)
}

/// Runs store work of `service` off the async threads.
pub(crate) async fn blocking<S, T, E>(
    service: &Arc<S>,
    work: impl FnOnce(&S) -> Result<T, E> + Send + 'static,
) -> Result<T, E>
where
    S: Send + Sync + 'static,
    T: Send + 'static,
    E: From<AdminError> + Send + 'static,
{
    let service = service.clone();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| work(&service))).await {
        Ok(result) => result,
        Err(e) => Err(E::from(AdminError::Store(crate::store::StoreError::Io {
            path: "self-service worker thread".to_string(),
            message: e.to_string(),
        }))),
    }
}
