//! The durable job queue in Postgres (`platform.jobs`).
//!
//! Long work (imports, recomputes, training, bulk generation) is enqueued as a row and
//! claimed by any process's runner with `FOR UPDATE SKIP LOCKED`. A running job sends
//! heartbeats with its progress; a job whose worker died stops sending them and is taken
//! back after `stale_after_secs`. Failures retry with exponential backoff up to
//! `max_attempts`. Clients follow a job through `GET /v1/jobs/{id}` and its SSE stream.

pub mod queue;
pub mod routes;
pub mod runner;

pub use queue::{Job, JobStatus, NewJob};
pub use runner::{JobContext, JobError, JobHandler, JobRunner};
