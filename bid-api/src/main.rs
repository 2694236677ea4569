//! The `gavel-bid-api` binary: configuration → telemetry → server, until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use gavel_bid_api::config::Config;
use gavel_engine::runtime::shutdown_signal;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = gavel_engine::telemetry::init(config.log_format, "gavel-bid-api")?;
    let listener = gavel_bid_api::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let result = gavel_bid_api::run(config, listener, shutdown_signal())
        .await
        .context("bid-api failed");
    // The last spans are sent before the runtime goes away (a blocking call).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}
