//! Bulk imports: files stream into the database, a job validates every line and reports
//! rejects with their line number and reason.

mod support;

use std::{sync::Arc, time::Duration};

use mercato_platform::{service::start_jobs, testing};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use support::{Api, days_ago};

async fn upload(api: &Api, query: &str, body: String) -> (StatusCode, Value) {
    let r = api
        .server
        .client
        .post(api.server.url(&format!("/v1/profiling/imports?{query}")))
        .bearer_auth(&api.key)
        .header("content-type", "text/plain")
        .body(body)
        .send()
        .await
        .expect("request");
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn run_job(pool: &PgPool, job_id: &str) -> Value {
    let (stop, _workers) = start_jobs(
        &testing::settings(),
        pool,
        vec![Arc::new(mercato_profiling::jobs::Import)],
    );
    for _ in 0..400 {
        let (status, result): (String, Option<Value>) =
            sqlx::query_as("SELECT status, result FROM platform.jobs WHERE id = $1::uuid")
                .bind(job_id)
                .fetch_one(pool)
                .await
                .expect("job");
        if status == "succeeded" {
            stop.send(true).expect("stop");
            return result.expect("result");
        }
        assert_ne!(status, "failed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("import did not finish");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn csv_customers_import_with_line_numbered_rejects(pool: PgPool) {
    let api = Api::start(&pool).await;
    let csv = "external_id,email,country,consent.email,traits.plan\r\n\
               c1,Ada@Example.com,gb,yes,gold\r\n\
               c2,not-an-email,de,no,\r\n\
               \r\n\
               c3,\"bob@example.com\",XX,true,silver\r\n\
               c4,carol@example.com,fr,true\r\n\
               c5,dan@example.com,us,false,bronze";
    let (status, job) = upload(&api, "kind=customers&format=csv", csv.to_owned()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let result = run_job(&pool, job["id"].as_str().expect("id")).await;
    assert_eq!(result["accepted"], 2, "{result}");
    assert_eq!(result["rejected"], 3);
    let rejects: Vec<(i64, String)> = result["rejects"]
        .as_array()
        .expect("rejects")
        .iter()
        .map(|r| {
            (
                r["line"].as_i64().unwrap_or_default(),
                r["errors"][0]["field"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejects,
        [
            (3, "email".to_owned()),
            (5, "country".to_owned()),
            (6, "line".to_owned())
        ]
    );

    let (_, page) = api.get("/v1/profiling/customers?external_id=c1").await;
    assert_eq!(page["items"][0]["email"], "ada@example.com");
    assert_eq!(page["items"][0]["consent"]["email"], true);
    assert_eq!(page["items"][0]["traits"]["plan"], "gold");
    let staged: i64 = sqlx::query_scalar("SELECT count(*) FROM profiling.import_lines")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(staged, 0, "the upload is dropped once imported");
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn ndjson_events_import_reaches_profiles_once(pool: PgPool) {
    let api = Api::start(&pool).await;
    let mut lines = Vec::new();
    for i in 0..2500 {
        lines.push(serde_json::json!({"event_id": format!("e{i}"), "customer_id": format!("c{}", i % 50), "type": "purchase",
                                      "timestamp": days_ago(1 + i % 30), "revenue": 10, "currency": "EUR"}).to_string());
    }
    lines.push("{not json".to_owned());
    lines.push(serde_json::json!({"event_id": "e1", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(2), "revenue": 10, "currency": "EUR"}).to_string());
    lines.push(serde_json::json!({"event_id": "bad", "customer_id": "c1", "type": "purchase", "timestamp": days_ago(2), "revenue": -1, "currency": "EUR"}).to_string());
    let (status, job) = upload(&api, "kind=events&format=ndjson", lines.join("\n")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let result = run_job(&pool, job["id"].as_str().expect("id")).await;
    assert_eq!(
        (
            result["accepted"].as_i64(),
            result["duplicates"].as_i64(),
            result["rejected"].as_i64()
        ),
        (Some(2500), Some(1), Some(2))
    );
    assert_eq!(result["rejects"][0]["line"], 2501);
    assert_eq!(result["rejects"][1]["errors"][0]["field"], "revenue");
    assert_eq!(api.profile("c7").await["frequency"], 50);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn bad_import_requests_are_refused(pool: PgPool) {
    let api = Api::start(&pool).await;
    let (status, body) = upload(&api, "kind=orders&format=csv", "a\n".into()).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("kind"))
    );
    let (status, body) = upload(&api, "kind=events&format=ndjson", "\n\n".into()).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("body"))
    );
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.jobs")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(jobs, 0);
}
