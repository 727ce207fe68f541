//! `/v1/profiling/clv` and `/v1/profiling/profiles/recompute`: the long-running model and
//! backfill work, started as jobs.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::Problem,
    extract::Json,
    jobs::{Job, NewJob, queue},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    db::{clusters, clv},
    domain::cluster::ClusterSummary,
    jobs::{self, ClusterParams},
    state::AppState,
};

pub const TAG: &str = "profiles";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(fit_clv))
        .routes(routes!(get_clv))
        .routes(routes!(recompute_profiles))
        .routes(routes!(start_clustering, latest_clusters))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClvModel {
    /// BG/NBD purchase model (time in weeks).
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    /// Gamma-Gamma spend model.
    pub p: f64,
    pub q: f64,
    pub v: f64,
    pub customers: i32,
    pub repeat_customers: i32,
    pub log_likelihood: f64,
    /// The tenant had few repeat buyers and the fit leaned on the pooled prior.
    pub used_prior: bool,
    pub fitted_at: DateTime<Utc>,
}

async fn enqueue(
    state: &AppState,
    ctx: &TenantContext,
    kind: &str,
) -> ApiResult<(StatusCode, Json<Job>)> {
    enqueue_with(state, ctx, kind, serde_json::json!({})).await
}

async fn enqueue_with(
    state: &AppState,
    ctx: &TenantContext,
    kind: &str,
    payload: serde_json::Value,
) -> ApiResult<(StatusCode, Json<Job>)> {
    ctx.require(Role::Writer)?;
    let job = queue::enqueue(&state.pool, &NewJob::new(ctx.tenant_id, kind, payload)).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Fits the tenant's lifetime-value models (BG/NBD + Gamma-Gamma) as a job.
#[utoipa::path(
    post, path = "/v1/profiling/clv/fit", tag = TAG,
    responses((status = 202, description = "The job; follow it at /v1/jobs/{id}", body = Job)),
    security(("api_key" = []))
)]
async fn fit_clv(
    State(state): State<AppState>,
    ctx: TenantContext,
) -> ApiResult<(StatusCode, Json<Job>)> {
    enqueue(&state, &ctx, jobs::FIT_CLV).await
}

/// The tenant's fitted lifetime-value model.
#[utoipa::path(
    get, path = "/v1/profiling/clv", tag = TAG,
    responses(
        (status = 200, description = "The model", body = ClvModel),
        (status = 404, description = "Not fitted yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_clv(State(state): State<AppState>, ctx: TenantContext) -> ApiResult<Json<ClvModel>> {
    let m = clv::get(&state.pool, ctx.tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("lifetime-value model".into()))?;
    Ok(Json(ClvModel {
        r: m.r,
        alpha: m.alpha,
        a: m.a,
        b: m.b,
        p: m.p,
        q: m.q,
        v: m.v,
        customers: m.customers,
        repeat_customers: m.repeat_customers,
        log_likelihood: m.log_likelihood,
        used_prior: m.used_prior,
        fitted_at: m.fitted_at,
    }))
}

/// Rebuilds every profile of the tenant from its events, as a job (backfills).
#[utoipa::path(
    post, path = "/v1/profiling/profiles/recompute", tag = TAG,
    responses((status = 202, description = "The job; follow it at /v1/jobs/{id}", body = Job)),
    security(("api_key" = []))
)]
async fn recompute_profiles(
    State(state): State<AppState>,
    ctx: TenantContext,
) -> ApiResult<(StatusCode, Json<Job>)> {
    enqueue(&state, &ctx, jobs::RECOMPUTE_PROFILES).await
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClusterRun {
    pub id: uuid::Uuid,
    pub k: i32,
    /// Mean silhouette of the chosen k (−1..1; higher is better separated).
    pub silhouette: f64,
    pub customers: i32,
    /// Every k tried with its silhouette.
    #[schema(value_type = Vec<Object>)]
    pub candidates: serde_json::Value,
    pub clusters: Vec<ClusterSummary>,
    pub created_at: DateTime<Utc>,
}

/// Clusters the tenant's customers by behaviour (k-means on standardised RFM and
/// engagement features) as a job. Each customer's cluster becomes the segment field
/// `profile.cluster`.
#[utoipa::path(
    post, path = "/v1/profiling/clusters", tag = TAG,
    request_body = ClusterParams,
    responses(
        (status = 202, description = "The job; follow it at /v1/jobs/{id}", body = Job),
        (status = 422, description = "Invalid k or range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn start_clustering(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(params): Json<ClusterParams>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    if params.k.is_some_and(|k| !(2..=20).contains(&k)) {
        return Err(ApiError::invalid("k", "must be 2 to 20"));
    }
    let (k_min, k_max) = (params.k_min.unwrap_or(2), params.k_max.unwrap_or(8));
    if !(2..=20).contains(&k_min) || !(k_min..=20).contains(&k_max) {
        return Err(ApiError::invalid("k_max", "need 2 <= k_min <= k_max <= 20"));
    }
    let payload = serde_json::to_value(&params).map_err(ApiError::internal)?;
    enqueue_with(&state, &ctx, jobs::CLUSTER, payload).await
}

/// The latest clustering: k, silhouette, and each cluster's size, centroid and what
/// distinguishes it.
#[utoipa::path(
    get, path = "/v1/profiling/clusters", tag = TAG,
    responses(
        (status = 200, description = "The latest run", body = ClusterRun),
        (status = 404, description = "Never clustered", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn latest_clusters(
    State(state): State<AppState>,
    ctx: TenantContext,
) -> ApiResult<Json<ClusterRun>> {
    let run = clusters::latest(&state.pool, ctx.tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("clustering".into()))?;
    Ok(Json(ClusterRun {
        id: run.id,
        k: run.k,
        silhouette: run.silhouette,
        customers: run.customers,
        candidates: run.candidates,
        clusters: serde_json::from_value(run.clusters).map_err(ApiError::internal)?,
        created_at: run.created_at,
    }))
}
