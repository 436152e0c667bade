//! Trust in the central server's TLS: the rustls crypto provider, the
//! SHA-256 a token pins, and the verifier enrollment uses ([`PinnedCa`]):
//! a server whose chain does not hold a CA with the token's SHA-256 is
//! refused before a byte of the request is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::blocking::Client;
use ring::digest::{digest, SHA256};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The client enrollment uses: the server's chain must hold a CA whose
/// SHA-256 is `pin` and the server certificate must chain to it (and
/// name the host); the CA is kept in [`PinnedCa::found`].
pub fn enrollment_client(pin: &str, timeout: Duration) -> Result<(Client, Arc<PinnedCa>)> {
    let verifier = Arc::new(PinnedCa {
        pin: pin.to_ascii_lowercase(),
        provider: provider(),
        found: Mutex::new(None),
        mismatch: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let http = Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .timeout(timeout)
        .use_preconfigured_tls(config)
        .build()
        .context("building the HTTP client")?;
    Ok((http, verifier))
}

/// Hex SHA-256 of a certificate's DER.
pub fn cert_hash(der: &[u8]) -> String {
    jms_sync::bundle::hex(digest(&SHA256, der).as_ref())
}

/// Verifies a server by the CA the enrollment token names (never trust
/// on first use).
#[derive(Debug)]
pub struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
    /// The CA certificate whose hash is the pin, once a chain held it.
    pub found: Mutex<Option<CertificateDer<'static>>>,
    /// Why the server was refused, in words for the admin.
    pub mismatch: Mutex<Option<String>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates
            .iter()
            .chain(std::iter::once(end_entity))
            .find(|c| cert_hash(c) == self.pin)
        else {
            let presented: Vec<String> = std::iter::once(end_entity)
                .chain(intermediates)
                .map(|c| cert_hash(c))
                .collect();
            let why = format!(
                "the server's certificate chain holds no CA with the token's SHA-256 {} (it presented {}): refusing it; check the token or the server URL",
                self.pin,
                presented.join(", ")
            );
            *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.clone());
            return Err(rustls::Error::General(why));
        };
        let mut roots = RootCertStore::empty();
        roots
            .add(ca.clone().into_owned())
            .map_err(|e| rustls::Error::General(format!("the pinned CA: {e}")))?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("the pinned CA: {e}")))?;
        let rest: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| c.as_ref() != ca.as_ref())
            .cloned()
            .collect();
        let verified = inner
            .verify_server_cert(end_entity, &rest, server_name, ocsp_response, now)
            .inspect_err(|e| {
                *self.mismatch.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!(
                    "the server's certificate does not verify against the pinned CA: {e}"
                ));
            })?;
        *self.found.lock().unwrap_or_else(|e| e.into_inner()) = Some(ca.clone().into_owned());
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
