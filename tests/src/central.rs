//! A central server for a test bastion: a real `jms-server` on a free
//! 127.0.0.1 port with a temp data dir and an admin API token, driven with
//! the real `jmsctl` ([`Central::jmsctl`]) — over TLS with the server's
//! own CA, which jmsctl and [`Central::connect`] trust alone, and the
//! bastion pins through its enrollment token — and [`Central::attach`], which
//! switches a started [`Bastion`]'s jms-agentd from its policy file to the
//! server: stop agentd, write an agentd.toml with `[central]`, run
//! `jms-agentd enroll` with a one-time token inside the namespace, start
//! agentd again. Dropping the [`Central`] kills the server.
//!
//! [`BundleProxy`] sits between a bastion and the server: it forwards the
//! sync API as it is, until a test makes it answer bundle requests with a
//! signed bundle of its choosing (tampered, replayed, signed by another
//! key), sealed to the bastion's transport key as the server would, the
//! answer itself signed for the request with the server's own key (it
//! reads the server's `sync.key`): what a compromised mirror holding that
//! key could send, so the bundle's own checks are what stop it. It speaks
//! plain HTTP, so its server runs `--insecure-http`
//! ([`Central::start_insecure`]: a server behind a TLS proxy, unpinned).

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::bastion::{write, Bastion, AGENTD_SOCKET, AGENT_IN_NS};
use crate::preflight;
use crate::run::{self, Outcome, COMMAND_TIMEOUT};

/// jms-server and jmsctl, built beside the test binary.
fn server_binaries() -> (PathBuf, PathBuf) {
    let dir = preflight::profile_dir();
    let (server, ctl) = (dir.join("jms-server"), dir.join("jmsctl"));
    for bin in [&server, &ctl] {
        assert!(
            bin.is_file(),
            "jms-e2e cannot run: {} is missing (build it first: `cargo build --workspace`)",
            bin.display()
        );
    }
    (server, ctl)
}

/// A running jms-server.
pub struct Central {
    dir: Option<TempDir>,
    child: Option<Child>,
    /// `https://127.0.0.1:PORT` (`http://` when insecure).
    pub url: String,
    token: String,
    server: PathBuf,
    ctl: PathBuf,
    insecure: bool,
    /// The server's CA (PEM) over TLS.
    ca: Option<Vec<u8>>,
    /// Extra arguments and environment of the server process.
    extra: Vec<String>,
    env: Vec<(String, String)>,
    /// On PostgreSQL: the database's URL, and whether this instance made
    /// it (and drops it).
    database: Option<(String, bool)>,
}

/// A connection to the server: TLS or plain.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

impl Central {
    /// Starts a server over TLS with its own CA, an empty policy and an
    /// admin token.
    pub fn start() -> Central {
        Central::start_with(false)
    }

    /// Starts a server with `--insecure-http` (what sits behind a TLS
    /// proxy): tokens name no CA, bastions pin none.
    pub fn start_insecure() -> Central {
        Central::start_with(true)
    }

    /// Starts a server over TLS with `env` set (its options' `JMS_*`
    /// variables, e.g. `JMS_JOB_ATTEMPT_TIMEOUT`).
    pub fn start_with_env(env: &[(&str, &str)]) -> Central {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Central::start_configured(false, Vec::new(), env)
    }

    /// Starts a server over TLS that keeps recordings in `s3`'s bucket
    /// under `prefix` (`--recordings s3://...`).
    pub fn start_with_s3(s3: &crate::s3::S3Server, prefix: &str) -> Central {
        Central::start_configured(false, vec!["--recordings".into(), s3.url(prefix)], s3.env())
    }

    /// Starts a server over TLS on a new database of the tests' PostgreSQL
    /// ([`crate::pg::cluster`]) that keeps recordings in `s3`'s bucket
    /// under `prefix`: the first instance of a highly available server
    /// ([`Central::peer`] starts more).
    pub fn start_on_postgres_with_s3(s3: &crate::s3::S3Server, prefix: &str) -> Central {
        let database = crate::pg::create_database(&crate::pg::cluster());
        let extra = vec![
            "--database".into(),
            database.clone(),
            "--recordings".into(),
            s3.url(prefix),
        ];
        let mut central = Central::start_configured(false, extra, s3.env());
        central.database = Some((database, true));
        central
    }

    /// Another instance of this server (on PostgreSQL): the same database
    /// and recording store, a data directory of its own holding copies of
    /// this one's keys and TLS CA (what the admin distributes), the same
    /// admin token, a port of its own.
    pub fn peer(&self) -> Central {
        let (database, _) = self
            .database
            .clone()
            .expect("instances share a PostgreSQL database");
        let dir = tempfile::Builder::new()
            .prefix("jms-e2e-central-")
            .tempdir()
            .expect("temp dir for the central server");
        copy_keys(&self.data_dir(), &dir.path().join("data"));
        let mut peer = Central {
            dir: Some(dir),
            child: None,
            url: String::new(),
            token: self.token.clone(),
            server: self.server.clone(),
            ctl: self.ctl.clone(),
            insecure: self.insecure,
            ca: self.ca.clone(),
            extra: self.extra.clone(),
            env: self.env.clone(),
            database: Some((database, false)),
        };
        peer.url = peer.spawn("127.0.0.1:0");
        peer
    }

    /// The PostgreSQL database's URL, if the server runs on one.
    pub fn database(&self) -> Option<&str> {
        self.database.as_ref().map(|(url, _)| url.as_str())
    }

    fn start_with(insecure: bool) -> Central {
        Central::start_configured(insecure, Vec::new(), Vec::new())
    }

    fn start_configured(insecure: bool, extra: Vec<String>, env: Vec<(String, String)>) -> Central {
        let (server, ctl) = server_binaries();
        let dir = tempfile::Builder::new()
            .prefix("jms-e2e-central-")
            .tempdir()
            .expect("temp dir for the central server");
        let data = dir.path().join("data");
        // The token goes where the server keeps its data (`--database`).
        let database = extra
            .iter()
            .position(|a| a == "--database")
            .map(|i| extra[i..i + 2].to_vec())
            .unwrap_or_default();
        let out = run::run(
            Command::new(&server)
                .args(["token", "create", "--scope", "admin", "--name", "e2e"])
                .arg("--data")
                .arg(&data)
                .args(&database),
            b"",
            COMMAND_TIMEOUT,
        );
        out.assert_success("jms-server token create should make an admin token");
        let mut central = Central {
            dir: Some(dir),
            child: None,
            url: String::new(),
            token: out.stdout.trim().to_owned(),
            server,
            ctl,
            insecure,
            ca: None,
            extra,
            env,
            database: None,
        };
        central.url = central.spawn("127.0.0.1:0");
        assert_eq!(
            central.url.starts_with("https://"),
            !insecure,
            "TLS unless --insecure-http: {}",
            central.url
        );
        central.ca = (!insecure).then(|| {
            fs::read(central.data_dir().join("tls/ca.pem")).expect("the server's CA (tls/ca.pem)")
        });
        central
    }

    /// Starts the server process on `listen`; its URL.
    fn spawn(&mut self, listen: &str) -> String {
        assert!(self.child.is_none(), "jms-server is already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("server.log"))
            .expect("server.log");
        let mut child = Command::new(&self.server)
            .arg("--data")
            .arg(self.data_dir())
            .args(["--listen", listen])
            .args(self.insecure.then_some("--insecure-http"))
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start jms-server");
        let mut line = String::new();
        let mut reader = BufReader::new(child.stdout.take().expect("server stdout"));
        let _ = reader.read_line(&mut line);
        let Some(url) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jms-server did not start ({line:?}):\n{}", self.log());
        };
        // Keep reading its stdout so it never blocks on a full pipe.
        thread::spawn(move || {
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        self.child = Some(child);
        url.to_owned()
    }

    /// kill -9: the server gets no chance to clean up.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped server again on the same data and address.
    pub fn restart(&mut self) {
        let address = self.address().to_owned();
        let url = self.spawn(&address);
        assert_eq!(url, self.url, "restarted at the same address");
    }

    /// The server process's id, while it runs (for its /proc figures).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> &str {
        self.url
            .trim_start_matches("https://")
            .trim_start_matches("http://")
    }

    /// The server's CA certificate file (over TLS).
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.ca.as_ref().map(|_| self.data_dir().join("tls/ca.pem"))
    }

    /// A connection to the server that trusts its CA alone (TLS), or a
    /// plain one; reads time out after `timeout`.
    pub fn connect(&self, timeout: Duration) -> Box<dyn Stream> {
        let tcp = TcpStream::connect(self.address()).expect("connect to jms-server");
        tcp.set_read_timeout(Some(timeout)).expect("read timeout");
        let Some(ca) = &self.ca else {
            return Box::new(tcp);
        };
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls::pki_types::CertificateDer::from_pem_slice(ca).expect("a PEM CA"))
            .expect("the CA as a root");
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = self.address().rsplit_once(':').expect("HOST:PORT").0;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("a server name");
        let tls = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
        Box::new(rustls::StreamOwned::new(tls, tcp))
    }

    /// The server's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("server.log")).unwrap_or_default()
    }

    fn dir(&self) -> &Path {
        self.dir.as_ref().expect("central dir").path()
    }

    /// The server's data directory (for `jmsctl admin`, which works on it).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// `jmsctl ARGS` against this server as admin, with `stdin`.
    pub fn jmsctl_with(&self, args: &[&str], stdin: &[u8]) -> Outcome {
        run::run(&mut self.jmsctl_command(args), stdin, COMMAND_TIMEOUT)
    }

    /// The `jmsctl ARGS` command against this server as admin, to spawn
    /// (for commands that run until stopped: `jmsctl session watch`).
    pub fn jmsctl_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.ctl);
        command
            .args(args)
            .env("JMS_SERVER", &self.url)
            .env("JMS_TOKEN", &self.token);
        if let Some(ca) = self.ca_file() {
            command.env("JMS_CA", ca);
        }
        command
    }

    /// The admin API token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `jmsctl ARGS`, which must succeed.
    #[track_caller]
    /// The policy with its secrets, as `jmsctl policy export
    /// --with-secrets --json` prints it (read with [`vault_secret`]).
    pub fn export_with_secrets(&self) -> serde_json::Value {
        let out = self.jmsctl(&["policy", "export", "--with-secrets", "--json"]);
        serde_json::from_str(&out.stdout).expect("policy export JSON")
    }

    pub fn jmsctl(&self, args: &[&str]) -> Outcome {
        let out = self.jmsctl_with(args, b"");
        out.assert_success(&format!("jmsctl {}", args.join(" ")));
        out
    }

    /// One admin API request (HTTP/1.1 over [`Central::connect`]): the
    /// status and the body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let address = self.address();
        let mut stream = self.connect(COMMAND_TIMEOUT);
        let body = body.unwrap_or("");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.token,
            body.len()
        );
        stream.write_all(request.as_bytes()).expect("send request");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status from jms-server: {text:?}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// A one-time enrollment token.
    pub fn enrollment_token(&self) -> String {
        let out = self.jmsctl(&["bastion", "token", "create", "--ttl", "10m"]);
        out.stdout.trim().to_owned()
    }

    /// Switches `bastion`'s agentd to this server (see the module doc),
    /// polling `via` (this server's URL, or a [`BundleProxy`]'s).
    pub fn attach(&self, bastion: &Bastion, via: &str) {
        self.attach_as(bastion, via, "e2e-bastion");
    }

    /// [`Central::attach`] under the bastion name `name` (several
    /// bastions on one server).
    pub fn attach_as(&self, bastion: &Bastion, via: &str, name: &str) {
        let artifacts = bastion
            .artifacts
            .as_ref()
            .expect("a bastion with jms")
            .clone();
        bastion.kill_agentd();
        let config = bastion.dir().join("agentd.toml");
        // Its sshd, for the server's SSH client (pinned at enrollment).
        let sshd = format!(
            "\n[sshd]\naddress = \"127.0.0.1:{}\"\nhost_keys = [\"{}\"]\n",
            bastion.port(),
            bastion.dir().join("ssh_host_ed25519_key.pub").display()
        );
        write(&config, &(central_agentd_toml(via) + &sshd));
        let out = run::run(
            bastion
                .ns_command(&artifacts.agentd.to_string_lossy())
                .arg("--config")
                .arg(&config)
                .args(["enroll", "--server", via, "--token"])
                .arg(self.enrollment_token())
                .args(["--name", name]),
            b"",
            COMMAND_TIMEOUT,
        );
        out.assert_success("jms-agentd enroll should register the bastion");
        bastion.restart_agentd();
    }
}

impl Drop for Central {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- jms-server log ----\n{}", self.log());
        }
        self.stop();
        if std::env::var_os("JMS_E2E_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("jms-e2e: kept {}", dir.keep().display());
            }
        } else if let Some((url, true)) = &self.database {
            crate::pg::drop_database(url);
        }
    }
}

/// Copies the files of data directory `from` into `to` (made 0700), but
/// not its SQLite database: the keys and TLS files an admin copies from
/// the first instance to the others.
fn copy_keys(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::create_dir_all(to).expect("the peer's data dir");
    fs::set_permissions(to, fs::Permissions::from_mode(0o700)).expect("chmod the data dir");
    for entry in fs::read_dir(from).expect("the data dir").flatten() {
        let name = entry.file_name();
        let kind = entry.file_type().expect("a file type");
        if name.to_string_lossy().starts_with("jms.db") {
            continue;
        }
        if kind.is_dir() {
            copy_keys(&entry.path(), &to.join(&name));
        } else if kind.is_file() {
            fs::copy(entry.path(), to.join(&name)).expect("copy a key file");
        }
    }
}

/// agentd.toml for a bastion whose policy comes from `server`: the
/// namespace's paths, quick retries, long-polls.
fn central_agentd_toml(server: &str) -> String {
    format!(
        "socket = \"{AGENTD_SOCKET}\"\n\
         state_dir = \"/var/lib/jms\"\n\
         nss_cache = \"/var/cache/jms/nss.db\"\n\
         authorized_keys_user = \"nobody\"\n\
         timezone = \"UTC\"\n\
         shell = \"{AGENT_IN_NS}\"\n\
         home = \"/\"\n\
         \n\
         [central]\n\
         server = \"{server}\"\n\
         poll_interval_secs = 1\n\
         long_poll_secs = 30\n\
         timeout_secs = 10\n\
         max_staleness_secs = 3600\n"
    )
}

/// The vault's secret of `account` on `asset` in a policy export
/// ([`Central::export_with_secrets`]); empty when there is none.
pub fn vault_secret(export: &serde_json::Value, asset: &str, account: &str) -> String {
    export["assets"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["name"] == asset)
        .and_then(|a| a["accounts"].as_array())
        .into_iter()
        .flatten()
        .find(|a| a["name"] == account)
        .and_then(|a| a["secret"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Polls `check` until it gives `Some`, or fails with `what` and the last
/// outcome after a generous deadline (the machine may be loaded; nothing
/// here measures time).
#[track_caller]
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out waiting for {what}; last attempt:\n{last}")
            }
            Err(_) => thread::sleep(Duration::from_millis(250)),
        }
    }
}

// ---- the proxy -----------------------------------------------------------------

/// What the proxy answers bundle requests with.
#[derive(Debug, Clone)]
pub enum ProxyMode {
    /// Forward to the server.
    Forward,
    /// This signed bundle (or delta), sealed to the requester.
    Answer(Vec<u8>),
    /// A bare, unsigned 304 to every request, the server never asked:
    /// what a man in the middle freezing the policy would send.
    Bare304,
}

/// An HTTP forwarder in front of jms-server that can substitute bundles.
pub struct BundleProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    mode: Arc<Mutex<ProxyMode>>,
    /// Bundle requests answered with a substitute so far.
    substituted: Arc<Mutex<u64>>,
    stop: Arc<AtomicBool>,
}

impl BundleProxy {
    /// Forwards to `central` until told otherwise; signs its substitutes
    /// with the server's key.
    pub fn start(central: &Central) -> BundleProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        assert!(
            central.url.starts_with("http://"),
            "the proxy speaks plain HTTP: start the server with Central::start_insecure"
        );
        let upstream = central.url.trim_start_matches("http://").to_owned();
        let pkcs8 = fs::read(central.data_dir().join("sync.key")).expect("the server's sync.key");
        let key = Arc::new(
            ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).expect("an Ed25519 server key"),
        );
        let mode = Arc::new(Mutex::new(ProxyMode::Forward));
        let substituted = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, n, s) = (mode.clone(), substituted.clone(), stop.clone());
        thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let (m, n, upstream, key) = (m.clone(), n.clone(), upstream.clone(), key.clone());
                thread::spawn(move || {
                    let _ = serve(stream, &upstream, &m, &n, &key);
                });
            }
        });
        BundleProxy {
            url,
            mode,
            substituted,
            stop,
        }
    }

    pub fn set(&self, mode: ProxyMode) {
        *self.mode.lock().expect("proxy mode") = mode;
    }

    /// How many bundle requests got a substitute.
    pub fn substituted(&self) -> u64 {
        *self.substituted.lock().expect("proxy count")
    }
}

impl Drop for BundleProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

/// One request: read it, forward it (as `Connection: close`) or answer it.
fn serve(
    mut client: TcpStream,
    upstream: &str,
    mode: &Mutex<ProxyMode>,
    substituted: &Mutex<u64>,
    key: &ring::signature::Ed25519KeyPair,
) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    client.read_exact(&mut body)?;
    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let answer = mode.lock().expect("proxy mode").clone();
    if let ProxyMode::Bare304 = answer {
        *substituted.lock().expect("proxy count") += 1;
        client.write_all(b"HTTP/1.1 304 Not Modified\r\nconnection: close\r\n\r\n")?;
        return client.shutdown(Shutdown::Both);
    }
    if let (true, ProxyMode::Answer(signed)) = (target.starts_with("/api/v1/sync/bundle?"), answer)
    {
        let transport = target
            .split('?')
            .nth(1)
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("transport="))
            .and_then(jms_sync::bundle::unhex)
            .unwrap_or_default();
        let sealed = jms_sync::bundle::seal_for(&transport, &signed)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        *substituted.lock().expect("proxy count") += 1;
        let signed_headers = answer_headers(key, &head, &signed, &sealed);
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\n{signed_headers}connection: close\r\n\r\n",
            sealed.len()
        );
        client.write_all(response.as_bytes())?;
        client.write_all(&sealed)?;
        return client.shutdown(Shutdown::Both);
    }
    let response = forward(upstream, &head, &body)?;
    client.write_all(&response)?;
    client.shutdown(Shutdown::Both)
}

/// Sends one HTTP/1.1 request (`head` as read, without its blank line, and
/// `body`) to `upstream` with `Connection: close`; the whole response.
pub fn forward(upstream: &str, head: &str, body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream)?;
    let mut forwarded = String::new();
    for line in head.trim_end().lines() {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            forwarded.push_str(line);
            forwarded.push_str("\r\n");
        }
    }
    forwarded.push_str("Connection: close\r\n\r\n");
    server.write_all(forwarded.as_bytes())?;
    server.write_all(body)?;
    let mut response = Vec::new();
    server.read_to_end(&mut response)?;
    Ok(response)
}

/// The version and answer-signature headers (each ending in CRLF) the
/// server would put on a 200 carrying `signed` (a signed bundle or delta:
/// its version, or the version it brings) sealed as `body`, for the
/// request whose raw head is `head`.
fn answer_headers(
    key: &ring::signature::Ed25519KeyPair,
    head: &str,
    signed: &[u8],
    body: &[u8],
) -> String {
    // The body is JSON: a bundle starts `{"version":N`, a delta names
    // `"to_version":N`.
    let text = String::from_utf8_lossy(signed.get(4 + 1 + 32 + 64..).unwrap_or_default());
    let number_after = |key: &str| -> Option<u64> {
        let rest = &text[text.find(key)? + key.len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let version = number_after("\"to_version\":").or_else(|| number_after("{\"version\":"));
    signed_answer_headers(key, head, 200, version, body)
}

/// The value of header `name` in a raw HTTP head.
pub fn header_of<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The headers (each ending in CRLF) a server holding `key` adds to an
/// answer to the raw request `head`: the version and the answer signature
/// (`jms_sync::jms_sync::bundle::sign_answer`, the server's own definition).
pub fn signed_answer_headers(
    key: &ring::signature::Ed25519KeyPair,
    head: &str,
    status: u16,
    version: Option<u64>,
    body: &[u8],
) -> String {
    let mut words = head.split(' ');
    let method = words.next().unwrap_or("");
    let target = words.next().unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let binding = jms_sync::bundle::AnswerBinding {
        bastion_id: header_of(head, jms_sync::auth::headers::BASTION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        nonce: header_of(head, jms_sync::auth::headers::NONCE).unwrap_or(""),
        method,
        path,
        query,
    };
    let signature = jms_sync::bundle::sign_answer(key, &binding, status, version, body);
    let mut out = String::new();
    if let Some(version) = version {
        out.push_str(&format!(
            "{}: {version}\r\n",
            jms_sync::auth::headers::VERSION
        ));
    }
    out.push_str(&format!(
        "{}: {signature}\r\n",
        jms_sync::auth::headers::ANSWER_SIGNATURE
    ));
    out
}

/// A TCP relay in front of a server (TLS passes through it untouched): a
/// second URL for the same server, as a load balancer or another instance
/// would be, that a test can take down mid-request with [`Relay::stop`].
pub struct Relay {
    /// `https://127.0.0.1:PORT` (the scheme of the server's URL).
    pub url: String,
    stopped: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    /// Relays to `central` until stopped (or dropped).
    pub fn start(central: &Central) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the relay");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().expect("the relay's address").port();
        let scheme = if central.url.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let upstream = central.address().to_owned();
        let stopped = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop, open) = (stopped.clone(), connections.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
                for (mut from, mut to) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
                open.push(client);
                open.push(server);
            }
            // Dropping the listener: new connections are refused.
        });
        Relay {
            url: format!("{scheme}://127.0.0.1:{port}"),
            stopped,
            connections,
        }
    }

    /// Refuses new connections and cuts the open ones (requests in flight
    /// fail).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        for stream in self
            .connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = stream.shutdown(Shutdown::Both);
        }
        // Let the accept loop see the flag and drop its listener.
        thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}
