//! Commands piped into an exec'd shell or interpreter
//! (`printf 'reboot\n' | ssh bastion 'web01 sh'`): which exec commands read
//! commands from their input ([`reads_commands`]), and the line checker
//! ([`StdinLines`]) that judges each input line against the command filters
//! before it is forwarded (setting `exec_stdin = check`).
//!
//! Lines are bounded ([`MAX_LINE`] characters, `\` continuations joined
//! within it): a longer one is refused when any deny rule applies, else
//! passed with its start logged. Memory per session is bounded likewise.

use super::commands::{Filters, Verdict, UNREADABLE};
use super::screen::MAX_LINE;

/// Shells and interpreters that read commands from their input (basenames;
/// a version suffix such as `python3.11` or `perl5.36` is accepted).
const INTERPRETERS: &[&str] = &[
    "sh",
    "bash",
    "dash",
    "zsh",
    "ksh",
    "ksh93",
    "mksh",
    "pdksh",
    "ash",
    "hush",
    "yash",
    "posh",
    "fish",
    "csh",
    "tcsh",
    "rc",
    "es",
    "elvish",
    "nu",
    "xonsh",
    "pwsh",
    "busybox",
    "su",
    "python",
    "pypy",
    "perl",
    "ruby",
    "irb",
    "php",
    "node",
    "nodejs",
    "deno",
    "bun",
    "lua",
    "luajit",
    "tclsh",
    "wish",
    "expect",
    "julia",
    "R",
    "Rscript",
    "gdb",
    "mysql",
    "mariadb",
    "psql",
    "sqlite3",
    "redis-cli",
    "mongo",
    "mongosh",
];

/// Whether `name` is `base` or `base` with a version suffix (`3`, `3.11`).
fn versioned(name: &str, base: &str) -> bool {
    name.strip_prefix(base)
        .is_some_and(|rest| rest.chars().all(|c| c.is_ascii_digit() || c == '.'))
}

/// Whether an exec of `command` may read commands from its input: a word
/// of it (split at blanks and shell punctuation, paths reduced to their
/// last part) names a shell or interpreter, one of `extra`, or `sudo` with
/// `-s`/`-i` (a shell). Deliberately broad: `env X`, `sudo sh`, `nice
/// bash`, `/usr/bin/python3 -`, `busybox sh` all count.
pub fn reads_commands(command: &str, extra: &[String]) -> bool {
    let words: Vec<&str> = command
        .split(|c: char| c.is_whitespace() || ";&|()<>`$'\"{}\\".contains(c))
        .filter(|w| !w.is_empty())
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .collect();
    let known = |w: &str| {
        INTERPRETERS.iter().any(|base| versioned(w, base))
            || extra.iter().any(|name| versioned(w, name))
    };
    let sudo_shell = words.windows(2).any(|pair| {
        pair[0] == "sudo"
            && (pair[1] == "--shell"
                || pair[1] == "--login"
                || (pair[1].starts_with('-')
                    && !pair[1].starts_with("--")
                    && pair[1].contains(['s', 'i'])))
    });
    sudo_shell || words.iter().any(|w| known(w))
}

/// The checker's answer to a chunk of input.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    /// Bytes to forward (whole allowed lines, in order).
    pub forward: Vec<u8>,
    /// A line was refused: the line for the engineer. Nothing after it is
    /// forwarded.
    pub refused: Option<String>,
}

/// Splits piped input into lines and judges each (joined with its `\`
/// continuations) before it is forwarded.
#[derive(Default)]
pub struct StdinLines {
    /// The current line's bytes (at most [`MAX_LINE`] × 4).
    line: Vec<u8>,
    /// Continued lines (raw) waiting for the line that ends them.
    held: Vec<u8>,
    /// Their text, joined.
    joined: String,
    /// Passing an over-long line to its end (no deny rule applies).
    passing: bool,
    /// A line was refused: nothing more is taken.
    done: bool,
}

/// Most bytes a line (with its continuations) may take: [`MAX_LINE`]
/// characters of UTF-8.
const MAX_LINE_BYTES: usize = 4 * MAX_LINE;

impl StdinLines {
    /// Takes `data`; `log` gets every judged line and its verdict.
    pub fn feed(
        &mut self,
        data: &[u8],
        filters: &Filters,
        log: &mut dyn FnMut(&str, &Verdict),
    ) -> Checked {
        let mut out = Checked::default();
        for &byte in data {
            if self.done {
                break;
            }
            if self.passing {
                out.forward.push(byte);
                self.passing = byte != b'\n';
                continue;
            }
            self.line.push(byte);
            if byte == b'\n' {
                self.end_line(filters, log, &mut out);
            } else if self.line.len() + self.held.len() > MAX_LINE_BYTES {
                self.too_long(filters, log, &mut out);
            }
        }
        out
    }

    /// The input ended: the last line, unterminated, runs too — judge it.
    pub fn finish(&mut self, filters: &Filters, log: &mut dyn FnMut(&str, &Verdict)) -> Checked {
        let mut out = Checked::default();
        let nothing_left = self.line.is_empty() && self.held.is_empty();
        if !(self.done || self.passing || nothing_left) {
            self.end_line(filters, log, &mut out);
        }
        self.done = true;
        out
    }

    fn refuse(&mut self, why: String, out: &mut Checked) {
        self.done = true;
        self.line.clear();
        self.held.clear();
        self.joined.clear();
        out.refused = Some(why);
    }

    fn too_long(
        &mut self,
        filters: &Filters,
        log: &mut dyn FnMut(&str, &Verdict),
        out: &mut Checked,
    ) {
        let mut start = std::mem::take(&mut self.joined);
        start.push_str(&String::from_utf8_lossy(&self.line));
        let start: String = start.chars().take(200).collect();
        let shown = format!("{} …(longer than {MAX_LINE} characters)", start.trim());
        if filters.any_deny() {
            let verdict = Verdict::Deny {
                filter: UNREADABLE.to_string(),
            };
            log(&shown, &verdict);
            return self.refuse(
                format!(
                    "jms: input line refused: longer than {MAX_LINE} characters, it cannot be checked"
                ),
                out,
            );
        }
        log(&shown, &Verdict::Allow { filter: None });
        out.forward.append(&mut self.held);
        out.forward.append(&mut self.line);
        self.passing = true;
    }

    fn end_line(
        &mut self,
        filters: &Filters,
        log: &mut dyn FnMut(&str, &Verdict),
        out: &mut Checked,
    ) {
        let text = String::from_utf8_lossy(&self.line).into_owned();
        let text = text.trim_end_matches(['\n', '\r']);
        let backslashes = text.bytes().rev().take_while(|&b| b == b'\\').count();
        if backslashes % 2 == 1 && self.line.ends_with(b"\n") {
            // Continued: judged with the line that ends it.
            self.joined.push_str(&text[..text.len() - 1]);
            self.held.append(&mut self.line);
            return;
        }
        let mut command = std::mem::take(&mut self.joined);
        command.push_str(text);
        let command = command.trim();
        if command.is_empty() {
            out.forward.append(&mut self.held);
            out.forward.append(&mut self.line);
            return;
        }
        let verdict = filters.check_exec(command);
        log(command, &verdict);
        match verdict {
            Verdict::Deny { filter } => {
                let shown: String = command
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(200)
                    .collect();
                self.refuse(
                    format!("jms: input line refused by filter {filter}: {shown}"),
                    out,
                );
            }
            Verdict::Allow { .. } => {
                out.forward.append(&mut self.held);
                out.forward.append(&mut self.line);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jms_core::model::FilterAction;

    #[test]
    fn shells_and_interpreters_are_recognised_however_they_are_named() {
        for command in [
            "sh",
            "bash -s",
            "/bin/dash",
            "zsh -",
            "ksh",
            "fish",
            "python3",
            "python3.11 -",
            "/usr/bin/python",
            "perl",
            "ruby",
            "php",
            "node",
            "lua5.4",
            "tclsh",
            "busybox sh",
            "env X=1 sh",
            "env bash",
            "sudo -s",
            "sudo -i",
            "sudo -Es",
            "sudo sh",
            "sudo /bin/bash",
            "nice -n 5 bash",
            "exec sh",
            "cd /tmp && bash",
            "sh -c 'tar x'",
        ] {
            assert!(reads_commands(command, &[]), "{command} reads commands");
        }
        for command in [
            "cat",
            "sha256sum",
            "tar x -C /tmp",
            "shasum",
            "bashful",
            "sudo -u deploy id",
            "ls /bin",
        ] {
            assert!(!reads_commands(command, &[]), "{command} is no interpreter");
        }
        assert!(reads_commands("gawk -f -", &["gawk".into()]));
    }

    fn run(filters: &Filters, chunks: &[&[u8]]) -> (Vec<u8>, Option<String>, Vec<(String, bool)>) {
        let mut lines = StdinLines::default();
        let mut logged = Vec::new();
        let mut log = |c: &str, v: &Verdict| logged.push((c.to_string(), v.is_deny()));
        let mut forward = Vec::new();
        let mut refused = None;
        for chunk in chunks {
            let out = lines.feed(chunk, filters, &mut log);
            forward.extend(out.forward);
            refused = refused.or(out.refused);
        }
        let out = lines.finish(filters, &mut log);
        forward.extend(out.forward);
        refused = refused.or(out.refused);
        (forward, refused, logged)
    }

    fn deny_reboot() -> Filters {
        let policy = jms_core::Policy::parse(
            "command_filters:\n  - {name: no-reboot, action: deny, rules: ['^reboot'], users: ['@ALL'], assets: ['@ALL'], accounts: ['@ALL']}\n\
             assets:\n  - {name: web01, address: 127.0.0.1, protocols: [{name: ssh, port: 22}]}\n",
            jms_core::Format::Yaml,
            "test",
            std::path::Path::new("."),
        )
        .unwrap();
        let asset = policy.doc.assets[0].clone();
        Filters::for_session(&policy, "alice", &asset, "root")
    }

    #[test]
    fn allowed_lines_pass_and_a_denied_one_stops_the_input() {
        let f = deny_reboot();
        let (forward, refused, logged) = run(&f, &[b"id\nupt", b"ime\nreboot\nrm x\n"]);
        assert_eq!(forward, b"id\nuptime\n");
        assert!(refused.unwrap().contains("no-reboot"));
        assert_eq!(
            logged,
            [
                ("id".into(), false),
                ("uptime".into(), false),
                ("reboot".into(), true)
            ]
        );
        // The last line without a newline runs too: it is judged at the end.
        let (forward, refused, _) = run(&f, &[b"id\nreboot"]);
        assert_eq!(
            (forward.as_slice(), refused.is_some()),
            (&b"id\n"[..], true)
        );
        // Split over continuation lines, and `uptime; reboot`.
        let (forward, refused, _) = run(&f, &[b"re\\\nboot\n"]);
        assert!(forward.is_empty() && refused.is_some());
        let (_, refused, _) = run(&f, &[b"uptime; reboot\r\n"]);
        assert!(refused.is_some());
        let (forward, refused, _) = run(&f, &[b"echo a \\\\\nid\n"]);
        assert_eq!(
            (forward.as_slice(), refused),
            (&b"echo a \\\\\nid\n"[..], None)
        );
    }

    #[test]
    fn arbitrary_input_never_panics_and_stays_bounded() {
        let alphabet: &[u8] = b"\\\n\rab; |&\xc3\xa9\xff\x00reboot";
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for filters in [deny_reboot(), Filters::none()] {
            let mut lines = StdinLines::default();
            for _ in 0..500 {
                let len = (next() % 4096) as usize;
                let chunk: Vec<u8> = (0..len)
                    .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                    .collect();
                lines.feed(&chunk, &filters, &mut |_, _| {});
                assert!(lines.line.len() + lines.held.len() <= MAX_LINE_BYTES + 1);
                if lines.done {
                    lines = StdinLines::default();
                }
            }
            lines.finish(&filters, &mut |_, _| {});
        }
    }

    #[test]
    fn long_lines_are_refused_when_a_deny_rule_applies_and_memory_stays_bounded() {
        let long = vec![b'x'; 3 * MAX_LINE_BYTES];
        let mut lines = StdinLines::default();
        let f = deny_reboot();
        let out = lines.feed(&long, &f, &mut |_, _| {});
        assert!(out.refused.is_some() && out.forward.is_empty());
        assert!(lines.line.capacity() <= 2 * MAX_LINE_BYTES);
        // Continuations cannot pile up either.
        let mut lines = StdinLines::default();
        let mut input = Vec::new();
        for _ in 0..100 {
            input.extend_from_slice(&[b'y'; 1000]);
            input.extend_from_slice(b"\\\n");
        }
        let out = lines.feed(&input, &f, &mut |_, _| {});
        assert!(out.refused.is_some());
        assert!(lines.held.len() <= MAX_LINE_BYTES);
        // Without any deny rule a long line passes whole, its start logged.
        let open = Filters::none();
        let mut input = long.clone();
        input.extend_from_slice(b"\nid\n");
        let (forward, refused, logged) = run(&open, &[&input]);
        assert_eq!((forward, refused), (input, None));
        assert_eq!(logged.len(), 2);
        assert!(Filters::none().with_default(FilterAction::Deny).any_deny());
    }
}
