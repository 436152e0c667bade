//! The central⇄bastion contract, shared by jms-server and jms-agentd (as
//! `jms-proto` is for the agentd socket): one definition of everything that
//! crosses that network, so a change made on one side and not the other
//! fails to compile or fails a test.
//!
//! - [`bundle`]: signed policy bundles and deltas, their sealing for
//!   transport, signed requests and answers
//! - [`event`]: the audit events a bastion spools and uploads
//! - [`fleet`]: what a bastion reports about itself on its control poll

pub mod bundle;
pub mod event;
pub mod fleet;
