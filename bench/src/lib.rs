//! Benchmarks of Mercato (see bench/README.md) and the synthetic shop they share.

pub mod shop;
