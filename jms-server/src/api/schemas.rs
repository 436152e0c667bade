//! JSON schemas of the bodies, for the OpenAPI document. Inputs are the
//! policy-file forms (closed: unknown fields are refused, as the server
//! does); views add the server's fields and replace secrets by `has_…`.

use serde_json::{json, Map, Value};

fn string() -> Value {
    json!({"type": "string"})
}
fn boolean() -> Value {
    json!({"type": "boolean"})
}
fn integer() -> Value {
    json!({"type": "integer"})
}
fn strings() -> Value {
    json!({"type": "array", "items": {"type": "string"}})
}
fn time() -> Value {
    json!({"type": "string", "description": "RFC 3339 (2027-12-31T00:00:00Z) or a date (2027-12-31)"})
}
fn write_only() -> Value {
    json!({"type": "string", "writeOnly": true, "description": "Write-only: never returned"})
}
fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}
fn list_of(name: &str) -> Value {
    json!({"type": "array", "items": reference(name)})
}
fn one_of(values: &[&str]) -> Value {
    json!({"type": "string", "enum": values})
}

/// An object schema; `closed` refuses other fields.
fn object(properties: &[(&str, Value)], required: &[&str], closed: bool) -> Value {
    let props: Map<String, Value> = properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let mut schema = json!({"type": "object", "properties": props});
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    if closed {
        schema["additionalProperties"] = json!(false);
    }
    schema
}

fn page(item: &str) -> Value {
    object(
        &[
            ("items", list_of(item)),
            ("total", integer()),
            ("limit", integer()),
            ("offset", integer()),
        ],
        &["items", "total", "limit", "offset"],
        false,
    )
}

/// `fields` plus the server's fields, none of `secrets`.
fn view(fields: &[(&str, Value)], secrets: &[&str], extra: &[(&str, Value)]) -> Value {
    let mut all: Vec<(&str, Value)> = fields
        .iter()
        .filter(|(k, _)| !secrets.contains(k))
        .cloned()
        .collect();
    all.extend(extra.iter().cloned());
    all.push((
        "created_at",
        json!({"type": "string", "format": "date-time"}),
    ));
    all.push((
        "updated_at",
        json!({"type": "string", "format": "date-time"}),
    ));
    object(&all, &[], false)
}

const PROTOCOLS: &[&str] = &["ssh", "sftp"];
const ACTIONS: &[&str] = &[
    "all", "connect", "upload", "download", "delete", "copy", "paste", "share",
];

/// Every schema the document refers to.
pub fn all() -> Value {
    let user = [
        ("username", string()),
        ("name", string()),
        ("email", json!({"type": "string", "nullable": true})),
        ("is_active", boolean()),
        ("date_expired", time()),
        ("groups", strings()),
        ("public_keys", strings()),
        ("password_hash", write_only()),
        ("totp_secret", write_only()),
        ("login_acl", reference("LoginAcl")),
    ];
    let group = [("name", string()), ("comment", string())];
    let asset_fields = [
        ("name", string()),
        ("address", string()),
        ("protocols", list_of("AssetProtocol")),
        ("nodes", strings()),
        ("is_active", boolean()),
        ("host_keys", strings()),
        (
            "zone",
            json!({"type": ["string", "null"], "description": "The network zone (1-64 of a-z A-Z 0-9 _ . -): its account jobs run only on bastions an admin put in this zone; absent or null: on any bastion"}),
        ),
    ];
    let mut asset = asset_fields.to_vec();
    asset.push(("accounts", list_of("Account")));
    let account = [
        ("name", string()),
        ("username", string()),
        ("secret_type", one_of(&["password", "ssh_key"])),
        ("secret", write_only()),
        ("privileged", boolean()),
        ("shell", string()),
        ("groups", strings()),
        ("sudo", string()),
    ];
    let grant = [
        ("name", string()),
        ("users", strings()),
        ("user_groups", strings()),
        ("assets", strings()),
        ("nodes", strings()),
        (
            "accounts",
            json!({"type": "array", "items": {"type": "string"}, "description": "@ALL, @INPUT, @USER, @ANON or account names"}),
        ),
        (
            "protocols",
            json!({"type": "array", "items": one_of(&["all", "ssh", "sftp"])}),
        ),
        (
            "actions",
            json!({"type": "array", "items": one_of(ACTIONS)}),
        ),
        ("date_start", time()),
        ("date_expired", time()),
        ("is_active", boolean()),
        ("comment", string()),
    ];
    let filter = [
        ("name", string()),
        (
            "priority",
            json!({"type": "integer", "minimum": 0, "maximum": 255, "description": "1 (first) to 100 (last)"}),
        ),
        ("action", one_of(&["deny", "allow"])),
        ("rules", strings()),
        ("users", strings()),
        ("user_groups", strings()),
        ("assets", strings()),
        ("nodes", strings()),
        ("accounts", strings()),
        ("is_active", boolean()),
    ];
    let span = || json!({"type": "string", "description": "A duration: 30m, 1h 30m, 24h"});
    let security = object(
        &[
            ("password_min_length", integer()),
            ("password_require_uppercase", boolean()),
            ("password_require_lowercase", boolean()),
            ("password_require_digit", boolean()),
            ("password_require_symbol", boolean()),
            ("lockout_threshold", integer()),
            ("lockout_duration", span()),
            ("mfa_required", one_of(&["none", "all", "groups"])),
            ("mfa_groups", strings()),
            ("session_idle_timeout", span()),
            ("max_session_length", span()),
        ],
        &[],
        true,
    );
    let audit = object(
        &[
            ("record_input", boolean()),
            ("recording_max_bytes", integer()),
            ("command_filter_default", one_of(&["allow", "deny"])),
            ("exec_stdin", one_of(&["check", "refuse", "pass"])),
            ("stdin_interpreters", strings()),
            ("on_failure", one_of(&["refuse", "continue"])),
        ],
        &[],
        true,
    );
    let accounts = object(
        &[
            (
                "password_length",
                json!({"type": "integer", "minimum": 8, "maximum": 128}),
            ),
            ("password_uppercase", boolean()),
            ("password_digits", boolean()),
            ("password_symbols", boolean()),
        ],
        &[],
        true,
    );
    let mail = [
        ("enabled", boolean()),
        ("smtp_host", string()),
        (
            "smtp_port",
            json!({"type": "integer", "minimum": 0, "maximum": 65535}),
        ),
        ("smtp_security", one_of(&["starttls", "tls", "none"])),
        ("username", string()),
        (
            "password",
            json!({"type": "string", "nullable": true, "writeOnly": true}),
        ),
        ("from", string()),
        (
            "site_url",
            json!({"type": "string", "description": "Base of the links in mails: https://jms.example.com"}),
        ),
        ("link_lifetime", span()),
    ];
    let mut mail_view: Vec<(&str, Value)> = mail
        .iter()
        .filter(|(k, _)| *k != "password")
        .cloned()
        .collect();
    mail_view.push(("has_password", boolean()));

    let mut all = json!({
        "Error": object(&[("error", string())], &["error"], false),
        "OpenApiDocument": {"type": "object"},
        "Version": object(&[("version", integer())], &["version"], false),
        "LoginAcl": object(&[
            ("allow_from", strings()),
            ("deny_from", strings()),
            ("time_windows", list_of("TimeWindow")),
        ], &[], true),
        "TimeWindow": object(&[
            ("days", json!({"type": "array", "items": one_of(&["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"])})),
            ("from", json!({"type": "string", "description": "HH:MM"})),
            ("to", json!({"type": "string", "description": "HH:MM (24:00 is the end of the day)"})),
        ], &["days", "from", "to"], true),
        "User": object(&user, &["username"], true),
        "UserPatch": object(&user, &[], true),
        "UserView": view(&user, &["password_hash", "totp_secret"], &[
            ("uid", integer()), ("has_password", boolean()), ("has_totp", boolean()),
        ]),
        "UserPage": page("UserView"),
        "UserGroup": object(&group, &["name"], true),
        "GroupPatch": object(&group, &[], true),
        "GroupView": view(&group, &[], &[("gid", integer()), ("members", strings())]),
        "GroupPage": page("GroupView"),
        "NewNode": object(&[("path", json!({"type": "string", "description": "/Default/prod/web"}))], &["path"], true),
        "NodeView": object(&[
            ("id", integer()),
            ("path", string()),
            ("created_at", json!({"type": "string", "format": "date-time"})),
        ], &["id", "path"], false),
        "NodePage": page("NodeView"),
        "AssetProtocol": object(&[
            ("name", one_of(PROTOCOLS)),
            ("port", json!({"type": "integer", "minimum": 0, "maximum": 65535})),
        ], &["name", "port"], true),
        "Asset": object(&asset, &["name", "address", "protocols"], true),
        "AssetPatch": object(&asset_fields, &[], true),
        "AssetView": view(&asset_fields, &[], &[
            ("accounts", list_of("AccountView")),
            ("details", json!({
                "type": ["object", "null"],
                "description": "What the last discovery (jmsctl account discover) found on the asset",
                "properties": {
                    "hostname": {"type": ["string", "null"]},
                    "os": {"type": ["string", "null"]},
                    "kernel": {"type": ["string", "null"]},
                    "cpus": {"type": ["integer", "null"]},
                    "memory_kib": {"type": ["integer", "null"]},
                    "discovered_at": {"type": ["string", "null"], "format": "date-time"},
                    "job": {"type": ["string", "null"]},
                },
            })),
        ]),
        "AssetPage": page("AssetView"),
        "Account": object(&account, &["name", "username", "secret_type"], true),
        "AccountPatch": object(&account, &[], true),
        "AccountView": view(&account, &["secret"], &[
            ("asset", string()),
            ("has_secret", boolean()),
            ("verified", json!({"type": ["boolean", "null"], "description": "The last verification's result (null: never verified)"})),
            ("verified_at", json!({"type": ["string", "null"], "format": "date-time"})),
        ]),
        "AccountPage": page("AccountView"),
        "Grant": object(&grant, &["name", "accounts", "protocols", "actions"], true),
        "GrantPatch": object(&grant, &[], true),
        "GrantView": view(&grant, &[], &[]),
        "GrantPage": page("GrantView"),
        "CommandFilter": object(&filter, &["name", "action", "rules", "accounts"], true),
        "FilterPatch": object(&filter, &[], true),
        "FilterView": view(&filter, &[], &[]),
        "FilterPage": page("FilterView"),
        "Settings": object(&[
            ("security", security.clone()),
            ("audit", audit.clone()),
            ("mail", object(&mail, &[], true)),
            ("accounts", accounts.clone()),
        ], &[], true),
        "SettingsView": object(&[
            ("security", security),
            ("audit", audit),
            ("mail", object(&mail_view, &[], false)),
            ("accounts", accounts),
        ], &[], false),
        "OpLogEntry": object(&[
            ("id", integer()),
            ("at", json!({"type": "string", "format": "date-time"})),
            ("actor", string()),
            ("action", string()),
            ("kind", string()),
            ("name", string()),
            ("fields", strings()),
            ("version", integer()),
        ], &["id", "at", "actor", "action", "kind", "name", "fields", "version"], false),
        "OpLogPage": page("OpLogEntry"),
        "PolicyDocument": object(&[
            ("users", list_of("User")),
            ("user_groups", list_of("UserGroup")),
            ("nodes", strings()),
            ("assets", list_of("Asset")),
            ("grants", list_of("Grant")),
            ("command_filters", list_of("CommandFilter")),
            ("plans", list_of("PlanSpec")),
        ], &[], true),
        "Change": object(&[
            ("op", one_of(&["add", "change", "remove"])),
            ("kind", one_of(&["group", "user", "node", "asset", "account", "grant", "filter"])),
            ("name", string()),
            ("fields", strings()),
        ], &["op", "kind", "name"], false),
        "Applied": object(&[
            ("changes", list_of("Change")),
            ("version", integer()),
            ("dry_run", boolean()),
            ("plans", strings()),
        ], &["changes", "version", "dry_run"], false),
    });
    let sync = sync_schemas();
    all.as_object_mut().expect("an object").extend(sync);
    all.as_object_mut()
        .expect("an object")
        .extend(crate::selfservice::api::schemas());
    all.as_object_mut()
        .expect("an object")
        .extend(super::audit::schemas());
    all
}

/// Schemas of the bastion and sync routes.
fn sync_schemas() -> Map<String, Value> {
    let mut schemas = Map::new();
    let mut add = |name: &str, schema: Value| {
        schemas.insert(name.to_string(), schema);
    };
    add(
        "NewEnrollToken",
        object(
            &[
                (
                    "ttl_seconds",
                    json!({"type": "integer", "minimum": 1, "maximum": 2_592_000, "default": 3600}),
                ),
                (
                    "replace",
                    json!({"type": ["string", "null"], "description": "An enrolled bastion this token may give a new key; enrolling an existing name without it is refused (409)"}),
                ),
            ],
            &[],
            true,
        ),
    );
    add(
        "EnrollToken",
        object(
            &[
                ("token", string()),
                (
                    "expires_at",
                    json!({"type": "string", "format": "date-time"}),
                ),
            ],
            &["token", "expires_at"],
            false,
        ),
    );
    add(
        "EnrollRequest",
        object(
            &[
                ("token", string()),
                ("bastion_name", string()),
                (
                    "public_key",
                    json!({"type": "string", "description": "Hex of the bastion's Ed25519 public key"}),
                ),
            ],
            &["token", "bastion_name", "public_key"],
            true,
        ),
    );
    add(
        "Enrolled",
        object(
            &[
                ("bastion_id", integer()),
                ("server_public_key", string()),
                ("server_id", string()),
                (
                    "client_cert",
                    json!({"type": ["string", "null"], "description": "The bastion's client certificate (PEM) from the server's CA; null over plain HTTP"}),
                ),
            ],
            &[
                "bastion_id",
                "server_public_key",
                "server_id",
                "client_cert",
            ],
            false,
        ),
    );
    let time_or_null = || json!({"type": ["string", "null"], "format": "date-time"});
    let count_or_null = || json!({"type": ["integer", "null"], "minimum": 0});
    add(
        "Bastion",
        object(
            &[
                ("name", string()),
                ("status", one_of(&["online", "silent", "revoked"])),
                ("address", json!({"type": ["string", "null"]})),
                ("enrolled_at", time_or_null()),
                ("last_seen_at", time_or_null()),
                ("silent_for_secs", count_or_null()),
                ("policy_version", count_or_null()),
                ("server_version", integer()),
                ("versions_behind", count_or_null()),
                ("agent_version", json!({"type": ["string", "null"]})),
                ("open_sessions", count_or_null()),
                ("spool_backlog", count_or_null()),
                ("reported_at", time_or_null()),
                ("revoked_at", time_or_null()),
                ("zone", json!({"type": ["string", "null"]})),
            ],
            &["name", "status", "server_version"],
            false,
        ),
    );
    add(
        "BastionZone",
        object(
            &[(
                "zone",
                json!({"type": ["string", "null"], "description": "1-64 of a-z A-Z 0-9 _ . -; null: no zone"}),
            )],
            &[],
            false,
        ),
    );
    add(
        "Unlocked",
        object(
            &[("user", string()), ("bastions", strings())],
            &["user", "bastions"],
            false,
        ),
    );
    add(
        "BastionList",
        object(
            &[
                ("items", list_of("Bastion")),
                ("silent_after_secs", integer()),
            ],
            &["items", "silent_after_secs"],
            false,
        ),
    );
    add(
        "SealedBundle",
        json!({"type": "string", "format": "binary"}),
    );
    add(
        "EventBatch",
        object(
            &[(
                "events",
                json!({"type": "array", "items": object(&[
                ("id", string()),
                ("event", string()),
                ("time", string()),
            ], &["id", "event", "time"], false)}),
            )],
            &["events"],
            true,
        ),
    );
    add(
        "EventsAccepted",
        object(
            &[("accepted", strings()), ("stored", integer())],
            &["accepted", "stored"],
            false,
        ),
    );
    let step = object(
        &[("name", string()), ("ok", boolean()), ("detail", string())],
        &["name", "ok"],
        false,
    );
    add(
        "NewJob",
        object(
            &[
                (
                    "kind",
                    one_of(&["push", "verify", "rotate", "remove", "discover"]),
                ),
                ("asset", string()),
                ("account", string()),
            ],
            &["kind", "asset", "account"],
            true,
        ),
    );
    add(
        "Job",
        object(
            &[
                ("id", string()),
                (
                    "kind",
                    one_of(&["push", "verify", "rotate", "remove", "discover"]),
                ),
                ("asset", string()),
                ("account", string()),
                ("actor", string()),
                ("bastion", json!({"type": ["string", "null"]})),
                ("status", one_of(&["running", "ok", "failed"])),
                ("changed", boolean()),
                ("steps", json!({"type": "array", "items": step.clone()})),
                ("error", json!({"type": ["string", "null"]})),
                (
                    "created_at",
                    json!({"type": "string", "format": "date-time"}),
                ),
                ("finished_at", time_or_null()),
                (
                    "attempt",
                    json!({"type": "integer", "minimum": 1, "description": "1 on its first bastion, one more each time it is handed to another"}),
                ),
                ("attempt_at", time_or_null()),
                (
                    "tried",
                    json!({"type": "array", "items": {"type": "string"}, "description": "The bastions given the job, in order"}),
                ),
            ],
            &["id", "kind", "asset", "account", "status", "steps"],
            false,
        ),
    );
    add(
        "JobDetail",
        json!({
            "allOf": [
                {"$ref": "#/components/schemas/Job"},
                {
                    "type": "object",
                    "properties": {
                        "events": {
                            "type": "array",
                            "description": "Each step as the bastions' audit events (job_step) said it, oldest first; never a secret",
                            "items": object(&[
                                ("at", string()),
                                ("bastion", json!({"type": ["string", "null"]})),
                                ("attempt", integer()),
                                ("step", string()),
                                ("ok", boolean()),
                                ("detail", string()),
                            ], &["at", "step", "ok"], false),
                        },
                    },
                    "required": ["events"],
                },
            ],
        }),
    );
    add(
        "JobList",
        object(&[("items", list_of("Job"))], &["items"], false),
    );
    let plan_kind = one_of(&["push", "verify", "rotate", "discover"]);
    let plan_fields = vec![
        ("name", string()),
        ("kind", plan_kind),
        (
            "node",
            json!({"type": ["string", "null"], "description": "Every asset in this node and below (or asset)"}),
        ),
        ("asset", json!({"type": ["string", "null"]})),
        (
            "account",
            json!({"type": ["string", "null"], "description": "Only this account of the asset (default: every account with a secret, the privileged one only for verify)"}),
        ),
        (
            "every_days",
            json!({"type": ["integer", "null"], "minimum": 1, "maximum": 3650}),
        ),
        (
            "cron",
            json!({"type": ["string", "null"], "description": "Five fields (minute hour day-of-month month day-of-week), UTC"}),
        ),
    ];
    let mut new_plan = plan_fields.clone();
    new_plan.push(("start", json!({"type": ["string", "null"], "format": "date-time", "description": "First run of an every-N-days plan (default: one period from now)"})));
    add("NewPlan", object(&new_plan, &["name", "kind"], true));
    let mut spec = object(&plan_fields, &["name", "kind"], true);
    spec["description"] = json!("A plan in a policy file (kept by the server, never sent to bastions); a file without `plans` leaves the server's as they are");
    add("PlanSpec", spec);
    let mut plan = plan_fields;
    plan.extend([
        ("created_by", string()),
        (
            "created_at",
            json!({"type": "string", "format": "date-time"}),
        ),
        ("next_run", json!({"type": "string", "format": "date-time"})),
        ("last_run", time_or_null()),
        (
            "last_jobs",
            json!({"type": "array", "items": {"type": "string"}}),
        ),
        ("last_error", json!({"type": ["string", "null"]})),
    ]);
    add("Plan", object(&plan, &["name", "kind", "next_run"], false));
    add(
        "PlanList",
        object(&[("items", list_of("Plan"))], &["items"], false),
    );
    add(
        "JobReport",
        object(
            &[
                ("ok", boolean()),
                ("changed", boolean()),
                ("new_secret_in_place", boolean()),
                ("steps", json!({"type": "array", "items": step})),
                ("error", json!({"type": ["string", "null"]})),
            ],
            &["ok", "steps"],
            false,
        ),
    );
    add(
        "ClientCertificate",
        object(&[("client_cert", string())], &["client_cert"], false),
    );
    schemas
}
