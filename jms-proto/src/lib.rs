//! The jms-agentd socket protocol, shared by the daemon, `pam_jms` and
//! `jms-agent`: one typed [`Request`]/[`Response`] pair, a versioned,
//! length-prefixed frame with a hard maximum size, and a blocking client with
//! bounded timeouts (safe inside PAM: no runtime, no threads).

mod client;
mod frame;
mod messages;

pub use client::Client;
pub use frame::{
    read_frame, read_frame_with_fds, read_frame_with_fds_limited, read_response, write_frame,
    write_frame_with_fds, FrameError, MAX_ANY_FDS, MAX_FDS, MAX_FRAME, MAX_RESPONSE_FRAME,
    PROTOCOL_VERSION,
};
pub use messages::{
    AccountResult, AuthResult, ListedAccount, ListedAsset, PtyInfo, Request, Response,
    SessionRequest,
};

/// Where jms-agentd listens unless configured otherwise.
pub const DEFAULT_SOCKET_PATH: &str = "/run/jms/agentd.sock";
