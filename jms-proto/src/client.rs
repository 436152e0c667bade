//! A blocking client for jms-agentd with bounded timeouts: connect, send one
//! request, read one response. Safe to use from PAM (no threads, no runtime).

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

    /// Sends `request` and waits for its response.
    pub fn call(&mut self, request: &Request) -> Result<Response, FrameError> {
        write_frame(&mut self.stream, request)?;
        read_response(&mut self.stream)
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
