//! Command-line flags, each with an environment-variable equivalent (README § Configuration).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

pub use gavel_engine::runtime::{LogFormat, parse_duration};

/// Gavel's Auction operator.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "gavel-operator",
    version,
    about = "Gavel's Auction operator: provisions each Auction in Redis and PostgreSQL, opens it \
             at startsAt, closes it exactly once at its effective end, and reports status and Events.",
    after_help = "Logging: RUST_LOG sets the filter (default `info`, e.g. \
                  RUST_LOG=gavel_operator=debug,kube=warn).\n\
                  In a cluster the operator watches Auctions cluster-wide and acts only while it \
                  holds the Lease (leader election), so several replicas can run.\n\
                  With --standalone it needs no cluster: it reconciles the Auction manifests of a \
                  directory (development mode)."
)]
pub struct Args {
    /// Redis of the bidding engine: redis://[:password@]host:port[/db].
    #[arg(
        long,
        env = "GAVEL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// PostgreSQL where bids and results are recorded: postgres://user[:password]@host:port/db.
    #[arg(
        long,
        env = "GAVEL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gavel",
        hide_env_values = true
    )]
    pub database_url: String,

    /// Address of the HTTP server for /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, env = "GAVEL_OPERATOR_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    /// Development mode: reconcile the Auction manifests (*.yaml, *.yml) of this directory
    /// instead of a Kubernetes API server; each status is written beside its file as
    /// <file>.status.yaml, and removing a file deletes the auction.
    #[arg(long, env = "GAVEL_STANDALONE_DIR", value_name = "DIR")]
    pub standalone: Option<PathBuf>,

    /// Standalone mode: also print every status change to stdout as a YAML document.
    #[arg(long, env = "GAVEL_STATUS_STDOUT", default_value_t = false)]
    pub status_stdout: bool,

    /// Standalone mode: how often the directory is scanned for changes.
    #[arg(long, env = "GAVEL_STANDALONE_POLL", default_value = "200ms", value_parser = parse_duration)]
    pub poll: Duration,

    /// How often, at most, an auction that changed in Redis (bids, a halt) is looked at and
    /// its status written (never once per bid), and how often Redis is checked for lost
    /// data. An open auction with no bids is not looked at again until its end.
    #[arg(long, env = "GAVEL_STATUS_REFRESH", default_value = "5s", value_parser = parse_duration)]
    pub status_refresh: Duration,

    /// How many auctions are reconciled at the same time (auctions ending together close
    /// together; one auction is never reconciled twice at once).
    #[arg(long, env = "GAVEL_RECONCILE_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub reconcile_concurrency: u16,

    /// How long a closed auction's live state stays in Redis after its result is recorded
    /// (an Auction's spec.retention overrides it); then it leaves Redis and PostgreSQL
    /// serves the auction's snapshot, history and replay.
    #[arg(long, env = "GAVEL_RETENTION", default_value = "1h", value_parser = parse_duration)]
    pub retention: Duration,

    /// Run a flusher (Redis event streams → PostgreSQL) continuously. Default: on in
    /// standalone mode (no bid-api needed), off in a cluster where the bid-api pods flush.
    /// Closing always flushes the auction's last bids itself.
    #[arg(long, env = "GAVEL_OPERATOR_FLUSH")]
    pub flush: Option<bool>,

    /// How log lines are written to stderr: `json`, one object per line with the current
    /// span's fields (for log collectors), or `text` (for people). `RUST_LOG` filters them
    /// (default `info`).
    #[arg(long, env = "GAVEL_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    /// Name of the coordination.k8s.io Lease used for leader election.
    #[arg(long, env = "GAVEL_LEASE_NAME", default_value = "gavel-operator")]
    pub lease_name: String,

    /// Namespace of the Lease (default: the pod's namespace from POD_NAMESPACE, else the
    /// client's default namespace).
    #[arg(long, env = "GAVEL_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// This replica's identity in the Lease and in Events (default: POD_NAME, else the
    /// host name and process id).
    #[arg(long, env = "GAVEL_OPERATOR_ID")]
    pub identity: Option<String>,

    /// How long a Lease stays valid without renewal; a new leader takes over after it.
    #[arg(long, env = "GAVEL_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
}

impl Args {
    /// Whether the continuous flusher runs.
    pub fn flush_enabled(&self) -> bool {
        self.flush.unwrap_or(self.standalone.is_some())
    }

    /// This replica's identity.
    pub fn identity(&self) -> String {
        self.identity
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok().filter(|s| !s.is_empty()))
            .unwrap_or_else(|| {
                let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "gavel-operator".into());
                format!("{host}-{}", std::process::id())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_parse_and_help_documents_each() {
        Args::command().debug_assert();
        let args = Args::try_parse_from([
            "gavel-operator",
            "--standalone",
            "/tmp/auctions",
            "--poll",
            "100ms",
            "--log-format",
            "text",
        ])
        .unwrap();
        assert!(args.flush_enabled());
        assert_eq!(args.poll, Duration::from_millis(100));
        let help = Args::command().render_long_help().to_string();
        for env in [
            "GAVEL_REDIS_URL",
            "GAVEL_DATABASE_URL",
            "GAVEL_OPERATOR_LISTEN",
            "GAVEL_STANDALONE_DIR",
            "RUST_LOG",
        ] {
            assert!(help.contains(env), "{env} missing from --help");
        }
        assert!(Args::try_parse_from(["gavel-operator", "--poll", "soon"]).is_err());
    }
}
