//! A delta applied to a checked policy (`Policy::apply_delta`, which
//! shares and re-indexes only what the delta touches) gives exactly what
//! the full path gives: the delta applied to the document, then checked
//! and indexed from scratch (`Policy::from_received`). Random deltas over
//! a generated policy, valid and invalid: the same refusals, the same
//! document, the same `list` and `decide` answers for every user. And the
//! NSS cache entries updated from the last ones
//! (`NssData::update_from_policy`) are the ones made from scratch, and the
//! cache on disk — its last full write with the overlay of the entries
//! changed since (`CacheWriter::write_overlay`) — answers every lookup as
//! a cache written from scratch.

use chrono::{DateTime, Duration, Utc};
use jms_core::model::{Action, PolicyDocument, Protocol};
use std::collections::BTreeSet;
use std::path::Path;

use jms_core::nss_cache::{overlay_path, CacheWriter, NssCache, NssData, NssSettings, NssView};
use jms_core::uids::{IdAllocator, IdKind, IdRanges};
use jms_core::{Policy, Query};
use jms_sync::bundle::{AssetAccount, Delta, EntityKind, Removal};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[path = "../benches/support/generate.rs"]
mod generate;

fn full_path(base: &Policy, delta: &Delta) -> Result<Policy, String> {
    let mut doc = base.doc.to_document();
    delta
        .apply_to_document(&mut doc)
        .map_err(|e| e.to_string())?;
    Policy::from_received(doc, "delta").map_err(|e| e.to_string())
}

fn empty_delta() -> Delta {
    Delta {
        from_version: 1,
        to_version: 2,
        issued_at: Utc::now(),
        server_id: "test".into(),
        upsert: PolicyDocument::default(),
        accounts: Vec::new(),
        remove: Vec::new(),
        settings: serde_json::Value::Null,
        ids: Default::default(),
    }
}

/// A random delta: mostly users, groups, grants and filters (the shared
/// path), sometimes an asset or account change (the full path), with
/// references that may not resolve.
fn random_delta(base: &PolicyDocument, rng: &mut StdRng, n: usize) -> Delta {
    let mut delta = empty_delta();
    let pick_user = |rng: &mut StdRng| base.users.choose(rng).unwrap().username.clone();
    let pick_group = |rng: &mut StdRng| base.user_groups.choose(rng).unwrap().name.clone();
    for _ in 0..rng.gen_range(1..=4) {
        match rng.gen_range(0..14) {
            // A new user, in existing groups or (rarely) an unknown one.
            0..=2 => {
                let mut user = base.users.choose(rng).unwrap().clone();
                user.username = format!("new-{n}-{}", rng.gen_range(0..1000));
                user.groups = (0..rng.gen_range(0..3)).map(|_| pick_group(rng)).collect();
                user.groups.sort();
                user.groups.dedup();
                if rng.gen_ratio(1, 8) {
                    user.groups.push("no-such-group".into());
                }
                if rng.gen_ratio(1, 10) {
                    user.username = "bad name".into();
                }
                // Twice in one delta: a duplicate (refused).
                if rng.gen_ratio(1, 10) {
                    delta.upsert.users.push(user.clone());
                }
                delta.upsert.users.push(user);
            }
            // A changed user: other groups, disabled.
            3 => {
                let mut user = base.users.choose(rng).unwrap().clone();
                user.groups = vec![pick_group(rng)];
                user.is_active = rng.gen_bool(0.7);
                // Twice in one delta: the last one wins.
                if rng.gen_ratio(1, 4) {
                    let mut first = user.clone();
                    first.is_active = !user.is_active;
                    delta.upsert.users.push(first);
                }
                delta.upsert.users.push(user);
            }
            // A removed user (maybe still named by a grant: refused).
            4 => delta.remove.push(Removal {
                kind: EntityKind::User,
                name: pick_user(rng),
            }),
            // A new or removed group.
            5 => {
                if rng.gen_bool(0.5) {
                    let mut group = base.user_groups.choose(rng).unwrap().clone();
                    group.name = format!("team-{n}");
                    delta.upsert.user_groups.push(group);
                } else {
                    delta.remove.push(Removal {
                        kind: EntityKind::Group,
                        name: pick_group(rng),
                    });
                }
            }
            // A new or changed grant naming users, groups, assets, nodes.
            6..=8 => {
                let mut grant = base.grants.choose(rng).unwrap().clone();
                if rng.gen_bool(0.5) {
                    grant.name = format!("grant-{n}-{}", rng.gen_range(0..1000));
                }
                grant.users = (0..rng.gen_range(0..3)).map(|_| pick_user(rng)).collect();
                grant.user_groups = (0..rng.gen_range(0..2)).map(|_| pick_group(rng)).collect();
                if rng.gen_ratio(1, 10) {
                    grant.assets.push("no-such-asset".into());
                }
                if rng.gen_ratio(1, 10) {
                    grant.accounts.push("@NOPE".into());
                }
                grant.is_active = rng.gen_bool(0.8);
                delta.upsert.grants.push(grant);
            }
            9 => delta.remove.push(Removal {
                kind: EntityKind::Grant,
                name: base.grants.choose(rng).unwrap().name.clone(),
            }),
            // A command filter, sometimes with a bad rule or reference.
            10 => {
                let mut filter: jms_core::model::CommandFilter =
                    serde_json::from_value(serde_json::json!({
                        "name": format!("filter-{n}"), "action": "deny", "rules": ["^reboot"],
                        "users": [pick_user(rng)], "assets": ["@ALL"], "accounts": ["@ALL"],
                    }))
                    .unwrap();
                if rng.gen_ratio(1, 4) {
                    filter.rules.push("(".into());
                }
                if rng.gen_ratio(1, 4) {
                    filter.users.push("nobody-here".into());
                }
                delta.upsert.command_filters.push(filter);
            }
            // The full path: an asset changed, an account added or removed.
            // The full path: an asset disabled or moved to another node.
            11 => {
                let mut asset = base.assets.choose(rng).unwrap().clone();
                if rng.gen_bool(0.5) {
                    asset.is_active = !asset.is_active;
                } else {
                    asset.nodes = vec![base.nodes.choose(rng).unwrap().clone()];
                }
                delta.upsert.assets.push(asset);
            }
            12 => {
                let asset = base.assets.choose(rng).unwrap();
                let mut account = match asset.accounts.first() {
                    Some(a) => a.clone(),
                    None => continue,
                };
                account.name = format!("acct-{n}");
                delta.accounts.push(AssetAccount {
                    asset: asset.name.clone(),
                    account,
                });
            }
            _ => {
                let asset = base.assets.choose(rng).unwrap();
                if let Some(account) = asset.accounts.first() {
                    delta.remove.push(Removal {
                        kind: EntityKind::Account,
                        name: format!("{}/{}", asset.name, account.name),
                    });
                }
            }
        }
    }
    delta
}

/// Every user's list, and decisions on a sample of (user, asset) pairs.
fn answers(policy: &Policy, at: DateTime<Utc>, seed: u64) -> Vec<String> {
    let mut out = Vec::new();
    for user in policy.doc.users.iter() {
        let listing = policy.list(&user.username, at).unwrap();
        for asset in listing.iter() {
            let accounts: Vec<String> = asset
                .accounts
                .iter()
                .map(|g| {
                    format!(
                        "{}:{:?}:{:?}",
                        g.account.name(),
                        g.protocols.iter().collect::<Vec<_>>(),
                        g.actions.iter().collect::<Vec<_>>()
                    )
                })
                .collect();
            out.push(format!(
                "list {} {} {accounts:?}",
                user.username, asset.asset.name
            ));
        }
    }
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..300 {
        let user = &policy.doc.users.choose(&mut rng).unwrap().username;
        let asset = policy.doc.assets.choose(&mut rng).unwrap();
        let account = asset.accounts.choose(&mut rng).map(|a| a.name.as_str());
        let query = Query {
            user,
            asset: &asset.name,
            account,
            protocol: Some(Protocol::Ssh),
            action: *Action::ALL.choose(&mut rng).unwrap(),
            at,
        };
        out.push(format!(
            "decide {user} {} {:?}",
            asset.name,
            policy.decide(&query)
        ));
    }
    out
}

#[test]
fn deltas_applied_in_place_answer_as_a_full_rebuild() {
    let params = generate::Params::FULL.divided(200);
    let at = generate::reference_time();
    let mut rng = StdRng::seed_from_u64(20);
    let mut base = Policy::from_received(generate::generate(&params), "base").unwrap();
    let (mut applied, mut refused, mut shared, mut in_place) = (0, 0, 0, 0);
    let settings = NssSettings::default();
    let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
    let mut nss = NssData::from_policy(&base, &mut ids, &settings).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nss.db");
    let mut writer = CacheWriter::write_full(&path, &nss).unwrap();
    let (mut users_since, mut groups_since) = (BTreeSet::new(), BTreeSet::new());
    let (mut overlays, mut full_writes) = (0, 0);
    for n in 0..100 {
        let delta = random_delta(&base.doc.to_document(), &mut rng, n);
        let incremental = base.apply_delta(&delta, "delta");
        let full = full_path(&base, &delta);
        match (incremental, full) {
            (Ok(incremental), Ok(full)) => {
                assert_eq!(incremental.doc, full.doc, "delta {n}: documents differ");
                let when = at + Duration::hours(rng.gen_range(-48..48));
                let seed = rng.gen();
                assert_eq!(
                    answers(&incremental, when, seed),
                    answers(&full, when, seed),
                    "delta {n}: answers differ: {delta:?}"
                );
                if incremental.doc.assets.same(&base.doc.assets) {
                    shared += 1;
                }
                // The NSS entries: updated in place, or made again.
                let mut ids_full = ids.clone();
                let from_scratch = NssData::from_policy(&incremental, &mut ids_full, &settings);
                let mut updated = nss.clone();
                if let Some(touched) = updated
                    .update_from_policy(&base, &incremental, &mut ids, &settings)
                    .unwrap()
                {
                    assert_eq!(
                        updated,
                        from_scratch.unwrap(),
                        "delta {n}: NSS entries differ: {delta:?}"
                    );
                    for kind in [IdKind::User, IdKind::Group] {
                        assert!(
                            ids.entries(kind).eq(ids_full.entries(kind)),
                            "delta {n}: id maps differ"
                        );
                    }
                    // On disk: the entries changed since the last full
                    // write go to the overlay, while it stays small.
                    users_since.extend(touched.users);
                    groups_since.extend(touched.groups);
                    let changed = NssData {
                        users: users_since
                            .iter()
                            .map(|&i| updated.users[i].clone())
                            .collect(),
                        groups: groups_since
                            .iter()
                            .map(|&i| updated.groups[i].clone())
                            .collect(),
                    };
                    if writer.write_overlay(&changed).unwrap() {
                        overlays += 1;
                    } else {
                        writer = CacheWriter::write_full(&path, &updated).unwrap();
                        (users_since, groups_since) = Default::default();
                        full_writes += 1;
                    }
                    nss = updated;
                    in_place += 1;
                } else {
                    assert_eq!(updated, nss, "delta {n}: a refused update changed nothing");
                    nss = NssData::from_policy(&incremental, &mut ids, &settings).unwrap();
                    writer = CacheWriter::write_full(&path, &nss).unwrap();
                    (users_since, groups_since) = Default::default();
                }
                assert_view_answers_as(&path, &nss, n);
                applied += 1;
                // Go on from the incremental one: deltas pile up.
                base = incremental;
            }
            (Err(_), Err(_)) => refused += 1,
            (incremental, full) => panic!(
                "delta {n}: incremental {:?} but full {:?}: {delta:?}",
                incremental.map(|_| "ok"),
                full.map(|_| "ok")
            ),
        }
    }
    // The run covers both paths and refusals, and overlays piled up.
    assert!(
        applied >= 30 && refused >= 10 && shared >= 15 && in_place >= 10 && overlays >= 10,
        "applied {applied}, refused {refused}, shared {shared}, NSS in place {in_place}, \
         overlays {overlays} (full writes for size {full_writes})"
    );
}

/// The cache at `path` with its overlay answers every lookup as a cache
/// written from scratch from `data`.
fn assert_view_answers_as(path: &Path, data: &NssData, n: usize) {
    let view = NssView::open(path, &overlay_path(path)).unwrap();
    let scratch = NssCache::from_bytes(data.encode().unwrap()).unwrap();
    assert_eq!(
        view.to_data().unwrap(),
        scratch.to_data().unwrap(),
        "delta {n}: the cache and its overlay differ from a cache from scratch"
    );
    for user in &data.users {
        let by_name = view.user_by_name(&user.name).unwrap().map(|u| u.owned());
        assert_eq!(by_name.as_ref(), Some(user), "delta {n}: {}", user.name);
        let by_uid = view.user_by_uid(user.uid).unwrap().map(|u| u.owned());
        assert_eq!(by_uid.as_ref(), Some(user), "delta {n}: uid {}", user.uid);
    }
    for group in &data.groups {
        let by_name = view.group_by_name(&group.name).unwrap().map(|g| g.owned());
        assert_eq!(by_name.as_ref(), Some(group), "delta {n}: {}", group.name);
        let by_gid = view.group_by_gid(group.gid).unwrap().map(|g| g.owned());
        assert_eq!(by_gid.as_ref(), Some(group), "delta {n}: gid {}", group.gid);
    }
    assert!(view.user_by_name("no-such-user").unwrap().is_none());
    assert!(view.user_by_uid(1).unwrap().is_none());
}

/// Adding a user shares the assets, the nodes and their indexes: nothing
/// of them is copied.
#[test]
fn a_new_user_shares_the_assets() {
    let base = Policy::from_received(
        generate::generate(&generate::Params::FULL.divided(500)),
        "base",
    )
    .unwrap();
    let mut delta = empty_delta();
    let mut user = base.doc.users[0].as_ref().clone();
    user.username = "newcomer".into();
    delta.upsert.users.push(user);
    let next = base.apply_delta(&delta, "delta").unwrap();
    assert!(next.doc.assets.same(&base.doc.assets));
    assert!(next.doc.grants.same(&base.doc.grants));
    assert!(!next.doc.users.same(&base.doc.users));
    assert_eq!(next.doc.users.len(), base.doc.users.len() + 1);
    assert!(next.user("newcomer").is_some());
    assert!(
        base.user("newcomer").is_none(),
        "the old policy is unchanged"
    );
}
