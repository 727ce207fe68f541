//! Language-model benchmark, in one run on the default model: single-stream decode of our
//! forward pass (f32 and quantised weights) against candle's stock `quantized_llama`, and the
//! bare batched decode loop of our forward pass at 1-32 sequences. The HTTP part (aggregate
//! tokens/s and time to first token through the API) is `--url`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Parser;
use mercato_content::inference::model::{Model, Row, WeightFormat};
use mercato_content::inference::sampling::argmax;
use mercato_content::inference::{Message, TextCodec};

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        default_value = "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"
    )]
    model: PathBuf,
    /// Tokens decoded per measurement.
    #[arg(long, default_value_t = 64)]
    tokens: usize,
    #[arg(long, default_value = "1,4,8,16,32")]
    batches: String,
    /// Also measure through the HTTP API of a running service at this base URL.
    #[arg(long)]
    url: Option<String>,
    #[arg(long, env = "MERCATO_API_KEY")]
    api_key: Option<String>,
    /// One part alone, for profiling: `api` (--url at --batches), `embeddings`, `kernel` (the
    /// integer products and attention on the model's shapes), `sampling` (choosing a
    /// token from a row of logits), `prefill` (by prompt length), or `decode` (the default
    /// weights' bare loop at --batches).
    #[arg(long)]
    only: Option<String>,
    /// Weight format of `--only decode` (`auto` is what the service picks).
    #[arg(long, default_value = "auto")]
    weights: String,
    /// Keep 8-bit products off AMX tiles where the CPU has them (the VNNI path instead).
    #[arg(long)]
    no_amx: bool,
    /// `--only api` with the service's default sampling instead of greedy.
    #[arg(long)]
    sampled: bool,
}

const PROMPT: &str = "Write a two-sentence email inviting a customer who bought running shoes to try our new trail collection.";

fn prompt_ids(codec: &TextCodec) -> anyhow::Result<Vec<u32>> {
    codec.encode(&codec.render(&[Message {
        role: "user".into(),
        content: PROMPT.into(),
    }]))
}

/// Rates of one bare-loop run.
struct Rates {
    prefill: f64,
    /// Aggregate decode tokens/s (decode steps only).
    decode: f64,
    /// Generated tokens over prefill plus decode time: the same work a request does through
    /// the API (its first token comes from the prefill).
    end_to_end: f64,
}

/// Our forward pass: prefill then `n` greedy decode steps of `batch` copies of the prompt,
/// with the service's prefill budget per step (`content.prefill_chunk`, `budget`).
fn ours(
    model: &Model,
    prompt: &[u32],
    budget: usize,
    batch: usize,
    n: usize,
) -> anyhow::Result<Rates> {
    let mut cache = model.new_cache(batch)?;
    // Logits reused from pass to pass, as the service's worker keeps them.
    let mut logits = Vec::new();
    let start = Instant::now();
    // The prompts in the passes the worker gives prompts that arrive together: whole short
    // prompts while the step's budget lasts, the last one taking it past.
    let mut next = Vec::with_capacity(batch);
    let per_pass = budget.div_ceil(prompt.len().max(1));
    for first in (0..batch).step_by(per_pass) {
        let rows: Vec<Row<'_>> = (first..batch.min(first + per_pass))
            .map(|slot| Row {
                slot,
                tokens: prompt,
                pos: 0,
            })
            .collect();
        model.forward_into(&mut cache, &rows, &mut logits)?;
        next.extend(
            logits
                .chunks_exact(logits.len() / rows.len())
                .map(|l| [argmax(l)]),
        );
    }
    let prefill_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for step in 0..n {
        let rows: Vec<Row<'_>> = next
            .iter()
            .enumerate()
            .map(|(slot, t)| Row {
                slot,
                tokens: t,
                pos: prompt.len() + step,
            })
            .collect();
        model.forward_into(&mut cache, &rows, &mut logits)?;
        next = logits
            .chunks_exact(logits.len() / batch)
            .map(|l| [argmax(l)])
            .collect();
    }
    let decode_secs = start.elapsed().as_secs_f64();
    Ok(Rates {
        prefill: (prompt.len() * batch) as f64 / prefill_secs,
        decode: (n * batch) as f64 / decode_secs,
        end_to_end: ((n + 1) * batch) as f64 / (prefill_secs + decode_secs),
    })
}

/// Prompt lengths of the prefill table.
const PREFILL_LENGTHS: [usize; 4] = [32, 128, 256, 512];

/// Prefill tokens/s of one prompt of `len` tokens (the bench prompt repeated) in one forward
/// call, best of three.
fn prefill(model: &Model, prompt: &[u32], len: usize) -> anyhow::Result<f64> {
    let ids: Vec<u32> = prompt.iter().copied().cycle().take(len).collect();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let mut cache = model.new_cache(1)?;
        let start = Instant::now();
        model.forward(
            &mut cache,
            &[Row {
                slot: 0,
                tokens: &ids,
                pos: 0,
            }],
        )?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(len as f64 / best)
}

/// Prefill tokens/s by prompt length for the 8-bit, 4-bit and f32 weights (where `hybrid`
/// switches).
fn print_prefill(q8: &Model, q4: &Model, f32: &Model, prompt: &[u32]) -> anyhow::Result<()> {
    println!("\n## Prefill by prompt length (one call, tokens/s)\n");
    println!("| tokens | q8_0 | q4 | f32 | q4 vs q8_0 | f32 vs q8_0 |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for len in PREFILL_LENGTHS {
        let (a, b, c) = (
            prefill(q8, prompt, len)?,
            prefill(q4, prompt, len)?,
            prefill(f32, prompt, len)?,
        );
        println!(
            "| {len} | {a:.0} | {b:.0} | {c:.0} | {:.2}x | {:.2}x |",
            b / a,
            c / a
        );
    }
    Ok(())
}

/// Row counts of the kernel table: one decode row, a batch of 16, a bench prompt's prefill.
const KERNEL_ROWS: [usize; 7] = [1, 2, 4, 8, 16, 39, 64];

/// The integer products alone on the default model's matrix shapes (out x in), 8-bit weights
/// and the file's 4-bit blocks (Q4_1), in billions of multiply-adds per second, best of several
/// calls: the decode and prefill kernel without the rest of the forward pass, for judging
/// kernel changes on a noisy machine. Where the CPU has AMX, 8-bit weights are measured with
/// and without it.
fn print_kernel() -> anyhow::Result<()> {
    use candle_core::quantized::{GgmlDType, QTensor};
    use mercato_content::inference::q8::{self, Q4Blocks, Q8Matrix};
    let mut rng = mercato_platform::random::SplitMix64::new(7);
    let mut values =
        |n: usize| -> Vec<f32> { (0..n).map(|_| rng.next_f64() as f32 * 2.0 - 1.0).collect() };
    println!("\n## Integer products (GMAC/s, best of 20)\n");
    println!(
        "| out x in | weights | {} |",
        KERNEL_ROWS.map(|r| format!("{r} rows")).join(" | ")
    );
    println!("|---|---|{}", "---:|".repeat(KERNEL_ROWS.len()));
    let shapes = [(576, 576), (1536, 576), (576, 1536), (49152, 576)];
    let amx = q8::has_amx();
    let kinds: &[(&str, bool, bool)] = if amx {
        &[
            ("8-bit", false, true),
            ("8-bit, AMX off", false, false),
            ("4-bit", true, false),
        ]
    } else {
        &[("8-bit", false, false), ("4-bit", true, false)]
    };
    for ((out, inp), &(kind, four, tiles)) in shapes
        .into_iter()
        .flat_map(|s| kinds.iter().map(move |k| (s, k)))
    {
        let w = values(out * inp);
        let m = if four {
            let t = Tensor::from_vec(w, (out, inp), &Device::Cpu)?;
            let q = QTensor::quantize(&t, GgmlDType::Q4_1)?;
            Q8Matrix::from_q4(&q.data()?, Q4Blocks::Q4_1, out, inp)?
        } else {
            Q8Matrix::quantise(&w, out, inp)?
        };
        q8::use_amx(tiles);
        let mut cells = Vec::new();
        for rows in KERNEL_ROWS {
            let x = values(rows * inp);
            let mut best = f64::MAX;
            for _ in 0..20 {
                let start = Instant::now();
                std::hint::black_box(m.matmul(&x));
                best = best.min(start.elapsed().as_secs_f64());
            }
            cells.push(format!("{:.1}", (out * inp * rows) as f64 / best / 1e9));
        }
        println!("| {out} x {inp} | {kind} | {} |", cells.join(" | "));
    }
    q8::use_amx(true);
    // Decode attention of the model's shape (9 query heads over 3 key heads of 64) for 16
    // sequences at 100 cached positions, one layer.
    use mercato_content::inference::attend::{Heads, Span, from_cache, narrow};
    let (seqs, kvh, cap, hd) = (16, 3, 128, 64);
    let q = values(seqs * 9 * hd);
    let mut cached = |n: usize| -> Vec<u16> { values(n).into_iter().map(narrow).collect() };
    let (k, v) = (cached(seqs * kvh * cap * hd), cached(seqs * kvh * cap * hd));
    let rows: Vec<Span> = (0..seqs)
        .map(|slot| Span {
            slot,
            pos: 99,
            tokens: 1,
        })
        .collect();
    let shape = Heads {
        heads: 9,
        kv_heads: kvh,
        head_dim: hd,
        scale: 0.125,
    };
    let mut best = f64::MAX;
    for _ in 0..50 {
        let start = Instant::now();
        std::hint::black_box(from_cache(&q, &rows, &k, &v, cap, shape));
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!(
        "\nattention, 16 sequences x 100 positions, one layer: {:.1} us",
        best * 1e6
    );
    Ok(())
}

/// Choosing the next token from one row of the model's 49,152 logits, microseconds per row
/// (best of 200): greedy (the baseline: one pass for the largest) against the service's
/// default sampling and nucleus sampling over the whole vocabulary. The worker does this once
/// per sequence per step, on one thread. Two rows: the model's logits after the bench prompt,
/// and a flat row (uniform in +-12), where nucleus sampling keeps thousands of tokens.
fn print_sampling(model: &Model, prompt: &[u32]) -> anyhow::Result<()> {
    use mercato_content::inference::sampling::{Sampling, sample};
    use mercato_platform::random::SplitMix64;
    let mut cache = model.new_cache(1)?;
    let real = model
        .forward(
            &mut cache,
            &[Row {
                slot: 0,
                tokens: prompt,
                pos: 0,
            }],
        )?
        .squeeze(0)?
        .to_vec1::<f32>()?;
    let mut rng = SplitMix64::new(11);
    let flat: Vec<f32> = (0..real.len())
        .map(|_| rng.next_f64() as f32 * 24.0 - 12.0)
        .collect();
    let recent: Vec<u32> = prompt.to_vec();
    let settings = [
        ("greedy", Sampling::greedy(1)),
        (
            "defaults (temperature 0.7, top-k 40, top-p 0.9, penalty 1.1)",
            Sampling::default(),
        ),
        (
            "temperature 1, top-p 0.9, no top-k",
            Sampling {
                temperature: 1.0,
                top_k: 0,
                ..Sampling::default()
            },
        ),
    ];
    println!(
        "\n## Sampling one row of {} logits (us, best of 200)\n",
        real.len()
    );
    println!("| settings | model's row | vs greedy | flat row | vs greedy |");
    println!("|---|---:|---:|---:|---:|");
    let mut base = [0.0; 2];
    for (name, params) in settings {
        let mut cells = Vec::new();
        for (n, logits) in [&real, &flat].into_iter().enumerate() {
            let mut best = f64::MAX;
            for _ in 0..200 {
                let mut row = logits.clone();
                let start = Instant::now();
                std::hint::black_box(sample(&mut row, &params, &recent, &mut rng));
                best = best.min(start.elapsed().as_secs_f64());
            }
            if base[n] == 0.0 {
                base[n] = best;
            }
            cells.push(format!("{:.1} | {:.1}x", best * 1e6, best / base[n]));
        }
        println!("| {name} | {} |", cells.join(" | "));
    }
    Ok(())
}

/// candle's stock quantised llama, single stream.
fn stock(path: &PathBuf, prompt: &[u32], n: usize) -> anyhow::Result<(f64, f64)> {
    use candle_transformers::models::quantized_llama::ModelWeights;
    let mut file = std::fs::File::open(path)?;
    let ct = candle_core::quantized::gguf_file::Content::read(&mut file)?;
    let mut model = ModelWeights::from_gguf(ct, &mut file, &Device::Cpu)?;
    let start = Instant::now();
    let input = Tensor::new(prompt, &Device::Cpu)?.unsqueeze(0)?;
    let logits = model.forward(&input, 0)?;
    let mut next = argmax(&logits.squeeze(0)?.to_vec1::<f32>()?);
    let prefill = prompt.len() as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for step in 0..n {
        let input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        let logits = model.forward(&input, prompt.len() + step)?;
        next = argmax(&logits.squeeze(0)?.to_vec1::<f32>()?);
    }
    Ok((prefill, n as f64 / start.elapsed().as_secs_f64()))
}

/// One streamed chat completion: (seconds to the first content, completion tokens).
async fn one_request(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    prompt: &str,
    max_tokens: usize,
    sampling: Option<u64>,
) -> anyhow::Result<(f64, u64)> {
    use futures::StreamExt;
    let start = Instant::now();
    let mut body = serde_json::json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "temperature": 0, "stream": true
    });
    // The service's default sampling (top-k 40 and the repetition penalty are the route's
    // defaults), one seed per request.
    if let Some(seed) = sampling {
        body["temperature"] = 0.7.into();
        body["top_p"] = 0.9.into();
        body["seed"] = seed.into();
    }
    let r = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?
        .error_for_status()?;
    let mut first = None;
    let mut tokens = 0;
    let mut buf = String::new();
    let mut body = r.bytes_stream();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                continue;
            };
            if first.is_none()
                && v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            {
                first = Some(start.elapsed().as_secs_f64());
            }
            if let Some(n) = v["usage"]["completion_tokens"].as_u64() {
                tokens = n;
            }
        }
    }
    Ok((
        first.unwrap_or_else(|| start.elapsed().as_secs_f64()),
        tokens,
    ))
}

/// One short request before measuring, so that the first measured request does not pay the
/// service's one-time costs (first touch of the cache's memory, lazily built state).
fn warm_up(rt: &tokio::runtime::Runtime, url: &str, key: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    rt.block_on(one_request(&client, url, key, PROMPT, 8, None))?;
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Aggregate decode tokens/s and time to first token through the API at `clients` concurrent
/// streams, each sending `rounds` requests back to back; greedy, or with the service's default
/// sampling where `sampled`.
async fn through_api(
    url: &str,
    key: &str,
    clients: usize,
    rounds: usize,
    max_tokens: usize,
    sampled: bool,
) -> anyhow::Result<(f64, f64, f64)> {
    let client = reqwest::Client::new();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (client, url, key) = (client.clone(), url.to_string(), key.to_string());
        tasks.spawn(async move {
            let mut out = Vec::new();
            // The bare loop's and llama.cpp's prompt, so a request does the same work as a
            // sequence there (the service keeps no prompt cache, so repeating it saves nothing).
            for r in 0..rounds {
                let seed = sampled.then_some((c * rounds + r) as u64);
                out.push(one_request(&client, &url, &key, PROMPT, max_tokens, seed).await?);
            }
            anyhow::Ok(out)
        });
    }
    let mut ttft = Vec::new();
    let mut tokens = 0;
    while let Some(r) = tasks.join_next().await {
        for (t, n) in r?? {
            ttft.push(t);
            tokens += n;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    ttft.sort_by(f64::total_cmp);
    Ok((
        tokens as f64 / wall,
        percentile(&ttft, 0.5),
        percentile(&ttft, 0.95),
    ))
}

/// The sentences bench/st_bench.py embeds too (same generator).
fn sentences(n: usize) -> Vec<String> {
    let words = [
        "trail",
        "running",
        "shoes",
        "waterproof",
        "jacket",
        "for",
        "autumn",
        "hiking",
        "with",
        "breathable",
        "mesh",
        "and",
        "a",
        "grippy",
        "sole",
        "lightweight",
        "tent",
        "camping",
    ];
    (0..n)
        .map(|i| {
            let k = 6 + (i * 7) % 30;
            let body: Vec<&str> = (0..k).map(|j| words[(i + j * 5) % words.len()]).collect();
            format!("{}.", body.join(" "))
        })
        .collect()
}

/// Sentences per second of our embedding worker at batch 1 and 32.
fn embeddings(dir: &std::path::Path) -> anyhow::Result<Vec<(usize, f64)>> {
    use mercato_content::inference::embed::Embedder;
    let rt = tokio::runtime::Runtime::new()?;
    let e = Embedder::start(dir.to_path_buf(), 64);
    e.wait_ready(std::time::Duration::from_secs(120))
        .map_err(|m| anyhow::anyhow!(m))?;
    let texts = sentences(256);
    rt.block_on(e.embed(texts[..8].to_vec()))?;
    let mut out = Vec::new();
    for batch in [1usize, 32] {
        let n = if batch == 1 { 64 } else { 256 };
        let start = Instant::now();
        for chunk in texts[..n].chunks(batch) {
            rt.block_on(e.embed(chunk.to_vec()))?;
        }
        out.push((batch, n as f64 / start.elapsed().as_secs_f64()));
    }
    Ok(out)
}

fn print_embeddings() -> anyhow::Result<()> {
    println!("\n## Embeddings (all-MiniLM-L6-v2), sentences/s\n");
    println!("| path | batch | sentences/s |");
    println!("|---|---:|---:|");
    let dir = mercato_platform::settings::resolve_path("models/all-minilm-l6-v2");
    for (batch, rate) in embeddings(&dir)? {
        println!("| ours (MiniLM, mean pooled) | {batch} | {rate:.1} |");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // As the service does (see `settle_thread_count`), so the figures are the service's.
    mercato_content::inference::settle_thread_count();
    let args = Args::parse();
    if args.no_amx {
        mercato_content::inference::q8::use_amx(false);
    }
    let path = mercato_platform::settings::resolve_path(&args.model.to_string_lossy());
    let codec = TextCodec::from_gguf_path(&path).context("reading the tokenizer")?;
    let prompt = prompt_ids(&codec)?;
    // The prefill budget the service runs with (its settings, as `mercato serve` loads them).
    let budget = mercato_platform::settings::Settings::load()
        .context("loading the service's settings")?
        .content
        .prefill_chunk;
    match args.only.as_deref() {
        None => {}
        Some("embeddings") => return print_embeddings(),
        Some("kernel") => return print_kernel(),
        Some("sampling") => {
            let model = Model::load(&path, "q8_0", usize::MAX, 2048, &Device::Cpu)?;
            return print_sampling(&model, &prompt);
        }
        Some("api") => {
            let url = args.url.as_deref().context("--only api needs --url")?;
            let key = args.api_key.clone().context("--url needs --api-key")?;
            let rt = tokio::runtime::Runtime::new()?;
            warm_up(&rt, url, &key)?;
            for b in args.batches.split(',') {
                let clients = b.trim().parse()?;
                let (tps, p50, _) = rt.block_on(through_api(
                    url,
                    &key,
                    clients,
                    2,
                    args.tokens,
                    args.sampled,
                ))?;
                println!("| {clients} | {tps:.1} | {:.0} |", p50 * 1000.0);
            }
            return Ok(());
        }
        Some("prefill") => {
            let load = |format| Model::load(&path, format, usize::MAX, 2048, &Device::Cpu);
            return print_prefill(&load("q8_0")?, &load("q4")?, &load("f32")?, &prompt);
        }
        Some("decode") => {
            let model = Model::load(&path, &args.weights, usize::MAX, 2048, &Device::Cpu)?;
            for b in args.batches.split(',') {
                let r = ours(&model, &prompt, budget, b.trim().parse()?, args.tokens)?;
                println!("| {b} | {:.1} | {:.1} |", r.decode, r.end_to_end);
            }
            return Ok(());
        }
        Some(other) => {
            anyhow::bail!(
                "--only takes api, embeddings, kernel, sampling, prefill or decode, not {other:?}"
            )
        }
    }
    println!("# Language model benchmark\n");
    println!(
        "model {}, prompt {} tokens, {} decode tokens per measurement, {} threads\n",
        path.display(),
        prompt.len(),
        args.tokens,
        candle_core::utils::get_num_threads()
    );
    let (stock_prefill, stock_decode) = stock(&path, &prompt, args.tokens)?;
    let mut single = Vec::new();
    for format in ["file", "q8_0", "q4", "f32", "hybrid"] {
        let model = Model::load(&path, format, usize::MAX, 2048, &Device::Cpu)?;
        single.push((format, ours(&model, &prompt, budget, 1, args.tokens)?));
    }
    println!("## Single stream\n");
    println!("| path | prefill tok/s | decode tok/s | decode vs stock |");
    println!("|---|---:|---:|---:|");
    println!(
        "| candle stock quantized_llama (Q4_1) | {stock_prefill:.0} | {stock_decode:.1} | 1.00x |"
    );
    for (format, r) in &single {
        println!(
            "| ours, weights {format} | {:.0} | {:.1} | {:.2}x |",
            r.prefill,
            r.decode,
            r.decode / stock_decode
        );
    }
    println!("\n## Bare batched loop (ours), aggregate tokens/s\n");
    println!(
        "Decode columns count decode steps only; the last column is generated tokens over \
         prefill plus decode time, the work a request does through the API.\n"
    );
    let formats = ["q8_0", "q4", "f32", "hybrid"];
    let mut models: Vec<Model> = formats
        .iter()
        .map(|f| Model::load(&path, f, usize::MAX, 2048, &Device::Cpu))
        .collect::<anyhow::Result<_>>()?;
    // What `auto` picks on this CPU with the service's default memory limit.
    let auto = WeightFormat::choose("auto", &models[0].config, 2 << 30, &Device::Cpu)?;
    let default = formats
        .iter()
        .position(|f| *f == auto.as_str())
        .context("auto picks a format the bench measures")?;
    // Where the CPU has AMX, q8_0 runs batches on it; the column beside is the same weights
    // on the VNNI path.
    let amx = mercato_content::inference::q8::has_amx();
    println!(
        "`auto` picks {} on this CPU (the default columns).\n\n| sequences | decode q8_0 | decode q8_0, AMX off | decode q4 | decode f32 | decode hybrid | default decode | default vs 1 sequence | default with prefill |",
        auto.as_str()
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut base = None;
    let mut bare = Vec::new();
    for b in args.batches.split(',') {
        let b: usize = b.trim().parse()?;
        let mut row = Vec::new();
        for m in &models {
            row.push(ours(m, &prompt, budget, b, args.tokens)?);
        }
        let tiles_off = if amx {
            mercato_content::inference::q8::use_amx(false);
            let r = ours(&models[0], &prompt, budget, b, args.tokens);
            mercato_content::inference::q8::use_amx(true);
            format!("{:.1}", r?.decode)
        } else {
            "-".into()
        };
        let d = &row[default];
        let one = *base.get_or_insert(d.decode);
        bare.push((b, d.decode, d.end_to_end));
        println!(
            "| {b} | {:.1} | {tiles_off} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}x | {:.1} |",
            row[0].decode,
            row[1].decode,
            row[2].decode,
            row[3].decode,
            d.decode,
            d.decode / one,
            d.end_to_end
        );
    }
    // The same q8_0, q4 and f32 models (`formats` order).
    print_prefill(&models[0], &models[1], &models[2], &prompt)?;
    print_sampling(&models[0], &prompt)?;
    // The default weights stay loaded: the API table measures the bare loop again beside each
    // concurrency, since a host's speed can drift by a quarter between minutes.
    let default_model = models.swap_remove(default);
    drop(models);
    print_embeddings()?;
    if let Some(url) = &args.url {
        let key = args
            .api_key
            .clone()
            .context("--url needs --api-key (or MERCATO_API_KEY)")?;
        let rt = tokio::runtime::Runtime::new()?;
        warm_up(&rt, url, &key)?;
        println!(
            "\n## Through the HTTP API (streamed chat completions, greedy, {} tokens each)\n",
            args.tokens
        );
        println!(
            "Each row's ratios compare measurements seconds apart: one request through the API \
             just before (1 request: the row itself) and the bare loop with prefill of the default \
             weights just after (the decode-only ratio uses the table above).\n"
        );
        println!(
            "| concurrent requests | aggregate tok/s | 1 request just before | vs it | bare loop with prefill just after | vs it | vs bare decode only | TTFT p50 ms | TTFT p95 ms |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut greedy_16 = None;
        for (clients, bare_decode, _) in &bare {
            let rounds = if *clients >= 16 { 1 } else { 2 };
            let one = if *clients == 1 {
                None
            } else {
                Some(
                    rt.block_on(through_api(url, &key, 1, 2, args.tokens, false))?
                        .0,
                )
            };
            let (tps, p50, p95) =
                rt.block_on(through_api(url, &key, *clients, rounds, args.tokens, false))?;
            let one = one.unwrap_or(tps);
            let after = ours(&default_model, &prompt, budget, *clients, args.tokens)?.end_to_end;
            if *clients == 16 {
                greedy_16 = Some(tps);
            }
            println!(
                "| {clients} | {tps:.1} | {one:.1} | {:.2}x | {after:.1} | {:.2}x | {:.2}x | {:.0} | {:.0} |",
                tps / one,
                tps / after,
                tps / bare_decode,
                p50 * 1000.0,
                p95 * 1000.0
            );
        }
        // What users send by default: the sampler runs for every sequence of every step on
        // the worker, beside the greedy rate of the table.
        if let Some(greedy) = greedy_16 {
            let (tps, p50, _) = rt.block_on(through_api(url, &key, 16, 1, args.tokens, true))?;
            println!(
                "\n16 requests with the service's default sampling (temperature 0.7, top-k 40, \
                 top-p 0.9, repetition penalty 1.1): {tps:.1} tok/s ({:.2}x greedy at 16), TTFT \
                 p50 {:.0} ms",
                tps / greedy,
                p50 * 1000.0
            );
        }
    }
    Ok(())
}
