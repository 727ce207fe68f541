//! Queries of the content service: catalog reads (profiling's products) and templates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct ProductRow {
    pub product_id: String,
    pub title: String,
    pub price: f64,
    pub currency: String,
    pub category: Option<String>,
    pub description: Option<String>,
    pub in_stock: bool,
}

/// The tenant's products with these ids (unknown ids are simply absent).
pub async fn products(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    ids: &[String],
) -> Result<Vec<ProductRow>, sqlx::Error> {
    sqlx::query_as!(
        ProductRow,
        r#"SELECT product_id, title, price::float8 AS "price!", currency AS "currency!: String",
                  category, description, in_stock
           FROM profiling.products WHERE tenant_id = $1 AND product_id = ANY($2)"#,
        tenant_id,
        ids
    )
    .fetch_all(db)
    .await
}

/// Titles of the tenant's catalog (the guardrails look for products the copy may not name).
pub async fn catalog_titles(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    limit: i64,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT product_id, title FROM profiling.products WHERE tenant_id = $1
           ORDER BY product_id LIMIT $2"#,
        tenant_id,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.product_id, r.title)).collect())
}

#[derive(Debug, Clone)]
pub struct TemplateRow {
    pub channel: String,
    pub fields: BTreeMap<String, String>,
    pub updated_at: DateTime<Utc>,
}

fn to_fields(v: serde_json::Value) -> BTreeMap<String, String> {
    serde_json::from_value(v).unwrap_or_default()
}

pub async fn template(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    channel: &str,
) -> Result<Option<TemplateRow>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT channel, fields, updated_at FROM content.templates WHERE tenant_id = $1 AND channel = $2",
        tenant_id,
        channel
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| TemplateRow {
        channel: r.channel,
        fields: to_fields(r.fields),
        updated_at: r.updated_at,
    }))
}

pub async fn templates(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Vec<TemplateRow>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT channel, fields, updated_at FROM content.templates WHERE tenant_id = $1 ORDER BY channel",
        tenant_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TemplateRow {
            channel: r.channel,
            fields: to_fields(r.fields),
            updated_at: r.updated_at,
        })
        .collect())
}

/// Creates or replaces the template of a channel; true when it was new.
pub async fn put_template(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    channel: &str,
    fields: &BTreeMap<String, String>,
) -> Result<(bool, DateTime<Utc>), sqlx::Error> {
    let json = serde_json::to_value(fields).unwrap_or_default();
    let r = sqlx::query!(
        r#"INSERT INTO content.templates (tenant_id, channel, fields) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, channel) DO UPDATE SET fields = EXCLUDED.fields, updated_at = now()
           RETURNING (xmax = 0) AS "created!", updated_at"#,
        tenant_id,
        channel,
        json
    )
    .fetch_one(db)
    .await?;
    Ok((r.created, r.updated_at))
}

pub async fn delete_template(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    channel: &str,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query!(
        "DELETE FROM content.templates WHERE tenant_id = $1 AND channel = $2",
        tenant_id,
        channel
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() > 0)
}
