//! The admin REST API under `/api/v1` (JSON), and its OpenAPI document at
//! `/api/openapi.json`.
//!
//! Every route is declared once, in [`routes::table`]: the router and the
//! OpenAPI document are both built from that table. Every request but the
//! OpenAPI document needs `Authorization: Bearer <token>` whose role
//! (`auditor` < `operator` < `admin`, see [`Scope`]) is at least the
//! route's (`x-required-role` in the OpenAPI document). Errors are `{"error": "..."}` with the status that
//! says what to do: 400 fix the request, 401 send a token, 403 use a token
//! with a higher role, 404 no such entity (or route), 405 wrong method, 409 already
//! exists, 422 the change would make the policy invalid (jms-core's
//! message names the entity and field).
//!
//! The sync routes (`/api/v1/sync/...`) take no bearer token: enrollment
//! carries a one-time token, the rest a bastion's request signature.

pub(crate) mod audit;
pub(crate) mod error;
pub(crate) mod extract;
mod fleet;
mod jobs;
pub(crate) mod live;
pub(crate) mod nodes_accounts;
pub mod openapi;
pub(crate) mod resources;
pub mod routes;
mod schemas;
mod sync;
pub(crate) mod system;
pub(crate) mod views;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;

pub use error::ApiError;

use crate::error::AdminError;
use crate::services::Services;
use crate::store::Scope;

/// Largest request body (a whole policy for `PUT /api/v1/policy`).
pub(crate) const BODY_LIMIT: usize = 64 << 20;

/// Largest body of a public form (web login, set password, forgot
/// password): anyone may send them, and they hold a few short fields.
pub(crate) const PUBLIC_FORM_LIMIT: usize = 16 << 10;

/// What every handler gets: the API serves every service.
#[derive(Clone)]
pub struct AppState {
    pub(crate) services: Services,
}

/// Who is calling: set by the auth layer from the bearer token.
#[derive(Clone, Debug)]
pub struct Actor {
    /// `token 3 (ci)`: written to the operation log.
    pub name: String,
    pub scope: Scope,
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Services) -> Result<T, AdminError> + Send + 'static,
) -> Result<T, ApiError> {
    let services = state.services.clone();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| work(&services))).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("worker failed: {e}"))),
    }
}

/// The API's routes (`/api/...`); `crate::app` merges them with the
/// other routers and adds the fallbacks and outer layers.
pub fn router(services: &Services) -> Router {
    let state = AppState {
        services: services.clone(),
    };
    let (public, private): (Vec<_>, Vec<_>) = routes::table()
        .into_iter()
        .partition(|r| r.auth != routes::Auth::Token);
    let mut app = Router::new();
    for route in private {
        let role = route.role;
        let handler =
            route
                .handler
                .route_layer(middleware::from_fn(move |request: Request, next: Next| {
                    require(role, request, next)
                }));
        app = app.route(route.path, handler);
    }
    app = app.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    for route in public {
        let handler = if route.auth == routes::Auth::Bastion {
            // Every answer to a signed request is signed back.
            route.handler.layer(middleware::from_fn_with_state(
                state.clone(),
                sync::sign_answers,
            ))
        } else {
            route.handler
        };
        app = app.route(route.path, handler);
    }
    app.with_state(state)
}

/// `GET /api/openapi.json`: the document built from the route table
/// (which lists this route too; the table names this handler, the document
/// reads the table).
async fn openapi_json() -> axum::Json<serde_json::Value> {
    static DOCUMENT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(DOCUMENT.get_or_init(openapi::document).clone())
}

/// Checks the bearer token and its scope; records the actor.
async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    let Some(token) = token else {
        return ApiError::unauthorized(
            "missing token: send `Authorization: Bearer <token>` (jms-server token create)",
        )
        .into_response();
    };
    let row = match blocking(&state, move |services| services.tokens.authenticate(&token)).await {
        Ok(Some(row)) => row,
        Ok(None) => return ApiError::unauthorized("unknown or revoked token").into_response(),
        Err(e) => return e.into_response(),
    };
    request.extensions_mut().insert(Actor {
        name: format!("token {} ({})", row.id, row.name),
        scope: row.scope,
    });
    next.run(request).await
}

/// Refuses a caller whose role is below `role` (after [`authenticate`]).
async fn require(role: Scope, request: Request, next: Next) -> Response {
    let Some(actor) = request.extensions().get::<Actor>() else {
        return ApiError::internal("a route without authentication").into_response();
    };
    if actor.scope < role {
        return ApiError::from(AdminError::Forbidden(format!(
            "{} has the {} role{}: {} {} needs {role}",
            actor.name,
            actor.scope,
            if actor.scope == Scope::Auditor {
                " (read-only)"
            } else {
                ""
            },
            request.method(),
            request.uri().path()
        )))
        .into_response();
    }
    next.run(request).await
}

/// A span per request (with its id) and one log line when it ends.
pub(crate) async fn log_request(request: Request, next: Next) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::Instrument;
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "request",
        id,
        method = %request.method(),
        path = request.uri().path()
    );
    async move {
        let started = std::time::Instant::now();
        let response = next.run(request).await;
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "done"
        );
        response
    }
    .instrument(span)
    .await
}
