//! End-to-end tests of the standalone mode against real Redis and PostgreSQL: real bids,
//! soft-close extension, close on time and exactly once with two operators on the same
//! directory, result in PostgreSQL and in the written status, deletion, restart mid-close,
//! invalid manifests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gavel_crds::{AuctionStatus, Phase, format_time};
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::store::Store;
use gavel_engine::testing::{TestRedis, database_url, redis_url, temp_dir};
use gavel_engine::{
    AuctionEvent, AuctionId, BidAccepted, BidError, BidRequest, Bidder, CloseMode, Engine,
    EngineError, Millis,
};
use gavel_operator::lifecycle::{Lifecycle, local_now, run_flusher};
use gavel_operator::metrics::Metrics;
use gavel_operator::plan::Timing;
use gavel_operator::standalone::{LEDGER_FILE, Standalone, status_path};
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

/// Tolerance of "closes within a second of its effective end".
const CLOSE_TOLERANCE_MS: Millis = 1_000;

struct Servers {
    redis: String,
    database: String,
    _redis: Option<TestRedis>,
}

async fn servers() -> Servers {
    let (redis, guard) = redis_url();
    Servers {
        redis,
        database: database_url().await,
        _redis: guard,
    }
}

struct Operator {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    flush: JoinHandle<()>,
    metrics: Arc<Metrics>,
}

impl Operator {
    async fn start(dir: &Path, s: &Servers, name: &str) -> Self {
        let engine = Engine::connect(&s.redis, 2).await.unwrap();
        let store = Store::connect_lazy(&s.database).unwrap();
        let flusher = Arc::new(Mutex::new(Flusher::new(
            &engine,
            store.clone(),
            FlusherConfig::new(name),
            FlushMetrics::unregistered(),
        )));
        let timing = Timing {
            refresh: Duration::from_millis(500),
            ..Timing::default()
        };
        let lifecycle = Lifecycle::new(engine, store, flusher.clone(), timing);
        let metrics = Arc::new(Metrics::new().unwrap());
        let flush = tokio::spawn(run_flusher(flusher));
        let (stop, rx) = oneshot::channel::<()>();
        let op = Standalone::new(
            dir.to_path_buf(),
            lifecycle,
            metrics.clone(),
            Duration::from_millis(50),
            false,
        );
        let task = tokio::spawn(op.run_until(async move {
            let _ = rx.await;
        }));
        Self {
            stop,
            task,
            flush,
            metrics,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.flush.abort();
    }
}

fn manifest(name: &str, starts_at: Option<Millis>, ends_at: Millis, extra: &str) -> String {
    let starts = starts_at
        .map(|s| format!("  startsAt: \"{}\"\n", format_time(s)))
        .unwrap_or_default();
    format!(
        "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata:\n  name: {name}\n  namespace: shop\n\
         spec:\n  title: \"Lot {name}\"\n  currency: USD\n  startingPrice: 10000\n  increments:\n    - {{ from: 0, step: 100 }}\n\
         {starts}  endsAt: \"{}\"\n{extra}",
        format_time(ends_at)
    )
}

fn read_status(path: &Path) -> Option<AuctionStatus> {
    let text = std::fs::read_to_string(status_path(path)).ok()?;
    serde_yaml::from_str(&text).ok()
}

async fn wait_status(
    path: &Path,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&AuctionStatus) -> bool,
) -> AuctionStatus {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(s) = read_status(path) {
            if pred(&s) {
                return s;
            }
            last = Some(s);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "status of {} never became {what} within {timeout:?}; last: {last:#?}",
        path.display()
    );
}

async fn wait_until(ms: Millis) {
    let left = ms - local_now();
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left as u64)).await;
    }
}

async fn bid(
    engine: &Engine,
    id: &AuctionId,
    who: &str,
    amount: Option<i64>,
    max: Option<i64>,
) -> BidAccepted {
    let bidder = Bidder::new(format!("{}-id", who.to_lowercase()), who).unwrap();
    engine
        .place_bid(id, &bidder, BidRequest { amount, max })
        .await
        .unwrap_or_else(|e| panic!("{who}'s bid refused: {e}"))
}

fn closes(events: &[AuctionEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e, AuctionEvent::Closed(_)))
        .count()
}

fn phase(p: Phase) -> impl Fn(&AuctionStatus) -> bool {
    move |s| s.phase == Some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_bids_open_extend_and_close_on_time_exactly_once_with_two_operators() {
    let s = servers().await;
    let dir = temp_dir("operator-e2e");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let store = Store::connect_lazy(&s.database).unwrap();
    let id = AuctionId::new("shop", "strat").unwrap();
    let file: PathBuf = dir.join("strat.yaml");

    let t0 = local_now();
    let (start, end) = (t0 + 1_500, t0 + 4_000);
    std::fs::write(
        &file,
        manifest(
            "strat",
            Some(start),
            end,
            "  softClose: { window: 1500ms, extension: 2s }\n",
        ),
    )
    .unwrap();
    // Two operators on the same directory, started concurrently.
    let (a, b) = tokio::join!(
        Operator::start(&dir, &s, "operator-a"),
        Operator::start(&dir, &s, "operator-b")
    );

    let scheduled = wait_status(
        &file,
        Duration::from_secs(5),
        "Scheduled",
        phase(Phase::Scheduled),
    )
    .await;
    assert_eq!(scheduled.effective_ends_at, Some(format_time(end)));
    assert_eq!(scheduled.observed_generation, Some(1));

    let open = wait_status(&file, Duration::from_secs(5), "Open", phase(Phase::Open)).await;
    assert!(local_now() >= start, "reported Open before startsAt");
    assert!(
        open.conditions
            .iter()
            .any(|c| c.type_ == "Open" && c.status == "True")
    );

    // Real bids (README § Bidding rules proxy rules, flat step 100).
    assert_eq!(
        bid(&engine, &id, "Ann", Some(10_000), None).await.price,
        10_000
    );
    let b1 = bid(&engine, &id, "Bob", None, Some(15_000)).await;
    assert_eq!((b1.leader_name.as_str(), b1.price), ("Bob", 10_100));
    let b2 = bid(&engine, &id, "Ann", Some(12_000), None).await;
    assert_eq!((b2.leader_name.as_str(), b2.price), ("Bob", 12_100));

    // A bid within the soft-close window moves the end.
    wait_until(end - 1_000).await;
    let late = bid(&engine, &id, "Carol", Some(13_000), None).await;
    assert!(late.extended, "a bid 1s before the end must extend it");
    assert!(late.ends_at > end);
    let new_end = late.ends_at;

    // The status follows the extension (bounded refresh, 500ms here).
    wait_status(&file, Duration::from_secs(3), "extended", |st| {
        st.effective_ends_at == Some(format_time(new_end))
    })
    .await;

    let closed = wait_status(
        &file,
        Duration::from_secs(15),
        "Closed",
        phase(Phase::Closed),
    )
    .await;
    let result = store
        .result(&id)
        .await
        .unwrap()
        .expect("result in PostgreSQL");
    let lateness = result.closed_at - new_end;
    assert!(
        (0..=CLOSE_TOLERANCE_MS).contains(&lateness),
        "closed {lateness} ms after its effective end (tolerance 0..={CLOSE_TOLERANCE_MS} ms): \
         effective end {new_end}, closed at {}",
        result.closed_at
    );
    eprintln!("closed {lateness} ms after the effective end");
    assert_eq!(result.winner.as_deref(), Some("bob-id"));
    assert_eq!(result.final_price, Some(13_100));
    assert_eq!(result.bid_count, 4);

    assert_eq!(closed.winner.as_deref(), Some("Bob"));
    assert_eq!(closed.winner_id.as_deref(), Some("bob-id"));
    assert_eq!(closed.final_price, Some(13_100));
    assert_eq!(closed.reserve_met, Some(true));
    assert_eq!(closed.bid_count, Some(4));
    assert_eq!(closed.effective_ends_at, Some(format_time(new_end)));
    assert_eq!(closed.closed_at, Some(format_time(result.closed_at)));
    assert!(
        closed
            .conditions
            .iter()
            .any(|c| c.type_ == "ResultRecorded" && c.status == "True")
    );
    // Every accepted bid is in PostgreSQL.
    assert_eq!(store.bid_count(&id).await.unwrap(), 4);
    // Closed once: one close event in the stream, though two operators raced for it.
    let events = engine.events_since(&id, 0, 1_000).await.unwrap();
    assert_eq!(closes(&events), 1, "closed more than once: {events:?}");
    // Both operators converge on the same report.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(read_status(&file).unwrap().phase, Some(Phase::Closed));
    for m in [&a.metrics, &b.metrics] {
        assert!(
            m.render()
                .contains("gavel_operator_auctions{phase=\"Closed\"} 1")
        );
    }

    // Removing the file deletes the auction: live state gone, PostgreSQL kept.
    std::fs::remove_file(&file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_path(&file).exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!status_path(&file).exists(), "status file not removed");
    assert!(matches!(
        engine.snapshot(&id, None).await,
        Err(EngineError::UnknownAuction(_))
    ));
    assert!(store.result(&id).await.unwrap().is_some());
    assert_eq!(store.bid_count(&id).await.unwrap(), 4);

    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_passed_while_down_and_restart_mid_close() {
    let s = servers().await;
    let dir = temp_dir("operator-restart");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let store = Store::connect_lazy(&s.database).unwrap();
    let end = local_now() + 600;

    // "down": provisioned (as by an earlier operator) and bid on, then the end passes.
    let down = AuctionId::new("shop", "down").unwrap();
    let down_file = dir.join("down.yaml");
    std::fs::write(&down_file, manifest("down", None, end, "")).unwrap();
    // "midclose": closed in Redis by an operator that died before recording.
    let mid = AuctionId::new("shop", "midclose").unwrap();
    let mid_file = dir.join("midclose.yaml");
    std::fs::write(&mid_file, manifest("midclose", None, end, "")).unwrap();
    for (id, file) in [(&down, &down_file), (&mid, &mid_file)] {
        let text = std::fs::read_to_string(file).unwrap();
        let auction = gavel_operator::standalone::parse_manifest(&text).unwrap();
        let settings = auction.spec.to_settings().unwrap();
        engine.provision(id, &settings).await.unwrap();
        store.upsert_auction(id, &settings).await.unwrap();
        bid(&engine, id, "Ann", Some(10_000), None).await;
        bid(&engine, id, "Bob", Some(11_000), None).await;
    }
    wait_until(end + 200).await;
    let first = engine.close(&mid, CloseMode::AtEnd).await.unwrap();
    let gavel_engine::CloseOutcome::Closed(first) = first else {
        panic!("not closed: {first:?}");
    };
    assert!(store.result(&mid).await.unwrap().is_none());

    let op = Operator::start(&dir, &s, "operator-restarted").await;
    for (id, file) in [(&down, &down_file), (&mid, &mid_file)] {
        let st = wait_status(
            file,
            Duration::from_secs(10),
            "Closed",
            phase(Phase::Closed),
        )
        .await;
        assert_eq!(st.winner.as_deref(), Some("Bob"));
        assert_eq!(st.final_price, Some(11_000));
        let recorded = store.result(id).await.unwrap().expect("recorded");
        assert_eq!(recorded.final_price, Some(11_000));
        assert_eq!(store.bid_count(id).await.unwrap(), 2);
        let events = engine.events_since(id, 0, 100).await.unwrap();
        assert_eq!(closes(&events), 1);
    }
    // The restart recorded the result of the close that had already happened.
    assert_eq!(store.result(&mid).await.unwrap().unwrap(), first);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_manifests_are_reported_and_fixed_files_recover() {
    let s = servers().await;
    let dir = temp_dir("operator-invalid");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let bad_spec = dir.join("bad-spec.yaml");
    let now = local_now();
    std::fs::write(
        &bad_spec,
        manifest("bad-spec", Some(now + 60_000), now + 30_000, ""),
    )
    .unwrap();
    let garbage = dir.join("garbage.yaml");
    std::fs::write(&garbage, "this: [is not an auction").unwrap();
    let op = Operator::start(&dir, &s, "operator-invalid").await;

    let st = wait_status(
        &bad_spec,
        Duration::from_secs(5),
        "Failed",
        phase(Phase::Failed),
    )
    .await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready
            .message
            .starts_with("spec.endsAt: must be after startsAt"),
        "{}",
        ready.message
    );
    let id = AuctionId::new("shop", "bad-spec").unwrap();
    assert!(
        engine.snapshot(&id, None).await.is_err(),
        "an invalid auction was provisioned"
    );

    let st = wait_status(
        &garbage,
        Duration::from_secs(5),
        "Failed",
        phase(Phase::Failed),
    )
    .await;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.reason, "InvalidManifest");
    assert!(
        ready.message.contains("not valid YAML"),
        "{}",
        ready.message
    );

    // Fixing the file is enough.
    std::fs::write(
        &bad_spec,
        manifest("bad-spec", Some(now + 60_000), now + 90_000, ""),
    )
    .unwrap();
    let st = wait_status(
        &bad_spec,
        Duration::from_secs(5),
        "Scheduled",
        phase(Phase::Scheduled),
    )
    .await;
    assert_eq!(st.observed_generation, Some(2));
    assert!(engine.snapshot(&id, None).await.is_ok());
    op.stop().await;

    // An edit made while no operator runs is applied by the next one.
    let edited = manifest("bad-spec", Some(now + 60_000), now + 90_000, "")
        .replace("title: \"Lot bad-spec\"", "title: \"Renamed lot\"");
    std::fs::write(&bad_spec, edited).unwrap();
    let op = Operator::start(&dir, &s, "operator-invalid-2").await;
    wait_status(&bad_spec, Duration::from_secs(5), "generation 3", |st| {
        st.observed_generation == Some(3)
    })
    .await;
    assert_eq!(
        engine.snapshot(&id, None).await.unwrap().title,
        "Renamed lot"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pricing_frozen_after_bids_and_cancel() {
    let s = servers().await;
    let dir = temp_dir("operator-frozen");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let store = Store::connect_lazy(&s.database).unwrap();
    let id = AuctionId::new("shop", "frozen").unwrap();
    let file = dir.join("frozen.yaml");
    let end = local_now() + 60_000;
    std::fs::write(&file, manifest("frozen", None, end, "")).unwrap();
    let op = Operator::start(&dir, &s, "operator-frozen").await;
    wait_status(&file, Duration::from_secs(5), "Open", phase(Phase::Open)).await;
    bid(&engine, &id, "Ann", Some(10_000), None).await;

    // A pricing change after the first bid is refused; the auction keeps running.
    let text =
        manifest("frozen", None, end, "").replace("startingPrice: 10000", "startingPrice: 20000");
    std::fs::write(&file, text).unwrap();
    let st = wait_status(&file, Duration::from_secs(5), "PricingFrozen", |st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "PricingFrozen")
    })
    .await;
    assert_eq!(st.phase, Some(Phase::Open));
    assert_eq!(st.observed_generation, Some(2));
    let snap = engine.snapshot(&id, None).await.unwrap();
    assert_eq!(snap.min_next, 10_100, "the old increments still apply");

    // Restoring the old price is accepted.
    std::fs::write(&file, manifest("frozen", None, end, "")).unwrap();
    wait_status(&file, Duration::from_secs(5), "Ready again", |st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    })
    .await;

    // Cancelling closes at once with no winner, recorded in PostgreSQL.
    std::fs::write(&file, manifest("frozen", None, end, "  cancel: true\n")).unwrap();
    let st = wait_status(
        &file,
        Duration::from_secs(5),
        "Cancelled",
        phase(Phase::Cancelled),
    )
    .await;
    assert_eq!(st.winner, None);
    assert_eq!(st.final_price, Some(10_000));
    let result = store.result(&id).await.unwrap().expect("recorded");
    assert!(result.cancelled);
    assert_eq!(store.bid_count(&id).await.unwrap(), 1);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_at_the_end_closes_on_time_and_records_on_recovery() {
    let (redis, _redis_guard) = redis_url();
    let mut pg = tokio::task::spawn_blocking(gavel_engine::testing::TestPostgres::start)
        .await
        .unwrap();
    let database = gavel_engine::testing::create_database(&pg.url(), "gavel_pg_down").await;
    let s = Servers {
        redis,
        database,
        _redis: None,
    };
    let dir = temp_dir("operator-pgdown");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let id = AuctionId::new("shop", "pgdown").unwrap();
    let file = dir.join("pgdown.yaml");
    let end = local_now() + 2_500;
    std::fs::write(&file, manifest("pgdown", None, end, "")).unwrap();
    let op = Operator::start(&dir, &s, "operator-pgdown").await;
    wait_status(&file, Duration::from_secs(5), "Open", phase(Phase::Open)).await;
    bid(&engine, &id, "Ann", Some(10_000), None).await;
    // Wait for the flusher's durable write of the bid: the test server runs with
    // synchronous_commit=off, so a SIGKILL could otherwise lose the schema itself.
    let store = Store::connect_lazy(&s.database).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.bid_count(&id).await.unwrap() < 1 {
        assert!(
            Instant::now() < deadline,
            "the bid never reached PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();

    // Redis closes on time without PostgreSQL; the status says what is missing.
    let st = wait_status(&file, Duration::from_secs(10), "Unavailable", |st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "Unavailable")
    })
    .await;
    assert_ne!(
        st.phase,
        Some(Phase::Closed),
        "Closed before the result was recorded"
    );
    let snap = engine.snapshot(&id, None).await.unwrap();
    let result = snap
        .result
        .expect("closed in Redis while PostgreSQL is down");
    let lateness = result.closed_at - end;
    assert!(
        (0..=CLOSE_TOLERANCE_MS).contains(&lateness),
        "closed {lateness} ms after its end with PostgreSQL down (tolerance {CLOSE_TOLERANCE_MS} ms)"
    );

    let mut pg = pg;
    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    let st = wait_status(
        &file,
        Duration::from_secs(20),
        "Closed",
        phase(Phase::Closed),
    )
    .await;
    assert_eq!(st.winner.as_deref(), Some("Ann"));
    assert_eq!(store.result(&id).await.unwrap(), Some(result));
    assert_eq!(store.bid_count(&id).await.unwrap(), 1);
    op.stop().await;
    drop(pg);
}

fn reconciles(op: &Operator) -> u64 {
    op.metrics.reconciles.with_label_values(&["ok"]).get()
        + op.metrics.reconciles.with_label_values(&["error"]).get()
}

/// An open auction nobody bids on is not looked at again until its end (no Redis or
/// PostgreSQL work per auction at rest), yet everything that happens to it in Redis is
/// noticed: a bid reaches the status, a halt and a flushed Redis are restored from
/// PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_open_auction_costs_nothing_and_changes_in_redis_still_wake_it() {
    let redis = TestRedis::start();
    let s = Servers {
        redis: redis.url(),
        database: database_url().await,
        _redis: Some(redis),
    };
    let dir = temp_dir("operator-idle");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let store = Store::connect_lazy(&s.database).unwrap();
    let id = AuctionId::new("shop", "quiet").unwrap();
    let file = dir.join("quiet.yaml");
    std::fs::write(&file, manifest("quiet", None, local_now() + 3_600_000, "")).unwrap();
    let op = Operator::start(&dir, &s, "operator-idle").await;
    wait_status(&file, Duration::from_secs(10), "Open", phase(Phase::Open)).await;

    // At rest: six status-refresh intervals (500ms here) without a single reconcile.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = reconciles(&op);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        reconciles(&op),
        before,
        "an idle open auction was reconciled again with nothing changed"
    );

    // A bid wakes it: the status follows.
    bid(&engine, &id, "Ann", None, Some(12_000)).await;
    wait_status(&file, Duration::from_secs(10), "showing the bid", |st| {
        st.bid_count == Some(1) && st.leader.as_deref() == Some("Ann")
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.event_count(&id).await.unwrap() < 1 {
        assert!(
            Instant::now() < deadline,
            "the bid never reached PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A halt (what a flusher does on a conflict) is restored at once, not at the next
    // slow look.
    let epoch = engine.snapshot(&id, None).await.unwrap().epoch;
    assert!(
        engine
            .halt(&id, epoch, "test: contradicts the record")
            .await
            .unwrap()
    );
    wait_status(&file, Duration::from_secs(10), "Restored", |st| {
        st.conditions
            .iter()
            .any(|c| c.type_ == "Restored" && c.status == "True")
    })
    .await;
    let restored = engine.snapshot(&id, None).await.unwrap();
    assert_eq!((restored.epoch, restored.halted), (epoch + 1, None));

    // Redis loses everything (no restart, so no reconnect): noticed and restored.
    let flushed = std::process::Command::new("redis-cli")
        .args(["-u", &s.redis, "FLUSHALL"])
        .output()
        .unwrap();
    assert!(flushed.status.success(), "{flushed:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let back = loop {
        match engine.snapshot(&id, None).await {
            Ok(snapshot) => break snapshot,
            Err(EngineError::UnknownAuction(_)) => {
                assert!(
                    Instant::now() < deadline,
                    "a flushed Redis was never noticed"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!((back.bid_count, back.seq), (1, 1));
    assert!(back.epoch > restored.epoch);
    op.stop().await;
}

/// A close storm: a few hundred auctions with the same end, two operators on the same
/// directory. Each is closed exactly once, with the right winner in its status and in
/// PostgreSQL (correctness only; how late they close is measured by `make bench`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_few_hundred_auctions_ending_together_each_close_once_with_their_winner() {
    const N: usize = 300;
    let s = servers().await;
    let dir = temp_dir("operator-storm");
    let engine = Engine::connect(&s.redis, 2).await.unwrap();
    let store = Store::connect_lazy(&s.database).unwrap();
    let end = local_now() + 20_000;
    let files: Vec<PathBuf> = (0..N)
        .map(|i| {
            let name = format!("lot-{i:03}");
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, manifest(&name, None, end, "")).unwrap();
            file
        })
        .collect();
    let (a, b) = tokio::join!(
        Operator::start(&dir, &s, "storm-a"),
        Operator::start(&dir, &s, "storm-b")
    );
    for file in &files {
        wait_status(file, Duration::from_secs(60), "Open", phase(Phase::Open)).await;
    }
    // Two bidders on each lot; the winner differs from lot to lot.
    let names = ["Ann", "Bob", "Cy", "Dee", "Eve"];
    let mut expected = Vec::new();
    for i in 0..N {
        let id = AuctionId::new("shop", &format!("lot-{i:03}")).unwrap();
        let (first, second) = (names[i % 5], names[(i + 1) % 5]);
        bid(&engine, &id, first, None, Some(11_000)).await;
        let top = bid(&engine, &id, second, None, Some(12_000 + i as i64)).await;
        assert_eq!(top.leader_name, second);
        expected.push((id, second, top.price));
    }
    assert!(local_now() < end, "the bids took longer than the lead time");
    for (file, (id, winner, price)) in files.iter().zip(&expected) {
        let closed = wait_status(
            file,
            Duration::from_secs(180),
            "Closed",
            phase(Phase::Closed),
        )
        .await;
        assert_eq!(closed.winner.as_deref(), Some(*winner), "{id}");
        assert_eq!(closed.final_price, Some(*price), "{id}");
        let result = store
            .result(id)
            .await
            .unwrap()
            .expect("result in PostgreSQL");
        let winner_id = format!("{}-id", winner.to_lowercase());
        assert_eq!(result.winner.as_deref(), Some(winner_id.as_str()), "{id}");
        assert_eq!(result.final_price, Some(*price), "{id}");
        assert!(result.closed_at >= end, "{id} closed before its end");
        assert_eq!(store.bid_count(id).await.unwrap(), 2, "{id}");
        let events = engine.events_since(id, 0, 1_000).await.unwrap();
        assert_eq!(closes(&events), 1, "{id} closed more than once: {events:?}");
    }
    a.stop().await;
    b.stop().await;
}

/// #18: a file removed while the standalone operator was stopped must not leave its auction
/// open and taking bids after the restart. On start, the operator reconciles what it
/// provisioned from the folder against what the folder holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_removed_while_stopped_is_deleted_at_the_next_start() {
    let s = servers().await;
    let dir = temp_dir("operator-orphan");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let store = Store::connect_lazy(&s.database).unwrap();
    let end = local_now() + 3_600_000;
    let gone = AuctionId::new("shop", "gone").unwrap();
    let gone_file = dir.join("gone.yaml");
    std::fs::write(&gone_file, manifest("gone", None, end, "")).unwrap();
    let kept = AuctionId::new("shop", "kept").unwrap();
    let kept_file = dir.join("kept.yaml");
    std::fs::write(&kept_file, manifest("kept", None, end, "")).unwrap();
    // Renamed while stopped: the file now names another auction.
    let renamed = AuctionId::new("shop", "before").unwrap();
    let renamed_file = dir.join("renamed.yaml");
    std::fs::write(&renamed_file, manifest("before", None, end, "")).unwrap();

    let op = Operator::start(&dir, &s, "operator-orphan-1").await;
    for file in [&gone_file, &kept_file, &renamed_file] {
        wait_status(file, Duration::from_secs(10), "Open", phase(Phase::Open)).await;
    }
    bid(&engine, &gone, "Ann", Some(10_000), None).await;
    op.stop().await;

    std::fs::remove_file(&gone_file).unwrap();
    std::fs::write(&renamed_file, manifest("after", None, end, "")).unwrap();
    let op = Operator::start(&dir, &s, "operator-orphan-2").await;
    // The removed file's auction is cancelled, recorded and leaves Redis; its status file
    // goes too. Same for the auction the renamed file no longer names.
    for (id, status_file) in [(&gone, status_path(&gone_file)), (&renamed, PathBuf::new())] {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let removed = matches!(
                engine.snapshot(id, None).await,
                Err(EngineError::UnknownAuction(_))
            );
            if removed && !status_file.is_file() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{id} is still live (or its status file is left) after the restart"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let result = store.result(id).await.unwrap().expect("result recorded");
        assert!(result.cancelled, "{id}: {result:?}");
    }
    assert_eq!(store.bid_count(&gone).await.unwrap(), 1);
    let err = engine
        .place_bid(
            &gone,
            &Bidder::new("bob-id", "Bob").unwrap(),
            BidRequest {
                amount: Some(20_000),
                max: None,
            },
        )
        .await
        .expect_err("a bid on the removed auction was accepted");
    assert!(
        matches!(
            err,
            BidError::Engine(EngineError::UnknownAuction(_)) | BidError::Rejected(_)
        ),
        "{err:?}"
    );
    // The others are untouched; the renamed file's new auction runs.
    assert_eq!(read_status(&kept_file).unwrap().phase, Some(Phase::Open));
    assert!(engine.snapshot(&kept, None).await.unwrap().result.is_none());
    let after = AuctionId::new("shop", "after").unwrap();
    wait_status(&renamed_file, Duration::from_secs(10), "after Open", |st| {
        st.phase == Some(Phase::Open)
    })
    .await;
    assert!(engine.snapshot(&after, None).await.is_ok());

    // Removed while running: deleted once, then left alone. The ledger forgets it (and
    // the two above), so it is not adopted as an orphan and deleted again at every scan.
    std::fs::remove_file(&kept_file).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !matches!(
        engine.snapshot(&kept, None).await,
        Err(EngineError::UnknownAuction(_))
    ) || status_path(&kept_file).is_file()
    {
        assert!(
            Instant::now() < deadline,
            "the removed file's auction is still live"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled = reconciles(&op);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        reconciles(&op),
        settled,
        "a deleted auction was reconciled again"
    );
    let ledger = std::fs::read_to_string(dir.join(LEDGER_FILE)).unwrap();
    for name in ["gone", "before", "kept"] {
        assert!(
            !ledger.contains(&format!("shop/{name}:")),
            "{name} is still in the ledger:\n{ledger}"
        );
    }
    assert!(ledger.contains("shop/after:"), "{ledger}");
    op.stop().await;
}

fn condition(st: &AuctionStatus, kind: &str) -> (String, String, String) {
    st.conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| panic!("no {kind} condition in {st:#?}"))
}

fn metric(op: &Operator, name: &str) -> f64 {
    let text = op.metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

/// #18 parts 4 to 6 in standalone mode: the conditions read after open, a soft-close
/// extension, the close, a cancel and a failure (Redis down: retried with per-auction
/// backoff, shown in the Ready condition and the metrics, reset once Redis is back), and
/// an auction whose end passed before it was ever provisioned (not opened).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_tell_the_truth_through_open_extension_close_cancel_and_failure() {
    let redis = TestRedis::start_durable();
    let s = Servers {
        redis: redis.url(),
        database: database_url().await,
        _redis: None,
    };
    let mut redis = redis;
    let dir = temp_dir("operator-truth");
    let engine = Engine::connect(&s.redis, 1).await.unwrap();
    let t0 = local_now();
    let end = t0 + 4_000;
    let life = dir.join("life.yaml");
    std::fs::write(
        &life,
        manifest(
            "life",
            None,
            end,
            "  softClose: { window: 2s, extension: 2s }\n",
        ),
    )
    .unwrap();
    let cancel = dir.join("cancel.yaml");
    std::fs::write(&cancel, manifest("cancel", None, t0 + 3_600_000, "")).unwrap();
    let late = dir.join("late.yaml");
    std::fs::write(&late, manifest("late", None, t0 - 60_000, "")).unwrap();
    let op = Operator::start(&dir, &s, "operator-truth").await;

    // Open.
    let st = wait_status(&life, Duration::from_secs(10), "Open", phase(Phase::Open)).await;
    assert_eq!(
        condition(&st, "Ready"),
        (
            "True".into(),
            "Provisioned".into(),
            "provisioned in Redis and PostgreSQL".into()
        )
    );
    assert_eq!(
        condition(&st, "Open"),
        (
            "True".into(),
            "BiddingOpen".into(),
            format!("taking bids until {}", format_time(end))
        )
    );

    // endsAt already past when first seen: never opened, and the status says why.
    let st = wait_status(
        &late,
        Duration::from_secs(10),
        "Failed",
        phase(Phase::Failed),
    )
    .await;
    let (ok, reason, message) = condition(&st, "Ready");
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "AlreadyEnded"));
    assert!(message.contains("so it was never opened"), "{message}");
    assert!(matches!(
        engine
            .snapshot(&AuctionId::new("shop", "late").unwrap(), None)
            .await,
        Err(EngineError::UnknownAuction(_))
    ));

    // A soft-close extension.
    let id = AuctionId::new("shop", "life").unwrap();
    wait_until(end - 1_000).await;
    let late_bid = bid(&engine, &id, "Ann", Some(10_000), None).await;
    assert!(late_bid.extended);
    let st = wait_status(&life, Duration::from_secs(5), "extended", |st| {
        st.effective_ends_at == Some(format_time(late_bid.ends_at))
    })
    .await;
    let (_, reason, message) = condition(&st, "Open");
    assert_eq!(reason, "BiddingOpen");
    assert_eq!(
        message,
        format!(
            "taking bids until {} (extended by soft close from {})",
            format_time(late_bid.ends_at),
            format_time(end)
        )
    );

    // Closed.
    let st = wait_status(
        &life,
        Duration::from_secs(10),
        "Closed",
        phase(Phase::Closed),
    )
    .await;
    let closed_at = st.closed_at.clone().unwrap();
    assert_eq!(
        condition(&st, "Open"),
        (
            "False".into(),
            "Ended".into(),
            format!("closed at {closed_at}")
        )
    );
    let (ok, reason, message) = condition(&st, "Ready");
    assert_eq!((ok.as_str(), reason.as_str()), ("True", "Completed"));
    assert!(
        message.starts_with(&format!(
            "closed at {closed_at}; result recorded in PostgreSQL"
        )),
        "{message}"
    );
    assert_eq!(condition(&st, "ResultRecorded").1, "Recorded");

    // Cancelled (a new generation): never left at Provisioning.
    std::fs::write(
        &cancel,
        manifest("cancel", None, t0 + 3_600_000, "  cancel: true\n"),
    )
    .unwrap();
    let st = wait_status(
        &cancel,
        Duration::from_secs(10),
        "Cancelled",
        phase(Phase::Cancelled),
    )
    .await;
    assert_eq!(st.observed_generation, Some(2));
    let (ok, reason, message) = condition(&st, "Ready");
    assert_eq!(
        (ok.as_str(), reason.as_str()),
        ("True", "Completed"),
        "{message}"
    );
    assert!(message.starts_with("cancelled at "), "{message}");
    let (ok, reason, message) = condition(&st, "Open");
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "Cancelled"));
    assert!(message.starts_with("cancelled at "), "{message}");

    // A failure: Redis down at an auction's end. Each attempt is counted and the next one
    // announced; bidding is Unknown meanwhile.
    let failing = dir.join("failing.yaml");
    let failing_end = local_now() + 2_000;
    std::fs::write(&failing, manifest("failing", None, failing_end, "")).unwrap();
    wait_status(
        &failing,
        Duration::from_secs(10),
        "Open",
        phase(Phase::Open),
    )
    .await;
    redis.kill();
    let st = wait_status(
        &failing,
        Duration::from_secs(15),
        "a second failure",
        |st| {
            st.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.message.contains("failed 2 times in a row"))
        },
    )
    .await;
    let (ok, reason, message) = condition(&st, "Ready");
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "Unavailable"));
    assert!(message.starts_with("redis: "), "{message}");
    assert!(message.contains(", retrying in "), "{message}");
    let (ok, reason, _) = condition(&st, "Open");
    assert_eq!((ok.as_str(), reason.as_str()), ("Unknown", "Unavailable"));
    assert_eq!(metric(&op, "gavel_operator_auctions_backing_off"), 1.0);
    assert!(metric(&op, "gavel_operator_retry_delay_seconds_count") >= 2.0);
    assert!(metric(&op, "gavel_operator_reconcile_errors_total{kind=\"redis\"}") >= 2.0);

    // Redis back: closed, and the backoff is reset.
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let st = wait_status(
        &failing,
        Duration::from_secs(40),
        "Closed",
        phase(Phase::Closed),
    )
    .await;
    assert_eq!(condition(&st, "Ready").1, "Completed");
    assert_eq!(condition(&st, "Open").1, "Ended");
    assert_eq!(metric(&op, "gavel_operator_auctions_backing_off"), 0.0);
    op.stop().await;
    drop(redis);
}
