//! The sessions whose worker runs now, and whose they are: the recording
//! uploader leaves their files alone (a worker may still be writing them),
//! and a user's sessions beyond the first few run at idle priority.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Sessions whose worker runs now: id → user.
fn running() -> MutexGuard<'static, HashMap<String, String>> {
    static RUNNING: OnceLock<Mutex<HashMap<String, String>>> = OnceLock::new();
    RUNNING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Whether the worker of session `id` is still running (it may write the
/// session's recording).
pub fn is_running(id: &str) -> bool {
    running().contains_key(id)
}

/// How many sessions of `user` have a worker running now.
pub fn of_user(user: &str) -> usize {
    running().values().filter(|u| *u == user).count()
}

/// Lists a session as running from before its worker starts until the
/// worker has exited (dropped once its worker was waited for).
pub struct Running(String);

impl Running {
    pub fn new(id: &str, user: &str) -> Running {
        running().insert(id.to_owned(), user.to_owned());
        Running(id.to_owned())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        running().remove(&self.0);
    }
}
