//! `GET /v1/ws`: the upgrade (origin check, identity, size limits) and the loop of one
//! connection: subscriptions with replay and gap filling, and bids.
//!
//! What is decided elsewhere: the identity of an upgrade in [`crate::auth`], the wire
//! types and the parsing of frames in [`gavel_protocol`], the replies as pure functions in
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
use gavel_engine::runtime::now_ms;
use gavel_engine::{AuctionEvent, AuctionId, BidError, BidRequest, EngineError, RejectCode};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, debug_span, info, warn};

use crate::auth::{Identity, IdentityRefused, UpgradeCredentials, origin_allowed, unix_now};
use crate::fanout::{ConnHandle, FanoutEvent, Kick};
use crate::http::{error_body, json_error};
use crate::protocol::{
    ClientMessage, ErrorCode, PROTOCOL, Ref, Refreshed, Reset, ResetReason, SUBPROTOCOL,
    ServerMessage, Welcome, event_messages, parse_client_message,
};
use crate::state::{AppState, ConnectionSlot, Missing};

pub mod reply;

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
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            Connection::new(state, socket, identity, slot).run().await;
            drop(guards);
        })
}

/// Read chunk of each connection's socket; one frame of the size limit fits in a few.
const READ_BUFFER_BYTES: usize = 4096;

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
    /// Auctions this connection bid on (for `outbid`).
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
            self.state.fanout.leave(&auction, self.handle.id).await;
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
                Some(event) = self.rx.recv() => self.on_event(&event).await,
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
                        self.state.fanout.leave(&auction, self.handle.id).await;
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

    async fn subscribe(
        &mut self,
        auction: AuctionId,
        since: Option<u64>,
        epoch: Option<u64>,
    ) -> Step {
        let error = |code, message: String| reply::error(code, message, Some(&auction));
        if !self.subs.contains_key(&auction)
            && self.subs.len() >= self.state.config.max_subscriptions
        {
            let limit = self.state.config.max_subscriptions;
            return self
                .reply(&error(
                    ErrorCode::TooLarge,
                    format!("at most {limit} subscriptions per connection"),
                ))
                .await;
        }
        let was_interested = self.interested(&auction);
        self.subs.remove(&auction);
        if let Err(e) = self.state.fanout.join(&auction, &self.handle, true).await {
            warn!(%auction, error = %e, "cannot subscribe");
            return self
                .reply(&error(
                    ErrorCode::Unavailable,
                    "live updates unavailable; retry".into(),
                ))
                .await;
        }
        let viewer = self.bidder_id().map(str::to_owned);
        let live = self
            .state
            .engine
            .snapshot(&auction, viewer.as_deref())
            .await;
        let snapshot = match live {
            Ok(s) => s,
            Err(e) => {
                if !was_interested {
                    self.state.fanout.leave(&auction, self.handle.id).await;
                } else if !self.subs.contains_key(&auction) {
                    self.state.fanout.stop_watching(&auction, self.handle.id);
                }
                let missing = match &e {
                    EngineError::UnknownAuction(_) => Some(self.state.missing(&auction).await),
                    _ => None,
                };
                // A closed auction that left Redis: PostgreSQL has all of it.
                let archived = match missing {
                    Some(Missing::Closed) => self
                        .state
                        .store
                        .closed_snapshot(&auction, viewer.as_deref())
                        .await
                        .unwrap_or_else(|e| {
                            warn!(%auction, error = %e, "cannot read a closed auction from PostgreSQL");
                            None
                        }),
                    _ => None,
                };
                match archived {
                    Some(snapshot) => snapshot,
                    None => {
                        let reply = match missing {
                            Some(Missing::Unknown) => {
                                error(ErrorCode::UnknownAuction, format!("no auction {auction}"))
                            }
                            Some(Missing::Restoring) => error(
                                ErrorCode::Unavailable,
                                "the auction's live state is being restored; retry in a second"
                                    .into(),
                            ),
                            _ => {
                                warn!(%auction, error = %e, "snapshot failed");
                                error(
                                    ErrorCode::Unavailable,
                                    "auction state unavailable; retry".into(),
                                )
                            }
                        };
                        return self.reply(&reply).await;
                    }
                }
            }
        };
        if let Some(since) = since {
            let same_history = epoch.is_none_or(|e| e == snapshot.epoch);
            let resumed = same_history
                && since <= snapshot.seq
                && match self.replay(&auction, since, snapshot.seq).await {
                    Ok(complete) => complete,
                    Err(Gone) => return Step::Drop,
                };
            if !resumed {
                let reset = ServerMessage::Reset(Reset {
                    auction: auction.to_string(),
                    epoch: snapshot.epoch,
                    seq: snapshot.seq,
                    reason: ResetReason::SinceUnknown,
                });
                if self.send_msg(&reset).await.is_err() {
                    return Step::Drop;
                }
            }
        }
        let message = crate::protocol::snapshot(&auction, &snapshot);
        self.subs.insert(
            auction,
            Delivered {
                epoch: snapshot.epoch,
                seq: snapshot.seq,
            },
        );
        self.reply(&message).await
    }

    /// Sends the events with `after < seq <= upto`: from the auction's Redis stream, and
    /// from PostgreSQL for what the stream no longer holds. Returns whether every one of
    /// them was sent (`false`: some are in neither, the client must reset).
    async fn replay(&mut self, auction: &AuctionId, after: u64, upto: u64) -> Result<bool, Gone> {
        let mut next = after;
        while next < upto {
            let limit = REPLAY_PAGE.min(upto - next);
            let mut page = match self.state.engine.events_since(auction, next, limit).await {
                Ok(page) => page,
                Err(e) => {
                    warn!(%auction, error = %e, "cannot read the event stream for a replay");
                    return Ok(false);
                }
            };
            if page.first().is_none_or(|e| e.seq() != next + 1) {
                // Trimmed from Redis (or lost with it): PostgreSQL has the older ones.
                page = match self
                    .state
                    .store
                    .events_after(auction, next, limit as u32)
                    .await
                {
                    Ok(page) => page,
                    Err(e) => {
                        warn!(%auction, error = %e, "cannot read PostgreSQL for a replay");
                        return Ok(false);
                    }
                };
                if page.first().is_none_or(|e| e.seq() != next + 1) {
                    return Ok(false);
                }
            }
            for event in page {
                if event.seq() > upto {
                    return Ok(true);
                }
                if event.seq() != next + 1 {
                    return Ok(false);
                }
                next = event.seq();
                self.send_event(auction, &event).await?;
            }
        }
        Ok(true)
    }

    /// Drops what the connection knows of the auction and starts again from its current
    /// state: `reset`, then a fresh `snapshot` (or an `error` if it cannot be read).
    async fn resync(&mut self, auction: &AuctionId) -> Step {
        let viewer = self.bidder_id().map(str::to_owned);
        match self.state.engine.snapshot(auction, viewer.as_deref()).await {
            Ok(snapshot) => {
                let reset = ServerMessage::Reset(Reset {
                    auction: auction.to_string(),
                    epoch: snapshot.epoch,
                    seq: snapshot.seq,
                    reason: ResetReason::Restored,
                });
                if self.send_msg(&reset).await.is_err() {
                    return Step::Drop;
                }
                self.subs.insert(
                    auction.clone(),
                    Delivered {
                        epoch: snapshot.epoch,
                        seq: snapshot.seq,
                    },
                );
                self.reply(&crate::protocol::snapshot(auction, &snapshot))
                    .await
            }
            Err(e) => {
                warn!(%auction, error = %e, "cannot read the restored state");
                self.subs.remove(auction);
                self.state.fanout.stop_watching(auction, self.handle.id);
                self.reply(&reply::error(
                    ErrorCode::Unavailable,
                    "the auction was restored but its state cannot be read; subscribe again".into(),
                    Some(auction),
                ))
                .await
            }
        }
    }

    async fn send_event(&mut self, auction: &AuctionId, event: &AuctionEvent) -> Result<(), Gone> {
        let messages = event_messages(auction, event);
        for message in &messages.public {
            self.send_msg(message).await?;
        }
        if let Some((who, outbid)) = &messages.outbid
            && Some(who.as_str()) == self.bidder_id()
        {
            self.send_msg(outbid).await?;
        }
        Ok(())
    }

    async fn on_event(&mut self, event: &FanoutEvent) -> Step {
        let mine = event
            .outbid
            .as_ref()
            .filter(|(who, _)| Some(who.as_str()) == self.bidder_id())
            .map(|(_, frame)| frame.clone());
        let Some(&delivered) = self.subs.get(&event.auction) else {
            if let Some(frame) = mine
                && self.bid_on.contains(&event.auction)
                && self.send_text(frame).await.is_err()
            {
                return Step::Drop;
            }
            return Step::Continue;
        };
        if event.restored {
            if event.epoch == Some(delivered.epoch) && event.seq == delivered.seq {
                return Step::Continue; // Already resynchronised on this epoch.
            }
            return self.resync(&event.auction).await;
        }
        if event.epoch.is_some_and(|e| e != delivered.epoch) {
            // An event of another history: ours was restored (or is about to be).
            return self.resync(&event.auction).await;
        }
        let last = delivered.seq;
        if event.seq <= last {
            return Step::Continue;
        }
        if event.seq > last + 1 {
            debug!(auction = %event.auction, last, seq = event.seq, "filling a gap from the stream");
            match self.replay(&event.auction, last, event.seq - 1).await {
                Ok(true) => {}
                Ok(false) => return self.resync(&event.auction).await,
                Err(Gone) => return Step::Drop,
            }
        }
        self.subs.insert(
            event.auction.clone(),
            Delivered {
                epoch: delivered.epoch,
                seq: event.seq,
            },
        );
        for frame in event.public.iter().cloned() {
            if self.send_text(frame).await.is_err() {
                return Step::Drop;
            }
        }
        if let Some(frame) = mine
            && self.send_text(frame).await.is_err()
        {
            return Step::Drop;
        }
        Step::Continue
    }

    /// Decides one bid and replies, in a span that names it (auction, bidder, ref) and
    /// records how it ended (outcome, seq): one bid can be followed through the logs.
    async fn bid(&mut self, auction: AuctionId, request: BidRequest, r#ref: Ref) -> Step {
        let span = debug_span!(
            "bid",
            auction = %auction,
            bidder = self.bidder_id().unwrap_or("-"),
            "ref" = %r#ref,
            outcome = tracing::field::Empty,
            seq = tracing::field::Empty,
        );
        let reply = self
            .decide_bid(&auction, request, &r#ref)
            .instrument(span.clone())
            .await;
        if let Some(label) = reply.bid_label() {
            span.record("outcome", label);
        }
        if let ServerMessage::BidResult(result) = &reply {
            span.record("seq", result.seq);
        }
        span.in_scope(|| debug!("bid answered"));
        self.reply(&reply).await
    }

    /// The reply to a bid: refused before the engine (identity, limits) or decided by it.
    /// Counted in `gavel_bids_total{outcome}` except for limit refusals.
    async fn decide_bid(
        &mut self,
        auction: &AuctionId,
        request: BidRequest,
        r#ref: &Ref,
    ) -> ServerMessage {
        let bidder = match &self.identity {
            Some(identity) if !identity.may_bid => {
                let message = format!(
                    "this token may watch but not bid: it lacks {}",
                    self.state.auth.bid_requirement().unwrap_or_default()
                );
                return self.count(reply::rejected(
                    auction,
                    r#ref,
                    ErrorCode::Forbidden,
                    message,
                ));
            }
            Some(identity) if identity.valid_at(unix_now(), self.state.auth.leeway()) => {
                identity.bidder.clone()
            }
            other => {
                let message = if other.is_none() {
                    "anonymous connections may watch but not bid; connect with a token"
                } else {
                    "token expired; send a refresh with a fresh token"
                };
                return self.count(reply::rejected(
                    auction,
                    r#ref,
                    ErrorCode::Unauthenticated,
                    message.into(),
                ));
            }
        };
        let started = Instant::now();
        // Be subscribed before the bid lands, so that losing the lead is never missed.
        let was_interested = self.interested(auction);
        // The auctions a connection follows (subscribed or bid on) are bounded too.
        let limit = self.state.config.max_subscriptions;
        if !was_interested && self.bid_on.len() >= limit {
            return reply::rejected(
                auction,
                r#ref,
                ErrorCode::TooLarge,
                format!("at most {limit} auctions bid on per connection; open another"),
            );
        }
        if !was_interested
            && let Err(e) = self.state.fanout.join(auction, &self.handle, false).await
        {
            warn!(%auction, error = %e, "cannot subscribe for outbid notices");
        }
        let result = self.state.engine.place_bid(auction, &bidder, request).await;
        self.state
            .metrics
            .bid_latency
            .observe(started.elapsed().as_secs_f64());
        let reply = match result {
            Ok(accepted) => {
                self.bid_on.insert(auction.clone());
                reply::accepted(auction, r#ref, &accepted)
            }
            Err(e) => {
                if !was_interested {
                    self.state.fanout.leave(auction, self.handle.id).await;
                }
                match e {
                    BidError::Rejected(mut r) => {
                        if r.code == RejectCode::UnknownAuction {
                            match self.state.missing(auction).await {
                                Missing::Unknown => {}
                                Missing::Closed => r.code = RejectCode::AuctionClosed,
                                Missing::Restoring | Missing::Unreachable => {
                                    r.code = RejectCode::Unavailable;
                                    r.retry_after_ms = Some(1_000);
                                }
                            }
                        }
                        reply::refused(auction, r#ref, &r)
                    }
                    BidError::Engine(e) => {
                        warn!(%auction, error = %e, "bid failed in the engine");
                        reply::rejected(
                            auction,
                            r#ref,
                            ErrorCode::Unavailable,
                            "the bid could not be confirmed; check the snapshot before retrying"
                                .into(),
                        )
                    }
                }
            }
        };
        self.count(reply)
    }

    /// Counts a bid's reply in `gavel_bids_total{outcome}`.
    fn count(&self, reply: ServerMessage) -> ServerMessage {
        if let Some(label) = reply.bid_label() {
            self.state.metrics.bids.with_label_values(&[label]).inc();
        }
        reply
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
