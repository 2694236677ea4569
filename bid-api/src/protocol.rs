//! The server's side of the protocol: how the engine's values fill the messages of
//! [`gavel_protocol`] (the one model of the wire, which also parses client frames).
//! Adding a field to a message means adding it in `gavel_protocol` and filling it here
//! (or where the message is built in `ws`).

use gavel_engine::{AuctionEvent, AuctionId, BidEvent, LivePhase, Snapshot as EngineSnapshot};
pub use gavel_protocol::*;

/// The protocol's phase of an engine phase.
pub fn phase(p: LivePhase) -> Phase {
    match p {
        LivePhase::Scheduled => Phase::Scheduled,
        LivePhase::Open => Phase::Open,
        LivePhase::Closing => Phase::Closing,
        LivePhase::Closed => Phase::Closed,
        LivePhase::Cancelled => Phase::Cancelled,
    }
}

/// The `snapshot` message of an engine snapshot.
pub fn snapshot(auction: &AuctionId, s: &EngineSnapshot) -> ServerMessage {
    ServerMessage::Snapshot(Snapshot {
        auction: auction.to_string(),
        seq: s.seq,
        phase: phase(s.phase),
        title: s.title.clone(),
        currency: s.currency.clone(),
        price: s.price,
        leader: s.leader_name.clone(),
        bid_count: s.bid_count,
        min_next: s.min_next,
        ends_at: s.ends_at,
        reserve_met: s.reserve_met,
        has_reserve: Some(s.has_reserve),
        starts_at: s.starts_at,
        scheduled_ends_at: Some(s.scheduled_ends_at),
        your_max: s.your_max,
        epoch: s.epoch,
    })
}

/// The `price` message of a bid event (public fields only; never the ceiling).
pub fn price(auction: &AuctionId, e: &BidEvent) -> ServerMessage {
    ServerMessage::Price(Price {
        auction: auction.to_string(),
        seq: e.seq,
        price: e.price,
        leader: e.leader_name.clone(),
        bid_count: e.bid_count,
        min_next: e.min_next,
        ends_at: e.ends_at,
    })
}

/// The `outbid` message of a bid event, for its displaced bidder.
pub fn outbid(auction: &AuctionId, e: &BidEvent) -> ServerMessage {
    ServerMessage::Outbid(Outbid {
        auction: auction.to_string(),
        seq: e.seq,
        price: e.price,
        min_next: e.min_next,
    })
}

/// The frames every subscriber of an auction receives for one event, in order, and the
/// `outbid` frame for the displaced bidder. Built once per event per process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventMessages {
    /// The event's seq.
    pub seq: u64,
    /// The epoch of the bid, for bids (a subscriber on another epoch resynchronises).
    pub epoch: Option<u64>,
    /// The live state was restored: every subscriber resynchronises (`reset`, `snapshot`).
    pub restored: bool,
    /// `price` (+ `extended`), or `closed`.
    pub public: Vec<ServerMessage>,
    /// Displaced bidder id and its `outbid` message.
    pub outbid: Option<(String, ServerMessage)>,
}

/// Translates an engine event into protocol messages.
pub fn event_messages(auction: &AuctionId, event: &AuctionEvent) -> EventMessages {
    match event {
        AuctionEvent::Bid(e) => {
            let mut public = vec![price(auction, e)];
            if e.extended {
                public.push(ServerMessage::Extended(Extended {
                    auction: auction.to_string(),
                    seq: e.seq,
                    ends_at: e.ends_at,
                }));
            }
            let outbid = e
                .displaced
                .as_ref()
                .filter(|d| **d != e.leader)
                .map(|d| (d.clone(), outbid(auction, e)));
            EventMessages {
                seq: e.seq,
                epoch: Some(e.epoch),
                restored: false,
                public,
                outbid,
            }
        }
        // Private: nothing for anyone (it is never published nor in a stream).
        AuctionEvent::CeilingRaised(e) => EventMessages {
            seq: e.seq,
            epoch: Some(e.epoch),
            restored: false,
            public: Vec::new(),
            outbid: None,
        },
        AuctionEvent::Restored(r) => EventMessages {
            seq: r.seq,
            epoch: Some(r.epoch),
            restored: true,
            public: Vec::new(),
            outbid: None,
        },
        AuctionEvent::Closed(r) => EventMessages {
            seq: r.seq,
            epoch: None,
            restored: false,
            public: vec![ServerMessage::Closed(Closed {
                auction: auction.to_string(),
                seq: r.seq,
                winner: r.winner_name.clone(),
                final_price: r.final_price,
                reserve_met: r.reserve_met,
                cancelled: r.cancelled,
            })],
            outbid: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gavel_engine::{Outcome, RejectCode};
    use serde_json::{Value, json};

    fn id() -> AuctionId {
        "shop/strat-1962".parse().unwrap()
    }

    fn js(m: &ServerMessage) -> Value {
        serde_json::from_str(&m.to_json()).unwrap()
    }

    #[test]
    fn every_engine_code_and_phase_has_its_wire_spelling() {
        for c in RejectCode::ALL {
            assert_eq!(
                ErrorCode::from(c),
                serde_json::from_value(json!(c)).unwrap()
            );
        }
        for p in [
            LivePhase::Scheduled,
            LivePhase::Open,
            LivePhase::Closing,
            LivePhase::Closed,
            LivePhase::Cancelled,
        ] {
            assert_eq!(
                serde_json::to_value(phase(p)).unwrap(),
                json!(format!("{p:?}").to_lowercase())
            );
        }
    }

    #[test]
    fn events_become_public_messages_without_ceilings() {
        let bid = BidEvent {
            seq: 3,
            epoch: 1,
            at: 1,
            bidder: "u2".into(),
            name: "Bo".into(),
            amount: 120,
            max: 999,
            outcome: Outcome::Leading,
            price: 120,
            min_next: 122,
            leader: "u2".into(),
            leader_name: "Bo".into(),
            bid_count: 3,
            ends_at: 50,
            extended: true,
            displaced: Some("u1".into()),
            reserve_met: true,
            ceiling: Some(999),
        };
        let m = event_messages(&id(), &AuctionEvent::Bid(bid));
        assert_eq!(m.seq, 3);
        assert_eq!(
            m.public.iter().map(js).collect::<Vec<_>>(),
            vec![
                json!({"type":"price","auction":"shop/strat-1962","seq":3,"price":120,
                       "leader":"Bo","bid_count":3,"min_next":122,"ends_at":50}),
                json!({"type":"extended","auction":"shop/strat-1962","seq":3,"ends_at":50}),
            ]
        );
        let (who, outbid) = m.outbid.unwrap();
        assert_eq!(who, "u1");
        assert_eq!(
            js(&outbid),
            json!({"type":"outbid","auction":"shop/strat-1962","seq":3,"price":120,"min_next":122})
        );
        for msg in &m.public {
            assert!(!msg.to_json().contains("999"));
        }
        let closed = AuctionEvent::Closed(gavel_engine::AuctionResult {
            seq: 9,
            winner: Some("u2".into()),
            winner_name: Some("Bo".into()),
            final_price: Some(120),
            reserve_met: true,
            bid_count: 3,
            closed_at: 60,
            cancelled: false,
        });
        assert_eq!(
            js(&event_messages(&id(), &closed).public[0]),
            json!({"type":"closed","auction":"shop/strat-1962","seq":9,"winner":"Bo",
                   "final_price":120,"reserve_met":true,"cancelled":false})
        );
    }
}
