//! Exporting and erasing everything held about one customer.

use sqlx::PgConnection;
use uuid::Uuid;

/// Every event of the customer, oldest first, as JSON objects.
pub async fn events_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    customer_id: Uuid,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT jsonb_build_object('event_id', event_id, 'anonymous_id', anonymous_id, 'type', type,
                                     'occurred_at', occurred_at, 'received_at', received_at, 'product_ids', product_ids,
                                     'revenue', revenue, 'currency', currency, 'channel', channel,
                                     'properties', properties) AS "event!"
           FROM profiling.events WHERE tenant_id = $1 AND customer_id = $2 ORDER BY occurred_at, event_id"#,
        tenant_id,
        customer_id
    )
    .fetch_all(&mut *conn)
    .await
}

pub async fn identities_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    customer_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT anonymous_id FROM profiling.identities WHERE tenant_id = $1 AND customer_id = $2 ORDER BY anonymous_id",
        tenant_id,
        customer_id
    )
    .fetch_all(&mut *conn)
    .await
}

pub async fn aliases_of(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    customer_id: Uuid,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT external_id FROM profiling.customer_aliases WHERE tenant_id = $1 AND customer_id = $2 ORDER BY external_id",
        tenant_id,
        customer_id
    )
    .fetch_all(&mut *conn)
    .await
}

/// Removes the customer and everything derived from them in the profiling schema, then
/// calls every other service's `erase_customer` hook. Returns rows removed per kind.
pub async fn erase(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    customer_id: Uuid,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let mut removed = Vec::new();
    let events = sqlx::query!(
        "DELETE FROM profiling.events WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id,
        customer_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.push(("events".to_owned(), events as i64));
    // Anonymous events of the same visitor are the same person's behaviour.
    let anonymous = sqlx::query!(
        r#"DELETE FROM profiling.events e USING profiling.identities i
           WHERE e.tenant_id = $1 AND i.tenant_id = $1 AND i.customer_id = $2 AND e.anonymous_id = i.anonymous_id"#,
        tenant_id,
        customer_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.push(("anonymous_events".to_owned(), anonymous as i64));
    let identities = sqlx::query!(
        "DELETE FROM profiling.identities WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id,
        customer_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.push(("identities".to_owned(), identities as i64));
    let aliases = sqlx::query!(
        "DELETE FROM profiling.customer_aliases WHERE tenant_id = $1 AND customer_id = $2",
        tenant_id,
        customer_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.push(("aliases".to_owned(), aliases as i64));
    // The profile goes with the customer (foreign key cascade).
    let customers = sqlx::query!(
        "DELETE FROM profiling.customers WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        customer_id
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    removed.push(("customers".to_owned(), customers as i64));

    let hooks = sqlx::query!(
        r#"SELECT n.nspname AS "schema!" FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
           WHERE p.proname = 'erase_customer' AND n.nspname <> 'profiling' ORDER BY n.nspname"#
    )
    .fetch_all(&mut *conn)
    .await?;
    for hook in hooks {
        // The schema name comes from the catalog, never from a request; quote_ident keeps it
        // an identifier.
        let sql = format!(
            "SELECT {}.erase_customer($1, $2)",
            quote_ident(&hook.schema)
        );
        let n: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .bind(tenant_id)
            .bind(customer_id)
            .fetch_one(&mut *conn)
            .await?;
        removed.push((hook.schema, n.unwrap_or(0)));
    }
    Ok(removed)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub async fn audit(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    action: &str,
    subject_id: Uuid,
    key_id: Uuid,
    details: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "INSERT INTO platform.audit_log (tenant_id, id, action, subject_id, key_id, details) VALUES ($1, $2, $3, $4, $5, $6)",
        tenant_id,
        Uuid::now_v7(),
        action,
        subject_id,
        key_id,
        details
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
