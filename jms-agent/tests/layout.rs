//! The layout of `src/daemon` keeps the privilege split visible: the
//! worker's tree (`daemon::session`) never imports the monitor's tree
//! (`daemon::monitor`), and no import loop exists anywhere under `daemon`
//! (the same graph as `tools/modgraph.py`: non-test code, `use` trees and
//! `crate::`/`super::`/`self::` paths; a module using its own ancestors is
//! not an arrow).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MONITOR: &str = "daemon::monitor";
const WORKER: &str = "daemon::session";

/// Module path (`daemon::session::relay`) → its source file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&src.join("daemon"), &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            (parts.join("::"), path)
        })
        .collect()
}

/// The source without tests (everything from the first `#[cfg(test)]`)
/// and without comments.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path a `use` tree names (`a::{b, c::{self, d}}` → a::b, a::c,
/// a::c::d), as segments.
fn use_paths(tree: &str) -> Vec<Vec<String>> {
    fn parse(s: &[char], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        loop {
            while *i < s.len() && s[*i].is_whitespace() {
                *i += 1;
            }
            if *i < s.len() && s[*i] == '{' {
                *i += 1;
                loop {
                    parse(s, i, &path, out);
                    while *i < s.len() && s[*i].is_whitespace() {
                        *i += 1;
                    }
                    match s.get(*i) {
                        Some(',') => *i += 1,
                        Some('}') => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                    while *i < s.len() && s[*i].is_whitespace() {
                        *i += 1;
                    }
                    if s.get(*i) == Some(&'}') {
                        *i += 1;
                        return;
                    }
                }
            }
            let start = *i;
            while *i < s.len() && (is_ident(s[*i]) || s[*i] == '*') {
                *i += 1;
            }
            let word: String = s[start..*i].iter().collect();
            if word.is_empty() {
                break;
            }
            if word != "self" || path.is_empty() {
                path.push(word);
            }
            while *i < s.len() && s[*i].is_whitespace() {
                *i += 1;
            }
            if s[*i..].starts_with(&[':', ':']) {
                *i += 2;
                continue;
            }
            // `as name`: skip the alias.
            if s[*i..].starts_with(&['a', 's']) {
                *i += 2;
                while *i < s.len() && (s[*i].is_whitespace() || is_ident(s[*i])) {
                    *i += 1;
                }
            }
            break;
        }
        out.push(path);
    }
    let chars: Vec<char> = tree.chars().collect();
    let mut out = Vec::new();
    parse(&chars, &mut 0, &[], &mut out);
    out
}

/// The paths a source names: its `use` trees and inline
/// `crate::`/`super::`/`self::` paths.
fn named_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let boundary = |at: usize| at == 0 || !is_ident(bytes[at - 1] as char);
    // `use` trees.
    let mut from = 0;
    while let Some(found) = code[from..].find("use ") {
        let at = from + found;
        from = at + 4;
        if !boundary(at) {
            continue;
        }
        if let Some(end) = code[from..].find(';') {
            out.extend(use_paths(&code[from..from + end]));
        }
    }
    // Inline paths.
    for key in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(found) = code[from..].find(key) {
            let at = from + found;
            from = at + key.len();
            if !boundary(at) {
                continue;
            }
            let mut segs = Vec::new();
            for seg in code[at..].split("::") {
                let word: String = seg.chars().take_while(|&c| is_ident(c)).collect();
                let whole = word.len() == seg.len();
                if word.is_empty() {
                    break;
                }
                segs.push(word);
                if !whole {
                    break;
                }
            }
            out.push(segs);
        }
    }
    out
}

/// Resolves a path named in module `at` to the longest module it reaches.
fn resolve(at: &str, path: &[String], names: &BTreeSet<String>) -> Option<String> {
    let mut here: Vec<String> = at.split("::").map(str::to_owned).collect();
    let mut rest = path;
    let mut full: Vec<String> = match rest.first().map(String::as_str) {
        Some("crate") => {
            rest = &rest[1..];
            Vec::new()
        }
        Some("super") | Some("self") => {
            while let Some(first) = rest.first() {
                match first.as_str() {
                    "super" => {
                        here.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
            here
        }
        // A relative path: a child of this module, or something outside.
        Some(first) if names.contains(&format!("{at}::{first}")) => here,
        _ => return None,
    };
    full.extend(rest.iter().cloned());
    (1..=full.len())
        .rev()
        .map(|k| full[..k].join("::"))
        .find(|cand| names.contains(cand))
}

/// module → the modules it imports (ancestors are not arrows).
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = modules(&src);
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, file)| {
            let text = std::fs::read_to_string(file).unwrap();
            let deps = named_paths(&code(&text))
                .iter()
                .filter_map(|p| resolve(m, p, &names))
                .filter(|d| d != m && !m.starts_with(&format!("{d}::")))
                .collect();
            (m.clone(), deps)
        })
        .collect()
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.found.push(comp);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
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
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let named: Vec<String> = modules(&src)
        .into_iter()
        .filter(|(m, _)| m == WORKER || m.starts_with(&format!("{WORKER}::")))
        .filter(|(_, file)| {
            let code = code(&std::fs::read_to_string(file).unwrap());
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
    let found = cycles(&graph);
    let arrows: Vec<String> = found
        .iter()
        .flat_map(|comp| {
            let graph = &graph;
            comp.iter().flat_map(move |m| {
                graph[m]
                    .iter()
                    .filter(|d| comp.contains(d))
                    .map(move |d| format!("{m} -> {d}"))
            })
        })
        .collect();
    assert!(
        found.is_empty(),
        "import loops: {found:#?}\narrows inside them: {arrows:#?}"
    );
}

#[test]
fn the_graph_sees_use_trees_and_super_paths() {
    // The reader itself: a loop through `super::` in files and nested
    // `use` groups must be seen, or the tests above prove nothing.
    let names: BTreeSet<String> = ["daemon::a", "daemon::a::b", "daemon::a::c", "daemon::d"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    let found = |m: &str, src: &str| -> BTreeSet<String> {
        named_paths(&code(src))
            .iter()
            .filter_map(|p| resolve(m, p, &names))
            .filter(|d| d != m && !m.starts_with(&format!("{d}::")))
            .collect()
    };
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(
        found("daemon::a::b", "use super::c::X;"),
        set(&["daemon::a::c"])
    );
    assert_eq!(
        found("daemon::a::b", "use crate::daemon::{a::{self, c}, d};"),
        set(&["daemon::a::c", "daemon::d"])
    );
    assert_eq!(
        found("daemon::a::b", "fn f() { super::super::d::g(); }"),
        set(&["daemon::d"])
    );
    assert_eq!(
        found(
            "daemon::d",
            "fn f() { crate::daemon::a::c::g() }\n#[cfg(test)]\nuse crate::daemon::a::b;"
        ),
        set(&["daemon::a::c"])
    );
    let mut g = BTreeMap::new();
    g.insert("x".to_owned(), set(&["y"]));
    g.insert("y".to_owned(), set(&["x"]));
    g.insert("z".to_owned(), set(&["x"]));
    assert_eq!(cycles(&g), vec![vec!["x".to_owned(), "y".to_owned()]]);
}
