//! Load the bastion must take: bursts of simultaneous logins with the
//! package's sshd settings (packaging/lib/sshd-startups.conf, which the
//! harness writes into the bastion's sshd_config as the package does into
//! sshd_config.d).

use std::thread;

use jms_e2e::fixture::{self, ALICE_PASSWORD};
use jms_e2e::{Outcome, PasswordMethod};

/// How many logins start at once (issue 13, item 19: an Ansible run with
/// many forks through the bastion).
const SIMULTANEOUS: usize = 200;

#[test]
fn two_hundred_simultaneous_password_logins_all_succeed() {
    let (builder, _keys) = fixture::standard();
    let bastion = builder.start();
    let config = std::fs::read_to_string(bastion.dir().join("sshd_config")).expect("sshd_config");
    assert!(
        config.contains(&format!("MaxStartups {}", jms_e2e::packaged_max_startups())),
        "the harness should give sshd the package's MaxStartups:\n{config}"
    );
    let outcomes: Vec<Outcome> = thread::scope(|s| {
        let handles: Vec<_> = (0..SIMULTANEOUS)
            .map(|_| {
                let bastion = &bastion;
                s.spawn(move || {
                    bastion.ssh_password("alice", ALICE_PASSWORD, PasswordMethod::Password, None)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a client thread panicked"))
            .collect()
    });
    // Each login that got through sshd, PAM (pam_jms → jms-agentd) and
    // ForceCommand ends in jms-agent's one line naming alice, status 1.
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|out| {
            !(out.code() == Some(1)
                && out
                    .stderr
                    .lines()
                    .any(|l| l.starts_with("jms-agent:") && l.contains("alice")))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "all {SIMULTANEOUS} simultaneous logins should succeed; {} failed, e.g.:\n{}\n\
         sshd log tail:\n{}",
        failed.len(),
        failed
            .iter()
            .take(3)
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n"),
        tail(&bastion.sshd_log(), 30)
    );
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
