//! A gateway in embedded mode on port 0, over the database `#[sqlx::test]` made for the test.

#![allow(dead_code)]

use std::sync::Arc;

use mercato_platform::{
    settings::Settings,
    testing::{self, TestServer},
};
use reqwest::{Response, StatusCode};
use serde_json::Value;
use sqlx::PgPool;

pub const ADMIN_KEY: &str = "test-operator-key-0123456789";

pub fn settings() -> Settings {
    let mut settings = testing::settings();
    settings.secrets.admin_key = Some(ADMIN_KEY.to_owned().into());
    settings
}

pub async fn gateway(pool: &PgPool, settings: Settings) -> TestServer {
    let gateway = mercato_gateway::build(Arc::new(settings), pool.clone())
        .await
        .expect("gateway builds");
    TestServer::spawn(gateway.router).await
}

/// Asserts a problem+json answer with this status; returns the body.
pub async fn problem(response: Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status, "unexpected status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: Value = response.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["request_id"].as_str().is_some_and(|id| !id.is_empty()),
        "problem carries the request id: {body}"
    );
    body
}

/// The first field named in a problem's `errors`.
pub fn field(problem: &Value) -> &str {
    problem["errors"][0]["field"].as_str().unwrap_or_default()
}
