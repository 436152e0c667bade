//! Enrolling under a name that is already enrolled: refused (409) unless an
//! admin created the token with `jmsctl bastion token create --replace
//! NAME`; the old key keeps working until then, and a replace token
//! enrolls only the name it was made for.

mod common;

use common::{bastion_token, enroll, enrolled, new_bastion_key, outcome, Server};

fn replace_token(server: &Server, name: &str) -> String {
    let out = server.jmsctl(&["bastion", "token", "create", "--replace", name]);
    let (code, stdout, stderr) = outcome(&out);
    assert_eq!(code, 0, "bastion token create --replace: {stderr}");
    stdout.trim().to_string()
}

#[test]
fn an_enrolled_name_gets_a_new_key_only_with_a_replace_token() {
    let server = Server::start();
    let first = enrolled(&server, "b1");
    let (status, _) = first.send(&server, "GET", "/api/v1/sync/bundle", "since=0", b"");
    assert_ne!(status, 401, "the first key works");

    let intruder = new_bastion_key();
    let (status, body) = enroll(&server, &bastion_token(&server, "1h"), "b1", &intruder);
    assert_eq!(
        status, 409,
        "a plain token must not replace b1's key: {body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("--replace b1"),
        "the refusal says how to replace: {body}"
    );
    let (status, _) = first.send(&server, "GET", "/api/v1/sync/bundle", "since=0", b"");
    assert_ne!(status, 401, "b1's key is unchanged after the refusal");

    let token = replace_token(&server, "b1");
    let (status, body) = enroll(&server, &token, "b2", &new_bastion_key());
    assert_eq!(status, 401, "a replace token enrolls only its name: {body}");

    let (status, body) = enroll(&server, &token, "b1", &new_bastion_key());
    assert_eq!(
        status, 200,
        "the admin's replace token re-enrolls b1: {body}"
    );
    let (status, _) = first.send(&server, "GET", "/api/v1/sync/bundle", "since=0", b"");
    assert_eq!(status, 401, "the replaced key no longer works");
}
