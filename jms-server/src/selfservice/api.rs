//! The admin API side of self-service (routes in `crate::api::routes`):
//!
//! - `POST /api/v1/users`: the usual create; when the new user has an email
//!   address and no password, she is mailed a set-password link and the
//!   answer carries `password_link` (`{"sent": true, "to", "expires_at"}`
//!   or `{"sent": false, "error"}`: the user exists either way).
//! - `POST /api/v1/users/{username}/password-link`: mail her a new link
//!   (her older links stop working).
//! - `POST /api/v1/settings/mail/test {"to": ADDRESS}`: send a test message
//!   with the mail settings.
//!
//! SMTP failures answer 502 with the step that failed (connect, STARTTLS,
//! authentication, delivery) and the server's words; mail switched off or
//! incomplete settings answer 409.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jms_core::model::User;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::links::{send_link, LinkError, LinkSent};
use crate::api::extract::{Body, PathParams};
use crate::api::{resources, Actor, ApiError, AppState};
use crate::mail::{self, MailError, Outgoing};
use crate::store::Purpose;

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Admin(e) => e.into(),
            LinkError::Mail(e) => e.into(),
            e @ (LinkError::Disabled | LinkError::NoEmail(_)) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
        }
    }
}

impl From<MailError> for ApiError {
    fn from(e: MailError) -> Self {
        let status = match e {
            MailError::Settings(_) => StatusCode::CONFLICT,
            MailError::Smtp { .. } => StatusCode::BAD_GATEWAY,
        };
        ApiError::new(status, e.to_string())
    }
}

fn sent_view(sent: &LinkSent) -> Value {
    json!({"username": sent.username, "sent_to": sent.to, "expires_at": sent.expires_at})
}

/// `POST /api/v1/users`.
pub async fn create_user(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(user): Body<User>,
) -> Result<Response, ApiError> {
    let wants_link =
        user.password_hash.is_none() && user.email.as_deref().is_some_and(|e| !e.trim().is_empty());
    let username = user.username.clone();
    let (status, Json(view)) =
        resources::create::<User>(State(state.clone()), Extension(actor.clone()), Body(user))
            .await?;
    let mut body = serde_json::to_value(&view).map_err(|e| ApiError::internal(e.to_string()))?;
    if wants_link {
        let link = match send_link(
            state.services.links.clone(),
            actor.name,
            username,
            Purpose::Welcome,
        )
        .await
        {
            Ok(sent) => json!({"sent": true, "to": sent.to, "expires_at": sent.expires_at}),
            Err(e) => json!({"sent": false, "error": e.to_string()}),
        };
        body["password_link"] = link;
    }
    Ok((status, Json(body)).into_response())
}

/// `POST /api/v1/users/{username}/password-link`.
pub async fn send_password_link(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(username): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let sent = send_link(
        state.services.links.clone(),
        actor.name,
        username,
        Purpose::Reset,
    )
    .await?;
    Ok(Json(sent_view(&sent)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailTest {
    /// Where the test message goes.
    to: String,
}

/// `POST /api/v1/settings/mail/test`.
pub async fn test_mail(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(body): Body<MailTest>,
) -> Result<Json<Value>, ApiError> {
    let to = mail::mailbox(&body.to).map_err(|e| ApiError::bad_request(format!("to: {e}")))?;
    let settings = super::blocking(&state.services.policy, |policy| {
        Ok::<_, ApiError>(policy.settings_with_mail_password()?)
    })
    .await?;
    let outgoing = Outgoing {
        to: to.clone(),
        subject: "jms: test message".to_string(),
        text: format!(
            "This is a test message from jms-server, sent by {}.\n\
             The mail settings work: set-password links will reach users.\n",
            actor.name
        ),
    };
    let sent = mail::send(&settings.mail, outgoing).await?;
    Ok(Json(json!({
        "sent_to": to.email.to_string(),
        "server": sent.server,
        "reply": sent.reply,
    })))
}

/// Schemas of these routes' bodies, for the OpenAPI document.
pub fn schemas() -> Map<String, Value> {
    let string = || json!({"type": "string"});
    let time = || json!({"type": "string", "format": "date-time"});
    let mut schemas = Map::new();
    schemas.insert(
        "MailTest".to_string(),
        json!({"type": "object", "properties": {"to": string()}, "required": ["to"],
               "additionalProperties": false}),
    );
    schemas.insert(
        "MailSent".to_string(),
        json!({"type": "object", "properties": {
            "sent_to": string(), "server": string(),
            "reply": {"type": "string", "description": "The SMTP server's last reply"}},
            "required": ["sent_to", "server", "reply"]}),
    );
    schemas.insert(
        "PasswordLinkSent".to_string(),
        json!({"type": "object", "properties": {
            "username": string(), "sent_to": string(), "expires_at": time()},
            "required": ["username", "sent_to", "expires_at"]}),
    );
    schemas
}
