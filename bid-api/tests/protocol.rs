//! The v1 protocol end to end: every client and server message with its exact JSON shape,
//! authentication, replay with `since`, REST, health and metrics — against a real
//! `gavel-bid-api` process on real Redis and PostgreSQL.

mod common;

use std::time::Duration;

use futures::SinkExt;

use common::*;
use gavel_engine::{CloseMode, CloseOutcome, SoftClose};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn without(mut v: Value, key: &str) -> Value {
    if let Some(obj) = v.as_object_mut() {
        obj.remove(key);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_type_has_its_exact_shape() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let id = env.auction(10).await;
    let a = id.to_string();
    let engine_snapshot = env.engine.snapshot(&id, None).await.unwrap();
    let ends_at = engine_snapshot.ends_at;
    // The declared times and whether there is a reserve (no soft close here: the scheduled
    // end is the end).
    let times = |mut v: serde_json::Value| {
        v["has_reserve"] = json!(false);
        v["scheduled_ends_at"] = json!(ends_at);
        if let Some(starts) = engine_snapshot.starts_at {
            v["starts_at"] = json!(starts);
        }
        v
    };

    // welcome, anonymous and authenticated
    let mut watcher = Client::connect(&server, None).await;
    let w = &watcher.welcome;
    assert!(w["server_time"].as_i64().unwrap() > 0);
    assert_eq!(
        without(w.clone(), "server_time"),
        json!({"type":"welcome","bidder":null,"protocol":"v1"})
    );
    let mut alice = Client::connect(&server, Some(&token("alice", "Alice", 600))).await;
    assert_eq!(alice.welcome["bidder"], "alice");
    let mut bob = Client::connect(&server, Some(&token("bob", "Bob", 600))).await;

    // ping → pong
    alice.send(json!({"type":"ping"})).await;
    assert_eq!(alice.next().await, json!({"type":"pong"}));

    // subscribe → snapshot before any bid
    let got = watcher.subscribe(&id, None).await;
    assert_eq!(
        got,
        vec![times(
            json!({"type":"snapshot","auction":a,"seq":0,"phase":"open","title":"Test lot",
            "currency":"USD","price":null,"leader":null,"bid_count":0,"min_next":100,
            "ends_at":ends_at,"reserve_met":true,"epoch":1})
        )]
    );

    // bid → bid_result; subscribers get price
    let r = alice.bid(&id, Some(100), None, "a1").await;
    assert_eq!(
        r,
        json!({"type":"bid_result","ref":"a1","auction":a,"outcome":"leading","price":100,
            "min_next":110,"seq":1,"epoch":1})
    );
    assert_eq!(
        watcher.next().await,
        json!({"type":"price","auction":a,"seq":1,"price":100,"leader":"Alice","bid_count":1,
            "min_next":110,"ends_at":ends_at})
    );

    // a proxy bid takes the lead; the displaced bidder gets outbid (without subscribing)
    let r = bob.bid(&id, None, Some(500), "7").await;
    assert_eq!(r["outcome"], "leading");
    assert_eq!(
        alice.next().await,
        json!({"type":"outbid","auction":a,"seq":2,"price":110,"min_next":120})
    );
    assert_eq!(watcher.next().await["seq"], 2);
    // the leader's re-bid that changes nothing is refused
    let r = bob.bid(&id, None, Some(500), "same").await;
    assert_eq!(
        without(r, "message"),
        json!({"type":"bid_rejected","ref":"same","auction":a,"code":"ALREADY_LEADING"})
    );
    // the leader raises its ceiling: private, no event of its own (the seq it follows)
    bob.send(json!({"type":"bid","auction":a,"max":600,"ref":8}))
        .await;
    let r = bob.next_of("bid_result").await;
    assert_eq!(
        r,
        json!({"type":"bid_result","ref":8,"auction":a,"outcome":"ceiling_raised","price":110,
            "min_next":120,"seq":2,"epoch":1})
    );

    // a bid under the leader's ceiling is accepted as outbid
    let r = alice.bid(&id, Some(120), None, "a2").await;
    assert_eq!(
        r,
        json!({"type":"bid_result","ref":"a2","auction":a,"outcome":"outbid","price":130,
            "min_next":140,"seq":3,"epoch":1})
    );
    // watchers learnt nothing of the raise: the next event they get is alice's bid
    let next = watcher.next().await;
    assert_eq!(
        (next["seq"].clone(), next["price"].clone()),
        (json!(3), json!(130))
    );

    // your_max only to its owner
    let snap = bob.subscribe(&id, None).await.pop().unwrap();
    assert_eq!(
        snap,
        times(
            json!({"type":"snapshot","auction":a,"seq":3,"phase":"open","title":"Test lot",
            "currency":"USD","price":130,"leader":"Bob","bid_count":3,"min_next":140,
            "ends_at":ends_at,"reserve_met":true,"your_max":600,"epoch":1})
        )
    );
    let snap = watcher.subscribe(&id, None).await.pop().unwrap();
    assert!(snap.get("your_max").is_none(), "{snap}");

    // rejections
    let r = alice.bid(&id, Some(50), None, "low").await;
    assert_eq!(
        without(r, "message"),
        json!({"type":"bid_rejected","ref":"low","auction":a,"code":"BID_TOO_LOW",
            "min_next":140})
    );
    let r = watcher.bid(&id, Some(1_000), None, "anon").await;
    assert_eq!(
        without(r, "message"),
        json!({"type":"bid_rejected","ref":"anon","auction":a,"code":"UNAUTHENTICATED"})
    );
    let r = alice.bid(&auction_id(), Some(1_000), None, "nope").await;
    assert_eq!(r["code"], "UNKNOWN_AUCTION");
    let unknown = auction_id();
    let got = alice.subscribe(&unknown, None).await;
    assert_eq!(
        without(got[0].clone(), "message"),
        json!({"type":"error","code":"UNKNOWN_AUCTION","auction":unknown.to_string()})
    );

    // unsubscribe: no more events
    watcher
        .send(json!({"type":"unsubscribe","auction":a}))
        .await;
    assert!(watcher.sync().await.is_empty());
    let r = alice.bid(&id, None, Some(1_000), "a3").await;
    assert_eq!(
        (r["outcome"].clone(), r["price"].clone()),
        (json!("leading"), json!(610))
    );
    assert_eq!(
        bob.next_of("outbid").await,
        json!({"type":"outbid","auction":a,"seq":4,"price":610,"min_next":620})
    );
    assert!(watcher.sync().await.is_empty(), "events after unsubscribe");

    // extended: every bid is within a soft-close window longer than the auction
    let id2 = env
        .auction_with(|s| {
            s.soft_close = Some(SoftClose {
                window_ms: 86_400_000,
                extension_ms: 7_200_000,
            })
        })
        .await;
    let a2 = id2.to_string();
    alice.subscribe(&id2, None).await;
    let r = alice.bid(&id2, Some(100), None, "x1").await;
    assert_eq!(r["seq"], 1);
    let price = alice.next().await;
    assert_eq!(price["type"], "price");
    let new_end = price["ends_at"].as_i64().unwrap();
    assert!(new_end > ends_at);
    assert_eq!(
        alice.next().await,
        json!({"type":"extended","auction":a2,"seq":1,"ends_at":new_end})
    );

    // closed, then bids are refused
    let CloseOutcome::Closed(result) = env.engine.close(&id2, CloseMode::Cancel).await.unwrap()
    else {
        panic!("not closed")
    };
    assert_eq!(
        alice.next().await,
        json!({"type":"closed","auction":a2,"seq":2,"winner":result.winner_name,
            "final_price":result.final_price,"reserve_met":result.reserve_met,"cancelled":true})
    );
    let r = alice.bid(&id2, Some(500), None, "late").await;
    assert_eq!(r["code"], "AUCTION_CLOSED");
    let snap = alice.subscribe(&id2, None).await.pop().unwrap();
    assert_eq!(snap["phase"], "cancelled");

    // not open yet
    let id3 = env
        .auction_with(|s| {
            s.starts_at = Some(now_ms() + 3_600_000);
            s.ends_at = now_ms() + 7_200_000;
        })
        .await;
    let snap = alice.subscribe(&id3, None).await.pop().unwrap();
    assert_eq!(snap["phase"], "scheduled");
    let r = alice.bid(&id3, Some(500), None, "early").await;
    assert_eq!(r["code"], "AUCTION_NOT_OPEN");

    // the auction's own per-bidder limit
    let id4 = env
        .auction_with(|s| {
            s.bid_limit = Some(gavel_engine::BidLimit {
                per_second: 1,
                burst: 1,
            })
        })
        .await;
    assert_eq!(
        alice.bid(&id4, Some(100), None, "r1").await["type"],
        "bid_result"
    );
    let r = alice.bid(&id4, Some(200), None, "r2").await;
    assert_eq!(r["code"], "RATE_LIMITED");
    assert!(r["retry_after_ms"].as_i64().unwrap() > 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_by_header_subprotocol_query_and_dev_mode() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let t = token("u-1", "Una", 600);

    let c = Client::connect_url(&format!("{}?token={t}", server.ws_url()), None).await;
    assert_eq!(c.welcome["bidder"], "u-1");

    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("gavel.v1, bearer.{t}").parse().unwrap(),
    );
    let (ws, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers().get("sec-websocket-protocol").unwrap(),
        "gavel.v1"
    );
    assert_eq!(Client::after_connect(ws).await.welcome["bidder"], "u-1");

    // forged, expired, or dev identity without dev mode: refused on the upgrade
    for bad in [
        format!(
            "{}?token={}",
            server.ws_url(),
            token_signed("u", "U", 600, "wrong")
        ),
        format!("{}?token={}", server.ws_url(), token("u", "U", -120)),
        format!("{}?token=garbage", server.ws_url()),
        format!("{}?bidder=mallory", server.ws_url()),
    ] {
        match tokio_tungstenite::connect_async(bad.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{bad}");
                let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
                assert!(body.contains("UNAUTHENTICATED"), "{body}");
            }
            other => panic!("{bad}: expected 401, got {:?}", other.map(|_| ())),
        }
    }

    let dev = env.server(&["--dev-auth"]);
    let mut c = Client::connect_url(&format!("{}?bidder=carol", dev.ws_url()), None).await;
    assert_eq!(c.welcome["bidder"], "carol");
    let id = env.auction(10).await;
    assert_eq!(c.bid(&id, Some(100), None, "c").await["type"], "bid_result");
    assert!(dev.logs().contains("DEVELOPMENT AUTH IS ON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_since_replays_then_goes_live_without_gap_or_duplicate() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let id = env.auction(10).await;
    for i in 0..6 {
        env.bid(&id, if i % 2 == 0 { "p" } else { "q" }, 100 + 10 * i)
            .await;
    }
    let mut c = Client::connect(&server, None).await;
    let got = c.subscribe(&id, Some(2)).await;
    let seqs: Vec<(String, u64)> = got
        .iter()
        .map(|m| {
            (
                m["type"].as_str().unwrap().to_owned(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            ("price".into(), 3),
            ("price".into(), 4),
            ("price".into(), 5),
            ("price".into(), 6),
            ("snapshot".into(), 6)
        ]
    );
    assert_eq!(got[0]["price"], 120);
    // live events continue right after the snapshot
    for i in 6..10 {
        env.bid(&id, if i % 2 == 0 { "p" } else { "q" }, 100 + 10 * i)
            .await;
    }
    for seq in 7..=10 {
        assert_eq!(c.next().await["seq"], seq);
    }
    // since at or beyond the current seq: only the snapshot
    let got = c.subscribe(&id, Some(10)).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["type"], "snapshot");
    // since 0 replays everything
    let mut d = Client::connect(&server, None).await;
    let got = d.subscribe(&id, Some(0)).await;
    assert_eq!(got.len(), 11);
    for (i, m) in got[..10].iter().enumerate() {
        assert_eq!(m["seq"], i as u64 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_typed_errors_and_changes_nothing() {
    let env = Env::new().await;
    let server = env.server(&["--max-message-bytes", "1024"]);
    let id = env.auction(10).await;
    let a = id.to_string();
    let mut alice = Client::connect(&server, Some(&token("alice", "Alice", 600))).await;

    let cases: Vec<(String, &str, &str)> = vec![
        ("not json".into(), "error", "INVALID_MESSAGE"),
        ("[1,2]".into(), "error", "INVALID_MESSAGE"),
        (r#"{"type":"dance"}"#.into(), "error", "INVALID_MESSAGE"),
        (r#"{"auction":"x/y"}"#.into(), "error", "INVALID_MESSAGE"),
        (r#"{"type":"subscribe"}"#.into(), "error", "INVALID_MESSAGE"),
        (
            r#"{"type":"subscribe","auction":"Not Valid"}"#.into(),
            "error",
            "INVALID_MESSAGE",
        ),
        (
            json!({"type":"bid","auction":a,"amount":100}).to_string(),
            "error",
            "INVALID_MESSAGE",
        ),
        (
            json!({"type":"subscribe","auction":a,"since":"3"}).to_string(),
            "error",
            "INVALID_MESSAGE",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s","amount":"100"}).to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s","max":"500"}).to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s","amount":-5}).to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s","amount":0}).to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s","amount":1.5}).to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s","amount":10_000_000_000_000_000i64})
                .to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            format!(r#"{{"type":"bid","auction":"{a}","ref":"s","amount":1e400}}"#),
            "error",
            "INVALID_MESSAGE",
        ),
        (
            format!(
                r#"{{"type":"bid","auction":"{a}","ref":"s","amount":123456789012345678901234567890}}"#
            ),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s"}).to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"s","amount":500,"max":400}).to_string(),
            "bid_rejected",
            "INVALID_AMOUNT",
        ),
        (
            json!({"type":"bid","auction":"nope/missing","ref":"s","amount":500}).to_string(),
            "bid_rejected",
            "UNKNOWN_AUCTION",
        ),
        (
            json!({"type":"bid","auction":a,"ref":"x".repeat(300),"amount":500}).to_string(),
            "error",
            "TOO_LARGE",
        ),
    ];
    for (text, kind, code) in &cases {
        alice.send_text(text).await;
        let reply = alice.next().await;
        assert_eq!(
            (reply["type"].as_str(), reply["code"].as_str()),
            (Some(*kind), Some(*code)),
            "{text} → {reply}"
        );
        assert!(reply["message"].as_str().is_some_and(|m| !m.is_empty()));
        if *kind == "bid_rejected" {
            assert_eq!(reply["ref"], "s");
        }
    }
    alice
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(vec![
            1u8, 2, 3,
        ]))
        .await
        .unwrap();
    assert_eq!(alice.next().await["code"], "INVALID_MESSAGE");

    // anonymous bids are refused, the connection survives
    let mut anon = Client::connect(&server, None).await;
    let r = anon.bid(&id, Some(100), None, "anon").await;
    assert_eq!(r["code"], "UNAUTHENTICATED");
    assert!(anon.sync().await.is_empty());

    // the connection survived all of it
    assert!(alice.sync().await.is_empty());

    // an oversized frame closes the connection with 1009
    let huge = json!({"type":"bid","auction":a,"ref":"big","amount":100,"pad":"x".repeat(4000)});
    alice.send(huge).await;
    assert_eq!(alice.close_code().await, Some(1009));

    // a token that expires mid-connection stops bidding, but watching goes on
    let mut short = Client::connect(&server, Some(&token("sam", "Sam", 2))).await;
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    let r = short.bid(&id, Some(100), None, "exp").await;
    assert_eq!(r["code"], "UNAUTHENTICATED");
    assert_eq!(short.subscribe(&id, None).await[0]["type"], "snapshot");

    // nothing changed in Redis
    let snap = env.engine.snapshot(&id, None).await.unwrap();
    assert_eq!((snap.seq, snap.bid_count, snap.price), (0, 0, None));
    assert!(
        env.engine
            .events_since(&id, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_rate_limited_and_the_connection_survives() {
    let env = Env::new().await;
    let server = env.server(&["--messages-per-second", "5", "--message-burst", "10"]);
    let id = env.auction(10).await;
    let mut c = Client::connect(&server, Some(&token("fay", "Fay", 600))).await;
    for i in 0..40 {
        c.send(json!({"type":"bid","auction":id.to_string(),"ref":i,"amount":100 + i * 10}))
            .await;
    }
    let mut limited = 0;
    let mut accepted = 0;
    let mut raised = 0;
    for _ in 0..40 {
        let m = c.next().await;
        match (m["type"].as_str(), m["code"].as_str()) {
            // The first bid leads; the leader's later ones raise its ceiling (no event).
            (Some("bid_result"), _) if m["outcome"] == "ceiling_raised" => raised += 1,
            (Some("bid_result"), _) => accepted += 1,
            (Some("bid_rejected"), Some("RATE_LIMITED")) => {
                assert!(m["retry_after_ms"].as_i64().unwrap() > 0);
                limited += 1;
            }
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert!(limited >= 20, "only {limited} rate limited");
    assert_eq!((accepted, env.seq(&id).await), (1, 1));
    assert!(raised > 0);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(c.sync().await.is_empty());
    let metrics = server.get("/metrics").await.1;
    assert!(metrics.contains("gavel_ws_rate_limited_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_health_readiness_and_metrics() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let id = env.auction(10).await;
    let mut bob = Client::connect(&server, Some(&token("bob", "Bob", 600))).await;
    assert_eq!(bob.bid(&id, Some(100), Some(777_777), "1").await["seq"], 1);
    let mut ann = Client::connect(&server, Some(&token("ann", "Ann", 600))).await;
    assert_eq!(
        ann.bid(&id, Some(200), None, "2").await["outcome"],
        "outbid"
    );

    let path = format!("/v1/auctions/{}/{}", id.namespace(), id.name());
    let (status, body) = server.get(&path).await;
    assert_eq!(status, 200, "{body}");
    let snap: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (snap["seq"].clone(), snap["leader"].clone()),
        (json!(2), json!("Bob"))
    );
    assert!(snap.get("your_max").is_none());

    wait_for_bids(&env.store, &id, 2).await;
    let (status, body) = server.get(&format!("{path}/bids?after=0&limit=10")).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("777777"), "ceiling leaked: {body}");
    let history: Value = serde_json::from_str(&body).unwrap();
    let bids = history["bids"].as_array().unwrap();
    assert_eq!(bids.len(), 2);
    assert_eq!(bids[0]["seq"], 1);
    assert_eq!(bids[0]["bidder"], "Bob");
    assert_eq!(bids[1]["outcome"], "outbid");
    let (_, body) = server.get(&format!("{path}/bids?after=1")).await;
    let history: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(history["bids"].as_array().unwrap().len(), 1);

    for (bad, status) in [
        (format!("/v1/auctions/{}/missing", id.namespace()), 404),
        (format!("/v1/auctions/{}/missing/bids", id.namespace()), 404),
        ("/v1/auctions/Bad/x".to_owned(), 400),
        (format!("{path}/bids?limit=0"), 400),
        (format!("{path}/bids?after=-1"), 400),
    ] {
        assert_eq!(server.get(&bad).await.0, status, "{bad}");
    }

    assert_eq!(server.get("/healthz").await.0, 200);
    let (status, body) = server.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, metrics) = server.get("/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "gavel_ws_connections 2",
        "gavel_bids_total{outcome=\"leading\"} 1",
        "gavel_bids_total{outcome=\"outbid\"} 1",
        "gavel_bid_latency_seconds_bucket",
        "gavel_fanout_lag_seconds",
        "gavel_flush_backlog",
    ] {
        assert!(metrics.contains(name), "{name} missing in:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_heartbeat_and_graceful_shutdown() {
    let env = Env::new().await;
    let mut server = env.server(&[
        "--allowed-origins",
        "https://shop.example",
        "--heartbeat-interval",
        "200ms",
        "--heartbeat-timeout",
        "1s",
        "--shutdown-grace",
        "10s",
    ]);
    let id = env.auction(10).await;

    // origin allow-list
    for (origin, ok) in [
        ("https://evil.example", false),
        ("https://shop.example", true),
    ] {
        let mut request = server.ws_url().into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => assert!(ok, "{origin} accepted"),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert!(!ok, "{origin} refused");
                assert_eq!(r.status(), 403);
            }
            Err(e) => panic!("{e}"),
        }
    }

    // a client that never answers pings is dropped
    let mut request = server.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Origin", "https://shop.example".parse().unwrap());
    let (_mute, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = server.get("/metrics").await.1;
        if metrics.contains("gavel_ws_connections 0") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // SIGTERM: clients are told 1001, accepted bids are flushed, the process exits 0
    let mut c = Client::connect(&server, Some(&token("gus", "Gus", 600))).await;
    let mut h = Client::connect(&server, Some(&token("hal", "Hal", 600))).await;
    c.subscribe(&id, None).await;
    for i in 0..5 {
        let bidder = if i % 2 == 0 { &mut c } else { &mut h };
        assert_eq!(
            bidder
                .bid(&id, Some(100 + 10 * i), None, &i.to_string())
                .await["outcome"],
            "leading"
        );
    }
    server.signal("TERM");
    assert_eq!(c.close_code().await, Some(1001));
    assert!(server.wait_exit(), "{}", server.logs());
    wait_for_bids(&env.store, &id, 5).await;
    assert!(server.logs().contains("bid-api stopped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_older_than_the_trimmed_stream_is_replayed_from_postgres() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let id = env.auction(10).await;
    // Bids through an engine keeping about 5 events per stream: Redis trims whole
    // stream nodes (100 entries), so 300 bids leave far fewer than 300 in the stream.
    let engine = gavel_engine::Engine::connect(&env.redis_url, 1)
        .await
        .unwrap()
        .with_replay_window(5);
    const BIDS: u64 = 300;
    for i in 0..BIDS as i64 {
        let who = gavel_engine::Bidder::new(if i % 2 == 0 { "p" } else { "q" }, "P").unwrap();
        let bid = gavel_engine::BidRequest {
            amount: Some(100 + 10 * i),
            max: None,
        };
        engine.place_bid(&id, &who, bid).await.unwrap();
    }
    let kept: u64 = fred::interfaces::StreamsInterface::xlen(env.engine.redis(), id.events_key())
        .await
        .unwrap();
    assert!(kept < BIDS / 2, "the stream kept {kept} of {BIDS} events");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while env.store.event_count(&id).await.unwrap() < BIDS {
        assert!(std::time::Instant::now() < deadline, "not flushed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Resuming from seq 3: every later event in order, then the snapshot, then live.
    let mut c = Client::connect(&server, None).await;
    let got = c.subscribe(&id, Some(3)).await;
    let seqs: Vec<u64> = got.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    let mut expected: Vec<u64> = (4..=BIDS).collect();
    expected.push(BIDS);
    assert_eq!(seqs, expected);
    assert_eq!(got[0]["type"], "price");
    assert_eq!(got[0]["price"], 130);
    assert_eq!(got.last().unwrap()["type"], "snapshot");
    env.bid(&id, "p", 100_000).await;
    assert_eq!(c.next().await["seq"], BIDS + 1);

    // A since from another epoch, or beyond the history, gets a reset, not a replay.
    for (since, epoch) in [(3, 7), (BIDS + 50, 1)] {
        let mut d = Client::connect(&server, None).await;
        d.send(json!({"type":"subscribe","auction":id.to_string(),"since":since,"epoch":epoch}))
            .await;
        let reset = d.next().await;
        assert_eq!(reset["type"], "reset", "{reset}");
        assert_eq!(reset["reason"], "since_unknown");
        assert_eq!(reset["epoch"], 1);
        let snapshot = d.next().await;
        assert_eq!(snapshot["type"], "snapshot");
        assert_eq!(snapshot["seq"], BIDS + 1);
    }
}

/// Every bid is logged in a `bid` span naming its auction, bidder and ref and recording its
/// outcome and seq: one bid can be followed through the logs (JSON lines, the default).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bid_has_a_span_in_the_logs() {
    let env = Env::new().await;
    let server = env.server(&[]);
    let id = env.auction(10).await;
    let mut alice = Client::connect(&server, Some(&token("alice", "Alice", 600))).await;
    let r = alice.bid(&id, Some(100), None, "span-1").await;
    assert_eq!(r["outcome"], "leading");
    let r = alice.bid(&id, Some(5), None, "span-2").await;
    assert_eq!(r["code"], "ALREADY_LEADING");
    let spans = |reference: &str| -> Vec<Value> {
        server
            .logs()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "bid answered" && l["span"]["ref"] == reference)
            .map(|l| l["span"].clone())
            .collect()
    };
    let deadline = std::time::Instant::now() + WAIT;
    while spans("span-2").is_empty() {
        assert!(std::time::Instant::now() < deadline, "{}", server.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let accepted = spans("span-1");
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(
        accepted[0],
        json!({"name":"bid","auction":id.to_string(),"bidder":"alice","ref":"span-1",
               "outcome":"leading","seq":1})
    );
    let refused = spans("span-2");
    assert_eq!(
        refused[0],
        json!({"name":"bid","auction":id.to_string(),"bidder":"alice","ref":"span-2",
               "outcome":"ALREADY_LEADING"})
    );
}
