//! Data-subject requests: export everything held about a customer, or erase it.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::Problem,
    extract::{Json, Path},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::{customers, privacy},
    routes::customers::Customer,
    state::AppState,
};

pub const TAG: &str = "privacy";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(export_customer))
        .routes(routes!(erase_customer))
}

/// Everything the profiling service holds about one customer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerExport {
    pub exported_at: DateTime<Utc>,
    pub customer: Customer,
    /// External ids of customers merged into this one.
    pub merged_ids: Vec<String>,
    /// Anonymous ids linked to this customer.
    pub anonymous_ids: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<serde_json::Value>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Erasure {
    pub customer_id: Uuid,
    /// Rows removed per kind and per service hook.
    #[schema(value_type = Object)]
    pub removed: serde_json::Map<String, serde_json::Value>,
}

/// Exports the customer's record, linked ids and every event (right of access).
#[utoipa::path(
    get, path = "/v1/profiling/customers/{id}/export", tag = TAG,
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "Everything held about the customer", body = CustomerExport),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn export_customer(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<CustomerExport>> {
    ctx.require(Role::Admin)?;
    let mut conn = state.pool.acquire().await?;
    let customer = customers::get(&mut *conn, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("customer".into()))?;
    Ok(Json(CustomerExport {
        exported_at: Utc::now(),
        customer: customer.into(),
        merged_ids: privacy::aliases_of(&mut conn, ctx.tenant_id, id).await?,
        anonymous_ids: privacy::identities_of(&mut conn, ctx.tenant_id, id).await?,
        events: privacy::events_of(&mut conn, ctx.tenant_id, id).await?,
    }))
}

/// Erases the customer everywhere in one transaction (right to erasure): record, profile,
/// events (anonymous ones of linked visitors too), identities, aliases, and whatever other
/// services hold through their `erase_customer` hooks. Leaves an audit record without
/// personal data.
#[utoipa::path(
    delete, path = "/v1/profiling/customers/{id}", tag = TAG,
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "Erased; counts of what was removed", body = Erasure),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn erase_customer(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Erasure>)> {
    ctx.require(Role::Admin)?;
    let mut tx = state.pool.begin().await?;
    customers::get(&mut *tx, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("customer".into()))?;
    let removed: serde_json::Map<String, serde_json::Value> =
        privacy::erase(&mut tx, ctx.tenant_id, id)
            .await?
            .into_iter()
            .map(|(k, v)| (k, v.into()))
            .collect();
    privacy::audit(
        &mut tx,
        ctx.tenant_id,
        "customer.erased",
        id,
        ctx.key_id,
        &serde_json::Value::Object(removed.clone()),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::OK,
        Json(Erasure {
            customer_id: id,
            removed,
        }),
    ))
}
