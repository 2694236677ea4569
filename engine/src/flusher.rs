//! The flusher: moves every event from the Redis flush streams to PostgreSQL.
//!
//! The scripts append each accepted bid and each close to its auction's stream (for
//! `since` replay) and to its shard's flush stream, one of [`FLUSH_SHARDS`], in the
//! auction's hash slot (the flushers' work queue). Each flusher is one consumer of the
//! `gavel-flusher` group on every flush stream. It reads them without blocking — on one
//! server all in one `XREADGROUP`, on a Redis Cluster one per stream, each sent to the
//! node that owns the stream's slot (a command may not span slots there) — and, when all
//! are empty, waits for a wake-up: a script that queues on an empty flush stream
//! publishes on the shard channel named like the stream, which every flusher subscribes
//! to (sharded pub/sub, so on a cluster the wake-up stays on the shard's node). Without a
//! wake-up it reads again after [`FlusherConfig::block`]. An idle platform costs one read
//! per flusher per block period on one server, and one per shard on a cluster, whatever
//! the number of auctions; a busy one, one read per batch.
//!
//! A batch (events of any auctions) is written in one durable transaction; its entries
//! are acknowledged and deleted only after the commit, so a crash between the two replays
//! the batch harmlessly. Entries left pending by a consumer that died are claimed after
//! [`FlusherConfig::claim_idle`]. When PostgreSQL is down nothing is acknowledged and the
//! backlog waits in Redis. An event PostgreSQL already holds with other content is a
//! *conflict* (Redis lost state and reused a seq): it is never written nor silently
//! dropped: it goes to the dead-letter stream, is counted and logged, and its auction is
//! halted until the operator restores it from PostgreSQL. An entry that cannot be written
//! after [`FlusherConfig::max_attempts`] tries is dead-lettered too.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::client::Engine;
use crate::event::AuctionEvent;
use crate::keys::{AuctionId, DEAD_LETTER_KEY, DEAD_LETTER_MAX, FLUSH_GROUP, flush_keys};
use crate::store::{FlushItem, Store, StoreError};

pub use crate::keys::FLUSH_SHARDS;

/// Tuning of one flusher.
#[derive(Clone, Debug)]
pub struct FlusherConfig {
    /// This consumer's name in the group; unique per process (pod name, pid).
    pub consumer: String,
    /// Most entries read at a time.
    pub batch: u64,
    /// How long another consumer's entry must sit unacknowledged before it is claimed.
    pub claim_idle: Duration,
    /// Tries before an entry that PostgreSQL refuses is dead-lettered.
    pub max_attempts: u32,
    /// How long a flusher with nothing to do waits for a wake-up before it reads again.
    pub block: Duration,
}

impl FlusherConfig {
    /// Defaults for a consumer named `consumer`.
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: consumer.into(),
            batch: 512,
            claim_idle: Duration::from_secs(5),
            max_attempts: 5,
            block: Duration::from_secs(1),
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
    /// Events that contradict PostgreSQL's record.
    pub conflicts: IntCounter,
    /// Failed write attempts (PostgreSQL down or refusing).
    pub failures: IntCounter,
    /// Events in Redis not yet in PostgreSQL, sampled every few seconds.
    pub backlog: IntGauge,
    /// Entries in the dead-letter stream, sampled with the backlog.
    pub dead_letter_len: IntGauge,
    /// Time from a bid's acceptance to its commit in PostgreSQL: the window of bids a
    /// total loss of Redis's data could take.
    pub lag: Histogram,
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
                "Stream entries moved to the dead-letter stream (refused repeatedly, or in conflict)",
            )?,
            conflicts: IntCounter::new(
                "gavel_flush_conflicts_total",
                "Events whose (auction, seq) PostgreSQL holds with other content; the auction is halted until restored",
            )?,
            failures: IntCounter::new(
                "gavel_flush_failures_total",
                "Failed PostgreSQL write attempts",
            )?,
            backlog: IntGauge::new(
                "gavel_flush_backlog",
                "Accepted events in Redis not yet written to PostgreSQL",
            )?,
            dead_letter_len: IntGauge::new(
                "gavel_flush_dead_letter_entries",
                "Entries in the dead-letter stream (alert when above zero)",
            )?,
            lag: Histogram::with_opts(
                HistogramOpts::new(
                    "gavel_flush_lag_seconds",
                    "Time from a bid's acceptance in Redis to its commit in PostgreSQL",
                )
                .buckets(vec![
                    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ]),
            )?,
        };
        registry.register(Box::new(metrics.written.clone()))?;
        registry.register(Box::new(metrics.dead_letters.clone()))?;
        registry.register(Box::new(metrics.conflicts.clone()))?;
        registry.register(Box::new(metrics.failures.clone()))?;
        registry.register(Box::new(metrics.backlog.clone()))?;
        registry.register(Box::new(metrics.dead_letter_len.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
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
    /// Events committed (or found already committed with the same content).
    pub written: u64,
    /// Entries dead-lettered (conflicts included).
    pub dead_lettered: u64,
    /// Events in conflict with PostgreSQL's record.
    pub conflicts: u64,
}

impl PassStats {
    fn add(&mut self, other: PassStats) {
        self.written += other.written;
        self.dead_lettered += other.dead_lettered;
        self.conflicts += other.conflicts;
    }

    /// Entries the pass took off the flush streams (0: there was nothing to do).
    pub fn handled(&self) -> u64 {
        self.written + self.dead_lettered
    }
}

/// Why a pass stopped early; the flusher retries after a backoff.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// Redis failed.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// The engine failed (connecting, halting an auction).
    #[error(transparent)]
    Engine(#[from] crate::client::EngineError),
    /// PostgreSQL is unreachable; entries stay pending.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Entries by stream, as `XREADGROUP` answers.
type XReadReply = HashMap<String, Vec<(String, HashMap<String, String>)>>;

/// One stream entry: its stream, its id and its fields.
struct Entry {
    stream: String,
    id: String,
    fields: HashMap<String, String>,
}

/// The wake-up subscription of a flusher: a message on any shard's wake channel wakes it.
struct Wake {
    notify: std::sync::Arc<tokio::sync::Notify>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _subscriber: SubscriberClient,
}

impl Drop for Wake {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Wake {
    async fn start(engine: &Engine, keys: &[String]) -> Result<Self, FlushError> {
        let subscriber = crate::redis::subscriber(engine.config())?;
        let mut messages = subscriber.message_rx();
        subscriber.init().await?;
        // Each flush stream's slot is its own: one SSUBSCRIBE per channel.
        for key in keys {
            subscriber.ssubscribe(key.as_str()).await?;
        }
        let notify = std::sync::Arc::new(tokio::sync::Notify::new());
        let waker = notify.clone();
        let listen = tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match messages.recv().await {
                    Ok(_) | Err(RecvError::Lagged(_)) => waker.notify_one(),
                    Err(RecvError::Closed) => return,
                }
            }
        });
        let resubscribe = crate::redis::manage_shard_subscriptions(&subscriber);
        Ok(Self {
            notify,
            tasks: vec![listen, resubscribe],
            _subscriber: subscriber,
        })
    }
}

/// One consumer of the flush streams.
pub struct Flusher {
    engine: Engine,
    /// A connection of its own, so that large batches do not hold up the bids.
    redis: Option<Client>,
    /// Wakes the flusher when a script queues on an empty flush stream.
    wake: Option<Wake>,
    /// The flush streams as they can be read together: all at once on one server, one
    /// by one on a cluster (one slot per command).
    batches: Vec<Vec<String>>,
    store: Store,
    config: FlusherConfig,
    metrics: FlushMetrics,
    keys: Vec<String>,
    /// Streams where this consumer may hold unacknowledged entries of its own.
    own_pending: HashSet<String>,
    /// Write attempts of entries PostgreSQL refused, by stream entry id.
    attempts: HashMap<String, u32>,
    last_claim: Option<Instant>,
    groups_ready: bool,
}

impl Flusher {
    /// A flusher reading through `engine`'s Redis and writing to `store`.
    pub fn new(
        engine: &Engine,
        store: Store,
        config: FlusherConfig,
        metrics: FlushMetrics,
    ) -> Self {
        let keys = flush_keys();
        let batches = if engine.is_cluster() {
            keys.iter().map(|k| vec![k.clone()]).collect()
        } else {
            vec![keys.clone()]
        };
        Self {
            engine: engine.clone(),
            redis: None,
            wake: None,
            batches,
            store,
            config,
            metrics,
            // Whatever a previous run of this consumer left pending is retried first.
            own_pending: keys.iter().cloned().collect(),
            keys,
            attempts: HashMap::new(),
            last_claim: None,
            groups_ready: false,
        }
    }

    /// Runs passes until `shutdown` completes, then makes a last attempt to drain.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        info!(consumer = %self.config.consumer, "flusher started");
        tokio::pin!(shutdown);
        let mut backoff = Duration::from_millis(100);
        loop {
            // A pass cut short by the shutdown leaves its entries pending to this
            // consumer; the drain below reads them again.
            let result = tokio::select! {
                biased;
                _ = &mut shutdown => break,
                result = self.pass(Some(self.config.block)) => result,
            };
            let pause = match result {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "flush pass failed; entries stay pending in Redis");
                    self.redis = None;
                    self.wake = None;
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

    /// Runs passes without waiting until one finds nothing left, or `timeout` passes.
    pub async fn drain(&mut self, timeout: Duration) -> Result<(), FlushError> {
        self.own_pending.extend(self.keys.iter().cloned());
        let deadline = Instant::now() + timeout;
        loop {
            let stats = self.pass(None).await?;
            if stats.handled() == 0 || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Notified when a script queues on an empty flush stream (once a pass has started
    /// the subscription): a loop that shares the flusher waits on it without holding it.
    pub fn wake_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        self.wake.as_ref().map(|w| w.notify.clone())
    }

    /// How long an idle flusher waits for a wake-up before it reads again.
    pub fn idle_wait(&self) -> Duration {
        self.config.block
    }

    async fn client(&mut self) -> Result<Client, FlushError> {
        if let Some(client) = &self.redis {
            return Ok(client.clone());
        }
        if self.wake.is_none() {
            self.wake = Some(Wake::start(&self.engine, &self.keys).await?);
        }
        let client = self.engine.dedicated_client().await?;
        self.redis = Some(client.clone());
        Ok(client)
    }

    /// One pass: claim abandoned entries when due, retry this consumer's own pending
    /// entries, else read new ones (waiting up to `block` for a wake-up when there are
    /// none), write and acknowledge.
    pub async fn pass(&mut self, block: Option<Duration>) -> Result<PassStats, FlushError> {
        let redis = self.client().await?;
        if !self.groups_ready {
            for key in &self.keys {
                let created: Result<Value, _> =
                    redis.xgroup_create(key, FLUSH_GROUP, "0", true).await;
                if let Err(e) = created
                    && !e.details().starts_with("BUSYGROUP")
                {
                    return Err(e.into());
                }
            }
            self.groups_ready = true;
        }
        if self
            .last_claim
            .is_none_or(|t| t.elapsed() >= self.config.claim_idle / 2)
        {
            self.claim_and_measure(&redis).await?;
            self.last_claim = Some(Instant::now());
        }
        let mut entries = Vec::new();
        if !self.own_pending.is_empty() {
            let keys: Vec<String> = self.own_pending.iter().cloned().collect();
            entries = self.read(&redis, &keys, "0").await?;
            let holding: HashSet<&str> = entries.iter().map(|e| e.stream.as_str()).collect();
            self.own_pending.retain(|k| holding.contains(k.as_str()));
        }
        if entries.is_empty() {
            let keys = self.keys.clone();
            entries = self.read(&redis, &keys, ">").await?;
            if entries.is_empty()
                && let Some(block) = block
            {
                if let Some(wake) = &self.wake {
                    let _ = tokio::time::timeout(block, wake.notify.notified()).await;
                }
                entries = self.read(&redis, &keys, ">").await?;
            }
        }
        if entries.is_empty() {
            return Ok(PassStats::default());
        }
        self.own_pending
            .extend(entries.iter().map(|e| e.stream.clone()));
        // One span per batch (which consumer, how many events), around everything said
        // while writing it: an event's way into PostgreSQL can be followed in the logs.
        let span = info_span!(
            "flush_batch",
            consumer = %self.config.consumer,
            events = entries.len()
        );
        self.flush(&redis, entries).instrument(span).await
    }

    /// Creates the group on every flush stream (and the stream), from the start, so that
    /// nothing appended before is skipped.
    async fn create_groups(&mut self, redis: &Client) -> Result<(), FlushError> {
        for key in &self.keys {
            let created: Result<Value, _> = redis.xgroup_create(key, FLUSH_GROUP, "0", true).await;
            if let Err(e) = created
                && !e.details().starts_with("BUSYGROUP")
            {
                return Err(e.into());
            }
        }
        self.groups_ready = true;
        Ok(())
    }

    async fn claim_and_measure(&mut self, redis: &Client) -> Result<(), FlushError> {
        let idle = self.config.claim_idle.as_millis() as u64;
        let mut backlog = 0u64;
        for key in &self.keys {
            let claimed: Value = match redis
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
                Err(e) if e.details().starts_with("NOGROUP") => {
                    self.groups_ready = false;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            if let Value::Array(parts) = claimed
                && parts
                    .get(1)
                    .is_some_and(|ids| matches!(ids, Value::Array(ids) if !ids.is_empty()))
            {
                info!(stream = %key, "claimed entries left pending by another consumer");
                self.own_pending.insert(key.clone());
            }
            backlog += group_backlog(redis, key).await.unwrap_or(0);
        }
        self.metrics.backlog.set(backlog as i64);
        let dead: u64 = redis.xlen(DEAD_LETTER_KEY).await.unwrap_or(0);
        self.metrics.dead_letter_len.set(dead as i64);
        Ok(())
    }

    /// Reads `keys` from `from` (`>`: new entries; `0`: this consumer's pending ones),
    /// one command per batch of streams that may be read together.
    async fn read(
        &mut self,
        redis: &Client,
        keys: &[String],
        from: &str,
    ) -> Result<Vec<Entry>, FlushError> {
        let wanted: HashSet<&String> = keys.iter().collect();
        let batches: Vec<Vec<String>> = self
            .batches
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .filter(|k| wanted.contains(k))
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .filter(|batch| !batch.is_empty())
            .collect();
        let mut entries = Vec::new();
        for batch in batches {
            entries.extend(self.read_batch(redis, &batch, from).await?);
        }
        Ok(entries)
    }

    async fn read_batch(
        &mut self,
        redis: &Client,
        keys: &[String],
        from: &str,
    ) -> Result<Vec<Entry>, FlushError> {
        let ids: Vec<&str> = keys.iter().map(|_| from).collect();
        let mut retried = false;
        let value = loop {
            let reply: Result<Value, _> = redis
                .xreadgroup(
                    FLUSH_GROUP,
                    &self.config.consumer,
                    Some(self.config.batch),
                    None,
                    false,
                    keys.to_vec(),
                    ids.clone(),
                )
                .await;
            match reply {
                Ok(Value::Null) => return Ok(Vec::new()),
                Ok(value) => break value,
                Err(e) if e.details().starts_with("NOGROUP") && !retried => {
                    // A group deleted by hand, or a Redis that lost its data: recreate them
                    // from the start and read again.
                    warn!("flush group missing; creating it again");
                    self.create_groups(redis).await?;
                    retried = true;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let streams: XReadReply = value.into_xread_response()?;
        let mut entries = Vec::new();
        for (stream, list) in streams {
            for (id, fields) in list {
                entries.push(Entry {
                    stream: stream.clone(),
                    id,
                    fields,
                });
            }
        }
        Ok(entries)
    }

    async fn flush(
        &mut self,
        redis: &Client,
        entries: Vec<Entry>,
    ) -> Result<PassStats, FlushError> {
        let mut stats = PassStats::default();
        let mut good: Vec<(Entry, FlushItem)> = Vec::with_capacity(entries.len());
        for entry in entries {
            match parse_entry(&entry) {
                Ok(item) => good.push((entry, item)),
                Err(reason) => {
                    self.dead_letter(redis, &entry, &reason).await?;
                    stats.dead_lettered += 1;
                }
            }
        }
        if good.is_empty() {
            return Ok(stats);
        }
        let items: Vec<FlushItem> = good.iter().map(|(_, item)| item.clone()).collect();
        match self.store.write_batch(&items).await {
            Ok(report) => {
                let conflicts: HashSet<usize> = report.conflicts.iter().copied().collect();
                for &i in &report.conflicts {
                    let (entry, item) = &good[i];
                    self.conflict(redis, entry, item).await?;
                }
                stats.conflicts += conflicts.len() as u64;
                stats.dead_lettered += conflicts.len() as u64;
                let done: Vec<&Entry> = good
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !conflicts.contains(i))
                    .map(|(_, (entry, _))| entry)
                    .collect();
                self.ack(redis, &done).await?;
                stats.written += done.len() as u64;
                self.metrics.written.inc_by(report.written as u64);
                let now = crate::runtime::now_ms();
                for (i, (_, item)) in good.iter().enumerate() {
                    if let AuctionEvent::Bid(bid) = &item.event
                        && !conflicts.contains(&i)
                    {
                        self.metrics
                            .lag
                            .observe((now - bid.at).max(0) as f64 / 1000.0);
                    }
                }
                debug!(
                    count = done.len(),
                    events = %good
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !conflicts.contains(i))
                        .map(|(_, (_, item))| format!("{}#{}", item.auction, item.event.seq()))
                        .collect::<Vec<_>>()
                        .join(","),
                    "flushed events"
                );
            }
            Err(e) if e.is_transient() => {
                self.metrics.failures.inc();
                return Err(e.into());
            }
            Err(e) => {
                self.metrics.failures.inc();
                warn!(error = %e, "batch refused; writing its entries one by one");
                for (entry, item) in good {
                    stats.add(self.write_one(redis, entry, item).await?);
                }
            }
        }
        Ok(stats)
    }

    /// Writes one entry alone; after `max_attempts` refusals it is dead-lettered.
    async fn write_one(
        &mut self,
        redis: &Client,
        entry: Entry,
        item: FlushItem,
    ) -> Result<PassStats, FlushError> {
        let mut stats = PassStats::default();
        match self.store.write_batch(std::slice::from_ref(&item)).await {
            Ok(report) if !report.conflicts.is_empty() => {
                self.conflict(redis, &entry, &item).await?;
                stats.conflicts += 1;
                stats.dead_lettered += 1;
            }
            Ok(report) => {
                self.attempts.remove(&entry.id);
                self.ack(redis, &[&entry]).await?;
                self.metrics.written.inc_by(report.written as u64);
                stats.written += 1;
            }
            Err(e) if e.is_transient() => return Err(e.into()),
            Err(e) => {
                let tries = self.attempts.entry(entry.id.clone()).or_insert(0);
                *tries += 1;
                if *tries >= self.config.max_attempts {
                    self.attempts.remove(&entry.id);
                    self.dead_letter(redis, &entry, &e.to_string()).await?;
                    stats.dead_lettered += 1;
                }
            }
        }
        Ok(stats)
    }

    /// An event that contradicts the record: kept in the dead-letter stream, counted,
    /// logged, and its auction halted (if still at that epoch) until restored.
    async fn conflict(
        &mut self,
        redis: &Client,
        entry: &Entry,
        item: &FlushItem,
    ) -> Result<(), FlushError> {
        self.metrics.conflicts.inc();
        let epoch = match &item.event {
            AuctionEvent::Bid(b) => Some(b.epoch),
            _ => None,
        };
        let halted = match epoch {
            Some(epoch) => {
                self.engine
                    .halt(
                        &item.auction,
                        epoch,
                        &format!("seq {} conflicts with PostgreSQL", item.event.seq()),
                    )
                    .await?
            }
            None => false,
        };
        error!(
            auction = %item.auction,
            seq = item.event.seq(),
            halted,
            "event conflicts with PostgreSQL's record (Redis lost state); kept in {DEAD_LETTER_KEY}"
        );
        self.dead_letter(
            redis,
            entry,
            "conflict: PostgreSQL holds this seq with other content",
        )
        .await
    }

    async fn ack(&self, redis: &Client, entries: &[&Entry]) -> Result<(), FlushError> {
        let mut by_stream: HashMap<&str, Vec<String>> = HashMap::new();
        for entry in entries {
            by_stream
                .entry(entry.stream.as_str())
                .or_default()
                .push(entry.id.clone());
        }
        for (stream, ids) in by_stream {
            let _: i64 = redis.xack(stream, FLUSH_GROUP, ids.clone()).await?;
            // Flushed entries leave Redis: the auction's own stream keeps the replay window.
            let _: i64 = redis.xdel(stream, ids).await?;
        }
        Ok(())
    }

    async fn dead_letter(
        &mut self,
        redis: &Client,
        entry: &Entry,
        reason: &str,
    ) -> Result<(), FlushError> {
        let auction = entry.fields.get("a").cloned().unwrap_or_default();
        let payload = entry.fields.get("e").cloned().unwrap_or_default();
        let _: String = redis
            .xadd(
                DEAD_LETTER_KEY,
                false,
                ("MAXLEN", "~", DEAD_LETTER_MAX as i64),
                "*",
                vec![
                    ("auction", auction.clone()),
                    ("entry", entry.id.clone()),
                    ("event", payload),
                    ("error", reason.to_owned()),
                ],
            )
            .await?;
        self.ack(redis, &[entry]).await?;
        self.metrics.dead_letters.inc();
        error!(auction, entry = %entry.id, reason, "event moved to the dead-letter stream {DEAD_LETTER_KEY}");
        Ok(())
    }
}

fn parse_entry(entry: &Entry) -> Result<FlushItem, String> {
    let auction: AuctionId = entry
        .fields
        .get("a")
        .ok_or("entry has no auction field")?
        .parse()
        .map_err(|e| format!("{e}"))?;
    let json = entry.fields.get("e").ok_or("entry has no event field")?;
    let event =
        AuctionEvent::from_json(json.as_bytes()).map_err(|e| format!("unparseable event: {e}"))?;
    Ok(FlushItem {
        auction,
        json: json.clone(),
        event,
    })
}

async fn group_backlog(redis: &Client, key: &str) -> Result<u64, FlushError> {
    let groups: Value = redis.xinfo_groups(key).await?;
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
