//! Gavel's WebSocket protocol v1 (README § WebSocket protocol), the one model of it that
//! the server, the `gavel` CLI, the end-to-end tests, the load generator and the bid-api's
//! own tests share, so that they cannot drift apart.
//!
//! - [`client`]: what a client sends, one type per message, and [`parse_client_message`],
//!   the server's strict reading of a client frame (amount range, `ref` size, auction
//!   names), which answers a refused frame with the right code.
//! - [`server`]: what the server sends, one type per message, read by clients as strictly
//!   as the server writes it (no unknown codes, no alternative time encodings).
//! - [`view`]: a borrowed, single-pass reading of a server frame's common fields, for
//!   clients that handle many frames and must not build a DOM or allocate per frame.
//! - [`ErrorCode`]: every code of `error`, `bid_rejected` and REST error bodies
//!   ([`HttpError`]), with its human message where the protocol fixes one.
//! - [`names`]: the rules of auction names (Kubernetes names), which the engine's auction
//!   ids use too.
//!
//! Adding a field: add it to the message's type here (and to the README table, which a
//! test compares with the wire text), then fill it in the server.
//!
//! Decisions the protocol makes (also in the README):
//! - Times (`server_time`, `ends_at`, `expires_at`) are Unix milliseconds; money is integer
//!   minor units.
//! - `leader` and `winner` are display names (the token's `name`), never bidder ids.
//! - `ref` is a string (≤ [`MAX_REF_BYTES`] bytes) or a non-negative integer, echoed back
//!   unchanged.
//! - Unknown fields are ignored, so newer clients can talk to older servers.
//! - Optional hints (`min_next`, `retry_after_ms`, `your_max`, `ref` and `auction` on
//!   `error`) are omitted when they do not apply.

pub mod client;
mod code;
pub mod names;
pub mod server;
pub mod view;

pub use client::{
    Bid, ClientMessage, ParseError, Refresh, Subscribe, Unsubscribe, parse_client_message,
};
pub use code::{ErrorCode, HttpError};
pub use server::{
    BidRejected, BidResult, Closed, ErrorMessage, Extended, MessageType, Outbid, Outcome, Phase,
    Price, Refreshed, Reset, ResetReason, ServerMessage, Snapshot, Welcome,
};
pub use view::{RefView, ServerFrame, Text};

use serde::{Deserialize, Serialize};

/// An amount of money in the currency's minor unit (cents for USD).
pub type Amount = i64;

/// A point in time as Unix milliseconds.
pub type Millis = i64;

/// The largest amount anywhere in Gavel (10^15 minor units): bids, prices and settings.
pub const MAX_AMOUNT: Amount = 1_000_000_000_000_000;

/// The protocol version announced in `welcome`.
pub const PROTOCOL: &str = "v1";

/// The WebSocket subprotocol name a browser offers next to its `bearer.<jwt>` entry.
pub const SUBPROTOCOL: &str = "gavel.v1";

/// Longest accepted `ref` string, in bytes.
pub const MAX_REF_BYTES: usize = 128;

/// The client's identifier of a bid, echoed unchanged in the reply.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ref {
    /// A string of at most [`MAX_REF_BYTES`] bytes.
    Text(String),
    /// A non-negative integer.
    Number(u64),
}

impl From<&str> for Ref {
    fn from(text: &str) -> Self {
        Ref::Text(text.to_owned())
    }
}

impl From<String> for Ref {
    fn from(text: String) -> Self {
        Ref::Text(text)
    }
}

impl From<u64> for Ref {
    fn from(n: u64) -> Self {
        Ref::Number(n)
    }
}

impl std::fmt::Display for Ref {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ref::Text(text) => f.write_str(text),
            Ref::Number(n) => write!(f, "{n}"),
        }
    }
}
