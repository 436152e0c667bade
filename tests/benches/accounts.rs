//! Managed accounts at scale (issue "Managed accounts…", "Measure"): push
//! and rotate across 500 assets through real bastions and real target
//! sshds, end to end in one run on one machine.
//!
//! The scene: 20 target hosts (src/target.rs: each a real sshd on an
//! address of its own in 127.0.17.0/24, with its own /etc overlay, /home
//! and sudoers.d in a private mount namespace), 25 assets on each (the
//! same address and port; 500 assets in all, named `aJJ-tII` so that
//! consecutive jobs go to different hosts), each asset with `root` as its
//! privileged account and one account of its own, `uJJtII` — distinct
//! names, so every push really creates a user (useradd, home, password or
//! key) and every rotation really changes a secret (chpasswd, or a new
//! Ed25519 pair in authorized_keys: one account in five uses keys). A real
//! jms-server and two bastions (the e2e harness: real sshd, pam_jms,
//! nss_jms, jms-agentd) enrolled with it.
//!
//! Phases, each a plan over the node `/bench` (or `/bench/sub`: the
//! first 5 assets of each target, 100) started as due (`jmsctl plan add …
//! --start` in the past: the server's scheduler starts all its jobs on its
//! next tick), timed from `plan add` until every job has ended:
//!
//! 1. push to all 500 with one bastion;
//! 2. rotation of all 500 with one bastion (`[sessions] max_parallel_jobs`
//!    at its default, 8);
//! 3. rotation of /bench/sub with one bastion, 8 at once, then with
//!    `max_parallel_jobs = 500`: every order at once, as agentd ran them
//!    before the setting (a thread and a worker per order as it came) —
//!    the ratio is the setting's effect;
//! 4. rotation of all 500 with both bastions online: jobs per second per
//!    bastion (the server gives each new job to the bastion with the
//!    fewest in flight), against phase 2.
//!
//! While a phase runs, each bastion's `jms-job` workers are counted every
//! 100 ms: how many jobs a bastion really runs at once (most, and mean
//! while any runs). Only jobs that ended `ok` count as work; at the end,
//! every target holds its 25 users and a sample of accounts (one in five)
//! logs in to its target directly with the secret the vault holds.
//!
//! `cargo bench -p jms-e2e --bench accounts` (as root, after `cargo build
//! --release --workspace`: the harness takes the jms binaries from
//! target/release). `JMS_BENCH_TARGETS` (default 20) and
//! `JMS_BENCH_ASSETS_PER_TARGET` (25) set the size; `JMS_BENCH_ONLY=
//! rotate,unbounded,two` runs only those phases (push always runs: the
//! others rotate what it pushed; `two` brings `rotate` for its ratio).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use jms_e2e::central::{eventually, vault_secret, Central};
use jms_e2e::run::{self, COMMAND_TIMEOUT};
use jms_e2e::target::ROOT_PASSWORD;
use jms_e2e::{Bastion, BastionBuilder, Target};
use serde_json::Value;

/// Longest a phase may take before the bench gives up with the logs.
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);
/// How often the job workers are counted.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// One account in this many uses a key (the others a password).
const KEY_EVERY: usize = 5;
/// Accounts `n` with `n % SAMPLE_LOGINS` 0 (a password) or
/// `KEY_EVERY - 1` (a key) are logged in with at the end: one in five.
const SAMPLE_LOGINS: usize = 10;
/// `max_parallel_jobs` of the "before" phase: every order at once.
const UNBOUNDED: usize = 500;
/// The assets of the first this many of each target's rows are also in
/// the node /bench/sub (100 of 500 by default): the before/after phases.
const SUBSET_ROWS: usize = 5;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "accounts: run with `cargo bench -p jms-e2e --bench accounts` (as root) to measure"
        );
        return;
    }
    let targets = env_usize("JMS_BENCH_TARGETS", 20).min(250);
    let per_target = env_usize("JMS_BENCH_ASSETS_PER_TARGET", 25).min(100);
    let only = std::env::var("JMS_BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    let started = Instant::now();
    eprintln!(
        "accounts: starting {targets} targets, a jms-server and two bastions; {} assets…",
        targets * per_target
    );
    let scene = Scene::start(targets, per_target);
    let total = scene.accounts.len();
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut notes = vec![format!(
        "machine: {} CPUs (shared: other builds may run); {} targets × {per_target} assets; \
         jms binaries from {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        targets,
        jms_e2e::preflight::profile_dir().display()
    )];

    eprintln!("accounts: push to {total} accounts, one bastion…");
    let push = scene.run_plan("bench-push", "push", "/bench", &["bastion-a"]);
    push.rows("push, 1 bastion (8 at once)", None, &mut rows, &mut notes);
    scene.check_users();

    let mut one = None;
    if wanted("rotate") || wanted("two") {
        eprintln!("accounts: rotation of {total} accounts, one bastion, max_parallel_jobs 8…");
        let run = scene.run_plan("bench-rotate-1", "rotate", "/bench", &["bastion-a"]);
        run.rows("rotate, 1 bastion (8 at once)", None, &mut rows, &mut notes);
        one = Some(run);
    }
    if wanted("unbounded") {
        let sub = scene.subset();
        eprintln!("accounts: rotation of {sub} accounts, one bastion, 8 at once then every order at once…");
        let bounded = scene.run_plan("bench-sub-8", "rotate", "/bench/sub", &["bastion-a"]);
        bounded.rows(
            &format!("rotate {sub} (/bench/sub), 1 bastion, 8 at once"),
            None,
            &mut rows,
            &mut notes,
        );
        scene.set_max_parallel_jobs(&scene.first, Some(UNBOUNDED));
        let all = scene.run_plan("bench-sub-all", "rotate", "/bench/sub", &["bastion-a"]);
        all.rows(
            &format!("rotate {sub}, 1 bastion, max_parallel_jobs {UNBOUNDED} (before)"),
            None,
            &mut rows,
            &mut notes,
        );
        rows.push([
            "  8 at once vs every order at once".into(),
            format!("{:.2}×", bounded.rate() / all.rate().max(1e-9)),
            format!(
                "{:.2}×",
                bounded.wall.as_secs_f64() / all.wall.as_secs_f64()
            ),
            String::new(),
            format!("failed {} vs {}", bounded.failed(), all.failed()),
        ]);
        scene.set_max_parallel_jobs(&scene.first, None);
    }
    if wanted("two") {
        eprintln!("accounts: rotation of {total} accounts, two bastions…");
        scene.attach_second();
        let run = scene.run_plan(
            "bench-rotate-2",
            "rotate",
            "/bench",
            &["bastion-a", "bastion-b"],
        );
        run.rows(
            "rotate, 2 bastions (8 at once each)",
            one.as_ref(),
            &mut rows,
            &mut notes,
        );
    }

    eprintln!("accounts: logging in with the vault's secrets…");
    let checked = scene.check_logins();
    notes.push(format!(
        "after the last phase: every target holds its {per_target} pushed users; \
         {checked} accounts (one in five, passwords and keys) log in to their \
         target with the vault's secret"
    ));
    notes.push(
        "jobs/s counts jobs that ended ok; wall: from `plan add` (the plan due at once) until \
         every job of the plan ended; at once: the bastion's jms-job workers, counted every \
         100 ms (most / mean while any runs)"
            .into(),
    );
    jms_e2e::report::print_table(
        "managed accounts: push and rotate across assets",
        ["phase", "jobs/s", "wall", "at once", "jobs"],
        &rows,
        &notes,
        started.elapsed(),
    );
}

// ---------------------------------------------------------------- the scene

/// One managed account: its asset, username, whether it uses a key, and
/// its target (index into `Scene::targets`).
struct Managed {
    asset: String,
    user: String,
    key: bool,
    target: usize,
}

struct Scene {
    targets: Vec<Target>,
    first: Bastion,
    second: Bastion,
    central: Central,
    accounts: Vec<Managed>,
    per_target: usize,
    dir: tempfile::TempDir,
}

/// What one plan's run gave.
struct PlanRun {
    wall: Duration,
    /// Per bastion: jobs that ended ok, failed, (most, mean) at once.
    bastions: BTreeMap<String, (usize, usize, (usize, f64))>,
    /// The first few failures' errors.
    errors: Vec<String>,
}

impl PlanRun {
    fn ok(&self) -> usize {
        self.bastions.values().map(|b| b.0).sum()
    }

    fn failed(&self) -> usize {
        self.bastions.values().map(|b| b.1).sum()
    }

    /// Jobs that ended ok per second of the whole run.
    fn rate(&self) -> f64 {
        self.ok() as f64 / self.wall.as_secs_f64()
    }

    fn rows(
        &self,
        what: &str,
        baseline: Option<&PlanRun>,
        rows: &mut Vec<[String; 5]>,
        notes: &mut Vec<String>,
    ) {
        let secs = self.wall.as_secs_f64();
        rows.push([
            what.to_string(),
            format!("{:.2}", self.rate()),
            format!("{secs:.1} s"),
            String::new(),
            format!("{} ok, {} failed", self.ok(), self.failed()),
        ]);
        for (name, (ok, failed, (most, mean))) in &self.bastions {
            rows.push([
                format!("  {name}"),
                format!("{:.2}", *ok as f64 / secs),
                String::new(),
                format!("{most} / {mean:.1}"),
                format!("{ok} ok, {failed} failed"),
            ]);
        }
        if let Some(base) = baseline {
            rows.push([
                "  vs 1 bastion (8 at once)".into(),
                format!("{:.2}×", self.rate() / base.rate().max(1e-9)),
                format!("{:.2}×", secs / base.wall.as_secs_f64()),
                String::new(),
                String::new(),
            ]);
        }
        for error in &self.errors {
            notes.push(format!("{what}: a failed job: {error}"));
        }
    }
}

fn policy(targets: &[Target], per_target: usize) -> (String, Vec<Managed>) {
    let mut yaml = String::from("nodes: [/bench/main, /bench/sub]\nassets:\n");
    let mut accounts = Vec::new();
    for j in 0..per_target {
        for (i, target) in targets.iter().enumerate() {
            let asset = format!("a{j:02}-t{i:02}");
            let user = format!("u{j:02}t{i:02}");
            let n = accounts.len();
            let key = n % KEY_EVERY == KEY_EVERY - 1;
            yaml.push_str(&format!(
                "  - name: {asset}\n    address: {address}\n    protocols: [{{name: ssh, port: {port}}}]\n    nodes: [{node}]\n    accounts:\n      - {{name: root, username: root, secret_type: password, secret: \"{ROOT_PASSWORD}\", privileged: true}}\n      - {{name: {user}, username: {user}, secret_type: {kind}}}\n",
                address = target.address(),
                port = target.port(),
                kind = if key { "ssh_key" } else { "password" },
                node = if j < SUBSET_ROWS { "/bench/sub" } else { "/bench/main" },
            ));
            accounts.push(Managed {
                asset,
                user,
                key,
                target: i,
            });
        }
    }
    (yaml, accounts)
}

impl Scene {
    fn start(count: usize, per_target: usize) -> Scene {
        // The targets start in parallel (each a few ssh-keygen and an sshd).
        let mut targets: Vec<(usize, Target)> = thread::scope(|s| {
            let handles: Vec<_> = (0..count)
                .map(|i| s.spawn(move || (i, Target::start_at(&format!("127.0.17.{}", i + 1)))))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a target starts"))
                .collect()
        });
        targets.sort_by_key(|(i, _)| *i);
        let targets: Vec<Target> = targets.into_iter().map(|(_, t)| t).collect();
        let first = BastionBuilder::new().start();
        let second = BastionBuilder::new().start();
        // Queued jobs wait for a runner on their bastion: no attempt is
        // handed on while a plan's queue drains.
        let central = Central::start_with_env(&[("JMS_JOB_ATTEMPT_TIMEOUT", "900s")]);
        central.attach_as(&first, &central.url, "bastion-a");
        let (yaml, accounts) = policy(&targets, per_target);
        let file = central.data_dir().join("../accounts-bench-policy.yaml");
        fs::write(&file, yaml).expect("write the policy");
        central
            .jmsctl(&["policy", "apply", file.to_str().expect("utf-8 path")])
            .assert_success("jmsctl policy apply");
        let dir = tempfile::Builder::new()
            .prefix("jms-bench-accounts-")
            .tempdir()
            .expect("a client dir");
        let scene = Scene {
            targets,
            first,
            second,
            central,
            accounts,
            per_target,
            dir,
        };
        scene.wait_online(1);
        scene
    }

    /// Waits until `n` bastions are online.
    fn wait_online(&self, n: usize) {
        eventually(&format!("{n} bastion(s) online"), || {
            let out = self.central.jmsctl(&["bastion", "list", "--json"]);
            if out.stdout.matches("\"online\"").count() >= n {
                Ok(())
            } else {
                Err(out.to_string())
            }
        });
    }

    /// Enrolls the second bastion.
    fn attach_second(&self) {
        self.central
            .attach_as(&self.second, &self.central.url, "bastion-b");
        self.wait_online(2);
    }

    /// Sets (or, `None`, removes: the default) `[sessions]
    /// max_parallel_jobs` in `bastion`'s agentd.toml and restarts agentd.
    fn set_max_parallel_jobs(&self, bastion: &Bastion, max: Option<usize>) {
        let path = bastion.dir().join("agentd.toml");
        let text = fs::read_to_string(&path).expect("agentd.toml");
        let mut text = match text.split_once("\n# accounts bench\n") {
            Some((before, _)) => before.to_string(),
            None => text,
        };
        if let Some(max) = max {
            text.push_str(&format!(
                "\n# accounts bench\n[sessions]\nmax_parallel_jobs = {max}\n"
            ));
        }
        fs::write(&path, text).expect("agentd.toml");
        bastion.kill_agentd();
        bastion.restart_agentd();
        self.wait_online(1);
        // The bastion's first control poll after the restart.
        thread::sleep(Duration::from_secs(2));
    }

    /// Adds plan `name` (`kind` on every asset of /bench), due at once;
    /// waits until all its jobs ended, counting each bastion's job
    /// workers meanwhile.
    fn run_plan(&self, name: &str, kind: &str, node: &str, bastions: &[&str]) -> PlanRun {
        let pid_files: Vec<(String, PathBuf)> = bastions
            .iter()
            .map(|b| {
                let bastion = if *b == "bastion-a" {
                    &self.first
                } else {
                    &self.second
                };
                (b.to_string(), bastion.dir().join("agentd.pid"))
            })
            .collect();
        let expected = if node == "/bench/sub" {
            self.subset()
        } else {
            self.accounts.len()
        };
        let stop = AtomicBool::new(false);
        let (wall, samples) = thread::scope(|s| {
            let sampler = s.spawn(|| sample_workers(&pid_files, &stop));
            let begun = Instant::now();
            self.central.jmsctl(&[
                "plan",
                "add",
                name,
                "--kind",
                kind,
                "--node",
                node,
                "--every-days",
                "1",
                "--start",
                "2020-01-01",
            ]);
            let deadline = begun + PHASE_TIMEOUT;
            let wall = loop {
                let jobs = self.plan_jobs(name);
                let ended = jobs.iter().filter(|j| j["status"] != "running").count();
                if jobs.len() >= expected && ended == jobs.len() {
                    break begun.elapsed();
                }
                if Instant::now() > deadline {
                    stop.store(true, Ordering::Relaxed);
                    panic!(
                        "plan {name}: {ended} of {} jobs ended ({expected} expected) in {PHASE_TIMEOUT:?}\n{}",
                        jobs.len(),
                        self.logs()
                    );
                }
                thread::sleep(Duration::from_millis(200));
            };
            stop.store(true, Ordering::Relaxed);
            (wall, sampler.join().expect("the sampler"))
        });
        let jobs = self.plan_jobs(name);
        assert_eq!(
            jobs.len(),
            expected,
            "plan {name} started one job per account"
        );
        let mut run = PlanRun {
            wall,
            bastions: BTreeMap::new(),
            errors: Vec::new(),
        };
        for (b, _) in &pid_files {
            run.bastions.insert(
                b.clone(),
                (0, 0, samples.get(b).copied().unwrap_or_default()),
            );
        }
        for job in &jobs {
            let bastion = job["bastion"].as_str().unwrap_or("?").to_string();
            let entry = run.bastions.entry(bastion).or_insert((0, 0, (0, 0.0)));
            if job["status"] == "ok" {
                entry.0 += 1;
            } else {
                entry.1 += 1;
                if run.errors.len() < 3 {
                    run.errors.push(format!(
                        "{}@{}: {}",
                        job["account"].as_str().unwrap_or_default(),
                        job["asset"].as_str().unwrap_or_default(),
                        job["error"].as_str().unwrap_or_default()
                    ));
                }
            }
        }
        self.central.jmsctl(&["plan", "remove", name]);
        run
    }

    /// How many accounts /bench/sub holds.
    fn subset(&self) -> usize {
        self.targets.len() * SUBSET_ROWS.min(self.per_target)
    }

    /// The jobs plan `name` started (the newest 1,000 jobs hold them).
    fn plan_jobs(&self, name: &str) -> Vec<Value> {
        let (status, body) = self.central.api("GET", "/api/v1/jobs?limit=1000", None);
        assert_eq!(status, 200, "GET /api/v1/jobs: {body}");
        let list: Value = serde_json::from_str(&body).expect("job list JSON");
        let actor = format!("plan:{name}");
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|j| j["actor"] == actor.as_str())
            .cloned()
            .collect()
    }

    /// Every target holds its pushed users (`getent passwd` in its
    /// namespace).
    fn check_users(&self) {
        for (i, target) in self.targets.iter().enumerate() {
            let out = target.inside("getent passwd | cut -d: -f1");
            out.assert_success("getent passwd on a target");
            let users: Vec<&str> = out.stdout.lines().collect();
            for account in self.accounts.iter().filter(|a| a.target == i) {
                assert!(
                    users.contains(&account.user.as_str()),
                    "{} was pushed to {}",
                    account.user,
                    target.address()
                );
            }
            let pushed = |u: &&&str| {
                let b = u.as_bytes();
                b.len() == 6
                    && b[0] == b'u'
                    && b[3] == b't'
                    && [1, 2, 4, 5].iter().all(|i| b[*i].is_ascii_digit())
            };
            assert_eq!(
                users.iter().filter(pushed).count(),
                self.per_target,
                "{}: {users:?}",
                target.address()
            );
        }
    }

    /// Logs in to the target with the vault's secret as one account in
    /// five ([`SAMPLE_LOGINS`]); how many.
    fn check_logins(&self) -> usize {
        let doc = self.central.export_with_secrets();
        let secret_of = |asset: &str, user: &str| vault_secret(&doc, asset, user);
        let mut checked = 0;
        for (n, account) in self.accounts.iter().enumerate() {
            // Passwords and keys both (every KEY_EVERY-th is a key).
            if n % SAMPLE_LOGINS != 0 && n % SAMPLE_LOGINS != KEY_EVERY - 1 {
                continue;
            }
            let secret = secret_of(&account.asset, &account.user);
            assert!(
                !secret.is_empty(),
                "the vault holds {}'s secret",
                account.user
            );
            let target = &self.targets[account.target];
            let mut ssh = Command::new(if account.key { "ssh" } else { "sshpass" });
            if !account.key {
                ssh.arg("-e").arg("ssh").env("SSHPASS", &secret);
            }
            ssh.env_remove("SSH_AUTH_SOCK");
            for option in [
                "StrictHostKeyChecking=no",
                "UserKnownHostsFile=/dev/null",
                "GlobalKnownHostsFile=/dev/null",
                "LogLevel=ERROR",
                "IdentityAgent=none",
                "IdentitiesOnly=yes",
                "ConnectTimeout=30",
            ] {
                ssh.args(["-o", option]);
            }
            if account.key {
                let file = self.dir.path().join(&account.user);
                fs::write(&file, format!("{}\n", secret.trim_end())).expect("key file");
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).expect("mode");
                ssh.args(["-o", "BatchMode=yes", "-o", "PasswordAuthentication=no"])
                    .arg("-i")
                    .arg(&file);
            } else {
                ssh.args(["-o", "PubkeyAuthentication=no"]);
            }
            ssh.args(["-p", &target.port().to_string()])
                .arg(format!("{}@{}", account.user, target.address()))
                .args(["--", "id", "-un"]);
            let out = run::run(&mut ssh, b"", COMMAND_TIMEOUT);
            assert!(
                out.success() && out.stdout.trim() == account.user,
                "{} logs in to {} with the vault's {}:\n{out}",
                account.user,
                target.address(),
                if account.key { "key" } else { "password" }
            );
            checked += 1;
        }
        checked
    }

    fn logs(&self) -> String {
        let tail = |text: String| -> String {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "---- bastion-a agentd.log (tail) ----\n{}\n---- bastion-b agentd.log (tail) ----\n{}\n---- jms-server log (tail) ----\n{}",
            tail(self.first.agentd_log()),
            tail(self.second.agentd_log()),
            tail(self.central.log())
        )
    }
}

/// Counts each bastion's `jms-job` workers (children of its agentd) every
/// [`SAMPLE_EVERY`] until `stop`, one pass over /proc/*/stat a sample:
/// per bastion, the most at once and the mean over the samples where any
/// ran.
fn sample_workers(
    pid_files: &[(String, PathBuf)],
    stop: &AtomicBool,
) -> BTreeMap<String, (usize, f64)> {
    let mut seen: BTreeMap<String, (usize, usize, usize)> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let agentds: Vec<(&str, u32)> = pid_files
            .iter()
            .filter_map(|(name, file)| {
                let pid = fs::read_to_string(file).ok()?.trim().parse().ok()?;
                Some((name.as_str(), pid))
            })
            .collect();
        let mut now: BTreeMap<&str, usize> = agentds.iter().map(|(n, _)| (*n, 0)).collect();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // `PID (COMM) STATE PPID …`
            let Some((head, rest)) = stat.rsplit_once(") ") else {
                continue;
            };
            if !head.ends_with("(jms-job") {
                continue;
            }
            let ppid: u32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            if let Some((name, _)) = agentds.iter().find(|(_, pid)| *pid == ppid) {
                *now.entry(name).or_default() += 1;
            }
        }
        for (name, count) in now {
            let entry = seen.entry(name.to_string()).or_default();
            entry.0 = entry.0.max(count);
            if count > 0 {
                entry.1 += count;
                entry.2 += 1;
            }
        }
        thread::sleep(SAMPLE_EVERY);
    }
    seen.into_iter()
        .map(|(name, (most, sum, n))| (name, (most, sum as f64 / n.max(1) as f64)))
        .collect()
}
