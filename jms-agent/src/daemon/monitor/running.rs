//! The sessions whose worker runs now: the recording uploader leaves
//! their files alone, as a worker may still be writing them.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Sessions whose worker runs now, by id.
fn running() -> MutexGuard<'static, HashSet<String>> {
    static RUNNING: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    RUNNING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether the worker of session `id` is still running (it may write the
/// session's recording).
pub fn is_running(id: &str) -> bool {
    running().contains(id)
}

/// Lists a session as running from before its worker starts until the
/// worker has exited (dropped once its worker was waited for).
pub struct Running(String);

impl Running {
    pub fn new(id: &str) -> Running {
        running().insert(id.to_owned());
        Running(id.to_owned())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        running().remove(&self.0);
    }
}
