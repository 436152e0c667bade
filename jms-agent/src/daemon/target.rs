//! A target, as both sides see it: `[account@]asset` as typed
//! ([`TargetSpec`]), what the monitor's grant resolution decided
//! ([`Resolved`], how to log in: [`Login`]), and what the worker connects
//! to ([`Target`], with its [`Credential`]). These cross the
//! monitor⇄worker boundary (`crate::wire`); a vaulted credential is never
//! sent with the decision (the worker asks for it when it connects).

use jms_core::model::{Asset, Protocol, Secret};

/// What authenticates the connection.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub enum Credential {
    /// Password (or keyboard-interactive answer).
    Password(Secret),
    /// OpenSSH private key text.
    Key(Secret),
    /// Nothing injected (`@ANON`): only `none` / keyboard-interactive
    /// without answers.
    #[default]
    None,
}

/// Where to connect, as whom.
#[derive(Debug, Clone)]
pub struct Target {
    /// The asset's name: names its known_hosts entry and every message.
    pub asset: String,
    pub address: String,
    pub port: u16,
    /// Pinned host keys (`ssh-ed25519 AAAA…`); empty = trust on first use.
    pub host_keys: Vec<String>,
    pub username: String,
    pub credential: Credential,
}

/// `[account@]asset` as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub account: Option<String>,
    pub asset: String,
}

impl TargetSpec {
    /// Splits at the last `@` (`@INPUT@web01` names the `@INPUT` account).
    pub fn parse(text: &str) -> Option<TargetSpec> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        match text.rsplit_once('@') {
            Some((account, asset)) if !account.is_empty() && !asset.is_empty() => {
                Some(TargetSpec {
                    account: Some(account.to_string()),
                    asset: asset.to_string(),
                })
            }
            Some(_) => None,
            None => Some(TargetSpec {
                account: None,
                asset: text.to_string(),
            }),
        }
    }
}

/// How to log in on the target.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Login {
    /// The vaulted secret of a real account (never sent to a worker with
    /// the decision: it asks for it when it connects).
    Vault {
        username: String,
        #[serde(skip)]
        credential: Credential,
    },
    /// Ask the engineer: the password, and the username too when `None`
    /// (`@INPUT`); `Some` for `@USER` or a real account without a secret.
    Ask { username: Option<String> },
    /// `@ANON`: her bastion username, nothing injected.
    Anon { username: String },
}

/// A target the user may use now.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Resolved {
    pub asset: Asset,
    /// The account's name in the policy (`root`, `@INPUT`, …).
    pub account: String,
    pub login: Login,
}

impl Resolved {
    /// The ssh port of the asset.
    pub fn port(&self) -> u16 {
        self.asset
            .protocols
            .iter()
            .find(|p| p.name == Protocol::Ssh)
            .or_else(|| self.asset.protocols.first())
            .map(|p| p.port)
            .unwrap_or(22)
    }

    /// The connection target, given the login's username and credential
    /// (for [`Login::Ask`], what the engineer typed).
    pub fn target(&self, username: String, credential: Credential) -> Target {
        Target {
            asset: self.asset.name.clone(),
            address: self.asset.address.clone(),
            port: self.port(),
            host_keys: self.asset.host_keys.clone(),
            username,
            credential,
        }
    }

    /// The target for a login that needs nothing typed (`None` for
    /// [`Login::Ask`]).
    pub fn vault_target(&self) -> Option<Target> {
        match &self.login {
            Login::Vault {
                username,
                credential,
            } => Some(self.target(username.clone(), credential.clone())),
            Login::Anon { username } => Some(self.target(username.clone(), Credential::None)),
            Login::Ask { .. } => None,
        }
    }
}
