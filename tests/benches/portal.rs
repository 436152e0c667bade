//! The web portal's benchmarks (issue "The engineers' web portal…",
//! "Measure"), end to end in one run on one machine, each against a
//! baseline measured in the same run through the same bastion to the same
//! target:
//!
//! - keystroke round trip through the web terminal — a WebSocket client
//!   sends a key as the page does (`{"type":"input"}`) and waits for its
//!   echo from the target — p50/p99, against `ssh -tt bastion web01` on a
//!   pty (interleaved key by key);
//! - the file manager's upload (`POST /files/upload`, the body streamed)
//!   and download (`GET /files/download`) throughput with the portal's
//!   cookie (and this site's `Origin` on the upload), against `sftp -b`
//!   through the bastion's SFTP proxy (interleaved round by round). The
//!   `sftp` figures are given whole (its login included, what a user
//!   waits for) and with an empty `sftp` session's time of the same round
//!   subtracted (the file manager's SFTP session is already open); the
//!   ratio is against the latter;
//! - jms-server's VmRSS and VmHWM (/proc) with 50 open web terminals,
//!   against the same server idle: the growth per terminal.
//!
//! The scene: a target (src/target.rs), a bastion (the e2e harness: real
//! sshd, pam_jms, nss_jms, jms-agentd) enrolled with a real jms-server
//! (`--insecure-http`, as behind a TLS proxy), alice with a password (the
//! portal) and a key (ssh, sftp) granted web01's `deploy` account.
//!
//! `cargo bench -p jms-e2e --bench portal` (as root, after `cargo build
//! --release --workspace`: the harness takes the jms binaries from
//! target/release). `JMS_BENCH_MIB` sets the transfer size (default 64);
//! `JMS_BENCH_ONLY=keystrokes,transfer,memory` runs only those parts.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use jms_e2e::central::{eventually, Central};
use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::{Bastion, BastionBuilder, ClientKey, Target};
use tungstenite::Message;

const ALICE_PASSWORD: &str = "Alice-portal-bench-1";
const TERM_SIZE: (u16, u16) = (80, 24);
const KEYSTROKES: usize = 2000;
/// Pause between rounds of keystrokes (a fast typist: 200 keys a second).
const KEY_GAP: Duration = Duration::from_millis(5);
const TRANSFER_ROUNDS: usize = 3;
/// Web terminals held open for the memory figure.
const TERMINALS: usize = 50;
/// The target's folder the transfers use (deploy's home; the host sees it
/// as `Target::srv()/home/deploy`).
const REMOTE_DIR: &str = "/srv/home/deploy";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("portal: run with `cargo bench -p jms-e2e --bench portal` (as root) to measure");
        return;
    }
    let mib: usize = std::env::var("JMS_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let started = Instant::now();
    eprintln!("portal: starting a target, a bastion and a jms-server it is enrolled with…");
    let scene = Scene::start();
    let mut report = Report::default();
    report.note(format!(
        "machine: {} CPUs; {}; jms binaries from {}",
        thread::available_parallelism().map_or(0, |n| n.get()),
        first_line(&command_output(Command::new("ssh").arg("-V"))),
        jms_e2e::preflight::profile_dir().display()
    ));

    let only = std::env::var("JMS_BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p.trim() == part);
    if wanted("keystrokes") {
        eprintln!("portal: keystroke round trips, web terminal and ssh -tt…");
        keystrokes(&scene, &mut report);
    }
    if wanted("memory") {
        eprintln!("portal: jms-server memory with {TERMINALS} web terminals…");
        memory(&scene, &mut report);
    }
    if wanted("transfer") {
        eprintln!("portal: file manager and sftp, {mib} MiB × {TRANSFER_ROUNDS} rounds…");
        transfer(&scene, mib, &mut report);
    }
    report.print(started.elapsed());
}

// ---------------------------------------------------------------- the scene

struct Scene {
    target: Target,
    bastion: Bastion,
    central: Central,
    key: ClientKey,
    /// `name=value`: alice's portal session.
    cookie: String,
    http: reqwest::blocking::Client,
    dir: tempfile::TempDir,
}

fn policy(target: &Target, alice: &ClientKey) -> String {
    let hash =
        jms_core::password::hash_password(ALICE_PASSWORD, jms_core::password::MIN_ITERATIONS)
            .expect("a password hash");
    format!(
        "users:
  - {{username: alice, name: Alice, password_hash: \"{hash}\", public_keys: [\"{key}\"]}}
assets:
  - name: web01
    address: {address}
    protocols: [{{name: ssh, port: {port}}}, {{name: sftp, port: {port}}}]
    accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]
grants:
  - {{name: alice-web01, users: [alice], assets: [web01], accounts: [deploy], protocols: [all], actions: [all]}}
",
        key = alice.public,
        address = target.address(),
        port = target.port(),
    )
}

impl Scene {
    fn start() -> Scene {
        let target = Target::start();
        let builder = BastionBuilder::new();
        let key = builder.client_key("alice");
        let bastion = builder.start();
        let central = Central::start_insecure();
        central.attach(&bastion, &central.url);
        let file = central.data_dir().join("../portal-bench-policy.yaml");
        fs::write(&file, policy(&target, &key)).expect("write the policy");
        central
            .jmsctl(&["policy", "apply", file.to_str().expect("utf-8 path")])
            .assert_success("jmsctl policy apply");
        // 50 web terminals open at once reach the target too (sshd's
        // default MaxStartups, 10:30:100, drops some).
        let target_pid: i32 = fs::read_to_string(target.dir().join("sshd.pid"))
            .expect("target sshd.pid")
            .trim()
            .parse()
            .expect("target pid");
        jms_e2e::plain::raise_max_startups(
            &target.dir().join("sshd_config"),
            target_pid,
            &target.dir().join("sshd.log"),
            target.address(),
            target.port(),
        );
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(600))
            .build()
            .expect("an HTTP client");
        let dir = tempfile::Builder::new()
            .prefix("jms-bench-portal-")
            .tempdir()
            .expect("a client dir");
        let mut scene = Scene {
            target,
            bastion,
            central,
            key,
            cookie: String::new(),
            http,
            dir,
        };
        // The bastion has the policy (alice reaches web01).
        eventually("web01 through the bastion over ssh", || {
            output(&mut scene.ssh(false, Some("echo warm")), None).and_then(|(out, _)| {
                if out.trim() == "warm" {
                    Ok(())
                } else {
                    Err(out)
                }
            })
        });
        scene.cookie = scene.log_in();
        scene
    }

    /// Logs alice in to the portal; her session cookie (`name=value`).
    fn log_in(&self) -> String {
        let base = &self.central.url;
        let answer = self
            .http
            .post(format!("{base}/login"))
            .header("Origin", base.as_str())
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!(
                "username=alice&password={ALICE_PASSWORD}&code=&next=%2F"
            ))
            .send()
            .expect("the portal's login");
        answer
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.split(';').next().filter(|c| c.contains('=')))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no session cookie from the login: {}", answer.status()))
    }

    /// `PROGRAM` with a clean environment and the client options of an
    /// ssh to the bastion as alice (her key only).
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY");
        for option in [
            "StrictHostKeyChecking=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
            "LogLevel=ERROR",
            "IdentityAgent=none",
            "IdentitiesOnly=yes",
            "BatchMode=yes",
            "ConnectTimeout=30",
            "ControlMaster=no",
            "ControlPath=none",
        ] {
            cmd.args(["-o", option]);
        }
        cmd.arg("-i").arg(&self.key.private);
        cmd
    }

    /// `ssh [-tt] alice@bastion web01 [COMMAND]`.
    fn ssh(&self, tty: bool, command: Option<&str>) -> Command {
        let mut cmd = self.client("ssh");
        cmd.arg(if tty { "-tt" } else { "-T" })
            .args(["-p", &self.bastion.port().to_string(), "alice@127.0.0.1"])
            .arg(match command {
                Some(c) => format!("web01 {c}"),
                None => "web01".to_owned(),
            });
        cmd
    }

    /// `sftp -b BATCH alice@bastion`.
    fn sftp(&self, batch: &Path) -> Command {
        let mut cmd = self.client("sftp");
        cmd.args(["-P", &self.bastion.port().to_string(), "-b"])
            .arg(batch)
            .arg("alice@127.0.0.1");
        cmd
    }

    /// `POST /files/upload`: `file` into `folder` on web01 as `name`.
    fn web_upload(&self, file: &Path, folder: &str, name: &str) -> Result<(), String> {
        let base = &self.central.url;
        let body = File::open(file).map_err(|e| e.to_string())?;
        let len = body.metadata().map_err(|e| e.to_string())?.len();
        let answer = self
            .http
            .post(format!(
                "{base}/files/upload?asset=web01&account=deploy&path={}&name={name}",
                folder.replace('/', "%2F")
            ))
            .header("Cookie", &self.cookie)
            .header("Origin", base.as_str())
            .header("Content-Type", "application/octet-stream")
            .body(reqwest::blocking::Body::sized(body, len))
            .send()
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let text = answer.text().unwrap_or_default();
        if status.is_success() && text.contains(&format!("\"written\":{len}")) {
            Ok(())
        } else {
            Err(format!("{status}: {text}"))
        }
    }

    /// `GET /files/download`: the bytes of `path` on web01, counted.
    fn web_download(&self, path: &str) -> Result<usize, String> {
        let base = &self.central.url;
        let mut answer = self
            .http
            .get(format!(
                "{base}/files/download?asset=web01&account=deploy&path={}",
                path.replace('/', "%2F")
            ))
            .header("Cookie", &self.cookie)
            .send()
            .map_err(|e| e.to_string())?;
        if !answer.status().is_success() {
            let status = answer.status();
            return Err(format!("{status}: {}", answer.text().unwrap_or_default()));
        }
        let mut buf = vec![0u8; 1024 * 1024];
        let mut total = 0;
        loop {
            match answer.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn logs(&self) -> String {
        format!(
            "---- bastion sshd.log (tail) ----\n{}\n---- agentd.log (tail) ----\n{}\n---- jms-server log (tail) ----\n{}",
            tail(&self.bastion.sshd_log(), 30),
            tail(&self.bastion.agentd_log(), 30),
            tail(&self.central.log(), 30)
        )
    }
}

// ----------------------------------------------------------- the figures

#[derive(Default)]
struct Report {
    /// (figure, web, baseline, ratio)
    rows: Vec<[String; 4]>,
    notes: Vec<String>,
}

impl Report {
    fn section(&mut self, text: String) {
        println!("{text}");
    }

    fn row(&mut self, what: &str, web: String, baseline: String, ratio: String) {
        self.rows.push([what.to_owned(), web, baseline, ratio]);
    }

    fn note(&mut self, text: String) {
        self.notes.push(text);
    }

    fn print(&self, took: Duration) {
        jms_e2e::report::print_table(
            "jms portal benchmarks",
            ["figure", "web portal", "baseline (same run)", "ratio"],
            &self.rows,
            &self.notes,
            took,
        );
    }
}

// ------------------------------------------------------------- keystrokes

fn keystrokes(scene: &Scene, report: &mut Report) {
    let mut web = WebTerm::open(scene).unwrap_or_else(|e| panic!("{e}\n{}", scene.logs()));
    web.wait_for(b"$ ", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("web terminal prompt: {e}\n{}", scene.logs()));
    web.settle(Duration::from_millis(300));
    let mut tty = Tty::spawn(scene.ssh(true, None));
    tty.wait_for(b"$ ", Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("ssh -tt prompt: {e}\n{}", scene.logs()));
    tty.settle(Duration::from_millis(300));
    let names = ["web terminal", "ssh -tt"];
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(), Vec::new()];
    for i in 0..KEYSTROKES {
        for (p, term) in [&mut web as &mut dyn Echoes, &mut tty]
            .into_iter()
            .enumerate()
        {
            if i % 40 == 39 {
                // Kill the typed line (Ctrl-U) and let the redraw pass.
                term.send(b"\x15");
                term.settle(Duration::from_millis(50));
            }
            term.skip();
            let sent = Instant::now();
            term.send(b"x");
            let seen = term
                .wait_for(b"x", Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{} keystroke echo: {e}", names[p]));
            samples[p].push(seen - sent);
        }
        thread::sleep(KEY_GAP);
    }
    web.send(b"\x15exit\r");
    web.close();
    tty.send(b"\x15exit\r");
    tty.wait_exit(Duration::from_secs(5));
    let mut text = format!(
        "\n== keystroke round trip ({KEYSTROKES} keys, interleaved, {} ms apart; ms) ==\n{:<14} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        KEY_GAP.as_millis(),
        "", "p50", "p90", "p99", "p99.9", "max"
    );
    let mut stats = Vec::new();
    for (p, s) in samples.iter_mut().enumerate() {
        s.sort_unstable();
        let [p50, p90, p99, p999, max] =
            [0.50, 0.90, 0.99, 0.999, 1.0].map(|q| ms(percentile(s, q)));
        let _ = writeln!(
            text,
            "{:<14} {p50:>8.3} {p90:>8.3} {p99:>8.3} {p999:>8.3} {max:>8.3}",
            names[p]
        );
        stats.push((p50, p99));
    }
    report.section(text);
    let (web, ssh) = (stats[0], stats[1]);
    report.row(
        "keystroke round trip p50",
        format!("{:.3} ms", web.0),
        format!("{:.3} ms (ssh -tt bastion web01)", ssh.0),
        format!("{:.2}×", web.0 / ssh.0),
    );
    report.row(
        "keystroke round trip p99",
        format!("{:.3} ms", web.1),
        format!("{:.3} ms (ssh -tt bastion web01)", ssh.1),
        format!("{:.2}×", web.1 / ssh.1),
    );
}

// ----------------------------------------------------------------- memory

/// (VmRSS, VmHWM) in KiB and the thread count of `pid`.
fn memory_of(pid: u32) -> (u64, u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"), field("Threads:"))
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn memory(scene: &Scene, report: &mut Report) {
    let pid = scene.central.pid().expect("jms-server runs");
    // A few terminals first, so the idle figure is a warm server's.
    for _ in 0..3 {
        let mut web = WebTerm::open(scene).unwrap_or_else(|e| panic!("{e}\n{}", scene.logs()));
        web.wait_for(b"$ ", Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("warm-up web terminal: {e}\n{}", scene.logs()));
        web.send(b"exit\r");
        web.close();
    }
    thread::sleep(Duration::from_secs(1));
    let idle = memory_of(pid);
    let mut open: Vec<WebTerm> = Vec::new();
    while open.len() < TERMINALS {
        // Ten at a time.
        let batch: Vec<WebTerm> = (0..10.min(TERMINALS - open.len()))
            .map(|_| WebTerm::open(scene).unwrap_or_else(|e| panic!("{e}\n{}", scene.logs())))
            .collect();
        for mut web in batch {
            web.wait_for(b"$ ", Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("web terminal {}: {e}\n{}", open.len(), scene.logs()));
            open.push(web);
        }
    }
    // Every one of them is a live session: a key echoes on each.
    for web in &mut open {
        web.settle(Duration::from_millis(20));
        web.send(b"x");
        web.wait_for(b"x", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("an open web terminal's echo: {e}"));
    }
    thread::sleep(Duration::from_secs(1));
    let full = memory_of(pid);
    for web in &mut open {
        web.send(b"\x15exit\r");
    }
    for web in open {
        web.close();
    }
    thread::sleep(Duration::from_secs(3));
    let closed = memory_of(pid);
    let per = (mb(full.0) - mb(idle.0)) / TERMINALS as f64;
    report.section(format!(
        "\n== jms-server memory, {TERMINALS} open web terminals ==\n\
         VmRSS: {:.1} MB idle ({} threads), {:.1} MB with {TERMINALS} open ({} threads) → {per:.3} MB per terminal\n\
         VmHWM: {:.1} MB idle, {:.1} MB with {TERMINALS} open\n\
         VmRSS after closing them: {:.1} MB\n",
        mb(idle.0),
        idle.2,
        mb(full.0),
        full.2,
        mb(idle.1),
        mb(full.1),
        mb(closed.0),
    ));
    report.row(
        &format!("jms-server VmRSS, {TERMINALS} web terminals"),
        format!("{:.1} MB (VmHWM {:.1})", mb(full.0), mb(full.1)),
        format!("{:.1} MB idle (VmHWM {:.1})", mb(idle.0), mb(idle.1)),
        format!("+{per:.3} MB per terminal"),
    );
    report.note(format!(
        "jms-server VmRSS {:.1} MB once the {TERMINALS} terminals closed",
        mb(closed.0)
    ));
}

// --------------------------------------------------------------- transfer

fn transfer(scene: &Scene, mib: usize, report: &mut Report) {
    let size = mib * 1024 * 1024;
    let pid = scene.central.pid().expect("jms-server runs");
    let local = scene.dir.path().join("bench.bin");
    write_random(&local, size);
    let home = scene.target.srv().join("home/deploy");
    let batch = |name: &str, text: String| {
        let path = scene.dir.path().join(name);
        fs::write(&path, text).expect("an sftp batch file");
        path
    };
    let remote = |name: &str| format!("/deploy@web01{REMOTE_DIR}/{name}");
    let put = batch(
        "put.sftp",
        format!("put {} {}\n", local.display(), remote("bench-sftp.bin")),
    );
    let get = batch(
        "get.sftp",
        format!("get {} /dev/null\n", remote("bench-sftp.bin")),
    );
    let empty = batch("empty.sftp", format!("cd {}\n", remote("")));
    let sftp = |batch: &Path, what: &str| {
        let started = Instant::now();
        output(&mut scene.sftp(batch), None)
            .unwrap_or_else(|e| panic!("sftp {what}: {e}\n{}", scene.logs()));
        started.elapsed().as_secs_f64()
    };
    let check_size = |name: &str, what: &str| {
        let got = fs::metadata(home.join(name)).map_or(0, |m| m.len());
        assert_eq!(got, size as u64, "{what}: the target's {name}");
    };
    // The file manager's SFTP session and the ssh path warm.
    sftp(&empty, "warm-up");
    scene
        .web_download(&format!("{REMOTE_DIR}/.profile"))
        .or_else(|_| scene.web_download(&format!("{REMOTE_DIR}/.bashrc")))
        .ok();
    let hwm_before = memory_of(pid).1;
    // Seconds per round: web up, sftp up, web down, sftp down, empty sftp.
    let mut times: Vec<[f64; 5]> = Vec::new();
    for _ in 0..TRANSFER_ROUNDS {
        let mut t = [0.0; 5];
        let started = Instant::now();
        scene
            .web_upload(&local, REMOTE_DIR, "bench-web.bin")
            .unwrap_or_else(|e| panic!("web upload: {e}\n{}", scene.logs()));
        t[0] = started.elapsed().as_secs_f64();
        check_size("bench-web.bin", "web upload");
        t[1] = sftp(&put, "put");
        check_size("bench-sftp.bin", "sftp put");
        let started = Instant::now();
        let got = scene
            .web_download(&format!("{REMOTE_DIR}/bench-web.bin"))
            .unwrap_or_else(|e| panic!("web download: {e}\n{}", scene.logs()));
        t[2] = started.elapsed().as_secs_f64();
        assert_eq!(got, size, "web download: the bytes received");
        t[3] = sftp(&get, "get");
        t[4] = sftp(&empty, "empty session");
        times.push(t);
    }
    let hwm_after = memory_of(pid).1;
    for name in ["bench-web.bin", "bench-sftp.bin"] {
        let _ = fs::remove_file(home.join(name));
    }
    let _ = fs::remove_file(&local);
    let column = |i: usize| median(&times.iter().map(|t| t[i]).collect::<Vec<_>>());
    // sftp's transfer alone: each round's empty session subtracted.
    let net = |i: usize| {
        median(
            &times
                .iter()
                .map(|t| (t[i] - t[4]).max(1e-3))
                .collect::<Vec<_>>(),
        )
    };
    let rate = |secs: f64| mib as f64 / secs;
    let login = column(4);
    let mut text = format!(
        "\n== file manager vs sftp through the bastion: {mib} MiB, median of {TRANSFER_ROUNDS} (MiB/s) ==\n{:<10} {:>12} {:>14} {:>20} {:>16}\n",
        "", "web portal", "sftp (whole)", "sftp (login taken)", "web/sftp"
    );
    for (label, web, sftp) in [("upload", 0, 1), ("download", 2, 3)] {
        let (w, whole, alone) = (rate(column(web)), rate(column(sftp)), rate(net(sftp)));
        let _ = writeln!(
            text,
            "{label:<10} {w:>12.1} {whole:>14.1} {alone:>20.1} {:>15.1}%",
            w / alone * 100.0
        );
        report.row(
            &format!("file manager {label}, {mib} MiB"),
            format!("{w:.1} MiB/s"),
            format!("{alone:.1} MiB/s (sftp, its login taken off; whole {whole:.1})"),
            format!("{:.2}×", w / alone),
        );
    }
    let _ = writeln!(
        text,
        "an empty sftp session (login, a cd into the target folder, quit): {:.0} ms\njms-server VmHWM: {:.1} MB before the transfers, {:.1} MB after",
        login * 1e3,
        mb(hwm_before),
        mb(hwm_after)
    );
    report.section(text);
    report.note(format!(
        "jms-server VmHWM grew {:.1} MB over the {mib} MiB transfers (streamed, not held whole)",
        mb(hwm_after) - mb(hwm_before)
    ));
}

fn write_random(path: &Path, size: usize) {
    let rng = ring::rand::SystemRandom::new();
    let mut file = File::create(path).expect("bench file");
    let mut chunk = vec![0u8; 1024 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        ring::rand::SecureRandom::fill(&rng, &mut chunk[..n]).expect("random bytes");
        file.write_all(&chunk[..n]).expect("write bench file");
        left -= n;
    }
}

// ------------------------------------------------- the two kinds of terminal

/// A terminal read as bytes arrive (no emulator, no polling sleeps): the
/// time a byte is seen is the time it arrived.
trait Echoes {
    /// What was received, and where searches start.
    fn buffer(&mut self) -> (&mut Vec<u8>, &mut usize);
    /// Reads once, waiting at most `timeout`; false on timeout.
    fn read_some(&mut self, timeout: Duration) -> Result<bool, String>;
    fn send(&mut self, bytes: &[u8]);

    /// Forgets what was printed so far (searches start after it).
    fn skip(&mut self) {
        let (seen, from) = self.buffer();
        *from = seen.len();
    }

    /// Waits for `needle` after the search start; returns when it was
    /// read and moves the search start past it.
    fn wait_for(&mut self, needle: &[u8], timeout: Duration) -> Result<Instant, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let (seen, from) = self.buffer();
            if let Some(at) = find(&seen[*from..], needle) {
                *from += at + needle.len();
                return Ok(Instant::now());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let problem = match self.read_some(left) {
                Ok(_) if left.is_zero() => format!("timed out after {timeout:?}"),
                Ok(_) => continue,
                Err(e) => e,
            };
            let (seen, _) = self.buffer();
            return Err(format!(
                "waiting for {:?}: {problem}; printed so far: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen[seen.len().saturating_sub(2000)..])
            ));
        }
    }

    /// Reads until nothing came for `quiet`.
    fn settle(&mut self, quiet: Duration) {
        while let Ok(true) = self.read_some(quiet) {}
        self.skip();
    }
}

/// The web terminal as the page drives it: the WebSocket at
/// `/terminal/ws` with alice's cookie and this site's `Origin`.
struct WebTerm {
    ws: tungstenite::WebSocket<TcpStream>,
    seen: Vec<u8>,
    from: usize,
}

impl WebTerm {
    fn open(scene: &Scene) -> Result<WebTerm, String> {
        use tungstenite::client::IntoClientRequest;
        let address = scene.central.address();
        let (cols, rows) = TERM_SIZE;
        let mut request = format!(
            "ws://{address}/terminal/ws?asset=web01&account=deploy&cols={cols}&rows={rows}"
        )
        .into_client_request()
        .map_err(|e| e.to_string())?;
        let headers = request.headers_mut();
        let value = |v: &str| {
            tungstenite::http::HeaderValue::from_str(v).map_err(|e| format!("a header: {e}"))
        };
        headers.insert("Origin", value(&scene.central.url)?);
        headers.insert("Cookie", value(&scene.cookie)?);
        let stream = TcpStream::connect(address).map_err(|e| format!("connect: {e}"))?;
        // As a browser does.
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let (ws, _) = tungstenite::client::client(request, stream)
            .map_err(|e| format!("the terminal's WebSocket handshake: {e}"))?;
        Ok(WebTerm {
            ws,
            seen: Vec::new(),
            from: 0,
        })
    }

    fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

impl Echoes for WebTerm {
    fn buffer(&mut self) -> (&mut Vec<u8>, &mut usize) {
        (&mut self.seen, &mut self.from)
    }

    fn read_some(&mut self, timeout: Duration) -> Result<bool, String> {
        let timeout = timeout.max(Duration::from_millis(1));
        self.ws
            .get_mut()
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        match self.ws.read() {
            Ok(Message::Binary(data)) => {
                self.seen.extend_from_slice(&data);
                Ok(true)
            }
            Ok(Message::Text(text)) => {
                let value: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                if value["type"] == "closed" {
                    Err(format!("the terminal closed: {}", value["message"]))
                } else {
                    Ok(true)
                }
            }
            Ok(Message::Close(_)) => Err("the server closed the socket".into()),
            Ok(_) => Ok(true),
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        let text = serde_json::json!({"type": "input", "data": String::from_utf8_lossy(bytes)})
            .to_string();
        self.ws
            .send(Message::Text(text.into()))
            .expect("a key to the web terminal");
    }
}

/// A client on a pty of its own.
struct Tty {
    child: Child,
    master: File,
    seen: Vec<u8>,
    from: usize,
}

impl Tty {
    fn spawn(command: Command) -> Tty {
        let (cols, rows) = TERM_SIZE;
        let (child, master) =
            jms_e2e::terminal::spawn_on_pty(command, cols, rows).expect("start a client on a pty");
        Tty {
            child,
            master,
            seen: Vec::new(),
            from: 0,
        }
    }

    /// Waits for the client to exit (reading its output), then kills it.
    fn wait_exit(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            if self.read_some(Duration::from_millis(20)).is_err() {
                let _ = jms_e2e::run::wait_until(&mut self.child, deadline);
                break;
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Echoes for Tty {
    fn buffer(&mut self) -> (&mut Vec<u8>, &mut usize) {
        (&mut self.seen, &mut self.from)
    }

    fn read_some(&mut self, timeout: Duration) -> Result<bool, String> {
        let mut pfd = libc::pollfd {
            fd: self.master.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one pollfd we own.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n <= 0 {
            return Ok(false);
        }
        let mut buf = [0u8; 65536];
        match self.master.read(&mut buf) {
            Ok(0) => Err("the client's pty closed".into()),
            Ok(n) => {
                self.seen.extend_from_slice(&buf[..n]);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(format!("the client's pty closed ({e})")),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("typing into the pty");
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------- misc

/// Runs `cmd` (stdin from `input` or empty) and returns (stdout, stderr)
/// when it exits 0.
fn output(cmd: &mut Command, input: Option<&Path>) -> Result<(String, String), String> {
    cmd.stdin(match input {
        Some(p) => Stdio::from(File::open(p).map_err(|e| e.to_string())?),
        None => Stdio::null(),
    });
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        Ok((stdout, stderr))
    } else {
        Err(format!(
            "{}: stdout {:?} stderr {:?}",
            out.status,
            tail(&stdout, 5),
            stderr.trim()
        ))
    }
}

fn command_output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}
