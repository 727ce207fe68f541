//! `/v1/profiling/customers/{id}/profile` and merging customers.

use std::collections::BTreeMap;

use axum::extract::State;
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::Problem,
    extract::{Json, Path},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db::{clusters, clv, customers, profiles},
    domain::{
        profile::{self, RfmSegment},
        value,
    },
    ingest,
    routes::customers::Customer,
    state::AppState,
};

pub const TAG: &str = "profiles";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_profile))
        .routes(routes!(merge_customers))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rfm {
    /// 1 (worst) to 5 (best), quintiles among the tenant's buyers; lower recency is better.
    pub r: u8,
    pub f: u8,
    pub m: u8,
    pub segment: RfmSegment,
}

/// What Mercato knows about a customer's behaviour, kept current as events arrive.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Profile {
    pub customer_id: Uuid,
    pub event_count: i64,
    /// Days since the last purchase; absent for customers who never bought.
    pub recency_days: Option<f64>,
    /// Number of purchases.
    pub frequency: i64,
    /// Total revenue.
    pub monetary: f64,
    pub average_order_value: Option<f64>,
    /// Absent until the customer has bought.
    pub rfm: Option<Rfm>,
    pub first_purchase_at: Option<DateTime<Utc>>,
    pub last_purchase_at: Option<DateTime<Utc>>,
    pub last_activity_at: Option<DateTime<Utc>>,
    /// The channel with the most opens and clicks.
    pub preferred_channel: Option<String>,
    /// Hour of day (UTC, 0-23) with the most opens and clicks.
    pub best_send_hour: Option<u8>,
    pub top_categories: Vec<String>,
    pub top_products: Vec<String>,
    /// Behavioural cluster from the latest clustering run.
    pub cluster: Option<i32>,
    /// Lifetime value from the tenant's fitted model (or the pooled prior before a fit).
    pub value: Option<CustomerValue>,
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CustomerValue {
    /// Probability the customer is still active (BG/NBD).
    pub probability_alive: f64,
    pub expected_purchases_90d: f64,
    /// Discounted value of the next twelve months (Gamma-Gamma spend, 1% a month).
    pub predicted_clv_12m: f64,
    /// `tenant` when the tenant's own fit was used, `prior` before the first fit.
    pub model: String,
}

fn counts(value: &serde_json::Value) -> BTreeMap<String, i64> {
    value
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()? as i64)))
                .collect()
        })
        .unwrap_or_default()
}

impl Profile {
    fn empty(customer_id: Uuid) -> Self {
        Profile {
            customer_id,
            event_count: 0,
            recency_days: None,
            frequency: 0,
            monetary: 0.0,
            average_order_value: None,
            rfm: None,
            first_purchase_at: None,
            last_purchase_at: None,
            last_activity_at: None,
            preferred_channel: None,
            best_send_hour: None,
            top_categories: Vec::new(),
            top_products: Vec::new(),
            cluster: None,
            value: None,
            updated_at: None,
        }
    }

    fn from_row(row: profiles::ProfileRow, now: DateTime<Utc>) -> Self {
        let recency_days = row
            .last_purchase_at
            .map(|t| (now - t).num_milliseconds() as f64 / 86_400_000.0);
        let rfm = match (
            recency_days,
            &row.recency_cuts,
            &row.frequency_cuts,
            &row.monetary_cuts,
        ) {
            (Some(days), Some(rc), Some(fc), Some(mc)) if row.purchase_count > 0 => {
                let r = profile::quintile_score(days, rc, true);
                let f = profile::quintile_score(row.purchase_count as f64, fc, false);
                let m = profile::quintile_score(row.revenue_total, mc, false);
                Some(Rfm {
                    r,
                    f,
                    m,
                    segment: RfmSegment::from_scores(r, f),
                })
            }
            _ => None,
        };
        Profile {
            customer_id: row.customer_id,
            event_count: row.event_count,
            recency_days,
            frequency: row.purchase_count,
            monetary: row.revenue_total,
            average_order_value: (row.purchase_count > 0)
                .then(|| row.revenue_total / row.purchase_count as f64),
            rfm,
            first_purchase_at: row.first_purchase_at,
            last_purchase_at: row.last_purchase_at,
            last_activity_at: row.last_event_at,
            preferred_channel: profile::preferred_channel(&counts(&row.channel_engagement)),
            best_send_hour: profile::best_hour(&row.hour_engagement),
            top_categories: profile::top(&counts(&row.category_counts), 5),
            top_products: profile::top(&counts(&row.product_counts), 5),
            cluster: None,
            value: None,
            updated_at: Some(row.updated_at),
        }
    }
}

/// The customer's profile: RFM and its named segment, value, interests, best channel and hour.
#[utoipa::path(
    get, path = "/v1/profiling/customers/{id}/profile", tag = TAG,
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The profile", body = Profile),
        (status = 404, description = "No such customer", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn get_profile(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Profile>> {
    match profiles::get(&state.pool, ctx.tenant_id, id).await? {
        Some(row) => {
            let now = Utc::now();
            let weeks =
                |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_seconds() as f64 / 604_800.0;
            let value = match (row.first_purchase_at, row.last_purchase_at) {
                (Some(first), Some(last)) if row.purchase_count > 0 => {
                    let (bg, gg, model) = match clv::get(&state.pool, ctx.tenant_id).await? {
                        Some(m) => {
                            let (bg, gg) = m.params();
                            (bg, gg, "tenant")
                        }
                        None => (value::PRIOR_BGNBD, value::PRIOR_GAMMA_GAMMA, "prior"),
                    };
                    let aov = row.revenue_total / row.purchase_count as f64;
                    let v = value::customer_value(
                        &bg,
                        &gg,
                        (row.purchase_count - 1) as f64,
                        weeks(first, last),
                        weeks(first, now),
                        aov,
                    );
                    Some(CustomerValue {
                        probability_alive: v.probability_alive,
                        expected_purchases_90d: v.expected_purchases_90d,
                        predicted_clv_12m: v.predicted_clv_12m,
                        model: model.to_owned(),
                    })
                }
                _ => None,
            };
            let cluster = clusters::of_customer(&state.pool, ctx.tenant_id, id).await?;
            Ok(Json(Profile {
                value,
                cluster,
                ..Profile::from_row(row, now)
            }))
        }
        None => {
            customers::get(&state.pool, ctx.tenant_id, id)
                .await?
                .ok_or_else(|| ApiError::NotFound("customer".into()))?;
            Ok(Json(Profile::empty(id)))
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// The customer merged into this one and then removed.
    pub source_id: Uuid,
}

/// Merges another customer into this one in one transaction: events, identities and
/// aliases move over, missing contact fields are filled, and consent per channel is kept
/// only where both records gave it (a merge never widens consent).
#[utoipa::path(
    post, path = "/v1/profiling/customers/{id}/merge", tag = TAG,
    params(("id" = Uuid, Path, description = "The surviving customer")),
    request_body = MergeRequest,
    responses(
        (status = 200, description = "The merged customer", body = Customer),
        (status = 404, description = "Either customer does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A customer cannot merge into itself", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn merge_customers(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Json(body): Json<MergeRequest>,
) -> ApiResult<Json<Customer>> {
    ctx.require(Role::Writer)?;
    if body.source_id == id {
        return Err(ApiError::invalid(
            "source_id",
            "must differ from the surviving customer",
        ));
    }
    let mut tx = state.pool.begin().await?;
    if !customers::merge(&mut tx, ctx.tenant_id, id, body.source_id).await? {
        return Err(ApiError::NotFound("customer".into()));
    }
    ingest::rebuild_profiles(&mut tx, ctx.tenant_id, &[id]).await?;
    let merged = customers::get(&mut *tx, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::internal("merged customer vanished"))?;
    tx.commit().await?;
    Ok(Json(merged.into()))
}
