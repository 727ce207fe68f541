//! `profiling.clv_models` and the purchase summaries the models are fitted on.

use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::clv::{BgNbdParams, GammaGammaParams};

pub struct ClvModelRow {
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    pub p: f64,
    pub q: f64,
    pub v: f64,
    pub customers: i32,
    pub repeat_customers: i32,
    pub log_likelihood: f64,
    pub used_prior: bool,
    pub fitted_at: chrono::DateTime<chrono::Utc>,
}

impl ClvModelRow {
    pub fn params(&self) -> (BgNbdParams, GammaGammaParams) {
        (
            BgNbdParams {
                r: self.r,
                alpha: self.alpha,
                a: self.a,
                b: self.b,
            },
            GammaGammaParams {
                p: self.p,
                q: self.q,
                v: self.v,
            },
        )
    }
}

pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Option<ClvModelRow>, sqlx::Error> {
    sqlx::query_as!(
        ClvModelRow,
        "SELECT r, alpha, a, b, p, q, v, customers, repeat_customers, log_likelihood, used_prior, fitted_at
         FROM profiling.clv_models WHERE tenant_id = $1",
        tenant_id
    )
    .fetch_optional(db)
    .await
}

pub async fn save(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
    m: &ClvModelRow,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"INSERT INTO profiling.clv_models (tenant_id, r, alpha, a, b, p, q, v, customers, repeat_customers,
                                             log_likelihood, used_prior, fitted_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, now())
           ON CONFLICT (tenant_id) DO UPDATE SET r = EXCLUDED.r, alpha = EXCLUDED.alpha, a = EXCLUDED.a,
             b = EXCLUDED.b, p = EXCLUDED.p, q = EXCLUDED.q, v = EXCLUDED.v, customers = EXCLUDED.customers,
             repeat_customers = EXCLUDED.repeat_customers, log_likelihood = EXCLUDED.log_likelihood,
             used_prior = EXCLUDED.used_prior, fitted_at = now()"#,
        tenant_id,
        m.r,
        m.alpha,
        m.a,
        m.b,
        m.p,
        m.q,
        m.v,
        m.customers,
        m.repeat_customers,
        m.log_likelihood,
        m.used_prior
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Per buyer, in weeks: repeat purchases, time of last purchase since the first, age since
/// the first purchase; and the average order value.
pub async fn summaries(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Vec<(f64, f64, f64, f64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"SELECT (purchase_count - 1)::float8 AS "x!",
                  extract(epoch FROM last_purchase_at - first_purchase_at)::float8 / 604800 AS "t_x!",
                  extract(epoch FROM now() - first_purchase_at)::float8 / 604800 AS "age!",
                  revenue_total::float8 / purchase_count AS "aov!"
           FROM profiling.profiles WHERE tenant_id = $1 AND purchase_count > 0"#,
        tenant_id
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.x, r.t_x, r.age, r.aov))
        .collect())
}

/// The geometric mean of the BG/NBD parameters of tenants whose fits stood on their own
/// data (other than `tenant_id`): the pooled prior for tenants with little data. Only
/// model parameters cross tenants here, never customer data.
pub async fn pooled_prior(
    db: impl PgExecutor<'_>,
    tenant_id: Uuid,
) -> Result<Option<BgNbdParams>, sqlx::Error> {
    let row = sqlx::query!(
        r#"SELECT exp(avg(ln(r))) AS r, exp(avg(ln(alpha))) AS alpha, exp(avg(ln(a))) AS a,
                  exp(avg(ln(b))) AS b, count(*) AS "n!"
           FROM profiling.clv_models WHERE NOT used_prior AND tenant_id <> $1"#,
        tenant_id
    )
    .fetch_one(db)
    .await?;
    Ok(match (row.n, row.r, row.alpha, row.a, row.b) {
        (n, Some(r), Some(alpha), Some(a), Some(b)) if n > 0 => {
            Some(BgNbdParams { r, alpha, a, b })
        }
        _ => None,
    })
}
