//! The network: token embedding, LSTM layers, a dense head (one logit for the purchase
//! task, one per class for the next-event task).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{
    Embedding, LSTM, Linear, VarBuilder, VarMap,
    rnn::{LSTMConfig, RNN},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Purchase within the horizon (binary, sigmoid).
    Purchase,
    /// The type of the next event (multi-class, softmax).
    NextEvent,
}

impl Task {
    /// The name stored with model versions.
    pub fn as_str(self) -> &'static str {
        match self {
            Task::Purchase => "purchase",
            Task::NextEvent => "next_event",
        }
    }

    /// The customer trait scoring writes.
    pub fn trait_key(self) -> &'static str {
        match self {
            Task::Purchase => "purchase_propensity",
            Task::NextEvent => "next_event",
        }
    }
}

/// Index and value of the largest entry of a probability row (the first on ties);
/// `None` for an empty row.
pub fn argmax(row: &[f64]) -> Option<(usize, f64)> {
    row.iter()
        .copied()
        .enumerate()
        .fold(None, |best: Option<(usize, f64)>, (k, p)| match best {
            Some((_, b)) if b >= p => best,
            _ => Some((k, p)),
        })
}

/// Hyper-parameters, with defaults suited to a small shop's data on a CPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Hyper {
    /// Events per sequence (the last N before the cut-off), 4 to 256.
    pub seq_len: usize,
    pub embedding_dim: usize,
    pub hidden_dim: usize,
    /// LSTM layers: 1 or 2.
    pub layers: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Epochs without a better validation loss before training stops.
    pub patience: usize,
    pub seed: u64,
}

impl Default for Hyper {
    fn default() -> Self {
        Self {
            seq_len: 30,
            embedding_dim: 16,
            hidden_dim: 32,
            layers: 1,
            epochs: 15,
            batch_size: 128,
            learning_rate: 0.005,
            weight_decay: 0.01,
            patience: 3,
            seed: 1,
        }
    }
}

impl Hyper {
    /// Every field out of range, by name.
    pub fn problems(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        let mut check = |ok: bool, field, message| {
            if !ok {
                out.push((field, message));
            }
        };
        check(
            (4..=256).contains(&self.seq_len),
            "seq_len",
            "must lie between 4 and 256",
        );
        check(
            (2..=256).contains(&self.embedding_dim),
            "embedding_dim",
            "must lie between 2 and 256",
        );
        check(
            (2..=512).contains(&self.hidden_dim),
            "hidden_dim",
            "must lie between 2 and 512",
        );
        check((1..=2).contains(&self.layers), "layers", "must be 1 or 2");
        check(
            (1..=200).contains(&self.epochs),
            "epochs",
            "must lie between 1 and 200",
        );
        check(
            (8..=4096).contains(&self.batch_size),
            "batch_size",
            "must lie between 8 and 4096",
        );
        check(
            self.learning_rate > 0.0 && self.learning_rate <= 1.0,
            "learning_rate",
            "must lie in (0, 1]",
        );
        check(
            (0.0..=1.0).contains(&self.weight_decay),
            "weight_decay",
            "must lie between 0 and 1",
        );
        check(
            (1..=50).contains(&self.patience),
            "patience",
            "must lie between 1 and 50",
        );
        out
    }
}

pub struct SequenceModel {
    embedding: Embedding,
    lstms: Vec<LSTM>,
    head: Linear,
    task: Task,
}

impl SequenceModel {
    pub fn new(
        vb: VarBuilder,
        vocab: usize,
        outputs: usize,
        hyper: &Hyper,
        task: Task,
    ) -> candle_core::Result<Self> {
        let embedding = candle_nn::embedding(vocab, hyper.embedding_dim, vb.pp("embedding"))?;
        let mut lstms = Vec::new();
        for layer in 0..hyper.layers {
            let input = if layer == 0 {
                hyper.embedding_dim
            } else {
                hyper.hidden_dim
            };
            lstms.push(candle_nn::lstm(
                input,
                hyper.hidden_dim,
                LSTMConfig::default(),
                vb.pp(format!("lstm{layer}")),
            )?);
        }
        let head = candle_nn::linear(hyper.hidden_dim, outputs, vb.pp("head"))?;
        Ok(Self {
            embedding,
            lstms,
            head,
            task,
        })
    }

    /// Logits for a batch of token sequences `(batch, seq_len)` (u32): `(batch,)` for the
    /// purchase task, `(batch, classes)` for the next-event task.
    pub fn forward(&self, tokens: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.embedding.forward(tokens)?;
        let mut last = None;
        for (i, lstm) in self.lstms.iter().enumerate() {
            let states = lstm.seq(&x)?;
            if i + 1 < self.lstms.len() {
                x = lstm.states_to_tensor(&states)?;
            }
            last = states.last().map(|s| s.h().clone());
        }
        let h = last.ok_or_else(|| candle_core::Error::Msg("empty sequence".into()))?;
        let logits = self.head.forward(&h)?;
        match self.task {
            Task::Purchase => logits.squeeze(1),
            Task::NextEvent => Ok(logits),
        }
    }
}

/// A small deterministic generator for initial weights and shuffling (splitmix64), so the
/// same seed and data give the same model.
pub struct SeedRng(u64);

impl SeedRng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x2545_F491_4F6C_DD1D)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// Replaces every variable's random initial value with one drawn from `seed`, visiting
/// them in name order: embeddings N(0, 1) scaled by 0.1, weights U(-1/sqrt(fan_in),
/// 1/sqrt(fan_in)) as PyTorch initialises LSTM and linear layers, biases zero.
pub fn seed_weights(varmap: &VarMap, seed: u64, device: &Device) -> candle_core::Result<()> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| candle_core::Error::Msg("variable map poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = SeedRng::new(seed);
    for name in names {
        let Some(var) = data.get(name) else { continue };
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let values: Vec<f32> = if name.contains("bias") {
            vec![0.0; n]
        } else if name.starts_with("embedding") {
            (0..n)
                .map(|_| {
                    // Box-Muller.
                    let u1 = rng.next_f64().max(1e-12);
                    let u2 = rng.next_f64();
                    (0.1 * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
                })
                .collect()
        } else {
            let fan_in = shape.dims().last().copied().unwrap_or(1).max(1) as f64;
            let bound = 1.0 / fan_in.sqrt();
            (0..n)
                .map(|_| ((2.0 * rng.next_f64() - 1.0) * bound) as f32)
                .collect()
        };
        var.set(&Tensor::from_vec(values, shape, device)?.to_dtype(DType::F32)?)?;
    }
    Ok(())
}
