//! System settings (the seed's 系统设置): one typed document kept by the
//! server and carried to every bastion in the policy bundle (its
//! `settings`), where it overrides the bastion's local values. One
//! definition of each setting with its default and its checks
//! ([`Settings::check_fields`]; the server adds those of mail addresses and
//! URLs). Every field has a default, so `{}` is a valid document; unknown
//! fields are refused.

use std::fmt;
use std::time::Duration;

use jms_core::model::{AuditOnFailure, ExecStdin, FilterAction, Secret};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole settings document.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub audit: Audit,
    #[serde(default)]
    pub mail: Mail,
    #[serde(default)]
    pub accounts: Accounts,
}

/// Secrets jms makes for managed accounts (push without a secret,
/// rotation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accounts {
    /// Length of a generated password (8..=128).
    #[serde(default = "default_generated_password_length")]
    pub password_length: u32,
    /// Character classes a generated password holds (lower case always).
    #[serde(default = "yes")]
    pub password_uppercase: bool,
    #[serde(default = "yes")]
    pub password_digits: bool,
    #[serde(default = "yes")]
    pub password_symbols: bool,
}

impl Default for Accounts {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

fn default_generated_password_length() -> u32 {
    24
}

/// Passwords, lockout, MFA and session limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    #[serde(default = "default_password_min_length")]
    pub password_min_length: u32,
    #[serde(default = "yes")]
    pub password_require_uppercase: bool,
    #[serde(default = "yes")]
    pub password_require_lowercase: bool,
    #[serde(default = "yes")]
    pub password_require_digit: bool,
    #[serde(default)]
    pub password_require_symbol: bool,
    /// Failed logins before the account locks; 0 never locks.
    #[serde(default = "default_lockout_threshold")]
    pub lockout_threshold: u32,
    #[serde(default = "default_lockout_duration")]
    pub lockout_duration: Span,
    /// Who must use a second factor.
    #[serde(default)]
    pub mfa_required: MfaRequired,
    /// With `mfa_required: groups`: the user groups that must.
    #[serde(default)]
    pub mfa_groups: Vec<String>,
    #[serde(default = "default_idle_timeout")]
    pub session_idle_timeout: Span,
    #[serde(default = "default_max_session")]
    pub max_session_length: Span,
}

impl Default for Security {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaRequired {
    #[default]
    None,
    All,
    Groups,
}

impl MfaRequired {
    /// Why `user` may not log in for want of a second factor: none when
    /// she has TOTP or none is required of her (with `groups`, when she is
    /// in one of `groups`). One rule for the bastions (PAM) and the
    /// engineers' portal.
    pub fn missing_second_factor(
        self,
        groups: &[String],
        user: &jms_core::model::User,
    ) -> Option<String> {
        if user.totp_secret.is_some() {
            return None;
        }
        let required = match self {
            MfaRequired::None => false,
            MfaRequired::All => true,
            MfaRequired::Groups => user.groups.iter().any(|g| groups.contains(g)),
        };
        required.then(|| {
            "two-factor authentication is required for this account but no TOTP is set up: ask an administrator to enrol one".to_string()
        })
    }
}

/// What the bastion records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// Record what the user types too, not only what the target prints.
    #[serde(default)]
    pub record_input: bool,
    /// Largest recording kept per session, in bytes (then it is cut).
    #[serde(default = "default_recording_max_bytes")]
    pub recording_max_bytes: u64,
    /// What happens to a command no filter matches.
    #[serde(default = "default_filter_action")]
    pub command_filter_default: FilterAction,
    /// The input of an exec'd shell or interpreter without a terminal
    /// (`printf 'reboot\n' | ssh bastion 'web01 sh'`): `check` each line
    /// against the command filters, `refuse` the exec, or `pass` it.
    #[serde(default)]
    pub exec_stdin: ExecStdin,
    /// More program names treated as interpreters for `exec_stdin`.
    #[serde(default)]
    pub stdin_interpreters: Vec<String>,
    /// When a bastion's spool or recording store cannot take more:
    /// `refuse` new sessions (and end one whose recording stops) or
    /// `continue` unaudited, with an alarm either way.
    #[serde(default)]
    pub on_failure: AuditOnFailure,
}

impl Default for Audit {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

/// Outgoing mail (set-password links, alerts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mail {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub smtp_host: String,
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    #[serde(default)]
    pub smtp_security: SmtpSecurity,
    #[serde(default)]
    pub username: String,
    /// Write-only: sealed at rest, never returned (reads say `has_password`).
    #[serde(default, skip_serializing)]
    pub password: Option<Secret>,
    /// Sender address (`jms <jms@example.com>` or `jms@example.com`).
    #[serde(default)]
    pub from: String,
    /// The server's address as users reach it: links in mails start with
    /// it (`https://jms.example.com`).
    #[serde(default)]
    pub site_url: String,
    /// How long a mailed set-password link works.
    #[serde(default = "default_link_lifetime")]
    pub link_lifetime: Span,
}

impl Default for Mail {
    fn default() -> Self {
        serde_json::from_value(serde_json::json!({})).expect("every field has a default")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

fn yes() -> bool {
    true
}
fn default_password_min_length() -> u32 {
    8
}
fn default_lockout_threshold() -> u32 {
    5
}
fn default_lockout_duration() -> Span {
    Span(Duration::from_secs(30 * 60))
}
fn default_idle_timeout() -> Span {
    Span(Duration::from_secs(30 * 60))
}
fn default_max_session() -> Span {
    Span(Duration::from_secs(24 * 3600))
}
fn default_recording_max_bytes() -> u64 {
    1 << 30
}
fn default_filter_action() -> FilterAction {
    FilterAction::Allow
}
fn default_smtp_port() -> u16 {
    587
}
fn default_link_lifetime() -> Span {
    Span(Duration::from_secs(24 * 3600))
}
/// Longest `mail.link_lifetime`.
pub const MAX_LINK_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

impl Settings {
    /// Checks values serde cannot; `groups` are the user groups that exist.
    /// (The server checks mail addresses and URLs on top.)
    pub fn check_fields(&self, groups: &[&str]) -> Result<(), String> {
        let s = &self.security;
        if !(1..=128).contains(&s.password_min_length) {
            return Err(format!(
                "security.password_min_length: {} is outside 1..=128",
                s.password_min_length
            ));
        }
        for (name, span) in [
            ("security.lockout_duration", s.lockout_duration),
            ("security.session_idle_timeout", s.session_idle_timeout),
            ("security.max_session_length", s.max_session_length),
        ] {
            if span.0.is_zero() {
                return Err(format!("{name}: must be longer than 0s"));
            }
        }
        if s.mfa_required != MfaRequired::Groups && !s.mfa_groups.is_empty() {
            return Err(
                "security.mfa_groups: only used with mfa_required: groups (empty it or set mfa_required to groups)"
                    .to_string(),
            );
        }
        for (i, group) in s.mfa_groups.iter().enumerate() {
            if !groups.contains(&group.as_str()) {
                return Err(format!(
                    "security.mfa_groups[{i}]: unknown user group `{group}`"
                ));
            }
        }
        if !(8..=128).contains(&self.accounts.password_length) {
            return Err(format!(
                "accounts.password_length: {} is outside 8..=128",
                self.accounts.password_length
            ));
        }
        if self.audit.recording_max_bytes == 0 {
            return Err("audit.recording_max_bytes: must be more than 0".to_string());
        }
        let m = &self.mail;
        if m.smtp_port == 0 {
            return Err("mail.smtp_port: port 0".to_string());
        }
        if m.enabled
            && (m.smtp_host.trim().is_empty()
                || m.from.trim().is_empty()
                || m.site_url.trim().is_empty())
        {
            return Err("mail: enabled needs smtp_host, from and site_url".to_string());
        }
        if m.link_lifetime.0.is_zero() || m.link_lifetime.0 > MAX_LINK_LIFETIME {
            return Err("mail.link_lifetime: between 1s and 30 days".to_string());
        }
        Ok(())
    }
}

/// A duration written the human way (`30m`, `1h 30m`, `24h`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map(Span).map_err(|e| {
            serde::de::Error::custom(format!(
                "bad duration `{text}`: {e} (write it like 30m or 1h 30m)"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_document_takes_every_default() {
        let settings: Settings = serde_json::from_str("{}").unwrap();
        assert_eq!(settings, Settings::default());
        assert_eq!(settings.security.lockout_threshold, 5);
        let shown = serde_json::to_value(&settings).unwrap();
        assert_eq!(shown["security"]["lockout_duration"], "30m");
        assert_eq!(shown["audit"]["command_filter_default"], "allow");
        assert!(shown["mail"].get("password").is_none());
        assert!(settings.check_fields(&[]).is_ok());
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused() {
        let err = serde_json::from_str::<Settings>(r#"{"security": {"lockout": 3}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `lockout`"), "{err}");
        let err = serde_json::from_str::<Settings>(r#"{"security": {"lockout_duration": "soon"}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad duration `soon`"), "{err}");
        let mut settings = Settings::default();
        settings.security.mfa_required = MfaRequired::Groups;
        settings.security.mfa_groups = vec!["ops".into()];
        assert_eq!(
            settings.check_fields(&["dev"]).unwrap_err(),
            "security.mfa_groups[0]: unknown user group `ops`"
        );
        assert!(settings.check_fields(&["ops"]).is_ok());
    }
}
