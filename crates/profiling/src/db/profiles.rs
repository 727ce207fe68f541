//! `profiling.profiles`: adding event deltas, rebuilding, and reading with RFM cut points.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::profile::ProfileDelta;

/// Adds deltas to the profiles (creating missing ones), in one statement.
pub async fn apply(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    deltas: &[ProfileDelta],
) -> Result<(), sqlx::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = deltas.iter().map(|d| d.customer_id).collect();
    let counts: Vec<i64> = deltas.iter().map(|d| d.event_count).collect();
    let first: Vec<DateTime<Utc>> = deltas.iter().map(|d| d.first_event_at).collect();
    let last: Vec<DateTime<Utc>> = deltas.iter().map(|d| d.last_event_at).collect();
    let purchases: Vec<i64> = deltas.iter().map(|d| d.purchase_count).collect();
    let revenue: Vec<f64> = deltas.iter().map(|d| d.revenue).collect();
    let first_p: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|d| d.first_purchase_at).collect();
    let last_p: Vec<Option<DateTime<Utc>>> = deltas.iter().map(|d| d.last_purchase_at).collect();
    let json = |f: fn(&ProfileDelta) -> serde_json::Value| deltas.iter().map(f).collect::<Vec<_>>();
    let channels = json(|d| serde_json::json!(d.channel_engagement));
    let hours = json(|d| serde_json::json!(d.hour_engagement));
    let categories = json(|d| serde_json::json!(d.category_counts));
    let products = json(|d| serde_json::json!(d.product_counts));
    sqlx::query!(
        r#"INSERT INTO profiling.profiles AS p
             (tenant_id, customer_id, event_count, first_event_at, last_event_at, purchase_count,
              revenue_total, first_purchase_at, last_purchase_at, channel_engagement, hour_engagement,
              category_counts, product_counts)
           SELECT $1, t.id, t.n, t.first, t.last, t.purchases, t.revenue::numeric(16,2), t.first_p, t.last_p,
                  t.channels, ARRAY(SELECT jsonb_array_elements_text(t.hours)::bigint), t.categories, t.products
           FROM UNNEST($2::uuid[], $3::int8[], $4::timestamptz[], $5::timestamptz[], $6::int8[], $7::float8[],
                       $8::timestamptz[], $9::timestamptz[], $10::jsonb[], $11::jsonb[], $12::jsonb[], $13::jsonb[])
                AS t(id, n, first, last, purchases, revenue, first_p, last_p, channels, hours, categories, products)
           ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
             event_count = p.event_count + EXCLUDED.event_count,
             first_event_at = least(p.first_event_at, EXCLUDED.first_event_at),
             last_event_at = greatest(p.last_event_at, EXCLUDED.last_event_at),
             purchase_count = p.purchase_count + EXCLUDED.purchase_count,
             revenue_total = p.revenue_total + EXCLUDED.revenue_total,
             first_purchase_at = least(p.first_purchase_at, EXCLUDED.first_purchase_at),
             last_purchase_at = greatest(p.last_purchase_at, EXCLUDED.last_purchase_at),
             channel_engagement = profiling.add_counts(p.channel_engagement, EXCLUDED.channel_engagement),
             hour_engagement = profiling.add_arrays(p.hour_engagement, EXCLUDED.hour_engagement),
             category_counts = profiling.add_counts(p.category_counts, EXCLUDED.category_counts),
             product_counts = profiling.add_counts(p.product_counts, EXCLUDED.product_counts),
             updated_at = now()"#,
        tenant_id,
        &ids,
        &counts,
        &first,
        &last,
        &purchases,
        &revenue,
        &first_p as &[Option<DateTime<Utc>>],
        &last_p as &[Option<DateTime<Utc>>],
        &channels,
        &hours,
        &categories,
        &products
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Drops profiles so they can be rebuilt from the events.
pub async fn delete(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    customer_ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "DELETE FROM profiling.profiles WHERE tenant_id = $1 AND customer_id = ANY($2)",
        tenant_id,
        customer_ids
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub struct ProfileRow {
    pub customer_id: Uuid,
    pub event_count: i64,
    pub first_event_at: Option<DateTime<Utc>>,
    pub last_event_at: Option<DateTime<Utc>>,
    pub purchase_count: i64,
    pub revenue_total: f64,
    pub first_purchase_at: Option<DateTime<Utc>>,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub channel_engagement: serde_json::Value,
    pub hour_engagement: Vec<i64>,
    pub category_counts: serde_json::Value,
    pub product_counts: serde_json::Value,
    pub updated_at: DateTime<Utc>,
    /// Quintile cut points of the tenant's buyers: days since last purchase, purchases, revenue.
    pub recency_cuts: Option<Vec<f64>>,
    pub frequency_cuts: Option<Vec<f64>>,
    pub monetary_cuts: Option<Vec<f64>>,
}

/// One customer's profile with the tenant's RFM cut points.
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customer_id: Uuid,
) -> Result<Option<ProfileRow>, sqlx::Error> {
    sqlx::query_as!(
        ProfileRow,
        r#"WITH cuts AS (
             SELECT percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP
                      (ORDER BY extract(epoch FROM now() - last_purchase_at) / 86400) AS recency,
                    percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY purchase_count) AS frequency,
                    percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY revenue_total) AS monetary
             FROM profiling.profiles WHERE tenant_id = $1 AND purchase_count > 0)
           SELECT p.customer_id, p.event_count, p.first_event_at, p.last_event_at, p.purchase_count,
                  p.revenue_total::float8 AS "revenue_total!", p.first_purchase_at, p.last_purchase_at,
                  p.channel_engagement, p.hour_engagement, p.category_counts, p.product_counts, p.updated_at,
                  cuts.recency AS recency_cuts, cuts.frequency AS frequency_cuts, cuts.monetary AS monetary_cuts
           FROM profiling.profiles p, cuts
           WHERE p.tenant_id = $1 AND p.customer_id = $2"#,
        tenant_id,
        customer_id
    )
    .fetch_optional(db)
    .await
}
