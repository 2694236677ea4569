//! Logging through `tracing`: the format and subscriber every Gavel binary shares
//! ([`gavel_engine::runtime`]), JSON lines on stderr by default, filtered by `RUST_LOG`.
//! Each line carries the span it was logged in (a reconcile's auction, generation and
//! step; a flush batch's consumer and size).

use crate::config::LogFormat;

/// Installs the global subscriber. Fails only if one is already installed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    gavel_engine::runtime::init_logging(format).map_err(anyhow::Error::msg)
}
