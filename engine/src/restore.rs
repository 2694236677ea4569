//! Rebuilding an auction's live state from PostgreSQL, the durable record.
//!
//! Redis decides while an auction is open, but it may lose what it holds: a restart
//! without persistence, a failover to a lagging replica, a wiped node. PostgreSQL holds
//! every event the flushers committed (the `events` table, exactly as the scripts emitted
//! them). [`restored_state`] turns that record — the last bid, the close if any, each
//! bidder's own ceiling — and the auction's settings into the state hash the scripts
//! read, as a pure function; [`crate::Engine::restore`] writes it atomically.
//!
//! Every restore starts a new *epoch*. Events carry the epoch of the state that accepted
//! them, so a client holding events of a lost history (accepted by Redis, never flushed)
//! tells them apart and resynchronises, and the flusher never halts a restored auction on
//! evidence from an older epoch.

use serde::Serialize;

use crate::client::{SETTINGS_FIELDS, settings_args};
use crate::event::BidEvent;
use crate::rules::AuctionResult;
use crate::settings::{Amount, AuctionSettings};

/// What PostgreSQL holds of one auction, as a restore needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableRecord {
    /// The epoch the restored state gets (one more than the last one).
    pub epoch: u64,
    /// Highest seq recorded (bids and close).
    pub seq: u64,
    /// The last accepted bid, if any.
    pub last_bid: Option<BidEvent>,
    /// The close, if recorded, with its JSON exactly as emitted.
    pub closed: Option<(AuctionResult, String)>,
    /// Each bidder's own latest ceiling (what `your_max` shows), by bidder id, private
    /// ceiling raises included.
    pub ceilings: Vec<(String, Amount)>,
}

/// The live state to write: the state hash's fields and the ceilings hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestoredState {
    /// Field/value pairs of the state hash.
    pub fields: Vec<(String, String)>,
    /// Bidder id and own ceiling pairs of the ceilings hash.
    pub ceilings: Vec<(String, Amount)>,
    /// The restored seq.
    pub seq: u64,
    /// The new epoch.
    pub epoch: u64,
}

#[derive(Serialize)]
struct Notice {
    kind: &'static str,
    seq: u64,
    epoch: u64,
}

impl RestoredState {
    /// The `restored` notice published to watchers (an [`crate::AuctionEvent::Restored`]).
    pub fn notice(&self) -> String {
        serde_json::to_string(&Notice {
            kind: "restored",
            seq: self.seq,
            epoch: self.epoch,
        })
        .unwrap_or_default()
    }

    /// The value of one state field, for tests and logs.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The live state equivalent to `record` under `settings`: what the scripts would hold had
/// Redis never lost anything after the last recorded event (rate-limit buckets excepted:
/// they start full).
pub fn restored_state(settings: &AuctionSettings, record: &DurableRecord) -> RestoredState {
    let mut fields: Vec<(String, String)> = SETTINGS_FIELDS
        .iter()
        .map(|k| (*k).to_owned())
        .zip(settings_args(settings))
        .collect();
    let mut set = |k: &str, v: String| fields.push((k.to_owned(), v));
    let no_reserve = settings.reserve_price.is_none();
    match &record.last_bid {
        None => {
            set("price", "0".into());
            set("leader", String::new());
            set("leader_name", String::new());
            set("ceiling", "0".into());
            set("bid_count", "0".into());
            set("ext_end", String::new());
            set("reserve_met", flag(no_reserve));
        }
        Some(bid) => {
            // The leader's own ceiling covers what events do not carry: private raises
            // after the last bid, and events written before ceilings were recorded.
            let own = record
                .ceilings
                .iter()
                .find(|(who, _)| *who == bid.leader)
                .map(|(_, own)| *own);
            let ceiling = bid.ceiling.unwrap_or(bid.price).max(own.unwrap_or(0));
            set("price", bid.price.to_string());
            set("leader", bid.leader.clone());
            set("leader_name", bid.leader_name.clone());
            set("ceiling", ceiling.to_string());
            set("bid_count", bid.bid_count.to_string());
            set(
                "ext_end",
                if bid.ends_at > settings.ends_at {
                    bid.ends_at.to_string()
                } else {
                    String::new()
                },
            );
            set("reserve_met", flag(bid.reserve_met));
        }
    }
    set("leader_since", String::new());
    set("seq", record.seq.to_string());
    match &record.closed {
        Some((_, json)) => {
            set("closed", "1".into());
            set("result", json.clone());
        }
        None => set("closed", "0".into()),
    }
    set("epoch", record.epoch.max(1).to_string());
    set("halted", String::new());
    RestoredState {
        fields,
        ceilings: record.ceilings.clone(),
        seq: record.seq,
        epoch: record.epoch.max(1),
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Outcome;
    use crate::settings::{Increments, SoftClose};

    fn settings() -> AuctionSettings {
        AuctionSettings {
            title: "Lot".into(),
            currency: "EUR".into(),
            starting_price: 100,
            reserve_price: Some(500),
            increments: Increments::flat(10).unwrap(),
            starts_at: None,
            ends_at: 10_000,
            soft_close: Some(SoftClose {
                window_ms: 1_000,
                extension_ms: 2_000,
            }),
            bid_limit: None,
        }
    }

    fn bid(seq: u64, ends_at: i64) -> BidEvent {
        BidEvent {
            seq,
            epoch: 1,
            at: 9_500,
            bidder: "u2".into(),
            name: "Bo".into(),
            amount: 300,
            max: 400,
            outcome: Outcome::Outbid,
            price: 410,
            min_next: 420,
            leader: "u1".into(),
            leader_name: "Ann".into(),
            bid_count: seq,
            ends_at,
            extended: ends_at > 10_000,
            displaced: None,
            reserve_met: false,
            ceiling: Some(900),
        }
    }

    #[test]
    fn an_auction_without_events_restores_empty_with_its_settings() {
        let s = restored_state(
            &settings(),
            &DurableRecord {
                epoch: 2,
                ..DurableRecord::default()
            },
        );
        for (k, v) in [
            ("title", "Lot"),
            ("start_price", "100"),
            ("reserve", "500"),
            ("window", "1000"),
            ("price", "0"),
            ("leader", ""),
            ("seq", "0"),
            ("bid_count", "0"),
            ("reserve_met", "0"),
            ("closed", "0"),
            ("epoch", "2"),
            ("halted", ""),
        ] {
            assert_eq!(s.field(k), Some(v), "{k}");
        }
        assert_eq!(s.notice(), r#"{"kind":"restored","seq":0,"epoch":2}"#);
    }

    #[test]
    fn the_last_bid_gives_price_leader_ceiling_and_soft_close_end() {
        let record = DurableRecord {
            epoch: 3,
            seq: 7,
            last_bid: Some(bid(7, 11_500)),
            closed: None,
            ceilings: vec![("u1".into(), 900), ("u2".into(), 400)],
        };
        let s = restored_state(&settings(), &record);
        for (k, v) in [
            ("price", "410"),
            ("leader", "u1"),
            ("leader_name", "Ann"),
            ("ceiling", "900"),
            ("bid_count", "7"),
            ("seq", "7"),
            ("ext_end", "11500"),
            ("reserve_met", "0"),
            ("epoch", "3"),
        ] {
            assert_eq!(s.field(k), Some(v), "{k}");
        }
        assert_eq!(s.ceilings, record.ceilings);
        // Not extended: no extension end.
        let s = restored_state(
            &settings(),
            &DurableRecord {
                last_bid: Some(bid(7, 10_000)),
                ..record.clone()
            },
        );
        assert_eq!(s.field("ext_end"), Some(""));
        // An event without a recorded ceiling falls back to the leader's own.
        let mut old = bid(7, 10_000);
        old.ceiling = None;
        let s = restored_state(
            &settings(),
            &DurableRecord {
                last_bid: Some(old),
                ..record
            },
        );
        assert_eq!(s.field("ceiling"), Some("900"));
    }

    /// A private raise after the last bid is in no event: the leader's own ceiling (which
    /// includes its raises) gives it back.
    #[test]
    fn a_private_raise_after_the_last_bid_is_restored() {
        let record = DurableRecord {
            epoch: 2,
            seq: 7,
            last_bid: Some(bid(7, 10_000)),
            closed: None,
            ceilings: vec![("u1".into(), 1_500), ("u2".into(), 400)],
        };
        let s = restored_state(&settings(), &record);
        assert_eq!(s.field("ceiling"), Some("1500"));
        assert_eq!((s.field("price"), s.field("seq")), (Some("410"), Some("7")));
    }

    #[test]
    fn a_recorded_close_restores_closed_with_its_result() {
        let json = r#"{"kind":"closed","seq":8,"winner":null}"#.to_owned();
        let result = AuctionResult {
            seq: 8,
            winner: None,
            winner_name: None,
            final_price: Some(410),
            reserve_met: false,
            bid_count: 7,
            closed_at: 10_001,
            cancelled: false,
        };
        let s = restored_state(
            &settings(),
            &DurableRecord {
                epoch: 2,
                seq: 8,
                last_bid: Some(bid(7, 10_000)),
                closed: Some((result, json.clone())),
                ceilings: vec![],
            },
        );
        assert_eq!(s.field("closed"), Some("1"));
        assert_eq!(s.field("result"), Some(json.as_str()));
        assert_eq!(s.field("seq"), Some("8"));
    }
}
