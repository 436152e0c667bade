//! The route table: every route the server serves, once. The router
//! (`super::router`) and the OpenAPI document (`super::openapi`) are both
//! built from it, so they cannot disagree.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter, MethodRouter};
use jms_core::model::{Asset, CommandFilter, Grant, User, UserGroup};

use super::audit::{self, AuditQuery};
use super::nodes_accounts as na;
use super::resources as res;
use super::{fleet, jobs, live, sync, system, AppState};
use crate::selfservice::api as selfservice;
use crate::store::Scope;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// Anyone (the OpenAPI document).
    Public,
    /// A bearer token whose role is at least the route's [`Route::role`].
    Token,
    /// A request signed by an enrolled bastion's key (sync API).
    Bastion,
}

/// The query parameters a route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryParams {
    None,
    /// `limit`, `offset`, `q`.
    Page,
    /// `with_secrets`.
    Export,
    /// `dry_run`.
    Apply,
    /// `since`, `transport` (the sync bundle).
    Since,
    /// `wait` and the bastion's report (the control poll).
    Control,
    /// The audit routes' filters (`super::audit::query_parameters`).
    Audit(AuditQuery),
}

/// One route: what the OpenAPI document says about it, and its handler.
pub struct Route {
    pub method: Method,
    /// OpenAPI/axum path syntax: `/api/v1/users/{username}`.
    pub path: &'static str,
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub tag: &'static str,
    pub auth: Auth,
    /// The least role a token (or web admin) needs ([`Auth::Token`]
    /// routes): reads `auditor`, policy writes `operator`, settings,
    /// tokens and bastions `admin`.
    pub role: Scope,
    pub query: QueryParams,
    /// Schema name of the JSON body.
    pub body: Option<&'static str>,
    /// Success status.
    pub status: u16,
    /// Schema name of the success body.
    pub response: Option<&'static str>,
    /// The success body is binary (`application/octet-stream`).
    pub binary: bool,
    pub(crate) handler: MethodRouter<AppState>,
}

fn route<H, T>(method: Method, path: &'static str, handler: H) -> Route
where
    H: Handler<T, AppState>,
    T: 'static,
{
    let filter = MethodFilter::try_from(method.clone()).expect("a standard method");
    Route {
        method: method.clone(),
        path,
        operation_id: "",
        summary: "",
        tag: "",
        auth: Auth::Token,
        role: if matches!(method, Method::GET | Method::HEAD) {
            Scope::Auditor
        } else {
            Scope::Operator
        },
        query: QueryParams::None,
        body: None,
        status: 200,
        response: None,
        binary: false,
        handler: on(filter, handler),
    }
}

impl Route {
    fn doc(mut self, operation_id: &'static str, tag: &'static str, summary: &'static str) -> Self {
        self.operation_id = operation_id;
        self.tag = tag;
        self.summary = summary;
        self
    }
    fn query(mut self, query: QueryParams) -> Self {
        self.query = query;
        self
    }
    fn body(mut self, schema: &'static str) -> Self {
        self.body = Some(schema);
        self
    }
    fn returns(mut self, status: u16, schema: Option<&'static str>) -> Self {
        self.status = status;
        self.response = schema;
        self
    }
    fn role(mut self, role: Scope) -> Self {
        self.role = role;
        self
    }
    fn public(mut self) -> Self {
        self.auth = Auth::Public;
        self
    }
    fn signed(mut self) -> Self {
        self.auth = Auth::Bastion;
        self
    }
    fn binary(mut self) -> Self {
        self.binary = true;
        self
    }
}

/// The least role a token or web admin needs for `method path` (`path`
/// as written in the table: `/api/v1/users/{username}`); `None` for a
/// route that is not in the table or takes no bearer token. The web
/// console asks this before it calls the same handler, so both refuse
/// alike.
pub fn role_of(method: &Method, path: &str) -> Option<Scope> {
    static ROLES: std::sync::OnceLock<Vec<(Method, &'static str, Scope)>> =
        std::sync::OnceLock::new();
    ROLES
        .get_or_init(|| {
            table()
                .into_iter()
                .filter(|r| r.auth == Auth::Token)
                .map(|r| (r.method, r.path, r.role))
                .collect()
        })
        .iter()
        .find(|(m, p, _)| m == method && *p == path)
        .map(|(_, _, role)| *role)
}

/// Every route.
pub fn table() -> Vec<Route> {
    use Method as M;
    use QueryParams::{Apply, Export, Page, Since};
    vec![
        route(M::GET, "/api/openapi.json", super::openapi_json)
            .doc("getOpenApi", "meta", "This document")
            .public()
            .returns(200, Some("OpenApiDocument")),
        // users
        route(M::GET, "/api/v1/users", res::list::<User>)
            .doc("listUsers", "users", "List users")
            .query(Page)
            .returns(200, Some("UserPage")),
        route(M::POST, "/api/v1/users", selfservice::create_user)
            .doc(
                "createUser",
                "users",
                "Create a user (policy-file form; she gets a uid; with an email and no password she is mailed a set-password link, see password_link)",
            )
            .body("User")
            .returns(201, Some("UserView")),
        route(M::GET, "/api/v1/users/{username}", res::get::<User>)
            .doc("getUser", "users", "Read a user")
            .returns(200, Some("UserView")),
        route(M::PATCH, "/api/v1/users/{username}", res::patch::<User>)
            .doc("patchUser", "users", "Change a user (JSON merge patch)")
            .body("UserPatch")
            .returns(200, Some("UserView")),
        route(M::DELETE, "/api/v1/users/{username}", res::delete::<User>)
            .doc(
                "deleteUser",
                "users",
                "Delete a user (her uid is never reused)",
            )
            .returns(204, None),
        route(
            M::POST,
            "/api/v1/users/{username}/password-link",
            selfservice::send_password_link,
        )
        .doc(
            "sendPasswordLink",
            "users",
            "Mail the user a new one-time set-password link (her older links stop working)",
        )
        .returns(200, Some("PasswordLinkSent")),
        route(M::POST, "/api/v1/users/{username}/unlock", live::unlock)
            .doc(
                "unlockUser",
                "users",
                "Lift her lockout after failed logins: the web portal forgets her failures at once, every enrolled bastion at its next control poll (within seconds); answers the bastions ordered",
            )
            .returns(200, Some("Unlocked")),
        // user groups
        route(M::GET, "/api/v1/groups", res::list::<UserGroup>)
            .doc("listGroups", "groups", "List user groups")
            .query(Page)
            .returns(200, Some("GroupPage")),
        route(M::POST, "/api/v1/groups", res::create::<UserGroup>)
            .doc(
                "createGroup",
                "groups",
                "Create a user group (it gets a gid)",
            )
            .body("UserGroup")
            .returns(201, Some("GroupView")),
        route(M::GET, "/api/v1/groups/{name}", res::get::<UserGroup>)
            .doc("getGroup", "groups", "Read a user group and its members")
            .returns(200, Some("GroupView")),
        route(M::PATCH, "/api/v1/groups/{name}", res::patch::<UserGroup>)
            .doc(
                "patchGroup",
                "groups",
                "Change a user group (JSON merge patch)",
            )
            .body("GroupPatch")
            .returns(200, Some("GroupView")),
        route(M::DELETE, "/api/v1/groups/{name}", res::delete::<UserGroup>)
            .doc(
                "deleteGroup",
                "groups",
                "Delete a user group (and its memberships)",
            )
            .returns(204, None),
        // nodes
        route(M::GET, "/api/v1/nodes", na::list_nodes)
            .doc("listNodes", "nodes", "List declared nodes")
            .query(Page)
            .returns(200, Some("NodePage")),
        route(M::POST, "/api/v1/nodes", na::create_node)
            .doc(
                "createNode",
                "nodes",
                "Declare a node (its parents are implied)",
            )
            .body("NewNode")
            .returns(201, Some("NodeView")),
        route(M::GET, "/api/v1/nodes/{id}", na::get_node)
            .doc("getNode", "nodes", "Read a node")
            .returns(200, Some("NodeView")),
        route(M::PATCH, "/api/v1/nodes/{id}", na::patch_node)
            .doc(
                "patchNode",
                "nodes",
                "Rename or move a node and everything under it; the assets, grants and filters naming them follow",
            )
            .body("NewNode")
            .returns(200, Some("NodeView")),
        route(M::DELETE, "/api/v1/nodes/{id}", na::delete_node)
            .doc("deleteNode", "nodes", "Delete a node")
            .returns(204, None),
        // assets
        route(M::GET, "/api/v1/assets", res::list::<Asset>)
            .doc("listAssets", "assets", "List assets with their accounts")
            .query(Page)
            .returns(200, Some("AssetPage")),
        route(M::POST, "/api/v1/assets", res::create::<Asset>)
            .doc(
                "createAsset",
                "assets",
                "Create an asset (accounts may come with it)",
            )
            .body("Asset")
            .returns(201, Some("AssetView")),
        route(M::GET, "/api/v1/assets/{asset}", res::get::<Asset>)
            .doc("getAsset", "assets", "Read an asset")
            .returns(200, Some("AssetView")),
        route(M::PATCH, "/api/v1/assets/{asset}", res::patch::<Asset>)
            .doc(
                "patchAsset",
                "assets",
                "Change an asset (JSON merge patch; not its accounts)",
            )
            .body("AssetPatch")
            .returns(200, Some("AssetView")),
        route(M::DELETE, "/api/v1/assets/{asset}", res::delete::<Asset>)
            .doc("deleteAsset", "assets", "Delete an asset and its accounts")
            .returns(204, None),
        // account jobs
        route(M::POST, "/api/v1/jobs", jobs::create_job)
            .doc(
                "createJob",
                "jobs",
                "Start an account job (push, verify, rotate) on an online bastion; poll getJob for its result",
            )
            .body("NewJob")
            .returns(201, Some("Job")),
        route(M::GET, "/api/v1/jobs", jobs::list_jobs)
            .doc(
                "listJobs",
                "jobs",
                "Account jobs, newest first (q: an asset's name), with each step's output",
            )
            .query(Page)
            .returns(200, Some("JobList")),
        route(M::GET, "/api/v1/jobs/{job}", jobs::get_job)
            .doc(
                "getJob",
                "jobs",
                "One account job with each step's output and its bastions' audit events",
            )
            .returns(200, Some("JobDetail")),
        route(M::POST, "/api/v1/plans", jobs::create_plan)
            .doc(
                "createPlan",
                "jobs",
                "Schedule an account job kind (rotate, verify, push, discover) on a node, an asset or an account: every N days or on a cron expression (UTC)",
            )
            .body("NewPlan")
            .returns(201, Some("Plan")),
        route(M::GET, "/api/v1/plans", jobs::list_plans)
            .doc("listPlans", "jobs", "Scheduled plans, by name, with their next and last run")
            .returns(200, Some("PlanList")),
        route(M::GET, "/api/v1/plans/{plan}", jobs::get_plan)
            .doc("getPlan", "jobs", "One scheduled plan")
            .returns(200, Some("Plan")),
        route(M::DELETE, "/api/v1/plans/{plan}", jobs::delete_plan)
            .doc("deletePlan", "jobs", "Remove a scheduled plan (jobs it started run on)")
            .returns(204, None),
        route(M::POST, jms_sync::paths::JOB_ROUTE, jobs::report)
            .doc(
                "reportJob",
                "sync",
                "A bastion's report of an account job it ran (never a secret); a rotation's new secret is committed only on a verified report",
            )
            .signed()
            .body("JobReport")
            .returns(200, Some("Job")),
        // accounts
        route(M::GET, "/api/v1/accounts", na::list_all_accounts)
            .doc(
                "listAllAccounts",
                "accounts",
                "List the accounts of every asset",
            )
            .query(Page)
            .returns(200, Some("AccountPage")),
        route(M::GET, "/api/v1/assets/{asset}/accounts", na::list_accounts)
            .doc("listAccounts", "accounts", "List an asset's accounts")
            .query(Page)
            .returns(200, Some("AccountPage")),
        route(
            M::POST,
            "/api/v1/assets/{asset}/accounts",
            na::create_account,
        )
        .doc(
            "createAccount",
            "accounts",
            "Add an account (its secret is write-only)",
        )
        .body("Account")
        .returns(201, Some("AccountView")),
        route(
            M::GET,
            "/api/v1/assets/{asset}/accounts/{account}",
            na::get_account,
        )
        .doc(
            "getAccount",
            "accounts",
            "Read an account (never its secret)",
        )
        .returns(200, Some("AccountView")),
        route(
            M::PATCH,
            "/api/v1/assets/{asset}/accounts/{account}",
            na::patch_account,
        )
        .doc(
            "patchAccount",
            "accounts",
            "Change an account (JSON merge patch)",
        )
        .body("AccountPatch")
        .returns(200, Some("AccountView")),
        route(
            M::DELETE,
            "/api/v1/assets/{asset}/accounts/{account}",
            na::delete_account,
        )
        .doc("deleteAccount", "accounts", "Delete an account")
        .returns(204, None),
        // grants
        route(M::GET, "/api/v1/grants", res::list::<Grant>)
            .doc("listGrants", "grants", "List grants")
            .query(Page)
            .returns(200, Some("GrantPage")),
        route(M::POST, "/api/v1/grants", res::create::<Grant>)
            .doc(
                "createGrant",
                "grants",
                "Create a grant (date_start defaults to now)",
            )
            .body("Grant")
            .returns(201, Some("GrantView")),
        route(M::GET, "/api/v1/grants/{name}", res::get::<Grant>)
            .doc("getGrant", "grants", "Read a grant")
            .returns(200, Some("GrantView")),
        route(M::PATCH, "/api/v1/grants/{name}", res::patch::<Grant>)
            .doc("patchGrant", "grants", "Change a grant (JSON merge patch)")
            .body("GrantPatch")
            .returns(200, Some("GrantView")),
        route(M::DELETE, "/api/v1/grants/{name}", res::delete::<Grant>)
            .doc("deleteGrant", "grants", "Delete a grant")
            .returns(204, None),
        // command filters
        route(M::GET, "/api/v1/filters", res::list::<CommandFilter>)
            .doc("listFilters", "filters", "List command filters")
            .query(Page)
            .returns(200, Some("FilterPage")),
        route(M::POST, "/api/v1/filters", res::create::<CommandFilter>)
            .doc("createFilter", "filters", "Create a command filter")
            .body("CommandFilter")
            .returns(201, Some("FilterView")),
        route(M::GET, "/api/v1/filters/{name}", res::get::<CommandFilter>)
            .doc("getFilter", "filters", "Read a command filter")
            .returns(200, Some("FilterView")),
        route(
            M::PATCH,
            "/api/v1/filters/{name}",
            res::patch::<CommandFilter>,
        )
        .doc(
            "patchFilter",
            "filters",
            "Change a command filter (JSON merge patch)",
        )
        .body("FilterPatch")
        .returns(200, Some("FilterView")),
        route(
            M::DELETE,
            "/api/v1/filters/{name}",
            res::delete::<CommandFilter>,
        )
        .doc("deleteFilter", "filters", "Delete a command filter")
        .returns(204, None),
        // settings
        route(M::GET, "/api/v1/settings", system::get_settings)
            .doc("getSettings", "settings", "Read the system settings")
            .returns(200, Some("SettingsView")),
        route(M::PUT, "/api/v1/settings", system::put_settings)
            .doc(
                "putSettings",
                "settings",
                "Replace the system settings (absent fields: defaults)",
            )
            .body("Settings")
            .role(Scope::Admin)
        .returns(200, Some("SettingsView")),
        route(M::PATCH, "/api/v1/settings", system::patch_settings)
            .doc(
                "patchSettings",
                "settings",
                "Change system settings (JSON merge patch)",
            )
            .body("Settings")
            .role(Scope::Admin)
        .returns(200, Some("SettingsView")),
        route(
            M::POST,
            "/api/v1/settings/mail/test",
            selfservice::test_mail,
        )
        .doc(
            "testMail",
            "settings",
            "Send a test message with the mail settings (502 names the SMTP step that failed)",
        )
        .body("MailTest")
        .role(Scope::Admin)
        .returns(200, Some("MailSent")),
        // operation log
        route(M::GET, "/api/v1/oplog", system::list_oplog)
            .doc("listOpLog", "oplog", "The operation log, newest first")
            .query(Page)
            .returns(200, Some("OpLogPage")),
        // the whole policy
        route(M::GET, "/api/v1/policy", system::export_policy)
            .doc(
                "exportPolicy",
                "policy",
                "The whole policy (secrets only with with_secrets, admin)",
            )
            .query(Export)
            .returns(200, Some("PolicyDocument")),
        route(M::PUT, "/api/v1/policy", system::apply_policy)
            .doc(
                "applyPolicy",
                "policy",
                "Make the policy equal to this document (dry_run: only diff)",
            )
            .query(Apply)
            .body("PolicyDocument")
            .returns(200, Some("Applied")),
        route(M::GET, "/api/v1/policy/version", system::policy_version)
            .doc("getPolicyVersion", "policy", "The global policy version")
            .returns(200, Some("Version")),
        // bastions and the sync API
        route(M::POST, "/api/v1/bastions/tokens", sync::create_enroll_token)
            .doc(
                "createEnrollToken",
                "bastions",
                "Create a one-time bastion enrollment token (shown once)",
            )
            .body("NewEnrollToken")
            .role(Scope::Admin)
        .returns(201, Some("EnrollToken")),
        route(M::GET, "/api/v1/bastions", fleet::list)
            .doc(
                "listBastions",
                "bastions",
                "The enrolled bastions: status (online, silent past the alarm threshold, revoked), address, last sync, policy version held and how far behind, open sessions, spool backlog, jms-agentd version",
            )
            .returns(200, Some("BastionList")),
        route(M::GET, "/api/v1/bastions/{name}", fleet::get)
            .doc("getBastion", "bastions", "One enrolled bastion")
            .returns(200, Some("Bastion")),
        route(M::POST, "/api/v1/bastions/{name}/revoke", fleet::revoke)
            .doc(
                "revokeBastion",
                "bastions",
                "Revoke a bastion: its key is refused from now on for every sync request (its uploaded audit stays); only a token made with --replace NAME enrolls it again (409 when already revoked)",
            )
            .role(Scope::Admin)
            .returns(200, Some("Bastion")),
        route(M::PUT, "/api/v1/bastions/{name}/zone", fleet::set_zone)
            .doc(
                "setBastionZone",
                "bastions",
                "Put a bastion in a zone (null: in none): it then runs the account jobs of that zone's assets, and of assets with no zone; a bastion in no zone runs only jobs of assets with no zone",
            )
            .body("BastionZone")
            .role(Scope::Admin)
            .returns(200, Some("Bastion")),
        route(M::POST, jms_sync::paths::ENROLL, sync::enroll)
            .doc(
                "enrollBastion",
                "sync",
                "Register a bastion's public key with a one-time token",
            )
            .public()
            .body("EnrollRequest")
            .returns(200, Some("Enrolled")),
        route(M::GET, jms_sync::paths::BUNDLE, sync::bundle)
            .doc(
                "getBundle",
                "sync",
                "The signed policy bundle, sealed to the request's transport key (304 when current)",
            )
            .signed()
            .query(Since)
            .binary()
            .returns(200, Some("SealedBundle")),
        route(M::POST, jms_sync::paths::CERTIFICATE, sync::renew_certificate)
            .doc(
                "renewCertificate",
                "sync",
                "A new client certificate for the bastion's key (over TLS, with the current one)",
            )
            .signed()
            .returns(200, Some("ClientCertificate")),
        route(M::POST, jms_sync::paths::EVENTS, sync::events)
            .doc(
                "uploadEvents",
                "sync",
                "Store audit events, each once per idempotency key",
            )
            .signed()
            .body("EventBatch")
            .returns(200, Some("EventsAccepted")),
        route(
            M::GET,
            jms_sync::paths::RECORDING_ROUTE,
            audit::upload_state,
        )
        .doc(
            "getRecordingUpload",
            "sync",
            "Where a recording's upload stands: the offset to resume at",
        )
        .signed()
        .returns(200, Some("RecordingUpload")),
        route(
            M::PUT,
            jms_sync::paths::RECORDING_ROUTE,
            audit::upload_chunk,
        )
        .doc(
            "uploadRecordingChunk",
            "sync",
            "Append a chunk (at most 1 MiB) at the current offset (409 with the offset otherwise)",
        )
        .signed()
        .query(QueryParams::Audit(AuditQuery::Chunk))
        .body("RecordingChunk")
        .returns(200, Some("ChunkAccepted")),
        route(
            M::POST,
            jms_sync::paths::RECORDING_COMPLETE_ROUTE,
            audit::complete_upload,
        )
        .doc(
            "completeRecording",
            "sync",
            "Check the whole recording against its size and SHA-256 (422 discards it)",
        )
        .signed()
        .body("CompleteRecording")
        .returns(200, Some("RecordingUpload")),
        // the audit trail
        route(M::GET, "/api/v1/sessions", audit::list_sessions)
            .doc(
                "listSessions",
                "audit",
                "Sessions, newest first (filters: user, asset, account, since, until, online)",
            )
            .query(QueryParams::Audit(AuditQuery::Sessions))
            .returns(200, Some("SessionPage")),
        route(M::GET, "/api/v1/sessions/{session}", audit::get_session)
            .doc(
                "getSession",
                "audit",
                "A session with its commands, transfers and recording",
            )
            .returns(200, Some("SessionDetail")),
        route(
            M::GET,
            "/api/v1/sessions/{session}/recording",
            audit::get_recording,
        )
        .doc(
            "getSessionRecording",
            "audit",
            "The session's recording (asciicast v2); 404 when none is complete",
        )
        .binary()
        .returns(200, Some("Asciicast")),
        route(M::POST, "/api/v1/sessions/{session}/kill", live::kill)
            .doc(
                "killSession",
                "audit",
                "Terminate a running session (optional {\"reason\"}); its bastion ends it at once (409 when it is over)",
            )
            .returns(202, None),
        route(M::GET, "/api/v1/sessions/{session}/live", live::watch)
            .doc(
                "watchSession",
                "audit",
                "Watch a running session: Server-Sent Events of its output (asciicast-style), an `end` event when it is over",
            ),
        route(M::GET, jms_sync::paths::CONTROL, live::control)
            .doc(
                "getControl",
                "sync",
                "A bastion's live-session orders (kill, watch), held up to `wait` seconds until one comes; the query carries the bastion's report (agent, sessions, backlog)",
            )
            .signed()
            .query(QueryParams::Control),
        route(M::POST, jms_sync::paths::LIVE_ROUTE, live::push)
            .doc(
                "pushLive",
                "sync",
                "A batch of a watched session's output; answers whether anyone still watches",
            )
            .signed(),
        route(M::GET, "/api/v1/commands", audit::list_commands)
            .doc(
                "listCommands",
                "audit",
                "Commands, newest first (filters: user, asset, session, q, decision, since, until)",
            )
            .query(QueryParams::Audit(AuditQuery::Commands))
            .returns(200, Some("CommandPage")),
        route(M::GET, "/api/v1/transfers", audit::list_transfers)
            .doc(
                "listTransfers",
                "audit",
                "File transfers, newest first (filters: user, asset, session, operation, since, until)",
            )
            .query(QueryParams::Audit(AuditQuery::Transfers))
            .returns(200, Some("TransferPage")),
    ]
}
