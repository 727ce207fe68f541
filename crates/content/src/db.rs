//! Queries of the content service: catalog reads (profiling's products) and templates.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::recommend::{Candidate, Interaction};

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

#[derive(Debug, Clone)]
pub struct StaleProduct {
    pub product_id: String,
    pub text: String,
    pub text_hash: String,
}

/// Products without a current embedding, at most `limit`, and how many there are in all. The
/// text embedded is title, category, description and tags; its md5 decides whether a stored
/// vector is current.
pub async fn stale_products(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    limit: i64,
) -> Result<(Vec<StaleProduct>, i64), sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH texts AS (
             SELECT p.product_id,
                    concat_ws('. ', p.title, p.category, p.description, nullif(array_to_string(p.tags, ', '), '')) AS text
             FROM profiling.products p WHERE p.tenant_id = $1)
           SELECT t.product_id, t.text AS "text!", md5(t.text) AS "text_hash!", count(*) OVER () AS "total!"
           FROM texts t
           LEFT JOIN content.product_embeddings e ON e.tenant_id = $1 AND e.product_id = t.product_id
           WHERE e.product_id IS NULL OR e.text_hash <> md5(t.text)
           ORDER BY t.product_id LIMIT $2"#,
        tenant_id,
        limit
    )
    .fetch_all(db)
    .await?;
    let total = rows.first().map(|r| r.total).unwrap_or(0);
    Ok((
        rows.into_iter()
            .map(|r| StaleProduct {
                product_id: r.product_id,
                text: r.text,
                text_hash: r.text_hash,
            })
            .collect(),
        total,
    ))
}

pub async fn store_embeddings(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    model: &str,
    products: &[StaleProduct],
    vectors: &[Vec<f32>],
) -> Result<(), sqlx::Error> {
    let ids: Vec<String> = products.iter().map(|p| p.product_id.clone()).collect();
    let hashes: Vec<String> = products.iter().map(|p| p.text_hash.clone()).collect();
    // Postgres has no ragged arrays: vectors travel as JSON.
    let json = serde_json::to_value(vectors).unwrap_or_default();
    sqlx::query!(
        r#"INSERT INTO content.product_embeddings (tenant_id, product_id, text_hash, embedding, model)
           SELECT $1, i.id, i.hash, ARRAY(SELECT jsonb_array_elements_text(i.v)::real), $5
           FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS i0(id, hash, n)
           CROSS JOIN LATERAL (SELECT i0.id, i0.hash, $4::jsonb -> (i0.n::int - 1) AS v) i
           ON CONFLICT (tenant_id, product_id) DO UPDATE
             SET text_hash = EXCLUDED.text_hash, embedding = EXCLUDED.embedding,
                 model = EXCLUDED.model, updated_at = now()"#,
        tenant_id,
        &ids,
        &hashes,
        json,
        model
    )
    .execute(db)
    .await?;
    Ok(())
}

/// In-stock, embedded products with their purchases over the last `days`.
pub async fn candidates(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    days: f64,
) -> Result<Vec<Candidate>, sqlx::Error> {
    sqlx::query_as!(
        Candidate,
        r#"WITH pop AS (
             SELECT pid, count(*) AS n
             FROM profiling.events ev, unnest(ev.product_ids) AS pid
             WHERE ev.tenant_id = $1 AND ev.type = 'purchase'
               AND ev.occurred_at > now() - $2::float8 * interval '1 day'
             GROUP BY pid)
           SELECT p.product_id, p.title, p.category, e.embedding AS "embedding!: Vec<f32>",
                  coalesce(pop.n, 0) AS "purchases!"
           FROM profiling.products p
           JOIN content.product_embeddings e ON e.tenant_id = p.tenant_id AND e.product_id = p.product_id
           LEFT JOIN pop ON pop.pid = p.product_id
           WHERE p.tenant_id = $1 AND p.in_stock"#,
        tenant_id,
        days
    )
    .fetch_all(db)
    .await
}

/// The customer's most recent product interactions (one row per product of an event).
pub async fn interactions(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customer_id: Uuid,
    limit: i64,
) -> Result<Vec<Interaction>, sqlx::Error> {
    sqlx::query_as!(
        Interaction,
        r#"SELECT ev.type AS kind, pid AS "product_id!",
                  extract(epoch FROM now() - ev.occurred_at)::float8 / 86400 AS "days_ago!"
           FROM (SELECT type, occurred_at, product_ids FROM profiling.events
                 WHERE tenant_id = $1 AND customer_id = $2 AND product_ids <> '{}'
                 ORDER BY occurred_at DESC LIMIT $3) ev,
                unnest(ev.product_ids) AS pid
           ORDER BY ev.occurred_at DESC"#,
        tenant_id,
        customer_id,
        limit
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone)]
pub struct MessageRow {
    pub id: Uuid,
    pub job_id: Uuid,
    pub customer_id: Uuid,
    pub channel: String,
    pub fields: serde_json::Value,
    pub source: String,
    pub passed: bool,
    pub checks: serde_json::Value,
    pub provenance: serde_json::Value,
    pub usage: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub async fn messages(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    job_id: Option<Uuid>,
    customer_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<MessageRow>, sqlx::Error> {
    sqlx::query_as!(
        MessageRow,
        r#"SELECT id, job_id, customer_id, channel, fields, source, passed, checks, provenance, usage, created_at
           FROM content.messages
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR job_id = $2) AND ($3::uuid IS NULL OR customer_id = $3)
             AND ($4::uuid IS NULL OR id > $4)
           ORDER BY id LIMIT $5"#,
        tenant_id,
        job_id,
        customer_id,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// Customers a bulk job already wrote for (a resumed job skips them).
pub async fn written_for(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT customer_id FROM content.messages WHERE tenant_id = $1 AND job_id = $2",
        tenant_id,
        job_id
    )
    .fetch_all(db)
    .await
}

pub struct NewMessage {
    pub customer_id: Uuid,
    pub channel: String,
    pub fields: serde_json::Value,
    pub source: String,
    pub passed: bool,
    pub checks: serde_json::Value,
    pub provenance: serde_json::Value,
    pub usage: serde_json::Value,
}

pub async fn insert_message(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    job_id: Uuid,
    m: &NewMessage,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO content.messages
             (tenant_id, id, job_id, customer_id, channel, fields, source, passed, checks, provenance, usage)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (tenant_id, job_id, customer_id) DO NOTHING"#,
        tenant_id,
        Uuid::now_v7(),
        job_id,
        m.customer_id,
        m.channel,
        m.fields,
        m.source,
        m.passed,
        m.checks,
        m.provenance,
        m.usage
    )
    .execute(db)
    .await?;
    Ok(())
}
