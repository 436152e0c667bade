//! The event upload: with `[central]`, a thread sends the spool to the
//! server (`POST /api/v1/sync/events`, signed like every bastion request).
//!
//! Each round seals the open segment (when it holds anything), then sends
//! every sealed segment, oldest first, in batches of at most
//! [`BATCH_EVENTS`] events and about [`BATCH_BYTES`] bytes. The idempotency
//! key of an event is its `id`; a line without one gets
//! `spool:<segment>:<line>`, which is the same on every retry. A segment is
//! deleted only once the server answered every one of its keys as stored;
//! otherwise it stays and is sent again next round: the server stores each
//! key once, so a resend stores nothing twice. A line that is not a JSON
//! object with an `event` and a `time` (a torn write) cannot be stored by
//! the server: it is logged with an alarm and skipped.
//!
//! Recordings ([`RecordingUploader`], a thread of its own): each finished
//! recording (`<session>.cast` in the recordings dir whose session's worker
//! has exited, see [`running::is_running`]) is sent in
//! chunks of at most [`RECORDING_CHUNK`] bytes, starting at the offset the
//! server says it holds (`GET /api/v1/sync/recordings/<session>`), so an
//! upload cut by a crash of either side resumes where the server's disk
//! stopped. Then `.../complete` with the size and SHA-256: only once the
//! server confirms is the local file deleted. A mismatch makes the server
//! discard its copy; the next round sends the file again from 0.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jms_sync::recording::{
    is_recording_session_id, sha256_file, CompleteRequest, Offset, UploadState,
};
use serde::Deserialize;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::daemon::config::CentralConfig;
use crate::daemon::monitor::central::CentralClient;
use crate::daemon::monitor::enroll::Call;
use crate::daemon::monitor::running;
use crate::daemon::monitor::spool::{Spool, CURRENT};

/// Most events in one request.
pub const BATCH_EVENTS: usize = 1000;
/// Bytes (of spooled lines) after which a batch is sent.
pub const BATCH_BYTES: usize = 1 << 20;

/// Why a batch was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server could not be reached: the round stops here.
    #[error("{0:#}")]
    Unreachable(anyhow::Error),
    /// The server answered with a refusal: the next segment is tried.
    #[error("{0:#}")]
    Refused(anyhow::Error),
}

/// Sends one batch; answers the keys the server stored.
pub type Sender<'a> = dyn Fn(&[Value]) -> Result<Vec<String>, SendError> + 'a;

/// What a round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Segments fully accepted and deleted.
    pub deleted: usize,
    /// Events the server answered as stored.
    pub events: usize,
    /// Segments kept for the next round.
    pub kept: usize,
}

/// The sealed segments in `dir`, oldest first.
pub fn sealed_segments(dir: &Path) -> Vec<PathBuf> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".jsonl") && n != CURRENT && !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names.into_iter().map(|n| dir.join(n)).collect()
}

/// The events of one segment, each with its idempotency key in `id`, and
/// the bytes each line took.
fn read_segment(path: &Path) -> std::io::Result<Vec<(Value, usize)>> {
    let text = std::fs::read(path)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut events = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut event = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(map)) => map,
            _ => {
                error!(
                    alarm = "spool_line_unreadable",
                    segment = name,
                    line = i + 1,
                    text = %String::from_utf8_lossy(line),
                    "a spooled line is not a JSON event: skipped"
                );
                continue;
            }
        };
        let has = |event: &serde_json::Map<String, Value>, field: &str| {
            event
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty() && s.len() <= 256)
        };
        if !has(&event, "event") || !has(&event, "time") {
            error!(
                alarm = "spool_line_unreadable",
                segment = name,
                line = i + 1,
                text = %String::from_utf8_lossy(line),
                "a spooled event has no `event` or `time`: skipped"
            );
            continue;
        }
        if !has(&event, "id") {
            event.insert(
                "id".into(),
                Value::String(format!("spool:{name}:{}", i + 1)),
            );
        }
        events.push((Value::Object(event), line.len() + 1));
    }
    Ok(events)
}

/// Sends one segment in batches; deletes it once every key was accepted.
/// Returns how many events were accepted.
pub fn upload_segment(path: &Path, send: &Sender) -> Result<usize, SendError> {
    let events = read_segment(path).map_err(|e| {
        SendError::Refused(anyhow::Error::new(e).context(format!("reading {}", path.display())))
    })?;
    let mut accepted_total = 0;
    let mut start = 0;
    while start < events.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < events.len()
            && end - start < BATCH_EVENTS
            && (end == start || bytes + events[end].1 <= BATCH_BYTES)
        {
            bytes += events[end].1;
            end += 1;
        }
        let batch: Vec<Value> = events[start..end].iter().map(|(e, _)| e.clone()).collect();
        let accepted: HashSet<String> = send(&batch)?.into_iter().collect();
        let missing = batch
            .iter()
            .filter_map(|e| e["id"].as_str())
            .filter(|k| !accepted.contains(*k))
            .count();
        if missing > 0 {
            return Err(SendError::Refused(anyhow::anyhow!(
                "{} of {} events not accepted: {} kept",
                missing,
                batch.len(),
                path.display()
            )));
        }
        accepted_total += batch.len();
        start = end;
    }
    std::fs::remove_file(path)
        .and_then(|()| {
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::File::open(dir)?.sync_all()
        })
        .map_err(|e| {
            SendError::Refused(
                anyhow::Error::new(e).context(format!("deleting {}", path.display())),
            )
        })?;
    Ok(accepted_total)
}

/// One round: seal the open segment, send every sealed one. Never fails
/// (what went wrong is logged; what was not accepted stays for next round).
pub fn round(spool: &Spool, send: &Sender) -> Round {
    if let Err(e) = spool.seal() {
        warn!(error = %e, "cannot seal the open spool segment: it is sent later");
    }
    let (sent, kept) = send_each(
        sealed_segments(spool.dir()),
        "event upload",
        "event_upload_refused",
        |segment| upload_segment(segment, send),
    );
    let done = Round {
        deleted: sent.len(),
        events: sent.iter().sum(),
        kept,
    };
    if done.deleted > 0 {
        info!(
            segments = done.deleted,
            events = done.events,
            kept = done.kept,
            "spooled events uploaded"
        );
    }
    done
}

/// Sends `items` in order with `send`: an unreachable server stops the
/// round and keeps the rest for the next one; a refusal raises `alarm`,
/// keeps that item and goes on. The answers of the items sent, and how
/// many were kept.
fn send_each<T, R>(
    items: Vec<T>,
    what: &str,
    alarm: &'static str,
    mut send: impl FnMut(&T) -> Result<R, SendError>,
) -> (Vec<R>, usize) {
    let (mut sent, mut kept) = (Vec::new(), 0);
    let count = items.len();
    for (i, item) in items.iter().enumerate() {
        match send(item) {
            Ok(answer) => sent.push(answer),
            Err(SendError::Unreachable(e)) => {
                kept += count - i;
                warn!("{what}: {e:#}; retrying next round");
                break;
            }
            Err(SendError::Refused(e)) => {
                kept += 1;
                error!(alarm, "{what}: {e:#}; kept for the next round");
            }
        }
    }
    (sent, kept)
}

// ---- recordings ----------------------------------------------------------------

/// Largest chunk of a recording in one request (the server's limit).
pub const RECORDING_CHUNK: usize = 1 << 20;

/// Where the server's copy of a recording stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCopy {
    /// Bytes it holds.
    pub offset: u64,
    pub complete: bool,
    /// Of a complete copy.
    pub sha256: Option<String>,
}

/// What the server said to a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkAnswer {
    /// Appended: it now holds this many bytes.
    Stored(u64),
    /// Not at its offset: it holds this many bytes.
    Elsewhere(u64),
}

/// What the server said to "complete".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompleteAnswer {
    /// Checked and kept.
    Done,
    /// Size or SHA-256 differ: its copy is discarded.
    Mismatch,
    /// Already complete with other bytes, or nothing to complete.
    Conflict,
}

/// The recording routes of the sync API.
pub trait RecordingServer {
    fn copy(&self, session: &str) -> Result<ServerCopy, SendError>;
    fn put(&self, session: &str, offset: u64, chunk: &[u8]) -> Result<ChunkAnswer, SendError>;
    fn complete(&self, session: &str, size: u64, sha256: &str)
        -> Result<CompleteAnswer, SendError>;
}

/// What a recordings round did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RecordingRound {
    /// Recordings confirmed by the server and deleted here.
    pub uploaded: usize,
    /// Recordings kept for the next round.
    pub kept: usize,
}

/// The session id of a recording file name (`<id>.cast`), if it is one the
/// server takes (letters, digits, `.`, `_`, `-`).
fn recording_session(name: &str) -> Option<&str> {
    let id = name.strip_suffix(".cast")?;
    is_recording_session_id(id).then_some(id)
}

/// Finished recordings in `dir`, oldest first: `.cast` files of sessions
/// whose worker has exited (a running worker may still write its file).
pub fn finished_recordings(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter(|e| {
                    recording_session(&e.file_name().to_string_lossy())
                        .is_some_and(|id| !running::is_running(id))
                })
                .map(|e| {
                    let modified = e
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    (modified, e.path())
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// Sends one finished recording from the server's offset and completes it;
/// deletes it once the server confirms. `Ok(true)`: confirmed and deleted.
pub fn upload_recording(path: &Path, server: &dyn RecordingServer) -> Result<bool, SendError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(session) = recording_session(&name) else {
        return Err(SendError::Refused(anyhow::anyhow!(
            "{}: not a recording name",
            path.display()
        )));
    };
    let local = |e: std::io::Error| {
        SendError::Refused(anyhow::Error::new(e).context(format!("reading {}", path.display())))
    };
    let (sha256, size) = sha256_file(path).map_err(local)?;
    let copy = server.copy(session)?;
    if copy.complete {
        if copy.offset == size && copy.sha256.as_deref() == Some(sha256.as_str()) {
            // Confirmed before, deleted only now (a crash in between).
            delete_confirmed(path)?;
            return Ok(true);
        }
        return Err(SendError::Refused(anyhow::anyhow!(
            "recording {session}: the server already holds other bytes for it; {} kept",
            path.display()
        )));
    }
    let mut offset = copy.offset;
    if offset > 0 && offset < size {
        info!(session, offset, size, "resuming a recording upload");
    }
    let mut file = File::open(path).map_err(local)?;
    let mut buffer = vec![0u8; RECORDING_CHUNK];
    // Each step either advances or moves to the server's offset; a server
    // that keeps answering elsewhere stops the attempt.
    let mut moves = 0;
    while offset < size {
        let want = (size - offset).min(RECORDING_CHUNK as u64) as usize;
        file.seek(SeekFrom::Start(offset)).map_err(local)?;
        file.read_exact(&mut buffer[..want]).map_err(local)?;
        match server.put(session, offset, &buffer[..want])? {
            ChunkAnswer::Stored(now) => offset = now,
            ChunkAnswer::Elsewhere(now) => {
                moves += 1;
                if moves > 3 {
                    return Err(SendError::Refused(anyhow::anyhow!(
                        "recording {session}: the server keeps moving the offset ({now}); retrying next round"
                    )));
                }
                offset = now;
            }
        }
    }
    // Past our size (the server holds more than we have): completing
    // makes it discard its copy, and the next round starts from 0.
    match server.complete(session, size, &sha256)? {
        CompleteAnswer::Done => {
            delete_confirmed(path)?;
            Ok(true)
        }
        CompleteAnswer::Mismatch => Err(SendError::Refused(anyhow::anyhow!(
            "recording {session}: the server's copy did not match ({size} bytes, SHA-256 {sha256}) and was discarded; sending it again from 0 next round"
        ))),
        CompleteAnswer::Conflict => Err(SendError::Refused(anyhow::anyhow!(
            "recording {session}: the server refused to complete it; {} kept",
            path.display()
        ))),
    }
}

fn delete_confirmed(path: &Path) -> Result<(), SendError> {
    std::fs::remove_file(path)
        .and_then(|()| File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all())
        .map_err(|e| {
            SendError::Refused(
                anyhow::Error::new(e).context(format!("deleting {}", path.display())),
            )
        })
}

/// One round over the finished recordings in `dir`. Never fails (what went
/// wrong is logged; what was not confirmed stays for the next round).
pub fn recordings_round(dir: &Path, server: &dyn RecordingServer) -> RecordingRound {
    let (sent, kept) = send_each(
        finished_recordings(dir),
        "recording upload",
        "recording_upload_refused",
        |path| upload_recording(path, server),
    );
    let done = RecordingRound {
        uploaded: sent.len(),
        kept,
    };
    if done.uploaded > 0 {
        info!(
            recordings = done.uploaded,
            kept = done.kept,
            "recordings uploaded"
        );
    }
    done
}

/// The recording routes over HTTP, signed by the bastion key.
pub struct HttpRecordingServer {
    client: Arc<CentralClient>,
}

fn path_of(session: &str) -> String {
    jms_sync::paths::recording(session)
}

impl HttpRecordingServer {
    pub fn new(client: Arc<CentralClient>) -> HttpRecordingServer {
        HttpRecordingServer { client }
    }

    /// Sends a signed request; returns the status and the JSON answer,
    /// once the server's signature of it holds (else the server counts as
    /// unreachable and the recording stays).
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &str,
        body: Vec<u8>,
        content_type: &str,
    ) -> Result<(reqwest::StatusCode, Value), SendError> {
        let call = Call {
            content_type,
            ..Call::new(method, path, query)
        };
        let answer = self
            .client
            .call(call, body)
            .map_err(SendError::Unreachable)?;
        Ok((answer.status, answer.json()))
    }

    fn refused(status: reqwest::StatusCode, answer: &Value) -> SendError {
        SendError::Refused(anyhow::anyhow!(
            "the server refused ({status}): {}",
            answer["error"].as_str().unwrap_or("no reason given")
        ))
    }
}

impl RecordingServer for HttpRecordingServer {
    fn copy(&self, session: &str) -> Result<ServerCopy, SendError> {
        let (status, answer) =
            self.send(reqwest::Method::GET, &path_of(session), "", Vec::new(), "")?;
        if !status.is_success() {
            return Err(Self::refused(status, &answer));
        }
        let state =
            UploadState::deserialize(&answer).map_err(|_| Self::refused(status, &answer))?;
        Ok(ServerCopy {
            offset: state.offset,
            complete: state.complete,
            sha256: state.sha256,
        })
    }

    fn put(&self, session: &str, offset: u64, chunk: &[u8]) -> Result<ChunkAnswer, SendError> {
        let (status, answer) = self.send(
            reqwest::Method::PUT,
            &path_of(session),
            &format!("offset={offset}"),
            chunk.to_vec(),
            "application/octet-stream",
        )?;
        let now = Offset::deserialize(&answer).ok().map(|o| o.offset);
        match (status.as_u16(), now) {
            (200, Some(now)) => Ok(ChunkAnswer::Stored(now)),
            (409, Some(now)) => Ok(ChunkAnswer::Elsewhere(now)),
            _ => Err(Self::refused(status, &answer)),
        }
    }

    fn complete(
        &self,
        session: &str,
        size: u64,
        sha256: &str,
    ) -> Result<CompleteAnswer, SendError> {
        let body = serde_json::to_vec(&CompleteRequest {
            size,
            sha256: sha256.to_string(),
        })
        .map_err(|e| SendError::Refused(e.into()))?;
        let (status, answer) = self.send(
            reqwest::Method::POST,
            &jms_sync::paths::recording_complete(session),
            "",
            body,
            "application/json",
        )?;
        match status.as_u16() {
            200 if UploadState::deserialize(&answer).is_ok_and(|s| s.complete) => {
                Ok(CompleteAnswer::Done)
            }
            422 => Ok(CompleteAnswer::Mismatch),
            409 => Ok(CompleteAnswer::Conflict),
            _ => Err(Self::refused(status, &answer)),
        }
    }
}

/// The recording upload thread's work: a round every `interval`.
pub struct RecordingUploader {
    dir: PathBuf,
    interval: Duration,
    server: HttpRecordingServer,
    /// Serialises rounds (one thread runs them; tests may call `round`).
    busy: Mutex<()>,
}

impl RecordingUploader {
    pub fn new(
        recordings_dir: PathBuf,
        central: &CentralConfig,
        client: Arc<CentralClient>,
    ) -> RecordingUploader {
        RecordingUploader {
            dir: recordings_dir,
            interval: Duration::from_secs(central.poll_interval_secs.max(1)),
            server: HttpRecordingServer::new(client),
            busy: Mutex::new(()),
        }
    }

    pub fn round(&self) -> RecordingRound {
        let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        recordings_round(&self.dir, &self.server)
    }

    /// Runs rounds forever.
    pub fn run(&self) -> ! {
        loop {
            self.round();
            std::thread::sleep(self.interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::session::recording;
    use ring::digest::SHA256;
    use std::cell::RefCell;

    fn line(id: Option<&str>, n: usize) -> String {
        let mut v = serde_json::json!({"time": "2026-01-01T00:00:00.000Z", "event": "command", "command": format!("c{n}")});
        if let Some(id) = id {
            v["id"] = id.into();
        }
        format!("{v}\n")
    }

    fn echo(batch: &[Value]) -> Result<Vec<String>, SendError> {
        Ok(batch
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect())
    }

    #[test]
    fn a_segment_is_deleted_only_when_every_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), u64::MAX).unwrap();
        let seg = dir.path().join("1-000001.jsonl");
        std::fs::write(
            &seg,
            format!(
                "{}{}not json\n{}",
                line(Some("a"), 1),
                line(None, 2),
                line(Some("c"), 3)
            ),
        )
        .unwrap();

        // The server drops one key: the segment stays.
        let partial = |b: &[Value]| {
            echo(b).map(|mut k| {
                k.pop();
                k
            })
        };
        let r = round(&spool, &partial);
        assert_eq!((r.deleted, r.kept), (0, 1));
        assert!(seg.exists());

        // Unreachable: stays.
        let down = |_: &[Value]| -> Result<Vec<String>, SendError> {
            Err(SendError::Unreachable(anyhow::anyhow!("down")))
        };
        assert_eq!(round(&spool, &down).kept, 1);
        assert!(seg.exists());

        // Accepted: deleted; the key derived for the id-less line is stable.
        let seen = RefCell::new(Vec::new());
        let record = |b: &[Value]| {
            seen.borrow_mut().extend(echo(b).unwrap());
            echo(b)
        };
        let r = round(&spool, &record);
        assert_eq!((r.deleted, r.events, r.kept), (1, 3, 0));
        assert!(!seg.exists());
        assert_eq!(
            *seen.borrow(),
            vec!["a", "spool:1-000001.jsonl:2", "c"],
            "the unreadable line is skipped"
        );
    }

    #[test]
    fn the_open_segment_is_sealed_and_big_segments_go_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), u64::MAX).unwrap();
        let text: String = (0..BATCH_EVENTS * 2 + 5)
            .map(|n| line(Some(&format!("k{n}")), n))
            .collect();
        std::fs::write(dir.path().join(CURRENT), text).unwrap();
        let sizes = RefCell::new(Vec::new());
        let record = |b: &[Value]| {
            sizes.borrow_mut().push(b.len());
            echo(b)
        };
        let r = round(&spool, &record);
        assert_eq!(r.events, BATCH_EVENTS * 2 + 5);
        assert_eq!(*sizes.borrow(), vec![BATCH_EVENTS, BATCH_EVENTS, 5]);
        assert!(sealed_segments(dir.path()).is_empty());
        assert!(!dir.path().join(CURRENT).exists());
    }

    /// The server's rules, in memory: append only at the offset, check
    /// the whole on completion, discard on a mismatch.
    #[derive(Default)]
    struct FakeServer {
        held: RefCell<std::collections::HashMap<String, (Vec<u8>, bool)>>,
        puts: RefCell<Vec<u64>>,
        /// Fail (unreachable) after this many stored chunks.
        fail_after: RefCell<Option<usize>>,
    }

    impl RecordingServer for FakeServer {
        fn copy(&self, session: &str) -> Result<ServerCopy, SendError> {
            let held = self.held.borrow();
            let (bytes, complete) = held.get(session).cloned().unwrap_or_default();
            Ok(ServerCopy {
                offset: bytes.len() as u64,
                complete,
                sha256: complete
                    .then(|| jms_sync::bundle::hex(ring::digest::digest(&SHA256, &bytes).as_ref())),
            })
        }
        fn put(&self, session: &str, offset: u64, chunk: &[u8]) -> Result<ChunkAnswer, SendError> {
            if let Some(left) = self.fail_after.borrow_mut().as_mut() {
                if *left == 0 {
                    return Err(SendError::Unreachable(anyhow::anyhow!("down")));
                }
                *left -= 1;
            }
            assert!(chunk.len() <= RECORDING_CHUNK);
            let mut held = self.held.borrow_mut();
            let (bytes, _) = held.entry(session.to_string()).or_default();
            if offset != bytes.len() as u64 {
                return Ok(ChunkAnswer::Elsewhere(bytes.len() as u64));
            }
            self.puts.borrow_mut().push(offset);
            bytes.extend_from_slice(chunk);
            Ok(ChunkAnswer::Stored(bytes.len() as u64))
        }
        fn complete(
            &self,
            session: &str,
            size: u64,
            sha256: &str,
        ) -> Result<CompleteAnswer, SendError> {
            let mut held = self.held.borrow_mut();
            let Some((bytes, complete)) = held.get_mut(session) else {
                return Ok(CompleteAnswer::Conflict);
            };
            let actual = jms_sync::bundle::hex(ring::digest::digest(&SHA256, bytes).as_ref());
            if bytes.len() as u64 != size || actual != sha256 {
                held.remove(session);
                return Ok(CompleteAnswer::Mismatch);
            }
            *complete = true;
            Ok(CompleteAnswer::Done)
        }
    }

    fn cast(dir: &Path, session: &str, size: usize) -> (PathBuf, Vec<u8>) {
        let bytes: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        let path = dir.join(format!("{session}.cast"));
        std::fs::write(&path, &bytes).unwrap();
        (path, bytes)
    }

    #[test]
    fn a_recording_goes_in_chunks_resumes_after_a_cut_and_is_deleted_when_confirmed() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = cast(dir.path(), "s-1", RECORDING_CHUNK * 2 + 100);
        let server = FakeServer::default();
        *server.fail_after.borrow_mut() = Some(1);
        let round = recordings_round(dir.path(), &server);
        assert_eq!((round.uploaded, round.kept), (0, 1), "cut after one chunk");
        assert!(path.exists(), "kept until confirmed");
        *server.fail_after.borrow_mut() = None;
        let round = recordings_round(dir.path(), &server);
        assert_eq!((round.uploaded, round.kept), (1, 0));
        assert!(!path.exists(), "deleted once confirmed");
        assert_eq!(
            *server.puts.borrow(),
            vec![0, RECORDING_CHUNK as u64, 2 * RECORDING_CHUNK as u64],
            "resumed at the server's offset, nothing sent twice"
        );
        assert_eq!(server.held.borrow()["s-1"], (bytes, true));
    }

    #[test]
    fn a_server_copy_that_does_not_match_is_sent_again_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = cast(dir.path(), "s-2", 5000);
        let server = FakeServer::default();
        // The server holds bytes that are not ours (a torn write).
        server
            .held
            .borrow_mut()
            .insert("s-2".into(), (b"garbage".to_vec(), false));
        assert_eq!(recordings_round(dir.path(), &server).kept, 1);
        assert!(path.exists());
        assert!(!server.held.borrow().contains_key("s-2"), "discarded");
        assert_eq!(recordings_round(dir.path(), &server).uploaded, 1);
        assert_eq!(server.held.borrow()["s-2"], (bytes, true));
    }

    #[test]
    fn a_confirmed_recording_left_behind_is_deleted_and_open_ones_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (path, bytes) = cast(dir.path(), "s-3", 10);
        let server = FakeServer::default();
        server.held.borrow_mut().insert("s-3".into(), (bytes, true));
        assert_eq!(recordings_round(dir.path(), &server).uploaded, 1);
        assert!(!path.exists());
        assert!(server.puts.borrow().is_empty(), "nothing sent again");

        // A recording a running worker writes is not taken; other files
        // are ignored.
        let running = running::Running::new("s-4", "alice");
        let meta = recording::SessionMeta {
            user: "alice".into(),
            asset: "web01".into(),
            account: "root".into(),
            session: "s-4".into(),
        };
        let open = recording::Asciicast::create(
            dir.path(),
            "s-4.cast",
            &meta,
            (80, 24),
            "xterm",
            1 << 20,
            false,
        )
        .unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::write(dir.path().join("bad name.cast"), b"x").unwrap();
        assert!(finished_recordings(dir.path()).is_empty());
        drop(open);
        assert!(
            finished_recordings(dir.path()).is_empty(),
            "closed, but its worker still runs"
        );
        drop(running);
        assert_eq!(
            finished_recordings(dir.path()),
            vec![dir.path().join("s-4.cast")],
            "finished once its worker exited"
        );
    }
}
