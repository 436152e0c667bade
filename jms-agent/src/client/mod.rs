//! The `jms-agent` side: what runs as the engineer (unprivileged) when
//! sshd starts her ForceCommand / login shell. It decides nothing: it asks
//! jms-agentd for her assets (the menu) and hands her stdio (or terminal)
//! to the daemon with `Request::OpenSession`; the daemon parses the
//! request, checks the grants and runs the target connection.
//!
//! - [`invocation`]: argv and the three environment variables it reads
//!   (then the environment is dropped).
//! - [`session`]: one session — the fd hand-off and the conversation.
//! - [`menu`]: the interactive menu.
//! - [`tty`], [`signals`]: raw mode that is always undone, window size,
//!   prompts; signals as pollable pipes.

pub mod invocation;
pub mod menu;
pub mod session;
pub mod signals;
pub mod tty;

use std::os::fd::BorrowedFd;
use std::path::Path;

use jms_proto::SessionRequest;

use invocation::Invocation;
use session::pty_info;
use signals::Signals;
use tty::Terminal;

/// Serves one login; the agent's exit status.
pub fn run(invocation: &Invocation, socket: &Path) -> u8 {
    let signals = match Signals::install() {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("jms-agent: cannot set up signal handling: {e}");
            return 1;
        }
    };
    let terminal = Terminal::stdin();
    let user = user_name();
    match (&invocation.command, &terminal) {
        (None, Some(terminal)) => menu::run(socket, invocation, &user, terminal, &signals),
        (None, None) => {
            eprintln!(
                "jms-agent: {user}: the menu needs a terminal: use `ssh -t` for the menu, \
                 or name a target (`ssh -t BASTION ASSET`, `ssh BASTION ASSET COMMAND`)"
            );
            1
        }
        (Some(command), terminal) => {
            let request = SessionRequest {
                command_line: command.clone(),
                pty: terminal.as_ref().map(|t| pty_info(t, &invocation.term)),
                client: invocation.client.clone(),
            };
            let fds = [0, 1, 2].map(|fd| {
                // SAFETY: the standard streams sshd gave the agent stay
                // open while it runs (replaced, never closed).
                unsafe { BorrowedFd::borrow_raw(fd) }
            });
            let after_handoff = || {
                if terminal.is_none() {
                    // Only the daemon holds her pipes now; stderr stays
                    // for the last line.
                    let _ = session::release_pipes();
                }
            };
            let ending = session::run(
                socket,
                request,
                fds,
                terminal.as_ref(),
                &signals,
                after_handoff,
            );
            if let Some(terminal) = terminal {
                terminal.restore();
            }
            if let Some(line) = ending.line() {
                eprintln!("{line}");
            }
            ending.exit_code()
        }
    }
}

/// The engineer's bastion username (from NSS), or her uid.
fn user_name() -> String {
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| session::one_line(&u.name))
        .unwrap_or_else(|| format!("uid {uid}"))
}
