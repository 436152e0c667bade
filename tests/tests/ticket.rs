//! One-time web tickets (`jms_sync::ticket`), as the server's SSH client to
//! a bastion types them: signed here with the real server's key (its data
//! dir's `sync.key`) for a bastion enrolled with that server.
//!
//! At the PAM level (`pamtester sshd` inside the bastion's namespace): a
//! valid ticket logs in without the TOTP prompt the user's password would
//! need, and is refused when replayed, expired, for another user, for
//! another bastion or signed by another key. End to end (real `ssh` with
//! sshpass, both password methods): the login reaches the ticket's target
//! only (another asset the user is granted is refused through that
//! connection), the session's source in the audit is the browser's address
//! with the real peer noted, and a replay is refused.

use std::net::IpAddr;

use jms_e2e::central::{eventually, Central};
use jms_e2e::secrets::{django_hash, TotpSecret};
use jms_e2e::target::DEPLOY_PASSWORD;
use jms_e2e::{Bastion, BastionBuilder, Pam, PasswordMethod, Target};
use jms_sync::ticket::Ticket;
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use serde_json::Value;

const ALICE_PASSWORD: &str = "alice-ticket-pw-1";
const BOB_PASSWORD: &str = "bob-ticket-pw-1";
const BROWSER: &str = "198.51.100.7";

struct Scene {
    _target: Target,
    bastion: Bastion,
    central: Central,
    key: Ed25519KeyPair,
    bastion_id: i64,
}

impl Scene {
    fn start() -> Scene {
        let target = Target::start();
        let bastion = BastionBuilder::new().start();
        let central = Central::start();
        central.attach(&bastion, &central.url);
        let pkcs8 =
            std::fs::read(central.data_dir().join("sync.key")).expect("the server's sync.key");
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).expect("an Ed25519 server key");
        let enrollment = bastion.ns_run(&["cat", "/var/lib/jms/central.json"]);
        enrollment.assert_success("the bastion's enrollment");
        let enrollment: Value = serde_json::from_str(&enrollment.stdout).expect("central.json");
        let bastion_id = enrollment["bastion_id"].as_i64().expect("a bastion id");
        let totp = TotpSecret::from_seed("jms-e2e ticket alice");
        for (name, password, totp) in [
            ("alice", ALICE_PASSWORD, Some(totp.base32())),
            ("bob", BOB_PASSWORD, None),
        ] {
            let mut body = serde_json::json!({
                "username": name,
                "name": name,
                "password_hash": django_hash(password, &format!("salt{name}")),
            });
            if let Some(totp) = totp {
                body["totp_secret"] = totp.into();
            }
            let (status, answer) = central.api("POST", "/api/v1/users", Some(&body.to_string()));
            assert_eq!(status, 201, "creating {name}: {answer}");
        }
        let protocol = format!("ssh:{}", target.port());
        for asset in ["web01", "db01"] {
            central
                .jmsctl(&[
                    "asset",
                    "add",
                    asset,
                    "--address",
                    target.address(),
                    "--protocol",
                    &protocol,
                ])
                .assert_success("jmsctl asset add");
            central
                .jmsctl_with(
                    &[
                        "account",
                        "add",
                        asset,
                        "deploy",
                        "--username",
                        "deploy",
                        "--type",
                        "password",
                    ],
                    DEPLOY_PASSWORD.as_bytes(),
                )
                .assert_success("jmsctl account add");
            for user in ["alice", "bob"] {
                central
                    .jmsctl(&[
                        "grant",
                        "add",
                        &format!("{user}-{asset}"),
                        "--user",
                        user,
                        "--asset",
                        asset,
                        "--account",
                        "deploy",
                        "--protocol",
                        "ssh",
                        "--protocol",
                        "sftp",
                        "--action",
                        "connect",
                    ])
                    .assert_success("jmsctl grant add");
            }
        }
        let scene = Scene {
            _target: target,
            bastion,
            central,
            key,
            bastion_id,
        };
        // The bastion has the policy once bob's password logs in.
        eventually("bob reaches web01 with his password", || {
            let out = scene.bastion.ssh_password(
                "bob",
                BOB_PASSWORD,
                PasswordMethod::Password,
                Some("web01 id -un"),
            );
            if out.success() && out.stdout.contains("deploy") {
                Ok(())
            } else {
                Err(format!("{out:?}"))
            }
        });
        scene
    }

    fn ticket(&self, user: &str, asset: &str) -> Ticket {
        let browser: IpAddr = BROWSER.parse().unwrap();
        Ticket::new(
            user,
            self.bastion_id,
            asset,
            "deploy",
            browser,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        )
    }

    #[track_caller]
    fn assert_agentd_logged(&self, needles: &[&str], expectation: &str) {
        let log = self.bastion.agentd_log();
        assert!(
            log.lines().any(|l| needles.iter().all(|n| l.contains(n))),
            "{expectation}: no agentd log line holds all of {needles:?}; log:\n{log}"
        );
    }
}

#[test]
fn web_tickets_log_in_once_bound_to_their_target_and_are_refused_otherwise() {
    let scene = Scene::start();

    // ---- end to end: real ssh, the ticket as the password ----
    for method in [
        PasswordMethod::Password,
        PasswordMethod::KeyboardInteractive,
    ] {
        let text = scene.ticket("bob", "web01").sign(&scene.key);
        let out = scene
            .bastion
            .ssh_password("bob", &text, method, Some("web01 id -un"));
        out.assert_success("a valid ticket logs bob in to its target")
            .assert_output_contains("deploy", "the command ran on web01 as deploy");
        let again = scene
            .bastion
            .ssh_password("bob", &text, method, Some("web01 id -un"));
        again.assert_failure("a ticket is used once");
        // Another target bob is granted, through a ticket for web01: refused.
        let text = scene.ticket("bob", "web01").sign(&scene.key);
        let out = scene
            .bastion
            .ssh_password("bob", &text, method, Some("db01 id -un"));
        out.assert_failure("a web01 ticket does not reach db01")
            .assert_output_contains(
                "this web session may reach deploy@web01 only",
                "the engineer reads why",
            );
    }
    scene.assert_agentd_logged(
        &["bob", "web ticket refused: ticket already used"],
        "agentd says why the replay was refused",
    );
    // The audit: the browser's address, with the real peer.
    let sessions = eventually("the ticket sessions reach the server's audit", || {
        let (status, body) = scene
            .central
            .api("GET", "/api/v1/sessions?user=bob&limit=50", None);
        let found = body.matches("198.51.100.7 (web via 127.0.0.1)").count();
        if status == 200 && found >= 2 {
            Ok(body)
        } else {
            Err(format!("{status}: {body}"))
        }
    });
    assert!(
        sessions.contains("db01") || sessions.contains("this web session may reach"),
        "the refused db01 attempt is in the audit too: {sessions}"
    );

    // ---- PAM level: pamtester in the bastion's namespace ----
    // alice has TOTP: a valid ticket needs no code (only one answer given).
    let text = scene.ticket("alice", "web01").sign(&scene.key);
    scene
        .bastion
        .pamtester(&Pam::login("alice", &text))
        .assert_success("a valid ticket authenticates alice without a code")
        .assert_output_contains("successfully authenticated", "pamtester's verdict");
    let refusals: Vec<(String, &str)> = {
        let replayed = text.clone();
        let mut expired = scene.ticket("alice", "web01");
        expired.issued_at -= 120;
        expired.expires_at -= 120;
        let other_user = scene.ticket("bob", "web01").sign(&scene.key);
        let mut other_bastion = scene.ticket("alice", "web01");
        other_bastion.bastion_id += 1;
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let stranger = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let forged = scene.ticket("alice", "web01").sign(&stranger);
        vec![
            (replayed, "ticket already used"),
            (expired.sign(&scene.key), "ticket expired"),
            (other_user, "ticket for another user"),
            (other_bastion.sign(&scene.key), "ticket for another bastion"),
            (forged, "bad ticket signature"),
        ]
    };
    for (text, why) in &refusals {
        scene
            .bastion
            .pamtester(&Pam::authenticate("alice", text))
            .assert_failure(why)
            .assert_output_contains("Authentication failure", "PAM_AUTH_ERR");
        scene.assert_agentd_logged(
            &["alice", &format!("web ticket refused: {why}")],
            "agentd logs why the ticket was refused",
        );
    }
}

/// Reads `channel` until `needle` shows up in what came (or it closes).
async fn read_until(channel: &mut russh::Channel<russh::client::Msg>, needle: &str) -> String {
    let mut seen = Vec::new();
    let deadline = std::time::Duration::from_secs(60);
    let read = async {
        while let Some(message) = channel.wait().await {
            if let russh::ChannelMsg::Data { data } = message {
                seen.extend_from_slice(&data);
                if String::from_utf8_lossy(&seen).contains(needle) {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(deadline, read).await;
    String::from_utf8_lossy(&seen).into_owned()
}

#[test]
fn the_servers_ssh_client_reaches_the_target_through_the_bastion_and_pins_its_host_key() {
    use jms_server::bastion_ssh::{connect, web_bastion, BastionSshError, WebLogin};
    use jms_server::store::Storage;

    let scene = Scene::start();
    let services = jms_server::services::Services::open(&scene.central.data_dir())
        .expect("the server's data dir");
    let login = WebLogin {
        user: "bob".into(),
        bastion_id: scene.bastion_id,
        asset: "web01".into(),
        account: "deploy".into(),
        client: BROWSER.parse().unwrap(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        assert_eq!(
            web_bastion(services.sync.clone()).await.unwrap(),
            scene.bastion_id,
            "the only enrolled bastion is the portal's"
        );
        // A terminal on the target, through the ForceCommand path.
        let connection = connect(services.sync.clone(), &login)
            .await
            .expect("the server logs in to the bastion with a ticket");
        let mut shell = connection
            .open_shell("xterm-256color", 100, 30)
            .await
            .expect("a terminal on web01");
        shell
            .data(&b"echo web-$((6*7)); stty size\n"[..])
            .await
            .unwrap();
        let out = read_until(&mut shell, "30 100").await;
        assert!(
            out.contains("web-42") && out.contains("30 100"),
            "the target ran the command in a 100x30 terminal: {out:?}"
        );
        shell.window_change(120, 40, 0, 0).await.unwrap();
        shell.data(&b"stty size; exit\n"[..]).await.unwrap();
        let out = read_until(&mut shell, "40 120").await;
        assert!(
            out.contains("40 120"),
            "the resize reached the target: {out:?}"
        );
        // The sftp subsystem answers SSH_FXP_INIT with SSH_FXP_VERSION.
        let mut sftp = connection.open_sftp().await.expect("the sftp subsystem");
        sftp.data(&[0u8, 0, 0, 5, 1, 0, 0, 0, 3][..]).await.unwrap();
        let mut reply = Vec::new();
        while reply.len() < 5 {
            match sftp.wait().await {
                Some(russh::ChannelMsg::Data { data }) => reply.extend_from_slice(&data),
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(reply.get(4), Some(&2), "SSH_FXP_VERSION: {reply:?}");
        assert_eq!(connection.sftp_root(), "/deploy@web01");
        connection.close().await;
    });
    scene.assert_agentd_logged(
        &["web_ticket_bound", "bob", "web01", "deploy"],
        "the server's login is bound to its target",
    );

    // Another host key pinned: the client refuses the bastion's real one.
    let store = jms_server::store::sqlite::SqliteStore::open(
        &scene.central.data_dir().join(jms_server::services::DB_FILE),
    )
    .unwrap();
    let mut tx = store.write().unwrap();
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let address = format!("127.0.0.1:{}", scene.bastion.port());
    tx.set_bastion_sshd(scene.bastion_id, Some(&address), &[other.to_string()])
        .unwrap();
    tx.commit().unwrap();
    let refused = runtime.block_on(connect(services.sync.clone(), &login));
    assert!(
        matches!(refused, Err(BastionSshError::HostKeyMismatch(_))),
        "a bastion whose host key is not the pinned one is refused: {:?}",
        refused.err()
    );
}
