//! Training examples for a tenant's customer sequence model (Embedding -> LSTM -> Dense),
//! which predicts (a) whether a customer purchases within the next `horizon_days` and
//! (b) the type of their next event.
//!
//! **Tokens.** Every event becomes one token id that combines five features: the event
//! type, the product category, the channel (`"-"` when absent), the time since the
//! customer's previous event ([`GapBucket`]) and the price ([`PriceBucket`]). One
//! combined token per event feeds a single embedding table directly; the cost of that
//! simplicity is a larger vocabulary, which is why it is capped at `max_vocab` ids
//! (rarer tuples share the unknown id, so that id is also seen in training). The
//! [`Vocabulary`] maps feature tuples to ids: id 0 is padding, id 1 stands for any tuple
//! not in the vocabulary, and ids from 2 go to the tuples seen in training, most
//! frequent first.
//!
//! **Examples.** An example is a customer at a cut-off time `t`. Its input is the
//! customer's last `seq_len` events strictly before `t`, left-padded with 0; a customer
//! with no event before `t` gives no example. Its labels come from the events in
//! `[t, t + horizon)`: whether any of them is a purchase, and the class of the first one
//! (class 0, `"none"`, when there is none).
//!
//! **No leakage.** Training cut-offs satisfy `t + horizon <= train_end`, so neither inputs
//! nor labels of training examples see anything at or after `train_end`; the vocabulary
//! and the next-event classes are also built from events before `train_end` only.
//! Validation cut-offs lie in `[train_end, valid_end - horizon]` and test cut-offs in
//! `[valid_end, test_end - horizon]`; their inputs may reach back into earlier periods
//! (that is what a live prediction sees) but their labels stay inside their own period.
//! Cut-offs are `stride_days` apart, counted back from each period's last possible one.
//!
//! **Classes.** The next-event classes are `"none"` (0), `"other"` (1) and then the
//! event types seen before `train_end`, most frequent first, up to
//! [`MAX_EVENT_CLASSES`] in all. A type not among them (new after `train_end`, or too
//! rare) is labelled `"other"`.
//!
//! Rows are ordered by customer, then cut-off, so the same events always give the
//! same dataset whatever order they arrive in.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Token id of padding (positions before a customer's first event in the window).
pub const PAD: u32 = 0;
/// Token id of any feature tuple that is not in the vocabulary.
pub const UNKNOWN: u32 = 1;
/// Ids 0 and 1 are reserved; learned tuples start at this id.
pub const FIRST_TOKEN: u32 = 2;

/// The event type that counts as a purchase for the binary label and the RFM features.
pub const PURCHASE_KIND: &str = "purchase";
/// Stand-in for an absent category or channel in a token.
pub const MISSING: &str = "-";

/// Next-event class of an example with no event within the horizon.
pub const NONE_CLASS: u32 = 0;
/// Next-event class of an event type that is not one of the dataset's classes.
pub const OTHER_CLASS: u32 = 1;
/// Name of [`NONE_CLASS`].
pub const NONE_CLASS_NAME: &str = "none";
/// Name of [`OTHER_CLASS`].
pub const OTHER_CLASS_NAME: &str = "other";
/// At most this many next-event classes, `"none"` and `"other"` included.
pub const MAX_EVENT_CLASSES: usize = 32;

/// Names of the whole-history features in [`Split::features`], in order. All are
/// `ln(1 + v)`. The first [`RFM_LEN`] are the RFM features of the logistic baseline; the
/// sequence model's dense head sees them all beside the LSTM state, since a window of the
/// last events cannot show a long-run rate.
pub const FEATURES: [&str; 7] = [
    "log1p_days_since_last_purchase",
    "log1p_purchases",
    "log1p_purchase_value",
    "log1p_events",
    "log1p_days_since_first_event",
    "log1p_days_since_last_event",
    "log1p_active_days",
];
/// The RFM features (the baseline's) lead [`FEATURES`].
pub const RFM_LEN: usize = 4;
/// Number of [`FEATURES`].
pub const FEATURE_COUNT: usize = FEATURES.len();
/// One example's [`FEATURES`].
pub type Features = [f64; FEATURE_COUNT];
/// Days since the last purchase (or event) are capped here; a customer who never
/// purchased gets it.
pub const RECENCY_CAP_DAYS: f64 = 365.0;

/// A dataset may hold at most this many token positions (examples × `seq_len`, 256 MiB
/// of `u32`); settings that would give more are refused.
pub const MAX_TOKEN_CELLS: usize = 64 * 1024 * 1024;

/// Version of the saved vocabulary format.
pub const VOCABULARY_FORMAT: u32 = 1;

/// Invalid settings or events, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{field}: {message}")]
pub struct DatasetError {
    /// The setting or element at fault: `seq_len`, `valid_end`, `events[3].price`, ...
    pub field: String,
    /// What is wrong with it, in plain words.
    pub message: String,
}

impl DatasetError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// One event of a tenant's customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Dense customer index within the tenant.
    pub customer: u64,
    /// Event type: `view`, `click`, `add_to_cart`, `purchase`, `email_open`, ...
    pub kind: String,
    pub category: Option<String>,
    pub channel: Option<String>,
    pub at: DateTime<Utc>,
    /// Price or revenue; non-negative when present.
    pub price: Option<f64>,
}

/// Time since the customer's previous event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapBucket {
    /// The customer's first event.
    First,
    /// Under an hour (including events at the same instant).
    UnderHour,
    /// One hour to under a day.
    UnderDay,
    /// One day to under 7 days.
    UnderWeek,
    /// 7 days to under 30 days.
    UnderMonth,
    /// 30 days or more.
    MonthOrMore,
}

impl GapBucket {
    /// The bucket of the time since the previous event (`None` for the first event).
    pub fn of(gap: Option<TimeDelta>) -> Self {
        const HOUR: i64 = 3600;
        const DAY: i64 = 24 * HOUR;
        match gap.map(|g| g.num_seconds()) {
            None => Self::First,
            Some(s) if s < HOUR => Self::UnderHour,
            Some(s) if s < DAY => Self::UnderDay,
            Some(s) if s < 7 * DAY => Self::UnderWeek,
            Some(s) if s < 30 * DAY => Self::UnderMonth,
            Some(_) => Self::MonthOrMore,
        }
    }
}

/// Price on a roughly logarithmic scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PriceBucket {
    /// No price on the event.
    None,
    /// Under 10.
    Under10,
    /// 10 to under 30.
    Under30,
    /// 30 to under 100.
    Under100,
    /// 100 to under 300.
    Under300,
    /// 300 or more.
    From300,
}

impl PriceBucket {
    /// The bucket of a price; an absent or non-finite price is [`PriceBucket::None`].
    pub fn of(price: Option<f64>) -> Self {
        match price {
            Some(p) if !p.is_finite() => Self::None,
            None => Self::None,
            Some(p) if p < 10.0 => Self::Under10,
            Some(p) if p < 30.0 => Self::Under30,
            Some(p) if p < 100.0 => Self::Under100,
            Some(p) if p < 300.0 => Self::Under300,
            Some(_) => Self::From300,
        }
    }
}

/// The feature tuple behind one token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TokenKey {
    pub kind: String,
    /// Product category, [`MISSING`] when absent.
    pub category: String,
    /// Channel, [`MISSING`] when absent.
    pub channel: String,
    pub gap: GapBucket,
    pub price: PriceBucket,
}

impl TokenKey {
    /// The tuple of an event, given the time of the customer's previous event.
    pub fn of(event: &EventRecord, previous: Option<DateTime<Utc>>) -> Self {
        Self {
            kind: event.kind.clone(),
            category: event.category.clone().unwrap_or_else(|| MISSING.to_owned()),
            channel: event.channel.clone().unwrap_or_else(|| MISSING.to_owned()),
            gap: GapBucket::of(previous.map(|p| event.at - p)),
            price: PriceBucket::of(event.price),
        }
    }
}

/// Token ids of feature tuples, saved beside the model as JSON
/// (`{"format": 1, "tokens": [...]}`, where `tokens[i]` has id `i + 2`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VocabularyFile", into = "VocabularyFile")]
pub struct Vocabulary {
    tokens: Vec<TokenKey>,
    index: HashMap<TokenKey, u32>,
}

#[derive(Serialize, Deserialize)]
struct VocabularyFile {
    format: u32,
    tokens: Vec<TokenKey>,
}

impl From<Vocabulary> for VocabularyFile {
    fn from(vocab: Vocabulary) -> Self {
        Self {
            format: VOCABULARY_FORMAT,
            tokens: vocab.tokens,
        }
    }
}

impl TryFrom<VocabularyFile> for Vocabulary {
    type Error = DatasetError;

    fn try_from(file: VocabularyFile) -> Result<Self, DatasetError> {
        if file.format != VOCABULARY_FORMAT {
            return Err(DatasetError::new(
                "format",
                format!(
                    "vocabulary format {} is not supported (expected {VOCABULARY_FORMAT})",
                    file.format
                ),
            ));
        }
        Self::from_tokens(file.tokens)
    }
}

impl Vocabulary {
    /// The vocabulary of the given tuples (one entry per occurrence): the
    /// `max_vocab - 2` most frequent get ids from 2 in order of frequency, ties broken
    /// by the tuples' order; the rest map to [`UNKNOWN`].
    pub fn fit(keys: impl IntoIterator<Item = TokenKey>, max_vocab: usize) -> Self {
        let mut counts: HashMap<TokenKey, usize> = HashMap::new();
        for key in keys {
            *counts.entry(key).or_default() += 1;
        }
        let mut ranked: Vec<(TokenKey, usize)> = counts.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(max_vocab.saturating_sub(FIRST_TOKEN as usize));
        let tokens: Vec<TokenKey> = ranked.into_iter().map(|(key, _)| key).collect();
        let index = Self::index_of(&tokens);
        Self { tokens, index }
    }

    /// A vocabulary with `tokens[i]` at id `i + 2`.
    ///
    /// # Errors
    /// A tuple listed twice (`tokens[i]`).
    pub fn from_tokens(tokens: Vec<TokenKey>) -> Result<Self, DatasetError> {
        let index = Self::index_of(&tokens);
        if index.len() != tokens.len() {
            let mut seen = HashMap::new();
            for (i, key) in tokens.iter().enumerate() {
                if let Some(first) = seen.insert(key, i) {
                    return Err(DatasetError::new(
                        format!("tokens[{i}]"),
                        format!("repeats tokens[{first}]"),
                    ));
                }
            }
        }
        Ok(Self { tokens, index })
    }

    fn index_of(tokens: &[TokenKey]) -> HashMap<TokenKey, u32> {
        tokens
            .iter()
            .enumerate()
            .map(|(i, key)| (key.clone(), i as u32 + FIRST_TOKEN))
            .collect()
    }

    /// The id of a tuple, [`UNKNOWN`] when it is not in the vocabulary.
    pub fn id(&self, key: &TokenKey) -> u32 {
        self.index.get(key).copied().unwrap_or(UNKNOWN)
    }

    /// The tuple of a learned id; `None` for padding, unknown and ids out of range.
    pub fn key(&self, id: u32) -> Option<&TokenKey> {
        self.tokens.get(id.checked_sub(FIRST_TOKEN)? as usize)
    }

    /// The learned tuples, `tokens()[i]` having id `i + 2`.
    pub fn tokens(&self) -> &[TokenKey] {
        &self.tokens
    }

    /// Number of ids including padding and unknown: the embedding table's size.
    pub fn size(&self) -> usize {
        self.tokens.len() + FIRST_TOKEN as usize
    }
}

/// How to cut a tenant's events into examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetConfig {
    /// Events per input sequence: the last `seq_len` before the cut-off (1 to 512).
    pub seq_len: usize,
    /// Days after the cut-off that the labels look at (1 to 365).
    pub horizon_days: i64,
    /// Embedding table size, padding and unknown included (16 to 100 000).
    pub max_vocab: usize,
    /// End of the training period (exclusive).
    pub train_end: DateTime<Utc>,
    /// End of the validation period (exclusive); at least `horizon_days` after `train_end`.
    pub valid_end: DateTime<Utc>,
    /// End of the test period (exclusive); at least `horizon_days` after `valid_end`.
    pub test_end: DateTime<Utc>,
    /// Days between consecutive cut-offs within a period (1 to 365).
    pub stride_days: i64,
}

impl DatasetConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// The first setting out of range, by name.
    pub fn validate(&self) -> Result<(), DatasetError> {
        if !(1..=512).contains(&self.seq_len) {
            return Err(DatasetError::new(
                "seq_len",
                format!("must be between 1 and 512 events, got {}", self.seq_len),
            ));
        }
        if !(1..=365).contains(&self.horizon_days) {
            return Err(DatasetError::new(
                "horizon_days",
                format!("must be between 1 and 365 days, got {}", self.horizon_days),
            ));
        }
        if !(16..=100_000).contains(&self.max_vocab) {
            return Err(DatasetError::new(
                "max_vocab",
                format!("must be between 16 and 100000, got {}", self.max_vocab),
            ));
        }
        if !(1..=365).contains(&self.stride_days) {
            return Err(DatasetError::new(
                "stride_days",
                format!("must be between 1 and 365 days, got {}", self.stride_days),
            ));
        }
        let horizon = TimeDelta::days(self.horizon_days);
        for (field, start_name, start, end) in [
            ("valid_end", "train_end", self.train_end, self.valid_end),
            ("test_end", "valid_end", self.valid_end, self.test_end),
        ] {
            if end <= start {
                return Err(DatasetError::new(
                    field,
                    format!("must be after {start_name}"),
                ));
            }
            if end - start < horizon {
                return Err(DatasetError::new(
                    field,
                    format!(
                        "must be at least horizon_days ({}) days after {start_name}, so the period holds at least one cut-off",
                        self.horizon_days
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The examples of one period. Row `i` is `tokens[i * seq_len..(i + 1) * seq_len]` with
/// its labels and baseline features at index `i` of the other fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// Input token ids, `n * seq_len` row-major, oldest event first, padding on the left.
    pub tokens: Vec<u32>,
    /// 1 when the customer purchased within the horizon after the cut-off.
    pub purchase: Vec<u8>,
    /// Class of the first event within the horizon ([`NONE_CLASS`] when none).
    pub next_event: Vec<u32>,
    pub customers: Vec<u64>,
    pub cutoffs: Vec<DateTime<Utc>>,
    /// Features of the customer's whole history before the cut-off, as named in
    /// [`FEATURES`].
    pub features: Vec<Features>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.purchase.len()
    }

    pub fn is_empty(&self) -> bool {
        self.purchase.is_empty()
    }

    /// Examples whose purchase label is 1.
    pub fn positives(&self) -> usize {
        self.purchase.iter().filter(|&&y| y == 1).count()
    }
}

/// Examples and positives of one split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitCounts {
    pub examples: usize,
    pub positives: usize,
}

/// [`SplitCounts`] of the three splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetCounts {
    pub train: SplitCounts,
    pub valid: SplitCounts,
    pub test: SplitCounts,
}

/// A tenant's examples, split by time, with what is needed to encode new sequences.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub vocab: Vocabulary,
    /// Next-event class names by id: `"none"`, `"other"`, then event types.
    pub classes: Vec<String>,
    pub train: Split,
    pub valid: Split,
    pub test: Split,
    pub seq_len: usize,
}

impl Dataset {
    /// Examples and positives per split.
    pub fn counts(&self) -> DatasetCounts {
        let count = |s: &Split| SplitCounts {
            examples: s.len(),
            positives: s.positives(),
        };
        DatasetCounts {
            train: count(&self.train),
            valid: count(&self.valid),
            test: count(&self.test),
        }
    }

    /// Loss weights from a split (normally the training split).
    ///
    /// The first value weighs positive purchase labels: negatives / positives, or 1 when
    /// either is absent. The second has one weight per next-event class, proportional
    /// to 1 / (examples of the class) and scaled so the classes present average 1; a
    /// class absent from the split gets 0.
    pub fn class_weights(&self, split: &Split) -> (f64, Vec<f64>) {
        let positives = split.positives();
        let negatives = split.len() - positives;
        let positive_weight = if positives == 0 || negatives == 0 {
            1.0
        } else {
            negatives as f64 / positives as f64
        };
        let mut counts = vec![0usize; self.classes.len()];
        for &class in &split.next_event {
            if let Some(count) = counts.get_mut(class as usize) {
                *count += 1;
            }
        }
        let inverse: Vec<f64> = counts
            .iter()
            .map(|&c| if c == 0 { 0.0 } else { 1.0 / c as f64 })
            .collect();
        let present = counts.iter().filter(|&&c| c > 0).count();
        let mean = inverse.iter().sum::<f64>() / present.max(1) as f64;
        let weights = inverse
            .into_iter()
            .map(|w| if mean > 0.0 { w / mean } else { 0.0 })
            .collect();
        (positive_weight, weights)
    }
}

/// The class id of an event type among `classes` ([`OTHER_CLASS`] when absent).
pub fn class_id(classes: &[String], kind: &str) -> u32 {
    classes
        .iter()
        .skip(FIRST_TOKEN as usize)
        .position(|c| c == kind)
        .map_or(OTHER_CLASS, |i| i as u32 + FIRST_TOKEN)
}

/// Cuts a tenant's events (in any order) into training, validation and test examples;
/// see the module documentation for the rules.
///
/// # Errors
/// A setting out of range (by its name, see [`DatasetConfig::validate`]), an event with
/// an empty type (`events[i].kind`) or a negative or non-finite price
/// (`events[i].price`), or settings that would give more than [`MAX_TOKEN_CELLS`] token
/// positions (`stride_days`).
pub fn build(events: &[EventRecord], config: &DatasetConfig) -> Result<Dataset, DatasetError> {
    config.validate()?;
    for (i, event) in events.iter().enumerate() {
        if event.kind.trim().is_empty() {
            return Err(DatasetError::new(
                format!("events[{i}].kind"),
                "must not be empty",
            ));
        }
        if let Some(price) = event.price
            && (!price.is_finite() || price < 0.0)
        {
            return Err(DatasetError::new(
                format!("events[{i}].price"),
                format!("must be a non-negative amount, got {price}"),
            ));
        }
    }

    let mut by_customer: BTreeMap<u64, Vec<&EventRecord>> = BTreeMap::new();
    for event in events {
        by_customer.entry(event.customer).or_default().push(event);
    }
    for list in by_customer.values_mut() {
        list.sort_by(|a, b| event_order(a, b));
    }

    // Vocabulary and classes from training-period events only.
    let mut keys = Vec::new();
    let mut kind_counts: HashMap<&str, usize> = HashMap::new();
    for list in by_customer.values() {
        let mut previous = None;
        for event in list.iter().take_while(|e| e.at < config.train_end) {
            keys.push(TokenKey::of(event, previous));
            *kind_counts.entry(event.kind.as_str()).or_default() += 1;
            previous = Some(event.at);
        }
    }
    let vocab = Vocabulary::fit(keys, config.max_vocab);
    let mut kinds: Vec<(&str, usize)> = kind_counts.into_iter().collect();
    kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut classes = vec![NONE_CLASS_NAME.to_owned(), OTHER_CLASS_NAME.to_owned()];
    classes.extend(
        kinds
            .into_iter()
            .filter(|(kind, _)| *kind != NONE_CLASS_NAME && *kind != OTHER_CLASS_NAME)
            .take(MAX_EVENT_CLASSES - classes.len())
            .map(|(kind, _)| kind.to_owned()),
    );

    // Cut-offs of each period, oldest first.
    let horizon = TimeDelta::days(config.horizon_days);
    let stride = TimeDelta::days(config.stride_days);
    let earliest = events.iter().map(|e| e.at).min();
    let train_cutoffs = match earliest {
        // An earlier cut-off has no event before it, so no example; the earliest
        // customer alone has an example at every later one.
        Some(earliest) => cutoffs(config.train_end, horizon, stride, config.seq_len, |t| {
            t > earliest
        })?,
        None => Vec::new(),
    };
    let valid_cutoffs = cutoffs(config.valid_end, horizon, stride, config.seq_len, |t| {
        t >= config.train_end
    })?;
    let test_cutoffs = cutoffs(config.test_end, horizon, stride, config.seq_len, |t| {
        t >= config.valid_end
    })?;

    let histories: Vec<(u64, History)> = by_customer
        .iter()
        .map(|(&customer, list)| (customer, History::new(list, &vocab, &classes)))
        .collect();

    let mut splits = Vec::with_capacity(3);
    let mut total = 0usize;
    for period in [&train_cutoffs, &valid_cutoffs, &test_cutoffs] {
        // Count first, so oversized settings are refused before allocating.
        let n: usize = histories
            .iter()
            .map(|(_, h)| match h.times.first() {
                Some(&first) => period.len() - period.partition_point(|&t| t <= first),
                None => 0,
            })
            .sum();
        total += n;
        if total.saturating_mul(config.seq_len) > MAX_TOKEN_CELLS {
            return Err(too_many(total, config.seq_len));
        }
        let mut split = Split {
            tokens: Vec::with_capacity(n * config.seq_len),
            purchase: Vec::with_capacity(n),
            next_event: Vec::with_capacity(n),
            customers: Vec::with_capacity(n),
            cutoffs: Vec::with_capacity(n),
            features: Vec::with_capacity(n),
        };
        for (customer, history) in &histories {
            for &t in period.iter() {
                let p = history.before(t);
                if p == 0 {
                    continue;
                }
                let q = history.before(t + horizon);
                history.window(p, config.seq_len, &mut split.tokens);
                split
                    .purchase
                    .push(u8::from(history.purchases[q] > history.purchases[p]));
                split.next_event.push(if q > p {
                    history.classes[p]
                } else {
                    NONE_CLASS
                });
                split.customers.push(*customer);
                split.cutoffs.push(t);
                split.features.push(history.features(p, t));
            }
        }
        splits.push(split);
    }
    let test = splits.pop().unwrap_or_default();
    let valid = splits.pop().unwrap_or_default();
    let train = splits.pop().unwrap_or_default();
    Ok(Dataset {
        vocab,
        classes,
        train,
        valid,
        test,
        seq_len: config.seq_len,
    })
}

/// The model input for one customer at `cutoff`, exactly as [`build`] makes it: the
/// token ids of their last `seq_len` events before `cutoff`, left-padded with 0, and the
/// [`FEATURES`] of their history. `events` are that customer's events in any order (the
/// `customer` field is ignored).
pub fn encode(
    events: &[EventRecord],
    vocab: &Vocabulary,
    seq_len: usize,
    cutoff: DateTime<Utc>,
) -> (Vec<u32>, Features) {
    let history = History::of_customer(events, vocab);
    let p = history.before(cutoff);
    let mut out = Vec::with_capacity(seq_len);
    history.window(p, seq_len, &mut out);
    (out, history.features(p, cutoff))
}

/// Refuses training when the training split has too few examples of either label.
///
/// # Errors
/// Fewer than `min_positive` positive or negative training examples (`events`), with
/// the counts found.
pub fn minimum_check(d: &Dataset, min_positive: usize) -> Result<(), DatasetError> {
    let positives = d.train.positives();
    let negatives = d.train.len() - positives;
    let found = format!("found {positives} positive and {negatives} negative training examples");
    if positives < min_positive {
        return Err(DatasetError::new(
            "events",
            format!("{found}; at least {min_positive} positive are needed"),
        ));
    }
    if negatives < min_positive {
        return Err(DatasetError::new(
            "events",
            format!("{found}; at least {min_positive} negative are needed"),
        ));
    }
    Ok(())
}

fn too_many(examples: usize, seq_len: usize) -> DatasetError {
    DatasetError::new(
        "stride_days",
        format!(
            "these settings give at least {examples} examples of {seq_len} events, more than the {MAX_TOKEN_CELLS} token positions allowed; use a larger stride_days or a shorter seq_len"
        ),
    )
}

/// Cut-offs `end - horizon`, `end - horizon - stride`, ... while `keep` holds, oldest
/// first; refused when more than one example per cut-off would not fit.
fn cutoffs(
    end: DateTime<Utc>,
    horizon: TimeDelta,
    stride: TimeDelta,
    seq_len: usize,
    keep: impl Fn(DateTime<Utc>) -> bool,
) -> Result<Vec<DateTime<Utc>>, DatasetError> {
    let mut out = Vec::new();
    let mut t = end.checked_sub_signed(horizon);
    while let Some(cutoff) = t
        && keep(cutoff)
    {
        out.push(cutoff);
        if out.len().saturating_mul(seq_len) > MAX_TOKEN_CELLS {
            return Err(too_many(out.len(), seq_len));
        }
        t = cutoff.checked_sub_signed(stride);
    }
    out.reverse();
    Ok(out)
}

/// Events of one customer by time; ties by type, category, channel and price so the
/// order does not depend on the input's.
fn event_order(a: &EventRecord, b: &EventRecord) -> Ordering {
    a.at.cmp(&b.at)
        .then_with(|| a.kind.cmp(&b.kind))
        .then_with(|| a.category.cmp(&b.category))
        .then_with(|| a.channel.cmp(&b.channel))
        .then_with(|| a.price.unwrap_or(-1.0).total_cmp(&b.price.unwrap_or(-1.0)))
}

/// One customer's events in time order, with token ids, classes and running totals.
struct History {
    times: Vec<DateTime<Utc>>,
    tokens: Vec<u32>,
    classes: Vec<u32>,
    /// `purchases[i]`: purchases among the first `i` events.
    purchases: Vec<usize>,
    /// `spend[i]`: summed purchase prices of the first `i` events.
    spend: Vec<f64>,
    /// `last_purchase[i]`: time of the last purchase among the first `i` events.
    last_purchase: Vec<Option<DateTime<Utc>>>,
    /// `active_days[i]`: distinct UTC dates among the first `i` events.
    active_days: Vec<usize>,
}

impl History {
    fn of_customer(events: &[EventRecord], vocab: &Vocabulary) -> Self {
        let mut sorted: Vec<&EventRecord> = events.iter().collect();
        sorted.sort_by(|a, b| event_order(a, b));
        Self::new(&sorted, vocab, &[])
    }

    fn new(sorted: &[&EventRecord], vocab: &Vocabulary, classes: &[String]) -> Self {
        let n = sorted.len();
        let mut history = Self {
            times: Vec::with_capacity(n),
            tokens: Vec::with_capacity(n),
            classes: Vec::with_capacity(n),
            purchases: Vec::with_capacity(n + 1),
            spend: Vec::with_capacity(n + 1),
            last_purchase: Vec::with_capacity(n + 1),
            active_days: Vec::with_capacity(n + 1),
        };
        history.active_days.push(0);
        history.purchases.push(0);
        history.spend.push(0.0);
        history.last_purchase.push(None);
        let mut previous = None;
        for event in sorted {
            history.times.push(event.at);
            history
                .tokens
                .push(vocab.id(&TokenKey::of(event, previous)));
            history.classes.push(class_id(classes, &event.kind));
            let purchase = event.kind == PURCHASE_KIND;
            let (count, spend, last) = (
                history.purchases.last().copied().unwrap_or(0),
                history.spend.last().copied().unwrap_or(0.0),
                history.last_purchase.last().copied().flatten(),
            );
            let price = event.price.filter(|p| p.is_finite()).unwrap_or(0.0);
            history.purchases.push(count + usize::from(purchase));
            history
                .spend
                .push(if purchase { spend + price } else { spend });
            history
                .last_purchase
                .push(if purchase { Some(event.at) } else { last });
            let new_day =
                previous.is_none_or(|p: DateTime<Utc>| p.date_naive() != event.at.date_naive());
            let days = history.active_days.last().copied().unwrap_or(0);
            history.active_days.push(days + usize::from(new_day));
            previous = Some(event.at);
        }
        history
    }

    /// Number of events strictly before `t`.
    fn before(&self, t: DateTime<Utc>) -> usize {
        self.times.partition_point(|&at| at < t)
    }

    /// Appends the tokens of the last `seq_len` of the first `p` events, left-padded.
    fn window(&self, p: usize, seq_len: usize, out: &mut Vec<u32>) {
        let start = p.saturating_sub(seq_len);
        out.extend(std::iter::repeat_n(PAD, seq_len - (p - start)));
        out.extend_from_slice(&self.tokens[start..p]);
    }

    /// [`FEATURES`] of the first `p` events, seen at `t`.
    fn features(&self, p: usize, t: DateTime<Utc>) -> Features {
        let days = |since: DateTime<Utc>| ((t - since).num_seconds() as f64 / 86_400.0).max(0.0);
        let capped = |at: Option<DateTime<Utc>>| {
            at.map_or(RECENCY_CAP_DAYS, |at| days(at).min(RECENCY_CAP_DAYS))
        };
        let first = if p > 0 {
            self.times.first().copied()
        } else {
            None
        };
        let last = p.checked_sub(1).and_then(|i| self.times.get(i)).copied();
        [
            capped(self.last_purchase[p]).ln_1p(),
            (self.purchases[p] as f64).ln_1p(),
            self.spend[p].max(0.0).ln_1p(),
            (p as f64).ln_1p(),
            first.map_or(0.0, days).ln_1p(),
            capped(last).ln_1p(),
            (self.active_days[p] as f64).ln_1p(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    /// Midnight UTC, `days` after 2025-01-01.
    fn day(days: i64) -> DateTime<Utc> {
        day_hour(days, 0)
    }

    fn day_hour(days: i64, hours: i64) -> DateTime<Utc> {
        // 2025-01-01T00:00:00Z
        DateTime::<Utc>::UNIX_EPOCH
            + TimeDelta::seconds(1_735_689_600)
            + TimeDelta::days(days)
            + TimeDelta::hours(hours)
    }

    fn event(customer: u64, kind: &str, at: DateTime<Utc>) -> EventRecord {
        EventRecord {
            customer,
            kind: kind.to_owned(),
            category: None,
            channel: None,
            at,
            price: None,
        }
    }

    fn purchase(customer: u64, at: DateTime<Utc>, price: f64) -> EventRecord {
        EventRecord {
            price: Some(price),
            category: Some("shoes".to_owned()),
            ..event(customer, PURCHASE_KIND, at)
        }
    }

    fn config() -> DatasetConfig {
        DatasetConfig {
            seq_len: 4,
            horizon_days: 7,
            max_vocab: 64,
            train_end: day(60),
            valid_end: day(80),
            test_end: day(100),
            stride_days: 7,
        }
    }

    /// A few customers with activity in every period.
    fn history() -> Vec<EventRecord> {
        let mut events = Vec::new();
        for customer in 0..5u64 {
            for d in (0..100).step_by(3 + customer as usize) {
                let kind = match (d + customer as i64) % 4 {
                    0 => "view",
                    1 => "click",
                    2 => "add_to_cart",
                    _ => "email_open",
                };
                events.push(EventRecord {
                    channel: Some("web".to_owned()),
                    ..event(customer, kind, day_hour(d, customer as i64))
                });
                if (d + customer as i64) % 10 == 0 {
                    events.push(purchase(customer, day_hour(d, 5), 20.0 + d as f64));
                }
            }
        }
        events
    }

    fn row(split: &Split, seq_len: usize, i: usize) -> &[u32] {
        &split.tokens[i * seq_len..(i + 1) * seq_len]
    }

    #[test]
    fn buckets_follow_their_boundaries() {
        let gap = |s: i64| GapBucket::of(Some(TimeDelta::seconds(s)));
        assert_eq!(GapBucket::of(None), GapBucket::First);
        assert_eq!(gap(0), GapBucket::UnderHour);
        assert_eq!(gap(3599), GapBucket::UnderHour);
        assert_eq!(gap(3600), GapBucket::UnderDay);
        assert_eq!(gap(86_400), GapBucket::UnderWeek);
        assert_eq!(gap(7 * 86_400), GapBucket::UnderMonth);
        assert_eq!(gap(30 * 86_400 - 1), GapBucket::UnderMonth);
        assert_eq!(gap(30 * 86_400), GapBucket::MonthOrMore);

        assert_eq!(PriceBucket::of(None), PriceBucket::None);
        assert_eq!(PriceBucket::of(Some(f64::NAN)), PriceBucket::None);
        assert_eq!(PriceBucket::of(Some(0.0)), PriceBucket::Under10);
        assert_eq!(PriceBucket::of(Some(9.99)), PriceBucket::Under10);
        assert_eq!(PriceBucket::of(Some(10.0)), PriceBucket::Under30);
        assert_eq!(PriceBucket::of(Some(30.0)), PriceBucket::Under100);
        assert_eq!(PriceBucket::of(Some(100.0)), PriceBucket::Under300);
        assert_eq!(PriceBucket::of(Some(300.0)), PriceBucket::From300);
    }

    #[test]
    fn labels_inputs_and_rfm_hand_checked_on_a_tiny_history() -> TestResult {
        // Customer 7: view day 0, purchase (50) day 2, click day 20.
        let events = vec![
            event(7, "click", day(20)),
            purchase(7, day(2), 50.0),
            event(7, "view", day(0)),
        ];
        let cfg = DatasetConfig {
            seq_len: 3,
            horizon_days: 5,
            max_vocab: 16,
            train_end: day(27),
            valid_end: day(40),
            test_end: day(50),
            stride_days: 3,
        };
        let d = build(&events, &cfg)?;
        // Training cut-offs: day 22, 19, ..., 1 (day -2 has no earlier event).
        let expected: Vec<DateTime<Utc>> = [1, 4, 7, 10, 13, 16, 19, 22].map(day).to_vec();
        assert_eq!(d.train.cutoffs, expected);
        assert_eq!(d.classes[..2], ["none", "other"]);
        let class = |kind: &str| class_id(&d.classes, kind);

        let view = d.vocab.id(&TokenKey::of(&events[2], None));
        let buy = d.vocab.id(&TokenKey::of(&events[1], Some(day(0))));
        let click = d.vocab.id(&TokenKey::of(&events[0], Some(day(2))));
        assert!(view >= FIRST_TOKEN && buy >= FIRST_TOKEN && click >= FIRST_TOKEN);
        assert_eq!(d.vocab.key(buy).map(|k| k.gap), Some(GapBucket::UnderWeek));
        assert_eq!(
            d.vocab.key(buy).map(|k| k.price),
            Some(PriceBucket::Under100)
        );
        assert_eq!(
            d.vocab.key(click).map(|k| k.gap),
            Some(GapBucket::UnderMonth)
        );

        // Day 1: history [view]; window [1, 6) holds the purchase on day 2.
        assert_eq!(row(&d.train, 3, 0), [PAD, PAD, view]);
        assert_eq!(d.train.purchase[0], 1);
        assert_eq!(d.train.next_event[0], class("purchase"));
        // Day 4: history [view, purchase]; window [4, 9) is empty.
        assert_eq!(row(&d.train, 3, 1), [PAD, view, buy]);
        assert_eq!(d.train.purchase[1], 0);
        assert_eq!(d.train.next_event[1], NONE_CLASS);
        // Day 16: window [16, 21) holds the click on day 20.
        assert_eq!(d.train.purchase[5], 0);
        assert_eq!(d.train.next_event[5], class("click"));
        // Day 22: all three events before it.
        assert_eq!(row(&d.train, 3, 7), [view, buy, click]);
        assert_eq!(d.train.next_event[7], NONE_CLASS);

        // Features at day 4: 2 days since the purchase, 1 purchase of 50, 2 events, 4 days
        // since the first event, 2 since the last, 2 active days.
        let features = d.train.features[1];
        let expected = [2.0, 1.0, 50.0, 2.0, 4.0, 2.0, 2.0].map(f64::ln_1p);
        for (got, want) in features.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "features {features:?}");
        }
        // Day 1: no purchase yet, recency capped; one event a day ago.
        assert_eq!(d.train.features[0][0], RECENCY_CAP_DAYS.ln_1p());
        assert_eq!(d.train.features[0][1], 0.0);
        assert_eq!(d.train.features[0][5], 1.0f64.ln_1p());
        let (tokens, at_day_4) = encode(&events, &d.vocab, 3, day(4));
        assert_eq!(
            (tokens.as_slice(), at_day_4),
            (row(&d.train, 3, 1), features)
        );
        // No history at all: nothing counted, both recencies capped.
        let (_, none) = encode(&events, &d.vocab, 3, day(0));
        assert_eq!(
            none,
            [
                RECENCY_CAP_DAYS.ln_1p(),
                0.0,
                0.0,
                0.0,
                0.0,
                RECENCY_CAP_DAYS.ln_1p(),
                0.0
            ]
        );

        // Validation and test examples exist (history before them) but have no labels.
        assert!(d.valid.purchase.iter().all(|&y| y == 0));
        assert!(d.test.next_event.iter().all(|&c| c == NONE_CLASS));
        assert_eq!(
            d.counts().train,
            SplitCounts {
                examples: 8,
                positives: 1
            }
        );
        Ok(())
    }

    #[test]
    fn windows_are_left_padded_and_truncated_to_the_last_events() -> TestResult {
        // Customer 1 has 2 events, customer 2 has 7, all before the first cut-off.
        let mut events = vec![event(1, "view", day(0)), event(1, "click", day(1))];
        let kinds = [
            "view",
            "click",
            "add_to_cart",
            "view",
            "click",
            "email_open",
            "view",
        ];
        for (i, kind) in kinds.iter().enumerate() {
            events.push(event(2, kind, day_hour(0, i as i64 * 2)));
        }
        let cfg = DatasetConfig {
            seq_len: 5,
            horizon_days: 1,
            train_end: day(3),
            stride_days: 30,
            ..config()
        };
        let d = build(&events, &cfg)?;
        assert_eq!(d.train.customers, [1, 2]);
        assert_eq!(d.train.cutoffs, [day(2), day(2)]);
        assert_eq!(d.train.tokens.len(), 2 * 5);

        let (c1, _) = encode(&events[..2], &d.vocab, 5, day(2));
        assert_eq!(c1[..3], [PAD; 3]);
        assert!(c1[3..].iter().all(|&t| t >= FIRST_TOKEN));
        assert_eq!(row(&d.train, 5, 0), c1);

        // The last 5 of customer 2's 7 events, oldest first.
        let c2 = &events[2..];
        let mut previous = None;
        let all: Vec<u32> = c2
            .iter()
            .map(|e| {
                let id = d.vocab.id(&TokenKey::of(e, previous));
                previous = Some(e.at);
                id
            })
            .collect();
        assert_eq!(row(&d.train, 5, 1), &all[2..]);
        assert_eq!(encode(c2, &d.vocab, 5, day(2)).0, &all[2..]);
        // A cut-off before any event encodes as all padding.
        assert_eq!(encode(c2, &d.vocab, 5, day(-1)).0, [PAD; 5]);
        Ok(())
    }

    #[test]
    fn nothing_at_or_after_train_end_reaches_training_examples() -> TestResult {
        let cfg = config();
        let base = history();
        let before = build(&base, &cfg)?;

        // Events at and after train_end that would flip training labels and inputs if
        // they leaked: purchases right at train_end, new event types and new tuples.
        let mut later = base.clone();
        for customer in 0..6u64 {
            later.push(purchase(customer, cfg.train_end, 999.0));
            later.push(purchase(customer, cfg.train_end + TimeDelta::hours(1), 5.0));
            later.push(EventRecord {
                category: Some("brand-new".to_owned()),
                channel: Some("sms".to_owned()),
                ..event(customer, "custom:quiz", cfg.train_end + TimeDelta::days(2))
            });
        }
        let after = build(&later, &cfg)?;
        assert_eq!(after.train, before.train);
        assert_eq!(after.vocab, before.vocab);
        assert_eq!(after.classes, before.classes);
        assert!(!after.classes.iter().any(|c| c == "custom:quiz"));
        // The later events do show up in validation, a new type as "other": customer 5
        // (first seen at train_end) takes the quiz at the validation cut-off on day 66.
        later.push(event(5, "custom:quiz", day(66)));
        let after = build(&later, &cfg)?;
        assert_eq!(after.train, before.train);
        assert_ne!(after.valid, before.valid);
        let i = after
            .valid
            .customers
            .iter()
            .zip(&after.valid.cutoffs)
            .position(|(&c, &t)| c == 5 && t == day(66))
            .ok_or("no validation example for customer 5 on day 66")?;
        assert_eq!(after.valid.next_event[i], OTHER_CLASS);
        assert_eq!(after.valid.purchase[i], 0);

        let horizon = TimeDelta::days(cfg.horizon_days);
        assert!(
            after
                .train
                .cutoffs
                .iter()
                .all(|&t| t + horizon <= cfg.train_end)
        );
        assert!(
            after
                .valid
                .cutoffs
                .iter()
                .all(|&t| t >= cfg.train_end && t + horizon <= cfg.valid_end)
        );
        assert!(
            after
                .test
                .cutoffs
                .iter()
                .all(|&t| t >= cfg.valid_end && t + horizon <= cfg.test_end)
        );
        Ok(())
    }

    #[test]
    fn cutoffs_are_stride_apart_counted_back_from_each_period_end() -> TestResult {
        let cfg = config();
        let d = build(&history(), &cfg)?;
        let distinct = |s: &Split| {
            let mut c = s.cutoffs.clone();
            c.sort();
            c.dedup();
            c
        };
        let train = distinct(&d.train);
        assert_eq!(train.last(), Some(&day(53)));
        assert_eq!(train.first(), Some(&day(4)));
        assert!(train.windows(2).all(|w| w[1] - w[0] == TimeDelta::days(7)));
        // Validation: 73, 66 (59 is before train_end).
        assert_eq!(distinct(&d.valid), [day(66), day(73)]);
        // Test: 93, 86 (79 is before valid_end).
        assert_eq!(distinct(&d.test), [day(86), day(93)]);
        Ok(())
    }

    #[test]
    fn output_is_sorted_and_independent_of_input_order() -> TestResult {
        let cfg = config();
        let events = history();
        let d = build(&events, &cfg)?;
        let mut shuffled = events.clone();
        shuffled.reverse();
        let half = shuffled.len() / 2;
        shuffled.rotate_left(half);
        assert_eq!(build(&shuffled, &cfg)?, d);
        for split in [&d.train, &d.valid, &d.test] {
            let keys: Vec<(u64, DateTime<Utc>)> = split
                .customers
                .iter()
                .copied()
                .zip(split.cutoffs.iter().copied())
                .collect();
            assert!(keys.windows(2).all(|w| w[0] < w[1]));
            assert_eq!(split.tokens.len(), split.len() * cfg.seq_len);
            assert_eq!(split.features.len(), split.len());
        }
        Ok(())
    }

    #[test]
    fn vocabulary_maps_unseen_and_rare_tuples_to_unknown() -> TestResult {
        let key = |kind: &str| TokenKey {
            kind: kind.to_owned(),
            category: MISSING.to_owned(),
            channel: MISSING.to_owned(),
            gap: GapBucket::First,
            price: PriceBucket::None,
        };
        // 20 distinct tuples, tuple i seen i + 1 times; max_vocab 16 keeps the 14 most frequent.
        let mut keys = Vec::new();
        for i in 0..20 {
            for _ in 0..=i {
                keys.push(key(&format!("k{i:02}")));
            }
        }
        let vocab = Vocabulary::fit(keys, 16);
        assert_eq!(vocab.size(), 16);
        assert_eq!(vocab.id(&key("k19")), FIRST_TOKEN);
        assert_eq!(vocab.id(&key("k06")), 15);
        assert_eq!(vocab.id(&key("k05")), UNKNOWN);
        assert_eq!(vocab.id(&key("never")), UNKNOWN);
        assert_eq!(vocab.key(FIRST_TOKEN), Some(&key("k19")));
        assert_eq!(vocab.key(PAD), None);
        assert_eq!(vocab.key(UNKNOWN), None);

        // Saved and loaded as JSON, the mapping is the same.
        let json = serde_json::to_string(&vocab)?;
        assert!(json.starts_with("{\"format\":1,\"tokens\":[{\"kind\":\"k19\""));
        let back: Vocabulary = serde_json::from_str(&json)?;
        assert_eq!(back, vocab);
        assert_eq!(back.id(&key("k06")), 15);
        let duplicate = r#"{"format":1,"tokens":[
            {"kind":"a","category":"-","channel":"-","gap":"first","price":"none"},
            {"kind":"a","category":"-","channel":"-","gap":"first","price":"none"}]}"#;
        assert!(serde_json::from_str::<Vocabulary>(duplicate).is_err());
        assert!(serde_json::from_str::<Vocabulary>(r#"{"format":2,"tokens":[]}"#).is_err());

        // In a dataset, tuples first seen after train_end encode as unknown.
        let cfg = config();
        let mut events = history();
        events.push(EventRecord {
            category: Some("brand-new".to_owned()),
            ..event(0, "view", day(75))
        });
        let d = build(&events, &cfg)?;
        let (tokens, _) = encode(
            &events
                .iter()
                .filter(|e| e.customer == 0)
                .cloned()
                .collect::<Vec<_>>(),
            &d.vocab,
            cfg.seq_len,
            day(76),
        );
        assert_eq!(tokens.last(), Some(&UNKNOWN));
        Ok(())
    }

    #[test]
    fn class_weights_balance_labels() -> TestResult {
        let d = Dataset {
            vocab: Vocabulary::from_tokens(Vec::new())?,
            classes: ["none", "other", "view", "click"]
                .map(String::from)
                .to_vec(),
            train: Split::default(),
            valid: Split::default(),
            test: Split::default(),
            seq_len: 1,
        };
        let split = Split {
            purchase: vec![1, 0, 0, 0, 0, 1],
            next_event: vec![0, 0, 0, 2, 2, 3],
            ..Split::default()
        };
        let (positive, classes) = d.class_weights(&split);
        assert!((positive - 2.0).abs() < 1e-12);
        // Counts [3, 0, 2, 1] -> 1/c = [1/3, -, 1/2, 1], mean over present 11/18.
        let expected = [6.0 / 11.0, 0.0, 9.0 / 11.0, 18.0 / 11.0];
        assert_eq!(classes.len(), 4);
        for (got, want) in classes.iter().zip(expected) {
            assert!((got - want).abs() < 1e-12, "{classes:?}");
        }
        let none = Split {
            purchase: vec![0, 0],
            next_event: vec![0, 0],
            ..Split::default()
        };
        assert_eq!(d.class_weights(&none), (1.0, vec![1.0, 0.0, 0.0, 0.0]));
        Ok(())
    }

    #[test]
    fn settings_and_events_errors_name_the_field() {
        let field = |cfg: DatasetConfig| build(&[], &cfg).err().map(|e| e.field);
        assert_eq!(
            field(DatasetConfig {
                seq_len: 0,
                ..config()
            }),
            Some("seq_len".into())
        );
        assert_eq!(
            field(DatasetConfig {
                seq_len: 513,
                ..config()
            }),
            Some("seq_len".into())
        );
        assert_eq!(
            field(DatasetConfig {
                horizon_days: 366,
                ..config()
            }),
            Some("horizon_days".into())
        );
        assert_eq!(
            field(DatasetConfig {
                max_vocab: 15,
                ..config()
            }),
            Some("max_vocab".into())
        );
        assert_eq!(
            field(DatasetConfig {
                stride_days: 0,
                ..config()
            }),
            Some("stride_days".into())
        );
        assert_eq!(
            field(DatasetConfig {
                valid_end: day(60),
                ..config()
            }),
            Some("valid_end".into())
        );
        assert_eq!(
            field(DatasetConfig {
                valid_end: day(65),
                ..config()
            }),
            Some("valid_end".into())
        );
        assert_eq!(
            field(DatasetConfig {
                test_end: day(70),
                ..config()
            }),
            Some("test_end".into())
        );
        assert!(build(&[], &config()).is_ok());

        let bad_price = [EventRecord {
            price: Some(-1.0),
            ..event(0, "purchase", day(1))
        }];
        let err = build(&bad_price, &config()).err().map(|e| e.field);
        assert_eq!(err, Some("events[0].price".into()));
        let bad_kind = [event(0, "view", day(1)), event(0, " ", day(2))];
        let err = build(&bad_kind, &config()).err().map(|e| e.field);
        assert_eq!(err, Some("events[1].kind".into()));

        // Decades of daily cut-offs at 512 events each would not fit.
        let huge = DatasetConfig {
            seq_len: 512,
            stride_days: 1,
            ..config()
        };
        let mut events = vec![event(0, "view", day(-365 * 400))];
        events.extend((1..400u64).map(|c| event(c, "view", day(-365 * 400))));
        let err = build(&events, &huge).err().map(|e| e.field);
        assert_eq!(err, Some("stride_days".into()));
    }

    #[test]
    fn minimum_check_states_the_counts() -> TestResult {
        let d = build(&history(), &config())?;
        let counts = d.counts().train;
        assert!(counts.positives > 0);
        assert!(minimum_check(&d, counts.positives).is_ok());
        let err = minimum_check(&d, counts.positives + 1).err();
        assert_eq!(err.as_ref().map(|e| e.field.as_str()), Some("events"));
        let expected = format!(
            "found {} positive and {} negative training examples; at least {} positive are needed",
            counts.positives,
            counts.examples - counts.positives,
            counts.positives + 1
        );
        assert_eq!(err.map(|e| e.message), Some(expected));
        Ok(())
    }
}
