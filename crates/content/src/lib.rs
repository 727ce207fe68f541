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
pub mod inference;
pub mod jobs;
pub mod routes;
mod state;

pub use state::AppState;

use inference::{Engine, EngineLimits, EngineSpec, embed::Embedder};

/// Every route of the service, before its state is applied.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(routes::generate::routes())
        .merge(routes::bulk::routes())
        .merge(routes::campaigns::routes())
        .merge(routes::chat::routes())
        .merge(routes::templates::routes())
        .merge(routes::model::routes())
        .merge(routes::embeddings::routes())
}

pub fn router(state: AppState) -> OpenApiRouter {
    routes().with_state(state)
}

pub fn openapi() -> OpenApi {
    routes().into_openapi()
}

/// The generation engine and the embedding worker for these settings. One set of models per
/// process: services assembled again in the same process (tests, an embedded gateway rebuilt)
/// share the loaded workers.
pub fn models(settings: &ContentSettings) -> anyhow::Result<(Engine, Embedder)> {
    static MODELS: OnceLock<Mutex<HashMap<String, (Engine, Embedder)>>> = OnceLock::new();
    let key = format!("{settings:?}");
    let mut models = MODELS
        .get_or_init(Default::default)
        .lock()
        .map_err(|_| anyhow::anyhow!("model registry poisoned"))?;
    if let Some(m) = models.get(&key) {
        return Ok(m.clone());
    }
    let device = inference::device(&settings.device)?;
    let engine = Engine::start(EngineSpec {
        model_path: resolve_path(&settings.model_path),
        weights: settings.weights.clone(),
        f32_limit_bytes: settings.f32_limit_bytes,
        max_context: settings.max_context,
        max_new_tokens: settings.max_new_tokens,
        device: device.clone(),
        limits: EngineLimits {
            max_batch: settings.max_batch,
            queue_capacity: settings.queue_capacity,
            prefill_chunk: settings.prefill_chunk,
        },
    });
    let embedder = Embedder::start(
        resolve_path(&settings.embedding_dir),
        settings.queue_capacity,
    );
    models.insert(key, (engine.clone(), embedder.clone()));
    Ok((engine, embedder))
}

/// The routes, job handlers and readiness checks this service adds to a process.
pub async fn parts(pool: PgPool, settings: Arc<Settings>) -> anyhow::Result<ServiceParts> {
    let (engine, embedder) = models(&settings.content)?;
    let state = AppState {
        pool,
        settings,
        engine: engine.clone(),
        embedder: embedder.clone(),
    };
    let mut parts = ServiceParts::routes(router(state.clone()));
    parts.jobs.push(Arc::new(jobs::EmbedProducts {
        state: state.clone(),
    }));
    parts.jobs.push(Arc::new(jobs::CampaignVariants {
        state: state.clone(),
    }));
    parts.jobs.push(Arc::new(jobs::GenerateSegment { state }));
    parts.ready_checks.push((
        "language_model",
        Arc::new(move || engine.ready().map(|_| ())),
    ));
    parts.ready_checks.push((
        "embedding_model",
        Arc::new(move || embedder.ready().map(|_| ())),
    ));
    Ok(parts)
}
