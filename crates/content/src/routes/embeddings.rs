//! `POST /v1/content/embeddings` (batched MiniLM, mean pooled, normalised; the OpenAI
//! embeddings shape) and `GET /v1/content/customers/{id}/recommendations`.

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use mercato_platform::{
    ApiError, ApiResult,
    auth::TenantContext,
    error::{FieldError, Problem},
    extract::{Json, Path, Query},
    jobs::queue::{self, NewJob},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db,
    domain::recommend::{self, History, Recommendation},
    inference::embed::EmbedError,
    state::AppState,
};

pub const TAG: &str = "embeddings and recommendations";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(embeddings))
        .routes(routes!(recommendations))
}

/// One text or a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Input {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsRequest {
    /// At most 256 texts of at most 8000 characters (longer token sequences are truncated to
    /// 256 tokens).
    pub input: Input,
    /// Accepted and ignored: the built-in embedding model answers.
    #[serde(default)]
    pub model: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingItem {
    pub object: &'static str,
    pub index: usize,
    pub embedding: Vec<f32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsUsage {
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EmbeddingsResponse {
    pub object: &'static str,
    pub data: Vec<EmbeddingItem>,
    pub model: String,
    pub usage: EmbeddingsUsage,
}

impl From<EmbedError> for ApiError {
    fn from(e: EmbedError) -> Self {
        match e {
            EmbedError::Submit(s) => s.into(),
            EmbedError::Failed(m) => ApiError::Internal(m),
        }
    }
}

/// Sentence embeddings (unit vectors; cosine similarity is their dot product).
#[utoipa::path(
    post, path = "/v1/content/embeddings", tag = TAG,
    request_body = EmbeddingsRequest,
    responses(
        (status = 200, description = "One vector per input, in order", body = EmbeddingsResponse),
        (status = 422, description = "Invalid input", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The embedding queue is full", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The embedding model is not loaded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn embeddings(
    State(state): State<AppState>,
    _ctx: TenantContext,
    Json(req): Json<EmbeddingsRequest>,
) -> ApiResult<Json<EmbeddingsResponse>> {
    let texts = match req.input {
        Input::One(s) => vec![s],
        Input::Many(v) => v,
    };
    let mut errors = Vec::new();
    if texts.is_empty() || texts.len() > 256 {
        errors.push(FieldError::new("input", "1 to 256 texts"));
    }
    for (i, t) in texts.iter().enumerate() {
        if t.trim().is_empty() || t.chars().count() > 8000 {
            errors.push(FieldError::new(
                format!("input[{i}]"),
                "must be 1 to 8000 characters",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (model, _) = state.embedder.ready().map_err(ApiError::Unavailable)?;
    let out = state.embedder.embed(texts).await?;
    Ok(Json(EmbeddingsResponse {
        object: "list",
        data: out
            .vectors
            .into_iter()
            .enumerate()
            .map(|(index, embedding)| EmbeddingItem {
                object: "embedding",
                index,
                embedding,
            })
            .collect(),
        model,
        usage: EmbeddingsUsage {
            prompt_tokens: out.tokens,
            total_tokens: out.tokens,
        },
    }))
}

/// Products embedded per pass.
pub const EMBED_BATCH: i64 = 128;
/// A request embeds at most this many stale products itself; more go to a job.
pub const INLINE_EMBED_LIMIT: i64 = 256;
pub const EMBED_PRODUCTS: &str = "content.embed_products";

/// Embeds up to `limit` products whose embedding is missing or out of date; returns how many
/// were embedded and how many remain.
pub async fn refresh_embeddings(
    state: &AppState,
    tenant_id: Uuid,
    limit: i64,
) -> Result<(i64, i64), ApiError> {
    let (model, _) = state.embedder.ready().map_err(ApiError::Unavailable)?;
    let mut done = 0;
    loop {
        let (stale, total) =
            db::stale_products(&state.pool, tenant_id, EMBED_BATCH.min(limit - done)).await?;
        if stale.is_empty() {
            return Ok((done, 0));
        }
        let texts = stale.iter().map(|p| p.text.clone()).collect();
        let out = state.embedder.embed(texts).await?;
        db::store_embeddings(&state.pool, tenant_id, &model, &stale, &out.vectors).await?;
        done += stale.len() as i64;
        if done >= limit {
            return Ok((done, total - stale.len() as i64));
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RecommendParams {
    /// How many (1 to 50, default 10).
    pub k: Option<usize>,
    /// Items bought within this many days are not recommended (default 30).
    pub exclude_bought_days: Option<f64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecommendationsResponse {
    pub customer_id: Uuid,
    pub recommendations: Vec<Recommendation>,
    /// Products still waiting for their embedding (a job is embedding them); they are left
    /// out until then.
    pub pending_products: i64,
}

/// Products for a customer: similarity to their recent interests, category affinity and
/// popularity; items bought recently and out of stock excluded; each with its reason.
#[utoipa::path(
    get, path = "/v1/content/customers/{id}/recommendations", tag = TAG,
    params(("id" = Uuid, Path, description = "Customer id"), RecommendParams),
    responses(
        (status = 200, description = "Recommendations, best first", body = RecommendationsResponse),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid parameters", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn recommendations(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Query(params): Query<RecommendParams>,
) -> ApiResult<Json<RecommendationsResponse>> {
    let k = params.k.unwrap_or(10);
    if !(1..=50).contains(&k) {
        return Err(ApiError::invalid("k", "must be 1 to 50"));
    }
    let exclude_days = params.exclude_bought_days.unwrap_or(30.0);
    if !(0.0..=3650.0).contains(&exclude_days) {
        return Err(ApiError::invalid(
            "exclude_bought_days",
            "must be 0 to 3650",
        ));
    }
    mercato_profiling::db::customers::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("customer".into()))?;
    let recs = recommend_for(&state, ctx.tenant_id, id, k, exclude_days).await?;
    Ok(Json(recs))
}

/// Recommendations for one customer (also used as template variables).
pub async fn recommend_for(
    state: &AppState,
    tenant_id: Uuid,
    customer_id: Uuid,
    k: usize,
    exclude_days: f64,
) -> Result<RecommendationsResponse, ApiError> {
    // Keep the catalog's embeddings current: small changes inline, large ones in a job.
    let (_, pending) = refresh_embeddings(state, tenant_id, INLINE_EMBED_LIMIT).await?;
    if pending > 0 {
        queue::enqueue(
            &state.pool,
            &NewJob::new(tenant_id, EMBED_PRODUCTS, serde_json::json!({})),
        )
        .await?;
    }
    let candidates = db::candidates(&state.pool, tenant_id, 30.0).await?;
    let rows = db::interactions(&state.pool, tenant_id, customer_id, 50).await?;
    let bought_recently: HashSet<String> = rows
        .iter()
        .filter(|r| r.kind == "purchase" && r.days_ago <= exclude_days)
        .map(|r| r.product_id.clone())
        .collect();
    let category_counts: BTreeMap<String, i64> =
        match mercato_profiling::db::profiles::get(&state.pool, tenant_id, customer_id).await? {
            Some(p) => serde_json::from_value(p.category_counts).unwrap_or_default(),
            None => BTreeMap::new(),
        };
    let history = History {
        interactions: rows,
        category_counts,
        bought_recently,
    };
    Ok(RecommendationsResponse {
        customer_id,
        recommendations: recommend::recommend(&candidates, &history, k),
        pending_products: pending,
    })
}
