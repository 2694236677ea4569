//! Does a slow or dead event-feed sink move bid latency? (README § Event feed.)
//!
//! The same bid load runs three times against real Redis and PostgreSQL, with the operator's
//! flusher, reconciles and event-feed dispatcher running in this process (sharing its
//! runtime with the bidders, the strictest case): with the feed off, with a sink that answers
//! each request after 2 s, and with a sink that refuses connections. It prints the latency
//! of `place_bid` (the engine's call the bid-api makes per bid: the decision in Redis) and
//! what the feed had delivered and left waiting at the end.
//!
//! `cargo bench -p gavel-operator --bench feed_slow_sink --profile dev` (or in release).
//! Settings (environment): `GAVEL_BENCH_SECONDS` (10), `GAVEL_BENCH_AUCTIONS` (8),
//! `GAVEL_BENCH_RATE` (bids per second per auction, 100).

use std::sync::Arc;
use std::time::{Duration, Instant};

use gavel_crds::format_time;
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::outbound::{FeedStore, WebhookSecret};
use gavel_engine::store::Store;
use gavel_engine::testing::{TestRedis, database_url, free_port, temp_dir};
use gavel_engine::{AuctionId, BidRequest, Bidder, Engine};
use gavel_operator::feed::{Dispatcher, FeedConfig, FeedMetrics};
use gavel_operator::lifecycle::{Lifecycle, local_now, run_flusher};
use gavel_operator::metrics::Metrics;
use gavel_operator::plan::Timing;
use gavel_operator::standalone::Standalone;
use tokio::sync::Mutex;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Sink {
    Off,
    Slow,
    Down,
}

struct Run {
    latencies: Vec<Duration>,
    delivered: u64,
    pending: i64,
}

async fn slow_receiver() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().route(
        "/events",
        axum::routing::post(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            axum::http::StatusCode::NO_CONTENT
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

async fn run(sink: Sink, seconds: u64, auctions: usize, rate: u64) -> Run {
    let redis = TestRedis::start();
    let database = database_url().await;
    let dir = temp_dir("bench-feed");
    let engine = Engine::connect(&redis.url(), 4).await.unwrap();
    engine.load_scripts().await.unwrap();
    let store = Store::connect_lazy(&database).unwrap();
    let flusher = Arc::new(Mutex::new(Flusher::new(
        &engine,
        store.clone(),
        FlusherConfig::new("bench"),
        FlushMetrics::unregistered(),
    )));
    let lifecycle = Lifecycle::new(
        engine.clone(),
        store.clone(),
        flusher.clone(),
        Timing::default(),
    );
    let flush = tokio::spawn(run_flusher(flusher));
    let op = Standalone::new(
        dir.clone(),
        lifecycle,
        Arc::new(Metrics::new().unwrap()),
        Duration::from_millis(100),
        false,
    );
    let operator = tokio::spawn(op.run_until(std::future::pending::<()>()));
    let uri = match sink {
        Sink::Off => None,
        Sink::Slow => Some(format!("http://127.0.0.1:{}/events", slow_receiver().await)),
        Sink::Down => Some(format!("http://127.0.0.1:{}/events", free_port())),
    };
    let metrics = FeedMetrics::unregistered();
    let config = FeedConfig {
        secret: uri
            .as_ref()
            .map(|_| WebhookSecret::from_key(b"bench-key-0123456789")),
        sink: uri,
        ..FeedConfig::default()
    };
    let dispatcher = Dispatcher::new(&store, config, metrics.clone()).unwrap();
    let feed = tokio::spawn(dispatcher.run_until(std::future::pending::<()>()));

    let end = local_now() + (seconds as i64 + 30) * 1000;
    let ids: Vec<AuctionId> = (0..auctions)
        .map(|i| AuctionId::new("bench", &format!("lot-{i}")).unwrap())
        .collect();
    for id in &ids {
        std::fs::write(
            dir.join(format!("{}.yaml", id.name())),
            format!(
                "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata:\n  name: {}\n  namespace: bench\n\
                 spec:\n  title: Lot\n  currency: USD\n  startingPrice: 100\n  increments:\n    - {{ from: 0, step: 1 }}\n  endsAt: \"{}\"\n",
                id.name(),
                format_time(end)
            ),
        )
        .unwrap();
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(20);
        while engine.snapshot(id, None).await.is_err() {
            assert!(Instant::now() < deadline, "{id} never provisioned");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let tasks: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let bidders = [
                    Bidder::new("ann-id", "Ann").unwrap(),
                    Bidder::new("bob-id", "Bob").unwrap(),
                ];
                let mut latencies = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
                let mut n = 0i64;
                while Instant::now() < stop {
                    tick.tick().await;
                    let started = Instant::now();
                    let placed = engine
                        .place_bid(
                            &id,
                            &bidders[(n % 2) as usize],
                            BidRequest {
                                amount: Some(100 + n),
                                max: None,
                            },
                        )
                        .await;
                    latencies.push(started.elapsed());
                    placed.unwrap();
                    n += 1;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pending = FeedStore::new(store.pool().clone())
        .backlog()
        .await
        .unwrap()
        .iter()
        .map(|b| b.pending)
        .sum();
    let delivered = metrics.delivered.with_label_values(&["cluster"]).get();
    feed.abort();
    operator.abort();
    flush.abort();
    let _ = std::fs::remove_dir_all(&dir);
    drop(redis);
    Run {
        latencies,
        delivered,
        pending,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn main() {
    let seconds: u64 = env_or("GAVEL_BENCH_SECONDS", 10);
    let auctions: usize = env_or("GAVEL_BENCH_AUCTIONS", 8);
    let rate: u64 = env_or("GAVEL_BENCH_RATE", 100).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "place_bid latency, {auctions} auctions x {rate} bids/s for {seconds} s, operator and dispatcher in-process"
    );
    println!(
        "| sink | bids | p50 ms | p90 ms | p99 ms | max ms | events delivered | events waiting |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for sink in [Sink::Off, Sink::Slow, Sink::Down] {
        let mut r = rt.block_on(run(sink, seconds, auctions, rate));
        r.latencies.sort();
        let l = &r.latencies;
        println!(
            "| {:?} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
            sink,
            l.len(),
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            percentile(l, 1.0),
            r.delivered,
            r.pending
        );
    }
}
