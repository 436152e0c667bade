//! `jmsctl` against a real server: policy apply / export round trip, dry
//! runs, the entity commands, the token file and the exit codes.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{jmsctl_env, outcome, Server, EXAMPLE};
use jms_core::model::PolicyDocument;
use jms_core::Policy;
use serde_json::Value;

/// The example policy as the server should hold it: `secret_file`s read,
/// and without secrets unless asked.
fn example(with_secrets: bool) -> Value {
    let mut doc = Policy::load(Path::new(EXAMPLE)).unwrap().doc.to_document();
    for asset in &mut doc.assets {
        for account in &mut asset.accounts {
            account.secret_file = None;
            if !with_secrets {
                account.secret = None;
            }
        }
    }
    if !with_secrets {
        for user in &mut doc.users {
            user.password_hash = None;
            user.totp_secret = None;
        }
    }
    serde_json::to_value(doc).unwrap()
}

fn export(server: &Server, args: &[&str]) -> Value {
    let mut all = vec!["policy", "export"];
    all.extend_from_slice(args);
    let (code, out, err) = outcome(&server.jmsctl(&all));
    assert_eq!(code, 0, "policy export: {err}");
    let doc: PolicyDocument = if args.contains(&"--json") {
        serde_json::from_str(&out).unwrap()
    } else {
        serde_yaml_ng::from_str(&out).expect("export is a policy file")
    };
    serde_json::to_value(doc).unwrap()
}

#[test]
fn apply_then_export_round_trips_the_example_policy() {
    let server = Server::start();
    let (code, out, err) = outcome(&server.jmsctl(&["policy", "apply", EXAMPLE]));
    assert_eq!(code, 0, "apply: {err}");
    assert!(
        out.contains("+ user alice\n") && out.contains("+ account web01/deploy\n"),
        "{out}"
    );
    assert!(
        out.ends_with("28 changes applied (policy version 1)\n"),
        "{out}"
    );

    assert_eq!(
        export(&server, &[]),
        example(false),
        "YAML export equals the file, secrets aside"
    );
    assert_eq!(export(&server, &["--json"]), example(false));
    assert_eq!(
        export(&server, &["--with-secrets"]),
        example(true),
        "with secrets, equal including them (secret_file read by jmsctl)"
    );

    // The export is itself a valid policy file.
    let file = server.dir.path().join("exported.yaml");
    let (_, yaml, _) = outcome(&server.jmsctl(&["policy", "export"]));
    std::fs::write(&file, yaml).unwrap();
    let (code, out, _) = outcome(&server.jmsctl(&["policy", "check", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}");
    // Applying it again changes nothing (absent secrets are kept).
    let (code, out, _) = outcome(&server.jmsctl(&["policy", "apply", file.to_str().unwrap()]));
    assert_eq!((code, out.as_str()), (0, "no changes (policy version 1)\n"));
    assert_eq!(export(&server, &["--with-secrets"]), example(true));
}

#[test]
fn dry_run_shows_the_diff_and_changes_nothing() {
    let server = Server::start();
    let (code, out, _) = outcome(&server.jmsctl(&["policy", "apply", EXAMPLE, "--dry-run"]));
    assert_eq!(code, 0);
    assert!(out.contains("+ grant ops-prod\n"), "{out}");
    assert!(
        out.ends_with("28 changes (dry run: nothing applied)\n"),
        "{out}"
    );
    assert_eq!(server.version(), 0, "a dry run bumps nothing");
    assert_eq!(
        export(&server, &[]),
        serde_json::to_value(PolicyDocument::default()).unwrap()
    );

    server.jmsctl(&["policy", "apply", EXAMPLE]);
    let edited = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace("name: Alice Liu", "name: Alice Liu-Wang")
        .replace("  - {name: draft, users: [bob], assets: [db01], accounts: [], protocols: [ssh], actions: [connect]}\n", "")
        .replace("secret: \"demo-only-pg-pw\"", "secret: \"rotated\"");
    let file = server.dir.path().join("edited.yaml");
    std::fs::write(&file, edited).unwrap();
    std::fs::create_dir_all(server.dir.path().join("keys")).unwrap();
    std::fs::copy(
        Path::new(EXAMPLE).parent().unwrap().join("keys/deploy"),
        server.dir.path().join("keys/deploy"),
    )
    .unwrap();
    let before = export(&server, &["--with-secrets"]);
    let (code, out, err) =
        outcome(&server.jmsctl(&["policy", "apply", file.to_str().unwrap(), "--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        "~ user alice (name)\n~ account db01/postgres (secret)\n- grant draft\n3 changes (dry run: nothing applied)\n"
    );
    assert_eq!(
        export(&server, &["--with-secrets"]),
        before,
        "nothing changed"
    );
    assert_eq!(server.version(), 1);
    let (code, out, _) = outcome(&server.jmsctl(&["policy", "apply", file.to_str().unwrap()]));
    assert_eq!(code, 0);
    assert!(
        out.ends_with("3 changes applied (policy version 2)\n"),
        "{out}"
    );
}

#[test]
fn entity_commands_create_and_list() {
    let server = Server::start();
    let run = |args: &[&str]| {
        let (code, out, err) = outcome(&server.jmsctl(args));
        assert_eq!(code, 0, "jmsctl {}: {err}", args.join(" "));
        out
    };
    // gid 200000 is the bastions' primary group's (migration 4).
    assert_eq!(
        run(&["group", "add", "ops"]),
        "created user group ops (gid 200001)\n"
    );
    assert!(run(&[
        "user",
        "add",
        "alice",
        "--name",
        "Alice Liu",
        "--group",
        "ops"
    ])
    .starts_with("created user alice (uid "));
    run(&["node", "add", "/Default/prod/web"]);
    run(&[
        "asset",
        "add",
        "web01",
        "--address",
        "10.0.0.1",
        "--protocol",
        "ssh:2222",
        "--protocol",
        "sftp",
        "--node",
        "/Default/prod/web",
    ]);
    let (code, out, err) = outcome(&server.jmsctl_with(
        &["account", "add", "web01", "root", "--privileged"],
        &server.admin,
        Some("s3cret-from-stdin\n"),
    ));
    assert_eq!(
        (code, out.as_str()),
        (0, "created account root@web01\n"),
        "{err}"
    );
    run(&["account", "add", "web01", "guest", "--no-secret"]);
    run(&[
        "grant",
        "add",
        "ops-web",
        "--group",
        "ops",
        "--node",
        "/Default/prod/web",
        "--account",
        "@ALL",
        "--action",
        "connect",
        "--action",
        "upload",
    ]);
    run(&["filter", "add", "no-reboot", "--rule", "^reboot"]);

    let users = run(&["user", "list"]);
    assert!(
        users.starts_with("USERNAME  UID     NAME       EMAIL  GROUPS  ACTIVE\n"),
        "{users}"
    );
    assert!(
        users.contains("alice     200000  Alice Liu         ops     true\n"),
        "{users}"
    );
    assert!(run(&["group", "list"]).contains("ops   200001  alice"));
    assert!(run(&["node", "list"]).contains("/Default/prod/web"));
    let assets = run(&["asset", "list"]);
    assert!(
        assets.contains("web01  10.0.0.1  ssh:2222,sftp:22  /Default/prod/web  -     root,guest"),
        "{assets}"
    );
    let grants = run(&["grant", "list"]);
    assert!(
        grants.contains("ops-web") && grants.contains("connect,upload"),
        "{grants}"
    );
    run(&[
        "grant",
        "add",
        "short-lived",
        "--group",
        "ops",
        "--node",
        "/Default/prod/web",
        "--account",
        "@ALL",
    ]);
    assert_eq!(
        run(&["grant", "delete", "short-lived", "--yes"]),
        "deleted grant short-lived\n"
    );
    assert!(!run(&["grant", "list"]).contains("short-lived"));
    assert!(run(&["filter", "list"]).contains("no-reboot  50        deny    ^reboot  @ALL"));
    let accounts: Value =
        serde_json::from_str(&run(&["account", "list", "web01", "--json"])).unwrap();
    assert_eq!(accounts[0]["has_secret"], true);
    assert_eq!(accounts[1]["has_secret"], false);
    assert!(!accounts.to_string().contains("s3cret-from-stdin"));
    let doc = server.expect(200, "GET", "/api/v1/policy?with_secrets=true", None);
    assert_eq!(
        doc["assets"][0]["accounts"][0]["secret"], "s3cret-from-stdin",
        "stdin's trailing newline dropped"
    );

    assert_eq!(run(&["user", "disable", "alice"]), "disabled user alice\n");
    assert!(run(&["user", "list", "--q", "ali"]).contains("false"));
    assert_eq!(
        server.expect(200, "GET", "/api/v1/users/alice", None)["is_active"],
        false
    );

    assert_eq!(
        run(&["settings", "get", "security.lockout_threshold"]),
        "5\n"
    );
    assert_eq!(
        run(&["settings", "set", "security.lockout_threshold", "3"]),
        "security.lockout_threshold = 3\n"
    );
    assert_eq!(
        run(&["settings", "set", "security.lockout_duration", "1h"]),
        "security.lockout_duration = 1h\n"
    );
    assert_eq!(
        run(&["settings", "get", "security.lockout_duration"]),
        "1h\n"
    );
    let (code, _, err) = outcome(&server.jmsctl(&["settings", "set", "mail.password", "hunter2"]));
    assert_eq!(
        (code, err.as_str()),
        (
            2,
            "jmsctl: mail.password is a secret: give `-` and type it or pipe it on stdin\n"
        )
    );
    let (code, out, _) = outcome(&server.jmsctl_with(
        &["settings", "set", "mail.password", "-"],
        &server.admin,
        Some("hunter2\n"),
    ));
    assert_eq!((code, out.as_str()), (0, "mail.password set\n"));
    assert_eq!(run(&["settings", "get", "mail.has_password"]), "true\n");
}

#[test]
fn exit_codes_say_who_refused() {
    let server = Server::start();
    server.jmsctl(&["user", "add", "alice"]);

    // 1: the server refused (one line, the server's message).
    let (code, _, err) = outcome(&server.jmsctl(&["user", "add", "alice"]));
    assert_eq!(
        (code, err.as_str()),
        (1, "jmsctl: user `alice` already exists (HTTP 409)\n")
    );
    let (code, _, err) = outcome(&server.jmsctl(&[
        "grant",
        "add",
        "g",
        "--user",
        "nobody",
        "--asset",
        "web01",
        "--account",
        "@ALL",
    ]));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with("jmsctl: grant `g`: field `users[0]`: unknown user `nobody` (HTTP 422)"),
        "{err}"
    );
    let (code, _, err) = outcome(&server.jmsctl_with(&["group", "add", "ops"], &server.read, None));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("read-only") && err.contains("HTTP 403"),
        "{err}"
    );
    let (code, _, _) = outcome(&jmsctl_env(
        &["user", "list"],
        &[("JMS_SERVER", "http://127.0.0.1:9"), ("JMS_TOKEN", "x")],
        None,
    ));
    assert_eq!(code, 1, "an unreachable server");

    // 2: bad input, found before asking anyone.
    for args in [
        vec![
            "asset",
            "add",
            "a",
            "--address",
            "h",
            "--protocol",
            "telnet",
        ],
        vec!["account", "add", "web01", "root", "--secret", "on-argv"],
        vec!["policy", "apply", "/nonexistent.yaml"],
        vec!["grant", "add", "g", "--user", "alice"],
    ] {
        let (code, _, err) = outcome(&server.jmsctl(&args));
        assert_eq!(code, 2, "jmsctl {}: {err}", args.join(" "));
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    }
    let (code, _, err) = outcome(&jmsctl_env(&["user", "list"], &[("JMS_TOKEN", "x")], None));
    assert_eq!(
        (code, err.as_str()),
        (
            2,
            "jmsctl: no server: give --server URL or set JMS_SERVER\n"
        )
    );
    let (code, _, err) = outcome(&jmsctl_env(
        &["user", "list", "--server", &server.url],
        &[],
        None,
    ));
    assert_eq!(code, 2);
    assert!(err.starts_with("jmsctl: no token"), "{err}");
}

#[test]
fn the_token_file_must_be_private() {
    let server = Server::start();
    let home = server.dir.path().join("home");
    let file = home.join(".config/jms/token");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, format!("{}\n", server.admin)).unwrap();
    let env = [
        ("HOME", home.to_str().unwrap()),
        ("JMS_SERVER", server.url.as_str()),
    ];

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, _, err) = outcome(&jmsctl_env(&["user", "list"], &env, None));
    assert_eq!(code, 2);
    assert!(
        err.contains("mode 0644 is too open for a token: chmod 600 it"),
        "{err}"
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, out, err) = outcome(&jmsctl_env(&["user", "list"], &env, None));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("USERNAME"));
}

/// A port that answers every request with `status` (`503 Service
/// Unavailable`: an instance that is up but cannot serve), and counts them.
fn failing_server(
    status: &'static str,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (url, hits)
}

/// A URL nothing listens on.
fn down_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

#[test]
fn jmsctl_fails_over_to_the_next_server_url() {
    let server = Server::start();
    let (unavailable, hits) = failing_server("503 Service Unavailable");
    let down = down_server();
    let run = |servers: &str, args: &[&str]| {
        outcome(&jmsctl_env(
            args,
            &[("JMS_SERVER", servers), ("JMS_TOKEN", &server.admin)],
            None,
        ))
    };
    // Down, then 503, then the server: a read and a write (POST) both
    // reach it.
    let servers = format!("{down}, {unavailable},{}", server.url);
    let (code, _, err) = run(&servers, &["user", "add", "carol", "--name", "Carol"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&servers, &["user", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("carol"), "{out}");
    assert!(
        hits.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the 503 URL was tried"
    );
    // All down: unreachable, naming the last URL tried.
    let (code, _, err) = run(&format!("{down},{unavailable}"), &["user", "list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("503") || err.contains("Service Unavailable"),
        "{err}"
    );
    // A malformed URL in the list is refused as such.
    let (code, _, err) = run(&format!("{},ftp://x", server.url), &["user", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ftp://x"), "{err}");
    // A POST answered 500 may have been carried out: not sent again to
    // the next URL (a GET is).
    let (failed, failed_hits) = failing_server("500 Internal Server Error");
    let servers = format!("{failed},{}", server.url);
    let (code, _, err) = run(&servers, &["user", "add", "dave", "--name", "Dave"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("500"), "{err}");
    let (code, out, err) = run(&servers, &["user", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("dave"), "the POST stopped at the 500: {out}");
    assert_eq!(failed_hits.load(std::sync::atomic::Ordering::SeqCst), 2);
}
