//! Bids of a connection: who may bid, the limit on auctions bid on, the engine's decision
//! and its reply, counted in `gavel_bids_total{outcome}`, each bid in a tracing span.

use std::time::Instant;

use gavel_engine::{AuctionId, BidError, BidRequest, RejectCode};
use tracing::{Instrument, debug, debug_span, warn};

use super::{Connection, Step, reply};
use crate::auth::unix_now;
use crate::protocol::{ErrorCode, Ref, ServerMessage};
use crate::state::{Missing, PlaceError};

impl Connection {
    /// Decides one bid and replies, in a span that names it (auction, bidder, ref) and
    /// records how it ended (outcome, seq): one bid can be followed through the logs.
    pub(super) async fn bid(
        &mut self,
        auction: AuctionId,
        request: BidRequest,
        r#ref: Ref,
    ) -> Step {
        let span = debug_span!(
            "bid",
            auction = %auction,
            bidder = self.bidder_id().unwrap_or("-"),
            "ref" = %r#ref,
            outcome = tracing::field::Empty,
            seq = tracing::field::Empty,
        );
        let reply = self
            .decide_bid(&auction, request, &r#ref)
            .instrument(span.clone())
            .await;
        if let Some(label) = reply.bid_label() {
            span.record("outcome", label);
        }
        if let ServerMessage::BidResult(result) = &reply {
            span.record("seq", result.seq);
        }
        span.in_scope(|| debug!("bid answered"));
        self.reply(&reply).await
    }

    /// The reply to a bid: refused before the engine (identity, limits) or decided by it.
    /// Counted in `gavel_bids_total{outcome}` except for limit refusals.
    async fn decide_bid(
        &mut self,
        auction: &AuctionId,
        request: BidRequest,
        r#ref: &Ref,
    ) -> ServerMessage {
        let bidder = match &self.identity {
            Some(identity) if !identity.may_bid => {
                let message = format!(
                    "this token may watch but not bid: it lacks {}",
                    self.state.auth.bid_requirement().unwrap_or_default()
                );
                return self.count(reply::rejected(
                    auction,
                    r#ref,
                    ErrorCode::Forbidden,
                    message,
                ));
            }
            Some(identity) if identity.valid_at(unix_now(), self.state.auth.leeway()) => {
                identity.bidder.clone()
            }
            other => {
                let message = if other.is_none() {
                    "anonymous connections may watch but not bid; connect with a token"
                } else {
                    "token expired; send a refresh with a fresh token"
                };
                return self.count(reply::rejected(
                    auction,
                    r#ref,
                    ErrorCode::Unauthenticated,
                    message.into(),
                ));
            }
        };
        let started = Instant::now();
        // Be in the fan-out as this auction's bidder before the bid lands, so that losing
        // the lead is never missed: once, at the first bid, whatever its outcome (a
        // refused bid keeps it, so the next one costs no pub/sub command).
        let joined_now = !self.bid_on.contains(auction);
        if joined_now {
            // The auctions a connection follows (subscribed or bid on) are bounded too.
            let limit = self.state.config.max_subscriptions;
            if !self.subs.contains_key(auction) && self.bid_on.len() >= limit {
                return reply::rejected(
                    auction,
                    r#ref,
                    ErrorCode::TooLarge,
                    format!("at most {limit} auctions bid on per connection; open another"),
                );
            }
            match self.state.fanout.join(auction, &self.handle, false).await {
                Ok(()) => {
                    self.bid_on.insert(auction.clone());
                }
                Err(e) => warn!(%auction, error = %e, "cannot subscribe for outbid notices"),
            }
        }
        let result = self.state.place_bid(auction, &bidder, request).await;
        self.state
            .metrics
            .bid_latency
            .observe(started.elapsed().as_secs_f64());
        let reply = match result {
            Ok(accepted) => reply::accepted(auction, r#ref, &accepted),
            Err(PlaceError::Bid(BidError::Rejected(mut r))) => {
                if r.code == RejectCode::UnknownAuction {
                    // Nothing to follow there: no subscription kept for it.
                    if joined_now && self.bid_on.remove(auction) {
                        self.forget_bid_on(auction).await;
                    }
                    match self.state.missing(auction).await {
                        Missing::Unknown => {}
                        Missing::Closed => r.code = RejectCode::AuctionClosed,
                        Missing::Restoring | Missing::Unreachable => {
                            r.code = RejectCode::Unavailable;
                            r.retry_after_ms = Some(1_000);
                        }
                    }
                }
                reply::refused(auction, r#ref, &r)
            }
            Err(PlaceError::Bid(BidError::Engine(e))) => {
                warn!(%auction, error = %e, "bid failed in the engine");
                reply::rejected(
                    auction,
                    r#ref,
                    ErrorCode::Unavailable,
                    "the bid could not be confirmed; check the snapshot before retrying".into(),
                )
            }
            Err(e @ PlaceError::Unconfirmed(..)) => {
                warn!(%auction, error = %e, "bid accepted but not confirmed as recorded");
                reply::rejected(
                    auction,
                    r#ref,
                    ErrorCode::Unavailable,
                    "the bid was accepted but PostgreSQL did not confirm it: it may \
                     count; check the snapshot before bidding again"
                        .into(),
                )
            }
        };
        self.count(reply)
    }

    /// Leaves an auction this connection bid on, unless it is subscribed to it.
    async fn forget_bid_on(&mut self, auction: &AuctionId) {
        if !self.subs.contains_key(auction) {
            self.state.fanout.leave(auction, &self.handle).await;
        }
    }

    /// Counts a bid's reply in `gavel_bids_total{outcome}`.
    fn count(&self, reply: ServerMessage) -> ServerMessage {
        if let Some(label) = reply.bid_label() {
            self.state.metrics.bids.with_label_values(&[label]).inc();
        }
        reply
    }
}
