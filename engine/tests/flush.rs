//! Concurrency and durability: many bidders at once, the flusher under faults.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use common::*;
use fred::prelude::*;
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::keys::{DEAD_LETTER_KEY, FLUSH_GROUP};
use gavel_engine::store::Store;
use gavel_engine::testing::{TestPostgres, create_database, database_url};
use gavel_engine::{AuctionEvent, AuctionId, AuctionModel, BidError, BidRequest, Engine, Outcome};

/// One stream entry as fred returns it.
type Entry = (String, HashMap<String, String>);

fn flusher(engine: &Engine, store: &Store, name: &str) -> (Flusher, FlushMetrics) {
    let metrics = FlushMetrics::unregistered();
    let mut config = FlusherConfig::new(name);
    config.claim_idle = Duration::from_millis(300);
    config.max_attempts = 3;
    config.block = Duration::from_millis(50);
    (
        Flusher::new(engine, store.clone(), config, metrics.clone()),
        metrics,
    )
}

/// Waits until PostgreSQL holds `n` bids of the auction (or fails after 60s).
async fn wait_for_bids(store: &Store, id: &AuctionId, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let count = store.bid_count(id).await.unwrap_or(0);
        if count == n {
            return;
        }
        assert!(
            count < n,
            "more bids in PostgreSQL ({count}) than accepted ({n})"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {n} bids flushed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Events Redis accepted that PostgreSQL does not hold yet.
async fn unflushed(engine: &Engine, store: &Store, id: &AuctionId) -> u64 {
    let seq = engine.snapshot(id, None).await.unwrap().seq;
    seq - store.event_count(id).await.unwrap()
}

async fn seqs_in_db(store: &Store, id: &AuctionId) -> Vec<u64> {
    store
        .bids(id, 0, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bidders_end_as_the_model_replayed_in_seq_order() {
    let (engine, _redis) = engine().await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let id = auction_id();
    let settings = open_now(3);
    engine.provision(&id, &settings).await.unwrap();
    let (flusher, _) = flusher(&engine, &store, "f1");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let flushing = tokio::spawn(flusher.run_until(async {
        let _ = stop_rx.await;
    }));

    let tasks: Vec<_> = (0..16)
        .map(|t| {
            let (engine, id) = (engine.clone(), id.clone());
            tokio::spawn(async move {
                let who = bidder(&format!("bidder-{t}"));
                let (mut accepted, mut raised) = (Vec::new(), Vec::new());
                for i in 0..40i64 {
                    let snap = engine.snapshot(&id, None).await.unwrap();
                    let req = if i % 3 == 0 {
                        BidRequest {
                            amount: None,
                            max: Some(snap.min_next + 10 * t),
                        }
                    } else {
                        BidRequest {
                            amount: Some(snap.min_next + (i % 4)),
                            max: None,
                        }
                    };
                    match engine.place_bid(&id, &who, req).await {
                        // A leader's private raise has no seq of its own: it follows `r.seq`.
                        Ok(r) if r.outcome == Outcome::CeilingRaised => {
                            raised.push((r.seq, r.max, who.id.clone()))
                        }
                        Ok(r) => accepted.push(r.seq),
                        Err(BidError::Rejected(_)) => {}
                        Err(e) => panic!("engine error: {e}"),
                    }
                }
                (accepted, raised)
            })
        })
        .collect();
    let mut accepted = BTreeSet::new();
    let mut raises = Vec::new();
    for task in tasks {
        let (seqs, raised) = task.await.unwrap();
        for seq in seqs {
            assert!(accepted.insert(seq), "seq {seq} given to two bids");
        }
        raises.extend(raised);
    }
    // Raises after one event come from its leader, each above the last.
    raises.sort();
    let n = accepted.len() as u64;
    assert!(n > 16, "too few accepted bids ({n}) to prove anything");
    assert_eq!(accepted, (1..=n).collect(), "seq has gaps");

    // Replaying the stream through the model in seq order gives the same bids and state.
    let events = engine.events_since(&id, 0, 100_000).await.unwrap();
    let mut model = AuctionModel::new(settings);
    for event in &events {
        let AuctionEvent::Bid(bid) = event else {
            panic!("unexpected {event:?}")
        };
        let req = BidRequest {
            amount: Some(bid.amount),
            max: Some(bid.max),
        };
        let replayed = model
            .place_bid(&bid.bidder, &bid.name, req, bid.at)
            .unwrap();
        assert_eq!(replayed, bid.clone().into(), "replay of seq {}", bid.seq);
        for (_, max, who) in raises.iter().filter(|(seq, _, _)| *seq == bid.seq) {
            let req = BidRequest {
                amount: None,
                max: Some(*max),
            };
            let r = model.place_bid(who, who, req, bid.at).unwrap();
            assert_eq!((r.outcome, r.seq), (Outcome::CeilingRaised, bid.seq));
        }
    }
    let snap = engine.snapshot(&id, None).await.unwrap();
    assert_eq!(snap.price, Some(model.state().price));
    assert_eq!(
        snap.leader,
        model.state().leader.as_ref().map(|l| l.bidder.clone())
    );
    assert_eq!(snap.seq, n);

    wait_for_bids(&store, &id, n).await;
    assert_eq!(seqs_in_db(&store, &id).await, (1..=n).collect::<Vec<_>>());
    let _ = stop_tx.send(());
    flushing.await.unwrap();
    assert_eq!(unflushed(&engine, &store, &id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_killed_between_write_and_ack_loses_and_duplicates_nothing() {
    let (engine, _redis) = engine().await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let id = auction_id();
    engine.provision(&id, &settings(1)).await.unwrap();
    for i in 0..30 {
        let who = bidder(if i % 2 == 0 { "a" } else { "b" });
        engine
            .place_bid_at(&id, &who, amount(10 + i), Some(2_000))
            .await
            .unwrap();
    }
    // A consumer reads 20 entries, commits them to PostgreSQL, and dies before XACK.
    let _: Value = engine
        .redis()
        .xgroup_create(id.flush_key(), FLUSH_GROUP, "0", true)
        .await
        .unwrap();
    let entries: HashMap<String, Vec<Entry>> = engine
        .redis()
        .xreadgroup_map(
            FLUSH_GROUP,
            "doomed",
            Some(20),
            None,
            false,
            id.flush_key(),
            ">",
        )
        .await
        .unwrap();
    let events: Vec<AuctionEvent> = entries[&id.flush_key()]
        .iter()
        .map(|(_, f)| AuctionEvent::from_json(f["e"].as_bytes()).unwrap())
        .collect();
    store.write_events(&id, &events).await.unwrap();
    assert_eq!(store.bid_count(&id).await.unwrap(), 20);
    assert_eq!(
        unflushed(&engine, &store, &id).await,
        10,
        "20 written (pending in Redis) + 10 undelivered"
    );

    // A live consumer flushes the rest and, once they are idle long enough, claims the
    // dead one's entries and writes them again without duplicating them.
    let (mut live, metrics) = flusher(&engine, &store, "survivor");
    live.pass(None).await.unwrap();
    assert_eq!(store.bid_count(&id).await.unwrap(), 30);
    tokio::time::sleep(Duration::from_millis(400)).await;
    live.pass(None).await.unwrap();
    live.pass(None).await.unwrap();
    assert_eq!(
        unflushed(&engine, &store, &id).await,
        0,
        "claimed entries not acknowledged"
    );
    assert_eq!(seqs_in_db(&store, &id).await, (1..=30).collect::<Vec<_>>());
    assert_eq!(
        metrics.written.get(),
        10,
        "the 20 replayed events were already there"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_mid_stream_bidding_goes_on_and_the_backlog_drains() {
    let (engine, _redis) = engine().await;
    let mut pg = tokio::task::spawn_blocking(TestPostgres::start)
        .await
        .unwrap();
    let url = create_database(&pg.url(), "gavel").await;
    let store = Store::connect_lazy(&url).unwrap();
    let id = auction_id();
    engine.provision(&id, &open_now(1)).await.unwrap();
    let (flusher, metrics) = flusher(&engine, &store, "f1");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let flushing = tokio::spawn(flusher.run_until(async {
        let _ = stop_rx.await;
    }));

    let mut price = 0;
    let mut bid = |who: &'static str| {
        price += 1;
        let (engine, id) = (engine.clone(), id.clone());
        let a = price;
        async move {
            engine
                .place_bid(&id, &bidder(who), amount(a))
                .await
                .unwrap()
                .seq
        }
    };
    for i in 0..20 {
        bid(if i % 2 == 0 { "a" } else { "b" }).await;
    }
    wait_for_bids(&store, &id, 20).await;

    let mut pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    for i in 0..40 {
        bid(if i % 2 == 0 { "a" } else { "b" }).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.failures.get() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flusher never noticed PostgreSQL was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let queued: u64 = engine.redis().xlen(id.flush_key()).await.unwrap();
    assert!(
        queued > 0,
        "nothing waits in Redis while PostgreSQL is down"
    );

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart();
        pg
    })
    .await
    .unwrap();
    wait_for_bids(&store, &id, 60).await;
    assert_eq!(seqs_in_db(&store, &id).await, (1..=60).collect::<Vec<_>>());
    let _ = stop_tx.send(());
    flushing.await.unwrap();
    assert_eq!(unflushed(&engine, &store, &id).await, 0);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_entries_go_to_the_dead_letter_stream_without_blocking_the_rest() {
    let (engine, _redis) = engine().await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let id = auction_id();
    engine.provision(&id, &settings(1)).await.unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), amount(5), Some(2_000))
        .await
        .unwrap();
    // Entries only a bug or a hand could write: unparseable, and refused by PostgreSQL.
    let redis = engine.redis();
    let auction = id.to_string();
    let _: String = redis
        .xadd(
            id.flush_key(),
            false,
            None,
            "*",
            vec![("a", auction.as_str()), ("e", "not json")],
        )
        .await
        .unwrap();
    let refused = r#"{"kind":"bid","seq":77,"at":2000,"bidder":"x","name":"X","amount":0,"max":0,
        "outcome":"leading","price":0,"min_next":1,"leader":"x","leader_name":"X","bid_count":1,
        "ends_at":9,"extended":false,"displaced":null,"reserve_met":true}"#;
    let _: String = redis
        .xadd(
            id.flush_key(),
            false,
            None,
            "*",
            vec![("a", auction.as_str()), ("e", refused)],
        )
        .await
        .unwrap();
    for i in 0..5 {
        engine
            .place_bid_at(&id, &bidder(&format!("b{i}")), amount(6 + i), Some(2_000))
            .await
            .unwrap();
    }

    let (mut f, metrics) = flusher(&engine, &store, "f1");
    for _ in 0..5 {
        f.pass(None).await.unwrap();
    }
    assert_eq!(seqs_in_db(&store, &id).await, (1..=6).collect::<Vec<_>>());
    assert_eq!(metrics.dead_letters.get(), 2);
    let dead: Vec<Entry> = redis
        .xrange_values(DEAD_LETTER_KEY, "-", "+", None)
        .await
        .unwrap();
    let events: BTreeSet<&str> = dead.iter().map(|(_, f)| f["event"].as_str()).collect();
    assert_eq!(events, BTreeSet::from(["not json", refused]));
    assert!(
        dead.iter()
            .all(|(_, f)| f["auction"] == id.to_string() && !f["error"].is_empty())
    );
    assert_eq!(unflushed(&engine, &store, &id).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_auction_is_flushed_with_its_result_and_can_leave_redis() {
    let (engine, _redis) = engine().await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let id = auction_id();
    let s = settings(1);
    store.upsert_auction(&id, &s).await.unwrap();
    engine.provision(&id, &s).await.unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), amount(5), Some(2_000))
        .await
        .unwrap();
    let closed = engine
        .close_at(&id, gavel_engine::CloseMode::Cancel, Some(3_000))
        .await
        .unwrap();
    let gavel_engine::CloseOutcome::Closed(result) = closed else {
        panic!("{closed:?}")
    };
    let (mut f, _) = flusher(&engine, &store, "f1");
    f.pass(None).await.unwrap();
    assert_eq!(store.result(&id).await.unwrap(), Some(result.clone()));
    // Recording the same result again (the operator does) changes nothing.
    store.record_result(&id, &result).await.unwrap();
    assert_eq!(store.result(&id).await.unwrap(), Some(result));
    // Every event is in PostgreSQL, so the live state may go.
    engine
        .remove(&id, store.event_count(&id).await.unwrap())
        .await
        .unwrap();
    let history = store.bids(&id, 0, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!((history[0].bidder.as_str(), history[0].amount), ("A", 5));
}

/// A close storm's results are written in one statement per flush batch: each auction
/// gets its own result (winner or none, cancelled or not) from one flusher pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_results_of_many_closes_are_recorded_in_one_pass() {
    let (engine, _redis) = engine().await;
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let mut closed = Vec::new();
    for k in 0..5i64 {
        let id = auction_id();
        let s = settings(1);
        store.upsert_auction(&id, &s).await.unwrap();
        engine.provision(&id, &s).await.unwrap();
        if k % 2 == 0 {
            engine
                .place_bid_at(&id, &bidder(&format!("b{k}")), amount(5 + k), Some(2_000))
                .await
                .unwrap();
        }
        let mode = if k == 4 {
            gavel_engine::CloseMode::Cancel
        } else {
            gavel_engine::CloseMode::AtEnd
        };
        let outcome = engine
            .close_at(&id, mode, Some(1_000_000_001))
            .await
            .unwrap();
        let gavel_engine::CloseOutcome::Closed(result) = outcome else {
            panic!("{outcome:?}")
        };
        closed.push((id, result));
    }
    assert!(closed[0].1.winner.is_some() && closed[1].1.winner.is_none());
    assert!(closed[4].1.cancelled && !closed[0].1.cancelled);
    let (mut f, _) = flusher(&engine, &store, "storm");
    f.pass(None).await.unwrap();
    for (id, result) in &closed {
        assert_eq!(
            store.result(id).await.unwrap().as_ref(),
            Some(result),
            "{id}"
        );
    }
}
