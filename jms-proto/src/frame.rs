//! Framing: a 4-byte big-endian length, then the payload: one version byte
//! and a JSON document. Frames above [`MAX_FRAME`] are refused before any
//! allocation, so a hostile length prefix cannot exhaust memory.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version byte every frame starts with.
pub const PROTOCOL_VERSION: u8 = 1;

/// Largest payload accepted, version byte included.
pub const MAX_FRAME: usize = 64 * 1024;

/// Largest response payload a client accepts from jms-agentd (an asset
/// list of tens of thousands of assets). Requests, which the daemon reads
/// from untrusted callers, stay within [`MAX_FRAME`].
pub const MAX_RESPONSE_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer went away or timed out: drop the connection.
    #[error("socket: {0}")]
    Io(#[from] io::Error),
    /// The peer closed the connection between frames: a normal end.
    #[error("connection closed")]
    Closed,
    /// The length prefix is zero or above the maximum: drop the connection.
    #[error("frame of {0} bytes is outside 1..={MAX_FRAME}")]
    BadLength(usize),
    /// The peer speaks another protocol version: upgrade one side.
    #[error("protocol version {0} is not supported (this side speaks {PROTOCOL_VERSION})")]
    Version(u8),
    /// The payload is not a message of this protocol: answer with an error.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Most file descriptors one frame may carry (stdin, stdout, stderr).
pub const MAX_FDS: usize = 3;

/// Encodes one message as a frame: length prefix, version, JSON.
fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut payload = Vec::with_capacity(256);
    payload.push(PROTOCOL_VERSION);
    serde_json::to_writer(&mut payload, message)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if payload.len() > MAX_RESPONSE_FRAME {
        return Err(FrameError::BadLength(payload.len()));
    }
    let length = u32::try_from(payload.len()).expect("bounded by MAX_FRAME");
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&payload);
    Ok(frame)
}

/// Writes one message as a frame.
pub fn write_frame<T: Serialize>(out: &mut impl Write, message: &T) -> Result<(), FrameError> {
    out.write_all(&encode(message)?)?;
    out.flush()?;
    Ok(())
}

/// Writes one message as a frame carrying `fds` (SCM_RIGHTS).
pub fn write_frame_with_fds<T: Serialize>(
    stream: &UnixStream,
    message: &T,
    fds: &[BorrowedFd<'_>],
) -> Result<(), FrameError> {
    if fds.len() > MAX_ANY_FDS {
        return Err(FrameError::Malformed(format!(
            "{} file descriptors; at most {MAX_ANY_FDS}",
            fds.len()
        )));
    }
    let frame = encode(message)?;
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let control: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &rights };
    let sent = sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&frame)],
        control,
        MsgFlags::empty(),
        None,
    )
    .map_err(io::Error::from)?;
    (&*stream).write_all(&frame[sent..])?;
    Ok(())
}

/// Reads one frame and the file descriptors that came with it (closed on
/// drop if the caller does not keep them).
pub fn read_frame_with_fds<T: DeserializeOwned>(
    stream: &UnixStream,
) -> Result<(T, Vec<OwnedFd>), FrameError> {
    read_frame_with_fds_limited(stream, MAX_FDS, MAX_FRAME)
}

/// Most descriptors [`read_frame_with_fds_limited`] accepts in one frame.
pub const MAX_ANY_FDS: usize = 8;

/// [`read_frame_with_fds`] with other limits: at most `max_fds` (up to
/// [`MAX_ANY_FDS`]) descriptors and a payload of `max_frame` bytes (for a
/// peer more trusted than a socket client: jms-agentd to its session
/// workers).
pub fn read_frame_with_fds_limited<T: DeserializeOwned>(
    stream: &UnixStream,
    max_fds: usize,
    max_frame: usize,
) -> Result<(T, Vec<OwnedFd>), FrameError> {
    let mut prefix = [0u8; 4];
    let mut control = nix::cmsg_space!([RawFd; MAX_ANY_FDS]);
    let mut iov = [IoSliceMut::new(&mut prefix)];
    let (received, fds, truncated) = {
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for cmsg in message.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                // SAFETY: the kernel just installed these descriptors in this
                // process for us; nothing else owns them.
                fds.extend(
                    raw.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        (
            message.bytes,
            fds,
            message.flags.contains(MsgFlags::MSG_CTRUNC),
        )
    };
    if truncated || fds.len() > max_fds.min(MAX_ANY_FDS) {
        return Err(FrameError::Malformed(format!(
            "more than {max_fds} file descriptors"
        )));
    }
    if received == 0 {
        return Err(FrameError::Closed);
    }
    (&*stream).read_exact(&mut prefix[received..])?;
    let message = read_payload(
        u32::from_be_bytes(prefix) as usize,
        max_frame,
        &mut &*stream,
    )?;
    Ok((message, fds))
}

/// Reads one frame (at most [`MAX_FRAME`]) and decodes its message.
pub fn read_frame<T: DeserializeOwned>(input: &mut impl Read) -> Result<T, FrameError> {
    read_frame_limited(input, MAX_FRAME)
}

/// Reads one response from jms-agentd (at most [`MAX_RESPONSE_FRAME`]).
pub fn read_response<T: DeserializeOwned>(input: &mut impl Read) -> Result<T, FrameError> {
    read_frame_limited(input, MAX_RESPONSE_FRAME)
}

fn read_frame_limited<T: DeserializeOwned>(
    input: &mut impl Read,
    max: usize,
) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    match input.read_exact(&mut prefix) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        other => other?,
    }
    read_payload(u32::from_be_bytes(prefix) as usize, max, input)
}

fn read_payload<T: DeserializeOwned>(
    length: usize,
    max: usize,
    input: &mut impl Read,
) -> Result<T, FrameError> {
    if length == 0 || length > max {
        return Err(FrameError::BadLength(length));
    }
    let mut payload = vec![0u8; length];
    input.read_exact(&mut payload)?;
    if payload[0] != PROTOCOL_VERSION {
        return Err(FrameError::Version(payload[0]));
    }
    serde_json::from_slice(&payload[1..]).map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, Response};

    #[test]
    fn a_message_survives_the_round_trip() {
        let mut buffer = Vec::new();
        let request = Request::UserStatus {
            user: "alice".into(),
        };
        write_frame(&mut buffer, &request).unwrap();
        let back: Request = read_frame(&mut buffer.as_slice()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{request:?}"));
    }

    #[test]
    fn file_descriptors_travel_with_a_frame() {
        use std::io::Seek;
        let (left, right) = UnixStream::pair().unwrap();
        let mut file = tempfile_with(b"passed");
        file.rewind().unwrap();
        let request = Request::ListAssets;
        write_frame_with_fds(&left, &request, &[std::os::fd::AsFd::as_fd(&file)]).unwrap();
        let (back, fds): (Request, _) = read_frame_with_fds(&right).unwrap();
        assert!(matches!(back, Request::ListAssets));
        assert_eq!(fds.len(), 1);
        let mut text = String::new();
        std::fs::File::from(fds.into_iter().next().unwrap())
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "passed");
        // Without descriptors, and closed.
        write_frame_with_fds(&left, &request, &[]).unwrap();
        let (_, fds): (Request, _) = read_frame_with_fds(&right).unwrap();
        assert!(fds.is_empty());
        drop(left);
        assert!(matches!(
            read_frame_with_fds::<Request>(&right),
            Err(FrameError::Closed)
        ));
    }

    fn tempfile_with(bytes: &[u8]) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("jms-proto-fd-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn oversized_and_empty_lengths_are_refused_before_allocating() {
        let huge = (u32::MAX).to_be_bytes();
        let err = read_frame::<Request>(&mut huge.as_slice()).unwrap_err();
        assert!(matches!(err, FrameError::BadLength(_)), "{err}");
        let zero = 0u32.to_be_bytes();
        assert!(matches!(
            read_frame::<Request>(&mut zero.as_slice()),
            Err(FrameError::BadLength(0))
        ));
    }

    #[test]
    fn a_large_response_is_read_as_a_response_but_refused_as_a_request() {
        let assets = (0..2_000)
            .map(|i| crate::ListedAsset {
                name: format!("asset-{i:05}"),
                address: format!("10.0.{}.{}", i / 256, i % 256),
                nodes: vec!["/Default/prod/web".into()],
                accounts: Vec::new(),
            })
            .collect();
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &Response::Assets { assets }).unwrap();
        assert!(
            buffer.len() > MAX_FRAME,
            "the test needs a frame above MAX_FRAME"
        );
        let back: Response = read_response(&mut buffer.as_slice()).unwrap();
        assert!(matches!(back, Response::Assets { assets } if assets.len() == 2_000));
        assert!(matches!(
            read_frame::<Response>(&mut buffer.as_slice()),
            Err(FrameError::BadLength(_))
        ));
    }

    #[test]
    fn wrong_version_truncation_and_garbage_are_errors() {
        let mut frame = 3u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[9, b'{', b'}']);
        assert!(matches!(
            read_frame::<Request>(&mut frame.as_slice()),
            Err(FrameError::Version(9))
        ));
        let mut truncated = 10u32.to_be_bytes().to_vec();
        truncated.extend_from_slice(&[1, b'{']);
        assert!(matches!(
            read_frame::<Request>(&mut truncated.as_slice()),
            Err(FrameError::Io(_))
        ));
        let mut garbage = 4u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(&[1, b'x', b'y', b'z']);
        assert!(matches!(
            read_frame::<Response>(&mut garbage.as_slice()),
            Err(FrameError::Malformed(_))
        ));
        assert!(matches!(
            read_frame::<Request>(&mut [].as_slice()),
            Err(FrameError::Closed)
        ));
    }
}
