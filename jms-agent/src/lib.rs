//! jms-agent: the bastion side of jms.
//!
//! - [`daemon`]: jms-agentd, the privileged daemon that owns the policy,
//!   the NSS cache, the private login state and the socket that PAM and the
//!   session agent talk to.
//! - The `jms-agent` binary (src/bin) is the unprivileged ForceCommand and
//!   AuthorizedKeysCommand.

pub mod client;
pub mod daemon;
pub mod wire;
