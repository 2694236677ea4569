//! Per-auction retry delays after failed reconciles, in both modes: exponential with
//! jitter (`backon`), capped, and reset by the first success.
//!
//! A fixed retry interval makes every auction hit a Redis or PostgreSQL that is down at
//! the same rhythm; here each auction's delays double from [`RetryPolicy::first`] up to
//! [`RetryPolicy::max`], each drawn at random between the step and twice it (so retries
//! of many auctions spread out), and never above the cap. The next delay is known before
//! it is used, so the status can say when the next attempt is
//! ([`crate::status::unavailable`]). Metrics: `gavel_operator_auctions_backing_off` and
//! `gavel_operator_retry_delay_seconds`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use prometheus::{Histogram, IntGauge};

/// How failed reconciles are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first retry's delay (before jitter).
    pub first: Duration,
    /// The longest delay, jitter included.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// One auction's retries: how many failures in a row, and the delay the next one waits.
struct Retry {
    attempts: u32,
    next: Duration,
    delays: ExponentialBackoff,
}

impl Retry {
    fn new(policy: RetryPolicy) -> Self {
        // Jitter draws from [d, 2d): steps up to half the cap keep every delay below it.
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(policy.first.min(policy.max))
            .with_max_delay(policy.max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        let next = delays.next().unwrap_or(policy.max).min(policy.max);
        Self {
            attempts: 0,
            next,
            delays,
        }
    }
}

/// A failure counted: the attempt it was (1 for the first in a row) and how long to wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delay {
    /// Failures in a row, this one included.
    pub attempt: u32,
    /// Wait before the next attempt.
    pub wait: Duration,
}

/// The retry state of every auction that is failing, by key (`namespace/name`).
pub struct Backoffs {
    policy: RetryPolicy,
    retries: Mutex<HashMap<String, Retry>>,
    backing_off: IntGauge,
    delays: Histogram,
}

impl Backoffs {
    /// Retries by `policy`, reported in the gauge and the histogram given (see
    /// [`crate::metrics::Metrics`]).
    pub fn new(policy: RetryPolicy, backing_off: IntGauge, delays: Histogram) -> Self {
        Self {
            policy,
            retries: Mutex::new(HashMap::new()),
            backing_off,
            delays,
        }
    }

    /// What the next failure of `key` will be, without counting it (for the status written
    /// before the failure is returned).
    pub fn peek(&self, key: &str) -> Delay {
        let mut retries = self.lock();
        let retry = retries
            .entry(key.to_owned())
            .or_insert_with(|| Retry::new(self.policy));
        Delay {
            attempt: retry.attempts.saturating_add(1),
            wait: retry.next,
        }
    }

    /// Counts a failure of `key`: the delay [`Backoffs::peek`] announced, and the next one
    /// drawn.
    pub fn fail(&self, key: &str) -> Delay {
        let mut retries = self.lock();
        let retry = retries
            .entry(key.to_owned())
            .or_insert_with(|| Retry::new(self.policy));
        retry.attempts = retry.attempts.saturating_add(1);
        let delay = Delay {
            attempt: retry.attempts,
            wait: retry.next,
        };
        retry.next = retry
            .delays
            .next()
            .unwrap_or(self.policy.max)
            .min(self.policy.max);
        self.backing_off.set(failing(&retries));
        self.delays.observe(delay.wait.as_secs_f64());
        delay
    }

    /// A success (or the auction is gone): the next failure starts from the first delay.
    pub fn reset(&self, key: &str) {
        let mut retries = self.lock();
        if retries.remove(key).is_some() {
            self.backing_off.set(failing(&retries));
        }
    }

    /// Auctions failing now.
    pub fn failing(&self) -> usize {
        self.lock().values().filter(|r| r.attempts > 0).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Retry>> {
        self.retries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn failing(retries: &HashMap<String, Retry>) -> i64 {
    let n = retries.values().filter(|r| r.attempts > 0).count();
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::HistogramOpts;

    fn backoffs(policy: RetryPolicy) -> Backoffs {
        Backoffs::new(
            policy,
            IntGauge::new("g", "g").unwrap(),
            Histogram::with_opts(HistogramOpts::new("h", "h")).unwrap(),
        )
    }

    #[test]
    fn delays_grow_with_jitter_up_to_the_cap_and_reset_on_success() {
        let policy = RetryPolicy {
            first: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        let b = backoffs(policy);
        let mut waits = Vec::new();
        for attempt in 1..=12 {
            let announced = b.peek("shop/a");
            let d = b.fail("shop/a");
            assert_eq!(d, announced, "the status announces the delay that is used");
            assert_eq!(d.attempt, attempt);
            waits.push(d.wait);
        }
        // Each step doubles (jitter draws from [step, 2 step)), capped.
        for (i, w) in waits.iter().enumerate() {
            let step = (policy.first * 2u32.pow(i as u32)).min(policy.max / 2);
            assert!(*w >= step && *w <= policy.max, "attempt {}: {w:?}", i + 1);
            assert!(
                *w < step * 2 || *w == policy.max,
                "attempt {}: {w:?}",
                i + 1
            );
        }
        assert!(waits[11] >= policy.max / 2, "{waits:?}");
        // Others are independent.
        assert_eq!(b.fail("shop/b").attempt, 1);
        assert_eq!(b.failing(), 2);
        assert_eq!(b.backing_off.get(), 2);
        b.reset("shop/a");
        assert_eq!(b.failing(), 1);
        let again = b.fail("shop/a");
        assert_eq!(again.attempt, 1);
        assert!(again.wait < policy.first * 2, "{again:?}");
        assert_eq!(b.delays.get_sample_count(), 14);
    }

    #[test]
    fn jitter_spreads_the_retries_of_many_auctions() {
        let b = backoffs(RetryPolicy::default());
        let mut waits: Vec<Duration> = (0..50).map(|i| b.fail(&format!("a{i}")).wait).collect();
        waits.sort();
        waits.dedup();
        assert!(waits.len() > 40, "{waits:?}");
    }
}
