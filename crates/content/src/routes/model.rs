//! `GET /v1/content/model`: the loaded model and the batching worker's live figures.

use axum::extract::State;
use mercato_platform::{ApiError, ApiResult, auth::TenantContext, error::Problem, extract::Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    inference::engine::{ModelInfo, StatsSnapshot},
    state::AppState,
};

pub const TAG: &str = "generation";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(model_status))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ModelStatus {
    pub model: ModelInfo,
    pub worker: StatsSnapshot,
}

/// The generative model and the worker's queue, batch and throughput.
#[utoipa::path(
    get, path = "/v1/content/model", tag = TAG,
    responses(
        (status = 200, description = "Model and worker figures", body = ModelStatus),
        (status = 503, description = "The model is not loaded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn model_status(
    State(state): State<AppState>,
    _ctx: TenantContext,
) -> ApiResult<Json<ModelStatus>> {
    let model = state.engine.ready().map_err(ApiError::Unavailable)?;
    Ok(Json(ModelStatus {
        model,
        worker: state.engine.stats.snapshot(),
    }))
}
