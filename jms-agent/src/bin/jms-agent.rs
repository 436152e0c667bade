//! jms-agent: runs as the engineer (unprivileged). sshd starts it as her
//! ForceCommand / login shell (`jms-agent` or `jms-agent -c COMMAND`), and
//! as the AuthorizedKeysCommand (`jms-agent authorized-keys USER`).
//!
//! The session menu, direct targets, exec and file transfer arrive with the
//! sessions work; for now a login lands on a one-line notice.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jms_proto::{Client, Request, Response, DEFAULT_SOCKET_PATH};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("authorized-keys") => authorized_keys(&args[1..]),
        _ => landing(),
    }
}

/// Prints the user's public keys for sshd's AuthorizedKeysCommand. Prints
/// nothing (and exits 0) for unknown users, so sshd simply finds no key.
fn authorized_keys(args: &[String]) -> ExitCode {
    let (user, socket) = match args {
        [user] => (user.clone(), PathBuf::from(DEFAULT_SOCKET_PATH)),
        [user, flag, path] if flag == "--socket" => (user.clone(), PathBuf::from(path)),
        _ => {
            eprintln!("usage: jms-agent authorized-keys USER [--socket PATH]");
            return ExitCode::from(2);
        }
    };
    match Client::call_once(
        &socket,
        Duration::from_secs(3),
        &Request::AuthorizedKeys { user },
    ) {
        Ok(Response::Keys { keys }) => {
            for key in keys.iter().filter(|k| !k.contains('\n')) {
                println!("{key}");
            }
            ExitCode::SUCCESS
        }
        Ok(other) => {
            eprintln!("jms-agent: unexpected answer from jms-agentd: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!(
                "jms-agent: jms-agentd unreachable at {}: {e}",
                socket.display()
            );
            ExitCode::FAILURE
        }
    }
}

/// What a login sees until the session agent is built.
fn landing() -> ExitCode {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "unknown user".into());
    println!("jms-agent: hello {user} — the session menu arrives with the sessions work");
    ExitCode::SUCCESS
}
