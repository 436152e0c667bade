//! A real jms-server on a free 127.0.0.1 port with a temporary data
//! directory, and helpers to call it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

pub const SERVER: &str = env!("CARGO_BIN_EXE_jms-server");
pub const JMSCTL: &str = env!("CARGO_BIN_EXE_jmsctl");
pub const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.yaml");

/// A running server; killed on drop.
pub struct Server {
    child: Child,
    pub url: String,
    /// An admin token.
    pub admin: String,
    /// A read-only token.
    pub read: String,
    pub data: PathBuf,
    pub dir: tempfile::TempDir,
    http: reqwest::blocking::Client,
}

/// Creates a token in `data` with the `jms-server token create` command.
pub fn create_token(data: &Path, scope: &str, name: &str) -> String {
    let out = Command::new(SERVER)
        .args([
            "token", "create", "--scope", scope, "--name", name, "--data",
        ])
        .arg(data)
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
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let admin = create_token(&data, "admin", "admin");
        let read = create_token(&data, "read", "reader");
        let (child, url) = spawn(&data);
        Server {
            url,
            child,
            admin,
            read,
            data,
            dir,
            http: reqwest::blocking::Client::new(),
        }
    }

    /// Kills the server (SIGKILL) and starts it again on the same data
    /// directory (on a new port).
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (child, url) = spawn(&self.data);
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
        jmsctl_env(
            args,
            &[("JMS_SERVER", &self.url), ("JMS_TOKEN", token)],
            stdin,
        )
    }
}

/// Starts jms-server on `data` and a free port; returns it and its URL.
fn spawn(data: &Path) -> (Child, String) {
    let mut child = Command::new(SERVER)
        .arg("--data")
        .arg(data)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start jms-server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let Some(url) = line.trim().strip_prefix("listening on ") else {
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).ok();
        panic!("jms-server did not start: {line:?} {err}");
    };
    (child, url.to_string())
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
