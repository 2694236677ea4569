//! Subscriptions of a connection: `subscribe` (snapshot, with a replay after `since` from
//! Redis's stream or PostgreSQL, or `reset` when that history is gone), the live events
//! of the fan-out in `seq` order with gaps filled, and the resynchronisation after a
//! restore.

use gavel_engine::{AuctionEvent, AuctionId, EngineError};
use tracing::{debug, warn};

use super::{Connection, Delivered, Gone, REPLAY_PAGE, Step, reply};
use crate::fanout::FanoutEvent;
use crate::protocol::{ErrorCode, Reset, ResetReason, ServerMessage, event_messages};
use crate::state::Missing;

impl Connection {
    pub(super) async fn subscribe(
        &mut self,
        auction: AuctionId,
        since: Option<u64>,
        epoch: Option<u64>,
    ) -> Step {
        let error = |code, message: String| reply::error(code, message, Some(&auction));
        if !self.subs.contains_key(&auction)
            && self.subs.len() >= self.state.config.max_subscriptions
        {
            let limit = self.state.config.max_subscriptions;
            return self
                .reply(&error(
                    ErrorCode::TooLarge,
                    format!("at most {limit} subscriptions per connection"),
                ))
                .await;
        }
        let was_interested = self.interested(&auction);
        self.subs.remove(&auction);
        if let Err(e) = self.state.fanout.join(&auction, &self.handle, true).await {
            warn!(%auction, error = %e, "cannot subscribe");
            return self
                .reply(&error(
                    ErrorCode::Unavailable,
                    "live updates unavailable; retry".into(),
                ))
                .await;
        }
        let viewer = self.bidder_id().map(str::to_owned);
        let live = self
            .state
            .engine
            .snapshot(&auction, viewer.as_deref())
            .await;
        let snapshot = match live {
            Ok(s) => s,
            Err(e) => {
                if !was_interested {
                    self.state.fanout.leave(&auction, &self.handle).await;
                } else if !self.subs.contains_key(&auction) {
                    self.state.fanout.stop_watching(&auction, self.handle.id);
                }
                let missing = match &e {
                    EngineError::UnknownAuction(_) => Some(self.state.missing(&auction).await),
                    _ => None,
                };
                // A closed auction that left Redis: PostgreSQL has all of it.
                let archived = match missing {
                    Some(Missing::Closed) => self
                        .state
                        .store
                        .closed_snapshot(&auction, viewer.as_deref())
                        .await
                        .unwrap_or_else(|e| {
                            warn!(%auction, error = %e, "cannot read a closed auction from PostgreSQL");
                            None
                        }),
                    _ => None,
                };
                match archived {
                    Some(snapshot) => snapshot,
                    None => {
                        let reply = match missing {
                            Some(Missing::Unknown) => {
                                error(ErrorCode::UnknownAuction, format!("no auction {auction}"))
                            }
                            Some(Missing::Restoring) => error(
                                ErrorCode::Unavailable,
                                "the auction's live state is being restored; retry in a second"
                                    .into(),
                            ),
                            _ => {
                                warn!(%auction, error = %e, "snapshot failed");
                                error(
                                    ErrorCode::Unavailable,
                                    "auction state unavailable; retry".into(),
                                )
                            }
                        };
                        return self.reply(&reply).await;
                    }
                }
            }
        };
        if let Some(since) = since {
            let same_history = epoch.is_none_or(|e| e == snapshot.epoch);
            let resumed = same_history
                && since <= snapshot.seq
                && match self.replay(&auction, since, snapshot.seq).await {
                    Ok(complete) => complete,
                    Err(Gone) => return Step::Drop,
                };
            if !resumed {
                let reset = ServerMessage::Reset(Reset {
                    auction: auction.to_string(),
                    epoch: snapshot.epoch,
                    seq: snapshot.seq,
                    reason: ResetReason::SinceUnknown,
                });
                if self.send_msg(&reset).await.is_err() {
                    return Step::Drop;
                }
            }
        }
        let message = crate::protocol::snapshot(&auction, &snapshot);
        self.subs.insert(
            auction,
            Delivered {
                epoch: snapshot.epoch,
                seq: snapshot.seq,
            },
        );
        self.reply(&message).await
    }

    /// Sends the events with `after < seq <= upto`: from the auction's Redis stream, and
    /// from PostgreSQL for what the stream no longer holds. Returns whether every one of
    /// them was sent (`false`: some are in neither, the client must reset).
    async fn replay(&mut self, auction: &AuctionId, after: u64, upto: u64) -> Result<bool, Gone> {
        let mut next = after;
        while next < upto {
            let limit = REPLAY_PAGE.min(upto - next);
            let mut page = match self.state.engine.events_since(auction, next, limit).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(%auction, error = %e, "cannot read the event stream for a replay");
                    return Ok(false);
                }
            };
            if page.first().is_none_or(|e| e.seq() != next + 1) {
                // Trimmed from Redis (or lost with it): PostgreSQL has the older ones.
                page = match self
                    .state
                    .store
                    .events_after(auction, next, limit as u32)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        warn!(%auction, error = %e, "cannot read PostgreSQL for a replay");
                        return Ok(false);
                    }
                };
                if page.first().is_none_or(|e| e.seq() != next + 1) {
                    return Ok(false);
                }
            }
            for event in page {
                if event.seq() > upto {
                    return Ok(true);
                }
                if event.seq() != next + 1 {
                    return Ok(false);
                }
                next = event.seq();
                self.send_event(auction, &event).await?;
            }
        }
        Ok(true)
    }

    /// Drops what the connection knows of the auction and starts again from its current
    /// state: `reset`, then a fresh `snapshot` (or an `error` if it cannot be read).
    async fn resync(&mut self, auction: &AuctionId) -> Step {
        let viewer = self.bidder_id().map(str::to_owned);
        match self.state.engine.snapshot(auction, viewer.as_deref()).await {
            Ok(snapshot) => {
                let reset = ServerMessage::Reset(Reset {
                    auction: auction.to_string(),
                    epoch: snapshot.epoch,
                    seq: snapshot.seq,
                    reason: ResetReason::Restored,
                });
                if self.send_msg(&reset).await.is_err() {
                    return Step::Drop;
                }
                self.subs.insert(
                    auction.clone(),
                    Delivered {
                        epoch: snapshot.epoch,
                        seq: snapshot.seq,
                    },
                );
                self.reply(&crate::protocol::snapshot(auction, &snapshot))
                    .await
            }
            Err(e) => {
                warn!(%auction, error = %e, "cannot read the restored state");
                self.subs.remove(auction);
                if self.bid_on.contains(auction) {
                    self.state.fanout.stop_watching(auction, self.handle.id);
                } else {
                    self.state.fanout.leave(auction, &self.handle).await;
                }
                self.reply(&reply::error(
                    ErrorCode::Unavailable,
                    "the auction was restored but its state cannot be read; subscribe again".into(),
                    Some(auction),
                ))
                .await
            }
        }
    }

    async fn send_event(&mut self, auction: &AuctionId, event: &AuctionEvent) -> Result<(), Gone> {
        let messages = event_messages(auction, event);
        for message in &messages.public {
            self.send_msg(message).await?;
        }
        if let Some((who, outbid)) = &messages.outbid
            && Some(who.as_str()) == self.bidder_id()
        {
            self.send_msg(outbid).await?;
        }
        Ok(())
    }

    /// One live event: its frames are fed, not flushed (the caller flushes a batch).
    pub(super) async fn on_event(&mut self, event: &FanoutEvent) -> Step {
        let mine = event
            .outbid
            .as_ref()
            .filter(|(who, _)| Some(who.as_str()) == self.bidder_id())
            .map(|(_, frame)| frame.clone());
        let Some(&delivered) = self.subs.get(&event.auction) else {
            if let Some(frame) = mine
                && self.bid_on.contains(&event.auction)
                && self.feed_text(frame).await.is_err()
            {
                return Step::Drop;
            }
            return Step::Continue;
        };
        if event.restored {
            if event.epoch == Some(delivered.epoch) && event.seq == delivered.seq {
                return Step::Continue; // Already resynchronised on this epoch.
            }
            return self.resync(&event.auction).await;
        }
        if event.epoch.is_some_and(|e| e != delivered.epoch) {
            // An event of another history: ours was restored (or is about to be).
            return self.resync(&event.auction).await;
        }
        let last = delivered.seq;
        if event.seq <= last {
            return Step::Continue;
        }
        if event.seq > last + 1 {
            debug!(auction = %event.auction, last, seq = event.seq, "filling a gap from the stream");
            match self.replay(&event.auction, last, event.seq - 1).await {
                Ok(true) => {}
                Ok(false) => return self.resync(&event.auction).await,
                Err(Gone) => return Step::Drop,
            }
        }
        self.subs.insert(
            event.auction.clone(),
            Delivered {
                epoch: delivered.epoch,
                seq: event.seq,
            },
        );
        for frame in event.public.iter().cloned() {
            if self.feed_text(frame).await.is_err() {
                return Step::Drop;
            }
        }
        if let Some(frame) = mine
            && self.feed_text(frame).await.is_err()
        {
            return Step::Drop;
        }
        Step::Continue
    }
}
