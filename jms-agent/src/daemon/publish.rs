//! Applying a policy on the bastion: stable uids/gids from the id map, then
//! the public NSS cache, written atomically.

use std::path::Path;

use anyhow::{Context, Result};
use jms_core::bundle::UnixIds;
use jms_core::nss_cache::{self, NssData};
use jms_core::uids::{IdAllocator, IdKind};
use jms_core::Policy;

use crate::daemon::config::AgentdConfig;

/// Assigns ids to new names (saving the id map first, so an id handed out
/// is never handed out again) and rewrites the NSS cache.
pub fn publish(policy: &Policy, config: &AgentdConfig) -> Result<NssData> {
    publish_with_ids(policy, config, None)
}

/// As [`publish`], first adopting the ids the central server assigned. The
/// server's ids win over local ones (see
/// [`IdAllocator::adopt_from_server`]); every move is logged.
pub fn publish_with_ids(
    policy: &Policy,
    config: &AgentdConfig,
    assigned: Option<&UnixIds>,
) -> Result<NssData> {
    let map_path = config.state_dir.join("ids.json");
    let mut ids = IdAllocator::load(&map_path, config.ids).context("loading the id map")?;
    if let Some(assigned) = assigned {
        for (kind, table) in [
            (IdKind::User, &assigned.users),
            (IdKind::Group, &assigned.groups),
        ] {
            for (name, id) in table {
                for change in ids.adopt_from_server(kind, name, *id) {
                    tracing::warn!("id map: the server's ids win: {change}");
                }
            }
        }
    }
    let data = NssData::from_policy(policy, &mut ids, &config.nss_settings())
        .context("building the NSS cache")?;
    if ids.changed() {
        ids.save(&map_path).context("saving the id map")?;
    }
    write_cache(&config.nss_cache, &data)?;
    Ok(data)
}

/// jms user names by uid, from what was published.
pub fn users_by_uid(data: &NssData) -> std::collections::HashMap<u32, String> {
    data.users.iter().map(|u| (u.uid, u.name.clone())).collect()
}

fn write_cache(path: &Path, data: &NssData) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    nss_cache::write_atomic(path, data).with_context(|| format!("writing {}", path.display()))
}
