//! Where the policy comes from: the one seam between the daemon and its
//! policy. Today a local file; the central sync plugs in here.

use std::path::PathBuf;

use anyhow::{Context, Result};
use jms_core::Policy;

/// A source of checked policies.
pub trait PolicySource: Send + Sync {
    /// Loads the current policy; an error keeps the last good one in use.
    fn load(&self) -> Result<Policy>;
    /// For logs.
    fn describe(&self) -> String;
}

/// A policy file on the bastion, re-read on SIGHUP.
pub struct LocalFile {
    pub path: PathBuf,
}

impl PolicySource for LocalFile {
    fn load(&self) -> Result<Policy> {
        use std::os::unix::fs::MetadataExt;
        crate::daemon::config::refuse_unsafe_file(&self.path)?;
        let mode = std::fs::metadata(&self.path)?.mode();
        if mode & 0o007 != 0 {
            anyhow::bail!(
                "{} is readable by others (mode {:o}) but holds secrets: chmod o-rwx",
                self.path.display(),
                mode & 0o7777
            );
        }
        Policy::load(&self.path).context("loading the policy")
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}
