//! The Lua scripts through the engine client, against a real Redis.

mod common;

use common::*;
use fred::prelude::*;
use gavel_engine::client::PLACE_BID_LUA;
use gavel_engine::{
    AuctionEvent, BidError, BidRequest, CloseMode, CloseOutcome, EngineError, LivePhase, Outcome,
    Provisioned, RejectCode, SoftClose,
};

fn rejected(r: Result<gavel_engine::BidAccepted, BidError>) -> gavel_engine::Rejection {
    match r {
        Err(BidError::Rejected(rejection)) => rejection,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

/// Everything Redis holds for the auction, to prove a call changed nothing.
async fn dump(engine: &gavel_engine::Engine, id: &gavel_engine::AuctionId) -> Vec<String> {
    let r = engine.redis();
    let mut out = Vec::new();
    for key in [id.state_key(), id.ceilings_key(), id.rate_key()] {
        let mut h: Vec<(String, String)> = r.hgetall(&key).await.unwrap();
        h.sort();
        out.push(format!("{key}: {h:?}"));
    }
    let len: u64 = r.xlen(id.events_key()).await.unwrap();
    out.push(format!("stream: {len}"));
    out
}

#[tokio::test]
async fn seed_example_step_by_step() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    assert_eq!(
        engine.provision(&id, &settings(2)).await.unwrap(),
        Provisioned::Created
    );
    let steps = [
        ("a", amount(100), Outcome::Leading, "a", 100),
        ("b", amount(105), Outcome::Leading, "b", 105),
        ("c", max(200), Outcome::Leading, "c", 107),
        ("d", amount(120), Outcome::Outbid, "c", 122),
        ("e", max(190), Outcome::Outbid, "c", 192),
    ];
    for (i, (who, req, outcome, leader, price)) in steps.into_iter().enumerate() {
        let r = engine
            .place_bid_at(&id, &bidder(who), req, Some(5_000))
            .await
            .unwrap();
        assert_eq!(
            (r.outcome, r.leader.as_str(), r.price, r.seq),
            (outcome, leader, price, i as u64 + 1),
            "bid of {who}"
        );
    }
    let snap = engine
        .snapshot_at(&id, Some("c"), Some(5_000))
        .await
        .unwrap();
    assert_eq!(snap.price, Some(192));
    assert_eq!(snap.leader_name.as_deref(), Some("C"));
    assert_eq!(snap.min_next, 194);
    assert_eq!(snap.your_max, Some(200), "the leader sees its own ceiling");
    let other = engine
        .snapshot_at(&id, Some("e"), Some(5_000))
        .await
        .unwrap();
    assert_eq!(
        other.your_max,
        Some(190),
        "a bidder sees only its own ceiling"
    );
    let anonymous = engine.snapshot_at(&id, None, Some(5_000)).await.unwrap();
    assert_eq!(anonymous.your_max, None);
    let raw: Vec<String> = engine
        .redis()
        .hmget(id.state_key(), vec!["ceiling"])
        .await
        .unwrap();
    assert_eq!(raw, vec!["200".to_string()]);
    assert!(
        !format!("{anonymous:?}").contains("200"),
        "no ceiling in {anonymous:?}"
    );
}

#[tokio::test]
async fn events_are_streamed_in_seq_order_and_replayable() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    engine.provision(&id, &settings(1)).await.unwrap();
    for (i, who) in ["a", "b", "a", "b"].iter().enumerate() {
        engine
            .place_bid_at(&id, &bidder(who), amount(10 + i as i64), Some(2_000))
            .await
            .unwrap();
    }
    let all = engine.events_since(&id, 0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(AuctionEvent::seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let tail = engine.events_since(&id, 2, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(AuctionEvent::seq).collect::<Vec<_>>(),
        [3, 4]
    );
    let AuctionEvent::Bid(third) = &tail[0] else {
        panic!("{tail:?}")
    };
    assert_eq!(
        (third.bidder.as_str(), third.displaced.as_deref()),
        ("a", Some("b"))
    );
    assert_eq!(engine.events_since(&id, 2, 1).await.unwrap().len(), 1);
    assert!(engine.events_since(&id, 4, 100).await.unwrap().is_empty());
}

#[tokio::test]
async fn provisioning_is_idempotent_and_never_loses_bids() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    let mut s = settings(5);
    assert_eq!(
        engine.provision(&id, &s).await.unwrap(),
        Provisioned::Created
    );
    assert_eq!(
        engine.provision(&id, &s).await.unwrap(),
        Provisioned::Unchanged
    );
    s.starting_price = 50;
    assert_eq!(
        engine.provision(&id, &s).await.unwrap(),
        Provisioned::Updated
    );
    engine
        .place_bid_at(&id, &bidder("a"), amount(60), Some(2_000))
        .await
        .unwrap();
    engine
        .place_bid_at(&id, &bidder("b"), max(100), Some(2_000))
        .await
        .unwrap();

    // Non-pricing changes are applied and the bids stay.
    s.title = "Renamed".into();
    s.ends_at += 1_000;
    assert_eq!(
        engine.provision(&id, &s).await.unwrap(),
        Provisioned::Updated
    );
    let snap = engine.snapshot_at(&id, None, Some(2_000)).await.unwrap();
    assert_eq!(
        (snap.title.as_str(), snap.bid_count, snap.price),
        ("Renamed", 2, Some(65))
    );
    assert_eq!(snap.ends_at, s.ends_at);

    // Pricing is frozen once there are bids.
    let before = dump(&engine, &id).await;
    let mut frozen = s.clone();
    frozen.increments = gavel_engine::Increments::flat(7).unwrap();
    assert!(matches!(
        engine.provision(&id, &frozen).await,
        Err(EngineError::PricingFrozen(_))
    ));
    assert_eq!(dump(&engine, &id).await, before);

    // A closed auction is left alone.
    engine
        .close_at(&id, CloseMode::Cancel, Some(3_000))
        .await
        .unwrap();
    s.title = "Again".into();
    assert_eq!(
        engine.provision(&id, &s).await.unwrap(),
        Provisioned::AlreadyClosed
    );

    // Invalid settings never reach Redis.
    let mut bad = settings(5);
    bad.starting_price = 0;
    let fresh = auction_id();
    assert!(matches!(
        engine.provision(&fresh, &bad).await,
        Err(EngineError::Settings(_))
    ));
    let exists: i64 = engine.redis().exists(fresh.state_key()).await.unwrap();
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn close_is_atomic_idempotent_and_final() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    let mut s = settings(1);
    s.ends_at = 10_000;
    s.reserve_price = Some(50);
    s.soft_close = Some(SoftClose {
        window_ms: 1_000,
        extension_ms: 2_000,
    });
    engine.provision(&id, &s).await.unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), max(80), Some(2_000))
        .await
        .unwrap();
    let r = engine
        .place_bid_at(&id, &bidder("b"), amount(60), Some(9_500))
        .await
        .unwrap();
    assert_eq!((r.extended, r.ends_at, r.price), (true, 11_500, 61));

    assert_eq!(
        engine
            .close_at(&id, CloseMode::AtEnd, Some(10_000))
            .await
            .unwrap(),
        CloseOutcome::NotEnded { ends_at: 11_500 }
    );
    let CloseOutcome::Closed(first) = engine
        .close_at(&id, CloseMode::AtEnd, Some(11_500))
        .await
        .unwrap()
    else {
        panic!("not closed")
    };
    assert_eq!(first.winner.as_deref(), Some("a"));
    assert_eq!(
        (
            first.final_price,
            first.reserve_met,
            first.seq,
            first.bid_count
        ),
        (Some(61), true, 3, 2)
    );
    let again = engine
        .close_at(&id, CloseMode::AtEnd, Some(99_000))
        .await
        .unwrap();
    assert_eq!(again, CloseOutcome::Closed(first.clone()));
    let cancel = engine
        .close_at(&id, CloseMode::Cancel, Some(99_000))
        .await
        .unwrap();
    assert_eq!(cancel, CloseOutcome::Closed(first.clone()));

    let before = dump(&engine, &id).await;
    let e = rejected(
        engine
            .place_bid_at(&id, &bidder("c"), amount(500), Some(11_000))
            .await,
    );
    assert_eq!(e.code, RejectCode::AuctionClosed);
    assert_eq!(dump(&engine, &id).await, before);

    let snap = engine.snapshot_at(&id, None, Some(11_000)).await.unwrap();
    assert_eq!(
        (snap.phase, snap.result),
        (LivePhase::Closed, Some(first.clone()))
    );
    let events = engine.events_since(&id, 2, 10).await.unwrap();
    assert_eq!(events, vec![AuctionEvent::Closed(first)]);
}

#[tokio::test]
async fn phases_follow_server_time() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    let mut s = settings(1);
    s.ends_at = 10_000;
    engine.provision(&id, &s).await.unwrap();
    let phase = |now| {
        let (engine, id) = (engine.clone(), id.clone());
        async move {
            engine
                .snapshot_at(&id, None, Some(now))
                .await
                .unwrap()
                .phase
        }
    };
    assert_eq!(phase(999).await, LivePhase::Scheduled);
    assert_eq!(phase(1_000).await, LivePhase::Open);
    assert_eq!(phase(10_000).await, LivePhase::Closing);
    engine
        .close_at(&id, CloseMode::Cancel, Some(5_000))
        .await
        .unwrap();
    assert_eq!(phase(5_000).await, LivePhase::Cancelled);

    // With the real clock: open now.
    let live = auction_id();
    engine.provision(&live, &open_now(1)).await.unwrap();
    let r = engine
        .place_bid(&live, &bidder("a"), amount(3))
        .await
        .unwrap();
    let snap = engine.snapshot(&live, None).await.unwrap();
    assert_eq!(snap.phase, LivePhase::Open);
    assert!(snap.server_time > 1_700_000_000_000);
    assert_eq!(r.price, 3);
}

#[tokio::test]
async fn bad_input_gives_typed_errors_and_changes_nothing() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    engine.provision(&id, &settings(1)).await.unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), amount(10), Some(2_000))
        .await
        .unwrap();
    let before = dump(&engine, &id).await;

    for req in [
        BidRequest::default(),
        amount(0),
        amount(-1),
        amount(i64::MIN),
        amount(i64::MAX),
        amount(1_000_000_000_000_001),
        max(0),
        BidRequest {
            amount: Some(20),
            max: Some(19),
        },
    ] {
        let e = rejected(
            engine
                .place_bid_at(&id, &bidder("b"), req, Some(2_000))
                .await,
        );
        assert_eq!(e.code, RejectCode::InvalidAmount, "{req:?}");
    }
    let e = rejected(
        engine
            .place_bid_at(&id, &bidder("b"), amount(10), Some(2_000))
            .await,
    );
    assert_eq!((e.code, e.min_next), (RejectCode::BidTooLow, Some(11)));
    let e = rejected(
        engine
            .place_bid_at(&id, &bidder("b"), amount(50), Some(999))
            .await,
    );
    assert_eq!(e.code, RejectCode::AuctionNotOpen);
    let e = rejected(
        engine
            .place_bid_at(&id, &bidder("b"), amount(50), Some(1_000_000_000))
            .await,
    );
    assert_eq!(e.code, RejectCode::AuctionClosed);

    // The script checks its own input too: raw EVALSHA with what no client should send.
    let sha = engine.place_bid_sha().to_owned();
    let _: () = engine.redis().script_load(PLACE_BID_LUA).await.unwrap();
    let keys = vec![
        id.state_key(),
        id.ceilings_key(),
        id.rate_key(),
        id.events_key(),
    ];
    for (a, m) in [
        ("abc", ""),
        ("-5", ""),
        ("0", ""),
        ("1.5", ""),
        ("1e3", ""),
        ("0012", ""),
        ("99999999999999999", ""),
        ("1000000000000001", ""),
        ("", ""),
        ("20", "19"),
        ("", " 30"),
    ] {
        let reply: Vec<String> = engine
            .redis()
            .evalsha(&sha, keys.clone(), vec!["b", "B", a, m, "chan", "2000"])
            .await
            .unwrap();
        assert_eq!(
            reply[..2],
            ["rejected", "INVALID_AMOUNT"],
            "amount {a:?} max {m:?}"
        );
    }
    assert_eq!(
        dump(&engine, &id).await,
        before,
        "state changed by bad input"
    );

    // Unknown auction, for every call that takes one.
    let unknown = auction_id();
    let e = rejected(
        engine
            .place_bid_at(&unknown, &bidder("b"), amount(5), Some(2_000))
            .await,
    );
    assert_eq!(e.code, RejectCode::UnknownAuction);
    assert!(matches!(
        engine.snapshot(&unknown, None).await,
        Err(EngineError::UnknownAuction(_))
    ));
    assert!(matches!(
        engine.close(&unknown, CloseMode::Cancel).await,
        Err(EngineError::UnknownAuction(_))
    ));
    assert!(
        engine
            .events_since(&unknown, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let created: i64 = engine
        .redis()
        .exists(unknown.all_keys().to_vec())
        .await
        .unwrap();
    assert_eq!(created, 0, "a call on an unknown auction created keys");

    // Bidder identities are checked before anything is sent.
    for (id_, name) in [
        ("", "x"),
        ("x", ""),
        ("a\nb", "x"),
        (&*"x".repeat(129), "x"),
    ] {
        assert!(
            gavel_engine::Bidder::new(id_, name).is_err(),
            "{id_:?} {name:?}"
        );
    }
}

#[tokio::test]
async fn rate_limit_is_enforced_in_redis() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    let mut s = settings(1);
    s.bid_limit = Some(gavel_engine::BidLimit {
        per_second: 2,
        burst: 2,
    });
    engine.provision(&id, &s).await.unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), amount(1), Some(5_000))
        .await
        .unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), max(9), Some(5_000))
        .await
        .unwrap();
    let e = rejected(
        engine
            .place_bid_at(&id, &bidder("a"), max(20), Some(5_100))
            .await,
    );
    assert_eq!(
        (e.code, e.retry_after_ms),
        (RejectCode::RateLimited, Some(400))
    );
    engine
        .place_bid_at(&id, &bidder("b"), amount(3), Some(5_100))
        .await
        .unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), max(20), Some(5_500))
        .await
        .unwrap();
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_flush_and_keys_share_one_slot() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    engine.provision(&id, &settings(1)).await.unwrap();
    let _: () = engine.redis().script_flush(false).await.unwrap();
    let r = engine
        .place_bid_at(&id, &bidder("a"), amount(5), Some(2_000))
        .await
        .unwrap();
    assert_eq!(r.seq, 1);
    let slot = fred::util::redis_keyslot(id.state_key().as_bytes());
    for key in id.all_keys().iter().chain([&id.channel()]) {
        assert_eq!(fred::util::redis_keyslot(key.as_bytes()), slot, "{key}");
    }
}

#[tokio::test]
async fn remove_deletes_live_state_only_once_postgres_holds_every_event() {
    let (engine, _redis) = engine().await;
    let id = auction_id();
    engine.provision(&id, &settings(1)).await.unwrap();
    engine
        .place_bid_at(&id, &bidder("a"), amount(5), Some(2_000))
        .await
        .unwrap();
    assert!(matches!(
        engine.remove(&id, 0).await,
        Err(EngineError::Unflushed(_, 1))
    ));
    let left: i64 = engine.redis().exists(id.state_key()).await.unwrap();
    assert_eq!(left, 1, "refused removal deleted something");
    engine.remove(&id, 1).await.unwrap();
    let left: i64 = engine.redis().exists(id.all_keys().to_vec()).await.unwrap();
    assert_eq!(left, 0);
    // Removing what is gone is harmless.
    engine.remove(&id, 0).await.unwrap();
}

/// The replay stream is bounded by age as well as by count: events older than the
/// maximum age leave it as new ones are appended (the close too), the newest stay.
#[tokio::test]
async fn the_replay_stream_is_trimmed_by_age_as_events_are_appended() {
    let (engine, _redis) = engine().await;
    let engine = engine.with_replay_max_age(std::time::Duration::from_millis(2_000));
    let id = auction_id();
    engine.provision(&id, &open_now(1)).await.unwrap();
    for i in 0..5 {
        engine
            .place_bid(&id, &bidder(&format!("b{i}")), amount(10 + i))
            .await
            .unwrap();
    }
    let len = |engine: gavel_engine::Engine, id: gavel_engine::AuctionId| async move {
        let n: u64 = engine.redis().xlen(id.events_key()).await.unwrap();
        n
    };
    assert_eq!(len(engine.clone(), id.clone()).await, 5, "all young");
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    let r = engine
        .place_bid(&id, &bidder("late"), amount(100))
        .await
        .unwrap();
    assert_eq!(r.seq, 6);
    assert_eq!(
        len(engine.clone(), id.clone()).await,
        1,
        "only the new bid is young"
    );
    let left = engine.events_since(&id, 0, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert!(matches!(&left[0], AuctionEvent::Bid(b) if b.seq == 6));
    // With no age limit only the count bounds it.
    let unbounded = engine
        .clone()
        .with_replay_max_age(std::time::Duration::ZERO);
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    unbounded
        .place_bid(&id, &bidder("b9"), amount(200))
        .await
        .unwrap();
    assert_eq!(len(engine.clone(), id.clone()).await, 2);
    // The close is an append too: it trims what aged.
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    engine.close(&id, CloseMode::Cancel).await.unwrap();
    assert_eq!(len(engine, id).await, 1, "only the close is young");
}
