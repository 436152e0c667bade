//! The engineers' portal service ([`Portal`]): engineers' logins (password, TOTP where enrolled or
//! required, the bastion's account rules, lockout), their login sessions,
//! and the compiled policy the portal evaluates grants with.
//!
//! - A login applies the bastion's rules, each from its one definition:
//!   the password and the TOTP code ([`jms_core::password`]), a second
//!   factor when `security.mfa_required` asks for one
//!   ([`MfaRequired::missing_second_factor`]), the account checks
//!   (disabled, expired, source networks, time windows:
//!   [`jms_core::login::check_login`], with the browser's address) and the
//!   lockout counter ([`FailureRecord`] under `security.lockout_threshold`
//!   and `lockout_duration`). Every outcome but "code needed" goes to the
//!   login audit ([`AuditService::record_portal_login`]).
//! - Failures, locks and the last TOTP step used live in this process's
//!   memory (a restart forgets them), told to the other instances on the
//!   bus; the admins' unlock lifts the portal's lock too.
//! - A session is a random token in a cookie; the store keeps only its
//!   SHA-256 (`portal_sessions`), so any instance on the same database
//!   serves her and a restart keeps her signed in. Every request checks
//!   it again, with the account rules: a user disabled, expired, or now
//!   outside her networks or hours is out at her next click.
//! - [`sftp`]: the file manager's SFTP sessions on bastions.
//!
//! The web side is [`crate::portal`].

pub mod sftp;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jms_core::login::{check_login, FailureRecord, LockoutPolicy};
use jms_core::model::User;
use jms_core::password::{verify_password, verify_totp};
use jms_core::Policy;

use crate::audit::AuditService;
use crate::error::{AdminError, Result};
use crate::policy::PolicyService;
use crate::settings::MfaRequired;
use crate::store::{PortalSessionLimits, Store};

/// Longest a portal login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// A portal session unused this long ends.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// Portal sessions kept at most (then the least recently used go).
pub const MAX_SESSIONS: u64 = 10_000;
/// Portal sessions one engineer may hold at once (then her oldest goes).
pub const MAX_SESSIONS_PER_USER: u64 = 32;
/// A live session is marked used at most this often (a write).
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// A signed-in engineer, as the portal's pages see her.
#[derive(Debug, Clone)]
pub struct Engineer {
    pub username: String,
    /// The browser's address (the TCP peer the server saw).
    pub client: Option<IpAddr>,
}

/// What a login attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Logged in: the cookie value (only its SHA-256 is kept).
    Success { token: String },
    /// The password was right; her TOTP code is needed.
    NeedCode,
    /// Wrong name, password or code (one answer for all three).
    Wrong,
    /// Locked after failed attempts, until this Unix time.
    Locked { until: i64 },
    /// Right secrets, but she may not log in: the reason (the bastion's
    /// words).
    Denied(String),
}

#[derive(Default)]
struct State {
    failures: HashMap<String, FailureRecord>,
    totp_steps: HashMap<String, i64>,
}

/// The engineers' portal service.
pub struct Portal {
    policy: Arc<PolicyService>,
    audit: Arc<AuditService>,
    /// The login sessions.
    store: Store,
    state: Mutex<State>,
    /// The compiled policy, by policy version.
    compiled: Mutex<Option<(u64, Arc<Policy>)>>,
    /// The zone of the users' login time windows (the bastions'
    /// `timezone`): `--timezone` of jms-server.
    timezone: Mutex<chrono_tz::Tz>,
    /// The file manager's SFTP sessions.
    pub files: sftp::FileSessions,
    /// The other instances on the same database (PostgreSQL): lockouts
    /// and used TOTP steps are told to them.
    bus: Mutex<Option<Arc<crate::bus::Bus>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Portal {
    pub fn new(policy: Arc<PolicyService>, audit: Arc<AuditService>, store: Store) -> Portal {
        Portal {
            policy,
            audit,
            store,
            state: Mutex::new(State::default()),
            compiled: Mutex::new(None),
            timezone: Mutex::new(chrono_tz::UTC),
            files: sftp::FileSessions::default(),
            bus: Mutex::new(None),
        }
    }

    /// Tells login outcomes to the other instances on `bus` (the caller
    /// subscribes [`Self::remote`] to it).
    pub fn set_bus(&self, bus: Arc<crate::bus::Bus>) {
        *lock(&self.bus) = Some(bus);
    }

    fn publish(&self, signal: crate::bus::Signal) {
        if let Some(bus) = lock(&self.bus).as_ref() {
            bus.publish(signal);
        }
    }

    /// What another instance said about a portal login or unlock: counted
    /// here as if it happened here.
    pub fn remote(&self, signal: &crate::bus::Signal) {
        use crate::bus::Signal;
        match signal {
            Signal::PortalLoginFailed { name, at } => {
                let lockout = self
                    .lockout_policy()
                    .map(|(lockout, _, _)| lockout)
                    .unwrap_or_default();
                let mut state = lock(&self.state);
                let _ = state
                    .failures
                    .entry(name.clone())
                    .or_default()
                    .record_failure(&lockout, *at);
            }
            Signal::PortalLoginSucceeded { name, totp_step } => {
                let mut state = lock(&self.state);
                state.failures.remove(name);
                if let Some(step) = totp_step {
                    let last = state.totp_steps.entry(name.clone()).or_insert(*step);
                    *last = (*last).max(*step);
                }
            }
            Signal::PortalUnlocked { name } => {
                lock(&self.state).failures.remove(name);
            }
            Signal::PortalSignedOut { name } => self.close_files_if_gone(name),
            _ => {}
        }
    }

    /// Sets the zone the users' time windows are read in.
    pub fn set_timezone(&self, tz: chrono_tz::Tz) {
        *lock(&self.timezone) = tz;
    }

    fn timezone(&self) -> chrono_tz::Tz {
        *lock(&self.timezone)
    }

    /// The current policy as jms-core compiled it (recompiled when the
    /// policy version moved).
    pub fn compiled(&self) -> Result<Arc<Policy>> {
        let version = self.policy.version()?;
        let mut cached = lock(&self.compiled);
        if let Some((v, policy)) = cached.as_ref() {
            if *v == version {
                return Ok(policy.clone());
            }
        }
        let document = self.policy.document(false)?;
        let policy = Policy::from_document(document, "server", Path::new("/nonexistent"))
            .map_err(|e| AdminError::Invalid(crate::policy::policy_message(&e)))?;
        let policy = Arc::new(policy);
        *cached = Some((version, policy.clone()));
        Ok(policy)
    }

    fn lockout_policy(&self) -> Result<(LockoutPolicy, MfaRequired, Vec<String>)> {
        let (settings, _) = self.policy.settings()?;
        let s = settings.security;
        Ok((
            LockoutPolicy {
                max_failures: s.lockout_threshold,
                window: LockoutPolicy::default().window,
                lock_for: s.lockout_duration.0,
            },
            s.mfa_required,
            s.mfa_groups,
        ))
    }

    /// A login attempt (blocking: it reads the store and checks a
    /// password hash). Audited unless the answer is "code needed".
    pub fn login(
        &self,
        name: &str,
        password: &str,
        code: &str,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<LoginOutcome> {
        let rhost = client.map(|ip| ip.to_string());
        let outcome = self.check(name, password, code, client, now)?;
        let (audited, reason) = match &outcome {
            LoginOutcome::Success { .. } => ("success", None),
            LoginOutcome::NeedCode => return Ok(outcome),
            LoginOutcome::Wrong if self.known(name)? => {
                ("failure", Some("wrong password or code".to_string()))
            }
            LoginOutcome::Wrong => ("unknown_user", None),
            LoginOutcome::Locked { until } => (
                "denied",
                Some(format!("account locked until {}", rfc3339(*until))),
            ),
            LoginOutcome::Denied(reason) => ("denied", Some(reason.clone())),
        };
        tracing::info!(
            event = "portal_login",
            user = name,
            rhost = rhost.as_deref().unwrap_or("-"),
            outcome = audited,
            reason = reason.as_deref().unwrap_or("")
        );
        self.audit
            .record_portal_login(name, rhost.as_deref(), audited, reason.as_deref())?;
        Ok(outcome)
    }

    fn known(&self, name: &str) -> Result<bool> {
        Ok(self.policy.read()?.user(name)?.is_some())
    }

    fn check(
        &self,
        name: &str,
        password: &str,
        code: &str,
        client: Option<IpAddr>,
        now: DateTime<Utc>,
    ) -> Result<LoginOutcome> {
        let unix = now.timestamp();
        let row = self.policy.read()?.user(name)?;
        let Some(row) = row else {
            let _ = verify_password(password.as_bytes(), decoy_hash());
            return Ok(LoginOutcome::Wrong);
        };
        let user: User = self.policy.open_user_row(row, true)?;
        let name = user.username.as_str();
        let last_step = {
            let state = lock(&self.state);
            if let Some(until) = state.failures.get(name).and_then(|r| r.is_locked(unix)) {
                return Ok(LoginOutcome::Locked { until });
            }
            state.totp_steps.get(name).copied()
        };
        let (lockout, mfa, mfa_groups) = self.lockout_policy()?;
        let Some(hash) = &user.password_hash else {
            return Ok(LoginOutcome::Denied(
                "no password is set for this user".into(),
            ));
        };
        let password_ok = verify_password(password.as_bytes(), hash.expose()).unwrap_or(false);
        if password_ok {
            if let Some(reason) = mfa.missing_second_factor(&mfa_groups, &user) {
                return Ok(LoginOutcome::Denied(reason));
            }
        }
        let code = code.trim();
        if password_ok && user.totp_secret.is_some() && code.is_empty() {
            // Asked only now, so a wrong password never reveals TOTP.
            return Ok(LoginOutcome::NeedCode);
        }
        // Some(None): no TOTP needed; Some(Some(step)): the code matched.
        let totp_step = match &user.totp_secret {
            None => Some(None),
            Some(secret) => verify_totp(secret.expose(), code, unix, last_step)
                .ok()
                .flatten()
                .map(Some),
        };
        let mut state = lock(&self.state);
        let replayed = matches!(totp_step, Some(Some(step))
            if state.totp_steps.get(name).is_some_and(|last| *last >= step));
        match totp_step {
            Some(step) if password_ok && !replayed => {
                if let Some(step) = step {
                    state.totp_steps.insert(name.to_string(), step);
                }
                state.failures.remove(name);
                self.publish(crate::bus::Signal::PortalLoginSucceeded {
                    name: name.to_string(),
                    totp_step: step,
                });
            }
            _ => {
                let record = state.failures.entry(name.to_string()).or_default();
                if let Some(until) = record.record_failure(&lockout, unix) {
                    tracing::warn!(
                        event = "lockout",
                        user = name,
                        until = rfc3339(until),
                        "portal: account locked after repeated failures"
                    );
                }
                self.publish(crate::bus::Signal::PortalLoginFailed {
                    name: name.to_string(),
                    at: unix,
                });
                return Ok(LoginOutcome::Wrong);
            }
        }
        drop(state);
        if let Err(denied) = check_login(&user, client, now, self.timezone()) {
            return Ok(LoginOutcome::Denied(denied.to_string()));
        }
        let token = crate::crypto::new_token();
        self.add_session(name, &token, now)?;
        Ok(LoginOutcome::Success { token })
    }

    fn add_session(&self, name: &str, token: &str, now: DateTime<Utc>) -> Result<()> {
        let mut tx = self.store.write()?;
        tx.insert_portal_session(
            &crate::crypto::token_hash(token),
            name,
            now + chrono::Duration::from_std(SESSION_LIFETIME).expect("fits"),
            PortalSessionLimits {
                idle_since: idle_since(now),
                per_user: MAX_SESSIONS_PER_USER,
                total: MAX_SESSIONS,
            },
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The engineer a session token belongs to, if the session is live and
    /// she may still log in (from `client`, now). A dead session is
    /// forgotten; a live one is marked used (at most once a minute).
    pub fn engineer(&self, token: &str, client: Option<IpAddr>) -> Result<Option<Engineer>> {
        let hash = crate::crypto::token_hash(token);
        let at = Utc::now();
        let Some(session) = self.store.read()?.portal_session(&hash)? else {
            return Ok(None);
        };
        let username = session.username;
        if at >= session.expires_at || session.last_seen_at < idle_since(at) {
            self.end_session(&hash)?;
            return Ok(None);
        }
        let policy = self.compiled()?;
        let allowed = policy
            .user(&username)
            .is_some_and(|user| check_login(user, client, at, self.timezone()).is_ok())
            && self.locked_until(&username, at.timestamp()).is_none();
        if !allowed {
            tracing::info!(
                user = username,
                "portal session ended: she may no longer log in"
            );
            self.end_session(&hash)?;
            self.files.close_user(&username);
            return Ok(None);
        }
        if at - session.last_seen_at > chrono::Duration::from_std(TOUCH_EVERY).expect("fits") {
            let mut tx = self.store.write()?;
            tx.touch_portal_session(&hash)?;
            tx.commit()?;
        }
        Ok(Some(Engineer { username, client }))
    }

    fn locked_until(&self, name: &str, now: i64) -> Option<i64> {
        lock(&self.state)
            .failures
            .get(name)
            .and_then(|r| r.is_locked(now))
    }

    /// Deletes the session with token hash `hash`; its engineer's file
    /// manager's SFTP sessions close with her last portal session, here
    /// and (told on the bus) on the other instances.
    fn end_session(&self, hash: &[u8]) -> Result<()> {
        let mut tx = self.store.write()?;
        let ended = tx.delete_portal_session(hash)?;
        tx.commit()?;
        if let Some(name) = ended {
            self.close_files_if_gone(&name);
            self.publish(crate::bus::Signal::PortalSignedOut { name });
        }
        Ok(())
    }

    /// Closes `name`'s SFTP sessions here when she holds no live portal
    /// session any more.
    fn close_files_if_gone(&self, name: &str) {
        let now = Utc::now();
        let live = self
            .store
            .read()
            .and_then(|tx| tx.live_portal_sessions(name, now, idle_since(now)));
        match live {
            Ok(0) => self.files.close_user(name),
            Ok(_) => {}
            Err(e) => tracing::warn!(user = name, error = %e, "portal: sessions not counted"),
        }
    }

    /// Ends a session (logout), on every instance.
    pub fn logout(&self, token: &str) -> Result<()> {
        self.end_session(&crate::crypto::token_hash(token))
    }

    /// Lifts `name`'s portal lockout (the admins' unlock); true when there
    /// was something to lift.
    pub fn unlock(&self, name: &str) -> bool {
        self.publish(crate::bus::Signal::PortalUnlocked {
            name: name.to_string(),
        });
        lock(&self.state).failures.remove(name).is_some()
    }
}

/// Sessions last used before this are dead at `now`.
fn idle_since(now: DateTime<Utc>) -> DateTime<Utc> {
    now - chrono::Duration::from_std(SESSION_IDLE).expect("fits")
}

fn rfc3339(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| unix.to_string())
}

/// A hash checked for unknown names, so they take as long as known ones.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        jms_core::password::hash_password("decoy password", jms_core::password::DEFAULT_ITERATIONS)
            .unwrap_or_else(|_| "pbkdf2_sha256$1$decoy$".to_string())
    })
}
