//! The sequence model of customer behaviour: Embedding -> LSTM (one or two layers) ->
//! Dense (reading the LSTM state and whole-history features), trained with candle-nn on
//! each tenant's own event sequences.
//!
//! `model` holds the network, its deterministic initialisation and seeded dropout,
//! `train` the training loop (AdamW, class-weighted losses, early stopping on validation
//! loss, validation AUC or macro-F1 per epoch) and scoring.
//! Everything here is CPU-bound: callers run it on a blocking thread, never on the async
//! workers.

pub mod model;
pub mod pipeline;
pub mod train;

pub use model::{Hyper, Task};
pub use train::{EpochReport, Trained, fit, predict};
