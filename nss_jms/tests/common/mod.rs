//! Shared by the integration test and the benchmark: finding (and if need
//! be building) `libnss_jms.so`, and running commands in a private mount
//! namespace where glibc sees it as `libnss_jms.so.2`, a private
//! nsswitch.conf and a private `/var/cache/jms/nss.db`.
//!
//! Nothing on the host changes: everything lives in a temp dir under /tmp
//! and is bind- or overlay-mounted inside `unshare -m` only.

#![allow(dead_code)]

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::SystemTime;

use jms_core::nss_cache::DEFAULT_NSS_CACHE_PATH;

/// Panics (the test fails) unless we are root and `unshare -m` works.
pub fn require_root_and_unshare() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (it mounts inside `unshare -m` to load libnss_jms.so.2 without touching the host); run it as root"
    );
    let probe = Command::new("unshare")
        .args(["-m", "--propagation", "private", "true"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run `unshare` (util-linux): {e}"));
    assert!(
        probe.status.success(),
        "`unshare -m true` failed ({}): this test needs mount namespaces: {}",
        probe.status,
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// `target/<profile>` of the running test or bench binary
/// (`target/<profile>/deps/<binary>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| panic!("unexpected binary location {}", exe.display()))
        .to_path_buf()
}

fn newest_mtime(path: &Path, newest: &mut SystemTime) {
    let Ok(meta) = fs::metadata(path) else { return };
    if meta.is_dir() {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            newest_mtime(&entry.path(), newest);
        }
    } else if let Ok(mtime) = meta.modified() {
        *newest = (*newest).max(mtime);
    }
}

/// The built `libnss_jms.so` of this profile: `target/<profile>/` or
/// `target/<profile>/deps/` (`cargo bench` leaves it there), whichever is
/// newer. Cargo builds it along with the rlib the tests link; when both
/// copies are missing or older than the sources of nss_jms and jms-core,
/// this runs `cargo build -p nss_jms --lib` for the same profile and target
/// dir first.
pub fn module_so() -> PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE
        .get_or_init(|| {
            let profile_dir = profile_dir();
            let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
            let mut sources = SystemTime::UNIX_EPOCH;
            for path in [
                "src",
                "build.rs",
                "Cargo.toml",
                "../jms-core/src",
                "../jms-core/Cargo.toml",
            ] {
                newest_mtime(&crate_dir.join(path), &mut sources);
            }
            let newest_fresh = || {
                [
                    profile_dir.join("libnss_jms.so"),
                    profile_dir.join("deps/libnss_jms.so"),
                ]
                .into_iter()
                .filter_map(|so| Some((fs::metadata(&so).and_then(|m| m.modified()).ok()?, so)))
                .filter(|(built, _)| *built >= sources)
                .max()
                .map(|(_, so)| so)
            };
            if let Some(so) = newest_fresh() {
                return so;
            }
            let profile = profile_dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("debug")
                .to_string();
            let target_dir = profile_dir.parent().expect("target dir");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
            let mut build = Command::new(cargo);
            build
                .args(["build", "-p", "nss_jms", "--lib", "--target-dir"])
                .arg(target_dir);
            match profile.as_str() {
                "debug" => {}
                "release" => {
                    build.arg("--release");
                }
                other => {
                    build.args(["--profile", other]);
                }
            }
            let status = build
                .current_dir(crate_dir)
                .status()
                .unwrap_or_else(|e| panic!("cannot run cargo to build libnss_jms.so: {e}"));
            assert!(
                status.success(),
                "`cargo build -p nss_jms` failed: {status}"
            );
            newest_fresh().unwrap_or_else(|| {
                panic!(
                    "no libnss_jms.so newer than the sources in {} after building",
                    profile_dir.display()
                )
            })
        })
        .clone()
}

/// The multiarch library directory glibc searches (`/usr/lib/x86_64-linux-gnu`).
pub fn system_lib_dir() -> PathBuf {
    let candidates = [
        format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH),
        "/usr/lib64".to_string(),
        "/usr/lib".to_string(),
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|dir| dir.join("libc.so.6").exists())
        .expect("no system library directory with libc.so.6")
}

/// A temp dir holding the module, an nsswitch.conf and the cache state
/// dir, and the mounts that show them to glibc in a namespace.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// Host path of the dir mounted over `/var/cache/jms` (or `/var/cache`).
    state: PathBuf,
    /// Where `state` is mounted in the namespace.
    state_target: PathBuf,
}

impl Sandbox {
    /// A sandbox with `nsswitch` as its nsswitch.conf.
    pub fn new(nsswitch: &str) -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("nss-jms-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        fs::create_dir(dir.path().join("lib")).unwrap();
        fs::copy(module_so(), dir.path().join("lib/libnss_jms.so.2")).expect("copy libnss_jms.so");
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::create_dir(dir.path().join("out")).unwrap();
        // DEFAULT_NSS_CACHE_PATH is /var/cache/jms/nss.db: hide the real
        // /var/cache/jms if the host has one, else /var/cache (never create
        // anything on the host).
        let cache = Path::new(DEFAULT_NSS_CACHE_PATH);
        let jms_dir = cache.parent().expect("cache dir");
        let (state, state_target) = if jms_dir.is_dir() {
            (dir.path().join("state"), jms_dir.to_path_buf())
        } else {
            let var_lib = jms_dir.parent().expect("/var/cache");
            (
                dir.path().join("state").join(jms_dir.file_name().unwrap()),
                var_lib.to_path_buf(),
            )
        };
        fs::create_dir_all(&state).unwrap();
        let sandbox = Sandbox {
            dir,
            state,
            state_target,
        };
        sandbox.set_nsswitch(nsswitch);
        sandbox
    }

    pub fn set_nsswitch(&self, text: &str) {
        fs::write(self.dir.path().join("etc/nsswitch.conf"), text).unwrap();
    }

    /// Host path of the file the namespace sees as `/var/cache/jms/nss.db`.
    pub fn cache_path(&self) -> PathBuf {
        self.state
            .join(Path::new(DEFAULT_NSS_CACHE_PATH).file_name().unwrap())
    }

    /// The dir mounted over `state_target`.
    fn state_source(&self) -> PathBuf {
        if self.state_target == Path::new(DEFAULT_NSS_CACHE_PATH).parent().unwrap() {
            self.state.clone()
        } else {
            self.state.parent().unwrap().to_path_buf()
        }
    }

    /// Shell commands that set the namespace up; `passwd` (a host file) is
    /// bind-mounted over /etc/passwd when given.
    pub fn mount_script(&self, passwd: Option<&Path>) -> String {
        let lib = system_lib_dir();
        let dir = self.dir.path();
        let mut script = format!(
            "set -e\n\
             mount --make-rprivate /\n\
             mount -t overlay jms-nss-test -o 'lowerdir={}:{}' '{}'\n\
             mount --bind '{}' /etc/nsswitch.conf\n\
             mount --bind '{}' '{}'\n",
            dir.join("lib").display(),
            lib.display(),
            lib.display(),
            dir.join("etc/nsswitch.conf").display(),
            self.state_source().display(),
            self.state_target.display(),
        );
        if let Some(passwd) = passwd {
            script.push_str(&format!(
                "mount --bind '{}' /etc/passwd\n",
                passwd.display()
            ));
        }
        script.push_str("set +e\n");
        script
    }

    /// A command that runs `script` (after the mounts) in a new mount
    /// namespace.
    pub fn command(&self, passwd: Option<&Path>, script: &str) -> Command {
        let mut command = Command::new("unshare");
        command
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!("{}{script}", self.mount_script(passwd)));
        command
    }

    /// Runs each shell command in one namespace; returns (stdout, exit
    /// code) of each.
    pub fn run(&self, commands: &[&str]) -> Vec<(String, i32)> {
        let out = self.dir.path().join("out");
        for entry in fs::read_dir(&out).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let mut script = String::new();
        for (i, cmd) in commands.iter().enumerate() {
            script.push_str(&format!(
                "{cmd} > '{o}/{i}.out' 2>&1; echo $? > '{o}/{i}.rc'\n",
                o = out.display()
            ));
        }
        let output: Output = self
            .command(None, &script)
            .stdin(Stdio::null())
            .output()
            .expect("run unshare");
        assert!(
            output.status.success(),
            "namespace setup failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (0..commands.len())
            .map(|i| {
                let read = |ext: &str| -> io::Result<String> {
                    fs::read_to_string(out.join(format!("{i}.{ext}")))
                };
                let stdout =
                    read("out").unwrap_or_else(|e| panic!("no output for `{}`: {e}", commands[i]));
                let rc = read("rc").unwrap().trim().parse().unwrap();
                (stdout, rc)
            })
            .collect()
    }
}
