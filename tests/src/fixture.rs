//! The standard test policy: one jms user per account rule, with known
//! secrets, plus one private local account. Tests that need other settings
//! (lockout) start from [`standard`] and change the builder.

use std::fmt::Write as _;

use crate::bastion::{BastionBuilder, ClientKey};
use crate::secrets::{django_hash, utc_weekday, TotpSecret};

/// A local account in the namespace's private /etc/shadow (pam_unix).
pub const LOCAL_USER: &str = "e2elocal";
pub const LOCAL_PASSWORD: &str = "local-pw-1";

/// alice: password and key, group ops, no restriction.
pub const ALICE_PASSWORD: &str = "alice-pw-1";
/// bob: password, group dev.
pub const BOB_PASSWORD: &str = "bob-pw-1";
/// carol: `is_active: false` (password and key).
pub const CAROL_PASSWORD: &str = "carol-pw-1";
/// dave: `date_expired` in the past.
pub const DAVE_PASSWORD: &str = "dave-pw-1";
/// erin: `allow_from: [127.0.0.0/8]`, `deny_from: [127.0.0.99/32]`.
pub const ERIN_PASSWORD: &str = "erin-pw-1";
/// grace: a time window only on a day that is not today (UTC).
pub const GRACE_PASSWORD: &str = "grace-pw-1";
/// henry: a time window covering every day, all day.
pub const HENRY_PASSWORD: &str = "henry-pw-1";
/// tina: password and TOTP.
pub const TINA_PASSWORD: &str = "tina-pw-1";
/// kim: public key only, no password.
pub const KIM_USER: &str = "kim";

/// tina's TOTP secret.
pub fn tina_totp() -> TotpSecret {
    TotpSecret::from_seed("jms-e2e tina")
}

/// The keys of the standard policy's users, and one nobody knows.
pub struct Keys {
    pub alice: ClientKey,
    pub carol: ClientKey,
    pub kim: ClientKey,
    /// In no policy.
    pub stranger: ClientKey,
}

/// A builder with the standard policy and the local account, and the keys.
pub fn standard() -> (BastionBuilder, Keys) {
    let builder = BastionBuilder::new();
    let keys = Keys {
        alice: builder.client_key("alice"),
        carol: builder.client_key("carol"),
        kim: builder.client_key("kim"),
        stranger: builder.client_key("stranger"),
    };
    let policy = standard_policy(&keys);
    let builder = builder
        .policy(&policy)
        .local_user(LOCAL_USER, LOCAL_PASSWORD);
    (builder, keys)
}

/// The standard policy text.
pub fn standard_policy(keys: &Keys) -> String {
    let h = |user: &str, password: &str| django_hash(password, &format!("salt{user}"));
    // A day that is not today, nor yesterday or tomorrow: stays "outside"
    // even if the test runs across midnight.
    let other_day = utc_weekday(3);
    let mut p = String::from("users:\n");
    let _ = write!(
        p,
        "  - username: alice\n    name: Alice Liu\n    groups: [ops]\n    password_hash: \"{}\"\n    public_keys: [\"{}\"]\n",
        h("alice", ALICE_PASSWORD),
        keys.alice.public
    );
    let _ = write!(
        p,
        "  - username: bob\n    name: Bob Chen\n    groups: [dev]\n    password_hash: \"{}\"\n",
        h("bob", BOB_PASSWORD)
    );
    let _ = write!(
        p,
        "  - username: carol\n    name: Carol Wu\n    groups: [ops]\n    is_active: false\n    password_hash: \"{}\"\n    public_keys: [\"{}\"]\n",
        h("carol", CAROL_PASSWORD),
        keys.carol.public
    );
    let _ = write!(
        p,
        "  - username: dave\n    name: Dave Li\n    groups: [dev]\n    date_expired: 2020-01-01T00:00:00Z\n    password_hash: \"{}\"\n",
        h("dave", DAVE_PASSWORD)
    );
    let _ = write!(
        p,
        "  - username: erin\n    name: Erin Zhao\n    groups: [dev]\n    password_hash: \"{}\"\n    login_acl:\n      allow_from: [127.0.0.0/8]\n      deny_from: [127.0.0.99/32]\n",
        h("erin", ERIN_PASSWORD)
    );
    let _ = write!(
        p,
        "  - username: grace\n    name: Grace Ho\n    groups: [dev]\n    password_hash: \"{}\"\n    login_acl:\n      time_windows: [{{days: [{other_day}], from: \"00:00\", to: \"24:00\"}}]\n",
        h("grace", GRACE_PASSWORD)
    );
    let _ = write!(
        p,
        "  - username: henry\n    name: Henry Fu\n    groups: [dev]\n    password_hash: \"{}\"\n    login_acl:\n      time_windows: [{{days: [Mon, Tue, Wed, Thu, Fri, Sat, Sun], from: \"00:00\", to: \"24:00\"}}]\n",
        h("henry", HENRY_PASSWORD)
    );
    let _ = write!(
        p,
        "  - username: tina\n    name: Tina Ma\n    groups: [ops]\n    password_hash: \"{}\"\n    totp_secret: \"{}\"\n",
        h("tina", TINA_PASSWORD),
        tina_totp().base32()
    );
    let _ = write!(
        p,
        "  - username: {KIM_USER}\n    name: Kim Park\n    groups: [dev]\n    public_keys: [\"{}\"]\n",
        keys.kim.public
    );
    p.push_str("user_groups:\n  - {name: ops}\n  - {name: dev}\n");
    p
}
