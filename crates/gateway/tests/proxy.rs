//! Proxy mode: the gateway forwards `/v1/<area>/...` to upstream services, streaming
//! bodies, passing the caller on internal headers only the gateway can set.

mod support;

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    response::sse::{Event, Sse},
    routing::get,
};
use futures::StreamExt;
use mercato_platform::{
    auth::{HEADER_INTERNAL_TOKEN, HEADER_TENANT, Role},
    service::standalone_app,
    settings::Settings,
    testing::{TestServer, tenant_with_key},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{gateway, problem};
use tokio::net::TcpListener;

const TOKEN: &str = "internal-token-for-tests-0123456789";

fn proxy_settings(profiling: &str, content: &str, metrics: &str) -> Settings {
    let mut s = support::settings();
    s.gateway.mode = mercato_platform::settings::GatewayMode::Proxy;
    s.gateway.upstreams.profiling = profiling.to_owned();
    s.gateway.upstreams.content = content.to_owned();
    s.gateway.upstreams.metrics = metrics.to_owned();
    s.secrets.internal_token = Some(TOKEN.to_owned().into());
    s
}

async fn profiling_alone(pool: &PgPool) -> TestServer {
    let mut s = support::settings();
    s.secrets.internal_token = Some(TOKEN.to_owned().into());
    let parts = mercato_profiling::parts(pool.clone(), Arc::new(s.clone()))
        .await
        .expect("parts");
    TestServer::spawn(standalone_app(&s, pool, vec![parts])).await
}

/// An upstream that streams three SSE events 300 ms apart.
async fn slow_sse_upstream() -> TestServer {
    let app = Router::new().route(
        "/v1/content/stream",
        get(|| async {
            let events = futures::stream::iter(0..3).then(|n| async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                Ok::<_, Infallible>(Event::default().data(format!("chunk {n}")))
            });
            Sse::new(events)
        }),
    );
    TestServer::spawn(app).await
}

/// An upstream that accepts connections and never answers.
async fn silent_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (url, task)
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn requests_reach_the_service_with_the_callers_tenant(pool: PgPool) {
    let service = profiling_alone(&pool).await;
    let server = gateway(
        &pool,
        proxy_settings(
            &service.base_url,
            "http://127.0.0.1:9",
            "http://127.0.0.1:9",
        ),
    )
    .await;
    let a = tenant_with_key(&pool, Role::Writer).await;
    let b = tenant_with_key(&pool, Role::Writer).await;

    // A client trying to pose as tenant B through forged internal headers gets nowhere.
    let created = server
        .client
        .post(server.url("/v1/profiling/customers"))
        .bearer_auth(&a.key)
        .header(HEADER_TENANT, b.id.to_string())
        .header(HEADER_INTERNAL_TOKEN, "guess")
        .header("x-request-id", "proxied-1")
        .json(&json!({"external_id": "c1", "email": "a@example.com"}))
        .send()
        .await
        .expect("request");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["x-request-id"], "proxied-1");
    let created: Value = created.json().await.expect("json");
    let owner: uuid::Uuid = sqlx::query_scalar("SELECT tenant_id FROM profiling.customers")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(owner, a.id);

    let id = created["id"].as_str().expect("id");
    let theirs = server
        .client
        .get(server.url(&format!("/v1/profiling/customers/{id}")))
        .bearer_auth(&b.key)
        .send()
        .await
        .expect("request");
    let body = problem(theirs, StatusCode::NOT_FOUND).await;
    assert_eq!(body["request_id"].as_str().map(str::len), Some(36));

    // Bad input is answered by the service and relayed as it is.
    let bad = server
        .client
        .get(server.url("/v1/profiling/customers/nope"))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("request");
    assert_eq!(
        support::field(&problem(bad, StatusCode::BAD_REQUEST).await),
        "id"
    );
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn the_service_refuses_forged_internal_headers(pool: PgPool) {
    let service = profiling_alone(&pool).await;
    let victim = tenant_with_key(&pool, Role::Writer).await;
    let forged = service
        .client
        .get(service.url("/v1/profiling/customers"))
        .header(HEADER_TENANT, victim.id.to_string())
        .header(HEADER_INTERNAL_TOKEN, "not-the-token")
        .header("x-mercato-role", "admin")
        .header("x-mercato-key-id", uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .expect("request");
    problem(forged, StatusCode::UNAUTHORIZED).await;
    // With a key, a service running alone is reachable directly.
    let direct = service
        .client
        .get(service.url("/v1/profiling/customers"))
        .bearer_auth(&victim.key)
        .send()
        .await
        .expect("request");
    assert_eq!(direct.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn server_sent_events_stream_through(pool: PgPool) {
    let upstream = slow_sse_upstream().await;
    let server = gateway(
        &pool,
        proxy_settings(
            "http://127.0.0.1:9",
            &upstream.base_url,
            "http://127.0.0.1:9",
        ),
    )
    .await;
    let t = tenant_with_key(&pool, Role::Reader).await;
    let started = std::time::Instant::now();
    let response = server
        .client
        .get(server.url("/v1/content/stream"))
        .bearer_auth(&t.key)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let first = body.next().await.expect("a chunk").expect("bytes");
    let first_at = started.elapsed();
    assert!(String::from_utf8_lossy(&first).contains("chunk 0"));
    let mut rest = String::new();
    while let Some(chunk) = body.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.expect("bytes")));
    }
    let all_at = started.elapsed();
    assert!(rest.contains("chunk 2"));
    // Streamed, not buffered: the first event arrived well before the last was sent.
    assert!(
        all_at - first_at >= Duration::from_millis(400),
        "first {first_at:?}, all {all_at:?}"
    );
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn unreachable_and_silent_upstreams_are_502_and_504(pool: PgPool) {
    let (silent, _task) = silent_upstream().await;
    let mut settings = proxy_settings("http://127.0.0.1:9", &silent, "http://127.0.0.1:9");
    settings.server.request_timeout_secs = 1;
    let server = gateway(&pool, settings).await;
    let t = tenant_with_key(&pool, Role::Reader).await;
    let down = server
        .client
        .get(server.url("/v1/metrics/campaigns"))
        .bearer_auth(&t.key)
        .send()
        .await
        .expect("request");
    problem(down, StatusCode::BAD_GATEWAY).await;
    let slow = server
        .client
        .get(server.url("/v1/content/anything"))
        .bearer_auth(&t.key)
        .send()
        .await
        .expect("request");
    problem(slow, StatusCode::GATEWAY_TIMEOUT).await;
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn proxy_mode_needs_an_internal_token(pool: PgPool) {
    let mut settings = proxy_settings(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
    );
    settings.secrets.internal_token = None;
    let built = mercato_gateway::build(Arc::new(settings), pool.clone()).await;
    assert!(built.is_err());
}
