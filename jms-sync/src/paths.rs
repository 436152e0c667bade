//! The sync API's paths: constants for the fixed ones, functions for
//! those naming a session, and the route patterns the server mounts
//! them under.

/// `POST`: enroll with a one-time token (unsigned).
pub const ENROLL: &str = "/api/v1/sync/enroll";
/// `POST` (signed, over mutual TLS): a new client certificate.
pub const CERTIFICATE: &str = "/api/v1/sync/certificate";
/// `GET ?since=V&transport=KEY[&wait=S]`: the sealed bundle or delta.
pub const BUNDLE: &str = "/api/v1/sync/bundle";
/// `POST {"events": [...]}`: spooled audit events.
pub const EVENTS: &str = "/api/v1/sync/events";
/// `GET ?wait=S&agent=…&sessions=…&backlog=…[&transport=KEY]`: the
/// server's orders (job secrets sealed to KEY).
pub const CONTROL: &str = "/api/v1/sync/control";
/// Route of a recording's upload (`GET` offset, `PUT` chunk).
pub const RECORDING_ROUTE: &str = "/api/v1/sync/recordings/{session}";
/// Route of a recording's completion (`POST`).
pub const RECORDING_COMPLETE_ROUTE: &str = "/api/v1/sync/recordings/{session}/complete";
/// Route of a watched session's output (`POST`).
pub const LIVE_ROUTE: &str = "/api/v1/sync/live/{session}";
/// Route of an account job's report (`POST` [`crate::job::JobReport`]).
pub const JOB_ROUTE: &str = "/api/v1/sync/jobs/{job}";

/// [`RECORDING_ROUTE`] for `session`.
pub fn recording(session: &str) -> String {
    RECORDING_ROUTE.replace("{session}", session)
}

/// [`RECORDING_COMPLETE_ROUTE`] for `session`.
pub fn recording_complete(session: &str) -> String {
    RECORDING_COMPLETE_ROUTE.replace("{session}", session)
}

/// [`LIVE_ROUTE`] for `session`.
pub fn live(session: &str) -> String {
    LIVE_ROUTE.replace("{session}", session)
}

/// [`JOB_ROUTE`] for `job`.
pub fn job(job: &str) -> String {
    JOB_ROUTE.replace("{job}", job)
}

#[cfg(test)]
mod tests {
    #[test]
    fn session_paths_fill_their_route() {
        assert_eq!(super::recording("s1"), "/api/v1/sync/recordings/s1");
        assert_eq!(
            super::recording_complete("s1"),
            "/api/v1/sync/recordings/s1/complete"
        );
        assert_eq!(super::live("s1"), "/api/v1/sync/live/s1");
        assert_eq!(super::job("j1"), "/api/v1/sync/jobs/j1");
    }
}
