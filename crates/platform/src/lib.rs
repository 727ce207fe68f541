//! The chassis every Mercato service stands on, and nothing of the marketing domain.
//!
//! - [`settings`]: typed, layered configuration; secrets only from the environment.
//! - [`telemetry`]: logs as JSON or for people, with request id and tenant on every span.
//! - [`db`]: the Postgres pool and the [`db::MIGRATOR`] holding every service's schema.
//! - [`error`]: [`error::ApiError`] and its RFC 9457 problem+json body.
//! - [`extract`]: `Json`/`Path`/`Query` extractors whose errors name the field at fault.
//! - [`auth`]: API keys, roles, the [`auth::TenantContext`] handlers take.
//! - [`pagination`]: opaque cursors, `{items, next_cursor}`.
//! - [`http`]: the middleware stack, `/healthz`, `/readyz`, `/metrics`, graceful shutdown.
//! - [`jobs`]: the durable job queue and its `/v1/jobs` routes.
//! - [`service`]: assembling and running a process (gateway or one service alone).
//! - `testing` (feature): helpers for tests that run the real stack on port 0.

pub mod auth;
pub mod batch;
pub mod db;
pub mod error;
pub mod extract;
pub mod http;
pub mod jobs;
pub mod openapi;
pub mod pagination;
pub mod random;
pub mod service;
pub mod settings;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::{ApiError, ApiResult};
