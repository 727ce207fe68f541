//! Language-model benchmark, in one run on the default model: single-stream decode of our
//! forward pass (f32 and quantised weights) against candle's stock `quantized_llama`, and the
//! bare batched decode loop of our forward pass at 1-32 sequences. The HTTP part (aggregate
//! tokens/s and time to first token through the API) is `--url`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::{Device, Tensor};
use clap::Parser;
use mercato_content::llm::model::{Model, Row};
use mercato_content::llm::sampling::argmax;
use mercato_content::llm::{Message, TextCodec};

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
}

const PROMPT: &str = "Write a two-sentence email inviting a customer who bought running shoes to try our new trail collection.";

fn prompt_ids(codec: &TextCodec) -> anyhow::Result<Vec<u32>> {
    codec.encode(&codec.render(&[Message {
        role: "user".into(),
        content: PROMPT.into(),
    }]))
}

/// Our forward pass: prefill then `n` greedy decode steps of `batch` copies of the prompt.
/// Returns (prefill tokens/s, aggregate decode tokens/s).
fn ours(model: &Model, prompt: &[u32], batch: usize, n: usize) -> anyhow::Result<(f64, f64)> {
    let mut cache = model.new_cache(batch)?;
    let start = Instant::now();
    let mut next = Vec::with_capacity(batch);
    for slot in 0..batch {
        let logits = model.forward(
            &mut cache,
            &[Row {
                slot,
                tokens: prompt,
                pos: 0,
            }],
        )?;
        next.push([argmax(&logits.squeeze(0)?.to_vec1::<f32>()?)]);
    }
    let prefill = (prompt.len() * batch) as f64 / start.elapsed().as_secs_f64();
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
        let logits = model.forward(&mut cache, &rows)?.to_vec2::<f32>()?;
        next = logits.iter().map(|l| [argmax(l)]).collect();
    }
    Ok((prefill, (n * batch) as f64 / start.elapsed().as_secs_f64()))
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

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = mercato_platform::settings::resolve_path(&args.model.to_string_lossy());
    let codec = TextCodec::from_gguf_path(&path).context("reading the tokenizer")?;
    let prompt = prompt_ids(&codec)?;
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
    for format in ["file", "q8_0", "f32", "hybrid"] {
        let model = Model::load(&path, format, usize::MAX, 2048, &Device::Cpu)?;
        single.push((format, ours(&model, &prompt, 1, args.tokens)?));
    }
    println!("## Single stream\n");
    println!("| path | prefill tok/s | decode tok/s | decode vs stock |");
    println!("|---|---:|---:|---:|");
    println!(
        "| candle stock quantized_llama (Q4_1) | {stock_prefill:.0} | {stock_decode:.1} | 1.00x |"
    );
    for (format, (prefill, decode)) in &single {
        println!(
            "| ours, weights {format} | {prefill:.0} | {decode:.1} | {:.2}x |",
            decode / stock_decode
        );
    }
    println!("\n## Bare batched decode loop (ours), aggregate decode tokens/s\n");
    println!("| sequences | q8_0 | f32 | hybrid (the default) | hybrid vs 1 sequence |");
    println!("|---:|---:|---:|---:|---:|");
    let models: Vec<Model> = ["q8_0", "f32", "hybrid"]
        .iter()
        .map(|f| Model::load(&path, f, usize::MAX, 2048, &Device::Cpu))
        .collect::<anyhow::Result<_>>()?;
    let mut base = None;
    for b in args.batches.split(',') {
        let b: usize = b.trim().parse()?;
        let mut row = Vec::new();
        for m in &models {
            row.push(ours(m, &prompt, b, args.tokens)?.1);
        }
        let one = *base.get_or_insert(row[2]);
        println!(
            "| {b} | {:.1} | {:.1} | {:.1} | {:.2}x |",
            row[0],
            row[1],
            row[2],
            row[2] / one
        );
    }
    Ok(())
}
