//! Static files of the audit web, embedded in the binary from
//! `jms-server/web-assets/`: our stylesheet and script, and the vendored
//! asciinema player (`scripts/vendor-player` fetches it from the npm
//! registry and checks its sha256), and xterm.js with its fit addon for the
//! engineers' web terminal (`scripts/vendor-xterm`, the same way). Pages link them as
//! `/web/assets/NAME?v=HASH`, so they are served with a year-long
//! `immutable` cache: a new build changes the link, never the meaning.

use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use ring::digest::{digest, SHA256};

/// The vendored asciinema player's version (`scripts/vendor-player`).
pub const PLAYER_VERSION: &str = "3.18.0";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

/// An [`Asset`] of `web-assets/`, by file name.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!(concat!("../../web-assets/", $name)),
        }
    };
}

const CSS: &str = "text/css; charset=utf-8";
const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("app.css", CSS),
    asset!("replay.js", JAVASCRIPT),
    asset!("live.js", JAVASCRIPT),
    asset!("grant.js", JAVASCRIPT),
    asset!("files.js", JAVASCRIPT),
    asset!("asciinema-player.min.js", JAVASCRIPT),
    asset!("asciinema-player.css", CSS),
    asset!("asciinema-player.LICENSE", TEXT),
    asset!("terminal.js", JAVASCRIPT),
    asset!("xterm.js", JAVASCRIPT),
    asset!("xterm.css", CSS),
    asset!("xterm.LICENSE", TEXT),
    asset!("xterm-addon-fit.js", JAVASCRIPT),
    asset!("xterm-addon-fit.LICENSE", TEXT),
];

fn find(name: &str) -> Option<(usize, &'static Asset)> {
    ASSETS.iter().enumerate().find(|(_, a)| a.name == name)
}

/// The first 16 hex digits of each asset's SHA-256 (cache buster).
fn versions() -> &'static [String] {
    static VERSIONS: OnceLock<Vec<String>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                digest(&SHA256, a.bytes).as_ref()[..8]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect()
            })
            .collect()
    })
}

/// The link to an embedded file (panics on a name not embedded: a typo in
/// this crate, caught by the tests).
pub fn url(name: &str) -> String {
    let (index, asset) = find(name).unwrap_or_else(|| panic!("no embedded asset `{name}`"));
    format!("/web/assets/{}?v={}", asset.name, versions()[index])
}

/// `GET /web/assets/{name}` (no login needed: nothing here is secret).
pub async fn serve(Path(name): Path<String>) -> Response {
    let Some((_, asset)) = find(&name) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        asset.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_has_a_versioned_url() {
        for asset in ASSETS {
            let url = url(asset.name);
            assert!(url.starts_with(&format!("/web/assets/{}?v=", asset.name)));
            assert_eq!(
                url.len(),
                format!("/web/assets/{}?v=", asset.name).len() + 16
            );
            assert!(!asset.bytes.is_empty(), "{} is empty", asset.name);
        }
    }

    /// The vendored player is exactly what `scripts/vendor-player` checked.
    #[test]
    fn the_vendored_player_matches_its_recorded_sums() {
        let sums = include_str!("../../../scripts/vendor-player.sha256");
        let tarball = format!("  asciinema-player-{PLAYER_VERSION}.tgz");
        assert!(
            sums.lines().any(|l| l.ends_with(&tarball)),
            "PLAYER_VERSION {PLAYER_VERSION} is not the version scripts/vendor-player.sha256 records"
        );
        for asset in ASSETS
            .iter()
            .filter(|a| a.name.starts_with("asciinema-player"))
        {
            let path = format!("jms-server/web-assets/{}", asset.name);
            let line = sums
                .lines()
                .find(|l| l.ends_with(&format!("  {path}")))
                .unwrap_or_else(|| panic!("scripts/vendor-player.sha256 has no line for {path}"));
            let hex: String = digest(&SHA256, asset.bytes)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(&line[..64], hex, "{path} differs from its recorded sha256");
        }
    }

    /// The vendored xterm.js files are exactly what `scripts/vendor-xterm`
    /// checked.
    #[test]
    fn the_vendored_terminal_matches_its_recorded_sums() {
        let sums = include_str!("../../../scripts/vendor-xterm.sha256");
        let vendored: Vec<_> = ASSETS
            .iter()
            .filter(|a| a.name.starts_with("xterm"))
            .collect();
        assert_eq!(
            vendored.len(),
            5,
            "xterm.js, its css, the fit addon, two licences"
        );
        for asset in vendored {
            let path = format!("jms-server/web-assets/{}", asset.name);
            let line = sums
                .lines()
                .find(|l| l.ends_with(&format!("  {path}")))
                .unwrap_or_else(|| panic!("scripts/vendor-xterm.sha256 has no line for {path}"));
            let hex: String = digest(&SHA256, asset.bytes)
                .as_ref()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(&line[..64], hex, "{path} differs from its recorded sha256");
        }
    }
}
