//! A crate's module import graph, read from its sources, for the tests
//! that keep jms's layout free of import loops (jms-agent's monitor/worker
//! split, jms-server's services).
//!
//! Every module file under `src/` but `bin/`, non-test code only (cut at
//! the first `#[cfg(test)]`, `//` comments dropped); an edge from a module
//! to the longest module prefix of each `crate::…`, `super::…` and
//! `self::…` path it names (`use` trees with `{…}` groups included); edges
//! to its own ancestors left out. Any strongly connected set of more than
//! one module is a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`api::audit`) to its file, for every module file under
/// `src` but `bin/`.
pub fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts.first().is_some_and(|p| p == "bin") || parts == ["lib"] || parts.is_empty() {
                continue;
            }
            out.insert(parts.join("::"), path);
        }
    }
    out
}

/// The code a module ships: up to its first `#[cfg(test)]`, without `//`
/// comments.
pub fn shipped_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    Path,
    Open,
    Close,
    Comma,
    Other,
}

fn tokens(code: &str) -> Vec<Token> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token::Path);
            i += 2;
            continue;
        }
        if !c.is_whitespace() {
            out.push(match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                _ => Token::Other,
            });
        }
        i += 1;
    }
    out
}

/// The paths of the `use` tree (or plain path) starting at `tokens[*at]`
/// (just after a `::`), each prefixed with `prefix`.
fn tree(tokens: &[Token], at: &mut usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    match tokens.get(*at) {
        Some(Token::Open) => {
            *at += 1;
            loop {
                match tokens.get(*at) {
                    Some(Token::Close) => {
                        *at += 1;
                        return;
                    }
                    Some(Token::Comma) => *at += 1,
                    Some(Token::Ident(_)) | Some(Token::Open) => {
                        tree(tokens, at, prefix.clone(), out)
                    }
                    None => return,
                    Some(_) => *at += 1,
                }
            }
        }
        Some(Token::Ident(name)) => {
            let mut path = prefix;
            path.push(name.clone());
            *at += 1;
            if tokens.get(*at) == Some(&Token::Path) {
                *at += 1;
                tree(tokens, at, path, out);
            } else {
                out.push(path);
            }
        }
        _ => out.push(prefix),
    }
}

/// Module to the modules it names (its own ancestors left out).
pub fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(src);
    let mut edges = BTreeMap::new();
    for (module, file) in &modules {
        let code = shipped_code(&std::fs::read_to_string(file).unwrap());
        let tokens = tokens(&code);
        let here: Vec<String> = module.split("::").map(str::to_string).collect();
        let mut named = Vec::new();
        let mut at = 0;
        while at < tokens.len() {
            let start = match &tokens[at] {
                Token::Ident(word) if word == "crate" => Some(Vec::new()),
                Token::Ident(word) if word == "self" => Some(here.clone()),
                Token::Ident(word) if word == "super" => {
                    let mut base = here.clone();
                    let mut k = at;
                    base.pop();
                    // super::super::…
                    while tokens.get(k + 1) == Some(&Token::Path)
                        && tokens.get(k + 2) == Some(&Token::Ident("super".into()))
                    {
                        base.pop();
                        k += 2;
                    }
                    at = k;
                    Some(base)
                }
                _ => None,
            };
            let preceded_by_path = at > 0 && tokens[at - 1] == Token::Path;
            match start {
                Some(base) if !preceded_by_path && tokens.get(at + 1) == Some(&Token::Path) => {
                    at += 2;
                    tree(&tokens, &mut at, base, &mut named);
                }
                _ => at += 1,
            }
        }
        let mut deps = BTreeSet::new();
        for path in named {
            let best = (1..=path.len())
                .rev()
                .map(|k| path[..k].join("::"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(best) = best {
                if &best != module && !module.starts_with(&format!("{best}::")) {
                    deps.insert(best);
                }
            }
        }
        edges.insert(module.clone(), deps);
    }
    edges
}

/// Strongly connected sets of more than one module (Tarjan): the loops.
pub fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        edges: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.edges[v] {
            let w = w.as_str();
            if !s.edges.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                set.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// Each loop with the edges that close it.
pub fn describe(edges: &BTreeMap<String, BTreeSet<String>>, found: &[Vec<String>]) -> String {
    let mut text = String::new();
    for set in found {
        text.push_str(&format!("loop {set:?}:\n"));
        for m in set {
            let inside: Vec<&String> = edges[m].iter().filter(|d| set.contains(d)).collect();
            text.push_str(&format!("  {m} -> {inside:?}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_sees_a_loop_through_use_groups_super_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::create_dir_all(src.join("web")).unwrap();
        std::fs::create_dir_all(src.join("bin")).unwrap();
        std::fs::write(src.join("lib.rs"), "pub mod a;\npub mod b;\npub mod web;\n").unwrap();
        std::fs::write(
            src.join("a.rs"),
            "use crate::{b::Thing, web::{self, x}};\n// use crate::c;\n",
        )
        .unwrap();
        std::fs::write(
            src.join("b.rs"),
            "fn f() { crate::web::x::g(); }\n#[cfg(test)]\nmod t { use crate::a; }\n",
        )
        .unwrap();
        std::fs::write(src.join("web/mod.rs"), "pub mod x;\npub mod y;\n").unwrap();
        std::fs::write(src.join("web/x.rs"), "use super::y::Y;\n").unwrap();
        std::fs::write(src.join("web/y.rs"), "fn h() { crate::a::f(); }\n").unwrap();
        std::fs::write(src.join("bin/main.rs"), "use crate::a;\n").unwrap();
        let edges = graph(src);
        assert_eq!(
            edges["a"],
            BTreeSet::from(["b".into(), "web".into(), "web::x".into()])
        );
        assert_eq!(
            edges["b"],
            BTreeSet::from(["web::x".into()]),
            "test code left out"
        );
        assert_eq!(edges["web::x"], BTreeSet::from(["web::y".into()]));
        assert!(!edges.contains_key("bin::main"));
        let found = cycles(&edges);
        assert_eq!(
            found,
            vec![vec![
                "a".to_string(),
                "b".into(),
                "web::x".into(),
                "web::y".into()
            ]]
        );
    }

    #[test]
    fn the_reader_follows_super_super_and_nested_groups() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::create_dir_all(src.join("daemon/a")).unwrap();
        std::fs::write(src.join("daemon/mod.rs"), "pub mod a;\npub mod d;\n").unwrap();
        std::fs::write(src.join("daemon/a/mod.rs"), "pub mod b;\npub mod c;\n").unwrap();
        std::fs::write(
            src.join("daemon/a/b.rs"),
            "use crate::daemon::{a::{self, c}, d};\nfn f() { super::super::d::g(); }\n",
        )
        .unwrap();
        std::fs::write(src.join("daemon/a/c.rs"), "use super::b::X;\n").unwrap();
        std::fs::write(src.join("daemon/d.rs"), "").unwrap();
        let edges = graph(src);
        assert_eq!(
            edges["daemon::a::b"],
            BTreeSet::from(["daemon::a::c".into(), "daemon::d".into()])
        );
        assert_eq!(
            edges["daemon::a::c"],
            BTreeSet::from(["daemon::a::b".into()])
        );
        assert_eq!(
            cycles(&edges),
            vec![vec!["daemon::a::b".to_string(), "daemon::a::c".into()]]
        );
    }
}
