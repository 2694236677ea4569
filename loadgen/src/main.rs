//! `gavel-load`: see [`gavel_loadgen`] and `--help`.

use clap::Parser;
use gavel_loadgen::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    let out_dir = config.out_dir.clone();
    let report = gavel_loadgen::run::run(config).await?;
    print!("{}", report.summary());
    report.write(&out_dir)?;
    eprintln!("results written to {}", out_dir.display());
    Ok(())
}
