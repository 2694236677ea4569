//! End-to-end scenarios through the public interfaces only (WebSocket, REST, manifests or
//! `kubectl`, PostgreSQL).
//!
//! All scenarios of this binary share one platform ([`Platform::shared`]): the one named
//! by `GAVEL_E2E_*` variables, else a local one started here (Redis, PostgreSQL, two
//! bid-api processes, a standalone operator). Each scenario uses an auction of its own,
//! opening when provisioned; close tests end theirs a few seconds ahead. Timeouts are
//! generous; the only timed assertion is the contract's "closes within a second of its
//! effective end", with a tolerance.

use std::time::Duration;

use gavel_e2e::platform::{now_ms, unique_name};
use gavel_e2e::protocol::{BidRejected, BidResult, Closed, Phase, Price, Subscribe};
use gavel_e2e::{
    AuctionSpec, Auth, BidReply, ErrorCode, Outcome, Platform, ServerMessage, WsClient,
};

/// Generous wait for anything that should be immediate.
const T: Duration = Duration::from_secs(15);
/// Wait for a close.
const CLOSE: Duration = Duration::from_secs(40);
/// "Closes within a second of its effective end", plus this much tolerance for a loaded
/// test machine.
const CLOSE_TOLERANCE_MS: i64 = 1500;

fn platform() -> &'static Platform {
    Platform::shared()
}

/// Creates an auction and waits until it is open.
async fn open(prefix: &str, spec: AuctionSpec) -> String {
    platform()
        .create_open_auction(&unique_name(prefix), &spec)
        .await
        .unwrap_or_else(|e| panic!("cannot open a {prefix} auction: {e}"))
}

async fn bidder(process: usize, name: &str, auction: &str) -> WsClient {
    let mut c = platform()
        .bidder(process, name)
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"));
    c.subscribe(auction, T).await.expect("snapshot");
    c
}

async fn watcher(process: usize, auction: &str) -> WsClient {
    let mut c = platform().watcher(process).await.expect("watcher connects");
    c.subscribe(auction, T).await.expect("snapshot");
    c
}

async fn bid(c: &mut WsClient, auction: &str, amount: Option<i64>, max: Option<i64>) -> BidReply {
    c.bid(auction, amount, max, T)
        .await
        .unwrap_or_else(|e| panic!("{} bid: {e}", c.label()))
}

fn accepted(reply: BidReply) -> BidResult {
    match reply {
        BidReply::Accepted(r) => r,
        other => panic!("expected an accepted bid, got {other:?}"),
    }
}

fn rejected(reply: BidReply) -> BidRejected {
    match reply {
        BidReply::Rejected(r) => r,
        other => panic!("expected a rejected bid, got {other:?}"),
    }
}

async fn price_seq(c: &mut WsClient, seq: u64) -> Price {
    c.wait_for(&format!("price #{seq}"), T, |m| match m {
        ServerMessage::Price(p) if p.seq == seq => Some(p.clone()),
        _ => None,
    })
    .await
    .expect("price event")
}

async fn closed(c: &mut WsClient, auction: &str) -> (Closed, i64) {
    let msg = c
        .wait_for("closed", CLOSE, |m| match m {
            ServerMessage::Closed(x) if x.auction == auction => Some(x.clone()),
            _ => None,
        })
        .await
        .expect("closed event");
    (msg, now_ms())
}

/// Every broadcast event the client has received for `auction`, in arrival order.
fn broadcast_seqs(c: &WsClient, auction: &str) -> Vec<u64> {
    c.received()
        .iter()
        .filter(|m| m.is_broadcast() && m.auction() == Some(auction))
        .filter_map(ServerMessage::seq)
        .collect()
}

fn assert_closed_on_time(closed_at: i64, effective_end: i64) {
    let late = closed_at - effective_end;
    assert!(late >= -200, "closed {}ms before its effective end", -late);
    assert!(
        late <= 1000 + CLOSE_TOLERANCE_MS,
        "closed {late}ms after its effective end (contract: within a second, tolerance {CLOSE_TOLERANCE_MS}ms)"
    );
}

/// The README's worked example of the bidding rules (flat step 2): the price ends at 192, not 124.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_example() {
    let id = open(
        "seed",
        AuctionSpec::new("seed", 100, 2, Duration::from_secs(120)),
    )
    .await;
    let mut w = watcher(1, &id).await;
    let mut a = bidder(0, "alice", &id).await;
    let mut b = bidder(1, "bob", &id).await;
    let mut c = bidder(0, "carol", &id).await;
    let mut d = bidder(1, "dave", &id).await;
    let mut e = bidder(0, "erin", &id).await;

    let r = accepted(bid(&mut a, &id, Some(100), None).await);
    assert_eq!(
        (r.outcome, r.price, r.min_next),
        (Outcome::Leading, 100, 102)
    );
    let r = accepted(bid(&mut b, &id, Some(105), None).await);
    assert_eq!((r.outcome, r.price), (Outcome::Leading, 105));
    let r = accepted(bid(&mut c, &id, None, Some(200)).await);
    assert_eq!((r.outcome, r.price), (Outcome::Leading, 107));
    let r = accepted(bid(&mut d, &id, Some(120), None).await);
    assert_eq!((r.outcome, r.price), (Outcome::Outbid, 122));
    let r = accepted(bid(&mut e, &id, None, Some(190)).await);
    assert_eq!(
        (r.outcome, r.price, r.min_next),
        (Outcome::Outbid, 192, 194)
    );

    // The watcher sees every accepted bid, in order, with the leader's display name.
    let mut seen = Vec::new();
    for seq in 1..=5 {
        let p = price_seq(&mut w, seq).await;
        seen.push((p.price, p.leader));
    }
    let expected = [
        (100, "alice"),
        (105, "bob"),
        (107, "carol"),
        (122, "carol"),
        (192, "carol"),
    ];
    assert_eq!(
        seen,
        expected
            .iter()
            .map(|(p, l)| (*p, l.to_string()))
            .collect::<Vec<_>>()
    );
    assert_eq!(broadcast_seqs(&w, &id), vec![1, 2, 3, 4, 5]);

    // Whoever loses the lead is told so.
    for (client, seq) in [(&mut a, 2), (&mut b, 3)] {
        let o = client
            .wait_for("outbid", T, |m| match m {
                ServerMessage::Outbid(o) if o.auction == id => Some(o.clone()),
                _ => None,
            })
            .await
            .expect("outbid notice");
        assert_eq!(o.seq, seq);
    }

    // The ceiling is shown to its owner only.
    let mut c2 = platform().bidder(1, "carol").await.expect("connect");
    let s = c2.subscribe(&id, T).await.expect("snapshot");
    assert_eq!(
        (s.price, s.leader.as_deref(), s.your_max),
        (Some(192), Some("carol"), Some(200))
    );
    let s = watcher(0, &id).await;
    let snap = s
        .received()
        .iter()
        .find_map(|m| match m {
            ServerMessage::Snapshot(s) => Some(s.clone()),
            _ => None,
        })
        .expect("snapshot");
    assert_eq!((snap.bid_count, snap.your_max), (5, None));

    // REST: the snapshot, and the history from PostgreSQL without any ceiling.
    let r = platform()
        .rest_snapshot(1, &id)
        .await
        .expect("GET snapshot");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["price"], 192);
    assert_eq!(r.json()["leader"], "carol");
    let deadline = now_ms() + 15_000;
    let bids = loop {
        let r = platform()
            .rest_bids(0, &id, 0, 100)
            .await
            .expect("GET bids");
        assert_eq!(r.status, 200, "{}", r.body);
        let bids = r.json()["bids"].as_array().cloned().unwrap_or_default();
        if bids.len() == 5 || now_ms() > deadline {
            break bids;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(bids.len(), 5, "history: {bids:?}");
    assert!(
        bids.iter().all(|b| b
            .as_object()
            .is_some_and(|o| !o.keys().any(|k| k.contains("max") || k.contains("ceiling")))),
        "a ceiling leaked into the history: {bids:?}"
    );
    let r = platform()
        .rest_bids(0, &id, 3, 100)
        .await
        .expect("GET bids");
    let seqs: Vec<u64> = r.json()["bids"]
        .as_array()
        .map(|a| a.iter().filter_map(|b| b["seq"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(seqs, vec![4, 5]);
}

/// The step of the tier containing the current price applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiers() {
    let spec = AuctionSpec::new("tiers", 10_000, 100, Duration::from_secs(120)).tiers(&[
        (0, 100),
        (10_000, 500),
        (100_000, 1000),
    ]);
    let id = open("tiers", spec).await;
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "ben", &id).await;

    let r = accepted(bid(&mut a, &id, Some(10_000), None).await);
    assert_eq!((r.price, r.min_next), (10_000, 10_500));
    let r = rejected(bid(&mut b, &id, Some(10_400), None).await);
    assert_eq!((r.code, r.min_next), (ErrorCode::BidTooLow, Some(10_500)));
    let r = accepted(bid(&mut b, &id, Some(10_500), None).await);
    assert_eq!(
        (r.outcome, r.price, r.min_next),
        (Outcome::Leading, 10_500, 11_000)
    );
    let r = accepted(bid(&mut a, &id, None, Some(200_000)).await);
    assert_eq!(
        (r.outcome, r.price, r.min_next),
        (Outcome::Leading, 11_000, 11_500)
    );
    // 100000 + the 1000 step of its tier.
    let r = accepted(bid(&mut b, &id, Some(100_000), None).await);
    assert_eq!(
        (r.outcome, r.price, r.min_next),
        (Outcome::Outbid, 101_000, 102_000)
    );
    // The leader raises its own ceiling: the price does not move, and no event is made
    // (the result carries the seq of the last one).
    let r = accepted(bid(&mut a, &id, None, Some(300_000)).await);
    assert_eq!(
        (r.outcome, r.price, r.seq),
        (Outcome::CeilingRaised, 101_000, 4)
    );
    // A leader's bid that does not raise its ceiling changes nothing: refused.
    let r = rejected(bid(&mut a, &id, None, Some(300_000)).await);
    assert_eq!((r.code, r.min_next), (ErrorCode::AlreadyLeading, None));
    let r = accepted(bid(&mut b, &id, Some(102_000), None).await);
    assert_eq!((r.outcome, r.seq), (Outcome::Outbid, 5));
}

/// The price jumps to the reserve once a ceiling reaches it; without that, no winner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve() {
    let met = tokio::spawn(async {
        let spec =
            AuctionSpec::new("reserve met", 10_000, 100, Duration::from_secs(120)).reserve(50_000);
        let id = open("reserve-met", spec).await;
        let mut a = bidder(0, "ann", &id).await;
        let mut b = bidder(1, "ben", &id).await;
        let mut c = bidder(0, "cat", &id).await;
        let r = accepted(bid(&mut a, &id, Some(10_000), None).await);
        assert_eq!(r.price, 10_000);
        let r = accepted(bid(&mut b, &id, None, Some(30_000)).await);
        assert_eq!((r.outcome, r.price), (Outcome::Leading, 10_100));
        let s = watcher(1, &id).await.received().to_vec();
        assert!(
            s.iter()
                .any(|m| matches!(m, ServerMessage::Snapshot(s) if !s.reserve_met)),
            "reserve reported met too early: {s:?}"
        );
        let r = accepted(bid(&mut c, &id, None, Some(60_000)).await);
        assert_eq!((r.outcome, r.price), (Outcome::Leading, 50_000));
        let mut w = platform().watcher(0).await.expect("connect");
        let s = w.subscribe(&id, T).await.expect("snapshot");
        assert!(s.reserve_met);
        assert_eq!((s.price, s.leader.as_deref()), (Some(50_000), Some("cat")));
    });
    let unmet = tokio::spawn(async {
        let spec =
            AuctionSpec::new("reserve unmet", 10_000, 100, Duration::from_secs(6)).reserve(50_000);
        let id = open("reserve-unmet", spec).await;
        let mut w = watcher(1, &id).await;
        let mut a = bidder(0, "ann", &id).await;
        let r = accepted(bid(&mut a, &id, Some(20_000), None).await);
        assert_eq!(r.price, 20_000);
        let (c, _) = closed(&mut w, &id).await;
        assert_eq!(c.winner, None, "no winner below the reserve: {c:?}");
        assert!(!c.reserve_met);
        assert_eq!(c.final_price, Some(20_000));
        if let Some(url) = &platform().database_url {
            let row = result_row(url, &id).await;
            assert_eq!(
                (row.0.as_deref(), row.2),
                (None, false),
                "results row {row:?}"
            );
        }
    });
    met.await.expect("reserve met");
    unmet.await.expect("reserve not met");
}

/// An equal ceiling loses to the earlier one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tie() {
    let id = open(
        "tie",
        AuctionSpec::new("tie", 100, 10, Duration::from_secs(120)),
    )
    .await;
    let mut w = watcher(0, &id).await;
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "ben", &id).await;
    let r = accepted(bid(&mut a, &id, None, Some(500)).await);
    assert_eq!((r.outcome, r.price), (Outcome::Leading, 100));
    let r = accepted(bid(&mut b, &id, None, Some(500)).await);
    assert_eq!(
        (r.outcome, r.price, r.min_next),
        (Outcome::Outbid, 500, 510)
    );
    let p = price_seq(&mut w, 2).await;
    assert_eq!((p.price, p.leader.as_str()), (500, "ann"));
    let r = accepted(bid(&mut b, &id, None, Some(510)).await);
    assert_eq!((r.outcome, r.price), (Outcome::Leading, 510));
}

/// A bid within the window moves the end; the auction stays open past its scheduled
/// end, then closes on time at the new end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_close_extension() {
    let spec = AuctionSpec::new("soft close", 100, 10, Duration::from_secs(8))
        .soft_close(Duration::from_secs(3), Duration::from_secs(4));
    let id = open("soft", spec).await;
    let mut w = watcher(0, &id).await;
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "ben", &id).await;
    let scheduled_end = w
        .received()
        .iter()
        .find_map(|m| match m {
            ServerMessage::Snapshot(s) => Some(s.ends_at),
            _ => None,
        })
        .expect("snapshot with ends_at");

    // Outside the window: no extension (unless a slow machine made us late).
    let early = scheduled_end - now_ms() > 3200;
    let first = accepted(bid(&mut a, &id, Some(100), None).await);
    let p = price_seq(&mut w, first.seq).await;
    let first_extended = p.ends_at != scheduled_end;
    assert!(
        !(early && first_extended),
        "a bid outside the window moved the end"
    );

    // Inside the window: the end moves to at least now + 4s.
    let wait = scheduled_end - 1500 - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let before = now_ms();
    let second = accepted(bid(&mut b, &id, Some(110), None).await);
    let ext = w
        .wait_for("extended", T, |m| match m {
            ServerMessage::Extended(e) if e.seq == second.seq => Some(e.clone()),
            _ => None,
        })
        .await
        .expect("extended event");
    assert!(ext.ends_at > scheduled_end);
    assert!(
        ext.ends_at >= before + 4000 - 100,
        "extended only to {} ({}ms after the bid)",
        ext.ends_at,
        ext.ends_at - before
    );
    let p = price_seq(&mut w, second.seq).await;
    assert_eq!(p.ends_at, ext.ends_at);

    // After the scheduled end, before the new one: still open, and it extends again.
    let wait = scheduled_end + 300 - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    let third = accepted(bid(&mut a, &id, Some(120), None).await);
    let ext2 = w
        .wait_for("second extension", T, |m| match m {
            ServerMessage::Extended(e) if e.seq == third.seq => Some(e.clone()),
            _ => None,
        })
        .await
        .expect("second extension");
    assert!(ext2.ends_at > ext.ends_at);

    let (c, at) = closed(&mut w, &id).await;
    assert_eq!(
        (c.winner.as_deref(), c.final_price),
        (Some("ann"), Some(120))
    );
    assert_closed_on_time(at, ext2.ends_at);
    let extended: Vec<u64> = w
        .received()
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Extended(e) => Some(e.seq),
            _ => None,
        })
        .collect();
    let mut expected = vec![second.seq, third.seq];
    if first_extended {
        expected.insert(0, first.seq);
    }
    assert_eq!(extended, expected);
}

type ResultRow = (Option<String>, Option<i64>, bool, i64);

/// The auction's row of `results` (winner name, final price, reserve met, bid count),
/// polled until it is there.
async fn result_row(database_url: &str, id: &str) -> ResultRow {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await
        .expect("connect to PostgreSQL");
    let deadline = now_ms() + 15_000;
    loop {
        let row: Option<ResultRow> = sqlx::query_as(
            "SELECT winner_name, final_price, reserve_met, bid_count FROM results WHERE auction_id = $1",
        )
        .bind(id)
        .fetch_optional(&pool)
        .await
        .expect("query results");
        if let Some(row) = row {
            pool.close().await;
            return row;
        }
        assert!(now_ms() < deadline, "no result for {id} in PostgreSQL");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The auction closes at its end (within a second) with the result in PostgreSQL and in
/// the Auction status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_on_time_with_result() {
    let id = open(
        "close",
        AuctionSpec::new("close", 100, 10, Duration::from_secs(6)),
    )
    .await;
    let mut w = watcher(1, &id).await;
    let end = w
        .received()
        .iter()
        .find_map(|m| match m {
            ServerMessage::Snapshot(s) => Some(s.ends_at),
            _ => None,
        })
        .expect("ends_at");
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "bob", &id).await;
    accepted(bid(&mut a, &id, Some(100), None).await);
    accepted(bid(&mut b, &id, None, Some(300)).await);
    let r = accepted(bid(&mut a, &id, Some(150), None).await);
    assert_eq!((r.outcome, r.price), (Outcome::Outbid, 160));

    let (c, at) = closed(&mut w, &id).await;
    assert_eq!(
        (c.winner.as_deref(), c.final_price, c.reserve_met),
        (Some("bob"), Some(160), true)
    );
    assert_closed_on_time(at, end);
    assert_eq!(c.seq, 4, "the close is the event after the 3 bids");

    if let Some(url) = &platform().database_url {
        let row = result_row(url, &id).await;
        assert_eq!(row, (Some("bob".into()), Some(160), true, 3));
    } else {
        eprintln!("GAVEL_E2E_DATABASE_URL not set: PostgreSQL not checked");
    }
    let status = platform()
        .wait_status(&id, "phase Closed", T, |s| s["phase"] == "Closed")
        .await
        .expect("status");
    assert_eq!(status["winner"], "bob", "{status}");
    assert_eq!(status["finalPrice"], 160, "{status}");
    assert_eq!(status["reserveMet"], true, "{status}");
    assert_eq!(status["bidCount"], 3, "{status}");
    let r = platform()
        .rest_snapshot(0, &id)
        .await
        .expect("GET snapshot");
    assert_eq!(
        r.json()["phase"].as_str().map(str::to_lowercase).as_deref(),
        Some("closed")
    );
}

/// A bidder on one bid-api process outbids one on the other; both processes' watchers
/// see the same events in the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_process_outbid() {
    assert!(platform().ws_urls.len() >= 2, "needs two bid-api processes");
    let id = open(
        "cross",
        AuctionSpec::new("cross", 100, 10, Duration::from_secs(120)),
    )
    .await;
    let mut w0 = watcher(0, &id).await;
    let mut w1 = watcher(1, &id).await;
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "ben", &id).await;
    accepted(bid(&mut a, &id, Some(100), None).await);
    let r = accepted(bid(&mut b, &id, Some(200), None).await);
    let o = a
        .wait_for("outbid from the other process", T, |m| match m {
            ServerMessage::Outbid(o) => Some(o.clone()),
            _ => None,
        })
        .await
        .expect("ann is told on process 0");
    assert_eq!((o.seq, o.price, o.min_next), (r.seq, 200, 210));
    let r = accepted(bid(&mut a, &id, None, Some(1000)).await);
    assert_eq!((r.outcome, r.price), (Outcome::Leading, 210));
    let o = b
        .wait_for("outbid", T, |m| match m {
            ServerMessage::Outbid(o) => Some(o.clone()),
            _ => None,
        })
        .await
        .expect("ben is told on process 1");
    assert_eq!(o.seq, 3);
    for w in [&mut w0, &mut w1] {
        let p = price_seq(w, 3).await;
        assert_eq!((p.price, p.leader.as_str()), (210, "ann"));
    }
    assert_eq!(broadcast_seqs(&w0, &id), vec![1, 2, 3]);
    assert_eq!(broadcast_seqs(&w1, &id), vec![1, 2, 3]);
}

/// After a disconnect, `subscribe` with `since` replays exactly the missed events, in
/// order, then live ones follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_since() {
    let id = open(
        "since",
        AuctionSpec::new("since", 100, 10, Duration::from_secs(120)),
    )
    .await;
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "ben", &id).await;
    let mut w = watcher(0, &id).await;
    accepted(bid(&mut a, &id, Some(100), None).await);
    accepted(bid(&mut b, &id, Some(110), None).await);
    price_seq(&mut w, 2).await;
    let last_seen = 2;
    w.close().await;

    accepted(bid(&mut a, &id, Some(120), None).await);
    accepted(bid(&mut b, &id, Some(130), None).await);
    accepted(bid(&mut a, &id, None, Some(500)).await);

    let mut w = platform().watcher(1).await.expect("reconnect");
    w.subscribe_since(&id, last_seen)
        .await
        .expect("subscribe since");
    let mut replayed = Vec::new();
    for seq in 3..=5 {
        replayed.push(price_seq(&mut w, seq).await.price);
    }
    assert_eq!(replayed, vec![120, 130, 140]);
    let snap = w
        .wait_for("snapshot", T, |m| match m {
            ServerMessage::Snapshot(s) => Some(s.clone()),
            _ => None,
        })
        .await
        .expect("snapshot after the replay");
    assert_eq!((snap.seq, snap.price), (5, Some(140)));
    accepted(bid(&mut b, &id, Some(150), None).await);
    let p = price_seq(&mut w, 6).await;
    assert_eq!((p.price, p.leader.as_str()), (160, "ann"));
    assert_eq!(
        broadcast_seqs(&w, &id),
        vec![3, 4, 5, 6],
        "no gap, no duplicate"
    );
}

/// Once closed, every bid is refused with `AUCTION_CLOSED` and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bids_after_close_rejected() {
    let id = open(
        "after",
        AuctionSpec::new("after", 100, 10, Duration::from_secs(5)),
    )
    .await;
    let mut w = watcher(0, &id).await;
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "ben", &id).await;
    accepted(bid(&mut a, &id, Some(100), None).await);
    let (c, _) = closed(&mut w, &id).await;
    assert_eq!(c.winner.as_deref(), Some("ann"));
    let r = rejected(bid(&mut b, &id, Some(500), None).await);
    assert_eq!(r.code, ErrorCode::AuctionClosed, "{r:?}");
    let r = rejected(bid(&mut a, &id, None, Some(900)).await);
    assert_eq!(r.code, ErrorCode::AuctionClosed, "{r:?}");
    let r = platform()
        .rest_snapshot(1, &id)
        .await
        .expect("GET snapshot");
    let snap = r.json();
    assert_eq!(snap["bid_count"], 1, "{snap}");
    assert_eq!(snap["price"], 100, "{snap}");
}

/// Malformed, anonymous, out-of-range and unknown-auction messages get typed errors and
/// the connection stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors() {
    let id = open(
        "bad",
        AuctionSpec::new("bad", 100, 10, Duration::from_secs(120)),
    )
    .await;
    let mut a = bidder(0, "ann", &id).await;
    a.send_text("{not json".into()).await.expect("send");
    let e = a
        .wait_for("error", T, |m| match m {
            ServerMessage::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
        .expect("error");
    assert_eq!(e.code, ErrorCode::InvalidMessage);
    a.ping(T).await.expect("still open after a malformed frame");
    for amount in [-5, 0] {
        let r = rejected(bid(&mut a, &id, Some(amount), None).await);
        assert_eq!(r.code, ErrorCode::InvalidAmount, "{amount}: {r:?}");
    }
    let r = rejected(bid(&mut a, &id, Some(100), Some(50)).await);
    assert_eq!(r.code, ErrorCode::InvalidAmount, "max below amount: {r:?}");
    let r = rejected(bid(&mut a, &id, Some(99), None).await);
    assert_eq!((r.code, r.min_next), (ErrorCode::BidTooLow, Some(100)));
    let r = rejected(
        bid(
            &mut a,
            &format!("{}/nope", platform().namespace),
            Some(100),
            None,
        )
        .await,
    );
    assert_eq!(r.code, ErrorCode::UnknownAuction);
    a.send(&gavel_e2e::ClientMessage::Subscribe(Subscribe {
        auction: format!("{}/nope", platform().namespace),
        since: None,
        epoch: None,
    }))
    .await
    .expect("send");
    let e = a
        .wait_for("error", T, |m| match m {
            ServerMessage::Error(e) => Some(e.clone()),
            _ => None,
        })
        .await
        .expect("an error for an unknown auction");
    assert_eq!(e.code, ErrorCode::UnknownAuction);

    let mut anon = WsClient::connect(platform().ws_url(1), &Auth::Anonymous)
        .await
        .expect("anonymous connects");
    assert_eq!(anon.welcome().bidder, None);
    let code = match bid(&mut anon, &id, Some(100), None).await {
        BidReply::Rejected(r) => r.code,
        BidReply::Error(e) => e.code,
        BidReply::Accepted(r) => panic!("an anonymous bid was accepted: {r:?}"),
    };
    assert_eq!(code, ErrorCode::Unauthenticated);
    let s = a.subscribe(&id, T).await.expect("snapshot");
    assert_eq!(s.bid_count, 0, "refused bids changed nothing");
}

/// Floods and oversized frames: `RATE_LIMITED` (per bidder in Redis, per connection in
/// bid-api) and close code 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_oversized_frames() {
    let mut spec = AuctionSpec::new("limits", 100, 10, Duration::from_secs(120));
    spec.bid_limit = Some((1, 2));
    let id = open("limits", spec).await;
    let mut a = bidder(0, "ann", &id).await;
    let mut codes = Vec::new();
    for amount in [100, 110, 120, 130, 140, 150] {
        match bid(&mut a, &id, Some(amount), None).await {
            BidReply::Accepted(_) => codes.push(None),
            BidReply::Rejected(r) => {
                if r.code == ErrorCode::RateLimited {
                    assert!(r.retry_after_ms.is_some(), "{r:?}");
                }
                codes.push(Some(r.code));
            }
            BidReply::Error(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(
        codes[..2],
        [None, None],
        "the burst of 2 goes through: {codes:?}"
    );
    assert!(
        codes[2..].contains(&Some(ErrorCode::RateLimited)),
        "{codes:?}"
    );

    // A flood of messages on one connection.
    let mut f = platform().watcher(1).await.expect("connect");
    for _ in 0..300 {
        f.send(&gavel_e2e::ClientMessage::Ping).await.expect("send");
    }
    let e = f
        .wait_for("RATE_LIMITED", T, |m| match m {
            ServerMessage::Error(e) if e.code == ErrorCode::RateLimited => Some(e.clone()),
            _ => None,
        })
        .await;
    assert!(e.is_ok(), "no RATE_LIMITED after 300 pings: {e:?}");

    // A frame over the size limit closes the connection with 1009.
    let mut big = platform().watcher(0).await.expect("connect");
    big.send_text(format!(
        r#"{{"type":"subscribe","auction":"{id}","pad":"{}"}}"#,
        "x".repeat(1 << 20)
    ))
    .await
    .ok();
    match big.next(T).await {
        Err(gavel_e2e::ClientError::Closed { code, .. }) => assert_eq!(code, Some(1009)),
        other => {
            let next = big.wait_for("close", T, |_| None::<()>).await;
            panic!("expected a close with 1009, got {other:?} then {next:?}");
        }
    }
}

fn token(secret: &str, sub: &str, name: &str) -> String {
    let claims = serde_json::json!({ "sub": sub, "name": name, "exp": now_ms() / 1000 + 600 });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode a token")
}

/// A bidder authenticated with `Authorization: Bearer <jwt>` bids; others see its display
/// name, never its id; a forged token cannot bid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_bidder() {
    let Some(secret) = platform().jwt_secret.clone() else {
        eprintln!("no GAVEL_E2E_JWT_SECRET: skipped");
        return;
    };
    let id = open(
        "jwt",
        AuctionSpec::new("jwt", 100, 10, Duration::from_secs(120)),
    )
    .await;
    let mut w = watcher(1, &id).await;
    let mut z = WsClient::connect(
        platform().ws_url(0),
        &Auth::Token(token(&secret, "user-42", "Zoë Q")),
    )
    .await
    .expect("connect with a token");
    assert!(z.welcome().bidder.is_some(), "{:?}", z.welcome());
    z.subscribe(&id, T).await.expect("snapshot");
    let r = accepted(bid(&mut z, &id, Some(100), None).await);
    assert_eq!(r.outcome, Outcome::Leading);
    let p = price_seq(&mut w, r.seq).await;
    // The display name carries the tag of the bidder id (GAVEL_DISPLAY_NAME_TAG).
    let leader = p.leader;
    assert!(leader.starts_with("Zoë Q #"), "{leader}");
    assert!(!leader.contains("user-42"), "{leader}");

    let forged = token("not-the-secret", "user-43", "Mallory");
    match WsClient::connect(platform().ws_url(0), &Auth::Token(forged)).await {
        Err(_) => {}
        Ok(mut m) => {
            let code = match bid(&mut m, &id, Some(200), None).await {
                BidReply::Rejected(r) => r.code,
                BidReply::Error(e) => e.code,
                BidReply::Accepted(r) => panic!("a forged token bid: {r:?}"),
            };
            assert_eq!(code, ErrorCode::Unauthenticated);
        }
    }
}

/// A closed auction leaves Redis after its retention (`0s` here) and everything a client
/// could ask for is then served from PostgreSQL: the snapshot (WebSocket and REST), the
/// history, `since` replay; a bid is refused as closed, never as unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_auction_leaves_redis_and_is_served_from_postgres() {
    let mut spec = AuctionSpec::new("retired", 100, 10, Duration::from_secs(5));
    spec.retention = Some("0s".into());
    let id = open("retired", spec).await;
    let mut a = bidder(0, "ann", &id).await;
    let mut b = bidder(1, "bob", &id).await;
    accepted(bid(&mut a, &id, Some(100), None).await);
    accepted(bid(&mut b, &id, None, Some(300)).await);
    accepted(bid(&mut a, &id, Some(150), None).await);
    let (c, _) = closed(&mut b, &id).await;
    assert_eq!(
        (c.winner.as_deref(), c.final_price),
        (Some("bob"), Some(160))
    );
    platform()
        .wait_status(&id, "phase Closed", T, |s| s["phase"] == "Closed")
        .await
        .expect("status");
    if let Some(local) = platform().local_platform() {
        let engine = gavel_engine::Engine::connect(&local.redis_url, 1)
            .await
            .expect("redis");
        let auction: gavel_engine::AuctionId = id.parse().unwrap();
        let deadline = std::time::Instant::now() + CLOSE;
        loop {
            let left: i64 = fred::interfaces::KeysInterface::exists(
                engine.redis(),
                auction.all_keys().to_vec(),
            )
            .await
            .unwrap();
            if left == 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{left} keys left in Redis"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    } else {
        // Another platform: its operator's retention decides; wait a little.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    // WebSocket: the snapshot with the result, then `since` replays the whole history.
    let mut w = platform().watcher(1).await.expect("watcher");
    let s = w.subscribe(&id, T).await.expect("snapshot from PostgreSQL");
    assert_eq!(s.phase, Phase::Closed);
    assert_eq!(
        (s.price, s.leader.as_deref(), s.bid_count, s.seq),
        (Some(160), Some("bob"), 3, 4)
    );
    // The declared times and the reserve's existence come from PostgreSQL too.
    assert_eq!(s.has_reserve, Some(false));
    assert!(s.scheduled_ends_at.is_some_and(|e| e <= s.ends_at), "{s:?}");
    w.subscribe_since(&id, 0).await.expect("since");
    let mut seqs = Vec::new();
    while seqs.len() < 4 {
        let m = w.next(T).await.expect("replay");
        if let Some(seq) = m.seq().filter(|_| m.is_broadcast()) {
            seqs.push(seq);
        }
    }
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    // Your own ceiling is still yours.
    let mut b2 = platform().bidder(0, "bob").await.expect("bob");
    let s = b2.subscribe(&id, T).await.expect("snapshot");
    assert_eq!(s.your_max, Some(300));
    // A bid: closed, not unknown.
    let r = rejected(bid(&mut b2, &id, Some(500), None).await);
    assert_eq!(r.code, ErrorCode::AuctionClosed);
    // REST: snapshot and history.
    let r = platform()
        .rest_snapshot(0, &id)
        .await
        .expect("GET snapshot");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["price"], 160);
    let r = platform().rest_bids(1, &id, 0, 10).await.expect("GET bids");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["bids"].as_array().map(Vec::len),
        Some(3),
        "{}",
        r.body
    );
}
