//! The frame every page shares (head, top bar with the sections and the
//! signed-in admin, logout), pagination links and small formatting helpers.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use maud::{html, Markup, DOCTYPE};

use super::assets;

/// The top bar's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Sessions,
    Commands,
    Users,
    Groups,
    Nodes,
    Assets,
    Grants,
    Filters,
    Bastions,
    Jobs,
    Settings,
    OpLog,
}

/// The top bar's links, in order.
const SECTIONS: &[(Nav, &str, &str)] = &[
    (Nav::Sessions, "/web/sessions", "Sessions"),
    (Nav::Commands, "/web/commands", "Commands"),
    (Nav::Users, "/web/users", "Users"),
    (Nav::Groups, "/web/groups", "Groups"),
    (Nav::Nodes, "/web/nodes", "Nodes"),
    (Nav::Assets, "/web/inventory", "Assets"),
    (Nav::Grants, "/web/grants", "Grants"),
    (Nav::Filters, "/web/filters", "Filters"),
    (Nav::Bastions, "/web/bastions", "Bastions"),
    (Nav::Jobs, "/web/jobs", "Jobs"),
    (Nav::Settings, "/web/settings", "Settings"),
    (Nav::OpLog, "/web/oplog", "Log"),
];

/// One page to render.
pub struct Page<'a> {
    pub title: &'a str,
    /// The signed-in admin (None on the login and error pages).
    pub admin: Option<&'a str>,
    /// The section to highlight.
    pub nav: Option<Nav>,
    pub body: Markup,
}

/// The whole HTML document.
pub fn page(page: &Page<'_>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="same-origin";
                title { (page.title) " · jms console" }
                link rel="stylesheet" href=(assets::url("app.css"));
            }
            body {
                header.topbar {
                    a.brand href="/web/sessions" { "jms console" }
                    @if let Some(admin) = page.admin {
                        nav {
                            @for (item, href, label) in SECTIONS {
                                a href=(href) class=[nav_class(page.nav, *item)] { (label) }
                            }
                        }
                        div.who {
                            span #admin-name { (admin) }
                            form method="post" action="/web/logout" {
                                button.link #logout type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (page.body) }
            }
        }
    }
}

fn nav_class(current: Option<Nav>, item: Nav) -> Option<&'static str> {
    (current == Some(item)).then_some("current")
}

/// Audit text (a command, a path, a reason) as shown on a page: control
/// and bidi characters written visibly (`\r`, `\x1b`…), so nothing typed
/// can hide or reorder what ran (HTML escaping is maud's).
pub fn shown(text: &str) -> String {
    jms_core::escape::visible(text).into_owned()
}

/// A time as shown everywhere: `2026-11-23 17:20:05 UTC`.
pub fn time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A duration as `1h 02m 03s`, `2m 05s` or `7s`.
pub fn duration(seconds: i64) -> String {
    let seconds = seconds.max(0);
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// A byte count as `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A time from a filter field: RFC 3339, or what `<input
/// type="datetime-local">` sends (`2026-11-23T17:20`, read as UTC), or a
/// bare date (midnight UTC).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(Utc.from_utc_datetime(&t));
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_time(chrono::NaiveTime::MIN)));
    }
    Err(format!(
        "bad time `{text}`: expected 2026-11-23T17:20 (UTC) or RFC 3339"
    ))
}

/// A query string from non-empty pairs (`?a=1&b=x%20y`, or empty).
pub fn query_string(pairs: &[(&str, String)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", url_escape(v)))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Rows per page of a list.
pub const PAGE_SIZE: u32 = 50;

/// "Rows 51–100 of 230", with previous/next links that keep the filters.
pub fn pager(
    base: &str,
    filters: &[(&str, String)],
    page: u64,
    shown: usize,
    total: u64,
) -> Markup {
    let first = page * u64::from(PAGE_SIZE);
    let link = |page: u64| {
        let mut pairs = filters.to_vec();
        if page > 0 {
            pairs.push(("page", page.to_string()));
        }
        format!("{base}{}", query_string(&pairs))
    };
    html! {
        nav.pager {
            @if total == 0 {
                span { "No rows." }
            } @else {
                span #row-count { "Rows " (first + 1) "–" (first + shown as u64) " of " (total) }
            }
            @if page > 0 {
                a #prev-page href=(link(page - 1)) { "← Previous" }
            }
            @if first + (shown as u64) < total {
                a #next-page href=(link(page + 1)) { "Next →" }
            }
        }
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
pub fn url_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_well() {
        assert_eq!(duration(7), "7s");
        assert_eq!(duration(125), "2m 05s");
        assert_eq!(duration(3723), "1h 02m 03s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024), "5.0 MiB");
    }

    #[test]
    fn filter_times_parse_in_utc() {
        let t = parse_time("2026-11-23T17:20").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T17:20:00+00:00");
        let t = parse_time("2026-11-23T18:20:00+01:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T17:20:00+00:00");
        assert_eq!(
            parse_time("2026-11-23").unwrap().to_rfc3339(),
            "2026-11-23T00:00:00+00:00"
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn query_strings_skip_empty_filters_and_escape() {
        assert_eq!(
            query_string(&[
                ("user", "alice".into()),
                ("q", "rm -rf".into()),
                ("asset", String::new())
            ]),
            "?user=alice&q=rm%20-rf"
        );
        assert_eq!(query_string(&[("user", String::new())]), "");
    }
}
