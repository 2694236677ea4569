//! The HTTP side: the router, the REST read endpoints (snapshot from Redis, bid history
//! from PostgreSQL without ceilings), liveness, readiness and Prometheus metrics.
//!
//! Errors are JSON `{"code": ..., "message": ...}` with the protocol's codes:
//! 400 `INVALID_MESSAGE` (bad name or query), 404 `UNKNOWN_AUCTION`, 503 `UNAVAILABLE`.
//! The REST snapshot is the `snapshot` message of the WebSocket protocol, as seen by an
//! anonymous viewer (never `your_max`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gavel_engine::store::MAX_HISTORY_PAGE;
use gavel_engine::{AuctionId, EngineError};
use serde_json::json;
use tracing::{info, warn};

use crate::protocol::{ErrorCode, HttpError};
use crate::state::{AppState, Missing};

/// Default page size of the bid history.
pub const DEFAULT_HISTORY_PAGE: u32 = 100;

/// The one shape of every HTTP error of the bid-api (REST and refused WebSocket upgrades):
/// `{"code": …, "message": …}` with a code of the protocol.
pub fn json_error(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Response {
    error_body(status, code, None, message.into())
}

/// [`json_error`] with the `reason` of a refused connection (which check refused it).
pub fn error_body(
    status: StatusCode,
    code: ErrorCode,
    reason: Option<&str>,
    message: String,
) -> Response {
    let body = HttpError {
        code,
        reason: reason.map(str::to_owned),
        message,
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_json(),
    )
        .into_response()
}

fn json_ok(body: String) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Every route of the server.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/ws", get(crate::ws::upgrade))
        .route("/v1/auctions", get(crate::list::handler))
        .route("/v1/auctions/{ns}/{name}", get(snapshot))
        .route("/v1/auctions/{ns}/{name}/bids", get(bids))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::web::routes())
        .with_state(state)
}

fn invalid_name(e: gavel_engine::keys::InvalidAuctionId) -> Response {
    json_error(
        StatusCode::BAD_REQUEST,
        ErrorCode::InvalidMessage,
        e.to_string(),
    )
}

async fn snapshot(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    let id = match AuctionId::new(&ns, &name) {
        Ok(id) => id,
        Err(e) => return invalid_name(e),
    };
    match state.engine.snapshot(&id, None).await {
        Ok(s) => json_ok(crate::protocol::snapshot(&id, &s).to_json()),
        Err(EngineError::UnknownAuction(_)) => match state.missing(&id).await {
            Missing::Restoring | Missing::Unreachable => {
                let mut response = json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    format!("the live state of {id} is being restored; retry shortly"),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
                response
            }
            Missing::Closed => match state.store.closed_snapshot(&id, None).await {
                Ok(Some(s)) => json_ok(crate::protocol::snapshot(&id, &s).to_json()),
                Ok(None) | Err(_) => json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Unavailable,
                    format!("{id} is closed but its record cannot be read; retry"),
                ),
            },
            Missing::Unknown => json_error(
                StatusCode::NOT_FOUND,
                ErrorCode::UnknownAuction,
                format!("no auction {id}"),
            ),
        },
        Err(e) => {
            warn!(auction = %id, error = %e, "snapshot failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "auction state unavailable",
            )
        }
    }
}

/// Whether Redis holds the auction, or PostgreSQL knows it (or cannot say).
async fn exists(state: &AppState, id: &AuctionId) -> bool {
    match state.engine.snapshot(id, None).await {
        Ok(_) => true,
        Err(_) => !matches!(state.missing(id).await, Missing::Unknown),
    }
}

async fn bids(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let id = match AuctionId::new(&ns, &name) {
        Ok(id) => id,
        Err(e) => return invalid_name(e),
    };
    let after = match query.get("after").map(|a| a.parse::<u64>()) {
        None => 0,
        Some(Ok(a)) => a,
        Some(Err(_)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                "`after` must be a non-negative integer seq",
            );
        }
    };
    let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
        None => DEFAULT_HISTORY_PAGE,
        Some(Ok(l)) if (1..=MAX_HISTORY_PAGE as u32).contains(&l) => l,
        Some(_) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                format!("`limit` must be between 1 and {MAX_HISTORY_PAGE}"),
            );
        }
    };
    match state.store.bids(&id, after, limit).await {
        // No bids at all: an auction that exists has none yet; one that does not is a 404,
        // as for its snapshot.
        Ok(bids) if bids.is_empty() && after == 0 && !exists(&state, &id).await => json_error(
            StatusCode::NOT_FOUND,
            ErrorCode::UnknownAuction,
            format!("no auction {id}"),
        ),
        Ok(bids) => json_ok(json!({ "auction": id.to_string(), "bids": bids }).to_string()),
        Err(e) => {
            warn!(auction = %id, error = %e, "bid history failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "bid history unavailable",
            )
        }
    }
}

async fn healthz() -> Response {
    json_ok(json!({ "status": "ok" }).to_string())
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let limit = Duration::from_secs(2);
    let (redis, postgres) = tokio::join!(
        tokio::time::timeout(limit, state.engine.ping()),
        tokio::time::timeout(limit, state.store.ping()),
    );
    let redis_ok = matches!(redis, Ok(Ok(())));
    let postgres_ok = matches!(postgres, Ok(Ok(())));
    let shutting_down = state.shutting_down();
    let was_up = state.metrics.postgres_up.get() == 1;
    if postgres_ok != was_up {
        if postgres_ok {
            info!("PostgreSQL reachable again; the flusher drains the backlog");
        } else {
            warn!("PostgreSQL unreachable; bidding goes on, accepted bids wait in Redis");
        }
    }
    state.metrics.postgres_up.set(i64::from(postgres_ok));
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let body = json!({
        "redis": word(redis_ok),
        "postgres": word(postgres_ok),
        "shutting_down": shutting_down,
    })
    .to_string();
    // Ready means able to take bids: Redis. PostgreSQL's health is reported, not required.
    let status = if redis_ok && !shutting_down {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}
