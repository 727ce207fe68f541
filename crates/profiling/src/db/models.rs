//! Stored sequence-model versions, and the event history they learn from.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// One event as the sequence model sees it.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    pub customer_id: Uuid,
    pub kind: String,
    pub category: Option<String>,
    pub channel: Option<String>,
    pub at: DateTime<Utc>,
    pub price: Option<f64>,
}

/// The tenant's identified events in customer and time order (or one customer's), with
/// the category of the first product each names.
pub async fn history(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customers: Option<&[Uuid]>,
) -> Result<Vec<HistoryRow>, sqlx::Error> {
    sqlx::query_as!(
        HistoryRow,
        r#"SELECT e.customer_id AS "customer_id!", e.type AS kind, p.category, e.channel,
                  e.occurred_at AS at,
                  coalesce(e.revenue::float8, p.price::float8) AS price
           FROM profiling.events e
           LEFT JOIN profiling.products p
             ON p.tenant_id = e.tenant_id AND p.product_id = e.product_ids[1]
           WHERE e.tenant_id = $1 AND e.customer_id IS NOT NULL
             AND ($2::uuid[] IS NULL OR e.customer_id = ANY($2))
           ORDER BY e.customer_id, e.occurred_at, e.event_id"#,
        tenant_id,
        customers as Option<&[Uuid]>
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone)]
pub struct ModelRow {
    pub id: Uuid,
    pub task: String,
    pub horizon_days: i32,
    pub hyper: serde_json::Value,
    pub vocabulary: serde_json::Value,
    pub classes: serde_json::Value,
    pub data_window: serde_json::Value,
    pub evaluation: serde_json::Value,
    pub epochs: serde_json::Value,
    pub beats_baseline: bool,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

pub struct NewModel<'a> {
    pub task: &'a str,
    pub horizon_days: i32,
    pub hyper: serde_json::Value,
    pub vocabulary: serde_json::Value,
    pub classes: serde_json::Value,
    pub weights: &'a [u8],
    pub data_window: serde_json::Value,
    pub evaluation: serde_json::Value,
    pub epochs: serde_json::Value,
    pub beats_baseline: bool,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    m: &NewModel<'_>,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query!(
        r#"INSERT INTO profiling.models
             (tenant_id, id, task, horizon_days, hyper, vocabulary, classes, weights, data_window,
              evaluation, epochs, beats_baseline)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#,
        tenant_id,
        id,
        m.task,
        m.horizon_days,
        m.hyper,
        m.vocabulary,
        m.classes,
        m.weights,
        m.data_window,
        m.evaluation,
        m.epochs,
        m.beats_baseline
    )
    .execute(db)
    .await?;
    Ok(id)
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<ModelRow>, sqlx::Error> {
    sqlx::query_as!(
        ModelRow,
        r#"SELECT id, task, horizon_days, hyper, vocabulary, classes, data_window, evaluation,
                  epochs, beats_baseline, active, created_at, activated_at
           FROM profiling.models WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ModelRow>, sqlx::Error> {
    sqlx::query_as!(
        ModelRow,
        r#"SELECT id, task, horizon_days, hyper, vocabulary, classes, data_window, evaluation,
                  epochs, beats_baseline, active, created_at, activated_at
           FROM profiling.models
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"#,
        tenant_id,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// The active version of a task with its weights.
pub async fn active(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    task: &str,
) -> Result<Option<(ModelRow, Vec<u8>)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT id, task, horizon_days, hyper, vocabulary, classes, data_window, evaluation,
                  epochs, beats_baseline, active, created_at, activated_at, weights
           FROM profiling.models WHERE tenant_id = $1 AND task = $2 AND active"#,
        tenant_id,
        task
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        (
            ModelRow {
                id: r.id,
                task: r.task,
                horizon_days: r.horizon_days,
                hyper: r.hyper,
                vocabulary: r.vocabulary,
                classes: r.classes,
                data_window: r.data_window,
                evaluation: r.evaluation,
                epochs: r.epochs,
                beats_baseline: r.beats_baseline,
                active: r.active,
                created_at: r.created_at,
                activated_at: r.activated_at,
            },
            r.weights,
        )
    }))
}

/// Makes `id` the active version of its task (the previous one steps down).
pub async fn activate(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
    task: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE profiling.models SET active = false WHERE tenant_id = $1 AND task = $2 AND active",
        tenant_id,
        task
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE profiling.models SET active = true, activated_at = now() WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes scores into customers' traits (`purchase_propensity` or `next_event`), which
/// segments, content prompts and decisioning read like any other trait.
pub async fn write_traits(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customers: &[Uuid],
    key: &str,
    values: &[serde_json::Value],
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query!(
        r#"UPDATE profiling.customers c
           SET traits = c.traits || jsonb_build_object($3::text, v.value), updated_at = now()
           FROM unnest($2::uuid[], $4::jsonb[]) AS v(id, value)
           WHERE c.tenant_id = $1 AND c.id = v.id"#,
        tenant_id,
        customers,
        key,
        values
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Whether new events should trigger an incremental scoring pass: the tenant has an active
/// model and no such pass is already waiting.
pub async fn needs_incremental_scoring(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    kind: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM profiling.models WHERE tenant_id = $1 AND active)
              AND NOT EXISTS (SELECT 1 FROM platform.jobs
                              WHERE tenant_id = $1 AND kind = $2 AND status = 'queued'
                                AND payload ? 'incremental') AS "needed!""#,
        tenant_id,
        kind
    )
    .fetch_one(db)
    .await
}

/// Customers with events received after `since` (all with events when `None`).
pub async fn customers_with_new_events(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    // Two statements rather than `$2 IS NULL OR ...`: a generic plan of that could not
    // use the received_at index.
    match since {
        Some(since) => {
            sqlx::query_scalar!(
                r#"SELECT DISTINCT customer_id AS "customer_id!" FROM profiling.events
                   WHERE tenant_id = $1 AND customer_id IS NOT NULL AND received_at > $2"#,
                tenant_id,
                since
            )
            .fetch_all(db)
            .await
        }
        None => {
            sqlx::query_scalar!(
                r#"SELECT DISTINCT customer_id AS "customer_id!" FROM profiling.events
                   WHERE tenant_id = $1 AND customer_id IS NOT NULL"#,
                tenant_id
            )
            .fetch_all(db)
            .await
        }
    }
}

/// Records that events up to `through` have been scored by this model version.
pub async fn set_scored_through(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    through: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE profiling.models SET scored_through = greatest(coalesce(scored_through, $3), $3)
           WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id,
        through
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Up to when this version has scored events (`None`: never).
pub async fn scored_through(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    Ok(sqlx::query_scalar!(
        "SELECT scored_through FROM profiling.models WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .fetch_optional(db)
    .await?
    .flatten())
}
