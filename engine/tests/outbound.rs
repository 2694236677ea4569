//! The event feed's outbox on a real PostgreSQL: the flusher's write queues the public
//! events of what it newly records, once (a replayed batch queues nothing), with the
//! auction's currency and epoch; the fan-out moves them to the sinks' deliveries, or drops
//! them when no sink is configured.

use gavel_engine::outbound::{FeedStore, types};
use gavel_engine::rules::{AuctionResult, Outcome};
use gavel_engine::store::Store;
use gavel_engine::testing::database_url;
use gavel_engine::{AuctionEvent, AuctionId, AuctionSettings, BidEvent, Increments, Tier};

fn settings() -> AuctionSettings {
    AuctionSettings {
        title: "Lot".into(),
        currency: "EUR".into(),
        starting_price: 100,
        reserve_price: Some(5_000),
        increments: Increments::new(vec![Tier { from: 0, step: 10 }]).unwrap(),
        starts_at: None,
        ends_at: 4_102_444_800_000,
        soft_close: None,
        bid_limit: None,
    }
}

fn bid(seq: u64, bidder: &str, displaced: Option<&str>, extended: bool) -> AuctionEvent {
    AuctionEvent::Bid(BidEvent {
        seq,
        epoch: 1,
        at: 1_000 + seq as i64,
        bidder: bidder.into(),
        name: bidder.into(),
        amount: 100 + 10 * seq as i64,
        max: 77_777,
        outcome: Outcome::Leading,
        price: 100 + 10 * seq as i64,
        min_next: 110 + 10 * seq as i64,
        leader: bidder.into(),
        leader_name: bidder.into(),
        bid_count: seq,
        ends_at: 4_102_444_800_000,
        extended,
        displaced: displaced.map(Into::into),
        reserve_met: false,
        ceiling: Some(77_777),
    })
}

async fn outbox(store: &Store) -> Vec<(String, i64, String)> {
    sqlx::query_as("SELECT event_id, epoch, event::text FROM feed_outbox ORDER BY seq, rank")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn recorded_events_are_queued_once_public_and_fanned_out() {
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let id: AuctionId = "shop/outbox".parse().unwrap();
    store.upsert_auction(&id, &settings()).await.unwrap();
    let closed = AuctionEvent::Closed(AuctionResult {
        seq: 3,
        winner: None,
        winner_name: None,
        final_price: Some(120),
        reserve_met: false,
        bid_count: 2,
        closed_at: 2_000,
        cancelled: false,
    });
    let events = vec![
        bid(1, "a", None, false),
        bid(2, "b", Some("a"), true),
        closed,
    ];
    store.write_events(&id, &events).await.unwrap();
    let first = outbox(&store).await;
    let ids: Vec<&str> = first.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "shop/outbox/1/bid.accepted",
            "shop/outbox/2/bid.accepted",
            "shop/outbox/2/bidder.outbid",
            "shop/outbox/2/auction.extended",
            "shop/outbox/3/auction.closed",
        ]
    );
    for (event_id, epoch, json) in &first {
        assert_eq!(*epoch, 1, "{event_id}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["data"]["currency"], "EUR", "{event_id}");
        assert_eq!(v["gavelepoch"], 1, "{event_id}");
        assert!(!json.contains("77777") && !json.contains("5000"), "{json}");
    }
    // A replayed batch (a flusher crashed between commit and ack) queues nothing more.
    store.write_events(&id, &events).await.unwrap();
    assert_eq!(outbox(&store).await.len(), first.len());

    let feed = FeedStore::new(store.pool().clone());
    assert_eq!(feed.fan_out(2, true, true).await.unwrap(), 2);
    assert_eq!(feed.fan_out(100, true, true).await.unwrap(), 3);
    assert!(outbox(&store).await.is_empty());
    // Only the cluster sink: the auction has none of its own.
    let waiting = feed.waiting("cluster", "shop/outbox", 100).await.unwrap();
    assert_eq!(waiting.len(), 5);
    assert_eq!(waiting[4].ty(), types::CLOSED);
    assert!(
        feed.waiting("auction", "shop/outbox", 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        feed.cursor("cluster", "shop/outbox").await.unwrap(),
        (-1, 0)
    );

    // With its own sink, and the feed off: queued events are dropped, never accumulated.
    feed.set_sink(&id, Some("http://127.0.0.1:9/x"))
        .await
        .unwrap();
    assert_eq!(
        feed.sink_uri("shop/outbox").await.unwrap().as_deref(),
        Some("http://127.0.0.1:9/x")
    );
    store
        .write_events(&id, &[bid(4, "a", Some("b"), false)])
        .await
        .unwrap();
    assert_eq!(feed.fan_out(100, false, false).await.unwrap(), 2);
    assert!(outbox(&store).await.is_empty());
    assert_eq!(
        feed.waiting("cluster", "shop/outbox", 100)
            .await
            .unwrap()
            .len(),
        5
    );
    store
        .write_events(&id, &[bid(5, "b", Some("a"), false)])
        .await
        .unwrap();
    feed.fan_out(100, false, true).await.unwrap();
    let own = feed.waiting("auction", "shop/outbox", 100).await.unwrap();
    assert_eq!(own.len(), 2);
    // A sink that starts mid-auction starts at its first event.
    assert_eq!(feed.cursor("auction", "shop/outbox").await.unwrap(), (4, 0));
}

/// One dispatcher at a time: the lock is held until its connection goes.
#[tokio::test]
async fn one_dispatcher_holds_the_lock_until_its_connection_goes() {
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let feed = FeedStore::new(store.pool().clone());
    let mut first = feed.try_lock().await.unwrap().expect("free lock");
    assert!(first.alive().await);
    assert!(feed.try_lock().await.unwrap().is_none(), "taken twice");
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if feed.try_lock().await.unwrap().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
