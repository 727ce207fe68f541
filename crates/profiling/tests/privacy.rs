//! Data-subject requests: export holds everything, erasure removes everything (in every
//! service through the hook) and leaves an audit record without personal data.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use support::{Api, days_ago};

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn export_then_erase_everywhere(pool: PgPool) {
    // Another service's data about customers, with its erasure hook.
    sqlx::raw_sql(
        "CREATE SCHEMA partner;
         CREATE TABLE partner.sends (tenant_id uuid, customer_id uuid);
         CREATE FUNCTION partner.erase_customer(t uuid, c uuid) RETURNS bigint LANGUAGE sql AS $$
           WITH gone AS (DELETE FROM partner.sends WHERE tenant_id = t AND customer_id = c RETURNING 1)
           SELECT count(*) FROM gone $$;",
    )
    .execute(&pool)
    .await
    .expect("hook");
    let api = Api::start(&pool).await;
    // Erasure needs an admin key.
    let admin = mercato_platform::testing::key_for(
        &pool,
        api.tenant_id,
        mercato_platform::auth::Role::Admin,
    )
    .await
    .0;
    api.post(
        "/v1/profiling/customers",
        &json!({"external_id": "cust-ada", "email": "ada@example.com"}),
    )
    .await;
    api.events(json!([
        {"event_id": "a1", "anonymous_id": "anon-1", "type": "view", "timestamp": days_ago(3)},
        {"event_id": "p1", "customer_id": "cust-ada", "anonymous_id": "anon-1", "type": "purchase", "timestamp": days_ago(1),
         "revenue": 12, "currency": "EUR"}
    ]))
    .await;
    api.post(
        "/v1/profiling/customers",
        &json!({"external_id": "c2", "email": "bob@example.com"}),
    )
    .await;
    api.events(
        json!([{"event_id": "b1", "customer_id": "c2", "type": "view", "timestamp": days_ago(1)}]),
    )
    .await;
    let id = api.customer_id("cust-ada").await;
    sqlx::query("INSERT INTO partner.sends VALUES ($1, $2::uuid), ($1, $2::uuid)")
        .bind(api.tenant_id)
        .bind(&id)
        .execute(&pool)
        .await
        .expect("sends");

    let client = &api.server.client;
    let writer_export = client
        .get(
            api.server
                .url(&format!("/v1/profiling/customers/{id}/export")),
        )
        .bearer_auth(&api.key)
        .send()
        .await
        .expect("request");
    assert_eq!(
        writer_export.status(),
        StatusCode::FORBIDDEN,
        "privacy requests need an admin key"
    );
    let export: serde_json::Value = client
        .get(
            api.server
                .url(&format!("/v1/profiling/customers/{id}/export")),
        )
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(export["customer"]["email"], "ada@example.com");
    assert_eq!(export["anonymous_ids"], json!(["anon-1"]));
    assert_eq!(export["events"].as_array().map(Vec::len), Some(2));

    let erased = client
        .delete(api.server.url(&format!("/v1/profiling/customers/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(erased.status(), StatusCode::OK);
    let erased: serde_json::Value = erased.json().await.expect("json");
    assert_eq!(erased["removed"]["events"], 2);
    assert_eq!(
        erased["removed"]["partner"], 2,
        "the other service's hook ran"
    );
    assert_eq!(erased["removed"]["content"], 0, "the content hook ran too");
    assert_eq!(erased["removed"]["metrics"], 0, "the metrics hook ran too");

    let remaining = |sql: &'static str| {
        let pool = pool.clone();
        let id = id.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(id)
                .fetch_one(&pool)
                .await
                .expect("count")
        }
    };
    assert_eq!(
        remaining("SELECT count(*) FROM profiling.customers WHERE id = $1::uuid").await,
        0
    );
    assert_eq!(
        remaining("SELECT count(*) FROM profiling.profiles WHERE customer_id = $1::uuid").await,
        0
    );
    assert_eq!(remaining("SELECT count(*) FROM profiling.events WHERE customer_id = $1::uuid OR anonymous_id = 'anon-1' OR $1 = ''").await, 0);
    assert_eq!(
        remaining("SELECT count(*) FROM partner.sends WHERE customer_id = $1::uuid").await,
        0
    );
    // The other customer is untouched.
    assert_eq!(api.profile("c2").await["event_count"], 1);

    let audit: Vec<String> =
        sqlx::query_scalar("SELECT row_to_json(a)::text FROM platform.audit_log a")
            .fetch_all(&pool)
            .await
            .expect("audit");
    assert_eq!(audit.len(), 1);
    assert!(audit[0].contains("customer.erased"));
    // Ids are hex, so none of these can appear by chance.
    for personal in ["ada@example.com", "cust-ada", "anon-1"] {
        assert!(
            !audit[0].contains(personal),
            "audit holds no personal data: {}",
            audit[0]
        );
    }
    let again = client
        .delete(api.server.url(&format!("/v1/profiling/customers/{id}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}
