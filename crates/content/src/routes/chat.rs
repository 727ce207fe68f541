//! `POST /v1/chat/completions`: the built-in model behind the OpenAI chat-completions shape,
//! so existing OpenAI clients and SDKs can use it (set their base URL to Mercato's `/v1`).

use std::convert::Infallible;

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, Sse},
    },
};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::{FieldError, Problem},
    extract::Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    inference::{Event, FinishReason, Message, Sampling},
    state::AppState,
};

pub const TAG: &str = "openai compatible";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(chat_completions))
}

/// `stop` may be one string or a list.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ChatRequest {
    /// Any value is accepted; the built-in model answers (its name is echoed back).
    #[serde(default)]
    pub model: Option<String>,
    pub messages: Vec<Message>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    /// Alias of `max_completion_tokens`.
    pub max_tokens: Option<usize>,
    pub max_completion_tokens: Option<usize>,
    pub stop: Option<Stop>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    /// Only 1 is supported.
    pub n: Option<usize>,
    /// Mapped onto the repetition penalty (1 + value/2 for positive values).
    pub frequency_penalty: Option<f32>,
    /// Extensions beyond OpenAI's fields.
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    /// Accepted and ignored (OpenAI clients send them).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub presence_penalty: Option<f32>,
    #[serde(default)]
    pub stream_options: Option<serde_json::Value>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatUsage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    pub index: usize,
    pub message: Message,
    /// `stop` or `length`.
    pub finish_reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChatResponse {
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: ChatUsage,
}

fn finish_name(r: FinishReason) -> &'static str {
    match r {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
    }
}

fn sampling(req: &ChatRequest, limit: usize) -> Result<Sampling, ApiError> {
    let mut errors = Vec::new();
    if req.messages.is_empty() {
        errors.push(FieldError::new("messages", "at least one message"));
    }
    if req.messages.len() > 100 {
        errors.push(FieldError::new("messages", "at most 100 messages"));
    }
    for (i, m) in req.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
            errors.push(FieldError::new(
                format!("messages[{i}].role"),
                "must be system, user or assistant",
            ));
        }
        if m.content.contains("<|im_start|>") || m.content.contains("<|im_end|>") {
            errors.push(FieldError::new(
                format!("messages[{i}].content"),
                "must not contain chat-template control tokens",
            ));
        }
    }
    if req.n.is_some_and(|n| n != 1) {
        errors.push(FieldError::new("n", "only 1 is supported"));
    }
    if req
        .frequency_penalty
        .is_some_and(|f| !(-2.0..=2.0).contains(&f))
    {
        errors.push(FieldError::new(
            "frequency_penalty",
            "must be between -2 and 2",
        ));
    }
    let defaults = Sampling::default();
    let stop = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    let s = Sampling {
        temperature: req.temperature.unwrap_or(1.0),
        top_p: req.top_p.unwrap_or(1.0),
        top_k: req.top_k.unwrap_or(defaults.top_k),
        repetition_penalty: req.repetition_penalty.unwrap_or_else(|| {
            req.frequency_penalty
                .filter(|f| *f > 0.0)
                .map(|f| 1.0 + f / 2.0)
                .unwrap_or(defaults.repetition_penalty)
        }),
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(256.min(limit)),
        stop,
        seed: req.seed.unwrap_or(0),
    };
    for (field, message) in s.validate(limit) {
        errors.push(FieldError::new(field, message));
    }
    if errors.is_empty() {
        Ok(s)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// Chat completion on the built-in model (OpenAI-compatible; `stream: true` sends
/// `chat.completion.chunk` events ending with `[DONE]`).
#[utoipa::path(
    post, path = "/v1/chat/completions", tag = TAG,
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The completion (or an event stream of chunks)", body = ChatResponse),
        (status = 422, description = "Invalid request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The generation queue is full", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The model is not loaded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn chat_completions(
    State(state): State<AppState>,
    ctx: TenantContext,
    Json(req): Json<ChatRequest>,
) -> ApiResult<Response> {
    ctx.require(Role::Writer)?;
    let info = state.engine.ready().map_err(ApiError::Unavailable)?;
    let sampling = sampling(&req, state.engine.max_new_tokens())?;
    let codec = state.engine.codec()?;
    let prompt = codec
        .encode(&codec.render(&req.messages))
        .map_err(ApiError::internal)?;
    let mut rx = state.engine.submit(prompt, sampling)?;
    let id = format!("chatcmpl-{}", uuid::Uuid::now_v7().simple());
    let created = chrono::Utc::now().timestamp();
    let model = info.name;
    if !req.stream {
        let done = loop {
            match rx.recv().await {
                Some(Event::Text(_)) => {}
                Some(Event::Done(f)) => break f,
                Some(Event::Failed(e)) => return Err(ApiError::Internal(e)),
                None => return Err(ApiError::internal("the worker dropped the request")),
            }
        };
        return Ok(Json(ChatResponse {
            id,
            object: "chat.completion",
            created,
            model,
            choices: vec![ChatChoice {
                index: 0,
                message: Message {
                    role: "assistant".into(),
                    content: done.text,
                },
                finish_reason: finish_name(done.finish_reason).into(),
            }],
            usage: ChatUsage {
                prompt_tokens: done.prompt_tokens,
                completion_tokens: done.completion_tokens,
                total_tokens: done.prompt_tokens + done.completion_tokens,
            },
        })
        .into_response());
    }
    let chunk = move |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({
            "id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let stream = async_stream::stream! {
        yield Ok::<_, Infallible>(SseEvent::default().data(chunk(serde_json::json!({"role": "assistant", "content": ""}), None).to_string()));
        // Dropping this stream (client gone) drops `rx`, which cancels the sequence.
        while let Some(ev) = rx.recv().await {
            match ev {
                Event::Text(t) => {
                    yield Ok(SseEvent::default().data(chunk(serde_json::json!({"content": t}), None).to_string()));
                }
                Event::Done(f) => {
                    let mut last = chunk(serde_json::json!({}), Some(finish_name(f.finish_reason)));
                    last["usage"] = serde_json::json!({
                        "prompt_tokens": f.prompt_tokens,
                        "completion_tokens": f.completion_tokens,
                        "total_tokens": f.prompt_tokens + f.completion_tokens,
                    });
                    yield Ok(SseEvent::default().data(last.to_string()));
                    break;
                }
                Event::Failed(e) => {
                    yield Ok(SseEvent::default().data(serde_json::json!({"error": {"message": e, "type": "server_error"}}).to_string()));
                    break;
                }
            }
        }
        yield Ok(SseEvent::default().data("[DONE]"));
    };
    Ok(Sse::new(stream).into_response())
}
