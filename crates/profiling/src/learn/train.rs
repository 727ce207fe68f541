//! Training and scoring.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{
    Optimizer, VarBuilder, VarMap,
    optim::{AdamW, ParamsAdamW},
};

use super::model::{
    Dropout, FEATURE_MEAN, FEATURE_STD, FeatureScale, Hyper, SequenceModel, Task, seed_rng,
    seed_weights,
};
use crate::domain::sequence::{
    dataset::{FEATURE_COUNT, Features},
    evaluation,
};

/// Training or validation examples: `tokens` is `n x seq_len`, row-major, with one row of
/// history features per example.
pub struct Examples<'a> {
    pub tokens: &'a [u32],
    pub features: &'a [Features],
    /// 0/1 for the purchase task, the class id for the next-event task.
    pub labels: &'a [u32],
}

impl Examples<'_> {
    fn len(&self, seq_len: usize) -> usize {
        self.tokens.len() / seq_len.max(1)
    }
}

/// One epoch's figures, reported to the job's progress stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochReport {
    pub epoch: usize,
    /// Mean class-weighted loss over the training examples.
    pub train_loss: f64,
    /// The same loss on the validation examples (what early stopping watches).
    pub valid_loss: f64,
    /// Validation ROC AUC (purchase task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_roc_auc: Option<f64>,
    /// Validation macro-F1 (next-event task).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_macro_f1: Option<f64>,
    pub seconds: f64,
}

/// A trained model: its weights as safetensors bytes, and the history.
pub struct Trained {
    pub weights: Vec<u8>,
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
}

/// Where training and scoring run: the first GPU when built with the `cuda` feature and one
/// is present, otherwise the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(gpu) = Device::new_cuda(0) {
        return gpu;
    }
    Device::Cpu
}

fn err(e: candle_core::Error) -> String {
    e.to_string()
}

/// Mean loss over a batch, each example weighted: binary cross-entropy on logits for the
/// purchase task (`weights[label]`), cross-entropy for the next-event task.
fn loss(
    logits: &Tensor,
    labels: &[u32],
    class_weights: &[f32],
    task: Task,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let w: Vec<f32> = labels
        .iter()
        .map(|&l| class_weights.get(l as usize).copied().unwrap_or(1.0))
        .collect();
    let total: f32 = w.iter().sum::<f32>().max(1e-6);
    let w = Tensor::from_vec(w, labels.len(), device)?;
    let per_example = match task {
        Task::Purchase => {
            // max(z, 0) - z y + log(1 + exp(-|z|)): stable for any logit.
            let y = Tensor::from_vec(
                labels.iter().map(|&l| l as f32).collect::<Vec<_>>(),
                labels.len(),
                device,
            )?;
            let softplus = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
            ((logits.relu()? - (logits * &y)?)? + softplus)?
        }
        Task::NextEvent => {
            let log_p = candle_nn::ops::log_softmax(logits, D::Minus1)?;
            let target = Tensor::from_vec(labels.to_vec(), (labels.len(), 1), device)?;
            log_p.gather(&target, 1)?.squeeze(1)?.neg()?
        }
    };
    (per_example * w)?.sum_all()? / f64::from(total)
}

/// The token and feature tensors of some rows.
fn batch_tensors(
    tokens: &[u32],
    features: &[Features],
    rows: &[usize],
    seq_len: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor)> {
    let mut data = Vec::with_capacity(rows.len() * seq_len);
    let mut feats = Vec::with_capacity(rows.len() * FEATURE_COUNT);
    for &r in rows {
        data.extend_from_slice(&tokens[r * seq_len..(r + 1) * seq_len]);
        match features.get(r) {
            Some(f) => feats.extend(f.iter().map(|&v| v as f32)),
            None => feats.extend([0.0f32; FEATURE_COUNT]),
        }
    }
    Ok((
        Tensor::from_vec(data, (rows.len(), seq_len), device)?,
        Tensor::from_vec(feats, (rows.len(), FEATURE_COUNT), device)?,
    ))
}

/// Probabilities from logits: a sigmoid per row, or a softmax over each row's classes.
fn probabilities(logits: &Tensor, task: Task) -> candle_core::Result<Vec<f64>> {
    let probs = match task {
        Task::Purchase => candle_nn::ops::sigmoid(logits)?,
        Task::NextEvent => candle_nn::ops::softmax(logits, D::Minus1)?,
    };
    let flat: Vec<f32> = probs.flatten_all()?.to_vec1()?;
    Ok(flat.into_iter().map(f64::from).collect())
}

/// The class-weighted loss over `data` and the probabilities of every example.
fn evaluate(
    model: &SequenceModel,
    data: &Examples,
    class_weights: &[f32],
    hyper: &Hyper,
    task: Task,
    device: &Device,
) -> candle_core::Result<(f64, Vec<f64>)> {
    let n = data.len(hyper.seq_len);
    let mut total = 0.0;
    let mut weight = 0.0;
    let mut scores = Vec::new();
    let rows: Vec<usize> = (0..n).collect();
    for chunk in rows.chunks(hyper.batch_size.max(1)) {
        let (x, f) = batch_tensors(data.tokens, data.features, chunk, hyper.seq_len, device)?;
        let labels: Vec<u32> = chunk.iter().map(|&r| data.labels[r]).collect();
        let logits = model.forward(&x, &f)?;
        let w: f64 = labels
            .iter()
            .map(|&l| f64::from(class_weights.get(l as usize).copied().unwrap_or(1.0)))
            .sum();
        let l = loss(&logits, &labels, class_weights, task, device)?;
        total += f64::from(l.to_scalar::<f32>()?) * w;
        weight += w;
        scores.extend(probabilities(&logits, task)?);
    }
    Ok((total / weight.max(1e-12), scores))
}

/// Trains on `train` with AdamW, weighting examples by `class_weights` (per label),
/// evaluating the same weighted loss on the validation examples after every epoch and
/// keeping the weights of the best one; stops after `patience` epochs without
/// improvement. `on_epoch` sees each epoch's report (for progress, with validation ROC
/// AUC or macro-F1) and may stop training by returning false.
#[allow(clippy::too_many_arguments)]
pub fn fit(
    train: &Examples,
    valid: &Examples,
    vocab: usize,
    outputs: usize,
    class_weights: &[f32],
    hyper: &Hyper,
    task: Task,
    mut on_epoch: impl FnMut(&EpochReport) -> bool,
) -> Result<Trained, String> {
    let device = device();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let scale = FeatureScale::fit(train.features, &device).map_err(err)?;
    let model =
        SequenceModel::new(vb, vocab, outputs, hyper, task, Some(scale.clone())).map_err(err)?;
    seed_weights(&varmap, hyper.seed, &device).map_err(err)?;
    let params = ParamsAdamW {
        lr: hyper.learning_rate,
        weight_decay: hyper.weight_decay,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), params).map_err(err)?;
    let mut rng = seed_rng(hyper.seed.wrapping_add(1));
    let mut dropout = Dropout::new(hyper.dropout, hyper.seed.wrapping_add(2));
    let n = train.len(hyper.seq_len);
    if n == 0 {
        return Err("no training examples".into());
    }
    if train.features.len() != n || valid.features.len() != valid.len(hyper.seq_len) {
        return Err("one row of history features is needed per example".into());
    }
    let mut order: Vec<usize> = (0..n).collect();
    let mut best: Option<(f64, usize, HashMap<String, Tensor>)> = None;
    let mut epochs = Vec::new();
    let mut stale = 0;
    for epoch in 1..=hyper.epochs {
        let started = std::time::Instant::now();
        rng.shuffle(&mut order);
        let mut train_loss = 0.0;
        for chunk in order.chunks(hyper.batch_size.max(1)) {
            let (x, f) = batch_tensors(train.tokens, train.features, chunk, hyper.seq_len, &device)
                .map_err(err)?;
            let labels: Vec<u32> = chunk.iter().map(|&r| train.labels[r]).collect();
            let l = loss(
                &model
                    .forward_with(&x, &f, Some(&mut dropout))
                    .map_err(err)?,
                &labels,
                class_weights,
                task,
                &device,
            )
            .map_err(err)?;
            opt.backward_step(&l).map_err(err)?;
            train_loss += f64::from(l.to_scalar::<f32>().map_err(err)?) * chunk.len() as f64;
        }
        let (valid_loss, scores) =
            evaluate(&model, valid, class_weights, hyper, task, &device).map_err(err)?;
        let (valid_roc_auc, valid_macro_f1) = match task {
            Task::Purchase => {
                let y: Vec<u8> = valid.labels.iter().map(|&l| u8::from(l == 1)).collect();
                (evaluation::roc_auc(&scores, &y).ok(), None)
            }
            Task::NextEvent => (
                None,
                evaluation::multi_report(&scores, outputs, valid.labels)
                    .ok()
                    .map(|r| r.macro_f1),
            ),
        };
        let report = EpochReport {
            epoch,
            train_loss: train_loss / n as f64,
            valid_loss,
            valid_roc_auc,
            valid_macro_f1,
            seconds: started.elapsed().as_secs_f64(),
        };
        let keep_going = on_epoch(&report);
        epochs.push(report);
        if best.as_ref().is_none_or(|(b, _, _)| valid_loss < *b) {
            let snapshot = snapshot(&varmap)?;
            best = Some((valid_loss, epoch, snapshot));
            stale = 0;
        } else {
            stale += 1;
        }
        if stale >= hyper.patience || !keep_going {
            break;
        }
    }
    let (_, best_epoch, mut weights) = best.ok_or("no epoch ran")?;
    weights.insert(FEATURE_MEAN.to_owned(), scale.mean);
    weights.insert(FEATURE_STD.to_owned(), scale.std);
    let weights = safetensors::serialize(weights.iter().map(|(k, v)| (k.clone(), v)), None)
        .map_err(|e| e.to_string())?;
    Ok(Trained {
        weights,
        epochs,
        best_epoch,
    })
}

fn snapshot(varmap: &VarMap) -> Result<HashMap<String, Tensor>, String> {
    let data = varmap.data().lock().map_err(|_| "variable map poisoned")?;
    data.iter()
        .map(|(k, v)| Ok((k.clone(), v.as_tensor().copy().map_err(err)?)))
        .collect()
}

/// Scores examples (token rows and their history features) with stored weights: the
/// purchase probability per row for the purchase task, or `outputs` class probabilities
/// per row (row-major) for the next-event task.
pub fn predict(
    weights: &[u8],
    tokens: &[u32],
    features: &[Features],
    vocab: usize,
    outputs: usize,
    hyper: &Hyper,
    task: Task,
) -> Result<Vec<f64>, String> {
    let device = device();
    let tensors = candle_core::safetensors::load_buffer(weights, &device).map_err(err)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let scale = FeatureScale::stored(&vb, FEATURE_COUNT).map_err(err)?;
    let model = SequenceModel::new(vb, vocab, outputs, hyper, task, scale).map_err(err)?;
    let n = tokens.len() / hyper.seq_len.max(1);
    if model.reads_features() && features.len() != n {
        return Err(format!(
            "{n} token rows but {} rows of history features",
            features.len()
        ));
    }
    let rows: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(n * outputs.max(1));
    for chunk in rows.chunks(hyper.batch_size.max(1)) {
        let (x, f) = batch_tensors(tokens, features, chunk, hyper.seq_len, &device).map_err(err)?;
        out.extend(probabilities(&model.forward(&x, &f).map_err(err)?, task).map_err(err)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Toy {
        tokens: Vec<u32>,
        features: Vec<Features>,
        labels: Vec<u32>,
    }

    impl Toy {
        fn examples(&self) -> Examples<'_> {
            Examples {
                tokens: &self.tokens,
                features: &self.features,
                labels: &self.labels,
            }
        }
    }

    /// Random sequences and history features with a binary label shown by the last token
    /// or, with `in_features`, by one history feature only (the tokens are then noise).
    fn toy(n: usize, seq_len: usize, seed: u64, in_features: bool) -> Toy {
        let mut rng = seed_rng(seed);
        let mut toy = Toy {
            tokens: Vec::new(),
            features: Vec::new(),
            labels: Vec::new(),
        };
        for _ in 0..n {
            for _ in 0..seq_len - 1 {
                toy.tokens.push(2 + (rng.next_u64() % 6) as u32);
            }
            let signal = (rng.next_u64() % 2) as u32;
            let last = if in_features {
                8 + (rng.next_u64() % 2) as u32
            } else if signal == 1 {
                8
            } else {
                9
            };
            toy.tokens.push(last);
            let mut f: Features = std::array::from_fn(|_| 5.0 + rng.next_f64());
            if in_features {
                f[2] += 2.0 * f64::from(signal);
            }
            toy.features.push(f);
            toy.labels.push(signal);
        }
        toy
    }

    fn hyper() -> Hyper {
        Hyper {
            seq_len: 6,
            embedding_dim: 8,
            hidden_dim: 8,
            epochs: 30,
            batch_size: 32,
            learning_rate: 0.02,
            patience: 30,
            ..Hyper::default()
        }
    }

    /// Trains the purchase head on `train`, stopping on `valid`.
    fn fit_purchase(train: &Toy, valid: &Toy, h: &Hyper) -> Result<Trained, String> {
        fit(
            &train.examples(),
            &valid.examples(),
            10,
            1,
            &[1.0, 1.0],
            h,
            Task::Purchase,
            |_| true,
        )
    }

    /// Purchase probabilities of `data`'s rows, with `features` in place of its own.
    fn score(
        t: &Trained,
        data: &Toy,
        features: &[Features],
        h: &Hyper,
    ) -> Result<Vec<f64>, String> {
        predict(&t.weights, &data.tokens, features, 10, 1, h, Task::Purchase)
    }

    fn accuracy(p: &[f64], labels: &[u32]) -> usize {
        p.iter()
            .zip(labels)
            .filter(|(p, l)| (**p > 0.5) == (**l == 1))
            .count()
    }

    #[test]
    fn learns_a_signal_and_is_deterministic() -> Result<(), String> {
        let h = hyper();
        let train = toy(256, h.seq_len, 3, false);
        let valid = toy(64, h.seq_len, 4, false);
        let a = fit_purchase(&train, &valid, &h)?;
        let b = fit_purchase(&train, &valid, &h)?;
        assert_eq!(a.weights, b.weights, "same seed, same weights");
        let first = a.epochs.first().map(|e| e.valid_loss).unwrap_or_default();
        let best = a
            .epochs
            .iter()
            .map(|e| e.valid_loss)
            .fold(f64::INFINITY, f64::min);
        assert!(best < 0.2 && best < first, "{:?}", a.epochs);
        assert!(a.epochs.iter().all(|e| e.valid_roc_auc.is_some()));
        let p = score(&a, &valid, &valid.features, &h)?;
        assert!(accuracy(&p, &valid.labels) >= 60, "{p:?}");
        Ok(())
    }

    /// The head reads the history features (standardised with the stored training scale):
    /// a label that only a feature shows is learnt, and scoring needs the features.
    #[test]
    fn learns_a_signal_from_history_features() -> Result<(), String> {
        let h = hyper();
        let train = toy(256, h.seq_len, 7, true);
        let valid = toy(64, h.seq_len, 8, true);
        let t = fit_purchase(&train, &valid, &h)?;
        let p = score(&t, &valid, &valid.features, &h)?;
        assert!(accuracy(&p, &valid.labels) >= 60, "{:?}", t.epochs);
        let auc = t.epochs[t.best_epoch - 1].valid_roc_auc.unwrap_or_default();
        assert!(auc > 0.95, "{auc}");
        // Without the features' signal the same tokens say nothing.
        let flat: Vec<Features> = valid
            .features
            .iter()
            .map(|_| [5.5; FEATURE_COUNT])
            .collect();
        let blind = score(&t, &valid, &flat, &h)?;
        assert!(accuracy(&blind, &valid.labels) < 45, "{blind:?}");
        assert!(score(&t, &valid, &[], &h).is_err(), "features are required");
        Ok(())
    }

    /// A version stored before the head read history features (no scale in its weights)
    /// still loads and scores from its tokens alone.
    #[test]
    fn a_model_without_history_features_still_scores() -> Result<(), String> {
        let h = hyper();
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        SequenceModel::new(vb, 10, 1, &h, Task::Purchase, None).map_err(err)?;
        seed_weights(&varmap, 1, &device).map_err(err)?;
        let vars = snapshot(&varmap)?;
        let weights = safetensors::serialize(vars.iter().map(|(k, v)| (k.clone(), v)), None)
            .map_err(|e| e.to_string())?;
        let data = toy(4, h.seq_len, 9, false);
        let p = predict(&weights, &data.tokens, &[], 10, 1, &h, Task::Purchase)?;
        assert_eq!(p.len(), 4);
        assert!(p.iter().all(|p| (0.0..=1.0).contains(p)));
        Ok(())
    }

    #[test]
    fn next_event_head_gives_distributions() -> Result<(), String> {
        let h = Hyper {
            epochs: 3,
            ..hyper()
        };
        let mut train = toy(64, h.seq_len, 5, false);
        train.labels.iter_mut().for_each(|l| *l += 1);
        let t = fit(
            &train.examples(),
            &train.examples(),
            10,
            3,
            &[1.0, 1.0, 1.0],
            &h,
            Task::NextEvent,
            |_| true,
        )?;
        assert!(t.epochs.iter().all(|e| e.valid_macro_f1.is_some()));
        let p = predict(
            &t.weights,
            &train.tokens[..h.seq_len * 2],
            &train.features[..2],
            10,
            3,
            &h,
            Task::NextEvent,
        )?;
        assert_eq!(p.len(), 6);
        assert!((p[..3].iter().sum::<f64>() - 1.0).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn early_stopping_and_callback_stop() -> Result<(), String> {
        let h = Hyper {
            epochs: 10,
            ..hyper()
        };
        let train = toy(32, h.seq_len, 6, false);
        let t = fit(
            &train.examples(),
            &train.examples(),
            10,
            1,
            &[1.0, 1.0],
            &h,
            Task::Purchase,
            |e| e.epoch < 2,
        )?;
        assert_eq!(t.epochs.len(), 2);
        assert!(
            Hyper {
                layers: 3,
                seq_len: 1,
                ..Hyper::default()
            }
            .problems()
            .len()
                == 2
        );
        Ok(())
    }
}
