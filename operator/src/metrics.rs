//! Prometheus metrics of the operator: reconciles, errors, durations, auctions by phase,
//! retries, leadership. Every label value comes from an enum ([`ReconcileResult`],
//! [`ErrorKind`], [`Phase`]), so the set of series is known in advance.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use gavel_crds::Phase;
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// The `result` label of `gavel_operator_reconciles_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReconcileResult {
    /// The reconcile finished.
    Ok,
    /// It failed; retried with backoff.
    Error,
}

impl ReconcileResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileResult::Ok => "ok",
            ReconcileResult::Error => "error",
        }
    }
}

/// Why a reconcile failed: the `kind` label of `gavel_operator_reconcile_errors_total`,
/// and what decides how it is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Redis failed or answered something unexpected.
    Redis,
    /// PostgreSQL failed.
    Postgres,
    /// Flushing the last bids failed.
    Flush,
    /// The Kubernetes API server refused or failed a request.
    Kube,
    /// A deletion waits for the last bids to reach PostgreSQL (not a failure: retried
    /// shortly, without backoff).
    Pending,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 5] = [
        ErrorKind::Redis,
        ErrorKind::Postgres,
        ErrorKind::Flush,
        ErrorKind::Kube,
        ErrorKind::Pending,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Redis => "redis",
            ErrorKind::Postgres => "postgres",
            ErrorKind::Flush => "flush",
            ErrorKind::Kube => "kube",
            ErrorKind::Pending => "pending",
        }
    }
}

/// The operator's metrics, registered in [`Metrics::registry`].
pub struct Metrics {
    /// Registry served on /metrics (the flusher's metrics are registered here too).
    pub registry: Registry,
    /// `gavel_operator_reconciles_total{result}`: ok or error.
    pub reconciles: IntCounterVec,
    /// `gavel_operator_reconcile_errors_total{kind}`: see [`ErrorKind`].
    pub errors: IntCounterVec,
    /// `gavel_operator_auctions_backing_off`: auctions whose last reconcile failed, waiting
    /// for their next attempt ([`crate::backoff`]).
    pub backing_off: IntGauge,
    /// `gavel_operator_retry_delay_seconds`: the delays chosen before retrying a failed
    /// reconcile.
    pub retry_delay: Histogram,
    /// `gavel_operator_reconcile_duration_seconds`.
    pub duration: Histogram,
    /// `gavel_operator_auctions{phase}`: auctions known to this replica, by phase.
    pub auctions: IntGaugeVec,
    /// `gavel_operator_leader`: 1 while this replica holds the Lease (always 1 standalone).
    pub leader: IntGauge,
    phases: Mutex<HashMap<String, Option<Phase>>>,
}

impl Metrics {
    /// Creates and registers the metrics in a fresh registry.
    pub fn new() -> prometheus::Result<Self> {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new(
                "gavel_operator_reconciles_total",
                "Auction reconciles by result",
            ),
            &["result"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "gavel_operator_reconcile_errors_total",
                "Failed reconciles by kind of failure",
            ),
            &["kind"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "gavel_operator_reconcile_duration_seconds",
                "Duration of one reconcile",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let backing_off = IntGauge::new(
            "gavel_operator_auctions_backing_off",
            "Auctions whose last reconcile failed, waiting to be retried",
        )?;
        let retry_delay = Histogram::with_opts(
            HistogramOpts::new(
                "gavel_operator_retry_delay_seconds",
                "Delay before retrying a failed reconcile (exponential, with jitter, capped)",
            )
            .buckets(vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 60.0]),
        )?;
        let auctions = IntGaugeVec::new(
            Opts::new(
                "gavel_operator_auctions",
                "Auctions known to this operator, by phase",
            ),
            &["phase"],
        )?;
        let leader = IntGauge::new(
            "gavel_operator_leader",
            "1 while this replica is the leader and acts",
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(backing_off.clone()))?;
        registry.register(Box::new(retry_delay.clone()))?;
        registry.register(Box::new(auctions.clone()))?;
        registry.register(Box::new(leader.clone()))?;
        // Every series exists from the start (at 0), so rates and alerts see it.
        for phase in Phase::ALL {
            auctions.with_label_values(&[phase.as_str()]).set(0);
        }
        for result in [ReconcileResult::Ok, ReconcileResult::Error] {
            reconciles.with_label_values(&[result.as_str()]);
        }
        for kind in ErrorKind::ALL {
            errors.with_label_values(&[kind.as_str()]);
        }
        Ok(Self {
            registry,
            reconciles,
            errors,
            backing_off,
            retry_delay,
            duration,
            auctions,
            leader,
            phases: Mutex::new(HashMap::new()),
        })
    }

    /// Records one reconcile.
    pub fn reconciled(&self, elapsed: Duration, error: Option<ErrorKind>) {
        self.duration.observe(elapsed.as_secs_f64());
        let result = match error {
            None => ReconcileResult::Ok,
            Some(kind) => {
                self.errors.with_label_values(&[kind.as_str()]).inc();
                ReconcileResult::Error
            }
        };
        self.reconciles.with_label_values(&[result.as_str()]).inc();
    }

    /// Per-auction retry state reported in these metrics.
    pub fn backoffs(&self, policy: crate::backoff::RetryPolicy) -> crate::backoff::Backoffs {
        crate::backoff::Backoffs::new(policy, self.backing_off.clone(), self.retry_delay.clone())
    }

    /// Notes the phase of auction `key` (`None` forgets it) and updates the gauge.
    pub fn set_phase(&self, key: &str, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        let old = match phase {
            Some(p) => phases.insert(key.to_owned(), Some(p)).flatten(),
            None => phases.remove(key).flatten(),
        };
        // Only the two phases involved change: no walk over every auction.
        if old != phase {
            if let Some(p) = old {
                self.auctions.with_label_values(&[p.as_str()]).dec();
            }
            if let Some(p) = phase {
                self.auctions.with_label_values(&[p.as_str()]).inc();
            }
        }
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reconciles_and_phases() {
        let m = Metrics::new().unwrap();
        m.reconciled(Duration::from_millis(3), None);
        m.reconciled(Duration::from_millis(3), Some(ErrorKind::Redis));
        m.set_phase("shop/a", Some(Phase::Open));
        m.set_phase("shop/b", Some(Phase::Open));
        m.set_phase("shop/b", Some(Phase::Closed));
        m.set_phase("shop/c", Some(Phase::Open));
        m.set_phase("shop/c", None);
        let text = m.render();
        for line in [
            "gavel_operator_reconciles_total{result=\"ok\"} 1",
            "gavel_operator_reconciles_total{result=\"error\"} 1",
            "gavel_operator_reconcile_errors_total{kind=\"redis\"} 1",
            "gavel_operator_auctions{phase=\"Open\"} 1",
            "gavel_operator_auctions{phase=\"Closed\"} 1",
            "gavel_operator_reconcile_duration_seconds_count 2",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
