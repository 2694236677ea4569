//! Gavel's operator: provisions each `Auction` in Redis and PostgreSQL through the
//! engine, opens it at `startsAt`, closes it exactly once at its effective end, and
//! reports status, conditions and Events.
//!
//! - [`plan`]: the pure decision (spec, status, live state, now → next step, requeue).
//! - [`status`]: conditions and the events of status transitions (pure).
//! - [`lifecycle`]: the observe → plan → act loop over the engine, shared by both modes.
//! - [`controller`]: the kube-rs `Controller` (finalizer, status patches, Events).
//! - [`standalone`]: the same loop over a directory of manifests (development mode).
//! - [`backoff`]: per-auction retry delays after failures (exponential, jitter, capped).
//! - [`feed`]: the outbound event feed's dispatcher (CloudEvents to HTTP sinks).
//! - [`leader`]: Lease-based leader election.
//! - [`startup`]: waiting (with backoff) for Redis, PostgreSQL and the API server at start.
//! - [`metrics`], [`http`], [`telemetry`], [`config`]: the process around it.

pub mod backoff;
pub mod config;
pub mod controller;
pub mod feed;
pub mod http;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod plan;
pub mod standalone;
pub use gavel_engine::startup;
pub mod status;
pub mod telemetry;
