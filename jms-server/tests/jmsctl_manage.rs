//! `jmsctl` show / set / delete / edit of every entity, the user's
//! password, TOTP and keys, and the completion scripts, against a real
//! server holding the example policy.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{jmsctl_env, outcome, Server, EXAMPLE};
use serde_json::{json, Value};

fn applied() -> Server {
    let server = Server::start();
    let (code, _, err) = outcome(&server.jmsctl(&["policy", "apply", EXAMPLE]));
    assert_eq!(code, 0, "apply: {err}");
    server
}

/// Runs jmsctl as admin; asserts success; returns stdout.
fn ok(server: &Server, args: &[&str]) -> String {
    let (code, out, err) = outcome(&server.jmsctl(args));
    assert_eq!(code, 0, "jmsctl {}: {err}", args.join(" "));
    out
}

/// Runs jmsctl as admin; returns (code, stdout, stderr).
fn run(server: &Server, args: &[&str]) -> (i32, String, String) {
    outcome(&server.jmsctl(args))
}

fn get(server: &Server, path: &str) -> Value {
    server.expect(200, "GET", path, None)
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

#[test]
fn show_and_set_change_each_field_through_the_api() {
    let server = applied();

    // show: a detail table, or JSON.
    let out = ok(&server, &["user", "show", "alice"]);
    assert!(out.contains("username      alice\n"), "{out}");
    assert!(out.contains("groups        ops\n"), "{out}");
    let alice: Value =
        serde_json::from_str(&ok(&server, &["user", "show", "alice", "--json"])).unwrap();
    assert_eq!(alice["email"], "alice@example.com");
    let (code, _, err) = run(&server, &["user", "show", "nobody"]);
    assert_eq!(
        (code, err.as_str()),
        (1, "jmsctl: user `nobody` not found (HTTP 404)\n")
    );

    // add prints the created entity with --json.
    let qa: Value = serde_json::from_str(&ok(&server, &["group", "add", "qa", "--json"])).unwrap();
    assert!(qa["gid"].as_u64().is_some() && qa["name"] == "qa", "{qa}");
    let node: Value =
        serde_json::from_str(&ok(&server, &["node", "add", "/Default/qa", "--json"])).unwrap();
    assert_eq!(node["path"], "/Default/qa");

    // user: scalars, list fields, login ACL.
    assert_eq!(
        ok(
            &server,
            &[
                "user",
                "set",
                "alice",
                "--add-group",
                "dev",
                "--remove-group",
                "ops",
                "--email",
                "a@x.example",
                "--expires",
                "2030-01-01",
                "--add-allow-from",
                "10.0.0.0/8",
            ]
        ),
        "changed user alice (date_expired, email, groups, login_acl)\n"
    );
    let alice = get(&server, "/api/v1/users/alice");
    assert_eq!(strings(&alice["groups"]), ["dev"]);
    assert_eq!(alice["email"], "a@x.example");
    assert_eq!(alice["date_expired"], "2030-01-01T00:00:00Z");
    assert_eq!(strings(&alice["login_acl"]["allow_from"]), ["10.0.0.0/8"]);
    ok(
        &server,
        &["user", "set", "alice", "--no-expires", "--no-email"],
    );
    let alice = get(&server, "/api/v1/users/alice");
    assert!(
        alice.get("date_expired").is_none() && alice.get("email").is_none(),
        "{alice}"
    );
    // Removing what is not there is refused before the server is asked.
    let version = server.version();
    let (code, _, err) = run(&server, &["user", "set", "alice", "--remove-group", "ops"]);
    assert_eq!(
        (code, err.as_str()),
        (2, "jmsctl: user alice: `groups` has no `ops`\n")
    );
    // The server's check: an unknown group (422, exit 1), nothing applied.
    let (code, _, err) = run(&server, &["user", "set", "alice", "--add-group", "nosuch"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("unknown user group `nosuch`") && err.contains("HTTP 422"),
        "{err}"
    );
    assert_eq!(server.version(), version);
    let (code, _, err) = run(&server, &["user", "set", "alice"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nothing to change"), "{err}");

    // keys
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBsxJk0mSzLqQ5XHAhmbdlBRBm0Vq4bEn7+0Y8Tcx0Sd alice@laptop";
    ok(&server, &["user", "key", "add", "alice", key]);
    let list = ok(&server, &["user", "key", "list", "alice"]);
    assert!(
        list.starts_with("#  TYPE         KEY                COMMENT\n"),
        "{list}"
    );
    assert!(
        list.contains("1  ssh-ed25519  …") && list.contains("alice@laptop\n"),
        "{list}"
    );
    let keys: Value =
        serde_json::from_str(&ok(&server, &["user", "key", "list", "alice", "--json"])).unwrap();
    assert_eq!(keys, json!([key]));
    let (code, _, err) = run(&server, &["user", "key", "remove", "alice", "bob@desk"]);
    assert_eq!(code, 2, "{err}");
    ok(&server, &["user", "key", "remove", "alice", "alice@laptop"]);
    assert!(get(&server, "/api/v1/users/alice")
        .get("public_keys")
        .is_none());

    // group: comment and members (a field of each user).
    let out = ok(
        &server,
        &[
            "group",
            "set",
            "ops",
            "--comment",
            "Operations",
            "--add-member",
            "bob",
        ],
    );
    assert!(out.contains("user bob joined user group ops\n"), "{out}");
    let ops = get(&server, "/api/v1/groups/ops");
    assert_eq!(ops["comment"], "Operations");
    assert_eq!(strings(&ops["members"]), ["bob", "carol"]);
    ok(&server, &["group", "set", "ops", "--remove-member", "bob"]);
    assert_eq!(
        strings(&get(&server, "/api/v1/groups/ops")["members"]),
        ["carol"]
    );

    // asset: address, protocols (by name or name:port), nodes.
    ok(
        &server,
        &[
            "asset",
            "set",
            "web01",
            "--address",
            "10.1.1.1",
            "--add-protocol",
            "sftp:2222",
            "--remove-protocol",
            "sftp",
            "--add-node",
            "/Default/test",
        ],
    );
    let web01 = get(&server, "/api/v1/assets/web01");
    assert_eq!(web01["address"], "10.1.1.1");
    assert_eq!(
        web01["protocols"],
        json!([{"name": "ssh", "port": 2201}, {"name": "sftp", "port": 2222}])
    );
    assert_eq!(
        strings(&web01["nodes"]),
        ["/Default/prod/web", "/Default/test"]
    );
    ok(
        &server,
        &["asset", "set", "web01", "--remove-protocol", "sftp:2222"],
    );
    assert_eq!(
        get(&server, "/api/v1/assets/web01")["protocols"],
        json!([{"name": "ssh", "port": 2201}])
    );
    let out = ok(&server, &["asset", "show", "web01"]);
    assert!(
        out.contains("accounts\n  - {"),
        "accounts, one per line: {out}"
    );

    // account: fields, and a new secret from stdin (never argv).
    ok(
        &server,
        &[
            "account",
            "set",
            "web01",
            "root",
            "--username",
            "admin",
            "--privileged",
            "false",
        ],
    );
    let root = get(&server, "/api/v1/assets/web01/accounts/root");
    assert_eq!(
        (root["username"].as_str(), root["privileged"].as_bool()),
        (Some("admin"), Some(false))
    );
    let (code, out, err) = outcome(&server.jmsctl_with(
        &["account", "set", "web01", "root", "--secret"],
        &server.admin,
        Some("rotated-pw\n"),
    ));
    assert_eq!(
        (code, out.as_str()),
        (0, "changed account root@web01 (secret)\n"),
        "{err}"
    );
    let doc = get(&server, "/api/v1/policy?with_secrets=true");
    assert_eq!(doc["assets"][0]["accounts"][0]["secret"], "rotated-pw");
    let shown = ok(&server, &["account", "show", "web01", "root", "--json"]);
    assert!(
        !shown.contains("rotated-pw") && shown.contains("\"has_secret\": true"),
        "{shown}"
    );

    // grant: lists, expiry.
    ok(
        &server,
        &[
            "grant",
            "set",
            "ops-prod",
            "--add-user",
            "alice",
            "--add-action",
            "copy",
            "--remove-action",
            "upload",
            "--expires",
            "2030-06-30",
            "--comment",
            "for the audit",
        ],
    );
    let grant = get(&server, "/api/v1/grants/ops-prod");
    assert_eq!(strings(&grant["users"]), ["alice"]);
    assert_eq!(strings(&grant["actions"]), ["connect", "download", "copy"]);
    assert_eq!(grant["date_expired"], "2030-06-30T00:00:00Z");
    assert_eq!(grant["comment"], "for the audit");
    let grant: Value = serde_json::from_str(&ok(
        &server,
        &["grant", "set", "ops-prod", "--no-expires", "--json"],
    ))
    .unwrap();
    assert!(
        grant.get("date_expired").is_none(),
        "--json prints the result: {grant}"
    );

    // filter
    ok(
        &server,
        &[
            "filter",
            "set",
            "no-rm-root",
            "--add-rule",
            "^halt",
            "--priority",
            "20",
            "--active",
            "false",
        ],
    );
    let filter = get(&server, "/api/v1/filters/no-rm-root");
    assert_eq!(filter["rules"].as_array().unwrap().len(), 3);
    assert_eq!(
        (filter["priority"].as_u64(), filter["is_active"].as_bool()),
        (Some(20), Some(false))
    );

    // node: a rename moves what is under it, and what names it follows.
    ok(&server, &["node", "add", "/Default/prod"]);
    let version = server.version();
    ok(
        &server,
        &[
            "node",
            "set",
            "/Default/prod",
            "--path",
            "/Default/production",
        ],
    );
    assert_eq!(server.version(), version + 1, "one change");
    let nodes = ok(&server, &["node", "list"]);
    assert!(
        nodes.contains("/Default/production/web") && !nodes.contains("/Default/prod/"),
        "{nodes}"
    );
    assert_eq!(
        strings(&get(&server, "/api/v1/assets/db01")["nodes"]),
        ["/Default/production/db"]
    );
    assert_eq!(
        strings(&get(&server, "/api/v1/grants/ops-prod")["nodes"]),
        ["/Default/production"]
    );
    let (code, _, err) = run(
        &server,
        &[
            "node",
            "set",
            "/Default/test",
            "--path",
            "/Default/production/web",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already exists (HTTP 409)"), "{err}");
    let (code, _, err) = run(
        &server,
        &[
            "node",
            "set",
            "/Default/test",
            "--path",
            "/Default/test/sub",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot move under itself (`/Default/test/sub`) (HTTP 400)"),
        "{err}"
    );

    // node: what sits in it.
    let node: Value =
        serde_json::from_str(&ok(&server, &["node", "show", "/Default/test", "--json"])).unwrap();
    assert_eq!(strings(&node["assets"]), ["web01", "test01"]);
    assert_eq!(strings(&node["grants"]), ["bob-test"]);
}

#[test]
fn delete_says_what_it_touches_and_needs_a_terminal_or_yes() {
    let server = applied();
    let version = server.version();

    // No terminal (stdin is /dev/null here) and no --yes: refused, kept.
    let (code, _, err) = run(&server, &["grant", "delete", "draft"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("deleting grant draft:\n  1 users it names: bob\n"),
        "{err}"
    );
    assert!(
        err.ends_with(
            "jmsctl: not deleting grant draft without a terminal to confirm: give --yes\n"
        ),
        "{err}"
    );
    let (code, _, err) =
        outcome(&server.jmsctl_with(&["user", "delete", "carol"], &server.admin, Some("y\n")));
    assert_eq!(code, 2, "a piped `y` is no terminal: {err}");
    assert_eq!(server.version(), version, "nothing deleted");
    get(&server, "/api/v1/grants/draft");
    get(&server, "/api/v1/users/carol");

    let (code, out, err) = run(&server, &["grant", "delete", "draft", "--yes"]);
    assert_eq!((code, out.as_str()), (0, "deleted grant draft\n"), "{err}");
    assert!(
        err.contains("bastions end the live sessions it alone allowed"),
        "{err}"
    );

    // A node: the assets, grants and filters it touches; the server
    // refuses while they use it.
    let (code, _, err) = run(&server, &["node", "delete", "/Default/test", "--yes"]);
    assert!(
        err.contains("  1 assets in it or under it: test01\n"),
        "{err}"
    );
    assert!(
        err.contains("  1 grants name it or a node under it: bob-test\n"),
        "{err}"
    );
    assert_eq!(code, 1, "refused by the server: {err}");
    assert!(
        err.contains("HTTP 422") && err.contains("node /Default/test not deleted"),
        "{err}"
    );
    let (code, _, err) = run(&server, &["node", "delete", "/Default/prod", "--yes"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "jmsctl: node `/Default/prod` is not declared (HTTP 404)\n"
        ),
        "implied by its children"
    );

    // An asset with --json: what went with it.
    ok(&server, &["grant", "delete", "ops-paused", "--yes"]);
    ok(&server, &["node", "add", "/Default/spare"]);
    ok(
        &server,
        &[
            "asset",
            "set",
            "test01",
            "--add-node",
            "/Default/spare",
            "--remove-node",
            "/Default/test",
        ],
    );
    let (code, out, err) = run(&server, &["asset", "delete", "test01", "--yes", "--json"]);
    assert_eq!(code, 0, "{err}");
    let deleted: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(deleted["deleted"], "asset");
    assert_eq!(deleted["touched"]["grants name it"], json!([]));
    assert_eq!(
        server
            .call(Some(&server.admin), "GET", "/api/v1/assets/test01", None)
            .0,
        404
    );
    ok(&server, &["node", "delete", "/Default/spare", "--yes"]);

    // A user: the groups she leaves.
    let (code, _, err) = run(&server, &["user", "delete", "carol", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("  1 user groups she leaves: ops\n"), "{err}");
    // A group named by grants: stated, then refused by the server.
    let (code, _, err) = run(&server, &["group", "delete", "dev", "--yes"]);
    assert!(
        err.contains("  3 members leave it: bob, dave, erin\n"),
        "{err}"
    );
    assert_eq!(code, 1, "{err}");
    // An account: the grants that name it on its asset.
    let (code, _, err) = run(&server, &["account", "delete", "web01", "deploy", "--yes"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("1 grants name it on this asset: ops-prod"),
        "{err}"
    );
    let (code, _, err) = run(&server, &["filter", "delete", "no-rm-root", "-y"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("2 rules stop applying"), "{err}");
    let (code, _, err) = run(&server, &["filter", "delete", "no-rm-root", "--yes"]);
    assert_eq!(
        (code, err.as_str()),
        (
            1,
            "jmsctl: command filter `no-rm-root` not found (HTTP 404)\n"
        )
    );
}

/// An `$EDITOR` that runs `script` on the file it is given.
fn editor(server: &Server, name: &str, script: &str) -> String {
    let path = server.dir.path().join(name);
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.to_str().unwrap().to_string()
}

fn edit(server: &Server, editor: &str, args: &[&str]) -> (i32, String, String) {
    outcome(&jmsctl_env(
        args,
        &[
            ("JMS_SERVER", &server.url),
            ("JMS_TOKEN", &server.admin),
            ("EDITOR", editor),
        ],
        None,
    ))
}

#[test]
fn edit_applies_a_checked_edit_and_nothing_of_a_refused_one() {
    let server = applied();

    // What the editor sees: the policy-file form, no server fields.
    let seen = server.dir.path().join("seen.yaml");
    let copy = editor(&server, "copy.sh", &format!("cp \"$1\" {}", seen.display()));
    let (code, out, err) = edit(&server, &copy, &["asset", "edit", "web01"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "no changes to asset web01\n"),
        "{err}"
    );
    let yaml = std::fs::read_to_string(&seen).unwrap();
    assert!(
        yaml.contains("\naddress: 127.0.0.1\n") && yaml.contains("\nname: web01\n"),
        "{yaml}"
    );
    assert!(
        !yaml.contains("created_at:") && !yaml.contains("\naccounts:"),
        "{yaml}"
    );

    // A good edit: the diff, then applied (one version).
    let version = server.version();
    let move_it = editor(
        &server,
        "move.sh",
        "sed -i -e 's/^address: .*/address: 10.7.7.7/' -e 's|^- /Default/prod/web$|- /Default/test|' \"$1\"",
    );
    let (code, out, err) = edit(&server, &move_it, &["asset", "edit", "web01"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "~ address: 127.0.0.1 → 10.7.7.7\n~ nodes: [\"/Default/prod/web\"] → [\"/Default/test\"]\nchanged asset web01 (2 fields)\n"
    );
    assert_eq!(server.version(), version + 1);
    let web01 = get(&server, "/api/v1/assets/web01");
    assert_eq!(
        (web01["address"].as_str(), strings(&web01["nodes"])),
        (Some("10.7.7.7"), vec!["/Default/test"])
    );
    assert_eq!(
        web01["accounts"].as_array().unwrap().len(),
        3,
        "accounts untouched"
    );

    // A grant's expiry into the past.
    let expire = editor(
        &server,
        "expire.sh",
        "sed -i 's/^date_expired: .*/date_expired: 2020-01-01T00:00:00Z/' \"$1\"",
    );
    let (code, out, err) = edit(&server, &expire, &["grant", "edit", "ops-prod"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("~ date_expired: 2099-12-31T00:00:00Z → 2020-01-01T00:00:00Z\n"),
        "{out}"
    );
    assert_eq!(
        get(&server, "/api/v1/grants/ops-prod")["date_expired"],
        "2020-01-01T00:00:00Z"
    );
    // A field added, one removed.
    let comment = editor(
        &server,
        "comment.sh",
        "echo 'comment: reviewed' >> \"$1\"; sed -i '/^date_expired:/d' \"$1\"",
    );
    let (code, out, err) = edit(&server, &comment, &["grant", "edit", "ops-prod"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("- date_expired: 2020-01-01T00:00:00Z\n+ comment: reviewed\n"),
        "{out}"
    );
    let grant = get(&server, "/api/v1/grants/ops-prod");
    assert!(
        grant.get("date_expired").is_none() && grant["comment"] == "reviewed",
        "{grant}"
    );

    // Refused edits change nothing.
    let version = server.version();
    let before = get(&server, "/api/v1/users/alice");
    let cases: [(&str, &str, i32, &str); 6] = [
        // The server's check (422): one line, exit 1.
        ("group.sh", "sed -i 's/^- ops$/- nosuch/' \"$1\"", 1, "user alice not changed: user `alice`: field `groups[0]`: unknown user group `nosuch` (HTTP 422)"),
        // Read as a policy file reads it.
        ("field.sh", "echo 'colour: red' >> \"$1\"", 2, "user alice not changed: unknown field `colour`"),
        ("yaml.sh", "echo 'groups: [unclosed' >> \"$1\"", 2, "user alice not changed: the edited YAML does not parse"),
        ("rename.sh", "sed -i 's/^username: alice$/username: alicia/' \"$1\"", 2, "user alice not changed: `username` cannot change"),
        ("uid.sh", "echo 'uid: 0' >> \"$1\"", 2, "user alice not changed: `uid` is kept by the server"),
        ("fail.sh", "exit 3", 2, "failed (exit status: 3): nothing changed"),
    ];
    for (name, script, want_code, want) in cases {
        let (code, out, err) = edit(
            &server,
            &editor(&server, name, script),
            &["user", "edit", "alice"],
        );
        assert_eq!(code, want_code, "{name}: {out}{err}");
        assert!(
            err.starts_with("jmsctl: ") && err.contains(want) && err.lines().count() == 1,
            "{name}: {err}"
        );
        assert!(!out.contains("changed user"), "{name}: {out}");
    }
    let (code, out, _) = edit(
        &server,
        &editor(&server, "empty.sh", ": > \"$1\""),
        &["user", "edit", "alice"],
    );
    assert_eq!(
        (code, out.as_str()),
        (0, "edit cancelled: user alice not changed\n")
    );
    assert_eq!(
        server.version(),
        version,
        "no refused edit changed anything"
    );
    assert_eq!(get(&server, "/api/v1/users/alice"), before);

    // Every kind edits (an account's username; a group's comment; a filter).
    let (code, _, err) = edit(
        &server,
        &editor(
            &server,
            "acct.sh",
            "sed -i 's/^username: root$/username: admin/' \"$1\"",
        ),
        &["account", "edit", "web02", "root"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        get(&server, "/api/v1/assets/web02/accounts/root")["username"],
        "admin"
    );
    let (code, _, err) = edit(
        &server,
        &editor(&server, "grp.sh", "echo 'comment: Ops team' >> \"$1\""),
        &["group", "edit", "ops"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(get(&server, "/api/v1/groups/ops")["comment"], "Ops team");
    let (code, _, err) = edit(
        &server,
        &editor(
            &server,
            "flt.sh",
            "sed -i 's/^priority: 10$/priority: 5/' \"$1\"",
        ),
        &["filter", "edit", "no-rm-root"],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(get(&server, "/api/v1/filters/no-rm-root")["priority"], 5);
}

#[test]
fn user_password_and_mfa_resets() {
    let server = applied();
    let version = server.version();
    // The server's password rules, checked before anything is sent.
    let (code, _, err) = outcome(&server.jmsctl_with(
        &["user", "reset-password", "alice", "--stdin"],
        &server.admin,
        Some("short\n"),
    ));
    assert_eq!(code, 2, "{err}");
    assert!(err.starts_with("jmsctl: password refused: "), "{err}");
    assert_eq!(server.version(), version);
    let (code, out, err) = outcome(&server.jmsctl_with(
        &["user", "reset-password", "alice", "--stdin"],
        &server.admin,
        Some("Correct-Horse-9\n"),
    ));
    assert_eq!(
        (code, out.as_str()),
        (0, "set a new password for user alice\n"),
        "{err}"
    );
    let doc = get(&server, "/api/v1/policy?with_secrets=true");
    let hash = doc["users"][0]["password_hash"].as_str().unwrap();
    assert!(jms_core::password::verify_password(b"Correct-Horse-9", hash).unwrap());
    assert!(!jms_core::password::verify_password(b"short", hash).unwrap());

    // Mailing a link needs mail settings: the server says so (exit 1).
    let (code, _, err) = run(&server, &["user", "reset-password", "alice"]);
    assert_eq!(code, 1, "{err}");

    server.expect(
        200,
        "PATCH",
        "/api/v1/users/alice",
        Some(json!({"totp_secret": "JBSWY3DPEHPK3PXP"})),
    );
    assert_eq!(get(&server, "/api/v1/users/alice")["has_totp"], true);
    assert_eq!(
        ok(&server, &["user", "reset-mfa", "alice"]),
        "reset the TOTP of user alice: she enrolls again at her next login\n"
    );
    let alice = get(&server, "/api/v1/users/alice");
    assert_eq!(
        (alice["has_totp"].as_bool(), alice["has_password"].as_bool()),
        (Some(false), Some(true))
    );
    assert_eq!(
        ok(&server, &["user", "reset-mfa", "alice"]),
        "user alice has no TOTP secret: nothing to reset\n"
    );
}

#[test]
fn completion_scripts_name_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = outcome(&jmsctl_env(&["completion", shell], &[], None));
        assert_eq!(code, 0, "{shell}: {err}");
        for word in ["reset-password", "bastion", "add-group", "edit"] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
}
