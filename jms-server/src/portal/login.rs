//! Logging in to the portal: the login form (name, password, and the TOTP
//! code where she has one), logout, and the [`Engineer`] extractor that
//! lets a request through only with a live session.
//!
//! Passwords are checked on the [`crate::hashpool`] threads (503 "busy"
//! when full, at once). The answer to a wrong name, password or code is
//! the same; the code is asked for only once the password was right (as
//! the bastion's PAM conversation does).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, FromRef, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use crate::engineers::{Engineer, LoginOutcome, Portal, SESSION_LIFETIME};
use crate::web::auth::{cookie_value, see_other_with_cookie, session_set_cookie};
use crate::web::layout::url_escape;

/// The portal's session cookie.
pub const COOKIE: &str = "jms_portal";

fn hashing() -> &'static crate::hashpool::HashPool {
    static POOL: OnceLock<crate::hashpool::HashPool> = OnceLock::new();
    POOL.get_or_init(crate::hashpool::HashPool::with_defaults)
}

/// The browser's address: the TCP peer (a proxy in front is the peer; its
/// `X-Forwarded-For` is not proof of anything and is not used).
pub fn client_of(extensions: &axum::http::Extensions) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical())
}

/// Only a path of this site may be a redirect target (no other site, no
/// `//host`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("/login")
                && !next.contains("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next.to_string()
        }
        _ => "/".to_string(),
    }
}

impl<S> FromRequestParts<S> for Engineer
where
    Arc<Portal>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Response;

    /// The signed-in engineer; a browser without a live session is sent to
    /// the login page (GET) or refused with 403.
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Engineer, Response> {
        let portal = Arc::<Portal>::from_ref(state);
        let client = client_of(&parts.extensions);
        let found = match cookie_value(&parts.headers, COOKIE) {
            None => None,
            Some(token) => {
                let checked =
                    tokio::task::spawn_blocking(move || portal.engineer(&token, client)).await;
                match checked {
                    Ok(Ok(found)) => found,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "portal session check failed");
                        return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
                    }
                    Err(_) => return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
                }
            }
        };
        match found {
            Some(engineer) => Ok(engineer),
            None if parts.method == Method::GET || parts.method == Method::HEAD => {
                let wanted = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default();
                let target = format!("/login?next={}", url_escape(&safe_next(Some(&wanted))));
                Err(Redirect::to(&target).into_response())
            }
            None => Err((StatusCode::FORBIDDEN, "sign in first").into_response()),
        }
    }
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    code: String,
    next: Option<String>,
}

fn login_page(next: &str, username: &str, error: Option<&str>, ask_code: bool) -> Markup {
    let body = html! {
        div.login {
            h1 { "jms" }
            p.muted { "Sign in with your jms password (and the code from your authenticator app, if you have one) to reach your assets." }
            @if let Some(error) = error {
                p.error #error role="alert" { (error) }
            }
            form method="post" action="/login" {
                input type="hidden" name="next" value=(next);
                label { "Name" input #username type="text" name="username" value=(username)
                    autocomplete="username" required autofocus[username.is_empty()]; }
                label { "Password" input #password type="password" name="password"
                    autocomplete="current-password" required autofocus[!username.is_empty() && !ask_code]; }
                label { "Code (if you have an authenticator)" input #code type="text" name="code" inputmode="numeric"
                    pattern="[0-9 ]{6,7}" autocomplete="one-time-code" autofocus[ask_code]; }
                button #login type="submit" { "Sign in" }
            }
        }
    };
    super::page("Sign in", None, body)
}

/// `GET /login`.
pub async fn form(Query(query): Query<LoginQuery>) -> Markup {
    login_page(&safe_next(query.next.as_deref()), "", None, false)
}

/// `POST /login`.
pub async fn submit(
    State(portal): State<Arc<Portal>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(form.next.as_deref());
    let username: String = form.username.trim().chars().take(256).collect();
    let client = peer.map(|Extension(ConnectInfo(addr))| addr.ip().to_canonical());
    let refuse = |status: StatusCode, message: &str, ask_code: bool| {
        (
            status,
            login_page(&next, &username, Some(message), ask_code),
        )
            .into_response()
    };
    let name = username.clone();
    let checked = hashing()
        .run(move || {
            portal.login(
                &name,
                &form.password,
                &form.code,
                client,
                chrono::Utc::now(),
            )
        })
        .await;
    let outcome = match checked {
        Err(_) => {
            return refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "The server is busy: try again in a moment.",
                false,
            )
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "portal login failed");
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The login could not be checked (details in the server log).",
                false,
            );
        }
        Ok(Ok(outcome)) => outcome,
    };
    match outcome {
        LoginOutcome::Success { token } => {
            let cookie = session_set_cookie(COOKIE, "/", &token, SESSION_LIFETIME, &headers);
            see_other_with_cookie(&next, &cookie)
        }
        LoginOutcome::NeedCode => refuse(
            StatusCode::UNAUTHORIZED,
            "Enter the code from your authenticator app too.",
            true,
        ),
        LoginOutcome::Wrong => refuse(
            StatusCode::UNAUTHORIZED,
            "Wrong name, password or code.",
            false,
        ),
        LoginOutcome::Locked { until } => {
            let wait = (until - chrono::Utc::now().timestamp()).max(1);
            refuse(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Locked after too many failed attempts: try again in {} min (or ask an administrator to unlock you).",
                    (wait + 59) / 60
                ),
                false,
            )
        }
        LoginOutcome::Denied(reason) => refuse(
            StatusCode::FORBIDDEN,
            &format!("You may not log in now: {reason}."),
            false,
        ),
    }
}

/// `POST /logout`.
pub async fn logout(State(portal): State<Arc<Portal>>, headers: HeaderMap) -> Response {
    if let Some(token) = cookie_value(&headers, COOKIE) {
        match tokio::task::spawn_blocking(move || portal.logout(&token)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "portal logout failed");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            Err(_) => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    see_other_with_cookie("/login", &cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_stay_on_this_site() {
        assert_eq!(safe_next(Some("/?q=web")), "/?q=web");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/a//evil",
            "/\\evil",
            "/x\ny",
            "/login?next=/",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
