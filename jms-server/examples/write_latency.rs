//! How long one admin write takes on a big policy: the server's write path
//! (load, edit, check, diff, persist, commit) for single-entity writes.
//!
//! ```text
//! cargo run --release -p jms-core --example gen_policy -- \
//!     --users 2500 --groups 125 --assets 25000 --grants 2500 --out /tmp/policy.json
//! cargo run --release -p jms-server --example write_latency -- /tmp/policy.json
//! ```
//!
//! Prints the median of several runs of each write, and the message of a
//! refused one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use jms_core::model::{PolicyDocument, User};
use jms_server::{AdminError, Services};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time(runs: usize, mut write: impl FnMut(usize)) -> Duration {
    median(
        (0..runs)
            .map(|i| {
                let start = Instant::now();
                write(i);
                start.elapsed()
            })
            .collect(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: write_latency POLICY.json")?
        .into();
    let doc: PolicyDocument = serde_json::from_slice(&std::fs::read(&path)?)?;
    let entities = doc.users.len()
        + doc.user_groups.len()
        + doc.nodes.len()
        + doc.assets.len()
        + doc.assets.iter().map(|a| a.accounts.len()).sum::<usize>()
        + doc.grants.len()
        + doc.command_filters.len();
    let dir = tempfile::tempdir()?;
    let admin = Services::open(&dir.path().join("data"))?.policy;
    let start = Instant::now();
    admin.change("bench", false, |d| {
        *d = doc.clone();
        Ok(())
    })?;
    println!(
        "loaded {entities} entities ({} users, {} assets) in {:.1?}",
        doc.users.len(),
        doc.assets.len(),
        start.elapsed()
    );
    let referenced = doc
        .grants
        .iter()
        .find_map(|g| g.users.first())
        .ok_or("no grant names a user")?
        .clone();
    let grant = doc.grants[0].name.clone();
    let runs = 5;

    let add = time(runs, |i| {
        admin
            .change("bench", false, |d| {
                let mut user: User = serde_json::from_value(
                    serde_json::json!({"username": format!("bench{i}"), "name": "Bench"}),
                )
                .expect("a user");
                user.groups = d
                    .user_groups
                    .first()
                    .map(|g| g.name.clone())
                    .into_iter()
                    .collect();
                d.users.push(user);
                Ok(())
            })
            .expect("adding a user");
    });
    let patch = time(runs, |i| {
        admin
            .change("bench", false, |d| {
                let g = d
                    .grants
                    .iter_mut()
                    .find(|g| g.name == grant)
                    .expect("grant");
                g.comment = format!("run {i}");
                Ok(())
            })
            .expect("changing a grant");
    });
    let mut message = String::new();
    let refused = time(runs, |_| {
        let err = admin
            .change("bench", false, |d| {
                d.users.retain(|u| u.username != referenced);
                Ok(())
            })
            .expect_err("a user a grant names cannot go");
        let AdminError::Invalid(m) = err else {
            panic!("expected a policy error, got {err}");
        };
        message = m;
    });
    println!("add a user:            {add:.1?}");
    println!("change a grant:        {patch:.1?}");
    println!("refused user deletion: {refused:.1?}  ({message})");
    Ok(())
}
