//! Gavel's command-line tools and the small library under them.
//!
//! The binaries: `gavel` (list, show, watch and bid from a terminal), `gavel-local`
//! (`up`/`down`/`status`/`new`, run by `make up`/`make down`) and `gavel-demo` (the scripted
//! bidders of `make demo`). The library:
//!
//! - [`protocol`]: the WebSocket protocol v1 ([`gavel_protocol`]) and RFC 3339 times.
//! - [`client`]: a small typed WebSocket client ([`WsClient`]).
//! - [`http`]: a minimal HTTP GET for the REST reads and health checks.
//! - [`money`]: amounts in a currency's minor unit, printed and read as people write them.
//! - [`feed`]: readable one-line renderings of server messages.
//! - [`envfile`]: `.gavel/env`, written by `make up`, read by the CLI.
//! - [`manifest`]: Auction manifests written from the `gavel_crds` types, and the layout of
//!   a standalone operator's manifests folder.
//! - [`servers`]: throw-away Redis and PostgreSQL servers.
//! - [`local`]: the [`LocalPlatform`] (Redis, PostgreSQL, bid-apis, operator) that
//!   `gavel-local` runs and the e2e scenarios start.
//! - [`kube`]: a real kube-apiserver and etcd on loopback ports with the Helm chart
//!   applied (`make k8s-up`, the operator's tests against a real API server).

pub mod client;
pub mod envfile;
pub mod feed;
pub mod http;
pub mod kube;
pub mod local;
pub mod manifest;
pub mod money;
pub mod protocol;
pub mod servers;
pub mod target;

pub use client::{Auth, BidReply, ClientError, WsClient};
pub use local::{LocalOptions, LocalPlatform, OperatorMode, PlatformError};
pub use manifest::AuctionSpec;
pub use protocol::{ClientMessage, ErrorCode, Outcome, ServerMessage};

/// Logs of a command-line tool: text lines on stderr (coloured only on a terminal),
/// filtered by `RUST_LOG`, `default_level` without it. Call at the start of `main`.
pub fn init_logging(default_level: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(gavel_engine::startup::log_colours(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .init();
}

/// Lets a closed pipe end the process quietly, as it does other Unix tools
/// (`gavel-local status | head -1`): Rust starts programs with SIGPIPE ignored, which turns
/// the next write to stdout into a "Broken pipe" panic. Call first thing in `main`.
#[allow(unsafe_code)] // The one unsafe call of the workspace, below.
pub fn exit_quietly_on_closed_pipe() {
    // SAFETY: sets the default disposition of one signal, at start-up, before any thread
    // exists; no handler runs Rust code.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
