//! Worker tasks that claim jobs and run them with the handler registered for their kind.

use std::{collections::HashMap, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use sqlx::PgPool;
use tokio::{sync::watch, task::JoinSet};
use uuid::Uuid;

use super::queue::{self, Job};
use crate::settings::JobSettings;

/// How a job ended when it did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a timeout, a lost connection).
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way again (bad input in the payload).
    #[error("{0}")]
    Fatal(String),
    /// Cancelled by the client or taken from this worker; nothing more is recorded.
    #[error("the job was cancelled")]
    Cancelled,
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Retryable(e.to_string())
    }
}

/// Runs one kind of job. Implementations report progress through the context.
pub trait JobHandler: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<serde_json::Value, JobError>>;
}

/// What a handler gets: the job, the pool, and a way to report progress.
#[derive(Clone)]
pub struct JobContext {
    pub job: Arc<Job>,
    pub pool: PgPool,
    worker: Arc<str>,
}

impl JobContext {
    pub fn tenant_id(&self) -> Uuid {
        self.job.tenant_id
    }

    pub fn payload(&self) -> &serde_json::Value {
        &self.job.payload
    }

    /// Records progress (0..1) and counters; fails with `Cancelled` once the job is no
    /// longer this worker's, so long loops stop promptly.
    pub async fn progress(
        &self,
        fraction: f64,
        counters: &serde_json::Value,
    ) -> Result<(), JobError> {
        if queue::heartbeat(
            &self.pool,
            &self.job,
            &self.worker,
            Some((fraction, counters)),
        )
        .await?
        {
            Ok(())
        } else {
            Err(JobError::Cancelled)
        }
    }
}

/// Claims and runs jobs of the registered kinds until shut down.
pub struct JobRunner {
    pool: PgPool,
    settings: JobSettings,
    handlers: HashMap<&'static str, Arc<dyn JobHandler>>,
}

impl JobRunner {
    pub fn new(pool: PgPool, settings: JobSettings) -> Self {
        Self {
            pool,
            settings,
            handlers: HashMap::new(),
        }
    }

    pub fn register(mut self, handler: Arc<dyn JobHandler>) -> Self {
        self.handlers.insert(handler.kind(), handler);
        self
    }

    pub fn kinds(&self) -> Vec<String> {
        self.handlers.keys().map(|k| (*k).to_owned()).collect()
    }

    /// Starts the workers; they stop claiming when `shutdown` turns true and finish the
    /// job in hand. Returns at once with nothing started when no kinds or workers are set.
    pub fn spawn(self, shutdown: watch::Receiver<bool>) -> JoinSet<()> {
        let mut set = JoinSet::new();
        if self.handlers.is_empty() || self.settings.workers == 0 {
            return set;
        }
        let shared = Arc::new(self);
        for n in 0..shared.settings.workers {
            let runner = shared.clone();
            let shutdown = shutdown.clone();
            let worker: Arc<str> = format!("{}-{}-{n}", hostname(), Uuid::new_v4().simple()).into();
            set.spawn(async move { runner.work(worker, shutdown).await });
        }
        set
    }

    async fn work(self: Arc<Self>, worker: Arc<str>, mut shutdown: watch::Receiver<bool>) {
        let kinds = self.kinds();
        let idle = Duration::from_millis(self.settings.poll_interval_ms);
        while !*shutdown.borrow() {
            let claimed =
                match queue::reclaim_stale(&self.pool, self.settings.stale_after_secs as f64).await
                {
                    Ok(_) => queue::claim(&self.pool, &worker, &kinds).await,
                    Err(e) => Err(e),
                };
            match claimed {
                Ok(Some(job)) => self.run_one(job, &worker).await,
                Ok(None) => {
                    tokio::select! {
                        _ = tokio::time::sleep(idle) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "job queue unavailable");
                    tokio::time::sleep(idle * 4).await;
                }
            }
        }
    }

    #[tracing::instrument(skip_all, fields(job = %job.id, kind = %job.kind, tenant = %job.tenant_id, attempt = job.attempts))]
    async fn run_one(&self, job: Job, worker: &Arc<str>) {
        let Some(handler) = self.handlers.get(job.kind.as_str()).cloned() else {
            return;
        };
        let job = Arc::new(job);
        let ctx = JobContext {
            job: job.clone(),
            pool: self.pool.clone(),
            worker: worker.clone(),
        };
        // Heartbeats keep the lease while the handler works between progress reports.
        let heartbeat = {
            let (pool, job, worker) = (self.pool.clone(), job.clone(), worker.clone());
            let every = Duration::from_secs(self.settings.heartbeat_secs.max(1));
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    if let Ok(false) = queue::heartbeat(&pool, &job, &worker, None).await {
                        break;
                    }
                }
            })
        };
        let outcome = handler.run(ctx).await;
        heartbeat.abort();
        let recorded = match &outcome {
            Ok(result) => queue::succeed(&self.pool, &job, worker, result).await,
            Err(JobError::Cancelled) => Ok(()),
            Err(JobError::Fatal(e)) => queue::fail(&self.pool, &job, worker, e, None).await,
            Err(JobError::Retryable(e)) => {
                let backoff = self.backoff_secs(job.attempts);
                queue::fail(&self.pool, &job, worker, e, Some(backoff)).await
            }
        };
        match (&outcome, recorded) {
            (_, Err(e)) => tracing::error!(error = %e, "could not record the job's outcome"),
            (Ok(_), _) => tracing::info!("job succeeded"),
            (Err(e), _) => tracing::warn!(error = %e, "job did not succeed"),
        }
    }

    /// Exponential backoff: base, 2×base, 4×base..., capped at ten minutes.
    fn backoff_secs(&self, attempts: i32) -> f64 {
        let base = self.settings.retry_base_ms as f64 / 1000.0;
        (base * 2f64.powi(attempts.saturating_sub(1).clamp(0, 20))).min(600.0)
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME").unwrap_or_else(|_| "mercato".to_owned())
}
