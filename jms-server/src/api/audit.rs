//! The audit trail over HTTP: sessions, commands, transfers and recordings
//! for administrators (bearer token, read scope is enough), and the
//! resumable recording upload for bastions (signed like every sync route).
//!
//! Admin routes (JSON shapes in `super::schemas`, [`schemas`]):
//! - `GET /api/v1/sessions` — `SessionPage`, newest first; filters `user`,
//!   `asset`, `account` (exact), `since`, `until` (on the start),
//!   `online=true|false`, and `limit`, `offset`.
//! - `GET /api/v1/sessions/{session}` — `SessionDetail`: the session, its
//!   commands and transfers in order, its recording's size and SHA-256.
//! - `GET /api/v1/sessions/{session}/recording` — the asciicast v2 file
//!   (`application/x-asciicast`), streamed; 404 JSON error when there is
//!   no complete recording.
//! - `GET /api/v1/commands` — `CommandPage`, newest first; filters `user`,
//!   `asset`, `session`, `q` (substring of the command), `decision`,
//!   `since`, `until`. `offset_secs` is the time since the session started
//!   (where to seek the replay).
//! - `GET /api/v1/transfers` — `TransferPage`, newest first; filters
//!   `user`, `asset`, `session`, `operation`, `since`, `until`.
//!
//! Sync routes (`crate::recordings` has the rules):
//! - `GET /api/v1/sync/recordings/{session}` — `RecordingUpload`: the
//!   offset to resume at.
//! - `PUT /api/v1/sync/recordings/{session}?offset=N` — a chunk (raw
//!   bytes, at most 1 MiB), appended only at the current offset: 409 with
//!   the current `offset` otherwise.
//! - `POST /api/v1/sync/recordings/{session}/complete` — `{"size", "sha256"}`:
//!   the whole file is checked; 422 discards it (start again from 0).
//!
//! Unknown query parameters and bad values are 400 with a JSON error.

use std::io::Read;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::extract::{Params, PathParams, DEFAULT_LIMIT, MAX_LIMIT};
use super::views::PageView;
use super::{ApiError, AppState};
use crate::error::AdminError;
use crate::recordings::Recordings;
use crate::recordings::{check_session_id, RecordingError, RecordingReader, UploadState};
use crate::store::{
    CommandQuery, CommandRecord, ListQuery, Page, ReadTx, SessionQuery, SessionRecord,
    TransferQuery, TransferRecord,
};

/// Most commands (and transfers) a session's detail lists; the rest are
/// paged through `/api/v1/commands?session=` (`/api/v1/transfers?session=`).
pub const DETAIL_LIMIT: u32 = 10_000;

// ---- views -----------------------------------------------------------------

/// A session as the API shows it.
#[derive(Debug, Serialize)]
pub struct SessionView {
    pub id: String,
    /// The bastion's name.
    pub bastion: Option<String>,
    pub user: String,
    pub asset: String,
    pub account: String,
    /// The login used on the target.
    pub login: Option<String>,
    /// `shell`, `exec`, `sftp`, `scp`, `rsync`.
    pub kind: Option<String>,
    pub protocol: Option<String>,
    /// The engineer's address.
    pub source_ip: Option<String>,
    /// An exec session's command.
    pub command: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `online`, `ended` or `denied`.
    pub status: &'static str,
    pub online: bool,
    pub duration_secs: Option<f64>,
    pub exit_status: Option<i32>,
    /// Why it ended abnormally, or why it was refused.
    pub reason: Option<String>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub has_recording: bool,
    pub recording_truncated: bool,
    pub command_count: u64,
    pub transfer_count: u64,
}

impl From<SessionRecord> for SessionView {
    fn from(s: SessionRecord) -> Self {
        let online = s.ended_at.is_none() && !s.denied;
        let status = if s.denied {
            "denied"
        } else if online {
            "online"
        } else {
            "ended"
        };
        let duration_secs = match (s.duration_ms, s.ended_at) {
            (Some(ms), _) => Some(ms as f64 / 1000.0),
            (None, Some(end)) => Some(seconds_between(s.started_at, end)),
            (None, None) => None,
        };
        SessionView {
            id: s.id,
            bastion: s.bastion,
            user: s.user,
            asset: s.asset,
            account: s.account,
            login: s.login,
            kind: s.kind,
            protocol: s.protocol,
            source_ip: s.client,
            command: s.command,
            started_at: s.started_at,
            ended_at: s.ended_at,
            status,
            online,
            duration_secs,
            exit_status: s.exit_status,
            reason: s.reason,
            bytes_in: s.bytes_in,
            bytes_out: s.bytes_out,
            has_recording: s.has_recording,
            recording_truncated: s.recording_truncated,
            command_count: s.command_count,
            transfer_count: s.transfer_count,
        }
    }
}

/// Seconds from `from` to `to`, never negative, to the millisecond.
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_milliseconds().max(0)) as f64 / 1000.0
}

#[derive(Debug, Serialize)]
pub struct CommandView {
    pub id: i64,
    pub session: String,
    pub at: DateTime<Utc>,
    /// Seconds since the session started: where to seek the replay.
    pub offset_secs: f64,
    pub user: String,
    pub asset: String,
    pub account: String,
    pub command: String,
    /// `interactive` or `exec`.
    pub kind: String,
    /// `allow` or `deny`.
    pub decision: String,
    /// The command filter that decided, when one did.
    pub filter: Option<String>,
    /// Who typed it when a write joiner of a shared session did (in part):
    /// `bob`, or `alice,bob`; null when the session's owner alone did.
    pub typed_by: Option<String>,
}

impl From<CommandRecord> for CommandView {
    fn from(c: CommandRecord) -> Self {
        CommandView {
            id: c.id,
            offset_secs: seconds_between(c.session_started_at, c.at),
            session: c.session,
            at: c.at,
            user: c.user,
            asset: c.asset,
            account: c.account,
            command: c.command,
            kind: c.kind,
            decision: c.decision,
            filter: c.filter,
            typed_by: c.typed_by,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RecordingView {
    pub size: u64,
    pub sha256: String,
}

/// Session `id` with its commands and transfers in order (at most
/// [`DETAIL_LIMIT`] of each): what a session's detail shows, here and in
/// the audit web.
pub(crate) fn session_activity(
    tx: &dyn ReadTx,
    id: &str,
) -> Result<(SessionRecord, Page<CommandRecord>, Page<TransferRecord>), AdminError> {
    let Some(session) = tx.session(id)? else {
        return Err(AdminError::NotFound(format!("no session `{id}`")));
    };
    let commands = tx.commands(
        &CommandQuery {
            session: Some(id.to_string()),
            limit: DETAIL_LIMIT,
            ..Default::default()
        },
        true,
    )?;
    let transfers = tx.transfers(
        &TransferQuery {
            session: Some(id.to_string()),
            limit: DETAIL_LIMIT,
            ..Default::default()
        },
        true,
    )?;
    Ok((session, commands, transfers))
}

/// `GET /api/v1/sessions/{session}`.
#[derive(Debug, Serialize)]
pub struct SessionDetail {
    #[serde(flatten)]
    pub session: SessionView,
    /// In the order typed (at most [`DETAIL_LIMIT`]).
    pub commands: Vec<CommandView>,
    /// In order (at most [`DETAIL_LIMIT`]).
    pub transfers: Vec<TransferRecord>,
    /// The complete recording, if any.
    pub recording: Option<RecordingView>,
}

// ---- query parameters ----------------------------------------------------------

/// An optional filter value; empty means absent (as HTML forms send it).
fn given(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.is_empty())
}

fn time_param(name: &str, value: &Option<String>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match given(value) {
        None => Ok(None),
        Some(text) => jms_core::model::Timestamp::parse(&text)
            .map(|t| Some(t.0))
            .map_err(|e| ApiError::bad_request(format!("{name}: {e}"))),
    }
}

fn page_params(limit: Option<u32>, offset: Option<u64>) -> Result<(u32, u64), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is outside 1..={MAX_LIMIT}"
        )));
    }
    let offset = offset.unwrap_or(0);
    if offset > i64::MAX as u64 {
        return Err(ApiError::bad_request(format!(
            "offset {offset} is too large"
        )));
    }
    Ok((limit, offset))
}

fn one_of(name: &str, value: Option<String>, allowed: &[&str]) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(ApiError::bad_request(format!(
            "{name} `{v}`: expected one of {}",
            allowed.join(", ")
        ))),
        v => Ok(v),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionParams {
    limit: Option<u32>,
    offset: Option<u64>,
    user: Option<String>,
    asset: Option<String>,
    account: Option<String>,
    since: Option<String>,
    until: Option<String>,
    online: Option<String>,
}

impl SessionParams {
    fn query(&self) -> Result<SessionQuery, ApiError> {
        let (limit, offset) = page_params(self.limit, self.offset)?;
        let online = match given(&self.online).as_deref() {
            None => None,
            Some("true") => Some(true),
            Some("false") => Some(false),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "online `{other}`: expected true or false"
                )))
            }
        };
        Ok(SessionQuery {
            user: given(&self.user),
            asset: given(&self.asset),
            account: given(&self.account),
            since: time_param("since", &self.since)?,
            until: time_param("until", &self.until)?,
            online,
            limit,
            offset,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandParams {
    limit: Option<u32>,
    offset: Option<u64>,
    user: Option<String>,
    asset: Option<String>,
    session: Option<String>,
    q: Option<String>,
    decision: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl CommandParams {
    fn query(&self) -> Result<CommandQuery, ApiError> {
        let (limit, offset) = page_params(self.limit, self.offset)?;
        Ok(CommandQuery {
            user: given(&self.user),
            asset: given(&self.asset),
            session: given(&self.session),
            q: given(&self.q),
            decision: one_of("decision", given(&self.decision), &["allow", "deny"])?,
            since: time_param("since", &self.since)?,
            until: time_param("until", &self.until)?,
            limit,
            offset,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferParams {
    limit: Option<u32>,
    offset: Option<u64>,
    user: Option<String>,
    asset: Option<String>,
    session: Option<String>,
    operation: Option<String>,
    since: Option<String>,
    until: Option<String>,
}

impl TransferParams {
    fn query(&self) -> Result<TransferQuery, ApiError> {
        let (limit, offset) = page_params(self.limit, self.offset)?;
        Ok(TransferQuery {
            user: given(&self.user),
            asset: given(&self.asset),
            session: given(&self.session),
            operation: given(&self.operation),
            since: time_param("since", &self.since)?,
            until: time_param("until", &self.until)?,
            limit,
            offset,
        })
    }
}

fn list_query(limit: u32, offset: u64) -> ListQuery {
    ListQuery {
        limit,
        offset,
        q: None,
    }
}

// ---- admin handlers ------------------------------------------------------------------

/// `GET /api/v1/sessions`.
pub async fn list_sessions(
    State(state): State<AppState>,
    Params(params): Params<SessionParams>,
) -> Result<Json<PageView<SessionView>>, ApiError> {
    let query = params.query()?;
    super::blocking(&state, move |services| {
        let page = services.audit.read()?.sessions(&query)?;
        Ok(Json(PageView::new(
            page,
            &list_query(query.limit, query.offset),
            SessionView::from,
        )))
    })
    .await
}

/// `GET /api/v1/sessions/{session}`.
pub async fn get_session(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<SessionDetail>, ApiError> {
    super::blocking(&state, move |services| {
        let tx = services.audit.read()?;
        let (session, commands, transfers) = session_activity(&*tx, &id)?;
        let recording = tx.recording(&id)?.filter(|r| r.complete).and_then(|r| {
            Some(RecordingView {
                size: r.size?,
                sha256: r.sha256?,
            })
        });
        Ok(Json(SessionDetail {
            session: session.into(),
            commands: commands.items.into_iter().map(CommandView::from).collect(),
            transfers: transfers.items,
            recording,
        }))
    })
    .await
}

/// `GET /api/v1/commands`.
pub async fn list_commands(
    State(state): State<AppState>,
    Params(params): Params<CommandParams>,
) -> Result<Json<PageView<CommandView>>, ApiError> {
    let query = params.query()?;
    super::blocking(&state, move |services| {
        let page = services.audit.read()?.commands(&query, false)?;
        Ok(Json(PageView::new(
            page,
            &list_query(query.limit, query.offset),
            CommandView::from,
        )))
    })
    .await
}

/// `GET /api/v1/transfers`.
pub async fn list_transfers(
    State(state): State<AppState>,
    Params(params): Params<TransferParams>,
) -> Result<Json<PageView<TransferRecord>>, ApiError> {
    let query = params.query()?;
    super::blocking(&state, move |services| {
        let page = services.audit.read()?.transfers(&query, false)?;
        Ok(Json(PageView::new(
            page,
            &list_query(query.limit, query.offset),
            |transfer| transfer,
        )))
    })
    .await
}

/// Bytes of a file read off the async threads, one block at a time.
struct FileStream(tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>);

impl futures_core::Stream for FileStream {
    type Item = std::io::Result<Bytes>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Streams `file` (`size` bytes).
pub(crate) fn stream_file(mut file: Box<dyn Read + Send>) -> HttpBody {
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let block = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => Ok(Bytes::copy_from_slice(&buffer[..n])),
                Err(e) => Err(e),
            };
            let failed = block.is_err();
            if sender.blocking_send(block).is_err() || failed {
                break;
            }
        }
    });
    HttpBody::from_stream(FileStream(receiver))
}

/// `GET /api/v1/sessions/{session}/recording`.
pub async fn get_recording(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    let name = id.clone();
    let RecordingReader { reader, size } =
        recording_work(&state, move |recordings| recordings.open_recording(&id))
            .await
            .map_err(RecordingFailure::into_api)?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-asciicast".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.cast\""),
            ),
        ],
        stream_file(reader),
    )
        .into_response())
}

// ---- sync: recording upload ------------------------------------------------------------

/// A refused recording request: its status, and the offset to resume at
/// where that helps.
struct RecordingFailure(RecordingError);

impl RecordingFailure {
    fn status(&self) -> StatusCode {
        match &self.0 {
            RecordingError::BadInput(_) => StatusCode::BAD_REQUEST,
            RecordingError::Forbidden(_) => StatusCode::FORBIDDEN,
            RecordingError::NotFound(_) => StatusCode::NOT_FOUND,
            RecordingError::Conflict { .. } => StatusCode::CONFLICT,
            RecordingError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RecordingError::Mismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RecordingError::Io { .. }
            | RecordingError::Storage(_)
            | RecordingError::Store(_)
            | RecordingError::NoDirectory => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn into_api(self) -> ApiError {
        match self.status() {
            StatusCode::INTERNAL_SERVER_ERROR => ApiError::internal(self.0.to_string()),
            status => ApiError::new(status, self.0.to_string()),
        }
    }
}

impl IntoResponse for RecordingFailure {
    fn into_response(self) -> Response {
        let offset = match &self.0 {
            RecordingError::Conflict { offset, .. } => Some(*offset),
            RecordingError::Mismatch(_) => Some(0),
            _ => None,
        };
        let status = self.status();
        match offset {
            Some(offset) => (
                status,
                Json(json!({"error": self.0.to_string(), "offset": offset})),
            )
                .into_response(),
            None => self.into_api().into_response(),
        }
    }
}

/// Runs recording work off the async threads.
async fn recording_work<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Recordings) -> Result<T, RecordingError> + Send + 'static,
) -> Result<T, RecordingFailure> {
    let recordings = state.services.recordings.clone();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| work(&recordings))).await {
        Ok(result) => result.map_err(RecordingFailure),
        Err(e) => Err(RecordingFailure(RecordingError::Io {
            path: "recordings".into(),
            source: std::io::Error::other(format!("worker failed: {e}")),
        })),
    }
}

/// `GET /api/v1/sync/recordings/{session}` (signed).
pub async fn upload_state(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
    PathParams(session): PathParams<String>,
) -> Result<Json<UploadState>, Response> {
    let bastion = super::sync::signed(&state, &method, &uri, &headers_in, Bytes::new())
        .await
        .map_err(IntoResponse::into_response)?;
    recording_work(&state, move |recordings| {
        recordings.recording_state(&bastion, &session)
    })
    .await
    .map(Json)
    .map_err(IntoResponse::into_response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkParams {
    /// Where the chunk goes: the bytes the server holds.
    offset: u64,
}

/// `PUT /api/v1/sync/recordings/{session}?offset=N` (signed): appends the
/// body at `offset`.
pub async fn upload_chunk(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
    PathParams(session): PathParams<String>,
    body: Bytes,
) -> Result<Json<Value>, Response> {
    let bastion = super::sync::signed(&state, &method, &uri, &headers_in, body.clone())
        .await
        .map_err(IntoResponse::into_response)?;
    let axum::extract::Query(params) = axum::extract::Query::<ChunkParams>::try_from_uri(&uri)
        .map_err(|e| ApiError::bad_request(e.body_text()).into_response())?;
    let offset = recording_work(&state, move |recordings| {
        recordings.append_recording(&bastion, &session, params.offset, &body)
    })
    .await
    .map_err(IntoResponse::into_response)?;
    Ok(Json(json!(jms_sync::recording::Offset { offset })))
}

use jms_sync::recording::CompleteRequest;

/// `POST /api/v1/sync/recordings/{session}/complete` (signed).
pub async fn complete_upload(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
    PathParams(session): PathParams<String>,
    body: Bytes,
) -> Result<Json<UploadState>, Response> {
    let bastion = super::sync::signed(&state, &method, &uri, &headers_in, body.clone())
        .await
        .map_err(IntoResponse::into_response)?;
    let request: CompleteRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("complete: {e}")).into_response())?;
    check_session_id(&session).map_err(|e| RecordingFailure(e).into_response())?;
    recording_work(&state, move |recordings| {
        recordings.complete_recording(&bastion, &session, request.size, &request.sha256)
    })
    .await
    .map(Json)
    .map_err(IntoResponse::into_response)
}

// ---- OpenAPI ------------------------------------------------------------------------------

/// Which filters a route takes (for the OpenAPI document).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditQuery {
    Sessions,
    Commands,
    Transfers,
    /// `offset` of a recording chunk.
    Chunk,
}

/// The query parameters of `kind`, as OpenAPI parameter objects.
pub fn query_parameters(kind: AuditQuery) -> Vec<Value> {
    let param = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description});
    let text = |name: &str, description: &str| param(name, json!({"type": "string"}), description);
    let time = |name: &str, description: &str| {
        param(
            name,
            json!({"type": "string", "description": "RFC 3339 (2027-12-31T00:00:00Z) or a date (2027-12-31)"}),
            description,
        )
    };
    let mut page = vec![
        param(
            "limit",
            json!({"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT}),
            "Page size",
        ),
        param(
            "offset",
            json!({"type": "integer", "minimum": 0, "default": 0}),
            "Rows to skip",
        ),
    ];
    let mut more = match kind {
        AuditQuery::Sessions => vec![
            text("user", "Only this jms user's sessions"),
            text("asset", "Only sessions on this asset"),
            text("account", "Only sessions as this account (its policy name)"),
            time("since", "Started at or after"),
            time("until", "Started before"),
            param(
                "online",
                json!({"type": "string", "enum": ["true", "false"]}),
                "Only sessions still going (true) or over (false)",
            ),
        ],
        AuditQuery::Commands => vec![
            text("user", "Only this jms user's commands"),
            text("asset", "Only commands on this asset"),
            text("session", "Only this session's commands"),
            text("q", "Case-insensitive substring of the command text"),
            param(
                "decision",
                json!({"type": "string", "enum": ["allow", "deny"]}),
                "Only allowed or only refused commands",
            ),
            time("since", "Run at or after"),
            time("until", "Run before"),
        ],
        AuditQuery::Transfers => vec![
            text("user", "Only this jms user's transfers"),
            text("asset", "Only transfers on this asset"),
            text("session", "Only this session's transfers"),
            text(
                "operation",
                "Only this operation (upload, download, delete, rename, mkdir, …)",
            ),
            time("since", "At or after"),
            time("until", "Before"),
        ],
        AuditQuery::Chunk => {
            page.clear();
            vec![json!({"name": "offset", "in": "query", "required": true,
                "schema": {"type": "integer", "minimum": 0},
                "description": "Where the chunk goes: must equal the bytes the server holds"})]
        }
    };
    page.append(&mut more);
    page
}

/// Responses of the audit routes beyond the ones every route gets.
pub fn extra_responses(operation_id: &str) -> Vec<(&'static str, &'static str)> {
    match operation_id {
        "uploadRecordingChunk" => vec![
            (
                "409",
                "Not at the current offset, or already complete: the body's `offset` says where to resume",
            ),
            ("413", "Chunk larger than 1 MiB, or recording too large"),
            ("403", "Another bastion's recording"),
        ],
        "completeRecording" => vec![
            (
                "409",
                "Nothing uploaded, or already complete with another size or SHA-256",
            ),
            (
                "422",
                "Size or SHA-256 mismatch: the upload was discarded, send it again from offset 0",
            ),
            ("403", "Another bastion's recording"),
        ],
        "getRecordingUpload" => vec![("403", "Another bastion's recording")],
        _ => Vec::new(),
    }
}

/// Schemas of the audit routes' bodies.
pub fn schemas() -> Map<String, Value> {
    let string = || json!({"type": "string"});
    let nullable = |kind: &str, description: &str| json!({"type": kind, "nullable": true, "description": description});
    let time = |description: &str| json!({"type": "string", "format": "date-time", "description": description});
    let object = |properties: Value, required: &[&str]| json!({"type": "object", "properties": properties, "required": required});
    let page = |item: &str| {
        object(
            json!({
                "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}},
                "total": {"type": "integer", "description": "Rows matching the filters in all"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
            }),
            &["items", "total", "limit", "offset"],
        )
    };
    let session_properties = json!({
        "id": {"type": "string", "description": "The bastion's session id (UUID)"},
        "bastion": nullable("string", "Name of the bastion that served it"),
        "user": {"type": "string", "description": "The jms user"},
        "asset": {"type": "string", "description": "Asset name (empty for an sftp session until its first transfer)"},
        "account": {"type": "string", "description": "Account name in the policy (root, @INPUT, …)"},
        "login": nullable("string", "The login used on the target"),
        "kind": {"type": "string", "nullable": true, "enum": ["shell", "exec", "sftp", "scp", "rsync", null]},
        "protocol": nullable("string", "ssh or sftp"),
        "source_ip": nullable("string", "The engineer's address"),
        "command": nullable("string", "An exec session's command"),
        "started_at": time("When the target session was up (before its session_start arrives: the earliest time its events imply)"),
        "ended_at": {"type": "string", "format": "date-time", "nullable": true},
        "status": {"type": "string", "enum": ["online", "ended", "denied"]},
        "online": {"type": "boolean", "description": "Neither ended nor denied"},
        "duration_secs": nullable("number", "Seconds from start to end"),
        "exit_status": nullable("integer", "The remote command's exit status"),
        "reason": nullable("string", "Why it ended abnormally, or why it was refused"),
        "bytes_in": nullable("integer", "Bytes from the engineer to the target"),
        "bytes_out": nullable("integer", "Bytes from the target to the engineer"),
        "has_recording": {"type": "boolean", "description": "A complete recording can be fetched at /api/v1/sessions/{session}/recording"},
        "recording_truncated": {"type": "boolean", "description": "The recording stopped at its size cap"},
        "command_count": {"type": "integer"},
        "transfer_count": {"type": "integer"},
    });
    let session_required = [
        "id",
        "bastion",
        "user",
        "asset",
        "account",
        "login",
        "kind",
        "protocol",
        "source_ip",
        "command",
        "started_at",
        "ended_at",
        "status",
        "online",
        "duration_secs",
        "exit_status",
        "reason",
        "bytes_in",
        "bytes_out",
        "has_recording",
        "recording_truncated",
        "command_count",
        "transfer_count",
    ];
    let mut detail_properties = session_properties.clone();
    let extra = json!({
        "commands": {"type": "array", "items": {"$ref": "#/components/schemas/CommandView"}, "description": "In the order typed (at most 10000; page with /api/v1/commands?session=)"},
        "transfers": {"type": "array", "items": {"$ref": "#/components/schemas/TransferView"}, "description": "In order (at most 10000)"},
        "recording": {"type": "object", "nullable": true, "properties": {"size": {"type": "integer"}, "sha256": string()}, "required": ["size", "sha256"], "description": "The complete recording, if any"},
    });
    detail_properties
        .as_object_mut()
        .expect("an object")
        .extend(extra.as_object().expect("an object").clone());
    let mut detail_required = session_required.to_vec();
    detail_required.extend(["commands", "transfers", "recording"]);
    let command = object(
        json!({
            "id": {"type": "integer"},
            "session": string(),
            "at": time("When it was typed (or requested, for exec)"),
            "offset_secs": {"type": "number", "minimum": 0, "description": "Seconds since the session started: where to seek the replay"},
            "user": string(),
            "asset": string(),
            "account": string(),
            "command": string(),
            "kind": {"type": "string", "description": "interactive or exec"},
            "decision": {"type": "string", "enum": ["allow", "deny"]},
            "filter": nullable("string", "The command filter that decided, when one did"),
            "typed_by": nullable("string", "Who typed it when a write joiner of a shared session did (in part): `bob` or `alice,bob`; null when the owner alone did"),
        }),
        &[
            "id",
            "session",
            "at",
            "offset_secs",
            "user",
            "asset",
            "account",
            "command",
            "kind",
            "decision",
            "filter",
            "typed_by",
        ],
    );
    let transfer = object(
        json!({
            "id": {"type": "integer"},
            "session": string(),
            "at": time("When it happened"),
            "user": string(),
            "asset": string(),
            "account": string(),
            "via": {"type": "string", "description": "sftp, scp or rsync"},
            "operation": {"type": "string", "description": "upload, download, delete, rename, mkdir, …"},
            "path": string(),
            "to": nullable("string", "A rename's or link's destination"),
            "size": nullable("integer", "Bytes moved"),
            "result": {"type": "string", "description": "ok, or why it failed or was refused"},
            "ok": {"type": "boolean"},
        }),
        &[
            "id",
            "session",
            "at",
            "user",
            "asset",
            "account",
            "via",
            "operation",
            "path",
            "to",
            "size",
            "result",
            "ok",
        ],
    );
    let mut schemas = Map::new();
    let mut add = |name: &str, schema: Value| {
        schemas.insert(name.to_string(), schema);
    };
    add("SessionView", object(session_properties, &session_required));
    add("SessionPage", page("SessionView"));
    add("SessionDetail", object(detail_properties, &detail_required));
    add("CommandView", command);
    add("CommandPage", page("CommandView"));
    add("TransferView", transfer);
    add("TransferPage", page("TransferView"));
    add(
        "Asciicast",
        json!({"type": "string", "format": "binary", "x-media-type": "application/x-asciicast",
            "description": "An asciicast v2 recording: a JSON header line, then [seconds, \"o\"|\"i\"|\"r\", text] lines"}),
    );
    add(
        "RecordingChunk",
        json!({"type": "string", "format": "binary", "maxLength": crate::recordings::MAX_CHUNK,
            "description": "Raw bytes of the recording from `offset` on (at most 1 MiB)"}),
    );
    add(
        "RecordingUpload",
        object(
            json!({
                "session": string(),
                "offset": {"type": "integer", "description": "Bytes the server holds: the next chunk goes here"},
                "complete": {"type": "boolean"},
                "sha256": nullable("string", "Of a complete recording"),
            }),
            &["session", "offset", "complete", "sha256"],
        ),
    );
    add(
        "ChunkAccepted",
        object(
            json!({"offset": {"type": "integer", "description": "Bytes the server now holds"}}),
            &["offset"],
        ),
    );
    add(
        "CompleteRecording",
        json!({"type": "object", "additionalProperties": false, "required": ["size", "sha256"], "properties": {
            "size": {"type": "integer", "minimum": 0, "description": "Total bytes"},
            "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$", "description": "Hex SHA-256 of the whole file"},
        }}),
    );
    schemas
}
