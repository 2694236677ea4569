//! Slow and abusive clients (issue #10 part 1), against a real `gavel-bid-api`: slow
//! header senders are cut off by the header-read timeout while a well-behaved client
//! still bids, connection caps (total, per IP) and the upgrade rate per IP refuse with
//! 503/429 and `Retry-After`, and a trusted proxy header names the client.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A TCP connection to the server from local address `from` (127.0.0.x).
async fn connect_from(port: u16, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap()
}

/// Reads what the server sends until it closes the connection (panics if it does not
/// within WAIT).
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut out)).await {
        Ok(_) => String::from_utf8_lossy(&out).into_owned(),
        Err(_) => panic!("the server kept the connection open"),
    }
}

async fn metric(server: &Server, line_start: &str) -> f64 {
    let (_, text) = server.get("/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The upgrade's refusal, or None when it was accepted.
async fn upgrade(server: &Server, xff: Option<&str>) -> Option<(u16, Value)> {
    let mut request = server.ws_url().into_client_request().unwrap();
    if let Some(xff) = xff {
        request
            .headers_mut()
            .insert("X-Forwarded-For", xff.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let retry_after = response.headers().get("retry-after").cloned();
            assert!(retry_after.is_some(), "no Retry-After");
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).unwrap_or(Value::Null))
                .unwrap_or(Value::Null);
            Some((response.status().as_u16(), body))
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_a_probe_still_bids() {
    let env = Env::new().await;
    let server = env.server(&[
        "--http-header-timeout",
        "1s",
        "--max-connections-per-ip",
        "0",
    ]);
    let id = env.auction(10).await;
    let port = server.port;
    // 600 slow connections: half stop in the middle of a header, half send nothing.
    let mut slow = Vec::new();
    for i in 0..600 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
                .await
                .unwrap();
        }
        slow.push(s);
    }
    // 100 busy clients at about 20 messages per second each.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut busy = Vec::new();
    for _ in 0..100 {
        let mut c = Client::connect(&server, None).await;
        let stop = stop.clone();
        busy.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                c.send(json!({"type":"ping"})).await;
                c.next_of("pong").await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    // The probe: a bid and a health check while all of that is held.
    let started = Instant::now();
    let mut probe = Client::connect(&server, Some(&token("probe", "Probe", 600))).await;
    let reply = probe.bid(&id, Some(100), None, "probe").await;
    let bid_latency = started.elapsed();
    assert_eq!(reply["type"], "bid_result", "{reply}");
    let started = Instant::now();
    let (status, _) = server.get("/healthz").await;
    let health_latency = started.elapsed();
    assert_eq!(status, 200);
    eprintln!(
        "probe under 600 slow connections and 100 busy clients: connect+bid {bid_latency:?}, /healthz {health_latency:?}"
    );
    // Every slow connection is closed by the server (header-read timeout).
    for s in &mut slow {
        let answer = read_until_closed(s).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for b in busy {
        b.await.unwrap();
    }
}

#[tokio::test]
async fn connection_caps_refuse_with_retry_after() {
    let env = Env::new().await;
    let server = env.server(&[
        "--http-header-timeout",
        "60s",
        "--max-tcp-connections",
        "12",
        "--max-connections-per-ip",
        "5",
    ]);
    let port = server.port;
    // Per IP: the sixth connection from 127.0.0.2 is refused with 429, 127.0.0.3 is not.
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(connect_from(port, "127.0.0.2").await);
    }
    let mut sixth = connect_from(port, "127.0.0.2").await;
    let answer = read_until_closed(&mut sixth).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("\"reason\":\"per_ip\""), "{answer}");
    for from in ["127.0.0.3", "127.0.0.4"] {
        for _ in 0..3 {
            held.push(connect_from(port, from).await);
        }
    }
    // 11 held: the twelfth slot is the probe's (once the refused sixth connection's task
    // has ended: it holds a slot until then); then the process is full.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = server.get("/healthz").await;
        if status == 200 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    held.push(connect_from(port, "127.0.0.5").await);
    let mut over = connect_from(port, "127.0.0.6").await;
    let answer = read_until_closed(&mut over).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"reason\":\"total\""), "{answer}");
    drop(held);
    // Released slots are admitted again.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut s = connect_from(port, "127.0.0.2").await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answer = read_until_closed(&mut s).await;
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        metric(
            &server,
            "gavel_connections_refused_total{reason=\"per_ip\"}"
        )
        .await
            >= 1.0
    );
    assert!(metric(&server, "gavel_connections_refused_total{reason=\"total\"}").await >= 1.0);
}

#[tokio::test]
async fn upgrades_per_ip_are_rate_limited_and_a_trusted_header_names_the_client() {
    let env = Env::new().await;
    let server = env.server(&[
        "--upgrades-per-ip-per-second",
        "0.2",
        "--upgrade-burst",
        "2",
    ]);
    assert!(upgrade(&server, None).await.is_none());
    assert!(upgrade(&server, None).await.is_none());
    let (status, body) = upgrade(&server, None).await.expect("third refused");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["reason"], "upgrade_rate", "{body}");
    // Without a trusted header, X-Forwarded-For changes nothing.
    assert!(upgrade(&server, Some("198.51.100.1")).await.is_some());

    let proxied = env.server(&[
        "--upgrades-per-ip-per-second",
        "0.2",
        "--upgrade-burst",
        "2",
        "--trusted-proxy-header",
        "X-Forwarded-For",
    ]);
    assert!(upgrade(&proxied, Some("198.51.100.1")).await.is_none());
    assert!(upgrade(&proxied, Some("198.51.100.2")).await.is_none());
    // The last address of the header is the client: 198.51.100.1 again.
    assert!(
        upgrade(&proxied, Some("10.9.9.9, 198.51.100.1"))
            .await
            .is_none()
    );
    let (status, body) = upgrade(&proxied, Some("10.9.9.8, 198.51.100.1"))
        .await
        .expect("same client IP refused");
    assert_eq!((status, &body["reason"]), (429, &json!("upgrade_rate")));
    assert!(upgrade(&proxied, Some("198.51.100.2")).await.is_none());

    // Open WebSockets per client IP behind the proxy: one for 198.51.100.3.
    let capped = env.server(&[
        "--max-connections-per-ip",
        "1",
        "--trusted-proxy-header",
        "X-Forwarded-For",
    ]);
    let mut request = capped.ws_url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Forwarded-For", "198.51.100.3".parse().unwrap());
    let (_open, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let (status, body) = upgrade(&capped, Some("198.51.100.3"))
        .await
        .expect("second WebSocket of one IP refused");
    assert_eq!((status, &body["reason"]), (429, &json!("per_ip")));
    assert!(upgrade(&capped, Some("198.51.100.4")).await.is_none());
}

/// The auctions one connection bids on are bounded like its subscriptions.
#[tokio::test]
async fn auctions_bid_on_per_connection_are_bounded() {
    let env = Env::new().await;
    let server = env.server(&["--max-subscriptions", "2"]);
    let mut c = Client::connect(&server, Some(&token("many", "Many", 600))).await;
    for (i, expect) in ["bid_result", "bid_result", "bid_rejected"]
        .iter()
        .enumerate()
    {
        let id = env.auction(10).await;
        let reply = c.bid(&id, Some(100), None, &i.to_string()).await;
        assert_eq!(reply["type"], *expect, "{reply}");
        if *expect == "bid_rejected" {
            assert_eq!(reply["code"], "TOO_LARGE", "{reply}");
            assert_eq!(env.seq(&id).await, 0, "nothing written");
        }
    }
}
