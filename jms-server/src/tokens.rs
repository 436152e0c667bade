//! The admin API's tokens: created by `jms-server token create` (shown
//! once, only their SHA-256 stored), each with a role ([`Scope`]); the API
//! authenticates every bearer string here.

use crate::crypto;
use crate::error::Result;
use crate::store::{NewOpLogEntry, Scope, Store, TokenRow};

/// The API tokens service.
pub struct Tokens {
    store: Store,
}

impl Tokens {
    pub fn new(store: Store) -> Tokens {
        Tokens { store }
    }

    /// Creates an API token; returns its id and the token itself (shown
    /// once: only its SHA-256 is kept).
    pub fn create_token(&self, actor: &str, name: &str, scope: Scope) -> Result<(i64, String)> {
        let token = crypto::new_token();
        let mut tx = self.store.write()?;
        let id = tx.insert_token(name, scope, &crypto::token_hash(&token))?;
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "create".to_string(),
            kind: "token".to_string(),
            name: format!("{id} ({name}, {})", scope.as_str()),
            fields: Vec::new(),
            version,
        })?;
        tx.commit()?;
        Ok((id, token))
    }

    /// The live token behind a bearer string.
    pub fn authenticate(&self, token: &str) -> Result<Option<TokenRow>> {
        Ok(self
            .store
            .read()?
            .token_by_hash(&crypto::token_hash(token))?)
    }
}
