//! Per-tenant customer sequence model support: turning event histories into training
//! examples, and scoring the predictions.

pub mod dataset;
pub mod evaluation;
