//! One upstream SFTP session per asset folder: the handshake, the requests
//! waiting for a reply, and the pump that reads the target's replies and
//! hands them, re-addressed, to the engineer.
//!
//! The session's main thread alone writes requests upstream; one pump
//! thread per upstream reads replies. Each request sent upstream gets the
//! upstream's own id and a [`Pending`] entry saying what to do with the
//! reply: pass it on under the client's id, turn a handle into a client
//! handle, count bytes, log the operation, or give it to the main thread
//! (a probe).
//!
//! [`Shared`] is what the main thread (`proxy`) and the pumps share: the
//! engineer's stream and the client handles ([`Handle`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::codec::*;
use super::folders::Folder;
use super::paths;
use super::UpstreamStreams;
use crate::daemon::session::transfer::{TransferEvent, TransferLog, TransferOp, TransferResult};

/// Reads and writes asked of a target that does not announce its limits:
/// what every SFTP v3 server must accept.
const DEFAULT_DATA: u32 = 32 * 1024;
/// Read buffer on each stream: packets bigger than this are read straight
/// into the frame (no second copy).
pub const READ_BUFFER: usize = 64 * 1024;
/// Open handles one session may hold.
const MAX_HANDLES: usize = 4096;

/// A client handle's target.
pub enum Handle {
    /// The virtual root opened as a directory: NAME entries not sent yet.
    Root { entries: Vec<Vec<u8>> },
    Remote {
        link: Arc<Link>,
        upstream: Vec<u8>,
        info: Arc<HandleInfo>,
    },
}

/// What the main thread and the pumps share.
pub struct Shared<'a> {
    pub(super) out: Mutex<File>,
    pub(super) handles: Mutex<(u32, HashMap<u32, Handle>)>,
    pub log: &'a dyn TransferLog,
    /// The engineer's side stopped taking replies.
    pub(super) broken: AtomicBool,
    pub uploaded: AtomicU64,
    pub downloaded: AtomicU64,
}

impl Shared<'_> {
    /// Sends one frame to the engineer (a failure ends the session).
    pub fn send(&self, frame: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        if out.write_all(frame).is_err() {
            self.broken.store(true, Ordering::SeqCst);
        }
    }

    pub(super) fn handles(&self) -> std::sync::MutexGuard<'_, (u32, HashMap<u32, Handle>)> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a handle; its client name, or `None` when too many are open.
    pub fn add_handle(&self, handle: Handle) -> Option<Vec<u8>> {
        let mut handles = self.handles();
        if handles.1.len() >= MAX_HANDLES {
            return None;
        }
        let (next, map) = &mut *handles;
        while map.contains_key(next) {
            *next = next.wrapping_add(1);
        }
        let name = *next;
        *next = next.wrapping_add(1);
        map.insert(name, handle);
        Some(name.to_be_bytes().to_vec())
    }
}

/// What a file handle is, for checks and the transfer log.
#[derive(Debug)]
pub struct HandleInfo {
    pub folder: Folder,
    /// The path on the asset, for the log.
    pub path: String,
    pub read: bool,
    pub write: bool,
    pub dir: bool,
    pub bytes_read: AtomicU64,
    pub bytes_written: AtomicU64,
    /// The first failed read or write, if any.
    pub error: Mutex<Option<String>>,
}

impl HandleInfo {
    pub fn new(folder: Folder, path: String, read: bool, write: bool, dir: bool) -> HandleInfo {
        HandleInfo {
            folder,
            path,
            read,
            write,
            dir,
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
            error: Mutex::new(None),
        }
    }

    fn note_error(&self, message: String) {
        let mut error = self.error.lock().unwrap_or_else(|e| e.into_inner());
        error.get_or_insert(message);
    }

    /// The records of a file handle that ended with `result` (none for a
    /// directory): upload with the bytes written, download with the bytes
    /// read.
    pub fn events(&self, result: &TransferResult) -> Vec<TransferEvent> {
        if self.dir {
            return Vec::new();
        }
        let first_error = self.error.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let result = match (result, first_error) {
            (TransferResult::Ok, Some(error)) => TransferResult::Failed(error),
            (result, _) => result.clone(),
        };
        let mut events = Vec::new();
        let mut push = |operation, size| {
            events.push(event(
                &self.folder,
                operation,
                self.path.clone(),
                None,
                size,
                result.clone(),
            ));
        };
        if self.write {
            push(
                TransferOp::Upload,
                self.bytes_written.load(Ordering::Relaxed),
            );
        }
        if self.read {
            push(
                TransferOp::Download,
                self.bytes_read.load(Ordering::Relaxed),
            );
        }
        events
    }
}

/// A transfer record of the SFTP proxy.
pub fn event(
    folder: &Folder,
    operation: TransferOp,
    path: String,
    to: Option<String>,
    size: u64,
    result: TransferResult,
) -> TransferEvent {
    TransferEvent {
        asset: folder.asset.clone(),
        account: folder.account.clone(),
        via: "sftp",
        operation,
        path,
        to,
        size,
        result,
    }
}

/// One client WRITE, maybe split into several upstream writes.
#[derive(Debug)]
pub struct WriteGroup {
    pub client: u32,
    pub info: Arc<HandleInfo>,
    pub remaining: AtomicUsize,
    /// The first failure: status code and message.
    pub failure: Mutex<Option<(u32, String)>>,
}

/// What to do with the reply to one upstream request.
#[derive(Debug)]
pub enum Pending {
    /// Pass the reply on under the client's id.
    Reply { client: u32 },
    /// REALPATH / READLINK: put absolute paths back in the folder `spec`.
    Name { client: u32, spec: String },
    /// OPEN / OPENDIR: a HANDLE reply becomes a client handle.
    Open { client: u32, info: Arc<HandleInfo> },
    /// READ: count the bytes.
    Read { client: u32, info: Arc<HandleInfo> },
    /// One part of a WRITE of `len` bytes.
    Write { len: u64, group: Arc<WriteGroup> },
    /// CLOSE of a file: log the transfer.
    Close { client: u32, info: Arc<HandleInfo> },
    /// An operation logged once its STATUS comes back.
    Logged {
        client: u32,
        event: Box<TransferEvent>,
    },
    /// The main thread waits for this reply itself.
    Probe(mpsc::Sender<Vec<u8>>),
}

/// The part of an upstream shared by the main thread and its pump.
#[derive(Debug)]
pub struct Link {
    pub folder: Folder,
    pub pending: Mutex<HashMap<u32, Pending>>,
    /// False once the pump saw the end of the upstream.
    pub alive: AtomicBool,
    /// The largest read and write the target takes (at most [`MAX_DATA`]).
    pub max_read: u32,
    pub max_write: u32,
}

impl Link {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }
}

/// The main thread's side of an upstream.
pub struct Conn {
    pub link: Arc<Link>,
    writer: Option<Box<dyn Write + Send>>,
    next_id: u32,
    /// Kept until the session ends (e.g. the ssh process).
    guard: Option<Box<dyn Send>>,
}

/// Why a request could not be sent: the message, and the request's
/// pending entry to abandon.
pub struct NotSent(pub String, pub Pending);

impl Conn {
    /// Runs the SFTP handshake on fresh streams and asks for the target's
    /// limits; returns the connection and the reader for its pump.
    pub fn open(
        folder: Folder,
        streams: UpstreamStreams,
    ) -> Result<(Conn, Box<dyn Read + Send>), String> {
        let UpstreamStreams {
            mut writer,
            mut reader,
            guard,
        } = streams;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            format!("SFTP handshake with the asset failed ({what}: {e})")
        };
        let init = Frame::new(FXP_INIT).u32(3).finish();
        writer
            .write_all(&init)
            .and_then(|()| writer.flush())
            .map_err(|e| fail("sending", &e))?;
        let version = read_frame(&mut reader, MAX_UPSTREAM_PACKET)
            .map_err(|e| fail("reading", &e))?
            .ok_or_else(|| fail("reading", &"the asset closed the connection"))?;
        if frame_type(&version) != FXP_VERSION {
            return Err(fail(
                "version",
                &format!("packet type {}", frame_type(&version)),
            ));
        }
        let mut fields = Fields::of_frame(&version, false);
        let _version = fields.u32().map_err(|e| fail("version", &e))?;
        let mut limits = false;
        while !fields.is_empty() {
            let (Ok(name), Ok(_data)) = (fields.string(), fields.string()) else {
                break;
            };
            limits |= name == b"limits@openssh.com";
        }
        let (mut max_read, mut max_write) = (DEFAULT_DATA, DEFAULT_DATA);
        if limits {
            let ask = Frame::new(FXP_EXTENDED)
                .u32(1)
                .string(b"limits@openssh.com")
                .finish();
            writer
                .write_all(&ask)
                .and_then(|()| writer.flush())
                .map_err(|e| fail("limits", &e))?;
            let reply = read_frame(&mut reader, MAX_UPSTREAM_PACKET)
                .map_err(|e| fail("limits", &e))?
                .ok_or_else(|| fail("limits", &"the asset closed the connection"))?;
            if frame_type(&reply) == FXP_EXTENDED_REPLY && frame_id(&reply) == 1 {
                let mut fields = Fields::of_frame(&reply, true);
                let clamp = |v: u64| {
                    if v == 0 {
                        MAX_DATA
                    } else {
                        v.min(u64::from(MAX_DATA)) as u32
                    }
                };
                if let (Ok(_packet), Ok(read), Ok(write)) =
                    (fields.u64(), fields.u64(), fields.u64())
                {
                    (max_read, max_write) = (clamp(read), clamp(write));
                }
            }
        }
        let link = Arc::new(Link {
            folder,
            pending: Mutex::new(HashMap::new()),
            alive: AtomicBool::new(true),
            max_read,
            max_write,
        });
        let conn = Conn {
            link,
            writer: Some(writer),
            next_id: 2,
            guard: Some(guard),
        };
        Ok((conn, reader))
    }

    /// Sends `frame` (its id is set here) and records `pending` for the
    /// reply. On failure the pending entry comes back to be abandoned.
    pub fn send(&mut self, pending: Pending, mut frame: impl AsMut<[u8]>) -> Result<(), NotSent> {
        let frame = frame.as_mut();
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        set_frame_id(frame, id);
        self.link.pending().insert(id, pending);
        let sent = match self.writer.as_mut() {
            Some(writer) => writer.write_all(frame).and_then(|()| writer.flush()),
            None => Err(io::ErrorKind::BrokenPipe.into()),
        };
        let failure = match sent {
            Err(e) => Some(format!(
                "connection to {} lost ({e})",
                self.link.folder.asset
            )),
            // The pump may have ended before the entry went in: then
            // nobody will answer it.
            Ok(()) if !self.link.is_alive() => {
                Some(format!("connection to {} lost", self.link.folder.asset))
            }
            Ok(()) => None,
        };
        match failure {
            None => Ok(()),
            Some(message) => {
                self.link.alive.store(false, Ordering::SeqCst);
                match self.link.pending().remove(&id) {
                    Some(pending) => Err(NotSent(message, pending)),
                    // The pump took it and answered it already.
                    None => Ok(()),
                }
            }
        }
    }

    /// Closes the request stream: the target's SFTP server ends.
    pub fn close_requests(&mut self) {
        self.writer = None;
    }

    /// Lets go of the connection (its process) for good.
    pub fn release(&mut self) {
        self.writer = None;
        self.guard = None;
    }
}

/// Reads replies until the upstream ends, then answers what is left.
pub fn pump(
    link: Arc<Link>,
    reader: Box<dyn Read + Send>,
    shared: &Shared<'_>,
    done: mpsc::Sender<()>,
) {
    let mut reader = BufReader::with_capacity(READ_BUFFER, reader);
    let mut frame = Vec::with_capacity(MAX_PACKET as usize + 4);
    let ended = loop {
        match read_frame_into(&mut reader, MAX_UPSTREAM_PACKET, &mut frame) {
            Ok(true) => deliver(&link, &mut frame, shared),
            Ok(false) => break format!("connection to {} closed", link.folder.asset),
            Err(e) => break format!("connection to {} lost ({e})", link.folder.asset),
        }
    };
    link.alive.store(false, Ordering::SeqCst);
    let left: Vec<Pending> = link.pending().drain().map(|(_, p)| p).collect();
    for pending in left {
        abandon(pending, shared, FX_CONNECTION_LOST, &ended);
    }
    let _ = done.send(());
}

/// Answers a request that will get no reply from upstream, and logs it
/// when it is a logged operation.
pub fn abandon(pending: Pending, shared: &Shared<'_>, code: u32, message: &str) {
    let failed = TransferResult::Failed(message.to_string());
    let client = match pending {
        Pending::Probe(_) => return,
        Pending::Write { group, .. } => {
            group
                .failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert((code, message.to_string()));
            finish_write_part(&group, shared);
            return;
        }
        Pending::Close { client, info } | Pending::Open { client, info } => {
            for e in info.events(&failed) {
                shared.log.record(e);
            }
            client
        }
        Pending::Logged { client, mut event } => {
            event.result = failed;
            shared.log.record(*event);
            client
        }
        Pending::Reply { client } | Pending::Name { client, .. } | Pending::Read { client, .. } => {
            client
        }
    };
    shared.send(&status(client, code, message));
}

/// One reply from upstream.
fn deliver(link: &Arc<Link>, frame: &mut [u8], shared: &Shared<'_>) {
    let Some(pending) = link.pending().remove(&frame_id(frame)) else {
        tracing::warn!(
            asset = link.folder.asset,
            "SFTP reply to no request; dropped"
        );
        return;
    };
    let kind = frame_type(frame);
    match pending {
        Pending::Probe(tx) => {
            let _ = tx.send(frame.to_vec());
        }
        Pending::Reply { client } => {
            set_frame_id(frame, client);
            shared.send(frame);
        }
        Pending::Name { client, spec } => {
            let reply = if kind == FXP_NAME {
                names_in_folder(frame, client, &spec)
            } else {
                None
            };
            match reply {
                Some(reply) => shared.send(&reply),
                None => {
                    set_frame_id(frame, client);
                    shared.send(frame);
                }
            }
        }
        Pending::Open { client, info } => {
            let handle = (kind == FXP_HANDLE)
                .then(|| {
                    Fields::of_frame(frame, true)
                        .string()
                        .ok()
                        .map(<[u8]>::to_vec)
                })
                .flatten();
            match handle {
                Some(upstream) => {
                    let reply = match shared.add_handle(Handle::Remote {
                        link: Arc::clone(link),
                        upstream,
                        info,
                    }) {
                        Some(handle) => Frame::new(FXP_HANDLE).u32(client).string(&handle).finish(),
                        None => status(client, FX_FAILURE, "too many open files"),
                    };
                    shared.send(&reply);
                }
                None => {
                    let failed = TransferResult::Failed(status_message(frame));
                    for e in info.events(&failed) {
                        shared.log.record(e);
                    }
                    set_frame_id(frame, client);
                    shared.send(frame);
                }
            }
        }
        Pending::Read { client, info } => {
            if kind == FXP_DATA {
                let len = Fields::of_frame(frame, true).u32().unwrap_or(0);
                info.bytes_read.fetch_add(u64::from(len), Ordering::Relaxed);
                shared
                    .downloaded
                    .fetch_add(u64::from(len), Ordering::Relaxed);
            } else if status_code(frame) != Some(FX_EOF) {
                info.note_error(status_message(frame));
            }
            set_frame_id(frame, client);
            shared.send(frame);
        }
        Pending::Write { len, group } => {
            if status_code(frame) == Some(FX_OK) {
                group.info.bytes_written.fetch_add(len, Ordering::Relaxed);
                shared.uploaded.fetch_add(len, Ordering::Relaxed);
            } else {
                let code = status_code(frame).unwrap_or(FX_FAILURE);
                group
                    .failure
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert((code, status_message(frame)));
            }
            finish_write_part(&group, shared);
        }
        Pending::Close { client, info } => {
            let result = match status_code(frame) {
                Some(FX_OK) => TransferResult::Ok,
                _ => TransferResult::Failed(status_message(frame)),
            };
            for e in info.events(&result) {
                shared.log.record(e);
            }
            set_frame_id(frame, client);
            shared.send(frame);
        }
        Pending::Logged { client, mut event } => {
            event.result = match status_code(frame) {
                Some(FX_OK) => TransferResult::Ok,
                _ => TransferResult::Failed(status_message(frame)),
            };
            shared.log.record(*event);
            set_frame_id(frame, client);
            shared.send(frame);
        }
    }
}

/// Counts one finished part of a WRITE; the last one answers the client.
fn finish_write_part(group: &WriteGroup, shared: &Shared<'_>) {
    if group.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
        return;
    }
    let failure = group
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let reply = match failure {
        None => status(group.client, FX_OK, ""),
        Some((code, message)) => {
            group.info.note_error(message.clone());
            status(group.client, code, &message)
        }
    };
    shared.send(&reply);
}

/// A NAME reply with each absolute path put back in folder `spec`.
fn names_in_folder(frame: &[u8], client: u32, spec: &str) -> Option<Vec<u8>> {
    let mut fields = Fields::of_frame(frame, true);
    let count = fields.u32().ok()?;
    let mut out = Frame::with_capacity(FXP_NAME, frame.len() + 64)
        .u32(client)
        .u32(count);
    for _ in 0..count {
        let name = fields.string().ok()?;
        let long = fields.string().ok()?;
        let start = fields.position();
        fields.skip_attrs().ok()?;
        let attrs = &frame[start..fields.position()];
        let name = paths::to_client(spec, name);
        // OpenSSH's long name of a REALPATH/READLINK answer is the path.
        let long = if long.starts_with(b"/") {
            name.clone()
        } else {
            long.to_vec()
        };
        out = out.string(&name).string(&long).raw(attrs);
    }
    Some(out.finish())
}
