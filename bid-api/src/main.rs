//! The `gavel-bid-api` binary: configuration → logging → server, until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use gavel_bid_api::config::Config;
use gavel_engine::runtime::{init_logging, shutdown_signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logging(config.log_format).map_err(anyhow::Error::msg)?;
    let listener = gavel_bid_api::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    gavel_bid_api::run(config, listener, shutdown_signal())
        .await
        .context("bid-api failed")
}
