//! `/v1/jobs`: a tenant's view of its long-running work.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    http::StatusCode,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use sqlx::PgPool;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::queue::{self, Job};
use crate::{
    auth::{Role, TenantContext},
    error::{ApiError, ApiResult, Problem},
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
};

pub const TAG: &str = "jobs";

pub fn routes() -> OpenApiRouter<PgPool> {
    OpenApiRouter::new()
        .routes(routes!(list_jobs))
        .routes(routes!(get_job))
        .routes(routes!(cancel_job))
        .routes(routes!(job_events))
}

pub fn router(pool: PgPool) -> OpenApiRouter {
    routes().with_state(pool)
}

/// The tenant's jobs, newest first.
#[utoipa::path(
    get, path = "/v1/jobs", tag = TAG,
    params(PageParams),
    responses(
        (status = 200, description = "A page of jobs", body = Page<Job>),
        (status = 400, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn list_jobs(
    State(pool): State<PgPool>,
    ctx: TenantContext,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Job>>> {
    let limit = page.limit()?;
    let after: Option<Uuid> = page.after()?;
    let rows = queue::list(&pool, ctx.tenant_id, after, i64::from(limit) + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |job| job.id)))
}

/// One job: status, progress, counters, result or error.
#[utoipa::path(
    get, path = "/v1/jobs/{id}", tag = TAG,
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job for this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_job(
    State(pool): State<PgPool>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Job>> {
    find(&pool, ctx.tenant_id, id).await.map(Json)
}

/// Cancels a queued or running job; its worker stops at its next progress report.
#[utoipa::path(
    post, path = "/v1/jobs/{id}/cancel", tag = TAG,
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "The cancelled job", body = Job),
        (status = 404, description = "No such job for this tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has already finished", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn cancel_job(
    State(pool): State<PgPool>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Job>> {
    ctx.require(Role::Writer)?;
    let job = find(&pool, ctx.tenant_id, id).await?;
    if !queue::cancel(&pool, ctx.tenant_id, id).await? {
        return Err(ApiError::Conflict(format!(
            "the job has already {}",
            status_word(&job)
        )));
    }
    find(&pool, ctx.tenant_id, id).await.map(Json)
}

/// Server-Sent Events: a `progress` event with the job whenever it changes, then one
/// `done` event when it finishes.
#[utoipa::path(
    get, path = "/v1/jobs/{id}/events", tag = TAG,
    params(("id" = Uuid, Path, description = "Job id")),
    responses(
        (status = 200, description = "Stream of `progress` events and a final `done` event, each carrying the job",
         content_type = "text/event-stream", body = Job),
        (status = 404, description = "No such job for this tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn job_events(
    State(pool): State<PgPool>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<(
    StatusCode,
    Sse<impl Stream<Item = Result<Event, Infallible>>>,
)> {
    let first = find(&pool, ctx.tenant_id, id).await?;
    let tenant_id = ctx.tenant_id;
    let stream = futures::stream::unfold(
        (Some(first), None::<chrono::DateTime<chrono::Utc>>, false),
        move |(pending, last_seen, finished)| {
            let pool = pool.clone();
            async move {
                if finished {
                    return None;
                }
                let mut job = pending;
                // Polling by primary key is cheap and works whichever process runs the job.
                while job.as_ref().is_none_or(|j| Some(j.updated_at) == last_seen) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    job = match queue::get(&pool, tenant_id, id).await {
                        Ok(Some(j)) => Some(j),
                        Ok(None) => return None,
                        Err(_) => continue,
                    };
                }
                let job = job?;
                let done = job.status.is_terminal();
                let event = Event::default()
                    .event(if done { "done" } else { "progress" })
                    .json_data(&job)
                    .unwrap_or_default();
                Some((Ok(event), (None, Some(job.updated_at), done)))
            }
        },
    );
    Ok((
        StatusCode::OK,
        Sse::new(stream).keep_alive(KeepAlive::default()),
    ))
}

async fn find(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> ApiResult<Job> {
    queue::get(pool, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("job".into()))
}

fn status_word(job: &Job) -> &'static str {
    match job.status {
        queue::JobStatus::Succeeded => "succeeded",
        queue::JobStatus::Failed => "failed",
        queue::JobStatus::Cancelled => "been cancelled",
        _ => "finished",
    }
}
