//! Assembles the gateway: admin and jobs routes of its own, the four services mounted in
//! process (embedded) or forwarded to upstreams (proxy), behind authentication and rate
//! limits, plus health, `/openapi.json` and the `/docs` page.

use std::sync::Arc;

use axum::{
    Router, middleware,
    response::Html,
    routing::{any, get},
};
use mercato_platform::{
    auth::require_caller,
    http::{self, HealthState},
    jobs::{self, JobHandler},
    service::{ServiceParts, authenticator},
    settings::{GatewayMode, Settings},
};
use sqlx::PgPool;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::{
    proxy::{self, Upstreams},
    rate_limit::{self, RateLimiter},
    routes::tenants,
    state::GatewayState,
};

const DOCS_PAGE: &str = include_str!("../assets/docs.html");

/// A built gateway: the router to serve and the job kinds this process must run.
pub struct Gateway {
    pub router: Router,
    pub jobs: Vec<Arc<dyn JobHandler>>,
}

/// Builds the gateway for the configured mode. Embedded mode builds every service's state
/// (content loads its models here).
pub async fn build(settings: Arc<Settings>, pool: PgPool) -> anyhow::Result<Gateway> {
    let auth = authenticator(&settings, &pool, false);
    let upstreams = match settings.gateway.mode {
        GatewayMode::Proxy => Some(Upstreams::from_settings(&settings)?),
        GatewayMode::Embedded => None,
    };
    let state = GatewayState {
        pool: pool.clone(),
        settings: settings.clone(),
        auth: auth.clone(),
        limiter: RateLimiter::new(settings.rate_limit.clone()),
        upstreams: upstreams.clone(),
    };

    let mut v1 = tenants::routes()
        .with_state::<()>(state.clone())
        .merge(jobs::routes::router(pool.clone()));
    let mut job_handlers = Vec::new();
    let mut checks = Vec::new();
    let mut v1_router = match &upstreams {
        None => {
            for parts in services(&pool, settings.clone()).await? {
                let ServiceParts {
                    routes,
                    jobs,
                    ready_checks,
                } = parts;
                v1 = v1.merge(routes);
                job_handlers.extend(jobs);
                checks.extend(ready_checks);
            }
            v1.split_for_parts().0
        }
        Some(upstreams) => {
            let mut router = v1.split_for_parts().0;
            for area in upstreams.areas() {
                let forward = any(proxy::forward).with_state(state.clone());
                router = router
                    .route(&format!("/v1/{area}"), forward.clone())
                    .route(&format!("/v1/{area}/{{*rest}}"), forward);
            }
            router
        }
    };
    v1_router = v1_router
        .layer(middleware::from_fn_with_state(
            state.limiter.clone(),
            rate_limit::limit,
        ))
        .layer(middleware::from_fn_with_state(auth, require_caller));

    let doc = openapi();
    let app = Router::new()
        .merge(v1_router)
        .merge(http::health_router(HealthState { pool, checks }))
        .route(
            "/openapi.json",
            get(move || std::future::ready(axum::Json(doc.clone()))),
        )
        .route("/docs", get(|| std::future::ready(Html(DOCS_PAGE))));
    Ok(Gateway {
        router: http::stack(app, &settings.server),
        jobs: job_handlers,
    })
}

/// The services mounted in embedded mode.
async fn services(pool: &PgPool, settings: Arc<Settings>) -> anyhow::Result<Vec<ServiceParts>> {
    Ok(vec![
        mercato_profiling::parts(pool.clone(), settings.clone()).await?,
        mercato_content::parts(pool.clone(), settings.clone()).await?,
        mercato_metrics::parts(pool.clone(), settings).await?,
    ])
}

/// The whole API's OpenAPI document, the same in both modes.
pub fn openapi() -> OpenApi {
    let mut doc = OpenApiRouter::<GatewayState>::new()
        .merge(tenants::routes())
        .into_openapi();
    doc.merge(jobs::routes::routes().into_openapi());
    doc.merge(mercato_profiling::openapi());
    doc.merge(mercato_content::openapi());
    doc.merge(mercato_metrics::openapi());
    doc.info = utoipa::openapi::InfoBuilder::new()
        .title("Mercato")
        .version(env!("CARGO_PKG_VERSION"))
        .description(Some(
            "LLM-driven marketing automation: profiles and segments, personalised copy from a \
             local language model, decisioning, and measured results. Every /v1 route needs \
             `Authorization: Bearer <api key>`; errors are application/problem+json.",
        ))
        .license(Some(
            utoipa::openapi::LicenseBuilder::new()
                .name("Apache-2.0")
                .build(),
        ))
        .build();
    mercato_platform::openapi::add_security(&mut doc);
    doc
}
