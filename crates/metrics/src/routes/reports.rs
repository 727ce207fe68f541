//! Campaign metrics (snapshot and live stream), experiment analysis and off-policy
//! evaluation of a campaign's logged decisions.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    time::Duration,
};

use axum::{
    extract::State,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::Stream;
use mercato_platform::{
    ApiError, ApiResult,
    auth::TenantContext,
    error::Problem,
    extract::{Json, Path, Query},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::{campaigns as campaigns_db, decisions as decisions_db, reports as db},
    decide::{self, Arm, Prior},
    domain::{
        campaign::Status,
        report::{self, Counts, Tally},
    },
    routes::campaigns::{Loaded, load},
    state::AppState,
    stats,
};

pub const TAG: &str = "campaign results";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(campaign_metrics))
        .routes(routes!(campaign_metrics_stream))
        .routes(routes!(campaign_analysis))
        .routes(routes!(policy_evaluation))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ConfidenceParams {
    /// Confidence level of intervals (0.5 to 0.999, default 0.95).
    pub confidence: Option<f64>,
}

impl ConfidenceParams {
    fn level(&self) -> ApiResult<f64> {
        let c = self.confidence.unwrap_or(0.95);
        if !(0.5..=0.999).contains(&c) {
            return Err(ApiError::bad_request(
                "confidence",
                "must lie between 0.5 and 0.999",
            ));
        }
        Ok(c)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Slice {
    /// Variant id, channel, or day (YYYY-MM-DD), by breakdown.
    pub key: String,
    /// The variant's name, in the variant breakdown.
    pub name: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Lift {
    /// Conversion rate of those sent to minus that of the holdout.
    pub diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub p_value: f64,
    pub relative: Option<f64>,
    /// Conversions the campaign caused: diff x sends.
    pub incremental_conversions: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CampaignMetrics {
    pub campaign_id: Uuid,
    pub status: Status,
    /// Changes whenever a decision or outcome is recorded.
    pub version: i64,
    pub budget: Option<f64>,
    pub spent: f64,
    /// Everyone who was sent something.
    pub treated: Counts,
    /// The control group (sends: its size).
    pub holdout: Counts,
    /// Incremental lift of the campaign over the holdout.
    pub lift: Option<Lift>,
    pub by_variant: Vec<Slice>,
    pub by_channel: Vec<Slice>,
    pub by_day: Vec<Slice>,
}

async fn metrics_of(
    state: &AppState,
    tenant_id: Uuid,
    c: &Loaded,
    confidence: f64,
) -> ApiResult<CampaignMetrics> {
    let cells = db::cells(&state.pool, tenant_id, c.row.id).await?;
    let names: HashMap<Uuid, String> = campaigns_db::variants(&state.pool, tenant_id, c.row.id)
        .await?
        .into_iter()
        .map(|v| (v.id, v.name))
        .collect();
    let value = (c.row.goal == "conversion").then_some(c.row.value_per_conversion);
    let mut treated = Tally::default();
    let mut holdout = Tally::default();
    let mut by_variant: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_channel: BTreeMap<String, Tally> = BTreeMap::new();
    let mut by_day: BTreeMap<String, Tally> = BTreeMap::new();
    for cell in &cells {
        let t = Tally {
            sends: cell.sends,
            delivered: cell.delivered,
            opened: cell.opened,
            clicked: cell.clicked,
            converted: cell.converted,
            unsubscribed: cell.unsubscribed,
            revenue: cell.revenue,
            revenue_sq: cell.revenue_sq,
            cost: cell.cost,
        };
        if cell.holdout {
            holdout.add(&t);
            continue;
        }
        treated.add(&t);
        if let Some(v) = cell.variant_id {
            by_variant.entry(v.to_string()).or_default().add(&t);
        }
        if let Some(ch) = &cell.channel {
            by_channel.entry(ch.clone()).or_default().add(&t);
        }
        by_day
            .entry(cell.day.format("%Y-%m-%d").to_string())
            .or_default()
            .add(&t);
    }
    let slices = |m: BTreeMap<String, Tally>, named: bool| -> Vec<Slice> {
        m.into_iter()
            .map(|(key, t)| Slice {
                name: if named {
                    key.parse::<Uuid>()
                        .ok()
                        .and_then(|id| names.get(&id).cloned())
                } else {
                    None
                },
                key,
                counts: report::counts(&t, value, confidence),
            })
            .collect()
    };
    let lift = if holdout.sends > 0 && treated.sends > 0 {
        stats::two_proportion_z_test(
            holdout.converted as f64,
            holdout.sends as f64,
            treated.converted as f64,
            treated.sends as f64,
            confidence,
        )
        .ok()
        .map(|t| Lift {
            diff: t.diff,
            ci_low: t.ci_low,
            ci_high: t.ci_high,
            p_value: t.p_value,
            relative: t.relative_lift,
            incremental_conversions: t.diff * treated.sends as f64,
        })
    } else {
        None
    };
    Ok(CampaignMetrics {
        campaign_id: c.row.id,
        status: c.status,
        version: c.row.version,
        budget: c.row.budget,
        spent: c.row.spent,
        treated: report::counts(&treated, value, confidence),
        holdout: report::counts(&holdout, value, confidence),
        lift,
        by_variant: slices(by_variant, true),
        by_channel: slices(by_channel, false),
        by_day: slices(by_day, false),
    })
}

/// Sends, opens, clicks, conversions, revenue, cost, rates with intervals and ROI, for the
/// campaign and per variant, channel and day, with the lift over the holdout.
#[utoipa::path(
    get, path = "/v1/metrics/campaigns/{id}/metrics", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id"), ConfidenceParams),
    responses(
        (status = 200, description = "A snapshot", body = CampaignMetrics),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn campaign_metrics(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Query(params): Query<ConfidenceParams>,
) -> ApiResult<Json<CampaignMetrics>> {
    let confidence = params.level()?;
    let c = load(&state, ctx.tenant_id, id).await?;
    Ok(Json(
        metrics_of(&state, ctx.tenant_id, &c, confidence).await?,
    ))
}

/// Server-Sent Events: a `metrics` event with a fresh snapshot whenever decisions or
/// outcomes change the numbers (checked twice a second), until the campaign completes.
#[utoipa::path(
    get, path = "/v1/metrics/campaigns/{id}/metrics/stream", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id"), ConfidenceParams),
    responses(
        (status = 200, description = "Stream of `metrics` events", content_type = "text/event-stream", body = CampaignMetrics),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn campaign_metrics_stream(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Query(params): Query<ConfidenceParams>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let confidence = params.level()?;
    let first = load(&state, ctx.tenant_id, id).await?;
    let tenant_id = ctx.tenant_id;
    let stream = futures::stream::unfold(
        (Some(first), None::<i64>, false),
        move |(pending, last_version, finished)| {
            let state = state.clone();
            async move {
                if finished {
                    return None;
                }
                let mut campaign = pending;
                // A primary-key read of the version; the snapshot is built only on change.
                while campaign
                    .as_ref()
                    .is_none_or(|c| Some(c.row.version) == last_version)
                {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    campaign = match load(&state, tenant_id, id).await {
                        Ok(c) => Some(c),
                        Err(ApiError::NotFound(_)) => return None,
                        Err(_) => continue,
                    };
                }
                let c = campaign?;
                let done = c.status == Status::Completed;
                let snapshot = metrics_of(&state, tenant_id, &c, confidence).await.ok()?;
                let event = Event::default()
                    .event("metrics")
                    .json_data(&snapshot)
                    .unwrap_or_default();
                Some((Ok(event), (None, Some(c.row.version), done)))
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ZTest {
    pub rate_control: f64,
    pub rate_treatment: f64,
    pub diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub z: f64,
    pub p_value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TTest {
    /// Difference of mean revenue per unit (treatment - control).
    pub diff: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub t: f64,
    pub df: f64,
    pub p_value: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CupedTest {
    #[serde(flatten)]
    pub test: TTest,
    /// How much narrower (in variance) the interval is than without the covariate.
    pub variance_reduction: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SequentialTest {
    /// Mixture likelihood ratio of the mSPRT.
    pub lambda: f64,
    /// Valid at any look: min(1, 1/lambda).
    pub always_valid_p: f64,
    /// The evidence crosses 1/alpha: safe to stop now.
    pub decided: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Comparison {
    pub conversion: Option<ZTest>,
    pub revenue: Option<TTest>,
    /// Revenue test with pre-campaign spend as covariate (CUPED).
    pub revenue_cuped: Option<CupedTest>,
    /// P(treatment rate > control rate) under Beta(1 + conversions, 1 + failures).
    pub prob_beats_control: Option<f64>,
    /// Expected conversion-rate loss of shipping the treatment / keeping the control.
    pub expected_loss_treatment: Option<f64>,
    pub expected_loss_control: Option<f64>,
    pub sequential: Option<SequentialTest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VariantAnalysis {
    pub variant_id: Uuid,
    pub name: String,
    pub status: String,
    pub sends: i64,
    pub conversions: i64,
    pub revenue: f64,
    /// Probability this variant has the highest conversion rate.
    pub prob_best: Option<f64>,
    /// Against the baseline (the first variant); absent for the baseline itself.
    pub vs_baseline: Option<Comparison>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SrmCheck {
    pub observed_treated: u64,
    pub observed_holdout: u64,
    pub expected_holdout_share: f64,
    pub chi_square: f64,
    pub p_value: f64,
    /// Assignment is broken (p < 0.001): do not trust the comparisons.
    pub mismatch: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Analysis {
    pub campaign_id: Uuid,
    pub confidence: f64,
    pub baseline_variant_id: Option<Uuid>,
    pub variants: Vec<VariantAnalysis>,
    /// Everyone sent to against the holdout.
    pub vs_holdout: Option<Comparison>,
    pub srm: Option<SrmCheck>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AnalysisParams {
    /// Confidence level of intervals (0.5 to 0.999, default 0.95).
    pub confidence: Option<f64>,
    /// Standard deviation of the mSPRT's prior on the effect (default 0.01, i.e. one
    /// percentage point of conversion rate).
    pub tau: Option<f64>,
    /// Significance of the sequential test (default: the campaign's optimisation alpha).
    pub alpha: Option<f64>,
}

/// Summary of one arm of a comparison: units' conversion flags and revenue, with the
/// pre-campaign spend of each.
#[derive(Default)]
struct Group {
    n: f64,
    conversions: f64,
    revenue: Vec<f64>,
    pre: Vec<f64>,
}

impl Group {
    fn push(&mut self, u: &db::UnitRow) {
        self.n += 1.0;
        self.conversions += f64::from(u8::from(u.converted));
        self.revenue.push(u.revenue);
        self.pre.push(u.pre_spend);
    }
}

fn compare(
    control: &Group,
    treatment: &Group,
    confidence: f64,
    tau: f64,
    alpha: f64,
) -> Comparison {
    let conversion = stats::two_proportion_z_test(
        control.conversions,
        control.n,
        treatment.conversions,
        treatment.n,
        confidence,
    )
    .ok()
    .map(|t| ZTest {
        rate_control: t.rate_a,
        rate_treatment: t.rate_b,
        diff: t.diff,
        ci_low: t.ci_low,
        ci_high: t.ci_high,
        z: t.z,
        p_value: t.p_value,
    });
    let t_test = |m: stats::MeanTest| TTest {
        diff: m.diff,
        ci_low: m.ci_low,
        ci_high: m.ci_high,
        t: m.t,
        df: m.df,
        p_value: m.p_value,
    };
    let revenue = stats::summarize(&control.revenue)
        .and_then(|(ma, va, na)| {
            let (mb, vb, nb) = stats::summarize(&treatment.revenue)?;
            stats::welch_t_test(ma, va, na, mb, vb, nb, confidence)
        })
        .ok()
        .map(t_test);
    let revenue_cuped = stats::cuped_welch(
        &control.revenue,
        &control.pre,
        &treatment.revenue,
        &treatment.pre,
        confidence,
    )
    .ok()
    .map(|(m, reduction)| CupedTest {
        test: t_test(m),
        variance_reduction: reduction,
    });
    let (a_a, b_a) = (
        1.0 + control.conversions,
        1.0 + control.n - control.conversions,
    );
    let (a_b, b_b) = (
        1.0 + treatment.conversions,
        1.0 + treatment.n - treatment.conversions,
    );
    let loss = stats::expected_loss(a_a, b_a, a_b, b_b).ok();
    let sequential = stats::msprt(
        control.conversions,
        control.n,
        treatment.conversions,
        treatment.n,
        tau * tau,
        alpha,
    )
    .ok()
    .map(|s| SequentialTest {
        lambda: s.lambda,
        always_valid_p: s.always_valid_p,
        decided: s.decided,
    });
    Comparison {
        conversion,
        revenue,
        revenue_cuped,
        prob_beats_control: stats::prob_b_beats_a(a_a, b_a, a_b, b_b).ok(),
        expected_loss_treatment: loss.as_ref().map(|l| l.choose_b),
        expected_loss_control: loss.as_ref().map(|l| l.choose_a),
        sequential,
    }
}

/// The full analysis of a campaign, also used by the optimiser.
pub async fn analyse(
    state: &AppState,
    tenant_id: Uuid,
    c: &Loaded,
    confidence: f64,
    tau: f64,
    alpha: f64,
) -> ApiResult<Analysis> {
    let variants = campaigns_db::variants(&state.pool, tenant_id, c.row.id).await?;
    let units = db::units(&state.pool, tenant_id, c.row.id).await?;
    let mut by_variant: HashMap<Uuid, Group> = HashMap::new();
    let mut treated = Group::default();
    let mut holdout = Group::default();
    for u in &units {
        if u.holdout {
            holdout.push(u);
        } else {
            treated.push(u);
            if let Some(v) = u.variant_id {
                by_variant.entry(v).or_default().push(u);
            }
        }
    }
    let empty = Group::default();
    let baseline = variants.first().map(|v| v.id);
    let base_group = baseline.and_then(|b| by_variant.get(&b)).unwrap_or(&empty);
    let arms: Vec<(f64, f64)> = variants
        .iter()
        .map(|v| {
            let g = by_variant.get(&v.id).unwrap_or(&empty);
            (1.0 + g.conversions, 1.0 + g.n - g.conversions)
        })
        .collect();
    let prob_best = stats::prob_best(&arms).ok();
    let out = variants
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let g = by_variant.get(&v.id).unwrap_or(&empty);
            VariantAnalysis {
                variant_id: v.id,
                name: v.name.clone(),
                status: v.status.clone(),
                sends: g.n as i64,
                conversions: g.conversions as i64,
                revenue: g.revenue.iter().sum(),
                prob_best: prob_best.as_ref().and_then(|p| p.get(i).copied()),
                vs_baseline: (Some(v.id) != baseline)
                    .then(|| compare(base_group, g, confidence, tau, alpha)),
            }
        })
        .collect();
    let srm = (c.row.holdout_share > 0.0)
        .then(|| {
            stats::srm_check(
                &[treated.n as u64, holdout.n as u64],
                &[1.0 - c.row.holdout_share, c.row.holdout_share],
            )
            .ok()
        })
        .flatten()
        .map(|s| SrmCheck {
            observed_treated: treated.n as u64,
            observed_holdout: holdout.n as u64,
            expected_holdout_share: c.row.holdout_share,
            chi_square: s.chi_square,
            p_value: s.p_value,
            mismatch: s.mismatch,
        });
    Ok(Analysis {
        campaign_id: c.row.id,
        confidence,
        baseline_variant_id: baseline,
        variants: out,
        vs_holdout: (holdout.n > 0.0).then(|| compare(&holdout, &treated, confidence, tau, alpha)),
        srm,
    })
}

/// Experiment statistics: per variant against the baseline (z-test on conversion, Welch
/// and CUPED-adjusted Welch on revenue, Bayesian probability to beat it and expected loss,
/// the always-valid mSPRT), the probability each variant is best, the lift over the
/// holdout, and a sample-ratio-mismatch check of the holdout split.
#[utoipa::path(
    get, path = "/v1/metrics/campaigns/{id}/analysis", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id"), AnalysisParams),
    responses(
        (status = 200, description = "The analysis", body = Analysis),
        (status = 400, description = "A parameter is out of range", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn campaign_analysis(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Query(params): Query<AnalysisParams>,
) -> ApiResult<Json<Analysis>> {
    let confidence = ConfidenceParams {
        confidence: params.confidence,
    }
    .level()?;
    let tau = params.tau.unwrap_or(0.01);
    if !(tau > 0.0 && tau <= 1.0) {
        return Err(ApiError::bad_request("tau", "must lie in (0, 1]"));
    }
    let c = load(&state, ctx.tenant_id, id).await?;
    let alpha = params.alpha.unwrap_or(c.optimisation.alpha);
    if !(alpha > 0.0 && alpha < 0.5) {
        return Err(ApiError::bad_request("alpha", "must lie in (0, 0.5)"));
    }
    Ok(Json(
        analyse(&state, ctx.tenant_id, &c, confidence, tau, alpha).await?,
    ))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EstimateOut {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    /// How many logged decisions the estimate is worth.
    pub effective_sample_size: f64,
}

impl From<stats::Estimate> for EstimateOut {
    fn from(e: stats::Estimate) -> Self {
        Self {
            value: e.value,
            ci_low: e.ci_low,
            ci_high: e.ci_high,
            effective_sample_size: e.effective_sample_size,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyEstimate {
    /// `logging` (the policy that ran), `uniform` (every eligible arm equally), `best`
    /// (always the arm with the highest posterior mean reward in the context).
    pub policy: String,
    pub ips: Option<EstimateOut>,
    pub snips: Option<EstimateOut>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PolicyEvaluation {
    pub campaign_id: Uuid,
    /// `conversion` (1 per converted send) or `revenue` (revenue per send).
    pub reward: String,
    pub decisions: usize,
    /// Mean reward the logging policy actually got.
    pub observed_mean_reward: f64,
    pub policies: Vec<PolicyEstimate>,
}

/// Off-policy evaluation: what other policies would have earned per decision, estimated
/// from the logged decisions and their probabilities (IPS and self-normalised IPS).
#[utoipa::path(
    get, path = "/v1/metrics/campaigns/{id}/policy-evaluation", tag = TAG,
    params(("id" = Uuid, Path, description = "Campaign id"), ConfidenceParams),
    responses(
        (status = 200, description = "Estimates per policy", body = PolicyEvaluation),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No logged decisions yet", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn policy_evaluation(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Query(params): Query<ConfidenceParams>,
) -> ApiResult<Json<PolicyEvaluation>> {
    let confidence = params.level()?;
    let c = load(&state, ctx.tenant_id, id).await?;
    let logged = db::logged(&state.pool, ctx.tenant_id, id).await?;
    if logged.len() < 2 {
        return Err(ApiError::Conflict(
            "the campaign has fewer than 2 logged decisions".into(),
        ));
    }
    let revenue_goal = c.row.goal == "revenue";
    let rewards: Vec<f64> = logged
        .iter()
        .map(|l| {
            if revenue_goal {
                l.revenue
            } else {
                f64::from(u8::from(l.converted))
            }
        })
        .collect();
    let logging: Vec<f64> = logged.iter().map(|l| l.probability).collect();
    // Posterior mean reward per (context, arm) for the greedy policy.
    let stats_rows = decisions_db::arm_stats(&state.pool, ctx.tenant_id, id).await?;
    let cost: HashMap<&str, f64> = c
        .channels
        .iter()
        .map(|ch| (ch.channel.as_str(), ch.cost))
        .collect();
    let goal = c.goal();
    let mean: HashMap<(String, String), f64> = stats_rows
        .iter()
        .map(|s| {
            let arm = Arm::new(
                &s.channel,
                s.variant_id,
                &s.counts,
                &Prior::FLAT,
                goal,
                cost.get(s.channel.as_str()).copied().unwrap_or(0.0),
            );
            ((s.context.clone(), arm.key()), arm.mean_reward())
        })
        .collect();
    let uniform: Vec<f64> = logged
        .iter()
        .map(|l| {
            let key = decide::arm_key(&l.channel, l.variant_id);
            if l.candidates.contains(&key) {
                1.0 / l.candidates.len() as f64
            } else {
                0.0
            }
        })
        .collect();
    let best: Vec<f64> = logged
        .iter()
        .map(|l| {
            let key = decide::arm_key(&l.channel, l.variant_id);
            let top = l.candidates.iter().max_by(|a, b| {
                let ma = mean
                    .get(&(l.context.clone(), (*a).clone()))
                    .copied()
                    .unwrap_or(f64::MIN);
                let mb = mean
                    .get(&(l.context.clone(), (*b).clone()))
                    .copied()
                    .unwrap_or(f64::MIN);
                ma.total_cmp(&mb)
            });
            f64::from(u8::from(top == Some(&key)))
        })
        .collect();
    let estimate = |target: &[f64], name: &str| PolicyEstimate {
        policy: name.to_owned(),
        ips: stats::ips(&rewards, &logging, target, confidence)
            .ok()
            .map(Into::into),
        snips: stats::snips(&rewards, &logging, target, confidence)
            .ok()
            .map(Into::into),
    };
    Ok(Json(PolicyEvaluation {
        campaign_id: id,
        reward: if revenue_goal {
            "revenue"
        } else {
            "conversion"
        }
        .into(),
        decisions: logged.len(),
        observed_mean_reward: rewards.iter().sum::<f64>() / rewards.len() as f64,
        policies: vec![
            estimate(&logging, "logging"),
            estimate(&uniform, "uniform"),
            estimate(&best, "best"),
        ],
    }))
}
