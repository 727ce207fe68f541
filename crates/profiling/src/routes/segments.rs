//! `/v1/profiling/segments`: saved rule-based audiences, their members and a preview.
//! Membership is evaluated against the live profiles, so it follows every event at once.

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::{FieldError, Problem},
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::segments as db,
    domain::segment::{self, Rule},
    state::AppState,
};

pub const TAG: &str = "segments";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_segment, list_segments))
        .routes(routes!(preview_segment))
        .routes(routes!(get_segment, delete_segment))
        .routes(routes!(segment_members))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "name": "Engaged champions", "description": "Top RFM customers who accept email",
    "rule": {"all": [
        {"field": "rfm.segment", "op": "in", "value": ["champions", "loyal"]},
        {"field": "consent.email", "op": "eq", "value": true},
        {"event": "email_open", "within_days": 30, "op": "gte", "count": 1}
    ]}
}))]
pub struct CreateSegment {
    pub name: String,
    pub description: Option<String>,
    /// `all` / `any` / `not` over field conditions (`field`, `op`, `value`) and event
    /// conditions (`event`, `within_days`, `op`, `count`). Fields: see the project docs.
    #[schema(value_type = Object)]
    pub rule: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Segment {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[schema(value_type = Object)]
    pub rule: serde_json::Value,
    /// Members right now.
    pub member_count: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Member {
    pub customer_id: Uuid,
    pub external_id: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    #[schema(value_type = Object)]
    pub rule: serde_json::Value,
    /// How many members to show (0 to 100, default 10).
    pub sample: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Preview {
    pub count: i64,
    pub sample: Vec<Member>,
}

fn parse_rule(value: &serde_json::Value) -> ApiResult<Rule> {
    segment::parse(value).map_err(|e| ApiError::Validation(vec![e]))
}

async fn to_segment(state: &AppState, tenant_id: Uuid, row: db::SegmentRow) -> ApiResult<Segment> {
    let rule = parse_rule(&row.rule)?;
    Ok(Segment {
        member_count: db::count(&state.pool, tenant_id, &rule).await?,
        id: row.id,
        name: row.name,
        description: row.description,
        rule: row.rule,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// Saves a segment after validating its rule.
#[utoipa::path(
    post, path = "/v1/profiling/segments", tag = TAG,
    request_body = CreateSegment,
    responses(
        (status = 201, description = "Saved", body = Segment),
        (status = 409, description = "A segment of that name exists", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid rule: the path of the bad part is named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn create_segment(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(body): Json<CreateSegment>,
) -> ApiResult<(StatusCode, Json<Segment>)> {
    ctx.require(Role::Writer)?;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(ApiError::Validation(vec![FieldError::new(
            "name",
            "must be 1 to 200 characters",
        )]));
    }
    parse_rule(&body.rule)?;
    let row = db::insert(
        &state.pool,
        ctx.tenant_id,
        name,
        body.description.as_deref(),
        &body.rule,
    )
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            ApiError::Conflict(format!("a segment named `{name}` exists"))
        }
        _ => e.into(),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(to_segment(&state, ctx.tenant_id, row).await?),
    ))
}

/// Saved segments with their current member counts.
#[utoipa::path(
    get, path = "/v1/profiling/segments", tag = TAG,
    params(PageParams),
    responses((status = 200, description = "A page of segments", body = Page<Segment>)),
    security(("api_key" = []))
)]
async fn list_segments(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Segment>>> {
    let limit = page.limit()?;
    let rows = db::list(
        &state.pool,
        ctx.tenant_id,
        page.after()?,
        i64::from(limit) + 1,
    )
    .await?;
    let mut items = Vec::with_capacity(rows.len());
    for row in rows {
        items.push(to_segment(&state, ctx.tenant_id, row).await?);
    }
    Ok(Json(Page::from_rows(items, limit, |s| s.id)))
}

/// How many customers a rule selects now, with a sample, before saving it.
#[utoipa::path(
    post, path = "/v1/profiling/segments/preview", tag = TAG,
    request_body = PreviewRequest,
    responses(
        (status = 200, description = "Count and sample", body = Preview),
        (status = 422, description = "Invalid rule", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn preview_segment(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(body): Json<PreviewRequest>,
) -> ApiResult<Json<Preview>> {
    let rule = parse_rule(&body.rule)?;
    let sample = body.sample.unwrap_or(10);
    if sample > 100 {
        return Err(ApiError::invalid("sample", "must be 0 to 100"));
    }
    let count = db::count(&state.pool, ctx.tenant_id, &rule).await?;
    let members = db::members(&state.pool, ctx.tenant_id, &rule, None, i64::from(sample)).await?;
    Ok(Json(Preview {
        count,
        sample: members
            .into_iter()
            .map(|(customer_id, external_id)| Member {
                customer_id,
                external_id,
            })
            .collect(),
    }))
}

/// One segment with its current member count.
#[utoipa::path(
    get, path = "/v1/profiling/segments/{id}", tag = TAG,
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The segment", body = Segment),
        (status = 404, description = "No such segment", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_segment(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Segment>> {
    let row = db::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("segment".into()))?;
    Ok(Json(to_segment(&state, ctx.tenant_id, row).await?))
}

/// Deletes a segment.
#[utoipa::path(
    delete, path = "/v1/profiling/segments/{id}", tag = TAG,
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such segment", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn delete_segment(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<StatusCode> {
    ctx.require(Role::Writer)?;
    if db::delete(&state.pool, ctx.tenant_id, id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("segment".into()))
    }
}

/// The segment's members now, in id order.
#[utoipa::path(
    get, path = "/v1/profiling/segments/{id}/members", tag = TAG,
    params(("id" = Uuid, Path), PageParams),
    responses(
        (status = 200, description = "A page of members", body = Page<Member>),
        (status = 404, description = "No such segment", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn segment_members(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Member>>> {
    let limit = page.limit()?;
    let row = db::get(&state.pool, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("segment".into()))?;
    let rule = parse_rule(&row.rule)?;
    let rows = db::members(
        &state.pool,
        ctx.tenant_id,
        &rule,
        page.after()?,
        i64::from(limit) + 1,
    )
    .await?;
    let members: Vec<Member> = rows
        .into_iter()
        .map(|(customer_id, external_id)| Member {
            customer_id,
            external_id,
        })
        .collect();
    Ok(Json(Page::from_rows(members, limit, |m| m.customer_id)))
}
