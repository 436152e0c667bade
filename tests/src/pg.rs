//! The PostgreSQL of the tests that run jms-server on it: the cluster
//! `JMS_TEST_DATABASE` names (scripts/test starts one), else a private
//! cluster this test process starts once with `scripts/pg-test` (Debian's
//! `postgresql`, which `scripts/deps --test` installs), stopped and
//! removed once the process is gone. A database of its own for each
//! test, and `psql` to read it. Shared by the e2e suite and jms-server's
//! own tests (which include this file).

use std::process::Command;

/// The base URL of the cluster named by `JMS_TEST_DATABASE`, if any.
pub fn from_env() -> Option<String> {
    std::env::var("JMS_TEST_DATABASE")
        .ok()
        .filter(|url| !url.is_empty())
}

/// The cluster's base URL (`postgres:///postgres?host=DIR&user=postgres`):
/// `JMS_TEST_DATABASE`, or a private cluster started at the first call.
pub fn cluster() -> String {
    static CLUSTER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            if let Some(url) = from_env() {
                return url;
            }
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-test");
            let dir = tempfile::Builder::new()
                .prefix("jms-pg.")
                .tempdir()
                .expect("a temp dir for the cluster")
                .keep();
            let out = Command::new(script)
                .arg("start")
                .arg(&dir)
                .output()
                .expect("run scripts/pg-test");
            assert!(
                out.status.success(),
                "scripts/pg-test start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // A watchdog (in the background: the shell returns at once)
            // stops the cluster once this process is gone.
            Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "(while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
                     {script} stop {dir}; rm -rf {dir}) </dev/null >/dev/null 2>&1 &",
                    pid = std::process::id(),
                    dir = dir.display()
                ))
                .status()
                .expect("start the cluster's watchdog");
            String::from_utf8(out.stdout)
                .expect("a URL")
                .trim()
                .to_string()
        })
        .clone()
}

/// `url` naming database `name` instead (`postgres://…/DB?…`).
pub fn url_with_db(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a postgres:// URL");
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let query = path.find('?').map_or("", |i| &path[i..]);
    format!("{scheme}://{authority}/{name}{query}")
}

/// Runs `sql` with `psql` on the database at `url`: one line per row,
/// columns separated by `|`.
pub fn psql(url: &str, sql: &str) -> Vec<String> {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql (Debian's postgresql-client)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("psql prints UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

/// A new empty database `jms_test_<random>` on the cluster at `base`; its
/// URL.
pub fn create_database(base: &str) -> String {
    let mut bytes = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("random bytes");
    let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("jms_test_{name}");
    psql(base, &format!("CREATE DATABASE {name}"));
    url_with_db(base, &name)
}

/// Drops the database at `url` if it is a test's (`jms_test_…`).
pub fn drop_database(url: &str) {
    let Some((_, rest)) = url.split_once("://") else {
        return;
    };
    let path = &rest[rest.find('/').unwrap_or(rest.len())..];
    let name = path.trim_start_matches('/').split('?').next().unwrap_or("");
    if !name.starts_with("jms_test_") {
        return;
    }
    let _ = Command::new("psql")
        .args(["-X", "-q", "-d", &url_with_db(url, "postgres"), "-c"])
        .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .output();
}
