//! The proxy's main loop: reads the engineer's requests, answers what the
//! virtual root holds itself, checks actions against the grants, and sends
//! the rest to the folder's upstream with ids, handles and paths rewritten.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::Scope;
use std::time::{Duration, Instant};

use chrono::Utc;
use jms_core::model::Action;

use super::codec::*;
use super::folders::Folder;
use super::paths::{self, Location};
use super::upstream::{
    self, event, Conn, Handle, HandleInfo, Link, NotSent, Pending, Shared, WriteGroup, READ_BUFFER,
};
use super::{SftpContext, SftpError, SftpStats};
use crate::daemon::session::transfer::{TransferOp, TransferResult};

/// Root entries per READDIR reply.
const ROOT_BATCH: usize = 100;
/// How long the proxy waits for its own probe of the target.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long targets get to answer what is in flight once the engineer left.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Extensions the proxy offers (it answers `limits@openssh.com` itself and
/// passes the others to the targets, checking them like the base requests).
const EXTENSIONS: &[(&str, &str)] = &[
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("fstatvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("lsetstat@openssh.com", "1"),
    ("limits@openssh.com", "1"),
];

fn handle_number(handle: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(handle).ok().map(u32::from_be_bytes)
}

/// Where a path was routed.
enum Routed {
    Root,
    Folder {
        folder: Folder,
        spec: String,
        remote: Vec<u8>,
    },
}

type Refusal = (u32, String);

struct Session<'s, 'e> {
    ctx: &'e SftpContext<'e>,
    shared: &'e Shared<'e>,
    scope: &'s Scope<'s, 'e>,
    conns: HashMap<Folder, Conn>,
    pumps: usize,
    done_tx: mpsc::Sender<()>,
    started: u32,
}

/// Serves one engineer until her side closes: the totals, and how it ended.
pub fn run(
    ctx: &SftpContext<'_>,
    input: impl Read + Send,
    output: File,
) -> (SftpStats, Result<(), SftpError>) {
    let shared = Shared {
        out: Mutex::new(output),
        handles: Mutex::new((1, HashMap::new())),
        log: ctx.log,
        broken: AtomicBool::new(false),
        uploaded: AtomicU64::new(0),
        downloaded: AtomicU64::new(0),
    };
    let (done_tx, done_rx) = mpsc::channel();
    let result = std::thread::scope(|scope| {
        let mut session = Session {
            ctx,
            shared: &shared,
            scope,
            conns: HashMap::new(),
            pumps: 0,
            done_tx,
            started: Utc::now().timestamp().clamp(0, i64::from(u32::MAX)) as u32,
        };
        let result = session.serve(BufReader::with_capacity(READ_BUFFER, input));
        // Close every upstream's requests, give the replies in flight a
        // moment, then let the connections go (ending any pump still up).
        for conn in session.conns.values_mut() {
            conn.close_requests();
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        for _ in 0..session.pumps {
            let left = deadline.saturating_duration_since(Instant::now());
            if done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        for conn in session.conns.values_mut() {
            conn.release();
        }
        result
    });
    // Files never closed: logged with what went through.
    let handles = std::mem::take(&mut shared.handles().1);
    for handle in handles.into_values() {
        if let Handle::Remote { info, .. } = handle {
            let result =
                TransferResult::Failed("the session ended before the file was closed".into());
            for e in info.events(&result) {
                shared.log.record(e);
            }
        }
    }
    let stats = SftpStats {
        bytes_uploaded: shared.uploaded.load(Ordering::Relaxed),
        bytes_downloaded: shared.downloaded.load(Ordering::Relaxed),
    };
    (stats, result)
}

impl<'s, 'e> Session<'s, 'e> {
    fn serve(&mut self, mut input: BufReader<impl Read>) -> Result<(), SftpError> {
        let mut frame = Vec::with_capacity(MAX_PACKET as usize + 4);
        loop {
            if self.shared.broken.load(Ordering::SeqCst) {
                return Err(SftpError::Client(std::io::ErrorKind::BrokenPipe.into()));
            }
            match read_frame_into(&mut input, MAX_PACKET, &mut frame) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(SftpError::Protocol(e.to_string()))
                }
                Err(e) => return Err(SftpError::Client(e)),
            }
            let kind = frame_type(&frame);
            if kind == FXP_INIT {
                self.version();
                continue;
            }
            if frame.len() < 9 {
                return Err(SftpError::Protocol(format!(
                    "packet type {kind} without a request id"
                )));
            }
            let id = frame_id(&frame);
            if self.request(kind, id, &mut frame).is_err() {
                self.reply(status(id, FX_BAD_MESSAGE, "malformed request"));
            }
        }
    }

    fn reply(&self, frame: Vec<u8>) {
        self.shared.send(&frame);
    }

    /// Answers with an error status.
    fn deny(&self, id: u32, (code, message): Refusal) {
        self.reply(status(id, code, &message));
    }

    /// [`Session::deny`], for an early `return`.
    fn refuse(&self, id: u32, refusal: Refusal) -> Result<(), Malformed> {
        self.deny(id, refusal);
        Ok(())
    }

    fn version(&self) {
        let mut frame = Frame::new(FXP_VERSION).u32(3);
        for (name, data) in EXTENSIONS {
            frame = frame.string(name.as_bytes()).string(data.as_bytes());
        }
        self.reply(frame.finish());
    }

    fn request(&mut self, kind: u8, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        match kind {
            FXP_OPEN => self.open(id, frame),
            FXP_OPENDIR => self.opendir(id, frame),
            FXP_CLOSE => self.close(id, frame),
            FXP_READ => self.read(id, frame),
            FXP_WRITE => self.write(id, frame),
            FXP_READDIR => self.readdir(id, frame),
            FXP_FSTAT => self.by_handle(id, frame, None),
            FXP_FSETSTAT => self.by_handle(id, frame, Some(Action::Upload)),
            FXP_STAT | FXP_LSTAT => self.stat(id, frame),
            FXP_SETSTAT => self.setstat(id, frame),
            FXP_MKDIR => self.mkdir(id, frame),
            FXP_REMOVE | FXP_RMDIR => self.remove(id, frame),
            FXP_REALPATH | FXP_READLINK => self.realpath(id, frame),
            FXP_RENAME => self.rename(id, frame, false),
            FXP_SYMLINK => self.symlink(id, frame),
            FXP_EXTENDED => self.extended(id, frame),
            _ => {
                self.reply(status(id, FX_OP_UNSUPPORTED, "operation not supported"));
                Ok(())
            }
        }
    }

    // ---- routing and checks ----

    fn route(&self, path: &[u8]) -> Result<Routed, Refusal> {
        match paths::locate(path) {
            Location::Root => Ok(Routed::Root),
            Location::Folder { spec, remote } => match self.ctx.folders.resolve(&spec) {
                Ok(folder) => Ok(Routed::Folder {
                    folder,
                    spec,
                    remote,
                }),
                Err(e) => Err((FX_NO_SUCH_FILE, e.message())),
            },
        }
    }

    /// Routes a path that must be inside a folder (to change something).
    fn route_in_folder(&self, path: &[u8]) -> Result<(Folder, String, Vec<u8>), Refusal> {
        match self.route(path)? {
            Routed::Root => Err((FX_PERMISSION_DENIED, ROOT_READ_ONLY.into())),
            Routed::Folder {
                folder,
                spec,
                remote,
            } => Ok((folder, spec, remote)),
        }
    }

    /// Checks `action`; a refusal is logged as `operation` on `path`.
    fn allow(
        &self,
        folder: &Folder,
        action: Action,
        operation: TransferOp,
        path: &[u8],
    ) -> Result<(), Refusal> {
        self.ctx.folders.check(folder, action).map_err(|reason| {
            let message = format!("permission denied by the bastion: {reason}");
            self.shared.log.record(event(
                folder,
                operation,
                lossy(path),
                None,
                0,
                TransferResult::Denied(reason),
            ));
            (FX_PERMISSION_DENIED, message)
        })
    }

    // ---- upstream connections ----

    /// The live connection of `folder`, opened now if needed.
    fn conn(&mut self, folder: &Folder) -> Result<&mut Conn, String> {
        let alive = self.conns.get(folder).is_some_and(|c| c.link.is_alive());
        if !alive {
            if let Some(mut old) = self.conns.remove(folder) {
                old.release();
            }
            let streams = self
                .ctx
                .upstream
                .open(&folder.asset, &folder.account)
                .map_err(|e| format!("{}: {e}", folder.asset))?;
            let (conn, reader) = Conn::open(folder.clone(), streams)
                .map_err(|e| format!("{}: {e}", folder.asset))?;
            let link = Arc::clone(&conn.link);
            let (shared, done) = (self.shared, self.done_tx.clone());
            self.scope
                .spawn(move || upstream::pump(link, reader, shared, done));
            self.pumps += 1;
            self.conns.insert(folder.clone(), conn);
        }
        self.conns
            .get_mut(folder)
            .ok_or_else(|| format!("{}: no connection", folder.asset))
    }

    /// Sends a request to `folder`'s upstream; when that fails the client
    /// gets a FAILURE (and logged operations are logged as failed).
    fn send(&mut self, folder: &Folder, pending: Pending, frame: impl AsMut<[u8]>) {
        let failure = match self.conn(folder) {
            Ok(conn) => conn.send(pending, frame).err(),
            Err(message) => Some(NotSent(message, pending)),
        };
        if let Some(NotSent(message, pending)) = failure {
            upstream::abandon(pending, self.shared, FX_FAILURE, &message);
        }
    }

    /// Sends a request on the connection a handle belongs to (never a new
    /// one: the handle died with its connection).
    fn send_on(&mut self, link: &Arc<Link>, pending: Pending, frame: impl AsMut<[u8]>) {
        let conn = self
            .conns
            .get_mut(&link.folder)
            .filter(|c| Arc::ptr_eq(&c.link, link) && link.is_alive());
        let failure = match conn {
            Some(conn) => conn.send(pending, frame).err(),
            None => Some(NotSent(
                format!("connection to {} lost", link.folder.asset),
                pending,
            )),
        };
        if let Some(NotSent(message, pending)) = failure {
            upstream::abandon(pending, self.shared, FX_CONNECTION_LOST, &message);
        }
    }

    /// Asks the target whether `remote` exists (for RENAME over a file).
    fn exists(&mut self, folder: &Folder, remote: &[u8]) -> Result<bool, String> {
        let (tx, rx) = mpsc::channel();
        let frame = Frame::new(FXP_LSTAT).u32(0).string(remote).finish();
        let conn = self.conn(folder)?;
        if let Err(NotSent(message, _)) = conn.send(Pending::Probe(tx), frame) {
            return Err(message);
        }
        let reply = rx
            .recv_timeout(PROBE_TIMEOUT)
            .map_err(|_| format!("{}: no answer", folder.asset))?;
        Ok(status_code(&reply) != Some(FX_NO_SUCH_FILE))
    }

    fn handle(&self, handle: &[u8]) -> Option<HandleRef> {
        let number = handle_number(handle)?;
        match self.shared.handles().1.get(&number)? {
            Handle::Root { .. } => Some(HandleRef::Root(number)),
            Handle::Remote {
                link,
                upstream,
                info,
            } => Some(HandleRef::Remote {
                link: Arc::clone(link),
                upstream: upstream.clone(),
                info: Arc::clone(info),
            }),
        }
    }

    // ---- requests ----

    fn open(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let mut fields = Fields::of_frame(frame, true);
        let path = fields.string()?;
        let pflags = fields.u32()?;
        let attrs = fields.rest();
        let Some((reads, writes)) = open_mode(pflags) else {
            return self.refuse(
                id,
                (FX_OP_UNSUPPORTED, format!("unknown open flags {pflags:#x}")),
            );
        };
        let (folder, remote) = match self.route(path) {
            Err(refusal) => return self.refuse(id, refusal),
            Ok(Routed::Root) if writes => {
                return self.refuse(id, (FX_PERMISSION_DENIED, ROOT_READ_ONLY.into()))
            }
            Ok(Routed::Root) => return self.refuse(id, (FX_FAILURE, "is a directory".into())),
            Ok(Routed::Folder { folder, remote, .. }) => (folder, remote),
        };
        if reads {
            if let Err(refusal) =
                self.allow(&folder, Action::Download, TransferOp::Download, &remote)
            {
                return self.refuse(id, refusal);
            }
        }
        if writes {
            if let Err(refusal) = self.allow(&folder, Action::Upload, TransferOp::Upload, &remote) {
                return self.refuse(id, refusal);
            }
        }
        let info = Arc::new(HandleInfo::new(
            folder.clone(),
            lossy(&remote),
            reads,
            writes,
            false,
        ));
        let upstream = Frame::new(FXP_OPEN)
            .u32(0)
            .string(&remote)
            .u32(pflags)
            .raw(attrs)
            .finish();
        self.send(&folder, Pending::Open { client: id, info }, upstream);
        Ok(())
    }

    fn opendir(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let path = Fields::of_frame(frame, true).string()?;
        match self.route(path) {
            Err(refusal) => self.deny(id, refusal),
            Ok(Routed::Root) => {
                let entries = self.root_entries();
                let reply = match self.shared.add_handle(Handle::Root { entries }) {
                    Some(handle) => Frame::new(FXP_HANDLE).u32(id).string(&handle).finish(),
                    None => status(id, FX_FAILURE, "too many open files"),
                };
                self.reply(reply);
            }
            Ok(Routed::Folder { folder, remote, .. }) => {
                let info = Arc::new(HandleInfo::new(
                    folder.clone(),
                    lossy(&remote),
                    false,
                    false,
                    true,
                ));
                let upstream = Frame::new(FXP_OPENDIR).u32(0).string(&remote).finish();
                self.send(&folder, Pending::Open { client: id, info }, upstream);
            }
        }
        Ok(())
    }

    /// The root's NAME entries: one directory per folder.
    fn root_entries(&self) -> Vec<Vec<u8>> {
        let date = chrono::DateTime::from_timestamp(i64::from(self.started), 0)
            .unwrap_or_default()
            .format("%b %e %H:%M");
        self.ctx
            .folders
            .list()
            .into_iter()
            .map(|(name, _)| {
                let long = format!("dr-xr-xr-x    2 jms      jms             0 {date} {name}");
                let mut entry = Vec::new();
                for field in [name.as_bytes(), long.as_bytes()] {
                    entry.extend_from_slice(&(field.len() as u32).to_be_bytes());
                    entry.extend_from_slice(field);
                }
                entry.extend_from_slice(&attrs(0, 0o40555, self.started));
                entry
            })
            .collect()
    }

    fn readdir(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let handle = Fields::of_frame(frame, true).string()?;
        match self.handle(handle) {
            None => self.deny(id, (FX_FAILURE, "invalid handle".into())),
            Some(HandleRef::Root(number)) => {
                let batch: Vec<Vec<u8>> = {
                    let mut handles = self.shared.handles();
                    match handles.1.get_mut(&number) {
                        Some(Handle::Root { entries }) => {
                            let n = entries.len().min(ROOT_BATCH);
                            entries.drain(..n).collect()
                        }
                        _ => Vec::new(),
                    }
                };
                if batch.is_empty() {
                    self.reply(status(id, FX_EOF, "no more files"));
                } else {
                    let mut reply = Frame::new(FXP_NAME).u32(id).u32(batch.len() as u32);
                    for entry in &batch {
                        reply = reply.raw(entry);
                    }
                    self.reply(reply.finish());
                }
            }
            Some(HandleRef::Remote { link, upstream, .. }) => {
                let frame = Frame::new(FXP_READDIR).u32(0).string(&upstream).finish();
                self.send_on(&link, Pending::Reply { client: id }, frame);
            }
        }
        Ok(())
    }

    fn close(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let handle = Fields::of_frame(frame, true).string()?;
        let removed = handle_number(handle).and_then(|n| self.shared.handles().1.remove(&n));
        match removed {
            None => self.deny(id, (FX_FAILURE, "invalid handle".into())),
            Some(Handle::Root { .. }) => self.reply(status(id, FX_OK, "")),
            Some(Handle::Remote {
                link,
                upstream,
                info,
            }) => {
                let frame = Frame::new(FXP_CLOSE).u32(0).string(&upstream).finish();
                self.send_on(&link, Pending::Close { client: id, info }, frame);
            }
        }
        Ok(())
    }

    fn read(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let mut fields = Fields::of_frame(frame, true);
        let handle = fields.string()?;
        let offset = fields.u64()?;
        let len_at = fields.position();
        let len = fields.u32()?;
        let Some(HandleRef::Remote {
            link,
            upstream,
            info,
        }) = self.handle(handle)
        else {
            self.deny(id, (FX_FAILURE, "invalid handle".into()));
            return Ok(());
        };
        if !info.read || info.dir {
            let message = "permission denied by the bastion: the file was not opened for reading";
            return self.refuse(id, (FX_PERMISSION_DENIED, message.into()));
        }
        let len = len.min(link.max_read);
        let pending = Pending::Read { client: id, info };
        if upstream.len() == handle.len() {
            // Same-sized handles (OpenSSH's are 4 bytes): patch in place.
            frame[13..13 + upstream.len()].copy_from_slice(&upstream);
            frame[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            self.send_on(&link, pending, frame);
        } else {
            let frame = Frame::new(FXP_READ)
                .u32(0)
                .string(&upstream)
                .u64(offset)
                .u32(len)
                .finish();
            self.send_on(&link, pending, frame);
        }
        Ok(())
    }

    fn write(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let mut fields = Fields::of_frame(frame, true);
        let handle = fields.string()?;
        let offset = fields.u64()?;
        let data_at = fields.position() + 4;
        let data = fields.string()?;
        let Some(HandleRef::Remote {
            link,
            upstream,
            info,
        }) = self.handle(handle)
        else {
            self.deny(id, (FX_FAILURE, "invalid handle".into()));
            return Ok(());
        };
        if !info.write || info.dir {
            let message = "permission denied by the bastion: the file was not opened for writing";
            return self.refuse(id, (FX_PERMISSION_DENIED, message.into()));
        }
        let max = link.max_write as usize;
        let data_len = data.len();
        let parts = data_len.div_ceil(max).max(1);
        let group = Arc::new(WriteGroup {
            client: id,
            info,
            remaining: AtomicUsize::new(parts),
            failure: Mutex::new(None),
        });
        if parts == 1 && upstream.len() == handle.len() {
            let len = data_len as u64;
            frame[13..13 + upstream.len()].copy_from_slice(&upstream);
            self.send_on(&link, Pending::Write { len, group }, frame);
            return Ok(());
        }
        let data = frame[data_at..data_at + data_len].to_vec();
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(max).collect()
        };
        let mut at = offset;
        for chunk in chunks {
            let part = Frame::with_capacity(FXP_WRITE, chunk.len() + 32)
                .u32(0)
                .string(&upstream)
                .u64(at)
                .string(chunk)
                .finish();
            at += chunk.len() as u64;
            let pending = Pending::Write {
                len: chunk.len() as u64,
                group: Arc::clone(&group),
            };
            self.send_on(&link, pending, part);
        }
        Ok(())
    }

    /// FSTAT, FSETSTAT and handle extensions: the upstream handle swapped
    /// in, the rest passed as is. `action` is checked unless the handle
    /// was opened for writing.
    fn by_handle(
        &mut self,
        id: u32,
        frame: &mut [u8],
        action: Option<Action>,
    ) -> Result<(), Malformed> {
        let kind = frame_type(frame);
        let mut fields = Fields::of_frame(frame, true);
        let handle = fields.string()?;
        let rest = fields.rest();
        self.by_handle_with(id, kind, &[], handle, rest, action)
    }

    fn by_handle_with(
        &mut self,
        id: u32,
        kind: u8,
        prefix: &[u8],
        handle: &[u8],
        rest: &[u8],
        action: Option<Action>,
    ) -> Result<(), Malformed> {
        match self.handle(handle) {
            None => self.deny(id, (FX_FAILURE, "invalid handle".into())),
            Some(HandleRef::Root(_)) => {
                let reply = if kind == FXP_FSTAT {
                    Frame::new(FXP_ATTRS)
                        .u32(id)
                        .raw(&attrs(0, 0o40555, self.started))
                        .finish()
                } else {
                    status(id, FX_PERMISSION_DENIED, ROOT_READ_ONLY)
                };
                self.reply(reply);
            }
            Some(HandleRef::Remote {
                link,
                upstream,
                info,
            }) => {
                if let Some(action) = action.filter(|_| !info.write) {
                    let path = info.path.clone().into_bytes();
                    if let Err(refusal) =
                        self.allow(&info.folder, action, TransferOp::SetAttributes, &path)
                    {
                        self.deny(id, refusal);
                        return Ok(());
                    }
                }
                let frame = Frame::new(kind)
                    .u32(0)
                    .raw(prefix)
                    .string(&upstream)
                    .raw(rest)
                    .finish();
                self.send_on(&link, Pending::Reply { client: id }, frame);
            }
        }
        Ok(())
    }

    fn stat(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let kind = frame_type(frame);
        let mut fields = Fields::of_frame(frame, true);
        let path = fields.string()?;
        let rest = fields.rest();
        match self.route(path) {
            Err(refusal) => self.deny(id, refusal),
            Ok(Routed::Root) => {
                let reply = Frame::new(FXP_ATTRS)
                    .u32(id)
                    .raw(&attrs(0, 0o40555, self.started))
                    .finish();
                self.reply(reply);
            }
            Ok(Routed::Folder { folder, remote, .. }) => {
                let frame = Frame::new(kind).u32(0).string(&remote).raw(rest).finish();
                self.send(&folder, Pending::Reply { client: id }, frame);
            }
        }
        Ok(())
    }

    /// SETSTAT (and lsetstat@openssh.com with `prefix` its name field).
    fn setstat_with(
        &mut self,
        id: u32,
        kind: u8,
        prefix: &[u8],
        path: &[u8],
        rest: &[u8],
    ) -> Result<(), Malformed> {
        let (folder, remote) = match self.route_in_folder(path) {
            Ok((folder, _, remote)) => (folder, remote),
            Err(refusal) => return self.refuse(id, refusal),
        };
        if let Err(refusal) =
            self.allow(&folder, Action::Upload, TransferOp::SetAttributes, &remote)
        {
            return self.refuse(id, refusal);
        }
        let frame = Frame::new(kind)
            .u32(0)
            .raw(prefix)
            .string(&remote)
            .raw(rest)
            .finish();
        self.send(&folder, Pending::Reply { client: id }, frame);
        Ok(())
    }

    fn setstat(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let mut fields = Fields::of_frame(frame, true);
        let path = fields.string()?;
        self.setstat_with(id, FXP_SETSTAT, &[], path, fields.rest())
    }

    fn mkdir(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let mut fields = Fields::of_frame(frame, true);
        let path = fields.string()?;
        let rest = fields.rest();
        let (folder, remote) = match self.route_in_folder(path) {
            Ok((folder, _, remote)) => (folder, remote),
            Err(refusal) => return self.refuse(id, refusal),
        };
        if let Err(refusal) = self.allow(&folder, Action::Upload, TransferOp::Mkdir, &remote) {
            return self.refuse(id, refusal);
        }
        let event = event(
            &folder,
            TransferOp::Mkdir,
            lossy(&remote),
            None,
            0,
            TransferResult::Ok,
        );
        let frame = Frame::new(FXP_MKDIR)
            .u32(0)
            .string(&remote)
            .raw(rest)
            .finish();
        self.send(
            &folder,
            Pending::Logged {
                client: id,
                event: Box::new(event),
            },
            frame,
        );
        Ok(())
    }

    fn remove(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let kind = frame_type(frame);
        let path = Fields::of_frame(frame, true).string()?;
        let (folder, remote) = match self.route_in_folder(path) {
            Ok((folder, _, remote)) => (folder, remote),
            Err(refusal) => return self.refuse(id, refusal),
        };
        if let Err(refusal) = self.allow(&folder, Action::Delete, TransferOp::Delete, &remote) {
            return self.refuse(id, refusal);
        }
        let event = event(
            &folder,
            TransferOp::Delete,
            lossy(&remote),
            None,
            0,
            TransferResult::Ok,
        );
        let frame = Frame::new(kind).u32(0).string(&remote).finish();
        self.send(
            &folder,
            Pending::Logged {
                client: id,
                event: Box::new(event),
            },
            frame,
        );
        Ok(())
    }

    fn realpath(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let kind = frame_type(frame);
        let mut fields = Fields::of_frame(frame, true);
        let path = fields.string()?;
        let rest = fields.rest();
        match self.route(path) {
            Err(refusal) => self.deny(id, refusal),
            Ok(Routed::Root) if kind == FXP_REALPATH => {
                let reply = Frame::new(FXP_NAME)
                    .u32(id)
                    .u32(1)
                    .string(b"/")
                    .string(b"/")
                    .raw(&attrs(0, 0o40555, self.started))
                    .finish();
                self.reply(reply);
            }
            Ok(Routed::Root) => self.deny(id, (FX_FAILURE, "not a symbolic link".into())),
            Ok(Routed::Folder {
                folder,
                spec,
                remote,
            }) => {
                let frame = Frame::new(kind).u32(0).string(&remote).raw(rest).finish();
                self.send(&folder, Pending::Name { client: id, spec }, frame);
            }
        }
        Ok(())
    }

    /// RENAME and posix-rename@openssh.com (`prefix`: its name field).
    fn rename(&mut self, id: u32, frame: &mut [u8], posix: bool) -> Result<(), Malformed> {
        let kind = frame_type(frame);
        let mut fields = Fields::of_frame(frame, true);
        let prefix_len = if posix { fields.string()?.len() + 4 } else { 0 };
        let prefix = frame[9..9 + prefix_len].to_vec();
        let from = fields.string()?;
        let to = fields.string()?;
        let rest = fields.rest();
        let ((folder, from), (to_folder, to)) =
            match (self.route_in_folder(from), self.route_in_folder(to)) {
                (Ok((f, _, a)), Ok((t, _, b))) => ((f, a), (t, b)),
                (Err(refusal), _) | (_, Err(refusal)) => return self.refuse(id, refusal),
            };
        if folder != to_folder {
            let message = format!(
                "cannot move files between {} and {}",
                folder.asset, to_folder.asset
            );
            return self.refuse(id, (FX_FAILURE, message));
        }
        if let Err(refusal) = self.allow(&folder, Action::Upload, TransferOp::Rename, &from) {
            return self.refuse(id, refusal);
        }
        match self.exists(&folder, &to) {
            Err(message) => return self.refuse(id, (FX_FAILURE, message)),
            Ok(true) => {
                if let Err((code, message)) =
                    self.allow(&folder, Action::Delete, TransferOp::Rename, &from)
                {
                    let message = format!("{message} (the destination exists)");
                    return self.refuse(id, (code, message));
                }
            }
            Ok(false) => {}
        }
        let event = event(
            &folder,
            TransferOp::Rename,
            lossy(&from),
            Some(lossy(&to)),
            0,
            TransferResult::Ok,
        );
        let frame = Frame::new(kind)
            .u32(0)
            .raw(&prefix)
            .string(&from)
            .string(&to)
            .raw(rest)
            .finish();
        self.send(
            &folder,
            Pending::Logged {
                client: id,
                event: Box::new(event),
            },
            frame,
        );
        Ok(())
    }

    /// SYMLINK in OpenSSH's order (target, then the link's path) and
    /// hardlink@openssh.com (existing path, new path). A relative symlink
    /// target is stored as given; any other path must be in the same folder.
    fn link(
        &mut self,
        id: u32,
        kind: u8,
        prefix: &[u8],
        target: &[u8],
        path: &[u8],
    ) -> Result<(), Malformed> {
        let (folder, remote) = match self.route_in_folder(path) {
            Ok((folder, _, remote)) => (folder, remote),
            Err(refusal) => return self.refuse(id, refusal),
        };
        let relative = kind == FXP_SYMLINK && !target.starts_with(b"/") && !target.contains(&b':');
        let target = if relative {
            target.to_vec()
        } else {
            match self.route_in_folder(target) {
                Ok((f, _, t)) if f == folder => t,
                Ok(_) => return self.refuse(id, (FX_FAILURE, "links cannot cross assets".into())),
                Err(refusal) => return self.refuse(id, refusal),
            }
        };
        if let Err(refusal) = self.allow(&folder, Action::Upload, TransferOp::Link, &remote) {
            return self.refuse(id, refusal);
        }
        let event = event(
            &folder,
            TransferOp::Link,
            lossy(&remote),
            Some(lossy(&target)),
            0,
            TransferResult::Ok,
        );
        let frame = Frame::new(kind)
            .u32(0)
            .raw(prefix)
            .string(&target)
            .string(&remote)
            .finish();
        self.send(
            &folder,
            Pending::Logged {
                client: id,
                event: Box::new(event),
            },
            frame,
        );
        Ok(())
    }

    fn symlink(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let mut fields = Fields::of_frame(frame, true);
        let target = fields.string()?;
        let path = fields.string()?;
        self.link(id, FXP_SYMLINK, &[], target, path)
    }

    fn extended(&mut self, id: u32, frame: &mut [u8]) -> Result<(), Malformed> {
        let mut fields = Fields::of_frame(frame, true);
        let name = fields.string()?;
        let prefix = frame[9..fields.position()].to_vec();
        match name {
            b"limits@openssh.com" => {
                let reply = Frame::new(FXP_EXTENDED_REPLY)
                    .u32(id)
                    .u64(u64::from(MAX_PACKET))
                    .u64(u64::from(MAX_DATA))
                    .u64(u64::from(MAX_DATA))
                    .u64(0)
                    .finish();
                self.reply(reply);
            }
            b"posix-rename@openssh.com" => return self.rename(id, frame, true),
            b"hardlink@openssh.com" => {
                let from = fields.string()?;
                let to = fields.string()?;
                return self.link(id, FXP_EXTENDED, &prefix, from, to);
            }
            b"lsetstat@openssh.com" => {
                let path = fields.string()?;
                return self.setstat_with(id, FXP_EXTENDED, &prefix, path, fields.rest());
            }
            b"statvfs@openssh.com" => {
                let path = fields.string()?;
                let rest = fields.rest();
                match self.route(path) {
                    Err(refusal) => self.deny(id, refusal),
                    Ok(Routed::Root) => {
                        self.deny(id, (FX_OP_UNSUPPORTED, "not on the bastion's root".into()))
                    }
                    Ok(Routed::Folder { folder, remote, .. }) => {
                        let frame = Frame::new(FXP_EXTENDED)
                            .u32(0)
                            .raw(&prefix)
                            .string(&remote)
                            .raw(rest)
                            .finish();
                        self.send(&folder, Pending::Reply { client: id }, frame);
                    }
                }
            }
            b"fstatvfs@openssh.com" | b"fsync@openssh.com" => {
                let handle = fields.string()?;
                let rest = fields.rest();
                return self.by_handle_with(id, FXP_EXTENDED, &prefix, handle, rest, None);
            }
            _ => self.reply(status(
                id,
                FX_OP_UNSUPPORTED,
                "extension not supported by the bastion",
            )),
        }
        Ok(())
    }
}

/// A handle looked up (the table's lock released).
enum HandleRef {
    Root(u32),
    Remote {
        link: Arc<Link>,
        upstream: Vec<u8>,
        info: Arc<HandleInfo>,
    },
}

const ROOT_READ_ONLY: &str = "the bastion's root holds only asset folders";

/// What an OPEN with `pflags` lets the handle do: (read, write); `None`
/// for flags outside SFTP v3's six. Read as OpenSSH's sftp-server opens
/// the file: without WRITE it is opened read-only (O_RDONLY is 0), so
/// every open without WRITE can read, whatever else it says (none at all,
/// CREAT alone…); WRITE, APPEND, CREAT and TRUNC each change the target.
pub fn open_mode(pflags: u32) -> Option<(bool, bool)> {
    const KNOWN: u32 = FXF_READ | FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC | FXF_EXCL;
    if pflags & !KNOWN != 0 {
        return None;
    }
    let reads = pflags & FXF_READ != 0 || pflags & FXF_WRITE == 0;
    let writes = pflags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC) != 0;
    Some((reads, writes))
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_open_without_write_can_read() {
        // (read, write) as OpenSSH's sftp-server opens the file.
        assert_eq!(open_mode(0), Some((true, false)), "no flags: O_RDONLY");
        assert_eq!(open_mode(FXF_READ), Some((true, false)));
        assert_eq!(open_mode(FXF_CREAT), Some((true, true)));
        assert_eq!(open_mode(FXF_TRUNC), Some((true, true)));
        assert_eq!(open_mode(FXF_APPEND), Some((true, true)));
        assert_eq!(open_mode(FXF_EXCL), Some((true, false)));
        assert_eq!(open_mode(FXF_WRITE | FXF_CREAT), Some((false, true)));
        assert_eq!(open_mode(FXF_READ | FXF_WRITE), Some((true, true)));
        assert_eq!(open_mode(0x40), None, "an unknown flag is refused");
        assert_eq!(open_mode(FXF_READ | 0x8000_0000), None);
    }
}
