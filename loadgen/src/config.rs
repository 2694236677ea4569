//! Command-line configuration of a load run.

use std::time::Duration;

use clap::Parser;

/// Drive bid-api servers with real WebSocket bidders, watchers and idle connections.
///
/// Example (after `make up`): `gavel-load --scenario hot --bidders 1000 --duration 20s
/// --provision` reads the URLs from `.gavel/env`-style environment variables.
#[derive(Parser, Debug, Clone)]
#[command(name = "gavel-load", version)]
pub struct Config {
    /// Name of this run, used for the result files (`target/bench/<name>.json|svg`).
    #[arg(long, default_value = "load")]
    pub scenario: String,

    /// WebSocket URLs of the bid-api servers (comma-separated); connections are spread
    /// over them round-robin.
    #[arg(long, env = "GAVEL_WS_URLS", value_delimiter = ',', required = true)]
    pub ws_urls: Vec<String>,

    /// Auctions to bid on (`namespace/name`, comma-separated). With `--provision` they are
    /// created (open now, flat step 1, no per-bidder limit) in Redis first.
    #[arg(long, value_delimiter = ',', default_value = "load/hot-0")]
    pub auctions: Vec<String>,

    /// Provision the auctions directly in Redis (needs `--redis-url`): a benchmark shortcut
    /// that skips the operator.
    #[arg(long)]
    pub provision: bool,

    /// Redis of the platform, for `--provision`.
    #[arg(long, env = "GAVEL_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Bidder connections (each bids as `bidder-<i>` in development auth mode).
    #[arg(long, default_value_t = 100)]
    pub bidders: usize,

    /// Watcher connections subscribed to every auction's live feed.
    #[arg(long, default_value_t = 0)]
    pub watchers: usize,

    /// Idle connections: subscribed to a quiet auction, otherwise silent.
    #[arg(long, default_value_t = 0)]
    pub idle: usize,

    /// Slow HTTP connections held during the run: half send the start of a request's
    /// headers, half nothing; each is opened again when the server closes it.
    #[arg(long, default_value_t = 0)]
    pub slow: usize,

    /// Busy WebSocket clients, each sending `--chatty-rate` pings per second.
    #[arg(long, default_value_t = 0)]
    pub chatty: usize,

    /// Messages per second of each busy client.
    #[arg(long, default_value_t = 20.0)]
    pub chatty_rate: f64,

    /// Run a probe: a well-behaved bidder (`probe`) that bids on the first auction and
    /// checks `GET /healthz` every `--probe-interval`, each timed (reported as the probe's
    /// latencies).
    #[arg(long)]
    pub probe: bool,

    /// Time between two probes.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// Watchers whose every `price` message is timed for the broadcast latency (the others
    /// still check order and gaps).
    #[arg(long, default_value_t = 200)]
    pub timed_watchers: usize,

    /// Total bids per second across all bidders; 0 bids as fast as possible (each bidder
    /// waits for the reply to its previous bid).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,

    /// How long to bid, e.g. `20s`, `1m`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Connections opened at once while ramping up.
    #[arg(long, default_value_t = 256)]
    pub connect_parallelism: usize,

    /// PIDs of the bid-api processes, to report their memory per connection.
    #[arg(long, value_delimiter = ',')]
    pub server_pids: Vec<u32>,

    /// Processes whose CPU time (`/proc/<pid>/stat`, live children included) is reported
    /// per processed bid and per delivered frame, as `name=pid` (comma-separated), e.g.
    /// `bid-api=41,redis=40,postgres=38`. A name given twice is summed. The load
    /// generator's own CPU is always reported, as `gavel-load`.
    #[arg(long, value_delimiter = ',')]
    pub cpu_pids: Vec<crate::cpu::Watched>,

    /// Directory for the JSON and SVG results.
    #[arg(long, default_value = "target/bench")]
    pub out_dir: std::path::PathBuf,
}

pub use gavel_engine::runtime::parse_duration;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("1x").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("fast").is_err());
    }
}
