//! The bastion's identity with the central server: enrollment, the files
//! it leaves in the state dir, and signed sync requests.
//!
//! `jms-agentd enroll --server URL --token T` generates the bastion's
//! Ed25519 key pair, registers the public key with the one-time token and
//! pins the server's public key. A token `SECRET.SHA256` names the
//! server's CA: the server's TLS chain must hold that CA (checked before
//! the token is sent, see `pinning::PinnedCa`), else nothing is written;
//! the server answers with a client certificate from that CA for the
//! bastion's key (the private key never leaves the bastion). A token
//! without the hash (a server behind a TLS proxy, `--insecure-http`) pins
//! no CA. In the state dir (0700, root-only):
//!
//! - `bastion.key`: the bastion's private key (PKCS#8, 0600), also the key
//!   of its TLS client certificate;
//! - `central.json`: bastion id, server URL, the pinned server key and the
//!   pinned CA's SHA-256 (0600);
//! - `server-ca.der`, `client-cert.der`: the pinned CA and the client
//!   certificate (DER, 0600);
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
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::pinning::cert_hash;

/// The bastion's private key.
pub const KEY_FILE: &str = "bastion.key";
/// Bastion id and the pinned server key.
pub const ENROLLMENT_FILE: &str = "central.json";
/// The last good signed bundle.
pub const BUNDLE_FILE: &str = "bundle.jms";
/// Unix seconds of the last successful contact with the server.
pub const LAST_SYNC_FILE: &str = "central-sync";
/// The pinned CA (DER).
pub const CA_FILE: &str = "server-ca.der";
/// The bastion's TLS client certificate (DER).
pub const CLIENT_CERT_FILE: &str = "client-cert.der";
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
    /// Hex SHA-256 of the server's CA, pinned at enrollment (none: the
    /// token carried none, the server speaks plain HTTP behind a proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_sha256: Option<String>,
}

/// The enrolled bastion: its key and what it pinned.
pub struct Identity {
    pub enrollment: Enrollment,
    pub server_key: Vec<u8>,
    key: Ed25519KeyPair,
    /// The pinned CA and the client certificate (a pinned enrollment).
    pub tls: Option<TlsIdentity>,
}

/// What the bastion speaks TLS with.
pub struct TlsIdentity {
    pub ca: CertificateDer<'static>,
    pub client_cert: CertificateDer<'static>,
    /// `bastion.key`, the key of the client certificate.
    pub key_pkcs8: Vec<u8>,
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
        let tls = match &enrollment.ca_sha256 {
            None => None,
            Some(pin) => {
                let read = |name: &str| {
                    let path = state_dir.join(name);
                    std::fs::read(&path).with_context(|| {
                        format!(
                            "reading {} (enroll again: jms-agentd enroll)",
                            path.display()
                        )
                    })
                };
                let ca = read(CA_FILE)?;
                if &cert_hash(&ca) != pin {
                    bail!(
                        "{} is not the CA pinned at enrollment (sha256 {pin}): enroll again",
                        state_dir.join(CA_FILE).display()
                    );
                }
                Some(TlsIdentity {
                    ca: CertificateDer::from(ca),
                    client_cert: CertificateDer::from(read(CLIENT_CERT_FILE)?),
                    key_pkcs8: pkcs8,
                })
            }
        };
        Ok(Identity {
            enrollment,
            server_key,
            key,
            tls,
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
/// key (and, with a pinned token, the server's CA and a client
/// certificate) pinned. Replaces an earlier enrollment (and its bundle);
/// writes nothing when it fails.
pub fn enroll(
    state_dir: &Path,
    server: &str,
    token: &str,
    name: &str,
    sshd: &crate::daemon::config::SshdConfig,
) -> Result<Enrollment> {
    let ssh_host_keys = host_keys(sshd)?;
    if let Some(address) = &sshd.address {
        jms_sync::enroll::check_ssh_address(address)
            .map_err(|e| anyhow::anyhow!("[sshd] address: {e}"))?;
    }
    let pin = match token.split_once('.') {
        Some((_, pin)) if pin.len() == 64 && unhex(pin).is_some() => Some(pin.to_ascii_lowercase()),
        Some(_) => bail!(
            "bad token: expected SECRET.SHA256-OF-THE-SERVER-CA (64 hex digits after the dot)"
        ),
        None => None,
    };
    if pin.is_some() && !server.starts_with("https://") {
        bail!("the token pins the server's CA: give the server as https://HOST:PORT");
    }
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| anyhow::anyhow!("generating the bastion key"))?;
    let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("a key just generated");
    let timeout = Duration::from_secs(30);
    let (http, verifier) = match &pin {
        Some(pin) => {
            let (http, verifier) = super::pinning::enrollment_client(pin, timeout)?;
            (http, Some(verifier))
        }
        None => {
            tracing::warn!("the token names no CA: the server is not pinned (a server behind a TLS proxy, --insecure-http)");
            (http_client(timeout)?, None)
        }
    };
    let url = format!(
        "{}{}",
        server.trim_end_matches('/'),
        jms_sync::paths::ENROLL
    );
    let sent = http
        .post(&url)
        .json(&jms_sync::enroll::EnrollRequest {
            token: token.to_string(),
            bastion_name: name.to_string(),
            public_key: hex(key.public_key().as_ref()),
            ssh_host_keys,
            ssh_address: sshd.address.clone(),
        })
        .send();
    let response = match sent {
        Ok(response) => response,
        Err(e) => {
            if let Some(why) = verifier
                .as_ref()
                .and_then(|v| v.mismatch.lock().unwrap_or_else(|e| e.into_inner()).clone())
            {
                bail!("refusing {server}: {why}; nothing was written");
            }
            return Err(e).with_context(|| format!("cannot reach {url}"));
        }
    };
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
    let tls = match &verifier {
        None => None,
        Some(verifier) => {
            let ca = verifier
                .found
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .context("the pinned CA was not seen")?;
            let pem = body
                .client_cert
                .as_deref()
                .context("no client_cert in the answer (is the server behind a TLS proxy? then its tokens name no CA)")?;
            let cert = CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| anyhow::anyhow!("bad client_cert in the answer: {e}"))?;
            Some((ca, cert))
        }
    };
    let enrollment = Enrollment {
        server: server.to_string(),
        bastion_id: body.bastion_id,
        bastion_name: name.to_string(),
        server_public_key: server_key_hex.to_string(),
        server_id: server_id(&server_key),
        ca_sha256: pin,
    };
    write_private(&state_dir.join(KEY_FILE), pkcs8.as_ref())?;
    for stale in [BUNDLE_FILE, LAST_SYNC_FILE, CA_FILE, CLIENT_CERT_FILE] {
        let _ = std::fs::remove_file(state_dir.join(stale));
    }
    if let Some((ca, cert)) = tls {
        write_private(&state_dir.join(CA_FILE), ca.as_ref())?;
        write_private(&state_dir.join(CLIENT_CERT_FILE), cert.as_ref())?;
    }
    write_private(
        &state_dir.join(ENROLLMENT_FILE),
        &serde_json::to_vec_pretty(&enrollment)?,
    )?;
    Ok(enrollment)
}

/// The sshd host public keys of `[sshd] host_keys` that exist, checked.
fn host_keys(sshd: &crate::daemon::config::SshdConfig) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    for path in &sshd.host_keys {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let key = jms_sync::enroll::check_ssh_host_key(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        keys.push(key);
    }
    if keys.is_empty() {
        tracing::warn!("no sshd host key found ([sshd] host_keys): the server's web terminal cannot reach this bastion until it re-enrolls with one");
    }
    keys.truncate(jms_sync::enroll::MAX_SSH_HOST_KEYS);
    Ok(keys)
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
