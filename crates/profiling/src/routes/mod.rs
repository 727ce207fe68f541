//! HTTP resources of the profiling service, one file each.

pub mod customers;
pub mod events;
pub mod imports;
pub mod models;
pub mod privacy;
pub mod products;
pub mod profiles;
pub mod segments;
pub mod value;
