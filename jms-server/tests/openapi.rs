//! `/api/openapi.json` lists exactly the routes the server serves: every
//! documented operation is routed, every other method on a documented path
//! is 405, and paths it does not document are not routed.

mod common;

use std::collections::BTreeSet;

use common::Server;
use serde_json::Value;

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A concrete path for a templated one (`{id}` → 1, others → `x`).
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|s| match s {
            "{id}" => "1",
            s if s.starts_with('{') => "x",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn is_no_route(status: u16, body: &Value) -> bool {
    status == 404
        && body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("no route"))
}

#[test]
fn the_document_matches_the_served_routes() {
    let server = Server::start();
    let (status, doc) = server.call(None, "GET", "/api/openapi.json", None);
    assert_eq!(status, 200, "the document is public");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");

    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            let listed = item.get(method.to_ascii_lowercase()).is_some();
            let (status, body) = server.admin(method, &concrete(path), None);
            if listed {
                documented.insert((method.to_string(), path.clone()));
                assert!(
                    status != 405 && !is_no_route(status, &body),
                    "{method} {path} is documented but not served: {status} {body}"
                );
            } else {
                assert_eq!(
                    status, 405,
                    "{method} {path} is served but not documented: {body}"
                );
            }
        }
    }

    // The route table is the source of both; it has nothing undocumented.
    let table: BTreeSet<(String, String)> = jms_server::api::routes::table()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_eq!(table, documented);

    // Paths the document does not name are not served (`/` is the
    // engineers' portal, not the API).
    for path in [
        "/api/v1",
        "/api/v1/sessionz",
        "/api/v2/users",
        "/api/v1/users/x/y",
        "/api/",
    ] {
        let (status, body) = server.admin("GET", path, None);
        assert!(
            is_no_route(status, &body),
            "GET {path} is served but not documented: {status} {body}"
        );
    }
}

#[test]
fn documented_operations_name_their_schemas_and_security() {
    let server = Server::start();
    let (_, doc) = server.call(None, "GET", "/api/openapi.json", None);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(!id.is_empty(), "{method} {path} has no operationId");
            let responses = op["responses"].as_object().unwrap();
            assert!(
                responses.keys().any(|k| k.starts_with('2')),
                "{id}: no success response"
            );
            for param in path.split('/').filter(|s| s.starts_with('{')) {
                let name = param.trim_matches(['{', '}']);
                assert!(
                    op["parameters"].as_array().is_some_and(|ps| ps
                        .iter()
                        .any(|p| p["name"] == name && p["in"] == "path")),
                    "{id}: path parameter {name} undocumented"
                );
            }
            if path == "/api/openapi.json" {
                assert_eq!(
                    op["security"],
                    serde_json::json!([]),
                    "the document is public"
                );
            }
        }
    }
    for name in [
        "User",
        "UserView",
        "Account",
        "AccountView",
        "Grant",
        "PolicyDocument",
        "Settings",
        "Error",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    assert_eq!(
        schemas["Account"]["properties"]["secret"]["writeOnly"],
        true
    );
    assert!(schemas["AccountView"]["properties"].get("secret").is_none());
}
