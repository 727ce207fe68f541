//! Local language-model inference: GGUF loading, the batched forward pass, the tokenizer,
//! sampling and the continuous-batching worker.

pub mod embed;
pub mod engine;
pub mod model;
pub mod sampling;
pub mod tokenizer;

pub use engine::{Engine, EngineLimits, EngineSpec, Event, FinishReason, Finished, SubmitError};
pub use sampling::Sampling;
pub use tokenizer::{Message, TextCodec};

/// Parses `auto | cpu | cuda:N`. `auto` takes the first GPU when built with `cuda` and one is
/// present, the CPU otherwise.
pub fn device(spec: &str) -> anyhow::Result<candle_core::Device> {
    match spec {
        "cpu" => Ok(candle_core::Device::Cpu),
        "auto" => {
            if cfg!(feature = "cuda") && candle_core::utils::cuda_is_available() {
                Ok(candle_core::Device::new_cuda(0)?)
            } else {
                Ok(candle_core::Device::Cpu)
            }
        }
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(n)) => Ok(candle_core::Device::new_cuda(n)?),
            _ => anyhow::bail!("device must be auto, cpu or cuda:N, not {other:?}"),
        },
    }
}
