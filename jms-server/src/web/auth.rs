//! Logging in to the audit web: the login form (name, password, TOTP
//! code), the session cookie, logout, the layer that sends everyone else to
//! the login page, and the backoff after failed attempts.
//!
//! - The cookie `jms_web` holds a random token (only its SHA-256 is
//!   stored); it is `HttpOnly`, `SameSite=Strict`, limited to `/web`, and
//!   `Secure` over the server's own TLS or when a TLS proxy says the
//!   request came over HTTPS. A session
//!   lasts [`SESSION_LIFETIME`] at most and ends after [`SESSION_IDLE`]
//!   without a request.
//! - Failed logins are counted per name (known or not, so the answer never
//!   tells which): after [`FREE_ATTEMPTS`] the name is locked for 30 s,
//!   doubling with each further failure up to 15 min. Counters live in
//!   memory (a restart forgets them), at most [`MAX_TRACKED_NAMES`] of them,
//!   keyed by at most [`MAX_KEY_CHARS`] characters of the name.
//! - Passwords (and the decoy hash for unknown names) are checked on the
//!   [`crate::hashpool`] threads, never on the blocking pool that store
//!   and sync requests use; when that pool is full the answer is 503 "try
//!   again in a moment", at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{self, url_escape, Page};
use super::{admins, blocking, WebError, WebState};

/// Name of the session cookie.
pub const COOKIE: &str = "jms_web";
/// Longest a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Failed attempts allowed before a name is locked.
pub const FREE_ATTEMPTS: u32 = 5;
/// First lock after [`FREE_ATTEMPTS`]; doubles with each further failure.
const FIRST_LOCK: Duration = Duration::from_secs(30);
const LONGEST_LOCK: Duration = Duration::from_secs(15 * 60);
/// Names tracked at most: past it, entries idle for [`FORGET_AFTER`] go,
/// then the oldest unlocked half.
pub const MAX_TRACKED_NAMES: usize = 10_000;
/// Characters of a name used as its key (admin names are at most 64).
pub const MAX_KEY_CHARS: usize = 64;
/// An entry with no failure this long is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// Who is logged in (put in the request by [`require_login`]).
#[derive(Debug, Clone)]
pub struct WebAdmin {
    pub username: String,
    /// What she may do: an auditor sees no write control and gets 403
    /// from every write.
    pub role: crate::store::Scope,
}

/// Failed logins per name.
#[derive(Default)]
pub struct Throttle {
    names: HashMap<String, Failures>,
}

struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Throttle {
    /// The key of `name`: its first [`MAX_KEY_CHARS`] characters.
    fn key(name: &str) -> &str {
        match name.char_indices().nth(MAX_KEY_CHARS) {
            Some((end, _)) => &name[..end],
            None => name,
        }
    }

    /// How long `name` stays locked, if it is.
    pub fn locked_for(&self, name: &str, now: Instant) -> Option<Duration> {
        let until = self.names.get(Self::key(name))?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Makes room for one more name: forgets idle entries, then (a flood of
    /// names) the older half of the unlocked ones, then the older half of
    /// all.
    fn make_room(&mut self, now: Instant) {
        if self.names.len() < MAX_TRACKED_NAMES {
            return;
        }
        self.names
            .retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
        for only_unlocked in [true, false] {
            if self.names.len() < MAX_TRACKED_NAMES {
                return;
            }
            let locked = |f: &Failures| f.locked_until.is_some_and(|u| u > now);
            let mut ages: Vec<Instant> = self
                .names
                .values()
                .filter(|f| !(only_unlocked && locked(f)))
                .map(|f| f.last)
                .collect();
            if ages.is_empty() {
                continue;
            }
            let middle = ages.len() / 2;
            let (_, cut, _) = ages.select_nth_unstable(middle);
            let cut = *cut;
            self.names
                .retain(|_, f| (only_unlocked && locked(f)) || f.last > cut);
        }
    }

    /// Counts a failure; locks the name past the free attempts.
    pub fn failed(&mut self, name: &str, now: Instant) {
        let name = Self::key(name);
        if !self.names.contains_key(name) {
            self.make_room(now);
        }
        let entry = self.names.entry(name.to_string()).or_insert(Failures {
            count: 0,
            last: now,
            locked_until: None,
        });
        entry.count += 1;
        entry.last = now;
        if entry.count >= FREE_ATTEMPTS {
            let doublings = (entry.count - FREE_ATTEMPTS).min(10);
            let lock = (FIRST_LOCK * 2u32.pow(doublings)).min(LONGEST_LOCK);
            entry.locked_until = Some(now + lock);
        }
    }

    /// A successful login clears the name's failures.
    pub fn succeeded(&mut self, name: &str) {
        self.names.remove(Self::key(name));
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
    code: String,
    next: Option<String>,
}

/// Only a path inside the web UI may be a redirect target (no other site,
/// no `//host`).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with("/web/")
                && !next.contains("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next.to_string()
        }
        _ => "/web/sessions".to_string(),
    }
}

fn login_page(next: &str, username: &str, error: Option<&str>) -> Markup {
    let body = html! {
        div.login {
            h1 { "jms console" }
            p.muted { "Sign in with your password and the code from your authenticator app." }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form method="post" action="/web/login" {
                input type="hidden" name="next" value=(next);
                label { "Name" input #username type="text" name="username" value=(username)
                    autocomplete="username" required autofocus[username.is_empty()]; }
                label { "Password" input #password type="password" name="password"
                    autocomplete="current-password" required autofocus[!username.is_empty()]; }
                label { "Code" input #code type="text" name="code" inputmode="numeric"
                    pattern="[0-9 ]{6,7}" autocomplete="one-time-code" required; }
                button #login type="submit" { "Sign in" }
            }
        }
    };
    layout::page(&Page {
        title: "Sign in",
        admin: None,
        nav: None,
        body,
    })
}

/// `GET /web/login`.
pub async fn login_form(Query(query): Query<LoginQuery>) -> Markup {
    login_page(&safe_next(query.next.as_deref()), "", None)
}

/// `POST /web/login`.
pub async fn login(
    State(state): State<WebState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let next = safe_next(form.next.as_deref());
    let username = form.username.trim().to_string();
    let refuse = |status: StatusCode, message: &str| {
        (status, login_page(&next, &username, Some(message))).into_response()
    };
    if let Some(wait) = lock_of(&state, &username) {
        tracing::warn!(username, "web login refused: locked after failed attempts");
        return Ok(refuse(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many failed attempts: try again in {} s.",
                wait.as_secs().max(1)
            ),
        ));
    }
    let client = forwarded_for(&headers);
    let (name, client_for_store) = (username.clone(), client.clone());
    let admins = state.services.admins.clone();
    let checked = state
        .hashing
        .run(move || {
            admins::login(
                &admins,
                &name,
                &form.password,
                &form.code,
                client_for_store.as_deref(),
                chrono::Utc::now(),
                chrono::Duration::from_std(SESSION_LIFETIME).expect("fits"),
            )
        })
        .await;
    let Ok(session) = checked else {
        tracing::warn!(
            forwarded_for = client,
            "web login refused: password checks busy"
        );
        return Ok(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy: try again in a moment.",
        ));
    };
    let session = session?;
    let Some(session) = session else {
        state
            .throttle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .failed(&username, Instant::now());
        if let Some(bus) = &state.bus {
            bus.publish(crate::bus::Signal::LoginFailed {
                name: Throttle::key(&username).to_string(),
            });
        }
        tracing::warn!(username, forwarded_for = client, "web login refused");
        return Ok(refuse(
            StatusCode::UNAUTHORIZED,
            "Wrong name, password or code.",
        ));
    };
    state
        .throttle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .succeeded(&username);
    if let Some(bus) = &state.bus {
        bus.publish(crate::bus::Signal::LoginSucceeded {
            name: Throttle::key(&username).to_string(),
        });
    }
    tracing::info!(
        username = session.username,
        forwarded_for = client,
        "web login"
    );
    let cookie = session_set_cookie(COOKIE, "/web", &session.token, SESSION_LIFETIME, &headers);
    Ok(see_other_with_cookie(&next, &cookie))
}

fn lock_of(state: &WebState, username: &str) -> Option<Duration> {
    state
        .throttle
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .locked_for(username, Instant::now())
}

/// `POST /web/logout`.
pub async fn logout(
    State(state): State<WebState>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    if let Some(token) = session_cookie(&headers) {
        blocking(&state, move |services| {
            admins::logout(&services.admins, &token)
        })
        .await?;
    }
    let cookie = format!("{COOKIE}=; Path=/web; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(see_other_with_cookie("/web/login", &cookie))
}

pub(crate) fn see_other_with_cookie(location: &str, cookie: &str) -> Response {
    let mut response = Redirect::to(location).into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// The session token from the `Cookie` header.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    cookie_value(headers, COOKIE)
}

/// The non-empty value of cookie `cookie` in the `Cookie` header (the
/// audit web's and the engineers' portal's session cookies).
pub(crate) fn cookie_value(headers: &HeaderMap, cookie: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == cookie && !value.is_empty())
        .map(|(_, value)| value.to_string())
}

/// The `Set-Cookie` value of a session cookie (`HttpOnly`,
/// `SameSite=Strict`, `Secure` over TLS, own or a proxy's); an empty
/// `value` with no `max_age` clears it.
pub(crate) fn session_set_cookie(
    cookie: &str,
    path: &str,
    value: &str,
    max_age: Duration,
    headers: &HeaderMap,
) -> String {
    format!(
        "{cookie}={value}; Path={path}; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if crate::tls::over_tls() || forwarded_https(headers) {
            "; Secure"
        } else {
            ""
        }
    )
}

/// Whether a TLS proxy in front says the browser used HTTPS.
pub(crate) fn forwarded_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The client as a proxy in front reports it (`X-Forwarded-For`; not
/// proof of anything): for the log and the session row only.
fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(|v| v.trim().chars().take(64).collect())
}

/// Lets a request through only with a live session; sends browsers to the
/// login page (back here afterwards) and refuses anything else with 403.
pub async fn require_login(
    State(state): State<WebState>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = session_cookie(request.headers());
    let signed_in = match token {
        None => None,
        Some(token) => {
            let idle = chrono::Duration::from_std(SESSION_IDLE).expect("fits");
            match blocking(&state, move |services| {
                admins::session(&services.admins, &token, chrono::Utc::now(), idle)
            })
            .await
            {
                Ok(found) => found,
                Err(e) => return e.into_response(),
            }
        }
    };
    let Some((username, role)) = signed_in else {
        if matches!(*request.method(), Method::GET | Method::HEAD) {
            let wanted = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let target = format!("/web/login?next={}", url_escape(&safe_next(Some(&wanted))));
            return Redirect::to(&target).into_response();
        }
        return WebError::Forbidden("sign in first".to_string()).into_response();
    };
    request.extensions_mut().insert(WebAdmin { username, role });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_targets_stay_inside_the_web_ui() {
        assert_eq!(safe_next(Some("/web/commands?q=ls")), "/web/commands?q=ls");
        for bad in [
            "https://evil.example/",
            "//evil.example/web/",
            "/web//evil",
            "/api/v1/users",
            "/web/\\evil",
            "/web/x\ny",
        ] {
            assert_eq!(safe_next(Some(bad)), "/web/sessions", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/web/sessions");
    }

    #[test]
    fn names_lock_after_the_free_attempts_and_the_lock_grows() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        for _ in 0..FREE_ATTEMPTS - 1 {
            throttle.failed("alice", start);
        }
        assert_eq!(throttle.locked_for("alice", start), None);
        throttle.failed("alice", start);
        assert_eq!(throttle.locked_for("alice", start), Some(FIRST_LOCK));
        throttle.failed("alice", start);
        assert_eq!(throttle.locked_for("alice", start), Some(FIRST_LOCK * 2));
        assert_eq!(throttle.locked_for("alice", start + FIRST_LOCK * 2), None);
        assert_eq!(throttle.locked_for("bob", start), None);
        for _ in 0..40 {
            throttle.failed("alice", start);
        }
        assert_eq!(throttle.locked_for("alice", start), Some(LONGEST_LOCK));
        throttle.succeeded("alice");
        assert_eq!(throttle.locked_for("alice", start), None);
    }

    #[test]
    fn the_failure_map_stays_bounded_and_keys_are_short() {
        let mut throttle = Throttle::default();
        let start = Instant::now();
        for _ in 0..FREE_ATTEMPTS {
            throttle.failed("alice", start);
        }
        let long = "x".repeat(100_000);
        throttle.failed(&long, start);
        assert!(throttle.locked_for(&long, start).is_none());
        for n in 0..3 * MAX_TRACKED_NAMES {
            throttle.failed(
                &format!("{n}-{long}"),
                start + Duration::from_micros(n as u64),
            );
            assert!(throttle.names.len() <= MAX_TRACKED_NAMES, "bounded at {n}");
        }
        assert!(throttle
            .names
            .keys()
            .all(|k| k.chars().count() <= MAX_KEY_CHARS));
        assert!(
            throttle.locked_for("alice", start).is_some(),
            "a flood of other names does not unlock a locked one"
        );
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; jms_web=tok; b=2"),
        );
        assert_eq!(session_cookie(&headers).as_deref(), Some("tok"));
        headers.insert(header::COOKIE, HeaderValue::from_static("jms_web="));
        assert_eq!(session_cookie(&headers), None);
    }

    #[test]
    fn url_escape_keeps_paths_readable() {
        assert_eq!(url_escape("/web/a?b=c d"), "/web/a%3Fb%3Dc%20d");
    }
}
