//! Tenants and API keys: the operator creates tenants and keys; keys are shown once,
//! stored hashed, scoped to their tenant and role, and stop working when revoked.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::PgPool;
use support::{ADMIN_KEY, field, gateway, problem, settings};

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn operator_creates_tenant_and_keys_that_work_until_revoked(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let c = &server.client;

    let tenant: Value = c
        .post(server.url("/v1/admin/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "Acme Outdoor"}))
        .send()
        .await
        .expect("request")
        .error_for_status()
        .expect("201")
        .json()
        .await
        .expect("json");
    let tenant_id = tenant["id"].as_str().expect("id").to_owned();

    let issued = c
        .post(server.url(&format!("/v1/admin/tenants/{tenant_id}/keys")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "shop", "role": "writer"}))
        .send()
        .await
        .expect("request");
    assert_eq!(issued.status(), StatusCode::CREATED);
    let issued: Value = issued.json().await.expect("json");
    let key = issued["key"]
        .as_str()
        .expect("secret shown once")
        .to_owned();
    let key_id = issued["id"].as_str().expect("id").to_owned();

    // Stored hashed: the secret appears nowhere in the database.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM platform.api_keys")
        .fetch_one(&pool)
        .await
        .expect("row");
    assert_eq!(stored.len(), 32);
    let leaked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.api_keys WHERE prefix = $1 OR name = $1")
            .bind(&key)
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(leaked, 0);

    // Listing never shows the secret.
    let listed: Value = c
        .get(server.url(&format!("/v1/admin/tenants/{tenant_id}/keys")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
    assert!(listed["items"][0].get("key").is_none());
    assert!(!listed.to_string().contains(&key));

    // The key works for its tenant's data.
    let ok = c
        .get(server.url("/v1/profiling/customers"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request");
    assert_eq!(ok.status(), StatusCode::OK);

    // Revoked: it stops working at once.
    let revoked = c
        .delete(server.url(&format!("/v1/admin/tenants/{tenant_id}/keys/{key_id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request");
    assert_eq!(revoked.status(), StatusCode::OK);
    let after = c
        .get(server.url("/v1/profiling/customers"))
        .bearer_auth(&key)
        .send()
        .await
        .expect("request");
    problem(after, StatusCode::UNAUTHORIZED).await;
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn missing_or_unknown_keys_are_401(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let none = server
        .client
        .get(server.url("/v1/profiling/customers"))
        .send()
        .await
        .expect("request");
    problem(none, StatusCode::UNAUTHORIZED).await;
    let bad = server
        .client
        .get(server.url("/v1/jobs"))
        .bearer_auth("mk_not-a-real-key")
        .send()
        .await
        .expect("request");
    problem(bad, StatusCode::UNAUTHORIZED).await;
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn roles_limit_what_a_key_may_do(pool: PgPool) {
    use mercato_platform::{
        auth::Role,
        testing::{key_for, tenant_with_key},
    };
    let server = gateway(&pool, settings()).await;
    let tenant = tenant_with_key(&pool, Role::Reader).await;
    let (writer, _) = key_for(&pool, tenant.id, Role::Writer).await;
    let (admin, _) = key_for(&pool, tenant.id, Role::Admin).await;
    let c = &server.client;
    let customer = json!({"external_id": "c1"});

    let reader_write = c
        .post(server.url("/v1/profiling/customers"))
        .bearer_auth(&tenant.key)
        .json(&customer)
        .send()
        .await
        .expect("request");
    problem(reader_write, StatusCode::FORBIDDEN).await;
    let reader_read = c
        .get(server.url("/v1/profiling/customers"))
        .bearer_auth(&tenant.key)
        .send()
        .await
        .expect("request");
    assert_eq!(reader_read.status(), StatusCode::OK);

    // Writers cannot manage keys; tenant admins can, for their own tenant only.
    let keys = format!("/v1/admin/tenants/{}/keys", tenant.id);
    let writer_keys = c
        .get(server.url(&keys))
        .bearer_auth(&writer)
        .send()
        .await
        .expect("request");
    problem(writer_keys, StatusCode::FORBIDDEN).await;
    let admin_keys = c
        .get(server.url(&keys))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("request");
    assert_eq!(admin_keys.status(), StatusCode::OK);

    // Only the operator creates tenants.
    let admin_tenant = c
        .post(server.url("/v1/admin/tenants"))
        .bearer_auth(&admin)
        .json(&json!({"name": "x"}))
        .send()
        .await
        .expect("request");
    problem(admin_tenant, StatusCode::FORBIDDEN).await;

    // The operator key holds no tenant data.
    let operator_data = c
        .get(server.url("/v1/profiling/customers"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("request");
    problem(operator_data, StatusCode::FORBIDDEN).await;
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn another_tenants_resources_look_absent(pool: PgPool) {
    use mercato_platform::{auth::Role, testing::tenant_with_key};
    let server = gateway(&pool, settings()).await;
    let a = tenant_with_key(&pool, Role::Admin).await;
    let b = tenant_with_key(&pool, Role::Admin).await;
    let c = &server.client;

    let created: Value = c
        .post(server.url("/v1/profiling/customers"))
        .bearer_auth(&a.key)
        .json(&json!({"external_id": "c1", "email": "a@example.com"}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let id = created["id"].as_str().expect("id");

    let theirs = c
        .get(server.url(&format!("/v1/profiling/customers/{id}")))
        .bearer_auth(&b.key)
        .send()
        .await
        .expect("request");
    problem(theirs, StatusCode::NOT_FOUND).await;
    let mine = c
        .get(server.url(&format!("/v1/profiling/customers/{id}")))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("request");
    assert_eq!(mine.status(), StatusCode::OK);

    let list: Value = c
        .get(server.url("/v1/profiling/customers"))
        .bearer_auth(&b.key)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    assert_eq!(list["items"], json!([]));

    // B's admin cannot see or manage A's keys.
    let keys = c
        .get(server.url(&format!("/v1/admin/tenants/{}/keys", a.id)))
        .bearer_auth(&b.key)
        .send()
        .await
        .expect("request");
    problem(keys, StatusCode::NOT_FOUND).await;
    let revoke = c
        .delete(server.url(&format!("/v1/admin/tenants/{}/keys/{}", a.id, a.key_id)))
        .bearer_auth(&b.key)
        .send()
        .await
        .expect("request");
    problem(revoke, StatusCode::NOT_FOUND).await;
    let still = c
        .get(server.url("/v1/profiling/customers"))
        .bearer_auth(&a.key)
        .send()
        .await
        .expect("request");
    assert_eq!(still.status(), StatusCode::OK);
}

#[sqlx::test(migrator = "mercato_platform::db::MIGRATOR")]
async fn invalid_admin_input_names_the_field_and_writes_nothing(pool: PgPool) {
    let server = gateway(&pool, settings()).await;
    let c = &server.client;
    let empty = c
        .post(server.url("/v1/admin/tenants"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "  "}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        field(&problem(empty, StatusCode::UNPROCESSABLE_ENTITY).await),
        "name"
    );
    let role = c
        .post(server.url(&format!("/v1/admin/tenants/{}/keys", uuid::Uuid::new_v4())))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "k", "role": "superuser"}))
        .send()
        .await
        .expect("request");
    assert_eq!(
        field(&problem(role, StatusCode::UNPROCESSABLE_ENTITY).await),
        "role"
    );
    let missing_tenant = c
        .post(server.url(&format!("/v1/admin/tenants/{}/keys", uuid::Uuid::new_v4())))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "k", "role": "reader"}))
        .send()
        .await
        .expect("request");
    problem(missing_tenant, StatusCode::NOT_FOUND).await;
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.tenants")
        .fetch_one(&pool)
        .await
        .expect("count");
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.api_keys")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!((tenants, keys), (0, 0));
}
