//! The socket server: a unix socket (mode 0666; every request is checked
//! against the caller's uid from SO_PEERCRED), one thread per client up to
//! `max_clients`, bounded frames and timeouts. A malformed or oversized
//! message gets an error response and never takes the daemon down.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use jms_proto::{read_frame_with_fds, write_frame, FrameError, Request, Response};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
use tracing::{debug, warn};

use crate::daemon::handlers::Daemon;

/// How long a client may take to send a request or read a response.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the socket, replacing a stale one, with its directory created.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing stale {}", path.display())),
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves clients until the listener fails.
pub fn serve(listener: UnixListener, daemon: Arc<Daemon>) -> Result<()> {
    let busy = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "accept failed");
                continue;
            }
        };
        if busy.load(Ordering::SeqCst) >= daemon.config.max_clients {
            let mut stream = stream;
            let _ = write_frame(
                &mut stream,
                &Response::Error {
                    message: "daemon busy, try again".into(),
                },
            );
            continue;
        }
        busy.fetch_add(1, Ordering::SeqCst);
        let (daemon, busy) = (Arc::clone(&daemon), Arc::clone(&busy));
        std::thread::spawn(move || {
            serve_client(stream, &daemon);
            busy.fetch_sub(1, Ordering::SeqCst);
        });
    }
    Ok(())
}

fn serve_client(mut stream: UnixStream, daemon: &Daemon) {
    let uid = match getsockopt(&stream, PeerCredentials) {
        Ok(credentials) => credentials.uid(),
        Err(e) => {
            warn!(error = %e, "no peer credentials; closing");
            return;
        }
    };
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    loop {
        let response = match read_frame_with_fds::<Request>(&stream) {
            Ok((Request::OpenSession(request), fds)) => {
                // The session owns the connection until it ends.
                crate::daemon::session::serve(daemon, uid, request, fds, stream);
                return;
            }
            Ok((request, _unexpected_fds)) => {
                let kind = request.kind();
                let response = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    daemon.handle(request, uid)
                }))
                .unwrap_or_else(|_| Response::Error {
                    message: "internal error".into(),
                });
                debug!(request = kind, uid, "served");
                response
            }
            Err(FrameError::Closed) => return,
            Err(e @ (FrameError::Malformed(_) | FrameError::Version(_))) => {
                warn!(uid, error = %e, "bad request");
                Response::Error {
                    message: e.to_string(),
                }
            }
            Err(e) => {
                // Bad length or I/O: the stream is out of sync; say why and drop it.
                warn!(uid, error = %e, "dropping client");
                let _ = write_frame(
                    &mut stream,
                    &Response::Error {
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        if write_frame(&mut stream, &response).is_err() {
            return;
        }
    }
}
