//! nss_jms through glibc in the bastion's namespace (`passwd: files jms`,
//! `group: files jms`): the users and groups jms-agentd published.

use std::time::Duration;

use jms_e2e::fixture::{self, LOCAL_USER};
use jms_e2e::{Bastion, AGENT_IN_NS, JMS_USERS_GROUP};

const JMS_USERS: [&str; 9] = [
    "alice", "bob", "carol", "dave", "erin", "grace", "henry", "tina", "kim",
];

fn bastion() -> Bastion {
    fixture::standard().0.start()
}

/// The fields of the one line `getent DB KEY` prints.
fn entry(bastion: &Bastion, db: &str, key: &str) -> Vec<String> {
    let out = bastion.getent(&[db, key]);
    out.assert_success(&format!("`getent {db} {key}` should find it"));
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one entry expected:\n{out}");
    lines[0].split(':').map(str::to_owned).collect()
}

fn names(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.split(':').next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn getent_passwd_by_name_gives_uid_primary_group_home_and_agent_shell() {
    let bastion = bastion();
    let alice = entry(&bastion, "passwd", "alice");
    let jms_users = entry(&bastion, "group", JMS_USERS_GROUP);
    assert_eq!(alice.len(), 7, "seven passwd fields: {alice:?}");
    assert_eq!(alice[0], "alice");
    let uid: u32 = alice[2].parse().expect("numeric uid");
    assert!(uid >= 1000, "a jms uid must not be a system uid: {alice:?}");
    assert_eq!(
        alice[3], jms_users[2],
        "alice's primary gid should be the {JMS_USERS_GROUP} group: {alice:?} vs {jms_users:?}"
    );
    assert_eq!(alice[4], "Alice Liu", "gecos is the display name");
    assert_eq!(alice[5], "/", "home as configured in agentd.toml");
    assert_eq!(alice[6], AGENT_IN_NS, "login shell is the agent");
}

#[test]
fn getent_passwd_by_uid_finds_the_same_user() {
    let bastion = bastion();
    for name in ["alice", "kim"] {
        let by_name = entry(&bastion, "passwd", name);
        let by_uid = entry(&bastion, "passwd", &by_name[2]);
        assert_eq!(
            by_uid, by_name,
            "lookup by uid {} should give {name}",
            by_name[2]
        );
    }
}

#[test]
fn getent_passwd_enumeration_lists_local_and_jms_users_with_distinct_uids() {
    let bastion = bastion();
    let out = bastion.getent(&["passwd"]);
    out.assert_success("`getent passwd` should enumerate");
    let listed = names(&out.stdout);
    for name in JMS_USERS.iter().copied().chain(["root", LOCAL_USER]) {
        assert!(
            listed.iter().any(|n| n == name),
            "{name} missing from:\n{out}"
        );
    }
    let mut uids: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| JMS_USERS.contains(&l.split(':').next().unwrap_or("")))
        .filter_map(|l| l.split(':').nth(2))
        .collect();
    uids.sort_unstable();
    uids.dedup();
    assert_eq!(
        uids.len(),
        JMS_USERS.len(),
        "every jms user has its own uid:\n{out}"
    );
}

#[test]
fn getent_group_by_name_and_gid_lists_members() {
    let bastion = bastion();
    let ops = entry(&bastion, "group", "ops");
    let mut members: Vec<&str> = ops[3].split(',').collect();
    members.sort_unstable();
    assert_eq!(
        members,
        ["alice", "carol", "tina"],
        "members of ops: {ops:?}"
    );
    let dev = entry(&bastion, "group", "dev");
    let mut members: Vec<&str> = dev[3].split(',').collect();
    members.sort_unstable();
    assert_eq!(
        members,
        ["bob", "dave", "erin", "grace", "henry", "kim"],
        "members of dev: {dev:?}"
    );
    let by_gid = entry(&bastion, "group", &ops[2]);
    assert_eq!(by_gid, ops, "lookup by gid {} should give ops", ops[2]);
}

#[test]
fn getent_group_enumeration_lists_local_and_jms_groups() {
    let bastion = bastion();
    let out = bastion.getent(&["group"]);
    out.assert_success("`getent group` should enumerate");
    let listed = names(&out.stdout);
    for name in ["root", LOCAL_USER, "ops", "dev", JMS_USERS_GROUP] {
        assert!(
            listed.iter().any(|n| n == name),
            "{name} missing from:\n{out}"
        );
    }
}

#[test]
fn id_shows_a_jms_users_groups() {
    let bastion = bastion();
    let out = bastion.ns_run(&["id", "alice"]);
    out.assert_success("`id alice` should resolve her");
    assert!(
        out.stdout.contains("(ops)") && out.stdout.contains(&format!("({JMS_USERS_GROUP})")),
        "alice should be in ops and {JMS_USERS_GROUP}:\n{out}"
    );
}

#[test]
fn unknown_names_and_ids_are_not_found() {
    let bastion = bastion();
    for (db, key) in [
        ("passwd", "nosuchuser"),
        ("passwd", "299998"),
        ("group", "nosuchgroup"),
        ("group", "299998"),
    ] {
        let out = bastion.getent(&[db, key]);
        assert_eq!(
            out.code(),
            Some(2),
            "`getent {db} {key}` should say not found (exit 2):\n{out}"
        );
    }
}

#[test]
fn unprivileged_processes_resolve_jms_users() {
    // sshd's session, the agent and every tool run as the user or nobody:
    // the public cache must be readable by them.
    let bastion = bastion();
    bastion
        .getent_unprivileged(&["passwd", "alice"])
        .assert_success("an unprivileged `getent passwd alice` should find her")
        .assert_output_contains(AGENT_IN_NS, "with the agent as shell");
    bastion
        .getent_unprivileged(&["group", "ops"])
        .assert_success("an unprivileged `getent group ops` should find it");
}

#[test]
fn lookups_work_while_agentd_is_down() {
    let bastion = bastion();
    bastion.kill_agentd();
    bastion
        .getent(&["passwd", "alice"])
        .assert_success("the NSS cache should serve alice with agentd down");
    bastion
        .getent(&["group", "ops"])
        .assert_success("the NSS cache should serve ops with agentd down");
}

#[test]
fn uids_survive_agentd_restart_and_policy_reload() {
    let (builder, keys) = fixture::standard();
    let policy = fixture::standard_policy(&keys);
    let bastion = builder.start();
    let before: Vec<Vec<String>> = ["alice", "bob", "kim"]
        .iter()
        .map(|u| entry(&bastion, "passwd", u))
        .collect();

    bastion.kill_agentd();
    bastion.restart_agentd();
    let after_restart: Vec<Vec<String>> = ["alice", "bob", "kim"]
        .iter()
        .map(|u| entry(&bastion, "passwd", u))
        .collect();
    assert_eq!(
        after_restart, before,
        "uids must not change across a restart"
    );

    // bob leaves, zoe arrives: SIGHUP publishes the new cache.
    let reloaded = policy.replace("  - username: bob\n", "  - username: zoe\n");
    bastion.reload_policy(&reloaded, Duration::from_millis(500));
    let zoe = wait_for_entry(&bastion, "zoe");
    assert_ne!(
        zoe[2], before[1][2],
        "bob's uid must never be reused for zoe"
    );
    assert_eq!(
        entry(&bastion, "passwd", "alice"),
        before[0],
        "alice keeps her uid"
    );
    let out = bastion.getent(&["passwd", "bob"]);
    assert_eq!(out.code(), Some(2), "bob is gone after the reload:\n{out}");
}

fn wait_for_entry(bastion: &Bastion, name: &str) -> Vec<String> {
    for _ in 0..50 {
        if bastion.getent(&["passwd", name]).success() {
            return entry(bastion, "passwd", name);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{name} never appeared after the policy reload");
}
