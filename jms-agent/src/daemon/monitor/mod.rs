//! The monitor: jms-agentd as root. It owns the configuration in force,
//! enrollment with the central server, the policy source, the private
//! login state, the published NSS cache, the durable event spool, the
//! socket server with its request handlers (PAM's login lane and the
//! agent's session requests), and the workers it starts, one per session
//! ([`workers`]), whose asks it answers. It never parses a session's byte
//! stream (that is [`crate::daemon::session`], in the worker).
//!
//! - [`handlers`]: [`handlers::Daemon`], the shared state, and the
//!   request handlers; [`server`]: the socket and its login lane.
//! - [`workers`]: starting a worker and answering it (grants, credentials,
//!   folder decisions, share codes, events into the spool).
//! - [`jobs`]: account jobs (push, verify, rotate) the server orders, each
//!   run in a worker of its own; [`control`] passes their reports on.
//! - [`live`]: the registry of live sessions, revocation, share codes and
//!   the server's control poll (watch, kill).
//! - [`spool`], [`open_sessions`], [`audit`]: the audit trail on disk;
//!   [`running`]: the sessions whose worker runs (their recordings wait);
//!   [`upload`]: its way to the server.
//! - [`policy_source`], [`publish`], [`state`], [`enroll`];
//!   [`central`]: the one client every exchange with the server uses.

pub mod audit;
pub mod central;
pub mod control;
pub mod enroll;
pub mod handlers;
pub mod jobs;
pub mod live;
pub mod open_sessions;
pub mod pinning;
pub mod policy_source;
pub mod publish;
pub mod resolve;
pub mod running;
pub mod server;
pub mod share_codes;
pub mod spool;
pub mod state;
pub mod tickets;
pub mod upload;
pub mod worker_user;
pub mod workers;
