//! Account checks for a bastion login, as pure functions over the model:
//! what PAM's `acct_mgmt` asks once a user is known.
//!
//! This file owns:
//! - [`check_login`]: is the account active and unexpired, may it log in
//!   from this address ([`LoginAcl`] networks) and at this local time (its
//!   weekly [`TimeWindow`]s, in the bastion's time zone);
//! - the lockout counter as plain state ([`FailureRecord`] under a
//!   [`LockoutPolicy`]); the daemon owns, persists and serialises access to
//!   the records, and calls in with the current time.
//!
//! Nothing here reads a clock, a file or the network.

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveTime, SecondsFormat, Utc, Weekday};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::model::{LoginAcl, TimeWindow, User};

/// Why an (authenticated or not) user may not log in now. The message is
/// meant for the user and the audit log; it holds no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginDenied {
    /// The account has `is_active: false`. PAM answers `PAM_PERM_DENIED`.
    #[error("account is disabled")]
    Disabled,
    /// The account's `date_expired` (held here) is at or before the login
    /// time. PAM answers `PAM_ACCT_EXPIRED`.
    #[error("account expired at {}", .0.to_rfc3339_opts(SecondsFormat::Secs, true))]
    Expired(DateTime<Utc>),
    /// The source address is in `deny_from`, or `allow_from` is not empty
    /// and does not hold it; `None` when the address is unknown and the ACL
    /// has any network rule (fail closed). PAM answers `PAM_PERM_DENIED`.
    #[error("login from {} is not allowed", describe_source(.0))]
    SourceDenied(Option<IpAddr>),
    /// The account has time windows and the local time is in none of them.
    /// PAM answers `PAM_PERM_DENIED`.
    #[error("login is not allowed at this time")]
    OutsideTimeWindow,
}

fn describe_source(source: &Option<IpAddr>) -> String {
    match source {
        Some(ip) => ip.to_string(),
        None => "an unknown address".to_owned(),
    }
}

/// Checks, in order, that `user` is active, unexpired at `at`, may log in
/// from `rhost` and at `at` read in the bastion's time zone `tz`.
///
/// Source rules: `deny_from` wins over `allow_from`; a non-empty
/// `allow_from` admits only its networks. An IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.1`) also matches as its IPv4 form. When `rhost` is
/// `None` (PAM gave no `PAM_RHOST`, or a host name instead of an address)
/// and the ACL has any network rule, the login is denied: an unknown
/// source can prove neither that it is allowed nor that it is not denied.
///
/// Time windows: the local day must be one of the window's `days` and
/// `from <= time < to`. A window may not cross midnight: one with
/// `from >= to` never contains any time (write two windows instead,
/// e.g. Mon 22:00–24:00 and Tue 00:00–06:00).
pub fn check_login(
    user: &User,
    rhost: Option<IpAddr>,
    at: DateTime<Utc>,
    tz: Tz,
) -> Result<(), LoginDenied> {
    if !user.is_active {
        return Err(LoginDenied::Disabled);
    }
    if let Some(expired) = user.date_expired {
        if expired.0 <= at {
            return Err(LoginDenied::Expired(expired.0));
        }
    }
    check_source(&user.login_acl, rhost)?;
    check_time(&user.login_acl, at, tz)
}

fn check_source(acl: &LoginAcl, rhost: Option<IpAddr>) -> Result<(), LoginDenied> {
    if acl.allow_from.is_empty() && acl.deny_from.is_empty() {
        return Ok(());
    }
    let Some(ip) = rhost else {
        return Err(LoginDenied::SourceDenied(None));
    };
    let canonical = ip.to_canonical();
    let in_any = |nets: &[ipnet::IpNet]| {
        nets.iter()
            .any(|net| net.contains(&ip) || net.contains(&canonical))
    };
    if in_any(&acl.deny_from) || (!acl.allow_from.is_empty() && !in_any(&acl.allow_from)) {
        return Err(LoginDenied::SourceDenied(Some(ip)));
    }
    Ok(())
}

fn check_time(acl: &LoginAcl, at: DateTime<Utc>, tz: Tz) -> Result<(), LoginDenied> {
    if acl.time_windows.is_empty() {
        return Ok(());
    }
    let local = at.with_timezone(&tz);
    let (day, time) = (local.weekday(), local.time());
    if acl
        .time_windows
        .iter()
        .any(|w| window_contains(w, day, time))
    {
        Ok(())
    } else {
        Err(LoginDenied::OutsideTimeWindow)
    }
}

fn window_contains(window: &TimeWindow, day: Weekday, time: NaiveTime) -> bool {
    window.from < window.to && window.days.contains(&day) && window.from <= time && time < window.to
}

/// When repeated failed logins lock an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window` that lock the account; 0 disables lockout.
    pub max_failures: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long a lock lasts.
    pub lock_for: Duration,
}

impl Default for LockoutPolicy {
    /// 5 failures within 15 minutes lock the account for 30 minutes.
    fn default() -> Self {
        LockoutPolicy {
            max_failures: 5,
            window: Duration::from_secs(15 * 60),
            lock_for: Duration::from_secs(30 * 60),
        }
    }
}

/// One user's recent failed logins and lock, as the daemon persists it.
/// Times are Unix seconds; the caller passes the current time to every
/// method, so a record is plain data that any clock can drive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Times of failures since the last success, unlock or lock; at most
    /// `max_failures - 1` are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    failures: Vec<i64>,
    /// End of the current lock (exclusive), if one was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locked_until: Option<i64>,
}

impl FailureRecord {
    /// `Some(until)` while the account is locked at `now` (it unlocks at
    /// `until`), else `None`.
    pub fn is_locked(&self, now: i64) -> Option<i64> {
        self.locked_until.filter(|&until| until > now)
    }

    /// Records a failed login at `now`. Failures older than the policy's
    /// window are forgotten; the failure that brings the count to
    /// `max_failures` locks the account for `lock_for` and starts a fresh
    /// count. Returns `Some(until)` when this failure set the lock.
    ///
    /// While locked, a failure changes nothing (an attacker cannot extend
    /// the lock); once a lock has run out, counting starts afresh.
    pub fn record_failure(&mut self, policy: &LockoutPolicy, now: i64) -> Option<i64> {
        if policy.max_failures == 0 {
            self.failures.clear();
            return None;
        }
        match self.locked_until {
            Some(until) if until > now => return None,
            Some(_) => {
                self.locked_until = None;
                self.failures.clear();
            }
            None => {}
        }
        let oldest = now.saturating_sub(secs(policy.window));
        self.failures.retain(|&t| t > oldest);
        // A record read from disk may hold anything: keep the newest few.
        let keep = usize::try_from(policy.max_failures - 1).unwrap_or(usize::MAX);
        if self.failures.len() > keep {
            self.failures.sort_unstable();
            let excess = self.failures.len() - keep;
            self.failures.drain(..excess);
        }
        self.failures.push(now);
        if self.failures.len() < usize::try_from(policy.max_failures).unwrap_or(usize::MAX) {
            return None;
        }
        let until = now.saturating_add(secs(policy.lock_for));
        self.failures.clear();
        self.locked_until = Some(until);
        Some(until)
    }

    /// Records a successful login: forgets every failure and any lock.
    pub fn record_success(&mut self) {
        self.failures.clear();
        self.locked_until = None;
    }

    /// Failures that still count at `now`.
    pub fn recent_failures(&self, policy: &LockoutPolicy, now: i64) -> usize {
        let oldest = now.saturating_sub(secs(policy.window));
        self.failures.iter().filter(|&&t| t > oldest).count()
    }

    /// True when the record no longer matters at `now` (no lock, no failure
    /// in the window): the daemon may delete it.
    pub fn is_stale(&self, policy: &LockoutPolicy, now: i64) -> bool {
        self.is_locked(now).is_none() && self.recent_failures(policy, now) == 0
    }
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;
    use chrono::TimeZone;

    fn user() -> User {
        serde_json::from_value(serde_json::json!({"username": "alice"})).expect("user")
    }

    fn user_with(acl: LoginAcl) -> User {
        User {
            login_acl: acl,
            ..user()
        }
    }

    fn net(text: &str) -> ipnet::IpNet {
        text.parse().expect("network")
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).expect("time")
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0)
            .single()
            .expect("time")
    }

    /// 2026-03-02 is a Monday.
    fn monday(h: u32, m: u32) -> DateTime<Utc> {
        utc(2026, 3, 2, h, m)
    }

    fn allow(nets: &[&str]) -> LoginAcl {
        LoginAcl {
            allow_from: nets.iter().map(|n| net(n)).collect(),
            ..LoginAcl::default()
        }
    }

    fn deny(nets: &[&str]) -> LoginAcl {
        LoginAcl {
            deny_from: nets.iter().map(|n| net(n)).collect(),
            ..LoginAcl::default()
        }
    }

    fn windows(windows: Vec<TimeWindow>) -> LoginAcl {
        LoginAcl {
            time_windows: windows,
            ..LoginAcl::default()
        }
    }

    fn window(days: &[Weekday], from: NaiveTime, to: NaiveTime) -> TimeWindow {
        TimeWindow {
            days: days.to_vec(),
            from,
            to,
        }
    }

    const UTC: Tz = chrono_tz::UTC;

    #[test]
    fn active_user_without_rules_may_log_in_from_anywhere_without_rhost() {
        assert_eq!(check_login(&user(), None, monday(3, 0), UTC), Ok(()));
        assert_eq!(
            check_login(&user(), Some(ip("203.0.113.9")), monday(3, 0), UTC),
            Ok(())
        );
    }

    #[test]
    fn disabled_user_is_denied() {
        let user = User {
            is_active: false,
            ..user()
        };
        let denied = check_login(&user, Some(ip("10.0.0.1")), monday(12, 0), UTC);
        assert_eq!(denied, Err(LoginDenied::Disabled));
        assert_eq!(LoginDenied::Disabled.to_string(), "account is disabled");
    }

    #[test]
    fn expired_user_is_denied_from_the_expiry_instant() {
        let expiry = monday(12, 0);
        let user = User {
            date_expired: Some(Timestamp(expiry)),
            ..user()
        };
        assert_eq!(check_login(&user, None, monday(11, 59), UTC), Ok(()));
        assert_eq!(
            check_login(&user, None, expiry, UTC),
            Err(LoginDenied::Expired(expiry))
        );
        assert_eq!(
            check_login(&user, None, monday(13, 0), UTC).map_err(|e| e.to_string()),
            Err("account expired at 2026-03-02T12:00:00Z".to_owned())
        );
    }

    #[test]
    fn disabled_is_reported_before_expired() {
        let user = User {
            is_active: false,
            date_expired: Some(Timestamp(monday(0, 0))),
            ..user()
        };
        assert_eq!(
            check_login(&user, None, monday(1, 0), UTC),
            Err(LoginDenied::Disabled)
        );
    }

    #[test]
    fn allow_from_admits_only_its_v4_networks() {
        let user = user_with(allow(&["10.0.0.0/8", "192.168.1.7/32"]));
        for ok in ["10.1.2.3", "10.255.255.255", "192.168.1.7"] {
            assert_eq!(
                check_login(&user, Some(ip(ok)), monday(9, 0), UTC),
                Ok(()),
                "{ok}"
            );
        }
        for bad in ["11.0.0.1", "192.168.1.8", "2001:db8::1"] {
            assert_eq!(
                check_login(&user, Some(ip(bad)), monday(9, 0), UTC),
                Err(LoginDenied::SourceDenied(Some(ip(bad)))),
                "{bad}"
            );
        }
    }

    #[test]
    fn allow_from_admits_only_its_v6_networks() {
        let user = user_with(allow(&["2001:db8:abcd::/48"]));
        assert_eq!(
            check_login(&user, Some(ip("2001:db8:abcd:12::1")), monday(9, 0), UTC),
            Ok(())
        );
        assert_eq!(
            check_login(&user, Some(ip("2001:db8:abce::1")), monday(9, 0), UTC),
            Err(LoginDenied::SourceDenied(Some(ip("2001:db8:abce::1"))))
        );
        assert_eq!(
            check_login(&user, Some(ip("10.0.0.1")), monday(9, 0), UTC),
            Err(LoginDenied::SourceDenied(Some(ip("10.0.0.1"))))
        );
    }

    #[test]
    fn ipv4_mapped_ipv6_source_matches_ipv4_rules() {
        let allowed = user_with(allow(&["10.0.0.0/8"]));
        assert_eq!(
            check_login(&allowed, Some(ip("::ffff:10.0.0.5")), monday(9, 0), UTC),
            Ok(())
        );
        let denied = user_with(deny(&["10.0.0.0/8"]));
        assert_eq!(
            check_login(&denied, Some(ip("::ffff:10.0.0.5")), monday(9, 0), UTC),
            Err(LoginDenied::SourceDenied(Some(ip("::ffff:10.0.0.5"))))
        );
    }

    #[test]
    fn deny_from_refuses_its_networks_v4_and_v6() {
        let user = user_with(deny(&["198.51.100.0/24", "2001:db8::/32"]));
        for bad in ["198.51.100.1", "2001:db8:1::1"] {
            assert_eq!(
                check_login(&user, Some(ip(bad)), monday(9, 0), UTC),
                Err(LoginDenied::SourceDenied(Some(ip(bad)))),
                "{bad}"
            );
        }
        for ok in ["198.51.101.1", "2001:db9::1"] {
            assert_eq!(
                check_login(&user, Some(ip(ok)), monday(9, 0), UTC),
                Ok(()),
                "{ok}"
            );
        }
    }

    #[test]
    fn deny_from_wins_over_allow_from() {
        let acl = LoginAcl {
            allow_from: vec![net("10.0.0.0/8")],
            deny_from: vec![net("10.9.0.0/16")],
            ..LoginAcl::default()
        };
        let user = user_with(acl);
        assert_eq!(
            check_login(&user, Some(ip("10.8.0.1")), monday(9, 0), UTC),
            Ok(())
        );
        assert_eq!(
            check_login(&user, Some(ip("10.9.0.1")), monday(9, 0), UTC),
            Err(LoginDenied::SourceDenied(Some(ip("10.9.0.1"))))
        );
    }

    #[test]
    fn unknown_source_is_denied_when_any_network_rule_exists() {
        for acl in [allow(&["10.0.0.0/8"]), deny(&["10.0.0.0/8"])] {
            let user = user_with(acl.clone());
            assert_eq!(
                check_login(&user, None, monday(9, 0), UTC),
                Err(LoginDenied::SourceDenied(None)),
                "{acl:?}"
            );
        }
        assert_eq!(
            LoginDenied::SourceDenied(None).to_string(),
            "login from an unknown address is not allowed"
        );
        assert_eq!(
            LoginDenied::SourceDenied(Some(ip("10.0.0.1"))).to_string(),
            "login from 10.0.0.1 is not allowed"
        );
    }

    #[test]
    fn time_window_admits_from_inclusive_to_exclusive_on_its_days() {
        let user = user_with(windows(vec![window(
            &[Weekday::Mon, Weekday::Tue],
            hm(9, 0),
            hm(18, 0),
        )]));
        assert_eq!(check_login(&user, None, monday(9, 0), UTC), Ok(()));
        assert_eq!(check_login(&user, None, monday(17, 59), UTC), Ok(()));
        assert_eq!(
            check_login(&user, None, utc(2026, 3, 3, 12, 0), UTC),
            Ok(()),
            "Tuesday"
        );
        for outside in [monday(8, 59), monday(18, 0), utc(2026, 3, 4, 12, 0)] {
            assert_eq!(
                check_login(&user, None, outside, UTC),
                Err(LoginDenied::OutsideTimeWindow),
                "{outside}"
            );
        }
        assert_eq!(
            LoginDenied::OutsideTimeWindow.to_string(),
            "login is not allowed at this time"
        );
    }

    #[test]
    fn any_of_several_windows_admits() {
        let user = user_with(windows(vec![
            window(&[Weekday::Mon], hm(1, 0), hm(2, 0)),
            window(&[Weekday::Mon], hm(20, 0), hm(21, 0)),
        ]));
        assert_eq!(check_login(&user, None, monday(1, 30), UTC), Ok(()));
        assert_eq!(check_login(&user, None, monday(20, 30), UTC), Ok(()));
        assert_eq!(
            check_login(&user, None, monday(12, 0), UTC),
            Err(LoginDenied::OutsideTimeWindow)
        );
    }

    #[test]
    fn window_crossing_midnight_is_never_inside() {
        let every_day = [
            Weekday::Mon,
            Weekday::Tue,
            Weekday::Wed,
            Weekday::Thu,
            Weekday::Fri,
            Weekday::Sat,
            Weekday::Sun,
        ];
        let user = user_with(windows(vec![
            window(&every_day, hm(22, 0), hm(6, 0)),
            window(&every_day, hm(8, 0), hm(8, 0)),
        ]));
        for at in [monday(23, 0), monday(2, 0), monday(8, 0), monday(12, 0)] {
            assert_eq!(
                check_login(&user, None, at, UTC),
                Err(LoginDenied::OutsideTimeWindow),
                "{at}: from >= to contains nothing"
            );
        }
    }

    #[test]
    fn window_up_to_24_00_admits_the_last_minute() {
        let acl: LoginAcl = serde_json::from_value(serde_json::json!({
            "time_windows": [{"days": ["Mon"], "from": "22:00", "to": "24:00"}]
        }))
        .expect("acl");
        let user = user_with(acl);
        assert_eq!(check_login(&user, None, monday(23, 59), UTC), Ok(()));
        assert_eq!(
            check_login(&user, None, utc(2026, 3, 3, 0, 0), UTC),
            Err(LoginDenied::OutsideTimeWindow)
        );
    }

    #[test]
    fn window_uses_the_local_day_not_the_utc_day() {
        // Sunday 20:00 UTC is Monday 05:00 in Tokyo (UTC+9).
        let sunday_evening_utc = utc(2026, 3, 1, 20, 0);
        let user = user_with(windows(vec![window(&[Weekday::Mon], hm(4, 0), hm(6, 0))]));
        assert_eq!(
            check_login(&user, None, sunday_evening_utc, chrono_tz::Asia::Tokyo),
            Ok(())
        );
        assert_eq!(
            check_login(&user, None, sunday_evening_utc, UTC),
            Err(LoginDenied::OutsideTimeWindow)
        );
        // Monday 03:00 UTC is Sunday 19:00 in Los Angeles (UTC-8 in winter).
        let user = user_with(windows(vec![window(&[Weekday::Sun], hm(18, 0), hm(20, 0))]));
        let tz = chrono_tz::America::Los_Angeles;
        assert_eq!(check_login(&user, None, monday(3, 0), tz), Ok(()));
        assert_eq!(
            check_login(&user, None, monday(3, 0), UTC),
            Err(LoginDenied::OutsideTimeWindow)
        );
    }

    #[test]
    fn source_is_checked_before_time() {
        let acl = LoginAcl {
            allow_from: vec![net("10.0.0.0/8")],
            time_windows: vec![window(&[Weekday::Sat], hm(0, 0), hm(1, 0))],
            ..LoginAcl::default()
        };
        assert_eq!(
            check_login(&user_with(acl), Some(ip("11.0.0.1")), monday(12, 0), UTC),
            Err(LoginDenied::SourceDenied(Some(ip("11.0.0.1"))))
        );
    }

    // ---------------------------------------------------------------- lockout

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            max_failures: 3,
            window: Duration::from_secs(600),
            lock_for: Duration::from_secs(1800),
        }
    }

    #[test]
    fn default_policy_locks_after_5_failures_in_15_minutes_for_30() {
        let policy = LockoutPolicy::default();
        let mut record = FailureRecord::default();
        for i in 0..4 {
            assert_eq!(
                record.record_failure(&policy, 1000 + i * 60),
                None,
                "failure {i}"
            );
        }
        assert_eq!(
            record.record_failure(&policy, 1000 + 14 * 60),
            Some(1000 + 14 * 60 + 1800)
        );
    }

    #[test]
    fn locks_on_the_nth_failure_within_the_window() {
        let mut record = FailureRecord::default();
        assert_eq!(record.record_failure(&policy(), 100), None);
        assert_eq!(record.is_locked(100), None);
        assert_eq!(record.record_failure(&policy(), 200), None);
        assert_eq!(record.recent_failures(&policy(), 200), 2);
        assert_eq!(
            record.record_failure(&policy(), 300),
            Some(2100),
            "third failure locks"
        );
        assert_eq!(record.is_locked(300), Some(2100));
        assert_eq!(record.is_locked(2099), Some(2100));
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut record = FailureRecord::default();
        record.record_failure(&policy(), 0);
        record.record_failure(&policy(), 100);
        // At 600 the failure at 0 is exactly one window old: forgotten.
        assert_eq!(record.record_failure(&policy(), 600), None);
        assert_eq!(record.is_locked(600), None);
        assert_eq!(record.recent_failures(&policy(), 600), 2);
        assert_eq!(record.record_failure(&policy(), 650), Some(650 + 1800));
    }

    #[test]
    fn lock_ends_after_lock_for_and_counting_restarts() {
        let mut record = FailureRecord::default();
        for t in [0, 1, 2] {
            record.record_failure(&policy(), t);
        }
        assert_eq!(record.is_locked(2), Some(1802));
        assert_eq!(record.is_locked(1802), None, "unlocked at `until`");
        assert_eq!(
            record.record_failure(&policy(), 1900),
            None,
            "a fresh count after unlock"
        );
        assert_eq!(record.recent_failures(&policy(), 1900), 1);
        assert_eq!(record.is_locked(1900), None);
    }

    #[test]
    fn failures_while_locked_do_not_extend_the_lock() {
        let mut record = FailureRecord::default();
        for t in [0, 1, 2] {
            record.record_failure(&policy(), t);
        }
        for t in [10, 20, 30, 40] {
            assert_eq!(record.record_failure(&policy(), t), None);
        }
        assert_eq!(record.is_locked(40), Some(1802));
        assert_eq!(record.is_locked(1802), None);
    }

    #[test]
    fn success_clears_failures_and_lock() {
        let mut record = FailureRecord::default();
        record.record_failure(&policy(), 0);
        record.record_failure(&policy(), 1);
        record.record_success();
        assert_eq!(record, FailureRecord::default());
        assert_eq!(record.record_failure(&policy(), 2), None, "count restarted");
        record.record_failure(&policy(), 3);
        record.record_failure(&policy(), 4);
        assert!(record.is_locked(5).is_some());
        record.record_success();
        assert_eq!(record.is_locked(5), None);
        assert!(record.is_stale(&policy(), 5));
    }

    #[test]
    fn zero_max_failures_never_locks() {
        let policy = LockoutPolicy {
            max_failures: 0,
            ..policy()
        };
        let mut record = FailureRecord::default();
        for t in 0..100 {
            assert_eq!(record.record_failure(&policy, t), None);
        }
        assert_eq!(record.is_locked(100), None);
        assert_eq!(record, FailureRecord::default(), "nothing is stored");
    }

    #[test]
    fn failures_stay_bounded_even_from_a_bloated_record() {
        let bloated: FailureRecord = serde_json::from_value(
            serde_json::json!({"failures": (0..10_000).collect::<Vec<i64>>()}),
        )
        .expect("record");
        let mut record = bloated;
        let policy = LockoutPolicy {
            max_failures: 3,
            window: Duration::from_secs(1_000_000),
            lock_for: Duration::from_secs(60),
        };
        // Two stale-but-in-window failures survive; this third one locks.
        assert_eq!(record.record_failure(&policy, 10_000), Some(10_060));
        assert_eq!(record.failures.len(), 0);
        let mut record = FailureRecord::default();
        for t in 0..2 {
            record.record_failure(&policy, t);
            assert!(record.failures.len() < 3);
        }
    }

    #[test]
    fn huge_durations_saturate_instead_of_overflowing() {
        let policy = LockoutPolicy {
            max_failures: 1,
            window: Duration::MAX,
            lock_for: Duration::MAX,
        };
        let mut record = FailureRecord::default();
        assert_eq!(record.record_failure(&policy, i64::MAX - 5), Some(i64::MAX));
        let mut record = FailureRecord::default();
        assert_eq!(
            record.record_failure(&policy, i64::MIN),
            Some(i64::MIN.saturating_add(i64::MAX))
        );
    }

    #[test]
    fn failure_record_round_trips_through_json() {
        let mut record = FailureRecord::default();
        record.record_failure(&policy(), 100);
        let json = serde_json::to_string(&record).expect("serialize");
        assert_eq!(json, r#"{"failures":[100]}"#);
        let back: FailureRecord = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, record);
        assert_eq!(
            serde_json::to_string(&FailureRecord::default()).expect("serialize"),
            "{}"
        );
        let locked: FailureRecord =
            serde_json::from_str(r#"{"locked_until":5000}"#).expect("deserialize");
        assert_eq!(locked.is_locked(4999), Some(5000));
    }

    #[test]
    fn stale_records_can_be_dropped() {
        let mut record = FailureRecord::default();
        assert!(record.is_stale(&policy(), 0));
        record.record_failure(&policy(), 0);
        assert!(!record.is_stale(&policy(), 599));
        assert!(record.is_stale(&policy(), 600));
    }
}
