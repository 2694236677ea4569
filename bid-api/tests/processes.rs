//! Several `gavel-bid-api` processes on one Redis: fan-out across processes, durability
//! when one is killed with SIGKILL, and a slow consumer that reads nothing.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use futures::future::join_all;
use gavel_engine::AuctionId;
use serde_json::{Value, json};

/// Reads messages until one of the auction's events has seq `last`; returns every seq
/// of `price`/`closed` events seen, in order.
async fn read_seqs(client: &mut Client, last: u64) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.last() != Some(&last) {
        let m = client.next().await;
        if m["type"] == "price" || m["type"] == "closed" {
            seqs.push(m["seq"].as_u64().unwrap());
        }
    }
    seqs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_outbid_cross_processes_in_order() {
    let env = Env::new().await;
    let a = env.server(&[]);
    let b = env.server(&[]);
    let id = env.auction(10).await;

    let mut watch_a = Client::connect(&a, None).await;
    let mut watch_b = Client::connect(&b, None).await;
    watch_a.subscribe(&id, None).await;
    watch_b.subscribe(&id, None).await;

    // alice bids on B, bob outbids her on A: the outbid reaches her on B
    let mut alice = Client::connect(&b, Some(&token("alice", "Alice", 600))).await;
    let mut bob = Client::connect(&a, Some(&token("bob", "Bob", 600))).await;
    assert_eq!(
        alice.bid(&id, Some(100), None, "a").await["outcome"],
        "leading"
    );
    assert_eq!(
        bob.bid(&id, None, Some(10_000), "b").await["outcome"],
        "leading"
    );
    assert_eq!(
        alice.next().await,
        json!({"type":"outbid","auction":id.to_string(),"seq":2,"price":110,"min_next":120})
    );

    // concurrent bidders on both processes
    let tasks = (0..4).map(|i| {
        let url = if i % 2 == 0 { a.ws_url() } else { b.ws_url() };
        let id = id.clone();
        tokio::spawn(async move {
            let who = format!("c{i}");
            let mut c = Client::connect_url(&url, Some(&token(&who, &who, 600))).await;
            for k in 0..15i64 {
                let r = c
                    .bid(&id, None, Some(200 + k * 700 + i), &k.to_string())
                    .await;
                assert!(
                    r["type"] == "bid_result" || r["code"] == "BID_TOO_LOW",
                    "{r}"
                );
            }
        })
    });
    for t in join_all(tasks).await {
        t.unwrap();
    }
    let last = env.seq(&id).await;
    assert!(last > 10);
    let want: Vec<u64> = (1..=last).collect();
    assert_eq!(read_seqs(&mut watch_a, last).await, want);
    assert_eq!(read_seqs(&mut watch_b, last).await, want);
}

/// A bid that reports its fate: Some(seq) accepted, None refused, Err the connection died.
async fn try_bid(c: &mut Client, id: &AuctionId, max: i64, r: u64) -> Result<Option<u64>, ()> {
    let msg = json!({"type":"bid","auction":id.to_string(),"max":max,"ref":r});
    if futures::SinkExt::send(
        &mut c.ws,
        tokio_tungstenite::tungstenite::Message::text(msg.to_string()),
    )
    .await
    .is_err()
    {
        return Err(());
    }
    loop {
        let m: Value = c.try_next().await.map_err(|_| ())?;
        if m["ref"] == r {
            return Ok(match m["type"].as_str() {
                // A leader's private raise has no seq of its own.
                Some("bid_result") if m["outcome"] != "ceiling_raised" => m["seq"].as_u64(),
                _ => None,
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_one_process_loses_no_accepted_bid() {
    let env = Env::new().await;
    let mut victim = env.server(&[]);
    let survivor = env.server(&[]);
    let id = env.auction(1).await;

    let (kill_tx, kill_rx) = tokio::sync::watch::channel(false);
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let url = if i % 2 == 0 {
                victim.ws_url()
            } else {
                survivor.ws_url()
            };
            let id = id.clone();
            let kill_rx = kill_rx.clone();
            tokio::spawn(async move {
                let who = format!("h{i}");
                let mut c = Client::connect_url(&url, Some(&token(&who, &who, 600))).await;
                let mut accepted = Vec::new();
                let mut k = 0u64;
                // Bid until the victim is killed, then a little more.
                let mut after_kill = 0;
                while after_kill < 20 && k < 2_000 {
                    if *kill_rx.borrow() {
                        after_kill += 1;
                    }
                    match try_bid(&mut c, &id, 100 + (k as i64) * 50 + i, k).await {
                        Ok(Some(seq)) => accepted.push(seq),
                        Ok(None) => {}
                        Err(()) => break,
                    }
                    k += 1;
                }
                accepted
            })
        })
        .collect();

    // Kill once some bids went through both processes.
    let deadline = tokio::time::Instant::now() + WAIT;
    while env.seq(&id).await < 60 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    victim.signal("KILL");
    assert!(!victim.wait_exit());
    let _ = kill_tx.send(true);

    let mut seen = BTreeSet::new();
    for t in join_all(tasks).await {
        for seq in t.unwrap() {
            assert!(seen.insert(seq), "seq {seq} accepted twice");
        }
    }
    let last = env.seq(&id).await;
    assert!(seen.len() >= 60);
    // Every accepted bid (the survivor claims what the victim had not acknowledged).
    wait_for_bids(&env.store, &id, last).await;
    let in_db: Vec<u64> = env
        .store
        .bids(&id, 0, 1_000)
        .await
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect();
    let mut more = env
        .store
        .bids(&id, in_db.last().copied().unwrap_or(0), 1_000)
        .await
        .unwrap()
        .iter()
        .map(|b| b.seq)
        .collect::<Vec<_>>();
    let mut all = in_db;
    all.append(&mut more);
    assert_eq!(
        all,
        (1..=last).collect::<Vec<_>>(),
        "PostgreSQL holds each seq exactly once"
    );
    assert_eq!(env.store.bid_count(&id).await.unwrap(), last);
    for seq in &seen {
        assert!(*seq <= last);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_with_1013_and_slows_no_one() {
    const EVENTS: u64 = 10_000;
    let env = Env::new().await;
    let server = env.server(&["--send-queue", "1024"]);
    let id = env.auction(10).await;

    // A fast subscriber that checks every event, in order.
    let mut fast = Client::connect(&server, None).await;
    fast.subscribe(&id, None).await;
    // It must read as fast as the server writes: no second parse of each frame (the other
    // tests check every message type against the protocol).
    fast.check_protocol = false;
    // How far it has read: the bids below never run more than `LEAD` events ahead of it,
    // so that on a loaded machine a reader that keeps up is never mistaken for a slow one.
    const LEAD: u64 = 256;
    let progress = Arc::new(AtomicU64::new(0));
    let read = progress.clone();
    let fast_task = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while seqs.last() != Some(&EVENTS) {
            let m = fast.next().await;
            if m["type"] == "price" || m["type"] == "closed" {
                let seq = m["seq"].as_u64().unwrap();
                seqs.push(seq);
                read.store(seq, Ordering::Relaxed);
            }
        }
        assert_eq!(seqs, (1..=EVENTS).collect::<Vec<_>>());
    });

    // A slow one with a tiny receive buffer that reads nothing after its snapshot.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket
        .connect(([127, 0, 0, 1], server.port).into())
        .await
        .unwrap();
    let (ws, _) = tokio_tungstenite::client_async(
        server.ws_url(),
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut slow = Client::after_connect(ws).await;
    slow.subscribe(&id, None).await;

    let rss_before = server.rss_kib();
    let bidders = ["p", "q"];
    for i in 0..EVENTS as i64 {
        while i as u64 > progress.load(Ordering::Relaxed) + LEAD {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        env.bid(&id, bidders[(i % 2) as usize], 100 + 10 * i).await;
    }
    tokio::time::timeout(Duration::from_secs(120), fast_task)
        .await
        .expect("fast subscriber stalled")
        .unwrap();
    let rss_after = server.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The slow one gets a prefix of the events, in order, then 1013.
    let mut last = 0;
    let code = loop {
        match slow.try_next().await {
            Ok(m) => {
                if m["type"] == "price" {
                    let seq = m["seq"].as_u64().unwrap();
                    assert_eq!(seq, last + 1);
                    last = seq;
                }
            }
            Err(End::Closed(code)) => break code,
            Err(End::Failed(e)) => panic!("no close frame after {last} events: {e}"),
        }
    };
    assert_eq!(code, Some(1013));
    assert!(last < EVENTS, "the slow consumer was never cut off");
    let metrics = server.get("/metrics").await.1;
    assert!(
        metrics.contains("gavel_ws_slow_consumer_disconnects_total 1"),
        "{metrics}"
    );

    // It can come back with `since` and catch up.
    let mut again = Client::connect(&server, None).await;
    let got = again.subscribe(&id, Some(last)).await;
    assert_eq!(got.len() as u64, EVENTS - last + 1);
    assert_eq!(got.last().unwrap()["seq"], EVENTS);
}
