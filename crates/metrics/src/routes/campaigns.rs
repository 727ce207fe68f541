//! `/v1/metrics/campaigns`: campaigns, their variants and their lifecycle.

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
    db::campaigns as db,
    domain::campaign::{
        self, CampaignInput, ChannelCost, FrequencyCap, GoalKind, Optimisation, Schedule, Status,
        VariantInput,
    },
    jobs::OPTIMISE,
    state::AppState,
};

pub const TAG: &str = "campaigns";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_campaign, list_campaigns))
        .routes(routes!(get_campaign, delete_campaign))
        .routes(routes!(add_variant))
        .routes(routes!(set_status))
        .routes(routes!(optimise_now))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Goal {
    pub kind: GoalKind,
    pub event: String,
    pub value_per_conversion: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Variant {
    pub id: Uuid,
    pub name: String,
    /// `text`, `template` or `generated`.
    pub source: String,
    #[schema(value_type = Object)]
    pub content: serde_json::Value,
    pub template_id: Option<String>,
    #[schema(value_type = Object)]
    pub provenance: serde_json::Value,
    /// `active` or `paused` (paused variants get no new decisions).
    pub status: String,
    pub paused_reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Audience {
    pub size: i64,
    pub holdout: i64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Campaign {
    pub id: Uuid,
    pub name: String,
    pub status: Status,
    pub goal: Goal,
    pub segment_id: Option<Uuid>,
    pub context_by: String,
    pub channels: Vec<ChannelCost>,
    pub variants: Vec<Variant>,
    pub holdout_share: f64,
    pub budget: Option<f64>,
    pub spent: f64,
    pub frequency_cap: Option<FrequencyCap>,
    pub schedule: Schedule,
    pub optimisation: Optimisation,
    pub seed: i64,
    /// Frozen when the campaign starts.
    pub audience: Option<Audience>,
    pub stop_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A campaign row with its typed settings.
pub struct Loaded {
    pub row: db::CampaignRow,
    pub status: Status,
    pub channels: Vec<ChannelCost>,
    pub optimisation: Optimisation,
}

impl Loaded {
    pub fn new(row: db::CampaignRow) -> ApiResult<Loaded> {
        let status = Status::parse(&row.status)
            .ok_or_else(|| ApiError::internal(format!("stored status {}", row.status)))?;
        let channels = serde_json::from_value(row.channels.clone()).map_err(ApiError::internal)?;
        let optimisation =
            serde_json::from_value(row.optimisation.clone()).map_err(ApiError::internal)?;
        Ok(Loaded {
            row,
            status,
            channels,
            optimisation,
        })
    }

    pub fn goal(&self) -> crate::decide::Goal {
        if self.row.goal == "revenue" {
            crate::decide::Goal::Revenue
        } else {
            crate::decide::Goal::Conversion {
                value: self.row.value_per_conversion,
            }
        }
    }
}

/// The campaign, or 404 (also for another tenant's).
pub async fn load(state: &AppState, tenant_id: Uuid, id: Uuid) -> ApiResult<Loaded> {
    let row = db::get(&state.pool, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("campaign".into()))?;
    Loaded::new(row)
}

fn variant(v: db::VariantRow) -> Variant {
    Variant {
        id: v.id,
        name: v.name,
        source: v.source,
        content: v.content,
        template_id: v.template_id,
        provenance: v.provenance,
        status: v.status,
        paused_reason: v.paused_reason,
        created_at: v.created_at,
    }
}

async fn to_campaign(state: &AppState, tenant_id: Uuid, c: Loaded) -> ApiResult<Campaign> {
    let variants = db::variants(&state.pool, tenant_id, c.row.id)
        .await?
        .into_iter()
        .map(variant)
        .collect();
    let audience = if c.status == Status::Draft {
        None
    } else {
        let (size, holdout) = db::audience_size(&state.pool, tenant_id, c.row.id).await?;
        Some(Audience { size, holdout })
    };
    let r = c.row;
    Ok(Campaign {
        id: r.id,
        name: r.name,
        status: c.status,
        goal: Goal {
            kind: if r.goal == "revenue" {
                GoalKind::Revenue
            } else {
                GoalKind::Conversion
            },
            event: r.conversion_event,
            value_per_conversion: r.value_per_conversion,
        },
        segment_id: r.segment_id,
        context_by: r.context_by,
        channels: c.channels,
        variants,
        holdout_share: r.holdout_share,
        budget: r.budget,
        spent: r.spent,
        frequency_cap: r
            .frequency_cap
            .zip(r.frequency_window_hours)
            .map(|(max, per_hours)| FrequencyCap { max, per_hours }),
        schedule: Schedule {
            starts_at: r.starts_at,
            ends_at: r.ends_at,
        },
        optimisation: c.optimisation,
        seed: r.seed,
        audience,
        stop_reason: r.stop_reason,
        created_at: r.created_at,
        updated_at: r.updated_at,
        started_at: r.started_at,
        completed_at: r.completed_at,
    })
}

fn random_seed() -> i64 {
    // The low bits of a v4 UUID are random; a seed need not be secret.
    (Uuid::new_v4().as_u128() as i64).abs()
}

/// Creates a campaign as a draft, with its variants.
#[utoipa::path(
    post, path = "/v1/metrics/campaigns", tag = TAG,
    request_body = CampaignInput,
    responses(
        (status = 201, description = "Created as a draft", body = Campaign),
        (status = 409, description = "A campaign of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn create_campaign(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(body): Json<CampaignInput>,
) -> ApiResult<(StatusCode, Json<Campaign>)> {
    ctx.require(Role::Writer)?;
    let new = campaign::validate(body, random_seed()).map_err(ApiError::Validation)?;
    if let Some(segment_id) = new.segment_id
        && mercato_profiling::db::segments::get(&state.pool, ctx.tenant_id, segment_id)
            .await?
            .is_none()
    {
        return Err(ApiError::invalid("segment_id", "no such segment"));
    }
    let mut tx = state.pool.begin().await?;
    let id = db::insert(&mut tx, ctx.tenant_id, &new).await?;
    tx.commit().await?;
    let c = load(&state, ctx.tenant_id, id).await?;
    Ok((
        StatusCode::CREATED,
        Json(to_campaign(&state, ctx.tenant_id, c).await?),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Only campaigns in this status.
    pub status: Option<Status>,
}

/// Lists campaigns, newest last.
#[utoipa::path(
    get, path = "/v1/metrics/campaigns", tag = TAG,
    params(ListParams),
    responses((status = 200, description = "A page of campaigns", body = Page<Campaign>)),
    security(("api_key" = []))
)]
async fn list_campaigns(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(params): Query<ListParams>,
) -> ApiResult<Json<Page<Campaign>>> {
    let page = PageParams {
        limit: params.limit,
        cursor: params.cursor,
    };
    let limit = page.limit()?;
    let rows = db::list(
        &state.pool,
        ctx.tenant_id,
        params.status.map(Status::as_str),
        page.after()?,
        i64::from(limit) + 1,
    )
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(to_campaign(&state, ctx.tenant_id, Loaded::new(row)?).await?);
    }
    Ok(Json(Page::from_rows(items, limit, |c| c.id)))
}

#[utoipa::path(
    get, path = "/v1/metrics/campaigns/{id}", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 200, description = "The campaign", body = Campaign),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_campaign(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Campaign>> {
    let c = load(&state, ctx.tenant_id, id).await?;
    Ok(Json(to_campaign(&state, ctx.tenant_id, c).await?))
}

/// Deletes a draft. A campaign that ran keeps its record (its decisions are evidence).
#[utoipa::path(
    delete, path = "/v1/metrics/campaigns/{id}", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a draft", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn delete_campaign(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    ctx.require(Role::Writer)?;
    let c = load(&state, ctx.tenant_id, id).await?;
    if !db::delete_draft(&state.pool, ctx.tenant_id, c.row.id).await? {
        return Err(ApiError::Conflict(format!(
            "the campaign is {}; only drafts can be deleted",
            c.status.as_str()
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The campaign, when `adding` more variants may join it: 409 once it is completed, 422
/// on `field` when it would hold more than [`campaign::MAX_VARIANTS`]. Shared by the
/// routes that add variants (here, and the content service's generated ones).
pub async fn room_for_variants(
    state: &AppState,
    tenant_id: Uuid,
    id: Uuid,
    adding: usize,
    field: &str,
) -> ApiResult<Loaded> {
    let c = load(state, tenant_id, id).await?;
    if c.status == Status::Completed {
        return Err(ApiError::Conflict("the campaign is completed".into()));
    }
    let existing = db::variants(&state.pool, tenant_id, id).await?.len();
    if existing + adding > campaign::MAX_VARIANTS {
        return Err(ApiError::invalid(
            field,
            format!(
                "the campaign has {existing} of at most {} variants",
                campaign::MAX_VARIANTS
            ),
        ));
    }
    Ok(c)
}

/// Adds a variant; while running it joins the decisioning at once (with the pooled prior).
#[utoipa::path(
    post, path = "/v1/metrics/campaigns/{id}/variants", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id")),
    request_body = VariantInput,
    responses(
        (status = 201, description = "Added", body = Variant),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Completed campaign, or the name is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid variant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn add_variant(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Json(body): Json<VariantInput>,
) -> ApiResult<(StatusCode, Json<Variant>)> {
    ctx.require(Role::Writer)?;
    let mut errors = Vec::new();
    let v = campaign::validate_variant(&body, "", &mut errors);
    if !errors.is_empty() {
        for e in &mut errors {
            e.field = e.field.trim_start_matches('.').to_owned();
        }
        return Err(ApiError::Validation(errors));
    }
    room_for_variants(&state, ctx.tenant_id, id, 1, "name").await?;
    let vid = db::insert_variant(&state.pool, ctx.tenant_id, id, &v)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                ApiError::Conflict(format!("a variant named `{}` exists", v.name))
            }
            _ => e.into(),
        })?;
    let row = db::variants(&state.pool, ctx.tenant_id, id)
        .await?
        .into_iter()
        .find(|r| r.id == vid)
        .ok_or_else(|| ApiError::internal("variant vanished"))?;
    Ok((StatusCode::CREATED, Json(variant(row))))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// `running` (start or resume), `paused` or `completed`.
    pub status: Status,
}

/// Moves the campaign through its lifecycle. Starting freezes the audience (segment
/// members, each with context, holdout flag, consent and pre-campaign spend) and schedules
/// the optimiser.
#[utoipa::path(
    post, path = "/v1/metrics/campaigns/{id}/status", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id")),
    request_body = StatusChange,
    responses(
        (status = 200, description = "The campaign in its new state", body = Campaign),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lifecycle does not allow this transition", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The campaign cannot start as configured (empty audience, no active variant, schedule over, no budget)", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id, campaign = %id))]
async fn set_status(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Json(body): Json<StatusChange>,
) -> ApiResult<Json<Campaign>> {
    ctx.require(Role::Writer)?;
    let mut tx = state.pool.begin().await?;
    let row = db::lock(&mut tx, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("campaign".into()))?;
    let c = Loaded::new(row)?;
    let to = body.status;
    if !c.status.can_become(to) {
        return Err(ApiError::Conflict(format!(
            "a {} campaign cannot become {}",
            c.status.as_str(),
            to.as_str()
        )));
    }
    if to == Status::Running {
        let mut errors = Vec::new();
        let variants = db::variants(&mut *tx, ctx.tenant_id, id).await?;
        if !variants.iter().any(|v| v.status == "active") {
            errors.push(FieldError::new("variants", "no active variant"));
        }
        if c.row.budget.is_some_and(|b| b <= c.row.spent) {
            errors.push(FieldError::new("budget", "nothing left to spend"));
        }
        if c.row.ends_at.is_some_and(|e| e <= Utc::now()) {
            errors.push(FieldError::new("schedule.ends_at", "is in the past"));
        }
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
        if c.status == Status::Draft {
            let members = match c.row.segment_id {
                None => None,
                Some(segment_id) => {
                    Some(segment_members(&mut tx, ctx.tenant_id, segment_id).await?)
                }
            };
            let n =
                db::snapshot_audience(&mut tx, ctx.tenant_id, &c.row, members.as_deref()).await?;
            if n == 0 {
                return Err(ApiError::invalid("segment_id", "the audience is empty"));
            }
            tracing::info!(audience = n, "campaign audience frozen");
        }
    }
    let reason = (to == Status::Completed).then_some("completed on request");
    db::set_status(&mut *tx, ctx.tenant_id, id, to.as_str(), reason).await?;
    if to == Status::Running && c.optimisation.enabled {
        schedule_optimiser(
            &mut tx,
            ctx.tenant_id,
            id,
            f64::from(c.optimisation.interval_secs),
            None,
        )
        .await?;
    }
    tx.commit().await?;
    let c = load(&state, ctx.tenant_id, id).await?;
    Ok(Json(to_campaign(&state, ctx.tenant_id, c).await?))
}

/// Every member of a profiling segment, evaluated now.
pub async fn segment_members(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    segment_id: Uuid,
) -> ApiResult<Vec<Uuid>> {
    use mercato_profiling::{db::segments, domain::segment};
    let seg = segments::get(&mut *conn, tenant_id, segment_id)
        .await?
        .ok_or_else(|| ApiError::invalid("segment_id", "the segment no longer exists"))?;
    let rule = segment::parse(&seg.rule).map_err(|e| ApiError::Validation(vec![e]))?;
    Ok(segments::all_members(conn, tenant_id, &rule).await?)
}

/// Queues the campaign's next optimisation run unless one is already waiting.
pub async fn schedule_optimiser(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    campaign_id: Uuid,
    delay_secs: f64,
    except: Option<Uuid>,
) -> Result<Option<Job>, sqlx::Error> {
    if db::has_pending_optimisation(&mut *conn, tenant_id, campaign_id, OPTIMISE, except).await? {
        return Ok(None);
    }
    let job = NewJob::new(
        tenant_id,
        OPTIMISE,
        serde_json::json!({"campaign_id": campaign_id}),
    )
    .delayed(delay_secs);
    queue::enqueue(&mut *conn, &job).await.map(Some)
}

/// Runs the optimiser now (reallocation report, pausing losing variants, stopping rules).
#[utoipa::path(
    post, path = "/v1/metrics/campaigns/{id}/optimise", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id")),
    responses(
        (status = 202, description = "The optimisation job; follow it at /v1/jobs/{id}", body = Job),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The campaign is not running", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn optimise_now(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    ctx.require(Role::Writer)?;
    let c = load(&state, ctx.tenant_id, id).await?;
    if c.status != Status::Running {
        return Err(ApiError::Conflict(format!(
            "the campaign is {}",
            c.status.as_str()
        )));
    }
    let job = queue::enqueue(
        &state.pool,
        &NewJob::new(
            ctx.tenant_id,
            OPTIMISE,
            serde_json::json!({"campaign_id": id, "reschedule": false}),
        ),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}
