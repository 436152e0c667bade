//! `jmsctl eval` and `jmsctl policy check` as scripts see them: stdout,
//! stderr and exit codes on the shipped example policy.

use std::process::{Command, Output};

const POLICY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/policy.yaml");

fn jmsctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_jmsctl"))
        .args(args)
        .output()
        .expect("run jmsctl")
}

fn eval(args: &[&str]) -> (i32, String, String) {
    let mut all = vec!["eval", "--policy", POLICY];
    all.extend_from_slice(args);
    let out = jmsctl(&all);
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn allow_prints_allow_and_exits_0() {
    let (code, out, err) = eval(&[
        "--user",
        "alice",
        "--asset",
        "web01",
        "--account",
        "deploy",
        "--protocol",
        "sftp",
        "--action",
        "upload",
    ]);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "allow\n", ""));
}

#[test]
fn deny_prints_the_reason_and_exits_1() {
    let (code, out, _) = eval(&["--user", "alice", "--asset", "web02", "--account", "root"]);
    assert_eq!(
        (code, out.as_str()),
        (1, "deny: no active grant gives alice account root on web02 (grant ops-old expired 2026-01-01T00:00:00Z)\n")
    );
    let (code, out, _) = eval(&["--user", "alice", "--asset", "test01"]);
    assert_eq!(
        (code, out.as_str()),
        (
            1,
            "deny: no active grant gives alice asset test01: grant ops-paused is disabled\n"
        )
    );
    let (code, out, _) = eval(&["--user", "dave", "--asset", "web02"]);
    assert_eq!(
        (code, out.as_str()),
        (1, "deny: user dave expired 2026-01-01T00:00:00Z\n")
    );
}

#[test]
fn an_expired_grant_still_answers_inside_its_window() {
    let (code, out, _) = eval(&[
        "--user",
        "alice",
        "--asset",
        "web02",
        "--account",
        "root",
        "--at",
        "2025-06-01T00:00:00Z",
    ]);
    assert_eq!((code, out.as_str()), (0, "allow\n"));
    let (code, out, _) = eval(&[
        "--user",
        "alice",
        "--asset",
        "web02",
        "--account",
        "root",
        "--at",
        "2026-01-01T00:00:00Z",
    ]);
    assert_eq!((code, out.as_str()), (1, "deny: no active grant gives alice account root on web02 (grant ops-old expired 2026-01-01T00:00:00Z)\n"));
}

#[test]
fn bad_input_exits_2_with_one_line_on_stderr() {
    let cases: &[&[&str]] = &[
        &["--user", "nobody", "--asset", "web01"],
        &["--user", "alice", "--asset", "nope"],
        &["--user", "alice", "--asset", "web01", "--protocol", "rdp"],
        &["--user", "alice", "--asset", "web01", "--action", "reboot"],
        &["--user", "alice", "--asset", "web01", "--at", "yesterday"],
        &["--user", "alice"],
        &["--user", "alice", "--asset", "web01", "--list"],
    ];
    for args in cases {
        let (code, out, err) = eval(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?} printed {out}");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: stderr must be one line: {err:?}"
        );
        assert!(err.starts_with("jmsctl: "), "{err}");
    }
    let out = jmsctl(&[
        "eval",
        "--policy",
        "/nonexistent.yaml",
        "--user",
        "a",
        "--asset",
        "b",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("jmsctl: /nonexistent.yaml: cannot read")
    );
}

#[test]
fn a_bad_policy_file_exits_2_naming_entity_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, "users: [{username: alice}]\ngrants: [{name: g, users: [bob], assets: [], accounts: [], protocols: [], actions: []}]\n").unwrap();
    let out = jmsctl(&["policy", "check", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err,
        format!(
            "jmsctl: {}: grant `g`: field `users[0]`: unknown user `bob`\n",
            path.display()
        )
    );
}

#[test]
fn list_json_gives_accounts_protocols_and_actions() {
    let (code, out, _) = eval(&[
        "--user",
        "bob",
        "--list",
        "--json",
        "--at",
        "2026-06-01T00:00:00Z",
    ]);
    assert_eq!(code, 0);
    let listing: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let names: Vec<&str> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["asset"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["test01", "web01", "web02"]);
    let web01 = &listing[1]["accounts"][0];
    assert_eq!(web01["account"], "bob");
    assert_eq!(web01["username"], "bob");
    assert_eq!(web01["kind"], "real");
    assert_eq!(web01["protocols"], serde_json::json!(["sftp"]));
    assert_eq!(web01["actions"], serde_json::json!(["download"]));
    let test01 = &listing[0]["accounts"];
    assert_eq!(test01[1]["account"], "@USER");
    assert_eq!(test01[1]["username"], "bob");
    assert_eq!(test01[1]["kind"], "virtual");
}

#[test]
fn policy_check_summarises_and_names_inactive_grants() {
    let out = jmsctl(&["policy", "check", POLICY]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ok: 5 users, 2 user groups, 5 nodes, 4 assets, 5 accounts, 8 grants, 1 command filters"), "{text}");
    assert!(
        text.contains("inactive: grant ops-old expired 2026-01-01T00:00:00Z"),
        "{text}"
    );
    assert!(
        text.contains("inactive: grant ops-paused is disabled"),
        "{text}"
    );
    assert!(
        text.contains("inactive: grant draft is inactive: it lists no accounts"),
        "{text}"
    );
}

#[test]
fn hash_password_reads_stdin_and_makes_a_verifiable_django_hash() {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_jmsctl"))
        .args(["hash-password", "--iterations", "1000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("pbkdf2_sha256$1000$"), "{hash}");
    assert!(jms_core::password::verify_password(b"s3cret pass", hash.trim()).unwrap());
    let out = jmsctl(&["hash-password"]);
    assert_eq!(out.status.code(), Some(2), "an empty stdin is bad input");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "jmsctl: empty password\n"
    );
}
