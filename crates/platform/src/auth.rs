//! Who is calling: API keys, roles and the authenticated tenant context.
//!
//! A key is `mk_` followed by 43 random base64url characters. Only its sha256 is stored.
//! The gateway authenticates every `/v1` request once and puts a [`Caller`] into the request
//! extensions; handlers take a [`TenantContext`] (or [`Caller`]) as an extractor. Between
//! the gateway and a service running on its own, the caller travels on `x-mercato-*`
//! headers that count only when they come with the internal token.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    extract::{FromRequestParts, Request, State},
    http::{HeaderMap, HeaderValue, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::ApiError;

pub const KEY_PREFIX: &str = "mk_";
pub const HEADER_INTERNAL_TOKEN: &str = "x-mercato-internal-token";
pub const HEADER_TENANT: &str = "x-mercato-tenant";
pub const HEADER_ROLE: &str = "x-mercato-role";
pub const HEADER_KEY_ID: &str = "x-mercato-key-id";

/// What a key may do inside its tenant. Ordered: admin > writer > reader.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Writer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "reader" => Some(Role::Reader),
            "writer" => Some(Role::Writer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The authenticated tenant of a request. Every query of tenant data filters on `tenant_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantContext {
    pub tenant_id: Uuid,
    pub role: Role,
    pub key_id: Uuid,
}

impl TenantContext {
    /// 403 unless the key's role is at least `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this key has role `{}`; `{}` is required",
                self.role.as_str(),
                role.as_str()
            )))
        }
    }
}

/// The authenticated caller: the operator (admin key from the environment) or a tenant key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Tenant(TenantContext),
}

impl Caller {
    /// The key that rate limits count against.
    pub fn key_id(&self) -> Uuid {
        match self {
            Caller::Operator => Uuid::nil(),
            Caller::Tenant(ctx) => ctx.key_id,
        }
    }

    pub fn tenant_id(&self) -> Option<Uuid> {
        match self {
            Caller::Operator => None,
            Caller::Tenant(ctx) => Some(ctx.tenant_id),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .copied()
            .ok_or_else(|| ApiError::Unauthorized("missing API key".into()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for TenantContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Tenant(ctx) => Ok(ctx),
            Caller::Operator => Err(ApiError::Forbidden(
                "the operator key manages tenants; use a tenant's key for tenant data".into(),
            )),
        }
    }
}

/// A freshly issued key: the secret (shown once), its display prefix and stored hash.
pub struct NewKey {
    pub secret: String,
    pub prefix: String,
    pub hash: Vec<u8>,
}

pub fn generate_key() -> Result<NewKey, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    let secret = format!("{KEY_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    Ok(NewKey {
        prefix: secret.chars().take(10).collect(),
        hash: hash_key(&secret),
        secret,
    })
}

pub fn hash_key(key: &str) -> Vec<u8> {
    Sha256::digest(key.as_bytes()).to_vec()
}

/// Constant-time comparison for secrets of the same length.
fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Key hash -> the tenant it resolved to (or `None`: unknown) and when that was learnt.
type KeyCache = HashMap<Vec<u8>, (Option<TenantContext>, Instant)>;

/// Verifies bearer keys against `platform.api_keys`, remembering answers briefly so the
/// hot path needs no query. Revocation through this process evicts at once.
#[derive(Clone)]
pub struct KeyVerifier {
    pool: PgPool,
    admin_key_hash: Option<Vec<u8>>,
    ttl: Duration,
    cache: Arc<Mutex<KeyCache>>,
}

impl KeyVerifier {
    pub fn new(pool: PgPool, admin_key: Option<&SecretString>, ttl: Duration) -> Self {
        Self {
            pool,
            admin_key_hash: admin_key.map(|k| hash_key(k.expose_secret())),
            ttl,
            cache: Arc::default(),
        }
    }

    /// Resolves a bearer key to its caller; `Unauthorized` when unknown or revoked.
    pub async fn verify(&self, key: &str) -> Result<Caller, ApiError> {
        let hash = hash_key(key);
        if let Some(admin) = &self.admin_key_hash
            && secrets_equal(admin, &hash)
        {
            return Ok(Caller::Operator);
        }
        if let Some(cached) = self.cached(&hash) {
            return cached.map(Caller::Tenant).ok_or_else(invalid_key);
        }
        let row = sqlx::query!(
            r#"UPDATE platform.api_keys SET last_used_at = now()
               WHERE key_hash = $1 AND revoked_at IS NULL
               RETURNING tenant_id, id, role"#,
            &hash
        )
        .fetch_optional(&self.pool)
        .await?;
        let context = row.and_then(|r| {
            Role::parse(&r.role).map(|role| TenantContext {
                tenant_id: r.tenant_id,
                role,
                key_id: r.id,
            })
        });
        self.remember(hash, context);
        context.map(Caller::Tenant).ok_or_else(invalid_key)
    }

    /// Forgets every cached answer for the key, after revocation.
    pub fn evict_key(&self, key_id: Uuid) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|_, (ctx, _)| ctx.is_none_or(|c| c.key_id != key_id));
        }
    }

    fn cached(&self, hash: &[u8]) -> Option<Option<TenantContext>> {
        let cache = self.cache.lock().ok()?;
        let (ctx, at) = cache.get(hash)?;
        (at.elapsed() < self.ttl).then_some(*ctx)
    }

    fn remember(&self, hash: Vec<u8>, ctx: Option<TenantContext>) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            // Unknown keys are cached too (so a flood of bad keys costs no queries), but the
            // map is bounded: past the cap, expired entries go first, then everything.
            if cache.len() >= 10_000 {
                let ttl = self.ttl;
                cache.retain(|_, (_, at)| at.elapsed() < ttl);
                if cache.len() >= 10_000 {
                    cache.clear();
                }
            }
            cache.insert(hash, (ctx, Instant::now()));
        }
    }
}

fn invalid_key() -> ApiError {
    ApiError::Unauthorized("the API key is unknown or revoked".into())
}

/// The `Bearer` token of a request, if any.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Removes caller headers a client may have forged; only the gateway sets them.
pub fn strip_internal_headers(headers: &mut HeaderMap) {
    for name in [
        HEADER_INTERNAL_TOKEN,
        HEADER_TENANT,
        HEADER_ROLE,
        HEADER_KEY_ID,
    ] {
        headers.remove(name);
    }
}

/// Writes the caller onto the internal headers of a request forwarded to a service.
pub fn write_internal_headers(headers: &mut HeaderMap, caller: &Caller, token: &SecretString) {
    strip_internal_headers(headers);
    let Caller::Tenant(ctx) = caller else {
        return;
    };
    let pairs = [
        (HEADER_INTERNAL_TOKEN, token.expose_secret().to_owned()),
        (HEADER_TENANT, ctx.tenant_id.to_string()),
        (HEADER_ROLE, ctx.role.as_str().to_owned()),
        (HEADER_KEY_ID, ctx.key_id.to_string()),
    ];
    for (name, value) in pairs {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    }
    // The upstream trusts the internal headers instead of the key.
    headers.remove(header::AUTHORIZATION);
}

/// Reads the caller from internal headers when they carry the right token.
fn caller_from_internal_headers(
    headers: &HeaderMap,
    token: &SecretString,
) -> Option<Result<Caller, ApiError>> {
    let given = headers.get(HEADER_INTERNAL_TOKEN)?;
    if !secrets_equal(given.as_bytes(), token.expose_secret().as_bytes()) {
        return Some(Err(ApiError::Unauthorized("invalid internal token".into())));
    }
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let parsed = (|| {
        Some(TenantContext {
            tenant_id: get(HEADER_TENANT)?.parse().ok()?,
            role: Role::parse(get(HEADER_ROLE)?)?,
            key_id: get(HEADER_KEY_ID)?.parse().ok()?,
        })
    })();
    Some(
        parsed
            .map(Caller::Tenant)
            .ok_or_else(|| ApiError::Unauthorized("malformed internal caller headers".into())),
    )
}

/// How a process authenticates: the gateway accepts only keys; a service running alone
/// also accepts the gateway's internal headers.
#[derive(Clone)]
pub struct Authenticator {
    pub verifier: KeyVerifier,
    /// Set on services behind a proxying gateway.
    pub internal_token: Option<SecretString>,
}

impl Authenticator {
    pub async fn authenticate(&self, headers: &mut HeaderMap) -> Result<Caller, ApiError> {
        if let Some(token) = &self.internal_token
            && let Some(result) = caller_from_internal_headers(headers, token)
        {
            return result;
        }
        strip_internal_headers(headers);
        let key = bearer_token(headers).ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer <api key>`".into())
        })?;
        self.verifier.verify(key).await
    }
}

/// Middleware: authenticates the request and records the tenant on the current span.
pub async fn require_caller(
    State(auth): State<Authenticator>,
    mut req: Request,
    next: Next,
) -> Response {
    match auth.authenticate(req.headers_mut()).await {
        Ok(caller) => {
            if let Some(tenant) = caller.tenant_id() {
                tracing::Span::current().record("tenant", tracing::field::display(tenant));
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_random_and_hashed() {
        let a = generate_key().expect("key");
        let b = generate_key().expect("key");
        assert_ne!(a.secret, b.secret);
        assert!(a.secret.starts_with(KEY_PREFIX));
        assert_eq!(a.secret.len(), 3 + 43);
        assert_eq!(a.hash, hash_key(&a.secret));
        assert!(a.secret.starts_with(&a.prefix));
    }

    #[test]
    fn roles_are_ordered() {
        let ctx = TenantContext {
            tenant_id: Uuid::nil(),
            role: Role::Writer,
            key_id: Uuid::nil(),
        };
        assert!(ctx.require(Role::Reader).is_ok());
        assert!(ctx.require(Role::Writer).is_ok());
        assert!(ctx.require(Role::Admin).is_err());
    }

    #[test]
    fn internal_headers_need_the_token() {
        let token = SecretString::from("s3cret");
        let caller = Caller::Tenant(TenantContext {
            tenant_id: Uuid::new_v4(),
            role: Role::Reader,
            key_id: Uuid::new_v4(),
        });
        let mut headers = HeaderMap::new();
        write_internal_headers(&mut headers, &caller, &token);
        let read = caller_from_internal_headers(&headers, &token).expect("present");
        assert_eq!(read.expect("valid"), caller);
        let wrong = SecretString::from("other!");
        assert!(
            caller_from_internal_headers(&headers, &wrong)
                .expect("present")
                .is_err()
        );
    }

    #[test]
    fn bearer_is_parsed_case_insensitively() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer mk_abc"),
        );
        assert_eq!(bearer_token(&headers), Some("mk_abc"));
    }
}
