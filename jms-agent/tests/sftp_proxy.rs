//! The SFTP proxy (`sftp::serve`) driven packet by packet (support/): exact
//! status codes for the root, grants, traversal, handles, limits and the
//! transfer log, against local `sftp-server` "assets" and a small fake
//! target with tiny limits.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jms_agent::daemon::session::sftp::{Upstream, UpstreamError, UpstreamStreams};
use jms_agent::daemon::session::transfer::{TransferEvent, TransferOp, TransferResult};
use support::*;

/// A socket end that shuts the connection down when dropped (a socket's
/// peer sees EOF only then, not when one of several descriptors closes).
struct Closing(UnixStream);

impl Write for Closing {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

/// A minimal SFTP server with small limits (or none announced): one file
/// in memory, the size of every READ and WRITE it got recorded.
struct SmallTarget {
    /// `limits@openssh.com` read/write lengths; `None`: not announced.
    limit: Option<u64>,
    writes: Arc<Mutex<Vec<(u64, usize)>>>,
    reads: Arc<Mutex<Vec<u32>>>,
    file: Arc<Mutex<Vec<u8>>>,
}

impl SmallTarget {
    fn new(limit: Option<u64>) -> SmallTarget {
        SmallTarget {
            limit,
            writes: Arc::default(),
            reads: Arc::default(),
            file: Arc::default(),
        }
    }
}

impl Upstream for SmallTarget {
    fn open(&self, _asset: &str, _account: &str) -> Result<UpstreamStreams, UpstreamError> {
        let (proxy_side, mut server) = UnixStream::pair().unwrap();
        let (limit, writes, reads, file) = (
            self.limit,
            Arc::clone(&self.writes),
            Arc::clone(&self.reads),
            Arc::clone(&self.file),
        );
        std::thread::spawn(move || {
            let mut len = [0u8; 4];
            while server.read_exact(&mut len).is_ok() {
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                if server.read_exact(&mut body).is_err() {
                    break;
                }
                let mut r = Reply {
                    kind: body[0],
                    body,
                    pos: 1,
                };
                let mut out: Vec<u8> = Vec::new();
                let put_u32 = |o: &mut Vec<u8>, v: u32| o.extend_from_slice(&v.to_be_bytes());
                let put_str = |o: &mut Vec<u8>, v: &[u8]| {
                    o.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    o.extend_from_slice(v);
                };
                let status = |o: &mut Vec<u8>, id: u32, code: u32| {
                    o.push(STATUS);
                    o.extend_from_slice(&id.to_be_bytes());
                    o.extend_from_slice(&code.to_be_bytes());
                    o.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
                };
                if r.kind == 1 {
                    out.push(2);
                    put_u32(&mut out, 3);
                    if limit.is_some() {
                        put_str(&mut out, b"limits@openssh.com");
                        put_str(&mut out, b"1");
                    }
                } else {
                    let id = r.u32();
                    match r.kind {
                        EXTENDED => {
                            out.push(EXTENDED_REPLY);
                            put_u32(&mut out, id);
                            let l = limit.unwrap_or(0);
                            for v in [l + 1024, l, l, 0] {
                                out.extend_from_slice(&v.to_be_bytes());
                            }
                        }
                        OPEN => {
                            out.push(HANDLE);
                            put_u32(&mut out, id);
                            put_str(&mut out, b"h");
                        }
                        WRITE => {
                            r.string();
                            let offset = r.u64();
                            let data = r.string();
                            writes.lock().unwrap().push((offset, data.len()));
                            let mut f = file.lock().unwrap();
                            let end = offset as usize + data.len();
                            if f.len() < end {
                                f.resize(end, 0);
                            }
                            f[offset as usize..end].copy_from_slice(&data);
                            status(&mut out, id, FX_OK);
                        }
                        READ => {
                            r.string();
                            let offset = r.u64() as usize;
                            let want = r.u32();
                            reads.lock().unwrap().push(want);
                            let f = file.lock().unwrap();
                            if offset >= f.len() {
                                status(&mut out, id, FX_EOF);
                            } else {
                                out.push(DATA);
                                put_u32(&mut out, id);
                                let end = (offset + want as usize).min(f.len());
                                put_str(&mut out, &f[offset..end]);
                            }
                        }
                        CLOSE => status(&mut out, id, FX_OK),
                        _ => status(&mut out, id, 8),
                    }
                }
                let mut frame = (out.len() as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&out);
                if server.write_all(&frame).is_err() {
                    break;
                }
            }
        });
        Ok(UpstreamStreams {
            writer: Box::new(Closing(proxy_side.try_clone().unwrap())),
            reader: Box::new(proxy_side.try_clone().unwrap()),
            guard: Box::new(Closing(proxy_side)),
        })
    }
}

// ---------------------------------------------- packet-level proxy tests

#[test]
fn root_lists_granted_sftp_assets_as_folders() {
    let env = Env::new();
    let (root, _) = env.session("alice", |c| {
        let root = c.list("/").unwrap();
        assert_eq!(c.realpath(".").unwrap(), "/", "REALPATH of . is the root");
        assert_eq!(c.realpath("/web01/..").unwrap(), "/");
        assert_eq!(
            c.path_request(STAT, "/").permissions() & 0o170000,
            0o040000,
            "/ is a directory"
        );
        root
    });
    assert_eq!(
        root,
        vec!["db01", "deploy@multi", "down01", "root@multi", "web01"],
        "one folder per asset, account@asset when it has several sftp accounts; never `hidden`"
    );
    let (names, _) = env.session("bob", |c| c.list("/").unwrap());
    assert_eq!(names, vec!["web01"]);
    assert!(
        env.assets.opened().is_empty(),
        "listing the root connects to no asset"
    );
}

#[test]
fn put_then_get_through_a_folder_and_scp_form() {
    let env = Env::new();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let path = env.vpath("web01", "web01", "up.bin");
    let ((), stats) = env.session("alice", |c| {
        c.put(&path, &data).unwrap();
        assert_eq!(c.get(&path).unwrap(), data, "read back through the proxy");
        // scp's form: web01:/abs and web01:rel (home).
        let scp_form = format!("web01:{}/up.bin", env.asset_dir("web01").display());
        assert_eq!(c.get(&scp_form).unwrap(), data);
        c.put("web01:in-home.txt", b"home").unwrap();
        c.put("web01:~/tilde.txt", b"tilde").unwrap();
        assert_eq!(c.get("/web01:in-home.txt").unwrap(), b"home");
    });
    assert_eq!(
        fs::read(env.asset_dir("web01").join("up.bin")).unwrap(),
        data
    );
    assert_eq!(
        fs::read(env.asset_dir("web01").join("home/in-home.txt")).unwrap(),
        b"home"
    );
    assert_eq!(
        fs::read(env.asset_dir("web01").join("home/tilde.txt")).unwrap(),
        b"tilde"
    );
    assert_eq!(stats.bytes_uploaded, data.len() as u64 + 9);
    assert_eq!(stats.bytes_downloaded, 2 * data.len() as u64 + 4);
    assert_eq!(
        env.assets.opened(),
        vec![("web01".into(), "deploy".into())],
        "one upstream, opened lazily, reused"
    );
    let events = env.events.all();
    let upload = events
        .iter()
        .find(|e| e.operation == TransferOp::Upload && e.path.ends_with("/up.bin"))
        .expect("the upload is logged");
    assert_eq!(
        (upload.size, &upload.result),
        (data.len() as u64, &TransferResult::Ok)
    );
    assert_eq!(
        (upload.asset.as_str(), upload.account.as_str(), upload.via),
        ("web01", "deploy", "sftp")
    );
    let downloads: Vec<&TransferEvent> = events
        .iter()
        .filter(|e| e.operation == TransferOp::Download && e.path.ends_with("/up.bin"))
        .collect();
    assert_eq!(downloads.len(), 2, "each download is logged: {events:#?}");
    assert!(downloads
        .iter()
        .all(|e| e.size == data.len() as u64 && e.result == TransferResult::Ok));
}

#[test]
fn upload_without_the_upload_action_is_permission_denied() {
    let env = Env::new();
    fs::write(env.asset_dir("db01").join("existing"), b"keep").unwrap();
    let target = env.vpath("db01", "db01", "new.txt");
    let existing = env.vpath("db01", "db01", "existing");
    env.session("alice", |c| {
        let message = assert_code(
            c.open(&target, WRITE_CREATE_TRUNC),
            FX_PERMISSION_DENIED,
            "upload to db01",
        );
        assert!(
            message.contains("upload"),
            "the message says why: {message}"
        );
        assert_code(
            c.open(&existing, 0x02),
            FX_PERMISSION_DENIED,
            "write to an existing file",
        );
        assert_code(
            c.mkdir(&env.vpath("db01", "db01", "d")),
            FX_PERMISSION_DENIED,
            "mkdir",
        );
        assert_code(c.chmod(&existing, 0o777), FX_PERMISSION_DENIED, "setstat");
        assert_eq!(c.get(&existing).unwrap(), b"keep", "download is granted");
    });
    assert!(
        !env.asset_dir("db01").join("new.txt").exists(),
        "a refused upload never reaches the asset"
    );
    assert!(!env.asset_dir("db01").join("d").exists());
    let denied: Vec<TransferEvent> = env
        .events
        .all()
        .into_iter()
        .filter(|e| matches!(e.result, TransferResult::Denied(_)))
        .collect();
    assert!(
        denied
            .iter()
            .any(|e| e.operation == TransferOp::Upload && e.path.ends_with("/new.txt")),
        "the refusal is logged: {denied:#?}"
    );
}

#[test]
fn delete_needs_the_delete_action() {
    let env = Env::new();
    for name in ["a", "b", "c"] {
        fs::write(env.asset_dir("web01").join(name), name).unwrap();
    }
    fs::create_dir(env.asset_dir("web01").join("dir")).unwrap();
    let p = |rel: &str| env.vpath("web01", "web01", rel);
    // bob: connect, download, upload — no delete.
    env.session("bob", |c| {
        assert_code(c.simple(REMOVE, &p("a")), FX_PERMISSION_DENIED, "bob's rm");
        assert_code(
            c.simple(RMDIR, &p("dir")),
            FX_PERMISSION_DENIED,
            "bob's rmdir",
        );
        assert_code(
            c.two_paths(RENAME, &p("a"), &p("b")),
            FX_PERMISSION_DENIED,
            "bob's rename over b",
        );
        assert_code(
            c.posix_rename(&p("a"), &p("b")),
            FX_PERMISSION_DENIED,
            "bob's posix-rename over b",
        );
        c.two_paths(RENAME, &p("a"), &p("a2"))
            .expect("a rename to a new name needs upload only");
    });
    assert!(
        env.asset_dir("web01").join("a2").exists() && env.asset_dir("web01").join("b").exists()
    );
    assert!(env.asset_dir("web01").join("dir").exists());
    env.session("alice", |c| {
        c.simple(REMOVE, &p("a2")).unwrap();
        c.simple(RMDIR, &p("dir")).unwrap();
        c.posix_rename(&p("c"), &p("b"))
            .expect("alice may rename over a file");
        assert_code(
            c.simple(REMOVE, &p("nope")),
            FX_NO_SUCH_FILE,
            "the target's own errors pass through",
        );
    });
    assert!(!env.asset_dir("web01").join("a2").exists());
    assert!(!env.asset_dir("web01").join("dir").exists());
    assert_eq!(fs::read(env.asset_dir("web01").join("b")).unwrap(), b"c");
    let events = env.events.all();
    let find = |op: TransferOp, suffix: &str, ok: bool| {
        events
            .iter()
            .any(|e| e.operation == op && e.path.ends_with(suffix) && e.result.is_ok() == ok)
    };
    assert!(
        find(TransferOp::Delete, "/a", false),
        "bob's refused rm is logged: {events:#?}"
    );
    assert!(
        find(TransferOp::Delete, "/a2", true),
        "alice's rm is logged"
    );
    assert!(find(TransferOp::Delete, "/dir", true));
    assert!(find(TransferOp::Rename, "/c", true));
    assert!(
        events.iter().any(|e| e.operation == TransferOp::Delete
            && e.path.ends_with("/nope")
            && matches!(e.result, TransferResult::Failed(_))),
        "a failed rm is logged as failed"
    );
}

#[test]
fn dot_dot_cannot_leave_a_folder() {
    let env = Env::new();
    fs::write(env.asset_dir("hidden").join("secret"), b"s").unwrap();
    fs::write(env.asset_dir("db01").join("file"), b"db").unwrap();
    let hidden = format!("{}/secret", env.asset_dir("hidden").display());
    env.session("alice", |c| {
        // Through web01's folder to a folder she has no grant for.
        let path = format!("/web01/../hidden{hidden}");
        assert_code(c.get(&path), FX_NO_SUCH_FILE, "../hidden");
        let deep = format!(
            "/web01{}/../../../../../../../../hidden{hidden}",
            env.asset_dir("web01").display()
        );
        assert_code(c.get(&deep), FX_NO_SUCH_FILE, "many ../");
        // Through web01 to db01: resolved in the tree, checked as db01.
        let to_db = format!("/web01/../db01{}/file", env.asset_dir("db01").display());
        assert_eq!(
            c.get(&to_db).unwrap(),
            b"db",
            "db01 may be read (download granted)"
        );
        let upload = format!("/web01/../db01{}/new", env.asset_dir("db01").display());
        assert_code(
            c.open(&upload, WRITE_CREATE_TRUNC),
            FX_PERMISSION_DENIED,
            "db01's own rules apply",
        );
        assert_eq!(c.realpath("/web01/../../..").unwrap(), "/");
        // scp's form: .. stays on the asset.
        assert_code(
            c.get("web01:/../../hidden:/etc/x"),
            FX_NO_SUCH_FILE,
            "web01:/../../hidden:/etc/x",
        );
    });
    assert!(
        !env.assets.opened().iter().any(|(a, _)| a == "hidden"),
        "no connection to hidden"
    );
    let to_web01 = String::from_utf8_lossy(&env.assets.sent_to("web01")).into_owned();
    assert!(
        !to_web01.contains("assets/hidden") && !to_web01.contains("assets/db01"),
        "web01 never saw a path meant for another asset: {to_web01:?}"
    );
    // scp's form stays on its asset: that was web01's own `/hidden:/etc/x`.
    assert!(
        to_web01.contains("/hidden:/etc/x"),
        "the scp-form path went to web01, normalized: {to_web01:?}"
    );
    assert!(!env.asset_dir("db01").join("new").exists());
}

#[test]
fn several_accounts_need_the_qualified_folder() {
    let env = Env::new();
    let dir = env.asset_dir("multi");
    env.session("alice", |c| {
        let message = assert_code(
            c.realpath(&format!("/multi{}", dir.display())),
            FX_NO_SUCH_FILE,
            "/multi",
        );
        assert_eq!(
            message,
            "multi: choose an account: root@multi or deploy@multi"
        );
        c.put(&format!("/root@multi{}/r", dir.display()), b"r")
            .unwrap();
        c.put(&format!("deploy@multi:{}/d", dir.display()), b"d")
            .unwrap();
        assert_eq!(c.realpath("/root@multi").unwrap(), "/root@multi");
        assert_eq!(
            c.realpath(&format!("/root@multi{}/../multi", dir.display()))
                .unwrap(),
            format!("/root@multi{}", dir.display())
        );
    });
    assert_eq!(
        env.assets.opened(),
        vec![
            ("multi".into(), "root".into()),
            ("multi".into(), "deploy".into())
        ],
        "one upstream per (asset, account)"
    );
}

#[test]
fn realpath_and_readlink_answers_stay_in_the_folder() {
    let env = Env::new();
    let dir = env.asset_dir("web01");
    std::os::unix::fs::symlink(dir.join("target"), dir.join("abs-link")).unwrap();
    env.session("alice", |c| {
        assert_eq!(c.realpath("/web01").unwrap(), "/web01");
        assert_eq!(
            c.realpath("web01:").unwrap(),
            format!("/web01{}", dir.join("home").display()),
            "web01: is the home"
        );
        assert_eq!(
            c.realpath(&format!("/web01{}/x/..", dir.display()))
                .unwrap(),
            format!("/web01{}", dir.display())
        );
        let mut reply = c.path_request(READLINK, &format!("/web01{}/abs-link", dir.display()));
        assert_eq!(reply.kind, NAME);
        reply.u32();
        assert_eq!(
            String::from_utf8_lossy(&reply.string()),
            format!("/web01{}/target", dir.display())
        );
        let link = format!("/web01{}/rel-link", dir.display());
        c.two_paths(SYMLINK, "target", &link)
            .expect("a relative symlink");
        let cross = format!("/db01{}/x", env.asset_dir("db01").display());
        assert_code(
            c.two_paths(SYMLINK, &cross, &format!("/web01{}/bad", dir.display())),
            FX_FAILURE,
            "cross-asset link",
        );
    });
    assert_eq!(
        fs::read_link(dir.join("rel-link")).unwrap(),
        PathBuf::from("target")
    );
    assert!(fs::symlink_metadata(dir.join("bad")).is_err());
}

#[test]
fn the_root_is_read_only_and_unknown_folders_do_not_exist() {
    let env = Env::new();
    env.session("alice", |c| {
        assert_code(
            c.open("/new.txt", WRITE_CREATE_TRUNC),
            FX_NO_SUCH_FILE,
            "a file at the root names no asset",
        );
        assert_code(
            c.open("/", WRITE_CREATE_TRUNC),
            FX_PERMISSION_DENIED,
            "writing the root",
        );
        assert_code(c.mkdir("/newasset"), FX_NO_SUCH_FILE, "mkdir at the root");
        assert_code(c.simple(RMDIR, "/"), FX_PERMISSION_DENIED, "rmdir /");
        assert_code(
            c.path_request(STAT, "/nope").status_ok(),
            FX_NO_SUCH_FILE,
            "stat of an unknown folder",
        );
        assert_code(
            c.path_request(LSTAT, "/hidden").status_ok(),
            FX_NO_SUCH_FILE,
            "a folder of no grant",
        );
        assert_code(
            c.list("/hidden"),
            FX_NO_SUCH_FILE,
            "listing a folder of no grant",
        );
        let message = assert_code(
            c.get("down01:/etc/hostname"),
            FX_FAILURE,
            "an asset that cannot be reached",
        );
        assert!(
            message.contains("Connection refused"),
            "the connection error is told: {message}"
        );
        // Handles that do not exist.
        assert_code(c.close(b"nope"), FX_FAILURE, "close of a bad handle");
        assert_code(
            c.read(&[0, 0, 0, 99], 0, 10),
            FX_FAILURE,
            "read of a bad handle",
        );
    });
}

#[test]
fn malformed_requests_get_bad_message_and_the_session_goes_on() {
    let env = Env::new();
    env.session("alice", |c| {
        // OPEN whose path length runs past the packet.
        c.send_raw(&[0, 0, 0, 9, OPEN, 0, 0, 0, 42, 0, 0, 0, 200]);
        let mut reply = c.receive();
        assert_eq!(reply.u32(), 42);
        assert_eq!(reply.status().0, FX_BAD_MESSAGE);
        // Unknown extension, unknown packet type.
        let (code, _) = c.request(EXTENDED, &[F::Str(b"copy-data")]).status();
        assert_eq!(code, 8, "OP_UNSUPPORTED");
        assert_eq!(c.request(99, &[]).status().0, 8);
        assert_eq!(c.list("/").unwrap().len(), 5, "still serving");
    });
}

#[test]
fn limits_are_announced_and_large_writes_pass() {
    let env = Env::new();
    let big = vec![0xabu8; 261_120];
    let path = env.vpath("web01", "web01", "big");
    env.session("alice", |c| {
        let mut reply = c.request(EXTENDED, &[F::Str(b"limits@openssh.com")]);
        assert_eq!(reply.kind, EXTENDED_REPLY);
        assert_eq!(reply.u64(), 262_144, "max packet");
        assert_eq!(reply.u64(), 261_120, "max read");
        assert_eq!(reply.u64(), 261_120, "max write");
        let handle = c.open(&path, WRITE_CREATE_TRUNC).unwrap();
        c.write(&handle, 0, &big).unwrap();
        c.close(&handle).unwrap();
        let handle = c.open(&path, READ_FLAG).unwrap();
        assert_eq!(c.read(&handle, 0, 261_120).unwrap(), big);
        c.close(&handle).unwrap();
    });
    assert_eq!(fs::read(env.asset_dir("web01").join("big")).unwrap(), big);
}

#[test]
fn writes_larger_than_the_target_takes_are_split_and_reads_clamped() {
    let env = Env::new();
    let data: Vec<u8> = (0..5000u32).map(|i| (i % 241) as u8).collect();
    let target = SmallTarget::new(Some(1000));
    env.session_with("alice", &target, |c| {
        let handle = c.open("/web01/f", WRITE_CREATE_TRUNC).unwrap();
        c.write(&handle, 10, &data)
            .expect("one client WRITE, one OK");
        c.close(&handle).unwrap();
        let handle = c.open("/web01/f", READ_FLAG).unwrap();
        let first = c.read(&handle, 10, 5000).unwrap();
        assert_eq!(
            first.len(),
            1000,
            "a read is clamped to the target's limit (a short read)"
        );
        assert_eq!(first, data[..1000]);
        c.close(&handle).unwrap();
    });
    let writes = target.writes.lock().unwrap().clone();
    assert_eq!(
        writes,
        vec![
            (10, 1000),
            (1010, 1000),
            (2010, 1000),
            (3010, 1000),
            (4010, 1000)
        ],
        "the WRITE reaches the target in pieces it accepts"
    );
    assert_eq!(target.file.lock().unwrap()[10..], data[..]);
    assert_eq!(target.reads.lock().unwrap().clone(), vec![1000]);
    let upload = env
        .events
        .all()
        .into_iter()
        .find(|e| e.operation == TransferOp::Upload)
        .expect("logged");
    assert_eq!(upload.size, 5000, "the whole write is counted once");
}

#[test]
fn a_target_without_limits_gets_32k_writes() {
    let env = Env::new();
    let target = SmallTarget::new(None);
    env.session_with("alice", &target, |c| {
        let handle = c.open("/web01/f", WRITE_CREATE_TRUNC).unwrap();
        c.write(&handle, 0, &vec![7u8; 100_000]).unwrap();
        c.close(&handle).unwrap();
    });
    let sizes: Vec<usize> = target.writes.lock().unwrap().iter().map(|w| w.1).collect();
    assert_eq!(sizes, vec![32768, 32768, 32768, 1696]);
}

#[test]
fn a_file_never_closed_is_logged_when_the_session_ends() {
    let env = Env::new();
    let path = env.vpath("web01", "web01", "partial");
    env.session("alice", |c| {
        let handle = c.open(&path, WRITE_CREATE_TRUNC).unwrap();
        c.write(&handle, 0, b"12345").unwrap();
    });
    let events = env.events.all();
    let partial = events
        .iter()
        .find(|e| e.path.ends_with("/partial"))
        .expect("logged");
    assert_eq!(partial.size, 5);
    assert!(
        matches!(&partial.result, TransferResult::Failed(m) if m.contains("before the file was closed")),
        "{partial:?}"
    );
}
