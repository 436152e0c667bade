//! jms-agent: runs as the engineer (unprivileged). sshd starts it as her
//! ForceCommand / login shell (`jms-agent` or `jms-agent -c COMMAND`, the
//! request in `SSH_ORIGINAL_COMMAND`), and as the AuthorizedKeysCommand
//! (`jms-agent authorized-keys USER`).
//!
//! It reads argv and three environment variables, drops the whole
//! environment, then shows the menu (no request, a terminal) or hands the
//! session to jms-agentd (`jms_agent::client`). It never reads stdin
//! before the hand-off.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use jms_agent::client::invocation::{self, Parsed};
use jms_proto::{Client, Request, Response, DEFAULT_SOCKET_PATH};

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let env: Vec<_> = std::env::vars_os().collect();
    invocation::clear_environment();
    match invocation::parse(&args, &env) {
        Parsed::AuthorizedKeys(args) => authorized_keys(&args),
        Parsed::Session(invocation) => ExitCode::from(jms_agent::client::run(
            &invocation,
            &PathBuf::from(DEFAULT_SOCKET_PATH),
        )),
        Parsed::Usage(line) => {
            eprintln!("{line}");
            ExitCode::from(2)
        }
        Parsed::Refused(line) => {
            eprintln!("{line}");
            ExitCode::FAILURE
        }
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
