//! Which auctions changed in Redis: a feed for a process that looks after many auctions
//! (the operator), so that it looks at an auction when something happened to it instead
//! of polling every open auction (docs/design.md, "What an idle auction costs").
//!
//! - One pub/sub connection, pattern-subscribed to every auction's channels: each accepted
//!   bid, close and restore is published on the auction's `live` channel, and a halt (the
//!   live state contradicts PostgreSQL) on its `notice` channel. The auction is reported
//!   changed.
//! - Losing Redis's data is noticed for all auctions at once, never per auction: the
//!   pub/sub connection reconnected (a restart, a failover: messages may have been lost
//!   too), the server's `run_id` changed, or the marker key [`MARKER_KEY`] that the feed
//!   sets is gone or different (a flush). Checked every `check` interval, two commands.
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
use fred::types::{InfoKind, Message};
use tokio::sync::Notify;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::keys::{ALL_CHANNELS_PATTERN, AuctionId, MARKER_KEY};
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
        let subscriber = Builder::from_config(engine.config().clone())
            .with_performance_config(|perf| {
                perf.default_command_timeout = Duration::from_secs(5);
                perf.broadcast_channel_capacity = 16_384;
            })
            .with_connection_config(|conn| {
                conn.connection_timeout = Duration::from_secs(5);
            })
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .build_subscriber_client()?;
        let messages = subscriber.message_rx();
        subscriber.init().await?;
        // Taken after the first connection: only a reconnection means changes were missed.
        let reconnects = subscriber.reconnect_rx();
        subscriber.psubscribe(ALL_CHANNELS_PATTERN).await?;
        let resubscriber = subscriber.manage_subscriptions();
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
            marker: None,
            run_id: None,
        };
        // The first check only learns the current marker and server.
        checker.check(&shared).await;
        let tasks = vec![
            tokio::spawn(listen(subscriber, messages, shared.clone())),
            tokio::spawn(watch_reconnects(reconnects, shared.clone())),
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
            Ok(message) => match AuctionId::from_key(&message.channel) {
                Some(id) => shared.auction(id),
                None => debug!(channel = %&*message.channel, "message on an unknown channel"),
            },
            Err(RecvError::Lagged(n)) => shared.all(&format!("{n} change notices were missed")),
            Err(RecvError::Closed) => return,
        }
    }
}

async fn watch_reconnects(
    mut reconnects: tokio::sync::broadcast::Receiver<Server>,
    shared: Arc<Shared>,
) {
    loop {
        match reconnects.recv().await {
            Ok(server) => shared.all(&format!(
                "the pub/sub connection to {server} was re-established"
            )),
            Err(RecvError::Lagged(_)) => shared.all("the pub/sub connection was re-established"),
            Err(RecvError::Closed) => return,
        }
    }
}

/// Notices that Redis lost its data (or is another server) between two checks.
struct Checker {
    redis: Client,
    token: String,
    marker: Option<String>,
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
            Ok((marker, run_id)) => {
                let first = self.marker.is_none() && self.run_id.is_none();
                if !first && self.run_id.as_ref() != Some(&run_id) {
                    shared.all("the Redis server changed (run_id)");
                } else if !first && self.marker.as_ref() != Some(&marker) {
                    shared.all("the Redis marker key changed (data flushed or replaced)");
                }
                self.marker = Some(marker);
                self.run_id = Some(run_id);
            }
            Err(e) => warn!(error = %e, "cannot check Redis for lost data; retrying"),
        }
    }

    async fn read(&self) -> Result<(String, String), fred::error::Error> {
        let mut marker: Option<String> = self.redis.get(MARKER_KEY).await?;
        if marker.is_none() {
            // Set only if still absent: several watchers share one marker.
            let _: Option<String> = self
                .redis
                .set(MARKER_KEY, &self.token, None, Some(SetOptions::NX), false)
                .await?;
            marker = self.redis.get(MARKER_KEY).await?;
        }
        let info: String = self.redis.info(Some(InfoKind::Server)).await?;
        let run_id = info
            .lines()
            .find_map(|l| l.strip_prefix("run_id:"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        Ok((marker.unwrap_or_default(), run_id))
    }
}
