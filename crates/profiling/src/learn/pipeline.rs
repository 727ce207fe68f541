//! From a tenant's events to an evaluated model: dataset, training, test-window report
//! against the baselines.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::json;

use super::{
    model::{Hyper, Task},
    train::{EpochReport, Examples, fit, predict},
};
use crate::domain::sequence::{
    dataset::{self, Dataset, DatasetConfig, DatasetError, EventRecord, Features, RFM_LEN},
    evaluation::{
        self, BinaryReport, MultiReport, binary_report, fit_logistic, majority_binary,
        majority_class, multi_report,
    },
};

/// Size cap of the token vocabulary (padding and unknown included).
pub const MAX_VOCAB: usize = 2000;
/// Spacing of cut-off dates within each period.
pub const STRIDE_DAYS: i64 = 7;

#[derive(Debug)]
pub enum TrainError {
    /// The data cannot train a model (too little of it, bad settings): the caller's fault.
    Data(DatasetError),
    Internal(String),
}

impl From<DatasetError> for TrainError {
    fn from(e: DatasetError) -> Self {
        TrainError::Data(e)
    }
}

impl From<evaluation::EvalError> for TrainError {
    fn from(e: evaluation::EvalError) -> Self {
        TrainError::Internal(e.to_string())
    }
}

/// Periods ending at the last event: test = the last `2 x horizon` days, validation the
/// `2 x horizon` before, training everything earlier.
pub fn default_window(
    last_event: DateTime<Utc>,
    horizon_days: i64,
) -> (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) {
    let test_end = last_event + Duration::seconds(1);
    let valid_end = test_end - Duration::days(2 * horizon_days);
    let train_end = valid_end - Duration::days(2 * horizon_days);
    (train_end, valid_end, test_end)
}

pub fn config(
    hyper: &Hyper,
    horizon_days: i64,
    window: (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
) -> DatasetConfig {
    DatasetConfig {
        seq_len: hyper.seq_len,
        horizon_days,
        max_vocab: MAX_VOCAB,
        train_end: window.0,
        valid_end: window.1,
        test_end: window.2,
        stride_days: STRIDE_DAYS,
    }
}

/// Builds the dataset and refuses one with fewer than `min_positive` positive (or
/// negative) training examples.
pub fn dataset(
    events: &[EventRecord],
    config: &DatasetConfig,
    min_positive: usize,
) -> Result<Dataset, TrainError> {
    let d = dataset::build(events, config)?;
    dataset::minimum_check(&d, min_positive)?;
    Ok(d)
}

/// The test-window evaluation of a model and its baselines.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Evaluation {
    Purchase {
        model: Box<BinaryReport>,
        logistic_rfm: Box<BinaryReport>,
        majority: Box<BinaryReport>,
    },
    NextEvent {
        model: MultiReport,
        majority: MultiReport,
    },
}

impl Evaluation {
    /// Whether the model beats every baseline on the headline metric (ROC AUC for the
    /// purchase task, macro-F1 for the next-event task).
    pub fn beats_baseline(&self) -> bool {
        match self {
            Evaluation::Purchase {
                model,
                logistic_rfm,
                majority,
            } => model.roc_auc > logistic_rfm.roc_auc && model.roc_auc > majority.roc_auc,
            Evaluation::NextEvent { model, majority } => model.macro_f1 > majority.macro_f1,
        }
    }
}

pub struct Outcome {
    pub weights: Vec<u8>,
    pub epochs: Vec<EpochReport>,
    pub best_epoch: usize,
    pub evaluation: Evaluation,
    pub dataset: Dataset,
}

/// Trains on the dataset's training split with early stopping on the validation split and
/// evaluates on the test split.
pub fn train(
    d: Dataset,
    hyper: &Hyper,
    task: Task,
    on_epoch: impl FnMut(&EpochReport) -> bool,
) -> Result<Outcome, TrainError> {
    let (positive_weight, class_weights) = d.class_weights(&d.train);
    let vocab = d.vocab.size();
    let classes = d.classes.len();
    let labels = |s: &dataset::Split| -> Vec<u32> {
        match task {
            Task::Purchase => s.purchase.iter().map(|&l| u32::from(l)).collect(),
            Task::NextEvent => s.next_event.clone(),
        }
    };
    let (outputs, weights): (usize, Vec<f32>) = match task {
        Task::Purchase => (1, vec![1.0, positive_weight as f32]),
        Task::NextEvent => (classes, class_weights.iter().map(|&w| w as f32).collect()),
    };
    let train_labels = labels(&d.train);
    let valid_labels = labels(&d.valid);
    let trained = fit(
        &Examples {
            tokens: &d.train.tokens,
            features: &d.train.features,
            labels: &train_labels,
        },
        &Examples {
            tokens: &d.valid.tokens,
            features: &d.valid.features,
            labels: &valid_labels,
        },
        vocab,
        outputs,
        &weights,
        hyper,
        task,
        on_epoch,
    )
    .map_err(TrainError::Internal)?;
    let scores = predict(
        &trained.weights,
        &d.test.tokens,
        &d.test.features,
        vocab,
        outputs,
        hyper,
        task,
    )
    .map_err(TrainError::Internal)?;
    let evaluation = match task {
        Task::Purchase => {
            // The baseline sees the leading RFM features only (predict ignores the rest).
            let rfm: Vec<&[f64]> = d.train.features.iter().map(|f| &f[..RFM_LEN]).collect();
            let logistic = fit_logistic(&rfm, &d.train.purchase, 1e-3, positive_weight)?;
            let lr: Vec<f64> = d
                .test
                .features
                .iter()
                .map(|x| logistic.predict(x))
                .collect();
            let majority = majority_binary(&d.train.purchase, d.test.len());
            // Threshold at the training base rate: the weighted loss centres scores there.
            let rate = d.train.positives() as f64 / d.train.len().max(1) as f64;
            let threshold = if positive_weight > 1.0 { 0.5 } else { rate };
            Evaluation::Purchase {
                model: Box::new(binary_report(&scores, &d.test.purchase, threshold)?),
                logistic_rfm: Box::new(binary_report(&lr, &d.test.purchase, threshold)?),
                majority: Box::new(binary_report(&majority, &d.test.purchase, threshold)?),
            }
        }
        Task::NextEvent => {
            let majority = majority_class(&d.train.next_event, classes, d.test.len());
            Evaluation::NextEvent {
                model: multi_report(&scores, classes, &d.test.next_event)?,
                majority: multi_report(&majority, classes, &d.test.next_event)?,
            }
        }
    };
    Ok(Outcome {
        weights: trained.weights,
        epochs: trained.epochs,
        best_epoch: trained.best_epoch,
        evaluation,
        dataset: d,
    })
}

/// The data window and counts, as stored with the model.
pub fn window_json(config: &DatasetConfig, d: &Dataset) -> serde_json::Value {
    json!({
        "train_end": config.train_end, "valid_end": config.valid_end, "test_end": config.test_end,
        "horizon_days": config.horizon_days, "stride_days": config.stride_days,
        "counts": d.counts(),
    })
}

/// A tenant's history as model input: events with dense customer indices, and the
/// customer id of each index.
pub fn records(rows: Vec<crate::db::models::HistoryRow>) -> (Vec<EventRecord>, Vec<uuid::Uuid>) {
    let mut customers: Vec<uuid::Uuid> = Vec::new();
    let mut events = Vec::with_capacity(rows.len());
    for r in rows {
        // Rows come ordered by customer, so a new id is always the next index.
        if customers.last() != Some(&r.customer_id) {
            customers.push(r.customer_id);
        }
        events.push(EventRecord {
            customer: (customers.len() - 1) as u64,
            kind: r.kind,
            category: r.category,
            channel: r.channel,
            at: r.at,
            price: r.price.filter(|p| p.is_finite() && *p >= 0.0),
        });
    }
    (events, customers)
}

/// Every customer's input at `at`: `customers x seq_len` tokens, row-major, and a row of
/// history features each, from events ordered by customer index (as [`records`] returns
/// them).
pub fn encode_customers(
    events: &[EventRecord],
    customers: usize,
    vocab: &dataset::Vocabulary,
    seq_len: usize,
    at: DateTime<Utc>,
) -> (Vec<u32>, Vec<Features>) {
    let mut tokens = Vec::with_capacity(customers * seq_len);
    let mut features = Vec::with_capacity(customers);
    let mut start = 0;
    for c in 0..customers {
        let end = start
            + events[start..]
                .iter()
                .take_while(|e| e.customer == c as u64)
                .count();
        let (window, history) = dataset::encode(&events[start..end], vocab, seq_len, at);
        tokens.extend(window);
        features.push(history);
        start = end;
    }
    (tokens, features)
}
