//! The harness itself, without any jms piece: sshd in a private mount
//! namespace with a private local account, and a teardown that leaves the
//! host as it was.

use std::fs;
use std::path::Path;

use jms_e2e::{BastionBuilder, PasswordMethod};

fn host_mountinfo() -> String {
    fs::read_to_string("/proc/self/mountinfo").expect("host mountinfo")
}

#[test]
fn private_local_account_logs_in_to_namespaced_sshd() {
    let bastion = BastionBuilder::without_jms()
        .local_user("e2elocal", "local-pw-1")
        .start();

    bastion
        .ssh_password(
            "e2elocal",
            "local-pw-1",
            PasswordMethod::Password,
            Some("id -un"),
        )
        .assert_success("the namespace's local account should log in with pam_unix")
        .assert_output_contains("e2elocal", "the session should run as the local account");

    bastion
        .ssh_password(
            "e2elocal",
            "not-the-password",
            PasswordMethod::Password,
            Some("id -un"),
        )
        .assert_failure("a wrong password should be refused by pam_unix");

    assert!(
        !jms_e2e::preflight::user_exists("e2elocal"),
        "the local account must exist only inside the namespace, not on the host"
    );
    bastion
        .getent(&["passwd", "e2elocal"])
        .assert_success("inside the namespace the private /etc/passwd should hold the account");
}

#[test]
fn teardown_kills_sshd_and_leaves_nothing_mounted_on_host() {
    let bastion = BastionBuilder::without_jms().start();
    let dir = bastion.dir().to_path_buf();
    let pid = bastion.sshd_pid();
    assert!(
        !host_mountinfo().contains(dir.to_str().expect("utf-8 dir")),
        "the host's mount table must not show the bastion's mounts while it runs"
    );
    bastion
        .ns_run(&["test", "-d", "/run/sshd"])
        .assert_success("the namespace should have its private /run with /run/sshd");
    drop(bastion);

    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "sshd (pid {pid}) should be gone after the bastion is dropped"
    );
    assert!(
        !host_mountinfo().contains("jms-e2e"),
        "no jms-e2e mount may remain on the host"
    );
    assert!(
        !dir.exists(),
        "the temp dir {} should be removed",
        dir.display()
    );
}
