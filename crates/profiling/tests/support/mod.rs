//! The profiling service alone behind the real auth stack, on port 0, over the database
//! `#[sqlx::test]` gives each test.

#![allow(dead_code)]

use std::sync::Arc;

use mercato_platform::{
    auth::Role,
    service::standalone_app,
    testing::{self, TestServer, tenant_with_key},
};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;

pub struct Api {
    pub server: TestServer,
    pub key: String,
    pub tenant_id: uuid::Uuid,
}

impl Api {
    pub async fn start(pool: &PgPool) -> Self {
        let settings = testing::settings();
        let parts = mercato_profiling::parts(pool.clone(), Arc::new(settings.clone()))
            .await
            .expect("parts");
        let server = TestServer::spawn(standalone_app(&settings, pool, vec![parts])).await;
        let tenant = tenant_with_key(pool, Role::Writer).await;
        Self {
            server,
            key: tenant.key,
            tenant_id: tenant.id,
        }
    }

    /// Another tenant's key on the same server.
    pub async fn other_tenant_key(&self, pool: &PgPool) -> String {
        tenant_with_key(pool, Role::Writer).await.key
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let r = self
            .server
            .client
            .post(self.server.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let r = self
            .server
            .client
            .get(self.server.url(path))
            .bearer_auth(&self.key)
            .send()
            .await
            .expect("request");
        let status = r.status();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Posts events; asserts the batch call itself succeeded.
    pub async fn events(&self, items: Value) -> Value {
        let (status, body) = self
            .post(
                "/v1/profiling/events/batch",
                &serde_json::json!({"items": items}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn customer_id(&self, external_id: &str) -> String {
        let (_, page) = self
            .get(&format!(
                "/v1/profiling/customers?external_id={external_id}"
            ))
            .await;
        page["items"][0]["id"]
            .as_str()
            .expect("customer exists")
            .to_owned()
    }

    pub async fn profile(&self, external_id: &str) -> Value {
        let id = self.customer_id(external_id).await;
        let (status, body) = self
            .get(&format!("/v1/profiling/customers/{id}/profile"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

pub fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339()
}
