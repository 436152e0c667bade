//! Live sessions over HTTP (`crate::live` holds the state):
//!
//! - `POST /api/v1/sessions/{session}/kill` (admin token): the serving
//!   bastion ends it within moments; logged. 404 unknown, 409 over.
//! - `GET /api/v1/sessions/{session}/live` (any token: watching is
//!   reading): Server-Sent Events of its
//!   output as it happens — a data line `{"cols","rows","time","init"}`
//!   first (the screen so far), then `[time, "o", text]` per chunk (what
//!   the asciinema player's eventsource driver reads), and an `end` event
//!   `{"reason"}` when it is over.
//! - `GET /api/v1/sync/control?wait=S` (signed): a bastion's orders
//!   (`{"orders": [{"kind": "kill"|"watch", "session", "reason"}]}`), held
//!   up to `wait` seconds until there is one.
//! - `POST /api/v1/sync/live/{session}` (signed): a batch of a watched
//!   session's output (`{"size": [c, r], "init": "…"}` first, then
//!   `{"events": [[t, "o", text]…], "ended": bool, "reason"}`); answers
//!   `{"watching": bool}` — false tells the bastion to stop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jms_sync::live::{LiveAnswer, LiveBatch, MAX_BATCH_BYTES};
use jms_sync::queries::ControlQuery;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::extract::PathParams;
use super::{Actor, ApiError, AppState};
use crate::live::{LiveEvent, LiveService};

/// The longest a control request is held.
const MAX_CONTROL_WAIT: u64 = 60;
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KillRequest {
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/sessions/{session}/kill`.
pub async fn kill(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(session): PathParams<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: KillRequest = if body.iter().all(u8::is_ascii_whitespace) {
        KillRequest {
            reason: String::new(),
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("kill: {e}")))?
    };
    if request.reason.chars().count() > 500 {
        return Err(ApiError::bad_request("reason: at most 500 characters"));
    }
    let reason = request.reason.trim().to_string();
    let id = session.clone();
    let bastion = super::blocking(&state, move |services| {
        services.live.kill_session(&actor.name, &id, &reason)
    })
    .await?;
    Ok((
        axum::http::StatusCode::ACCEPTED,
        Json(json!({"session": session, "bastion": bastion, "status": "terminating"})),
    )
        .into_response())
}

/// `POST /api/v1/users/{username}/unlock`: every bastion lifts her
/// lockout at its next control poll, the portal at once.
pub async fn unlock(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(user): PathParams<String>,
) -> Result<Json<Value>, ApiError> {
    let name = user.clone();
    let bastions = super::blocking(&state, move |services| {
        let bastions = services.live.unlock_user(&actor.name, &name)?;
        services.portal.unlock(&name);
        Ok(bastions)
    })
    .await?;
    Ok(Json(json!({"user": user, "bastions": bastions})))
}

/// A watcher's SSE stream.
pub struct LiveStream {
    rx: mpsc::Receiver<LiveEvent>,
    done: bool,
    live: std::sync::Arc<LiveService>,
    session: String,
    /// When to check that the bastion still streams.
    check: Pin<Box<tokio::time::Sleep>>,
}

/// How often a watcher checks that its stream is alive.
const CHECK_EVERY: Duration = Duration::from_secs(5);

impl futures_core::Stream for LiveStream {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if self.check.as_mut().poll(cx).is_ready() {
            self.live.hub().refresh(&self.session);
            let next = tokio::time::Instant::now() + CHECK_EVERY;
            self.check.as_mut().reset(next);
            // Registers the new deadline with the waker.
            let _ = self.check.as_mut().poll(cx);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                let data = event.data().to_string();
                let sse = match event {
                    LiveEvent::End { .. } => {
                        self.done = true;
                        Event::default().event("end").data(data)
                    }
                    _ => Event::default().data(data),
                };
                Poll::Ready(Some(Ok(sse)))
            }
            // Dropped by the hub: this watcher lagged too far behind.
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(Some(Ok(Event::default()
                    .event("end")
                    .data(json!({"reason": "the live stream stopped"}).to_string()))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Why a watch could not start.
#[derive(Debug)]
pub enum WatchError {
    /// 404 unknown session, 409 over.
    Admin(crate::error::AdminError),
    /// 500.
    Worker(String),
}

impl From<WatchError> for ApiError {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Admin(e) => e.into(),
            WatchError::Worker(m) => ApiError::internal(m),
        }
    }
}

/// The SSE response for a watcher of `session`.
pub async fn watch_response(
    live: std::sync::Arc<LiveService>,
    session: String,
) -> Result<Response, WatchError> {
    let id = session.clone();
    let worker = live.clone();
    let bastion = tokio::task::spawn_blocking(move || worker.live_bastion(&id))
        .await
        .map_err(|e| WatchError::Worker(format!("worker failed: {e}")))?
        .map_err(WatchError::Admin)?;
    let rx = live.hub().watch(&bastion, &session);
    let stream = LiveStream {
        rx,
        done: false,
        live,
        session,
        check: Box::pin(tokio::time::sleep(CHECK_EVERY)),
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `GET /api/v1/sessions/{session}/live`.
pub async fn watch(
    State(state): State<AppState>,
    PathParams(session): PathParams<String>,
) -> Result<Response, ApiError> {
    Ok(watch_response(state.services.live.clone(), session).await?)
}

/// `GET /api/v1/sync/control` (signed).
pub async fn control(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
) -> Result<Json<jms_sync::control::ControlAnswer>, ApiError> {
    let bastion = super::sync::signed(&state, &method, &uri, &headers_in, Bytes::new()).await?;
    let params: ControlQuery =
        jms_sync::queries::decode(uri.query().unwrap_or("")).map_err(ApiError::bad_request)?;
    if params.wait > MAX_CONTROL_WAIT {
        return Err(ApiError::bad_request(format!(
            "wait: at most {MAX_CONTROL_WAIT} seconds"
        )));
    }
    let report = params.report().map_err(ApiError::bad_request)?;
    let address = peer.map(|Extension(ConnectInfo(addr))| addr.ip().to_string());
    let id = bastion.id;
    super::blocking(&state, move |services| {
        services
            .fleet
            .note_bastion(id, address.as_deref(), report.as_ref())
    })
    .await?;
    // Account jobs given to this bastion (on any instance) are read from
    // the database: before waiting, and when a job wakes the wait.
    let deliver = || {
        let jobs = state.services.jobs.clone();
        let name = bastion.name.clone();
        let transport = params.transport.clone();
        async move {
            tokio::task::spawn_blocking(move || jobs.deliver(&name, transport.as_deref()))
                .await
                .map_err(|e| ApiError::internal(format!("handing out jobs: {e}")))?
                .map_err(ApiError::from)
        }
    };
    let (mut jobs, mut secrets) = deliver().await?;
    let wait = if jobs.is_empty() { params.wait } else { 0 };
    let mut orders = state
        .services
        .live
        .hub()
        .take_orders(&bastion.name, Duration::from_secs(wait))
        .await;
    if jobs.is_empty() {
        (jobs, secrets) = deliver().await?;
    }
    orders.extend(jobs);
    Ok(Json(jms_sync::control::ControlAnswer { orders, secrets }))
}

/// `POST /api/v1/sync/live/{session}` (signed).
pub async fn push(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
    PathParams(session): PathParams<String>,
    body: Bytes,
) -> Result<Json<LiveAnswer>, ApiError> {
    if body.len() > MAX_BATCH_BYTES {
        return Err(ApiError::bad_request(format!(
            "live batch: at most {MAX_BATCH_BYTES} bytes"
        )));
    }
    let bastion = super::sync::signed(&state, &method, &uri, &headers_in, body.clone()).await?;
    let batch: LiveBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("live batch: {e}")))?;
    let answer = state
        .services
        .live
        .hub()
        .push(&bastion.name, &session, batch);
    Ok(Json(LiveAnswer {
        watching: answer == crate::live::PushAnswer::Watching,
    }))
}
