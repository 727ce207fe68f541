//! Rules and calculations of the profiling service: no HTTP, no SQL.

pub mod cluster;
pub mod clv;
pub mod columns;
pub mod contact;
pub mod customer;
pub mod event;
pub mod import;
pub mod product;
pub mod profile;
pub mod segment;
pub mod sequence;
pub mod value;
