//! Training and scoring.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor};
use candle_nn::{
    Optimizer, VarBuilder, VarMap,
    optim::{AdamW, ParamsAdamW},
};

use super::model::{Hyper, SeedRng, SequenceModel, Task, seed_weights};

/// Training or validation examples: `tokens` is `n x seq_len`, row-major.
pub struct Examples<'a> {
    pub tokens: &'a [u32],
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
    pub train_loss: f64,
    pub valid_loss: f64,
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

/// Builds the network over fresh variables (for training) or stored weights (scoring).
fn build(
    vb: VarBuilder,
    vocab: usize,
    outputs: usize,
    hyper: &Hyper,
    task: Task,
) -> Result<SequenceModel, String> {
    SequenceModel::new(vb, vocab, outputs, hyper, task).map_err(err)
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

fn batch_tensor(
    tokens: &[u32],
    rows: &[usize],
    seq_len: usize,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let mut data = Vec::with_capacity(rows.len() * seq_len);
    for &r in rows {
        data.extend_from_slice(&tokens[r * seq_len..(r + 1) * seq_len]);
    }
    Tensor::from_vec(data, (rows.len(), seq_len), device)
}

fn evaluate_loss(
    model: &SequenceModel,
    data: &Examples,
    class_weights: &[f32],
    hyper: &Hyper,
    task: Task,
    device: &Device,
) -> candle_core::Result<f64> {
    let n = data.len(hyper.seq_len);
    let ones = vec![1.0f32; class_weights.len()];
    let mut total = 0.0;
    let rows: Vec<usize> = (0..n).collect();
    for chunk in rows.chunks(hyper.batch_size.max(1)) {
        let x = batch_tensor(data.tokens, chunk, hyper.seq_len, device)?;
        let labels: Vec<u32> = chunk.iter().map(|&r| data.labels[r]).collect();
        let l = loss(&model.forward(&x)?, &labels, &ones, task, device)?;
        total += f64::from(l.to_scalar::<f32>()?) * chunk.len() as f64;
    }
    Ok(total / n.max(1) as f64)
}

/// Trains on `train` with AdamW, weighting examples by `class_weights` (per label),
/// evaluating the unweighted validation loss after every epoch and keeping the weights of
/// the best one; stops after `patience` epochs without improvement. `on_epoch` sees each
/// epoch's report (for progress) and may stop training by returning false.
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
    let model = build(vb, vocab, outputs, hyper, task)?;
    seed_weights(&varmap, hyper.seed, &device).map_err(err)?;
    let params = ParamsAdamW {
        lr: hyper.learning_rate,
        weight_decay: hyper.weight_decay,
        ..ParamsAdamW::default()
    };
    let mut opt = AdamW::new(varmap.all_vars(), params).map_err(err)?;
    let mut rng = SeedRng::new(hyper.seed.wrapping_add(1));
    let n = train.len(hyper.seq_len);
    if n == 0 {
        return Err("no training examples".into());
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
            let x = batch_tensor(train.tokens, chunk, hyper.seq_len, &device).map_err(err)?;
            let labels: Vec<u32> = chunk.iter().map(|&r| train.labels[r]).collect();
            let l = loss(
                &model.forward(&x).map_err(err)?,
                &labels,
                class_weights,
                task,
                &device,
            )
            .map_err(err)?;
            opt.backward_step(&l).map_err(err)?;
            train_loss += f64::from(l.to_scalar::<f32>().map_err(err)?) * chunk.len() as f64;
        }
        let valid_loss =
            evaluate_loss(&model, valid, class_weights, hyper, task, &device).map_err(err)?;
        let report = EpochReport {
            epoch,
            train_loss: train_loss / n as f64,
            valid_loss,
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
    let (_, best_epoch, weights) = best.ok_or("no epoch ran")?;
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

/// Scores examples with stored weights: the purchase probability per row for the purchase
/// task, or `outputs` class probabilities per row (row-major) for the next-event task.
pub fn predict(
    weights: &[u8],
    tokens: &[u32],
    vocab: usize,
    outputs: usize,
    hyper: &Hyper,
    task: Task,
) -> Result<Vec<f64>, String> {
    let device = device();
    let tensors = candle_core::safetensors::load_buffer(weights, &device).map_err(err)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let model = build(vb, vocab, outputs, hyper, task)?;
    let n = tokens.len() / hyper.seq_len.max(1);
    let rows: Vec<usize> = (0..n).collect();
    let mut out = Vec::with_capacity(n * outputs.max(1));
    for chunk in rows.chunks(hyper.batch_size.max(1)) {
        let x = batch_tensor(tokens, chunk, hyper.seq_len, &device).map_err(err)?;
        let logits = model.forward(&x).map_err(err)?;
        let probs = match task {
            Task::Purchase => candle_nn::ops::sigmoid(&logits).map_err(err)?,
            Task::NextEvent => candle_nn::ops::softmax(&logits, D::Minus1).map_err(err)?,
        };
        let flat: Vec<f32> = probs.flatten_all().map_err(err)?.to_vec1().map_err(err)?;
        out.extend(flat.into_iter().map(f64::from));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sequences whose last token decides the label: the model must learn it, and the same
    /// seed must give the same weights.
    fn toy(n: usize, seq_len: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
        let mut rng = SeedRng::new(seed);
        let mut tokens = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..n {
            for _ in 0..seq_len - 1 {
                tokens.push(2 + (rng.next_u64() % 6) as u32);
            }
            let signal = (rng.next_u64() % 2) as u32;
            tokens.push(if signal == 1 { 8 } else { 9 });
            labels.push(signal);
        }
        (tokens, labels)
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

    #[test]
    fn learns_a_signal_and_is_deterministic() -> Result<(), String> {
        let h = hyper();
        let (tokens, labels) = toy(256, h.seq_len, 3);
        let (vt, vl) = toy(64, h.seq_len, 4);
        let train = Examples {
            tokens: &tokens,
            labels: &labels,
        };
        let valid = Examples {
            tokens: &vt,
            labels: &vl,
        };
        let a = fit(
            &train,
            &valid,
            10,
            1,
            &[1.0, 1.0],
            &h,
            Task::Purchase,
            |_| true,
        )?;
        let b = fit(
            &train,
            &valid,
            10,
            1,
            &[1.0, 1.0],
            &h,
            Task::Purchase,
            |_| true,
        )?;
        assert_eq!(a.weights, b.weights, "same seed, same weights");
        let first = a.epochs.first().map(|e| e.valid_loss).unwrap_or_default();
        let best = a
            .epochs
            .iter()
            .map(|e| e.valid_loss)
            .fold(f64::INFINITY, f64::min);
        assert!(best < 0.2 && best < first, "{:?}", a.epochs);
        let p = predict(&a.weights, &vt, 10, 1, &h, Task::Purchase)?;
        let correct = p
            .iter()
            .zip(&vl)
            .filter(|(p, l)| (**p > 0.5) == (**l == 1))
            .count();
        assert!(correct >= 60, "{correct}/64");
        Ok(())
    }

    #[test]
    fn next_event_head_gives_distributions() -> Result<(), String> {
        let h = Hyper {
            epochs: 3,
            ..hyper()
        };
        let (tokens, labels) = toy(64, h.seq_len, 5);
        let labels: Vec<u32> = labels.iter().map(|l| l + 1).collect();
        let train = Examples {
            tokens: &tokens,
            labels: &labels,
        };
        let t = fit(
            &train,
            &train,
            10,
            3,
            &[1.0, 1.0, 1.0],
            &h,
            Task::NextEvent,
            |_| true,
        )?;
        let p = predict(
            &t.weights,
            &tokens[..h.seq_len * 2],
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
        let (tokens, labels) = toy(32, h.seq_len, 6);
        let train = Examples {
            tokens: &tokens,
            labels: &labels,
        };
        let t = fit(
            &train,
            &train,
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
