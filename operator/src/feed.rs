//! The outbound event feed's dispatcher (README § Event feed, docs/design.md § The event
//! feed): moves the public CloudEvents that the flushers and the operator queued in
//! PostgreSQL's `feed_outbox` to the sinks, and delivers them over HTTP.
//!
//! It reads PostgreSQL only, never Redis, and runs in the operator beside the reconciles
//! (the leader only), so a slow or unreachable sink never touches bidding. Delivery is at
//! least once and in order per auction and sink: an auction's next event is sent only
//! after the previous one was delivered or dead-lettered, and a failed attempt is retried
//! with exponential backoff and jitter until [`FeedConfig::max_attempts`], then the event
//! goes to the sink's dead letters with the reason (`gavel feed dead-letters`, `gavel feed
//! replay`). Different auctions are delivered concurrently. A PostgreSQL advisory lock lets
//! one dispatcher deliver at a time, whatever the number of operators.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use gavel_engine::outbound::{self, Delivery, DispatchLock, FeedStore, WebhookSecret};
use gavel_engine::redact;
use gavel_engine::store::StoreError;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use tracing::{debug, info, warn};

/// Name of the cluster-wide sink in the feed's tables and metrics.
pub const SINK_CLUSTER: &str = "cluster";

/// Name of an Auction's own sink (`spec.sink.uri`) in the feed's tables and metrics.
pub const SINK_AUCTION: &str = "auction";

/// Most events moved from the outbox per statement.
const FAN_OUT_BATCH: i64 = 1_000;

/// Most auctions whose events one pass delivers.
const AUCTIONS_PER_PASS: i64 = 256;

/// Most events of one auction one pass delivers.
const EVENTS_PER_AUCTION: i64 = 128;

/// How often a dispatcher without the lock tries to take it.
const LOCK_RETRY: Duration = Duration::from_secs(2);

/// How often the backlog gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Tuning of the dispatcher (flags `--events-*`).
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// The cluster-wide sink, if any.
    pub sink: Option<String>,
    /// Signs every request; without it nothing is delivered.
    pub secret: Option<WebhookSecret>,
    /// Pause between passes when there is nothing to do.
    pub poll: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Attempts before an event is dead-lettered.
    pub max_attempts: u32,
    /// Backoff after the first failure; doubles at each further one.
    pub backoff: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
    /// How long an event waits for a missing predecessor (not yet committed by its
    /// flusher, or an opening or restore never recorded) before it is sent anyway.
    pub gap_timeout: Duration,
    /// Auctions delivered at the same time.
    pub concurrency: usize,
}

impl Default for FeedConfig {
    fn default() -> Self {
        Self {
            sink: None,
            secret: None,
            poll: Duration::from_millis(250),
            timeout: Duration::from_secs(10),
            max_attempts: 20,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            gap_timeout: Duration::from_secs(60),
            concurrency: 16,
        }
    }
}

impl FeedConfig {
    /// Whether events are delivered at all (a secret is configured).
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// The backoff after `failures` failed attempts: exponential, capped, with jitter
    /// (between half and all of it), so that many auctions failing together spread out.
    pub fn backoff_after(&self, failures: u32) -> Duration {
        let exp = self
            .backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(20))
            .min(self.backoff_max);
        let half = exp / 2;
        let jitter = RandomState::new().hash_one(Instant::now()) % (half.as_millis() as u64 + 1);
        half + Duration::from_millis(jitter)
    }
}

/// The dispatcher's metrics, by sink (`cluster`, `auction`).
#[derive(Clone, Debug)]
pub struct FeedMetrics {
    /// `gavel_feed_delivered_total{sink}`.
    pub delivered: IntCounterVec,
    /// `gavel_feed_retries_total{sink}`: failed attempts that will be retried.
    pub retried: IntCounterVec,
    /// `gavel_feed_dead_lettered_total{sink}`.
    pub dead_lettered: IntCounterVec,
    /// `gavel_feed_gaps_skipped_total{sink}`: events sent without a predecessor that did
    /// not come within the gap timeout.
    pub gaps: IntCounterVec,
    /// `gavel_feed_pending{sink}`: events waiting.
    pub pending: IntGaugeVec,
    /// `gavel_feed_lag_seconds{sink}`: age of the oldest waiting event.
    pub lag: GaugeVec,
    /// `gavel_feed_dead_letters{sink}`: events in the dead letters.
    pub dead_letters: IntGaugeVec,
}

impl FeedMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter = |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["sink"]);
        let metrics = Self {
            delivered: counter("gavel_feed_delivered_total", "Events delivered to a sink")?,
            retried: counter(
                "gavel_feed_retries_total",
                "Failed deliveries that will be retried with backoff",
            )?,
            dead_lettered: counter(
                "gavel_feed_dead_lettered_total",
                "Events given up and moved to the sink's dead letters",
            )?,
            gaps: counter(
                "gavel_feed_gaps_skipped_total",
                "Events sent before a predecessor that did not come within the gap timeout",
            )?,
            pending: IntGaugeVec::new(
                Opts::new("gavel_feed_pending", "Events waiting for delivery"),
                &["sink"],
            )?,
            lag: GaugeVec::new(
                Opts::new(
                    "gavel_feed_lag_seconds",
                    "Age of the oldest event waiting for delivery (0 when none)",
                ),
                &["sink"],
            )?,
            dead_letters: IntGaugeVec::new(
                Opts::new(
                    "gavel_feed_dead_letters",
                    "Events in the sink's dead letters (alert when above zero)",
                ),
                &["sink"],
            )?,
        };
        registry.register(Box::new(metrics.delivered.clone()))?;
        registry.register(Box::new(metrics.retried.clone()))?;
        registry.register(Box::new(metrics.dead_lettered.clone()))?;
        registry.register(Box::new(metrics.gaps.clone()))?;
        registry.register(Box::new(metrics.pending.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere.
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).unwrap_or_else(|_| unreachable!("fresh registry"))
    }
}

/// Why the dispatcher cannot start.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    /// PostgreSQL failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Events moved from the outbox.
    pub fanned_out: u64,
    /// Events delivered.
    pub delivered: u64,
    /// Failed attempts (retried later or dead-lettered).
    pub failed: u64,
}

/// A failed delivery attempt.
struct SendError {
    /// Whether trying again may succeed (network, timeout, 408, 425, 429, 5xx).
    retryable: bool,
    reason: String,
}

/// The feed's dispatcher.
pub struct Dispatcher {
    store: FeedStore,
    http: reqwest::Client,
    config: FeedConfig,
    metrics: FeedMetrics,
}

impl Dispatcher {
    /// A dispatcher over `store`'s PostgreSQL.
    pub fn new(
        store: &gavel_engine::store::Store,
        config: FeedConfig,
        metrics: FeedMetrics,
    ) -> Result<Self, FeedError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("gavel-operator/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store: FeedStore::new(store.pool().clone()),
            http,
            config,
            metrics,
        })
    }

    /// Runs passes until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        if self.config.enabled() {
            info!(
                sink = self
                    .config
                    .sink
                    .as_deref()
                    .map(redact::url)
                    .unwrap_or_default(),
                "event feed dispatcher started"
            );
        } else {
            info!(
                "event feed off (no GAVEL_EVENTS_SECRET): queued events are dropped, nothing is delivered"
            );
        }
        tokio::pin!(shutdown);
        let mut sampled: Option<Instant> = None;
        let mut backoff = Duration::from_millis(200);
        let mut lock: Option<DispatchLock> = None;
        loop {
            if sampled.is_none_or(|t| t.elapsed() >= SAMPLE_EVERY) {
                self.sample().await;
                sampled = Some(Instant::now());
            }
            // One dispatcher at a time, whatever the number of operators.
            if let Some(held) = lock.as_mut()
                && !held.alive().await
            {
                warn!("lost the event feed's lock (PostgreSQL connection closed); taking it again");
                lock = None;
            }
            if lock.is_none() {
                match self.store.try_lock().await {
                    Ok(Some(taken)) => {
                        debug!("event feed lock taken");
                        lock = Some(taken);
                    }
                    Ok(None) => debug!("another process delivers the event feed"),
                    Err(e) => debug!(error = %e, "cannot take the event feed's lock"),
                }
            }
            let pause = tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(LOCK_RETRY), if lock.is_none() => continue,
                report = self.pass(), if lock.is_some() => match report {
                    // Straight on while it makes progress or the outbox holds more than one
                    // batch; else a poll's pause (a dead sink's backlog is not rescanned in
                    // a tight loop while bids keep coming).
                    Ok(r) if r.delivered > 0 || r.fanned_out >= FAN_OUT_BATCH as u64 => {
                        Duration::ZERO
                    }
                    Ok(_) => self.config.poll,
                    Err(e) => {
                        warn!(error = %e, "event feed pass failed; retrying");
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        backoff
                    }
                },
            };
            if pause.is_zero() {
                backoff = Duration::from_millis(200);
                continue;
            }
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        info!("event feed dispatcher stopped");
    }

    /// One pass: fan out what the outbox holds, then deliver what is due.
    pub async fn pass(&self) -> Result<PassReport, StoreError> {
        let enabled = self.config.enabled();
        let fanned_out = self
            .store
            .fan_out(
                FAN_OUT_BATCH,
                enabled && self.config.sink.is_some(),
                enabled,
            )
            .await?;
        let mut report = PassReport {
            fanned_out,
            ..PassReport::default()
        };
        if !enabled {
            return Ok(report);
        }
        let due = self.store.due(AUCTIONS_PER_PASS).await?;
        let mut runs = futures::stream::iter(due)
            .map(|(sink, auction)| async move { self.deliver_auction(&sink, &auction).await })
            .buffer_unordered(self.config.concurrency.max(1));
        while let Some(done) = runs.next().await {
            let (delivered, failed) = done?;
            report.delivered += delivered;
            report.failed += failed;
        }
        Ok(report)
    }

    /// Delivers the auction's waiting events to the sink in order, until one fails or
    /// waits for its predecessor. Returns (delivered, failed).
    async fn deliver_auction(&self, sink: &str, auction: &str) -> Result<(u64, u64), StoreError> {
        let (mut seq, mut epoch) = self.store.cursor(sink, auction).await?;
        let uri = match sink {
            SINK_CLUSTER => self.config.sink.clone(),
            _ => self.store.sink_uri(auction).await?,
        };
        let gap_ms = self.config.gap_timeout.as_millis() as i64;
        let (mut delivered, mut failed) = (0, 0);
        for d in self
            .store
            .waiting(sink, auction, EVENTS_PER_AUCTION)
            .await?
        {
            if d.due_in_ms > 0 {
                break;
            }
            if !outbound::in_order(seq, epoch, d.seq, d.epoch, &d.ty()) {
                if d.age_ms < gap_ms {
                    debug!(sink, auction, seq = d.seq, "waiting for an earlier event");
                    break;
                }
                warn!(
                    sink,
                    auction,
                    event = %d.event_id,
                    after_seq = seq,
                    "an earlier event did not come within the gap timeout; sending this one"
                );
                self.metrics.gaps.with_label_values(&[sink]).inc();
            }
            let Some(uri) = uri.as_deref() else {
                if sink == SINK_CLUSTER {
                    // The cluster sink was removed from the configuration: keep its backlog
                    // for when it comes back.
                    break;
                }
                self.store
                    .dead_letter(&d, "the auction has no sink any more", None)
                    .await?;
                self.metrics.dead_lettered.with_label_values(&[sink]).inc();
                failed += 1;
                continue;
            };
            match self.send(uri, &d).await {
                Ok(()) => {
                    self.store.delivered(&d).await?;
                    self.metrics.delivered.with_label_values(&[sink]).inc();
                    delivered += 1;
                }
                Err(e) if e.retryable && (d.attempts as u32) + 1 < self.config.max_attempts => {
                    let wait = self.config.backoff_after(d.attempts as u32 + 1);
                    debug!(sink, auction, event = %d.event_id, attempts = d.attempts + 1, reason = %e.reason, retry_in_ms = wait.as_millis() as u64, "delivery failed; retrying");
                    self.store
                        .failed(&d, wait.as_millis() as i64, &e.reason)
                        .await?;
                    self.metrics.retried.with_label_values(&[sink]).inc();
                    failed += 1;
                    break;
                }
                Err(e) => {
                    warn!(sink, auction, event = %d.event_id, attempts = d.attempts + 1, reason = %e.reason, "event dead-lettered");
                    self.store
                        .dead_letter(&d, &e.reason, Some(&redact::url(uri)))
                        .await?;
                    self.metrics.dead_lettered.with_label_values(&[sink]).inc();
                    failed += 1;
                }
            }
            seq = seq.max(d.seq);
            epoch = epoch.max(d.epoch);
        }
        Ok((delivered, failed))
    }

    /// One POST of the event in structured mode, signed per Standard Webhooks.
    async fn send(&self, uri: &str, d: &Delivery) -> Result<(), SendError> {
        let Some(secret) = &self.config.secret else {
            return Err(SendError {
                retryable: true,
                reason: "no signing secret".into(),
            });
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let body = d.event.clone().into_bytes();
        let signature = secret.sign(&d.event_id, timestamp, &body);
        let response = self
            .http
            .post(uri)
            .header(reqwest::header::CONTENT_TYPE, outbound::CONTENT_TYPE)
            .header("webhook-id", &d.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| SendError {
                retryable: true,
                reason: format!(
                    "request failed: {}",
                    redact::url(&e.without_url().to_string())
                ),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let excerpt: String = text.chars().take(200).collect();
        Err(SendError {
            retryable: status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429),
            reason: format!("HTTP {status}: {}", excerpt.trim()),
        })
    }

    /// Samples the backlog gauges.
    async fn sample(&self) {
        match self.store.backlog().await {
            Ok(rows) => {
                for sink in [SINK_CLUSTER, SINK_AUCTION] {
                    let row = rows.iter().find(|r| r.sink == sink);
                    self.metrics
                        .pending
                        .with_label_values(&[sink])
                        .set(row.map_or(0, |r| r.pending));
                    self.metrics
                        .lag
                        .with_label_values(&[sink])
                        .set(row.map_or(0.0, |r| r.oldest_s));
                    self.metrics
                        .dead_letters
                        .with_label_values(&[sink])
                        .set(row.map_or(0, |r| r.dead));
                }
            }
            Err(e) => debug!(error = %e, "cannot sample the event feed's backlog"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let config = FeedConfig {
            backoff: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..FeedConfig::default()
        };
        for (failures, full) in [(1, 100), (2, 200), (3, 400), (5, 1000), (30, 1000)] {
            for _ in 0..20 {
                let b = config.backoff_after(failures).as_millis() as u64;
                assert!((full / 2..=full).contains(&b), "{failures}: {b}");
            }
        }
    }
}
