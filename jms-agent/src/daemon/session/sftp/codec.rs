//! SFTP version 3 (draft-ietf-secsh-filexfer-02, as OpenSSH speaks it):
//! packet framing, the few field types, and the constants the proxy uses.
//!
//! A packet is `uint32 length` then `length` bytes: `byte type`, then for
//! every type but INIT and VERSION a `uint32 request-id`, then the fields.
//! The proxy keeps whole frames (length included) so a packet it only
//! re-addresses is patched in place and written back with one call.

use std::io::{self, Read};

pub const FXP_INIT: u8 = 1;
pub const FXP_VERSION: u8 = 2;
pub const FXP_OPEN: u8 = 3;
pub const FXP_CLOSE: u8 = 4;
pub const FXP_READ: u8 = 5;
pub const FXP_WRITE: u8 = 6;
pub const FXP_LSTAT: u8 = 7;
pub const FXP_FSTAT: u8 = 8;
pub const FXP_SETSTAT: u8 = 9;
pub const FXP_FSETSTAT: u8 = 10;
pub const FXP_OPENDIR: u8 = 11;
pub const FXP_READDIR: u8 = 12;
pub const FXP_REMOVE: u8 = 13;
pub const FXP_MKDIR: u8 = 14;
pub const FXP_RMDIR: u8 = 15;
pub const FXP_REALPATH: u8 = 16;
pub const FXP_STAT: u8 = 17;
pub const FXP_RENAME: u8 = 18;
pub const FXP_READLINK: u8 = 19;
pub const FXP_SYMLINK: u8 = 20;
pub const FXP_STATUS: u8 = 101;
pub const FXP_HANDLE: u8 = 102;
pub const FXP_DATA: u8 = 103;
pub const FXP_NAME: u8 = 104;
pub const FXP_ATTRS: u8 = 105;
pub const FXP_EXTENDED: u8 = 200;
pub const FXP_EXTENDED_REPLY: u8 = 201;

pub const FX_OK: u32 = 0;
pub const FX_EOF: u32 = 1;
pub const FX_NO_SUCH_FILE: u32 = 2;
pub const FX_PERMISSION_DENIED: u32 = 3;
pub const FX_FAILURE: u32 = 4;
pub const FX_BAD_MESSAGE: u32 = 5;
pub const FX_CONNECTION_LOST: u32 = 7;
pub const FX_OP_UNSUPPORTED: u32 = 8;

pub const FXF_READ: u32 = 0x01;
pub const FXF_WRITE: u32 = 0x02;
pub const FXF_APPEND: u32 = 0x04;
pub const FXF_CREAT: u32 = 0x08;
pub const FXF_TRUNC: u32 = 0x10;
pub const FXF_EXCL: u32 = 0x20;

pub const ATTR_SIZE: u32 = 0x01;
pub const ATTR_UIDGID: u32 = 0x02;
pub const ATTR_PERMISSIONS: u32 = 0x04;
pub const ATTR_ACMODTIME: u32 = 0x08;
pub const ATTR_EXTENDED: u32 = 0x8000_0000;

/// Largest packet body the client may send: OpenSSH's own limit
/// (SFTP_MAX_MSG_LENGTH), and what `limits@openssh.com` announces.
pub const MAX_PACKET: u32 = 256 * 1024;
/// Largest read and write the client is told to use: the packet limit
/// minus room for the header, as OpenSSH's sftp-server announces.
pub const MAX_DATA: u32 = MAX_PACKET - 1024;
/// Largest packet accepted from a target (some servers batch big NAME
/// replies); anything bigger means the stream is corrupt.
pub const MAX_UPSTREAM_PACKET: u32 = 4 * 1024 * 1024;

/// A malformed packet: a field runs past its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed SFTP packet")]
pub struct Malformed;

/// Reads one frame (length prefix included). `Ok(None)` on a clean end of
/// stream before a frame starts; an error for a frame over `max` bytes, an
/// empty one, or a stream cut inside a frame.
pub fn read_frame(reader: &mut impl Read, max: u32) -> io::Result<Option<Vec<u8>>> {
    let mut frame = Vec::new();
    Ok(read_frame_into(reader, max, &mut frame)?.then_some(frame))
}

/// [`read_frame`] into `frame`, reusing its allocation (the hot path reads
/// every packet into the same buffer). `Ok(false)` on a clean end.
pub fn read_frame_into(reader: &mut impl Read, max: u32, frame: &mut Vec<u8>) -> io::Result<bool> {
    let mut length = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match reader.read(&mut length[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes(length);
    if len == 0 || len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("SFTP packet of {len} bytes (limit {max})"),
        ));
    }
    frame.clear();
    frame.extend_from_slice(&length);
    frame.resize(4 + len as usize, 0);
    reader.read_exact(&mut frame[4..])?;
    Ok(true)
}

/// The packet type of a frame.
pub fn frame_type(frame: &[u8]) -> u8 {
    frame.get(4).copied().unwrap_or(0)
}

/// The request id of a frame (0 for INIT/VERSION or a too-short frame).
pub fn frame_id(frame: &[u8]) -> u32 {
    frame
        .get(5..9)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or(0)
}

/// Rewrites the request id of a frame in place.
pub fn set_frame_id(frame: &mut [u8], id: u32) {
    if let Some(slot) = frame.get_mut(5..9) {
        slot.copy_from_slice(&id.to_be_bytes());
    }
}

/// Reads fields of a packet body, front to back.
pub struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    /// Fields of `frame` after the type and id (`skip_id` false for
    /// INIT/VERSION, which have no id).
    pub fn of_frame(frame: &'a [u8], skip_id: bool) -> Fields<'a> {
        let start = if skip_id { 9 } else { 5 };
        Fields {
            buf: frame,
            pos: start.min(frame.len()),
        }
    }

    /// Where the next field starts, as an offset in the frame.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed)?;
        let bytes = self.buf.get(self.pos..end).ok_or(Malformed)?;
        self.pos = end;
        Ok(bytes)
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn string(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// Skips an ATTRS structure.
    pub fn skip_attrs(&mut self) -> Result<(), Malformed> {
        let flags = self.u32()?;
        if flags & ATTR_SIZE != 0 {
            self.take(8)?;
        }
        if flags & ATTR_UIDGID != 0 {
            self.take(8)?;
        }
        if flags & ATTR_PERMISSIONS != 0 {
            self.take(4)?;
        }
        if flags & ATTR_ACMODTIME != 0 {
            self.take(8)?;
        }
        if flags & ATTR_EXTENDED != 0 {
            let count = self.u32()?;
            for _ in 0..count {
                self.string()?;
                self.string()?;
            }
        }
        Ok(())
    }

    /// Everything not read yet.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Builds one frame.
pub struct Frame {
    buf: Vec<u8>,
}

impl Frame {
    /// A frame of `kind` (add the id with [`Frame::u32`] unless it is
    /// INIT/VERSION).
    pub fn new(kind: u8) -> Frame {
        Frame::with_capacity(kind, 64)
    }

    pub fn with_capacity(kind: u8, capacity: usize) -> Frame {
        let mut buf = Vec::with_capacity(capacity + 5);
        buf.extend_from_slice(&[0, 0, 0, 0, kind]);
        Frame { buf }
    }

    pub fn u32(mut self, value: u32) -> Frame {
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn u64(mut self, value: u64) -> Frame {
        self.buf.extend_from_slice(&value.to_be_bytes());
        self
    }

    pub fn string(mut self, value: &[u8]) -> Frame {
        self.buf
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(value);
        self
    }

    /// Raw bytes (fields copied from another packet).
    pub fn raw(mut self, value: &[u8]) -> Frame {
        self.buf.extend_from_slice(value);
        self
    }

    /// The finished frame, length prefix set.
    pub fn finish(mut self) -> Vec<u8> {
        let len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

/// A STATUS reply.
pub fn status(id: u32, code: u32, message: &str) -> Vec<u8> {
    Frame::new(FXP_STATUS)
        .u32(id)
        .u32(code)
        .string(message.as_bytes())
        .string(b"en")
        .finish()
}

/// The status code of a STATUS frame.
pub fn status_code(frame: &[u8]) -> Option<u32> {
    (frame_type(frame) == FXP_STATUS).then(|| Fields::of_frame(frame, true).u32().ok())?
}

/// The status code and message of a STATUS frame.
pub fn status_message(frame: &[u8]) -> String {
    let mut fields = Fields::of_frame(frame, true);
    let code = fields.u32().unwrap_or(FX_FAILURE);
    let message = fields
        .string()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_default();
    if message.is_empty() {
        status_text(code).to_string()
    } else {
        message
    }
}

/// OpenSSH's words for a status code.
pub fn status_text(code: u32) -> &'static str {
    match code {
        FX_OK => "Success",
        FX_EOF => "End of file",
        FX_NO_SUCH_FILE => "No such file or directory",
        FX_PERMISSION_DENIED => "Permission denied",
        FX_BAD_MESSAGE => "Bad message",
        6 => "No connection",
        FX_CONNECTION_LOST => "Connection lost",
        FX_OP_UNSUPPORTED => "Operation unsupported",
        _ => "Failure",
    }
}

/// An ATTRS structure with size, permissions and times.
pub fn attrs(size: u64, permissions: u32, mtime: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.extend_from_slice(&(ATTR_SIZE | ATTR_PERMISSIONS | ATTR_ACMODTIME).to_be_bytes());
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&permissions.to_be_bytes());
    out.extend_from_slice(&mtime.to_be_bytes());
    out.extend_from_slice(&mtime.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ATTRS: [u8; 4] = [0, 0, 0, 0];

    #[test]
    fn frames_round_trip() {
        let frame = Frame::new(FXP_OPEN)
            .u32(7)
            .string(b"/tmp/x")
            .u32(FXF_READ)
            .raw(&NO_ATTRS)
            .finish();
        let read = read_frame(&mut &frame[..], MAX_PACKET).unwrap().unwrap();
        assert_eq!(read, frame);
        assert_eq!(frame_type(&read), FXP_OPEN);
        assert_eq!(frame_id(&read), 7);
        let mut fields = Fields::of_frame(&read, true);
        assert_eq!(fields.string().unwrap(), b"/tmp/x");
        assert_eq!(fields.u32().unwrap(), FXF_READ);
        fields.skip_attrs().unwrap();
        assert!(fields.is_empty());
    }

    #[test]
    fn oversized_and_truncated_frames_are_errors() {
        let big = (MAX_PACKET + 1).to_be_bytes();
        assert!(read_frame(&mut &big[..], MAX_PACKET).is_err());
        let cut = [0, 0, 0, 9, FXP_OPEN, 0];
        assert!(read_frame(&mut &cut[..], MAX_PACKET).is_err());
        assert!(read_frame(&mut &[0u8, 0][..], MAX_PACKET).is_err());
        assert!(read_frame(&mut &[][..], MAX_PACKET).unwrap().is_none());
    }

    #[test]
    fn fields_never_read_past_the_end() {
        let frame = Frame::new(FXP_OPEN).u32(1).u32(1000).finish();
        let mut fields = Fields::of_frame(&frame, true);
        assert_eq!(fields.string(), Err(Malformed));
        let frame = Frame::new(FXP_OPEN).u32(1).u32(u32::MAX).finish();
        assert_eq!(Fields::of_frame(&frame, true).string(), Err(Malformed));
        let attrs = Frame::new(FXP_ATTRS)
            .u32(1)
            .u32(ATTR_EXTENDED)
            .u32(u32::MAX)
            .finish();
        assert_eq!(Fields::of_frame(&attrs, true).skip_attrs(), Err(Malformed));
    }

    #[test]
    fn status_frames() {
        let frame = status(3, FX_PERMISSION_DENIED, "no");
        assert_eq!(status_code(&frame), Some(FX_PERMISSION_DENIED));
        assert_eq!(status_message(&frame), "no");
        let frame = status(3, FX_NO_SUCH_FILE, "");
        assert_eq!(status_message(&frame), "No such file or directory");
        assert_eq!(status_code(&Frame::new(FXP_DATA).u32(1).finish()), None);
    }
}
