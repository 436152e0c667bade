//! Who is a jms user, and what a login attempt tells about a name: local
//! accounts never depend on agentd (whatever it answers), jms names that
//! are local accounts are never published nor opened by a jms password, and
//! every name gets the same prompts until its password is proven.

use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use jms_e2e::bastion::AGENTD_SOCKET;
use jms_e2e::fixture::{
    self, tina_totp, ALICE_PASSWORD, LOCAL_PASSWORD, LOCAL_USER, TINA_PASSWORD,
};
use jms_e2e::secrets::django_hash;
use jms_e2e::{Bastion, Pam, PasswordMethod};

/// A stand-in for a sick jms-agentd on its socket: answers every request
/// with `{"response": "error", "message": "busy"}` (a valid frame).
const SICK_AGENTD: &str = r#"
import json, os, socket, struct, sys
path = sys.argv[1]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chmod(path, 0o666)
s.listen(64)
reply = bytes([1]) + json.dumps({"response": "error", "message": "busy"}).encode()
frame = struct.pack(">I", len(reply)) + reply
while True:
    c, _ = s.accept()
    try:
        c.settimeout(5)
        head = c.recv(4)
        if len(head) == 4:
            c.recv(struct.unpack(">I", head)[0])
        c.sendall(frame)
    except OSError:
        pass
    c.close()
"#;

/// Replaces agentd by [`SICK_AGENTD`]; the child dies with the namespace.
fn make_agentd_sick(bastion: &Bastion) -> Child {
    bastion.kill_agentd();
    bastion
        .ns_run(&["rm", "-f", AGENTD_SOCKET])
        .assert_success("removing agentd's socket");
    let child = bastion
        .ns_command("python3")
        .args(["-c", SICK_AGENTD, AGENTD_SOCKET])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the sick agentd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !bastion.ns_run(&["test", "-S", AGENTD_SOCKET]).success() {
        assert!(Instant::now() < deadline, "the sick agentd never listened");
        thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn local_accounts_log_in_whatever_agentd_answers() {
    let bastion = fixture::standard().0.start();
    let mut sick = make_agentd_sick(&bastion);
    bastion
        .pamtester(&Pam::login(LOCAL_USER, LOCAL_PASSWORD))
        .assert_success("a local account must not depend on what agentd answers");
    bastion
        .ssh_password(
            LOCAL_USER,
            LOCAL_PASSWORD,
            PasswordMethod::KeyboardInteractive,
            Some("echo local-shell-ok"),
        )
        .assert_success("a local account must log in over ssh while agentd answers errors")
        .assert_output_contains("local-shell-ok", "a local account keeps its own shell");
    bastion
        .pamtester(&Pam::login("alice", ALICE_PASSWORD))
        .assert_failure("a jms user must fail closed while agentd answers errors");
    let _ = sick.kill();
    let _ = sick.wait();
}

/// The standard policy plus jms users named like local accounts (the
/// harness's `e2elocal`, and `root`) and a jms group named `sudo`.
fn policy_with_impostors() -> String {
    let (builder, keys) = fixture::standard();
    drop(builder);
    let hash = django_hash(IMPOSTOR_PASSWORD, "saltimpostor");
    fixture::standard_policy(&keys).replace(
        "user_groups:\n",
        &format!(
            "  - username: {LOCAL_USER}\n    name: Impostor\n    groups: [ops]\n    password_hash: \"{hash}\"\n\
             \x20 - username: root\n    name: Root\n    groups: [ops]\n    password_hash: \"{hash}\"\n\
             user_groups:\n  - {{name: sudo}}\n"
        ),
    )
}

const IMPOSTOR_PASSWORD: &str = "impostor-pw-1";

#[test]
fn jms_names_of_local_accounts_are_never_published_nor_opened_by_jms_passwords() {
    let bastion = fixture::standard()
        .0
        .policy(&policy_with_impostors())
        .start();
    // Not in the jms NSS database (users and groups), with an alarm.
    for (db, name) in [
        ("passwd", LOCAL_USER),
        ("passwd", "root"),
        ("group", "sudo"),
    ] {
        let out = bastion.getent(&["-s", "jms", db, name]);
        assert!(
            !out.success(),
            "jms {db} `{name}` must not be published: {}",
            out.output()
        );
    }
    bastion
        .getent(&["-s", "jms", "passwd", "alice"])
        .assert_success("the other jms users are still published");
    bastion
        .getent(&["-s", "jms", "group", "ops"])
        .assert_success("the other jms groups are still published");
    let log = bastion.agentd_log();
    assert!(
        log.contains("local_account_collision") && log.contains(LOCAL_USER),
        "agentd must raise an alarm for the collision; log:\n{log}"
    );
    // The jms password opens nothing; the local account still works.
    bastion
        .pamtester(&Pam::login(LOCAL_USER, IMPOSTOR_PASSWORD))
        .assert_failure("a jms password must not authenticate a local account");
    bastion
        .ssh_password(
            LOCAL_USER,
            IMPOSTOR_PASSWORD,
            PasswordMethod::Password,
            Some("echo real-shell"),
        )
        .assert_failure("a jms password must not open the local account's shell");
    bastion
        .ssh_password(
            LOCAL_USER,
            LOCAL_PASSWORD,
            PasswordMethod::Password,
            Some("echo real-shell"),
        )
        .assert_success("the local account keeps its own password")
        .assert_output_contains("real-shell", "and its own shell");
    bastion
        .pamtester(&Pam::authenticate("root", IMPOSTOR_PASSWORD))
        .assert_failure("a jms password must not authenticate root");
}

/// The prompts sent for a wrong password, without the `(user@host) ` that
/// ssh puts in front.
fn prompts_for_a_wrong_password(bastion: &Bastion, user: &str) -> Vec<String> {
    let login = bastion.ssh_prompted(user, "not-the-password", "000000", Some("true"));
    login
        .outcome
        .assert_failure(&format!("a wrong password for {user} must be refused"));
    login
        .prompts
        .iter()
        .map(|p| match p.split_once(") ") {
            Some((_, rest)) if p.starts_with('(') => rest.to_string(),
            _ => p.clone(),
        })
        .collect()
}

#[test]
fn every_name_gets_the_same_prompts_until_its_password_is_proven() {
    let bastion = fixture::standard().0.start();
    // tina has TOTP, alice not; nobody-here is no account; e2elocal is local.
    for user in ["tina", "alice", "nobody-here", LOCAL_USER] {
        assert_eq!(
            prompts_for_a_wrong_password(&bastion, user),
            ["Password: "],
            "a wrong password for {user} must see exactly the one password prompt"
        );
    }
    // With the right password, tina is asked for her code.
    let code = tina_totp().code_now();
    let login = bastion.ssh_prompted("tina", TINA_PASSWORD, &code, Some("true"));
    assert_eq!(
        login.prompts.len(),
        2,
        "password then code after a right password, got {:?}",
        login.prompts
    );
    assert!(
        login.prompts[1].contains("Verification code:"),
        "{:?}",
        login.prompts
    );
}
