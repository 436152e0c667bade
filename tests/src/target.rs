//! A target host for session tests: a real OpenSSH sshd on 127.0.0.2 (a
//! loopback address of its own, so it never mixes with a bastion on
//! 127.0.0.1; [`Target::start_at`] takes another, for many targets) in a private mount namespace made by `unshare -m` and
//! `harness/target-ns.sh`, with private /etc/passwd, /etc/group and
//! /etc/shadow holding its accounts — the host's user database is never
//! touched — and a private /srv that the test can inspect from outside
//! ([`Target::srv`]): homes, authorized keys and marker files.
//!
//! Accounts: `root` (password [`ROOT_PASSWORD`], via the private shadow),
//! `deploy` (password [`DEPLOY_PASSWORD`]) and `keyuser` (public key only,
//! [`Target::keyuser_key`]), and two sudo users: `opsnp` (sudo without a
//! password) and `opspw` (sudo asks for its password), passwords
//! [`SUDO_NOPASSWD_PASSWORD`] and [`SUDO_PASSWORD`]; shells are /bin/bash,
//! homes /srv/home/NAME. /etc is an overlay private to the target
//! (harness/target-ns.sh): its useradd, chpasswd and visudo write there.
//! [`Target::inside`] runs a command in the target's namespace.
//! Dropping the [`Target`] kills every process of its namespace.

use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::bastion::write;
use crate::config::{sha512_crypt, sshd_has_per_source_penalties};
use crate::namespace::{kill_all_in, mnt_ns_of};
use crate::preflight;
use crate::run::{self, COMMAND_TIMEOUT};

/// The target's loopback address.
pub const TARGET_ADDRESS: &str = "127.0.0.2";
pub const ROOT_PASSWORD: &str = "target-root-pw-1";
pub const DEPLOY_PASSWORD: &str = "target-deploy-pw-1";
/// Password of `opsnp` (sudo without a password).
pub const SUDO_NOPASSWD_PASSWORD: &str = "target-opsnp-pw-1";
/// Password of `opspw` (sudo asks for it).
pub const SUDO_PASSWORD: &str = "target-opspw-pw-1";
/// uid of `deploy` (`keyuser` is the next one).
pub const DEPLOY_UID: u32 = 40_200;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// A running target host.
pub struct Target {
    address: String,
    dir: Option<TempDir>,
    child: Option<Child>,
    port: u16,
    mnt_ns: Option<(String, fs::File)>,
    keyuser_key: String,
}

impl Target {
    /// Starts a target with the standard accounts on a free port.
    pub fn start() -> Target {
        Target::start_at(TARGET_ADDRESS)
    }

    /// [`Target::start`] listening on `address` (another 127.0.0.0/8
    /// address: several targets at once, each a host of its own).
    pub fn start_at(address: &str) -> Target {
        preflight::require_system();
        let dir = tempfile::Builder::new()
            .prefix("jms-e2e-target-")
            .tempdir()
            .expect("temp dir for the target");
        let path = dir.path().to_path_buf();
        let keyuser_key = write_files(&path);
        let mut target = Target {
            address: address.to_owned(),
            dir: Some(dir),
            child: None,
            port: 0,
            mnt_ns: None,
            keyuser_key,
        };
        target.launch(None);
        target
    }

    /// The sshd port on [`Target::address`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its listening address ([`TARGET_ADDRESS`] unless started elsewhere).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The test's directory.
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("target dir").path()
    }

    /// What the target sees as /srv (marker files land here).
    pub fn srv(&self) -> PathBuf {
        self.dir().join("srv")
    }

    /// The host's public key line (`ssh-ed25519 AAAA…`), for pinning.
    pub fn host_key(&self) -> String {
        let text = fs::read_to_string(self.dir().join("ssh_host_ed25519_key.pub"))
            .expect("target host key");
        let mut parts = text.split_whitespace();
        format!(
            "{} {}",
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default()
        )
    }

    /// `keyuser`'s private key (OpenSSH format), for the policy's vault.
    pub fn keyuser_key(&self) -> &str {
        &self.keyuser_key
    }

    /// Runs `script` with `sh -c` as root inside the target's mount
    /// namespace (its /etc, /home, /srv); its output and status.
    pub fn inside(&self, script: &str) -> run::Outcome {
        let pid = self.child.as_ref().expect("a running target").id();
        run::run(
            Command::new("nsenter")
                .arg("--mount")
                .arg(format!("--target={pid}"))
                .args(["--", "/bin/sh", "-c", script]),
            b"",
            COMMAND_TIMEOUT,
        )
    }

    /// sshd's log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }

    /// Restarts sshd on the same port with a newly generated host key (a
    /// reinstalled host, or a man in the middle).
    pub fn replace_host_key(&mut self) {
        self.stop();
        let dir = self.dir().to_path_buf();
        let _ = fs::remove_file(dir.join("ssh_host_ed25519_key"));
        let _ = fs::remove_file(dir.join("ssh_host_ed25519_key.pub"));
        host_key(&dir);
        let port = self.port;
        self.launch(Some(port));
    }

    fn launch(&mut self, port: Option<u16>) {
        let dir = self.dir().to_path_buf();
        let mut last = String::new();
        for _ in 0..3 {
            let port = port.unwrap_or_else(|| free_port(&self.address));
            write(
                &dir.join("sshd_config"),
                &sshd_config(&dir, &self.address, port),
            );
            let log_path = dir.join("sshd.log");
            let log = fs::File::create(&log_path).expect("target sshd.log");
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/target-ns.sh");
            let mut child = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "/bin/sh"])
                .arg(&script)
                .arg(&dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("start unshare for the target");
            let ready = format!("Server listening on {} port {port}", self.address);
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                if text.contains(&ready)
                    && TcpStream::connect((self.address.as_str(), port)).is_ok()
                {
                    self.port = port;
                    let pid = child.id();
                    self.child = Some(child);
                    let handle =
                        fs::File::open(format!("/proc/{pid}/ns/mnt")).expect("target mount ns");
                    let ns = mnt_ns_of(pid as i32).expect("target mount ns");
                    assert_ne!(
                        Some(ns.clone()),
                        fs::read_link("/proc/self/ns/mnt")
                            .ok()
                            .map(|p| p.to_string_lossy().into_owned()),
                        "the target sshd runs in the host's mount namespace"
                    );
                    self.mnt_ns = Some((ns, handle));
                    return;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("target sshd exited ({status}):\n{text}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last =
                        format!("target sshd did not listen within {STARTUP_TIMEOUT:?}:\n{text}");
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if !last.contains("Address already in use") || port_is_fixed(port) {
                break;
            }
        }
        panic!("the target did not start: {last}");
    }

    /// Kills every process of the target's namespace.
    fn stop(&mut self) {
        if let Some((ns, _)) = &self.mnt_ns {
            kill_all_in(ns, self.child.as_mut(), || {});
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.mnt_ns = None;
    }
}

fn port_is_fixed(_port: u16) -> bool {
    false
}

impl Drop for Target {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- target sshd.log ----\n{}", self.log());
        }
        self.stop();
        if std::env::var_os("JMS_E2E_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("jms-e2e: kept {}", dir.keep().display());
            }
        }
    }
}

fn host_key(dir: &Path) {
    run::run(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "jms-e2e-target",
                "-f",
            ])
            .arg(dir.join("ssh_host_ed25519_key")),
        b"",
        COMMAND_TIMEOUT,
    )
    .assert_success("ssh-keygen should make the target's host key");
}

/// The target's files; returns keyuser's private key.
fn write_files(dir: &Path) -> String {
    host_key(dir);
    let srv = dir.join("srv");
    for sub in [
        "etc/sudoers.d",
        "srv/home/deploy",
        "srv/home/keyuser",
        "srv/home/opsnp",
        "srv/home/opspw",
        "srv/keys",
    ] {
        fs::create_dir_all(dir.join(sub)).expect("target dirs");
    }
    for sub in ["srv", "srv/home", "srv/keys"] {
        fs::set_permissions(dir.join(sub), fs::Permissions::from_mode(0o755)).expect("mode");
    }
    // keyuser's key pair: the public half authorized on the target, the
    // private half for the bastion's vault.
    let key = dir.join("keyuser_key");
    run::run(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "keyuser@jms-e2e",
                "-f",
            ])
            .arg(&key),
        b"",
        COMMAND_TIMEOUT,
    )
    .assert_success("ssh-keygen should make keyuser's key");
    fs::copy(key.with_extension("pub"), srv.join("keys/keyuser")).expect("authorized key");
    fs::set_permissions(srv.join("keys/keyuser"), fs::Permissions::from_mode(0o644)).expect("mode");

    let mut passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let mut group = fs::read_to_string("/etc/group").expect("read /etc/group");
    let shadow_host = fs::read_to_string("/etc/shadow").expect("read /etc/shadow");
    let mut shadow: String = shadow_host
        .lines()
        .filter(|l| !l.starts_with("root:"))
        .map(|l| format!("{l}\n"))
        .collect();
    let _ = writeln!(
        shadow,
        "root:{}:19000:0:99999:7:::",
        sha512_crypt(ROOT_PASSWORD, "jmstgt00")
    );
    for text in [&mut passwd, &mut group] {
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    for (i, (name, password)) in [
        ("deploy", Some(DEPLOY_PASSWORD)),
        ("keyuser", None),
        ("opsnp", Some(SUDO_NOPASSWD_PASSWORD)),
        ("opspw", Some(SUDO_PASSWORD)),
    ]
    .into_iter()
    .enumerate()
    {
        let id = DEPLOY_UID as usize + i;
        let _ = writeln!(
            passwd,
            "{name}:x:{id}:{id}:jms-e2e target account:/srv/home/{name}:/bin/bash"
        );
        let _ = writeln!(group, "{name}:x:{id}:");
        let hash = match password {
            Some(p) => sha512_crypt(p, &format!("jmstgt{i:02}")),
            None => "*".to_owned(),
        };
        let _ = writeln!(shadow, "{name}:{hash}:19000:0:99999:7:::");
        let home = srv.join("home").join(name);
        std::os::unix::fs::chown(&home, Some(id as u32), Some(id as u32)).expect("chown home");
    }
    // The sudo users' rules (the host's /etc/sudoers includes sudoers.d).
    let sudoers = dir.join("etc/sudoers.d/e2e-target");
    write(
        &sudoers,
        "opsnp ALL=(ALL:ALL) NOPASSWD: ALL\nopspw ALL=(ALL:ALL) ALL\n",
    );
    fs::set_permissions(&sudoers, fs::Permissions::from_mode(0o440)).expect("sudoers mode");
    write(&dir.join("etc/passwd"), &passwd);
    write(&dir.join("etc/group"), &group);
    write(&dir.join("etc/shadow"), &shadow);
    fs::set_permissions(dir.join("etc/shadow"), fs::Permissions::from_mode(0o600))
        .expect("shadow mode");
    fs::read_to_string(&key).expect("keyuser's private key")
}

fn sshd_config(dir: &Path, address: &str, port: u16) -> String {
    let mut c = format!(
        "# jms-e2e target\n\
         Port {port}\n\
         ListenAddress {address}\n\
         AddressFamily inet\n\
         HostKey {dir}/ssh_host_ed25519_key\n\
         PidFile {dir}/sshd.pid\n\
         LogLevel VERBOSE\n\
         UsePAM no\n\
         PasswordAuthentication yes\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         AuthorizedKeysFile /srv/keys/%u .ssh/authorized_keys\n\
         StrictModes no\n\
         PermitRootLogin yes\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         Subsystem sftp internal-sftp\n",
        dir = dir.display()
    );
    if sshd_has_per_source_penalties() {
        c.push_str("PerSourcePenalties no\n");
    }
    c
}

fn free_port(address: &str) -> u16 {
    TcpListener::bind((address, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port on the target address")
        .port()
}
