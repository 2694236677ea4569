//! Command-line flags and their environment variables (README § Configuration), documented by
//! `--help`: where to listen, Redis and PostgreSQL, token verification, development
//! auth, the origin allow-list and every per-connection limit.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

pub use gavel_engine::runtime::{LogFormat, parse_duration};

/// Parses an HTTP header name.
fn parse_header_name(text: &str) -> Result<axum::http::HeaderName, String> {
    axum::http::HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("invalid header name {text:?}"))
}

/// The bid-api server's configuration.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "gavel-bid-api",
    version,
    about = "Gavel bid-api: live WebSocket bidding (GET /v1/ws), REST reads, health and metrics",
    long_about = None,
    args_override_self = true
)]
pub struct Config {
    /// Address to listen on for HTTP and WebSocket.
    #[arg(long, env = "GAVEL_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Redis URL (redis://host:port/db): the live state of every auction.
    #[arg(
        long,
        env = "GAVEL_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub redis_url: String,

    /// Multiplexed Redis connections used for bids and reads.
    #[arg(long, env = "GAVEL_REDIS_CONNECTIONS", default_value_t = 4)]
    pub redis_connections: usize,

    /// PostgreSQL URL: bid history for REST reads, and the flusher's target.
    #[arg(
        long,
        env = "GAVEL_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gavel",
        hide_env_values = true
    )]
    pub database_url: String,

    /// OpenID Connect issuer URL of the bidders' identity provider (e.g.
    /// https://keycloak.example/realms/shop): its signing keys are found through
    /// `<issuer>/.well-known/openid-configuration`, and tokens must carry this `iss`.
    #[arg(long, env = "GAVEL_OIDC_ISSUER")]
    pub oidc_issuer: Option<String>,

    /// JWKS URL of the identity provider, for providers without discovery (with
    /// `--oidc-issuer`, the discovered `jwks_uri` is used instead).
    #[arg(long, env = "GAVEL_JWKS_URL")]
    pub jwks_url: Option<String>,

    /// PEM file of CA certificates trusted (besides the system's) for the identity
    /// provider's HTTPS, e.g. a private CA.
    #[arg(long, env = "GAVEL_OIDC_CA_FILE")]
    pub oidc_ca_file: Option<std::path::PathBuf>,

    /// Client id of the bidder page at the identity provider, a public client (no
    /// secret). With `--oidc-issuer`, the page signs bidders in itself (authorization
    /// code with PKCE, redirect URI `<page origin>/auth/callback`) and refreshes their
    /// tokens; the page's Content-Security-Policy then allows connections to the issuer.
    #[arg(long, env = "GAVEL_OIDC_PAGE_CLIENT_ID")]
    pub oidc_page_client_id: Option<String>,

    /// Scopes the bidder page asks the provider for (space-separated).
    #[arg(long, env = "GAVEL_OIDC_PAGE_SCOPE", default_value = "openid")]
    pub oidc_page_scope: String,

    /// Resource indicator (RFC 8707) the bidder page sends with its authorization and
    /// token requests, for providers that pick the access token's audience by it.
    #[arg(long, env = "GAVEL_OIDC_PAGE_RESOURCE")]
    pub oidc_page_resource: Option<String>,

    /// Longest time between two fetches of the provider's keys (its `Cache-Control:
    /// max-age` may shorten it).
    #[arg(long, env = "GAVEL_JWKS_REFRESH_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub jwks_refresh_interval: Duration,

    /// Shortest time between two fetches of the provider's keys: a token naming an
    /// unknown `kid` triggers a fetch at most this often.
    #[arg(long, env = "GAVEL_JWKS_MIN_REFRESH_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub jwks_min_refresh_interval: Duration,

    /// DEVELOPMENT: HS256 secret that bidder tokens are signed with.
    #[arg(long, env = "GAVEL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// DEVELOPMENT: RS256 public key (PEM text, or the path of a PEM file) that verifies
    /// bidder tokens.
    #[arg(long, env = "GAVEL_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,

    /// Required `iss` claim of tokens (defaults to `--oidc-issuer`); tokens without it
    /// are refused.
    #[arg(long, env = "GAVEL_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim of tokens (one of its values); tokens without it are
    /// refused.
    #[arg(long, env = "GAVEL_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long, env = "GAVEL_JWT_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    pub jwt_leeway: Duration,

    /// Claim holding the bidder's id (a dotted path reaches into objects).
    #[arg(long, env = "GAVEL_JWT_SUBJECT_CLAIM", default_value = "sub")]
    pub jwt_subject_claim: String,

    /// Claim holding the bidder's display name (falls back to the id when absent).
    #[arg(long, env = "GAVEL_JWT_NAME_CLAIM", default_value = "name")]
    pub jwt_name_claim: String,

    /// Show token bidders as `<name> #<tag>`, the tag a stable 5-character digest of
    /// the bidder id, so that no one can pass for another bidder by taking their name.
    #[arg(long, env = "GAVEL_DISPLAY_NAME_TAG", default_value_t = true, action = clap::ArgAction::Set,
        num_args = 0..=1, default_missing_value = "true")]
    pub display_name_tag: bool,

    /// Scope a token needs to bid (in its space-separated `scope` or its `scp`);
    /// tokens without it may only watch.
    #[arg(long, env = "GAVEL_JWT_BID_SCOPE")]
    pub jwt_bid_scope: Option<String>,

    /// Role a token needs to bid, looked up in `--jwt-roles-claim`; tokens without it
    /// may only watch.
    #[arg(long, env = "GAVEL_JWT_BID_ROLE")]
    pub jwt_bid_role: Option<String>,

    /// Claim listing the token's roles (a dotted path, e.g. `realm_access.roles` for
    /// Keycloak).
    #[arg(long, env = "GAVEL_JWT_ROLES_CLAIM", default_value = "roles")]
    pub jwt_roles_claim: String,

    /// After a token expires on an open connection, time the client has to send a
    /// `refresh` frame with a new token before the connection is closed with 4001.
    #[arg(long, env = "GAVEL_TOKEN_REFRESH_GRACE", default_value = "60s", value_parser = parse_duration)]
    pub token_refresh_grace: Duration,

    /// DEVELOPMENT ONLY: accept `?bidder=<name>` without a token. Never enable in production.
    #[arg(long, env = "GAVEL_DEV_AUTH", default_value_t = false, action = clap::ArgAction::Set,
        num_args = 0..=1, default_missing_value = "true")]
    pub dev_auth: bool,

    /// Origins allowed to open WebSockets, comma-separated (e.g. https://shop.example.com);
    /// `*` allows any. Requests without an Origin header (non-browser clients) and
    /// same-origin requests are always allowed.
    #[arg(long, env = "GAVEL_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Largest WebSocket frame and message, in bytes; larger ones close the connection
    /// with code 1009.
    #[arg(long, env = "GAVEL_MAX_MESSAGE_BYTES", default_value_t = 4096)]
    pub max_message_bytes: usize,

    /// Sustained client messages per second per connection.
    #[arg(long, env = "GAVEL_MESSAGES_PER_SECOND", default_value_t = 20)]
    pub messages_per_second: u32,

    /// Client messages a connection may send at once after being idle.
    #[arg(long, env = "GAVEL_MESSAGE_BURST", default_value_t = 40)]
    pub message_burst: u32,

    /// Events queued for one connection before it counts as a slow consumer and is
    /// disconnected with code 1013.
    #[arg(long, env = "GAVEL_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// Events kept in each auction's Redis stream for `since` replay (approximately);
    /// older ones are replayed from PostgreSQL.
    #[arg(long, env = "GAVEL_REPLAY_WINDOW", default_value_t = gavel_engine::client::DEFAULT_REPLAY_WINDOW)]
    pub replay_window: u64,

    /// Longest time an event stays in its auction's Redis stream for `since` replay
    /// (trimmed as events are appended; 0s: no age limit); older ones are replayed from
    /// PostgreSQL.
    #[arg(long, env = "GAVEL_REPLAY_MAX_AGE", default_value = "60m", value_parser = parse_duration)]
    pub replay_max_age: Duration,

    /// Auctions one connection may subscribe to at once.
    #[arg(long, env = "GAVEL_MAX_SUBSCRIPTIONS", default_value_t = 64)]
    pub max_subscriptions: usize,

    /// Most open WebSocket connections per process; more are refused with 503.
    #[arg(long, env = "GAVEL_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most open TCP connections per process, HTTP and WebSocket alike; more are
    /// answered 503 with `Retry-After` and closed. Keep it under the file-descriptor
    /// limit.
    #[arg(long, env = "GAVEL_MAX_TCP_CONNECTIONS", default_value_t = 55_000)]
    pub max_tcp_connections: usize,

    /// Most open connections per client IP (TCP connections per peer; open WebSockets
    /// per client IP behind a trusted proxy header); more are answered 429. 0: no cap.
    #[arg(long, env = "GAVEL_MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// Sustained WebSocket upgrades per second per client IP; faster ones are answered
    /// 429 with `Retry-After`.
    #[arg(long, env = "GAVEL_UPGRADES_PER_IP_PER_SECOND", default_value_t = 50.0)]
    pub upgrades_per_ip_per_second: f64,

    /// WebSocket upgrades a client IP may make at once after being idle.
    #[arg(long, env = "GAVEL_UPGRADE_BURST", default_value_t = 200)]
    pub upgrade_burst: u32,

    /// Header holding the client's IP, set by a trusted reverse proxy (e.g.
    /// X-Forwarded-For: its last address is used). Only set it behind a proxy that
    /// always writes it, or clients can pick their own IP.
    #[arg(long, env = "GAVEL_TRUSTED_PROXY_HEADER", value_parser = parse_header_name)]
    pub trusted_proxy_header: Option<axum::http::HeaderName>,

    /// Time a client has to send a request's headers (also the idle time of a
    /// keep-alive connection); slower connections are closed.
    #[arg(long, env = "GAVEL_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// Time to answer an HTTP request (REST reads, upgrades); longer ones get 408.
    #[arg(long, env = "GAVEL_HTTP_REQUEST_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub http_request_timeout: Duration,

    /// Interval of WebSocket pings to each client.
    #[arg(long, env = "GAVEL_HEARTBEAT_INTERVAL", default_value = "15s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// A connection silent (no frame, no pong) for this long, or whose writes are stuck
    /// this long, is dropped.
    #[arg(long, env = "GAVEL_HEARTBEAT_TIMEOUT", default_value = "45s", value_parser = parse_duration)]
    pub heartbeat_timeout: Duration,

    /// On SIGTERM: time to close sockets, finish in-flight bids and flush before exiting.
    #[arg(long, env = "GAVEL_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Flusher consumer name; unique per process. Defaults to `<hostname>-<pid>`.
    #[arg(long, env = "GAVEL_FLUSH_CONSUMER")]
    pub flush_consumer: Option<String>,

    /// Run a flusher in this process (accepted bids from Redis to PostgreSQL). `false`
    /// only where other flushers run (other bid-apis, or the operator with `--flush`).
    #[arg(long, env = "GAVEL_FLUSH", default_value_t = true, action = clap::ArgAction::Set)]
    pub flush: bool,

    /// When a bid is answered as accepted: `accepted`, once Redis has applied it (durable
    /// with Redis's append-only file; lost with Redis's data if not yet flushed), or
    /// `recorded`, once PostgreSQL has also committed it (survives the loss of Redis's
    /// data; costs a PostgreSQL commit per bid, shared by bids accepted together, and
    /// bids are refused while PostgreSQL is down).
    #[arg(long, env = "GAVEL_ACKNOWLEDGE", value_enum, default_value_t = Acknowledge::Accepted)]
    pub acknowledge: Acknowledge,

    /// How log lines are written to stderr: `json`, one object per line with the current
    /// span's fields (for log collectors), or `text` (for people). `RUST_LOG` filters them
    /// (default `info`).
    #[arg(long, env = "GAVEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

/// When a bid is answered as accepted (`GAVEL_ACKNOWLEDGE`): see README, "Durability".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Acknowledge {
    /// Once Redis has applied the bid.
    #[default]
    Accepted,
    /// Once PostgreSQL has committed it too.
    Recorded,
}

impl Config {
    /// The flusher consumer name to use.
    pub fn consumer_name(&self) -> String {
        self.flush_consumer.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "bid-api".to_owned());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("x").is_err());
        assert!(parse_duration("5x").is_err());
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn defaults_and_flags() {
        let c = Config::try_parse_from(["gavel-bid-api"]).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:8080");
        assert!(!c.dev_auth);
        let c = Config::try_parse_from([
            "gavel-bid-api",
            "--dev-auth",
            "true",
            "--allowed-origins",
            "https://a.example,https://b.example",
        ])
        .unwrap();
        assert!(c.dev_auth);
        assert_eq!(c.allowed_origins.len(), 2);
    }
}
