//! Applying a policy on the bastion: stable uids/gids from the id map, then
//! the public NSS cache, written atomically. A jms user or group whose name
//! or id is a local account's (`files`), or whose server-assigned id is out
//! of the configured range, is never published (an error is logged: an
//! alarm for the admin); without a cache entry it is no jms user at all.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use jms_core::local_accounts::LocalAccounts;
use jms_core::nss_cache::{CacheWriter, NssData, NssSettings};
use jms_core::uids::{IdAllocator, IdKind};
use jms_core::Policy;
use jms_sync::bundle::UnixIds;

use crate::daemon::config::AgentdConfig;

/// Assigns ids to new names (saving the id map first, so an id handed out
/// is never handed out again) and rewrites the NSS cache. Answers jms
/// user names by uid, as published.
pub fn publish(policy: &Policy, config: &AgentdConfig) -> Result<UsersByUid> {
    publish_with_ids(policy, config, None)
}

/// The local accounts: /etc/passwd and /etc/group.
fn local_accounts() -> Result<LocalAccounts> {
    LocalAccounts::load_system().context("reading the local accounts (/etc/passwd, /etc/group)")
}

/// As [`publish`], first adopting the ids the central server assigned. The
/// server's ids win over local ones (see
/// [`IdAllocator::adopt_from_server`]); every move is logged.
pub fn publish_with_ids(
    policy: &Policy,
    config: &AgentdConfig,
    assigned: Option<&UnixIds>,
) -> Result<UsersByUid> {
    let (users, _) = publish_over(&mut None, policy, config, assigned)?;
    Ok(users)
}

/// jms user names by uid, as published: the map made at the last full
/// write of the NSS cache (shared, not copied) and the users added since.
#[derive(Debug, Clone, Default)]
pub struct UsersByUid {
    base: Arc<HashMap<u32, String>>,
    since: HashMap<u32, String>,
}

impl UsersByUid {
    fn new(base: HashMap<u32, String>) -> UsersByUid {
        UsersByUid {
            base: Arc::new(base),
            since: HashMap::new(),
        }
    }

    /// The jms user name of `uid`.
    pub fn get(&self, uid: u32) -> Option<&str> {
        self.since
            .get(&uid)
            .or_else(|| self.base.get(&uid))
            .map(String::as_str)
    }

    /// Whether `name` is a published jms user.
    pub fn contains_name(&self, name: &str) -> bool {
        self.since
            .values()
            .chain(self.base.values())
            .any(|n| n == name)
    }

    /// Every (uid, name), owned.
    pub fn to_map(&self) -> HashMap<u32, String> {
        let mut map = self.base.as_ref().clone();
        map.extend(self.since.iter().map(|(k, v)| (*k, v.clone())));
        map
    }
}

impl PartialEq for UsersByUid {
    fn eq(&self, other: &Self) -> bool {
        self.to_map() == other.to_map()
    }
}

/// Publishes policy after policy, each from what the one before left:
/// the id map stays in memory (read once), and a policy made by a delta
/// from the last one published changes only the entries of the users it
/// changed ([`NssData::update_from_policy`]), which go to the cache's
/// overlay ([`CacheWriter::write_overlay`]) instead of a new cache;
/// anything else takes the full path. Readers see the same entries either
/// way.
#[derive(Default)]
pub struct Publisher {
    last: Mutex<Option<Published>>,
    /// Publishes that updated the entries in place.
    in_place: std::sync::atomic::AtomicUsize,
    /// Publishes that wrote only the overlay.
    overlaid: std::sync::atomic::AtomicUsize,
}

/// What the last publish made: the policy, the id map, the entries before
/// the local accounts were taken out.
struct Published {
    policy: Policy,
    settings: NssSettings,
    ids: IdAllocator,
    data: NssData,
    local: LocalAccounts,
    /// The cache written last, when it holds `data` as it was then (no
    /// entry kept off): overlays go on top of it.
    writer: Option<CacheWriter>,
    /// Positions in `data` of the entries changed since `writer` wrote.
    users_since: BTreeSet<usize>,
    groups_since: BTreeSet<usize>,
    users: UsersByUid,
}

/// How a publish went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Entries made again, whole cache written.
    Full,
    /// Entries updated in place, whole cache written.
    InPlace,
    /// Entries updated in place, only the overlay written.
    Overlay,
}

impl Publisher {
    /// As [`publish_with_ids`]; answers jms user names by uid, as published.
    pub fn publish(
        &self,
        policy: &Policy,
        config: &AgentdConfig,
        assigned: Option<&UnixIds>,
    ) -> Result<UsersByUid> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let (users, how) = publish_over(&mut last, policy, config, assigned)?;
        if how != Route::Full {
            self.in_place.fetch_add(1, Relaxed);
        }
        if how == Route::Overlay {
            self.overlaid.fetch_add(1, Relaxed);
        }
        Ok(users)
    }
}

/// Publishes `policy` from `last` (taken; left `None` on error, so the
/// next publish starts from the files again) and keeps what it made there.
/// Answers jms user names by uid, as published, and which path it took.
fn publish_over(
    last: &mut Option<Published>,
    policy: &Policy,
    config: &AgentdConfig,
    assigned: Option<&UnixIds>,
) -> Result<(UsersByUid, Route)> {
    let local = local_accounts()?;
    let settings = config.nss_settings();
    let map_path = config.state_dir.join("ids.json");
    let previous = last.take().filter(|p| p.settings == settings);
    let (mut ids, previous) = match previous {
        Some(mut p) => (
            std::mem::replace(&mut p.ids, IdAllocator::new(config.ids)?),
            Some(p),
        ),
        None => (
            IdAllocator::load(&map_path, config.ids).context("loading the id map")?,
            None,
        ),
    };
    // Names whose server id was refused: not published with another id.
    let mut refused: [HashSet<String>; 2] = Default::default();
    // An id that moved may be any entry's: then every entry is made again.
    let mut moved_any = false;
    if let Some(assigned) = assigned {
        for (slot, kind, table) in [
            (0, IdKind::User, &assigned.users),
            (1, IdKind::Group, &assigned.groups),
        ] {
            // Only the ids not adopted already (one pass, no lookups).
            for (name, id) in ids.differing(kind, table) {
                match ids.adopt_from_server(kind, name, id) {
                    Ok(moved) => {
                        moved_any |= !moved.is_empty();
                        for change in moved {
                            tracing::warn!("id map: the server's ids win: {change}");
                        }
                    }
                    Err(e) => {
                        tracing::error!(
                            alarm = "server_id_refused",
                            "not publishing `{name}`: the server's {e}"
                        );
                        refused[slot].insert(name.to_string());
                    }
                }
            }
        }
    }
    let mut updated = None;
    if let Some(mut p) = previous.filter(|_| !moved_any) {
        if let Some(touched) = p
            .data
            .update_from_policy(&p.policy, policy, &mut ids, &settings)
            .context("building the NSS cache")?
        {
            let clear = p.local == local
                && refused.iter().all(HashSet::is_empty)
                && touched.users.iter().all(|&i| {
                    let u = &p.data.users[i];
                    local.user_collision(&u.name, u.uid).is_none()
                })
                && touched.groups.iter().all(|&i| {
                    let g = &p.data.groups[i];
                    local.group_collision(&g.name, g.gid).is_none()
                });
            // Most users changed (a reload from a file): no overlay.
            let few = p.users_since.len() + touched.users.len() <= p.data.users.len() / 4 + 16;
            if let (true, true, Some(writer)) = (clear, few, &p.writer) {
                p.users_since.extend(&touched.users);
                p.groups_since.extend(&touched.groups);
                let changed = NssData {
                    users: p
                        .users_since
                        .iter()
                        .map(|&i| p.data.users[i].clone())
                        .collect(),
                    groups: p
                        .groups_since
                        .iter()
                        .map(|&i| p.data.groups[i].clone())
                        .collect(),
                };
                // An id handed out here is saved before it is published;
                // ids adopted from the server are adopted again at start
                // from the signed bundle and deltas, and saved at the next
                // full write.
                if ids.assigned_here() {
                    ids.save(&map_path).context("saving the id map")?;
                }
                if writer
                    .write_overlay(&changed)
                    .with_context(|| format!("writing {}", config.nss_cache.display()))?
                {
                    for &i in &touched.users {
                        let user = &p.data.users[i];
                        p.users.since.insert(user.uid, user.name.clone());
                    }
                    p.policy = policy.clone();
                    p.ids = ids;
                    p.local = local;
                    let users = p.users.clone();
                    *last = Some(p);
                    return Ok((users, Route::Overlay));
                }
            }
            updated = Some(p.data);
        }
    }
    let how = match updated {
        Some(_) => Route::InPlace,
        None => Route::Full,
    };
    let data = match updated {
        Some(data) => data,
        None => {
            NssData::from_policy(policy, &mut ids, &settings).context("building the NSS cache")?
        }
    };
    if ids.changed() {
        ids.save(&map_path).context("saving the id map")?;
    }
    // What is published: the entries, less those colliding with local
    // accounts or refused (a copy only when there are some).
    let clear =
        data.users.iter().all(|u| {
            !refused[0].contains(&u.name) && local.user_collision(&u.name, u.uid).is_none()
        }) && data.groups.iter().all(|g| {
            !refused[1].contains(&g.name) && local.group_collision(&g.name, g.gid).is_none()
        });
    let (writer, users) = if clear {
        let writer = write_cache(&config.nss_cache, &data)?;
        (Some(writer), users_by_uid(&data))
    } else {
        let mut published = data.clone();
        keep_off_local_accounts(&mut published, &local, &refused, &settings.primary_group)?;
        write_cache(&config.nss_cache, &published)?;
        (None, users_by_uid(&published))
    };
    let users = UsersByUid::new(users);
    *last = Some(Published {
        policy: policy.clone(),
        settings,
        ids,
        data,
        local,
        writer,
        users_since: BTreeSet::new(),
        groups_since: BTreeSet::new(),
        users: users.clone(),
    });
    Ok((users, how))
}

/// Removes from `data` every user and group that collides with a local
/// account (name or id) or whose server id was refused, logging each as an
/// alarm; removed users are no member of any published group. A collision
/// of the primary group is fatal: every jms user would lose the
/// `Match Group` that forces jms-agent.
fn keep_off_local_accounts(
    data: &mut NssData,
    local: &LocalAccounts,
    refused: &[HashSet<String>; 2],
    primary: &str,
) -> Result<()> {
    let mut dropped = HashSet::new();
    data.users.retain(|user| {
        let why = if refused[0].contains(&user.name) {
            Some(format!(
                "jms user `{}`: its server uid was refused",
                user.name
            ))
        } else {
            local.user_collision(&user.name, user.uid)
        };
        match why {
            Some(why) => {
                tracing::error!(
                    alarm = "local_account_collision",
                    "not publishing {why}: rename the jms user or the local account"
                );
                dropped.insert(user.name.clone());
                false
            }
            None => true,
        }
    });
    let mut keep = Vec::with_capacity(data.groups.len());
    for mut group in std::mem::take(&mut data.groups) {
        let why = if refused[1].contains(&group.name) {
            Some(format!(
                "jms group `{}`: its server gid was refused",
                group.name
            ))
        } else {
            local.group_collision(&group.name, group.gid)
        };
        if let Some(why) = why {
            if group.name == primary {
                bail!("cannot publish the primary group: {why}; remove or rename the local group");
            }
            tracing::error!(
                alarm = "local_account_collision",
                "not publishing {why}: rename the jms group or the local group"
            );
            continue;
        }
        group.members.retain(|m| !dropped.contains(m));
        keep.push(group);
    }
    data.groups = keep;
    Ok(())
}

/// jms user names by uid, from what was published.
pub fn users_by_uid(data: &NssData) -> HashMap<u32, String> {
    data.users.iter().map(|u| (u.uid, u.name.clone())).collect()
}

/// Writes the whole cache (and an empty overlay).
fn write_cache(path: &Path, data: &NssData) -> Result<CacheWriter> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    CacheWriter::write_full(path, data).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jms_core::local_accounts::LocalTable;
    use jms_core::nss_cache::{NssGroup, NssUser};

    fn user(name: &str, uid: u32) -> NssUser {
        NssUser {
            name: name.into(),
            uid,
            gid: 200_000,
            gecos: String::new(),
            home: "/".into(),
            shell: "/usr/bin/jms-agent".into(),
        }
    }

    fn group(name: &str, gid: u32, members: &[&str]) -> NssGroup {
        NssGroup {
            name: name.into(),
            gid,
            members: members.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn local() -> LocalAccounts {
        LocalAccounts {
            users: LocalTable::parse("root:x:0:0::/root:/bin/sh\ndeploy:x:1000:1000::/:/bin/sh\n"),
            groups: LocalTable::parse("root:x:0:\nsudo:x:27:\n"),
        }
    }

    #[test]
    fn users_and_groups_colliding_with_local_accounts_are_not_published() {
        let mut data = NssData {
            users: vec![
                user("alice", 200_000),
                user("root", 200_001),
                user("deploy", 200_002),
                user("eve", 1000),
                user("srv", 200_003),
            ],
            groups: vec![
                group("jms-users", 200_000, &["alice", "root", "deploy"]),
                group("sudo", 200_001, &["alice"]),
                group("ops", 27, &["alice"]),
                group("dev", 200_002, &["alice", "root", "srv"]),
            ],
        };
        let refused = [HashSet::from(["srv".to_string()]), HashSet::new()];
        keep_off_local_accounts(&mut data, &local(), &refused, "jms-users").unwrap();
        let users: Vec<_> = data.users.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(users, ["alice"]);
        let groups: Vec<_> = data
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.members.clone()))
            .collect();
        assert_eq!(
            groups,
            [
                ("jms-users", vec!["alice".to_string()]),
                ("dev", vec!["alice".to_string()])
            ]
        );
    }

    fn policy(yaml: &str) -> Policy {
        Policy::parse(
            yaml,
            jms_core::Format::Yaml,
            "test",
            std::path::Path::new("."),
        )
        .unwrap()
    }

    fn view(path: &Path) -> jms_core::nss_cache::NssView {
        jms_core::nss_cache::NssView::open(path, &jms_core::nss_cache::overlay_path(path)).unwrap()
    }

    /// Policy after policy through one publisher (the second and third
    /// from deltas, updated in place, to the overlay) gives readers the
    /// entries a publish from scratch gives, with the same ids.
    #[test]
    fn a_publisher_writes_what_a_publish_from_scratch_writes() {
        use jms_core::model::PolicyDocument;
        use jms_sync::bundle::{Delta, EntityKind, Removal};
        let dir = tempfile::tempdir().unwrap();
        let config = |name: &str| -> AgentdConfig {
            let state = dir.path().join(name);
            std::fs::create_dir_all(&state).unwrap();
            toml::from_str(&format!(
                "state_dir = {:?}\nnss_cache = {:?}\n",
                state,
                state.join("nss.db")
            ))
            .unwrap()
        };
        let (kept, fresh) = (config("kept"), config("fresh"));
        let base = policy(
            "user_groups: [{name: ops}, {name: dev}]\n\
             users:\n\
             - {username: jmsa, groups: [ops]}\n\
             - {username: jmsb, groups: [dev, ops]}\n\
             - {username: jmsc}\n",
        );
        let delta = |users: &[(&str, &[&str])], removed: &[&str]| Delta {
            from_version: 1,
            to_version: 2,
            issued_at: chrono::Utc::now(),
            server_id: "test".into(),
            upsert: PolicyDocument {
                users: users
                    .iter()
                    .map(|(name, groups)| {
                        serde_json::from_value(serde_json::json!({
                            "username": name, "groups": groups, "name": format!("{name} (new)"),
                        }))
                        .unwrap()
                    })
                    .collect(),
                ..Default::default()
            },
            accounts: Vec::new(),
            remove: removed
                .iter()
                .map(|name| Removal {
                    kind: EntityKind::User,
                    name: name.to_string(),
                })
                .collect(),
            settings: serde_json::Value::Null,
            ids: Default::default(),
        };
        let publisher = Publisher::default();
        let mut current = base;
        let steps = [
            // A newcomer, and jmsc into ops (before jmsb's place? after).
            delta(&[("jmsd", &["ops"]), ("jmsc", &["ops", "dev"])], &[]),
            // jmsa leaves ops, then one removed (the full path).
            delta(&[("jmsa", &["dev"])], &[]),
            delta(&[], &["jmsb"]),
        ];
        publisher.publish(&current, &kept, None).unwrap();
        for (n, step) in steps.iter().enumerate() {
            current = current.apply_delta(step, "delta").unwrap();
            let by_uid = publisher.publish(&current, &kept, None).unwrap();
            // From scratch, with the id map the publisher saved.
            std::fs::copy(
                kept.state_dir.join("ids.json"),
                fresh.state_dir.join("ids.json"),
            )
            .unwrap();
            let fresh_by_uid = publish(&current, &fresh).unwrap();
            assert_eq!(by_uid, fresh_by_uid, "step {n}");
            assert_eq!(
                view(&kept.nss_cache).to_data().unwrap(),
                view(&fresh.nss_cache).to_data().unwrap(),
                "step {n}: the entries differ"
            );
        }
        // The first two deltas were applied in place, to the overlay; the
        // removal not.
        for counter in [&publisher.in_place, &publisher.overlaid] {
            assert_eq!(counter.load(std::sync::atomic::Ordering::Relaxed), 2);
        }
        let cache = view(&kept.nss_cache);
        let ops = cache.group_by_name("ops").unwrap().unwrap().owned();
        assert_eq!(ops.members, ["jmsc", "jmsd"]);
        assert!(cache.user_by_name("jmsb").unwrap().is_none());
    }

    #[test]
    fn a_primary_group_colliding_with_a_local_group_refuses_the_publish() {
        let mut data = NssData {
            users: vec![user("alice", 200_000)],
            groups: vec![group("sudo", 200_000, &["alice"])],
        };
        let err =
            keep_off_local_accounts(&mut data, &local(), &Default::default(), "sudo").unwrap_err();
        assert!(err.to_string().contains("primary group"), "{err}");
    }
}
