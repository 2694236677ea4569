//! What the server sends: one type per message, and [`ServerMessage`] tagged by `type`.
//!
//! Clients read these types as strictly as the server writes them: a frame that does not
//! parse is not a frame of this protocol (unknown fields aside).

use serde::{Deserialize, Serialize};

use crate::{Amount, ErrorCode, Millis, Ref};

/// How an accepted bid left its bidder (also the engine's record of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The bidder leads.
    Leading,
    /// The bid was recorded but the leader's ceiling beat it.
    Outbid,
    /// The leader raised its own ceiling and nothing public changed: no event, no seq of
    /// its own (the reply's `seq` is the auction's last one), no soft-close extension.
    CeilingRaised,
}

impl Outcome {
    /// The wire spelling; also the `outcome` label of `gavel_bids_total` for an accepted
    /// bid.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Leading => "leading",
            Outcome::Outbid => "outbid",
            Outcome::CeilingRaised => "ceiling_raised",
        }
    }

    /// Reads the wire spelling.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "leading" => Some(Outcome::Leading),
            "outbid" => Some(Outcome::Outbid),
            "ceiling_raised" => Some(Outcome::CeilingRaised),
            _ => None,
        }
    }
}

/// Where an auction is in its life, as a `snapshot` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before the start.
    Scheduled,
    /// Taking bids.
    Open,
    /// Past the end, result not yet recorded.
    Closing,
    /// Closed with a result.
    Closed,
    /// Cancelled.
    Cancelled,
}

impl Phase {
    /// Every phase.
    pub const ALL: [Phase; 5] = [
        Phase::Scheduled,
        Phase::Open,
        Phase::Closing,
        Phase::Closed,
        Phase::Cancelled,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Scheduled => "scheduled",
            Phase::Open => "open",
            Phase::Closing => "closing",
            Phase::Closed => "closed",
            Phase::Cancelled => "cancelled",
        }
    }

    /// Closed or cancelled: nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Closed | Phase::Cancelled)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `reset` was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetReason {
    /// The live state was restored from PostgreSQL (a new epoch).
    Restored,
    /// The client's `since`/`epoch` names a history the server does not have.
    SinceUnknown,
}

impl ResetReason {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::Restored => "restored",
            ResetReason::SinceUnknown => "since_unknown",
        }
    }
}

impl std::fmt::Display for ResetReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `welcome`: the first message of every connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The token's bidder id (`sub`), or null for an anonymous watcher.
    pub bidder: Option<String>,
    /// The server's clock, Unix ms.
    pub server_time: Millis,
    /// The protocol version, [`crate::PROTOCOL`].
    pub protocol: String,
}

/// `refreshed`: the reply to an accepted `refresh`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refreshed {
    /// The token's bidder id.
    pub bidder: String,
    /// When the new token expires, Unix ms (null: never).
    pub expires_at: Option<Millis>,
}

/// `snapshot`: the auction's state, after `subscribe` (after any replay).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Seq of the last event included.
    pub seq: u64,
    /// Where the auction is in its life.
    pub phase: Phase,
    /// The lot's title.
    pub title: String,
    /// ISO 4217 currency of every amount.
    pub currency: String,
    /// Current price, null before the first bid.
    pub price: Option<Amount>,
    /// Leader's display name, null before the first bid.
    pub leader: Option<String>,
    /// Accepted bids.
    pub bid_count: u64,
    /// Lowest bid that would take the lead.
    pub min_next: Amount,
    /// Effective end (after soft-close extensions), Unix ms.
    pub ends_at: Millis,
    /// Whether the reserve is met (true when there is none).
    pub reserve_met: bool,
    /// Whether the auction has a reserve at all (its amount stays secret); absent from
    /// servers that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_reserve: Option<bool>,
    /// Opening time, Unix ms; absent when it opens as soon as provisioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Millis>,
    /// The end the auction was declared with, before soft-close extensions, Unix ms
    /// (`ends_at` later than it means the end was extended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_ends_at: Option<Millis>,
    /// The viewer's own ceiling, only ever sent to its owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub your_max: Option<Amount>,
    /// Incarnation of the auction's history; a new one follows a `reset`.
    pub epoch: u64,
}

/// `reset`: the client's view of the auction no longer holds. Its live state was restored
/// from PostgreSQL after Redis lost it (events the client saw after `seq` may never have
/// been recorded), or the `since` it resumed from is not in the history. Forget the
/// auction's seq and state; a fresh `snapshot` follows at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reset {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// The epoch of the history that follows.
    pub epoch: u64,
    /// The last seq of that history.
    pub seq: u64,
    /// What happened.
    pub reason: ResetReason,
}

/// `bid_result`: the reply to an accepted bid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidResult {
    /// The bid's `ref`.
    #[serde(rename = "ref")]
    pub r#ref: Ref,
    /// `<namespace>/<name>`.
    pub auction: String,
    /// How the bid left its bidder.
    pub outcome: Outcome,
    /// Price after the bid.
    pub price: Amount,
    /// Lowest bid that would take the lead after it.
    pub min_next: Amount,
    /// The bid's seq (for `ceiling_raised`, the auction's last one).
    pub seq: u64,
    /// Epoch of the history the bid belongs to (see `reset`).
    pub epoch: u64,
}

/// `bid_rejected`: the reply to a refused bid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidRejected {
    /// The bid's `ref`.
    #[serde(rename = "ref")]
    pub r#ref: Ref,
    /// `<namespace>/<name>`, null when the frame's could not be read.
    pub auction: Option<String>,
    /// What refused it.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// Lowest acceptable bid (`BID_TOO_LOW`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_next: Option<Amount>,
    /// When to retry, ms (`RATE_LIMITED`, `UNAVAILABLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<Millis>,
}

/// `price`: an accepted bid moved the auction; sent to every subscriber.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// The event's seq.
    pub seq: u64,
    /// Price after the bid.
    pub price: Amount,
    /// Leader's display name.
    pub leader: String,
    /// Accepted bids.
    pub bid_count: u64,
    /// Lowest bid that would take the lead.
    pub min_next: Amount,
    /// Effective end, Unix ms.
    pub ends_at: Millis,
}

/// `outbid`: to every connection of the bidder who lost the lead, on any pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbid {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Seq of the bid that took the lead.
    pub seq: u64,
    /// Price now.
    pub price: Amount,
    /// Lowest bid that would take the lead back.
    pub min_next: Amount,
}

/// `extended`: soft close moved the end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extended {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Seq of the bid that moved it.
    pub seq: u64,
    /// New effective end, Unix ms.
    pub ends_at: Millis,
}

/// `closed`: the auction's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// Seq of the close.
    pub seq: u64,
    /// Winner's display name; null when nobody won.
    pub winner: Option<String>,
    /// Final price; null when nobody bid.
    pub final_price: Option<Amount>,
    /// Whether the reserve was met.
    pub reserve_met: bool,
    /// Cancelled rather than ended.
    pub cancelled: bool,
}

/// `error`: a malformed or unauthorised message, or a subscription that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// What went wrong.
    pub code: ErrorCode,
    /// For people.
    pub message: String,
    /// The `ref` of the offending message, when it could be read.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<Ref>,
    /// The auction of the offending message, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auction: Option<String>,
}

/// Every message the server sends, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// See [`Welcome`].
    Welcome(Welcome),
    /// See [`Refreshed`].
    Refreshed(Refreshed),
    /// See [`Snapshot`].
    Snapshot(Snapshot),
    /// See [`Reset`].
    Reset(Reset),
    /// See [`BidResult`].
    BidResult(BidResult),
    /// See [`BidRejected`].
    BidRejected(BidRejected),
    /// See [`Price`].
    Price(Price),
    /// See [`Outbid`].
    Outbid(Outbid),
    /// See [`Extended`].
    Extended(Extended),
    /// See [`Closed`].
    Closed(Closed),
    /// See [`ErrorMessage`].
    Error(ErrorMessage),
    /// The reply to `ping`.
    Pong,
}

/// The `type` of a server message, without its fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// `welcome`.
    Welcome,
    /// `refreshed`.
    Refreshed,
    /// `snapshot`.
    Snapshot,
    /// `reset`.
    Reset,
    /// `bid_result`.
    BidResult,
    /// `bid_rejected`.
    BidRejected,
    /// `price`.
    Price,
    /// `outbid`.
    Outbid,
    /// `extended`.
    Extended,
    /// `closed`.
    Closed,
    /// `error`.
    Error,
    /// `pong`.
    Pong,
}

impl ServerMessage {
    /// Reads one text frame.
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The frame's JSON text.
    pub fn to_json(&self) -> String {
        // These plain types (string keys, no maps) always serialise.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"INVALID_MESSAGE","message":"internal encoding error"}"#
                .to_owned()
        })
    }

    /// The message's `type`.
    pub fn kind(&self) -> MessageType {
        match self {
            ServerMessage::Welcome(_) => MessageType::Welcome,
            ServerMessage::Refreshed(_) => MessageType::Refreshed,
            ServerMessage::Snapshot(_) => MessageType::Snapshot,
            ServerMessage::Reset(_) => MessageType::Reset,
            ServerMessage::BidResult(_) => MessageType::BidResult,
            ServerMessage::BidRejected(_) => MessageType::BidRejected,
            ServerMessage::Price(_) => MessageType::Price,
            ServerMessage::Outbid(_) => MessageType::Outbid,
            ServerMessage::Extended(_) => MessageType::Extended,
            ServerMessage::Closed(_) => MessageType::Closed,
            ServerMessage::Error(_) => MessageType::Error,
            ServerMessage::Pong => MessageType::Pong,
        }
    }

    /// The auction the message is about, if any.
    pub fn auction(&self) -> Option<&str> {
        match self {
            ServerMessage::Snapshot(m) => Some(&m.auction),
            ServerMessage::Reset(m) => Some(&m.auction),
            ServerMessage::BidResult(m) => Some(&m.auction),
            ServerMessage::BidRejected(m) => m.auction.as_deref(),
            ServerMessage::Price(m) => Some(&m.auction),
            ServerMessage::Outbid(m) => Some(&m.auction),
            ServerMessage::Extended(m) => Some(&m.auction),
            ServerMessage::Closed(m) => Some(&m.auction),
            ServerMessage::Error(m) => m.auction.as_deref(),
            ServerMessage::Welcome(_) | ServerMessage::Refreshed(_) | ServerMessage::Pong => None,
        }
    }

    /// The event seq the message carries, if any.
    pub fn seq(&self) -> Option<u64> {
        match self {
            ServerMessage::Snapshot(m) => Some(m.seq),
            ServerMessage::Reset(m) => Some(m.seq),
            ServerMessage::BidResult(m) => Some(m.seq),
            ServerMessage::Price(m) => Some(m.seq),
            ServerMessage::Outbid(m) => Some(m.seq),
            ServerMessage::Extended(m) => Some(m.seq),
            ServerMessage::Closed(m) => Some(m.seq),
            _ => None,
        }
    }

    /// Whether this is an event of the auction's stream (`price`, `extended`, `closed`):
    /// the messages every subscriber sees in `seq` order.
    pub fn is_broadcast(&self) -> bool {
        matches!(
            self,
            ServerMessage::Price(_) | ServerMessage::Extended(_) | ServerMessage::Closed(_)
        )
    }

    /// The `outcome` label of `gavel_bids_total` for a reply to a bid: the outcome of an
    /// accepted bid, the code of a refused one; `None` for any other message.
    pub fn bid_label(&self) -> Option<&'static str> {
        match self {
            ServerMessage::BidResult(r) => Some(r.outcome.as_str()),
            ServerMessage::BidRejected(r) => Some(r.code.as_str()),
            _ => None,
        }
    }
}
