//! Saved segments and the compiler from rule trees to SQL.
//!
//! Rules are compiled at run time, so this module builds SQL with `QueryBuilder`: column
//! names come only from `domain::segment::FIELDS`, and every value from the rule (strings,
//! numbers, trait keys, event types) is bound as a parameter.

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::segment::{Field, Kind, Op, Operand, Rule};

/// Customers joined with their profiles and derived scores: the only relation rules read.
/// RFM scores use the same quintile cut points and grid as `domain::profile`.
const FACTS: &str = r#"
WITH cuts AS (
    SELECT percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP
             (ORDER BY extract(epoch FROM now() - last_purchase_at) / 86400) AS r,
           percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY purchase_count) AS f,
           percentile_cont(ARRAY[0.2, 0.4, 0.6, 0.8]) WITHIN GROUP (ORDER BY revenue_total) AS m
    FROM profiling.profiles WHERE tenant_id = $T AND purchase_count > 0),
base AS (
    SELECT c.id, c.external_id, c.email, c.phone, c.first_name, c.last_name, c.locale,
           c.country::text AS country, c.birth_year::float8 AS birth_year, c.traits,
           coalesce(c.consent_email, false) AS consent_email, coalesce(c.consent_sms, false) AS consent_sms,
           coalesce(c.consent_push, false) AS consent_push, coalesce(c.consent_ai, false) AS consent_ai,
           coalesce(p.purchase_count, 0)::float8 AS frequency,
           coalesce(p.revenue_total, 0)::float8 AS monetary,
           CASE WHEN p.purchase_count > 0 THEN p.revenue_total::float8 / p.purchase_count END AS aov,
           extract(epoch FROM now() - p.last_purchase_at)::float8 / 86400 AS recency_days,
           extract(epoch FROM now() - p.last_event_at)::float8 / 86400 AS last_activity_days,
           coalesce(p.event_count, 0)::float8 AS event_count,
           ca.cluster::float8 AS cluster,
           (SELECT key FROM jsonb_each_text(p.channel_engagement) WHERE value::numeric > 0
            ORDER BY value::numeric DESC, key LIMIT 1) AS preferred_channel,
           (SELECT (h.i - 1)::float8 FROM unnest(p.hour_engagement) WITH ORDINALITY AS h(n, i) WHERE h.n > 0
            ORDER BY h.n DESC, h.i LIMIT 1) AS best_hour,
           CASE WHEN p.purchase_count > 0 THEN
             5 - ((extract(epoch FROM now() - p.last_purchase_at) / 86400 > cuts.r[1])::int
                + (extract(epoch FROM now() - p.last_purchase_at) / 86400 > cuts.r[2])::int
                + (extract(epoch FROM now() - p.last_purchase_at) / 86400 > cuts.r[3])::int
                + (extract(epoch FROM now() - p.last_purchase_at) / 86400 > cuts.r[4])::int) END AS rfm_r,
           CASE WHEN p.purchase_count > 0 THEN
             1 + (p.purchase_count > cuts.f[1])::int + (p.purchase_count > cuts.f[2])::int
               + (p.purchase_count > cuts.f[3])::int + (p.purchase_count > cuts.f[4])::int END AS rfm_f,
           CASE WHEN p.purchase_count > 0 THEN
             1 + (p.revenue_total > cuts.m[1])::int + (p.revenue_total > cuts.m[2])::int
               + (p.revenue_total > cuts.m[3])::int + (p.revenue_total > cuts.m[4])::int END AS rfm_m
    FROM profiling.customers c
    LEFT JOIN profiling.profiles p ON p.tenant_id = c.tenant_id AND p.customer_id = c.id
    LEFT JOIN profiling.cluster_assignments ca ON ca.tenant_id = c.tenant_id AND ca.customer_id = c.id
    CROSS JOIN cuts
    WHERE c.tenant_id = $T),
facts AS (
    SELECT base.*,
           CASE WHEN rfm_r IS NULL THEN NULL
                WHEN rfm_r = 5 AND rfm_f >= 4 THEN 'champions'
                WHEN rfm_r BETWEEN 3 AND 4 AND rfm_f >= 4 THEN 'loyal'
                WHEN rfm_r >= 4 AND rfm_f BETWEEN 2 AND 3 THEN 'potential_loyalist'
                WHEN rfm_r = 5 THEN 'new'
                WHEN rfm_r = 4 THEN 'promising'
                WHEN rfm_r = 3 AND rfm_f = 3 THEN 'needs_attention'
                WHEN rfm_r = 3 THEN 'about_to_sleep'
                WHEN rfm_f = 5 THEN 'cannot_lose_them'
                WHEN rfm_f BETWEEN 3 AND 4 THEN 'at_risk'
                WHEN rfm_r = 1 AND rfm_f = 1 THEN 'lost'
                ELSE 'hibernating' END AS rfm_segment
    FROM base)
"#;

/// Starts a query over the facts of one tenant.
fn facts(tenant_id: Uuid) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("");
    // The facts text refers to the tenant as $T; split there and bind it each time.
    let mut parts = FACTS.split("$T").peekable();
    while let Some(part) = parts.next() {
        qb.push(part);
        if parts.peek().is_some() {
            qb.push_bind(tenant_id);
        }
    }
    qb
}

fn column_expr(qb: &mut QueryBuilder<Postgres>, field: &Field) {
    match field {
        Field::Column { column, .. } => {
            qb.push(*column);
        }
        Field::Trait { key, kind } => {
            qb.push("(traits ->> ");
            qb.push_bind(key.clone());
            qb.push(")");
            let _ = kind;
        }
    }
}

/// Pushes the field as an expression of its kind.
fn typed_field(qb: &mut QueryBuilder<Postgres>, field: &Field) {
    match (field, field.kind()) {
        (Field::Trait { .. }, Kind::Number) => {
            qb.push("(CASE WHEN ");
            column_expr(qb, field);
            qb.push(" ~ '^-?[0-9]+(\\.[0-9]+)?$' THEN ");
            column_expr(qb, field);
            qb.push("::float8 END)");
        }
        (Field::Trait { .. }, Kind::Bool) => {
            qb.push("(CASE WHEN ");
            column_expr(qb, field);
            qb.push(" IN ('true', 'false') THEN ");
            column_expr(qb, field);
            qb.push("::boolean END)");
        }
        _ => column_expr(qb, field),
    }
}

fn push_rule(qb: &mut QueryBuilder<Postgres>, rule: &Rule, tenant_id: Uuid) {
    match rule {
        Rule::All(rules) | Rule::Any(rules) => {
            let joiner = if matches!(rule, Rule::All(_)) {
                " AND "
            } else {
                " OR "
            };
            qb.push("(");
            for (i, r) in rules.iter().enumerate() {
                if i > 0 {
                    qb.push(joiner);
                }
                push_rule(qb, r, tenant_id);
            }
            qb.push(")");
        }
        Rule::Not(inner) => {
            // NULL-safe: "not (x = 1)" also holds where x is unknown.
            qb.push("(NOT coalesce(");
            push_rule(qb, inner, tenant_id);
            qb.push(", false))");
        }
        Rule::Condition { field, op, value } => push_condition(qb, field, *op, value),
        Rule::EventCount {
            event_type,
            within_days,
            op,
            count,
        } => {
            qb.push("((SELECT count(*) FROM profiling.events e WHERE e.tenant_id = ");
            qb.push_bind(tenant_id);
            qb.push(" AND e.customer_id = facts.id AND e.type = ");
            qb.push_bind(event_type.clone());
            if let Some(days) = within_days {
                qb.push(" AND e.occurred_at >= now() - make_interval(days => ");
                qb.push_bind(*days);
                qb.push(")");
            }
            qb.push(") ");
            qb.push(op.sql());
            qb.push(" ");
            qb.push_bind(*count);
            qb.push(")");
        }
    }
}

fn push_condition(qb: &mut QueryBuilder<Postgres>, field: &Field, op: Op, value: &Operand) {
    qb.push("coalesce(");
    match (op, value) {
        (Op::Exists, Operand::Bool(present)) => {
            typed_field(qb, field);
            qb.push(if *present { " IS NOT NULL" } else { " IS NULL" });
        }
        (Op::In | Op::NotIn, Operand::Texts(items)) => {
            if op == Op::NotIn {
                qb.push("NOT ");
            }
            typed_field(qb, field);
            qb.push(" = ANY(");
            qb.push_bind(items.clone());
            qb.push(")");
        }
        (Op::In | Op::NotIn, Operand::Numbers(items)) => {
            if op == Op::NotIn {
                qb.push("NOT ");
            }
            typed_field(qb, field);
            qb.push(" = ANY(");
            qb.push_bind(items.clone());
            qb.push(")");
        }
        (Op::Contains, Operand::Text(text)) => {
            qb.push("position(lower(");
            qb.push_bind(text.clone());
            qb.push(") IN lower(");
            typed_field(qb, field);
            qb.push(")) > 0");
        }
        (Op::StartsWith, Operand::Text(text)) => {
            qb.push("left(lower(");
            typed_field(qb, field);
            qb.push("), length(");
            qb.push_bind(text.clone());
            qb.push(")) = lower(");
            qb.push_bind(text.clone());
            qb.push(")");
        }
        (_, scalar) => {
            typed_field(qb, field);
            qb.push(" ");
            qb.push(op.sql());
            qb.push(" ");
            match scalar {
                Operand::Text(t) => qb.push_bind(t.clone()),
                Operand::Number(n) => qb.push_bind(*n),
                Operand::Bool(b) => qb.push_bind(*b),
                // The parser pairs lists only with in/not_in.
                Operand::Texts(_) | Operand::Numbers(_) => qb.push("NULL"),
            };
        }
    }
    // Unknown values match nothing (except through `not`, which flips them to true).
    qb.push(", false)");
}

/// Every member of a rule, evaluated now, in id order (read in pages of 10,000).
pub async fn all_members(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    rule: &Rule,
) -> Result<Vec<Uuid>, sqlx::Error> {
    const PAGE: i64 = 10_000;
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = members(&mut *conn, tenant_id, rule, after, PAGE).await?;
        let full = page.len() as i64 == PAGE;
        after = page.last().map(|m| m.0);
        out.extend(page.into_iter().map(|m| m.0));
        if !full {
            return Ok(out);
        }
    }
}

/// A page of members (id, external id) in id order.
pub async fn members(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    rule: &Rule,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let mut qb = facts(tenant_id);
    qb.push("SELECT id, external_id FROM facts WHERE ");
    push_rule(&mut qb, rule, tenant_id);
    if let Some(after) = after {
        qb.push(" AND id > ");
        qb.push_bind(after);
    }
    qb.push(" ORDER BY id LIMIT ");
    qb.push_bind(limit);
    qb.build_query_as::<(Uuid, String)>().fetch_all(db).await
}

pub async fn count(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    rule: &Rule,
) -> Result<i64, sqlx::Error> {
    let mut qb = facts(tenant_id);
    qb.push("SELECT count(*) FROM facts WHERE ");
    push_rule(&mut qb, rule, tenant_id);
    qb.build_query_scalar::<i64>().fetch_one(db).await
}

/// Whether one customer is a member now.
pub async fn contains(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    rule: &Rule,
    customer_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let mut qb = facts(tenant_id);
    qb.push("SELECT EXISTS (SELECT 1 FROM facts WHERE id = ");
    qb.push_bind(customer_id);
    qb.push(" AND ");
    push_rule(&mut qb, rule, tenant_id);
    qb.push(")");
    qb.build_query_scalar::<bool>().fetch_one(db).await
}

pub struct SegmentRow {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub rule: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    name: &str,
    description: Option<&str>,
    rule: &serde_json::Value,
) -> Result<SegmentRow, sqlx::Error> {
    sqlx::query_as!(
        SegmentRow,
        r#"INSERT INTO profiling.segments (tenant_id, id, name, description, rule) VALUES ($1, $2, $3, $4, $5)
           RETURNING id, name, description, rule, created_at, updated_at"#,
        tenant_id,
        Uuid::now_v7(),
        name,
        description,
        rule
    )
    .fetch_one(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<SegmentRow>, sqlx::Error> {
    sqlx::query_as!(
        SegmentRow,
        "SELECT id, name, description, rule, created_at, updated_at FROM profiling.segments WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .fetch_optional(db)
    .await
}

pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<SegmentRow>, sqlx::Error> {
    sqlx::query_as!(
        SegmentRow,
        r#"SELECT id, name, description, rule, created_at, updated_at FROM profiling.segments
           WHERE tenant_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"#,
        tenant_id,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "DELETE FROM profiling.segments WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        id
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}
