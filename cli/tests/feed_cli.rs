//! `gavel feed dead-letters` and `gavel feed replay`, the real binary against a real
//! PostgreSQL: an event dead-lettered by the feed's store is listed (table and `--json`,
//! filtered by sink and auction), put back for delivery by id or with `--all`, and a bad
//! database URL or a missing id is a clear error.

use std::process::Command;

use gavel_engine::AuctionId;
use gavel_engine::outbound::{self, FeedStore};
use gavel_engine::store::Store;

/// Runs `gavel` with `args`; (exit code, stdout, stderr).
fn gavel(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(args)
        .env_remove("GAVEL_DATABASE_URL")
        .current_dir(std::env::temp_dir())
        .output()
        .expect("gavel runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Queues one event of `auction` for the cluster sink and dead-letters it; its id.
async fn dead_letter(feed: &FeedStore, auction: &AuctionId, seq: u64) -> String {
    let entry = outbound::restored(auction, seq, 2, 1_764_000_000_000);
    feed.record(&[entry]).await.expect("outbox");
    feed.fan_out(100, true, false).await.expect("fan out");
    let waiting = feed
        .waiting("cluster", &auction.to_string(), 10)
        .await
        .expect("waiting");
    let delivery = waiting
        .into_iter()
        .find(|d| d.seq == seq as i64)
        .expect("queued for the cluster sink");
    feed.dead_letter(
        &delivery,
        "HTTP 500 Internal Server Error: boom",
        Some("http://sink.example/events"),
    )
    .await
    .expect("dead letter");
    delivery.event_id
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_are_listed_and_replayed_by_the_cli() {
    let url = gavel_engine::testing::database_url().await;
    let store = Store::connect_lazy(&url).expect("store");
    let feed = FeedStore::new(store.pool().clone());
    let lot = AuctionId::new("shop", "lot-1").expect("id");
    let other = AuctionId::new("shop", "lot-2").expect("id");
    let first = dead_letter(&feed, &lot, 3).await;
    let second = dead_letter(&feed, &other, 5).await;

    // The table, and one JSON object per line.
    let (code, out, err) = gavel(&["feed", "dead-letters", "--database-url", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(&first) && out.contains(&second), "{out}");
    assert!(out.contains("boom") && out.contains("attempts 1"), "{out}");
    assert!(err.contains("2 dead-lettered event(s)"), "{err}");
    let (code, out, err) = gavel(&[
        "feed",
        "dead-letters",
        "--json",
        "--auction",
        "shop/lot-1",
        "--database-url",
        &url,
    ]);
    assert_eq!(code, Some(0), "{err}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["event_id"], first.as_str());
    assert_eq!(rows[0]["sink"], "cluster");
    assert_eq!(rows[0]["auction_id"], "shop/lot-1");
    assert_eq!(rows[0]["uri"], "http://sink.example/events");
    let (_, out, _) = gavel(&[
        "feed",
        "dead-letters",
        "--sink",
        "auction",
        "--database-url",
        &url,
    ]);
    assert!(out.is_empty(), "no dead letter of the auction sinks: {out}");

    // Replay by id: that one is due for delivery again, attempts reset; the other stays.
    let (code, out, err) = gavel(&["feed", "replay", &first, "--database-url", &url]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("1 event(s) queued"), "{out}");
    let waiting = feed.waiting("cluster", "shop/lot-1", 10).await.unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(
        (waiting[0].event_id.as_str(), waiting[0].attempts),
        (first.as_str(), 0)
    );
    let left = feed.dead_letters(None, None, 10).await.unwrap();
    assert_eq!(
        left.iter().map(|d| d.event_id.as_str()).collect::<Vec<_>>(),
        [second.as_str()]
    );

    // --all takes the rest; a second --all finds nothing.
    let (_, out, _) = gavel(&["feed", "replay", "--all", "--database-url", &url]);
    assert!(out.contains("1 event(s) queued"), "{out}");
    let (_, out, _) = gavel(&["feed", "replay", "--all", "--database-url", &url]);
    assert!(out.contains("0 event(s) queued"), "{out}");
    assert!(feed.dead_letters(None, None, 10).await.unwrap().is_empty());

    // Mistakes get an answer, not a hang or a panic.
    let (code, _, err) = gavel(&["feed", "replay", "--database-url", &url]);
    assert_eq!(
        code,
        Some(64),
        "no ids and no --all is a usage error: {err}"
    );
    let (code, _, err) = gavel(&["feed", "dead-letters"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("no database"), "{err}");
}
