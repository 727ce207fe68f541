//! Helpers for tests that run the real stack: a server on `127.0.0.1:0`, tenants and keys
//! written straight into the database the test was given by `#[sqlx::test]`.

use axum::Router;
use sqlx::PgPool;
use tokio::net::TcpListener;
use uuid::Uuid;

use crate::{
    auth::{Role, generate_key},
    settings::Settings,
};

/// Settings as the test suite uses them: the defaults with `config/test.toml` applied.
pub fn settings() -> Settings {
    let env = std::env::var("MERCATO_ENV").unwrap_or_else(|_| "test".to_owned());
    Settings::load_env(&env).expect("test settings load")
}

/// A server running a router on an ephemeral port, with a client for it.
pub struct TestServer {
    pub base_url: String,
    pub client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn spawn(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base_url: format!("http://{addr}"),
            client: reqwest::Client::new(),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tenant and one key of the given role, inserted directly.
pub struct TestTenant {
    pub id: Uuid,
    pub key: String,
    pub key_id: Uuid,
}

pub async fn tenant_with_key(pool: &PgPool, role: Role) -> TestTenant {
    let id = Uuid::new_v4();
    sqlx::query("INSERT INTO platform.tenants (id, name) VALUES ($1, $2)")
        .bind(id)
        .bind(format!("test tenant {id}"))
        .execute(pool)
        .await
        .expect("insert tenant");
    let (key, key_id) = key_for(pool, id, role).await;
    TestTenant { id, key, key_id }
}

/// Another key for an existing tenant.
pub async fn key_for(pool: &PgPool, tenant_id: Uuid, role: Role) -> (String, Uuid) {
    let key = generate_key().expect("key");
    let key_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO platform.api_keys (tenant_id, id, name, role, prefix, key_hash) VALUES ($1, $2, 'test', $3, $4, $5)",
    )
    .bind(tenant_id)
    .bind(key_id)
    .bind(role.as_str())
    .bind(&key.prefix)
    .bind(&key.hash)
    .execute(pool)
    .await
    .expect("insert key");
    (key.secret, key_id)
}
