//! The content service: copy written by a local language model behind a batching worker,
//! guardrails, templates, and an OpenAI-compatible chat endpoint.
//!
//! Layout: `llm/` is the inference stack (GGUF loading, the project's own batched llama/qwen2
//! forward pass, the tokenizer rebuilt from GGUF metadata, sampling, and the continuous-
//! batching worker thread that owns the model); `domain/` the rules of copy (channels and
//! their fields, prompts, guardrails, Liquid templates), pure and unit-tested; `routes/` the
//! HTTP resources; `db` the queries.
//!
//! Its tables live in the `content` schema. Routes are mounted under `/v1/content` (and the
//! OpenAI-compatible `/v1/chat/completions`) by the gateway (embedded mode) or served by the
//! `mercato-content` binary behind a proxying gateway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use mercato_platform::{
    service::ServiceParts,
    settings::{ContentSettings, Settings, resolve_path},
};
use sqlx::PgPool;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub mod db;
pub mod domain;
pub mod llm;
pub mod routes;
mod state;

pub use state::AppState;

use llm::{Engine, EngineLimits, EngineSpec};

/// Every route of the service, before its state is applied.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::generate::routes())
        .merge(routes::chat::routes())
        .merge(routes::templates::routes())
        .merge(routes::model::routes())
}

pub fn router(state: AppState) -> OpenApiRouter {
    routes().with_state(state)
}

pub fn openapi() -> OpenApi {
    routes().into_openapi()
}

/// The generation engine for these settings. One model per process: services assembled
/// again in the same process (tests, an embedded gateway rebuilt) share the loaded worker.
pub fn engine(settings: &ContentSettings) -> anyhow::Result<Engine> {
    static ENGINES: OnceLock<Mutex<HashMap<String, Engine>>> = OnceLock::new();
    let key = format!("{settings:?}");
    let mut engines = ENGINES
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| anyhow::anyhow!("engine registry poisoned"))?;
    if let Some(e) = engines.get(&key) {
        return Ok(e.clone());
    }
    let engine = Engine::start(EngineSpec {
        model_path: resolve_path(&settings.model_path),
        weights: settings.weights.clone(),
        f32_limit_bytes: settings.f32_limit_bytes,
        max_context: settings.max_context,
        max_new_tokens: settings.max_new_tokens,
        device: llm::device(&settings.device)?,
        limits: EngineLimits {
            max_batch: settings.max_batch,
            queue_capacity: settings.queue_capacity,
            prefill_chunk: settings.prefill_chunk,
        },
    });
    engines.insert(key, engine.clone());
    Ok(engine)
}

/// The routes, job handlers and readiness checks this service adds to a process.
pub async fn parts(pool: PgPool, settings: Arc<Settings>) -> anyhow::Result<ServiceParts> {
    let engine = engine(&settings.content)?;
    let state = AppState {
        pool,
        settings,
        engine: engine.clone(),
    };
    let mut parts = ServiceParts::routes(router(state));
    parts.ready_checks.push((
        "language_model",
        Arc::new(move || engine.ready().map(|_| ())),
    ));
    Ok(parts)
}
