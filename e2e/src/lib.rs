//! Gavel end-to-end: everything that talks to a running platform from the outside.
//!
//! - [`protocol`]: serde types of every WebSocket protocol v1 message (README § WebSocket protocol).
//! - [`client`]: a small typed WebSocket client ([`WsClient`]): connect with
//!   `?bidder=` (development auth) or a Bearer token, subscribe (with `since`), bid with a
//!   `ref`, wait for a message matching a predicate with a timeout.
//! - [`http`]: a minimal HTTP GET for the REST reads and health checks.
//! - [`platform`]: the [`Platform`] the scenarios run against (from `GAVEL_E2E_*`
//!   variables, a manifests folder or `kubectl`) and the [`LocalPlatform`] launcher that
//!   starts Redis, PostgreSQL, two bid-api processes and a standalone operator on this
//!   machine; it backs both the tests and `make up`.
//! - [`kube`]: a real kube-apiserver and etcd on loopback ports ([`kube::ControlPlane`]) and
//!   the Helm chart applied to it, for the operator's tests against a real API server and
//!   `make k8s-up`.
//! - [`envfile`]: `.gavel/env`, written by `make up`, read by the CLI.
//! - [`feed`]: readable one-line renderings of server messages, for the CLI and the demo.
//!
//! The binaries: `gavel` (watch and bid from a terminal), `gavel-local` (`up`/`down`, used
//! by `make up`/`make down`) and `gavel-demo` (the scripted bidders of `make demo`).

pub mod client;

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
pub mod envfile;
pub mod feed;
pub mod http;
pub mod kube;
pub mod platform;
pub mod protocol;

pub use client::{Auth, BidReply, ClientError, WsClient};
pub use platform::{
    AuctionSpec, LocalOptions, LocalPlatform, OperatorMode, Platform, PlatformError,
};
pub use protocol::{ClientMessage, ErrorCode, Outcome, ServerMessage};
