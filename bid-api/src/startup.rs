//! Start-up: wait for what the bid-api depends on instead of exiting.
//!
//! In a cluster the Redis Service name may not resolve yet, Redis may still be starting and
//! the API server may be briefly away; exiting then turns every install and every DNS hiccup
//! into a CrashLoopBackOff. So the server binds its port at once, answers `/healthz` (the
//! process is alive) and `/readyz` with 503 and the reason it is waiting, and retries each
//! dependency with a capped exponential backoff, logging why, until it is there.

use std::fmt::Display;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tracing::{info, warn};

/// First wait between two attempts.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the process is waiting for, shown by `/readyz` while it starts.
#[derive(Debug, Default)]
pub struct Startup {
    waiting_for: Mutex<String>,
}

impl Startup {
    /// A start-up that has not waited for anything yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            waiting_for: Mutex::new("starting".to_owned()),
        })
    }

    /// The reason the process is not ready yet.
    pub fn waiting_for(&self) -> String {
        self.waiting_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, reason: String) {
        *self
            .waiting_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// Runs `attempt` until it succeeds, waiting `FIRST_BACKOFF` doubling up to `MAX_BACKOFF`
    /// between tries and logging each failure; `what` names the dependency in logs and
    /// `/readyz`.
    pub async fn retry<T, E, F, Fut>(&self, what: &str, mut attempt: F) -> T
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut backoff = FIRST_BACKOFF;
        let mut failures: u32 = 0;
        self.set(format!("connecting to {what}"));
        loop {
            match attempt().await {
                Ok(value) => {
                    if failures > 0 {
                        info!(dependency = what, failures, "{what} reached");
                    }
                    return value;
                }
                Err(e) => {
                    failures += 1;
                    let reason = format!("waiting for {what}: {e}");
                    warn!(
                        dependency = what,
                        failures,
                        retry_in_ms = backoff.as_millis() as u64,
                        error = %e,
                        "{what} not reachable yet; retrying"
                    );
                    self.set(reason);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn retries_until_success_with_capped_backoff() {
        let startup = Startup::new();
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let value = startup
            .retry("thing", || {
                calls += 1;
                let n = calls;
                async move { if n < 7 { Err(format!("no {n}")) } else { Ok(n) } }
            })
            .await;
        assert_eq!(value, 7);
        // 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 (capped) seconds of (virtual) waiting.
        assert_eq!(started.elapsed(), Duration::from_millis(11_200));
        assert_eq!(startup.waiting_for(), "waiting for thing: no 6");
    }
}
