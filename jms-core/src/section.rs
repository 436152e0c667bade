//! Copy-on-write lists of a checked policy's entities: a new policy made
//! from an old one by a delta shares every entity (and every list) the
//! delta does not touch, so applying it costs what it changes.

use std::ops::Deref;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// A shared list of shared entities; reads like a slice of `Arc<T>`.
#[derive(Debug)]
pub struct Section<T>(Arc<Vec<Arc<T>>>);

impl<T> Clone for Section<T> {
    fn clone(&self) -> Self {
        Section(Arc::clone(&self.0))
    }
}

impl<T> Default for Section<T> {
    fn default() -> Self {
        Section(Arc::new(Vec::new()))
    }
}

impl<T> Deref for Section<T> {
    type Target = [Arc<T>];
    fn deref(&self) -> &[Arc<T>] {
        &self.0
    }
}

impl<'a, T> IntoIterator for &'a Section<T> {
    type Item = &'a Arc<T>;
    type IntoIter = std::slice::Iter<'a, Arc<T>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T> From<Vec<T>> for Section<T> {
    fn from(items: Vec<T>) -> Self {
        Section(Arc::new(items.into_iter().map(Arc::new).collect()))
    }
}

impl<T: Clone> Section<T> {
    /// The entities as plain values (a deep copy).
    pub fn to_vec(&self) -> Vec<T> {
        self.0.iter().map(|item| T::clone(item)).collect()
    }
}

impl<T> Section<T> {
    /// The list for changing: copied (pointers only) when shared.
    pub(crate) fn make_mut(&mut self) -> &mut Vec<Arc<T>> {
        Arc::make_mut(&mut self.0)
    }

    /// Whether both are the same list (nothing was changed).
    pub fn same(&self, other: &Section<T>) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl<T: PartialEq> PartialEq for Section<T> {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
            || self.0.len() == other.0.len()
                && self.0.iter().zip(other.0.iter()).all(|(a, b)| **a == **b)
    }
}

impl<T: Serialize> Serialize for Section<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|item| &**item))
    }
}
