//! The metrics service: outcomes, campaign metrics, experiment statistics, decisioning
//! (bandits, send time, budget) and campaigns that optimise themselves.
//!
//! `stats` holds the statistics the experiment reports and bandits use (tests, posteriors,
//! sequential testing, CUPED, off-policy evaluation, Thompson sampling), pure and
//! unit-tested against independently computed values.
//!
//! Its tables live in the `metrics` schema. Routes are mounted under `/v1/metrics` by the gateway
//! (embedded mode) or served by the `mercato-metrics` binary behind a proxying gateway.

use std::sync::Arc;

use mercato_platform::{service::ServiceParts, settings::Settings};
use sqlx::PgPool;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

mod state;
pub mod stats;

pub use state::AppState;

/// Every route of the service, before its state is applied.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
}

pub fn router(state: AppState) -> OpenApiRouter {
    routes().with_state(state)
}

pub fn openapi() -> OpenApi {
    routes().into_openapi()
}

/// The routes, job handlers and readiness checks this service adds to a process.
pub async fn parts(pool: PgPool, settings: Arc<Settings>) -> anyhow::Result<ServiceParts> {
    let state = AppState { pool, settings };
    Ok(ServiceParts::routes(router(state)))
}
