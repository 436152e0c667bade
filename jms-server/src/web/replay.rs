//! The replay page: a session's recording in the vendored asciinema player,
//! with play/pause, seek (the player's progress bar, ±10 s, "go to"
//! seconds) and speed. `#t=SECONDS` (or `?t=SECONDS`) opens it at that
//! moment — the command search links here that way. The recording itself
//! is served to the logged-in admin from the same store lookup as
//! `/api/v1/sessions/{id}/recording`.

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use maud::{html, Markup};

use super::assets;
use super::auth::WebAdmin;
use super::layout::url_escape;
use super::layout::{self, Nav, Page};
use super::sessions::{find_session, player_head};
use super::{WebError, WebState};
use crate::api::audit::stream_file;
use crate::recordings::{RecordingError, RecordingReader};

/// Playback speeds offered.
const SPEEDS: [(&str, &str); 6] = [
    ("0.5", "0.5×"),
    ("1", "1×"),
    ("2", "2×"),
    ("4", "4×"),
    ("8", "8×"),
    ("16", "16×"),
];

/// `GET /web/sessions/{id}/replay`.
pub async fn page(
    State(state): State<WebState>,
    Extension(me): Extension<WebAdmin>,
    Path(id): Path<String>,
) -> Result<Markup, WebError> {
    let s = find_session(&state, id).await?;
    let detail = format!("/web/sessions/{}", url_escape(&s.id));
    let body = html! {
        (player_head("Replay", &s, &detail))
        @if s.has_recording {
            link rel="stylesheet" href=(assets::url("asciinema-player.css"));
            div.player-controls {
                button #play-pause type="button" { "Play" }
                button #back-10 type="button" title="Back 10 seconds" { "−10 s" }
                button #forward-10 type="button" title="Forward 10 seconds" { "+10 s" }
                form #seek-form {
                    label { "Go to " input #seek-to type="number" min="0" step="0.1" placeholder="seconds"; }
                    " " button type="submit" { "Go" }
                }
                label { "Speed " select #speed {
                    @for (value, label) in SPEEDS {
                        option value=(value) selected[value == "1"] { (label) }
                    }
                } }
                span.clock #clock { "--:-- / --:--" }
            }
            div #player data-src=(format!("{detail}/recording.cast")) {}
            p.muted.credit {
                "Player: " a href=(assets::url("asciinema-player.LICENSE")) { "asciinema-player " (assets::PLAYER_VERSION) " (Apache-2.0)" }
            }
            script src=(assets::url("asciinema-player.min.js")) {}
            script src=(assets::url("replay.js")) {}
        } @else {
            p.error #no-recording {
                @if s.online { "The session is still going: its recording is uploaded when it ends." }
                @else { "No complete recording of this session was uploaded." }
            }
        }
    };
    Ok(layout::page(&Page {
        title: "Replay",
        admin: Some(&me.username),
        nav: Some(Nav::Sessions),
        body,
    }))
}

/// `GET /web/sessions/{id}/recording.cast`: the asciicast the player loads.
pub async fn recording(
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let recordings = state.services.recordings.clone();
    let found = tokio::task::spawn_blocking(move || recordings.open_recording(&id))
        .await
        .map_err(|e| WebError::Internal(format!("worker failed: {e}")))?;
    let RecordingReader { reader, size } = match found {
        Ok(found) => found,
        Err(RecordingError::NotFound(message) | RecordingError::BadInput(message)) => {
            return Err(WebError::NotFound(message))
        }
        Err(e) => return Err(WebError::Internal(e.to_string())),
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/x-asciicast".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (header::CACHE_CONTROL, "private, no-store".to_string()),
        ],
        stream_file(reader),
    )
        .into_response())
}
