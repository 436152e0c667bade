//! Lookup latency through glibc: `libnss_jms.so.2` against `nss_files`.
//!
//! `cargo bench -p nss_jms` (as root). For 100 and 100,000 users it times
//! `getpwnam_r` and `getpwuid_r` of random users (mean and p99 per call)
//!
//! - with `passwd: files` and a generated `/etc/passwd` holding the host's
//!   lines plus that many users, and
//! - with `passwd: jms` and a cache holding the same users,
//!
//! and prints the ratios (each configuration runs 3 times, the best run
//! counts); then the cost a jms user pays behind
//! `passwd: files jms` with the host's own `/etc/passwd`. Each
//! configuration runs in its own process (glibc reads nsswitch.conf and
//! loads modules once per process): this binary re-executes itself inside
//! `unshare -m` with the mounts of `tests/common` (nothing on the host
//! changes). Targets: nss_jms no slower than nss_files at 100 users, at
//! least 500 times faster at 100,000.

#[path = "../tests/common/mod.rs"]
mod common;

use std::ffi::{CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::{require_root_and_unshare, Sandbox};
use jms_core::nss_cache::{write_atomic, NssData, NssUser, DEFAULT_SHELL};

/// Set in the re-executed child: the file of `name uid` lines to look up.
const CHILD_ENV: &str = "NSS_JMS_BENCH_CHILD";
/// Most calls timed per operation and configuration.
const MAX_CALLS: usize = 200_000;
/// Most time spent per operation and configuration run.
const BUDGET: Duration = Duration::from_secs(1);
/// Runs of each configuration (each its own process); the best run of each
/// call kind counts, so that a neighbour's burst of CPU does not.
const RUNS: usize = 3;
const FIRST_UID: u32 = 200_000;
const GID: u32 = 200_000;

fn main() -> ExitCode {
    if let Ok(names) = std::env::var(CHILD_ENV) {
        return child(Path::new(&names));
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("nss_lookup: a benchmark; run it with `cargo bench -p nss_jms` as root");
        return ExitCode::SUCCESS;
    }
    match parent() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nss_lookup: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Timings of one operation in one configuration.
#[derive(Debug, Clone, Copy)]
struct Stats {
    calls: usize,
    first: Duration,
    mean: Duration,
    p99: Duration,
}

impl Stats {
    fn parse(line: &str) -> Option<(String, Stats)> {
        let mut fields = line.strip_prefix("RESULT ")?.split_whitespace();
        let op = fields.next()?.to_string();
        let mut next = || fields.next()?.parse::<u64>().ok();
        let calls = next()? as usize;
        let [first, mean, p99] = [next()?, next()?, next()?].map(Duration::from_nanos);
        Some((
            op,
            Stats {
                calls,
                first,
                mean,
                p99,
            },
        ))
    }
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.2} µs")
    }
}

fn ratio(slow: Duration, fast: Duration) -> f64 {
    slow.as_secs_f64() / fast.as_secs_f64().max(1e-12)
}

fn bench_users(n: usize) -> Vec<NssUser> {
    (0..n)
        .map(|i| NssUser {
            name: format!("jb{i:06}"),
            uid: FIRST_UID + i as u32,
            gid: GID,
            gecos: format!("Bench User {i}"),
            home: "/".to_string(),
            shell: DEFAULT_SHELL.to_string(),
        })
        .collect()
}

/// Runs one configuration in its own namespace and process.
fn run(
    sandbox: &Sandbox,
    nsswitch: &str,
    passwd: Option<&Path>,
    names: &Path,
) -> Result<Vec<(String, Stats)>, String> {
    sandbox.set_nsswitch(nsswitch);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = sandbox
        .command(passwd, &format!("exec '{}'", exe.display()))
        .env(CHILD_ENV, names)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "configuration {nsswitch:?} failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(stdout.lines().filter_map(Stats::parse).collect())
}

/// Runs a configuration [`RUNS`] times; keeps the run with the lowest mean
/// for each call kind.
fn run_best(
    sandbox: &Sandbox,
    nsswitch: &str,
    passwd: Option<&Path>,
    names: &Path,
) -> Result<Vec<(String, Stats)>, String> {
    let mut best: Vec<(String, Stats)> = Vec::new();
    for _ in 0..RUNS {
        for (op, stats) in run(sandbox, nsswitch, passwd, names)? {
            match best.iter_mut().find(|(o, _)| *o == op) {
                Some((_, kept)) if kept.mean <= stats.mean => {}
                Some((_, kept)) => *kept = stats,
                None => best.push((op, stats)),
            }
        }
    }
    Ok(best)
}

fn get<'a>(results: &'a [(String, Stats)], op: &str) -> Result<&'a Stats, String> {
    results
        .iter()
        .find(|(o, _)| o == op)
        .map(|(_, s)| s)
        .ok_or_else(|| format!("no result for {op}"))
}

fn parent() -> Result<(), String> {
    require_root_and_unshare();
    let host_passwd = fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    let host_lines = host_passwd.lines().count();
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let glibc = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) }
        .to_string_lossy()
        .into_owned();
    println!("nss_jms lookup benchmark: glibc {glibc}, getpwnam_r / getpwuid_r of random users,");
    println!("one process per configuration run, up to {MAX_CALLS} calls or {BUDGET:?} per call kind and run,");
    println!("best of {RUNS} runs (lowest mean); mean / p99 per call");
    println!();
    println!(
        "{:>7}  {:<10} {:>23}  {:>23}  {:>20}",
        "users", "call", "nss_files mean / p99", "nss_jms mean / p99", "files÷jms mean / p99"
    );

    let mut verdicts = Vec::new();
    let mut behind_rows = Vec::new();
    for n in [100usize, 100_000] {
        let sandbox = Sandbox::new("passwd: files\n");
        let users = bench_users(n);
        let names: PathBuf = sandbox.dir.path().join("names");
        let list: String = users
            .iter()
            .map(|u| format!("{} {}\n", u.name, u.uid))
            .collect();
        fs::write(&names, list).map_err(|e| e.to_string())?;
        let mut passwd = host_passwd.clone();
        for u in &users {
            passwd.push_str(&format!(
                "{}:x:{}:{}:{}:{}:{}\n",
                u.name, u.uid, u.gid, u.gecos, u.home, u.shell
            ));
        }
        let passwd_path = sandbox.dir.path().join("passwd");
        fs::write(&passwd_path, passwd).map_err(|e| e.to_string())?;
        let data = NssData {
            users,
            groups: vec![],
        };
        write_atomic(&sandbox.cache_path(), &data).map_err(|e| e.to_string())?;

        let files = run_best(
            &sandbox,
            "passwd: files\ngroup: files\n",
            Some(&passwd_path),
            &names,
        )?;
        let jms = run_best(&sandbox, "passwd: jms\ngroup: files\n", None, &names)?;
        let behind = run_best(
            &sandbox,
            "passwd: files jms\ngroup: files jms\n",
            None,
            &names,
        )?;
        for op in ["getpwnam", "getpwuid"] {
            let (f, j) = (get(&files, op)?, get(&jms, op)?);
            let (mean_ratio, p99_ratio) = (ratio(f.mean, j.mean), ratio(f.p99, j.p99));
            println!(
                "{n:>7}  {op:<10} {:>23}  {:>23}  {:>20}",
                format!("{} / {}", micros(f.mean), micros(f.p99)),
                format!("{} / {}", micros(j.mean), micros(j.p99)),
                format!("{mean_ratio:.1}× / {p99_ratio:.1}×"),
            );
            let (target, met) = if n <= 100 {
                ("nss_jms no slower than nss_files", mean_ratio >= 1.0)
            } else {
                ("nss_jms ≥500× faster than nss_files", mean_ratio >= 500.0)
            };
            verdicts.push(format!(
                "{op} at {n} users: {target}: {} ({mean_ratio:.1}×; {} / {} calls)",
                if met { "met" } else { "MISSED" },
                f.calls,
                j.calls
            ));
            let b = get(&behind, op)?;
            behind_rows.push(format!(
                "{n:>7}  {op:<10} {:>23}  {:>23}  {:>12}  first call {}",
                format!("{} / {}", micros(b.mean), micros(b.p99)),
                format!("{} / {}", micros(j.mean), micros(j.p99)),
                format!("+{}", micros(b.mean.saturating_sub(j.mean))),
                micros(b.first),
            ));
        }
    }
    println!();
    println!("a jms user behind `passwd: files jms`, host /etc/passwd ({host_lines} lines):");
    println!(
        "{:>7}  {:<10} {:>23}  {:>23}  {:>12}",
        "users", "call", "files jms mean / p99", "jms alone mean / p99", "files miss"
    );
    behind_rows.iter().for_each(|row| println!("{row}"));
    println!();
    println!("targets:");
    verdicts.iter().for_each(|v| println!("  {v}"));
    Ok(())
}

/// Small, fast, deterministic random numbers for picking users.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

/// One lookup through glibc; returns the entry's (name, uid) if found.
fn lookup(by: &Key<'_>, buf: &mut [libc::c_char]) -> Option<(String, u32)> {
    // SAFETY: passwd is plain old data; an all-zero value is valid and
    // only read after glibc filled it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: the name is
    // NUL-terminated, pwd and result are live locals, buf is a live buffer
    // of buf.len() bytes.
    let rc = unsafe {
        match by {
            Key::Name(name) => libc::getpwnam_r(
                name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            ),
            Key::Uid(uid) => {
                libc::getpwuid_r(*uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
            }
        }
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string in buf.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    Some((name, pwd.pw_uid))
}

enum Key<'a> {
    Name(&'a CStr),
    Uid(u32),
}

/// In the namespace: time the lookups and print one `RESULT` line per call
/// kind: `RESULT op calls first_ns mean_ns p99_ns`.
fn child(names: &Path) -> ExitCode {
    let text = match fs::read_to_string(names) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("{}: {e}", names.display());
            return ExitCode::FAILURE;
        }
    };
    let users: Vec<(CString, String, u32)> = text
        .lines()
        .filter_map(|l| {
            let (name, uid) = l.split_once(' ')?;
            Some((
                CString::new(name).ok()?,
                name.to_string(),
                uid.parse().ok()?,
            ))
        })
        .collect();
    if users.is_empty() {
        eprintln!("no users to look up");
        return ExitCode::FAILURE;
    }
    let mut buf: Vec<libc::c_char> = vec![0; 4096];
    for op in ["getpwnam", "getpwuid"] {
        let mut random = XorShift(0x2545_F491_4F6C_DD1D);
        let mut samples = Vec::with_capacity(MAX_CALLS);
        let mut first = Duration::ZERO;
        let started = Instant::now();
        while samples.len() < MAX_CALLS && (samples.len() < 20 || started.elapsed() < BUDGET) {
            let (cname, name, uid) = &users[random.next(users.len())];
            let key = if op == "getpwnam" {
                Key::Name(cname)
            } else {
                Key::Uid(*uid)
            };
            let t = Instant::now();
            let found = lookup(&key, &mut buf);
            let elapsed = t.elapsed();
            if found.as_ref() != Some(&(name.clone(), *uid)) {
                eprintln!("{op} of {name} ({uid}) gave {found:?}");
                return ExitCode::FAILURE;
            }
            if first.is_zero() {
                first = elapsed;
            }
            samples.push(elapsed.as_nanos() as u64);
        }
        let calls = samples.len();
        let mean = samples.iter().sum::<u64>() / calls as u64;
        samples.sort_unstable();
        let p99 = samples[(calls * 99 / 100).min(calls - 1)];
        println!("RESULT {op} {calls} {} {mean} {p99}", first.as_nanos());
    }
    ExitCode::SUCCESS
}
