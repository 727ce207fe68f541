//! Long work of the profiling service, run by the platform job queue.

use futures::future::BoxFuture;
use mercato_platform::{
    batch::ItemStatus,
    error::FieldError,
    extract::item_from_value,
    jobs::{JobContext, JobError, JobHandler},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    domain::{
        customer::CustomerInput,
        event::EventInput,
        import::{ImportFormat, ImportKind, csv_fields, csv_record},
        product::ProductInput,
    },
    ingest,
};

/// `profiling.recompute_profiles`: rebuilds every profile of the tenant from its events
/// (backfills, or after changing the catalog's categories) in one set-based statement,
/// inside one transaction: readers see the old profiles until the new ones are complete.
pub struct RecomputeProfiles;

pub const RECOMPUTE_PROFILES: &str = "profiling.recompute_profiles";

impl JobHandler for RecomputeProfiles {
    fn kind(&self) -> &'static str {
        RECOMPUTE_PROFILES
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let mut tx = ctx.pool.begin().await?;
            let written = crate::db::profiles::rebuild_all(&mut tx, ctx.tenant_id()).await?;
            tx.commit().await?;
            Ok(json!({"customers": written}))
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
            let prior = crate::db::clv::pooled_prior(&ctx.pool, tenant_id)
                .await?
                .unwrap_or(crate::domain::value::PRIOR_BGNBD);
            ctx.progress(0.2, &json!({"buyers": buyers.len()})).await?;
            // The fit is CPU work of a fraction of a second per thousand buyers; keep it off
            // the async workers.
            let fit =
                tokio::task::spawn_blocking(move || crate::domain::value::fit(&buyers, &prior))
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

/// `profiling.import`: validates and stores the lines of an uploaded file, chunk by chunk,
/// through the same cleaning as the batch endpoints. Resumable: the last processed line is
/// kept in the job's counters, so a retried import carries on where it stopped.
pub struct Import;

pub const IMPORT: &str = "profiling.import";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImportPayload {
    pub import_id: Uuid,
    pub kind: ImportKind,
    pub format: ImportFormat,
    /// Non-blank lines stored (the CSV header included).
    pub lines: i64,
}

/// Rejected lines kept in the job for the client to see; beyond this only counted.
const MAX_REPORTED_REJECTS: usize = 500;
const IMPORT_CHUNK: i64 = 1000;

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct ImportCounters {
    last_line: i64,
    processed: i64,
    accepted: i64,
    rejected: i64,
    duplicates: i64,
    rejects: Vec<serde_json::Value>,
}

impl ImportCounters {
    fn reject(&mut self, line: i64, errors: &[mercato_platform::error::FieldError]) {
        self.rejected += 1;
        if self.rejects.len() < MAX_REPORTED_REJECTS {
            self.rejects.push(json!({"line": line, "errors": errors}));
        }
    }
}

impl JobHandler for Import {
    fn kind(&self) -> &'static str {
        IMPORT
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let payload: ImportPayload = serde_json::from_value(ctx.payload().clone())
                .map_err(|e| JobError::Fatal(format!("bad payload: {e}")))?;
            let tenant_id = ctx.tenant_id();
            let mut counters: ImportCounters =
                serde_json::from_value(ctx.job.counters.clone()).unwrap_or_default();
            let header: Option<Vec<String>> = match payload.format {
                ImportFormat::Ndjson => None,
                ImportFormat::Csv => {
                    let first = sqlx::query!(
                        "SELECT line_no, line FROM profiling.import_lines WHERE tenant_id = $1 AND import_id = $2
                         ORDER BY line_no LIMIT 1",
                        tenant_id,
                        payload.import_id
                    )
                    .fetch_optional(&ctx.pool)
                    .await?
                    .ok_or_else(|| JobError::Fatal("the import's lines are gone".into()))?;
                    let fields = csv_fields(&first.line).map_err(|e| {
                        JobError::Fatal(format!("line {}: header {e}", first.line_no))
                    })?;
                    if counters.last_line < first.line_no {
                        counters.last_line = first.line_no;
                        counters.processed += 1;
                    }
                    Some(fields.iter().map(|f| f.trim().to_owned()).collect())
                }
            };
            loop {
                let rows = sqlx::query!(
                    "SELECT line_no, line FROM profiling.import_lines
                     WHERE tenant_id = $1 AND import_id = $2 AND line_no > $3 ORDER BY line_no LIMIT $4",
                    tenant_id,
                    payload.import_id,
                    counters.last_line,
                    IMPORT_CHUNK
                )
                .fetch_all(&ctx.pool)
                .await?;
                let Some(last) = rows.last().map(|r| r.line_no) else {
                    break;
                };
                let mut values = Vec::with_capacity(rows.len());
                for row in &rows {
                    let parsed = match &header {
                        None => serde_json::from_str::<serde_json::Value>(&row.line)
                            .map_err(|e| format!("is not JSON: {e}")),
                        Some(h) => {
                            csv_fields(&row.line).and_then(|r| csv_record(payload.kind, h, &r))
                        }
                    };
                    match parsed {
                        Ok(v) => values.push((row.line_no, v)),
                        Err(message) => {
                            counters.reject(row.line_no, &[FieldError::new("line", message)])
                        }
                    }
                }
                let mut tx = ctx.pool.begin().await?;
                import_chunk(&mut tx, tenant_id, payload.kind, values, &mut counters).await?;
                // Parse and validation rejects of a chunk arrive in two passes; report in line order.
                counters.rejects.sort_by_key(|r| r["line"].as_i64());
                counters.last_line = last;
                counters.processed += rows.len() as i64;
                tx.commit().await?;
                let fraction = counters.processed as f64 / payload.lines.max(1) as f64;
                ctx.progress(
                    fraction.min(1.0),
                    &serde_json::to_value(&counters).unwrap_or_default(),
                )
                .await?;
            }
            sqlx::query!(
                "DELETE FROM profiling.import_lines WHERE tenant_id = $1 AND import_id = $2",
                tenant_id,
                payload.import_id
            )
            .execute(&ctx.pool)
            .await?;
            Ok(json!({
                "accepted": counters.accepted, "rejected": counters.rejected, "duplicates": counters.duplicates,
                "lines": counters.processed, "rejects": counters.rejects,
            }))
        })
    }
}

/// Validates and stores one chunk of parsed lines.
async fn import_chunk(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    kind: ImportKind,
    values: Vec<(i64, serde_json::Value)>,
    counters: &mut ImportCounters,
) -> Result<(), JobError> {
    let now = chrono::Utc::now();
    let year = chrono::Datelike::year(&now);
    match kind {
        ImportKind::Customers => {
            let mut valid = Vec::new();
            for (line, value) in values {
                match item_from_value::<CustomerInput>(value, "")
                    .map_err(|e| vec![e])
                    .and_then(|c| c.clean("", year))
                {
                    Ok(c) => valid.push((line as usize, c)),
                    Err(errors) => counters.reject(line, &errors),
                }
            }
            let accepted = valid.len() as i64;
            ingest::upsert_customers(conn, tenant_id, valid).await?;
            counters.accepted += accepted;
        }
        ImportKind::Products => {
            let mut valid = Vec::new();
            for (line, value) in values {
                match item_from_value::<ProductInput>(value, "")
                    .map_err(|e| vec![e])
                    .and_then(|p| p.clean(""))
                {
                    Ok(p) => valid.push(p),
                    Err(errors) => counters.reject(line, &errors),
                }
            }
            crate::db::products::upsert_many(&mut *conn, tenant_id, &valid).await?;
            counters.accepted += valid.len() as i64;
        }
        ImportKind::Events => {
            let mut valid = Vec::new();
            for (line, value) in values {
                match item_from_value::<EventInput>(value, "")
                    .map_err(|e| vec![e])
                    .and_then(|e| e.clean("", now))
                {
                    Ok(e) => valid.push((line as usize, e)),
                    Err(errors) => counters.reject(line, &errors),
                }
            }
            if !valid.is_empty() {
                for result in ingest::record_events_in(conn, tenant_id, &valid).await? {
                    match result.status {
                        ItemStatus::Duplicate => counters.duplicates += 1,
                        _ => counters.accepted += 1,
                    }
                }
            }
        }
    }
    Ok(())
}

/// `profiling.cluster`: k-means over the tenant's profiles; stores the run and each
/// customer's cluster (a field segments can use).
pub struct Cluster;

pub const CLUSTER: &str = "profiling.cluster";

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterParams {
    /// Number of clusters; when absent, chosen by silhouette between `k_min` and `k_max`.
    pub k: Option<usize>,
    /// Default 2.
    pub k_min: Option<usize>,
    /// Default 8.
    pub k_max: Option<usize>,
    /// The same seed on the same data gives the same clusters (default 42).
    pub seed: Option<u64>,
}

impl JobHandler for Cluster {
    fn kind(&self) -> &'static str {
        CLUSTER
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        Box::pin(async move {
            let params: ClusterParams = serde_json::from_value(ctx.payload().clone())
                .map_err(|e| JobError::Fatal(format!("bad payload: {e}")))?;
            let tenant_id = ctx.tenant_id();
            let (ids, features) = crate::db::clusters::features(&ctx.pool, tenant_id).await?;
            let k_min = params.k_min.unwrap_or(2);
            let k_max = params.k_max.unwrap_or(8);
            let needed = params.k.unwrap_or(k_max).max(2) * 2;
            if ids.len() < needed {
                return Err(JobError::Fatal(format!(
                    "{} customers with profiles; at least {needed} are needed",
                    ids.len()
                )));
            }
            ctx.progress(0.1, &json!({"customers": ids.len()})).await?;
            let seed = params.seed.unwrap_or(42);
            let result = tokio::task::spawn_blocking(move || {
                crate::domain::cluster::cluster(&features, params.k, (k_min, k_max), seed)
            })
            .await
            .map_err(|e| JobError::Retryable(e.to_string()))?;
            let run_id = Uuid::now_v7();
            let labels: Vec<i32> = result.labels.iter().map(|l| *l as i32).collect();
            let candidates = json!(
                result
                    .candidates
                    .iter()
                    .map(|(k, s)| json!({"k": k, "silhouette": s}))
                    .collect::<Vec<_>>()
            );
            let clusters = serde_json::to_value(&result.clusters)
                .map_err(|e| JobError::Fatal(e.to_string()))?;
            let mut tx = ctx.pool.begin().await?;
            crate::db::clusters::save_run(
                &mut tx,
                tenant_id,
                run_id,
                result.k as i32,
                result.silhouette,
                &candidates,
                &clusters,
                &ids,
                &labels,
            )
            .await?;
            tx.commit().await?;
            Ok(
                json!({"run_id": run_id, "k": result.k, "silhouette": result.silhouette, "customers": ids.len()}),
            )
        })
    }
}

/// `profiling.train_model`: builds the dataset from the tenant's events, trains the
/// sequence model (progress per epoch: losses), evaluates it on the test window against
/// the baselines, stores the version and activates it if it beats them.
pub struct TrainModel;

pub const TRAIN_MODEL: &str = "profiling.train_model";

/// What a training job was asked for.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainSpec {
    pub task: crate::learn::Task,
    pub horizon_days: i64,
    pub hyper: crate::learn::Hyper,
    pub min_positive: usize,
    pub window: Option<(
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )>,
}

impl JobHandler for TrainModel {
    fn kind(&self) -> &'static str {
        TRAIN_MODEL
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        use crate::learn::pipeline;
        Box::pin(async move {
            let tenant_id = ctx.tenant_id();
            let spec: TrainSpec = serde_json::from_value(ctx.payload().clone())
                .map_err(|e| JobError::Fatal(format!("payload: {e}")))?;
            let rows = crate::db::models::history(&ctx.pool, tenant_id, None).await?;
            let (events, _) = pipeline::records(rows);
            let last = events
                .iter()
                .map(|e| e.at)
                .max()
                .ok_or_else(|| JobError::Fatal("the tenant has no events".into()))?;
            let window = spec
                .window
                .unwrap_or_else(|| pipeline::default_window(last, spec.horizon_days));
            let config = pipeline::config(&spec.hyper, spec.horizon_days, window);
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let hyper = spec.hyper.clone();
            let task = spec.task;
            let min_positive = spec.min_positive;
            let cfg = config.clone();
            let work = tokio::task::spawn_blocking(move || {
                let d = pipeline::dataset(&events, &cfg, min_positive)?;
                pipeline::train(d, &hyper, task, |epoch| tx.send(epoch.clone()).is_ok())
            });
            while let Some(epoch) = rx.recv().await {
                let fraction = 0.1 + 0.8 * epoch.epoch as f64 / spec.hyper.epochs.max(1) as f64;
                ctx.progress(fraction.min(0.9), &json!({"epoch": epoch}))
                    .await?;
            }
            let outcome = work
                .await
                .map_err(|e| JobError::Fatal(e.to_string()))?
                .map_err(|e| match e {
                    pipeline::TrainError::Data(d) => JobError::Fatal(d.to_string()),
                    pipeline::TrainError::Internal(m) => JobError::Fatal(m),
                })?;
            let beats = outcome.evaluation.beats_baseline();
            let task_name = spec.task.as_str();
            let new = crate::db::models::NewModel {
                task: task_name,
                horizon_days: spec.horizon_days as i32,
                hyper: serde_json::to_value(&spec.hyper).unwrap_or_default(),
                vocabulary: serde_json::to_value(&outcome.dataset.vocab).unwrap_or_default(),
                classes: serde_json::to_value(&outcome.dataset.classes).unwrap_or_default(),
                weights: &outcome.weights,
                data_window: pipeline::window_json(&config, &outcome.dataset),
                evaluation: serde_json::to_value(&outcome.evaluation).unwrap_or_default(),
                epochs: serde_json::to_value(&outcome.epochs).unwrap_or_default(),
                beats_baseline: beats,
            };
            let mut tx = ctx.pool.begin().await?;
            let id = crate::db::models::insert(&mut *tx, tenant_id, &new).await?;
            if beats {
                crate::db::models::activate(&mut tx, tenant_id, id, task_name).await?;
            }
            tx.commit().await?;
            Ok(json!({
                "model_id": id, "activated": beats, "best_epoch": outcome.best_epoch,
                "evaluation": outcome.evaluation,
            }))
        })
    }
}

/// `profiling.score_model`: writes the active model's prediction as a profile trait, for
/// every customer (`{"task": ...}`), or, queued by event ingestion (`{"incremental": true}`),
/// for the customers whose events arrived since each active model last scored. The trait is
/// `purchase_propensity` or `next_event`.
pub struct ScoreModel;

pub const SCORE_MODEL: &str = "profiling.score_model";

impl JobHandler for ScoreModel {
    fn kind(&self) -> &'static str {
        SCORE_MODEL
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>> {
        use crate::learn::Task;
        Box::pin(async move {
            if ctx.payload().get("incremental").is_some() {
                // After new events: every task with an active model, only the customers
                // whose events arrived since that model last scored.
                let mut out = serde_json::Map::new();
                for task in [Task::Purchase, Task::NextEvent] {
                    if let Some(result) = score(&ctx, task, true).await? {
                        out.insert(task.as_str().into(), result);
                    }
                }
                return Ok(serde_json::Value::Object(out));
            }
            let task: Task = ctx
                .payload()
                .get("task")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| JobError::Fatal(format!("payload: {e}")))?
                .unwrap_or(Task::Purchase);
            score(&ctx, task, false)
                .await?
                .ok_or_else(|| JobError::Fatal(format!("no active {} model", task.as_str())))
        })
    }
}

/// Scores customers with the task's active model and writes the trait: everyone, or (with
/// `incremental`) those whose events arrived since the model last scored. `None` when the
/// task has no active model.
async fn score(
    ctx: &JobContext,
    task: crate::learn::Task,
    incremental: bool,
) -> Result<Option<serde_json::Value>, JobError> {
    use crate::{
        learn::{Task, pipeline},
        routes::models::Loaded,
    };
    let tenant_id = ctx.tenant_id();
    let name = task.as_str();
    let Some((model, weights)) = crate::db::models::active(&ctx.pool, tenant_id, name).await?
    else {
        return Ok(None);
    };
    let loaded = Loaded::from_row(&model).map_err(|e| JobError::Fatal(e.to_string()))?;
    // Read the clock before the events: anything arriving meanwhile is scored next time.
    let through = chrono::Utc::now();
    let only = if incremental {
        let since = crate::db::models::scored_through(&ctx.pool, tenant_id, model.id).await?;
        let ids = crate::db::models::customers_with_new_events(&ctx.pool, tenant_id, since).await?;
        if ids.is_empty() {
            return Ok(Some(
                json!({"model_id": model.id, "customers": 0, "incremental": true}),
            ));
        }
        Some(ids)
    } else {
        None
    };
    let rows = crate::db::models::history(&ctx.pool, tenant_id, only.as_deref()).await?;
    let (events, customers) = pipeline::records(rows);
    let started = std::time::Instant::now();
    let (customers, values) = tokio::task::spawn_blocking(move || {
        let (tokens, features) = pipeline::encode_customers(
            &events,
            customers.len(),
            &loaded.vocab,
            loaded.hyper.seq_len,
            through,
        );
        let outputs = loaded.outputs(task);
        let scores = crate::learn::predict(
            &weights,
            &tokens,
            &features,
            loaded.vocab.size(),
            outputs,
            &loaded.hyper,
            task,
        )?;
        let values: Vec<serde_json::Value> = match task {
            Task::Purchase => scores
                .iter()
                .map(|p| json!((p * 10_000.0).round() / 10_000.0))
                .collect(),
            Task::NextEvent => scores
                .chunks(outputs.max(1))
                .map(|row| {
                    let k = crate::learn::model::argmax(row).map_or(0, |(k, _)| k);
                    json!(loaded.classes.get(k).cloned().unwrap_or_default())
                })
                .collect(),
        };
        Ok::<_, String>((customers, values))
    })
    .await
    .map_err(|e| JobError::Fatal(e.to_string()))?
    .map_err(JobError::Fatal)?;
    let key = task.trait_key();
    let seconds = started.elapsed().as_secs_f64();
    let written =
        crate::db::models::write_traits(&ctx.pool, tenant_id, &customers, key, &values).await?;
    crate::db::models::set_scored_through(&ctx.pool, tenant_id, model.id, through).await?;
    Ok(Some(
        json!({"model_id": model.id, "customers": written, "trait": key,
              "incremental": incremental,
              "customers_per_second": customers.len() as f64 / seconds.max(1e-9)}),
    ))
}
