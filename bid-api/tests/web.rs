//! The REST list `GET /v1/auctions`, `GET /v1/config` and the bidder page's routes, on a
//! real bid-api process with real Redis and PostgreSQL. (The page itself is exercised in
//! real browsers by `e2e/tests/browser.rs`.)

mod common;

use common::{Env, now_ms};
use gavel_engine::{AuctionId, AuctionResult, AuctionSettings};
use serde_json::Value;

async fn provision(env: &Env, id: &AuctionId, s: &AuctionSettings, redis: bool) {
    env.store.upsert_auction(id, s).await.expect("postgres");
    if redis {
        env.engine.provision(id, s).await.expect("redis");
    }
}

fn names(page: &Value) -> Vec<String> {
    page["auctions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["auction"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_has_open_and_upcoming_auctions_paged() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let ns = format!("list{}", std::process::id());
    let id = |n: &str| AuctionId::new(&ns, n).unwrap();
    let now = now_ms();
    let base = common::open_now(10);

    // Open, with two bids (live values from Redis).
    let open = id("a-open");
    provision(
        &env,
        &open,
        &AuctionSettings {
            title: "Open lot".into(),
            currency: "EUR".into(),
            ends_at: now + 3_600_000,
            ..base.clone()
        },
        true,
    )
    .await;
    env.bid(&open, "ann", 100).await;
    env.bid(&open, "bob", 150).await;
    // Upcoming.
    let upcoming = id("b-upcoming");
    provision(
        &env,
        &upcoming,
        &AuctionSettings {
            title: "Upcoming lot".into(),
            starts_at: Some(now + 3_600_000),
            ends_at: now + 7_200_000,
            ..base.clone()
        },
        true,
    )
    .await;
    // Recorded in PostgreSQL only (say, Redis not provisioned yet).
    let pg_only = id("c-pg-only");
    provision(
        &env,
        &pg_only,
        &AuctionSettings {
            title: "Recorded lot".into(),
            ends_at: now + 10_800_000,
            ..base.clone()
        },
        false,
    )
    .await;
    // Closed: has a result, so it is not listed.
    let closed = id("d-closed");
    provision(
        &env,
        &closed,
        &AuctionSettings {
            ends_at: now + 1_000_000,
            ..base.clone()
        },
        true,
    )
    .await;
    env.store
        .record_result(
            &closed,
            &AuctionResult {
                seq: 1,
                winner: None,
                winner_name: None,
                final_price: None,
                reserve_met: true,
                bid_count: 0,
                closed_at: now,
                cancelled: true,
            },
        )
        .await
        .unwrap();
    // Another namespace, filtered out below.
    provision(
        &env,
        &AuctionId::new("elsewhere", "x").unwrap(),
        &base,
        true,
    )
    .await;

    let (status, body) = server.get(&format!("/v1/auctions?namespace={ns}")).await;
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        names(&page),
        [open.to_string(), upcoming.to_string(), pg_only.to_string()],
        "{body}"
    );
    assert!(page["next"].is_null());
    let server_time = page["server_time"].as_i64().unwrap();
    let a = &page["auctions"][0];
    assert_eq!(a["title"], "Open lot");
    assert_eq!(a["currency"], "EUR");
    assert_eq!(a["phase"], "open");
    assert_eq!(a["price"], 150);
    assert_eq!(a["min_next"], 160);
    assert_eq!(a["bid_count"], 2);
    assert_eq!(a["leader"], "BOB");
    assert_eq!(a["live"], true);
    assert_eq!(
        a["time_left_ms"].as_i64().unwrap(),
        a["ends_at"].as_i64().unwrap() - server_time
    );
    let b = &page["auctions"][1];
    assert_eq!(
        (&b["phase"], &b["price"], &b["bid_count"]),
        (&Value::from("scheduled"), &Value::Null, &Value::from(0))
    );
    assert_eq!(b["starts_at"].as_i64().unwrap(), now + 3_600_000);
    let c = &page["auctions"][2];
    assert_eq!(
        (
            &c["live"],
            &c["phase"],
            &c["min_next"],
            &c["starting_price"]
        ),
        (
            &Value::from(false),
            &Value::from("open"),
            &Value::Null,
            &Value::from(100)
        )
    );

    // Pages of two: the cursor continues where the first page stopped.
    let (_, body) = server
        .get(&format!("/v1/auctions?namespace={ns}&limit=2"))
        .await;
    let first: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(names(&first), [open.to_string(), upcoming.to_string()]);
    let next = first["next"].as_str().expect("a next cursor").to_owned();
    let (status, body) = server
        .get(&format!("/v1/auctions?namespace={ns}&limit=2&after={next}"))
        .await;
    assert_eq!(status, 200, "{body}");
    let second: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(names(&second), [pg_only.to_string()]);
    assert!(second["next"].is_null());

    // Without a namespace, every namespace.
    let (_, body) = server.get("/v1/auctions").await;
    assert!(body.contains("elsewhere/x"), "{body}");

    for bad in [
        "/v1/auctions?limit=0",
        "/v1/auctions?limit=101",
        "/v1/auctions?after=nonsense",
        "/v1/auctions?namespace=Not_A_Namespace",
    ] {
        let (status, body) = server.get(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("INVALID_MESSAGE"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_its_assets_and_the_config_are_served() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let (status, body) = server.get("/v1/config").await;
    assert_eq!(status, 200, "{body}");
    let config: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(config["dev_auth"], false);
    assert_eq!(config["token_auth"], true);
    assert_eq!(config["protocol"], "v1");
    let dev = env.server(&["--dev-auth"]);
    let (_, body) = dev.get("/v1/config").await;
    assert!(body.contains("\"dev_auth\":true"), "{body}");

    for (path, needle) in [
        ("/", "<script type=\"module\" src=\"/assets/app.js\">"),
        ("/auctions/shop/strat-1962", "id=\"auction-view\""),
        ("/assets/app.js", "class AuctionPage"),
        ("/assets/app.css", ".feed"),
        ("/assets/icon.svg", "<svg"),
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(body.contains(needle), "{path}: {needle} missing");
    }
    assert_eq!(server.get("/auctions/Bad_Name/x").await.0, 404);
    assert_eq!(server.get("/assets/missing.js").await.0, 404);
}
