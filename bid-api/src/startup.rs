//! Start-up: the endpoints the bid-api serves while it waits for Redis instead of exiting.
//!
//! The server binds its port at once, answers `/healthz` (the process is alive) and `/readyz`
//! with 503 and the reason it is waiting ([`Startup`], shared with the operator), until every
//! dependency is there.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
pub use gavel_engine::startup::Startup;
use serde_json::json;

/// The endpoints served until start-up is done: `/healthz` 200 (alive, so the liveness and
/// startup probes do not restart a pod that is only waiting), `/readyz` 503 with the reason,
/// anything else 503.
pub fn router(startup: Arc<Startup>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(starting)
        .with_state(startup)
}

async fn healthz() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "status": "ok" }).to_string(),
    )
        .into_response()
}

async fn readyz(State(startup): State<Arc<Startup>>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "starting": true, "waiting_for": startup.waiting_for() }).to_string(),
    )
        .into_response()
}

async fn starting(State(startup): State<Arc<Startup>>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "code": "UNAVAILABLE", "message": format!("starting: {}", startup.waiting_for()) })
            .to_string(),
    )
        .into_response()
}
