//! Queries of the profiling service; each takes the tenant and filters on it.

pub mod clusters;
pub mod clv;
pub mod customers;
pub mod events;
pub mod models;
pub mod privacy;
pub mod products;
pub mod profiles;
pub mod segments;
