//! `/v1/profiling/models`: the tenant's sequence models (Embedding -> LSTM -> Dense):
//! train as a job, inspect versions with their evaluation, activate one, score customers
//! and explain a score.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::{FieldError, Problem},
    extract::{Json, Path, Query},
    jobs::{Job, NewJob, queue},
    pagination::{Page, PageParams},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::models as db,
    domain::sequence::dataset::{self, EventRecord, Vocabulary},
    jobs::{SCORE_MODEL, TRAIN_MODEL, TrainSpec},
    learn::{Hyper, Task, pipeline},
    state::AppState,
};

pub const TAG: &str = "models";
/// Positive training examples a model needs at the least (the default of `min_positive`).
pub const MIN_POSITIVE: usize = 200;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(train_model, list_models))
        .routes(routes!(get_model))
        .routes(routes!(activate_model))
        .routes(routes!(score_customers))
        .routes(routes!(customer_prediction))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"task": "purchase", "horizon_days": 30, "hyper": {"epochs": 10}}))]
pub struct TrainRequest {
    pub task: Task,
    /// Days after a cut-off the label looks at (1 to 365, default 30).
    pub horizon_days: Option<i64>,
    /// Hyper-parameters; each absent one takes its default.
    pub hyper: Option<Hyper>,
    /// Least positive (and negative) training examples accepted (10 to 100000, default 200).
    pub min_positive: Option<usize>,
    /// Period ends (default: test = the last 2 x horizon days before the last event,
    /// validation the 2 x horizon before, training everything earlier).
    pub train_end: Option<DateTime<Utc>>,
    pub valid_end: Option<DateTime<Utc>>,
    pub test_end: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Model {
    pub id: Uuid,
    pub task: Task,
    pub horizon_days: i32,
    #[schema(value_type = Object)]
    pub hyper: serde_json::Value,
    /// Next-event classes by id.
    #[schema(value_type = Object)]
    pub classes: serde_json::Value,
    /// Period ends and example counts per split.
    #[schema(value_type = Object)]
    pub data_window: serde_json::Value,
    /// Test-window report of the model and of each baseline on the same examples.
    #[schema(value_type = Object)]
    pub evaluation: serde_json::Value,
    /// Training and validation loss per epoch.
    #[schema(value_type = Object)]
    pub epochs: serde_json::Value,
    pub beats_baseline: bool,
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

fn to_model(r: db::ModelRow) -> ApiResult<Model> {
    Ok(Model {
        task: serde_json::from_value(serde_json::Value::String(r.task))
            .map_err(ApiError::internal)?,
        id: r.id,
        horizon_days: r.horizon_days,
        hyper: r.hyper,
        classes: r.classes,
        data_window: r.data_window,
        evaluation: r.evaluation,
        epochs: r.epochs,
        beats_baseline: r.beats_baseline,
        active: r.active,
        created_at: r.created_at,
        activated_at: r.activated_at,
    })
}

async fn tenant_events(
    state: &AppState,
    tenant_id: Uuid,
    customer: Option<Uuid>,
) -> ApiResult<(Vec<EventRecord>, Vec<Uuid>)> {
    let one = customer.map(|c| [c]);
    let rows = db::history(&state.pool, tenant_id, one.as_ref().map(|c| c.as_slice())).await?;
    Ok(pipeline::records(rows))
}

/// Trains a model as a job. The data is checked first: too few positive training examples
/// answer 422 with the counts found, before any job starts. Progress per epoch (losses) is
/// on the job's event stream; the version is stored with its evaluation and activated if
/// it beats the baselines.
#[utoipa::path(
    post, path = "/v1/profiling/models", tag = TAG,
    request_body = TrainRequest,
    responses(
        (status = 202, description = "The training job; follow it at /v1/jobs/{id}", body = Job),
        (status = 422, description = "Hyper-parameters out of range, or too little data (the counts found are stated)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn train_model(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(body): Json<TrainRequest>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    ctx.require(Role::Writer)?;
    let hyper = body.hyper.unwrap_or_default();
    let mut errors: Vec<FieldError> = hyper
        .problems()
        .into_iter()
        .map(|(f, m)| FieldError::new(format!("hyper.{f}"), m))
        .collect();
    let horizon = body.horizon_days.unwrap_or(30);
    if !(1..=365).contains(&horizon) {
        errors.push(FieldError::new(
            "horizon_days",
            "must lie between 1 and 365",
        ));
    }
    let min_positive = body.min_positive.unwrap_or(MIN_POSITIVE);
    if !(10..=100_000).contains(&min_positive) {
        errors.push(FieldError::new(
            "min_positive",
            "must lie between 10 and 100000",
        ));
    }
    let given = [body.train_end, body.valid_end, body.test_end];
    if given.iter().any(Option::is_some) && !given.iter().all(Option::is_some) {
        errors.push(FieldError::new(
            "train_end",
            "give train_end, valid_end and test_end together, or none",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let (events, _) = tenant_events(&state, ctx.tenant_id, None).await?;
    let Some(last) = events.iter().map(|e| e.at).max() else {
        return Err(ApiError::invalid(
            "events",
            "the tenant has no events of identified customers",
        ));
    };
    let window = match (body.train_end, body.valid_end, body.test_end) {
        (Some(a), Some(b), Some(c)) => (a, b, c),
        _ => pipeline::default_window(last, horizon),
    };
    let config = pipeline::config(&hyper, horizon, window);
    // The same check the job makes, so a tenant without enough data hears it now.
    tokio::task::spawn_blocking(move || {
        pipeline::dataset(&events, &config, min_positive).map(|_| ())
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(|e| match e {
        pipeline::TrainError::Data(d) => ApiError::invalid(d.field, d.message),
        pipeline::TrainError::Internal(m) => ApiError::internal(m),
    })?;
    let spec = TrainSpec {
        task: body.task,
        horizon_days: horizon,
        hyper,
        min_positive,
        window: Some(window),
    };
    let payload = serde_json::to_value(&spec).map_err(ApiError::internal)?;
    let job = queue::enqueue(
        &state.pool,
        &NewJob::new(ctx.tenant_id, TRAIN_MODEL, payload),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Stored model versions (without weights), oldest first.
#[utoipa::path(
    get, path = "/v1/profiling/models", tag = TAG,
    params(PageParams),
    responses((status = 200, description = "A page of model versions", body = Page<Model>)),
    security(("api_key" = []))
)]
async fn list_models(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Model>>> {
    let limit = page.limit()?;
    let rows = db::list(
        &state.pool,
        ctx.tenant_id,
        page.after()?,
        i64::from(limit) + 1,
    )
    .await?;
    let items = rows
        .into_iter()
        .map(to_model)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Page::from_rows(items, limit, |m| m.id)))
}

#[utoipa::path(
    get, path = "/v1/profiling/models/{id}", tag = TAG,
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, description = "The version with its evaluation", body = Model),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_model(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Model>> {
    let row = db::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("model".into()))?;
    Ok(Json(to_model(row)?))
}

/// Makes this version the active one of its task (rolling back is activating an older
/// one), whether or not it beat the baselines.
#[utoipa::path(
    post, path = "/v1/profiling/models/{id}/activate", tag = TAG,
    params(("id" = Uuid, Path, description = "Model id")),
    responses(
        (status = 200, description = "Now active", body = Model),
        (status = 404, description = "No such model", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn activate_model(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Model>> {
    ctx.require(Role::Writer)?;
    let row = db::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("model".into()))?;
    let mut tx = state.pool.begin().await?;
    db::activate(&mut tx, ctx.tenant_id, id, &row.task).await?;
    tx.commit().await?;
    let row = db::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("model".into()))?;
    Ok(Json(to_model(row)?))
}

#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TaskParams {
    /// `purchase` (default) or `next_event`.
    pub task: Option<Task>,
}

/// Scores every customer with the active model as a job: the score lands in the traits
/// `purchase_propensity` (0 to 1) or `next_event` (a class name), usable in segments,
/// prompts and decisioning.
#[utoipa::path(
    post, path = "/v1/profiling/models/score", tag = TAG,
    request_body = TaskParams,
    responses(
        (status = 202, description = "The scoring job", body = Job),
        (status = 409, description = "No active model for the task", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn score_customers(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(body): Json<TaskParams>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    ctx.require(Role::Writer)?;
    let task = body.task.unwrap_or(Task::Purchase);
    if db::active(&state.pool, ctx.tenant_id, task.as_str())
        .await?
        .is_none()
    {
        return Err(ApiError::Conflict(format!(
            "no active {} model: train one or activate a version",
            task.as_str()
        )));
    }
    let job = queue::enqueue(
        &state.pool,
        &NewJob::new(
            ctx.tenant_id,
            SCORE_MODEL,
            serde_json::json!({"task": task}),
        ),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Influence {
    pub kind: String,
    pub at: DateTime<Utc>,
    pub category: Option<String>,
    pub channel: Option<String>,
    /// How much the score drops (negative: rises) when this event is removed from the
    /// customer's history (from the window the LSTM reads and from the history features).
    pub effect: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Prediction {
    pub customer_id: Uuid,
    pub model_id: Uuid,
    pub task: Task,
    /// Purchase probability within the horizon, or the probability of `next_event`.
    pub score: f64,
    /// The most likely next event type (next-event task).
    pub next_event: Option<String>,
    /// The recent events that moved the score most (occlusion), strongest first.
    pub influences: Vec<Influence>,
}

/// Scores one customer now with the active model and explains the score: each recent
/// event is hidden in turn (replaced by padding) and the change in score reported.
#[utoipa::path(
    get, path = "/v1/profiling/customers/{id}/prediction", tag = TAG,
    params(("id" = Uuid, Path, description = "Customer id"), TaskParams),
    responses(
        (status = 200, description = "Score and explanation", body = Prediction),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No active model for the task", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn customer_prediction(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Query(params): Query<TaskParams>,
) -> ApiResult<Json<Prediction>> {
    let task = params.task.unwrap_or(Task::Purchase);
    let (model, weights) = db::active(&state.pool, ctx.tenant_id, task.as_str())
        .await?
        .ok_or_else(|| ApiError::Conflict(format!("no active {} model", task.as_str())))?;
    if crate::db::customers::get(&state.pool, ctx.tenant_id, id)
        .await?
        .is_none()
    {
        return Err(ApiError::NotFound("customer".into()));
    }
    let (events, _) = tenant_events(&state, ctx.tenant_id, Some(id)).await?;
    let loaded = Loaded::from_row(&model)?;
    let now = Utc::now();
    let result =
        tokio::task::spawn_blocking(move || explain(&loaded, &weights, &events, now, task))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
    Ok(Json(Prediction {
        customer_id: id,
        model_id: model.id,
        task,
        score: result.0,
        next_event: result.1,
        influences: result.2,
    }))
}

/// What scoring needs of a stored version.
pub struct Loaded {
    pub hyper: Hyper,
    pub vocab: Vocabulary,
    pub classes: Vec<String>,
}

impl Loaded {
    pub fn from_row(r: &db::ModelRow) -> ApiResult<Loaded> {
        Ok(Loaded {
            hyper: serde_json::from_value(r.hyper.clone()).map_err(ApiError::internal)?,
            vocab: serde_json::from_value(r.vocabulary.clone()).map_err(ApiError::internal)?,
            classes: serde_json::from_value(r.classes.clone()).map_err(ApiError::internal)?,
        })
    }

    pub fn outputs(&self, task: Task) -> usize {
        match task {
            Task::Purchase => 1,
            Task::NextEvent => self.classes.len(),
        }
    }
}

type Explained = (f64, Option<String>, Vec<Influence>);

fn explain(
    m: &Loaded,
    weights: &[u8],
    events: &[EventRecord],
    now: DateTime<Utc>,
    task: Task,
) -> Result<Explained, String> {
    let seq = m.hyper.seq_len;
    // The events the window shows: the last `seq` before now.
    let mut before: Vec<usize> = (0..events.len()).filter(|&i| events[i].at < now).collect();
    before.sort_by_key(|&i| events[i].at);
    let window = &before[before.len().saturating_sub(seq)..];
    // Row 0: the history as is; row 1 + j: without the window's event j (gone from the
    // window and from the whole-history features alike).
    let (mut batch, first) = dataset::encode(events, &m.vocab, seq, now);
    let mut features = vec![first];
    for &i in window {
        let rest: Vec<EventRecord> = events
            .iter()
            .enumerate()
            .filter(|&(k, _)| k != i)
            .map(|(_, e)| e.clone())
            .collect();
        let (tokens, f) = dataset::encode(&rest, &m.vocab, seq, now);
        batch.extend(tokens);
        features.push(f);
    }
    let outputs = m.outputs(task);
    let scores = crate::learn::predict(
        weights,
        &batch,
        &features,
        m.vocab.size(),
        outputs,
        &m.hyper,
        task,
    )?;
    let (class, base) = match task {
        Task::Purchase => (None, scores.first().copied().unwrap_or(0.0)),
        Task::NextEvent => {
            let row = &scores[..outputs.min(scores.len())];
            let (k, p) = crate::learn::model::argmax(row).unwrap_or((0, 0.0));
            (Some(k), p)
        }
    };
    let mut influences: Vec<Influence> = window
        .iter()
        .enumerate()
        .filter_map(|(j, &i)| {
            let without = match class {
                None => *scores.get(1 + j)?,
                Some(k) => *scores.get((1 + j) * outputs + k)?,
            };
            let e = &events[i];
            Some(Influence {
                kind: e.kind.clone(),
                at: e.at,
                category: e.category.clone(),
                channel: e.channel.clone(),
                effect: base - without,
            })
        })
        .collect();
    influences.sort_by(|a, b| b.effect.abs().total_cmp(&a.effect.abs()));
    influences.truncate(5);
    Ok((
        base,
        class.and_then(|k| m.classes.get(k).cloned()),
        influences,
    ))
}
