//! The flusher: moves every auction's events from its Redis stream to PostgreSQL.
//!
//! Each flusher is one consumer of the `gavel-flusher` group on every registered stream.
//! It writes a batch in one transaction (idempotent on auction + seq) and acknowledges
//! the entries only after the commit, so a crash between the two replays the batch
//! harmlessly. Entries left pending by a consumer that died are claimed after
//! [`FlusherConfig::claim_idle`]. When PostgreSQL is down nothing is acknowledged and
//! the backlog stays in Redis until it comes back. An entry that cannot be written after
//! [`FlusherConfig::max_attempts`] tries goes to the dead-letter stream.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use fred::prelude::*;
use prometheus::{IntCounter, IntGauge, Registry};
use tracing::{debug, error, info, warn};

use crate::client::Engine;
use crate::event::AuctionEvent;
use crate::keys::{AuctionId, DEAD_LETTER_KEY, FLUSH_GROUP, REGISTRY_KEY};
use crate::store::{Store, StoreError};

/// Tuning of one flusher.
#[derive(Clone, Debug)]
pub struct FlusherConfig {
    /// This consumer's name in the group; unique per process (pod name, pid).
    pub consumer: String,
    /// Most entries read from one stream at a time.
    pub batch: u64,
    /// How long another consumer's entry must sit unacknowledged before it is claimed.
    pub claim_idle: Duration,
    /// Tries before an entry that PostgreSQL refuses is dead-lettered.
    pub max_attempts: u32,
    /// Pause between passes that found nothing to do.
    pub idle_poll: Duration,
}

impl FlusherConfig {
    /// Defaults for a consumer named `consumer`.
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: consumer.into(),
            batch: 512,
            claim_idle: Duration::from_secs(5),
            max_attempts: 5,
            idle_poll: Duration::from_millis(50),
        }
    }
}

/// Prometheus metrics of the flusher.
#[derive(Clone, Debug)]
pub struct FlushMetrics {
    /// Events committed to PostgreSQL.
    pub written: IntCounter,
    /// Entries moved to the dead-letter stream.
    pub dead_letters: IntCounter,
    /// Failed write attempts (PostgreSQL down or refusing).
    pub failures: IntCounter,
    /// Events in Redis not yet in PostgreSQL, sampled about once a second.
    pub backlog: IntGauge,
}

impl FlushMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            written: IntCounter::new(
                "gavel_flush_events_written_total",
                "Events committed to PostgreSQL",
            )?,
            dead_letters: IntCounter::new(
                "gavel_flush_dead_letters_total",
                "Stream entries moved to the dead-letter stream after repeated failures",
            )?,
            failures: IntCounter::new(
                "gavel_flush_failures_total",
                "Failed PostgreSQL write attempts",
            )?,
            backlog: IntGauge::new(
                "gavel_flush_backlog",
                "Accepted events in Redis not yet written to PostgreSQL",
            )?,
        };
        registry.register(Box::new(metrics.written.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        registry.register(Box::new(metrics.backlog.clone()))?;
        Ok(metrics)
    }

    /// Metrics registered nowhere, for callers that do not export them.
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).unwrap_or_else(|_| unreachable!("fresh registry"))
    }
}

/// What one pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PassStats {
    /// Events committed.
    pub written: u64,
    /// Entries dead-lettered.
    pub dead_lettered: u64,
}

/// Why a pass stopped early; the flusher retries after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// PostgreSQL is unreachable; entries stay pending.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One consumer of the auction event streams.
pub struct Flusher {
    redis: Client,
    store: Store,
    config: FlusherConfig,
    metrics: FlushMetrics,
    /// Streams where this consumer may hold unacknowledged entries of its own.
    own_pending: HashSet<String>,
    /// Write attempts of entries PostgreSQL refused, by stream entry id.
    attempts: HashMap<String, u32>,
    last_claim: Option<Instant>,
}

type Entry = (String, HashMap<String, String>);

impl Flusher {
    /// A flusher reading through `engine`'s Redis and writing to `store`.
    pub fn new(
        engine: &Engine,
        store: Store,
        config: FlusherConfig,
        metrics: FlushMetrics,
    ) -> Self {
        Self {
            redis: engine.redis().clone(),
            store,
            config,
            metrics,
            own_pending: HashSet::new(),
            attempts: HashMap::new(),
            last_claim: None,
        }
    }

    /// Runs passes until `shutdown` completes, then makes a last attempt to drain.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        info!(consumer = %self.config.consumer, "flusher started");
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            let pause = match self.pass().await {
                Ok(stats) if stats.written + stats.dead_lettered > 0 => {
                    backoff = Duration::from_millis(100);
                    Duration::ZERO
                }
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    self.config.idle_poll
                }
                Err(e) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "flush pass failed; entries stay pending in Redis");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    pause
                }
            };
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        match self.drain(Duration::from_secs(5)).await {
            Ok(()) => info!("flusher stopped after draining"),
            Err(e) => {
                warn!(error = %e, "flusher stopped; undrained entries will be claimed by another consumer")
            }
        }
    }

    /// Runs passes until one finds nothing left, or `limit` passes.
    pub async fn drain(&mut self, timeout: Duration) -> Result<(), FlushError> {
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.pass().await?;
            if stats.written + stats.dead_lettered == 0 || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// One pass over every registered auction: claim abandoned entries when due, retry
    /// this consumer's own pending entries, read new ones, write and acknowledge.
    pub async fn pass(&mut self) -> Result<PassStats, FlushError> {
        let auctions: Vec<String> = self.redis.smembers(REGISTRY_KEY).await?;
        let claim_due = self
            .last_claim
            .is_none_or(|t| t.elapsed() >= self.config.claim_idle / 2);
        let mut stats = PassStats::default();
        let mut backlog = 0;
        for auction in &auctions {
            let Ok(id) = auction.parse::<AuctionId>() else {
                warn!(auction, "ignoring malformed id in the auction registry");
                continue;
            };
            let key = id.events_key();
            if claim_due {
                if self.last_claim.is_none() {
                    self.own_pending.insert(key.clone());
                }
                self.claim(&key).await?;
                backlog += self.backlog(&key).await.unwrap_or(0);
            }
            let s = self.flush_stream(&id, &key).await?;
            stats.written += s.written;
            stats.dead_lettered += s.dead_lettered;
        }
        if claim_due {
            self.last_claim = Some(Instant::now());
            self.metrics.backlog.set(backlog as i64);
        }
        Ok(stats)
    }

    async fn claim(&mut self, key: &str) -> Result<(), FlushError> {
        let idle = self.config.claim_idle.as_millis() as u64;
        let claimed: Value = match self
            .redis
            .xautoclaim(
                key,
                FLUSH_GROUP,
                &self.config.consumer,
                idle,
                "0-0",
                Some(self.config.batch),
                true,
            )
            .await
        {
            Ok(v) => v,
            Err(e) if e.details().starts_with("NOGROUP") => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if let Value::Array(parts) = claimed
            && parts
                .get(1)
                .is_some_and(|ids| matches!(ids, Value::Array(ids) if !ids.is_empty()))
        {
            info!(
                stream = key,
                "claimed entries left pending by another consumer"
            );
            self.own_pending.insert(key.to_owned());
        }
        Ok(())
    }

    async fn backlog(&self, key: &str) -> Result<u64, FlushError> {
        let groups: Value = self.redis.xinfo_groups(key).await?;
        let Value::Array(groups) = groups else {
            return Ok(0);
        };
        let mut total = 0;
        for group in groups {
            let fields: Vec<Value> = match group {
                Value::Array(f) => f,
                _ => continue,
            };
            for pair in fields.chunks(2) {
                if let [k, v] = pair
                    && matches!(k.as_str().as_deref(), Some("pending" | "lag"))
                {
                    total += v.as_u64().unwrap_or(0);
                }
            }
        }
        Ok(total)
    }

    async fn read(&mut self, key: &str, from: &str) -> Result<Vec<Entry>, FlushError> {
        // Redis answers nil when nothing is new.
        let reply: Result<Value, _> = self
            .redis
            .xreadgroup(
                FLUSH_GROUP,
                &self.config.consumer,
                Some(self.config.batch),
                None,
                false,
                key,
                from,
            )
            .await;
        match reply {
            Ok(Value::Null) => Ok(Vec::new()),
            Ok(value) => {
                let mut streams: HashMap<String, Vec<Entry>> = value.into_xread_response()?;
                Ok(streams.remove(key).unwrap_or_default())
            }
            Err(e) if e.details().starts_with("NOGROUP") => {
                // A stream created before its group (or a group deleted by hand): recreate it
                // from the start so nothing is skipped.
                let _: Result<Value, _> =
                    self.redis.xgroup_create(key, FLUSH_GROUP, "0", true).await;
                Ok(Vec::new())
            }
            Err(e) if e.kind() == &ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e.into()),
        }
    }

    async fn flush_stream(&mut self, id: &AuctionId, key: &str) -> Result<PassStats, FlushError> {
        let mut entries = Vec::new();
        if self.own_pending.contains(key) {
            entries = self.read(key, "0").await?;
            if entries.is_empty() {
                self.own_pending.remove(key);
            }
        }
        if entries.is_empty() {
            entries = self.read(key, ">").await?;
        }
        if entries.is_empty() {
            return Ok(PassStats::default());
        }
        self.own_pending.insert(key.to_owned());

        let mut good = Vec::with_capacity(entries.len());
        let mut stats = PassStats::default();
        for (entry_id, fields) in &entries {
            match fields
                .get("e")
                .map(|e| AuctionEvent::from_json(e.as_bytes()))
            {
                Some(Ok(event)) => good.push((entry_id.clone(), event)),
                other => {
                    let reason = match other {
                        Some(Err(e)) => format!("unparseable event: {e}"),
                        _ => "entry has no event field".to_owned(),
                    };
                    self.dead_letter(id, key, entry_id, fields, &reason).await?;
                    stats.dead_lettered += 1;
                }
            }
        }
        if good.is_empty() {
            return Ok(stats);
        }
        let events: Vec<AuctionEvent> = good.iter().map(|(_, e)| e.clone()).collect();
        match self.store.write_events(id, &events).await {
            Ok(()) => {
                self.ack(key, good.iter().map(|(i, _)| i.clone()).collect())
                    .await?;
                stats.written += good.len() as u64;
                self.metrics.written.inc_by(good.len() as u64);
                debug!(auction = %id, count = good.len(), "flushed events");
                let closed = events.iter().any(|e| matches!(e, AuctionEvent::Closed(_)));
                if closed {
                    self.retire_if_done(id, key).await?;
                }
            }
            Err(e) if e.is_transient() => {
                self.metrics.failures.inc();
                return Err(e.into());
            }
            Err(e) => {
                self.metrics.failures.inc();
                warn!(auction = %id, error = %e, "batch refused; writing its entries one by one");
                for (entry_id, event) in good {
                    stats.written += self.write_one(id, key, &entry_id, event, &entries).await?;
                }
            }
        }
        Ok(stats)
    }

    /// Writes one entry alone; after `max_attempts` refusals it is dead-lettered.
    async fn write_one(
        &mut self,
        id: &AuctionId,
        key: &str,
        entry_id: &str,
        event: AuctionEvent,
        entries: &[Entry],
    ) -> Result<u64, FlushError> {
        match self
            .store
            .write_events(id, std::slice::from_ref(&event))
            .await
        {
            Ok(()) => {
                self.attempts.remove(entry_id);
                self.ack(key, vec![entry_id.to_owned()]).await?;
                self.metrics.written.inc();
                Ok(1)
            }
            Err(e) if e.is_transient() => Err(e.into()),
            Err(e) => {
                let tries = self.attempts.entry(entry_id.to_owned()).or_insert(0);
                *tries += 1;
                if *tries >= self.config.max_attempts {
                    self.attempts.remove(entry_id);
                    let fields = entries
                        .iter()
                        .find(|(i, _)| i == entry_id)
                        .map(|(_, f)| f.clone())
                        .unwrap_or_default();
                    self.dead_letter(id, key, entry_id, &fields, &e.to_string())
                        .await?;
                }
                Ok(0)
            }
        }
    }

    async fn ack(&self, key: &str, ids: Vec<String>) -> Result<(), FlushError> {
        let _: i64 = self.redis.xack(key, FLUSH_GROUP, ids).await?;
        Ok(())
    }

    async fn dead_letter(
        &self,
        id: &AuctionId,
        key: &str,
        entry_id: &str,
        fields: &HashMap<String, String>,
        reason: &str,
    ) -> Result<(), FlushError> {
        let payload = fields.get("e").cloned().unwrap_or_default();
        let _: String = self
            .redis
            .xadd(
                DEAD_LETTER_KEY,
                false,
                None,
                "*",
                vec![
                    ("auction", id.to_string()),
                    ("entry", entry_id.to_owned()),
                    ("event", payload),
                    ("error", reason.to_owned()),
                ],
            )
            .await?;
        self.ack(key, vec![entry_id.to_owned()]).await?;
        self.metrics.dead_letters.inc();
        error!(auction = %id, entry = entry_id, reason, "event moved to the dead-letter stream {DEAD_LETTER_KEY}");
        Ok(())
    }

    /// A closed auction gets no more events: once nothing of its stream is pending it
    /// leaves the registry and costs the flushers nothing more.
    async fn retire_if_done(&self, id: &AuctionId, key: &str) -> Result<(), FlushError> {
        let summary: Value = self.redis.xpending(key, FLUSH_GROUP, ()).await?;
        let pending = match summary {
            Value::Array(parts) => parts.first().and_then(Value::as_u64).unwrap_or(1),
            _ => 1,
        };
        if pending == 0 {
            let _: i64 = self.redis.srem(REGISTRY_KEY, id.to_string()).await?;
            info!(auction = %id, "auction closed and fully flushed");
        }
        Ok(())
    }
}
