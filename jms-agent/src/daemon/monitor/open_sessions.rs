//! The sessions this bastion has open, on disk: one small file per session
//! (`<state_dir>/open-sessions/<id>.json`, 0600), written when its
//! `session_start` is spooled and removed with its `session_end`. A session
//! that jms-agentd never saw end (the daemon crashed, was killed or the host
//! lost power; its sessions died with it) would otherwise stay "online" on
//! the central server forever: at startup, [`close_leftovers`] spools a
//! `session_end` for each file left behind, with the reason.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::daemon::config::AgentdConfig;
use crate::daemon::events::{EventBody, Scope};

/// Why a leftover session is closed.
pub const CUT_SHORT: &str = "cut short: jms-agentd stopped while the session ran";

/// What is kept of an open session: enough for its `session_end`.
#[derive(Debug, Serialize, Deserialize)]
struct OpenSession {
    scope: Scope,
    started: DateTime<Utc>,
    recording: Option<String>,
}

fn dir(config: &AgentdConfig) -> PathBuf {
    config.state_dir.join("open-sessions")
}

/// Session ids are UUIDs; anything else never becomes a file name.
fn file_of(dir: &Path, session: &str) -> Option<PathBuf> {
    let safe = !session.is_empty()
        && session.len() <= 64
        && session.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    safe.then(|| dir.join(format!("{session}.json")))
}

/// Notes a session's start or end, as its event is spooled.
pub fn note(config: &AgentdConfig, body: &EventBody) {
    let dir = dir(config);
    match body {
        EventBody::SessionStart {
            scope, recording, ..
        } => {
            let Some(path) = file_of(&dir, &scope.session) else {
                return;
            };
            let open = OpenSession {
                scope: scope.clone(),
                started: Utc::now(),
                recording: recording.clone(),
            };
            let bytes = serde_json::to_vec(&open).expect("open sessions serialise");
            let written = fs::create_dir_all(&dir)
                .and_then(|()| jms_core::atomic_file::write_atomic(&path, &bytes, 0o600));
            if let Err(e) = written {
                warn!(path = %path.display(), error = %e, "cannot note the open session");
            }
        }
        EventBody::SessionEnd { scope, .. } => {
            if let Some(path) = file_of(&dir, &scope.session) {
                let _ = fs::remove_file(path);
            }
        }
        _ => {}
    }
}

/// How many sessions are open now (for the bastion's report to the server).
pub fn count(config: &AgentdConfig) -> u64 {
    fs::read_dir(dir(config))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count() as u64
        })
        .unwrap_or(0)
}

/// Spools (through `record`, the monitor's `spool::record`) a
/// `session_end` for every session a previous run left open, and forgets
/// them. Call once at startup, before serving.
pub fn close_leftovers(config: &AgentdConfig, mut record: impl FnMut(EventBody)) {
    let dir = dir(config);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let open: Option<OpenSession> = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        match open {
            Some(open) => {
                let lasted = (Utc::now() - open.started).num_milliseconds().max(0);
                info!(
                    session = open.scope.session,
                    "closing a session left open by a previous run"
                );
                record(EventBody::SessionEnd {
                    scope: open.scope,
                    exit_status: None,
                    reason: Some(CUT_SHORT.to_string()),
                    duration_ms: lasted as u64,
                    bytes_in: 0,
                    bytes_out: 0,
                    recording: open.recording,
                    recording_truncated: true,
                    output: None,
                });
            }
            None => warn!(path = %path.display(), "unreadable open-session note: removed"),
        }
        let _ = fs::remove_file(&path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuid_like_ids_become_file_names() {
        let dir = Path::new("/x");
        assert!(file_of(dir, "0f0e-aa").is_some());
        for bad in ["", "../etc/passwd", "a/b", "x.json", &"a".repeat(65)] {
            assert!(file_of(dir, bad).is_none(), "{bad:?}");
        }
    }
}
