//! The public NSS cache: the passwd and group entries of jms users and
//! groups, in one world-readable, secret-free file that `libnss_jms.so.2`
//! maps and searches without a daemon.
//!
//! - [`NssData::from_policy`] turns a policy into entries: every jms user gets
//!   a uid from an [`IdAllocator`] and the primary group ([`NssSettings`],
//!   `jms-users` by default); every user group becomes a Unix group with its
//!   members. Disabled users stay (PAM refuses them; file ownership stays
//!   readable).
//! - [`write_atomic`] writes the file (temp file, fsync, rename, mode 0644).
//! - [`NssCache::open`] maps it and answers lookups by binary search;
//!   [`ReloadingCache`] keeps one open for a process and re-opens it when the
//!   file at the path was replaced.
//!
//! # File format (version 1, integers little-endian)
//!
//! ```text
//! header (80 bytes)
//!    0  magic          8 bytes  "JMS-NSS\0"
//!    8  version        u32      1
//!   12  header_len     u32      80
//!   16  file_len       u64      length of the whole file
//!   24  user_count     u32
//!   28  group_count    u32
//!   32  member_count   u32      total of all groups' member lists
//!   36  strings_off    u32      string table: UTF-8 strings, no terminators
//!   40  strings_len    u32
//!   44  users_off      u32      user_count × 40-byte user records, sorted by name bytes
//!   48  user_keys_off  u32      user_count × u64 name keys, one per user record
//!   52  uid_index_off  u32      user_count × (uid u32, record u32), sorted by uid
//!   56  groups_off     u32      group_count × 24-byte group records, sorted by name bytes
//!   60  group_keys_off u32      group_count × u64 name keys, one per group record
//!   64  gid_index_off  u32      group_count × (gid u32, record u32), sorted by gid
//!   68  members_off    u32      member_count × 8-byte string refs
//!   72  generation     u64      the cache: its generation; the overlay: the
//!                               generation of the cache it applies to
//! string ref (8 bytes): offset u32 into the string table, length u32
//! user record (40):  name ref, uid u32, gid u32, gecos ref, home ref, shell ref
//! group record (24): name ref, gid u32, first member u32, member count u32, 0 u32
//! name key: the first 8 bytes of the name, zero-padded, read big-endian, so
//!   keys sort like names; a search compares dense keys and reads the
//!   string table only when two keys tie
//! ```
//!
//! [`NssCache::open`] checks the header and that every section lies inside
//! the file (and that the file is exactly `file_len` long, which catches
//! truncation); every later read is bounds-checked as well, so a corrupted
//! file gives [`NssCacheError::Corrupt`], never a panic or an out-of-bounds
//! read. [`NssCache::verify`] checks every record (the writer's own test).
//!
//! The file is only ever replaced by rename, never rewritten in place, so a
//! mapping stays valid while a process holds it.
//!
//! # The overlay
//!
//! A delta does not rewrite the whole cache: [`CacheWriter::write_overlay`]
//! writes the entries changed since the cache was written (users added or
//! changed, groups whose members changed) to a small file of the same
//! format beside it ([`overlay_path`], `nss.db.delta`), naming the cache's
//! generation. An overlay entry either replaces a cache entry of the same
//! name *and* id, or has a name and an id the cache does not have (the
//! writer checks it; the reader answers [`NssCacheError::Corrupt`] for an
//! overlay hit that breaks it). When the overlay grows past a quarter of
//! the cache, the next publish writes the whole cache again. The overlay
//! ends with a checksum (FNV-1a 64 of the bytes before it, counted in
//! `file_len`), checked when it is opened: it is written without a sync,
//! so a crash may leave it torn, which readers then answer as corrupt.
//!
//! The overlay is the commit point: every publish replaces it last (a full
//! write puts the cache in place, synced with its directory, then an empty
//! overlay naming it), and readers ([`ReloadingCache`]) stat only the
//! overlay (the cache when there is no overlay). A reader opens the overlay
//! first, then the cache: an overlay naming an older cache is stale (the
//! cache is newer and whole) and ignored; one naming a newer cache than the
//! one found cannot happen and is corrupt. So a reader sees a whole state,
//! old or new, never a mix; a crash leaves the last state, the one before
//! it, or a torn overlay that readers answer as corrupt (unavailable), until
//! jms-agentd writes the cache again from the held bundle at start.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, TryLockError};

use memmap2::Mmap;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::uids::{IdAllocator, IdError};

/// Where jms-agentd writes the cache and where `libnss_jms.so.2` reads it.
pub const DEFAULT_NSS_CACHE_PATH: &str = "/var/cache/jms/nss.db";
/// Its overlay ([`overlay_path`] of [`DEFAULT_NSS_CACHE_PATH`]).
pub const DEFAULT_NSS_OVERLAY_PATH: &str = "/var/cache/jms/nss.db.delta";
/// Default home directory of jms users.
pub const DEFAULT_HOME: &str = "/";
/// Default login shell of jms users: the session agent.
pub const DEFAULT_SHELL: &str = "/usr/bin/jms-agent";
/// Default primary group of every jms user (sshd's `Match Group`).
pub const DEFAULT_PRIMARY_GROUP: &str = "jms-users";
/// Mode of the cache file: world-readable, it holds no secret.
pub const CACHE_MODE: u32 = 0o644;

const MAGIC: [u8; 8] = *b"JMS-NSS\0";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 80;
const USER_RECORD: usize = 40;
const GROUP_RECORD: usize = 24;
const STR_REF: usize = 8;
const INDEX_ENTRY: usize = 8;
const NAME_KEY: usize = 8;
/// Largest cache file accepted (and written): far above 1M users.
pub const MAX_CACHE_LEN: u64 = 1 << 30;
/// Offset of the generation in the header.
const GENERATION_AT: usize = 72;
/// The overlay is rewritten while it stays under this share of the cache
/// (or [`MIN_OVERLAY_LIMIT`]); past it, the whole cache is written again.
const OVERLAY_SHARE: usize = 4;
const MIN_OVERLAY_LIMIT: usize = 64 * 1024;

/// What went wrong with the cache.
#[derive(Debug, thiserror::Error)]
pub enum NssCacheError {
    /// The file could not be opened, read, mapped or written (missing file
    /// included): NSS answers "unavailable"; the daemon checks the path.
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The file is truncated, not a cache, or its contents are inconsistent:
    /// NSS answers "unavailable"; the daemon rewrites it.
    #[error("corrupt NSS cache: {0}")]
    Corrupt(String),
    /// The file was written by a newer (or older) format: upgrade the
    /// module and the daemon together.
    #[error("NSS cache version {found} is not supported (this build reads version {VERSION})")]
    Version { found: u32 },
    /// The entries cannot be written (duplicate name or id, bad setting,
    /// too large): fix the policy or the settings.
    #[error("cannot build NSS cache: {0}")]
    Invalid(String),
    /// No uid or gid could be assigned.
    #[error(transparent)]
    Id(#[from] IdError),
}

pub type Result<T> = std::result::Result<T, NssCacheError>;

fn corrupt(what: impl Into<String>) -> NssCacheError {
    NssCacheError::Corrupt(what.into())
}

/// A passwd entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NssUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub home: String,
    pub shell: String,
}

/// A group entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NssGroup {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// The entries [`NssData::update_from_policy`] changed or added, by
/// position in [`NssData::users`] and [`NssData::groups`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Touched {
    pub users: Vec<usize>,
    pub groups: Vec<usize>,
}

/// Everything the cache holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NssData {
    pub users: Vec<NssUser>,
    pub groups: Vec<NssGroup>,
}

fn default_home() -> String {
    DEFAULT_HOME.to_string()
}
fn default_shell() -> String {
    DEFAULT_SHELL.to_string()
}
fn default_primary_group() -> String {
    DEFAULT_PRIMARY_GROUP.to_string()
}

/// How jms users look to the system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NssSettings {
    /// Home directory of every jms user (must exist for sshd).
    #[serde(default = "default_home")]
    pub home: String,
    /// Login shell of every jms user: sshd runs the ForceCommand through it.
    #[serde(default = "default_shell")]
    pub shell: String,
    /// Primary group of every jms user.
    #[serde(default = "default_primary_group")]
    pub primary_group: String,
}

impl Default for NssSettings {
    fn default() -> Self {
        NssSettings {
            home: default_home(),
            shell: default_shell(),
            primary_group: default_primary_group(),
        }
    }
}

/// A path usable as a passwd home or shell field.
fn check_path_field(field: &str, value: &str) -> Result<()> {
    if !value.starts_with('/') || value.contains([':', '\n', '\r', '\0']) {
        return Err(NssCacheError::Invalid(format!(
            "{field} {value:?} must be an absolute path without `:`, newlines or NUL"
        )));
    }
    Ok(())
}

impl NssUser {
    /// The entry of the jms user `user`: her uid from `ids`, the jms
    /// users' primary group, the shared home and shell.
    fn of(
        user: &crate::model::User,
        ids: &mut IdAllocator,
        primary_gid: u32,
        settings: &NssSettings,
    ) -> Result<NssUser> {
        Ok(NssUser {
            name: user.username.clone(),
            uid: ids.uid(&user.username)?,
            gid: primary_gid,
            gecos: gecos_of(&user.name),
            home: settings.home.clone(),
            shell: settings.shell.clone(),
        })
    }
}

/// The GECOS field of a user: her display name without `:`, newlines and NUL.
pub fn gecos_of(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ':' | '\n' | '\r' | '\0'))
        .collect()
}

impl NssData {
    /// The entries of every user and user group of `policy`.
    ///
    /// Ids come from `ids` (new names get new ids: save it afterwards when
    /// [`IdAllocator::changed`]). A user group named like the primary group
    /// is the primary group, with its members listed.
    pub fn from_policy(
        policy: &Policy,
        ids: &mut IdAllocator,
        settings: &NssSettings,
    ) -> Result<NssData> {
        check_path_field("home", &settings.home)?;
        check_path_field("shell", &settings.shell)?;
        let primary = settings.primary_group.as_str();
        if primary.is_empty() || primary.contains([':', ',', '\n', '\r', '\0', ' ']) {
            return Err(NssCacheError::Invalid(format!(
                "primary group {primary:?} is not a Unix group name"
            )));
        }
        let primary_gid = ids.gid(primary)?;
        let mut users = Vec::with_capacity(policy.doc.users.len());
        for user in &policy.doc.users {
            users.push(NssUser::of(user, ids, primary_gid, settings)?);
        }
        let mut members = policy.group_members();
        let mut groups = Vec::with_capacity(policy.doc.user_groups.len() + 1);
        groups.push(NssGroup {
            name: primary.to_string(),
            gid: primary_gid,
            members: members
                .remove(primary)
                .unwrap_or_default()
                .into_iter()
                .map(str::to_string)
                .collect(),
        });
        for group in &policy.doc.user_groups {
            if group.name == primary {
                continue;
            }
            groups.push(NssGroup {
                name: group.name.clone(),
                gid: ids.gid(&group.name)?,
                members: members
                    .remove(group.name.as_str())
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            });
        }
        Ok(NssData { users, groups })
    }

    /// Brings `self`, the entries [`NssData::from_policy`] made of `old`,
    /// to what it makes of `new`, touching only the users that changed:
    /// the same entries, in the same order, with the same ids handed out.
    /// Answers the positions of the entries it changed or added, or `None`
    /// (and changes nothing) when it cannot tell cheaply — user groups
    /// changed, a user was removed or moved — and the caller takes the
    /// full path. `new` is `old` with a delta applied
    /// ([`Policy::apply_delta`]): unchanged users are the same records.
    pub fn update_from_policy(
        &mut self,
        old: &Policy,
        new: &Policy,
        ids: &mut IdAllocator,
        settings: &NssSettings,
    ) -> Result<Option<Touched>> {
        let (before, after) = (&old.doc.users, &new.doc.users);
        if !new.doc.user_groups.same(&old.doc.user_groups)
            || after.len() < before.len()
            || self.users.len() != before.len()
        {
            return Ok(None);
        }
        let mut changed = Vec::new();
        for (i, (was, is)) in before.iter().zip(after.iter()).enumerate() {
            if !Arc::ptr_eq(was, is) {
                if was.username != is.username {
                    return Ok(None);
                }
                changed.push(i);
            }
        }
        let mut touched = Touched::default();
        if changed.is_empty() && after.len() == before.len() {
            return Ok(Some(touched));
        }
        // Where each group's members are: the primary group first, then
        // the user groups in order (as `from_policy` lays them out).
        let primary = settings.primary_group.as_str();
        let mut group_at: HashMap<&str, usize> = HashMap::new();
        let mut next = 1;
        for group in new.doc.user_groups.iter() {
            if group.name == primary {
                group_at.insert(primary, 0);
            } else {
                group_at.insert(group.name.as_str(), next);
                next += 1;
            }
        }
        if self.groups.len() != next {
            return Ok(None);
        }
        let primary_gid = ids.gid(primary)?;
        // Members are in user order: a user's entries go where her
        // position says (one per time she names the group).
        let rank = |name: &str| new.user_rank(name).unwrap_or(usize::MAX);
        for i in changed {
            let (was, is) = (&before[i], &after[i]);
            self.users[i] = NssUser::of(is, ids, primary_gid, settings)?;
            touched.users.push(i);
            if was.groups != is.groups {
                for group in was.groups.iter().filter_map(|g| group_at.get(g.as_str())) {
                    self.groups[*group].members.retain(|m| *m != is.username);
                    touched.groups.push(*group);
                }
                let mut named: Vec<usize> = is
                    .groups
                    .iter()
                    .filter_map(|g| group_at.get(g.as_str()).copied())
                    .collect();
                named.sort_unstable();
                named.dedup();
                for group in named {
                    let times = is
                        .groups
                        .iter()
                        .filter(|g| group_at.get(g.as_str()) == Some(&group))
                        .count();
                    touched.groups.push(group);
                    let members = &mut self.groups[group].members;
                    let at = members.partition_point(|m| rank(m) < i);
                    for _ in 0..times {
                        members.insert(at, is.username.clone());
                    }
                }
            }
        }
        for user in after.iter().skip(before.len()) {
            touched.users.push(self.users.len());
            self.users.push(NssUser {
                name: user.username.clone(),
                uid: ids.uid(&user.username)?,
                gid: primary_gid,
                gecos: gecos_of(&user.name),
                home: settings.home.clone(),
                shell: settings.shell.clone(),
            });
            for group in &user.groups {
                if let Some(at) = group_at.get(group.as_str()) {
                    self.groups[*at].members.push(user.username.clone());
                    touched.groups.push(*at);
                }
            }
        }
        touched.groups.sort_unstable();
        touched.groups.dedup();
        Ok(Some(touched))
    }

    /// The cache file's bytes. Refuses duplicate names or ids and a file
    /// larger than [`MAX_CACHE_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>> {
        Encoder::encode(self, 0)
    }
}

/// The overlay beside the cache at `path`: `<path>.delta`.
pub fn overlay_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".delta");
    PathBuf::from(name)
}

/// Writes `data` to `path` as a whole cache, with an empty overlay: see
/// [`CacheWriter::write_full`].
pub fn write_atomic(path: &Path, data: &NssData) -> Result<()> {
    CacheWriter::write_full(path, data).map(drop)
}

/// Encodes `data` with `generation` and checks the result with
/// [`NssCache::verify`] (every process on the host reads it: a bad file
/// must never be installed).
fn encode_checked(data: &NssData, generation: u64) -> Result<NssCache> {
    let cache = NssCache::from_bytes(Encoder::encode(data, generation)?)?;
    cache
        .verify()
        .map_err(|e| NssCacheError::Invalid(format!("the encoded file does not verify: {e}")))?;
    Ok(cache)
}

/// FNV-1a, 64 bits: the overlay's checksum (catches a torn or zeroed
/// file after a crash; the file is root's, not an adversary's).
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The overlay file: `cache`'s bytes, its length counting the checksum of
/// everything before it, appended.
fn with_checksum(cache: &NssCache) -> Vec<u8> {
    let mut bytes = cache.bytes().to_vec();
    let len = (bytes.len() + 8) as u64;
    bytes[16..24].copy_from_slice(&len.to_le_bytes());
    let sum = checksum(&bytes);
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes
}

/// Checks and strips nothing: the overlay's trailing checksum matches.
fn check_checksum(bytes: &[u8]) -> Result<()> {
    let body = bytes
        .len()
        .checked_sub(8)
        .filter(|n| *n >= HEADER_LEN)
        .ok_or_else(|| corrupt("overlay shorter than its header and checksum"))?;
    if le_u64(bytes, body) != Some(checksum(&bytes[..body])) {
        return Err(corrupt("overlay checksum mismatch (torn or damaged)"));
    }
    Ok(())
}

/// How a file is written: see [`crate::atomic_file`].
#[derive(Clone, Copy)]
enum Durability {
    /// Content and rename synced.
    Durable,
    /// Content synced.
    Content,
    /// Nothing synced (the overlay, which carries a checksum).
    None,
}

fn write_file(path: &Path, bytes: &[u8], durability: Durability) -> Result<()> {
    let write = match durability {
        Durability::Durable => crate::atomic_file::write_atomic,
        Durability::Content => crate::atomic_file::replace,
        Durability::None => crate::atomic_file::replace_unsynced,
    };
    write(path, bytes, CACHE_MODE).map_err(|source| NssCacheError::Io {
        path: path.to_path_buf(),
        action: "cannot write NSS cache",
        source,
    })
}

/// The generation in the header of the file at `path`, if it reads as one.
fn generation_on_disk(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut header = [0u8; HEADER_LEN];
    fs::File::open(path).ok()?.read_exact(&mut header).ok()?;
    (header[..8] == MAGIC).then(|| le_u64(&header, GENERATION_AT))?
}

/// What jms-agentd wrote last: the cache (in memory, to check overlays
/// against) and its generation.
pub struct CacheWriter {
    path: PathBuf,
    overlay: PathBuf,
    generation: u64,
    base: NssCache,
}

impl std::fmt::Debug for CacheWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheWriter")
            .field("path", &self.path)
            .field("generation", &self.generation)
            .finish()
    }
}

impl CacheWriter {
    /// Writes `data` to `path` as a whole cache (mode 0644, the rename
    /// synced with the directory), then an empty overlay naming it (the
    /// commit point readers watch; its content is synced, its rename not:
    /// after a crash the previous overlay may be back, which names an older
    /// cache and is ignored). The generation is the time in nanoseconds, above any
    /// found on disk.
    pub fn write_full(path: &Path, data: &NssData) -> Result<CacheWriter> {
        let overlay = overlay_path(path);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let generation = [generation_on_disk(path), generation_on_disk(&overlay)]
            .into_iter()
            .flatten()
            .map(|g| g.saturating_add(1))
            .fold(now.max(1), u64::max);
        let base = encode_checked(data, generation)?;
        write_file(path, base.bytes(), Durability::Durable)?;
        let empty = encode_checked(&NssData::default(), generation)?;
        write_file(&overlay, &with_checksum(&empty), Durability::Content)?;
        Ok(CacheWriter {
            path: path.to_path_buf(),
            overlay,
            generation,
            base,
        })
    }

    /// The cache file this writer keeps.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the overlay with `changed`: every entry changed since the
    /// cache was written, whole, with a checksum, not synced. Answers `false` (and writes nothing) when
    /// the overlay would be larger than a quarter of the cache: write the
    /// whole cache instead. Refuses an entry that has a cache entry's name
    /// with another id, or a cache entry's id with another name.
    pub fn write_overlay(&self, changed: &NssData) -> Result<bool> {
        for user in &changed.users {
            match self.base.user_by_name(&user.name)? {
                Some(old) if old.uid != user.uid => {
                    return Err(invalid(format!(
                        "overlay: user `{}` has uid {} in the cache, {} in the overlay",
                        user.name, old.uid, user.uid
                    )))
                }
                Some(_) => {}
                None => {
                    if let Some(holder) = self.base.user_by_uid(user.uid)? {
                        return Err(invalid(format!(
                            "overlay: uid {} is `{}`'s in the cache, `{}`'s in the overlay",
                            user.uid, holder.name, user.name
                        )));
                    }
                }
            }
        }
        for group in &changed.groups {
            match self.base.group_by_name(&group.name)? {
                Some(old) if old.gid != group.gid => {
                    return Err(invalid(format!(
                        "overlay: group `{}` has gid {} in the cache, {} in the overlay",
                        group.name, old.gid, group.gid
                    )))
                }
                Some(_) => {}
                None => {
                    if let Some(holder) = self.base.group_by_gid(group.gid)? {
                        return Err(invalid(format!(
                            "overlay: gid {} is `{}`'s in the cache, `{}`'s in the overlay",
                            group.gid, holder.name, group.name
                        )));
                    }
                }
            }
        }
        let overlay = encode_checked(changed, self.generation)?;
        let limit = (self.base.bytes().len() / OVERLAY_SHARE).max(MIN_OVERLAY_LIMIT);
        if overlay.bytes().len() > limit {
            return Ok(false);
        }
        // Not synced: a crash may leave it torn, which its checksum shows
        // (readers answer unavailable, not a wrong entry) until jms-agentd
        // writes the cache again from the held bundle and deltas at start.
        write_file(&self.overlay, &with_checksum(&overlay), Durability::None)?;
        Ok(true)
    }
}

/// Builds the file: interned strings, sorted records, id indexes.
struct Encoder<'d> {
    strings: Vec<u8>,
    interned: HashMap<&'d str, (u32, u32)>,
    /// The strings last interned by [`Encoder::string_at_hand`].
    recent: [(&'d str, (u32, u32)); 2],
}

fn invalid(message: String) -> NssCacheError {
    NssCacheError::Invalid(message)
}

fn to_u32(value: usize, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| invalid(format!("too large: {what}")))
}

impl<'d> Encoder<'d> {
    fn string(&mut self, s: &'d str) -> Result<(u32, u32)> {
        // Every user has the same home and shell: no hashing for those.
        if let Some((_, r)) = self.recent.iter().find(|(text, _)| *text == s) {
            return Ok(*r);
        }
        if let Some(r) = self.interned.get(s) {
            return Ok(*r);
        }
        let r = (
            to_u32(self.strings.len(), "string table")?,
            to_u32(s.len(), "string")?,
        );
        self.strings.extend_from_slice(s.as_bytes());
        self.interned.insert(s, r);
        Ok(r)
    }

    /// Interns `s` and keeps it at hand for the next lookups.
    fn string_at_hand(&mut self, slot: usize, s: &'d str) -> Result<(u32, u32)> {
        let r = self.string(s)?;
        self.recent[slot] = (s, r);
        Ok(r)
    }

    fn encode(data: &'d NssData, generation: u64) -> Result<Vec<u8>> {
        let mut users: Vec<&NssUser> = data.users.iter().collect();
        users.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        let mut groups: Vec<&NssGroup> = data.groups.iter().collect();
        groups.sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        for pair in users.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(invalid(format!("user `{}` listed twice", pair[0].name)));
            }
        }
        for pair in groups.windows(2) {
            if pair[0].name == pair[1].name {
                return Err(invalid(format!("group `{}` listed twice", pair[0].name)));
            }
        }
        let uid_index = id_index(&users, |u| u.uid, "uid")?;
        let gid_index = id_index(&groups, |g| g.gid, "gid")?;

        let mut enc = Encoder {
            strings: Vec::new(),
            interned: HashMap::with_capacity(users.len() * 2 + groups.len()),
            recent: [("", (0, 0)); 2],
        };
        let mut user_bytes = Vec::with_capacity(users.len() * USER_RECORD);
        for user in &users {
            put_ref(&mut user_bytes, enc.string(&user.name)?);
            put_u32(&mut user_bytes, user.uid);
            put_u32(&mut user_bytes, user.gid);
            put_ref(&mut user_bytes, enc.string(&user.gecos)?);
            put_ref(&mut user_bytes, enc.string_at_hand(0, &user.home)?);
            put_ref(&mut user_bytes, enc.string_at_hand(1, &user.shell)?);
        }
        let mut group_bytes = Vec::with_capacity(groups.len() * GROUP_RECORD);
        let mut member_bytes = Vec::new();
        let mut member_count = 0usize;
        for group in &groups {
            put_ref(&mut group_bytes, enc.string(&group.name)?);
            put_u32(&mut group_bytes, group.gid);
            put_u32(&mut group_bytes, to_u32(member_count, "members")?);
            put_u32(&mut group_bytes, to_u32(group.members.len(), "members")?);
            put_u32(&mut group_bytes, 0);
            for member in &group.members {
                put_ref(&mut member_bytes, enc.string(member)?);
            }
            member_count += group.members.len();
        }

        let user_keys: Vec<u64> = users.iter().map(|u| name_key(u.name.as_bytes())).collect();
        let group_keys: Vec<u64> = groups.iter().map(|g| name_key(g.name.as_bytes())).collect();
        let users_off = HEADER_LEN;
        let user_keys_off = users_off + user_bytes.len();
        let uid_index_off = user_keys_off + user_keys.len() * NAME_KEY;
        let groups_off = uid_index_off + uid_index.len() * INDEX_ENTRY;
        let group_keys_off = groups_off + group_bytes.len();
        let gid_index_off = group_keys_off + group_keys.len() * NAME_KEY;
        let members_off = gid_index_off + gid_index.len() * INDEX_ENTRY;
        let strings_off = members_off + member_bytes.len();
        let file_len = strings_off + enc.strings.len();
        if file_len as u64 > MAX_CACHE_LEN {
            return Err(invalid(format!(
                "{file_len} bytes is over the {MAX_CACHE_LEN}-byte limit"
            )));
        }

        let mut out = Vec::with_capacity(file_len);
        out.extend_from_slice(&MAGIC);
        put_u32(&mut out, VERSION);
        put_u32(&mut out, HEADER_LEN as u32);
        out.extend_from_slice(&(file_len as u64).to_le_bytes());
        for value in [
            users.len(),
            groups.len(),
            member_count,
            strings_off,
            enc.strings.len(),
            users_off,
            user_keys_off,
            uid_index_off,
            groups_off,
            group_keys_off,
            gid_index_off,
            members_off,
        ] {
            put_u32(&mut out, to_u32(value, "header field")?);
        }
        out.extend_from_slice(&generation.to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_LEN);
        out.extend_from_slice(&user_bytes);
        user_keys
            .iter()
            .for_each(|k| out.extend_from_slice(&k.to_le_bytes()));
        uid_index.iter().for_each(|(id, i)| {
            put_u32(&mut out, *id);
            put_u32(&mut out, *i);
        });
        out.extend_from_slice(&group_bytes);
        group_keys
            .iter()
            .for_each(|k| out.extend_from_slice(&k.to_le_bytes()));
        gid_index.iter().for_each(|(id, i)| {
            put_u32(&mut out, *id);
            put_u32(&mut out, *i);
        });
        out.extend_from_slice(&member_bytes);
        out.extend_from_slice(&enc.strings);
        debug_assert_eq!(out.len(), file_len);
        Ok(out)
    }
}

/// The first 8 bytes of a name, zero-padded, as a big-endian number:
/// keys order like the names they start (ties are settled on the names).
fn name_key(name: &[u8]) -> u64 {
    let mut key = [0u8; 8];
    let len = name.len().min(8);
    key[..len].copy_from_slice(&name[..len]);
    u64::from_be_bytes(key)
}

/// (id, record number) pairs sorted by id; refuses an id used twice.
fn id_index<T>(records: &[&T], id: impl Fn(&T) -> u32, kind: &str) -> Result<Vec<(u32, u32)>> {
    let mut index: Vec<(u32, u32)> = Vec::with_capacity(records.len());
    for (i, record) in records.iter().enumerate() {
        index.push((id(record), to_u32(i, "record count")?));
    }
    index.sort_unstable();
    for pair in index.windows(2) {
        if pair[0].0 == pair[1].0 {
            return Err(invalid(format!("{kind} {} given twice", pair[0].0)));
        }
    }
    Ok(index)
}

fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

fn put_ref(out: &mut Vec<u8>, (offset, len): (u32, u32)) {
    put_u32(out, offset);
    put_u32(out, len);
}

/// A passwd entry borrowed from an open cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserEntry<'a> {
    pub name: &'a str,
    pub uid: u32,
    pub gid: u32,
    pub gecos: &'a str,
    pub home: &'a str,
    pub shell: &'a str,
}

impl UserEntry<'_> {
    pub fn owned(&self) -> NssUser {
        NssUser {
            name: self.name.to_string(),
            uid: self.uid,
            gid: self.gid,
            gecos: self.gecos.to_string(),
            home: self.home.to_string(),
            shell: self.shell.to_string(),
        }
    }
}

/// A group entry borrowed from an open cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry<'a> {
    pub name: &'a str,
    pub gid: u32,
    pub members: Vec<&'a str>,
}

impl GroupEntry<'_> {
    pub fn owned(&self) -> NssGroup {
        NssGroup {
            name: self.name.to_string(),
            gid: self.gid,
            members: self.members.iter().map(|m| m.to_string()).collect(),
        }
    }
}

/// Identity of the file a cache was read from: device, inode, mtime, size.
/// A different stamp at the path means the file was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub ino: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub len: u64,
}

impl FileStamp {
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            len: meta.len(),
        }
    }
}

/// Offsets of the sections, read from a checked header.
#[derive(Debug, Clone, Copy)]
struct Layout {
    user_count: usize,
    group_count: usize,
    member_count: usize,
    strings: (usize, usize),
    users: usize,
    user_keys: usize,
    uid_index: usize,
    groups: usize,
    group_keys: usize,
    gid_index: usize,
    members: usize,
}

enum Storage {
    Mapped(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(map) => map,
            Storage::Owned(bytes) => bytes,
        }
    }
}

/// An open cache file: lookups by binary search on the mapped bytes.
pub struct NssCache {
    storage: Storage,
    layout: Layout,
    stamp: Option<FileStamp>,
}

impl std::fmt::Debug for NssCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NssCache")
            .field("users", &self.layout.user_count)
            .field("groups", &self.layout.group_count)
            .field("stamp", &self.stamp)
            .finish()
    }
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let slice = bytes.get(at..end)?;
    Some(u32::from_le_bytes(slice.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let end = at.checked_add(8)?;
    let slice = bytes.get(at..end)?;
    Some(u64::from_le_bytes(slice.try_into().ok()?))
}

/// Checks the header against the file length; returns the layout.
fn parse_header(bytes: &[u8]) -> Result<Layout> {
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "{} bytes is shorter than the header",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt("bad magic: not a jms NSS cache"));
    }
    let field = |at: usize| {
        le_u32(bytes, at)
            .map(|v| v as usize)
            .ok_or_else(|| corrupt("short header"))
    };
    let version = le_u32(bytes, 8).ok_or_else(|| corrupt("short header"))?;
    if version != VERSION {
        return Err(NssCacheError::Version { found: version });
    }
    if field(12)? != HEADER_LEN {
        return Err(corrupt("bad header length"));
    }
    let file_len = le_u64(bytes, 16).ok_or_else(|| corrupt("short header"))?;
    if file_len != bytes.len() as u64 {
        return Err(corrupt(format!(
            "file is {} bytes, header says {file_len} (truncated or overwritten)",
            bytes.len()
        )));
    }
    let layout = Layout {
        user_count: field(24)?,
        group_count: field(28)?,
        member_count: field(32)?,
        strings: (field(36)?, field(40)?),
        users: field(44)?,
        user_keys: field(48)?,
        uid_index: field(52)?,
        groups: field(56)?,
        group_keys: field(60)?,
        gid_index: field(64)?,
        members: field(68)?,
    };
    let (users, groups) = (layout.user_count, layout.group_count);
    let sections = [
        ("strings", layout.strings.0, Some(layout.strings.1)),
        ("users", layout.users, users.checked_mul(USER_RECORD)),
        ("user keys", layout.user_keys, users.checked_mul(NAME_KEY)),
        (
            "uid index",
            layout.uid_index,
            users.checked_mul(INDEX_ENTRY),
        ),
        ("groups", layout.groups, groups.checked_mul(GROUP_RECORD)),
        (
            "group keys",
            layout.group_keys,
            groups.checked_mul(NAME_KEY),
        ),
        (
            "gid index",
            layout.gid_index,
            groups.checked_mul(INDEX_ENTRY),
        ),
        (
            "members",
            layout.members,
            layout.member_count.checked_mul(STR_REF),
        ),
    ];
    for (name, offset, len) in sections {
        let end = len.and_then(|len| offset.checked_add(len));
        match end {
            Some(end) if offset >= HEADER_LEN && end <= bytes.len() => {}
            _ => return Err(corrupt(format!("{name} section lies outside the file"))),
        }
    }
    Ok(layout)
}

impl NssCache {
    /// Opens and maps the cache at `path`, checking its header.
    pub fn open(path: &Path) -> Result<NssCache> {
        let io_err = |action: &'static str| {
            move |source: io::Error| NssCacheError::Io {
                path: path.to_path_buf(),
                action,
                source,
            }
        };
        let file = fs::File::open(path).map_err(io_err("cannot open NSS cache"))?;
        let meta = file.metadata().map_err(io_err("cannot stat NSS cache"))?;
        if !meta.is_file() {
            return Err(corrupt(format!("{} is not a regular file", path.display())));
        }
        if meta.len() < HEADER_LEN as u64 {
            return Err(corrupt(format!(
                "{} bytes is shorter than the header",
                meta.len()
            )));
        }
        if meta.len() > MAX_CACHE_LEN {
            return Err(corrupt(format!(
                "{} bytes is over the {MAX_CACHE_LEN}-byte limit",
                meta.len()
            )));
        }
        // SAFETY: the cache is only ever replaced by rename, never modified
        // in place, so the mapped inode does not change while it is mapped;
        // every read of the map goes through bounds-checked slices.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err("cannot map NSS cache"))?;
        let layout = parse_header(&map)?;
        Ok(NssCache {
            storage: Storage::Mapped(map),
            layout,
            stamp: Some(FileStamp::of(&meta)),
        })
    }

    /// A cache over bytes in memory (tests, tools).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<NssCache> {
        let layout = parse_header(&bytes)?;
        Ok(NssCache {
            storage: Storage::Owned(bytes),
            layout,
            stamp: None,
        })
    }

    /// The identity of the file this cache was opened from.
    pub fn stamp(&self) -> Option<FileStamp> {
        self.stamp
    }

    /// The generation in the header (see the overlay in the module doc).
    pub fn generation(&self) -> u64 {
        le_u64(self.bytes(), GENERATION_AT).unwrap_or(0)
    }

    pub fn user_count(&self) -> usize {
        self.layout.user_count
    }

    pub fn group_count(&self) -> usize {
        self.layout.group_count
    }

    fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    fn u32_at(&self, at: usize) -> Result<u32> {
        le_u32(self.bytes(), at).ok_or_else(|| corrupt(format!("read past the end at {at}")))
    }

    fn str_at(&self, at: usize) -> Result<&str> {
        let offset = self.u32_at(at)? as usize;
        let len = self.u32_at(at + 4)? as usize;
        let (start, table_len) = self.layout.strings;
        let bytes = offset
            .checked_add(len)
            .filter(|end| *end <= table_len)
            .and_then(|end| self.bytes().get(start + offset..start + end))
            .ok_or_else(|| corrupt(format!("string ref at {at} lies outside the string table")))?;
        std::str::from_utf8(bytes).map_err(|_| corrupt(format!("string at {at} is not UTF-8")))
    }

    fn users_table(&self) -> Table {
        Table {
            kind: "user",
            records: self.layout.users,
            record_size: USER_RECORD,
            keys: self.layout.user_keys,
            index: self.layout.uid_index,
            count: self.layout.user_count,
        }
    }

    fn groups_table(&self) -> Table {
        Table {
            kind: "group",
            records: self.layout.groups,
            record_size: GROUP_RECORD,
            keys: self.layout.group_keys,
            index: self.layout.gid_index,
            count: self.layout.group_count,
        }
    }

    /// User record number `i` (in name order).
    pub fn user_at(&self, i: usize) -> Result<UserEntry<'_>> {
        let at = self.users_table().record(i)?;
        Ok(UserEntry {
            name: self.str_at(at)?,
            uid: self.u32_at(at + 8)?,
            gid: self.u32_at(at + 12)?,
            gecos: self.str_at(at + 16)?,
            home: self.str_at(at + 24)?,
            shell: self.str_at(at + 32)?,
        })
    }

    /// Group record number `i` (in name order), with its members.
    pub fn group_at(&self, i: usize) -> Result<GroupEntry<'_>> {
        let at = self.groups_table().record(i)?;
        let first = self.u32_at(at + 12)? as usize;
        let count = self.u32_at(at + 16)? as usize;
        let end = first
            .checked_add(count)
            .filter(|end| *end <= self.layout.member_count)
            .ok_or_else(|| corrupt(format!("group {i}: members lie outside the member list")))?;
        let mut members = Vec::with_capacity(count);
        for m in first..end {
            members.push(self.str_at(self.layout.members + m * STR_REF)?);
        }
        Ok(GroupEntry {
            name: self.str_at(at)?,
            gid: self.u32_at(at + 8)?,
            members,
        })
    }

    fn name_of(&self, table: Table, i: usize) -> Result<&str> {
        self.str_at(table.record(i)?)
    }

    /// The uid or gid of record `i` (both records keep it at offset 8).
    fn id_of(&self, table: Table, i: usize) -> Result<u32> {
        self.u32_at(table.record(i)? + 8)
    }

    fn key_of(&self, table: Table, i: usize) -> Result<u64> {
        let at = table.entry(table.keys, NAME_KEY, i)?;
        le_u64(self.bytes(), at).ok_or_else(|| corrupt(format!("read past the end at {at}")))
    }

    /// Entry `k` of the id index: (id, record number).
    fn index_entry(&self, table: Table, k: usize) -> Result<(u32, usize)> {
        let at = table.entry(table.index, INDEX_ENTRY, k)?;
        Ok((self.u32_at(at)?, self.u32_at(at + 4)? as usize))
    }

    /// Binary search over `count` entries; `order(i)` says how entry `i`
    /// compares with what is sought.
    fn search(count: usize, order: impl Fn(usize) -> Result<Ordering>) -> Result<Option<usize>> {
        let (mut low, mut high) = (0usize, count);
        while low < high {
            let mid = low + (high - low) / 2;
            match order(mid)? {
                Ordering::Less => low = mid + 1,
                Ordering::Greater => high = mid,
                Ordering::Equal => return Ok(Some(mid)),
            }
        }
        Ok(None)
    }

    /// The record named `name`: compares the dense name keys, and the
    /// names themselves only when the keys tie.
    fn find_name(&self, table: Table, name: &str) -> Result<Option<usize>> {
        let key = name_key(name.as_bytes());
        Self::search(table.count, |i| match self.key_of(table, i)?.cmp(&key) {
            Ordering::Equal => Ok(self.name_of(table, i)?.as_bytes().cmp(name.as_bytes())),
            other => Ok(other),
        })
    }

    /// The record with uid or gid `id`, through the id index.
    fn find_id(&self, table: Table, id: u32) -> Result<Option<usize>> {
        let found = Self::search(table.count, |k| Ok(self.index_entry(table, k)?.0.cmp(&id)))?;
        let Some(k) = found else { return Ok(None) };
        let (_, i) = self.index_entry(table, k)?;
        if self.id_of(table, i)? != id {
            return Err(corrupt(format!(
                "{} id index entry {k} points to the wrong record",
                table.kind
            )));
        }
        Ok(Some(i))
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserEntry<'_>>> {
        self.find_name(self.users_table(), name)?
            .map(|i| self.user_at(i))
            .transpose()
    }

    pub fn user_by_uid(&self, uid: u32) -> Result<Option<UserEntry<'_>>> {
        self.find_id(self.users_table(), uid)?
            .map(|i| self.user_at(i))
            .transpose()
    }

    pub fn group_by_name(&self, name: &str) -> Result<Option<GroupEntry<'_>>> {
        self.find_name(self.groups_table(), name)?
            .map(|i| self.group_at(i))
            .transpose()
    }

    pub fn group_by_gid(&self, gid: u32) -> Result<Option<GroupEntry<'_>>> {
        self.find_id(self.groups_table(), gid)?
            .map(|i| self.group_at(i))
            .transpose()
    }

    /// Every user, in name order.
    pub fn users(&self) -> impl Iterator<Item = Result<UserEntry<'_>>> + '_ {
        (0..self.layout.user_count).map(move |i| self.user_at(i))
    }

    /// Every group, in name order.
    pub fn groups(&self) -> impl Iterator<Item = Result<GroupEntry<'_>>> + '_ {
        (0..self.layout.group_count).map(move |i| self.group_at(i))
    }

    /// Everything the cache holds, owned.
    pub fn to_data(&self) -> Result<NssData> {
        Ok(NssData {
            users: self
                .users()
                .map(|u| u.map(|u| u.owned()))
                .collect::<Result<_>>()?,
            groups: self
                .groups()
                .map(|g| g.map(|g| g.owned()))
                .collect::<Result<_>>()?,
        })
    }

    /// Checks every record, so that every lookup finds what it should:
    /// all readable, names strictly sorted, name keys matching the names,
    /// each id index a permutation of the records sorted by id.
    pub fn verify(&self) -> Result<()> {
        for i in 0..self.layout.user_count {
            self.user_at(i)?;
        }
        for i in 0..self.layout.group_count {
            self.group_at(i)?;
        }
        for table in [self.users_table(), self.groups_table()] {
            let kind = table.kind;
            let mut previous: Option<&str> = None;
            for i in 0..table.count {
                let name = self.name_of(table, i)?;
                if previous.is_some_and(|p| p.as_bytes() >= name.as_bytes()) {
                    return Err(corrupt(format!("{kind} names out of order at {i}")));
                }
                if self.key_of(table, i)? != name_key(name.as_bytes()) {
                    return Err(corrupt(format!(
                        "{kind} name key {i} does not match its name"
                    )));
                }
                previous = Some(name);
            }
            let mut seen = vec![false; table.count];
            let mut previous_id: Option<u32> = None;
            for k in 0..table.count {
                let (id, i) = self.index_entry(table, k)?;
                match seen.get_mut(i) {
                    Some(slot) if !*slot => *slot = true,
                    _ => return Err(corrupt(format!("{kind} id index entry {k} is bad"))),
                }
                if self.id_of(table, i)? != id || previous_id.is_some_and(|p| p >= id) {
                    return Err(corrupt(format!("{kind} id index out of order at {k}")));
                }
                previous_id = Some(id);
            }
        }
        Ok(())
    }
}

/// Where one kind of record lives in the file.
#[derive(Debug, Clone, Copy)]
struct Table {
    kind: &'static str,
    records: usize,
    record_size: usize,
    keys: usize,
    index: usize,
    count: usize,
}

impl Table {
    /// Offset of entry `i` of an array of `count` entries of `size` bytes at
    /// `base` (checked against the count; the header check bounded the
    /// array by the file).
    fn entry(&self, base: usize, size: usize, i: usize) -> Result<usize> {
        if i >= self.count {
            return Err(corrupt(format!(
                "{} entry {i} of {}",
                self.kind, self.count
            )));
        }
        i.checked_mul(size)
            .and_then(|o| o.checked_add(base))
            .ok_or_else(|| corrupt("entry offset overflows"))
    }

    fn record(&self, i: usize) -> Result<usize> {
        self.entry(self.records, self.record_size, i)
    }
}

/// The cache with its overlay, as readers see it: an overlay entry wins
/// over the cache's entry of the same name (and id).
#[derive(Debug)]
pub struct NssView {
    base: NssCache,
    overlay: Option<NssCache>,
    /// The file whose replacement means a new state: the overlay, or the
    /// cache when there is none.
    stamp: Option<FileStamp>,
}

impl NssView {
    /// Opens the overlay at `overlay` (missing: none), then the cache at
    /// `path`, and pairs them by generation.
    pub fn open(path: &Path, overlay: &Path) -> Result<NssView> {
        let over = match NssCache::open(overlay) {
            Ok(cache) => {
                check_checksum(cache.bytes())?;
                Some(cache)
            }
            Err(NssCacheError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                None
            }
            Err(e) => return Err(e),
        };
        let base = NssCache::open(path)?;
        let stamp = over.as_ref().map_or(base.stamp, |o| o.stamp);
        NssView::pair(base, over, stamp)
    }

    /// A view over a cache and an overlay (tests, tools).
    pub fn from_parts(base: NssCache, overlay: Option<NssCache>) -> Result<NssView> {
        NssView::pair(base, overlay, None)
    }

    fn pair(
        base: NssCache,
        overlay: Option<NssCache>,
        stamp: Option<FileStamp>,
    ) -> Result<NssView> {
        let overlay = match overlay {
            // An empty overlay (the one a full write leaves) changes nothing:
            // lookups go to the cache alone.
            Some(o) if o.generation() == base.generation() => {
                (o.user_count() + o.group_count() > 0).then_some(o)
            }
            // Written for an older cache: the cache is newer, and whole.
            Some(o) if o.generation() < base.generation() => None,
            Some(_) => {
                return Err(corrupt(
                    "the overlay names a newer cache than the one found",
                ))
            }
            None => None,
        };
        Ok(NssView {
            base,
            overlay,
            stamp,
        })
    }

    /// The identity of the file that commits a new state.
    pub fn stamp(&self) -> Option<FileStamp> {
        self.stamp
    }

    /// The cache under the overlay.
    pub fn base(&self) -> &NssCache {
        &self.base
    }

    /// The overlay in force, if any.
    pub fn overlay(&self) -> Option<&NssCache> {
        self.overlay.as_ref()
    }

    pub fn user_by_name(&self, name: &str) -> Result<Option<UserEntry<'_>>> {
        let Some(overlay) = &self.overlay else {
            return self.base.user_by_name(name);
        };
        match overlay.user_by_name(name)? {
            Some(user) => {
                if self
                    .base
                    .user_by_name(name)?
                    .is_some_and(|b| b.uid != user.uid)
                {
                    return Err(corrupt(format!("overlay: user {name:?} changed uid")));
                }
                Ok(Some(user))
            }
            None => self.base.user_by_name(name),
        }
    }

    pub fn user_by_uid(&self, uid: u32) -> Result<Option<UserEntry<'_>>> {
        let Some(overlay) = &self.overlay else {
            return self.base.user_by_uid(uid);
        };
        let found = self.base.user_by_uid(uid)?;
        match overlay.user_by_uid(uid)? {
            Some(user) => match found {
                Some(b) if b.name != user.name => {
                    Err(corrupt(format!("overlay: uid {uid} changed user")))
                }
                _ => Ok(Some(user)),
            },
            None => match found {
                // The overlay has her under another uid.
                Some(b) if overlay.user_by_name(b.name)?.is_some() => {
                    Err(corrupt(format!("overlay: user {:?} changed uid", b.name)))
                }
                other => Ok(other),
            },
        }
    }

    pub fn group_by_name(&self, name: &str) -> Result<Option<GroupEntry<'_>>> {
        let Some(overlay) = &self.overlay else {
            return self.base.group_by_name(name);
        };
        match overlay.group_by_name(name)? {
            Some(group) => {
                if self
                    .base
                    .group_by_name(name)?
                    .is_some_and(|b| b.gid != group.gid)
                {
                    return Err(corrupt(format!("overlay: group {name:?} changed gid")));
                }
                Ok(Some(group))
            }
            None => self.base.group_by_name(name),
        }
    }

    pub fn group_by_gid(&self, gid: u32) -> Result<Option<GroupEntry<'_>>> {
        let Some(overlay) = &self.overlay else {
            return self.base.group_by_gid(gid);
        };
        let found = self.base.group_by_gid(gid)?;
        match overlay.group_by_gid(gid)? {
            Some(group) => match found {
                Some(b) if b.name != group.name => {
                    Err(corrupt(format!("overlay: gid {gid} changed group")))
                }
                _ => Ok(Some(group)),
            },
            None => match found {
                Some(b) if overlay.group_by_name(b.name)?.is_some() => {
                    Err(corrupt(format!("overlay: group {:?} changed gid", b.name)))
                }
                other => Ok(other),
            },
        }
    }

    /// Every user: the cache's not in the overlay, then the overlay's.
    pub fn users(&self) -> impl Iterator<Item = Result<UserEntry<'_>>> + '_ {
        let overlay = self.overlay.as_ref();
        self.base
            .users()
            .filter(move |u| match (u, overlay) {
                (Ok(u), Some(o)) => !matches!(o.user_by_name(u.name), Ok(Some(_))),
                _ => true,
            })
            .chain(overlay.into_iter().flat_map(|o| o.users()))
    }

    /// Every group: the cache's not in the overlay, then the overlay's.
    pub fn groups(&self) -> impl Iterator<Item = Result<GroupEntry<'_>>> + '_ {
        let overlay = self.overlay.as_ref();
        self.base
            .groups()
            .filter(move |g| match (g, overlay) {
                (Ok(g), Some(o)) => !matches!(o.group_by_name(g.name), Ok(Some(_))),
                _ => true,
            })
            .chain(overlay.into_iter().flat_map(|o| o.groups()))
    }

    /// Everything the view holds, owned, sorted by name.
    pub fn to_data(&self) -> Result<NssData> {
        let mut data = NssData {
            users: self
                .users()
                .map(|u| u.map(|u| u.owned()))
                .collect::<Result<_>>()?,
            groups: self
                .groups()
                .map(|g| g.map(|g| g.owned()))
                .collect::<Result<_>>()?,
        };
        data.users
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        data.groups
            .sort_by(|a, b| a.name.as_bytes().cmp(b.name.as_bytes()));
        Ok(data)
    }
}

/// One cache per process, re-opened when a new state is committed.
///
/// Each call costs one `stat`: of the overlay, the file every publish
/// replaces last (of the cache when there is no overlay). The lock is held
/// only to compare stamps and (rarely) re-open; lookups run on a shared
/// `Arc` outside it. A call that finds the lock taken (another thread
/// re-opening, or a child forked while a thread held it) opens a private
/// copy instead of waiting.
#[derive(Debug)]
pub struct ReloadingCache {
    path: &'static str,
    overlay: &'static str,
    current: Mutex<Option<Arc<NssView>>>,
}

impl ReloadingCache {
    /// The cache at `path` with its overlay at `overlay` (see
    /// [`overlay_path`]).
    pub const fn new(path: &'static str, overlay: &'static str) -> Self {
        ReloadingCache {
            path,
            overlay,
            current: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &'static str {
        self.path
    }

    /// The cache as the files at the paths are now.
    pub fn get(&self) -> Result<Arc<NssView>> {
        let (path, overlay) = (Path::new(self.path), Path::new(self.overlay));
        let stamp = match fs::metadata(overlay).or_else(|_| fs::metadata(path)) {
            Ok(meta) => FileStamp::of(&meta),
            Err(source) => {
                // Gone: drop the old mapping too.
                if let Ok(mut current) = self.current.try_lock() {
                    *current = None;
                }
                return Err(NssCacheError::Io {
                    path: path.to_path_buf(),
                    action: "cannot stat NSS cache",
                    source,
                });
            }
        };
        let mut current = match self.current.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return NssView::open(path, overlay).map(Arc::new),
        };
        if let Some(cache) = current.as_ref() {
            if cache.stamp() == Some(stamp) {
                return Ok(Arc::clone(cache));
            }
        }
        *current = None;
        let cache = Arc::new(NssView::open(path, overlay)?);
        *current = Some(Arc::clone(&cache));
        Ok(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Format;
    use crate::uids::IdRanges;

    fn user(name: &str, uid: u32) -> NssUser {
        NssUser {
            name: name.to_string(),
            uid,
            gid: 100,
            gecos: format!("{name} gecos"),
            home: "/".to_string(),
            shell: DEFAULT_SHELL.to_string(),
        }
    }

    fn sample() -> NssData {
        NssData {
            users: vec![user("carol", 7), user("alice", 5), user("bob", 9)],
            groups: vec![
                NssGroup {
                    name: "ops".into(),
                    gid: 300,
                    members: vec!["alice".into(), "bob".into()],
                },
                NssGroup {
                    name: "jms-users".into(),
                    gid: 100,
                    members: vec![],
                },
                NssGroup {
                    name: "dev".into(),
                    gid: 200,
                    members: vec!["carol".into()],
                },
            ],
        }
    }

    fn sorted(mut data: NssData) -> NssData {
        data.users.sort_by(|a, b| a.name.cmp(&b.name));
        data.groups.sort_by(|a, b| a.name.cmp(&b.name));
        data
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nss.db");
        write_atomic(&path, &sample()).unwrap();
        let mode = fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644, "the cache is world-readable");
        let cache = NssCache::open(&path).unwrap();
        cache.verify().unwrap();
        assert_eq!(cache.to_data().unwrap(), sorted(sample()));
        let alice = cache
            .user_by_name("alice")
            .unwrap()
            .expect("alice is in the cache");
        assert_eq!((alice.uid, alice.gid, alice.gecos), (5, 100, "alice gecos"));
        assert_eq!(cache.user_by_uid(9).unwrap().map(|u| u.name), Some("bob"));
        assert_eq!(cache.user_by_name("dave").unwrap(), None);
        assert_eq!(cache.user_by_uid(6).unwrap(), None);
        let ops = cache.group_by_name("ops").unwrap().unwrap();
        assert_eq!(ops.members, ["alice", "bob"]);
        assert_eq!(cache.group_by_gid(200).unwrap().unwrap().name, "dev");
        assert_eq!(cache.group_by_gid(201).unwrap(), None);
        assert_eq!(cache.group_by_name("nope").unwrap(), None);
        assert!(cache.stamp().is_some());
    }

    #[test]
    fn an_empty_cache_answers_not_found() {
        let cache = NssCache::from_bytes(NssData::default().encode().unwrap()).unwrap();
        cache.verify().unwrap();
        assert_eq!(cache.user_by_name("a").unwrap(), None);
        assert_eq!(cache.user_by_uid(0).unwrap(), None);
        assert_eq!(cache.group_by_name("a").unwrap(), None);
        assert_eq!(cache.group_by_gid(0).unwrap(), None);
        assert_eq!(cache.users().count(), 0);
    }

    #[test]
    fn duplicate_names_and_ids_are_refused() {
        let mut data = sample();
        data.users.push(user("alice", 99));
        assert!(matches!(data.encode(), Err(NssCacheError::Invalid(_))));
        let mut data = sample();
        data.users.push(user("zed", 5));
        let err = data.encode().unwrap_err();
        assert!(err.to_string().contains("uid 5 given twice"), "{err}");
        let mut data = sample();
        data.groups[0].gid = 200;
        assert!(data.encode().unwrap_err().to_string().contains("gid 200"));
    }

    #[test]
    fn a_hundred_thousand_users_are_found_by_name_and_uid() {
        let n = 100_000u32;
        let data = NssData {
            // Names and uids in opposite orders, so the two indexes differ.
            users: (0..n)
                .map(|i| user(&format!("user{i:06}"), 200_000 + (n - 1 - i)))
                .collect(),
            groups: vec![NssGroup {
                name: "big".into(),
                gid: 1,
                members: (0..n).map(|i| format!("user{i:06}")).collect(),
            }],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nss.db");
        write_atomic(&path, &data).unwrap();
        let cache = NssCache::open(&path).unwrap();
        cache.verify().unwrap();
        assert_eq!(cache.user_count(), n as usize);
        for i in (0..n).step_by(997).chain([0, n - 1]) {
            let name = format!("user{i:06}");
            let by_name = cache.user_by_name(&name).unwrap().expect("found by name");
            assert_eq!(by_name.uid, 200_000 + (n - 1 - i));
            let by_uid = cache
                .user_by_uid(by_name.uid)
                .unwrap()
                .expect("found by uid");
            assert_eq!(by_uid.name, name);
        }
        assert_eq!(
            cache.group_by_gid(1).unwrap().unwrap().members.len(),
            n as usize
        );
        assert_eq!(cache.users().filter(|u| u.is_ok()).count(), n as usize);
    }

    #[test]
    fn odd_names_round_trip_and_sort_by_bytes() {
        let names = [
            "ünïcödé",
            "a b",
            "tab\there",
            "日本語",
            "emoji🦀",
            "Z",
            "a",
            "a\u{0}nul",
            "x:y",
            "",
            "\u{7f}",
            "a\u{10FFFF}",
            // Same first 8 bytes: the name keys tie, the names decide.
            "alexander",
            "alexander.one",
            "alexander.two",
            "alexande",
            "alexande\u{0}",
        ];
        let data = NssData {
            users: names
                .iter()
                .enumerate()
                .map(|(i, n)| user(n, i as u32))
                .collect(),
            groups: names
                .iter()
                .enumerate()
                .map(|(i, n)| NssGroup {
                    name: n.to_string(),
                    gid: 1000 + i as u32,
                    members: names.iter().map(|m| m.to_string()).collect(),
                })
                .collect(),
        };
        let cache = NssCache::from_bytes(data.encode().unwrap()).unwrap();
        cache.verify().unwrap();
        for (i, name) in names.iter().enumerate() {
            let found = cache
                .user_by_name(name)
                .unwrap()
                .unwrap_or_else(|| panic!("{name:?} not found"));
            assert_eq!(found.uid, i as u32);
            assert_eq!(cache.user_by_uid(i as u32).unwrap().unwrap().name, *name);
            let group = cache.group_by_name(name).unwrap().unwrap();
            assert_eq!(group.members, names);
        }
        for absent in [
            "a\u{0}",
            "alexander.",
            "alexande\u{0}\u{0}",
            "alexandex",
            "alex",
        ] {
            assert_eq!(cache.user_by_name(absent).unwrap(), None, "{absent:?}");
        }
    }

    #[test]
    fn every_truncated_prefix_is_an_error_without_panic() {
        let bytes = sample().encode().unwrap();
        for len in 0..bytes.len() {
            let result = NssCache::from_bytes(bytes[..len].to_vec());
            assert!(
                result.is_err(),
                "a {len}-byte prefix of {} was accepted",
                bytes.len()
            );
        }
        // And through the file path (open checks the length before mapping).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nss.db");
        for len in [0, 1, HEADER_LEN - 1, HEADER_LEN, bytes.len() - 1] {
            fs::write(&path, &bytes[..len]).unwrap();
            assert!(NssCache::open(&path).is_err(), "{len}-byte file accepted");
        }
        assert!(NssCache::open(&dir.path().join("missing")).is_err());
        assert!(
            NssCache::open(dir.path()).is_err(),
            "a directory is not a cache"
        );
    }

    /// Runs every query on a cache; results do not matter, panics do.
    fn exercise(cache: &NssCache) {
        let _ = cache.verify();
        let _ = cache.to_data();
        for name in [
            "alice",
            "bob",
            "carol",
            "ops",
            "dev",
            "jms-users",
            "zzz",
            "",
        ] {
            let _ = cache.user_by_name(name);
            let _ = cache.group_by_name(name);
        }
        for id in [0, 5, 7, 9, 100, 200, 300, u32::MAX] {
            let _ = cache.user_by_uid(id);
            let _ = cache.group_by_gid(id);
        }
        cache.users().for_each(drop);
        cache.groups().for_each(drop);
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let bytes = sample().encode().unwrap();
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Every single byte set to a few values ...
        for at in 0..bytes.len() {
            for value in [0x00, 0xFF, 0x7F, 0x80, bytes[at] ^ 1] {
                let mut copy = bytes.clone();
                copy[at] = value;
                if let Ok(cache) = NssCache::from_bytes(copy) {
                    exercise(&cache);
                }
            }
        }
        // ... then random multi-byte damage.
        for _ in 0..3000 {
            let mut copy = bytes.clone();
            for _ in 0..1 + next() % 8 {
                let at = (next() as usize) % copy.len();
                copy[at] = next() as u8;
            }
            if let Ok(cache) = NssCache::from_bytes(copy) {
                exercise(&cache);
            }
        }
    }

    #[test]
    fn header_damage_is_caught_at_open() {
        let bytes = sample().encode().unwrap();
        let damaged = |at: usize, value: u32| {
            let mut copy = bytes.clone();
            copy[at..at + 4].copy_from_slice(&value.to_le_bytes());
            NssCache::from_bytes(copy)
        };
        assert!(
            matches!(damaged(0, 0), Err(NssCacheError::Corrupt(_))),
            "magic"
        );
        assert!(matches!(
            damaged(8, 2),
            Err(NssCacheError::Version { found: 2 })
        ));
        assert!(damaged(24, u32::MAX).is_err(), "user count");
        assert!(damaged(32, 1 << 30).is_err(), "member count");
        assert!(damaged(36, u32::MAX).is_err(), "strings offset");
        assert!(damaged(44, 3).is_err(), "users inside the header");
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(NssCache::from_bytes(longer).is_err(), "trailing bytes");
    }

    #[test]
    fn a_wrong_id_index_is_an_error_not_a_wrong_answer() {
        let mut bytes = sample().encode().unwrap();
        let index = le_u32(&bytes, 52).unwrap() as usize;
        // Point the first uid index entry (uid 5, alice) at record 1 (bob).
        bytes[index + 4..index + 8].copy_from_slice(&1u32.to_le_bytes());
        let cache = NssCache::from_bytes(bytes).unwrap();
        assert!(matches!(
            cache.user_by_uid(5),
            Err(NssCacheError::Corrupt(_))
        ));
        assert!(cache.verify().is_err());
    }

    #[test]
    fn verify_catches_a_wrong_name_key() {
        let mut bytes = sample().encode().unwrap();
        let keys = le_u32(&bytes, 48).unwrap() as usize;
        bytes[keys] ^= 0x20;
        assert!(NssCache::from_bytes(bytes).unwrap().verify().is_err());
    }

    #[test]
    fn verify_catches_unsorted_records() {
        let mut bytes = sample().encode().unwrap();
        // Swap the uids of the first two users: the uid index is now wrong.
        let users = le_u32(&bytes, 44).unwrap() as usize;
        let (a, b) = (users + 8, users + USER_RECORD + 8);
        let uid_a: [u8; 4] = bytes[a..a + 4].try_into().unwrap();
        let uid_b: [u8; 4] = bytes[b..b + 4].try_into().unwrap();
        bytes[a..a + 4].copy_from_slice(&uid_b);
        bytes[b..b + 4].copy_from_slice(&uid_a);
        let cache = NssCache::from_bytes(bytes).unwrap();
        assert!(cache.verify().is_err());
    }

    const POLICY: &str = r#"
users:
  - {username: alice, name: "Alice: Liu\nthe admin", groups: [ops]}
  - {username: bob, name: Bob, groups: [ops, dev]}
  - {username: carol, is_active: false}
user_groups:
  - {name: ops}
  - {name: dev}
  - {name: empty}
"#;

    fn policy(text: &str) -> Policy {
        Policy::parse(text, Format::Yaml, "test.yaml", Path::new(".")).unwrap()
    }

    #[test]
    fn from_policy_builds_users_and_groups() {
        let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
        let data =
            NssData::from_policy(&policy(POLICY), &mut ids, &NssSettings::default()).unwrap();
        let jms_gid = ids.get(crate::uids::IdKind::Group, "jms-users").unwrap();
        assert_eq!(jms_gid, 200_000, "the primary group gets the first gid");
        let alice = &data.users[0];
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, 200_000);
        assert_eq!(alice.gid, jms_gid);
        assert_eq!(
            alice.gecos, "Alice Liuthe admin",
            "`:` and newlines are stripped"
        );
        assert_eq!(
            (alice.home.as_str(), alice.shell.as_str()),
            ("/", "/usr/bin/jms-agent")
        );
        let carol = data
            .users
            .iter()
            .find(|u| u.name == "carol")
            .expect("disabled users stay");
        assert_eq!(carol.uid, 200_002);
        let group = |name: &str| data.groups.iter().find(|g| g.name == name).unwrap().clone();
        assert_eq!(group("ops").members, ["alice", "bob"]);
        assert_eq!(group("dev").members, ["bob"]);
        assert_eq!(group("empty").members, Vec::<String>::new());
        assert_eq!(group("jms-users").gid, jms_gid);
        assert_eq!(data.groups.len(), 4);
        data.encode().unwrap();
    }

    #[test]
    fn ids_from_policy_are_stable_when_the_policy_changes() {
        let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
        NssData::from_policy(&policy(POLICY), &mut ids, &NssSettings::default()).unwrap();
        let changed = r#"
users:
  - {username: dave}
  - {username: bob, groups: [dev]}
user_groups:
  - {name: dev}
"#;
        let data =
            NssData::from_policy(&policy(changed), &mut ids, &NssSettings::default()).unwrap();
        let uid = |name: &str| data.users.iter().find(|u| u.name == name).unwrap().uid;
        assert_eq!(uid("bob"), 200_001, "bob keeps his uid");
        assert_eq!(
            uid("dave"),
            200_003,
            "dave does not get alice's or carol's uid"
        );
        assert_eq!(
            data.groups.iter().find(|g| g.name == "dev").unwrap().gid,
            200_002
        );
    }

    #[test]
    fn a_user_group_named_like_the_primary_group_is_merged() {
        let text = "users:\n  - {username: alice, groups: [jms-users]}\nuser_groups:\n  - {name: jms-users}\n";
        let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
        let data = NssData::from_policy(&policy(text), &mut ids, &NssSettings::default()).unwrap();
        assert_eq!(data.groups.len(), 1);
        assert_eq!(data.groups[0].members, ["alice"]);
        data.encode().unwrap();
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
        for settings in [
            NssSettings {
                home: "relative".into(),
                ..NssSettings::default()
            },
            NssSettings {
                shell: "/bin/x:y".into(),
                ..NssSettings::default()
            },
            NssSettings {
                primary_group: "a:b".into(),
                ..NssSettings::default()
            },
        ] {
            let err = NssData::from_policy(&policy(POLICY), &mut ids, &settings).unwrap_err();
            assert!(
                matches!(err, NssCacheError::Invalid(_)),
                "{settings:?}: {err}"
            );
        }
    }

    /// Writes a full cache of `data` and an overlay of `changed` on it.
    fn with_overlay(dir: &Path, data: &NssData, changed: &NssData) -> (PathBuf, PathBuf) {
        let path = dir.join("nss.db");
        let writer = CacheWriter::write_full(&path, data).unwrap();
        assert!(writer.write_overlay(changed).unwrap());
        (path.clone(), overlay_path(&path))
    }

    #[test]
    fn the_overlay_adds_and_replaces_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut changed = NssData {
            users: vec![user("dave", 11), user("alice", 5)],
            groups: vec![NssGroup {
                name: "ops".into(),
                gid: 300,
                members: vec!["alice".into(), "bob".into(), "dave".into()],
            }],
        };
        changed.users[1].gecos = "Alice, renamed".into();
        let (path, overlay) = with_overlay(dir.path(), &sample(), &changed);
        let view = NssView::open(&path, &overlay).unwrap();
        assert!(view.overlay().is_some());
        assert_eq!(view.user_by_name("dave").unwrap().unwrap().uid, 11);
        assert_eq!(view.user_by_uid(11).unwrap().unwrap().name, "dave");
        assert_eq!(
            view.user_by_uid(5).unwrap().unwrap().gecos,
            "Alice, renamed"
        );
        assert_eq!(
            view.user_by_name("bob").unwrap().unwrap().uid,
            9,
            "from the cache"
        );
        assert_eq!(
            view.group_by_gid(300).unwrap().unwrap().members,
            ["alice", "bob", "dave"]
        );
        let mut expected = sample();
        expected.users.push(user("dave", 11));
        expected.users[1].gecos = "Alice, renamed".into();
        expected.groups[0] = changed.groups[0].clone();
        assert_eq!(view.to_data().unwrap(), sorted(expected));
        assert_eq!(view.users().count(), 4, "alice once");
        assert_eq!(view.groups().count(), 3, "ops once");
    }

    #[test]
    fn the_writer_refuses_an_overlay_that_moves_an_id() {
        let dir = tempfile::tempdir().unwrap();
        let writer = CacheWriter::write_full(&dir.path().join("nss.db"), &sample()).unwrap();
        for users in [vec![user("alice", 6)], vec![user("zed", 5)]] {
            let changed = NssData {
                users,
                groups: vec![],
            };
            let err = writer.write_overlay(&changed).unwrap_err();
            assert!(matches!(err, NssCacheError::Invalid(_)), "{err}");
        }
        // And one past a quarter of the cache is left to a full write.
        let big = NssData {
            users: (0..3000)
                .map(|i| user(&format!("n{i}"), 1000 + i))
                .collect(),
            groups: vec![],
        };
        assert!(!writer.write_overlay(&big).unwrap());
    }

    /// An overlay that breaks the rules (written by hand, damaged) gives
    /// clear errors, never a wrong answer or a panic.
    #[test]
    fn a_bad_overlay_is_an_error_not_a_wrong_answer() {
        let base = NssCache::from_bytes(Encoder::encode(&sample(), 7).unwrap()).unwrap();
        let overlay = |data: &NssData, generation: u64| {
            Some(NssCache::from_bytes(Encoder::encode(data, generation).unwrap()).unwrap())
        };
        let moved = NssData {
            users: vec![user("alice", 6), user("zed", 9)],
            groups: vec![],
        };
        let view = NssView::from_parts(
            NssCache::from_bytes(base.bytes().to_vec()).unwrap(),
            overlay(&moved, 7),
        )
        .unwrap();
        assert!(view.user_by_name("alice").is_err(), "alice changed uid");
        assert!(view.user_by_uid(5).is_err(), "alice's old uid");
        assert!(view.user_by_uid(9).is_err(), "bob's uid under another name");
        // Stale overlays are ignored; one for a newer cache is corrupt.
        let stale = NssView::from_parts(
            NssCache::from_bytes(base.bytes().to_vec()).unwrap(),
            overlay(&moved, 6),
        )
        .unwrap();
        assert!(stale.overlay().is_none());
        assert_eq!(stale.user_by_uid(5).unwrap().unwrap().name, "alice");
        assert!(matches!(
            NssView::from_parts(
                NssCache::from_bytes(base.bytes().to_vec()).unwrap(),
                overlay(&moved, 8)
            ),
            Err(NssCacheError::Corrupt(_))
        ));
        // A damaged overlay file: an error at open.
        let dir = tempfile::tempdir().unwrap();
        let (path, over) = with_overlay(dir.path(), &sample(), &NssData::default());
        fs::write(&over, b"garbage").unwrap();
        assert!(matches!(
            NssView::open(&path, &over),
            Err(NssCacheError::Corrupt(_))
        ));
        // A torn one (a block of zeros, as a crash may leave it): the
        // checksum catches it.
        let changed = NssData {
            users: (0..40)
                .map(|i| user(&format!("n{i:02}"), 1000 + i))
                .collect(),
            groups: vec![],
        };
        let (path, over) = with_overlay(dir.path(), &sample(), &changed);
        assert!(NssView::open(&path, &over).is_ok());
        let mut bytes = fs::read(&over).unwrap();
        bytes[HEADER_LEN + 40..HEADER_LEN + 140].fill(0);
        fs::write(&over, &bytes).unwrap();
        match NssView::open(&path, &over) {
            Err(NssCacheError::Corrupt(e)) => assert!(e.contains("checksum"), "{e}"),
            other => panic!("a torn overlay opened: {other:?}"),
        }
    }

    /// Readers during publishes (overlays and full writes, one after the
    /// other) see only whole states: each one they read was published.
    #[test]
    fn a_reader_during_publishes_sees_only_published_states() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nss.db");
        let overlay = overlay_path(&path);
        let leak = |p: &Path| -> &'static str {
            Box::leak(p.to_str().unwrap().to_string().into_boxed_str())
        };
        let slot: &'static ReloadingCache =
            Box::leak(Box::new(ReloadingCache::new(leak(&path), leak(&overlay))));
        // State k: users u0..u(k+3), group g with all of them.
        let state = |k: u32| NssData {
            users: (0..k + 3)
                .map(|i| user(&format!("u{i:03}"), 100 + i))
                .collect(),
            groups: vec![NssGroup {
                name: "g".into(),
                gid: 10,
                members: (0..k + 3).map(|i| format!("u{i:03}")).collect(),
            }],
        };
        const STATES: u32 = 60;
        let mut writer = CacheWriter::write_full(&path, &state(0)).unwrap();
        let mut since = 0;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut seen = 0u32;
                    let mut last = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let view = slot.get().expect("a reader always finds a cache");
                        let data = view.to_data().expect("a whole state");
                        let k = data.users.len() as u32 - 3;
                        let mut want = state(k);
                        want.users.sort_by(|a, b| a.name.cmp(&b.name));
                        assert_eq!(data, want, "a mixed state");
                        assert!(k >= last, "went back from state {last} to {k}");
                        last = k;
                        seen += 1;
                    }
                    seen
                })
            })
            .collect();
        for k in 1..STATES {
            let data = state(k);
            if k % 7 == 0 {
                writer = CacheWriter::write_full(&path, &data).unwrap();
                since = k;
            } else {
                // The overlay: the users added since the full write, and g.
                let changed = NssData {
                    users: data.users[since as usize + 3..].to_vec(),
                    groups: data.groups.clone(),
                };
                assert!(writer.write_overlay(&changed).unwrap());
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            assert!(reader.join().unwrap() > 0);
        }
        let last = slot.get().unwrap().to_data().unwrap();
        assert_eq!(last.users.len() as u32, STATES - 1 + 3);
    }

    #[test]
    fn reloading_cache_follows_replacement_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nss.db");
        // ReloadingCache wants a 'static path, as the NSS module has.
        let leaked: &'static str = Box::leak(path.to_str().unwrap().to_string().into_boxed_str());
        let overlay = overlay_path(&path);
        let leaked_overlay: &'static str =
            Box::leak(overlay.to_str().unwrap().to_string().into_boxed_str());
        let slot = ReloadingCache::new(leaked, leaked_overlay);
        assert!(slot.get().is_err(), "missing file");
        write_atomic(&path, &sample()).unwrap();
        let first = slot.get().unwrap();
        assert!(first.user_by_name("alice").unwrap().is_some());
        assert!(
            Arc::ptr_eq(&first, &slot.get().unwrap()),
            "unchanged file: same mapping"
        );

        let mut data = sample();
        data.users.push(user("dave", 11));
        write_atomic(&path, &data).unwrap();
        let second = slot.get().unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "replaced file: re-opened");
        assert!(second.user_by_name("dave").unwrap().is_some());
        assert!(
            first.user_by_name("dave").unwrap().is_none(),
            "the old mapping still reads the old file"
        );

        fs::remove_file(&path).unwrap();
        fs::remove_file(&overlay).unwrap();
        assert!(slot.get().is_err(), "removed file: unavailable");
        fs::write(&path, b"garbage").unwrap();
        assert!(matches!(slot.get(), Err(NssCacheError::Corrupt(_))));
    }
}
