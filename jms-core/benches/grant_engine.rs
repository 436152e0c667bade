//! Benchmark of the grant engine at the size the issue asks for, and at
//! 1/100 of it: policy load time, decision and list latency, memory, and a
//! naive baseline (scan every grant) for the same decisions.
//!
//! `cargo bench -p jms-core --bench grant_engine [-- --quick]` (`--quick`
//! runs only the small size). A plain binary (`harness = false`), no
//! criterion: each query is timed on its own and percentiles come from the
//! sorted timings.

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jms_core::engine::{Decision, Query};
use jms_core::model::{
    alias, Action, ActionSet, Asset, Grant, PolicyDocument, Protocol, ProtocolSet, User,
};
use jms_core::Policy;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

#[path = "support/generate.rs"]
mod generate;

/// Targets from the issue (full size).
const DECIDE_P99_TARGET: Duration = Duration::from_micros(20);
const LIST_P99_TARGET: Duration = Duration::from_millis(10);
const LOAD_TARGET: Duration = Duration::from_secs(2);
const MEMORY_TARGET_MB: f64 = 400.0;

const DECIDE_QUERIES: usize = 200_000;
const LIST_QUERIES: usize = 2_000;
/// Assets the menu shows on one page.
const MENU_PAGE: usize = 50;
/// The naive baseline scans every grant: at full size it runs on this
/// many of the same queries (the first ones), else on all of them.
const NAIVE_QUERIES_FULL: usize = 20_000;

fn main() {
    let mut quick = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "--bench" => {} // cargo bench passes it
            other => eprintln!("grant_engine: ignoring argument `{other}` (only --quick is known)"),
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let full = generate::Params::FULL;
    let mut sizes = vec![("small", full.divided(100))];
    if !quick {
        sizes.push(("full", full));
    }
    let mut reports = Vec::new();
    for (label, params) in sizes {
        eprintln!("== {label}: {params:?}");
        let report = run(label, &params, dir.path());
        report.print_detail();
        reports.push(report);
    }
    println!();
    println!("== summary (targets from the issue: decision p99 <= 20 µs, list p99 <= 10 ms, load <= 2 s, memory <= 400 MB)");
    for report in &reports {
        report.print_line();
    }
}

/// Everything measured at one size.
struct Report {
    label: &'static str,
    counts: String,
    json_mb: f64,
    yaml_mb: f64,
    load_json: Duration,
    load_json_runs: Vec<Duration>,
    load_yaml: Duration,
    rss_delta_mb: f64,
    rss_delta_untrimmed_mb: f64,
    hwm_mb: f64,
    decide: Stats,
    allowed: usize,
    list: Stats,
    /// A delta adding one user, applied / rebuilt (best of 3).
    delta_apply: Duration,
    delta_rebuild: Duration,
    /// The list, then every listed asset read.
    list_read: Stats,
    /// The list, then its first page read.
    list_page: Stats,
    list_assets_p50: usize,
    list_assets_max: usize,
    /// Median over users of (list time / assets listed).
    list_per_asset: Duration,
    naive: Stats,
    naive_queries: usize,
    indexed_on_naive_set: Stats,
    mismatches: Vec<String>,
}

#[derive(Clone, Copy)]
struct Stats {
    count: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Stats {
        assert!(!samples.is_empty());
        samples.sort_unstable();
        let rank = |p: f64| {
            samples[((p * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1]
        };
        let total: Duration = samples.iter().sum();
        Stats {
            count: samples.len(),
            p50: rank(0.50),
            p99: rank(0.99),
            max: *samples.last().expect("non-empty"),
            mean: total / samples.len() as u32,
        }
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
fn mark(ok: bool) -> &'static str {
    if ok {
        "PASS"
    } else {
        "MISS"
    }
}

impl Report {
    fn print_detail(&self) {
        let r = self;
        println!("== {} ({})", r.label, r.counts);
        println!(
            "  load      json {:.1} MB: best {:.0} ms of [{}]; yaml {:.1} MB: {:.0} ms (1 run)",
            r.json_mb,
            ms(r.load_json),
            r.load_json_runs
                .iter()
                .map(|d| format!("{:.0}", ms(*d)))
                .collect::<Vec<_>>()
                .join(", "),
            r.yaml_mb,
            ms(r.load_yaml)
        );
        println!(
            "  memory    policy rss delta {:.1} MB (after malloc_trim; {:.1} MB before trim), process peak VmHWM {:.1} MB",
            r.rss_delta_mb, r.rss_delta_untrimmed_mb, r.hwm_mb
        );
        println!(
            "  decide    {} queries ({} allowed): p50 {:.2} µs  p99 {:.2} µs  mean {:.2} µs  max {:.0} µs",
            r.decide.count,
            r.allowed,
            us(r.decide.p50),
            us(r.decide.p99),
            us(r.decide.mean),
            us(r.decide.max)
        );
        println!(
            "  list      {} users: p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms  max {:.1} ms  (assets listed: p50 {}, max {}; {:.2} µs per listed asset)",
            r.list.count,
            ms(r.list.p50),
            ms(r.list.p99),
            ms(r.list.mean),
            ms(r.list.max),
            r.list_assets_p50,
            r.list_assets_max,
            us(r.list_per_asset)
        );
        println!(
            "            then every listed asset read: p50 {:.3} ms  p99 {:.3} ms (x{:.2} the list at p99); then one page of {MENU_PAGE}: p50 {:.3} ms  p99 {:.3} ms (x{:.2})",
            ms(r.list_read.p50),
            ms(r.list_read.p99),
            r.list_read.p99.as_secs_f64() / r.list.p99.as_secs_f64(),
            ms(r.list_page.p50),
            ms(r.list_page.p99),
            r.list_page.p99.as_secs_f64() / r.list.p99.as_secs_f64(),
        );
        println!(
            "  naive     {} of the same queries: p50 {:.1} µs  p99 {:.1} µs (indexed on these: p50 {:.2} µs p99 {:.2} µs) => x{:.0} (p50) x{:.0} (p99) slower",
            r.naive_queries,
            us(r.naive.p50),
            us(r.naive.p99),
            us(r.indexed_on_naive_set.p50),
            us(r.indexed_on_naive_set.p99),
            r.naive.p50.as_secs_f64() / r.indexed_on_naive_set.p50.as_secs_f64(),
            r.naive.p99.as_secs_f64() / r.indexed_on_naive_set.p99.as_secs_f64(),
        );
        println!(
            "  delta     one user added: applied to the policy {:.2} ms vs full path (copy, merge, check, index) {:.0} ms: x{:.4}",
            ms(r.delta_apply),
            ms(r.delta_rebuild),
            r.delta_apply.as_secs_f64() / r.delta_rebuild.as_secs_f64()
        );
        if r.mismatches.is_empty() {
            println!(
                "  check     naive and indexed decisions agree on all {} queries",
                r.naive_queries
            );
        } else {
            println!(
                "  check     MISMATCH: naive and indexed disagree on {} queries, e.g.:",
                r.mismatches.len()
            );
            for m in r.mismatches.iter().take(5) {
                println!("            {m}");
            }
        }
    }

    fn print_line(&self) {
        let r = self;
        println!(
            "{:<6} load_json={:.0} ms {}  load_yaml={:.0} ms  decide p50={:.2} µs p99={:.2} µs {}  list p50={:.2} ms p99={:.2} ms {}  rss={:.1} MB {} (peak {:.0} MB)  naive_decide p50={:.1} µs p99={:.1} µs (x{:.0} slower at p99)",
            r.label,
            ms(r.load_json),
            mark(r.load_json <= LOAD_TARGET),
            ms(r.load_yaml),
            us(r.decide.p50),
            us(r.decide.p99),
            mark(r.decide.p99 <= DECIDE_P99_TARGET),
            ms(r.list.p50),
            ms(r.list.p99),
            mark(r.list.p99 <= LIST_P99_TARGET),
            r.rss_delta_mb,
            mark(r.rss_delta_mb <= MEMORY_TARGET_MB),
            r.hwm_mb,
            us(r.naive.p50),
            us(r.naive.p99),
            r.naive.p99.as_secs_f64() / r.indexed_on_naive_set.p99.as_secs_f64(),
        );
    }
}

/// VmRSS and VmHWM of this process, in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Gives freed heap pages back to the kernel, so RSS shows what is live.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: glibc's malloc_trim only releases free memory.
        unsafe {
            malloc_trim(0);
        }
    }
}

fn file_mb(path: &Path) -> f64 {
    std::fs::metadata(path).map_or(f64::NAN, |m| m.len() as f64 / 1e6)
}

/// One generated query, with the indexes of its user and asset.
struct Case {
    user: usize,
    asset: usize,
    account: Option<String>,
    protocol: Option<Protocol>,
    action: Action,
}

fn run(label: &'static str, params: &generate::Params, dir: &Path) -> Report {
    let started = Instant::now();
    let doc = generate::generate(params);
    eprintln!("  generated in {:.1} s", started.elapsed().as_secs_f64());
    let json = dir.join(format!("{label}.json"));
    let yaml = dir.join(format!("{label}.yaml"));
    generate::write_policy(&doc, &json).expect("write json");
    generate::write_policy(&doc, &yaml).expect("write yaml");
    drop(doc);

    let yaml_started = Instant::now();
    let policy = Policy::load(&yaml).expect("generated YAML policy loads");
    let load_yaml = yaml_started.elapsed();
    drop(policy);
    eprintln!("  yaml loaded in {:.0} ms", ms(load_yaml));

    let mut load_json_runs = Vec::new();
    let mut rss_delta_mb = f64::NAN;
    let mut rss_delta_untrimmed_mb = f64::NAN;
    let mut loaded = None;
    for _ in 0..3 {
        drop(loaded.take());
        trim_heap();
        let (before, _) = memory_mb();
        let t = Instant::now();
        let policy = Policy::load(&json).expect("generated JSON policy loads");
        load_json_runs.push(t.elapsed());
        // The file text and the parse tree are already dropped by load.
        rss_delta_untrimmed_mb = memory_mb().0 - before;
        trim_heap();
        rss_delta_mb = memory_mb().0 - before;
        loaded = Some(policy);
    }
    let policy = loaded.expect("loaded three times");
    let load_json = *load_json_runs.iter().min().expect("three runs");
    let (_, hwm_mb) = memory_mb();
    eprintln!("  json loaded: {load_json_runs:?}");

    let summary = policy.summary();
    let counts = format!(
        "{} users, {} groups, {} nodes, {} assets, {} accounts, {} grants",
        summary.users,
        summary.user_groups,
        summary.nodes,
        summary.assets,
        summary.accounts,
        summary.grants
    );
    let at = generate::reference_time();
    let mut rng = StdRng::seed_from_u64(params.seed ^ 0x5eed);
    // A plain copy of the document: queries are made from it and the
    // naive baseline reads it.
    let plain = policy.doc.to_document();
    let cases = make_cases(&plain, &mut rng, DECIDE_QUERIES);

    // Decisions, each timed on its own (after a warm-up pass).
    let doc = &plain;
    for c in cases.iter().take(10_000) {
        black_box(policy.decide(&query_of(doc, c, at)).expect("known names"));
    }
    let mut decide_times = Vec::with_capacity(cases.len());
    let mut indexed_allow = Vec::with_capacity(cases.len());
    for c in &cases {
        let q = query_of(doc, c, at);
        let t = Instant::now();
        let decision = black_box(policy.decide(black_box(&q)));
        decide_times.push(t.elapsed());
        indexed_allow.push(matches!(decision, Ok(Decision::Allow)));
    }
    let allowed = indexed_allow.iter().filter(|a| **a).count();
    let decide = Stats::of(decide_times.clone());
    eprintln!("  decide done");

    // Naive baseline on the same queries (a prefix of them at full size).
    let naive_queries = if params.grants > 1000 {
        NAIVE_QUERIES_FULL.min(cases.len())
    } else {
        cases.len()
    };
    let mut naive_times = Vec::with_capacity(naive_queries);
    let mut mismatches = Vec::new();
    for (i, c) in cases.iter().take(naive_queries).enumerate() {
        let (user, asset) = (&plain.users[c.user], &plain.assets[c.asset]);
        let t = Instant::now();
        let allow = black_box(naive_decide(black_box(&plain), user, asset, c, at));
        naive_times.push(t.elapsed());
        if allow != indexed_allow[i] {
            let q = query_of(doc, c, at);
            mismatches.push(format!(
                "user {} asset {} account {:?} protocol {:?} action {}: naive {} indexed {:?}",
                q.user,
                q.asset,
                q.account,
                q.protocol,
                q.action,
                if allow { "allow" } else { "deny" },
                policy.decide(&q)
            ));
        }
    }
    let naive = Stats::of(naive_times);
    let indexed_on_naive_set = Stats::of(decide_times[..naive_queries].to_vec());
    eprintln!("  naive done");

    // list(user) for random users.
    let users: Vec<&str> = (0..LIST_QUERIES)
        .map(|_| {
            policy
                .doc
                .users
                .choose(&mut rng)
                .expect("users")
                .username
                .as_str()
        })
        .collect();
    for user in users.iter().take(100) {
        black_box(policy.list(user, at).expect("known user"));
    }
    let mut list_times = Vec::with_capacity(users.len());
    let mut read_times = Vec::with_capacity(users.len());
    let mut page_times = Vec::with_capacity(users.len());
    let mut listed = Vec::with_capacity(users.len());
    for user in &users {
        let t = Instant::now();
        let granted = black_box(policy.list(black_box(user), at).expect("known user"));
        list_times.push(t.elapsed());
        listed.push(granted.len());
        drop(granted);
        // The same list, then every listed asset read (as `jmsctl eval
        // --list` and the menu's full catalog do) ...
        let t = Instant::now();
        let granted = policy.list(black_box(user), at).expect("known user");
        for asset in granted.iter() {
            black_box(asset);
        }
        read_times.push(t.elapsed());
        // ... and one page of a menu.
        let t = Instant::now();
        let granted = policy.list(black_box(user), at).expect("known user");
        black_box(granted.page(0..MENU_PAGE));
        page_times.push(t.elapsed());
    }
    let mut per_asset: Vec<Duration> = list_times
        .iter()
        .zip(&listed)
        .filter(|(_, n)| **n > 0)
        .map(|(t, n)| *t / u32::try_from(*n).unwrap_or(u32::MAX))
        .collect();
    per_asset.sort_unstable();
    let list_per_asset = per_asset
        .get(per_asset.len() / 2)
        .copied()
        .unwrap_or_default();
    listed.sort_unstable();
    // A delta adding one user: applied to the checked policy (sharing what
    // it does not change) vs the full path (merged into a copy of the
    // document, checked and indexed from scratch), best of 3 each.
    let mut delta = jms_sync::bundle::Delta {
        from_version: 1,
        to_version: 2,
        issued_at: at,
        server_id: "bench".into(),
        upsert: PolicyDocument::default(),
        accounts: Vec::new(),
        remove: Vec::new(),
        settings: serde_json::Value::Null,
        ids: Default::default(),
    };
    let mut newcomer = plain.users[0].clone();
    newcomer.username = "delta-bench-user".into();
    delta.upsert.users.push(newcomer);
    let mut delta_runs = Vec::new();
    let mut rebuild_runs = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let next = policy.apply_delta(&delta, "delta").expect("delta applies");
        delta_runs.push(t.elapsed());
        let t = Instant::now();
        let mut doc = policy.doc.to_document();
        delta.apply_to_document(&mut doc).expect("delta applies");
        let full = Policy::from_received(doc, "delta").expect("policy checks");
        rebuild_runs.push(t.elapsed());
        assert!(next.doc == full.doc, "incremental and full agree");
    }
    let delta_apply = *delta_runs.iter().min().expect("3 runs");
    let delta_rebuild = *rebuild_runs.iter().min().expect("3 runs");
    eprintln!("  delta done");

    let list = Stats::of(list_times);
    let list_read = Stats::of(read_times);
    let list_page = Stats::of(page_times);
    eprintln!("  list done");

    Report {
        label,
        counts,
        json_mb: file_mb(&json),
        yaml_mb: file_mb(&yaml),
        load_json,
        load_json_runs,
        load_yaml,
        rss_delta_mb,
        rss_delta_untrimmed_mb,
        hwm_mb,
        decide,
        allowed,
        delta_apply,
        delta_rebuild,
        list,
        list_read,
        list_page,
        list_assets_p50: listed[listed.len() / 2],
        list_assets_max: *listed.last().expect("non-empty"),
        list_per_asset,
        naive,
        naive_queries,
        indexed_on_naive_set,
        mismatches,
    }
}

fn query_of<'q>(doc: &'q PolicyDocument, c: &'q Case, at: DateTime<Utc>) -> Query<'q> {
    Query {
        user: &doc.users[c.user].username,
        asset: &doc.assets[c.asset].name,
        account: c.account.as_deref(),
        protocol: c.protocol,
        action: c.action,
        at,
    }
}

/// Half the queries pair a user and an asset of one grant (usually
/// granted), half pick both at random (usually not); account, protocol
/// and action vary.
fn make_cases(doc: &PolicyDocument, rng: &mut StdRng, count: usize) -> Vec<Case> {
    let user_index: HashMap<&str, usize> = doc
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.username.as_str(), i))
        .collect();
    let asset_index: HashMap<&str, usize> = doc
        .assets
        .iter()
        .enumerate()
        .map(|(i, a)| (a.name.as_str(), i))
        .collect();
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, user) in doc.users.iter().enumerate() {
        for group in &user.groups {
            members.entry(group.as_str()).or_default().push(i);
        }
    }
    // Assets under each node at any depth.
    let mut under: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, asset) in doc.assets.iter().enumerate() {
        let mut seen: Vec<&str> = Vec::new();
        for path in &asset.nodes {
            let mut cut = path.len();
            loop {
                let node = &path[..cut];
                if !seen.contains(&node) {
                    seen.push(node);
                    under.entry(node).or_default().push(i);
                }
                match node.rfind('/') {
                    Some(0) | None => break,
                    Some(c) => cut = c,
                }
            }
        }
    }

    let granted_pair = |rng: &mut StdRng| -> Option<(usize, usize)> {
        let grant = doc.grants.choose(rng)?;
        let mut users: Vec<usize> = grant.users.iter().map(|u| user_index[u.as_str()]).collect();
        for group in &grant.user_groups {
            users.extend(members.get(group.as_str()).into_iter().flatten());
        }
        let user = *users.choose(rng)?;
        let by_node = !grant.nodes.is_empty() && (grant.assets.is_empty() || rng.gen_bool(0.5));
        let asset = if by_node {
            let node = grant.nodes.choose(rng)?;
            *under.get(node.as_str())?.choose(rng)?
        } else {
            asset_index[grant.assets.choose(rng)?.as_str()]
        };
        Some((user, asset))
    };

    let mut cases = Vec::with_capacity(count);
    while cases.len() < count {
        let (user, asset) = if rng.gen_bool(0.5) {
            match granted_pair(rng) {
                Some(pair) => pair,
                None => continue,
            }
        } else {
            (
                rng.gen_range(0..doc.users.len()),
                rng.gen_range(0..doc.assets.len()),
            )
        };
        let accounts = &doc.assets[asset].accounts;
        let account = match rng.gen_range(0..100) {
            0..=19 => None,
            20..=69 if !accounts.is_empty() => {
                Some(accounts.choose(rng).expect("non-empty").name.clone())
            }
            70..=89 => Some(
                [alias::INPUT, alias::USER, alias::ANON]
                    .choose(rng)
                    .expect("non-empty")
                    .to_string(),
            ),
            _ => Some("nobody".to_string()),
        };
        let protocol = match rng.gen_range(0..10) {
            0..=1 => None,
            2..=6 => Some(Protocol::Ssh),
            _ => Some(Protocol::Sftp),
        };
        let action = if rng.gen_bool(0.5) {
            Action::Connect
        } else {
            *Action::ALL.choose(rng).expect("non-empty")
        };
        cases.push(Case {
            user,
            asset,
            account,
            protocol,
            action,
        });
    }
    cases
}

/// The same question answered without any index: every grant of the
/// document is checked with plain loops, then the granted accounts'
/// protocols and actions are unioned as the engine does. User and asset
/// records are handed in (their lookup is not part of the baseline).
fn naive_decide(
    doc: &PolicyDocument,
    user: &User,
    asset: &Asset,
    case: &Case,
    at: DateTime<Utc>,
) -> bool {
    if !user.is_active || user.date_expired.is_some_and(|end| at >= end.0) || !asset.is_active {
        return false;
    }
    let offered = ProtocolSet::of_asset(asset);
    let mut real = vec![(ProtocolSet::EMPTY, ActionSet::EMPTY, false); asset.accounts.len()];
    // @INPUT, @USER (virtual), @ANON
    let mut virtuals = [(ProtocolSet::EMPTY, ActionSet::EMPTY, false); 3];
    let has_same_name = asset.accounts.iter().any(|a| a.username == user.username);
    for grant in &doc.grants {
        if !grant_applies(grant, user, asset, at) {
            continue;
        }
        let protocols = ProtocolSet::from_choices(&grant.protocols);
        let actions = ActionSet::from_choices(&grant.actions);
        let named = |a: &str| grant.accounts.iter().any(|n| n == a);
        let (all, same_name) = (named(alias::ALL), named(alias::USER));
        for (slot, account) in real.iter_mut().zip(&asset.accounts) {
            if all || named(&account.name) || (same_name && account.username == user.username) {
                *slot = (slot.0.union(protocols), slot.1.union(actions), true);
            }
        }
        let flags = [
            named(alias::INPUT),
            same_name && !has_same_name,
            named(alias::ANON),
        ];
        for (slot, on) in virtuals.iter_mut().zip(flags) {
            if on {
                *slot = (slot.0.union(protocols), slot.1.union(actions), true);
            }
        }
    }
    let names = [alias::INPUT, alias::USER, alias::ANON];
    let granted = asset
        .accounts
        .iter()
        .map(|a| a.name.as_str())
        .zip(real)
        .chain(names.into_iter().zip(virtuals));
    granted
        .filter(|(name, slot)| {
            slot.2 && (case.account.is_none() || case.account.as_deref() == Some(*name))
        })
        .map(|(_, slot)| (slot.0.intersection(offered), slot.1))
        .filter(|(protocols, _)| match case.protocol {
            Some(p) => protocols.contains(p),
            None => !protocols.is_empty(),
        })
        .any(|(_, actions)| actions.contains(case.action))
}

/// Whether the grant is in force at `at` and names both the user (or one
/// of her groups) and the asset (or a node holding it, at any depth).
fn grant_applies(grant: &Grant, user: &User, asset: &Asset, at: DateTime<Utc>) -> bool {
    if !grant.is_active
        || grant.date_start.is_some_and(|start| at < start.0)
        || grant.date_expired.is_some_and(|end| at >= end.0)
        || grant.accounts.is_empty()
        || grant.protocols.is_empty()
        || grant.actions.is_empty()
    {
        return false;
    }
    let user_in = grant.users.contains(&user.username)
        || grant
            .user_groups
            .iter()
            .any(|g| user.groups.iter().any(|ug| ug == g));
    if !user_in {
        return false;
    }
    grant.assets.contains(&asset.name)
        || grant.nodes.iter().any(|node| {
            asset.nodes.iter().any(|path| {
                path.strip_prefix(node.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
        })
}
