//! The indexed grant engine (`Policy::decide`, `Policy::list`,
//! `Policy::accounts`) against a reference implementation of DESIGN.md
//! "Grant semantics", written as plain loops over the policy document with
//! no index at all.
//!
//! The property test generates random policies (node trees, users in
//! groups, assets with accounts, grants with any part empty or not, dates
//! around a few fixed instants) and compares every decision the engine can
//! be asked about them. The deterministic tests below pin the reference
//! itself on hand-written policies and check that the generator reaches the
//! interesting cases (node descendants, `@USER` real and virtual, empty-part
//! grants, date boundaries, `*` names).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use jms_core::model::{
    Account, Action, ActionChoice, Asset, AssetProtocol, Grant, PolicyDocument, Protocol,
    ProtocolChoice, SecretType, Timestamp, User, UserGroup,
};
use jms_core::{GrantedAccount, Policy, Query, QueryError};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

// ---------------------------------------------------------------------------
// Reference implementation
// ---------------------------------------------------------------------------

/// The semantics, as straightforward loops over the document.
mod reference {
    use super::*;

    /// An account granted to a user on an asset: a real account's name or
    /// `@INPUT` / `@USER` / `@ANON`, with protocols and actions.
    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Granted {
        pub name: String,
        pub protocols: BTreeSet<Protocol>,
        pub actions: BTreeSet<Action>,
    }

    pub fn protocols_of(choices: &[ProtocolChoice]) -> BTreeSet<Protocol> {
        let mut set = BTreeSet::new();
        for choice in choices {
            match choice {
                ProtocolChoice::All => {
                    set.insert(Protocol::Ssh);
                    set.insert(Protocol::Sftp);
                }
                ProtocolChoice::Ssh => {
                    set.insert(Protocol::Ssh);
                }
                ProtocolChoice::Sftp => {
                    set.insert(Protocol::Sftp);
                }
            }
        }
        set
    }

    pub fn actions_of(choices: &[ActionChoice]) -> BTreeSet<Action> {
        let mut set = BTreeSet::new();
        for choice in choices {
            match choice {
                ActionChoice::All => {
                    set.extend([
                        Action::Connect,
                        Action::Upload,
                        Action::Download,
                        Action::Delete,
                        Action::Copy,
                        Action::Paste,
                        Action::Share,
                    ]);
                }
                ActionChoice::Connect => {
                    set.insert(Action::Connect);
                }
                ActionChoice::Upload => {
                    set.insert(Action::Upload);
                }
                ActionChoice::Download => {
                    set.insert(Action::Download);
                }
                ActionChoice::Delete => {
                    set.insert(Action::Delete);
                }
                ActionChoice::Copy => {
                    set.insert(Action::Copy);
                }
                ActionChoice::Paste => {
                    set.insert(Action::Paste);
                }
                ActionChoice::Share => {
                    set.insert(Action::Share);
                }
            }
        }
        set
    }

    /// Rule 2: every required part present, switched on, inside its window.
    pub fn grant_active(grant: &Grant, at: DateTime<Utc>) -> bool {
        let has_who = !grant.users.is_empty() || !grant.user_groups.is_empty();
        let has_where = !grant.assets.is_empty() || !grant.nodes.is_empty();
        let started = match grant.date_start {
            None => true,
            Some(start) => at >= start.0,
        };
        let not_expired = match grant.date_expired {
            None => true,
            Some(end) => at < end.0,
        };
        has_who
            && has_where
            && !grant.accounts.is_empty()
            && !grant.protocols.is_empty()
            && !grant.actions.is_empty()
            && grant.is_active
            && started
            && not_expired
    }

    /// Rule 3 (users): switched on and not expired.
    pub fn user_may_act(user: &User, at: DateTime<Utc>) -> bool {
        let not_expired = match user.date_expired {
            None => true,
            Some(end) => at < end.0,
        };
        user.is_active && not_expired
    }

    /// Rule 1 (users): named directly or a member of a named group.
    pub fn grant_covers_user(grant: &Grant, user: &User) -> bool {
        if grant.users.contains(&user.username) {
            return true;
        }
        for group in &user.groups {
            if grant.user_groups.contains(group) {
                return true;
            }
        }
        false
    }

    /// The node itself or any node below it (not `/ab` under `/a`).
    pub fn node_is_under(asset_node: &str, grant_node: &str) -> bool {
        asset_node == grant_node || asset_node.starts_with(&format!("{grant_node}/"))
    }

    /// Rule 1 (assets): named directly or sitting in/under a named node.
    pub fn grant_covers_asset(grant: &Grant, asset: &Asset) -> bool {
        if grant.assets.contains(&asset.name) {
            return true;
        }
        for asset_node in &asset.nodes {
            for grant_node in &grant.nodes {
                if node_is_under(asset_node, grant_node) {
                    return true;
                }
            }
        }
        false
    }

    /// Names of the accounts of `asset` that `grant` gives `user`, virtual
    /// ones as their alias (rule 4).
    pub fn names_granted_by(grant: &Grant, user: &User, asset: &Asset) -> Vec<String> {
        let has = |name: &str| grant.accounts.iter().any(|a| a == name);
        let mut names = Vec::new();
        for account in &asset.accounts {
            if has("@ALL")
                || has(&account.name)
                || (has("@USER") && account.username == user.username)
            {
                names.push(account.name.clone());
            }
        }
        if has("@INPUT") {
            names.push("@INPUT".to_string());
        }
        if has("@ANON") {
            names.push("@ANON".to_string());
        }
        let asset_has_same_name = asset.accounts.iter().any(|a| a.username == user.username);
        if has("@USER") && !asset_has_same_name {
            names.push("@USER".to_string());
        }
        names
    }

    /// Rule 4: the accounts `user` may use on `asset` at `at`, by name.
    pub fn accounts(
        doc: &PolicyDocument,
        user: &User,
        asset: &Asset,
        at: DateTime<Utc>,
    ) -> Vec<Granted> {
        if !user_may_act(user, at) || !asset.is_active {
            return Vec::new();
        }
        let mut found: BTreeMap<String, (BTreeSet<Protocol>, BTreeSet<Action>)> = BTreeMap::new();
        for grant in &doc.grants {
            if !grant_active(grant, at)
                || !grant_covers_user(grant, user)
                || !grant_covers_asset(grant, asset)
            {
                continue;
            }
            for name in names_granted_by(grant, user, asset) {
                let entry = found.entry(name).or_default();
                entry.0.extend(protocols_of(&grant.protocols));
                entry.1.extend(actions_of(&grant.actions));
            }
        }
        let offered: BTreeSet<Protocol> = asset.protocols.iter().map(|p| p.name).collect();
        found
            .into_iter()
            .map(|(name, (protocols, actions))| Granted {
                name,
                protocols: protocols.intersection(&offered).copied().collect(),
                actions,
            })
            .collect()
    }

    /// Rule 5, given the accounts of rule 4.
    pub fn decide_among(
        granted: &[Granted],
        account: Option<&str>,
        protocol: Option<Protocol>,
        action: Action,
    ) -> bool {
        granted.iter().any(|g| {
            let name_ok = match account {
                None => true,
                Some(name) => g.name == name,
            };
            let protocol_ok = match protocol {
                None => !g.protocols.is_empty(),
                Some(p) => g.protocols.contains(&p),
            };
            name_ok && protocol_ok && g.actions.contains(&action)
        })
    }

    /// Rule 5.
    pub fn decide(
        doc: &PolicyDocument,
        user: &User,
        asset: &Asset,
        account: Option<&str>,
        protocol: Option<Protocol>,
        action: Action,
        at: DateTime<Utc>,
    ) -> bool {
        decide_among(&accounts(doc, user, asset, at), account, protocol, action)
    }

    /// Rule 6: every asset with at least one granted account, by name.
    pub fn list(
        doc: &PolicyDocument,
        user: &User,
        at: DateTime<Utc>,
    ) -> Vec<(String, Vec<Granted>)> {
        let mut listed = Vec::new();
        for asset in &doc.assets {
            let granted = accounts(doc, user, asset, at);
            if !granted.is_empty() {
                listed.push((asset.name.clone(), granted));
            }
        }
        listed.sort_by(|x, y| x.0.cmp(&y.0));
        listed
    }
}

use reference::Granted;

// ---------------------------------------------------------------------------
// Comparing the engine with the reference
// ---------------------------------------------------------------------------

/// The engine's accounts in the reference's shape, sorted by name (a
/// duplicate is kept, so it shows up as a difference).
fn engine_accounts(accounts: &[GrantedAccount<'_>]) -> Vec<Granted> {
    let mut out: Vec<Granted> = accounts
        .iter()
        .map(|g| Granted {
            name: g.account.name().to_string(),
            protocols: Protocol::ALL
                .into_iter()
                .filter(|p| g.protocols.contains(*p))
                .collect(),
            actions: Action::ALL
                .into_iter()
                .filter(|a| g.actions.contains(*a))
                .collect(),
        })
        .collect();
    out.sort();
    out
}

fn show_accounts(accounts: &[Granted]) -> String {
    if accounts.is_empty() {
        return "(none)".to_string();
    }
    accounts
        .iter()
        .map(|g| {
            let protocols: Vec<&str> = g.protocols.iter().map(|p| p.as_str()).collect();
            let actions: Vec<&str> = g.actions.iter().map(|a| a.as_str()).collect();
            format!(
                "{} [{}] [{}]",
                g.name,
                protocols.join(","),
                actions.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn show_list(list: &[(String, Vec<Granted>)]) -> String {
    if list.is_empty() {
        return "(none)".to_string();
    }
    list.iter()
        .map(|(asset, accounts)| format!("  {asset}: {}", show_accounts(accounts)))
        .collect::<Vec<_>>()
        .join("\n")
}

fn show_policy(doc: &PolicyDocument) -> String {
    serde_yaml_ng::to_string(doc).unwrap_or_else(|e| format!("{doc:#?} (yaml: {e})"))
}

/// What one comparison went through, to see the generator hits things.
#[derive(Debug, Default, Clone)]
struct Coverage {
    decisions: usize,
    allows: usize,
    denies: usize,
    listed_assets: usize,
    /// A virtual `@USER` granted.
    virtual_user: usize,
    /// A real account granted through `@USER` only (not `@ALL`, not by name).
    real_user_only: usize,
    /// An asset granted only through a strict descendant of a grant node.
    node_descendant: usize,
    /// A grant node is a string prefix of an asset node without being its
    /// ancestor (`/a` and `/ab`), so the asset must not be covered by it.
    prefix_trap: usize,
    /// An asset named `*` listed.
    star_asset: usize,
    /// An account named `*` granted.
    star_account: usize,
    /// A grant switched on, in its window, covering someone, but with an
    /// empty required part.
    empty_part_grant: usize,
    /// A grant giving accounts exactly at its `date_start`.
    at_start: usize,
    /// A grant that would give accounts but is at exactly its `date_expired`.
    at_expiry: usize,
    /// A user disabled or expired whom an active grant names.
    barred_user: usize,
    /// A disabled asset an active grant covers.
    disabled_asset: usize,
    /// A granted account whose protocols the asset does not offer at all.
    no_offered_protocol: usize,
    /// A granted account given by two or more active grants.
    union_of_grants: usize,
}

impl Coverage {
    fn add(&mut self, other: &Coverage) {
        self.decisions += other.decisions;
        self.allows += other.allows;
        self.denies += other.denies;
        self.listed_assets += other.listed_assets;
        self.virtual_user += other.virtual_user;
        self.real_user_only += other.real_user_only;
        self.node_descendant += other.node_descendant;
        self.prefix_trap += other.prefix_trap;
        self.star_asset += other.star_asset;
        self.star_account += other.star_account;
        self.empty_part_grant += other.empty_part_grant;
        self.at_start += other.at_start;
        self.at_expiry += other.at_expiry;
        self.barred_user += other.barred_user;
        self.disabled_asset += other.disabled_asset;
        self.no_offered_protocol += other.no_offered_protocol;
        self.union_of_grants += other.union_of_grants;
    }
}

/// Counts the interesting situations of `doc` at `at`, from the reference.
fn coverage_of(doc: &PolicyDocument, at: DateTime<Utc>, cov: &mut Coverage) {
    use reference::*;
    for user in &doc.users {
        for asset in &doc.assets {
            let granted = accounts(doc, user, asset, at);
            if asset.name == "*" && !granted.is_empty() {
                cov.star_asset += 1;
            }
            for g in &granted {
                if g.name == "@USER" {
                    cov.virtual_user += 1;
                }
                if g.name == "*" {
                    cov.star_account += 1;
                }
                if g.protocols.is_empty() {
                    cov.no_offered_protocol += 1;
                }
            }
            let mut givers: BTreeMap<String, usize> = BTreeMap::new();
            for grant in &doc.grants {
                if !grant_covers_user(grant, user) {
                    continue;
                }
                let by_name = grant.assets.contains(&asset.name);
                let covers = grant_covers_asset(grant, asset);
                let mut whole = grant.clone();
                whole.users = vec![user.username.clone()];
                whole.assets = vec![asset.name.clone()];
                whole.accounts = vec!["@ALL".to_string()];
                whole.protocols = vec![ProtocolChoice::All];
                whole.actions = vec![ActionChoice::All];
                // Active but for its parts.
                let in_window = grant_active(&whole, at);
                if in_window && covers && !grant_active(grant, at) {
                    cov.empty_part_grant += 1;
                }
                for asset_node in &asset.nodes {
                    for grant_node in &grant.nodes {
                        if asset_node.starts_with(grant_node.as_str())
                            && !node_is_under(asset_node, grant_node)
                        {
                            cov.prefix_trap += 1;
                        }
                    }
                }
                if !grant_active(grant, at) || !covers {
                    // Exactly at the end of the window, active just before.
                    let before = at - TimeDelta::seconds(1);
                    if grant.date_expired.is_some_and(|e| e.0 == at)
                        && grant_active(grant, before)
                        && covers
                        && user_may_act(user, at)
                        && asset.is_active
                        && !names_granted_by(grant, user, asset).is_empty()
                    {
                        cov.at_expiry += 1;
                    }
                    continue;
                }
                if !user_may_act(user, at) {
                    cov.barred_user += 1;
                }
                if !asset.is_active {
                    cov.disabled_asset += 1;
                }
                if !user_may_act(user, at) || !asset.is_active {
                    continue;
                }
                let names = names_granted_by(grant, user, asset);
                if names.is_empty() {
                    continue;
                }
                if grant.date_start.is_some_and(|s| s.0 == at) {
                    cov.at_start += 1;
                }
                if !by_name {
                    let strictly_below = asset.nodes.iter().any(|an| {
                        grant
                            .nodes
                            .iter()
                            .any(|gn| an.starts_with(&format!("{gn}/")))
                    });
                    let directly_in = asset.nodes.iter().any(|an| grant.nodes.contains(an));
                    if strictly_below && !directly_in {
                        cov.node_descendant += 1;
                    }
                }
                for account in &asset.accounts {
                    let via_user_only = account.username == user.username
                        && grant.accounts.iter().any(|a| a == "@USER")
                        && !grant
                            .accounts
                            .iter()
                            .any(|a| a == "@ALL" || *a == account.name);
                    if via_user_only {
                        cov.real_user_only += 1;
                    }
                }
                for name in names {
                    *givers.entry(name).or_default() += 1;
                }
            }
            cov.union_of_grants += givers.values().filter(|n| **n >= 2).count();
        }
    }
}

/// Compares the engine with the reference on every (user, asset, account,
/// protocol, action, time) of `doc`; the error says what differs.
fn compare(doc: &PolicyDocument, times: &[DateTime<Utc>]) -> Result<Coverage, String> {
    let policy = Policy::from_document(doc.clone(), "gen", Path::new("."))
        .map_err(|e| format!("the policy was refused: {e}\npolicy:\n{}", show_policy(doc)))?;
    let mut cov = Coverage::default();
    for &at in times {
        coverage_of(doc, at, &mut cov);
        for user in &doc.users {
            let want = reference::list(doc, user, at);
            let got: Vec<(String, Vec<Granted>)> = policy
                .list(&user.username, at)
                .map_err(|e| format!("list({}, {at}) failed: {e}", user.username))?
                .iter()
                .map(|g| (g.asset.name.clone(), engine_accounts(&g.accounts)))
                .collect();
            if want != got {
                return Err(format!(
                    "list mismatch: user `{}` at {at}\nengine:\n{}\nreference:\n{}\npolicy:\n{}",
                    user.username,
                    show_list(&got),
                    show_list(&want),
                    show_policy(doc)
                ));
            }
            cov.listed_assets += want.len();

            for asset in &doc.assets {
                let want = reference::accounts(doc, user, asset, at);
                let got =
                    engine_accounts(&policy.accounts(&user.username, &asset.name, at).map_err(
                        |e| {
                            format!(
                                "accounts({}, {}, {at}) failed: {e}",
                                user.username, asset.name
                            )
                        },
                    )?);
                if want != got {
                    return Err(format!(
                        "accounts mismatch: user `{}` asset `{}` at {at}\nengine:    {}\nreference: {}\npolicy:\n{}",
                        user.username,
                        asset.name,
                        show_accounts(&got),
                        show_accounts(&want),
                        show_policy(doc)
                    ));
                }

                let mut names: Vec<Option<&str>> = vec![None];
                let extra = ["@INPUT", "@USER", "@ANON", "nope", "*"];
                for name in asset.accounts.iter().map(|a| a.name.as_str()).chain(extra) {
                    if !names.contains(&Some(name)) {
                        names.push(Some(name));
                    }
                }
                for &account in &names {
                    for protocol in [None, Some(Protocol::Ssh), Some(Protocol::Sftp)] {
                        for action in Action::ALL {
                            let query = Query {
                                user: &user.username,
                                asset: &asset.name,
                                account,
                                protocol,
                                action,
                                at,
                            };
                            let expected =
                                reference::decide_among(&want, account, protocol, action);
                            let decision = policy
                                .decide(&query)
                                .map_err(|e| format!("decide({query:?}) failed: {e}"))?;
                            cov.decisions += 1;
                            if expected {
                                cov.allows += 1;
                            } else {
                                cov.denies += 1;
                            }
                            if decision.is_allow() != expected {
                                return Err(format!(
                                    "decide mismatch: user `{}` asset `{}` account {account:?} protocol {protocol:?} action {action} at {at}\n\
                                     engine:    {decision:?}\n\
                                     reference: {}\n\
                                     reference accounts: {}\n\
                                     engine accounts:    {}\n\
                                     query: {query:?}\n\
                                     policy:\n{}",
                                    user.username,
                                    asset.name,
                                    if expected { "Allow" } else { "Deny" },
                                    show_accounts(&want),
                                    show_accounts(&got),
                                    show_policy(doc)
                                ));
                            }
                        }
                    }
                }
            }
        }
    }

    // Names the policy lacks are errors, never decisions; `*` is not a
    // wildcard for them either.
    let at = times[0];
    let any_user = doc.users[0].username.as_str();
    let any_asset = doc.assets[0].name.as_str();
    for (user, asset) in [
        ("*", any_asset),
        ("nobody-here", any_asset),
        (any_user, "*"),
        (any_user, "no-such-host"),
    ] {
        let user_known = doc.users.iter().any(|u| u.username == user);
        let asset_known = doc.assets.iter().any(|a| a.name == asset);
        if user_known && asset_known {
            continue;
        }
        let query = Query {
            user,
            asset,
            account: None,
            protocol: None,
            action: Action::Connect,
            at,
        };
        let expected = if user_known {
            QueryError::UnknownAsset(asset.to_string())
        } else {
            QueryError::UnknownUser(user.to_string())
        };
        match policy.decide(&query) {
            Err(e) if e == expected => {}
            other => {
                return Err(format!(
                    "decide({query:?}) on an unknown name: got {other:?}, want Err({expected:?})\npolicy:\n{}",
                    show_policy(doc)
                ))
            }
        }
    }
    Ok(cov)
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

/// The instants grant and user dates are drawn from.
fn instants() -> [DateTime<Utc>; 3] {
    [
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2026, 7, 1, 12, 30, 0).unwrap(),
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
    ]
}

fn stamp(i: usize) -> Timestamp {
    Timestamp(instants()[i % 3])
}

/// Query times: each instant exactly (a date_start or date_expired
/// boundary) and one second either side of it.
fn query_times() -> Vec<DateTime<Utc>> {
    let second = TimeDelta::seconds(1);
    instants()
        .iter()
        .flat_map(|t| [*t - second, *t, *t + second])
        .collect()
}

// ---------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------

/// Node path segments: `a` and `ab` make `/a` a string prefix of `/ab`.
const SEGMENTS: [&str; 4] = ["a", "ab", "b", "*"];
const GROUPS: [&str; 3] = ["ops", "dev", "db.admins"];
/// Bastion usernames; most are also account usernames below.
const USERNAMES: [&str; 6] = ["alice", "bob", "root", "deploy", "carol", "d-x"];
const ASSET_NAMES: [&str; 9] = ["*", "web", "db", "web.2", "gw-1", "a_b", "x", "y", "wéb"];
const ACCOUNT_NAMES: [&str; 5] = ["root", "deploy", "admin", "*", "svc"];
const ACCOUNT_USERNAMES: [&str; 7] = ["root", "alice", "bob", "deploy", "admin", "nobody", "carol"];
/// What grants name as accounts: aliases, names on some assets, a name on
/// none, and `*`.
const GRANT_ACCOUNTS: [&str; 10] = [
    "@ALL", "@INPUT", "@USER", "@ANON", "root", "deploy", "admin", "*", "svc", "nope",
];

#[derive(Debug, Clone)]
struct UserSpec {
    active: bool,
    expires: Option<usize>,
    groups: Vec<usize>,
}

#[derive(Debug, Clone)]
struct AssetSpec {
    active: bool,
    ssh: bool,
    sftp: bool,
    nodes: Vec<usize>,
    /// (name, username) indices.
    accounts: Vec<(usize, usize)>,
}

#[derive(Debug, Clone)]
struct GrantSpec {
    users: Vec<usize>,
    groups: Vec<usize>,
    assets: Vec<usize>,
    nodes: Vec<usize>,
    accounts: Vec<usize>,
    protocols: Vec<ProtocolChoice>,
    actions: Vec<ActionChoice>,
    start: Option<usize>,
    expires: Option<usize>,
    active: bool,
}

/// A policy as indices; `build` turns it into a valid document whatever
/// the indices (they are taken modulo what exists), so shrinking keeps it
/// valid.
#[derive(Debug, Clone)]
struct Spec {
    /// Declared node paths as segment indices, 1-4 deep.
    nodes: Vec<Vec<usize>>,
    groups: usize,
    users: Vec<UserSpec>,
    /// Which name the first asset gets (so `*` is sometimes present).
    asset_offset: usize,
    assets: Vec<AssetSpec>,
    grants: Vec<GrantSpec>,
}

/// A vector that is empty one time in `1 + weight`.
fn part<S>(element: S, max: usize, weight: u32) -> impl Strategy<Value = Vec<S::Value>>
where
    S: Strategy,
    S::Value: Clone + Debug,
{
    prop_oneof![1 => Just(Vec::new()), weight => vec(element, 1..=max)]
}

fn index() -> impl Strategy<Value = usize> {
    0usize..64
}

fn date() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![3 => Just(None), 2 => (0usize..3).prop_map(Some)]
}

fn mostly_true() -> impl Strategy<Value = bool> {
    prop::bool::weighted(0.85)
}

fn protocol_choice() -> impl Strategy<Value = ProtocolChoice> {
    prop_oneof![
        Just(ProtocolChoice::All),
        Just(ProtocolChoice::Ssh),
        Just(ProtocolChoice::Sftp),
    ]
}

fn action_choice() -> impl Strategy<Value = ActionChoice> {
    prop_oneof![
        2 => Just(ActionChoice::All),
        3 => Just(ActionChoice::Connect),
        1 => Just(ActionChoice::Upload),
        1 => Just(ActionChoice::Download),
        1 => Just(ActionChoice::Delete),
        1 => Just(ActionChoice::Copy),
        1 => Just(ActionChoice::Paste),
        1 => Just(ActionChoice::Share),
    ]
}

fn user_spec() -> impl Strategy<Value = UserSpec> {
    (
        mostly_true(),
        prop_oneof![3 => Just(None), 1 => (0usize..3).prop_map(Some)],
        vec(0usize..3, 0..=3),
    )
        .prop_map(|(active, expires, groups)| UserSpec {
            active,
            expires,
            groups,
        })
}

fn asset_spec() -> impl Strategy<Value = AssetSpec> {
    (
        mostly_true(),
        prop::bool::weighted(0.8),
        prop::bool::weighted(0.6),
        vec(index(), 0..=2),
        vec(
            (0usize..ACCOUNT_NAMES.len(), 0usize..ACCOUNT_USERNAMES.len()),
            0..=3,
        ),
    )
        .prop_map(|(active, ssh, sftp, nodes, accounts)| AssetSpec {
            active,
            ssh,
            sftp,
            nodes,
            accounts,
        })
}

fn grant_spec() -> impl Strategy<Value = GrantSpec> {
    (
        (part(index(), 3, 3), part(index(), 2, 1)),
        (part(index(), 3, 2), part(index(), 2, 2)),
        part(0usize..GRANT_ACCOUNTS.len(), 3, 9),
        part(protocol_choice(), 2, 9),
        part(action_choice(), 3, 9),
        (date(), date(), mostly_true()),
    )
        .prop_map(
            |(
                (users, groups),
                (assets, nodes),
                accounts,
                protocols,
                actions,
                (start, expires, active),
            )| {
                GrantSpec {
                    users,
                    groups,
                    assets,
                    nodes,
                    accounts,
                    protocols,
                    actions,
                    start,
                    expires,
                    active,
                }
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        vec(vec(0usize..SEGMENTS.len(), 1..=4), 0..=5),
        0usize..=3,
        vec(user_spec(), 1..=6),
        0usize..ASSET_NAMES.len(),
        vec(asset_spec(), 1..=8),
        vec(grant_spec(), 0..=8),
    )
        .prop_map(
            |(nodes, groups, users, asset_offset, assets, grants)| Spec {
                nodes,
                groups,
                users,
                asset_offset,
                assets,
                grants,
            },
        )
}

/// Picks `list[i % len]` for each index; nothing when `list` is empty.
fn pick(list: &[String], indices: &[usize]) -> Vec<String> {
    if list.is_empty() {
        return Vec::new();
    }
    indices
        .iter()
        .map(|i| list[i % list.len()].clone())
        .collect()
}

impl Spec {
    fn build(&self) -> PolicyDocument {
        let mut declared: Vec<String> = Vec::new();
        for segments in &self.nodes {
            let path: String = segments
                .iter()
                .map(|s| format!("/{}", SEGMENTS[*s]))
                .collect();
            if !declared.contains(&path) {
                declared.push(path);
            }
        }
        // Every node a reference may name: declared ones and their parents.
        let mut all_nodes: BTreeSet<String> = BTreeSet::new();
        for path in &declared {
            let mut prefix = String::new();
            for segment in path[1..].split('/') {
                prefix.push('/');
                prefix.push_str(segment);
                all_nodes.insert(prefix.clone());
            }
        }
        let all_nodes: Vec<String> = all_nodes.into_iter().collect();

        let groups: Vec<String> = GROUPS[..self.groups]
            .iter()
            .map(|g| g.to_string())
            .collect();
        let users: Vec<User> = self
            .users
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let mut member_of = pick(&groups, &spec.groups);
                member_of.dedup();
                User {
                    username: USERNAMES[i].to_string(),
                    name: String::new(),
                    email: None,
                    is_active: spec.active,
                    date_expired: spec.expires.map(stamp),
                    groups: member_of,
                    public_keys: Vec::new(),
                    password_hash: None,
                    totp_secret: None,
                    login_acl: Default::default(),
                }
            })
            .collect();
        let usernames: Vec<String> = users.iter().map(|u| u.username.clone()).collect();

        let assets: Vec<Asset> = self
            .assets
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let mut protocols = Vec::new();
                if spec.ssh {
                    protocols.push(AssetProtocol {
                        name: Protocol::Ssh,
                        port: 22,
                    });
                }
                if spec.sftp {
                    protocols.push(AssetProtocol {
                        name: Protocol::Sftp,
                        port: 2222,
                    });
                }
                let mut accounts: Vec<Account> = Vec::new();
                for (name, username) in &spec.accounts {
                    let name = ACCOUNT_NAMES[*name];
                    if accounts.iter().any(|a| a.name == name) {
                        continue;
                    }
                    accounts.push(Account {
                        name: name.to_string(),
                        username: ACCOUNT_USERNAMES[*username].to_string(),
                        secret_type: SecretType::Password,
                        secret: None,
                        secret_file: None,
                        privileged: false,
                        shell: None,
                        groups: Vec::new(),
                        sudo: None,
                    });
                }
                Asset {
                    name: ASSET_NAMES[(self.asset_offset + i) % ASSET_NAMES.len()].to_string(),
                    address: format!("10.0.0.{}", i + 1),
                    protocols,
                    nodes: pick(&all_nodes, &spec.nodes),
                    is_active: spec.active,
                    accounts,
                    host_keys: Vec::new(),
                    zone: None,
                }
            })
            .collect();
        let asset_names: Vec<String> = assets.iter().map(|a| a.name.clone()).collect();
        let grant_accounts: Vec<String> = GRANT_ACCOUNTS.iter().map(|a| a.to_string()).collect();

        let grants: Vec<Grant> = self
            .grants
            .iter()
            .enumerate()
            .map(|(i, spec)| Grant {
                name: format!("grant-{i}"),
                users: pick(&usernames, &spec.users),
                user_groups: pick(&groups, &spec.groups),
                assets: pick(&asset_names, &spec.assets),
                nodes: pick(&all_nodes, &spec.nodes),
                accounts: pick(&grant_accounts, &spec.accounts),
                protocols: spec.protocols.clone(),
                actions: spec.actions.clone(),
                date_start: spec.start.map(stamp),
                date_expired: spec.expires.map(stamp),
                is_active: spec.active,
                comment: String::new(),
            })
            .collect();

        PolicyDocument {
            users,
            user_groups: groups
                .iter()
                .map(|name| UserGroup {
                    name: name.clone(),
                    comment: String::new(),
                })
                .collect(),
            nodes: declared,
            assets,
            grants,
            command_filters: Vec::new(),
            plans: None,
        }
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(512)
}

proptest! {
    #![proptest_config(Config {
        cases: cases(),
        // Keep the regressions out of the source tree: the failure message
        // prints the minimal policy and query instead.
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn engine_agrees_with_reference(spec in spec()) {
        let doc = spec.build();
        if let Err(message) = compare(&doc, &query_times()) {
            return Err(TestCaseError::fail(message));
        }
    }
}

// ---------------------------------------------------------------------------
// Deterministic tests
// ---------------------------------------------------------------------------

/// The generator, over as many policies as the property test sees, reaches
/// every situation the semantics single out.
#[test]
fn generator_reaches_the_interesting_cases() {
    let mut runner = TestRunner::deterministic();
    let strategy = spec();
    let mut total = Coverage::default();
    for _ in 0..256 {
        let doc = strategy
            .new_tree(&mut runner)
            .expect("a policy")
            .current()
            .build();
        Policy::from_document(doc.clone(), "gen", Path::new("."))
            .unwrap_or_else(|e| panic!("generated policy refused: {e}\n{}", show_policy(&doc)));
        let mut cov = Coverage::default();
        for at in query_times() {
            coverage_of(&doc, at, &mut cov);
            for user in &doc.users {
                for asset in &doc.assets {
                    let granted = reference::accounts(&doc, user, asset, at);
                    let extra = ["@INPUT", "@USER", "@ANON", "nope", "*"];
                    let mut names: Vec<Option<&str>> = vec![None];
                    names.extend(
                        asset
                            .accounts
                            .iter()
                            .map(|a| Some(a.name.as_str()))
                            .chain(extra.map(Some)),
                    );
                    for account in names {
                        for protocol in [None, Some(Protocol::Ssh), Some(Protocol::Sftp)] {
                            for action in Action::ALL {
                                cov.decisions += 1;
                                if reference::decide_among(&granted, account, protocol, action) {
                                    cov.allows += 1;
                                } else {
                                    cov.denies += 1;
                                }
                            }
                        }
                    }
                }
                cov.listed_assets += reference::list(&doc, user, at).len();
            }
        }
        total.add(&cov);
    }
    println!("{total:#?}");
    let counters = [
        ("allowed decisions", total.allows),
        ("denied decisions", total.denies),
        ("listed assets", total.listed_assets),
        ("virtual @USER", total.virtual_user),
        ("real account through @USER only", total.real_user_only),
        ("asset under a descendant node only", total.node_descendant),
        ("/a vs /ab prefix trap", total.prefix_trap),
        ("asset named *", total.star_asset),
        ("account named *", total.star_account),
        ("grant with an empty part", total.empty_part_grant),
        ("query exactly at date_start", total.at_start),
        ("query exactly at date_expired", total.at_expiry),
        ("disabled or expired user", total.barred_user),
        ("disabled asset", total.disabled_asset),
        (
            "account with no offered protocol",
            total.no_offered_protocol,
        ),
        ("account from two grants", total.union_of_grants),
    ];
    for (what, count) in counters {
        assert!(
            count >= 5,
            "the generator hardly reaches: {what} ({count} times)\n{total:#?}"
        );
    }
}

fn t(i: usize) -> DateTime<Utc> {
    instants()[i]
}

fn user(username: &str, groups: &[&str]) -> User {
    User {
        username: username.to_string(),
        name: String::new(),
        email: None,
        is_active: true,
        date_expired: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        public_keys: Vec::new(),
        password_hash: None,
        totp_secret: None,
        login_acl: Default::default(),
    }
}

fn account(name: &str, username: &str) -> Account {
    Account {
        name: name.to_string(),
        username: username.to_string(),
        secret_type: SecretType::Password,
        secret: None,
        secret_file: None,
        privileged: false,
        shell: None,
        groups: Vec::new(),
        sudo: None,
    }
}

fn asset(name: &str, nodes: &[&str], protocols: &[Protocol], accounts: Vec<Account>) -> Asset {
    Asset {
        name: name.to_string(),
        address: "192.0.2.1".to_string(),
        protocols: protocols
            .iter()
            .map(|p| AssetProtocol { name: *p, port: 22 })
            .collect(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        is_active: true,
        accounts,
        host_keys: Vec::new(),
        zone: None,
    }
}

fn grant(name: &str, users: &[&str], assets: &[&str], nodes: &[&str], accounts: &[&str]) -> Grant {
    Grant {
        name: name.to_string(),
        users: users.iter().map(|u| u.to_string()).collect(),
        user_groups: Vec::new(),
        assets: assets.iter().map(|a| a.to_string()).collect(),
        nodes: nodes.iter().map(|n| n.to_string()).collect(),
        accounts: accounts.iter().map(|a| a.to_string()).collect(),
        protocols: vec![ProtocolChoice::All],
        actions: vec![ActionChoice::All],
        date_start: None,
        date_expired: None,
        is_active: true,
        comment: String::new(),
    }
}

fn names(granted: &[Granted]) -> Vec<&str> {
    granted.iter().map(|g| g.name.as_str()).collect()
}

fn find<'d>(doc: &'d PolicyDocument, username: &str, asset_name: &str) -> (&'d User, &'d Asset) {
    (
        doc.users.iter().find(|u| u.username == username).unwrap(),
        doc.assets.iter().find(|a| a.name == asset_name).unwrap(),
    )
}

const BOTH: [Protocol; 2] = [Protocol::Ssh, Protocol::Sftp];

/// Checks the engine too on a hand-written policy, at every query time.
fn engine_agrees(doc: &PolicyDocument) {
    let mut times = query_times();
    times.push(Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap());
    if let Err(message) = compare(doc, &times) {
        panic!("{message}");
    }
}

#[test]
fn reference_covers_descendant_nodes_but_not_string_prefixes() {
    let doc = PolicyDocument {
        users: vec![user("alice", &["ops"])],
        user_groups: vec![UserGroup {
            name: "ops".into(),
            comment: String::new(),
        }],
        nodes: vec!["/a/b/c".into(), "/ab".into(), "/x".into()],
        assets: vec![
            asset("deep", &["/a/b/c"], &BOTH, vec![account("root", "root")]),
            asset("mid", &["/a/b"], &BOTH, vec![account("root", "root")]),
            asset("prefix", &["/ab"], &BOTH, vec![account("root", "root")]),
            asset(
                "other",
                &["/x", "/ab"],
                &BOTH,
                vec![account("root", "root")],
            ),
        ],
        grants: vec![{
            let mut g = grant("by-group", &[], &[], &["/a/b"], &["@ALL"]);
            g.user_groups = vec!["ops".into()];
            g
        }],
        command_filters: Vec::new(),
        plans: None,
    };
    let (alice, _) = find(&doc, "alice", "deep");
    let listed: Vec<String> = reference::list(&doc, alice, t(0))
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(listed, ["deep", "mid"]);
    for name in ["prefix", "other"] {
        let (_, a) = find(&doc, "alice", name);
        assert!(!reference::decide(
            &doc,
            alice,
            a,
            None,
            None,
            Action::Connect,
            t(0)
        ));
    }
    engine_agrees(&doc);
}

#[test]
fn reference_tells_virtual_user_from_a_real_same_name_account() {
    let doc = PolicyDocument {
        users: vec![user("alice", &[]), user("bob", &[])],
        assets: vec![
            // `root` logs in as alice: alice's @USER is this real account.
            asset(
                "web",
                &[],
                &BOTH,
                vec![account("root", "alice"), account("deploy", "deploy")],
            ),
            asset("db", &[], &[Protocol::Ssh], vec![]),
        ],
        grants: vec![grant(
            "same-name",
            &["alice", "bob"],
            &["web", "db"],
            &[],
            &["@USER"],
        )],
        ..Default::default()
    };
    let (alice, web) = find(&doc, "alice", "web");
    let (bob, db) = find(&doc, "bob", "db");
    assert_eq!(
        names(&reference::accounts(&doc, alice, web, t(0))),
        ["root"]
    );
    assert_eq!(names(&reference::accounts(&doc, bob, web, t(0))), ["@USER"]);
    assert_eq!(
        names(&reference::accounts(&doc, alice, db, t(0))),
        ["@USER"]
    );
    let connect = |u, a, account, protocol| {
        reference::decide(&doc, u, a, account, protocol, Action::Connect, t(0))
    };
    assert!(connect(alice, web, Some("root"), None));
    // Only the virtual @USER answers to the name `@USER`.
    assert!(!connect(alice, web, Some("@USER"), None));
    assert!(connect(bob, web, Some("@USER"), None));
    assert!(!connect(bob, web, Some("root"), None));
    assert!(!connect(bob, web, Some("deploy"), None));
    // db offers ssh only.
    assert!(connect(alice, db, Some("@USER"), Some(Protocol::Ssh)));
    assert!(!connect(alice, db, Some("@USER"), Some(Protocol::Sftp)));
    engine_agrees(&doc);
}

#[test]
fn reference_ignores_grants_with_an_empty_part() {
    let full = grant("full", &["alice"], &["web"], &[], &["root"]);
    let mut no_actions = grant("no-actions", &["alice"], &["web"], &[], &["deploy"]);
    no_actions.actions.clear();
    let mut no_protocols = grant("no-protocols", &["alice"], &["web"], &[], &["deploy"]);
    no_protocols.protocols.clear();
    let no_accounts = grant("no-accounts", &["alice"], &["web"], &[], &[]);
    let no_users = grant("no-users", &[], &["web"], &[], &["@ALL"]);
    let no_assets = grant("no-assets", &["alice"], &[], &[], &["@ALL"]);
    let mut disabled = grant("disabled", &["alice"], &["web"], &[], &["@ALL"]);
    disabled.is_active = false;
    let doc = PolicyDocument {
        users: vec![user("alice", &[])],
        assets: vec![asset(
            "web",
            &[],
            &BOTH,
            vec![account("root", "root"), account("deploy", "deploy")],
        )],
        grants: vec![
            full,
            no_actions,
            no_protocols,
            no_accounts,
            no_users,
            no_assets,
            disabled,
        ],
        ..Default::default()
    };
    for g in &doc.grants[1..] {
        assert!(
            !reference::grant_active(g, t(0)),
            "{} should be inactive",
            g.name
        );
    }
    let (alice, web) = find(&doc, "alice", "web");
    assert_eq!(
        names(&reference::accounts(&doc, alice, web, t(0))),
        ["root"]
    );
    engine_agrees(&doc);
}

#[test]
fn reference_respects_date_boundaries_and_unions_grants() {
    let second = TimeDelta::seconds(1);
    let mut window = grant("window", &["alice"], &["web"], &[], &["root"]);
    window.date_start = Some(Timestamp(t(0)));
    window.date_expired = Some(Timestamp(t(1)));
    window.protocols = vec![ProtocolChoice::Ssh];
    window.actions = vec![ActionChoice::Connect];
    let mut later = grant("later", &["alice"], &["web"], &[], &["root", "@INPUT"]);
    later.date_start = Some(Timestamp(t(1)));
    later.protocols = vec![ProtocolChoice::Sftp];
    later.actions = vec![ActionChoice::Upload, ActionChoice::Download];
    let mut overlap = grant("overlap", &["alice"], &["web"], &[], &["root"]);
    overlap.date_start = Some(Timestamp(t(0)));
    overlap.actions = vec![ActionChoice::Delete];
    overlap.protocols = vec![ProtocolChoice::Sftp];
    let mut expiring = user("alice", &[]);
    expiring.date_expired = Some(Timestamp(t(2)));
    let doc = PolicyDocument {
        users: vec![expiring],
        assets: vec![asset("web", &[], &BOTH, vec![account("root", "root")])],
        grants: vec![window, later, overlap],
        ..Default::default()
    };
    let (alice, web) = find(&doc, "alice", "web");
    let decide = |account, protocol, action, at| {
        reference::decide(&doc, alice, web, account, protocol, action, at)
    };
    let ssh = Some(Protocol::Ssh);
    let sftp = Some(Protocol::Sftp);
    // Nothing before the first window.
    assert!(reference::accounts(&doc, alice, web, t(0) - second).is_empty());
    // date_start is inclusive.
    assert!(decide(Some("root"), ssh, Action::Connect, t(0)));
    assert!(decide(Some("root"), sftp, Action::Delete, t(0)));
    // Protocols and actions are unioned per account, not crossed per grant.
    assert!(decide(Some("root"), sftp, Action::Connect, t(0)));
    assert!(decide(Some("root"), ssh, Action::Delete, t(0)));
    assert!(decide(Some("root"), ssh, Action::Connect, t(1) - second));
    // date_expired is exclusive; `later` starts at the same instant.
    assert!(!decide(Some("root"), ssh, Action::Connect, t(1)));
    assert!(decide(Some("root"), sftp, Action::Upload, t(1)));
    assert!(decide(Some("@INPUT"), None, Action::Download, t(1)));
    assert!(!decide(Some("@INPUT"), ssh, Action::Download, t(1)));
    assert!(!decide(Some("@INPUT"), None, Action::Connect, t(1)));
    // The user expires at t(2): nothing from then on.
    assert!(decide(None, None, Action::Upload, t(2) - second));
    assert!(!decide(None, None, Action::Upload, t(2)));
    assert!(reference::list(&doc, alice, t(2)).is_empty());
    engine_agrees(&doc);
}

#[test]
fn reference_takes_star_literally() {
    let doc = PolicyDocument {
        users: vec![user("alice", &[])],
        assets: vec![
            asset(
                "*",
                &[],
                &BOTH,
                vec![account("*", "root"), account("root", "root")],
            ),
            asset("web", &[], &BOTH, vec![account("root", "root")]),
        ],
        grants: vec![grant("star", &["alice"], &["*", "web"], &[], &["*"])],
        ..Default::default()
    };
    let (alice, star) = find(&doc, "alice", "*");
    assert_eq!(names(&reference::accounts(&doc, alice, star, t(0))), ["*"]);
    let listed: Vec<String> = reference::list(&doc, alice, t(0))
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    assert_eq!(listed, ["*"]);
    engine_agrees(&doc);
}

#[test]
fn reference_gives_a_disabled_asset_or_user_nothing() {
    let mut off = asset("off", &[], &BOTH, vec![account("root", "root")]);
    off.is_active = false;
    let mut bob = user("bob", &[]);
    bob.is_active = false;
    let doc = PolicyDocument {
        users: vec![user("alice", &[]), bob],
        assets: vec![off, asset("on", &[], &[], vec![account("root", "root")])],
        grants: vec![grant(
            "all",
            &["alice", "bob"],
            &["off", "on"],
            &[],
            &["@ALL", "@ANON"],
        )],
        ..Default::default()
    };
    let (alice, off) = find(&doc, "alice", "off");
    let (bob, on) = find(&doc, "bob", "on");
    assert!(reference::accounts(&doc, alice, off, t(0)).is_empty());
    assert!(reference::accounts(&doc, bob, on, t(0)).is_empty());
    // `on` offers no protocol: accounts are granted, none usable.
    let granted = reference::accounts(&doc, alice, on, t(0));
    assert_eq!(names(&granted), ["@ANON", "root"]);
    assert!(granted.iter().all(|g| g.protocols.is_empty()));
    assert!(!reference::decide(
        &doc,
        alice,
        on,
        None,
        None,
        Action::Connect,
        t(0)
    ));
    assert_eq!(reference::list(&doc, alice, t(0)).len(), 1);
    engine_agrees(&doc);
}
