//! Sentence embeddings (all-MiniLM-L6-v2 by default): a BERT encoder, mean pooled over each
//! text's tokens, L2-normalised. A dedicated thread owns the model; requests waiting together
//! are merged into one batch.
//!
//! The encoder is the project's own and runs on the CPU over plain slices (candle only reads
//! the safetensors file): the texts of a batch are packed one after another with no padding at
//! all (the tokenizer file's fixed 128 is switched off), so every matrix product runs over
//! real tokens only; the products are the project's f32 kernel (`gemm`) with the bias and,
//! for the feed-forward layer, the activation applied on the thread that computed them; the
//! query, key and value projections are one product; attention runs per text over exactly
//! that text's tokens on candle's thread pool (`Text::attend`), which needs no mask; residual
//! adds are fused into the layer norms, which run on the pool in blocks of rows. Every
//! product, attention and norm writes its rows in place into buffers kept between batches.
//! No step mixes rows of different texts, so a text's vector does not depend on what else
//! shares its batch.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, RwLock};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{Config, HiddenAct};
use tokenizers::{Tokenizer, TruncationParams};
use tokio::sync::oneshot;

use super::engine::SubmitError;
use super::gemm::Dense;
use super::math::{erf, exp, softmax_numerators, with_avx2};
use super::pool;

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
    pub fn start(dir: PathBuf, queue_capacity: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue_capacity.max(1));
        let state = Arc::new(RwLock::new(Loaded::Loading));
        let worker_state = state.clone();
        let spawned = std::thread::Builder::new()
            .name("embed-worker".into())
            .spawn(move || run(&dir, &worker_state, &rx));
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
    encoder: Encoder,
    tokenizer: Tokenizer,
    scratch: Scratch,
}

fn load(dir: &Path) -> anyhow::Result<(Model, usize)> {
    let read = |name: &str| {
        std::fs::read(dir.join(name))
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", dir.join(name).display()))
    };
    let config: Config = serde_json::from_slice(&read("config.json")?)?;
    let weights = read("model.safetensors")?;
    let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)?;
    let encoder = Encoder::load(vb, &config)?;
    let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| anyhow::anyhow!("tokenizer.json: {e}"))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS.min(config.max_position_embeddings),
            ..TruncationParams::default()
        }))
        .map_err(|e| anyhow::anyhow!("truncation: {e}"))?;
    let scratch = Scratch::default();
    Ok((
        Model {
            encoder,
            tokenizer,
            scratch,
        },
        config.hidden_size,
    ))
}

/// One encoder layer's weights; the products are packed for the project's f32 kernel.
struct Layer {
    qkv: Dense,
    out: Dense,
    norm1: Norm,
    up: Dense,
    down: Dense,
    norm2: Norm,
}

/// A layer norm's weight and bias.
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// A BERT encoder over packed texts (see the module notes).
struct Encoder {
    /// `[vocab, hidden]`, `[positions, hidden]`, `[types, hidden]`.
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    norm: Norm,
    layers: Vec<Layer>,
    heads: usize,
    hidden: usize,
    eps: f32,
    act: HiddenAct,
}

impl Encoder {
    fn load(vb: VarBuilder, c: &Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            c.num_attention_heads > 0 && c.hidden_size.is_multiple_of(c.num_attention_heads),
            "config.json: hidden_size must be a multiple of num_attention_heads"
        );
        // Checkpoints saved from a task model keep the encoder under `bert.`.
        let vb = if vb.contains_tensor("embeddings.word_embeddings.weight") {
            vb
        } else {
            vb.pp("bert")
        };
        let h = c.hidden_size;
        let get = |vb: &VarBuilder, shape: &[usize], name: &str| -> anyhow::Result<Vec<f32>> {
            Ok(vb.get(shape, name)?.flatten_all()?.to_vec1()?)
        };
        let weights =
            |vb: VarBuilder, out: usize, inp: usize| -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
                Ok((get(&vb, &[out, inp], "weight")?, get(&vb, &[out], "bias")?))
            };
        let linear = |vb: VarBuilder, out: usize, inp: usize| -> anyhow::Result<Dense> {
            let (w, b) = weights(vb, out, inp)?;
            Dense::pack(&w, &b, out, inp)
        };
        let norm = |vb: VarBuilder| -> anyhow::Result<Norm> {
            Ok(Norm {
                weight: get(&vb, &[h], "weight")?,
                bias: get(&vb, &[h], "bias")?,
            })
        };
        let e = vb.pp("embeddings");
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("encoder.layer.{i}"));
            let a = l.pp("attention.self");
            let [q, k, v] = ["query", "key", "value"].map(|n| weights(a.pp(n), h, h));
            let (q, k, v) = (q?, k?, v?);
            layers.push(Layer {
                qkv: Dense::pack(
                    &[q.0, k.0, v.0].concat(),
                    &[q.1, k.1, v.1].concat(),
                    3 * h,
                    h,
                )?,
                out: linear(l.pp("attention.output.dense"), h, h)?,
                norm1: norm(l.pp("attention.output.LayerNorm"))?,
                up: linear(l.pp("intermediate.dense"), c.intermediate_size, h)?,
                down: linear(l.pp("output.dense"), h, c.intermediate_size)?,
                norm2: norm(l.pp("output.LayerNorm"))?,
            });
        }
        Ok(Encoder {
            word: get(&e, &[c.vocab_size, h], "word_embeddings.weight")?,
            position: get(
                &e,
                &[c.max_position_embeddings, h],
                "position_embeddings.weight",
            )?,
            token_type: get(&e, &[c.type_vocab_size, h], "token_type_embeddings.weight")?,
            norm: norm(e.pp("LayerNorm"))?,
            layers,
            heads: c.num_attention_heads,
            hidden: h,
            eps: c.layer_norm_eps as f32,
            act: c.hidden_act,
        })
    }

    /// Hidden states `[tokens, hidden]` of texts packed one after another, into `s.x`;
    /// `lengths[i]` is text i's token count.
    fn forward(
        &self,
        ids: &[u32],
        types: &[u32],
        lengths: &[usize],
        s: &mut Scratch,
    ) -> anyhow::Result<()> {
        let h = self.hidden;
        let positions = lengths.iter().flat_map(|&l| 0..l);
        fn rows<'a>(table: &'a [f32], h: usize, i: usize, what: &str) -> anyhow::Result<&'a [f32]> {
            table
                .get(i * h..(i + 1) * h)
                .ok_or_else(|| anyhow::anyhow!("{what} {i} is outside the embedding table"))
        }
        let Scratch { x, qkv, ctx, up, y } = s;
        x.clear();
        for ((&id, &ty), pos) in ids.iter().zip(types).zip(positions) {
            let w = rows(&self.word, h, id as usize, "token")?;
            let p = rows(&self.position, h, pos, "position")?;
            let t = rows(&self.token_type, h, ty as usize, "token type")?;
            x.extend(w.iter().zip(p).zip(t).map(|((w, p), t)| w + p + t));
        }
        self.add_and_norm(x, None, &self.norm);
        for layer in &self.layers {
            layer.qkv.matmul_into(x, qkv, |_| {});
            self.self_attention(qkv, lengths, ctx);
            layer.out.matmul_into(ctx, y, |_| {});
            self.add_and_norm(x, Some(y), &layer.norm1);
            layer.up.matmul_into(x, up, |v| activate(self.act, v));
            layer.down.matmul_into(up, y, |_| {});
            self.add_and_norm(x, Some(y), &layer.norm2);
        }
        Ok(())
    }

    /// `x = layer_norm(x + y)` row by row (`y` absent: `layer_norm(x)`), blocks of rows on
    /// the pool's threads.
    fn add_and_norm(&self, x: &mut [f32], y: Option<&[f32]>, norm: &Norm) {
        const ROWS: usize = 32;
        let h = self.hidden;
        pool::for_each_part(x.chunks_mut(ROWS * h).collect(), |block, rows| {
            for (i, row) in rows.chunks_mut(h).enumerate() {
                if let Some(y) = y {
                    let at = (block * ROWS + i) * h;
                    row.iter_mut()
                        .zip(&y[at..at + h])
                        .for_each(|(x, y)| *x += y);
                }
                let mean = row.iter().sum::<f32>() / h as f32;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
                let inv = 1.0 / (var + self.eps).sqrt();
                for ((v, w), b) in row.iter_mut().zip(&norm.weight).zip(&norm.bias) {
                    *v = (*v - mean) * inv * w + b;
                }
            }
        });
    }

    /// Each (text, head) attends over that text's own tokens. `qkv` is `[tokens, 3 * hidden]`
    /// (queries, keys, values); `ctx` becomes `[tokens, hidden]`, each text's rows written
    /// in place by the thread that computed them.
    fn self_attention(&self, qkv: &[f32], lengths: &[usize], ctx: &mut Vec<f32>) {
        let (h, heads) = (self.hidden, self.heads);
        let hd = h / heads;
        let scale = 1.0 / (hd as f32).sqrt();
        // Every value is written below, so a reused buffer is not cleared first.
        ctx.resize(qkv.len() / 3, 0.0);
        let mut texts = Vec::with_capacity(lengths.len());
        let mut rest = &mut ctx[..];
        for &len in lengths {
            let (text, tail) = rest.split_at_mut(len * h);
            texts.push(text);
            rest = tail;
        }
        let starts: Vec<usize> = lengths
            .iter()
            .scan(0, |at, &l| {
                let s = *at;
                *at += l;
                Some(s)
            })
            .collect();
        pool::for_each_part(texts, |text, out| {
            let text = Text {
                qkv,
                start: starts[text],
                len: lengths[text],
                hidden: h,
                heads,
                scale,
            };
            text.attend(out)
        });
    }
}

/// One text's rows of the packed `[tokens, 3 * hidden]` queries, keys and values.
struct Text<'a> {
    qkv: &'a [f32],
    start: usize,
    len: usize,
    hidden: usize,
    heads: usize,
    scale: f32,
}

impl Text<'_> {
    /// Softmax attention of every head of the text over the text's own tokens, into `out`
    /// (the text's rows of `[tokens, hidden]`). Per query, the scores of all keys are
    /// computed together from the head's keys transposed (`[head_dim][len]`, one fused
    /// multiply-add per dimension across the keys' lanes), the softmax in lanes, and the
    /// output as a weighted sum of the value rows. Each number depends on this text alone.
    fn attend(&self, out: &mut [f32]) {
        struct Attend<'a, 'b>(&'a Text<'b>, &'a mut [f32]);
        impl pulp::NullaryFnOnce for Attend<'_, '_> {
            type Output = ();
            #[inline(always)]
            fn call(self) {
                self.0.attend_body(self.1)
            }
        }
        with_avx2(Attend(self, out))
    }

    #[inline(always)]
    fn attend_body(&self, out: &mut [f32]) {
        let (h, len) = (self.hidden, self.len);
        let hd = h / self.heads;
        let row = |t: usize, part: usize, head: usize| {
            let at = (self.start + t) * 3 * h + part * h + head * hd;
            &self.qkv[at..at + hd]
        };
        // Keys transposed, each dimension's row padded to whole blocks of 32 keys (zeros,
        // whose scores are computed and ignored), as four groups of eight lanes.
        let wide = len.div_ceil(32) * 4;
        let mut keys = vec![[0f32; 8]; hd * wide];
        let mut scores = vec![[0f32; 8]; wide];
        for head in 0..self.heads {
            for j in 0..len {
                for (d, k) in row(j, 1, head).iter().enumerate() {
                    keys[d * wide + j / 8][j % 8] = *k;
                }
            }
            for i in 0..len {
                let q = row(i, 0, head);
                // 32 keys at a time: four independent sums per dimension.
                for (b, scores) in scores.as_chunks_mut::<4>().0.iter_mut().enumerate() {
                    let mut acc = [[0f32; 8]; 4];
                    for (d, q) in q.iter().enumerate() {
                        let k = &keys[d * wide + b * 4..d * wide + b * 4 + 4];
                        for c in 0..4 {
                            for l in 0..8 {
                                acc[c][l] = q.mul_add(k[c][l], acc[c][l]);
                            }
                        }
                    }
                    *scores = acc.map(|a| a.map(|s| s * self.scale));
                }
                let scores = &mut scores.as_flattened_mut()[..len];
                let inv = softmax_numerators(scores);
                let o = &mut out[i * h + head * hd..i * h + (head + 1) * hd];
                // 32 output dimensions at a time (four independent sums) over the value rows.
                let (whole, tail) = o.as_chunks_mut::<32>();
                for (b, o) in whole.iter_mut().enumerate() {
                    let mut acc = [[0f32; 8]; 4];
                    for (j, p) in scores.iter().enumerate() {
                        let v = &row(j, 2, head)[b * 32..b * 32 + 32];
                        for c in 0..4 {
                            for l in 0..8 {
                                acc[c][l] = p.mul_add(v[c * 8 + l], acc[c][l]);
                            }
                        }
                    }
                    *o = std::array::from_fn(|d| acc[d / 8][d % 8] * inv);
                }
                let first = hd - tail.len();
                for (d, o) in tail.iter_mut().enumerate() {
                    let sum = scores.iter().enumerate().fold(0f32, |acc, (j, p)| {
                        p.mul_add(row(j, 2, head)[first + d], acc)
                    });
                    *o = sum * inv;
                }
            }
        }
    }
}

/// The buffers of a forward pass, kept between batches: a batch's products are megabytes
/// each, and fresh allocations that size are fresh pages, faulted in and zeroed by the kernel
/// on first touch (a tenth of a batch's time when every product allocated its own).
#[derive(Default)]
struct Scratch {
    /// Hidden states `[tokens, hidden]`.
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    up: Vec<f32>,
    /// The attention output's and the feed-forward layer's products.
    y: Vec<f32>,
}

impl Scratch {
    /// Buffers above this many values (16 MiB) are not kept after a batch: a batch of long
    /// texts would otherwise hold its peak for good. Kept, the largest (the feed-forward
    /// layer's) covers batches up to ~2,700 tokens, 3x a batch of 32 product descriptions.
    const KEEP: usize = 4 << 20;

    fn trim(&mut self) {
        for buf in [
            &mut self.x,
            &mut self.qkv,
            &mut self.ctx,
            &mut self.up,
            &mut self.y,
        ] {
            if buf.capacity() > Self::KEEP {
                *buf = Vec::new();
            }
        }
    }
}

/// The feed-forward activation, in place. GELU's erf is evaluated with a polynomial (absolute
/// error below 5e-7, see `erf`) that the compiler vectorises, where a libm call per value was
/// a sixth of the encoder's time.
fn activate(act: HiddenAct, x: &mut [f32]) {
    struct Activate<'a>(HiddenAct, &'a mut [f32]);
    impl pulp::NullaryFnOnce for Activate<'_> {
        type Output = ();
        #[inline(always)]
        fn call(self) {
            activate_values(self.0, self.1)
        }
    }
    with_avx2(Activate(act, x))
}

#[inline(always)]
fn activate_values(act: HiddenAct, x: &mut [f32]) {
    match act {
        HiddenAct::Gelu => x
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2))),
        HiddenAct::GeluApproximate => x.iter_mut().for_each(|v| {
            // 0.5 x (1 + tanh(u)), with 1 + tanh(u) = 2 - 2 / (exp(2u) + 1).
            let u = 0.797_884_6 * (*v + 0.044_715 * *v * *v * *v);
            *v = 0.5 * *v * (2.0 - 2.0 / (exp(2.0 * u) + 1.0));
        }),
        HiddenAct::Relu => x.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

fn run(dir: &Path, state: &RwLock<Loaded>, rx: &Receiver<Job>) {
    let mut model = match load(dir) {
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
    fn embed(&mut self, texts: &[&str]) -> anyhow::Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let lengths: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        let h = self.encoder.hidden;
        let mut vectors = Vec::with_capacity(texts.len());
        for (chunk, lens) in encodings.chunks(MAX_BATCH).zip(lengths.chunks(MAX_BATCH)) {
            let ids: Vec<u32> = chunk
                .iter()
                .flat_map(|e| e.get_ids().iter().copied())
                .collect();
            let types: Vec<u32> = chunk
                .iter()
                .flat_map(|e| e.get_type_ids().iter().copied())
                .collect();
            self.encoder
                .forward(&ids, &types, lens, &mut self.scratch)?;
            let mut rows = self.scratch.x.chunks(h);
            for &len in lens {
                // Mean over the text's tokens, then unit length.
                let mut mean = vec![0f32; h];
                for row in rows.by_ref().take(len) {
                    for (m, v) in mean.iter_mut().zip(row) {
                        *m += v;
                    }
                }
                let count = len.max(1) as f32;
                mean.iter_mut().for_each(|m| *m /= count);
                let norm = mean.iter().map(|v| v * v).sum::<f32>().sqrt();
                if norm > 0.0 {
                    mean.iter_mut().for_each(|m| *m /= norm);
                }
                vectors.push(mean);
            }
        }
        self.scratch.trim();
        Ok((vectors, lengths))
    }
}

/// Cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Softmax attention written out in f64: every query of the text over every key.
    fn reference(qkv: &[f32], start: usize, len: usize, h: usize, heads: usize) -> Vec<f64> {
        let hd = h / heads;
        let scale = 1.0 / (hd as f64).sqrt();
        let at = |t: usize, part: usize, head: usize, d: usize| {
            qkv[(start + t) * 3 * h + part * h + head * hd + d] as f64
        };
        let mut out = vec![0f64; len * h];
        for head in 0..heads {
            for i in 0..len {
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        (0..hd)
                            .map(|d| at(i, 0, head, d) * at(j, 1, head, d))
                            .sum::<f64>()
                    })
                    .map(|s| s * scale)
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for d in 0..hd {
                    out[i * h + head * hd + d] =
                        (0..len).map(|j| e[j] / total * at(j, 2, head, d)).sum();
                }
            }
        }
        out
    }

    #[test]
    fn text_attention_matches_softmax_attention_written_out() {
        let mut rng = mercato_platform::random::SplitMix64::new(3);
        // Head widths with and without a 32-wide remainder; lengths across key blocks of 32.
        for (h, heads) in [(64, 2), (80, 2), (24, 3)] {
            for len in [1, 7, 32, 33, 70] {
                let start = 3;
                let qkv: Vec<f32> = (0..(start + len + 2) * 3 * h)
                    .map(|_| rng.next_f64() as f32 * 4.0 - 2.0)
                    .collect();
                let text = Text {
                    qkv: &qkv,
                    start,
                    len,
                    hidden: h,
                    heads,
                    scale: 1.0 / ((h / heads) as f32).sqrt(),
                };
                let mut got = vec![f32::NAN; len * h];
                text.attend(&mut got);
                let want = reference(&qkv, start, len, h, heads);
                for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (*g as f64 - w).abs() < 1e-5,
                        "h {h} len {len} at {k}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
