//! `POST /v1/metrics/campaigns/{id}/decisions`: who gets which channel, variant and send
//! time, each choice logged with the probability it was made with.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::{FieldError, Problem},
    extract::{Json, Path},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::{campaigns as campaigns_db, decisions as db},
    decide::{self, Arm, ArmCounts, Prior},
    domain::campaign::Status,
    routes::campaigns::Loaded,
    state::AppState,
    stats::Rng,
};

pub const TAG: &str = "decisions";
pub const MAX_CUSTOMERS: usize = 1000;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(decide))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"customers": ["0193a0c4-5b1e-7c3a-9f00-2b7c1d9e4a10"]}))]
pub struct DecisionRequest {
    /// Customer ids (1 to 1000).
    pub customers: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub id: Uuid,
    pub customer_id: Uuid,
    /// In the control group: send nothing.
    pub holdout: bool,
    pub channel: Option<String>,
    pub variant_id: Option<Uuid>,
    pub variant_name: Option<String>,
    pub send_at: DateTime<Utc>,
    /// Probability with which this choice was made (logged for off-policy evaluation).
    pub probability: f64,
    /// The context the policy conditioned on (segment trait or cluster).
    pub context: String,
    pub cost: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DecisionStatus {
    /// A new decision.
    Decided,
    /// The customer had one already; it is returned unchanged.
    Existing,
    /// Nothing to send now (frequency cap, no consented channel, budget); ask again later.
    Skipped,
    /// Not a customer of the campaign's audience.
    Rejected,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionItem {
    pub index: usize,
    pub customer_id: Uuid,
    pub status: DecisionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// Why it was skipped: `frequency_cap`, `no_consented_channel` or `budget_exhausted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DecisionBatch {
    pub decided: usize,
    pub existing: usize,
    pub skipped: usize,
    pub rejected: usize,
    pub items: Vec<DecisionItem>,
}

fn to_decision(r: &db::DecisionRow, names: &HashMap<Uuid, String>) -> Decision {
    Decision {
        id: r.id,
        customer_id: r.customer_id,
        holdout: r.holdout,
        channel: r.channel.clone(),
        variant_id: r.variant_id,
        variant_name: r.variant_id.and_then(|v| names.get(&v).cloned()),
        send_at: r.send_at,
        probability: r.probability,
        context: r.context.clone(),
        cost: r.cost,
    }
}

fn consents(e: &db::Eligibility, channel: &str) -> bool {
    match channel {
        "email" => e.consent_email,
        "sms" => e.consent_sms,
        "push" => e.consent_push,
        // Paid media and social reach audiences, not contact details.
        _ => true,
    }
}

/// Decides for a batch of customers. Per customer: holdout (drawn when the audience was
/// frozen), or the (channel, variant) drawn from Thompson-sampling probabilities over the
/// arms the customer may receive (consented channels, active variants, within budget),
/// and a send time at the customer's best hour. Asking again returns the same decision.
#[utoipa::path(
    post, path = "/v1/metrics/campaigns/{id}/decisions", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id")),
    request_body = DecisionRequest,
    responses(
        (status = 200, description = "One item per customer, in request order", body = DecisionBatch),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The campaign is not running", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty or oversized list", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id, campaign = %id))]
async fn decide(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Json(body): Json<DecisionRequest>,
) -> ApiResult<Json<DecisionBatch>> {
    ctx.require(Role::Writer)?;
    if body.customers.is_empty() || body.customers.len() > MAX_CUSTOMERS {
        return Err(ApiError::invalid(
            "customers",
            format!("must hold 1 to {MAX_CUSTOMERS} customer ids"),
        ));
    }
    let tenant_id = ctx.tenant_id;
    let now = Utc::now();
    let mut tx = state.pool.begin().await?;
    let row = campaigns_db::lock(&mut tx, tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::NotFound("campaign".into()))?;
    let c = Loaded::new(row)?;
    if c.status != Status::Running {
        return Err(ApiError::Conflict(format!(
            "the campaign is {}, not running",
            c.status.as_str()
        )));
    }
    if c.row.ends_at.is_some_and(|e| e <= now) {
        return Err(ApiError::Conflict(
            "the campaign's schedule has ended".into(),
        ));
    }

    let mut unique: Vec<Uuid> = body.customers.clone();
    unique.sort_unstable();
    unique.dedup();
    let eligibility: HashMap<Uuid, db::Eligibility> =
        db::eligibility(&mut *tx, tenant_id, id, &unique)
            .await?
            .into_iter()
            .map(|e| (e.customer_id, e))
            .collect();
    let existing: HashMap<Uuid, db::DecisionRow> = db::existing(&mut *tx, tenant_id, id, &unique)
        .await?
        .into_iter()
        .map(|d| (d.customer_id, d))
        .collect();
    let outsiders: Vec<Uuid> = unique
        .iter()
        .filter(|c| !eligibility.contains_key(c))
        .copied()
        .collect();
    let known: HashSet<Uuid> = if outsiders.is_empty() {
        HashSet::new()
    } else {
        db::known_customers(&mut *tx, tenant_id, &outsiders)
            .await?
            .into_iter()
            .collect()
    };
    let recent: HashMap<Uuid, i64> = match (c.row.frequency_cap, c.row.frequency_window_hours) {
        (Some(_), Some(hours)) => db::recent_sends(
            &mut *tx,
            tenant_id,
            &unique,
            now - Duration::hours(i64::from(hours)),
        )
        .await?
        .into_iter()
        .collect(),
        _ => HashMap::new(),
    };
    let variants: Vec<campaigns_db::VariantRow> =
        campaigns_db::variants(&mut *tx, tenant_id, id).await?;
    let names: HashMap<Uuid, String> = variants.iter().map(|v| (v.id, v.name.clone())).collect();
    let stats = db::arm_stats(&mut *tx, tenant_id, id).await?;
    let pooled: HashMap<String, ArmCounts> = db::pooled_by_channel(&mut *tx, tenant_id, Some(id))
        .await?
        .into_iter()
        .collect();

    // Arms per context, in a fixed order: channels as configured x active variants.
    let goal = c.goal();
    let active: Vec<&campaigns_db::VariantRow> =
        variants.iter().filter(|v| v.status == "active").collect();
    let counts: HashMap<(&str, &str, Uuid), &ArmCounts> = stats
        .iter()
        .map(|s| {
            (
                (s.context.as_str(), s.channel.as_str(), s.variant_id),
                &s.counts,
            )
        })
        .collect();
    let contexts: Vec<String> = {
        let mut set: Vec<String> = unique
            .iter()
            .filter_map(|c| eligibility.get(c))
            .filter(|e| !e.holdout)
            .map(|e| e.context.clone())
            .collect();
        set.sort();
        set.dedup();
        set
    };
    let empty = ArmCounts::default();
    let mut arms_by_context: BTreeMap<String, Vec<Arm>> = BTreeMap::new();
    for context in &contexts {
        let mut arms = Vec::new();
        for ch in &c.channels {
            let prior = pooled.get(&ch.channel).map_or(Prior::FLAT, Prior::pooled);
            for v in &active {
                let n = counts
                    .get(&(context.as_str(), ch.channel.as_str(), v.id))
                    .copied()
                    .unwrap_or(&empty);
                arms.push(Arm::new(&ch.channel, v.id, n, &prior, goal, ch.cost));
            }
        }
        arms_by_context.insert(context.clone(), arms);
    }

    let seed = c.row.seed as u64;
    let exploration = c.optimisation.exploration;
    let not_before = c.row.starts_at.map_or(now, |s| s.max(now));
    let deadline = c.row.ends_at;
    let budget_left = c.row.budget.map(|b| b - c.row.spent);
    let cap = c.row.frequency_cap.map(i64::from);
    let holdout_share = c.row.holdout_share;
    let requested = body.customers.clone();
    let prepared = (eligibility, existing, known, recent, arms_by_context);
    // The sampling is CPU work (a few milliseconds per batch): keep it off the async workers.
    let (items, new_rows) = tokio::task::spawn_blocking(move || {
        let (eligibility, existing, known, recent, arms_by_context) = prepared;
        let mut policy = Policy::new(&arms_by_context, exploration, seed);
        let mut remaining = budget_left;
        let mut seen = HashSet::new();
        let mut items = Vec::with_capacity(requested.len());
        let mut new_rows: Vec<db::DecisionRow> = Vec::new();
        for (index, customer_id) in requested.into_iter().enumerate() {
            let item =
                |status, decision: Option<Decision>, reason: Option<&str>, errors| DecisionItem {
                    index,
                    customer_id,
                    status,
                    decision,
                    reason: reason.map(str::to_owned),
                    errors,
                };
            if !seen.insert(customer_id) {
                items.push(item(
                    DecisionStatus::Rejected,
                    None,
                    None,
                    vec![FieldError::new(
                        format!("customers[{index}]"),
                        "is listed twice",
                    )],
                ));
                continue;
            }
            if let Some(d) = existing.get(&customer_id) {
                items.push(item(
                    DecisionStatus::Existing,
                    Some(to_decision(d, &HashMap::new())),
                    None,
                    vec![],
                ));
                continue;
            }
            let Some(e) = eligibility.get(&customer_id) else {
                let message = if known.contains(&customer_id) {
                    "is not in the campaign's audience"
                } else {
                    "is not a customer"
                };
                items.push(item(
                    DecisionStatus::Rejected,
                    None,
                    None,
                    vec![FieldError::new(format!("customers[{index}]"), message)],
                ));
                continue;
            };
            let best_hour = e.best_hour.and_then(|h| u32::try_from(h).ok());
            let send_at = decide::send_time(best_hour, not_before, deadline);
            if e.holdout {
                let row = db::DecisionRow {
                    id: Uuid::now_v7(),
                    campaign_id: id,
                    customer_id,
                    holdout: true,
                    context: e.context.clone(),
                    channel: None,
                    variant_id: None,
                    send_at,
                    // The holdout is drawn by a hash of the seed and the customer with this
                    // probability when the audience is frozen.
                    probability: holdout_share,
                    candidates: vec![],
                    cost: 0.0,
                    decided_at: now,
                };
                items.push(item(
                    DecisionStatus::Decided,
                    Some(to_decision(&row, &HashMap::new())),
                    None,
                    vec![],
                ));
                new_rows.push(row);
                continue;
            }
            if let Some(cap) = cap
                && recent.get(&customer_id).copied().unwrap_or(0) >= cap
            {
                items.push(item(
                    DecisionStatus::Skipped,
                    None,
                    Some("frequency_cap"),
                    vec![],
                ));
                continue;
            }
            let arms = arms_by_context
                .get(&e.context)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let consented: Vec<usize> = (0..arms.len())
                .filter(|&i| consents(e, &arms[i].channel))
                .collect();
            if consented.is_empty() {
                items.push(item(
                    DecisionStatus::Skipped,
                    None,
                    Some("no_consented_channel"),
                    vec![],
                ));
                continue;
            }
            let eligible: Vec<usize> = consented
                .into_iter()
                .filter(|&i| remaining.is_none_or(|r| arms[i].cost <= r + 1e-9))
                .collect();
            if eligible.is_empty() {
                items.push(item(
                    DecisionStatus::Skipped,
                    None,
                    Some("budget_exhausted"),
                    vec![],
                ));
                continue;
            }
            let probabilities = policy.probabilities(&e.context, &eligible);
            let mut rng = Rng::new(decide::seed_for(seed, customer_id));
            let pick = decide::draw(&probabilities, rng.next_f64());
            let Some((&arm_index, &p)) = eligible.get(pick).zip(probabilities.get(pick)) else {
                continue;
            };
            let arm = &arms[arm_index];
            if let Some(r) = remaining.as_mut() {
                *r -= arm.cost;
            }
            let row = db::DecisionRow {
                id: Uuid::now_v7(),
                campaign_id: id,
                customer_id,
                holdout: false,
                context: e.context.clone(),
                channel: Some(arm.channel.clone()),
                variant_id: Some(arm.variant_id),
                send_at,
                probability: p,
                candidates: eligible.iter().map(|&i| arms[i].key()).collect(),
                cost: arm.cost,
                decided_at: now,
            };
            items.push(item(
                DecisionStatus::Decided,
                Some(to_decision(&row, &HashMap::new())),
                None,
                vec![],
            ));
            new_rows.push(row);
        }
        (items, new_rows)
    })
    .await
    .map_err(ApiError::internal)?;

    if !new_rows.is_empty() {
        db::insert(&mut tx, tenant_id, &new_rows).await?;
        let mut arms: BTreeMap<(String, String, Uuid), db::ArmDelta> = BTreeMap::new();
        let mut cost = 0.0;
        for r in new_rows.iter().filter(|r| !r.holdout) {
            if let (Some(ch), Some(v)) = (&r.channel, r.variant_id) {
                let e = arms
                    .entry((r.context.clone(), ch.clone(), v))
                    .or_insert_with(|| db::ArmDelta {
                        context: r.context.clone(),
                        channel: ch.clone(),
                        variant_id: v,
                        ..db::ArmDelta::default()
                    });
                e.sends += 1;
                e.cost += r.cost;
                cost += r.cost;
            }
        }
        let arms: Vec<db::ArmDelta> = arms.into_values().collect();
        if !arms.is_empty() {
            db::add_to_arms(&mut tx, tenant_id, id, &arms).await?;
        }
        db::charge(&mut tx, tenant_id, id, cost).await?;
    }
    tx.commit().await?;

    let mut batch = DecisionBatch {
        decided: 0,
        existing: 0,
        skipped: 0,
        rejected: 0,
        items,
    };
    for item in &mut batch.items {
        if let Some(d) = item.decision.as_mut() {
            d.variant_name = d.variant_id.and_then(|v| names.get(&v).cloned());
        }
        match item.status {
            DecisionStatus::Decided => batch.decided += 1,
            DecisionStatus::Existing => batch.existing += 1,
            DecisionStatus::Skipped => batch.skipped += 1,
            DecisionStatus::Rejected => batch.rejected += 1,
        }
    }
    Ok(Json(batch))
}

/// Choice probabilities per (context, eligible arms), computed once per batch: one set of
/// Thompson draws per context, and for each subset of arms the share of draws each arm
/// of the subset wins, mixed with uniform exploration.
struct Policy<'a> {
    arms: &'a BTreeMap<String, Vec<Arm>>,
    exploration: f64,
    seed: u64,
    draws: HashMap<String, Vec<Vec<f64>>>,
    cache: HashMap<(String, Vec<usize>), Vec<f64>>,
}

impl<'a> Policy<'a> {
    fn new(arms: &'a BTreeMap<String, Vec<Arm>>, exploration: f64, seed: u64) -> Self {
        Self {
            arms,
            exploration,
            seed,
            draws: HashMap::new(),
            cache: HashMap::new(),
        }
    }

    fn probabilities(&mut self, context: &str, eligible: &[usize]) -> Vec<f64> {
        let key = (context.to_owned(), eligible.to_vec());
        if let Some(p) = self.cache.get(&key) {
            return p.clone();
        }
        let arms = self.arms.get(context).map(Vec::as_slice).unwrap_or(&[]);
        let seed = decide::seed_for_text(self.seed, context);
        let draws = self
            .draws
            .entry(context.to_owned())
            .or_insert_with(|| decide::sample_rewards(arms, decide::PROBABILITY_DRAWS, seed));
        let p = decide::subset_probabilities(draws, eligible, self.exploration);
        self.cache.insert(key, p.clone());
        p
    }
}
