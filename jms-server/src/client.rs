//! A blocking client of the admin API, for `jmsctl` and tests.
//!
//! The server may be several URLs (instances of one deployment, or one
//! load-balanced URL): a request goes to the one that answered last and,
//! when it cannot be reached or answers 5xx, to the next. A request that
//! is not idempotent (POST, PATCH) moves on only when it was surely not
//! carried out: its connection failed, or the answer was 502, 503 or 504.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::blocking::{Client as Http, Response};
use reqwest::{Method, StatusCode, Url};
use serde_json::Value;

/// Why a call did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error: its message, as it gave it.
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
    /// The server could not be reached (address, TLS, timeout).
    #[error("cannot reach {server}: {message}")]
    Unreachable { server: String, message: String },
    /// The server's answer was not what the API promises.
    #[error("unexpected answer from {server}: {message}")]
    Protocol { server: String, message: String },
    /// The server URL itself is wrong.
    #[error("bad server URL `{0}`: expected http://HOST:PORT or https://HOST:PORT")]
    BadUrl(String),
}

pub type Result<T> = std::result::Result<T, ClientError>;

/// A connection to one server (one or several URLs) with one token.
pub struct Client {
    /// Every URL of the server, in the order given.
    bases: Vec<Url>,
    /// The one answering now.
    current: AtomicUsize,
    token: String,
    http: Http,
    /// The only CA the server's certificate may come from (PEM).
    ca: Option<reqwest::Certificate>,
}

/// A client that trusts only `ca` (when given: the server's own CA, as
/// `jms-server` made it), else the system's roots.
fn builder(ca: Option<&reqwest::Certificate>) -> reqwest::blocking::ClientBuilder {
    let builder = Http::builder().connect_timeout(Duration::from_secs(10));
    match ca {
        Some(ca) => builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone()),
        None => builder,
    }
}

impl Client {
    /// A client that verifies an https server by the system's roots.
    pub fn new(server: &str, token: &str) -> Result<Client> {
        Client::with_ca(server, token, None)
    }

    /// A client that verifies an https server by `ca` alone (PEM; the
    /// server's CA, `DATA/tls/ca.pem`), refusing any other CA.
    /// `server` is one URL or several separated by commas or spaces.
    pub fn with_ca(server: &str, token: &str, ca: Option<&[u8]>) -> Result<Client> {
        let bases = server
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|u| !u.is_empty())
            .map(|u| {
                let base = Url::parse(u).map_err(|_| ClientError::BadUrl(u.to_string()))?;
                if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
                    return Err(ClientError::BadUrl(u.to_string()));
                }
                Ok(base)
            })
            .collect::<Result<Vec<Url>>>()?;
        if bases.is_empty() {
            return Err(ClientError::BadUrl(server.to_string()));
        }
        let unreachable = |message: String| ClientError::Unreachable {
            server: server.to_string(),
            message,
        };
        let ca = ca
            .map(reqwest::Certificate::from_pem)
            .transpose()
            .map_err(|e| unreachable(format!("the CA certificate: {e}")))?;
        let http = builder(ca.as_ref())
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| unreachable(e.to_string()))?;
        Ok(Client {
            bases,
            current: AtomicUsize::new(0),
            token: token.to_string(),
            http,
            ca,
        })
    }

    /// The URL answering now.
    fn base(&self) -> &Url {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// The URL of `segments` (each percent-encoded on its own, so names
    /// with `?`, `#` or `%` stay one segment) with `query`, on the server
    /// URL answering now.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> Url {
        url_on(self.base(), segments, query)
    }

    /// Sends the request `make` builds for a server URL, to each URL in
    /// turn from the one answering now (module doc); the answer of the
    /// last one tried.
    fn send_failover(
        &self,
        method: &Method,
        make: impl Fn(&Url) -> reqwest::blocking::RequestBuilder,
    ) -> Result<Response> {
        let idempotent = matches!(
            *method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
        );
        let count = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let at = (start + tried) % count;
            let base = &self.bases[at];
            tried += 1;
            let last = tried >= count;
            match make(base).send() {
                Ok(response) => {
                    let status = response.status();
                    let unavailable = matches!(status.as_u16(), 502..=504);
                    if !last && status.is_server_error() && (idempotent || unavailable) {
                        tracing::warn!(server = %base, %status, "trying the next server URL");
                        continue;
                    }
                    self.current.store(at, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) if !last && (idempotent || e.is_connect()) => {
                    tracing::warn!(server = %base, error = describe(&e), "trying the next server URL");
                }
                Err(e) => {
                    return Err(ClientError::Unreachable {
                        server: base.to_string(),
                        message: describe(&e),
                    })
                }
            }
        }
    }
}

/// `base` with `segments` (each percent-encoded on its own) and `query`.
fn url_on(base: &Url, segments: &[&str], query: &[(&str, String)]) -> Url {
    let mut url = base.clone();
    {
        let mut path = url.path_segments_mut().expect("checked in new");
        path.pop_if_empty();
        path.extend(segments);
    }
    if !query.is_empty() {
        url.query_pairs_mut()
            .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
    }
    url
}

impl Client {
    /// Calls the API; `Ok(None)` for an empty success (204).
    pub fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let response = self.send_failover(&method, |base| {
            let request = self
                .http
                .request(method.clone(), url_on(base, segments, query))
                .bearer_auth(&self.token);
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        })?;
        self.answer(response)
    }

    /// GETs a file (a recording) into `out`; returns the bytes written.
    /// An error answer is read as JSON like any other.
    pub fn download(&self, segments: &[&str], out: &mut dyn std::io::Write) -> Result<u64> {
        let mut response = self.send_failover(&Method::GET, |base| {
            self.http
                .get(url_on(base, segments, &[]))
                .bearer_auth(&self.token)
        })?;
        if !response.status().is_success() {
            self.answer(response)?;
            return Err(self.protocol("an error status without an error"));
        }
        response.copy_to(out).map_err(|e| ClientError::Unreachable {
            server: self.base().to_string(),
            message: describe(&e),
        })
    }

    /// GETs a response that streams for as long as the server sends
    /// (Server-Sent Events): no overall timeout. An error answer is read
    /// as JSON like any other.
    pub fn stream(&self, segments: &[&str]) -> Result<Response> {
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            server: self.base().to_string(),
            message: describe(&e),
        };
        let http = builder(self.ca.as_ref())
            .timeout(None)
            .build()
            .map_err(unreachable)?;
        let response = self.send_failover(&Method::GET, |base| {
            http.get(url_on(base, segments, &[]))
                .bearer_auth(&self.token)
                .header(reqwest::header::ACCEPT, "text/event-stream")
        })?;
        if !response.status().is_success() {
            self.answer(response)?;
            return Err(self.protocol("an error status without an error"));
        }
        Ok(response)
    }

    pub fn get(&self, segments: &[&str], query: &[(&str, String)]) -> Result<Value> {
        self.call(Method::GET, segments, query, None)?
            .ok_or_else(|| self.protocol("empty answer to a GET"))
    }

    fn answer(&self, response: Response) -> Result<Option<Value>> {
        let status = response.status();
        let text = response.text().map_err(|e| ClientError::Unreachable {
            server: self.base().to_string(),
            message: describe(&e),
        })?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || text.is_empty() {
                return Ok(None);
            }
            return serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| self.protocol(&format!("bad JSON: {e}")));
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| {
                let text = text.trim();
                if text.is_empty() {
                    status.canonical_reason().unwrap_or("error").to_string()
                } else {
                    text.chars().take(200).collect()
                }
            });
        Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        })
    }

    fn protocol(&self, message: &str) -> ClientError {
        ClientError::Protocol {
            server: self.base().to_string(),
            message: message.to_string(),
        }
    }
}

/// reqwest's error with its causes, on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
