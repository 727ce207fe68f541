//! Logged decisions and the per-arm counts the posteriors are read from.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::decide::ArmCounts;

// Lookups of a batch of ids walk the ids and probe the key index once each (a LATERAL
// subquery with LIMIT stays a nested loop); a plain join lets the planner hash the
// campaign's whole table, whose cost grows with the audience.

/// A customer's place in a campaign's frozen audience.
#[derive(Debug, Clone)]
pub struct Eligibility {
    pub customer_id: Uuid,
    pub context: String,
    pub holdout: bool,
    pub consent_email: bool,
    pub consent_sms: bool,
    pub consent_push: bool,
    pub best_hour: Option<i16>,
}

pub async fn eligibility(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
    customers: &[Uuid],
) -> Result<Vec<Eligibility>, sqlx::Error> {
    sqlx::query_as!(
        Eligibility,
        r#"SELECT a.customer_id AS "customer_id!", a.context AS "context!", a.holdout AS "holdout!",
                  a.consent_email AS "consent_email!", a.consent_sms AS "consent_sms!",
                  a.consent_push AS "consent_push!", a.best_hour
           FROM unnest($3::uuid[]) AS q(id)
           CROSS JOIN LATERAL (
               SELECT * FROM metrics.audience a
               WHERE a.tenant_id = $1 AND a.campaign_id = $2 AND a.customer_id = q.id LIMIT 1) a"#,
        tenant_id,
        campaign_id,
        customers
    )
    .fetch_all(db)
    .await
}

/// Which of `ids` are customers of the tenant at all.
pub async fn known_customers(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT c.id FROM unnest($2::uuid[]) AS q(id) JOIN profiling.customers c ON c.tenant_id = $1 AND c.id = q.id",
        tenant_id,
        ids
    )
    .fetch_all(db)
    .await
}

/// Messages each customer got from any campaign since `since` (holdouts get none).
pub async fn recent_sends(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customers: &[Uuid],
    since: DateTime<Utc>,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT q.id AS "customer_id!", c.n AS "n!"
           FROM unnest($2::uuid[]) AS q(id)
           CROSS JOIN LATERAL (
               SELECT count(*) AS n FROM metrics.decisions d
               WHERE d.tenant_id = $1 AND d.customer_id = q.id AND NOT d.holdout AND d.send_at > $3) c
           WHERE c.n > 0"#,
        tenant_id,
        customers,
        since
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.customer_id, r.n)).collect())
}

#[derive(Debug, Clone)]
pub struct DecisionRow {
    pub id: Uuid,
    pub campaign_id: Uuid,
    pub customer_id: Uuid,
    pub holdout: bool,
    pub context: String,
    pub channel: Option<String>,
    pub variant_id: Option<Uuid>,
    pub send_at: DateTime<Utc>,
    pub probability: f64,
    pub candidates: Vec<String>,
    pub cost: f64,
    pub decided_at: DateTime<Utc>,
}

pub async fn existing(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
    customers: &[Uuid],
) -> Result<Vec<DecisionRow>, sqlx::Error> {
    sqlx::query_as!(
        DecisionRow,
        r#"SELECT d.id AS "id!", d.campaign_id AS "campaign_id!", d.customer_id AS "customer_id!",
                  d.holdout AS "holdout!", d.context AS "context!", d.channel, d.variant_id,
                  d.send_at AS "send_at!", d.probability AS "probability!",
                  d.candidates AS "candidates!", d.cost AS "cost!", d.decided_at AS "decided_at!"
           FROM unnest($3::uuid[]) AS q(id)
           CROSS JOIN LATERAL (
               SELECT * FROM metrics.decisions d
               WHERE d.tenant_id = $1 AND d.campaign_id = $2 AND d.customer_id = q.id LIMIT 1) d"#,
        tenant_id,
        campaign_id,
        customers
    )
    .fetch_all(db)
    .await
}

/// Inserts new decisions (one statement for the batch).
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    rows: &[DecisionRow],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let customers: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    let holdout: Vec<bool> = rows.iter().map(|r| r.holdout).collect();
    let context: Vec<String> = rows.iter().map(|r| r.context.clone()).collect();
    let channel: Vec<Option<String>> = rows.iter().map(|r| r.channel.clone()).collect();
    let variant: Vec<Option<Uuid>> = rows.iter().map(|r| r.variant_id).collect();
    let send_at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.send_at).collect();
    let probability: Vec<f64> = rows.iter().map(|r| r.probability).collect();
    // Arm keys hold no commas ('channel/uuid'), so each row's list travels as one string.
    let candidates: Vec<String> = rows.iter().map(|r| r.candidates.join(",")).collect();
    let cost: Vec<f64> = rows.iter().map(|r| r.cost).collect();
    let campaign_id = rows.first().map(|r| r.campaign_id).unwrap_or_default();
    sqlx::query!(
        r#"INSERT INTO metrics.decisions
             (tenant_id, id, campaign_id, customer_id, holdout, context, channel, variant_id,
              send_at, probability, candidates, cost)
           SELECT $1, id, $2, customer_id, holdout, context, channel, variant_id, send_at,
                  probability, CASE WHEN candidates = '' THEN '{}'::text[] ELSE string_to_array(candidates, ',') END, cost
           FROM unnest($3::uuid[], $4::uuid[], $5::bool[], $6::text[], $7::text[], $8::uuid[],
                       $9::timestamptz[], $10::float8[], $11::text[], $12::float8[])
                AS t(id, customer_id, holdout, context, channel, variant_id, send_at, probability, candidates, cost)"#,
        tenant_id,
        campaign_id,
        &ids,
        &customers,
        &holdout,
        &context as &[String],
        &channel as &[Option<String>],
        &variant as &[Option<Uuid>],
        &send_at,
        &probability,
        &candidates as &[String],
        &cost
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Additions to one arm's counts in one context.
#[derive(Debug, Clone, Default)]
pub struct ArmDelta {
    pub context: String,
    pub channel: String,
    pub variant_id: Uuid,
    pub sends: i64,
    pub conversions: i64,
    pub revenue: f64,
    pub revenue_sq: f64,
    pub cost: f64,
}

/// Adds to the arms' running counts (sends and cost from decisions, conversions and
/// revenue from outcomes).
pub async fn add_to_arms(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    campaign_id: Uuid,
    arms: &[ArmDelta],
) -> Result<(), sqlx::Error> {
    let context: Vec<String> = arms.iter().map(|a| a.context.clone()).collect();
    let channel: Vec<String> = arms.iter().map(|a| a.channel.clone()).collect();
    let variant: Vec<Uuid> = arms.iter().map(|a| a.variant_id).collect();
    let sends: Vec<i64> = arms.iter().map(|a| a.sends).collect();
    let conversions: Vec<i64> = arms.iter().map(|a| a.conversions).collect();
    let revenue: Vec<f64> = arms.iter().map(|a| a.revenue).collect();
    let revenue_sq: Vec<f64> = arms.iter().map(|a| a.revenue_sq).collect();
    let cost: Vec<f64> = arms.iter().map(|a| a.cost).collect();
    sqlx::query!(
        r#"INSERT INTO metrics.arm_stats
             (tenant_id, campaign_id, context, channel, variant_id, sends, conversions, revenue, revenue_sq, cost)
           SELECT $1, $2, * FROM unnest($3::text[], $4::text[], $5::uuid[], $6::int8[], $7::int8[],
                                        $8::float8[], $9::float8[], $10::float8[])
           ON CONFLICT (tenant_id, campaign_id, context, channel, variant_id) DO UPDATE
           SET sends = arm_stats.sends + EXCLUDED.sends,
               conversions = arm_stats.conversions + EXCLUDED.conversions,
               revenue = arm_stats.revenue + EXCLUDED.revenue,
               revenue_sq = arm_stats.revenue_sq + EXCLUDED.revenue_sq,
               cost = arm_stats.cost + EXCLUDED.cost"#,
        tenant_id,
        campaign_id,
        &context as &[String],
        &channel as &[String],
        &variant,
        &sends,
        &conversions,
        &revenue,
        &revenue_sq,
        &cost
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Charges a decision batch to the campaign and tells live readers something changed.
pub async fn charge(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    campaign_id: Uuid,
    cost: f64,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE metrics.campaigns SET spent = spent + $3, version = version + 1
           WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        campaign_id,
        cost
    )
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone)]
pub struct ArmStatsRow {
    pub context: String,
    pub channel: String,
    pub variant_id: Uuid,
    pub counts: ArmCounts,
    pub cost: f64,
}

pub async fn arm_stats(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
) -> Result<Vec<ArmStatsRow>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT context, channel, variant_id, sends, conversions, revenue, revenue_sq, cost
           FROM metrics.arm_stats WHERE tenant_id = $1 AND campaign_id = $2"#,
        tenant_id,
        campaign_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ArmStatsRow {
            context: r.context,
            channel: r.channel,
            variant_id: r.variant_id,
            counts: ArmCounts {
                sends: r.sends as f64,
                conversions: r.conversions as f64,
                revenue: r.revenue,
                revenue_sq: r.revenue_sq,
            },
            cost: r.cost,
        })
        .collect())
}

/// The tenant's experience per channel from its other campaigns: the pooled prior.
pub async fn pooled_by_channel(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    except_campaign: Option<Uuid>,
) -> Result<Vec<(String, ArmCounts)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT channel, sum(sends)::float8 AS "sends!", sum(conversions)::float8 AS "conversions!",
                  sum(revenue) AS "revenue!", sum(revenue_sq) AS "revenue_sq!"
           FROM metrics.arm_stats
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR campaign_id <> $2)
           GROUP BY channel"#,
        tenant_id,
        except_campaign
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.channel,
                ArmCounts {
                    sends: r.sends,
                    conversions: r.conversions,
                    revenue: r.revenue,
                    revenue_sq: r.revenue_sq,
                },
            )
        })
        .collect())
}
