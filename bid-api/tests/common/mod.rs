//! Helpers of the bid-api integration tests: real Redis and PostgreSQL servers, the real
//! `gavel-bid-api` binary as a child process, and a real WebSocket client.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use gavel_engine::store::Store;
use gavel_engine::testing::{TestRedis, database_url, logged_port, redis_url, temp_dir};
use gavel_engine::{AuctionId, AuctionSettings, BidRequest, Bidder, Engine, Increments};
use gavel_protocol::{Bid, ClientMessage, Ref, ServerMessage, Subscribe};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The HS256 secret every test server verifies tokens with.
pub const SECRET: &str = "test-secret-of-gavel";

/// Generous bound on any single wait, only to avoid hangs.
pub const WAIT: Duration = Duration::from_secs(30);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Redis + PostgreSQL of one test, with an engine and a store on them.
pub struct Env {
    pub redis_url: String,
    pub database_url: String,
    pub engine: Engine,
    pub store: Store,
    _redis: Option<TestRedis>,
}

impl Env {
    pub async fn new() -> Self {
        let (redis_url, redis) = redis_url();
        Self::on(redis_url, redis).await
    }

    /// The same on a Redis the caller keeps (a cluster).
    pub async fn on_redis(redis_url: String) -> Self {
        Self::on(redis_url, None).await
    }

    async fn on(redis_url: String, redis: Option<TestRedis>) -> Self {
        let database_url = database_url().await;
        let engine = Engine::connect(&redis_url, 2).await.expect("redis");
        let store = Store::connect_lazy(&database_url).expect("postgres");
        Self {
            redis_url,
            database_url,
            engine,
            store,
            _redis: redis,
        }
    }

    /// Provisions a fresh auction open now for an hour with a flat step.
    pub async fn auction(&self, step: i64) -> AuctionId {
        self.auction_with(|s| s.increments = Increments::flat(step).unwrap())
            .await
    }

    /// Provisions a fresh auction with the default settings changed by `change`.
    pub async fn auction_with(&self, change: impl FnOnce(&mut AuctionSettings)) -> AuctionId {
        let id = auction_id();
        let mut s = open_now(10);
        change(&mut s);
        self.engine.provision(&id, &s).await.expect("provision");
        id
    }

    /// Starts a bid-api process on this environment.
    pub fn server(&self, extra: &[&str]) -> Server {
        Server::start(&self.redis_url, &self.database_url, extra)
    }

    /// Starts a bid-api process with the environment variables `vars` set.
    pub fn server_with_vars(&self, extra: &[&str], vars: &[(&str, &str)]) -> Server {
        Server::spawn(&self.redis_url, &self.database_url, extra, vars, true, true)
    }

    /// Starts a bid-api process without the tests' HS256 secret (only `extra`'s keys).
    pub fn server_without_secret(&self, extra: &[&str]) -> Server {
        Server::start_with(&self.redis_url, &self.database_url, false, extra)
    }

    /// Places a bid straight through the engine.
    pub async fn bid(&self, id: &AuctionId, who: &str, amount: i64) -> gavel_engine::BidAccepted {
        let bidder = Bidder::new(who, who.to_uppercase()).unwrap();
        self.engine
            .place_bid(
                id,
                &bidder,
                BidRequest {
                    amount: Some(amount),
                    max: None,
                },
            )
            .await
            .expect("bid accepted")
    }

    /// The auction's last seq in Redis.
    pub async fn seq(&self, id: &AuctionId) -> u64 {
        self.engine.snapshot(id, None).await.unwrap().seq
    }
}

pub fn auction_id() -> AuctionId {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    AuctionId::new(&format!("t{}", std::process::id()), &format!("lot-{n}")).unwrap()
}

pub use gavel_engine::runtime::now_ms;

/// Open now for an hour, starting price 100, flat step.
pub fn open_now(step: i64) -> AuctionSettings {
    AuctionSettings {
        title: "Test lot".into(),
        currency: "USD".into(),
        starting_price: 100,
        reserve_price: None,
        increments: Increments::flat(step).unwrap(),
        starts_at: None,
        ends_at: now_ms() + 3_600_000,
        soft_close: None,
        bid_limit: None,
    }
}

/// An HS256 token for `sub` valid for `ttl_secs` (negative: already expired).
pub fn token(sub: &str, name: &str, ttl_secs: i64) -> String {
    token_signed(sub, name, ttl_secs, SECRET)
}

pub fn token_signed(sub: &str, name: &str, ttl_secs: i64, secret: &str) -> String {
    let exp = (now_ms() / 1000 + ttl_secs).max(0);
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": sub, "name": name, "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A running `gavel-bid-api` process, killed on drop.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts a process and waits until it is done starting (connected to Redis).
    pub fn start(redis: &str, database: &str, extra: &[&str]) -> Self {
        Self::spawn(redis, database, extra, &[], true, true)
    }

    /// Starts a process, with the tests' HS256 secret when `secret`.
    pub fn start_with(redis: &str, database: &str, secret: bool, extra: &[&str]) -> Self {
        Self::spawn(redis, database, extra, &[], secret, true)
    }

    fn spawn(
        redis: &str,
        database: &str,
        extra: &[&str],
        vars: &[(&str, &str)],
        secret: bool,
        started: bool,
    ) -> Self {
        static CONSUMER: AtomicU32 = AtomicU32::new(0);
        let consumer = format!(
            "test-{}-{}",
            std::process::id(),
            CONSUMER.fetch_add(1, Ordering::Relaxed)
        );
        let secret_args: &[&str] = if secret {
            &["--jwt-secret", SECRET]
        } else {
            &[]
        };
        let dir = temp_dir("bid-api");
        let log = dir.join("bid-api.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_gavel-bid-api"))
            // Port 0: the process binds a free port and logs it (no race for the port).
            .args(["--listen", "127.0.0.1:0"])
            .args(["--redis-url", redis, "--database-url", database])
            .args(secret_args)
            // Exact display names in the protocol tests (the tag has tests of its own).
            .args(["--jwt-leeway", "0s", "--display-name-tag", "false"])
            .args(["--flush-consumer", &consumer])
            .args(extra)
            .env_remove("GAVEL_DEV_AUTH")
            .env_remove("GAVEL_ALLOWED_ORIGINS")
            .env("RUST_LOG", "info,gavel_bid_api=debug")
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start gavel-bid-api");
        let mut server = Self {
            child: Some(child),
            port: 0,
            log,
        };
        server.wait_ready(started);
        server
    }

    /// Starts a process without waiting for it to finish starting (it may be waiting for
    /// Redis): only until its port answers.
    pub fn start_listening(redis: &str, database: &str, extra: &[&str]) -> Self {
        Self::spawn(redis, database, extra, &[], true, false)
    }

    /// Waits until the process listens (its log names the port it bound) and, with
    /// `started`, until start-up is over and the real router serves (`bid-api listening`).
    fn wait_ready(&mut self, started: bool) {
        let message = if started {
            "bid-api listening"
        } else {
            "bid-api starting"
        };
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(port) = logged_port(&self.log, message) {
                self.port = port;
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("bid-api exited with {status}:\n{}", self.logs());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "bid-api did not listen:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/v1/ws", self.port)
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit and returns whether it exited successfully.
    pub fn wait_exit(&mut self) -> bool {
        let mut child = self.child.take().expect("running");
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            assert!(std::time::Instant::now() < deadline, "bid-api did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Resident memory of the process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// A plain HTTP GET: (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.port, path, &[]).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A plain HTTP/1.1 GET with extra headers: (status, body).
pub async fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let answer = gavel_engine::testing::http_get(port, path, headers)
        .await
        .expect("HTTP GET");
    (answer.status, answer.body().to_owned())
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking the v1 protocol: frames it sends are the protocol's types,
/// and every frame it receives must parse as one (the tests then read them as JSON values,
/// so that they assert on the wire text itself).
pub struct Client {
    pub ws: Ws,
    pub welcome: Value,
    /// Whether each received frame is checked against the protocol (on, but for a reader
    /// that must keep pace with the server in a throughput test).
    pub check_protocol: bool,
}

/// How a read ended when it did not yield a message.
#[derive(Debug)]
pub enum End {
    Closed(Option<u16>),
    Failed(String),
}

impl Client {
    /// Connects with an optional bearer token and reads the `welcome`.
    pub async fn connect(server: &Server, token: Option<&str>) -> Self {
        Self::connect_url(&server.ws_url(), token).await
    }

    pub async fn connect_url(url: &str, token: Option<&str>) -> Self {
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("Authorization", format!("Bearer {token}").parse().unwrap());
        }
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
            .await
            .expect("connect timeout")
            .expect("connect");
        Self::after_connect(ws).await
    }

    pub async fn after_connect(ws: Ws) -> Self {
        let mut client = Self {
            ws,
            welcome: Value::Null,
            check_protocol: true,
        };
        client.welcome = client.next().await;
        assert_eq!(client.welcome["type"], "welcome", "{}", client.welcome);
        client
    }

    pub async fn send(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_owned()))
            .await
            .expect("send");
    }

    /// The next protocol message, or how the connection ended.
    pub async fn try_next(&mut self) -> Result<Value, End> {
        // One deadline for the message, however many pings come before it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| End::Failed("timeout".into()))?;
            match frame {
                Some(Ok(Message::Text(t))) => {
                    // Every frame must be a message of the protocol as clients read it.
                    if self.check_protocol
                        && let Err(e) = ServerMessage::parse(t.as_str())
                    {
                        panic!("the server sent a frame outside the protocol ({e}): {t}");
                    }
                    return Ok(serde_json::from_str(t.as_str()).expect("server sent JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(End::Closed(frame.map(|f| u16::from(f.code))));
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(End::Failed(e.to_string())),
                None => return Err(End::Closed(None)),
            }
        }
    }

    /// The next protocol message (panics if the connection ends).
    pub async fn next(&mut self) -> Value {
        match self.try_next().await {
            Ok(v) => v,
            Err(end) => panic!("connection ended: {end:?}"),
        }
    }

    /// Skips messages until one of `kind` arrives.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let m = self.next().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// Reads until the server closes; returns the close code.
    pub async fn close_code(&mut self) -> Option<u16> {
        loop {
            match self.try_next().await {
                Ok(_) => continue,
                Err(End::Closed(code)) => return code,
                Err(End::Failed(e)) => panic!("connection failed without a close frame: {e}"),
            }
        }
    }

    /// Sends a ping and waits for its pong: every earlier reply has arrived.
    pub async fn sync(&mut self) -> Vec<Value> {
        self.send_text(&ClientMessage::Ping.to_json()).await;
        let mut before = Vec::new();
        loop {
            let m = self.next().await;
            if m["type"] == "pong" {
                return before;
            }
            before.push(m);
        }
    }

    pub async fn subscribe(&mut self, id: &AuctionId, since: Option<u64>) -> Vec<Value> {
        let msg = Subscribe {
            auction: id.to_string(),
            since,
            epoch: None,
        };
        self.send_text(&msg.to_json()).await;
        let mut got = Vec::new();
        loop {
            let m = self.next().await;
            let done = m["type"] == "snapshot" || m["type"] == "error";
            got.push(m);
            if done {
                return got;
            }
        }
    }

    /// Sends a bid and returns its reply (other messages before it are skipped).
    pub async fn bid(
        &mut self,
        id: &AuctionId,
        amount: Option<i64>,
        max: Option<i64>,
        r: &str,
    ) -> Value {
        let msg = Bid {
            auction: id.to_string(),
            amount,
            max,
            r#ref: Ref::from(r),
        };
        self.send_text(&msg.to_json()).await;
        loop {
            let m = self.next().await;
            if (m["type"] == "bid_result" || m["type"] == "bid_rejected") && m["ref"] == r {
                return m;
            }
        }
    }
}

/// Closes a close code into a number (for tests comparing codes).
pub fn code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// Waits until PostgreSQL holds `n` bids of the auction.
pub async fn wait_for_bids(store: &Store, id: &AuctionId, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let count = store.bid_count(id).await.unwrap_or(0);
        if count >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {count} of {n} bids flushed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
