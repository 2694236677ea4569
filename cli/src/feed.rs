//! Readable one-line renderings of server messages, for the `gavel` CLI and the demo.

use crate::client::BidReply;
use crate::protocol::{Amount, Millis, Outcome, ServerMessage};

pub use crate::money::money;

fn opt_money(amount: Option<Amount>, currency: &str) -> String {
    amount.map_or_else(|| "-".to_owned(), |a| money(a, currency))
}

/// Formats a time of day in UTC with milliseconds, e.g. `18:00:05.250`.
pub fn clock(ms: Millis) -> String {
    let day_ms = ms.rem_euclid(86_400_000);
    let (h, m, s, milli) = (
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000,
    );
    format!("{h:02}:{m:02}:{s:02}.{milli:03}")
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Leading => "leading",
        Outcome::Outbid => "outbid at once (a higher ceiling holds the lead)",
        Outcome::CeilingRaised => "ceiling raised (still leading)",
    }
}

/// One line describing `msg`; `currency` formats the amounts.
pub fn describe(msg: &ServerMessage, currency: &str) -> String {
    match msg {
        ServerMessage::Welcome(w) => format!(
            "connected as {} (protocol {})",
            w.bidder.as_deref().unwrap_or("an anonymous watcher"),
            w.protocol
        ),
        ServerMessage::Snapshot(s) => {
            let mut line = format!(
                "{} \"{}\": {}, price {}, leader {}, {} bid(s), min next {}, ends {} UTC, reserve {}",
                s.auction,
                s.title,
                s.phase,
                opt_money(s.price, &s.currency),
                s.leader.as_deref().unwrap_or("-"),
                s.bid_count,
                money(s.min_next, &s.currency),
                clock(s.ends_at),
                if s.reserve_met { "met" } else { "not met" },
            );
            if let Some(max) = s.your_max {
                line.push_str(&format!(", your ceiling {}", money(max, &s.currency)));
            }
            line
        }
        ServerMessage::Reset(r) => format!(
            "{}: history reset ({}) at #{}, epoch {}: a fresh snapshot follows",
            r.auction, r.reason, r.seq, r.epoch
        ),
        ServerMessage::BidResult(r) => format!(
            "#{} bid {} accepted: {}; price {}, min next {}",
            r.seq,
            r.r#ref,
            outcome(r.outcome),
            money(r.price, currency),
            money(r.min_next, currency)
        ),
        ServerMessage::BidRejected(r) => {
            let mut line = format!("bid {} refused: {} {}", r.r#ref, r.code, r.message);
            if let Some(min) = r.min_next {
                line.push_str(&format!(" (min next {})", money(min, currency)));
            }
            if let Some(ms) = r.retry_after_ms {
                line.push_str(&format!(" (retry after {ms} ms)"));
            }
            line
        }
        ServerMessage::Price(p) => format!(
            "#{} price {} - leader {} - {} bid(s), min next {}, ends {} UTC",
            p.seq,
            money(p.price, currency),
            p.leader,
            p.bid_count,
            money(p.min_next, currency),
            clock(p.ends_at)
        ),
        ServerMessage::Outbid(o) => format!(
            "#{} OUTBID: price now {}, min next {}",
            o.seq,
            money(o.price, currency),
            money(o.min_next, currency)
        ),
        ServerMessage::Extended(e) => format!(
            "#{} SOFT CLOSE: end extended to {} UTC",
            e.seq,
            clock(e.ends_at)
        ),
        ServerMessage::Closed(c) if c.cancelled => format!("#{} CANCELLED: no result", c.seq),
        ServerMessage::Closed(c) => match &c.winner {
            Some(w) => format!(
                "#{} CLOSED: winner {} at {}{}",
                c.seq,
                w,
                opt_money(c.final_price, currency),
                if c.reserve_met {
                    ""
                } else {
                    " (reserve not met)"
                }
            ),
            None => format!(
                "#{} CLOSED: no winner (final price {}, reserve {})",
                c.seq,
                opt_money(c.final_price, currency),
                if c.reserve_met { "met" } else { "not met" }
            ),
        },
        ServerMessage::Error(e) => format!("error {}: {}", e.code, e.message),
        ServerMessage::Refreshed(r) => format!(
            "token refreshed for {}{}",
            r.bidder,
            r.expires_at
                .map(|e| format!(", expires {} UTC", clock(e)))
                .unwrap_or_default()
        ),
        ServerMessage::Pong => "pong".into(),
    }
}

/// One line describing a bid's reply.
pub fn describe_reply(reply: &BidReply, currency: &str) -> String {
    match reply {
        BidReply::Accepted(r) => describe(&ServerMessage::BidResult(r.clone()), currency),
        BidReply::Rejected(r) => describe(&ServerMessage::BidRejected(r.clone()), currency),
        BidReply::Error(e) => describe(&ServerMessage::Error(e.clone()), currency),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_money_and_time() {
        assert_eq!(money(192, "USD"), "USD 1.92");
        assert_eq!(money(1_000_005, "EUR"), "EUR 10000.05");
        assert_eq!(money(500, "JPY"), "JPY 500");
        assert_eq!(clock(1_700_000_000_250), "22:13:20.250");
    }

    #[test]
    fn describes_a_close() {
        let msg = ServerMessage::parse(
            r#"{"type":"closed","auction":"a/b","seq":9,"winner":"carol","final_price":192,"reserve_met":true,"cancelled":false}"#,
        )
        .unwrap();
        assert_eq!(describe(&msg, "USD"), "#9 CLOSED: winner carol at USD 1.92");
    }
}
