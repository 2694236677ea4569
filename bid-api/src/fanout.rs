//! Fan-out of auction events to this process's WebSocket connections.
//!
//! The process holds one Redis pub/sub client and subscribes to an auction's channel
//! once, while at least one local connection is interested in it (subscribed to it, or
//! bid on it and may need `outbid`), never once per socket. A connection joins an
//! auction as a bidder at its first bid there and stays until it closes, so a bid costs
//! no subscription command: the `outbid` of an event is routed through a per-auction map
//! from bidder id to that bidder's connections. One dispatcher task reads
//! every message in order, parses it once, serialises each protocol message once and
//! hands the shared bytes ([`Utf8Bytes`], reference counted) to every interested
//! connection's bounded queue with `try_send`. A connection whose queue is full is a slow
//! consumer: it is dropped from every topic and told to close with 1013, so it never
//! slows the others and its memory stays bounded by the queue length.
//!
//! Auction channels are shard channels (`SSUBSCRIBE`; the scripts `SPUBLISH`), on one
//! server as on a Redis Cluster: there each subscription goes to the node owning the
//! auction's slot, and each event crosses no other node. After a reconnection (a node
//! restarted, a failover) or a change of the cluster's slots (a slot moved, and its old
//! node dropped the subscriptions), every subscription is made again on the node that
//! owns it now ([`gavel_engine::redis::manage_shard_subscriptions`]).
//!
//! Pub/sub may lose messages (a Redis reconnect, a lagging dispatcher): each connection
//! checks `seq` continuity and fills any gap from the auction's stream (see `ws`). A
//! `restored` notice, or an event of another epoch, makes it resynchronise instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use fred::clients::SubscriberClient;
use fred::prelude::*;
use gavel_engine::runtime::now_ms;
use gavel_engine::{AuctionEvent, AuctionId};
use tokio::sync::{Notify, broadcast, mpsc};
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::protocol::event_messages;

/// Failures of the fan-out.
#[derive(Debug, thiserror::Error)]
pub enum FanoutError {
    /// Redis refused or timed out.
    #[error("redis pub/sub: {0}")]
    Redis(#[from] fred::error::Error),
}

/// One event, ready to send: every frame serialised once, shared by all connections.
#[derive(Debug)]
pub struct FanoutEvent {
    /// The auction the event belongs to: the connections subscribed to it receive it.
    pub auction: AuctionId,
    /// The event's seq.
    pub seq: u64,
    /// The epoch of a bid event (or of a restore).
    pub epoch: Option<u64>,
    /// The auction's live state was restored: subscribers resynchronise.
    pub restored: bool,
    /// Frames for every subscriber, in order (`price` [+ `extended`], or `closed`).
    pub public: Vec<Utf8Bytes>,
    /// The displaced bidder's id and its `outbid` frame.
    pub outbid: Option<(String, Utf8Bytes)>,
}

/// Tells a connection it has been dropped as a slow consumer.
#[derive(Debug, Default)]
pub struct Kick {
    flag: AtomicBool,
    notify: Notify,
}

impl Kick {
    /// Marks the connection kicked and wakes it.
    pub fn kick(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Whether it was kicked.
    pub fn is_kicked(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    /// Resolves once kicked.
    pub async fn kicked(&self) {
        while !self.is_kicked() {
            self.notify.notified().await;
        }
    }
}

/// A connection as the fan-out sees it.
#[derive(Debug)]
pub struct ConnHandle {
    /// Unique id within the process.
    pub id: u64,
    /// The connection's bounded event queue.
    pub tx: mpsc::Sender<Arc<FanoutEvent>>,
    /// Set when the queue overflowed.
    pub kick: Arc<Kick>,
    /// The bidder on the connection, for `outbid`.
    pub bidder: Option<String>,
}

/// The local connections interested in one auction.
#[derive(Default)]
struct Topic {
    /// Connections subscribed to the auction: every event goes to each.
    watchers: HashMap<u64, Arc<ConnHandle>>,
    /// Connections that bid on the auction, by bidder id: an `outbid` goes to the
    /// displaced bidder's connections only (those not watching already), found in one
    /// lookup, whatever the number of bidders.
    bidders: HashMap<String, Vec<Arc<ConnHandle>>>,
    subscribed: bool,
}

impl Topic {
    fn is_empty(&self) -> bool {
        self.watchers.is_empty() && self.bidders.is_empty()
    }

    fn add(&mut self, handle: &Arc<ConnHandle>, watching: bool) {
        if watching {
            self.watchers.insert(handle.id, handle.clone());
        } else if let Some(bidder) = &handle.bidder {
            let conns = self.bidders.entry(bidder.clone()).or_default();
            if !conns.iter().any(|c| c.id == handle.id) {
                conns.push(handle.clone());
            }
        }
    }

    fn remove(&mut self, handle: &ConnHandle) {
        self.watchers.remove(&handle.id);
        if let Some(bidder) = &handle.bidder
            && let Some(conns) = self.bidders.get_mut(bidder)
        {
            conns.retain(|c| c.id != handle.id);
            if conns.is_empty() {
                self.bidders.remove(bidder);
            }
        }
    }
}

/// Hands an event to one connection's queue; `false` when the connection is gone or was
/// kicked as a slow consumer (its queue is full).
fn offer(handle: &ConnHandle, event: &Arc<FanoutEvent>, metrics: &Metrics) -> bool {
    match handle.tx.try_send(event.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            metrics.slow_consumers.inc();
            handle.kick.kick();
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

struct Inner {
    subscriber: SubscriberClient,
    topics: Mutex<HashMap<AuctionId, Topic>>,
    /// Serialises SUBSCRIBE/UNSUBSCRIBE so that they reach Redis in decision order.
    commands: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

/// The process's fan-out; cheap to clone.
#[derive(Clone)]
pub struct Fanout {
    inner: Arc<Inner>,
}

impl Fanout {
    /// Connects the pub/sub client and starts the dispatcher task.
    pub async fn start(
        redis_url: &str,
        metrics: Metrics,
    ) -> Result<(Self, tokio::task::JoinHandle<()>), FanoutError> {
        let config = gavel_engine::redis::config(redis_url)?;
        let subscriber = gavel_engine::redis::subscriber(&config)?;
        let rx = subscriber.message_rx();
        subscriber.init().await?;
        // Runs for as long as the client lives.
        let _resubscriber = gavel_engine::redis::manage_shard_subscriptions(&subscriber);
        let fanout = Self {
            inner: Arc::new(Inner {
                subscriber,
                topics: Mutex::new(HashMap::new()),
                commands: tokio::sync::Mutex::new(()),
                metrics,
            }),
        };
        let task = tokio::spawn(fanout.clone().dispatch(rx));
        Ok((fanout, task))
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<AuctionId, Topic>> {
        // A poisoned lock only means another thread panicked mid-update of a map that
        // stays structurally valid; keep serving.
        self.inner
            .topics
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a connection's interest in an auction (`watching`: every event; otherwise,
    /// as a bidder, only its own `outbid`), subscribing this process in Redis if it was not
    /// yet. When this returns, every later event of the auction reaches the connection's
    /// queue. An auction this process already follows costs no Redis command.
    pub async fn join(
        &self,
        auction: &AuctionId,
        handle: &Arc<ConnHandle>,
        watching: bool,
    ) -> Result<(), FanoutError> {
        // Already subscribed: only the map changes. (A `leave` unsubscribing meanwhile
        // has removed the topic first, under the same lock: then this takes the slow path.)
        if let Some(topic) = self.topics().get_mut(auction)
            && topic.subscribed
        {
            topic.add(handle, watching);
            return Ok(());
        }
        let _order = self.inner.commands.lock().await;
        let need_subscribe = {
            let mut topics = self.topics();
            let topic = topics.entry(auction.clone()).or_default();
            topic.add(handle, watching);
            !topic.subscribed
        };
        if need_subscribe {
            if let Err(e) = self.inner.subscriber.ssubscribe(auction.channel()).await {
                let mut topics = self.topics();
                if let Some(topic) = topics.get_mut(auction) {
                    topic.remove(handle);
                    if topic.is_empty() && !topic.subscribed {
                        topics.remove(auction);
                    }
                }
                return Err(e.into());
            }
            let mut topics = self.topics();
            if let Some(topic) = topics.get_mut(auction) {
                topic.subscribed = true;
            }
            self.inner.metrics.fanout_auctions.set(topics.len() as i64);
            debug!(%auction, "subscribed to auction channel");
        }
        Ok(())
    }

    /// Stops `watching` an auction but keeps `outbid` delivery (the connection bid on it
    /// and joined as a bidder too).
    pub fn stop_watching(&self, auction: &AuctionId, conn: u64) {
        if let Some(topic) = self.topics().get_mut(auction) {
            topic.watchers.remove(&conn);
        }
    }

    /// Removes a connection from an auction; the last one out unsubscribes the process.
    pub async fn leave(&self, auction: &AuctionId, handle: &ConnHandle) {
        let _order = self.inner.commands.lock().await;
        let unsubscribe = {
            let mut topics = self.topics();
            let empty = match topics.get_mut(auction) {
                Some(topic) => {
                    topic.remove(handle);
                    topic.is_empty()
                }
                None => false,
            };
            let subscribed = empty && topics.remove(auction).is_some_and(|t| t.subscribed);
            self.inner.metrics.fanout_auctions.set(topics.len() as i64);
            subscribed
        };
        if unsubscribe {
            if let Err(e) = self.inner.subscriber.sunsubscribe(auction.channel()).await {
                warn!(%auction, error = %e, "cannot unsubscribe from auction channel");
            }
            debug!(%auction, "unsubscribed from auction channel");
        }
    }

    /// Number of auctions this process is subscribed to.
    pub fn auctions(&self) -> usize {
        self.topics().len()
    }

    async fn dispatch(self, mut rx: broadcast::Receiver<fred::types::Message>) {
        loop {
            match rx.recv().await {
                Ok(message) => self.deliver(message),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(
                        missed = n,
                        "fan-out dispatcher lagged; subscribers will fill the gap from the streams"
                    );
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }

    fn deliver(&self, message: fred::types::Message) {
        let Some(auction) = AuctionId::from_key(&message.channel) else {
            return;
        };
        let Some(payload) = message.value.as_bytes() else {
            return;
        };
        let event = match AuctionEvent::from_json(payload) {
            Ok(event) => event,
            Err(e) => {
                warn!(%auction, error = %e, "ignoring unparseable event");
                return;
            }
        };
        // A leader's private raise is never published; should one arrive, no one learns of it.
        if matches!(event, AuctionEvent::CeilingRaised(_)) {
            return;
        }
        self.inner.metrics.fanout_events.inc();
        let lag_from = match &event {
            AuctionEvent::Bid(b) => Some(b.at),
            AuctionEvent::CeilingRaised(_)
            | AuctionEvent::Closed(_)
            | AuctionEvent::Restored(_) => None,
        };
        let messages = event_messages(&auction, &event);
        let shared = Arc::new(FanoutEvent {
            auction: auction.clone(),
            seq: messages.seq,
            epoch: messages.epoch,
            restored: messages.restored,
            public: messages
                .public
                .iter()
                .map(|m| Utf8Bytes::from(m.to_json()))
                .collect(),
            outbid: messages
                .outbid
                .map(|(who, m)| (who, Utf8Bytes::from(m.to_json()))),
        });
        let metrics = &self.inner.metrics;
        let mut topics = self.topics();
        let Some(topic) = topics.get_mut(&auction) else {
            return;
        };
        topic
            .watchers
            .retain(|_, handle| offer(handle, &shared, metrics));
        // The displaced bidder's other connections (a watcher got the event above).
        if let Some((who, _)) = &shared.outbid
            && let Some(conns) = topic.bidders.get_mut(who.as_str())
        {
            let watchers = &topic.watchers;
            conns.retain(|c| watchers.contains_key(&c.id) || offer(c, &shared, metrics));
            if conns.is_empty() {
                topic.bidders.remove(who.as_str());
            }
        }
        drop(topics);
        if let Some(at) = lag_from {
            let lag = (now_ms() - at).max(0) as f64 / 1000.0;
            self.inner.metrics.fanout_lag.observe(lag);
        }
    }
}
