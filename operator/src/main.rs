//! `gavel-operator`: the Auction operator binary (see `--help`).

use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use clap::Parser;
use gavel_engine::Engine;
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::redis_stats::{self, RedisStats};
use gavel_engine::runtime::shutdown_signal;
use gavel_engine::store::Store;
use gavel_operator::config::Args;
use gavel_operator::controller::{self, Context};
use gavel_operator::feed::{Dispatcher, FeedMetrics};
use gavel_operator::http::{self, Backends, HttpState};
use gavel_operator::leader::LeaderElector;
use gavel_operator::lifecycle::Lifecycle;
use gavel_operator::metrics::Metrics;
use gavel_operator::plan::Timing;
use gavel_operator::standalone::Standalone;
use gavel_operator::startup::Startup;
use gavel_operator::telemetry;
use k8s_openapi::api::coordination::v1::Lease;
use tokio::sync::Mutex;
use tracing::{error, info, warn};

/// Connections of the event feed's dispatcher.
const FEED_POOL_SIZE: u32 = 4;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let telemetry = telemetry::init(args.log_format)?;
    let result = run(args).await;
    if let Err(e) = &result {
        error!(error = format!("{e:#}"), "gavel-operator stopped");
    }
    // The last spans are sent before the runtime goes away (a blocking call).
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
    let identity = args.identity();
    let metrics = Arc::new(Metrics::new()?);
    // Health endpoints first: alive at once, ready only once every dependency was reached.
    let startup = Startup::new();
    let backends = Arc::new(OnceLock::new());
    let http_state = HttpState {
        metrics: metrics.clone(),
        startup: startup.clone(),
        backends: backends.clone(),
    };
    let listen = args.listen;
    tokio::spawn(async move {
        if let Err(e) = http::serve(listen, http_state).await {
            error!(error = %e, "metrics and health server failed");
        }
    });

    // One connection per reconcile under way, and two for the flusher and the HTTP reads.
    let pool_size = u32::from(args.reconcile_concurrency) + 2;
    let store = Store::connect_lazy_with(&args.database_url, pool_size)
        .context("invalid GAVEL_DATABASE_URL")?;
    let connected = async {
        let engine = startup
            .retry("Redis", || async {
                let engine = Engine::connect(&args.redis_url, 4).await?;
                engine.load_scripts().await?;
                Ok::<_, gavel_engine::EngineError>(engine)
            })
            .await;
        // Migrations are safe to run from several processes.
        startup.retry("PostgreSQL", || store.migrate()).await;
        engine
    };
    let engine = tokio::select! {
        e = connected => e,
        _ = shutdown_signal() => return Ok(()),
    };
    let _ = backends.set(Backends {
        engine: engine.clone(),
        store: store.clone(),
    });
    let flusher = Arc::new(Mutex::new(Flusher::new(
        &engine,
        store.clone(),
        FlusherConfig::new(format!("operator-{identity}")),
        FlushMetrics::new(&metrics.registry)?,
    )));
    // Redis memory and out-of-memory refusals (README, Operations).
    RedisStats::new(&metrics.registry)?.spawn(engine.clone(), redis_stats::DEFAULT_SAMPLE_EVERY);
    let timing = Timing {
        refresh: args.status_refresh,
        retention: args.retention,
        ..Timing::default()
    };
    let lifecycle = Lifecycle::new(engine.clone(), store.clone(), flusher.clone(), timing);

    if args.flush_enabled() {
        tokio::spawn(gavel_operator::lifecycle::run_flusher(flusher.clone()));
    }

    // The outbound event feed: delivered by the leader (always, standalone) from PostgreSQL.
    let feed_config = args.feed();
    if feed_config.sink.is_some() && !feed_config.enabled() {
        warn!("GAVEL_EVENTS_SINK is set but GAVEL_EVENTS_SECRET is not: the event feed is off");
    }
    // A pool of its own (its lock holds one more connection): delivering never takes the
    // reconciles' connections.
    let feed_store = Store::connect_lazy_with(&args.database_url, FEED_POOL_SIZE)
        .context("invalid GAVEL_DATABASE_URL")?;
    let dispatcher = Dispatcher::new(
        &feed_store,
        feed_config,
        FeedMetrics::new(&metrics.registry)?,
    )?;

    if let Some(dir) = args.standalone.clone() {
        tokio::spawn(dispatcher.run_until(std::future::pending::<()>()));
        startup.finish();
        let op = Standalone::new(dir, lifecycle, metrics, args.poll, args.status_stdout)
            .with_concurrency(usize::from(args.reconcile_concurrency));
        return op.run_until(shutdown_signal()).await;
    }

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (use --standalone <dir> without a cluster)")?;
    tokio::select! {
        _ = startup.retry("the Kubernetes API (auctions.gavel.dev)", || controller::check_crd(&client)) => {}
        _ = shutdown_signal() => return Ok(()),
    }
    startup.finish();
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| {
            std::env::var("POD_NAMESPACE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let elector = LeaderElector::new(
        kube::Api::<Lease>::namespaced(client.clone(), &lease_namespace),
        &args.lease_name,
        &identity,
        args.lease_duration,
    );
    info!(%identity, lease = %args.lease_name, namespace = %lease_namespace, "waiting for leadership");
    tokio::select! {
        _ = elector.acquire() => {}
        _ = shutdown_signal() => return Ok(()),
    }
    metrics.leader.set(1);
    let ctx = Arc::new(Context::new(client, lifecycle, metrics.clone(), &identity));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let concurrency = args.reconcile_concurrency;
    let controller = tokio::spawn(controller::run_with(ctx, concurrency, async move {
        let _ = stop_rx.await;
    }));
    let (feed_stop_tx, feed_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let feed = tokio::spawn(dispatcher.run_until(async move {
        let _ = feed_stop_rx.await;
    }));
    let lost = tokio::select! {
        _ = elector.hold() => true,
        _ = shutdown_signal() => false,
    };
    metrics.leader.set(0);
    let _ = stop_tx.send(());
    let _ = feed_stop_tx.send(());
    let _ = controller.await;
    let _ = feed.await;
    if lost {
        anyhow::bail!("leadership lost; exiting so that a restart rejoins as a follower");
    }
    elector.release().await;
    Ok(())
}
