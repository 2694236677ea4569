//! Start-up: wait for dependencies (Redis, PostgreSQL, the Kubernetes API) instead of exiting.
//!
//! In a cluster a Service name may not resolve yet, the datastores may still be starting and
//! the API server may be briefly away; exiting then turns every install and every DNS hiccup
//! into a CrashLoopBackOff. The bid-api and the operator serve `/healthz` at once and
//! `/readyz` answers 503 with what [`Startup::waiting_for`] says until start-up is done; each
//! dependency is retried with a capped exponential backoff, logging why.

use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tracing::{info, warn};

/// Whether log lines written to a stream may carry colour codes: only on a terminal, and
/// never when `NO_COLOR` is set to something (<https://no-color.org>). Log files and
/// container logs stay plain text.
pub fn log_colours(stream_is_terminal: bool) -> bool {
    stream_is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// First wait between two attempts.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether start-up is done, and if not, what it waits for (shown by `/readyz`).
#[derive(Debug)]
pub struct Startup {
    waiting_for: Mutex<String>,
    done: AtomicBool,
}

impl Startup {
    /// A start-up that has not waited for anything yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            waiting_for: Mutex::new("starting".to_owned()),
            done: AtomicBool::new(false),
        })
    }

    /// The reason the process is not ready yet.
    pub fn waiting_for(&self) -> String {
        self.waiting_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether every dependency was reached once.
    pub fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Marks start-up as done: from now on `/readyz` checks the datastores themselves.
    pub fn finish(&self) {
        self.set("nothing".to_owned());
        self.done.store(true, Ordering::Release);
        info!("start-up done");
    }

    fn set(&self, reason: String) {
        *self
            .waiting_for
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = reason;
    }

    /// Runs `attempt` until it succeeds (see [`retry`]), `/readyz` saying what it waits
    /// for meanwhile.
    pub async fn retry<T, E, F, Fut>(&self, what: &str, attempt: F) -> T
    where
        E: Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.set(format!("connecting to {what}"));
        retry(what, attempt, |e| {
            self.set(format!("waiting for {what}: {e}"))
        })
        .await
    }
}

/// Runs `attempt` until it succeeds, waiting [`FIRST_BACKOFF`] doubling up to
/// [`MAX_BACKOFF`] between tries and logging each failure (`<what> not reachable yet;
/// retrying`) and the eventual success; `on_failure` sees each error. The one retry loop of
/// start-up and of the bid-api's background migrations.
pub async fn retry<T, E, F, Fut>(what: &str, mut attempt: F, mut on_failure: impl FnMut(&E)) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut failures: u32 = 0;
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
                warn!(
                    dependency = what,
                    failures,
                    retry_in_ms = backoff.as_millis() as u64,
                    error = %e,
                    "{what} not reachable yet; retrying"
                );
                on_failure(&e);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
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
        assert!(!startup.is_done());
        startup.finish();
        assert!(startup.is_done());
    }
}
