//! The events an auction emits, as the Lua scripts write them.
//!
//! Each accepted bid and each close produces one JSON event, appended to the auction's
//! Redis stream (for durability and replay) and published on its channel (for live
//! fan-out). A leader's private ceiling raise is the one exception: queued for the flusher
//! only, never in the stream nor published. The flusher, the bid-api and the tests all read
//! this one format.

use serde::{Deserialize, Serialize};

use crate::rules::{AuctionResult, BidAccepted, Outcome};
use crate::settings::{Amount, Millis};

/// One entry of an auction's event stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AuctionEvent {
    /// A bid was accepted.
    Bid(BidEvent),
    /// The leader raised its own ceiling and no public fact changed (README § Bidding
    /// rules): private, never in the auction's stream nor published, only queued on the
    /// flush stream so that PostgreSQL records it (`ceiling_raises`). Its `seq` is that of
    /// the public event it follows; it has none of its own.
    CeilingRaised(BidEvent),
    /// The auction closed.
    Closed(AuctionResult),
    /// The live state was rebuilt from PostgreSQL (published only, never in a stream):
    /// every watcher resynchronises from a fresh snapshot.
    Restored(RestoredNotice),
}

/// What watchers learn of a restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredNotice {
    /// The last seq of the restored state.
    pub seq: u64,
    /// The new epoch.
    pub epoch: u64,
}

impl AuctionEvent {
    /// The event's sequence number within its auction.
    pub fn seq(&self) -> u64 {
        match self {
            AuctionEvent::Bid(bid) | AuctionEvent::CeilingRaised(bid) => bid.seq,
            AuctionEvent::Closed(result) => result.seq,
            AuctionEvent::Restored(notice) => notice.seq,
        }
    }

    /// Parses an event as the scripts encode it.
    pub fn from_json(json: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(json)
    }
}

/// An accepted bid, with the auction's public state right after it. `max` is the
/// bidder's ceiling and must never leave Gavel's own processes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidEvent {
    /// Sequence number.
    pub seq: u64,
    /// Epoch of the live state that accepted it (see [`crate::restore`]).
    #[serde(default = "first_epoch")]
    pub epoch: u64,
    /// Redis server time of the bid.
    pub at: Millis,
    /// Bidder id.
    pub bidder: String,
    /// Bidder display name.
    pub name: String,
    /// Effective amount `a`.
    pub amount: Amount,
    /// Effective ceiling `m` (private).
    pub max: Amount,
    /// How the bid left its bidder.
    pub outcome: Outcome,
    /// Price after the bid.
    pub price: Amount,
    /// Minimum next bid after the bid.
    pub min_next: Amount,
    /// Leader id after the bid.
    pub leader: String,
    /// Leader display name after the bid.
    pub leader_name: String,
    /// Accepted bids so far.
    pub bid_count: u64,
    /// Effective end after the bid.
    pub ends_at: Millis,
    /// Whether the bid moved the effective end.
    pub extended: bool,
    /// The bidder who lost the lead, if any.
    pub displaced: Option<String>,
    /// Whether the reserve is met.
    pub reserve_met: bool,
    /// The leader's ceiling after the bid (private, like `max`): what a restore needs.
    #[serde(default)]
    pub ceiling: Option<Amount>,
}

fn first_epoch() -> u64 {
    1
}

impl From<BidEvent> for BidAccepted {
    fn from(e: BidEvent) -> Self {
        BidAccepted {
            outcome: e.outcome,
            seq: e.seq,
            amount: e.amount,
            max: e.max,
            price: e.price,
            min_next: e.min_next,
            leader: e.leader,
            leader_name: e.leader_name,
            bid_count: e.bid_count,
            ends_at: e.ends_at,
            extended: e.extended,
            displaced: e.displaced,
            reserve_met: e.reserve_met,
            epoch: e.epoch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_kinds() {
        let bid = br#"{"kind":"bid","seq":3,"at":17,"bidder":"u\/1","name":"Ann","amount":100,
            "max":200,"outcome":"outbid","price":120,"min_next":122,"leader":"u2",
            "leader_name":"Bo","bid_count":3,"ends_at":99,"extended":false,"displaced":null,
            "reserve_met":true}"#;
        let e = AuctionEvent::from_json(bid).unwrap();
        assert_eq!(e.seq(), 3);
        let AuctionEvent::Bid(b) = e else { panic!() };
        assert_eq!((b.bidder.as_str(), b.outcome), ("u/1", Outcome::Outbid));
        let closed = br#"{"kind":"closed","seq":4,"winner":null,"winner_name":null,
            "final_price":null,"reserve_met":false,"bid_count":0,"closed_at":5,"cancelled":true}"#;
        assert_eq!(AuctionEvent::from_json(closed).unwrap().seq(), 4);
        assert!(AuctionEvent::from_json(b"{\"kind\":\"other\"}").is_err());
    }
}
