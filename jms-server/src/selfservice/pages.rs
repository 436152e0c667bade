//! The self-service pages (server-rendered with maud; inline CSS, an inline
//! SVG QR code, nothing loaded from anywhere else):
//!
//! - `GET /password/set?token=T`: the form, with the password rules of the
//!   settings and an optional (or, when `security.mfa_required` covers the
//!   user and she has none, required) TOTP enrollment: QR code and base32
//!   secret, confirmed by one code.
//! - `POST /password/set`: checks the form's CSRF field, the rules (each
//!   unmet one named), the code; marks the link used; sets the hash.
//!   Unknown link: 404; used, replaced or expired: 410; nothing changes.
//! - `GET/POST /password/forgot`: a username or an email address; the
//!   answer is the same page whether or not an account matches (the lookup
//!   and the mail run in a background queue, so the timing is the same
//!   too). Per source IP: 429 past the limit.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Form};
use chrono::Utc;
use jms_core::password::{
    check_totp_secret, generate_totp_secret, hash_password, verify_totp, DEFAULT_ITERATIONS,
};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::csrf::{self, origin_ok};
use super::limits::RateLimiter;
use super::links::{self, LinkState, Links, SET_PATH};
use super::{blocking, rules, SelfService};
use crate::error::AdminError;
use crate::settings::{MfaRequired, Security, Settings};
use crate::store::{ListQuery, PasswordTokenRow, Purpose, UserRow};

pub const FORGOT_PATH: &str = "/password/forgot";
/// Longest username or address the forgot form takes.
const MAX_LOGIN: usize = 254;
/// "Forgot password" lookups waiting at most (more are dropped).
const QUEUE: usize = 256;

const CSS: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;background:#f4f5f7;color:#1d2330;margin:0}
main{max-width:34rem;margin:3rem auto;background:#fff;padding:2rem 2.5rem;border-radius:8px;box-shadow:0 1px 4px rgba(0,0,0,.12)}
h1{font-size:1.4rem;margin-top:0}
label{display:block;margin:1rem 0 .3rem;font-weight:600}
input[type=password],input[type=text]{width:100%;box-sizing:border-box;padding:.55rem;font-size:1rem;border:1px solid #b8bfcc;border-radius:4px}
button{margin-top:1.4rem;padding:.6rem 1.4rem;font-size:1rem;background:#2456c7;color:#fff;border:0;border-radius:4px;cursor:pointer}
fieldset{margin-top:1.5rem;border:1px solid #d5dae3;border-radius:6px;padding:.8rem 1.2rem}
.errors{background:#fdecec;border:1px solid #e5a4a4;color:#8a1f1f;padding:.6rem 1rem;border-radius:4px}
.rules li{margin:.15rem 0}
.secret{font-family:ui-monospace,monospace;font-size:1.05rem;letter-spacing:.05em;word-break:break-all}
.qr svg{width:200px;height:200px}
.muted{color:#5b6476;font-size:.9rem}
";

type Shared = State<Arc<SelfService>>;

/// A whole page with the security headers every page gets.
fn page(status: StatusCode, title: &str, body: Markup, cookie: Option<String>) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                // Not `no-referrer`: with it a browser sends `Origin: null`
                // on the form's own POST, which `origin_ok` refuses. The
                // link's token still never leaves this site.
                meta name="referrer" content="same-origin";
                title { (title) " - jms" }
                style { (PreEscaped(CSS)) }
            }
            body { main { h1 { (title) } (body) } }
        }
    };
    let mut response = (status, Html(markup.into_string())).into_response();
    let headers = response.headers_mut();
    let fixed = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "same-origin"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::CACHE_CONTROL, "no-store"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Some(cookie) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    response
}

fn message_page(status: StatusCode, title: &str, lines: &[&str], offer_forgot: bool) -> Response {
    page(
        status,
        title,
        html! {
            @for line in lines { p { (line) } }
            @if offer_forgot {
                p { a href=(FORGOT_PATH) { "Ask for a new link" } }
            }
        },
        None,
    )
}

fn server_error(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(detail = %e, "self-service page failed");
    message_page(
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        &["The server could not handle this request. Try again later, or ask your administrator."],
        false,
    )
}

/// The page for a link that cannot be used.
fn link_page(state: &LinkState) -> Response {
    let (status, title, line) = match state {
        LinkState::Unknown | LinkState::Valid(_) => (
            StatusCode::NOT_FOUND,
            "Unknown link",
            "This link is not valid. Check that you copied all of it from the mail.",
        ),
        LinkState::Used => (
            StatusCode::GONE,
            "Link already used",
            "This link was already used: each link works once.",
        ),
        LinkState::Replaced => (
            StatusCode::GONE,
            "Link replaced",
            "A newer link was sent after this one: use the link in the latest mail.",
        ),
        LinkState::Expired => (StatusCode::GONE, "Link expired", "This link has expired."),
    };
    message_page(status, title, &[line], true)
}

/// A form that does not read: 413 for a body past the public form limit,
/// 400 otherwise; `reopen` names what to open again (`link`, `page`).
fn unreadable_form(rejection: &FormRejection, reopen: &str) -> Response {
    message_page(
        rejection.status(),
        "Form refused",
        &[&format!(
            "The form could not be read: open the {reopen} again."
        )],
        false,
    )
}

fn forbidden_form() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Form refused",
        &[
            "This form was not opened from this site, or it is too old \
             (or your browser blocks cookies for it).",
            "Open the link again and fill the form in anew.",
        ],
        false,
    )
}

/// The browser's cookie, or a new one and the header that sets it.
fn browser(headers: &HeaderMap, site_url: &str) -> (String, Option<String>) {
    match csrf::browser_cookie(headers) {
        Some(id) => (id, None),
        None => {
            let id = csrf::new_browser_id();
            let cookie = csrf::set_cookie(&id, site_url.starts_with("https://"));
            (id, Some(cookie))
        }
    }
}

// ---- set password -------------------------------------------------------------

/// Everything the set-password form needs.
struct SetContext {
    link: PasswordTokenRow,
    settings: Settings,
    /// She must enroll TOTP (the settings require it and she has none).
    totp_required: bool,
    /// She has a second factor already: a mailed link never replaces it
    /// (only an admin reset does), so the page offers no enrollment.
    has_totp: bool,
}

fn totp_required(security: &Security, user: &UserRow) -> bool {
    let covered = match security.mfa_required {
        MfaRequired::None => false,
        MfaRequired::All => true,
        MfaRequired::Groups => user
            .user
            .groups
            .iter()
            .any(|g| security.mfa_groups.contains(g)),
    };
    covered && user.totp_secret.is_none()
}

fn load(links: &Links, token: &str) -> Result<Result<SetContext, LinkState>, AdminError> {
    let link = match links.password_link(token)? {
        LinkState::Valid(link) => link,
        other => return Ok(Err(other)),
    };
    let (settings, _) = links.settings()?;
    let Some(user) = links.read()?.user(&link.username)? else {
        return Ok(Err(LinkState::Unknown));
    };
    Ok(Ok(SetContext {
        totp_required: totp_required(&settings.security, &user),
        has_totp: user.totp_secret.is_some(),
        link,
        settings,
    }))
}

/// What the CSRF field of a set-password form is bound to: the link and
/// the TOTP secret the page offered.
fn set_form_id(token: &str, totp_secret: &str) -> String {
    let hash: String = crate::crypto::token_hash(token)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("set:{hash}:{totp_secret}")
}

/// `otpauth://` URI of the secret, as authenticator apps read it.
fn otpauth_uri(site_url: &str, username: &str, secret: &str) -> String {
    let issuer = reqwest::Url::parse(site_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| format!("jms ({h})")))
        .unwrap_or_else(|| "jms".to_string());
    let mut url = reqwest::Url::parse("otpauth://totp/").expect("a valid URL");
    url.set_path(&format!("{issuer}:{username}"));
    url.query_pairs_mut()
        .append_pair("secret", secret)
        .append_pair("issuer", &issuer)
        .append_pair("algorithm", "SHA1")
        .append_pair("digits", "6")
        .append_pair("period", "30");
    url.to_string()
}

/// The QR code of `text` as an inline `<svg>`.
fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let svg = code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(200, 200)
        .build();
    let start = svg.find("<svg")?;
    Some(svg[start..].to_string())
}

/// The secret in groups of four, as apps show it.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

struct SetForm<'a> {
    ctx: &'a SetContext,
    token: &'a str,
    csrf: String,
    totp_secret: &'a str,
    errors: &'a [String],
}

fn set_page(status: StatusCode, form: SetForm<'_>, cookie: Option<String>) -> Response {
    let ctx = form.ctx;
    let rules = rules::rules(&ctx.settings.security);
    let uri = otpauth_uri(
        &ctx.settings.mail.site_url,
        &ctx.link.username,
        form.totp_secret,
    );
    let qr = qr_svg(&uri).unwrap_or_default();
    let body = html! {
        p { "Account: " strong { (ctx.link.username) } }
        @if !form.errors.is_empty() {
            div.errors role="alert" {
                p { strong { "Your password was not set:" } }
                ul { @for error in form.errors { li { (error) } } }
            }
        }
        p { "Your new password must have:" }
        ul.rules { @for rule in &rules { li { (rule.text) } } }
        form method="post" action=(SET_PATH) autocomplete="off" {
            input type="hidden" name="token" value=(form.token);
            input type="hidden" name="csrf" value=(form.csrf);
            input type="hidden" name="totp_secret" value=(form.totp_secret);
            label for="password" { "New password" }
            input #password type="password" name="password" autocomplete="new-password" required;
            label for="confirm" { "New password again" }
            input #confirm type="password" name="confirm" autocomplete="new-password" required;
            @if ctx.has_totp {
                p.muted {
                    "Your authenticator app stays enrolled: this link sets the password only. "
                    "To move two-factor authentication to another app, ask an administrator "
                    "to reset it."
                }
            } @else {
            fieldset {
                legend {
                    "Two-factor authentication "
                    @if ctx.totp_required { "(required)" } @else { "(optional)" }
                }
                p.muted {
                    "Scan this code with an authenticator app (or type the secret in it), "
                    "then enter the 6-digit code it shows. "
                    @if !ctx.totp_required { "Leave the code empty to skip." }
                }
                div.qr { (PreEscaped(qr)) }
                p { "Secret: " span.secret { (grouped(form.totp_secret)) } }
                label for="totp_code" { "Code from the app" }
                input #totp_code type="text" name="totp_code" inputmode="numeric"
                    autocomplete="one-time-code" maxlength="7" required[ctx.totp_required];
            }
            }
            button type="submit" { "Set password" }
        }
        p.muted {
            "This link works once, until "
            (ctx.link.expires_at.format("%Y-%m-%d %H:%M UTC"))
            "."
        }
    };
    page(status, "Set your password", body, cookie)
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    token: String,
}

/// `GET /password/set?token=T`.
pub async fn set_form(
    State(service): Shared,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let token = query.map(|Query(q)| q.token).unwrap_or_default();
    let lookup = token.clone();
    let ctx = match blocking(&service.links, move |links| load(links, &lookup)).await {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(state)) => return link_page(&state),
        Err(e) => return server_error(&e),
    };
    let totp_secret = match generate_totp_secret() {
        Ok(secret) => secret,
        Err(e) => return server_error(&e),
    };
    let (browser_id, cookie) = browser(&headers, &ctx.settings.mail.site_url);
    let csrf = service
        .csrf
        .field(&browser_id, &set_form_id(&token, &totp_secret));
    set_page(
        StatusCode::OK,
        SetForm {
            ctx: &ctx,
            token: &token,
            csrf,
            totp_secret: &totp_secret,
            errors: &[],
        },
        cookie,
    )
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct SetFields {
    token: String,
    csrf: String,
    password: String,
    confirm: String,
    totp_secret: String,
    totp_code: String,
}

/// What the form asks that is wrong, and the TOTP secret to save.
fn check_fields(ctx: &SetContext, fields: &SetFields) -> (Vec<String>, Option<String>) {
    let mut errors = rules::unmet(&ctx.settings.security, &fields.password);
    if fields.password != fields.confirm {
        errors.push("The two passwords differ.".to_string());
    }
    let code = fields.totp_code.trim();
    let mut totp = None;
    if ctx.has_totp {
        if !code.is_empty() {
            errors.push(
                "Your account already has an authenticator app: a link cannot replace it. \
                 Leave the code empty, or ask an administrator to reset two-factor \
                 authentication."
                    .to_string(),
            );
        }
    } else if code.is_empty() {
        if ctx.totp_required {
            errors.push(
                "Two-factor authentication is required for your account: scan the code \
                 and enter the code your app shows."
                    .to_string(),
            );
        }
    } else if check_totp_secret(&fields.totp_secret).is_err() {
        errors.push("The two-factor secret of this form is damaged: open the link again.".into());
    } else {
        match verify_totp(&fields.totp_secret, code, Utc::now().timestamp(), None) {
            Ok(Some(_)) => totp = Some(fields.totp_secret.clone()),
            _ => errors.push(
                "The two-factor code is wrong: enter the code your app shows now (check \
                 the clock of your phone)."
                    .to_string(),
            ),
        }
    }
    (errors, totp)
}

/// `POST /password/set`.
pub async fn set_submit(
    State(service): Shared,
    headers: HeaderMap,
    form: Result<Form<SetFields>, FormRejection>,
) -> Response {
    let fields = match form {
        Ok(Form(fields)) => fields,
        Err(rejection) => return unreadable_form(&rejection, "link"),
    };
    let lookup = fields.token.clone();
    let ctx = match blocking(&service.links, move |links| load(links, &lookup)).await {
        Ok(Ok(ctx)) => ctx,
        Ok(Err(state)) => return link_page(&state),
        Err(e) => return server_error(&e),
    };
    let form_id = set_form_id(&fields.token, &fields.totp_secret);
    if !origin_ok(&headers, &ctx.settings.mail.site_url)
        || !service.csrf.check(&headers, &form_id, &fields.csrf)
    {
        return forbidden_form();
    }
    let (errors, totp) = check_fields(&ctx, &fields);
    if !errors.is_empty() {
        return set_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            SetForm {
                ctx: &ctx,
                token: &fields.token,
                csrf: fields.csrf.clone(),
                totp_secret: &fields.totp_secret,
                errors: &errors,
            },
            None,
        );
    }
    let password = fields.password;
    let hashed = tokio::task::spawn_blocking(move || hash_password(&password, DEFAULT_ITERATIONS));
    let hash = match hashed.await {
        Ok(Ok(hash)) => hash,
        Ok(Err(e)) => return server_error(&e),
        Err(e) => return server_error(&e),
    };
    let link = ctx.link.clone();
    let enrolled = totp.is_some();
    let redeemed = blocking(&service.links, move |links| {
        links.redeem_password_link(&link, hash, totp)
    })
    .await;
    match redeemed {
        Ok(Some(_version)) => page(
            StatusCode::OK,
            "Password set",
            html! {
                p { "The password of " strong { (ctx.link.username) } " is set"
                    @if enrolled { ", and your authenticator app is enrolled" } "." }
                p { "It reaches the bastions with their next policy update, usually within a \
                     minute. Then log in with ssh as " strong { (ctx.link.username) } "." }
            },
            None,
        ),
        Ok(None) => link_page(&LinkState::Used),
        Err(e) => server_error(&e),
    }
}

// ---- forgot password ----------------------------------------------------------

fn forgot_page(status: StatusCode, csrf: &str, cookie: Option<String>) -> Response {
    let body = html! {
        p { "Enter your user name or your email address. If an account matches, a link to set \
             a new password is mailed to its address." }
        form method="post" action=(FORGOT_PATH) {
            input type="hidden" name="csrf" value=(csrf);
            label for="login" { "User name or email address" }
            input #login type="text" name="login" autocomplete="username" maxlength="254" required;
            button type="submit" { "Send me a link" }
        }
    };
    page(status, "Forgot your password?", body, cookie)
}

/// `GET /password/forgot`.
pub async fn forgot_form(State(service): Shared, headers: HeaderMap) -> Response {
    let settings = match blocking(&service.links, |links| links.settings()).await {
        Ok((settings, _)) => settings,
        Err(e) => return server_error(&e),
    };
    let (browser_id, cookie) = browser(&headers, &settings.mail.site_url);
    let csrf = service.csrf.field(&browser_id, "forgot");
    forgot_page(StatusCode::OK, &csrf, cookie)
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ForgotFields {
    csrf: String,
    login: String,
}

/// `POST /password/forgot`: the same answer whatever was entered.
pub async fn forgot_submit(
    State(service): Shared,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    form: Result<Form<ForgotFields>, FormRejection>,
) -> Response {
    let fields = match form {
        Ok(Form(fields)) => fields,
        Err(rejection) => return unreadable_form(&rejection, "page"),
    };
    let settings = match blocking(&service.links, |links| links.settings()).await {
        Ok((settings, _)) => settings,
        Err(e) => return server_error(&e),
    };
    if !origin_ok(&headers, &settings.mail.site_url)
        || !service.csrf.check(&headers, "forgot", &fields.csrf)
    {
        return forbidden_form();
    }
    let ip = peer.map_or_else(
        || "unknown".to_string(),
        |Extension(c)| c.0.ip().to_string(),
    );
    let allowed = blocking(&service.per_ip, {
        let ip = ip.clone();
        move |limit| limit.allow(&ip).map_err(AdminError::from)
    })
    .await;
    let allowed = match allowed {
        Ok(allowed) => allowed,
        Err(e) => return server_error(&e),
    };
    if !allowed {
        tracing::warn!(ip, "forgot-password: per-IP limit reached");
        return message_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            &["Too many requests came from your address. Wait a while and try again."],
            false,
        );
    }
    let login = fields.login.trim().to_string();
    if !login.is_empty() && login.len() <= MAX_LOGIN {
        let queue = service.forgot.get_or_init(|| {
            let (sender, receiver) = mpsc::channel(QUEUE);
            tokio::spawn(forgot_worker(
                service.links.clone(),
                service.per_user.clone(),
                receiver,
            ));
            sender
        });
        if queue.try_send(login).is_err() {
            tracing::warn!("forgot-password: queue full, request dropped");
        }
    }
    let lifetime = links::lifetime_text(settings.mail.link_lifetime.0);
    let csrf = fields.csrf;
    page(
        StatusCode::OK,
        "Check your mail",
        html! {
            p { "If an account matches what you entered and has an email address, a link to \
                 set a new password is on its way to it. The link works once, for "
                (lifetime) "." }
            p.muted { "Nothing arrived? Check your spam folder, or ask your administrator." }
            details {
                summary { "Ask again" }
                form method="post" action=(FORGOT_PATH) {
                    input type="hidden" name="csrf" value=(csrf);
                    label for="login" { "User name or email address" }
                    input #login type="text" name="login" maxlength="254" required;
                    button type="submit" { "Send me a link" }
                }
            }
        },
        None,
    )
}

/// Whether a "forgot password" request may mail this user.
fn eligible(row: &UserRow) -> bool {
    let expired = row
        .user
        .date_expired
        .as_ref()
        .is_some_and(|t| t.0 <= Utc::now());
    row.user.is_active
        && !expired
        && row
            .user
            .email
            .as_deref()
            .is_some_and(|e| !e.trim().is_empty())
}

/// The users `login` names: by username, or every user with that address.
fn find_accounts(links: &Links, login: &str) -> Result<Vec<String>, AdminError> {
    let tx = links.read()?;
    let rows = if login.contains('@') {
        let query = ListQuery {
            limit: 1000,
            offset: 0,
            q: Some(login.to_string()),
        };
        tx.users(&query)?
            .items
            .into_iter()
            .filter(|r| {
                r.user
                    .email
                    .as_deref()
                    .is_some_and(|e| e.trim().eq_ignore_ascii_case(login))
            })
            .collect()
    } else {
        tx.user(login)?.into_iter().collect::<Vec<_>>()
    };
    Ok(rows
        .into_iter()
        .filter(eligible)
        .map(|r| r.user.username)
        .collect())
}

/// Handles "forgot password" requests one at a time, in order.
async fn forgot_worker(
    links: Arc<Links>,
    per_user: Arc<RateLimiter>,
    mut queue: mpsc::Receiver<String>,
) {
    while let Some(login) = queue.recv().await {
        let found = blocking(&links, move |links| find_accounts(links, &login)).await;
        let usernames = match found {
            Ok(usernames) => usernames,
            Err(e) => {
                tracing::error!(error = %e, "forgot-password: lookup failed");
                continue;
            }
        };
        for username in usernames {
            let allowed = blocking(&per_user, {
                let username = username.clone();
                move |limit| limit.allow(&username).map_err(AdminError::from)
            })
            .await;
            match allowed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(user = username, "forgot-password: per-user limit reached");
                    continue;
                }
                Err(e) => {
                    tracing::error!(user = username, error = %e, "forgot-password: limit not counted, no link sent");
                    continue;
                }
            }
            let sent = links::send_link(
                links.clone(),
                "self-service: forgot password".to_string(),
                username.clone(),
                Purpose::Reset,
            )
            .await;
            if let Err(e) = sent {
                tracing::warn!(user = username, error = %e, "forgot-password: no link sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_qr_code_is_an_inline_svg_and_the_uri_names_the_user() {
        let uri = otpauth_uri("https://jms.example.com", "alice", "JBSWY3DPEHPK3PXP");
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(
            uri.contains("alice") && uri.contains("secret=JBSWY3DPEHPK3PXP"),
            "{uri}"
        );
        let svg = qr_svg(&uri).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(grouped("ABCDEFGHIJ"), "ABCD EFGH IJ");
    }
}
