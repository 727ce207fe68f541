//! The batching worker against the real default model: greedy output generated together in
//! one continuous batch equals the output generated one sequence at a time, token for token.

use std::path::PathBuf;
use std::time::Duration;

use mercato_content::inference::model::DENSE_FROM_ROWS;
use mercato_content::inference::{Engine, EngineLimits, EngineSpec, Message, Sampling};

fn model_path() -> PathBuf {
    mercato_platform::settings::resolve_path(
        "models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
    )
}

fn engine(max_batch: usize, prefill_chunk: usize) -> Engine {
    // Both 8-bit CPU kernels' forms (the 8-bit one and the f32 GEMM for long prefill chunks).
    engine_with("hybrid", max_batch, prefill_chunk)
}

fn engine_with(weights: &str, max_batch: usize, prefill_chunk: usize) -> Engine {
    let engine = Engine::start(EngineSpec {
        model_path: model_path(),
        weights: weights.into(),
        f32_limit_bytes: 2 << 30,
        max_context: 1024,
        max_new_tokens: 256,
        device: candle_core::Device::Cpu,
        limits: EngineLimits {
            max_batch,
            queue_capacity: 64,
            prefill_chunk,
        },
    });
    engine
        .wait_ready(Duration::from_secs(120))
        .expect("the default model loads (run scripts/fetch-models)");
    engine
}

fn prompts(engine: &Engine) -> Vec<Vec<u32>> {
    let codec = engine.codec().expect("codec");
    // The third is long enough that its first prefill chunk (`PREFILL_CHUNK` tokens) takes the
    // f32 GEMM path and the rest of it, like every other prompt, the 8-bit one.
    let long = format!(
        "Customer notes: {}Suggest, in one sentence, what to email them next and why it fits their interests.",
        "bought hiking boots last month, browsed tents twice this week, opened the autumn newsletter, saved a rain jacket to the wishlist. "
            .repeat(8)
    );
    let prompts: Vec<Vec<u32>> = [
        "Write a short subject line for a spring sale on running shoes.",
        "Hi",
        long.as_str(),
        "List three colours.",
    ]
    .iter()
    .map(|p| {
        let text = codec.render(&[Message {
            role: "user".into(),
            content: (*p).into(),
        }]);
        codec.encode(&text).expect("encode")
    })
    .collect();
    assert!(prompts[2].len() > PREFILL_CHUNK && PREFILL_CHUNK >= DENSE_FROM_ROWS);
    prompts
}

/// Prefill tokens per step in the batch-equals-sequential test.
const PREFILL_CHUNK: usize = DENSE_FROM_ROWS;

/// `auto` is one of these by CPU: `q8_0` runs the 8-bit kernel alone, `hybrid` the 8-bit
/// kernel and the f32 GEMM (for the prompt longer than a chunk), `q4` the file's 4-bit blocks
/// (and the 8-bit kernel for the head).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_equals_sequential_token_for_token() {
    for weights in ["q8_0", "hybrid", "q4"] {
        batch_equals_sequential(weights).await;
    }
}

async fn batch_equals_sequential(weights: &str) {
    let lengths = [24usize, 16, 30, 20];
    // One at a time: a worker with a single slot.
    let single = engine_with(weights, 1, PREFILL_CHUNK);
    let inputs = prompts(&single);
    let mut sequential = Vec::new();
    for (p, n) in inputs.iter().zip(lengths) {
        let out = single
            .generate(p.clone(), Sampling::greedy(n))
            .await
            .expect("sequential generation");
        sequential.push(out);
    }
    drop(single);

    // Together: all submitted at once to an 8-slot worker. The long prompt is prefilled over
    // two steps while the others already decode, and sequences of different lengths leave the
    // batch at different steps.
    let batched = engine_with(weights, 8, PREFILL_CHUNK);
    let handles: Vec<_> = inputs
        .iter()
        .zip(lengths)
        .map(|(p, n)| {
            let e = batched.clone();
            let p = p.clone();
            tokio::spawn(async move { e.generate(p, Sampling::greedy(n)).await })
        })
        .collect();
    let mut together = Vec::new();
    for h in handles {
        together.push(h.await.expect("join").expect("batched generation"));
    }
    for (i, (a, b)) in sequential.iter().zip(&together).enumerate() {
        assert!(
            a.completion_tokens > 0,
            "{weights}: prompt {i} generated nothing"
        );
        assert_eq!(
            a.text, b.text,
            "{weights}: prompt {i}: batched output differs"
        );
        assert_eq!(
            a.completion_tokens, b.completion_tokens,
            "{weights}: prompt {i}"
        );
        assert_eq!(a.finish_reason, b.finish_reason, "{weights}: prompt {i}");
    }
    let stats = batched.stats.snapshot();
    assert!(
        stats.mean_batch > 1.5,
        "{weights}: sequences were not decoded together: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_repeat_inside_a_batch_and_stop_strings_cut() {
    let e = engine(8, 512);
    let inputs = prompts(&e);
    let sampling = Sampling {
        temperature: 0.9,
        max_tokens: 20,
        seed: 42,
        ..Sampling::default()
    };
    let alone = e
        .generate(inputs[0].clone(), sampling.clone())
        .await
        .expect("alone");
    // The same request again, this time beside three others.
    let mut hs = Vec::new();
    for p in [&inputs[0], &inputs[1], &inputs[2], &inputs[3]] {
        let (e, p, s) = (e.clone(), p.clone(), sampling.clone());
        hs.push(tokio::spawn(async move { e.generate(p, s).await }));
    }
    let mut outs = Vec::new();
    for h in hs {
        outs.push(h.await.expect("join").expect("generation"));
    }
    assert_eq!(
        alone.text, outs[0].text,
        "a seed must give the same text inside a batch"
    );
    let other_seed = e
        .generate(
            inputs[0].clone(),
            Sampling {
                seed: 43,
                ..sampling.clone()
            },
        )
        .await
        .expect("other seed");
    assert_ne!(alone.text, other_seed.text);

    // A stop string taken from the greedy output cuts the text before it.
    let greedy = e
        .generate(inputs[3].clone(), Sampling::greedy(30))
        .await
        .expect("greedy");
    let word: String = greedy
        .text
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .to_string();
    assert!(
        !word.is_empty(),
        "greedy output too short: {:?}",
        greedy.text
    );
    let cut = e
        .generate(
            inputs[3].clone(),
            Sampling {
                stop: vec![word.clone()],
                ..Sampling::greedy(30)
            },
        )
        .await
        .expect("stopped");
    assert_eq!(
        cut.finish_reason,
        mercato_content::inference::FinishReason::Stop
    );
    assert!(!cut.text.contains(&word));
    assert!(greedy.text.starts_with(&cut.text));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_receiver_cancels_and_a_full_queue_refuses() {
    let e = engine(1, 512);
    let inputs = prompts(&e);
    // Occupy the only slot, then fill the queue (capacity 64) with requests nobody reads.
    let busy = e
        .submit(inputs[2].clone(), Sampling::greedy(200))
        .expect("first");
    let mut held = Vec::new();
    let mut refused = false;
    for _ in 0..200 {
        match e.submit(inputs[1].clone(), Sampling::greedy(1)) {
            Ok(rx) => held.push(rx),
            Err(mercato_content::inference::SubmitError::Busy) => {
                refused = true;
                break;
            }
            Err(other) => panic!("unexpected: {other}"),
        }
    }
    assert!(refused, "a full queue must refuse");
    drop(busy);
    drop(held);
    // The cancelled work drains (each queued request is dropped unread as it is reached);
    // then the worker serves again.
    let mut attempts = 0;
    let out = loop {
        match e.generate(inputs[1].clone(), Sampling::greedy(4)).await {
            Err(mercato_content::inference::engine::GenerateError::Submit(
                mercato_content::inference::SubmitError::Busy,
            )) if attempts < 100 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => break other.expect("after cancel"),
        }
    };
    assert!(out.completion_tokens > 0);
    assert!(e.stats.snapshot().cancelled >= 1);
}

/// Waiting requests are prefilled in arrival order, also after a sequence ahead of them
/// leaves the batch (its slot is refilled without letting the newest jump the queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_requests_keep_their_order_when_a_sequence_leaves() {
    // Small prefill steps, so the later prompts are still waiting when the first finishes.
    let e = engine(8, 8);
    let inputs = prompts(&e);
    let first = e
        .submit(inputs[1].clone(), Sampling::greedy(1))
        .expect("first");
    let waiting: Vec<_> = [0, 2, 3]
        .iter()
        .map(|&i| {
            let e = e.clone();
            let p = inputs[i].clone();
            let rx = e.submit(p, Sampling::greedy(2)).expect("queued");
            tokio::spawn(mercato_content::inference::engine::collect(rx))
        })
        .collect();
    mercato_content::inference::engine::collect(first)
        .await
        .expect("first");
    let mut ttft = Vec::new();
    for h in waiting {
        let done = h.await.expect("join").expect("generation");
        ttft.push(done.time_to_first_token);
    }
    assert!(
        ttft.windows(2).all(|w| w[0] < w[1]),
        "first tokens out of arrival order: {ttft:?}"
    );
}
