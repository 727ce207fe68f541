//! `profiling.products`.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::product::CleanProduct;

pub struct ProductRow {
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

/// Upserts products; a product_id repeated in the list takes its last record (one
/// statement cannot update a row twice). Returns whether each product_id was inserted.
pub async fn upsert_many(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    products: &[CleanProduct],
) -> Result<HashMap<String, bool>, sqlx::Error> {
    let mut latest: BTreeMap<&str, &CleanProduct> = BTreeMap::new();
    for p in products {
        latest.insert(&p.product_id, p);
    }
    if latest.is_empty() {
        return Ok(HashMap::new());
    }
    // In product_id order, so concurrent upserts lock rows in the same order.
    let products: Vec<&CleanProduct> = latest.into_values().collect();
    let ids: Vec<String> = products.iter().map(|p| p.product_id.clone()).collect();
    let titles: Vec<String> = products.iter().map(|p| p.title.clone()).collect();
    let descriptions: Vec<Option<String>> =
        products.iter().map(|p| p.description.clone()).collect();
    let categories: Vec<Option<String>> = products.iter().map(|p| p.category.clone()).collect();
    let prices: Vec<f64> = products.iter().map(|p| p.price).collect();
    let currencies: Vec<String> = products.iter().map(|p| p.currency.clone()).collect();
    let stock: Vec<bool> = products.iter().map(|p| p.in_stock).collect();
    let tags: Vec<serde_json::Value> = products.iter().map(|p| serde_json::json!(p.tags)).collect();
    let rows = sqlx::query!(
        r#"INSERT INTO profiling.products AS p (tenant_id, product_id, title, description, category, price,
                                                currency, in_stock, tags)
           SELECT $1, t.id, t.title, t.description, t.category, t.price::numeric(14,2), t.currency, t.stock,
                  ARRAY(SELECT jsonb_array_elements_text(t.tags))
           FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::bool[], $9::jsonb[])
                AS t(id, title, description, category, price, currency, stock, tags)
           ON CONFLICT (tenant_id, product_id) DO UPDATE SET
             title = EXCLUDED.title, description = EXCLUDED.description, category = EXCLUDED.category,
             price = EXCLUDED.price, currency = EXCLUDED.currency, in_stock = EXCLUDED.in_stock,
             tags = EXCLUDED.tags, updated_at = now()
           RETURNING product_id, (xmax = 0) AS "inserted!""#,
        tenant_id,
        &ids,
        &titles,
        &descriptions as &[Option<String>],
        &categories as &[Option<String>],
        &prices,
        &currencies,
        &stock,
        &tags
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.product_id, r.inserted))
        .collect())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    product_id: &str,
) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as!(
        ProductRow,
        r#"SELECT product_id, title, description, category, price::float8 AS "price!", currency AS "currency!: String",
                  in_stock, tags, created_at, updated_at
           FROM profiling.products WHERE tenant_id = $1 AND product_id = $2"#,
        tenant_id,
        product_id
    )
    .fetch_optional(db)
    .await
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    category: Option<&str>,
    after: Option<String>,
    limit: i64,
) -> Result<Vec<ProductRow>, sqlx::Error> {
    sqlx::query_as!(
        ProductRow,
        r#"SELECT product_id, title, description, category, price::float8 AS "price!", currency AS "currency!: String",
                  in_stock, tags, created_at, updated_at
           FROM profiling.products
           WHERE tenant_id = $1 AND ($2::text IS NULL OR category = $2) AND ($3::text IS NULL OR product_id > $3)
           ORDER BY product_id LIMIT $4"#,
        tenant_id,
        category,
        after,
        limit
    )
    .fetch_all(db)
    .await
}
