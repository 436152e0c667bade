//! jms-agentd: configuration, enrollment with the central server, policy source, private state, the published
//! NSS cache, and the socket server with its request handlers.

pub mod config;
pub mod enroll;
pub mod handlers;
pub mod live;
pub mod policy_source;
pub mod publish;
pub mod server;
pub mod session;
pub mod state;
pub mod upload;
pub mod workers;
