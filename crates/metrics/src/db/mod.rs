//! Queries of the `metrics` schema (and the documented reads of profiling's tables).

pub mod campaigns;
pub mod decisions;
pub mod outcomes;
pub mod reports;
