//! The configuration files of a test bastion: sshd_config, the pam.d/sshd
//! stack, nsswitch.conf, agentd.toml and private local accounts.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use crate::bastion::{write, Lockout, AGENTD_SOCKET, AGENT_IN_NS, JMS_USERS_GROUP};
use crate::preflight::SSHD;
use crate::run::{self, COMMAND_TIMEOUT};

/// The private /etc/pam.d/sshd: the intended pam_jms stack over pam_unix,
/// or pam_unix alone without jms.
pub(crate) fn pam_sshd(pam_module: Option<&Path>) -> String {
    let Some(pam_module) = pam_module else {
        return "auth required pam_unix.so nullok\naccount required pam_unix.so\n\
                session required pam_unix.so\n"
            .to_owned();
    };
    let m = format!("{} socket={AGENTD_SOCKET}", pam_module.display());
    format!(
        "# jms-e2e: the intended pam_jms stack for sshd\n\
         auth     [success=done new_authtok_reqd=done user_unknown=ignore default=die] {m}\n\
         auth     required pam_unix.so try_first_pass nullok\n\
         account  [success=done user_unknown=ignore default=die] {m}\n\
         account  required pam_unix.so\n\
         session  [success=ok user_unknown=ignore ignore=ignore default=bad] {m}\n\
         session  required pam_unix.so\n"
    )
}

/// agentd.toml: the paths of the contract (inside the namespace), the
/// test's policy file and lockout settings.
pub(crate) fn agentd_toml(policy: &Path, lockout: Lockout) -> String {
    let Lockout {
        max_failures,
        window_secs,
        lock_secs,
    } = lockout;
    format!(
        "socket = \"{AGENTD_SOCKET}\"\n\
         state_dir = \"/var/lib/jms\"\n\
         nss_cache = \"/var/cache/jms/nss.db\"\n\
         policy = \"{policy}\"\n\
         authorized_keys_user = \"nobody\"\n\
         timezone = \"UTC\"\n\
         shell = \"{AGENT_IN_NS}\"\n\
         home = \"/\"\n\
         \n\
         [lockout]\n\
         max_failures = {max_failures}\n\
         window_secs = {window_secs}\n\
         lock_secs = {lock_secs}\n",
        policy = policy.display()
    )
}

/// The package's sshd load settings (`packaging/lib/sshd-startups.conf`,
/// which jms-sshd-startups copies into sshd_config.d where the admin has
/// not set them): its `Keyword value` lines, comments left out.
pub const PACKAGED_SSHD_LOAD: &str = include_str!("../../packaging/lib/sshd-startups.conf");

/// The package's settings as sshd_config lines.
pub fn packaged_sshd_load_lines() -> String {
    PACKAGED_SSHD_LOAD
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The package's `MaxStartups` value (`start:rate:full`).
pub fn packaged_max_startups() -> String {
    PACKAGED_SSHD_LOAD
        .lines()
        .find_map(|l| l.trim().strip_prefix("MaxStartups "))
        .expect("packaging/lib/sshd-startups.conf sets MaxStartups")
        .trim()
        .to_owned()
}

/// sshd_config for port `port` on 127.0.0.1 with the files in `dir`; with
/// `jms`, keys from jms-agent and the jms-users Match block, and the
/// package's load settings ([`packaged_sshd_load_lines`]).
pub(crate) fn sshd_config(dir: &Path, port: u16, jms: bool) -> String {
    let mut c = format!(
        "# jms-e2e bastion\n\
         Port {port}\n\
         ListenAddress 127.0.0.1\n\
         AddressFamily inet\n\
         HostKey {dir}/ssh_host_ed25519_key\n\
         PidFile {dir}/sshd.pid\n\
         LogLevel VERBOSE\n\
         UsePAM yes\n\
         KbdInteractiveAuthentication yes\n\
         PasswordAuthentication yes\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin no\n\
         AuthorizedKeysFile none\n\
         PrintMotd no\n\
         PrintLastLog no\n\
         UseDNS no\n\
         Subsystem sftp internal-sftp\n",
        dir = dir.display()
    );
    if sshd_has_per_source_penalties() {
        // OpenSSH ≥ 9.8 would otherwise refuse 127.0.0.1 after the
        // failures the tests provoke on purpose.
        c.push_str("PerSourcePenalties no\n");
    }
    if jms {
        c.push_str(&packaged_sshd_load_lines());
        let _ = write!(
            c,
            "AuthorizedKeysCommand {AGENT_IN_NS} authorized-keys %u\n\
             AuthorizedKeysCommandUser nobody\n\
             Match Group {JMS_USERS_GROUP}\n\
             \x20   ForceCommand {AGENT_IN_NS}\n\
             \x20   DisableForwarding yes\n\
             \x20   PermitTTY yes\n"
        );
    }
    c
}

/// The system user session workers run as inside a test bastion (what the
/// package creates as `jms-session`), and its uid and gid.
pub const WORKER_USER: &str = "jms-session";
pub const WORKER_ID: u32 = 40_090;

/// Private /etc/passwd, /etc/group and /etc/shadow in `dir/etc`: the
/// host's entries plus `users` (name, password), shell /bin/sh, home /;
/// with `worker`, the session workers' system user too (no shell, no home).
pub(crate) fn write_local_accounts(dir: &Path, users: &[(String, String)], worker: bool) {
    let mut passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let mut group = fs::read_to_string("/etc/group").expect("read /etc/group");
    let mut shadow = fs::read_to_string("/etc/shadow").expect("read /etc/shadow");
    if worker {
        for text in [&mut passwd, &mut group, &mut shadow] {
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
        }
        let id = WORKER_ID;
        let _ = writeln!(
            passwd,
            "{WORKER_USER}:x:{id}:{id}:jms session workers:/nonexistent:/usr/sbin/nologin"
        );
        let _ = writeln!(group, "{WORKER_USER}:x:{id}:");
        let _ = writeln!(shadow, "{WORKER_USER}:!:19000:0:99999:7:::");
    }
    for (i, (name, password)) in users.iter().enumerate() {
        let id = 40_100 + i;
        let hash = sha512_crypt(password, &format!("jmse2e{i:02}"));
        for text in [&mut passwd, &mut group, &mut shadow] {
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
        }
        let _ = writeln!(passwd, "{name}:x:{id}:{id}:jms-e2e local account:/:/bin/sh");
        let _ = writeln!(group, "{name}:x:{id}:");
        let _ = writeln!(shadow, "{name}:{hash}:19000:0:99999:7:::");
    }
    write(&dir.join("etc/passwd"), &passwd);
    write(&dir.join("etc/group"), &group);
    write(&dir.join("etc/shadow"), &shadow);
    fs::set_permissions(dir.join("etc/shadow"), fs::Permissions::from_mode(0o600))
        .expect("shadow mode");
}

/// The host's nsswitch.conf with passwd/group through jms (when `jms`) and
/// shadow through files only.
pub(crate) fn nsswitch_conf(jms: bool) -> String {
    let host = fs::read_to_string("/etc/nsswitch.conf").unwrap_or_else(|_| {
        "hosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n".to_owned()
    });
    let source = if jms { "files jms" } else { "files" };
    let mut out = String::from("# jms-e2e private nsswitch.conf\n");
    let _ = writeln!(
        out,
        "passwd: {source}\ngroup: {source}\nshadow: files\ngshadow: files"
    );
    for line in host.lines() {
        let key = line.split(':').next().unwrap_or("").trim();
        if !["passwd", "group", "shadow", "gshadow"].contains(&key) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A SHA-512 crypt hash (`$6$…`) through the C library, via perl (part of
/// every Debian system).
pub(crate) fn sha512_crypt(password: &str, salt: &str) -> String {
    let out = run::run(
        Command::new("perl")
            .args(["-e", "print crypt(<STDIN>, $ARGV[0])"])
            .arg(format!("$6${salt}$")),
        password.as_bytes(),
        COMMAND_TIMEOUT,
    );
    out.assert_success("perl crypt should hash the local password");
    assert!(
        out.stdout.starts_with("$6$"),
        "crypt gave no SHA-512 hash: {out}"
    );
    out.stdout
}

pub(crate) fn sshd_has_per_source_penalties() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    *SUPPORTED.get_or_init(|| {
        // `sshd -t` names an unknown keyword in its complaint (it may fail
        // for other reasons on the host, e.g. no /run/sshd: those don't count).
        let dir = tempfile::tempdir().expect("probe dir");
        let key = dir.path().join("key");
        let _ = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key)
            .output();
        let config = dir.path().join("sshd_config");
        write(
            &config,
            &format!("HostKey {}\nPerSourcePenalties no\n", key.display()),
        );
        Command::new(SSHD)
            .arg("-t")
            .arg("-f")
            .arg(&config)
            .output()
            .map(|o| !String::from_utf8_lossy(&o.stderr).contains("PerSourcePenalties"))
            .unwrap_or(false)
    })
}
