//! `libnss_jms.so.2` loaded by the real glibc: `getent`, `id` and a
//! long-lived process resolve jms users and groups from the cache and its
//! overlay, see them being replaced, and fall back cleanly when they are
//! gone or corrupt.
//!
//! Needs root and `unshare -m` (it fails, loudly, without them): each step
//! runs in a private mount namespace with `passwd: files jms` and
//! `group: files jms`, the module overlaid on the system library dir and a
//! temp dir over `/var/cache/jms`. The built `libnss_jms.so` is found in
//! `target/<profile>/` and rebuilt with `cargo build -p nss_jms` when stale.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

use common::{require_root_and_unshare, Sandbox};
use jms_core::nss_cache::{
    overlay_path, write_atomic, CacheWriter, NssData, NssGroup, NssSettings, NssUser,
};
use jms_core::policy::{Format, Policy};
use jms_core::uids::{IdAllocator, IdRanges};

const NSSWITCH: &str = "passwd: files jms\ngroup: files jms\nshadow: files\n";

const POLICY: &str = r#"
users:
  - {username: alice, name: "Alice Liu", groups: [ops]}
  - {username: bob, name: "Bob: the builder", groups: [ops, dev]}
  - {username: carol, name: Carol, is_active: false, groups: [dev]}
user_groups:
  - {name: ops}
  - {name: dev}
"#;

const POLICY_AFTER: &str = r#"
users:
  - {username: alice, name: "Alice Liu-Wang", groups: [ops]}
  - {username: bob, name: Bob, groups: [ops]}
  - {username: dave, name: Dave, groups: [dev]}
user_groups:
  - {name: ops}
  - {name: dev}
"#;

fn write_cache(sandbox: &Sandbox, policy_text: &str, ids: &mut IdAllocator) {
    let policy =
        Policy::parse(policy_text, Format::Yaml, "test.yaml", Path::new(".")).expect("policy");
    let data = NssData::from_policy(&policy, ids, &NssSettings::default()).expect("nss data");
    write_atomic(&sandbox.cache_path(), &data).expect("write cache");
}

/// Removes the cache and its overlay.
fn remove_cache(sandbox: &Sandbox) {
    fs::remove_file(sandbox.cache_path()).unwrap();
    fs::remove_file(overlay_path(&sandbox.cache_path())).unwrap();
}

/// On the cache of [`POLICY_AFTER`], as a delta would: erin arrives in
/// dev, alice's name changes, in the overlay only.
fn write_overlay(sandbox: &Sandbox, ids: &mut IdAllocator) {
    let policy =
        Policy::parse(POLICY_AFTER, Format::Yaml, "test.yaml", Path::new(".")).expect("policy");
    let data = NssData::from_policy(&policy, ids, &NssSettings::default()).expect("nss data");
    let writer = CacheWriter::write_full(&sandbox.cache_path(), &data).expect("write cache");
    let user = |name: &str, uid: u32, gecos: &str| NssUser {
        name: name.into(),
        uid,
        gid: 200_000,
        gecos: gecos.into(),
        home: "/".into(),
        shell: "/usr/bin/jms-agent".into(),
    };
    let changed = NssData {
        users: vec![
            user("erin", 200_004, "Erin"),
            user("alice", 200_000, "Alice W"),
        ],
        groups: vec![NssGroup {
            name: "dev".into(),
            gid: 200_002,
            members: vec!["dave".into(), "erin".into()],
        }],
    };
    assert!(writer.write_overlay(&changed).expect("write overlay"));
}

/// Runs `commands` and checks each (stdout, exit code) against `expected`.
fn check(sandbox: &Sandbox, expected: &[(&str, &str, i32)]) {
    let commands: Vec<&str> = expected.iter().map(|(cmd, _, _)| *cmd).collect();
    let results = sandbox.run(&commands);
    for ((cmd, want, want_rc), (got, rc)) in expected.iter().zip(results) {
        assert_eq!(
            (got.as_str(), rc),
            (*want, *want_rc),
            "`{cmd}`: expected exit {want_rc} and output {want:?}, got exit {rc} and output {got:?}"
        );
    }
}

#[test]
fn getent_resolves_jms_users_and_groups_and_follows_the_cache() {
    require_root_and_unshare();
    let sandbox = Sandbox::new(NSSWITCH);
    let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
    write_cache(&sandbox, POLICY, &mut ids);
    let root = fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("root:"))
        .expect("host has root")
        .to_string();
    let root_group = "root:x:0:\n";

    let alice = "alice:x:200000:200000:Alice Liu:/:/usr/bin/jms-agent\n";
    let bob = "bob:x:200001:200000:Bob the builder:/:/usr/bin/jms-agent\n";
    let carol = "carol:x:200002:200000:Carol:/:/usr/bin/jms-agent\n";
    check(
        &sandbox,
        &[
            ("getent passwd alice", alice, 0),
            ("getent passwd 200001", bob, 0),
            ("getent passwd carol", carol, 0),
            ("getent passwd root", &format!("{root}\n"), 0),
            ("getent group jms-users", "jms-users:x:200000:\n", 0),
            ("getent group ops", "ops:x:200001:alice,bob\n", 0),
            ("getent group 200002", "dev:x:200002:bob,carol\n", 0),
            ("getent group root", root_group, 0),
            ("getent passwd nobody-here", "", 2),
            ("getent passwd 299999", "", 2),
            ("getent group no-such-group", "", 2),
            ("getent group 299999", "", 2),
            (
                "id alice",
                "uid=200000(alice) gid=200000(jms-users) groups=200000(jms-users),200001(ops)\n",
                0,
            ),
            ("id -Gn bob", "jms-users dev ops\n", 0),
        ],
    );

    // Enumeration lists the local users first, then every jms user.
    let all = sandbox.run(&["getent passwd", "getent group"]);
    let (passwd, rc) = &all[0];
    assert_eq!(*rc, 0, "getent passwd failed: {passwd}");
    let lines: Vec<&str> = passwd.lines().collect();
    assert_eq!(
        lines.first(),
        Some(&root.as_str()),
        "root comes first, from files: {passwd}"
    );
    for user in [alice, bob, carol] {
        assert!(
            lines.contains(&user.trim_end()),
            "enumeration lacks {user:?}: {passwd}"
        );
    }
    let (group, rc) = &all[1];
    assert_eq!(*rc, 0);
    for line in [
        "root:x:0:",
        "jms-users:x:200000:",
        "ops:x:200001:alice,bob",
        "dev:x:200002:bob,carol",
    ] {
        assert!(
            group.lines().any(|l| l == line),
            "group enumeration lacks {line:?}: {group}"
        );
    }

    // Replace the cache (atomic rename): carol leaves, dave arrives with a
    // new uid (never carol's), alice's name changes.
    write_cache(&sandbox, POLICY_AFTER, &mut ids);
    check(
        &sandbox,
        &[
            (
                "getent passwd alice",
                "alice:x:200000:200000:Alice Liu-Wang:/:/usr/bin/jms-agent\n",
                0,
            ),
            (
                "getent passwd dave",
                "dave:x:200003:200000:Dave:/:/usr/bin/jms-agent\n",
                0,
            ),
            ("getent passwd carol", "", 2),
            ("getent passwd 200002", "", 2),
            ("getent group dev", "dev:x:200002:dave\n", 0),
        ],
    );

    // A delta: the overlay beside the cache.
    write_overlay(&sandbox, &mut ids);
    check(
        &sandbox,
        &[
            (
                "getent passwd erin",
                "erin:x:200004:200000:Erin:/:/usr/bin/jms-agent
",
                0,
            ),
            (
                "getent passwd 200004",
                "erin:x:200004:200000:Erin:/:/usr/bin/jms-agent
",
                0,
            ),
            (
                "getent passwd 200000",
                "alice:x:200000:200000:Alice W:/:/usr/bin/jms-agent
",
                0,
            ),
            (
                "getent passwd dave",
                "dave:x:200003:200000:Dave:/:/usr/bin/jms-agent
",
                0,
            ),
            (
                "getent group dev",
                "dev:x:200002:dave,erin
",
                0,
            ),
            (
                "getent group 200002",
                "dev:x:200002:dave,erin
",
                0,
            ),
            (
                "id -Gn erin",
                "jms-users dev
",
                0,
            ),
        ],
    );
    let all = sandbox.run(&["getent passwd", "getent group"]);
    for (listing, entry, wanted) in [
        (
            &all[0].0,
            "alice:",
            "alice:x:200000:200000:Alice W:/:/usr/bin/jms-agent",
        ),
        (
            &all[0].0,
            "erin:",
            "erin:x:200004:200000:Erin:/:/usr/bin/jms-agent",
        ),
        (&all[1].0, "dev:", "dev:x:200002:dave,erin"),
    ] {
        let lines: Vec<&str> = listing.lines().filter(|l| l.starts_with(entry)).collect();
        assert_eq!(lines, [wanted], "enumeration: {listing}");
    }
    // A damaged overlay: jms users are unavailable, local ones resolve.
    fs::write(overlay_path(&sandbox.cache_path()), b"JMS-NSS\0garbage").unwrap();
    check(
        &sandbox,
        &[
            ("getent passwd erin", "", 2),
            ("getent passwd dave", "", 2),
            ("getent passwd root", &format!("{root}\n"), 0),
        ],
    );
    write_cache(&sandbox, POLICY_AFTER, &mut ids);

    // Remove it: jms users vanish, local ones still resolve.
    remove_cache(&sandbox);
    check(
        &sandbox,
        &[
            ("getent passwd alice", "", 2),
            ("getent passwd 200000", "", 2),
            ("getent group ops", "", 2),
            ("getent passwd root", &format!("{root}\n"), 0),
            ("getent group root", root_group, 0),
        ],
    );
    let (passwd, rc) = &sandbox.run(&["getent passwd"])[0];
    assert_eq!(*rc, 0);
    assert!(
        passwd.starts_with(&root) && !passwd.contains("alice"),
        "{passwd}"
    );

    // A corrupt cache is "unavailable" too, not a crash.
    fs::write(sandbox.cache_path(), b"JMS-NSS\0garbage").unwrap();
    check(
        &sandbox,
        &[
            ("getent passwd alice", "", 2),
            ("getent passwd root", &format!("{root}\n"), 0),
            ("getent group ops", "", 2),
        ],
    );
}

#[test]
fn a_running_process_sees_the_cache_replaced_and_removed() {
    require_root_and_unshare();
    let sandbox = Sandbox::new(NSSWITCH);
    let mut ids = IdAllocator::new(IdRanges::default()).unwrap();
    write_cache(&sandbox, POLICY, &mut ids);

    // One perl process calls glibc's getpwnam for each line it reads, so
    // the module stays loaded (with its mapping) across the changes.
    let script = r#"exec perl -e '$| = 1; while (my $n = <STDIN>) { chomp $n; my @p = getpwnam($n); print @p ? "$p[0]:$p[2]:$p[6]\n" : "-\n" }'"#;
    let mut child = sandbox
        .command(None, script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn perl in a namespace");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut ask = |name: &str| -> String {
        writeln!(stdin, "{name}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(
            !line.is_empty(),
            "the lookup process died while looking up {name}"
        );
        line.trim_end().to_string()
    };

    assert_eq!(ask("alice"), "alice:200000:Alice Liu");
    assert_eq!(ask("dave"), "-");
    write_cache(&sandbox, POLICY_AFTER, &mut ids);
    assert_eq!(
        ask("dave"),
        "dave:200003:Dave",
        "a replaced cache is re-opened"
    );
    assert_eq!(ask("alice"), "alice:200000:Alice Liu-Wang");
    assert_eq!(ask("carol"), "-");
    write_overlay(&sandbox, &mut ids);
    assert_eq!(ask("erin"), "erin:200004:Erin", "a new overlay is read");
    assert_eq!(ask("alice"), "alice:200000:Alice W");
    remove_cache(&sandbox);
    assert_eq!(ask("alice"), "-", "a removed cache makes jms users vanish");
    assert_eq!(ask("root"), "root:0:root");
    write_cache(&sandbox, POLICY, &mut ids);
    assert_eq!(
        ask("carol"),
        "carol:200002:Carol",
        "and a new cache brings them back"
    );
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "lookup process exited with {status}");
}
