//! The content service: copy written by a local language model behind a batching worker,
//! guardrails, templates, embeddings and recommendations.
//!
//! Its tables live in the `content` schema. Routes are mounted under `/v1/content` by the gateway
//! (embedded mode) or served by the `mercato-content` binary behind a proxying gateway.

use std::sync::Arc;

use mercato_platform::{service::ServiceParts, settings::Settings};
use sqlx::PgPool;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod llm;
mod state;

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
