//! Long work of the metrics service, run by the platform job queue.

use futures::future::BoxFuture;
use mercato_platform::jobs::{JobContext, JobError, JobHandler};
use serde_json::json;
use uuid::Uuid;

use crate::{
    db::{campaigns as db, decisions as decisions_db},
    domain::campaign::Status,
    routes::{campaigns, reports},
    state::AppState,
};

/// `metrics.optimise`: one optimisation pass over a running campaign, then the next one
/// scheduled `interval_secs` later while it keeps running.
///
/// Thompson sampling already moves traffic toward better arms with every decision; this
/// pass acts on what the posteriors say as a whole: it pauses a variant whose probability
/// of being best has fallen below `pause_below` once it has `min_sends`, completes the
/// campaign when its budget cannot pay for another send, when its schedule is over, or
/// (with `stop_on_decision`) when the always-valid sequential test finds a winner, and
/// reports the current traffic shares.
pub struct Optimise {
    pub state: AppState,
}

pub const OPTIMISE: &str = "metrics.optimise";

impl JobHandler for Optimise {
    fn kind(&self) -> &'static str {
        OPTIMISE
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let tenant_id = ctx.tenant_id();
            let campaign_id: Uuid = ctx
                .payload()
                .get("campaign_id")
                .and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| JobError::Fatal("payload lacks campaign_id".into()))?;
            let reschedule = ctx
                .payload()
                .get("reschedule")
                .and_then(|v| v.as_bool())
                .unwrap_or(true);
            let fatal = |e: mercato_platform::ApiError| JobError::Fatal(e.to_string());
            let c = match campaigns::load(&self.state, tenant_id, campaign_id).await {
                Ok(c) => c,
                Err(mercato_platform::ApiError::NotFound(_)) => {
                    return Ok(json!({"skipped": "campaign deleted"}));
                }
                Err(e) => return Err(fatal(e)),
            };
            if c.status != Status::Running {
                return Ok(json!({"skipped": format!("campaign is {}", c.status.as_str())}));
            }
            let o = c.optimisation.clone();
            let analysis = reports::analyse(&self.state, tenant_id, &c, 0.95, 0.01, o.alpha)
                .await
                .map_err(fatal)?;
            let mut actions = Vec::new();

            // Pause losers, never the last active variant nor the current favourite.
            let active: Vec<_> = analysis
                .variants
                .iter()
                .filter(|v| v.status == "active")
                .collect();
            let favourite = active
                .iter()
                .max_by(|a, b| {
                    a.prob_best
                        .unwrap_or(0.0)
                        .total_cmp(&b.prob_best.unwrap_or(0.0))
                })
                .map(|v| v.variant_id);
            let mut still_active = active.len();
            for v in &active {
                let p = v.prob_best.unwrap_or(1.0);
                if still_active > 1
                    && Some(v.variant_id) != favourite
                    && v.sends >= i64::from(o.min_sends)
                    && p < o.pause_below
                {
                    let reason = format!(
                        "probability of being best {p:.4} fell below {}",
                        o.pause_below
                    );
                    db::set_variant_status(
                        &ctx.pool,
                        tenant_id,
                        campaign_id,
                        v.variant_id,
                        "paused",
                        Some(&reason),
                    )
                    .await?;
                    still_active -= 1;
                    actions.push(json!({"paused_variant": v.variant_id, "reason": reason}));
                    if o.refresh_paused
                        && let Some(job) =
                            refresh_variant(&ctx.pool, tenant_id, campaign_id, v.variant_id).await?
                    {
                        actions.push(json!({"requested_variant": job, "replacing": v.variant_id}));
                    }
                }
            }

            // Stopping rules.
            let cheapest = c
                .channels
                .iter()
                .map(|ch| ch.cost)
                .fold(f64::INFINITY, f64::min);
            let stop = if c.row.budget.is_some_and(|b| b - c.row.spent < cheapest) {
                Some("budget spent".to_owned())
            } else if c.row.ends_at.is_some_and(|e| e <= chrono::Utc::now()) {
                Some("schedule ended".to_owned())
            } else if o.stop_on_decision {
                analysis
                    .variants
                    .iter()
                    .find(|v| {
                        v.vs_baseline
                            .as_ref()
                            .and_then(|cmp| cmp.sequential.as_ref())
                            .is_some_and(|s| s.decided)
                    })
                    .map(|v| format!("sequential test decided ({} against the baseline)", v.name))
            } else {
                None
            };
            if let Some(reason) = &stop {
                db::set_status(&ctx.pool, tenant_id, campaign_id, "completed", Some(reason))
                    .await?;
                actions.push(json!({"completed": reason}));
            }

            // Traffic shares per variant so far, for the report.
            let stats = decisions_db::arm_stats(&ctx.pool, tenant_id, campaign_id).await?;
            let total: f64 = stats.iter().map(|s| s.counts.sends).sum();
            let mut shares = serde_json::Map::new();
            for v in &analysis.variants {
                let sends: f64 = stats
                    .iter()
                    .filter(|s| s.variant_id == v.variant_id)
                    .map(|s| s.counts.sends)
                    .sum();
                shares.insert(
                    v.name.clone(),
                    json!({
                        "share": if total > 0.0 { sends / total } else { 0.0 },
                        "prob_best": v.prob_best,
                    }),
                );
            }

            let next = if stop.is_none() && reschedule && o.enabled {
                let mut conn = ctx.pool.acquire().await?;
                campaigns::schedule_optimiser(
                    &mut conn,
                    tenant_id,
                    campaign_id,
                    f64::from(o.interval_secs),
                    Some(ctx.job.id),
                )
                .await?
                .map(|j| j.id)
            } else {
                None
            };
            Ok(json!({"actions": actions, "variants": shares, "next_job": next}))
        })
    }
}

/// The content service's job that writes campaign variants from a brief (named, not linked:
/// the content service depends on this crate, not the other way round).
pub const CONTENT_CAMPAIGN_VARIANTS: &str = "content.campaign_variants";

/// Asks for a fresh variant in place of a paused generated one: the brief it was generated
/// from (kept in its provenance) again, with the paused copy named as what did not work.
/// `None` when the variant was not generated from a brief.
async fn refresh_variant(
    pool: &sqlx::PgPool,
    tenant_id: Uuid,
    campaign_id: Uuid,
    variant_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    let variants = db::variants(pool, tenant_id, campaign_id).await?;
    let Some(v) = variants.iter().find(|v| v.id == variant_id) else {
        return Ok(None);
    };
    let Some(request) = v.provenance.get("request").filter(|r| r.is_object()) else {
        return Ok(None);
    };
    let payload = json!({
        "campaign_id": campaign_id,
        "request": request,
        "count": 1,
        "replaces": {"variant_id": variant_id, "content": v.content},
    });
    let job = mercato_platform::jobs::queue::enqueue(
        pool,
        &mercato_platform::jobs::queue::NewJob::new(tenant_id, CONTENT_CAMPAIGN_VARIANTS, payload),
    )
    .await?;
    Ok(Some(job.id))
}
