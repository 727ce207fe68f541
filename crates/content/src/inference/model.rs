//! The project's own batched forward pass for llama-family GGUF models (llama, qwen2).
//!
//! candle's stock `quantized_llama` keeps one position and one mask for the whole batch, so
//! it cannot run sequences of different lengths together. This forward pass gives every row
//! its own position and attention mask and keeps a slot-based KV cache that sequences join
//! and leave while the others keep decoding (continuous batching).
//!
//! Layout: the cache of each layer is one tensor `[slots, kv_heads, capacity, head_dim]`.
//! Active sequences occupy consecutive slots (the engine compacts them as sequences leave).
//! On the CPU every call (decode steps and prefill chunks) reads it in place (`attend`); on
//! other devices calls read `narrow` views of it without copying, and grouped-query attention
//! runs there without repeating the keys: the query heads that share a key head are folded
//! into the row dimension of one matmul.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use super::attend;
use super::q8::{self, Q8Matrix};

/// Which transformer family the GGUF holds; decides biases and the rotary convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// How the weight matrices are held in memory.
///
/// Measured on 2 CPU cores with SmolLM2-135M (bench/README.md): the project's 8-bit kernel
/// (`q8`) is the fastest decode path at every batch size. Where it runs on AVX-512 VNNI it is
/// also the fastest prefill at every length (1.4-3.6x candle's f32 GEMM at 32-512 tokens), so
/// `auto` holds the 8-bit copy only. With AVX2 alone it prefills faster up to about 190 tokens
/// per chunk, beyond which the f32 GEMM over pre-transposed weights gains ~10%: `Hybrid`
/// keeps both and uses the GEMM only for prefill chunks of `DENSE_FROM_ROWS`+ tokens. Which
/// path a row takes depends only on its own prompt, never on how many others share the step,
/// so the same prompt and seed give the same text under any load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// f32 only: one GEMM serves every row.
    F32,
    /// Re-quantised to 8 bits at load (no loss against a 4-bit file), the project's kernel.
    Q8,
    /// The file's own quantised blocks (the only choice that keeps a large model small).
    File,
    /// f32 for prefill chunks of `DENSE_FROM_ROWS`+ tokens, 8-bit for everything else.
    Hybrid,
}

impl WeightFormat {
    /// `auto` is `file` when the model's f32 copy would exceed `f32_limit_bytes`; otherwise
    /// `q8_0` on a CPU whose 8-bit kernel has VNNI (fastest at every prompt length there),
    /// `hybrid` elsewhere.
    pub fn choose(
        requested: &str,
        params: usize,
        f32_limit_bytes: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        match requested {
            "f32" => Ok(WeightFormat::F32),
            "q8_0" => Ok(WeightFormat::Q8),
            "file" => Ok(WeightFormat::File),
            "hybrid" => Ok(WeightFormat::Hybrid),
            "auto" => Ok(if params.saturating_mul(4) > f32_limit_bytes {
                WeightFormat::File
            } else if device.is_cpu() && q8::has_vnni() {
                WeightFormat::Q8
            } else {
                WeightFormat::Hybrid
            }),
            other => {
                anyhow::bail!("weights must be auto, hybrid, f32, q8_0 or file, not {other:?}")
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Q8 => "q8_0",
            WeightFormat::File => "file",
            WeightFormat::Hybrid => "hybrid",
        }
    }
}

/// Prefill chunk length from which `Hybrid` uses the f32 GEMM (measured crossover with the
/// AVX2 kernel: 256 tokens/s at 129 tokens against the GEMM's 221, 274 against 300 at 249).
pub const DENSE_FROM_ROWS: usize = 192;

/// Shape of the network, read from the GGUF metadata.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    #[serde(serialize_with = "arch_name")]
    pub arch: Arch,
    pub vocab: usize,
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub rope_theta: f32,
    pub rms_eps: f64,
    pub context_length: usize,
    pub params: usize,
}

fn arch_name<S: serde::Serializer>(arch: &Arch, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(arch.as_str())
}

fn meta<'a>(ct: &'a gguf_file::Content, key: &str) -> anyhow::Result<&'a gguf_file::Value> {
    ct.metadata
        .get(key)
        .ok_or_else(|| anyhow::anyhow!("the GGUF metadata lacks {key}"))
}

impl Config {
    pub fn from_gguf(ct: &gguf_file::Content) -> anyhow::Result<Self> {
        let arch = match meta(ct, "general.architecture")?.to_string()?.as_str() {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => anyhow::bail!("unsupported GGUF architecture {other:?} (llama or qwen2)"),
        };
        let p = arch.as_str();
        let get = |k: &str| -> anyhow::Result<usize> {
            Ok(meta(ct, &format!("{p}.{k}"))?.to_u32()? as usize)
        };
        let dim = get("embedding_length")?;
        let heads = get("attention.head_count")?;
        let kv_heads = get("attention.head_count_kv").unwrap_or(heads);
        let vocab = match ct.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => anyhow::bail!("the GGUF has no token_embd.weight"),
        };
        let params = ct.tensor_infos.values().map(|t| t.shape.elem_count()).sum();
        anyhow::ensure!(
            heads > 0 && kv_heads > 0 && heads % kv_heads == 0 && dim % heads == 0,
            "inconsistent head counts"
        );
        Ok(Config {
            arch,
            vocab,
            dim,
            layers: get("block_count")?,
            heads,
            kv_heads,
            head_dim: dim / heads,
            ffn: get("feed_forward_length")?,
            rope_theta: meta(ct, &format!("{p}.rope.freq_base"))
                .and_then(|v| Ok(v.to_f32()?))
                .unwrap_or(10_000.0),
            rms_eps: meta(ct, &format!("{p}.attention.layer_norm_rms_epsilon"))?.to_f32()? as f64,
            context_length: get("context_length").unwrap_or(2048),
            params,
        })
    }
}

/// A quantised weight matrix: the project's 8-bit decode kernel on the CPU, candle's
/// quantised matmul for the file's own blocks and on other devices.
enum Quant {
    Candle(QMatMul),
    Q8(Q8Matrix),
}

/// A weight matrix in the forms the chosen [`WeightFormat`] keeps.
struct Linear {
    /// Quantised, `[out, in]`.
    quant: Option<Quant>,
    /// f32, transposed to `[in, out]` so the GEMM reads it row-major.
    dense: Option<Tensor>,
    b: Option<Tensor>,
}

impl Linear {
    fn new(w: QTensor, format: WeightFormat, device: &Device) -> anyhow::Result<Self> {
        let (out_dim, in_dim) = w.shape().dims2()?;
        let float = matches!(w.dtype(), GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        let need_dense = float || matches!(format, WeightFormat::F32 | WeightFormat::Hybrid);
        let f32w = if need_dense || format == WeightFormat::Q8 {
            Some(w.dequantize(device)?)
        } else {
            None
        };
        let quant = match format {
            _ if float => None,
            WeightFormat::F32 => None,
            WeightFormat::File => Some(Quant::Candle(QMatMul::QTensor(Arc::new(w)))),
            WeightFormat::Q8 | WeightFormat::Hybrid => match &f32w {
                Some(t) if in_dim % q8::BLOCK == 0 && device.is_cpu() => Some(Quant::Q8(
                    Q8Matrix::quantise(&t.flatten_all()?.to_vec1::<f32>()?, out_dim, in_dim)?,
                )),
                Some(t) if in_dim % q8::BLOCK == 0 => Some(Quant::Candle(QMatMul::QTensor(
                    Arc::new(QTensor::quantize(t, GgmlDType::Q8_0)?),
                ))),
                _ => Some(Quant::Candle(QMatMul::QTensor(Arc::new(w)))),
            },
        };
        let dense = match f32w {
            Some(t) if need_dense || quant.is_none() => Some(t.t()?.contiguous()?),
            _ => None,
        };
        Ok(Linear {
            quant,
            dense,
            b: None,
        })
    }

    /// `x` is `[rows, in]`; returns `[rows, out]`. `dense` prefers the f32 copy when both
    /// forms are held.
    fn forward(&self, x: &Tensor, dense: bool) -> candle_core::Result<Tensor> {
        let quant = |q: &Quant| match q {
            Quant::Candle(q) => q.forward(x),
            Quant::Q8(m) => {
                let rows = x.dims2()?.0;
                let y = m.matmul(&x.flatten_all()?.to_vec1::<f32>()?);
                Tensor::from_vec(y, (rows, m.out_dim()), x.device())
            }
        };
        let y = match (&self.quant, &self.dense) {
            (Some(q), Some(d)) => {
                if dense {
                    x.matmul(d)?
                } else {
                    quant(q)?
                }
            }
            (Some(q), None) => quant(q)?,
            (None, Some(d)) => x.matmul(d)?,
            (None, None) => candle_core::bail!("a weight matrix was not loaded"),
        };
        self.add_bias(y)
    }

    fn add_bias(&self, y: Tensor) -> candle_core::Result<Tensor> {
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// The 8-bit matrix `forward` would use for this call, if that is the form it uses.
    fn q8(&self, dense: bool) -> Option<&Q8Matrix> {
        match (&self.quant, &self.dense) {
            (Some(Quant::Q8(m)), d) if !dense || d.is_none() => Some(m),
            _ => None,
        }
    }

    /// Several projections of the same input, each as `forward` computes it. Where all use
    /// the 8-bit kernel, the input is quantised once and the products share one dispatch on
    /// the pool (`Q8Matrix::matmul_each`); the numbers are the same either way.
    fn forward_each(
        linears: &[&Linear],
        x: &Tensor,
        dense: bool,
    ) -> candle_core::Result<Vec<Tensor>> {
        let q8: Option<Vec<&Q8Matrix>> = linears.iter().map(|l| l.q8(dense)).collect();
        let Some(matrices) = q8 else {
            return linears.iter().map(|l| l.forward(x, dense)).collect();
        };
        let rows = x.dims2()?.0;
        let ys = Q8Matrix::matmul_each(&matrices, &x.flatten_all()?.to_vec1::<f32>()?);
        ys.into_iter()
            .zip(matrices.iter().zip(linears))
            .map(|(y, (m, l))| l.add_bias(Tensor::from_vec(y, (rows, m.out_dim()), x.device())?))
            .collect()
    }
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// How one forward call attends: on the CPU, each row's (cache slot, first new position),
/// read from the cache; elsewhere an additive mask `[rows, 1, rep * tokens, longest]` for
/// tensor attention.
enum Attention {
    FromCache(Vec<(usize, usize)>),
    Masked(Tensor),
}

/// The weights of one model; stateless between calls (the cache is separate).
pub struct Model {
    pub config: Config,
    pub format: WeightFormat,
    device: Device,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    head: Linear,
    cos: Tensor,
    sin: Tensor,
}

/// One row of a forward call: the sequence's cache slot, its new tokens and the position of
/// the first of them.
pub struct Row<'a> {
    pub slot: usize,
    pub tokens: &'a [u32],
    pub pos: usize,
}

impl Model {
    /// Loads a GGUF file; `format` decides whether matrices are dequantised.
    pub fn load(
        path: &Path,
        weights: &str,
        f32_limit_bytes: usize,
        max_context: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        let mut file = std::fs::File::open(path)
            .map_err(|e| anyhow::anyhow!("cannot open model {}: {e}", path.display()))?;
        let ct = gguf_file::Content::read(&mut file)?;
        let config = Config::from_gguf(&ct)?;
        let format = WeightFormat::choose(weights, config.params, f32_limit_bytes, device)?;
        let mut tensor = |name: &str| -> anyhow::Result<QTensor> {
            ct.tensor(&mut file, name, device)
                .map_err(|e| anyhow::anyhow!("tensor {name}: {e}"))
        };
        let dense = |q: QTensor| -> anyhow::Result<Tensor> { Ok(q.dequantize(device)?) };
        let embed_q = tensor("token_embd.weight")?;
        let embed = embed_q.dequantize(device)?;
        let head = match tensor("output.weight") {
            Ok(q) => Linear::new(q, format, device)?,
            // Tied embeddings (SmolLM2): the head reuses the token embedding.
            Err(_) => Linear::new(embed_q, format, device)?,
        };
        let norm = dense(tensor("output_norm.weight")?)?;
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("blk.{i}");
            let mut linear = |name: &str, bias: bool| -> anyhow::Result<Linear> {
                let mut l = Linear::new(tensor(&format!("{p}.{name}.weight"))?, format, device)?;
                if bias {
                    l.b = Some(dense(tensor(&format!("{p}.{name}.bias"))?)?);
                }
                Ok(l)
            };
            let qkv_bias = config.arch == Arch::Qwen2;
            let q = linear("attn_q", qkv_bias)?;
            let k = linear("attn_k", qkv_bias)?;
            let v = linear("attn_v", qkv_bias)?;
            let o = linear("attn_output", false)?;
            let gate = linear("ffn_gate", false)?;
            let up = linear("ffn_up", false)?;
            let down = linear("ffn_down", false)?;
            layers.push(Layer {
                attn_norm: dense(tensor(&format!("{p}.attn_norm.weight"))?)?,
                ffn_norm: dense(tensor(&format!("{p}.ffn_norm.weight"))?)?,
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
            });
        }
        let context = max_context.min(config.context_length).max(16);
        let (cos, sin) = rotary_tables(config.head_dim, config.rope_theta, context, device)?;
        Ok(Model {
            config,
            format,
            device: device.clone(),
            embed,
            layers,
            norm,
            head,
            cos,
            sin,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Longest sequence (prompt + output) this instance serves.
    pub fn max_context(&self) -> usize {
        self.cos.dims()[0]
    }

    /// A cache for `slots` concurrent sequences.
    pub fn new_cache(&self, slots: usize) -> candle_core::Result<Cache> {
        Cache::new(&self.config, slots, self.max_context(), &self.device)
    }

    /// Runs new tokens of several sequences. Every row carries the same number of tokens and
    /// the rows occupy consecutive cache slots (`rows[i].slot == rows[0].slot + i`). Returns
    /// the logits of each row's last token, `[rows, vocab]`.
    pub fn forward(&self, cache: &mut Cache, rows: &[Row<'_>]) -> candle_core::Result<Tensor> {
        let b = rows.len();
        let Some(first) = rows.first() else {
            candle_core::bail!("forward needs at least one row")
        };
        let t = first.tokens.len();
        let s0 = first.slot;
        for (i, r) in rows.iter().enumerate() {
            if r.tokens.len() != t || r.slot != s0 + i || t == 0 {
                candle_core::bail!(
                    "rows must have equal, non-empty token counts and consecutive slots"
                )
            }
        }
        let longest = rows.iter().map(|r| r.pos + t).max().unwrap_or(t);
        cache.reserve(longest)?;
        let cfg = &self.config;
        let (hd, heads, kvh) = (cfg.head_dim, cfg.heads, cfg.kv_heads);
        let rep = heads / kvh;

        let ids: Vec<u32> = rows.iter().flat_map(|r| r.tokens.iter().copied()).collect();
        let ids = Tensor::from_vec(ids, b * t, &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?; // [b*t, dim]

        // Per-row rotary tables [b, t, hd/2].
        let mut cos = Vec::with_capacity(b);
        let mut sin = Vec::with_capacity(b);
        for r in rows {
            cos.push(self.cos.narrow(0, r.pos, t)?);
            sin.push(self.sin.narrow(0, r.pos, t)?);
        }
        let cos = Tensor::stack(&cos, 0)?;
        let sin = Tensor::stack(&sin, 0)?;
        // On the CPU every call attends straight from the cache (`attend`); elsewhere tensor
        // operations with an additive mask.
        let attention = if self.device.is_cpu() {
            Attention::FromCache(rows.iter().map(|r| (r.slot, r.pos)).collect())
        } else {
            let mut mask = vec![0f32; b * rep * t * longest];
            for (i, r) in rows.iter().enumerate() {
                for g in 0..rep {
                    for q in 0..t {
                        let row = ((i * rep + g) * t + q) * longest;
                        for slot in &mut mask[row + r.pos + q + 1..row + longest] {
                            *slot = f32::NEG_INFINITY;
                        }
                    }
                }
            }
            Attention::Masked(Tensor::from_vec(
                mask,
                (b, 1, rep * t, longest),
                &self.device,
            )?)
        };
        let scale = 1.0 / (hd as f64).sqrt();
        let shape = attend::Heads {
            heads,
            kv_heads: kvh,
            head_dim: hd,
            scale: scale as f32,
        };
        // The path depends on the row's own token count only (see `WeightFormat::Hybrid`).
        let dense = t >= DENSE_FROM_ROWS;

        for (l, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps as f32)?;
            let [q, k, v]: [Tensor; 3] =
                Linear::forward_each(&[&layer.q, &layer.k, &layer.v], &h, dense)?
                    .try_into()
                    .map_err(|_| candle_core::Error::Msg("three projections".into()))?;
            let q = q
                .reshape((b, t, heads, hd))?
                .transpose(1, 2)?
                .contiguous()?;
            let k = k.reshape((b, t, kvh, hd))?.transpose(1, 2)?.contiguous()?;
            let v = v.reshape((b, t, kvh, hd))?.transpose(1, 2)?.contiguous()?;
            let (q, k) = match cfg.arch {
                Arch::Llama => (
                    candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?,
                ),
                Arch::Qwen2 => (
                    candle_nn::rotary_emb::rope(&q, &cos, &sin)?,
                    candle_nn::rotary_emb::rope(&k, &cos, &sin)?,
                ),
            };
            cache.write(l, rows, &k, &v)?;
            let y = match (&attention, &cache.store) {
                (Attention::FromCache(seqs), Store::Cpu { k, v }) => {
                    let q = q.flatten_all()?.to_vec1::<f32>()?;
                    let y = attend::from_cache(&q, t, seqs, &k[l], &v[l], cache.capacity, shape);
                    Tensor::from_vec(y, (b * t, heads * hd), &self.device)?
                }
                (Attention::Masked(mask), Store::Device { k, v }) => {
                    let keys = k[l].narrow(0, s0, b)?.narrow(2, 0, longest)?;
                    let values = v[l].narrow(0, s0, b)?.narrow(2, 0, longest)?;
                    let q = q.reshape((b, kvh, rep * t, hd))?;
                    // Scores reduce over head_dim, the same for every row, so one matmul
                    // serves all.
                    let scores = (q.matmul(&keys.t()?)? * scale)?.broadcast_add(mask)?;
                    // Softmax and the weighted sum reduce over the keys: each row uses exactly
                    // its own length, never the batch's longest, so its numbers (and its
                    // greedy output) do not depend on which other sequences share the step.
                    let mut ys = Vec::with_capacity(b);
                    for (i, r) in rows.iter().enumerate() {
                        let len = r.pos + t;
                        let s = scores.narrow(0, i, 1)?.narrow(3, 0, len)?.contiguous()?;
                        let p = candle_nn::ops::softmax_last_dim(&s)?;
                        ys.push(p.matmul(&values.narrow(0, i, 1)?.narrow(2, 0, len)?)?);
                    }
                    Tensor::cat(&ys, 0)? // [b, kvh, rep*t, hd]
                        .reshape((b, heads, t, hd))?
                        .transpose(1, 2)?
                        .reshape((b * t, heads * hd))?
                }
                _ => candle_core::bail!("the cache is not on the model's device"),
            };
            x = (x + layer.o.forward(&y, dense)?)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps as f32)?;
            let [gate, up]: [Tensor; 2] =
                Linear::forward_each(&[&layer.gate, &layer.up], &h, dense)?
                    .try_into()
                    .map_err(|_| candle_core::Error::Msg("two projections".into()))?;
            let gated = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + layer.down.forward(&gated, dense)?)?;
        }
        let last = x
            .reshape((b, t, cfg.dim))?
            .narrow(1, t - 1, 1)?
            .squeeze(1)?;
        let last = candle_nn::ops::rms_norm(&last.contiguous()?, &self.norm, cfg.rms_eps as f32)?;
        self.head.forward(&last, false)?.to_dtype(DType::F32)
    }
}

fn rotary_tables(
    head_dim: usize,
    theta: f32,
    context: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let inv: Vec<f32> = (0..head_dim / 2)
        .map(|i| 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32))
        .collect();
    let inv = Tensor::from_vec(inv, (1, head_dim / 2), device)?;
    let pos = Tensor::arange(0u32, context as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((context, 1))?;
    let freqs = pos.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// The KV cache: per layer, keys and values of every slot, `[slots, kv_heads, capacity,
/// head_dim]`. On the CPU plain vectors, which the forward pass writes with one copy per row
/// and head and attention reads in place; elsewhere device tensors. Capacity grows (doubling,
/// up to the model's context) as sequences grow.
pub struct Cache {
    store: Store,
    layers: usize,
    slots: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    max_context: usize,
}

/// Keys and values of every layer.
enum Store {
    Cpu { k: Vec<Vec<f32>>, v: Vec<Vec<f32>> },
    Device { k: Vec<Tensor>, v: Vec<Tensor> },
}

const INITIAL_CAPACITY: usize = 256;

impl Cache {
    fn new(
        cfg: &Config,
        slots: usize,
        max_context: usize,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let capacity = INITIAL_CAPACITY.min(max_context);
        let mut cache = Cache {
            store: Store::Cpu {
                k: Vec::new(),
                v: Vec::new(),
            },
            layers: cfg.layers,
            slots,
            kv_heads: cfg.kv_heads,
            head_dim: cfg.head_dim,
            capacity,
            max_context,
        };
        let len = cache.layer_len(capacity);
        cache.store = if device.is_cpu() {
            Store::Cpu {
                k: vec![vec![0f32; len]; cfg.layers],
                v: vec![vec![0f32; len]; cfg.layers],
            }
        } else {
            let zeros = || {
                (0..cfg.layers)
                    .map(|_| cache.zeros(capacity, device))
                    .collect::<candle_core::Result<Vec<_>>>()
            };
            Store::Device {
                k: zeros()?,
                v: zeros()?,
            }
        };
        Ok(cache)
    }

    fn layer_len(&self, capacity: usize) -> usize {
        self.slots * self.kv_heads * capacity * self.head_dim
    }

    fn zeros(&self, capacity: usize, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::zeros(
            (self.slots, self.kv_heads, capacity, self.head_dim),
            DType::F32,
            device,
        )
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes the cache holds now.
    pub fn bytes(&self) -> usize {
        2 * self.layers * self.layer_len(self.capacity) * 4
    }

    fn reserve(&mut self, len: usize) -> candle_core::Result<()> {
        if len <= self.capacity {
            return Ok(());
        }
        if len > self.max_context {
            candle_core::bail!(
                "sequence of {len} tokens exceeds the context of {}",
                self.max_context
            )
        }
        let mut capacity = self.capacity.max(1);
        while capacity < len {
            capacity *= 2;
        }
        self.resize(capacity.min(self.max_context))
    }

    fn resize(&mut self, capacity: usize) -> candle_core::Result<()> {
        let keep = capacity.min(self.capacity);
        let (old, hd) = (self.capacity, self.head_dim);
        let len = self.layer_len(capacity);
        let lanes = self.slots * self.kv_heads;
        match &mut self.store {
            Store::Cpu { k, v } => {
                for t in k.iter_mut().chain(v.iter_mut()) {
                    let mut grown = vec![0f32; len];
                    for lane in 0..lanes {
                        grown[lane * capacity * hd..][..keep * hd]
                            .copy_from_slice(&t[lane * old * hd..][..keep * hd]);
                    }
                    *t = grown;
                }
            }
            Store::Device { k, v } => {
                let shape = (self.slots, self.kv_heads, capacity, hd);
                for t in k.iter_mut().chain(v.iter_mut()) {
                    let grown = Tensor::zeros(shape, DType::F32, t.device())?;
                    grown.slice_set(&t.narrow(2, 0, keep)?.contiguous()?, 2, 0)?;
                    *t = grown;
                }
            }
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Returns the cache to its initial size (called when no sequence is active).
    pub fn shrink(&mut self) -> candle_core::Result<()> {
        let initial = INITIAL_CAPACITY.min(self.max_context);
        if self.capacity > initial {
            self.resize(initial)?;
        }
        Ok(())
    }

    /// Moves the first `len` positions of slot `from` into slot `to` (compaction when a
    /// sequence retires).
    pub fn move_slot(&mut self, from: usize, to: usize, len: usize) -> candle_core::Result<()> {
        if from == to || len == 0 {
            return Ok(());
        }
        let (cap, hd, kvh) = (self.capacity, self.head_dim, self.kv_heads);
        match &mut self.store {
            Store::Cpu { k, v } => {
                for t in k.iter_mut().chain(v.iter_mut()) {
                    for g in 0..kvh {
                        let src = (from * kvh + g) * cap * hd;
                        t.copy_within(src..src + len * hd, (to * kvh + g) * cap * hd);
                    }
                }
            }
            Store::Device { k, v } => {
                for t in k.iter_mut().chain(v.iter_mut()) {
                    let src = t.narrow(0, from, 1)?.narrow(2, 0, len)?.contiguous()?;
                    t.narrow(0, to, 1)?.slice_set(&src, 2, 0)?;
                }
            }
        }
        Ok(())
    }

    /// Writes layer `l`'s new keys and values, each `[rows, kv_heads, tokens, head_dim]`, at
    /// each row's slot and first position.
    fn write(
        &mut self,
        l: usize,
        rows: &[Row<'_>],
        keys: &Tensor,
        values: &Tensor,
    ) -> candle_core::Result<()> {
        let (cap, hd, kvh) = (self.capacity, self.head_dim, self.kv_heads);
        match &mut self.store {
            Store::Cpu { k, v } => {
                for (cache, new) in [(&mut k[l], keys), (&mut v[l], values)] {
                    let new = new.flatten_all()?.to_vec1::<f32>()?;
                    let t = new.len() / (rows.len() * kvh * hd).max(1);
                    for (i, r) in rows.iter().enumerate() {
                        for g in 0..kvh {
                            let src = &new[(i * kvh + g) * t * hd..][..t * hd];
                            cache[((r.slot * kvh + g) * cap + r.pos) * hd..][..t * hd]
                                .copy_from_slice(src);
                        }
                    }
                }
            }
            Store::Device { k, v } => {
                for (i, r) in rows.iter().enumerate() {
                    k[l].narrow(0, r.slot, 1)?
                        .slice_set(&keys.narrow(0, i, 1)?, 2, r.pos)?;
                    v[l].narrow(0, r.slot, 1)?
                        .slice_set(&values.narrow(0, i, 1)?, 2, r.pos)?;
                }
            }
        }
        Ok(())
    }
}
