use std::sync::Arc;

use mercato_platform::settings::Settings;
use sqlx::PgPool;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
}
