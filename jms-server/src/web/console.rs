//! The admin console's bridge to the admin API: every write a console page
//! makes calls the very handler its REST route calls (`crate::api`), as
//! the signed-in web admin, after the same role check that route has
//! ([`crate::api::routes::role_of`]). So the checks, the operation log
//! and the one-line error messages are the API's; a page only turns form
//! fields into the API's body.

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use jms_core::model::PolicyDocument;
use serde::Deserialize;

use super::auth::WebAdmin;
use super::{WebError, WebState};
use crate::api::{routes, Actor, ApiError, AppState};
use crate::store::Scope;

impl From<ApiError> for WebError {
    fn from(e: ApiError) -> Self {
        if e.status == StatusCode::INTERNAL_SERVER_ERROR {
            // The API logged the detail already.
            return WebError::Internal(e.message);
        }
        WebError::Api(e.status, e.message)
    }
}

impl WebState {
    /// The API's state, to call its handlers.
    pub(super) fn api(&self) -> State<AppState> {
        State(self.services.api.clone())
    }
}

/// Whether `me` may make the change the API route `method api_path`
/// makes.
pub fn may(me: &WebAdmin, method: Method, api_path: &str) -> bool {
    routes::role_of(&method, api_path).is_some_and(|role| me.role >= role)
}

/// The API actor `me` writes as, when her role reaches the API route
/// `method api_path`'s; 403 otherwise, as the API answers a token.
pub fn actor(
    me: &WebAdmin,
    method: Method,
    api_path: &str,
) -> Result<axum::Extension<Actor>, WebError> {
    let Some(role) = routes::role_of(&method, api_path) else {
        return Err(WebError::Internal(format!(
            "the console names no API route {method} {api_path}"
        )));
    };
    if me.role < role {
        return Err(WebError::Forbidden(format!(
            "web admin {} has the {} role{}: {method} {api_path} needs {role}",
            me.username,
            me.role,
            if me.role == Scope::Auditor {
                " (read-only)"
            } else {
                ""
            },
        )));
    }
    Ok(axum::Extension(Actor {
        name: format!("web admin {}", me.username),
        scope: me.role,
    }))
}

/// Refuses every console write (POST) of an auditor, whatever the page:
/// she sees no write control and may use none.
pub async fn auditors_read_only(request: Request, next: Next) -> Response {
    let auditor = request
        .extensions()
        .get::<WebAdmin>()
        .is_some_and(|me| me.role == Scope::Auditor);
    if auditor && request.method() == Method::POST {
        let me = request.extensions().get::<WebAdmin>().expect("checked");
        return WebError::Forbidden(format!(
            "web admin {} has the auditor role (read-only): no change may be made",
            me.username
        ))
        .into_response();
    }
    next.run(request).await
}

/// What a write did, shown on the page it leads to (fixed texts: a link
/// cannot make the console say anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Note {
    Created,
    Saved,
    Deleted,
    LinkSent,
    Unlocked,
}

impl Note {
    pub fn text(self) -> &'static str {
        match self {
            Note::Created => "Created.",
            Note::Saved => "Saved.",
            Note::Deleted => "Deleted.",
            Note::LinkSent => "A set-password link was mailed.",
            Note::Unlocked => "Her lockout is lifted on every bastion at its next control poll.",
        }
    }

    fn code(self) -> &'static str {
        match self {
            Note::Created => "created",
            Note::Saved => "saved",
            Note::Deleted => "deleted",
            Note::LinkSent => "link-sent",
            Note::Unlocked => "unlocked",
        }
    }
}

/// `?q=&page=&note=` of a list or entity page.
#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub page: u64,
    pub note: Option<Note>,
}

impl PageQuery {
    pub fn note(&self) -> Option<&'static str> {
        self.note.map(Note::text)
    }

    /// The store query for this page.
    pub fn list(&self) -> crate::store::ListQuery {
        crate::store::ListQuery {
            limit: super::layout::PAGE_SIZE,
            offset: self
                .page
                .saturating_mul(u64::from(super::layout::PAGE_SIZE)),
            q: Some(self.q.trim().to_string()).filter(|q| !q.is_empty()),
        }
    }
}

/// 303 to `path` with `note` to show there.
pub fn done(path: &str, note: Note) -> Response {
    let sep = if path.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{path}{sep}note={}", note.code())).into_response()
}

/// The names a form offers to pick from.
#[derive(Debug, Default)]
pub struct Names {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub nodes: Vec<String>,
    pub assets: Vec<String>,
    /// The virtual accounts, then every account name in use.
    pub accounts: Vec<String>,
}

impl Names {
    pub fn of(doc: &PolicyDocument) -> Names {
        use jms_core::model::alias;
        let mut accounts: Vec<String> = doc
            .assets
            .iter()
            .flat_map(|a| a.accounts.iter().map(|acc| acc.name.clone()))
            .collect();
        accounts.sort();
        accounts.dedup();
        let mut all: Vec<String> = [alias::ALL, alias::INPUT, alias::USER, alias::ANON]
            .iter()
            .map(|s| s.to_string())
            .collect();
        all.extend(accounts);
        let mut nodes = doc.nodes.clone();
        nodes.sort();
        Names {
            users: doc.users.iter().map(|u| u.username.clone()).collect(),
            groups: doc.user_groups.iter().map(|g| g.name.clone()).collect(),
            nodes,
            assets: doc.assets.iter().map(|a| a.name.clone()).collect(),
            accounts: all,
        }
    }
}

/// The whole policy without secrets, off the async threads.
pub async fn document(state: &WebState) -> Result<PolicyDocument, WebError> {
    super::blocking(state, |services| {
        services.api.services.policy.document(false)
    })
    .await
}

/// A console page in the common frame.
pub fn page(
    me: &WebAdmin,
    nav: super::layout::Nav,
    title: &str,
    body: maud::Markup,
) -> maud::Markup {
    super::layout::page(&super::layout::Page {
        title,
        admin: Some(&me.username),
        nav: Some(nav),
        body,
    })
}

/// One page of a policy collection (`q` searches it), as the API lists it.
pub async fn list_of<R: crate::api::resources::Resource>(
    state: &WebState,
    query: &PageQuery,
) -> Result<crate::store::Page<R::View>, WebError> {
    let list = query.list();
    super::blocking(state, move |services| {
        Ok(R::list(&*services.api.services.policy.read()?, &list)?)
    })
    .await
}

/// One entity of a policy collection as the API reads it, or 404.
pub async fn view_of<R: crate::api::resources::Resource>(
    state: &WebState,
    key: String,
) -> Result<R::View, WebError> {
    super::blocking(state, move |services| {
        R::view(&*services.api.services.policy.read()?, &key)?
            .ok_or_else(|| crate::api::resources::not_found::<R>(&key))
    })
    .await
}

/// The JSON `value` read as the model type `T` (a form's fields in the
/// policy-file form); a mistake is a one-line 400.
pub fn model<T: serde::de::DeserializeOwned>(
    what: &str,
    value: serde_json::Value,
) -> Result<T, WebError> {
    serde_json::from_value(value).map_err(|e| WebError::BadRequest(format!("{what}: {e}")))
}

/// A JSON object as a merge patch.
pub fn patch(value: serde_json::Value) -> crate::api::extract::Patch {
    match value {
        serde_json::Value::Object(map) => crate::api::extract::Patch(map),
        _ => crate::api::extract::Patch(serde_json::Map::new()),
    }
}

/// Runs store work on the server's services off the async threads.
pub async fn run<T: Send + 'static>(
    state: &WebState,
    work: impl FnOnce(&crate::services::Services) -> Result<T, crate::error::AdminError>
        + Send
        + 'static,
) -> Result<T, WebError> {
    super::blocking(state, move |services| work(&services.api.services)).await
}
