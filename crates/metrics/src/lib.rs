//! The metrics service: outcomes, campaign metrics, experiment statistics, decisioning
//! (bandits, send time, budget) and campaigns that optimise themselves.
//!
//! Layout: `routes/` holds the HTTP resources (campaigns, decisions, outcomes, results,
//! planning), `domain/` the rules (campaign validation and lifecycle, metrics, attribution,
//! budget allocation), `decide/` the bandit policy (Thompson sampling over per-arm
//! posteriors, send time), `stats/` the statistics the reports and bandits use (tests,
//! posteriors, sequential testing, CUPED, off-policy evaluation), each pure and
//! unit-tested against independently computed values; `db/` the queries, `jobs` the
//! optimiser.
//!
//! The loop: a campaign starts and freezes its audience (a profiling segment, read through
//! profiling's segment compiler); decisions are drawn per customer and logged with their
//! probability; outcomes update the arm counts the posteriors are read from; metrics,
//! analysis and policy evaluation read the log; the optimiser pauses losers and stops the
//! campaign.
//!
//! Its tables live in the `metrics` schema. Routes are mounted under `/v1/metrics` by the gateway
//! (embedded mode) or served by the `mercato-metrics` binary behind a proxying gateway.

use std::sync::Arc;

use mercato_platform::{service::ServiceParts, settings::Settings};
use sqlx::PgPool;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod db;
pub mod decide;
pub mod domain;
pub mod jobs;
pub mod routes;
mod state;
pub mod stats;

pub use state::AppState;

/// Every route of the service, before its state is applied.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::campaigns::routes())
        .merge(routes::decisions::routes())
        .merge(routes::outcomes::routes())
        .merge(routes::reports::routes())
        .merge(routes::planning::routes())
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
    let mut parts = ServiceParts::routes(router(state.clone()));
    parts.jobs.push(Arc::new(jobs::Optimise { state }));
    Ok(parts)
}
