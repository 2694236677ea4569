//! The bid-api on a real Redis Cluster (three masters, a replica each, on loopback): the
//! protocol across two processes, and live events that keep flowing, without a gap, when
//! the auction's slot moves to another master and when its master fails over.

mod common;

use common::*;
use gavel_engine::AuctionId;
use gavel_engine::testing::TestCluster;
use serde_json::Value;

/// Bids through the engine until `watcher` has received a `price` event for the latest
/// one; returns every broadcast seq it received meanwhile.
async fn bid_until_heard(
    env: &Env,
    id: &AuctionId,
    watcher: &mut Client,
    next: &mut i64,
) -> Vec<u64> {
    let mut seqs = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no live event after {seqs:?}"
        );
        *next += 10;
        let who = if *next % 20 == 0 { "p" } else { "q" };
        let placed = match env
            .engine
            .place_bid(
                id,
                &gavel_engine::Bidder::new(who, who).unwrap(),
                gavel_engine::BidRequest {
                    amount: Some(*next),
                    max: None,
                },
            )
            .await
        {
            Ok(bid) => bid.seq,
            // The slot is moving or failing over: try again.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                continue;
            }
        };
        // Whatever arrives within a short while (a ping answers when nothing does).
        let got: Vec<Value> = tokio::time::timeout(std::time::Duration::from_millis(500), async {
            let mut got = Vec::new();
            loop {
                let m = watcher.next().await;
                let last = m["type"] == "price" && m["seq"].as_u64() == Some(placed);
                got.push(m);
                if last {
                    return got;
                }
            }
        })
        .await
        .unwrap_or_default();
        seqs.extend(
            got.iter()
                .filter(|m| m["type"] == "price")
                .filter_map(|m| m["seq"].as_u64()),
        );
        if seqs.last() == Some(&placed) {
            return seqs;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_events_follow_a_slot_move_and_a_failover_without_gaps() {
    let mut cluster = TestCluster::start(3, 1);
    let env = Env::on_redis(cluster.url()).await;
    let one = env.server(&[]);
    let two = env.server(&[]);
    let id = env.auction(10).await;
    let slot = id.slot();

    // Protocol across processes: a bidder on one, a watcher on the other.
    let mut watcher = Client::connect(&two, None).await;
    let snap = watcher.subscribe(&id, None).await;
    assert_eq!(snap.last().unwrap()["type"], "snapshot");
    let mut ann = Client::connect(&one, Some(&token("ann", "Ann", 600))).await;
    ann.subscribe(&id, None).await;
    let r = ann.bid(&id, Some(100), None, "r1").await;
    assert_eq!(r["type"], "bid_result", "{r}");
    let p = watcher.next_of("price").await;
    assert_eq!(
        (p["seq"].as_u64(), p["price"].as_i64()),
        (Some(1), Some(100))
    );
    let mut seen = vec![1];
    let mut next = 100;

    // The slot moves to another master: the bid-api subscribes there.
    let from = cluster.master_of_slot(slot).unwrap();
    let to = *cluster.masters().iter().find(|&&m| m != from).unwrap();
    tokio::task::block_in_place(|| cluster.move_slot(slot, to));
    seen.extend(bid_until_heard(&env, &id, &mut watcher, &mut next).await);

    // Its new master fails over to its replica.
    tokio::task::block_in_place(|| {
        cluster.wait_replicated(to);
        cluster.kill(to);
        cluster.wait_failover(slot, to);
    });
    seen.extend(bid_until_heard(&env, &id, &mut watcher, &mut next).await);

    // Every event arrived, in order, once: missed ones were filled from the stream.
    let expected: Vec<u64> = (1..=*seen.last().unwrap()).collect();
    assert_eq!(seen, expected);
    // The bidder's process follows too.
    let r = ann.bid(&id, Some(next + 1_000), None, "r2").await;
    assert_eq!(r["type"], "bid_result", "{r}");
}
