//! The messages of Gavel's WebSocket protocol v1 (README § WebSocket protocol), as serde types.
//!
//! Frames are JSON text tagged by `type`, with snake_case fields. The server types are
//! lenient where the contract leaves the encoding open: times are accepted as Unix
//! milliseconds or RFC 3339 strings, a bid's `ref` as a string or a number, unknown
//! fields are ignored and an unknown `type` parses as [`ServerMessage::Unknown`].

use serde::{Deserialize, Deserializer, Serialize};

/// An amount of money in the currency's minor unit (cents for USD).
pub type Amount = i64;

/// A point in time as Unix milliseconds.
pub type Millis = i64;

/// A message the client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Start receiving an auction's events; with `since`, replay every event after it.
    Subscribe {
        /// `<namespace>/<name>`.
        auction: String,
        /// Last `seq` the client has seen.
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
    },
    /// Stop receiving an auction's events.
    Unsubscribe {
        /// `<namespace>/<name>`.
        auction: String,
    },
    /// Place a bid: an `amount`, a `max` (proxy ceiling) or both.
    Bid {
        /// `<namespace>/<name>`.
        auction: String,
        /// The amount bid now.
        #[serde(skip_serializing_if = "Option::is_none")]
        amount: Option<Amount>,
        /// The bidder's ceiling for proxy bidding.
        #[serde(skip_serializing_if = "Option::is_none")]
        max: Option<Amount>,
        /// The client's id for the reply.
        #[serde(rename = "ref")]
        reference: String,
    },
    /// Liveness check, answered by `pong`.
    Ping,
}

/// How an accepted bid left its bidder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The bidder leads.
    Leading,
    /// Recorded, but the leader's ceiling beat it.
    Outbid,
    /// The leader raised its own ceiling: private, no event of its own (`seq` is the one it
    /// follows), the price unchanged.
    CeilingRaised,
}

/// The rejection and error codes of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Code {
    /// Below the minimum next bid.
    BidTooLow,
    /// The leader's bid does not raise its own ceiling: it would change nothing.
    AlreadyLeading,
    /// Before the auction's start.
    AuctionNotOpen,
    /// After the effective end or closed.
    AuctionClosed,
    /// No such auction.
    UnknownAuction,
    /// Too many bids or messages; retry later.
    RateLimited,
    /// Bidding needs an authenticated bidder.
    Unauthenticated,
    /// The bidder's token lacks the scope or role bidding requires.
    Forbidden,
    /// A malformed message.
    InvalidMessage,
    /// Zero, negative, overflowing or non-integer amount, or `max < amount`.
    InvalidAmount,
    /// A frame over the size limit.
    TooLarge,
    /// Nothing was decided (Redis unreachable, or the auction being restored): retry.
    Unavailable,
    /// A code this client does not know.
    #[serde(other)]
    Other,
}

impl Code {
    /// The protocol's spelling, e.g. `BID_TOO_LOW` (`OTHER` for an unknown code).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BidTooLow => "BID_TOO_LOW",
            Code::AlreadyLeading => "ALREADY_LEADING",
            Code::AuctionNotOpen => "AUCTION_NOT_OPEN",
            Code::AuctionClosed => "AUCTION_CLOSED",
            Code::UnknownAuction => "UNKNOWN_AUCTION",
            Code::RateLimited => "RATE_LIMITED",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::InvalidMessage => "INVALID_MESSAGE",
            Code::InvalidAmount => "INVALID_AMOUNT",
            Code::TooLarge => "TOO_LARGE",
            Code::Unavailable => "UNAVAILABLE",
            Code::Other => "OTHER",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A message the server sends.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message of every connection.
    Welcome(Welcome),
    /// The auction's state, after `subscribe`.
    Snapshot(Snapshot),
    /// Reply to an accepted bid.
    BidResult(BidResult),
    /// Reply to a refused bid.
    BidRejected(BidRejected),
    /// An accepted bid moved the auction (sent to every subscriber).
    Price(PriceUpdate),
    /// This bidder lost the lead.
    Outbid(Outbid),
    /// Soft close moved the end.
    Extended(Extended),
    /// The auction closed.
    Closed(Closed),
    /// Forget the auction's seq: a fresh snapshot follows.
    Reset(Reset),
    /// A malformed or unauthorised message.
    Error(ErrorMessage),
    /// Reply to `ping`.
    Pong,
    /// A message type this client does not know.
    #[serde(other)]
    Unknown,
}

/// `welcome`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Welcome {
    /// The authenticated bidder's display name or id; `None` when anonymous.
    #[serde(default)]
    pub bidder: Option<String>,
    /// Server time.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub server_time: Option<Millis>,
    /// Protocol version, as the server writes it.
    #[serde(default)]
    pub protocol: serde_json::Value,
}

/// `snapshot`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Snapshot {
    /// `<namespace>/<name>`.
    #[serde(default)]
    pub auction: String,
    /// Last event's sequence number.
    #[serde(default)]
    pub seq: u64,
    /// Lifecycle phase (`Scheduled`, `Open`, `Closed`, … in the server's spelling).
    #[serde(default)]
    pub phase: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// ISO 4217 currency.
    #[serde(default)]
    pub currency: String,
    /// Current price; `None` before the first bid.
    #[serde(default)]
    pub price: Option<Amount>,
    /// Leader's display name; `None` before the first bid.
    #[serde(default)]
    pub leader: Option<String>,
    /// Accepted bids.
    #[serde(default)]
    pub bid_count: u64,
    /// Minimum next bid.
    #[serde(default)]
    pub min_next: Option<Amount>,
    /// Effective end.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub ends_at: Option<Millis>,
    /// Whether the reserve is met.
    #[serde(default)]
    pub reserve_met: bool,
    /// This bidder's own ceiling, if it has one.
    #[serde(default)]
    pub your_max: Option<Amount>,
    /// Epoch of the auction's history.
    #[serde(default = "first_epoch")]
    pub epoch: u64,
}

impl Snapshot {
    /// Whether the phase is `Open` (any letter case).
    pub fn is_open(&self) -> bool {
        self.phase.eq_ignore_ascii_case("open")
    }

    /// Whether the phase is `Closed` or `Cancelled` (any letter case).
    pub fn is_final(&self) -> bool {
        self.phase.eq_ignore_ascii_case("closed") || self.phase.eq_ignore_ascii_case("cancelled")
    }
}

/// `bid_result`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BidResult {
    /// The client's id of the bid.
    #[serde(rename = "ref", deserialize_with = "de_ref")]
    pub reference: String,
    /// `<namespace>/<name>`.
    pub auction: String,
    /// How the bid left its bidder.
    pub outcome: Outcome,
    /// Price after the bid.
    pub price: Amount,
    /// Minimum next bid after it.
    pub min_next: Amount,
    /// The bid's event sequence number.
    pub seq: u64,
    /// Epoch of the history the bid belongs to (1 unless the auction was restored).
    #[serde(default = "first_epoch")]
    pub epoch: u64,
}

fn first_epoch() -> u64 {
    1
}

/// `reset`: the auction's history was restored (or the `since` asked for is unknown);
/// a fresh `snapshot` follows.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Reset {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Epoch of the history that follows.
    pub epoch: u64,
    /// Its last seq.
    pub seq: u64,
    /// `restored` or `since_unknown`.
    #[serde(default)]
    pub reason: String,
}

/// `bid_rejected`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BidRejected {
    /// The client's id of the bid.
    #[serde(rename = "ref", default, deserialize_with = "de_ref")]
    pub reference: String,
    /// `<namespace>/<name>`.
    #[serde(default)]
    pub auction: String,
    /// Why.
    pub code: Code,
    /// Human explanation.
    #[serde(default)]
    pub message: String,
    /// Minimum next bid, for `BID_TOO_LOW`.
    #[serde(default)]
    pub min_next: Option<Amount>,
    /// When to retry, for `RATE_LIMITED`.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

/// `price`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PriceUpdate {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Sequence number.
    pub seq: u64,
    /// Current price.
    pub price: Amount,
    /// Leader's display name.
    #[serde(default)]
    pub leader: Option<String>,
    /// Accepted bids.
    #[serde(default)]
    pub bid_count: u64,
    /// Minimum next bid.
    #[serde(default)]
    pub min_next: Option<Amount>,
    /// Effective end.
    #[serde(default, deserialize_with = "de_opt_time")]
    pub ends_at: Option<Millis>,
}

/// `outbid`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Outbid {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Sequence number of the bid that took the lead.
    pub seq: u64,
    /// Current price.
    pub price: Amount,
    /// Minimum next bid.
    #[serde(default)]
    pub min_next: Option<Amount>,
}

/// `extended`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Extended {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Sequence number of the bid that moved the end.
    pub seq: u64,
    /// The new effective end.
    #[serde(deserialize_with = "de_time")]
    pub ends_at: Millis,
}

/// `closed`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Closed {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Sequence number of the close.
    pub seq: u64,
    /// Winner's display name; `None` when nobody won.
    #[serde(default)]
    pub winner: Option<String>,
    /// Final price; `None` when nobody bid.
    #[serde(default)]
    pub final_price: Option<Amount>,
    /// Whether the reserve was met.
    #[serde(default)]
    pub reserve_met: bool,
}

/// `error`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ErrorMessage {
    /// Which error.
    pub code: Code,
    /// Human explanation.
    #[serde(default)]
    pub message: String,
    /// The `ref` of the offending message, when the server could read one (an extension
    /// some servers send; empty otherwise).
    #[serde(rename = "ref", default, deserialize_with = "de_ref")]
    pub reference: String,
}

impl ServerMessage {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The auction the message is about, if any.
    pub fn auction(&self) -> Option<&str> {
        match self {
            ServerMessage::Snapshot(m) => Some(&m.auction),
            ServerMessage::BidResult(m) => Some(&m.auction),
            ServerMessage::BidRejected(m) => Some(&m.auction),
            ServerMessage::Price(m) => Some(&m.auction),
            ServerMessage::Outbid(m) => Some(&m.auction),
            ServerMessage::Extended(m) => Some(&m.auction),
            ServerMessage::Closed(m) => Some(&m.auction),
            ServerMessage::Reset(m) => Some(&m.auction),
            ServerMessage::Welcome(_)
            | ServerMessage::Error(_)
            | ServerMessage::Pong
            | ServerMessage::Unknown => None,
        }
    }

    /// The event sequence number the message carries, if any.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerMessage::Snapshot(m) => Some(m.seq),
            ServerMessage::BidResult(m) => Some(m.seq),
            ServerMessage::Price(m) => Some(m.seq),
            ServerMessage::Outbid(m) => Some(m.seq),
            ServerMessage::Extended(m) => Some(m.seq),
            ServerMessage::Closed(m) => Some(m.seq),
            _ => None,
        }
    }

    /// Whether this is an event of the auction's stream (`price`, `extended`, `closed`),
    /// the messages every subscriber sees in `seq` order.
    pub fn is_broadcast(&self) -> bool {
        matches!(
            self,
            ServerMessage::Price(_) | ServerMessage::Extended(_) | ServerMessage::Closed(_)
        )
    }
}

/// A time as Unix milliseconds or an RFC 3339 string.
#[derive(Deserialize)]
#[serde(untagged)]
enum TimeRepr {
    Millis(i64),
    Float(f64),
    Text(String),
}

impl TimeRepr {
    fn millis<E: serde::de::Error>(self) -> Result<Millis, E> {
        match self {
            TimeRepr::Millis(ms) => Ok(ms),
            TimeRepr::Float(ms) => Ok(ms as i64),
            TimeRepr::Text(s) => parse_rfc3339(&s).map_err(E::custom),
        }
    }
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn parse_rfc3339(s: &str) -> Result<Millis, String> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Formats Unix milliseconds as RFC 3339 (UTC, whole seconds when possible).
pub fn format_rfc3339(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

fn de_time<'de, D: Deserializer<'de>>(d: D) -> Result<Millis, D::Error> {
    TimeRepr::deserialize(d)?.millis()
}

fn de_opt_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Millis>, D::Error> {
    Option::<TimeRepr>::deserialize(d)?
        .map(TimeRepr::millis)
        .transpose()
}

fn de_ref<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_serialise_as_the_contract_says() {
        let bid = ClientMessage::Bid {
            auction: "shop/a".into(),
            amount: None,
            max: Some(200),
            reference: "r1".into(),
        };
        assert_eq!(
            serde_json::to_string(&bid).unwrap(),
            r#"{"type":"bid","auction":"shop/a","max":200,"ref":"r1"}"#
        );
        let sub = ClientMessage::Subscribe {
            auction: "shop/a".into(),
            since: Some(7),
        };
        assert_eq!(
            serde_json::to_string(&sub).unwrap(),
            r#"{"type":"subscribe","auction":"shop/a","since":7}"#
        );
        let sub = ClientMessage::Subscribe {
            auction: "shop/a".into(),
            since: None,
        };
        assert_eq!(
            serde_json::to_string(&sub).unwrap(),
            r#"{"type":"subscribe","auction":"shop/a"}"#
        );
        assert_eq!(
            serde_json::to_string(&ClientMessage::Ping).unwrap(),
            r#"{"type":"ping"}"#
        );
        assert_eq!(
            serde_json::to_string(&ClientMessage::Unsubscribe {
                auction: "x/y".into()
            })
            .unwrap(),
            r#"{"type":"unsubscribe","auction":"x/y"}"#
        );
    }

    #[test]
    fn parses_every_server_message() {
        let cases = [
            r#"{"type":"welcome","bidder":"alice","server_time":1700000000000,"protocol":1}"#,
            r#"{"type":"welcome","bidder":null,"server_time":"2026-11-22T10:00:00Z","protocol":"v1"}"#,
            r#"{"type":"snapshot","auction":"s/a","seq":3,"phase":"Open","title":"T","currency":"USD","price":107,"leader":"carol","bid_count":3,"min_next":109,"ends_at":1700000000000,"reserve_met":true,"your_max":null}"#,
            r#"{"type":"bid_result","ref":"r1","auction":"s/a","outcome":"ceiling_raised","price":107,"min_next":109,"seq":4}"#,
            r#"{"type":"bid_rejected","ref":7,"auction":"s/a","code":"BID_TOO_LOW","message":"too low","min_next":109}"#,
            r#"{"type":"price","auction":"s/a","seq":4,"price":122,"leader":"carol","bid_count":4,"min_next":124,"ends_at":"2026-11-22T10:00:00.500Z"}"#,
            r#"{"type":"outbid","auction":"s/a","seq":5,"price":122,"min_next":124}"#,
            r#"{"type":"extended","auction":"s/a","seq":6,"ends_at":1700000001000}"#,
            r#"{"type":"closed","auction":"s/a","seq":7,"winner":null,"final_price":null,"reserve_met":false}"#,
            r#"{"type":"error","code":"INVALID_MESSAGE","message":"expected JSON"}"#,
            r#"{"type":"pong"}"#,
            r#"{"type":"something_new","x":1}"#,
        ];
        let parsed: Vec<ServerMessage> = cases
            .iter()
            .map(|c| ServerMessage::parse(c).unwrap_or_else(|e| panic!("{c}: {e}")))
            .collect();
        let ServerMessage::Welcome(w) = &parsed[0] else {
            panic!()
        };
        assert_eq!(w.bidder.as_deref(), Some("alice"));
        assert_eq!(w.server_time, Some(1_700_000_000_000));
        let ServerMessage::Welcome(w) = &parsed[1] else {
            panic!()
        };
        assert_eq!(w.bidder, None);
        assert_eq!(w.server_time, Some(1_795_341_600_000));
        let ServerMessage::Snapshot(s) = &parsed[2] else {
            panic!()
        };
        assert!(s.is_open() && !s.is_final());
        assert_eq!(
            (s.price, s.min_next, s.your_max),
            (Some(107), Some(109), None)
        );
        let ServerMessage::BidResult(r) = &parsed[3] else {
            panic!()
        };
        assert_eq!(
            (r.reference.as_str(), r.outcome),
            ("r1", Outcome::CeilingRaised)
        );
        let ServerMessage::BidRejected(r) = &parsed[4] else {
            panic!()
        };
        assert_eq!((r.reference.as_str(), r.code), ("7", Code::BidTooLow));
        assert_eq!(r.min_next, Some(109));
        let ServerMessage::Price(p) = &parsed[5] else {
            panic!()
        };
        assert_eq!(p.ends_at, Some(1_795_341_600_500));
        assert!(parsed[5].is_broadcast() && !parsed[6].is_broadcast());
        assert_eq!(parsed[6].seq(), Some(5));
        let ServerMessage::Extended(e) = &parsed[7] else {
            panic!()
        };
        assert_eq!(e.ends_at, 1_700_000_001_000);
        let ServerMessage::Closed(c) = &parsed[8] else {
            panic!()
        };
        assert_eq!((c.winner.as_deref(), c.final_price), (None, None));
        let ServerMessage::Error(e) = &parsed[9] else {
            panic!()
        };
        assert_eq!(e.code, Code::InvalidMessage);
        assert_eq!(parsed[10], ServerMessage::Pong);
        assert_eq!(parsed[11], ServerMessage::Unknown);
        assert_eq!(parsed[8].auction(), Some("s/a"));
    }

    #[test]
    fn unknown_codes_and_bad_frames() {
        let m =
            ServerMessage::parse(r#"{"type":"error","code":"NEW_CODE","message":"m"}"#).unwrap();
        assert!(matches!(
            m,
            ServerMessage::Error(ErrorMessage {
                code: Code::Other,
                ..
            })
        ));
        let m =
            ServerMessage::parse(r#"{"type":"error","code":"RATE_LIMITED","message":"m","ref":9}"#)
                .unwrap();
        assert!(
            matches!(m, ServerMessage::Error(ErrorMessage { code: Code::RateLimited, ref reference, .. }) if reference == "9")
        );
        assert!(ServerMessage::parse("not json").is_err());
        assert!(ServerMessage::parse(r#"{"type":"price","auction":"a"}"#).is_err());
        assert!(
            ServerMessage::parse(r#"{"type":"extended","auction":"a","seq":1,"ends_at":"nope"}"#)
                .is_err()
        );
    }

    #[test]
    fn codes_display_as_the_protocol_spells_them() {
        for code in [
            Code::BidTooLow,
            Code::AlreadyLeading,
            Code::TooLarge,
            Code::AuctionNotOpen,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""));
        }
    }

    #[test]
    fn rfc3339_round_trip() {
        let ms = parse_rfc3339("2026-12-01T18:00:00Z").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-12-01T18:00:00Z");
        assert!(parse_rfc3339("tomorrow").is_err());
    }
}
