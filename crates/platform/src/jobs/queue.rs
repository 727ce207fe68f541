//! Queries on `platform.jobs`. Every function that serves a client filters on the tenant;
//! the claim and reclaim queries are the only ones that span tenants.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgExecutor, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn parse(value: &str) -> Self {
        match value {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            _ => Self::Queued,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

/// A unit of long-running work and how far it has got.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a0c4-5b1e-7c3a-9f00-2b7c1d9e4a10", "kind": "profiling.import",
    "status": "running", "progress": 0.42, "counters": {"accepted": 4200, "rejected": 3},
    "result": null, "error": null, "attempts": 1, "max_attempts": 3,
    "created_at": "2026-11-28T10:00:00Z", "started_at": "2026-11-28T10:00:01Z",
    "finished_at": null, "updated_at": "2026-11-28T10:00:09Z"
}))]
pub struct Job {
    pub id: Uuid,
    #[serde(skip)]
    pub tenant_id: Uuid,
    pub kind: String,
    #[serde(skip)]
    pub payload: serde_json::Value,
    pub status: JobStatus,
    /// 0 to 1.
    pub progress: f64,
    /// Work-specific counts (rows accepted, rejected, customers scored...).
    #[schema(value_type = Object)]
    pub counters: serde_json::Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The last failure, kept while the job is retried.
    pub error: Option<String>,
    pub attempts: i32,
    pub max_attempts: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

struct JobRow {
    tenant_id: Uuid,
    id: Uuid,
    kind: String,
    payload: serde_json::Value,
    status: String,
    progress: f64,
    counters: serde_json::Value,
    result: Option<serde_json::Value>,
    error: Option<String>,
    attempts: i32,
    max_attempts: i32,
    created_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl From<JobRow> for Job {
    fn from(r: JobRow) -> Self {
        Job {
            id: r.id,
            tenant_id: r.tenant_id,
            kind: r.kind,
            payload: r.payload,
            status: JobStatus::parse(&r.status),
            progress: r.progress,
            counters: r.counters,
            result: r.result,
            error: r.error,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            created_at: r.created_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            updated_at: r.updated_at,
        }
    }
}

/// What to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant_id: Uuid,
    pub kind: String,
    pub payload: serde_json::Value,
    pub max_attempts: i32,
    /// Seconds to wait before the job may be claimed (recurring work schedules its next run).
    pub delay_secs: f64,
}

impl NewJob {
    pub fn new(tenant_id: Uuid, kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            tenant_id,
            kind: kind.into(),
            payload,
            max_attempts: 3,
            delay_secs: 0.0,
        }
    }

    /// The same job, claimable only after `secs` seconds.
    pub fn delayed(mut self, secs: f64) -> Self {
        self.delay_secs = secs.max(0.0);
        self
    }
}

pub async fn enqueue(db: impl PgExecutor<'_>, job: &NewJob) -> Result<Job, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"INSERT INTO platform.jobs (tenant_id, id, kind, payload, max_attempts, run_at)
           VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))
           RETURNING tenant_id, id, kind, payload, status, progress, counters, result, error,
                     attempts, max_attempts, created_at, started_at, finished_at, updated_at"#,
        job.tenant_id,
        Uuid::now_v7(),
        job.kind,
        job.payload,
        job.max_attempts,
        job.delay_secs
    )
    .fetch_one(db)
    .await?;
    Ok(row.into())
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"SELECT tenant_id, id, kind, payload, status, progress, counters, result, error,
                  attempts, max_attempts, created_at, started_at, finished_at, updated_at
           FROM platform.jobs WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(Into::into))
}

/// Newest first; `before` is the id of the last job of the previous page (ids are v7, so
/// they sort by creation time).
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Job>, sqlx::Error> {
    let rows = sqlx::query_as!(
        JobRow,
        r#"SELECT tenant_id, id, kind, payload, status, progress, counters, result, error,
                  attempts, max_attempts, created_at, started_at, finished_at, updated_at
           FROM platform.jobs
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id < $2)
           ORDER BY id DESC LIMIT $3"#,
        tenant_id,
        before,
        limit
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Takes back running jobs whose worker stopped sending heartbeats: queued again, or
/// failed when they have used all their attempts.
pub async fn reclaim_stale(pool: &PgPool, stale_after_secs: f64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        r#"UPDATE platform.jobs
           SET status = CASE WHEN attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
               finished_at = CASE WHEN attempts >= max_attempts THEN now() END,
               error = 'the worker running this job stopped responding',
               locked_by = NULL, run_at = now(), updated_at = now()
           WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => $1)"#,
        stale_after_secs
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Claims the oldest due job of one of `kinds`, skipping rows other workers hold.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    kinds: &[String],
) -> Result<Option<Job>, sqlx::Error> {
    let row = sqlx::query_as!(
        JobRow,
        r#"UPDATE platform.jobs j
           SET status = 'running', attempts = j.attempts + 1, locked_by = $1,
               heartbeat_at = now(), started_at = coalesce(j.started_at, now()), updated_at = now()
           FROM (SELECT tenant_id, id FROM platform.jobs
                 WHERE status = 'queued' AND run_at <= now() AND kind = ANY($2)
                 ORDER BY run_at LIMIT 1 FOR UPDATE SKIP LOCKED) next
           WHERE j.tenant_id = next.tenant_id AND j.id = next.id
           RETURNING j.tenant_id, j.id, j.kind, j.payload, j.status, j.progress, j.counters,
                     j.result, j.error, j.attempts, j.max_attempts, j.created_at, j.started_at,
                     j.finished_at, j.updated_at"#,
        worker,
        kinds
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Into::into))
}

/// Records progress and renews the lease. `false` means this worker no longer holds the
/// job (cancelled, or taken back as stale) and must stop.
pub async fn heartbeat(
    pool: &PgPool,
    job: &Job,
    worker: &str,
    progress: Option<(f64, &serde_json::Value)>,
) -> Result<bool, sqlx::Error> {
    let (fraction, counters) = match progress {
        Some((f, c)) => (Some(f.clamp(0.0, 1.0)), Some(c)),
        None => (None, None),
    };
    let done = sqlx::query!(
        r#"UPDATE platform.jobs
           SET heartbeat_at = now(), updated_at = now(),
               progress = coalesce($4, progress), counters = coalesce($5, counters)
           WHERE tenant_id = $1 AND id = $2 AND locked_by = $3 AND status = 'running'"#,
        job.tenant_id,
        job.id,
        worker,
        fraction,
        counters
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn succeed(
    pool: &PgPool,
    job: &Job,
    worker: &str,
    result: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE platform.jobs
           SET status = 'succeeded', progress = 1, result = $4, error = NULL, locked_by = NULL,
               finished_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND locked_by = $3 AND status = 'running'"#,
        job.tenant_id,
        job.id,
        worker,
        result
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a failure: queued again after `retry_in_secs`, or failed for good when it is
/// `None` or the attempts are used up.
pub async fn fail(
    pool: &PgPool,
    job: &Job,
    worker: &str,
    error: &str,
    retry_in_secs: Option<f64>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"UPDATE platform.jobs
           SET status = CASE WHEN $5::float8 IS NULL OR attempts >= max_attempts THEN 'failed' ELSE 'queued' END,
               finished_at = CASE WHEN $5::float8 IS NULL OR attempts >= max_attempts THEN now() END,
               run_at = now() + make_interval(secs => coalesce($5, 0)),
               error = $4, locked_by = NULL, updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND locked_by = $3 AND status = 'running'"#,
        job.tenant_id,
        job.id,
        worker,
        error,
        retry_in_secs
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Cancels a job that has not finished; its worker stops at its next heartbeat.
pub async fn cancel(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        r#"UPDATE platform.jobs
           SET status = 'cancelled', locked_by = NULL, finished_at = now(), updated_at = now()
           WHERE tenant_id = $1 AND id = $2 AND status IN ('queued', 'running')"#,
        tenant_id,
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
