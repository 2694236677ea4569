//! Gavel's bidding engine, shared by the operator and the bid-api.
//!
//! - [`settings`] and [`rules`]: the auction's settings and the proxy-bid rules as a pure
//!   reference model (README § Bidding rules), no I/O.
//! - [`client`]: the Redis Lua scripts that apply the same rules atomically, one
//!   `EVALSHA` per bid, and their typed client [`Engine`].
//! - [`changes`]: which auctions changed in Redis, for the operator (no per-auction polling).
//! - [`event`]: the JSON events the scripts append to each auction's stream and publish.
//! - [`store`]: the PostgreSQL schema (sqlx migrations) and its queries.
//! - [`flusher`]: moves accepted bids and results from the Redis flush streams to
//!   PostgreSQL, exactly once per `(auction, seq)`, and detects conflicts with the record.
//! - [`outbound`]: the outbound event feed (CloudEvents, Standard Webhooks signatures,
//!   its outbox and delivery tables), fed from the flusher's transaction.
//! - [`restore`]: rebuilds an auction's live state from PostgreSQL when Redis lost it.
//! - [`redis`]: the one Redis client builder of every process, for one server or a Redis
//!   Cluster (`GAVEL_REDIS_URL`).
//! - [`redis_stats`]: Redis memory use and out-of-memory refusals as metrics.
//! - [`redact`]: connection URLs with their password hidden, for logs and errors.
//! - [`runtime`]: what every binary shares: the clock in Unix ms, the duration grammar of
//!   flags, the log format, the shutdown signal.
//! - [`startup`]: waiting for a dependency with a capped backoff at start-up, instead of
//!   exiting (the bid-api and the operator).
//! - `testing` (feature `testing`): throw-away Redis and PostgreSQL servers for tests.

pub mod changes;
pub mod client;
pub mod event;
pub mod flusher;
pub mod keys;
pub mod outbound;
pub mod redact;
pub mod redis;
pub mod redis_stats;
pub mod restore;
pub mod rules;
pub mod runtime;
pub mod settings;
pub mod startup;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;

pub use client::{
    BidError, Bidder, CloseMode, Engine, EngineError, LivePhase, Provisioned, RestoreMode,
    Restored, Snapshot,
};
pub use event::{AuctionEvent, BidEvent, RestoredNotice};
pub use keys::AuctionId;
pub use rules::{
    AuctionModel, AuctionResult, BidAccepted, BidRequest, CloseOutcome, Outcome, RejectCode,
    Rejection,
};
pub use settings::{Amount, AuctionSettings, BidLimit, Increments, Millis, SoftClose, Tier};
