//! Outcomes of decisions: deliveries, opens, clicks, conversions, unsubscribes.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// What the outcome ingestion needs to know of a decision.
#[derive(Debug, Clone)]
pub struct DecisionRef {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub holdout: bool,
    pub context: String,
    pub channel: Option<String>,
    pub variant_id: Option<Uuid>,
}

pub async fn decisions(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<DecisionRef>, sqlx::Error> {
    sqlx::query_as!(
        DecisionRef,
        r#"SELECT d.id AS "id!", d.campaign_id AS "campaign_id!", d.holdout AS "holdout!",
                  d.context AS "context!", d.channel, d.variant_id
           FROM unnest($2::uuid[]) AS q(id)
           CROSS JOIN LATERAL (
               SELECT * FROM metrics.decisions d WHERE d.tenant_id = $1 AND d.id = q.id LIMIT 1) d"#,
        tenant_id,
        ids
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone)]
pub struct OutcomeRow {
    pub decision_id: Uuid,
    pub kind: String,
    pub campaign_id: Uuid,
    pub revenue: Option<f64>,
    pub occurred_at: DateTime<Utc>,
}

/// Outcomes already recorded for these decisions.
pub async fn existing(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    decision_ids: &[Uuid],
) -> Result<Vec<OutcomeRow>, sqlx::Error> {
    sqlx::query_as!(
        OutcomeRow,
        r#"SELECT o.decision_id AS "decision_id!", o.type AS "kind!", o.campaign_id AS "campaign_id!",
                  o.revenue, o.occurred_at AS "occurred_at!"
           FROM (SELECT DISTINCT id FROM unnest($2::uuid[]) AS u(id)) AS q
           CROSS JOIN LATERAL (
               SELECT * FROM metrics.outcomes o
               WHERE o.tenant_id = $1 AND o.decision_id = q.id LIMIT 5) o"#,
        tenant_id,
        decision_ids
    )
    .fetch_all(db)
    .await
}

/// Inserts outcomes; returns the (decision, type) pairs actually written (a concurrent
/// writer may have recorded some first).
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    rows: &[OutcomeRow],
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let decision: Vec<Uuid> = rows.iter().map(|r| r.decision_id).collect();
    let kind: Vec<String> = rows.iter().map(|r| r.kind.clone()).collect();
    let campaign: Vec<Uuid> = rows.iter().map(|r| r.campaign_id).collect();
    let revenue: Vec<Option<f64>> = rows.iter().map(|r| r.revenue).collect();
    let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.occurred_at).collect();
    let written = sqlx::query!(
        r#"INSERT INTO metrics.outcomes (tenant_id, decision_id, type, campaign_id, revenue, occurred_at)
           SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::uuid[], $5::float8[], $6::timestamptz[])
           ON CONFLICT DO NOTHING
           RETURNING decision_id, type"#,
        tenant_id,
        &decision,
        &kind as &[String],
        &campaign,
        &revenue as &[Option<f64>],
        &at
    )
    .fetch_all(conn)
    .await?;
    Ok(written
        .into_iter()
        .map(|r| (r.decision_id, r.r#type))
        .collect())
}

/// Tells live readers of these campaigns that numbers changed.
pub async fn bump(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    campaigns: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "UPDATE metrics.campaigns SET version = version + 1 WHERE tenant_id = $1 AND id = ANY($2)",
        tenant_id,
        campaigns
    )
    .execute(conn)
    .await?;
    Ok(())
}
