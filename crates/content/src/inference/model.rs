//! The project's own batched forward pass for llama-family GGUF models (llama, qwen2).
//!
//! candle's stock `quantized_llama` keeps one position and one mask for the whole batch, so
//! it cannot run sequences of different lengths together. This forward pass gives every row
//! its own position and attention mask and keeps a slot-based KV cache that sequences join
//! and leave while the others keep decoding (continuous batching).
//!
//! Two implementations of the same pass. On the CPU (`forward_cpu`) candle only holds the
//! weights: activations are plain vectors, the products are the project's kernels (`q8`, or
//! candle's GEMM for the f32 copy), the projections of one input share one quantisation and
//! one dispatch, and attention reads the cache in place (`attend`). Through candle, each of
//! the ~60 small tensor operations of a layer cost an allocation and a dispatch; at 16
//! sequences that was about a third of a decode step with the second core idle. On other
//! devices (`forward_tensors`) tensor operations with an additive mask per row; a unit test
//! checks the two agree.
//!
//! Layout: the cache of each layer is `[slots, kv_heads, capacity, head_dim]` for keys and for
//! values (half-precision vectors on the CPU, tensors elsewhere; on the CPU each (slot, key
//! head)'s keys are blocks of 16 positions, dimension-major inside a block, see `attend`).
//! Active sequences occupy consecutive slots (the engine compacts them as sequences leave).
//! The tensor pass reads `narrow` views of it without copying, and runs grouped-query
//! attention without repeating the keys: the query heads that share a key head are folded
//! into the row dimension of one matmul.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor, gguf_file};
use candle_core::{DType, Device, Module, Tensor};

use super::attend;
use super::math::{exp, lanes};
use super::q8::{self, Q4Blocks, Q8Matrix};

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
/// Measured on 2 CPU cores with SmolLM2-135M (bench/README.md): the project's integer kernels
/// (`q8`: 8-bit, and 4-bit below) are the fastest decode paths at every batch size. Against
/// candle's f32 GEMM over pre-transposed weights the 8-bit kernel is also the faster prefill on
/// AVX-512 VNNI (1.4-3.6x at 32-512 tokens) and on AVX2 alone (Zen 3: 1.3-4.0x at 32-256, about
/// level at the default chunk of 512, 0.96-1.32x; Zen 1: 1.2-2.1x at 32-512), so `auto` keeps
/// no f32 copy. `Hybrid` keeps both and uses the GEMM for prefill chunks of `DENSE_FROM_ROWS`+
/// tokens; `auto` picks it only where the 8-bit kernel has no vector path. The 4-bit kernel
/// over the file's own Q4_0/Q4_1 blocks (`Q4`) reads half the bytes: on AVX2 alone (2-core
/// EPYCs, Zen 1 and Zen 3) it also does half the multiplies per input and beats the 8-bit copy
/// at every batch size and prompt length; with VNNI it takes the same instructions per input as
/// the 8-bit kernel, and on a 2-core Zen 5 it decoded 1.04-1.3x faster at 1-32 sequences and
/// prefilled level (0.92-1.68x). AMX CPUs keep the 8-bit copy, whose batches take the tile
/// unit. Which path a row takes depends only on its own prompt, never on how many others share
/// the step, so the same prompt and seed give the same text under any load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// f32 only: one GEMM serves every row.
    F32,
    /// Re-quantised to 8 bits at load (no loss against a 4-bit file), the project's kernel.
    Q8,
    /// The file's own 4-bit blocks (Q4_0, Q4_1) kept as they are, through the project's
    /// kernel (half the bytes of `Q8`, fewer multiplies per input on AVX2); other quantised
    /// matrices as in `Q8`.
    Q4,
    /// The file's own quantised blocks (the only choice that keeps a large model small).
    File,
    /// f32 for prefill chunks of `DENSE_FROM_ROWS`+ tokens, 8-bit for everything else.
    Hybrid,
}

impl WeightFormat {
    /// `auto` is `file` when the model's f32 copy would exceed `f32_limit_bytes`; otherwise
    /// `q4` on a CPU when the layers are 4-bit blocks, unless it has AMX (half the bytes of
    /// the 8-bit copy; fastest at every batch on the CPUs measured, see the type's doc);
    /// `q8_0` on AMX CPUs and, for other files, wherever the 8-bit kernel has a vector path
    /// (AVX2 or VNNI); `hybrid` elsewhere.
    pub fn choose(
        requested: &str,
        config: &Config,
        f32_limit_bytes: usize,
        device: &Device,
    ) -> anyhow::Result<Self> {
        match requested {
            "f32" => Ok(WeightFormat::F32),
            "q8_0" => Ok(WeightFormat::Q8),
            "q4" => Ok(WeightFormat::Q4),
            "file" => Ok(WeightFormat::File),
            "hybrid" => Ok(WeightFormat::Hybrid),
            "auto" => Ok(if config.params.saturating_mul(4) > f32_limit_bytes {
                WeightFormat::File
            } else if device.is_cpu() && config.four_bit && !q8::has_amx() {
                WeightFormat::Q4
            } else if device.is_cpu() && q8::has_vector_kernel() {
                WeightFormat::Q8
            } else {
                WeightFormat::Hybrid
            }),
            other => {
                anyhow::bail!("weights must be auto, hybrid, f32, q8_0, q4 or file, not {other:?}")
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WeightFormat::F32 => "f32",
            WeightFormat::Q8 => "q8_0",
            WeightFormat::Q4 => "q4",
            WeightFormat::File => "file",
            WeightFormat::Hybrid => "hybrid",
        }
    }
}

/// Prefill chunk length from which `Hybrid` uses the f32 GEMM (the crossover measured with an
/// earlier 8-bit AVX2 kernel: 256 tokens/s at 129 tokens against the GEMM's 221, 274 against
/// 300 at 249; the current kernel prefills faster than the GEMM up to 256 tokens on AVX2 and
/// about level with it at 512).
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
    /// Whether the layers' matrices are 4-bit blocks (Q4_0 or Q4_1) that `WeightFormat::Q4`
    /// keeps as they are.
    pub four_bit: bool,
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
        let four_bit = ct
            .tensor_infos
            .iter()
            .filter(|(name, _)| name.starts_with("blk."))
            .filter(|(_, t)| t.shape.rank() == 2)
            .all(|(_, t)| matches!(t.ggml_dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1));
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
            four_bit,
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
        let four_bit = match w.dtype() {
            GgmlDType::Q4_0 => Some(Q4Blocks::Q4_0),
            GgmlDType::Q4_1 => Some(Q4Blocks::Q4_1),
            _ => None,
        }
        .filter(|_| format == WeightFormat::Q4 && device.is_cpu() && in_dim % q8::BLOCK == 0);
        let f32w = if need_dense || (four_bit.is_none() && format != WeightFormat::File) {
            Some(w.dequantize(device)?)
        } else {
            None
        };
        let quant = match (format, four_bit) {
            _ if float => None,
            (WeightFormat::F32, _) => None,
            (_, Some(layout)) => Some(Quant::Q8(Q8Matrix::from_q4(
                &w.data()?,
                layout,
                out_dim,
                in_dim,
            )?)),
            (WeightFormat::File, _) => Some(Quant::Candle(QMatMul::QTensor(Arc::new(w)))),
            (WeightFormat::Q8 | WeightFormat::Q4 | WeightFormat::Hybrid, _) => match &f32w {
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
        let y = self.product(x, dense)?;
        match &self.b {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }

    /// `forward` without the bias.
    fn product(&self, x: &Tensor, dense: bool) -> candle_core::Result<Tensor> {
        let quant = |q: &Quant| match q {
            Quant::Candle(q) => q.forward(x),
            Quant::Q8(m) => {
                let rows = x.dims2()?.0;
                let y = m.matmul(&x.flatten_all()?.to_vec1::<f32>()?);
                Tensor::from_vec(y, (rows, m.out_dim()), x.device())
            }
        };
        match (&self.quant, &self.dense) {
            (Some(q), Some(d)) => {
                if dense {
                    x.matmul(d)
                } else {
                    quant(q)
                }
            }
            (Some(q), None) => quant(q),
            (None, Some(d)) => x.matmul(d),
            (None, None) => candle_core::bail!("a weight matrix was not loaded"),
        }
    }

    /// The 8-bit matrix `forward` would use for this call, if that is the form it uses.
    fn q8(&self, dense: bool) -> Option<&Q8Matrix> {
        match (&self.quant, &self.dense) {
            (Some(Quant::Q8(m)), d) if !dense || d.is_none() => Some(m),
            _ => None,
        }
    }
}

/// Several projections of the same input rows (`x` row-major `[rows, in]`) on the CPU, each
/// as `Linear::forward` computes it, into row-major vectors (`ys`, resized; a forward pass
/// reuses them from layer to layer). Where all use the 8-bit kernel, the input is quantised
/// once and the products share one dispatch on the pool (`Q8Matrix::matmul_each_into`);
/// other forms go through candle.
fn project<const N: usize>(
    linears: [&Linear; N],
    x: &[f32],
    rows: usize,
    dense: bool,
    mut ys: [&mut Vec<f32>; N],
) -> candle_core::Result<()> {
    let q8: Option<Vec<&Q8Matrix>> = linears.iter().map(|l| l.q8(dense)).collect();
    match q8 {
        Some(matrices) => Q8Matrix::matmul_each_into(&matrices, x, &mut ys),
        None => {
            let x = Tensor::from_slice(x, (rows, x.len() / rows.max(1)), &Device::Cpu)?;
            for (y, l) in ys.iter_mut().zip(linears) {
                **y = l.product(&x, dense)?.flatten_all()?.to_vec1::<f32>()?;
            }
        }
    }
    for (y, l) in ys.iter_mut().zip(linears) {
        if let Some(b) = &l.b {
            with_slice(b, |b| {
                for row in y.chunks_exact_mut(b.len()) {
                    row.iter_mut().zip(b).for_each(|(y, b)| *y += b);
                }
            })?;
        }
    }
    Ok(())
}

/// The feed-forward's gated input, `silu(x gate) * (x up)`, as `project` and `silu_mul`
/// compute it, into `y`. Where both use the 8-bit kernel (and carry no bias), the gating runs
/// on the pool inside the product (`Q8Matrix::matmul_combined_into`): the same numbers,
/// without the up product's output or a pass over it on this thread.
fn gated(
    [gate, up]: [&Linear; 2],
    x: &[f32],
    rows: usize,
    dense: bool,
    y: &mut Vec<f32>,
) -> candle_core::Result<()> {
    match (gate.q8(dense), up.q8(dense), &gate.b, &up.b) {
        (Some(g), Some(u), None, None) => {
            Q8Matrix::matmul_combined_into(g, u, x, y, silu_mul);
        }
        _ => {
            let mut u = Vec::new();
            project([gate, up], x, rows, dense, [&mut *y, &mut u])?;
            silu_mul(y, &u);
        }
    }
    Ok(())
}

/// Runs `f` on a contiguous f32 CPU tensor's values, in place.
fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let (store, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*store else {
        candle_core::bail!("a CPU tensor was expected")
    };
    if !layout.is_contiguous() {
        candle_core::bail!("a contiguous tensor was expected")
    }
    let start = layout.start_offset();
    let values = cpu.as_slice::<f32>()?;
    Ok(f(&values[start..start + layout.shape().elem_count()]))
}

/// RMS norm of each row of `x` (rows as wide as `w`), scaled by `w`.
fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(w.len()) {
        // Eight independent partial sums (one vector), in a fixed order whatever the CPU: a
        // single running sum is a chain of dependent additions, and the norms run on the
        // worker thread alone.
        let squares = lanes(row, 0.0, |a, v| a + v * v);
        let mean = squares.iter().sum::<f32>() / w.len() as f32;
        let scale = 1.0 / (mean + eps).sqrt();
        out.extend(row.iter().zip(w).map(|(v, w)| v * scale * w));
    }
    out
}

/// `gate[i] = silu(gate[i]) * up[i]` (the feed-forward's gating), with the vectorisable `exp`.
/// Runs with AVX and FMA where the CPU has them (without, `exp`'s fused multiply-adds are
/// library calls); the same bits either way.
fn silu_mul(gate: &mut [f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        return simd.vectorize(|| silu_mul_body(gate, up));
    }
    silu_mul_body(gate, up)
}

#[inline(always)]
fn silu_mul_body(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// Rotary embedding in place: `x` is `[tokens, heads, head_dim]` and `positions` gives each
/// token's position; `cos` and `sin` are `[context, head_dim / 2]`. Llama rotates interleaved
/// pairs `(2i, 2i + 1)`, qwen2 the halves `(i, i + head_dim / 2)` (candle's `rope_i` and
/// `rope`).
fn rope(
    x: &mut [f32],
    width: usize,
    hd: usize,
    positions: impl Iterator<Item = usize>,
    (cos, sin): (&[f32], &[f32]),
    arch: Arch,
) {
    let half = hd / 2;
    for (token, pos) in x.chunks_exact_mut(width).zip(positions) {
        let (c, s) = (&cos[pos * half..][..half], &sin[pos * half..][..half]);
        for head in token.chunks_exact_mut(hd) {
            // The layout decided outside the loops, so each is a plain vectorisable pass.
            match arch {
                Arch::Llama => {
                    for ((pair, c), s) in head.as_chunks_mut::<2>().0.iter_mut().zip(c).zip(s) {
                        let [x0, x1] = *pair;
                        *pair = [x0 * c - x1 * s, x0 * s + x1 * c];
                    }
                }
                Arch::Qwen2 => {
                    let (lo, hi) = head.split_at_mut(half);
                    for (((x0, x1), c), s) in lo.iter_mut().zip(hi).zip(c).zip(s) {
                        (*x0, *x1) = (*x0 * c - *x1 * s, *x0 * s + *x1 * c);
                    }
                }
            }
        }
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
    /// `cos` and `sin` as vectors, for the CPU forward pass.
    cos_sin: (Vec<f32>, Vec<f32>),
    /// Whether every product of a row runs the project's integer kernels, for rows under
    /// `DENSE_FROM_ROWS` tokens and from it (see [`Model::kernel_only`]).
    kernel_rows: [bool; 2],
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
        let format = WeightFormat::choose(weights, &config, f32_limit_bytes, device)?;
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
        let kernel_rows = [false, true].map(|dense| {
            head.q8(false).is_some()
                && layers.iter().all(|l| {
                    [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                        .iter()
                        .all(|m| m.q8(dense).is_some())
                })
        });
        Ok(Model {
            config,
            format,
            device: device.clone(),
            embed,
            layers,
            norm,
            head,
            cos_sin: (
                cos.flatten_all()?.to_vec1::<f32>()?,
                sin.flatten_all()?.to_vec1::<f32>()?,
            ),
            cos,
            sin,
            kernel_rows,
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
        let tensors = !self.device.is_cpu();
        Cache::new(
            &self.config,
            slots,
            self.max_context(),
            &self.device,
            tensors,
        )
    }

    /// Runs new tokens of several sequences: decode steps (a token per row), prompt chunks, or
    /// both. Each row carries one or more tokens, rows of different lengths may share a call,
    /// and the rows occupy consecutive cache slots (`rows[i].slot == rows[0].slot + i`).
    /// Returns the logits of each row's last token, `[rows, vocab]`. A row's numbers do not
    /// depend on the other rows of the call (see [`Model::joins`]).
    pub fn forward(&self, cache: &mut Cache, rows: &[Row<'_>]) -> candle_core::Result<Tensor> {
        let mut logits = Vec::new();
        self.forward_into(cache, rows, &mut logits)?;
        Tensor::from_vec(logits, (rows.len(), self.config.vocab), &self.device)
    }

    /// [`Model::forward`] into `logits` (`rows x vocab`, row after row), reusing its memory:
    /// the worker runs this every step, where a fresh vector of logits (3 MB at 16 rows) and
    /// its copy out of a tensor cost page faults, zeroing and copying on its thread while the
    /// pool's waited.
    pub fn forward_into(
        &self,
        cache: &mut Cache,
        rows: &[Row<'_>],
        logits: &mut Vec<f32>,
    ) -> candle_core::Result<()> {
        self.admit(cache, rows)?;
        let cpu = matches!(cache.store, Store::Cpu { .. });
        if cpu && rows.iter().all(|r| self.kernel_only(r.tokens.len())) {
            return self.forward_cpu(cache, rows, logits);
        }
        // Otherwise each run of rows that `joins` lets share a pass, one pass after another.
        logits.clear();
        let mut part = Vec::new();
        let mut rest = rows;
        while !rest.is_empty() {
            let len = 1 + rest[1..]
                .iter()
                .take_while(|r| self.joins(cpu, rest[0].tokens.len(), r.tokens.len()))
                .count();
            let (run, tail) = rest.split_at(len);
            if cpu {
                self.forward_cpu(cache, run, &mut part)?;
            } else {
                let longest = run.iter().map(|r| r.pos + r.tokens.len()).max();
                let out = self.forward_tensors(cache, run, longest.unwrap_or(0))?;
                part = out.flatten_all()?.to_vec1::<f32>()?;
            }
            logits.extend_from_slice(&part);
            rest = tail;
        }
        Ok(())
    }

    /// Whether every product of a row of `tokens` tokens runs the project's 8-bit or 4-bit
    /// kernel, which computes each row on its own: such rows share a CPU pass whatever their
    /// lengths (prompt chunks of several sequences beside decode rows).
    fn kernel_only(&self, tokens: usize) -> bool {
        self.kernel_rows[usize::from(tokens >= DENSE_FROM_ROWS)]
    }

    /// Whether rows of `a` and `b` tokens may share a pass that is not all kernel rows (see
    /// [`Model::kernel_only`]): decode rows, as always; prompt chunks on other products
    /// (candle's GEMM, a device's kernels) each run alone, since how those split a product
    /// can depend on its row count, and a prompt's output must not depend on the load.
    fn joins(&self, cpu: bool, a: usize, b: usize) -> bool {
        a == 1 && b == 1 || cpu && self.kernel_only(a) && self.kernel_only(b)
    }

    /// Checks `rows` (see [`Model::forward`]) and makes room in the cache for the longest
    /// sequence after them.
    fn admit(&self, cache: &mut Cache, rows: &[Row<'_>]) -> candle_core::Result<()> {
        let Some(first) = rows.first() else {
            candle_core::bail!("forward needs at least one row")
        };
        for (i, r) in rows.iter().enumerate() {
            if r.slot != first.slot + i || r.tokens.is_empty() {
                candle_core::bail!("rows must have tokens and consecutive slots")
            }
        }
        let vocab = self.config.vocab;
        if let Some(id) = rows
            .iter()
            .flat_map(|r| r.tokens)
            .find(|&&id| id as usize >= vocab)
        {
            candle_core::bail!("token {id} is outside the vocabulary of {vocab}")
        }
        let longest = rows.iter().map(|r| r.pos + r.tokens.len()).max();
        cache.reserve(longest.unwrap_or(0))
    }

    /// The forward pass on the CPU, over plain vectors: candle only holds the weights. Each
    /// step is a loop over rows or one of the project's kernels (`q8`, `attend`), so a step
    /// costs no tensor allocations or dispatches beyond the products, and a row's numbers do
    /// not depend on the other rows.
    fn forward_cpu(
        &self,
        cache: &mut Cache,
        rows: &[Row<'_>],
        logits: &mut Vec<f32>,
    ) -> candle_core::Result<()> {
        let cfg = &self.config;
        let (dim, hd, heads, kvh) = (cfg.dim, cfg.head_dim, cfg.heads, cfg.kv_heads);
        let eps = cfg.rms_eps as f32;
        let n: usize = rows.iter().map(|r| r.tokens.len()).sum();
        // The path depends on the row's own token count only (see `WeightFormat::Hybrid`):
        // rows of different lengths share a pass only where every product is the same
        // kernel for both (`Model::kernel_only`).
        let dense = rows.iter().all(|r| r.tokens.len() >= DENSE_FROM_ROWS);
        let mut x = with_slice(&self.embed, |embed| {
            let ids = rows.iter().flat_map(|r| r.tokens);
            ids.flat_map(|&id| &embed[id as usize * dim..][..dim])
                .copied()
                .collect::<Vec<f32>>()
        })?;
        let positions = || rows.iter().flat_map(|r| r.pos..r.pos + r.tokens.len());
        let seqs: Vec<attend::Span> = rows
            .iter()
            .map(|r| attend::Span {
                slot: r.slot,
                pos: r.pos,
                tokens: r.tokens.len(),
            })
            .collect();
        let shape = attend::Heads {
            heads,
            kv_heads: kvh,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        };
        let (cos, sin) = (self.cos_sin.0.as_slice(), self.cos_sin.1.as_slice());
        // Buffers reused by every layer: each is fully written before it is read.
        let [mut q, mut k, mut v, mut y, mut o, mut gate, mut down] = Default::default();
        for (l, layer) in self.layers.iter().enumerate() {
            let h = with_slice(&layer.attn_norm, |w| rms_norm(&x, w, eps))?;
            let qkv = [&layer.q, &layer.k, &layer.v];
            project(qkv, &h, n, dense, [&mut q, &mut k, &mut v])?;
            rope(&mut q, heads * hd, hd, positions(), (cos, sin), cfg.arch);
            rope(&mut k, kvh * hd, hd, positions(), (cos, sin), cfg.arch);
            cache.write(l, &seqs, &k, &v)?;
            let Store::Cpu { k: keys, v: values } = &cache.store else {
                candle_core::bail!("the cache is not a CPU cache")
            };
            let (keys, values) = (&keys[l][..], &values[l][..]);
            attend::from_cache_into(&q, &seqs, (keys, values), cache.capacity, shape, &mut y);
            project([&layer.o], &y, n, dense, [&mut o])?;
            x.iter_mut().zip(&o).for_each(|(x, o)| *x += o);

            let h = with_slice(&layer.ffn_norm, |w| rms_norm(&x, w, eps))?;
            gated([&layer.gate, &layer.up], &h, n, dense, &mut gate)?;
            project([&layer.down], &gate, n, dense, [&mut down])?;
            x.iter_mut().zip(&down).for_each(|(x, d)| *x += d);
        }
        // Each row's last token.
        let mut last = Vec::with_capacity(rows.len() * dim);
        let mut end = 0;
        for r in rows {
            end += r.tokens.len();
            last.extend_from_slice(&x[(end - 1) * dim..end * dim]);
        }
        let last = with_slice(&self.norm, |w| rms_norm(&last, w, eps))?;
        project([&self.head], &last, rows.len(), false, [logits])
    }

    /// The forward pass in tensor operations (devices other than the CPU): an additive mask per
    /// row for attention over `narrow` views of the cache.
    /// Every row carries the same number of tokens.
    fn forward_tensors(
        &self,
        cache: &mut Cache,
        rows: &[Row<'_>],
        longest: usize,
    ) -> candle_core::Result<Tensor> {
        let b = rows.len();
        let t = rows[0].tokens.len();
        let s0 = rows[0].slot;
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
        let mask = {
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
            Tensor::from_vec(mask, (b, 1, rep * t, longest), &self.device)?
        };
        let scale = 1.0 / (hd as f64).sqrt();
        // The path depends on the row's own token count only (see `WeightFormat::Hybrid`).
        let dense = t >= DENSE_FROM_ROWS;

        for (l, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, cfg.rms_eps as f32)?;
            let q = layer.q.forward(&h, dense)?;
            let k = layer.k.forward(&h, dense)?;
            let v = layer.v.forward(&h, dense)?;
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
            let Store::Device { k: keys, v: values } = &cache.store else {
                candle_core::bail!("the cache is not a tensor cache")
            };
            // Rounded to half precision as the CPU cache keeps them, so both passes compute the
            // same model.
            let cached = |t: &Tensor| t.to_dtype(DType::F16)?.to_dtype(DType::F32);
            let (k, v) = (cached(&k)?, cached(&v)?);
            for (i, r) in rows.iter().enumerate() {
                keys[l]
                    .narrow(0, r.slot, 1)?
                    .slice_set(&k.narrow(0, i, 1)?, 2, r.pos)?;
                values[l]
                    .narrow(0, r.slot, 1)?
                    .slice_set(&v.narrow(0, i, 1)?, 2, r.pos)?;
            }
            let y = {
                let keys = keys[l].narrow(0, s0, b)?.narrow(2, 0, longest)?;
                let values = values[l].narrow(0, s0, b)?.narrow(2, 0, longest)?;
                let q = q.reshape((b, kvh, rep * t, hd))?;
                // Scores reduce over head_dim, the same for every row, so one matmul
                // serves all.
                let scores = (q.matmul(&keys.t()?)? * scale)?.broadcast_add(&mask)?;
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
            };
            x = (x + layer.o.forward(&y, dense)?)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, cfg.rms_eps as f32)?;
            let gated = (candle_nn::ops::silu(&layer.gate.forward(&h, dense)?)?
                * layer.up.forward(&h, dense)?)?;
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
/// head_dim]` (on the CPU with the keys blocked, see `attend::key_offset`). On the CPU plain
/// vectors of half-precision values, which the forward pass writes and attention reads in
/// place; elsewhere device tensors (f32, holding the same rounded values). Capacity grows
/// (doubling, up to the model's context, in whole key blocks) as sequences grow.
pub struct Cache {
    store: Store,
    layers: usize,
    slots: usize,
    kv_heads: usize,
    head_dim: usize,
    capacity: usize,
    max_context: usize,
    /// A step's new keys and values in half precision on their way into the CPU store (kept
    /// between layers and steps, so that writing them allocates nothing).
    halves: [Vec<u16>; 2],
}

/// Keys and values of every layer: on the CPU narrowed to half precision (`attend::narrow`).
enum Store {
    Cpu { k: Vec<Vec<u16>>, v: Vec<Vec<u16>> },
    Device { k: Vec<Tensor>, v: Vec<Tensor> },
}

const INITIAL_CAPACITY: usize = 256;

/// `positions` rounded up to whole key blocks: the CPU cache's keys are kept in blocks
/// (`attend::key_offset`), so every capacity is a multiple of the block.
fn whole_blocks(positions: usize) -> usize {
    positions.next_multiple_of(attend::KEY_BLOCK)
}

impl Cache {
    /// `tensors` chooses device tensors (and so the tensor forward pass) over CPU vectors.
    fn new(
        cfg: &Config,
        slots: usize,
        max_context: usize,
        device: &Device,
        tensors: bool,
    ) -> candle_core::Result<Self> {
        let capacity = whole_blocks(INITIAL_CAPACITY.min(max_context));
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
            halves: Default::default(),
        };
        let len = cache.layer_len(capacity);
        cache.store = if !tensors {
            Store::Cpu {
                k: vec![vec![0u16; len]; cfg.layers],
                v: vec![vec![0u16; len]; cfg.layers],
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
        let value = match self.store {
            Store::Cpu { .. } => 2,
            Store::Device { .. } => 4,
        };
        2 * self.layers * self.layer_len(self.capacity) * value
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
        self.resize(whole_blocks(capacity.min(self.max_context)))
    }

    fn resize(&mut self, capacity: usize) -> candle_core::Result<()> {
        let keep = capacity.min(self.capacity);
        let (old, hd) = (self.capacity, self.head_dim);
        let len = self.layer_len(capacity);
        let lanes = self.slots * self.kv_heads;
        match &mut self.store {
            Store::Cpu { k, v } => {
                for t in k.iter_mut().chain(v.iter_mut()) {
                    let mut grown = vec![0u16; len];
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
        let initial = whole_blocks(INITIAL_CAPACITY.min(self.max_context));
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
                // Whole key blocks (the capacity is whole blocks, so they fit).
                let span = whole_blocks(len) * hd;
                for t in k.iter_mut().chain(v.iter_mut()) {
                    for g in 0..kvh {
                        let src = (from * kvh + g) * cap * hd;
                        t.copy_within(src..src + span, (to * kvh + g) * cap * hd);
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

    /// Writes layer `l`'s new keys and values of a CPU cache, each `[tokens, kv_heads *
    /// head_dim]` (the rows' tokens in order), at each row's slot and positions.
    fn write(
        &mut self,
        l: usize,
        rows: &[attend::Span],
        keys: &[f32],
        values: &[f32],
    ) -> candle_core::Result<()> {
        let (cap, hd, kvh) = (self.capacity, self.head_dim, self.kv_heads);
        let Store::Cpu { k, v } = &mut self.store else {
            candle_core::bail!("the cache is not a CPU cache")
        };
        let [keys_half, values_half] = &mut self.halves;
        attend::narrow_all(keys, keys_half);
        attend::narrow_all(values, values_half);
        let mut first = 0;
        for r in rows {
            for j in 0..r.tokens {
                let at = (first + j) * kvh * hd;
                let new = keys_half[at..at + kvh * hd].chunks_exact(hd);
                let p = r.pos + j;
                for (g, (key, value)) in new
                    .zip(values_half[at..at + kvh * hd].chunks_exact(hd))
                    .enumerate()
                {
                    let lane = (r.slot * kvh + g) * cap * hd;
                    for (d, x) in key.iter().enumerate() {
                        k[l][lane + attend::key_offset(p, d, hd)] = *x;
                    }
                    v[l][lane + p * hd..][..hd].copy_from_slice(value);
                }
            }
            first += r.tokens;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `auto` on this CPU, for the default model's shape with and without 4-bit layers, and
    /// for a model over the f32 limit; the forced formats as asked.
    #[test]
    fn auto_picks_the_weights_by_size_file_and_cpu() {
        let mut config = Config {
            arch: Arch::Llama,
            vocab: 49152,
            dim: 576,
            layers: 30,
            heads: 9,
            kv_heads: 3,
            head_dim: 64,
            ffn: 1536,
            rope_theta: 100_000.0,
            rms_eps: 1e-5,
            context_length: 2048,
            params: 134_515_008,
            four_bit: true,
        };
        let cpu = Device::Cpu;
        let choose = |config: &Config, requested: &str, limit: usize| {
            WeightFormat::choose(requested, config, limit, &cpu).expect("a known format")
        };
        let four_bit = if q8::has_amx() {
            WeightFormat::Q8
        } else {
            WeightFormat::Q4
        };
        assert_eq!(choose(&config, "auto", usize::MAX), four_bit);
        // The f32 copy (four bytes a weight) over the limit keeps the file's own blocks.
        assert_eq!(
            choose(&config, "auto", 4 * config.params - 1),
            WeightFormat::File
        );
        assert_eq!(choose(&config, "auto", 4 * config.params), four_bit);
        config.four_bit = false;
        let eight_bit = if q8::has_vector_kernel() {
            WeightFormat::Q8
        } else {
            WeightFormat::Hybrid
        };
        assert_eq!(choose(&config, "auto", usize::MAX), eight_bit);
        for format in [
            WeightFormat::F32,
            WeightFormat::Q8,
            WeightFormat::Q4,
            WeightFormat::File,
            WeightFormat::Hybrid,
        ] {
            assert_eq!(choose(&config, format.as_str(), usize::MAX), format);
        }
        assert!(WeightFormat::choose("q5", &config, usize::MAX, &cpu).is_err());
    }

    /// The CPU pass (vectors, the project's kernels) and the tensor pass other devices run
    /// (candle operations, a mask) compute the same model: on the real default model, for a
    /// prefill chunk of each of two sequences and a decode step of both together, the logits
    /// agree to float rounding and pick the same token. f32 weights, so that both passes run
    /// the same products and only the code around them differs (with 8-bit activations a
    /// rounding difference can flip a quantised value and grow through 30 layers: the same
    /// comparison on q8_0 differs by up to 3% of the largest logit, same top token). Both
    /// passes cache keys and values in half precision, but a key whose f32 differs in the last
    /// bits between the passes can round to neighbouring halves (2^-11 apart): up to 2.8e-4 of
    /// the largest logit measured, against under 1e-4 with f32 caches; wrong positions or masks
    /// differ by whole units.
    #[test]
    fn the_cpu_pass_computes_what_the_tensor_pass_computes() {
        let path = mercato_platform::settings::resolve_path(
            "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        );
        let model = Model::load(&path, "f32", usize::MAX, 256, &Device::Cpu)
            .expect("the default model loads (run scripts/fetch-models)");
        let prompts: [&[u32]; 2] = [
            &[1, 4093, 314, 253, 1345, 28, 17],
            &[1, 504, 3, 77, 9021, 282, 30, 44, 5, 19, 2],
        ];
        let run = |tensors: bool| -> Vec<Vec<f32>> {
            let mut cache =
                Cache::new(&model.config, 2, 256, &Device::Cpu, tensors).expect("cache");
            let mut out = Vec::new();
            for (slot, p) in prompts.iter().enumerate() {
                let rows = [Row {
                    slot,
                    tokens: p,
                    pos: 0,
                }];
                out.push(
                    model
                        .forward(&mut cache, &rows)
                        .expect("prefill")
                        .flatten_all()
                        .expect("flat")
                        .to_vec1()
                        .expect("logits"),
                );
            }
            let next = [[42u32], [1000u32]];
            let rows: Vec<Row<'_>> = (0..2)
                .map(|slot| Row {
                    slot,
                    tokens: &next[slot],
                    pos: prompts[slot].len(),
                })
                .collect();
            let step = model.forward(&mut cache, &rows).expect("decode");
            out.extend(step.to_vec2::<f32>().expect("logits"));
            out
        };
        let (cpu, tensors) = (run(false), run(true));
        assert_eq!(cpu.len(), 4);
        for (a, b) in cpu.iter().zip(&tensors) {
            let top = |l: &[f32]| crate::inference::sampling::argmax(l);
            assert_eq!(top(a), top(b));
            let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
            let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                worst < 1e-3 * scale,
                "logits differ by {worst} (largest {scale})"
            );
        }
    }

    /// Prompt chunks of different lengths and decode rows in one call give each row the
    /// logits it gets alone, to the bit: on the kernels' one CPU pass (`q4`), and where rows
    /// split into passes (`hybrid` with a chunk on the f32 GEMM, `f32`, the tensor pass).
    #[test]
    fn rows_of_any_lengths_together_compute_what_each_computes_alone() {
        let path = mercato_platform::settings::resolve_path(
            "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        );
        let long: Vec<u32> = (0..DENSE_FROM_ROWS as u32).map(|i| 100 + i * 7).collect();
        let prompts: [&[u32]; 3] = [
            &[1, 4093, 314, 253, 1345, 28, 17],
            &[1, 504, 3, 77, 9021, 282, 30, 44, 5, 19, 2],
            &[1, 42],
        ];
        for (weights, tensors) in [
            ("q4", false),
            ("hybrid", false),
            ("f32", false),
            ("f32", true),
        ] {
            let model = Model::load(&path, weights, usize::MAX, 512, &Device::Cpu)
                .expect("the default model loads (run scripts/fetch-models)");
            // Step 1: three prompts (in `hybrid`, the second as a chunk long enough for the
            // GEMM); step 2: a decode row, a second chunk, a decode row.
            let first: [&[u32]; 3] = match weights {
                "hybrid" => [prompts[0], &long, prompts[2]],
                _ => prompts,
            };
            let second: [&[u32]; 3] = [&[42], &[7, 8, 9, 10, 11], &[1000]];
            let steps = |cache: &mut Cache, rows: &[usize]| -> Vec<Vec<f32>> {
                let mut out = Vec::new();
                for (step, tokens) in [first, second].iter().enumerate() {
                    let rows: Vec<Row<'_>> = rows
                        .iter()
                        .map(|&slot| Row {
                            slot,
                            tokens: tokens[slot],
                            pos: if step == 0 { 0 } else { first[slot].len() },
                        })
                        .collect();
                    let logits = model.forward(cache, &rows).expect("forward");
                    out.extend(logits.to_vec2::<f32>().expect("logits"));
                }
                out
            };
            let new_cache = || Cache::new(&model.config, 3, 512, &Device::Cpu, tensors);
            let together = steps(&mut new_cache().expect("cache"), &[0, 1, 2]);
            let mut alone = vec![Vec::new(); 6];
            let mut cache = new_cache().expect("cache");
            for slot in 0..3 {
                let rows = steps(&mut cache, &[slot]);
                alone[slot] = rows[0].clone();
                alone[3 + slot] = rows[1].clone();
            }
            for (i, (a, b)) in together.iter().zip(&alone).enumerate() {
                assert!(a == b, "{weights} (tensors {tensors}): row {i} differs");
            }
        }
    }

    #[test]
    fn the_files_four_bit_blocks_compute_what_their_f32_copy_computes() {
        let path = mercato_platform::settings::resolve_path(
            "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
        );
        let load = |weights| {
            Model::load(&path, weights, usize::MAX, 256, &Device::Cpu)
                .expect("the default model loads (run scripts/fetch-models)")
        };
        let (q4, f32) = (load("q4"), load("f32"));
        assert_eq!(q4.format, WeightFormat::Q4);
        assert!(q4.config.four_bit);
        let prompt = [1u32, 4093, 314, 253, 1345, 28, 17, 504, 3, 77];
        let logits = |m: &Model| -> Vec<f32> {
            let mut cache = m.new_cache(1).expect("cache");
            let rows = [Row {
                slot: 0,
                tokens: &prompt,
                pos: 0,
            }];
            let out = m.forward(&mut cache, &rows).expect("forward");
            out.flatten_all().expect("flat").to_vec1().expect("logits")
        };
        let (a, b) = (logits(&q4), logits(&f32));
        let top = |l: &[f32]| crate::inference::sampling::argmax(l);
        assert_eq!(top(&a), top(&b));
        // The same weights; only the activations are rounded to 8 bits on the way.
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst > 0.0 && worst < 0.05 * scale,
            "logits differ by {worst} (largest {scale})"
        );
    }
}
