//! A bastion following a real jms-server, end to end: `jmsctl` creates a
//! user (with a password), an asset (the harness target on 127.0.0.2) with
//! an account, and a grant; within a poll the user logs in to the bastion
//! with real `ssh` and runs a command on the target. Revoking the grant
//! refuses the next connection; a grant that expires works before and is
//! refused after. The server's settings (lockout threshold, maximum
//! session length) rule the bastion; `jmsctl user unlock` lifts a lockout
//! on it within a control poll; `jmsctl bastion list` shows its own report
//! (jms-agentd's version, the policy it holds); `jmsctl bastion revoke`
//! gets its requests refused (its agentd logs why) while its audit stays. Bundles that are tampered with,
//! replayed or signed by another key — handed to agentd by a proxy on the
//! path, each in an answer signed with the server key — are refused and the
//! bastion keeps working; a man in the middle answering bare 304s is not
//! believed, so past `max_staleness_secs` the bastion fails closed (the
//! user's ssh login is refused) until the path is clean again.
//!
//! Nothing here measures time: every wait polls with a generous deadline.

use std::process::Command;

use jms_e2e::central::{eventually, BundleProxy, Central, ProxyMode};
use jms_e2e::run::{self, Outcome, COMMAND_TIMEOUT};
use jms_e2e::secrets::django_hash;
use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::{Bastion, BastionBuilder, PasswordMethod, Target};

const ALICE_PASSWORD: &str = "alice-central-pw-1";

struct Scene {
    target: Target,
    bastion: Bastion,
    central: Central,
}

/// A target, a bastion and a server the bastion follows through `proxy`
/// (plain HTTP, so the server runs `--insecure-http`) or directly (TLS,
/// pinned CA, client certificate).
fn scene(proxy: Option<&dyn Fn(&Central) -> String>) -> Scene {
    let target = Target::start();
    let bastion = BastionBuilder::new().start();
    let central = if proxy.is_some() {
        Central::start_insecure()
    } else {
        Central::start()
    };
    let via = match proxy {
        Some(make) => make(&central),
        None => central.url.clone(),
    };
    central.attach(&bastion, &via);
    Scene {
        target,
        bastion,
        central,
    }
}

impl Scene {
    /// A user with a password, through jmsctl.
    fn add_user(&self, name: &str, password: &str) {
        let out = self.central.jmsctl_with(
            &["user", "add", name, "--name", name, "--password"],
            format!("{password}\n").as_bytes(),
        );
        out.assert_success("jmsctl user add with a password from stdin");
    }

    /// A user with a password hashed cheaply (Django form, few rounds),
    /// through the API: for tests that log in many times on a loaded
    /// machine (pam_jms gives agentd a few seconds per answer).
    fn add_user_quick(&self, name: &str, password: &str) {
        let body = format!(
            "{{\"username\": \"{name}\", \"name\": \"{name}\", \"password_hash\": \"{}\"}}",
            django_hash(password, &format!("salt{name}"))
        );
        let (status, answer) = self.central.api("POST", "/api/v1/users", Some(&body));
        assert_eq!(status, 201, "creating {name}: {answer}");
    }

    /// web01 (the target) with the `deploy` account, through jmsctl.
    fn add_target_asset(&self) {
        let protocol = format!("ssh:{}", self.target.port());
        self.central.jmsctl(&[
            "asset",
            "add",
            "web01",
            "--address",
            self.target.address(),
            "--protocol",
            &protocol,
        ]);
        let out = self.central.jmsctl_with(
            &[
                "account",
                "add",
                "web01",
                "deploy",
                "--username",
                "deploy",
                "--type",
                "password",
            ],
            DEPLOY_PASSWORD.as_bytes(),
        );
        out.assert_success("jmsctl account add with the secret on stdin");
    }

    fn grant(&self, name: &str, user: &str, extra: &[&str]) {
        let mut args = vec![
            "grant",
            "add",
            name,
            "--user",
            user,
            "--asset",
            "web01",
            "--account",
            "deploy",
            "--protocol",
            "ssh",
            "--action",
            "connect",
        ];
        args.extend_from_slice(extra);
        self.central.jmsctl(&args);
    }

    /// `ssh USER@bastion "web01 COMMAND"` with a password.
    fn on_target(&self, user: &str, password: &str, command: &str) -> Outcome {
        self.bastion.ssh_password(
            user,
            password,
            PasswordMethod::Password,
            Some(&format!("web01 {command}")),
        )
    }

    /// Waits until `user` reaches the target as deploy.
    fn until_reachable(&self, what: &str, user: &str, password: &str) {
        eventually(what, || {
            let out = self.on_target(user, password, "id -un");
            if out.success() && out.stdout.trim() == "deploy" {
                Ok(())
            } else {
                Err(out.to_string())
            }
        });
    }

    /// Waits until `user` logs in to the bastion but her connection to the
    /// target is refused by jms (not a failed login).
    fn until_refused(&self, what: &str, user: &str, password: &str) -> Outcome {
        eventually(what, || {
            let out = self.on_target(user, password, "id -un");
            if out.code() == Some(1)
                && out.stderr.contains("jms-agent:")
                && !out.stdout.contains("deploy")
            {
                Ok(out)
            } else {
                Err(out.to_string())
            }
        })
    }
}

/// RFC 3339 UTC time `seconds` from now (by the system's `date`).
fn utc_in(seconds: u32) -> String {
    let out = run::run(
        Command::new("date")
            .arg("-u")
            .arg("-d")
            .arg(format!("+{seconds} seconds"))
            .arg("+%Y-%m-%dT%H:%M:%SZ"),
        b"",
        COMMAND_TIMEOUT,
    );
    out.assert_success("date should print a time");
    out.stdout.trim().to_owned()
}

#[test]
fn a_grant_made_with_jmsctl_reaches_the_bastion_and_so_do_its_revocation_and_expiry() {
    let s = scene(None);
    s.add_user("alice", ALICE_PASSWORD);
    s.add_target_asset();
    s.grant("alice-web01", "alice", &[]);
    s.until_reachable(
        "alice to reach web01 through the bastion once the grant is synced",
        "alice",
        ALICE_PASSWORD,
    );
    assert!(
        s.bastion.agentd_log().contains("policy delta accepted"),
        "changes arrive as deltas:\n{}",
        s.bastion.agentd_log()
    );

    // Revoked: the next connection is refused.
    let (status, body) = s.central.api("DELETE", "/api/v1/grants/alice-web01", None);
    assert_eq!(status, 204, "deleting the grant: {body}");
    let refused = s.until_refused(
        "the revoked grant to stop alice's next connection",
        "alice",
        ALICE_PASSWORD,
    );
    assert!(
        refused.stderr.contains("web01"),
        "the refusal names the asset:\n{refused}"
    );

    // A grant that expires in a while: it works, then it does not.
    let expires = utc_in(45);
    s.grant("alice-soon", "alice", &["--expires", &expires]);
    s.until_reachable(
        "the expiring grant to work before it expires",
        "alice",
        ALICE_PASSWORD,
    );
    let expired = s.until_refused("the expired grant to refuse alice", "alice", ALICE_PASSWORD);
    eprintln!("after the expiry ({expires}):\n{expired}");
}

/// A session that outlasts several upload rounds (one a second here): its
/// recording reaches the server whole. The uploader in the monitor never
/// takes a file a session worker still writes; it would have the server
/// confirm the part written so far, delete the file, and the rest of the
/// session would go to a deleted file.
#[test]
fn a_recording_reaches_the_server_whole_though_its_session_outlasts_upload_rounds() {
    let s = scene(None);
    let password = "alice-recorded-pw-1";
    s.add_user_quick("alice", password);
    s.add_target_asset();
    s.grant("g", "alice", &[]);
    s.until_reachable("alice to reach web01", "alice", password);
    let out = s.on_target(
        "alice",
        password,
        "echo first-part; sleep 4; echo second-part",
    );
    out.assert_success("a session of four seconds");
    let recording = eventually("the session's recording on the server", || {
        let (status, page) = s
            .central
            .api("GET", "/api/v1/sessions?user=alice&limit=1", None);
        let page: serde_json::Value =
            serde_json::from_str(&page).map_err(|e| format!("{status}: {e}: {page}"))?;
        let newest = &page["items"][0];
        if newest["has_recording"] != true || newest["status"] != "ended" {
            return Err(format!("not yet: {newest}"));
        }
        let id = newest["id"].as_str().unwrap_or_default();
        let (status, cast) =
            s.central
                .api("GET", &format!("/api/v1/sessions/{id}/recording"), None);
        (status == 200)
            .then_some(cast.clone())
            .ok_or(format!("{status}: {cast}"))
    });
    assert!(
        recording.contains("first-part") && recording.contains("second-part"),
        "the whole session is in the recording:\n{recording}"
    );
}

#[test]
fn the_servers_settings_rule_the_bastions_lockout_and_session_length() {
    let s = scene(None);
    s.central
        .jmsctl(&["settings", "set", "security.lockout_threshold", "2"]);
    s.central
        .jmsctl(&["settings", "set", "security.max_session_length", "4s"]);
    s.add_user_quick("bob", ALICE_PASSWORD);
    s.add_target_asset();
    s.grant("bob-web01", "bob", &[]);
    // The settings came before the user, so they are there once he is.
    s.until_reachable("bob to reach web01", "bob", ALICE_PASSWORD);

    let long = s.on_target("bob", ALICE_PASSWORD, "sleep 25; echo finished");
    long.assert_output_contains(
        "maximum session length",
        "a session past the server's maximum length is ended with a reason",
    );
    assert!(
        !long.stdout.contains("finished"),
        "the command was cut short:\n{long}"
    );

    // Two failures lock him (the bastion's own default would take five).
    for _ in 0..2 {
        s.bastion
            .ssh_password("bob", "wrong-password", PasswordMethod::Password, None)
            .assert_failure("a wrong password is refused");
    }
    s.on_target("bob", ALICE_PASSWORD, "id -un")
        .assert_failure("the right password is refused while the account is locked");
    assert!(
        s.bastion.agentd_log().contains("account locked"),
        "agentd locked bob after the server's threshold:\n{}",
        s.bastion.agentd_log()
    );

    // `jmsctl user unlock`: the bastion lifts the lock at its next control
    // poll (the lock itself would last the default 30 minutes).
    s.central
        .jmsctl(&["user", "unlock", "bob"])
        .assert_success("jmsctl user unlock")
        .assert_output_contains("sent to 1 bastion", "the one enrolled bastion is ordered");
    s.until_reachable("bob to log in again once unlocked", "bob", ALICE_PASSWORD);
    assert!(
        s.bastion.agentd_log().contains("user_unlock_order"),
        "{}",
        s.bastion.agentd_log()
    );

    // The fleet: the bastion's own report (jms-agentd's version, its spool)
    // on its control poll, and the policy version it holds.
    eventually("the bastion's report in jmsctl bastion list", || {
        let out = s.central.jmsctl(&["bastion", "list"]);
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with("e2e-bastion "))
            .unwrap_or_default()
            .to_string();
        let reported = row.contains(" online ")
            && row.contains("(current)")
            && row.ends_with(env!("CARGO_PKG_VERSION"));
        if reported {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
    eventually("bob's sessions uploaded", || {
        let out = s.central.jmsctl(&["session", "list", "--user", "bob"]);
        if out.stdout.lines().count() >= 3 {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
    let before = s
        .central
        .jmsctl(&["session", "list", "--user", "bob"])
        .stdout;

    // Revoked: every request with its key is refused from then on; what it
    // uploaded stays readable.
    s.central
        .jmsctl(&["bastion", "revoke", "e2e-bastion", "--yes"])
        .assert_success("jmsctl bastion revoke");
    eventually("agentd's requests refused after the revocation", || {
        let log = s.bastion.agentd_log();
        if log.contains("is revoked") {
            Ok(())
        } else {
            Err(log)
        }
    });
    assert!(
        s.central.log().contains("revoked_bastion"),
        "the server logs the refused requests:\n{}",
        s.central.log()
    );
    // (A batch sent just before the revocation may still have landed.)
    let after = s
        .central
        .jmsctl(&["session", "list", "--user", "bob"])
        .stdout;
    for line in before.lines().skip(1) {
        let id = line.split_whitespace().next().unwrap_or_default();
        assert!(
            after.contains(id),
            "the revoked bastion's audit stays: {id}\n{after}"
        );
    }
}

/// The signed bundle agentd keeps (`bundle.jms` in its state dir).
fn kept_bundle(bastion: &Bastion) -> Vec<u8> {
    std::fs::read(bastion.dir().join("state/bundle.jms")).expect("agentd keeps its bundle")
}

/// Makes a new policy version, so a held long-poll returns and agentd asks
/// again (and meets the proxy's substitute).
fn bump(central: &Central, n: usize) {
    central.jmsctl(&["group", "add", &format!("bump{n}")]);
}

#[test]
fn tampered_replayed_and_foreign_bundles_are_refused_and_a_frozen_sync_fails_closed() {
    use jms_sync::bundle::{self, Bundle};
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    let proxy_slot = std::cell::RefCell::new(None);
    let s = scene(Some(&|central: &Central| {
        let proxy = BundleProxy::start(central);
        let url = proxy.url.clone();
        *proxy_slot.borrow_mut() = Some(proxy);
        url
    }));
    let proxy = proxy_slot.into_inner().expect("the proxy started");
    s.add_user_quick("alice", ALICE_PASSWORD);
    s.add_target_asset();
    s.grant("alice-web01", "alice", &[]);
    s.until_reachable("alice to reach web01", "alice", ALICE_PASSWORD);
    let old = kept_bundle(&s.bastion);

    // Forged bundles, each newer than what the bastion holds.
    let server_key = old[5..5 + 32].to_vec();
    let mut current: Bundle =
        bundle::verify(&old, &server_key, 0).expect("the kept bundle verifies");
    current.version += 1000;
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
    let other = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut foreign = current.clone();
    foreign.server_id = bundle::server_id(other.public_key().as_ref());
    let mut tampered = old.clone();
    let at = tampered
        .windows(5)
        .rposition(|w| w == b"alice")
        .expect("alice is in the bundle");
    tampered[at] = b'm';
    let cases = [
        ("tampered", tampered, "bundle signature does not verify"),
        ("replayed", old.clone(), "is not newer than"),
        (
            "foreign",
            foreign.sign(&other),
            "bundle signed by another server key",
        ),
    ];
    for (n, (what, forged, refusal)) in cases.into_iter().enumerate() {
        let before = proxy.substituted();
        proxy.set(ProxyMode::Answer(forged));
        bump(&s.central, n + 1);
        eventually(&format!("agentd to be handed the {what} bundle"), || {
            if proxy.substituted() > before && s.bastion.agentd_log().contains(refusal) {
                Ok(())
            } else {
                Err(s.bastion.agentd_log())
            }
        });
        // The last good policy stays: alice still gets through.
        let out = s.on_target("alice", ALICE_PASSWORD, "id -un");
        out.assert_success(&format!("alice still logs in after a {what} bundle"));
        assert_eq!(out.stdout.trim(), "deploy", "{out}");
    }
    assert!(
        s.bastion.agentd_log().contains("bundle_refused"),
        "each refusal raises the alarm:\n{}",
        s.bastion.agentd_log()
    );

    // Back to the genuine server: changes flow again.
    proxy.set(ProxyMode::Forward);
    s.central.jmsctl(&["user", "disable", "alice"]);
    eventually("alice's disabling to reach the bastion", || {
        let out = s.on_target("alice", ALICE_PASSWORD, "id -un");
        if out.status.is_some() && !out.success() {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
    s.central.jmsctl(&["user", "enable", "alice"]);
    s.until_reachable("alice enabled again", "alice", ALICE_PASSWORD);

    // A man in the middle answering every request with a bare 304 (what
    // froze a bastion's policy for ever before answers were signed): no
    // answer at all, so past max_staleness_secs the bastion fails closed
    // and alice's login is refused.
    let config = s.bastion.dir().join("agentd.toml");
    let text = std::fs::read_to_string(&config).expect("agentd.toml");
    std::fs::write(
        &config,
        text.replace("max_staleness_secs = 3600", "max_staleness_secs = 3")
            .replace("long_poll_secs = 30", "long_poll_secs = 2"),
    )
    .expect("agentd.toml rewritten");
    s.bastion.restart_agentd();
    s.until_reachable("alice after the restart", "alice", ALICE_PASSWORD);
    proxy.set(ProxyMode::Bare304);
    let refused = eventually("alice refused behind bare 304s", || {
        let out = s.on_target("alice", ALICE_PASSWORD, "id -un");
        if out.status.is_some() && !out.success() && !out.stdout.contains("deploy") {
            Ok(out)
        } else {
            Err(out.to_string())
        }
    });
    let log = s.bastion.agentd_log();
    assert!(
        log.contains("sync_answer_refused") && log.contains("policy_stale"),
        "the bare 304s are refused and the bastion failed closed ({refused}):\n{log}"
    );
    proxy.set(ProxyMode::Forward);
    s.until_reachable("alice once the path is clean", "alice", ALICE_PASSWORD);
}
