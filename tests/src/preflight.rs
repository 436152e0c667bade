//! What the suite needs before it starts anything: root, the system tools
//! and the freshly built jms artifacts. A missing piece fails the test with
//! a message saying what to install or build — the suite never skips.

use std::path::{Path, PathBuf};

/// System programs the harness and the tests run.
const TOOLS: &[(&str, &str)] = &[
    ("unshare", "util-linux"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("mount", "mount"),
    ("getent", "libc-bin"),
    ("pamtester", "pamtester"),
    ("sshpass", "sshpass"),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("perl", "perl-base"),
    ("sqlite3", "sqlite3"),
];

/// The sshd the suite drives (absolute path: sshd re-executes itself).
pub const SSHD: &str = "/usr/sbin/sshd";

/// Paths of the jms artifacts under test.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub agentd: PathBuf,
    pub agent: PathBuf,
    pub pam_module: PathBuf,
    pub nss_module: PathBuf,
}

/// Checks root, the tools and the jms artifacts; panics with every missing
/// piece listed.
pub fn require_all() -> Artifacts {
    check(true);
    artifacts()
}

/// Checks root and the tools only (the harness's own check without jms).
pub fn require_system() {
    check(false);
}

fn check(with_jms: bool) {
    let mut missing = Vec::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        missing.push(
            "root: the suite mounts in a private namespace and runs sshd (run the tests as root)"
                .to_owned(),
        );
    }
    for (tool, package) in TOOLS {
        if find_in_path(tool).is_none() {
            missing.push(format!("`{tool}` (Debian package {package})"));
        }
    }
    if !Path::new(SSHD).is_file() {
        missing.push(format!("{SSHD} (Debian package openssh-server)"));
    }
    if !user_exists("sshd") {
        missing.push("the `sshd` privilege-separation user (created by openssh-server)".into());
    }
    if !Path::new("/etc/pam.d/sshd").is_file() {
        missing.push("/etc/pam.d/sshd to bind-mount over (openssh-server)".into());
    }
    let artifacts = artifacts();
    let wanted = if with_jms { 4 } else { 0 };
    for path in [
        &artifacts.agentd,
        &artifacts.agent,
        &artifacts.pam_module,
        &artifacts.nss_module,
    ]
    .into_iter()
    .take(wanted)
    {
        if !path.is_file() {
            missing.push(format!(
                "{} (build it first: `cargo build --workspace`)",
                path.display()
            ));
        }
    }
    assert!(
        missing.is_empty(),
        "jms-e2e cannot run; missing:\n  - {}\n(CI installs the packages in .ci/run; the suite never skips)",
        missing.join("\n  - ")
    );
}

/// The build directory of the running test binary's profile
/// (`target/debug` for `target/debug/deps/<test>-<hash>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test binary");
    let deps = exe.parent().expect("test binary has a directory");
    match deps.file_name() {
        Some(name) if name == "deps" => deps.parent().expect("deps has a parent").to_path_buf(),
        _ => deps.to_path_buf(),
    }
}

/// Where the jms artifacts are expected.
pub fn artifacts() -> Artifacts {
    let dir = profile_dir();
    Artifacts {
        agentd: dir.join("jms-agentd"),
        agent: dir.join("jms-agent"),
        pam_module: dir.join("libpam_jms.so"),
        nss_module: dir.join("libnss_jms.so"),
    }
}

/// `name` found in PATH or the sbin directories.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found
}

/// Whether the host's passwd database knows `name`.
pub fn user_exists(name: &str) -> bool {
    std::process::Command::new("getent")
        .args(["passwd", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The directory that holds the C library (where glibc looks for NSS
/// modules), resolved through symlinks such as `/lib -> usr/lib`.
pub fn libc_dir() -> PathBuf {
    let candidates = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/lib/x86_64-linux-gnu",
        "/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/lib64",
    ];
    candidates
        .iter()
        .map(Path::new)
        .find(|dir| dir.join("libc.so.6").exists())
        .map(|dir| dir.canonicalize().expect("canonical libc dir"))
        .expect("no directory with libc.so.6 among the usual multiarch paths")
}
