//! Tenants and their API keys in `platform.tenants` / `platform.api_keys`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

pub struct TenantRow {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub struct KeyRow {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

pub async fn insert_tenant(
    db: impl PgExecutor<'_>,
    id: Uuid,
    name: &str,
) -> Result<TenantRow, sqlx::Error> {
    sqlx::query_as!(
        TenantRow,
        "INSERT INTO platform.tenants (id, name) VALUES ($1, $2) RETURNING id, name, created_at",
        id,
        name
    )
    .fetch_one(db)
    .await
}

pub async fn get_tenant(
    db: impl PgExecutor<'_>,
    id: Uuid,
) -> Result<Option<TenantRow>, sqlx::Error> {
    sqlx::query_as!(
        TenantRow,
        "SELECT id, name, created_at FROM platform.tenants WHERE id = $1",
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn list_tenants(
    db: impl PgExecutor<'_>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<TenantRow>, sqlx::Error> {
    sqlx::query_as!(
        TenantRow,
        "SELECT id, name, created_at FROM platform.tenants
         WHERE ($1::uuid IS NULL OR id > $1) ORDER BY id LIMIT $2",
        after,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn insert_key(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
    name: &str,
    role: &str,
    prefix: &str,
    hash: &[u8],
) -> Result<KeyRow, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "INSERT INTO platform.api_keys (tenant_id, id, name, role, prefix, key_hash)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, name, role, prefix, created_at, last_used_at, revoked_at",
        tenant_id,
        id,
        name,
        role,
        prefix,
        hash
    )
    .fetch_one(db)
    .await
}

pub async fn list_keys(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "SELECT id, name, role, prefix, created_at, last_used_at, revoked_at FROM platform.api_keys
         WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3",
        tenant_id,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// Marks a key revoked; `None` when the tenant has no such key.
pub async fn revoke_key(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<KeyRow>, sqlx::Error> {
    sqlx::query_as!(
        KeyRow,
        "UPDATE platform.api_keys SET revoked_at = coalesce(revoked_at, now())
         WHERE tenant_id = $1 AND id = $2
         RETURNING id, name, role, prefix, created_at, last_used_at, revoked_at",
        tenant_id,
        id
    )
    .fetch_optional(db)
    .await
}
