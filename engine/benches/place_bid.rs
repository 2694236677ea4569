//! Place-bid throughput, in two measurements:
//!
//! - **Client overhead**: the engine client with many concurrent callers against the raw
//!   `redis-benchmark` rate of `EVALSHA` of the very same script and arguments on the same
//!   Redis, and their ratio. `redis-benchmark` repeats one call, so both run the one path a
//!   repeated call has: the leader re-bidding its own ceiling, refused as `ALREADY_LEADING`
//!   (the state read and the rate-limit bucket written).
//! - **Accepted bids**: each of 64 bidders in turn bids a ceiling above every earlier one, so
//!   almost every call takes the lead: the state update, the auction's stream, the flush
//!   stream and the SPUBLISH. Measured without persistence and with the append-only file,
//!   `appendfsync everysec` and `always` (what Gavel ships), to show what durability costs.
//!
//! Beside each rate it reports what the processes spent per accepted bid: Redis's CPU time
//! (`INFO cpu`) and this client's (`/proc/self/stat`), which swing far less than wall-clock
//! rates on a shared machine.
//!
//! Settings (environment): `GAVEL_BENCH_SECONDS` (5), `GAVEL_BENCH_CALLERS` (64),
//! `GAVEL_BENCH_CONNECTIONS` (2), `GAVEL_BENCH_REDIS_URL` (a throw-away server when unset;
//! must be `redis://host:port`). Results are also written to `target/bench/engine.json`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gavel_engine::testing::TestRedis;
use gavel_engine::{
    AuctionId, AuctionSettings, BidError, BidRequest, Bidder, Engine, Increments, RejectCode,
};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let seconds: u64 = env_or("GAVEL_BENCH_SECONDS", 5);
    let callers: usize = env_or("GAVEL_BENCH_CALLERS", 64);
    let connections: usize = env_or("GAVEL_BENCH_CONNECTIONS", 2);
    let (url, _redis) = match std::env::var("GAVEL_BENCH_REDIS_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let redis = TestRedis::start();
            (redis.url(), Some(redis))
        }
    };
    let (host, port) = url
        .trim_start_matches("redis://")
        .split_once(':')
        .map(|(h, p)| (h.to_owned(), p.trim_end_matches('/').to_owned()))
        .expect("GAVEL_BENCH_REDIS_URL must be redis://host:port");

    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let id = AuctionId::new("bench", "hot").expect("valid id");
    let repeated = runtime.block_on(measure(
        &url,
        &id,
        seconds,
        callers,
        connections,
        Path::Repeated,
    ));
    let (engine_rate, sha) = (repeated.rate, repeated.sha.clone());
    let accepted_id = AuctionId::new("bench", "accepted").expect("valid id");
    let base = runtime.block_on(measure(
        &url,
        &accepted_id,
        seconds,
        callers,
        connections,
        Path::NewLeader,
    ));

    // What persistence costs: accepted bids on Redis with the append-only file, fsynced
    // every second and before every reply (Gavel's shipped setting).
    let mut aof = Vec::new();
    for fsync in ["everysec", "always"] {
        let redis =
            TestRedis::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", fsync]);
        let id = AuctionId::new("bench", &format!("aof-{fsync}")).expect("valid id");
        let run = runtime.block_on(measure(
            &redis.url(),
            &id,
            seconds,
            callers,
            connections,
            Path::NewLeader,
        ));
        aof.push((fsync, run));
    }

    // The same script and arguments driven by redis-benchmark: one request in flight per
    // client (its default), and pipelined 16 deep (Redis's own ceiling).
    let requests = ((engine_rate * seconds as f64) as u64).max(50_000);
    let keys = gavel_engine::client::ScriptKeys::place_bid(&id);
    let raw = |pipeline: &str| {
        let output = Command::new("redis-benchmark")
            .args(["-h", &host, "-p", &port, "-c", "50", "-P", pipeline])
            .args(["-n", &requests.to_string(), "--csv", "EVALSHA", &sha, "5"])
            .args(&keys)
            .args(["bench", "Bench", "", "1000", &id.channel(), ""])
            .args([id.to_string().as_str(), "1000", &id.changes_channel()])
            .output()
            .expect("redis-benchmark not found: install the Debian package redis-tools");
        let csv = String::from_utf8_lossy(&output.stdout);
        csv.lines()
            .filter_map(|line| line.split(',').nth(1))
            .filter_map(|field| field.trim_matches('"').parse::<f64>().ok())
            .next()
            .unwrap_or_else(|| {
                panic!(
                    "cannot read redis-benchmark output:\n{csv}\n{}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })
    };
    let raw_rate = raw("1");
    let raw_pipelined = raw("16");

    let ratio = engine_rate / raw_rate;
    let ratio_pipelined = engine_rate / raw_pipelined;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("place-bid throughput, Redis and callers on the same {cores}-core machine");
    println!(
        "  engine client ({callers} callers, {connections} connections): {engine_rate:>10.0} calls/s (a repeated call: ALREADY_LEADING)"
    );
    println!("  redis-benchmark EVALSHA, 50 clients:            {raw_rate:>10.0} calls/s");
    println!("  redis-benchmark EVALSHA, 50 clients, -P 16:     {raw_pipelined:>10.0} calls/s");
    println!(
        "  ratio engine / raw EVALSHA:                     {:>10.1} %",
        ratio * 100.0
    );
    println!(
        "  ratio engine / raw pipelined EVALSHA:           {:>10.1} %",
        ratio_pipelined * 100.0
    );
    println!(
        "  engine client, accepted bids, no persistence:   {:>10.0} bids/s; CPU per bid: Redis {:.1} µs, client {:.1} µs",
        base.rate, base.redis_cpu_us, base.client_cpu_us
    );
    for (fsync, run) in &aof {
        println!(
            "  engine client, AOF appendfsync {fsync:<9}        {:>10.0} bids/s ({:.0} % of no persistence); CPU per bid: Redis {:.1} µs, client {:.1} µs",
            run.rate,
            run.rate / base.rate * 100.0,
            run.redis_cpu_us,
            run.client_cpu_us
        );
    }
    let json = serde_json::json!({
        "engine_bids_per_second": engine_rate,
        "raw_evalsha_per_second": raw_rate,
        "raw_evalsha_pipelined_per_second": raw_pipelined,
        "ratio": ratio,
        "ratio_pipelined": ratio_pipelined,
        "callers": callers,
        "connections": connections,
        "seconds": seconds,
        "accepted_bids_per_second": base.rate,
        "redis_cpu_us_per_bid": base.redis_cpu_us,
        "client_cpu_us_per_bid": base.client_cpu_us,
        "aof": aof
            .iter()
            .map(|(fsync, run)| serde_json::json!({
                "appendfsync": fsync,
                "engine_bids_per_second": run.rate,
                "redis_cpu_us_per_bid": run.redis_cpu_us,
                "client_cpu_us_per_bid": run.client_cpu_us,
            }))
            .collect::<Vec<_>>(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join("engine.json"), json.to_string());
    }
}

/// Which path of the place-bid script a measurement drives.
#[derive(Clone, Copy)]
enum Path {
    /// The leader re-bidding the same ceiling: refused as `ALREADY_LEADING` (what
    /// `redis-benchmark` repeats).
    Repeated,
    /// A ceiling above every earlier one from one of many bidders: a new leader, an event.
    NewLeader,
}

/// One measured run of the engine client.
struct Run {
    /// Calls per second that took the measured path.
    rate: f64,
    /// The place-bid script's SHA1, for `redis-benchmark`.
    sha: String,
    /// Redis's CPU time (user + system) per accepted bid, in microseconds.
    redis_cpu_us: f64,
    /// This process's CPU time per accepted bid, in microseconds.
    client_cpu_us: f64,
}

/// CPU seconds (user + system) Redis at `url` has spent, from `INFO cpu`.
fn redis_cpu_seconds(url: &str) -> f64 {
    let output = Command::new("redis-cli")
        .args(["-u", url, "INFO", "cpu"])
        .output()
        .expect("redis-cli not found: install the Debian package redis-tools");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|line| line.starts_with("used_cpu_sys:") || line.starts_with("used_cpu_user:"))
        .filter_map(|line| line.split_once(':')?.1.trim().parse::<f64>().ok())
        .sum()
}

/// CPU seconds (user + system) this process has spent, from `/proc/self/stat`.
fn own_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// Place-bid calls through the engine client, `callers` at a time for `seconds`, on
/// auction `id` of the Redis at `url`, along `path`.
async fn measure(
    url: &str,
    id: &AuctionId,
    seconds: u64,
    callers: usize,
    connections: usize,
    path: Path,
) -> Run {
    let id = id.clone();
    let engine = Engine::connect(url, connections).await.expect("connect");
    let now = gavel_engine::runtime::now_ms();
    let settings = AuctionSettings {
        title: "Benchmark".into(),
        currency: "USD".into(),
        starting_price: 1,
        reserve_price: None,
        increments: Increments::flat(1).expect("step"),
        starts_at: None,
        ends_at: now + 3_600_000,
        soft_close: None,
        bid_limit: None,
    };
    engine.provision(&id, &settings).await.expect("provision");
    let leader = Bidder::new("bench", "Bench").expect("bidder");
    let ceiling = BidRequest {
        amount: None,
        max: Some(1_000),
    };
    engine
        .place_bid(&id, &leader, ceiling)
        .await
        .expect("first bid");
    engine.load_scripts().await.expect("load scripts");

    let accepted = Arc::new(AtomicU64::new(0));
    let (redis_cpu, own_cpu) = (redis_cpu_seconds(url), own_cpu_seconds());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let next_ceiling = Arc::new(AtomicU64::new(2_000));
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (engine, id, leader, accepted, next_ceiling) = (
                engine.clone(),
                id.clone(),
                leader.clone(),
                accepted.clone(),
                next_ceiling.clone(),
            );
            let bidder =
                Bidder::new(format!("b{caller}"), format!("Bidder {caller}")).expect("bidder");
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let result = match path {
                        Path::Repeated => engine.place_bid(&id, &leader, ceiling).await,
                        Path::NewLeader => {
                            let max = next_ceiling.fetch_add(1, Ordering::Relaxed) as i64;
                            let bid = BidRequest {
                                amount: None,
                                max: Some(max),
                            };
                            engine.place_bid(&id, &bidder, bid).await
                        }
                    };
                    let took_path = match (path, result) {
                        (Path::Repeated, Err(BidError::Rejected(r))) => {
                            assert_eq!(r.code, RejectCode::AlreadyLeading, "{r}");
                            true
                        }
                        (Path::NewLeader, Ok(_)) => true,
                        // Overtaken in flight by a higher ceiling: refused, not counted.
                        (Path::NewLeader, Err(BidError::Rejected(r)))
                            if r.code == RejectCode::BidTooLow =>
                        {
                            false
                        }
                        (_, Ok(bid)) => panic!("unexpected outcome {:?}", bid.outcome),
                        (_, Err(e)) => panic!("place bid: {e}"),
                    };
                    if took_path {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    let bids = accepted.load(Ordering::Relaxed).max(1) as f64;
    Run {
        rate: bids / started.elapsed().as_secs_f64(),
        sha: engine.place_bid_sha().to_owned(),
        redis_cpu_us: (redis_cpu_seconds(url) - redis_cpu) / bids * 1e6,
        client_cpu_us: (own_cpu_seconds() - own_cpu) / bids * 1e6,
    }
}
