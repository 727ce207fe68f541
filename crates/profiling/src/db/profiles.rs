//! `profiling.profiles`: adding event deltas, rebuilding, and reading with RFM cut points.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::profile::ProfileDelta;

/// Adds deltas to the profiles (creating missing ones). The rows are locked and merged
/// here rather than in SQL: merging the count maps in Postgres (jsonb functions per row)
/// cost more than the rest of ingestion together.
pub async fn apply(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    deltas: &[ProfileDelta],
) -> Result<(), sqlx::Error> {
    if deltas.is_empty() {
        return Ok(());
    }
    // Deltas arrive sorted by customer, so concurrent writers lock rows in the same order.
    let ids: Vec<Uuid> = deltas.iter().map(|d| d.customer_id).collect();
    sqlx::query!(
        r#"INSERT INTO profiling.profiles (tenant_id, customer_id)
           SELECT $1, id FROM UNNEST($2::uuid[]) AS t(id) ORDER BY id
           ON CONFLICT (tenant_id, customer_id) DO NOTHING"#,
        tenant_id,
        &ids
    )
    .execute(&mut *conn)
    .await?;
    let stored = sqlx::query!(
        r#"SELECT customer_id, event_count, first_event_at, last_event_at, purchase_count,
                  revenue_total::float8 AS "revenue!", first_purchase_at, last_purchase_at,
                  channel_engagement, hour_engagement, category_counts, product_counts
           FROM profiling.profiles WHERE tenant_id = $1 AND customer_id = ANY($2)
           ORDER BY customer_id FOR UPDATE"#,
        tenant_id,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let stored: HashMap<Uuid, _> = stored.into_iter().map(|r| (r.customer_id, r)).collect();
    let counts = |v: &serde_json::Value| -> BTreeMap<String, i64> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, n)| Some((k.clone(), n.as_f64()? as i64)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut merged: Vec<ProfileDelta> = Vec::with_capacity(deltas.len());
    for delta in deltas {
        let mut total = delta.clone();
        if let Some(row) = stored.get(&delta.customer_id)
            && row.event_count > 0
        {
            let mut hours = [0i64; 24];
            for (h, n) in hours.iter_mut().zip(&row.hour_engagement) {
                *h = *n;
            }
            total.merge(&ProfileDelta {
                customer_id: row.customer_id,
                event_count: row.event_count,
                first_event_at: row.first_event_at.unwrap_or(delta.first_event_at),
                last_event_at: row.last_event_at.unwrap_or(delta.last_event_at),
                purchase_count: row.purchase_count,
                revenue: row.revenue,
                first_purchase_at: row.first_purchase_at,
                last_purchase_at: row.last_purchase_at,
                channel_engagement: counts(&row.channel_engagement),
                hour_engagement: hours,
                category_counts: counts(&row.category_counts),
                product_counts: counts(&row.product_counts),
            });
        }
        merged.push(total);
    }
    write(conn, tenant_id, &merged).await
}

/// Overwrites profiles with these totals.
async fn write(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    totals: &[ProfileDelta],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = totals.iter().map(|d| d.customer_id).collect();
    let counts: Vec<i64> = totals.iter().map(|d| d.event_count).collect();
    let first: Vec<DateTime<Utc>> = totals.iter().map(|d| d.first_event_at).collect();
    let last: Vec<DateTime<Utc>> = totals.iter().map(|d| d.last_event_at).collect();
    let purchases: Vec<i64> = totals.iter().map(|d| d.purchase_count).collect();
    let revenue: Vec<f64> = totals.iter().map(|d| d.revenue).collect();
    let first_p: Vec<Option<DateTime<Utc>>> = totals.iter().map(|d| d.first_purchase_at).collect();
    let last_p: Vec<Option<DateTime<Utc>>> = totals.iter().map(|d| d.last_purchase_at).collect();
    let json = |f: fn(&ProfileDelta) -> serde_json::Value| totals.iter().map(f).collect::<Vec<_>>();
    let channels = json(|d| serde_json::json!(d.channel_engagement));
    let hours = json(|d| serde_json::json!(d.hour_engagement));
    let categories = json(|d| serde_json::json!(d.category_counts));
    let products = json(|d| serde_json::json!(d.product_counts));
    sqlx::query!(
        r#"UPDATE profiling.profiles p SET
             event_count = t.n, first_event_at = t.first, last_event_at = t.last, purchase_count = t.purchases,
             revenue_total = t.revenue::numeric(16,2), first_purchase_at = t.first_p, last_purchase_at = t.last_p,
             channel_engagement = t.channels, hour_engagement = ARRAY(SELECT jsonb_array_elements_text(t.hours)::bigint),
             category_counts = t.categories, product_counts = t.products, updated_at = now()
           FROM UNNEST($2::uuid[], $3::int8[], $4::timestamptz[], $5::timestamptz[], $6::int8[], $7::float8[],
                       $8::timestamptz[], $9::timestamptz[], $10::jsonb[], $11::jsonb[], $12::jsonb[], $13::jsonb[])
                AS t(id, n, first, last, purchases, revenue, first_p, last_p, channels, hours, categories, products)
           WHERE p.tenant_id = $1 AND p.customer_id = t.id"#,
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

/// Rebuilds every profile of the tenant from its events in one statement, with the same
/// rules as `domain::profile::deltas` (engagement: opens and clicks; interest: views,
/// clicks, carts and purchases; a product's category counted once per event). Returns the
/// number of profiles written.
pub async fn rebuild_all(conn: &mut PgConnection, tenant_id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query!(
        "DELETE FROM profiling.profiles WHERE tenant_id = $1",
        tenant_id
    )
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query!(
        r#"WITH ev AS (
             SELECT event_id, customer_id, type, occurred_at, revenue, channel, product_ids,
                    type IN ('click', 'email_open', 'email_click', 'sms_click', 'push_open') AS engaged,
                    type IN ('view', 'click', 'add_to_cart', 'purchase') AS interested,
                    extract(hour FROM occurred_at AT TIME ZONE 'UTC')::int AS hour
             FROM profiling.events WHERE tenant_id = $1 AND customer_id IS NOT NULL),
           base AS (
             SELECT customer_id, count(*) AS n, min(occurred_at) AS first, max(occurred_at) AS last,
                    count(*) FILTER (WHERE type = 'purchase') AS purchases,
                    coalesce(sum(revenue) FILTER (WHERE type = 'purchase'), 0) AS revenue,
                    min(occurred_at) FILTER (WHERE type = 'purchase') AS first_p,
                    max(occurred_at) FILTER (WHERE type = 'purchase') AS last_p,
                    -- Opens and clicks per hour of day (UTC), in the same pass.
                    ARRAY[count(*) FILTER (WHERE engaged AND hour = 0), count(*) FILTER (WHERE engaged AND hour = 1), count(*) FILTER (WHERE engaged AND hour = 2), count(*) FILTER (WHERE engaged AND hour = 3),
                          count(*) FILTER (WHERE engaged AND hour = 4), count(*) FILTER (WHERE engaged AND hour = 5), count(*) FILTER (WHERE engaged AND hour = 6), count(*) FILTER (WHERE engaged AND hour = 7),
                          count(*) FILTER (WHERE engaged AND hour = 8), count(*) FILTER (WHERE engaged AND hour = 9), count(*) FILTER (WHERE engaged AND hour = 10), count(*) FILTER (WHERE engaged AND hour = 11),
                          count(*) FILTER (WHERE engaged AND hour = 12), count(*) FILTER (WHERE engaged AND hour = 13), count(*) FILTER (WHERE engaged AND hour = 14), count(*) FILTER (WHERE engaged AND hour = 15),
                          count(*) FILTER (WHERE engaged AND hour = 16), count(*) FILTER (WHERE engaged AND hour = 17), count(*) FILTER (WHERE engaged AND hour = 18), count(*) FILTER (WHERE engaged AND hour = 19),
                          count(*) FILTER (WHERE engaged AND hour = 20), count(*) FILTER (WHERE engaged AND hour = 21), count(*) FILTER (WHERE engaged AND hour = 22), count(*) FILTER (WHERE engaged AND hour = 23)] AS hours
             FROM ev GROUP BY customer_id),
           channels AS (
             SELECT customer_id, jsonb_object_agg(channel, n) AS m
             FROM (SELECT customer_id, channel, count(*) AS n FROM ev WHERE engaged AND channel IS NOT NULL
                   GROUP BY 1, 2) c GROUP BY customer_id),
           products AS (
             SELECT customer_id, jsonb_object_agg(product_id, n) AS m
             FROM (SELECT customer_id, product_id, count(*) AS n FROM ev, unnest(ev.product_ids) AS product_id
                   WHERE interested GROUP BY 1, 2) p GROUP BY customer_id),
           categories AS (
             SELECT customer_id, jsonb_object_agg(category, n) AS m
             -- Products are unnested (once per event) and hash-joined to the catalog; joining on
             -- `= ANY(product_ids)` made a nested loop over events x catalog.
             FROM (SELECT x.customer_id, p.category, count(*) AS n
                   FROM (SELECT DISTINCT ev.customer_id, ev.event_id, pid
                         FROM ev, unnest(ev.product_ids) AS pid WHERE ev.interested) x
                   JOIN profiling.products p ON p.tenant_id = $1 AND p.product_id = x.pid
                   WHERE p.category IS NOT NULL
                   GROUP BY 1, 2) c GROUP BY customer_id)
           INSERT INTO profiling.profiles (tenant_id, customer_id, event_count, first_event_at, last_event_at,
                  purchase_count, revenue_total, first_purchase_at, last_purchase_at, channel_engagement,
                  hour_engagement, category_counts, product_counts)
           SELECT $1, b.customer_id, b.n, b.first, b.last, b.purchases, b.revenue, b.first_p, b.last_p,
                  coalesce(ch.m, '{}'), b.hours,
                  coalesce(ca.m, '{}'), coalesce(pr.m, '{}')
           FROM base b
           LEFT JOIN channels ch USING (customer_id)
           LEFT JOIN categories ca USING (customer_id)
           LEFT JOIN products pr USING (customer_id)"#,
        tenant_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}
