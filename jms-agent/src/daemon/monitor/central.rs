//! The bastion's one connection to the central server: its identity (the
//! Ed25519 key and what enrollment pinned), one HTTP client and the TLS
//! that client speaks — the pinned CA as its only root, the client
//! certificate the server's CA issued at enrollment for the bastion's own
//! key. Policy sync, event upload, the control long-poll, live output and
//! recording upload all go through [`CentralClient::call`].
//!
//! `[central] server` may name several URLs (instances of one server):
//! [`CentralClient::call`] sends to the one that answered last and, when
//! it cannot be reached, answers 5xx or sends an answer that is not the
//! server's, to the next; every sync request may be sent again (event ids,
//! recording offsets, fresh nonces), so failing over never doubles an
//! effect.
//!
//! The client certificate is renewed before it ends
//! ([`run_cert_renewal`]): the new one replaces the old on disk and in
//! the client every thread uses. The pin check at enrollment is
//! [`super::pinning`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use reqwest::blocking::Client;
use reqwest::Method;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::RootCertStore;
use tracing::{info, warn};

use crate::daemon::config::CentralConfig;
use crate::daemon::monitor::enroll::{self, Answer, Call, Identity};
use crate::daemon::monitor::pinning::provider;

/// The signed-request client of an enrolled bastion, shared by every
/// thread that talks to the server.
pub struct CentralClient {
    identity: Identity,
    /// Every URL of the server, in the configured order.
    servers: Vec<String>,
    /// The one that answered last.
    current: AtomicUsize,
    /// Rebuilt when the client certificate is renewed.
    http: RwLock<Client>,
    /// The client certificate in use (a pinned enrollment).
    client_cert: RwLock<Option<CertificateDer<'static>>>,
    timeout: Duration,
}

impl CentralClient {
    /// The identity from the state dir and one client for `config.server`:
    /// over TLS with the pinned CA and the client certificate when the
    /// bastion enrolled with a pinned token.
    pub fn new(state_dir: &Path, config: &CentralConfig) -> Result<CentralClient> {
        let identity = Identity::load(state_dir)?;
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let client_cert = identity.tls.as_ref().map(|tls| tls.client_cert.clone());
        let http = client_for(&identity, client_cert.as_ref(), timeout)?;
        Ok(CentralClient {
            identity,
            servers: config.server.clone(),
            current: AtomicUsize::new(0),
            http: RwLock::new(http),
            client_cert: RwLock::new(client_cert),
            timeout,
        })
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The server URL answering now.
    pub fn server(&self) -> &str {
        &self.servers[self.current.load(Ordering::Relaxed) % self.servers.len()]
    }

    /// Sends `call` signed by the bastion key, to each server URL in turn
    /// from the one answering now (module doc); the answer once believed
    /// ([`Identity::call`]), or the last URL's failure. Without its own
    /// timeout a call gets the configured one.
    pub fn call(&self, mut call: Call<'_>, mut body: Vec<u8>) -> Result<Answer> {
        call.timeout.get_or_insert(self.timeout);
        let http = self.http.read().unwrap_or_else(|e| e.into_inner()).clone();
        let count = self.servers.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let at = (start + tried) % count;
            let server = &self.servers[at];
            tried += 1;
            let last = tried >= count;
            let body = if count == 1 {
                std::mem::take(&mut body)
            } else {
                body.clone()
            };
            match self.identity.call(&http, server, call.clone(), body) {
                Ok(answer) if answer.status.is_server_error() && !last => {
                    warn!(server, status = answer.status.as_u16(), path = call.path, "trying the next server URL");
                }
                Ok(answer) => {
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) if !last => {
                    warn!(server, path = call.path, "trying the next server URL: {e:#}");
                }
                Err(e) => {
                    return Err(match &self.identity.enrollment.ca_sha256 {
                        Some(pin) if format!("{e:#}").contains("invalid peer certificate") => e
                            .context(format!(
                                "{server} presents a certificate the CA pinned at enrollment (sha256 {pin}) did not issue: refused"
                            )),
                        _ => e,
                    })
                }
            }
        }
    }

    /// When the client certificate in use ends, by the pinned CA's
    /// verifier (`None`: no client certificate, or one the CA did not
    /// issue).
    pub fn client_cert_not_after(&self) -> Option<SystemTime> {
        let tls = self.identity.tls.as_ref()?;
        let cert = self
            .client_cert
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        not_after(&tls.ca, &cert)
    }

    /// `jms-agentd renew-cert` and the renewal thread: a new client
    /// certificate for the bastion's key, asked over the current one
    /// (before it ends), checked against the pinned CA, written to the
    /// state dir and used from the next request on.
    pub fn renew_client_cert(&self, state_dir: &Path) -> Result<()> {
        let Some(tls) = &self.identity.tls else {
            bail!("this bastion enrolled without a pinned CA: it has no client certificate");
        };
        let answer = self.call(
            Call::new(Method::POST, jms_sync::paths::CERTIFICATE, ""),
            Vec::new(),
        )?;
        if !answer.status.is_success() {
            return Err(answer.refusal("the certificate renewal"));
        }
        let renewed: jms_sync::enroll::CertificateRenewed =
            serde_json::from_slice(&answer.body).context("the certificate renewal's answer")?;
        let cert = CertificateDer::from_pem_slice(renewed.client_cert.as_bytes())
            .map_err(|e| anyhow::anyhow!("bad client_cert in the answer: {e}"))?;
        if not_after(&tls.ca, &cert).is_none() {
            bail!(
                "the renewed client certificate is not one the pinned CA issued: kept the old one"
            );
        }
        enroll::write_private(&state_dir.join(enroll::CLIENT_CERT_FILE), cert.as_ref())?;
        let http = client_for(&self.identity, Some(&cert), self.timeout)?;
        *self.http.write().unwrap_or_else(|e| e.into_inner()) = http;
        *self.client_cert.write().unwrap_or_else(|e| e.into_inner()) = Some(cert);
        Ok(())
    }
}

/// How often the renewal thread looks at the certificate's end.
const RENEWAL_CHECK_EVERY: Duration = Duration::from_secs(6 * 3600);

/// How long after a failed renewal the thread tries again.
const RENEWAL_RETRY: Duration = Duration::from_secs(300);

/// The renewal thread: renews the client certificate once it ends within
/// `before`; looks at start and every few hours (renewing at most once
/// each time), retries a failed renewal every few minutes (the old
/// certificate stays in use meanwhile).
pub fn run_cert_renewal(client: Arc<CentralClient>, state_dir: PathBuf, before: Duration) {
    loop {
        let Some(ends) = client.client_cert_not_after() else {
            warn!("the client certificate cannot be read against the pinned CA: it is not renewed");
            return;
        };
        let left = ends
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        if left > before {
            std::thread::sleep(RENEWAL_CHECK_EVERY.min(left - before));
            continue;
        }
        match client.renew_client_cert(&state_dir) {
            Ok(()) => {
                info!(
                    event = "client_cert_renewed",
                    days_left_on_the_old = left.as_secs() / 86400,
                    "client certificate renewed"
                );
                // At most one renewal a check period, even when `before`
                // is longer than the certificates the server issues.
                std::thread::sleep(RENEWAL_CHECK_EVERY);
            }
            Err(e) => {
                warn!("client certificate renewal failed (retrying; the current one stays in use): {e:#}");
                std::thread::sleep(RENEWAL_RETRY);
            }
        }
    }
}

/// When `cert` ends, if `ca` issued it for client authentication:
/// webpki checks it as of a time far past any certificate's end and reads
/// the end from the expiry it reports.
fn not_after(ca: &CertificateDer<'_>, cert: &CertificateDer<'_>) -> Option<SystemTime> {
    let anchor = webpki::anchor_from_trusted_cert(ca).ok()?;
    let end_entity = webpki::EndEntityCert::try_from(cert).ok()?;
    let verify = |at: UnixTime| {
        end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            std::slice::from_ref(&anchor),
            &[],
            at,
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
    };
    // Valid now, first: otherwise the far-future check would report the
    // expiry of a certificate the CA never issued.
    verify(UnixTime::now()).ok()?;
    let far = UnixTime::since_unix_epoch(Duration::from_secs(u32::MAX as u64 * 2));
    match verify(far) {
        Err(webpki::Error::CertExpired { not_after, .. }) => {
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(not_after.as_secs()))
        }
        _ => None,
    }
}

/// The client: pinned TLS with `client_cert`, or (an unpinned
/// enrollment, with a server behind a TLS proxy) the system's roots.
fn client_for(
    identity: &Identity,
    client_cert: Option<&CertificateDer<'static>>,
    timeout: Duration,
) -> Result<Client> {
    let builder = Client::builder().connect_timeout(timeout.min(Duration::from_secs(10)));
    let builder = match (&identity.tls, client_cert) {
        (Some(tls), Some(client_cert)) => {
            let mut roots = RootCertStore::empty();
            roots
                .add(tls.ca.clone())
                .context("the pinned CA certificate")?;
            let config = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .context("TLS versions")?
                .with_root_certificates(roots)
                .with_client_auth_cert(
                    vec![client_cert.clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(tls.key_pkcs8.clone())),
                )
                .context("the client certificate")?;
            builder.use_preconfigured_tls(config)
        }
        _ => builder,
    };
    builder.build().context("building the HTTP client")
}
