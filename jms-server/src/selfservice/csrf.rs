//! Cross-site request forgery protection of the self-service forms.
//!
//! A page with a form sets a random browser cookie (`HttpOnly`,
//! `SameSite=Strict`, path `/password`) and puts in the form the HMAC of
//! that cookie and of what the form is for (the set-password form: the
//! link's token hash). A POST is accepted only when its field matches its
//! cookie, and, when the browser sends `Origin`, when that is this site.
//! Another site can neither read the cookie nor make the browser send it.
//! The HMAC key lives in memory: forms opened before a restart must be
//! reloaded.

use axum::http::{header, HeaderMap};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The cookie's name.
pub const COOKIE: &str = "jms_form";

/// The key of the form HMACs.
pub struct CsrfKey(hmac::Key);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The browser's cookie value, when it sent a well-formed one.
pub fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A new cookie value.
pub fn new_browser_id() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).expect("system random");
    hex(&bytes)
}

/// The `Set-Cookie` value for `browser` (`Secure` when the site is https).
pub fn set_cookie(browser: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={browser}; Path=/password; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    )
}

impl CsrfKey {
    #[cfg(test)]
    pub fn new() -> CsrfKey {
        CsrfKey(
            hmac::Key::generate(hmac::HMAC_SHA256, &SystemRandom::new()).expect("system random"),
        )
    }

    /// The key derived from the server's seal key: the same on every
    /// instance (a form one instance served is accepted by another).
    pub fn shared(seal: &crate::crypto::SealKey) -> CsrfKey {
        CsrfKey(hmac::Key::new(
            hmac::HMAC_SHA256,
            &seal.derive("jms self-service csrf v1"),
        ))
    }

    fn message(browser: &str, form: &str) -> Vec<u8> {
        let mut message = Vec::with_capacity(browser.len() + form.len() + 1);
        message.extend_from_slice(browser.as_bytes());
        message.push(0);
        message.extend_from_slice(form.as_bytes());
        message
    }

    /// The hidden field of `form` for `browser`.
    pub fn field(&self, browser: &str, form: &str) -> String {
        hex(hmac::sign(&self.0, &Self::message(browser, form)).as_ref())
    }

    /// Whether `field` was made for this browser's cookie and `form`
    /// (compared in constant time).
    pub fn check(&self, headers: &HeaderMap, form: &str, field: &str) -> bool {
        let (Some(browser), Some(tag)) = (browser_cookie(headers), unhex(field)) else {
            return false;
        };
        hmac::verify(&self.0, &Self::message(&browser, form), &tag).is_ok()
    }
}

/// Whether a browser's `Origin` (if it sent one) is this site: the
/// configured site URL, or the host the request was sent to.
pub fn origin_ok(headers: &HeaderMap, site_url: &str) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    if let Ok(site) = reqwest::Url::parse(site_url) {
        if site.origin().ascii_serialization() == origin {
            return true;
        }
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    host.is_some_and(|host| {
        origin == format!("http://{host}") || origin == format!("https://{host}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {COOKIE}={value}")).unwrap(),
        );
        headers
    }

    #[test]
    fn a_field_is_bound_to_its_cookie_and_its_form() {
        let key = CsrfKey::new();
        let browser = new_browser_id();
        let field = key.field(&browser, "set:abc");
        assert!(key.check(&with_cookie(&browser), "set:abc", &field));
        assert!(!key.check(&with_cookie(&browser), "set:abd", &field));
        assert!(!key.check(&with_cookie(&new_browser_id()), "set:abc", &field));
        assert!(!key.check(&HeaderMap::new(), "set:abc", &field));
        assert!(!key.check(&with_cookie(&browser), "set:abc", "zz"));
        assert!(!CsrfKey::new().check(&with_cookie(&browser), "set:abc", &field));
    }

    /// Two instances with the same key file accept each other's fields;
    /// another key file does not (before, each process drew its own key:
    /// a form served by one instance failed on the other).
    #[test]
    fn instances_sharing_the_key_file_accept_each_others_fields() {
        let dir = tempfile::tempdir().unwrap();
        let seal = crate::crypto::SealKey::load_or_create(dir.path()).unwrap();
        let again = crate::crypto::SealKey::load_or_create(dir.path()).unwrap();
        let other = tempfile::tempdir().unwrap();
        let other = crate::crypto::SealKey::load_or_create(other.path()).unwrap();
        let browser = new_browser_id();
        let field = CsrfKey::shared(&seal).field(&browser, "set:abc");
        assert!(CsrfKey::shared(&again).check(&with_cookie(&browser), "set:abc", &field));
        assert!(!CsrfKey::shared(&other).check(&with_cookie(&browser), "set:abc", &field));
    }

    #[test]
    fn only_this_sites_origin_passes() {
        let mut headers = HeaderMap::new();
        assert!(
            origin_ok(&headers, ""),
            "no Origin: not a browser's cross-site POST"
        );
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(origin_ok(&headers, ""));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://jms.example.com"),
        );
        assert!(origin_ok(&headers, "https://jms.example.com/"));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!origin_ok(&headers, "https://jms.example.com"));
        headers.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!origin_ok(&headers, "https://jms.example.com"));
    }
}
