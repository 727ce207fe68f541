//! The network: token embedding, LSTM layers, a dense head (one logit for the purchase
//! task, one per class for the next-event task). The head reads the last LSTM state and
//! the customer's whole-history features (standardised with the training split's mean and
//! standard deviation, which are stored with the weights): a window of the last events
//! shows what a customer does now, the history how often they buy over the long run.

use candle_core::{D, DType, Device, Module, Tensor};
use candle_nn::{
    Embedding, LSTM, Linear, VarBuilder, VarMap,
    rnn::{LSTMConfig, RNN},
};
use mercato_platform::random::SplitMix64;
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
    /// Share of the LSTM's inputs and of the dense layer's inputs zeroed at random while
    /// training (seeded, so training stays deterministic), 0 to 0.9.
    pub dropout: f64,
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
            learning_rate: 0.001,
            weight_decay: 0.01,
            patience: 3,
            dropout: 0.3,
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
        check(
            (0.0..=0.9).contains(&self.dropout),
            "dropout",
            "must lie between 0 and 0.9",
        );
        out
    }
}

/// Names of the stored feature standardisation tensors.
pub const FEATURE_MEAN: &str = "features.mean";
pub const FEATURE_STD: &str = "features.std";

/// Standardisation of the history features: `(x - mean) / std`, both `(1, features)`.
#[derive(Clone)]
pub struct FeatureScale {
    pub mean: Tensor,
    pub std: Tensor,
}

impl FeatureScale {
    /// Mean and standard deviation of each column of `rows` (a constant column gets 1).
    pub fn fit(rows: &[impl AsRef<[f64]>], device: &Device) -> candle_core::Result<Self> {
        let (mean, std) = crate::domain::columns::mean_and_sd(rows, 1e-9);
        let width = mean.len();
        let std: Vec<f32> = std.iter().map(|&s| s as f32).collect();
        let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
        Ok(Self {
            mean: Tensor::from_vec(mean, (1, width), device)?,
            std: Tensor::from_vec(std, (1, width), device)?,
        })
    }

    /// The stored scale, when the weights hold one (models trained before the head read
    /// history features hold none).
    pub fn stored(vb: &VarBuilder, width: usize) -> candle_core::Result<Option<Self>> {
        if !vb.contains_tensor(FEATURE_MEAN) {
            return Ok(None);
        }
        Ok(Some(Self {
            mean: vb.get((1, width), FEATURE_MEAN)?,
            std: vb.get((1, width), FEATURE_STD)?,
        }))
    }

    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.broadcast_sub(&self.mean)?.broadcast_div(&self.std)
    }
}

pub struct SequenceModel {
    embedding: Embedding,
    lstms: Vec<LSTM>,
    /// The history features' scale and the hidden dense layer over `[state, features]`
    /// (the head reads `[dense, features]`); `None` for a model whose head reads the LSTM
    /// state only.
    features: Option<(FeatureScale, Linear)>,
    head: Linear,
    task: Task,
}

impl SequenceModel {
    /// The network over `vb`'s variables; with `features`, the head reads that many
    /// history features through a hidden dense layer.
    pub fn new(
        vb: VarBuilder,
        vocab: usize,
        outputs: usize,
        hyper: &Hyper,
        task: Task,
        features: Option<FeatureScale>,
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
        let (features, head_inputs) = match features {
            Some(scale) => {
                let width = scale.mean.dim(1)?;
                let dense =
                    candle_nn::linear(hyper.hidden_dim + width, hyper.hidden_dim, vb.pp("dense"))?;
                (Some((scale, dense)), hyper.hidden_dim + width)
            }
            None => (None, hyper.hidden_dim),
        };
        let head = candle_nn::linear(head_inputs, outputs, vb.pp("head"))?;
        Ok(Self {
            embedding,
            lstms,
            features,
            head,
            task,
        })
    }

    /// Whether the head reads history features.
    pub fn reads_features(&self) -> bool {
        self.features.is_some()
    }

    /// Logits for a batch of token sequences `(batch, seq_len)` (u32) and their raw history
    /// features `(batch, features)` (f32; ignored by a model that does not read them):
    /// `(batch,)` for the purchase task, `(batch, classes)` for the next-event task.
    pub fn forward(&self, tokens: &Tensor, features: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_with(tokens, features, None)
    }

    /// [`Self::forward`] with dropout while training.
    pub fn forward_with(
        &self,
        tokens: &Tensor,
        features: &Tensor,
        mut dropout: Option<&mut Dropout>,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.embedding.forward(tokens)?;
        if let Some(d) = dropout.as_deref_mut() {
            x = d.apply(&x)?;
        }
        let mut last = None;
        for (i, lstm) in self.lstms.iter().enumerate() {
            let states = lstm.seq(&x)?;
            if i + 1 < self.lstms.len() {
                x = lstm.states_to_tensor(&states)?;
            }
            last = states.last().map(|s| s.h().clone());
        }
        let mut h = last.ok_or_else(|| candle_core::Error::Msg("empty sequence".into()))?;
        if let Some((scale, dense)) = &self.features {
            let x = scale.apply(features)?;
            let mut z = Tensor::cat(&[&h, &x], D::Minus1)?;
            if let Some(d) = dropout {
                z = d.apply(&z)?;
            }
            // The head also reads the features directly (a linear path beside the hidden
            // layer), so the model starts from what a linear model of them can do.
            h = Tensor::cat(&[&dense.forward(&z)?.relu()?, &x], D::Minus1)?;
        }
        let logits = self.head.forward(&h)?;
        match self.task {
            Task::Purchase => logits.squeeze(1),
            Task::NextEvent => Ok(logits),
        }
    }
}

/// Inverted dropout with masks from a seeded generator, so the same seed trains the same
/// model (candle's own dropout draws from an unseeded source).
pub struct Dropout {
    rng: SplitMix64,
    rate: f64,
}

impl Dropout {
    pub fn new(rate: f64, seed: u64) -> Self {
        Self {
            rng: seed_rng(seed),
            rate,
        }
    }

    /// `x` with each entry zeroed with probability `rate` and the rest scaled by
    /// `1 / (1 - rate)`.
    pub fn apply(&mut self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.rate <= 0.0 {
            return Ok(x.clone());
        }
        let keep = 1.0 - self.rate;
        let scale = (1.0 / keep) as f32;
        let mask: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                if self.rng.next_f64() < keep {
                    scale
                } else {
                    0.0
                }
            })
            .collect();
        x * Tensor::from_vec(mask, x.shape(), x.device())?
    }
}

/// The generator for initial weights, dropout and shuffling, so the same seed and data
/// give the same model.
pub fn seed_rng(seed: u64) -> SplitMix64 {
    SplitMix64::new(seed ^ 0x2545_F491_4F6C_DD1D)
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
    let mut rng = seed_rng(seed);
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
