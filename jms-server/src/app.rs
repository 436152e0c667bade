//! The whole HTTP application: the admin API ([`crate::api`]), the
//! self-service pages ([`crate::selfservice`]), the audit web
//! ([`crate::web`]) and the engineers' portal at the site root
//! ([`crate::portal`]), each a router built from the services it uses,
//! merged here under the common fallbacks (JSON 404/405) and layers (body
//! limit, request log).

use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::Router;

use crate::api::{self, error};
use crate::services::Services;
use crate::web::WebServices;

/// The server's router.
pub fn router(services: &Services) -> Router {
    let web = WebServices {
        audit: services.audit.clone(),
        recordings: services.recordings.clone(),
        live: services.live.clone(),
        fleet: services.fleet.clone(),
        admins: services.web_admins.clone(),
        api: api::AppState {
            services: services.clone(),
        },
    };
    api::router(services)
        .merge(crate::selfservice::router(services.links.clone()))
        .merge(crate::web::router(web))
        .merge(crate::portal::router(services.portal.clone()))
        .merge(crate::portal::terminal::router(
            crate::portal::terminal::TerminalState {
                portal: services.portal.clone(),
                sync: services.sync.clone(),
            },
        ))
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::wrong_method)
        .layer(DefaultBodyLimit::max(api::BODY_LIMIT))
        .layer(middleware::from_fn(api::log_request))
}
