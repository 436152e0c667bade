//! A loopback SMTP server that writes each message it accepts to a
//! directory (Debian's python3-aiosmtpd running
//! `jms-server/tests/smtp_sink.py`), and the set-password link's token in
//! a message.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

const SINK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../jms-server/tests/smtp_sink.py"
);
/// Debian's interpreter, where python3-aiosmtpd installs.
const PYTHON: &str = "/usr/bin/python3";

/// The SMTP sink; killed on drop.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts it on a free loopback port; fails loudly without aiosmtpd.
    pub fn start() -> SmtpSink {
        let dir = tempfile::tempdir().expect("a temp dir for the mail");
        let mut child = Command::new(PYTHON)
            .arg(SINK)
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {PYTHON} (apt-get install python3-aiosmtpd): {e}")
            });
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("sink stdout")).read_line(&mut line);
        let Some(port) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            panic!("the SMTP sink did not start (is python3-aiosmtpd installed?): {line:?}");
        };
        SmtpSink {
            port: port.parse().expect("a port"),
            child,
            dir,
        }
    }

    /// The delivered messages' JSON records, in order.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .expect("the mail dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("a message"))
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The 64-hex-digit token of the set-password link in a message.
pub fn token_in(message: &str) -> Option<String> {
    let at = message.find("/password/set?token=")? + "/password/set?token=".len();
    let token: String = message[at..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit())
        .collect();
    (token.len() == 64).then_some(token)
}
