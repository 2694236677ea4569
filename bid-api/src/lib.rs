//! Gavel's bid-api: a stateless axum server for live auctions (README: WebSocket protocol, Configuration, Operations).
//!
//! - [`config`]: flags and environment variables.
//! - [`protocol`]: the engine's values as messages of [`gavel_protocol`] (the one model of
//!   WebSocket protocol v1, re-exported here).
//! - [`auth`]: token verification and claims policy, development identities, origin checks.
//! - [`limits`]: connection caps and upgrade rates per client IP.
//! - [`jwks`]: the identity provider's keys (OpenID Connect discovery, cached JWKS).
//! - [`fanout`]: one Redis subscription per auction per process, shared serialised
//!   events, bounded per-connection queues.
//! - [`ws`]: the upgrade and the per-connection loop.
//! - [`http`]: REST reads, health, readiness, metrics.
//! - [`list`]: `GET /v1/auctions`, the open and upcoming auctions.
//! - [`web`]: the bidder page, its assets compiled in, and `GET /v1/config`.
//! - [`metrics`]: Prometheus metrics.
//! - [`state`]: what handlers share.
//! - [`server`]: wiring, the in-process flusher and graceful shutdown.
//! - [`startup`]: waiting (with backoff) for Redis at start instead of exiting.

pub mod auth;
pub mod config;
pub mod fanout;
pub mod http;
pub mod jwks;
pub mod limits;
pub mod list;
pub mod metrics;
pub mod protocol;
pub mod record;
pub mod server;
pub mod startup;
pub mod state;
pub mod web;
pub mod ws;

pub use config::Config;
pub use server::{ServerError, bind, run};
