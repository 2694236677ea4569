//! Redis memory and refusals as Prometheus metrics, sampled from `INFO`. A Redis at its
//! `maxmemory` (with `noeviction`, as shipped) refuses writing scripts before they run, so
//! bids answer `UNAVAILABLE` until memory frees: these say how close Redis is to that, and
//! how often it happened. Both the bid-api and the operator export them (one `INFO` each
//! per interval, per master on a Redis Cluster: there each master refuses for itself, so
//! the memory gauges show the fullest master, and the refusals are summed).

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand, InfoKind};
use prometheus::{IntGauge, Registry};
use tokio::task::JoinHandle;
use tracing::debug;

use crate::{Engine, EngineError};

/// How often [`RedisStats::spawn`] samples by default.
pub const DEFAULT_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The gauges.
#[derive(Clone)]
pub struct RedisStats {
    /// `gavel_redis_used_memory_bytes`: Redis's `used_memory`.
    pub used_memory: IntGauge,
    /// `gavel_redis_maxmemory_bytes`: Redis's `maxmemory` (0: no limit).
    pub maxmemory: IntGauge,
    /// `gavel_redis_oom_refusals`: commands and scripts Redis refused for lack of memory
    /// since it started (`errorstat_OOM`; a gauge, since a restart resets it).
    pub oom_refusals: IntGauge,
}

impl RedisStats {
    /// The gauges, registered in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let stats = Self::unregistered()?;
        registry.register(Box::new(stats.used_memory.clone()))?;
        registry.register(Box::new(stats.maxmemory.clone()))?;
        registry.register(Box::new(stats.oom_refusals.clone()))?;
        Ok(stats)
    }

    /// The gauges, not registered anywhere (tests, tools).
    pub fn unregistered() -> prometheus::Result<Self> {
        Ok(Self {
            used_memory: IntGauge::new(
                "gavel_redis_used_memory_bytes",
                "Memory Redis uses (INFO memory used_memory)",
            )?,
            maxmemory: IntGauge::new(
                "gavel_redis_maxmemory_bytes",
                "Redis's maxmemory; at it, writing scripts (bids) are refused (0: no limit)",
            )?,
            oom_refusals: IntGauge::new(
                "gavel_redis_oom_refusals",
                "Commands and scripts Redis refused for lack of memory since it started (errorstat_OOM)",
            )?,
        })
    }

    /// Reads `INFO memory` and `INFO errorstats` once (of each master on a cluster) and
    /// sets the gauges.
    pub async fn sample(&self, engine: &Engine) -> Result<(), EngineError> {
        let redis = engine.redis();
        let nodes = match redis.cached_cluster_state() {
            Some(state) if redis.is_clustered() => {
                state.unique_primary_nodes().into_iter().map(Some).collect()
            }
            _ => vec![None],
        };
        // (used, max) of the fullest master, and the refusals of all.
        let mut fullest: Option<(i64, i64)> = None;
        let mut refusals = 0;
        for node in nodes {
            let errors = CustomCommand::new_static("INFO", ClusterHash::FirstKey, false);
            let (memory, errors): (String, String) = match node {
                Some(node) => (
                    redis
                        .with_cluster_node(node.clone())
                        .info(Some(InfoKind::Memory))
                        .await?,
                    redis
                        .with_cluster_node(node)
                        .custom(errors, vec!["errorstats"])
                        .await?,
                ),
                None => (
                    redis.info(Some(InfoKind::Memory)).await?,
                    redis.custom(errors, vec!["errorstats"]).await?,
                ),
            };
            let used = field(&memory, "used_memory").unwrap_or_default();
            let max = field(&memory, "maxmemory").unwrap_or_default();
            let share = |(used, max): (i64, i64)| used as f64 / max.max(1) as f64;
            if fullest.is_none_or(|f| share((used, max)) > share(f)) {
                fullest = Some((used, max));
            }
            refusals += oom_count(&errors);
        }
        let (used, max) = fullest.unwrap_or_default();
        self.used_memory.set(used);
        self.maxmemory.set(max);
        self.oom_refusals.set(refusals);
        Ok(())
    }

    /// Samples every `every` until the task is aborted.
    pub fn spawn(self, engine: Engine, every: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = self.sample(&engine).await {
                    debug!(error = %e, "cannot sample Redis memory");
                }
            }
        })
    }
}

/// The integer value of `name:` in an `INFO` reply.
fn field(info: &str, name: &str) -> Option<i64> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
}

/// `count` of the `errorstat_OOM:count=N` line (0 when Redis never refused for memory).
fn oom_count(errorstats: &str) -> i64 {
    errorstats
        .lines()
        .find_map(|l| l.strip_prefix("errorstat_OOM:"))
        .and_then(|v| {
            v.split(',')
                .find_map(|kv| kv.trim().strip_prefix("count="))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_info_fields() {
        let memory = "# Memory\r\nused_memory:1234\r\nused_memory_human:1.21K\r\nmaxmemory:0\r\n";
        assert_eq!(field(memory, "used_memory"), Some(1234));
        assert_eq!(field(memory, "maxmemory"), Some(0));
        assert_eq!(field(memory, "missing"), None);
        assert_eq!(
            oom_count("# Errorstats\r\nerrorstat_ERR:count=2\r\nerrorstat_OOM:count=7\r\n"),
            7
        );
        assert_eq!(oom_count("# Errorstats\r\n"), 0);
    }
}
