//! One-time set-password links: issue (and mail), look up, redeem.
//!
//! A link is `{mail.site_url}/password/set?token=T` with T 32 random bytes
//! in hex; the store keeps only SHA-256(T). Issuing a link for a user
//! revokes her older unused links and logs `send-password-link`. Redeeming
//! marks the link used (atomically: a link works once even when two
//! requests race) and then sets the password through the normal write path
//! ([`PolicyService::change`]: checked, policy version bumped, logged), so the new
//! hash reaches every bastion with the next bundle.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jms_core::model::Secret;
use ring::rand::{SecureRandom, SystemRandom};

use super::blocking;
use crate::crypto::token_hash;
use crate::error::AdminError;
use crate::mail::{self, MailError, Outgoing};
use crate::policy::PolicyService;
use crate::settings::Mail;
use crate::settings::Settings;
use crate::store::{NewOpLogEntry, PasswordTokenRow, Purpose, ReadTx, Store};

/// Where a link leads: the page that sets the password.
pub const SET_PATH: &str = "/password/set";

/// Why a link was not sent.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Mail(#[from] MailError),
    /// Mail is switched off (409).
    #[error(
        "mail is not enabled: set mail.smtp_host, mail.from and mail.site_url, then \
         `jmsctl settings set mail.enabled true`"
    )]
    Disabled,
    /// The user has no address to mail the link to (409).
    #[error("user `{0}` has no email address: set one first")]
    NoEmail(String),
}

impl From<crate::store::StoreError> for LinkError {
    fn from(e: crate::store::StoreError) -> Self {
        LinkError::Admin(e.into())
    }
}

/// A link that was mailed.
#[derive(Debug, Clone)]
pub struct LinkSent {
    pub username: String,
    /// The address it went to.
    pub to: String,
    pub expires_at: DateTime<Utc>,
}

/// A link that was stored (not yet mailed).
struct Issued {
    id: i64,
    token: String,
    name: String,
    email: String,
    expires_at: DateTime<Utc>,
}

/// What a token in a URL stands for.
#[derive(Debug, Clone)]
pub enum LinkState {
    /// Usable: the link's row.
    Valid(PasswordTokenRow),
    /// No such link (never issued, or its user was deleted).
    Unknown,
    Used,
    /// A newer link was sent for the same user.
    Replaced,
    Expired,
}

/// A fresh token: 32 random bytes in hex.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("system random");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `token` looks like one we issue (so junk never reaches the store).
fn well_formed(token: &str) -> bool {
    token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The self-service service: set-password links (issued, mailed,
/// redeemed), and what the pages behind them read. A redeemed link sets
/// the password through the policy service's write path.
pub struct Links {
    store: Store,
    policy: Arc<PolicyService>,
}

impl Links {
    /// The server's seal key (for keys derived from it).
    pub fn seal_key(&self) -> &crate::crypto::SealKey {
        self.policy.seal_key()
    }

    pub fn new(store: Store, policy: Arc<PolicyService>) -> Links {
        Links { store, policy }
    }

    /// The store (the self-service rate limits count in it).
    pub(crate) fn store(&self) -> Store {
        self.store.clone()
    }

    /// A read transaction (users, for the pages).
    pub fn read(&self) -> Result<Box<dyn ReadTx + '_>, AdminError> {
        Ok(self.store.read()?)
    }

    /// The settings (password rules, mail), and whether a mail password
    /// is set.
    pub fn settings(&self) -> Result<(Settings, bool), AdminError> {
        self.policy.settings()
    }

    /// The settings with the mail password opened, for sending mail.
    pub(crate) fn settings_with_mail_password(&self) -> Result<Settings, AdminError> {
        self.policy.settings_with_mail_password()
    }

    /// Stores a new link for `username` valid for `lifetime`, revoking her
    /// older ones, and logs it as `actor`.
    fn issue_password_link(
        &self,
        actor: &str,
        username: &str,
        purpose: Purpose,
        lifetime: Duration,
    ) -> Result<Issued, LinkError> {
        let mut tx = self.store.write()?;
        let row = tx
            .user(username)?
            .ok_or_else(|| AdminError::NotFound(format!("user `{username}` not found")))?;
        let email = row
            .user
            .email
            .clone()
            .filter(|e| !e.trim().is_empty())
            .ok_or_else(|| LinkError::NoEmail(username.to_string()))?;
        let token = new_token();
        let lifetime = chrono::Duration::from_std(lifetime)
            .map_err(|_| AdminError::BadInput("mail.link_lifetime is too long".to_string()))?;
        let expires_at = Utc::now() + lifetime;
        let id = tx.insert_password_token(row.id, purpose, &token_hash(&token), expires_at)?;
        let version = tx.policy_version()?;
        tx.append_oplog(&NewOpLogEntry {
            actor: actor.to_string(),
            action: "send-password-link".to_string(),
            kind: "user".to_string(),
            name: username.to_string(),
            fields: Vec::new(),
            version,
        })?;
        tx.commit()?;
        Ok(Issued {
            id,
            token,
            name: row.user.name,
            email,
            expires_at,
        })
    }

    fn revoke_password_link(&self, id: i64) -> Result<(), AdminError> {
        let mut tx = self.store.write()?;
        tx.revoke_password_token(id)?;
        tx.commit()?;
        Ok(())
    }

    /// What `token` stands for now.
    pub fn password_link(&self, token: &str) -> Result<LinkState, AdminError> {
        if !well_formed(token) {
            return Ok(LinkState::Unknown);
        }
        let Some(row) = self.store.read()?.password_token(&token_hash(token))? else {
            return Ok(LinkState::Unknown);
        };
        Ok(if row.used_at.is_some() {
            LinkState::Used
        } else if row.revoked_at.is_some() {
            LinkState::Replaced
        } else if row.expires_at <= Utc::now() {
            LinkState::Expired
        } else {
            LinkState::Valid(row)
        })
    }

    /// Redeems the link `link` (from [`Links::password_link`]): marks it
    /// used, then sets the user's password hash (and TOTP secret). Returns
    /// the new policy version, or `None` when the link was used (or
    /// revoked, or expired) in the meantime and nothing changed.
    ///
    /// A link enrolls a first TOTP secret only: a user who has one keeps
    /// it (whoever holds the mailbox must not replace the second factor;
    /// an admin resets it), and a new secret for her is refused before the
    /// link is used.
    pub fn redeem_password_link(
        &self,
        link: &PasswordTokenRow,
        password_hash: String,
        totp_secret: Option<String>,
    ) -> Result<Option<u64>, AdminError> {
        if totp_secret.is_some()
            && self
                .store
                .read()?
                .user(&link.username)?
                .is_some_and(|u| u.totp_secret.is_some())
        {
            return Err(AdminError::Forbidden(TOTP_KEPT.into()));
        }
        {
            let mut tx = self.store.write()?;
            if !tx.use_password_token(link.id)? {
                return Ok(None);
            }
            tx.commit()?;
        }
        let username = link.username.clone();
        let actor = format!("self-service: {username} (set-password link {})", link.id);
        let applied = self.policy.change(&actor, false, |doc| {
            let user = doc
                .users
                .iter_mut()
                .find(|u| u.username == username)
                .ok_or_else(|| AdminError::NotFound(format!("user `{username}` not found")))?;
            if totp_secret.is_some() && user.totp_secret.is_some() {
                return Err(AdminError::Forbidden(TOTP_KEPT.into()));
            }
            user.password_hash = Some(Secret::new(password_hash));
            if let Some(secret) = totp_secret {
                user.totp_secret = Some(Secret::new(secret));
            }
            Ok(())
        })?;
        tracing::info!(user = link.username, link = link.id, "password set by link");
        Ok(Some(applied.version))
    }
}

/// Why a link does not replace a second factor.
const TOTP_KEPT: &str = "this account already has an authenticator app: a set-password link \
                         cannot replace it; an administrator resets it";

/// The link in the mail.
fn link_url(site_url: &str, token: &str) -> String {
    format!(
        "{}{}?token={token}",
        site_url.trim_end_matches('/'),
        SET_PATH
    )
}

/// The mail's text.
fn mail_text(
    mail: &Mail,
    username: &str,
    name: &str,
    purpose: Purpose,
    url: &str,
    expires_at: DateTime<Utc>,
) -> String {
    let greeting = if name.trim().is_empty() {
        username
    } else {
        name.trim()
    };
    let why = match purpose {
        Purpose::Welcome => {
            format!("An account was created for you on jms, user name: {username}.")
        }
        Purpose::Reset => format!(
            "A new password was requested for your jms account {username} (by you, or by an \
             administrator)."
        ),
    };
    format!(
        "Hello {greeting},\n\
         \n\
         {why}\n\
         \n\
         Set your password here:\n\
         \n\
         {url}\n\
         \n\
         The link works once, for {}, until {}.\n\
         If you did not expect this mail, ignore it: nothing changes until the link is used.\n",
        lifetime_text(mail.link_lifetime.0),
        expires_at.format("%Y-%m-%d %H:%M UTC"),
    )
}

/// `24 hours`, `30 minutes`, `90 seconds`: the largest whole unit.
pub(crate) fn lifetime_text(lifetime: Duration) -> String {
    let secs = lifetime.as_secs();
    let (n, unit) = if secs > 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Issues a link for `username` and mails it. With mail disabled, or no
/// address, nothing is stored; when the mail cannot be sent the new link is
/// revoked again (her older links stay revoked).
pub async fn send_link(
    links: Arc<Links>,
    actor: String,
    username: String,
    purpose: Purpose,
) -> Result<LinkSent, LinkError> {
    let (mail, issued) = blocking(&links, move |links| {
        let settings = links.settings_with_mail_password()?;
        if !settings.mail.enabled {
            return Err(LinkError::Disabled);
        }
        let lifetime = settings.mail.link_lifetime.0;
        let issued = links.issue_password_link(&actor, &username, purpose, lifetime)?;
        Ok((settings.mail, (username, issued)))
    })
    .await?;
    let (username, issued) = issued;
    let outgoing = (|| {
        let mut to = mail::mailbox(&issued.email)?;
        if !issued.name.trim().is_empty() {
            to.name = Some(issued.name.trim().to_string());
        }
        let url = link_url(&mail.site_url, &issued.token);
        Ok::<_, MailError>(Outgoing {
            to,
            subject: match purpose {
                Purpose::Welcome => "jms: set your password".to_string(),
                Purpose::Reset => "jms: set a new password".to_string(),
            },
            text: mail_text(
                &mail,
                &username,
                &issued.name,
                purpose,
                &url,
                issued.expires_at,
            ),
        })
    })();
    let result = match outgoing {
        Ok(outgoing) => mail::send(&mail, outgoing).await.map(|_| ()),
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        let id = issued.id;
        blocking(&links, move |links| links.revoke_password_link(id)).await?;
        tracing::warn!(user = username, error = %e, "set-password link not sent");
        return Err(e.into());
    }
    Ok(LinkSent {
        username,
        to: issued.email,
        expires_at: issued.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_junk_is_refused() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert!(well_formed(&a) && well_formed(&b));
        assert!(!well_formed("x"));
        assert!(!well_formed(&"g".repeat(64)));
        assert_eq!(lifetime_text(Duration::from_secs(86_400)), "24 hours");
        assert_eq!(lifetime_text(Duration::from_secs(3 * 86_400)), "3 days");
        assert_eq!(lifetime_text(Duration::from_secs(1800)), "30 minutes");
        assert_eq!(lifetime_text(Duration::from_secs(1)), "1 second");
        assert_eq!(
            link_url("https://jms.example.com/", &a),
            format!("https://jms.example.com/password/set?token={a}")
        );
    }
}
