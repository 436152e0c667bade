//! The bastion's identity with the central server: enrollment, the files
//! it leaves in the state dir, and signed sync requests.
//!
//! `jms-agentd enroll --server URL --token T` generates the bastion's
//! Ed25519 key pair, registers the public key with the one-time token and
//! pins the server's public key. In the state dir (0700, root-only):
//!
//! - `bastion.key`: the bastion's private key (PKCS#8, 0600);
//! - `central.json`: bastion id, server URL and the pinned server key (0600);
//! - `bundle.jms`: the last good signed bundle (0600), written by the
//!   central policy source; `central-sync`: when the server was last reached.
//!
//! Every later request carries `X-Jms-Bastion`, `X-Jms-Timestamp`,
//! `X-Jms-Nonce` and `X-Jms-Signature` (Ed25519 over
//! `jms_sync::bundle::request_message`), and every answer is believed only
//! when the pinned server key signed it for that very request
//! (`X-Jms-Answer-Signature`, `jms_sync::bundle::verify_answer`):
//! [`Identity::call`] is the one way the daemon talks to the server.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use jms_sync::auth::headers;
use jms_sync::bundle::{hex, request_message, server_id, unhex, verify_answer, AnswerBinding};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

/// The bastion's private key.
pub const KEY_FILE: &str = "bastion.key";
/// Bastion id and the pinned server key.
pub const ENROLLMENT_FILE: &str = "central.json";
/// The last good signed bundle.
pub const BUNDLE_FILE: &str = "bundle.jms";
/// Unix seconds of the last successful contact with the server.
pub const LAST_SYNC_FILE: &str = "central-sync";
/// The largest answer read from the server (a whole policy bundle fits).
const MAX_ANSWER_BYTES: u64 = 256 << 20;

/// What enrollment left behind (`central.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    pub server: String,
    pub bastion_id: i64,
    pub bastion_name: String,
    /// Hex of the server's Ed25519 public key, pinned at enrollment.
    pub server_public_key: String,
    pub server_id: String,
}

/// The enrolled bastion: its key and what it pinned.
pub struct Identity {
    pub enrollment: Enrollment,
    pub server_key: Vec<u8>,
    key: Ed25519KeyPair,
}

impl Identity {
    /// Loads the identity from the state dir (refusing key files others
    /// can read).
    pub fn load(state_dir: &Path) -> Result<Identity> {
        let enrollment_path = state_dir.join(ENROLLMENT_FILE);
        let text = std::fs::read(&enrollment_path).with_context(|| {
            format!(
                "{}: not enrolled (run jms-agentd enroll --server URL --token T)",
                enrollment_path.display()
            )
        })?;
        let enrollment: Enrollment = serde_json::from_slice(&text)
            .with_context(|| format!("{} is corrupt", enrollment_path.display()))?;
        let server_key = unhex(&enrollment.server_public_key)
            .filter(|k| k.len() == 32)
            .with_context(|| format!("{}: bad server_public_key", enrollment_path.display()))?;
        let key_path = state_dir.join(KEY_FILE);
        refuse_readable(&key_path)?;
        let pkcs8 =
            std::fs::read(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| anyhow::anyhow!("{} is not an Ed25519 key", key_path.display()))?;
        Ok(Identity {
            enrollment,
            server_key,
            key,
        })
    }

    /// A request to `path?query` signed by the bastion key, and its nonce.
    fn signed(
        &self,
        http: &Client,
        server: &str,
        call: &Call<'_>,
        body: Vec<u8>,
    ) -> (RequestBuilder, String) {
        let timestamp = chrono::Utc::now().timestamp();
        let nonce = jms_sync::auth::new_nonce();
        let (path, query) = (call.path, call.query);
        let message = request_message(call.method.as_str(), path, query, timestamp, &nonce, &body);
        let signature = self.key.sign(&message);
        let url = if query.is_empty() {
            format!("{}{path}", server.trim_end_matches('/'))
        } else {
            format!("{}{path}?{query}", server.trim_end_matches('/'))
        };
        let mut request = http
            .request(call.method.clone(), url)
            .header(headers::BASTION, self.enrollment.bastion_id.to_string())
            .header(headers::TIMESTAMP, timestamp.to_string())
            .header(headers::NONCE, &nonce)
            .header(headers::SIGNATURE, hex(signature.as_ref()));
        if !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, call.content_type)
                .body(body);
        }
        if let Some(timeout) = call.timeout {
            request = request.timeout(timeout);
        }
        (request, nonce)
    }

    /// Sends `call` signed by the bastion key and returns the answer once
    /// it is believed: signed by the pinned server key for this request
    /// (bastion, nonce, method, path, query), its status, version and
    /// body. Anything else (no answer, an unsigned, forged or replayed
    /// one) is an error: the server was not reached.
    pub fn call(
        &self,
        http: &Client,
        server: &str,
        call: Call<'_>,
        body: Vec<u8>,
    ) -> Result<Answer> {
        let (request, nonce) = self.signed(http, server, &call, body);
        let mut response = request
            .send()
            .with_context(|| format!("cannot reach {server}"))?;
        let status = response.status();
        let headers = response.headers().clone();
        // Read before it is believed: bounded.
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&mut response, MAX_ANSWER_BYTES + 1),
            &mut body,
        )
        .with_context(|| format!("reading the answer of {server}"))?;
        if body.len() as u64 > MAX_ANSWER_BYTES {
            bail!("the answer of {server} is larger than {MAX_ANSWER_BYTES} bytes");
        }
        let binding = AnswerBinding {
            bastion_id: self.enrollment.bastion_id,
            nonce: &nonce,
            method: call.method.as_str(),
            path: call.path,
            query: call.query,
        };
        let version = verify_answer(
            &self.server_key,
            &binding,
            status.as_u16(),
            headers.get(headers::VERSION).map(|v| v.as_bytes()),
            &body,
            headers.get(headers::ANSWER_SIGNATURE).map(|v| v.as_bytes()),
        )
        .map_err(|e| {
            tracing::error!(
                alarm = "sync_answer_refused",
                path = call.path,
                status = status.as_u16(),
                "an answer from {server} is refused, counting the server as unreachable: {e}"
            );
            anyhow::Error::new(e).context(format!(
                "{} {} ({status}): the answer is not the server's",
                call.method, call.path
            ))
        })?;
        Ok(Answer {
            status,
            version,
            body,
        })
    }
}

/// One request to the server (its body goes beside it to
/// [`Identity::call`]).
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub method: Method,
    pub path: &'a str,
    /// Without `?`.
    pub query: &'a str,
    /// Of a non-empty body.
    pub content_type: &'a str,
    /// Overrides the client's timeout.
    pub timeout: Option<Duration>,
}

impl<'a> Call<'a> {
    /// A request with a JSON body (or none) and the client's timeout.
    pub fn new(method: Method, path: &'a str, query: &'a str) -> Call<'a> {
        Call {
            method,
            path,
            query,
            content_type: "application/json",
            timeout: None,
        }
    }
}

/// An answer the server signed for the request it answers.
#[derive(Debug)]
pub struct Answer {
    pub status: reqwest::StatusCode,
    /// The policy version it talks about (`X-Jms-Policy-Version`).
    pub version: Option<u64>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// Why the server refused (its `error`), for a log line.
    pub fn refusal(&self, what: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "the server refused {what} ({}): {}",
            self.status,
            self.json()["error"].as_str().unwrap_or("no reason given")
        )
    }
}

/// A blocking HTTP client with `timeout` per request.
pub fn http_client(timeout: Duration) -> Result<Client> {
    Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .build()
        .context("building the HTTP client")
}

/// Enrolls this bastion: new key pair, registration with `token`, server
/// key pinned. Replaces an earlier enrollment (and its bundle).
pub fn enroll(state_dir: &Path, server: &str, token: &str, name: &str) -> Result<Enrollment> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("generating the bastion key"))?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key just generated");
    let http = http_client(Duration::from_secs(30))?;
    let url = format!(
        "{}{}",
        server.trim_end_matches('/'),
        jms_sync::paths::ENROLL
    );
    let response = http
        .post(&url)
        .json(&jms_sync::enroll::EnrollRequest {
            token: token.to_string(),
            bastion_name: name.to_string(),
            public_key: hex(key.public_key().as_ref()),
        })
        .send()
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let body: serde_json::Value = response.json().unwrap_or_default();
    if !status.is_success() {
        bail!(
            "the server refused the enrollment ({status}): {}",
            body["error"].as_str().unwrap_or("no reason given")
        );
    }
    let body: jms_sync::enroll::Enrolled =
        serde_json::from_value(body).context("the enrollment answer")?;
    let server_key_hex = body.server_public_key.as_str();
    let server_key = unhex(server_key_hex)
        .filter(|k| k.len() == 32)
        .context("bad server_public_key in the answer")?;
    let enrollment = Enrollment {
        server: server.to_string(),
        bastion_id: body.bastion_id,
        bastion_name: name.to_string(),
        server_public_key: server_key_hex.to_string(),
        server_id: server_id(&server_key),
    };
    write_private(&state_dir.join(KEY_FILE), pkcs8.as_ref())?;
    for stale in [BUNDLE_FILE, LAST_SYNC_FILE] {
        let _ = std::fs::remove_file(state_dir.join(stale));
    }
    write_private(
        &state_dir.join(ENROLLMENT_FILE),
        &serde_json::to_vec_pretty(&enrollment)?,
    )?;
    Ok(enrollment)
}

/// Writes a private file (0600) atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    jms_core::atomic_file::write_atomic(path, bytes, 0o600)
        .with_context(|| format!("writing {}", path.display()))
}

/// Refuses a private file that group or others can read.
pub fn refuse_readable(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.mode() & 0o077 != 0 {
        bail!(
            "{} has mode {:o}: it must be 0600 (chmod 600)",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(())
}
