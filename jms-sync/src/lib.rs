//! The central⇄bastion contract, shared by jms-server and jms-agentd (as
//! `jms-proto` is for the agentd socket): one definition of everything that
//! crosses that network, so a change made on one side and not the other
//! fails to compile or fails a test.
//!
//! - [`auth`]: the signed-request scheme: headers, nonce and clock rules
//! - [`bundle`]: signed policy bundles and deltas, their sealing for
//!   transport, signed requests and answers
//! - [`control`]: the server's orders (kill, watch, unlock) on the control poll
//! - [`enroll`]: a bastion's enrollment and the server's answer
//! - [`event`]: the audit events a bastion spools and uploads
//! - [`fleet`]: what a bastion reports about itself on its control poll
//! - [`live`]: a watched session's output pushed to the server
//! - [`job`]: account jobs (push, verify, rotate): order, sealed secrets, report
//! - [`paths`]: the sync API's paths
//! - [`queries`]: the query strings of the signed `GET` requests
//! - [`recording`]: the resumable recording upload's messages
//! - [`settings`]: the system settings the server keeps and bastions obey
//! - [`ticket`]: the one-time web tickets the server logs in to a bastion with

pub mod auth;
pub mod bundle;
pub mod control;
pub mod enroll;
pub mod event;
pub mod fleet;
pub mod job;
pub mod live;
pub mod paths;
pub mod queries;
pub mod recording;
pub mod settings;
pub mod ticket;
