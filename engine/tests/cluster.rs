//! The engine on a real Redis Cluster (three masters on loopback, `redis-cli --cluster
//! create`): every script call stays in one slot, auctions spread over the masters, the
//! change feed and the flushers cover every shard, and a master killed under load is
//! replaced by its replica with bidding resuming and the record restoring what the
//! asynchronous replica lost.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::*;
use fred::prelude::*;
use gavel_engine::changes::ChangeFeed;
use gavel_engine::client::ScriptKeys;
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::keys::{
    FLUSH_GROUP, FLUSH_SHARDS, SHARD_TAGS, changes_channel, flush_key, key_slot, marker_key,
};
use gavel_engine::restore::restored_state;
use gavel_engine::store::Store;
use gavel_engine::testing::{TestCluster, database_url};
use gavel_engine::{
    AuctionId, BidError, CloseMode, CloseOutcome, Engine, EngineError, RestoreMode,
};

/// One cluster shared by the tests of this process that only touch their own auctions.
fn shared() -> &'static TestCluster {
    static CLUSTER: OnceLock<TestCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| TestCluster::start(3, 0))
}

/// One auction id on each shard (ids from `prefix`), in shard order.
fn one_per_shard(prefix: &str) -> Vec<AuctionId> {
    let mut found: BTreeMap<u16, AuctionId> = BTreeMap::new();
    for i in 0.. {
        let id = AuctionId::new(
            &format!("c{}", std::process::id()),
            &format!("{prefix}-{i}"),
        )
        .unwrap();
        found.entry(id.shard()).or_insert(id);
        if found.len() == usize::from(FLUSH_SHARDS) {
            break;
        }
    }
    found.into_values().collect()
}

async fn connect(cluster: &TestCluster) -> Engine {
    let engine = Engine::connect(&cluster.url(), 2).await.unwrap();
    assert!(engine.is_cluster());
    engine
}

async fn keyslot(engine: &Engine, key: &str) -> u16 {
    let slot: u64 = engine.redis().cluster_keyslot(key).await.unwrap();
    slot as u16
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_call_stays_in_one_slot_and_shards_spread_over_the_masters() {
    let cluster = shared();
    let engine = connect(cluster).await;
    let mut masters_by_shard = Vec::new();
    for (shard, tag) in SHARD_TAGS.iter().enumerate() {
        let shard = shard as u16;
        let slot = keyslot(&engine, tag).await;
        assert_eq!(slot, key_slot(tag), "CLUSTER KEYSLOT {tag}");
        for key in [flush_key(shard), changes_channel(shard), marker_key(shard)] {
            assert_eq!(keyslot(&engine, &key).await, slot, "{key}");
        }
        masters_by_shard.push(cluster.master_of_slot(slot).unwrap());
    }
    // 16 shards over 3 masters: each master owns some, none owns more than 6.
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for port in &masters_by_shard {
        *per_master.entry(*port).or_default() += 1;
    }
    assert_eq!(per_master.len(), 3, "{per_master:?}");
    assert!(
        per_master.values().all(|&n| (5..=6).contains(&n)),
        "{per_master:?}"
    );

    for i in 0..64 {
        let id = AuctionId::new("shop", &format!("lot-{i}.v{}", i % 3)).unwrap();
        let slot = keyslot(&engine, &id.state_key()).await;
        assert_eq!(slot, id.slot());
        for (script, keys) in ScriptKeys::all(&id) {
            for key in &keys {
                assert_eq!(keyslot(&engine, key).await, slot, "{script}: {key}");
            }
        }
        for channel in ScriptKeys::channels(&id) {
            assert_eq!(keyslot(&engine, &channel).await, slot, "{channel}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_script_runs_on_every_shard() {
    let cluster = shared();
    let engine = connect(cluster).await;
    engine.load_scripts().await.unwrap();
    let ids = one_per_shard("scripts");
    let masters: HashSet<u16> = ids
        .iter()
        .map(|id| cluster.master_of_slot(id.slot()).unwrap())
        .collect();
    assert_eq!(masters.len(), 3, "the auctions live on every master");
    for id in &ids {
        engine.provision(id, &open_now(5)).await.unwrap();
        engine.place_bid(id, &bidder("ann"), max(40)).await.unwrap();
        let bo = engine
            .place_bid(id, &bidder("bo"), amount(20))
            .await
            .unwrap();
        assert_eq!((bo.seq, bo.price), (2, 25), "{id}: ann's proxy answers");
        let snap = engine.snapshot(id, Some("ann")).await.unwrap();
        assert_eq!((snap.seq, snap.your_max), (2, Some(40)));
        assert_eq!(engine.events_since(id, 0, 10).await.unwrap().len(), 2);
        // The events reached the shard's flush stream, in the auction's slot.
        let queued: u64 = engine.redis().xlen(id.flush_key()).await.unwrap();
        assert!(queued >= 2, "{id}: {queued} entries on its flush stream");
    }
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            let outcome = engine.close(id, CloseMode::Cancel).await.unwrap();
            assert!(matches!(outcome, CloseOutcome::Closed(r) if r.cancelled));
            engine.remove(id, 3).await.unwrap();
            assert!(matches!(
                engine.snapshot(id, None).await,
                Err(EngineError::UnknownAuction(_))
            ));
        } else {
            assert!(engine.halt(id, 1, "test").await.unwrap());
            let refused = engine.place_bid(id, &bidder("cy"), amount(100)).await;
            assert!(matches!(refused, Err(BidError::Rejected(_))), "{refused:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_hears_every_shard() {
    let cluster = shared();
    let engine = connect(cluster).await;
    let feed = ChangeFeed::start(&engine, Duration::from_millis(100))
        .await
        .unwrap();
    let ids = one_per_shard("feed");
    for id in &ids {
        engine.provision(id, &open_now(5)).await.unwrap();
        engine
            .place_bid(id, &bidder("ann"), amount(10))
            .await
            .unwrap();
    }
    let mut missing: BTreeSet<AuctionId> = ids.iter().cloned().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !missing.is_empty() {
        let changed = tokio::time::timeout_at(deadline, feed.changed())
            .await
            .unwrap_or_else(|_| panic!("no change heard for {missing:?}"));
        for id in changed.auctions {
            missing.remove(&id);
        }
    }
    // A halt is heard too.
    assert!(engine.halt(&ids[3], 1, "test").await.unwrap());
    loop {
        let changed = tokio::time::timeout_at(deadline, feed.changed())
            .await
            .expect("the halt was not heard");
        if changed.auctions.contains(&ids[3]) {
            break;
        }
    }
}

fn flusher(engine: &Engine, store: &Store, name: &str) -> Flusher {
    let mut config = FlusherConfig::new(name);
    config.claim_idle = Duration::from_millis(300);
    config.block = Duration::from_millis(200);
    Flusher::new(engine, store.clone(), config, FlushMetrics::unregistered())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushers_drain_every_shard_and_claim_a_dead_consumers_entries() {
    let cluster = TestCluster::start(3, 0);
    let engine = connect(&cluster).await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let ids = one_per_shard("flush");
    for id in &ids {
        store.upsert_auction(id, &open_now(5)).await.unwrap();
        engine.provision(id, &open_now(5)).await.unwrap();
        for (i, who) in ["ann", "bo", "cy"].iter().enumerate() {
            engine
                .place_bid(id, &bidder(who), amount(10 * (i as i64 + 1)))
                .await
                .unwrap();
        }
    }
    // A consumer that reads every shard's entries and dies before acknowledging them.
    let redis = engine.redis();
    for shard in 0..FLUSH_SHARDS {
        let key = flush_key(shard);
        let _: Value = redis
            .xgroup_create(&key, FLUSH_GROUP, "0", true)
            .await
            .unwrap();
        let read: Value = redis
            .xreadgroup(FLUSH_GROUP, "dead", None, None, false, &key, ">")
            .await
            .unwrap();
        assert!(!read.is_null(), "{key} had entries");
    }
    // Later bids go to the live consumers directly.
    for id in &ids {
        engine
            .place_bid(id, &bidder("dee"), amount(100))
            .await
            .unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = ["f1", "f2"]
        .iter()
        .map(|name| {
            let mut stop = stop_rx.clone();
            tokio::spawn(flusher(&engine, &store, name).run_until(async move {
                let _ = stop.wait_for(|s| *s).await;
            }))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for id in &ids {
        loop {
            let n = store.bid_count(id).await.unwrap();
            if n == 4 {
                break;
            }
            assert!(n < 4, "{id}: {n} bids recorded");
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id}: only {n} of 4 bids recorded"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let seqs: Vec<u64> = store
            .bids(id, 0, 100)
            .await
            .unwrap()
            .iter()
            .map(|b| b.seq)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4], "{id}");
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        task.await.unwrap();
    }
    for shard in 0..FLUSH_SHARDS {
        let left: u64 = redis.xlen(flush_key(shard)).await.unwrap();
        assert_eq!(left, 0, "shard {shard}: flushed entries leave Redis");
    }
}

/// Brings an auction's live state back in line with PostgreSQL, as the operator does:
/// restored when it is missing, halted (a conflict), or behind the record.
async fn heal(engine: &Engine, store: &Store, id: &AuctionId) -> bool {
    let settings = open_now(1);
    let snap = engine.snapshot(id, None).await;
    let durable = store.durable_seq(id).await.unwrap();
    let mode = match &snap {
        Err(EngineError::UnknownAuction(_)) => RestoreMode::Missing,
        Ok(s) if s.halted.is_some() || s.seq < durable => RestoreMode::Replace { epoch: s.epoch },
        Ok(_) => return false,
        Err(e) => panic!("{id}: {e}"),
    };
    let record = store.begin_restore(id).await.unwrap();
    engine
        .restore(id, &restored_state(&settings, &record), mode)
        .await
        .unwrap();
    true
}

#[derive(Clone, Debug)]
struct Acked {
    seq: u64,
    epoch: u64,
    max: i64,
    after_promotion: bool,
}

/// Every event PostgreSQL recorded for the auction: seq → (epoch, max) of its bids.
async fn recorded(store: &Store, id: &AuctionId) -> BTreeMap<u64, (u64, i64)> {
    let mut out = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.events_after(id, after, 1_000).await.unwrap();
        let Some(last) = page.last() else {
            return out;
        };
        after = last.seq();
        for event in page {
            if let gavel_engine::AuctionEvent::Bid(b) = event {
                out.insert(b.seq, (b.epoch, b.max));
            }
        }
    }
}

/// The (auction, epoch, seq) of each dead-lettered event.
async fn dead_letters(engine: &Engine) -> HashSet<(String, u64, u64)> {
    let entries: Vec<(String, HashMap<String, String>)> = engine
        .redis()
        .xrange_values(gavel_engine::keys::DEAD_LETTER_KEY, "-", "+", None)
        .await
        .unwrap();
    entries
        .into_iter()
        .filter_map(|(_, f)| {
            match gavel_engine::AuctionEvent::from_json(f.get("event")?.as_bytes()).ok()? {
                gavel_engine::AuctionEvent::Bid(b) => {
                    Some((f.get("auction")?.clone(), b.epoch, b.seq))
                }
                _ => None,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_under_load_is_replaced_and_bidding_resumes() {
    let mut cluster = TestCluster::start_durable(3, 1);
    let engine = connect(&cluster).await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    // Six auctions: two on each master.
    let mut ids: Vec<AuctionId> = Vec::new();
    let mut per_master: HashMap<u16, usize> = HashMap::new();
    for id in one_per_shard("failover") {
        let master = cluster.master_of_slot(id.slot()).unwrap();
        let n = per_master.entry(master).or_default();
        if *n < 2 {
            *n += 1;
            ids.push(id);
        }
    }
    assert_eq!(ids.len(), 6);
    for id in &ids {
        store.upsert_auction(id, &open_now(1)).await.unwrap();
        engine.provision(id, &open_now(1)).await.unwrap();
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut flush_stop = stop_rx.clone();
    let flushing = tokio::spawn(flusher(&engine, &store, "f").run_until(async move {
        let _ = flush_stop.wait_for(|s| *s).await;
    }));
    let promoted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<Mutex<HashMap<AuctionId, Vec<Acked>>>> = Arc::default();
    let load: Vec<_> = ids
        .iter()
        .cloned()
        .map(|id| {
            let (engine, acked, promoted) = (engine.clone(), acked.clone(), promoted.clone());
            let stop = stop_rx.clone();
            tokio::spawn(async move {
                let mut n = 0i64;
                while !*stop.borrow() {
                    n += 1;
                    let who = if n % 2 == 0 { "ann" } else { "bo" };
                    let after_promotion = promoted.load(std::sync::atomic::Ordering::SeqCst);
                    match engine.place_bid(&id, &bidder(who), max(n * 10)).await {
                        // A leader's private raise (after a lost bid) has no seq of its own.
                        Ok(bid) if bid.outcome == gavel_engine::Outcome::CeilingRaised => {}
                        Ok(bid) => {
                            acked
                                .lock()
                                .unwrap()
                                .entry(id.clone())
                                .or_default()
                                .push(Acked {
                                    seq: bid.seq,
                                    epoch: bid.epoch,
                                    max: bid.max,
                                    after_promotion,
                                })
                        }
                        // The shard is failing over (or halted, until healed): try again.
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    let count = |acked: &Mutex<HashMap<AuctionId, Vec<Acked>>>, id: &AuctionId, after: bool| {
        acked.lock().unwrap().get(id).map_or(0, |v| {
            v.iter().filter(|a| a.after_promotion == after).count()
        })
    };
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    tokio::task::block_in_place(|| {
        wait_for("bids on every auction", &|| {
            ids.iter().all(|id| count(&acked, id, false) >= 20)
        })
    });
    let victim = ids[0].clone();
    let old = cluster.master_of_slot(victim.slot()).unwrap();
    let failed: HashSet<AuctionId> = ids
        .iter()
        .filter(|id| cluster.master_of_slot(id.slot()) == Some(old))
        .cloned()
        .collect();
    assert_eq!(failed.len(), 2);
    tokio::task::block_in_place(|| {
        cluster.kill(old);
        let new = cluster.wait_failover(victim.slot(), old);
        assert_ne!(new, old);
    });
    promoted.store(true, std::sync::atomic::Ordering::SeqCst);
    // Bidding resumes on every auction, those of the failed shard included (a conflict
    // found by the flusher halts an auction until it is healed, as the operator would).
    tokio::task::block_in_place(|| {
        wait_for("bids after the failover", &|| {
            let rt = tokio::runtime::Handle::current();
            for id in &ids {
                rt.block_on(heal(&engine, &store, id));
            }
            ids.iter().all(|id| count(&acked, id, true) >= 10)
        })
    });
    let _ = stop_tx.send(true);
    for task in load {
        task.await.unwrap();
    }
    flushing.await.unwrap();
    let mut f = flusher(&engine, &store, "f");
    f.drain(Duration::from_secs(10)).await.unwrap();
    for id in &ids {
        heal(&engine, &store, id).await;
    }

    let acked = acked.lock().unwrap().clone();
    let dead = dead_letters(&engine).await;
    let (mut lost, mut dead_lettered) = (0, 0);
    for id in &ids {
        // PostgreSQL holds each seq once, with no gap; Redis agrees with it.
        let recorded = recorded(&store, id).await;
        let seqs: Vec<u64> = recorded.keys().copied().collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{id}");
        let snap = engine.snapshot(id, None).await.unwrap();
        assert_eq!(snap.seq, store.durable_seq(id).await.unwrap(), "{id}");
        assert_eq!(snap.halted, None, "{id}");
        for a in &acked[id] {
            if recorded.get(&a.seq) == Some(&(a.epoch, a.max)) {
                continue;
            }
            // Only the failed master's shard may lose acknowledged bids: those it had not
            // replicated nor flushed when it died, and those its promoted replica accepted
            // on a state behind the record before it was healed, which are kept in the
            // dead-letter stream.
            assert!(
                failed.contains(id),
                "{id}: a bid of a shard that did not fail over is not recorded: {a:?}"
            );
            assert!(
                !a.after_promotion || dead.contains(&(id.to_string(), a.epoch, a.seq)),
                "{id}: a bid acknowledged after the promotion is neither recorded nor dead-lettered: {a:?}"
            );
            if dead.contains(&(id.to_string(), a.epoch, a.seq)) {
                dead_lettered += 1;
            } else {
                lost += 1;
            }
        }
    }
    println!(
        "failover: {} acknowledged bids; {lost} lost with the killed master (neither replicated nor flushed), {dead_lettered} accepted by the promoted replica on a state behind the record (dead-lettered until healed)",
        acked.values().map(Vec::len).sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_memory_is_sampled_on_every_master() {
    let cluster = shared();
    let engine = connect(cluster).await;
    let stats = gavel_engine::redis_stats::RedisStats::unregistered().unwrap();
    stats.sample(&engine).await.unwrap();
    assert!(stats.used_memory.get() > 0);
    assert_eq!(stats.oom_refusals.get(), 0);
}
