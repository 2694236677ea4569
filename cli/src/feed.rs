//! Readable one-line renderings of server messages, for the `gavel` CLI and the demo:
//! amounts with the currency's decimals ([`crate::money`]), times as a date and time in UTC
//! with the time left.

use crate::client::BidReply;
use crate::protocol::{Amount, Millis, Outcome, Phase, ServerMessage};

pub use crate::money::money;

fn opt_money(amount: Option<Amount>, currency: &str) -> String {
    amount.map_or_else(|| "-".to_owned(), |a| money(a, currency))
}

/// Formats a date and time in UTC, e.g. `2026-12-03 18:00:05 UTC`.
pub fn date_time(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}

/// A span of time as people say it, to the second: `2d 3h`, `4h 5m`, `4m 10s`, `12s`.
pub fn span(ms: Millis) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `at` relative to `now`: `in 4m 10s`, `2m 3s ago`, `now`.
pub fn relative(at: Millis, now: Millis) -> String {
    match at - now {
        d if d.abs() < 1000 => "now".into(),
        d if d > 0 => format!("in {}", span(d)),
        d => format!("{} ago", span(-d)),
    }
}

/// `2026-12-03 18:00:05 UTC (in 4m 10s)`.
pub fn when(at: Millis, now: Millis) -> String {
    format!("{} ({})", date_time(at), relative(at, now))
}

/// The reserve as a bidder may know it: `no reserve`, `reserve met`, `reserve not met`
/// (without `has_reserve`, from an older server: met or not only).
pub fn reserve(has_reserve: Option<bool>, reserve_met: bool) -> &'static str {
    match (has_reserve, reserve_met) {
        (Some(false), _) => "no reserve",
        (_, true) => "reserve met",
        (_, false) => "reserve not met",
    }
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

/// One line describing `msg`; `currency` formats the amounts; times left are counted
/// from now.
pub fn describe(msg: &ServerMessage, currency: &str) -> String {
    describe_at(msg, currency, crate::manifest::now_ms())
}

/// [`describe`] with times left counted from `now`.
pub fn describe_at(msg: &ServerMessage, currency: &str, now: Millis) -> String {
    match msg {
        ServerMessage::Welcome(w) => format!(
            "connected as {} (protocol {})",
            w.bidder.as_deref().unwrap_or("an anonymous watcher"),
            w.protocol
        ),
        ServerMessage::Snapshot(s) if s.phase == Phase::Cancelled => format!(
            "{} \"{}\": CANCELLED, no winner, {} bid(s), ended {}",
            s.auction,
            s.title,
            s.bid_count,
            when(s.ends_at, now)
        ),
        ServerMessage::Snapshot(s) if s.phase == Phase::Closed => {
            let result = match (&s.leader, s.reserve_met) {
                (Some(w), true) => format!("winner {w} at {}", opt_money(s.price, &s.currency)),
                (Some(_), false) => format!(
                    "reserve not met, no winner (final price {})",
                    opt_money(s.price, &s.currency)
                ),
                (None, _) => "no bids, no winner".into(),
            };
            format!(
                "{} \"{}\": CLOSED, {result}, {} bid(s), ended {}",
                s.auction,
                s.title,
                s.bid_count,
                when(s.ends_at, now)
            )
        }
        ServerMessage::Snapshot(s) => {
            let mut line = format!(
                "{} \"{}\": {}, price {}, leader {}, {} bid(s), min next {}, {} {}, {}",
                s.auction,
                s.title,
                s.phase,
                opt_money(s.price, &s.currency),
                s.leader.as_deref().unwrap_or("-"),
                s.bid_count,
                money(s.min_next, &s.currency),
                if s.phase == Phase::Closing {
                    "ended"
                } else {
                    "ends"
                },
                when(s.ends_at, now),
                reserve(s.has_reserve, s.reserve_met),
            );
            if let Some(starts) = s.starts_at.filter(|t| *t > now) {
                line.push_str(&format!(", opens {}", when(starts, now)));
            }
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
            "#{} price {} - leader {} - {} bid(s), min next {}, ends {}",
            p.seq,
            money(p.price, currency),
            p.leader,
            p.bid_count,
            money(p.min_next, currency),
            when(p.ends_at, now)
        ),
        ServerMessage::Outbid(o) => format!(
            "#{} OUTBID: price now {}, min next {}",
            o.seq,
            money(o.price, currency),
            money(o.min_next, currency)
        ),
        ServerMessage::Extended(e) => format!(
            "#{} SOFT CLOSE: end extended to {}",
            e.seq,
            when(e.ends_at, now)
        ),
        ServerMessage::Closed(c) if c.cancelled => {
            format!("#{} CANCELLED: no winner, no sale", c.seq)
        }
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
            None if c.final_price.is_none() => format!("#{} CLOSED: no bids, no winner", c.seq),
            None if !c.reserve_met => format!(
                "#{} CLOSED: reserve not met, no winner (final price {})",
                c.seq,
                opt_money(c.final_price, currency),
            ),
            None => format!(
                "#{} CLOSED: no winner (final price {})",
                c.seq,
                opt_money(c.final_price, currency),
            ),
        },
        ServerMessage::Error(e) => format!("error {}: {}", e.code, e.message),
        ServerMessage::Refreshed(r) => format!(
            "token refreshed for {}{}",
            r.bidder,
            r.expires_at
                .map(|e| format!(", expires {}", when(e, now)))
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
        assert_eq!(money(1500, "BHD"), "BHD 1.500");
        assert_eq!(clock(1_700_000_000_250), "22:13:20.250");
        assert_eq!(date_time(1_700_000_000_250), "2023-11-14 22:13:20 UTC");
        let now = 1_700_000_000_000;
        assert_eq!(relative(now + 250_000, now), "in 4m 10s");
        assert_eq!(relative(now - 12_000, now), "12s ago");
        assert_eq!(relative(now + 400, now), "now");
        assert_eq!(
            when(now + 86_400_000 * 400, now),
            "2024-12-18 22:13:20 UTC (in 400d 0h)"
        );
    }

    fn snapshot(
        phase: &str,
        leader: Option<&str>,
        reserve: Option<bool>,
        met: bool,
    ) -> ServerMessage {
        let mut v = serde_json::json!({
            "type": "snapshot", "auction": "shop/lot", "seq": 3, "phase": phase, "title": "Lot",
            "currency": "USD", "price": leader.map(|_| 10500), "leader": leader, "bid_count": 2,
            "min_next": 10600, "ends_at": 1_700_000_250_000i64, "reserve_met": met, "epoch": 1,
        });
        if let Some(r) = reserve {
            v["has_reserve"] = r.into();
        }
        ServerMessage::parse(&v.to_string()).unwrap()
    }

    #[test]
    fn describes_snapshots_with_dates_reserve_and_result() {
        let now = 1_700_000_000_000;
        let open = describe_at(
            &snapshot("open", Some("bob"), Some(false), true),
            "USD",
            now,
        );
        assert!(open.contains("USD 105.00, leader bob"), "{open}");
        assert!(
            open.contains("ends 2023-11-14 22:17:30 UTC (in 4m 10s)"),
            "{open}"
        );
        assert!(open.ends_with("no reserve"), "{open}");
        let open = describe_at(
            &snapshot("open", Some("bob"), Some(true), false),
            "USD",
            now,
        );
        assert!(open.ends_with("reserve not met"), "{open}");
        let closed = describe_at(
            &snapshot("closed", Some("bob"), Some(true), true),
            "USD",
            now,
        );
        assert!(
            closed.contains("CLOSED, winner bob at USD 105.00"),
            "{closed}"
        );
        assert!(!closed.contains("leader"), "{closed}");
        let unmet = describe_at(
            &snapshot("closed", Some("bob"), Some(true), false),
            "USD",
            now,
        );
        assert!(unmet.contains("reserve not met, no winner"), "{unmet}");
        let cancelled = describe_at(&snapshot("cancelled", Some("bob"), None, true), "USD", now);
        assert!(cancelled.contains("CANCELLED"), "{cancelled}");
        assert!(!cancelled.contains("winner bob"), "{cancelled}");
    }

    #[test]
    fn describes_a_close() {
        let msg = ServerMessage::parse(
            r#"{"type":"closed","auction":"a/b","seq":9,"winner":"carol","final_price":192,"reserve_met":true,"cancelled":false}"#,
        )
        .unwrap();
        assert_eq!(describe(&msg, "USD"), "#9 CLOSED: winner carol at USD 1.92");
        let msg = ServerMessage::parse(
            r#"{"type":"closed","auction":"a/b","seq":9,"winner":null,"final_price":192,"reserve_met":false,"cancelled":false}"#,
        )
        .unwrap();
        assert_eq!(
            describe(&msg, "USD"),
            "#9 CLOSED: reserve not met, no winner (final price USD 1.92)"
        );
        let msg = ServerMessage::parse(
            r#"{"type":"closed","auction":"a/b","seq":9,"winner":null,"final_price":null,"reserve_met":true,"cancelled":true}"#,
        )
        .unwrap();
        assert_eq!(describe(&msg, "USD"), "#9 CANCELLED: no winner, no sale");
    }
}
