//! TLS built in: the token carries the CA's SHA-256, enrollment hands the
//! bastion a client certificate, sync requests need it (and a revoked
//! bastion's is refused), jmsctl trusts the server's CA alone, and a
//! rotated server certificate is served after SIGHUP.

mod common;

use common::{outcome, Server, SyncBastion};
use ring::digest::{digest, SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

const CONTROL: &str = "wait=0&agent=0.1.0&sessions=0&backlog=0";

fn ca_hash(server: &Server) -> String {
    let der = CertificateDer::from_pem_slice(server.ca.as_ref().unwrap().as_bytes()).unwrap();
    jms_sync::bundle::hex(digest(&SHA256, der.as_ref()).as_ref())
}

/// A signed control poll from `bastion` sent with `http`.
fn poll(server: &Server, bastion: &SyncBastion, http: &reqwest::blocking::Client) -> (u16, String) {
    let headers = bastion.sign("GET", "/api/v1/sync/control", CONTROL, b"");
    let (status, body) = common::send_via(
        http,
        server,
        "GET",
        &format!("/api/v1/sync/control?{CONTROL}"),
        &headers,
        b"",
    );
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn tokens_pin_the_ca_and_sync_requests_need_the_bastions_own_client_certificate() {
    let server = Server::start_tls();
    assert!(server.url.starts_with("https://"), "{}", server.url);

    // The token is the secret, a dot and the SHA-256 of the CA.
    let token = common::bastion_token(&server, "1h");
    let (_, pin) = token.split_once('.').expect("a pinned token");
    assert_eq!(pin, ca_hash(&server));
    let out = std::process::Command::new(common::SERVER)
        .args(["tls", "ca-hash", "--data"])
        .arg(&server.data)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pin);

    let b1 = common::enrolled(&server, "b1");
    let b2 = common::enrolled(&server, "b2");
    let (status, body) = poll(&server, &b1, &b1.http);
    assert_eq!(status, 200, "with its client certificate: {body}");

    // Signed by b1 but without a client certificate, or with b2's.
    let no_cert = common::http_client(server.ca.as_deref(), None);
    let (status, body) = poll(&server, &b1, &no_cert);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("no client certificate"), "{body}");
    let (status, body) = poll(&server, &b1, &b2.http);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not this bastion's"), "{body}");

    // Revoked: its certificate no longer lets it in.
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "revoke", "b1", "--yes"]));
    assert_eq!(code, 0, "{err}");
    let (status, body) = poll(&server, &b1, &b1.http);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("revoked"), "{body}");
    let (status, body) = poll(&server, &b2, &b2.http);
    assert_eq!(status, 200, "b2 is not revoked: {body}");

    // jmsctl trusts the server's CA alone: another server's CA, or the
    // system's roots, are refused.
    let (code, _, err) = outcome(&server.jmsctl(&["bastion", "list"]));
    assert_eq!(code, 0, "with the server's CA: {err}");
    let other = Server::start_tls();
    let other_ca = other.data.join("tls/ca.pem");
    for env in [
        vec![
            ("JMS_SERVER", server.url.as_str()),
            ("JMS_TOKEN", server.admin.as_str()),
            ("JMS_CA", other_ca.to_str().unwrap()),
        ],
        vec![
            ("JMS_SERVER", server.url.as_str()),
            ("JMS_TOKEN", server.admin.as_str()),
        ],
    ] {
        let (code, _, err) = outcome(&common::jmsctl_env(&["bastion", "list"], &env, None));
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("cannot reach"), "{err}");
        assert!(err.to_lowercase().contains("certificate"), "{err}");
    }
}

#[test]
fn a_rotated_server_certificate_is_served_after_sighup_and_bastions_keep_working() {
    let server = Server::start_tls();
    let b1 = common::enrolled(&server, "b1");
    let served = || {
        let http = reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(
                reqwest::Certificate::from_pem(server.ca.as_ref().unwrap().as_bytes()).unwrap(),
            )
            .tls_info(true)
            .build()
            .unwrap();
        let response = http
            .get(format!("{}/api/openapi.json", server.url))
            .send()
            .unwrap();
        response
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|info| info.peer_certificate())
            .expect("the served certificate")
            .to_vec()
    };
    let on_disk = || {
        let text = std::fs::read(server.data.join("tls/server.pem")).unwrap();
        CertificateDer::pem_slice_iter(&text)
            .next()
            .unwrap()
            .unwrap()
            .as_ref()
            .to_vec()
    };
    let before = served();
    assert_eq!(before, on_disk());

    let out = std::process::Command::new(common::SERVER)
        .args(["tls", "rotate", "--tls-name", "127.0.0.1", "--data"])
        .arg(&server.data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotated = on_disk();
    assert_ne!(rotated, before, "a new certificate on disk");
    assert_eq!(served(), before, "served only after SIGHUP");

    let pid = server.pid();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    common::eventually("the rotated certificate to be served", || {
        (served() == rotated).then_some(())
    });
    // The bastion notices nothing: same CA, same client certificate.
    let (status, body) = poll(&server, &b1, &b1.http);
    assert_eq!(status, 200, "{body}");
}
