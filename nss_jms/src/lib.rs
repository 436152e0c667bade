//! `libnss_jms.so.2`: the `passwd` and `group` databases of jms users and
//! groups, for `passwd: files jms` / `group: files jms` in nsswitch.conf.
//!
//! The module reads the public cache that jms-agentd writes at
//! [`DEFAULT_NSS_CACHE_PATH`] (a compiled-in path: setuid programs ignore
//! the environment), through [`jms_core::nss_cache`]: one mapping per
//! process, re-opened when the file is replaced. It needs no daemon.
//!
//! Answers: an entry; `NOTFOUND` for a name or id the cache does not have;
//! `UNAVAIL` when the cache is missing, unreadable or corrupt (so `files`
//! entries such as root always keep working). The module never writes,
//! never logs, never panics across the FFI boundary (each hook runs under
//! `catch_unwind`), and strips NUL bytes that would otherwise abort the
//! caller inside `libnss`.
//!
//! Built as `libnss_jms.so` by cargo; install it as
//! `/usr/lib/<triplet>/libnss_jms.so.2` (its soname).

use std::panic::{catch_unwind, AssertUnwindSafe};

use jms_core::nss_cache::{
    GroupEntry, ReloadingCache, UserEntry, DEFAULT_NSS_CACHE_PATH, DEFAULT_NSS_OVERLAY_PATH,
};
use libnss::group::{Group, GroupHooks};
use libnss::interop::Response;
use libnss::passwd::{Passwd, PasswdHooks};
use libnss::{libnss_group_hooks, libnss_passwd_hooks};

/// The process-wide cache.
static CACHE: ReloadingCache =
    ReloadingCache::new(DEFAULT_NSS_CACHE_PATH, DEFAULT_NSS_OVERLAY_PATH);

/// Runs a hook body; a panic becomes `UNAVAIL` instead of unwinding into C.
fn guarded<T>(body: impl FnOnce() -> Response<T>) -> Response<T> {
    catch_unwind(AssertUnwindSafe(body)).unwrap_or(Response::Unavail)
}

/// `s` without NUL bytes (`libnss` panics on them).
fn clean(s: &str) -> String {
    s.replace('\0', "")
}

fn passwd(user: &UserEntry<'_>) -> Passwd {
    Passwd {
        name: clean(user.name),
        passwd: "x".to_string(),
        uid: user.uid,
        gid: user.gid,
        gecos: clean(user.gecos),
        dir: clean(user.home),
        shell: clean(user.shell),
    }
}

fn group(group: &GroupEntry<'_>) -> Group {
    Group {
        name: clean(group.name),
        passwd: "x".to_string(),
        gid: group.gid,
        members: group.members.iter().map(|m| clean(m)).collect(),
    }
}

/// Maps a lookup to an NSS answer: found, not found, or unavailable.
fn answer<E, T>(
    found: Result<Option<E>, jms_core::nss_cache::NssCacheError>,
    convert: impl Fn(&E) -> T,
) -> Response<T> {
    match found {
        Ok(Some(entry)) => Response::Success(convert(&entry)),
        Ok(None) => Response::NotFound,
        Err(_) => Response::Unavail,
    }
}

/// Every entry, or `UNAVAIL` if the cache or any record is unreadable.
fn all<E, T>(
    entries: impl Iterator<Item = Result<E, jms_core::nss_cache::NssCacheError>>,
    convert: impl Fn(&E) -> T,
) -> Response<Vec<T>> {
    match entries.map(|e| e.map(|e| convert(&e))).collect() {
        Ok(list) => Response::Success(list),
        Err(_) => Response::Unavail,
    }
}

pub struct JmsPasswd;

impl PasswdHooks for JmsPasswd {
    fn get_all_entries() -> Response<Vec<Passwd>> {
        guarded(|| match CACHE.get() {
            Ok(cache) => all(cache.users(), passwd),
            Err(_) => Response::Unavail,
        })
    }

    fn get_entry_by_uid(uid: libc::uid_t) -> Response<Passwd> {
        guarded(|| match CACHE.get() {
            Ok(cache) => answer(cache.user_by_uid(uid), passwd),
            Err(_) => Response::Unavail,
        })
    }

    fn get_entry_by_name(name: String) -> Response<Passwd> {
        guarded(|| match CACHE.get() {
            Ok(cache) => answer(cache.user_by_name(&name), passwd),
            Err(_) => Response::Unavail,
        })
    }
}

pub struct JmsGroup;

impl GroupHooks for JmsGroup {
    fn get_all_entries() -> Response<Vec<Group>> {
        guarded(|| match CACHE.get() {
            Ok(cache) => all(cache.groups(), group),
            Err(_) => Response::Unavail,
        })
    }

    fn get_entry_by_gid(gid: libc::gid_t) -> Response<Group> {
        guarded(|| match CACHE.get() {
            Ok(cache) => answer(cache.group_by_gid(gid), group),
            Err(_) => Response::Unavail,
        })
    }

    fn get_entry_by_name(name: String) -> Response<Group> {
        guarded(|| match CACHE.get() {
            Ok(cache) => answer(cache.group_by_name(&name), group),
            Err(_) => Response::Unavail,
        })
    }
}

libnss_passwd_hooks!(jms, JmsPasswd);
libnss_group_hooks!(jms, JmsGroup);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_hook_answers_unavail() {
        let response: Response<()> = guarded(|| panic!("boom"));
        assert!(matches!(response, Response::Unavail));
    }

    #[test]
    fn nul_bytes_are_stripped_from_every_field() {
        let user = UserEntry {
            name: "a\0b",
            uid: 1,
            gid: 2,
            gecos: "\0",
            home: "/h\0",
            shell: "/s",
        };
        let entry = passwd(&user);
        assert_eq!(
            (
                entry.name.as_str(),
                entry.gecos.as_str(),
                entry.dir.as_str()
            ),
            ("ab", "", "/h")
        );
        let entry = group(&GroupEntry {
            name: "g\0",
            gid: 3,
            members: vec!["m\0", "n"],
        });
        assert_eq!(entry.name, "g");
        assert_eq!(entry.members, ["m", "n"]);
    }
}
