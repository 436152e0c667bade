//! What a bastion reports about itself to the server (`jmsctl bastion
//! list`): carried in the query of its signed control poll
//! ([`crate::queries::ControlQuery`]), so the request signature covers it.

use serde::{Deserialize, Serialize};

/// Longest `agent` version string the server keeps.
pub const MAX_AGENT_VERSION: usize = 64;

/// A bastion's own state, as of its latest control poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The jms-agentd version (`CARGO_PKG_VERSION`).
    pub agent: String,
    /// Sessions open on the bastion now.
    pub sessions: u64,
    /// Bytes of audit events spooled and not yet uploaded.
    pub backlog: u64,
}

impl StatusReport {
    /// Checks a report the server received: a short printable version.
    pub fn check(&self) -> Result<(), String> {
        if self.agent.is_empty()
            || self.agent.len() > MAX_AGENT_VERSION
            || !self
                .agent
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+_~".contains(c))
        {
            return Err(format!(
                "agent: a version of 1 to {MAX_AGENT_VERSION} characters [A-Za-z0-9.+_~-]"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_a_short_printable_version() {
        let report = StatusReport {
            agent: "1.2.0-rc.1+deb12".into(),
            sessions: 3,
            backlog: 4096,
        };
        assert!(report.check().is_ok());
        for bad in ["", "1.0 beta", "1.0\n", &"9".repeat(65)] {
            let report = StatusReport {
                agent: bad.to_string(),
                ..report.clone()
            };
            assert!(report.check().is_err(), "{bad:?}");
        }
    }
}
