//! Long work of the content service, run by the platform job queue.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use mercato_platform::jobs::{JobContext, JobError, JobHandler};
use serde_json::json;

use crate::{
    db,
    routes::{
        bulk::{BulkRequest, GENERATE_SEGMENT},
        embeddings::{EMBED_PRODUCTS, refresh_embeddings},
        generate::{GenerateFailure, plan, recipient, write_variant},
    },
    state::AppState,
};

fn fatal(e: impl std::fmt::Display) -> JobError {
    JobError::Fatal(e.to_string())
}

/// `content.embed_products`: embeds every product whose embedding is missing or stale.
pub struct EmbedProducts {
    pub state: AppState,
}

impl JobHandler for EmbedProducts {
    fn kind(&self) -> &'static str {
        EMBED_PRODUCTS
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let mut embedded = 0;
            loop {
                let (n, remaining) = refresh_embeddings(&self.state, ctx.tenant_id(), 512)
                    .await
                    .map_err(|e| JobError::Retryable(e.to_string()))?;
                embedded += n;
                let fraction = embedded as f64 / (embedded + remaining).max(1) as f64;
                ctx.progress(
                    fraction,
                    &json!({"embedded": embedded, "remaining": remaining}),
                )
                .await?;
                if remaining == 0 {
                    return Ok(json!({"embedded": embedded}));
                }
            }
        })
    }
}

/// `content.generate_segment`: one message per member of a segment, written through the
/// batching worker with as many in flight as it has slots, stored in `content.messages`.
/// Resumable: members already written for are skipped.
pub struct GenerateSegment {
    pub state: AppState,
}

impl JobHandler for GenerateSegment {
    fn kind(&self) -> &'static str {
        GENERATE_SEGMENT
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let state = &self.state;
            let tenant_id = ctx.tenant_id();
            let req: BulkRequest = serde_json::from_value(ctx.payload().clone()).map_err(fatal)?;
            let base = plan(state, tenant_id, req.template_request())
                .await
                .map_err(fatal)?;
            let rule = {
                let seg =
                    mercato_profiling::db::segments::get(&state.pool, tenant_id, req.segment_id)
                        .await
                        .map_err(|e| JobError::Retryable(e.to_string()))?
                        .ok_or_else(|| fatal("the segment no longer exists"))?;
                mercato_profiling::domain::segment::parse(&seg.rule)
                    .map_err(|e| fatal(e.message))?
            };
            let mut conn = state
                .pool
                .acquire()
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
            let members = mercato_profiling::db::segments::all_members(&mut conn, tenant_id, &rule)
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
            drop(conn);
            let done: HashSet<_> = db::written_for(&state.pool, tenant_id, ctx.job.id)
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?
                .into_iter()
                .collect();
            let todo: Vec<_> = members
                .iter()
                .filter(|m| !done.contains(m))
                .copied()
                .collect();
            let total = members.len();
            let (mut written, mut from_model, mut from_template) = (done.len(), 0usize, 0usize);
            let in_flight = state
                .engine
                .ready()
                .map(|i| i.max_batch)
                .unwrap_or(8)
                .max(1);
            let mut queue = todo.into_iter();
            let mut set = tokio::task::JoinSet::new();
            let mut last_report = Instant::now();
            loop {
                while set.len() < in_flight {
                    let Some(customer) = queue.next() else { break };
                    let Some(mut who) = recipient(state, tenant_id, customer)
                        .await
                        .map_err(|e| JobError::Retryable(e.to_string()))?
                    else {
                        continue; // erased since the segment was read
                    };
                    base.recommend_to(state, tenant_id, customer, &mut who)
                        .await;
                    let p = Arc::new(base.for_recipient(who));
                    let engine = state.engine.clone();
                    set.spawn(async move { (customer, write_variant(engine, p, 0, None).await) });
                }
                let Some(joined) = set.join_next().await else {
                    break;
                };
                let (customer, result) = joined.map_err(fatal)?;
                let v = match result {
                    Ok(v) => v,
                    // A full queue or a model still loading: try again later.
                    Err(GenerateFailure::Submit(e)) => {
                        return Err(JobError::Retryable(e.to_string()));
                    }
                    Err(e) => return Err(fatal(e)),
                };
                let source = match v.source {
                    crate::routes::generate::Source::Model => {
                        from_model += 1;
                        "model"
                    }
                    crate::routes::generate::Source::Template => {
                        from_template += 1;
                        "template"
                    }
                };
                let m = db::NewMessage {
                    customer_id: customer,
                    channel: req.channel.clone(),
                    fields: json!(v.fields),
                    source: source.to_string(),
                    passed: v.passed,
                    checks: json!(v.checks),
                    provenance: json!(v.provenance),
                    usage: json!(v.usage),
                };
                db::insert_message(&state.pool, tenant_id, ctx.job.id, &m)
                    .await
                    .map_err(|e| JobError::Retryable(e.to_string()))?;
                written += 1;
                if last_report.elapsed() > Duration::from_secs(1) || written == total {
                    last_report = Instant::now();
                    ctx.progress(
                        written as f64 / total.max(1) as f64,
                        &json!({"written": written, "total": total, "model": from_model, "template": from_template}),
                    )
                    .await?;
                }
            }
            Ok(
                json!({"written": written, "total": total, "model": from_model, "template": from_template}),
            )
        })
    }
}

/// `content.campaign_variants`: variants for a metrics campaign from a brief (requested through
/// `POST /v1/content/campaigns/{id}/variants`, or by the campaign optimiser replacing a paused
/// generated variant).
pub struct CampaignVariants {
    pub state: AppState,
}

impl JobHandler for CampaignVariants {
    fn kind(&self) -> &'static str {
        crate::routes::campaigns::CAMPAIGN_VARIANTS
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            crate::routes::campaigns::write_campaign_variants(
                &self.state,
                ctx.tenant_id(),
                ctx.payload(),
            )
            .await
            .map_err(JobError::Retryable)
        })
    }
}
