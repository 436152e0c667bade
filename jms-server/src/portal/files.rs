//! The web file manager: an engineer's files on one granted account,
//! through the same SFTP proxy the `sftp` command reaches on a bastion.
//!
//! The server never talks to a target: it opens the engineer's own SFTP
//! session on a bastion ([`SftpOpener`]: the server's SSH client, a
//! one-time ticket as her password, the `sftp` subsystem), and works in
//! the folder the bastion's SFTP root gives the account (`/account@asset`).
//! So the grant's `upload`/`download`/`delete` actions, the path checks and
//! the transfer audit are the bastion's, unchanged; what it refuses is
//! shown as its one line.
//!
//! - `GET /files?asset=A&account=B`: the page (`files.js`: browse, upload
//!   by drag and drop or picker, several files, a progress bar; download,
//!   delete, new folder, rename).
//! - `GET /files/list`, `GET /files/download` (streamed), `POST
//!   /files/upload` (the body streamed into the remote file, never held
//!   whole), `POST /files/delete|mkdir|rename`.
//!
//! One SFTP session per engineer and account is kept while used
//! ([`crate::engineers::sftp`]), so a file manager tab is one session
//! on the bastion, with its recording of operations, not one per click.

use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::engineers::{Engineer, Portal};

/// Entries of one directory shown at most.
pub const MAX_ENTRIES: usize = 5000;
/// Longest path taken.
const MAX_PATH: usize = 4096;

/// A file manager error: one line for the page.
#[derive(Debug)]
pub enum FileError {
    /// 400: the request is malformed.
    Bad(String),
    /// 403: the portal's view of the grant says no.
    Refused(String),
    /// 502: no SFTP session to the bastion.
    Unavailable(String),
    /// 409: what the bastion (or the target) answered.
    Remote(String),
}

impl IntoResponse for FileError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            FileError::Bad(m) => (StatusCode::BAD_REQUEST, m),
            FileError::Refused(m) => (StatusCode::FORBIDDEN, m),
            FileError::Unavailable(m) => (StatusCode::BAD_GATEWAY, m),
            FileError::Remote(m) => (StatusCode::CONFLICT, m),
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

/// The SFTP error as one line: the bastion's own words when it sent some.
fn remote(e: russh_sftp::client::error::Error) -> FileError {
    use russh_sftp::client::error::Error;
    match e {
        Error::Status(status) if !status.error_message.trim().is_empty() => {
            FileError::Remote(one_line(&status.error_message))
        }
        Error::Status(status) => FileError::Remote(format!("{:?}", status.status_code)),
        other => FileError::Remote(one_line(&other.to_string())),
    }
}

fn one_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    line.trim().to_string()
}

/// The account a request works on, and the path in it.
#[derive(Deserialize)]
pub struct Target {
    asset: String,
    account: String,
    #[serde(default)]
    path: String,
}

impl Target {
    /// The path on the bastion's SFTP root: `/account@asset/…`, with `.`
    /// and `..` resolved inside the account's folder.
    fn remote(&self, path: &str) -> Result<String, FileError> {
        Ok(format!(
            "/{}@{}{}",
            self.account,
            self.asset,
            normalize(path)?
        ))
    }
}

/// `path` as an absolute path with no `.` or `..` (clamped at `/`), no
/// empty component; refused when it holds a control character.
fn normalize(path: &str) -> Result<String, FileError> {
    if path.len() > MAX_PATH || path.chars().any(char::is_control) {
        return Err(FileError::Bad("not a usable path".into()));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            name => parts.push(name),
        }
    }
    Ok(parts.iter().map(|p| format!("/{p}")).collect())
}

/// A name (of a new file or folder): one path component.
fn check_name(name: &str) -> Result<&str, FileError> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.len() > 255
        || name.chars().any(char::is_control)
    {
        return Err(FileError::Bad(format!(
            "`{}` is not a file name",
            one_line(name)
        )));
    }
    Ok(name)
}

/// Whether the grant gives the engineer this account over SFTP now (the
/// bastion checks it again; this only spares it a session that cannot
/// work).
async fn granted(
    portal: &Arc<Portal>,
    engineer: &Engineer,
    target: &Target,
) -> Result<(), FileError> {
    let portal = portal.clone();
    let (user, asset, account) = (
        engineer.username.clone(),
        target.asset.clone(),
        target.account.clone(),
    );
    let ok = tokio::task::spawn_blocking(move || {
        let policy = portal.compiled().ok()?;
        let listing = policy.list(&user, chrono::Utc::now()).ok()?;
        let found = listing.iter().any(|g| {
            g.asset.name == asset
                && g.accounts.iter().any(|a| {
                    matches!(a.account, jms_core::engine::AccountRef::Real(_))
                        && a.account.name() == account
                        && a.protocols.contains(jms_core::model::Protocol::Sftp)
                        && a.actions.contains(jms_core::model::Action::Connect)
                })
        });
        Some(found)
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(FileError::Refused(format!(
            "no grant gives you {}@{} over SFTP",
            one_line(&target.account),
            one_line(&target.asset)
        )))
    }
}

/// `GET /files?asset=A&account=B`: the page.
pub async fn page(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Query(target): Query<Target>,
) -> Response {
    if let Err(e) = granted(&portal, &engineer, &target).await {
        let message = match e {
            FileError::Refused(m) | FileError::Bad(m) => m,
            _ => "refused".to_string(),
        };
        let body = html! { h1 { "Files" } p.error #error { (message) } p { a href="/" { "Back to my assets" } } };
        return (
            StatusCode::FORBIDDEN,
            super::page("Files", Some(&engineer.username), body),
        )
            .into_response();
    }
    page_markup(&engineer, &target).into_response()
}

fn page_markup(engineer: &Engineer, target: &Target) -> Markup {
    let body = html! {
        div #files data-asset=(target.asset) data-account=(target.account) {
            h1 { "Files: " (target.account) "@" (target.asset) }
            div.actions {
                span #cwd.mono { "/" }
                button #up type="button" { "Up" }
                button #mkdir type="button" { "New folder" }
                label.button #pick-label { "Upload files" input #pick type="file" multiple hidden; }
            }
            p.error #error role="alert" hidden {}
            div #drop.drop { "Drop files here to upload them into this folder." }
            div #progress hidden {
                span #progress-name {} " "
                progress #progress-bar max="100" value="0" {} " "
                span #progress-text {}
            }
            table.rows #listing {
                thead { tr { th { "Name" } th { "Size" } th { "Modified" } th { "" } } }
                tbody {}
            }
        }
        script src=(crate::web::assets::url("files.js")) {}
    };
    super::page("Files", Some(&engineer.username), body)
}

#[derive(Serialize)]
struct Entry {
    name: String,
    dir: bool,
    size: u64,
    /// Unix seconds.
    modified: Option<u64>,
}

/// `GET /files/list?asset&account&path`.
pub async fn list(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Query(target): Query<Target>,
) -> Result<Response, FileError> {
    granted(&portal, &engineer, &target).await?;
    let path = target.remote(&target.path)?;
    let session = session_for(&portal, &engineer, &target).await?;
    let entries = match session.read_dir(path).await {
        Ok(entries) => entries,
        Err(e) => {
            note_failure(&portal, &engineer, &target, &e).await;
            return Err(remote(e));
        }
    };
    let mut listed: Vec<Entry> = entries
        .take(MAX_ENTRIES)
        .filter(|e| e.file_name() != "." && e.file_name() != "..")
        .map(|e| {
            let meta = e.metadata();
            Entry {
                name: e.file_name(),
                dir: meta.is_dir(),
                size: meta.len(),
                modified: meta.mtime.map(u64::from),
            }
        })
        .collect();
    listed.sort_by(|a, b| b.dir.cmp(&a.dir).then_with(|| a.name.cmp(&b.name)));
    Ok(Json(serde_json::json!({
        "path": normalize(&target.path)?,
        "entries": listed,
    }))
    .into_response())
}

/// The engineer's SFTP session on `target` (opened through a bastion
/// when she has none yet).
async fn session_for(
    portal: &Arc<Portal>,
    engineer: &Engineer,
    target: &Target,
) -> Result<Arc<russh_sftp::client::SftpSession>, FileError> {
    portal
        .files
        .session(
            &engineer.username,
            engineer.client,
            &target.asset,
            &target.account,
        )
        .await
        .map_err(FileError::Unavailable)
}

/// A session whose stream broke is forgotten (the next request opens a
/// new one); a refusal keeps it.
async fn note_failure(
    portal: &Arc<Portal>,
    engineer: &Engineer,
    target: &Target,
    e: &russh_sftp::client::error::Error,
) {
    if !matches!(e, russh_sftp::client::error::Error::Status(_)) {
        portal
            .files
            .forget(&engineer.username, &target.asset, &target.account);
    }
}

/// `GET /files/download?asset&account&path`: the file, streamed.
pub async fn download(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Query(target): Query<Target>,
) -> Result<Response, FileError> {
    granted(&portal, &engineer, &target).await?;
    let path = target.remote(&target.path)?;
    let session = session_for(&portal, &engineer, &target).await?;
    let file = match session.open(path.clone()).await {
        Ok(file) => file,
        Err(e) => {
            note_failure(&portal, &engineer, &target, &e).await;
            return Err(remote(e));
        }
    };
    let name = path.rsplit('/').next().unwrap_or("download").to_string();
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        crate::web::layout::url_escape(&name)
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

#[derive(Deserialize)]
pub struct UploadQuery {
    asset: String,
    account: String,
    /// The folder.
    #[serde(default)]
    path: String,
    name: String,
}

/// `POST /files/upload?asset&account&path&name`: the body is the file,
/// written as it arrives.
pub async fn upload(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Result<Response, FileError> {
    let target = Target {
        asset: query.asset,
        account: query.account,
        path: query.path,
    };
    granted(&portal, &engineer, &target).await?;
    let name = check_name(&query.name)?;
    let folder = normalize(&target.path)?;
    let path = target.remote(&format!("{folder}/{name}"))?;
    let session = session_for(&portal, &engineer, &target).await?;
    let mut file = match session.create(path).await {
        Ok(file) => file,
        Err(e) => {
            note_failure(&portal, &engineer, &target, &e).await;
            return Err(remote(e));
        }
    };
    let mut stream = body.into_data_stream();
    let mut written: u64 = 0;
    loop {
        let next =
            std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut stream), cx))
                .await;
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| FileError::Bad(format!("the upload broke off: {e}")))?;
        file.write_all(&chunk)
            .await
            .map_err(|e| FileError::Remote(one_line(&e.to_string())))?;
        written += chunk.len() as u64;
    }
    file.shutdown()
        .await
        .map_err(|e| FileError::Remote(one_line(&e.to_string())))?;
    Ok(Json(serde_json::json!({ "written": written })).into_response())
}

#[derive(Deserialize)]
pub struct Change {
    asset: String,
    account: String,
    path: String,
    /// A rename's new name (in the same folder).
    #[serde(default)]
    to: Option<String>,
}

#[derive(Clone, Copy)]
enum Op {
    Delete,
    Mkdir,
    Rename,
}

async fn change(
    portal: Arc<Portal>,
    engineer: Engineer,
    change: Change,
    op: Op,
) -> Result<Response, FileError> {
    let target = Target {
        asset: change.asset,
        account: change.account,
        path: change.path,
    };
    granted(&portal, &engineer, &target).await?;
    let path = target.remote(&target.path)?;
    let session = session_for(&portal, &engineer, &target).await?;
    let result = match op {
        Op::Delete => match session.metadata(path.clone()).await {
            Ok(meta) if meta.is_dir() => session.remove_dir(path).await,
            Ok(_) => session.remove_file(path).await,
            Err(e) => Err(e),
        },
        Op::Mkdir => session.create_dir(path).await,
        Op::Rename => {
            let to = check_name(change.to.as_deref().unwrap_or_default())?;
            let folder = normalize(&target.path)?;
            let parent = folder.rsplit_once('/').map_or("", |(p, _)| p);
            let new = target.remote(&format!("{parent}/{to}"))?;
            session.rename(path, new).await
        }
    };
    if let Err(e) = result {
        note_failure(&portal, &engineer, &target, &e).await;
        return Err(remote(e));
    }
    Ok(Json(serde_json::json!({ "ok": true })).into_response())
}

/// `POST /files/delete` (JSON `{asset, account, path}`).
pub async fn delete(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Json(body): Json<Change>,
) -> Result<Response, FileError> {
    change(portal, engineer, body, Op::Delete).await
}

/// `POST /files/mkdir` (JSON `{asset, account, path}`).
pub async fn mkdir(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Json(body): Json<Change>,
) -> Result<Response, FileError> {
    change(portal, engineer, body, Op::Mkdir).await
}

/// `POST /files/rename` (JSON `{asset, account, path, to}`).
pub async fn rename(
    State(portal): State<Arc<Portal>>,
    engineer: Engineer,
    Json(body): Json<Change>,
) -> Result<Response, FileError> {
    change(portal, engineer, body, Op::Rename).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_accounts_folder() {
        assert_eq!(normalize("").unwrap(), "");
        assert_eq!(normalize("/").unwrap(), "");
        assert_eq!(normalize("/tmp/./a//b/").unwrap(), "/tmp/a/b");
        assert_eq!(normalize("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(normalize("a/../../b").unwrap(), "/b");
        assert!(normalize("/a\nb").is_err());
        let t = Target {
            asset: "web01".into(),
            account: "root".into(),
            path: String::new(),
        };
        assert_eq!(t.remote("/../x").unwrap(), "/root@web01/x");
    }

    #[test]
    fn a_name_is_one_component() {
        assert!(check_name("a.txt").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
