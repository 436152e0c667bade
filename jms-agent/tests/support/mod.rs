//! Shared fixtures of the SFTP proxy tests: the test policy, local
//! "assets" (`/usr/lib/openssh/sftp-server` started in a directory of its
//! own), a transfer log kept in memory, and a packet-level SFTP client
//! driving `sftp::serve` over a socket pair.
//!
//! Paths: an asset's files live in `<tmp>/assets/<asset>/`; its home is
//! `<tmp>/assets/<asset>/home`. The proxy sees absolute paths on the asset,
//! so `/web01<tmp>/assets/web01/x` is the file `<tmp>/assets/web01/x`.

#![allow(dead_code)] // each test binary uses its own part

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jms_agent::daemon::session::sftp::{
    self, SftpContext, SftpStats, Upstream, UpstreamError, UpstreamStreams,
};
use jms_agent::daemon::session::transfer::{TransferEvent, TransferLog};
use jms_core::{Format, Policy};

pub const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";

pub const POLICY: &str = r#"
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
pub struct Events(pub Mutex<Vec<TransferEvent>>);

impl TransferLog for Events {
    fn record(&self, event: TransferEvent) {
        self.0.lock().unwrap().push(event);
    }
}

impl Events {
    pub fn all(&self) -> Vec<TransferEvent> {
        self.0.lock().unwrap().clone()
    }
}

/// Kills and reaps a local sftp-server when the proxy lets it go.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies what the proxy sends an asset into a buffer (to prove what
/// reached which asset): the small writes, i.e. every request but WRITE.
pub struct Tee {
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
pub struct LocalAssets {
    pub root: PathBuf,
    opened: Mutex<Vec<(String, String)>>,
    sent: Mutex<HashMap<String, Arc<Mutex<Vec<u8>>>>>,
}

impl LocalAssets {
    pub fn new(root: &Path) -> LocalAssets {
        for asset in ["web01", "db01", "multi", "hidden"] {
            fs::create_dir_all(root.join(asset).join("home")).unwrap();
        }
        LocalAssets {
            root: root.to_path_buf(),
            opened: Mutex::new(Vec::new()),
            sent: Mutex::new(HashMap::new()),
        }
    }

    pub fn opened(&self) -> Vec<(String, String)> {
        self.opened.lock().unwrap().clone()
    }

    /// Every byte the proxy sent to `asset`.
    pub fn sent_to(&self, asset: &str) -> Vec<u8> {
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

pub fn load_policy(text: &str) -> Policy {
    Policy::parse(text, Format::Yaml, "test.yaml", Path::new(".")).expect("the test policy loads")
}

/// One test's assets, policy and log.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub assets: LocalAssets,
    pub policy: Arc<Policy>,
    pub events: Events,
}

impl Env {
    pub fn new() -> Env {
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
    pub fn asset_dir(&self, asset: &str) -> PathBuf {
        self.assets.root.join(asset)
    }

    /// The virtual path of `rel` inside `asset`'s directory.
    pub fn vpath(&self, folder: &str, asset: &str, rel: &str) -> String {
        format!("/{folder}{}/{rel}", self.asset_dir(asset).display())
    }

    /// Runs `body` with a client connected to a proxy for `user`.
    pub fn session<T>(&self, user: &str, body: impl FnOnce(&mut Client) -> T) -> (T, SftpStats) {
        self.session_with(user, &self.assets, body)
    }

    /// [`Env::session`] with another upstream.
    pub fn session_with<T>(
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
            folders: &sftp::PolicyFolders {
                user,
                policy: &current,
            },
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

// ---------------------------------------------------- a small SFTP client

pub const OPEN: u8 = 3;
pub const CLOSE: u8 = 4;
pub const READ: u8 = 5;
pub const WRITE: u8 = 6;
pub const LSTAT: u8 = 7;
pub const SETSTAT: u8 = 9;
pub const OPENDIR: u8 = 11;
pub const READDIR: u8 = 12;
pub const REMOVE: u8 = 13;
pub const MKDIR: u8 = 14;
pub const RMDIR: u8 = 15;
pub const REALPATH: u8 = 16;
pub const STAT: u8 = 17;
pub const RENAME: u8 = 18;
pub const READLINK: u8 = 19;
pub const SYMLINK: u8 = 20;
pub const STATUS: u8 = 101;
pub const HANDLE: u8 = 102;
pub const DATA: u8 = 103;
pub const NAME: u8 = 104;
pub const ATTRS: u8 = 105;
pub const EXTENDED: u8 = 200;
pub const EXTENDED_REPLY: u8 = 201;

pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_FAILURE: u32 = 4;
pub const FX_BAD_MESSAGE: u32 = 5;

pub const READ_FLAG: u32 = 1;
pub const WRITE_CREATE_TRUNC: u32 = 0x02 | 0x08 | 0x10;

/// A field of a request.
pub enum F<'a> {
    U32(u32),
    U64(u64),
    Str(&'a [u8]),
}

/// A reply, parsed just enough.
#[derive(Debug)]
pub struct Reply {
    pub kind: u8,
    pub body: Vec<u8>,
    pub pos: usize,
}

impl Reply {
    pub fn u32(&mut self) -> u32 {
        let v = u32::from_be_bytes(self.body[self.pos..self.pos + 4].try_into().unwrap());
        self.pos += 4;
        v
    }
    pub fn u64(&mut self) -> u64 {
        let v = u64::from_be_bytes(self.body[self.pos..self.pos + 8].try_into().unwrap());
        self.pos += 8;
        v
    }
    pub fn string(&mut self) -> Vec<u8> {
        let n = self.u32() as usize;
        let v = self.body[self.pos..self.pos + n].to_vec();
        self.pos += n;
        v
    }
    /// Status code and message of a STATUS reply.
    pub fn status(mut self) -> (u32, String) {
        assert_eq!(self.kind, STATUS, "expected a STATUS reply, got {self:?}");
        let code = self.u32();
        let message = String::from_utf8_lossy(&self.string()).into_owned();
        (code, message)
    }
    /// The permissions of an ATTRS reply.
    pub fn permissions(mut self) -> u32 {
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

pub struct Client {
    pub stream: UnixStream,
    pub next: u32,
}

impl Client {
    pub fn send_raw(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).unwrap();
    }

    pub fn receive(&mut self) -> Reply {
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

    pub fn request(&mut self, kind: u8, fields: &[F<'_>]) -> Reply {
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

    pub fn init(&mut self) {
        self.send_raw(&[0, 0, 0, 5, 1, 0, 0, 0, 3]);
        let mut reply = self.receive();
        assert_eq!(reply.kind, 2, "VERSION expected");
        assert_eq!(reply.u32(), 3, "SFTP version 3");
    }

    pub fn path_request(&mut self, kind: u8, path: &str) -> Reply {
        self.request(kind, &[F::Str(path.as_bytes())])
    }

    pub fn realpath(&mut self, path: &str) -> Result<String, (u32, String)> {
        let mut reply = self.path_request(REALPATH, path);
        if reply.kind == STATUS {
            return Err(reply.status());
        }
        assert_eq!(reply.kind, NAME);
        assert_eq!(reply.u32(), 1);
        Ok(String::from_utf8_lossy(&reply.string()).into_owned())
    }

    pub fn open(&mut self, path: &str, flags: u32) -> Result<Vec<u8>, (u32, String)> {
        let mut reply = self.request(OPEN, &[F::Str(path.as_bytes()), F::U32(flags), F::U32(0)]);
        match reply.kind {
            HANDLE => Ok(reply.string()),
            _ => Err(reply.status()),
        }
    }

    pub fn opendir(&mut self, path: &str) -> Result<Vec<u8>, (u32, String)> {
        let mut reply = self.path_request(OPENDIR, path);
        match reply.kind {
            HANDLE => Ok(reply.string()),
            _ => Err(reply.status()),
        }
    }

    /// Every name in a directory.
    pub fn list(&mut self, path: &str) -> Result<Vec<String>, (u32, String)> {
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

    pub fn close(&mut self, handle: &[u8]) -> Result<(), (u32, String)> {
        ok(self.request(CLOSE, &[F::Str(handle)]).status())
    }

    pub fn write(&mut self, handle: &[u8], offset: u64, data: &[u8]) -> Result<(), (u32, String)> {
        ok(self
            .request(WRITE, &[F::Str(handle), F::U64(offset), F::Str(data)])
            .status())
    }

    pub fn read(&mut self, handle: &[u8], offset: u64, len: u32) -> Result<Vec<u8>, (u32, String)> {
        let mut reply = self.request(READ, &[F::Str(handle), F::U64(offset), F::U32(len)]);
        match reply.kind {
            DATA => Ok(reply.string()),
            _ => Err(reply.status()),
        }
    }

    pub fn put(&mut self, path: &str, data: &[u8]) -> Result<(), (u32, String)> {
        let handle = self.open(path, WRITE_CREATE_TRUNC)?;
        self.write(&handle, 0, data)?;
        self.close(&handle)
    }

    pub fn get(&mut self, path: &str) -> Result<Vec<u8>, (u32, String)> {
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

    pub fn simple(&mut self, kind: u8, path: &str) -> Result<(), (u32, String)> {
        ok(self.path_request(kind, path).status())
    }

    pub fn two_paths(&mut self, kind: u8, a: &str, b: &str) -> Result<(), (u32, String)> {
        ok(self
            .request(kind, &[F::Str(a.as_bytes()), F::Str(b.as_bytes())])
            .status())
    }

    pub fn posix_rename(&mut self, a: &str, b: &str) -> Result<(), (u32, String)> {
        let fields = [
            F::Str(b"posix-rename@openssh.com"),
            F::Str(a.as_bytes()),
            F::Str(b.as_bytes()),
        ];
        ok(self.request(EXTENDED, &fields).status())
    }

    pub fn mkdir(&mut self, path: &str) -> Result<(), (u32, String)> {
        ok(self
            .request(MKDIR, &[F::Str(path.as_bytes()), F::U32(0)])
            .status())
    }

    pub fn chmod(&mut self, path: &str, mode: u32) -> Result<(), (u32, String)> {
        ok(self
            .request(SETSTAT, &[F::Str(path.as_bytes()), F::U32(4), F::U32(mode)])
            .status())
    }
}

pub fn ok((code, message): (u32, String)) -> Result<(), (u32, String)> {
    if code == FX_OK {
        Ok(())
    } else {
        Err((code, message))
    }
}

#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, (u32, String)>,
    code: u32,
    what: &str,
) -> String {
    match result {
        Err((got, message)) if got == code => message,
        other => panic!("{what}: expected status {code}, got {other:?}"),
    }
}

pub trait StatusOk {
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
