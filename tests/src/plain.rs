//! A plain OpenSSH sshd without any jms piece, for the session benchmarks'
//! baselines: a stock bastion to jump through (`ssh -J`) and a plain login
//! to a shell prompt. It runs like the target host (src/target.rs): in a
//! private mount namespace with private /etc/passwd, /etc/group,
//! /etc/shadow and /etc/pam.d/sshd (pam_unix only, the stack the harness
//! gives a bastion without jms), a private /srv and /run; the host's files
//! are never touched.
//!
//! One account, [`PLAIN_USER`] (shell /bin/bash, home /srv/home/plain),
//! logs in with the key [`PlainSshd::key`]. TCP forwarding is allowed (the
//! default), so it serves as a `-J` jump host. `MaxStartups` is the jms
//! package's (packaging/lib/sshd-startups.conf), as on a jms bastion, so
//! that the baseline takes the same bursts.
//!
//! Also [`raise_max_startups`], which does the same for a running sshd
//! started by the harness (the target of the benchmark's 100 concurrent
//! sessions).

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
use crate::config::{packaged_max_startups, pam_sshd, sshd_has_per_source_penalties};
use crate::namespace::{kill_all_in, mnt_ns_of};
use crate::preflight;
use crate::run::{self, COMMAND_TIMEOUT};

/// The plain sshd's only account.
pub const PLAIN_USER: &str = "plain";
const PLAIN_UID: u32 = 40_300;

const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

const SCRIPT: &str = r#"set -eu
DIR=$1
mount --make-rprivate /
for f in passwd group shadow; do
    mount --bind "$DIR/etc/$f" "/etc/$f"
done
mount --bind "$DIR/etc/pam.d/sshd" /etc/pam.d/sshd
mount --bind "$DIR/srv" /srv
mount -t tmpfs -o mode=0755 jms-bench-plain-run /run
mkdir -m 0755 /run/sshd
exec /usr/sbin/sshd -D -e -f "$DIR/sshd_config"
"#;

/// A running plain sshd.
pub struct PlainSshd {
    dir: Option<TempDir>,
    child: Option<Child>,
    address: String,
    port: u16,
    key: PathBuf,
    mnt_ns: Option<(String, fs::File)>,
}

impl PlainSshd {
    /// Starts it on a free port of `address` (a 127.0.0.0/8 address).
    pub fn start(address: &str) -> PlainSshd {
        preflight::require_system();
        let dir = tempfile::Builder::new()
            .prefix("jms-bench-plain-")
            .tempdir()
            .expect("temp dir for the plain sshd");
        let path = dir.path().to_path_buf();
        let key = write_files(&path);
        let mut last = String::new();
        for _ in 0..3 {
            let port = TcpListener::bind((address, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            write(
                &path.join("sshd_config"),
                &sshd_config(&path, address, port),
            );
            let log_path = path.join("sshd.log");
            let log = fs::File::create(&log_path).expect("plain sshd.log");
            write(&path.join("plain-ns.sh"), SCRIPT);
            let mut child = Command::new("unshare")
                .args(["--mount", "--propagation", "private", "/bin/sh"])
                .arg(path.join("plain-ns.sh"))
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log fd"))
                .stderr(log)
                .spawn()
                .expect("start unshare for the plain sshd");
            let ready = format!("Server listening on {address} port {port}");
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                let text = fs::read_to_string(&log_path).unwrap_or_default();
                if text.contains(&ready) && TcpStream::connect((address, port)).is_ok() {
                    let pid = child.id();
                    let handle = fs::File::open(format!("/proc/{pid}/ns/mnt"))
                        .expect("plain sshd's mount namespace");
                    let ns = mnt_ns_of(pid as i32).expect("plain sshd's mount namespace");
                    assert_ne!(
                        Some(ns.clone()),
                        mnt_ns_of(std::process::id() as i32),
                        "the plain sshd runs in the host's mount namespace"
                    );
                    return PlainSshd {
                        dir: Some(dir),
                        child: Some(child),
                        address: address.to_owned(),
                        port,
                        key,
                        mnt_ns: Some((ns, handle)),
                    };
                }
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("plain sshd exited ({status}):\n{text}");
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    last = format!("plain sshd did not listen within {STARTUP_TIMEOUT:?}:\n{text}");
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
            if !last.contains("Address already in use") {
                break;
            }
        }
        panic!("the plain sshd did not start: {last}");
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pid of the listening sshd (`unshare` and its script exec it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("plain sshd child").id()
    }

    /// The private key [`PLAIN_USER`] logs in with.
    pub fn key(&self) -> &Path {
        &self.key
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("plain sshd dir").path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for PlainSshd {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("---- plain sshd.log ----\n{}", self.log());
        }
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

/// The files; returns the client's private key.
fn write_files(dir: &Path) -> PathBuf {
    for sub in ["etc/pam.d", "srv/home/plain", "srv/keys", "client"] {
        fs::create_dir_all(dir.join(sub)).expect("plain sshd dirs");
    }
    for sub in ["srv", "srv/home", "srv/keys"] {
        fs::set_permissions(dir.join(sub), fs::Permissions::from_mode(0o755)).expect("mode");
    }
    keygen(&dir.join("ssh_host_ed25519_key"), "jms-bench-plain-host");
    let key = dir.join("client/plain");
    keygen(&key, "plain@jms-bench");
    fs::copy(key.with_extension("pub"), dir.join("srv/keys/plain")).expect("authorized key");
    fs::set_permissions(
        dir.join("srv/keys/plain"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("mode");
    std::os::unix::fs::chown(dir.join("srv/home/plain"), Some(PLAIN_UID), Some(PLAIN_UID))
        .expect("chown home");
    let mut passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let mut group = fs::read_to_string("/etc/group").expect("read /etc/group");
    let mut shadow = fs::read_to_string("/etc/shadow").expect("read /etc/shadow");
    for text in [&mut passwd, &mut group, &mut shadow] {
        if !text.ends_with('\n') && !text.is_empty() {
            text.push('\n');
        }
    }
    let _ = writeln!(
        passwd,
        "{PLAIN_USER}:x:{PLAIN_UID}:{PLAIN_UID}:jms-bench plain account:/srv/home/plain:/bin/bash"
    );
    let _ = writeln!(group, "{PLAIN_USER}:x:{PLAIN_UID}:");
    let _ = writeln!(shadow, "{PLAIN_USER}:*:19000:0:99999:7:::");
    write(&dir.join("etc/passwd"), &passwd);
    write(&dir.join("etc/group"), &group);
    write(&dir.join("etc/shadow"), &shadow);
    fs::set_permissions(dir.join("etc/shadow"), fs::Permissions::from_mode(0o600))
        .expect("shadow mode");
    write(&dir.join("etc/pam.d/sshd"), &pam_sshd(None));
    key
}

fn keygen(path: &Path, comment: &str) {
    run::run(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(path),
        b"",
        COMMAND_TIMEOUT,
    )
    .assert_success("ssh-keygen should make a key");
}

fn sshd_config(dir: &Path, address: &str, port: u16) -> String {
    let mut c = format!(
        "# jms-bench plain sshd (no jms)\n\
         Port {port}\n\
         ListenAddress {address}\n\
         AddressFamily inet\n\
         HostKey {dir}/ssh_host_ed25519_key\n\
         PidFile {dir}/sshd.pid\n\
         LogLevel VERBOSE\n\
         UsePAM yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         AuthorizedKeysFile /srv/keys/%u\n\
         StrictModes no\n\
         PermitRootLogin no\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         MaxStartups {max_startups}\n\
         Subsystem sftp internal-sftp\n",
        dir = dir.display(),
        max_startups = packaged_max_startups(),
    );
    if sshd_has_per_source_penalties() {
        c.push_str("PerSourcePenalties no\n");
    }
    c
}

/// Raises `MaxStartups` of a running `sshd -D` (pid `pid`, config file
/// `config`, log `log` where it says `Server listening on ADDRESS port
/// PORT`): the setting goes before everything else in the file (sshd keeps
/// the first value), then SIGHUP makes sshd re-execute itself with it.
/// Sessions already open are not affected. Waits until it listens again.
pub fn raise_max_startups(config: &Path, pid: i32, log: &Path, address: &str, port: u16) {
    let text = fs::read_to_string(config).expect("sshd_config");
    if text.contains("\nMaxStartups ") {
        return;
    }
    write(
        config,
        &format!("MaxStartups {}\n{text}", packaged_max_startups()),
    );
    let ready = format!("Server listening on {address} port {port}");
    let before = fs::read_to_string(log)
        .unwrap_or_default()
        .matches(&ready)
        .count();
    // SAFETY: kill has no memory preconditions; pid is the caller's sshd.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    loop {
        let now = fs::read_to_string(log)
            .unwrap_or_default()
            .matches(&ready)
            .count();
        if now > before && TcpStream::connect((address, port)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sshd {pid} did not listen again after SIGHUP; its log:\n{}",
            fs::read_to_string(log).unwrap_or_default()
        );
        thread::sleep(Duration::from_millis(20));
    }
}
