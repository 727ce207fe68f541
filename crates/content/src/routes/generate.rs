//! `POST /v1/content/generate`: personalised copy written by the local model, checked by the
//! guardrails, regenerated when it fails them and replaced by the tenant's template when it
//! keeps failing. Streams with `Accept: text/event-stream`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, header},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
};
use mercato_platform::{
    ApiError, ApiResult,
    auth::{Role, TenantContext},
    error::{FieldError, Problem},
    extract::Json,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    db,
    domain::{
        channel::{Channel, Fields},
        guardrails::{self, CatalogItem, Check},
        prompt::{self, Brief, Fact, PROMPT_VERSION, Product, Voice},
        template::{self, TemplateCustomer, TemplateProduct, Vars},
    },
    inference::{Engine, Event, FinishReason, Sampling, SubmitError},
    state::AppState,
};

pub const TAG: &str = "generation";

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate))
}

/// Facts about the recipient given inline instead of a stored customer. The caller vouches that
/// they may be used to personalise generated copy.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InlineProfile {
    pub first_name: Option<String>,
    /// Categories or topics the recipient cares about (at most 10).
    #[serde(default)]
    pub interests: Vec<String>,
    /// A segment name, e.g. "champions".
    pub segment: Option<String>,
}

/// Brand voice.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VoiceRequest {
    /// e.g. "warm, playful" (at most 100 characters).
    pub tone: Option<String>,
    /// Words the copy should use (at most 20).
    #[serde(default)]
    pub use_words: Vec<String>,
    /// Words the copy must never use (at most 50); a variant using one fails its guardrails.
    #[serde(default)]
    pub avoid_words: Vec<String>,
}

/// Sampling settings; each has a sensible default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingRequest {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<usize>,
    pub repetition_penalty: Option<f32>,
    /// Tokens per attempt; defaults per channel (email 320, sms and push 80, ad 100, social 120).
    pub max_tokens: Option<usize>,
    /// Variant i uses seed + i; the same request and seed give the same variants.
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GenerateRequest {
    /// A stored customer: their profile is read, and used only if they consented to AI
    /// personalisation.
    pub customer_id: Option<Uuid>,
    /// Or the recipient's facts inline.
    pub profile: Option<InlineProfile>,
    /// `email` (subject + body), `sms` (body), `push` (title + body), `ad` (headline + body),
    /// `social` (body).
    pub channel: String,
    /// What the copy is for (3 to 2000 characters).
    pub brief: String,
    /// Catalog products the copy may mention (at most 5).
    #[serde(default)]
    pub product_ids: Vec<String>,
    #[serde(default)]
    pub voice: VoiceRequest,
    /// BCP 47 language tag of the copy; default "en".
    pub language: Option<String>,
    /// Variants to write (1 to 5, default 1).
    pub variants: Option<usize>,
    /// Attempts per variant before the template replaces it (1 to 4, default 2).
    pub max_attempts: Option<usize>,
    #[serde(default)]
    pub sampling: SamplingRequest,
}

/// Where a variant's text came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Written by the language model and passed every guardrail.
    Model,
    /// The tenant's template for the channel (or the built-in one), after the model's attempts
    /// failed the guardrails.
    Template,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Provenance {
    /// Model file, or the template used.
    pub model: String,
    pub weights: String,
    pub prompt_version: &'static str,
    /// Profile fields that reached the prompt (empty without AI-personalisation consent).
    pub profile_fields: Vec<&'static str>,
    pub product_ids: Vec<String>,
    pub seed: u64,
    /// `tenant` or `builtin` when the text comes from a template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Variant {
    pub index: usize,
    /// The copy split into the channel's fields (e.g. subject and body).
    pub fields: Fields,
    pub source: Source,
    /// Every guardrail and whether this text passed it.
    #[schema(value_type = Vec<Object>)]
    pub checks: Vec<Check>,
    pub passed: bool,
    /// Model attempts made (a failing attempt is regenerated with the broken rules named).
    pub attempts: usize,
    /// Of the last model attempt.
    pub finish_reason: Option<FinishReason>,
    /// Tokens over all attempts.
    pub usage: Usage,
    pub provenance: Provenance,
    /// The last attempt's raw model text when the template replaced it (for review).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rejected_text: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GenerateResponse {
    pub channel: String,
    pub variants: Vec<Variant>,
}

/// What one request needs, resolved and validated before any generation starts.
#[derive(Clone)]
pub struct Plan {
    pub channel: Channel,
    pub brief: String,
    pub facts: Vec<Fact>,
    pub products: Vec<Product>,
    pub voice: Voice,
    pub language: String,
    pub variants: usize,
    pub max_attempts: usize,
    pub sampling: Sampling,
    pub guard: guardrails::Context,
    pub template: (BTreeMap<String, String>, &'static str),
    pub vars: Vars,
}

fn too_many(field: &str, max: usize) -> FieldError {
    FieldError::new(field, format!("at most {max} items"))
}

/// Validates the request and reads what it refers to; every problem is reported at once.
pub async fn plan(state: &AppState, tenant_id: Uuid, req: GenerateRequest) -> ApiResult<Plan> {
    let mut errors = Vec::new();
    let channel = match req.channel.parse::<Channel>() {
        Ok(c) => Some(c),
        Err(e) => {
            errors.push(FieldError::new("channel", e));
            None
        }
    };
    let brief = req.brief.trim().to_string();
    let brief_chars = brief.chars().count();
    if !(3..=2000).contains(&brief_chars) {
        errors.push(FieldError::new("brief", "must be 3 to 2000 characters"));
    }
    if req.customer_id.is_some() && req.profile.is_some() {
        errors.push(FieldError::new(
            "profile",
            "give customer_id or profile, not both",
        ));
    }
    if req.product_ids.len() > 5 {
        errors.push(too_many("product_ids", 5));
    }
    let variants = req.variants.unwrap_or(1);
    if !(1..=5).contains(&variants) {
        errors.push(FieldError::new("variants", "must be 1 to 5"));
    }
    let max_attempts = req.max_attempts.unwrap_or(2);
    if !(1..=4).contains(&max_attempts) {
        errors.push(FieldError::new("max_attempts", "must be 1 to 4"));
    }
    let language = req.language.clone().unwrap_or_else(|| "en".to_string());
    if !valid_language(&language) {
        errors.push(FieldError::new(
            "language",
            "must be a BCP 47 tag such as en or pt-BR",
        ));
    }
    let v = &req.voice;
    if v.tone.as_ref().is_some_and(|t| t.chars().count() > 100) {
        errors.push(FieldError::new("voice.tone", "at most 100 characters"));
    }
    if v.use_words.len() > 20 {
        errors.push(too_many("voice.use_words", 20));
    }
    if v.avoid_words.len() > 50 {
        errors.push(too_many("voice.avoid_words", 50));
    }
    if v.use_words
        .iter()
        .chain(&v.avoid_words)
        .any(|w| w.trim().is_empty() || w.chars().count() > 50)
    {
        errors.push(FieldError::new("voice", "words must be 1 to 50 characters"));
    }
    if let Some(p) = &req.profile
        && (p.interests.len() > 10
            || p.first_name
                .as_ref()
                .is_some_and(|n| n.chars().count() > 100))
    {
        errors.push(FieldError::new(
            "profile",
            "at most 10 interests and a first name of at most 100 characters",
        ));
    }
    let default_tokens = channel.map(prompt::default_max_tokens).unwrap_or(256);
    let s = &req.sampling;
    let defaults = Sampling::default();
    let sampling = Sampling {
        temperature: s.temperature.unwrap_or(defaults.temperature),
        top_p: s.top_p.unwrap_or(defaults.top_p),
        top_k: s.top_k.unwrap_or(defaults.top_k),
        repetition_penalty: s.repetition_penalty.unwrap_or(defaults.repetition_penalty),
        max_tokens: s.max_tokens.unwrap_or(default_tokens),
        stop: Vec::new(),
        seed: s.seed.unwrap_or(0),
    };
    for (field, message) in sampling.validate(state.engine.max_new_tokens()) {
        errors.push(FieldError::new(format!("sampling.{field}"), message));
    }

    // What the request refers to.
    let mut who = Recipient::default();
    if let Some(id) = req.customer_id {
        match recipient(state, tenant_id, id).await? {
            None => errors.push(FieldError::new("customer_id", "no such customer")),
            Some(r) => who = r,
        }
    } else if let Some(p) = &req.profile {
        if let Some(n) = p.first_name.as_ref().filter(|n| !n.trim().is_empty()) {
            who.facts.push(Fact {
                field: "first_name",
                value: n.trim().to_string(),
            });
            who.own_names.push(n.trim().to_string());
        }
        if !p.interests.is_empty() {
            who.facts.push(Fact {
                field: "interests",
                value: p.interests.join(", "),
            });
        }
        if let Some(sg) = &p.segment {
            who.facts.push(Fact {
                field: "segment",
                value: sg.clone(),
            });
        }
    }
    let rows = if req.product_ids.is_empty() {
        Vec::new()
    } else {
        db::products(&state.pool, tenant_id, &req.product_ids).await?
    };
    for (i, id) in req.product_ids.iter().enumerate() {
        if !rows.iter().any(|r| &r.product_id == id) {
            errors.push(FieldError::new(
                format!("product_ids[{i}]"),
                format!("no product {id:?} in the catalog"),
            ));
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let Some(channel) = channel else {
        return Err(ApiError::invalid("channel", "unknown channel"));
    };
    // Products in the order asked for.
    let products: Vec<Product> = req
        .product_ids
        .iter()
        .filter_map(|id| rows.iter().find(|r| &r.product_id == id))
        .map(Product::from)
        .collect();
    let catalog = db::catalog_titles(&state.pool, tenant_id, 5000).await?;
    let guard = guardrails::Context {
        banned_words: req.voice.avoid_words.clone(),
        products: products.iter().map(catalog_item).collect(),
        catalog: catalog
            .into_iter()
            .map(|(product_id, title)| CatalogItem {
                product_id,
                title,
                price: None,
                currency: None,
            })
            .collect(),
        own_emails: Vec::new(),
        own_phones: Vec::new(),
        own_names: Vec::new(),
        other_names: Vec::new(),
        allowed_links: Vec::new(),
    };
    let template = match db::template(&state.pool, tenant_id, channel.as_str()).await? {
        Some(t) => (t.fields, "tenant"),
        None => (template::builtin(channel), "builtin"),
    };
    let vars = Vars {
        customer: TemplateCustomer::default(),
        products: products.iter().map(template_product).collect(),
        recommendations: Vec::new(),
        brief: brief.clone(),
    };
    let plan = Plan {
        channel,
        brief,
        facts: Vec::new(),
        products,
        voice: Voice {
            tone: req.voice.tone.clone(),
            use_words: req.voice.use_words.clone(),
            avoid_words: req.voice.avoid_words.clone(),
        },
        language,
        variants,
        max_attempts,
        sampling,
        guard,
        template,
        vars,
    };
    if let Some(id) = req.customer_id {
        plan.recommend_to(state, tenant_id, id, &mut who).await;
    }
    Ok(plan.for_recipient(who))
}

/// The recipient's side of a plan: prompt facts (only with consent to AI personalisation) and
/// their own contact data, which the copy may contain.
#[derive(Debug, Clone, Default)]
pub struct Recipient {
    pub facts: Vec<Fact>,
    pub own_emails: Vec<String>,
    pub own_phones: Vec<String>,
    pub own_names: Vec<String>,
    /// Products recommended to them, for templates that use `recommendations`.
    pub recommendations: Vec<TemplateProduct>,
}

impl Plan {
    /// This plan, written for one recipient.
    pub fn for_recipient(&self, who: Recipient) -> Plan {
        let mut plan = self.clone();
        plan.vars.customer = template_customer(&who.facts);
        plan.facts = who.facts;
        plan.guard.own_emails = who.own_emails;
        plan.guard.own_phones = who.own_phones;
        plan.guard.own_names = who.own_names;
        // Recommended products are catalog facts the template may print (title and price).
        for r in &who.recommendations {
            if !plan
                .guard
                .products
                .iter()
                .any(|p| p.product_id == r.product_id)
            {
                plan.guard.products.push(CatalogItem {
                    product_id: r.product_id.clone(),
                    title: r.title.clone(),
                    price: r.price.parse().ok(),
                    currency: Some(r.currency.clone()),
                });
            }
        }
        plan.vars.recommendations = who.recommendations;
        plan
    }

    /// Gives `who` (stored customer `customer_id`) their recommended products, when the
    /// fallback template refers to `recommendations` (only then are they computed).
    pub async fn recommend_to(
        &self,
        state: &AppState,
        tenant_id: Uuid,
        customer_id: Uuid,
        who: &mut Recipient,
    ) {
        let used = self
            .template
            .0
            .values()
            .any(|s| s.contains("recommendations"));
        if used {
            who.recommendations = recommended_products(state, tenant_id, customer_id).await;
        }
    }
}

/// Up to three products recommended to a customer, as template variables; empty when none can
/// be computed (no embedded catalog, the embedding model not loaded).
async fn recommended_products(
    state: &AppState,
    tenant_id: Uuid,
    customer_id: Uuid,
) -> Vec<TemplateProduct> {
    let Ok(r) =
        crate::routes::embeddings::recommend_for(state, tenant_id, customer_id, 3, 30.0).await
    else {
        return Vec::new();
    };
    let ids: Vec<String> = r
        .recommendations
        .iter()
        .map(|x| x.product_id.clone())
        .collect();
    let Ok(rows) = db::products(&state.pool, tenant_id, &ids).await else {
        return Vec::new();
    };
    ids.iter()
        .filter_map(|id| rows.iter().find(|r| &r.product_id == id))
        .map(|r| template_product(&Product::from(r)))
        .collect()
}

/// A stored customer as a recipient; `None` when there is no such customer.
pub async fn recipient(
    state: &AppState,
    tenant_id: Uuid,
    id: Uuid,
) -> ApiResult<Option<Recipient>> {
    let Some(c) = mercato_profiling::db::customers::get(&state.pool, tenant_id, id).await? else {
        return Ok(None);
    };
    let mut who = Recipient {
        facts: Vec::new(),
        own_emails: c.email.iter().cloned().collect(),
        own_phones: c.phone.iter().cloned().collect(),
        own_names: c.first_name.iter().chain(&c.last_name).cloned().collect(),
        recommendations: Vec::new(),
    };
    // Profile data reaches the prompt only with consent to AI personalisation.
    if c.consent_ai == Some(true) {
        let profile = mercato_profiling::db::profiles::get(&state.pool, tenant_id, id).await?;
        who.facts = customer_facts(&c, profile.as_ref());
    }
    Ok(Some(who))
}

fn valid_language(tag: &str) -> bool {
    let mut parts = tag.split('-');
    let primary = parts.next().unwrap_or("");
    (2..=3).contains(&primary.len())
        && primary.chars().all(|c| c.is_ascii_alphabetic())
        && parts.all(|p| (2..=8).contains(&p.len()) && p.chars().all(|c| c.is_ascii_alphanumeric()))
}

fn catalog_item(p: &Product) -> CatalogItem {
    CatalogItem {
        product_id: p.product_id.clone(),
        title: p.title.clone(),
        price: Some(p.price),
        currency: Some(p.currency.clone()),
    }
}

impl From<&db::ProductRow> for Product {
    fn from(r: &db::ProductRow) -> Self {
        Product {
            product_id: r.product_id.clone(),
            title: r.title.clone(),
            price: r.price,
            currency: r.currency.clone(),
            category: r.category.clone(),
            description: r.description.clone(),
        }
    }
}

fn template_product(p: &Product) -> TemplateProduct {
    TemplateProduct {
        product_id: p.product_id.clone(),
        title: p.title.clone(),
        price: format!("{:.2}", p.price),
        currency: p.currency.clone(),
        category: p.category.clone(),
    }
}

fn template_customer(facts: &[Fact]) -> TemplateCustomer {
    let get = |f: &str| facts.iter().find(|x| x.field == f).map(|x| x.value.clone());
    TemplateCustomer {
        first_name: get("first_name"),
        interests: get("interests")
            .map(|s| s.split(", ").map(str::to_string).collect())
            .unwrap_or_default(),
        segment: get("segment"),
    }
}

/// The facts of a stored customer that may reach a prompt (the caller checked consent).
fn customer_facts(
    c: &mercato_profiling::db::customers::CustomerRow,
    profile: Option<&mercato_profiling::db::profiles::ProfileRow>,
) -> Vec<Fact> {
    use mercato_profiling::domain::profile as p;
    let mut facts = Vec::new();
    if let Some(n) = c.first_name.as_ref().filter(|n| !n.trim().is_empty()) {
        facts.push(Fact {
            field: "first_name",
            value: n.trim().to_string(),
        });
    }
    if let Some(row) = profile {
        let counts: BTreeMap<String, i64> =
            serde_json::from_value(row.category_counts.clone()).unwrap_or_default();
        let interests = p::top(&counts, 3);
        if !interests.is_empty() {
            facts.push(Fact {
                field: "interests",
                value: interests.join(", "),
            });
        }
        if row.purchase_count > 0 {
            facts.push(Fact {
                field: "purchases",
                value: row.purchase_count.to_string(),
            });
        }
        if let Some(last) = row.last_purchase_at {
            let days = (chrono::Utc::now() - last).num_days().max(0);
            facts.push(Fact {
                field: "days_since_last_purchase",
                value: days.to_string(),
            });
        }
    }
    facts
}

/// What a streaming client receives.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Progress {
    /// A piece of model text of one variant's attempt.
    Token {
        variant: usize,
        attempt: usize,
        text: String,
    },
    /// An attempt failed its guardrails and is regenerated.
    Retry {
        variant: usize,
        attempt: usize,
        failed: String,
    },
}

/// Writes one variant: model attempts, guardrails, template fallback.
pub async fn write_variant(
    engine: Engine,
    plan: Arc<Plan>,
    index: usize,
    progress: Option<mpsc::UnboundedSender<Progress>>,
) -> Result<Variant, GenerateFailure> {
    let codec = engine.codec()?;
    let info = engine.ready().map_err(SubmitError::Unavailable)?;
    let seed = plan.sampling.seed.wrapping_add(index as u64);
    let brief = Brief {
        channel: plan.channel,
        brief: &plan.brief,
        facts: &plan.facts,
        products: &plan.products,
        voice: &plan.voice,
        language: &plan.language,
    };
    let mut usage = Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let mut feedback: Option<String> = None;
    let mut last: Option<(String, FinishReason)> = None;
    let provenance = |template: Option<&'static str>| Provenance {
        model: info.name.clone(),
        weights: info.weights.clone(),
        prompt_version: PROMPT_VERSION,
        profile_fields: plan.facts.iter().map(|f| f.field).collect(),
        product_ids: plan.products.iter().map(|p| p.product_id.clone()).collect(),
        seed,
        template,
    };
    for attempt in 1..=plan.max_attempts {
        let text = codec.render(&prompt::messages(&brief, feedback.as_deref()));
        let ids = codec
            .encode(&text)
            .map_err(|e| GenerateFailure::Failed(e.to_string()))?;
        let sampling = Sampling {
            // Each attempt draws differently, deterministically.
            seed: seed.wrapping_add(1_000_003 * (attempt as u64 - 1)),
            ..plan.sampling.clone()
        };
        let mut rx = engine.submit(ids, sampling)?;
        let finished = loop {
            match rx.recv().await {
                Some(Event::Text(t)) => {
                    if let Some(p) = &progress
                        && p.send(Progress::Token {
                            variant: index,
                            attempt,
                            text: t,
                        })
                        .is_err()
                    {
                        return Err(GenerateFailure::Cancelled);
                    }
                }
                Some(Event::Done(f)) => break f,
                Some(Event::Failed(e)) => return Err(GenerateFailure::Failed(e)),
                None => {
                    return Err(GenerateFailure::Failed(
                        "the worker dropped the request".into(),
                    ));
                }
            }
        };
        usage.prompt_tokens += finished.prompt_tokens;
        usage.completion_tokens += finished.completion_tokens;
        let fields = plan.channel.parse_fields(&finished.text);
        let checks = guardrails::check(plan.channel, &fields, &plan.guard);
        if guardrails::passed(&checks) {
            return Ok(Variant {
                index,
                fields,
                source: Source::Model,
                checks,
                passed: true,
                attempts: attempt,
                finish_reason: Some(finished.finish_reason),
                usage,
                provenance: provenance(None),
                rejected_text: None,
            });
        }
        let summary = guardrails::failure_summary(&checks);
        if let Some(p) = &progress {
            let _ = p.send(Progress::Retry {
                variant: index,
                attempt,
                failed: summary.clone(),
            });
        }
        feedback = Some(summary);
        last = Some((finished.text, finished.finish_reason));
    }
    // The model kept failing: the template speaks instead, marked as such.
    let (fields, checks) = match template::render(&plan.template.0, &plan.vars) {
        Ok(fields) => {
            let checks = guardrails::check(plan.channel, &fields, &plan.guard);
            (fields, checks)
        }
        Err(e) => (
            Fields::new(),
            vec![Check {
                name: "template",
                passed: false,
                detail: Some(e),
            }],
        ),
    };
    Ok(Variant {
        index,
        passed: guardrails::passed(&checks),
        fields,
        source: Source::Template,
        checks,
        attempts: plan.max_attempts,
        finish_reason: last.as_ref().map(|l| l.1),
        usage,
        provenance: provenance(Some(plan.template.1)),
        rejected_text: last.map(|l| l.0),
    })
}

/// Why a variant could not be written.
#[derive(Debug, thiserror::Error)]
pub enum GenerateFailure {
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("generation failed: {0}")]
    Failed(String),
    #[error("the client went away")]
    Cancelled,
}

impl From<GenerateFailure> for ApiError {
    fn from(e: GenerateFailure) -> Self {
        match e {
            GenerateFailure::Submit(s) => s.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Busy => ApiError::RateLimited {
                retry_after_secs: 1,
            },
            SubmitError::Unavailable(m) => ApiError::Unavailable(m),
            e @ SubmitError::TooLong { .. } => {
                ApiError::invalid("sampling.max_tokens", e.to_string())
            }
            SubmitError::Empty => ApiError::invalid("prompt", "is empty"),
        }
    }
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Writes personalised copy for one recipient and channel.
///
/// With `Accept: text/event-stream` the answer streams: `token` events carry model text as it
/// is written (per variant and attempt), `retry` events name the guardrails an attempt broke,
/// `variant` events carry each finished variant, and a final `done` event the whole response.
#[utoipa::path(
    post, path = "/v1/content/generate", tag = TAG,
    request_body = GenerateRequest,
    responses(
        (status = 200, description = "The variants (or an event stream)", body = GenerateResponse),
        (status = 422, description = "Invalid request", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The generation queue is full; retry after Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The model is not loaded", body = Problem, content_type = "application/problem+json"),
    ),
    security(("api_key" = []))
)]
#[tracing::instrument(skip_all, fields(tenant = %ctx.tenant_id))]
async fn generate(
    State(state): State<AppState>,
    ctx: TenantContext,
    headers: HeaderMap,
    Json(req): Json<GenerateRequest>,
) -> ApiResult<Response> {
    ctx.require(Role::Writer)?;
    state.engine.ready().map_err(ApiError::Unavailable)?;
    let plan = Arc::new(plan(&state, ctx.tenant_id, req).await?);
    let channel = plan.channel.as_str().to_string();
    if !wants_stream(&headers) {
        let mut set = tokio::task::JoinSet::new();
        for i in 0..plan.variants {
            set.spawn(write_variant(state.engine.clone(), plan.clone(), i, None));
        }
        let mut variants = Vec::with_capacity(plan.variants);
        while let Some(r) = set.join_next().await {
            variants.push(r.map_err(ApiError::internal)??);
        }
        variants.sort_by_key(|v| v.index);
        return Ok(Json(GenerateResponse { channel, variants }).into_response());
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let engine = state.engine.clone();
    let stream = async_stream::stream! {
        // Dropping the stream (client gone) aborts these tasks, which drops their requests
        // and so cancels the sequences in the worker.
        let mut set = tokio::task::JoinSet::new();
        for i in 0..plan.variants {
            set.spawn(write_variant(engine.clone(), plan.clone(), i, Some(tx.clone())));
        }
        drop(tx);
        let mut variants = Vec::new();
        let mut failed = None;
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(p) => {
                        let name = match &p { Progress::Token { .. } => "token", Progress::Retry { .. } => "retry" };
                        if let Ok(ev) = SseEvent::default().event(name).json_data(&p) {
                            yield Ok::<_, Infallible>(ev);
                        }
                    }
                    None => break,
                },
                done = set.join_next(), if !set.is_empty() => match done {
                    Some(Ok(Ok(v))) => {
                        if let Ok(ev) = SseEvent::default().event("variant").json_data(&v) {
                            yield Ok(ev);
                        }
                        variants.push(v);
                    }
                    Some(Ok(Err(e))) => failed = Some(ApiError::from(e).to_problem()),
                    Some(Err(e)) => failed = Some(ApiError::internal(e).to_problem()),
                    None => {}
                },
            }
        }
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(v)) => {
                    if let Ok(ev) = SseEvent::default().event("variant").json_data(&v) {
                        yield Ok(ev);
                    }
                    variants.push(v);
                }
                Ok(Err(e)) => failed = Some(ApiError::from(e).to_problem()),
                Err(e) => failed = Some(ApiError::internal(e).to_problem()),
            }
        }
        if let Some(problem) = failed {
            if let Ok(ev) = SseEvent::default().event("error").json_data(&problem) {
                yield Ok(ev);
            }
        } else {
            variants.sort_by_key(|v| v.index);
            let done = GenerateResponse { channel: channel.clone(), variants };
            if let Ok(ev) = SseEvent::default().event("done").json_data(&done) {
                yield Ok(ev);
            }
        }
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
