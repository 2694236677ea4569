//! End-to-end on a Redis Cluster: the local platform (two bid-api processes, a standalone
//! operator, PostgreSQL) with Redis as three masters on loopback, `GAVEL_REDIS_URL` a
//! `redis-cluster://` URL. Three auctions, placed on three different masters (checked
//! with `CLUSTER KEYSLOT`): a cross-process outbid, a resume with `since`, and a close with
//! its result in PostgreSQL, through the public interfaces only.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use gavel_e2e::platform::{binary_dir, build_platform_binaries, now_ms, unique_name};
use gavel_e2e::{
    AuctionSpec, BidReply, LocalOptions, LocalPlatform, Outcome, Platform, ServerMessage, WsClient,
};
use gavel_engine::AuctionId;
use gavel_engine::testing::TestCluster;

const T: Duration = Duration::from_secs(15);

/// The platform, on a Redis Cluster of three masters this test starts (and inspects).
fn platform() -> &'static (Platform, TestCluster) {
    static PLATFORM: OnceLock<(Platform, TestCluster)> = OnceLock::new();
    PLATFORM.get_or_init(|| {
        std::thread::spawn(|| {
            if std::env::var_os("GAVEL_E2E_SKIP_BUILD").is_none() {
                build_platform_binaries().expect("build the binaries");
            }
            let work_dir = gavel_engine::testing::temp_dir("e2e-cluster");
            let cluster = TestCluster::start_durable(3, 0);
            let mut opts = LocalOptions::new(binary_dir().expect("binaries"), work_dir);
            opts.redis_url = Some(cluster.url());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let platform =
                Platform::local(rt.block_on(LocalPlatform::start(opts)).expect("platform"));
            (platform, cluster)
        })
        .join()
        .expect("starting the platform panicked")
    })
}

/// Names of `n` auctions whose shards are on `n` different masters.
fn names_on_different_masters(n: usize) -> Vec<String> {
    let cluster = &platform().1;
    let mut masters = HashSet::new();
    let mut names = Vec::new();
    while names.len() < n {
        let name = unique_name("shard");
        let id = AuctionId::new("e2e", &name).unwrap();
        // The real server's slot, not only ours.
        let slot = cluster.key_slot(&id.state_key());
        assert_eq!(slot, id.slot());
        let master = cluster.master_of_slot(slot).expect("a master");
        if masters.insert(master) {
            names.push(name);
        }
    }
    names
}

async fn client(process: usize, name: Option<&str>, auction: &str) -> WsClient {
    let mut c = match name {
        Some(name) => platform().0.bidder(process, name).await,
        None => platform().0.watcher(process).await,
    }
    .expect("connect");
    c.subscribe(auction, T).await.expect("snapshot");
    c
}

async fn bid(
    c: &mut WsClient,
    auction: &str,
    amount: Option<i64>,
    max: Option<i64>,
) -> (u64, i64, Outcome) {
    match c.bid(auction, amount, max, T).await.expect("bid") {
        BidReply::Accepted(r) => (r.seq, r.price, r.outcome),
        other => panic!("expected an accepted bid, got {other:?}"),
    }
}

async fn price_seq(c: &mut WsClient, seq: u64) -> i64 {
    c.wait_for(&format!("price #{seq}"), T, |m| match m {
        ServerMessage::Price(p) if p.seq == seq => Some(p.price),
        _ => None,
    })
    .await
    .expect("price event")
}

fn broadcast_seqs(c: &WsClient, auction: &str) -> Vec<u64> {
    c.received()
        .iter()
        .filter(|m| m.is_broadcast() && m.auction() == Some(auction))
        .filter_map(ServerMessage::seq)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbid_resume_and_close_on_three_masters() {
    let names = names_on_different_masters(3);
    let p = &platform().0;
    let close_id = p
        .create_open_auction(
            &names[2],
            &AuctionSpec::new("close", 100, 10, Duration::from_secs(8)),
        )
        .await
        .expect("open");
    let cross = p
        .create_open_auction(
            &names[0],
            &AuctionSpec::new("cross", 100, 10, Duration::from_secs(300)),
        )
        .await
        .expect("open");
    let since = p
        .create_open_auction(
            &names[1],
            &AuctionSpec::new("since", 100, 10, Duration::from_secs(300)),
        )
        .await
        .expect("open");

    // Cross-process outbid: the bidders and watchers on both bid-api processes.
    let mut w0 = client(0, None, &cross).await;
    let mut w1 = client(1, None, &cross).await;
    let mut ann = client(0, Some("ann"), &cross).await;
    let mut ben = client(1, Some("ben"), &cross).await;
    bid(&mut ann, &cross, Some(100), None).await;
    let (seq, price, _) = bid(&mut ben, &cross, Some(200), None).await;
    let outbid = ann
        .wait_for("outbid from the other process", T, |m| match m {
            ServerMessage::Outbid(o) => Some((o.seq, o.price)),
            _ => None,
        })
        .await
        .expect("ann is told");
    assert_eq!(outbid, (seq, price));
    let (_, price, outcome) = bid(&mut ann, &cross, None, Some(1000)).await;
    assert_eq!((outcome, price), (Outcome::Leading, 210));
    for w in [&mut w0, &mut w1] {
        assert_eq!(price_seq(w, 3).await, 210);
        assert_eq!(broadcast_seqs(w, &cross), vec![1, 2, 3]);
    }

    // Resume with `since` on another master.
    let mut w = client(0, None, &since).await;
    bid(&mut ann, &since, Some(100), None).await;
    bid(&mut ben, &since, Some(110), None).await;
    price_seq(&mut w, 2).await;
    w.close().await;
    bid(&mut ann, &since, Some(120), None).await;
    bid(&mut ben, &since, Some(130), None).await;
    let mut w = p.watcher(1).await.expect("reconnect");
    w.subscribe_since(&since, 2).await.expect("subscribe since");
    assert_eq!(price_seq(&mut w, 4).await, 130);
    bid(&mut ann, &since, Some(140), None).await;
    assert_eq!(price_seq(&mut w, 5).await, 140);
    assert_eq!(
        broadcast_seqs(&w, &since),
        vec![3, 4, 5],
        "no gap, no duplicate"
    );

    // A close on the third master, with its result in PostgreSQL.
    let mut watcher = client(1, None, &close_id).await;
    bid(&mut ann, &close_id, Some(100), None).await;
    bid(&mut ben, &close_id, None, Some(300)).await;
    let closed = watcher
        .wait_for("closed", Duration::from_secs(60), |m| match m {
            ServerMessage::Closed(c) => Some((c.winner.clone(), c.final_price)),
            _ => None,
        })
        .await
        .expect("closed");
    assert_eq!(closed, (Some("ben".into()), Some(110)));
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(p.database_url.as_deref().expect("local PostgreSQL"))
        .await
        .unwrap();
    let deadline = now_ms() + 15_000;
    let row: (Option<String>, Option<i64>, i64) = loop {
        let row = sqlx::query_as(
            "SELECT winner_name, final_price, bid_count FROM results WHERE auction_id = $1",
        )
        .bind(&close_id)
        .fetch_optional(&pool)
        .await
        .unwrap();
        if let Some(row) = row {
            break row;
        }
        assert!(
            now_ms() < deadline,
            "no result for {close_id} in PostgreSQL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(row, (Some("ben".into()), Some(110), 2));
}
