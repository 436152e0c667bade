//! The raw calls pam-bindings does not wrap: syslog to authpriv and
//! pam_fail_delay.

use std::ffi::CString;

/// Logs one line to syslog's authpriv facility (warning when `failure`),
/// if `wanted`. NULs are stripped; nothing else is escaped.
pub fn log_authpriv(failure: bool, line: &str, wanted: bool) {
    if !wanted {
        return;
    }
    let Ok(message) = CString::new(line.replace('\0', "")) else {
        return;
    };
    let priority = libc::LOG_AUTHPRIV
        | if failure {
            libc::LOG_WARNING
        } else {
            libc::LOG_INFO
        };
    // SAFETY: the format is a static "%s" and `message` is a valid C string
    // that outlives the call.
    unsafe { libc::syslog(priority, c"%s".as_ptr(), message.as_ptr()) };
}

extern "C" {
    fn pam_fail_delay(pamh: *mut pam::module::PamHandle, micro_sec: libc::c_uint) -> libc::c_int;
}

/// Asks PAM to wait `micros` (randomised by ±25 %) before reporting a
/// failed authentication, as pam_unix does, so jms users and other users
/// fail alike and guessing stays slow.
pub fn request_fail_delay(pamh: &mut pam::module::PamHandle, micros: u32) {
    // SAFETY: `pamh` is the live handle PAM passed to this hook.
    unsafe { pam_fail_delay(pamh, micros) };
}
