//! `GAVEL_ACKNOWLEDGE=recorded`: a bid is answered as accepted only once PostgreSQL has
//! committed it. Checked against real processes with no flusher running, so that nothing
//! but the acknowledgement itself can have put the bids in PostgreSQL, then with
//! PostgreSQL stopped and started again.

mod common;

use std::time::Duration;

use common::*;
use fred::interfaces::ClientLike as _;
use gavel_engine::store::Store;
use gavel_engine::testing::{TestPostgres, TestRedis};
use gavel_engine::{AuctionEvent, AuctionId, Engine};

/// The bid events PostgreSQL holds for `id`: (seq, bidder, amount).
async fn recorded_bids(store: &Store, id: &AuctionId) -> Vec<(u64, String, i64)> {
    store
        .events_after(id, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|event| match event {
            AuctionEvent::Bid(bid) => Some((bid.seq, bid.bidder, bid.amount)),
            _ => None,
        })
        .collect()
}

/// Alternates two bidders' bids on `id`; returns each acknowledgement (seq, bidder,
/// amount) after checking that PostgreSQL held it when it arrived (`recorded`) or not.
async fn bid_and_check(
    server: &Server,
    store: &Store,
    id: &AuctionId,
    bids: usize,
    recorded: bool,
) -> Vec<(u64, String, i64)> {
    let mut alice = Client::connect(server, Some(&token("alice", "Alice", 600))).await;
    let mut bob = Client::connect(server, Some(&token("bob", "Bob", 600))).await;
    let mut acks = Vec::new();
    for i in 0..bids {
        let amount = 100 + 10 * i as i64;
        let (client, who) = if i % 2 == 0 {
            (&mut alice, "alice")
        } else {
            (&mut bob, "bob")
        };
        let reply = client.bid(id, Some(amount), None, &format!("r{i}")).await;
        assert_eq!(reply["type"], "bid_result", "{reply}");
        let seq = reply["seq"].as_u64().unwrap();
        let in_postgres = recorded_bids(store, id)
            .await
            .contains(&(seq, who.to_owned(), amount));
        assert_eq!(
            in_postgres, recorded,
            "bid #{seq} answered {reply}; in PostgreSQL at that moment: {in_postgres}"
        );
        acks.push((seq, who.to_owned(), amount));
    }
    acks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_acknowledgement_means_postgres_has_committed_the_bid() {
    let env = Env::new().await;
    let no_flusher = ["--flush", "false"];
    let recording = env.server(&["--flush", "false", "--acknowledge", "recorded"]);
    let accepting = env.server(&no_flusher);

    // Without the recorded acknowledgement and without a flusher, nothing is recorded:
    // what the recorded server puts in PostgreSQL, its acknowledgement put there.
    let control = env.auction(10).await;
    bid_and_check(&accepting, &env.store, &control, 4, false).await;

    let id = env.auction(10).await;
    let acks = bid_and_check(&recording, &env.store, &id, 20, true).await;

    // Redis loses everything: every acknowledged bid is still in the record, unchanged.
    let _: () = env.engine.redis().flushall(false).await.unwrap();
    assert_eq!(recorded_bids(&env.store, &id).await, acks);
    let metrics = recording.get("/metrics").await.1;
    assert!(
        metrics.contains("gavel_bid_record_seconds_count 20"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgres_is_down_recorded_bids_are_refused_and_the_auction_is_unchanged() {
    let redis = TestRedis::start();
    let mut postgres = TestPostgres::start();
    let store = Store::connect_lazy(&postgres.url()).unwrap();
    store.migrate().await.unwrap();
    let engine = Engine::connect(&redis.url(), 1).await.unwrap();
    let server = Server::start(
        &redis.url(),
        &postgres.url(),
        &["--flush", "false", "--acknowledge", "recorded"],
    );
    let id = AuctionId::new("ack", "down").unwrap();
    engine.provision(&id, &open_now(10)).await.unwrap();
    let mut alice = Client::connect(&server, Some(&token("alice", "Alice", 600))).await;
    assert_eq!(
        alice.bid(&id, Some(100), None, "before").await["outcome"],
        "leading"
    );

    tokio::task::block_in_place(|| postgres.stop());
    // The first bid after the outage may be accepted by the engine but not confirmed
    // (answered UNAVAILABLE); from then on bids are refused before the engine.
    let mut answers = Vec::new();
    for i in 0..10 {
        let reply = alice
            .bid(&id, Some(200 + 10 * i), None, &format!("down{i}"))
            .await;
        answers.push(reply);
    }
    for reply in &answers {
        assert_eq!(
            reply["type"], "bid_rejected",
            "acknowledged while PostgreSQL was down: {reply}"
        );
        assert_eq!(reply["code"], "UNAVAILABLE", "{reply}");
    }
    let state = engine.snapshot(&id, None).await.unwrap();
    assert!(
        state.bid_count <= 2,
        "bids changed the auction while PostgreSQL was down: {} bids",
        state.bid_count
    );

    tokio::task::block_in_place(|| postgres.restart());
    let mut taken = None;
    for i in 0..100 {
        let reply = alice
            .bid(&id, Some(1_000 + 10 * i), None, &format!("after{i}"))
            .await;
        if reply["type"] == "bid_result" {
            taken = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let taken = taken.expect("bids taken again once PostgreSQL is back");
    let seq = taken["seq"].as_u64().unwrap();
    let store = Store::connect_lazy(&postgres.url()).unwrap();
    assert!(
        recorded_bids(&store, &id)
            .await
            .iter()
            .any(|(s, who, _)| *s == seq && who == "alice"),
        "bid #{seq} acknowledged after the outage is not in PostgreSQL"
    );
}
