//! The v1 WebSocket protocol (README § WebSocket protocol) as plain serde types: every client and server
//! message, their exact JSON shapes, and the parsing of client frames into typed
//! requests or typed errors. No I/O happens here.
//!
//! Decisions the protocol makes (also in the README):
//! - Times (`server_time`, `ends_at`) are Unix milliseconds; money is integer minor units.
//! - `leader` and `winner` are display names (the token's `name`), never bidder ids.
//! - `ref` is a string (≤ 128 bytes) or a non-negative integer, echoed back unchanged.
//! - Amounts must be JSON integers in `1..=10^15`; anything else in `amount`/`max`
//!   (string, fraction, exponent, negative, zero, too large) answers `bid_rejected` with
//!   `INVALID_AMOUNT` (and the `ref`); other structural problems answer `error` with
//!   `INVALID_MESSAGE` (carrying the `ref` when one could be read).
//! - Unknown fields are ignored, so newer clients can talk to older servers.
//! - Optional hints (`min_next`, `retry_after_ms`, `your_max`, `ref`, `auction` on `error`)
//!   are omitted when they do not apply.

use gavel_engine::settings::MAX_AMOUNT;
use gavel_engine::{
    Amount, AuctionEvent, AuctionId, BidEvent, LivePhase, Millis, Outcome, RejectCode, Snapshot,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version announced in `welcome`.
pub const PROTOCOL: &str = "v1";

/// The WebSocket subprotocol name a browser offers next to its `bearer.<jwt>` entry.
pub const SUBPROTOCOL: &str = "gavel.v1";

/// Longest accepted `ref` string, in bytes.
pub const MAX_REF_BYTES: usize = 128;

/// The client's identifier of a bid, echoed in the reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    /// A string id.
    Text(String),
    /// A numeric id.
    Number(u64),
}

/// Every code of `error` and `bid_rejected` messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
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
    /// Too many messages or bids; `retry_after_ms` says when to retry when known.
    RateLimited,
    /// No valid token (anonymous, expired mid-connection).
    Unauthenticated,
    /// A valid token without the scope or role needed to bid (`GAVEL_JWT_BID_SCOPE`,
    /// `GAVEL_JWT_BID_ROLE`): it may watch only.
    Forbidden,
    /// Not a well-formed message of this protocol.
    InvalidMessage,
    /// An amount that is not an integer in range.
    InvalidAmount,
    /// A value over its limit (`ref` length, number of subscriptions).
    TooLarge,
    /// Redis could not be reached, or the auction's live state is being restored from
    /// PostgreSQL (extension of the contract): retry after `retry_after_ms` when given. A
    /// bid that timed out may have been applied; the snapshot will tell.
    Unavailable,
}

impl ErrorCode {
    /// The protocol's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BidTooLow => "BID_TOO_LOW",
            ErrorCode::AlreadyLeading => "ALREADY_LEADING",
            ErrorCode::AuctionNotOpen => "AUCTION_NOT_OPEN",
            ErrorCode::AuctionClosed => "AUCTION_CLOSED",
            ErrorCode::UnknownAuction => "UNKNOWN_AUCTION",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::InvalidMessage => "INVALID_MESSAGE",
            ErrorCode::InvalidAmount => "INVALID_AMOUNT",
            ErrorCode::TooLarge => "TOO_LARGE",
            ErrorCode::Unavailable => "UNAVAILABLE",
        }
    }
}

impl From<RejectCode> for ErrorCode {
    fn from(code: RejectCode) -> Self {
        match code {
            RejectCode::BidTooLow => ErrorCode::BidTooLow,
            RejectCode::AlreadyLeading => ErrorCode::AlreadyLeading,
            RejectCode::AuctionNotOpen => ErrorCode::AuctionNotOpen,
            RejectCode::AuctionClosed => ErrorCode::AuctionClosed,
            RejectCode::UnknownAuction => ErrorCode::UnknownAuction,
            RejectCode::RateLimited => ErrorCode::RateLimited,
            RejectCode::InvalidAmount => ErrorCode::InvalidAmount,
            RejectCode::Unavailable => ErrorCode::Unavailable,
        }
    }
}

/// A parsed client message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Start receiving an auction's events, replaying those after `since` first.
    Subscribe {
        /// The auction.
        auction: AuctionId,
        /// Last seq the client has seen.
        since: Option<u64>,
        /// Epoch of the history that seq belongs to (from the last `snapshot`/`reset`).
        epoch: Option<u64>,
    },
    /// Stop receiving an auction's events.
    Unsubscribe {
        /// The auction.
        auction: AuctionId,
    },
    /// Place a bid.
    Bid {
        /// The auction.
        auction: AuctionId,
        /// The bid amount.
        amount: Option<Amount>,
        /// The proxy ceiling.
        max: Option<Amount>,
        /// Echoed in the reply.
        r#ref: Ref,
    },
    /// Liveness probe.
    Ping,
    /// A new token for the same bidder, replacing one that is expiring.
    Refresh {
        /// The new JWT.
        token: String,
    },
}

/// Why a client frame was refused; turned into `error` or `bid_rejected`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// The code.
    pub code: ErrorCode,
    /// Human explanation.
    pub message: String,
    /// The bid's `ref`, when it could be read.
    pub r#ref: Option<Ref>,
    /// The auction named, when it could be read.
    pub auction: Option<String>,
    /// Whether the frame was a `bid` whose `ref` is known: the reply is `bid_rejected`.
    pub is_bid: bool,
}

impl ParseError {
    fn invalid(message: impl Into<String>) -> Self {
        Self {
            code: ErrorCode::InvalidMessage,
            message: message.into(),
            r#ref: None,
            auction: None,
            is_bid: false,
        }
    }

    /// The server message answering this error.
    pub fn to_server_message(&self) -> ServerMessage {
        match (&self.r#ref, self.is_bid) {
            (Some(r), true) => ServerMessage::BidRejected {
                r#ref: r.clone(),
                auction: self.auction.clone(),
                code: self.code,
                message: self.message.clone(),
                min_next: None,
                retry_after_ms: None,
            },
            _ => ServerMessage::Error {
                code: self.code,
                message: self.message.clone(),
                r#ref: self.r#ref.clone(),
                auction: self.auction.clone(),
            },
        }
    }
}

fn field_str<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Result<&'a str, String> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("`{name}` must be a string")),
        None => Err(format!("missing field `{name}`")),
    }
}

fn parse_auction(obj: &serde_json::Map<String, Value>) -> Result<AuctionId, ParseError> {
    let text = field_str(obj, "auction").map_err(ParseError::invalid)?;
    text.parse::<AuctionId>().map_err(|_| ParseError {
        auction: Some(text.chars().take(300).collect()),
        ..ParseError::invalid("`auction` must be <namespace>/<name> (Kubernetes names)")
    })
}

fn parse_ref(obj: &serde_json::Map<String, Value>) -> Result<Ref, ParseError> {
    match obj.get("ref") {
        Some(Value::String(s)) if s.len() <= MAX_REF_BYTES => Ok(Ref::Text(s.clone())),
        Some(Value::String(_)) => Err(ParseError {
            code: ErrorCode::TooLarge,
            ..ParseError::invalid(format!("`ref` is longer than {MAX_REF_BYTES} bytes"))
        }),
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            Ok(Ref::Number(n.as_u64().unwrap_or_default()))
        }
        Some(_) => Err(ParseError::invalid(
            "`ref` must be a string or a non-negative integer",
        )),
        None => Err(ParseError::invalid("missing field `ref`")),
    }
}

/// Reads an amount: absent or null is `None`; anything but an integer in range is refused.
fn parse_amount(
    obj: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<Amount>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (1..=MAX_AMOUNT).contains(&v) => Ok(Some(v)),
            Some(_) => Err(format!(
                "`{name}` must be between 1 and {MAX_AMOUNT} minor units"
            )),
            None if n.is_u64() => Err(format!(
                "`{name}` must be between 1 and {MAX_AMOUNT} minor units"
            )),
            None => Err(format!("`{name}` must be an integer count of minor units")),
        },
        Some(_) => Err(format!(
            "`{name}` must be a JSON integer count of minor units, not a string or other type"
        )),
    }
}

/// Parses one text frame.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ParseError::invalid(format!("not valid JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(ParseError::invalid("a message must be a JSON object"));
    };
    let kind = field_str(&obj, "type").map_err(ParseError::invalid)?;
    match kind {
        "ping" => Ok(ClientMessage::Ping),
        "refresh" => Ok(ClientMessage::Refresh {
            token: field_str(&obj, "token")
                .map_err(ParseError::invalid)?
                .to_owned(),
        }),
        "subscribe" => {
            let auction = parse_auction(&obj)?;
            let number = |name: &str| match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
                Some(_) => Err(ParseError {
                    auction: Some(auction.to_string()),
                    ..ParseError::invalid(format!("`{name}` must be a non-negative integer"))
                }),
            };
            Ok(ClientMessage::Subscribe {
                since: number("since")?,
                epoch: number("epoch")?,
                auction,
            })
        }
        "unsubscribe" => Ok(ClientMessage::Unsubscribe {
            auction: parse_auction(&obj)?,
        }),
        "bid" => {
            let r#ref = parse_ref(&obj)?;
            let with_ref = |mut e: ParseError| {
                e.r#ref = Some(r#ref.clone());
                e.is_bid = true;
                e
            };
            let auction = parse_auction(&obj).map_err(with_ref)?;
            let amount_err = |message: String| ParseError {
                code: ErrorCode::InvalidAmount,
                message,
                r#ref: Some(r#ref.clone()),
                auction: Some(auction.to_string()),
                is_bid: true,
            };
            let amount = parse_amount(&obj, "amount").map_err(amount_err)?;
            let max = parse_amount(&obj, "max").map_err(amount_err)?;
            match (amount, max) {
                (None, None) => Err(amount_err("a bid needs `amount`, `max` or both".into())),
                (Some(a), Some(m)) if m < a => {
                    Err(amount_err("`max` must be at least `amount`".into()))
                }
                _ => Ok(ClientMessage::Bid {
                    auction,
                    amount,
                    max,
                    r#ref,
                }),
            }
        }
        other => Err(ParseError::invalid(format!(
            "unknown message type {:?}; expected subscribe, unsubscribe, bid, refresh or ping",
            other.chars().take(64).collect::<String>()
        ))),
    }
}

/// The live phase as the protocol spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the start.
    Scheduled,
    /// Taking bids.
    Open,
    /// Past the end, about to be closed.
    Closing,
    /// Closed with a result.
    Closed,
    /// Cancelled.
    Cancelled,
}

impl From<LivePhase> for Phase {
    fn from(p: LivePhase) -> Self {
        match p {
            LivePhase::Scheduled => Phase::Scheduled,
            LivePhase::Open => Phase::Open,
            LivePhase::Closing => Phase::Closing,
            LivePhase::Closed => Phase::Closed,
            LivePhase::Cancelled => Phase::Cancelled,
        }
    }
}

/// Why a `reset` was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The live state was restored from PostgreSQL (a new epoch).
    Restored,
    /// The client's `since`/`epoch` names a history the server does not have.
    SinceUnknown,
}

/// Every message the server sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// First message of every connection.
    Welcome {
        /// Bidder id of the token, or null for anonymous watchers.
        bidder: Option<String>,
        /// Server time, Unix ms.
        server_time: Millis,
        /// Protocol version (`v1`).
        protocol: String,
    },
    /// Reply to an accepted `refresh`: the connection's token now expires at
    /// `expires_at` (Unix ms, null: never).
    Refreshed {
        /// Bidder id of the token.
        bidder: String,
        /// When the new token expires, Unix ms.
        expires_at: Option<Millis>,
    },
    /// The auction's state, after `subscribe` (after any replay).
    Snapshot {
        /// Auction name.
        auction: String,
        /// Seq of the last event included.
        seq: u64,
        /// Live phase.
        phase: Phase,
        /// Title.
        title: String,
        /// ISO 4217 currency.
        currency: String,
        /// Current price, null before the first bid.
        price: Option<Amount>,
        /// Leader's display name.
        leader: Option<String>,
        /// Accepted bids.
        bid_count: u64,
        /// Lowest bid that would take the lead.
        min_next: Amount,
        /// Effective end, Unix ms.
        ends_at: Millis,
        /// Whether the reserve is met.
        reserve_met: bool,
        /// The viewer's own ceiling, only to its owner.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        your_max: Option<Amount>,
        /// Incarnation of the auction's history; a new one follows a `reset`.
        epoch: u64,
    },
    /// The client's view of the auction no longer holds: its live state was restored from
    /// PostgreSQL after Redis lost it (events the client saw after `seq` may never have
    /// been recorded), or the `since` it resumed from is not in the history. Forget the
    /// auction's seq and state; a fresh `snapshot` follows at once.
    Reset {
        /// Auction name.
        auction: String,
        /// The epoch of the history that follows.
        epoch: u64,
        /// The last seq of that history.
        seq: u64,
        /// Why (`restored` or `since_unknown`).
        reason: ResetReason,
    },
    /// Reply to an accepted bid.
    BidResult {
        /// The client's ref.
        r#ref: Ref,
        /// Auction name.
        auction: String,
        /// How the bid left its bidder.
        outcome: Outcome,
        /// Price after the bid.
        price: Amount,
        /// Minimum next bid.
        min_next: Amount,
        /// The bid's seq.
        seq: u64,
        /// Epoch of the history the bid belongs to (see `reset`).
        epoch: u64,
    },
    /// Reply to a refused bid.
    BidRejected {
        /// The client's ref.
        r#ref: Ref,
        /// Auction name, when it could be read.
        auction: Option<String>,
        /// Why.
        code: ErrorCode,
        /// Human explanation.
        message: String,
        /// Minimum next bid (`BID_TOO_LOW`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_next: Option<Amount>,
        /// When to retry (`RATE_LIMITED`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<Millis>,
    },
    /// An accepted bid, to every subscriber.
    Price {
        /// Auction name.
        auction: String,
        /// Event seq.
        seq: u64,
        /// Price after the bid.
        price: Amount,
        /// Leader's display name.
        leader: String,
        /// Accepted bids.
        bid_count: u64,
        /// Minimum next bid.
        min_next: Amount,
        /// Effective end, Unix ms.
        ends_at: Millis,
    },
    /// To the bidder who lost the lead, on every connection it has open.
    Outbid {
        /// Auction name.
        auction: String,
        /// Seq of the bid that took the lead.
        seq: u64,
        /// Price now.
        price: Amount,
        /// Minimum next bid.
        min_next: Amount,
    },
    /// Soft close moved the end.
    Extended {
        /// Auction name.
        auction: String,
        /// Seq of the bid that moved it.
        seq: u64,
        /// New effective end, Unix ms.
        ends_at: Millis,
    },
    /// The auction closed.
    Closed {
        /// Auction name.
        auction: String,
        /// Seq of the close.
        seq: u64,
        /// Winner's display name, if any.
        winner: Option<String>,
        /// Final price, if anyone bid.
        final_price: Option<Amount>,
        /// Whether the reserve was met.
        reserve_met: bool,
        /// Whether it was cancelled rather than ended (extension of the contract).
        cancelled: bool,
    },
    /// A malformed or unauthorised message.
    Error {
        /// Why.
        code: ErrorCode,
        /// Human explanation.
        message: String,
        /// The `ref` of the offending message, when readable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        r#ref: Option<Ref>,
        /// The auction of the offending message, when readable.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auction: Option<String>,
    },
    /// Reply to `ping`.
    Pong,
}

impl ServerMessage {
    /// The JSON text of the message.
    pub fn to_json(&self) -> String {
        // Serialising these plain types cannot fail (string keys, no maps of non-strings).
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"INVALID_MESSAGE","message":"internal encoding error"}"#
                .to_owned()
        })
    }

    /// The `snapshot` message of an engine snapshot.
    pub fn snapshot(auction: &AuctionId, s: &Snapshot) -> Self {
        ServerMessage::Snapshot {
            auction: auction.to_string(),
            seq: s.seq,
            phase: s.phase.into(),
            title: s.title.clone(),
            currency: s.currency.clone(),
            price: s.price,
            leader: s.leader_name.clone(),
            bid_count: s.bid_count,
            min_next: s.min_next,
            ends_at: s.ends_at,
            reserve_met: s.reserve_met,
            your_max: s.your_max,
            epoch: s.epoch,
        }
    }

    /// The `price` message of a bid event (public fields only; never the ceiling).
    pub fn price(auction: &AuctionId, e: &BidEvent) -> Self {
        ServerMessage::Price {
            auction: auction.to_string(),
            seq: e.seq,
            price: e.price,
            leader: e.leader_name.clone(),
            bid_count: e.bid_count,
            min_next: e.min_next,
            ends_at: e.ends_at,
        }
    }

    /// The `outbid` message of a bid event, for its displaced bidder.
    pub fn outbid(auction: &AuctionId, e: &BidEvent) -> Self {
        ServerMessage::Outbid {
            auction: auction.to_string(),
            seq: e.seq,
            price: e.price,
            min_next: e.min_next,
        }
    }
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
            let mut public = vec![ServerMessage::price(auction, e)];
            if e.extended {
                public.push(ServerMessage::Extended {
                    auction: auction.to_string(),
                    seq: e.seq,
                    ends_at: e.ends_at,
                });
            }
            let outbid = e
                .displaced
                .as_ref()
                .filter(|d| **d != e.leader)
                .map(|d| (d.clone(), ServerMessage::outbid(auction, e)));
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
            public: vec![ServerMessage::Closed {
                auction: auction.to_string(),
                seq: r.seq,
                winner: r.winner_name.clone(),
                final_price: r.final_price,
                reserve_met: r.reserve_met,
                cancelled: r.cancelled,
            }],
            outbid: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> AuctionId {
        "shop/strat-1962".parse().unwrap()
    }

    fn js(m: &ServerMessage) -> Value {
        serde_json::from_str(&m.to_json()).unwrap()
    }

    #[test]
    fn parses_every_client_message() {
        assert_eq!(
            parse_client_message(r#"{"type":"ping"}"#),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(
            parse_client_message(r#"{"type":"subscribe","auction":"shop/strat-1962"}"#),
            Ok(ClientMessage::Subscribe {
                auction: id(),
                since: None,
                epoch: None,
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"subscribe","auction":"shop/strat-1962","since":7}"#),
            Ok(ClientMessage::Subscribe {
                auction: id(),
                since: Some(7),
                epoch: None,
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"unsubscribe","auction":"shop/strat-1962"}"#),
            Ok(ClientMessage::Unsubscribe { auction: id() })
        );
        assert_eq!(
            parse_client_message(
                r#"{"type":"bid","auction":"shop/strat-1962","amount":100,"ref":"r1","extra":1}"#
            ),
            Ok(ClientMessage::Bid {
                auction: id(),
                amount: Some(100),
                max: None,
                r#ref: Ref::Text("r1".into())
            })
        );
        assert_eq!(
            parse_client_message(r#"{"type":"bid","auction":"shop/strat-1962","max":500,"ref":3}"#),
            Ok(ClientMessage::Bid {
                auction: id(),
                amount: None,
                max: Some(500),
                r#ref: Ref::Number(3)
            })
        );
    }

    #[test]
    fn structural_errors_are_invalid_message() {
        for bad in [
            "",
            "nope",
            "[1]",
            "{}",
            r#"{"type":5}"#,
            r#"{"type":"dance"}"#,
            r#"{"type":"subscribe"}"#,
            r#"{"type":"subscribe","auction":"Shop/X"}"#,
            r#"{"type":"subscribe","auction":"shop/x","since":-1}"#,
            r#"{"type":"subscribe","auction":"shop/x","since":"3"}"#,
            r#"{"type":"bid","auction":"shop/x","amount":1}"#,
            r#"{"type":"bid","auction":"shop/x","amount":1,"ref":{}}"#,
        ] {
            let e = parse_client_message(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidMessage, "{bad}");
            assert!(matches!(e.to_server_message(), ServerMessage::Error { .. }));
        }
        let e = parse_client_message(r#"{"type":"bid","amount":1,"ref":"r"}"#).unwrap_err();
        assert_eq!(
            js(&e.to_server_message()),
            json!({"type":"bid_rejected","ref":"r","auction":null,"code":"INVALID_MESSAGE",
                   "message":"missing field `auction`"})
        );
        let long = format!(
            r#"{{"type":"bid","auction":"shop/x","amount":1,"ref":"{}"}}"#,
            "x".repeat(200)
        );
        assert_eq!(
            parse_client_message(&long).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn bad_amounts_are_invalid_amount_with_ref() {
        for amount in [
            r#""100""#,
            "0",
            "-5",
            "1.5",
            "100.0",
            "1e3",
            "1000000000000001",
            "99999999999999999999999",
            "18446744073709551615",
            "true",
            "[1]",
        ] {
            let text =
                format!(r#"{{"type":"bid","auction":"shop/x","amount":{amount},"ref":"r"}}"#);
            let e = parse_client_message(&text).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidAmount, "{amount}");
            let ServerMessage::BidRejected { r#ref, code, .. } = e.to_server_message() else {
                panic!("{amount}")
            };
            assert_eq!(
                (r#ref, code),
                (Ref::Text("r".into()), ErrorCode::InvalidAmount)
            );
        }
        for body in [r#""ref":"r""#, r#""ref":"r","amount":10,"max":9"#] {
            let text = format!(r#"{{"type":"bid","auction":"shop/x",{body}}}"#);
            assert_eq!(
                parse_client_message(&text).unwrap_err().code,
                ErrorCode::InvalidAmount
            );
        }
    }

    #[test]
    fn server_messages_have_exact_shapes() {
        let cases = [
            (
                ServerMessage::Welcome {
                    bidder: Some("u1".into()),
                    server_time: 5,
                    protocol: PROTOCOL.into(),
                },
                json!({"type":"welcome","bidder":"u1","server_time":5,"protocol":"v1"}),
            ),
            (
                ServerMessage::Snapshot {
                    auction: "shop/x".into(),
                    seq: 2,
                    phase: Phase::Open,
                    title: "T".into(),
                    currency: "USD".into(),
                    price: None,
                    leader: None,
                    bid_count: 0,
                    min_next: 100,
                    ends_at: 9,
                    reserve_met: false,
                    your_max: None,
                    epoch: 1,
                },
                json!({"type":"snapshot","auction":"shop/x","seq":2,"phase":"open","title":"T",
                       "currency":"USD","price":null,"leader":null,"bid_count":0,"min_next":100,
                       "ends_at":9,"reserve_met":false,"epoch":1}),
            ),
            (
                ServerMessage::Reset {
                    auction: "shop/x".into(),
                    epoch: 2,
                    seq: 7,
                    reason: ResetReason::Restored,
                },
                json!({"type":"reset","auction":"shop/x","epoch":2,"seq":7,"reason":"restored"}),
            ),
            (
                ServerMessage::BidResult {
                    r#ref: Ref::Number(1),
                    auction: "shop/x".into(),
                    outcome: Outcome::CeilingRaised,
                    price: 10,
                    min_next: 12,
                    seq: 4,
                    epoch: 1,
                },
                json!({"type":"bid_result","ref":1,"auction":"shop/x","outcome":"ceiling_raised",
                       "price":10,"min_next":12,"seq":4,"epoch":1}),
            ),
            (
                ServerMessage::BidRejected {
                    r#ref: Ref::Text("a".into()),
                    auction: Some("shop/x".into()),
                    code: ErrorCode::RateLimited,
                    message: "m".into(),
                    min_next: None,
                    retry_after_ms: Some(200),
                },
                json!({"type":"bid_rejected","ref":"a","auction":"shop/x","code":"RATE_LIMITED",
                       "message":"m","retry_after_ms":200}),
            ),
            (ServerMessage::Pong, json!({"type":"pong"})),
            (
                ServerMessage::Error {
                    code: ErrorCode::InvalidMessage,
                    message: "m".into(),
                    r#ref: None,
                    auction: None,
                },
                json!({"type":"error","code":"INVALID_MESSAGE","message":"m"}),
            ),
        ];
        for (msg, want) in cases {
            assert_eq!(js(&msg), want);
            let back: ServerMessage = serde_json::from_str(&msg.to_json()).unwrap();
            assert_eq!(back, msg);
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
