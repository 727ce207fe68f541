//! Long work of the profiling service, run by the platform job queue.

use futures::future::BoxFuture;
use mercato_platform::jobs::{JobContext, JobError, JobHandler};
use serde_json::json;
use uuid::Uuid;

use crate::ingest;

const CHUNK: i64 = 500;

/// `profiling.recompute_profiles`: rebuilds every profile of the tenant from its events
/// (backfills, or after changing the catalog's categories). Resumable: it walks customers in
/// id order, so a retry redoes at most one chunk's work.
pub struct RecomputeProfiles;

pub const RECOMPUTE_PROFILES: &str = "profiling.recompute_profiles";

impl JobHandler for RecomputeProfiles {
    fn kind(&self) -> &'static str {
        RECOMPUTE_PROFILES
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let tenant_id = ctx.tenant_id();
            let total: i64 = sqlx::query_scalar!(
                "SELECT count(*) AS \"n!\" FROM profiling.customers WHERE tenant_id = $1",
                tenant_id
            )
            .fetch_one(&ctx.pool)
            .await?;
            let mut after = Uuid::nil();
            let mut done = 0i64;
            loop {
                let ids: Vec<Uuid> = sqlx::query_scalar!(
                    "SELECT id FROM profiling.customers WHERE tenant_id = $1 AND id > $2 ORDER BY id LIMIT $3",
                    tenant_id,
                    after,
                    CHUNK
                )
                .fetch_all(&ctx.pool)
                .await?;
                let Some(last) = ids.last().copied() else {
                    break;
                };
                let mut tx = ctx.pool.begin().await?;
                ingest::rebuild_profiles(&mut tx, tenant_id, &ids).await?;
                tx.commit().await?;
                done += ids.len() as i64;
                after = last;
                let fraction = if total > 0 {
                    done as f64 / total as f64
                } else {
                    1.0
                };
                ctx.progress(
                    fraction.min(1.0),
                    &json!({"customers": done, "total": total}),
                )
                .await?;
            }
            Ok(json!({"customers": done}))
        })
    }
}

/// `profiling.fit_clv`: fits the tenant's BG/NBD and Gamma-Gamma models on its buyers.
pub struct FitClv;

pub const FIT_CLV: &str = "profiling.fit_clv";

impl JobHandler for FitClv {
    fn kind(&self) -> &'static str {
        FIT_CLV
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let tenant_id = ctx.tenant_id();
            let buyers = crate::db::clv::summaries(&ctx.pool, tenant_id).await?;
            ctx.progress(0.2, &json!({"buyers": buyers.len()})).await?;
            // The fit is CPU work of a fraction of a second per thousand buyers; keep it off
            // the async workers.
            let fit = tokio::task::spawn_blocking(move || crate::domain::value::fit(&buyers))
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?
                .map_err(|e| JobError::Fatal(e.to_string()))?;
            let row = crate::db::clv::ClvModelRow {
                r: fit.bgnbd.r,
                alpha: fit.bgnbd.alpha,
                a: fit.bgnbd.a,
                b: fit.bgnbd.b,
                p: fit.gamma_gamma.p,
                q: fit.gamma_gamma.q,
                v: fit.gamma_gamma.v,
                customers: fit.customers as i32,
                repeat_customers: fit.repeat_customers as i32,
                log_likelihood: fit.log_likelihood,
                used_prior: fit.used_prior,
                fitted_at: chrono::Utc::now(),
            };
            crate::db::clv::save(&ctx.pool, tenant_id, &row).await?;
            Ok(
                json!({"customers": fit.customers, "repeat_customers": fit.repeat_customers, "used_prior": fit.used_prior,
                      "bgnbd": {"r": fit.bgnbd.r, "alpha": fit.bgnbd.alpha, "a": fit.bgnbd.a, "b": fit.bgnbd.b},
                      "gamma_gamma": {"p": fit.gamma_gamma.p, "q": fit.gamma_gamma.q, "v": fit.gamma_gamma.v}}),
            )
        })
    }
}
