//! `profiling.customers` queries.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::customer::CleanCustomer;

pub struct CustomerRow {
    pub id: Uuid,
    pub external_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub country: Option<String>,
    pub birth_year: Option<i32>,
    pub consent_email: Option<bool>,
    pub consent_sms: Option<bool>,
    pub consent_push: Option<bool>,
    pub consent_ai: Option<bool>,
    pub traits: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub struct Upserted {
    pub id: Uuid,
    pub external_id: String,
    pub inserted: bool,
}

/// Inserts or updates many customers in one statement. Stated fields overwrite, absent
/// ones keep the stored value, traits merge.
pub async fn upsert_many(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    customers: &[CleanCustomer],
) -> Result<Vec<Upserted>, sqlx::Error> {
    let col = |f: fn(&CleanCustomer) -> Option<String>| customers.iter().map(f).collect::<Vec<_>>();
    let ids: Vec<Uuid> = customers.iter().map(|_| Uuid::now_v7()).collect();
    let external_ids: Vec<String> = customers.iter().map(|c| c.external_id.clone()).collect();
    let emails = col(|c| c.email.clone());
    let phones = col(|c| c.phone.clone());
    let first_names = col(|c| c.first_name.clone());
    let last_names = col(|c| c.last_name.clone());
    let locales = col(|c| c.locale.clone());
    let countries = col(|c| c.country.clone());
    let birth_years: Vec<Option<i32>> = customers.iter().map(|c| c.birth_year).collect();
    let consent =
        |f: fn(&CleanCustomer) -> Option<bool>| customers.iter().map(f).collect::<Vec<_>>();
    let c_email = consent(|c| c.consent.email);
    let c_sms = consent(|c| c.consent.sms);
    let c_push = consent(|c| c.consent.push);
    let c_ai = consent(|c| c.consent.ai_personalization);
    let traits: Vec<Option<serde_json::Value>> =
        customers.iter().map(|c| c.traits.clone()).collect();
    sqlx::query_as!(
        Upserted,
        r#"INSERT INTO profiling.customers AS c
             (tenant_id, id, external_id, email, phone, first_name, last_name, locale, country,
              birth_year, consent_email, consent_sms, consent_push, consent_ai, traits)
           SELECT $1, t.id, t.external_id, t.email, t.phone, t.first_name, t.last_name, t.locale,
                  t.country, t.birth_year, t.ce, t.cs, t.cp, t.ca, coalesce(t.traits, '{}')
           FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::text[], $10::int4[], $11::bool[], $12::bool[], $13::bool[],
                       $14::bool[], $15::jsonb[])
                AS t(id, external_id, email, phone, first_name, last_name, locale, country,
                     birth_year, ce, cs, cp, ca, traits)
           ON CONFLICT (tenant_id, external_id) DO UPDATE SET
             email = coalesce(EXCLUDED.email, c.email),
             phone = coalesce(EXCLUDED.phone, c.phone),
             first_name = coalesce(EXCLUDED.first_name, c.first_name),
             last_name = coalesce(EXCLUDED.last_name, c.last_name),
             locale = coalesce(EXCLUDED.locale, c.locale),
             country = coalesce(EXCLUDED.country, c.country),
             birth_year = coalesce(EXCLUDED.birth_year, c.birth_year),
             consent_email = coalesce(EXCLUDED.consent_email, c.consent_email),
             consent_sms = coalesce(EXCLUDED.consent_sms, c.consent_sms),
             consent_push = coalesce(EXCLUDED.consent_push, c.consent_push),
             consent_ai = coalesce(EXCLUDED.consent_ai, c.consent_ai),
             traits = c.traits || EXCLUDED.traits,
             updated_at = now()
           RETURNING c.id, c.external_id, (xmax = 0) AS "inserted!""#,
        tenant_id,
        &ids,
        &external_ids,
        &emails as &[Option<String>],
        &phones as &[Option<String>],
        &first_names as &[Option<String>],
        &last_names as &[Option<String>],
        &locales as &[Option<String>],
        &countries as &[Option<String>],
        &birth_years as &[Option<i32>],
        &c_email as &[Option<bool>],
        &c_sms as &[Option<bool>],
        &c_push as &[Option<bool>],
        &c_ai as &[Option<bool>],
        &traits as &[Option<serde_json::Value>],
    )
    .fetch_all(db)
    .await
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<CustomerRow>, sqlx::Error> {
    sqlx::query_as!(
        CustomerRow,
        r#"SELECT id, external_id, email, phone, first_name, last_name, locale, country as "country: String",
                  birth_year, consent_email, consent_sms, consent_push, consent_ai, traits,
                  created_at, updated_at
           FROM profiling.customers WHERE tenant_id = $1 AND id = $2"#,
        tenant_id,
        id
    )
    .fetch_optional(db)
    .await
}

/// Customers in id order (ids are v7: creation order), optionally filtered.
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    external_id: Option<&str>,
    email: Option<&str>,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<CustomerRow>, sqlx::Error> {
    sqlx::query_as!(
        CustomerRow,
        r#"SELECT id, external_id, email, phone, first_name, last_name, locale, country as "country: String",
                  birth_year, consent_email, consent_sms, consent_push, consent_ai, traits,
                  created_at, updated_at
           FROM profiling.customers
           WHERE tenant_id = $1 AND ($2::text IS NULL OR external_id = $2)
             AND ($3::text IS NULL OR email = $3) AND ($4::uuid IS NULL OR id > $4)
           ORDER BY id LIMIT $5"#,
        tenant_id,
        external_id,
        email,
        after,
        limit
    )
    .fetch_all(db)
    .await
}

/// Merges `source` into `target`: contact fields fill the target's gaps, traits merge (the
/// target's win), consent per channel is the AND of both (a merge never widens consent:
/// a refusal or an unstated answer on either side stays), and everything recorded about the
/// source moves to the target. The source's external id becomes an alias of the target.
/// Returns false when either customer does not exist for this tenant.
pub async fn merge(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    target: Uuid,
    source: Uuid,
) -> Result<bool, sqlx::Error> {
    let mut ids = [target, source];
    ids.sort();
    let locked = sqlx::query_scalar!(
        "SELECT id FROM profiling.customers WHERE tenant_id = $1 AND id = ANY($2) ORDER BY id FOR UPDATE",
        tenant_id,
        &ids
    )
    .fetch_all(&mut *conn)
    .await?;
    if locked.len() != 2 {
        return Ok(false);
    }
    sqlx::query!(
        r#"UPDATE profiling.customers t SET
             email = coalesce(t.email, s.email), phone = coalesce(t.phone, s.phone),
             first_name = coalesce(t.first_name, s.first_name), last_name = coalesce(t.last_name, s.last_name),
             locale = coalesce(t.locale, s.locale), country = coalesce(t.country, s.country),
             birth_year = coalesce(t.birth_year, s.birth_year),
             consent_email = t.consent_email AND s.consent_email,
             consent_sms = t.consent_sms AND s.consent_sms,
             consent_push = t.consent_push AND s.consent_push,
             consent_ai = t.consent_ai AND s.consent_ai,
             traits = s.traits || t.traits, updated_at = now()
           FROM profiling.customers s
           WHERE t.tenant_id = $1 AND t.id = $2 AND s.tenant_id = $1 AND s.id = $3"#,
        tenant_id,
        target,
        source
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE profiling.events SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3",
        tenant_id,
        target,
        source
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!("UPDATE profiling.identities SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3", tenant_id, target, source)
        .execute(&mut *conn)
        .await?;
    sqlx::query!(
        "UPDATE profiling.customer_aliases SET customer_id = $2 WHERE tenant_id = $1 AND customer_id = $3",
        tenant_id,
        target,
        source
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"INSERT INTO profiling.customer_aliases (tenant_id, external_id, customer_id)
           SELECT tenant_id, external_id, $2 FROM profiling.customers WHERE tenant_id = $1 AND id = $3"#,
        tenant_id,
        target,
        source
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM profiling.customers WHERE tenant_id = $1 AND id = $2",
        tenant_id,
        source
    )
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// For incoming (external id, email) pairs, the external id each should land on: the
/// survivor's for ids merged away (aliases), and an existing customer's for a new id whose
/// email that customer already has. Pairs that need no change are left out.
pub async fn canonical_external_ids(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    external_ids: &[String],
    emails: &[Option<String>],
) -> Result<Vec<(String, String, Uuid)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"WITH incoming AS (SELECT * FROM UNNEST($2::text[], $3::text[]) AS t(ext, email))
           SELECT i.ext AS "incoming!", c.external_id AS "canonical!", c.id AS "id!"
           FROM incoming i
           JOIN profiling.customer_aliases a ON a.tenant_id = $1 AND a.external_id = i.ext
           JOIN profiling.customers c ON c.tenant_id = $1 AND c.id = a.customer_id
           UNION ALL
           SELECT DISTINCT ON (i.ext) i.ext, c.external_id, c.id
           FROM incoming i
           JOIN profiling.customers c ON c.tenant_id = $1 AND c.email = i.email AND c.external_id <> i.ext
           WHERE i.email IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM profiling.customers x WHERE x.tenant_id = $1 AND x.external_id = i.ext)
             AND NOT EXISTS (SELECT 1 FROM profiling.customer_aliases y WHERE y.tenant_id = $1 AND y.external_id = i.ext)
           ORDER BY 1, 3"#,
        tenant_id,
        external_ids,
        emails as &[Option<String>]
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.incoming, r.canonical, r.id))
        .collect())
}

/// Records `external_id` as another id of the customer.
pub async fn add_alias(
    conn: &mut sqlx::PgConnection,
    tenant_id: Uuid,
    external_id: &str,
    customer_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO profiling.customer_aliases (tenant_id, external_id, customer_id) VALUES ($1, $2, $3)
           ON CONFLICT (tenant_id, external_id) DO NOTHING"#,
        tenant_id,
        external_id,
        customer_id
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}
