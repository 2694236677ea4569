//! The kube-rs `Controller` on Auctions: finalizer, [`Lifecycle`] reconcile, status
//! patches (server-side apply on the status subresource) and Kubernetes Events.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use gavel_crds::{Auction, AuctionStatus, FINALIZER};
use gavel_engine::changes::ChangeFeed;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{self, Event as FinalizerEvent};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, warn};

use crate::backoff::Backoffs;
use crate::lifecycle::{Lifecycle, LifecycleError, local_now, reconcile_span};
use crate::metrics::{ErrorKind, Metrics};
use crate::status::{self, Failure, Note, Severity};

/// Field manager of the operator's status writes.
pub const FIELD_MANAGER: &str = "gavel-operator";

/// Retry delay while a deletion waits for the last bids to reach PostgreSQL (not a
/// failure: no backoff).
const PENDING_REQUEUE: Duration = Duration::from_millis(500);

/// Why a reconcile failed; it is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis, PostgreSQL or the flush failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// The API server refused or failed a request.
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    /// Adding or removing the finalizer, or the wrapped reconcile, failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<finalizer::Error<Error>>),
    /// Deletion is under way and waits (for the last bids to be flushed).
    #[error("deletion pending: {0}")]
    Pending(String),
}

impl Error {
    /// What failed: the `kind` label of the error metric, and what decides the retry.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Lifecycle(e) => e.kind(),
            Error::Kube(_) => ErrorKind::Kube,
            Error::Pending(_) => ErrorKind::Pending,
            Error::Finalizer(inner) => match inner.as_ref() {
                finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e.kind(),
                _ => ErrorKind::Kube,
            },
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Engine-side I/O.
    pub lifecycle: Lifecycle,
    /// Reconcile counts and durations, auctions per phase (`/metrics`).
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub recorder: Recorder,
    /// Each failing Auction's retry delays.
    pub backoffs: Backoffs,
    /// The status this replica last wrote, by uid (see [`Context::fresh`]).
    written: std::sync::Mutex<std::collections::HashMap<String, AuctionStatus>>,
}

impl Context {
    /// A context for this client; `identity` names this replica in Events.
    pub fn new(
        client: Client,
        lifecycle: Lifecycle,
        metrics: Arc<Metrics>,
        identity: &str,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.to_owned()),
            },
        );
        let backoffs = metrics.backoffs(lifecycle.timing().retry);
        Self {
            client,
            lifecycle,
            metrics,
            recorder,
            backoffs,
            written: Default::default(),
        }
    }

    fn written(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, AuctionStatus>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object to reconcile: `auction` as the watch gave it, or, when its status is not
    /// the one this replica last wrote, the object as the API server holds it now. The
    /// watch cache can lag behind our own status write (a reconcile triggered meanwhile —
    /// by the close in Redis — then sees the phase before it): computed from such a stale
    /// copy, a transition's Event would be published twice.
    async fn fresh(
        &self,
        api: &Api<Auction>,
        auction: &Auction,
    ) -> Result<Option<Auction>, kube::Error> {
        let Some(uid) = auction.metadata.uid.as_deref() else {
            return Ok(None);
        };
        let stale = self
            .written()
            .get(uid)
            .is_some_and(|mine| status::differs(auction.status.as_ref(), mine));
        if !stale {
            return Ok(None);
        }
        let by_name =
            ListParams::default().fields(&format!("metadata.name={}", auction.name_any()));
        let current = api
            .list(&by_name)
            .await?
            .items
            .into_iter()
            .find(|current| current.metadata.uid == auction.metadata.uid);
        // What the API server holds is the latest now (another replica may have written
        // it): copies that match it are not read again.
        match current.as_ref().and_then(|c| c.status.as_ref()) {
            Some(status) => self.remember(auction, status),
            None => self.forget(auction),
        }
        Ok(current)
    }

    fn remember(&self, auction: &Auction, status: &AuctionStatus) {
        if let Some(uid) = auction.metadata.uid.clone() {
            self.written().insert(uid, status.clone());
        }
    }

    fn forget(&self, auction: &Auction) {
        if let Some(uid) = auction.metadata.uid.as_deref() {
            self.written().remove(uid);
        }
    }
}

fn key(auction: &Auction) -> String {
    format!(
        "{}/{}",
        auction.namespace().unwrap_or_default(),
        auction.name_any()
    )
}

/// Reconciles one Auction (the `Controller`'s reconciler), in a span of its own (auction,
/// generation, step).
pub async fn reconcile(auction: Arc<Auction>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = reconcile_span(&auction, auction.metadata.deletion_timestamp.is_some());
    async move {
        let started = Instant::now();
        let key = key(&auction);
        let namespace = auction.namespace().unwrap_or_else(|| "default".into());
        let api: Api<Auction> = Api::namespaced(ctx.client.clone(), &namespace);
        let result = finalizer::finalizer(&api, FINALIZER, auction, |event| async {
            match event {
                FinalizerEvent::Apply(a) => apply(&a, &ctx, &api).await,
                FinalizerEvent::Cleanup(a) => cleanup(&a, &ctx, &api).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        if result.is_ok() {
            ctx.backoffs.reset(&key);
        }
        ctx.metrics
            .reconciled(started.elapsed(), result.as_ref().err().map(Error::kind));
        result
    }
    .instrument(span)
    .await
}

async fn apply(auction: &Auction, ctx: &Context, api: &Api<Auction>) -> Result<Action, Error> {
    let fresh = ctx.fresh(api, auction).await?;
    let auction = fresh.as_ref().unwrap_or(auction);
    let outcome = match ctx.lifecycle.reconcile(auction, false).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // The delay `error_policy` will use, announced in the status.
            let next = ctx.backoffs.peek(&key(auction));
            let failure = Failure {
                message: e.to_string(),
                redis: e.is_redis(),
                attempt: next.attempt,
                retry_in: next.wait,
            };
            let status = status::unavailable(
                auction.status.as_ref(),
                &failure,
                local_now(),
                auction.metadata.generation,
            );
            if status::differs(auction.status.as_ref(), &status) {
                match patch_status(api, auction, &status).await {
                    Ok(()) => ctx.remember(auction, &status),
                    Err(patch_error) => {
                        debug!(error = %patch_error, "cannot report the failure in the status")
                    }
                }
            }
            return Err(e.into());
        }
    };
    if status::differs(auction.status.as_ref(), &outcome.status) {
        patch_status(api, auction, &outcome.status).await?;
        ctx.remember(auction, &outcome.status);
    }
    publish(ctx, auction, &outcome.events).await;
    ctx.metrics.set_phase(&key(auction), outcome.status.phase);
    Ok(outcome
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

async fn cleanup(auction: &Auction, ctx: &Context, api: &Api<Auction>) -> Result<Action, Error> {
    // The watch cache can lag behind an earlier cleanup that has already released the
    // object: ask the API server, so that the release (and its Event) happens once.
    if !still_held(api, auction).await? {
        debug!(auction = %key(auction), "already released");
        return Ok(Action::await_change());
    }
    let outcome = ctx.lifecycle.reconcile(auction, true).await?;
    if !outcome.released {
        return Err(Error::Pending(
            "waiting for the last accepted bids to reach PostgreSQL".into(),
        ));
    }
    publish(ctx, auction, &outcome.events).await;
    ctx.metrics.set_phase(&key(auction), None);
    ctx.forget(auction);
    Ok(Action::await_change())
}

/// Whether the API server still has this very object (same uid) with our finalizer. A
/// list by name, not a get: the chart's RBAC grants the operator list and watch only.
async fn still_held(api: &Api<Auction>, auction: &Auction) -> Result<bool, kube::Error> {
    let by_name = ListParams::default().fields(&format!("metadata.name={}", auction.name_any()));
    Ok(api.list(&by_name).await?.items.iter().any(|current| {
        current.metadata.uid == auction.metadata.uid
            && current.finalizers().iter().any(|f| f == FINALIZER)
    }))
}

/// Writes `status` with server-side apply on the status subresource.
pub async fn patch_status(
    api: &Api<Auction>,
    auction: &Auction,
    status: &AuctionStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": Auction::api_version(&()),
        "kind": Auction::kind(&()),
        "status": status,
    });
    api.patch_status(
        &auction.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn publish(ctx: &Context, auction: &Auction, notes: &[Note]) {
    let reference = auction.object_ref(&());
    for note in notes {
        info!(
            auction = %key(auction),
            reason = %note.reason,
            message = %note.message,
            "event"
        );
        let event = KubeEvent {
            type_: match note.severity {
                Severity::Normal => EventType::Normal,
                Severity::Warning => EventType::Warning,
            },
            reason: note.reason.as_str().into(),
            note: Some(note.message.clone()),
            action: note.action.as_str().into(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            warn!(error = %e, reason = %note.reason, "cannot publish the Event");
        }
    }
}

/// Requeue policy after a failed reconcile: per-auction exponential backoff with jitter,
/// capped ([`crate::backoff`]); reset by the next success. A deletion waiting for its
/// last bids is not a failure and comes back shortly.
pub fn error_policy(auction: Arc<Auction>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = key(&auction);
    if error.kind() == ErrorKind::Pending {
        return Action::requeue(PENDING_REQUEUE);
    }
    let delay = ctx.backoffs.fail(&key);
    warn!(
        auction = %key,
        error = %error,
        attempt = delay.attempt,
        retry_in_ms = u64::try_from(delay.wait.as_millis()).unwrap_or(u64::MAX),
        "reconcile failed; retrying"
    );
    Action::requeue(delay.wait)
}

/// Checks that the Auction CRD is installed, with an actionable message if not.
pub async fn check_crd(client: &Client) -> anyhow::Result<()> {
    let api: Api<Auction> = Api::all(client.clone());
    api.list(&ListParams::default().limit(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list auctions.gavel.dev ({e}); is the CRD installed? \
                 kubectl apply -f crds/auction.yaml"
            )
        })?;
    Ok(())
}

/// Default number of Auctions reconciled at the same time.
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// How often starting the change feed is retried while Redis cannot be reached.
const FEED_RETRY: Duration = Duration::from_secs(2);

/// Runs the controller until `shutdown` completes, with [`DEFAULT_CONCURRENCY`].
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    run_with(ctx, DEFAULT_CONCURRENCY, shutdown).await;
}

/// Runs the controller until `shutdown` completes, reconciling up to `concurrency`
/// Auctions at the same time (each one never twice at once). Besides changes of the
/// objects and the requeues the plan asks for (start, end), an Auction is reconciled when
/// it changed in Redis (bids, a halt), and every Auction when Redis may have lost data
/// ([`ChangeFeed`]): an open auction nobody bids on costs nothing until its end.
pub async fn run_with(
    ctx: Arc<Context>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Auction> = Api::all(ctx.client.clone());
    let (one_tx, one_rx) = mpsc::unbounded_channel::<ObjectRef<Auction>>();
    let (all_tx, all_rx) = mpsc::unbounded_channel::<()>();
    let forward = tokio::spawn(forward_changes(ctx.lifecycle.clone(), one_tx, all_tx));
    Controller::new(api, watcher::Config::default().any_semantic())
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .reconcile_on(receive(one_rx))
        .reconcile_all_on(receive(all_rx))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(auction = %object, "reconciled"),
                Err(e) => debug!(error = %e, "reconcile error"),
            }
        })
        .await;
    forward.abort();
}

fn receive<T>(rx: mpsc::UnboundedReceiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Turns the change feed into reconcile requests (started again if Redis was unreachable).
async fn forward_changes(
    lifecycle: Lifecycle,
    one: mpsc::UnboundedSender<ObjectRef<Auction>>,
    all: mpsc::UnboundedSender<()>,
) {
    let every = lifecycle.timing().refresh;
    let feed = loop {
        match ChangeFeed::start(lifecycle.engine(), every).await {
            Ok(feed) => break feed,
            Err(e) => {
                warn!(error = %e, "cannot follow changes in Redis yet; retrying");
                tokio::time::sleep(FEED_RETRY).await;
            }
        }
    };
    loop {
        let changed = feed.changed().await;
        if changed.all {
            if all.send(()).is_err() {
                return;
            }
            continue;
        }
        for id in changed.auctions {
            if one
                .send(ObjectRef::new(id.name()).within(id.namespace()))
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests;
