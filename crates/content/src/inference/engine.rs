//! The generation worker: one dedicated thread owns the model and runs continuous batching.
//!
//! Each step it admits waiting requests and runs one forward pass over a decode row for every
//! sequence that is generating and the waiting prompts' next chunks (up to `prefill_chunk`
//! prompt tokens a step, a long prompt in chunks so it never stalls the others for long),
//! streams each new piece of text to its requester and retires sequences that finished, hit
//! a stop string or whose requester went away. Requests wait in a bounded queue; a full queue
//! is refused at once (the HTTP layer answers 429).
//!
//! Slots: sequences `active[..decoding]` are generating, `active[decoding..]` are still being
//! prefilled (in arrival order); a sequence's index is its KV-cache slot, so a step is one
//! forward call over consecutive slots: `0..decoding`, then the prompts it prefills.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::model::{Cache, Model, Row};
use super::sampling::{Sampling, sample};
use super::tokenizer::TextCodec;
use mercato_platform::random::SplitMix64;

/// Worker limits.
#[derive(Debug, Clone)]
pub struct EngineLimits {
    pub max_batch: usize,
    pub queue_capacity: usize,
    pub prefill_chunk: usize,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its answer or a stop string appeared.
    Stop,
    /// `max_tokens` or the context was reached.
    Length,
    /// The requester went away.
    Cancelled,
}

/// The end of one generation.
#[derive(Debug, Clone, Serialize)]
pub struct Finished {
    pub text: String,
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Seconds from submission to the first token.
    pub time_to_first_token: f64,
}

/// What a requester receives, in order: text pieces, then `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done(Finished),
    Failed(String),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the generation queue is full")]
    Busy,
    #[error("the model is not available: {0}")]
    Unavailable(String),
    #[error(
        "the prompt has {prompt} tokens; with max_tokens {max_tokens} it exceeds the context of {context}"
    )]
    TooLong {
        prompt: usize,
        max_tokens: usize,
        context: usize,
    },
    #[error("the prompt is empty")]
    Empty,
}

/// Live counters, shared with the HTTP side.
#[derive(Default)]
pub struct Stats {
    pub queued: AtomicUsize,
    pub active: AtomicUsize,
    pub completed: AtomicU64,
    pub rejected: AtomicU64,
    pub cancelled: AtomicU64,
    pub prefill: Work,
    pub decode: Work,
}

/// Counters of one kind of work in the forward passes, prefill or decode.
#[derive(Default)]
pub struct Work {
    pub tokens: AtomicU64,
    /// Nanoseconds of the passes spent on it.
    pub nanos: AtomicU64,
    /// Passes that did some, and the sequences they carried.
    pub passes: AtomicU64,
    pub sequences: AtomicU64,
}

impl Work {
    /// Counts a pass's share: `nanos` of its time, `tokens` tokens of `sequences` sequences.
    fn add(&self, nanos: u64, tokens: usize, sequences: usize) {
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.tokens.fetch_add(tokens as u64, Ordering::Relaxed);
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.sequences
            .fetch_add(sequences as u64, Ordering::Relaxed);
    }

    fn tokens(&self) -> u64 {
        self.tokens.load(Ordering::Relaxed)
    }

    /// Tokens per second of the time spent on this work.
    fn per_second(&self) -> f64 {
        match self.nanos.load(Ordering::Relaxed) {
            0 => 0.0,
            nanos => self.tokens() as f64 / (nanos as f64 / 1e9),
        }
    }

    /// Mean sequences per pass.
    fn mean_sequences(&self) -> f64 {
        match self.passes.load(Ordering::Relaxed) {
            0 => 0.0,
            passes => self.sequences.load(Ordering::Relaxed) as f64 / passes as f64,
        }
    }
}

/// A snapshot of [`Stats`] for the status endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub queue_depth: usize,
    pub active_sequences: usize,
    pub prefill_tokens: u64,
    pub decode_tokens: u64,
    pub completed: u64,
    pub rejected: u64,
    pub cancelled: u64,
    /// Prefill tokens per second of prefill compute.
    pub prefill_tokens_per_second: f64,
    /// Decode tokens per second of decode compute (all sequences together).
    pub decode_tokens_per_second: f64,
    /// Mean sequences per decode step.
    pub mean_batch: f64,
    /// Mean sequences per prefill pass (prompts that wait together are prefilled together).
    pub mean_prefill_batch: f64,
}

impl Stats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            queue_depth: self.queued.load(Ordering::Relaxed),
            active_sequences: self.active.load(Ordering::Relaxed),
            prefill_tokens: self.prefill.tokens(),
            decode_tokens: self.decode.tokens(),
            completed: self.completed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
            prefill_tokens_per_second: self.prefill.per_second(),
            decode_tokens_per_second: self.decode.per_second(),
            mean_batch: self.decode.mean_sequences(),
            mean_prefill_batch: self.prefill.mean_sequences(),
        }
    }
}

/// Facts about the loaded model, for provenance and the status endpoint.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ModelInfo {
    /// File name of the GGUF.
    pub name: String,
    pub architecture: String,
    pub parameters: usize,
    /// `hybrid`, `f32`, `q8_0` or `file` (see the `weights` setting).
    pub weights: String,
    pub device: String,
    pub context: usize,
    pub max_batch: usize,
    pub threads: usize,
}

struct Job {
    prompt: Vec<u32>,
    sampling: Sampling,
    events: UnboundedSender<Event>,
    submitted: Instant,
}

enum Loaded {
    Loading,
    Ready(ModelInfo),
    Failed(String),
}

/// What the worker and the handles share. The worker holds no sender, so it stops when the
/// last [`Engine`] handle is dropped.
struct Shared {
    codec: RwLock<Option<Arc<TextCodec>>>,
    state: RwLock<Loaded>,
    stats: Arc<Stats>,
}

impl Shared {
    fn set_state(&self, state: Loaded) {
        if let Ok(mut s) = self.state.write() {
            *s = state;
        }
    }
}

/// Handle to the worker; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    tx: SyncSender<Job>,
    shared: Arc<Shared>,
    pub stats: Arc<Stats>,
    max_new_tokens: usize,
}

/// How to build the model on the worker thread.
pub struct EngineSpec {
    pub model_path: std::path::PathBuf,
    pub weights: String,
    pub f32_limit_bytes: usize,
    pub max_context: usize,
    pub max_new_tokens: usize,
    pub device: candle_core::Device,
    pub limits: EngineLimits,
}

impl Engine {
    /// Starts the worker thread; the model loads there (see [`Engine::ready`]).
    pub fn start(spec: EngineSpec) -> Self {
        let spec_max_new_tokens = spec.max_new_tokens;
        let (tx, rx) = std::sync::mpsc::sync_channel(spec.limits.queue_capacity.max(1));
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            codec: RwLock::new(None),
            state: RwLock::new(Loaded::Loading),
            stats: stats.clone(),
        });
        let worker = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("llm-worker".into())
            .spawn(move || run(&worker, spec, rx));
        if let Err(e) = spawned {
            shared.set_state(Loaded::Failed(format!(
                "cannot start the worker thread: {e}"
            )));
        }
        Engine {
            tx,
            shared,
            stats,
            max_new_tokens: spec_max_new_tokens,
        }
    }

    /// `Ok` once the model is loaded; why not otherwise.
    pub fn ready(&self) -> Result<ModelInfo, String> {
        match self.shared.state.read().as_deref() {
            Ok(Loaded::Ready(info)) => Ok(info.clone()),
            Ok(Loaded::Loading) => Err("the model is loading".to_string()),
            Ok(Loaded::Failed(e)) => Err(e.clone()),
            Err(_) => Err("the engine state is poisoned".to_string()),
        }
    }

    /// Waits (up to `timeout`) for the model to load.
    pub fn wait_ready(&self, timeout: Duration) -> Result<ModelInfo, String> {
        let until = Instant::now() + timeout;
        loop {
            match self.ready() {
                Err(e) if e == "the model is loading" && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    /// The tokenizer and chat template (once loaded).
    pub fn codec(&self) -> Result<Arc<TextCodec>, SubmitError> {
        self.ready().map_err(SubmitError::Unavailable)?;
        self.shared
            .codec
            .read()
            .ok()
            .and_then(|c| c.clone())
            .ok_or_else(|| SubmitError::Unavailable("no tokenizer".to_string()))
    }

    pub fn max_new_tokens(&self) -> usize {
        self.max_new_tokens
    }

    /// Queues a generation. Events arrive on the returned receiver; dropping it cancels the
    /// sequence.
    pub fn submit(
        &self,
        prompt: Vec<u32>,
        sampling: Sampling,
    ) -> Result<UnboundedReceiver<Event>, SubmitError> {
        let info = self.ready().map_err(SubmitError::Unavailable)?;
        if prompt.is_empty() {
            return Err(SubmitError::Empty);
        }
        if prompt.len() + sampling.max_tokens > info.context {
            return Err(SubmitError::TooLong {
                prompt: prompt.len(),
                max_tokens: sampling.max_tokens,
                context: info.context,
            });
        }
        let (events, rx) = unbounded_channel();
        let job = Job {
            prompt,
            sampling,
            events,
            submitted: Instant::now(),
        };
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {
                metrics::gauge!("llm_queue_depth").increment(1.0);
                Ok(rx)
            }
            Err(e) => {
                self.stats.queued.fetch_sub(1, Ordering::Relaxed);
                match e {
                    TrySendError::Full(_) => {
                        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("llm_rejected_total").increment(1);
                        Err(SubmitError::Busy)
                    }
                    TrySendError::Disconnected(_) => Err(SubmitError::Unavailable(
                        "the generation worker stopped".to_string(),
                    )),
                }
            }
        }
    }

    /// Generates to the end and returns the result (for callers that do not stream).
    pub async fn generate(
        &self,
        prompt: Vec<u32>,
        sampling: Sampling,
    ) -> Result<Finished, GenerateError> {
        collect(self.submit(prompt, sampling)?).await
    }
}

/// Reads a submitted request's events to the end and returns the result.
pub async fn collect(mut rx: UnboundedReceiver<Event>) -> Result<Finished, GenerateError> {
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Text(_) => {}
            Event::Done(f) => return Ok(f),
            Event::Failed(e) => return Err(GenerateError::Failed(e)),
        }
    }
    Err(GenerateError::Failed(
        "the worker dropped the request".to_string(),
    ))
}

fn run(shared: &Shared, spec: EngineSpec, rx: Receiver<Job>) {
    let loaded = (|| -> anyhow::Result<(Model, TextCodec)> {
        let codec = TextCodec::from_gguf_path(&spec.model_path)?;
        let model = Model::load(
            &spec.model_path,
            &spec.weights,
            spec.f32_limit_bytes,
            spec.max_context,
            &spec.device,
        )?;
        Ok((model, codec))
    })();
    let (model, codec) = match loaded {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, path = %spec.model_path.display(), "the language model failed to load");
            shared.set_state(Loaded::Failed(format!(
                "the language model failed to load: {e}"
            )));
            return;
        }
    };
    let cache = match model.new_cache(spec.limits.max_batch.max(1)) {
        Ok(c) => c,
        Err(e) => {
            shared.set_state(Loaded::Failed(format!("cannot allocate the KV cache: {e}")));
            return;
        }
    };
    let info = ModelInfo {
        name: spec
            .model_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        architecture: model.config.arch.as_str().to_string(),
        parameters: model.config.params,
        weights: model.format.as_str().to_string(),
        device: if model.device().is_cuda() {
            "cuda"
        } else {
            "cpu"
        }
        .to_string(),
        context: model.max_context(),
        max_batch: cache.slots(),
        threads: candle_core::utils::get_num_threads(),
    };
    tracing::info!(?info, "language model loaded");
    let codec = Arc::new(codec);
    if let Ok(mut c) = shared.codec.write() {
        *c = Some(codec.clone());
    }
    shared.set_state(Loaded::Ready(info));
    let mut worker = Worker::new(model, codec, cache, spec.limits, shared.stats.clone());
    if let Err(e) = worker.serve(&rx) {
        tracing::error!(error = %e, "the generation worker failed");
        worker.fail_all(&e.to_string());
        shared.set_state(Loaded::Failed(format!("the generation worker failed: {e}")));
    }
}

/// Errors of [`Engine::generate`].
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("generation failed: {0}")]
    Failed(String),
}

struct Seq {
    job: Job,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    /// Tokens already in the KV cache.
    cached: usize,
    generated: usize,
    rng: SplitMix64,
    /// Bytes of the generated text already sent.
    sent: usize,
    /// The generated text decoded so far (see `Detokenizer`).
    text: String,
    detokenizer: Detokenizer,
    first_token: Option<Instant>,
    last_token: Instant,
    finished: Option<FinishReason>,
}

struct Worker {
    model: Model,
    codec: Arc<TextCodec>,
    cache: Cache,
    active: Vec<Seq>,
    decoding: usize,
    limits: EngineLimits,
    stats: Arc<Stats>,
    /// The last forward pass's logits, `rows x vocab`; kept so that each step reuses them.
    logits: Vec<f32>,
}

impl Worker {
    fn new(
        model: Model,
        codec: Arc<TextCodec>,
        cache: Cache,
        limits: EngineLimits,
        stats: Arc<Stats>,
    ) -> Self {
        Worker {
            model,
            codec,
            cache,
            active: Vec::new(),
            decoding: 0,
            limits,
            stats,
            logits: Vec::new(),
        }
    }

    fn serve(&mut self, rx: &Receiver<Job>) -> anyhow::Result<()> {
        loop {
            if self.active.is_empty() {
                self.cache.shrink()?;
                match rx.recv() {
                    Ok(job) => self.admit(job),
                    Err(_) => return Ok(()),
                }
            }
            while self.active.len() < self.cache.slots() {
                match rx.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        if self.active.is_empty() {
                            return Ok(());
                        }
                        break;
                    }
                }
            }
            self.step()?;
            self.retire();
            self.stats
                .active
                .store(self.active.len(), Ordering::Relaxed);
            metrics::gauge!("llm_active_sequences").set(self.active.len() as f64);
        }
    }

    fn admit(&mut self, job: Job) {
        self.stats.queued.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!("llm_queue_depth").decrement(1.0);
        if job.events.is_closed() {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let rng = SplitMix64::new(job.sampling.seed);
        self.active.push(Seq {
            tokens: job.prompt.clone(),
            cached: 0,
            generated: 0,
            rng,
            sent: 0,
            text: String::new(),
            detokenizer: Detokenizer::default(),
            first_token: None,
            last_token: Instant::now(),
            finished: None,
            job,
        });
    }

    /// The waiting prompts' chunks for this step, in arrival order within the per-step token
    /// budget: each waiting sequence's next chunk, for as long as the one before it completes
    /// its prompt (so only the last may stop partway, and those that complete join the
    /// decoders in order). Cancelled waiting sequences are dropped on the way.
    fn prefill_takes(&mut self) -> Vec<usize> {
        let chunk = self.limits.prefill_chunk.max(1);
        let mut budget = chunk;
        let mut takes = Vec::new();
        while budget > 0 {
            let slot = self.decoding + takes.len();
            let Some(seq) = self.active.get(slot) else {
                break;
            };
            if seq.job.events.is_closed() {
                self.remove(slot, FinishReason::Cancelled);
                continue;
            }
            let left = seq.job.prompt.len() - seq.cached;
            // Chunk boundaries fall at fixed multiples of the chunk size from the prompt's
            // start, whatever else is waiting: a prompt is always split the same way, so its
            // output does not depend on the load (nor on the rows beside it: see
            // `Model::forward`).
            let take = left.min(chunk - seq.cached % chunk);
            takes.push(take);
            budget = budget.saturating_sub(take);
            if take < left {
                break;
            }
        }
        takes
    }

    /// One forward pass: a decode row for every generating sequence, then the waiting
    /// prompts' chunks (`prefill_takes`). One pass reads the weights once for both, where a
    /// prefill pass and a decode pass read them twice and held the decoders' next token back
    /// for both; 16 short prompts that arrive together prefill in one pass. Each generating
    /// sequence samples its next token; each sequence whose prompt completes samples its first.
    fn step(&mut self) -> anyhow::Result<()> {
        let takes = self.prefill_takes();
        let n = self.decoding;
        let live = self.active[..n]
            .iter()
            .filter(|s| s.finished.is_none())
            .count();
        // Finished sequences still occupy their slot until `retire`; they ride along (their
        // logits are ignored) so the rows stay consecutive.
        let decode = if live > 0 { n } else { 0 };
        if decode == 0 && takes.is_empty() {
            return Ok(());
        }
        let last: Vec<[u32; 1]> = self.active[..decode]
            .iter()
            .map(|s| [*s.tokens.last().unwrap_or(&0)])
            .collect();
        let decode_rows =
            self.active[..decode]
                .iter()
                .zip(&last)
                .enumerate()
                .map(|(slot, (s, t))| Row {
                    slot,
                    tokens: t,
                    pos: if s.finished.is_some() {
                        s.cached.saturating_sub(1)
                    } else {
                        s.cached
                    },
                });
        let prefill_rows = takes.iter().enumerate().map(|(i, &take)| {
            let seq = &self.active[n + i];
            Row {
                slot: n + i,
                tokens: &seq.tokens[seq.cached..seq.cached + take],
                pos: seq.cached,
            }
        });
        let rows: Vec<Row<'_>> = decode_rows.chain(prefill_rows).collect();
        let start = Instant::now();
        self.model
            .forward_into(&mut self.cache, &rows, &mut self.logits)?;
        let nanos = start.elapsed().as_nanos() as u64;
        let vocab = self.logits.len() / rows.len();
        drop(rows);
        let prefill: usize = takes.iter().sum();
        self.count(nanos, live, prefill, takes.len());
        let mut logits = std::mem::take(&mut self.logits);
        let mut rows = logits.chunks_exact_mut(vocab);
        for (slot, row) in rows.by_ref().take(decode).enumerate() {
            if self.active[slot].finished.is_none() {
                self.active[slot].cached += 1;
                self.accept(slot, row);
            }
        }
        for (i, (take, row)) in takes.iter().zip(rows).enumerate() {
            let seq = &mut self.active[n + i];
            seq.cached += take;
            if seq.cached == seq.job.prompt.len() {
                self.decoding += 1;
                self.accept(n + i, row);
            }
        }
        self.logits = logits;
        Ok(())
    }

    /// Counts a pass of `decoded` decode rows and `prefilled` prompt tokens of `prompts`
    /// sequences; a pass that did both has its time split between them by tokens.
    fn count(&self, nanos: u64, decoded: usize, prefilled: usize, prompts: usize) {
        let decode_nanos =
            (nanos as u128 * decoded as u128 / (decoded + prefilled).max(1) as u128) as u64;
        if decoded > 0 {
            self.stats.decode.add(decode_nanos, decoded, decoded);
            metrics::counter!("llm_decode_tokens_total").increment(decoded as u64);
            metrics::histogram!("llm_decode_batch_size").record(decoded as f64);
        }
        if prompts > 0 {
            self.stats
                .prefill
                .add(nanos - decode_nanos, prefilled, prompts);
            metrics::counter!("llm_prefill_tokens_total").increment(prefilled as u64);
            metrics::histogram!("llm_prefill_batch_size").record(prompts as f64);
        }
    }

    /// Samples the next token of `slot`, streams the new text, decides whether it finished.
    fn accept(&mut self, slot: usize, logits: &mut [f32]) {
        let max_context = self.model.max_context();
        let seq = &mut self.active[slot];
        let token = sample(logits, &seq.job.sampling, &seq.tokens, &mut seq.rng);
        let now = Instant::now();
        match seq.first_token {
            None => {
                seq.first_token = Some(now);
                metrics::histogram!("llm_time_to_first_token_seconds")
                    .record((now - seq.job.submitted).as_secs_f64());
            }
            Some(_) => {
                metrics::histogram!("llm_inter_token_seconds")
                    .record((now - seq.last_token).as_secs_f64());
            }
        }
        seq.last_token = now;
        let prompt = seq.job.prompt.len();
        if self.codec.stop_ids.contains(&token) {
            let generated = &seq.tokens[prompt..];
            seq.detokenizer
                .advance(&self.codec, generated, &mut seq.text, true);
            seq.finished = Some(FinishReason::Stop);
            return;
        }
        seq.tokens.push(token);
        seq.generated += 1;
        let at_length =
            seq.generated >= seq.job.sampling.max_tokens || seq.tokens.len() >= max_context;
        let generated = &seq.tokens[prompt..];
        seq.detokenizer
            .advance(&self.codec, generated, &mut seq.text, at_length);
        let stops = &seq.job.sampling.stop;
        if let Some(at) = stops.iter().filter_map(|s| seq.text.find(s.as_str())).min() {
            seq.text.truncate(at);
            seq.finished = Some(FinishReason::Stop);
        } else if at_length {
            seq.finished = Some(FinishReason::Length);
        }
        // Stream what is settled: not a half-decoded character, not a possible stop-string start.
        let settled = if seq.finished.is_some() {
            seq.text.len()
        } else if seq.text.ends_with('\u{FFFD}') {
            seq.sent
        } else {
            seq.text.len() - held_back(&seq.text, stops)
        };
        if settled > seq.sent
            && seq.text.is_char_boundary(settled)
            && seq.text.is_char_boundary(seq.sent)
        {
            let piece = seq.text[seq.sent..settled].to_string();
            seq.sent = settled;
            if seq.job.events.send(Event::Text(piece)).is_err() {
                seq.finished = Some(FinishReason::Cancelled);
            }
        }
        if seq.finished.is_none() && seq.job.events.is_closed() {
            seq.finished = Some(FinishReason::Cancelled);
        }
    }

    /// Removes finished sequences, reporting their results.
    fn retire(&mut self) {
        for slot in (0..self.decoding).rev() {
            if let Some(reason) = self.active[slot].finished {
                self.remove(slot, reason);
            }
        }
    }

    /// Takes the sequence in `slot` out, keeping the slots compact, and reports its end.
    /// Decoding sequences fill a hole among them from their end (their order does not
    /// matter); waiting sequences each move up one slot, so they are still prefilled in
    /// arrival order (a move copies a slot's cached rows: only the sequence being
    /// prefilled has any).
    fn remove(&mut self, slot: usize, reason: FinishReason) {
        if slot >= self.active.len() {
            return;
        }
        let mut moves = Vec::new();
        let mut hole = slot;
        if slot < self.decoding {
            let last_decoding = self.decoding - 1;
            if slot != last_decoding {
                self.active.swap(slot, last_decoding);
                moves.push((last_decoding, slot, self.active[slot].cached));
            }
            self.decoding -= 1;
            hole = last_decoding;
        }
        let seq = self.active.remove(hole);
        for to in hole..self.active.len() {
            moves.push((to + 1, to, self.active[to].cached));
        }
        for (from, to, len) in moves {
            if let Err(e) = self.cache.move_slot(from, to, len) {
                tracing::error!(error = %e, "moving a KV-cache slot failed");
            }
        }
        let done = Finished {
            text: seq.text,
            finish_reason: reason,
            prompt_tokens: seq.job.prompt.len(),
            completion_tokens: seq.generated,
            time_to_first_token: seq
                .first_token
                .map(|t| (t - seq.job.submitted).as_secs_f64())
                .unwrap_or(0.0),
        };
        if reason == FinishReason::Cancelled {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("llm_cancelled_total").increment(1);
        } else {
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        let _ = seq.job.events.send(Event::Done(done));
    }

    /// Tells every waiting requester that the worker failed.
    fn fail_all(&mut self, error: &str) {
        for seq in self.active.drain(..) {
            let _ = seq.job.events.send(Event::Failed(error.to_string()));
        }
        self.decoding = 0;
    }
}

/// Bytes at the end of `text` that could be the start of a stop string.
/// A sequence's output text, built token by token: the new tokens are decoded together with
/// the ones last turned into text (a decoder may treat a text's first token differently, e.g.
/// strip its leading space), and what that adds to the shorter decode is the new text. A
/// token costs the same at any output length; decoding the whole output every token cost
/// 6.7 us at 64 tokens and 107 us at 1,000, per sequence per step, on the worker.
#[derive(Debug, Default)]
struct Detokenizer {
    /// Where the decoded window starts (the tokens last turned into text).
    prefix: usize,
    /// Tokens turned into text so far.
    read: usize,
}

impl Detokenizer {
    /// Appends to `text` what `generated` (the sequence's generated tokens) adds since the
    /// last call. An incomplete character waits for the next token, unless `flush`, where it
    /// is appended as U+FFFD, as a decode of the whole output would give it.
    fn advance(&mut self, codec: &TextCodec, generated: &[u32], text: &mut String, flush: bool) {
        if self.read >= generated.len() {
            return;
        }
        let before = codec
            .decode(&generated[self.prefix..self.read])
            .unwrap_or_default();
        let window = codec.decode(&generated[self.prefix..]).unwrap_or_default();
        let Some(new) = window.strip_prefix(before.as_str()) else {
            // A decoder whose longer window does not extend the shorter one's: the whole
            // output again.
            *text = codec.decode(generated).unwrap_or_default();
            (self.prefix, self.read) = (generated.len() - 1, generated.len());
            return;
        };
        if new.is_empty() || (new.ends_with('\u{FFFD}') && !flush) {
            return;
        }
        text.push_str(new);
        (self.prefix, self.read) = (self.read, generated.len());
    }
}

fn held_back(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for stop in stops {
        for (i, _) in stop.char_indices().skip(1) {
            if text.ends_with(&stop[..i]) {
                hold = hold.max(i);
            }
        }
    }
    hold
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Prompts that wait together are prefilled in one pass while the step's budget lasts;
    /// a prompt longer than its chunk ends the pass partway and finishes in the next, with
    /// those behind it and a decode row for each sequence that completed its prompt. Each
    /// completed prompt samples its first token and joins the decoders.
    #[test]
    fn waiting_prompts_and_decoders_share_a_pass() {
        let path = mercato_platform::settings::resolve_path(
            "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        );
        let model = Model::load(&path, "q4", usize::MAX, 256, &candle_core::Device::Cpu)
            .expect("the default model loads (run scripts/fetch-models)");
        let codec = TextCodec::from_gguf_path(&path).expect("tokenizer");
        let cache = model.new_cache(5).expect("cache");
        let limits = EngineLimits {
            max_batch: 5,
            queue_capacity: 8,
            prefill_chunk: 16,
        };
        let stats = Arc::new(Stats::default());
        let mut worker = Worker::new(model, Arc::new(codec), cache, limits, stats.clone());
        let mut receivers = Vec::new();
        for len in [5u32, 7, 20, 3, 40] {
            let (events, rx) = unbounded_channel();
            receivers.push(rx);
            stats.queued.fetch_add(1, Ordering::Relaxed);
            worker.admit(Job {
                prompt: (0..len).map(|i| 200 + i * 13).collect(),
                sampling: Sampling::greedy(4),
                events,
                submitted: Instant::now(),
            });
        }
        let cached = |w: &Worker| w.active.iter().map(|s| s.cached).collect::<Vec<_>>();
        let generated = |w: &Worker| w.active.iter().map(|s| s.generated).collect::<Vec<_>>();
        // 5 + 7 + the third's first chunk of 16: one pass, two prompts complete.
        worker.step().expect("step");
        assert_eq!(stats.prefill.passes.load(Ordering::Relaxed), 1);
        assert_eq!(worker.decoding, 2);
        assert_eq!(cached(&worker), [5, 7, 16, 0, 0]);
        assert_eq!(generated(&worker), [1, 1, 0, 0, 0]);
        // The first two decode beside the third's last 4, the fourth's 3 and the fifth's
        // first 16 (over the budget of 16 by the chunk that was started), in one pass.
        worker.step().expect("step");
        assert_eq!(stats.prefill.passes.load(Ordering::Relaxed), 2);
        assert_eq!(stats.decode.passes.load(Ordering::Relaxed), 1);
        assert_eq!(worker.decoding, 4);
        assert_eq!(cached(&worker), [6, 8, 20, 3, 16]);
        assert_eq!(generated(&worker), [2, 2, 1, 1, 0]);
        assert_eq!(stats.prefill.tokens(), 5 + 7 + 20 + 3 + 16);
        assert_eq!(stats.decode.tokens(), 2);
        assert_eq!(stats.snapshot().mean_prefill_batch, 3.0);
    }

    /// Token by token, the text is always a prefix of the whole output's decode and never ends
    /// in half a character; flushed at the end, it is the whole decode. On the default model's
    /// tokenizer, with characters of two to four bytes that its byte-level tokens split.
    #[test]
    fn detokenizing_token_by_token_gives_the_whole_decode() {
        let path = mercato_platform::settings::resolve_path(
            "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        );
        let codec = TextCodec::from_gguf_path(&path)
            .expect("the default model's tokenizer (run scripts/fetch-models)");
        let text = "Café crème for Zoë 🎉🏃‍♀️ — naïve 東京 trail shoes,\n\n  20% off!";
        let ids = codec.encode(text).expect("encode");
        let whole = codec.decode(&ids).expect("decode");
        assert!(ids.len() > 20, "{} tokens", ids.len());
        let mut detokenizer = Detokenizer::default();
        let mut got = String::new();
        let mut waited = 0;
        for n in 1..=ids.len() {
            let before = got.len();
            detokenizer.advance(&codec, &ids[..n], &mut got, false);
            waited += usize::from(got.len() == before);
            assert!(whole.starts_with(&got), "after {n} tokens: {got:?}");
            assert!(!got.ends_with('\u{FFFD}'));
        }
        // Some tokens carried only part of a character and waited for the next.
        assert!(waited > 0);
        detokenizer.advance(&codec, &ids, &mut got, true);
        assert_eq!(got, whole);
        // An output cut inside a character flushes it as the whole decode shows it.
        let cut = (1..ids.len())
            .find(|&n| {
                codec
                    .decode(&ids[..n])
                    .expect("decode")
                    .ends_with('\u{FFFD}')
            })
            .expect("a cut inside a character");
        let mut detokenizer = Detokenizer::default();
        let mut got = String::new();
        for n in 1..=cut {
            detokenizer.advance(&codec, &ids[..n], &mut got, n == cut);
        }
        assert_eq!(got, codec.decode(&ids[..cut]).expect("decode"));
    }

    #[test]
    fn holds_back_a_possible_stop_prefix() {
        let stops = vec!["\n\n".to_string(), "END".to_string()];
        assert_eq!(held_back("Hello\n", &stops), 1);
        assert_eq!(held_back("Hello EN", &stops), 2);
        assert_eq!(held_back("Hello", &stops), 0);
    }
}
