//! jms-core: the domain model, policy files and the grant engine shared by
//! every jms binary. It knows nothing of sshd, PAM or HTTP.
//!
//! - [`model`]: users, groups, nodes, assets, accounts, grants, command filters
//! - [`policy`]: reading and checking policy files (YAML or JSON)
//! - [`nodes`]: the asset tree
//! - [`section`]: the copy-on-write entity lists of a checked policy
//! - [`engine`]: decide / list / accounts queries over a checked policy
//! - [`password`]: password hash and TOTP secret formats
//! - [`local_accounts`]: local Unix accounts and the names jms never takes
//! - [`escape`]: audit text shown with its control characters visible

pub mod atomic_file;
pub mod engine;
pub mod escape;
pub mod local_accounts;
pub mod login;
pub mod model;
pub mod nodes;
pub mod nss_cache;
pub mod password;
pub mod policy;
pub mod section;
pub mod uids;

pub use engine::{
    AccountRef, Decision, GrantState, GrantedAccount, GrantedAsset, Listing, Query, QueryError,
};
pub use policy::{Format, Policy, PolicyChange, PolicyError};
