//! The audit store gate (`audit.on_failure`): before a session starts, the
//! event spool must have room and the recordings on disk must be under
//! their total cap. When they are not, an alarm goes to the log (error
//! level, `alarm = "audit_store_full"`) and, under `refuse` (the default),
//! the session is refused with a line saying why; under `continue` it goes
//! on. A session whose recording stops (its per-session cap, or a write
//! error) is ended under `refuse` (see `recording::Recorder::on_stop`).

use std::path::Path;

use jms_core::model::AuditOnFailure;
use tracing::error;

use super::spool::{self, SESSION_ROOM_BYTES};
use crate::daemon::monitor::handlers::Daemon;

/// Bytes the recordings in `dir` take together (`*.cast` files).
pub fn recordings_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".cast"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Why the audit store cannot take a new session, if it cannot.
pub fn store_full(daemon: &Daemon) -> Option<String> {
    let config = &daemon.config;
    match spool::global(config) {
        None => return Some("the audit spool cannot be opened".into()),
        Some(spool) if spool.room() < SESSION_ROOM_BYTES => {
            return Some(format!(
                "the audit spool is full ({} bytes, spool_max_bytes)",
                config.sessions.spool_max_bytes
            ))
        }
        Some(_) => {}
    }
    let cap = config.sessions.recordings_total_max_bytes;
    let used = recordings_bytes(&config.recordings_dir());
    if used >= cap {
        return Some(format!(
            "the recordings on disk reached their cap ({used} of {cap} bytes, recordings_total_max_bytes)"
        ));
    }
    None
}

/// `Err(line for the engineer)` when a new session must be refused.
pub fn admit(daemon: &Daemon) -> Result<(), String> {
    let Some(why) = store_full(daemon) else {
        return Ok(());
    };
    let mode = daemon.effective().audit_on_failure;
    error!(
        alarm = "audit_store_full",
        on_failure = ?mode,
        "{why}: {}",
        match mode {
            AuditOnFailure::Refuse => "new sessions are refused until it drains",
            AuditOnFailure::Continue => "sessions go on without a complete audit trail",
        }
    );
    match mode {
        AuditOnFailure::Refuse => Err(format!(
            "sessions are refused: {why} (audit.on_failure = refuse); tell an administrator"
        )),
        AuditOnFailure::Continue => Ok(()),
    }
}
