//! The durable event spool: every session start and end, command and file
//! transfer is appended here first, as one JSON line, and fsync'd before
//! the call returns (group commit: concurrent appends share fsyncs). The central uploader (`crate::daemon::monitor::upload`) seals
//! the open segment (`current.jsonl`) each round, sends sealed segments
//! (`<millis>-<seq>.jsonl`) with each event's `id` as the idempotency key,
//! and deletes each only once the server accepted all of it.
//!
//! The spool is bounded: past `max_bytes` an event is dropped and an alarm
//! goes to the log (once per filling, again after it drained), so a bastion
//! cut off from the central server cannot fill its disk.
//!
//! Directory 0700, files 0600: only the daemon reads them.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use chrono::Utc;
use tracing::{error, info, warn};

use crate::daemon::events::EventBody;

/// Room the spool must have for a new session to start (its start, end
/// and a few commands) under `audit.on_failure = refuse`.
pub const SESSION_ROOM_BYTES: u64 = 16 * 1024;

/// Size at which the open segment is sealed and a new one begun.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;
/// Name of the open segment.
pub const CURRENT: &str = "current.jsonl";

/// Why an event was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds `max_bytes` already: the event is dropped (alarm logged).
    #[error("spool full ({0} bytes): event dropped")]
    Full(u64),
    /// The disk failed: the event is lost (logged).
    #[error("spool: {0}")]
    Io(#[from] std::io::Error),
}

/// One spooled record: the sync contract's event line.
pub use jms_sync::event::Event;

/// The open segment's file, with the sequence number of the last event
/// written to it.
struct OpenFile {
    file: File,
    written: AtomicU64,
}

struct Segment {
    file: Option<Arc<OpenFile>>,
    current_bytes: u64,
    total_bytes: u64,
    alarmed: bool,
    sealed: u64,
    /// Events written so far (the sequence number of the last one).
    written: u64,
}

/// The spool in one directory.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment: Mutex<Segment>,
    /// Group commit: the sequence number up to which events are known to
    /// be on disk. One fsync covers every event written before it, so a
    /// burst of appends (200 logins at once) costs a few fsyncs, not one
    /// each in turn under the segment lock.
    synced: Mutex<u64>,
}

impl Spool {
    /// Opens (creating 0700) the spool in `dir`, bounded to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let total_bytes = dir_bytes(dir);
        let current_bytes = std::fs::metadata(dir.join(CURRENT))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment: Mutex::new(Segment {
                file: None,
                current_bytes,
                total_bytes,
                alarmed: false,
                sealed: 0,
                written: 0,
            }),
            synced: Mutex::new(0),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the spool can still take (recounted from the directory when
    /// it looks nearly full: the uploader may have drained it).
    pub fn room(&self) -> u64 {
        let mut segment = self.segment.lock().unwrap_or_else(|e| e.into_inner());
        if segment.total_bytes + SESSION_ROOM_BYTES > self.max_bytes {
            segment.total_bytes = dir_bytes(&self.dir);
        }
        self.max_bytes.saturating_sub(segment.total_bytes)
    }

    /// Appends one event durably (write + fsync) or says why not.
    pub fn append(&self, event: &Event) -> Result<(), SpoolError> {
        self.append_with(event, true)
    }

    /// Appends one event; with `wait_for_disk` false it returns once the
    /// line is written (the page cache survives a crash of the daemon;
    /// the next durable append or seal makes it durable too).
    pub fn append_with(&self, event: &Event, wait_for_disk: bool) -> Result<(), SpoolError> {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let len = line.len() as u64;
        let mut segment = self.segment.lock().unwrap_or_else(|e| e.into_inner());
        if segment.total_bytes + len > self.max_bytes {
            // The uploader may have drained it since we last looked.
            segment.total_bytes = dir_bytes(&self.dir);
        }
        if segment.total_bytes + len > self.max_bytes {
            if !segment.alarmed {
                segment.alarmed = true;
                error!(
                    alarm = "spool_full",
                    dir = %self.dir.display(),
                    max_bytes = self.max_bytes,
                    "the event spool is full: audit events are being dropped until it drains"
                );
            }
            return Err(SpoolError::Full(self.max_bytes));
        }
        if segment.alarmed {
            segment.alarmed = false;
            info!(dir = %self.dir.display(), "the event spool has room again");
        }
        if segment.file.is_none() {
            segment.file = Some(Arc::new(OpenFile {
                file: OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(self.dir.join(CURRENT))?,
                written: AtomicU64::new(0),
            }));
        }
        let file = Arc::clone(segment.file.as_ref().expect("opened above"));
        (&file.file).write_all(&line)?;
        segment.written += 1;
        let seq = segment.written;
        file.written.store(seq, Ordering::SeqCst);
        segment.current_bytes += len;
        segment.total_bytes += len;
        if segment.current_bytes >= SEGMENT_BYTES {
            // Sealing syncs the segment: everything up to `seq` is on disk.
            self.seal_locked(&mut segment)?;
            return Ok(());
        }
        drop(segment);
        if !wait_for_disk {
            return Ok(());
        }
        Ok(self.sync_up_to(&file, seq)?)
    }

    /// Returns once event `seq` (written to `file`) is on disk: at most
    /// one fsync at a time, each covering every event written before it.
    ///
    /// Lock order: `segment` before `synced`, never the other way.
    fn sync_up_to(&self, file: &OpenFile, seq: u64) -> std::io::Result<()> {
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        if *synced >= seq {
            return Ok(());
        }
        // Every event written to this file by now is covered by this
        // fsync; earlier files were synced when they were sealed.
        let upto = file.written.load(Ordering::SeqCst);
        file.file.sync_data()?;
        *synced = (*synced).max(upto);
        Ok(())
    }

    /// Seals the open segment if it holds anything, so the uploader can
    /// take it without waiting for it to fill.
    pub fn seal(&self) -> std::io::Result<()> {
        let mut segment = self.segment.lock().unwrap_or_else(|e| e.into_inner());
        let on_disk = std::fs::metadata(self.dir.join(CURRENT))
            .map(|m| m.len())
            .unwrap_or(0);
        if on_disk == 0 {
            return Ok(());
        }
        self.seal_locked(&mut segment)
    }

    fn seal_locked(&self, segment: &mut Segment) -> std::io::Result<()> {
        // Appends sync after releasing the segment lock: make the events
        // of the segment durable before it becomes the uploader's.
        if let Some(file) = segment.file.take() {
            file.file.sync_data()?;
        } else if let Ok(file) = File::open(self.dir.join(CURRENT)) {
            file.sync_data()?;
        }
        let mut synced = self.synced.lock().unwrap_or_else(|e| e.into_inner());
        *synced = (*synced).max(segment.written);
        drop(synced);
        segment.sealed += 1;
        let name = format!(
            "{}-{:06}.jsonl",
            Utc::now().timestamp_millis(),
            segment.sealed
        );
        std::fs::rename(self.dir.join(CURRENT), self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()?;
        segment.current_bytes = 0;
        Ok(())
    }

    /// Appends, logging (never failing) when the event cannot be kept.
    ///
    /// Login results do not wait for the disk: pam_jms waits for the
    /// answer with a short timeout, and a burst of logins behind a slow
    /// fsync would fail. Every other event is durable before this returns.
    pub fn record(&self, body: EventBody) {
        let wait_for_disk = !matches!(body, EventBody::Login { .. });
        let event = Event::now(body.bounded());
        if let Err(e) = self.append_with(&event, wait_for_disk) {
            match e {
                SpoolError::Full(_) => warn!(event = ?event, "spool full: event dropped"),
                SpoolError::Io(e) => {
                    error!(error = %e, event = ?event, "spool write failed: event lost")
                }
            }
        }
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

static GLOBAL: OnceLock<Option<Spool>> = OnceLock::new();

/// The daemon's spool (opened on first use from the configuration), or
/// `None` when its directory cannot be made (logged once).
pub fn global(config: &crate::daemon::config::AgentdConfig) -> Option<&'static Spool> {
    GLOBAL
        .get_or_init(|| {
            let dir = config.spool_dir();
            match Spool::open(&dir, config.sessions.spool_max_bytes) {
                Ok(spool) => Some(spool),
                Err(e) => {
                    error!(alarm = "spool_unavailable", dir = %dir.display(), error = %e, "cannot open the event spool: audit events will only be logged");
                    None
                }
            }
        })
        .as_ref()
}

/// Bytes of events spooled and not yet uploaded (for the bastion's report
/// to the server).
pub fn backlog(config: &crate::daemon::config::AgentdConfig) -> u64 {
    global(config).map_or(0, |spool| dir_bytes(spool.dir()))
}

/// Records `body` in the daemon's spool (or the log, if it has none).
pub fn record(config: &crate::daemon::config::AgentdConfig, body: EventBody) {
    super::open_sessions::note(config, &body);
    match global(config) {
        Some(spool) => spool.record(body),
        None => warn!(event = ?body.bounded(), "no spool: event only logged"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::events::{bounded_text, Scope, MAX_TEXT_BYTES};
    use std::os::unix::fs::MetadataExt;

    fn scope() -> Scope {
        Scope {
            session: "s1".into(),
            user: "alice".into(),
            asset: "web01".into(),
            account: "root".into(),
            username: Some("root".into()),
        }
    }

    fn command(text: &str) -> EventBody {
        EventBody::Command {
            scope: scope(),
            command: text.into(),
            kind: "interactive".into(),
            decision: "allow".into(),
            filter: None,
            typed_by: None,
        }
    }

    #[test]
    fn one_long_line_takes_a_bounded_part_of_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        // A megabyte-long denied line (a pasted blob, or on purpose).
        let long = "é".repeat(512 * 1024);
        spool.record(command(&long));
        let text = std::fs::read_to_string(dir.path().join(CURRENT)).unwrap();
        assert!(
            text.len() < MAX_TEXT_BYTES + 1024,
            "one event should take about {MAX_TEXT_BYTES} bytes, not {}",
            text.len()
        );
        let event: Event = serde_json::from_str(text.trim()).unwrap();
        let EventBody::Command { command, .. } = event.body else {
            panic!("a command event: {text}");
        };
        assert!(command.starts_with("éé"), "the start is kept");
        assert!(
            command.ends_with(&format!("…[jms: {} more bytes cut]", 1024 * 1024 - 4032)),
            "the marker says how much was cut: {}",
            &command[command.len() - 60..]
        );
        assert_eq!(bounded_text("short"), "short", "short text is unchanged");
    }

    #[test]
    fn room_counts_what_the_spool_can_still_take() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 64 * 1024).unwrap();
        assert_eq!(spool.room(), 64 * 1024);
        spool.record(command("uptime"));
        let used = std::fs::metadata(dir.path().join(CURRENT)).unwrap().len();
        assert_eq!(spool.room(), 64 * 1024 - used);
    }

    #[test]
    fn events_are_json_lines_in_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let spool = Spool::open(&spool_dir, 1 << 20).unwrap();
        spool.append(&Event::now(command("uptime"))).unwrap();
        spool.append(&Event::now(command("id"))).unwrap();
        let text = std::fs::read_to_string(spool_dir.join(CURRENT)).unwrap();
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].body, command("id"));
        assert_ne!(events[0].id, events[1].id, "ids are idempotency keys");
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["event"], "command");
        assert_eq!(line["user"], "alice");
        assert_eq!(line["command"], "uptime");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&spool_dir), 0o700);
        assert_eq!(mode(&spool_dir.join(CURRENT)), 0o600);
    }

    #[test]
    fn a_full_spool_drops_events_until_it_drains() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), 600).unwrap();
        let mut kept = 0;
        let mut refused = 0;
        for i in 0..10 {
            match spool.append(&Event::now(command(&format!("echo {i}")))) {
                Ok(()) => kept += 1,
                Err(SpoolError::Full(600)) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(kept >= 1 && refused >= 1, "kept {kept}, refused {refused}");
        assert!(std::fs::metadata(dir.path().join(CURRENT)).unwrap().len() <= 600);
        // The uploader drains it: room again.
        std::fs::remove_file(dir.path().join(CURRENT)).unwrap();
        spool.segment.lock().unwrap().file = None;
        spool.append(&Event::now(command("after"))).unwrap();
    }

    #[test]
    fn big_segments_are_sealed_for_the_uploader() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), u64::MAX).unwrap();
        let big = "x".repeat(64 * 1024);
        for _ in 0..70 {
            spool.append(&Event::now(command(&big))).unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n != CURRENT && n.ends_with(".jsonl")),
            "a sealed segment should exist: {names:?}"
        );
    }
}
