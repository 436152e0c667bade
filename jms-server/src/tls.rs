//! TLS for jms-server, built in (rustls): its own certificate authority,
//! the server certificate, the client certificates of enrolled bastions,
//! the TLS listener and what a request knows of its transport.
//!
//! - The CA (P-256, `tls/ca.pem` and `tls/ca.key` 0600 in the data
//!   directory) is made at first start. Its SHA-256 (of the certificate's
//!   DER) is the pin enrollment tokens carry ([`Authority::ca_hash`]): a
//!   bastion refuses a server whose chain does not end in that CA.
//! - The server certificate (`tls/server.pem`, the chain with the CA, and
//!   `tls/server.key` 0600) is issued from that CA for the names the admin
//!   gives (`--tls-name`), or the admin gives a certificate of its own
//!   (`--tls-cert`/`--tls-key`, with `--tls-ca`: then that CA is the pin).
//!   `jms-server tls rotate` issues a new one; a running server reads it
//!   again on SIGHUP ([`Reloadable`]), bastions notice nothing.
//! - Bastions get a client certificate from the CA at enrollment, for
//!   their Ed25519 identity key ([`Authority::issue_client`]: the key never
//!   leaves the bastion). Every later sync request must come over a
//!   connection authenticated by such a certificate, for the key of the
//!   bastion that signed the request ([`check_bastion_cert`]); a revoked
//!   bastion's requests are refused whatever they carry.
//! - Client certificates are optional at the handshake (the admin API and
//!   the web take none); the sync routes require one.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use ring::digest::{digest, SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The TLS files' directory inside the data directory.
pub const TLS_DIR: &str = "tls";
/// The CA's common name, followed by a fingerprint of its key (so the
/// issuer name can be rebuilt from the key alone, and two servers' CAs
/// differ by name as well as key).
const CA_NAME: &str = "jms-server CA";
/// Lifetime of the CA.
const CA_DAYS: i64 = 3650;
/// Lifetime of a server certificate.
pub const SERVER_CERT_DAYS: i64 = 825;
/// Lifetime of a bastion's client certificate.
pub const CLIENT_CERT_DAYS: i64 = 365;
/// A TLS handshake longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Most handshakes under way at once; a connection past it is closed at
/// once (a flood of silent connections holds no more than this).
const MAX_HANDSHAKES: usize = 1024;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{path}: readable by others (mode {mode:o}): chmod 600 it")]
    UnsafeMode { path: PathBuf, mode: u32 },
    #[error("{0}")]
    Bad(String),
}

type Result<T> = std::result::Result<T, TlsError>;

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> TlsError + 'a {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Hex of the SHA-256 of a certificate's DER: the pin.
pub fn cert_hash(der: &[u8]) -> String {
    jms_sync::bundle::hex(digest(&SHA256, der).as_ref())
}

/// Writes `text` to `path` atomically with `mode` (a temp file renamed).
fn write_file(path: &Path, text: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error(&tmp, "create"))?;
    file.write_all(text).map_err(io_error(&tmp, "write"))?;
    file.sync_all().map_err(io_error(&tmp, "fsync"))?;
    fs::rename(&tmp, path).map_err(io_error(path, "rename"))?;
    Ok(())
}

/// Reads a private key file, refusing one others can read.
fn read_secret(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(io_error(path, "stat"))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TlsError::UnsafeMode {
            path: path.to_path_buf(),
            mode,
        });
    }
    fs::read_to_string(path).map_err(io_error(path, "read"))
}

fn rcgen_error(what: &str) -> impl FnOnce(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Bad(format!("{what}: {e}"))
}

/// The validity of a certificate issued now for `days`: from yesterday
/// (clocks differ) to `days` from today.
fn validity(params: &mut CertificateParams, days: i64) {
    use chrono::Datelike;
    let day = |offset: i64| {
        let date = (chrono::Utc::now() + chrono::Duration::days(offset)).date_naive();
        rcgen::date_time_ymd(date.year(), date.month() as u8, date.day() as u8)
    };
    params.not_before = day(-1);
    params.not_after = day(days);
}

/// The CA: its certificate and key.
pub struct Authority {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    key: KeyPair,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Authority(sha256 {})", self.ca_hash())
    }
}

impl Authority {
    /// Loads `DATA/tls/ca.{pem,key}`, making them at first start.
    pub fn load_or_create(data: &Path) -> Result<Authority> {
        let dir = data.join(TLS_DIR);
        fs::create_dir_all(&dir).map_err(io_error(&dir, "create"))?;
        let _ = fs::set_permissions(&dir, fs::Permissions::from_mode(0o700));
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        if !cert_path.exists() {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
                .map_err(rcgen_error("making the CA key"))?;
            let mut params = ca_params(&key);
            validity(&mut params, CA_DAYS);
            let cert = params
                .self_signed(&key)
                .map_err(rcgen_error("making the CA certificate"))?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
            tracing::info!(sha256 = cert_hash(cert.der()), "made the TLS CA");
        }
        let key = KeyPair::from_pem(&read_secret(&key_path)?)
            .map_err(rcgen_error("reading tls/ca.key"))?;
        let ca_pem = fs::read_to_string(&cert_path).map_err(io_error(&cert_path, "read"))?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| TlsError::Bad(format!("{}: {e}", cert_path.display())))?;
        Ok(Authority {
            ca_der,
            ca_pem,
            key,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    pub fn ca_der(&self) -> &CertificateDer<'static> {
        &self.ca_der
    }

    /// Hex of the SHA-256 of the CA certificate's DER.
    pub fn ca_hash(&self) -> String {
        cert_hash(&self.ca_der)
    }

    fn issuer(&self) -> Issuer<'_, &KeyPair> {
        Issuer::new(ca_params(&self.key), &self.key)
    }

    /// A server certificate for `names` (DNS names or IP addresses): the
    /// chain (server, CA) and the new key, both PEM.
    pub fn issue_server(&self, names: &[String]) -> Result<(String, String)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(rcgen_error("making the server key"))?;
        let common_name = names
            .first()
            .cloned()
            .unwrap_or_else(|| "jms-server".into());
        let mut params = leaf_params(
            common_name,
            ExtendedKeyUsagePurpose::ServerAuth,
            SERVER_CERT_DAYS,
        );
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(|_| TlsError::Bad(format!("--tls-name {name:?}: not a DNS name"))),
            })
            .collect::<Result<_>>()?;
        let cert = params
            .signed_by(&key, &self.issuer())
            .map_err(rcgen_error("issuing the server certificate"))?;
        Ok((
            format!("{}{}", cert.pem(), self.ca_pem),
            key.serialize_pem(),
        ))
    }

    /// A client certificate (PEM) for the bastion `name` whose Ed25519
    /// public key is `public_key` (32 bytes).
    pub fn issue_client(&self, name: &str, public_key: &[u8]) -> Result<String> {
        let key = Ed25519Public(
            public_key
                .try_into()
                .map_err(|_| TlsError::Bad("an Ed25519 key is 32 bytes".into()))?,
        );
        let params = leaf_params(
            format!("bastion {name}"),
            ExtendedKeyUsagePurpose::ClientAuth,
            CLIENT_CERT_DAYS,
        );
        let cert = params
            .signed_by(&key, &self.issuer())
            .map_err(rcgen_error("issuing the client certificate"))?;
        Ok(cert.pem())
    }
}

/// A leaf certificate's parameters: `common_name`, for `purpose` only,
/// a random serial, the CA named by key id, valid for `days` from now.
fn leaf_params(
    common_name: String,
    purpose: ExtendedKeyUsagePurpose,
    days: i64,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![purpose];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    validity(&mut params, days);
    params
}

/// The CA's parameters (its issuer name and usages: what a certificate it
/// signs names as issuer).
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    let fingerprint = digest(&SHA256, key.public_key_raw());
    params.distinguished_name.push(
        DnType::CommonName,
        format!(
            "{CA_NAME} {}",
            jms_sync::bundle::hex(&fingerprint.as_ref()[..8])
        ),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn random_serial() -> rcgen::SerialNumber {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("system random");
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

/// A bastion's Ed25519 public key, as rcgen signs certificates for it.
struct Ed25519Public([u8; 32]);

impl rcgen::PublicKeyData for Ed25519Public {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

/// The DER of the SubjectPublicKeyInfo of an Ed25519 key.
fn ed25519_spki(public_key: &[u8]) -> Vec<u8> {
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(public_key);
    spki
}

// ---- the server certificate ------------------------------------------------------

/// Where the server's certificate comes from.
#[derive(Debug, Clone)]
pub enum ServerCertSource {
    /// Issued from the CA in the data directory (`tls/server.pem`).
    Own,
    /// The admin's: a chain, its key and the CA bastions pin (if absent,
    /// the last certificate of the chain).
    Given {
        cert: PathBuf,
        key: PathBuf,
        ca: Option<PathBuf>,
    },
}

/// The server's certificate, read again on [`Reloadable::reload`].
pub struct Reloadable {
    data: PathBuf,
    source: ServerCertSource,
    current: RwLock<(Arc<CertifiedKey>, String)>,
}

impl std::fmt::Debug for Reloadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Reloadable({:?})", self.source)
    }
}

impl Reloadable {
    fn new(data: &Path, source: ServerCertSource) -> Result<Reloadable> {
        let current = load_server_cert(data, &source)?;
        Ok(Reloadable {
            data: data.to_path_buf(),
            source,
            current: RwLock::new(current),
        })
    }

    /// Reads the certificate files again (after `jms-server tls rotate`);
    /// on error the old certificate stays.
    pub fn reload(&self) -> Result<()> {
        let next = load_server_cert(&self.data, &self.source)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }

    /// Hex SHA-256 of the CA bastions pin.
    pub fn pin(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }
}

impl ResolvesServerCert for Reloadable {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// The paths of the server certificate issued from the own CA.
pub fn own_server_paths(data: &Path) -> (PathBuf, PathBuf) {
    let dir = data.join(TLS_DIR);
    (dir.join("server.pem"), dir.join("server.key"))
}

/// Issues a server certificate for `names` from the CA and writes it
/// (`tls/server.pem`, `tls/server.key` 0600), replacing any.
pub fn write_own_server_cert(authority: &Authority, data: &Path, names: &[String]) -> Result<()> {
    let (chain, key) = authority.issue_server(names)?;
    let (cert_path, key_path) = own_server_paths(data);
    write_file(&key_path, key.as_bytes(), 0o600)?;
    write_file(&cert_path, chain.as_bytes(), 0o644)?;
    Ok(())
}

/// The certified key and the pin.
fn load_server_cert(data: &Path, source: &ServerCertSource) -> Result<(Arc<CertifiedKey>, String)> {
    let (cert_path, key_path, ca_path) = match source {
        ServerCertSource::Own => {
            let (cert, key) = own_server_paths(data);
            (cert, key, None)
        }
        ServerCertSource::Given { cert, key, ca } => (cert.clone(), key.clone(), ca.clone()),
    };
    let text = fs::read(&cert_path).map_err(io_error(&cert_path, "read"))?;
    let mut chain = CertificateDer::pem_slice_iter(&text)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Bad(format!("{}: {e}", cert_path.display())))?;
    if chain.is_empty() {
        return Err(TlsError::Bad(format!(
            "{}: no certificate in it",
            cert_path.display()
        )));
    }
    let ca = match &ca_path {
        Some(path) => {
            let text = fs::read(path).map_err(io_error(path, "read"))?;
            let ca = CertificateDer::from_pem_slice(&text)
                .map_err(|e| TlsError::Bad(format!("{}: {e}", path.display())))?;
            // Bastions find the CA in the chain the server presents.
            if !chain.iter().any(|c| c.as_ref() == ca.as_ref()) {
                chain.push(ca.clone());
            }
            ca
        }
        None if chain.len() >= 2 => chain.last().expect("non-empty").clone(),
        None => {
            return Err(TlsError::Bad(format!(
                "{}: a single certificate; give its CA with --tls-ca (bastions pin the CA)",
                cert_path.display()
            )))
        }
    };
    let key_text = read_secret(&key_path)?;
    let key = PrivateKeyDer::from_pem_slice(key_text.as_bytes())
        .map_err(|e| TlsError::Bad(format!("{}: {e}", key_path.display())))?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| TlsError::Bad(format!("{}: {e}", cert_path.display())))?;
    Ok((Arc::new(certified), cert_hash(&ca)))
}

/// How the server speaks to the network.
pub struct ServerTls {
    pub authority: Arc<Authority>,
    pub cert: Arc<Reloadable>,
    pub config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// The CA (made if absent), the server certificate (issued for
    /// `names` if absent and not given) and the rustls configuration:
    /// client certificates from the CA optional at the handshake.
    pub fn setup(data: &Path, source: ServerCertSource, names: &[String]) -> Result<ServerTls> {
        let authority = Arc::new(Authority::load_or_create(data)?);
        if matches!(source, ServerCertSource::Own) && !own_server_paths(data).0.exists() {
            write_own_server_cert(&authority, data, names)?;
            tracing::info!(?names, "issued the server certificate");
        }
        let cert = Arc::new(Reloadable::new(data, source)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(authority.ca_der().clone())
            .map_err(|e| TlsError::Bad(format!("tls/ca.pem: {e}")))?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Bad(format!("client verifier: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Bad(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(cert.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(ServerTls {
            authority,
            cert,
            config: Arc::new(config),
        })
    }
}

// ---- the listener --------------------------------------------------------------

/// A connection's peer: its address and, over TLS, its verified client
/// certificate (if it showed one).
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: SocketAddr,
    pub client_cert: Option<Arc<CertificateDer<'static>>>,
}

/// Accepts TCP connections and completes their TLS handshakes in tasks of
/// their own (a slow client holds no one else up), handing axum the
/// connections that finished.
pub struct TlsListener {
    local: SocketAddr,
    ready:
        tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, Peer)>,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(256);
        let acceptor = TlsAcceptor::from(config);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (tcp, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of descriptors and the like: wait, not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::warn!(%addr, "too many TLS handshakes under way: connection closed");
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, ready) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let stream =
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%addr, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|c| Arc::new(c.clone().into_owned()));
                    let _ = ready.send((stream, Peer { addr, client_cert })).await;
                });
                if tx.is_closed() {
                    return;
                }
            }
        });
        Ok(TlsListener { local, ready })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(accepted) => accepted,
            // The accept task never ends while we hold the receiver.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            client_cert: None,
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

// ---- what a request knows of its transport ---------------------------------------

/// The transport of the request being served.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plain HTTP (`--insecure-http`, or a router served by a test):
    /// no client certificates, no pin.
    Plain,
    /// TLS: the pin tokens carry, the CA that issues client
    /// certificates, and the peer's verified client certificate.
    Tls {
        tls: Arc<TlsShared>,
        client_cert: Option<Arc<CertificateDer<'static>>>,
    },
}

/// What every TLS request shares.
#[derive(Debug)]
pub struct TlsShared {
    pub authority: Arc<Authority>,
    pub cert: Arc<Reloadable>,
}

tokio::task_local! {
    static TRANSPORT: Transport;
}

/// The transport of the request this task serves (plain outside
/// [`transport_layer`]).
pub fn transport() -> Transport {
    TRANSPORT.try_with(Clone::clone).unwrap_or(Transport::Plain)
}

/// Whether the request this task serves came over TLS.
pub fn over_tls() -> bool {
    matches!(transport(), Transport::Tls { .. })
}

/// Layer of the whole app under the TLS listener: gives handlers the peer
/// address (`ConnectInfo<SocketAddr>`) and the transport.
pub async fn transport_layer(
    tls: Option<Arc<TlsShared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let transport = match tls {
        None => Transport::Plain,
        Some(tls) => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<Peer>>()
                .map(|ConnectInfo(peer)| peer.clone());
            let client_cert = peer.as_ref().and_then(|p| p.client_cert.clone());
            if let Some(peer) = peer {
                request.extensions_mut().insert(ConnectInfo(peer.addr));
            }
            Transport::Tls { tls, client_cert }
        }
    };
    TRANSPORT.scope(transport, next.run(request)).await
}

/// Checks that the request this task serves came with a client
/// certificate for the bastion whose Ed25519 key is `public_key` (TLS
/// only: over plain HTTP there are no client certificates). The chain was
/// verified against the CA at the handshake.
pub fn check_bastion_cert(public_key: &[u8]) -> std::result::Result<(), String> {
    let Transport::Tls { client_cert, .. } = transport() else {
        return Ok(());
    };
    let Some(cert) = client_cert else {
        return Err("no client certificate: a bastion connects with the certificate it got at enrollment (jms-agentd enroll)".into());
    };
    let parsed = webpki::EndEntityCert::try_from(cert.as_ref())
        .map_err(|e| format!("unreadable client certificate: {e}"))?;
    if parsed.subject_public_key_info().as_ref() != ed25519_spki(public_key).as_slice() {
        return Err("the client certificate is not this bastion's".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_ca_is_made_once_with_its_key_0600_and_issues_for_the_bastions_own_key() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path()).unwrap();
        let again = Authority::load_or_create(dir.path()).unwrap();
        assert_eq!(first.ca_hash(), again.ca_hash(), "made once, then reused");
        let mode = |name: &str| {
            fs::metadata(dir.path().join(TLS_DIR).join(name))
                .unwrap()
                .mode()
                & 0o777
        };
        assert_eq!(mode("ca.key"), 0o600);

        // A certificate issued from the reloaded CA chains to it (the
        // issuer name rebuilt from the key) and carries the bastion's key.
        let key = [7u8; 32];
        let pem = again.issue_client("b1", &key).unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let cert = webpki::EndEntityCert::try_from(&der).unwrap();
        assert_eq!(
            cert.subject_public_key_info().as_ref(),
            ed25519_spki(&key).as_slice()
        );
        let anchor = webpki::anchor_from_trusted_cert(first.ca_der()).unwrap();
        cert.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &[anchor],
            &[],
            rustls::pki_types::UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .expect("chains to the CA for client auth");

        // Another server's CA does not.
        let other_dir = tempfile::tempdir().unwrap();
        let other = Authority::load_or_create(other_dir.path()).unwrap();
        assert_ne!(other.ca_hash(), first.ca_hash());
        let anchor = webpki::anchor_from_trusted_cert(other.ca_der()).unwrap();
        assert!(cert
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &[anchor],
                &[],
                rustls::pki_types::UnixTime::now(),
                webpki::KeyUsage::client_auth(),
                None,
                None,
            )
            .is_err());
    }

    #[test]
    fn a_world_readable_ca_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        Authority::load_or_create(dir.path()).unwrap();
        let key = dir.path().join(TLS_DIR).join("ca.key");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = Authority::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(err, TlsError::UnsafeMode { .. }), "{err}");
    }
}
