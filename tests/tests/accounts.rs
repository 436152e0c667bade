//! Managed accounts end to end: a real jms-server orders an enrolled
//! bastion to push, verify and rotate accounts on a real target sshd
//! (private /etc, /home and sudoers.d: harness/target-ns.sh) through the
//! asset's privileged account; the engineer then logs in through the
//! bastion with what was pushed.
//!
//! - root as the privileged account: push creates the user (shell, group,
//!   generated password or key pair, sudoers snippet that works), a
//!   second push changes nothing, a malformed sudo rule is refused by
//!   `visudo -c` before anything is written; verify sees a password
//!   changed behind jms's back; rotation commits only a secret it logged
//!   in with: a target refusing the new password, or accepting it without
//!   it working, leaves the old secret working and in the vault.
//! - discover lists a user made by hand as unmanaged, with the host's
//!   facts; remove deletes a pushed account and its sudoers snippet.
//! - sudo users as the privileged account, with and without a sudo
//!   password.
//! - No secret in any job output, API answer or log.

use jms_e2e::central::{eventually, Central};
use jms_e2e::run::Outcome;
use jms_e2e::target::{ROOT_PASSWORD, SUDO_NOPASSWD_PASSWORD, SUDO_PASSWORD};
use jms_e2e::{Bastion, BastionBuilder, ClientKey, Target};
use serde_json::Value;

struct Scene {
    target: Target,
    bastion: Bastion,
    central: Central,
    alice: ClientKey,
}

/// A target, a bastion following a server, alice, and `asset` whose
/// privileged account is `privileged` (username, password).
fn scene(asset: &str, privileged: (&str, &str)) -> Scene {
    let target = Target::start();
    let builder = BastionBuilder::new();
    let alice = builder.client_key("alice");
    let bastion = builder.start();
    let central = Central::start();
    central.attach(&bastion, &central.url);
    central.jmsctl(&[
        "user",
        "add",
        "alice",
        "--name",
        "Alice",
        "--public-key",
        &alice.public,
    ]);
    let protocol = format!("ssh:{}", target.port());
    central.jmsctl(&[
        "asset",
        "add",
        asset,
        "--address",
        target.address(),
        "--protocol",
        &protocol,
    ]);
    central
        .jmsctl_with(
            &[
                "account",
                "add",
                asset,
                privileged.0,
                "--type",
                "password",
                "--privileged",
            ],
            privileged.1.as_bytes(),
        )
        .assert_success("jmsctl account add (privileged, secret on stdin)");
    Scene {
        target,
        bastion,
        central,
        alice,
    }
}

impl Scene {
    /// Grants alice `accounts` of `asset`.
    fn grant(&self, asset: &str, accounts: &[&str]) {
        let mut args = vec![
            "grant",
            "add",
            "alice-all",
            "--user",
            "alice",
            "--asset",
            asset,
            "--protocol",
            "ssh",
            "--action",
            "connect",
        ];
        for account in accounts {
            args.extend(["--account", account]);
        }
        self.central.jmsctl(&args);
    }

    /// `ssh alice@bastion ACCOUNT@ASSET COMMAND` until it prints `want`
    /// (the bastion gets the vault's secret with its next bundle).
    fn logs_in(&self, target: &str, command: &str, want: &str) {
        let line = format!("{target} {command}");
        eventually(
            &format!("alice to run `{line}` through the bastion"),
            || {
                let out = self.bastion.ssh_key("alice", &self.alice, Some(&line));
                if out.success() && out.stdout.trim() == want {
                    Ok(())
                } else {
                    Err(out.to_string())
                }
            },
        );
    }

    /// Runs `script` as root on the target.
    fn on_target(&self, script: &str) -> String {
        let out = self.target.inside(script);
        out.assert_success(&format!("`{script}` on the target"));
        out.stdout
    }
}

fn job(central: &Central, kind: &str, asset: &str, account: &str) -> (Outcome, Value) {
    let mut args = vec!["account", kind, asset];
    if !account.is_empty() {
        args.push(account);
    }
    args.push("--json");
    let out = central.jmsctl_with(&args, b"");
    let job: Value = serde_json::from_str(&out.stdout).unwrap_or(Value::Null);
    (out, job)
}

fn secret_of(central: &Central, asset: &str, account: &str) -> String {
    jms_e2e::central::vault_secret(&central.export_with_secrets(), asset, account)
}

/// The steps of a job, as `name ok` lines and details, for messages.
fn steps(job: &Value) -> String {
    serde_json::to_string_pretty(&job["steps"]).unwrap_or_default()
}

#[track_caller]
fn assert_job(out: &Outcome, job: &Value, ok: bool, what: &str) {
    assert_eq!(
        job["status"],
        if ok { "ok" } else { "failed" },
        "{what}: the job should be {}\n{out}\nsteps: {}",
        if ok { "ok" } else { "failed" },
        steps(job)
    );
    assert_eq!(
        out.success(),
        ok,
        "{what}: jmsctl exits 0 exactly when the job succeeded\n{out}"
    );
}

#[test]
fn root_pushes_verifies_and_rotates_accounts_and_keeps_the_old_secret_on_failure() {
    let s = scene("web01", ("root", ROOT_PASSWORD));
    let c = &s.central;
    // app: a password account jms creates (no secret: one is generated),
    // with a group and a sudo rule; svc: a key account (key pair generated).
    c.jmsctl(&[
        "account",
        "add",
        "web01",
        "app",
        "--type",
        "password",
        "--no-secret",
        "--shell",
        "/bin/bash",
        "--group",
        "jmsops",
        "--sudo",
        "/usr/bin/id",
    ]);
    c.jmsctl(&[
        "account",
        "add",
        "web01",
        "svc",
        "--type",
        "ssh_key",
        "--no-secret",
    ]);
    c.jmsctl(&[
        "account",
        "add",
        "web01",
        "bad",
        "--type",
        "password",
        "--no-secret",
        "--sudo",
        "ALL=(ALL",
    ]);
    s.grant("web01", &["app", "svc"]);
    let mut said = String::new();

    // Push creates the user with its shell, group, password and sudo rule.
    let (out, pushed) = job(c, "push", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &pushed, true, "push of app");
    assert_eq!(
        pushed["changed"],
        true,
        "the first push changes the target: {}",
        steps(&pushed)
    );
    let passwd = s.on_target("getent passwd app");
    assert!(
        passwd.trim_end().ends_with(":/bin/bash"),
        "app's shell: {passwd}"
    );
    assert!(passwd.contains(":/home/app:"), "app's home: {passwd}");
    assert!(
        s.on_target("id -nG app")
            .split_whitespace()
            .any(|g| g == "jmsops"),
        "app is in the group jmsops"
    );
    assert_eq!(
        s.on_target("cat /etc/sudoers.d/jms-app").trim(),
        "app ALL=(root) NOPASSWD: /usr/bin/id"
    );
    let app_secret = secret_of(c, "web01", "app");
    assert!(
        app_secret.len() >= 16,
        "push committed the generated password to the vault"
    );
    // The engineer logs in with the pushed secret, and the snippet works.
    s.logs_in("app@web01", "id -un", "app");
    s.logs_in("app@web01", "sudo -n /usr/bin/id -u", "0");

    // A second push changes nothing and says so.
    let (out, again) = job(c, "push", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &again, true, "second push of app");
    assert_eq!(
        again["changed"],
        false,
        "a second push changes nothing: {}",
        steps(&again)
    );
    assert_eq!(
        secret_of(c, "web01", "app"),
        app_secret,
        "a second push keeps the secret"
    );

    // A key account: a generated Ed25519 pair, the public half installed.
    let (out, key_push) = job(c, "push", "web01", "svc");
    said.push_str(&out.to_string());
    assert_job(&out, &key_push, true, "push of svc");
    let svc_key = secret_of(c, "web01", "svc");
    assert!(
        svc_key.contains("BEGIN OPENSSH PRIVATE KEY"),
        "svc's key is in the vault"
    );
    assert!(
        s.on_target("cat /home/svc/.ssh/authorized_keys")
            .starts_with("ssh-ed25519 "),
        "svc's public key is authorized"
    );
    s.logs_in("svc@web01", "id -un", "svc");

    // A malformed sudo rule is refused before anything is written.
    let (out, bad) = job(c, "push", "web01", "bad");
    said.push_str(&out.to_string());
    assert_job(&out, &bad, false, "push of a malformed sudo rule");
    assert!(
        out.to_string().contains("visudo refused"),
        "the failure names visudo:\n{out}"
    );
    assert_eq!(
        s.on_target("ls -A /etc/sudoers.d | grep -c jms-bad || true")
            .trim(),
        "0",
        "no snippet (nor a temp file) of bad"
    );
    assert_eq!(
        s.on_target("ls -A /etc/sudoers.d | grep -c '^.jms-' || true")
            .trim(),
        "0"
    );

    // Verify: ok, shown by account list; a password changed behind jms's
    // back is detected.
    let (out, verified) = job(c, "verify", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &verified, true, "verify of app");
    let list = c.jmsctl(&["account", "list", "web01", "--json"]);
    let rows: Value = serde_json::from_str(&list.stdout).expect("account list JSON");
    let app_row = rows
        .as_array()
        .or(rows["items"].as_array())
        .into_iter()
        .flatten()
        .find(|r| r["name"] == "app")
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        app_row["verified"], true,
        "account list shows the verification: {app_row}"
    );
    assert!(
        app_row["verified_at"].is_string(),
        "and its time: {app_row}"
    );
    s.on_target("printf 'app:changed-by-hand-1\\n' | chpasswd");
    let (out, stale) = job(c, "verify", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(
        &out,
        &stale,
        false,
        "verify after a change behind jms's back",
    );
    let list = c.jmsctl(&["account", "list", "web01"]);
    assert!(
        list.stdout
            .lines()
            .any(|l| l.contains("app") && l.contains("false")),
        "account list shows the failed verification:\n{list}"
    );
    // A push puts the vault's secret back.
    let (out, repush) = job(c, "push", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &repush, true, "push after a change behind jms's back");
    assert_eq!(repush["changed"], true, "{}", steps(&repush));

    // Rotation: a new password (length and classes from the settings),
    // verified, committed; the old one is gone.
    c.jmsctl(&["settings", "set", "accounts.password_length", "32"]);
    c.jmsctl(&["settings", "set", "accounts.password_symbols", "false"]);
    let (out, rotated) = job(c, "rotate", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &rotated, true, "rotation of app");
    let new_secret = secret_of(c, "web01", "app");
    assert_ne!(new_secret, app_secret, "the vault holds the new password");
    assert!(
        new_secret.len() == 32 && new_secret.chars().all(|c| c.is_ascii_alphanumeric()),
        "the rotated password follows accounts.password_length and password_symbols"
    );
    s.logs_in("app@web01", "id -un", "app");
    // A key rotation: the new key logs in, the old one is removed.
    let old_line = s.on_target("cat /home/svc/.ssh/authorized_keys");
    let (out, key_rotated) = job(c, "rotate", "web01", "svc");
    said.push_str(&out.to_string());
    assert_job(&out, &key_rotated, true, "rotation of svc's key");
    let new_line = s.on_target("cat /home/svc/.ssh/authorized_keys");
    assert_eq!(
        new_line.lines().count(),
        1,
        "only the new key is authorized: {new_line}"
    );
    assert_ne!(new_line, old_line, "the key changed");
    assert_ne!(secret_of(c, "web01", "svc"), svc_key);
    s.logs_in("svc@web01", "id -un", "svc");

    // The target refuses the new password: the old one stays, in the vault.
    s.on_target(
        "printf '#!/bin/sh\\necho refused >&2\\nexit 1\\n' >/srv/chpasswd-refuses && \
         chmod 755 /srv/chpasswd-refuses && \
         mount --bind /srv/chpasswd-refuses /usr/sbin/chpasswd",
    );
    let (out, refused) = job(c, "rotate", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &refused, false, "rotation the target refuses");
    assert!(
        out.to_string().contains("refused the new password"),
        "{out}"
    );
    assert_eq!(
        secret_of(c, "web01", "app"),
        new_secret,
        "the vault keeps the old secret"
    );
    s.logs_in("app@web01", "id -un", "app");
    // The target accepts the new password without it working: nothing is
    // committed, and the old password still logs in.
    s.on_target(
        "umount /usr/sbin/chpasswd && \
         printf '#!/bin/sh\\ncat >/dev/null\\nexit 0\\n' >/srv/chpasswd-lies && \
         chmod 755 /srv/chpasswd-lies && \
         mount --bind /srv/chpasswd-lies /usr/sbin/chpasswd",
    );
    let (out, unverified) = job(c, "rotate", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(
        &out,
        &unverified,
        false,
        "rotation whose new password does not log in",
    );
    let names: Vec<&str> = unverified["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["apply", "verify_new", "rollback", "verify_old"],
        "{}",
        steps(&unverified)
    );
    assert_eq!(
        secret_of(c, "web01", "app"),
        new_secret,
        "nothing was committed"
    );
    s.logs_in("app@web01", "id -un", "app");
    s.on_target("umount /usr/sbin/chpasswd");

    // Discover: the users with a login shell, the unmanaged ones (one made
    // by hand among them), the host's facts.
    s.on_target("useradd -m -s /bin/sh handmade");
    let (out, found) = job(c, "discover", "web01", "");
    said.push_str(&out.to_string());
    assert_job(&out, &found, true, "discovery");
    let step = |name: &str| -> String {
        found["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .and_then(|s| s["detail"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let listed = step("discover");
    for user in ["root", "app", "svc", "handmade", "deploy"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("user {user} "))),
            "discover lists {user}:\n{listed}"
        );
    }
    for fact in ["hostname", "os", "kernel", "cpus", "memory_kib"] {
        assert!(
            listed.contains(&format!("fact {fact} ")),
            "fact {fact}:\n{listed}"
        );
    }
    // The facts land in the asset's details (jmsctl asset show, the API).
    let shown = c.jmsctl(&["asset", "show", "web01", "--json"]);
    let asset: Value = serde_json::from_str(&shown.stdout).expect("asset show JSON");
    let details = &asset["details"];
    let hostname = s.on_target("cat /proc/sys/kernel/hostname");
    assert_eq!(details["hostname"], hostname.trim(), "{shown}");
    assert!(
        details["kernel"]
            .as_str()
            .is_some_and(|k| k.starts_with("Linux ")),
        "{shown}"
    );
    assert!(details["os"].is_string(), "{shown}");
    assert!(details["cpus"].as_u64().is_some_and(|n| n >= 1), "{shown}");
    assert!(
        details["memory_kib"].as_u64().is_some_and(|n| n > 0),
        "{shown}"
    );
    assert_eq!(details["job"], found["id"], "{shown}");
    let plain = c.jmsctl(&["asset", "show", "web01"]);
    assert!(plain.stdout.contains(hostname.trim()), "{plain}");
    let unmanaged: Vec<String> = step("unmanaged").lines().map(str::to_owned).collect();
    assert!(
        unmanaged.contains(&"handmade".to_string()),
        "{unmanaged:?}\n{}",
        steps(&found)
    );
    assert!(
        !unmanaged.iter().any(|u| u == "app" || u == "root"),
        "{unmanaged:?}"
    );

    // Remove: the user, its home and its sudoers snippet; then nothing.
    let (out, removed) = job(c, "remove", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &removed, true, "removal of app");
    assert_eq!(removed["changed"], true, "{}", steps(&removed));
    assert_eq!(
        s.target.inside("getent passwd app").code(),
        Some(2),
        "app is gone"
    );
    assert_eq!(
        s.on_target("ls -A /etc/sudoers.d /home | grep -c '^jms-app$\\|^app$' || true")
            .trim(),
        "0",
        "app's home and sudoers snippet are gone"
    );
    let (out, again) = job(c, "remove", "web01", "app");
    said.push_str(&out.to_string());
    assert_job(&out, &again, true, "second removal of app");
    assert_eq!(again["changed"], false, "{}", steps(&again));

    // Job history: every job, who ran it, its steps; and no secret anywhere.
    let history = c.jmsctl(&["job", "list", "--json"]);
    let jobs: Value = serde_json::from_str(&history.stdout).expect("job list JSON");
    assert_eq!(
        jobs["items"].as_array().map(Vec::len),
        Some(14),
        "{history}"
    );
    assert!(history.stdout.contains("\"actor\""), "{history}");
    said.push_str(&history.stdout);
    let shown = c.jmsctl(&["job", "show", pushed["id"].as_str().unwrap_or_default()]);
    assert!(
        shown.stdout.contains("changed: user app created"),
        "{shown}"
    );
    said.push_str(&shown.stdout);
    said.push_str(&c.jmsctl(&["account", "list", "--json"]).stdout);
    said.push_str(&c.log());
    said.push_str(&s.bastion.agentd_log());
    let svc_now = secret_of(c, "web01", "svc");
    let svc_body: String = svc_now.lines().nth(1).unwrap_or_default().to_string();
    for (name, secret) in [
        ("root's password", ROOT_PASSWORD),
        ("app's first password", app_secret.as_str()),
        ("app's rotated password", new_secret.as_str()),
        ("svc's key", svc_body.as_str()),
    ] {
        assert!(secret.len() >= 8, "{name} is known");
        assert!(
            !said.contains(secret),
            "{name} appears in a job output, API answer or log"
        );
    }
}

#[test]
fn sudo_users_push_with_and_without_a_sudo_password() {
    let s = scene("web01", ("opsnp", SUDO_NOPASSWD_PASSWORD));
    let c = &s.central;
    // The same target as a second asset, managed by a sudo user whose sudo
    // asks for its password.
    let protocol = format!("ssh:{}", s.target.port());
    c.jmsctl(&[
        "asset",
        "add",
        "web01b",
        "--address",
        s.target.address(),
        "--protocol",
        &protocol,
    ]);
    c.jmsctl_with(
        &[
            "account",
            "add",
            "web01b",
            "opspw",
            "--type",
            "password",
            "--privileged",
        ],
        SUDO_PASSWORD.as_bytes(),
    )
    .assert_success("jmsctl account add opspw");
    c.jmsctl(&[
        "account",
        "add",
        "web01",
        "np1",
        "--type",
        "password",
        "--no-secret",
    ]);
    c.jmsctl(&[
        "account",
        "add",
        "web01b",
        "pw1",
        "--type",
        "ssh_key",
        "--no-secret",
    ]);
    let mut said = String::new();
    for (asset, account) in [("web01", "np1"), ("web01b", "pw1")] {
        let (out, pushed) = job(c, "push", asset, account);
        said.push_str(&out.to_string());
        assert_job(&out, &pushed, true, &format!("push of {account}@{asset}"));
        assert!(
            s.on_target(&format!("getent passwd {account}"))
                .contains("/bin/bash"),
            "{account} exists on the target"
        );
        let (out, verified) = job(c, "verify", asset, account);
        said.push_str(&out.to_string());
        assert_job(
            &out,
            &verified,
            true,
            &format!("verify of {account}@{asset}"),
        );
    }
    // A plan: verify np1 every day from a start in the past, so it is due
    // now; the server's scheduler runs it once and moves it a day on.
    let added = c.jmsctl(&[
        "plan",
        "add",
        "daily-np1",
        "--kind",
        "verify",
        "--asset",
        "web01",
        "--account",
        "np1",
        "--every-days",
        "1",
        "--start",
        "2020-01-01",
    ]);
    assert!(
        added.stdout.contains("plan daily-np1: verify np1@web01"),
        "{added}"
    );
    let plan: Value = eventually("the plan to run", || {
        let out = c.jmsctl(&["plan", "show", "daily-np1", "--json"]);
        let plan: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        if plan["last_jobs"].as_array().is_some_and(|j| !j.is_empty()) {
            Ok(plan)
        } else {
            Err(out.to_string())
        }
    });
    assert_eq!(
        plan["last_jobs"].as_array().map(Vec::len),
        Some(1),
        "{plan}"
    );
    assert!(plan["last_error"].is_null(), "{plan}");
    let next = plan["next_run"].as_str().unwrap_or_default().to_string();
    assert!(
        next.as_str() > plan["last_run"].as_str().unwrap_or_default(),
        "{plan}"
    );
    let id = plan["last_jobs"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ran: Value = eventually("the plan's job to finish", || {
        let out = c.jmsctl(&["job", "show", &id, "--json"]);
        let job: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        if job["status"] == "running" {
            Err(out.to_string())
        } else {
            Ok(job)
        }
    });
    assert_eq!(ran["status"], "ok", "{ran}");
    assert_eq!(ran["actor"], "plan:daily-np1", "{ran}");
    assert_eq!(ran["kind"], "verify", "{ran}");
    let list = c.jmsctl(&["plan", "list"]);
    assert!(list.stdout.contains("daily-np1"), "{list}");
    let again = c.jmsctl(&["plan", "show", "daily-np1", "--json"]);
    assert!(
        again.stdout.contains(&next),
        "the plan is not run again before its next time: {again}"
    );
    c.jmsctl(&["plan", "remove", "daily-np1"]);
    assert!(!c.jmsctl(&["plan", "list"]).stdout.contains("daily-np1"));

    // Without the right sudo password nothing happens, and it says why.
    c.jmsctl_with(
        &["account", "set", "web01b", "opspw", "--secret"],
        b"not-the-password",
    )
    .assert_success("jmsctl account set opspw --secret");
    c.jmsctl(&[
        "account",
        "add",
        "web01b",
        "pw2",
        "--type",
        "password",
        "--no-secret",
    ]);
    let (out, refused) = job(c, "push", "web01b", "pw2");
    said.push_str(&out.to_string());
    assert_job(
        &out,
        &refused,
        false,
        "push with a wrong privileged password",
    );
    assert_eq!(
        s.target.inside("getent passwd pw2").code(),
        Some(2),
        "pw2 was not created"
    );
    said.push_str(&c.log());
    said.push_str(&s.bastion.agentd_log());
    for secret in [SUDO_PASSWORD, SUDO_NOPASSWD_PASSWORD] {
        assert!(
            !said.contains(secret),
            "a privileged password appears in an output or log"
        );
    }
}

/// Zones, the privileged account rotating itself, and a job that loses its
/// bastion mid-way: two bastions follow one server; a job of an asset in
/// zone B runs on the zone-B bastion, never on the zone-A one, and a job
/// of an asset whose zone has no online bastion is refused naming the
/// zone; root (the privileged
/// account) rotates itself (verified with the new password before the
/// commit; a target that does not take the new password leaves the old
/// one working and in the vault); then a rotation whose bastion is killed
/// after the target took the new password and before any report is
/// handed to the other bastion, which finds out which password is live
/// and commits it.
#[test]
fn zones_then_root_rotates_itself_and_a_rotation_whose_bastion_dies_is_finished_by_another() {
    let target = Target::start();
    let first = BastionBuilder::new().start();
    let second = BastionBuilder::new().start();
    let central = Central::start_with_env(&[("JMS_JOB_ATTEMPT_TIMEOUT", "15s")]);
    central.attach_as(&first, &central.url, "bastion-a");
    central.attach_as(&second, &central.url, "bastion-b");
    let c = &central;
    let protocol = format!("ssh:{}", target.port());
    c.jmsctl(&[
        "asset",
        "add",
        "web01",
        "--address",
        target.address(),
        "--protocol",
        &protocol,
    ]);
    c.jmsctl_with(
        &[
            "account",
            "add",
            "web01",
            "root",
            "--type",
            "password",
            "--privileged",
        ],
        ROOT_PASSWORD.as_bytes(),
    )
    .assert_success("jmsctl account add root");
    let on_target = |script: &str| {
        let out = target.inside(script);
        out.assert_success(&format!("`{script}` on the target"));
        out.stdout
    };
    eventually("both bastions online", || {
        let out = c.jmsctl(&["bastion", "list", "--json"]);
        if out.stdout.matches("\"online\"").count() == 2 {
            Ok(())
        } else {
            Err(out.to_string())
        }
    });
    let mut said = String::new();

    // Zones: the jobs of an asset in zone B run on B's bastion only, and
    // a zone with no online bastion is refused, naming the zone.
    c.jmsctl(&["bastion", "zone", "bastion-a", "A"]);
    c.jmsctl(&["bastion", "zone", "bastion-b", "B"]);
    c.jmsctl(&["asset", "set", "web01", "--zone", "B"]);
    let shown = c.jmsctl(&["asset", "show", "web01"]);
    assert!(
        shown
            .stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["zone", "B"])),
        "{shown}"
    );
    let listed = c.jmsctl(&["bastion", "list"]);
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with("bastion-b") && l.contains(" B ")),
        "{listed}"
    );
    for round in 0..3 {
        let (out, zoned) = job(c, "verify", "web01", "root");
        said.push_str(&out.to_string());
        assert_job(&out, &zoned, true, "verify of an asset in zone B");
        assert_eq!(
            zoned["bastion"], "bastion-b",
            "round {round}: the job of a zone-B asset ran on the zone-B bastion: {}",
            out
        );
    }
    c.jmsctl(&["asset", "set", "web01", "--zone", "C"]);
    let (out, refused) = job(c, "verify", "web01", "root");
    assert!(!out.success() && refused.is_null(), "{out}");
    assert!(
        out.stderr.contains("no bastion of zone `C`"),
        "the error names the zone: {out}"
    );
    c.jmsctl(&["asset", "set", "web01", "--no-zone"]);
    for name in ["bastion-a", "bastion-b"] {
        c.jmsctl(&["bastion", "zone", name, "--none"]);
    }

    // Root rotates itself: committed once the new password logged in.
    let (out, rotated) = job(c, "rotate", "web01", "root");
    said.push_str(&out.to_string());
    assert_job(&out, &rotated, true, "root rotating itself");
    let first_new = secret_of(c, "web01", "root");
    assert_ne!(
        first_new, ROOT_PASSWORD,
        "the vault holds root's new password"
    );
    let (out, verified) = job(c, "verify", "web01", "root");
    said.push_str(&out.to_string());
    assert_job(&out, &verified, true, "verify of root's new password");

    // The target accepts the new password without it working: the old one
    // stays, working and in the vault.
    on_target(
        "printf '#!/bin/sh\\ncat >/dev/null\\nexit 0\\n' >/srv/chpasswd-lies && \
         chmod 755 /srv/chpasswd-lies && mount --bind /srv/chpasswd-lies /usr/sbin/chpasswd",
    );
    let (out, unverified) = job(c, "rotate", "web01", "root");
    said.push_str(&out.to_string());
    assert_job(
        &out,
        &unverified,
        false,
        "root's rotation that does not take",
    );
    assert_eq!(
        secret_of(c, "web01", "root"),
        first_new,
        "nothing committed"
    );
    let (out, verified) = job(c, "verify", "web01", "root");
    said.push_str(&out.to_string());
    assert_job(&out, &verified, true, "root's old password still works");
    on_target("umount /usr/sbin/chpasswd");

    // The bastion dies between applying the new password and reporting:
    // chpasswd takes it, then hangs; the bastion running the job is killed.
    on_target(
        "cp /usr/sbin/chpasswd /srv/chpasswd-real && \
         printf '#!/bin/sh\\n/srv/chpasswd-real || exit 1\\ntouch /srv/applied\\nexec sleep 300\\n' \
           >/srv/chpasswd-hangs && chmod 755 /srv/chpasswd-hangs && \
         mount --bind /srv/chpasswd-hangs /usr/sbin/chpasswd",
    );
    let rotation = c
        .jmsctl_command(&["account", "rotate", "web01", "root", "--json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("jmsctl account rotate");
    eventually("the target to take root's new password", || {
        if target.srv().join("applied").exists() {
            Ok(())
        } else {
            Err("not yet".into())
        }
    });
    let running: Value =
        serde_json::from_str(&c.jmsctl(&["job", "list", "--json"]).stdout).expect("job list");
    let lost = running["items"][0]["bastion"]
        .as_str()
        .expect("the running job's bastion")
        .to_string();
    assert_eq!(running["items"][0]["status"], "running", "{running}");
    match lost.as_str() {
        "bastion-a" => first.kill_agentd(),
        _ => second.kill_agentd(),
    }
    on_target("umount /usr/sbin/chpasswd");
    let out = rotation.wait_with_output().expect("jmsctl account rotate");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    said.push_str(&text);
    said.push_str(&String::from_utf8_lossy(&out.stderr));
    let retried: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    assert_eq!(
        retried["status"],
        "ok",
        "the rotation is finished by the other bastion: {text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success());
    assert_eq!(retried["attempt"], 2, "{text}");
    assert_ne!(retried["bastion"], lost.as_str(), "{text}");
    assert_eq!(retried["tried"].as_array().map(Vec::len), Some(2), "{text}");
    let names: Vec<&str> = retried["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["login", "verify_new"],
        "the retry found the new password live: {text}"
    );
    // The surviving bastion's audit events say each step it ran.
    let id = retried["id"].as_str().unwrap_or_default().to_string();
    let shown: Value = eventually("the retry's audit events to reach the server", || {
        let out = c.jmsctl(&["job", "show", &id, "--json"]);
        let job: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
        let steps: Vec<(String, u64, bool)> = job["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                (
                    e["step"].as_str().unwrap_or_default().to_string(),
                    e["attempt"].as_u64().unwrap_or_default(),
                    e["ok"].as_bool().unwrap_or_default(),
                )
            })
            .collect();
        if steps.contains(&("verify_new".to_string(), 2, true)) {
            Ok(job)
        } else {
            Err(out.to_string())
        }
    });
    assert!(
        shown["events"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["bastion"] == retried["bastion"]),
        "{shown}"
    );
    said.push_str(&shown.to_string());
    let second_new = secret_of(c, "web01", "root");
    assert_ne!(second_new, first_new, "the live password was committed");
    let (out, verified) = job(c, "verify", "web01", "root");
    said.push_str(&out.to_string());
    assert_job(&out, &verified, true, "the committed password logs in");

    said.push_str(&c.jmsctl(&["job", "list", "--json"]).stdout);
    said.push_str(&c.log());
    said.push_str(&first.agentd_log());
    said.push_str(&second.agentd_log());
    for (name, secret) in [
        ("root's first password", ROOT_PASSWORD),
        ("root's second password", first_new.as_str()),
        ("root's third password", second_new.as_str()),
    ] {
        assert!(
            !said.contains(secret),
            "{name} appears in a job output, API answer or log"
        );
    }
}
