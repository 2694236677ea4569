//! One load run: provision, connect everything, start together, show progress, collect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use gavel_engine::{AuctionId, AuctionSettings, Engine, Increments};
use tokio::sync::{Semaphore, watch};

use crate::clients::{self, Role, Shared};
use crate::config::Config;
use crate::cpu;
use crate::report::{Percentiles, ProbeReport, Report};
use crate::stats::{ConnStats, Live};

/// Longest wait for every connection to open and subscribe.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn total_rss(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| rss_kib(*p)).sum()
}

/// Creates the auctions in Redis: open now, flat step 1, no per-bidder rate limit, ending
/// two minutes after the run.
async fn provision(config: &Config) -> anyhow::Result<()> {
    let url = config
        .redis_url
        .as_deref()
        .context("--provision needs --redis-url (or GAVEL_REDIS_URL)")?;
    let engine = Engine::connect(url, 1).await?;
    let now = gavel_engine::runtime::now_ms();
    for auction in &config.auctions {
        let id: AuctionId = auction.parse()?;
        let settings = AuctionSettings {
            title: format!("Load test {auction}"),
            currency: "USD".into(),
            starting_price: 1,
            reserve_price: None,
            increments: Increments::flat(1)?,
            starts_at: None,
            ends_at: now + config.duration.as_millis() as i64 + 120_000,
            soft_close: None,
            bid_limit: None,
        };
        engine.provision(&id, &settings).await?;
    }
    Ok(())
}

/// Runs the load described by `config` and returns what it measured.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    if config.ws_urls.is_empty() || config.auctions.is_empty() {
        bail!("at least one --ws-urls and one --auctions are needed");
    }
    for auction in &config.auctions {
        auction
            .parse::<AuctionId>()
            .with_context(|| format!("--auctions {auction}"))?;
    }
    if config.provision {
        provision(&config).await?;
    }
    let live = Arc::new(Live::default());
    let (start_tx, start_rx) = watch::channel(None);
    let shared = Shared {
        auctions: Arc::new(config.auctions.clone()),
        live: live.clone(),
        start: start_rx,
        duration: config.duration,
    };
    let rss_before = total_rss(&config.server_pids);

    let interval = (config.rate > 0)
        .then(|| Duration::from_secs_f64(config.bidders as f64 / config.rate as f64));
    let timed = config.timed_watchers.min(config.watchers);
    let chatty = Duration::from_secs_f64(1.0 / config.chatty_rate.max(0.001));
    let roles = (0..config.idle)
        .map(|_| Role::Idle)
        .chain((0..config.slow).map(|i| Role::Slow {
            partial: i % 2 == 0,
        }))
        .chain((0..config.chatty).map(|_| Role::Chatty { interval: chatty }))
        .chain(config.probe.then_some(Role::Probe {
            interval: config.probe_interval,
        }))
        .chain((0..config.watchers).map(|i| Role::Watcher { timed: i < timed }))
        .chain((0..config.bidders).map(|index| Role::Bidder { index, interval }));
    let gate = Arc::new(Semaphore::new(config.connect_parallelism.max(1)));
    let mut tasks = Vec::new();
    for (i, role) in roles.enumerate() {
        let url = config.ws_urls[i % config.ws_urls.len()].clone();
        let (gate, shared) = (gate.clone(), shared.clone());
        tasks.push(tokio::spawn(async move {
            // At most `connect_parallelism` connections are between connecting and
            // subscribed at any time.
            let permit = gate.acquire_owned().await.ok();
            clients::run(url, role, shared, permit).await
        }));
    }
    let expected = tasks.len() as u64;

    eprintln!(
        "connecting {expected} connections to {} server(s)...",
        config.ws_urls.len()
    );
    let ramp = Instant::now();
    while Live::get(&live.ready) + Live::get(&live.failed) < expected {
        if ramp.elapsed() > READY_TIMEOUT {
            eprintln!("not every connection is ready after {READY_TIMEOUT:?}; starting anyway");
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let the servers settle before reading their memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_connected = total_rss(&config.server_pids);
    let held = Live::get(&live.ready);
    eprintln!(
        "{held} connections ready in {:.1}s ({} failed); running for {:?}",
        ramp.elapsed().as_secs_f64(),
        Live::get(&live.failed),
        config.duration
    );

    let processed = || Live::get(&live.accepted) + Live::get(&live.rejected);
    let work_before = (processed(), Live::get(&live.prices));
    let cpu_before = cpu::sample(&config.cpu_pids);
    let started = Instant::now();
    let _ = start_tx.send(Some(started));
    let mut timeline = Vec::new();
    let mut last_accepted = 0;
    let mut last_prices = 0;
    while started.elapsed() < config.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let accepted = Live::get(&live.accepted);
        let prices = Live::get(&live.prices);
        timeline.push(accepted - last_accepted);
        eprintln!(
            "  t={:>3}s  open={:<6} accepted/s={:<7} rejected={:<7} price msgs/s={}",
            started.elapsed().as_secs(),
            live.open.load(std::sync::atomic::Ordering::Relaxed),
            accepted - last_accepted,
            Live::get(&live.rejected),
            prices - last_prices,
        );
        last_accepted = accepted;
        last_prices = prices;
    }
    let elapsed = started.elapsed().as_secs_f64();
    // CPU over the bidding window only (not the ramp-up, not the drain of late replies).
    let cpu_after = cpu::sample(&config.cpu_pids);
    let bids = processed() - work_before.0;
    let work = cpu::Work {
        bids,
        frames: bids + Live::get(&live.prices) - work_before.1,
        seconds: elapsed,
    };
    let cpu = cpu::report(&config.cpu_pids, &cpu_before, &cpu_after, work);

    let mut total = ConnStats::default();
    for task in tasks {
        if let Ok(stats) = task.await {
            total.merge(stats);
        }
    }
    let accepted = Live::get(&live.accepted);
    let bytes_per_connection = match (rss_before, rss_connected) {
        (Some(before), Some(after)) if held > 0 => Some(after.saturating_sub(before) * 1024 / held),
        _ => None,
    };
    Ok(Report {
        scenario: config.scenario.clone(),
        bidders: config.bidders,
        watchers: config.watchers,
        idle: config.idle,
        auctions: config.auctions.len(),
        target_rate: config.rate,
        duration_s: elapsed,
        connections_held: held,
        connections_failed: Live::get(&live.failed),
        bids_sent: Live::get(&live.sent),
        accepted_per_s: accepted as f64 / elapsed,
        accepted,
        rejected: total
            .rejections
            .iter()
            .map(|(code, n)| ((*code).to_owned(), *n))
            .collect(),
        unanswered: total.unanswered,
        bid_result_latency: Percentiles::of(&total.reply_latency),
        broadcast_latency: Percentiles::of(&total.broadcast_latency()),
        price_messages: Live::get(&live.prices),
        events_lost: total.lost,
        events_out_of_order: total.out_of_order,
        close_codes: total.close_codes.clone().into_iter().collect(),
        server_rss_before_kib: rss_before,
        server_rss_connected_kib: rss_connected,
        server_bytes_per_connection: bytes_per_connection,
        accepted_timeline: timeline,
        slow_reopened: Live::get(&live.slow_reopened),
        probe: total.probe.as_deref().map(|p| ProbeReport {
            bid: Percentiles::of(&p.bid),
            health: Percentiles::of(&p.health),
            failed: p.failed,
        }),
        cpu_bids: work.bids,
        cpu_frames: work.frames,
        cpu,
    })
}
