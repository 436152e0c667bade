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
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::model::{
    alias, Account, Action, ActionSet, Asset, Grant, Protocol, ProtocolSet, User, UserGroup,
};
use crate::nodes::{NodeId, NodeTree};
use crate::policy::{Policy, PolicyDoc};

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
    /// Named accounts, as ids of [`GrantIndex::account_names`]; a name no
    /// asset has is left out (it can match nothing).
    names: Vec<u32>,
}

impl AccountSpec {
    fn of(grant: &Grant, account_names: &HashMap<String, u32>) -> Self {
        let mut spec = AccountSpec::default();
        for name in &grant.accounts {
            match name.as_str() {
                alias::ALL => spec.all = true,
                alias::INPUT => spec.input = true,
                alias::USER => spec.same_name = true,
                alias::ANON => spec.anon = true,
                _ => spec.names.extend(account_names.get(name.as_str())),
            }
        }
        spec.names.sort_unstable();
        spec.names.dedup();
        spec
    }

    /// Whether it names the account (`name`, `username`: interned ids;
    /// `me`: the user's name among account usernames, if it is one).
    fn covers_real(&self, name: u32, username: u32, me: Option<u32>) -> bool {
        self.all || self.names.contains(&name) || (self.same_name && me == Some(username))
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

impl CompiledGrant {
    fn of(
        grant: &Grant,
        asset_by_name: &HashMap<String, AssetId>,
        nodes: &NodeTree,
        account_names: &HashMap<String, u32>,
    ) -> CompiledGrant {
        let mut assets: Vec<AssetId> = grant.assets.iter().map(|n| asset_by_name[n]).collect();
        assets.sort_unstable();
        assets.dedup();
        let mut grant_nodes: Vec<NodeId> = grant
            .nodes
            .iter()
            .map(|p| nodes.get(p).expect("checked node"))
            .collect();
        grant_nodes.sort_unstable();
        grant_nodes.dedup();
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
        CompiledGrant {
            assets,
            nodes: grant_nodes,
            accounts: AccountSpec::of(grant, account_names),
            protocols,
            actions,
            missing,
        }
    }
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

/// Indexes over a checked policy. An [`AssetId`] is the asset's rank in
/// name order (its place in the document is `AssetIndex::position`), so
/// `list` walks the per-asset arrays front to back. Three shared parts,
/// each rebuilt only when what it is made of changes (see
/// [`Policy::apply_delta`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct GrantIndex {
    pub(crate) people: Arc<PeopleIndex>,
    pub(crate) assets: Arc<AssetIndex>,
    pub(crate) grants: Arc<GrantsIndex>,
}

/// Users and the grants each gets: from users, groups and grants.
#[derive(Debug, Default)]
pub(crate) struct PeopleIndex {
    /// Names shared with the index a delta made this one from.
    pub(crate) user_by_name: HashMap<Arc<str>, UserId>,
    /// Sorted grant ids per user, through her groups too.
    user_grants: Vec<Arc<[GrantId]>>,
    /// Grants naming each group, and each user by name (in id order).
    by_group: Arc<HashMap<String, Vec<GrantId>>>,
    by_user: Arc<HashMap<String, Vec<GrantId>>>,
}

/// Assets, their nodes and accounts: from assets and nodes.
#[derive(Debug, Default)]
pub(crate) struct AssetIndex {
    pub(crate) asset_by_name: HashMap<String, AssetId>,
    /// Sorted nodes holding the asset, with all their ancestors.
    asset_closure: Vec<Vec<NodeId>>,
    /// Assets under each node at any depth, in id (name) order.
    node_assets: Vec<Vec<AssetId>>,
    /// Per asset: active flag and offered protocols, kept compact for list.
    asset_active: Vec<bool>,
    asset_offered: Vec<ProtocolSet>,
    /// The account arena: asset `a`'s accounts are
    /// `account_start[a]..account_start[a + 1]`, in the asset's order, each
    /// as interned (name, username) ids, so resolving reads two flat
    /// arrays instead of chasing every asset's accounts and their strings.
    account_start: Vec<u32>,
    account_name: Vec<u32>,
    account_username: Vec<u32>,
    /// Interned account names and account usernames.
    account_names: HashMap<String, u32>,
    account_usernames: HashMap<String, u32>,
    /// Each asset's position in the document.
    position: Vec<u32>,
}

/// Compiled grants and who names each asset and node: from grants (and
/// the asset index they point into).
#[derive(Debug, Default)]
pub(crate) struct GrantsIndex {
    grants: Vec<CompiledGrant>,
    /// Grant ids naming the asset directly.
    asset_grants: Vec<Vec<GrantId>>,
    /// Grant ids naming the node.
    node_grants: Vec<Vec<GrantId>>,
}

/// In [`Policy::union`]'s answer, the first position standing for a
/// virtual account (@INPUT, then @USER, then @ANON).
const VIRTUAL: u32 = u32::MAX - 3;

fn id(position: usize) -> u32 {
    u32::try_from(position).expect("policy has fewer than 2^32 entities")
}

/// The id of `name` in `table`, adding it when new.
fn intern(table: &mut HashMap<String, u32>, name: &str) -> u32 {
    if let Some(found) = table.get(name) {
        return *found;
    }
    let next = id(table.len());
    table.insert(name.to_string(), next);
    next
}

impl PeopleIndex {
    /// `users`, `groups` and `grants` must have passed the policy checks.
    pub(crate) fn build(
        users: &[Arc<User>],
        _groups: &[Arc<UserGroup>],
        grants: &[Arc<Grant>],
    ) -> PeopleIndex {
        let mut by_group: HashMap<String, Vec<GrantId>> = HashMap::new();
        let mut by_user: HashMap<String, Vec<GrantId>> = HashMap::new();
        for (g, grant) in grants.iter().enumerate() {
            for name in &grant.users {
                by_user.entry(name.clone()).or_default().push(id(g));
            }
            for name in &grant.user_groups {
                by_group.entry(name.clone()).or_default().push(id(g));
            }
        }
        let mut index = PeopleIndex {
            user_by_name: HashMap::new(),
            user_grants: Vec::new(),
            by_group: Arc::new(by_group),
            by_user: Arc::new(by_user),
        };
        index.user_by_name = users
            .iter()
            .enumerate()
            .map(|(i, u)| (Arc::from(u.username.as_str()), id(i)))
            .collect();
        index.user_grants = users.iter().map(|u| index.grants_of(u)).collect();
        index
    }

    /// The grants naming `user` or one of her groups, sorted.
    fn grants_of(&self, user: &User) -> Arc<[GrantId]> {
        let mut grants: Vec<GrantId> = self
            .by_user
            .get(&user.username)
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for group in &user.groups {
            grants.extend(self.by_group.get(group).into_iter().flatten());
        }
        grants.sort_unstable();
        grants.dedup();
        grants.into()
    }

    /// The index for `users` when only users changed (same groups, same
    /// grants): a user whose record is the one `old_users` had keeps her
    /// grant list. When every old user kept her place (changed in place or
    /// not at all, newcomers after them), the names are shared too and
    /// only the newcomers are added.
    pub(crate) fn with_users(&self, old_users: &[Arc<User>], users: &[Arc<User>]) -> PeopleIndex {
        let in_place = users.len() >= old_users.len()
            && old_users
                .iter()
                .zip(users)
                .all(|(was, is)| Arc::ptr_eq(was, is) || was.username == is.username);
        let mut index = PeopleIndex {
            user_by_name: HashMap::new(),
            user_grants: Vec::with_capacity(users.len()),
            by_group: Arc::clone(&self.by_group),
            by_user: Arc::clone(&self.by_user),
        };
        if in_place {
            index.user_by_name = self.user_by_name.clone();
            for (i, user) in users.iter().enumerate() {
                let kept = old_users.get(i).filter(|was| Arc::ptr_eq(was, user));
                index.user_grants.push(match kept {
                    Some(_) => Arc::clone(&self.user_grants[i]),
                    None => index.grants_of(user),
                });
                if i >= old_users.len() {
                    index
                        .user_by_name
                        .insert(Arc::from(user.username.as_str()), id(i));
                }
            }
            return index;
        }
        index.user_by_name.reserve(users.len());
        for (i, user) in users.iter().enumerate() {
            index
                .user_by_name
                .insert(Arc::from(user.username.as_str()), id(i));
            let kept = self
                .user_by_name
                .get(user.username.as_str())
                .filter(|old| Arc::ptr_eq(&old_users[**old as usize], user));
            index.user_grants.push(match kept {
                Some(old) => Arc::clone(&self.user_grants[*old as usize]),
                None => index.grants_of(user),
            });
        }
        index
    }
}

impl AssetIndex {
    /// `assets` must have passed the policy checks, in name order.
    pub(crate) fn build(doc_assets: &[Arc<Asset>], nodes: &NodeTree) -> AssetIndex {
        let mut position: Vec<u32> = (0..doc_assets.len()).map(id).collect();
        position.sort_unstable_by(|x, y| {
            doc_assets[*x as usize]
                .name
                .cmp(&doc_assets[*y as usize].name)
        });
        let assets: Vec<&Asset> = position.iter().map(|p| &*doc_assets[*p as usize]).collect();
        let asset_by_name: HashMap<String, AssetId> = assets
            .iter()
            .enumerate()
            .map(|(i, a)| (a.name.clone(), id(i)))
            .collect();
        let accounts: usize = assets.iter().map(|a| a.accounts.len()).sum();
        let mut account_start = Vec::with_capacity(assets.len() + 1);
        let mut account_name = Vec::with_capacity(accounts);
        let mut account_username = Vec::with_capacity(accounts);
        let mut account_names = HashMap::new();
        let mut account_usernames = HashMap::new();
        for asset in &assets {
            account_start.push(id(account_name.len()));
            for account in &asset.accounts {
                account_name.push(intern(&mut account_names, &account.name));
                account_username.push(intern(&mut account_usernames, &account.username));
            }
        }
        account_start.push(id(account_name.len()));

        let mut asset_closure = vec![Vec::new(); assets.len()];
        let mut node_assets = vec![Vec::new(); nodes.len()];
        for (a, asset) in assets.iter().enumerate() {
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
        AssetIndex {
            asset_active: assets.iter().map(|a| a.is_active).collect(),
            asset_offered: assets.iter().map(|a| ProtocolSet::of_asset(a)).collect(),
            asset_by_name,
            asset_closure,
            node_assets,
            account_start,
            account_name,
            account_username,
            account_names,
            account_usernames,
            position,
        }
    }
}

impl GrantsIndex {
    /// `grants` must have passed the policy checks against these assets.
    pub(crate) fn build(
        grants: &[Arc<Grant>],
        assets: &AssetIndex,
        nodes: &NodeTree,
    ) -> GrantsIndex {
        let mut asset_grants = vec![Vec::new(); assets.asset_active.len()];
        let mut node_grants = vec![Vec::new(); nodes.len()];
        let mut compiled_grants = Vec::with_capacity(grants.len());
        for (g, grant) in grants.iter().enumerate() {
            let gid = id(g);
            let compiled =
                CompiledGrant::of(grant, &assets.asset_by_name, nodes, &assets.account_names);
            for asset in &compiled.assets {
                asset_grants[*asset as usize].push(gid);
            }
            for node in &compiled.nodes {
                node_grants[*node as usize].push(gid);
            }
            compiled_grants.push(compiled);
        }
        GrantsIndex {
            grants: compiled_grants,
            asset_grants,
            node_grants,
        }
    }
}

impl GrantIndex {
    /// Builds the indexes; `doc` must have passed the policy checks and
    /// hold its assets in name order.
    pub(crate) fn build(doc: &PolicyDoc, nodes: &NodeTree) -> GrantIndex {
        let assets = AssetIndex::build(&doc.assets, nodes);
        let grants = GrantsIndex::build(&doc.grants, &assets, nodes);
        GrantIndex {
            people: Arc::new(PeopleIndex::build(
                &doc.users,
                &doc.user_groups,
                &doc.grants,
            )),
            assets: Arc::new(assets),
            grants: Arc::new(grants),
        }
    }

    fn covers(&self, grant: GrantId, asset: AssetId) -> bool {
        let compiled = &self.grants.grants[grant as usize];
        compiled.assets.binary_search(&asset).is_ok()
            || compiled.nodes.iter().any(|n| {
                self.assets.asset_closure[asset as usize]
                    .binary_search(n)
                    .is_ok()
            })
    }

    /// Every grant naming both the user and the asset, in id order.
    fn grants_for(&self, user: UserId, asset: AssetId) -> Vec<GrantId> {
        let by_user = &self.people.user_grants[user as usize];
        let closure = &self.assets.asset_closure[asset as usize];
        let by_asset_len = self.grants.asset_grants[asset as usize].len()
            + closure
                .iter()
                .map(|n| self.grants.node_grants[*n as usize].len())
                .sum::<usize>();
        if by_user.len() <= by_asset_len {
            return by_user
                .iter()
                .copied()
                .filter(|g| self.covers(*g, asset))
                .collect();
        }
        let mut found: Vec<GrantId> = self.grants.asset_grants[asset as usize]
            .iter()
            .chain(
                closure
                    .iter()
                    .flat_map(|n| self.grants.node_grants[*n as usize].iter()),
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

/// The assets a user may use, in asset-name order: the answer of
/// [`Policy::list`], kept in the engine's terms (asset ids and account
/// positions) until the caller reads an asset, so a caller showing one
/// page reads one page of asset records.
#[derive(Debug)]
pub struct Listing<'p> {
    policy: &'p Policy,
    /// The listed assets' ids, in name order.
    listed: Vec<AssetId>,
    /// Per account of the arena, the (protocols, actions) granted (none
    /// when the actions are empty), not yet cut to what the asset offers.
    real: Vec<Slot>,
    /// Per asset, the same for @INPUT, @USER (virtual) and @ANON.
    virtuals: Vec<[Slot; 3]>,
}

/// What the grants give one account: (protocols, actions).
type Slot = (ProtocolSet, ActionSet);

const EMPTY_SLOT: Slot = (ProtocolSet::EMPTY, ActionSet::EMPTY);

impl<'p> Listing<'p> {
    fn empty(policy: &'p Policy) -> Listing<'p> {
        Listing {
            policy,
            listed: Vec::new(),
            real: Vec::new(),
            virtuals: Vec::new(),
        }
    }

    /// How many assets are listed.
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// The `i`-th asset in name order, with its granted accounts.
    pub fn get(&self, i: usize) -> Option<GrantedAsset<'p>> {
        let a = *self.listed.get(i)?;
        let assets = &self.policy.index.assets;
        let offered = assets.asset_offered[a as usize];
        let start = assets.account_start[a as usize] as usize;
        let end = assets.account_start[a as usize + 1] as usize;
        let asset = self.policy.asset_at(a);
        let real = &self.real[start..end];
        let virtuals = &self.virtuals[a as usize];
        let granted = |slot: &&Slot| !slot.1.is_empty();
        let mut accounts = Vec::with_capacity(
            real.iter().filter(granted).count() + virtuals.iter().filter(granted).count(),
        );
        let mut push = |slot: &Slot, account| {
            if !slot.1.is_empty() {
                accounts.push(GrantedAccount {
                    account,
                    protocols: slot.0.intersection(offered),
                    actions: slot.1,
                });
            }
        };
        for (slot, account) in real.iter().zip(&asset.accounts) {
            push(slot, AccountRef::Real(account));
        }
        push(&virtuals[0], AccountRef::Input);
        push(&virtuals[1], AccountRef::SameName);
        push(&virtuals[2], AccountRef::Anon);
        Some(GrantedAsset { asset, accounts })
    }

    /// The `i`-th asset's name, without reading its accounts.
    pub fn name(&self, i: usize) -> Option<&'p str> {
        let a = *self.listed.get(i)?;
        Some(&self.policy.asset_at(a).name)
    }

    /// Every listed asset in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = GrantedAsset<'p>> + '_ {
        (0..self.len()).map(|i| self.get(i).expect("in range"))
    }

    /// The listed assets `range` (clamped to what is listed), in name
    /// order: one page of a menu.
    pub fn page(&self, range: std::ops::Range<usize>) -> Vec<GrantedAsset<'p>> {
        let end = range.end.min(self.len());
        (range.start.min(end)..end)
            .map(|i| self.get(i).expect("in range"))
            .collect()
    }
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
            .people
            .user_by_name
            .get(name)
            .map(|u| &*self.doc.users[*u as usize])
    }

    /// The asset whose id is `a`.
    fn asset_at(&self, a: AssetId) -> &Asset {
        &self.doc.assets[self.index.assets.position[a as usize] as usize]
    }

    /// The asset named `name`, if the policy has one.
    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.index
            .assets
            .asset_by_name
            .get(name)
            .map(|a| self.asset_at(*a))
    }

    /// The state of grant `name`'s window and parts at `at`.
    pub fn grant_state(&self, grant: &Grant, at: DateTime<Utc>) -> GrantState {
        let position = self.doc.grants.iter().position(|g| g.name == grant.name);
        let missing = position.and_then(|g| self.index.grants.grants[g].missing);
        state_of(grant, missing, at)
    }

    fn user_id(&self, name: &str) -> Result<UserId, QueryError> {
        self.index
            .people
            .user_by_name
            .get(name)
            .copied()
            .ok_or_else(|| QueryError::UnknownUser(name.to_string()))
    }

    fn asset_id(&self, name: &str) -> Result<AssetId, QueryError> {
        self.index
            .assets
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
        state_of(&self.doc.grants[g], self.index.grants.grants[g].missing, at) == GrantState::Active
    }

    /// The id of `user`'s name among account usernames (for `@USER`).
    fn me(&self, user: &User) -> Option<u32> {
        self.index
            .assets
            .account_usernames
            .get(user.username.as_str())
            .copied()
    }

    /// Unions the active grants' accounts, protocols and actions on asset
    /// `a` for the user whose name is `me` (see [`Policy::me`]), reading
    /// only the index: appends each granted account to `out` as (arena
    /// position within the asset, or `VIRTUAL + k` for @INPUT, @USER,
    /// @ANON; protocols the asset offers; actions). `slots` is scratch.
    fn union(
        &self,
        me: Option<u32>,
        a: AssetId,
        grants: &[GrantId],
        slots: &mut Vec<(ProtocolSet, ActionSet, bool)>,
        out: &mut Vec<(u32, ProtocolSet, ActionSet)>,
    ) {
        let offered = self.index.assets.asset_offered[a as usize];
        let start = self.index.assets.account_start[a as usize] as usize;
        let end = self.index.assets.account_start[a as usize + 1] as usize;
        let names = &self.index.assets.account_name[start..end];
        let usernames = &self.index.assets.account_username[start..end];
        slots.clear();
        slots.resize(names.len(), (ProtocolSet::EMPTY, ActionSet::EMPTY, false));
        // (protocols, actions, granted) of @INPUT, @USER (virtual), @ANON.
        let mut virtuals = [(ProtocolSet::EMPTY, ActionSet::EMPTY, false); 3];
        let has_same_name = me.is_some() && usernames.iter().any(|u| Some(*u) == me);
        for grant in grants {
            let compiled = &self.index.grants.grants[*grant as usize];
            let spec = &compiled.accounts;
            for ((slot, name), username) in slots.iter_mut().zip(names).zip(usernames) {
                if spec.covers_real(*name, *username, me) {
                    *slot = (
                        slot.0.union(compiled.protocols),
                        slot.1.union(compiled.actions),
                        true,
                    );
                }
            }
            let flags = [spec.input, spec.same_name && !has_same_name, spec.anon];
            for (slot, on) in virtuals.iter_mut().zip(flags) {
                if on {
                    *slot = (
                        slot.0.union(compiled.protocols),
                        slot.1.union(compiled.actions),
                        true,
                    );
                }
            }
        }
        let granted = slots
            .iter()
            .enumerate()
            .chain((VIRTUAL as usize..).zip(virtuals.iter()))
            .filter(|(_, s)| s.2)
            .map(|(at, s)| (id(at), s.0.intersection(offered), s.1));
        out.extend(granted);
    }

    /// What [`Policy::union`] found on asset `a`, as granted accounts.
    fn granted<'p>(
        &'p self,
        a: AssetId,
        found: &[(u32, ProtocolSet, ActionSet)],
    ) -> Vec<GrantedAccount<'p>> {
        let accounts = &self.asset_at(a).accounts;
        found
            .iter()
            .map(|(at, protocols, actions)| GrantedAccount {
                account: match at.checked_sub(VIRTUAL) {
                    None => AccountRef::Real(&accounts[*at as usize]),
                    Some(0) => AccountRef::Input,
                    Some(1) => AccountRef::SameName,
                    Some(_) => AccountRef::Anon,
                },
                protocols: *protocols,
                actions: *actions,
            })
            .collect()
    }

    /// [`Policy::union`] then [`Policy::granted`] for one asset.
    fn resolve(&self, me: Option<u32>, a: AssetId, grants: &[GrantId]) -> Vec<GrantedAccount<'_>> {
        let mut found = Vec::new();
        self.union(me, a, grants, &mut Vec::new(), &mut found);
        self.granted(a, &found)
    }

    /// Accounts the user may use on the asset at `at` (empty when none).
    pub fn accounts(
        &self,
        user: &str,
        asset: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<GrantedAccount<'_>>, QueryError> {
        let (u, a) = (self.user_id(user)?, self.asset_id(asset)?);
        let (user, asset) = (&*self.doc.users[u as usize], self.asset_at(a));
        if self.user_barred(user, at).is_some() || !asset.is_active {
            return Ok(Vec::new());
        }
        let mut active = self.index.grants_for(u, a);
        active.retain(|g| self.is_active(*g, at));
        Ok(self.resolve(self.me(user), a, &active))
    }

    /// Every asset the user may use at `at`, by asset name: all of it is
    /// decided here, each asset's record is read when the caller asks for
    /// it ([`Listing::get`], [`Listing::iter`]).
    pub fn list(&self, user: &str, at: DateTime<Utc>) -> Result<Listing<'_>, QueryError> {
        let u = self.user_id(user)?;
        let user = &self.doc.users[u as usize];
        if self.user_barred(user, at).is_some() {
            return Ok(Listing::empty(self));
        }
        // Grant by grant, each covered account's (protocols, actions) is
        // OR-ed into a flat slot per arena position (and three per asset
        // for @INPUT, @USER, @ANON): no per-asset grant list, and an asset
        // covered twice (by two grants, or directly and through a node)
        // just ORs again. A slot is granted when its actions are not
        // empty (an active grant always names some); an asset is listed
        // when one of its slots is, which `granted` records as it goes.
        let assets = &*self.index.assets;
        let n = assets.asset_active.len();
        let mut real = vec![EMPTY_SLOT; assets.account_name.len()];
        let mut virtuals = vec![[EMPTY_SLOT; 3]; n];
        let mut granted = vec![0u64; n.div_ceil(64)];
        let me = self.me(user);
        for grant in self.index.people.user_grants[u as usize].iter() {
            if !self.is_active(*grant, at) {
                continue;
            }
            let compiled = &self.index.grants.grants[*grant as usize];
            let spec = &compiled.accounts;
            let add: Slot = (compiled.protocols, compiled.actions);
            let or = |slot: &mut Slot| *slot = (slot.0.union(add.0), slot.1.union(add.1));
            // Only real accounts named by name or as the user's own need
            // a look at each account.
            let by_name = !spec.names.is_empty() || (spec.same_name && me.is_some());
            let any_virtual = spec.input || spec.same_name || spec.anon;
            let mut mark = |a: usize| {
                if !assets.asset_active[a] {
                    return;
                }
                let start = assets.account_start[a] as usize;
                let end = assets.account_start[a + 1] as usize;
                let slots = &mut real[start..end];
                let mut any = any_virtual;
                if spec.all {
                    slots.iter_mut().for_each(or);
                    any |= start < end;
                } else if by_name {
                    let names = &assets.account_name[start..end];
                    let usernames = &assets.account_username[start..end];
                    for ((slot, name), username) in slots.iter_mut().zip(names).zip(usernames) {
                        if spec.covers_real(*name, *username, me) {
                            or(slot);
                            any = true;
                        }
                    }
                }
                if any_virtual {
                    let virtual_slots = &mut virtuals[a];
                    if spec.input {
                        or(&mut virtual_slots[0]);
                    }
                    if spec.same_name
                        && !assets.account_username[start..end]
                            .iter()
                            .any(|u| Some(*u) == me)
                    {
                        or(&mut virtual_slots[1]);
                    }
                    if spec.anon {
                        or(&mut virtual_slots[2]);
                    }
                }
                if any {
                    granted[a / 64] |= 1 << (a % 64);
                }
            };
            for a in &compiled.assets {
                mark(*a as usize);
            }
            for node in &compiled.nodes {
                for a in &assets.node_assets[*node as usize] {
                    mark(*a as usize);
                }
            }
        }
        // Asset ids are name ranks: the set bits in order list by name.
        // Accounts and records are read when the caller reads an asset.
        let count = granted.iter().map(|w| w.count_ones() as usize).sum();
        let mut listed = Vec::with_capacity(count);
        for (w, word) in granted.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                listed.push(id(w * 64 + bits.trailing_zeros() as usize));
                bits &= bits - 1;
            }
        }
        Ok(Listing {
            policy: self,
            listed,
            real,
            virtuals,
        })
    }

    /// Allows or denies one (user, asset, account, protocol, action) at a time.
    pub fn decide(&self, query: &Query<'_>) -> Result<Decision, QueryError> {
        let (u, a) = (self.user_id(query.user)?, self.asset_id(query.asset)?);
        let (user, asset) = (&*self.doc.users[u as usize], self.asset_at(a));
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
        let me = self.me(user);
        let granted = self.resolve(me, a, &active);
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
                            self.resolve(me, a, &[*g])
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
                    state_of(grant, self.index.grants.grants[*g as usize].missing, at).describe()
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
