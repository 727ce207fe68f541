//! The edge of Mercato: API keys resolve to tenants and roles, every `/v1` request is
//! authenticated and rate limited per key, and the four services are either mounted in this
//! process (embedded, the default) or reached over HTTP (proxy mode).
//!
//! - [`app`]: assembling the router for either mode, `/openapi.json` and `/docs`;
//! - [`routes`]: the gateway's own resources (`/v1/admin/tenants`, keys);
//! - [`proxy`]: forwarding with streamed bodies and internal caller headers;
//! - [`rate_limit`]: the token bucket per key.

pub mod app;
pub mod db;
pub mod proxy;
pub mod rate_limit;
pub mod routes;
pub mod state;

pub use app::{Gateway, build, openapi};
