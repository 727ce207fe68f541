//! Cluster runs, assignments, and the features clustering reads.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Customer ids and their feature rows (in `domain::cluster::FEATURES` order) for every
/// customer with a profile.
pub async fn features(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<(Vec<Uuid>, Vec<Vec<f64>>), sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT customer_id,
                  coalesce(extract(epoch FROM now() - last_purchase_at) / 86400,
                           extract(epoch FROM now() - first_event_at) / 86400 + 365)::float8 AS "recency!",
                  purchase_count::float8 AS "frequency!",
                  revenue_total::float8 AS "monetary!",
                  CASE WHEN purchase_count > 0 THEN revenue_total::float8 / purchase_count ELSE 0 END AS "aov!",
                  event_count::float8 AS "events!",
                  (SELECT coalesce(sum(value::numeric), 0) FROM jsonb_each_text(channel_engagement))::float8 AS "engagement!"
           FROM profiling.profiles WHERE tenant_id = $1 ORDER BY customer_id"#,
        tenant_id
    )
    .fetch_all(db)
    .await?;
    let ids = rows.iter().map(|r| r.customer_id).collect();
    let features = rows
        .into_iter()
        .map(|r| {
            vec![
                r.recency,
                r.frequency,
                r.monetary,
                r.aov,
                r.events,
                r.engagement,
            ]
        })
        .collect();
    Ok((ids, features))
}

#[allow(clippy::too_many_arguments)]
pub async fn save_run(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    run_id: Uuid,
    k: i32,
    silhouette: f64,
    candidates: &serde_json::Value,
    clusters: &serde_json::Value,
    customer_ids: &[Uuid],
    labels: &[i32],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO profiling.cluster_runs (tenant_id, id, k, silhouette, customers, candidates, clusters)
           VALUES ($1, $2, $3, $4, $5, $6, $7)"#,
        tenant_id,
        run_id,
        k,
        silhouette,
        customer_ids.len() as i32,
        candidates,
        clusters
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM profiling.cluster_assignments WHERE tenant_id = $1",
        tenant_id
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"INSERT INTO profiling.cluster_assignments (tenant_id, customer_id, cluster, run_id)
           SELECT $1, c, l, $2 FROM UNNEST($3::uuid[], $4::int4[]) AS t(c, l)"#,
        tenant_id,
        run_id,
        customer_ids,
        labels
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub struct RunRow {
    pub id: Uuid,
    pub k: i32,
    pub silhouette: f64,
    pub customers: i32,
    pub candidates: serde_json::Value,
    pub clusters: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

pub async fn latest(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Option<RunRow>, sqlx::Error> {
    sqlx::query_as!(
        RunRow,
        r#"SELECT id, k, silhouette, customers, candidates, clusters, created_at FROM profiling.cluster_runs
           WHERE tenant_id = $1 ORDER BY id DESC LIMIT 1"#,
        tenant_id
    )
    .fetch_optional(db)
    .await
}

pub async fn of_customer(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customer_id: Uuid,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT cluster FROM profiling.cluster_assignments WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id,
        customer_id
    )
    .fetch_optional(db)
    .await
}
