//! The shared Postgres pool and the migrations of every service.

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::settings::Settings;

/// All migrations of all services: one schema each, applied in order.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/mercato";

/// Connects with the configured pool size; `DATABASE_URL` wins over the default.
pub async fn connect(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    let url = settings
        .secrets
        .database_url
        .as_ref()
        .map(|s| s.expose_secret().to_owned())
        .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
    PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(Duration::from_secs(settings.database.acquire_timeout_secs))
        .connect(&url)
        .await
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}
