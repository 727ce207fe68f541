//! Tenant-wide planning: budget allocation across channels and segments, and
//! multi-touch attribution of conversions to campaigns and channels.

use std::collections::HashMap;

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::TenantContext,
    error::{FieldError, Problem},
    extract::{Json, Query},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::{decisions as decisions_db, reports as db},
    decide::{ArmCounts, Prior},
    domain::{
        attribution::{self, Conversion, Model, Report, Touch},
        budget,
        campaign::{CHANNELS, ChannelCost, GoalKind},
    },
    state::AppState,
};

pub const TAG: &str = "planning";
pub const MAX_SEGMENTS: usize = 20;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(allocate_budget))
        .routes(routes!(attribution_report))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "budget": 1000.0, "goal": "conversion",
    "channels": [{"channel": "email", "cost": 0.002}, {"channel": "sms", "cost": 0.04}],
    "segment_ids": ["0193a0c4-5b1e-7c3a-9f00-2b7c1d9e4a10"]
}))]
pub struct BudgetRequest {
    pub budget: f64,
    /// Maximise conversions (each worth `value_per_conversion`) or revenue.
    pub goal: GoalKind,
    pub channels: Vec<ChannelCost>,
    /// Segments to split across (up to 20); absent means all customers as one group.
    pub segment_ids: Option<Vec<Uuid>>,
    /// Worth of one conversion for the conversion goal (default 1).
    pub value_per_conversion: Option<f64>,
    /// Stop spending where one more unit of money returns less than this (default 0:
    /// spend it all).
    pub min_marginal_roi: Option<f64>,
    /// Seed of the interval's posterior draws.
    pub seed: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BudgetLine {
    /// Absent for the all-customers group.
    pub segment_id: Option<Uuid>,
    pub channel: String,
    /// Customers this channel can reach in the group (consent applied).
    pub audience: i64,
    /// Posterior mean conversion rate per send used for the plan.
    pub conversion_rate: f64,
    /// Sends behind that estimate (0: the pooled prior only).
    pub evidence_sends: f64,
    pub spend: f64,
    pub sends: f64,
    pub reach: f64,
    pub expected_conversions: f64,
    pub expected_value: f64,
    pub marginal_value_per_unit: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BudgetPlan {
    pub budget: f64,
    pub spend: f64,
    pub unspent: f64,
    pub expected_conversions: f64,
    pub expected_value: f64,
    /// 90% credible intervals over the posterior of every rate.
    pub conversions_interval: [f64; 2],
    pub value_interval: [f64; 2],
    pub lines: Vec<BudgetLine>,
}

fn budget_error(e: budget::BudgetError, lines: &[(Option<Uuid>, String)]) -> ApiError {
    // Cell indices mean nothing to the client; name the segment and channel instead.
    let field = e.field().to_owned();
    let field = field
        .strip_prefix("cells[")
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(i, tail)| {
            let (seg, ch) = lines.get(i.parse::<usize>().ok()?)?;
            Some(format!(
                "{}channel {ch}{tail}",
                seg.map(|s| format!("segment {s}, ")).unwrap_or_default()
            ))
        })
        .unwrap_or(field);
    ApiError::Validation(vec![FieldError::new(field, e.message())])
}

/// Splits a budget across channels and segments to maximise expected conversions or
/// revenue: each (segment, channel) has a posterior conversion rate from the tenant's own
/// decisions and outcomes (pooled across its campaigns), and returns diminish as repeated
/// sends reach the same people. Reported with the expected outcome and its interval.
#[utoipa::path(
    post, path = "/v1/metrics/budget/allocate", tag = TAG,
    request_body = BudgetRequest,
    responses(
        (status = 200, description = "The plan", body = BudgetPlan),
        (status = 422, description = "Invalid fields, each named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn allocate_budget(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(body): Json<BudgetRequest>,
) -> ApiResult<Json<BudgetPlan>> {
    let mut errors = Vec::new();
    if !(body.budget.is_finite() && body.budget >= 0.0) {
        errors.push(FieldError::new("budget", "must be a number of at least 0"));
    }
    if body.channels.is_empty() {
        errors.push(FieldError::new(
            "channels",
            "must name at least one channel",
        ));
    }
    for (i, c) in body.channels.iter().enumerate() {
        if !CHANNELS.contains(&c.channel.as_str()) {
            errors.push(FieldError::new(
                format!("channels[{i}].channel"),
                format!("must be one of {}", CHANNELS.join(", ")),
            ));
        } else if body.channels[..i].iter().any(|o| o.channel == c.channel) {
            errors.push(FieldError::new(
                format!("channels[{i}].channel"),
                "is listed twice",
            ));
        }
        if !(c.cost.is_finite() && c.cost > 0.0) {
            errors.push(FieldError::new(
                format!("channels[{i}].cost"),
                "must be a number above 0",
            ));
        }
    }
    let value = body.value_per_conversion.unwrap_or(1.0);
    if !(value.is_finite() && value >= 0.0) {
        errors.push(FieldError::new(
            "value_per_conversion",
            "must be a number of at least 0",
        ));
    }
    let segments = body.segment_ids.clone();
    if segments
        .as_ref()
        .is_some_and(|s| s.is_empty() || s.len() > MAX_SEGMENTS)
    {
        errors.push(FieldError::new(
            "segment_ids",
            format!("must hold 1 to {MAX_SEGMENTS} segments"),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let pooled: HashMap<String, ArmCounts> =
        decisions_db::pooled_by_channel(&state.pool, ctx.tenant_id, None)
            .await?
            .into_iter()
            .collect();
    let groups: Vec<(Option<Uuid>, Option<Vec<Uuid>>)> = match segments {
        None => vec![(None, None)],
        Some(ids) => {
            let mut out = Vec::new();
            for (i, id) in ids.into_iter().enumerate() {
                let members = crate::routes::campaigns::segment_members(
                    &mut *state.pool.acquire().await?,
                    ctx.tenant_id,
                    id,
                )
                .await
                .map_err(|e| match e {
                    ApiError::Validation(_) => {
                        ApiError::invalid(format!("segment_ids[{i}]"), "no such segment")
                    }
                    other => other,
                })?;
                out.push((Some(id), Some(members)));
            }
            out
        }
    };
    let mut cells = Vec::new();
    let mut meta = Vec::new();
    let mut labels = Vec::new();
    for (segment_id, members) in &groups {
        let counts: HashMap<String, ArmCounts> =
            db::channel_counts(&state.pool, ctx.tenant_id, members.as_deref())
                .await?
                .into_iter()
                .collect();
        let (all, email, sms, push) =
            db::reachable(&state.pool, ctx.tenant_id, members.as_deref()).await?;
        for ch in &body.channels {
            let audience = match ch.channel.as_str() {
                "email" => email,
                "sms" => sms,
                "push" => push,
                _ => all,
            };
            if audience == 0 {
                continue;
            }
            let prior = pooled.get(&ch.channel).map_or(Prior::FLAT, Prior::pooled);
            let own = counts.get(&ch.channel).cloned().unwrap_or_default();
            let alpha = prior.alpha + own.conversions;
            let beta = prior.beta + (own.sends - own.conversions).max(0.0);
            let value_per_conversion = match body.goal {
                GoalKind::Conversion => value,
                GoalKind::Revenue => {
                    let k = crate::decide::VALUE_PRIOR_STRENGTH;
                    (k * prior.value_mean + own.revenue) / (k + own.conversions)
                }
            };
            cells.push(budget::Cell {
                audience: audience as f64,
                cost_per_send: ch.cost,
                alpha,
                beta,
                value_per_conversion,
            });
            meta.push((audience, own.sends));
            labels.push((*segment_id, ch.channel.clone()));
        }
    }
    if cells.is_empty() {
        return Err(ApiError::invalid(
            "segment_ids",
            "no customer can be reached on these channels",
        ));
    }
    let plan = budget::allocate(
        body.budget,
        &cells,
        body.min_marginal_roi.unwrap_or(0.0),
        2000,
        body.seed.unwrap_or(1),
    )
    .map_err(|e| budget_error(e, &labels))?;
    let lines = plan
        .cells
        .iter()
        .zip(&cells)
        .zip(meta.iter().zip(&labels))
        .map(
            |((a, cell), ((audience, evidence), (segment_id, channel)))| BudgetLine {
                segment_id: *segment_id,
                channel: channel.clone(),
                audience: *audience,
                conversion_rate: cell.conversion_rate(),
                evidence_sends: *evidence,
                spend: a.spend,
                sends: a.sends,
                reach: a.reach,
                expected_conversions: a.expected_conversions,
                expected_value: a.expected_value,
                marginal_value_per_unit: a.marginal_value_per_unit,
            },
        )
        .collect();
    Ok(Json(BudgetPlan {
        budget: body.budget,
        spend: plan.spend,
        unspent: plan.unspent,
        expected_conversions: plan.expected_conversions,
        expected_value: plan.expected_value,
        conversions_interval: [plan.conversions_interval.0, plan.conversions_interval.1],
        value_interval: [plan.value_interval.0, plan.value_interval.1],
        lines,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttributionModel {
    LastTouch,
    FirstTouch,
    Linear,
    TimeDecay,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AttributionParams {
    /// `last_touch` (default), `first_touch`, `linear` or `time_decay`.
    pub model: Option<AttributionModel>,
    /// Lookback window in days from a conversion (default 7).
    pub window_days: Option<f64>,
    /// Half-life of a touch's influence for `time_decay`, in hours (default 24).
    pub half_life_hours: Option<f64>,
    /// Conversions in [from, to] (default: the last 30 days).
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// The event that counts as a conversion (default `purchase`).
    pub event: Option<String>,
    /// Only this campaign's credit.
    pub campaign_id: Option<Uuid>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttributionLine {
    pub campaign_id: Uuid,
    pub channel: String,
    /// Fractional conversions credited.
    pub conversions: f64,
    pub revenue: f64,
    /// Messages of this campaign and channel sent in the period.
    pub touches: u64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttributionReport {
    pub model: String,
    pub window_days: f64,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Conversions of messaged customers in the period.
    pub conversions: u64,
    /// Of those, conversions with a message inside the window before them.
    pub attributed: u64,
    pub revenue: f64,
    pub attributed_revenue: f64,
    pub lines: Vec<AttributionLine>,
}

/// Credits conversion events (from the event log) to the campaigns and channels whose
/// messages preceded them within the window: last-touch, first-touch, linear or
/// time-decay.
#[utoipa::path(
    get, path = "/v1/metrics/attribution", tag = TAG,
    params(AttributionParams),
    responses(
        (status = 200, description = "Credit per campaign and channel", body = AttributionReport),
        (status = 400, description = "A parameter is out of range", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn attribution_report(
    State(state): State<AppState>,
    ctx: TenantContext,
    Query(params): Query<AttributionParams>,
) -> ApiResult<Json<AttributionReport>> {
    let bad = |e: attribution::AttributionError| ApiError::bad_request(e.field(), e.message());
    let window_days = params.window_days.unwrap_or(7.0);
    if window_days > 366.0 {
        return Err(ApiError::bad_request("window_days", "must be at most 366"));
    }
    let window = attribution::window_from_days(window_days).map_err(bad)?;
    let (name, model) = match params.model.unwrap_or(AttributionModel::LastTouch) {
        AttributionModel::LastTouch => ("last_touch", Model::LastTouch),
        AttributionModel::FirstTouch => ("first_touch", Model::FirstTouch),
        AttributionModel::Linear => ("linear", Model::Linear),
        AttributionModel::TimeDecay => (
            "time_decay",
            Model::TimeDecay {
                half_life_hours: params.half_life_hours.unwrap_or(24.0),
            },
        ),
    };
    model.validate().map_err(bad)?;
    let to = params.to.unwrap_or_else(Utc::now);
    let from = params.from.unwrap_or(to - Duration::days(30));
    if from >= to {
        return Err(ApiError::bad_request("from", "must be before `to`"));
    }
    let event = params.event.as_deref().unwrap_or("purchase");
    if event.is_empty() || event.len() > 100 {
        return Err(ApiError::bad_request(
            "event",
            "must be 1 to 100 characters",
        ));
    }
    let touches = db::touches(&state.pool, ctx.tenant_id, from - window, to).await?;
    let conversions = db::conversions(&state.pool, ctx.tenant_id, event, from, to).await?;
    // Both lists are ordered by customer: walk them together, one journey at a time.
    let mut report: Report<(Uuid, String)> = Report::new();
    let mut ti = 0;
    let mut ci = 0;
    while ti < touches.len() || ci < conversions.len() {
        let customer = match (touches.get(ti), conversions.get(ci)) {
            (Some(t), Some(c)) => t.customer_id.min(c.customer_id),
            (Some(t), None) => t.customer_id,
            (None, Some(c)) => c.customer_id,
            (None, None) => break,
        };
        let mut journey = Vec::new();
        while let Some(t) = touches.get(ti).filter(|t| t.customer_id == customer) {
            journey.push(Touch {
                at: t.at,
                key: (t.campaign_id, t.channel.clone()),
            });
            ti += 1;
        }
        let mut bought = Vec::new();
        while let Some(c) = conversions.get(ci).filter(|c| c.customer_id == customer) {
            bought.push(Conversion {
                at: c.at,
                value: c.value,
            });
            ci += 1;
        }
        report
            .add_journey(&journey, &bought, &model, window)
            .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    let lines = report
        .credits
        .iter()
        .filter(|((campaign, _), _)| params.campaign_id.is_none_or(|c| c == *campaign))
        .map(|((campaign_id, channel), credit)| AttributionLine {
            campaign_id: *campaign_id,
            channel: channel.clone(),
            conversions: credit.conversions,
            revenue: credit.value,
            touches: credit.touches,
        })
        .collect();
    Ok(Json(AttributionReport {
        model: name.into(),
        window_days,
        from,
        to,
        conversions: report.conversions,
        attributed: report.attributed,
        revenue: report.value,
        attributed_revenue: report.attributed_value,
        lines,
    }))
}
