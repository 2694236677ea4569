//! Which auctions changed in Redis: a feed for a process that looks after many auctions
//! (the operator), so that it looks at an auction when something happened to it instead
//! of polling every open auction (docs/design.md, "What an idle auction costs").
//!
//! - Sharded pub/sub, subscribed to the [`FLUSH_SHARDS`] shards' changes channels
//!   ([`changes_channels`]): the scripts announce the id of an auction there at each
//!   accepted bid, close, restore and halt (the live state contradicts PostgreSQL). The
//!   auction is reported changed. A pattern subscription cannot be used: it hears neither
//!   sharded messages nor, on a cluster, anything cheaper than every node's traffic; these
//!   exact shard channels are routed to the node owning each shard, so on a cluster the
//!   feed holds one connection per node and each message crosses no other node. The
//!   subscriptions follow failovers and slot moves ([`crate::redis::manage_shard_subscriptions`]).
//! - Losing Redis's data is noticed for all auctions at once, never per auction: a pub/sub
//!   connection reconnected or the cluster's slots changed (a restart, a failover:
//!   messages may have been lost too), a server's `run_id` changed (on a cluster, any
//!   primary's: a failover), or a shard's marker key ([`marker_key`]) that the feed sets is
//!   gone or different (a flush, a node that lost its data). Checked every `check`
//!   interval: one `GET` per shard and one `INFO` per node.
//! - Changes are coalesced: [`ChangeFeed::changed`] hands them out at most once per
//!   `check` interval, so a hot auction costs its watcher one look per interval whatever
//!   the bid rate.
//!
//! A change of one auction's keys by hand (`DEL`) is not noticed here; the operator's slow
//! periodic look at each auction covers that.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::{ClusterStateChange, InfoKind, Message};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::keys::{AuctionId, FLUSH_SHARDS, changes_channels, marker_key};
use crate::{Engine, EngineError};

/// What changed since the last [`ChangeFeed::changed`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changed {
    /// Auctions with new events (bids, close, restore) or a halt.
    pub auctions: HashSet<AuctionId>,
    /// Redis may have lost state or messages: look at every auction.
    pub all: bool,
}

impl Changed {
    fn is_empty(&self) -> bool {
        !self.all && self.auctions.is_empty()
    }
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Changed>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Changed> {
        // The set stays valid whatever a panicking holder did.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn auction(&self, id: AuctionId) {
        if self.lock().auctions.insert(id) {
            self.notify.notify_one();
        }
    }

    fn all(&self, why: &str) {
        info!(
            why,
            "Redis may have lost state: every auction is looked at again"
        );
        self.lock().all = true;
        self.notify.notify_one();
    }
}

/// The feed; its background tasks stop when it is dropped.
pub struct ChangeFeed {
    shared: Arc<Shared>,
    every: Duration,
    last: Mutex<Option<Instant>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl ChangeFeed {
    /// Subscribes to every auction's channels on the engine's Redis and starts the checks
    /// for lost data, every `every` (also the coalescing interval).
    pub async fn start(engine: &Engine, every: Duration) -> Result<Self, EngineError> {
        let subscriber = crate::redis::subscriber(engine.config())?;
        let messages = subscriber.message_rx();
        subscriber.init().await?;
        // Taken after the first connection: only a reconnection means changes were missed.
        let reconnects = subscriber.reconnect_rx();
        let cluster_changes = subscriber.cluster_change_rx();
        // One slot per channel: one SSUBSCRIBE each, routed to the channel's node.
        for channel in changes_channels() {
            subscriber.ssubscribe(channel).await?;
        }
        let resubscriber = crate::redis::manage_shard_subscriptions(&subscriber);
        let shared = Arc::new(Shared::default());
        let mut checker = Checker {
            redis: engine.redis().clone(),
            token: format!(
                "{}-{}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos())
            ),
            markers: None,
            run_id: None,
        };
        // The first check only learns the current marker and server.
        checker.check(&shared).await;
        let tasks = vec![
            tokio::spawn(listen(subscriber, messages, shared.clone())),
            tokio::spawn(watch_reconnects(
                reconnects,
                cluster_changes,
                shared.clone(),
            )),
            tokio::spawn(checker.run(every, shared.clone())),
            tokio::spawn(async move {
                let _ = resubscriber.await;
            }),
        ];
        Ok(Self {
            shared,
            every,
            last: Mutex::new(None),
            tasks,
        })
    }

    /// Waits until something changed, at most once per interval, and takes it.
    /// Cancel-safe: nothing is taken until it returns.
    pub async fn changed(&self) -> Changed {
        loop {
            let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(last) = last {
                tokio::time::sleep_until((last + self.every).into()).await;
            }
            let taken = std::mem::take(&mut *self.shared.lock());
            if !taken.is_empty() {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                return taken;
            }
            self.shared.notify.notified().await;
        }
    }
}

async fn listen(
    subscriber: SubscriberClient,
    mut messages: tokio::sync::broadcast::Receiver<Message>,
    shared: Arc<Shared>,
) {
    // Keeps the connection for as long as the feed lives.
    let _subscriber = subscriber;
    loop {
        match messages.recv().await {
            Ok(message) => match message
                .value
                .as_str()
                .and_then(|id| id.parse::<AuctionId>().ok())
            {
                Some(id) => shared.auction(id),
                None => debug!(channel = %&*message.channel, "unreadable change notice"),
            },
            Err(RecvError::Lagged(n)) => shared.all(&format!("{n} change notices were missed")),
            Err(RecvError::Closed) => return,
        }
    }
}

async fn watch_reconnects(
    mut reconnects: tokio::sync::broadcast::Receiver<Server>,
    mut cluster_changes: tokio::sync::broadcast::Receiver<Vec<ClusterStateChange>>,
    shared: Arc<Shared>,
) {
    loop {
        tokio::select! {
            r = reconnects.recv() => match r {
                Ok(server) => shared.all(&format!(
                    "the pub/sub connection to {server} was re-established"
                )),
                Err(RecvError::Lagged(_)) => shared.all("the pub/sub connection was re-established"),
                Err(RecvError::Closed) => return,
            },
            r = cluster_changes.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => shared.all("the Redis Cluster's slots changed"),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Notices that Redis lost its data (or is another server) between two checks.
struct Checker {
    redis: Client,
    token: String,
    markers: Option<Vec<String>>,
    run_id: Option<String>,
}

impl Checker {
    async fn run(mut self, every: Duration, shared: Arc<Shared>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.check(&shared).await;
        }
    }

    async fn check(&mut self, shared: &Shared) {
        match self.read().await {
            Ok((markers, run_id)) => {
                let first = self.markers.is_none() && self.run_id.is_none();
                if !first && self.run_id.as_ref() != Some(&run_id) {
                    shared.all("the Redis server changed (run_id)");
                } else if !first && self.markers.as_ref() != Some(&markers) {
                    shared.all("a Redis marker key changed (data flushed or replaced)");
                }
                self.markers = Some(markers);
                self.run_id = Some(run_id);
            }
            Err(e) => warn!(error = %e, "cannot check Redis for lost data; retrying"),
        }
    }

    /// Every shard's marker (set if absent) and the `run_id`s of the primaries.
    async fn read(&self) -> Result<(Vec<String>, String), fred::error::Error> {
        let mut markers = Vec::with_capacity(usize::from(FLUSH_SHARDS));
        for shard in 0..FLUSH_SHARDS {
            let key = marker_key(shard);
            let mut marker: Option<String> = self.redis.get(&key).await?;
            if marker.is_none() {
                // Set only if still absent: several watchers share one marker.
                let _: Option<String> = self
                    .redis
                    .set(&key, &self.token, None, Some(SetOptions::NX), false)
                    .await?;
                marker = self.redis.get(&key).await?;
            }
            markers.push(marker.unwrap_or_default());
        }
        let run_id_of = |info: String| {
            info.lines()
                .find_map(|l| l.strip_prefix("run_id:"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        let run_id = match self.redis.cached_cluster_state() {
            Some(state) if self.redis.is_clustered() => {
                let mut ids = Vec::new();
                for node in state.unique_primary_nodes() {
                    let info: String = self
                        .redis
                        .with_cluster_node(node)
                        .info(Some(InfoKind::Server))
                        .await?;
                    ids.push(run_id_of(info));
                }
                ids.sort();
                ids.join(",")
            }
            _ => run_id_of(self.redis.info(Some(InfoKind::Server)).await?),
        };
        Ok((markers, run_id))
    }
}
