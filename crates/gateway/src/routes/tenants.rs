//! `/v1/admin/tenants`: the operator creates tenants and manages every tenant's keys; a
//! tenant's `admin` key manages its own tenant's keys. Another tenant looks absent (404).

use axum::{extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Caller, Role, generate_key},
    error::{FieldError, Problem},
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{db::tenants as db, state::GatewayState};

pub const TAG: &str = "admin";

pub fn routes() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Display name, 1 to 200 characters.
    #[schema(example = "Acme Outdoor")]
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    pub id: Uuid,
    #[schema(example = "Acme Outdoor")]
    pub name: String,
    pub created_at: DateTime<Utc>,
}

impl From<db::TenantRow> for Tenant {
    fn from(r: db::TenantRow) -> Self {
        Tenant {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// What the key is for, 1 to 100 characters.
    #[schema(example = "web shop backend")]
    pub name: String,
    pub role: Role,
}

/// A key as listed: never its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// The first characters of the key.
    #[schema(example = "mk_Xq3v9Ab")]
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TryFrom<db::KeyRow> for ApiKey {
    type Error = ApiError;
    fn try_from(r: db::KeyRow) -> Result<Self, ApiError> {
        Ok(ApiKey {
            role: Role::parse(&r.role)
                .ok_or_else(|| ApiError::internal("stored key has an unknown role"))?,
            id: r.id,
            name: r.name,
            prefix: r.prefix,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
        })
    }
}

/// A new key: `key` is shown this once and cannot be retrieved again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct IssuedKey {
    #[schema(example = "mk_Xq3v9AbQ0kz7m1Lw4uYc8tR2pN6sE5dH0jG9fB3aV1x")]
    pub key: String,
    #[serde(flatten)]
    pub details: ApiKey,
}

fn require_operator(caller: &Caller) -> ApiResult<()> {
    match caller {
        Caller::Operator => Ok(()),
        Caller::Tenant(_) => Err(ApiError::Forbidden(
            "only the operator key manages tenants".into(),
        )),
    }
}

/// The operator, or an admin key of this tenant. Keys of other tenants get 404.
fn require_tenant_admin(caller: &Caller, tenant_id: Uuid) -> ApiResult<()> {
    match caller {
        Caller::Operator => Ok(()),
        Caller::Tenant(ctx) if ctx.tenant_id != tenant_id => {
            Err(ApiError::NotFound("tenant".into()))
        }
        Caller::Tenant(ctx) => ctx.require(Role::Admin),
    }
}

fn validate_name(field: &str, name: &str, max: usize) -> ApiResult<String> {
    let trimmed = name.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(ApiError::Validation(vec![FieldError::new(
            field,
            format!("must be 1 to {max} characters"),
        )]));
    }
    Ok(trimmed.to_owned())
}

/// Creates a tenant (operator only).
#[utoipa::path(
    post, path = "/v1/admin/tenants", tag = TAG,
    request_body = CreateTenant,
    responses(
        (status = 201, description = "Created", body = Tenant),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn create_tenant(
    State(state): State<GatewayState>,
    caller: Caller,
    Json(body): Json<CreateTenant>,
) -> ApiResult<(StatusCode, Json<Tenant>)> {
    require_operator(&caller)?;
    let name = validate_name("name", &body.name, 200)?;
    let row = db::insert_tenant(&state.pool, Uuid::now_v7(), &name).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Lists tenants (operator only).
#[utoipa::path(
    get, path = "/v1/admin/tenants", tag = TAG,
    params(PageParams),
    responses(
        (status = 200, description = "A page of tenants", body = Page<Tenant>),
        (status = 403, description = "Not the operator key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn list_tenants(
    State(state): State<GatewayState>,
    caller: Caller,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<Tenant>>> {
    require_operator(&caller)?;
    let limit = page.limit()?;
    let rows = db::list_tenants(&state.pool, page.after()?, i64::from(limit) + 1).await?;
    let rows: Vec<Tenant> = rows.into_iter().map(Into::into).collect();
    Ok(Json(Page::from_rows(rows, limit, |t| t.id)))
}

/// One tenant (operator, or the tenant's own admin key).
#[utoipa::path(
    get, path = "/v1/admin/tenants/{tenant_id}", tag = TAG,
    params(("tenant_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The tenant", body = Tenant),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn get_tenant(
    State(state): State<GatewayState>,
    caller: Caller,
    Path(tenant_id): Path<Uuid>,
) -> ApiResult<Json<Tenant>> {
    require_tenant_admin(&caller, tenant_id)?;
    let row = db::get_tenant(&state.pool, tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant".into()))?;
    Ok(Json(row.into()))
}

/// Issues a key for the tenant. The secret is in this response only.
#[utoipa::path(
    post, path = "/v1/admin/tenants/{tenant_id}/keys", tag = TAG,
    params(("tenant_id" = Uuid, Path)),
    request_body = CreateKey,
    responses(
        (status = 201, description = "Issued; store `key` now", body = IssuedKey),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or role", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn create_key(
    State(state): State<GatewayState>,
    caller: Caller,
    Path(tenant_id): Path<Uuid>,
    Json(body): Json<CreateKey>,
) -> ApiResult<(StatusCode, Json<IssuedKey>)> {
    require_tenant_admin(&caller, tenant_id)?;
    let name = validate_name("name", &body.name, 100)?;
    db::get_tenant(&state.pool, tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("tenant".into()))?;
    let key = generate_key()?;
    let row = db::insert_key(
        &state.pool,
        tenant_id,
        Uuid::now_v7(),
        &name,
        body.role.as_str(),
        &key.prefix,
        &key.hash,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKey {
            key: key.secret,
            details: row.try_into()?,
        }),
    ))
}

/// The tenant's keys, revoked ones included, without secrets.
#[utoipa::path(
    get, path = "/v1/admin/tenants/{tenant_id}/keys", tag = TAG,
    params(("tenant_id" = Uuid, Path), PageParams),
    responses(
        (status = 200, description = "A page of keys", body = Page<ApiKey>),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn list_keys(
    State(state): State<GatewayState>,
    caller: Caller,
    Path(tenant_id): Path<Uuid>,
    Query(page): Query<PageParams>,
) -> ApiResult<Json<Page<ApiKey>>> {
    require_tenant_admin(&caller, tenant_id)?;
    let limit = page.limit()?;
    let rows = db::list_keys(&state.pool, tenant_id, page.after()?, i64::from(limit) + 1).await?;
    let keys = rows
        .into_iter()
        .map(ApiKey::try_from)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(Json(Page::from_rows(keys, limit, |k| k.id)))
}

/// Revokes a key at once in this process (within the key cache TTL elsewhere).
#[utoipa::path(
    delete, path = "/v1/admin/tenants/{tenant_id}/keys/{key_id}", tag = TAG,
    params(("tenant_id" = Uuid, Path), ("key_id" = Uuid, Path)),
    responses(
        (status = 200, description = "The revoked key", body = ApiKey),
        (status = 404, description = "No such key", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
async fn revoke_key(
    State(state): State<GatewayState>,
    caller: Caller,
    Path((tenant_id, key_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<Json<ApiKey>> {
    require_tenant_admin(&caller, tenant_id)?;
    let row = db::revoke_key(&state.pool, tenant_id, key_id)
        .await?
        .ok_or_else(|| ApiError::NotFound("key".into()))?;
    state.auth.verifier.evict_key(key_id);
    Ok(Json(row.try_into()?))
}
