//! A blocking client for jms-agentd with bounded timeouts: connect, send a
//! request, read its response, as many times as the caller keeps the
//! connection. Safe to use from PAM (no threads, no runtime).

use std::io::{ErrorKind, Read};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::frame::{read_response, write_frame, FrameError};
use crate::messages::{Request, Response};

/// One connection to jms-agentd.
pub struct Client {
    stream: UnixStream,
}

impl Client {
    /// Connects to the socket at `path`; reads and writes time out after
    /// `timeout` each.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, FrameError> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client { stream })
    }

    /// Over an already connected stream (its timeouts as they are).
    pub fn from_stream(stream: UnixStream) -> Client {
        Client { stream }
    }

    /// Sends `request` and waits for its response.
    pub fn call(&mut self, request: &Request) -> Result<Response, FrameError> {
        self.send(request)?;
        self.receive()
    }

    /// Sends `request` without waiting for its response.
    pub fn send(&mut self, request: &Request) -> Result<(), FrameError> {
        write_frame(&mut self.stream, request)
    }

    /// Reads the response to the request sent.
    pub fn receive(&mut self) -> Result<Response, FrameError> {
        read_response(&mut self.stream)
    }

    /// Whether the connection can carry another request: jms-agentd has
    /// neither closed it nor sent anything unasked (as it does when it
    /// drops an idle client). Never blocks; a byte found is consumed (the
    /// connection is not reusable then anyway).
    pub fn is_reusable(&self) -> bool {
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        let idle = matches!(
            (&self.stream).read(&mut byte),
            Err(e) if e.kind() == ErrorKind::WouldBlock
        );
        self.stream.set_nonblocking(false).is_ok() && idle
    }

    /// Connects, sends one request and returns its response.
    pub fn call_once(
        path: &Path,
        timeout: Duration,
        request: &Request,
    ) -> Result<Response, FrameError> {
        Client::connect(path, timeout)?.call(request)
    }
}
