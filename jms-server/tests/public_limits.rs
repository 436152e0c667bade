//! What anyone on the network can make the server do through its public
//! endpoints: forms past a small size are refused (413) before they are
//! read; a flood of web logins is answered "busy" (503) once the password
//! checking threads and their short queue are taken, instead of queueing
//! on the threads that serve store and sync requests.

mod common;

use common::Server;
use reqwest::blocking::Client;
use reqwest::redirect::Policy;

fn http() -> Client {
    Client::builder().redirect(Policy::none()).build().unwrap()
}

#[test]
fn public_forms_past_the_limit_are_refused() {
    let server = Server::start();
    let big = "x".repeat(1 << 20);
    for (path, form) in [
        (
            "/web/login",
            vec![
                ("username", big.as_str()),
                ("password", "p"),
                ("code", "123456"),
            ],
        ),
        (
            "/password/forgot",
            vec![("csrf", "c"), ("login", big.as_str())],
        ),
        (
            "/password/set",
            vec![("token", big.as_str()), ("csrf", "c")],
        ),
    ] {
        let response = http()
            .post(format!("{}{path}", server.url))
            .header("origin", &server.url)
            .form(&form)
            .send()
            .unwrap();
        assert_eq!(
            response.status(),
            413,
            "{path}: a 1 MiB form must be refused: {}",
            response.text().unwrap_or_default()
        );
    }
    // Small forms still get their normal answer.
    let response = http()
        .post(format!("{}/web/login", server.url))
        .header("origin", &server.url)
        .form(&[
            ("username", "nobody"),
            ("password", "p"),
            ("code", "123456"),
        ])
        .send()
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[test]
fn a_login_flood_is_answered_busy_not_queued() {
    let server = Server::start();
    let url = format!("{}/web/login", server.url);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..64)
            .map(|n| {
                let (url, origin) = (&url, &server.url);
                scope.spawn(move || {
                    http()
                        .post(url)
                        .header("origin", origin)
                        .form(&[
                            ("username", format!("nobody-{n}").as_str()),
                            ("password", "wrong"),
                            ("code", "123456"),
                        ])
                        .send()
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "every attempt is refused or told to retry: {statuses:?}"
    );
    assert!(
        statuses.contains(&503),
        "attempts beyond the password-check pool must be answered 503 at once: {statuses:?}"
    );
    assert!(statuses.contains(&401), "some were checked: {statuses:?}");
    // The API still answers.
    server.expect(200, "GET", "/api/v1/users", None);
}
