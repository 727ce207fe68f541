//! `/v1/content/templates/{channel}`: the tenant's Liquid templates, one per channel, used when
//! generated copy fails its guardrails.

use std::collections::BTreeMap;

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::{FieldError, Problem},
    extract::{Json, Path},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    db,
    domain::{channel::Channel, template},
    state::AppState,
};

pub const TAG: &str = "templates";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates))
        .routes(routes!(get_template, put_template, delete_template))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateBody {
    /// Liquid source per field of the channel, e.g. {"subject": "...", "body": "..."}.
    /// Variables: customer.first_name, customer.interests, customer.segment, products[i]
    /// (product_id, title, price, currency, category), recommendations, brief.
    pub fields: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Template {
    pub channel: String,
    pub fields: BTreeMap<String, String>,
    /// `tenant`, or `builtin` when the tenant has not set one.
    pub source: &'static str,
    pub updated_at: Option<DateTime<Utc>>,
}

fn channel(raw: &str) -> Result<Channel, ApiError> {
    raw.parse::<Channel>()
        .map_err(|e| ApiError::invalid("channel", e))
}

/// Every channel's template: the tenant's where set, the built-in one otherwise.
#[utoipa::path(
    get, path = "/v1/content/templates", tag = TAG,
    responses((status = 200, description = "One template per channel", body = Vec<Template>)),
    security(("api_key" = []))
)]
async fn list_templates(
    State(state): State<AppState>,
    ctx: TenantContext,
) -> ApiResult<Json<Vec<Template>>> {
    let stored = db::templates(&state.pool, ctx.tenant_id).await?;
    let out = Channel::ALL
        .iter()
        .map(|c| match stored.iter().find(|t| t.channel == c.as_str()) {
            Some(t) => Template {
                channel: t.channel.clone(),
                fields: t.fields.clone(),
                source: "tenant",
                updated_at: Some(t.updated_at),
            },
            None => Template {
                channel: c.as_str().to_string(),
                fields: template::builtin(*c),
                source: "builtin",
                updated_at: None,
            },
        })
        .collect();
    Ok(Json(out))
}

#[utoipa::path(
    get, path = "/v1/content/templates/{channel}", tag = TAG,
    params(("channel" = String, Path, description = "email, sms, push, ad or social")),
    responses(
        (status = 200, description = "The channel's template", body = Template),
        (status = 422, description = "Unknown channel", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_template(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(raw): Path<String>,
) -> ApiResult<Json<Template>> {
    let c = channel(&raw)?;
    Ok(Json(
        match db::template(&state.pool, ctx.tenant_id, c.as_str()).await? {
            Some(t) => Template {
                channel: t.channel,
                fields: t.fields,
                source: "tenant",
                updated_at: Some(t.updated_at),
            },
            None => Template {
                channel: c.as_str().to_string(),
                fields: template::builtin(c),
                source: "builtin",
                updated_at: None,
            },
        },
    ))
}

/// Sets the channel's template (every field of the channel, valid Liquid).
#[utoipa::path(
    put, path = "/v1/content/templates/{channel}", tag = TAG,
    params(("channel" = String, Path, description = "email, sms, push, ad or social")),
    request_body = TemplateBody,
    responses(
        (status = 200, description = "Replaced", body = Template),
        (status = 201, description = "Created", body = Template),
        (status = 422, description = "Unknown channel, missing field or invalid Liquid", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn put_template(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(raw): Path<String>,
    Json(body): Json<TemplateBody>,
) -> ApiResult<(StatusCode, Json<Template>)> {
    ctx.require(Role::Writer)?;
    let c = channel(&raw)?;
    let bad = template::validate(c, &body.fields);
    if !bad.is_empty() {
        return Err(ApiError::Validation(
            bad.into_iter()
                .map(|(f, m)| FieldError::new(f, m))
                .collect(),
        ));
    }
    let (created, updated_at) =
        db::put_template(&state.pool, ctx.tenant_id, c.as_str(), &body.fields).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(Template {
            channel: c.as_str().to_string(),
            fields: body.fields,
            source: "tenant",
            updated_at: Some(updated_at),
        }),
    ))
}

/// Removes the tenant's template; the built-in one applies again.
#[utoipa::path(
    delete, path = "/v1/content/templates/{channel}", tag = TAG,
    params(("channel" = String, Path, description = "email, sms, push, ad or social")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "The tenant had no template for the channel", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn delete_template(
    State(state): State<AppState>,
    ctx: TenantContext,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    ctx.require(Role::Writer)?;
    let c = channel(&raw)?;
    if db::delete_template(&state.pool, ctx.tenant_id, c.as_str()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("template".into()))
    }
}
