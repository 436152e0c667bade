//! How sshd started the agent, read once from argv and the environment,
//! before the environment is thrown away.
//!
//! sshd runs the agent as the engineer's ForceCommand and login shell:
//! - `jms-agent -c COMMAND` when jms-agent is the login shell (sshd runs
//!   `$SHELL -c COMMAND`); with a ForceCommand, COMMAND is the forced
//!   command itself (the agent's own path) and the engineer's request is
//!   in `SSH_ORIGINAL_COMMAND`; without one, COMMAND is the request.
//! - `jms-agent` (a ForceCommand run by another shell, or a login shell
//!   with no command): the request, if any, is in `SSH_ORIGINAL_COMMAND`.
//! - `jms-agent authorized-keys USER [--socket PATH]` (sshd's
//!   AuthorizedKeysCommand).
//!
//! Only three variables are read (`SSH_ORIGINAL_COMMAND`,
//! `SSH_CONNECTION`, `TERM`); then the whole environment is dropped.

use std::ffi::{OsStr, OsString};
use std::net::IpAddr;
use std::path::Path;

/// What the engineer asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The request (`web01`, `root@web01 uptime`, `scp -t …`, the sftp
    /// subsystem command), or `None` for the menu.
    pub command: Option<String>,
    /// The engineer's address, first field of `SSH_CONNECTION`.
    pub client: Option<String>,
    /// `TERM`, reduced to a safe terminal name (`xterm` when unusable).
    pub term: String,
}

/// What argv and the environment ask the binary to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A login: the menu or a session.
    Session(Invocation),
    /// sshd's AuthorizedKeysCommand, with its arguments (after the word).
    AuthorizedKeys(Vec<String>),
    /// Arguments the agent does not understand: print this and exit 2.
    Usage(String),
    /// The environment shows a misconfigured sshd: print this and exit 1.
    Refused(String),
}

/// The agent's own name, as the forced command or the login shell.
const AGENT_NAME: &str = "jms-agent";

/// Longest terminal name passed on.
const MAX_TERM: usize = 64;

/// Reads argv (without argv[0]) and the environment.
pub fn parse(args: &[OsString], env: &[(OsString, OsString)]) -> Parsed {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.to_string_lossy().into_owned())
    };
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.first().map(String::as_str) == Some("authorized-keys") {
        return Parsed::AuthorizedKeys(args[1..].to_vec());
    }
    let loaders: Vec<String> = env
        .iter()
        .filter_map(|(k, _)| k.to_str())
        .filter(|k| k.starts_with("LD_"))
        .map(str::to_owned)
        .collect();
    if !loaders.is_empty() {
        return Parsed::Refused(format!(
            "jms-agent: refusing to run: the loader variable {} reached the agent \
             (sshd's AcceptEnv or PermitUserEnvironment is too wide)",
            loaders.join(", ")
        ));
    }
    let original = var("SSH_ORIGINAL_COMMAND");
    let command =
        match args.as_slice() {
            [] => original,
            [flag, given] if flag == "-c" => match original {
                Some(original) => Some(original),
                None if names_the_agent(given) => None,
                None => Some(given.clone()),
            },
            _ => return Parsed::Usage(
                "usage: jms-agent [-c COMMAND] | jms-agent authorized-keys USER [--socket PATH] \
                 (sshd runs it; the request comes from SSH_ORIGINAL_COMMAND)"
                    .into(),
            ),
        };
    Parsed::Session(Invocation {
        command: command.filter(|c| !c.trim().is_empty()),
        client: var("SSH_CONNECTION").and_then(|c| client_address(&c)),
        term: terminal_name(var("TERM").as_deref()),
    })
}

/// Whether a `-c` command is the forced command itself: one word whose
/// file name is `jms-agent`.
fn names_the_agent(command: &str) -> bool {
    let mut words = command.split_whitespace();
    match (words.next(), words.next()) {
        (Some(word), None) => Path::new(word).file_name() == Some(OsStr::new(AGENT_NAME)),
        _ => false,
    }
}

/// The first field of `SSH_CONNECTION` when it is an IP address.
fn client_address(connection: &str) -> Option<String> {
    let first = connection.split_whitespace().next()?;
    first.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// A terminal name made only of safe characters, else `xterm`.
fn terminal_name(term: Option<&str>) -> String {
    match term {
        Some(t)
            if !t.is_empty()
                && t.len() <= MAX_TERM
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b)) =>
        {
            t.to_owned()
        }
        _ => "xterm".into(),
    }
}

/// Removes every environment variable of this process. Call once, at the
/// start of `main`, before any thread exists.
pub fn clear_environment() {
    let names: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for name in names {
        std::env::remove_var(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn session(parsed: Parsed) -> Invocation {
        match parsed {
            Parsed::Session(invocation) => invocation,
            other => panic!("expected a session, got {other:?}"),
        }
    }

    #[test]
    fn login_shell_with_the_forced_command_and_no_request_is_the_menu() {
        let parsed = parse(
            &args(&["-c", "/run/jms-e2e/bin/jms-agent"]),
            &env(&[("SSH_CONNECTION", "127.0.0.1 5555 127.0.0.1 22")]),
        );
        let invocation = session(parsed);
        assert_eq!(
            invocation.command, None,
            "no SSH_ORIGINAL_COMMAND: the menu"
        );
        assert_eq!(invocation.client.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn the_request_comes_from_ssh_original_command() {
        for argv in [&["-c", "/usr/bin/jms-agent"][..], &[][..]] {
            let invocation = session(parse(
                &args(argv),
                &env(&[("SSH_ORIGINAL_COMMAND", "web01 uptime; id")]),
            ));
            assert_eq!(invocation.command.as_deref(), Some("web01 uptime; id"));
        }
    }

    #[test]
    fn without_a_forced_command_the_shell_argument_is_the_request() {
        let invocation = session(parse(&args(&["-c", "root@web01"]), &[]));
        assert_eq!(invocation.command.as_deref(), Some("root@web01"));
        // The agent's name with arguments is a request like any other.
        let invocation = session(parse(&args(&["-c", "jms-agent web01"]), &[]));
        assert_eq!(invocation.command.as_deref(), Some("jms-agent web01"));
    }

    #[test]
    fn an_empty_request_is_the_menu() {
        let invocation = session(parse(&[], &env(&[("SSH_ORIGINAL_COMMAND", "  ")])));
        assert_eq!(invocation.command, None);
    }

    #[test]
    fn loader_variables_are_refused() {
        let parsed = parse(
            &[],
            &env(&[("LD_PRELOAD", "/tmp/evil.so"), ("TERM", "xterm")]),
        );
        assert!(
            matches!(&parsed, Parsed::Refused(line) if line.contains("LD_PRELOAD") && !line.contains('\n')),
            "LD_PRELOAD must be refused with one line, got {parsed:?}"
        );
    }

    #[test]
    fn authorized_keys_keeps_its_arguments() {
        assert_eq!(
            parse(&args(&["authorized-keys", "alice"]), &[]),
            Parsed::AuthorizedKeys(vec!["alice".into()])
        );
    }

    #[test]
    fn unknown_arguments_are_a_usage_error() {
        assert!(matches!(parse(&args(&["--help"]), &[]), Parsed::Usage(_)));
        assert!(matches!(parse(&args(&["-c"]), &[]), Parsed::Usage(_)));
    }

    #[test]
    fn terminal_names_are_sanitised() {
        let term = |t: &str| session(parse(&[], &env(&[("TERM", t)]))).term;
        assert_eq!(term("xterm-256color"), "xterm-256color");
        assert_eq!(term("screen.xterm+x"), "screen.xterm+x");
        assert_eq!(term("xterm\u{1b}[2J"), "xterm");
        assert_eq!(term(""), "xterm");
        assert_eq!(term(&"x".repeat(65)), "xterm");
        assert_eq!(session(parse(&[], &[])).term, "xterm");
    }

    #[test]
    fn the_client_address_must_be_an_ip() {
        let client = |c: &str| session(parse(&[], &env(&[("SSH_CONNECTION", c)]))).client;
        assert_eq!(client("::1 4000 ::1 22").as_deref(), Some("::1"));
        assert_eq!(client("evil\u{1b} 1 2 3"), None);
        assert_eq!(client(""), None);
    }
}
