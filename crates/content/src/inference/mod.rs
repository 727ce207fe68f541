//! Local language-model inference: GGUF loading, the batched forward pass, the tokenizer,
//! sampling and the continuous-batching worker.

pub mod aligned;
pub mod attend;
pub mod embed;
pub mod engine;
pub mod gemm;
pub mod math;
pub mod model;
pub mod pool;
pub mod q8;
pub mod sampling;
pub mod tokenizer;

pub use engine::{Engine, EngineLimits, EngineSpec, Event, FinishReason, Finished, SubmitError};
pub use sampling::Sampling;
pub use tokenizer::{Message, TextCodec};

/// Makes candle's thread count a fixed setting. candle reads it from `CANDLE_NUM_THREADS` or
/// `RAYON_NUM_THREADS` on every matmul and, when neither is set, counts the physical cores by
/// reading `/proc/cpuinfo` again each time: measured on 2 cores, a fifth of a single stream's
/// decode time went to that. A running process cannot safely set its own environment once
/// threads exist, so binaries call this first thing in `main`: when neither variable is set
/// it re-executes the binary (same arguments, same process id) with `CANDLE_NUM_THREADS` at
/// candle's own default, the physical cores, so the count is what it would have been and the
/// lookups cost nothing. Returns when nothing needed doing, off Unix, or if the re-execution
/// failed (then candle keeps counting, which is slower but correct).
pub fn settle_thread_count() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_some()
        || std::env::var_os("RAYON_NUM_THREADS").is_some()
    {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        let mut args = std::env::args_os();
        let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
        let err = std::process::Command::new(&exe)
            .arg0(arg0)
            .args(args)
            .env(
                "CANDLE_NUM_THREADS",
                num_cpus::get_physical().max(1).to_string(),
            )
            .exec();
        eprintln!(
            "could not re-execute {} with CANDLE_NUM_THREADS set ({err}); continuing",
            exe.display()
        );
    }
}

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
