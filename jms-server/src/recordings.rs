//! Session recordings uploaded by bastions: resumable, in chunks, checked
//! by SHA-256 before they count.
//!
//! - Files live in `<data>/recordings/` (0700): `<session>.cast.part`
//!   while uploading, renamed to `<session>.cast` once complete; both 0600.
//!   The partial file's size is the upload offset, so an upload resumes
//!   where the server's disk says, across bastion and server restarts.
//! - A chunk (at most [`MAX_CHUNK`] bytes) is appended only at the current
//!   offset (else [`RecordingError::Conflict`] with the offset to resume
//!   from) and fsync'd before it is acknowledged.
//! - Completion names the total size and SHA-256: the server hashes the
//!   whole file; on a mismatch the partial is discarded (the bastion starts
//!   over from 0); on a match the file is renamed and its row marked
//!   complete. Completing again with the same size and hash is a no-op, so
//!   a bastion that lost the answer can ask again.
//! - A recording belongs to the bastion that sent its first chunk.
//!
//! Appends and completions are serialised by one lock: uploads are few and
//! each step is short.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jms_sync::recording::{is_recording_session_id, sha256_file};

use crate::store::{BastionRow, RecordingRow, Store, StoreError};

/// Directory of recordings in the data directory.
pub const RECORDINGS_DIR: &str = "recordings";
/// Largest chunk in one request.
pub const MAX_CHUNK: usize = 1 << 20;
/// Largest recording the server keeps (the settings' cap is 1 GiB by
/// default; this only bounds a misbehaving bastion).
pub const MAX_RECORDING: u64 = 16 << 30;

/// Why a recording request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// Malformed session id, hash or size (400).
    #[error("{0}")]
    BadInput(String),
    /// Another bastion's recording (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such (complete) recording (404).
    #[error("{0}")]
    NotFound(String),
    /// The chunk is not at the current offset, or the recording is already
    /// complete (409): resume from `offset`.
    #[error("{message}")]
    Conflict { message: String, offset: u64 },
    /// Too big a chunk or recording (413).
    #[error("{0}")]
    TooLarge(String),
    /// The uploaded bytes do not match the size or SHA-256 (422): the
    /// partial was discarded, upload again from 0.
    #[error("{0}")]
    Mismatch(String),
    /// The disk failed (500).
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This server has no recordings directory (opened without a data
    /// directory) (500).
    #[error("recordings are not stored by this server (no data directory)")]
    NoDirectory,
}

pub type Result<T> = std::result::Result<T, RecordingError>;

/// The recordings service: where recordings go, their rows in the store,
/// and the lock over uploads.
pub struct Recordings {
    dir: Option<PathBuf>,
    lock: Mutex<()>,
    store: Store,
}

impl Recordings {
    /// Recordings in `dir` (created 0700 with the first chunk); none are
    /// kept without one.
    pub fn new(store: Store, dir: Option<PathBuf>) -> Recordings {
        Recordings {
            dir,
            lock: Mutex::new(()),
            store,
        }
    }

    /// Creates the directory 0700 if it is missing.
    fn create_dir(&self) -> Result<()> {
        let dir = self.dir()?;
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
                .map_err(io_error(dir))?;
        }
        Ok(())
    }

    fn dir(&self) -> Result<&Path> {
        self.dir.as_deref().ok_or(RecordingError::NoDirectory)
    }
}

/// Where an upload stands: the sync contract's.
pub use jms_sync::recording::UploadState;

/// A session id as a file name: letters, digits, `.`, `_`, `-`, 1 to 128,
/// not starting with `.`.
pub fn check_session_id(id: &str) -> Result<()> {
    if is_recording_session_id(id) {
        Ok(())
    } else {
        Err(RecordingError::BadInput(format!(
            "session id `{}`: use 1 to 128 letters, digits, `.`, `_` or `-`",
            id.chars().take(140).collect::<String>()
        )))
    }
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> RecordingError + '_ {
    move |source| RecordingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn size_of(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(meta.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

impl Recordings {
    fn recording_paths(&self, session: &str) -> Result<(PathBuf, PathBuf)> {
        check_session_id(session)?;
        let dir = self.dir()?;
        Ok((
            dir.join(format!("{session}.cast")),
            dir.join(format!("{session}.cast.part")),
        ))
    }

    /// The stored row, refusing another bastion's recording.
    fn own_recording(&self, bastion: &BastionRow, session: &str) -> Result<Option<RecordingRow>> {
        let row = self.store.read()?.recording(session)?;
        match row {
            Some(row) if row.bastion_id != bastion.id => Err(RecordingError::Forbidden(format!(
                "recording {session} belongs to another bastion"
            ))),
            row => Ok(row),
        }
    }

    fn lock_uploads(&self) -> std::sync::MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the upload of `session` stands.
    pub fn recording_state(&self, bastion: &BastionRow, session: &str) -> Result<UploadState> {
        let (done, part) = self.recording_paths(session)?;
        let _guard = self.lock_uploads();
        let row = self.own_recording(bastion, session)?;
        let complete = row.as_ref().is_some_and(|r| r.complete);
        let offset = match (size_of(&done)?, size_of(&part)?) {
            (Some(size), _) => size,
            (None, Some(size)) => size,
            (None, None) => 0,
        };
        Ok(UploadState {
            session: session.to_string(),
            offset,
            complete,
            sha256: row.filter(|r| r.complete).and_then(|r| r.sha256),
        })
    }

    /// Appends `chunk` at `offset`; returns the new offset.
    pub fn append_recording(
        &self,
        bastion: &BastionRow,
        session: &str,
        offset: u64,
        chunk: &[u8],
    ) -> Result<u64> {
        let (done, part) = self.recording_paths(session)?;
        if chunk.len() > MAX_CHUNK {
            return Err(RecordingError::TooLarge(format!(
                "a chunk of {} bytes: send at most {MAX_CHUNK}",
                chunk.len()
            )));
        }
        let _guard = self.lock_uploads();
        let row = self.own_recording(bastion, session)?;
        if let Some(size) = size_of(&done)? {
            return Err(RecordingError::Conflict {
                message: format!("recording {session} is already uploaded ({size} bytes)"),
                offset: size,
            });
        }
        let current = size_of(&part)?.unwrap_or(0);
        if offset != current {
            return Err(RecordingError::Conflict {
                message: format!(
                    "recording {session}: the server holds {current} bytes, not {offset}: resume at {current}"
                ),
                offset: current,
            });
        }
        let end = current + chunk.len() as u64;
        if end > MAX_RECORDING {
            return Err(RecordingError::TooLarge(format!(
                "recording {session} would exceed {MAX_RECORDING} bytes"
            )));
        }
        if row.is_none() {
            let mut tx = self.store.write()?;
            tx.put_recording(&RecordingRow {
                session: session.to_string(),
                bastion_id: bastion.id,
                size: None,
                sha256: None,
                complete: false,
            })?;
            tx.commit()?;
        }
        if !chunk.is_empty() {
            self.create_dir()?;
            let mut file = OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&part)
                .map_err(io_error(&part))?;
            file.write_all(chunk).map_err(io_error(&part))?;
            file.sync_data().map_err(io_error(&part))?;
            if current == 0 {
                sync_dir(part.parent().unwrap_or(Path::new(".")));
            }
        }
        Ok(end)
    }

    /// Checks the whole upload against `size` and `sha256` (hex) and marks
    /// it complete, or discards it.
    pub fn complete_recording(
        &self,
        bastion: &BastionRow,
        session: &str,
        size: u64,
        sha256: &str,
    ) -> Result<UploadState> {
        let (done, part) = self.recording_paths(session)?;
        let sha256 = sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RecordingError::BadInput(
                "sha256: expected 64 hex digits".into(),
            ));
        }
        let _guard = self.lock_uploads();
        let row = self.own_recording(bastion, session)?;
        let state = |sha256: String| UploadState {
            session: session.to_string(),
            offset: size,
            complete: true,
            sha256: Some(sha256),
        };
        if let Some(row) = row.as_ref().filter(|r| r.complete) {
            if row.size == Some(size) && row.sha256.as_deref() == Some(sha256.as_str()) {
                return Ok(state(sha256));
            }
            return Err(RecordingError::Conflict {
                message: format!(
                    "recording {session} is already complete with another size or SHA-256"
                ),
                offset: row.size.unwrap_or(0),
            });
        }
        // The partial, or a file renamed just before a crash.
        let path = if size_of(&part)?.is_some() {
            part.clone()
        } else if size_of(&done)?.is_some() {
            done.clone()
        } else {
            return Err(RecordingError::Conflict {
                message: format!("recording {session}: nothing uploaded yet"),
                offset: 0,
            });
        };
        let (actual, actual_size) = sha256_file(&path).map_err(io_error(&path))?;
        if actual_size != size || actual != sha256 {
            fs::remove_file(&path).map_err(io_error(&path))?;
            let mut tx = self.store.write()?;
            tx.delete_recording(session)?;
            tx.commit()?;
            tracing::warn!(
                bastion = bastion.name,
                session,
                expected_size = size,
                actual_size,
                "recording upload did not match its checksum: discarded"
            );
            return Err(RecordingError::Mismatch(format!(
                "recording {session}: the server holds {actual_size} bytes with SHA-256 {actual}, \
                 not {size} bytes with {sha256}: the upload was discarded, send it again from offset 0"
            )));
        }
        if path == part {
            File::open(&part)
                .and_then(|f| f.sync_all())
                .map_err(io_error(&part))?;
            fs::rename(&part, &done).map_err(io_error(&done))?;
            sync_dir(done.parent().unwrap_or(Path::new(".")));
        }
        let mut tx = self.store.write()?;
        tx.put_recording(&RecordingRow {
            session: session.to_string(),
            bastion_id: bastion.id,
            size: Some(size),
            sha256: Some(sha256.clone()),
            complete: true,
        })?;
        tx.commit()?;
        tracing::info!(bastion = bastion.name, session, size, "recording uploaded");
        Ok(state(sha256))
    }

    /// A complete recording's file and size.
    pub fn recording_file(&self, session: &str) -> Result<(PathBuf, u64)> {
        let (done, _) = self.recording_paths(session)?;
        let row = self.store.read()?.recording(session)?;
        let none =
            || RecordingError::NotFound(format!("no complete recording of session {session}"));
        if !row.is_some_and(|r| r.complete) {
            return Err(none());
        }
        let size = size_of(&done)?.ok_or_else(none)?;
        Ok((done, size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_safe_file_names() {
        for good in ["0f8fad5b-d9cb-469f-a165-70867728950e", "s1", "a.b_c-d"] {
            assert!(check_session_id(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(129), "é"] {
            assert!(check_session_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
