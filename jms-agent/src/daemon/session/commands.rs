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
//!   terminal's current line (`screen`: carriage return, backspace, cursor
//!   moves, erase and insert/delete sequences, bounded) minus the prompt
//!   seen when the line began. The relay holds such an Enter until the echo
//!   has settled.
//! - every key that can run a line in common shells is a submit: CR, LF,
//!   Ctrl-O, Ctrl-D on a non-empty line (cooked mode), Ctrl-X Ctrl-E — also
//!   right after an unfinished escape sequence; `\` continuation lines are
//!   joined and checked as one command;
//! - a line whose reading is uncertain (edited but not shown, the prompt
//!   gone from the screen, longer than the bound, run from an editor) is
//!   refused when any deny rule applies to the session ([`Line::uncertain`]).
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
use super::screen::{ScreenLine, MAX_LINE};

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
        Filters::from_rules(&Filters::rules_for_session(policy, user, asset, account))
    }

    /// The rules of [`Filters::for_session`], in the order they are
    /// checked, as the monitor hands them to a session worker.
    pub fn rules_for_session(
        policy: &Policy,
        user: &str,
        asset: &Asset,
        account: &str,
    ) -> Vec<crate::wire::FilterRule> {
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
        scoped
            .into_iter()
            .map(|f| crate::wire::FilterRule {
                name: f.name.clone(),
                action: f.action,
                rules: f.rules.clone(),
            })
            .collect()
    }

    /// Compiles `rules` (a rule that does not compile is left out: the
    /// policy loader checked every rule compiles).
    pub fn from_rules(rules: &[crate::wire::FilterRule]) -> Filters {
        Filters {
            default: FilterAction::Allow,
            filters: rules
                .iter()
                .map(|f| Compiled {
                    name: f.name.clone(),
                    action: f.action,
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

    /// Whether any command can be refused in this session: a deny filter
    /// applies, or the default action denies.
    pub fn any_deny(&self) -> bool {
        self.default == FilterAction::Deny
            || self.filters.iter().any(|f| f.action == FilterAction::Deny)
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

/// Keys that submit a line in common shells besides CR (Enter, Ctrl-M)
/// and LF (Ctrl-J): Ctrl-O (bash's operate-and-get-next, zsh's
/// accept-line-and-down-history) runs the line and recalls the next one.
const CTRL_O: u8 = 0x0f;
/// Ctrl-D hands a non-empty line to a program in cooked mode (dash, `sh`,
/// `cat`) without ending it: a checkpoint.
const CTRL_D: u8 = 0x04;
/// Ctrl-X Ctrl-E (bash's edit-and-execute-command) runs the line after an
/// editor changed it: what runs cannot be known here.
const CTRL_X: u8 = 0x18;
const CTRL_E: u8 = 0x05;

/// The filter name a line refused for an uncertain reading carries.
pub const UNREADABLE: &str = "(unreadable line)";

/// The engineer pressed a key that may run the line: the relay decides on
/// the line before forwarding `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enter {
    /// The byte to forward when allowed (`\r`, `\n`, Ctrl-O, Ctrl-D, or
    /// the Ctrl-E of Ctrl-X Ctrl-E).
    pub key: u8,
    /// The line as typed (meaningful unless `from_echo`).
    pub typed: String,
    /// The command must be read from the echo: call
    /// [`LineTracker::submitted`] once the target's echo settled.
    pub from_echo: bool,
    /// The key may run the line without ending it (Ctrl-D).
    pub checkpoint: bool,
}

/// One step through the input: bytes to forward now, then maybe an Enter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub forward: Vec<u8>,
    pub enter: Option<Enter>,
    /// Input bytes this step used; the rest waits for the next step.
    pub consumed: usize,
}

/// What a submitted line amounts to (from [`LineTracker::submitted`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// It ends with a `\` continuation: nothing runs yet; forward the key.
    /// The next line is checked joined to this one.
    Continued,
    /// A line to decide.
    Line(Line),
}

/// A line to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The command, joined with the `\` continuation lines before it.
    pub command: String,
    /// Typed without echo (a password): judged as typed, shown and logged
    /// as "(input not echoed)".
    pub hidden: bool,
    /// Why the reconstruction cannot be trusted, if it cannot: refuse the
    /// line when any deny rule applies to the session.
    pub uncertain: Option<&'static str>,
    /// The keys that kill the line on the target when it is refused.
    pub refusal: Vec<u8>,
}

/// Reconstructs command lines from the input bytes and the output echo.
///
/// Public entry points: [`LineTracker::output`] (target output),
/// [`LineTracker::step`] (engineer input, up to a key that may run the
/// line), [`LineTracker::echoes`] (whether to wait for the echo),
/// [`LineTracker::submitted`] (the line to decide) and
/// [`LineTracker::refused`] (after refusing it). Memory is bounded: the
/// screen line and the typed line hold at most [`MAX_LINE`] characters
/// each, and continuation lines as much together.
#[derive(Default)]
pub struct LineTracker {
    typed: String,
    typed_chars: usize,
    /// The typed line outgrew [`MAX_LINE`].
    typed_overflow: bool,
    /// The line was edited in ways only the target knows.
    complex: bool,
    /// The prompt on screen when the line began.
    prompt: Option<String>,
    screen: ScreenLine,
    output_text: Utf8Stream,
    input_text: Utf8Stream,
    /// Inside an escape sequence of the input: its state.
    input_escape: Escape,
    /// After Ctrl-X (a prefix key).
    after_ctrl_x: bool,
    /// The submitted line came after an unfinished escape sequence or
    /// prefix: a refusal cancels it first.
    prefix_pending: bool,
    /// The submitting key makes the line unreadable (Ctrl-X Ctrl-E).
    uncertain_key: Option<&'static str>,
    /// Lines ended by a `\` continuation, joined, not yet run.
    continued: String,
    continued_overflow: bool,
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

/// Whether a line ends with a `\` that continues it (an odd run of
/// backslashes at its end).
fn continues(line: &str) -> bool {
    line.bytes().rev().take_while(|&b| b == b'\\').count() % 2 == 1
}

/// The command in readline's incremental search display
/// (`(reverse-i-search)`ab': command`), if the line is one.
fn isearch_command(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("(failed ")
        .map(|r| format!("({r}"))
        .unwrap_or_else(|| line.to_string());
    let known = ["(reverse-i-search)`", "(i-search)`"];
    if !known.iter().any(|k| rest.starts_with(k)) {
        return None;
    }
    let at = line.find("': ")?;
    Some(&line[at + 3..])
}

impl LineTracker {
    /// Feeds target output (what the engineer sees).
    pub fn output(&mut self, data: &[u8]) {
        let text = self.output_text.decode(data);
        self.screen.feed(&text);
    }

    /// Takes input up to and including the first key that may run the line
    /// (CR, LF, Ctrl-O, Ctrl-D on a non-empty line, Ctrl-X Ctrl-E — also
    /// in the middle of an escape sequence): the bytes before it are
    /// forwarded at once; the key waits for a decision (and, for a line
    /// edited on the target's side, for the echo). Call
    /// [`LineTracker::submitted`] to decide, then step through the rest.
    pub fn step(&mut self, data: &[u8]) -> Step {
        for (i, &byte) in data.iter().enumerate() {
            let checkpoint = byte == CTRL_D && self.has_content();
            // (In a full-screen program Ctrl-X Ctrl-E is its own key.)
            let edit_and_run = byte == CTRL_E && self.after_ctrl_x && !self.screen.alternate();
            if matches!(byte, b'\r' | b'\n' | CTRL_O) || checkpoint || edit_and_run {
                self.begin_line();
                if self.input_escape != Escape::None || self.after_ctrl_x {
                    // The shell may take the key whatever came before it.
                    self.prefix_pending = true;
                    self.complex = true;
                    self.input_escape = Escape::None;
                    self.after_ctrl_x = false;
                }
                if edit_and_run {
                    self.uncertain_key = Some("Ctrl-X Ctrl-E runs the line from an editor");
                }
                return Step {
                    forward: data[..i].to_vec(),
                    enter: Some(Enter {
                        key: byte,
                        typed: self.typed.trim().to_string(),
                        from_echo: self.complex,
                        checkpoint,
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

    /// Whether the current line holds anything (typed or edited).
    fn has_content(&self) -> bool {
        !self.typed.trim().is_empty() || self.complex
    }

    fn begin_line(&mut self) {
        if self.prompt.is_none() {
            self.prompt = Some(self.screen.before_cursor());
        }
    }

    fn push_typed(&mut self, text: &str) {
        for c in text.chars() {
            if self.typed_chars >= MAX_LINE {
                self.typed_overflow = true;
                return;
            }
            self.typed.push(c);
            self.typed_chars += 1;
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
        self.after_ctrl_x = false;
        match byte {
            0x1b => {
                self.complex = true;
                self.input_escape = Escape::Start;
            }
            0x7f | 0x08 => {
                if self.typed.pop().is_some() {
                    self.typed_chars -= 1;
                }
            }
            0x15 => {
                self.typed.clear();
                self.typed_chars = 0;
            }
            0x03 => {
                // Ctrl-C abandons the line, continuation lines included.
                self.reset_line();
                self.continued.clear();
                self.continued_overflow = false;
            }
            0x17 => {
                let kept = self.typed.trim_end().len();
                self.typed.truncate(kept);
                let word_start = self.typed.rfind(' ').map(|i| i + 1).unwrap_or(0);
                self.typed.truncate(word_start);
                self.typed_chars = self.typed.chars().count();
            }
            CTRL_X => {
                self.complex = true;
                self.after_ctrl_x = true;
            }
            0x00..=0x1f => self.complex = true,
            _ => {
                let text = self.input_text.decode(&[byte]);
                self.push_typed(&text);
            }
        }
    }

    /// The command of a complex line read from the echo, and why that
    /// reading cannot be trusted, if it cannot.
    fn read_echo(&self) -> (String, Option<&'static str>) {
        let line = self.screen.text();
        if self.screen.overflowed() {
            return (
                line.trim().to_string(),
                Some("the line is longer than jms reads"),
            );
        }
        // The screen's text is trimmed at the end; so is the prompt here.
        let prompt = self.prompt.as_deref().unwrap_or("").trim_end();
        if self.screen.alternate() {
            // A full-screen program (vim, less, top) draws anywhere: its
            // lines are read as well as the model can, never refused for
            // the prompt (docs/sessions.md says what that leaves open).
            let command = line.strip_prefix(prompt).unwrap_or(&line);
            return (command.trim().to_string(), None);
        }
        let command = match line.strip_prefix(prompt) {
            Some(rest) => rest.trim(),
            None => match isearch_command(&line) {
                Some(found) => found.trim(),
                None => {
                    return (
                        line.trim().to_string(),
                        Some("the prompt changed on screen"),
                    )
                }
            },
        };
        if command.is_empty() {
            // Edited, yet nothing shows: echo is off, or the screen is not
            // what the model thinks.
            return (String::new(), Some("the edited line is not shown"));
        }
        (command.to_string(), None)
    }

    /// The command of a complex line, read from the echo (once the echo
    /// settled).
    pub fn echoed_command(&self) -> String {
        self.read_echo().0
    }

    /// Whether the terminal's current line shows `typed` (its last 16
    /// characters: a long line may have wrapped), i.e. the target echoed it.
    pub fn echoes(&self, typed: &str) -> bool {
        let chars: Vec<char> = typed.trim().chars().collect();
        let tail: String = chars[chars.len().saturating_sub(16)..].iter().collect();
        self.screen.text().contains(&tail)
    }

    /// The line `enter` submitted (call once the echo settled when
    /// `enter.from_echo` or the typed line is not echoed yet). A line that
    /// ends is over: the next input starts a new one.
    pub fn submitted(&mut self, enter: &Enter) -> Submitted {
        let (command, hidden, mut uncertain) = if enter.from_echo {
            let (command, why) = self.read_echo();
            (command, false, why)
        } else {
            let hidden = !enter.typed.is_empty() && !self.echoes(&enter.typed);
            let why = self
                .typed_overflow
                .then_some("the line is longer than jms reads");
            (enter.typed.clone(), hidden, why)
        };
        if let Some(why) = self.uncertain_key.take() {
            uncertain = Some(why);
        }
        let mut refusal = Vec::new();
        if self.prefix_pending {
            // Ctrl-G cancels a pending ESC or Ctrl-X first, so the keys
            // below are never read as Meta-Ctrl-E (shell-expand-line).
            refusal.push(0x07);
        }
        // End of line, kill the line, then Ctrl-C: the terminal discards
        // what it holds and the shell drops the line (and continuation
        // lines) in every editing mode — vi's command mode keeps the
        // character under the cursor after Ctrl-U alone.
        refusal.extend_from_slice(b"\x05\x15\x03");
        self.prefix_pending = false;
        let ends = matches!(enter.key, b'\r' | b'\n');
        if ends && uncertain.is_none() && continues(&command) {
            let part = &command[..command.len() - 1];
            if self.continued.chars().count() + part.chars().count() > MAX_LINE {
                self.continued_overflow = true;
            } else {
                self.continued.push_str(part);
            }
            self.reset_line();
            return Submitted::Continued;
        }
        let mut full = std::mem::take(&mut self.continued);
        full.push_str(&command);
        if std::mem::take(&mut self.continued_overflow) {
            uncertain = Some("the line is longer than jms reads");
        }
        if enter.checkpoint {
            // The line goes on; what the program took is on screen only.
            self.complex = true;
        } else {
            let prompt = self.prompt.take();
            self.reset_line();
            if enter.key == CTRL_O {
                // The next line starts as a recalled one, after the same prompt.
                self.complex = true;
                self.prompt = prompt;
            }
        }
        Submitted::Line(Line {
            command: full.trim().to_string(),
            hidden,
            uncertain,
            refusal,
        })
    }

    /// The line was refused (and killed on the target): start afresh.
    pub fn refused(&mut self) {
        self.reset_line();
        self.continued.clear();
        self.continued_overflow = false;
    }

    fn reset_line(&mut self) {
        self.typed.clear();
        self.typed_chars = 0;
        self.typed_overflow = false;
        self.complex = false;
        self.prompt = None;
        self.input_escape = Escape::None;
        self.after_ctrl_x = false;
        self.prefix_pending = false;
        self.uncertain_key = None;
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
                tracker.submitted(&enter);
                lines.push((enter.typed, enter.from_echo));
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
        let enter = step.enter.unwrap();
        assert_eq!(enter.typed, "a");
        t.submitted(&enter);
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
        t.refused();
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

    /// Steps through `input` (with `echo` printed by the target before
    /// each submit) and returns every submitted line.
    fn submit_all(t: &mut LineTracker, input: &[u8], echo: &[u8]) -> Vec<Submitted> {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let step = t.step(rest);
            rest = &rest[step.consumed..];
            if let Some(enter) = step.enter {
                t.output(echo);
                out.push(t.submitted(&enter));
            }
        }
        out
    }

    fn line(s: &Submitted) -> &Line {
        match s {
            Submitted::Line(line) => line,
            Submitted::Continued => panic!("a line was expected, got a continuation"),
        }
    }

    #[test]
    fn ctrl_o_submits_the_line_and_the_recalled_next_one_is_read_from_the_echo() {
        let mut t = LineTracker::default();
        t.output(b"$ ");
        let step = t.step(b"touch /tmp/x\x0fmore");
        assert_eq!(step.forward, b"touch /tmp/x", "Ctrl-O waits for a decision");
        let enter = step.enter.expect("Ctrl-O submits");
        assert_eq!((enter.key, enter.typed.as_str()), (0x0f, "touch /tmp/x"));
        t.output(b"touch /tmp/x");
        assert_eq!(line(&t.submitted(&enter)).command, "touch /tmp/x");
        // bash runs it and shows the next history line after the prompt.
        t.output(b"\r\n$ reboot");
        let enter = t.step(b"\r").enter.unwrap();
        assert!(enter.from_echo, "a recalled line is read from the screen");
        let l = t.submitted(&enter);
        assert_eq!(line(&l).command, "reboot");
        assert_eq!(line(&l).uncertain, None);
    }

    #[test]
    fn enter_after_an_unfinished_escape_sequence_is_a_submit() {
        for prefix in [&b"\x1b"[..], b"\x1b[", b"\x1bO", b"\x1b[1;", b"\x18"] {
            for key in [b'\r', b'\n', 0x0f] {
                let mut t = LineTracker::default();
                t.output(b"$ ");
                let mut input = b"reboot".to_vec();
                input.extend_from_slice(prefix);
                input.push(key);
                let step = t.step(&input);
                let enter = step
                    .enter
                    .unwrap_or_else(|| panic!("{prefix:?} then {key} must submit"));
                assert_eq!(step.consumed, input.len());
                assert!(enter.from_echo);
                t.output(b"reboot");
                let l = t.submitted(&enter);
                assert_eq!(line(&l).command, "reboot");
                assert!(
                    line(&l).refusal.starts_with(b"\x07\x05\x15"),
                    "a refusal cancels the pending prefix before Ctrl-E Ctrl-U: {:?}",
                    line(&l).refusal
                );
            }
        }
    }

    #[test]
    fn an_edited_line_that_is_not_shown_is_uncertain() {
        // stty -echo, then a line with a cursor edit: nothing on screen.
        let mut t = LineTracker::default();
        t.output(b"$ ");
        let out = submit_all(&mut t, b"rebooo\x1b[D\x7f\x1b[Ct\r", b"");
        assert_eq!(line(&out[0]).command, "");
        assert!(line(&out[0]).uncertain.is_some());
        // Typed plainly without echo (a password) stays judged as typed.
        let mut t = LineTracker::default();
        t.output(b"Password: ");
        let out = submit_all(&mut t, b"hunter2\r", b"");
        assert_eq!(line(&out[0]).command, "hunter2");
        assert!(line(&out[0]).hidden && line(&out[0]).uncertain.is_none());
    }

    #[test]
    fn a_changed_prompt_makes_the_line_uncertain_but_incremental_search_reads() {
        let mut t = LineTracker::default();
        t.output(b"$ true");
        // Type-ahead: the first key lands before the new prompt is drawn.
        let step = t.step(b"\x1b[A\r");
        t.output(b"\r\n$ reboot");
        assert!(line(&t.submitted(&step.enter.unwrap())).uncertain.is_some());
        let mut t = LineTracker::default();
        t.output(b"$ ");
        let step = t.step(b"\x12reb\r");
        t.output(b"\r(reverse-i-search)`reb': sudo reboot\x1b[K");
        let l = t.submitted(&step.enter.unwrap());
        assert_eq!(line(&l).command, "sudo reboot");
        assert_eq!(line(&l).uncertain, None);
    }

    #[test]
    fn arbitrary_bytes_on_both_sides_never_panic_and_stay_bounded() {
        // A small deterministic generator over the bytes that matter.
        let alphabet: &[u8] = b"\x1b[O;?0123456789CDGHfPX@KJhlb`\r\n\x0f\x04\x18\x05\x03\x15\x17\x7f\x08\x07\\'a \xc3\xa9\xe2\x82";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let filters = Filters::none().with_default(FilterAction::Deny);
        let mut t = LineTracker::default();
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let chunk: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            if next() % 2 == 0 {
                t.output(&chunk);
            } else {
                let mut rest = &chunk[..];
                while !rest.is_empty() {
                    let step = t.step(rest);
                    rest = &rest[step.consumed..];
                    if let Some(enter) = step.enter {
                        if let Submitted::Line(l) = t.submitted(&enter) {
                            if filters.check_exec(&l.command).is_deny() && next() % 2 == 0 {
                                t.refused();
                            }
                        }
                    }
                }
            }
            assert!(t.screen.len() <= MAX_LINE && t.screen.cursor() <= MAX_LINE);
            assert!(t.typed_chars <= MAX_LINE && t.continued.chars().count() <= MAX_LINE);
        }
    }

    #[test]
    fn full_screen_programs_are_read_without_the_prompt_rule() {
        // vim: ESC then `:wq` Enter on the alternate screen.
        let mut t = LineTracker::default();
        t.output(b"$ vim x\r\n\x1b[?1049h\x1b[1;1H~\x1b[24;1H");
        let step = t.step(b"ihello\x1b:wq\r");
        t.output(b"\x1b[24;1H:wq");
        let l = t.submitted(&step.enter.unwrap());
        assert_eq!(line(&l).uncertain, None, "{l:?}");
        // Back on the normal screen, the rules apply again.
        t.output(b"\x1b[?1049l\r\n$ ");
        let step = t.step(b"\x1b[A\r");
        t.output(b"\r\nother> reboot");
        assert!(line(&t.submitted(&step.enter.unwrap())).uncertain.is_some());
    }

    #[test]
    fn continuation_lines_are_joined_before_checking() {
        let mut t = LineTracker::default();
        let out = submit_all(&mut t, b"re\\\rbo\\\rot -f\r", b"");
        assert_eq!(out[0], Submitted::Continued);
        assert_eq!(out[1], Submitted::Continued);
        let l = line(&out[2]);
        assert_eq!(l.command, "reboot -f");
        assert!(
            l.refusal.ends_with(b"\x03"),
            "refusing a line drops what the shell holds"
        );
        // An escaped backslash does not continue; Ctrl-C drops the parts.
        let out = submit_all(&mut t, b"echo a\\\\\r", b"");
        assert_eq!(line(&out[0]).command, "echo a\\\\");
        let out = submit_all(&mut t, b"rm \\\r\x03id\r", b"");
        assert_eq!(line(&out[1]).command, "id");
    }

    #[test]
    fn ctrl_d_on_a_non_empty_line_is_a_checkpoint_and_ctrl_x_ctrl_e_is_uncertain() {
        let mut t = LineTracker::default();
        t.output(b"$ ");
        let step = t.step(b"reboot\x04\x04");
        let enter = step.enter.expect("Ctrl-D after text may run it (dash)");
        assert!(enter.checkpoint && enter.key == 0x04);
        t.output(b"reboot");
        assert_eq!(line(&t.submitted(&enter)).command, "reboot");
        // On an empty line Ctrl-D is end-of-file: no check.
        let mut t = LineTracker::default();
        assert!(t.step(b"\x04").enter.is_none());
        let mut t = LineTracker::default();
        t.output(b"$ ");
        let step = t.step(b"ls\x18\x05");
        let enter = step.enter.expect("Ctrl-X Ctrl-E submits");
        t.output(b"ls");
        assert!(line(&t.submitted(&enter)).uncertain.is_some());
    }

    #[test]
    fn memory_stays_bounded_whatever_either_side_sends() {
        let mut t = LineTracker::default();
        for count in ["99999999", "9000000000000000000", "99999999999999999999999"] {
            for seq in ['C', 'D', 'G', '@', 'P', 'X', 'K', '`', 'H'] {
                t.output(format!("\x1b[{count}{seq}.").as_bytes());
            }
        }
        assert!(t.screen.len() <= MAX_LINE && t.screen.cursor() <= MAX_LINE);
        let big = vec![b'a'; 4 * MAX_LINE];
        t.step(&big);
        assert!(t.typed.len() <= MAX_LINE);
        let enter = t.step(b"\r").enter.unwrap();
        let l = t.submitted(&enter);
        assert!(
            line(&l).uncertain.is_some(),
            "an over-long line is uncertain"
        );
        // Continuation parts cannot pile up either.
        let mut input = Vec::new();
        for _ in 0..10 {
            input.extend_from_slice(&vec![b'b'; MAX_LINE - 10]);
            input.extend_from_slice(b"\\\r");
        }
        input.extend_from_slice(b"end\r");
        let out = submit_all(&mut t, &input, b"");
        assert!(t.continued.len() <= MAX_LINE);
        assert!(line(out.last().unwrap()).uncertain.is_some());
    }

    #[test]
    fn interactive_lines_are_checked_part_by_part() {
        let p = policy(
            "  - {name: no-reboot, action: deny, rules: ['^reboot'], users: ['@ALL'], assets: ['@ALL'], accounts: ['@ALL']}\n",
        );
        let f = filters_for(&p, "alice", "web01", "root");
        assert!(f.any_deny());
        assert!(f.check_exec("uptime; reboot").is_deny());
        assert!(!Filters::none().any_deny());
        assert!(Filters::none().with_default(FilterAction::Deny).any_deny());
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
