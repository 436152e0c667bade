//! A watched session's output, pushed by the bastion to the server
//! (`POST` [`crate::paths::live`]) while an admin watches: batches of
//! asciicast output events, the first carrying the terminal's size and
//! what its screen shows, the last saying why the session ended; the
//! server answers whether anyone still watches.

use serde::{Deserialize, Serialize};

/// Largest batch body the server reads (bytes).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Largest terminal side the server believes (columns or rows).
pub const MAX_TERMINAL_SIDE: u16 = 1000;

/// One push of a watched session's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveBatch {
    /// The first batch of a stream: the terminal's `[cols, rows]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<(u16, u16)>,
    /// The first batch of a stream: the recent output that paints the
    /// screen as it is now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Output since the last batch.
    #[serde(default)]
    pub events: Vec<OutputEvent>,
    /// The session is over (its last batch).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ended: bool,
    /// Why it ended (with `ended`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl LiveBatch {
    /// The first batch of a stream.
    pub fn start(cols: u16, rows: u16, init: String) -> LiveBatch {
        LiveBatch {
            size: Some((cols, rows)),
            init: Some(init),
            ..LiveBatch::default()
        }
    }

    /// The last batch of a stream.
    pub fn end(reason: String) -> LiveBatch {
        LiveBatch {
            ended: true,
            reason,
            ..LiveBatch::default()
        }
    }

    /// The terminal size of a first batch, each side within
    /// 1..=[`MAX_TERMINAL_SIDE`].
    pub fn terminal_size(&self) -> Option<(u16, u16)> {
        let clamp = |side: u16| side.clamp(1, MAX_TERMINAL_SIDE);
        self.init
            .as_ref()
            .map(|_| self.size.unwrap_or((80, 24)))
            .map(|(cols, rows)| (clamp(cols), clamp(rows)))
    }
}

/// One asciicast v2 output event: `[seconds since the stream began, "o",
/// text]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputEvent(pub f64, pub OutputKind, pub String);

/// The asciicast event kind: output only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputKind {
    #[serde(rename = "o")]
    Output,
}

impl OutputEvent {
    /// Output `text` at `seconds` (rounded to the millisecond).
    pub fn output(seconds: f64, text: String) -> OutputEvent {
        OutputEvent(
            (seconds * 1000.0).round() / 1000.0,
            OutputKind::Output,
            text,
        )
    }
}

/// The server's answer to a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveAnswer {
    /// False: nobody watches (any more), the bastion stops streaming.
    pub watching: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn batches_keep_the_asciicast_shape_on_the_wire() {
        let first = LiveBatch::start(132, 40, "$ ".into());
        assert_eq!(
            serde_json::to_value(&first).unwrap(),
            json!({"size": [132, 40], "init": "$ ", "events": []})
        );
        let mut middle = LiveBatch::default();
        middle
            .events
            .push(OutputEvent::output(1.23456, "ls\r\n".into()));
        assert_eq!(
            serde_json::to_value(&middle).unwrap(),
            json!({"events": [[1.235, "o", "ls\r\n"]]})
        );
        let last = LiveBatch::end("killed".into());
        assert_eq!(
            serde_json::to_value(&last).unwrap(),
            json!({"events": [], "ended": true, "reason": "killed"})
        );
        for batch in [first, middle, last] {
            let back: LiveBatch =
                serde_json::from_slice(&serde_json::to_vec(&batch).unwrap()).unwrap();
            assert_eq!(back, batch);
        }
    }

    #[test]
    fn a_batch_of_another_shape_is_refused_and_sizes_are_bounded() {
        for bad in [
            json!({"events": [[1.0, "i", "x"]]}),
            json!({"events": [["x", "o", "x"]]}),
            json!({"events": [], "extra": 1}),
            json!({"size": [70000, 1], "init": ""}),
        ] {
            assert!(
                serde_json::from_value::<LiveBatch>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let huge: LiveBatch =
            serde_json::from_value(json!({"size": [0, 5000], "init": ""})).unwrap();
        assert_eq!(huge.terminal_size(), Some((1, MAX_TERMINAL_SIDE)));
        assert_eq!(LiveBatch::default().terminal_size(), None);
    }
}
