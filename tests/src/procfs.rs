//! What /proc says about the processes a test inspects: status fields,
//! children, and the session workers of a bastion's jms-agentd.

use std::fs;

use crate::Bastion;

/// A field of `/proc/PID/status` (e.g. `"Uid:"`), its words joined by one
/// space; empty when the process or the field is gone.
pub fn status_field(pid: u32, name: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The scheduling policy of `pid` (`/proc/PID/stat` field 41: 0 normal,
/// 3 batch, 5 idle); `None` when it is gone.
pub fn sched_policy(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(41 - 3)?.parse().ok()
}

/// Every process running now, by pid.
fn pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// The children of `pid`, by pid.
pub fn children(pid: u32) -> Vec<u32> {
    let parent = pid.to_string();
    pids()
        .into_iter()
        .filter(|c| status_field(*c, "PPid:") == parent)
        .collect()
}

/// The command names of the children of `pid`.
pub fn children_names(pid: u32) -> Vec<String> {
    children(pid)
        .into_iter()
        .map(|c| status_field(c, "Name:"))
        .collect()
}

/// `pid` (a session worker) and each of its children (its target `ssh`)
/// run as the worker user ([`crate::WORKER_ID`]) with no supplementary
/// groups and no new privileges.
pub fn assert_runs_as_the_worker_user(pid: u32) {
    let id = crate::WORKER_ID;
    let ids = format!("{id} {id} {id} {id}");
    for (p, what) in std::iter::once((pid, "worker"))
        .chain(children(pid).into_iter().map(|c| (c, "worker's child")))
    {
        let name = status_field(p, "Name:");
        assert_eq!(status_field(p, "Uid:"), ids, "{what} {p} ({name}): uid");
        assert_eq!(status_field(p, "Gid:"), ids, "{what} {p} ({name}): gid");
        assert_eq!(
            status_field(p, "Groups:"),
            "",
            "{what} {p} ({name}): no supplementary groups"
        );
        assert_eq!(
            status_field(p, "NoNewPrivs:"),
            "1",
            "{what} {p} ({name}): no new privileges"
        );
    }
}

impl Bastion {
    /// The session workers (`jms-session`) agentd runs now, by pid.
    pub fn session_workers(&self) -> Vec<u32> {
        let agentd = self.agentd_pid().expect("agentd runs") as u32;
        let mut found: Vec<u32> = children(agentd)
            .into_iter()
            .filter(|w| status_field(*w, "Name:") == "jms-session")
            .collect();
        found.sort();
        found
    }
}
