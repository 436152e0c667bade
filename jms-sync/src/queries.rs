//! The query strings of the signed `GET` requests (the request signature
//! covers them): one struct per request, encoded by the bastion and
//! decoded by the server, both with `serde_urlencoded`.

use serde::{Deserialize, Serialize};

use crate::fleet::StatusReport;

/// `GET` [`crate::paths::BUNDLE`]: what the bastion holds and where to seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleQuery {
    /// The version the bastion holds (0: none).
    #[serde(default)]
    pub since: u64,
    /// Hex of the bastion's fresh X25519 key: the answer is sealed to it.
    pub transport: String,
    /// Long-poll: seconds to hold the request while `since` is current
    /// (0 answers at once).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait: u64,
}

/// `GET` [`crate::paths::CONTROL`]: how long to wait for orders, and the
/// bastion's [`StatusReport`] (all three fields or none: an older
/// jms-agentd sends none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlQuery {
    #[serde(default)]
    pub wait: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backlog: Option<u64>,
    /// Hex of the poll's fresh X25519 key: job secrets in the answer are
    /// sealed to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}

impl ControlQuery {
    /// A poll waiting `wait` seconds with `report`, job secrets to be
    /// sealed to `transport` (hex of an X25519 public key).
    pub fn new(wait: u64, report: StatusReport, transport: String) -> ControlQuery {
        ControlQuery {
            wait,
            agent: Some(report.agent),
            sessions: Some(report.sessions),
            backlog: Some(report.backlog),
            transport: Some(transport),
        }
    }

    /// The report the poll carries, checked.
    pub fn report(&self) -> Result<Option<StatusReport>, String> {
        match (&self.agent, self.sessions, self.backlog) {
            (None, None, None) => Ok(None),
            (Some(agent), Some(sessions), Some(backlog)) => {
                let report = StatusReport {
                    agent: agent.clone(),
                    sessions,
                    backlog,
                };
                report.check()?;
                Ok(Some(report))
            }
            _ => Err("agent, sessions and backlog come together".into()),
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `query` as a query string.
pub fn encode<T: Serialize>(query: &T) -> String {
    serde_urlencoded::to_string(query).expect("a flat struct of strings and numbers encodes")
}

/// A query string as `T`.
pub fn decode<T: for<'de> Deserialize<'de>>(query: &str) -> Result<T, String> {
    serde_urlencoded::from_str(query).map_err(|e| format!("query: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_poll_carries_its_report_and_the_server_reads_it_back() {
        let report = StatusReport {
            agent: "1.2.0-rc.1+deb12".into(),
            sessions: 3,
            backlog: 4096,
        };
        let query = encode(&ControlQuery::new(25, report.clone(), "ab".repeat(32)));
        assert_eq!(
            query,
            format!(
                "wait=25&agent=1.2.0-rc.1%2Bdeb12&sessions=3&backlog=4096&transport={}",
                "ab".repeat(32)
            )
        );
        let back: ControlQuery = decode(&query).unwrap();
        assert_eq!(back.report(), Ok(Some(report)));
        let old: ControlQuery = decode("wait=5").unwrap();
        assert_eq!(old.report(), Ok(None));
        let half: ControlQuery = decode("wait=5&agent=1.0").unwrap();
        assert!(half.report().is_err());
        assert!(decode::<ControlQuery>("wait=5&evil=1").is_err());
    }

    #[test]
    fn a_bundle_query_round_trips_and_omits_no_wait() {
        let query = BundleQuery {
            since: 7,
            transport: "ab".repeat(32),
            wait: 0,
        };
        let text = encode(&query);
        assert_eq!(text, format!("since=7&transport={}", "ab".repeat(32)));
        assert_eq!(decode::<BundleQuery>(&text), Ok(query));
        assert!(
            decode::<BundleQuery>("since=1").is_err(),
            "transport needed"
        );
    }
}
