//! Start-up robustness of the real `gavel-bid-api` process: started before Redis exists it
//! stays alive and not ready (saying why), becomes ready once Redis appears, and a name
//! that does not resolve (a Service whose DNS record is not there yet) is waited for too.

mod common;

use std::time::{Duration, Instant};

use common::*;
use gavel_engine::testing::{TestRedis, database_url, free_port};

/// Polls `/readyz` until it answers `want` with a body containing `needle`; returns the body.
async fn wait_readyz(server: &Server, want: u16, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = server.get("/readyz").await;
        if status == want && body.contains(needle) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz stayed {status} ({body}), wanted {want}:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn waits_for_redis_then_becomes_ready() {
    let port = free_port();
    let server = Server::start_listening(
        &format!("redis://127.0.0.1:{port}"),
        &database_url().await,
        &[],
    );
    let (status, _) = server.get("/healthz").await;
    assert_eq!(status, 200, "alive while waiting:\n{}", server.logs());
    wait_readyz(&server, 503, "waiting for Redis").await;
    // It keeps retrying (and logging why) instead of exiting.
    let deadline = Instant::now() + WAIT;
    while !server.logs().contains("not reachable yet; retrying") {
        assert!(
            Instant::now() < deadline,
            "no retry logged:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, body) = server.get("/v1/auctions/ns/lot").await;
    assert_eq!(status, 503, "{body}");

    let _redis = TestRedis::start_on(port);
    wait_readyz(&server, 200, "").await;
    // The real router now serves: an unknown auction is a 404, not "starting".
    let (status, body) = server.get("/v1/auctions/ns/lot").await;
    assert_eq!(status, 404, "{body}");
    assert!(server.logs().contains("Redis reached"), "{}", server.logs());
}

#[tokio::test]
async fn waits_for_a_name_that_does_not_resolve_and_stops_cleanly() {
    let mut server = Server::start_listening(
        "redis://gavel-redis.not-yet.invalid:6379",
        &database_url().await,
        &[],
    );
    wait_readyz(&server, 503, "waiting for Redis").await;
    server.signal("TERM");
    assert!(server.wait_exit(), "exit status on SIGTERM while starting");
}
