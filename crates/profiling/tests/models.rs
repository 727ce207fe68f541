//! Sequence models through the API: the data checks, training as a job, the stored
//! evaluation, activation and rollback, scoring into traits and an explained prediction.

mod support;

use std::{sync::Arc, time::Duration};

use mercato_platform::{service::start_jobs, testing};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{Api, days_ago};

/// 150 customers over 150 days: a third buy every 8-12 days after a view and a cart, a
/// third browse and rarely buy, a third bought early and went quiet.
async fn shop(api: &Api) {
    let mut seed: u64 = 42;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut events = Vec::new();
    for c in 0..150 {
        let id = format!("m{c}");
        let mut day = 150.0 - next() * 10.0;
        let mut n = 0;
        while day > 1.0 {
            let (kind, gap) = match c % 3 {
                0 => ("purchase", 8.0 + next() * 4.0),
                1 if next() < 0.1 => ("purchase", 5.0),
                1 => ("view", 3.0 + next() * 4.0),
                _ if day > 100.0 => ("purchase", 10.0),
                _ => ("view", 40.0),
            };
            if kind == "purchase" {
                events.push(
                    json!({"event_id": format!("{id}-{n}v"), "customer_id": id, "type": "view",
                                   "timestamp": days_ago(day as i64 + 1)}),
                );
                events.push(json!({"event_id": format!("{id}-{n}c"), "customer_id": id, "type": "add_to_cart",
                                   "timestamp": days_ago(day as i64 + 1)}));
                events.push(json!({"event_id": format!("{id}-{n}"), "customer_id": id, "type": kind,
                                   "timestamp": days_ago(day as i64), "revenue": 20, "currency": "EUR"}));
            } else {
                events.push(
                    json!({"event_id": format!("{id}-{n}"), "customer_id": id, "type": kind,
                                   "timestamp": days_ago(day as i64)}),
                );
            }
            n += 1;
            day -= gap;
        }
    }
    for chunk in events.chunks(1000) {
        api.events(json!(chunk)).await;
    }
}

async fn run_job(pool: &PgPool, job: &Value) -> Value {
    let (stop, _workers) = start_jobs(
        &testing::settings(),
        pool,
        vec![
            Arc::new(mercato_profiling::jobs::TrainModel),
            Arc::new(mercato_profiling::jobs::ScoreModel),
        ],
    );
    let id: uuid::Uuid = job["id"].as_str().expect("job id").parse().expect("uuid");
    let tenant: uuid::Uuid =
        sqlx::query_scalar("SELECT tenant_id FROM platform.jobs WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .expect("job");
    for _ in 0..1200 {
        let job = mercato_platform::jobs::queue::get(pool, tenant, id)
            .await
            .expect("read")
            .expect("job");
        if job.status.is_terminal() {
            stop.send(true).expect("stop");
            return serde_json::to_value(&job).expect("json");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("job did not finish");
}

fn small() -> Value {
    json!({"seq_len": 10, "embedding_dim": 8, "hidden_dim": 8, "epochs": 8, "batch_size": 64,
           "learning_rate": 0.01, "patience": 3, "seed": 3})
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn too_little_data_and_bad_settings_are_refused(pool: PgPool) {
    let api = Api::start(&pool).await;
    let (status, body) = api
        .post("/v1/profiling/models", &json!({"task": "purchase"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["field"], "events");
    api.events(json!([{"event_id": "e1", "customer_id": "a", "type": "purchase",
                        "timestamp": days_ago(200), "revenue": 5, "currency": "EUR"},
                      {"event_id": "e2", "customer_id": "a", "type": "view", "timestamp": days_ago(2)}]))
        .await;
    let (status, body) = api
        .post(
            "/v1/profiling/models",
            &json!({"task": "purchase", "horizon_days": 14}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("positive") && message.contains("200"),
        "{body}"
    );
    let (status, body) = api
        .post(
            "/v1/profiling/models",
            &json!({"task": "purchase", "hyper": {"layers": 3, "learning_rate": 0}, "horizon_days": 0}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        ["hyper.layers", "hyper.learning_rate", "horizon_days"]
    );
    let (status, _) = api
        .post("/v1/profiling/models", &json!({"task": "churn"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Nothing to score with yet.
    let (status, body) = api.post("/v1/profiling/models/score", &json!({})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let id = api.customer_id("a").await;
    let (status, _) = api
        .get(&format!("/v1/profiling/customers/{id}/prediction"))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn train_evaluate_activate_score_and_explain(pool: PgPool) {
    let api = Api::start(&pool).await;
    shop(&api).await;
    let request =
        json!({"task": "purchase", "horizon_days": 14, "min_positive": 20, "hyper": small()});
    let (status, job) = api.post("/v1/profiling/models", &request).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let done = run_job(&pool, &job).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let model_id = done["result"]["model_id"]
        .as_str()
        .expect("model")
        .to_owned();

    let (status, model) = api.get(&format!("/v1/profiling/models/{model_id}")).await;
    assert_eq!(status, StatusCode::OK, "{model}");
    let eval = &model["evaluation"];
    let auc = eval["model"]["roc_auc"].as_f64().expect("auc");
    let baseline = eval["logistic_rfm"]["roc_auc"]
        .as_f64()
        .expect("baseline auc");
    assert_eq!(eval["majority"]["roc_auc"], 0.5);
    assert!(auc > 0.6, "the model learns the rhythm: {eval}");
    assert_eq!(model["beats_baseline"], auc > baseline && auc > 0.5);
    assert_eq!(
        model["active"], model["beats_baseline"],
        "activated only when it beats them"
    );
    let counts = &model["data_window"]["counts"];
    assert!(
        counts["train"]["positives"].as_u64().expect("positives") >= 20,
        "{counts}"
    );
    assert!(counts["test"]["examples"].as_u64().expect("test") > 0);
    assert!(!model["epochs"].as_array().expect("epochs").is_empty());
    let progress: Vec<Value> = done["counters"]["epoch"]
        .as_object()
        .map(|_| vec![])
        .unwrap_or_default();
    assert!(progress.is_empty());

    // A second version; activation moves between them (roll back = activate the older).
    let (_, job2) = api.post("/v1/profiling/models", &request).await;
    let done2 = run_job(&pool, &job2).await;
    let second = done2["result"]["model_id"]
        .as_str()
        .expect("model")
        .to_owned();
    let (status, _) = api
        .post(
            &format!("/v1/profiling/models/{second}/activate"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, first) = api
        .post(
            &format!("/v1/profiling/models/{model_id}/activate"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first["active"], true);
    let (_, list) = api.get("/v1/profiling/models").await;
    let active: Vec<&Value> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|m| m["active"] == true)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["id"], model_id.as_str());
    // Same seed, same data: the same weights and therefore the same evaluation.
    assert_eq!(done2["result"]["evaluation"], done["result"]["evaluation"]);

    // Scoring writes the trait; segments can use it.
    let (status, job) = api
        .post("/v1/profiling/models/score", &json!({"task": "purchase"}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let scored = run_job(&pool, &job).await;
    assert_eq!(scored["status"], "succeeded", "{scored}");
    assert_eq!(scored["result"]["customers"], 150);
    let loyal = api.customer_id("m0").await;
    let (_, c) = api.get(&format!("/v1/profiling/customers/{loyal}")).await;
    let p = c["traits"]["purchase_propensity"].as_f64().expect("trait");
    assert!((0.0..=1.0).contains(&p), "{c}");
    let (status, seg) = api
        .post(
            "/v1/profiling/segments/preview",
            &json!({"rule": {"field": "traits.purchase_propensity", "op": "gte", "value": 0}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{seg}");
    assert_eq!(seg["count"], 150);

    // An explained prediction.
    let (status, pred) = api
        .get(&format!("/v1/profiling/customers/{loyal}/prediction"))
        .await;
    assert_eq!(status, StatusCode::OK, "{pred}");
    assert_eq!(pred["model_id"], model_id.as_str());
    let score = pred["score"].as_f64().expect("score");
    assert!((score - p).abs() < 1e-3, "{score} vs stored {p}");
    let influences = pred["influences"].as_array().expect("influences");
    assert!(!influences.is_empty() && influences.len() <= 5, "{pred}");
    assert!(influences[0]["kind"].is_string());
    let (status, _) = api
        .get(&format!(
            "/v1/profiling/customers/{}/prediction",
            uuid::Uuid::now_v7()
        ))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // New events re-score only their customer, incrementally: one pass is queued for a burst.
    let fresh = |n: usize| {
        json!([{"event_id": format!("late-{n}"), "customer_id": "m1", "type": "add_to_cart",
                "timestamp": days_ago(0)}])
    };
    api.events(fresh(1)).await;
    api.events(fresh(2)).await;
    let queued: Vec<Value> = sqlx::query_scalar(
        "SELECT to_jsonb(j) FROM platform.jobs j WHERE kind = 'profiling.score_model' AND status = 'queued'",
    )
    .fetch_all(&pool)
    .await
    .expect("jobs");
    assert_eq!(queued.len(), 1, "one pass for the burst: {queued:?}");
    assert_eq!(queued[0]["payload"]["incremental"], true);
    let inc = run_job(&pool, &queued[0]).await;
    assert_eq!(inc["status"], "succeeded", "{inc}");
    assert_eq!(inc["result"]["purchase"]["customers"], 1, "{inc}");
    let m1 = api.customer_id("m1").await;
    let (_, c) = api.get(&format!("/v1/profiling/customers/{m1}")).await;
    let stored = c["traits"]["purchase_propensity"].as_f64().expect("trait");
    let (_, pred) = api
        .get(&format!("/v1/profiling/customers/{m1}/prediction"))
        .await;
    let now = pred["score"].as_f64().expect("score");
    assert!(
        (stored - now).abs() < 1e-3,
        "the trait follows the new events: {stored} vs {now}"
    );
}
