use std::sync::Arc;

use mercato_platform::settings::Settings;
use sqlx::PgPool;

use crate::inference::{Engine, embed::Embedder};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    /// The generation worker (loaded on its own thread; see `Engine::ready`).
    pub engine: Engine,
    /// The embedding worker.
    pub embedder: Embedder,
}
