//! How good the sequence model's predictions are, and the baselines it has to beat.
//!
//! - Purchase head (binary): accuracy, precision, recall and F1 at a threshold, ROC AUC
//!   (rank based, ties get average ranks), average precision (the area under the
//!   precision-recall curve as scikit-learn defines it), Brier score, log loss and a
//!   10-bin reliability table.
//! - Next-event head (multi-class): accuracy, per-class precision / recall / F1, macro F1
//!   and log loss.
//! - Baselines: constant scores from the training label frequencies, and a logistic
//!   regression on a handful of summary features (the dataset's recency / frequency /
//!   monetary / event-count features).
//!
//! Every function checks its input and answers an [`EvalError`] naming the field at
//! fault (`scores`, `labels[3]`, `threshold`, ...), so a caller can pass it on as a 422.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Number of equal-width bins in [`BinaryReport::reliability`].
pub const RELIABILITY_BINS: usize = 10;

/// Probabilities are clipped to `[PROBABILITY_EPS, 1 - PROBABILITY_EPS]` before taking
/// logarithms, so one confident mistake costs about 34.5 nats instead of infinity.
pub const PROBABILITY_EPS: f64 = 1e-15;

/// A multi-class probability row may sum to 1 within this tolerance (softmax in `f32`
/// does not sum exactly to 1); rows are renormalised before the log loss.
pub const ROW_SUM_TOLERANCE: f64 = 1e-3;

/// Newton iterations allowed when fitting [`Logistic`].
const MAX_NEWTON_ITERATIONS: usize = 100;

/// The fit stops once every gradient component is below this.
const GRADIENT_TOLERANCE: f64 = 1e-10;

/// A gradient still above this after the last iteration means the fit failed.
const ACCEPTABLE_GRADIENT: f64 = 1e-6;

/// Invalid input to an evaluation function, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct EvalError {
    /// The argument or element at fault: `scores`, `labels[3]`, `threshold`, `k`, ...
    pub field: String,
    /// What is wrong with it, in plain words.
    pub message: String,
}

impl EvalError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One bin of the reliability (calibration) table: the examples whose predicted
/// probability falls in `[lower, upper)` (the last bin includes 1.0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    /// Examples in the bin.
    pub count: usize,
    /// Mean predicted probability in the bin (0 when the bin is empty).
    pub mean_predicted: f64,
    /// Share of positives in the bin (0 when the bin is empty). A well-calibrated model
    /// has this close to `mean_predicted`.
    pub observed_rate: f64,
}

/// Quality of purchase predictions on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BinaryReport {
    /// Examples scored.
    pub n: usize,
    /// Examples with label 1.
    pub positives: usize,
    /// Share of examples classified correctly at `threshold`.
    pub accuracy: f64,
    /// Of the examples predicted positive, the share that are positive (0 when none is
    /// predicted positive).
    pub precision: f64,
    /// Of the positive examples, the share predicted positive.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Probability that a random positive is scored above a random negative (ties
    /// count one half); 0.5 is chance.
    pub roc_auc: f64,
    /// Average precision: area under the precision-recall curve; the positive rate is
    /// chance.
    pub pr_auc: f64,
    /// Mean squared difference between probability and label.
    pub brier: f64,
    /// Mean negative log-likelihood of the labels, in nats.
    pub log_loss: f64,
    /// An example is predicted positive when its score is at least this.
    pub threshold: f64,
    /// [`RELIABILITY_BINS`] equal-width bins over `[0, 1]`.
    pub reliability: Vec<ReliabilityBin>,
}

/// Precision, recall and F1 of one next-event class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    /// Of the examples predicted as this class, the share that are (0 when none are).
    pub precision: f64,
    /// Of the examples of this class, the share predicted as it (0 when there are none).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Examples whose label is this class.
    pub support: usize,
}

/// Quality of next-event predictions on one split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiReport {
    /// Examples scored.
    pub n: usize,
    /// Share of examples whose most probable class is the label (ties go to the lower
    /// class id).
    pub accuracy: f64,
    /// Unweighted mean F1 over the classes that occur as a label or as a prediction
    /// (as scikit-learn's `f1_score(average="macro")`); classes that never occur are
    /// left out rather than counted as 0.
    pub macro_f1: f64,
    /// One entry per class id, `0..k`.
    pub per_class: Vec<ClassStats>,
    /// Mean negative log-probability of the label, in nats.
    pub log_loss: f64,
}

/// Scores for the purchase head on one split.
///
/// `scores` are probabilities in `[0, 1]`, `labels` are 0 or 1, and an example counts as
/// predicted positive when its score is at least `threshold`.
///
/// # Errors
/// Mismatched lengths or empty input (`labels`, `scores`), a score that is not a
/// probability (`scores[i]`), a label other than 0 or 1 (`labels[i]`), a threshold
/// outside `[0, 1]` (`threshold`), or only one class among the labels (`labels`: the
/// ROC AUC is undefined then).
pub fn binary_report(
    scores: &[f64],
    labels: &[u8],
    threshold: f64,
) -> Result<BinaryReport, EvalError> {
    check_binary(scores, labels, true)?;
    if !threshold.is_finite() || !(0.0..=1.0).contains(&threshold) {
        return Err(EvalError::new(
            "threshold",
            format!("must be between 0 and 1, got {threshold}"),
        ));
    }
    let roc_auc = roc_auc(scores, labels)?;
    let pr_auc = average_precision(scores, labels)?;

    let n = scores.len();
    let (mut tp, mut fp, mut tn, mut fn_) = (0usize, 0usize, 0usize, 0usize);
    let mut squared = 0.0;
    let mut nll = 0.0;
    let mut bins = vec![(0usize, 0.0f64, 0usize); RELIABILITY_BINS];
    for (&p, &y) in scores.iter().zip(labels) {
        let positive = y == 1;
        match (p >= threshold, positive) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, false) => tn += 1,
            (false, true) => fn_ += 1,
        }
        let target = f64::from(y);
        squared += (p - target) * (p - target);
        let clipped = clip(p);
        nll -= if positive {
            clipped.ln()
        } else {
            (1.0 - clipped).ln()
        };
        // p is in [0, 1], so the bin index is in 0..=RELIABILITY_BINS; 1.0 joins the last.
        let bin = ((p * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
        bins[bin].0 += 1;
        bins[bin].1 += p;
        bins[bin].2 += usize::from(positive);
    }
    let positives = tp + fn_;
    let precision = ratio(tp, tp + fp);
    let recall = ratio(tp, positives);
    let reliability = bins
        .into_iter()
        .enumerate()
        .map(|(i, (count, sum, hits))| ReliabilityBin {
            lower: i as f64 / RELIABILITY_BINS as f64,
            upper: (i + 1) as f64 / RELIABILITY_BINS as f64,
            count,
            mean_predicted: if count == 0 { 0.0 } else { sum / count as f64 },
            observed_rate: ratio(hits, count),
        })
        .collect();
    Ok(BinaryReport {
        n,
        positives,
        accuracy: ratio(tp + tn, n),
        precision,
        recall,
        f1: harmonic(precision, recall),
        roc_auc,
        pr_auc,
        brier: squared / n as f64,
        log_loss: nll / n as f64,
        threshold,
        reliability,
    })
}

/// Area under the ROC curve: the probability that a randomly chosen positive is scored
/// above a randomly chosen negative, ties counting one half (Mann-Whitney U with
/// average ranks). Scores can be any finite numbers, not only probabilities.
///
/// # Errors
/// Mismatched lengths or empty input (`labels`, `scores`), a non-finite score
/// (`scores[i]`), a label other than 0 or 1 (`labels[i]`), or labels of only one class
/// (`labels`).
pub fn roc_auc(scores: &[f64], labels: &[u8]) -> Result<f64, EvalError> {
    let positives = check_binary(scores, labels, false)?;
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Err(one_class(positives, negatives, "ROC AUC"));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of the 1-based ranks of the positives, tied scores sharing their mean rank.
    let mut positive_rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            end += 1;
        }
        let mean_rank = (start + 1 + end) as f64 / 2.0;
        let hits = order[start..end]
            .iter()
            .filter(|&&i| labels[i] == 1)
            .count();
        positive_rank_sum += mean_rank * hits as f64;
        start = end;
    }
    let p = positives as f64;
    let u = positive_rank_sum - p * (p + 1.0) / 2.0;
    Ok(u / (p * negatives as f64))
}

/// Average precision, as scikit-learn's `average_precision_score`: going down the
/// distinct scores from the highest, the precision at each score weighted by the recall
/// gained there, `sum_n (R_n - R_{n-1}) P_n`. Examples with equal scores enter together.
///
/// # Errors
/// Mismatched lengths or empty input (`labels`, `scores`), a non-finite score
/// (`scores[i]`), a label other than 0 or 1 (`labels[i]`), or no positive label
/// (`labels`).
pub fn average_precision(scores: &[f64], labels: &[u8]) -> Result<f64, EvalError> {
    let positives = check_binary(scores, labels, false)?;
    if positives == 0 {
        return Err(one_class(positives, labels.len(), "average precision"));
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut previous_recall = 0.0;
    let mut ap = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end < order.len() && scores[order[end]] == scores[order[start]] {
            if labels[order[end]] == 1 {
                tp += 1;
            } else {
                fp += 1;
            }
            end += 1;
        }
        let recall = tp as f64 / positives as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - previous_recall) * precision;
        previous_recall = recall;
        start = end;
    }
    Ok(ap)
}

/// Scores for the next-event head on one split.
///
/// `probs` holds one row of `k` class probabilities per example (row-major, `n * k`
/// values, each row summing to 1 within [`ROW_SUM_TOLERANCE`], as a softmax in `f32`
/// gives); `labels` are class ids
/// below `k`. The predicted class is the most probable one, the lower id on ties.
///
/// # Errors
/// `k` below 2 (`k`), no examples (`labels`), a length other than `n * k` or a row that
/// does not sum to 1 (`probs`), a value that is not a probability (`probs[i]`), or a
/// label of `k` or more (`labels[i]`).
pub fn multi_report(probs: &[f64], k: usize, labels: &[u32]) -> Result<MultiReport, EvalError> {
    if k < 2 {
        return Err(EvalError::new(
            "k",
            format!("must be at least 2 classes, got {k}"),
        ));
    }
    if labels.is_empty() {
        return Err(EvalError::new("labels", "must not be empty"));
    }
    let n = labels.len();
    if probs.len() != n * k {
        return Err(EvalError::new(
            "probs",
            format!(
                "has {} values; expected n × k = {n} × {k} = {}",
                probs.len(),
                n * k
            ),
        ));
    }
    if let Some(i) = probs
        .iter()
        .position(|p| !p.is_finite() || !(0.0..=1.0 + ROW_SUM_TOLERANCE).contains(p))
    {
        return Err(EvalError::new(
            format!("probs[{i}]"),
            format!("must be a probability between 0 and 1, got {}", probs[i]),
        ));
    }
    if let Some(i) = labels.iter().position(|&y| y as usize >= k) {
        return Err(EvalError::new(
            format!("labels[{i}]"),
            format!("is class {}, but there are only {k} classes", labels[i]),
        ));
    }

    let mut true_positive = vec![0usize; k];
    let mut predicted = vec![0usize; k];
    let mut support = vec![0usize; k];
    let mut nll = 0.0;
    for (i, (row, &label)) in probs.chunks_exact(k).zip(labels).enumerate() {
        let sum: f64 = row.iter().sum();
        if (sum - 1.0).abs() > ROW_SUM_TOLERANCE {
            return Err(EvalError::new(
                "probs",
                format!("row {i} sums to {sum}; each row must be class probabilities summing to 1"),
            ));
        }
        let label = label as usize;
        let mut best = 0;
        for (c, &p) in row.iter().enumerate() {
            if p > row[best] {
                best = c;
            }
        }
        predicted[best] += 1;
        support[label] += 1;
        if best == label {
            true_positive[label] += 1;
        }
        nll -= clip(row[label] / sum).ln();
    }

    let per_class: Vec<ClassStats> = (0..k)
        .map(|c| {
            let precision = ratio(true_positive[c], predicted[c]);
            let recall = ratio(true_positive[c], support[c]);
            ClassStats {
                precision,
                recall,
                f1: harmonic(precision, recall),
                support: support[c],
            }
        })
        .collect();
    let occurring: Vec<f64> = per_class
        .iter()
        .zip(&predicted)
        .filter(|(stats, pred)| stats.support > 0 || **pred > 0)
        .map(|(stats, _)| stats.f1)
        .collect();
    let correct: usize = true_positive.iter().sum();
    Ok(MultiReport {
        n,
        accuracy: ratio(correct, n),
        macro_f1: occurring.iter().sum::<f64>() / occurring.len().max(1) as f64,
        per_class,
        log_loss: nll / n as f64,
    })
}

/// Baseline purchase scores: every one of the `n` examples gets the training positive
/// rate (labels other than 1 count as negative). Its ROC AUC is 0.5 and its log loss is
/// the entropy of the training rate. With no training labels the rate is taken as 0.5.
pub fn majority_binary(train_labels: &[u8], n: usize) -> Vec<f64> {
    let rate = if train_labels.is_empty() {
        0.5
    } else {
        train_labels.iter().filter(|&&y| y == 1).count() as f64 / train_labels.len() as f64
    };
    vec![rate; n]
}

/// Baseline next-event probabilities: the `n` rows (`n * k` values, row-major) all hold
/// the training class frequencies, add-one smoothed, `(count + 1) / (total + k)`, so a
/// class never seen in training still gets a small probability rather than an infinite
/// log loss. Its most probable class is the training majority class. Labels of `k` or
/// more are ignored; with no training labels the rows are uniform.
pub fn majority_class(train_labels: &[u32], k: usize, n: usize) -> Vec<f64> {
    if k == 0 {
        return Vec::new();
    }
    let mut counts = vec![0usize; k];
    for &y in train_labels {
        if let Some(count) = counts.get_mut(y as usize) {
            *count += 1;
        }
    }
    let total: usize = counts.iter().sum();
    let row: Vec<f64> = counts
        .iter()
        .map(|&c| (c + 1) as f64 / (total + k) as f64)
        .collect();
    let mut out = Vec::with_capacity(n * k);
    for _ in 0..n {
        out.extend_from_slice(&row);
    }
    out
}

/// A fitted logistic regression on standardised features: the probability for a raw
/// feature vector `x` is `sigmoid(bias + sum_j weights[j] * (x[j] - mean[j]) / std[j])`.
/// Saved beside the sequence model as its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// One weight per standardised feature.
    pub weights: Vec<f64>,
    pub bias: f64,
    /// Training mean of each raw feature.
    pub mean: Vec<f64>,
    /// Training standard deviation of each raw feature (1 for a constant feature).
    pub std: Vec<f64>,
}

impl Logistic {
    /// Probability of a positive for one raw (unstandardised) feature vector, which
    /// should have as many features as the model was fitted on; extra values are
    /// ignored and missing ones count as the training mean.
    pub fn predict(&self, x: &[f64]) -> f64 {
        let z = self.bias
            + self
                .weights
                .iter()
                .zip(&self.mean)
                .zip(&self.std)
                .zip(x)
                .map(|(((w, m), s), v)| w * (v - m) / s)
                .sum::<f64>();
        sigmoid(z)
    }
}

/// Fits a logistic regression by Newton's method (iteratively reweighted least squares)
/// with a backtracking line search, on features standardised to mean 0 and standard
/// deviation 1. Deterministic: the same data gives the same model.
///
/// It minimises the mean weighted log loss plus `l2 / 2 * |weights|^2` (the bias is not
/// penalised; `l2 = 0` is plain maximum likelihood). Positive examples weigh
/// `class_weight_pos` and negatives 1, so `class_weight_pos = negatives / positives`
/// balances the classes (and raises the predicted odds by that factor).
///
/// # Errors
/// Empty input or rows of different or zero length (`x`, `x[i]`), a non-finite feature
/// (`x[i]`), a length mismatch, a label other than 0 or 1, or only one class (`y`,
/// `y[i]`), a negative or non-finite `l2` (`l2`), a weight that is not positive
/// (`class_weight_pos`), or a fit that does not converge (`x`).
pub fn fit_logistic<R: AsRef<[f64]>>(
    x: &[R],
    y: &[u8],
    l2: f64,
    class_weight_pos: f64,
) -> Result<Logistic, EvalError> {
    let (_, d) = check_design(x, y)?;
    if !l2.is_finite() || l2 < 0.0 {
        return Err(EvalError::new(
            "l2",
            format!("must be a non-negative number, got {l2}"),
        ));
    }
    if !class_weight_pos.is_finite() || class_weight_pos <= 0.0 {
        return Err(EvalError::new(
            "class_weight_pos",
            format!("must be a positive number, got {class_weight_pos}"),
        ));
    }

    // Standardise.
    let (mean, std) = crate::domain::columns::mean_and_sd(x, 1e-12);
    // Design rows with a leading 1 for the bias.
    let rows: Vec<Vec<f64>> = x
        .iter()
        .map(|row| {
            std::iter::once(1.0)
                .chain(
                    row.as_ref()
                        .iter()
                        .zip(&mean)
                        .zip(&std)
                        .map(|((v, m), s)| (v - m) / s),
                )
                .collect()
        })
        .collect();
    let sample_weight: Vec<f64> = y
        .iter()
        .map(|&label| if label == 1 { class_weight_pos } else { 1.0 })
        .collect();
    let targets: Vec<f64> = y.iter().map(|&label| f64::from(label)).collect();
    let problem = Problem {
        rows: &rows,
        targets: &targets,
        weights: &sample_weight,
        l2,
    };

    let dim = d + 1;
    let mut theta = vec![0.0; dim];
    let mut loss = problem.loss(&theta);
    let mut converged = false;
    for _ in 0..MAX_NEWTON_ITERATIONS {
        let (gradient, hessian) = problem.gradient_hessian(&theta);
        if gradient.iter().all(|g| g.abs() < GRADIENT_TOLERANCE) {
            converged = true;
            break;
        }
        let Some(step) = solve(hessian, &gradient) else {
            break;
        };
        let slope: f64 = gradient.iter().zip(&step).map(|(g, s)| g * s).sum();
        let mut scale = 1.0;
        let mut accepted = false;
        while scale > 1e-12 {
            let candidate: Vec<f64> = theta
                .iter()
                .zip(&step)
                .map(|(t, s)| t - scale * s)
                .collect();
            let candidate_loss = problem.loss(&candidate);
            if candidate_loss.is_finite() && candidate_loss <= loss - 1e-4 * scale * slope {
                theta = candidate;
                loss = candidate_loss;
                accepted = true;
                break;
            }
            scale /= 2.0;
        }
        if !accepted {
            // No further decrease is representable: this is the optimum to float precision.
            break;
        }
    }
    if !converged {
        let (gradient, _) = problem.gradient_hessian(&theta);
        converged = gradient.iter().all(|g| g.abs() < ACCEPTABLE_GRADIENT);
    }
    if !converged || theta.iter().any(|t| !t.is_finite()) {
        return Err(EvalError::new(
            "x",
            "the logistic regression did not converge; the classes may be perfectly separable (use a positive l2)",
        ));
    }
    Ok(Logistic {
        bias: theta[0],
        weights: theta[1..].to_vec(),
        mean,
        std,
    })
}

/// The penalised, weighted log-loss objective of [`fit_logistic`].
struct Problem<'a> {
    rows: &'a [Vec<f64>],
    targets: &'a [f64],
    weights: &'a [f64],
    l2: f64,
}

impl Problem<'_> {
    fn n(&self) -> f64 {
        self.rows.len() as f64
    }

    fn loss(&self, theta: &[f64]) -> f64 {
        let data: f64 = self
            .rows
            .iter()
            .zip(self.targets)
            .zip(self.weights)
            .map(|((row, y), w)| {
                let z = dot(row, theta);
                w * (softplus(z) - y * z)
            })
            .sum();
        data / self.n() + 0.5 * self.l2 * theta[1..].iter().map(|t| t * t).sum::<f64>()
    }

    fn gradient_hessian(&self, theta: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
        let dim = theta.len();
        let mut gradient = vec![0.0; dim];
        let mut hessian = vec![vec![0.0; dim]; dim];
        for ((row, y), w) in self.rows.iter().zip(self.targets).zip(self.weights) {
            let p = sigmoid(dot(row, theta));
            let residual = w * (p - y);
            let curvature = w * p * (1.0 - p);
            for (g, &ra) in gradient.iter_mut().zip(row) {
                *g += residual * ra;
            }
            for (h_row, &ra) in hessian.iter_mut().zip(row) {
                for (h, &rb) in h_row.iter_mut().zip(row) {
                    *h += curvature * ra * rb;
                }
            }
        }
        let n = self.n();
        for g in &mut gradient {
            *g /= n;
        }
        for (a, h_row) in hessian.iter_mut().enumerate() {
            for h in h_row.iter_mut() {
                *h /= n;
            }
            if a > 0 {
                gradient[a] += self.l2 * theta[a];
                h_row[a] += self.l2;
            }
            // A tiny ridge keeps the system solvable when the data is flat in some
            // direction; it changes the path, not the point where the gradient is 0.
            h_row[a] += 1e-10;
        }
        (gradient, hessian)
    }
}

/// Solves `a x = b` by Gaussian elimination with partial pivoting; `None` when singular.
fn solve(mut a: Vec<Vec<f64>>, b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut b = b.to_vec();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-300 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let (top, bottom) = a.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for (offset, target) in bottom.iter_mut().enumerate() {
            let factor = target[col] / pivot_row[col];
            if factor != 0.0 {
                for (t, p) in target[col..].iter_mut().zip(&pivot_row[col..]) {
                    *t -= factor * p;
                }
                b[col + 1 + offset] -= factor * b[col];
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let tail: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

/// Checks a design matrix and its labels; returns `(rows, features)`.
fn check_design<R: AsRef<[f64]>>(x: &[R], y: &[u8]) -> Result<(usize, usize), EvalError> {
    let Some(first) = x.first() else {
        return Err(EvalError::new("x", "must not be empty"));
    };
    let d = first.as_ref().len();
    if d == 0 {
        return Err(EvalError::new("x[0]", "must have at least one feature"));
    }
    for (i, row) in x.iter().enumerate() {
        let row = row.as_ref();
        if row.len() != d {
            return Err(EvalError::new(
                format!("x[{i}]"),
                format!("has {} features, but x[0] has {d}", row.len()),
            ));
        }
        if row.iter().any(|v| !v.is_finite()) {
            return Err(EvalError::new(
                format!("x[{i}]"),
                "must hold finite numbers only",
            ));
        }
    }
    if y.len() != x.len() {
        return Err(EvalError::new(
            "y",
            format!("has {} labels, but x has {} rows", y.len(), x.len()),
        ));
    }
    if let Some(i) = y.iter().position(|&label| label > 1) {
        return Err(EvalError::new(
            format!("y[{i}]"),
            format!("must be 0 or 1, got {}", y[i]),
        ));
    }
    let positives = y.iter().filter(|&&label| label == 1).count();
    if positives == 0 || positives == y.len() {
        return Err(EvalError::new(
            "y",
            format!(
                "has {positives} positive and {} negative labels; both classes are needed to fit a model",
                y.len() - positives
            ),
        ));
    }
    Ok((x.len(), d))
}

/// Checks binary scores and labels; returns the number of positives.
fn check_binary(scores: &[f64], labels: &[u8], probabilities: bool) -> Result<usize, EvalError> {
    if scores.len() != labels.len() {
        return Err(EvalError::new(
            "labels",
            format!(
                "has {} values, but scores has {}",
                labels.len(),
                scores.len()
            ),
        ));
    }
    if scores.is_empty() {
        return Err(EvalError::new("scores", "must not be empty"));
    }
    for (i, &s) in scores.iter().enumerate() {
        if !s.is_finite() {
            return Err(EvalError::new(
                format!("scores[{i}]"),
                format!("must be a finite number, got {s}"),
            ));
        }
        if probabilities && !(0.0..=1.0).contains(&s) {
            return Err(EvalError::new(
                format!("scores[{i}]"),
                format!("must be a probability between 0 and 1, got {s}"),
            ));
        }
    }
    if let Some(i) = labels.iter().position(|&y| y > 1) {
        return Err(EvalError::new(
            format!("labels[{i}]"),
            format!("must be 0 or 1, got {}", labels[i]),
        ));
    }
    Ok(labels.iter().filter(|&&y| y == 1).count())
}

fn one_class(positives: usize, negatives: usize, metric: &str) -> EvalError {
    EvalError::new(
        "labels",
        format!(
            "has {positives} positive and {negatives} negative examples; {metric} is undefined unless both classes are present"
        ),
    )
}

/// `num / den`, or 0 when `den` is 0.
fn ratio(num: usize, den: usize) -> f64 {
    if den == 0 {
        0.0
    } else {
        num as f64 / den as f64
    }
}

/// Harmonic mean of two rates, 0 when both are 0.
fn harmonic(a: f64, b: f64) -> f64 {
    if a + b > 0.0 {
        2.0 * a * b / (a + b)
    } else {
        0.0
    }
}

fn clip(p: f64) -> f64 {
    p.clamp(PROBABILITY_EPS, 1.0 - PROBABILITY_EPS)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// `ln(1 + e^z)` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn close(actual: f64, expected: f64, tolerance: f64) -> bool {
        (actual - expected).abs() <= tolerance
    }

    fn assert_close(actual: f64, expected: f64, tolerance: f64, what: &str) {
        assert!(
            close(actual, expected, tolerance),
            "{what}: got {actual}, expected {expected} (±{tolerance})"
        );
    }

    /// Deterministic pseudo-random numbers in [0, 1) for synthetic data.
    struct Lcg(u64);

    impl Lcg {
        fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    #[test]
    fn roc_auc_matches_the_scikit_learn_example() -> TestResult {
        // sklearn.metrics.roc_auc_score docs: y = [0, 0, 1, 1], scores = [0.1, 0.4, 0.35, 0.8].
        let auc = roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1])?;
        assert_close(auc, 0.75, 1e-12, "auc");
        Ok(())
    }

    #[test]
    fn roc_auc_gives_ties_half_credit() -> TestResult {
        assert_close(
            roc_auc(&[0.3; 6], &[0, 1, 0, 1, 1, 0])?,
            0.5,
            1e-12,
            "all tied",
        );
        // Pairs (pos, neg): 0.5 vs 0.5 tie (0.5), 0.5 vs 0.2 win, 0.9 vs both win -> 3.5 / 4.
        let auc = roc_auc(&[0.5, 0.9, 0.5, 0.2], &[1, 1, 0, 0])?;
        assert_close(auc, 3.5 / 4.0, 1e-12, "one tie");
        assert_close(roc_auc(&[0.9, 0.1], &[0, 1])?, 0.0, 1e-12, "inverted");
        Ok(())
    }

    #[test]
    fn roc_auc_refuses_a_single_class() {
        let err = roc_auc(&[0.1, 0.2], &[1, 1]).err();
        assert_eq!(err.as_ref().map(|e| e.field.as_str()), Some("labels"));
        assert!(
            err.is_some_and(|e| e.message.contains("2 positive and 0 negative")),
            "message should state the counts"
        );
    }

    #[test]
    fn average_precision_matches_the_scikit_learn_example() -> TestResult {
        // sklearn.metrics.average_precision_score docs: 0.83 (= 1/2 * 1 + 1/2 * 2/3).
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1])?;
        assert_close(ap, 0.5 + 0.5 * 2.0 / 3.0, 1e-12, "ap");
        Ok(())
    }

    #[test]
    fn average_precision_groups_tied_scores() -> TestResult {
        // All tied: one threshold, precision = positive rate, recall 1.
        assert_close(
            average_precision(&[0.5; 4], &[1, 0, 0, 0])?,
            0.25,
            1e-12,
            "all tied",
        );
        // Scores 0.9 (pos), 0.6 (pos, neg tied), 0.1 (neg): thresholds give
        // (R, P) = (1/2, 1), (1, 2/3), (1, 1/2) -> 1/2 * 1 + 1/2 * 2/3.
        let ap = average_precision(&[0.9, 0.6, 0.6, 0.1], &[1, 0, 1, 0])?;
        assert_close(ap, 0.5 + 1.0 / 3.0, 1e-12, "tie group");
        let err = average_precision(&[0.4, 0.6], &[0, 0]).err();
        assert_eq!(err.map(|e| e.field), Some("labels".to_owned()));
        Ok(())
    }

    #[test]
    fn binary_report_hand_computed() -> TestResult {
        let scores = [0.9, 0.2, 0.6, 0.4];
        let labels = [1, 0, 0, 1];
        let report = binary_report(&scores, &labels, 0.5)?;
        assert_eq!(report.n, 4);
        assert_eq!(report.positives, 2);
        // Predicted positive: 0.9 (tp), 0.6 (fp); negative: 0.2 (tn), 0.4 (fn).
        assert_close(report.accuracy, 0.5, 1e-12, "accuracy");
        assert_close(report.precision, 0.5, 1e-12, "precision");
        assert_close(report.recall, 0.5, 1e-12, "recall");
        assert_close(report.f1, 0.5, 1e-12, "f1");
        // Brier: (0.01 + 0.04 + 0.36 + 0.36) / 4.
        assert_close(report.brier, 0.77 / 4.0, 1e-12, "brier");
        let log_loss = -(0.9f64.ln() + 0.8f64.ln() + 0.4f64.ln() + 0.4f64.ln()) / 4.0;
        assert_close(report.log_loss, log_loss, 1e-12, "log loss");
        // Positive/negative pairs: 0.9 beats both, 0.4 beats 0.2 only -> 3 / 4.
        assert_close(report.roc_auc, 0.75, 1e-12, "auc");
        // Ranked 0.9 (pos), 0.6, 0.4 (pos): 1/2 * 1 + 1/2 * 2/3.
        assert_close(report.pr_auc, 0.5 + 1.0 / 3.0, 1e-12, "ap");
        assert_eq!(report.reliability.len(), RELIABILITY_BINS);
        let total: usize = report.reliability.iter().map(|b| b.count).sum();
        assert_eq!(total, report.n);
        let bin = &report.reliability[9];
        assert_eq!(bin.count, 1);
        assert_close(bin.mean_predicted, 0.9, 1e-12, "bin 9 mean");
        assert_close(bin.observed_rate, 1.0, 1e-12, "bin 9 rate");
        assert_eq!(report.reliability[5].count, 0);
        Ok(())
    }

    #[test]
    fn binary_report_conventions_for_empty_predictions_and_edges() -> TestResult {
        // A score equal to the threshold counts as predicted positive.
        let report = binary_report(&[0.0, 0.3, 0.7, 1.0], &[0, 1, 0, 1], 1.0)?;
        assert_close(report.precision, 1.0, 1e-12, "only 1.0 predicted positive");
        // Nothing predicted positive: precision and F1 are 0.
        let report = binary_report(&[0.0, 0.3, 0.7, 0.99], &[0, 1, 0, 1], 1.0)?;
        assert_close(report.precision, 0.0, 1e-12, "precision");
        assert_close(report.f1, 0.0, 1e-12, "f1");
        // 0.0 lands in the first bin, 1.0 in the last; confident mistakes are clipped.
        let report = binary_report(&[0.0, 1.0, 1.0], &[1, 0, 1], 0.5)?;
        assert_eq!(report.reliability[0].count, 1);
        assert_eq!(report.reliability[9].count, 2);
        assert!(report.log_loss.is_finite());
        let expected = -(clip(0.0).ln() + (1.0 - clip(1.0)).ln() + clip(1.0).ln()) / 3.0;
        assert_close(report.log_loss, expected, 1e-12, "clipped log loss");
        assert!(report.log_loss > 20.0);
        let total: usize = report.reliability.iter().map(|b| b.count).sum();
        assert_eq!(total, 3);
        Ok(())
    }

    #[test]
    fn binary_report_names_the_field_at_fault() {
        let field = |r: Result<BinaryReport, EvalError>| r.err().map(|e| e.field);
        assert_eq!(
            field(binary_report(&[0.1], &[0, 1], 0.5)),
            Some("labels".into())
        );
        assert_eq!(field(binary_report(&[], &[], 0.5)), Some("scores".into()));
        assert_eq!(
            field(binary_report(&[0.1, 1.5], &[0, 1], 0.5)),
            Some("scores[1]".into())
        );
        assert_eq!(
            field(binary_report(&[0.1, f64::NAN], &[0, 1], 0.5)),
            Some("scores[1]".into())
        );
        assert_eq!(
            field(binary_report(&[0.1, 0.5], &[0, 2], 0.5)),
            Some("labels[1]".into())
        );
        assert_eq!(
            field(binary_report(&[0.1, 0.5], &[0, 1], 1.5)),
            Some("threshold".into())
        );
        assert_eq!(
            field(binary_report(&[0.1, 0.5], &[0, 0], 0.5)),
            Some("labels".into())
        );
    }

    #[test]
    fn multi_report_hand_computed_three_classes() -> TestResult {
        // Labels and argmax predictions:
        //   y: 0 0 0 1 1 2
        //   p: 0 0 1 1 2 2
        // Class 0: tp 2, predicted 2, support 3 -> P 1, R 2/3, F1 0.8
        // Class 1: tp 1, predicted 2, support 2 -> P 1/2, R 1/2, F1 1/2
        // Class 2: tp 1, predicted 2, support 1 -> P 1/2, R 1, F1 2/3
        let probs = [
            0.7, 0.2, 0.1, //
            0.5, 0.3, 0.2, //
            0.2, 0.6, 0.2, //
            0.1, 0.8, 0.1, //
            0.1, 0.3, 0.6, //
            0.2, 0.2, 0.6, //
        ];
        let labels = [0, 0, 0, 1, 1, 2];
        let report = multi_report(&probs, 3, &labels)?;
        assert_eq!(report.n, 6);
        assert_close(report.accuracy, 4.0 / 6.0, 1e-12, "accuracy");
        let expected = [
            (1.0, 2.0 / 3.0, 0.8, 3),
            (0.5, 0.5, 0.5, 2),
            (0.5, 1.0, 2.0 / 3.0, 1),
        ];
        for (stats, (p, r, f1, support)) in report.per_class.iter().zip(expected) {
            assert_close(stats.precision, p, 1e-12, "precision");
            assert_close(stats.recall, r, 1e-12, "recall");
            assert_close(stats.f1, f1, 1e-12, "f1");
            assert_eq!(stats.support, support);
        }
        assert_close(
            report.macro_f1,
            (0.8 + 0.5 + 2.0 / 3.0) / 3.0,
            1e-12,
            "macro f1",
        );
        let log_loss =
            -(0.7f64.ln() + 0.5f64.ln() + 0.2f64.ln() + 0.8f64.ln() + 0.3f64.ln() + 0.6f64.ln())
                / 6.0;
        assert_close(report.log_loss, log_loss, 1e-12, "log loss");
        Ok(())
    }

    #[test]
    fn multi_report_leaves_absent_classes_out_of_macro_f1() -> TestResult {
        // Class 1 is never a label nor a prediction; classes 0 and 2 are perfect.
        let probs = [0.9, 0.05, 0.05, 0.1, 0.1, 0.8];
        let report = multi_report(&probs, 3, &[0, 2])?;
        assert_close(report.macro_f1, 1.0, 1e-12, "macro f1");
        assert_eq!(report.per_class[1].support, 0);
        assert_close(report.per_class[1].f1, 0.0, 1e-12, "absent f1");
        Ok(())
    }

    #[test]
    fn multi_report_names_the_field_at_fault() {
        let field = |r: Result<MultiReport, EvalError>| r.err().map(|e| e.field);
        assert_eq!(field(multi_report(&[1.0], 1, &[0])), Some("k".into()));
        assert_eq!(field(multi_report(&[], 2, &[])), Some("labels".into()));
        assert_eq!(
            field(multi_report(&[0.5, 0.5, 1.0], 2, &[0, 1])),
            Some("probs".into())
        );
        assert_eq!(
            field(multi_report(&[0.5, 0.5, -0.1, 1.1], 2, &[0, 1])),
            Some("probs[2]".into())
        );
        assert_eq!(
            field(multi_report(&[0.5, 0.5, 0.3, 0.3], 2, &[0, 1])),
            Some("probs".into())
        );
        assert_eq!(
            field(multi_report(&[0.5, 0.5, 0.5, 0.5], 2, &[0, 2])),
            Some("labels[1]".into())
        );
    }

    #[test]
    fn majority_baselines_use_training_frequencies() -> TestResult {
        let scores = majority_binary(&[1, 0, 0, 0], 3);
        assert_eq!(scores, vec![0.25; 3]);
        // A constant score has AUC exactly 0.5.
        assert_close(roc_auc(&scores, &[1, 0, 1])?, 0.5, 1e-12, "auc");
        assert_eq!(majority_binary(&[], 2), vec![0.5; 2]);

        // Counts [3, 0, 1] over k = 3, add-one smoothed: [4, 1, 2] / 7.
        let probs = majority_class(&[0, 0, 2, 0, 9], 3, 2);
        let row = [4.0 / 7.0, 1.0 / 7.0, 2.0 / 7.0];
        assert_eq!(probs.len(), 6);
        for (p, e) in probs.iter().zip(row.iter().chain(&row)) {
            assert_close(*p, *e, 1e-12, "class frequency");
        }
        let report = multi_report(&probs, 3, &[0, 1])?;
        assert_close(report.accuracy, 0.5, 1e-12, "majority accuracy");
        assert_eq!(majority_class(&[], 4, 1), vec![0.25; 4]);
        Ok(())
    }

    #[test]
    fn logistic_matches_the_closed_form_for_one_binary_feature() -> TestResult {
        // Group x = 0: 3 of 10 positive; group x = 1: 15 of 20 positive. Without a
        // penalty the maximum-likelihood fit predicts the observed rate in each group.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..10 {
            x.push([0.0]);
            y.push(u8::from(i < 3));
        }
        for i in 0..20 {
            x.push([1.0]);
            y.push(u8::from(i < 15));
        }
        let model = fit_logistic(&x, &y, 0.0, 1.0)?;
        assert_close(model.predict(&[0.0]), 0.3, 1e-9, "p(x = 0)");
        assert_close(model.predict(&[1.0]), 0.75, 1e-9, "p(x = 1)");

        // Weighting positives by w multiplies the fitted odds by w in each group.
        let weighted = fit_logistic(&x, &y, 0.0, 2.0)?;
        let odds = |p: f64| p / (1.0 - p);
        assert_close(
            odds(weighted.predict(&[0.0])),
            2.0 * odds(0.3),
            1e-8,
            "weighted odds x = 0",
        );
        assert_close(
            odds(weighted.predict(&[1.0])),
            2.0 * odds(0.75),
            1e-8,
            "weighted odds x = 1",
        );

        // A penalty shrinks the weight towards 0, pulling the groups together.
        let shrunk = fit_logistic(&x, &y, 1.0, 1.0)?;
        let gap = shrunk.predict(&[1.0]) - shrunk.predict(&[0.0]);
        assert!(gap > 0.0 && gap < 0.45, "penalised gap {gap}");
        Ok(())
    }

    #[test]
    fn logistic_recovers_the_direction_on_noisy_data() -> TestResult {
        let mut rng = Lcg(7);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..600 {
            let signal = rng.unit() * 4.0 - 2.0;
            let noise = rng.unit() * 10.0;
            let against = rng.unit() * 2.0 - 1.0;
            // True model: logit = 2 * signal - 1.5 * against, + a constant feature.
            let p = sigmoid(2.0 * signal - 1.5 * against);
            y.push(u8::from(rng.unit() < p));
            x.push(vec![signal, noise, against, 3.0]);
        }
        let model = fit_logistic(&x, &y, 1e-3, 1.0)?;
        let raw: Vec<f64> = model
            .weights
            .iter()
            .zip(&model.std)
            .map(|(w, s)| w / s)
            .collect();
        assert!(raw[0] > 1.0, "signal weight {}", raw[0]);
        assert!(raw[2] < -0.5, "opposing weight {}", raw[2]);
        assert!(raw[1].abs() < 0.2, "noise weight {}", raw[1]);
        assert_close(model.weights[3], 0.0, 1e-9, "constant feature");
        assert_close(model.std[3], 1.0, 0.0, "constant feature std");
        let scores: Vec<f64> = x.iter().map(|row| model.predict(row)).collect();
        assert!(roc_auc(&scores, &y)? > 0.8);

        // Deterministic.
        assert_eq!(fit_logistic(&x, &y, 1e-3, 1.0)?, model);
        // Works on fixed-size rows as well.
        let fixed: Vec<[f64; 4]> = x.iter().map(|r| [r[0], r[1], r[2], r[3]]).collect();
        assert_eq!(fit_logistic(&fixed, &y, 1e-3, 1.0)?, model);
        Ok(())
    }

    #[test]
    fn logistic_on_separable_classes() -> TestResult {
        let x = [[0.0], [1.0], [2.0], [3.0]];
        let y = [0, 0, 1, 1];
        // A penalty keeps the weight finite and the ranking right.
        let model = fit_logistic(&x, &y, 0.1, 1.0)?;
        assert!(model.predict(&[3.0]) > 0.5 && model.predict(&[0.0]) < 0.5);
        // Without one the likelihood keeps improving as the weight grows; the fit
        // either stops on a near-zero gradient with a steep, correct model or says so.
        match fit_logistic(&x, &y, 0.0, 1.0) {
            Ok(model) => {
                assert!(model.predict(&[2.0]) > 0.99 && model.predict(&[1.0]) < 0.01);
            }
            Err(err) => assert_eq!(err.field, "x"),
        }
        Ok(())
    }

    #[test]
    fn logistic_names_the_field_at_fault() {
        let field = |r: Result<Logistic, EvalError>| r.err().map(|e| e.field);
        let x = [[0.0], [1.0]];
        let empty: [[f64; 1]; 0] = [];
        assert_eq!(field(fit_logistic(&empty, &[], 0.0, 1.0)), Some("x".into()));
        assert_eq!(
            field(fit_logistic(
                &[vec![0.0], vec![1.0, 2.0]],
                &[0, 1],
                0.0,
                1.0
            )),
            Some("x[1]".into())
        );
        assert_eq!(
            field(fit_logistic(&[[0.0], [f64::INFINITY]], &[0, 1], 0.0, 1.0)),
            Some("x[1]".into())
        );
        assert_eq!(field(fit_logistic(&x, &[0], 0.0, 1.0)), Some("y".into()));
        assert_eq!(
            field(fit_logistic(&x, &[0, 3], 0.0, 1.0)),
            Some("y[1]".into())
        );
        assert_eq!(field(fit_logistic(&x, &[1, 1], 0.0, 1.0)), Some("y".into()));
        assert_eq!(
            field(fit_logistic(&x, &[0, 1], -1.0, 1.0)),
            Some("l2".into())
        );
        assert_eq!(
            field(fit_logistic(&x, &[0, 1], 0.0, 0.0)),
            Some("class_weight_pos".into())
        );
    }

    #[test]
    fn logistic_serialises_for_saving_beside_the_model() -> TestResult {
        let model = fit_logistic(&[[0.0], [1.0], [1.0], [0.0]], &[0, 1, 0, 1], 0.1, 1.0)?;
        let json = serde_json::to_string(&model)?;
        let back: Logistic = serde_json::from_str(&json)?;
        assert_eq!(back, model);
        Ok(())
    }
}
