//! Session recordings uploaded by bastions: resumable, in chunks, checked
//! by SHA-256 before they count, kept by a [`RecordingStorage`]: the data
//! directory ([`disk::DiskStorage`], the default) or an S3-compatible
//! object store ([`s3::S3Storage`], `--recordings s3://bucket/prefix`).
//!
//! The rules, whatever the storage:
//! - The bytes held of an upload in progress are its offset, so an upload
//!   resumes where the storage says, across bastion and server restarts
//!   and across server instances sharing the storage.
//! - A chunk (at most [`MAX_CHUNK`] bytes) is stored only at the current
//!   offset (else [`RecordingError::Conflict`] with the offset to resume
//!   from) and durably before it is acknowledged.
//! - Completion names the total size and SHA-256: the storage hashes the
//!   whole upload; on a mismatch the partial is discarded (the bastion
//!   starts over from 0); on a match it becomes the recording and its row
//!   is marked complete. Completing again with the same size and hash is a
//!   no-op, so a bastion that lost the answer can ask again.
//! - A recording belongs to the bastion that sent its first chunk.
//!
//! The steps of one upload are serialised by a lock of its own in each
//! instance (other uploads go on meanwhile); a bastion sends one upload's
//! steps one after the other, so instances need no lock between them.

pub mod disk;
pub mod s3;

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jms_sync::recording::is_recording_session_id;

use crate::store::{BastionRow, RecordingRow, Store, StoreError};

pub use disk::DiskStorage;
pub use s3::{S3Config, S3Storage};

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
    /// The object store failed or refused (500).
    #[error("recording storage: {0}")]
    Storage(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This server has no recordings directory (opened without a data
    /// directory) (500).
    #[error("recordings are not stored by this server (no data directory)")]
    NoDirectory,
}

pub type Result<T> = std::result::Result<T, RecordingError>;

/// What a storage made of a completion.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    /// The upload matched: it is now the recording.
    Stored,
    /// It did not: it was discarded. What was held instead.
    Mismatch { size: u64, sha256: String },
    /// Nothing was uploaded.
    Nothing,
}

/// A complete recording being read: its bytes and size.
pub struct RecordingReader {
    pub reader: Box<dyn Read + Send>,
    pub size: u64,
}

/// Where recordings are kept: the one seam between the upload rules
/// ([`Recordings`]) and a disk or an object store. Called from blocking
/// threads, under the lock of `session`'s upload ([`Recordings`]);
/// `session` is a checked id.
pub trait RecordingStorage: Send + Sync {
    /// The size of the complete recording of `session`, if stored.
    fn complete_size(&self, session: &str) -> Result<Option<u64>>;
    /// The bytes held of an upload in progress (0 when none).
    fn partial_size(&self, session: &str) -> Result<u64>;
    /// Stores `chunk` at `offset` if that is where the upload stands
    /// (`Ok(Err(current))` if not), durably before it returns.
    fn append(
        &self,
        session: &str,
        offset: u64,
        chunk: &[u8],
    ) -> Result<std::result::Result<(), u64>>;
    /// Hashes what was uploaded (or a recording stored just before a crash)
    /// and keeps it as the recording if it is `size` bytes with `sha256`,
    /// else discards it.
    fn finish(&self, session: &str, size: u64, sha256: &str) -> Result<Finished>;
    /// Opens the complete recording, to stream it.
    fn open(&self, session: &str) -> Result<Option<RecordingReader>>;
}

/// The recordings service: where recordings go, their rows in the store,
/// and the lock over uploads.
pub struct Recordings {
    storage: Option<Box<dyn RecordingStorage>>,
    /// One lock per upload in progress (held while its step runs).
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    store: Store,
}

impl Recordings {
    /// Recordings in `dir` (created 0700 with the first chunk); none are
    /// kept without one.
    pub fn new(store: Store, dir: Option<PathBuf>) -> Recordings {
        Recordings {
            storage: dir.map(|dir| Box::new(DiskStorage::new(dir)) as Box<dyn RecordingStorage>),
            locks: Mutex::new(HashMap::new()),
            store,
        }
    }

    /// Recordings kept by `storage`.
    pub fn with_storage(store: Store, storage: Box<dyn RecordingStorage>) -> Recordings {
        Recordings {
            storage: Some(storage),
            locks: Mutex::new(HashMap::new()),
            store,
        }
    }

    /// The same service over the same store, keeping recordings in
    /// `storage` instead (the server's `--recordings`).
    pub fn stored_in(&self, storage: Box<dyn RecordingStorage>) -> Recordings {
        Recordings::with_storage(self.store.clone(), storage)
    }

    fn storage(&self) -> Result<&dyn RecordingStorage> {
        self.storage.as_deref().ok_or(RecordingError::NoDirectory)
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

impl Recordings {
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

    /// Runs `step` under the lock of `session`'s upload: steps of one
    /// upload are serialised, uploads of other sessions go on meanwhile (a
    /// long completion does not hold up every bastion).
    fn locked<T>(&self, session: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(session.to_string())
            .or_default()
            .clone();
        let result = {
            let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            step()
        };
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else waits on it.
        if Arc::strong_count(&lock) == 2 {
            locks.remove(session);
        }
        result
    }

    /// Where the upload of `session` stands.
    pub fn recording_state(&self, bastion: &BastionRow, session: &str) -> Result<UploadState> {
        check_session_id(session)?;
        let storage = self.storage()?;
        self.locked(session, || {
            let row = self.own_recording(bastion, session)?;
            let complete = row.as_ref().is_some_and(|r| r.complete);
            let offset = match storage.complete_size(session)? {
                Some(size) => size,
                None => storage.partial_size(session)?,
            };
            Ok(UploadState {
                session: session.to_string(),
                offset,
                complete,
                sha256: row.filter(|r| r.complete).and_then(|r| r.sha256),
            })
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
        check_session_id(session)?;
        let storage = self.storage()?;
        if chunk.len() > MAX_CHUNK {
            return Err(RecordingError::TooLarge(format!(
                "a chunk of {} bytes: send at most {MAX_CHUNK}",
                chunk.len()
            )));
        }
        self.locked(session, || {
        let row = self.own_recording(bastion, session)?;
        if let Some(size) = storage.complete_size(session)? {
            return Err(RecordingError::Conflict {
                message: format!("recording {session} is already uploaded ({size} bytes)"),
                offset: size,
            });
        }
        let end = offset.saturating_add(chunk.len() as u64);
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
        if let Err(current) = storage.append(session, offset, chunk)? {
            return Err(RecordingError::Conflict {
                message: format!(
                    "recording {session}: the server holds {current} bytes, not {offset}: resume at {current}"
                ),
                offset: current,
            });
        }
        Ok(end)
        })
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
        check_session_id(session)?;
        let storage = self.storage()?;
        let sha256 = sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(RecordingError::BadInput(
                "sha256: expected 64 hex digits".into(),
            ));
        }
        self.locked(session, || {
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
        match storage.finish(session, size, &sha256)? {
            Finished::Stored => {}
            Finished::Nothing => {
                return Err(RecordingError::Conflict {
                    message: format!("recording {session}: nothing uploaded yet"),
                    offset: 0,
                })
            }
            Finished::Mismatch {
                size: actual_size,
                sha256: actual,
            } => {
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
        })
    }

    /// A complete recording, opened to be streamed.
    pub fn open_recording(&self, session: &str) -> Result<RecordingReader> {
        check_session_id(session)?;
        let storage = self.storage()?;
        let row = self.store.read()?.recording(session)?;
        let none =
            || RecordingError::NotFound(format!("no complete recording of session {session}"));
        if !row.is_some_and(|r| r.complete) {
            return Err(none());
        }
        storage.open(session)?.ok_or_else(none)
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
