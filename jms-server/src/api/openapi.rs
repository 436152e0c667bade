//! The OpenAPI 3 document, built from the route table (so it lists exactly
//! the routes the router serves) and the schemas in `super::schemas`.

use axum::http::Method;
use serde_json::{json, Map, Value};

use super::routes::{self, Auth, QueryParams, Route};
use super::schemas;
use crate::store::Scope;

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in routes::table() {
        let item = paths
            .entry(route.path.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        item[route.method.as_str().to_ascii_lowercase()] = operation(&route);
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "jms-server admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Central store of the jms SSH bastion: users, groups, nodes, assets, \
                accounts, grants, command filters, settings and the operation log. Entities are \
                written in the same form as in a policy file and checked by jms-core before they \
                are committed. Secrets are write-only. Errors are {\"error\": \"...\"}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas::all(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "jms-server token create"},
                "bastion": {"type": "apiKey", "in": "header", "name": "X-Jms-Signature", "description": "Ed25519 signature by an enrolled bastion over method, path, query, X-Jms-Timestamp, X-Jms-Nonce and the body's SHA-256; X-Jms-Bastion names the bastion. Every answer to an authenticated request carries X-Jms-Answer-Signature: the server key's Ed25519 signature over the bastion id, the request's nonce, method, path and query, the status, X-Jms-Policy-Version and the body's SHA-256"}
            },
        },
        "security": [{"bearer": []}],
    })
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    })
}

/// The `{name}` segments of a path.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .collect()
}

/// The media type of a binary schema (`format: binary`): its
/// `x-media-type`, else `application/octet-stream`; `None` for JSON.
fn binary_media(schema: &str) -> Option<String> {
    let all = schemas::all();
    let schema = all.get(schema)?;
    (schema["format"] == "binary").then(|| {
        schema["x-media-type"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_string()
    })
}

fn operation(route: &Route) -> Value {
    let mut parameters: Vec<Value> = path_params(route.path)
        .into_iter()
        .map(|name| {
            let schema = if name == "id" {
                json!({"type": "integer", "format": "int64"})
            } else {
                json!({"type": "string"})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    let query = |name: &str, schema: Value, description: &str| json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description});
    match route.query {
        QueryParams::None => {}
        QueryParams::Page => {
            parameters.push(query(
                "limit",
                json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                "Page size",
            ));
            parameters.push(query(
                "offset",
                json!({"type": "integer", "minimum": 0, "default": 0}),
                "Rows to skip",
            ));
            parameters.push(query(
                "q",
                json!({"type": "string"}),
                "Case-insensitive substring of the names",
            ));
        }
        QueryParams::Export => parameters.push(query(
            "with_secrets",
            json!({"type": "boolean", "default": false}),
            "Include secrets (admin tokens only; logged)",
        )),
        QueryParams::Apply => parameters.push(query(
            "dry_run",
            json!({"type": "boolean", "default": false}),
            "Only compute the changes",
        )),
        QueryParams::Audit(kind) => parameters.extend(super::audit::query_parameters(kind)),
        QueryParams::Control => {
            parameters.push(query(
                "wait",
                json!({"type": "integer", "minimum": 0, "maximum": 60, "default": 0}),
                "Long-poll: seconds to hold the request until an order comes",
            ));
            parameters.push(query(
                "agent",
                json!({"type": "string", "pattern": "^[A-Za-z0-9.+_~-]{1,64}$"}),
                "The bastion's jms-agentd version (agent, sessions and backlog come together)",
            ));
            parameters.push(query(
                "sessions",
                json!({"type": "integer", "minimum": 0}),
                "Sessions open on the bastion",
            ));
            parameters.push(query(
                "backlog",
                json!({"type": "integer", "minimum": 0}),
                "Bytes of audit events spooled on the bastion, not yet uploaded",
            ));
        }
        QueryParams::Since => {
            parameters.push(query(
                "since",
                json!({"type": "integer", "minimum": 0, "default": 0}),
                "The policy version the bastion holds",
            ));
            let mut transport = query(
                "transport",
                json!({"type": "string", "pattern": "^[0-9a-f]{64}$"}),
                "Hex of a fresh X25519 public key the bundle is sealed to",
            );
            transport["required"] = json!(true);
            parameters.push(transport);
            parameters.push(query(
                "wait",
                json!({"type": "integer", "minimum": 0, "maximum": 60, "default": 0}),
                "Long-poll: seconds to hold the request while `since` is current",
            ));
        }
    }

    let mut responses = Map::new();
    let success = match route.response {
        Some(schema) if route.binary => json!({
            "description": "OK",
            "content": {binary_media(schema).unwrap_or_else(|| "application/octet-stream".into()): {"schema": {"type": "string", "format": "binary"}}}
        }),
        Some(schema) => json!({
            "description": "OK",
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        }),
        None => json!({"description": "Done"}),
    };
    responses.insert(route.status.to_string(), success);
    let writes = route.method != Method::GET;
    if route.body.is_some() || route.query != QueryParams::None || !parameters.is_empty() {
        responses.insert("400".into(), error("Malformed request"));
    }
    if route.query == QueryParams::Since {
        responses.insert(
            "304".into(),
            json!({"description": "The bastion's version is current"}),
        );
    }
    if route.auth == Auth::Bastion {
        responses.insert(
            "401".into(),
            error("Unsigned, badly signed, stale or replayed request, or unknown bastion"),
        );
    }
    if route.path == jms_sync::paths::ENROLL {
        responses.insert(
            "401".into(),
            error("Unknown, used or expired enrollment token, or a replace token for another name"),
        );
        responses.insert(
            "409".into(),
            error("A bastion of that name is enrolled: it needs a token made with --replace NAME"),
        );
    }
    if route.auth == Auth::Token {
        responses.insert("401".into(), error("Missing or unknown token"));
        if route.role > Scope::Auditor {
            responses.insert(
                "403".into(),
                error(&format!("Needs the {} role", route.role)),
            );
        } else if route.query == QueryParams::Export {
            responses.insert("403".into(), error("with_secrets needs the admin role"));
        }
    }
    if !path_params(route.path).is_empty()
        || route.method == Method::POST && route.path.contains('{')
    {
        responses.insert("404".into(), error("No such entity"));
    }
    if (route.method == Method::POST
        && route.auth == Auth::Token
        && route.path != "/api/v1/bastions/tokens")
        || route.operation_id == "patchNode"
    {
        responses.insert("409".into(), error("Already exists"));
    }
    let policy_write = route.tag != "bastions";
    if writes && route.auth == Auth::Token && policy_write {
        responses.insert(
            "422".into(),
            error("The change would make the policy invalid (jms-core's message)"),
        );
    }
    if route.body.is_some() {
        responses.insert("413".into(), error("Body too large"));
        responses.insert("415".into(), error("Not application/json"));
    }
    for (status, description) in super::audit::extra_responses(route.operation_id) {
        responses.insert(status.into(), error(description));
    }
    responses.insert("default".into(), error("Server error"));

    let mut op = json!({
        "operationId": route.operation_id,
        "summary": route.summary,
        "tags": [route.tag],
        "responses": responses,
    });
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(schema) = route.body {
        // A binary schema is sent as raw bytes, anything else as JSON.
        let media = binary_media(schema).unwrap_or_else(|| "application/json".into());
        op["requestBody"] = json!({
            "required": true,
            "content": {media: {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        });
    }
    match route.auth {
        Auth::Public => op["security"] = json!([]),
        Auth::Bastion => op["security"] = json!([{"bastion": []}]),
        Auth::Token => {
            op["x-required-role"] = json!(route.role.as_str());
            op["description"] = json!(format!(
                "Needs a token with the {} role or higher (auditor < operator < admin).",
                route.role
            ));
        }
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_schema_is_defined() {
        let doc = document();
        let text = doc.to_string();
        let defined = doc["components"]["schemas"].as_object().unwrap();
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(
                defined.contains_key(&name),
                "schema {name} is referenced but not defined"
            );
        }
    }

    #[test]
    fn every_token_route_names_its_role_and_auditors_only_read() {
        let doc = document();
        for route in routes::table() {
            if route.auth != Auth::Token {
                continue;
            }
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["x-required-role"], route.role.as_str(), "{}", route.path);
            if route.method != Method::GET {
                assert!(
                    route.role >= Scope::Operator,
                    "{} {}",
                    route.method,
                    route.path
                );
                assert!(op["responses"]["403"].is_object(), "{}", route.path);
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for route in routes::table() {
            assert!(
                seen.insert(route.operation_id),
                "{} twice",
                route.operation_id
            );
            assert!(!route.summary.is_empty() && !route.tag.is_empty());
        }
    }
}
