//! Campaigns, their variants and the audience frozen at launch.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::domain::campaign::{NewCampaign, NewVariant};

#[derive(Debug, Clone)]
pub struct CampaignRow {
    pub id: Uuid,
    pub name: String,
    pub status: String,
    pub goal: String,
    pub conversion_event: String,
    pub value_per_conversion: f64,
    pub segment_id: Option<Uuid>,
    pub context_by: String,
    pub channels: serde_json::Value,
    pub holdout_share: f64,
    pub budget: Option<f64>,
    pub spent: f64,
    pub frequency_cap: Option<i32>,
    pub frequency_window_hours: Option<i32>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub seed: i64,
    pub optimisation: serde_json::Value,
    pub stop_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct VariantRow {
    pub id: Uuid,
    pub name: String,
    pub source: String,
    pub content: serde_json::Value,
    pub template_id: Option<String>,
    pub provenance: serde_json::Value,
    pub status: String,
    pub paused_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    c: &NewCampaign,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    let channels = serde_json::to_value(&c.channels).unwrap_or_default();
    let optimisation = serde_json::to_value(&c.optimisation).unwrap_or_default();
    sqlx::query!(
        r#"INSERT INTO metrics.campaigns
             (tenant_id, id, name, goal, conversion_event, value_per_conversion, segment_id,
              context_by, channels, holdout_share, budget, frequency_cap, frequency_window_hours,
              starts_at, ends_at, seed, optimisation)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"#,
        tenant_id,
        id,
        c.name,
        c.goal.as_str(),
        c.conversion_event,
        c.value_per_conversion,
        c.segment_id,
        c.context_by,
        channels,
        c.holdout_share,
        c.budget,
        c.frequency_cap.as_ref().map(|f| f.max),
        c.frequency_cap.as_ref().map(|f| f.per_hours),
        c.schedule.starts_at,
        c.schedule.ends_at,
        c.seed,
        optimisation
    )
    .execute(&mut *conn)
    .await?;
    for v in &c.variants {
        insert_variant(&mut *conn, tenant_id, id, v).await?;
    }
    Ok(id)
}

pub async fn insert_variant(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
    v: &NewVariant,
) -> Result<Uuid, sqlx::Error> {
    let id = Uuid::now_v7();
    sqlx::query!(
        r#"INSERT INTO metrics.variants
             (tenant_id, campaign_id, id, name, source, content, template_id, provenance)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"#,
        tenant_id,
        campaign_id,
        id,
        v.name,
        v.source,
        v.content,
        v.template_id,
        v.provenance
    )
    .execute(db)
    .await?;
    Ok(id)
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<CampaignRow>, sqlx::Error> {
    sqlx::query_as!(
        CampaignRow,
        r#"SELECT id, name, status, goal, conversion_event, value_per_conversion, segment_id,
                  context_by, channels, holdout_share, budget, spent, frequency_cap,
                  frequency_window_hours, starts_at, ends_at, seed, optimisation, stop_reason,
                  version, created_at, updated_at, started_at, completed_at
           FROM metrics.campaigns WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id
    )
    .fetch_optional(db)
    .await
}

/// The campaign, locked until the transaction ends: decision batches of one campaign run
/// one after another, so the budget is never overspent.
pub async fn lock(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<CampaignRow>, sqlx::Error> {
    let found = sqlx::query_scalar!(
        "SELECT id FROM metrics.campaigns WHERE tenant_id = $1 AND id = $2 FOR UPDATE",
        tenant_id,
        id
    )
    .fetch_optional(&mut *conn)
    .await?;
    match found {
        Some(_) => get(conn, tenant_id, id).await,
        None => Ok(None),
    }
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    status: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<CampaignRow>, sqlx::Error> {
    sqlx::query_as!(
        CampaignRow,
        r#"SELECT id, name, status, goal, conversion_event, value_per_conversion, segment_id,
                  context_by, channels, holdout_share, budget, spent, frequency_cap,
                  frequency_window_hours, starts_at, ends_at, seed, optimisation, stop_reason,
                  version, created_at, updated_at, started_at, completed_at
           FROM metrics.campaigns
           WHERE tenant_id = $1 AND ($2::text IS NULL OR status = $2)
             AND ($3::uuid IS NULL OR id > $3)
           ORDER BY id LIMIT $4"#,
        tenant_id,
        status,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// Deletes a campaign that never ran; false when absent or no longer a draft.
pub async fn delete_draft(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query!(
        "DELETE FROM metrics.campaigns WHERE tenant_id = $1 AND id = $2 AND status = 'draft'",
        tenant_id,
        id
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn variants(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
) -> Result<Vec<VariantRow>, sqlx::Error> {
    sqlx::query_as!(
        VariantRow,
        r#"SELECT id, name, source, content, template_id, provenance, status, paused_reason, created_at
           FROM metrics.variants WHERE tenant_id = $1 AND campaign_id = $2 ORDER BY created_at, id"#,
        tenant_id,
        campaign_id
    )
    .fetch_all(db)
    .await
}

pub async fn set_variant_status(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
    variant_id: Uuid,
    status: &str,
    reason: Option<&str>,
) -> Result<bool, sqlx::Error> {
    let r = sqlx::query!(
        r#"UPDATE metrics.variants SET status = $4, paused_reason = $5
           WHERE tenant_id = $1 AND campaign_id = $2 AND id = $3"#,
        tenant_id,
        campaign_id,
        variant_id,
        status,
        reason
    )
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Moves the campaign to `to` and stamps the start or end; `stop_reason` says why it ended.
pub async fn set_status(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    to: &str,
    stop_reason: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE metrics.campaigns
           SET status = $3, updated_at = now(), version = version + 1,
               started_at = CASE WHEN $3 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
               completed_at = CASE WHEN $3 = 'completed' THEN now() ELSE completed_at END,
               stop_reason = coalesce($4, stop_reason)
           WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id,
        to,
        stop_reason
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Freezes the audience: the given customers (or every customer of the tenant), each with
/// the context the bandit conditions on, a holdout flag drawn from a hash of the seed and
/// the customer (stable, so a relaunch would draw the same control group), spend so far
/// (the CUPED covariate), channel consent and best hour.
pub async fn snapshot_audience(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    campaign: &CampaignRow,
    members: Option<&[Uuid]>,
) -> Result<u64, sqlx::Error> {
    let r = sqlx::query!(
        r#"INSERT INTO metrics.audience
             (tenant_id, campaign_id, customer_id, context, holdout, pre_spend,
              consent_email, consent_sms, consent_push, best_hour)
           SELECT c.tenant_id, $2, c.id,
                  CASE WHEN $3 = 'cluster' THEN 'cluster:' || coalesce(ca.cluster::text, 'none')
                       WHEN $3 LIKE 'trait:%' THEN left(coalesce(c.traits ->> substr($3, 7), 'unknown'), 100)
                       ELSE 'all' END,
                  ((hashtextextended(c.id::text, $4) & 9223372036854775807) % 1000000)::float8 / 1000000 < $5,
                  coalesce(p.revenue_total, 0)::float8,
                  coalesce(c.consent_email, false), coalesce(c.consent_sms, false),
                  coalesce(c.consent_push, false),
                  (SELECT (h.i - 1)::smallint FROM unnest(p.hour_engagement) WITH ORDINALITY AS h(n, i)
                   WHERE h.n > 0 ORDER BY h.n DESC, h.i LIMIT 1)
           FROM profiling.customers c
           LEFT JOIN profiling.profiles p ON p.tenant_id = c.tenant_id AND p.customer_id = c.id
           LEFT JOIN profiling.cluster_assignments ca ON ca.tenant_id = c.tenant_id AND ca.customer_id = c.id
           WHERE c.tenant_id = $1 AND ($6::uuid[] IS NULL OR c.id IN (SELECT unnest($6::uuid[])))
           ON CONFLICT DO NOTHING"#,
        tenant_id,
        campaign.id,
        campaign.context_by,
        campaign.seed,
        campaign.holdout_share,
        members
    )
    .execute(&mut *conn)
    .await?;
    // The table just grew by a whole audience: refresh the planner's statistics so the
    // first decision batches look members up by key rather than scanning the campaign.
    sqlx::query!("ANALYZE metrics.audience")
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}

pub async fn audience_size(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
) -> Result<(i64, i64), sqlx::Error> {
    let r = sqlx::query!(
        r#"SELECT count(*) AS "total!", count(*) FILTER (WHERE holdout) AS "holdout!"
           FROM metrics.audience WHERE tenant_id = $1 AND campaign_id = $2"#,
        tenant_id,
        campaign_id
    )
    .fetch_one(db)
    .await?;
    Ok((r.total, r.holdout))
}

/// Whether an optimisation job of this campaign (other than `except`, the one asking) is
/// queued or running.
pub async fn has_pending_optimisation(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    campaign_id: Uuid,
    kind: &str,
    except: Option<Uuid>,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM platform.jobs
                          WHERE tenant_id = $1 AND kind = $3 AND status IN ('queued', 'running')
                            AND payload ->> 'campaign_id' = $2
                            AND ($4::uuid IS NULL OR id <> $4)) AS "pending!""#,
        tenant_id,
        campaign_id.to_string(),
        kind,
        except
    )
    .fetch_one(db)
    .await
}
