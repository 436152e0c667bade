//! The audit web's admins: who may log in to `/web/` (password + TOTP), and
//! their login sessions.
//!
//! A web admin has a Django `pbkdf2_sha256$…` password hash and a TOTP
//! secret, both sealed at rest with the server's key
//! (`web_admins.password_hash:<name>`, `web_admins.totp_secret:<name>`).
//! They are managed on the server's data directory with `jmsctl admin
//! add|list|remove`, never through the API, so an API token alone cannot
//! mint a web login. A login checks both factors, refuses a TOTP code used
//! before, and stores only the SHA-256 of the session token it hands out.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use jms_core::password::{
    generate_totp_secret, hash_password, verify_password, verify_totp, DEFAULT_ITERATIONS,
};

use crate::crypto::{self, SealKey};
use crate::error::{AdminError, Result};
use crate::store::{NewOpLogEntry, Scope, Store, WebAdminRow};

/// The web admins service: their accounts and roles, their secrets sealed
/// with the server's key, their login sessions.
pub struct WebAdmins {
    store: Store,
    key: Arc<SealKey>,
}

impl WebAdmins {
    pub fn new(store: Store, key: Arc<SealKey>) -> WebAdmins {
        WebAdmins { store, key }
    }
}

/// Fewest characters in a web admin's password.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Longest accepted password (bounds PBKDF2's input).
const MAX_PASSWORD_CHARS: usize = 1024;
/// Longest web admin name.
const MAX_NAME_CHARS: usize = 64;
/// Issuer shown by authenticator apps.
const TOTP_ISSUER: &str = "jms";

fn place_password_hash(username: &str) -> String {
    format!("web_admins.password_hash:{username}")
}

fn place_totp(username: &str) -> String {
    format!("web_admins.totp_secret:{username}")
}

/// What `add` hands back once: the TOTP secret to enroll.
#[derive(Debug)]
pub struct Enrollment {
    /// Base32, for typing into an authenticator app.
    pub totp_secret: String,
    /// `otpauth://totp/…`, for a QR code.
    pub otpauth_uri: String,
}

/// A web admin as listed (no secrets).
#[derive(Debug, Clone)]
pub struct WebAdminInfo {
    pub username: String,
    pub role: Scope,
    pub created_at: DateTime<Utc>,
    pub last_login_at: Option<DateTime<Utc>>,
}

/// Checks a web admin name: 1–64 of `A-Z a-z 0-9 . _ @ -`, starting with a
/// letter or digit.
pub fn check_username(username: &str) -> std::result::Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-');
    match username.chars().next() {
        None => Err("empty admin name".to_string()),
        Some(first) if !first.is_ascii_alphanumeric() => Err(format!(
            "admin name `{username}` must start with a letter or digit"
        )),
        _ if username.chars().count() > MAX_NAME_CHARS => Err(format!(
            "admin name is longer than {MAX_NAME_CHARS} characters"
        )),
        _ if !username.chars().all(ok_char) => Err(format!(
            "admin name `{username}` may hold only letters, digits and . _ @ -"
        )),
        _ => Ok(()),
    }
}

/// Adds a web admin (role `admin`) with a fresh TOTP secret; `actor`
/// goes to the operation log. `iterations` is the PBKDF2 count of the new
/// hash.
pub fn add(
    admins: &WebAdmins,
    actor: &str,
    username: &str,
    password: &str,
    iterations: u32,
) -> Result<Enrollment> {
    add_with_role(admins, actor, username, password, iterations, Scope::Admin)
}

/// [`add`] with a role: an `auditor` only reads (no Terminate), an
/// `operator` may also end sessions.
pub fn add_with_role(
    admins: &WebAdmins,
    actor: &str,
    username: &str,
    password: &str,
    iterations: u32,
    role: Scope,
) -> Result<Enrollment> {
    check_username(username).map_err(AdminError::BadInput)?;
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(AdminError::BadInput(format!(
            "the password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(AdminError::BadInput(format!(
            "the password must have at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    let hash = hash_password(password, iterations)
        .map_err(|e| AdminError::BadInput(format!("cannot hash the password: {e}")))?;
    let secret = generate_totp_secret()
        .map_err(|e| AdminError::BadInput(format!("cannot make a TOTP secret: {e}")))?;
    let key = &admins.key;
    let sealed_hash = key.seal(&place_password_hash(username), hash.as_bytes());
    let sealed_secret = key.seal(&place_totp(username), secret.as_bytes());
    let mut tx = admins.store.write()?;
    if tx.web_admin(username)?.is_some() {
        return Err(AdminError::Conflict(format!(
            "web admin `{username}` already exists (remove it first to reset it)"
        )));
    }
    tx.insert_web_admin(username, &sealed_hash, &sealed_secret, role)?;
    let version = tx.policy_version()?;
    tx.append_oplog(&NewOpLogEntry {
        actor: actor.to_string(),
        action: "create".to_string(),
        kind: "web_admin".to_string(),
        name: username.to_string(),
        fields: vec!["role".to_string()],
        version,
    })?;
    tx.commit()?;
    tracing::info!(actor, username, "web admin created");
    Ok(Enrollment {
        otpauth_uri: otpauth_uri(username, &secret),
        totp_secret: secret,
    })
}

/// `otpauth://totp/jms:NAME?secret=…&issuer=jms&…` (Key Uri Format).
pub fn otpauth_uri(username: &str, secret: &str) -> String {
    // Names are `A-Za-z0-9._@-` (check_username): only `@` needs escaping.
    let label = username.replace('@', "%40");
    format!(
        "otpauth://totp/{TOTP_ISSUER}:{label}?secret={secret}&issuer={TOTP_ISSUER}\
         &algorithm=SHA1&digits=6&period=30"
    )
}

/// Every web admin, by name.
pub fn list(admins: &WebAdmins) -> Result<Vec<WebAdminInfo>> {
    Ok(admins
        .store
        .read()?
        .web_admins()?
        .into_iter()
        .map(|row| WebAdminInfo {
            role: row.role,
            username: row.username,
            created_at: row.created_at,
            last_login_at: row.last_login_at,
        })
        .collect())
}

/// Removes a web admin; her browser sessions end with her.
pub fn remove(admins: &WebAdmins, actor: &str, username: &str) -> Result<()> {
    let mut tx = admins.store.write()?;
    if !tx.delete_web_admin(username)? {
        return Err(AdminError::NotFound(format!(
            "no web admin `{username}` (jmsctl admin list)"
        )));
    }
    let version = tx.policy_version()?;
    tx.append_oplog(&NewOpLogEntry {
        actor: actor.to_string(),
        action: "delete".to_string(),
        kind: "web_admin".to_string(),
        name: username.to_string(),
        fields: Vec::new(),
        version,
    })?;
    tx.commit()?;
    tracing::info!(actor, username, "web admin removed");
    Ok(())
}

/// A hash to verify against when the name is unknown, so that an unknown
/// name costs the same PBKDF2 work as a known one.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| {
        hash_password("decoy password", DEFAULT_ITERATIONS)
            .unwrap_or_else(|_| format!("pbkdf2_sha256${DEFAULT_ITERATIONS}$decoy$"))
    })
}

/// A new login session.
#[derive(Debug)]
pub struct LoginSession {
    /// The cookie value (only its SHA-256 is stored).
    pub token: String,
    pub username: String,
}

/// Checks a login (both factors, always both) and on success opens a
/// session that lasts `lifetime`. `None`: refused, for whatever reason
/// (unknown name, wrong password, wrong or replayed code): the caller says
/// the same to everyone.
pub fn login(
    admins: &WebAdmins,
    username: &str,
    password: &str,
    code: &str,
    remote_addr: Option<&str>,
    now: DateTime<Utc>,
    lifetime: Duration,
) -> Result<Option<LoginSession>> {
    let row = admins.store.read()?.web_admin(username)?;
    let Some(row) = row else {
        let _ = verify_password(password.as_bytes(), decoy_hash());
        return Ok(None);
    };
    let Some(step) = check_factors(admins, &row, password, code, now)? else {
        return Ok(None);
    };
    let token = crypto::new_token();
    let mut tx = admins.store.write()?;
    // Another login may have used this code in the meantime.
    match tx.web_admin(username)? {
        Some(fresh) if fresh.id == row.id && fresh.totp_last_step.is_none_or(|s| s < step) => {}
        _ => return Ok(None),
    }
    tx.record_web_login(row.id, step)?;
    tx.delete_expired_web_sessions(now)?;
    tx.insert_web_session(
        &crypto::token_hash(&token),
        row.id,
        now + lifetime,
        remote_addr,
    )?;
    tx.commit()?;
    Ok(Some(LoginSession {
        token,
        username: row.username,
    }))
}

/// The TOTP step of a login whose password and code are both right.
fn check_factors(
    admins: &WebAdmins,
    row: &WebAdminRow,
    password: &str,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>> {
    let key = &admins.key;
    let hash = key.open_text(&place_password_hash(&row.username), &row.password_hash)?;
    let secret = key.open_text(&place_totp(&row.username), &row.totp_secret)?;
    let password_ok = match verify_password(password.as_bytes(), &hash) {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(username = row.username, error = %e, "unusable web admin password hash");
            false
        }
    };
    let step = match verify_totp(&secret, code, now.timestamp(), row.totp_last_step) {
        Ok(step) => step,
        Err(e) => {
            tracing::error!(username = row.username, error = %e, "unusable web admin TOTP secret");
            None
        }
    };
    Ok(step.filter(|_| password_ok))
}

/// The admin a session token belongs to, if the session is live: not past
/// its expiry, and used within `idle`. A dead session is forgotten; a live
/// one is marked used (at most once a minute).
pub fn session(
    admins: &WebAdmins,
    token: &str,
    now: DateTime<Utc>,
    idle: Duration,
) -> Result<Option<(String, Scope)>> {
    let hash = crypto::token_hash(token);
    let Some(row) = admins.store.read()?.web_session(&hash)? else {
        return Ok(None);
    };
    if now >= row.expires_at || now - row.last_seen_at > idle {
        let mut tx = admins.store.write()?;
        tx.delete_web_session(&hash)?;
        tx.commit()?;
        return Ok(None);
    }
    if now - row.last_seen_at > Duration::minutes(1) {
        let mut tx = admins.store.write()?;
        tx.touch_web_session(&hash)?;
        tx.commit()?;
    }
    Ok(Some((row.username, row.role)))
}

/// Ends the session of this token (logout); nothing if there is none.
pub fn logout(admins: &WebAdmins, token: &str) -> Result<()> {
    let mut tx = admins.store.write()?;
    tx.delete_web_session(&crypto::token_hash(token))?;
    tx.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_username("alice").is_ok());
        assert!(check_username("ops.bob@example-1").is_ok());
        assert!(check_username("").is_err());
        assert!(check_username("-x").is_err());
        assert!(check_username("a b").is_err());
        assert!(check_username("a/b").is_err());
        assert!(check_username(&"a".repeat(65)).is_err());
    }

    use jms_core::password::totp_code;

    fn server() -> (tempfile::TempDir, Arc<WebAdmins>) {
        let dir = tempfile::tempdir().unwrap();
        let admin = crate::services::Services::open(&dir.path().join("data"))
            .unwrap()
            .web_admins;
        (dir, admin)
    }

    const PASSWORD: &str = "twelve chars or more";

    fn code(secret: &str, at: DateTime<Utc>) -> String {
        format!("{:06}", totp_code(secret, at.timestamp()).unwrap())
    }

    #[test]
    fn a_login_needs_the_password_and_a_fresh_code() {
        let (_dir, admin) = server();
        let enrolled = add(&admin, "test", "alice", PASSWORD, 1000).unwrap();
        let secret = &enrolled.totp_secret;
        let now = Utc::now();
        let life = Duration::hours(12);
        let try_login = |password: &str, code: &str| {
            login(&admin, "alice", password, code, None, now, life).unwrap()
        };
        assert!(try_login("wrong password!", &code(secret, now)).is_none());
        let near: Vec<String> = [-30, 0, 30]
            .iter()
            .map(|d| code(secret, now + Duration::seconds(*d)))
            .collect();
        let wrong = (0..10u32)
            .map(|n| format!("{:06}", n * 111_111))
            .find(|c| !near.contains(c))
            .unwrap();
        assert!(try_login(PASSWORD, &wrong).is_none(), "a wrong code");
        let session = try_login(PASSWORD, &code(secret, now)).expect("logged in");
        assert_eq!(session.username, "alice");
        assert!(
            try_login(PASSWORD, &code(secret, now)).is_none(),
            "a code works once"
        );
        let unknown = login(
            &admin,
            "mallory",
            PASSWORD,
            &code(secret, now),
            None,
            now,
            life,
        );
        assert!(unknown.unwrap().is_none());

        let idle = Duration::minutes(30);
        let found = |at| session_of(&admin, &session.token, at, idle);
        assert_eq!(found(now).as_deref(), Some("alice"));
        assert_eq!(found(now + Duration::minutes(10)).as_deref(), Some("alice"));
        assert_eq!(session_of(&admin, "jms_forged", now, idle), None);
        logout(&admin, &session.token).unwrap();
        assert_eq!(found(now + Duration::minutes(11)), None, "logged out");
    }

    fn session_of(
        admin: &WebAdmins,
        token: &str,
        at: DateTime<Utc>,
        idle: Duration,
    ) -> Option<String> {
        session(admin, token, at, idle)
            .unwrap()
            .map(|(name, _)| name)
    }

    #[test]
    fn sessions_end_when_idle_expired_or_the_admin_is_removed() {
        let (_dir, admin) = server();
        let secret = add(&admin, "test", "bob", PASSWORD, 1000)
            .unwrap()
            .totp_secret;
        let now = Utc::now();
        let idle = Duration::minutes(30);
        let open = |at: DateTime<Utc>, life: Duration| {
            login(&admin, "bob", PASSWORD, &code(&secret, at), None, at, life)
                .unwrap()
                .expect("logged in")
                .token
        };
        let short = open(now - Duration::seconds(60), Duration::minutes(5));
        assert_eq!(
            session_of(&admin, &short, now + Duration::minutes(5), idle),
            None,
            "expired"
        );
        let long = open(now + Duration::seconds(30), Duration::hours(12));
        assert_eq!(
            session_of(&admin, &long, now + Duration::minutes(40), idle),
            None,
            "idle for 40 minutes"
        );
        let kept = open(now + Duration::seconds(60), Duration::hours(12));
        assert!(session_of(&admin, &kept, now + Duration::minutes(2), idle).is_some());
        remove(&admin, "test", "bob").unwrap();
        assert_eq!(
            session_of(&admin, &kept, now + Duration::minutes(3), idle),
            None
        );
        assert!(matches!(
            remove(&admin, "test", "bob"),
            Err(AdminError::NotFound(_))
        ));
    }

    #[test]
    fn bad_names_short_passwords_and_duplicates_are_refused() {
        let (_dir, admin) = server();
        assert!(matches!(
            add(&admin, "t", "-x", PASSWORD, 1000),
            Err(AdminError::BadInput(_))
        ));
        assert!(matches!(
            add(&admin, "t", "carol", "short", 1000),
            Err(AdminError::BadInput(_))
        ));
        add(&admin, "t", "carol", PASSWORD, 1000).unwrap();
        assert!(matches!(
            add(&admin, "t", "carol", PASSWORD, 1000),
            Err(AdminError::Conflict(_))
        ));
        let listed = list(&admin).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].username, "carol");
        assert!(listed[0].last_login_at.is_none());
    }

    #[test]
    fn the_otpauth_uri_names_issuer_and_secret() {
        assert_eq!(
            otpauth_uri("ops@corp", "ABC"),
            "otpauth://totp/jms:ops%40corp?secret=ABC&issuer=jms&algorithm=SHA1&digits=6&period=30"
        );
    }
}
