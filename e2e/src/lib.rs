//! Gavel end-to-end: the black-box scenarios and the platforms they run against.
//!
//! - [`platform`]: the [`Platform`] the scenarios run against, through its public
//!   interfaces only: from `GAVEL_E2E_*` variables (a manifests folder or `kubectl`), or a
//!   [`LocalPlatform`] started on this machine by the `gavel-cli` library.
//!
//! The client, protocol, HTTP, env-file, manifest and Kubernetes helpers are the
//! `gavel-cli` library's, re-exported here for the scenarios.

pub mod platform;

pub use gavel_cli::{
    Auth, BidReply, ClientError, LocalOptions, LocalPlatform, OperatorMode, WsClient,
};
pub use gavel_cli::{client, envfile, feed, http, kube, manifest, protocol, servers};
pub use platform::{AuctionSpec, Backend, Platform, PlatformError};
pub use protocol::{ClientMessage, ErrorCode, Outcome, ServerMessage};
