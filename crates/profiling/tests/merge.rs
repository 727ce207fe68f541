//! Merging customers: one transaction, consent never widened, history and ids follow.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use support::{Api, days_ago};

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn merging_keeps_the_most_restrictive_consent(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.post(
        "/v1/profiling/customers/batch",
        &json!({"items": [
            {"external_id": "web-1", "email": "ada@example.com",
             "consent": {"email": true, "sms": true, "push": true, "ai_personalization": true}},
            {"external_id": "store-9", "phone": "+447700900123",
             "consent": {"email": false, "push": true}, "traits": {"store": "leeds"}}
        ]}),
    )
    .await;
    api.events(json!([
        {"event_id": "w1", "customer_id": "web-1", "type": "purchase", "timestamp": days_ago(3), "revenue": 10, "currency": "GBP"},
        {"event_id": "s1", "customer_id": "store-9", "type": "purchase", "timestamp": days_ago(1), "revenue": 15, "currency": "GBP"}
    ]))
    .await;
    let target = api.customer_id("web-1").await;
    let source = api.customer_id("store-9").await;

    let (status, merged) = api
        .post(
            &format!("/v1/profiling/customers/{target}/merge"),
            &json!({"source_id": source}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(
        merged["consent"]["email"], false,
        "a refusal on either side stays"
    );
    assert_eq!(
        merged["consent"]["sms"],
        json!(null),
        "unstated on one side is not a yes"
    );
    assert_eq!(
        merged["consent"]["push"], true,
        "yes on both sides stays yes"
    );
    assert_eq!(merged["consent"]["ai_personalization"], json!(null));
    assert_eq!(merged["email"], "ada@example.com");
    assert_eq!(
        merged["phone"], "+447700900123",
        "gaps are filled from the source"
    );
    assert_eq!(merged["traits"]["store"], "leeds");

    let profile = api.profile("web-1").await;
    assert_eq!(profile["frequency"], 2);
    assert_eq!(profile["monetary"], 25.0);
    let (status, _) = api.get(&format!("/v1/profiling/customers/{source}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The source's id now reaches the survivor.
    api.events(json!([{"event_id": "s2", "customer_id": "store-9", "type": "purchase", "timestamp": days_ago(0), "revenue": 5, "currency": "GBP"}]))
        .await;
    assert_eq!(api.profile("web-1").await["frequency"], 3);
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.customers")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(customers, 1);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn bad_merges_change_nothing(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.post(
        "/v1/profiling/customers/batch",
        &json!({"items": [{"external_id": "a"}]}),
    )
    .await;
    let a = api.customer_id("a").await;
    let (status, body) = api
        .post(
            &format!("/v1/profiling/customers/{a}/merge"),
            &json!({"source_id": a}),
        )
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("source_id"))
    );
    let (status, _) = api
        .post(
            &format!("/v1/profiling/customers/{a}/merge"),
            &json!({"source_id": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Another tenant's customer cannot be merged in.
    let other = api.other_tenant_key(&pool).await;
    let theirs: serde_json::Value = api
        .server
        .client
        .post(api.server.url("/v1/profiling/customers"))
        .bearer_auth(&other)
        .json(&json!({"external_id": "z"}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let (status, _) = api
        .post(
            &format!("/v1/profiling/customers/{a}/merge"),
            &json!({"source_id": theirs["id"]}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.customers")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(customers, 2);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn a_new_id_with_a_known_email_joins_that_customer(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.post(
        "/v1/profiling/customers",
        &json!({"external_id": "crm-1", "email": "ada@example.com"}),
    )
    .await;
    let (status, body) = api
        .post(
            "/v1/profiling/customers/batch",
            &json!({"items": [
                {"external_id": "shop-7", "email": " ADA@example.com ", "first_name": "Ada"},
                {"external_id": "shop-8", "email": "bob@example.com"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["status"], "updated", "{body}");
    assert_eq!(body["items"][1]["status"], "created");
    let crm = api.customer_id("crm-1").await;
    assert_eq!(body["items"][0]["id"], crm.as_str());
    let (_, c) = api.get(&format!("/v1/profiling/customers/{crm}")).await;
    assert_eq!(c["first_name"], "Ada");

    // Events under the shop's id reach the same customer.
    api.events(json!([{"event_id": "e1", "customer_id": "shop-7", "type": "view", "timestamp": days_ago(1)}])).await;
    assert_eq!(api.profile("crm-1").await["event_count"], 1);
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.customers")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(customers, 2);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn upserting_a_merged_id_updates_the_survivor(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.post(
        "/v1/profiling/customers/batch",
        &json!({"items": [{"external_id": "a"}, {"external_id": "b"}]}),
    )
    .await;
    let a = api.customer_id("a").await;
    let b = api.customer_id("b").await;
    api.post(
        &format!("/v1/profiling/customers/{a}/merge"),
        &json!({"source_id": b}),
    )
    .await;
    let (status, body) = api
        .post(
            "/v1/profiling/customers",
            &json!({"external_id": "b", "country": "NL"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["id"], a.as_str());
    assert_eq!(body["country"], "NL");
}
