//! The asset tree: node paths like `/Default/prod/web`, any depth, with
//! every ancestor of a node known so that a grant on a node covers all of
//! its descendants.

use std::collections::HashMap;

/// Index of a node in its [`NodeTree`].
pub type NodeId = u32;

/// All nodes of a policy; parents of a declared path are implied.
#[derive(Debug, Clone, Default)]
pub struct NodeTree {
    paths: Vec<String>,
    parents: Vec<Option<NodeId>>,
    by_path: HashMap<String, NodeId>,
}

/// Checks that `path` is `/segment[/segment…]` with no empty segment.
pub fn check_path(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("bad node path `{path}`: must start with `/`"));
    };
    if rest.is_empty() || rest.split('/').any(str::is_empty) {
        return Err(format!(
            "bad node path `{path}`: empty segment (write it like /Default/prod/web)"
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(format!("bad node path {path:?}: control character"));
    }
    Ok(())
}

impl NodeTree {
    /// Adds `path` and its parents; returns the id of `path`.
    pub fn insert(&mut self, path: &str) -> Result<NodeId, String> {
        check_path(path)?;
        if let Some(id) = self.by_path.get(path) {
            return Ok(*id);
        }
        let parent = match path.rfind('/') {
            Some(0) => None,
            Some(cut) => Some(self.insert(&path[..cut])?),
            None => unreachable!("check_path guarantees a leading slash"),
        };
        let id = NodeId::try_from(self.paths.len()).map_err(|_| "too many nodes".to_string())?;
        self.paths.push(path.to_string());
        self.parents.push(parent);
        self.by_path.insert(path.to_string(), id);
        Ok(id)
    }

    pub fn get(&self, path: &str) -> Option<NodeId> {
        self.by_path.get(path).copied()
    }

    pub fn path(&self, id: NodeId) -> &str {
        &self.paths[id as usize]
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// The node itself, then its parent, up to the root.
    pub fn self_and_ancestors(&self, id: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        std::iter::successors(Some(id), |n| self.parents[*n as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_are_implied_and_ancestors_walk_to_the_root() {
        let mut tree = NodeTree::default();
        let web = tree.insert("/Default/prod/web").unwrap();
        assert_eq!(tree.len(), 3);
        let chain: Vec<&str> = tree.self_and_ancestors(web).map(|n| tree.path(n)).collect();
        assert_eq!(chain, ["/Default/prod/web", "/Default/prod", "/Default"]);
        assert_eq!(
            tree.insert("/Default/prod").unwrap(),
            tree.get("/Default/prod").unwrap()
        );
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in ["", "/", "Default", "/Default/", "//x", "/a//b"] {
            assert!(check_path(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_path("/Default/prod").is_ok());
    }
}
