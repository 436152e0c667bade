//! Who session workers run as (`[sessions] worker_user`, an unprivileged
//! system user the package creates), and the directories they own.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::daemon::config::AgentdConfig;

/// The uid and gid workers run as (`None`: jms-agentd's own, when it is
/// not root).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerUser {
    pub uid: u32,
    pub gid: u32,
}

/// `[sessions] worker_user` when running as root; an error when it does
/// not exist (the package creates it).
pub fn worker_user(config: &AgentdConfig) -> Result<Option<WorkerUser>> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let name = &config.sessions.worker_user;
    match nix::unistd::User::from_name(name) {
        Ok(Some(user)) if user.uid.is_root() => {
            bail!("[sessions] worker_user = {name:?} is root: name an unprivileged system user")
        }
        Ok(Some(user)) => Ok(Some(WorkerUser {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })),
        _ => bail!(
            "[sessions] worker_user = {name:?} does not exist: session workers run as this \
             unprivileged system user (the jms-bastion package creates `jms-session`); create it \
             or set worker_user"
        ),
    }
}

/// Makes the directories workers write into theirs (0700): recordings,
/// known_hosts, the runtime scratch dir; the state dir becomes
/// root:WORKER 0710 so that workers can reach the first two by name and
/// read nothing else in it.
pub fn prepare_dirs(config: &AgentdConfig, user: Option<WorkerUser>) -> Result<()> {
    let Some(user) = user else {
        return Ok(());
    };
    let chown = |path: &Path, uid: u32, gid: u32| -> Result<()> {
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .with_context(|| format!("chown {}", path.display()))
    };
    let state = &config.state_dir;
    chown(state, 0, user.gid)?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o710))?;
    for dir in [
        config.recordings_dir(),
        config.known_hosts_dir(),
        config.sessions.runtime_dir.clone(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        chown(&dir, user.uid, user.gid)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    }
    // Host keys first seen before workers existed: theirs now.
    if let Ok(entries) = std::fs::read_dir(config.known_hosts_dir()) {
        for entry in entries.flatten() {
            chown(&entry.path(), user.uid, user.gid)?;
        }
    }
    Ok(())
}
