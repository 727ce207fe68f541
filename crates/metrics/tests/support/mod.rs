//! The profiling and metrics services together behind the real auth stack, on port 0,
//! over the database `#[sqlx::test]` gives each test.

#![allow(dead_code)]

use std::sync::Arc;

use mercato_platform::{
    auth::Role,
    service::{standalone_app, start_jobs},
    testing::{self, TestServer, tenant_with_key},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;

pub struct Api {
    pub server: TestServer,
    pub key: String,
    pub tenant_id: uuid::Uuid,
    /// The job workers (the optimiser runs there); stopped when the test ends.
    _jobs: (tokio::sync::watch::Sender<bool>, tokio::task::JoinSet<()>),
}

impl Api {
    pub async fn start(pool: &PgPool) -> Self {
        let settings = Arc::new(testing::settings());
        let profiling = mercato_profiling::parts(pool.clone(), settings.clone())
            .await
            .expect("profiling parts");
        let metrics = mercato_metrics::parts(pool.clone(), settings.clone())
            .await
            .expect("metrics parts");
        let handlers = profiling
            .jobs
            .iter()
            .chain(&metrics.jobs)
            .cloned()
            .collect();
        let jobs = start_jobs(&settings, pool, handlers);
        let server =
            TestServer::spawn(standalone_app(&settings, pool, vec![profiling, metrics])).await;
        let tenant = tenant_with_key(pool, Role::Writer).await;
        Self {
            server,
            key: tenant.key,
            tenant_id: tenant.id,
            _jobs: jobs,
        }
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut r = self
            .server
            .client
            .request(method, self.server.url(path))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            r = r.json(b);
        }
        let r = r.send().await.expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// Creates customers `c0..cn` with the given per-customer JSON (consent, traits);
    /// returns their ids in order.
    pub async fn customers(&self, items: Vec<Value>) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in items.chunks(1000) {
            let (status, body) = self
                .post("/v1/profiling/customers/batch", &json!({"items": chunk}))
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            for item in body["items"].as_array().expect("items") {
                ids.push(item["id"].as_str().expect("id").to_owned());
            }
        }
        ids
    }

    pub async fn create_campaign(&self, body: Value) -> Value {
        let (status, c) = self.post("/v1/metrics/campaigns", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{c}");
        c
    }

    pub async fn set_status(&self, id: &str, status: &str) -> (StatusCode, Value) {
        self.post(
            &format!("/v1/metrics/campaigns/{id}/status"),
            &json!({"status": status}),
        )
        .await
    }

    pub async fn decide(&self, id: &str, customers: &[String]) -> Value {
        let (status, body) = self
            .post(
                &format!("/v1/metrics/campaigns/{id}/decisions"),
                &json!({"customers": customers}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn outcomes(&self, items: Vec<Value>) -> Value {
        let (status, body) = self
            .post("/v1/metrics/outcomes/batch", &json!({"items": items}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}
