//! Session recordings in asciicast v2 (what `asciinema play` / `asciinema
//! cat` and the web player read): a JSON header line, then one JSON array
//! per event: `[seconds, "o", text]` output, `[seconds, "i", text]` input
//! (when configured), `[seconds, "r", "COLSxROWS"]` resize.
//!
//! Bytes become text with a streaming UTF-8 decoder (a character split
//! across two reads stays whole; invalid bytes become U+FFFD). A per-session
//! cap bounds the file: the event that would cross it is replaced by one
//! notice and nothing more is recorded. The session then goes on under
//! `audit.on_failure = continue`, and is ended under `refuse`
//! ([`Recorder::on_stop`], wired to the live session's end order).
//!
//! An exec on pipes (`ssh bastion 'web01 cat FILE'`) is recorded as what
//! it is ([`ExecRecording`]): the first and the last [`EXEC_KEEP`] bytes of
//! its output for the replay, with a notice between them saying how much
//! was left out, and each stream's byte count and SHA-256 for the audit
//! ([`jms_sync::event::OutputDigest`]), like a transfer. Terminal sessions
//! are recorded whole.
//!
//! The writer is buffered; the relay flushes it on a timer and at the end.
//! Files are 0600 in a 0700 directory. The monitor's uploader takes only
//! recordings of sessions whose worker has exited
//! (`crate::daemon::monitor::running::is_running`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use jms_sync::event::OutputDigest;
use serde::Serialize;

pub use crate::daemon::config::EXEC_KEEP;

/// Which of an exec's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// What a relay reports to a recorder.
pub trait Recorder {
    /// Bytes the engineer saw.
    fn output(&mut self, data: &[u8]);
    /// Bytes the engineer saw on `stream` (an exec on pipes).
    fn stream_output(&mut self, stream: Stream, data: &[u8]) {
        let _ = stream;
        self.output(data);
    }
    /// The output is over: whatever was held back is written.
    fn finish(&mut self) {
        self.flush();
    }
    /// Each stream's size and SHA-256, when this recorder counts them.
    fn digest(&self) -> Option<OutputDigest> {
        None
    }
    /// Bytes the engineer typed (recorded only when configured).
    fn input(&mut self, data: &[u8]);
    /// The engineer's terminal changed size.
    fn resize(&mut self, cols: u16, rows: u16);
    /// Pushes buffered events to disk.
    fn flush(&mut self);
    /// Whether the cap cut the recording short.
    fn truncated(&self) -> bool;
    /// `f` runs once, with a line for the engineer, when the recording
    /// stops before the session does (its cap, or the disk failing); the
    /// notice in the recording then says the session was ended. Used under
    /// `audit.on_failure = refuse`; without it the session goes on.
    fn on_stop(&mut self, _f: Box<dyn FnMut(String)>) {}
}

/// The header's identification of the session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionMeta {
    pub user: String,
    pub asset: String,
    pub account: String,
    pub session: String,
}

#[derive(Serialize)]
struct Header<'a> {
    version: u8,
    width: u16,
    height: u16,
    timestamp: i64,
    title: String,
    env: Env<'a>,
    jms: &'a SessionMeta,
}

#[derive(Serialize)]
struct Env<'a> {
    #[serde(rename = "TERM")]
    term: &'a str,
}

/// An asciicast v2 file being written.
pub struct Asciicast {
    path: PathBuf,
    out: Option<BufWriter<File>>,
    start: Instant,
    cap: u64,
    written: u64,
    truncated: bool,
    record_input: bool,
    output_text: Utf8Stream,
    input_text: Utf8Stream,
    /// Ends the session when the recording stops (`Recorder::on_stop`).
    on_stop: Option<Box<dyn FnMut(String)>>,
}

impl Asciicast {
    /// Creates `dir/NAME` (dir 0700, file 0600) and writes the header.
    pub fn create(
        dir: &Path,
        name: &str,
        meta: &SessionMeta,
        size: (u16, u16),
        term: &str,
        cap: u64,
        record_input: bool,
    ) -> std::io::Result<Asciicast> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let mut cast = Asciicast {
            path,
            out: Some(BufWriter::with_capacity(64 * 1024, file)),
            start: Instant::now(),
            cap,
            written: 0,
            truncated: false,
            record_input,
            output_text: Utf8Stream::default(),
            input_text: Utf8Stream::default(),
            on_stop: None,
        };
        let header = Header {
            version: 2,
            width: size.0.max(1),
            height: size.1.max(1),
            timestamp: chrono::Utc::now().timestamp(),
            title: format!("{} → {}@{}", meta.user, meta.account, meta.asset),
            env: Env { term },
            jms: meta,
        };
        let mut line = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        line.push(b'\n');
        cast.put(&line);
        Ok(cast)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn put(&mut self, line: &[u8]) {
        if let Some(out) = self.out.as_mut() {
            if out.write_all(line).is_err() {
                // A failing disk stops the recording; the session too
                // under audit.on_failure = refuse.
                self.out = None;
                self.truncated = true;
                self.stopped("the recording could not be written".into());
                return;
            }
            self.written += line.len() as u64;
        }
    }

    /// The recording stopped before the session: tell `on_stop`, once.
    fn stopped(&mut self, why: String) {
        if let Some(mut f) = self.on_stop.take() {
            f(format!(
                "session ended: {why} and audit.on_failure is refuse"
            ));
        }
    }

    fn event(&mut self, kind: &str, text: &str) {
        if self.truncated || self.out.is_none() {
            return;
        }
        let seconds = self.start.elapsed().as_secs_f64();
        let line = event_line(seconds, kind, text);
        if self.written + line.len() as u64 > self.cap {
            let notice = if self.on_stop.is_some() {
                format!(
                    "\r\n[jms: recording stopped at its {}-byte cap; the session was ended]\r\n",
                    self.cap
                )
            } else {
                format!(
                    "\r\n[jms: recording stopped at its {}-byte cap; the session went on]\r\n",
                    self.cap
                )
            };
            let notice = event_line(seconds, "o", &notice);
            self.put(&notice);
            self.truncated = true;
            self.flush();
            let why = format!("its recording reached the {}-byte cap", self.cap);
            self.stopped(why);
            return;
        }
        self.put(&line);
    }
}

fn event_line(seconds: f64, kind: &str, text: &str) -> Vec<u8> {
    // [1.234567, "o", "text"]
    let mut line = format!("[{seconds:.6}, \"{kind}\", ").into_bytes();
    serde_json::to_writer(&mut line, text).expect("a string always serializes");
    line.extend_from_slice(b"]\n");
    line
}

impl Recorder for Asciicast {
    fn output(&mut self, data: &[u8]) {
        if self.truncated {
            return;
        }
        let text = self.output_text.decode(data);
        if !text.is_empty() {
            self.event("o", &text);
        }
    }

    fn input(&mut self, data: &[u8]) {
        if !self.record_input || self.truncated {
            return;
        }
        let text = self.input_text.decode(data);
        if !text.is_empty() {
            self.event("i", &text);
        }
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        self.event("r", &format!("{cols}x{rows}"));
    }

    fn flush(&mut self) {
        if let Some(out) = self.out.as_mut() {
            if out.flush().is_err() {
                self.out = None;
                self.truncated = true;
                self.stopped("the recording could not be written".into());
            }
        }
    }

    fn truncated(&self) -> bool {
        self.truncated
    }

    fn on_stop(&mut self, f: Box<dyn FnMut(String)>) {
        self.on_stop = Some(f);
    }
}

impl Drop for Asciicast {
    fn drop(&mut self) {
        if let Some(mut out) = self.out.take() {
            let _ = out.flush();
            let _ = out.get_ref().sync_data();
        }
    }
}

/// Bytes to text across reads: keeps an incomplete trailing character for
/// the next call, turns invalid bytes into U+FFFD.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    pub fn decode(&mut self, data: &[u8]) -> String {
        let mut bytes = std::mem::take(&mut self.pending);
        bytes.extend_from_slice(data);
        let mut text = String::with_capacity(bytes.len());
        // One pass: each chunk is a valid run then at most one invalid
        // sequence (one U+FFFD), except an incomplete sequence at the very
        // end, kept for the next call.
        let mut chunks = bytes.utf8_chunks().peekable();
        while let Some(chunk) = chunks.next() {
            text.push_str(chunk.valid());
            let invalid = chunk.invalid();
            if invalid.is_empty() {
                continue;
            }
            let incomplete =
                matches!(std::str::from_utf8(invalid), Err(e) if e.error_len().is_none());
            if chunks.peek().is_none() && incomplete {
                self.pending = invalid.to_vec();
            } else {
                text.push('\u{FFFD}');
            }
        }
        text
    }
}

/// An exec's output recorded bounded: the first `keep` bytes go to the
/// inner recording as they come, the last `keep` are held and written at
/// [`Recorder::finish`] after a notice of what was left out; every byte is
/// counted and hashed per stream.
pub struct ExecRecording<'a> {
    inner: &'a mut dyn Recorder,
    keep: usize,
    /// Bytes recorded so far at the head.
    head: usize,
    /// The latest output past the head, at most `keep` bytes once the
    /// older part is dropped (a ring would save the moves; it holds at
    /// most twice `keep`).
    tail: Vec<u8>,
    /// Bytes past the head no longer held (left out of the recording).
    skipped: u64,
    stdout: Hash,
    stderr: Hash,
    finished: bool,
}

struct Hash {
    bytes: u64,
    context: ring::digest::Context,
}

impl Hash {
    fn new() -> Hash {
        Hash {
            bytes: 0,
            context: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    fn hex(&self) -> String {
        let digest = self.context.clone().finish();
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl<'a> ExecRecording<'a> {
    pub fn new(inner: &'a mut dyn Recorder, keep: usize) -> ExecRecording<'a> {
        ExecRecording {
            inner,
            keep,
            head: 0,
            tail: Vec::new(),
            skipped: 0,
            stdout: Hash::new(),
            stderr: Hash::new(),
            finished: false,
        }
    }
}

impl Recorder for ExecRecording<'_> {
    fn output(&mut self, data: &[u8]) {
        self.stream_output(Stream::Stdout, data);
    }

    fn stream_output(&mut self, stream: Stream, data: &[u8]) {
        let hash = match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        hash.bytes += data.len() as u64;
        hash.context.update(data);
        let to_head = data.len().min(self.keep - self.head);
        if to_head > 0 {
            self.inner.output(&data[..to_head]);
            self.head += to_head;
        }
        let rest = &data[to_head..];
        if rest.len() >= self.keep {
            self.skipped += (self.tail.len() + rest.len() - self.keep) as u64;
            self.tail.clear();
            self.tail.extend_from_slice(&rest[rest.len() - self.keep..]);
            return;
        }
        self.tail.extend_from_slice(rest);
        if self.tail.len() >= 2 * self.keep {
            let cut = self.tail.len() - self.keep;
            self.skipped += cut as u64;
            self.tail.drain(..cut);
        }
    }

    fn input(&mut self, data: &[u8]) {
        self.inner.input(data);
    }

    fn resize(&mut self, cols: u16, rows: u16) {
        self.inner.resize(cols, rows);
    }

    fn flush(&mut self) {
        self.inner.flush();
    }

    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.tail.len() > self.keep {
            let cut = self.tail.len() - self.keep;
            self.skipped += cut as u64;
            self.tail.drain(..cut);
        }
        if self.skipped > 0 {
            let total = self.stdout.bytes + self.stderr.bytes;
            let notice = format!(
                "\r\n[jms: {} of {} bytes of output left out of this recording (kept: the first {} and the last {}); stdout {} bytes, SHA-256 {}; stderr {} bytes, SHA-256 {}]\r\n",
                self.skipped,
                total,
                self.head,
                self.tail.len(),
                self.stdout.bytes,
                self.stdout.hex(),
                self.stderr.bytes,
                self.stderr.hex(),
            );
            self.inner.output(notice.as_bytes());
        }
        let tail = std::mem::take(&mut self.tail);
        if !tail.is_empty() {
            self.inner.output(&tail);
        }
        self.inner.finish();
    }

    fn truncated(&self) -> bool {
        self.inner.truncated()
    }

    fn digest(&self) -> Option<OutputDigest> {
        Some(OutputDigest {
            stdout_bytes: self.stdout.bytes,
            stdout_sha256: self.stdout.hex(),
            stderr_bytes: self.stderr.bytes,
            stderr_sha256: self.stderr.hex(),
        })
    }

    fn on_stop(&mut self, f: Box<dyn FnMut(String)>) {
        self.inner.on_stop(f);
    }
}

/// A recorder that keeps nothing (when recording is impossible).
pub struct NoRecording;

impl Recorder for NoRecording {
    fn output(&mut self, _: &[u8]) {}
    fn input(&mut self, _: &[u8]) {}
    fn resize(&mut self, _: u16, _: u16) {}
    fn flush(&mut self) {}
    fn truncated(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn streamed_decoding_equals_lossy_decoding_of_the_whole_at_any_split() {
        let samples: [&[u8]; 5] = [
            "héllo wörld — 漢字 ✓".as_bytes(),
            b"\xff\xfe ok \xe6\xbc bad \xf0\x9f\x98\x80 emoji",
            b"\xe6\xbc\xa2",
            b"\xc3",
            &[0x80, 0x80, 0xe2, 0x82, 0xac, 0xed, 0xa0, 0x80],
        ];
        for sample in samples {
            let whole = String::from_utf8_lossy(sample).into_owned();
            for split in 0..=sample.len() {
                let mut stream = Utf8Stream::default();
                let mut text = stream.decode(&sample[..split]);
                text.push_str(&stream.decode(&sample[split..]));
                // An incomplete sequence left at the very end stays pending.
                let pending = stream.decode(&[]);
                let flushed = if stream.pending.is_empty() {
                    text + &pending
                } else {
                    text + &pending + "\u{FFFD}"
                };
                assert_eq!(flushed, whole, "sample {sample:?} split at {split}");
            }
        }
    }

    fn meta() -> SessionMeta {
        SessionMeta {
            user: "alice".into(),
            asset: "web01".into(),
            account: "root".into(),
            session: "s-1".into(),
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn header_events_and_split_characters() {
        let dir = tempfile::tempdir().unwrap();
        let rec_dir = dir.path().join("rec");
        let mut cast = Asciicast::create(
            &rec_dir,
            "s-1.cast",
            &meta(),
            (100, 30),
            "xterm",
            1 << 20,
            true,
        )
        .unwrap();
        let snow = "☃".as_bytes();
        cast.output(b"hello ");
        cast.output(&snow[..1]);
        cast.output(&snow[1..]);
        cast.output(b"\xff!");
        cast.input(b"id\r");
        cast.resize(120, 40);
        let path = cast.path().to_path_buf();
        drop(cast);
        let l = lines(&path);
        assert_eq!(l[0]["version"], 2);
        assert_eq!(l[0]["width"], 100);
        assert_eq!(l[0]["height"], 30);
        assert_eq!(l[0]["env"]["TERM"], "xterm");
        assert_eq!(l[0]["jms"]["user"], "alice");
        assert_eq!(l[0]["jms"]["asset"], "web01");
        let texts: Vec<(String, String)> = l[1..]
            .iter()
            .map(|e| (e[1].as_str().unwrap().into(), e[2].as_str().unwrap().into()))
            .collect();
        let output: String = texts
            .iter()
            .filter(|t| t.0 == "o")
            .map(|t| t.1.as_str())
            .collect();
        assert_eq!(output, "hello ☃\u{FFFD}!");
        assert!(texts.contains(&("i".into(), "id\r".into())));
        assert!(texts.contains(&("r".into(), "120x40".into())));
        assert!(l[1][0].as_f64().unwrap() >= 0.0);
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(&rec_dir).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn input_is_not_recorded_unless_configured() {
        let dir = tempfile::tempdir().unwrap();
        let mut cast = Asciicast::create(
            dir.path(),
            "x.cast",
            &meta(),
            (80, 24),
            "xterm",
            1 << 20,
            false,
        )
        .unwrap();
        cast.input(b"secret\r");
        let path = cast.path().to_path_buf();
        drop(cast);
        assert!(!std::fs::read_to_string(path).unwrap().contains("secret"));
    }

    #[test]
    fn the_cap_writes_one_notice_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let mut cast = Asciicast::create(
            dir.path(),
            "x.cast",
            &meta(),
            (80, 24),
            "xterm",
            2000,
            false,
        )
        .unwrap();
        for _ in 0..100 {
            cast.output(&[b'a'; 100]);
        }
        assert!(cast.truncated());
        let path = cast.path().to_path_buf();
        drop(cast);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.len() < 2000 + 200, "{} bytes", text.len());
        assert_eq!(text.matches("recording stopped").count(), 1);
        assert!(text.ends_with("]\n"));
    }

    fn sha256_hex(data: &[u8]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, data);
        digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn recorded_output(path: &Path) -> String {
        lines(path)[1..]
            .iter()
            .filter(|e| e[1] == "o")
            .map(|e| e[2].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn an_exec_is_recorded_as_head_notice_tail_with_each_streams_size_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let mut cast = Asciicast::create(
            dir.path(),
            "e.cast",
            &meta(),
            (80, 24),
            "xterm",
            1 << 30,
            false,
        )
        .unwrap();
        let path = cast.path().to_path_buf();
        // 1 MiB of numbered lines on stdout in uneven reads, a little stderr.
        let stdout: Vec<u8> = (0..100_000)
            .flat_map(|i| format!("line {i:06}\n").into_bytes())
            .take(1 << 20)
            .collect();
        let stderr = b"warning: slow\n".to_vec();
        let mut bounded = ExecRecording::new(&mut cast, 1000);
        let mut at = 0;
        for (i, size) in [7usize, 999, 1, 3000, 65536, 100]
            .iter()
            .cycle()
            .enumerate()
        {
            if at == stdout.len() {
                break;
            }
            let end = (at + size).min(stdout.len());
            bounded.stream_output(Stream::Stdout, &stdout[at..end]);
            if i == 3 {
                bounded.stream_output(Stream::Stderr, &stderr);
            }
            at = end;
        }
        bounded.finish();
        let digest = bounded.digest().unwrap();
        drop(bounded);
        drop(cast);
        assert_eq!(digest.stdout_bytes, stdout.len() as u64);
        assert_eq!(digest.stdout_sha256, sha256_hex(&stdout));
        assert_eq!(digest.stderr_bytes, stderr.len() as u64);
        assert_eq!(digest.stderr_sha256, sha256_hex(&stderr));
        // What the engineer saw, in order: stdout with stderr after read 3.
        let seen_len = stdout.len() + stderr.len();
        let text = recorded_output(&path);
        let (head, rest) = text.split_at(1000);
        assert!(head.starts_with("line 000000\nline 000001\n"), "{head}");
        let notice_end = rest.find("]\r\n").unwrap() + 3;
        let (notice, tail) = rest.split_at(notice_end);
        let left_out = seen_len - 2000;
        assert!(
            notice.contains(&format!(
                "{left_out} of {seen_len} bytes of output left out"
            )),
            "{notice}"
        );
        assert!(notice.contains(&sha256_hex(&stdout)), "{notice}");
        assert_eq!(tail.as_bytes(), &stdout[stdout.len() - 1000..]);
        // Bounded: the file holds about twice what was kept, not the output.
        assert!(std::fs::metadata(&path).unwrap().len() < 4000);
    }

    #[test]
    fn a_short_exec_is_recorded_whole_without_a_notice() {
        let dir = tempfile::tempdir().unwrap();
        let mut cast = Asciicast::create(
            dir.path(),
            "e.cast",
            &meta(),
            (80, 24),
            "xterm",
            1 << 20,
            false,
        )
        .unwrap();
        let path = cast.path().to_path_buf();
        let mut bounded = ExecRecording::new(&mut cast, 1000);
        let data: Vec<u8> = (0..1500u32).map(|i| b'a' + (i % 26) as u8).collect();
        bounded.stream_output(Stream::Stdout, &data[..600]);
        bounded.stream_output(Stream::Stderr, &data[600..]);
        bounded.finish();
        drop(bounded);
        drop(cast);
        let text = recorded_output(&path);
        assert_eq!(text.as_bytes(), &data[..]);
        assert!(!text.contains("left out"));
    }
}
