//! Recordings in S3-compatible object storage (`--recordings s3://...`)
//! against a real S3 server (s3s-fs: SigV4 checked, S3's multipart rules):
//! a bastion's chunked upload resumes after the server is killed (the
//! offset comes from the bucket, not from the instance), a corrupt chunk
//! makes the completion fail and discards the upload, the good upload is
//! composed into one object with a multipart upload and completes exactly
//! once, and the API, `jmsctl recording get` and the audit web's replay
//! stream back the identical bytes; nothing is written to the data
//! directory; a wrong secret is
//! refused by the store and never shown.

mod common;

use common::s3::S3Server;
use common::{enrolled, outcome, Server, SyncBastion, JMSCTL};
use jms_core::password::totp_code;
use jms_sync::bundle::hex;
use reqwest::blocking::Client;
use ring::digest::{digest, SHA256};
use serde_json::json;

const CHUNK: usize = 1 << 20;
const PATH: &str = "/api/v1/sync/recordings/s-3";

fn sha256_hex(bytes: &[u8]) -> String {
    hex(digest(&SHA256, bytes).as_ref())
}

/// A recording of `size` bytes (asciicast-looking lines).
fn recording_bytes(size: usize) -> Vec<u8> {
    let mut text = String::from("{\"version\": 2, \"width\": 80, \"height\": 24}\n");
    let mut i = 0u64;
    while text.len() < size {
        text.push_str(&format!("[{i}.000000, \"o\", \"line {i}\\r\\n\"]\n"));
        i += 1;
    }
    text.truncate(size);
    text.into_bytes()
}

/// Sends `bytes` from `from` on, chunk by chunk, with `corrupt` applied to
/// each chunk as sent.
fn send_from(
    server: &Server,
    bastion: &SyncBastion,
    bytes: &[u8],
    from: usize,
    corrupt: impl Fn(usize, &mut Vec<u8>),
) {
    let mut offset = from;
    while offset < bytes.len() {
        let end = (offset + CHUNK).min(bytes.len());
        let mut chunk = bytes[offset..end].to_vec();
        corrupt(offset, &mut chunk);
        let (status, answer) =
            bastion.send_json(server, "PUT", PATH, &format!("offset={offset}"), &chunk);
        assert_eq!(status, 200, "chunk at {offset}: {answer}\n{}", server.log());
        assert_eq!(answer["offset"], end);
        offset = end;
    }
}

fn complete(
    server: &Server,
    bastion: &SyncBastion,
    size: usize,
    sha256: &str,
) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(&json!({"size": size, "sha256": sha256})).unwrap();
    bastion.send_json(server, "POST", &format!("{PATH}/complete"), "", body)
}

fn offset(server: &Server, bastion: &SyncBastion) -> u64 {
    let (status, state) = bastion.send_json(server, "GET", PATH, "", Vec::new());
    assert_eq!(status, 200, "{state}\n{}", server.log());
    state["offset"].as_u64().unwrap()
}

/// The cookie of a web admin logged in to the audit web (password and
/// TOTP, as `jmsctl admin add` made her).
fn web_session(server: &Server) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let password = "a long web admin passphrase";
    let mut child = Command::new(JMSCTL)
        .args([
            "admin",
            "add",
            "auditor",
            "--password-stdin",
            "--iterations",
            "1000",
            "--data",
        ])
        .arg(&server.data)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (code, stdout, err) = outcome(&out);
    assert_eq!(code, 0, "{err}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("TOTP secret: "))
        .unwrap()
        .to_string();
    let code = format!(
        "{:06}",
        totp_code(&secret, chrono::Utc::now().timestamp()).unwrap()
    );
    let response = reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .post(format!("{}/web/login", server.url))
        .header("origin", &server.url)
        .form(&[
            ("username", "auditor"),
            ("password", password),
            ("code", &code),
            ("next", "/web/sessions"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 303, "web login");
    let cookie = response.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_string()
}

#[test]
fn recordings_in_object_storage_resume_are_checked_and_stream_back() {
    let s3 = S3Server::start("jms-recordings");
    let url = s3.url("fleet/a");
    let mut server = Server::start_with_env(&["--recordings", &url], &s3.env());
    let bastion = enrolled(&server, "b");
    // Over 8 MiB: composed with a multipart upload of two parts.
    let bytes = recording_bytes(9 * CHUNK + 123_456);
    let sha = sha256_hex(&bytes);

    // One chunk, then the server is killed: the offset is the bucket's.
    send_from(&server, &bastion, &bytes[..CHUNK], 0, |_, _| {});
    server.restart();
    assert_eq!(offset(&server, &bastion), CHUNK as u64);
    let (status, answer) = bastion.send_json(&server, "PUT", PATH, "offset=0", &bytes[..CHUNK]);
    assert_eq!(
        (status, answer["offset"].as_u64()),
        (409, Some(CHUNK as u64)),
        "{answer}"
    );

    // The rest with one corrupt chunk: the completion refuses it and the
    // upload is discarded (the bastion starts again from 0).
    send_from(&server, &bastion, &bytes, CHUNK, |offset, chunk| {
        if offset == 4 * CHUNK {
            chunk[100] ^= 0x20;
        }
    });
    let (status, answer) = complete(&server, &bastion, bytes.len(), &sha);
    assert_eq!(
        (status, answer["offset"].as_u64()),
        (422, Some(0)),
        "{answer}\n{}",
        server.log()
    );
    assert_eq!(offset(&server, &bastion), 0, "the chunks are gone");
    assert_eq!(
        s3.files("fleet/a"),
        Vec::<String>::new(),
        "nothing left in the bucket"
    );
    let (status, _) = server.call(
        Some(&server.read),
        "GET",
        "/api/v1/sessions/s-3/recording",
        None,
    );
    assert_eq!(status, 404, "nothing counts as the recording");

    // The good upload completes, exactly once.
    send_from(&server, &bastion, &bytes, 0, |_, _| {});
    let (status, answer) = complete(&server, &bastion, bytes.len(), &sha);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (answer["complete"].as_bool(), answer["sha256"].as_str()),
        (Some(true), Some(sha.as_str()))
    );
    let (status, _) = complete(&server, &bastion, bytes.len(), &sha);
    assert_eq!(status, 200, "completing again (a lost answer) is a no-op");
    let (status, answer) = bastion.send_json(
        &server,
        "PUT",
        PATH,
        &format!("offset={}", bytes.len()),
        b"more",
    );
    assert_eq!(status, 409, "{answer}");
    assert_eq!(offset(&server, &bastion), bytes.len() as u64);
    assert!(
        !server.data.join("recordings").exists(),
        "nothing on the server's disk"
    );
    assert!(
        s3.object("fleet/a/s-3.cast") == Some(bytes.clone()),
        "the bucket holds the recording, whole"
    );
    assert_eq!(s3.files("fleet/a"), ["fleet/a/s-3.cast"], "and no chunk");

    // Streamed back by another instance of the server: the API, jmsctl.
    server.restart();
    let response = Client::new()
        .get(format!("{}/api/v1/sessions/s-3/recording", server.url))
        .bearer_auth(&server.read)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert!(
        response.bytes().unwrap().to_vec() == bytes,
        "the same bytes from the API"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s-3.cast");
    let (code, _, err) =
        outcome(&server.jmsctl(&["recording", "get", "s-3", "-o", file.to_str().unwrap()]));
    assert_eq!(code, 0, "{err}");
    assert!(
        std::fs::read(&file).unwrap() == bytes,
        "the same bytes from jmsctl"
    );
    let cookie = web_session(&server);
    let replay = Client::new()
        .get(format!("{}/web/sessions/s-3/recording.cast", server.url))
        .header("cookie", cookie)
        .send()
        .unwrap();
    assert_eq!(replay.status().as_u16(), 200);
    assert!(
        replay.bytes().unwrap().to_vec() == bytes,
        "the same bytes for the replay"
    );

    // A wrong secret: the store refuses the signature; the error says so
    // without the secret.
    let mut env = s3.env();
    for (name, value) in env.iter_mut() {
        if name == "JMS_S3_SECRET_ACCESS_KEY" {
            *value = "not-the-secret-at-all".into();
        }
    }
    let wrong = Server::start_with_env(&["--recordings", &url], &env);
    let other = enrolled(&wrong, "b2");
    let (status, body) = other.send(
        &wrong,
        "PUT",
        "/api/v1/sync/recordings/s-4",
        "offset=0",
        b"x",
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 500, "{body}");
    let log = wrong.log();
    assert!(
        log.contains("recording storage") && log.contains("403"),
        "{log}"
    );
    assert!(!body.contains("not-the-secret-at-all") && !log.contains("not-the-secret-at-all"));
    assert!(!log.contains(&s3.secret_access_key), "{log}");
}
