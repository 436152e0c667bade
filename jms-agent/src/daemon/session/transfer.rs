//! File transfers that arrive as an exec command: legacy scp
//! (`scp -t|-f … web01:/path`, what `scp -O` sends) and rsync over ssh
//! (`rsync --server [--sender] … . web01:/path…`), and the transfer log
//! shared with the SFTP proxy.
//!
//! [`parse`] turns `SSH_ORIGINAL_COMMAND` into a [`Transfer`]: the target
//! (`[account@]asset` from the paths' prefix), the direction, and the command
//! to run on the target — the same program and flags with the asset prefix
//! stripped from each path and every word re-quoted for the target's shell.
//!
//! The command line is split as a POSIX shell would split it (sshd would have
//! handed it to the user's shell), with two differences that keep the target
//! safe: shell syntax that runs or redirects anything (`;`, `|`, `&`, `<`,
//! `>`, `$`, backquotes, parentheses, newlines, `#`) is refused instead of
//! interpreted, and only globs (`*`, `?`, `[…]`) and a leading `~` keep their
//! meaning on the target. So `scp -t 'web01:/tmp/$(id)'` writes a file
//! literally named `$(id)`, and `scp -f web01:/tmp/$(id)` is refused.
//!
//! Refused as well: rsync's `-s` / `--protect-args` / `--secluded-args`
//! (the paths then travel on stdin, out of the bastion's sight: the
//! engineer is told to drop `-s`), and every rsync option that is not on
//! the list of what `rsync --server` is known to carry harmlessly (fail
//! closed: `--daemon`, `--log-file`, batch files, `--backup-dir`,
//! `--temp-dir`, `--*-dest`, `--rsync-path`, the block size `-B`…), scp
//! options other than `-t -f -r -p -d -v`, and a command naming several
//! targets. rsync options that delete on the target (`--delete*`,
//! `--del`, `--force`, `--remove-source-files`) need the `delete` action.

use jms_core::model::{Action, Protocol};
use serde::Serialize;

/// A transfer command, as the daemon runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub tool: Tool,
    /// Where the files are: the `[account@]asset` prefix of the paths.
    pub target: AssetSpec,
    pub direction: Direction,
    /// The command also deletes files on the target (rsync `--delete…`,
    /// `--force`, `--remove-source-files`): it needs `delete` too.
    pub deletes: bool,
    /// What to run on the target as an exec: the same program and flags,
    /// remote paths only, each word quoted for a POSIX shell.
    pub remote_command: String,
    /// The remote paths as the engineer named them (prefix stripped,
    /// shell quoting removed), for the transfer log.
    pub paths: Vec<String>,
}

/// The program on both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tool {
    /// Legacy scp (`scp -O`, or scp before 9.0).
    Scp,
    /// rsync over ssh.
    Rsync,
}

impl Tool {
    pub fn as_str(self) -> &'static str {
        match self {
            Tool::Scp => "scp",
            Tool::Rsync => "rsync",
        }
    }
}

/// Which way the files go, seen from the engineer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the target (`scp -t`, rsync receiver).
    Upload,
    /// From the target (`scp -f`, `rsync --sender`).
    Download,
}

/// `[account@]asset` as the engineer typed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetSpec {
    pub asset: String,
    /// `None`: the asset's only account (the daemon resolves it, or asks
    /// her to choose).
    pub account: Option<String>,
}

impl AssetSpec {
    /// Reads `asset` or `account@asset`; `None` when `text` cannot be one
    /// (empty parts, a `/`, whitespace or a control character).
    pub fn parse(text: &str) -> Option<AssetSpec> {
        let valid = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
        };
        match text.rsplit_once('@') {
            Some((account, asset)) if valid(account) && valid(asset) => Some(AssetSpec {
                asset: asset.to_string(),
                account: Some(account.to_string()),
            }),
            Some(_) => None,
            None if valid(text) => Some(AssetSpec {
                asset: text.to_string(),
                account: None,
            }),
            None => None,
        }
    }
}

impl std::fmt::Display for AssetSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.account {
            Some(account) => write!(f, "{account}@{}", self.asset),
            None => f.write_str(&self.asset),
        }
    }
}

impl Transfer {
    /// The action of the direction: `upload` or `download`.
    pub fn required_action(&self) -> Action {
        match self.direction {
            Direction::Upload => Action::Upload,
            Direction::Download => Action::Download,
        }
    }

    /// Every action the grant must give, all checked with
    /// [`Transfer::protocol`]: `connect` (a connection to the target),
    /// the direction's action, and `delete` when the command deletes.
    pub fn required_actions(&self) -> Vec<Action> {
        let mut actions = vec![Action::Connect, self.required_action()];
        if self.deletes {
            actions.push(Action::Delete);
        }
        actions
    }

    /// The grant protocol of every file transfer, whatever its wire
    /// (scp, rsync and sftp are all "sftp" in grants, as in JumpServer).
    pub fn protocol(&self) -> Protocol {
        Protocol::Sftp
    }

    /// The log records of this transfer once it ended: one for the
    /// direction (all paths, `bytes` relayed that way), and one `delete`
    /// when the command deletes files.
    pub fn events(&self, account: &str, bytes: u64, result: TransferResult) -> Vec<TransferEvent> {
        let path = self.paths.join(" ");
        let mut events = vec![TransferEvent {
            asset: self.target.asset.clone(),
            account: account.to_string(),
            via: self.tool.as_str(),
            operation: match self.direction {
                Direction::Upload => TransferOp::Upload,
                Direction::Download => TransferOp::Download,
            },
            path: path.clone(),
            to: None,
            size: bytes,
            result: result.clone(),
        }];
        if self.deletes {
            events.push(TransferEvent {
                operation: TransferOp::Delete,
                size: 0,
                ..events[0].clone()
            });
        }
        events
    }
}

/// Why a transfer command is refused; the message is one line for the
/// engineer (it names only what she typed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Quoting or shell syntax the bastion does not run.
    #[error("{tool}: {reason}")]
    Syntax { tool: &'static str, reason: String },
    /// A path without the `asset:` prefix.
    #[error("{tool}: {path:?} names no asset: write it as asset:/path or account@asset:/path")]
    MissingAsset { tool: &'static str, path: String },
    /// Paths on different targets in one command.
    #[error("{tool}: one command may reach one asset, but it names {first} and {other}")]
    SeveralAssets {
        tool: &'static str,
        first: String,
        other: String,
    },
    /// No remote path at all.
    #[error("{tool}: no remote path given")]
    NoPath { tool: &'static str },
    /// `rsync -s`: the paths would come on stdin.
    #[error(
        "rsync: -s (--protect-args/--secluded-args) is not supported through the bastion: \
         run rsync without -s (paths with spaces still work)"
    )]
    ProtectArgs,
    /// An option the bastion does not pass on.
    #[error("{tool}: {option} is not allowed through the bastion")]
    Option { tool: &'static str, option: String },
}

/// Reads `command_line` as a transfer: `None` when it is neither legacy scp
/// (`scp …` with `-t` or `-f`) nor `rsync --server …`, so the caller tries
/// the other forms; `Some(Err)` when it is one but is refused.
pub fn parse(command_line: &str) -> Option<Result<Transfer, TransferError>> {
    let first = command_line.split_ascii_whitespace().next()?;
    match first {
        "scp" => {
            let words = command_line.split_ascii_whitespace().skip(1);
            let is_server = words.take_while(|w| *w != "--").any(|w| {
                w.starts_with('-') && !w.starts_with("--") && (w.contains('t') || w.contains('f'))
            });
            is_server.then(|| parse_scp(command_line))
        }
        "rsync" => {
            let is_server = command_line.split_ascii_whitespace().nth(1) == Some("--server");
            is_server.then(|| parse_rsync(command_line))
        }
        _ => None,
    }
}

fn parse_scp(command_line: &str) -> Result<Transfer, TransferError> {
    const TOOL: &str = "scp";
    let words = split(command_line, TOOL)?;
    let mut flags: Vec<String> = Vec::new();
    let mut direction = None;
    let mut rest = words.iter().skip(1).peekable();
    while let Some(word) = rest.peek() {
        let text = word.text();
        if text == "--" {
            rest.next();
            break;
        }
        if !text.starts_with('-') || text == "-" {
            break;
        }
        for flag in text.chars().skip(1) {
            match flag {
                't' | 'f' => {
                    let d = if flag == 't' {
                        Direction::Upload
                    } else {
                        Direction::Download
                    };
                    if direction.is_some_and(|old| old != d) {
                        return Err(TransferError::Syntax {
                            tool: TOOL,
                            reason: "both -t and -f given".into(),
                        });
                    }
                    direction = Some(d);
                }
                'r' | 'p' | 'd' | 'v' => {}
                other => {
                    return Err(TransferError::Option {
                        tool: TOOL,
                        option: format!("-{other}"),
                    })
                }
            }
        }
        flags.push(text);
        rest.next();
    }
    let direction = direction.ok_or(TransferError::Syntax {
        tool: TOOL,
        reason: "neither -t nor -f given".into(),
    })?;
    let paths: Vec<&Word> = rest.collect();
    if direction == Direction::Upload && paths.len() > 1 {
        return Err(TransferError::Syntax {
            tool: TOOL,
            reason:
                "an upload names one target path (quote a path with spaces for the remote shell)"
                    .into(),
        });
    }
    let (target, remote) = remote_paths(&paths, TOOL)?;
    let mut command = String::from("scp");
    for flag in &flags {
        command.push(' ');
        command.push_str(flag);
    }
    for path in &remote {
        command.push(' ');
        command.push_str(&path.quoted);
    }
    Ok(Transfer {
        tool: Tool::Scp,
        target,
        direction,
        deletes: false,
        remote_command: command,
        paths: remote.into_iter().map(|p| p.display).collect(),
    })
}

/// Short options `rsync --server` may carry in its one bundle (see
/// `server_options()` in rsync's options.c; `a` from other clients): none
/// of them deletes. `e` ends the bundle (the rest is the capability
/// string, e.g. `-logDtprze.iLsfxCIvu`); `s` is refused with advice;
/// anything else (`-M`, a future option) is refused.
const RSYNC_SHORT: &str = "vqbunldKmOJyLkWHogDtUNpEAXrcCIRxSza";

/// Long options `rsync --server` may carry, without a value (exact).
const RSYNC_LONG: &[&str] = &[
    "--list-only",
    "--no-r",
    "--no-specials",
    "--specials",
    "--msgs2stderr",
    "--no-msgs2stderr",
    "--new-compress",
    "--old-compress",
    "--super",
    "--size-only",
    "--stats",
    "--ignore-missing-args",
    "--partial",
    "--ignore-errors",
    "--copy-unsafe-links",
    "--safe-links",
    "--numeric-ids",
    "--use-qsort",
    "--ignore-existing",
    "--existing",
    "--fsync",
    "--append",
    "--inplace",
    "--no-W",
    "--from0",
    "--no-relative",
    "--no-implied-dirs",
    "--write-devices",
    "--copy-devices",
    "--preallocate",
    "--open-noatime",
    "--mkpath",
];

/// Long options `rsync --server` may carry with `=VALUE` (prefix).
const RSYNC_LONG_VALUE: &[&str] = &[
    "--iconv=",
    "--compress-level=",
    "--log-format=",
    "--timeout=",
    "--bwlimit=",
    "--suffix=",
    "--checksum-choice=",
    "--compress-choice=",
    "--max-delete=",
    "--min-size=",
    "--max-size=",
    "--skip-compress=",
    "--max-alloc=",
    "--modify-window=",
    "--checksum-seed=",
    "--info=",
    "--debug=",
    "--usermap=",
    "--groupmap=",
];

/// rsync options that delete files or directories on the target: they
/// need `delete`. `--force` removes a non-empty directory that a file
/// replaces; `--delete*` and `--del` remove what the source lacks;
/// `--remove-s*-files` remove the sent files.
const RSYNC_DELETING: &[&str] = &[
    "--del",
    "--delete",
    "--delete-before",
    "--delete-during",
    "--delete-delay",
    "--delete-after",
    "--delete-excluded",
    "--delete-missing-args",
    "--force",
    "--remove-source-files",
    "--remove-sent-files",
];

/// Reads one option word of `rsync --server`: `Ok(true)` when it deletes,
/// `Ok(false)` when it is allowed as it is; `Err` when refused. Anything
/// not known to be harmless is refused: options that write files of
/// their own on the target (`--log-file`, batch files, `--backup-dir`,
/// `--partial-dir`, `--temp-dir`, `--*-dest`), read or run other things
/// (`--files-from FILE`, `--rsync-path`, `--daemon`, `--config`), and the
/// block size (`-B`, `--block-size`), which the bastion does not let a
/// client choose.
fn rsync_option(text: &str) -> Result<bool, TransferError> {
    const TOOL: &str = "rsync";
    let refused = |option: &str| TransferError::Option {
        tool: TOOL,
        option: option.to_string(),
    };
    if text == "--protect-args" || text == "--secluded-args" {
        return Err(TransferError::ProtectArgs);
    }
    if let Some(long) = text.strip_prefix("--") {
        if RSYNC_DELETING.contains(&text) {
            return Ok(true);
        }
        if RSYNC_LONG.contains(&text)
            || text == "--files-from=-"
            || RSYNC_LONG_VALUE.iter().any(|o| text.starts_with(o))
        {
            return Ok(false);
        }
        let name = long.split('=').next().unwrap_or_default();
        return Err(refused(&format!("--{name}")));
    }
    let Some(cluster) = text.strip_prefix('-').filter(|c| !c.is_empty()) else {
        return Err(TransferError::Syntax {
            tool: TOOL,
            reason: format!("unexpected argument {text:?} before the paths"),
        });
    };
    // `-@N`: a negative --modify-window (rsync sends it as its own word).
    if let Some(number) = cluster.strip_prefix('@') {
        if !number.is_empty()
            && number
                .trim_start_matches('-')
                .bytes()
                .all(|b| b.is_ascii_digit())
        {
            return Ok(false);
        }
        return Err(refused("-@"));
    }
    for flag in cluster.chars() {
        match flag {
            's' => return Err(TransferError::ProtectArgs),
            // The rest of the word is the capability string.
            'e' => break,
            'B' => return Err(refused("-B (--block-size)")),
            f if RSYNC_SHORT.contains(f) => {}
            other => return Err(refused(&format!("-{other}"))),
        }
    }
    Ok(false)
}

fn parse_rsync(command_line: &str) -> Result<Transfer, TransferError> {
    const TOOL: &str = "rsync";
    let words = split(command_line, TOOL)?;
    let mut direction = Direction::Upload;
    let mut deletes = false;
    let mut options: Vec<String> = Vec::new();
    let mut rest = words.iter().skip(2);
    let mut dot = false;
    for word in rest.by_ref() {
        let text = word.text();
        if text == "." {
            dot = true;
            break;
        }
        if text == "--sender" {
            direction = Direction::Download;
        } else {
            deletes |= rsync_option(&text)?;
        }
        options.push(quote_literal(&text));
    }
    if !dot {
        return Err(TransferError::NoPath { tool: TOOL });
    }
    let paths: Vec<&Word> = rest.collect();
    let (target, remote) = remote_paths(&paths, TOOL)?;
    let mut command = String::from("rsync --server");
    for option in &options {
        command.push(' ');
        command.push_str(option);
    }
    command.push_str(" .");
    for path in &remote {
        command.push(' ');
        command.push_str(&path.quoted);
    }
    Ok(Transfer {
        tool: Tool::Rsync,
        target,
        direction,
        deletes,
        remote_command: command,
        paths: remote.into_iter().map(|p| p.display).collect(),
    })
}

/// A remote path: as the log shows it, and as the target's shell gets it.
struct RemotePath {
    display: String,
    quoted: String,
}

/// The common target of `paths` and each path without its prefix. The
/// first path names the target; the others name the same one or none
/// (rsync sends `host:/a :/b` as `web01:/a /b`).
fn remote_paths(
    paths: &[&Word],
    tool: &'static str,
) -> Result<(AssetSpec, Vec<RemotePath>), TransferError> {
    let Some(first) = paths.first() else {
        return Err(TransferError::NoPath { tool });
    };
    let Some((target, _)) = split_prefix(first) else {
        return Err(TransferError::MissingAsset {
            tool,
            path: first.text(),
        });
    };
    let mut remote = Vec::new();
    for path in paths {
        let chars = match split_prefix(path) {
            Some((spec, rest)) if spec == target => rest,
            Some((spec, _)) => {
                return Err(TransferError::SeveralAssets {
                    tool,
                    first: target.to_string(),
                    other: spec.to_string(),
                })
            }
            None => &path.chars[..],
        };
        remote.push(remote_path(chars));
    }
    Ok((target, remote))
}

/// `[account@]asset:rest` → the spec and the rest's characters.
fn split_prefix(word: &Word) -> Option<(AssetSpec, &[(char, bool)])> {
    let colon = word.chars.iter().position(|(c, _)| *c == ':')?;
    let spec: String = word.chars[..colon].iter().map(|(c, _)| c).collect();
    Some((AssetSpec::parse(&spec)?, &word.chars[colon + 1..]))
}

/// Quotes one remote path for the target's shell: globs and a leading
/// `~` or `~name` stay active (as the engineer's shell-less command meant
/// them), everything else is literal. `~/x` becomes `x` (an exec starts in
/// the home directory), an empty path `.`, and a relative path starting
/// with `-` gets `./` so no program takes it for an option.
fn remote_path(chars: &[(char, bool)]) -> RemotePath {
    let mut chars: Vec<(char, bool)> = chars.to_vec();
    let mut head = String::new();
    if chars.first().is_some_and(|(c, _)| *c == '~') {
        let end = chars
            .iter()
            .position(|(c, _)| *c == '/')
            .unwrap_or(chars.len());
        let name: String = chars[1..end].iter().map(|(c, _)| c).collect();
        if name.is_empty() {
            // `~` or `~/rest`: relative to the home directory.
            let skip = (end + 1).min(chars.len());
            chars.drain(..skip);
        } else if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            head = format!("~{name}");
            chars.drain(..end);
        }
    }
    let display_rest: String = chars.iter().map(|(c, _)| c).collect();
    if head.is_empty() && chars.is_empty() {
        return RemotePath {
            display: ".".into(),
            quoted: ".".into(),
        };
    }
    if head.is_empty() && chars.first().is_some_and(|(c, _)| *c == '-') {
        chars.splice(0..0, [('.', true), ('/', true)]);
    }
    let display = format!("{head}{display_rest}");
    RemotePath {
        quoted: format!("{head}{}", quote_chars(&chars)),
        display,
    }
}

/// A word quoted so the shell takes it literally.
fn quote_literal(text: &str) -> String {
    let chars: Vec<(char, bool)> = text.chars().map(|c| (c, true)).collect();
    quote_chars(&chars)
}

/// Quotes characters for a POSIX shell: unquoted glob characters stay
/// bare, every other run is single-quoted unless it is plainly safe.
fn quote_chars(chars: &[(char, bool)]) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:=@%+,".contains(c);
    let glob = |(c, literal): (char, bool)| !literal && matches!(c, '*' | '?' | '[' | ']');
    if chars.iter().all(|(c, _)| safe(*c)) {
        return chars.iter().map(|(c, _)| c).collect();
    }
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.is_empty() {
            return;
        }
        if run.chars().all(safe) {
            out.push_str(run);
        } else {
            out.push('\'');
            out.push_str(&run.replace('\'', r"'\''"));
            out.push('\'');
        }
        run.clear();
    };
    for &(c, literal) in chars {
        if glob((c, literal)) {
            flush(&mut run, &mut out);
            out.push(c);
        } else {
            run.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// One shell word: each character with whether it was quoted or escaped.
#[derive(Debug)]
struct Word {
    chars: Vec<(char, bool)>,
}

impl Word {
    fn text(&self) -> String {
        self.chars.iter().map(|(c, _)| c).collect()
    }
}

/// Splits a command line into words as a POSIX shell would, refusing what
/// would do more than quoting, globbing and `~`.
fn split(line: &str, tool: &'static str) -> Result<Vec<Word>, TransferError> {
    let syntax = |reason: String| TransferError::Syntax { tool, reason };
    // Quoted or not: a control character in a path would reach the
    // audit record and the target's command line.
    if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(syntax(format!("control character {c:?} in the command")));
    }
    let mut words = Vec::new();
    let mut current: Option<Vec<(char, bool)>> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(word) = current.take() {
                    words.push(Word { chars: word });
                }
            }
            '\'' => {
                let word = current.get_or_insert_with(Vec::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(q) => word.push((q, true)),
                        None => return Err(syntax("unterminated ' quote".into())),
                    }
                }
            }
            '"' => {
                let word = current.get_or_insert_with(Vec::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('$' | '`' | '"' | '\\')) => word.push((e, true)),
                            Some('\n') => {}
                            Some(other) => {
                                word.push(('\\', true));
                                word.push((other, true));
                            }
                            None => return Err(syntax("unterminated \" quote".into())),
                        },
                        Some(d @ ('$' | '`')) => {
                            return Err(syntax(format!(
                                "{d} substitution is not supported in paths"
                            )))
                        }
                        Some(q) => word.push((q, true)),
                        None => return Err(syntax("unterminated \" quote".into())),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(e) => current.get_or_insert_with(Vec::new).push((e, true)),
                None => return Err(syntax("a trailing \\".into())),
            },
            ';' | '&' | '|' | '<' | '>' | '(' | ')' | '$' | '`' | '\n' | '\r' => {
                return Err(syntax(format!(
                    "shell syntax {c:?} is not supported (quote the path)"
                )))
            }
            '#' if current.is_none() => {
                return Err(syntax("shell comments are not supported".into()))
            }
            other if other.is_control() => {
                return Err(syntax(format!(
                    "control character {other:?} in the command"
                )))
            }
            other => current.get_or_insert_with(Vec::new).push((other, false)),
        }
    }
    if let Some(word) = current.take() {
        words.push(Word { chars: word });
    }
    Ok(words)
}

/// One transfer record for the daemon's log and spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransferEvent {
    pub asset: String,
    /// The account name (not its username).
    pub account: String,
    /// The wire: `sftp` (sftp and scp 9.x), `scp` (legacy) or `rsync`.
    pub via: &'static str,
    pub operation: TransferOp,
    /// The path on the asset (for a rename, the source).
    pub path: String,
    /// A rename's or link's destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Bytes written (upload) or read (download).
    pub size: u64,
    pub result: TransferResult,
}

/// What a transfer record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferOp {
    Upload,
    Download,
    Delete,
    Rename,
    Mkdir,
    /// A symbolic or hard link.
    Link,
    /// Attribute changes (mode, times, owner), logged when refused.
    SetAttributes,
}

impl TransferOp {
    pub fn as_str(self) -> &'static str {
        match self {
            TransferOp::Upload => "upload",
            TransferOp::Download => "download",
            TransferOp::Delete => "delete",
            TransferOp::Rename => "rename",
            TransferOp::Mkdir => "mkdir",
            TransferOp::Link => "link",
            TransferOp::SetAttributes => "set_attributes",
        }
    }
}

/// How a transfer ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "snake_case")]
pub enum TransferResult {
    Ok,
    /// Refused by the grants (never reached the target).
    Denied(String),
    /// The target refused or the connection failed.
    Failed(String),
}

impl TransferResult {
    pub fn is_ok(&self) -> bool {
        matches!(self, TransferResult::Ok)
    }
}

/// `ok`, `denied: why` or `failed: why` (the spool's `result` field).
impl std::fmt::Display for TransferResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TransferResult::Ok => f.write_str("ok"),
            TransferResult::Denied(why) => write!(f, "denied: {why}"),
            TransferResult::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}

/// Where transfer records go: the daemon's spool. Called from the
/// session's threads; must not block for long.
pub trait TransferLog: Sync {
    fn record(&self, event: TransferEvent);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(line: &str) -> Transfer {
        match parse(line) {
            Some(Ok(t)) => t,
            other => panic!("{line:?} should parse as a transfer, got {other:?}"),
        }
    }

    fn err(line: &str) -> TransferError {
        match parse(line) {
            Some(Err(e)) => e,
            other => panic!("{line:?} should be refused, got {other:?}"),
        }
    }

    fn spec(asset: &str, account: Option<&str>) -> AssetSpec {
        AssetSpec {
            asset: asset.into(),
            account: account.map(Into::into),
        }
    }

    #[test]
    fn legacy_scp_upload_strips_the_asset_prefix() {
        let t = ok("scp -t web01:/tmp/");
        assert_eq!(t.tool, Tool::Scp);
        assert_eq!(t.target, spec("web01", None));
        assert_eq!(t.direction, Direction::Upload);
        assert_eq!(t.remote_command, "scp -t /tmp/");
        assert_eq!(t.paths, vec!["/tmp/"]);
        assert_eq!(t.required_action(), Action::Upload);
        assert_eq!(t.required_actions(), vec![Action::Connect, Action::Upload]);
        assert_eq!(t.protocol(), Protocol::Sftp);
    }

    #[test]
    fn legacy_scp_download_with_account() {
        let t = ok("scp -f root@web01:/etc/hostname");
        assert_eq!(t.target, spec("web01", Some("root")));
        assert_eq!(t.direction, Direction::Download);
        assert_eq!(t.remote_command, "scp -f /etc/hostname");
        assert_eq!(t.required_action(), Action::Download);
    }

    #[test]
    fn legacy_scp_keeps_its_flags() {
        assert_eq!(
            ok("scp -r -p -t web01:/tmp/d").remote_command,
            "scp -r -p -t /tmp/d"
        );
        assert_eq!(
            ok("scp -d -t web01:/tmp/").remote_command,
            "scp -d -t /tmp/"
        );
        assert_eq!(
            ok("scp -v -t web01:/tmp/").remote_command,
            "scp -v -t /tmp/"
        );
        assert_eq!(ok("scp -d -f web01:/a").remote_command, "scp -d -f /a");
        assert_eq!(ok("scp -pr -t -- web01:/x").remote_command, "scp -pr -t /x");
    }

    #[test]
    fn legacy_scp_unquoted_spaces_split_like_a_shell() {
        // `scp -O f 'bastion:web01:/tmp/my dir'` sends the space unquoted:
        // the target's shell would see two words, an upload to two paths.
        assert!(matches!(
            err("scp -r -p -t web01:/tmp/my dir"),
            TransferError::Syntax { .. }
        ));
        // Quoted by the engineer, it is one path.
        let t = ok(r"scp -t 'web01:/tmp/my dir'");
        assert_eq!(t.remote_command, "scp -t '/tmp/my dir'");
        assert_eq!(t.paths, vec!["/tmp/my dir"]);
        assert_eq!(
            ok(r"scp -t web01:/tmp/my\ dir").remote_command,
            "scp -t '/tmp/my dir'"
        );
    }

    #[test]
    fn legacy_scp_globs_stay_globs_and_the_rest_is_literal() {
        let t = ok("scp -f web01:/etc/host*");
        assert_eq!(t.remote_command, "scp -f /etc/host*");
        let t = ok("scp -f 'web01:/tmp/a b'*.log");
        assert_eq!(t.remote_command, "scp -f '/tmp/a b'*.log");
        // A quoted star is a star.
        assert_eq!(
            ok("scp -f 'web01:/tmp/*'").remote_command,
            "scp -f '/tmp/*'"
        );
    }

    #[test]
    fn shell_syntax_is_refused_not_run() {
        for line in [
            "scp -t web01:/tmp/$(id)",
            "scp -t web01:/tmp/x; rm -rf /",
            "scp -t web01:/tmp/x|cat",
            "scp -f web01:/tmp/`id`",
            "scp -t web01:/tmp/x > /etc/passwd",
            "scp -t web01:/tmp/x &",
            "scp -t \"web01:/tmp/$HOME\"",
            "scp -t web01:/tmp/x\nid",
        ] {
            assert!(
                matches!(err(line), TransferError::Syntax { .. }),
                "{line:?} should be refused as shell syntax"
            );
        }
        // Control characters are refused quoted too (found by fuzzing:
        // fuzz/regressions/command_line/scp-quoted-nul-in-path).
        for line in [
            "scp -t 'web01:/tmp/a\0b'",
            "scp -t 'web01:/tmp/a\x1b[2Kb'",
            "scp -t \"web01:/tmp/a\rb\"",
            "rsync --server . 'web01:/tmp/a\nb'",
        ] {
            assert!(
                matches!(err(line), TransferError::Syntax { .. }),
                "{line:?} should be refused: a control character in a path"
            );
        }
        // Quoted, the same characters are a file name.
        let t = ok("scp -t 'web01:/tmp/$(id); x'");
        assert_eq!(t.remote_command, r"scp -t '/tmp/$(id); x'");
        let t = ok(r"scp -t web01:/tmp/it\'s");
        assert_eq!(t.remote_command, r"scp -t '/tmp/it'\''s'");
    }

    #[test]
    fn legacy_scp_bare_asset_and_home_paths() {
        assert_eq!(ok("scp -t web01:").remote_command, "scp -t .");
        assert_eq!(ok("scp -t root@web01:~/x").remote_command, "scp -t x");
        assert_eq!(ok("scp -t web01:~").remote_command, "scp -t .");
        assert_eq!(
            ok("scp -t web01:~deploy/x").remote_command,
            "scp -t ~deploy/x"
        );
        assert_eq!(ok("scp -t web01:x/y").remote_command, "scp -t x/y");
        assert_eq!(ok("scp -t web01:x/y").paths, vec!["x/y"]);
    }

    #[test]
    fn a_path_starting_with_a_dash_is_not_an_option_on_the_target() {
        assert_eq!(ok("scp -f web01:-x").remote_command, "scp -f ./-x");
        assert_eq!(ok("scp -f -- web01:-x").remote_command, "scp -f ./-x");
        assert_eq!(
            ok("rsync --server --sender -e.LsfxCIvu . web01:--delete").remote_command,
            "rsync --server --sender -e.LsfxCIvu . ./--delete"
        );
    }

    #[test]
    fn legacy_scp_refusals() {
        assert!(matches!(
            err("scp -t /tmp/x"),
            TransferError::MissingAsset { .. }
        ));
        assert!(matches!(
            err("scp -t tmp/x"),
            TransferError::MissingAsset { .. }
        ));
        assert!(matches!(err("scp -t"), TransferError::NoPath { .. }));
        assert!(matches!(
            err("scp -f web01:/a db01:/b"),
            TransferError::SeveralAssets { .. }
        ));
        assert!(matches!(
            err("scp -f web01:/a root@web01:/b"),
            TransferError::SeveralAssets { .. }
        ));
        assert!(matches!(
            err("scp -S /bin/sh -t web01:/x"),
            TransferError::Option { .. }
        ));
        assert!(matches!(
            err("scp -t -f web01:/x"),
            TransferError::Syntax { .. }
        ));
        assert!(matches!(
            err("scp -t web01:/a web01:/b"),
            TransferError::Syntax { .. }
        ));
        let message = err("scp -f web01:/a db01:/b").to_string();
        assert!(
            message.contains("web01") && message.contains("db01"),
            "{message}"
        );
    }

    #[test]
    fn legacy_scp_several_sources_on_one_asset() {
        let t = ok("scp -f web01:/a web01:/b /c");
        assert_eq!(t.remote_command, "scp -f /a /b /c");
        assert_eq!(t.paths, vec!["/a", "/b", "/c"]);
    }

    #[test]
    fn not_a_transfer_is_left_to_the_caller() {
        for line in [
            "web01",
            "root@web01",
            "web01 uptime; id",
            "scp",
            "scp web01:/x",
            "rsync -av x y",
            "scpx -t web01:/",
        ] {
            assert!(parse(line).is_none(), "{line:?} is not a transfer command");
        }
    }

    #[test]
    fn rsync_push_is_an_upload() {
        let t = ok("rsync --server -e.LsfxCIvu . web01:/tmp/");
        assert_eq!(t.tool, Tool::Rsync);
        assert_eq!(t.direction, Direction::Upload);
        assert_eq!(t.target, spec("web01", None));
        assert_eq!(t.remote_command, "rsync --server -e.LsfxCIvu . /tmp/");
        assert!(!t.deletes);
        assert_eq!(t.required_actions(), vec![Action::Connect, Action::Upload]);
    }

    #[test]
    fn rsync_pull_is_a_download() {
        let t = ok("rsync --server --sender -vlogDtpre.iLsfxCIvu . root@web01:/var/log/syslog");
        assert_eq!(t.direction, Direction::Download);
        assert_eq!(t.target, spec("web01", Some("root")));
        assert_eq!(
            t.remote_command,
            "rsync --server --sender -vlogDtpre.iLsfxCIvu . /var/log/syslog"
        );
    }

    #[test]
    fn rsync_several_sources_share_the_first_target() {
        let t = ok("rsync --server --sender -e.LsfxCIvu . web01:/tmp/x web01:/tmp/y");
        assert_eq!(
            t.remote_command,
            "rsync --server --sender -e.LsfxCIvu . /tmp/x /tmp/y"
        );
        // `host:web01:/tmp/x :/tmp/y` arrives with the second prefix gone.
        let t = ok("rsync --server --sender -e.LsfxCIvu . web01:/tmp/x /tmp/y");
        assert_eq!(t.paths, vec!["/tmp/x", "/tmp/y"]);
        assert!(matches!(
            err("rsync --server --sender -e.LsfxCIvu . web01:/tmp/x db01:/tmp/y"),
            TransferError::SeveralAssets { .. }
        ));
    }

    #[test]
    fn rsync_escaped_spaces_and_globs() {
        let t = ok(r"rsync --server -vlogDtpre.iLsfxCIvu --delete . web01:/tmp/my\ dir/");
        assert_eq!(
            t.remote_command,
            "rsync --server -vlogDtpre.iLsfxCIvu --delete . '/tmp/my dir/'"
        );
        assert_eq!(t.paths, vec!["/tmp/my dir/"]);
        let t = ok("rsync --server --sender -e.LsfxCIvu . web01:/tmp/*.log");
        assert_eq!(
            t.remote_command,
            "rsync --server --sender -e.LsfxCIvu . /tmp/*.log"
        );
        let t = ok(r"rsync --server -e.LsfxCIvu . root@web01:\$\(id\)");
        assert_eq!(t.remote_command, r"rsync --server -e.LsfxCIvu . '$(id)'");
    }

    #[test]
    fn rsync_deleting_options_need_delete() {
        let t = ok("rsync --server -vlogDtpre.iLsfxCIvu --delete-during . web01:/tmp/d/");
        assert!(t.deletes);
        assert_eq!(
            t.required_actions(),
            vec![Action::Connect, Action::Upload, Action::Delete]
        );
        let t = ok(
            "rsync --server --sender -vlogDtpre.iLsfxCIvu --remove-source-files . web01:/tmp/*.log",
        );
        assert!(t.deletes);
        assert_eq!(
            t.required_actions(),
            vec![Action::Connect, Action::Download, Action::Delete]
        );
        let events = t.events("root", 10, TransferResult::Ok);
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].operation, TransferOp::Download);
        assert_eq!(events[1].operation, TransferOp::Delete);
    }

    #[test]
    fn rsync_options_that_delete_need_delete_and_unknown_ones_are_refused() {
        for option in [
            "--force",
            "--del",
            "--delete",
            "--delete-after",
            "--delete-delay",
            "--delete-missing-args",
            "--remove-sent-files",
        ] {
            let t = ok(&format!(
                "rsync --server -re.LsfxCIvu {option} . web01:/tmp/d/"
            ));
            assert!(t.deletes, "{option} deletes");
            assert!(t.required_actions().contains(&Action::Delete), "{option}");
        }
        for line in [
            "rsync --server -B1024 -re.Lsfx . web01:/x",
            "rsync --server -rB1024e.Lsfx . web01:/x",
            "rsync --server --block-size=1024 -re.Lsfx . web01:/x",
            "rsync --server -re.Lsfx --backup-dir /tmp/b . web01:/x",
            "rsync --server -re.Lsfx --backup-dir=/tmp/b . web01:/x",
            "rsync --server -re.Lsfx --partial-dir /tmp/p . web01:/x",
            "rsync --server -re.Lsfx --temp-dir /tmp/t . web01:/x",
            "rsync --server -re.Lsfx --link-dest /etc . web01:/x",
            "rsync --server --sender -re.Lsfx --files-from /etc/list . web01:/x",
            "rsync --server -rMe.Lsfx . web01:/x",
            "rsync --server -rQe.Lsfx . web01:/x",
            "rsync --server --deletex . web01:/x",
            "rsync --server --no-such-option . web01:/x",
            "rsync --server --config=/tmp/c . web01:/x",
            "rsync --server -@x . web01:/x",
            "rsync --server - . web01:/x",
        ] {
            assert!(
                matches!(
                    err(line),
                    TransferError::Option { .. } | TransferError::Syntax { .. }
                ),
                "{line:?} should be refused"
            );
        }
        assert!(err("rsync --server -B1024 -re.Lsfx . web01:/x")
            .to_string()
            .contains("-B"));
        // What rsync 3.2+ sends for common commands is passed as is.
        for line in [
            "rsync --server -logDtprze.iLsfxCIvu . web01:/tmp/d/",
            "rsync --server -vvlogDtpAXrcCIRxSze.iLsfxCIvu --log-format=%i%I --partial --inplace --no-W . web01:/d",
            "rsync --server --sender -logDtprze.iLsfxCIvu --info=progress2 --timeout=30 . web01:/d",
            "rsync --server -bue.Lsfx --suffix=.bak --max-size=1M -@-1 --modify-window=2 . web01:/d",
            "rsync --server --sender -re.Lsfx --files-from=- --from0 --no-relative . web01:/d",
        ] {
            assert!(!ok(line).deletes, "{line:?} deletes nothing");
        }
    }

    #[test]
    fn rsync_protect_args_is_refused_with_advice() {
        assert_eq!(
            err("rsync --server -se.LsfxCIvu"),
            TransferError::ProtectArgs
        );
        assert_eq!(
            err("rsync --server --sender -se.LsfxCIvu"),
            TransferError::ProtectArgs
        );
        assert_eq!(
            err("rsync --server --protect-args -e.Lsfx . web01:/x"),
            TransferError::ProtectArgs
        );
        assert!(err("rsync --server -se.LsfxCIvu")
            .to_string()
            .contains("without -s"));
        // The `s` of the capability string after `e` is not -s.
        assert!(ok("rsync --server -e.LsfxCIvu . web01:/x")
            .remote_command
            .contains("-e.LsfxCIvu"));
    }

    #[test]
    fn rsync_refusals() {
        for line in [
            "rsync --server --daemon .",
            "rsync --server --sender -e.LsfxCIvu --log-file=/tmp/l . web01:/tmp/x",
            "rsync --server --write-batch=/tmp/b -e.Lsfx . web01:/x",
            "rsync --server --rsync-path=/tmp/evil . web01:/x",
        ] {
            assert!(
                matches!(err(line), TransferError::Option { .. }),
                "{line:?} should be refused"
            );
        }
        assert!(matches!(
            err("rsync --server -e.Lsfx . /tmp/x"),
            TransferError::MissingAsset { .. }
        ));
        assert!(matches!(
            err("rsync --server -e.Lsfx ."),
            TransferError::NoPath { .. }
        ));
        assert!(matches!(
            err("rsync --server -e.Lsfx"),
            TransferError::NoPath { .. }
        ));
        assert!(matches!(
            err("rsync --server -e.Lsfx x . web01:/x"),
            TransferError::Syntax { .. }
        ));
    }

    #[test]
    fn rsync_home_and_empty_paths() {
        assert_eq!(
            ok("rsync --server -e.Lsfx . web01:~/x").remote_command,
            "rsync --server -e.Lsfx . x"
        );
        assert_eq!(
            ok("rsync --server -e.Lsfx . web01:").remote_command,
            "rsync --server -e.Lsfx . ."
        );
    }

    #[test]
    fn asset_specs() {
        assert_eq!(AssetSpec::parse("web01"), Some(spec("web01", None)));
        assert_eq!(
            AssetSpec::parse("root@web01"),
            Some(spec("web01", Some("root")))
        );
        assert_eq!(
            AssetSpec::parse("root@web01").map(|s| s.to_string()),
            Some("root@web01".into())
        );
        for bad in ["", "@web01", "root@", "/tmp", "a b", "x/y@z"] {
            assert_eq!(AssetSpec::parse(bad), None, "{bad:?} is not an asset spec");
        }
    }

    #[test]
    fn events_carry_the_paths_and_result() {
        let t = ok("scp -f web01:/a web01:/b");
        let events = t.events("deploy", 42, TransferResult::Failed("exit 1".into()));
        assert_eq!(events.len(), 1);
        let e = &events[0];
        assert_eq!(
            (e.asset.as_str(), e.account.as_str(), e.via),
            ("web01", "deploy", "scp")
        );
        assert_eq!(e.path, "/a /b");
        assert_eq!(e.size, 42);
        let json = serde_json::to_string(e).unwrap();
        assert!(json.contains(r#""operation":"download""#), "{json}");
        assert!(
            json.contains(r#""result":{"outcome":"failed","reason":"exit 1"}"#),
            "{json}"
        );
    }
}
