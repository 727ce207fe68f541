//! The HTTP chassis every process shares: request ids, tracing spans, problem+json for
//! every error (including the ones tower produces), per-route Prometheus metrics, CORS,
//! body and time limits, health routes and graceful shutdown.

use std::{
    future::Future,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    extract::{MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::{
    cors::{AllowOrigin, Any, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use utoipa::ToSchema;

use crate::{
    error::{ApiError, PROBLEM_JSON, Problem},
    extract::Json,
    settings::ServerSettings,
};

pub const REQUEST_ID: &str = "x-request-id";

/// Wraps a router in the layers every Mercato process applies, outermost first:
/// request id, tracing span, problem+json normalisation, CORS, metrics, timeout, body limit.
pub fn stack(router: Router, server: &ServerSettings) -> Router {
    // Install the recorder before the first request so no measurement is lost.
    prometheus();
    let request_id = HeaderName::from_static(REQUEST_ID);
    let limits = BodyLimits {
        default: server.body_limit_bytes,
        bulk: server.import_limit_bytes,
    };
    router
        .layer(middleware::from_fn_with_state(limits, limit_body))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(server.request_timeout_secs),
        ))
        .layer(middleware::from_fn(record_metrics))
        .layer(cors(&server.cors_origins))
        .layer(middleware::from_fn(problem_request_id))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let request_id = req
                .headers()
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!(
                "request",
                method = %req.method(),
                path = %req.uri().path(),
                request_id = %request_id,
                tenant = tracing::field::Empty,
            )
        }))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
}

/// Body size limits: bulk uploads (paths with an `/imports` segment) stream to the database
/// and get their own, larger limit.
#[derive(Debug, Clone, Copy)]
struct BodyLimits {
    default: usize,
    bulk: usize,
}

pub fn is_bulk_path(path: &str) -> bool {
    path.split('/').any(|segment| segment == "imports")
}

async fn limit_body(State(limits): State<BodyLimits>, req: Request, next: Next) -> Response {
    let limit = if is_bulk_path(req.uri().path()) {
        limits.bulk
    } else {
        limits.default
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge(format!("bodies here are limited to {limit} bytes"))
            .into_response();
    }
    // Bodies without a length (chunked) are cut off at the limit while they stream.
    let (parts, body) = req.into_parts();
    next.run(Request::from_parts(
        parts,
        Body::new(http_body_util::Limited::new(body, limit)),
    ))
    .await
}

/// Whether a body read failed because it passed the size limit.
pub fn is_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(REQUEST_ID),
        ])
        .expose_headers([
            HeaderName::from_static(REQUEST_ID),
            header::RETRY_AFTER,
            HeaderName::from_static("ratelimit-limit"),
            HeaderName::from_static("ratelimit-remaining"),
            HeaderName::from_static("ratelimit-reset"),
        ]);
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        let list: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
        layer.allow_origin(AllowOrigin::list(list))
    }
}

/// Every error leaves as problem+json carrying the request id: our own problems get the id
/// filled in; plain-text errors from tower layers or the router are replaced.
async fn problem_request_id(req: Request, next: Next) -> Response {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    if response.extensions().get::<PassThrough>().is_some() {
        return response;
    }
    let problem = match response.extensions().get::<Problem>() {
        Some(problem) => problem.clone(),
        None if is_problem(&response) => return response,
        None => Problem::for_status(status),
    };
    let (mut parts, _) = response.into_parts();
    let body = serde_json::to_vec(&Problem {
        request_id,
        ..problem
    })
    .unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Marks an error response whose body must reach the client as it is (a readiness report,
/// a response relayed from an upstream service).
#[derive(Debug, Clone, Copy)]
pub struct PassThrough;

fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

/// The process-wide Prometheus recorder (installed once, shared by every router in it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ])
            .unwrap_or_else(|_| PrometheusBuilder::new());
        match builder.install_recorder() {
            Ok(handle) => handle,
            // Another recorder is installed (an embedding program's): render our own, detached.
            Err(_) => PrometheusBuilder::new().build_recorder().handle(),
        }
    })
}

async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed);
    response
}

/// Extra readiness conditions beyond the database (a model being loaded, say).
pub type ReadyCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
pub struct HealthState {
    pub pool: PgPool,
    pub checks: Vec<(&'static str, ReadyCheck)>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthReport {
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Each readiness check with "ok" or why it fails.
    pub checks: std::collections::BTreeMap<String, String>,
}

/// `/healthz`, `/readyz` and `/metrics`, unauthenticated.
pub fn health_router(state: HealthState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

async fn healthz() -> Json<HealthReport> {
    Json(HealthReport {
        status: "ok",
        checks: Default::default(),
    })
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let mut checks = std::collections::BTreeMap::new();
    let db = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query("SELECT 1").execute(&state.pool),
    )
    .await;
    let db_ok = matches!(db, Ok(Ok(_)));
    checks.insert(
        "database".to_owned(),
        if db_ok {
            "ok".to_owned()
        } else {
            "unreachable".to_owned()
        },
    );
    let mut ready = db_ok;
    for (name, check) in &state.checks {
        let outcome = check();
        ready &= outcome.is_ok();
        checks.insert(
            (*name).to_owned(),
            outcome.err().unwrap_or_else(|| "ok".to_owned()),
        );
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let report = HealthReport {
        status: if ready { "ok" } else { "unavailable" },
        checks,
    };
    // Not a problem document: monitors read the per-check map.
    let mut response = (status, axum::Json(report)).into_response();
    response.extensions_mut().insert(PassThrough);
    response
}

async fn metrics_text() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        prometheus().render(),
    )
        .into_response()
}

/// Serves until `shutdown` resolves, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}

/// The request id of a request, for handlers that pass it on.
pub fn request_id_of(req: &Request) -> Option<String> {
    req.extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned)
}
