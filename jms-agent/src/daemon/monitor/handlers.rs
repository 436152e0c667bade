//! What each request does. The caller's uid was read with SO_PEERCRED by
//! the server; [`Daemon::handle`] checks it against the variant's rule
//! before anything else.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock};

use chrono::Utc;
use jms_core::login::{check_login, LoginDenied};
use jms_core::password::{verify_password, verify_totp};
use jms_core::Policy;
use jms_proto::{AccountResult, AuthResult, Request, Response};
use tracing::{info, warn};

use crate::daemon::config::{AgentdConfig, Effective};
use crate::daemon::monitor::policy_source::PolicySource;
use crate::daemon::monitor::publish;
use crate::daemon::monitor::state::StateFile;

/// Everything the handlers share.
pub struct Daemon {
    pub config: AgentdConfig,
    pub timezone: chrono_tz::Tz,
    /// The settings in force (the central server's over the file's);
    /// swapped with the policy.
    pub effective: RwLock<Arc<Effective>>,
    /// uid allowed to ask for public keys, besides root.
    pub keys_uid: Option<u32>,
    pub policy: RwLock<Arc<Policy>>,
    /// jms user names by uid, as last published to the NSS cache.
    pub users_by_uid: RwLock<publish::UsersByUid>,
    /// Writes the NSS cache, each policy from the one before.
    pub publisher: publish::Publisher,
    pub state: Mutex<StateFile>,
    /// Running target sessions and share codes (`crate::daemon::monitor::live`).
    pub live: crate::daemon::monitor::live::Registry,
    /// Web tickets accepted and the logins they bound.
    pub tickets: crate::daemon::monitor::tickets::Tickets,
    /// Who session workers run as (`None`: this daemon's uid).
    pub worker: Option<crate::daemon::monitor::worker_user::WorkerUser>,
}

/// Who may send a request (`jms_user`: the caller's uid is a jms user's).
fn allowed(request: &Request, uid: u32, keys_uid: Option<u32>, jms_user: bool) -> bool {
    match request {
        Request::ListAssets
        | Request::OpenSession(_)
        | Request::Resize { .. }
        | Request::Credentials { .. } => jms_user,
        Request::AuthorizedKeys { .. } => uid == 0 || Some(uid) == keys_uid,
        Request::UserStatus { .. }
        | Request::Authenticate { .. }
        | Request::AccountCheck { .. }
        | Request::SessionOpen { .. }
        | Request::SessionClose { .. } => uid == 0,
    }
}

fn parse_rhost(rhost: &Option<String>) -> Option<IpAddr> {
    rhost.as_deref().and_then(|h| h.parse().ok())
}

impl Daemon {
    pub fn current_policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The settings in force now.
    pub fn effective(&self) -> Arc<Effective> {
        Arc::clone(&self.effective.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Publishes the NSS cache for `policy` (with the ids `source`
    /// assigned), then swaps in the policy and the settings `source`
    /// carries; on error keeps the last good ones.
    pub fn apply_policy(&self, policy: Policy, source: &dyn PolicySource, why: &str) {
        match self
            .publisher
            .publish(&policy, &self.config, source.ids().as_ref())
        {
            Ok(users_by_uid) => {
                *self.users_by_uid.write().unwrap_or_else(|e| e.into_inner()) = users_by_uid;
                let effective = Effective::resolve(&self.config, source.settings().as_ref());
                info!(users = policy.doc.users.len(), "policy {why}");
                *self.effective.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(effective);
                *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy);
                // Sessions the new policy no longer allows end now; the
                // others take the new limits.
                self.live.revoke(&self.current_policy());
                self.live
                    .push_settings(crate::wire::WireLimits::of(&self.effective()));
            }
            Err(e) => tracing::error!("publishing failed, keeping the last good policy: {e:#}"),
        }
    }

    /// The jms user name of `uid`, if it is one.
    pub fn user_of_uid(&self, uid: u32) -> Option<String> {
        self.users_by_uid
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(uid)
            .map(str::to_string)
    }

    /// The policy's user `name` if she was published to the NSS cache: a
    /// user left out (her name or uid is a local account's, her server
    /// uid is out of range) is no jms user for any request — no password,
    /// no keys, no session.
    pub fn jms_user<'p>(
        &self,
        policy: &'p Policy,
        name: &str,
    ) -> Option<&'p jms_core::model::User> {
        let published = self
            .users_by_uid
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_name(name);
        policy.user(name).filter(|_| published)
    }

    /// Answers one request from `uid` (process `pid`, from SO_PEERCRED);
    /// sessions are served by `crate::daemon::session`.
    pub fn handle(&self, request: Request, uid: u32, pid: Option<u32>) -> Response {
        let caller = self.user_of_uid(uid);
        if !allowed(&request, uid, self.keys_uid, caller.is_some()) {
            warn!(
                request = request.kind(),
                uid, "request refused for this caller"
            );
            return Response::Forbidden {
                reason: format!("uid {uid} may not send {}", request.kind()),
            };
        }
        let policy = self.current_policy();
        let caller_pid = pid;
        match request {
            Request::UserStatus { user } => match self.jms_user(&policy, &user) {
                Some(u) => Response::UserStatus {
                    known: true,
                    needs_totp: u.totp_secret.is_some(),
                },
                None => Response::UserStatus {
                    known: false,
                    needs_totp: false,
                },
            },
            Request::Authenticate {
                user,
                password,
                totp,
                rhost,
                service,
            } => {
                let ticketed = password.expose().starts_with(jms_sync::ticket::PREFIX);
                let (result, why, rhost) = if ticketed {
                    self.authenticate_ticket(&policy, &user, password.expose(), pid, &rhost)
                } else {
                    let result = self.authenticate(
                        &policy,
                        &user,
                        password.expose(),
                        totp.as_ref().map(|t| t.expose()),
                    );
                    (result, None, rhost)
                };
                let (outcome, reason) = match &result {
                    AuthResult::Success => ("success", why.unwrap_or_default()),
                    AuthResult::WrongSecret => (
                        "failure",
                        why.unwrap_or_else(|| "wrong password or code".to_string()),
                    ),
                    // Half-way: the password was right, the code comes next.
                    AuthResult::NeedCode => return Response::Auth { result },
                    AuthResult::UnknownUser => ("unknown_user", String::new()),
                    AuthResult::Denied { reason } => ("denied", reason.clone()),
                };
                // The login result goes to the central audit trail too.
                crate::daemon::monitor::spool::record(
                    &self.config,
                    crate::daemon::events::EventBody::Login {
                        user: user.clone(),
                        rhost: rhost.clone(),
                        service: service.clone(),
                        outcome: outcome.to_string(),
                        reason: (!reason.is_empty()).then(|| reason.clone()),
                    },
                );
                info!(
                    event = "authenticate",
                    user,
                    rhost = rhost.as_deref().unwrap_or("-"),
                    service,
                    outcome,
                    reason
                );
                Response::Auth { result }
            }
            Request::AccountCheck { user, rhost } => {
                // A web ticket's login: the login ACL applies to the browser.
                let ticket =
                    pid.and_then(|p| self.tickets.pending(&user, p, Utc::now().timestamp()));
                let rhost = match &ticket {
                    Some(t) => Some(t.client.to_string()),
                    None => rhost,
                };
                let result = self.account_check(&policy, &user, &rhost);
                let (outcome, reason) = match &result {
                    AccountResult::Allowed => ("allowed", String::new()),
                    AccountResult::UnknownUser => ("unknown_user", String::new()),
                    AccountResult::Expired { reason } => ("expired", reason.clone()),
                    AccountResult::Denied { reason } => ("denied", reason.clone()),
                };
                info!(
                    event = "account",
                    user,
                    rhost = rhost.as_deref().unwrap_or("-"),
                    outcome,
                    reason
                );
                Response::Account { result }
            }
            Request::SessionOpen {
                user,
                rhost,
                tty,
                pid,
            } => {
                if self.jms_user(&policy, &user).is_none() {
                    return Response::Account {
                        result: AccountResult::UnknownUser,
                    };
                }
                // sshd's monitor of a ticket login: its sessions are bound now.
                if let Some(ticket) =
                    caller_pid.and_then(|p| self.tickets.claim(&user, p, Utc::now().timestamp()))
                {
                    info!(
                        event = "web_ticket_bound",
                        user,
                        asset = ticket.asset,
                        account = ticket.account,
                        nonce = ticket.nonce
                    );
                }
                info!(
                    event = "session_open",
                    user,
                    rhost = rhost.as_deref().unwrap_or("-"),
                    tty = tty.as_deref().unwrap_or("-"),
                    pid
                );
                Response::Done
            }
            Request::SessionClose { user, pid } => {
                if self.jms_user(&policy, &user).is_none() {
                    return Response::Account {
                        result: AccountResult::UnknownUser,
                    };
                }
                info!(event = "session_close", user, pid);
                if let Some(caller) = caller_pid {
                    self.tickets.release(caller);
                }
                Response::Done
            }
            Request::ListAssets => {
                let user = caller.unwrap_or_default();
                match policy.list(&user, Utc::now()) {
                    Ok(granted) => Response::Assets {
                        assets: granted.iter().map(|g| listed(&g)).collect(),
                    },
                    Err(_) => Response::Assets { assets: Vec::new() },
                }
            }
            Request::OpenSession(_) | Request::Resize { .. } | Request::Credentials { .. } => {
                Response::Error {
                    message: format!("{} belongs to a session connection", request.kind()),
                }
            }
            Request::AuthorizedKeys { user } => {
                // Disabled or expired users get no keys; the login ACL is
                // checked by PAM's account stage, which knows the source.
                let keys = match self.jms_user(&policy, &user) {
                    Some(u)
                        if u.is_active && u.date_expired.is_none_or(|end| Utc::now() < end.0) =>
                    {
                        u.public_keys.clone()
                    }
                    _ => Vec::new(),
                };
                Response::Keys { keys }
            }
        }
    }

    /// Checks the password (and TOTP code). The hash is verified without
    /// holding the state lock, so slow hashes never queue other logins;
    /// the state file is written only when something changed.
    fn authenticate(
        &self,
        policy: &Policy,
        name: &str,
        password: &str,
        totp: Option<&str>,
    ) -> AuthResult {
        let now = Utc::now().timestamp();
        let Some(user) = self.jms_user(policy, name) else {
            return AuthResult::UnknownUser;
        };
        let last_step = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = state
                .state
                .failures
                .get(name)
                .and_then(|r| r.is_locked(now))
            {
                return AuthResult::Denied {
                    reason: format!("account locked until {}", rfc3339(until)),
                };
            }
            state.state.totp_steps.get(name).copied()
        };
        let Some(hash) = &user.password_hash else {
            return AuthResult::Denied {
                reason: "no password is set for this user".into(),
            };
        };
        let effective = self.effective();
        let password_ok = verify_password(password.as_bytes(), hash.expose()).unwrap_or(false);
        if password_ok {
            if let Some(reason) = effective.missing_second_factor(user) {
                return AuthResult::Denied { reason };
            }
        }
        if password_ok && user.totp_secret.is_some() && totp.is_none() {
            // Asked only now, so a wrong password never reveals TOTP.
            return AuthResult::NeedCode;
        }
        // Some(None): no TOTP needed; Some(Some(step)): code matched; None: failed.
        let totp_step = match (&user.totp_secret, totp) {
            (None, _) => Some(None),
            (Some(_), None) => None,
            (Some(secret), Some(code)) => verify_totp(secret.expose(), code, now, last_step)
                .ok()
                .flatten()
                .map(Some),
        };
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A concurrent login may have used the same code meanwhile.
        let replayed = matches!(totp_step, Some(Some(step)) if state.state.totp_steps.get(name).is_some_and(|last| *last >= step));
        let (result, changed) = match totp_step {
            Some(step) if password_ok && !replayed => {
                if let Some(step) = step {
                    state.state.totp_steps.insert(name.to_string(), step);
                }
                let cleared = state.state.failures.remove(name).is_some();
                (AuthResult::Success, step.is_some() || cleared)
            }
            _ => {
                let record = state.state.failures.entry(name.to_string()).or_default();
                if let Some(until) = record.record_failure(&effective.lockout, now) {
                    warn!(
                        event = "lockout",
                        user = name,
                        until = rfc3339(until),
                        "account locked after repeated failures"
                    );
                }
                (AuthResult::WrongSecret, true)
            }
        };
        if changed {
            if let Err(e) = state.save() {
                warn!(error = format!("{e:#}"), "could not save the login state");
            }
        }
        result
    }

    /// Checks a web ticket typed as `name`'s password ([`jms_sync::ticket`]):
    /// signed by the pinned server key, for this bastion and this user, in
    /// its validity, never used before. No TOTP: the web login did it. A
    /// refused ticket counts as a failed login. Gives the result, the
    /// reason to log, and the login's source for the audit (the browser,
    /// via the real peer).
    fn authenticate_ticket(
        &self,
        policy: &Policy,
        name: &str,
        text: &str,
        pid: Option<u32>,
        rhost: &Option<String>,
    ) -> (AuthResult, Option<String>, Option<String>) {
        let now = Utc::now().timestamp();
        if self.jms_user(policy, name).is_none() {
            return (AuthResult::UnknownUser, None, rhost.clone());
        }
        {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = state
                .state
                .failures
                .get(name)
                .and_then(|r| r.is_locked(now))
            {
                let reason = format!("account locked until {}", rfc3339(until));
                return (AuthResult::Denied { reason }, None, rhost.clone());
            }
        }
        let accepted = match self.enrollment() {
            Some((bastion_id, pinned)) => self
                .tickets
                .accept(text, &pinned, bastion_id, name, pid, now)
                .map_err(|e| e.to_string()),
            None => Err("this bastion is not enrolled: it takes no web tickets".into()),
        };
        match accepted {
            Ok(ticket) => {
                let source = Some(ticket.audit_client(rhost.as_deref()));
                let why = format!(
                    "web ticket for {}@{} (nonce {})",
                    ticket.account, ticket.asset, ticket.nonce
                );
                (AuthResult::Success, Some(why), source)
            }
            Err(why) => {
                let effective = self.effective();
                let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let record = state.state.failures.entry(name.to_string()).or_default();
                if let Some(until) = record.record_failure(&effective.lockout, now) {
                    warn!(
                        event = "lockout",
                        user = name,
                        until = rfc3339(until),
                        "account locked after repeated failures"
                    );
                }
                if let Err(e) = state.save() {
                    warn!(error = format!("{e:#}"), "could not save the login state");
                }
                (
                    AuthResult::WrongSecret,
                    Some(format!("web ticket refused: {why}")),
                    rhost.clone(),
                )
            }
        }
    }

    /// This bastion's enrollment id and the server key it pinned, when it
    /// is enrolled.
    fn enrollment(&self) -> Option<(i64, Vec<u8>)> {
        use crate::daemon::monitor::enroll::{Enrollment, ENROLLMENT_FILE};
        let bytes = std::fs::read(self.config.state_dir.join(ENROLLMENT_FILE)).ok()?;
        let enrollment: Enrollment = serde_json::from_slice(&bytes).ok()?;
        let key =
            jms_sync::bundle::unhex(&enrollment.server_public_key).filter(|k| k.len() == 32)?;
        Some((enrollment.bastion_id, key))
    }

    /// Forgets `name`'s failed logins and lockout (the server's unlock
    /// order); true when there was something to forget.
    pub fn unlock(&self, name: &str) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let lifted = state.state.failures.remove(name).is_some();
        if lifted {
            if let Err(e) = state.save() {
                warn!(error = format!("{e:#}"), "could not save the login state");
            }
        }
        lifted
    }

    fn account_check(&self, policy: &Policy, name: &str, rhost: &Option<String>) -> AccountResult {
        let Some(user) = self.jms_user(policy, name) else {
            return AccountResult::UnknownUser;
        };
        let now = Utc::now();
        if let Some(reason) = self.effective().missing_second_factor(user) {
            return AccountResult::Denied { reason };
        }
        match check_login(user, parse_rhost(rhost), now, self.timezone) {
            Ok(()) => {}
            Err(expired @ LoginDenied::Expired(_)) => {
                return AccountResult::Expired {
                    reason: expired.to_string(),
                }
            }
            Err(denied) => {
                return AccountResult::Denied {
                    reason: denied.to_string(),
                }
            }
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = state
            .state
            .failures
            .get(name)
            .and_then(|r| r.is_locked(now.timestamp()))
        {
            return AccountResult::Denied {
                reason: format!("account locked until {}", rfc3339(until)),
            };
        }
        AccountResult::Allowed
    }
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| unix.to_string())
}

/// A granted asset as the menu sees it.
fn listed(granted: &jms_core::GrantedAsset<'_>) -> jms_proto::ListedAsset {
    jms_proto::ListedAsset {
        name: granted.asset.name.clone(),
        address: granted.asset.address.clone(),
        nodes: granted.asset.nodes.clone(),
        accounts: granted
            .accounts
            .iter()
            .map(|g| jms_proto::ListedAccount {
                name: g.account.name().to_string(),
                username: match g.account {
                    jms_core::AccountRef::Real(account) => Some(account.username.clone()),
                    _ => None,
                },
                protocols: g.protocols.iter().collect(),
                actions: g.actions.iter().collect(),
            })
            .collect(),
    }
}
