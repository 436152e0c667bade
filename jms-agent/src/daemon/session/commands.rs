//! Commands: what the engineer runs, reconstructed at the relay, and the
//! policy's command filters that may refuse it before it reaches the target.
//!
//! Reconstruction, per line (from one Enter to the next):
//! - plain typing is read from the input bytes (printable text, backspace,
//!   Ctrl-W, Ctrl-U and Ctrl-C handled), so a command typed or pasted fast
//!   is known at its Enter without waiting for the target;
//! - once the line was edited in ways only the target's line editor knows
//!   (arrow keys, history recall, Tab completion, Ctrl-R, Ctrl-A…), the
//!   command is read from the output echo instead: a model of the
//!   terminal's current line (carriage return, backspace, cursor moves,
//!   erase and insert/delete sequences) minus the prompt seen when the line
//!   began. The relay holds such an Enter until the echo has settled.
//!
//! Filters: active filters whose scope holds the session (users or `@ALL`,
//! user groups, assets or `@ALL`, nodes at any depth, accounts or `@ALL`),
//! by priority (1 first, policy order among equals); the first whose rule
//! matches decides (`allow` or `deny`); none matching takes the default
//! action in force (`command_filter_default`, allow unless set).

use jms_core::model::{alias, Asset, FilterAction};
use jms_core::Policy;
use regex::Regex;

use super::recording::Utf8Stream;

/// The decision on one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Runs; `filter` names an `allow` filter that matched, if one did.
    Allow { filter: Option<String> },
    /// Refused by the named filter.
    Deny { filter: String },
}

impl Verdict {
    pub fn is_deny(&self) -> bool {
        matches!(self, Verdict::Deny { .. })
    }
    pub fn decision(&self) -> &'static str {
        match self {
            Verdict::Allow { .. } => "allow",
            Verdict::Deny { .. } => "deny",
        }
    }
    pub fn filter(&self) -> Option<String> {
        match self {
            Verdict::Allow { filter } => filter.clone(),
            Verdict::Deny { filter } => Some(filter.clone()),
        }
    }
}

struct Compiled {
    name: String,
    action: FilterAction,
    rules: Vec<Regex>,
}

/// The name a refusal by the default action gives as its filter.
pub const DEFAULT_DENY: &str = "(default: deny)";

/// The filters that apply to one session, in the order they are checked.
pub struct Filters {
    filters: Vec<Compiled>,
    /// For a command no filter matches.
    default: FilterAction,
}

impl Filters {
    /// The active filters whose scope holds (user, asset, account name).
    pub fn for_session(policy: &Policy, user: &str, asset: &Asset, account: &str) -> Filters {
        let groups: Vec<&str> = policy
            .user(user)
            .map(|u| u.groups.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let mut scoped: Vec<_> = policy
            .doc
            .command_filters
            .iter()
            .filter(|f| f.is_active)
            .filter(|f| {
                let user_in = f.users.iter().any(|u| u == alias::ALL || u == user)
                    || f.user_groups.iter().any(|g| groups.contains(&g.as_str()));
                let asset_in = f.assets.iter().any(|a| a == alias::ALL || a == &asset.name)
                    || f.nodes
                        .iter()
                        .any(|node| asset.nodes.iter().any(|path| is_under(path, node)));
                let account_in = f.accounts.iter().any(|a| a == alias::ALL || a == account);
                user_in && asset_in && account_in
            })
            .collect();
        scoped.sort_by_key(|f| f.priority);
        Filters {
            default: FilterAction::Allow,
            filters: scoped
                .into_iter()
                .map(|f| Compiled {
                    name: f.name.clone(),
                    action: f.action,
                    // The policy loader checked every rule compiles.
                    rules: f.rules.iter().filter_map(|r| Regex::new(r).ok()).collect(),
                })
                .collect(),
        }
    }

    /// No filters at all (for tests and for sessions without commands).
    pub fn none() -> Filters {
        Filters {
            filters: Vec::new(),
            default: FilterAction::Allow,
        }
    }

    /// The same filters with `action` for commands none matches.
    pub fn with_default(mut self, action: FilterAction) -> Filters {
        self.default = action;
        self
    }

    /// Checks one command line.
    pub fn check(&self, command: &str) -> Verdict {
        for filter in &self.filters {
            if filter.rules.iter().any(|r| r.is_match(command)) {
                return match filter.action {
                    FilterAction::Allow => Verdict::Allow {
                        filter: Some(filter.name.clone()),
                    },
                    FilterAction::Deny => Verdict::Deny {
                        filter: filter.name.clone(),
                    },
                };
            }
        }
        match self.default {
            FilterAction::Allow => Verdict::Allow { filter: None },
            FilterAction::Deny => Verdict::Deny {
                filter: DEFAULT_DENY.to_string(),
            },
        }
    }

    /// Checks an exec request: the whole text, and each of its lines and
    /// shell-separated parts (`;`, `&`, `|`), so `uptime; rm -rf /` is
    /// judged on `rm -rf /` as well. Any part denied denies.
    pub fn check_exec(&self, command: &str) -> Verdict {
        let whole = self.check(command);
        if whole.is_deny() {
            return whole;
        }
        for part in command.split(['\n', ';', '&', '|']) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let verdict = self.check(part);
            if verdict.is_deny() {
                return verdict;
            }
        }
        whole
    }
}

/// `/Default/prod/web` is under `/Default/prod` and under itself.
fn is_under(path: &str, node: &str) -> bool {
    let node = node.trim_end_matches('/');
    path == node
        || path
            .strip_prefix(node)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The engineer pressed Enter: the relay decides on the line before
/// forwarding `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enter {
    /// The byte to forward when allowed (`\r` or `\n`).
    pub key: u8,
    /// The line as typed (meaningful unless `from_echo`).
    pub typed: String,
    /// The command must be read from the echo: call
    /// [`LineTracker::echoed_command`] once the target's echo settled.
    pub from_echo: bool,
}

/// One step through the input: bytes to forward now, then maybe an Enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub forward: Vec<u8>,
    pub enter: Option<Enter>,
    /// Input bytes this step used; the rest waits for the next step.
    pub consumed: usize,
}

/// Reconstructs command lines from the input bytes and the output echo.
#[derive(Default)]
pub struct LineTracker {
    typed: String,
    /// The line was edited in ways only the target knows.
    complex: bool,
    /// The prompt on screen when the line began.
    prompt: Option<String>,
    screen: ScreenLine,
    output_text: Utf8Stream,
    input_text: Utf8Stream,
    /// Inside an escape sequence of the input: its state.
    input_escape: Escape,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// After `ESC [` or `ESC O`: until a final byte.
    Sequence,
}

impl LineTracker {
    /// Feeds target output (what the engineer sees).
    pub fn output(&mut self, data: &[u8]) {
        let text = self.output_text.decode(data);
        self.screen.feed(&text);
    }

    /// Takes input up to and including the first Enter: the bytes before
    /// it are forwarded at once; the Enter waits for a decision (and, for
    /// a line edited on the target's side, for the echo). Call
    /// [`LineTracker::line_done`] after deciding, then step through the rest.
    pub fn step(&mut self, data: &[u8]) -> Step {
        for (i, &byte) in data.iter().enumerate() {
            if (byte == b'\r' || byte == b'\n') && self.input_escape == Escape::None {
                return Step {
                    forward: data[..i].to_vec(),
                    enter: Some(Enter {
                        key: byte,
                        typed: self.typed.trim().to_string(),
                        from_echo: self.complex,
                    }),
                    consumed: i + 1,
                };
            }
            self.input_byte(byte);
        }
        Step {
            forward: data.to_vec(),
            enter: None,
            consumed: data.len(),
        }
    }

    fn begin_line(&mut self) {
        if self.prompt.is_none() {
            self.prompt = Some(self.screen.before_cursor());
        }
    }

    fn input_byte(&mut self, byte: u8) {
        match self.input_escape {
            Escape::Start => {
                self.input_escape = if byte == b'[' || byte == b'O' {
                    Escape::Sequence
                } else {
                    Escape::None
                };
                return;
            }
            Escape::Sequence => {
                if (0x40..=0x7e).contains(&byte) {
                    self.input_escape = Escape::None;
                }
                return;
            }
            Escape::None => {}
        }
        self.begin_line();
        match byte {
            0x1b => {
                self.complex = true;
                self.input_escape = Escape::Start;
            }
            0x7f | 0x08 => {
                self.typed.pop();
            }
            0x15 => self.typed.clear(),
            0x03 => {
                // Ctrl-C abandons the line.
                self.typed.clear();
                self.complex = false;
                self.prompt = None;
            }
            0x17 => {
                let kept = self.typed.trim_end().len();
                self.typed.truncate(kept);
                let word_start = self.typed.rfind(' ').map(|i| i + 1).unwrap_or(0);
                self.typed.truncate(word_start);
            }
            0x00..=0x1f => self.complex = true,
            _ => {
                let text = self.input_text.decode(&[byte]);
                self.typed.push_str(&text);
            }
        }
    }

    /// The command of a complex line, read from the echo (call once the
    /// echo settled, before [`LineTracker::line_done`]).
    pub fn echoed_command(&self) -> String {
        let line = self.screen.text();
        let prompt = self.prompt.as_deref().unwrap_or("");
        let command = line.strip_prefix(prompt).unwrap_or(&line);
        command.trim().to_string()
    }

    /// Whether the terminal's current line shows `typed` (its last 16
    /// characters: a long line may have wrapped), i.e. the target echoed it.
    pub fn echoes(&self, typed: &str) -> bool {
        let chars: Vec<char> = typed.trim().chars().collect();
        let tail: String = chars[chars.len().saturating_sub(16)..].iter().collect();
        self.screen.text().contains(&tail)
    }

    /// The line ended (forwarded or refused): start the next one.
    pub fn line_done(&mut self) {
        self.typed.clear();
        self.complex = false;
        self.prompt = None;
    }
}

/// The terminal's current line, as far as the output says.
#[derive(Default)]
struct ScreenLine {
    chars: Vec<char>,
    cursor: usize,
    escape: OutEscape,
    params: String,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum OutEscape {
    #[default]
    None,
    Start,
    Csi,
    /// OSC / DCS strings: until BEL or ESC \.
    Text,
    TextEsc,
}

impl ScreenLine {
    fn text(&self) -> String {
        self.chars.iter().collect::<String>().trim_end().to_string()
    }

    fn before_cursor(&self) -> String {
        self.chars[..self.cursor.min(self.chars.len())]
            .iter()
            .collect()
    }

    fn feed(&mut self, text: &str) {
        for c in text.chars() {
            self.feed_char(c);
        }
    }

    fn n(&self) -> usize {
        self.params
            .split(';')
            .next()
            .and_then(|p| p.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(1)
    }

    fn feed_char(&mut self, c: char) {
        match self.escape {
            OutEscape::Start => {
                self.escape = match c {
                    '[' => {
                        self.params.clear();
                        OutEscape::Csi
                    }
                    ']' | 'P' | '_' | '^' => OutEscape::Text,
                    _ => OutEscape::None,
                };
                return;
            }
            OutEscape::Text => {
                if c == '\x07' {
                    self.escape = OutEscape::None;
                } else if c == '\x1b' {
                    self.escape = OutEscape::TextEsc;
                }
                return;
            }
            OutEscape::TextEsc => {
                self.escape = if c == '\\' {
                    OutEscape::None
                } else {
                    OutEscape::Text
                };
                return;
            }
            OutEscape::Csi => {
                if ('\u{40}'..='\u{7e}').contains(&c) {
                    self.escape = OutEscape::None;
                    self.csi(c);
                } else if self.params.len() < 32 {
                    self.params.push(c);
                }
                return;
            }
            OutEscape::None => {}
        }
        match c {
            '\x1b' => self.escape = OutEscape::Start,
            '\r' => self.cursor = 0,
            '\n' => {
                self.chars.clear();
                self.cursor = 0;
            }
            '\x08' => self.cursor = self.cursor.saturating_sub(1),
            c if c.is_control() => {}
            c => {
                if self.cursor < self.chars.len() {
                    self.chars[self.cursor] = c;
                } else {
                    while self.chars.len() < self.cursor {
                        self.chars.push(' ');
                    }
                    self.chars.push(c);
                }
                self.cursor += 1;
            }
        }
    }

    fn csi(&mut self, final_char: char) {
        let n = self.n();
        let len = self.chars.len();
        match final_char {
            'K' => match self.params.as_str() {
                "" | "0" => self.chars.truncate(self.cursor.min(len)),
                "1" => {
                    for c in self.chars.iter_mut().take(self.cursor + 1) {
                        *c = ' ';
                    }
                }
                _ => self.chars.clear(),
            },
            'C' => self.cursor += n,
            'D' => self.cursor = self.cursor.saturating_sub(n),
            'G' => self.cursor = n - 1,
            'P' => {
                let from = self.cursor.min(len);
                let to = (self.cursor + n).min(len);
                self.chars.drain(from..to);
            }
            '@' => {
                let at = self.cursor.min(len);
                for _ in 0..n {
                    self.chars.insert(at, ' ');
                }
            }
            'J' if self.params == "2" => {
                self.chars.clear();
                self.cursor = 0;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Steps through `input`, deciding every Enter as allowed.
    fn enter_lines(tracker: &mut LineTracker, input: &[u8]) -> Vec<(String, bool)> {
        let mut lines = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let step = tracker.step(rest);
            rest = &rest[step.consumed..];
            if let Some(enter) = step.enter {
                lines.push((enter.typed, enter.from_echo));
                tracker.line_done();
            }
        }
        lines
    }

    #[test]
    fn typed_lines_with_backspace_ctrl_u_ctrl_w_and_ctrl_c() {
        let mut t = LineTracker::default();
        assert_eq!(
            enter_lines(&mut t, b"lss\x7f -l\r"),
            [("ls -l".into(), false)]
        );
        assert_eq!(
            enter_lines(&mut t, b"rm -rf /\x15id\r"),
            [("id".into(), false)]
        );
        assert_eq!(
            enter_lines(&mut t, b"echo one two\x17three\r"),
            [("echo one three".into(), false)]
        );
        assert_eq!(
            enter_lines(&mut t, b"reboot\x03uptime\r"),
            [("uptime".into(), false)]
        );
    }

    #[test]
    fn pasted_lines_come_out_one_enter_each() {
        let mut t = LineTracker::default();
        let step = t.step(b"a\rb\r");
        assert_eq!(step.forward, b"a");
        assert_eq!(step.consumed, 2);
        assert_eq!(step.enter.unwrap().typed, "a");
        t.line_done();
        assert_eq!(
            enter_lines(&mut t, b"b\rc\n"),
            [("b".into(), false), ("c".into(), false)]
        );
    }

    #[test]
    fn unechoed_input_is_told_apart() {
        let mut t = LineTracker::default();
        t.output(b"[sudo] password for deploy: ");
        t.step(b"s3cret");
        assert!(!t.echoes("s3cret"));
        t.line_done();
        t.output(b"\r\n$ ");
        t.step(b"uptime");
        t.output(b"uptime");
        assert!(t.echoes("uptime"));
    }

    #[test]
    fn history_recall_is_read_from_the_echo() {
        let mut t = LineTracker::default();
        t.output(b"\r\n[deploy@web01 ~]$ ");
        // Up arrow: bash redraws the recalled line.
        assert!(t.step(b"\x1b[A").enter.is_none());
        t.output(b"touch /srv/marker");
        let enter = t.step(b"\r").enter.unwrap();
        assert!(enter.from_echo && enter.typed.is_empty());
        assert_eq!(t.echoed_command(), "touch /srv/marker");
    }

    #[test]
    fn tab_completion_and_cursor_edits_are_read_from_the_echo() {
        let mut t = LineTracker::default();
        t.output(b"$ ");
        t.step(b"cat /et");
        t.output(b"cat /et");
        t.step(b"\t");
        t.output(b"c/");
        t.step(b"host\x1b[D\x1b[D");
        t.output(b"host\x08\x08");
        t.step(b"X");
        // readline inserting: writes X then redraws the tail.
        t.output(b"Xst\x08\x08");
        assert!(t.step(b"\r").enter.unwrap().from_echo);
        assert_eq!(t.echoed_command(), "cat /etc/hoXst");
        // Erase to end of line and prompt redraws.
        let mut t = LineTracker::default();
        t.output(b"prompt> ");
        t.step(b"\x1b[A");
        t.output(b"\r\x1b[Kprompt> old command");
        assert_eq!(t.echoed_command(), "old command");
    }

    #[test]
    fn osc_titles_and_colours_are_not_text() {
        let mut t = LineTracker::default();
        t.output(b"\x1b]0;deploy@web01: ~\x07\x1b[01;32mdeploy@web01\x1b[00m$ ");
        t.step(b"\t");
        t.output(b"ls");
        assert_eq!(t.echoed_command(), "ls");
    }

    fn policy(filters: &str) -> Policy {
        let text = format!(
            "users:\n  - {{username: alice, groups: [ops]}}\n  - {{username: bob}}\n\
             user_groups: [{{name: ops}}]\n\
             nodes: [/Default/prod/web]\n\
             assets:\n  - name: web01\n    address: 127.0.0.1\n    protocols: [{{name: ssh, port: 22}}]\n    nodes: [/Default/prod/web]\n\
             \x20   accounts: [{{name: root, username: root, secret_type: password, secret: x}}]\n\
             \x20 - name: db01\n    address: 127.0.0.1\n    protocols: [{{name: ssh, port: 22}}]\n\
             command_filters:\n{filters}"
        );
        Policy::parse(
            &text,
            jms_core::Format::Yaml,
            "test",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    fn filters_for(policy: &Policy, user: &str, asset: &str, account: &str) -> Filters {
        let asset = policy.doc.assets.iter().find(|a| a.name == asset).unwrap();
        Filters::for_session(policy, user, asset, account)
    }

    #[test]
    fn the_default_action_decides_commands_no_filter_matches() {
        let p = policy(
            "  - {name: allow-uptime, priority: 10, action: allow, rules: ['^uptime$'], users: ['@ALL'], assets: ['@ALL'], accounts: ['@ALL']}\n",
        );
        let open = filters_for(&p, "alice", "web01", "root");
        assert_eq!(open.check("ls"), Verdict::Allow { filter: None });
        let closed = filters_for(&p, "alice", "web01", "root").with_default(FilterAction::Deny);
        assert_eq!(
            closed.check("ls"),
            Verdict::Deny {
                filter: DEFAULT_DENY.into()
            }
        );
        assert_eq!(
            closed.check("uptime"),
            Verdict::Allow {
                filter: Some("allow-uptime".into())
            }
        );
        assert!(closed.check_exec("uptime; ls").is_deny());
    }

    #[test]
    fn filters_go_by_priority_and_scope() {
        let p = policy(
            "  - {name: allow-safe-rm, priority: 10, action: allow, rules: ['^rm -rf /tmp/'], users: ['@ALL'], assets: ['@ALL'], accounts: ['@ALL']}\n\
             \x20 - {name: no-rm, priority: 20, action: deny, rules: ['^rm\\s+-rf'], user_groups: [ops], nodes: [/Default/prod], accounts: [root]}\n\
             \x20 - {name: no-reboot, action: deny, rules: ['reboot'], users: [bob], assets: [db01], accounts: ['@ALL']}\n\
             \x20 - {name: off, action: deny, rules: ['id'], users: ['@ALL'], assets: ['@ALL'], accounts: ['@ALL'], is_active: false}\n",
        );
        let alice_web = filters_for(&p, "alice", "web01", "root");
        assert_eq!(
            alice_web.check("rm -rf /"),
            Verdict::Deny {
                filter: "no-rm".into()
            }
        );
        assert_eq!(
            alice_web.check("rm -rf /tmp/x"),
            Verdict::Allow {
                filter: Some("allow-safe-rm".into())
            }
        );
        assert_eq!(
            alice_web.check("id"),
            Verdict::Allow { filter: None },
            "inactive filters do nothing"
        );
        assert_eq!(
            alice_web.check("reboot"),
            Verdict::Allow { filter: None },
            "no-reboot is bob's"
        );
        // Another account, another user, another asset: out of no-rm's scope.
        assert!(!filters_for(&p, "alice", "web01", "@INPUT")
            .check("rm -rf /")
            .is_deny());
        assert!(!filters_for(&p, "bob", "web01", "root")
            .check("rm -rf /")
            .is_deny());
        assert!(!filters_for(&p, "alice", "db01", "root")
            .check("rm -rf /")
            .is_deny());
        assert!(filters_for(&p, "bob", "db01", "deploy")
            .check("sudo reboot")
            .is_deny());
    }

    #[test]
    fn exec_commands_are_checked_part_by_part() {
        let p = policy(
            "  - {name: no-rm, action: deny, rules: ['^rm\\b'], users: ['@ALL'], assets: ['@ALL'], accounts: ['@ALL']}\n",
        );
        let f = filters_for(&p, "alice", "web01", "root");
        assert!(f.check_exec("uptime; rm -rf /").is_deny());
        assert!(f.check_exec("true && rm x").is_deny());
        assert!(f.check_exec("echo a\nrm b").is_deny());
        assert!(!f.check_exec("uptime; id").is_deny());
    }

    #[test]
    fn node_scope_covers_descendants_only() {
        assert!(is_under("/Default/prod/web", "/Default/prod"));
        assert!(is_under("/Default/prod", "/Default/prod"));
        assert!(!is_under("/Default/production", "/Default/prod"));
    }
}
