//! Durability: Redis loses an auction's state; PostgreSQL's record restores it, and a
//! live state that contradicts the record is detected, halted and never overwrites it.

mod common;

use std::time::Duration;

use common::*;
use fred::prelude::*;
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::keys::DEAD_LETTER_KEY;
use gavel_engine::restore::restored_state;
use gavel_engine::store::Store;
use gavel_engine::testing::database_url;
use gavel_engine::{
    AuctionId, BidError, BidRequest, Engine, RejectCode, RestoreMode, Restored, Snapshot,
};

fn flusher(engine: &Engine, store: &Store) -> (Flusher, FlushMetrics) {
    let metrics = FlushMetrics::unregistered();
    let mut config = FlusherConfig::new("f");
    config.block = Duration::from_millis(20);
    (
        Flusher::new(engine, store.clone(), config, metrics.clone()),
        metrics,
    )
}

async fn flush_all(f: &mut Flusher) {
    f.drain(Duration::from_secs(10)).await.unwrap();
}

/// The facts a restore must bring back: everything but the clock, epoch and ids.
fn facts(
    s: &Snapshot,
) -> (
    Option<i64>,
    Option<String>,
    u64,
    u64,
    i64,
    bool,
    Option<i64>,
) {
    (
        s.price,
        s.leader.clone(),
        s.bid_count,
        s.seq,
        s.ends_at,
        s.reserve_met,
        s.your_max,
    )
}

async fn some_bids(engine: &Engine, id: &AuctionId) {
    // Proxy bids, a ceiling raise reaching the reserve (public), a soft-close extension
    // (window 500 ms before 10^9), and the leader's private raise (no event) at the end.
    let at = Some(1_000_000_000 - 100);
    for (who, req) in [
        (
            "ann",
            BidRequest {
                amount: Some(10),
                max: Some(50),
            },
        ),
        (
            "bo",
            BidRequest {
                amount: Some(20),
                max: None,
            },
        ),
        (
            "cy",
            BidRequest {
                amount: None,
                max: Some(40),
            },
        ),
        (
            "ann",
            BidRequest {
                amount: None,
                max: Some(80),
            },
        ),
        (
            "bo",
            BidRequest {
                amount: Some(90),
                max: Some(100),
            },
        ),
        (
            "bo",
            BidRequest {
                amount: None,
                max: Some(150),
            },
        ),
    ] {
        engine
            .place_bid_at(id, &bidder(who), req, at)
            .await
            .unwrap();
    }
}

fn soft_closing() -> gavel_engine::AuctionSettings {
    let mut s = settings(2);
    s.reserve_price = Some(75);
    s.soft_close = Some(gavel_engine::SoftClose {
        window_ms: 500,
        extension_ms: 1_000,
    });
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_redis_is_restored_from_postgres_with_every_fact_and_ceiling() {
    let (engine, _redis) = engine().await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let id = auction_id();
    let s = soft_closing();
    store.upsert_auction(&id, &s).await.unwrap();
    engine.provision(&id, &s).await.unwrap();
    some_bids(&engine, &id).await;
    let (mut f, _) = flusher(&engine, &store);
    flush_all(&mut f).await;
    let mut before = Vec::new();
    for who in ["ann", "bo", "cy", "nobody"] {
        before.push(facts(&engine.snapshot(&id, Some(who)).await.unwrap()));
    }
    assert!(before[0].4 > 1_000_000_000, "the bids extended the end");

    let _: () = engine.redis().flushall(false).await.unwrap();
    assert!(engine.snapshot(&id, None).await.is_err(), "state is gone");

    let record = store.begin_restore(&id).await.unwrap();
    assert_eq!((record.epoch, record.seq), (2, 5));
    let state = restored_state(&s, &record);
    assert_eq!(
        engine
            .restore(&id, &state, RestoreMode::Missing)
            .await
            .unwrap(),
        Restored::Restored
    );
    // A second restorer finds the state and changes nothing.
    assert_eq!(
        engine
            .restore(&id, &state, RestoreMode::Missing)
            .await
            .unwrap(),
        Restored::Superseded
    );
    for (who, expected) in ["ann", "bo", "cy", "nobody"].iter().zip(&before) {
        let after = engine.snapshot(&id, Some(who)).await.unwrap();
        assert_eq!(&facts(&after), expected, "{who}");
        assert_eq!(after.epoch, 2);
    }
    assert_eq!(before[1].6, Some(150), "bo's private raise");
    let (raises,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM ceiling_raises WHERE auction_id = $1 AND bidder_id = 'bo'
             AND max_amount = 150 AND after_seq = 5",
    )
    .bind(id.to_string())
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(raises, 1, "the private raise is recorded once");
    // The restored leader's ceiling is its raised one: a max of 140 does not take the lead.
    let r = engine
        .place_bid_at(&id, &bidder("dee"), max(140), Some(1_000_000_000 - 60))
        .await
        .unwrap();
    assert_eq!(
        (r.outcome, r.leader.as_str(), r.price, r.seq),
        (gavel_engine::Outcome::Outbid, "bo", 142, 6)
    );
    // Bidding goes on after the restored seq, under the new epoch, and reaches PostgreSQL
    // gap-free.
    let next = engine
        .place_bid_at(&id, &bidder("cy"), amount(200), Some(1_000_000_000 - 50))
        .await
        .unwrap();
    assert_eq!(next.seq, 7);
    flush_all(&mut f).await;
    let seqs: Vec<u64> = store
        .bids(&id, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    let replay = store.events_after(&id, 4, 10).await.unwrap();
    assert_eq!(
        replay.iter().map(|e| e.seq()).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    match &replay[1] {
        gavel_engine::AuctionEvent::Bid(b) => assert_eq!(b.epoch, 2),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_seq_is_a_counted_conflict_that_halts_the_auction_until_restored() {
    let (engine, _redis) = engine().await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let id = auction_id();
    let s = settings(1);
    store.upsert_auction(&id, &s).await.unwrap();
    engine.provision(&id, &s).await.unwrap();
    for (who, a) in [("ann", 10), ("bo", 20), ("ann", 30)] {
        engine
            .place_bid_at(&id, &bidder(who), amount(a), Some(2_000))
            .await
            .unwrap();
    }
    let (mut f, metrics) = flusher(&engine, &store);
    flush_all(&mut f).await;
    let recorded = store.bids(&id, 0, 10).await.unwrap();

    // Redis loses everything and the auction is provisioned as new (what a naive operator
    // did): the next bid reuses seq 1 with other content.
    let _: () = engine.redis().flushall(false).await.unwrap();
    engine.provision(&id, &s).await.unwrap();
    let reused = engine
        .place_bid_at(&id, &bidder("cy"), amount(5), Some(2_000))
        .await
        .unwrap();
    assert_eq!(reused.seq, 1);
    flush_all(&mut f).await;
    assert_eq!(metrics.conflicts.get(), 1);
    assert_eq!(
        store.bids(&id, 0, 10).await.unwrap(),
        recorded,
        "the record changed"
    );
    let dead: Vec<(String, std::collections::HashMap<String, String>)> = engine
        .redis()
        .xrange_values(DEAD_LETTER_KEY, "-", "+", None)
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].1["error"].starts_with("conflict"),
        "{:?}",
        dead[0].1
    );
    assert!(dead[0].1["event"].contains(r#""bidder":"cy""#));

    // Halted: bids are refused as unavailable, the close waits, the snapshot says why.
    match engine
        .place_bid_at(&id, &bidder("cy"), amount(50), Some(2_000))
        .await
    {
        Err(BidError::Rejected(r)) => {
            assert_eq!(r.code, RejectCode::Unavailable);
            assert!(r.retry_after_ms.is_some());
        }
        other => panic!("{other:?}"),
    }
    assert!(engine.snapshot(&id, None).await.unwrap().halted.is_some());
    assert!(matches!(
        engine
            .close_at(&id, gavel_engine::CloseMode::Cancel, Some(3_000))
            .await,
        Err(gavel_engine::EngineError::Halted(_))
    ));

    // The restore replaces the halted state (only at the epoch it saw) and bidding resumes
    // after the recorded seq.
    let record = store.begin_restore(&id).await.unwrap();
    let state = restored_state(&s, &record);
    assert_eq!(
        engine
            .restore(&id, &state, RestoreMode::Replace { epoch: 7 })
            .await
            .unwrap(),
        Restored::Superseded
    );
    assert_eq!(
        engine
            .restore(&id, &state, RestoreMode::Replace { epoch: 1 })
            .await
            .unwrap(),
        Restored::Restored
    );
    let snap = engine.snapshot(&id, None).await.unwrap();
    assert_eq!((snap.seq, snap.price, snap.halted), (3, Some(30), None));
    let next = engine
        .place_bid_at(&id, &bidder("bo"), amount(40), Some(2_000))
        .await
        .unwrap();
    assert_eq!(next.seq, 4);
    flush_all(&mut f).await;
    let seqs: Vec<u64> = store
        .bids(&id, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert_eq!(
        metrics.conflicts.get(),
        1,
        "no new conflict after the restore"
    );
}

/// `CONFIG SET maxmemory` through `redis-cli` (from redis-tools, like redis-benchmark).
fn set_maxmemory(port: u16, bytes: &str) {
    let status = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "CONFIG", "SET", "maxmemory", bytes])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("redis-cli (Debian package redis-tools)");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_bids_before_running_the_script_and_recovers() {
    let redis = gavel_engine::testing::TestRedis::start_with(&[
        "--save",
        "",
        "--maxmemory",
        "64mb",
        "--maxmemory-policy",
        "noeviction",
    ]);
    let engine = Engine::connect(&redis.url(), 1).await.unwrap();
    let id = auction_id();
    engine.provision(&id, &settings(1)).await.unwrap();
    engine
        .place_bid_at(&id, &bidder("ann"), amount(10), Some(2_000))
        .await
        .unwrap();
    let before = engine.snapshot(&id, Some("ann")).await.unwrap();
    // The exported gauges say how close Redis is to refusing.
    let stats = gavel_engine::redis_stats::RedisStats::unregistered().unwrap();
    stats.sample(&engine).await.unwrap();
    assert_eq!(stats.maxmemory.get(), 64 * 1024 * 1024);
    assert!(stats.used_memory.get() > 0);
    assert_eq!(stats.oom_refusals.get(), 0);
    // Redis over its memory limit (a cap below what it uses).
    set_maxmemory(redis.port(), "1");
    for who in ["bo", "cy"] {
        match engine
            .place_bid_at(&id, &bidder(who), amount(50), Some(2_000))
            .await
        {
            Err(BidError::Engine(e)) => assert!(e.to_string().contains("OOM"), "{e}"),
            other => panic!("a full Redis accepted or rejected a bid: {other:?}"),
        }
    }
    // Both refusals are counted.
    stats.sample(&engine).await.unwrap();
    assert_eq!(stats.oom_refusals.get(), 2);
    assert_eq!(stats.maxmemory.get(), 1);
    // Reads still work, and nothing was half-applied.
    let during = engine.snapshot(&id, Some("ann")).await.unwrap();
    assert_eq!(facts(&during), facts(&before));
    let queued: u64 = engine.redis().xlen(id.flush_key()).await.unwrap();
    assert_eq!(queued, 1, "only the first bid is queued for PostgreSQL");
    // Memory available again: bidding resumes where it was.
    set_maxmemory(redis.port(), "0");
    let next = engine
        .place_bid_at(&id, &bidder("bo"), amount(50), Some(2_000))
        .await
        .unwrap();
    assert_eq!(next.seq, 2);
}
