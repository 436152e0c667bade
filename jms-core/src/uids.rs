//! Unix uid and gid numbers for jms users and groups.
//!
//! A bastion that runs from a local policy file gives each jms user a uid and
//! each jms group a gid from a configured range (default
//! [`DEFAULT_FIRST_ID`]`..=`[`DEFAULT_LAST_ID`], one range for users and one
//! for groups, each with its own map). The map name → id is persisted as JSON
//! and only ever grows:
//!
//! - a name keeps its id across restarts and policy changes;
//! - a name that leaves the policy keeps its entry ("retired"), so its id is
//!   never handed to another name (files, recordings and logs that carry the
//!   number keep meaning the same person);
//! - when the range has no free id left, allocation fails with
//!   [`IdError::Exhausted`] instead of reusing one.
//!
//! Ids assigned by the central server are recorded with
//! [`IdAllocator::adopt_from_server`]: the server's ids win over local ones.
//!
//! The map is saved with [`IdAllocator::save`]: temp file in the same
//! directory, fsync, rename, fsync of the directory.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs;
use std::io;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// First id of the default range (users and groups alike).
pub const DEFAULT_FIRST_ID: u32 = 200_000;
/// Last id (inclusive) of the default range.
pub const DEFAULT_LAST_ID: u32 = 299_999;
/// Version written in the id map file.
const MAP_VERSION: u32 = 1;
/// Mode of the id map file: names only, but it is the daemon's own state.
const MAP_MODE: u32 = 0o600;

/// Which of the two maps an id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdKind {
    /// A user's uid.
    User,
    /// A group's gid.
    Group,
}

impl fmt::Display for IdKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IdKind::User => "uid",
            IdKind::Group => "gid",
        })
    }
}

/// What went wrong while assigning, loading or saving ids.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// Every id of the range is taken (retired names included): widen the
    /// range in the configuration; ids are never reused.
    #[error("no free {kind} left in {first}..={last} for `{name}`: every id of the range is taken (ids of retired names are never reused); widen the range")]
    Exhausted {
        kind: IdKind,
        name: String,
        first: u32,
        last: u32,
    },
    /// A configured range is empty or uses 0 or 4294967295 (`(uid_t)-1`):
    /// fix the configuration.
    #[error("bad {kind} range {first}..={last}: need 1 <= first <= last <= 4294967294")]
    BadRange { kind: IdKind, first: u32, last: u32 },
    /// An id given from outside is already held by another name: the
    /// source of ids disagrees with this map; repair one of them by hand.
    #[error("{kind} {id} for `{name}` is already held by `{holder}`")]
    Conflict {
        kind: IdKind,
        name: String,
        id: u32,
        holder: String,
    },
    /// An id given from outside for a name that already has another id.
    #[error("`{name}` already has {kind} {current}, not {id}: ids never change")]
    Changed {
        kind: IdKind,
        name: String,
        current: u32,
        id: u32,
    },
    /// An id from outside (the central server) lies outside the configured
    /// range: refused, the name is not published; fix the server's range or
    /// this bastion's `[ids]`.
    #[error("{kind} {id} for `{name}` is outside the configured range {first}..={last}")]
    OutOfRange {
        kind: IdKind,
        name: String,
        id: u32,
        first: u32,
        last: u32,
    },
    /// The map file could not be read or written: check the path and its
    /// permissions.
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The map file is not a valid id map (bad JSON, unknown version, one id
    /// given to two names): restore it from a backup or repair it by hand;
    /// never delete it, or ids would be handed out again.
    #[error("{path}: not a valid id map: {message}")]
    Format { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, IdError>;

/// An inclusive range of ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRange {
    pub first: u32,
    pub last: u32,
}

impl Default for IdRange {
    fn default() -> Self {
        IdRange {
            first: DEFAULT_FIRST_ID,
            last: DEFAULT_LAST_ID,
        }
    }
}

impl IdRange {
    /// Whether `id` lies in the range.
    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }

    fn check(&self, kind: IdKind) -> Result<()> {
        if self.first == 0 || self.first > self.last || self.last == u32::MAX {
            return Err(IdError::BadRange {
                kind,
                first: self.first,
                last: self.last,
            });
        }
        Ok(())
    }
}

/// The configured ranges, one for uids and one for gids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdRanges {
    #[serde(default)]
    pub users: IdRange,
    #[serde(default)]
    pub groups: IdRange,
}

/// One map name → id, with its reverse and an allocation hint.
#[derive(Debug, Clone)]
struct IdTable {
    kind: IdKind,
    range: IdRange,
    by_name: BTreeMap<String, u32>,
    by_id: HashMap<u32, String>,
    /// Where the next search for a free id starts.
    next: u32,
}

impl IdTable {
    fn new(kind: IdKind, range: IdRange) -> Self {
        IdTable {
            kind,
            range,
            by_name: BTreeMap::new(),
            by_id: HashMap::new(),
            next: range.first,
        }
    }

    fn insert(&mut self, name: &str, id: u32) -> Result<()> {
        if let Some(&current) = self.by_name.get(name) {
            if current == id {
                return Ok(());
            }
            return Err(IdError::Changed {
                kind: self.kind,
                name: name.to_string(),
                current,
                id,
            });
        }
        if let Some(holder) = self.by_id.get(&id) {
            return Err(IdError::Conflict {
                kind: self.kind,
                name: name.to_string(),
                id,
                holder: holder.clone(),
            });
        }
        self.by_name.insert(name.to_string(), id);
        self.by_id.insert(id, name.to_string());
        if self.range.contains(id) && id >= self.next {
            self.next = if id == self.range.last {
                self.range.first
            } else {
                id + 1
            };
        }
        Ok(())
    }

    /// The id of `name`, assigning the next free one of the range if new.
    fn assign(&mut self, name: &str) -> Result<(u32, bool)> {
        if let Some(&id) = self.by_name.get(name) {
            return Ok((id, false));
        }
        let IdRange { first, last } = self.range;
        let start = if self.range.contains(self.next) {
            self.next
        } else {
            first
        };
        let mut candidate = start;
        loop {
            if !self.by_id.contains_key(&candidate) {
                self.insert(name, candidate)?;
                return Ok((candidate, true));
            }
            candidate = if candidate == last {
                first
            } else {
                candidate + 1
            };
            if candidate == start {
                return Err(IdError::Exhausted {
                    kind: self.kind,
                    name: name.to_string(),
                    first,
                    last,
                });
            }
        }
    }
}

/// The persisted form: `{"version": 1, "users": {...}, "groups": {...}}`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdMapFile {
    version: u32,
    #[serde(default)]
    users: BTreeMap<String, u32>,
    #[serde(default)]
    groups: BTreeMap<String, u32>,
}

/// Assigns stable, never-reused uids and gids by name.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    users: IdTable,
    groups: IdTable,
    changed: bool,
    /// An id was assigned here (not adopted) since the last save.
    assigned_here: bool,
}

impl IdAllocator {
    /// An empty allocator over `ranges`.
    pub fn new(ranges: IdRanges) -> Result<Self> {
        ranges.users.check(IdKind::User)?;
        ranges.groups.check(IdKind::Group)?;
        Ok(IdAllocator {
            users: IdTable::new(IdKind::User, ranges.users),
            groups: IdTable::new(IdKind::Group, ranges.groups),
            changed: false,
            assigned_here: false,
        })
    }

    /// Loads the map saved at `path`; a missing file gives an empty map.
    ///
    /// Names whose ids lie outside `ranges` (the range was changed) keep
    /// them; new names get ids from `ranges`.
    pub fn load(path: &Path, ranges: IdRanges) -> Result<Self> {
        let mut allocator = IdAllocator::new(ranges)?;
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(allocator),
            Err(source) => {
                return Err(IdError::Io {
                    path: path.to_path_buf(),
                    action: "cannot read id map",
                    source,
                })
            }
        };
        let format = |message: String| IdError::Format {
            path: path.to_path_buf(),
            message,
        };
        let file: IdMapFile = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
        if file.version != MAP_VERSION {
            return Err(format(format!(
                "version {} (this build reads version {MAP_VERSION})",
                file.version
            )));
        }
        for (table, map) in [
            (&mut allocator.users, file.users),
            (&mut allocator.groups, file.groups),
        ] {
            for (name, id) in map {
                table.insert(&name, id).map_err(|e| format(e.to_string()))?;
            }
        }
        Ok(allocator)
    }

    /// Saves the map to `path` atomically (mode 0600) and clears
    /// [`IdAllocator::changed`]. The rename is synced too when this host
    /// assigned an id since the last save: ids adopted from the server are
    /// adopted again at every start from the signed bundle and deltas kept
    /// on disk, so a crash that brings the previous map back loses
    /// nothing else.
    pub fn save(&mut self, path: &Path) -> Result<()> {
        #[derive(Serialize)]
        struct Borrowed<'a> {
            version: u32,
            users: &'a BTreeMap<String, u32>,
            groups: &'a BTreeMap<String, u32>,
        }
        let file = Borrowed {
            version: MAP_VERSION,
            users: &self.users.by_name,
            groups: &self.groups.by_name,
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(|e| IdError::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push('\n');
        let write = match self.assigned_here {
            true => crate::atomic_file::write_atomic,
            false => crate::atomic_file::replace,
        };
        write(path, text.as_bytes(), MAP_MODE).map_err(|source| IdError::Io {
            path: path.to_path_buf(),
            action: "cannot write id map",
            source,
        })?;
        self.changed = false;
        self.assigned_here = false;
        Ok(())
    }

    /// Whether ids were assigned since the map was created, loaded or saved.
    pub fn changed(&self) -> bool {
        self.changed
    }

    /// Whether this host assigned an id (not adopted one from the server)
    /// since the map was created, loaded or saved: one that must be saved
    /// before it is published.
    pub fn assigned_here(&self) -> bool {
        self.assigned_here
    }

    /// The pairs of `server` (ids the server assigned, by name) this map
    /// does not hold as they are, in name order: one pass over both sorted
    /// maps, no lookups. Adopt these ([`IdAllocator::adopt_from_server`]);
    /// the others are adopted already.
    pub fn differing<'a>(
        &self,
        kind: IdKind,
        server: &'a BTreeMap<String, u32>,
    ) -> Vec<(&'a str, u32)> {
        let mut mine = self.table(kind).by_name.iter().peekable();
        let mut out = Vec::new();
        for (name, id) in server {
            while mine.next_if(|(m, _)| m.as_str() < name.as_str()).is_some() {}
            match mine.peek() {
                Some((m, held)) if *m == name && *held == id => {}
                _ => out.push((name.as_str(), *id)),
            }
        }
        out
    }

    fn table(&self, kind: IdKind) -> &IdTable {
        match kind {
            IdKind::User => &self.users,
            IdKind::Group => &self.groups,
        }
    }

    fn table_mut(&mut self, kind: IdKind) -> &mut IdTable {
        match kind {
            IdKind::User => &mut self.users,
            IdKind::Group => &mut self.groups,
        }
    }

    /// The id of `name`, assigning a new one from the range if it has none.
    pub fn assign(&mut self, kind: IdKind, name: &str) -> Result<u32> {
        let (id, new) = self.table_mut(kind).assign(name)?;
        self.changed |= new;
        self.assigned_here |= new;
        Ok(id)
    }

    /// The uid of user `name` (assigned if new).
    pub fn uid(&mut self, name: &str) -> Result<u32> {
        self.assign(IdKind::User, name)
    }

    /// The gid of group `name` (assigned if new).
    pub fn gid(&mut self, name: &str) -> Result<u32> {
        self.assign(IdKind::Group, name)
    }

    /// The id of `name` if it has one; assigns nothing.
    pub fn get(&self, kind: IdKind, name: &str) -> Option<u32> {
        self.table(kind).by_name.get(name).copied()
    }

    /// The name holding `id`, retired or not.
    pub fn holder(&self, kind: IdKind, id: u32) -> Option<&str> {
        self.table(kind).by_id.get(&id).map(String::as_str)
    }

    /// Records an id the central server assigned, which wins over this
    /// map: the server gives every bastion the same ids, and a bastion that
    /// ran from a local policy before it enrolled may have handed the same
    /// numbers to other names. A local name holding `id` loses it (it gets
    /// a fresh id when next assigned); a name that had another local id
    /// takes the server's, and the old id stays reserved under a retired
    /// marker so it is never handed to anyone else. Returns what moved, for
    /// the log. An id outside the configured range (0, a system id, a
    /// number from another scheme) is refused with [`IdError::OutOfRange`]
    /// and changes nothing.
    pub fn adopt_from_server(&mut self, kind: IdKind, name: &str, id: u32) -> Result<Vec<String>> {
        let table = self.table_mut(kind);
        if !table.range.contains(id) {
            return Err(IdError::OutOfRange {
                kind,
                name: name.to_string(),
                id,
                first: table.range.first,
                last: table.range.last,
            });
        }
        if table.by_name.get(name) == Some(&id) {
            return Ok(Vec::new());
        }
        let mut moved = Vec::new();
        if let Some(holder) = table.by_id.remove(&id) {
            table.by_name.remove(&holder);
            moved.push(format!("`{holder}` gave up {kind} {id} to `{name}`"));
        }
        let retired = table.by_name.remove(name).map(|old| {
            table.by_id.remove(&old);
            moved.push(format!("`{name}` moved from {kind} {old} to {id}"));
            (format!("(retired {old}) {name}"), old)
        });
        // Both ids are free now: neither insert can conflict.
        let inserted = table.insert(name, id).and_then(|()| match &retired {
            Some((marker, old)) => table.insert(marker, *old),
            None => Ok(()),
        });
        debug_assert!(inserted.is_ok(), "{inserted:?}");
        self.changed = true;
        Ok(moved)
    }

    /// Every name ever given an id, with its id, by name.
    pub fn entries(&self, kind: IdKind) -> impl Iterator<Item = (&str, u32)> {
        self.table(kind)
            .by_name
            .iter()
            .map(|(name, id)| (name.as_str(), *id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn small(first: u32, last: u32) -> IdRanges {
        IdRanges {
            users: IdRange { first, last },
            groups: IdRange { first, last },
        }
    }

    #[test]
    fn ids_are_assigned_in_order_from_the_range_start() {
        let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
        assert_eq!(ids.uid("alice").unwrap(), 200_000);
        assert_eq!(ids.uid("bob").unwrap(), 200_001);
        assert_eq!(
            ids.uid("alice").unwrap(),
            200_000,
            "a known name keeps its uid"
        );
        assert_eq!(
            ids.gid("ops").unwrap(),
            200_000,
            "groups have their own map"
        );
        assert!(ids.changed());
    }

    #[test]
    fn ids_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
        ids.uid("alice").unwrap();
        ids.uid("bob").unwrap();
        ids.gid("ops").unwrap();
        ids.save(&path).unwrap();
        assert!(!ids.changed(), "save clears `changed`");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let mut again = IdAllocator::load(&path, IdRanges::default()).unwrap();
        // A different policy order must not move anyone.
        assert_eq!(
            again.uid("carol").unwrap(),
            200_002,
            "new names go after the known ones"
        );
        assert_eq!(again.uid("bob").unwrap(), 200_001);
        assert_eq!(again.uid("alice").unwrap(), 200_000);
        assert_eq!(again.gid("ops").unwrap(), 200_000);
        assert_eq!(again.holder(IdKind::User, 200_001), Some("bob"));
    }

    #[test]
    fn a_missing_map_file_loads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let ids = IdAllocator::load(&dir.path().join("none.json"), IdRanges::default()).unwrap();
        assert_eq!(ids.entries(IdKind::User).count(), 0);
        assert!(!ids.changed());
    }

    #[test]
    fn retired_names_keep_their_ids_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        let mut ids = IdAllocator::new(small(10, 12)).unwrap();
        ids.uid("alice").unwrap();
        ids.uid("bob").unwrap();
        ids.save(&path).unwrap();
        // alice leaves the policy: the next policy only has bob and carol.
        let mut ids = IdAllocator::load(&path, small(10, 12)).unwrap();
        assert_eq!(ids.uid("bob").unwrap(), 11);
        assert_eq!(ids.uid("carol").unwrap(), 12, "alice's 10 is not reused");
        let err = ids.uid("dave").unwrap_err();
        assert!(
            matches!(
                err,
                IdError::Exhausted {
                    first: 10,
                    last: 12,
                    ..
                }
            ),
            "expected exhaustion, got {err}"
        );
        assert!(err.to_string().contains("widen the range"), "{err}");
        assert_eq!(
            ids.uid("alice").unwrap(),
            10,
            "alice comes back with her old uid"
        );
    }

    #[test]
    fn exhaustion_is_reported_for_groups_too() {
        let mut ids = IdAllocator::new(small(5, 5)).unwrap();
        ids.gid("ops").unwrap();
        let err = ids.gid("dev").unwrap_err();
        assert!(
            matches!(
                err,
                IdError::Exhausted {
                    kind: IdKind::Group,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(ids.uid("alice").unwrap(), 5, "the user map is separate");
    }

    #[test]
    fn a_changed_range_keeps_old_ids_and_allocates_from_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        let mut ids = IdAllocator::new(small(100, 199)).unwrap();
        ids.uid("alice").unwrap();
        ids.save(&path).unwrap();
        let mut ids = IdAllocator::load(&path, small(500, 599)).unwrap();
        assert_eq!(ids.uid("alice").unwrap(), 100);
        assert_eq!(ids.uid("bob").unwrap(), 500);
    }

    #[test]
    fn allocation_skips_adopted_ids_and_wraps_to_holes() {
        let mut ids = IdAllocator::new(small(1, 4)).unwrap();
        ids.adopt_from_server(IdKind::User, "server-given", 3)
            .unwrap();
        assert_eq!(
            ids.uid("a").unwrap(),
            4,
            "continues after the highest id in range"
        );
        assert_eq!(ids.uid("b").unwrap(), 1, "then wraps to the holes");
        assert_eq!(ids.uid("c").unwrap(), 2);
        assert!(ids.uid("d").is_err());
    }

    #[test]
    fn server_ids_outside_the_range_are_refused_and_change_nothing() {
        let mut ids = IdAllocator::new(small(100, 199)).unwrap();
        assert_eq!(ids.uid("alice").unwrap(), 100);
        for bad in [0, 1, 99, 200, u32::MAX] {
            assert!(
                matches!(
                    ids.adopt_from_server(IdKind::User, "alice", bad),
                    Err(IdError::OutOfRange { id, .. }) if id == bad
                ),
                "uid {bad} must be refused"
            );
            assert!(ids.adopt_from_server(IdKind::User, "mallory", bad).is_err());
        }
        assert_eq!(ids.get(IdKind::User, "alice"), Some(100));
        assert_eq!(ids.get(IdKind::User, "mallory"), None);
        assert!(ids.holder(IdKind::User, 0).is_none());
    }

    #[test]
    fn server_ids_win_over_local_ones_and_old_ids_stay_reserved() {
        let mut ids = IdAllocator::new(small(1, 10)).unwrap();
        assert_eq!(ids.gid("jms-users").unwrap(), 1);
        assert_eq!(ids.gid("ops").unwrap(), 2);
        // The server says ops is 1 and jms-users is 5.
        let moved = ids.adopt_from_server(IdKind::Group, "ops", 1).unwrap();
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(
            moved[0].contains("`jms-users` gave up gid 1 to `ops`"),
            "{moved:?}"
        );
        assert!(
            moved[1].contains("`ops` moved from gid 2 to 1"),
            "{moved:?}"
        );
        assert!(ids
            .adopt_from_server(IdKind::Group, "jms-users", 5)
            .unwrap()
            .is_empty());
        assert!(
            ids.adopt_from_server(IdKind::Group, "ops", 1)
                .unwrap()
                .is_empty(),
            "idempotent"
        );
        assert_eq!(ids.get(IdKind::Group, "ops"), Some(1));
        assert_eq!(ids.get(IdKind::Group, "jms-users"), Some(5));
        // ops's old gid 2 is never handed out again.
        let dev = ids.gid("dev").unwrap();
        assert!(![1, 2, 5].contains(&dev), "dev got a held id {dev}");
        assert!(ids
            .holder(IdKind::Group, 2)
            .unwrap()
            .starts_with("(retired 2)"));
        // and it survives a save and load.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        ids.save(&path).unwrap();
        let mut again = IdAllocator::load(&path, small(1, 10)).unwrap();
        assert_eq!(again.get(IdKind::Group, "ops"), Some(1));
        let qa = again.gid("qa").unwrap();
        assert!(![1, 2, 5, dev].contains(&qa), "qa got a held id {qa}");
    }

    #[test]
    fn bad_ranges_are_refused() {
        for (first, last) in [(0, 10), (10, 9), (1, u32::MAX)] {
            let err = IdAllocator::new(small(first, last)).unwrap_err();
            assert!(
                matches!(err, IdError::BadRange { .. }),
                "{first}..={last}: {err}"
            );
        }
    }

    #[test]
    fn a_map_giving_one_id_to_two_names_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids.json");
        fs::write(&path, r#"{"version":1,"users":{"a":200000,"b":200000}}"#).unwrap();
        let err = IdAllocator::load(&path, IdRanges::default()).unwrap_err();
        assert!(matches!(err, IdError::Format { .. }), "{err}");
        fs::write(&path, r#"{"version":9}"#).unwrap();
        assert!(IdAllocator::load(&path, IdRanges::default()).is_err());
        fs::write(&path, "not json").unwrap();
        assert!(IdAllocator::load(&path, IdRanges::default()).is_err());
    }

    #[test]
    fn the_full_default_range_can_be_used_up_exactly() {
        let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
        for i in 0..=(DEFAULT_LAST_ID - DEFAULT_FIRST_ID) {
            assert_eq!(ids.uid(&format!("u{i}")).unwrap(), DEFAULT_FIRST_ID + i);
        }
        assert!(matches!(
            ids.uid("one-too-many"),
            Err(IdError::Exhausted { .. })
        ));
    }

    #[test]
    fn atomic_write_replaces_the_file_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        crate::atomic_file::write_atomic(&path, b"one", 0o644).unwrap();
        crate::atomic_file::write_atomic(&path, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644
        );
    }
}
