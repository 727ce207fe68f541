//! `/v1/metrics/outcomes`: what happened after a decision. Each outcome names the decision
//! that caused it; conversions update the arm's posterior in the same transaction.

use std::collections::{BTreeMap, HashMap};

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Duration, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    batch::{BatchResult, ItemResult, ItemStatus},
    error::{FieldError, Problem},
    extract::{Json, item_from_value},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::{
        decisions::{ArmDelta, add_to_arms},
        outcomes as db,
    },
    state::AppState,
};

pub const TAG: &str = "outcomes";
pub const MAX_BATCH: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(record_outcome))
        .routes(routes!(record_outcomes))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeType {
    Delivered,
    Opened,
    Clicked,
    Converted,
    Unsubscribed,
}

impl OutcomeType {
    fn as_str(self) -> &'static str {
        match self {
            OutcomeType::Delivered => "delivered",
            OutcomeType::Opened => "opened",
            OutcomeType::Clicked => "clicked",
            OutcomeType::Converted => "converted",
            OutcomeType::Unsubscribed => "unsubscribed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "decision_id": "0193a0c4-5b1e-7c3a-9f00-2b7c1d9e4a10", "type": "converted",
    "revenue": 42.5, "occurred_at": "2026-11-28T10:00:00Z"
}))]
pub struct OutcomeInput {
    pub decision_id: Uuid,
    #[serde(rename = "type")]
    pub kind: OutcomeType,
    /// Revenue of a conversion (only with `converted`; 0 or more).
    pub revenue: Option<f64>,
    /// When it happened (default: now); not in the future.
    pub occurred_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OutcomeBatch {
    /// Up to 1,000 outcomes.
    #[schema(value_type = Vec<OutcomeInput>)]
    pub items: Vec<serde_json::Value>,
}

/// Field checks that need no database; `prefix` names the item (`items[3].`).
fn check(input: &OutcomeInput, prefix: &str, now: DateTime<Utc>) -> Vec<FieldError> {
    let mut errors = Vec::new();
    match (input.kind, input.revenue) {
        (OutcomeType::Converted, Some(r)) if !(r.is_finite() && r >= 0.0) => errors.push(
            FieldError::new(format!("{prefix}revenue"), "must be a number of at least 0"),
        ),
        (kind, Some(_)) if kind != OutcomeType::Converted => errors.push(FieldError::new(
            format!("{prefix}revenue"),
            "only a `converted` outcome carries revenue",
        )),
        _ => {}
    }
    if input
        .occurred_at
        .is_some_and(|t| t > now + Duration::minutes(5))
    {
        errors.push(FieldError::new(
            format!("{prefix}occurred_at"),
            "is in the future",
        ));
    }
    errors
}

fn same(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        (None, None) => true,
        _ => false,
    }
}

/// Validates and records outcomes in one transaction; returns one result per item.
async fn record(
    state: &AppState,
    tenant_id: Uuid,
    items: Vec<(usize, OutcomeInput)>,
    mut results: Vec<ItemResult>,
    single: bool,
) -> ApiResult<Vec<ItemResult>> {
    let now = Utc::now();
    let ids: Vec<Uuid> = items.iter().map(|(_, o)| o.decision_id).collect();
    let mut tx = state.pool.begin().await?;
    let decisions: HashMap<Uuid, db::DecisionRef> = db::decisions(&mut *tx, tenant_id, &ids)
        .await?
        .into_iter()
        .map(|d| (d.id, d))
        .collect();
    let existing: HashMap<(Uuid, String), db::OutcomeRow> = db::existing(&mut *tx, tenant_id, &ids)
        .await?
        .into_iter()
        .map(|o| ((o.decision_id, o.kind.clone()), o))
        .collect();
    let mut fresh: Vec<(usize, db::OutcomeRow)> = Vec::new();
    for (index, input) in items {
        let prefix = if single {
            String::new()
        } else {
            format!("items[{index}].")
        };
        let reject = |message: &str, field: &str| ItemResult {
            index,
            status: ItemStatus::Rejected,
            id: Some(input.decision_id),
            errors: vec![FieldError::new(format!("{prefix}{field}"), message)],
        };
        let Some(decision) = decisions.get(&input.decision_id) else {
            results.push(reject("no such decision", "decision_id"));
            continue;
        };
        let kind = input.kind.as_str();
        let revenue = match input.kind {
            OutcomeType::Converted => Some(input.revenue.unwrap_or(0.0)),
            _ => None,
        };
        let key = (input.decision_id, kind.to_owned());
        let earlier = existing.get(&key).map(|o| o.revenue).or_else(|| {
            fresh
                .iter()
                .find(|(_, o)| o.decision_id == input.decision_id && o.kind == kind)
                .map(|(_, o)| o.revenue)
        });
        if let Some(earlier) = earlier {
            if same(earlier, revenue) {
                results.push(ItemResult {
                    index,
                    status: ItemStatus::Duplicate,
                    id: Some(input.decision_id),
                    errors: vec![],
                });
            } else {
                results.push(reject(
                    "this decision already has a different outcome of this type",
                    "type",
                ));
            }
            continue;
        }
        fresh.push((
            index,
            db::OutcomeRow {
                decision_id: input.decision_id,
                kind: kind.to_owned(),
                campaign_id: decision.campaign_id,
                revenue,
                occurred_at: input.occurred_at.unwrap_or(now),
            },
        ));
    }
    if !fresh.is_empty() {
        let rows: Vec<db::OutcomeRow> = fresh.iter().map(|(_, r)| r.clone()).collect();
        let written: std::collections::HashSet<(Uuid, String)> =
            db::insert(&mut tx, tenant_id, &rows)
                .await?
                .into_iter()
                .collect();
        // Conversions of sent (not holdout) decisions feed their arm's posterior.
        let mut arms: BTreeMap<Uuid, BTreeMap<(String, String, Uuid), ArmDelta>> = BTreeMap::new();
        let mut campaigns: Vec<Uuid> = Vec::new();
        for (index, row) in &fresh {
            let was_written = written.contains(&(row.decision_id, row.kind.clone()));
            results.push(ItemResult {
                index: *index,
                status: if was_written {
                    ItemStatus::Created
                } else {
                    ItemStatus::Duplicate
                },
                id: Some(row.decision_id),
                errors: vec![],
            });
            if !was_written {
                continue;
            }
            campaigns.push(row.campaign_id);
            let Some(d) = decisions.get(&row.decision_id) else {
                continue;
            };
            if row.kind == "converted"
                && !d.holdout
                && let (Some(channel), Some(variant)) = (&d.channel, d.variant_id)
            {
                let r = row.revenue.unwrap_or(0.0);
                let e = arms
                    .entry(d.campaign_id)
                    .or_default()
                    .entry((d.context.clone(), channel.clone(), variant))
                    .or_insert_with(|| ArmDelta {
                        context: d.context.clone(),
                        channel: channel.clone(),
                        variant_id: variant,
                        ..ArmDelta::default()
                    });
                e.conversions += 1;
                e.revenue += r;
                e.revenue_sq += r * r;
            }
        }
        for (campaign, deltas) in arms {
            let deltas: Vec<ArmDelta> = deltas.into_values().collect();
            add_to_arms(&mut tx, tenant_id, campaign, &deltas).await?;
        }
        campaigns.sort_unstable();
        campaigns.dedup();
        if !campaigns.is_empty() {
            db::bump(&mut tx, tenant_id, &campaigns).await?;
        }
    }
    tx.commit().await?;
    results.sort_by_key(|r| r.index);
    Ok(results)
}

/// Records one outcome. The same outcome sent again is answered 200 `duplicate` and
/// changes nothing; a different outcome of the same type for the decision is a 409.
#[utoipa::path(
    post, path = "/v1/metrics/outcomes", tag = TAG,
    request_body = OutcomeInput,
    responses(
        (status = 201, description = "Recorded", body = ItemResult),
        (status = 200, description = "Already recorded (a retry); nothing changed", body = ItemResult),
        (status = 404, description = "No such decision", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The decision already has a different outcome of this type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn record_outcome(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(input): Json<OutcomeInput>,
) -> ApiResult<(StatusCode, Json<ItemResult>)> {
    ctx.require(Role::Writer)?;
    let errors = check(&input, "", Utc::now());
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut results = record(&state, ctx.tenant_id, vec![(0, input)], vec![], true).await?;
    let result = results
        .pop()
        .ok_or_else(|| ApiError::internal("no result for the outcome"))?;
    match result.status {
        ItemStatus::Created => Ok((StatusCode::CREATED, Json(result))),
        ItemStatus::Rejected => {
            let message = result
                .errors
                .first()
                .map(|e| e.message.clone())
                .unwrap_or_default();
            if result.errors.iter().any(|e| e.field == "decision_id") {
                Err(ApiError::NotFound("decision".into()))
            } else {
                Err(ApiError::Conflict(message))
            }
        }
        _ => Ok((StatusCode::OK, Json(result))),
    }
}

/// Records up to 1,000 outcomes; each item is created, a duplicate (retry), or rejected
/// with the field at fault (unknown decision, conflicting repeat, bad revenue).
#[utoipa::path(
    post, path = "/v1/metrics/outcomes/batch", tag = TAG,
    request_body = OutcomeBatch,
    responses(
        (status = 200, description = "Per-item results", body = BatchResult),
        (status = 422, description = "Empty or oversize batch", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id, items = batch.items.len()))]
async fn record_outcomes(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(batch): Json<OutcomeBatch>,
) -> ApiResult<Json<BatchResult>> {
    ctx.require(Role::Writer)?;
    if batch.items.is_empty() || batch.items.len() > MAX_BATCH {
        return Err(ApiError::invalid(
            "items",
            format!("must hold 1 to {MAX_BATCH} outcomes"),
        ));
    }
    let now = Utc::now();
    let mut rejected = Vec::new();
    let mut valid = Vec::new();
    for (index, value) in batch.items.into_iter().enumerate() {
        let prefix = format!("items[{index}].");
        match item_from_value::<OutcomeInput>(value, &prefix) {
            Ok(input) => {
                let errors = check(&input, &prefix, now);
                if errors.is_empty() {
                    valid.push((index, input));
                } else {
                    rejected.push(ItemResult {
                        index,
                        status: ItemStatus::Rejected,
                        id: None,
                        errors,
                    });
                }
            }
            Err(e) => rejected.push(ItemResult {
                index,
                status: ItemStatus::Rejected,
                id: None,
                errors: vec![e],
            }),
        }
    }
    let results = if valid.is_empty() {
        rejected
    } else {
        record(&state, ctx.tenant_id, valid, rejected, false).await?
    };
    Ok(Json(BatchResult::new(results)))
}
