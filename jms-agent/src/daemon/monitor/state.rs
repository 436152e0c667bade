//! The private login state (0600 in the state dir): TOTP steps already used
//! and failed-login records. Written atomically after every change, so
//! counters and replay protection survive a restart.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jms_core::login::FailureRecord;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateState {
    /// Last TOTP step accepted per user.
    #[serde(default)]
    pub totp_steps: HashMap<String, i64>,
    /// Failed logins and locks per user.
    #[serde(default)]
    pub failures: HashMap<String, FailureRecord>,
}

/// The state with the file it lives in.
pub struct StateFile {
    path: PathBuf,
    pub state: PrivateState,
}

impl StateFile {
    /// Loads `dir/private.json`, or starts empty when it does not exist.
    pub fn load(dir: &Path) -> Result<StateFile> {
        let path = dir.join("private.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is corrupt", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PrivateState::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(StateFile { path, state })
    }

    /// Writes the state atomically, 0600.
    pub fn save(&self) -> Result<()> {
        let bytes = serde_json::to_vec(&self.state)?;
        jms_core::atomic_file::write_atomic(&self.path, &bytes, 0o600)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}
