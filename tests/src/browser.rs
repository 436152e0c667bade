//! Headless Chromium for the web tests, driven through chromedriver
//! (WebDriver, `fantoccini`) with a fresh profile, behind a blocking
//! facade (the e2e tests are synchronous). Screenshots go to
//! `target/test-artifacts/<suite>/`, whose path [`Browser::start`] prints.
//!
//! Needs Debian's `chromium` and `chromium-driver`: without them a test
//! fails, saying so.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
/// Longest wait for anything in the browser (the machine may be loaded).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A Chromium session; chromedriver is killed on drop.
pub struct Browser {
    runtime: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
    artifacts: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

fn find_chromedriver() -> PathBuf {
    let hint =
        "install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)";
    assert!(
        Path::new(CHROMIUM).is_file(),
        "{CHROMIUM} is missing: {hint}"
    );
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("chromedriver"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("chromedriver is not on PATH: {hint}"))
}

/// `target/test-artifacts/<suite>` above the running test binary.
fn artifacts(suite: &str) -> PathBuf {
    // The test binary is target/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .ancestors()
        .nth(3)
        .expect("target directory above the test binary")
        .join("test-artifacts")
        .join(suite);
    std::fs::create_dir_all(&dir).expect("create the artifacts directory");
    dir
}

impl Browser {
    /// Starts chromedriver and a Chromium session; screenshots go to
    /// `target/test-artifacts/<suite>/`.
    pub fn start(suite: &str) -> Browser {
        let artifacts = artifacts(suite);
        eprintln!("screenshots: {}", artifacts.display());
        let chromedriver = find_chromedriver();
        let profile = tempfile::tempdir().expect("a profile directory");
        let port = free_port();
        let log = std::fs::File::create(artifacts.join("chromedriver.log")).expect("the log");
        // HOME too: Chromium keeps nothing outside the fresh profile.
        let mut driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .env("HOME", profile.path())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        // chromedriver says "... started successfully on port N" when ready.
        let mut lines = BufReader::new(driver.stdout.take().expect("its stdout"));
        let mut ready = String::new();
        while !ready.contains("successfully") {
            ready.clear();
            if lines.read_line(&mut ready).unwrap_or(0) == 0 {
                let _ = driver.kill();
                panic!("chromedriver exited before it was ready (see chromedriver.log)");
            }
        }
        std::thread::spawn(move || {
            // Keep draining its stdout so it never blocks.
            let _ = std::io::copy(&mut lines, &mut std::io::sink());
        });
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_string(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--disable-crash-reporter",
                    "--window-size=1360,1100",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = runtime.block_on(async {
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
        });
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                let _ = driver.kill();
                panic!("no Chromium session from chromedriver: {e}");
            }
        };
        Browser {
            runtime,
            client: Some(client),
            driver,
            _profile: profile,
            artifacts,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().expect("a live session")
    }

    pub fn goto(&self, url: &str) {
        self.runtime
            .block_on(self.c().goto(url))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    pub fn url(&self) -> String {
        self.runtime
            .block_on(self.c().current_url())
            .expect("the current URL")
            .to_string()
    }

    /// The text of the first element matching `css`. An element replaced
    /// between finding and reading it (the page was still loading) is
    /// found again, until [`PATIENCE`] runs out.
    pub fn text(&self, css: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        self.runtime.block_on(async {
            loop {
                let read = match self.c().find(Locator::Css(css)).await {
                    Ok(element) => element.text().await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(text) => return text,
                    Err(e) if Instant::now() > deadline => {
                        panic!("no readable `{css}` on the page: {e}")
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
    }

    /// The page's text; empty while a page is loading.
    pub fn body(&self) -> String {
        self.script("return document.body ? document.body.innerText : '';")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Types `value` into the field `css` (cleared first).
    pub fn fill(&self, css: &str, value: &str) {
        self.runtime.block_on(async {
            let field = self
                .c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no field `{css}`: {e}"));
            field.clear().await.expect("clear the field");
            field.send_keys(value).await.expect("type into the field");
        })
    }

    /// Types `value` as keys into the element `css` (not cleared first;
    /// `\n` is the Enter key).
    pub fn type_keys(&self, css: &str, value: &str) {
        self.runtime.block_on(async {
            self.c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("nothing to type into at `{css}`: {e}"))
                .send_keys(value)
                .await
                .unwrap_or_else(|e| panic!("type into `{css}`: {e}"))
        })
    }

    pub fn click(&self, css: &str) {
        self.runtime.block_on(async {
            self.c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("nothing to click at `{css}`: {e}"))
                .click()
                .await
                .unwrap_or_else(|e| panic!("click `{css}`: {e}"))
        });
    }

    /// How many elements match `css`.
    pub fn count(&self, css: &str) -> usize {
        self.runtime
            .block_on(self.c().find_all(Locator::Css(css)))
            .expect("find elements")
            .len()
    }

    /// Runs `js` in the page; its `return` value.
    pub fn script(&self, js: &str) -> Value {
        self.runtime
            .block_on(self.c().execute(js, Vec::new()))
            .unwrap_or_else(|e| panic!("script `{js}` failed: {e}"))
    }

    /// Runs `js` in the page with a callback (`arguments[0]`) it calls
    /// with its answer.
    pub fn script_async(&self, js: &str) -> Value {
        self.runtime
            .block_on(self.c().execute_async(js, Vec::new()))
            .unwrap_or_else(|e| panic!("script `{js}` failed: {e}"))
    }

    /// Waits until `check` holds, or fails with `what` (and a screenshot).
    pub fn wait_for(&self, what: &str, mut check: impl FnMut(&Browser) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !check(self) {
            if Instant::now() > deadline {
                self.screenshot("timeout");
                panic!("waited {PATIENCE:?} for {what} (screenshot timeout.png)");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Saves a screenshot as `NAME.png` in the artifacts directory.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .runtime
            .block_on(self.c().screenshot())
            .expect("a screenshot");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.runtime.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
