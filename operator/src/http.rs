//! The operator's HTTP server: `/metrics` (Prometheus text), `/healthz` (the process
//! runs), `/readyz` (Redis and PostgreSQL answer).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use gavel_engine::Engine;
use gavel_engine::store::Store;

use crate::metrics::Metrics;

/// What the endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// Redis, pinged by /readyz.
    pub engine: Engine,
    /// PostgreSQL, pinged by /readyz.
    pub store: Store,
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
    if let Err(e) = s.engine.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}"));
    }
    if let Err(e) = s.store.ping().await {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("postgres: {e}"));
    }
    (StatusCode::OK, "ready".to_owned())
}

/// Serves the endpoints on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, state: HttpState) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "metrics and health endpoints listening");
    axum::serve(listener, router(state)).await?;
    Ok(())
}
