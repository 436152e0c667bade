//! jms-agentd, split by privilege: [`monitor`] is the root daemon (policy,
//! vault, NSS cache, login lane, spool, the socket server, the workers it
//! starts); [`session`] is what runs in one unprivileged worker per
//! session (`jms-session`). The worker's tree never imports the monitor's
//! (`tests/layout.rs` keeps it so): what both sides use is here beside
//! them ([`config`], [`events`], [`live_session`]) or in [`crate::wire`],
//! the typed messages between them.

pub mod config;
pub mod events;
pub mod live_session;
pub mod monitor;
pub mod session;
pub mod target;
