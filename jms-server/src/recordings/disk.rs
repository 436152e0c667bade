//! Recordings in the data directory: `<dir>/<session>.cast.part` while
//! uploading (its size is the offset), renamed to `<session>.cast` once
//! complete; the directory 0700, the files 0600, each chunk fsync'd.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use jms_sync::recording::sha256_file;

use super::{Finished, RecordingError, RecordingReader, RecordingStorage, Result};

/// Recordings in one directory.
pub struct DiskStorage {
    dir: PathBuf,
}

impl DiskStorage {
    /// Recordings in `dir` (created 0700 with the first chunk).
    pub fn new(dir: PathBuf) -> DiskStorage {
        DiskStorage { dir }
    }

    fn paths(&self, session: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{session}.cast")),
            self.dir.join(format!("{session}.cast.part")),
        )
    }

    /// Creates the directory 0700 if it is missing.
    fn create_dir(&self) -> Result<()> {
        let dir = &self.dir;
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

impl RecordingStorage for DiskStorage {
    fn complete_size(&self, session: &str) -> Result<Option<u64>> {
        size_of(&self.paths(session).0)
    }

    fn partial_size(&self, session: &str) -> Result<u64> {
        Ok(size_of(&self.paths(session).1)?.unwrap_or(0))
    }

    fn append(
        &self,
        session: &str,
        offset: u64,
        chunk: &[u8],
    ) -> Result<std::result::Result<(), u64>> {
        let (_, part) = self.paths(session);
        let current = size_of(&part)?.unwrap_or(0);
        if offset != current {
            return Ok(Err(current));
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
                sync_dir(&self.dir);
            }
        }
        Ok(Ok(()))
    }

    fn finish(&self, session: &str, size: u64, sha256: &str) -> Result<Finished> {
        let (done, part) = self.paths(session);
        // The partial, or a file renamed just before a crash.
        let path = if size_of(&part)?.is_some() {
            part.clone()
        } else if size_of(&done)?.is_some() {
            done.clone()
        } else {
            return Ok(Finished::Nothing);
        };
        let (actual, actual_size) = sha256_file(&path).map_err(io_error(&path))?;
        if actual_size != size || actual != sha256 {
            fs::remove_file(&path).map_err(io_error(&path))?;
            return Ok(Finished::Mismatch {
                size: actual_size,
                sha256: actual,
            });
        }
        if path == part {
            File::open(&part)
                .and_then(|f| f.sync_all())
                .map_err(io_error(&part))?;
            fs::rename(&part, &done).map_err(io_error(&done))?;
            sync_dir(&self.dir);
        }
        Ok(Finished::Stored)
    }

    fn open(&self, session: &str) -> Result<Option<RecordingReader>> {
        let (done, _) = self.paths(session);
        let file = match File::open(&done) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&done)(e)),
        };
        let size = file.metadata().map_err(io_error(&done))?.len();
        Ok(Some(RecordingReader {
            reader: Box::new(file),
            size,
        }))
    }
}
