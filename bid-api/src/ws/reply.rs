//! The replies of a connection as pure functions of what was decided: what a bid, a
//! refused bid or a flooded connection is answered with. The connection loop only
//! chooses which one applies; the `gavel_bids_total{outcome}` label of a bid reply is
//! [`ServerMessage::bid_label`].

use gavel_engine::{AuctionId, BidAccepted, Rejection};

use crate::protocol::{
    BidRejected, BidResult, ClientMessage, ErrorCode, ErrorMessage, ParseError, Ref, ServerMessage,
};

/// The reply to a bid the engine accepted.
pub fn accepted(auction: &AuctionId, r#ref: &Ref, bid: &BidAccepted) -> ServerMessage {
    ServerMessage::BidResult(BidResult {
        r#ref: r#ref.clone(),
        auction: auction.to_string(),
        outcome: bid.outcome,
        price: bid.price,
        min_next: bid.min_next,
        seq: bid.seq,
        epoch: bid.epoch,
    })
}

/// The reply to a bid the bidding rules refused, with the protocol's message for its code.
pub fn refused(auction: &AuctionId, r#ref: &Ref, rejection: &Rejection) -> ServerMessage {
    let code = ErrorCode::from(rejection.code);
    ServerMessage::BidRejected(BidRejected {
        r#ref: r#ref.clone(),
        auction: Some(auction.to_string()),
        code,
        message: code.rejection_message(rejection.min_next),
        min_next: rejection.min_next,
        retry_after_ms: rejection.retry_after_ms,
    })
}

/// The reply to a bid refused before the engine saw it (identity, limits, failures).
pub fn rejected(
    auction: &AuctionId,
    r#ref: &Ref,
    code: ErrorCode,
    message: String,
) -> ServerMessage {
    ServerMessage::BidRejected(BidRejected {
        r#ref: r#ref.clone(),
        auction: Some(auction.to_string()),
        code,
        message,
        min_next: None,
        retry_after_ms: None,
    })
}

/// An `error` about a connection-level request (`refresh`, a binary frame), or about an
/// auction when one is given.
pub fn error(code: ErrorCode, message: String, auction: Option<&AuctionId>) -> ServerMessage {
    ServerMessage::Error(ErrorMessage {
        code,
        message,
        r#ref: None,
        auction: auction.map(AuctionId::to_string),
    })
}

/// The reply to a message over the connection's rate: a bid gets `bid_rejected` (with its
/// `ref`, so the client can retry it), anything else `error`.
pub fn rate_limited(
    parsed: &Result<ClientMessage, ParseError>,
    retry_after_ms: i64,
) -> ServerMessage {
    let message = "too many messages; slow down".to_owned();
    match parsed {
        Ok(ClientMessage::Bid(bid)) => ServerMessage::BidRejected(BidRejected {
            r#ref: bid.r#ref.clone(),
            auction: Some(bid.auction.clone()),
            code: ErrorCode::RateLimited,
            message,
            min_next: None,
            retry_after_ms: Some(retry_after_ms),
        }),
        _ => ServerMessage::Error(ErrorMessage {
            code: ErrorCode::RateLimited,
            message,
            r#ref: None,
            auction: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gavel_engine::{Outcome, RejectCode};
    use serde_json::{Value, json};

    fn id() -> AuctionId {
        "shop/x".parse().unwrap()
    }

    fn js(m: &ServerMessage) -> Value {
        serde_json::from_str(&m.to_json()).unwrap()
    }

    #[test]
    fn accepted_and_refused_bids() {
        let bid = BidAccepted {
            outcome: Outcome::CeilingRaised,
            seq: 4,
            amount: 10,
            max: 50,
            price: 10,
            min_next: 12,
            leader: "u1".into(),
            leader_name: "U".into(),
            bid_count: 1,
            ends_at: 0,
            extended: false,
            displaced: None,
            reserve_met: false,
            epoch: 3,
        };
        let reply = accepted(&id(), &Ref::Number(1), &bid);
        assert_eq!(
            js(&reply),
            json!({"type":"bid_result","ref":1,"auction":"shop/x","outcome":"ceiling_raised",
                   "price":10,"min_next":12,"seq":4,"epoch":bid.epoch})
        );
        assert_eq!(reply.bid_label(), Some("ceiling_raised"));
        let low = Rejection {
            code: RejectCode::BidTooLow,
            min_next: Some(110),
            retry_after_ms: None,
        };
        let reply = refused(&id(), &Ref::Text("r".into()), &low);
        assert_eq!(
            js(&reply),
            json!({"type":"bid_rejected","ref":"r","auction":"shop/x","code":"BID_TOO_LOW",
                   "message":"bid too low: the minimum next bid is 110","min_next":110})
        );
        assert_eq!(reply.bid_label(), Some("BID_TOO_LOW"));
        let reply = rejected(
            &id(),
            &Ref::Number(2),
            ErrorCode::Forbidden,
            "watch only".into(),
        );
        assert_eq!(reply.bid_label(), Some("FORBIDDEN"));
        assert_eq!(
            error(ErrorCode::TooLarge, "m".into(), None).bid_label(),
            None
        );
    }

    #[test]
    fn a_flooded_bid_keeps_its_ref() {
        let bid = crate::protocol::parse_client_message(
            r#"{"type":"bid","auction":"shop/x","amount":5,"ref":"r9"}"#,
        );
        assert_eq!(
            js(&rate_limited(&bid, 250)),
            json!({"type":"bid_rejected","ref":"r9","auction":"shop/x","code":"RATE_LIMITED",
                   "message":"too many messages; slow down","retry_after_ms":250})
        );
        let ping = crate::protocol::parse_client_message(r#"{"type":"ping"}"#);
        assert_eq!(
            js(&rate_limited(&ping, 250)),
            json!({"type":"error","code":"RATE_LIMITED","message":"too many messages; slow down"})
        );
    }
}
