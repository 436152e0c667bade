//! The real `sftp`, `scp` (SFTP and `-O` legacy modes) and `rsync`
//! clients against the SFTP proxy and the legacy scp / rsync rewriting,
//! without ssh: a fake `ssh` (`-S` / `-e`) re-runs this test binary as the
//! "bastion" — `sftp_helper` serves SFTP on its stdin and fd 3, or runs the
//! rewritten scp / rsync command in the asset's home the way the daemon
//! does (parse, check the grants, exec). Assets are local `sftp-server`s
//! (support/).

mod support;

use std::fs;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jms_agent::daemon::session::sftp::{self, SftpContext};
use jms_agent::daemon::session::transfer::{self, TransferEvent, TransferLog};
use jms_core::model::Protocol;
use jms_core::{Policy, Query};
use support::*;

// ------------------------------------ real clients through a fake ssh

/// Run as the "bastion" by the fake ssh: with `JMS_T_ROOT` set, serves
/// SFTP on stdin / fd 3 (the fake ssh moved stdout there so libtest's own
/// output cannot reach the client), or runs a legacy scp / rsync command
/// the way the daemon does: parse, check the grants, run the rewritten
/// command in the asset's home. Without it, this test does nothing.
#[test]
fn sftp_helper() {
    let Ok(root) = std::env::var("JMS_T_ROOT") else {
        return;
    };
    let root = PathBuf::from(root);
    let user = std::env::var("JMS_T_USER").unwrap();
    let policy = Arc::new(load_policy(
        &fs::read_to_string(std::env::var("JMS_T_POLICY").unwrap()).unwrap(),
    ));
    let events_path = PathBuf::from(std::env::var("JMS_T_EVENTS").unwrap());
    let args = std::env::var("JMS_T_SSH_ARGS").unwrap();
    let command = args
        .split_once(" bastion ")
        .map(|(_, c)| c)
        .or_else(|| args.strip_prefix("bastion "))
        .unwrap_or_else(|| panic!("no command for bastion in {args:?}"));
    // SAFETY: the fake ssh opened fd 3 as this process's copy of the
    // client's stdout; it is borrowed only to be duplicated.
    let stdout = unsafe { BorrowedFd::borrow_raw(3) }
        .try_clone_to_owned()
        .unwrap();
    let stdin = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
    let status = if command == "sftp" {
        let assets = LocalAssets::new(&root);
        let log = FileLog(Mutex::new(events_path));
        let current = move || Arc::clone(&policy);
        let ctx = SftpContext {
            user: &user,
            folders: &sftp::PolicyFolders {
                user: &user,
                policy: &current,
            },
            upstream: &assets,
            log: &log,
        };
        match sftp::serve(&ctx, stdin, stdout) {
            Ok(_) => 0,
            Err(e) => {
                eprintln!("sftp_helper: {e}");
                1
            }
        }
    } else {
        run_transfer(&policy, &user, &root, command, stdin, stdout)
    };
    std::process::exit(status);
}

/// What the daemon does with a legacy scp / rsync command, locally.
fn run_transfer(
    policy: &Policy,
    user: &str,
    root: &Path,
    command: &str,
    stdin: OwnedFd,
    stdout: OwnedFd,
) -> i32 {
    let t = match transfer::parse(command) {
        Some(Ok(t)) => t,
        Some(Err(e)) => {
            eprintln!("{e}");
            return 1;
        }
        None => {
            eprintln!("not a transfer: {command}");
            return 1;
        }
    };
    for action in t.required_actions() {
        let query = Query {
            user,
            asset: &t.target.asset,
            account: t.target.account.as_deref(),
            protocol: Some(Protocol::Sftp),
            action,
            at: chrono::Utc::now(),
        };
        if !policy.decide(&query).map(|d| d.is_allow()).unwrap_or(false) {
            eprintln!("jms: {action} is not granted on {}", t.target);
            return 1;
        }
    }
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&t.remote_command)
        .current_dir(root.join(&t.target.asset).join("home"))
        .env("HOME", root.join(&t.target.asset).join("home"))
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .status()
        .unwrap();
    status.code().unwrap_or(1)
}

/// Transfer records as JSON lines in a file.
struct FileLog(Mutex<PathBuf>);

impl TransferLog for FileLog {
    fn record(&self, event: TransferEvent) {
        let path = self.0.lock().unwrap();
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&*path)
            .unwrap();
        writeln!(file, "{}", serde_json::to_string(&event).unwrap()).unwrap();
    }
}

/// A scene for the real clients: assets, policy file, the fake ssh.
struct Clients {
    env: Env,
    fake_ssh: PathBuf,
    local: PathBuf,
}

impl Clients {
    fn new() -> Clients {
        let env = Env::new();
        let fake_ssh = env.dir.path().join("fake-ssh");
        let script = format!(
            "#!/bin/sh\nJMS_T_SSH_ARGS=\"$*\"\nexport JMS_T_SSH_ARGS\nexec 3>&1 1>&2\nexec {} --exact sftp_helper --nocapture --test-threads=1 -q\n",
            std::env::current_exe().unwrap().display()
        );
        fs::write(&fake_ssh, script).unwrap();
        fs::set_permissions(&fake_ssh, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(env.dir.path().join("policy.yaml"), POLICY).unwrap();
        let local = env.dir.path().join("local");
        fs::create_dir(&local).unwrap();
        Clients {
            env,
            fake_ssh,
            local,
        }
    }

    /// `program ARGS…` as `user`, with the helper's environment.
    fn run(&self, user: &str, program: &str, args: &[&str], stdin: &[u8]) -> (bool, String) {
        let dir = self.env.dir.path();
        let mut child = Command::new(program)
            .args(args)
            .current_dir(&self.local)
            .env("JMS_T_ROOT", &self.env.assets.root)
            .env("JMS_T_USER", user)
            .env("JMS_T_POLICY", dir.join("policy.yaml"))
            .env("JMS_T_EVENTS", dir.join("events.jsonl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program} should run: {e}"));
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = wait_output(child, Duration::from_secs(30));
        let text = format!(
            "{program} {args:?}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn sftp_batch(&self, user: &str, batch: &str) -> (bool, String) {
        let file = self.env.dir.path().join("batch");
        fs::write(&file, batch).unwrap();
        let ssh = self.fake_ssh.to_string_lossy().into_owned();
        let file = file.to_string_lossy().into_owned();
        self.run(user, "sftp", &["-S", &ssh, "-b", &file, "bastion"], b"")
    }

    fn events(&self) -> String {
        fs::read_to_string(self.env.dir.path().join("events.jsonl")).unwrap_or_default()
    }
}

/// Waits for a child with a deadline (killed past it).
fn wait_output(mut child: Child, timeout: Duration) -> std::process::Output {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the client hung; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn real_sftp_client_ls_get_put_rename_rm() {
    let c = Clients::new();
    let web = c.env.asset_dir("web01");
    fs::write(web.join("remote.txt"), b"from the asset\n").unwrap();
    fs::write(c.local.join("local.txt"), b"from the engineer\n").unwrap();
    let batch = format!(
        "ls /\ncd /web01{web}\nls\nget remote.txt got.txt\nput local.txt put.txt\nrename put.txt moved.txt\nrm remote.txt\nmkdir newdir\nrmdir newdir\n",
        web = web.display()
    );
    let (ok, out) = c.sftp_batch("alice", &batch);
    assert!(ok, "the sftp session should succeed:\n{out}");
    assert!(
        out.contains("web01") && out.contains("db01"),
        "ls / lists the folders:\n{out}"
    );
    assert!(!out.contains("hidden"), "no folder without a grant:\n{out}");
    assert_eq!(
        fs::read(c.local.join("got.txt")).unwrap(),
        b"from the asset\n"
    );
    assert_eq!(
        fs::read(web.join("moved.txt")).unwrap(),
        b"from the engineer\n"
    );
    assert!(!web.join("remote.txt").exists(), "rm removed the file");
    let events = c.events();
    for op in [
        "\"download\"",
        "\"upload\"",
        "\"rename\"",
        "\"delete\"",
        "\"mkdir\"",
    ] {
        assert!(events.contains(op), "{op} logged:\n{events}");
    }
}

#[test]
fn real_sftp_client_gets_permission_denied() {
    let c = Clients::new();
    let web = c.env.asset_dir("web01");
    fs::write(web.join("keep.txt"), b"keep").unwrap();
    fs::write(c.local.join("local.txt"), b"x").unwrap();
    // bob: no delete on web01.
    let (ok, out) = c.sftp_batch("bob", &format!("rm /web01{}/keep.txt\n", web.display()));
    assert!(!ok, "rm without delete must fail:\n{out}");
    assert!(
        out.contains("Permission denied"),
        "an SFTP permission error:\n{out}"
    );
    assert!(web.join("keep.txt").exists());
    // alice: no upload on db01.
    let db = c.env.asset_dir("db01");
    let (ok, out) = c.sftp_batch("alice", &format!("put local.txt /db01{}/x\n", db.display()));
    assert!(!ok, "put without upload must fail:\n{out}");
    assert!(out.contains("Permission denied"), "{out}");
    assert!(!db.join("x").exists());
    assert!(
        c.events().contains("\"denied\""),
        "refusals are logged:\n{}",
        c.events()
    );
}

#[test]
fn real_scp_sftp_mode_both_ways() {
    let c = Clients::new();
    let web = c.env.asset_dir("web01");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(c.local.join("big.bin"), &data).unwrap();
    let ssh = c.fake_ssh.to_string_lossy().into_owned();
    let upload = format!("bastion:web01:{}/", web.display());
    let (ok, out) = c.run("alice", "scp", &["-S", &ssh, "big.bin", &upload], b"");
    assert!(ok, "scp upload:\n{out}");
    assert_eq!(fs::read(web.join("big.bin")).unwrap(), data);
    let download = format!("bastion:web01:{}/big.bin", web.display());
    let (ok, out) = c.run("alice", "scp", &["-S", &ssh, &download, "back.bin"], b"");
    assert!(ok, "scp download:\n{out}");
    assert_eq!(fs::read(c.local.join("back.bin")).unwrap(), data);
    // Home-relative, and ~.
    let (ok, out) = c.run(
        "alice",
        "scp",
        &["-S", &ssh, "big.bin", "bastion:web01:~/h.bin"],
        b"",
    );
    assert!(ok, "scp to ~:\n{out}");
    assert!(web.join("home/h.bin").exists());
    // Recursive, both ways.
    fs::create_dir_all(c.local.join("tree/sub")).unwrap();
    fs::write(c.local.join("tree/sub/leaf.txt"), b"leaf").unwrap();
    let dir = format!("bastion:web01:{}/", web.display());
    let (ok, out) = c.run("alice", "scp", &["-S", &ssh, "-r", "tree", &dir], b"");
    assert!(ok, "scp -r upload:\n{out}");
    assert_eq!(fs::read(web.join("tree/sub/leaf.txt")).unwrap(), b"leaf");
    let tree = format!("bastion:web01:{}/tree", web.display());
    let (ok, out) = c.run("alice", "scp", &["-S", &ssh, "-r", &tree, "copy"], b"");
    assert!(ok, "scp -r download:\n{out}");
    assert_eq!(
        fs::read(c.local.join("copy/sub/leaf.txt")).unwrap(),
        b"leaf"
    );
    // Refused: db01 has no upload.
    let refused = format!("bastion:db01:{}/x", c.env.asset_dir("db01").display());
    let (ok, out) = c.run("alice", "scp", &["-S", &ssh, "big.bin", &refused], b"");
    assert!(!ok, "scp to db01 must fail:\n{out}");
    assert!(out.contains("ermission denied"), "{out}");
    let events = c.events();
    assert!(
        events.contains(&format!("\"size\":{}", data.len())),
        "sizes logged:\n{events}"
    );
}

#[test]
fn real_scp_legacy_mode_both_ways() {
    let c = Clients::new();
    let web = c.env.asset_dir("web01");
    fs::write(c.local.join("a file.txt"), b"legacy up\n").unwrap();
    fs::write(web.join("down.txt"), b"legacy down\n").unwrap();
    let ssh = c.fake_ssh.to_string_lossy().into_owned();
    let upload = format!("bastion:'web01:{}/up loaded.txt'", web.display());
    let (ok, out) = c.run(
        "alice",
        "scp",
        &["-O", "-S", &ssh, "a file.txt", &upload],
        b"",
    );
    assert!(ok, "scp -O upload:\n{out}");
    assert_eq!(fs::read(web.join("up loaded.txt")).unwrap(), b"legacy up\n");
    let download = format!("bastion:web01:{}/down*", web.display());
    let (ok, out) = c.run("alice", "scp", &["-O", "-S", &ssh, &download, "."], b"");
    assert!(ok, "scp -O download with a glob:\n{out}");
    assert_eq!(
        fs::read(c.local.join("down.txt")).unwrap(),
        b"legacy down\n"
    );
    let (ok, out) = c.run(
        "alice",
        "scp",
        &["-O", "-S", &ssh, "a file.txt", "bastion:web01:"],
        b"",
    );
    assert!(ok, "scp -O to the home:\n{out}");
    assert!(web.join("home/a file.txt").exists());
    // db01: no upload.
    let refused = format!("bastion:db01:{}/x", c.env.asset_dir("db01").display());
    let (ok, out) = c.run(
        "alice",
        "scp",
        &["-O", "-S", &ssh, "a file.txt", &refused],
        b"",
    );
    assert!(
        !ok && out.contains("upload is not granted"),
        "scp -O to db01 must be refused:\n{out}"
    );
    // Shell syntax in the path is never run.
    let evil = format!("bastion:web01:{}/$(touch${{IFS}}pwned)", web.display());
    let (ok, out) = c.run(
        "alice",
        "scp",
        &["-O", "-S", &ssh, "a file.txt", &evil],
        b"",
    );
    assert!(!ok, "{out}");
    assert!(!web.join("home/pwned").exists() && !c.local.join("pwned").exists());
}

#[test]
fn real_rsync_both_ways() {
    let c = Clients::new();
    let web = c.env.asset_dir("web01");
    let src = c.local.join("tree");
    fs::create_dir_all(src.join("sub dir")).unwrap();
    fs::write(src.join("one.txt"), b"1").unwrap();
    fs::write(src.join("sub dir/two.txt"), b"2").unwrap();
    let ssh = c.fake_ssh.to_string_lossy().into_owned();
    let dest = format!("bastion:web01:{}/synced/", web.display());
    let (ok, out) = c.run("alice", "rsync", &["-a", "-e", &ssh, "tree/", &dest], b"");
    assert!(ok, "rsync push:\n{out}");
    assert_eq!(fs::read(web.join("synced/sub dir/two.txt")).unwrap(), b"2");
    let back = format!("bastion:web01:{}/synced/", web.display());
    let (ok, out) = c.run("alice", "rsync", &["-a", "-e", &ssh, &back, "back/"], b"");
    assert!(ok, "rsync pull:\n{out}");
    assert_eq!(fs::read(c.local.join("back/one.txt")).unwrap(), b"1");
    // --delete needs delete: bob has none.
    let (ok, out) = c.run(
        "bob",
        "rsync",
        &["-a", "--delete", "-e", &ssh, "tree/", &dest],
        b"",
    );
    assert!(
        !ok && out.contains("delete is not granted"),
        "rsync --delete by bob:\n{out}"
    );
    // -s is refused with advice.
    let (ok, out) = c.run(
        "alice",
        "rsync",
        &["-s", "-e", &ssh, "tree/one.txt", &dest],
        b"",
    );
    assert!(!ok && out.contains("without -s"), "rsync -s:\n{out}");
}
