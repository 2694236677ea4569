//! `GET /v1/ws`: the upgrade (origin check, identity, size limits) and the loop of one
//! connection: subscriptions with replay and gap filling, and bids.
//!
//! This module holds the upgrade and the connection's loop (frames, heartbeat, token
//! expiry, shutdown); `subscribe` its subscriptions (replay, gaps, resets) and `bid` its
//! bids. Decided elsewhere: the identity of an upgrade in [`crate::auth`], the wire types
//! and the parsing of frames in [`gavel_protocol`], the replies as pure functions in
//! [`reply`], the error bodies of refused upgrades in [`crate::http::json_error`].
//!
//! Each connection is one task that owns its socket and waits on, in priority order:
//! shutdown (close 1001), a slow-consumer kick (close 1013), its bounded event queue,
//! the client's frames, and the heartbeat. Bids are decided inline (one engine call, one
//! Redis round trip), so a shutdown never interrupts a bid: the reply is sent first.
//! Every write has a deadline (the heartbeat timeout): a client whose socket stays full
//! that long is dropped.
//!
//! Protocol decisions (see also `protocol` and the README):
//! - A token on the upgrade that does not verify refuses the upgrade with HTTP 401 and a
//!   JSON `{"code":"UNAUTHENTICATED",...}` body; no token means an anonymous watcher.
//! - With `since`, the events after `since` up to the snapshot are replayed first, then
//!   `snapshot`, then live events: every message arrives in `seq` order. Events Redis no
//!   longer holds are replayed from PostgreSQL. When `since`/`epoch` name a history the
//!   server does not have (a restore since, a seq never recorded), `reset` comes instead
//!   of the replay.
//! - When the auction's live state is restored from PostgreSQL, every subscriber gets
//!   `reset` and a fresh `snapshot` (see [`crate::protocol::Reset`]).
//! - `unsubscribe` has no reply. Subscribing again re-sends the snapshot (and replay).
//! - A connection that placed a bid on an auction keeps getting its `outbid` for that
//!   auction until it closes, even if it never subscribed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use futures::SinkExt;
use gavel_engine::runtime::now_ms;
use gavel_engine::{AuctionId, BidRequest};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::auth::{Identity, IdentityRefused, UpgradeCredentials, origin_allowed, unix_now};
use crate::fanout::{ConnHandle, FanoutEvent, Kick};
use crate::http::{error_body, json_error};
use crate::protocol::{
    ClientMessage, ErrorCode, PROTOCOL, Refreshed, SUBPROTOCOL, ServerMessage, Welcome,
    parse_client_message,
};
use crate::state::{AppState, ConnectionSlot};

mod bid;
pub mod reply;
mod subscribe;

/// Close code: normal closure.
pub const CLOSE_NORMAL: u16 = 1000;
/// Close code: the server is going away (shutdown).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: a frame or message over the size limit.
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Close code: try again later (slow consumer dropped).
pub const CLOSE_TRY_AGAIN_LATER: u16 = 1013;
/// Close code: the connection's token expired and no `refresh` came within
/// `GAVEL_TOKEN_REFRESH_GRACE`.
pub const CLOSE_TOKEN_EXPIRED: u16 = 4001;

/// Events read from the stream per page when replaying or filling a gap.
const REPLAY_PAGE: u64 = 500;

/// The answer to a refused identity: 401 `UNAUTHENTICATED` (with the token's `reason`),
/// or 503 `UNAVAILABLE` with `Retry-After` when the provider's keys cannot be fetched.
fn identity_refused(refusal: &IdentityRefused) -> Response {
    match refusal {
        IdentityRefused::Token(e) => {
            debug!(error = %e, "refused token");
            let (status, code) = if e.is_temporary() {
                (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable)
            } else {
                (StatusCode::UNAUTHORIZED, ErrorCode::Unauthenticated)
            };
            let mut response = error_body(status, code, Some(e.reason()), e.to_string());
            if e.is_temporary() {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            }
            response
        }
        IdentityRefused::DevBidder(_) | IdentityRefused::DevAuthOff => json_error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthenticated,
            refusal.to_string(),
        ),
    }
}

/// The upgrade handler of `GET /v1/ws`.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    connection: Option<axum::Extension<crate::server::ConnectionInfo>>,
    ws: WebSocketUpgrade,
) -> Response {
    // Upgrade rate and open WebSockets per client IP (crate::limits); the guards live
    // as long as the socket.
    let mut guards = None;
    if let Some(axum::Extension(info)) = connection {
        match info.limits.admit_upgrade(info.peer, &headers) {
            Ok(per_ip) => guards = Some((info.admitted, per_ip)),
            Err((refusal, retry_after)) => return refusal.response(retry_after),
        }
    }
    if state.shutting_down() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "server shutting down",
        );
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let allowed = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, host, &state.allowed_origins));
        if !allowed {
            return json_error(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "origin not allowed (GAVEL_ALLOWED_ORIGINS)",
            );
        }
    }
    let protocols: Vec<String> = ws
        .requested_protocols()
        .filter_map(|p| p.to_str().ok())
        .flat_map(|p| p.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let credentials = UpgradeCredentials {
        authorization: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
        subprotocols: &protocols,
        query_token: query.get("token").map(String::as_str),
        query_bidder: query.get("bidder").map(String::as_str),
    };
    let identity = match state.auth.upgrade_identity(credentials).await {
        Ok(identity) => identity,
        Err(refusal) => return identity_refused(&refusal),
    };
    let Some(slot) = state.open_connection() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "too many connections",
        );
    };
    let limit = state.config.max_message_bytes;
    ws.protocols([SUBPROTOCOL])
        .max_frame_size(limit)
        .max_message_size(limit)
        // tungstenite's defaults (128 KiB read chunk zero-filled on every read, 128 KiB
        // write buffer) cost ~150 KiB per idle connection and most of the CPU of a bid;
        // frames here are small, so small buffers do.
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| async move {
            Connection::new(state, socket, identity, slot).run().await;
            drop(guards);
        })
}

/// Read chunk of each connection's socket; one frame of the size limit fits in a few.
const READ_BUFFER_BYTES: usize = 4096;

/// Frames fed without a flush are written to the socket once this many bytes are waiting
/// (or at the flush): the live events queued for a connection go out in one write. The
/// buffer grows only as far as a burst needs.
const WRITE_BUFFER_BYTES: usize = 4096;

/// Queued live events handled before one flush of the connection's socket.
const EVENT_BATCH: usize = 64;

/// Token bucket of one connection's incoming messages.
struct RateLimit {
    tokens: f64,
    per_second: f64,
    burst: f64,
    at: Instant,
}

impl RateLimit {
    fn new(per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            tokens: burst,
            per_second: f64::from(per_second.max(1)),
            burst,
            at: Instant::now(),
        }
    }

    /// Takes one token, or says how many ms until one is available.
    fn take(&mut self) -> Result<(), i64> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.per_second) * 1000.0).ceil() as i64)
        }
    }
}

/// The connection is gone (closed, failed, or stuck past its deadline).
struct Gone;

struct Connection {
    state: Arc<AppState>,
    socket: WebSocket,
    identity: Option<Identity>,
    handle: Arc<ConnHandle>,
    rx: mpsc::Receiver<Arc<FanoutEvent>>,
    /// Subscribed auctions and the epoch and last seq delivered for each.
    subs: HashMap<AuctionId, Delivered>,
    /// Auctions this connection bid on (for `outbid`): joined in the fan-out as a bidder
    /// at the first bid, left when the connection closes.
    bid_on: HashSet<AuctionId>,
    rate: RateLimit,
    last_seen: Instant,
    /// When the token expired and was announced: the connection closes with 4001
    /// `GAVEL_TOKEN_REFRESH_GRACE` later unless a `refresh` comes.
    expired_since: Option<Instant>,
    _slot: ConnectionSlot,
}

/// Where a subscription stands.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    epoch: u64,
    seq: u64,
}

enum Step {
    Continue,
    Close(u16, &'static str),
    Drop,
}

impl Connection {
    fn new(
        state: Arc<AppState>,
        socket: WebSocket,
        identity: Option<Identity>,
        slot: ConnectionSlot,
    ) -> Self {
        let (tx, rx) = mpsc::channel(state.config.send_queue.max(1));
        let handle = Arc::new(ConnHandle {
            id: slot.id,
            tx,
            kick: Arc::new(Kick::default()),
            bidder: identity.as_ref().map(|i| i.bidder.id.clone()),
        });
        let rate = RateLimit::new(state.config.messages_per_second, state.config.message_burst);
        Self {
            state,
            socket,
            identity,
            handle,
            rx,
            subs: HashMap::new(),
            bid_on: HashSet::new(),
            rate,
            last_seen: Instant::now(),
            expired_since: None,
            _slot: slot,
        }
    }

    fn bidder_id(&self) -> Option<&str> {
        self.identity.as_ref().map(|i| i.bidder.id.as_str())
    }

    async fn run(mut self) {
        debug!(conn = self.handle.id, bidder = ?self.bidder_id(), "connection open");
        let welcome = ServerMessage::Welcome(Welcome {
            bidder: self.bidder_id().map(str::to_owned),
            server_time: now_ms(),
            protocol: PROTOCOL.to_owned(),
        });
        let step = match self.send_msg(&welcome).await {
            Ok(()) => self.serve().await,
            Err(Gone) => Step::Drop,
        };
        if let Step::Close(code, reason) = step {
            self.close(code, reason).await;
        }
        let auctions: HashSet<AuctionId> = self
            .subs
            .keys()
            .cloned()
            .chain(self.bid_on.iter().cloned())
            .collect();
        for auction in auctions {
            self.state.fanout.leave(&auction, &self.handle).await;
        }
        debug!(conn = self.handle.id, "connection closed");
    }

    async fn serve(&mut self) -> Step {
        let mut shutdown = self.state.shutdown.clone();
        let kick = self.handle.kick.clone();
        let mut heartbeat = tokio::time::interval(self.state.config.heartbeat_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            let step = tokio::select! {
                biased;
                _ = until_down(&mut shutdown) => {
                    return Step::Close(CLOSE_GOING_AWAY, "server shutting down; reconnect");
                }
                _ = kick.kicked() => {
                    return Step::Close(
                        CLOSE_TRY_AGAIN_LATER,
                        "too slow: events were dropped; resubscribe with since",
                    );
                }
                Some(event) = self.rx.recv() => self.on_events(event).await,
                frame = self.socket.recv() => self.on_frame(frame).await,
                _ = heartbeat.tick() => {
                    if self.last_seen.elapsed() > self.state.config.heartbeat_timeout {
                        info!(conn = self.handle.id, "dropping dead connection (no pong)");
                        return Step::Drop;
                    }
                    match self.check_expiry().await {
                        Step::Continue => {}
                        other => return other,
                    }
                    match self.send(Message::Ping(Bytes::new())).await {
                        Ok(()) => Step::Continue,
                        Err(Gone) => Step::Drop,
                    }
                }
            };
            match step {
                Step::Continue => {}
                other => return other,
            }
        }
    }

    async fn send(&mut self, message: Message) -> Result<(), Gone> {
        let deadline = self.state.config.heartbeat_timeout;
        match tokio::time::timeout(deadline, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                info!(conn = self.handle.id, "dropping connection: writes stuck");
                Err(Gone)
            }
        }
    }

    async fn send_text(&mut self, text: Utf8Bytes) -> Result<(), Gone> {
        self.send(Message::Text(text)).await
    }

    /// Queues a frame without flushing it (see [`Self::flush`]).
    async fn feed_text(&mut self, text: Utf8Bytes) -> Result<(), Gone> {
        let deadline = self.state.config.heartbeat_timeout;
        match tokio::time::timeout(deadline, self.socket.feed(Message::Text(text))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                info!(conn = self.handle.id, "dropping connection: writes stuck");
                Err(Gone)
            }
        }
    }

    /// Writes out the frames fed so far.
    async fn flush(&mut self) -> Result<(), Gone> {
        let deadline = self.state.config.heartbeat_timeout;
        match tokio::time::timeout(deadline, self.socket.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                info!(conn = self.handle.id, "dropping connection: writes stuck");
                Err(Gone)
            }
        }
    }

    /// Handles a live event and the others already queued behind it (up to
    /// [`EVENT_BATCH`]), then flushes their frames at once.
    async fn on_events(&mut self, first: Arc<FanoutEvent>) -> Step {
        let mut event = first;
        let mut handled = 0;
        loop {
            match self.on_event(&event).await {
                Step::Continue => {}
                other => return other,
            }
            handled += 1;
            if handled == EVENT_BATCH {
                break;
            }
            match self.rx.try_recv() {
                Ok(next) => event = next,
                Err(_) => break,
            }
        }
        match self.flush().await {
            Ok(()) => Step::Continue,
            Err(Gone) => Step::Drop,
        }
    }

    async fn send_msg(&mut self, message: &ServerMessage) -> Result<(), Gone> {
        self.send_text(Utf8Bytes::from(message.to_json())).await
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code,
            reason: Utf8Bytes::from_static(reason),
        };
        if self.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        if code == CLOSE_TOO_BIG {
            // The oversized frame is still unread: reading on would buffer it. Give the
            // client a moment to read the close frame before the socket is dropped.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        // Wait briefly for the client's close reply, discarding anything else.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(frame)) = self.socket.recv().await {
                if matches!(frame, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    async fn on_frame(&mut self, frame: Option<Result<Message, axum::Error>>) -> Step {
        let message = match frame {
            None => return Step::Drop,
            Some(Ok(message)) => message,
            Some(Err(e)) => {
                // tungstenite checks a frame's declared length before reading its
                // payload, so nothing oversized is ever buffered.
                if is_capacity_error(&e) {
                    info!(
                        conn = self.handle.id,
                        "closing connection: frame over the size limit"
                    );
                    return Step::Close(CLOSE_TOO_BIG, "message too big");
                }
                debug!(conn = self.handle.id, error = %e, "connection failed");
                return Step::Drop;
            }
        };
        self.last_seen = Instant::now();
        let text = match message {
            Message::Text(text) => text,
            Message::Binary(_) => {
                return self
                    .reply_error(
                        ErrorCode::InvalidMessage,
                        "binary frames are not accepted; send JSON text",
                    )
                    .await;
            }
            Message::Close(_) => return Step::Drop,
            Message::Ping(_) | Message::Pong(_) => return Step::Continue,
        };
        let parsed = parse_client_message(&text);
        if let Err(retry_after_ms) = self.rate.take() {
            self.state.metrics.rate_limited.inc();
            return self
                .reply(&reply::rate_limited(&parsed, retry_after_ms))
                .await;
        }
        let message = match parsed {
            Err(e) => return self.reply(&e.to_server_message()).await,
            Ok(message) => message,
        };
        // The protocol checked the name; the engine's id follows the same rule.
        let auction = |name: &str| name.parse::<AuctionId>();
        match message {
            ClientMessage::Ping => self.reply(&ServerMessage::Pong).await,
            ClientMessage::Refresh(refresh) => self.refresh(&refresh.token).await,
            ClientMessage::Subscribe(sub) => match auction(&sub.auction) {
                Ok(id) => self.subscribe(id, sub.since, sub.epoch).await,
                Err(e) => {
                    self.reply_error(ErrorCode::InvalidMessage, &e.to_string())
                        .await
                }
            },
            ClientMessage::Unsubscribe(unsub) => {
                let Ok(auction) = auction(&unsub.auction) else {
                    return Step::Continue;
                };
                if self.subs.remove(&auction).is_some() {
                    if self.bid_on.contains(&auction) {
                        self.state.fanout.stop_watching(&auction, self.handle.id);
                    } else {
                        self.state.fanout.leave(&auction, &self.handle).await;
                    }
                }
                Step::Continue
            }
            ClientMessage::Bid(bid) => match auction(&bid.auction) {
                Ok(id) => {
                    let request = BidRequest {
                        amount: bid.amount,
                        max: bid.max,
                    };
                    self.bid(id, request, bid.r#ref).await
                }
                Err(e) => {
                    self.reply_error(ErrorCode::InvalidMessage, &e.to_string())
                        .await
                }
            },
        }
    }

    async fn reply(&mut self, message: &ServerMessage) -> Step {
        match self.send_msg(message).await {
            Ok(()) => Step::Continue,
            Err(Gone) => Step::Drop,
        }
    }

    async fn reply_error(&mut self, code: ErrorCode, message: &str) -> Step {
        self.reply(&reply::error(code, message.to_owned(), None))
            .await
    }

    /// On a heartbeat: announces an expired token once, and closes the connection with
    /// 4001 when the refresh grace has passed without a `refresh`.
    async fn check_expiry(&mut self) -> Step {
        let Some(identity) = &self.identity else {
            return Step::Continue;
        };
        if identity.valid_at(unix_now(), self.state.auth.leeway()) {
            return Step::Continue;
        }
        match self.expired_since {
            None => {
                self.expired_since = Some(Instant::now());
                let grace = self.state.config.token_refresh_grace.as_secs();
                let message = format!(
                    "token expired: send {{\"type\":\"refresh\",\"token\":...}} within {grace}s or the connection closes with 4001"
                );
                self.reply_error(ErrorCode::Unauthenticated, &message).await
            }
            Some(since) if since.elapsed() >= self.state.config.token_refresh_grace => {
                info!(conn = self.handle.id, "closing connection: token expired");
                Step::Close(CLOSE_TOKEN_EXPIRED, "token expired")
            }
            Some(_) => Step::Continue,
        }
    }

    /// `refresh`: a new token for the same bidder replaces the connection's.
    async fn refresh(&mut self, token: &str) -> Step {
        let Some(current) = &self.identity else {
            return self
                .reply_error(
                    ErrorCode::Unauthenticated,
                    "anonymous connections cannot refresh; reconnect with a token",
                )
                .await;
        };
        // From the cached keys only: this connection's loop must not wait for the provider.
        let identity = match self.state.auth.verify_cached(token).await {
            Ok(identity) => identity,
            Err(e) => {
                let code = if e.is_temporary() {
                    ErrorCode::Unavailable
                } else {
                    ErrorCode::Unauthenticated
                };
                return self.reply_error(code, &e.to_string()).await;
            }
        };
        if identity.bidder.id != current.bidder.id {
            return self
                .reply_error(
                    ErrorCode::Unauthenticated,
                    "a refresh token must be for the connection's bidder; reconnect to change bidder",
                )
                .await;
        }
        let reply = ServerMessage::Refreshed(Refreshed {
            bidder: identity.bidder.id.clone(),
            expires_at: identity
                .expires_at
                .map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        });
        self.identity = Some(identity);
        self.expired_since = None;
        self.reply(&reply).await
    }

    fn interested(&self, auction: &AuctionId) -> bool {
        self.subs.contains_key(auction) || self.bid_on.contains(auction)
    }
}

/// Resolves once the process is shutting down.
async fn until_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await;
}

/// Whether a socket error is tungstenite's size-limit error (a frame or message over
/// `GAVEL_MAX_MESSAGE_BYTES`), found in the error's chain of sources.
fn is_capacity_error(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if matches!(
            s.downcast_ref::<tokio_tungstenite::tungstenite::Error>(),
            Some(tokio_tungstenite::tungstenite::Error::Capacity(_))
        ) {
            return true;
        }
        source = s.source();
    }
    false
}
