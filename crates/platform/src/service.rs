//! Running a Mercato process: the authenticated `/v1` routes, the health routes, the job
//! runner and graceful shutdown. The gateway (all services in one process) and each
//! service binary on its own go through here, so both modes serve the same stack.

use std::{sync::Arc, time::Duration};

use axum::{Router, middleware};
use sqlx::PgPool;
use tokio::{net::TcpListener, sync::watch};
use utoipa_axum::router::OpenApiRouter;

use crate::{
    auth::{Authenticator, KeyVerifier, require_caller},
    http::{self, HealthState, ReadyCheck},
    jobs::{JobHandler, JobRunner},
    settings::Settings,
};

/// One service's contribution to a process.
pub struct ServiceParts {
    /// `/v1/...` routes, state applied; they expect an authenticated caller.
    pub routes: OpenApiRouter,
    /// Job kinds this service runs.
    pub jobs: Vec<Arc<dyn JobHandler>>,
    /// Conditions for `/readyz` beyond the database.
    pub ready_checks: Vec<(&'static str, ReadyCheck)>,
}

impl ServiceParts {
    pub fn routes(routes: OpenApiRouter) -> Self {
        Self {
            routes,
            jobs: Vec::new(),
            ready_checks: Vec::new(),
        }
    }
}

/// The authenticator of this process. Services accept the gateway's internal headers when
/// `MERCATO_INTERNAL_TOKEN` is set; the gateway itself passes `accept_internal = false`.
pub fn authenticator(settings: &Settings, pool: &PgPool, accept_internal: bool) -> Authenticator {
    Authenticator {
        verifier: KeyVerifier::new(
            pool.clone(),
            settings.secrets.admin_key.as_ref(),
            Duration::from_secs(settings.auth.key_cache_ttl_secs),
        ),
        internal_token: if accept_internal {
            settings.secrets.internal_token.clone()
        } else {
            None
        },
    }
}

/// Builds the app of a service running alone: its routes behind authentication, the jobs
/// routes, health, and the shared middleware stack.
pub fn standalone_app(settings: &Settings, pool: &PgPool, parts: Vec<ServiceParts>) -> Router {
    let auth = authenticator(settings, pool, true);
    let mut v1 = OpenApiRouter::new();
    let mut checks = Vec::new();
    for part in parts {
        v1 = v1.merge(part.routes);
        checks.extend(part.ready_checks);
    }
    let (v1, _) = v1.split_for_parts();
    let v1 = v1.layer(middleware::from_fn_with_state(auth, require_caller));
    let app = Router::new()
        .merge(v1)
        .merge(http::health_router(HealthState {
            pool: pool.clone(),
            checks,
        }));
    http::stack(app, &settings.server)
}

/// Starts the job runner for the given handlers; returns the sender that stops it.
pub fn start_jobs(
    settings: &Settings,
    pool: &PgPool,
    handlers: Vec<Arc<dyn JobHandler>>,
) -> (watch::Sender<bool>, tokio::task::JoinSet<()>) {
    let (stop, stopped) = watch::channel(false);
    let runner = handlers.into_iter().fold(
        JobRunner::new(pool.clone(), settings.jobs.clone()),
        JobRunner::register,
    );
    (stop, runner.spawn(stopped))
}

/// Binds the configured address, serves until Ctrl-C/SIGTERM, then drains requests and
/// lets the job workers finish the job in hand (bounded by `shutdown_grace_secs`).
pub async fn run(
    settings: &Settings,
    pool: &PgPool,
    app: Router,
    jobs: Vec<Arc<dyn JobHandler>>,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(settings.bind_address()).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    let (stop_jobs, mut workers) = start_jobs(settings, pool, jobs);
    http::serve(listener, app, http::shutdown_signal()).await?;
    let _ = stop_jobs.send(true);
    let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
    let _ = tokio::time::timeout(grace, async {
        while workers.join_next().await.is_some() {}
    })
    .await;
    pool.close().await;
    Ok(())
}

/// `main` of a service binary running alone: settings, telemetry, pool, migrations, then
/// [`standalone_app`] on `default_port` unless `MERCATO__SERVER__PORT` says otherwise.
pub async fn run_alone<F, Fut>(
    name: &'static str,
    default_port: u16,
    build: F,
) -> anyhow::Result<()>
where
    F: FnOnce(PgPool, Arc<Settings>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ServiceParts>>,
{
    let mut settings = Settings::load()?;
    if std::env::var_os("MERCATO__SERVER__PORT").is_none() {
        settings.server.port = default_port;
    }
    crate::telemetry::init(&settings.log);
    let pool = crate::db::connect(&settings).await?;
    if settings.database.migrate_on_start {
        crate::db::migrate(&pool).await?;
    }
    let settings = Arc::new(settings);
    let parts = build(pool.clone(), settings.clone()).await?;
    let jobs = parts.jobs.clone();
    let app = standalone_app(&settings, &pool, vec![parts]);
    tracing::info!(service = name, "service ready");
    run(&settings, &pool, app, jobs).await
}
