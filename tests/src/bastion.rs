//! One jms bastion for one test: a real sshd on a free loopback port, with
//! jms-agentd, pam_jms and nss_jms, inside a private mount namespace made by
//! `unshare -m` and `harness/bastion-ns.sh`. Dropping the [`Bastion`] kills
//! every process of the namespace (so its mounts vanish) and, when the test
//! is failing, prints sshd's and agentd's logs.
//!
//! Each bastion has its own temp dir, port and namespace: tests run in
//! parallel. Set `JMS_E2E_KEEP=1` to keep the temp dirs for inspection.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::config;
use crate::namespace::{kill_all_in, mnt_ns_of};
use crate::preflight::{self, Artifacts};
use crate::run::{self, wait_until, Outcome, COMMAND_TIMEOUT};

/// Where agentd listens inside the namespace (its default, which pam_jms
/// and `jms-agent` also use).
pub const AGENTD_SOCKET: &str = "/run/jms/agentd.sock";
/// The agent binary as sshd and NSS see it inside the namespace.
pub const AGENT_IN_NS: &str = "/run/jms-e2e/bin/jms-agent";
/// The primary group of every jms user (sshd's `Match Group`).
pub const JMS_USERS_GROUP: &str = "jms-users";

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// Lockout settings written to agentd.toml.
#[derive(Debug, Clone, Copy)]
pub struct Lockout {
    pub max_failures: u32,
    pub window_secs: u64,
    pub lock_secs: u64,
}

impl Default for Lockout {
    fn default() -> Self {
        Lockout {
            max_failures: 5,
            window_secs: 900,
            lock_secs: 1800,
        }
    }
}

/// A client key pair made with ssh-keygen in the test's dir.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub private: PathBuf,
    /// The `.pub` line, for the policy's `public_keys`.
    pub public: String,
}

/// Prepares a bastion: files first, then [`BastionBuilder::start`].
pub struct BastionBuilder {
    dir: TempDir,
    artifacts: Option<Artifacts>,
    policy: String,
    lockout: Lockout,
    /// (name, password) of accounts only the namespace's private
    /// /etc/passwd, /etc/group and /etc/shadow hold.
    local_users: Vec<(String, String)>,
    /// TOML appended to agentd.toml (whole tables, e.g. `[sessions]`).
    agentd_extra: String,
}

impl BastionBuilder {
    /// A bastion with jms (checks root, tools and the built artifacts).
    pub fn new() -> Self {
        let artifacts = preflight::require_all();
        Self::with(Some(artifacts))
    }

    /// sshd with local accounts only: the harness's check of its own
    /// namespace setup, independent of every jms piece.
    pub fn without_jms() -> Self {
        preflight::require_system();
        Self::with(None)
    }

    fn with(artifacts: Option<Artifacts>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("jms-e2e-")
            .tempdir()
            .expect("temp dir for the bastion");
        BastionBuilder {
            dir,
            artifacts,
            policy: "users: []\n".to_owned(),
            lockout: Lockout::default(),
            local_users: Vec::new(),
            agentd_extra: String::new(),
        }
    }

    /// The test's directory (keys and files can be put here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs these jms binaries instead of this build's (the session
    /// benchmark's baseline bastion).
    pub fn artifacts(mut self, artifacts: Artifacts) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// The jms policy (YAML) agentd loads.
    pub fn policy(mut self, yaml: &str) -> Self {
        self.policy = yaml.to_owned();
        self
    }

    /// Appends these TOML tables to agentd.toml (e.g.
    /// `"[sessions]\nworker_memory_max_bytes = 200000000\n"`).
    pub fn agentd_extra(mut self, toml: &str) -> Self {
        self.agentd_extra.push_str(toml);
        self
    }

    pub fn lockout(mut self, lockout: Lockout) -> Self {
        self.lockout = lockout;
        self
    }

    /// Adds a local account (private to the namespace) with this password,
    /// shell /bin/sh and home /.
    pub fn local_user(mut self, name: &str, password: &str) -> Self {
        self.local_users
            .push((name.to_owned(), password.to_owned()));
        self
    }

    /// Makes an ed25519 client key pair `keys/NAME` in the test's dir.
    pub fn client_key(&self, name: &str) -> ClientKey {
        let keys = self.dir().join("keys");
        fs::create_dir_all(&keys).expect("keys dir");
        let private = keys.join(name);
        run::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C"])
                .arg(format!("{name}@jms-e2e"))
                .arg("-f")
                .arg(&private),
            b"",
            COMMAND_TIMEOUT,
        )
        .assert_success("ssh-keygen should make a client key");
        let public = fs::read_to_string(private.with_extension("pub"))
            .expect("public key file")
            .trim()
            .to_owned();
        ClientKey { private, public }
    }

    /// Writes the configuration, starts the namespace, agentd and sshd,
    /// and waits until sshd listens. Panics (with the logs) if it does not.
    pub fn start(self) -> Bastion {
        let dir = self.dir.path().to_path_buf();
        self.write_files(&dir);
        let mut last_log = String::new();
        for _attempt in 0..3 {
            let port = free_port();
            write(
                &dir.join("sshd_config"),
                &config::sshd_config(&dir, port, self.jms()),
            );
            match launch(&dir, port, self.artifacts.as_ref()) {
                Ok(child) => {
                    let mut bastion = Bastion {
                        dir: Some(self.dir),
                        child: Some(child),
                        port,
                        mnt_ns: String::new(),
                        mnt_ns_handle: None,
                        artifacts: self.artifacts,
                        agentd_children: Mutex::new(Vec::new()),
                    };
                    bastion.hold_mnt_ns();
                    return bastion;
                }
                Err(log) if log.contains("Address already in use") => last_log = log,
                Err(log) => panic!("the bastion did not start:\n{log}"),
            }
        }
        panic!("no free port for sshd after 3 attempts:\n{last_log}");
    }

    fn write_files(&self, dir: &Path) {
        for sub in [
            "etc/pam.d",
            "lib",
            "varlib/jms",
            "state",
            "varcache/jms",
            "cache",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("bastion dirs");
        }
        fs::set_permissions(dir.join("state"), fs::Permissions::from_mode(0o700))
            .expect("state dir mode");
        write(
            &dir.join("etc/nsswitch.conf"),
            &config::nsswitch_conf(self.jms()),
        );
        let pam_module = self.artifacts.as_ref().map(|a| a.pam_module.as_path());
        write(&dir.join("etc/pam.d/sshd"), &config::pam_sshd(pam_module));
        if !self.local_users.is_empty() || self.jms() {
            // With jms, the session workers' user exists in the
            // namespace's private passwd and group (never the host's).
            config::write_local_accounts(dir, &self.local_users, self.jms());
        }
        run::run(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(dir.join("ssh_host_ed25519_key")),
            b"",
            COMMAND_TIMEOUT,
        )
        .assert_success("ssh-keygen should make the host key");
        fs::write(dir.join("agentd.log"), "").expect("agentd.log");
        if let Some(artifacts) = &self.artifacts {
            fs::copy(&artifacts.nss_module, dir.join("lib/libnss_jms.so.2"))
                .expect("copy libnss_jms.so into the overlay layer");
            write_private(&dir.join("policy.yaml"), &self.policy);
            write(
                &dir.join("agentd.toml"),
                &(config::agentd_toml(&dir.join("policy.yaml"), self.lockout) + &self.agentd_extra),
            );
        }
    }

    fn jms(&self) -> bool {
        self.artifacts.is_some()
    }
}

impl Default for BastionBuilder {
    fn default() -> Self {
        Self::new()
    }
}

/// A running bastion. Client helpers are in [`crate::clients`].
pub struct Bastion {
    dir: Option<TempDir>,
    child: Option<Child>,
    port: u16,
    mnt_ns: String,
    /// Held open while the bastion lives: a namespace that is referenced
    /// cannot be freed, so its inode number (what `mnt_ns` says) cannot be
    /// reused by another test's namespace before the teardown is over.
    mnt_ns_handle: Option<fs::File>,
    pub(crate) artifacts: Option<Artifacts>,
    agentd_children: Mutex<Vec<Child>>,
}

impl Bastion {
    /// sshd's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("bastion dir").path()
    }

    /// sshd's log (with the namespace script's messages).
    pub fn sshd_log(&self) -> String {
        fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }

    /// jms-agentd's log (all its runs).
    pub fn agentd_log(&self) -> String {
        fs::read_to_string(self.dir().join("agentd.log")).unwrap_or_default()
    }

    /// The pid of sshd, which holds the namespace.
    pub fn sshd_pid(&self) -> u32 {
        self.child.as_ref().expect("sshd child").id()
    }

    /// A command that runs `program` inside the bastion's mount namespace.
    pub fn ns_command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(self.sshd_pid().to_string())
            .args(["--mount", "--", program]);
        cmd
    }

    /// Runs `args` inside the namespace with empty input.
    pub fn ns_run(&self, args: &[&str]) -> Outcome {
        let (program, rest) = args.split_first().expect("a program to run");
        run::run(self.ns_command(program).args(rest), b"", COMMAND_TIMEOUT)
    }

    /// Replaces the policy file and makes agentd reload it (SIGHUP), then
    /// waits `settle` for the reload to take effect.
    pub fn reload_policy(&self, yaml: &str, settle: Duration) {
        write_private(&self.dir().join("policy.yaml"), yaml);
        let pid = self.agentd_pid().expect("agentd is running");
        signal(pid, libc::SIGHUP);
        thread::sleep(settle);
    }

    /// The pid of the running agentd, if one runs.
    pub fn agentd_pid(&self) -> Option<i32> {
        let pid: i32 = fs::read_to_string(self.dir().join("agentd.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        is_running(pid).then_some(pid)
    }

    /// Stops agentd (SIGKILL: a crash, the worst case) and waits until it
    /// is gone. pam_jms must then answer PAM_AUTHINFO_UNAVAIL for jms users.
    pub fn kill_agentd(&self) {
        let pid = self.agentd_pid().expect("agentd should be running");
        signal(pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while is_running(pid) {
            assert!(Instant::now() < deadline, "agentd {pid} did not die");
            thread::sleep(Duration::from_millis(10));
        }
        self.reap_agentd_children();
    }

    /// Starts agentd again in the namespace (after [`Bastion::kill_agentd`])
    /// and waits for its socket.
    pub fn restart_agentd(&self) {
        let artifacts = self.artifacts.as_ref().expect("a bastion with jms");
        self.ns_run(&["rm", "-f", AGENTD_SOCKET])
            .assert_success("removing the old agentd socket");
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir().join("agentd.log"))
            .expect("agentd.log");
        let _ = std::io::Write::write_all(
            &mut &log,
            b"==== jms-e2e: agentd restarted by the test ====\n",
        );
        let child = self
            .ns_command(&artifacts.agentd.to_string_lossy())
            .arg("--config")
            .arg(self.dir().join("agentd.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start agentd in the namespace");
        write(&self.dir().join("agentd.pid"), &format!("{}\n", child.id()));
        let pid = child.id() as i32;
        self.agentd_children.lock().expect("lock").push(child);
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if self.ns_run(&["test", "-S", AGENTD_SOCKET]).success() {
                return;
            }
            assert!(
                is_running(pid),
                "restarted agentd exited; its log:\n{}",
                self.agentd_log()
            );
            assert!(Instant::now() < deadline, "restarted agentd made no socket");
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn reap_agentd_children(&self) {
        reap_all(&self.agentd_children);
    }

    fn hold_mnt_ns(&mut self) {
        let pid = self.sshd_pid();
        let handle = fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("sshd's mount namespace");
        let ns = mnt_ns_of(pid as i32).expect("sshd's mount namespace");
        let own = fs::read_link("/proc/self/ns/mnt").expect("own mount namespace");
        assert_ne!(
            ns,
            own.to_string_lossy(),
            "sshd runs in the host's mount namespace: unshare did not isolate it"
        );
        self.mnt_ns = ns;
        self.mnt_ns_handle = Some(handle);
    }

    fn print_logs(&self) {
        eprintln!(
            "==== jms-e2e bastion on 127.0.0.1:{} in {} ====",
            self.port,
            self.dir().display()
        );
        for name in ["sshd.log", "agentd.log"] {
            let text = fs::read_to_string(self.dir().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(300);
            eprintln!("---- {name} (last {} lines) ----", lines.len() - from);
            for line in &lines[from..] {
                eprintln!("{line}");
            }
        }
        eprintln!("==== end of bastion logs ====");
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        if thread::panicking() {
            self.print_logs();
        }
        // Every process of the namespace: sshd, agentd, sessions, helpers.
        // Only once the namespace is known to differ from ours.
        if !self.mnt_ns.is_empty() {
            let agentd_children = &self.agentd_children;
            kill_all_in(&self.mnt_ns, self.child.as_mut(), || {
                reap_all(agentd_children)
            });
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Now the namespace may go (and its mounts with it).
        self.mnt_ns_handle = None;
        for mut child in self.agentd_children.lock().expect("lock").drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::env::var_os("JMS_E2E_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("jms-e2e: kept {}", dir.keep().display());
            }
        }
    }
}

/// Spawns the namespace and waits until sshd listens on `port`; on failure
/// returns the log.
fn launch(dir: &Path, port: u16, artifacts: Option<&Artifacts>) -> Result<Child, String> {
    let log_path = dir.join("sshd.log");
    let log = fs::File::create(&log_path).expect("sshd.log");
    let _ = fs::remove_file(dir.join("agentd.pid"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/bastion-ns.sh");
    let (agentd, agent) = match artifacts {
        Some(a) => (a.agentd.clone(), a.agent.clone()),
        None => (PathBuf::from("-"), PathBuf::from("-")),
    };
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "/bin/sh"])
        .arg(&script)
        .arg(dir)
        .arg(preflight::libc_dir())
        .arg(agentd)
        .arg(agent)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log fd"))
        .stderr(log)
        .spawn()
        .expect("start unshare");
    let ready = format!("Server listening on 127.0.0.1 port {port}");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let problem = loop {
        let text = fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains(&ready) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if let Ok(Some(status)) = child.try_wait() {
            break format!("the namespace script / sshd exited ({status})");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = wait_until(&mut child, Instant::now() + Duration::from_secs(5));
            break format!("sshd did not listen on port {port} within {STARTUP_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    // agentd may have started before sshd failed: it must not outlive us.
    if let Some(pid) = fs::read_to_string(dir.join("agentd.pid"))
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let own = fs::read_link("/proc/self/ns/mnt").ok();
        let theirs = mnt_ns_of(pid);
        if is_running(pid)
            && theirs.is_some()
            && theirs.as_deref() != own.as_ref().and_then(|p| p.to_str())
        {
            signal(pid, libc::SIGKILL);
        }
    }
    Err(format!(
        "{problem}.\n---- sshd.log ----\n{}\n---- agentd.log ----\n{}",
        fs::read_to_string(&log_path).unwrap_or_default(),
        fs::read_to_string(dir.join("agentd.log")).unwrap_or_default()
    ))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// Alive and not a zombie.
fn is_running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Reaps whichever of `children` have exited.
fn reap_all(children: &Mutex<Vec<Child>>) {
    for child in children.lock().expect("lock").iter_mut() {
        let _ = child.try_wait();
    }
}

fn signal(pid: i32, sig: libc::c_int) {
    // SAFETY: kill has no memory preconditions; the pid is one of ours.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Writes a file only root may read (agentd refuses a readable policy).
fn write_private(path: &Path, text: &str) {
    write(path, text);
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub(crate) fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
