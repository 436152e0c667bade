//! Recordings in an S3-compatible object store (`--recordings
//! s3://bucket/prefix`): each acknowledged chunk is an object
//! `<prefix>partial/<session>/<offset, 20 digits>` (the contiguous chunks
//! from 0 are the offset, so any instance can resume an upload); completion
//! streams the chunks in order through SHA-256 and, on a match, composes
//! them into `<prefix><session>.cast` with a multipart upload (parts of
//! [`PART_SIZE`], S3's 5 MiB minimum respected) or one PUT when it is
//! small, then deletes the chunks. Requests are signed with AWS SigV4 by
//! `rusty-s3` and sent with the server's reqwest; nothing is held whole in
//! memory (one part at most). Every body carries its Content-MD5, so the
//! store keeps nothing that did not arrive as sent. Configuration:
//! [`S3Config::from_env`].

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::{Method, StatusCode, Url};
use rusty_s3::actions::ListObjectsV2;
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};

use super::{Finished, RecordingError, RecordingReader, RecordingStorage, Result, MAX_CHUNK};

/// Size of one part of the composed object (S3 wants at least 5 MiB for
/// every part but the last).
pub const PART_SIZE: usize = 8 << 20;
/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// Most staged chunks remembered for the offset fast path.
const CACHE_MAX: usize = 4096;
/// Most of an error answer kept for the message.
const ERROR_BODY_MAX: u64 = 4096;

/// Where and how to reach the object store.
#[derive(Clone)]
pub struct S3Config {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`…
    pub endpoint: Url,
    pub bucket: String,
    /// Key prefix, empty or ending in `/`.
    pub prefix: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Virtual-host style (`bucket.host`) rather than path style.
    pub virtual_host: bool,
    /// Extra CA (PEM) to trust for the endpoint.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        write!(
            f,
            "s3://{}/{} at {} ({})",
            self.bucket, self.prefix, self.endpoint, self.region
        )
    }
}

/// The environment variables read by [`S3Config::from_env`].
pub const ENV_ENDPOINT: &str = "JMS_S3_ENDPOINT";
pub const ENV_REGION: &str = "JMS_S3_REGION";
pub const ENV_ACCESS_KEY_ID: &str = "JMS_S3_ACCESS_KEY_ID";
pub const ENV_SECRET_ACCESS_KEY: &str = "JMS_S3_SECRET_ACCESS_KEY";
pub const ENV_SECRET_ACCESS_KEY_FILE: &str = "JMS_S3_SECRET_ACCESS_KEY_FILE";
pub const ENV_URL_STYLE: &str = "JMS_S3_URL_STYLE";
pub const ENV_CA_FILE: &str = "JMS_S3_CA_FILE";

impl S3Config {
    /// `url` is `s3://bucket[/prefix]`; the rest comes from `env` (the
    /// process environment, which the packaged service reads from
    /// /etc/jms/jms-server.env): `JMS_S3_ENDPOINT` (required),
    /// `JMS_S3_REGION` (`us-east-1`), `JMS_S3_ACCESS_KEY_ID` and
    /// `JMS_S3_SECRET_ACCESS_KEY` (or `AWS_ACCESS_KEY_ID` and
    /// `AWS_SECRET_ACCESS_KEY`; or the secret alone in the file
    /// `JMS_S3_SECRET_ACCESS_KEY_FILE`), `JMS_S3_URL_STYLE` (`path`, or
    /// `virtual-host`), `JMS_S3_CA_FILE` (a PEM CA to trust).
    pub fn from_env(
        url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<S3Config, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("recordings `{url}`: expected s3://bucket/prefix"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(format!(
                "recordings bucket `{bucket}`: 3 to 63 lowercase letters, digits, `-` or `.`"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(format!(
                "recordings prefix `{prefix}`: no empty, `.` or `..` part"
            ));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let get = |name: &str| env(name).filter(|v| !v.is_empty());
        let endpoint = get(ENV_ENDPOINT)
            .ok_or_else(|| format!("recordings in S3: set {ENV_ENDPOINT} (the store's URL)"))?;
        let endpoint =
            Url::parse(&endpoint).map_err(|e| format!("{ENV_ENDPOINT} `{endpoint}`: {e}"))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.host_str().is_none() {
            return Err(format!("{ENV_ENDPOINT}: expected http(s)://host[:port]"));
        }
        let access_key_id = get(ENV_ACCESS_KEY_ID)
            .or_else(|| get("AWS_ACCESS_KEY_ID"))
            .ok_or_else(|| format!("recordings in S3: set {ENV_ACCESS_KEY_ID}"))?;
        let secret_access_key = match get(ENV_SECRET_ACCESS_KEY_FILE) {
            Some(path) => std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| format!("{ENV_SECRET_ACCESS_KEY_FILE} {path}: {e}"))?,
            None => get(ENV_SECRET_ACCESS_KEY)
                .or_else(|| get("AWS_SECRET_ACCESS_KEY"))
                .ok_or_else(|| {
                    format!("recordings in S3: set {ENV_SECRET_ACCESS_KEY} or {ENV_SECRET_ACCESS_KEY_FILE}")
                })?,
        };
        if secret_access_key.is_empty() {
            return Err("recordings in S3: the secret access key is empty".to_string());
        }
        let virtual_host = match get(ENV_URL_STYLE).as_deref() {
            None | Some("path") => false,
            Some("virtual-host") => true,
            Some(other) => {
                return Err(format!(
                    "{ENV_URL_STYLE} `{other}`: expected `path` or `virtual-host`"
                ))
            }
        };
        let ca_pem = match get(ENV_CA_FILE) {
            Some(path) => {
                Some(std::fs::read(&path).map_err(|e| format!("{ENV_CA_FILE} {path}: {e}"))?)
            }
            None => None,
        };
        Ok(S3Config {
            endpoint,
            bucket: bucket.to_string(),
            prefix,
            region: get(ENV_REGION).unwrap_or_else(|| "us-east-1".into()),
            access_key_id,
            secret_access_key,
            virtual_host,
            ca_pem,
        })
    }
}

/// Recordings in one bucket under one prefix.
pub struct S3Storage {
    config: S3Config,
    bucket: Bucket,
    credentials: Credentials,
    /// Made on first use, on a blocking thread.
    client: OnceLock<std::result::Result<Client, String>>,
    /// Offset each upload reached through this instance: the fast path of
    /// [`RecordingStorage::append`] (a miss lists the chunks).
    offsets: Mutex<HashMap<String, u64>>,
}

/// A ListObjectsV2 answer: what is used of it.
#[derive(serde::Deserialize)]
struct Listing {
    #[serde(rename = "Contents", default)]
    contents: Vec<Listed>,
    #[serde(rename = "NextContinuationToken")]
    next_continuation_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct Listed {
    #[serde(rename = "Key")]
    key: String,
    #[serde(rename = "Size")]
    size: u64,
}

/// One staged chunk.
#[derive(Debug, Clone)]
struct Staged {
    offset: u64,
    key: String,
    size: u64,
}

fn storage_error(what: impl std::fmt::Display) -> RecordingError {
    RecordingError::Storage(what.to_string())
}

impl S3Storage {
    pub fn new(config: S3Config) -> std::result::Result<S3Storage, String> {
        let style = if config.virtual_host {
            UrlStyle::VirtualHost
        } else {
            UrlStyle::Path
        };
        let bucket = Bucket::new(
            config.endpoint.clone(),
            style,
            config.bucket.clone(),
            config.region.clone(),
        )
        .map_err(|e| format!("recordings bucket: {e}"))?;
        let credentials = Credentials::new(
            config.access_key_id.clone(),
            config.secret_access_key.clone(),
        );
        Ok(S3Storage {
            config,
            bucket,
            credentials,
            client: OnceLock::new(),
            offsets: Mutex::new(HashMap::new()),
        })
    }

    /// `s3://bucket/prefix at endpoint`, for logs.
    pub fn describe(&self) -> String {
        format!("{:?}", self.config)
    }

    fn client(&self) -> Result<&Client> {
        let client = self.client.get_or_init(|| {
            let mut builder = Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .timeout(None::<Duration>)
                .pool_idle_timeout(Duration::from_secs(30));
            if let Some(pem) = &self.config.ca_pem {
                let ca = reqwest::Certificate::from_pem(pem).map_err(|e| format!("CA: {e}"))?;
                builder = builder.add_root_certificate(ca);
            }
            builder.build().map_err(|e| e.to_string())
        });
        client.as_ref().map_err(storage_error)
    }

    fn final_key(&self, session: &str) -> String {
        format!("{}{session}.cast", self.config.prefix)
    }

    fn staged_prefix(&self, session: &str) -> String {
        format!("{}partial/{session}/", self.config.prefix)
    }

    fn offsets(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.offsets.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a signed request; a 404 is `Ok(None)`, another failure an
    /// error carrying S3's code (never the signed URL).
    fn send(
        &self,
        method: Method,
        url: Url,
        what: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<Response>> {
        let mut request = self.client()?.request(method, url);
        if let Some(body) = body {
            // The store refuses a body that does not arrive as sent.
            use base64::Engine as _;
            use md5::Digest as _;
            let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(&body));
            request = request.header("content-md5", md5).body(body);
        }
        let response = request
            .send()
            .map_err(|e| storage_error(format!("{what}: {}", e.without_url())))?;
        let status = response.status();
        if status.is_success() {
            return Ok(Some(response));
        }
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let mut text = String::new();
        let _ = response.take(ERROR_BODY_MAX).read_to_string(&mut text);
        let code = between(&text, "<Code>", "</Code>").unwrap_or("");
        Err(storage_error(format!("{what}: {status} {code}")))
    }

    fn must(&self, response: Option<Response>, what: &str) -> Result<Response> {
        response.ok_or_else(|| storage_error(format!("{what}: 404 (no such bucket or key)")))
    }

    /// Every staged chunk of `session`, by offset.
    fn staged(&self, session: &str) -> Result<Vec<Staged>> {
        let prefix = self.staged_prefix(session);
        let mut staged = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = ListObjectsV2::new(&self.bucket, Some(&self.credentials));
            list.with_prefix(prefix.as_str());
            if let Some(token) = &token {
                list.with_continuation_token(token.as_str());
            }
            let response = self.send(Method::GET, list.sign(SIGNED_FOR), "list chunks", None)?;
            let response = self.must(response, "list chunks")?;
            let body = response
                .bytes()
                .map_err(|e| storage_error(format!("list chunks: {}", e.without_url())))?;
            let parsed: Listing = quick_xml::de::from_reader(&body[..])
                .map_err(|e| storage_error(format!("list chunks: {e}")))?;
            for object in parsed.contents {
                let Some(offset) = object
                    .key
                    .strip_prefix(&prefix)
                    .filter(|o| o.len() == 20)
                    .and_then(|o| o.parse::<u64>().ok())
                else {
                    continue;
                };
                staged.push(Staged {
                    offset,
                    key: object.key,
                    size: object.size,
                });
            }
            match parsed.next_continuation_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        staged.sort_by_key(|s| s.offset);
        Ok(staged)
    }

    /// The chunks that follow each other from offset 0, and where they end.
    /// A chunk starting inside another (a chunk sent again with another
    /// length) is left out.
    fn contiguous(staged: &[Staged]) -> (Vec<Staged>, u64) {
        let mut chain = Vec::new();
        let mut end = 0u64;
        for chunk in staged {
            if chunk.offset == end && chunk.size > 0 {
                end += chunk.size;
                chain.push(chunk.clone());
            } else if chunk.offset > end {
                break;
            }
        }
        (chain, end)
    }

    fn get(&self, key: &str, what: &str) -> Result<Option<Response>> {
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        self.send(Method::GET, url, what, None)
    }

    fn put(&self, key: &str, body: Vec<u8>, what: &str) -> Result<()> {
        let url = self
            .bucket
            .put_object(Some(&self.credentials), key)
            .sign(SIGNED_FOR);
        let response = self.send(Method::PUT, url, what, Some(body))?;
        self.must(response, what)?;
        Ok(())
    }

    /// Deletes `keys` one by one (DeleteObjects is not implemented alike
    /// by every S3-compatible store; a recording has few chunks per MiB).
    fn delete_keys(&self, keys: &[String]) -> Result<()> {
        for key in keys {
            let url = self
                .bucket
                .delete_object(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            self.send(Method::DELETE, url, "delete chunk", None)?;
        }
        Ok(())
    }

    fn delete_staged(&self, session: &str) -> Result<()> {
        self.offsets().remove(session);
        let keys: Vec<String> = self.staged(session)?.into_iter().map(|s| s.key).collect();
        self.delete_keys(&keys)
    }

    fn delete_final(&self, session: &str) -> Result<()> {
        let key = self.final_key(session);
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        self.send(Method::DELETE, url, "delete recording", None)?;
        Ok(())
    }

    /// Streams the chunks through SHA-256 into the final object; on a
    /// mismatch nothing is kept.
    fn compose(
        &self,
        session: &str,
        chain: &[Staged],
        size: u64,
        sha256: &str,
    ) -> Result<Finished> {
        let key = self.final_key(session);
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buffer: Vec<u8> = Vec::with_capacity(PART_SIZE + MAX_CHUNK);
        let mut upload: Option<(String, Vec<String>)> = None;
        let mut total = 0u64;
        let result = (|| -> Result<bool> {
            for chunk in chain {
                if chunk.size > MAX_CHUNK as u64 {
                    return Err(storage_error(format!("chunk {} is too large", chunk.key)));
                }
                let response = self.get(&chunk.key, "read chunk")?;
                let response = self.must(response, "read chunk")?;
                let start = buffer.len();
                response
                    .take(MAX_CHUNK as u64 + 1)
                    .read_to_end(&mut buffer)
                    .map_err(|e| storage_error(format!("read chunk: {e}")))?;
                if (buffer.len() - start) as u64 != chunk.size {
                    return Err(storage_error(format!(
                        "chunk {} changed while it was read",
                        chunk.key
                    )));
                }
                context.update(&buffer[start..]);
                total += chunk.size;
                if total > size {
                    return Ok(false);
                }
                if buffer.len() >= PART_SIZE {
                    self.upload_part(&key, &mut upload, &mut buffer)?;
                }
            }
            Ok(true)
        })();
        let digest = jms_sync::bundle::hex(context.finish().as_ref());
        let matched = match result {
            Ok(within) => within && total == size && digest == sha256,
            Err(e) => {
                self.abort(&key, upload.as_ref());
                return Err(e);
            }
        };
        if !matched {
            self.abort(&key, upload.as_ref());
            self.delete_staged(session)?;
            return Ok(Finished::Mismatch {
                size: total,
                sha256: digest,
            });
        }
        match upload {
            None => self.put(&key, buffer, "store recording")?,
            Some(mut started) => {
                if !buffer.is_empty() {
                    let mut upload = Some(started);
                    self.upload_part(&key, &mut upload, &mut buffer)?;
                    started = upload.expect("still started");
                }
                if let Err(e) = self.complete(&key, &started) {
                    self.abort(&key, Some(&started));
                    return Err(e);
                }
            }
        }
        self.delete_staged(session)?;
        Ok(Finished::Stored)
    }

    fn upload_part(
        &self,
        key: &str,
        upload: &mut Option<(String, Vec<String>)>,
        buffer: &mut Vec<u8>,
    ) -> Result<()> {
        if upload.is_none() {
            let url = self
                .bucket
                .create_multipart_upload(Some(&self.credentials), key)
                .sign(SIGNED_FOR);
            let response = self.send(Method::POST, url, "start multipart upload", None)?;
            let body = self
                .must(response, "start multipart upload")?
                .bytes()
                .map_err(|e| {
                    storage_error(format!("start multipart upload: {}", e.without_url()))
                })?;
            let parsed = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
                .map_err(|e| storage_error(format!("start multipart upload: {e}")))?;
            *upload = Some((parsed.upload_id().to_string(), Vec::new()));
        }
        let (id, etags) = upload.as_mut().expect("started above");
        let number = u16::try_from(etags.len() + 1).map_err(|_| storage_error("too many parts"))?;
        let url = self
            .bucket
            .upload_part(Some(&self.credentials), key, number, id)
            .sign(SIGNED_FOR);
        let body = std::mem::replace(buffer, Vec::with_capacity(PART_SIZE + MAX_CHUNK));
        let response = self.send(Method::PUT, url, "upload part", Some(body))?;
        let response = self.must(response, "upload part")?;
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| storage_error("upload part: no ETag in the answer"))?;
        etags.push(etag.to_string());
        Ok(())
    }

    fn complete(&self, key: &str, (id, etags): &(String, Vec<String>)) -> Result<()> {
        let action = self.bucket.complete_multipart_upload(
            Some(&self.credentials),
            key,
            id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGNED_FOR);
        let body = action.body();
        let response = self.send(
            Method::POST,
            url,
            "complete multipart upload",
            Some(body.into_bytes()),
        )?;
        // S3 may answer 200 with an error in the body.
        let mut text = String::new();
        self.must(response, "complete multipart upload")?
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| storage_error(format!("complete multipart upload: {e}")))?;
        if text.contains("<Error>") {
            let code = between(&text, "<Code>", "</Code>").unwrap_or("");
            return Err(storage_error(format!("complete multipart upload: {code}")));
        }
        Ok(())
    }

    fn abort(&self, key: &str, upload: Option<&(String, Vec<String>)>) {
        if let Some((id, _)) = upload {
            let url = self
                .bucket
                .abort_multipart_upload(Some(&self.credentials), key, id)
                .sign(SIGNED_FOR);
            if let Err(e) = self.send(Method::DELETE, url, "abort multipart upload", None) {
                tracing::warn!(error = %e, "multipart upload left for the bucket's lifecycle rule");
            }
        }
    }
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let end = text[start..].find(close)? + start;
    Some(&text[start..end]).filter(|s| s.len() <= 64)
}

impl RecordingStorage for S3Storage {
    fn complete_size(&self, session: &str) -> Result<Option<u64>> {
        let key = self.final_key(session);
        let url = self
            .bucket
            .head_object(Some(&self.credentials), &key)
            .sign(SIGNED_FOR);
        let Some(response) = self.send(Method::HEAD, url, "look up recording", None)? else {
            return Ok(None);
        };
        Ok(Some(content_length(&response)?))
    }

    fn partial_size(&self, session: &str) -> Result<u64> {
        let (_, end) = Self::contiguous(&self.staged(session)?);
        let mut offsets = self.offsets();
        if offsets.len() >= CACHE_MAX {
            offsets.clear();
        }
        offsets.insert(session.to_string(), end);
        Ok(end)
    }

    fn append(
        &self,
        session: &str,
        offset: u64,
        chunk: &[u8],
    ) -> Result<std::result::Result<(), u64>> {
        let known = self.offsets().get(session).copied();
        if known != Some(offset) {
            let current = self.partial_size(session)?;
            if current != offset {
                return Ok(Err(current));
            }
        }
        if !chunk.is_empty() {
            let key = format!("{}{offset:020}", self.staged_prefix(session));
            self.put(&key, chunk.to_vec(), "store chunk")?;
            self.offsets()
                .insert(session.to_string(), offset + chunk.len() as u64);
        }
        Ok(Ok(()))
    }

    fn finish(&self, session: &str, size: u64, sha256: &str) -> Result<Finished> {
        let staged = self.staged(session)?;
        // A recording composed just before a crash (or a lost answer).
        if let Some(response) = self.get(&self.final_key(session), "read recording")? {
            let (actual, actual_size) = jms_sync::recording::sha256_reader(response)
                .map_err(|e| storage_error(format!("read recording: {e}")))?;
            if actual_size == size && actual == sha256 {
                if !staged.is_empty() {
                    self.delete_staged(session)?;
                }
                return Ok(Finished::Stored);
            }
            self.delete_final(session)?;
            if staged.is_empty() {
                return Ok(Finished::Mismatch {
                    size: actual_size,
                    sha256: actual,
                });
            }
        }
        if staged.is_empty() {
            return Ok(Finished::Nothing);
        }
        let (chain, _) = Self::contiguous(&staged);
        self.compose(session, &chain, size, sha256)
    }

    fn open(&self, session: &str) -> Result<Option<RecordingReader>> {
        let Some(response) = self.get(&self.final_key(session), "read recording")? else {
            return Ok(None);
        };
        let size = content_length(&response)?;
        Ok(Some(RecordingReader {
            reader: Box::new(response),
            size,
        }))
    }
}

fn content_length(response: &Response) -> Result<u64> {
    response
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| storage_error("no Content-Length in the store's answer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn config_from_url_and_environment() {
        let vars = [
            (ENV_ENDPOINT, "http://127.0.0.1:9000"),
            ("AWS_ACCESS_KEY_ID", "AK"),
            (ENV_SECRET_ACCESS_KEY, "SECRET"),
        ];
        let config = S3Config::from_env("s3://jms-rec/a/b/", env(&vars)).unwrap();
        assert_eq!(config.bucket, "jms-rec");
        assert_eq!(config.prefix, "a/b/");
        assert_eq!(config.region, "us-east-1");
        assert_eq!(config.access_key_id, "AK");
        assert!(!format!("{config:?}").contains("SECRET"));
        let bare = S3Config::from_env("s3://jms-rec", env(&vars)).unwrap();
        assert_eq!(bare.prefix, "");
        for bad in [
            "jms-rec",
            "s3://x",
            "s3://Upper/p",
            "s3://jms-rec/a/../b",
            "s3://jms-rec/a//b",
        ] {
            assert!(
                S3Config::from_env(bad, env(&vars)).is_err(),
                "{bad} accepted"
            );
        }
        assert!(S3Config::from_env("s3://jms-rec", env(&vars[1..])).is_err());
        // The secret from a file, over the variable.
        let file = std::env::temp_dir().join(format!("jms-s3-secret-{}", std::process::id()));
        std::fs::write(&file, "FROM-FILE\n").unwrap();
        let path = file.to_str().unwrap().to_string();
        let with_file = [
            vars[0],
            vars[1],
            vars[2],
            (ENV_SECRET_ACCESS_KEY_FILE, path.as_str()),
        ];
        let config = S3Config::from_env("s3://jms-rec", env(&with_file)).unwrap();
        std::fs::remove_file(&file).unwrap();
        assert_eq!(config.secret_access_key, "FROM-FILE");
        assert!(
            S3Config::from_env("s3://jms-rec", env(&with_file)).is_err(),
            "a missing file"
        );
    }

    #[test]
    fn the_offset_is_where_the_chunks_from_zero_stop() {
        let s = |offset, size| Staged {
            offset,
            key: format!("{offset:020}"),
            size,
        };
        // 0..10, 10..20, a chunk resent with another length at 10 (left
        // out), then a gap.
        let staged = [s(0, 10), s(10, 10), s(15, 3), s(20, 5), s(40, 5)];
        let (chain, end) = S3Storage::contiguous(&staged);
        assert_eq!(end, 25);
        assert_eq!(
            chain.iter().map(|c| c.offset).collect::<Vec<_>>(),
            [0, 10, 20]
        );
        assert_eq!(S3Storage::contiguous(&[s(5, 5)]).1, 0);
    }
}
