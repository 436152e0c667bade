//! The bastion's one connection to the central server: its identity (the
//! Ed25519 key and what enrollment pinned), one HTTP client and the TLS
//! that client speaks — the pinned CA as its only root, the client
//! certificate the server's CA issued at enrollment for the bastion's own
//! key. Policy sync, event upload, the control long-poll, live output and
//! recording upload all go through [`CentralClient::call`].
//!
//! The pin check at enrollment is [`super::pinning`].

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use reqwest::blocking::Client;
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::RootCertStore;

use crate::daemon::config::CentralConfig;
use crate::daemon::monitor::enroll::{self, Answer, Call, Identity};
use crate::daemon::monitor::pinning::provider;

/// The signed-request client of an enrolled bastion, shared by every
/// thread that talks to the server.
pub struct CentralClient {
    identity: Identity,
    server: String,
    http: Client,
    timeout: Duration,
}

impl CentralClient {
    /// The identity from the state dir and one client for `config.server`:
    /// over TLS with the pinned CA and the client certificate when the
    /// bastion enrolled with a pinned token.
    pub fn new(state_dir: &Path, config: &CentralConfig) -> Result<CentralClient> {
        let identity = Identity::load(state_dir)?;
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let http = client_for(&identity, timeout)?;
        Ok(CentralClient {
            identity,
            server: config.server.clone(),
            http,
            timeout,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Sends `call` signed by the bastion key; the answer once believed
    /// ([`Identity::call`]). Without its own timeout a call gets the
    /// configured one.
    pub fn call(&self, mut call: Call<'_>, body: Vec<u8>) -> Result<Answer> {
        call.timeout.get_or_insert(self.timeout);
        self.identity
            .call(&self.http, &self.server, call, body)
            .map_err(|e| match &self.identity.enrollment.ca_sha256 {
                Some(pin) if format!("{e:#}").contains("invalid peer certificate") => e.context(
                    format!(
                        "{} presents a certificate the CA pinned at enrollment (sha256 {pin}) did not issue: refused",
                        self.server
                    ),
                ),
                _ => e,
            })
    }
}

/// The client: pinned TLS with the client certificate, or (an unpinned
/// enrollment, with a server behind a TLS proxy) the system's roots.
fn client_for(identity: &Identity, timeout: Duration) -> Result<Client> {
    let builder = Client::builder().connect_timeout(timeout.min(Duration::from_secs(10)));
    let builder = match &identity.tls {
        Some(tls) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(tls.ca.clone())
                .context("the pinned CA certificate")?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![tls.client_cert.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.key_pkcs8.clone())),
                )
                .context("the client certificate")?;
            builder.use_preconfigured_tls(config)
        }
        None => builder,
    };
    builder.build().context("building the HTTP client")
}

/// `jms-agentd renew-cert`: a new client certificate for the bastion's
/// key, asked over the current one (before it expires).
pub fn renew_client_cert(state_dir: &Path, client: &CentralClient) -> Result<()> {
    if client.identity().tls.is_none() {
        bail!("this bastion enrolled without a pinned CA: it has no client certificate");
    }
    let answer = client.call(
        Call::new(Method::POST, "/api/v1/sync/certificate", ""),
        Vec::new(),
    )?;
    if !answer.status.is_success() {
        return Err(answer.refusal("the certificate renewal"));
    }
    let pem = answer.json()["client_cert"]
        .as_str()
        .map(str::to_string)
        .context("no client_cert in the answer")?;
    let cert = CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("bad client_cert in the answer: {e}"))?;
    enroll::write_private(&state_dir.join(enroll::CLIENT_CERT_FILE), cert.as_ref())
}
