//! pam_jms in the intended sshd stack, driven by `pamtester sshd …` inside
//! the bastion's namespace: authentication, account rules, TOTP, lockout,
//! and what happens to jms and local users when jms-agentd is down.

use std::thread;
use std::time::{Duration, Instant};

use jms_e2e::fixture::{
    self, tina_totp, ALICE_PASSWORD, CAROL_PASSWORD, DAVE_PASSWORD, ERIN_PASSWORD, GRACE_PASSWORD,
    HENRY_PASSWORD, KIM_USER, LOCAL_PASSWORD, LOCAL_USER, TINA_PASSWORD,
};
use jms_e2e::{Bastion, Lockout, Pam};

fn bastion() -> Bastion {
    fixture::standard().0.start()
}

/// Panics unless one line of agentd's log holds every needle.
#[track_caller]
fn assert_agentd_logged(bastion: &Bastion, needles: &[&str], expectation: &str) {
    let log = bastion.agentd_log();
    assert!(
        log.lines().any(|l| needles.iter().all(|n| l.contains(n))),
        "{expectation}: no agentd log line holds all of {needles:?}; log:\n{log}"
    );
}

#[test]
fn good_password_authenticates_and_passes_account_check() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::login("alice", ALICE_PASSWORD))
        .assert_success("alice with her password should authenticate and pass acct_mgmt")
        .assert_output_contains("successfully authenticated", "pamtester's verdict");
}

#[test]
fn wrong_password_is_refused() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::authenticate("alice", "not-alices-password"))
        .assert_failure("a wrong password must not authenticate alice")
        .assert_output_contains("Authentication failure", "PAM_AUTH_ERR");
    assert_agentd_logged(
        &bastion,
        &["authenticate", "alice", "failure"],
        "agentd should log the failed attempt",
    );
}

#[test]
fn local_account_falls_through_to_pam_unix() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::login(LOCAL_USER, LOCAL_PASSWORD))
        .assert_success("a local account (not a jms user) should authenticate through pam_unix");
    bastion
        .pamtester(&Pam::authenticate(LOCAL_USER, "not-the-password"))
        .assert_failure("pam_unix should refuse a wrong local password");
}

#[test]
fn unknown_user_is_refused() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::authenticate("nosuchuser", "whatever"))
        .assert_failure("a user neither jms nor local must not authenticate");
}

#[test]
fn key_only_user_has_no_password_but_passes_account_check() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::authenticate(KIM_USER, ""))
        .assert_failure("a jms user without a password hash must not authenticate by password");
    bastion
        .pamtester(&Pam::acct_mgmt(KIM_USER))
        .assert_success("kim's account check (what a key login runs) should pass");
}

#[test]
fn disabled_user_is_refused() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::login("carol", CAROL_PASSWORD))
        .assert_failure("a disabled user must not log in, even with her password");
    bastion
        .pamtester(&Pam::acct_mgmt("carol"))
        .assert_failure("acct_mgmt (run for key logins too) must refuse a disabled user");
    assert_agentd_logged(&bastion, &["carol", "disabled"], "agentd should say why");
}

#[test]
fn expired_user_is_refused() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::login("dave", DAVE_PASSWORD))
        .assert_failure("an expired user must not log in, even with his password");
    bastion
        .pamtester(&Pam::acct_mgmt("dave"))
        .assert_failure("acct_mgmt must refuse an expired user");
    assert_agentd_logged(&bastion, &["dave", "expired"], "agentd should say why");
}

#[test]
fn login_outside_time_window_is_refused_and_inside_is_allowed() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::login("grace", GRACE_PASSWORD))
        .assert_failure("grace's only window is on another day: she must be refused now");
    assert_agentd_logged(&bastion, &["grace", "time"], "agentd should say why");
    bastion
        .pamtester(&Pam::login("henry", HENRY_PASSWORD))
        .assert_success("henry's window covers every day, all day: he must be allowed");
}

#[test]
fn login_from_disallowed_address_is_refused() {
    let bastion = bastion();
    bastion
        .pamtester(&Pam::login("erin", ERIN_PASSWORD))
        .assert_success("erin from 127.0.0.1 (in allow_from) should log in");
    bastion
        .pamtester(&Pam::login("erin", ERIN_PASSWORD).rhost("10.9.9.9"))
        .assert_failure("erin from 10.9.9.9 (outside allow_from) must be refused");
    assert_agentd_logged(&bastion, &["erin", "10.9.9.9"], "agentd should say why");
    bastion
        .pamtester(&Pam::login("erin", ERIN_PASSWORD).rhost("127.0.0.99"))
        .assert_failure("erin from 127.0.0.99 (in deny_from) must be refused");
    let mut no_rhost = Pam::login("erin", ERIN_PASSWORD);
    no_rhost.rhost = None;
    bastion
        .pamtester(&no_rhost)
        .assert_failure("with no PAM_RHOST an address rule must fail closed");
}

#[test]
fn totp_user_with_good_code_authenticates() {
    let bastion = bastion();
    let code = tina_totp().code_now();
    bastion
        .pamtester(&Pam::login("tina", TINA_PASSWORD).code(&code))
        .assert_success("tina with password and the current code should log in");
}

#[test]
fn totp_user_with_wrong_or_missing_code_is_refused() {
    let bastion = bastion();
    let wrong = tina_totp().wrong_code_now();
    bastion
        .pamtester(&Pam::authenticate("tina", TINA_PASSWORD).code(&wrong))
        .assert_failure("a wrong verification code must be refused");
    bastion
        .pamtester(&Pam::authenticate("tina", TINA_PASSWORD).code(""))
        .assert_failure("an empty verification code must be refused");
    let code = tina_totp().code_now();
    bastion
        .pamtester(&Pam::authenticate("tina", "not-tinas-password").code(&code))
        .assert_failure("a good code does not make up for a wrong password");
}

#[test]
fn totp_code_cannot_be_replayed() {
    let bastion = bastion();
    let code = tina_totp().code_now();
    bastion
        .pamtester(&Pam::authenticate("tina", TINA_PASSWORD).code(&code))
        .assert_success("the first use of the code should succeed");
    bastion
        .pamtester(&Pam::authenticate("tina", TINA_PASSWORD).code(&code))
        .assert_failure("the same code used a second time must be refused");
}

#[test]
fn agentd_down_jms_user_gets_authinfo_unavailable() {
    let bastion = bastion();
    bastion.kill_agentd();
    bastion
        .pamtester(&Pam::authenticate("alice", ALICE_PASSWORD))
        .assert_failure("with agentd down a jms user must not authenticate")
        .assert_output_contains(
            // pam_strerror(PAM_AUTHINFO_UNAVAIL) in Linux-PAM.
            "Authentication service cannot retrieve authentication info",
            "pam_jms should answer PAM_AUTHINFO_UNAVAIL",
        );
}

#[test]
fn agentd_down_local_account_still_authenticates() {
    let bastion = bastion();
    bastion.kill_agentd();
    bastion
        .pamtester(&Pam::login(LOCAL_USER, LOCAL_PASSWORD))
        .assert_success("a local account must never depend on agentd");
}

fn lockout(lock_secs: u64) -> Lockout {
    Lockout {
        max_failures: 3,
        window_secs: 900,
        lock_secs,
    }
}

fn fail_three_times(bastion: &Bastion, user: &str) {
    for attempt in 1..=3 {
        bastion
            .pamtester(&Pam::authenticate(user, "wrong-password"))
            .assert_failure(&format!("wrong password #{attempt} must fail"));
    }
}

#[test]
fn lockout_locks_after_max_failures_and_unlocks_after_lock_time() {
    let lock_secs = 8;
    let bastion = fixture::standard().0.lockout(lockout(lock_secs)).start();
    fail_three_times(&bastion, "alice");
    let locked_at = Instant::now();
    bastion
        .pamtester(&Pam::login("alice", ALICE_PASSWORD))
        .assert_failure("after 3 failures alice is locked: even her password must fail");
    assert_agentd_logged(&bastion, &["alice", "lock"], "agentd should log the lock");
    bastion
        .pamtester(&Pam::login("bob", fixture::BOB_PASSWORD))
        .assert_success("a lock is per user: bob is not affected");

    let unlock = locked_at + Duration::from_secs(lock_secs + 1);
    thread::sleep(unlock.saturating_duration_since(Instant::now()));
    bastion
        .pamtester(&Pam::login("alice", ALICE_PASSWORD))
        .assert_success("after lock_secs alice should log in again");
}

#[test]
fn lockout_survives_agentd_restart() {
    let bastion = fixture::standard().0.lockout(lockout(600)).start();
    fail_three_times(&bastion, "alice");
    bastion.kill_agentd();
    bastion.restart_agentd();
    bastion
        .pamtester(&Pam::login("alice", ALICE_PASSWORD))
        .assert_failure("the lock must survive an agentd restart");
}

#[test]
fn lockout_never_locks_local_accounts() {
    let bastion = fixture::standard().0.lockout(lockout(600)).start();
    fail_three_times(&bastion, LOCAL_USER);
    bastion
        .pamtester(&Pam::login(LOCAL_USER, LOCAL_PASSWORD))
        .assert_success("jms lockout must never lock a local account");
}

#[test]
fn policy_reload_applies_to_the_next_login() {
    let (builder, keys) = fixture::standard();
    let policy = fixture::standard_policy(&keys);
    let bastion = builder.start();
    bastion
        .pamtester(&Pam::login("alice", ALICE_PASSWORD))
        .assert_success("alice logs in before the reload");
    let disabled = policy.replace(
        "  - username: alice\n",
        "  - username: alice\n    is_active: false\n",
    );
    assert_ne!(disabled, policy, "the fixture should contain alice");
    bastion.reload_policy(&disabled, Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(10);
    while bastion.pamtester(&Pam::acct_mgmt("alice")).success() {
        assert!(
            Instant::now() < deadline,
            "after SIGHUP with alice disabled her account check must fail; agentd log:\n{}",
            bastion.agentd_log()
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert_agentd_logged(
        &bastion,
        &["policy reloaded"],
        "agentd should log the reload",
    );
}
