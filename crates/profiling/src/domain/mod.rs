//! Rules and calculations of the profiling service: no HTTP, no SQL.

pub mod contact;
pub mod customer;
