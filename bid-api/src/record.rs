//! The `recorded` acknowledgement (`GAVEL_ACKNOWLEDGE=recorded`): a bid is answered only
//! once PostgreSQL has committed its event, so every bid a client was told is accepted
//! survives even the loss of all of Redis's data, not only a Redis restart.
//!
//! The event written is the one the place-bid script put in the flush stream, byte for
//! byte, so the flusher's later write of it is skipped as a replay and a contradiction is
//! still a detected conflict. Bids accepted at the same moment share one transaction
//! (group commit): the cost per bid falls as the load rises. While PostgreSQL does not
//! answer, bids are refused before the engine sees them, so an outage changes no auction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gavel_engine::store::{FlushItem, Store};
use prometheus::{Histogram, HistogramOpts, IntCounter, Registry};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Most bids committed in one transaction.
const MAX_BATCH: usize = 256;
/// Bids waiting for a transaction; more wait for room (backpressure on their sockets).
const QUEUE: usize = 4_096;
/// Longest a commit may take before its bids are answered as unconfirmed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often PostgreSQL is asked whether it is back, while it is not.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Why a bid the engine accepted was not confirmed as recorded.
#[derive(Debug, Error)]
pub enum RecordError {
    /// PostgreSQL refused the write, failed or did not answer in time.
    #[error("PostgreSQL did not commit the bid: {0}")]
    Store(String),
    /// PostgreSQL already holds a different event at this seq (Redis lost state); the
    /// flusher dead-letters it and the auction halts until it is restored.
    #[error("PostgreSQL holds another event at this seq")]
    Conflict,
    /// The recorder stopped (the process is shutting down).
    #[error("the recorder stopped")]
    Stopped,
}

/// A bid's event waiting for its commit, and who waits for it.
struct Pending {
    item: FlushItem,
    done: oneshot::Sender<Result<(), RecordError>>,
}

/// The metrics of the recorded acknowledgement.
#[derive(Clone)]
struct RecordMetrics {
    seconds: Histogram,
    batch: Histogram,
    unconfirmed: IntCounter,
}

impl RecordMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = Self {
            seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "gavel_bid_record_seconds",
                    "Time from the engine's acceptance of a bid to PostgreSQL's commit of it \
                     (GAVEL_ACKNOWLEDGE=recorded)",
                )
                .buckets(vec![
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
                ]),
            )?,
            batch: Histogram::with_opts(
                HistogramOpts::new(
                    "gavel_bid_record_batch_size",
                    "Bids committed per PostgreSQL transaction (GAVEL_ACKNOWLEDGE=recorded)",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            unconfirmed: IntCounter::new(
                "gavel_bids_unconfirmed_total",
                "Bids the engine accepted that PostgreSQL did not confirm in time (answered \
                 UNAVAILABLE; the flusher still records them)",
            )?,
        };
        registry.register(Box::new(m.seconds.clone()))?;
        registry.register(Box::new(m.batch.clone()))?;
        registry.register(Box::new(m.unconfirmed.clone()))?;
        Ok(m)
    }
}

/// Commits accepted bids to PostgreSQL before they are answered; one per process.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<Pending>,
    available: Arc<AtomicBool>,
    metrics: RecordMetrics,
}

impl Recorder {
    /// Starts the recorder's two tasks (the committer and the probe that notices
    /// PostgreSQL coming back); they end with the process.
    pub fn spawn(store: Store, registry: &Registry) -> prometheus::Result<Self> {
        let metrics = RecordMetrics::new(registry)?;
        let available = Arc::new(AtomicBool::new(true));
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(commit(
            store.clone(),
            pending,
            available.clone(),
            metrics.clone(),
        ));
        tokio::spawn(probe(store, available.clone()));
        Ok(Self {
            queue,
            available,
            metrics,
        })
    }

    /// Whether PostgreSQL committed the last write: while it is not, bids are refused
    /// before the engine (retry later) instead of being accepted unconfirmed.
    pub fn available(&self) -> bool {
        self.available.load(Ordering::Relaxed)
    }

    /// Waits until PostgreSQL has committed `item`, the event of a bid the engine has
    /// just accepted.
    pub async fn record(&self, item: FlushItem) -> Result<(), RecordError> {
        let started = Instant::now();
        let (done, confirmed) = oneshot::channel();
        self.queue
            .send(Pending { item, done })
            .await
            .map_err(|_| RecordError::Stopped)?;
        let result = confirmed.await.unwrap_or(Err(RecordError::Stopped));
        match &result {
            Ok(()) => self
                .metrics
                .seconds
                .observe(started.elapsed().as_secs_f64()),
            Err(_) => self.metrics.unconfirmed.inc(),
        }
        result
    }
}

/// Commits what is waiting, as one transaction, and answers each waiter.
async fn commit(
    store: Store,
    mut pending: mpsc::Receiver<Pending>,
    available: Arc<AtomicBool>,
    metrics: RecordMetrics,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while pending.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (items, waiters): (Vec<FlushItem>, Vec<_>) =
            batch.drain(..).map(|p| (p.item, p.done)).unzip();
        metrics.batch.observe(items.len() as f64);
        let written = tokio::time::timeout(WRITE_TIMEOUT, store.write_batch(&items)).await;
        match written {
            Ok(Ok(report)) => {
                available.store(true, Ordering::Relaxed);
                for (i, waiter) in waiters.into_iter().enumerate() {
                    let answer = if report.conflicts.contains(&i) {
                        Err(RecordError::Conflict)
                    } else {
                        Ok(())
                    };
                    let _ = waiter.send(answer);
                }
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no commit within {WRITE_TIMEOUT:?}"),
                };
                if available.swap(false, Ordering::Relaxed) {
                    warn!(
                        error = %error,
                        "PostgreSQL did not commit bids; refusing bids until it answers"
                    );
                }
                for waiter in waiters {
                    let _ = waiter.send(Err(RecordError::Store(error.clone())));
                }
            }
        }
    }
}

/// While PostgreSQL is marked unavailable, asks it every [`PROBE_EVERY`] whether it is back.
async fn probe(store: Store, available: Arc<AtomicBool>) {
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        if !available.load(Ordering::Relaxed)
            && matches!(
                tokio::time::timeout(PROBE_EVERY, store.ping()).await,
                Ok(Ok(()))
            )
        {
            info!("PostgreSQL answers again; taking bids");
            available.store(true, Ordering::Relaxed);
        }
    }
}
