//! The reconcile loop shared by the Kubernetes controller and the standalone mode:
//! observe (Redis snapshot), [`plan`], carry out the step through the engine, observe
//! again, until the plan is to wait. Returns the status to write, the events to publish
//! and when to come back; writing them is the caller's job.
//!
//! Closing exactly once rests on the engine: the close script is atomic and idempotent
//! (a second call returns the first result), so a restart or a racing reconcile at the
//! end time at worst repeats a harmless call. The result is recorded in PostgreSQL only
//! after every accepted event has been flushed there.

use std::sync::Arc;
use std::time::Duration;

use gavel_crds::{Auction, AuctionStatus, SpecError};
use gavel_engine::flusher::{FlushError, Flusher};
use gavel_engine::outbound::{self, FeedStore};
use gavel_engine::restore::restored_state;
use gavel_engine::store::{Store, StoreError};
use gavel_engine::{AuctionId, CloseOutcome, Engine, EngineError, RestoreMode, Restored};
use kube::ResourceExt;
use tokio::sync::Mutex;
use tracing::{Span, debug, info, info_span, warn};

use crate::metrics::ErrorKind;
use crate::plan::{self, Durable, Live, Observed, Step, Timing};
use crate::status::{self, ConditionType, EventAction, EventReason, Note, Severity};

/// Most steps one reconcile carries out before it yields and comes back.
const MAX_STEPS: usize = 8;

/// Retry delay of a provision that reached Redis but not PostgreSQL.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// How long one reconcile lets its own flusher drain before checking what is left.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// A transient failure: the reconcile is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// Redis failed or answered something unexpected.
    #[error("redis: {0}")]
    Engine(#[from] EngineError),
    /// PostgreSQL failed.
    #[error("postgres: {0}")]
    Store(#[from] StoreError),
    /// Flushing the last bids failed.
    #[error("flush: {0}")]
    Flush(#[from] FlushError),
}

impl LifecycleError {
    /// What failed, for the error metric and the retry policy.
    pub fn kind(&self) -> ErrorKind {
        match self {
            LifecycleError::Engine(_) => ErrorKind::Redis,
            LifecycleError::Store(_) => ErrorKind::Postgres,
            LifecycleError::Flush(_) => ErrorKind::Flush,
        }
    }

    /// Whether Redis failed (bids are refused meanwhile), rather than PostgreSQL.
    pub fn is_redis(&self) -> bool {
        self.kind() == ErrorKind::Redis
    }
}

/// The span of one reconcile, in both modes: the auction, the generation of its spec,
/// whether it is being deleted, and the step under way (recorded by
/// [`Lifecycle::reconcile`] as it goes), so that every log line of a reconcile says which
/// auction and step it belongs to.
pub fn reconcile_span(auction: &Auction, deleting: bool) -> Span {
    info_span!(
        "reconcile",
        auction = %format!(
            "{}/{}",
            auction.namespace().unwrap_or_else(|| "default".into()),
            auction.name_any()
        ),
        generation = auction.metadata.generation,
        deleting,
        step = tracing::field::Empty,
    )
}

/// What one reconcile decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The status that describes the auction now.
    pub status: AuctionStatus,
    /// Events of the transition from the object's status to `status`.
    pub events: Vec<Note>,
    /// When to reconcile again (`None`: only when the object changes).
    pub requeue: Option<Duration>,
    /// Deletion finished: the finalizer may go.
    pub released: bool,
}

/// The engine-side I/O of the operator: Redis (engine), PostgreSQL (store) and a flusher
/// of its own, so that closing never depends on another process's flusher.
#[derive(Clone)]
pub struct Lifecycle {
    engine: Engine,
    store: Store,
    flusher: Arc<Mutex<Flusher>>,
    /// The event feed's outbox: openings and restores are queued there.
    feed: FeedStore,
    timing: Timing,
    /// When reading PostgreSQL's record last failed.
    durable_failed: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
}

/// Longest wait for PostgreSQL's record during a reconcile.
const DURABLE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long after a failed read of PostgreSQL's record reconciles do without it.
const DURABLE_BACKOFF: Duration = Duration::from_secs(5);

/// Milliseconds since the Unix epoch by the local clock.
pub use gavel_engine::runtime::now_ms as local_now;

/// The auction's id, or why its name cannot be one.
pub fn auction_id(auction: &Auction) -> Result<AuctionId, SpecError> {
    let namespace = auction.namespace().unwrap_or_else(|| "default".into());
    AuctionId::new(&namespace, &auction.name_any()).map_err(|e| SpecError {
        field: "metadata".into(),
        message: e.to_string(),
    })
}

/// Whether `status` says the final result is in PostgreSQL.
pub fn recorded_in(status: Option<&AuctionStatus>) -> bool {
    status.is_some_and(|s| {
        s.phase.is_some_and(gavel_crds::Phase::is_final)
            && status::is_true(&s.conditions, ConditionType::ResultRecorded)
    })
}

impl Lifecycle {
    /// A lifecycle over these connections; `flusher` is shared with the background flush
    /// loop when there is one.
    pub fn new(engine: Engine, store: Store, flusher: Arc<Mutex<Flusher>>, timing: Timing) -> Self {
        Self {
            engine,
            feed: FeedStore::new(store.pool().clone()),
            store,
            flusher,
            timing,
            durable_failed: Arc::default(),
        }
    }

    /// The tuning of the plan.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// The engine handle.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The PostgreSQL store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The shared flusher.
    pub fn flusher(&self) -> &Arc<Mutex<Flusher>> {
        &self.flusher
    }

    /// Reconciles one Auction: `deleting` when it is being deleted.
    pub async fn reconcile(
        &self,
        auction: &Auction,
        deleting: bool,
    ) -> Result<Outcome, LifecycleError> {
        let outcome = self.reconcile_steps(auction, deleting).await?;
        if outcome
            .events
            .iter()
            .any(|note| note.reason == EventReason::Opened)
            && let (Ok(id), Ok(settings)) = (auction_id(auction), auction.spec.to_settings())
        {
            // The event feed's `auction.opened` (epoch 0: the outbox takes the auction's).
            let now = local_now();
            let at = settings.starts_at.filter(|s| *s <= now).unwrap_or(now);
            let opened = outbound::opened(&id, &settings, 0, at);
            if let Err(e) = self.feed.record(&[opened]).await {
                warn!(auction = %id, error = %e, "cannot queue auction.opened in the event feed");
            }
        }
        Ok(outcome)
    }

    async fn reconcile_steps(
        &self,
        auction: &Auction,
        deleting: bool,
    ) -> Result<Outcome, LifecycleError> {
        let mut obs = Observed {
            settings: auction.spec.to_settings(),
            cancel: auction.spec.cancel_requested(),
            generation: auction.metadata.generation,
            status: auction.status.clone(),
            deleting,
            live: None,
            refused: None,
            recorded: recorded_in(auction.status.as_ref()),
            unflushed: None,
            provisioned: false,
            store_error: None,
            now: local_now(),
            durable: None,
            restored: None,
            retention: auction
                .spec
                .retention_ms()
                .ok()
                .flatten()
                .map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
            removed: false,
        };
        let id = match auction_id(auction) {
            Ok(id) => id,
            Err(e) => {
                // Only possible outside Kubernetes (standalone files): nothing can be
                // provisioned under such a name.
                obs.settings = Err(e);
                return Ok(self.finish(auction, &obs, None, deleting));
            }
        };
        // PostgreSQL first: what it holds came from Redis, so a later snapshot is never
        // behind it unless Redis lost state. Read once per reconcile: PostgreSQL's record
        // only grows by what Redis already holds, so the steps below cannot make it newer
        // than Redis, and a close storm costs one read per auction, not one per step.
        if !obs.recorded {
            obs.durable = self.observe_durable(&id).await;
        }
        for _ in 0..MAX_STEPS {
            obs.live = self.observe(&id).await?;
            obs.now = local_now();
            let step = plan::plan(&obs, &self.timing);
            Span::current().record("step", step.name());
            debug!(auction = %id, ?step, "plan");
            match step {
                Step::Wait { requeue } => {
                    let requeue = match (&obs.store_error, requeue) {
                        (Some(_), r) => Some(r.map_or(STORE_RETRY, |r| r.min(STORE_RETRY))),
                        (None, r) => r,
                    };
                    return Ok(self.finish(auction, &obs, requeue, false));
                }
                Step::Release => return Ok(self.finish(auction, &obs, None, true)),
                Step::Provision => {
                    self.provision(&id, &mut obs, auction.spec.sink_uri())
                        .await?
                }
                Step::Restore(mode) => self.restore(&id, &mut obs, mode).await?,
                Step::Close(mode) => match self.engine.close(&id, mode).await? {
                    CloseOutcome::Closed(result) => info!(
                        auction = %id,
                        winner = result.winner_name.as_deref().unwrap_or("-"),
                        final_price = result.final_price,
                        bids = result.bid_count,
                        cancelled = result.cancelled,
                        "auction closed"
                    ),
                    CloseOutcome::NotEnded { ends_at } => {
                        debug!(auction = %id, ends_at, "not ended yet (soft close moved the end)")
                    }
                },
                Step::Record(result) => {
                    // Usually a flusher has the last events already; else flush them here
                    // if the shared flusher is free. When it is busy (its background loop,
                    // or another auction's drain) it is flushing already: the plan comes
                    // back shortly instead of queueing, so the closes of a storm are not
                    // recorded one drain at a time.
                    let mut left = result
                        .seq
                        .saturating_sub(self.store.event_count(&id).await?);
                    if left > 0 && self.try_drain().await? {
                        left = result
                            .seq
                            .saturating_sub(self.store.event_count(&id).await?);
                    }
                    obs.unflushed = Some(left);
                    if left == 0 {
                        self.store.record_result(&id, &result).await?;
                        obs.recorded = true;
                        info!(auction = %id, "result recorded in PostgreSQL");
                    } else {
                        debug!(auction = %id, left, "waiting for the last events to be flushed");
                    }
                }
                Step::Remove => {
                    let flushed = self.store.event_count(&id).await?;
                    self.engine.remove(&id, flushed).await?;
                    if !deleting {
                        // Its retention passed: the status stays what it was (closed and
                        // recorded); nothing is left to do for it.
                        info!(auction = %id, "closed auction left Redis; PostgreSQL serves it from now on");
                        obs.removed = true;
                        return Ok(self.finish(auction, &obs, None, false));
                    }
                    info!(auction = %id, "live Redis state removed; PostgreSQL records kept");
                }
            }
        }
        warn!(auction = %id, "reconcile took too many steps; coming back shortly");
        Ok(self.finish(auction, &obs, Some(Duration::from_millis(200)), false))
    }

    async fn observe(&self, id: &AuctionId) -> Result<Option<Live>, LifecycleError> {
        match self.engine.snapshot(id, None).await {
            Ok(snapshot) => Ok(Some(Live::from(&snapshot))),
            Err(EngineError::UnknownAuction(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// PostgreSQL's record of the auction (was it provisioned, its highest recorded seq).
    /// `None` when PostgreSQL cannot answer quickly: bidding and closing never wait on
    /// it, so after a failure it is not asked again for [`DURABLE_BACKOFF`].
    async fn observe_durable(&self, id: &AuctionId) -> Option<Durable> {
        let failed_at = *self
            .durable_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if failed_at.is_some_and(|at| at.elapsed() < DURABLE_BACKOFF) {
            return None;
        }
        let error = match tokio::time::timeout(DURABLE_TIMEOUT, self.store.durable(id)).await {
            Ok(Ok((known, seq))) => return Some(Durable { known, seq }),
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {DURABLE_TIMEOUT:?}"),
        };
        warn!(auction = %id, error, "cannot read the auction's record in PostgreSQL");
        *self
            .durable_failed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        None
    }

    /// Rebuilds the live state from PostgreSQL's record (see `gavel_engine::restore`).
    async fn restore(
        &self,
        id: &AuctionId,
        obs: &mut Observed,
        mode: RestoreMode,
    ) -> Result<(), LifecycleError> {
        let Ok(settings) = obs.settings.clone() else {
            return Ok(());
        };
        let record = self.store.begin_restore(id).await?;
        let state = restored_state(&settings, &record);
        match self.engine.restore(id, &state, mode).await? {
            Restored::Restored => {
                let why = match (mode, obs.live.as_ref().and_then(|l| l.halted.clone())) {
                    (RestoreMode::Missing, _) => "Redis lost the live state".to_owned(),
                    (RestoreMode::Replace { .. }, Some(reason)) => {
                        format!("the live state contradicted PostgreSQL ({reason})")
                    }
                    (RestoreMode::Replace { .. }, None) => {
                        "the live state in Redis was behind PostgreSQL's record".to_owned()
                    }
                };
                let message = format!(
                    "{why}; restored from PostgreSQL at seq {} (epoch {}) at {}",
                    state.seq,
                    state.epoch,
                    gavel_crds::format_time(local_now())
                );
                warn!(auction = %id, seq = state.seq, epoch = state.epoch, "{message}");
                let restored = outbound::restored(id, state.seq, state.epoch, local_now());
                if let Err(e) = self.feed.record(&[restored]).await {
                    warn!(auction = %id, error = %e, "cannot queue auction.restored in the event feed");
                }
                obs.restored = Some(message);
                obs.provisioned = true;
            }
            Restored::Superseded => {
                info!(auction = %id, "live state already restored or provisioned by another process")
            }
        }
        Ok(())
    }

    async fn provision(
        &self,
        id: &AuctionId,
        obs: &mut Observed,
        sink: Option<&str>,
    ) -> Result<(), LifecycleError> {
        let Ok(settings) = obs.settings.clone() else {
            return Ok(());
        };
        match self.engine.provision(id, &settings).await {
            Ok(outcome) => {
                obs.provisioned = true;
                info!(auction = %id, ?outcome, "provisioned");
                // Redis decides from here on; PostgreSQL gets the settings when it can.
                let recorded = match self.store.upsert_auction(id, &settings).await {
                    Ok(_) => self.feed.set_sink(id, sink).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = recorded {
                    warn!(auction = %id, error = %e, "cannot record the auction in PostgreSQL; retrying");
                    obs.store_error = Some(e.to_string());
                }
            }
            Err(EngineError::PricingFrozen(_)) => {
                warn!(auction = %id, "pricing change refused: the auction has bids");
                obs.refused = Some(plan::pricing_frozen_message());
            }
            Err(EngineError::Settings(e)) => {
                obs.settings = Err(SpecError {
                    field: "spec".into(),
                    message: e.to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Drains the shared flusher if no one holds it; whether it did.
    async fn try_drain(&self) -> Result<bool, LifecycleError> {
        let Ok(mut flusher) = self.flusher.try_lock() else {
            return Ok(false);
        };
        flusher.drain(DRAIN_TIMEOUT).await?;
        Ok(true)
    }

    fn finish(
        &self,
        auction: &Auction,
        obs: &Observed,
        requeue: Option<Duration>,
        released: bool,
    ) -> Outcome {
        let status = plan::desired_status(obs);
        let events = if released {
            vec![Note::new(
                Severity::Normal,
                EventReason::Removed,
                EventAction::Remove,
                "live state removed from Redis; PostgreSQL records kept".into(),
            )]
        } else {
            status::events(auction.status.as_ref(), &status, &auction.spec.currency)
        };
        Outcome {
            status,
            events,
            requeue,
            released,
        }
    }
}

/// Moves accepted bids from Redis to PostgreSQL continuously (standalone default);
/// runs until the task is dropped. An idle pass waits for the flusher's wake-up without
/// holding it, so a reconcile can drain meanwhile and an idle platform costs one read per
/// flush stream per [`Flusher::idle_wait`].
pub async fn run_flusher(flusher: Arc<Mutex<Flusher>>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let (result, wake, idle_wait) = {
            let mut flusher = flusher.lock().await;
            let result = flusher.pass(None).await;
            (result, flusher.wake_signal(), flusher.idle_wait())
        };
        match result {
            Ok(stats) => {
                backoff = Duration::from_millis(100);
                if stats.handled() == 0 {
                    match wake {
                        Some(wake) => {
                            let _ = tokio::time::timeout(idle_wait, wake.notified()).await;
                        }
                        None => tokio::time::sleep(idle_wait).await,
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "flush pass failed; bids stay in Redis until PostgreSQL answers");
                backoff = (backoff * 2).min(Duration::from_secs(2));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}
