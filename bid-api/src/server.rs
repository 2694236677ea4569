//! Wiring and lifecycle: connect Redis and PostgreSQL (waiting for them, see [`crate::startup`]), start the fan-out and the
//! flusher, serve HTTP, and shut down gracefully.
//!
//! Shutdown (SIGTERM): stop accepting connections and upgrades, mark not ready, tell
//! every WebSocket client (close 1001) once its in-flight bid is answered, wait for the
//! sockets to close, stop the flusher (which drains what it can), and return — all
//! within the configured grace period.

use std::future::{Future, IntoFuture};
use std::time::{Duration, Instant};

use gavel_engine::Engine;
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::store::Store;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::auth::{AuthConfigError, Authenticator};
use crate::config::Config;
use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::startup::Startup;
use crate::state::AppState;

/// Why the server could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The PostgreSQL URL is invalid.
    #[error(transparent)]
    Store(#[from] gavel_engine::store::StoreError),
    /// JWT settings are invalid.
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// Metrics could not be registered.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Serving failed.
    #[error("http server: {0}")]
    Io(#[from] std::io::Error),
}

/// Kernel send buffer of every client socket (Linux doubles it). It bounds what a client
/// that stops reading holds in the kernel, so that its bounded event queue fills and it
/// is cut off (1013) instead of megabytes piling up in socket buffers.
pub const SOCKET_SEND_BUFFER_BYTES: u32 = 64 * 1024;

/// Binds the listening socket; accepted sockets inherit its small send buffer.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SOCKET_SEND_BUFFER_BYTES)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Runs the server on `listener` until `shutdown` resolves, then shuts down gracefully.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let auth = Authenticator::new(&config)?;
    if auth.dev_auth() {
        for _ in 0..3 {
            warn!(
                "DEVELOPMENT AUTH IS ON (GAVEL_DEV_AUTH=true): anyone can bid as anyone with ?bidder=<name>. NEVER use this in production."
            );
        }
    }
    if !auth.has_keys() {
        warn!(
            "no GAVEL_JWT_SECRET or GAVEL_JWT_PUBLIC_KEY configured: tokens cannot be verified, so only anonymous watchers{} can connect",
            if auth.dev_auth() {
                " and development ?bidder= users"
            } else {
                ""
            }
        );
    }
    let metrics = Metrics::new()?;
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    // Until Redis is there, a second handle on the same socket answers the probes (alive,
    // not ready, and why); the real router takes over the socket once everything connected.
    let std_listener = listener.into_std()?;
    let starting_listener = TcpListener::from_std(std_listener.try_clone()?)?;
    let listener = TcpListener::from_std(std_listener)?;
    let startup = Startup::new();
    let (started_tx, mut started_rx) = watch::channel(false);
    let starting = tokio::spawn(
        axum::serve(starting_listener, crate::startup::router(startup.clone()))
            .with_graceful_shutdown(async move {
                let _ = started_rx.wait_for(|s| *s).await;
            })
            .into_future(),
    );
    info!(listen = %listener.local_addr()?, "bid-api starting");
    let redis_url = config.redis_url.clone();
    let connections = config.redis_connections;
    let connected = async {
        let engine = startup
            .retry("Redis", || async {
                let engine = Engine::connect(&redis_url, connections).await?;
                engine.load_scripts().await?;
                Ok::<_, gavel_engine::EngineError>(engine)
            })
            .await;
        let fanout = startup
            .retry("Redis pub/sub", || {
                Fanout::start(&redis_url, metrics.clone())
            })
            .await;
        (engine, fanout)
    };
    let (engine, (fanout, dispatcher)) = tokio::select! {
        c = connected => c,
        _ = stop_rx.wait_for(|s| *s) => {
            info!("stopped while starting");
            let _ = started_tx.send(true);
            let _ = starting.await;
            return Ok(());
        }
    };
    let store = Store::connect_lazy(&config.database_url)?;
    let migrations = tokio::spawn(migrate_until_done(store.clone()));
    let _ = started_tx.send(true);
    let _ = starting.await;

    let flush_metrics = FlushMetrics::new(&metrics.registry)?;
    let (flush_stop_tx, flush_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let flusher = Flusher::new(
        &engine,
        store.clone(),
        FlusherConfig::new(config.consumer_name()),
        flush_metrics,
    );
    let flushing = tokio::spawn(flusher.run_until(async {
        let _ = flush_stop_rx.await;
    }));

    let grace = config.shutdown_grace;
    let (down_tx, down_rx) = watch::channel(false);
    let state = AppState::new(
        config,
        engine,
        store,
        fanout,
        auth,
        metrics,
        down_rx.clone(),
    );
    let app = crate::http::router(state.clone());
    info!(listen = %listener.local_addr()?, "bid-api listening");

    let mut http_down = down_rx.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        let _ = http_down.wait_for(|d| *d).await;
    });
    let serving = tokio::spawn(async move { server.await });

    let _ = stop_rx.wait_for(|s| *s).await;
    let deadline = Instant::now() + grace;
    info!(
        grace_ms = grace.as_millis() as u64,
        connections = state.open_connections(),
        "shutting down"
    );
    let _ = down_tx.send(true);

    // Sockets get up to 3/4 of the grace period; the rest is for the flusher.
    let socket_budget = grace.mul_f64(0.75);
    if tokio::time::timeout(socket_budget, state.all_closed())
        .await
        .is_err()
    {
        warn!(
            open = state.open_connections(),
            "connections still open at the end of their shutdown budget"
        );
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    let _ = tokio::time::timeout(remaining.min(Duration::from_secs(1)), serving).await;
    let _ = flush_stop_tx.send(());
    let remaining = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(remaining, flushing).await {
        Ok(_) => info!("flusher stopped"),
        Err(_) => {
            warn!(
                "flusher still draining at the end of the grace period; another pod claims the rest"
            )
        }
    }
    dispatcher.abort();
    migrations.abort();
    info!("bid-api stopped");
    Ok(())
}

async fn migrate_until_done(store: Store) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match store.migrate().await {
            Ok(()) => return,
            Err(e) => {
                error!(error = %e, "PostgreSQL migrations failed; retrying (bidding goes on)");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}
