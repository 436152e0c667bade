//! What pam_jms does at each stage, behind two small traits so it runs in
//! tests without PAM or a daemon: [`Conversation`] (prompts) and
//! [`AgentLink`] (the jms-agentd socket).
//!
//! Only names in the public NSS cache (read as nss_jms reads it) are jms
//! users. Anyone else gets PAM_USER_UNKNOWN without a prompt and without a
//! word to jms-agentd, so the stack falls through to pam_unix: root and
//! local accounts log in whatever agentd does (down, busy, answering
//! errors). A cached name that is also a local account (by name) falls
//! through as well, with an alarm: the local account decides, never the jms
//! password. A cached user whose uid is a local account's or outside the jms
//! range is refused. jms-agentd unreachable → PAM_AUTHINFO_UNAVAIL for jms
//! users (they fail closed).
//!
//! Prompts (the same for every name, so they tell nothing about it):
//! "Password: " first, always; "Verification code: " only after the
//! password was found right and the user has TOTP. A wrong password ends
//! with the single password prompt, for jms users with or without TOTP,
//! unknown names and local accounts alike (pam_unix asks the same
//! "Password: "). Only someone who knows the password learns that a code
//! is needed.

use std::path::PathBuf;
use std::time::Duration;

use jms_core::local_accounts::{LocalTable, PASSWD_PATH};
use jms_core::model::Secret;
use jms_core::nss_cache::{overlay_path, NssView, DEFAULT_NSS_CACHE_PATH};
use jms_core::uids::IdRange;
use jms_proto::{
    AccountResult, AuthResult, Client, FrameError, Request, Response, DEFAULT_SOCKET_PATH,
};
use pam::constants::PamResultCode;

/// Delay PAM applies to a failed authentication (as pam_unix's 2 s).
pub const FAIL_DELAY_MICROS: u32 = 2_000_000;

/// Bound on each round trip to jms-agentd: a burst of logins on a small
/// machine (200 at once on 2 cores) has answers take about 4 s, which must
/// not fail them; a hung agentd still fails the login closed well within
/// sshd's LoginGraceTime. A stopped agentd is seen at once (connect refused).
pub const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The first prompt, for every user.
pub const PASSWORD_PROMPT: &str = "Password: ";
/// The second prompt, after a right password, for users with TOTP.
pub const CODE_PROMPT: &str = "Verification code: ";

/// Module arguments: `socket=PATH`, `cache=PATH`, `passwd=PATH` (the local
/// passwd file), `uids=FIRST-LAST` (the jms uid range, as `[ids.users]` in
/// agentd.toml; default 200000-299999), `debug`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    pub socket: PathBuf,
    pub cache: PathBuf,
    pub passwd: PathBuf,
    pub uids: IdRange,
    pub debug: bool,
}

impl Args {
    /// Unknown or malformed arguments are ignored (PAM convention), never
    /// fatal.
    pub fn parse<S: AsRef<str>>(args: impl Iterator<Item = S>) -> Args {
        let mut parsed = Args {
            socket: DEFAULT_SOCKET_PATH.into(),
            cache: DEFAULT_NSS_CACHE_PATH.into(),
            passwd: PASSWD_PATH.into(),
            uids: IdRange::default(),
            debug: false,
        };
        for arg in args {
            let arg = arg.as_ref();
            if let Some(path) = arg.strip_prefix("socket=") {
                parsed.socket = path.into();
            } else if let Some(path) = arg.strip_prefix("cache=") {
                parsed.cache = path.into();
            } else if let Some(path) = arg.strip_prefix("passwd=") {
                parsed.passwd = path.into();
            } else if let Some(range) = arg.strip_prefix("uids=") {
                if let Some((first, last)) = range.split_once('-') {
                    if let (Ok(first), Ok(last)) = (first.parse(), last.parse()) {
                        parsed.uids = IdRange { first, last };
                    }
                }
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
    /// A jms name that is also a local account: PAM_USER_UNKNOWN (the local
    /// account decides), logged as an alarm.
    LocalCollision,
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
            Outcome::LocalCollision => PamResultCode::PAM_USER_UNKNOWN,
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
            Outcome::LocalCollision => "local_collision",
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
    /// Closes the connection, if one is open: before the user is asked
    /// anything (no connection is held while someone types) and when the
    /// login goes no further.
    fn release(&mut self) {}
}

/// The real socket: one connection for the stages of a login (the PAM
/// module keeps it between them), opened at the first call.
pub struct Socket {
    path: PathBuf,
    connection: Option<Client>,
}

impl Socket {
    pub fn new(args: &Args) -> Socket {
        Socket::with_connection(args, None)
    }

    /// With the connection an earlier stage kept (to the same socket).
    pub fn with_connection(args: &Args, kept: Option<(PathBuf, Client)>) -> Socket {
        Socket {
            connection: kept
                .filter(|(path, _)| *path == args.socket)
                .map(|(_, client)| client),
            path: args.socket.clone(),
        }
    }

    /// The connection left open, for the next stage.
    pub fn into_connection(self) -> Option<(PathBuf, Client)> {
        self.connection.map(|client| (self.path, client))
    }
}

impl AgentLink for Socket {
    fn call(&mut self, request: &Request) -> Result<Response, FrameError> {
        if let Some(mut client) = self.connection.take() {
            // A kept connection jms-agentd closed meanwhile (it drops idle
            // clients) is replaced; the request is sent again only when
            // it never reached agentd (the check or the write failed).
            if client.is_reusable() && client.send(request).is_ok() {
                let answer = client.receive();
                if answer.is_ok() {
                    self.connection = Some(client);
                }
                return answer;
            }
        }
        let mut client = Client::connect(&self.path, AGENT_TIMEOUT)?;
        let answer = client.call(request);
        if answer.is_ok() {
            self.connection = Some(client);
        }
        answer
    }

    fn release(&mut self) {
        self.connection = None;
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
    match gate(args, login.user) {
        Gate::Jms => {}
        Gate::NotJms(reason) => return (Outcome::UserUnknown, reason),
        Gate::Local(reason) => return (Outcome::LocalCollision, reason),
        Gate::Refused(reason) => {
            let outcome = match stage {
                Stage::Auth => Outcome::AuthError,
                Stage::Account => Outcome::PermissionDenied,
                Stage::OpenSession | Stage::CloseSession => Outcome::SessionError,
            };
            return (outcome, reason);
        }
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
    // The connection is kept only for the next stage of a login that goes
    // on (account after auth, open_session after account).
    if !(matches!(stage, Stage::Auth | Stage::Account)
        && matches!(result, Ok((Outcome::Success, _))))
    {
        agent.release();
    }
    match result {
        Ok(done) => done,
        Err(e) => {
            let outcome = if matches!(stage, Stage::OpenSession | Stage::CloseSession) {
                Outcome::SessionError
            } else {
                Outcome::AuthInfoUnavailable
            };
            (outcome, format!("jms-agentd unreachable: {e}"))
        }
    }
}

/// Whether pam_jms deals with `user` at all.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gate {
    /// A jms user: ask jms-agentd.
    Jms,
    /// Not in the jms cache: the rest of the stack decides.
    NotJms(String),
    /// In the jms cache and a local account by name: the local account
    /// decides (alarm).
    Local(String),
    /// In the jms cache with a uid that must not log in.
    Refused(String),
}

/// Reads the public NSS cache (with its overlay: the users deltas added)
/// and the local passwd file about `user`.
fn gate(args: &Args, user: &str) -> Gate {
    let cache = match NssView::open(&args.cache, &overlay_path(&args.cache)) {
        Ok(cache) => cache,
        Err(e) => return Gate::NotJms(format!("not a jms user (no jms cache: {e})")),
    };
    let uid = match cache.user_by_name(user) {
        Ok(Some(entry)) => entry.uid,
        Ok(None) => return Gate::NotJms("not a jms user".into()),
        Err(e) => return Gate::NotJms(format!("not a jms user (jms cache unreadable: {e})")),
    };
    let local = match LocalTable::load(&args.passwd) {
        Ok(local) => local,
        Err(e) => {
            return Gate::Refused(format!(
                "cannot read {} to rule out a local account: {e}",
                args.passwd.display()
            ))
        }
    };
    if local.names.contains(user) {
        return Gate::Local(format!(
            "ALARM: jms user `{user}` has the name of a local account; the local account decides, never the jms password"
        ));
    }
    if local.ids.contains(&uid) {
        return Gate::Refused(format!(
            "ALARM: jms user `{user}` has uid {uid}, which a local account holds"
        ));
    }
    if !args.uids.contains(uid) {
        return Gate::Refused(format!(
            "ALARM: jms user `{user}` has uid {uid}, outside the jms range {}-{}",
            args.uids.first, args.uids.last
        ));
    }
    Gate::Jms
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
    let Some(password) = conv.ask_hidden(PASSWORD_PROMPT) else {
        return Ok((Outcome::AuthError, "no password given".into()));
    };
    let request = |totp: Option<Secret>| Request::Authenticate {
        user: login.user.into(),
        password: Secret::new(password.clone()),
        totp,
        rhost: login.rhost.map(Into::into),
        service: login.service.into(),
    };
    let mut answer = agent.call(&request(None))?;
    if let Response::Auth {
        result: AuthResult::NeedCode,
    } = answer
    {
        // The password was right: only now is the second factor asked
        // (with no connection held while the user types).
        agent.release();
        let Some(code) = conv.ask_hidden(CODE_PROMPT) else {
            return Ok((Outcome::AuthError, "no verification code given".into()));
        };
        answer = agent.call(&request(Some(Secret::new(code))))?;
    }
    Ok(match answer {
        Response::Auth {
            result: AuthResult::Success,
        } => (Outcome::Success, String::new()),
        Response::Auth {
            result: AuthResult::WrongSecret,
        } => (Outcome::AuthError, "wrong password or code".into()),
        Response::Auth {
            result: AuthResult::NeedCode,
        } => (
            Outcome::AuthError,
            "a verification code was asked twice".into(),
        ),
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
    use jms_core::nss_cache::{NssData, NssGroup, NssUser};
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

    fn login(user: &'static str) -> Login<'static> {
        Login {
            user,
            rhost: Some("127.0.0.1"),
            service: "sshd",
            tty: None,
            pid: 1,
        }
    }

    fn user(name: &str, uid: u32) -> NssUser {
        NssUser {
            name: name.into(),
            uid,
            gid: 200_000,
            gecos: String::new(),
            home: "/".into(),
            shell: "/usr/bin/jms-agent".into(),
        }
    }

    /// A jms cache with alice, tina, deploy (also local), zero (uid 0) and
    /// far (outside the range); a passwd file with root and deploy.
    struct Fixture {
        _dir: tempfile::TempDir,
        args: Args,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("nss.db");
        let passwd = dir.path().join("passwd");
        let data = NssData {
            users: vec![
                user("alice", 200_000),
                user("tina", 200_001),
                user("deploy", 200_002),
                user("zero", 0),
                user("far", 5_000),
            ],
            groups: vec![NssGroup {
                name: "jms-users".into(),
                gid: 200_000,
                members: Vec::new(),
            }],
        };
        jms_core::nss_cache::write_atomic(&cache, &data).unwrap();
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/bash\ndeploy:x:1000:1000::/home/deploy:/bin/sh\n",
        )
        .unwrap();
        let args = Args::parse(
            [
                "socket=/nonexistent/sock".to_string(),
                format!("cache={}", cache.display()),
                format!("passwd={}", passwd.display()),
            ]
            .iter(),
        );
        Fixture { _dir: dir, args }
    }

    fn down() -> Result<Response, FrameError> {
        Err(FrameError::Io(std::io::Error::from(
            std::io::ErrorKind::NotFound,
        )))
    }

    fn auth(result: AuthResult) -> Result<Response, FrameError> {
        Ok(Response::Auth { result })
    }

    #[test]
    fn password_then_code_only_after_the_password_is_right() {
        let f = fixture();
        let mut conv =
            Scripted::new(&[(PASSWORD_PROMPT, Some("pw")), (CODE_PROMPT, Some("123456"))]);
        let mut agent = FakeAgent::new(vec![auth(AuthResult::NeedCode), auth(AuthResult::Success)]);
        let (outcome, _) = run(Stage::Auth, &login("tina"), &f.args, &mut conv, &mut agent);
        assert_eq!(outcome, Outcome::Success);
        match (&agent.seen[0], &agent.seen[1]) {
            (
                Request::Authenticate {
                    password: p1,
                    totp: None,
                    ..
                },
                Request::Authenticate {
                    password: p2,
                    totp: Some(code),
                    ..
                },
            ) => {
                assert_eq!((p1.expose(), p2.expose()), ("pw", "pw"));
                assert_eq!(code.expose(), "123456");
            }
            other => panic!("expected two authenticate requests, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_password_ends_after_the_one_password_prompt() {
        let f = fixture();
        // The same single prompt whether or not the user has TOTP.
        let mut conv = Scripted::new(&[(PASSWORD_PROMPT, Some("bad"))]);
        let mut agent = FakeAgent::new(vec![auth(AuthResult::WrongSecret)]);
        assert_eq!(
            run(Stage::Auth, &login("tina"), &f.args, &mut conv, &mut agent).0,
            Outcome::AuthError
        );
        assert_eq!(agent.seen.len(), 1);
    }

    #[test]
    fn names_not_in_the_cache_fall_through_without_prompt_or_agentd() {
        let f = fixture();
        for stage in [
            Stage::Auth,
            Stage::Account,
            Stage::OpenSession,
            Stage::CloseSession,
        ] {
            // Whatever agentd would say (here: an error), it is not asked.
            let mut conv = Scripted::new(&[]);
            let mut agent = FakeAgent::new(vec![Ok(Response::Error {
                message: "busy".into(),
            })]);
            assert_eq!(
                run(stage, &login("root"), &f.args, &mut conv, &mut agent).0,
                Outcome::UserUnknown,
                "{stage:?}"
            );
            assert!(agent.seen.is_empty(), "agentd must not be asked");
        }
    }

    #[test]
    fn a_jms_name_that_is_a_local_account_is_left_to_the_local_account() {
        let f = fixture();
        let mut conv = Scripted::new(&[]);
        let mut agent = FakeAgent::new(vec![]);
        let (outcome, reason) = run(
            Stage::Auth,
            &login("deploy"),
            &f.args,
            &mut conv,
            &mut agent,
        );
        assert_eq!(outcome, Outcome::LocalCollision);
        assert_eq!(outcome.code(), PamResultCode::PAM_USER_UNKNOWN);
        assert!(reason.contains("ALARM"), "{reason}");
    }

    /// Before, pam_jms read the cache without its overlay: a user added
    /// by a policy delta was "not a jms user" and her password refused.
    #[test]
    fn a_user_in_the_caches_overlay_is_a_jms_user() {
        let f = fixture();
        let mut data = NssData {
            users: vec![user("alice", 200_000)],
            groups: Vec::new(),
        };
        let writer = jms_core::nss_cache::CacheWriter::write_full(&f.args.cache, &data).unwrap();
        data.users = vec![user("dana", 200_003)];
        assert!(writer.write_overlay(&data).unwrap());
        assert_eq!(gate(&f.args, "dana"), Gate::Jms);
        assert_eq!(gate(&f.args, "alice"), Gate::Jms);
        assert!(matches!(gate(&f.args, "nobody"), Gate::NotJms(_)));
    }

    #[test]
    fn a_local_or_out_of_range_uid_is_refused() {
        let f = fixture();
        for name in ["zero", "far"] {
            for (stage, want) in [
                (Stage::Auth, Outcome::AuthError),
                (Stage::Account, Outcome::PermissionDenied),
            ] {
                let mut conv = Scripted::new(&[]);
                let mut agent = FakeAgent::new(vec![]);
                assert_eq!(
                    run(stage, &login(name), &f.args, &mut conv, &mut agent).0,
                    want,
                    "{name} {stage:?}"
                );
            }
        }
    }

    #[test]
    fn wrong_secret_is_auth_err_and_denial_is_told() {
        let f = fixture();
        let mut conv = Scripted::new(&[(PASSWORD_PROMPT, Some("pw"))]);
        let mut agent = FakeAgent::new(vec![auth(AuthResult::Denied {
            reason: "account locked until X".into(),
        })]);
        let (outcome, reason) = run(Stage::Auth, &login("alice"), &f.args, &mut conv, &mut agent);
        assert_eq!(
            (outcome, reason.as_str()),
            (Outcome::AuthError, "account locked until X")
        );
        assert_eq!(conv.errors, ["jms: account locked until X"]);
    }

    #[test]
    fn daemon_down_fails_closed_for_jms_users() {
        let f = fixture();
        let mut conv = Scripted::new(&[(PASSWORD_PROMPT, Some("pw"))]);
        let mut agent = FakeAgent::new(vec![down()]);
        assert_eq!(
            run(Stage::Auth, &login("alice"), &f.args, &mut conv, &mut agent).0,
            Outcome::AuthInfoUnavailable
        );
    }

    #[test]
    fn account_results_map_to_pam_codes() {
        let f = fixture();
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
                run(
                    Stage::Account,
                    &login("alice"),
                    &f.args,
                    &mut conv,
                    &mut agent
                )
                .0,
                expected
            );
        }
    }

    /// A fake jms-agentd on a real socket: answers each request on any
    /// connection (`answer`), counting the connections it accepted.
    struct FakeDaemon {
        _dir: tempfile::TempDir,
        socket: PathBuf,
        accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    impl FakeDaemon {
        fn start(answer: fn(&Request) -> Response) -> FakeDaemon {
            use std::sync::atomic::{AtomicUsize, Ordering};
            let dir = tempfile::tempdir().unwrap();
            let socket = dir.path().join("agentd.sock");
            let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
            let accepted = std::sync::Arc::new(AtomicUsize::new(0));
            let count = accepted.clone();
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { return };
                    count.fetch_add(1, Ordering::SeqCst);
                    std::thread::spawn(move || {
                        while let Ok(request) = jms_proto::read_frame::<Request>(&mut stream) {
                            if jms_proto::write_frame(&mut stream, &answer(&request)).is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            FakeDaemon {
                _dir: dir,
                socket,
                accepted,
            }
        }

        fn accepted(&self) -> usize {
            self.accepted.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn agreeable(request: &Request) -> Response {
        match request {
            // tina has TOTP.
            Request::Authenticate {
                user, totp: None, ..
            } if user == "tina" => Response::Auth {
                result: AuthResult::NeedCode,
            },
            Request::Authenticate { .. } => Response::Auth {
                result: AuthResult::Success,
            },
            Request::AccountCheck { .. } => Response::Account {
                result: AccountResult::Allowed,
            },
            _ => Response::Done,
        }
    }

    /// Runs a whole login (auth, account, open and close session) as PAM
    /// does, the connection kept between stages as the module keeps it in
    /// the handle's data.
    fn whole_login(
        f: &Fixture,
        daemon: &FakeDaemon,
        user: &'static str,
        prompts: &[(&'static str, Option<&'static str>)],
    ) {
        let args = Args {
            socket: daemon.socket.clone(),
            ..f.args.clone()
        };
        let mut kept = None;
        for stage in [
            Stage::Auth,
            Stage::Account,
            Stage::OpenSession,
            Stage::CloseSession,
        ] {
            let mut conv = Scripted::new(if stage == Stage::Auth { prompts } else { &[] });
            let mut agent = Socket::with_connection(&args, kept.take());
            let (outcome, reason) = run(stage, &login(user), &args, &mut conv, &mut agent);
            assert_eq!(outcome, Outcome::Success, "{stage:?}: {reason}");
            kept = agent.into_connection();
        }
        assert!(kept.is_none(), "no connection outlives close_session");
    }

    #[test]
    fn a_password_login_uses_one_connection_to_agentd_until_its_session_opens() {
        let f = fixture();
        let daemon = FakeDaemon::start(agreeable);
        whole_login(&f, &daemon, "alice", &[(PASSWORD_PROMPT, Some("pw"))]);
        // auth + account + open_session on one connection; close_session,
        // at the session's end, on its own.
        assert_eq!(daemon.accepted(), 2);
        // With a code: none is held while the user types it.
        let daemon = FakeDaemon::start(agreeable);
        whole_login(
            &f,
            &daemon,
            "tina",
            &[(PASSWORD_PROMPT, Some("pw")), (CODE_PROMPT, Some("123456"))],
        );
        assert_eq!(daemon.accepted(), 3);
    }

    #[test]
    fn a_kept_connection_agentd_closed_is_replaced_without_losing_the_request() {
        let f = fixture();
        let daemon = FakeDaemon::start(agreeable);
        let args = Args {
            socket: daemon.socket.clone(),
            ..f.args.clone()
        };
        // A connection agentd already closed (as it drops idle clients).
        let (client_end, server_end) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(server_end);
        let stale = Client::from_stream(client_end);
        let mut agent = Socket::with_connection(&args, Some((args.socket.clone(), stale)));
        let mut conv = Scripted::new(&[]);
        let (outcome, reason) = run(
            Stage::Account,
            &login("alice"),
            &args,
            &mut conv,
            &mut agent,
        );
        assert_eq!(outcome, Outcome::Success, "{reason}");
        assert_eq!(daemon.accepted(), 1, "one fresh connection replaced it");
    }

    #[test]
    fn arguments_are_parsed_and_unknown_ones_ignored() {
        let parsed = Args::parse(
            [
                "socket=/s",
                "debug",
                "weird",
                "cache=/c",
                "passwd=/p",
                "uids=10-20",
                "uids=x",
            ]
            .iter(),
        );
        assert_eq!(
            parsed,
            Args {
                socket: "/s".into(),
                cache: "/c".into(),
                passwd: "/p".into(),
                uids: IdRange {
                    first: 10,
                    last: 20
                },
                debug: true
            }
        );
    }
}
