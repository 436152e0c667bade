//! Client paths → (asset folder, path on the asset).
//!
//! Two spellings reach the proxy:
//! - the virtual tree: `/web01/etc/hostname`, `/root@web01/tmp` (and
//!   relative `web01/x`: the client's working directory starts at `/`).
//!   The whole path is normalized first, `..` clamped at `/`, so
//!   `/web01/../db01/x` is `/db01/x` — db01's folder, checked as db01 —
//!   and no `..` ever climbs out of a folder through its connection. The
//!   rest after the folder is an absolute path on the asset (`/web01` is
//!   the asset's `/`).
//! - scp's form, `web01:/tmp/x` (scp 9.x sends paths as typed, and sftp
//!   makes `get web01:/x` into `/web01:/x`): the first segment holds a
//!   colon; before it the folder, after it the path on the asset. An
//!   absolute path is normalized on its own (`..` clamped at the asset's
//!   `/`); `~`, `~/x` and a relative `x` are relative to the account's
//!   home (the upstream session starts there), `web01:` is the home itself.
//!
//! Paths are bytes (file names need not be UTF-8); folder names are text.

/// Where a client path leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The virtual root `/`, holding one folder per granted asset.
    Root,
    /// Inside the folder `spec` (`web01` or `root@web01`), at `remote`:
    /// an absolute path on the asset, or one relative to the home
    /// directory (`.` for the home itself).
    Folder { spec: String, remote: Vec<u8> },
}

/// Resolves a path the client sent.
pub fn locate(raw: &[u8]) -> Location {
    let trimmed = trim_leading_slashes(raw);
    let first = trimmed.split(|b| *b == b'/').next().unwrap_or_default();
    if first.contains(&b':') {
        return colon_form(trimmed);
    }
    let parts = normalize(raw);
    let Some((head, tail)) = parts.split_first() else {
        return Location::Root;
    };
    if head.contains(&b':') {
        return colon_form(&parts.join(&b'/'));
    }
    let mut remote = Vec::with_capacity(raw.len());
    if tail.is_empty() {
        remote.push(b'/');
    }
    for part in tail {
        remote.push(b'/');
        remote.extend_from_slice(part);
    }
    Location::Folder {
        spec: String::from_utf8_lossy(head).into_owned(),
        remote,
    }
}

/// `spec:rest` (the first colon splits).
fn colon_form(path: &[u8]) -> Location {
    let colon = path.iter().position(|b| *b == b':').unwrap_or(path.len());
    let spec = String::from_utf8_lossy(&path[..colon]).into_owned();
    let rest = path.get(colon + 1..).unwrap_or_default();
    Location::Folder {
        spec,
        remote: remote_path(rest),
    }
}

/// A path on the asset as scp's form gives it: absolute (normalized), or
/// relative to the home (`~` and `~/` dropped, `.` for the home).
fn remote_path(rest: &[u8]) -> Vec<u8> {
    if rest.starts_with(b"/") {
        let parts = normalize(rest);
        if parts.is_empty() {
            return b"/".to_vec();
        }
        let mut out = Vec::with_capacity(rest.len());
        for part in parts {
            out.push(b'/');
            out.extend_from_slice(part);
        }
        return out;
    }
    let relative = if rest == b"~" {
        &b""[..]
    } else {
        rest.strip_prefix(b"~/").unwrap_or(rest)
    };
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in relative.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." if parts.last().is_some_and(|p| *p != b"..") => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    if parts.is_empty() {
        return b".".to_vec();
    }
    parts.join(&b'/')
}

/// The segments of an absolute path after `.` and `..` (clamped at `/`).
fn normalize(path: &[u8]) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in path.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    parts
}

fn trim_leading_slashes(path: &[u8]) -> &[u8] {
    let start = path.iter().position(|b| *b != b'/').unwrap_or(path.len());
    &path[start..]
}

/// The client's view of `path`, a path on the asset reached through
/// folder `spec`: `/spec` + path for an absolute path, the path itself
/// for a relative one (a symlink's relative target stays relative).
pub fn to_client(spec: &str, path: &[u8]) -> Vec<u8> {
    if !path.starts_with(b"/") {
        return path.to_vec();
    }
    let mut out = Vec::with_capacity(spec.len() + path.len() + 1);
    out.push(b'/');
    out.extend_from_slice(spec.as_bytes());
    if path != b"/" {
        out.extend_from_slice(path);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(spec: &str, remote: &str) -> Location {
        Location::Folder {
            spec: spec.into(),
            remote: remote.as_bytes().to_vec(),
        }
    }

    fn at(path: &str) -> Location {
        locate(path.as_bytes())
    }

    #[test]
    fn the_root_and_its_spellings() {
        for root in [
            "/",
            "",
            ".",
            "//",
            "/.",
            "/..",
            "/../..",
            "/web01/..",
            "a/b/../..",
        ] {
            assert_eq!(at(root), Location::Root, "{root:?} is the root");
        }
    }

    #[test]
    fn virtual_paths_name_a_folder_and_an_absolute_path() {
        assert_eq!(at("/web01"), folder("web01", "/"));
        assert_eq!(at("/web01/"), folder("web01", "/"));
        assert_eq!(at("/web01/etc/hostname"), folder("web01", "/etc/hostname"));
        assert_eq!(
            at("/root@web01/tmp//x/./y"),
            folder("root@web01", "/tmp/x/y")
        );
        assert_eq!(at("web01/x"), folder("web01", "/x"));
    }

    #[test]
    fn dot_dot_never_leaves_the_virtual_tree_through_a_folder() {
        assert_eq!(at("/web01/../db01/x"), folder("db01", "/x"));
        assert_eq!(
            at("/web01/tmp/../../db01/etc/passwd"),
            folder("db01", "/etc/passwd")
        );
        assert_eq!(at("/web01/../../../../db01"), folder("db01", "/"));
        assert_eq!(at("/web01/a/../../../etc"), folder("etc", "/"));
        assert_eq!(at("/web01/tmp/../.."), Location::Root);
        assert_eq!(at("/web01/tmp/.."), folder("web01", "/"));
    }

    #[test]
    fn scp_colon_form() {
        assert_eq!(at("web01:/tmp/x"), folder("web01", "/tmp/x"));
        assert_eq!(at("web01:/tmp/"), folder("web01", "/tmp"));
        assert_eq!(at("web01:/tmp//f"), folder("web01", "/tmp/f"));
        assert_eq!(
            at("root@web01:/etc/hostname"),
            folder("root@web01", "/etc/hostname")
        );
        assert_eq!(at("/web01:/etc/hostname"), folder("web01", "/etc/hostname"));
        assert_eq!(at("web01:/"), folder("web01", "/"));
    }

    #[test]
    fn scp_colon_form_home_paths() {
        assert_eq!(at("web01:"), folder("web01", "."));
        assert_eq!(at("web01:~"), folder("web01", "."));
        assert_eq!(at("web01:~/x"), folder("web01", "x"));
        assert_eq!(at("web01:x/y"), folder("web01", "x/y"));
        assert_eq!(at("web01:x/../y"), folder("web01", "y"));
        assert_eq!(at("web01:../x"), folder("web01", "../x"));
        assert_eq!(at("web01:./"), folder("web01", "."));
    }

    #[test]
    fn colon_form_dot_dot_stays_on_its_asset() {
        assert_eq!(at("web01:/tmp/../../etc"), folder("web01", "/etc"));
        assert_eq!(at("web01:/../../db01:/x"), folder("web01", "/db01:/x"));
        // Normalized in the virtual tree first, then read as scp's form.
        assert_eq!(at("/x/../web01:/etc"), folder("web01", "/etc"));
    }

    #[test]
    fn non_utf8_names_pass_through() {
        let raw = b"/web01/tmp/\xff\xfe";
        assert_eq!(
            locate(raw),
            Location::Folder {
                spec: "web01".into(),
                remote: b"/tmp/\xff\xfe".to_vec()
            }
        );
    }

    #[test]
    fn answers_are_put_back_in_the_folder() {
        assert_eq!(to_client("web01", b"/"), b"/web01");
        assert_eq!(to_client("web01", b"/home/deploy"), b"/web01/home/deploy");
        assert_eq!(to_client("root@web01", b"/x"), b"/root@web01/x");
        assert_eq!(to_client("web01", b"../x"), b"../x");
    }
}
