//! What every request meets at the edge: bad input answered as problem+json naming the
//! field, body and rate limits, request ids, CORS, metrics and the API description.

mod support;

use mercato_platform::{auth::Role, testing::tenant_with_key};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{field, gateway, problem, settings};

async fn customer_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM profiling.customers")
        .fetch_one(pool)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn malformed_bodies_are_4xx_naming_the_field_and_write_nothing(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let tenant = tenant_with_key(&pool, Role::Writer).await;
    let post = |body: &'static str, content_type: &'static str| {
        server
            .client
            .post(server.url("/v1/profiling/customers"))
            .bearer_auth(&tenant.key)
            .header("content-type", content_type)
            .body(body)
            .send()
    };

    let syntax = post(r#"{"external_id": "c1""#, "application/json")
        .await
        .expect("request");
    assert_eq!(
        field(&problem(syntax, StatusCode::BAD_REQUEST).await),
        "body"
    );

    let media = post(r#"{"external_id": "c1"}"#, "text/plain")
        .await
        .expect("request");
    problem(media, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let unknown = post(
        r#"{"external_id": "c1", "emial": "a@example.com"}"#,
        "application/json",
    )
    .await
    .expect("request");
    assert_eq!(
        field(&problem(unknown, StatusCode::UNPROCESSABLE_ENTITY).await),
        "emial"
    );

    let wrong_type = post(
        r#"{"external_id": "c1", "consent": {"email": "yes"}}"#,
        "application/json",
    )
    .await
    .expect("request");
    assert_eq!(
        field(&problem(wrong_type, StatusCode::UNPROCESSABLE_ENTITY).await),
        "consent.email"
    );

    let invalid = post(
        r#"{"external_id": "c1", "email": "not-an-email"}"#,
        "application/json",
    )
    .await
    .expect("request");
    assert_eq!(
        field(&problem(invalid, StatusCode::UNPROCESSABLE_ENTITY).await),
        "email"
    );

    assert_eq!(customer_count(&pool).await, 0);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn bad_path_ids_and_cursors_are_400_naming_the_parameter(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let tenant = tenant_with_key(&pool, Role::Reader).await;
    let get = |path: &str| {
        server
            .client
            .get(server.url(path))
            .bearer_auth(&tenant.key)
            .send()
    };

    let id = get("/v1/profiling/customers/not-a-uuid")
        .await
        .expect("request");
    assert_eq!(field(&problem(id, StatusCode::BAD_REQUEST).await), "id");
    let job = get("/v1/jobs/12345").await.expect("request");
    assert_eq!(field(&problem(job, StatusCode::BAD_REQUEST).await), "id");
    let cursor = get("/v1/profiling/customers?cursor=garbage!")
        .await
        .expect("request");
    assert_eq!(
        field(&problem(cursor, StatusCode::BAD_REQUEST).await),
        "cursor"
    );
    let limit = get("/v1/jobs?limit=0").await.expect("request");
    assert_eq!(
        field(&problem(limit, StatusCode::BAD_REQUEST).await),
        "limit"
    );
    let unknown = get("/v1/jobs?limt=5").await.expect("request");
    assert_eq!(
        field(&problem(unknown, StatusCode::BAD_REQUEST).await),
        "limt"
    );
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn oversize_bodies_are_413_problems(pool: PgPool) {
    let mut settings = settings();
    settings.server.body_limit_bytes = 1024;
    let server = gateway(&pool, settings).await;
    let tenant = tenant_with_key(&pool, Role::Writer).await;
    let big = json!({"external_id": "c1", "traits": {"note": "x".repeat(4096)}});
    let response = server
        .client
        .post(server.url("/v1/profiling/customers"))
        .bearer_auth(&tenant.key)
        .json(&big)
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(customer_count(&pool).await, 0);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn keys_over_their_rate_get_429_with_retry_after(pool: PgPool) {
    let mut settings = settings();
    settings.rate_limit.per_second = 0.5;
    settings.rate_limit.burst = 3;
    let server = gateway(&pool, settings).await;
    let a = tenant_with_key(&pool, Role::Reader).await;
    let b = tenant_with_key(&pool, Role::Reader).await;
    let get = |key: &str| {
        server
            .client
            .get(server.url("/v1/jobs"))
            .bearer_auth(key)
            .send()
    };

    for remaining in ["2", "1", "0"] {
        let ok = get(&a.key).await.expect("request");
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["ratelimit-limit"], "3");
        assert_eq!(ok.headers()["ratelimit-remaining"], remaining);
    }
    let limited = get(&a.key).await.expect("request");
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "retry after {retry_after}");
    assert!(limited.headers().contains_key("ratelimit-reset"));
    problem(limited, StatusCode::TOO_MANY_REQUESTS).await;

    // Another key has its own bucket.
    assert_eq!(get(&b.key).await.expect("request").status(), StatusCode::OK);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn request_ids_are_kept_or_made_and_echoed(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let given = server
        .client
        .get(server.url("/v1/jobs"))
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .expect("request");
    assert_eq!(given.headers()["x-request-id"], "trace-me-42");
    let body = problem(given, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["request_id"], "trace-me-42");

    let made = server
        .client
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("request");
    let id = made.headers()["x-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn unknown_routes_are_404_problems(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let response = server
        .client
        .get(server.url("/no/such/route"))
        .send()
        .await
        .expect("request");
    problem(response, StatusCode::NOT_FOUND).await;
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn cors_preflight_is_answered(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let response = server
        .client
        .request(
            reqwest::Method::OPTIONS,
            server.url("/v1/profiling/customers"),
        )
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("request");
    assert!(response.status().is_success());
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn health_metrics_openapi_and_docs_are_served(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let c = &server.client;
    assert_eq!(
        c.get(server.url("/healthz"))
            .send()
            .await
            .expect("request")
            .status(),
        StatusCode::OK
    );
    let ready: Value = c
        .get(server.url("/readyz"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["checks"]["database"], "ok");

    let _ = c.get(server.url("/v1/jobs")).send().await.expect("request");
    let metrics = c
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    assert!(metrics.contains(r#"route="/v1/jobs""#), "{metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"));

    let doc: Value = c
        .get(server.url("/openapi.json"))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    for path in [
        "/v1/admin/tenants",
        "/v1/jobs/{id}",
        "/v1/jobs/{id}/events",
        "/v1/profiling/customers/batch",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    assert!(
        doc["components"]["securitySchemes"]
            .get("api_key")
            .is_some()
    );
    let docs = c
        .get(server.url("/docs"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("text");
    assert!(docs.contains("/openapi.json"));
    assert!(
        !docs.contains("https://"),
        "the docs page loads nothing from elsewhere"
    );
}
