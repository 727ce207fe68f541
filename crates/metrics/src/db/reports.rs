//! Read-side queries behind campaign metrics, analysis, policy evaluation and attribution.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// Counts per (holdout, variant, channel, day of send): the finest grain every breakdown
/// is summed from.
#[derive(Debug, Clone)]
pub struct CellRow {
    pub holdout: bool,
    pub variant_id: Option<Uuid>,
    pub channel: Option<String>,
    pub day: DateTime<Utc>,
    pub sends: i64,
    pub delivered: i64,
    pub opened: i64,
    pub clicked: i64,
    pub converted: i64,
    pub unsubscribed: i64,
    pub revenue: f64,
    pub revenue_sq: f64,
    pub cost: f64,
}

pub async fn cells(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
) -> Result<Vec<CellRow>, sqlx::Error> {
    sqlx::query_as!(
        CellRow,
        r#"SELECT d.holdout, d.variant_id, d.channel,
                  date_trunc('day', d.send_at) AS "day!",
                  count(*) AS "sends!",
                  count(*) FILTER (WHERE o.delivered) AS "delivered!",
                  count(*) FILTER (WHERE o.opened) AS "opened!",
                  count(*) FILTER (WHERE o.clicked) AS "clicked!",
                  count(*) FILTER (WHERE o.converted) AS "converted!",
                  count(*) FILTER (WHERE o.unsubscribed) AS "unsubscribed!",
                  coalesce(sum(o.revenue), 0)::float8 AS "revenue!",
                  coalesce(sum(o.revenue * o.revenue), 0)::float8 AS "revenue_sq!",
                  sum(d.cost)::float8 AS "cost!"
           FROM metrics.decisions d
           LEFT JOIN LATERAL (
               SELECT bool_or(type = 'delivered') AS delivered, bool_or(type = 'opened') AS opened,
                      bool_or(type = 'clicked') AS clicked, bool_or(type = 'converted') AS converted,
                      bool_or(type = 'unsubscribed') AS unsubscribed,
                      sum(revenue) FILTER (WHERE type = 'converted') AS revenue
               FROM metrics.outcomes o WHERE o.tenant_id = d.tenant_id AND o.decision_id = d.id
           ) o ON true
           WHERE d.tenant_id = $1 AND d.campaign_id = $2
           GROUP BY 1, 2, 3, 4
           ORDER BY 4, 1, 2, 3"#,
        tenant_id,
        campaign_id
    )
    .fetch_all(db)
    .await
}

/// One unit (decided customer) for tests that need individual values: revenue in the
/// campaign, and spend before it (the CUPED covariate).
#[derive(Debug, Clone)]
pub struct UnitRow {
    pub holdout: bool,
    pub variant_id: Option<Uuid>,
    pub converted: bool,
    pub revenue: f64,
    pub pre_spend: f64,
}

pub async fn units(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
) -> Result<Vec<UnitRow>, sqlx::Error> {
    sqlx::query_as!(
        UnitRow,
        r#"SELECT d.holdout, d.variant_id,
                  o.decision_id IS NOT NULL AS "converted!",
                  coalesce(o.revenue, 0)::float8 AS "revenue!",
                  coalesce(a.pre_spend, 0)::float8 AS "pre_spend!"
           FROM metrics.decisions d
           LEFT JOIN metrics.outcomes o
             ON o.tenant_id = d.tenant_id AND o.decision_id = d.id AND o.type = 'converted'
           LEFT JOIN metrics.audience a
             ON a.tenant_id = d.tenant_id AND a.campaign_id = d.campaign_id AND a.customer_id = d.customer_id
           WHERE d.tenant_id = $1 AND d.campaign_id = $2"#,
        tenant_id,
        campaign_id
    )
    .fetch_all(db)
    .await
}

/// A logged (non-holdout) decision with its reward, for off-policy evaluation.
#[derive(Debug, Clone)]
pub struct LoggedRow {
    pub context: String,
    pub channel: String,
    pub variant_id: Uuid,
    pub probability: f64,
    pub candidates: Vec<String>,
    pub converted: bool,
    pub revenue: f64,
    pub cost: f64,
}

pub async fn logged(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
) -> Result<Vec<LoggedRow>, sqlx::Error> {
    sqlx::query_as!(
        LoggedRow,
        r#"SELECT d.context, d.channel AS "channel!", d.variant_id AS "variant_id!", d.probability,
                  d.candidates, o.decision_id IS NOT NULL AS "converted!",
                  coalesce(o.revenue, 0)::float8 AS "revenue!", d.cost
           FROM metrics.decisions d
           LEFT JOIN metrics.outcomes o
             ON o.tenant_id = d.tenant_id AND o.decision_id = d.id AND o.type = 'converted'
           WHERE d.tenant_id = $1 AND d.campaign_id = $2 AND NOT d.holdout
             AND d.channel IS NOT NULL AND d.variant_id IS NOT NULL"#,
        tenant_id,
        campaign_id
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone)]
pub struct TouchRow {
    pub customer_id: Uuid,
    pub at: DateTime<Utc>,
    pub campaign_id: Uuid,
    pub channel: String,
}

/// Messages sent in [from, to], ordered by customer.
pub async fn touches(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<TouchRow>, sqlx::Error> {
    sqlx::query_as!(
        TouchRow,
        r#"SELECT customer_id, send_at AS at, campaign_id, channel AS "channel!"
           FROM metrics.decisions
           WHERE tenant_id = $1 AND NOT holdout AND channel IS NOT NULL
             AND send_at BETWEEN $2 AND $3
           ORDER BY customer_id, send_at"#,
        tenant_id,
        from,
        to
    )
    .fetch_all(db)
    .await
}

#[derive(Debug, Clone)]
pub struct ConversionRow {
    pub customer_id: Uuid,
    pub at: DateTime<Utc>,
    pub value: f64,
}

/// Conversion events (from the profiling service's event log) of customers who were
/// messaged in the period, ordered by customer.
pub async fn conversions(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    event_type: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ConversionRow>, sqlx::Error> {
    sqlx::query_as!(
        ConversionRow,
        r#"SELECT e.customer_id AS "customer_id!", e.occurred_at AS at,
                  coalesce(e.revenue, 0)::float8 AS "value!"
           FROM profiling.events e
           WHERE e.tenant_id = $1 AND e.type = $2 AND e.occurred_at BETWEEN $3 AND $4
             AND e.customer_id IS NOT NULL
             AND EXISTS (SELECT 1 FROM metrics.decisions d
                         WHERE d.tenant_id = $1 AND d.customer_id = e.customer_id AND NOT d.holdout)
           ORDER BY e.customer_id, e.occurred_at"#,
        tenant_id,
        event_type,
        from,
        to
    )
    .fetch_all(db)
    .await
}

/// Sends and conversions per channel over all the tenant's campaigns, for the given
/// customers (or everyone): the evidence behind a budget plan.
pub async fn channel_counts(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customers: Option<&[Uuid]>,
) -> Result<Vec<(String, crate::decide::ArmCounts)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT d.channel AS "channel!", count(*)::float8 AS "sends!",
                  count(o.decision_id)::float8 AS "conversions!",
                  coalesce(sum(o.revenue), 0)::float8 AS "revenue!",
                  coalesce(sum(o.revenue * o.revenue), 0)::float8 AS "revenue_sq!"
           FROM metrics.decisions d
           LEFT JOIN metrics.outcomes o
             ON o.tenant_id = d.tenant_id AND o.decision_id = d.id AND o.type = 'converted'
           WHERE d.tenant_id = $1 AND NOT d.holdout AND d.channel IS NOT NULL
             AND ($2::uuid[] IS NULL OR d.customer_id IN (SELECT unnest($2::uuid[])))
           GROUP BY d.channel"#,
        tenant_id,
        customers
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.channel,
                crate::decide::ArmCounts {
                    sends: r.sends,
                    conversions: r.conversions,
                    revenue: r.revenue,
                    revenue_sq: r.revenue_sq,
                },
            )
        })
        .collect())
}

/// How many of the customers (or all) each channel can reach: (all, email, sms, push).
pub async fn reachable(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customers: Option<&[Uuid]>,
) -> Result<(i64, i64, i64, i64), sqlx::Error> {
    let r = sqlx::query!(
        r#"SELECT count(*) AS "all!",
                  count(*) FILTER (WHERE consent_email) AS "email!",
                  count(*) FILTER (WHERE consent_sms) AS "sms!",
                  count(*) FILTER (WHERE consent_push) AS "push!"
           FROM profiling.customers
           WHERE tenant_id = $1 AND ($2::uuid[] IS NULL OR id IN (SELECT unnest($2::uuid[])))"#,
        tenant_id,
        customers
    )
    .fetch_one(db)
    .await?;
    Ok((r.all, r.email, r.sms, r.push))
}
