//! Account jobs (push, verify, rotate): the server's order for the bastion
//! that runs one ([`JobOrder`], inside [`crate::control::Order::Job`]),
//! the secrets it needs ([`JobSecrets`], never in the order itself: sealed
//! to the control poll's transport key, [`crate::control::ControlAnswer::secrets`]),
//! and the bastion's typed report ([`JobReport`], `POST`
//! [`crate::paths::job`]), which never carries a secret.
//!
//! The checks here ([`check_username`], [`check_shell`], [`check_group`],
//! [`check_sudo_rule`]) run on both sides: on the server before an order
//! is made, on the bastion again before anything reaches a target.

use jms_core::model::{Secret, SecretType};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest output of one step kept in a report.
pub const MAX_STEP_DETAIL: usize = 4096;
/// Most steps in one report.
pub const MAX_STEPS: usize = 32;
/// Largest report body the server reads.
pub const MAX_REPORT_BYTES: usize = 256 * 1024;

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Create the account on the asset if missing (shell, home, groups),
    /// set its password or install its public key, put its sudoers
    /// snippet in place; a second push changes nothing.
    Push,
    /// Log in with the stored secret.
    Verify,
    /// Apply a new secret, log in with it, and only then report success
    /// (the server commits it to the vault on that report).
    Rotate,
    /// Delete the account from the asset (its home and sudoers snippet);
    /// the vault keeps it until an admin deletes it.
    Remove,
    /// List the asset's local users with a login shell (last login where
    /// known) and its facts (hostname, OS, kernel, CPUs, memory).
    Discover,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Push => "push",
            JobKind::Verify => "verify",
            JobKind::Rotate => "rotate",
            JobKind::Remove => "remove",
            JobKind::Discover => "discover",
        }
    }
}

impl std::str::FromStr for JobKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "push" => Ok(JobKind::Push),
            "verify" => Ok(JobKind::Verify),
            "rotate" => Ok(JobKind::Rotate),
            "remove" => Ok(JobKind::Remove),
            "discover" => Ok(JobKind::Discover),
            other => Err(format!("unknown job kind `{other}`")),
        }
    }
}

/// Where the job connects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAsset {
    pub name: String,
    pub address: String,
    pub port: u16,
    /// Pinned host keys (empty: the bastion's first-seen key).
    #[serde(default)]
    pub host_keys: Vec<String>,
}

/// The managed account as the target should have it (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobAccount {
    /// Its name in the policy.
    pub name: String,
    pub username: String,
    pub secret_type: SecretType,
    /// Login shell for a created account (`/bin/bash` when absent).
    #[serde(default)]
    pub shell: Option<String>,
    /// Supplementary groups (created when missing).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Commands it may run as root through sudo (a sudoers command list).
    #[serde(default)]
    pub sudo: Option<String>,
    /// Public key lines (`ssh-ed25519 AAAA… comment`): of the secret in
    /// the vault and, for a rotation or a generated key, of the new one.
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub new_public_key: Option<String>,
}

/// The asset's privileged account, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPrivileged {
    pub name: String,
    pub username: String,
    pub secret_type: SecretType,
}

/// One job for one bastion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOrder {
    /// The job's id (names its report).
    pub id: String,
    pub action: JobKind,
    pub asset: JobAsset,
    pub account: JobAccount,
    /// The asset's privileged account (absent for a verification).
    #[serde(default)]
    pub privileged: Option<JobPrivileged>,
    /// Which attempt this is (1 on the job's first bastion; a retry after
    /// a bastion was lost finds out which secret is live).
    #[serde(default)]
    pub attempt: u32,
}

/// A job's secrets, sealed to the bastion in the control answer, keyed by
/// job id.
#[derive(Clone, Serialize, Deserialize)]
pub struct JobSecrets {
    /// The privileged account's secret (password or private key).
    #[serde(default)]
    pub privileged: Option<Secret>,
    /// The account's secret in the vault.
    #[serde(default)]
    pub current: Option<Secret>,
    /// The new secret (rotation, or a key generated for a push).
    #[serde(default)]
    pub new: Option<Secret>,
}

impl std::fmt::Debug for JobSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobSecrets(***)")
    }
}

/// The sealed part of a control answer: job id → its secrets.
pub type SealedSecrets = BTreeMap<String, JobSecrets>;

/// One step of a job as the bastion reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobStep {
    /// `login`, `apply`, `verify_new`, `rollback`, …
    pub name: String,
    pub ok: bool,
    /// What the step said (the target's output, cut at
    /// [`MAX_STEP_DETAIL`]); never a secret.
    #[serde(default)]
    pub detail: String,
}

/// The bastion's report of a finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobReport {
    pub ok: bool,
    /// Whether the target changed (a push that found everything in place
    /// says false).
    #[serde(default)]
    pub changed: bool,
    /// For a rotation: the new secret works on the target and the old one
    /// no longer matters (the server commits the new one). For a push: the
    /// new (generated) secret is in place.
    #[serde(default)]
    pub new_secret_in_place: bool,
    pub steps: Vec<JobStep>,
    #[serde(default)]
    pub error: Option<String>,
}

impl JobReport {
    /// Refuses a report over the limits (a hostile or broken bastion).
    pub fn check(&self) -> Result<(), String> {
        if self.steps.len() > MAX_STEPS {
            return Err(format!("a job report has at most {MAX_STEPS} steps"));
        }
        for step in &self.steps {
            if step.name.len() > 64 || step.detail.len() > MAX_STEP_DETAIL + 64 {
                return Err("a job step's name or detail is too long".into());
            }
        }
        if self
            .error
            .as_ref()
            .is_some_and(|e| e.len() > MAX_STEP_DETAIL)
        {
            return Err("a job report's error is too long".into());
        }
        Ok(())
    }
}

/// Cuts `text` to [`MAX_STEP_DETAIL`] bytes at a character boundary.
pub fn cut_detail(text: &str) -> String {
    let text = text.trim();
    if text.len() <= MAX_STEP_DETAIL {
        return text.to_string();
    }
    let mut end = MAX_STEP_DETAIL;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A username a job may create or log in as: POSIX portable
/// (`[a-z_][a-z0-9_-]*`, at most 32), so it is never an option, a path
/// or shell syntax.
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "username `{}`: use [a-z_][a-z0-9_-]*, at most 32 characters",
            name.escape_debug()
        ))
    }
}

/// A group name: as a username.
pub fn check_group(name: &str) -> Result<(), String> {
    check_username(name).map_err(|_| {
        format!(
            "group `{}`: use [a-z_][a-z0-9_-]*, at most 32 characters",
            name.escape_debug()
        )
    })
}

/// A login shell: an absolute path of plain characters.
pub fn check_shell(shell: &str) -> Result<(), String> {
    let ok = shell.starts_with('/')
        && shell.len() <= 128
        && !shell.contains("/../")
        && shell
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "shell `{}`: an absolute path of [A-Za-z0-9/._-]",
            shell.escape_debug()
        ))
    }
}

/// A sudo rule: one sudoers command list on one line (`visudo -c` checks
/// its syntax on the target before it is put in place).
pub fn check_sudo_rule(rule: &str) -> Result<(), String> {
    let rule_t = rule.trim();
    if rule_t.is_empty() || rule.len() > 1024 {
        return Err("sudo rule: one command list, at most 1024 characters".into());
    }
    if rule.chars().any(|c| c.is_control()) {
        return Err("sudo rule: no line breaks or control characters".into());
    }
    Ok(())
}

/// Checks what an order asks of a target.
pub fn check_order(order: &JobOrder) -> Result<(), String> {
    check_username(&order.account.username)?;
    if let Some(privileged) = &order.privileged {
        check_username(&privileged.username)?;
    }
    if let Some(shell) = &order.account.shell {
        check_shell(shell)?;
    }
    for group in &order.account.groups {
        check_group(group)?;
    }
    if let Some(rule) = &order.account.sudo {
        check_sudo_rule(rule)?;
    }
    for key in [&order.account.public_key, &order.account.new_public_key]
        .into_iter()
        .flatten()
    {
        check_public_key(key)?;
    }
    Ok(())
}

/// A public key line: `type base64 [comment]` on one line.
pub fn check_public_key(key: &str) -> Result<(), String> {
    let mut parts = key.split(' ');
    let kind = parts.next().unwrap_or_default();
    let blob = parts.next().unwrap_or_default();
    let ok = key.len() <= 8192
        && kind.starts_with("ssh-") | kind.starts_with("ecdsa-")
        && !blob.is_empty()
        && blob
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        && !key.chars().any(|c| c.is_control());
    if ok {
        Ok(())
    } else {
        Err("public key: one `type base64 [comment]` line".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_be_options_paths_or_shell_are_refused() {
        for bad in [
            "",
            "-oProxyCommand",
            "a b",
            "a;b",
            "$(id)",
            "A",
            "a/b",
            "../x",
            "a\nb",
            "1abc",
        ] {
            assert!(check_username(bad).is_err(), "{bad:?} should be refused");
        }
        for good in ["deploy", "_svc", "web-01", "a_b9"] {
            assert!(check_username(good).is_ok(), "{good:?} should pass");
        }
        assert!(check_shell("/bin/bash").is_ok());
        for bad in ["bash", "/bin/sh -c id", "/bin/$(id)", "/x/../y", "/bin/a\n"] {
            assert!(check_shell(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(check_sudo_rule("/usr/bin/systemctl restart nginx").is_ok());
        assert!(check_sudo_rule("/bin/true\nALL ALL=(ALL) ALL").is_err());
        assert!(check_public_key("ssh-ed25519 AAAAC3Nza x@y").is_ok());
        assert!(check_public_key("ssh-ed25519 AAAA\nssh-rsa BBBB").is_err());
        assert!(check_public_key("from=\"x\" ssh-ed25519 AAAA").is_err());
    }

    #[test]
    fn secrets_never_show_in_debug_and_reports_are_bounded() {
        let secrets = JobSecrets {
            privileged: Some(Secret::new("root-pw")),
            current: Some(Secret::new("old-pw")),
            new: Some(Secret::new("new-pw")),
        };
        let shown = format!("{secrets:?}");
        assert!(!shown.contains("pw"), "{shown}");
        let report = JobReport {
            ok: true,
            changed: false,
            new_secret_in_place: false,
            steps: vec![
                JobStep {
                    name: "x".into(),
                    ok: true,
                    detail: String::new(),
                };
                MAX_STEPS + 1
            ],
            error: None,
        };
        assert!(report.check().is_err());
        assert_eq!(
            cut_detail(&"é".repeat(5000)).len(),
            MAX_STEP_DETAIL + "…".len()
        );
    }
}
