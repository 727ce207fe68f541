//! `POST /v1/content/campaigns/{id}/variants`: variants for a metrics campaign written from a
//! brief, as a job; each generated variant joins the campaign with its provenance (and the
//! brief, so the campaign's optimiser can ask for a fresh one when it pauses a loser).

use std::sync::Arc;

use axum::{extract::State, http::StatusCode};
use mercato_metrics::domain::campaign::{self as metrics_campaign, VariantInput};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::Problem,
    extract::{Json, Path},
    jobs::queue::{self, Job, NewJob},
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    routes::generate::{
        GenerateRequest, Plan, SamplingRequest, Source, VoiceRequest, plan, write_variant,
    },
    state::AppState,
};

pub const TAG: &str = "generation";
/// The job kind (the metrics optimiser names it too).
pub const CAMPAIGN_VARIANTS: &str = mercato_metrics::jobs::CONTENT_CAMPAIGN_VARIANTS;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate_campaign_variants))
}

/// The brief campaign variants are written from.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignBrief {
    /// One of the campaign's channels.
    pub channel: String,
    pub brief: String,
    /// Variants to write (1 to 5).
    pub count: usize,
    #[serde(default)]
    pub product_ids: Vec<String>,
    #[serde(default)]
    pub voice: VoiceRequest,
    pub language: Option<String>,
    pub max_attempts: Option<usize>,
    #[serde(default)]
    pub sampling: SamplingRequest,
}

impl CampaignBrief {
    fn request(&self) -> GenerateRequest {
        GenerateRequest {
            customer_id: None,
            profile: None,
            channel: self.channel.clone(),
            brief: self.brief.clone(),
            product_ids: self.product_ids.clone(),
            voice: self.voice.clone(),
            language: self.language.clone(),
            variants: Some(self.count),
            max_attempts: self.max_attempts,
            sampling: self.sampling.clone(),
        }
    }
}

/// Writes `count` variants for the campaign from the brief in the background; those that pass
/// every guardrail are added to the campaign (source `generated`, with provenance).
#[utoipa::path(
    post, path = "/v1/content/campaigns/{id}/variants", tag = TAG,
    params(("id" = Uuid, Path, description = "Metrics campaign id")),
    request_body = CampaignBrief,
    responses(
        (status = 202, description = "The job writing the variants", body = Job),
        (status = 404, description = "No such campaign", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The campaign is completed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid brief, or a channel the campaign does not use", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn generate_campaign_variants(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(id): Path<Uuid>,
    Json(body): Json<CampaignBrief>,
) -> ApiResult<(StatusCode, Json<Job>)> {
    ctx.require(Role::Writer)?;
    plan(&state, ctx.tenant_id, body.request()).await?;
    let metrics = mercato_metrics::AppState {
        pool: state.pool.clone(),
        settings: state.settings.clone(),
    };
    let c = mercato_metrics::routes::campaigns::room_for_variants(
        &metrics,
        ctx.tenant_id,
        id,
        body.count,
        "count",
    )
    .await?;
    if !c.channels.iter().any(|ch| ch.channel == body.channel) {
        return Err(ApiError::invalid(
            "channel",
            "is not one of the campaign's channels",
        ));
    }
    let payload = json!({"campaign_id": id, "request": body, "count": body.count});
    let job = queue::enqueue(
        &state.pool,
        &NewJob::new(ctx.tenant_id, CAMPAIGN_VARIANTS, payload),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// The job's work: write, check, add. Returns what was added and what was rejected.
pub async fn write_campaign_variants(
    state: &AppState,
    tenant_id: Uuid,
    payload: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let campaign_id: Uuid = payload["campaign_id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or("payload lacks campaign_id")?;
    let brief: CampaignBrief =
        serde_json::from_value(payload["request"].clone()).map_err(|e| e.to_string())?;
    let count = payload["count"]
        .as_u64()
        .unwrap_or(brief.count as u64)
        .clamp(1, 5) as usize;
    let mut base: Plan = plan(state, tenant_id, brief.request())
        .await
        .map_err(|e| e.to_string())?;
    if let Some(old) = payload.get("replaces").and_then(|r| r.get("content")) {
        // A fresh variant replacing one that lost: say what not to repeat.
        base.brief = format!(
            "{}\nA previous version performed poorly; write something clearly different from it: {}",
            base.brief, old
        );
    }
    let base = Arc::new(base);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        set.spawn(write_variant(state.engine.clone(), base.clone(), i, None));
    }
    let mut added = Vec::new();
    let mut rejected = Vec::new();
    while let Some(r) = set.join_next().await {
        let v = r.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        if v.source != Source::Model || !v.passed {
            rejected.push(json!({"index": v.index, "checks": v.checks, "text": v.rejected_text}));
            continue;
        }
        let mut provenance = serde_json::to_value(&v.provenance).map_err(|e| e.to_string())?;
        provenance["request"] = serde_json::to_value(&brief).map_err(|e| e.to_string())?;
        if let Some(r) = payload.get("replaces") {
            provenance["replaces"] = r["variant_id"].clone();
        }
        let input = VariantInput {
            name: format!(
                "{}-{}",
                brief.channel,
                &Uuid::now_v7().simple().to_string()[24..]
            ),
            content: Some(
                v.fields
                    .iter()
                    .map(|(k, t)| (k.clone(), json!(t)))
                    .collect(),
            ),
            template_id: None,
            provenance: Some(provenance),
        };
        let mut errors = Vec::new();
        let new = metrics_campaign::validate_variant(&input, "", &mut errors);
        if !errors.is_empty() {
            rejected.push(json!({"index": v.index, "errors": errors}));
            continue;
        }
        let id = mercato_metrics::db::campaigns::insert_variant(
            &state.pool,
            tenant_id,
            campaign_id,
            &new,
        )
        .await
        .map_err(|e| e.to_string())?;
        added.push(json!({"variant_id": id, "name": input.name, "content": input.content}));
    }
    Ok(json!({"campaign_id": campaign_id, "added": added, "rejected": rejected}))
}
