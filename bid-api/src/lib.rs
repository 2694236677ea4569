//! Gavel's bid-api: a stateless axum server for live auctions (DESIGN.md §4–§6).
//!
//! - [`config`]: flags and environment variables.
//! - [`protocol`]: the v1 WebSocket messages as serde types, no I/O.
//! - [`auth`]: JWT (HS256/RS256) and development identities, origin checks.
//! - [`fanout`]: one Redis subscription per auction per process, shared serialised
//!   events, bounded per-connection queues.
//! - [`ws`]: the upgrade and the per-connection loop.
//! - [`http`]: REST reads, health, readiness, metrics.
//! - [`metrics`]: Prometheus metrics.
//! - [`state`]: what handlers share.
//! - [`server`]: wiring, the in-process flusher and graceful shutdown.
//! - [`startup`]: waiting (with backoff) for Redis at start instead of exiting.

pub mod auth;
pub mod config;
pub mod fanout;
pub mod http;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod startup;
pub mod state;
pub mod ws;

pub use config::Config;
pub use server::{ServerError, bind, run};
