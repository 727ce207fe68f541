//! Rules and calculations of the metrics service: no HTTP, no SQL.

pub mod attribution;
pub mod budget;
pub mod campaign;
pub mod report;
