//! Bulk generation for a whole segment, as a job: `POST /v1/content/generate/bulk` and the
//! messages it writes (`GET /v1/content/messages`).

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::Problem,
    extract::{Json, Query},
    jobs::queue::{self, Job, NewJob},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db,
    routes::generate::{GenerateRequest, SamplingRequest, VoiceRequest, plan},
    state::AppState,
};

pub const TAG: &str = "generation";
pub const GENERATE_SEGMENT: &str = "content.generate_segment";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(generate_bulk))
        .routes(routes!(list_messages))
}

/// One message per member of a segment.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BulkRequest {
    /// A profiling segment; its members are read when the job runs.
    pub segment_id: Uuid,
    pub channel: String,
    pub brief: String,
    #[serde(default)]
    pub product_ids: Vec<String>,
    #[serde(default)]
    pub voice: VoiceRequest,
    pub language: Option<String>,
    pub max_attempts: Option<usize>,
    #[serde(default)]
    pub sampling: SamplingRequest,
}

impl BulkRequest {
    /// The per-recipient request (one variant, no recipient yet).
    pub fn template_request(&self) -> GenerateRequest {
        GenerateRequest {
            customer_id: None,
            profile: None,
            channel: self.channel.clone(),
            brief: self.brief.clone(),
            product_ids: self.product_ids.clone(),
            voice: self.voice.clone(),
            language: self.language.clone(),
            variants: Some(1),
            max_attempts: self.max_attempts,
            sampling: self.sampling.clone(),
        }
    }
}

/// Writes a message for every member of a segment in the background (job progress counts
/// written, from the model, from templates); the batching worker runs them side by side.
#[utoipa::path(
    post, path = "/v1/content/generate/bulk", tag = TAG,
    request_body = BulkRequest,
    responses(
        (status = 202, description = "The job writing the messages", body = Job),
        (status = 422, description = "Invalid request or unknown segment", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn generate_bulk(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(req): Json<BulkRequest>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    ctx.require(Role::Writer)?;
    // Everything is validated now, so the job does not fail on bad input later.
    plan(&state, ctx.tenant_id, req.template_request()).await?;
    mercato_profiling::db::segments::get(&state.pool, ctx.tenant_id, req.segment_id)
        .await?
        .ok_or_else(|| ApiError::invalid("segment_id", "no such segment"))?;
    let payload = serde_json::to_value(&req).map_err(ApiError::internal)?;
    let job = queue::enqueue(
        &state.pool,
        &NewJob::new(ctx.tenant_id, GENERATE_SEGMENT, payload),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MessageFilter {
    /// Messages of one bulk job.
    pub job_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    /// Page size (1 to 500, default 100).
    pub limit: Option<i64>,
    /// The last id of the previous page.
    pub after: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub job_id: Uuid,
    pub customer_id: Uuid,
    pub channel: String,
    #[schema(value_type = Object)]
    pub fields: serde_json::Value,
    /// `model` or `template`.
    pub source: String,
    pub passed: bool,
    #[schema(value_type = Vec<Object>)]
    pub checks: serde_json::Value,
    #[schema(value_type = Object)]
    pub provenance: serde_json::Value,
    #[schema(value_type = Object)]
    pub usage: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub items: Vec<Message>,
    /// Pass as `after` for the next page; absent on the last one.
    pub next: Option<Uuid>,
}

/// Messages written by bulk jobs, in creation order.
#[utoipa::path(
    get, path = "/v1/content/messages", tag = TAG,
    params(MessageFilter),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 422, description = "Invalid filter", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn list_messages(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(f): Query<MessageFilter>,
) -> ApiResult<Json<MessagePage>> {
    let limit = f.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be 1 to 500"));
    }
    let rows = db::messages(
        &state.pool,
        ctx.tenant_id,
        f.job_id,
        f.customer_id,
        f.after,
        limit,
    )
    .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|m| m.id))
        .flatten();
    Ok(Json(MessagePage {
        items: rows
            .into_iter()
            .map(|r| Message {
                id: r.id,
                job_id: r.job_id,
                customer_id: r.customer_id,
                channel: r.channel,
                fields: r.fields,
                source: r.source,
                passed: r.passed,
                checks: r.checks,
                provenance: r.provenance,
                usage: r.usage,
                created_at: r.created_at,
            })
            .collect(),
        next,
    }))
}
