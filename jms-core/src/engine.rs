//! The grant engine: who may reach which asset, as which account, over
//! which protocol, doing what, at a given time.
//!
//! Semantics (from JumpServer's asset grants, see DESIGN.md):
//! - a grant's users are its `users` ∪ the members of its `user_groups`;
//!   its assets are its `assets` ∪ every asset under its `nodes` at any depth;
//! - accounts: `@ALL`, named accounts (only those the asset has), `@INPUT`,
//!   `@USER` (the asset's account whose username is the user's name, or a
//!   virtual one typed at connect time when there is none), `@ANON`;
//! - a grant with an empty required part (no users and no groups, no assets
//!   and no nodes, no accounts, no protocols, no actions) is inactive;
//! - outside [date_start, date_expired) or with `is_active: false` a grant
//!   does nothing; `*` is only ever a literal name;
//! - grants for the same (user, asset, account) union protocols and actions;
//! - a disabled or expired user, and a disabled asset, get nothing.
//!
//! Indexes: grants per user (direct and through groups), grants per asset
//! and per node, the node closure of each asset and the assets under each
//! node, so a decision looks only at the grants of that user or that asset.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::model::{
    alias, Account, Action, ActionSet, Asset, Grant, PolicyDocument, Protocol, ProtocolSet, User,
};
use crate::nodes::{NodeId, NodeTree};
use crate::policy::Policy;

type UserId = u32;
type AssetId = u32;
type GrantId = u32;

/// Which accounts a grant names.
#[derive(Debug, Default)]
struct AccountSpec {
    all: bool,
    input: bool,
    same_name: bool,
    anon: bool,
    names: Vec<String>,
}

impl AccountSpec {
    fn of(grant: &Grant) -> Self {
        let mut spec = AccountSpec::default();
        for name in &grant.accounts {
            match name.as_str() {
                alias::ALL => spec.all = true,
                alias::INPUT => spec.input = true,
                alias::USER => spec.same_name = true,
                alias::ANON => spec.anon = true,
                _ => spec.names.push(name.clone()),
            }
        }
        spec
    }

    fn covers_real(&self, account: &Account, user: &User) -> bool {
        self.all
            || self.names.contains(&account.name)
            || (self.same_name && account.username == user.username)
    }
}

#[derive(Debug)]
struct CompiledGrant {
    assets: Vec<AssetId>,
    nodes: Vec<NodeId>,
    accounts: AccountSpec,
    protocols: ProtocolSet,
    actions: ActionSet,
    /// The first empty required part, when there is one.
    missing: Option<&'static str>,
}

/// Why a grant does or does not apply at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantState {
    Active,
    /// A required part is empty: the grant never applies.
    Incomplete(&'static str),
    Disabled,
    NotYetStarted(String),
    Expired(String),
}

impl GrantState {
    /// The reason, phrased after "grant NAME ".
    pub fn describe(&self) -> String {
        match self {
            GrantState::Active => "is active".into(),
            GrantState::Incomplete(part) => format!("is inactive: it lists no {part}"),
            GrantState::Disabled => "is disabled".into(),
            GrantState::NotYetStarted(at) => format!("starts {at}"),
            GrantState::Expired(at) => format!("expired {at}"),
        }
    }
}

/// Indexes over a checked policy document.
#[derive(Debug, Default)]
pub(crate) struct GrantIndex {
    user_by_name: HashMap<String, UserId>,
    asset_by_name: HashMap<String, AssetId>,
    grants: Vec<CompiledGrant>,
    /// Sorted grant ids per user, through her groups too.
    user_grants: Vec<Vec<GrantId>>,
    /// Grant ids naming the asset directly.
    asset_grants: Vec<Vec<GrantId>>,
    /// Grant ids naming the node.
    node_grants: Vec<Vec<NodeId>>,
    /// Sorted nodes holding the asset, with all their ancestors.
    asset_closure: Vec<Vec<NodeId>>,
    /// Assets under each node at any depth.
    node_assets: Vec<Vec<AssetId>>,
    /// Per asset: active flag and offered protocols, kept compact for list.
    asset_active: Vec<bool>,
    asset_offered: Vec<ProtocolSet>,
    /// Asset ids in name order, so list needs no sort.
    assets_by_name: Vec<AssetId>,
}

fn id(position: usize) -> u32 {
    u32::try_from(position).expect("policy has fewer than 2^32 entities")
}

impl GrantIndex {
    /// Builds the indexes; `doc` must have passed the policy checks.
    pub(crate) fn build(doc: &PolicyDocument, nodes: &NodeTree) -> GrantIndex {
        let user_by_name: HashMap<String, UserId> = doc
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.username.clone(), id(i)))
            .collect();
        let asset_by_name: HashMap<String, AssetId> = doc
            .assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), id(i)))
            .collect();
        let group_by_name: HashMap<&str, usize> = doc
            .user_groups
            .iter()
            .enumerate()
            .map(|(i, g)| (g.name.as_str(), i))
            .collect();
        let mut group_members: Vec<Vec<UserId>> = vec![Vec::new(); doc.user_groups.len()];
        for (u, user) in doc.users.iter().enumerate() {
            for group in &user.groups {
                group_members[group_by_name[group.as_str()]].push(id(u));
            }
        }

        let mut asset_closure = vec![Vec::new(); doc.assets.len()];
        let mut node_assets = vec![Vec::new(); nodes.len()];
        for (a, asset) in doc.assets.iter().enumerate() {
            let closure: &mut Vec<NodeId> = &mut asset_closure[a];
            for path in &asset.nodes {
                let node = nodes.get(path).expect("checked node");
                closure.extend(nodes.self_and_ancestors(node));
            }
            closure.sort_unstable();
            closure.dedup();
            for node in closure.iter() {
                node_assets[*node as usize].push(id(a));
            }
        }

        let mut user_grants = vec![Vec::new(); doc.users.len()];
        let mut asset_grants = vec![Vec::new(); doc.assets.len()];
        let mut node_grants = vec![Vec::new(); nodes.len()];
        let mut grants = Vec::with_capacity(doc.grants.len());
        for (g, grant) in doc.grants.iter().enumerate() {
            let gid = id(g);
            for name in &grant.users {
                user_grants[user_by_name[name] as usize].push(gid);
            }
            for name in &grant.user_groups {
                for member in &group_members[group_by_name[name.as_str()]] {
                    user_grants[*member as usize].push(gid);
                }
            }
            let mut assets: Vec<AssetId> = grant.assets.iter().map(|n| asset_by_name[n]).collect();
            assets.sort_unstable();
            assets.dedup();
            for asset in &assets {
                asset_grants[*asset as usize].push(gid);
            }
            let mut grant_nodes: Vec<NodeId> = grant
                .nodes
                .iter()
                .map(|p| nodes.get(p).expect("checked node"))
                .collect();
            grant_nodes.sort_unstable();
            grant_nodes.dedup();
            for node in &grant_nodes {
                node_grants[*node as usize].push(gid);
            }
            let protocols = ProtocolSet::from_choices(&grant.protocols);
            let actions = ActionSet::from_choices(&grant.actions);
            let missing = if grant.users.is_empty() && grant.user_groups.is_empty() {
                Some("users or user groups")
            } else if grant.assets.is_empty() && grant.nodes.is_empty() {
                Some("assets or nodes")
            } else if grant.accounts.is_empty() {
                Some("accounts")
            } else if protocols.is_empty() {
                Some("protocols")
            } else if actions.is_empty() {
                Some("actions")
            } else {
                None
            };
            grants.push(CompiledGrant {
                assets,
                nodes: grant_nodes,
                accounts: AccountSpec::of(grant),
                protocols,
                actions,
                missing,
            });
        }
        for list in &mut user_grants {
            list.sort_unstable();
            list.dedup();
        }

        let mut assets_by_name: Vec<AssetId> = (0..doc.assets.len()).map(id).collect();
        assets_by_name.sort_unstable_by(|x, y| {
            doc.assets[*x as usize]
                .name
                .cmp(&doc.assets[*y as usize].name)
        });

        GrantIndex {
            asset_active: doc.assets.iter().map(|a| a.is_active).collect(),
            asset_offered: doc.assets.iter().map(ProtocolSet::of_asset).collect(),
            assets_by_name,
            user_by_name,
            asset_by_name,
            grants,
            user_grants,
            asset_grants,
            node_grants,
            asset_closure,
            node_assets,
        }
    }

    fn covers(&self, grant: GrantId, asset: AssetId) -> bool {
        let compiled = &self.grants[grant as usize];
        compiled.assets.binary_search(&asset).is_ok()
            || compiled
                .nodes
                .iter()
                .any(|n| self.asset_closure[asset as usize].binary_search(n).is_ok())
    }

    /// Every grant naming both the user and the asset, in id order.
    fn grants_for(&self, user: UserId, asset: AssetId) -> Vec<GrantId> {
        let by_user = &self.user_grants[user as usize];
        let closure = &self.asset_closure[asset as usize];
        let by_asset_len = self.asset_grants[asset as usize].len()
            + closure
                .iter()
                .map(|n| self.node_grants[*n as usize].len())
                .sum::<usize>();
        if by_user.len() <= by_asset_len {
            return by_user
                .iter()
                .copied()
                .filter(|g| self.covers(*g, asset))
                .collect();
        }
        let mut found: Vec<GrantId> = self.asset_grants[asset as usize]
            .iter()
            .chain(
                closure
                    .iter()
                    .flat_map(|n| self.node_grants[*n as usize].iter()),
            )
            .copied()
            .filter(|g| by_user.binary_search(g).is_ok())
            .collect();
        found.sort_unstable();
        found.dedup();
        found
    }
}

/// An account a user may use on an asset.
#[derive(Debug, Clone, Copy)]
pub enum AccountRef<'p> {
    /// An account of the asset, with its vaulted secret.
    Real(&'p Account),
    /// `@INPUT`: she types username and password at connect time.
    Input,
    /// `@USER` when the asset has no account of her name: her bastion
    /// username, with a password asked at connect time.
    SameName,
    /// `@ANON`: nothing injected.
    Anon,
}

impl<'p> AccountRef<'p> {
    /// The name used to pick it: the account name or the alias.
    pub fn name(&self) -> &'p str {
        match self {
            AccountRef::Real(account) => &account.name,
            AccountRef::Input => alias::INPUT,
            AccountRef::SameName => alias::USER,
            AccountRef::Anon => alias::ANON,
        }
    }
}

/// An account granted to a user on an asset, with what she may do with it.
#[derive(Debug, Clone)]
pub struct GrantedAccount<'p> {
    pub account: AccountRef<'p>,
    /// Granted protocols the asset offers.
    pub protocols: ProtocolSet,
    pub actions: ActionSet,
}

/// An asset granted to a user, with its accounts.
#[derive(Debug, Clone)]
pub struct GrantedAsset<'p> {
    pub asset: &'p Asset,
    pub accounts: Vec<GrantedAccount<'p>>,
}

/// One question to the engine.
#[derive(Debug, Clone)]
pub struct Query<'q> {
    pub user: &'q str,
    pub asset: &'q str,
    /// An account name or alias; `None` means any account.
    pub account: Option<&'q str>,
    /// `None` means any protocol the asset offers.
    pub protocol: Option<Protocol>,
    pub action: Action,
    pub at: DateTime<Utc>,
}

/// The engine's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied, with a reason a human understands.
    Deny(String),
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// A question that names something the policy does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Not a jms user: the caller falls through to other sources.
    #[error("unknown user `{0}`")]
    UnknownUser(String),
    /// No such asset: callers facing engineers must not reveal this.
    #[error("unknown asset `{0}`")]
    UnknownAsset(String),
}

impl Policy {
    /// The user named `name`, if the policy has one.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.index
            .user_by_name
            .get(name)
            .map(|u| &self.doc.users[*u as usize])
    }

    /// The state of grant `name`'s window and parts at `at`.
    pub fn grant_state(&self, grant: &Grant, at: DateTime<Utc>) -> GrantState {
        let position = self.doc.grants.iter().position(|g| g.name == grant.name);
        let missing = position.and_then(|g| self.index.grants[g].missing);
        state_of(grant, missing, at)
    }

    fn user_id(&self, name: &str) -> Result<UserId, QueryError> {
        self.index
            .user_by_name
            .get(name)
            .copied()
            .ok_or_else(|| QueryError::UnknownUser(name.to_string()))
    }

    fn asset_id(&self, name: &str) -> Result<AssetId, QueryError> {
        self.index
            .asset_by_name
            .get(name)
            .copied()
            .ok_or_else(|| QueryError::UnknownAsset(name.to_string()))
    }

    /// Why the user gets nothing at `at` (disabled, expired), if so.
    fn user_barred(&self, user: &User, at: DateTime<Utc>) -> Option<String> {
        if !user.is_active {
            return Some(format!("user {} is disabled", user.username));
        }
        match user.date_expired {
            Some(end) if at >= end.0 => Some(format!("user {} expired {end}", user.username)),
            _ => None,
        }
    }

    fn is_active(&self, grant: GrantId, at: DateTime<Utc>) -> bool {
        let g = grant as usize;
        state_of(&self.doc.grants[g], self.index.grants[g].missing, at) == GrantState::Active
    }

    /// Unions the active grants' accounts, protocols and actions on asset
    /// `a`. `slots` is scratch space, reused across calls by `list`.
    fn resolve<'p>(
        &'p self,
        user: &User,
        a: AssetId,
        grants: &[GrantId],
        slots: &mut Vec<(ProtocolSet, ActionSet, bool)>,
    ) -> Vec<GrantedAccount<'p>> {
        let asset = &self.doc.assets[a as usize];
        let offered = self.index.asset_offered[a as usize];
        slots.clear();
        slots.resize(
            asset.accounts.len(),
            (ProtocolSet::EMPTY, ActionSet::EMPTY, false),
        );
        let mut virtuals = [
            (
                AccountRef::Input,
                ProtocolSet::EMPTY,
                ActionSet::EMPTY,
                false,
            ),
            (
                AccountRef::SameName,
                ProtocolSet::EMPTY,
                ActionSet::EMPTY,
                false,
            ),
            (
                AccountRef::Anon,
                ProtocolSet::EMPTY,
                ActionSet::EMPTY,
                false,
            ),
        ];
        let mut has_same_name = None;
        for grant in grants {
            let compiled = &self.index.grants[*grant as usize];
            let spec = &compiled.accounts;
            for (slot, account) in slots.iter_mut().zip(&asset.accounts) {
                if spec.covers_real(account, user) {
                    *slot = (
                        slot.0.union(compiled.protocols),
                        slot.1.union(compiled.actions),
                        true,
                    );
                }
            }
            let same_name_virtual = spec.same_name
                && !*has_same_name.get_or_insert_with(|| {
                    asset.accounts.iter().any(|a| a.username == user.username)
                });
            let flags = [spec.input, same_name_virtual, spec.anon];
            for (slot, on) in virtuals.iter_mut().zip(flags) {
                if on {
                    slot.1 = slot.1.union(compiled.protocols);
                    slot.2 = slot.2.union(compiled.actions);
                    slot.3 = true;
                }
            }
        }
        let real = asset
            .accounts
            .iter()
            .zip(slots.iter())
            .filter(|(_, s)| s.2)
            .map(|(account, s)| GrantedAccount {
                account: AccountRef::Real(account),
                protocols: s.0.intersection(offered),
                actions: s.1,
            });
        let virtuals = virtuals
            .into_iter()
            .filter(|s| s.3)
            .map(|s| GrantedAccount {
                account: s.0,
                protocols: s.1.intersection(offered),
                actions: s.2,
            });
        real.chain(virtuals).collect()
    }

    /// Accounts the user may use on the asset at `at` (empty when none).
    pub fn accounts(
        &self,
        user: &str,
        asset: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<GrantedAccount<'_>>, QueryError> {
        let (u, a) = (self.user_id(user)?, self.asset_id(asset)?);
        let (user, asset) = (&self.doc.users[u as usize], &self.doc.assets[a as usize]);
        if self.user_barred(user, at).is_some() || !asset.is_active {
            return Ok(Vec::new());
        }
        let mut active = self.index.grants_for(u, a);
        active.retain(|g| self.is_active(*g, at));
        Ok(self.resolve(user, a, &active, &mut Vec::new()))
    }

    /// Every asset the user may use at `at`, by asset name.
    pub fn list(&self, user: &str, at: DateTime<Utc>) -> Result<Vec<GrantedAsset<'_>>, QueryError> {
        let u = self.user_id(user)?;
        let user = &self.doc.users[u as usize];
        if self.user_barred(user, at).is_some() {
            return Ok(Vec::new());
        }
        // Per asset, a chain of the grants covering it: `first[a]` indexes
        // `links`, each link is (grant, next link). No per-asset allocation.
        const NONE: u32 = u32::MAX;
        let mut first = vec![NONE; self.doc.assets.len()];
        let mut links: Vec<(GrantId, u32)> = Vec::new();
        for grant in &self.index.user_grants[u as usize] {
            if !self.is_active(*grant, at) {
                continue;
            }
            let compiled = &self.index.grants[*grant as usize];
            let under_nodes = compiled
                .nodes
                .iter()
                .flat_map(|n| self.index.node_assets[*n as usize].iter());
            for asset in compiled.assets.iter().chain(under_nodes) {
                let head = &mut first[*asset as usize];
                if !self.index.asset_active[*asset as usize]
                    || (*head != NONE && links[*head as usize].0 == *grant)
                {
                    continue;
                }
                links.push((*grant, *head));
                *head = id(links.len() - 1);
            }
        }
        let (mut grants, mut slots) = (Vec::new(), Vec::new());
        let mut granted = Vec::new();
        for a in &self.index.assets_by_name {
            let mut link = first[*a as usize];
            if link == NONE {
                continue;
            }
            grants.clear();
            while link != NONE {
                let (grant, next) = links[link as usize];
                grants.push(grant);
                link = next;
            }
            let accounts = self.resolve(user, *a, &grants, &mut slots);
            if !accounts.is_empty() {
                granted.push(GrantedAsset {
                    asset: &self.doc.assets[*a as usize],
                    accounts,
                });
            }
        }
        Ok(granted)
    }

    /// Allows or denies one (user, asset, account, protocol, action) at a time.
    pub fn decide(&self, query: &Query<'_>) -> Result<Decision, QueryError> {
        let (u, a) = (self.user_id(query.user)?, self.asset_id(query.asset)?);
        let (user, asset) = (&self.doc.users[u as usize], &self.doc.assets[a as usize]);
        let deny = |reason: String| Ok(Decision::Deny(reason));
        if let Some(reason) = self.user_barred(user, query.at) {
            return deny(reason);
        }
        if !asset.is_active {
            return deny(format!("asset {} is disabled", asset.name));
        }
        let candidates = self.index.grants_for(u, a);
        if candidates.is_empty() {
            return deny(format!(
                "no grant gives {} asset {}",
                user.username, asset.name
            ));
        }
        let (active, inactive): (Vec<GrantId>, Vec<GrantId>) = candidates
            .iter()
            .partition(|g| self.is_active(**g, query.at));
        if active.is_empty() {
            let why = self.explain_inactive(&inactive, query.at);
            return deny(format!(
                "no active grant gives {} asset {}: {why}",
                user.username, asset.name
            ));
        }
        let granted = self.resolve(user, a, &active, &mut Vec::new());
        let wanted: Vec<&GrantedAccount<'_>> = match query.account {
            None => granted.iter().collect(),
            Some(name) => granted
                .iter()
                .filter(|g| g.account.name() == name)
                .collect(),
        };
        let on = match query.account {
            Some(name) => format!("{name}@{}", asset.name),
            None => asset.name.clone(),
        };
        if wanted.is_empty() {
            return deny(match query.account {
                Some(name)
                    if !name.starts_with('@') && !asset.accounts.iter().any(|x| x.name == name) =>
                {
                    format!("asset {} has no account {name}", asset.name)
                }
                Some(name) => {
                    // Say which inactive grants would have given it, if any.
                    let would: Vec<GrantId> = inactive
                        .iter()
                        .copied()
                        .filter(|g| {
                            self.resolve(user, a, &[*g], &mut Vec::new())
                                .iter()
                                .any(|x| x.account.name() == name)
                        })
                        .collect();
                    let why = if would.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", self.explain_inactive(&would, query.at))
                    };
                    format!(
                        "no active grant gives {} account {name} on {}{why}",
                        user.username, asset.name
                    )
                }
                None => format!(
                    "no active grant gives {} an account that exists on {}",
                    user.username, asset.name
                ),
            });
        }
        if let Some(protocol) = query.protocol {
            if !asset.offers(protocol) {
                return deny(format!("asset {} does not offer {protocol}", asset.name));
            }
        }
        let protocol_ok = |g: &&&GrantedAccount<'_>| match query.protocol {
            Some(p) => g.protocols.contains(p),
            None => !g.protocols.is_empty(),
        };
        let by_protocol: Vec<&&GrantedAccount<'_>> = wanted.iter().filter(protocol_ok).collect();
        if by_protocol.is_empty() {
            return deny(match query.protocol {
                Some(p) => format!("no active grant gives {} {p} on {on}", user.username),
                None => format!(
                    "no protocol granted to {} on {on} is offered by the asset",
                    user.username
                ),
            });
        }
        if by_protocol.iter().any(|g| g.actions.contains(query.action)) {
            return Ok(Decision::Allow);
        }
        deny(format!(
            "no active grant gives {} {} on {on}",
            user.username, query.action
        ))
    }
}

impl Policy {
    /// "grant a expired …; grant b is disabled" for up to three grants.
    fn explain_inactive(&self, grants: &[GrantId], at: DateTime<Utc>) -> String {
        let mut reasons: Vec<String> = grants
            .iter()
            .take(3)
            .map(|g| {
                let grant = &self.doc.grants[*g as usize];
                format!(
                    "grant {} {}",
                    grant.name,
                    state_of(grant, self.index.grants[*g as usize].missing, at).describe()
                )
            })
            .collect();
        if grants.len() > 3 {
            reasons.push(format!("and {} more", grants.len() - 3));
        }
        reasons.join("; ")
    }
}

fn state_of(grant: &Grant, missing: Option<&'static str>, at: DateTime<Utc>) -> GrantState {
    if let Some(part) = missing {
        return GrantState::Incomplete(part);
    }
    if !grant.is_active {
        return GrantState::Disabled;
    }
    if let Some(start) = grant.date_start {
        if at < start.0 {
            return GrantState::NotYetStarted(start.to_string());
        }
    }
    if let Some(end) = grant.date_expired {
        if at >= end.0 {
            return GrantState::Expired(end.to_string());
        }
    }
    GrantState::Active
}
