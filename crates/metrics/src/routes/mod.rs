//! HTTP resources of the metrics service.

pub mod campaigns;
pub mod decisions;
pub mod outcomes;
pub mod planning;
pub mod reports;
