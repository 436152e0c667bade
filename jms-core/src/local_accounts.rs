//! Local Unix accounts (the `files` databases, /etc/passwd and /etc/group)
//! and the names jms never takes: a jms user or group must never match a
//! local account by name or number, or the local entry wins in NSS (no
//! `Match Group jms-users`, no ForceCommand) and a jms password or key would
//! open a real shell on the bastion.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::Path;

/// The local passwd database.
pub const PASSWD_PATH: &str = "/etc/passwd";
/// The local group database.
pub const GROUP_PATH: &str = "/etc/group";

/// Largest local database read (a passwd file is a few KiB).
const MAX_FILE_LEN: u64 = 64 << 20;

/// Names the central server refuses for jms users and user groups: system
/// accounts and groups present on common distributions, and the groups that
/// grant privileges. Local accounts outside this list are caught on each
/// bastion by [`LocalAccounts`].
pub const RESERVED_NAMES: &[&str] = &[
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "systemd-network",
    "systemd-resolve",
    "systemd-timesync",
    "systemd-journal",
    "messagebus",
    "syslog",
    "sshd",
    "adm",
    "sudo",
    "wheel",
    "admin",
    "shadow",
    "staff",
    "users",
    "disk",
    "kmem",
    "tty",
    "dialout",
    "cdrom",
    "floppy",
    "audio",
    "video",
    "plugdev",
    "netdev",
    "input",
    "kvm",
    "render",
    "lxd",
    "docker",
    "utmp",
    "operator",
    "halt",
    "shutdown",
    "ftp",
    "postfix",
    "polkitd",
    "_apt",
    "ssh",
    "ssl-cert",
    "crontab",
    "voice",
    "tape",
    "dip",
    "src",
    "sasl",
    "fax",
    "jms",
];

/// Whether `name` is one jms refuses for a user or group (any letter case,
/// so `Root` is refused as well as `root`).
pub fn is_reserved_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    RESERVED_NAMES.contains(&lower.as_str())
}

/// The names and numbers of one local database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalTable {
    pub names: HashSet<String>,
    pub ids: HashSet<u32>,
}

impl LocalTable {
    /// Reads `name:x:id:…` lines (passwd and group share the first and third
    /// fields); blank, comment and malformed lines are skipped.
    pub fn parse(text: &str) -> LocalTable {
        let mut table = LocalTable::default();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split(':');
            let Some(name) = fields.next().filter(|n| !n.is_empty()) else {
                continue;
            };
            table.names.insert(name.to_string());
            if let Some(id) = fields.nth(1).and_then(|id| id.parse().ok()) {
                table.ids.insert(id);
            }
        }
        table
    }

    /// Reads the database at `path`.
    pub fn load(path: &Path) -> io::Result<LocalTable> {
        let meta = fs::metadata(path)?;
        if meta.len() > MAX_FILE_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is larger than {MAX_FILE_LEN} bytes", path.display()),
            ));
        }
        Ok(LocalTable::parse(&fs::read_to_string(path)?))
    }

    /// Why a jms entry `name` with number `id` may not be published, if it
    /// collides with this table (`what`: "user" or "group", `id_kind`:
    /// "uid" or "gid").
    pub fn collision(&self, what: &str, id_kind: &str, name: &str, id: u32) -> Option<String> {
        if self.names.contains(name) {
            Some(format!(
                "jms {what} `{name}` has the name of a local {what}"
            ))
        } else if self.ids.contains(&id) {
            Some(format!(
                "jms {what} `{name}` has {id_kind} {id}, which a local {what} holds"
            ))
        } else {
            None
        }
    }
}

/// The local users and groups (`files`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAccounts {
    pub users: LocalTable,
    pub groups: LocalTable,
}

impl LocalAccounts {
    /// Reads `passwd` and `group`.
    pub fn load(passwd: &Path, group: &Path) -> io::Result<LocalAccounts> {
        Ok(LocalAccounts {
            users: LocalTable::load(passwd)?,
            groups: LocalTable::load(group)?,
        })
    }

    /// Reads /etc/passwd and /etc/group.
    pub fn load_system() -> io::Result<LocalAccounts> {
        LocalAccounts::load(Path::new(PASSWD_PATH), Path::new(GROUP_PATH))
    }

    /// Why jms user `name` with `uid` may not be published, if so.
    pub fn user_collision(&self, name: &str, uid: u32) -> Option<String> {
        self.users.collision("user", "uid", name, uid)
    }

    /// Why jms group `name` with `gid` may not be published, if so.
    pub fn group_collision(&self, name: &str, gid: u32) -> Option<String> {
        self.groups.collision("group", "gid", name, gid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
                          # comment\n\
                          \n\
                          deploy:x:1000:1000:Deploy:/home/deploy:/bin/sh\n\
                          broken\n";

    #[test]
    fn names_and_ids_of_a_passwd_file() {
        let t = LocalTable::parse(PASSWD);
        assert!(t.names.contains("root") && t.names.contains("deploy"));
        assert!(t.ids.contains(&0) && t.ids.contains(&1000));
        assert!(
            t.names.contains("broken"),
            "a name without fields is still a name"
        );
        assert_eq!(t.ids.len(), 2);
    }

    #[test]
    fn collisions_by_name_or_number() {
        let local = LocalAccounts {
            users: LocalTable::parse(PASSWD),
            groups: LocalTable::parse("sudo:x:27:alice\n"),
        };
        assert!(local.user_collision("deploy", 200_000).is_some());
        assert!(local.user_collision("alice", 0).is_some());
        assert!(local.user_collision("alice", 200_000).is_none());
        assert!(local.group_collision("sudo", 200_001).is_some());
        assert!(local.group_collision("ops", 27).is_some());
        assert!(local.group_collision("ops", 200_001).is_none());
    }

    #[test]
    fn reserved_names_in_any_case() {
        for name in ["root", "Root", "WHEEL", "sudo", "sshd", "nobody", "adm"] {
            assert!(is_reserved_name(name), "{name} must be reserved");
        }
        for name in ["alice", "deploy", "ops", "rooty"] {
            assert!(!is_reserved_name(name), "{name} must be allowed");
        }
    }
}
