//! `/v1/profiling/events` and `/v1/profiling/identify`: behaviour in, profiles updated in
//! the same transaction.

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    batch::{BatchResult, ItemResult, ItemStatus},
    error::Problem,
    extract::{Json, item_from_value},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    domain::event::{EventInput, MAX_BATCH},
    ingest,
    state::AppState,
};

pub const TAG: &str = "events";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(track_event))
        .routes(routes!(track_events))
        .routes(routes!(identify))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// 1 to 1,000 events; each is validated on its own.
    #[schema(value_type = Vec<EventInput>)]
    pub items: Vec<serde_json::Value>,
}

/// Records one event. A retry with the same `event_id` answers 200 and changes nothing.
#[utoipa::path(
    post, path = "/v1/profiling/events", tag = TAG,
    request_body = EventInput,
    responses(
        (status = 201, description = "Recorded", body = ItemResult),
        (status = 200, description = "Already recorded (same event_id)", body = ItemResult),
        (status = 422, description = "Invalid event", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn track_event(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(input): Json<EventInput>,
) -> ApiResult<(StatusCode, Json<ItemResult>)> {
    ctx.require(Role::Writer)?;
    let event = input.clean("", Utc::now()).map_err(ApiError::Validation)?;
    let mut results = ingest::record_events(&state.pool, ctx.tenant_id, &[(0, event)]).await?;
    let result = results
        .pop()
        .ok_or_else(|| ApiError::internal("no result for the event"))?;
    let status = if result.status == ItemStatus::Created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(result)))
}

/// Records up to 1,000 events. Invalid items are reported and skipped; valid ones are
/// stored and reach their profiles at once.
#[utoipa::path(
    post, path = "/v1/profiling/events/batch", tag = TAG,
    request_body = EventBatch,
    responses(
        (status = 200, description = "Per-item results: created, duplicate or rejected", body = BatchResult),
        (status = 422, description = "Empty or oversize batch", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id, items = batch.items.len()))]
async fn track_events(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(batch): Json<EventBatch>,
) -> ApiResult<Json<BatchResult>> {
    ctx.require(Role::Writer)?;
    if batch.items.is_empty() || batch.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "items",
            format!("must hold 1 to {MAX_BATCH} events"),
        ));
    }
    let now = Utc::now();
    let mut results = Vec::new();
    let mut valid = Vec::new();
    for (index, value) in batch.items.into_iter().enumerate() {
        let prefix = format!("items[{index}].");
        match item_from_value::<EventInput>(value, &prefix)
            .map_err(|e| vec![e])
            .and_then(|input| input.clean(&prefix, now))
        {
            Ok(event) => valid.push((index, event)),
            Err(errors) => results.push(ItemResult {
                index,
                status: ItemStatus::Rejected,
                id: None,
                errors,
            }),
        }
    }
    if !valid.is_empty() {
        results.extend(ingest::record_events(&state.pool, ctx.tenant_id, &valid).await?);
    }
    Ok(Json(BatchResult::new(results)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentifyRequest {
    #[schema(example = "anon-7f3a")]
    pub anonymous_id: String,
    /// The tenant's customer id (`external_id`); created if new.
    #[schema(example = "cus_1042")]
    pub customer_id: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IdentifyResult {
    /// The customer's Mercato id.
    pub customer_id: Uuid,
    /// Past anonymous events that joined the profile now.
    pub events_linked: usize,
}

/// Links an anonymous visitor to a customer; their past anonymous events join the profile.
/// An anonymous id belongs to the first customer it is linked to.
#[utoipa::path(
    post, path = "/v1/profiling/identify", tag = TAG,
    request_body = IdentifyRequest,
    responses(
        (status = 200, description = "Linked", body = IdentifyResult),
        (status = 422, description = "Invalid ids", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn identify(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(body): Json<IdentifyRequest>,
) -> ApiResult<Json<IdentifyResult>> {
    ctx.require(Role::Writer)?;
    let mut errors = Vec::new();
    for (field, value) in [
        ("anonymous_id", &body.anonymous_id),
        ("customer_id", &body.customer_id),
    ] {
        let v = value.trim();
        if v.is_empty() || v.chars().count() > 200 {
            errors.push(mercato_platform::error::FieldError::new(
                field,
                "must be 1 to 200 characters",
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (customer_id, events_linked) = ingest::identify(
        &state.pool,
        ctx.tenant_id,
        body.anonymous_id.trim(),
        body.customer_id.trim(),
    )
    .await?;
    Ok(Json(IdentifyResult {
        customer_id,
        events_linked,
    }))
}
