//! `profiling.events`, identities and the customer look-ups event ingestion needs.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::{event::CleanEvent, profile::EventFact};

/// Resolves the tenant's customer ids (external ids) to customers, creating the unknown
/// ones; ids merged into another customer resolve to the survivor.
pub async fn resolve_customers(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    external_ids: &[String],
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    if external_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let new_ids: Vec<Uuid> = external_ids.iter().map(|_| Uuid::now_v7()).collect();
    let rows = sqlx::query!(
        r#"WITH wanted AS (SELECT * FROM UNNEST($2::text[], $3::uuid[]) AS w(external_id, new_id)),
           created AS (
             INSERT INTO profiling.customers (tenant_id, id, external_id)
             SELECT $1, w.new_id, w.external_id FROM wanted w
             WHERE NOT EXISTS (SELECT 1 FROM profiling.customer_aliases a
                               WHERE a.tenant_id = $1 AND a.external_id = w.external_id)
             ON CONFLICT (tenant_id, external_id) DO NOTHING
             RETURNING external_id, id)
           SELECT external_id AS "external_id!", id AS "id!" FROM created
           UNION ALL
           SELECT c.external_id, c.id FROM profiling.customers c JOIN wanted w USING (external_id)
           WHERE c.tenant_id = $1
           UNION ALL
           SELECT a.external_id, a.customer_id FROM profiling.customer_aliases a JOIN wanted w USING (external_id)
           WHERE a.tenant_id = $1"#,
        tenant_id,
        external_ids,
        &new_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut found: HashMap<String, Uuid> =
        rows.into_iter().map(|r| (r.external_id, r.id)).collect();
    // A customer another transaction created concurrently is skipped by ON CONFLICT but not
    // yet visible to this statement's snapshot; a fresh statement sees it once committed.
    let missing: Vec<String> = external_ids
        .iter()
        .filter(|x| !found.contains_key(*x))
        .cloned()
        .collect();
    if !missing.is_empty() {
        let late = sqlx::query!(
            r#"SELECT external_id AS "external_id!", id AS "id!" FROM profiling.customers
               WHERE tenant_id = $1 AND external_id = ANY($2)
               UNION ALL
               SELECT external_id, customer_id FROM profiling.customer_aliases
               WHERE tenant_id = $1 AND external_id = ANY($2)"#,
            tenant_id,
            &missing
        )
        .fetch_all(&mut *conn)
        .await?;
        found.extend(late.into_iter().map(|r| (r.external_id, r.id)));
    }
    Ok(found)
}

/// The customers that anonymous ids are already linked to.
pub async fn resolve_anonymous(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    anonymous_ids: &[String],
) -> Result<HashMap<String, Uuid>, sqlx::Error> {
    if anonymous_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        "SELECT anonymous_id, customer_id FROM profiling.identities WHERE tenant_id = $1 AND anonymous_id = ANY($2)",
        tenant_id,
        anonymous_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.anonymous_id, r.customer_id))
        .collect())
}

/// Links anonymous ids to customers (first link wins) and hands the customers their past
/// anonymous events. Returns the facts of the events that changed hands.
pub async fn link_identities(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    links: &[(String, Uuid)],
) -> Result<Vec<EventFact>, sqlx::Error> {
    if links.is_empty() {
        return Ok(Vec::new());
    }
    let anonymous: Vec<String> = links.iter().map(|(a, _)| a.clone()).collect();
    let customers: Vec<Uuid> = links.iter().map(|(_, c)| *c).collect();
    let linked = sqlx::query!(
        r#"INSERT INTO profiling.identities (tenant_id, anonymous_id, customer_id)
           SELECT $1, a, c FROM UNNEST($2::text[], $3::uuid[]) AS t(a, c)
           ON CONFLICT (tenant_id, anonymous_id) DO NOTHING
           RETURNING anonymous_id, customer_id"#,
        tenant_id,
        &anonymous,
        &customers
    )
    .fetch_all(&mut *conn)
    .await?;
    if linked.is_empty() {
        return Ok(Vec::new());
    }
    let anonymous: Vec<String> = linked.iter().map(|r| r.anonymous_id.clone()).collect();
    let customers: Vec<Uuid> = linked.iter().map(|r| r.customer_id).collect();
    let moved = sqlx::query!(
        r#"UPDATE profiling.events e SET customer_id = t.c
           FROM UNNEST($2::text[], $3::uuid[]) AS t(a, c)
           WHERE e.tenant_id = $1 AND e.anonymous_id = t.a AND e.customer_id IS NULL
           RETURNING e.event_id"#,
        tenant_id,
        &anonymous,
        &customers
    )
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<String> = moved.into_iter().map(|r| r.event_id).collect();
    facts_for_events(conn, tenant_id, &ids).await
}

/// A cleaned event with its resolved customer (if known).
pub struct NewEvent<'a> {
    pub event: &'a CleanEvent,
    pub customer_id: Option<Uuid>,
}

/// Inserts events; those whose `event_id` is already stored are skipped. Returns the ids
/// actually inserted.
pub async fn insert(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    events: &[NewEvent<'_>],
) -> Result<Vec<String>, sqlx::Error> {
    let ids: Vec<String> = events.iter().map(|e| e.event.event_id.clone()).collect();
    let customers: Vec<Option<Uuid>> = events.iter().map(|e| e.customer_id).collect();
    let anonymous: Vec<Option<String>> = events
        .iter()
        .map(|e| e.event.anonymous_id.clone())
        .collect();
    let kinds: Vec<String> = events.iter().map(|e| e.event.kind.clone()).collect();
    let times: Vec<DateTime<Utc>> = events.iter().map(|e| e.event.occurred_at).collect();
    // Arrays of arrays cannot be unnested row by row; products travel as JSON arrays.
    let products: Vec<serde_json::Value> = events
        .iter()
        .map(|e| serde_json::json!(e.event.product_ids))
        .collect();
    let revenue: Vec<Option<f64>> = events.iter().map(|e| e.event.revenue).collect();
    let currency: Vec<Option<String>> = events.iter().map(|e| e.event.currency.clone()).collect();
    let channel: Vec<Option<String>> = events.iter().map(|e| e.event.channel.clone()).collect();
    let properties: Vec<serde_json::Value> =
        events.iter().map(|e| e.event.properties.clone()).collect();
    let rows = sqlx::query!(
        r#"INSERT INTO profiling.events (tenant_id, event_id, customer_id, anonymous_id, type, occurred_at,
                                         product_ids, revenue, currency, channel, properties)
           SELECT $1, t.id, t.customer, t.anon, t.kind, t.at,
                  ARRAY(SELECT jsonb_array_elements_text(t.products)), t.revenue::numeric(14,2),
                  t.currency, t.channel, t.properties
           FROM UNNEST($2::text[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::jsonb[],
                       $8::float8[], $9::text[], $10::text[], $11::jsonb[])
                AS t(id, customer, anon, kind, at, products, revenue, currency, channel, properties)
           ON CONFLICT (tenant_id, event_id) DO NOTHING
           RETURNING event_id"#,
        tenant_id,
        &ids,
        &customers as &[Option<Uuid>],
        &anonymous as &[Option<String>],
        &kinds,
        &times,
        &products,
        &revenue as &[Option<f64>],
        &currency as &[Option<String>],
        &channel as &[Option<String>],
        &properties
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.event_id).collect())
}

/// A stored event as the profile sees it.
struct FactRow {
    customer_id: Uuid,
    kind: String,
    occurred_at: DateTime<Utc>,
    revenue: Option<f64>,
    channel: Option<String>,
    product_ids: Vec<String>,
    categories: Vec<String>,
}

impl From<FactRow> for EventFact {
    fn from(r: FactRow) -> Self {
        EventFact {
            customer_id: r.customer_id,
            kind: r.kind,
            occurred_at: r.occurred_at,
            revenue: r.revenue,
            channel: r.channel,
            product_ids: r.product_ids,
            categories: r.categories,
        }
    }
}

/// The profile facts of stored events (customer known), with product categories.
pub async fn facts_for_events(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    event_ids: &[String],
) -> Result<Vec<EventFact>, sqlx::Error> {
    if event_ids.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query_as!(
        FactRow,
        r#"SELECT e.customer_id AS "customer_id!", e.type AS kind, e.occurred_at, e.revenue::float8 AS revenue,
                  e.channel, e.product_ids,
                  ARRAY(SELECT p.category FROM profiling.products p
                        WHERE p.tenant_id = e.tenant_id AND p.product_id = ANY(e.product_ids)
                          AND p.category IS NOT NULL) AS "categories!"
           FROM profiling.events e
           WHERE e.tenant_id = $1 AND e.event_id = ANY($2) AND e.customer_id IS NOT NULL"#,
        tenant_id,
        event_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Every event fact of some customers, for rebuilding their profiles.
pub async fn facts_for_customers(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    customer_ids: &[Uuid],
) -> Result<Vec<EventFact>, sqlx::Error> {
    let rows = sqlx::query_as!(
        FactRow,
        r#"SELECT e.customer_id AS "customer_id!", e.type AS kind, e.occurred_at, e.revenue::float8 AS revenue,
                  e.channel, e.product_ids,
                  ARRAY(SELECT p.category FROM profiling.products p
                        WHERE p.tenant_id = e.tenant_id AND p.product_id = ANY(e.product_ids)
                          AND p.category IS NOT NULL) AS "categories!"
           FROM profiling.events e
           WHERE e.tenant_id = $1 AND e.customer_id = ANY($2)"#,
        tenant_id,
        customer_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Categories of the given catalog products.
pub async fn categories(
    conn: &mut PgConnection,
    tenant_id: Uuid,
    product_ids: &[String],
) -> Result<HashMap<String, String>, sqlx::Error> {
    if product_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = sqlx::query!(
        r#"SELECT product_id, category AS "category!" FROM profiling.products
           WHERE tenant_id = $1 AND product_id = ANY($2) AND category IS NOT NULL"#,
        tenant_id,
        product_ids
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.product_id, r.category))
        .collect())
}
