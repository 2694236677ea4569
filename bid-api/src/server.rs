//! Wiring and lifecycle: connect Redis and PostgreSQL (waiting for them, see [`crate::startup`]), start the fan-out and the
//! flusher, serve HTTP, and shut down gracefully.
//!
//! HTTP is served by hyper's HTTP/1.1 connection builder on an accept loop of our own,
//! so that every connection is admitted by [`Limits`] (total and per-IP caps, counted
//! until the socket closes, WebSockets included), has a header-read timeout (slow
//! clients cannot hold connections), and every request a timeout (tower-http).
//!
//! Shutdown (SIGTERM): stop accepting connections and upgrades, mark not ready, tell
//! every WebSocket client (close 1001) once its in-flight bid is answered, wait for the
//! sockets to close, stop the flusher (which drains what it can), and return — all
//! within the configured grace period.

use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use gavel_engine::Engine;
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::redis_stats::{self, RedisStats};
use gavel_engine::store::Store;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::auth::{AuthConfigError, Authenticator};
use crate::config::{Acknowledge, Config};
use crate::fanout::Fanout;
use crate::limits::{Admitted, Limits};
use crate::metrics::Metrics;
use crate::record::Recorder;
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
    let metrics = Metrics::new()?;
    let auth = Authenticator::new(&config, metrics.clone())?;
    if auth.dev_auth() {
        for _ in 0..3 {
            warn!(
                "DEVELOPMENT AUTH IS ON (GAVEL_DEV_AUTH=true): anyone can bid as anyone with ?bidder=<name>. NEVER use this in production."
            );
        }
    }
    if (config.oidc_issuer.is_some() || config.jwks_url.is_some())
        && config.jwt_public_key.is_some()
    {
        warn!(
            "GAVEL_JWT_PUBLIC_KEY is ignored: with an identity provider, RS256 tokens are verified with its keys"
        );
    }
    if !auth.has_keys() {
        warn!(
            "no GAVEL_OIDC_ISSUER, GAVEL_JWKS_URL, GAVEL_JWT_SECRET or GAVEL_JWT_PUBLIC_KEY configured: tokens cannot be verified, so only anonymous watchers{} can connect",
            if auth.dev_auth() {
                " and development ?bidder= users"
            } else {
                ""
            }
        );
    }
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
    // Redis memory and out-of-memory refusals (README, Operations); stops with the process.
    let _redis_stats = AbortOnDrop(
        RedisStats::new(&metrics.registry)?
            .spawn(engine.clone(), redis_stats::DEFAULT_SAMPLE_EVERY),
    );
    let (flush_stop_tx, flush_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let flushing = if config.flush {
        let flusher = Flusher::new(
            &engine,
            store.clone(),
            FlusherConfig::new(config.consumer_name()),
            flush_metrics,
        );
        tokio::spawn(flusher.run_until(async {
            let _ = flush_stop_rx.await;
        }))
    } else {
        info!("no flusher in this process (GAVEL_FLUSH=false)");
        tokio::spawn(async {})
    };
    let recorder = match config.acknowledge {
        Acknowledge::Accepted => None,
        Acknowledge::Recorded => {
            info!(
                "bids are answered once PostgreSQL has committed them (GAVEL_ACKNOWLEDGE=recorded)"
            );
            Some(Recorder::spawn(store.clone(), &metrics.registry)?)
        }
    };

    let grace = config.shutdown_grace;
    let limits = Limits::new(&config, &metrics.registry)?;
    let header_timeout = config.http_header_timeout;
    let request_timeout = config.http_request_timeout;
    let (down_tx, down_rx) = watch::channel(false);
    let state = AppState::new(
        config,
        engine,
        store,
        fanout,
        auth,
        metrics,
        down_rx.clone(),
        recorder,
    );
    let app = crate::http::router(state.clone()).layer(
        tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ),
    );
    info!(listen = %listener.local_addr()?, "bid-api listening");

    let serving = tokio::spawn(serve(
        listener,
        app,
        limits,
        header_timeout,
        down_rx.clone(),
    ));

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

/// Applies the PostgreSQL migrations in the background, retrying until they are done:
/// bidding needs only Redis and goes on meanwhile.
async fn migrate_until_done(store: Store) {
    gavel_engine::startup::retry("PostgreSQL migrations", || store.migrate(), |_| {}).await;
}

/// What every request of a connection carries: the peer's address, and the
/// connection's place in the limits, which an upgraded WebSocket keeps until it closes.
#[derive(Clone)]
pub struct ConnectionInfo {
    /// The TCP peer.
    pub peer: std::net::SocketAddr,
    /// The admission of the connection.
    pub admitted: Arc<Admitted>,
    /// The limits (for upgrade admission).
    pub limits: Arc<Limits>,
}

/// Accepts connections until `down`, admitting each through the limits; on `down`
/// every HTTP connection finishes its request in progress and closes.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Arc<Limits>,
    header_timeout: Duration,
    mut down: watch::Receiver<bool>,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let mut last_accept_error: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = async { let _ = down.wait_for(|d| *d).await; } => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    if last_accept_error.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
                        warn!(error = %e, "accept error (logged at most every 5 s)");
                        last_accept_error = Some(Instant::now());
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Small frames both ways: never wait for Nagle's algorithm (a 40 ms stall against
        // the peer's delayed ACK).
        let _ = stream.set_nodelay(true);
        let admitted = match limits.admit_connection(peer) {
            Ok(admitted) => Arc::new(admitted),
            Err(refusal) => {
                tokio::spawn(async move {
                    let mut stream = stream;
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        let _ = stream.write_all(&refusal.raw_response()).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                });
                continue;
            }
        };
        let info = ConnectionInfo {
            peer,
            admitted,
            limits: limits.clone(),
        };
        let service = TowerToHyperService::new(tower_http::add_extension::AddExtension::new(
            app.clone(),
            info,
        ));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut conn_down = down.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = async { let _ = conn_down.wait_for(|d| *d).await; } => {
                    // Finish the request in progress, then close (keep-alive ends).
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
}

/// Aborts a background task when dropped (when `run` returns).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
