//! Counters shared live by every connection, and what each connection hands back at
//! the end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Counters read once a second for the progress line and the throughput timeline.
#[derive(Debug, Default)]
pub struct Live {
    /// Bids sent.
    pub sent: AtomicU64,
    /// Bids answered with `bid_result`.
    pub accepted: AtomicU64,
    /// Bids answered with `bid_rejected`.
    pub rejected: AtomicU64,
    /// `price` messages received by watchers.
    pub prices: AtomicU64,
    /// Connections open now.
    pub open: AtomicI64,
    /// Connections subscribed and ready to start.
    pub ready: AtomicU64,
    /// Connections that failed to open or subscribe.
    pub failed: AtomicU64,
    /// Slow HTTP connections the server closed and that were opened again.
    pub slow_reopened: AtomicU64,
}

impl Live {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// A latency histogram in microseconds, from 1 µs to 60 s at 3 significant digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!("valid bounds"))
}

/// What one connection measured.
#[derive(Debug)]
pub struct ConnStats {
    /// Bid → reply latency, µs.
    pub reply_latency: Histogram<u64>,
    /// Accepted bids: (auction index, seq) → when the bid was sent.
    pub accepted_sent_at: Vec<((usize, u64), Instant)>,
    /// `price` receipts of a timed watcher: (auction index, seq) and when.
    pub price_seen_at: Vec<((usize, u64), Instant)>,
    /// Events a watcher never saw (gaps in `seq`).
    pub lost: u64,
    /// Events that came after a later one.
    pub out_of_order: u64,
    /// Close codes received from the server.
    pub close_codes: HashMap<u16, u64>,
    /// Rejections by code.
    pub rejections: HashMap<&'static str, u64>,
    /// Bids sent but never answered.
    pub unanswered: u64,
    /// The connection ended with a transport error.
    pub errored: bool,
    /// What the probe measured (only the probe's connection has it).
    pub probe: Option<Box<ProbeStats>>,
}

/// What the probe of a well-behaved user measured while the load was held.
#[derive(Debug)]
pub struct ProbeStats {
    /// Bid → reply, µs.
    pub bid: Histogram<u64>,
    /// `GET /healthz` on a new connection → status line, µs.
    pub health: Histogram<u64>,
    /// Probes that got no answer (or not 200) in time.
    pub failed: u64,
}

impl Default for ProbeStats {
    fn default() -> Self {
        Self {
            bid: latency_histogram(),
            health: latency_histogram(),
            failed: 0,
        }
    }
}

impl Default for ConnStats {
    fn default() -> Self {
        Self {
            reply_latency: latency_histogram(),
            accepted_sent_at: Vec::new(),
            price_seen_at: Vec::new(),
            lost: 0,
            out_of_order: 0,
            close_codes: HashMap::new(),
            rejections: HashMap::new(),
            unanswered: 0,
            errored: false,
            probe: None,
        }
    }
}

impl ConnStats {
    /// Folds another connection's numbers into these.
    pub fn merge(&mut self, other: ConnStats) {
        let _ = self.reply_latency.add(&other.reply_latency);
        self.accepted_sent_at.extend(other.accepted_sent_at);
        self.price_seen_at.extend(other.price_seen_at);
        self.lost += other.lost;
        self.out_of_order += other.out_of_order;
        for (code, n) in other.close_codes {
            *self.close_codes.entry(code).or_default() += n;
        }
        for (code, n) in other.rejections {
            *self.rejections.entry(code).or_default() += n;
        }
        self.unanswered += other.unanswered;
        self.errored |= other.errored;
        if let Some(probe) = other.probe {
            match &mut self.probe {
                Some(mine) => {
                    let _ = mine.bid.add(&probe.bid);
                    let _ = mine.health.add(&probe.health);
                    mine.failed += probe.failed;
                }
                None => self.probe = Some(probe),
            }
        }
    }

    /// Bid → `price` latency: each timed receipt against the send time of its bid.
    pub fn broadcast_latency(&self) -> Histogram<u64> {
        let sent: HashMap<(usize, u64), Instant> = self.accepted_sent_at.iter().copied().collect();
        let mut histogram = latency_histogram();
        for (key, seen) in &self.price_seen_at {
            if let Some(at) = sent.get(key) {
                let micros = seen.saturating_duration_since(*at).as_micros() as u64;
                let _ = histogram.record(micros.max(1));
            }
        }
        histogram
    }
}

/// Tracks one watcher's view of one auction's `seq`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqTracker {
    last: Option<u64>,
}

impl SeqTracker {
    /// Starts from a snapshot's seq.
    pub fn reset(&mut self, seq: u64) {
        self.last = Some(seq);
    }

    /// Records an event; returns (lost, out_of_order) counts it reveals.
    pub fn observe(&mut self, seq: u64) -> (u64, u64) {
        match self.last {
            Some(last) if seq <= last => (0, 1),
            Some(last) => {
                self.last = Some(seq);
                (seq - last - 1, 0)
            }
            None => {
                self.last = Some(seq);
                (0, 0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracker_counts_gaps_and_reorders() {
        let mut t = SeqTracker::default();
        t.reset(10);
        assert_eq!(t.observe(11), (0, 0));
        assert_eq!(t.observe(14), (2, 0));
        assert_eq!(t.observe(13), (0, 1));
        assert_eq!(t.observe(14), (0, 1));
        assert_eq!(t.observe(15), (0, 0));
    }

    #[test]
    fn broadcast_latency_joins_on_auction_and_seq() {
        let t0 = Instant::now();
        let later = t0 + std::time::Duration::from_millis(3);
        let mut s = ConnStats::default();
        s.accepted_sent_at.push(((0, 1), t0));
        s.price_seen_at.push(((0, 1), later));
        s.price_seen_at.push(((1, 1), later));
        let h = s.broadcast_latency();
        assert_eq!(h.len(), 1);
        assert!((2_900..=3_100).contains(&h.value_at_quantile(0.5)));
    }
}
