//! The sync API bastions call (`/api/v1/sync/...`) and the admin route that
//! creates enrollment tokens. Enrollment is authenticated by its one-time
//! token; bundle and events by the bastion's request signature (see
//! `crate::sync`), never by an API token. Every answer to an authenticated
//! request is signed by the server key for that request ([`sign_answers`]).

use std::borrow::Cow;

use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use jms_sync::queries::BundleQuery;
use serde::de::{Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::extract::Body;
use super::{Actor, ApiError, AppState};
use crate::services::Services;
use crate::store::{BastionRow, NewEvent};
use crate::sync::{headers, Answer, SignedRequest, SyncError, Verified};

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Unauthorized(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
            e @ SyncError::Revoked { .. } => ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()),
            SyncError::BadInput(m) => ApiError::bad_request(m),
            SyncError::Admin(e) => e.into(),
        }
    }
}

/// Runs sync work off the async threads.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Services) -> Result<T, SyncError> + Send + 'static,
) -> Result<T, ApiError> {
    let services = state.services.clone();
    let span = tracing::Span::current();
    match tokio::task::spawn_blocking(move || span.in_scope(|| work(&services))).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(e) => Err(ApiError::internal(format!("worker failed: {e}"))),
    }
}

tokio::task_local! {
    /// The request [`signed`] authenticated in this task, if any: its
    /// bastion id and nonce, what [`sign_answers`] binds the answer to.
    static AUTHENTICATED: std::sync::Mutex<Option<(i64, String)>>;
}

/// Layer of every bastion-signed route: signs the answer to a request
/// [`signed`] authenticated (whatever its status, 304 included) with the
/// server key, bound to that request (bastion, nonce, method, path,
/// query), its status, the version in [`headers::VERSION`] and its body
/// (`jms_sync::bundle::answer_message`). An answer to a request that was
/// not authenticated goes out unsigned: the bastion believes none.
pub(super) async fn sign_answers(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let (response, authenticated) = AUTHENTICATED
        .scope(std::sync::Mutex::new(None), async {
            let response = next.run(request).await;
            let authenticated =
                AUTHENTICATED.with(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take());
            (response, authenticated)
        })
        .await;
    let Some((bastion_id, nonce)) = authenticated else {
        return response;
    };
    let (mut parts, body) = response.into_parts();
    // Our own answer (a bundle, a JSON document): bounded by what the
    // handlers build.
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => {
            return ApiError::internal(format!("reading the answer to sign: {e}")).into_response()
        }
    };
    let version = parts
        .headers
        .get(headers::VERSION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let binding = jms_sync::bundle::AnswerBinding {
        bastion_id,
        nonce: &nonce,
        method: &method,
        path: &path,
        query: &query,
    };
    let signature =
        state
            .services
            .sync
            .sign_answer(&binding, parts.status.as_u16(), version, &body);
    parts.headers.insert(
        header::HeaderName::from_static(headers::ANSWER_SIGNATURE),
        HeaderValue::from_str(&signature).expect("hex is a header value"),
    );
    Response::from_parts(parts, HttpBody::from(body))
}

/// Checks the request signature and remembers its nonce; returns the
/// bastion. Its answer is then signed for it ([`sign_answers`]).
pub(super) async fn signed(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers_in: &HeaderMap,
    body: Bytes,
) -> Result<BastionRow, ApiError> {
    let verified = verified(state, method, uri, headers_in, body).await?;
    blocking(state, move |services| services.sync.remember(verified))
        .await
        .inspect_err(|_| forget_authenticated())
}

/// Checks the request signature, writing nothing: the handler remembers
/// the nonce in the transaction that acts on the request (a replay then
/// changes nothing). Its answer is signed for the bastion
/// ([`sign_answers`]) unless the nonce turns out replayed.
async fn verified(
    state: &AppState,
    method: &Method,
    uri: &Uri,
    headers_in: &HeaderMap,
    body: Bytes,
) -> Result<Verified, ApiError> {
    let header = |name: &str| {
        headers_in
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (bastion, timestamp, nonce, signature) = (
        header(headers::BASTION),
        header(headers::TIMESTAMP),
        header(headers::NONCE),
        header(headers::SIGNATURE),
    );
    let (method, path, query) = (
        method.to_string(),
        uri.path().to_string(),
        uri.query().unwrap_or("").to_string(),
    );
    let answer_nonce = nonce.clone();
    let checked = blocking(state, move |services| {
        let request = SignedRequest {
            method: &method,
            path: &path,
            query: &query,
            body: &body,
            bastion: bastion.as_deref(),
            timestamp: timestamp.as_deref(),
            nonce: nonce.as_deref(),
            signature: signature.as_deref(),
        };
        match services.sync.verify_bastion_request(&request) {
            Ok(verified) => Ok(Ok(verified)),
            // Signed by its (verified) key: the refusal is signed too, so
            // the bastion believes it and logs why.
            Err(SyncError::Revoked { id, name }) => Ok(Err((id, name))),
            Err(e) => Err(e),
        }
    })
    .await?;
    let (id, result) = match checked {
        // Signed by the bastion's key; over TLS it must also come with the
        // client certificate the CA issued for that key.
        Ok(verified) => match crate::tls::check_bastion_cert(&verified.bastion.public_key) {
            Ok(()) => (verified.bastion.id, Ok(verified)),
            Err(refusal) => {
                tracing::warn!(
                    alarm = "bastion_without_certificate",
                    bastion = verified.bastion.name,
                    "{refusal}"
                );
                (
                    verified.bastion.id,
                    Err(ApiError::new(
                        StatusCode::UNAUTHORIZED,
                        format!("bastion {}: {refusal}", verified.bastion.name),
                    )),
                )
            }
        },
        Err((id, name)) => (id, Err(ApiError::from(SyncError::Revoked { id, name }))),
    };
    // Outside a signing layer (a route not marked signed) the answer goes
    // out unsigned, and the bastion refuses it. (An authenticated request
    // always has its nonce.)
    if let Some(nonce) = answer_nonce {
        let _ = AUTHENTICATED.try_with(|slot| {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, nonce));
        });
    }
    result
}

/// A replayed nonce: its answer goes out unsigned, as any refused
/// request's.
fn forget_authenticated() {
    let _ = AUTHENTICATED.try_with(|slot| slot.lock().unwrap_or_else(|e| e.into_inner()).take());
}

// ---- admin: enrollment tokens ------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEnrollToken {
    /// Seconds the token stays valid (default 3600, at most 30 days).
    #[serde(default = "default_ttl")]
    ttl_seconds: u64,
    /// An enrolled bastion this token may give a new key (re-enrollment);
    /// without it, enrolling an existing name is refused (409).
    #[serde(default)]
    replace: Option<String>,
}

fn default_ttl() -> u64 {
    3600
}

/// `POST /api/v1/bastions/tokens`.
pub async fn create_enroll_token(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Body(body): Body<NewEnrollToken>,
) -> Result<Response, ApiError> {
    if !(1..=30 * 86_400).contains(&body.ttl_seconds) {
        return Err(ApiError::bad_request(
            "ttl_seconds: between 1 and 2592000 (30 days)",
        ));
    }
    let ttl = std::time::Duration::from_secs(body.ttl_seconds);
    let (token, expires_at) = super::blocking(&state, move |services| {
        services
            .sync
            .create_enroll_token(&actor.name, ttl, body.replace.as_deref())
    })
    .await?;
    // Over TLS the token carries the pin: `SECRET.SHA256-OF-THE-CA`.
    let token = match crate::tls::transport() {
        crate::tls::Transport::Tls { tls, .. } => format!("{token}.{}", tls.cert.pin()),
        crate::tls::Transport::Plain => token,
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": token, "expires_at": expires_at})),
    )
        .into_response())
}

// ---- enrollment ----------------------------------------------------------------

pub use jms_sync::enroll::EnrollRequest;

/// `POST /api/v1/sync/enroll`.
pub async fn enroll(
    State(state): State<AppState>,
    Body(request): Body<EnrollRequest>,
) -> Result<Json<Value>, ApiError> {
    let tls = match crate::tls::transport() {
        crate::tls::Transport::Tls { tls, .. } => Some(tls),
        crate::tls::Transport::Plain => None,
    };
    // The secret alone is checked: the pin after the dot is for the bastion.
    let token = request
        .token
        .split_once('.')
        .map_or(request.token.as_str(), |(secret, _)| secret)
        .to_string();
    let (id, server_key, server_id, client_cert) = blocking(&state, move |services| {
        // The name, key and token are checked by the enrollment first; the
        // certificate is for what it accepted (issuing cannot fail then).
        let id = services.sync.enroll(&token, &request)?;
        let client_cert = match &tls {
            Some(tls) => {
                let key = jms_sync::bundle::unhex(&request.public_key).unwrap_or_default();
                Some(
                    tls.authority
                        .issue_client(&request.bastion_name, &key)
                        .map_err(|e| SyncError::BadInput(e.to_string()))?,
                )
            }
            None => None,
        };
        let key = services.sync.server_public_key().to_vec();
        Ok((
            id,
            jms_sync::bundle::hex(&key),
            jms_sync::bundle::server_id(&key),
            client_cert,
        ))
    })
    .await?;
    Ok(Json(json!(jms_sync::enroll::Enrolled {
        bastion_id: id,
        server_public_key: server_key,
        server_id,
        client_cert,
    })))
}

/// `POST /api/v1/sync/certificate` (signed, over TLS with the current
/// client certificate): a new client certificate for the bastion's key
/// (renewal before the old one expires).
pub async fn renew_certificate(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
) -> Result<Json<jms_sync::enroll::CertificateRenewed>, ApiError> {
    let bastion = signed(&state, &method, &uri, &headers_in, Bytes::new()).await?;
    let crate::tls::Transport::Tls { tls, .. } = crate::tls::transport() else {
        return Err(ApiError::bad_request(
            "this server speaks plain HTTP (--insecure-http): no client certificates",
        ));
    };
    let cert = tls
        .authority
        .issue_client(&bastion.name, &bastion.public_key)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    tracing::info!(bastion = bastion.name, "client certificate renewed");
    Ok(Json(jms_sync::enroll::CertificateRenewed {
        client_cert: cert,
    }))
}

// ---- bundle --------------------------------------------------------------------

/// `GET /api/v1/sync/bundle?since=V&transport=KEY[&wait=S]` (signed): 304
/// (with the server's version) when `since` is current (after waiting up to `wait` seconds for a
/// change), else a signed delta from `since` or the full bundle, sealed to
/// `transport` (see `crate::sync`).
pub async fn bundle(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
) -> Result<Response, ApiError> {
    let verified = verified(&state, &method, &uri, &headers_in, Bytes::new()).await?;
    let params: Result<BundleQuery, _> = jms_sync::queries::decode(uri.query().unwrap_or(""));
    // The nonce (even of a request refused below: its replay is refused as
    // a replay), last contact and the version held: one transaction.
    let since = params.as_ref().ok().map(|p| p.since);
    let bastion = blocking(&state, move |services| {
        services.sync.remember_holding(verified, since)
    })
    .await
    .inspect_err(|_| forget_authenticated())?;
    let params = params.map_err(ApiError::bad_request)?;
    let transport = jms_sync::bundle::unhex(&params.transport)
        .filter(|k| k.len() == 32)
        .ok_or_else(|| ApiError::bad_request("transport: expected 64 hex digits (X25519)"))?;
    if params.wait > crate::sync::MAX_WAIT_SECS {
        return Err(ApiError::bad_request(format!(
            "wait: at most {} seconds",
            crate::sync::MAX_WAIT_SECS
        )));
    }
    let since = params.since;
    if params.wait > 0 {
        let current = blocking(&state, |services| Ok(services.policy.version()?)).await?;
        if since >= current {
            state
                .services
                .sync
                .wait_past(since, std::time::Duration::from_secs(params.wait))
                .await;
        }
    }
    let answer = blocking(&state, move |services| {
        services.sync.answer(&bastion, since)
    })
    .await?;
    let (signed, version, kind, from) = match answer {
        Answer::Current { version } => {
            // The version is signed with the 304 (see `sign_answers`).
            return Ok((
                StatusCode::NOT_MODIFIED,
                [(
                    header::HeaderName::from_static(headers::VERSION),
                    version.to_string(),
                )],
            )
                .into_response());
        }
        Answer::Delta { from, to, signed } => (signed, to, "delta", Some(from)),
        Answer::Full { version, signed } => (signed, version, "full", None),
    };
    let sealed = jms_sync::bundle::seal_for(&transport, &signed)
        .map_err(|e| ApiError::bad_request(format!("transport: {e}")))?;
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::HeaderName::from_static(headers::VERSION),
                version.to_string(),
            ),
            (
                header::HeaderName::from_static(headers::BUNDLE_KIND),
                kind.to_string(),
            ),
        ],
        sealed,
    )
        .into_response();
    if let Some(from) = from {
        response.headers_mut().insert(
            header::HeaderName::from_static(headers::FROM_VERSION),
            from.into(),
        );
    }
    Ok(response)
}

// ---- events --------------------------------------------------------------------

use jms_sync::event::{EventBatch, EventsAccepted};

/// `POST /api/v1/sync/events` (signed): `{"events": [...]}`, each event
/// as spooled (`id` is its idempotency key, `event` its kind, `time`).
/// Answers the keys now stored (new or stored before). The nonce, the
/// events and their projection are written in one transaction.
pub async fn events(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let verified = verified(&state, &method, &uri, &headers_in, body.clone()).await?;
    let answer = blocking(&state, move |services| {
        let events = parse_events(&body)?;
        let stored = services.audit.store_events(&verified, &events)?;
        let accepted: Vec<String> = events
            .into_iter()
            .map(|e| e.idempotency_key.into_owned())
            .collect();
        Ok(json!(EventsAccepted {
            accepted,
            stored: stored as u64
        }))
    })
    .await;
    if matches!(&answer, Err(e) if e.status == StatusCode::UNAUTHORIZED) {
        forget_authenticated();
    }
    Ok(Json(answer?))
}

/// The events of an upload, borrowed from it: each event's text as sent
/// (what the store keeps; the projection parses it, typed, when it is
/// new) and the fields read before storing it.
fn parse_events<'a>(body: &'a [u8]) -> Result<Vec<NewEvent<'a>>, SyncError> {
    let batch: EventBatch<&RawValue> =
        serde_json::from_slice(body).map_err(|e| SyncError::BadInput(format!("events: {e}")))?;
    let mut events = Vec::with_capacity(batch.events.len());
    for (i, event) in batch.events.into_iter().enumerate() {
        let text = event.get();
        // A valid JSON value (the batch parsed): an object's fields, or
        // none for anything else.
        let fields: Envelope<'a> = if text.starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| SyncError::BadInput(format!("events[{i}]: {e}")))?
        } else {
            Envelope::default()
        };
        let field = |name: &str, value: Option<Cow<'a, str>>| {
            value
                .filter(|s| !s.is_empty() && s.len() <= 256)
                .ok_or_else(|| {
                    SyncError::BadInput(format!("events[{i}]: `{name}` must be a non-empty string"))
                })
        };
        events.push(NewEvent {
            idempotency_key: field("id", fields.id)?,
            kind: field("event", fields.event)?,
            at: field("time", fields.time)?,
            body: text,
        });
    }
    Ok(events)
}

/// The fields of an event the server reads before storing it: each the
/// string it is (borrowed from the upload unless escaped), or `None` when
/// absent or not a string. Every other field is skipped, unparsed; a key
/// given twice counts its last value (as a JSON value would).
#[derive(Default)]
struct Envelope<'a> {
    id: Option<Cow<'a, str>>,
    event: Option<Cow<'a, str>>,
    time: Option<Cow<'a, str>>,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut envelope = Envelope::default();
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let slot = match key.0.as_ref() {
                        "id" => &mut envelope.id,
                        "event" => &mut envelope.event,
                        "time" => &mut envelope.time,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    *slot = map.next_value::<MaybeText<'de>>()?.0;
                }
                Ok(envelope)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// A string, borrowed when the input allows.
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_str(TextVisitor)
            .and_then(|t| t.0.map(Text).ok_or_else(|| D::Error::custom("a string")))
    }
}

/// Any value: the string it is, or `None`.
struct MaybeText<'a>(Option<Cow<'a, str>>);

impl<'de> Deserialize<'de> for MaybeText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = MaybeText<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(MaybeText(Some(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(MaybeText(Some(Cow::Owned(v.to_string()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(MaybeText(Some(Cow::Owned(v))))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(MaybeText(None))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(MaybeText(None))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(MaybeText(None))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(MaybeText(None))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(MaybeText(None))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| MaybeText(None))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        IgnoredAny.visit_map(map).map(|_| MaybeText(None))
    }
}
