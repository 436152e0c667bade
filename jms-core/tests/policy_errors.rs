//! Every kind of bad policy file gets one precise error naming the file,
//! the entity and the field — and never a panic.

use std::path::Path;

use jms_core::{Format, Policy};

fn error_of(text: &str) -> String {
    match Policy::parse(text, Format::Yaml, "bad.yaml", Path::new(".")) {
        Ok(_) => panic!("policy should be refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

const ASSET: &str = "{name: web01, address: 10.0.0.1, protocols: [{name: ssh, port: 22}], accounts: [{name: root, username: root, secret_type: password}]}";

#[test]
fn unknown_field_names_entity_and_field() {
    let err = error_of("users:\n  - {username: alice, emial: a@x}\n");
    assert!(
        err.starts_with("bad.yaml: user `alice` (users[0]): field `emial`: unknown field `emial`"),
        "{err}"
    );
}

#[test]
fn unknown_top_level_section() {
    let err = error_of("grnts: []\n");
    assert!(
        err.starts_with("bad.yaml: top level: unknown field `grnts`"),
        "{err}"
    );
}

#[test]
fn missing_required_field() {
    let err = error_of("grants:\n  - {name: g, users: [], accounts: []}\n");
    assert!(
        err.starts_with(
            "bad.yaml: grant `g` (grants[0]): field `protocols`: missing field `protocols`"
        ),
        "{err}"
    );
}

#[test]
fn unknown_references_in_grants() {
    let base = format!("users: [{{username: alice}}]\nuser_groups: [{{name: ops}}]\nnodes: [/Default/a]\nassets: [{ASSET}]\n");
    let cases = [
        ("users: [bob]", "field `users[0]`: unknown user `bob`"),
        (
            "user_groups: [dev]",
            "field `user_groups[0]`: unknown user group `dev`",
        ),
        (
            "assets: [web09]",
            "field `assets[0]`: unknown asset `web09`",
        ),
        (
            "nodes: [/Default/b]",
            "field `nodes[0]`: unknown node `/Default/b` (declare it under `nodes:`)",
        ),
        (
            "accounts: [\"@EVERYONE\"]",
            "field `accounts[0]`: unknown account alias `@EVERYONE`",
        ),
    ];
    for (part, expected) in cases {
        let grant = if part.starts_with("accounts") {
            format!("{{name: g, users: [alice], {part}, protocols: [all], actions: [all]}}")
        } else {
            format!("{{name: g, {part}, accounts: [\"@ALL\"], protocols: [all], actions: [all]}}")
        };
        let err = error_of(&format!("{base}grants:\n  - {grant}\n"));
        assert!(
            err.starts_with(&format!("bad.yaml: grant `g`: {expected}")),
            "{part}: {err}"
        );
    }
}

#[test]
fn unknown_group_of_a_user() {
    let err = error_of("users: [{username: alice, groups: [ops]}]\n");
    assert_eq!(
        err,
        "bad.yaml: user `alice`: field `groups[0]`: unknown user group `ops`"
    );
}

#[test]
fn duplicate_names() {
    let cases = [
        ("users: [{username: a}, {username: a}]", "user `a`: field `username`: duplicate user name"),
        ("user_groups: [{name: g}, {name: g}]", "user group `g`: field `name`: duplicate user group name"),
        (&*format!("assets: [{ASSET}, {ASSET}]"), "asset `web01`: field `name`: duplicate asset name"),
        ("nodes: [/a, /a]", "node `/a`: field `path`: duplicate node"),
        (
            "assets: [{name: w, address: x, protocols: [], accounts: [{name: r, username: r, secret_type: password}, {name: r, username: s, secret_type: password}]}]",
            "asset `w`: field `accounts[1].name`: duplicate account `r`",
        ),
        (
            "grants: [{name: g, accounts: [], protocols: [], actions: []}, {name: g, accounts: [], protocols: [], actions: []}]",
            "grant `g`: field `name`: duplicate grant name",
        ),
    ];
    for (text, expected) in cases {
        assert_eq!(error_of(text), format!("bad.yaml: {expected}"), "{text}");
    }
}

#[test]
fn bad_dates() {
    let err = error_of(
        "grants: [{name: g, accounts: [], protocols: [], actions: [], date_expired: 2026-13-01}]\n",
    );
    assert!(
        err.starts_with(
            "bad.yaml: grant `g` (grants[0]): field `date_expired`: bad date `2026-13-01`"
        ),
        "{err}"
    );
    let err = error_of("users: [{username: a, date_expired: tomorrow}]\n");
    assert!(
        err.starts_with("bad.yaml: user `a` (users[0]): field `date_expired`: bad date `tomorrow`"),
        "{err}"
    );
}

#[test]
fn bad_regex_in_a_command_filter() {
    let err = error_of("command_filters: [{name: f, action: deny, rules: ['ok', '(unclosed'], accounts: ['@ALL']}]\n");
    assert!(
        err.starts_with("bad.yaml: command filter `f`: field `rules[1]`: bad regex:"),
        "{err}"
    );
}

#[test]
fn bad_protocol_and_action_names() {
    let err = error_of("grants: [{name: g, accounts: [], protocols: [rdp], actions: []}]\n");
    assert!(
        err.starts_with(
            "bad.yaml: grant `g` (grants[0]): field `protocols[0]`: unknown variant `rdp`"
        ),
        "{err}"
    );
    let err = error_of("grants: [{name: g, accounts: [], protocols: [], actions: [reboot]}]\n");
    assert!(
        err.starts_with(
            "bad.yaml: grant `g` (grants[0]): field `actions[0]`: unknown variant `reboot`"
        ),
        "{err}"
    );
    let err = error_of("assets: [{name: w, address: x, protocols: [{name: telnet, port: 23}]}]\n");
    assert!(
        err.starts_with(
            "bad.yaml: asset `w` (assets[0]): field `protocols[0].name`: unknown variant `telnet`"
        ),
        "{err}"
    );
    let err = error_of("command_filters: [{name: f, action: confirm, rules: [], accounts: []}]\n");
    assert!(err.starts_with("bad.yaml: command filter `f` (command_filters[0]): field `action`: unknown variant `confirm`"), "{err}");
}

#[test]
fn bad_names_and_values() {
    let cases = [
        (
            "users: [{username: 'al ice'}]",
            "user `al ice`: field `username`: bad name `al ice`",
        ),
        (
            "assets: [{name: 'a:b', address: x, protocols: []}]",
            "asset `a:b`: field `name`: bad name `a:b`: `:` is not allowed",
        ),
        (
            "assets: [{name: a, address: x, protocols: [{name: ssh, port: 0}]}]",
            "asset `a`: field `protocols[0].port`: port 0",
        ),
        (
            "nodes: [Default/x]",
            "node `Default/x`: field `path`: bad node path `Default/x`: must start with `/`",
        ),
        (
            "users: [{username: a, password_hash: 'md5$x'}]",
            "user `a`: field `password_hash`: malformed password hash",
        ),
        (
            "command_filters: [{name: f, priority: 0, action: deny, rules: [], accounts: []}]",
            "command filter `f`: field `priority`: priority 0 is outside 1..=100",
        ),
    ];
    for (text, expected) in cases {
        let err = error_of(text);
        assert!(
            err.starts_with(&format!("bad.yaml: {expected}")),
            "{text}\n got {err}"
        );
    }
}

#[test]
fn syntax_errors_name_the_file_and_position() {
    let err = error_of("users: [\n");
    assert!(
        err.starts_with("bad.yaml: ") && err.contains("line"),
        "{err}"
    );
    let err = Policy::parse("{\"users\": [}", Format::Json, "bad.json", Path::new("."))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("bad.json: ") && err.contains("line 1"),
        "{err}"
    );
}

#[test]
fn secret_file_is_read_relative_to_the_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    std::fs::write(dir.path().join("keys/root"), "s3cret\n").unwrap();
    let text = "assets: [{name: w, address: x, protocols: [], accounts: [{name: r, username: r, secret_type: password, secret_file: keys/root}]}]\n";
    std::fs::write(dir.path().join("p.yaml"), text).unwrap();
    let policy = Policy::load(&dir.path().join("p.yaml")).unwrap();
    let secret = policy.doc.assets[0].accounts[0].secret.as_ref().unwrap();
    assert_eq!(secret.expose(), "s3cret");
    assert_eq!(
        format!("{secret:?}"),
        "Secret(***)",
        "Debug must never show a secret"
    );

    let missing = text.replace("keys/root", "keys/none");
    std::fs::write(dir.path().join("q.yaml"), missing).unwrap();
    let err = Policy::load(&dir.path().join("q.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("asset `w`: field `accounts[0].secret_file`: cannot read"),
        "{err}"
    );

    let both = text.replace("secret_file", "secret: x, secret_file");
    let err = error_of(&both);
    assert!(
        err.ends_with("give `secret` or `secret_file`, not both"),
        "{err}"
    );
}

#[test]
fn json_and_yaml_read_the_same_schema() {
    let yaml = format!("users: [{{username: alice}}]\nassets: [{ASSET}]\ngrants: [{{name: g, users: [alice], assets: [web01], accounts: ['@ALL'], protocols: [all], actions: [all]}}]\n");
    let from_yaml = Policy::parse(&yaml, Format::Yaml, "p.yaml", Path::new(".")).unwrap();
    let json = serde_json::to_string(&from_yaml.doc).unwrap();
    let from_json = Policy::parse(&json, Format::Json, "p.json", Path::new(".")).unwrap();
    assert_eq!(from_json.summary(), from_yaml.summary());
}

#[test]
fn an_unreadable_file_is_an_error() {
    let err = Policy::load(Path::new("/nonexistent/p.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("/nonexistent/p.yaml: cannot read:"),
        "{err}"
    );
}

#[test]
fn garbage_never_panics() {
    let samples = [
        "",
        "~",
        "[]",
        "42",
        "users: 7",
        "users: [7]",
        "assets: [{}]",
        "nodes: [{a: b}]",
        "grants: [[]]",
        "\u{0}",
        "users: [{username: a, login_acl: {allow_from: [nonsense]}}]",
    ];
    for text in samples {
        let _ = Policy::parse(text, Format::Yaml, "g.yaml", Path::new("."));
        let _ = Policy::parse(text, Format::Json, "g.json", Path::new("."));
    }
}

/// Found by fuzzing (fuzz/regressions/policy/duplicate-key-yaml): a key
/// given twice was accepted, the last value winning, when the typed parse
/// refused it; a reader of the first `actions` saw another grant.
#[test]
fn a_key_given_twice_is_refused() {
    let yaml = format!(
        "users: [{{username: alice}}]\nassets: [{ASSET}]\n\
         grants:\n  - {{name: g, users: [alice], assets: [web01], accounts: [\"@ALL\"], \
         protocols: [ssh], actions: [connect], actions: [all]}}\n"
    );
    let err = error_of(&yaml);
    assert!(
        err.contains("duplicate") && err.contains("actions"),
        "{err}"
    );
    let json = r#"{"users": [{"username": "alice"}], "users": []}"#;
    match Policy::parse(json, Format::Json, "bad.json", Path::new(".")) {
        Ok(_) => panic!("a JSON key given twice should be refused"),
        Err(e) => assert!(e.to_string().contains("duplicate"), "{e}"),
    }
    // An empty file is still the empty policy.
    for text in ["", "~\n", "null"] {
        let policy = Policy::parse(text, Format::Yaml, "empty.yaml", Path::new("."))
            .expect("an empty policy");
        assert_eq!(policy.doc, Default::default());
    }
}

#[test]
fn an_asset_zone_is_a_plain_label() {
    let ok = "assets: [{name: web01, address: 10.0.0.1, protocols: [{name: ssh, port: 22}], zone: dmz-1.eu}]\n";
    let policy = Policy::parse(ok, Format::Yaml, "ok.yaml", Path::new(".")).unwrap();
    assert_eq!(
        policy.doc.to_document().assets[0].zone.as_deref(),
        Some("dmz-1.eu")
    );
    for bad in ["''", "'a b'", "'a/b'", &"z".repeat(65)] {
        let err = error_of(&format!(
            "assets: [{{name: web01, address: 10.0.0.1, protocols: [{{name: ssh, port: 22}}], zone: {bad}}}]\n"
        ));
        assert!(
            err.contains("asset `web01`") && err.contains("field `zone`: bad zone"),
            "{bad}: {err}"
        );
    }
}
