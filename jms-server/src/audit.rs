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
}
