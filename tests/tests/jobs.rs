//! The durable job queue against real Postgres: claiming, progress, retries with backoff,
//! reclaiming jobs whose worker died, cancellation, and the HTTP view of a job.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, future::BoxFuture};
use mercato_platform::{
    auth::Role,
    jobs::{JobContext, JobError, JobHandler, JobStatus, NewJob, queue},
    service::{ServiceParts, standalone_app, start_jobs},
    settings::Settings,
    testing::{self, TestServer, tenant_with_key},
};
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

fn settings() -> Settings {
    let mut s = testing::settings();
    s.jobs.workers = 2;
    s.jobs.poll_interval_ms = 20;
    s.jobs.heartbeat_secs = 1;
    s.jobs.stale_after_secs = 2;
    s.jobs.retry_base_ms = 50;
    s
}

/// Counts to `steps`, reporting progress; fails the first `fail_first` attempts.
struct Counting {
    fail_first: i32,
    fatal: bool,
}

impl JobHandler for Counting {
    fn kind(&self) -> &'static str {
        "test.count"
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<Value, JobError>> {
        Box::pin(async move {
            if ctx.job.attempts <= self.fail_first {
                let message = format!("attempt {} failed", ctx.job.attempts);
                return Err(if self.fatal {
                    JobError::Fatal(message)
                } else {
                    JobError::Retryable(message)
                });
            }
            let steps = ctx.payload()["steps"].as_u64().unwrap_or(3);
            for step in 1..=steps {
                tokio::time::sleep(Duration::from_millis(30)).await;
                ctx.progress(step as f64 / steps as f64, &json!({"done": step}))
                    .await?;
            }
            Ok(json!({"counted": steps}))
        })
    }
}

/// Runs until cancelled, reporting progress.
struct Endless;

impl JobHandler for Endless {
    fn kind(&self) -> &'static str {
        "test.endless"
    }

    fn run(&self, ctx: JobContext) -> BoxFuture<'_, Result<Value, JobError>> {
        Box::pin(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(20)).await;
                ctx.progress(0.5, &json!({})).await?;
            }
        })
    }
}

async fn tenant(pool: &PgPool) -> Uuid {
    tenant_with_key(pool, Role::Writer).await.id
}

async fn wait_for(pool: &PgPool, tenant_id: Uuid, id: Uuid, status: JobStatus) -> queue::Job {
    for _ in 0..300 {
        let job = queue::get(pool, tenant_id, id)
            .await
            .expect("query")
            .expect("job exists");
        if job.status == status {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} never reached {status:?}");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn a_job_runs_to_success_with_progress_and_result(pool: PgPool) {
    let t = tenant(&pool).await;
    let job = queue::enqueue(&pool, &NewJob::new(t, "test.count", json!({"steps": 4})))
        .await
        .expect("enqueue");
    assert_eq!(job.status, JobStatus::Queued);
    let (stop, _workers) = start_jobs(
        &settings(),
        &pool,
        vec![Arc::new(Counting {
            fail_first: 0,
            fatal: false,
        })],
    );
    let done = wait_for(&pool, t, job.id, JobStatus::Succeeded).await;
    stop.send(true).expect("stop");
    assert_eq!(done.progress, 1.0);
    assert_eq!(done.counters, json!({"done": 4}));
    assert_eq!(done.result, Some(json!({"counted": 4})));
    assert_eq!(done.attempts, 1);
    assert!(done.finished_at.is_some());
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn retryable_failures_back_off_then_succeed(pool: PgPool) {
    let t = tenant(&pool).await;
    let job = queue::enqueue(&pool, &NewJob::new(t, "test.count", json!({"steps": 1})))
        .await
        .expect("enqueue");
    let (stop, _workers) = start_jobs(
        &settings(),
        &pool,
        vec![Arc::new(Counting {
            fail_first: 2,
            fatal: false,
        })],
    );
    let done = wait_for(&pool, t, job.id, JobStatus::Succeeded).await;
    stop.send(true).expect("stop");
    assert_eq!(done.attempts, 3);
    assert_eq!(done.error, None);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn attempts_run_out_and_fatal_errors_fail_at_once(pool: PgPool) {
    let t = tenant(&pool).await;
    let mut new = NewJob::new(t, "test.count", json!({}));
    new.max_attempts = 2;
    let retried = queue::enqueue(&pool, &new).await.expect("enqueue");
    let (stop, _workers) = start_jobs(
        &settings(),
        &pool,
        vec![Arc::new(Counting {
            fail_first: 5,
            fatal: false,
        })],
    );
    let failed = wait_for(&pool, t, retried.id, JobStatus::Failed).await;
    stop.send(true).expect("stop");
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.error.as_deref(), Some("attempt 2 failed"));

    let fatal = queue::enqueue(&pool, &NewJob::new(t, "test.count", json!({})))
        .await
        .expect("enqueue");
    let (stop, _workers) = start_jobs(
        &settings(),
        &pool,
        vec![Arc::new(Counting {
            fail_first: 5,
            fatal: true,
        })],
    );
    let failed = wait_for(&pool, t, fatal.id, JobStatus::Failed).await;
    stop.send(true).expect("stop");
    assert_eq!(failed.attempts, 1);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn a_job_whose_worker_died_is_picked_up_again(pool: PgPool) {
    let t = tenant(&pool).await;
    let job = queue::enqueue(&pool, &NewJob::new(t, "test.count", json!({"steps": 1})))
        .await
        .expect("enqueue");
    // A worker claims it and dies: no heartbeat ever again.
    let claimed = queue::claim(&pool, "dead-worker", &["test.count".to_owned()])
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(claimed.id, job.id);
    sqlx::query("UPDATE platform.jobs SET heartbeat_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .expect("age heartbeat");

    let (stop, _workers) = start_jobs(
        &settings(),
        &pool,
        vec![Arc::new(Counting {
            fail_first: 0,
            fatal: false,
        })],
    );
    let done = wait_for(&pool, t, job.id, JobStatus::Succeeded).await;
    stop.send(true).expect("stop");
    assert_eq!(done.attempts, 2, "the dead worker's attempt counts");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn concurrent_claims_never_take_the_same_job(pool: PgPool) {
    let t = tenant(&pool).await;
    for _ in 0..20 {
        queue::enqueue(&pool, &NewJob::new(t, "test.count", json!({})))
            .await
            .expect("enqueue");
    }
    let kinds = vec!["test.count".to_owned()];
    let claims = (0..20).map(|n| {
        let (pool, kinds) = (pool.clone(), kinds.clone());
        tokio::spawn(async move { queue::claim(&pool, &format!("w{n}"), &kinds).await })
    });
    let mut ids: Vec<Uuid> = Vec::new();
    for claim in futures::future::join_all(claims).await {
        if let Some(job) = claim.expect("task").expect("claim") {
            ids.push(job.id);
        }
    }
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "a job was claimed twice");
    assert_eq!(total, 20);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn cancelling_stops_a_running_job(pool: PgPool) {
    let t = tenant(&pool).await;
    let job = queue::enqueue(&pool, &NewJob::new(t, "test.endless", json!({})))
        .await
        .expect("enqueue");
    let (stop, _workers) = start_jobs(&settings(), &pool, vec![Arc::new(Endless)]);
    wait_for(&pool, t, job.id, JobStatus::Running).await;
    assert!(queue::cancel(&pool, t, job.id).await.expect("cancel"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = queue::get(&pool, t, job.id)
        .await
        .expect("query")
        .expect("job");
    stop.send(true).expect("stop");
    assert_eq!(after.status, JobStatus::Cancelled);
    assert!(
        !queue::cancel(&pool, t, job.id).await.expect("cancel"),
        "a finished job cannot be cancelled again"
    );
}

async fn jobs_server(pool: &PgPool) -> TestServer {
    let s = settings();
    let parts = vec![ServiceParts::routes(
        mercato_platform::jobs::routes::router(pool.clone()),
    )];
    TestServer::spawn(standalone_app(&s, pool, parts)).await
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn jobs_are_visible_to_their_tenant_only(pool: PgPool) {
    let server = jobs_server(&pool).await;
    let owner = tenant_with_key(&pool, Role::Reader).await;
    let other = tenant_with_key(&pool, Role::Reader).await;
    let job = queue::enqueue(&pool, &NewJob::new(owner.id, "test.count", json!({})))
        .await
        .expect("enqueue");
    let url = server.url(&format!("/v1/jobs/{}", job.id));

    let mine = server
        .client
        .get(&url)
        .bearer_auth(&owner.key)
        .send()
        .await
        .expect("request");
    assert_eq!(mine.status(), 200);
    let body: Value = mine.json().await.expect("json");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["kind"], "test.count");

    let theirs = server
        .client
        .get(&url)
        .bearer_auth(&other.key)
        .send()
        .await
        .expect("request");
    assert_eq!(theirs.status(), 404);
    let listed: Value = server
        .client
        .get(server.url("/v1/jobs"))
        .bearer_auth(&other.key)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"], json!([]));
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn the_event_stream_reports_progress_then_done(pool: PgPool) {
    let server = jobs_server(&pool).await;
    let owner = tenant_with_key(&pool, Role::Reader).await;
    let job = queue::enqueue(
        &pool,
        &NewJob::new(owner.id, "test.count", json!({"steps": 5})),
    )
    .await
    .expect("enqueue");
    let response = server
        .client
        .get(server.url(&format!("/v1/jobs/{}/events", job.id)))
        .bearer_auth(&owner.key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );

    let (stop, _workers) = start_jobs(
        &settings(),
        &pool,
        vec![Arc::new(Counting {
            fail_first: 0,
            fatal: false,
        })],
    );
    let mut text = String::new();
    let mut body = response.bytes_stream();
    let read = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if text.contains("event: done") && text.ends_with("\n\n") {
                break;
            }
        }
    })
    .await;
    stop.send(true).expect("stop");
    assert!(read.is_ok(), "stream ended in time: {text}");
    assert!(text.contains("event: progress"), "{text}");
    let done = text.split("event: done").nth(1).expect("done event");
    let data = done
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    let job: Value = serde_json::from_str(data).expect("job json");
    assert_eq!(job["status"], "succeeded");
    assert_eq!(job["progress"], 1.0);
}
