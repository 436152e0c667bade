//! Running client commands with a deadline, optionally answering prompts,
//! and keeping everything they printed for the failure message.

use std::fmt;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Default deadline of one client command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// What a command did: its exit status (`None` when it was killed at the
/// deadline), what it printed, and a note on anything the runner saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub command: String,
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub note: String,
}

impl Outcome {
    /// Exited by itself with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    /// The exit code, if it exited by itself.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// stdout and stderr together.
    pub fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Panics with `expectation` and the whole outcome unless it succeeded.
    #[track_caller]
    pub fn assert_success(&self, expectation: &str) -> &Self {
        assert!(self.success(), "{expectation}, but:\n{self}");
        self
    }

    /// Panics with `expectation` and the whole outcome if it succeeded or
    /// was killed at the deadline (a hang is not a refusal).
    #[track_caller]
    pub fn assert_failure(&self, expectation: &str) -> &Self {
        assert!(
            self.status.is_some() && !self.success(),
            "{expectation}, but:\n{self}"
        );
        self
    }

    /// Panics unless stdout or stderr contains `needle`.
    #[track_caller]
    pub fn assert_output_contains(&self, needle: &str, expectation: &str) -> &Self {
        assert!(
            self.output().contains(needle),
            "{expectation} (output should contain {needle:?}), but:\n{self}"
        );
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = match self.status {
            Some(s) => s.to_string(),
            None => "killed at the deadline".to_owned(),
        };
        writeln!(f, "  command: {}", self.command)?;
        writeln!(f, "  status:  {status}")?;
        if !self.note.is_empty() {
            writeln!(f, "  note:    {}", self.note)?;
        }
        writeln!(f, "  stdout:  {}", indent(&self.stdout))?;
        write!(f, "  stderr:  {}", indent(&self.stderr))
    }
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "(empty)".to_owned();
    }
    text.trim_end().replace('\n', "\n           ")
}

/// A command line as a readable string (for messages).
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Runs `cmd` with `stdin` as its whole input (then EOF).
pub fn run(cmd: &mut Command, stdin: &[u8], timeout: Duration) -> Outcome {
    let input = stdin.to_vec();
    run_with(cmd, timeout, move |child_stdin, _transcript, _exited| {
        child_stdin
            .write_all(&input)
            .map_err(|e| format!("writing stdin: {e}"))
    })
}

/// Runs `cmd` and answers each prompt in turn: waits until its output
/// (stdout or stderr, after the previous prompt) contains `prompt`, then
/// writes `answer` and a newline. Input is closed after the last answer.
pub fn run_answering(cmd: &mut Command, script: &[(&str, &str)], timeout: Duration) -> Outcome {
    let script: Vec<(String, String)> = script
        .iter()
        .map(|(p, a)| (p.to_string(), a.to_string()))
        .collect();
    let deadline = Instant::now() + timeout;
    run_with(cmd, timeout, move |child_stdin, transcript, exited| {
        let mut seen = 0;
        for (prompt, answer) in &script {
            loop {
                let text = transcript.lock().expect("transcript lock").clone();
                let text = String::from_utf8_lossy(&text[seen..]).into_owned();
                if let Some(at) = text.find(prompt.as_str()) {
                    seen += at + prompt.len();
                    break;
                }
                if exited.load(Ordering::SeqCst) {
                    return Err(format!("exited before prompt {prompt:?}"));
                }
                if Instant::now() > deadline {
                    return Err(format!("prompt {prompt:?} never came"));
                }
                thread::sleep(Duration::from_millis(10));
            }
            child_stdin
                .write_all(format!("{answer}\n").as_bytes())
                .map_err(|e| format!("answering {prompt:?}: {e}"))?;
            child_stdin
                .flush()
                .map_err(|e| format!("answering {prompt:?}: {e}"))?;
        }
        Ok(())
    })
}

type Transcript = Arc<Mutex<Vec<u8>>>;

fn run_with<F>(cmd: &mut Command, timeout: Duration, feed: F) -> Outcome
where
    F: FnOnce(&mut std::process::ChildStdin, &Transcript, &AtomicBool) -> Result<(), String>
        + Send
        + 'static,
{
    let command = describe(cmd);
    let mut child = match cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!("cannot start `{command}`: {e}"),
    };
    let transcript: Transcript = Arc::default();
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = reader(child.stdout.take(), &transcript, done_tx.clone());
    let stderr = reader(child.stderr.take(), &transcript, done_tx);

    let mut child_stdin = child.stdin.take().expect("piped stdin");
    let feeder_transcript = Arc::clone(&transcript);
    let exited = Arc::new(AtomicBool::new(false));
    let feeder_exited = Arc::clone(&exited);
    let feeder = thread::spawn(move || {
        let result = feed(&mut child_stdin, &feeder_transcript, &feeder_exited);
        drop(child_stdin);
        result
    });

    let deadline = Instant::now() + timeout;
    let status = wait_until(&mut child, deadline);
    exited.store(true, Ordering::SeqCst);
    let mut note = String::new();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        note.push_str(&format!("no exit within {timeout:?}; killed. "));
    }
    // A grandchild may keep the pipes open: do not wait for it forever.
    for _ in 0..2 {
        if done_rx.recv_timeout(Duration::from_secs(5)).is_err() {
            note.push_str("output pipe still open after exit. ");
            break;
        }
    }
    if let Ok(Err(e)) = feeder.join() {
        note.push_str(&e);
    }
    Outcome {
        command,
        status,
        stdout: take(&stdout),
        stderr: take(&stderr),
        note: note.trim().to_owned(),
    }
}

fn reader<R: Read + Send + 'static>(
    pipe: Option<R>,
    transcript: &Transcript,
    done: mpsc::Sender<()>,
) -> Arc<Mutex<Vec<u8>>> {
    let own: Arc<Mutex<Vec<u8>>> = Arc::default();
    let (own2, transcript) = (Arc::clone(&own), Arc::clone(transcript));
    thread::spawn(move || {
        if let Some(mut pipe) = pipe {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                own2.lock()
                    .expect("output lock")
                    .extend_from_slice(&buf[..n]);
                transcript
                    .lock()
                    .expect("transcript lock")
                    .extend_from_slice(&buf[..n]);
            }
        }
        let _ = done.send(());
    });
    own
}

fn take(buffer: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&buffer.lock().expect("output lock")).into_owned()
}

/// Polls `child` until it exits or `deadline` passes (`None`).
pub fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}
