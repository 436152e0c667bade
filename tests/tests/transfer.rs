//! File transfers end to end (issue workflow 4): the real `scp` (SFTP mode
//! and legacy `-O`), `rsync -e ssh` and `sftp` clients against the
//! bastion's sshd, jms-agent handing its stdio to jms-agentd, agentd's SFTP
//! proxy or exec transfer, OpenSSH to a real target sshd (src/target.rs,
//! 127.0.0.2, account `deploy` with its home in the target's /srv), and
//! back. Grants decide: upload needs `upload`, download `download`,
//! rm/rmdir/rename-over `delete`; refusals are SFTP permission errors (or
//! one line for scp -O / rsync) and nothing reaches the target. Every
//! transfer lands in the spool.
//!
//! Policy: web01 and db01 are both the target as `deploy`; web02 offers
//! ssh only (never a folder).
//! - alice: web01 everything; db01 connect + download (no upload);
//!   web02 everything (but no sftp there).
//! - bob: web01 connect + upload + download (no delete).
//! - carol: web01 connect + upload (no download).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use jms_e2e::clients::CLIENT_OPTIONS;
use jms_e2e::run::{self, Outcome};
use jms_e2e::target::{DEPLOY_PASSWORD, DEPLOY_UID};
use jms_e2e::{Bastion, BastionBuilder, ClientKey, Target};

const TIMEOUT: Duration = Duration::from_secs(60);

struct Scene {
    target: Target,
    bastion: Bastion,
    alice: ClientKey,
    bob: ClientKey,
    carol: ClientKey,
    /// The engineer's working directory (local files).
    local: tempfile::TempDir,
}

fn policy(target: &Target, alice: &ClientKey, bob: &ClientKey, carol: &ClientKey) -> String {
    let (address, port) = (target.address(), target.port());
    let asset = |name: &str, protocols: &str| {
        format!(
            "  - name: {name}\n    address: {address}\n    protocols: [{protocols}]\n\
             \x20   accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]\n"
        )
    };
    let both = format!("{{name: ssh, port: {port}}}, {{name: sftp, port: {port}}}");
    let ssh = format!("{{name: ssh, port: {port}}}");
    format!(
        "users:\n\
         \x20 - {{username: alice, name: Alice, public_keys: [\"{alice}\"]}}\n\
         \x20 - {{username: bob, name: Bob, public_keys: [\"{bob}\"]}}\n\
         \x20 - {{username: carol, name: Carol, public_keys: [\"{carol}\"]}}\n\
         assets:\n{web01}{db01}{web02}\
         grants:\n\
         \x20 - {{name: alice-web, users: [alice], assets: [web01, web02], accounts: ['@ALL'], protocols: [all], actions: [all]}}\n\
         \x20 - {{name: alice-db, users: [alice], assets: [db01], accounts: ['@ALL'], protocols: [sftp], actions: [connect, download]}}\n\
         \x20 - {{name: bob-web, users: [bob], assets: [web01], accounts: ['@ALL'], protocols: [sftp], actions: [connect, upload, download]}}\n\
         \x20 - {{name: carol-web, users: [carol], assets: [web01], accounts: ['@ALL'], protocols: [sftp], actions: [connect, upload]}}\n",
        alice = alice.public,
        bob = bob.public,
        carol = carol.public,
        web01 = asset("web01", &both),
        db01 = asset("db01", &both),
        web02 = asset("web02", &ssh),
    )
}

fn scene() -> Scene {
    let target = Target::start();
    let builder = BastionBuilder::new();
    let alice = builder.client_key("alice");
    let bob = builder.client_key("bob");
    let carol = builder.client_key("carol");
    let bastion = builder
        .policy(&policy(&target, &alice, &bob, &carol))
        .start();
    let local = tempfile::Builder::new()
        .prefix("jms-e2e-local-")
        .tempdir()
        .expect("the engineer's local dir");
    Scene {
        target,
        bastion,
        alice,
        bob,
        carol,
        local,
    }
}

/// deploy's home as the target sees it and as the test sees it.
const HOME: &str = "/srv/home/deploy";

impl Scene {
    /// deploy's home, from outside the target.
    fn home(&self) -> PathBuf {
        self.target.srv().join("home/deploy")
    }

    fn local(&self) -> &Path {
        self.local.path()
    }

    /// The options every client passes to ssh (port, no config, the key).
    fn ssh_options(&self, key: &ClientKey) -> Vec<String> {
        let specific = [
            "-o",
            "PreferredAuthentications=publickey",
            "-o",
            "BatchMode=yes",
            "-i",
        ];
        CLIENT_OPTIONS
            .iter()
            .chain(&specific)
            .map(|s| s.to_string())
            .chain([key.private.to_string_lossy().into_owned()])
            .collect()
    }

    fn client(&self, program: &str) -> Command {
        let mut cmd = self.bastion.ssh_command(program);
        cmd.current_dir(self.local());
        cmd
    }

    /// `scp [extra…] ARGS…` as `user` (`bastion:` in ARGS is the bastion).
    fn scp(&self, key: &ClientKey, user: &str, extra: &[&str], args: &[&str]) -> Outcome {
        let mut cmd = self.client("scp");
        cmd.args(self.ssh_options(key))
            .args(["-P", &self.bastion.port().to_string()])
            .args(extra);
        let host = format!("{user}@127.0.0.1:");
        cmd.args(args.iter().map(|a| a.replace("bastion:", &host)));
        run::run(&mut cmd, b"", TIMEOUT)
    }

    /// `rsync -e 'ssh …' ARGS…` as `user`.
    fn rsync(&self, key: &ClientKey, user: &str, args: &[&str]) -> Outcome {
        let mut ssh = vec![
            "ssh".to_string(),
            "-p".into(),
            self.bastion.port().to_string(),
        ];
        ssh.extend(self.ssh_options(key));
        let mut cmd = self.client("rsync");
        cmd.arg("-e").arg(ssh.join(" "));
        let host = format!("{user}@127.0.0.1:");
        cmd.args(args.iter().map(|a| a.replace("bastion:", &host)));
        run::run(&mut cmd, b"", TIMEOUT)
    }

    /// `sftp -b BATCH user@bastion`.
    fn sftp(&self, key: &ClientKey, user: &str, batch: &str) -> Outcome {
        let file = self.local().join("batch.sftp");
        fs::write(&file, batch).expect("sftp batch file");
        let mut cmd = self.client("sftp");
        cmd.args(self.ssh_options(key))
            .args(["-P", &self.bastion.port().to_string(), "-b"])
            .arg(&file)
            .arg(format!("{user}@127.0.0.1"));
        run::run(&mut cmd, b"", TIMEOUT)
    }

    /// The raw SFTP client (harness/sftp-raw.py, Debian's paramiko) as
    /// `user`: one output line per step (see the script).
    fn sftp_raw(&self, key: &ClientKey, user: &str, steps: &[&str]) -> Outcome {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/harness/sftp-raw.py"))
            .arg(self.bastion.port().to_string())
            .arg(user)
            .arg(&key.private)
            .args(steps);
        run::run(&mut cmd, b"", TIMEOUT)
    }

    /// Spooled transfer records (JSON lines holding `"event":"transfer"`).
    fn transfers(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Ok(dir) = fs::read_dir(self.bastion.dir().join("state/spool")) {
            for entry in dir.filter_map(|e| e.ok()) {
                for line in fs::read_to_string(entry.path()).unwrap_or_default().lines() {
                    if line.contains("\"event\":\"transfer\"") {
                        lines.push(line.to_string());
                    }
                }
            }
        }
        lines
    }

    /// Asserts a spooled transfer record holds every needle.
    #[track_caller]
    fn assert_transfer_logged(&self, needles: &[&str], what: &str) {
        let lines = self.transfers();
        assert!(
            lines.iter().any(|l| needles.iter().all(|n| l.contains(n))),
            "{what}: no spooled transfer record holds all of {needles:?}; records:\n{}",
            lines.join("\n")
        );
    }

    /// Writes a file on the target as deploy would own it.
    fn put_on_target(&self, rel: &str, data: &[u8]) {
        let path = self.home().join(rel);
        fs::write(&path, data).expect("write on the target");
        std::os::unix::fs::chown(&path, Some(DEPLOY_UID), Some(DEPLOY_UID)).expect("chown");
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| ((i.wrapping_mul(2654435761) ^ seed) >> 13) as u8)
        .collect()
}

#[test]
fn scp_uploads_and_downloads_through_the_sftp_proxy() {
    let s = scene();
    let data = pattern(5_000_000, 1);
    fs::write(s.local().join("big.bin"), &data).unwrap();
    // scp file bastion:web01:DIR/
    s.scp(
        &s.alice,
        "alice",
        &[],
        &["big.bin", &format!("bastion:web01:{HOME}/")],
    )
    .assert_success("scp upload to web01 should work");
    assert_eq!(
        fs::read(s.home().join("big.bin")).unwrap(),
        data,
        "the file arrives byte-exact"
    );
    let meta = fs::metadata(s.home().join("big.bin")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        DEPLOY_UID,
        "written as deploy"
    );
    // scp file bastion:web01:/tmp/ (the issue's example)
    let name = format!("jms-e2e-{}.txt", std::process::id());
    fs::write(s.local().join(&name), b"to tmp\n").unwrap();
    s.scp(&s.alice, "alice", &[], &[&name, "bastion:web01:/tmp/"])
        .assert_success("scp to web01:/tmp/ should work");
    let tmp = Path::new("/tmp").join(&name);
    assert_eq!(
        fs::read(&tmp).unwrap(),
        b"to tmp\n",
        "the target shares the host's /tmp"
    );
    let _ = fs::remove_file(&tmp);
    // scp bastion:web01:/etc/hostname .
    s.scp(
        &s.alice,
        "alice",
        &[],
        &["bastion:web01:/etc/hostname", "."],
    )
    .assert_success("scp download from web01 should work");
    assert_eq!(
        fs::read(s.local().join("hostname")).unwrap(),
        fs::read("/etc/hostname").unwrap(),
        "the target's /etc/hostname arrives"
    );
    // Home-relative paths.
    s.scp(
        &s.alice,
        "alice",
        &[],
        &["big.bin", "bastion:web01:copy.bin"],
    )
    .assert_success("scp to a home-relative path");
    assert_eq!(fs::read(s.home().join("copy.bin")).unwrap(), data);
    s.assert_transfer_logged(
        &[
            "\"operation\":\"upload\"",
            "big.bin",
            "\"size\":5000000",
            "\"result\":\"ok\"",
            "\"asset\":\"web01\"",
        ],
        "the upload is spooled with its size",
    );
    s.assert_transfer_logged(
        &[
            "\"operation\":\"download\"",
            "/etc/hostname",
            "\"result\":\"ok\"",
        ],
        "the download is spooled",
    );
}

#[test]
fn legacy_scp_both_ways() {
    let s = scene();
    fs::write(s.local().join("up.txt"), b"legacy up\n").unwrap();
    s.put_on_target("down.txt", b"legacy down\n");
    s.scp(
        &s.alice,
        "alice",
        &["-O"],
        &["up.txt", &format!("bastion:web01:{HOME}/")],
    )
    .assert_success("scp -O upload should work");
    assert_eq!(fs::read(s.home().join("up.txt")).unwrap(), b"legacy up\n");
    s.scp(
        &s.alice,
        "alice",
        &["-O"],
        &[&format!("bastion:web01:{HOME}/down.txt"), "."],
    )
    .assert_success("scp -O download should work");
    assert_eq!(
        fs::read(s.local().join("down.txt")).unwrap(),
        b"legacy down\n"
    );
    s.scp(
        &s.alice,
        "alice",
        &["-O"],
        &["bastion:web01:/etc/hostname", "legacy-hostname"],
    )
    .assert_success("scp -O of /etc/hostname");
    assert_eq!(
        fs::read(s.local().join("legacy-hostname")).unwrap(),
        fs::read("/etc/hostname").unwrap()
    );
    s.assert_transfer_logged(
        &[
            "\"via\":\"scp\"",
            "\"operation\":\"upload\"",
            "\"result\":\"ok\"",
        ],
        "scp -O upload logged",
    );
    s.assert_transfer_logged(
        &["\"via\":\"scp\"", "\"operation\":\"download\"", "down.txt"],
        "scp -O download logged",
    );
}

#[test]
fn rsync_both_ways() {
    let s = scene();
    let tree = s.local().join("tree");
    fs::create_dir_all(tree.join("sub dir")).unwrap();
    fs::write(tree.join("one.txt"), b"1").unwrap();
    fs::write(tree.join("sub dir/two.bin"), pattern(300_000, 2)).unwrap();
    s.rsync(
        &s.alice,
        "alice",
        &["-a", "tree/", &format!("bastion:web01:{HOME}/synced/")],
    )
    .assert_success("rsync push should work");
    assert_eq!(
        fs::read(s.home().join("synced/sub dir/two.bin")).unwrap(),
        pattern(300_000, 2)
    );
    s.rsync(
        &s.alice,
        "alice",
        &["-a", &format!("bastion:web01:{HOME}/synced/"), "back/"],
    )
    .assert_success("rsync pull should work");
    assert_eq!(fs::read(s.local().join("back/one.txt")).unwrap(), b"1");
    s.assert_transfer_logged(
        &["\"via\":\"rsync\"", "\"operation\":\"upload\""],
        "rsync push logged",
    );
    s.assert_transfer_logged(
        &["\"via\":\"rsync\"", "\"operation\":\"download\""],
        "rsync pull logged",
    );
}

#[test]
fn sftp_session_lists_assets_and_gets_puts_removes() {
    let s = scene();
    s.put_on_target("remote.txt", b"from the target\n");
    fs::write(s.local().join("local.txt"), b"from the engineer\n").unwrap();
    let out = s.sftp(
        &s.alice,
        "alice",
        &format!(
            "ls /\ncd /web01{HOME}\nls\nget remote.txt got.txt\nput local.txt put.txt\nrename put.txt moved.txt\nrm remote.txt\n"
        ),
    );
    out.assert_success("the sftp session should succeed");
    assert!(
        out.stdout.contains("web01") && out.stdout.contains("db01"),
        "ls / lists the sftp assets:\n{out}"
    );
    assert!(
        !out.stdout.contains("web02"),
        "web02 offers no sftp: not a folder:\n{out}"
    );
    assert!(
        out.stdout.contains("remote.txt"),
        "ls in the folder lists the target's files:\n{out}"
    );
    assert_eq!(
        fs::read(s.local().join("got.txt")).unwrap(),
        b"from the target\n"
    );
    assert_eq!(
        fs::read(s.home().join("moved.txt")).unwrap(),
        b"from the engineer\n"
    );
    assert!(
        !s.home().join("remote.txt").exists(),
        "rm removed the file on the target"
    );
    for op in ["download", "upload", "rename", "delete"] {
        s.assert_transfer_logged(
            &[&format!("\"operation\":\"{op}\""), "\"result\":\"ok\""],
            op,
        );
    }
}

#[test]
fn upload_is_denied_without_upload() {
    let s = scene();
    fs::write(s.local().join("x.txt"), b"x").unwrap();
    s.put_on_target("readable.txt", b"ok to read\n");
    // db01: connect + download only.
    let dest = format!("bastion:db01:{HOME}/x.txt");
    let out = s.scp(&s.alice, "alice", &[], &["x.txt", &dest]);
    out.assert_failure("scp upload to db01 must fail");
    out.assert_output_contains("ermission denied", "an SFTP permission error");
    let out = s.scp(&s.alice, "alice", &["-O"], &["x.txt", &dest]);
    out.assert_failure("scp -O upload to db01 must fail");
    out.assert_output_contains("upload", "the refusal names the missing action");
    s.rsync(&s.alice, "alice", &["x.txt", &dest])
        .assert_failure("rsync upload to db01 must fail");
    let out = s.sftp(&s.alice, "alice", &format!("put x.txt /db01{HOME}/x.txt\n"));
    out.assert_failure("sftp put to db01 must fail");
    out.assert_output_contains("ermission denied", "an SFTP permission error");
    assert!(
        !s.home().join("x.txt").exists(),
        "no refused upload reached the target"
    );
    // Download is granted on db01.
    s.scp(
        &s.alice,
        "alice",
        &[],
        &[&format!("bastion:db01:{HOME}/readable.txt"), "."],
    )
    .assert_success("download from db01 is granted");
    s.assert_transfer_logged(
        &["\"asset\":\"db01\"", "\"operation\":\"upload\"", "denied"],
        "the refusal is spooled",
    );
}

#[test]
fn delete_is_denied_without_delete() {
    let s = scene();
    s.put_on_target("keep.txt", b"keep\n");
    s.put_on_target("other.txt", b"other\n");
    fs::create_dir(s.home().join("keepdir")).unwrap();
    // bob: connect + upload + download on web01, no delete.
    let out = s.sftp(&s.bob, "bob", &format!("rm /web01{HOME}/keep.txt\n"));
    out.assert_failure("rm without delete must fail");
    out.assert_output_contains("ermission denied", "an SFTP permission error");
    s.sftp(&s.bob, "bob", &format!("rmdir /web01{HOME}/keepdir\n"))
        .assert_failure("rmdir without delete must fail");
    s.sftp(
        &s.bob,
        "bob",
        &format!("rename /web01{HOME}/other.txt /web01{HOME}/keep.txt\n"),
    )
    .assert_failure("rename over a file without delete must fail");
    assert_eq!(
        fs::read(s.home().join("keep.txt")).unwrap(),
        b"keep\n",
        "keep.txt untouched"
    );
    assert!(s.home().join("keepdir").is_dir());
    // Uploading and renaming to a new name are fine for bob.
    fs::write(s.local().join("new.txt"), b"new\n").unwrap();
    s.sftp(
        &s.bob,
        "bob",
        &format!(
            "put new.txt /web01{HOME}/new.txt\nrename /web01{HOME}/new.txt /web01{HOME}/new2.txt\n"
        ),
    )
    .assert_success("bob may upload and rename to a new name");
    assert!(s.home().join("new2.txt").exists());
    // rsync --delete needs delete too.
    let out = s.rsync(
        &s.bob,
        "bob",
        &["-r", "--delete", "./", &format!("bastion:web01:{HOME}/")],
    );
    out.assert_failure("rsync --delete without delete must fail");
    out.assert_output_contains("delete", "the refusal names the missing action");
    assert!(
        s.home().join("keep.txt").exists(),
        "rsync --delete deleted nothing"
    );
    s.assert_transfer_logged(
        &["\"user\":\"bob\"", "\"operation\":\"delete\"", "denied"],
        "the refusal is spooled",
    );
}

#[test]
fn paths_cannot_leave_their_asset_folder() {
    let s = scene();
    let out = s.sftp(&s.alice, "alice", "get /web01/../web02/etc/hostname h1\n");
    out.assert_failure("web02 has no sftp: ../web02 must not reach it through web01");
    out.assert_output_contains("not found", "web02 is no folder");
    assert!(!s.local().join("h1").exists());
    // Through .. to db01: resolved in the tree and checked as db01.
    fs::write(s.local().join("x.txt"), b"x").unwrap();
    let out = s.sftp(
        &s.alice,
        "alice",
        &format!("put x.txt /web01/../db01{HOME}/sneaky.txt\n"),
    );
    out.assert_failure("web01/../db01 is db01: no upload there");
    out.assert_output_contains("ermission denied", "db01's rules apply");
    assert!(!s.home().join("sneaky.txt").exists());
    // A folder she cannot see.
    let out = s.scp(&s.bob, "bob", &[], &["bastion:db01:/etc/hostname", "."]);
    out.assert_failure("bob has no grant on db01");
    out.assert_output_contains("No such file", "db01 does not exist for bob");
}

#[test]
fn sftp_reads_need_download_whatever_the_open_flags() {
    let s = scene();
    s.put_on_target("secret.txt", b"not for carol\n");
    let secret = format!("/web01{HOME}/secret.txt");
    // carol: connect + upload on web01, no download. OpenSSH's sftp-server
    // opens read-only when WRITE is absent: no flags at all, or CREAT alone.
    let out = s.sftp_raw(
        &s.carol,
        "carol",
        &[
            &format!("open:0:{secret}"),
            "read:100",
            &format!("open:8:{secret}"),
            "read:100",
            // WRITE|CREAT|TRUNC: an upload; reading that handle is refused.
            &format!("open:1a:/web01{HOME}/up.txt"),
            "read:100",
            "write:hello",
            "close",
        ],
    );
    out.assert_success("the raw SFTP client should run");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.len() == 8
            && lines[0].starts_with("open denied")
            && lines[0].contains("ermission denied")
            && lines[1].starts_with("read skipped")
            && lines[2].starts_with("open denied")
            && lines[3].starts_with("read skipped")
            && lines[4] == "open ok"
            && lines[5].starts_with("read denied")
            && lines[5].contains("not opened for reading")
            && lines[6] == "write ok"
            && lines[7] == "close ok",
        "opens that can read need download, a write handle cannot be read:\n{out}"
    );
    assert_eq!(fs::read(s.home().join("up.txt")).unwrap(), b"hello");
    s.assert_transfer_logged(
        &["\"user\":\"carol\"", "\"operation\":\"download\"", "denied"],
        "the refused read-open is spooled",
    );
    // alice may download: an open without flags reads, and is logged as
    // a download with its bytes when the handle closes.
    let out = s.sftp_raw(
        &s.alice,
        "alice",
        &[&format!("open:0:{secret}"), "read:100", "close"],
    );
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["open ok", "read ok 14", "close ok"],
        "alice reads with no open flags:\n{out}"
    );
    s.assert_transfer_logged(
        &[
            "\"user\":\"alice\"",
            "\"operation\":\"download\"",
            "secret.txt",
            "\"size\":14",
            "\"result\":\"ok\"",
        ],
        "a read without READ in the open flags is logged as a download",
    );
}

#[test]
fn rsync_options_that_delete_need_delete() {
    let s = scene();
    // On the target: a non-empty directory that a file of the same name
    // replaces only with --force (which removes it, contents and all).
    let own = |p: &Path| std::os::unix::fs::chown(p, Some(DEPLOY_UID), Some(DEPLOY_UID)).unwrap();
    for dir in ["dest", "dest/victim"] {
        fs::create_dir(s.home().join(dir)).unwrap();
        own(&s.home().join(dir));
    }
    s.put_on_target("dest/victim/precious.txt", b"precious\n");
    let src = s.local().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("victim"), b"a file\n").unwrap();
    fs::write(src.join("new.txt"), b"new\n").unwrap();
    let dest = format!("bastion:web01:{HOME}/dest/");
    // bob: connect + upload + download on web01, no delete.
    let out = s.rsync(&s.bob, "bob", &["-r", "--force", "src/", &dest]);
    out.assert_failure("rsync --force without delete must fail");
    out.assert_output_contains("delete", "the refusal names the missing action");
    assert_eq!(
        fs::read(s.home().join("dest/victim/precious.txt")).unwrap(),
        b"precious\n",
        "rsync --force removed nothing"
    );
    let out = s.rsync(&s.bob, "bob", &["-r", "--delete", "src/new.txt", &dest]);
    out.assert_failure("rsync --delete without delete must fail");
    let out = s.rsync(&s.bob, "bob", &["-r", "-B", "2048", "src/new.txt", &dest]);
    out.assert_failure("rsync -B must be refused");
    out.assert_output_contains("-B", "the refusal names the block size option");
    assert!(!s.home().join("dest/new.txt").exists());
    s.rsync(&s.bob, "bob", &["-a", "src/new.txt", &dest])
        .assert_success("a plain upload needs upload only");
    assert_eq!(fs::read(s.home().join("dest/new.txt")).unwrap(), b"new\n");
}
