//! The `gavel-bid-api` binary: configuration → logging → server, until SIGTERM/SIGINT.

use anyhow::Context;
use clap::Parser;
use gavel_bid_api::config::{Config, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(gavel_engine::startup::log_colours(
                std::io::stdout().is_terminal(),
            ))
            .with_env_filter(filter)
            .init(),
    }
    let listener = gavel_bid_api::bind(config.listen)
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    gavel_bid_api::run(config, listener, shutdown_signal())
        .await
        .context("bid-api failed")
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
