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

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tracing::{error, info, warn};

use crate::daemon::session::spool::{Spool, CURRENT};

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
    let mut done = Round::default();
    let segments = sealed_segments(spool.dir());
    let count = segments.len();
    for (i, segment) in segments.into_iter().enumerate() {
        match upload_segment(&segment, send) {
            Ok(events) => {
                done.deleted += 1;
                done.events += events;
            }
            Err(SendError::Unreachable(e)) => {
                done.kept += count - i;
                warn!("event upload: {e:#}; retrying next round");
                break;
            }
            Err(SendError::Refused(e)) => {
                done.kept += 1;
                error!(
                    alarm = "event_upload_refused",
                    "event upload: {e:#}; retrying next round"
                );
            }
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
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
}
