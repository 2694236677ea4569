//! Command-line flags, each with an environment-variable equivalent (README § Configuration).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use gavel_engine::outbound::{InvalidSecret, WebhookSecret};

use crate::feed::FeedConfig;

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

    /// The cluster-wide sink of the outbound event feed: an http(s) URL that receives every
    /// auction's events as CloudEvents (one signed POST each). Auctions can name their own
    /// with spec.sink.uri. Needs --events-secret.
    #[arg(long, env = "GAVEL_EVENTS_SINK", value_parser = parse_sink)]
    pub events_sink: Option<String>,

    /// The Standard Webhooks secret (whsec_<base64>) that signs every event delivered.
    /// Without it the event feed is off.
    #[arg(long, env = "GAVEL_EVENTS_SECRET", hide_env_values = true, value_parser = parse_secret)]
    pub events_secret: Option<WebhookSecret>,

    /// Attempts to deliver an event before it goes to the sink's dead letters.
    #[arg(long, env = "GAVEL_EVENTS_MAX_ATTEMPTS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    pub events_max_attempts: u32,

    /// Backoff after an event's first failed delivery; it doubles with each further failure
    /// (with jitter), up to --events-backoff-max.
    #[arg(long, env = "GAVEL_EVENTS_BACKOFF", default_value = "500ms", value_parser = parse_duration)]
    pub events_backoff: Duration,

    /// Longest backoff between two attempts of one event.
    #[arg(long, env = "GAVEL_EVENTS_BACKOFF_MAX", default_value = "60s", value_parser = parse_duration)]
    pub events_backoff_max: Duration,

    /// Timeout of one delivery request.
    #[arg(long, env = "GAVEL_EVENTS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub events_timeout: Duration,

    /// How long an event waits for an earlier one of its auction (not yet recorded) before
    /// it is delivered anyway.
    #[arg(long, env = "GAVEL_EVENTS_GAP_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub events_gap_timeout: Duration,

    /// How often the dispatcher looks for new events when idle.
    #[arg(long, env = "GAVEL_EVENTS_POLL", default_value = "250ms", value_parser = parse_duration)]
    pub events_poll: Duration,

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

    /// The event feed's dispatcher settings.
    pub fn feed(&self) -> FeedConfig {
        FeedConfig {
            sink: self.events_sink.clone(),
            secret: self.events_secret.clone(),
            poll: self.events_poll,
            timeout: self.events_timeout,
            max_attempts: self.events_max_attempts,
            backoff: self.events_backoff,
            backoff_max: self.events_backoff_max,
            gap_timeout: self.events_gap_timeout,
            ..FeedConfig::default()
        }
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

/// An http(s) URL.
fn parse_sink(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http:// or https:// URL".into());
    }
    Ok(text.to_owned())
}

fn parse_secret(text: &str) -> Result<WebhookSecret, String> {
    text.parse().map_err(|e: InvalidSecret| e.to_string())
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
        assert!(!args.feed().enabled());
        let feed = Args::try_parse_from([
            "gavel-operator",
            "--events-sink",
            "https://hooks.example/gavel",
            "--events-secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ])
        .unwrap()
        .feed();
        assert!(feed.enabled());
        for bad in [
            ["--events-sink", "ftp://x/y"],
            ["--events-sink", "nowhere"],
            ["--events-secret", "hunter2"],
        ] {
            assert!(Args::try_parse_from(["gavel-operator", bad[0], bad[1]]).is_err());
        }
    }
}
