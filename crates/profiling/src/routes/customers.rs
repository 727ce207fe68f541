//! `/v1/profiling/customers`: upsert one or a batch by `external_id`, read, list.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Datelike, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    batch::{BatchResult, ItemResult, ItemStatus},
    error::Problem,
    extract::{Json, Path, Query, item_from_value},
    pagination::{Page, PageParams},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::customers as db,
    domain::customer::{CleanCustomer, Consent, CustomerInput, MAX_BATCH},
    ingest,
    state::AppState,
};

pub const TAG: &str = "customers";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upsert_customer, list_customers))
        .routes(routes!(upsert_customers))
        .routes(routes!(get_customer))
}

/// A stored customer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Customer {
    pub id: Uuid,
    pub external_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub country: Option<String>,
    pub birth_year: Option<i32>,
    pub consent: Consent,
    #[schema(value_type = Object)]
    pub traits: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::CustomerRow> for Customer {
    fn from(r: db::CustomerRow) -> Self {
        Customer {
            id: r.id,
            external_id: r.external_id,
            email: r.email,
            phone: r.phone,
            first_name: r.first_name,
            last_name: r.last_name,
            locale: r.locale,
            country: r.country,
            birth_year: r.birth_year,
            consent: Consent {
                email: r.consent_email,
                sms: r.consent_sms,
                push: r.consent_push,
                ai_personalization: r.consent_ai,
            },
            traits: r.traits,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomerBatch {
    /// 1 to 1,000 customers; each is validated on its own.
    #[schema(value_type = Vec<CustomerInput>)]
    pub items: Vec<serde_json::Value>,
}

fn current_year() -> i32 {
    Utc::now().year()
}

/// Creates or updates one customer, matched on `external_id`.
#[utoipa::path(
    post, path = "/v1/profiling/customers", tag = TAG,
    request_body = CustomerInput,
    responses(
        (status = 201, description = "Created", body = Customer),
        (status = 200, description = "Updated", body = Customer),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn upsert_customer(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(input): Json<CustomerInput>,
) -> ApiResult<(StatusCode, Json<Customer>)> {
    ctx.require(Role::Writer)?;
    let clean = input
        .clean("", current_year())
        .map_err(ApiError::Validation)?;
    let mut tx = state.pool.begin().await?;
    let done = ingest::upsert_customers(&mut tx, ctx.tenant_id, vec![(0, clean)]).await?;
    let (_, first) = done
        .first()
        .ok_or_else(|| ApiError::internal("upsert returned no row"))?;
    let row = db::get(&mut *tx, ctx.tenant_id, first.id)
        .await?
        .ok_or_else(|| ApiError::internal("upserted row vanished"))?;
    tx.commit().await?;
    let status = if first.inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row.into())))
}

/// Creates or updates up to 1,000 customers. Each item is validated on its own: invalid
/// items are reported and skipped, valid ones are stored. Items repeating an `external_id`
/// are merged in order.
#[utoipa::path(
    post, path = "/v1/profiling/customers/batch", tag = TAG,
    request_body = CustomerBatch,
    responses(
        (status = 200, description = "Per-item results", body = BatchResult),
        (status = 422, description = "Empty or oversize batch", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id, items = batch.items.len()))]
async fn upsert_customers(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(batch): Json<CustomerBatch>,
) -> ApiResult<Json<BatchResult>> {
    ctx.require(Role::Writer)?;
    if batch.items.is_empty() || batch.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "items",
            format!("must hold 1 to {MAX_BATCH} customers"),
        ));
    }
    let year = current_year();
    let mut results = Vec::new();
    let mut valid: Vec<(usize, CleanCustomer)> = Vec::new();
    for (index, value) in batch.items.into_iter().enumerate() {
        let prefix = format!("items[{index}].");
        let cleaned = item_from_value::<CustomerInput>(value, &prefix)
            .map_err(|e| vec![e])
            .and_then(|input| input.clean(&prefix, year));
        match cleaned {
            Ok(clean) => valid.push((index, clean)),
            Err(errors) => results.push(ItemResult {
                index,
                status: ItemStatus::Rejected,
                id: None,
                errors,
            }),
        }
    }
    let mut tx = state.pool.begin().await?;
    let stored = ingest::upsert_customers(&mut tx, ctx.tenant_id, valid).await?;
    tx.commit().await?;
    results.extend(stored.into_iter().map(|(index, row)| ItemResult {
        index,
        status: if row.inserted {
            ItemStatus::Created
        } else {
            ItemStatus::Updated
        },
        id: Some(row.id),
        errors: Vec::new(),
    }));
    Ok(Json(BatchResult::new(results)))
}

/// One customer.
#[utoipa::path(
    get, path = "/v1/profiling/customers/{id}", tag = TAG,
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The customer", body = Customer),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn get_customer(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Customer>> {
    let row = db::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("customer".into()))?;
    Ok(Json(row.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerFilter {
    /// Only the customer with this external id.
    pub external_id: Option<String>,
    /// Only customers with this email (normalised before matching).
    pub email: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Customers in creation order, optionally filtered by external id or email.
#[utoipa::path(
    get, path = "/v1/profiling/customers", tag = TAG,
    params(CustomerFilter),
    responses(
        (status = 200, description = "A page of customers", body = Page<Customer>),
        (status = 400, description = "Bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn list_customers(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(filter): Query<CustomerFilter>,
) -> ApiResult<Json<Page<Customer>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    };
    let limit = page.limit()?;
    let email = filter
        .email
        .as_deref()
        .map(crate::domain::contact::normalize_email)
        .transpose()
        .map_err(|m| ApiError::bad_request("email", m))?;
    let rows = db::list(
        &state.pool,
        ctx.tenant_id,
        filter.external_id.as_deref(),
        email.as_deref(),
        page.after()?,
        i64::from(limit) + 1,
    )
    .await?;
    let customers: Vec<Customer> = rows.into_iter().map(Into::into).collect();
    Ok(Json(Page::from_rows(customers, limit, |c| c.id)))
}
