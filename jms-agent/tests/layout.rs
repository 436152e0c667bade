//! The layout of `src/daemon` keeps the privilege split visible: the
//! worker's tree (`daemon::session`) never imports the monitor's tree
//! (`daemon::monitor`), and no import loop exists anywhere under `daemon`
//! (the graph as `jms_layout` reads it: non-test code, `use` trees and
//! `crate::`/`super::`/`self::` paths; a module using its own ancestors is
//! not an arrow).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MONITOR: &str = "daemon::monitor";
const WORKER: &str = "daemon::session";

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// module → the modules it imports (ancestors are not arrows).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    jms_layout::graph(&src())
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[test]
fn worker_tree_never_imports_the_monitor_tree() {
    let graph = graph();
    assert!(
        graph.keys().any(|m| m.starts_with(MONITOR)),
        "no {MONITOR} tree: {:?}",
        graph.keys().collect::<Vec<_>>()
    );
    assert!(graph.keys().any(|m| m.starts_with(WORKER)));
    let wrong: Vec<String> = graph
        .iter()
        .filter(|(m, _)| *m == WORKER || m.starts_with(&format!("{WORKER}::")))
        .flat_map(|(m, deps)| {
            deps.iter()
                .filter(|d| *d == MONITOR || d.starts_with(&format!("{MONITOR}::")))
                .map(move |d| format!("{m} -> {d}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "the worker imports the monitor: {wrong:#?}"
    );
}

#[test]
fn what_both_sides_share_imports_neither_side() {
    // `daemon::config`, `daemon::events`, … sit beside the two trees: the
    // worker may use them only because they hold nothing of the monitor.
    let graph = graph();
    let in_tree = |m: &str, tree: &str| m == tree || m.starts_with(&format!("{tree}::"));
    let shared: Vec<&String> = graph
        .keys()
        .filter(|m| m.as_str() != "daemon" && !in_tree(m, MONITOR) && !in_tree(m, WORKER))
        .collect();
    assert!(!shared.is_empty());
    let wrong: Vec<String> = shared
        .iter()
        .flat_map(|m| {
            graph[*m]
                .iter()
                .filter(|d| in_tree(d, MONITOR) || in_tree(d, WORKER))
                .map(move |d| format!("{m} -> {d}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "a shared module imports a side: {wrong:#?}"
    );
}

#[test]
fn session_code_never_names_the_daemon_state() {
    // `Daemon` (the monitor's state) is out of the worker's reach even by
    // a path the graph might not read (a macro, a re-export).
    let named: Vec<String> = jms_layout::modules(&src())
        .into_iter()
        .filter(|(m, _)| m == WORKER || m.starts_with(&format!("{WORKER}::")))
        .filter(|(_, file)| {
            let code = jms_layout::shipped_code(&std::fs::read_to_string(file).unwrap());
            code.match_indices("Daemon").any(|(at, _)| {
                let before = code[..at].chars().next_back();
                let after = code[at + "Daemon".len()..].chars().next();
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
        .map(|(m, _)| m)
        .collect();
    assert!(
        named.is_empty(),
        "worker modules naming `Daemon`: {named:?}"
    );
}

#[test]
fn no_import_loops_under_daemon() {
    let graph = graph();
    let found: Vec<Vec<String>> = jms_layout::cycles(&graph)
        .into_iter()
        .filter(|set| set.iter().any(|m| m.starts_with("daemon")))
        .collect();
    assert!(
        found.is_empty(),
        "import loops:\n{}",
        jms_layout::describe(&graph, &found)
    );
}
