//! The SFTP proxy (`sftp::serve`) and the legacy scp / rsync command
//! rewriting (`transfer::parse`) against real OpenSSH pieces, without ssh:
//! each "asset" is a local `/usr/lib/openssh/sftp-server` started in its
//! own directory (its home), and the grants come from a policy in the test.
//!
//! Two kinds of tests:
//! - a packet-level client written here drives `serve` over a socket pair,
//!   for exact status codes (permission errors, traversal, the root);
//! - the real `sftp`, `scp` (SFTP and `-O` legacy modes) and `rsync`
//!   clients, given a fake `ssh` (`-S` / `-e`) that re-runs this test
//!   binary as the "bastion": `sftp_helper` below serves SFTP on its
//!   stdin and fd 3, or runs the rewritten scp / rsync command locally.
//!
//! Paths: an asset's files live in `<tmp>/assets/<asset>/`; its home is
//! `<tmp>/assets/<asset>/home`. The proxy sees absolute paths on the asset,
//! so `/web01<tmp>/assets/web01/x` is the file `<tmp>/assets/web01/x`.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jms_agent::daemon::session::sftp::{
    self, SftpContext, SftpStats, Upstream, UpstreamError, UpstreamStreams,
};
use jms_agent::daemon::session::transfer::{
    self, TransferEvent, TransferLog, TransferOp, TransferResult,
};
use jms_core::model::Protocol;
use jms_core::{Format, Policy, Query};

const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

const POLICY: &str = r#"
users:
  - {username: alice}
  - {username: bob}
assets:
  - name: web01
    address: 127.0.0.1
    protocols: [{name: ssh, port: 22}, {name: sftp, port: 22}]
    accounts: [{name: deploy, username: deploy, secret_type: password, secret: x}]
  - name: db01
    address: 127.0.0.1
    protocols: [{name: ssh, port: 22}, {name: sftp, port: 22}]
    accounts: [{name: postgres, username: postgres, secret_type: password, secret: x}]
  - name: multi
    address: 127.0.0.1
    protocols: [{name: sftp, port: 22}]
    accounts:
      - {name: root, username: root, secret_type: password, secret: x}
      - {name: deploy, username: deploy, secret_type: password, secret: x}
  - name: hidden
    address: 127.0.0.1
    protocols: [{name: sftp, port: 22}]
    accounts: [{name: root, username: root, secret_type: password, secret: x}]
  - name: down01
    address: 127.0.0.1
    protocols: [{name: sftp, port: 22}]
    accounts: [{name: root, username: root, secret_type: password, secret: x}]
grants:
  - {name: a-web, users: [alice], assets: [web01, multi, down01], accounts: ["@ALL"], protocols: [sftp], actions: [all]}
  - {name: a-db, users: [alice], assets: [db01], accounts: ["@ALL"], protocols: [sftp], actions: [connect, download]}
  - {name: b-web, users: [bob], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [connect, download, upload]}
"#;

// ---------------------------------------------------------------- fixtures

/// Transfer records, kept for assertions.
#[derive(Default)]
struct Events(Mutex<Vec<TransferEvent>>);

impl TransferLog for Events {
    fn record(&self, event: TransferEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    fn all(&self) -> Vec<TransferEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// Kills and reaps a local sftp-server when the proxy lets it go.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies what the proxy sends an asset into a buffer (to prove what
/// reached which asset): the small writes, i.e. every request but WRITE.
struct Tee {
    inner: Box<dyn Write + Send>,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Requests naming paths are small; file data is not kept.
        if n < 4096 {
            self.seen.lock().unwrap().extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Each asset is `sftp-server -d <root>/<asset>/home`; `down01` fails.
struct LocalAssets {
    root: PathBuf,
    opened: Mutex<Vec<(String, String)>>,
    sent: Mutex<HashMap<String, Arc<Mutex<Vec<u8>>>>>,
}

impl LocalAssets {
    fn new(root: &Path) -> LocalAssets {
        for asset in ["web01", "db01", "multi", "hidden"] {
            fs::create_dir_all(root.join(asset).join("home")).unwrap();
        }
        LocalAssets {
            root: root.to_path_buf(),
            opened: Mutex::new(Vec::new()),
            sent: Mutex::new(HashMap::new()),
        }
    }

    fn opened(&self) -> Vec<(String, String)> {
        self.opened.lock().unwrap().clone()
    }

    /// Every byte the proxy sent to `asset`.
    fn sent_to(&self, asset: &str) -> Vec<u8> {
        self.sent
            .lock()
            .unwrap()
            .get(asset)
            .map(|s| s.lock().unwrap().clone())
            .unwrap_or_default()
    }
}

impl Upstream for LocalAssets {
    fn open(&self, asset: &str, account: &str) -> Result<UpstreamStreams, UpstreamError> {
        self.opened
            .lock()
            .unwrap()
            .push((asset.to_string(), account.to_string()));
        if asset == "down01" {
            return Err(UpstreamError(
                "down01: cannot connect: Connection refused".into(),
            ));
        }
        let mut child = Command::new(SFTP_SERVER)
            .arg("-d")
            .arg(self.root.join(asset).join("home"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{SFTP_SERVER} should start (openssh-server installed?): {e}")
            });
        let seen = Arc::clone(
            self.sent
                .lock()
                .unwrap()
                .entry(asset.to_string())
                .or_default(),
        );
        let writer = Tee {
            inner: Box::new(child.stdin.take().unwrap()),
            seen,
        };
        Ok(UpstreamStreams {
            writer: Box::new(writer),
            reader: Box::new(child.stdout.take().unwrap()),
            guard: Box::new(Reap(child)),
        })
    }
}

fn load_policy(text: &str) -> Policy {
    Policy::parse(text, Format::Yaml, "test.yaml", Path::new(".")).expect("the test policy loads")
}

/// One test's assets, policy and log.
struct Env {
    dir: tempfile::TempDir,
    assets: LocalAssets,
    policy: Arc<Policy>,
    events: Events,
}

impl Env {
    fn new() -> Env {
        assert!(
            Path::new(SFTP_SERVER).exists(),
            "{SFTP_SERVER} is needed (openssh-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let assets = LocalAssets::new(&dir.path().join("assets"));
        Env {
            dir,
            assets,
            policy: Arc::new(load_policy(POLICY)),
            events: Events::default(),
        }
    }

    /// An asset's directory on disk.
    fn asset_dir(&self, asset: &str) -> PathBuf {
        self.assets.root.join(asset)
    }

    /// The virtual path of `rel` inside `asset`'s directory.
    fn vpath(&self, folder: &str, asset: &str, rel: &str) -> String {
        format!("/{folder}{}/{rel}", self.asset_dir(asset).display())
    }

    /// Runs `body` with a client connected to a proxy for `user`.
    fn session<T>(&self, user: &str, body: impl FnOnce(&mut Client) -> T) -> (T, SftpStats) {
        self.session_with(user, &self.assets, body)
    }

    /// [`Env::session`] with another upstream.
    fn session_with<T>(
        &self,
        user: &str,
        upstream: &dyn Upstream,
        body: impl FnOnce(&mut Client) -> T,
    ) -> (T, SftpStats) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let policy = Arc::clone(&self.policy);
        let current = move || Arc::clone(&policy);
        let ctx = SftpContext {
            user,
            policy: &current,
            upstream,
            log: &self.events,
        };
        std::thread::scope(|scope| {
            let input: OwnedFd = theirs.try_clone().unwrap().into();
            let output: OwnedFd = theirs.into();
            let server = scope.spawn(|| sftp::serve(&ctx, input, output));
            ours.set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let mut client = Client {
                stream: ours,
                next: 1,
            };
            client.init();
            let value = body(&mut client);
            client.stream.shutdown(std::net::Shutdown::Write).unwrap();
            let stats = server
                .join()
                .expect("serve must not panic")
                .expect("serve ends cleanly on EOF");
            (value, stats)
        })
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
            writer: Box::new(proxy_side.try_clone().unwrap()),
            reader: Box::new(proxy_side),
            guard: Box::new(()),
        })
    }
}

// ---------------------------------------------------- a small SFTP client

const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const LSTAT: u8 = 7;
const SETSTAT: u8 = 9;
const OPENDIR: u8 = 11;
const READDIR: u8 = 12;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const REALPATH: u8 = 16;
const STAT: u8 = 17;
const RENAME: u8 = 18;
const READLINK: u8 = 19;
const SYMLINK: u8 = 20;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const NAME: u8 = 104;
const ATTRS: u8 = 105;
const EXTENDED: u8 = 200;
const EXTENDED_REPLY: u8 = 201;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;
const FX_NO_SUCH_FILE: u32 = 2;
const FX_PERMISSION_DENIED: u32 = 3;
const FX_FAILURE: u32 = 4;
const FX_BAD_MESSAGE: u32 = 5;

const READ_FLAG: u32 = 1;
const WRITE_CREATE_TRUNC: u32 = 0x02 | 0x08 | 0x10;

/// A field of a request.
enum F<'a> {
    U32(u32),
    U64(u64),
    Str(&'a [u8]),
}

/// A reply, parsed just enough.
#[derive(Debug)]
struct Reply {
    kind: u8,
    body: Vec<u8>,
    pos: usize,
}

impl Reply {
    fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.body[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_be_bytes(self.body[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        v
    }
    fn string(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        let v = self.body[self.pos..self.pos + n].to_vec();
        self.pos += n;
        v
    }
    /// Status code and message of a STATUS reply.
    fn status(mut self) -> (u32, String) {
        assert_eq!(self.kind, STATUS, "expected a STATUS reply, got {self:?}");
        let code = self.u32();
        let message = String::from_utf8_lossy(&self.string()).into_owned();
        (code, message)
    }
    /// The permissions of an ATTRS reply.
    fn permissions(mut self) -> u32 {
        assert_eq!(self.kind, ATTRS, "expected ATTRS, got {self:?}");
        let flags = self.u32();
        if flags & 1 != 0 {
            self.u64();
        }
        if flags & 2 != 0 {
            self.u64();
        }
        assert!(flags & 4 != 0, "ATTRS without permissions");
        self.u32()
    }
}

struct Client {
    stream: UnixStream,
    next: u32,
}

impl Client {
    fn send_raw(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).unwrap();
    }

    fn receive(&mut self) -> Reply {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .expect("a reply from the proxy");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut body).unwrap();
        Reply {
            kind: body[0],
            body,
            pos: 1,
        }
    }

    fn request(&mut self, kind: u8, fields: &[F<'_>]) -> Reply {
        let id = self.next;
        self.next += 1;
        let mut body = vec![kind];
        body.extend_from_slice(&id.to_be_bytes());
        for field in fields {
            match field {
                F::U32(v) => body.extend_from_slice(&v.to_be_bytes()),
                F::U64(v) => body.extend_from_slice(&v.to_be_bytes()),
                F::Str(s) => {
                    body.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    body.extend_from_slice(s);
                }
            }
        }
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        self.send_raw(&frame);
        let mut reply = self.receive();
        assert_eq!(reply.u32(), id, "the reply must carry the request's id");
        reply
    }

    fn init(&mut self) {
        self.send_raw(&[0, 0, 0, 5, 1, 0, 0, 0, 3]);
        let mut reply = self.receive();
        assert_eq!(reply.kind, 2, "VERSION expected");
        assert_eq!(reply.u32(), 3, "SFTP version 3");
    }

    fn path_request(&mut self, kind: u8, path: &str) -> Reply {
        self.request(kind, &[F::Str(path.as_bytes())])
    }

    fn realpath(&mut self, path: &str) -> Result<String, (u32, String)> {
        let mut reply = self.path_request(REALPATH, path);
        if reply.kind == STATUS {
            return Err(reply.status());
        }
        assert_eq!(reply.kind, NAME);
        assert_eq!(reply.u32(), 1);
        Ok(String::from_utf8_lossy(&reply.string()).into_owned())
    }

    fn open(&mut self, path: &str, flags: u32) -> Result<Vec<u8>, (u32, String)> {
        let mut reply = self.request(OPEN, &[F::Str(path.as_bytes()), F::U32(flags), F::U32(0)]);
        match reply.kind {
            HANDLE => Ok(reply.string()),
            _ => Err(reply.status()),
        }
    }

    fn opendir(&mut self, path: &str) -> Result<Vec<u8>, (u32, String)> {
        let mut reply = self.path_request(OPENDIR, path);
        match reply.kind {
            HANDLE => Ok(reply.string()),
            _ => Err(reply.status()),
        }
    }

    /// Every name in a directory.
    fn list(&mut self, path: &str) -> Result<Vec<String>, (u32, String)> {
        let handle = self.opendir(path)?;
        let mut names = Vec::new();
        loop {
            let mut reply = self.request(READDIR, &[F::Str(&handle)]);
            if reply.kind == STATUS {
                assert_eq!(reply.status().0, FX_EOF);
                break;
            }
            assert_eq!(reply.kind, NAME);
            for _ in 0..reply.u32() {
                names.push(String::from_utf8_lossy(&reply.string()).into_owned());
                reply.string();
                let flags = reply.u32();
                reply.pos += [(1, 8), (2, 8), (4, 4), (8, 8)]
                    .iter()
                    .filter(|(bit, _)| flags & bit != 0)
                    .map(|(_, n)| n)
                    .sum::<usize>();
            }
        }
        self.close(&handle).unwrap();
        names.sort();
        Ok(names)
    }

    fn close(&mut self, handle: &[u8]) -> Result<(), (u32, String)> {
        ok(self.request(CLOSE, &[F::Str(handle)]).status())
    }

    fn write(&mut self, handle: &[u8], offset: u64, data: &[u8]) -> Result<(), (u32, String)> {
        ok(self
            .request(WRITE, &[F::Str(handle), F::U64(offset), F::Str(data)])
            .status())
    }

    fn read(&mut self, handle: &[u8], offset: u64, len: u32) -> Result<Vec<u8>, (u32, String)> {
        let mut reply = self.request(READ, &[F::Str(handle), F::U64(offset), F::U32(len)]);
        match reply.kind {
            DATA => Ok(reply.string()),
            _ => Err(reply.status()),
        }
    }

    fn put(&mut self, path: &str, data: &[u8]) -> Result<(), (u32, String)> {
        let handle = self.open(path, WRITE_CREATE_TRUNC)?;
        self.write(&handle, 0, data)?;
        self.close(&handle)
    }

    fn get(&mut self, path: &str) -> Result<Vec<u8>, (u32, String)> {
        let handle = self.open(path, READ_FLAG)?;
        let mut out = Vec::new();
        loop {
            match self.read(&handle, out.len() as u64, 32768) {
                Ok(data) => out.extend_from_slice(&data),
                Err((FX_EOF, _)) => break,
                Err(e) => return Err(e),
            }
        }
        self.close(&handle)?;
        Ok(out)
    }

    fn simple(&mut self, kind: u8, path: &str) -> Result<(), (u32, String)> {
        ok(self.path_request(kind, path).status())
    }

    fn two_paths(&mut self, kind: u8, a: &str, b: &str) -> Result<(), (u32, String)> {
        ok(self
            .request(kind, &[F::Str(a.as_bytes()), F::Str(b.as_bytes())])
            .status())
    }

    fn posix_rename(&mut self, a: &str, b: &str) -> Result<(), (u32, String)> {
        let fields = [
            F::Str(b"posix-rename@openssh.com"),
            F::Str(a.as_bytes()),
            F::Str(b.as_bytes()),
        ];
        ok(self.request(EXTENDED, &fields).status())
    }

    fn mkdir(&mut self, path: &str) -> Result<(), (u32, String)> {
        ok(self
            .request(MKDIR, &[F::Str(path.as_bytes()), F::U32(0)])
            .status())
    }

    fn chmod(&mut self, path: &str, mode: u32) -> Result<(), (u32, String)> {
        ok(self
            .request(SETSTAT, &[F::Str(path.as_bytes()), F::U32(4), F::U32(mode)])
            .status())
    }
}

fn ok((code, message): (u32, String)) -> Result<(), (u32, String)> {
    if code == FX_OK {
        Ok(())
    } else {
        Err((code, message))
    }
}

#[track_caller]
fn assert_code<T: std::fmt::Debug>(
    result: Result<T, (u32, String)>,
    code: u32,
    what: &str,
) -> String {
    match result {
        Err((got, message)) if got == code => message,
        other => panic!("{what}: expected status {code}, got {other:?}"),
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

trait StatusOk {
    fn status_ok(self) -> Result<(), (u32, String)>;
}

impl StatusOk for Reply {
    fn status_ok(self) -> Result<(), (u32, String)> {
        if self.kind == STATUS {
            ok(self.status())
        } else {
            Ok(())
        }
    }
}

// ------------------------------------ real clients through a fake ssh

/// Run as the "bastion" by the fake ssh: with `JMS_T_HELPER` set, serves
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
            policy: &current,
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
