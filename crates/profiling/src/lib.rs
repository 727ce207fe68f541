//! The profiling service: customers, their events and products, cleaned and merged into
//! the profiles, segments and clusters every later decision uses.
//!
//! Layout: `routes/` holds the HTTP resources (handlers and their request/response types),
//! `domain/` the rules (normalising contact data, merging records) with no I/O, `db/` the
//! queries. Its tables live in the `profiling` schema; routes are mounted under
//! `/v1/profiling` by the gateway or served by the `mercato-profiling` binary.

use std::sync::Arc;

use mercato_platform::{service::ServiceParts, settings::Settings};
use sqlx::PgPool;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod db;
pub mod domain;
pub mod ingest;
pub mod jobs;
pub mod learn;
pub mod routes;
mod state;

pub use state::AppState;

/// Every route of the service, before its state is applied.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::customers::routes())
        .merge(routes::events::routes())
        .merge(routes::products::routes())
        .merge(routes::profiles::routes())
        .merge(routes::segments::routes())
        .merge(routes::value::routes())
        .merge(routes::privacy::routes())
        .merge(routes::imports::routes())
        .merge(routes::models::routes())
}

pub fn router(state: AppState) -> OpenApiRouter {
    routes().with_state(state)
}

pub fn openapi() -> OpenApi {
    routes().into_openapi()
}

/// The routes, job handlers and readiness checks this service adds to a process.
pub async fn parts(pool: PgPool, settings: Arc<Settings>) -> anyhow::Result<ServiceParts> {
    let state = AppState {
        pool: pool.clone(),
        settings,
    };
    let mut parts = ServiceParts::routes(router(state));
    parts.jobs.push(Arc::new(jobs::RecomputeProfiles));
    parts.jobs.push(Arc::new(jobs::FitClv));
    parts.jobs.push(Arc::new(jobs::Import));
    parts.jobs.push(Arc::new(jobs::Cluster));
    parts.jobs.push(Arc::new(jobs::TrainModel));
    parts.jobs.push(Arc::new(jobs::ScoreModel));
    Ok(parts)
}
