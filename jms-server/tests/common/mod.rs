//! A real jms-server on a free 127.0.0.1 port with a temporary data
//! directory, helpers to call it, and an enrolled bastion that signs its
//! sync requests.
//!
//! With `JMS_TEST_DATABASE=postgres://…` (a cluster `scripts/pg-test`
//! started), every server here runs on PostgreSQL, each test on a database
//! of its own ([`test_database`]); without it, on SQLite in its data
//! directory.
//!
//! [`Server::start`] serves plain HTTP (`--insecure-http`): these tests are
//! about the API, and many of them speak HTTP with clients of their own.
//! [`Server::start_tls`] serves TLS with the server's own CA; its clients
//! (the helpers here, jmsctl) trust that CA alone, and an enrolled
//! [`SyncBastion`] presents the client certificate it got.

#![allow(dead_code)]

/// The S3-compatible server of the e2e harness (one definition for both).
#[path = "../../../tests/src/s3.rs"]
pub mod s3;

/// The tests' PostgreSQL (one definition for both).
#[path = "../../../tests/src/pg.rs"]
pub mod pg;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use jms_sync::bundle::{hex, request_message, unhex};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

pub const SERVER: &str = env!("CARGO_BIN_EXE_jms-server");
pub const JMSCTL: &str = env!("CARGO_BIN_EXE_jmsctl");
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.yaml");

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    /// Extra `jms-server` arguments (kept for restarts).
    extra: Vec<String>,
    /// Extra environment (kept for restarts).
    env: Vec<(String, String)>,
    pub url: String,
    /// An admin token.
    pub admin: String,
    /// A read-only token.
    pub read: String,
    pub data: PathBuf,
    pub dir: tempfile::TempDir,
    /// Over TLS: the server's CA (PEM) that clients trust alone.
    pub ca: Option<String>,
    http: reqwest::blocking::Client,
}

/// A client trusting `ca` alone (PEM), with `identity` as client
/// certificate; plain without a CA.
pub fn http_client(
    ca: Option<&str>,
    identity: Option<reqwest::Identity>,
) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder();
    if let Some(ca) = ca {
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

/// Creates a token in `data` with the `jms-server token create` command.
pub fn create_token(data: &Path, scope: &str, name: &str) -> String {
    let out = Command::new(SERVER)
        .args([
            "token", "create", "--scope", scope, "--name", name, "--data",
        ])
        .arg(data)
        .args(database_args(data))
        .output()
        .expect("run jms-server token create");
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// A server started with extra arguments; its log (stderr, `RUST_LOG`
    /// warn) is in [`Server::log`].
    pub fn start_with(extra: &[&str]) -> Server {
        Server::start_with_env(extra, &[])
    }

    /// [`Server::start_with`] with extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(String, String)]) -> Server {
        let mut extra = extra.to_vec();
        extra.push("--insecure-http");
        Server::launch(&extra, env)
    }

    /// A server over TLS with its own CA (made at its first start).
    pub fn start_tls() -> Server {
        Server::launch(&[], &[])
    }

    /// A server on a new database of the PostgreSQL cluster
    /// ([`pg_cluster`]), plain HTTP, whatever `JMS_TEST_DATABASE` says.
    pub fn start_on_postgres() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let url = create_pg_database(&pg_cluster());
        std::fs::write(data.with_extension("database-url"), url).unwrap();
        Server::launch_in(dir, &["--insecure-http"], &[])
    }

    /// A server on SQLite, whatever `JMS_TEST_DATABASE` says.
    pub fn start_on_sqlite() -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("data.database-url"), "").unwrap();
        Server::launch_in(dir, &["--insecure-http"], &[])
    }

    /// Moves the server to the database at `url` (its data directory
    /// stays) and starts it again there.
    pub fn move_to(&mut self, url: &str) {
        std::fs::write(self.data.with_extension("database-url"), url).unwrap();
        self.restart();
    }

    /// Stops the server (SIGKILL); [`Server::restart`] starts it again.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Another instance on this server's database: a data directory of
    /// its own with copies of this one's key files (what the admin
    /// distributes), the same tokens.
    pub fn peer(&self) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        for entry in std::fs::read_dir(&self.data).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
            }
        }
        let url = test_database(&self.data).expect("a peer shares a PostgreSQL database");
        std::fs::write(data.with_extension("database-url"), url).unwrap();
        let (child, url) = spawn(&data, &self.extra, &self.env);
        Server {
            url,
            child,
            extra: self.extra.clone(),
            env: self.env.clone(),
            admin: self.admin.clone(),
            read: self.read.clone(),
            data,
            dir,
            http: http_client(None, None),
            ca: None,
        }
    }

    fn launch(extra: &[&str], env: &[(String, String)]) -> Server {
        Server::launch_in(tempfile::tempdir().unwrap(), extra, env)
    }

    fn launch_in(dir: tempfile::TempDir, extra: &[&str], env: &[(String, String)]) -> Server {
        let data = dir.path().join("data");
        let admin = create_token(&data, "admin", "admin");
        let read = create_token(&data, "read", "reader");
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let env = env.to_vec();
        let (child, url) = spawn(&data, &extra, &env);
        let ca = url
            .starts_with("https://")
            .then(|| std::fs::read_to_string(data.join("tls/ca.pem")).expect("the server's CA"));
        Server {
            url,
            child,
            extra,
            env,
            admin,
            read,
            data,
            dir,
            http: http_client(ca.as_deref(), None),
            ca,
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same data
    /// directory (on a new port).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, url) = spawn(&self.data, &self.extra, &self.env);
        self.child = child;
        self.url = url;
    }

    /// Calls the API; returns the status and the JSON body (Null if none).
    pub fn call(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self.http.request(method, format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().expect("server answers");
        let status = response.status().as_u16();
        let text = response.text().unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }

    /// As admin.
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(Some(&self.admin), method, path, body)
    }

    /// As admin; asserts the status.
    pub fn expect(&self, status: u16, method: &str, path: &str, body: Option<Value>) -> Value {
        let (got, value) = self.admin(method, path, body);
        assert_eq!(
            got, status,
            "{method} {path}: expected {status}, got {got}: {value}"
        );
        value
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the server logged so far (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(log_file(&self.data)).unwrap_or_default()
    }

    pub fn version(&self) -> u64 {
        self.expect(200, "GET", "/api/v1/policy/version", None)["version"]
            .as_u64()
            .unwrap()
    }

    /// Runs jmsctl against this server with the admin token.
    pub fn jmsctl(&self, args: &[&str]) -> Output {
        self.jmsctl_with(args, &self.admin, None)
    }

    /// Runs jmsctl with `token` and `stdin`.
    pub fn jmsctl_with(&self, args: &[&str], token: &str, stdin: Option<&str>) -> Output {
        let ca = self.data.join("tls/ca.pem");
        let ca = ca.to_str().unwrap();
        let mut env = vec![("JMS_SERVER", self.url.as_str()), ("JMS_TOKEN", token)];
        if self.ca.is_some() {
            env.push(("JMS_CA", ca));
        }
        jmsctl_env(args, &env, stdin)
    }
}

/// Where the server's stderr goes.
fn log_file(data: &Path) -> PathBuf {
    data.with_extension("log")
}

/// Starts jms-server on `data` and a free port; returns it and its URL.
fn spawn(data: &Path, extra: &[String], env: &[(String, String)]) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file(data))
        .expect("the server log file");
    let mut child = Command::new(SERVER)
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .args(database_args(data))
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start jms-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        let err = std::fs::read_to_string(log_file(data)).unwrap_or_default();
        panic!("jms-server did not start: {line:?} {err}");
    };
    (child, url.to_string())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        drop_test_database(&self.data);
    }
}

/// The base URL of the PostgreSQL the tests run on, if any.
pub fn pg_base() -> Option<String> {
    pg::from_env()
}

/// A new empty database on the test cluster; returns its URL.
pub fn create_pg_database(base: &str) -> String {
    pg::create_database(base)
}

/// The database of the test whose server keeps its data in `data`: made
/// at the first call (its URL kept beside `data`); `None` on SQLite.
pub fn test_database(data: &Path) -> Option<String> {
    let file = data.with_extension("database-url");
    if let Ok(url) = std::fs::read_to_string(&file) {
        // Empty: SQLite whatever the environment says.
        return (!url.is_empty()).then_some(url);
    }
    let base = pg_base()?;
    let url = create_pg_database(&base);
    std::fs::write(&file, &url).unwrap();
    Some(url)
}

/// `--database URL` on PostgreSQL, nothing on SQLite.
pub fn database_args(data: &Path) -> Vec<String> {
    match test_database(data) {
        Some(url) => vec!["--database".into(), url],
        None => Vec::new(),
    }
}

/// Drops the test's database (the cluster keeps none of them).
pub fn drop_test_database(data: &Path) {
    if let Ok(url) = std::fs::read_to_string(data.with_extension("database-url")) {
        pg::drop_database(&url);
    }
}

/// The server's services in this process, on the test's database.
pub fn services(data: &Path) -> jms_server::Services {
    jms_server::Services::open_with(data, test_database(data).as_deref()).unwrap()
}

/// Runs jmsctl with exactly these environment variables (plus PATH).
pub fn jmsctl_env(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut command = Command::new(JMSCTL);
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("run jmsctl");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// (exit code, stdout, stderr).
pub fn outcome(out: &Output) -> (i32, String, String) {
    (
        out.status.code().expect("exit code"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh Ed25519 key for a bastion.
pub fn new_bastion_key() -> Ed25519KeyPair {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
}

/// A bastion enrollment token valid for `ttl`, made with jmsctl.
pub fn bastion_token(server: &Server, ttl: &str) -> String {
    let out = server.jmsctl(&["bastion", "token", "create", "--ttl", ttl]);
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, 0, "bastion token create: {stderr}");
    let token = stdout.trim().to_string();
    assert!(token.starts_with("jmsb_"), "a token: {token}");
    token
}

/// Asks to enroll bastion `name` with `token` and `key`; returns the
/// status and the JSON answer.
pub fn enroll(server: &Server, token: &str, name: &str, key: &Ed25519KeyPair) -> (u16, Value) {
    server.call(
        None,
        "POST",
        "/api/v1/sync/enroll",
        Some(json!({
            "token": token,
            "bastion_name": name,
            "public_key": hex(key.public_key().as_ref()),
        })),
    )
}

/// An enrolled bastion: its id, key and the server key it pinned, and
/// the client it speaks with (over TLS, with its client certificate).
pub struct SyncBastion {
    pub id: i64,
    pub key: Ed25519KeyPair,
    pub server_key: Vec<u8>,
    pub http: reqwest::blocking::Client,
}

/// A fresh Ed25519 key for a bastion and its PKCS#8 (PEM).
pub fn new_bastion_key_pem() -> (Ed25519KeyPair, String) {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let pem = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &pkcs8.as_ref().to_vec().into(),
        &rcgen::PKCS_ED25519,
    )
    .unwrap()
    .serialize_pem();
    (Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(), pem)
}

/// Enrolls a new bastion called `name`.
pub fn enrolled(server: &Server, name: &str) -> SyncBastion {
    let (key, key_pem) = new_bastion_key_pem();
    let (status, body) = enroll(server, &bastion_token(server, "1h"), name, &key);
    assert_eq!(status, 200, "enrollment: {body}");
    let identity = body["client_cert"].as_str().map(|cert| {
        reqwest::Identity::from_pem(format!("{cert}{key_pem}").as_bytes())
            .expect("the client certificate and key")
    });
    assert_eq!(
        identity.is_some(),
        server.ca.is_some(),
        "a client certificate over TLS, none over plain HTTP: {body}"
    );
    SyncBastion {
        id: body["bastion_id"].as_i64().unwrap(),
        key,
        server_key: unhex(body["server_public_key"].as_str().unwrap()).unwrap(),
        http: http_client(server.ca.as_deref(), identity),
    }
}

/// Signed headers for one request at `timestamp`, by `key` claiming
/// bastion `id`.
pub fn sign_request(
    key: &Ed25519KeyPair,
    id: i64,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
    timestamp: i64,
) -> Vec<(&'static str, String)> {
    let mut nonce = [0u8; 16];
    SystemRandom::new().fill(&mut nonce).unwrap();
    let nonce = hex(&nonce);
    let signature = key.sign(&request_message(
        method, path, query, timestamp, &nonce, body,
    ));
    vec![
        (jms_sync::auth::headers::BASTION, id.to_string()),
        (jms_sync::auth::headers::TIMESTAMP, timestamp.to_string()),
        (jms_sync::auth::headers::NONCE, nonce),
        (jms_sync::auth::headers::SIGNATURE, hex(signature.as_ref())),
    ]
}

/// Sends `body` to `path_query` with `headers`; returns the status and
/// the body.
pub fn send_with_headers(
    server: &Server,
    method: &str,
    path_query: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    send_via(&server.http, server, method, path_query, headers, body)
}

/// [`send_with_headers`] with `http`.
pub fn send_via(
    http: &reqwest::blocking::Client,
    server: &Server,
    method: &str,
    path_query: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = http.request(method, format!("{}{path_query}", server.url));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    if !body.is_empty() {
        request = request
            .header("content-type", "application/json")
            .body(body.to_vec());
    }
    let response = request.send().expect("server answers");
    let status = response.status().as_u16();
    (status, response.bytes().unwrap().to_vec())
}

impl SyncBastion {
    /// Signed headers for one request made now.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Vec<(&'static str, String)> {
        let now = chrono::Utc::now().timestamp();
        sign_request(&self.key, self.id, method, path, query, body, now)
    }

    /// A signed sync request with `body` (bytes, a `Vec` or nothing:
    /// `b""`); returns the status and the body.
    pub fn send(
        &self,
        server: &Server,
        method: &str,
        path: &str,
        query: &str,
        body: impl AsRef<[u8]>,
    ) -> (u16, Vec<u8>) {
        let body = body.as_ref();
        let headers = self.sign(method, path, query, body);
        let path_query = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        send_via(&self.http, server, method, &path_query, &headers, body)
    }

    /// A signed sync request whose answer is JSON; returns the status and
    /// the answer.
    pub fn send_json(
        &self,
        server: &Server,
        method: &str,
        path: &str,
        query: &str,
        body: impl AsRef<[u8]>,
    ) -> (u16, Value) {
        let (status, bytes) = self.send(server, method, path, query, body);
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{method} {path}: not JSON ({status}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, value)
    }

    /// Uploads audit events; returns how many were new.
    pub fn upload(&self, server: &Server, events: &[Value]) -> u64 {
        let body = serde_json::to_vec(&json!({ "events": events })).unwrap();
        let (status, answer) = self.send_json(server, "POST", "/api/v1/sync/events", "", &body);
        assert_eq!(status, 200, "events: {answer}");
        answer["stored"].as_u64().unwrap()
    }
}

/// Polls `check` until it gives `Some`; fails after a generous deadline
/// (nothing here measures time).
#[track_caller]
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// The one text value `sql` selects from the test's database (SQLite's or
/// PostgreSQL's).
pub fn query_text(data: &Path, sql: &str) -> String {
    match test_database(data) {
        Some(url) => {
            let mut client = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            client.query_one(sql, &[]).unwrap().get(0)
        }
        None => rusqlite::Connection::open(data.join("jms.db"))
            .unwrap()
            .query_row(sql, [], |row| row.get(0))
            .unwrap(),
    }
}

/// The PostgreSQL the PostgreSQL-only tests run on: `JMS_TEST_DATABASE`,
/// else a private cluster this test process starts once
/// (`scripts/pg-test`), stopped and removed when the process is gone.
pub fn pg_cluster() -> String {
    pg::cluster()
}
