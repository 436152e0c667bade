//! pam_jms.so: PAM authenticate / account / session for jms users, thin over
//! [`hooks`] (the logic, testable without PAM) and [`ffi`] (the few raw calls
//! pam-bindings does not wrap: syslog, fail delay, and the jms-agentd
//! connection a login's stages share, kept in the PAM handle's data). Every hook body runs under `catch_unwind`: a
//! panic becomes PAM_SERVICE_ERR and never crosses into sshd.

pub mod ffi;
pub mod hooks;

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pam::constants::{PamFlag, PamMessageStyle, PamResultCode, PAM_ERROR_MSG, PAM_PROMPT_ECHO_OFF};
use pam::conv::Conv;
use pam::items::{RHost, Service, Tty};
use pam::module::{PamHandle, PamHooks};

use crate::hooks::{Args, Conversation, Outcome, Stage};

struct PamJms;
pam::pam_hooks!(PamJms);

/// The PAM conversation, as [`hooks`] sees it.
struct PamConversation<'a>(Option<Conv<'a>>);

impl Conversation for PamConversation<'_> {
    fn ask_hidden(&mut self, prompt: &str) -> Option<String> {
        let reply = self.0.as_ref()?.send(PAM_PROMPT_ECHO_OFF, prompt).ok()??;
        reply.as_str().ok().map(str::to_owned)
    }
    fn tell_error(&mut self, message: &str) {
        if let Some(conv) = &self.0 {
            let style: PamMessageStyle = PAM_ERROR_MSG;
            let _ = conv.send(style, message);
        }
    }
}

fn item<'a, T: pam::items::Item<'a> + std::ops::Deref<Target = &'a CStr>>(
    pamh: &'a PamHandle,
) -> Option<String> {
    pamh.get_item::<T>()
        .ok()
        .flatten()
        .map(|v| v.to_string_lossy().into_owned())
}

/// Runs one stage with everything it needs read off the handle.
fn run(stage: Stage, pamh: &mut PamHandle, args: Vec<&CStr>) -> PamResultCode {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let args = Args::parse(args.iter().map(|a| a.to_string_lossy()));
        let Ok(user) = pamh.get_user(None) else {
            return Outcome::UserUnknown;
        };
        let rhost = item::<RHost>(pamh);
        let service = item::<Service>(pamh).unwrap_or_else(|| "unknown".into());
        let tty = item::<Tty>(pamh);
        let mut conversation = PamConversation(pamh.get_item::<Conv>().ok().flatten());
        let request = hooks::Login {
            user: &user,
            rhost: rhost.as_deref(),
            service: &service,
            tty: tty.as_deref(),
            pid: std::process::id(),
        };
        let mut agent = hooks::Socket::with_connection(&args, ffi::take_connection(pamh));
        let (outcome, reason) = hooks::run(stage, &request, &args, &mut conversation, &mut agent);
        ffi::keep_connection(pamh, agent.into_connection());
        ffi::log_authpriv(
            outcome != Outcome::Success && outcome != Outcome::UserUnknown,
            &format!(
                "pam_jms({service}:{}): user={user} rhost={} result={} reason={reason}",
                stage.name(),
                rhost.as_deref().unwrap_or("-"),
                outcome.name(),
            ),
            args.debug || outcome != Outcome::UserUnknown,
        );
        outcome
    }));
    outcome.unwrap_or(Outcome::ServiceError).code()
}

impl PamHooks for PamJms {
    fn sm_authenticate(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        ffi::request_fail_delay(pamh, hooks::FAIL_DELAY_MICROS);
        run(Stage::Auth, pamh, args)
    }
    fn acct_mgmt(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(Stage::Account, pamh, args)
    }
    fn sm_open_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(Stage::OpenSession, pamh, args)
    }
    fn sm_close_session(pamh: &mut PamHandle, args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        run(Stage::CloseSession, pamh, args)
    }
    fn sm_setcred(_pamh: &mut PamHandle, _args: Vec<&CStr>, _flags: PamFlag) -> PamResultCode {
        PamResultCode::PAM_SUCCESS
    }
}
