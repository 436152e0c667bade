//! One test per grant rule of DESIGN.md, and each seed case (3.1–3.4) of
//! jumpserver-v4-asset-grants.txt on its own.

use std::path::Path;

use chrono::{DateTime, Utc};
use jms_core::model::{Action, Protocol, Timestamp};
use jms_core::{Decision, Format, Policy, Query};

/// Users alice (ops), bob (dev), zed (no group); assets web01, web02 under
/// /Default/prod/web, db01 under /Default/prod/db, lab01 under /Default/lab.
const BASE: &str = r#"
users:
  - {username: alice, groups: [ops]}
  - {username: bob, groups: [dev]}
  - {username: zed}
user_groups: [{name: ops}, {name: dev}]
nodes: [/Default/prod/web, /Default/prod/db, /Default/lab]
assets:
  - name: web01
    address: 10.0.0.1
    protocols: [{name: ssh, port: 22}, {name: sftp, port: 22}]
    nodes: [/Default/prod/web]
    accounts:
      - {name: root, username: root, secret_type: password, secret: x}
      - {name: deploy, username: deploy, secret_type: ssh_key, secret: k}
      - {name: bob-acct, username: bob, secret_type: password, secret: b}
  - name: web02
    address: 10.0.0.2
    protocols: [{name: ssh, port: 22}]
    nodes: [/Default/prod/web]
    accounts: [{name: root, username: root, secret_type: password, secret: x}]
  - name: db01
    address: 10.0.0.3
    protocols: [{name: ssh, port: 22}, {name: sftp, port: 22}]
    nodes: [/Default/prod/db]
    accounts: [{name: postgres, username: postgres, secret_type: password, secret: p}]
  - name: lab01
    address: 10.0.0.4
    protocols: [{name: ssh, port: 22}]
    nodes: [/Default/lab]
    accounts: []
"#;

fn policy(grants: &str) -> Policy {
    let text = format!("{BASE}\ngrants:\n{grants}");
    Policy::parse(&text, Format::Yaml, "test.yaml", Path::new("."))
        .unwrap_or_else(|e| panic!("policy should load: {e}"))
}

fn at(text: &str) -> DateTime<Utc> {
    Timestamp::parse(text).expect("test time").0
}

fn now() -> DateTime<Utc> {
    at("2026-06-01T12:00:00Z")
}

struct Ask<'a> {
    user: &'a str,
    asset: &'a str,
    account: Option<&'a str>,
    protocol: Option<Protocol>,
    action: Action,
    at: DateTime<Utc>,
}

fn ask<'a>(user: &'a str, asset: &'a str) -> Ask<'a> {
    Ask {
        user,
        asset,
        account: None,
        protocol: None,
        action: Action::Connect,
        at: now(),
    }
}

impl<'a> Ask<'a> {
    fn account(mut self, account: &'a str) -> Self {
        self.account = Some(account);
        self
    }
    fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = Some(protocol);
        self
    }
    fn action(mut self, action: Action) -> Self {
        self.action = action;
        self
    }
    fn at(mut self, when: &str) -> Self {
        self.at = at(when);
        self
    }
    fn on(&self, policy: &Policy) -> Decision {
        let query = Query {
            user: self.user,
            asset: self.asset,
            account: self.account,
            protocol: self.protocol,
            action: self.action,
            at: self.at,
        };
        policy.decide(&query).expect("known user and asset")
    }
}

#[track_caller]
fn allowed(policy: &Policy, q: Ask<'_>) {
    let decision = q.on(policy);
    assert_eq!(
        decision,
        Decision::Allow,
        "expected allow for {} on {} ({:?}, {:?}, {})",
        q.user,
        q.asset,
        q.account,
        q.protocol,
        q.action
    );
}

#[track_caller]
fn denied(policy: &Policy, q: Ask<'_>) -> String {
    match q.on(policy) {
        Decision::Deny(reason) => reason,
        Decision::Allow => panic!(
            "expected deny for {} on {} ({:?}, {:?}, {})",
            q.user, q.asset, q.account, q.protocol, q.action
        ),
    }
}

fn listed_assets(policy: &Policy, user: &str) -> Vec<String> {
    policy
        .list(user, now())
        .expect("known user")
        .iter()
        .map(|g| g.asset.name.clone())
        .collect()
}

// ---- seed cases -------------------------------------------------------

#[test]
fn seed_3_1_single_user_single_asset() {
    let p = policy(
        r#"  - {name: g, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    allowed(&p, ask("alice", "web01").account("root"));
    allowed(
        &p,
        ask("alice", "web01")
            .account("deploy")
            .protocol(Protocol::Sftp)
            .action(Action::Upload),
    );
    denied(&p, ask("alice", "web02"));
    denied(&p, ask("bob", "web01"));
    assert_eq!(listed_assets(&p, "alice"), ["web01"]);
}

#[test]
fn seed_3_2_user_group_single_asset() {
    let p = policy(
        r#"  - {name: g, user_groups: [ops], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    allowed(&p, ask("alice", "web01"));
    denied(&p, ask("bob", "web01"));
    denied(&p, ask("zed", "web01"));
}

#[test]
fn seed_3_3_single_user_node() {
    let p = policy(
        r#"  - {name: g, users: [alice], nodes: [/Default/prod/web], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    allowed(&p, ask("alice", "web01"));
    allowed(&p, ask("alice", "web02"));
    denied(&p, ask("alice", "db01"));
    assert_eq!(listed_assets(&p, "alice"), ["web01", "web02"]);
}

#[test]
fn seed_3_4_user_group_node() {
    let p = policy(
        r#"  - {name: g, user_groups: [dev], nodes: [/Default/prod], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    for asset in ["web01", "web02", "db01"] {
        allowed(&p, ask("bob", asset));
    }
    denied(&p, ask("bob", "lab01"));
    denied(&p, ask("alice", "web01"));
}

// ---- who and what -----------------------------------------------------

#[test]
fn users_and_group_members_are_united() {
    let p = policy(
        r#"  - {name: g, users: [zed], user_groups: [dev], assets: [web02], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    allowed(&p, ask("zed", "web02"));
    allowed(&p, ask("bob", "web02"));
    denied(&p, ask("alice", "web02"));
}

#[test]
fn assets_and_node_assets_are_united_at_any_depth() {
    let p = policy(
        r#"  - {name: g, users: [alice], assets: [lab01], nodes: [/Default], accounts: ["@ALL", "@INPUT"], protocols: [all], actions: [all]}"#,
    );
    assert_eq!(
        listed_assets(&p, "alice"),
        ["db01", "lab01", "web01", "web02"]
    );
}

#[test]
fn a_node_does_not_cover_its_siblings_or_parent() {
    let p = policy(
        r#"  - {name: g, users: [alice], nodes: [/Default/prod/db], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    assert_eq!(listed_assets(&p, "alice"), ["db01"]);
}

// ---- accounts ---------------------------------------------------------

#[test]
fn all_alias_grants_every_account_of_the_asset() {
    let p = policy(
        r#"  - {name: g, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    let names: Vec<String> = p
        .accounts("alice", "web01", now())
        .unwrap()
        .iter()
        .map(|g| g.account.name().to_string())
        .collect();
    assert_eq!(names, ["root", "deploy", "bob-acct"]);
    denied(&p, ask("alice", "web01").account("@INPUT"));
}

#[test]
fn named_account_applies_only_where_the_asset_has_it() {
    let p = policy(
        r#"  - {name: g, users: [alice], nodes: [/Default/prod], accounts: [root], protocols: [all], actions: [all]}"#,
    );
    allowed(&p, ask("alice", "web01").account("root"));
    allowed(&p, ask("alice", "web02").account("root"));
    let reason = denied(&p, ask("alice", "web01").account("deploy"));
    assert_eq!(
        reason,
        "no active grant gives alice account deploy on web01"
    );
    let reason = denied(&p, ask("alice", "db01"));
    assert_eq!(
        reason,
        "no active grant gives alice an account that exists on db01"
    );
    assert_eq!(
        denied(&p, ask("alice", "db01").account("root")),
        "asset db01 has no account root"
    );
    assert_eq!(
        listed_assets(&p, "alice"),
        ["web01", "web02"],
        "db01 has no root account, so it is not listed"
    );
}

#[test]
fn input_and_anon_are_virtual_accounts() {
    let p = policy(
        r#"  - {name: g, users: [alice], assets: [lab01], accounts: ["@INPUT", "@ANON"], protocols: [ssh], actions: [connect]}"#,
    );
    allowed(&p, ask("alice", "lab01").account("@INPUT"));
    allowed(&p, ask("alice", "lab01").account("@ANON"));
    denied(&p, ask("alice", "lab01").account("@USER"));
    let names: Vec<&str> = p
        .accounts("alice", "lab01", now())
        .unwrap()
        .iter()
        .map(|g| g.account.name())
        .collect();
    assert_eq!(names, ["@INPUT", "@ANON"]);
}

#[test]
fn user_alias_uses_the_same_name_account_when_the_asset_has_one() {
    let p = policy(
        r#"  - {name: g, users: [bob, alice], nodes: [/Default/prod/web], accounts: ["@USER"], protocols: [all], actions: [all]}"#,
    );
    // web01 has an account whose username is bob: that real account is his.
    let bob_web01: Vec<&str> = p
        .accounts("bob", "web01", now())
        .unwrap()
        .iter()
        .map(|g| g.account.name())
        .collect();
    assert_eq!(bob_web01, ["bob-acct"]);
    allowed(&p, ask("bob", "web01").account("bob-acct"));
    // web02 has none: a virtual same-name account, asked at connect time.
    allowed(&p, ask("bob", "web02").account("@USER"));
    // alice has no same-name account anywhere, and never gets bob's.
    denied(&p, ask("alice", "web01").account("bob-acct"));
    allowed(&p, ask("alice", "web01").account("@USER"));
}

// ---- protocols and actions --------------------------------------------

#[test]
fn protocols_all_or_listed_and_offered_by_the_asset() {
    let p = policy(
        r#"
  - {name: ssh-only, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [ssh], actions: [all]}
  - {name: all-protocols, users: [bob], assets: [web01, web02], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    allowed(&p, ask("alice", "web01").protocol(Protocol::Ssh));
    assert_eq!(
        denied(&p, ask("alice", "web01").protocol(Protocol::Sftp)),
        "no active grant gives alice sftp on web01"
    );
    allowed(&p, ask("bob", "web01").protocol(Protocol::Sftp));
    assert_eq!(
        denied(&p, ask("bob", "web02").protocol(Protocol::Sftp)),
        "asset web02 does not offer sftp"
    );
}

#[test]
fn actions_all_or_listed() {
    let p = policy(
        r#"
  - {name: some, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [connect, download]}
  - {name: every, users: [bob], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    allowed(&p, ask("alice", "web01").action(Action::Download));
    assert_eq!(
        denied(
            &p,
            ask("alice", "web01").account("root").action(Action::Upload)
        ),
        "no active grant gives alice upload on root@web01"
    );
    for action in Action::ALL {
        allowed(&p, ask("bob", "web01").action(action));
    }
}

#[test]
fn grants_for_the_same_account_union_protocols_and_actions() {
    let p = policy(
        r#"
  - {name: a, users: [alice], assets: [web01], accounts: [root], protocols: [ssh], actions: [connect]}
  - {name: b, user_groups: [ops], nodes: [/Default/prod/web], accounts: [root], protocols: [sftp], actions: [upload]}"#,
    );
    allowed(
        &p,
        ask("alice", "web01")
            .account("root")
            .protocol(Protocol::Sftp)
            .action(Action::Connect),
    );
    allowed(
        &p,
        ask("alice", "web01")
            .account("root")
            .protocol(Protocol::Ssh)
            .action(Action::Upload),
    );
    denied(
        &p,
        ask("alice", "web01")
            .account("root")
            .action(Action::Download),
    );
}

#[test]
fn the_union_is_per_account_not_across_accounts() {
    let p = policy(
        r#"
  - {name: a, users: [alice], assets: [web01], accounts: [root], protocols: [ssh], actions: [connect]}
  - {name: b, users: [alice], assets: [web01], accounts: [deploy], protocols: [sftp], actions: [upload]}"#,
    );
    denied(
        &p,
        ask("alice", "web01").account("root").action(Action::Upload),
    );
    denied(
        &p,
        ask("alice", "web01")
            .account("deploy")
            .protocol(Protocol::Ssh),
    );
    denied(
        &p,
        ask("alice", "web01")
            .protocol(Protocol::Ssh)
            .action(Action::Upload),
    );
    allowed(
        &p,
        ask("alice", "web01")
            .protocol(Protocol::Sftp)
            .action(Action::Upload),
    );
}

// ---- empty parts, wildcards, time, switches ---------------------------

#[test]
fn a_grant_with_any_empty_required_part_is_inactive() {
    let cases = [
        (
            "users or user groups",
            r#"{name: g, assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
        ),
        (
            "assets or nodes",
            r#"{name: g, users: [alice], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
        ),
        (
            "accounts",
            r#"{name: g, users: [alice], assets: [web01], accounts: [], protocols: [all], actions: [all]}"#,
        ),
        (
            "protocols",
            r#"{name: g, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [], actions: [all]}"#,
        ),
        (
            "actions",
            r#"{name: g, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: []}"#,
        ),
    ];
    for (part, grant) in cases {
        let p = policy(&format!("  - {grant}"));
        let reason = denied(&p, ask("alice", "web01"));
        if part == "users or user groups" || part == "assets or nodes" {
            assert_eq!(reason, "no grant gives alice asset web01", "empty {part}");
        } else {
            assert_eq!(reason, format!("no active grant gives alice asset web01: grant g is inactive: it lists no {part}"));
        }
        assert!(
            listed_assets(&p, "alice").is_empty(),
            "empty {part} must list nothing"
        );
    }
}

#[test]
fn star_is_never_a_wildcard() {
    let p = policy(
        r#"  - {name: g, users: [alice], nodes: [/Default], accounts: ["*"], protocols: [all], actions: [all]}"#,
    );
    assert!(
        listed_assets(&p, "alice").is_empty(),
        "account `*` matches no account"
    );
    let text = format!("{BASE}\ngrants:\n  - {{name: g, users: [\"*\"], assets: [web01], accounts: [\"@ALL\"], protocols: [all], actions: [all]}}");
    let err = Policy::parse(&text, Format::Yaml, "star.yaml", Path::new("."))
        .unwrap_err()
        .to_string();
    assert_eq!(err, "star.yaml: grant `g`: field `users[0]`: unknown user `*` (`*` is not a wildcard: name them)");
    // An asset literally named `*` is only itself.
    let star = r#"
users: [{username: alice}]
assets:
  - {name: "*", address: 10.0.0.9, protocols: [{name: ssh, port: 22}], accounts: [{name: "*", username: root, secret_type: password}]}
  - {name: other, address: 10.0.0.8, protocols: [{name: ssh, port: 22}], accounts: [{name: root, username: root, secret_type: password}]}
grants:
  - {name: g, users: [alice], assets: ["*"], accounts: ["*"], protocols: [all], actions: [all]}
"#;
    let p = Policy::parse(star, Format::Yaml, "star.yaml", Path::new(".")).unwrap();
    allowed(&p, ask("alice", "*").account("*"));
    denied(&p, ask("alice", "other"));
}

#[test]
fn the_window_is_start_inclusive_and_expiry_exclusive() {
    let p = policy(
        r#"  - {name: w, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all], date_start: "2026-03-01T00:00:00Z", date_expired: "2026-04-01T00:00:00Z"}"#,
    );
    assert_eq!(
        denied(&p, ask("alice", "web01").at("2026-02-28T23:59:59Z")),
        "no active grant gives alice asset web01: grant w starts 2026-03-01T00:00:00Z"
    );
    allowed(&p, ask("alice", "web01").at("2026-03-01T00:00:00Z"));
    allowed(&p, ask("alice", "web01").at("2026-03-31T23:59:59Z"));
    assert_eq!(
        denied(&p, ask("alice", "web01").at("2026-04-01T00:00:00Z")),
        "no active grant gives alice asset web01: grant w expired 2026-04-01T00:00:00Z"
    );
}

#[test]
fn a_disabled_grant_does_nothing() {
    let p = policy(
        r#"  - {name: off, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all], is_active: false}"#,
    );
    assert_eq!(
        denied(&p, ask("alice", "web01")),
        "no active grant gives alice asset web01: grant off is disabled"
    );
}

#[test]
fn an_active_grant_wins_over_inactive_ones() {
    let p = policy(
        r#"
  - {name: old, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all], date_expired: 2026-01-01}
  - {name: new, user_groups: [ops], nodes: [/Default/prod], accounts: [deploy], protocols: [ssh], actions: [connect]}"#,
    );
    allowed(&p, ask("alice", "web01").account("deploy"));
    denied(&p, ask("alice", "web01").account("root"));
}

#[test]
fn disabled_or_expired_users_and_disabled_assets_get_nothing() {
    let text = format!(
        "{}\ngrants:\n  - {{name: g, users: [alice, bob, zed], nodes: [/Default], accounts: [\"@ALL\", \"@INPUT\"], protocols: [all], actions: [all]}}",
        BASE.replace("{username: bob, groups: [dev]}", "{username: bob, groups: [dev], is_active: false}")
            .replace("{username: zed}", "{username: zed, date_expired: 2026-05-01}")
            .replace("address: 10.0.0.2", "address: 10.0.0.2\n    is_active: false")
    );
    let p = Policy::parse(&text, Format::Yaml, "t.yaml", Path::new(".")).unwrap();
    assert_eq!(denied(&p, ask("bob", "web01")), "user bob is disabled");
    assert_eq!(
        denied(&p, ask("zed", "web01")),
        "user zed expired 2026-05-01T00:00:00Z"
    );
    allowed(&p, ask("zed", "web01").at("2026-04-30T00:00:00Z"));
    assert_eq!(denied(&p, ask("alice", "web02")), "asset web02 is disabled");
    assert_eq!(listed_assets(&p, "alice"), ["db01", "lab01", "web01"]);
    assert!(listed_assets(&p, "bob").is_empty());
    assert!(p.accounts("bob", "web01", now()).unwrap().is_empty());
}

#[test]
fn unknown_user_or_asset_is_a_query_error_not_a_decision() {
    let p = policy(
        r#"  - {name: g, users: [alice], assets: [web01], accounts: ["@ALL"], protocols: [all], actions: [all]}"#,
    );
    let query = Query {
        user: "mallory",
        asset: "web01",
        account: None,
        protocol: None,
        action: Action::Connect,
        at: now(),
    };
    assert_eq!(
        p.decide(&query).unwrap_err().to_string(),
        "unknown user `mallory`"
    );
    let query = Query {
        user: "alice",
        asset: "nope",
        ..query
    };
    assert_eq!(
        p.decide(&query).unwrap_err().to_string(),
        "unknown asset `nope`"
    );
}

#[test]
fn list_shows_accounts_with_usable_protocols_and_actions() {
    let p = policy(
        r#"
  - {name: a, users: [alice], assets: [web02], accounts: [root, "@INPUT"], protocols: [all], actions: [connect]}
  - {name: b, users: [alice], assets: [web02], accounts: [root], protocols: [sftp], actions: [upload]}"#,
    );
    let list = p.list("alice", now()).unwrap();
    assert_eq!(list.len(), 1);
    let web02 = list.get(0).unwrap();
    assert_eq!(list.name(0), Some("web02"));
    let root = &web02.accounts[0];
    assert_eq!(root.account.name(), "root");
    assert_eq!(
        root.protocols.iter().collect::<Vec<_>>(),
        [Protocol::Ssh],
        "web02 offers only ssh"
    );
    assert_eq!(
        root.actions.iter().collect::<Vec<_>>(),
        [Action::Connect, Action::Upload]
    );
    assert_eq!(web02.accounts[1].account.name(), "@INPUT");
}
