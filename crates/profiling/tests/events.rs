//! Event ingestion: validation per item, idempotency, identity, and profiles that follow
//! each event in the same transaction.

mod support;

use reqwest::StatusCode;
use serde_json::json;
use sqlx::PgPool;
use support::{Api, days_ago};

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn retried_events_are_counted_once(pool: PgPool) {
    let api = Api::start(&pool).await;
    let batch = json!([
        {"event_id": "e1", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(3), "revenue": 40.0, "currency": "EUR"},
        {"event_id": "e2", "customer_id": "c1", "type": "view", "timestamp": days_ago(3)},
        {"event_id": "e1", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(3), "revenue": 40.0, "currency": "EUR"}
    ]);
    let first = api.events(batch.clone()).await;
    assert_eq!(first["items"][0]["status"], "created");
    assert_eq!(
        first["items"][2]["status"], "duplicate",
        "a repeat inside the batch is a duplicate"
    );
    let again = api.events(batch).await;
    assert!(
        again["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|i| i["status"] == "duplicate"),
        "{again}"
    );

    let (status, single) = api
        .post(
            "/v1/profiling/events",
            &json!({"event_id": "e1", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(3), "revenue": 40.0, "currency": "EUR"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(single["status"], "duplicate");

    let profile = api.profile("c1").await;
    assert_eq!(profile["frequency"], 1);
    assert_eq!(profile["monetary"], 40.0);
    assert_eq!(profile["event_count"], 2);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.events")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(stored, 2);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn bad_items_are_rejected_alone_with_their_field(pool: PgPool) {
    let api = Api::start(&pool).await;
    let tomorrow = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let result = api
        .events(json!([
            {"event_id": "ok", "customer_id": "c1", "type": "view", "timestamp": days_ago(1)},
            {"event_id": "future", "customer_id": "c1", "type": "view", "timestamp": tomorrow},
            {"event_id": "neg", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(1), "revenue": -3, "currency": "EUR"},
            {"event_id": "kind", "customer_id": "c1", "type": "teleport", "timestamp": days_ago(1)},
            {"event_id": "time", "customer_id": "c1", "type": "view", "timestamp": "last tuesday"},
            {"event_id": "who", "type": "view", "timestamp": days_ago(1)},
            {"event_id": "extra", "customer_id": "c1", "type": "view", "timestamp": days_ago(1), "colour": "red"},
            {"event_id": "custom", "customer_id": "c1", "type": "custom:wishlist_add", "timestamp": days_ago(1)}
        ]))
        .await;
    let fields: Vec<&str> = result["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|i| i["status"] == "rejected")
        .map(|i| i["errors"][0]["field"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        fields,
        [
            "items[1].timestamp",
            "items[2].revenue",
            "items[3].type",
            "items[4].timestamp",
            "items[5].customer_id",
            "items[6].colour"
        ]
    );
    assert_eq!(result["accepted"], 2);
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT event_id FROM profiling.events ORDER BY event_id")
            .fetch_all(&pool)
            .await
            .expect("ids");
    assert_eq!(stored, ["custom", "ok"]);

    let (status, body) = api
        .post("/v1/profiling/events/batch", &json!({"items": []}))
        .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("items"))
    );
    let too_many: Vec<_> = (0..1001)
        .map(|i| json!({"event_id": format!("x{i}")}))
        .collect();
    let (status, _) = api
        .post("/v1/profiling/events/batch", &json!({"items": too_many}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn a_purchase_changes_the_profile_and_segment_at_once(pool: PgPool) {
    let api = Api::start(&pool).await;
    let (status, segment) = api
        .post(
            "/v1/profiling/segments",
            &json!({"name": "repeat buyers", "rule": {"field": "profile.frequency", "op": "gte", "value": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{segment}");
    assert_eq!(segment["member_count"], 0);
    let id = segment["id"].as_str().expect("id");

    api.events(json!([{"event_id": "p1", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(10), "revenue": 20, "currency": "EUR"}]))
        .await;
    let (_, members) = api
        .get(&format!("/v1/profiling/segments/{id}/members"))
        .await;
    assert_eq!(members["items"], json!([]));

    api.events(json!([{"event_id": "p2", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(1), "revenue": 30, "currency": "EUR"}]))
        .await;
    let profile = api.profile("c1").await;
    assert_eq!(profile["frequency"], 2);
    assert_eq!(profile["monetary"], 50.0);
    assert_eq!(profile["average_order_value"], 25.0);
    assert!(profile["recency_days"].as_f64().expect("recency") < 1.1);
    let (_, members) = api
        .get(&format!("/v1/profiling/segments/{id}/members"))
        .await;
    assert_eq!(members["items"][0]["external_id"], "c1");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn profiles_read_channel_hour_and_interests_from_events(pool: PgPool) {
    let api = Api::start(&pool).await;
    let (status, _) = api
        .post(
            "/v1/profiling/products",
            &json!({"items": [
                {"product_id": "boot", "title": "Boot", "category": "Shoes", "price": 100, "currency": "EUR"},
                {"product_id": "tent", "title": "Tent", "category": "camping", "price": 300, "currency": "EUR"},
                {"product_id": "bad", "title": "", "price": -1, "currency": "EURO"}
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let at = |h: u32| {
        let d = chrono::Utc::now().date_naive() - chrono::Duration::days(2);
        d.and_hms_opt(h, 15, 0)
            .expect("time")
            .and_utc()
            .to_rfc3339()
    };
    api.events(json!([
        {"event_id": "o1", "customer_id": "c1", "type": "email_open", "timestamp": at(19)},
        {"event_id": "o2", "customer_id": "c1", "type": "email_click", "timestamp": at(19)},
        {"event_id": "o3", "customer_id": "c1", "type": "push_open", "timestamp": at(8)},
        {"event_id": "v1", "customer_id": "c1", "type": "view", "timestamp": at(9), "product_ids": ["boot"]},
        {"event_id": "v2", "customer_id": "c1", "type": "view", "timestamp": at(9), "product_ids": ["boot", "tent"]},
    ]))
    .await;
    let profile = api.profile("c1").await;
    assert_eq!(profile["preferred_channel"], "email");
    assert_eq!(profile["best_send_hour"], 19);
    assert_eq!(profile["top_categories"], json!(["shoes", "camping"]));
    assert_eq!(profile["top_products"], json!(["boot", "tent"]));
    assert!(profile["rfm"].is_null(), "no purchase, no RFM");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn identified_visitors_bring_their_anonymous_history(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.events(json!([
        {"event_id": "a1", "anonymous_id": "anon-1", "type": "view", "timestamp": days_ago(5)},
        {"event_id": "a2", "anonymous_id": "anon-1", "type": "add_to_cart", "timestamp": days_ago(5)}
    ]))
    .await;
    let (status, linked) = api
        .post(
            "/v1/profiling/identify",
            &json!({"anonymous_id": "anon-1", "customer_id": "c1"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{linked}");
    assert_eq!(linked["events_linked"], 2);
    assert_eq!(api.profile("c1").await["event_count"], 2);

    // Later anonymous events of a known visitor go straight to the customer.
    api.events(json!([{"event_id": "a3", "anonymous_id": "anon-1", "type": "view", "timestamp": days_ago(1)}])).await;
    assert_eq!(api.profile("c1").await["event_count"], 3);

    // An event naming both ids links them too.
    api.events(json!([{"event_id": "b1", "anonymous_id": "anon-2", "type": "view", "timestamp": days_ago(2)}])).await;
    api.events(json!([{"event_id": "b2", "anonymous_id": "anon-2", "customer_id": "c2", "type": "purchase", "timestamp": days_ago(1), "revenue": 5, "currency": "EUR"}]))
        .await;
    assert_eq!(api.profile("c2").await["event_count"], 2);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn incremental_profiles_equal_a_rebuild_from_events(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.post("/v1/profiling/products", &json!({"items": [{"product_id": "p", "title": "P", "category": "c", "price": 1, "currency": "EUR"}]}))
        .await;
    // Events out of order, in several batches.
    for chunk in [[5, 1, 9], [2, 8, 3], [7, 4, 6]] {
        let items: Vec<_> = chunk
            .iter()
            .flat_map(|d| {
                let kind = if d % 3 == 0 { "purchase" } else if d % 3 == 1 { "email_open" } else { "view" };
                vec![json!({"event_id": format!("e{d}"), "customer_id": format!("c{}", d % 2), "type": kind,
                            "timestamp": days_ago(*d), "revenue": if kind == "purchase" { json!(d * 10) } else { json!(null) },
                            "currency": "EUR", "product_ids": ["p"]})]
            })
            .collect();
        api.events(json!(items)).await;
    }
    let before: Vec<serde_json::Value> = vec![api.profile("c0").await, api.profile("c1").await];

    let mut conn = pool.acquire().await.expect("conn");
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM profiling.customers")
        .fetch_all(&mut *conn)
        .await
        .expect("ids");
    mercato_profiling::ingest::rebuild_profiles(&mut conn, api.tenant_id, &ids)
        .await
        .expect("rebuild");
    let after: Vec<serde_json::Value> = vec![api.profile("c0").await, api.profile("c1").await];
    for (b, a) in before.iter().zip(&after) {
        for key in [
            "event_count",
            "frequency",
            "monetary",
            "first_purchase_at",
            "last_purchase_at",
            "preferred_channel",
            "best_send_hour",
            "top_categories",
            "top_products",
            "last_activity_at",
        ] {
            assert_eq!(b[key], a[key], "{key} differs after rebuild");
        }
    }
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn lifetime_value_is_fitted_as_a_job_and_read_in_profiles(pool: PgPool) {
    let api = Api::start(&pool).await;
    let mut items = Vec::new();
    for c in 0..30 {
        for k in 0..(c % 4 + 1) {
            items.push(json!({"event_id": format!("e{c}-{k}"), "customer_id": format!("c{c}"), "type": "purchase",
                              "timestamp": days_ago(200 - 40 * k - c), "revenue": 20 + c, "currency": "EUR"}));
        }
    }
    api.events(json!(items)).await;
    let before = api.profile("c3").await;
    assert_eq!(before["value"]["model"], "prior");

    let (status, job) = api.post("/v1/profiling/clv/fit", &json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let settings = mercato_platform::testing::settings();
    let (stop, _workers) = mercato_platform::service::start_jobs(
        &settings,
        &pool,
        vec![std::sync::Arc::new(mercato_profiling::jobs::FitClv)],
    );
    let job_id = job["id"].as_str().expect("id");
    let mut status = String::new();
    for _ in 0..200 {
        let row: String =
            sqlx::query_scalar("SELECT status FROM platform.jobs WHERE id = $1::uuid")
                .bind(job_id)
                .fetch_one(&pool)
                .await
                .expect("job");
        status = row;
        if status == "succeeded" || status == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stop.send(true).expect("stop");
    assert_eq!(status, "succeeded");

    let (_, model) = api.get("/v1/profiling/clv").await;
    assert_eq!(model["customers"], 30);
    assert_eq!(
        model["used_prior"], true,
        "30 buyers are too few to stand alone"
    );
    let loyal = api.profile("c3").await;
    let once = api.profile("c0").await;
    assert_eq!(loyal["value"]["model"], "tenant");
    let p = loyal["value"]["probability_alive"]
        .as_f64()
        .expect("p alive");
    assert!((0.0..=1.0).contains(&p));
    assert!(
        loyal["value"]["predicted_clv_12m"].as_f64().expect("clv")
            > once["value"]["predicted_clv_12m"].as_f64().expect("clv")
    );
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn concurrent_batches_creating_the_same_customers_both_succeed(pool: PgPool) {
    let api = std::sync::Arc::new(Api::start(&pool).await);
    let mut tasks = Vec::new();
    for client in 0..4 {
        let api = api.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let items: Vec<_> = (0..200)
                    .map(|i| json!({"event_id": format!("{client}-{round}-{i}"), "customer_id": format!("c{}", (i + round * 7) % 120),
                                    "type": "view", "timestamp": days_ago(1)}))
                    .collect();
                let body = api.events(json!(items)).await;
                assert_eq!(body["accepted"], 200, "{body}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let customers: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.customers")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(customers, 120);
    let events: i64 = sqlx::query_scalar("SELECT sum(event_count)::int8 FROM profiling.profiles")
        .fetch_one(&pool)
        .await
        .expect("sum");
    assert_eq!(events, 4000);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn the_recompute_job_restores_every_profile_from_events(pool: PgPool) {
    let api = Api::start(&pool).await;
    api.post("/v1/profiling/products", &json!({"items": [{"product_id": "p", "title": "P", "category": "c", "price": 1, "currency": "EUR"}]}))
        .await;
    // More customers than one chunk of the job.
    api.post("/v1/profiling/products", &json!({"items": [{"product_id": "q", "title": "Q", "category": "d", "price": 2, "currency": "EUR"}]}))
        .await;
    let kinds = [
        "purchase",
        "view",
        "email_open",
        "push_open",
        "add_to_cart",
        "sms_click",
    ];
    let items: Vec<_> = (0..1200)
        .map(|i| {
            let kind = kinds[i % kinds.len()];
            json!({"event_id": format!("e{i}"), "customer_id": format!("c{}", i % 600), "type": kind,
                   "timestamp": days_ago(1 + (i % 20) as i64), "revenue": if kind == "purchase" { json!(12.5) } else { json!(null) },
                   "currency": "EUR", "product_ids": if i % 4 == 0 { json!(["p", "q", "p"]) } else { json!(["p"]) }})
        })
        .collect();
    for chunk in items.chunks(500) {
        api.events(json!(chunk)).await;
    }
    let mut before = Vec::new();
    for c in ["c0", "c7", "c12", "c301"] {
        before.push(api.profile(c).await);
    }
    let snapshot: Vec<(i64, String)> = sqlx::query_as(
        "SELECT event_count, revenue_total::text FROM profiling.profiles ORDER BY customer_id",
    )
    .fetch_all(&pool)
    .await
    .expect("profiles");
    sqlx::query(
        "UPDATE profiling.profiles SET event_count = 0, revenue_total = 0, category_counts = '{}'",
    )
    .execute(&pool)
    .await
    .expect("damage");

    let (status, job) = api
        .post("/v1/profiling/profiles/recompute", &json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (stop, _workers) = mercato_platform::service::start_jobs(
        &mercato_platform::testing::settings(),
        &pool,
        vec![std::sync::Arc::new(
            mercato_profiling::jobs::RecomputeProfiles,
        )],
    );
    let mut result = serde_json::Value::Null;
    for _ in 0..400 {
        let (status, r): (String, Option<serde_json::Value>) =
            sqlx::query_as("SELECT status, result FROM platform.jobs WHERE id = $1::uuid")
                .bind(job["id"].as_str().expect("id"))
                .fetch_one(&pool)
                .await
                .expect("job");
        if status == "succeeded" {
            result = r.unwrap_or_default();
            break;
        }
        assert_ne!(status, "failed");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    stop.send(true).expect("stop");
    assert_eq!(result["customers"], 600);
    let after: Vec<(i64, String)> = sqlx::query_as(
        "SELECT event_count, revenue_total::text FROM profiling.profiles ORDER BY customer_id",
    )
    .fetch_all(&pool)
    .await
    .expect("profiles");
    assert_eq!(after, snapshot);
    for (c, b) in ["c0", "c7", "c12", "c301"].into_iter().zip(&before) {
        let restored = api.profile(c).await;
        for key in [
            "event_count",
            "frequency",
            "monetary",
            "first_purchase_at",
            "last_purchase_at",
            "last_activity_at",
            "preferred_channel",
            "best_send_hour",
            "top_categories",
            "top_products",
            "rfm",
        ] {
            assert_eq!(
                restored[key], b[key],
                "{c}: {key} differs after the recompute job"
            );
        }
    }
}
