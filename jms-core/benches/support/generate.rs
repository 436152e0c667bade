//! A realistic, deterministic policy generator, shared by the `gen_policy`
//! example and the `grant_engine` bench (each includes this file with
//! `#[path = …] mod generate;`).
//!
//! Shape: a node tree under `/Default` (environment / region / service /
//! cluster / rack / …), assets in 1-2 nodes each (mostly leaves), 1-3
//! accounts per asset, users in 1-3 groups (a few groups are much bigger
//! than the rest), grants naming a few users, groups, assets and nodes
//! (nodes mostly at depth >= 3; `/Default` is depth 1), with every account
//! alias, protocol and action mix, some date windows, some disabled and a
//! few with an empty required part. Everything is relative to
//! [`reference_time`], so a query at that time sees a stable picture.
#![allow(dead_code)] // each includer uses part of it

use std::path::Path;

use chrono::{DateTime, Duration, TimeZone, Utc};
use jms_core::model::{
    Account, ActionChoice, Asset, AssetProtocol, CommandFilter, FilterAction, Grant,
    PolicyDocument, Protocol, ProtocolChoice, Secret, SecretType, Timestamp, User, UserGroup,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

/// Sizes of a generated policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    pub users: usize,
    pub groups: usize,
    pub assets: usize,
    pub grants: usize,
    /// Levels of the node tree, `/Default` being level 1.
    pub depth: usize,
    pub seed: u64,
}

impl Params {
    /// The size the issue asks the engine to handle.
    pub const FULL: Params = Params {
        users: 10_000,
        groups: 500,
        assets: 100_000,
        grants: 10_000,
        depth: 6,
        seed: 1,
    };

    /// Every count divided by `by` (at least 1), same depth and seed.
    pub fn divided(self, by: usize) -> Params {
        let div = |n: usize| (n / by).max(1);
        Params {
            users: div(self.users),
            groups: div(self.groups),
            assets: div(self.assets),
            grants: div(self.grants),
            ..self
        }
    }
}

/// The instant the generated date windows are relative to; query at it.
pub fn reference_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0)
        .single()
        .expect("valid date")
}

const ENVIRONMENTS: &[&str] = &[
    "prod", "staging", "dev", "test", "dr", "perf", "sandbox", "corp",
];
const REGIONS: &[&str] = &[
    "beijing",
    "shanghai",
    "shenzhen",
    "hangzhou",
    "frankfurt",
    "virginia",
    "oregon",
    "singapore",
    "tokyo",
    "london",
];
const SERVICES: &[&str] = &[
    "web",
    "api",
    "db",
    "cache",
    "mq",
    "search",
    "payments",
    "billing",
    "auth",
    "storage",
    "cdn",
    "ml",
    "batch",
    "logging",
    "monitoring",
];
const CLUSTERS: &[&str] = &[
    "cluster-a",
    "cluster-b",
    "cluster-c",
    "cluster-d",
    "cluster-e",
    "cluster-f",
];
const RACKS: &[&str] = &[
    "rack-01", "rack-02", "rack-03", "rack-04", "rack-05", "rack-06", "rack-07", "rack-08",
];
const DEEPER: &[&str] = &["pool-1", "pool-2", "pool-3", "pool-4", "pool-5", "pool-6"];

const HOST_KINDS: &[&str] = &[
    "web", "db", "app", "cache", "k8s-node", "gpu", "mq", "es", "lb", "jenkins",
];
const ACCOUNT_NAMES: &[&str] = &[
    "root", "deploy", "app", "admin", "ubuntu", "centos", "ops", "backup", "www-data", "postgres",
    "oracle",
];
const FIRST_NAMES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "nina", "oscar", "peggy", "rupert", "sybil", "trent", "victor", "wendy", "li", "wei", "fang",
    "jun", "min", "xiu", "hao",
];
const LAST_NAMES: &[&str] = &[
    "liu", "wang", "zhang", "chen", "yang", "zhao", "huang", "zhou", "wu", "smith", "jones",
    "brown", "taylor", "miller", "garcia", "martin", "muller", "rossi",
];
const TEAMS: &[&str] = &[
    "ops",
    "dba",
    "dev",
    "sre",
    "qa",
    "sec",
    "net",
    "data",
    "ml",
    "support",
    "finance-it",
    "platform",
];

fn level_names(level: usize) -> &'static [&'static str] {
    match level {
        2 => ENVIRONMENTS,
        3 => REGIONS,
        4 => SERVICES,
        5 => CLUSTERS,
        6 => RACKS,
        _ => DEEPER,
    }
}

/// The node tree: paths with their depth (1 for `/Default`).
struct Tree {
    paths: Vec<String>,
    /// Node indexes by depth (index 0 unused).
    by_depth: Vec<Vec<usize>>,
    leaves: Vec<usize>,
}

impl Tree {
    fn generate(rng: &mut StdRng, depth: usize, assets: usize) -> Tree {
        // About one node per 25 assets; a uniform 1..=2b-1 children per
        // node gives b children on average.
        let target = (assets / 25).max(8) as f64;
        let levels_below = depth.saturating_sub(1).max(1) as f64;
        let mean = target.powf(1.0 / levels_below).max(1.0);
        let widest = ((2.0 * mean - 1.0).round() as usize).max(1);

        let mut tree = Tree {
            paths: vec!["/Default".to_string()],
            by_depth: vec![Vec::new(), vec![0]],
            leaves: Vec::new(),
        };
        for level in 2..=depth {
            let mut this_level = Vec::new();
            let names = level_names(level);
            for &parent in &tree.by_depth[level - 1] {
                let children = rng.gen_range(1..=widest);
                let offset = rng.gen_range(0..names.len());
                for i in 0..children {
                    let base = names[(offset + i) % names.len()];
                    let name = if i < names.len() {
                        base.to_string()
                    } else {
                        format!("{base}-{}", i / names.len() + 1)
                    };
                    let path = format!("{}/{name}", tree.paths[parent]);
                    this_level.push(tree.paths.len());
                    tree.paths.push(path);
                }
            }
            tree.by_depth.push(this_level);
        }
        tree.leaves = tree.by_depth[depth].clone();
        tree
    }

    fn depth(&self) -> usize {
        self.by_depth.len() - 1
    }

    /// A node at depth >= 3 (or the deepest available), deeper ones more
    /// likely: weight `d - 2` for depth `d`.
    fn deep_node(&self, rng: &mut StdRng) -> usize {
        let max = self.depth();
        if max < 3 {
            return *self.by_depth[max]
                .choose(rng)
                .expect("a level is never empty");
        }
        let total: usize = (3..=max).map(|d| d - 2).sum();
        let mut pick = rng.gen_range(0..total);
        for d in 3..=max {
            if pick < d - 2 {
                return *self.by_depth[d]
                    .choose(rng)
                    .expect("a level is never empty");
            }
            pick -= d - 2;
        }
        unreachable!("pick < total")
    }
}

fn one_of<'a>(rng: &mut StdRng, items: &[&'a str]) -> &'a str {
    items.choose(rng).expect("non-empty list")
}

/// `count` distinct indexes below `n`, popular ones (small indexes) more
/// likely when `skewed`.
fn distinct(rng: &mut StdRng, n: usize, count: usize, skewed: bool) -> Vec<usize> {
    let count = count.min(n);
    let mut picked = Vec::with_capacity(count);
    while picked.len() < count {
        let i = if skewed {
            let u: f64 = rng.gen();
            ((u * u * n as f64) as usize).min(n - 1)
        } else {
            rng.gen_range(0..n)
        };
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked
}

/// An index into `weights`, chosen proportionally to them.
fn weighted(rng: &mut StdRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut pick = rng.gen_range(0..total);
    for (i, w) in weights.iter().enumerate() {
        if pick < *w {
            return i;
        }
        pick -= w;
    }
    unreachable!("pick < total")
}

fn hex(rng: &mut StdRng, len: usize) -> String {
    (0..len)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).expect("digit"))
        .collect()
}

fn at(days: i64) -> Option<Timestamp> {
    Some(Timestamp(reference_time() + Duration::days(days)))
}

/// Generates a policy that passes `Policy::from_document`.
pub fn generate(params: &Params) -> PolicyDocument {
    assert!(params.depth >= 1, "depth must be at least 1");
    let mut rng = StdRng::seed_from_u64(params.seed);
    let tree = Tree::generate(&mut rng, params.depth, params.assets);

    let user_groups: Vec<UserGroup> = (0..params.groups)
        .map(|i| UserGroup {
            name: format!("{}-{i:03}", one_of(&mut rng, TEAMS)),
            comment: if rng.gen_bool(0.2) {
                format!("team {i}")
            } else {
                String::new()
            },
        })
        .collect();

    let users: Vec<User> = (0..params.users)
        .map(|i| {
            let (first, last) = (one_of(&mut rng, FIRST_NAMES), one_of(&mut rng, LAST_NAMES));
            let username = format!("{first}.{last}{i}");
            let group_count = if user_groups.is_empty() {
                0
            } else {
                rng.gen_range(1..=3)
            };
            let groups = distinct(&mut rng, user_groups.len(), group_count, true)
                .into_iter()
                .map(|g| user_groups[g].name.clone())
                .collect();
            let date_expired = match rng.gen_range(0..100) {
                0 => at(-rng.gen_range(1..365)),
                1..=3 => at(rng.gen_range(1..365)),
                _ => None,
            };
            let public_keys = if rng.gen_bool(0.3) {
                vec![format!(
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{} {username}@laptop",
                    hex(&mut rng, 43)
                )]
            } else {
                Vec::new()
            };
            User {
                name: format!("{} {}", capitalized(first), capitalized(last)),
                email: Some(format!("{username}@example.com")),
                is_active: !rng.gen_bool(0.01),
                date_expired,
                groups,
                public_keys,
                password_hash: None,
                totp_secret: None,
                login_acl: Default::default(),
                username,
            }
        })
        .collect();

    let assets: Vec<Asset> = (0..params.assets)
        .map(|i| {
            let node_count = if rng.gen_bool(0.15) { 2 } else { 1 };
            let mut nodes: Vec<String> = Vec::with_capacity(node_count);
            for _attempt in 0..20 {
                if nodes.len() == node_count {
                    break;
                }
                let node = if rng.gen_bool(0.75) || tree.depth() < 3 {
                    *tree.leaves.choose(&mut rng).expect("a tree has leaves")
                } else {
                    tree.deep_node(&mut rng)
                };
                if !nodes.contains(&tree.paths[node]) {
                    nodes.push(tree.paths[node].clone());
                }
            }
            let port = if rng.gen_bool(0.1) { 2222 } else { 22 };
            let protocols = match rng.gen_range(0..100) {
                0..=69 => vec![Protocol::Ssh, Protocol::Sftp],
                70..=94 => vec![Protocol::Ssh],
                _ => vec![Protocol::Sftp],
            };
            let account_count = rng.gen_range(1..=3);
            let mut accounts: Vec<Account> =
                distinct(&mut rng, ACCOUNT_NAMES.len(), account_count, true)
                    .into_iter()
                    .map(|a| {
                        let name = ACCOUNT_NAMES[a];
                        account(&mut rng, name, name)
                    })
                    .collect();
            // Some assets carry a personal account (what `@USER` finds).
            if !users.is_empty() && rng.gen_bool(0.05) {
                let user = &users[rng.gen_range(0..users.len())].username;
                accounts.pop();
                accounts.push(account(&mut rng, &format!("u-{user}"), user));
            }
            let kind = one_of(&mut rng, HOST_KINDS);
            Asset {
                name: format!("{kind}-{i:06}"),
                address: if rng.gen_bool(0.8) {
                    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
                } else {
                    format!("{kind}-{i:06}.example.internal")
                },
                protocols: protocols
                    .into_iter()
                    .map(|name| AssetProtocol { name, port })
                    .collect(),
                nodes,
                is_active: !rng.gen_bool(0.01),
                accounts,
                host_keys: Vec::new(),
                zone: None,
            }
        })
        .collect();

    let grants: Vec<Grant> = (0..params.grants)
        .map(|i| grant(&mut rng, i, &tree, &users, &user_groups, &assets))
        .collect();

    let command_filters = (0..(params.grants / 1000).max(2))
        .map(|i| CommandFilter {
            name: format!("filter-{i:03}"),
            priority: if i == 0 { 10 } else { rng.gen_range(20..=90) },
            action: if i % 5 == 4 {
                FilterAction::Allow
            } else {
                FilterAction::Deny
            },
            rules: vec![
                r"^\s*rm\s+-rf\s+/\s*$".to_string(),
                format!(r"^\s*(shutdown|reboot|halt)\b.*{i}"),
            ],
            users: vec!["@ALL".to_string()],
            user_groups: Vec::new(),
            assets: vec!["@ALL".to_string()],
            nodes: Vec::new(),
            accounts: vec!["@ALL".to_string()],
            is_active: true,
        })
        .collect();

    PolicyDocument {
        users,
        user_groups,
        nodes: tree.paths,
        assets,
        grants,
        command_filters,
        plans: None,
    }
}

fn capitalized(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(c) => c.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn account(rng: &mut StdRng, name: &str, username: &str) -> Account {
    let secret_type = if name == "root" || rng.gen_bool(0.5) {
        SecretType::Password
    } else {
        SecretType::SshKey
    };
    let secret = match secret_type {
        SecretType::Password => format!("pw-{}", hex(rng, 12)),
        SecretType::SshKey => format!("fake-ssh-key-{}", hex(rng, 16)),
    };
    Account {
        name: name.to_string(),
        username: username.to_string(),
        secret_type,
        secret: Some(Secret::new(secret)),
        secret_file: None,
        privileged: name == "root",
        shell: None,
        groups: Vec::new(),
        sudo: None,
    }
}

fn grant(
    rng: &mut StdRng,
    i: usize,
    tree: &Tree,
    users: &[User],
    groups: &[UserGroup],
    assets: &[Asset],
) -> Grant {
    // About 1 in 100 grants leaves one required part empty on purpose.
    let empty_part = if rng.gen_bool(0.01) {
        Some(rng.gen_range(0..5))
    } else {
        None
    };

    let mut user_count = weighted(rng, &[35, 30, 20, 15]);
    let mut group_count = weighted(rng, &[40, 40, 20]);
    if user_count + group_count == 0 {
        if rng.gen_bool(0.5) && !users.is_empty() {
            user_count = 1;
        } else {
            group_count = 1;
        }
    }
    let mut asset_count = if rng.gen_bool(0.4) {
        0
    } else {
        rng.gen_range(1..=5)
    };
    let node_count = weighted(rng, &[30, 40, 20, 10]);
    if asset_count + node_count == 0 {
        asset_count = 1;
    }

    let mut grant_users: Vec<String> = distinct(rng, users.len(), user_count, false)
        .into_iter()
        .map(|u| users[u].username.clone())
        .collect();
    let mut grant_groups: Vec<String> = distinct(rng, groups.len(), group_count, false)
        .into_iter()
        .map(|g| groups[g].name.clone())
        .collect();
    let mut grant_assets: Vec<String> = distinct(rng, assets.len(), asset_count, false)
        .into_iter()
        .map(|a| assets[a].name.clone())
        .collect();
    let mut grant_nodes: Vec<String> = Vec::with_capacity(node_count);
    for _attempt in 0..20 {
        if grant_nodes.len() == node_count {
            break;
        }
        // A node at depth 2 covers a whole environment: very rare.
        let node = if tree.depth() >= 2 && rng.gen_bool(0.001) {
            *tree.by_depth[2]
                .choose(rng)
                .expect("a level is never empty")
        } else {
            tree.deep_node(rng)
        };
        if !grant_nodes.contains(&tree.paths[node]) {
            grant_nodes.push(tree.paths[node].clone());
        }
    }

    let mut accounts: Vec<String> = match weighted(rng, &[35, 20, 10, 10, 5, 5, 10, 5]) {
        0 => vec!["@ALL".into()],
        1 => {
            let count = rng.gen_range(1..=2);
            distinct(rng, ACCOUNT_NAMES.len(), count, true)
                .into_iter()
                .map(|a| ACCOUNT_NAMES[a].to_string())
                .collect()
        }
        2 => vec!["@ALL".into(), "@INPUT".into()],
        3 => vec!["@USER".into()],
        4 => vec!["@INPUT".into()],
        5 => vec!["@ANON".into()],
        6 => vec![one_of(rng, ACCOUNT_NAMES).to_string(), "@USER".into()],
        _ => vec!["@INPUT".into(), "@ANON".into(), "@USER".into()],
    };
    let mut protocols = match weighted(rng, &[50, 30, 10, 10]) {
        0 => vec![ProtocolChoice::All],
        1 => vec![ProtocolChoice::Ssh],
        2 => vec![ProtocolChoice::Sftp],
        _ => vec![ProtocolChoice::Ssh, ProtocolChoice::Sftp],
    };
    let mut actions = match weighted(rng, &[30, 25, 25, 20]) {
        0 => vec![ActionChoice::All],
        1 => vec![ActionChoice::Connect],
        2 => vec![
            ActionChoice::Connect,
            ActionChoice::Upload,
            ActionChoice::Download,
        ],
        _ => {
            const EACH: [ActionChoice; 7] = [
                ActionChoice::Connect,
                ActionChoice::Upload,
                ActionChoice::Download,
                ActionChoice::Delete,
                ActionChoice::Copy,
                ActionChoice::Paste,
                ActionChoice::Share,
            ];
            let count = rng.gen_range(1..=4);
            distinct(rng, EACH.len(), count, false)
                .into_iter()
                .map(|a| EACH[a])
                .collect()
        }
    };
    match empty_part {
        Some(0) => {
            grant_users.clear();
            grant_groups.clear();
        }
        Some(1) => {
            grant_assets.clear();
            grant_nodes.clear();
        }
        Some(2) => accounts.clear(),
        Some(3) => protocols.clear(),
        Some(4) => actions.clear(),
        _ => {}
    }

    let (date_start, date_expired) = match rng.gen_range(0..100) {
        0..=7 => (at(-rng.gen_range(1..400)), at(rng.gen_range(1..400))),
        8..=12 => (at(-rng.gen_range(400..800)), at(-rng.gen_range(1..300))),
        13..=15 => (at(rng.gen_range(1..60)), at(rng.gen_range(60..400))),
        16..=19 => (at(-rng.gen_range(1..800)), None),
        _ => (None, None),
    };
    let team = one_of(rng, TEAMS);
    let env = one_of(rng, ENVIRONMENTS);
    Grant {
        name: format!("{team}-{env}-{i:05}"),
        users: grant_users,
        user_groups: grant_groups,
        assets: grant_assets,
        nodes: grant_nodes,
        accounts,
        protocols,
        actions,
        date_start,
        date_expired,
        is_active: !rng.gen_bool(0.03),
        comment: if rng.gen_bool(0.1) {
            format!("ticket OPS-{}", rng.gen_range(1000..99999))
        } else {
            String::new()
        },
    }
}

/// Writes `doc` as JSON when `path` ends in `.json`, else as YAML.
pub fn write_policy(doc: &PolicyDocument, path: &Path) -> std::io::Result<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        serde_json::to_writer_pretty(&mut file, doc).map_err(std::io::Error::other)?;
    } else {
        serde_yaml_ng::to_writer(&mut file, doc).map_err(std::io::Error::other)?;
    }
    std::io::Write::flush(&mut file)
}
