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
//! `jms_core::bundle::request_message`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use jms_core::bundle::{hex, request_message, server_id, unhex};
use reqwest::blocking::{Client, RequestBuilder};
use reqwest::Method;
use ring::rand::{SecureRandom, SystemRandom};
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

    /// A request to `path?query` signed by the bastion key.
    pub fn signed(
        &self,
        http: &Client,
        server: &str,
        method: Method,
        path: &str,
        query: &str,
        body: Vec<u8>,
    ) -> RequestBuilder {
        let timestamp = chrono::Utc::now().timestamp();
        let mut nonce = [0u8; 16];
        SystemRandom::new().fill(&mut nonce).expect("system random");
        let nonce = hex(&nonce);
        let message = request_message(method.as_str(), path, query, timestamp, &nonce, &body);
        let signature = self.key.sign(&message);
        let url = if query.is_empty() {
            format!("{}{path}", server.trim_end_matches('/'))
        } else {
            format!("{}{path}?{query}", server.trim_end_matches('/'))
        };
        let mut request = http
            .request(method, url)
            .header("x-jms-bastion", self.enrollment.bastion_id.to_string())
            .header("x-jms-timestamp", timestamp.to_string())
            .header("x-jms-nonce", nonce)
            .header("x-jms-signature", hex(signature.as_ref()));
        if !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        request
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
    let url = format!("{}/api/v1/sync/enroll", server.trim_end_matches('/'));
    let response = http
        .post(&url)
        .json(&serde_json::json!({
            "token": token,
            "bastion_name": name,
            "public_key": hex(key.public_key().as_ref()),
        }))
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
    let server_key_hex = body["server_public_key"]
        .as_str()
        .context("no server_public_key in the answer")?;
    let server_key = unhex(server_key_hex)
        .filter(|k| k.len() == 32)
        .context("bad server_public_key in the answer")?;
    let enrollment = Enrollment {
        server: server.to_string(),
        bastion_id: body["bastion_id"]
            .as_i64()
            .context("no bastion_id in the answer")?,
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
