//! jms-agentd and a jms-server over TLS: enrollment checks the server's CA
//! against the token's SHA-256 (never trust on first use) and writes
//! nothing when it does not match; `jms-agentd renew-cert` gets a new
//! client certificate; after enrollment a server presenting a certificate
//! from another CA is refused at every request, and the cached policy
//! stays in force. Runs as root (CI does).

use std::os::unix::fs::PermissionsExt;

use jms_e2e::agentd::{enrolled_agentd, shared_temp_dir, Agentd, EXAMPLE_POLICY};
use jms_e2e::central::Central;

#[test]
fn enrollment_refuses_a_server_whose_ca_is_not_the_tokens_and_writes_nothing() {
    let dir = shared_temp_dir();
    let genuine = Central::start();
    genuine.jmsctl(&["policy", "apply", EXAMPLE_POLICY]);
    let impostor = Central::start();
    let token = genuine.enrollment_token();
    assert!(token.contains('.'), "the token names the CA: {token}");

    let bastion_dir = dir.path().join("bastion");
    std::fs::create_dir(&bastion_dir).unwrap();
    let bastion = Agentd::new(&bastion_dir, &genuine.url);
    // The genuine token, sent to a server with another CA (what a man in
    // the middle of the enrollment would present).
    let out = bastion.enroll(&impostor.url, &token);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "enrolled with the impostor: {err}");
    assert!(
        err.contains("holds no CA with the token's SHA-256") && err.contains("nothing was written"),
        "a clear refusal: {err}"
    );
    for file in [
        "bastion.key",
        "central.json",
        "server-ca.der",
        "client-cert.der",
    ] {
        assert!(
            !bastion.state().join(file).exists(),
            "{file} written after a refused enrollment"
        );
    }
    // The token never reached the impostor: it still enrolls with the
    // genuine server, over TLS, with a client certificate.
    let out = bastion.enroll(&genuine.url, &token);
    assert!(
        out.status.success(),
        "enroll with the genuine server: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = |file: &str| {
        std::fs::metadata(bastion.state().join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    for file in [
        "bastion.key",
        "central.json",
        "server-ca.der",
        "client-cert.der",
    ] {
        assert_eq!(mode(file), 0o600, "{file}");
    }
}

#[test]
fn after_enrollment_a_server_with_another_ca_is_refused_and_the_cached_policy_stays() {
    let (_dir, mut central, mut bastion) = enrolled_agentd(false);
    // A new client certificate (renewal), then the policy over mTLS with it.
    let cert = bastion.state().join("client-cert.der");
    let before = std::fs::read(&cert).unwrap();
    let out = bastion.command().arg("renew-cert").output().unwrap();
    assert!(
        out.status.success(),
        "renew-cert: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(std::fs::read(&cert).unwrap(), before, "a new certificate");
    bastion.start();
    assert!(
        bastion.has_user("alice"),
        "policy over mTLS:\n{}",
        bastion.log()
    );
    central.jmsctl(&["user", "add", "zed", "--name", "Zed"]);
    bastion.wait_for("zed over mTLS", || bastion.has_user("zed"));

    // The server's TLS files swapped for another CA's (same address, same
    // data, same signing key): the bastion refuses it at the handshake.
    central.stop();
    std::fs::remove_dir_all(central.data_dir().join("tls")).unwrap();
    central.restart();
    central.jmsctl(&["user", "add", "yann", "--name", "Yann"]);
    bastion.wait_for("the handshake to be refused", || {
        bastion.log().contains("did not issue: refused")
    });
    assert!(
        !bastion.has_user("yann"),
        "nothing from a server with another CA:\n{}",
        bastion.log()
    );
    assert!(
        bastion.has_user("alice") && bastion.has_user("zed"),
        "the cached policy stays in force:\n{}",
        bastion.log()
    );
}

#[test]
fn agentd_renews_its_client_certificate_before_it_ends_and_keeps_syncing_with_the_new_one() {
    let (_dir, central, mut bastion) = enrolled_agentd(false);
    let cert = bastion.state().join("client-cert.der");
    let issued = std::fs::read(&cert).unwrap();

    // By default (30 days before the end of a 365-day certificate) a
    // fresh certificate is kept.
    bastion.start();
    assert!(bastion.has_user("alice"), "{}", bastion.log());
    bastion.stop();
    assert_eq!(
        std::fs::read(&cert).unwrap(),
        issued,
        "a fresh certificate is kept"
    );
    assert!(!bastion.log().contains("client certificate renewed"));

    // Renewing 400 days before the end: the certificate is due at once.
    let config = std::fs::read_to_string(bastion.config()).unwrap();
    std::fs::write(
        bastion.config(),
        config.replace("[central]\n", "[central]\nrenew_cert_before_days = 400\n"),
    )
    .unwrap();
    bastion.start();
    bastion.wait_for("the renewal", || {
        bastion.log().contains("client certificate renewed")
    });
    let renewed = std::fs::read(&cert).unwrap();
    assert_ne!(renewed, issued, "a new certificate on disk");
    // The running agentd speaks mutual TLS with the new certificate: the
    // server's change arrives, and after a restart as well.
    central.jmsctl(&["user", "add", "zed", "--name", "Zed"]);
    bastion.wait_for("zed with the renewed certificate", || {
        bastion.has_user("zed")
    });
    bastion.stop();
    let log = bastion.log();
    assert!(!log.contains("renewal failed"), "{log}");
    assert_eq!(
        log.matches("client certificate renewed").count(),
        1,
        "one renewal, not one per request: {log}"
    );
}
