//! Behavioural clusters as a job: k chosen by silhouette, described, and usable in segments.

mod support;

use std::{sync::Arc, time::Duration};

use mercato_platform::{service::start_jobs, testing};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Api, days_ago};

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn customers_fall_into_their_behavioural_groups(pool: PgPool) {
    let api = Api::start(&pool).await;
    let mut items = Vec::new();
    for c in 0..20 {
        // Frequent, recent, big buyers.
        for k in 0..12 {
            items.push(json!({"event_id": format!("h{c}-{k}"), "customer_id": format!("heavy{c}"), "type": "purchase",
                              "timestamp": days_ago(1 + k * 5), "revenue": 150 + c, "currency": "EUR"}));
        }
        // One small purchase long ago.
        items.push(json!({"event_id": format!("o{c}"), "customer_id": format!("once{c}"), "type": "purchase",
                          "timestamp": days_ago(300 + c), "revenue": 9, "currency": "EUR"}));
        // Readers who open everything and buy nothing.
        for k in 0..8 {
            items.push(json!({"event_id": format!("r{c}-{k}"), "customer_id": format!("reader{c}"), "type": "email_open",
                              "timestamp": days_ago(2 + k)}));
        }
    }
    for chunk in items.chunks(500) {
        api.events(json!(chunk)).await;
    }
    let (status, body) = api.post("/v1/profiling/clusters", &json!({"k": 1})).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("k"))
    );

    let (status, job) = api
        .post(
            "/v1/profiling/clusters",
            &json!({"k_min": 2, "k_max": 5, "seed": 7}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let (stop, _workers) = start_jobs(
        &testing::settings(),
        &pool,
        vec![Arc::new(mercato_profiling::jobs::Cluster)],
    );
    let mut done = false;
    for _ in 0..400 {
        let status: String =
            sqlx::query_scalar("SELECT status FROM platform.jobs WHERE id = $1::uuid")
                .bind(job["id"].as_str().expect("id"))
                .fetch_one(&pool)
                .await
                .expect("job");
        assert_ne!(status, "failed");
        if status == "succeeded" {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop.send(true).expect("stop");
    assert!(done, "clustering finished");

    let (_, run) = api.get("/v1/profiling/clusters").await;
    assert_eq!(run["k"], 3, "{run}");
    assert_eq!(run["customers"], 60);
    let heavy = api.profile("heavy3").await["cluster"].clone();
    let once = api.profile("once3").await["cluster"].clone();
    let reader = api.profile("reader3").await["cluster"].clone();
    assert!(
        heavy != once && once != reader && heavy != reader,
        "{heavy} {once} {reader}"
    );
    let heavy_summary: &Value = run["clusters"]
        .as_array()
        .expect("clusters")
        .iter()
        .find(|c| c["cluster"] == heavy)
        .expect("summary");
    assert_eq!(heavy_summary["size"], 20);
    assert!(
        heavy_summary["distinguishing"]
            .to_string()
            .contains("high frequency"),
        "{heavy_summary}"
    );

    let (_, preview) = api
        .post("/v1/profiling/segments/preview", &json!({"rule": {"field": "profile.cluster", "op": "eq", "value": heavy}, "sample": 100}))
        .await;
    assert_eq!(preview["count"], 20);
    assert!(
        preview["sample"]
            .as_array()
            .expect("sample")
            .iter()
            .all(|m| m["external_id"]
                .as_str()
                .is_some_and(|e| e.starts_with("heavy")))
    );
}
