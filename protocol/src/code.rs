//! The one list of error codes, shared by WebSocket replies and REST error bodies.

use serde::{Deserialize, Serialize};

use crate::Amount;

/// Every code of `error` and `bid_rejected` messages and of REST and upgrade refusals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Below the minimum next bid (the rejection carries `min_next`).
    BidTooLow,
    /// The leader's bid does not raise its own ceiling: it would change nothing.
    AlreadyLeading,
    /// Before the auction's start.
    AuctionNotOpen,
    /// After the effective end, or closed.
    AuctionClosed,
    /// No such auction.
    UnknownAuction,
    /// Too many messages, bids or connections; `retry_after_ms` (or `Retry-After`) says
    /// when to retry when known.
    RateLimited,
    /// No valid token (anonymous, or expired mid-connection).
    Unauthenticated,
    /// A valid token without the scope or role needed to bid (`GAVEL_JWT_BID_SCOPE`,
    /// `GAVEL_JWT_BID_ROLE`): it may watch only. Also a refused browser origin.
    Forbidden,
    /// Not a well-formed message of this protocol (or a bad REST name or query).
    InvalidMessage,
    /// An amount that is not an integer in `1..=10^15`, or `max` below `amount`.
    InvalidAmount,
    /// A value over its limit (`ref` length, number of subscriptions).
    TooLarge,
    /// Nothing was decided: Redis unreachable, the auction's live state being restored
    /// from PostgreSQL, or the server full or shutting down. Retry after `retry_after_ms`
    /// when given; a bid that timed out may have been applied, the snapshot tells.
    Unavailable,
}

impl ErrorCode {
    /// Every code, in the README's order.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::BidTooLow,
        ErrorCode::AlreadyLeading,
        ErrorCode::AuctionNotOpen,
        ErrorCode::AuctionClosed,
        ErrorCode::UnknownAuction,
        ErrorCode::RateLimited,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::InvalidMessage,
        ErrorCode::InvalidAmount,
        ErrorCode::TooLarge,
        ErrorCode::Unavailable,
    ];

    /// The wire spelling, e.g. `BID_TOO_LOW`; also the `outcome` label of
    /// `gavel_bids_total` for a refused bid.
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

    /// The `message` of a `bid_rejected` the bidding rules decided (the engine's refusal
    /// codes); `min_next` completes `BID_TOO_LOW`.
    pub fn rejection_message(self, min_next: Option<Amount>) -> String {
        match self {
            ErrorCode::BidTooLow => match min_next {
                Some(m) => format!("bid too low: the minimum next bid is {m}"),
                None => "bid too low".to_owned(),
            },
            ErrorCode::AlreadyLeading => {
                "you are already leading: only a maximum above your current one changes anything"
                    .to_owned()
            }
            ErrorCode::AuctionNotOpen => "the auction has not opened yet".to_owned(),
            ErrorCode::AuctionClosed => "the auction is closed".to_owned(),
            ErrorCode::UnknownAuction => "no such auction".to_owned(),
            ErrorCode::RateLimited => "too many bids; retry later".to_owned(),
            ErrorCode::InvalidAmount => {
                "amounts must be integers between 1 and 10^15, with max >= amount".to_owned()
            }
            ErrorCode::Unavailable => {
                "the auction's live state is being restored; nothing was decided, retry shortly"
                    .to_owned()
            }
            ErrorCode::Unauthenticated => "not authenticated".to_owned(),
            ErrorCode::Forbidden => "not allowed to bid".to_owned(),
            ErrorCode::InvalidMessage => "not a message of this protocol".to_owned(),
            ErrorCode::TooLarge => "over a limit".to_owned(),
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every HTTP error the bid-api answers: REST errors and refused
/// WebSocket upgrades.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpError {
    /// What went wrong.
    pub code: ErrorCode,
    /// Which limit or check refused a connection (`invalid_signature`, `per_ip`, …), for
    /// refused upgrades and connections; absent on REST errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For people.
    pub message: String,
}

impl HttpError {
    /// The JSON text of the body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"code":"UNAVAILABLE","message":"internal encoding error"}"#.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_spelled_as_on_the_wire() {
        for code in ErrorCode::ALL {
            assert_eq!(
                serde_json::to_string(&code).unwrap(),
                format!("\"{}\"", code.as_str())
            );
            assert_eq!(code.to_string(), code.as_str());
            let back: ErrorCode = serde_json::from_str(&format!("\"{code}\"")).unwrap();
            assert_eq!(back, code);
        }
        assert!(serde_json::from_str::<ErrorCode>("\"NEW_CODE\"").is_err());
    }

    #[test]
    fn rejection_messages_say_what_to_do() {
        assert_eq!(
            ErrorCode::BidTooLow.rejection_message(Some(110)),
            "bid too low: the minimum next bid is 110"
        );
        assert_eq!(ErrorCode::BidTooLow.rejection_message(None), "bid too low");
        assert!(
            ErrorCode::Unavailable
                .rejection_message(None)
                .contains("nothing was decided")
        );
        for code in ErrorCode::ALL {
            assert!(!code.rejection_message(None).is_empty());
        }
    }

    #[test]
    fn http_errors_omit_an_absent_reason() {
        let e = HttpError {
            code: ErrorCode::UnknownAuction,
            reason: None,
            message: "no auction a/b".into(),
        };
        assert_eq!(
            e.to_json(),
            r#"{"code":"UNKNOWN_AUCTION","message":"no auction a/b"}"#
        );
        let e = HttpError {
            code: ErrorCode::RateLimited,
            reason: Some("per_ip".into()),
            message: "m".into(),
        };
        assert_eq!(
            e.to_json(),
            r#"{"code":"RATE_LIMITED","reason":"per_ip","message":"m"}"#
        );
        assert_eq!(serde_json::from_str::<HttpError>(&e.to_json()).unwrap(), e);
    }
}
