//! The raw calls pam-bindings does not wrap: syslog to authpriv,
//! pam_fail_delay, and the typed PAM data that keeps a login's jms-agentd
//! connection between its stages.

use std::ffi::CString;
use std::path::PathBuf;
use std::sync::Mutex;

use jms_proto::Client;

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

/// The PAM data key of the kept jms-agentd connection.
const CONNECTION_KEY: &str = "pam_jms.agentd_connection";

/// What is stored under [`CONNECTION_KEY`]: the socket path and its open
/// connection, if any. PAM drops it (closing the connection) at pam_end.
type Kept = Mutex<Option<(PathBuf, Client)>>;

fn kept(pamh: &pam::module::PamHandle) -> Option<&Kept> {
    // SAFETY: only `keep_connection` sets data under CONNECTION_KEY (a
    // module's keys are its own by convention, hence the prefix), always as
    // a boxed `Kept`; PAM keeps it alive until pam_end or until it is set
    // again, and it is never set again (the Mutex is updated in place).
    unsafe { pamh.get_data::<Kept>(CONNECTION_KEY) }.ok()
}

/// The connection an earlier stage of this PAM transaction kept.
pub fn take_connection(pamh: &pam::module::PamHandle) -> Option<(PathBuf, Client)> {
    kept(pamh)?.lock().unwrap_or_else(|e| e.into_inner()).take()
}

/// Keeps `connection` (or none) for the next stage of this PAM transaction.
pub fn keep_connection(pamh: &mut pam::module::PamHandle, connection: Option<(PathBuf, Client)>) {
    if let Some(slot) = kept(pamh) {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = connection;
    } else if let Some(connection) = connection {
        // On failure the connection is dropped (closed) by pam-bindings.
        let _ = pamh.set_data(CONNECTION_KEY, Box::new(Kept::new(Some(connection))));
    }
}
