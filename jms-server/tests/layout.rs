//! The module layout of jms-server: no import loops (the graph as
//! `jms_layout` reads it).
//!
//! `JMS_LAYOUT_SRC=DIR` checks another source tree (an older checkout).

use std::path::{Path, PathBuf};

#[test]
fn no_module_of_the_server_imports_in_a_loop() {
    let src = std::env::var_os("JMS_LAYOUT_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let edges = jms_layout::graph(&src);
    assert!(
        edges.contains_key("services") || std::env::var_os("JMS_LAYOUT_SRC").is_some(),
        "the graph was read (modules: {:?})",
        edges.keys().collect::<Vec<_>>()
    );
    let found = jms_layout::cycles(&edges);
    assert!(
        found.is_empty(),
        "import loops in {}:\n{}",
        src.display(),
        jms_layout::describe(&edges, &found)
    );
}
