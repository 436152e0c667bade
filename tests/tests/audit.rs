//! `audit.on_failure` through real ssh: when the event spool or the
//! recording store cannot take more, a new session is refused with a line
//! saying why (`refuse`, the default) or goes on (`continue`); a session
//! whose recording reaches its cap is ended under `refuse` and goes on
//! under `continue`. One bastion and target; agentd is restarted with each
//! configuration.

use std::fs;

use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::{Bastion, BastionBuilder, ClientKey, Outcome, Target};

fn policy(target: &Target, alice: &ClientKey) -> String {
    format!(
        "users:\n\
         \x20 - {{username: alice, name: Alice, public_keys: [\"{alice}\"]}}\n\
         assets:\n\
         \x20 - name: web01\n    address: {address}\n    protocols: [{{name: ssh, port: {port}}}]\n\
         \x20   accounts: [{{name: deploy, username: deploy, secret_type: password, secret: \"{DEPLOY_PASSWORD}\"}}]\n\
         grants:\n\
         \x20 - {{name: alice-web01, users: [alice], assets: [web01], accounts: [deploy], protocols: [ssh], actions: [connect]}}\n",
        alice = alice.public,
        address = target.address(),
        port = target.port(),
    )
}

/// agentd runs again with the harness's agentd.toml plus `extra`.
fn restart_with(bastion: &Bastion, base: &str, extra: &str) {
    fs::write(
        bastion.dir().join("agentd.toml"),
        format!("{base}\n{extra}"),
    )
    .expect("write agentd.toml");
    bastion.kill_agentd();
    bastion.restart_agentd();
}

#[track_caller]
fn assert_refused(out: &Outcome, why: &str, what: &str) {
    assert!(
        !out.success()
            && out.stderr.contains("sessions are refused")
            && out.stderr.contains(why)
            && out.stderr.contains("audit.on_failure = refuse")
            && !out.stdout.contains("audited"),
        "{what}: the session should be refused with a line saying `{why}`:\n{out}"
    );
}

#[test]
fn a_full_audit_store_refuses_new_sessions_unless_on_failure_is_continue() {
    let target = Target::start();
    let builder = BastionBuilder::new();
    let alice = builder.client_key("alice");
    let bastion = builder.policy(&policy(&target, &alice)).start();
    let base = fs::read_to_string(bastion.dir().join("agentd.toml")).expect("agentd.toml");
    let run = |command: &str| bastion.ssh_key("alice", &alice, Some(command));

    // A spool that cannot take a session's events.
    restart_with(&bastion, &base, "[sessions]\nspool_max_bytes = 1\n");
    assert_refused(
        &run("web01 echo audited"),
        "the audit spool is full",
        "spool full, default on_failure",
    );
    assert!(
        bastion.agentd_log().contains("alarm=\"audit_store_full\""),
        "the refusal should raise an alarm in agentd's log:\n{}",
        bastion.agentd_log()
    );
    restart_with(
        &bastion,
        &base,
        "[sessions]\nspool_max_bytes = 1\n[audit]\non_failure = \"continue\"\n",
    );
    let out = run("web01 echo audited");
    assert!(
        out.success() && out.stdout == "audited\n",
        "with on_failure = continue the session goes on:\n{out}"
    );

    // Recordings on disk at their total cap (the session above left one).
    restart_with(
        &bastion,
        &base,
        "[sessions]\nrecordings_total_max_bytes = 1\n",
    );
    assert_refused(
        &run("web01 echo audited"),
        "recordings on disk reached their cap",
        "recordings over their total cap",
    );

    // One session's recording reaching its cap: ended under refuse…
    let long = "web01 seq 1 100000";
    restart_with(&bastion, &base, "[sessions]\nrecording_cap_bytes = 4096\n");
    let out = run(long);
    assert!(
        !out.success()
            && out.stderr.contains("recording reached the 4096-byte cap")
            && !out.stdout.contains("\n100000\n"),
        "under refuse the session should end when its recording stops, saying why:\n{}",
        summary(&out)
    );
    // …and goes on, unrecorded past the cap, under continue.
    restart_with(
        &bastion,
        &base,
        "[sessions]\nrecording_cap_bytes = 4096\n[audit]\non_failure = \"continue\"\n",
    );
    let out = run(long);
    assert!(
        out.success() && out.stdout.ends_with("\n99999\n100000\n"),
        "under continue the session goes on past the recording cap:\n{}",
        summary(&out)
    );
}

/// The outcome without the long stdout.
fn summary(out: &Outcome) -> String {
    format!(
        "status {:?}; stdout {} bytes, ends {:?}; stderr {:?}",
        out.code(),
        out.stdout.len(),
        &out.stdout[out.stdout.len().saturating_sub(40)..],
        out.stderr
    )
}
