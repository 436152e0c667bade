//! Benchmark of the sync path between jms-server and bastions, against
//! the real (release) jms-server binary on loopback:
//!
//! - full bundle for the issue's policy size (100k assets, 10k users, from
//!   jms-core's generator): what the server takes to build and sign it
//!   (first request, nothing cached, minus a second one that is), its size
//!   on the wire, sealing/opening, and on the bastion side verify (with the
//!   JSON parse), engine build, NSS cache write and state write — the
//!   real jms-agentd calls;
//! - delta apply: one change, the delta the server answers and its apply
//!   as jms-agentd does it (onto the held policy, sharing what the delta
//!   does not change), against the full path (merge into a copy of the
//!   bundle, check and index from scratch) in the same run;
//! - storing that policy through the server: `jmsctl policy apply FILE`
//!   (the real binaries, YAML file, empty server) against `jmsctl policy
//!   check FILE` of the same file (parse and engine build, offline), then
//!   the same apply again (nothing changes);
//! - event ingest through `POST /api/v1/sync/events` with signed batches of
//!   1000 (jms-agentd's batch size), one uploader and four, against raw
//!   SQLite inserts of the same rows with the server's pragmas;
//! - many enrolled bastions polling every 10 s (compressed run): poll
//!   latency p50/p99 and the server's CPU from /proc/PID/stat;
//! - TLS against plain HTTP in the same run: the server is served over
//!   TLS (its own CA, each bastion with its client certificate, as
//!   deployed) and again with `--insecure-http`, and the ingest rate (one
//!   uploader and four), the 1000 bastions' polls (CPU, p50) and the delta
//!   request are given for both, as ratios TLS/plain;
//! - with `--only postgres` (a run of its own; `make bench` runs it too):
//!   PostgreSQL against SQLite in that run (a private cluster from
//!   `scripts/pg-test` with fsync on, the store copied by `jms-server
//!   migrate`): the event ingest with one uploader and four, on one
//!   SQLite instance, one PostgreSQL instance and two (the uploaders split
//!   between them); 10,000 bastions polling across two PostgreSQL
//!   instances (p50/p99, CPU of each) against 1,000 on one SQLite
//!   instance; the policy writes' latency (`POST /api/v1/users`, `PATCH
//!   /api/v1/grants/NAME`, median of 10) on the full-size policy on each;
//!   as ratios against the SQLite figures.
//!
//! `cargo bench -p jms-server --bench sync [-- --quick] [--only ingest]`
//! (`--quick`: 1/100 of the policy, fewer events, 100 bastions for 10 s;
//! `--only ingest`: the event ingest alone, on a small policy; `--only
//! policy`: the policy apply alone; `--only tls`: the TLS/plain
//! comparison alone, on a small policy; `--only apply`: the policy stored,
//! then the full bundle and delta applies and the apply memory; `--only
//! postgres`: PostgreSQL against SQLite alone, on the full-size policy,
//! with `--quick` on 1/100 of it and a tenth of the bastions).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jms_agent::daemon::config::AgentdConfig;
use jms_server::Services;
use jms_sync::bundle::{self, hex, request_message, HeldBundle, TransportKey};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{json, Value};

#[path = "../../jms-core/benches/support/generate.rs"]
mod generate;

const SERVER: &str = env!("CARGO_BIN_EXE_jms-server");
const JMSCTL: &str = env!("CARGO_BIN_EXE_jmsctl");
const APPLY_TARGET: Duration = Duration::from_secs(2);
const DELTA_TARGET: Duration = Duration::from_millis(10);
/// `jmsctl policy apply` of the full-size file.
const POLICY_APPLY_TARGET: Duration = Duration::from_secs(10);
/// Events per second over HTTP, one uploader, and the ratio to raw inserts.
const INGEST_TARGET: f64 = 75_000.0;
/// Ingest over TLS against plain HTTP, one uploader: TLS costs at most 30%.
const TLS_INGEST_RATIO_TARGET: f64 = 0.7;
const INGEST_RATIO_TARGET: f64 = 0.5;
/// jms-agentd's upload batch.
const BATCH: usize = 1000;
const POLL_INTERVAL: Duration = Duration::from_secs(10);
/// Bastions polling the two PostgreSQL instances; a tenth of them poll the
/// one SQLite instance (the baseline).
const PG_BASTIONS: usize = 10_000;

struct Sizes {
    label: &'static str,
    policy: generate::Params,
    events: usize,
    bastions: usize,
    poll_run: Duration,
}

/// Set in the child process that measures an apply's memory.
const MEMORY_CHILD: &str = "JMS_SYNC_BENCH_APPLY_MEMORY";

fn main() {
    if let Ok(spec) = std::env::var(MEMORY_CHILD) {
        return apply_memory_child(&spec);
    }
    let mut quick = false;
    let mut ingest_only = false;
    let mut policy_only = false;
    let mut tls_only = false;
    let mut apply_only = false;
    let mut postgres_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--bench" => {}
            "--only" => match args.next().as_deref() {
                Some("ingest") => ingest_only = true,
                Some("policy") => policy_only = true,
                Some("tls") => tls_only = true,
                Some("apply") => apply_only = true,
                Some("postgres") => postgres_only = true,
                other => eprintln!(
                    "sync: ignoring --only {other:?} (`ingest`, `policy`, `tls` or `apply`)"
                ),
            },
            other => {
                eprintln!(
                    "sync: ignoring argument `{other}` (--quick, --only ingest|policy|tls|apply)"
                )
            }
        }
    }
    let sizes = if postgres_only {
        Sizes {
            label: if quick {
                "PostgreSQL only, quick"
            } else {
                "PostgreSQL only"
            },
            policy: if quick {
                generate::Params::FULL.divided(100)
            } else {
                generate::Params::FULL
            },
            events: if quick { 20_000 } else { 100_000 },
            bastions: if quick { PG_BASTIONS / 10 } else { PG_BASTIONS },
            poll_run: Duration::from_secs(if quick { 10 } else { 20 }),
        }
    } else if tls_only {
        Sizes {
            label: "TLS only",
            policy: generate::Params::FULL.divided(100),
            events: if quick { 20_000 } else { 200_000 },
            bastions: if quick { 100 } else { 1000 },
            poll_run: Duration::from_secs(if quick { 10 } else { 30 }),
        }
    } else if ingest_only {
        Sizes {
            label: "ingest only",
            policy: generate::Params::FULL.divided(100),
            events: if quick { 20_000 } else { 200_000 },
            bastions: 4,
            poll_run: Duration::ZERO,
        }
    } else if apply_only {
        Sizes {
            label: "apply only",
            policy: if quick {
                generate::Params::FULL.divided(100)
            } else {
                generate::Params::FULL
            },
            events: 0,
            bastions: 1,
            poll_run: Duration::ZERO,
        }
    } else if quick {
        Sizes {
            label: "quick",
            policy: generate::Params::FULL.divided(100),
            events: 20_000,
            bastions: 100,
            poll_run: Duration::from_secs(10),
        }
    } else {
        Sizes {
            label: "full",
            policy: generate::Params::FULL,
            events: 200_000,
            bastions: 1000,
            poll_run: Duration::from_secs(30),
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    eprintln!("== {} size: {:?}", sizes.label, sizes.policy);
    let mut lines = Vec::new();

    // The store: the generated policy, stored through the server by the
    // real jmsctl from a YAML file, and the enrolled bastions (in-process).
    let data = dir.path().join("server");
    let doc = generate::generate(&sizes.policy);
    let (assets, users) = (doc.assets.len(), doc.users.len());
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    drop(doc);
    let admin = Services::open(&data).expect("open the data dir");
    let (_, admin_token) = admin
        .tokens
        .create_token("bench", "bench", jms_server::store::Scope::Admin)
        .expect("an admin token");
    drop(admin);
    if postgres_only {
        let mut server = Server::start(&data, true);
        let apply = jmsctl(&server, &admin_token, &["policy", "apply"], &file);
        server.stop();
        lines.push(format!(
            "policy ({assets} assets, {users} users) stored into SQLite by `jmsctl policy apply` in {apply:.1?}"
        ));
    } else if !tls_only {
        let mut server = Server::start(&data, true);
        let check = jmsctl(&server, &admin_token, &["policy", "check"], &file);
        let apply = jmsctl(&server, &admin_token, &["policy", "apply"], &file);
        let again = jmsctl(&server, &admin_token, &["policy", "apply"], &file);
        server.stop();
        let ratio = |d: Duration| d.as_secs_f64() / check.as_secs_f64();
        lines.push(format!(
            "policy apply ({assets} assets, {users} users, {:.1} MB YAML) into an empty server: `jmsctl policy apply` {apply:.2?}; `jmsctl policy check` of the same file {check:.2?}; ratio {:.2}  [{}]",
            std::fs::metadata(&file).unwrap().len() as f64 / 1e6,
            ratio(apply),
            verdict(
                ingest_only || apply <= POLICY_APPLY_TARGET,
                "target <= 10 s at full size"
            )
        ));
        lines.push(format!(
            "  the same apply again (no change): {again:.2?}; ratio to check {:.2}",
            ratio(again)
        ));
    }
    if policy_only {
        print_lines(&sizes, lines);
        return;
    }
    let admin = Services::open(&data).expect("open the data dir");
    let authority = jms_server::tls::Authority::load_or_create(&data).expect("the TLS CA");
    let started = Instant::now();
    let bastions: Arc<Vec<Bastion>> = Arc::new(if postgres_only {
        Bastion::enroll_many(&admin, &authority, &data, sizes.bastions)
    } else {
        (0..sizes.bastions.max(1))
            .map(|i| Bastion::enroll(&admin, &authority, i))
            .collect()
    });
    eprintln!(
        "{} bastions enrolled in {:.1?}",
        bastions.len(),
        started.elapsed()
    );
    let pinned = admin.sync.server_public_key().to_vec();
    drop(admin);
    if tls_only {
        lines.extend(tls_lines(&data, &admin_token, &bastions, &sizes));
        print_lines(&sizes, lines);
        return;
    }
    if postgres_only {
        lines.extend(postgres_lines(&data, &admin_token, &bastions, &sizes));
        print_lines(&sizes, lines);
        return;
    }
    let mut server = Server::start(&data, true);
    if ingest_only {
        lines.extend(ingest_lines(&server, &bastions, dir.path(), sizes.events));
        server.stop();
        print_lines(&sizes, lines);
        return;
    }

    // ---- full bundle -----------------------------------------------------
    let first = server.fetch(&bastions[0], 0);
    let cached = server.fetch(&bastions[0], 0);
    let signed = cached.signed.clone();
    let build_sign = first.elapsed.saturating_sub(cached.elapsed);
    let started = Instant::now();
    let transport = TransportKey::generate();
    let resealed =
        bundle::seal_for(&bundle::unhex(&transport.public_hex()).unwrap(), &signed).unwrap();
    let seal = started.elapsed();
    let started = Instant::now();
    let opened = transport.open(&resealed).unwrap();
    let open = started.elapsed();
    assert_eq!(opened, signed);

    let agent_dir = dir.path().join("bastion");
    let config = agentd_config(&agent_dir, &server.url);
    let first_apply = apply(&signed, &pinned, &config);
    let again_apply = apply(&signed, &pinned, &config);
    let mb = |n: usize| n as f64 / 1e6;
    lines.push(format!(
        "full bundle ({assets} assets, {users} users): {:.1} MB signed, {:.1} MB on the wire",
        mb(signed.len()),
        mb(cached.wire_bytes)
    ));
    lines.push(format!(
        "  server: build+sign {:.2?} (first request {:.2?}, cached {:.0?}: seal + transfer)",
        build_sign, first.elapsed, cached.elapsed
    ));
    lines.push(format!("  seal {seal:.0?}, open {open:.0?}"));
    for (what, a) in [("first apply", &first_apply), ("re-apply", &again_apply)] {
        lines.push(format!(
            "  agentd {what}: {:.2?} = verify+parse {:.2?} + engine {:.2?} + NSS cache {:.0?} + state {:.0?}  [{}]",
            a.total(),
            a.verify,
            a.engine,
            a.nss,
            a.state,
            verdict(a.total() <= APPLY_TARGET, "target <= 2 s")
        ));
    }

    lines.push(apply_memory(&signed, &pinned, &agent_dir));

    // ---- delta -----------------------------------------------------------
    lines.extend(delta(
        &server,
        &admin_token,
        &bastions[0],
        &pinned,
        &signed,
        &config,
    ));
    if apply_only {
        server.stop();
        print_lines(&sizes, lines);
        return;
    }

    // ---- event ingest ----------------------------------------------------
    lines.extend(ingest_lines(&server, &bastions, dir.path(), sizes.events));

    // ---- many bastions polling -------------------------------------------
    lines.push(polls(&[&server], &bastions, bastions.len(), sizes.poll_run).line);
    server.stop();

    // ---- TLS against plain HTTP --------------------------------------------
    lines.extend(tls_lines(&data, &admin_token, &bastions, &sizes));
    // PostgreSQL against SQLite: `--only postgres`, a run of its own (its
    // 10,000 bastions), as `make bench` runs it.
    print_lines(&sizes, lines);
}

/// PostgreSQL against SQLite in this run (a private cluster with fsync
/// on, as SQLite's `synchronous=FULL`; the store copied into it by
/// `jms-server migrate`): the event ingest on one SQLite instance, one
/// PostgreSQL instance and two; the bastions' polls on one SQLite instance
/// (a tenth of them) and two PostgreSQL ones (all); the policy writes on
/// each backend; ratios against SQLite.
fn postgres_lines(
    data: &Path,
    admin_token: &str,
    bastions: &Arc<Vec<Bastion>>,
    sizes: &Sizes,
) -> Vec<String> {
    raise_open_files(bastions.len());
    let cluster = tempfile::tempdir().expect("temp dir");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/pg-test");
    let out = Command::new(script)
        .arg("start")
        .arg(cluster.path())
        .env("JMS_PG_DURABLE", "1")
        .output()
        .expect("scripts/pg-test");
    assert!(
        out.status.success(),
        "scripts/pg-test start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let base = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).expect("the cluster");
    admin.batch_execute("CREATE DATABASE jms_bench").unwrap();
    let url = base.replacen("/postgres?", "/jms_bench?", 1);
    let started = Instant::now();
    let migrated = Command::new(SERVER)
        .args(["migrate", "--from"])
        .arg(data)
        .args(["--to", &url])
        .output()
        .expect("jms-server migrate");
    assert!(
        migrated.status.success(),
        "migrate: {}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let migrate = started.elapsed();
    let events: Vec<Value> = (0..sizes.events).map(event).collect();
    // A fresh copy of the events for each run (keys of their own).
    let run = |tag: &str| -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["id"] = format!("{}-{tag}", e["id"].as_str().unwrap()).into();
                e
            })
            .collect()
    };
    let few = (sizes.bastions / 10).max(1);

    // SQLite, one instance: the baseline.
    let mut sqlite = Server::start_on(data, false, None);
    let sqlite_one = ingest(&[&sqlite], &bastions[..1], &run("sqlite-1"), 1);
    let sqlite_four = ingest(&[&sqlite], &bastions[..4], &run("sqlite-4"), 4);
    let sqlite_writes = policy_writes(&sqlite, admin_token, "sqlite");
    let sqlite_polls = polls(&[&sqlite], bastions, few, sizes.poll_run);
    sqlite.stop();

    // PostgreSQL, one instance, then two.
    let mut a = Server::start_on(data, false, Some(&url));
    let pg_one = ingest(&[&a], &bastions[..1], &run("pg-1"), 1);
    let pg_four = ingest(&[&a], &bastions[..4], &run("pg-4"), 4);
    let pg_writes = policy_writes(&a, admin_token, "pg");
    let mut b = Server::start_on(data, false, Some(&url));
    let pg_two = ingest(&[&a, &b], &bastions[..4], &run("pg-2x4"), 4);
    let pg_polls = polls(&[&a, &b], bastions, bastions.len(), sizes.poll_run);
    a.stop();
    b.stop();
    let _ = Command::new(script)
        .arg("stop")
        .arg(cluster.path())
        .output();

    let count = events.len();
    let ingest_line = |uploaders: usize, base: &Ingested, pg: &[(&str, &Ingested)]| {
        let mut line = format!(
            "  event ingest, {uploaders} uploader(s), {count} events in batches of {BATCH}: SQLite 1 instance {:.0} events/s",
            base.rate
        );
        for (label, i) in pg {
            line.push_str(&format!(
                "; PostgreSQL {label} {:.0} events/s, ratio {:.2}",
                i.rate,
                i.rate / base.rate
            ));
        }
        line.push_str(&format!(
            " (server CPU per event: SQLite {:.1?}{})",
            base.server_cpu,
            pg.iter()
                .map(|(label, i)| format!(", PostgreSQL {label} {:.1?}", i.server_cpu))
                .collect::<String>()
        ));
        line
    };
    let write_line = |what: &str, sqlite: Duration, pg: Duration| {
        format!(
            "  policy write, {what} (median of {POLICY_WRITES}, full policy of this run): PostgreSQL {pg:.1?}, SQLite {sqlite:.1?}; ratio {:.2}",
            pg.as_secs_f64() / sqlite.as_secs_f64()
        )
    };
    vec![
        format!(
            "PostgreSQL (private cluster, fsync on; the store copied by `jms-server migrate` in {migrate:.1?}) against SQLite, same run:"
        ),
        ingest_line(1, &sqlite_one, &[("1 instance", &pg_one)]),
        ingest_line(
            4,
            &sqlite_four,
            &[("1 instance", &pg_four), ("2 instances (2 uploaders each)", &pg_two)],
        ),
        format!("  SQLite 1 instance: {}", sqlite_polls.line),
        format!("  PostgreSQL 2 instances: {}", pg_polls.line),
        format!(
            "  polls, PostgreSQL 2 instances ({} bastions) against SQLite 1 instance ({few}): p50 ratio {:.2}, p99 ratio {:.2}; CPU per instance ratio {}",
            bastions.len(),
            pg_polls.p50.as_secs_f64() / sqlite_polls.p50.as_secs_f64(),
            pg_polls.p99.as_secs_f64() / sqlite_polls.p99.as_secs_f64(),
            pg_polls
                .cpu_percents
                .iter()
                .map(|c| format!("{:.2}", c / sqlite_polls.cpu_percent))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
        write_line("add a user (POST /api/v1/users)", sqlite_writes.0, pg_writes.0),
        write_line(
            "change a grant (PATCH /api/v1/grants/NAME, its users)",
            sqlite_writes.1,
            pg_writes.1,
        ),
    ]
}

/// Policy writes timed on each backend.
const POLICY_WRITES: usize = 10;

/// [`POLICY_WRITES`] users added (`POST /api/v1/users`) and as many
/// changes of one grant's users (`PATCH /api/v1/grants/NAME`, a user added
/// to it and taken off again); the median of each.
fn policy_writes(server: &Server, admin_token: &str, tag: &str) -> (Duration, Duration) {
    let timed = |request: reqwest::blocking::RequestBuilder| {
        let started = Instant::now();
        let response = request.bearer_auth(admin_token).send().expect("a write");
        let status = response.status();
        assert!(
            status.is_success(),
            "policy write: {status} {}",
            response.text().unwrap_or_default()
        );
        started.elapsed()
    };
    let median = |mut took: Vec<Duration>| {
        took.sort();
        took[took.len() / 2]
    };
    let adds: Vec<Duration> = (0..POLICY_WRITES)
        .map(|i| {
            timed(
                server
                    .http
                    .post(format!("{}/api/v1/users", server.url))
                    .json(&json!({"username": format!("bench-{tag}-{i}"), "name": "Bench"})),
            )
        })
        .collect();
    let list: Value = server
        .http
        .get(format!("{}/api/v1/grants?limit=1", server.url))
        .bearer_auth(admin_token)
        .send()
        .expect("grants")
        .json()
        .expect("grants JSON");
    let grant = list["items"][0].clone();
    let name = grant["name"].as_str().expect("a grant").to_string();
    let users: Vec<Value> = grant["users"].as_array().cloned().unwrap_or_default();
    let changes: Vec<Duration> = (0..POLICY_WRITES)
        .map(|i| {
            let mut changed = users.clone();
            if i % 2 == 0 {
                changed.push(format!("bench-{tag}-{i}").into());
            }
            timed(
                server
                    .http
                    .patch(format!("{}/api/v1/grants/{name}", server.url))
                    .json(&json!({ "users": changed })),
            )
        })
        .collect();
    (median(adds), median(changes))
}

/// Raises this process's open-file limit (its children, the servers,
/// inherit it) for `clients` connections when it is lower, with
/// prlimit(1); says so when it cannot.
fn raise_open_files(clients: usize) {
    let want = clients + 1024;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    if soft >= want {
        return;
    }
    let out = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={want}:{want}"))
        .output();
    if !matches!(&out, Ok(o) if o.status.success()) {
        eprintln!(
            "sync: cannot raise RLIMIT_NOFILE from {soft} to {want} (prlimit: {:?}); {clients} clients may run out of descriptors",
            out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        );
    }
}

/// The same ingest, polls and delta request over TLS (as deployed: the
/// server's CA pinned, each bastion with its client certificate) and over
/// plain HTTP (`--insecure-http`), in this run; ratios TLS/plain.
fn tls_lines(
    data: &Path,
    admin_token: &str,
    bastions: &Arc<Vec<Bastion>>,
    sizes: &Sizes,
) -> Vec<String> {
    // Two rounds, the modes alternating (TLS, plain, plain, TLS) so that
    // neither always runs first or under the same load; the best of each.
    let mut runs: Vec<(bool, Figures)> = Vec::new();
    for (n, tls) in [true, false, false, true].into_iter().enumerate() {
        let mut server = Server::start(data, tls);
        let events: Vec<Value> = (0..sizes.events)
            .map(|i| {
                let mut e = event(i);
                e["id"] = format!("tls-{n}-{i:08}").into();
                e
            })
            .collect();
        let one = ingest(&[&server], &bastions[..1], &events[..events.len() / 2], 1).rate;
        let four = ingest(
            &[&server],
            &bastions[..4.min(bastions.len())],
            &events[events.len() / 2..],
            4,
        )
        .rate;
        let delta = delta_requests(
            &server,
            admin_token,
            &bastions[0],
            &format!("tls-delta-{n}"),
        );
        let polled = polls(&[&server], bastions, bastions.len(), sizes.poll_run);
        server.stop();
        runs.push((tls, (one, four, delta, polled)));
    }
    let best = |tls: bool| {
        let mine: Vec<&Figures> = runs.iter().filter(|r| r.0 == tls).map(|r| &r.1).collect();
        let max = |f: &dyn Fn(&Figures) -> f64| mine.iter().map(|m| f(m)).fold(0.0, f64::max);
        let min_delta = mine.iter().map(|m| m.2).min().expect("two runs");
        let least_cpu = mine
            .iter()
            .min_by(|a, b| a.3.cpu_percent.total_cmp(&b.3.cpu_percent))
            .expect("two runs");
        (max(&|m| m.0), max(&|m| m.1), min_delta, &least_cpu.3)
    };
    let figures = [best(true), best(false)];
    let (tls, plain) = (&figures[0], &figures[1]);
    let ingest_ratio = tls.0 / plain.0;
    vec![
        "TLS (pinned CA, client certificates) against plain HTTP (--insecure-http), same run, best of two rounds each (order TLS, plain, plain, TLS):".into(),
        format!(
            "  event ingest, 1 uploader: TLS {:.0} events/s, plain {:.0} events/s; ratio {:.2}  [{}]",
            tls.0,
            plain.0,
            ingest_ratio,
            verdict(ingest_ratio >= TLS_INGEST_RATIO_TARGET, "target >= 0.70 (TLS costs <= 30%)")
        ),
        format!(
            "  event ingest, 4 uploaders: TLS {:.0} events/s, plain {:.0} events/s; ratio {:.2}",
            tls.1,
            plain.1,
            tls.1 / plain.1
        ),
        format!(
            "  delta request (median of {DELTA_REQUESTS}, connection kept): TLS {:.2?}, plain {:.2?}; ratio {:.2}",
            tls.2,
            plain.2,
            tls.2.as_secs_f64() / plain.2.as_secs_f64()
        ),
        format!(
            "  {} bastions' polls: server CPU TLS {:.1}%, plain {:.1}% of one core (ratio {:.2}); p50 TLS {:.1?}, plain {:.1?} (ratio {:.2}); failed TLS {}, plain {}",
            bastions.len(),
            tls.3.cpu_percent,
            plain.3.cpu_percent,
            tls.3.cpu_percent / plain.3.cpu_percent,
            tls.3.p50,
            plain.3.p50,
            tls.3.p50.as_secs_f64() / plain.3.p50.as_secs_f64(),
            tls.3.failed,
            plain.3.failed,
        ),
    ]
}

/// Delta requests timed.
const DELTA_REQUESTS: usize = 21;

/// One mode's ingest rates (1 and 4 uploaders), delta request, polls.
type Figures = (f64, f64, Duration, Polled);

/// One change on the server (user `name` added), then [`DELTA_REQUESTS`]
/// requests for the delta from the version before it, on one connection
/// (as jms-agentd keeps one); the median.
fn delta_requests(server: &Server, admin_token: &str, bastion: &Bastion, name: &str) -> Duration {
    let http = bastion.client(server);
    let before = server.version(admin_token);
    let response = server
        .http
        .post(format!("{}/api/v1/users", server.url))
        .bearer_auth(admin_token)
        .json(&json!({"username": name, "name": "Delta"}))
        .send()
        .expect("add a user");
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
    let mut took: Vec<Duration> = (0..DELTA_REQUESTS)
        .map(|_| server.fetch_with(&http, bastion, before).elapsed)
        .collect();
    took.sort();
    took[took.len() / 2]
}

fn print_lines(sizes: &Sizes, lines: Vec<String>) {
    println!();
    println!("== sync benchmark ({} size)", sizes.label);
    for line in lines {
        println!("{line}");
    }
}

/// Runs `jmsctl ARGS FILE` against the server; its wall time. Its output
/// (one line per change) goes to /dev/null.
fn jmsctl(server: &Server, token: &str, args: &[&str], file: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new(JMSCTL)
        .args(args)
        .arg(file)
        .env("JMS_SERVER", &server.url)
        .env("JMS_TOKEN", token)
        .env("JMS_CA", server.data.join("tls/ca.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run jmsctl");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "jmsctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Event ingest over HTTP, one uploader and four, each against raw SQLite
/// inserts of the same rows.
fn ingest_lines(server: &Server, bastions: &[Bastion], dir: &Path, count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let events: Vec<Value> = (0..count).map(event).collect();
    for uploaders in [1usize, 4] {
        let run: Vec<Value> = events
            .iter()
            .map(|e| {
                let mut e = e.clone();
                e["id"] = format!("{}-{uploaders}", e["id"].as_str().unwrap()).into();
                e
            })
            .collect();
        let Ingested { rate, server_cpu } = ingest(
            &[server],
            &bastions[..uploaders.min(bastions.len())],
            &run,
            uploaders,
        );
        let raw = raw_insert_rate(dir, &run);
        let verdict = if uploaders == 1 {
            format!(
                "  [{}]",
                verdict(
                    rate >= INGEST_TARGET && rate / raw >= INGEST_RATIO_TARGET,
                    "target >= 75k/s and ratio >= 0.5"
                )
            )
        } else {
            String::new()
        };
        lines.push(format!(
            "event ingest, {uploaders} uploader(s), {} events in batches of {BATCH}: {:.0} events/s over HTTP; raw SQLite {:.0} events/s; ratio {:.2}{verdict}",
            run.len(),
            rate,
            raw,
            rate / raw,
        ));
        lines.push(format!(
            "  per event: {:.1?} wall over HTTP, of which server CPU {:.1?}; raw SQLite {:.1?}",
            Duration::from_secs_f64(1.0 / rate),
            server_cpu,
            Duration::from_secs_f64(1.0 / raw),
        ));
    }
    lines
}

fn verdict(ok: bool, target: &str) -> String {
    format!("{} {target}", if ok { "PASS" } else { "MISS" })
}

// ---- the server process ----------------------------------------------------

struct Server {
    child: Child,
    url: String,
    /// Over TLS: the server's CA (PEM), the only root its clients trust.
    ca: Option<String>,
    data: PathBuf,
    http: reqwest::blocking::Client,
}

impl Server {
    /// The server over TLS (its own CA) or plain HTTP.
    fn start(data: &Path, tls: bool) -> Server {
        Server::start_on(data, tls, None)
    }

    /// The same on the PostgreSQL `database` (else SQLite in `data`).
    fn start_on(data: &Path, tls: bool, database: Option<&str>) -> Server {
        let mut child = Command::new(SERVER)
            .arg("--data")
            .arg(data)
            .args(database.map(|url| format!("--database={url}")))
            .args(["--listen", "127.0.0.1:0"])
            .args((!tls).then_some("--insecure-http"))
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start jms-server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("jms-server did not start: {line:?}"))
            .to_string();
        let ca = tls.then(|| std::fs::read_to_string(data.join("tls/ca.pem")).unwrap());
        Server {
            child,
            url,
            http: client(ca.as_deref(), None),
            ca,
            data: data.to_path_buf(),
        }
    }

    /// The policy version.
    fn version(&self, admin_token: &str) -> u64 {
        let answer: Value = self
            .http
            .get(format!("{}/api/v1/policy/version", self.url))
            .bearer_auth(admin_token)
            .send()
            .expect("version")
            .json()
            .expect("version JSON");
        answer["version"].as_u64().expect("a version")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A signed bundle request from `bastion` holding `since`.
    fn fetch(&self, bastion: &Bastion, since: u64) -> Fetched {
        self.fetch_with(&bastion.client(self), bastion, since)
    }

    /// The same with `http` (`bastion`'s client).
    fn fetch_with(
        &self,
        http: &reqwest::blocking::Client,
        bastion: &Bastion,
        since: u64,
    ) -> Fetched {
        let transport = TransportKey::generate();
        let query = format!("since={since}&transport={}", transport.public_hex());
        let started = Instant::now();
        let response = bastion
            .request(
                http,
                &self.url,
                "GET",
                "/api/v1/sync/bundle",
                &query,
                Vec::new(),
            )
            .send()
            .expect("bundle request");
        let status = response.status();
        let body = response.bytes().expect("bundle body");
        let elapsed = started.elapsed();
        assert!(status.is_success(), "bundle request: {status} {body:?}");
        Fetched {
            elapsed,
            wire_bytes: body.len(),
            signed: transport.open(&body).expect("the sealed bundle opens"),
        }
    }

    /// utime + stime of the server, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_name.split(' ').collect();
        // Fields 14 and 15 of stat(5); the name (field 2) is cut off above.
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / clock_ticks()
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A client trusting `ca` alone (PEM) with `identity` (a bastion's
/// client certificate and key, PEM); plain without a CA.
fn client(ca: Option<&str>, identity: Option<&str>) -> reqwest::blocking::Client {
    let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(120));
    if let Some(ca) = ca {
        builder = builder
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    if let Some(identity) = identity {
        builder = builder.identity(reqwest::Identity::from_pem(identity.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

struct Fetched {
    elapsed: Duration,
    wire_bytes: usize,
    signed: Vec<u8>,
}

// ---- simulated bastions ----------------------------------------------------

struct Bastion {
    id: i64,
    key: Ed25519KeyPair,
    /// Its client certificate from the server's CA and its key (PEM).
    identity: String,
}

impl Bastion {
    fn enroll(admin: &Services, authority: &jms_server::tls::Authority, i: usize) -> Bastion {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key_pem = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
            &pkcs8.as_ref().to_vec().into(),
            &rcgen::PKCS_ED25519,
        )
        .unwrap()
        .serialize_pem();
        let cert = authority
            .issue_client(&format!("bench-{i}"), key.public_key().as_ref())
            .unwrap();
        let (token, _) = admin
            .sync
            .create_enroll_token("bench", Duration::from_secs(3600), None)
            .unwrap();
        let id = admin
            .sync
            .enroll(
                &token,
                &jms_sync::enroll::EnrollRequest {
                    token: token.clone(),
                    bastion_name: format!("bench-{i}"),
                    public_key: hex(key.public_key().as_ref()),
                    ssh_host_keys: Vec::new(),
                    ssh_address: None,
                },
            )
            .unwrap();
        assert!(admin.policy.read().unwrap().bastion(id).unwrap().is_some());
        Bastion {
            id,
            key,
            identity: format!("{cert}{key_pem}"),
        }
    }

    /// Its client for `server`: with its client certificate over TLS.
    fn client(&self, server: &Server) -> reqwest::blocking::Client {
        client(
            server.ca.as_deref(),
            Some(&self.identity)
                .filter(|_| server.ca.is_some())
                .map(|s| s.as_str()),
        )
    }

    /// `count` bastions: the first four enrolled through the server's
    /// enrollment (tokens, certificates), the rest stored in one
    /// transaction (as enrollment stores them; plain HTTP only, no client
    /// certificate), so that ten thousand take seconds.
    fn enroll_many(
        admin: &Services,
        authority: &jms_server::tls::Authority,
        data: &Path,
        count: usize,
    ) -> Vec<Bastion> {
        use jms_server::store::Storage;
        let mut bastions: Vec<Bastion> = (0..count.clamp(1, 4))
            .map(|i| Bastion::enroll(admin, authority, i))
            .collect();
        let store = jms_server::store::SqliteStore::open(&data.join(jms_server::services::DB_FILE))
            .expect("the store");
        let mut tx = store.write().expect("a write");
        for i in bastions.len()..count {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
            let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
            let id = tx
                .put_bastion(&format!("bench-{i}"), key.public_key().as_ref(), false)
                .unwrap()
                .expect("a new bastion");
            tx.set_bastion_sshd(id, None, &[]).unwrap();
            bastions.push(Bastion {
                id,
                key,
                identity: String::new(),
            });
        }
        tx.commit().unwrap();
        bastions
    }

    /// Its async client for `server` (as [`Bastion::client`]).
    fn async_client(&self, server: &Server) -> reqwest::Client {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .tls_built_in_root_certs(false);
        if let Some(ca) = &server.ca {
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
                .identity(reqwest::Identity::from_pem(self.identity.as_bytes()).unwrap());
        }
        builder.build().unwrap()
    }

    /// The headers jms-agentd signs a request with.
    fn signed_headers(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> [(&'static str, String); 4] {
        let mut nonce = [0u8; 16];
        SystemRandom::new().fill(&mut nonce).unwrap();
        let nonce = hex(&nonce);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.key.sign(&request_message(
            method, path, query, timestamp, &nonce, body,
        ));
        [
            (jms_sync::auth::headers::BASTION, self.id.to_string()),
            (jms_sync::auth::headers::TIMESTAMP, timestamp.to_string()),
            (jms_sync::auth::headers::NONCE, nonce),
            (jms_sync::auth::headers::SIGNATURE, hex(signature.as_ref())),
        ]
    }

    /// A request signed as jms-agentd signs it.
    fn request(
        &self,
        http: &reqwest::blocking::Client,
        server: &str,
        method: &str,
        path: &str,
        query: &str,
        body: Vec<u8>,
    ) -> reqwest::blocking::RequestBuilder {
        let url = if query.is_empty() {
            format!("{server}{path}")
        } else {
            format!("{server}{path}?{query}")
        };
        let mut request =
            http.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
        for (name, value) in self.signed_headers(method, path, query, &body) {
            request = request.header(name, value);
        }
        request.body(body)
    }
}

// ---- agentd apply ------------------------------------------------------------

fn agentd_config(dir: &Path, server: &str) -> AgentdConfig {
    let state = dir.join("state");
    std::fs::create_dir_all(&state).unwrap();
    let path = dir.join("agentd.toml");
    std::fs::write(
        &path,
        format!(
            "socket = {:?}\nstate_dir = {:?}\nnss_cache = {:?}\n\n[central]\nserver = {server:?}\n",
            dir.join("agentd.sock"),
            state,
            dir.join("nss.db")
        ),
    )
    .unwrap();
    AgentdConfig::load(&path).expect("agentd config")
}

struct Applied {
    verify: Duration,
    engine: Duration,
    nss: Duration,
    state: Duration,
}

impl Applied {
    fn total(&self) -> Duration {
        self.verify + self.engine + self.nss + self.state
    }
}

/// What jms-agentd does with a new full bundle: verify (signature, pinned
/// key, version; parse), check and index the policy (the grant engine),
/// publish the NSS cache with the server's ids, keep the bundle on disk.
fn apply(signed: &[u8], pinned: &[u8], config: &AgentdConfig) -> Applied {
    let started = Instant::now();
    let bundle = bundle::verify(signed, pinned, 0).expect("the bundle verifies");
    let verify = started.elapsed();
    let started = Instant::now();
    let held = HeldBundle::check(bundle).expect("the bundle's policy checks");
    let engine = started.elapsed();
    let started = Instant::now();
    jms_agent::daemon::monitor::publish::publish_with_ids(&held.policy, config, Some(&held.ids))
        .expect("publish");
    let nss = started.elapsed();
    let started = Instant::now();
    jms_agent::daemon::monitor::enroll::write_private(
        &config
            .state_dir
            .join(jms_agent::daemon::monitor::enroll::BUNDLE_FILE),
        signed,
    )
    .expect("keep the bundle");
    let state = started.elapsed();
    Applied {
        verify,
        engine,
        nss,
        state,
    }
}

// ---- apply memory --------------------------------------------------------------

/// jms-agentd's memory in a full apply: a fresh process (this binary
/// again) reads the signed bundle from disk and does what jms-agentd does
/// at startup (verify with the pinned key, check and index the policy,
/// publish the NSS cache), then reports its peak (VmHWM) and what it
/// holds after (VmRSS, the held bundle and policy alive), against its
/// VmRSS before reading the bundle.
fn apply_memory(signed: &[u8], pinned: &[u8], agent_dir: &Path) -> String {
    let bundle_path = agent_dir.join("memory-bundle.jms");
    std::fs::write(&bundle_path, signed).unwrap();
    let dir = agent_dir.join("memory");
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .env(
            MEMORY_CHILD,
            format!(
                "{}\n{}\n{}",
                bundle_path.display(),
                hex(pinned),
                dir.display()
            ),
        )
        .output()
        .expect("run the memory child");
    let report = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<f64> = report
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let _ = std::fs::remove_file(&bundle_path);
    match fields[..] {
        [before, peak, held] => format!(
            "  agentd full apply memory (a fresh process, {:.1} MB bundle): peak VmHWM {peak:.0} MB [{}], held after {held:.0} MB [{}] (process before the apply {before:.0} MB)",
            signed.len() as f64 / 1e6,
            verdict(peak <= 400.0, "target <= 400 MB"),
            verdict(held <= 200.0, "target <= 200 MB"),
        ),
        _ => format!(
            "  agentd full apply memory: the child failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ),
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

fn apply_memory_child(spec: &str) {
    let mut parts = spec.split('\n');
    let (bundle_path, pinned, dir) = (
        PathBuf::from(parts.next().unwrap()),
        bundle::unhex(parts.next().unwrap()).unwrap(),
        PathBuf::from(parts.next().unwrap()),
    );
    let config = agentd_config(&dir, "https://127.0.0.1:1");
    let (before, _) = memory_mb();
    let bytes = std::fs::read(&bundle_path).unwrap();
    let held = HeldBundle::check(bundle::verify(&bytes, &pinned, 0).unwrap()).unwrap();
    drop(bytes);
    // As jms-agentd: the publisher keeps what it wrote (for the next
    // delta), the daemon its users by uid.
    let publisher = jms_agent::daemon::monitor::publish::Publisher::default();
    let users_by_uid = publisher
        .publish(&held.policy, &config, Some(&held.ids))
        .unwrap();
    let (held_mb, peak) = memory_mb();
    println!("{before} {peak} {held_mb}");
    drop((held, publisher, users_by_uid));
}

// ---- delta ---------------------------------------------------------------------

/// One change on the server (a user added through the admin API), then
/// what a bastion holding the full bundle gets and applies: the real
/// jms-agentd steps (verify the delta, apply it to the held bundle and
/// policy, publish the NSS cache, append the delta to the state).
fn delta(
    server: &Server,
    admin_token: &str,
    bastion: &Bastion,
    pinned: &[u8],
    full: &[u8],
    config: &AgentdConfig,
) -> Vec<String> {
    let base = HeldBundle::check(bundle::verify(full, pinned, 0).unwrap()).unwrap();
    // jms-agentd published the bundle it holds, and keeps what it wrote.
    let publisher = jms_agent::daemon::monitor::publish::Publisher::default();
    publisher
        .publish(&base.policy, config, Some(&base.ids))
        .expect("publish the base");
    let response = server
        .http
        .post(format!("{}/api/v1/users", server.url))
        .bearer_auth(admin_token)
        .json(&json!({"username": "delta-bench-user", "name": "Delta"}))
        .send()
        .expect("add a user");
    assert!(
        response.status().is_success(),
        "{}",
        response.text().unwrap()
    );
    let fetched = server.fetch(bastion, base.version);
    if fetched.signed.get(4) != Some(&bundle::DELTA_FORMAT) {
        return vec![format!(
            "delta: the server answered a full bundle ({:.1} MB) to a bastion one version behind",
            fetched.signed.len() as f64 / 1e6
        )];
    }
    let started = Instant::now();
    let delta =
        bundle::verify_delta(&fetched.signed, pinned, base.version).expect("delta verifies");
    let verify = started.elapsed();
    // What jms-agentd does: the delta applied to the held bundle, sharing
    // what it does not change.
    let started = Instant::now();
    let next = base.apply(&delta).expect("delta applies");
    let engine = started.elapsed();
    // The baseline, in the same run: the delta merged into a copy of the
    // whole bundle, then the policy checked and indexed from scratch.
    let mut whole = bundle::verify(full, pinned, 0).unwrap();
    let started = Instant::now();
    delta.apply(&mut whole).expect("delta applies");
    let rebuilt = HeldBundle::check(whole).expect("the policy checks");
    let rebuild = started.elapsed();
    assert!(
        rebuilt.policy.doc == next.policy.doc,
        "incremental and full agree"
    );
    drop(rebuilt);
    let started = Instant::now();
    publisher
        .publish(&next.policy, config, Some(&next.ids))
        .unwrap();
    let nss = started.elapsed();
    // The baseline, in the same run: the same NSS cache written from
    // scratch (id map read, every entry made).
    let started = Instant::now();
    jms_agent::daemon::monitor::publish::publish_with_ids(&next.policy, config, Some(&next.ids))
        .unwrap();
    let nss_full = started.elapsed();
    // The deltas file: one delta there already, this one appended.
    let deltas = config
        .state_dir
        .join(jms_agent::daemon::monitor::policy_source::DELTAS_FILE);
    jms_agent::daemon::monitor::policy_source::append_delta(&deltas, &fetched.signed, true)
        .unwrap();
    let started = Instant::now();
    jms_agent::daemon::monitor::policy_source::append_delta(&deltas, &fetched.signed, false)
        .unwrap();
    let state = started.elapsed();
    let total = verify + engine + nss + state;
    vec![
        format!(
            "delta (one user added): {} bytes on the wire, request {:.1?}",
            fetched.wire_bytes, fetched.elapsed
        ),
        format!(
            "  agentd delta apply: {total:.1?} = verify {verify:.1?} + apply to the held policy {engine:.1?} + NSS cache {nss:.1?} + state {state:.1?}  [{}]",
            verdict(total <= DELTA_TARGET, "target <= 10 ms")
        ),
        format!(
            "  apply to the held policy {engine:.2?} vs the full path (merge into a copy of the bundle + check + index) {rebuild:.0?} in the same run: x{:.4}",
            engine.as_secs_f64() / rebuild.as_secs_f64()
        ),
        format!(
            "  NSS cache from the last one published {nss:.2?} vs written from scratch {nss_full:.1?} in the same run: x{:.3}",
            nss.as_secs_f64() / nss_full.as_secs_f64()
        ),
    ]
}

// ---- event ingest ------------------------------------------------------------

/// One spooled event as jms-agentd writes it (a command, ~300 bytes).
fn event(n: usize) -> Value {
    json!({
        "id": format!("bench-{n:08}"),
        "time": "2026-01-01T00:00:00.000Z",
        "event": "command",
        "session": format!("s-{}", n / 50),
        "user": format!("user-{:05}", n % 10_000),
        "asset": format!("asset-{:06}", n % 100_000),
        "account": "root",
        "username": "root",
        "command": format!("systemctl status nginx --no-pager # {n}"),
        "kind": "interactive",
        "decision": "allow",
        "filter": null,
    })
}

/// What [`ingest`] measured.
struct Ingested {
    /// Events per second.
    rate: f64,
    /// The server's CPU time per event (utime + stime).
    server_cpu: Duration,
}

/// Events per second through the HTTP endpoint, `uploaders` at a time
/// (uploader `u` as `bastions[u % len]`, to `servers[u % len]`), and the
/// servers' CPU per event.
fn ingest(
    servers: &[&Server],
    bastions: &[Bastion],
    events: &[Value],
    uploaders: usize,
) -> Ingested {
    let batches: Vec<Vec<u8>> = events
        .chunks(BATCH)
        .map(|chunk| serde_json::to_vec(&json!({ "events": chunk })).unwrap())
        .collect();
    let next = Mutex::new(0usize);
    let cpu = || servers.iter().map(|s| s.cpu_seconds()).sum::<f64>();
    let cpu_before = cpu();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for u in 0..uploaders {
            let (next, batches) = (&next, &batches);
            let bastion = &bastions[u % bastions.len()];
            let server = servers[u % servers.len()];
            let url = server.url.clone();
            let http = bastion.client(server);
            scope.spawn(move || loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(body) = batches.get(i) else { break };
                let response = bastion
                    .request(&http, &url, "POST", "/api/v1/sync/events", "", body.clone())
                    .send()
                    .expect("events request");
                let status = response.status();
                let answer: Value = response.json().expect("events answer");
                assert!(status.is_success(), "events: {status} {answer}");
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    Ingested {
        rate: events.len() as f64 / wall,
        server_cpu: Duration::from_secs_f64((cpu() - cpu_before).max(0.0) / events.len() as f64),
    }
}

/// Events per second inserted straight into a fresh store's events table
/// (same schema, pragmas and batch transactions, no HTTP, JSON or
/// signatures).
fn raw_insert_rate(dir: &Path, events: &[Value]) -> f64 {
    let data = tempfile::tempdir_in(dir).unwrap();
    let data: PathBuf = data.path().join("raw");
    let admin = Services::open(&data).unwrap();
    let authority = jms_server::tls::Authority::load_or_create(&data).unwrap();
    let bastion = Bastion::enroll(&admin, &authority, 0);
    drop(admin);
    let mut conn = rusqlite::Connection::open(data.join("jms.db")).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "foreign_keys", "ON").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    let rows: Vec<(String, String, String, String)> = events
        .iter()
        .map(|e| {
            (
                e["id"].as_str().unwrap().to_string(),
                e["event"].as_str().unwrap().to_string(),
                e["time"].as_str().unwrap().to_string(),
                e.to_string(),
            )
        })
        .collect();
    let started = Instant::now();
    for chunk in rows.chunks(BATCH) {
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO events \
                     (bastion_id, idempotency_key, kind, at, body, received_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .unwrap();
            let now = chrono::Utc::now().to_rfc3339();
            for (key, kind, at, body) in chunk {
                insert
                    .execute(rusqlite::params![bastion.id, key, kind, at, body, now])
                    .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    rows.len() as f64 / started.elapsed().as_secs_f64()
}

// ---- many bastions polling ------------------------------------------------------

/// What [`polls`] measured.
struct Polled {
    line: String,
    /// Of the busiest instance.
    cpu_percent: f64,
    /// Of each instance.
    cpu_percents: Vec<f64>,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

/// The first `count` bastions poll every [`POLL_INTERVAL`] (spread evenly;
/// bastion `i` polls `servers[i % len]`) with the version they hold, for
/// `run`; each server's CPU and the poll latency. Each bastion is a client
/// of its own (its own connection and, over TLS, client certificate), as
/// bastions are machines of their own, all driven by one async runtime.
fn polls(servers: &[&Server], bastions: &Arc<Vec<Bastion>>, count: usize, run: Duration) -> Polled {
    let version = {
        let fetched = servers[0].fetch(&bastions[0], 0);
        bundle::verify(&fetched.signed, &fetched.signed[5..37], 0)
            .unwrap()
            .version
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let clients: Vec<(reqwest::Client, String)> = (0..count)
        .map(|i| {
            let server = servers[i % servers.len()];
            (bastions[i].async_client(server), server.url.clone())
        })
        .collect();
    let cpu_before: Vec<f64> = servers.iter().map(|s| s.cpu_seconds()).collect();
    let started = Instant::now();
    let results = runtime.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for (i, (http, url)) in clients.into_iter().enumerate() {
            let bastions = bastions.clone();
            set.spawn(async move {
                let bastion = &bastions[i];
                let (mut latencies, mut late, mut failed) = (Vec::new(), 0usize, Vec::new());
                let mut at = POLL_INTERVAL * i as u32 / count as u32;
                while at < run {
                    let now = started.elapsed();
                    if at > now {
                        tokio::time::sleep(at - now).await;
                    } else if now - at > Duration::from_millis(100) {
                        late += 1;
                    }
                    let transport = TransportKey::generate();
                    let query = format!("since={version}&transport={}", transport.public_hex());
                    let path = "/api/v1/sync/bundle";
                    let mut request = http.get(format!("{url}{path}?{query}"));
                    for (name, value) in bastion.signed_headers("GET", path, &query, &[]) {
                        request = request.header(name, value);
                    }
                    let sent = Instant::now();
                    match request.send().await {
                        Ok(r) if r.status() == reqwest::StatusCode::NOT_MODIFIED => {
                            latencies.push(sent.elapsed())
                        }
                        Ok(r) => failed.push(format!("{}", r.status())),
                        Err(e) => failed.push(e.to_string()),
                    }
                    at += POLL_INTERVAL;
                }
                (latencies, late, failed)
            });
        }
        set.join_all().await
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu: Vec<f64> = servers
        .iter()
        .zip(&cpu_before)
        .map(|(s, before)| s.cpu_seconds() - before)
        .collect();
    drop(runtime);
    let mut latencies = Vec::new();
    let (mut late, mut failed) = (0, Vec::new());
    for (mine, l, f) in results {
        latencies.extend(mine);
        late += l;
        failed.extend(f);
    }
    latencies.sort();
    if latencies.is_empty() {
        latencies.push(Duration::MAX);
    }
    let rank = |p: f64| {
        latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    let cpu_percents: Vec<f64> = cpu.iter().map(|c| 100.0 * c / wall).collect();
    let line = format!(
        "{count} bastions polling every {}s for {:.0}s{}: {} polls (304), p50 {:.1?}, p99 {:.1?}, max {:.1?}; server CPU {} of one core ({}); {} late by >100 ms, {} failed{}",
        POLL_INTERVAL.as_secs(),
        wall,
        if servers.len() > 1 {
            format!(" across {} instances", servers.len())
        } else {
            String::new()
        },
        latencies.len(),
        rank(0.5),
        rank(0.99),
        latencies.last().unwrap(),
        cpu_percents
            .iter()
            .map(|c| format!("{c:.1}%"))
            .collect::<Vec<_>>()
            .join(" / "),
        cpu.iter()
            .map(|c| format!("{c:.2}s"))
            .collect::<Vec<_>>()
            .join(" / "),
        late,
        failed.len(),
        failed.first().map(|f| format!(" (e.g. {f})")).unwrap_or_default()
    );
    Polled {
        line,
        cpu_percent: cpu_percents.iter().copied().fold(0.0, f64::max),
        cpu_percents,
        p50: rank(0.5),
        p99: rank(0.99),
        failed: failed.len(),
    }
}
