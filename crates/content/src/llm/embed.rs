//! Sentence embeddings (all-MiniLM-L6-v2 by default): BERT in candle, mean pooled over the
//! attention mask, L2-normalised. A dedicated thread owns the model; requests waiting together
//! are merged into one batch, sorted by length so little is spent on padding, which is to the
//! longest text of each batch (not the tokenizer file's fixed 128).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, RwLock};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use tokio::sync::oneshot;

use super::engine::SubmitError;

/// Texts embedded per forward pass at most.
pub const MAX_BATCH: usize = 64;
/// Tokens per text at most (longer texts are truncated, as sentence-transformers does).
pub const MAX_TOKENS: usize = 256;

/// Vectors of one request.
#[derive(Debug, Clone)]
pub struct Embeddings {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

struct Job {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Embeddings, String>>,
}

enum Loaded {
    Loading,
    Ready { name: String, dim: usize },
    Failed(String),
}

/// Handle to the embedding worker; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    tx: SyncSender<Job>,
    state: Arc<RwLock<Loaded>>,
}

impl Embedder {
    /// Starts the worker; the model (directory with `model.safetensors`, `config.json`,
    /// `tokenizer.json`) loads on it.
    pub fn start(dir: PathBuf, device: Device, queue_capacity: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue_capacity.max(1));
        let state = Arc::new(RwLock::new(Loaded::Loading));
        let worker_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("embed-worker".into())
            .spawn(move || run(&dir, &device, &worker_state, &rx));
        if let Err(e) = spawned
            && let Ok(mut s) = state.write()
        {
            *s = Loaded::Failed(format!("cannot start the embedding thread: {e}"));
        }
        Embedder { tx, state }
    }

    /// (model name, dimensions) once loaded; why not otherwise.
    pub fn ready(&self) -> Result<(String, usize), String> {
        match self.state.read().as_deref() {
            Ok(Loaded::Ready { name, dim }) => Ok((name.clone(), *dim)),
            Ok(Loaded::Loading) => Err("the embedding model is loading".into()),
            Ok(Loaded::Failed(e)) => Err(e.clone()),
            Err(_) => Err("the embedding state is poisoned".into()),
        }
    }

    /// Waits (up to `timeout`) for the model to load.
    pub fn wait_ready(&self, timeout: std::time::Duration) -> Result<(String, usize), String> {
        let until = std::time::Instant::now() + timeout;
        loop {
            match self.ready() {
                Err(e) if e.ends_with("is loading") && std::time::Instant::now() < until => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    /// Embeds the texts (unit vectors, in order).
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embeddings, EmbedError> {
        self.ready().map_err(SubmitError::Unavailable)?;
        if texts.is_empty() {
            return Ok(Embeddings {
                vectors: Vec::new(),
                tokens: 0,
            });
        }
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Job { texts, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(SubmitError::Busy.into()),
            Err(TrySendError::Disconnected(_)) => {
                return Err(SubmitError::Unavailable("the embedding worker stopped".into()).into());
            }
        }
        match rx.await {
            Ok(Ok(e)) => Ok(e),
            Ok(Err(e)) => Err(EmbedError::Failed(e)),
            Err(_) => Err(EmbedError::Failed(
                "the embedding worker dropped the request".into(),
            )),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Submit(#[from] SubmitError),
    #[error("embedding failed: {0}")]
    Failed(String),
}

struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

fn load(dir: &Path, device: &Device) -> anyhow::Result<(Model, usize)> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.join(name).display()))
    };
    let config_bytes = read("config.json")?;
    let config: Config = serde_json::from_slice(&config_bytes)?;
    let hidden: serde_json::Value = serde_json::from_slice(&config_bytes)?;
    let dim = hidden["hidden_size"].as_u64().unwrap_or(0) as usize;
    let weights = read("model.safetensors")?;
    let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, device)?;
    let bert = BertModel::load(vb, &config)?;
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        ..PaddingParams::default()
    }));
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(|e| anyhow::anyhow!("truncation: {e}"))?;
    Ok((
        Model {
            bert,
            tokenizer,
            device: device.clone(),
        },
        dim,
    ))
}

fn run(dir: &Path, device: &Device, state: &RwLock<Loaded>, rx: &Receiver<Job>) {
    let model = match load(dir, device) {
        Ok((m, dim)) => {
            let name = dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            tracing::info!(model = %name, dim, "embedding model loaded");
            if let Ok(mut s) = state.write() {
                *s = Loaded::Ready { name, dim };
            }
            m
        }
        Err(e) => {
            tracing::error!(error = %e, dir = %dir.display(), "the embedding model failed to load");
            if let Ok(mut s) = state.write() {
                *s = Loaded::Failed(format!("the embedding model failed to load: {e}"));
            }
            return;
        }
    };
    while let Ok(first) = rx.recv() {
        // Merge whatever else is waiting, up to a few batches' worth.
        let mut jobs = vec![first];
        let mut total = jobs[0].texts.len();
        while total < 4 * MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => {
                    total += job.texts.len();
                    jobs.push(job);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(String::as_str))
            .collect();
        let result = model.embed(&texts);
        let mut offset = 0;
        for job in jobs {
            let n = job.texts.len();
            let reply = match &result {
                Ok((vectors, tokens)) => Ok(Embeddings {
                    vectors: vectors[offset..offset + n].to_vec(),
                    tokens: tokens[offset..offset + n].iter().sum(),
                }),
                Err(e) => Err(e.to_string()),
            };
            offset += n;
            let _ = job.reply.send(reply);
        }
    }
}

impl Model {
    /// Unit vectors and token counts of `texts`, in order.
    fn embed(&self, texts: &[&str]) -> anyhow::Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        // Lengths without padding (BatchLongest pads the whole call); batches are re-formed
        // from texts of similar length.
        let lengths: Vec<usize> = encodings
            .iter()
            .map(|e| e.get_attention_mask().iter().filter(|m| **m == 1).count())
            .collect();
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| lengths[i]);
        let mut vectors = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(MAX_BATCH) {
            let longest = chunk.iter().map(|&i| lengths[i]).max().unwrap_or(1).max(1);
            let mut ids = Vec::with_capacity(chunk.len() * longest);
            let mut types = Vec::with_capacity(chunk.len() * longest);
            let mut mask = Vec::with_capacity(chunk.len() * longest);
            for &i in chunk {
                let e = &encodings[i];
                ids.extend(e.get_ids()[..longest].iter().copied());
                types.extend(e.get_type_ids()[..longest].iter().copied());
                mask.extend(e.get_attention_mask()[..longest].iter().copied());
            }
            let shape = (chunk.len(), longest);
            let ids = Tensor::from_vec(ids, shape, &self.device)?;
            let types = Tensor::from_vec(types, shape, &self.device)?;
            let mask = Tensor::from_vec(mask, shape, &self.device)?;
            let out = self.bert.forward(&ids, &types, Some(&mask))?; // [b, l, h]
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = out.broadcast_mul(&m)?.sum(1)?;
            let counts = m.sum(1)?;
            let mean = summed.broadcast_div(&counts)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
            let unit = mean.broadcast_div(&norm)?.to_vec2::<f32>()?;
            for (&i, v) in chunk.iter().zip(unit) {
                vectors[i] = v;
            }
        }
        Ok((vectors, lengths))
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
