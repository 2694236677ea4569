//! The state shared by every request and connection of one process.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gavel_engine::store::Store;
use gavel_engine::{
    AuctionId, BidAccepted, BidError, BidRequest, Bidder, Engine, RejectCode, Rejection,
};
use tokio::sync::{Notify, Semaphore, watch};

use crate::auth::Authenticator;
use crate::config::Config;
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::record::{RecordError, Recorder};

/// Everything a handler needs; shared behind an `Arc`.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// The engine's Redis client.
    pub engine: Engine,
    /// PostgreSQL, for history and readiness.
    pub store: Store,
    /// The process's fan-out.
    pub fanout: Fanout,
    /// Token verification.
    pub auth: Authenticator,
    /// The Prometheus registry and the bid-api's metrics in it (`/metrics`).
    pub metrics: Metrics,
    /// Lower-cased allowed origins.
    pub allowed_origins: HashSet<String>,
    /// Becomes `true` when the process starts shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// With `GAVEL_ACKNOWLEDGE=recorded`: commits each accepted bid before its answer.
    recorder: Option<Recorder>,
    next_conn: AtomicU64,
    open: AtomicUsize,
    all_closed: Notify,
    missing: MissingLookups,
}

/// Why [`AppState::place_bid`] has no acceptance to answer with.
#[derive(Debug, thiserror::Error)]
pub enum PlaceError {
    /// Refused, or the engine failed (its outcome unknown).
    #[error(transparent)]
    Bid(#[from] BidError),
    /// The engine accepted it (at this seq) but PostgreSQL did not confirm it: it counts,
    /// yet the bidder cannot be told it is recorded.
    #[error("bid #{0} accepted but not confirmed as recorded: {1}")]
    Unconfirmed(u64, RecordError),
}

/// What PostgreSQL says of an auction Redis does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Never provisioned.
    Unknown,
    /// Provisioned and not closed: Redis lost it and the operator is restoring it.
    Restoring,
    /// Closed (its live state left Redis after its retention).
    Closed,
    /// PostgreSQL cannot say right now.
    Unreachable,
}

/// Bounded, briefly cached PostgreSQL lookups of auctions Redis does not know, so that
/// names a client invents cost PostgreSQL a bounded load.
struct MissingLookups {
    permits: Semaphore,
    cache: Mutex<HashMap<AuctionId, (Instant, Missing)>>,
}

/// How long a lookup's answer is reused.
const MISSING_TTL: Duration = Duration::from_secs(1);
/// Most answers kept.
const MISSING_CACHE: usize = 10_000;
/// Most lookups in flight at once; more are answered `Unreachable` (retry).
const MISSING_CONCURRENCY: usize = 8;

impl AppState {
    /// Assembles the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Config,
        engine: Engine,
        store: Store,
        fanout: Fanout,
        auth: Authenticator,
        metrics: Metrics,
        shutdown: watch::Receiver<bool>,
        recorder: Option<Recorder>,
    ) -> Arc<Self> {
        let allowed_origins = config
            .allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
            .filter(|o| !o.is_empty())
            .collect();
        let engine = engine
            .with_replay_window(config.replay_window)
            .with_replay_max_age(config.replay_max_age);
        Arc::new(Self {
            config,
            engine,
            store,
            fanout,
            auth,
            metrics,
            allowed_origins,
            shutdown,
            recorder,
            next_conn: AtomicU64::new(1),
            open: AtomicUsize::new(0),
            all_closed: Notify::new(),
            missing: MissingLookups {
                permits: Semaphore::new(MISSING_CONCURRENCY),
                cache: Mutex::new(HashMap::new()),
            },
        })
    }

    /// Places a bid and, with `GAVEL_ACKNOWLEDGE=recorded`, returns only once PostgreSQL
    /// has committed it: refused up front (`UNAVAILABLE`) while PostgreSQL is down, and
    /// [`PlaceError::Unconfirmed`] if the engine accepted it but the commit failed (the
    /// flusher still records it then).
    pub async fn place_bid(
        &self,
        auction: &AuctionId,
        bidder: &Bidder,
        request: BidRequest,
    ) -> Result<BidAccepted, PlaceError> {
        let Some(recorder) = &self.recorder else {
            return Ok(self.engine.place_bid(auction, bidder, request).await?);
        };
        if !recorder.available() {
            return Err(PlaceError::Bid(BidError::Rejected(Rejection {
                code: RejectCode::Unavailable,
                min_next: None,
                retry_after_ms: Some(1_000),
            })));
        }
        let (accepted, event) = self
            .engine
            .place_bid_event(auction, bidder, request, None)
            .await?;
        recorder
            .record(event)
            .await
            .map_err(|e| PlaceError::Unconfirmed(accepted.seq, e))?;
        Ok(accepted)
    }

    /// Asks PostgreSQL about an auction Redis does not have (see [`Missing`]).
    pub async fn missing(&self, id: &AuctionId) -> Missing {
        let cached = |cache: &Mutex<HashMap<AuctionId, (Instant, Missing)>>| {
            let cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(id)
                .filter(|(at, _)| at.elapsed() < MISSING_TTL)
                .map(|(_, m)| *m)
        };
        if let Some(answer) = cached(&self.missing.cache) {
            return answer;
        }
        let Ok(_permit) = self.missing.permits.try_acquire() else {
            return Missing::Unreachable;
        };
        let answer = match self.store.known_auction(id).await {
            Ok(None) => Missing::Unknown,
            Ok(Some(known)) if known.result.is_some() => Missing::Closed,
            Ok(Some(_)) => Missing::Restoring,
            Err(e) => {
                tracing::debug!(auction = %id, error = %e, "cannot ask PostgreSQL about an auction");
                return Missing::Unreachable;
            }
        };
        let mut cache = self.missing.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MISSING_CACHE {
            cache.retain(|_, (at, _)| at.elapsed() < MISSING_TTL);
            if cache.len() >= MISSING_CACHE {
                cache.clear();
            }
        }
        cache.insert(id.clone(), (Instant::now(), answer));
        answer
    }

    /// Whether the process is shutting down.
    pub fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Reserves a connection slot, or `None` when the limit is reached.
    pub fn open_connection(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let open = self.open.fetch_add(1, Ordering::SeqCst);
        if open >= self.config.max_connections {
            self.release();
            return None;
        }
        self.metrics.connections.inc();
        self.metrics.connections_total.inc();
        Some(ConnectionSlot {
            state: self.clone(),
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
        })
    }

    fn release(&self) {
        if self.open.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.all_closed.notify_waiters();
        }
    }

    /// Open WebSocket connections.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Resolves once no WebSocket connection is open.
    pub async fn all_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.open_connections() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// One open connection's place in the count; released on drop.
pub struct ConnectionSlot {
    state: Arc<AppState>,
    /// The connection's id.
    pub id: u64,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.state.metrics.connections.dec();
        self.state.release();
    }
}
