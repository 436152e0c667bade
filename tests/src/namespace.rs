//! Mount namespaces of the harness's hosts (bastion, target, plain sshd):
//! which processes live in one, and killing all of them at teardown.

use std::fs;
use std::process::Child;
use std::thread;
use std::time::Duration;

/// The mount namespace of `pid` (`mnt:[4026…]`), if it is still there.
pub fn mnt_ns_of(pid: i32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Every pid whose mount namespace is `ns`.
pub fn pids_in(ns: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| mnt_ns_of(pid).as_deref() == Some(ns))
        .collect()
}

/// SIGKILLs every process of `ns` until none is left (at most ~1 s),
/// reaping `child` and calling `reap` between rounds so zombies go.
pub fn kill_all_in(ns: &str, child: Option<&mut Child>, mut reap: impl FnMut()) {
    let mut child = child;
    for _ in 0..50 {
        let pids = pids_in(ns);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            // SAFETY: kill has no memory preconditions; the pid is in the
            // test's own namespace.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(child) = child.as_deref_mut() {
            let _ = child.try_wait();
        }
        reap();
        thread::sleep(Duration::from_millis(20));
    }
}
