//! The outbound event feed end to end: a standalone operator (with its flusher and the
//! feed's dispatcher) over real Redis and PostgreSQL, real bids through the engine, and
//! real HTTP receivers (axum on 127.0.0.1) that verify every Standard Webhooks signature
//! with their own HMAC code. Checked: every event of scripted auctions arrives, exactly
//! once after deduplication by id, in seq order per auction, on the cluster sink and on an
//! auction's own sink; no event carries a ceiling; a receiver down under bid load loses
//! nothing and the backlog drains in order; a receiver answering 500 forever ends in the
//! dead letters with the reason, and a replay delivers them; the README's example consumer
//! verifies signatures and handles each event once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use gavel_crds::{AuctionStatus, Phase, format_time};
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::outbound::{self, FeedStore, WebhookSecret, types};
use gavel_engine::store::Store;
use gavel_engine::testing::{database_url, redis_url, temp_dir};
use gavel_engine::{AuctionEvent, AuctionId, BidError, BidRequest, Bidder, Engine, Millis};
use gavel_operator::feed::{Dispatcher, FeedConfig, FeedMetrics};
use gavel_operator::lifecycle::{Lifecycle, local_now, run_flusher};
use gavel_operator::metrics::Metrics;
use gavel_operator::plan::Timing;
use gavel_operator::standalone::{Standalone, status_path};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::{Mutex, oneshot};
use tokio::task::JoinHandle;

/// The key of every test's feed secret.
const KEY: &[u8] = b"gavel-feed-test-key-0123456789";

// ---------------------------------------------------------------------------------------
// The receiver: a real HTTP server that checks each request as a consumer would.

/// One event as a receiver got it.
#[derive(Clone, Debug)]
struct Got {
    id: String,
    ty: String,
    subject: String,
    seq: u64,
    body: Value,
}

#[derive(Default)]
struct Inbox {
    /// Every request accepted (2xx), in arrival order, duplicates included.
    accepted: StdMutex<Vec<Got>>,
    /// Attempts per event id, whatever the answer.
    attempts: StdMutex<HashMap<String, u32>>,
    /// Requests whose signature, id, timestamp or content type was wrong.
    bad: StdMutex<Vec<String>>,
    /// Answer 500 to everything.
    failing: AtomicBool,
}

/// HMAC-SHA256 of "id.timestamp.body", written here independently of the engine's code.
fn expected_signature(id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(KEY).unwrap();
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

async fn receive(State(inbox): State<Arc<Inbox>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    *inbox
        .attempts
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default() += 1;
    let mut problems = Vec::new();
    let sig_ok = signature
        .split(' ')
        .any(|s| s.strip_prefix("v1,") == Some(&expected_signature(&id, &timestamp, &body)));
    if !sig_ok {
        problems.push("signature");
    }
    let now = local_now() / 1000;
    if timestamp
        .parse::<i64>()
        .map_or(true, |t| (t - now).abs() > 300)
    {
        problems.push("timestamp");
    }
    if !header("content-type").starts_with("application/cloudevents+json") {
        problems.push("content-type");
    }
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if event["id"] != id.as_str() || event["specversion"] != "1.0" {
        problems.push("id or specversion");
    }
    if !problems.is_empty() {
        inbox
            .bad
            .lock()
            .unwrap()
            .push(format!("{id}: {problems:?}"));
        return StatusCode::UNAUTHORIZED;
    }
    if inbox.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    inbox.accepted.lock().unwrap().push(Got {
        id,
        ty: event["type"].as_str().unwrap_or_default().to_owned(),
        subject: event["subject"].as_str().unwrap_or_default().to_owned(),
        seq: event["gavelseq"].as_u64().unwrap_or(u64::MAX),
        body: event,
    });
    StatusCode::NO_CONTENT
}

/// `boom` with a 500 when failing (the reason a dead letter must keep).
async fn receive_or_fail(
    state: State<Arc<Inbox>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let failing = state.0.failing.load(Ordering::SeqCst);
    let status = receive(state, headers, body).await;
    if failing && status == StatusCode::INTERNAL_SERVER_ERROR {
        (status, "boom: receiver broken")
    } else {
        (status, "")
    }
}

/// A receiver that can be stopped (connections refused) and started again on its port.
struct Receiver {
    inbox: Arc<Inbox>,
    port: u16,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl Receiver {
    async fn start() -> Self {
        let mut r = Self {
            inbox: Arc::default(),
            port: 0,
            running: None,
        };
        r.up().await;
        r
    }

    fn uri(&self) -> String {
        format!("http://127.0.0.1:{}/events", self.port)
    }

    async fn up(&mut self) {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_reuseaddr(true).unwrap();
        socket
            .bind(([127, 0, 0, 1], self.port).into())
            .unwrap_or_else(|e| panic!("cannot bind port {}: {e}", self.port));
        let listener = socket.listen(128).unwrap();
        self.port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route("/events", axum::routing::post(receive_or_fail))
            .with_state(self.inbox.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((tx, task));
    }

    /// Stops accepting and closes its connections: deliveries fail to connect.
    async fn down(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    fn accepted(&self) -> Vec<Got> {
        self.inbox.accepted.lock().unwrap().clone()
    }

    fn bad(&self) -> Vec<String> {
        self.inbox.bad.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------------------------------
// The platform: Redis, PostgreSQL, a standalone operator with a flusher and a dispatcher.

struct Operator {
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
    flush: JoinHandle<()>,
    feed_stop: oneshot::Sender<()>,
    feed: JoinHandle<()>,
    feed_metrics: FeedMetrics,
}

impl Operator {
    async fn start(dir: &Path, redis: &str, database: &str, config: FeedConfig) -> Self {
        let engine = Engine::connect(redis, 2).await.unwrap();
        engine.load_scripts().await.unwrap();
        let store = Store::connect_lazy(database).unwrap();
        let flusher = Arc::new(Mutex::new(Flusher::new(
            &engine,
            store.clone(),
            FlusherConfig::new("operator-feed"),
            FlushMetrics::unregistered(),
        )));
        let timing = Timing {
            refresh: Duration::from_millis(300),
            ..Timing::default()
        };
        let lifecycle = Lifecycle::new(engine, store.clone(), flusher.clone(), timing);
        let flush = tokio::spawn(run_flusher(flusher));
        let (stop, rx) = oneshot::channel::<()>();
        let op = Standalone::new(
            dir.to_path_buf(),
            lifecycle,
            Arc::new(Metrics::new().unwrap()),
            Duration::from_millis(50),
            false,
        );
        let task = tokio::spawn(op.run_until(async move {
            let _ = rx.await;
        }));
        let feed_metrics = FeedMetrics::unregistered();
        let dispatcher = Dispatcher::new(&store, config, feed_metrics.clone()).unwrap();
        let (feed_stop, feed_rx) = oneshot::channel::<()>();
        let feed = tokio::spawn(dispatcher.run_until(async move {
            let _ = feed_rx.await;
        }));
        Self {
            stop,
            task,
            flush,
            feed_stop,
            feed,
            feed_metrics,
        }
    }

    async fn stop(self) {
        let _ = self.feed_stop.send(());
        self.feed.await.unwrap();
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        self.flush.abort();
    }
}

fn feed_config(sink: Option<String>) -> FeedConfig {
    FeedConfig {
        sink,
        secret: Some(WebhookSecret::from_key(KEY)),
        poll: Duration::from_millis(50),
        timeout: Duration::from_secs(5),
        max_attempts: 1_000,
        backoff: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        gap_timeout: Duration::from_secs(5),
        concurrency: 8,
    }
}

fn manifest(name: &str, starts_at: Option<Millis>, ends_at: Millis, extra: &str) -> String {
    let starts = starts_at
        .map(|s| format!("  startsAt: \"{}\"\n", format_time(s)))
        .unwrap_or_default();
    format!(
        "apiVersion: gavel.dev/v1alpha1\nkind: Auction\nmetadata:\n  name: {name}\n  namespace: shop\n\
         spec:\n  title: \"Lot {name}\"\n  currency: EUR\n  startingPrice: 10000\n  increments:\n    - {{ from: 0, step: 100 }}\n\
         {starts}  endsAt: \"{}\"\n{extra}",
        format_time(ends_at)
    )
}

fn read_status(path: &Path) -> Option<AuctionStatus> {
    let text = std::fs::read_to_string(status_path(path)).ok()?;
    serde_yaml::from_str(&text).ok()
}

async fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_phase(path: &Path, phase: Phase, timeout: Duration) -> AuctionStatus {
    wait_for(timeout, &format!("{} {phase:?}", path.display()), || {
        read_status(path).filter(|s| s.phase == Some(phase))
    })
    .await
}

/// Places a bid, retrying while the auction is briefly unavailable (being restored).
async fn bid(engine: &Engine, id: &AuctionId, who: &str, amount: Option<i64>, max: Option<i64>) {
    let bidder = Bidder::new(format!("{}-id", who.to_lowercase()), who).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match engine
            .place_bid(id, &bidder, BidRequest { amount, max })
            .await
        {
            Ok(_) => return,
            Err(e @ (BidError::Rejected(_) | BidError::Engine(_))) => {
                assert!(Instant::now() < deadline, "{who}'s bid refused: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// What the record says the feed must hold, and the checks of what a receiver got.

fn rank(ty: &str) -> i16 {
    match ty {
        types::OUTBID => 1,
        types::EXTENDED => 2,
        types::RESTORED => outbound::RANK_RESTORED,
        _ => 0,
    }
}

/// The ids the feed must deliver for `id`: its opening, the public events of everything
/// PostgreSQL recorded, and the restores a receiver reports (their ids name an epoch).
async fn expected_ids(store: &Store, id: &AuctionId, restores: usize) -> HashSet<String> {
    let events: Vec<AuctionEvent> = store.events_after(id, 0, 1_000).await.unwrap();
    let mut ids: HashSet<String> = events
        .iter()
        .flat_map(|e| outbound::from_record(id, e))
        .map(|e| e.event.id)
        .collect();
    ids.insert(outbound::event_id(id, 0, types::OPENED, 0));
    assert_eq!(
        events.len() as u64,
        store.event_count(id).await.unwrap(),
        "paged"
    );
    assert!(restores == 0 || !ids.is_empty());
    ids
}

/// Every event of `auction` the receiver accepted: the distinct ids, checked to have
/// arrived (first copies) in feed order.
fn delivered_in_order(got: &[Got], auction: &AuctionId) -> Vec<Got> {
    let mut seen = HashSet::new();
    let firsts: Vec<Got> = got
        .iter()
        .filter(|g| g.subject == auction.to_string())
        .filter(|g| seen.insert(g.id.clone()))
        .cloned()
        .collect();
    let order: Vec<(u64, i16)> = firsts.iter().map(|g| (g.seq, rank(&g.ty))).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order,
        sorted,
        "{auction}: events out of order: {:?}",
        firsts.iter().map(|g| &g.id).collect::<Vec<_>>()
    );
    assert_eq!(
        firsts.first().map(|g| g.ty.as_str()),
        Some(types::OPENED),
        "{auction}: the opening comes first"
    );
    firsts
}

/// No ceiling anywhere: no field named like one, and no value equal to a ceiling that the
/// public record never showed as an amount or a price.
async fn assert_no_ceiling(store: &Store, id: &AuctionId, got: &[Got]) {
    let events = store.events_after(id, 0, 1_000).await.unwrap();
    let mut public = HashSet::new();
    let mut secret = HashSet::new();
    for e in &events {
        if let AuctionEvent::Bid(b) = e {
            public.extend([b.amount, b.price, b.min_next]);
            secret.insert(b.max);
            secret.extend(b.ceiling);
        }
    }
    let secret: Vec<i64> = secret.difference(&public).copied().collect();
    assert!(!secret.is_empty(), "the script must hold hidden ceilings");
    fn walk(v: &Value, path: &str, secret: &[i64], id: &str) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = k.to_lowercase();
                    assert!(
                        !key.contains("max") && !key.contains("ceiling"),
                        "{id}: field {path}.{k} looks like a ceiling"
                    );
                    walk(v, &format!("{path}.{k}"), secret, id);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path, secret, id)),
            Value::Number(n) => assert!(
                !n.as_i64().is_some_and(|n| secret.contains(&n)),
                "{id}: {path} = {n} is a hidden ceiling"
            ),
            Value::String(s) => assert!(
                !secret.iter().any(|c| s.contains(&c.to_string())),
                "{id}: {path} = {s:?} holds a hidden ceiling"
            ),
            _ => {}
        }
    }
    for g in got {
        walk(&g.body, "", &secret, &g.id);
    }
}

// ---------------------------------------------------------------------------------------

/// A scripted auction (opening, proxy bids, an outbid, a restore from PostgreSQL, a
/// soft-close extension, the close) with its own sink, and a cancelled one: both sinks see
/// every event once after deduplication, in order, signed, with no ceiling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_auctions_reach_both_sinks_signed_in_order_exactly_once() {
    let (redis, _redis_guard) = redis_url();
    let database = database_url().await;
    let dir = temp_dir("operator-feed");
    let cluster = Receiver::start().await;
    let own = Receiver::start().await;
    let engine = Engine::connect(&redis, 1).await.unwrap();
    let store = Store::connect_lazy(&database).unwrap();
    let lot = AuctionId::new("shop", "feed-lot").unwrap();
    let gone = AuctionId::new("shop", "feed-gone").unwrap();
    let lot_file = dir.join("feed-lot.yaml");
    let gone_file = dir.join("feed-gone.yaml");

    let t0 = local_now();
    let (start, end) = (t0 + 1_500, t0 + 9_000);
    std::fs::write(
        &lot_file,
        manifest(
            "feed-lot",
            Some(start),
            end,
            &format!(
                "  softClose: {{ window: 3s, extension: 4s }}\n  sink:\n    uri: {}\n",
                own.uri()
            ),
        ),
    )
    .unwrap();
    std::fs::write(&gone_file, manifest("feed-gone", None, t0 + 600_000, "")).unwrap();
    let op = Operator::start(&dir, &redis, &database, feed_config(Some(cluster.uri()))).await;

    // The cancelled one: a bid, then cancel.
    wait_phase(&gone_file, Phase::Open, Duration::from_secs(10)).await;
    bid(&engine, &gone, "Zed", None, Some(77_717)).await;
    std::fs::write(
        &gone_file,
        manifest("feed-gone", None, t0 + 600_000, "  cancel: true\n"),
    )
    .unwrap();

    // The scripted one.
    wait_phase(&lot_file, Phase::Open, Duration::from_secs(10)).await;
    bid(&engine, &lot, "Ann", Some(10_000), None).await;
    bid(&engine, &lot, "Bob", None, Some(99_991)).await; // proxy: Ann outbid
    bid(&engine, &lot, "Cid", Some(12_000), None).await; // beaten by Bob's proxy at once
    bid(&engine, &lot, "Ann", None, Some(55_553)).await; // idem, a proxy
    // A halt (what a flusher does on a conflict with the record): the operator restores the
    // auction from PostgreSQL in a new epoch.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.event_count(&lot).await.unwrap() < 4 {
        assert!(Instant::now() < deadline, "bids never reached PostgreSQL");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let epoch = engine.snapshot(&lot, None).await.unwrap().epoch;
    assert!(engine.halt(&lot, epoch, "test: halted").await.unwrap());
    wait_for(Duration::from_secs(10), "restored", || {
        read_status(&lot_file).filter(|s| s.conditions.iter().any(|c| c.type_ == "Restored"))
    })
    .await;
    bid(&engine, &lot, "Dee", None, Some(66_661)).await; // epoch 2, beaten by Bob's proxy
    // A late bid over Bob's ceiling: Bob outbid, the end moves.
    let late = end - 2_000;
    tokio::time::sleep(Duration::from_millis((late - local_now()).max(0) as u64)).await;
    bid(&engine, &lot, "Eve", Some(120_000), None).await;

    let closed = wait_phase(&lot_file, Phase::Closed, Duration::from_secs(20)).await;
    assert_eq!(closed.winner.as_deref(), Some("Eve"));
    wait_phase(&gone_file, Phase::Cancelled, Duration::from_secs(20)).await;
    let last = |r: &Receiver, auction: &AuctionId, ty: &'static str| {
        let got = r.accepted();
        let subject = auction.to_string();
        got.iter()
            .any(|g| g.subject == subject && g.ty == ty)
            .then_some(())
    };
    wait_for(Duration::from_secs(30), "closes delivered", || {
        last(&cluster, &lot, types::CLOSED)?;
        last(&own, &lot, types::CLOSED)?;
        last(&cluster, &gone, types::CANCELLED)
    })
    .await;
    op.stop().await;

    assert_eq!(cluster.bad(), Vec::<String>::new(), "bad requests");
    assert_eq!(own.bad(), Vec::<String>::new(), "bad requests");
    for (receiver, auctions) in [(&cluster, vec![&lot, &gone]), (&own, vec![&lot])] {
        let got = receiver.accepted();
        for auction in auctions {
            let firsts = delivered_in_order(&got, auction);
            let restores: Vec<&Got> = firsts.iter().filter(|g| g.ty == types::RESTORED).collect();
            let mut want = expected_ids(&store, auction, restores.len()).await;
            if *auction == lot {
                assert_eq!(restores.len(), 1, "one restore");
                assert_eq!(restores[0].body["data"]["epoch"], 2);
                assert_eq!(restores[0].seq, 4, "restored after the 4th bid");
                want.insert(restores[0].id.clone());
            }
            let have: HashSet<String> = firsts.iter().map(|g| g.id.clone()).collect();
            assert_eq!(have, want, "{auction}: the feed differs from the record");
            assert_no_ceiling(&store, auction, &got).await;
        }
        // Nothing of another auction reached an auction's own sink.
        if std::ptr::eq(receiver, &own) {
            assert!(got.iter().all(|g| g.subject == lot.to_string()));
        }
    }

    // The facts a consumer needs.
    let got = cluster.accepted();
    let by_type = |ty: &str, auction: &AuctionId| -> Vec<Value> {
        got.iter()
            .filter(|g| g.ty == ty && g.subject == auction.to_string())
            .map(|g| g.body.clone())
            .collect()
    };
    let outbid = by_type(types::OUTBID, &lot);
    let displaced: Vec<&str> = outbid
        .iter()
        .map(|e| e["data"]["bidder"].as_str().unwrap())
        .collect();
    assert_eq!(
        displaced,
        ["ann-id", "bob-id"],
        "outbid notices to the displaced"
    );
    assert_eq!(by_type(types::EXTENDED, &lot).len(), 1);
    let closed = &by_type(types::CLOSED, &lot)[0];
    assert_eq!(closed["source"], "/gavel/shop/feed-lot");
    assert_eq!(closed["subject"], "shop/feed-lot");
    assert_eq!(closed["data"]["winner"], "eve-id");
    assert_eq!(closed["data"]["final_price"], 120_000);
    assert_eq!(closed["data"]["reserve_met"], true);
    assert_eq!(closed["data"]["bid_count"], 6);
    assert_eq!(closed["data"]["currency"], "EUR");
    let opened = &by_type(types::OPENED, &lot)[0];
    assert_eq!(opened["data"]["starting_price"], 10_000);
    assert_eq!(opened["time"], outbound::rfc3339(start));
    let cancelled = &by_type(types::CANCELLED, &gone)[0];
    assert_eq!(cancelled["data"]["winner"], Value::Null);
    assert!(by_type(types::CLOSED, &gone).is_empty());
}

/// The receiver goes down while two auctions take bids, then comes back: nothing is lost,
/// each auction's order is kept, and the backlog drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_under_load_loses_nothing_and_keeps_order() {
    let (redis, _redis_guard) = redis_url();
    let database = database_url().await;
    let dir = temp_dir("operator-feed-down");
    let mut receiver = Receiver::start().await;
    let engine = Engine::connect(&redis, 2).await.unwrap();
    let store = Store::connect_lazy(&database).unwrap();
    let ids: Vec<AuctionId> = ["load-1", "load-2"]
        .iter()
        .map(|n| AuctionId::new("shop", n).unwrap())
        .collect();
    let t0 = local_now();
    let end = t0 + 10_000;
    for id in &ids {
        std::fs::write(
            dir.join(format!("{}.yaml", id.name())),
            manifest(id.name(), None, end, ""),
        )
        .unwrap();
    }
    let op = Operator::start(&dir, &redis, &database, feed_config(Some(receiver.uri()))).await;
    for id in &ids {
        wait_phase(
            &dir.join(format!("{}.yaml", id.name())),
            Phase::Open,
            Duration::from_secs(10),
        )
        .await;
    }
    // Bids until shortly before the end, alternating bidders (each one displaces the other).
    let load = {
        let (engine, ids) = (engine.clone(), ids.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while local_now() < end - 1_000 {
                for id in &ids {
                    let who = if n.is_multiple_of(2) { "Ann" } else { "Bob" };
                    let bidder = Bidder::new(format!("{}-id", who.to_lowercase()), who).unwrap();
                    let amount = Some(10_000 + 100 * n as i64);
                    engine
                        .place_bid(id, &bidder, BidRequest { amount, max: None })
                        .await
                        .unwrap();
                }
                n += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    receiver.down().await;
    let before = receiver.accepted().len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(receiver.accepted().len(), before, "delivered while down");
    assert!(
        op.feed_metrics
            .retried
            .with_label_values(&["cluster"])
            .get()
            > 0,
        "no failed attempt counted while the receiver was down"
    );
    receiver.up().await;
    let rounds = load.await.unwrap();
    assert!(rounds > 100, "too little load: {rounds} rounds");

    for id in &ids {
        wait_phase(
            &dir.join(format!("{}.yaml", id.name())),
            Phase::Closed,
            Duration::from_secs(20),
        )
        .await;
    }
    let feed = FeedStore::new(store.pool().clone());
    wait_for(Duration::from_secs(60), "backlog drained", || {
        let got = receiver.accepted();
        ids.iter()
            .all(|id| {
                got.iter()
                    .any(|g| g.subject == id.to_string() && g.ty == types::CLOSED)
            })
            .then_some(())
    })
    .await;
    let backlog = feed.backlog().await.unwrap();
    assert!(
        backlog.iter().all(|b| b.pending == 0 && b.dead == 0),
        "{backlog:?}"
    );
    op.stop().await;

    assert_eq!(receiver.bad(), Vec::<String>::new());
    let got = receiver.accepted();
    let mut total = 0;
    for id in &ids {
        let firsts = delivered_in_order(&got, id);
        let have: HashSet<String> = firsts.iter().map(|g| g.id.clone()).collect();
        let want = expected_ids(&store, id, 0).await;
        assert_eq!(have.len(), want.len(), "{id}: count");
        assert_eq!(have, want, "{id}: the feed differs from the record");
        total += have.len();
    }
    assert!(total > 400, "only {total} events");
}

/// A receiver that answers 500 forever: each event is tried `max_attempts` times, then
/// kept in the dead letters with the reason; the auction's later events go on; a replay
/// delivers them once the receiver is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_failing_forever_ends_in_the_dead_letters_and_replay_delivers() {
    let (redis, _redis_guard) = redis_url();
    let database = database_url().await;
    let dir = temp_dir("operator-feed-dead");
    let receiver = Receiver::start().await;
    receiver.inbox.failing.store(true, Ordering::SeqCst);
    let engine = Engine::connect(&redis, 1).await.unwrap();
    let store = Store::connect_lazy(&database).unwrap();
    let id = AuctionId::new("shop", "dead").unwrap();
    let file = dir.join("dead.yaml");
    std::fs::write(&file, manifest("dead", None, local_now() + 3_000, "")).unwrap();
    let config = FeedConfig {
        max_attempts: 3,
        backoff: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..feed_config(Some(receiver.uri()))
    };
    let op = Operator::start(&dir, &redis, &database, config).await;
    wait_phase(&file, Phase::Open, Duration::from_secs(10)).await;
    bid(&engine, &id, "Ann", None, Some(40_009)).await;
    bid(&engine, &id, "Bob", Some(20_000), None).await;
    wait_phase(&file, Phase::Closed, Duration::from_secs(20)).await;

    let feed = FeedStore::new(store.pool().clone());
    let want = expected_ids(&store, &id, 0).await;
    let dead = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let dead = feed.dead_letters(None, None, 100).await.unwrap();
            if dead.len() == want.len() {
                break dead;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} events dead-lettered",
                dead.len(),
                want.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    for d in &dead {
        assert_eq!(d.sink, "cluster");
        assert_eq!(d.attempts, 3, "{d:?}");
        assert!(
            d.last_error.contains("500") && d.last_error.contains("boom: receiver broken"),
            "{d:?}"
        );
        assert_eq!(d.uri.as_deref(), Some(receiver.uri().as_str()));
    }
    let dead_ids: HashSet<String> = dead.iter().map(|d| d.event_id.clone()).collect();
    assert_eq!(dead_ids, want);
    let attempts = receiver.inbox.attempts.lock().unwrap().clone();
    for id in &want {
        assert_eq!(attempts.get(id), Some(&3), "{id}");
    }
    assert_eq!(
        op.feed_metrics
            .dead_lettered
            .with_label_values(&["cluster"])
            .get(),
        want.len() as u64
    );
    assert_eq!(receiver.bad(), Vec::<String>::new());

    // Fixed: replay them all.
    receiver.inbox.failing.store(false, Ordering::SeqCst);
    assert_eq!(feed.replay(None, &[]).await.unwrap(), want.len() as u64);
    wait_for(Duration::from_secs(20), "replayed", || {
        let got: HashSet<String> = receiver.accepted().into_iter().map(|g| g.id).collect();
        (got == want).then_some(())
    })
    .await;
    let got = receiver.accepted();
    delivered_in_order(&got, &id);
    assert!(feed.dead_letters(None, None, 100).await.unwrap().is_empty());
    op.stop().await;
}

/// The README's example consumer (`examples/feed-consumer.py`, run with python3) as the
/// sink: it prints every event of an auction once, refuses a bad signature, and does not
/// handle a redelivered event twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_consumer_verifies_and_deduplicates() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let (redis, _redis_guard) = redis_url();
    let database = database_url().await;
    let dir = temp_dir("operator-feed-consumer");
    let port = gavel_engine::testing::free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/feed-consumer.py");
    let secret = WebhookSecret::from_key(KEY).to_text();
    let mut consumer = Command::new("python3")
        .arg(script)
        .arg(port.to_string())
        .env("GAVEL_EVENTS_SECRET", &secret)
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed to run the README's consumer");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = consumer.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let uri = format!("http://127.0.0.1:{port}/");
    let engine = Engine::connect(&redis, 1).await.unwrap();
    let store = Store::connect_lazy(&database).unwrap();
    let id = AuctionId::new("shop", "consumed").unwrap();
    let file = dir.join("consumed.yaml");
    std::fs::write(&file, manifest("consumed", None, local_now() + 3_000, "")).unwrap();
    let op = Operator::start(&dir, &redis, &database, feed_config(Some(uri.clone()))).await;
    wait_phase(&file, Phase::Open, Duration::from_secs(10)).await;
    bid(&engine, &id, "Ann", None, Some(30_001)).await;
    bid(&engine, &id, "Bob", Some(20_000), None).await;
    wait_phase(&file, Phase::Closed, Duration::from_secs(20)).await;
    let want = expected_ids(&store, &id, 0).await;
    let mut printed = Vec::new();
    while printed.len() < want.len() {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.recv())
            .await
            .expect("the consumer printed too few events")
            .expect("the consumer exited");
        printed.push(line);
    }
    op.stop().await;
    let types: Vec<&str> = printed
        .iter()
        .map(|l| l.split(' ').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(types.first(), Some(&types::OPENED), "{printed:?}");
    assert_eq!(types.last(), Some(&types::CLOSED), "{printed:?}");

    // A redelivery (same id, fresh timestamp and signature) is acknowledged, not handled
    // again; a forged signature is refused.
    let body = serde_json::to_vec(&serde_json::json!({
        "id": outbound::event_id(&id, 0, types::OPENED, 0), "type": types::OPENED,
        "subject": id.to_string(), "time": "x", "data": {}
    }))
    .unwrap();
    let event_id = outbound::event_id(&id, 0, types::OPENED, 0);
    let post = |signature: String, ts: i64| {
        reqwest::Client::new()
            .post(&uri)
            .header("webhook-id", &event_id)
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", signature)
            .body(body.clone())
            .send()
    };
    let ts = local_now() / 1000;
    let signed = WebhookSecret::from_key(KEY).sign(&event_id, ts, &body);
    assert_eq!(post(signed, ts).await.unwrap().status(), 204);
    let forged = WebhookSecret::from_key(b"another-key-0123456789").sign(&event_id, ts, &body);
    assert_eq!(post(forged, ts).await.unwrap().status(), 401);
    let old = WebhookSecret::from_key(KEY).sign(&event_id, ts - 3_600, &body);
    assert_eq!(post(old, ts - 3_600).await.unwrap().status(), 401);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), lines.recv())
            .await
            .is_err(),
        "the consumer handled a duplicate"
    );
    let _ = consumer.kill();
    let _ = consumer.wait();
}
