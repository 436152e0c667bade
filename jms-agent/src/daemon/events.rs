//! The audit events a worker sends to the monitor
//! ([`crate::wire::FromWorker`]) and the monitor spools and uploads: the
//! sync contract's own ([`jms_sync::event`]), named here for the daemon.

pub use jms_sync::event::{bounded_text, new_id, EventBody, Scope, MAX_TEXT_BYTES};
