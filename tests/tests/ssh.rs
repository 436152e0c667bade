//! Real `ssh` logins to the bastion's sshd over loopback: jms users by
//! password, keyboard-interactive (+ TOTP) and key land in jms-agent; the
//! account rules hold for every method; local accounts keep working with
//! pam_unix and a normal shell.

use jms_e2e::fixture::{
    self, tina_totp, ALICE_PASSWORD, ERIN_PASSWORD, KIM_USER, LOCAL_PASSWORD, LOCAL_USER,
    TINA_PASSWORD,
};
use jms_e2e::{Bastion, Outcome, PasswordMethod};

/// A login without a terminal and without a target reaches jms-agent,
/// which answers with one line naming the user and exits 1 (ssh's own
/// failures exit 255).
#[track_caller]
fn assert_landed_in_agent(out: &Outcome, user: &str) {
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("jms-agent:"))
        .unwrap_or_else(|| panic!("{user}'s login should land in jms-agent, but:\n{out}"));
    assert_eq!(
        out.code(),
        Some(1),
        "{user}'s login should get through sshd and end in jms-agent's one line:\n{out}"
    );
    assert!(
        line.contains(user),
        "jms-agent should name {user} (it runs as {user}), but:\n{out}"
    );
}

#[track_caller]
fn assert_agentd_logged(bastion: &Bastion, needles: &[&str], expectation: &str) {
    let log = bastion.agentd_log();
    assert!(
        log.lines().any(|l| needles.iter().all(|n| l.contains(n))),
        "{expectation}: no agentd log line holds all of {needles:?}; log:\n{log}"
    );
}

#[test]
fn password_login_lands_in_jms_agent() {
    let bastion = fixture::standard().0.start();
    let out = bastion.ssh_password("alice", ALICE_PASSWORD, PasswordMethod::Password, None);
    assert_landed_in_agent(&out, "alice");
    assert_agentd_logged(
        &bastion,
        &["session_open", "alice"],
        "pam_jms should report the session to agentd",
    );
}

#[test]
fn keyboard_interactive_password_login_lands_in_jms_agent() {
    let bastion = fixture::standard().0.start();
    let out = bastion.ssh_password(
        "alice",
        ALICE_PASSWORD,
        PasswordMethod::KeyboardInteractive,
        None,
    );
    assert_landed_in_agent(&out, "alice");
}

#[test]
fn wrong_password_login_is_refused() {
    let bastion = fixture::standard().0.start();
    for method in [
        PasswordMethod::Password,
        PasswordMethod::KeyboardInteractive,
    ] {
        bastion
            .ssh_password("alice", "not-alices-password", method, Some("true"))
            .assert_failure(&format!("a wrong password ({method:?}) must be refused"));
    }
}

#[test]
fn remote_command_is_forced_into_jms_agent() {
    let bastion = fixture::standard().0.start();
    let out = bastion.ssh_password(
        "alice",
        ALICE_PASSWORD,
        PasswordMethod::Password,
        Some("id; echo escaped-to-a-shell"),
    );
    assert_eq!(
        out.code(),
        Some(1),
        "jms-agent hands the command to agentd, which refuses it:\n{out}"
    );
    assert!(
        out.stderr.starts_with("jms-agent:"),
        "the refusal comes from jms-agent:\n{out}"
    );
    assert!(
        !out.stdout.contains("escaped-to-a-shell") && !out.stdout.contains("uid="),
        "a jms user's command must never reach a shell on the bastion:\n{out}"
    );
}

#[test]
fn key_login_lands_in_jms_agent() {
    let (builder, keys) = fixture::standard();
    let bastion = builder.start();
    let out = bastion.ssh_key("alice", &keys.alice, None);
    assert_landed_in_agent(&out, "alice");
    let out = bastion.ssh_key(KIM_USER, &keys.kim, None);
    assert_landed_in_agent(&out, KIM_USER);
}

#[test]
fn key_not_in_policy_is_refused() {
    let (builder, keys) = fixture::standard();
    let bastion = builder.start();
    bastion
        .ssh_key("alice", &keys.stranger, Some("true"))
        .assert_failure("a key that is not alice's must be refused");
    bastion
        .ssh_key("alice", &keys.kim, Some("true"))
        .assert_failure("kim's key must not open alice's account");
}

#[test]
fn disabled_user_key_login_is_refused() {
    let (builder, keys) = fixture::standard();
    let bastion = builder.start();
    bastion
        .ssh_key("carol", &keys.carol, Some("true"))
        .assert_failure("a disabled user must not log in with her key");
}

#[test]
fn totp_login_over_keyboard_interactive_asks_password_then_code() {
    let bastion = fixture::standard().0.start();
    let code = tina_totp().code_now();
    let login = bastion.ssh_prompted("tina", TINA_PASSWORD, &code, None);
    assert_landed_in_agent(&login.outcome, "tina");
    assert_eq!(
        login.prompts.len(),
        2,
        "two prompts expected (password, code), got {:?}",
        login.prompts
    );
    assert!(
        login.prompts[0].contains("Password:") && login.prompts[1].contains("Verification code:"),
        "prompts should be Password: then Verification code:, got {:?}",
        login.prompts
    );
}

#[test]
fn totp_login_with_wrong_code_is_refused() {
    let bastion = fixture::standard().0.start();
    let wrong = tina_totp().wrong_code_now();
    let login = bastion.ssh_prompted("tina", TINA_PASSWORD, &wrong, Some("true"));
    login
        .outcome
        .assert_failure("a wrong verification code must refuse the ssh login");
}

#[test]
fn totp_user_cannot_log_in_with_the_password_method_alone() {
    // The `password` method carries one secret: the code cannot be given.
    let bastion = fixture::standard().0.start();
    bastion
        .ssh_password(
            "tina",
            TINA_PASSWORD,
            PasswordMethod::Password,
            Some("true"),
        )
        .assert_failure("a TOTP user must not get in with her password alone");
}

#[test]
fn source_address_rules_apply_to_ssh_logins() {
    let bastion = fixture::standard().0.start();
    let out = bastion.ssh_password_from(
        "127.0.0.1",
        "erin",
        ERIN_PASSWORD,
        PasswordMethod::Password,
        None,
    );
    assert_landed_in_agent(&out, "erin");
    bastion
        .ssh_password_from(
            "127.0.0.99",
            "erin",
            ERIN_PASSWORD,
            PasswordMethod::Password,
            Some("true"),
        )
        .assert_failure("erin from 127.0.0.99 (deny_from) must be refused");
    assert_agentd_logged(
        &bastion,
        &["erin", "127.0.0.99"],
        "agentd should log the refused source",
    );
}

#[test]
fn local_account_logs_in_with_pam_unix_to_a_normal_shell() {
    let bastion = fixture::standard().0.start();
    bastion
        .ssh_password(
            LOCAL_USER,
            LOCAL_PASSWORD,
            PasswordMethod::Password,
            Some("id -un; echo local-shell-ok"),
        )
        .assert_success("a local account should still log in with pam_unix")
        .assert_output_contains("local-shell-ok", "a local account keeps its own shell")
        .assert_output_contains(LOCAL_USER, "the session runs as the local account");
}

#[test]
fn local_account_logs_in_while_agentd_is_down() {
    let bastion = fixture::standard().0.start();
    bastion.kill_agentd();
    bastion
        .ssh_password(
            LOCAL_USER,
            LOCAL_PASSWORD,
            PasswordMethod::KeyboardInteractive,
            Some("echo local-shell-ok"),
        )
        .assert_success("a local account must not depend on agentd")
        .assert_output_contains("local-shell-ok", "a local account keeps its own shell");
    bastion
        .ssh_password(
            "alice",
            ALICE_PASSWORD,
            PasswordMethod::Password,
            Some("true"),
        )
        .assert_failure("with agentd down a jms user must be refused (fail closed)");
}

#[test]
fn forwarding_is_refused_for_jms_users() {
    let (builder, keys) = fixture::standard();
    let bastion = builder.start();
    let target = format!("127.0.0.1:{}", bastion.port());
    bastion
        .ssh_key_with("alice", &keys.alice, &["-W", &target], None)
        .assert_failure("a jms user must not open a stdio forward (-W) through the bastion")
        .assert_output_contains(
            "stdio forwarding failed",
            "the client's view of the refusal",
        );
    assert!(
        bastion.sshd_log().contains("refused local port forward"),
        "sshd should log that it refused the forward:\n{}",
        bastion.sshd_log()
    );
}

#[test]
fn authorized_keys_command_serves_its_user_but_not_jms_users() {
    let (builder, keys) = fixture::standard();
    let bastion = builder.start();
    let key_of = |line: &str| line.split_whitespace().nth(1).unwrap_or("").to_owned();
    bastion
        .ns_run_as(
            65534,
            65534,
            &[jms_e2e::AGENT_IN_NS, "authorized-keys", "alice"],
        )
        .assert_success("nobody (AuthorizedKeysCommandUser) may ask for keys")
        .assert_output_contains(&key_of(&keys.alice.public), "alice's key");
    let out = bastion.ns_run_as(
        65534,
        65534,
        &[jms_e2e::AGENT_IN_NS, "authorized-keys", "carol"],
    );
    out.assert_success("an inactive user's lookup should still answer");
    assert!(
        !out.stdout.contains(&key_of(&keys.carol.public)),
        "a disabled user's keys must not be served:\n{out}"
    );
    let alice = bastion.getent(&["passwd", "alice"]);
    let fields: Vec<&str> = alice.stdout.trim().split(':').collect();
    let (uid, gid) = (
        fields[2].parse().expect("uid"),
        fields[3].parse().expect("gid"),
    );
    let out = bastion.ns_run_as(uid, gid, &[jms_e2e::AGENT_IN_NS, "authorized-keys", "bob"]);
    assert!(
        !out.success() && out.stdout.trim().is_empty(),
        "a jms user's uid must not get keys from agentd:\n{out}"
    );
}

/// The fastest of two failed password logins (the least noisy figure).
fn failed_login_time(bastion: &Bastion, user: &str) -> std::time::Duration {
    (0..2)
        .map(|_| {
            let started = std::time::Instant::now();
            bastion
                .ssh_password(
                    user,
                    "wrong-password",
                    PasswordMethod::Password,
                    Some("true"),
                )
                .assert_failure(&format!("a wrong password for {user} must be refused"));
            started.elapsed()
        })
        .min()
        .expect("two attempts")
}

#[test]
fn a_failed_jms_login_is_delayed_like_a_failed_local_one() {
    // A fast failure would tell an attacker which names are jms users and
    // invite guessing: pam_jms asks for pam_unix's 2 s (±25 %) fail delay.
    // Only the lower bound is asserted; upper bounds depend on machine load.
    let bastion = fixture::standard().0.start();
    let jms = failed_login_time(&bastion, "alice");
    let local = failed_login_time(&bastion, LOCAL_USER);
    let floor = std::time::Duration::from_millis(1400);
    assert!(
        jms >= floor && local >= floor,
        "failed logins must wait out the fail delay: jms user {jms:?}, local account {local:?} (floor {floor:?})"
    );
}
