//! The audit service: what bastions report of their sessions (events
//! ingested exactly once per bastion and idempotency key, projected into
//! sessions, commands and transfers) and the queries over it (the API's
//! and the audit web's lists).
//!
//! Ingest takes a request the sync service verified ([`Verified`]): its
//! nonce is remembered in the same transaction as the events, so a replay
//! stores nothing, and a retried batch stores nothing twice (`INSERT OR
//! IGNORE`).

use crate::error::Result as AdminResult;
use crate::store::{NewEvent, ReadTx, Store};
use crate::sync::{Result, SyncError, Verified};

/// The event source of the engineers' portal's own events (not a
/// bastion name: those never hold `@`).
pub const PORTAL_SOURCE: &str = "@portal";
/// The login audit's `service` of a portal login.
pub const PORTAL_SERVICE: &str = "jms-portal";

/// Most events in one upload.
pub const MAX_BATCH: usize = 10_000;

/// The audit service.
pub struct AuditService {
    store: Store,
}

impl AuditService {
    pub fn new(store: Store) -> AuditService {
        AuditService { store }
    }

    /// A read transaction over the audit (sessions, commands, transfers,
    /// the operation log).
    pub fn read(&self) -> AdminResult<Box<dyn ReadTx + '_>> {
        Ok(self.store.read()?)
    }

    /// Stores a batch of events from the bastion that signed the request,
    /// each once, in one transaction with the request's nonce (a replay
    /// stores nothing); returns how many were new.
    pub fn store_events(&self, request: &Verified, events: &[NewEvent<'_>]) -> Result<usize> {
        if events.len() > MAX_BATCH {
            return Err(SyncError::BadInput(format!(
                "{} events in one batch: send at most {MAX_BATCH}",
                events.len()
            )));
        }
        let mut tx = self.store.write()?;
        request.remember(tx.as_mut())?;
        // Projected in the same transaction, and only the new ones: a
        // retried batch projects nothing twice.
        let new = tx.store_events(request.bastion.id, events)?;
        tx.commit()?;
        Ok(new)
    }

    /// Records a login to the engineers' portal in the login audit, beside
    /// the bastions' PAM logins (source `@portal`, service
    /// [`PORTAL_SERVICE`]).
    pub fn record_portal_login(
        &self,
        user: &str,
        rhost: Option<&str>,
        outcome: &str,
        reason: Option<&str>,
    ) -> AdminResult<()> {
        let body = jms_sync::event::EventBody::Login {
            user: jms_sync::event::bounded_text(user).into_owned(),
            rhost: rhost.map(str::to_string),
            service: PORTAL_SERVICE.to_string(),
            outcome: outcome.to_string(),
            reason: reason.map(str::to_string),
        };
        let body = serde_json::to_string(&body)
            .map_err(|e| crate::error::AdminError::Invalid(format!("login event: {e}")))?;
        let key = format!("portal-login-{}", crate::crypto::new_token());
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut tx = self.store.write()?;
        let source = tx.local_source(PORTAL_SOURCE)?;
        tx.store_events(
            source,
            &[NewEvent {
                idempotency_key: key.into(),
                kind: "login".into(),
                at: at.into(),
                body: &body,
            }],
        )?;
        tx.commit()?;
        Ok(())
    }
}
