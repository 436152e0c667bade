//! jms-server: the central server of jms — its store, its admin API and the
//! client `jmsctl` uses to talk to it.
//!
//! - [`store`]: the storage trait and its SQLite backend (WAL, numbered
//!   migrations); secrets reach it sealed.
//! - [`crypto`]: the key that seals secrets at rest (AES-256-GCM) and API
//!   tokens (only their SHA-256 is stored).
//! - [`admin`]: the write path — every change is checked by jms-core
//!   against the whole policy, bumps the policy version and is logged.
//! - [`diff`]: entity-level differences between two policies.
//! - [`fleet`]: the enrolled bastions as admins see them (last sync,
//!   policy version held, their reports), revocation, the silence alarm.
//! - [`hashpool`]: the bounded threads of their own that check passwords
//!   for public endpoints.
//! - [`settings`]: the typed system settings document.
//! - [`api`]: the REST API (axum) and its OpenAPI document.
//! - [`client`]: a blocking client of that API (used by `jmsctl`).
//! - [`live`]: live sessions — orders for bastions (terminate, stream),
//!   watched sessions' output fanned out to watchers.
//! - [`mail`]: outgoing mail over SMTP (lettre), errors naming the step.
//! - [`recordings`]: session recordings uploaded by bastions (resumable
//!   chunks, checked by SHA-256) in the data directory.
//! - [`selfservice`]: mailed one-time set-password links, the pages where
//!   users set their password (and enroll TOTP), "forgot password".
//! - [`sync`]: the server's signing key, bastion enrollment, signed bundles,
//!   signed-request checks and exactly-once event ingest.
//! - [`tls`]: TLS built in — the server's own CA, its certificate, the
//!   bastions' client certificates, the TLS listener.
//! - [`web`]: the audit web UI under `/web/` (admin login with TOTP,
//!   sessions, command search, replay).

pub mod admin;
pub mod api;
pub mod client;
pub mod crypto;
pub mod diff;
pub mod fleet;
pub mod hashpool;
pub mod live;
pub mod mail;
pub mod recordings;
pub mod selfservice;
pub mod settings;
pub mod store;
pub mod sync;
pub mod tls;
pub mod web;

pub use admin::{Admin, AdminError};
