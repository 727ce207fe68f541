//! `/v1/profiling/products`: the catalog events and recommendations refer to.

use axum::extract::State;
use chrono::{DateTime, Utc};
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

use crate::{
    db::products as db,
    domain::product::{CleanProduct, MAX_BATCH, ProductInput},
    state::AppState,
};

pub const TAG: &str = "products";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upsert_products, list_products))
        .routes(routes!(get_product))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Product {
    pub product_id: String,
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price: f64,
    pub currency: String,
    pub in_stock: bool,
    pub tags: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::ProductRow> for Product {
    fn from(r: db::ProductRow) -> Self {
        Product {
            product_id: r.product_id,
            title: r.title,
            description: r.description,
            category: r.category,
            price: r.price,
            currency: r.currency,
            in_stock: r.in_stock,
            tags: r.tags,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProductBatch {
    /// 1 to 1,000 products; each is validated on its own.
    #[schema(value_type = Vec<ProductInput>)]
    pub items: Vec<serde_json::Value>,
}

/// Creates or replaces up to 1,000 catalog products by `product_id`.
#[utoipa::path(
    post, path = "/v1/profiling/products", tag = TAG,
    request_body = ProductBatch,
    responses(
        (status = 200, description = "Per-item results", body = BatchResult),
        (status = 422, description = "Empty or oversize batch", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn upsert_products(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(batch): Json<ProductBatch>,
) -> ApiResult<Json<BatchResult>> {
    ctx.require(Role::Writer)?;
    if batch.items.is_empty() || batch.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "items",
            format!("must hold 1 to {MAX_BATCH} products"),
        ));
    }
    let mut results = Vec::new();
    // Later items with the same product_id replace earlier ones.
    let mut valid: Vec<(usize, CleanProduct)> = Vec::new();
    for (index, value) in batch.items.into_iter().enumerate() {
        let prefix = format!("items[{index}].");
        match item_from_value::<ProductInput>(value, &prefix)
            .map_err(|e| vec![e])
            .and_then(|p| p.clean(&prefix))
        {
            Ok(p) => valid.push((index, p)),
            Err(errors) => results.push(ItemResult {
                index,
                status: ItemStatus::Rejected,
                id: None,
                errors,
            }),
        }
    }
    let products: Vec<CleanProduct> = valid.iter().map(|(_, p)| p.clone()).collect();
    let stored = db::upsert_many(&state.pool, ctx.tenant_id, &products).await?;
    for (index, p) in valid {
        let inserted = stored.get(&p.product_id).copied().unwrap_or(false);
        results.push(ItemResult {
            index,
            status: if inserted {
                ItemStatus::Created
            } else {
                ItemStatus::Updated
            },
            id: None,
            errors: Vec::new(),
        });
    }
    Ok(Json(BatchResult::new(results)))
}

/// One product.
#[utoipa::path(
    get, path = "/v1/profiling/products/{product_id}", tag = TAG,
    params(("product_id" = String, Path)),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 404, description = "No such product", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_product(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(product_id): Path<String>,
) -> ApiResult<Json<Product>> {
    let row = db::get(&state.pool, ctx.tenant_id, &product_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("product".into()))?;
    Ok(Json(row.into()))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ProductFilter {
    pub category: Option<String>,
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// Products in `product_id` order, optionally of one category.
#[utoipa::path(
    get, path = "/v1/profiling/products", tag = TAG,
    params(ProductFilter),
    responses(
        (status = 200, description = "A page of products", body = Page<Product>),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn list_products(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(filter): Query<ProductFilter>,
) -> ApiResult<Json<Page<Product>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor,
    };
    let limit = page.limit()?;
    let category = filter.category.map(|c| c.trim().to_lowercase());
    let rows = db::list(
        &state.pool,
        ctx.tenant_id,
        category.as_deref(),
        page.after()?,
        i64::from(limit) + 1,
    )
    .await?;
    let items: Vec<Product> = rows.into_iter().map(Into::into).collect();
    Ok(Json(Page::from_rows(items, limit, |p| {
        p.product_id.clone()
    })))
}
