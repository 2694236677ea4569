//! The durability promise under faults, on a local platform of real processes: a steady
//! bid load over real WebSockets on both bid-api processes while, one after the other,
//! Redis is killed and restarted with the shipped persistence, Redis restarts empty,
//! PostgreSQL is down for 20 s, a bid-api is killed, and the operator is killed at the
//! auction's end. Afterwards every bid a client saw accepted is checked against
//! PostgreSQL: there exactly once with the same content, except — only for the Redis that
//! lost its data — bids accepted after the last flush, which are counted and reported.
//! The record must be gap-free, its price never going down, the result row and the
//! status agreeing with it, and a watcher must have been resynchronised by the restore.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gavel_e2e::platform::{
    LocalOptions, LocalPlatform, binary_dir, build_platform_binaries, manifest_path, now_ms,
    status_paths,
};
use gavel_e2e::protocol::Outcome;
use gavel_e2e::{AuctionSpec, Auth, BidReply, ErrorCode, ServerMessage, WsClient};
use gavel_engine::store::Store;
use tokio::sync::watch;

const NS: &str = "faults";
const NAME: &str = "lot";
const STEP: i64 = 10;
const T: Duration = Duration::from_secs(15);

/// A bid a client was told was accepted.
#[derive(Clone, Debug)]
struct Ack {
    bidder: String,
    seq: u64,
    epoch: u64,
    price: i64,
    outcome: Outcome,
    at: Instant,
}

#[derive(Default)]
struct Load {
    acks: Mutex<Vec<Ack>>,
    unavailable: Mutex<u64>,
}

/// One bidder: bids (mostly proxy ceilings) ten times a second,
/// reconnecting whenever its bid-api goes away, until told to stop.
async fn bidder(
    url: String,
    name: String,
    auction: String,
    load: Arc<Load>,
    stop: watch::Receiver<bool>,
) {
    let mut min_next = 100;
    let mut n = 0i64;
    while !*stop.borrow() {
        let Ok(mut client) = WsClient::connect(&url, &Auth::Dev(name.clone())).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        if let Ok(snapshot) = client.subscribe(&auction, T).await {
            min_next = snapshot.min_next;
        }
        while !*stop.borrow() {
            n += 1;
            // Mostly ceilings only: the server bids the current minimum for them, so they
            // are accepted (leading or outbid) whatever this bidder last saw.
            let (amount, max) = match n % 3 {
                0 => (Some(min_next), None),
                _ => (None, Some(min_next + (40 + n % 7) * STEP)),
            };
            match client.bid(&auction, amount, max, T).await {
                // A leader's private raise has no event of its own to check.
                Ok(BidReply::Accepted(r)) if r.outcome == Outcome::CeilingRaised => {
                    min_next = r.min_next;
                }
                Ok(BidReply::Accepted(r)) => {
                    min_next = r.min_next;
                    load.acks.lock().unwrap().push(Ack {
                        bidder: name.clone(),
                        seq: r.seq,
                        epoch: r.epoch,
                        price: r.price,
                        outcome: r.outcome,
                        at: Instant::now(),
                    });
                }
                Ok(BidReply::Rejected(r)) => {
                    if let Some(m) = r.min_next {
                        min_next = m;
                    }
                    match r.code {
                        ErrorCode::AuctionClosed => return,
                        ErrorCode::Unavailable | ErrorCode::UnknownAuction => {
                            *load.unavailable.lock().unwrap() += 1;
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if let Ok(s) = client.subscribe(&auction, T).await {
                                min_next = s.min_next;
                            }
                        }
                        _ => {}
                    }
                }
                Ok(BidReply::Error(_)) | Err(_) => break,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What a watcher saw.
#[derive(Default, Debug)]
struct Watched {
    resets: Vec<(u64, u64)>,
    epoch: u64,
    seq: u64,
    price: Option<i64>,
    closed: bool,
}

/// A watcher on bid-api 2 (never killed): follows every event, resumes with `since` and
/// `epoch` after a disconnect, and records each `reset`.
async fn watcher(
    url: String,
    auction: String,
    seen: Arc<Mutex<Watched>>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() && !seen.lock().unwrap().closed {
        let Ok(mut client) = WsClient::connect(&url, &Auth::Anonymous).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (since, epoch) = {
            let w = seen.lock().unwrap();
            (w.seq, w.epoch)
        };
        let subscribe = format!(
            r#"{{"type":"subscribe","auction":"{auction}","since":{since},"epoch":{}}}"#,
            epoch.max(1)
        );
        if client.send_text(subscribe).await.is_err() {
            continue;
        }
        while !*stop.borrow() {
            let Ok(message) = client.next(Duration::from_secs(2)).await else {
                if client.ping(Duration::from_secs(2)).await.is_err() {
                    break;
                }
                continue;
            };
            let mut w = seen.lock().unwrap();
            match message {
                ServerMessage::Reset(r) => w.resets.push((r.epoch, r.seq)),
                ServerMessage::Snapshot(s) => {
                    (w.epoch, w.seq, w.price) = (s.epoch, s.seq, s.price);
                }
                ServerMessage::Price(p) => {
                    assert_eq!(p.seq, w.seq + 1, "watcher saw a gap or a repeat: {w:?}");
                    assert!(
                        w.price.is_none_or(|old| p.price >= old),
                        "price went down from {:?} to {}",
                        w.price,
                        p.price
                    );
                    (w.seq, w.price) = (p.seq, Some(p.price));
                }
                ServerMessage::Closed(c) => {
                    w.seq = c.seq;
                    w.closed = true;
                    return;
                }
                _ => {}
            }
        }
    }
}

fn write_manifest(local: &LocalPlatform, spec: &AuctionSpec) {
    let file = manifest_path(&local.manifests, NS, NAME);
    let tmp = local.manifests.join(".lot.tmp");
    std::fs::write(&tmp, spec.to_yaml(NS, NAME).unwrap()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
}

fn status(local: &LocalPlatform) -> serde_yaml::Value {
    let [path, _] = status_paths(&manifest_path(&local.manifests, NS, NAME));
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| serde_yaml::from_str(&t).ok())
        .unwrap_or(serde_yaml::Value::Null)
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A progress line on stderr with the seconds since the test started.
fn progress(what: &str) {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("faults [{t:6.1}s]: {what}");
}

fn acks_so_far(load: &Load) -> usize {
    load.acks.lock().unwrap().len()
}

/// Lets the load run until `more` further bids were accepted.
async fn bids_go_on(load: &Load, more: usize, what: &str) {
    eprintln!(
        "faults: {} bids accepted so far; waiting for {more} more {what}",
        acks_so_far(load)
    );
    let target = acks_so_far(load) + more;
    wait_for(
        &format!("{more} accepted bids {what}"),
        Duration::from_secs(60),
        || acks_so_far(load) >= target,
    )
    .await;
}

/// One recorded event: (epoch, bidder, price, outcome) of a bid, by seq.
type Recorded = BTreeMap<u64, (u64, String, i64, String)>;

async fn recorded(store: &Store, auction: &str) -> Recorded {
    let rows: Vec<(i64, i64, String, i64, String)> = sqlx::query_as(
        "SELECT e.seq, e.epoch, b.bidder_id, b.price_after, b.outcome
         FROM events e JOIN bids b USING (auction_id, seq)
         WHERE e.auction_id = $1 ORDER BY e.seq",
    )
    .bind(auction)
    .fetch_all(store.pool())
    .await
    .unwrap();
    rows.into_iter()
        .map(|(seq, epoch, bidder, price, outcome)| {
            (seq as u64, (epoch as u64, bidder, price, outcome))
        })
        .collect()
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Leading => "leading",
        Outcome::Outbid => "outbid",
        Outcome::CeilingRaised => "ceiling_raised",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_bid_is_lost_or_changed_whatever_fails() {
    progress("building the platform binaries");
    tokio::task::spawn_blocking(build_platform_binaries)
        .await
        .unwrap()
        .expect("build the platform binaries");
    let work = gavel_engine::testing::temp_dir("faults");
    let mut local = LocalPlatform::start(LocalOptions::new(binary_dir().unwrap(), work.clone()))
        .await
        .expect("local platform");
    progress("platform started");
    let auction = format!("{NS}/{NAME}");
    let mut spec = AuctionSpec::new("Fault lot", 100, STEP, Duration::from_secs(600));
    spec.bid_limit = None;
    write_manifest(&local, &spec);
    let store = Store::connect_lazy(&local.database_url).unwrap();
    wait_for("the auction to open", Duration::from_secs(30), || {
        status(&local)["phase"] == "Open"
    })
    .await;

    let load = Arc::new(Load::default());
    let seen = Arc::new(Mutex::new(Watched::default()));
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let url = local.ws_urls[i % 2].clone();
        tasks.push(tokio::spawn(bidder(
            url,
            format!("b{i}"),
            auction.clone(),
            load.clone(),
            stop.clone(),
        )));
    }
    let watching = tokio::spawn(watcher(
        local.ws_urls[1].clone(),
        auction.clone(),
        seen.clone(),
        stop.clone(),
    ));
    bids_go_on(&load, 50, "before any fault").await;

    // 1. Redis killed (SIGKILL) and restarted with the shipped append-only file.
    tokio::task::block_in_place(|| local.redis().expect("one Redis server").restart())
        .expect("redis restarts");
    bids_go_on(&load, 50, "after Redis restarted with its AOF").await;
    assert!(
        seen.lock().unwrap().resets.is_empty(),
        "a restart with AOF lost state"
    );

    // 2. Redis restarts empty: the operator restores the auction from PostgreSQL.
    let wiped_at = Instant::now();
    let epoch_before = load.acks.lock().unwrap().last().unwrap().epoch;
    tokio::task::block_in_place(|| local.redis().expect("one Redis server").restart_empty())
        .expect("redis restarts empty");
    progress("Redis restarted empty");
    wait_for(
        "the watcher's reset after the restore",
        Duration::from_secs(60),
        || !seen.lock().unwrap().resets.is_empty(),
    )
    .await;
    let (restored_epoch, restored_seq) = seen.lock().unwrap().resets[0];
    assert!(
        restored_epoch > epoch_before,
        "the restore did not start a new epoch"
    );
    bids_go_on(&load, 50, "after the restore").await;

    // 3. PostgreSQL down for 20 s: bidding goes on; the backlog drains afterwards.
    tokio::task::block_in_place(|| local.postgres().stop());
    let during = acks_so_far(&load);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(
        acks_so_far(&load) > during + 50,
        "bidding stalled while PostgreSQL was down"
    );
    tokio::task::block_in_place(|| local.postgres().restart()).expect("postgres restarts");
    bids_go_on(&load, 30, "after PostgreSQL came back").await;

    // 4. A bid-api killed with SIGKILL, restarted 2 s later; its bidders reconnect.
    assert!(local.kill("bid-api-1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    local.restart("bid-api-1").await.expect("bid-api-1 back");
    bids_go_on(&load, 50, "after bid-api-1 was killed").await;

    // 5. The operator killed just before the end, restarted after it: closed once, late
    //    only by the restart.
    progress("moving the end 3 s ahead");
    let ends_at = now_ms() + 3_000;
    spec.ends_in = None;
    spec.ends_at = ends_at;
    write_manifest(&local, &spec);
    wait_for("the new end in the status", Duration::from_secs(30), || {
        status(&local)["effectiveEndsAt"]
            .as_str()
            .is_some_and(|e| e.contains(&gavel_crds_time(ends_at)))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(
        (ends_at - now_ms() - 200).max(0) as u64
    ))
    .await;
    assert!(local.kill("operator"));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    local.restart("operator").await.expect("operator back");
    wait_for("the close in the status", Duration::from_secs(60), || {
        status(&local)["phase"] == "Closed"
    })
    .await;
    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    wait_for(
        "the watcher to see the close",
        Duration::from_secs(30),
        || seen.lock().unwrap().closed,
    )
    .await;
    watching.await.unwrap();

    // The record.
    let record = recorded(&store, &auction).await;
    let last = *record.keys().last().unwrap();
    assert_eq!(
        record.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "seq gap in PostgreSQL"
    );
    let mut price = 0;
    for (seq, (_, _, p, _)) in &record {
        assert!(*p >= price, "price went down at seq {seq}: {price} -> {p}");
        price = *p;
    }
    let result = store
        .result(&auction.parse().unwrap())
        .await
        .unwrap()
        .expect("result row");
    assert_eq!(result.bid_count, last, "result bid_count");
    assert_eq!(result.final_price, Some(price), "result final price");
    assert_eq!(result.seq, last + 1, "the close follows the last bid");
    let st = status(&local);
    assert_eq!(st["finalPrice"].as_i64(), Some(price));
    assert_eq!(st["bidCount"].as_u64(), Some(last));
    {
        let w = seen.lock().unwrap();
        assert_eq!(w.seq, result.seq, "the watcher ended on the close");
        assert_eq!(w.price, Some(price));
    }

    // Every acknowledged bid, against the record.
    let acks = load.acks.lock().unwrap().clone();
    let mut lost = Vec::new();
    let mut keys = HashSet::new();
    for ack in &acks {
        assert!(
            keys.insert((ack.epoch, ack.seq)),
            "two acknowledgements of {}#{}",
            ack.epoch,
            ack.seq
        );
        let expected = (
            ack.epoch,
            ack.bidder.clone(),
            ack.price,
            outcome_name(ack.outcome).to_owned(),
        );
        match record.get(&ack.seq) {
            Some(found) if *found == expected => {}
            _ if ack.epoch < restored_epoch && ack.seq > restored_seq && ack.at < wiped_at => {
                lost.push(ack.clone())
            }
            other => panic!("acknowledged bid {ack:?} recorded as {other:?}"),
        }
    }
    let acknowledged = acks.len();
    println!(
        "faults: {acknowledged} bids acknowledged, {} recorded, {} lost with Redis's data \
         (accepted after the last flush before the wipe: seq {}..), {} refused as unavailable; \
         restored at seq {restored_seq} (epoch {restored_epoch}); closed at seq {}",
        acknowledged - lost.len(),
        lost.len(),
        restored_seq + 1,
        load.unavailable.lock().unwrap(),
        result.seq
    );
    let dead: u64 = {
        let engine = gavel_engine::Engine::connect(&local.redis_url, 1)
            .await
            .unwrap();
        fred::interfaces::StreamsInterface::xlen(
            engine.redis(),
            gavel_engine::keys::DEAD_LETTER_KEY,
        )
        .await
        .unwrap()
    };
    assert_eq!(dead, 0, "entries were dead-lettered");
    drop(local);
    let _ = std::fs::remove_dir_all(work);
}

fn gavel_crds_time(ms: i64) -> String {
    // Whole seconds, no zone: the caller appends one.
    gavel_e2e::protocol::format_rfc3339(ms - ms.rem_euclid(1000))
        .trim_end_matches('Z')
        .to_owned()
}
