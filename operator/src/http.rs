//! The operator's HTTP server: `/metrics` (Prometheus text), `/healthz` (the process
//! runs), `/readyz` (start-up is done, and Redis and PostgreSQL answer).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use gavel_engine::Engine;
use gavel_engine::store::Store;

use crate::metrics::Metrics;
use crate::startup::Startup;

/// The datastores, once start-up reached them.
#[derive(Clone)]
pub struct Backends {
    /// Redis, pinged by /readyz.
    pub engine: Engine,
    /// PostgreSQL, pinged by /readyz.
    pub store: Store,
}

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Start-up progress: not ready until it is done.
    pub startup: Arc<Startup>,
    /// Set once Redis and PostgreSQL were reached.
    pub backends: Arc<OnceLock<Backends>>,
}

impl HttpState {
    /// State of a process that is done starting, over these datastores.
    pub fn started(metrics: Arc<Metrics>, engine: Engine, store: Store) -> Self {
        let startup = Startup::new();
        startup.finish();
        let backends = Arc::new(OnceLock::new());
        let _ = backends.set(Backends { engine, store });
        Self {
            metrics,
            startup,
            backends,
        }
    }
}

/// The router of the three endpoints.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(state)
}

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

async fn ready(State(s): State<HttpState>) -> impl IntoResponse {
    let (Some(b), true) = (s.backends.get(), s.startup.is_done()) else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("starting: {}", s.startup.waiting_for()),
        );
    };
    if let Err(e) = b.engine.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}"));
    }
    if let Err(e) = b.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("postgres: {e}"));
    }
    (StatusCode::OK, "ready".to_owned())
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: HttpState) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    serve_on(listener, state).await
}

/// Serves the endpoints on a bound listener (port 0 included: the address it got is
/// logged).
pub async fn serve_on(listener: tokio::net::TcpListener, state: HttpState) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics and health endpoints listening");
    axum::serve(listener, router(state)).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gavel_engine::testing::{database_url, free_port, http_get, redis_url};

    async fn get(addr: SocketAddr, path: &str) -> String {
        http_get(addr.port(), path, &[])
            .await
            .expect("HTTP GET")
            .raw
    }

    /// Serves on a port the system chose (no race for a free port).
    async fn start(state: HttpState) -> (SocketAddr, tokio::task::JoinHandle<anyhow::Result<()>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, tokio::spawn(serve_on(listener, state)))
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let (url, _redis) = redis_url();
        let engine = Engine::connect(&url, 1).await.unwrap();
        let store = Store::connect_lazy(&database_url().await).unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        metrics.reconciled(std::time::Duration::from_millis(2), None);
        let (addr, server) = start(HttpState::started(metrics, engine, store)).await;
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let ready = get(addr, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
        let metrics = get(addr, "/metrics").await;
        assert!(
            metrics.contains("gavel_operator_reconciles_total{result=\"ok\"} 1"),
            "{metrics}"
        );
        assert!(metrics.contains("text/plain; version=0.0.4"));
        server.abort();
    }

    #[tokio::test]
    async fn not_ready_without_postgres() {
        let (url, _redis) = redis_url();
        let engine = Engine::connect(&url, 1).await.unwrap();
        let store =
            Store::connect_lazy(&format!("postgres://postgres@127.0.0.1:{}/x", free_port()))
                .unwrap();
        let metrics = Arc::new(Metrics::new().unwrap());
        let (addr, server) = start(HttpState::started(metrics, engine, store)).await;
        let ready = get(addr, "/readyz").await;
        assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
        assert!(ready.contains("postgres"));
        server.abort();
    }
}
