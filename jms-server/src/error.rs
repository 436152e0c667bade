//! The error every service's admin-facing operation returns: what went
//! wrong, each variant one HTTP status (`crate::api::ApiError` maps them).

use crate::crypto::CryptoError;
use crate::store::StoreError;

/// Why a request was not carried out; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The named entity does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// An entity of that name already exists (409).
    #[error("{0}")]
    Conflict(String),
    /// The request itself is malformed (400): fix it and retry.
    #[error("{0}")]
    BadInput(String),
    /// The change would make the policy invalid (422): jms-core's message
    /// names the entity and field to fix.
    #[error("{0}")]
    Invalid(String),
    /// The token's scope does not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// The store failed (500).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A secret could not be opened (500): wrong key file.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

pub type Result<T> = std::result::Result<T, AdminError>;
