//! Writing files that readers see whole: the old content or the new one,
//! never a mix (the NSS cache, the id map, private state, bundles, keys).

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` so that readers see the old file or the new one,
/// never a mix: a temp file in the same directory, fsync, chmod `mode`,
/// rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write(path, bytes, mode, true)
}

/// As [`write_atomic`] without the directory's fsync: the new content is
/// on disk before it replaces the old, but after a crash the rename may be
/// undone and the old file back (whole). Only for files written again
/// from durable state at every start (the NSS cache from the held bundle).
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write(path, bytes, mode, false)
}

/// As [`replace`] without any sync: after a crash the file may be the old
/// one, the new one, or torn. Only for files whose readers detect a torn
/// content (a checksum) and that are written again from durable state at
/// every start (the NSS cache's overlay).
pub fn replace_unsynced(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_with(path, bytes, mode, Sync::None)
}

/// How much of a write is synced.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    None,
    Content,
    ContentAndRename,
}

fn write(path: &Path, bytes: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    let sync = match durable {
        true => Sync::ContentAndRename,
        false => Sync::Content,
    };
    write_with(path, bytes, mode, sync)
}

fn write_with(path: &Path, bytes: &[u8], mode: u32, sync: Sync) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let mut temp_name = std::ffi::OsString::from(".");
    temp_name.push(file_name);
    temp_name.push(format!(
        ".tmp.{}.{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let temp = dir.join(temp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        // The umask may have narrowed the mode given at creation.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        match sync {
            Sync::ContentAndRename => file.sync_all()?,
            Sync::Content => file.sync_data()?,
            Sync::None => {}
        }
        drop(file);
        fs::rename(&temp, path)?;
        if sync == Sync::ContentAndRename {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}
