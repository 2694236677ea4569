//! Prometheus metrics of the bid-api: connections, bids by outcome, bid latency, fan-out
//! lag and slow-consumer disconnects; the flusher's backlog is registered in the same
//! registry by the engine. Served as text on `GET /metrics`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric of one process.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// WebSocket connections accepted since start.
    pub connections_total: IntCounter,
    /// Bids answered, by outcome (`leading`, `outbid`, `ceiling_raised`, or the rejection code).
    pub bids: IntCounterVec,
    /// Time from receiving a bid frame to having its engine answer.
    pub bid_latency: Histogram,
    /// Time from an event's Redis timestamp to its delivery to local subscribers.
    pub fanout_lag: Histogram,
    /// Auctions this process is subscribed to in Redis.
    pub fanout_auctions: IntGauge,
    /// Events received from Redis pub/sub.
    pub fanout_events: IntCounter,
    /// Connections disconnected because their queue overflowed (close 1013).
    pub slow_consumers: IntCounter,
    /// Client messages refused by the per-connection rate limit.
    pub rate_limited: IntCounter,
    /// 1 when PostgreSQL answered the last readiness probe, else 0. Bidding does not need
    /// it (the flusher keeps the backlog in Redis), so it is not part of readiness.
    pub postgres_up: IntGauge,
    /// Tokens refused, by reason (`expired`, `unknown_key`, `audience`, ...).
    pub auth_refused: IntCounterVec,
    /// JWKS and discovery fetches, by result (`ok`, `error`).
    pub jwks_refreshes: IntCounterVec,
    /// Signing keys currently accepted from the JWKS.
    pub jwks_keys: IntGauge,
    /// 1 when the last JWKS fetch succeeded, 0 when the provider is unreachable.
    pub jwks_up: IntGauge,
}

impl Metrics {
    /// Creates and registers every metric in a new registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let m = Self {
            postgres_up: IntGauge::new(
                "gavel_postgres_up",
                "Whether PostgreSQL answered the last readiness probe (1) or not (0)",
            )?,
            connections: IntGauge::new("gavel_ws_connections", "Open WebSocket connections")?,
            connections_total: IntCounter::new(
                "gavel_ws_connections_total",
                "WebSocket connections accepted",
            )?,
            bids: IntCounterVec::new(
                Opts::new(
                    "gavel_bids_total",
                    "Bids answered, by outcome or rejection code",
                ),
                &["outcome"],
            )?,
            bid_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "gavel_bid_latency_seconds",
                    "Time to decide a bid (engine round trip included)",
                )
                .buckets(vec![
                    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ]),
            )?,
            fanout_lag: Histogram::with_opts(
                HistogramOpts::new(
                    "gavel_fanout_lag_seconds",
                    "Time from a bid's Redis timestamp to its fan-out to local subscribers",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ]),
            )?,
            fanout_auctions: IntGauge::new(
                "gavel_fanout_auctions",
                "Auctions this process is subscribed to in Redis",
            )?,
            fanout_events: IntCounter::new(
                "gavel_fanout_events_total",
                "Events received from Redis pub/sub",
            )?,
            slow_consumers: IntCounter::new(
                "gavel_ws_slow_consumer_disconnects_total",
                "Connections closed with 1013 because their send queue overflowed",
            )?,
            rate_limited: IntCounter::new(
                "gavel_ws_rate_limited_total",
                "Client messages refused by the per-connection rate limit",
            )?,
            auth_refused: IntCounterVec::new(
                Opts::new("gavel_auth_refused_total", "Tokens refused, by reason"),
                &["reason"],
            )?,
            jwks_refreshes: IntCounterVec::new(
                Opts::new(
                    "gavel_jwks_refreshes_total",
                    "Fetches of the identity provider's discovery document and JWKS, by result",
                ),
                &["result"],
            )?,
            jwks_keys: IntGauge::new(
                "gavel_jwks_keys",
                "Signing keys currently accepted from the identity provider's JWKS",
            )?,
            jwks_up: IntGauge::new(
                "gavel_jwks_up",
                "1 when the last fetch of the identity provider's keys succeeded, else 0",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.connections.clone()))?;
        m.registry.register(Box::new(m.connections_total.clone()))?;
        m.registry.register(Box::new(m.bids.clone()))?;
        m.registry.register(Box::new(m.bid_latency.clone()))?;
        m.registry.register(Box::new(m.fanout_lag.clone()))?;
        m.registry.register(Box::new(m.fanout_auctions.clone()))?;
        m.registry.register(Box::new(m.fanout_events.clone()))?;
        m.registry.register(Box::new(m.slow_consumers.clone()))?;
        m.registry.register(Box::new(m.rate_limited.clone()))?;
        m.registry.register(Box::new(m.postgres_up.clone()))?;
        m.registry.register(Box::new(m.auth_refused.clone()))?;
        m.registry.register(Box::new(m.jwks_refreshes.clone()))?;
        m.registry.register(Box::new(m.jwks_keys.clone()))?;
        m.registry.register(Box::new(m.jwks_up.clone()))?;
        Ok(m)
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}
