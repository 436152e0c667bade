//! What pam_jms does at each stage, behind two small traits so it runs in
//! tests without PAM or a daemon: [`Conversation`] (prompts) and
//! [`AgentLink`] (the jms-agentd socket).
//!
//! Not a jms user → PAM_USER_UNKNOWN, so the stack falls through to
//! pam_unix. jms-agentd unreachable → PAM_AUTHINFO_UNAVAIL for users in the
//! public NSS cache (jms users fail closed) and PAM_USER_UNKNOWN for anyone
//! else, so local accounts never depend on the daemon.

use std::path::PathBuf;
use std::time::Duration;

use jms_core::model::Secret;
use jms_core::nss_cache::{NssCache, DEFAULT_NSS_CACHE_PATH};
use jms_proto::{
    AccountResult, AuthResult, Client, FrameError, Request, Response, DEFAULT_SOCKET_PATH,
};
use pam::constants::PamResultCode;

/// Delay PAM applies to a failed authentication (as pam_unix's 2 s).
pub const FAIL_DELAY_MICROS: u32 = 2_000_000;

/// Bound on each round trip to jms-agentd.
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(3);

/// Module arguments: `socket=PATH`, `cache=PATH`, `debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub socket: PathBuf,
    pub cache: PathBuf,
    pub debug: bool,
}

impl Args {
    /// Unknown arguments are ignored (PAM convention), never fatal.
    pub fn parse<S: AsRef<str>>(args: impl Iterator<Item = S>) -> Args {
        let mut parsed = Args {
            socket: DEFAULT_SOCKET_PATH.into(),
            cache: DEFAULT_NSS_CACHE_PATH.into(),
            debug: false,
        };
        for arg in args {
            let arg = arg.as_ref();
            if let Some(path) = arg.strip_prefix("socket=") {
                parsed.socket = path.into();
            } else if let Some(path) = arg.strip_prefix("cache=") {
                parsed.cache = path.into();
            } else if arg == "debug" {
                parsed.debug = true;
            }
        }
        parsed
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Auth,
    Account,
    OpenSession,
    CloseSession,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Auth => "auth",
            Stage::Account => "account",
            Stage::OpenSession => "open_session",
            Stage::CloseSession => "close_session",
        }
    }
}

/// A stage's result, before it becomes a PAM code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    AuthError,
    UserUnknown,
    AuthInfoUnavailable,
    PermissionDenied,
    AccountExpired,
    SessionError,
    ServiceError,
}

impl Outcome {
    pub fn code(self) -> PamResultCode {
        match self {
            Outcome::Success => PamResultCode::PAM_SUCCESS,
            Outcome::AuthError => PamResultCode::PAM_AUTH_ERR,
            Outcome::UserUnknown => PamResultCode::PAM_USER_UNKNOWN,
            Outcome::AuthInfoUnavailable => PamResultCode::PAM_AUTHINFO_UNAVAIL,
            Outcome::PermissionDenied => PamResultCode::PAM_PERM_DENIED,
            Outcome::AccountExpired => PamResultCode::PAM_ACCT_EXPIRED,
            Outcome::SessionError => PamResultCode::PAM_SESSION_ERR,
            Outcome::ServiceError => PamResultCode::PAM_SERVICE_ERR,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::AuthError => "auth_err",
            Outcome::UserUnknown => "user_unknown",
            Outcome::AuthInfoUnavailable => "authinfo_unavail",
            Outcome::PermissionDenied => "perm_denied",
            Outcome::AccountExpired => "acct_expired",
            Outcome::SessionError => "session_err",
            Outcome::ServiceError => "service_err",
        }
    }
}

/// Prompts to the user.
pub trait Conversation {
    /// Asks with echo off; `None` when the user gave no answer.
    fn ask_hidden(&mut self, prompt: &str) -> Option<String>;
    /// Shows an error line (best effort).
    fn tell_error(&mut self, message: &str);
}

/// The daemon.
pub trait AgentLink {
    fn call(&mut self, request: &Request) -> Result<Response, FrameError>;
}

/// The real socket, one connection per call.
pub struct Socket {
    path: PathBuf,
}

impl Socket {
    pub fn new(args: &Args) -> Socket {
        Socket {
            path: args.socket.clone(),
        }
    }
}

impl AgentLink for Socket {
    fn call(&mut self, request: &Request) -> Result<Response, FrameError> {
        Client::call_once(&self.path, AGENT_TIMEOUT, request)
    }
}

/// What PAM tells about the login.
pub struct Login<'a> {
    pub user: &'a str,
    pub rhost: Option<&'a str>,
    pub service: &'a str,
    pub tty: Option<&'a str>,
    pub pid: u32,
}

/// Runs `stage`; returns the outcome and a reason for the log (never a secret).
pub fn run(
    stage: Stage,
    login: &Login<'_>,
    args: &Args,
    conv: &mut dyn Conversation,
    agent: &mut dyn AgentLink,
) -> (Outcome, String) {
    if login.user.is_empty() {
        return (Outcome::UserUnknown, "empty user name".into());
    }
    let result = match stage {
        Stage::Auth => authenticate(login, conv, agent),
        Stage::Account => account(login, conv, agent),
        Stage::OpenSession => session(
            agent,
            Request::SessionOpen {
                user: login.user.into(),
                rhost: login.rhost.map(Into::into),
                tty: login.tty.map(Into::into),
                pid: login.pid,
            },
        ),
        Stage::CloseSession => session(
            agent,
            Request::SessionClose {
                user: login.user.into(),
                pid: login.pid,
            },
        ),
    };
    match result {
        Ok(done) => done,
        Err(e) if is_jms_user(&args.cache, login.user) => {
            let outcome = if matches!(stage, Stage::OpenSession | Stage::CloseSession) {
                Outcome::SessionError
            } else {
                Outcome::AuthInfoUnavailable
            };
            (outcome, format!("jms-agentd unreachable: {e}"))
        }
        Err(e) => (
            Outcome::UserUnknown,
            format!("jms-agentd unreachable ({e}); not in the jms cache"),
        ),
    }
}

/// Whether the public NSS cache lists `user` (used when the daemon is down).
fn is_jms_user(cache: &std::path::Path, user: &str) -> bool {
    NssCache::open(cache).is_ok_and(|c| matches!(c.user_by_name(user), Ok(Some(_))))
}

type StageResult = Result<(Outcome, String), FrameError>;

fn unexpected(response: Response) -> (Outcome, String) {
    (
        Outcome::ServiceError,
        format!("unexpected answer from jms-agentd: {}", describe(&response)),
    )
}

fn describe(response: &Response) -> String {
    match response {
        Response::Forbidden { reason } => format!("forbidden: {reason}"),
        Response::Error { message } => format!("error: {message}"),
        other => format!("{other:?}"),
    }
}

fn authenticate(
    login: &Login<'_>,
    conv: &mut dyn Conversation,
    agent: &mut dyn AgentLink,
) -> StageResult {
    let needs_totp = match agent.call(&Request::UserStatus {
        user: login.user.into(),
    })? {
        Response::UserStatus { known: false, .. } => {
            return Ok((Outcome::UserUnknown, "not a jms user".into()))
        }
        Response::UserStatus {
            known: true,
            needs_totp,
        } => needs_totp,
        other => return Ok(unexpected(other)),
    };
    let Some(password) = conv.ask_hidden("Password: ") else {
        return Ok((Outcome::AuthError, "no password given".into()));
    };
    let totp = if needs_totp {
        match conv.ask_hidden("Verification code: ") {
            Some(code) => Some(Secret::new(code)),
            None => return Ok((Outcome::AuthError, "no verification code given".into())),
        }
    } else {
        None
    };
    let request = Request::Authenticate {
        user: login.user.into(),
        password: Secret::new(password),
        totp,
        rhost: login.rhost.map(Into::into),
        service: login.service.into(),
    };
    Ok(match agent.call(&request)? {
        Response::Auth {
            result: AuthResult::Success,
        } => (Outcome::Success, String::new()),
        Response::Auth {
            result: AuthResult::WrongSecret,
        } => (Outcome::AuthError, "wrong password or code".into()),
        Response::Auth {
            result: AuthResult::UnknownUser,
        } => (Outcome::UserUnknown, "not a jms user".into()),
        Response::Auth {
            result: AuthResult::Denied { reason },
        } => {
            conv.tell_error(&format!("jms: {reason}"));
            (Outcome::AuthError, reason)
        }
        other => unexpected(other),
    })
}

fn account(
    login: &Login<'_>,
    conv: &mut dyn Conversation,
    agent: &mut dyn AgentLink,
) -> StageResult {
    let request = Request::AccountCheck {
        user: login.user.into(),
        rhost: login.rhost.map(Into::into),
    };
    Ok(match agent.call(&request)? {
        Response::Account {
            result: AccountResult::Allowed,
        } => (Outcome::Success, String::new()),
        Response::Account {
            result: AccountResult::UnknownUser,
        } => (Outcome::UserUnknown, "not a jms user".into()),
        Response::Account {
            result: AccountResult::Expired { reason },
        } => {
            conv.tell_error(&format!("jms: {reason}"));
            (Outcome::AccountExpired, reason)
        }
        Response::Account {
            result: AccountResult::Denied { reason },
        } => {
            conv.tell_error(&format!("jms: {reason}"));
            (Outcome::PermissionDenied, reason)
        }
        other => unexpected(other),
    })
}

fn session(agent: &mut dyn AgentLink, request: Request) -> StageResult {
    Ok(match agent.call(&request)? {
        Response::Done => (Outcome::Success, String::new()),
        Response::Account {
            result: AccountResult::UnknownUser,
        } => (Outcome::UserUnknown, "not a jms user".into()),
        other => {
            let (_, reason) = unexpected(other);
            (Outcome::SessionError, reason)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Answers prompts from a script; on drop, asserts every answer was used.
    struct Scripted {
        expected: VecDeque<(&'static str, Option<&'static str>)>,
        errors: Vec<String>,
    }

    impl Scripted {
        fn new(expected: &[(&'static str, Option<&'static str>)]) -> Self {
            Scripted {
                expected: expected.iter().copied().collect(),
                errors: Vec::new(),
            }
        }
    }

    impl Conversation for Scripted {
        fn ask_hidden(&mut self, prompt: &str) -> Option<String> {
            let (want, answer) = self
                .expected
                .pop_front()
                .unwrap_or_else(|| panic!("unexpected prompt {prompt:?}"));
            assert_eq!(prompt, want);
            answer.map(str::to_owned)
        }
        fn tell_error(&mut self, message: &str) {
            self.errors.push(message.into());
        }
    }

    impl Drop for Scripted {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                assert!(
                    self.expected.is_empty(),
                    "prompts never asked: {:?}",
                    self.expected
                );
            }
        }
    }

    /// Replies from a script, recording requests.
    struct FakeAgent {
        replies: VecDeque<Result<Response, FrameError>>,
        seen: Vec<Request>,
    }

    impl FakeAgent {
        fn new(replies: Vec<Result<Response, FrameError>>) -> Self {
            FakeAgent {
                replies: replies.into(),
                seen: Vec::new(),
            }
        }
    }

    impl AgentLink for FakeAgent {
        fn call(&mut self, request: &Request) -> Result<Response, FrameError> {
            self.seen.push(request.clone());
            self.replies.pop_front().expect("no more scripted replies")
        }
    }

    fn login() -> Login<'static> {
        Login {
            user: "alice",
            rhost: Some("127.0.0.1"),
            service: "sshd",
            tty: None,
            pid: 1,
        }
    }

    fn args() -> Args {
        Args::parse(["socket=/nonexistent/sock", "cache=/nonexistent/nss.db"].iter())
    }

    fn down() -> Result<Response, FrameError> {
        Err(FrameError::Io(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )))
    }

    #[test]
    fn password_then_code_for_a_totp_user() {
        let mut conv = Scripted::new(&[
            ("Password: ", Some("pw")),
            ("Verification code: ", Some("123456")),
        ]);
        let mut agent = FakeAgent::new(vec![
            Ok(Response::UserStatus {
                known: true,
                needs_totp: true,
            }),
            Ok(Response::Auth {
                result: AuthResult::Success,
            }),
        ]);
        let (outcome, _) = run(Stage::Auth, &login(), &args(), &mut conv, &mut agent);
        assert_eq!(outcome, Outcome::Success);
        match &agent.seen[1] {
            Request::Authenticate { password, totp, .. } => {
                assert_eq!(password.expose(), "pw");
                assert_eq!(totp.as_ref().map(Secret::expose), Some("123456"));
            }
            other => panic!("expected authenticate, got {other:?}"),
        }
    }

    #[test]
    fn unknown_user_is_not_prompted_and_falls_through() {
        let mut conv = Scripted::new(&[]);
        let mut agent = FakeAgent::new(vec![Ok(Response::UserStatus {
            known: false,
            needs_totp: false,
        })]);
        assert_eq!(
            run(Stage::Auth, &login(), &args(), &mut conv, &mut agent).0,
            Outcome::UserUnknown
        );
    }

    #[test]
    fn wrong_secret_is_auth_err_and_denial_is_told() {
        let mut conv = Scripted::new(&[("Password: ", Some("bad"))]);
        let mut agent = FakeAgent::new(vec![
            Ok(Response::UserStatus {
                known: true,
                needs_totp: false,
            }),
            Ok(Response::Auth {
                result: AuthResult::WrongSecret,
            }),
        ]);
        assert_eq!(
            run(Stage::Auth, &login(), &args(), &mut conv, &mut agent).0,
            Outcome::AuthError
        );
        let mut conv = Scripted::new(&[("Password: ", Some("pw"))]);
        let mut agent = FakeAgent::new(vec![
            Ok(Response::UserStatus {
                known: true,
                needs_totp: false,
            }),
            Ok(Response::Auth {
                result: AuthResult::Denied {
                    reason: "account locked until X".into(),
                },
            }),
        ]);
        let (outcome, reason) = run(Stage::Auth, &login(), &args(), &mut conv, &mut agent);
        assert_eq!(
            (outcome, reason.as_str()),
            (Outcome::AuthError, "account locked until X")
        );
        assert_eq!(conv.errors, ["jms: account locked until X"]);
    }

    #[test]
    fn daemon_down_falls_through_for_users_not_in_the_cache() {
        let mut conv = Scripted::new(&[]);
        let mut agent = FakeAgent::new(vec![down()]);
        assert_eq!(
            run(Stage::Auth, &login(), &args(), &mut conv, &mut agent).0,
            Outcome::UserUnknown
        );
    }

    #[test]
    fn account_results_map_to_pam_codes() {
        let cases = [
            (AccountResult::Allowed, Outcome::Success),
            (AccountResult::UnknownUser, Outcome::UserUnknown),
            (
                AccountResult::Expired { reason: "x".into() },
                Outcome::AccountExpired,
            ),
            (
                AccountResult::Denied { reason: "y".into() },
                Outcome::PermissionDenied,
            ),
        ];
        for (result, expected) in cases {
            let mut conv = Scripted::new(&[]);
            let mut agent = FakeAgent::new(vec![Ok(Response::Account { result })]);
            assert_eq!(
                run(Stage::Account, &login(), &args(), &mut conv, &mut agent).0,
                expected
            );
        }
    }

    #[test]
    fn arguments_are_parsed_and_unknown_ones_ignored() {
        let parsed = Args::parse(["socket=/s", "debug", "weird", "cache=/c"].iter());
        assert_eq!(
            parsed,
            Args {
                socket: "/s".into(),
                cache: "/c".into(),
                debug: true
            }
        );
    }
}
