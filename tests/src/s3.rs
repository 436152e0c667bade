//! A real S3-compatible server for the recording-storage tests: `s3s-fs`
//! (crates.io, `cargo install s3s-fs --features binary`, which
//! `scripts/deps --test` runs) on a free 127.0.0.1 port, keeping objects
//! in a temp directory, with one access key: it checks every request's
//! AWS SigV4 signature (Authorization header or presigned query) and S3's
//! multipart rules (5 MiB minimum part size). Killed when dropped. Shared
//! by the e2e suite and jms-server's own tests (which include this file).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The s3s-fs binary: `$JMS_S3S_FS`, cargo's bin directory, or `PATH`.
fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("JMS_S3S_FS") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(path) = home.map(|h| h.join("bin/s3s-fs")).filter(|p| p.exists()) {
        return path;
    }
    PathBuf::from("s3s-fs")
}

/// A running S3-compatible server with one bucket.
pub struct S3Server {
    child: Child,
    /// Where it keeps the objects (`<root>/<bucket>/<key>`).
    pub root: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl S3Server {
    /// Starts the server with the bucket `bucket` (3 to 63 lowercase
    /// letters, digits or `-`).
    pub fn start(bucket: &str) -> S3Server {
        let root = tempfile::Builder::new()
            .prefix("jms-s3-")
            .tempdir()
            .expect("temp dir for the S3 server");
        std::fs::create_dir(root.path().join(bucket)).expect("the bucket's directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let secret: String = (0..40)
            .map(|i| char::from(b'a' + ((port as usize * 7 + i * 13) % 26) as u8))
            .collect();
        let binary = binary();
        let mut child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", "JMSTESTKEY", "--secret-key", &secret])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} (scripts/deps --test installs it: cargo install s3s-fs): {e}",
                    binary.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("s3s-fs exited: {status}");
            }
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        S3Server {
            child,
            root,
            endpoint: format!("http://127.0.0.1:{port}"),
            bucket: bucket.to_string(),
            access_key_id: "JMSTESTKEY".into(),
            secret_access_key: secret,
        }
    }

    /// The environment jms-server reads for `--recordings s3://...`.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("JMS_S3_ENDPOINT", self.endpoint.as_str()),
            ("JMS_S3_REGION", "us-east-1"),
            ("JMS_S3_ACCESS_KEY_ID", self.access_key_id.as_str()),
            ("JMS_S3_SECRET_ACCESS_KEY", self.secret_access_key.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// The object `key` as the server keeps it (its file), if there.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root.path().join(&self.bucket).join(key)).ok()
    }

    /// Every file under `prefix` in the bucket, recursively (relative).
    pub fn files(&self, prefix: &str) -> Vec<String> {
        fn walk(dir: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else if let Ok(rel) = path.strip_prefix(base) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        let base = self.root.path().join(&self.bucket);
        let mut out = Vec::new();
        walk(&base.join(prefix), &base, &mut out);
        out.sort();
        out
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
