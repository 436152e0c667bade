//! Writes a large, realistic, valid policy file for tests and benchmarks.
//!
//! ```text
//! cargo run --release -p jms-core --example gen_policy -- \
//!     --users 10000 --groups 500 --assets 100000 --grants 10000 --depth 6 \
//!     --out policy.json [--seed N]
//! ```
//!
//! The output is JSON when FILE ends in `.json`, else YAML. The same seed
//! always gives the same file. Date windows are relative to 2026-06-01T12:00Z.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use jms_core::Policy;

#[path = "../benches/support/generate.rs"]
mod generate;

const USAGE: &str = "usage: gen_policy [--users N] [--groups N] [--assets N] [--grants N] [--depth N] [--seed N] --out FILE
  writes a valid jms policy: JSON when FILE ends in .json, else YAML
  defaults: --users 10000 --groups 500 --assets 100000 --grants 10000 --depth 6 --seed 1";

fn parse_args(
    mut args: impl Iterator<Item = String>,
) -> Result<(generate::Params, PathBuf), String> {
    let mut params = generate::Params::FULL;
    let mut out = None;
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            return Err(String::new());
        }
        const FLAGS: [&str; 7] = [
            "--users", "--groups", "--assets", "--grants", "--depth", "--seed", "--out",
        ];
        if !FLAGS.contains(&flag.as_str()) {
            return Err(format!("unknown argument `{flag}`"));
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} wants a whole number, not `{value}`"))
        };
        let count = || -> Result<usize, String> {
            usize::try_from(number()?).map_err(|_| format!("{flag} {value} is too large"))
        };
        match flag.as_str() {
            "--users" => params.users = count()?,
            "--groups" => params.groups = count()?,
            "--assets" => params.assets = count()?,
            "--grants" => params.grants = count()?,
            "--depth" => params.depth = count()?,
            "--seed" => params.seed = number()?,
            "--out" => out = Some(PathBuf::from(&value)),
            _ => unreachable!("checked above"),
        }
    }
    if !(1..=32).contains(&params.depth) {
        return Err(format!("--depth must be 1 to 32, not {}", params.depth));
    }
    let out = out.ok_or("--out FILE is required")?;
    Ok((params, out))
}

fn main() -> ExitCode {
    let (params, out) = match parse_args(std::env::args().skip(1)) {
        Ok(parsed) => parsed,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("gen_policy: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    let started = Instant::now();
    let doc = generate::generate(&params);
    // Check it as `jmsctl policy check` would before writing anything.
    let summary = match Policy::from_document(doc.clone(), "gen", Path::new(".")) {
        Ok(policy) => policy.summary(),
        Err(e) => {
            eprintln!("gen_policy: generated an invalid policy (a generator bug): {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = generate::write_policy(&doc, &out) {
        eprintln!("gen_policy: cannot write {}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    eprintln!(
        "gen_policy: wrote {} in {:.1} s: {} users, {} user groups, {} nodes, {} assets, {} accounts, {} grants, {} command filters (seed {})",
        out.display(),
        started.elapsed().as_secs_f64(),
        summary.users,
        summary.user_groups,
        summary.nodes,
        summary.assets,
        summary.accounts,
        summary.grants,
        summary.command_filters,
        params.seed,
    );
    ExitCode::SUCCESS
}
