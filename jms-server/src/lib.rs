//! jms-server: the central server of jms — its store, its services, its
//! HTTP application and the client `jmsctl` uses to talk to it.
//!
//! - [`services`]: every service, wired in one place ([`Services`]);
//!   a dependency between services is a constructor argument there.
//! - [`app`]: the HTTP application: the routers of [`api`], [`selfservice`]
//!   and [`web`], each built from the services it uses, merged.
//! - [`store`]: the storage trait and its SQLite backend (WAL, numbered
//!   migrations); secrets reach it sealed.
//! - [`crypto`]: the key that seals secrets at rest (AES-256-GCM) and API
//!   tokens (only their SHA-256 is stored).
//! - [`error`]: [`AdminError`], what the services' operations return.
//! - [`policy`]: the policy service, the write path — every change is
//!   checked by jms-core against the whole policy, bumps the policy
//!   version and is logged; what each recent version changed.
//! - [`tokens`]: the API tokens service.
//! - [`audit`]: the audit service: event ingest (exactly once) and queries.
//! - [`bastion_ssh`]: the server's SSH client to its bastions (web terminal, file manager)
//! - [`diff`]: entity-level differences between two policies.
//! - [`fleet`]: the fleet service: the enrolled bastions as admins see them (last sync,
//!   policy version held, their reports), revocation, the silence alarm.
//! - [`hashpool`]: the bounded threads of their own that check passwords
//!   for public endpoints.
//! - [`settings`]: the typed system settings document.
//! - [`api`]: the REST API (axum) and its OpenAPI document.
//! - [`client`]: a blocking client of that API (used by `jmsctl`).
//! - [`live`]: the live service — orders for bastions (terminate, stream),
//!   watched sessions' output fanned out to watchers.
//! - [`mail`]: outgoing mail over SMTP (lettre), errors naming the step.
//! - [`recordings`]: the recordings service: session recordings uploaded by bastions (resumable
//!   chunks, checked by SHA-256) in the data directory.
//! - [`selfservice`]: mailed one-time set-password links (the
//!   [`Links`](selfservice::links::Links) service), the pages where users
//!   set their password (and enroll TOTP), "forgot password".
//! - [`sync`]: the server's signing key, bastion enrollment, signed bundles
//!   and deltas, long-polls, signed-request checks.
//! - [`tls`]: TLS built in — the server's own CA, its certificate, the
//!   bastions' client certificates, the TLS listener.
//! - [`engineers`]: the engineers' portal service: logins under the
//!   bastion's rules, sessions, the compiled policy, SFTP sessions.
//! - [`portal`]: the engineers' web portal at the site root (login under
//!   the bastion's rules, the assets granted now).
//! - [`web`]: the audit web UI under `/web/` (admin login with TOTP,
//!   sessions, command search, replay); its admins (the
//!   [`WebAdmins`](web::admins::WebAdmins) service).

pub mod api;
pub mod app;
pub mod audit;
pub mod bastion_ssh;
pub mod bus;
pub mod client;
pub mod crypto;
pub mod diff;
pub mod engineers;
pub mod error;
pub mod fleet;
pub mod hashpool;
pub mod jobs;
pub mod live;
pub mod mail;
pub mod policy;
pub mod portal;
pub mod recordings;
pub mod selfservice;
pub mod services;
pub mod settings;
pub mod store;
pub mod sync;
pub mod tls;
pub mod tokens;
pub mod web;

pub use error::AdminError;
pub use services::Services;
