//! Sessions: one engineer's connection to one target, from the request
//! (with her stdio passed by SCM_RIGHTS) to the end, relayed, recorded and
//! audited here, in the daemon. (Being built: the sessions issue.)

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

use jms_proto::{write_frame, Response, SessionRequest};

use crate::daemon::handlers::Daemon;

/// Serves one session on `stream` for the jms user with `uid`.
pub fn serve(daemon: &Daemon, uid: u32, request: SessionRequest, fds: Vec<OwnedFd>, mut stream: UnixStream) {
    let _ = (daemon, uid, request, fds);
    let _ = write_frame(&mut stream, &Response::Denied { reason: "sessions are not available yet".into() });
}
