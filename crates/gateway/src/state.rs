use std::sync::Arc;

use mercato_platform::{auth::Authenticator, settings::Settings};
use sqlx::PgPool;

use crate::{proxy::Upstreams, rate_limit::RateLimiter};

/// What the gateway's own handlers and middleware share.
#[derive(Clone)]
pub struct GatewayState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    /// Resolves keys; admin routes evict revoked keys from its cache.
    pub auth: Authenticator,
    pub limiter: RateLimiter,
    /// Set in proxy mode.
    pub upstreams: Option<Upstreams>,
}
