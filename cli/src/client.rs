//! A small typed WebSocket client of protocol v1.
//!
//! [`WsClient::connect`] opens `/v1/ws` as an anonymous watcher, as a development-mode
//! bidder (`?bidder=<name>`) or with a JWT (`Authorization: Bearer`), and waits for the
//! `welcome`. A background task parses every frame; messages the caller has not asked
//! for yet are kept in order, so [`WsClient::wait_for`] never loses one, and
//! [`WsClient::received`] lists everything received so far.

use std::collections::VecDeque;
use std::time::Duration;

use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol::{
    Amount, Bid, BidRejected, BidResult, ClientMessage, ErrorMessage, HttpError, Ref,
    ServerMessage, Snapshot, Subscribe, Welcome,
};

/// How long [`WsClient::connect`] waits for the `welcome`.
pub const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);

/// How a connection authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// No credentials: may watch, may not bid.
    Anonymous,
    /// Development mode: `?bidder=<name>` (the server must run with `GAVEL_DEV_AUTH=true`).
    Dev(String),
    /// A JWT sent as `Authorization: Bearer <jwt>`.
    Token(String),
}

/// Failures of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL or a header could not be built.
    #[error("invalid request to {url}: {message}")]
    Request {
        /// The server address it was for.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The WebSocket handshake or a later send failed.
    #[error("websocket {url}: {source}")]
    WebSocket {
        /// The server address it was for.
        url: String,
        /// tungstenite's error: the socket, TLS or handshake failure.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
    /// Nothing matching arrived in time.
    #[error("{label}: timed out after {timeout:?} waiting for {what}")]
    Timeout {
        /// The connection's label.
        label: String,
        /// What was awaited.
        what: String,
        /// The time given.
        timeout: Duration,
    },
    /// The server answered with an `error` instead of what was asked for.
    #[error("{label}: the server refused: {code} {message}")]
    Refused {
        /// The connection's label.
        label: String,
        /// The protocol's code, or `HTTP <status>` for a refused upgrade.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The server closed the connection (or it broke).
    #[error("{label}: connection closed ({reason})")]
    Closed {
        /// The connection's label.
        label: String,
        /// Close code and reason, or the transport error.
        reason: String,
        /// The close code, when the server sent one.
        code: Option<u16>,
    },
    /// A message could not be encoded.
    #[error("cannot encode a message: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The server's reply to a bid.
#[derive(Clone, Debug, PartialEq)]
pub enum BidReply {
    /// `bid_result`.
    Accepted(BidResult),
    /// `bid_rejected`.
    Rejected(BidRejected),
    /// `error` (for example `UNAUTHENTICATED` or `INVALID_MESSAGE`).
    Error(ErrorMessage),
}

impl BidReply {
    /// The accepted result, if the bid was accepted.
    pub fn accepted(&self) -> Option<&BidResult> {
        match self {
            BidReply::Accepted(r) => Some(r),
            _ => None,
        }
    }

    /// The rejection, if the bid was rejected.
    pub fn rejected(&self) -> Option<&BidRejected> {
        match self {
            BidReply::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

/// What the reader task forwards.
enum Incoming {
    Message(ServerMessage),
    Closed { reason: String, code: Option<u16> },
}

type Sink = SplitSink<WebSocketStream<MaybeTlsStream<TcpStream>>, Message>;

/// One WebSocket connection to a bid-api.
pub struct WsClient {
    label: String,
    url: String,
    sink: Sink,
    rx: mpsc::UnboundedReceiver<Incoming>,
    pending: VecDeque<ServerMessage>,
    received: Vec<ServerMessage>,
    closed: Option<(String, Option<u16>)>,
    welcome: Welcome,
    next_ref: u64,
    keep_history: bool,
}

/// Appends `?bidder=<name>` (percent-encoded) to a URL.
fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    let mut encoded = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{url}{sep}{key}={encoded}")
}

impl WsClient {
    /// Connects to `url` (for example `ws://127.0.0.1:8080/v1/ws`) and waits for the
    /// `welcome`. The label names the connection in errors and logs.
    pub async fn connect(url: &str, auth: &Auth) -> Result<Self, ClientError> {
        let label = match auth {
            Auth::Anonymous => "watcher".to_owned(),
            Auth::Dev(name) => name.clone(),
            Auth::Token(_) => "token".to_owned(),
        };
        let target = match auth {
            Auth::Dev(name) => with_query(url, "bidder", name),
            _ => url.to_owned(),
        };
        let request_error = |message: String| ClientError::Request {
            url: url.to_owned(),
            message,
        };
        let mut request = target
            .as_str()
            .into_client_request()
            .map_err(|e| request_error(e.to_string()))?;
        if let Auth::Token(token) = auth {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| request_error(format!("bad token: {e}")))?;
            request.headers_mut().insert("authorization", value);
        }
        let (stream, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| match e {
                // The server refused the upgrade (401, 403, 429, 503…): its reason is in
                // the body, `{"code":…,"message":…}` or plain text.
                tokio_tungstenite::tungstenite::Error::Http(response) => {
                    let body = response
                        .body()
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    let message = serde_json::from_str::<HttpError>(&body)
                        .map(|e| e.message)
                        .unwrap_or_else(|_| body.trim().to_owned());
                    ClientError::Refused {
                        label: label.clone(),
                        code: format!("HTTP {}", response.status().as_u16()),
                        message,
                    }
                }
                e => ClientError::WebSocket {
                    url: url.to_owned(),
                    source: Box::new(e),
                },
            })?;
        let (sink, mut source) = stream.split();
        let (tx, rx) = mpsc::unbounded_channel();
        let reader_label = label.clone();
        tokio::spawn(async move {
            let closed = loop {
                match source.next().await {
                    Some(Ok(Message::Text(text))) => match ServerMessage::parse(&text) {
                        Ok(msg) => {
                            tracing::trace!(connection = %reader_label, %text, "received");
                            if tx.send(Incoming::Message(msg)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(connection = %reader_label, %text, "unparsable frame: {e}")
                        }
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(f) => Incoming::Closed {
                                reason: format!("code {}: {}", u16::from(f.code), f.reason),
                                code: Some(u16::from(f.code)),
                            },
                            None => Incoming::Closed {
                                reason: "no close frame".into(),
                                code: None,
                            },
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        break Incoming::Closed {
                            reason: e.to_string(),
                            code: None,
                        };
                    }
                    None => {
                        break Incoming::Closed {
                            reason: "end of stream".into(),
                            code: None,
                        };
                    }
                }
            };
            let _ = tx.send(closed);
        });
        let mut client = Self {
            label,
            url: url.to_owned(),
            sink,
            rx,
            pending: VecDeque::new(),
            received: Vec::new(),
            closed: None,
            // Replaced by the server's below, before the client is handed out.
            welcome: Welcome {
                bidder: None,
                server_time: 0,
                protocol: String::new(),
            },
            next_ref: 0,
            keep_history: true,
        };
        client.welcome = client
            .wait_for("welcome", WELCOME_TIMEOUT, |m| match m {
                ServerMessage::Welcome(w) => Some(w.clone()),
                _ => None,
            })
            .await?;
        Ok(client)
    }

    /// The connection's label (the bidder name, or `watcher`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The URL connected to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's `welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Every message received so far, in order (including consumed ones), unless
    /// [`WsClient::keep_history`] turned recording off.
    pub fn received(&self) -> &[ServerMessage] {
        &self.received
    }

    /// Whether to record every message for [`WsClient::received`] (on by default; turn it
    /// off for long-lived connections so that memory stays bounded).
    pub fn keep_history(&mut self, keep: bool) {
        self.keep_history = keep;
        if !keep {
            self.received = Vec::new();
        }
    }

    /// Sends one message.
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg)?;
        self.send_text(text).await
    }

    /// Sends one raw text frame (for malformed-input tests).
    pub async fn send_text(&mut self, text: String) -> Result<(), ClientError> {
        tracing::trace!(connection = %self.label, %text, "send");
        self.sink
            .send(Message::text(text))
            .await
            .map_err(|e| ClientError::WebSocket {
                url: self.url.clone(),
                source: Box::new(e),
            })
    }

    /// Subscribes and waits for the auction's snapshot. Events that arrive before it stay
    /// queued.
    pub async fn subscribe(
        &mut self,
        auction: &str,
        timeout: Duration,
    ) -> Result<Snapshot, ClientError> {
        self.send(&ClientMessage::Subscribe(Subscribe {
            auction: auction.to_owned(),
            since: None,
            epoch: None,
        }))
        .await?;
        let reply = self
            .wait_for(&format!("snapshot of {auction}"), timeout, |m| match m {
                ServerMessage::Snapshot(s) if s.auction == auction => Some(Ok(s.clone())),
                // The answer to this subscribe: an unknown auction, a bad name, no capacity.
                ServerMessage::Error(e) if e.r#ref.is_none() => Some(Err(e.clone())),
                _ => None,
            })
            .await?;
        reply.map_err(|e| ClientError::Refused {
            label: self.label.clone(),
            code: e.code.to_string(),
            message: e.message,
        })
    }

    /// Subscribes with `since`: the server replays every event after it. Does not wait.
    pub async fn subscribe_since(&mut self, auction: &str, since: u64) -> Result<(), ClientError> {
        self.send(&ClientMessage::Subscribe(Subscribe {
            auction: auction.to_owned(),
            since: Some(since),
            epoch: None,
        }))
        .await
    }

    /// Places a bid and waits for its reply (`bid_result`, `bid_rejected` with the same
    /// `ref`, or an `error`).
    pub async fn bid(
        &mut self,
        auction: &str,
        amount: Option<Amount>,
        max: Option<Amount>,
        timeout: Duration,
    ) -> Result<BidReply, ClientError> {
        self.next_ref += 1;
        let reference = Ref::Text(format!("{}-{}", self.label, self.next_ref));
        self.send(&ClientMessage::Bid(Bid {
            auction: auction.to_owned(),
            amount,
            max,
            r#ref: reference.clone(),
        }))
        .await?;
        self.wait_for(&format!("reply to bid {reference}"), timeout, |m| match m {
            ServerMessage::BidResult(r) if r.r#ref == reference => {
                Some(BidReply::Accepted(r.clone()))
            }
            ServerMessage::BidRejected(r) if r.r#ref == reference => {
                Some(BidReply::Rejected(r.clone()))
            }
            ServerMessage::Error(e) if e.r#ref.as_ref().is_none_or(|r| *r == reference) => {
                Some(BidReply::Error(e.clone()))
            }
            _ => None,
        })
        .await
    }

    /// Sends `ping` and waits for `pong`.
    pub async fn ping(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.send(&ClientMessage::Ping).await?;
        self.wait_for("pong", timeout, |m| {
            matches!(m, ServerMessage::Pong).then_some(())
        })
        .await
    }

    /// Waits for the first message (queued or new) for which `pick` returns a value,
    /// removes it from the queue and returns the value; other messages stay queued.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> Result<T, ClientError> {
        if let Some((i, value)) = self
            .pending
            .iter()
            .enumerate()
            .find_map(|(i, m)| pick(m).map(|v| (i, v)))
        {
            self.pending.remove(i);
            return Ok(value);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let msg = self.receive(what, deadline, timeout).await?;
            if let Some(value) = pick(&msg) {
                return Ok(value);
            }
            self.pending.push_back(msg);
        }
    }

    /// The next message (queued first), waiting at most `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<ServerMessage, ClientError> {
        if let Some(msg) = self.pending.pop_front() {
            return Ok(msg);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        self.receive("the next message", deadline, timeout).await
    }

    /// Removes and returns every queued message.
    pub fn take_pending(&mut self) -> Vec<ServerMessage> {
        self.pending.drain(..).collect()
    }

    async fn receive(
        &mut self,
        what: &str,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<ServerMessage, ClientError> {
        if let Some((reason, code)) = &self.closed {
            return Err(ClientError::Closed {
                label: self.label.clone(),
                reason: reason.clone(),
                code: *code,
            });
        }
        match tokio::time::timeout_at(deadline, self.rx.recv()).await {
            Err(_) => Err(ClientError::Timeout {
                label: self.label.clone(),
                what: what.to_owned(),
                timeout,
            }),
            Ok(Some(Incoming::Message(msg))) => {
                if self.keep_history {
                    self.received.push(msg.clone());
                }
                Ok(msg)
            }
            Ok(Some(Incoming::Closed { reason, code })) => {
                self.closed = Some((reason.clone(), code));
                Err(ClientError::Closed {
                    label: self.label.clone(),
                    reason,
                    code,
                })
            }
            Ok(None) => Err(ClientError::Closed {
                label: self.label.clone(),
                reason: "reader stopped".into(),
                code: None,
            }),
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.sink.send(Message::Close(None)).await;
        let _ = self.sink.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_auth_query_is_encoded() {
        assert_eq!(
            with_query("ws://h:1/v1/ws", "bidder", "Ann Lee/é"),
            "ws://h:1/v1/ws?bidder=Ann%20Lee%2F%C3%A9"
        );
        assert_eq!(
            with_query("ws://h:1/v1/ws?x=1", "bidder", "bo"),
            "ws://h:1/v1/ws?x=1&bidder=bo"
        );
    }
}
