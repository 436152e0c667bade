//! System settings: the document is the sync contract's
//! ([`jms_sync::settings`], one definition for server and bastions); the
//! server adds the checks that need its mail and URL parsers
//! ([`SettingsCheck::check`]).

pub use jms_sync::settings::{
    Audit, Mail, MfaRequired, Security, Settings, SmtpSecurity, Span, MAX_LINK_LIFETIME,
};

/// Every check of a settings document the server takes.
pub trait SettingsCheck {
    /// [`Settings::check_fields`], then mail addresses and URLs; `groups`
    /// are the user groups that exist.
    fn check(&self, groups: &[&str]) -> Result<(), String>;
}

impl SettingsCheck for Settings {
    fn check(&self, groups: &[&str]) -> Result<(), String> {
        self.check_fields(groups)?;
        let m = &self.mail;
        if !m.from.is_empty() && m.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(format!(
                "mail.from: `{}` is not an email address (write it like jms@example.com or \
                 \"jms <jms@example.com>\")",
                m.from
            ));
        }
        if !m.site_url.is_empty() {
            check_site_url(&m.site_url)?;
        }
        Ok(())
    }
}

/// `mail.site_url`: an http(s) URL with a host and nothing after the path.
fn check_site_url(text: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "mail.site_url: `{text}` {why} (write it like https://jms.example.com)"
        ))
    };
    let Ok(url) = reqwest::Url::parse(text) else {
        return bad("is not a URL");
    };
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return bad("is not an http or https URL with a host");
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return bad("must not carry credentials, a query or a fragment");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn mail_settings_are_checked() {
        let mut settings = Settings::default();
        assert_eq!(
            settings.mail.link_lifetime.0,
            Duration::from_secs(24 * 3600)
        );
        settings.mail.enabled = true;
        settings.mail.smtp_host = "127.0.0.1".into();
        settings.mail.from = "jms <jms@example.com>".into();
        assert_eq!(
            settings.check(&[]).unwrap_err(),
            "mail: enabled needs smtp_host, from and site_url"
        );
        settings.mail.site_url = "https://jms.example.com".into();
        assert!(settings.check(&[]).is_ok());
        for (url, why) in [
            ("jms.example.com", "is not a URL"),
            ("ftp://jms.example.com", "is not an http or https URL"),
            ("https://jms.example.com/?a=1", "must not carry"),
        ] {
            settings.mail.site_url = url.into();
            let err = settings.check(&[]).unwrap_err();
            assert!(
                err.starts_with("mail.site_url:") && err.contains(why),
                "{err}"
            );
        }
        settings.mail.site_url = "https://jms.example.com".into();
        settings.mail.from = "not an address".into();
        assert!(settings.check(&[]).unwrap_err().starts_with("mail.from:"));
        settings.mail.from = "jms@example.com".into();
        settings.mail.link_lifetime = Span(Duration::from_secs(31 * 24 * 3600));
        assert_eq!(
            settings.check(&[]).unwrap_err(),
            "mail.link_lifetime: between 1s and 30 days"
        );
    }
}
