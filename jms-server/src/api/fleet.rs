//! The fleet routes: `GET /api/v1/bastions`, `GET /api/v1/bastions/{name}`
//! `POST /api/v1/bastions/{name}/revoke` and `PUT /api/v1/bastions/{name}/zone`
//! (see `crate::fleet`).

use axum::extract::State;
use axum::{Extension, Json};
use serde_json::{json, Value};

use super::extract::{Body, PathParams};
use super::{blocking, Actor, ApiError, AppState};
use crate::fleet::BastionView;

/// `GET /api/v1/bastions`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    blocking(&state, |services| {
        let items = services.fleet.fleet()?;
        Ok(Json(json!({
            "items": items,
            "silent_after_secs": services.fleet.bastion_silent_after().as_secs(),
        })))
    })
    .await
}

/// `GET /api/v1/bastions/{name}`.
pub async fn get(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<BastionView>, ApiError> {
    blocking(&state, move |services| {
        Ok(Json(services.fleet.fleet_member(&name)?))
    })
    .await
}

/// `POST /api/v1/bastions/{name}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(name): PathParams<String>,
) -> Result<Json<BastionView>, ApiError> {
    blocking(&state, move |services| {
        Ok(Json(services.fleet.revoke_bastion(&actor.name, &name)?))
    })
    .await
}

/// The body of `PUT /api/v1/bastions/{name}/zone`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneBody {
    /// None (or absent): the bastion leaves its zone.
    #[serde(default)]
    pub zone: Option<String>,
}

/// `PUT /api/v1/bastions/{name}/zone`.
pub async fn set_zone(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    PathParams(name): PathParams<String>,
    Body(body): Body<ZoneBody>,
) -> Result<Json<BastionView>, ApiError> {
    blocking(&state, move |services| {
        Ok(Json(services.fleet.set_bastion_zone(
            &actor.name,
            &name,
            body.zone.as_deref(),
        )?))
    })
    .await
}
