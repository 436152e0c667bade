//! Console pages for the system settings (security, audit, mail with a
//! "send test mail" button; the mail password is write-only) and the
//! operation log. The settings form is drawn from the settings document
//! itself, field by field, and posted back as a merge patch to the API's
//! handler (see [`super::console`]): one definition of the fields.

use axum::extract::{Query, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form, Json};
use maud::{html, Markup};
use serde_json::{json, Map, Value};

use super::auth::WebAdmin;
use super::console::{self, actor, done, may, Note, PageQuery};
use super::forms::{self, Fields};
use super::layout::{self, Nav};
use super::{WebError, WebState};
use crate::api::extract::{Body, Patch};
use crate::api::system as api_system;
use crate::selfservice::api as selfservice;

/// The settings document's sections, in page order.
const SECTIONS: &[(&str, &str)] = &[
    ("security", "Security"),
    ("audit", "Audit"),
    ("mail", "Mail"),
];

/// Fields with a fixed set of values.
const CHOICES: &[(&str, &[&str])] = &[
    ("security.mfa_required", &["none", "all", "groups"]),
    ("mail.smtp_security", &["starttls", "tls", "none"]),
    ("audit.command_filter_default", &["allow", "deny"]),
];

async fn current(state: &WebState) -> Result<Value, WebError> {
    let Json(value) = api_system::get_settings(state.api()).await?;
    Ok(value)
}

fn field(name: &str, value: &Value) -> Markup {
    if let Some((_, options)) = CHOICES.iter().find(|(n, _)| *n == name) {
        return forms::choice(name, name, options, value.as_str().unwrap_or_default());
    }
    match value {
        Value::Bool(on) => forms::check(name, name, *on),
        Value::Array(items) => {
            let items: Vec<String> = items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect();
            forms::lines(name, name, &items)
        }
        Value::String(text) => forms::text(name, name, text),
        Value::Null => forms::text(name, name, ""),
        other => forms::text(name, name, &other.to_string()),
    }
}

fn settings_page(me: &WebAdmin, settings: &Value, note: Option<&str>) -> Markup {
    let write = may(me, Method::PATCH, "/api/v1/settings");
    let has_password = settings["mail"]["has_password"] == json!(true);
    let fields = html! {
        @for (section, title) in SECTIONS {
            fieldset.section id=(format!("section-{section}")) {
                legend { (title) }
                @if let Some(map) = settings[*section].as_object() {
                    @for (key, value) in map {
                        @if !(*section == "mail" && key == "has_password") {
                            (field(&format!("{section}.{key}"), value))
                        }
                    }
                }
                @if *section == "mail" {
                    (forms::secret("mail.password", "mail.password",
                        if has_password { "set (blank keeps it)" } else { "not set" }))
                }
            }
        }
    };
    html! {
        h1 { "Settings" }
        (forms::notice(note))
        @if write {
            (forms::form("settings-form", "/web/settings", fields, "Save settings"))
        } @else {
            fieldset.readonly disabled { (fields) }
        }
        @if may(me, Method::POST, "/api/v1/settings/mail/test") {
            h2 { "Test mail" }
            (forms::form("test-mail", "/web/settings/mail/test",
                forms::text_hint("Send to", "to", "", "you@example.com"), "Send test mail"))
        }
    }
}

/// `GET /web/settings`.
pub async fn settings(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let value = current(&state).await?;
    Ok(console::page(
        &me,
        Nav::Settings,
        "Settings",
        settings_page(&me, &value, query.note()),
    ))
}

/// The form's fields as a merge patch of `current` (each field read as
/// the type it has there; the mail password only when one is typed).
fn settings_patch(current: &Value, f: &Fields) -> Result<Map<String, Value>, WebError> {
    let mut patch = Map::new();
    for (section, _) in SECTIONS {
        let Some(fields) = current[*section].as_object() else {
            continue;
        };
        let mut out = Map::new();
        for (key, old) in fields {
            if *section == "mail" && key == "has_password" {
                continue;
            }
            let name = format!("{section}.{key}");
            let new = match old {
                Value::Bool(_) => Value::Bool(f.flag(&name)),
                Value::Number(_) => {
                    let text = f.text(&name);
                    let n: u64 = text.parse().map_err(|_| {
                        WebError::BadRequest(format!("{name}: `{text}` is not a whole number"))
                    })?;
                    json!(n)
                }
                Value::Array(_) => json!(f.list(&name)),
                _ => Value::String(f.text(&name)),
            };
            out.insert(key.clone(), new);
        }
        if *section == "mail" {
            if let Some(password) = f.opt("mail.password") {
                out.insert("password".to_string(), Value::String(password));
            }
        }
        patch.insert(section.to_string(), Value::Object(out));
    }
    Ok(patch)
}

/// `POST /web/settings`: `PATCH /api/v1/settings`.
pub async fn save_settings(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::PATCH, "/api/v1/settings")?;
    let patch = settings_patch(&current(&state).await?, &Fields(fields))?;
    let _ = api_system::patch_settings(state.api(), actor, Patch(patch)).await?;
    Ok(done("/web/settings", Note::Saved))
}

/// `POST /web/settings/mail/test`: `POST /api/v1/settings/mail/test`;
/// the page then says where it went and what the SMTP server answered.
pub async fn test_mail(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Result<Response, WebError> {
    let actor = actor(&me, Method::POST, "/api/v1/settings/mail/test")?;
    let body: selfservice::MailTest =
        console::model("test mail", json!({"to": Fields(fields).text("to")}))?;
    let Json(sent) = selfservice::test_mail(state.api(), actor, Body(body)).await?;
    let note = format!(
        "Test mail sent to {} through {} (it answered: {}).",
        sent["sent_to"].as_str().unwrap_or_default(),
        sent["server"].as_str().unwrap_or_default(),
        sent["reply"].as_str().unwrap_or_default(),
    );
    let value = current(&state).await?;
    Ok(console::page(
        &me,
        Nav::Settings,
        "Settings",
        settings_page(&me, &value, Some(&note)),
    )
    .into_response())
}

/// `GET /web/oplog`: who changed what, newest first.
pub async fn oplog(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Query(query): Query<PageQuery>,
) -> Result<Markup, WebError> {
    let list = query.list();
    let page = console::run(&state, move |services| {
        Ok(services.policy.read()?.oplog(&list)?)
    })
    .await?;
    let rows = page
        .items
        .iter()
        .map(|e| {
            html! { tr {
                td.nowrap { (layout::time(&e.at)) }
                td { (layout::shown(&e.actor)) }
                td { (e.action) }
                td { (e.kind) }
                td { (layout::shown(&e.name)) }
                td { (e.fields.join(", ")) }
                td { (e.version) }
            } }
        })
        .collect();
    let body = html! {
        h1 { "Operation log" }
        (forms::search("/web/oplog", &query.q))
        (forms::table("oplog", &["When", "Who", "Action", "Kind", "Name", "Fields", "Version"], rows))
        (layout::pager("/web/oplog", &[("q", query.q.clone())], query.page, page.items.len(), page.total))
    };
    Ok(console::page(&me, Nav::OpLog, "Operation log", body))
}
