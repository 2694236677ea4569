//! The three kinds of connection, speaking WebSocket protocol v1 (README § WebSocket protocol).
//!
//! Each connection runs in its own task: it connects, subscribes, reports itself ready,
//! waits for the common start, does its work until the deadline and returns its
//! [`ConnStats`]. Frames are the protocol's types ([`gavel_protocol`]): a bid is one
//! [`Bid`] per connection, re-framed per send; server frames are read through the
//! protocol's borrowed [`ServerFrame`], with no DOM and no copy of their strings.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use gavel_protocol::{Bid, MessageType, Outcome, Ref, ServerFrame, Subscribe};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::stats::{ConnStats, Live, ProbeStats, SeqTracker};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a connection waits for replies after the deadline before giving up on them.
const DRAIN: Duration = Duration::from_secs(5);

/// What a connection does.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// Bids on one auction under the name `bidder-<index>`.
    Bidder {
        /// Its number: names it, picks its auction (`index % auctions`) and spreads its
        /// sends over the interval.
        index: usize,
        /// Time between bids; `None` waits for each reply before the next bid.
        interval: Option<Duration>,
    },
    /// Follows every auction's feed; a timed watcher records each `price` receipt.
    Watcher {
        /// Whether receipts are recorded for the broadcast latency.
        timed: bool,
    },
    /// Subscribes to the first auction and stays silent.
    Idle,
    /// A slow HTTP client: opens a TCP connection and sends half a request's headers
    /// (`partial`) or nothing, then waits; when the server closes it, it opens another,
    /// until the end of the run.
    Slow {
        /// Whether it sends the start of a request.
        partial: bool,
    },
    /// A busy client: a WebSocket sending `ping` every `interval` and reading the `pong`.
    Chatty {
        /// Time between pings.
        interval: Duration,
    },
    /// The probe of a well-behaved user: every `interval`, a bid on the first auction over
    /// its WebSocket (bidder `probe`) and a `GET /healthz` on a fresh connection, each timed.
    Probe {
        /// Time between probes.
        interval: Duration,
    },
}

/// Shared inputs of every connection.
#[derive(Clone)]
pub struct Shared {
    /// Auctions, by index.
    pub auctions: Arc<Vec<String>>,
    /// Live counters.
    pub live: Arc<Live>,
    /// Fires once with the start instant when every connection is ready.
    pub start: watch::Receiver<Option<Instant>>,
    /// How long the run lasts after the start.
    pub duration: Duration,
}

/// Opens one connection; bidders identify themselves with development auth.
pub async fn connect(
    url: &str,
    bidder: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let url = match bidder {
        Some(name) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}bidder={name}")
        }
        None => url.to_owned(),
    };
    // Nagle's algorithm off: bids are small frames that must leave at once.
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    Ok(ws)
}

/// Runs one connection to the end; failures are counted, never propagated.
/// `permit` is released once the connection is subscribed (it paces the ramp-up).
pub async fn run(
    url: String,
    role: Role,
    shared: Shared,
    mut permit: Option<OwnedSemaphorePermit>,
) -> ConnStats {
    let live = shared.live.clone();
    if let Role::Slow { partial } = role {
        return slow(&url, partial, &shared, permit).await;
    }
    let bidder = match role {
        Role::Bidder { index, .. } => Some(format!("bidder-{index}")),
        Role::Probe { .. } => Some("probe".to_owned()),
        _ => None,
    };
    let mut ws = match connect(&url, bidder.as_deref()).await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "connect failed");
            Live::inc(&live.failed);
            drop(permit);
            return ConnStats {
                errored: true,
                ..ConnStats::default()
            };
        }
    };
    live.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let stats = match role {
        Role::Bidder { index, interval } => {
            drop(permit);
            bid(&mut ws, index, interval, &shared).await
        }
        Role::Watcher { timed } => {
            watch(&mut ws, timed, &shared, shared.auctions.len(), &mut permit).await
        }
        Role::Idle => watch(&mut ws, false, &shared, 1, &mut permit).await,
        Role::Chatty { interval } => {
            drop(permit);
            chat(&mut ws, interval, &shared).await
        }
        Role::Probe { interval } => {
            drop(permit);
            probe(&mut ws, &url, interval, &shared).await
        }
        Role::Slow { .. } => ConnStats::default(),
    };
    live.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    let _ = ws.close(None).await;
    stats
}

async fn wait_for_start(shared: &Shared) -> Option<Instant> {
    let mut start = shared.start.clone();
    start.wait_for(Option::is_some).await.ok().and_then(|s| *s)
}

fn note_close(stats: &mut ConnStats, message: &Message) {
    if let Message::Close(frame) = message {
        let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
        *stats.close_codes.entry(code).or_default() += 1;
    }
}

/// A bidder in an escalating bidding war: its proxy ceiling grows with the time since the
/// start (10 per microsecond), so a bid sent later beats one sent earlier whoever sent
/// it, and is accepted as long as the servers keep roughly the order of arrival. A bidder
/// learns the minimum next bid only from its own replies, and never bids below it.
async fn bid(ws: &mut Ws, index: usize, interval: Option<Duration>, shared: &Shared) -> ConnStats {
    let mut stats = ConnStats::default();
    let live = &shared.live;
    let auction_index = index % shared.auctions.len();
    let auction = &shared.auctions[auction_index];
    Live::inc(&live.ready);
    let Some(start) = wait_for_start(shared).await else {
        return stats;
    };
    let deadline = start + shared.duration;
    let mut min_next: i64 = 1;
    let mut pending: std::collections::HashMap<u64, Instant> = Default::default();
    let mut counter: u64 = 0;
    // One bid, re-framed with a new ceiling and ref each time: nothing else is allocated.
    let mut frame = Bid {
        auction: auction.clone(),
        amount: None,
        max: None,
        r#ref: Ref::Number(0),
    };
    // Spread interval bidders over the interval so the rate is smooth.
    let mut next_send = match interval {
        Some(every) => start + every.mul_f64((index as f64 * 0.618_034) % 1.0),
        None => start,
    };
    loop {
        let now = Instant::now();
        if now >= deadline && (pending.is_empty() || now >= deadline + DRAIN) {
            break;
        }
        let may_send = now < deadline && (interval.is_some() || pending.is_empty());
        tokio::select! {
            _ = tokio::time::sleep_until(next_send.into()), if may_send => {
                counter += 1;
                let escalation = start.elapsed().as_micros() as i64 * 10 + (index % 10) as i64;
                frame.max = Some((1_000_000 + escalation).max(min_next));
                frame.r#ref = Ref::Number(counter);
                if ws.send(Message::text(frame.to_json())).await.is_err() {
                    stats.errored = true;
                    break;
                }
                pending.insert(counter, Instant::now());
                Live::inc(&live.sent);
                next_send = match interval {
                    Some(every) => next_send + every,
                    None => Instant::now(),
                };
            }
            _ = tokio::time::sleep_until((deadline + DRAIN).into()) => break,
            message = ws.next() => {
                let Some(Ok(message)) = message else {
                    stats.errored = true;
                    break;
                };
                note_close(&mut stats, &message);
                let Message::Text(text) = message else { continue };
                let Ok(msg) = ServerFrame::parse(&text) else { continue };
                let reference = msg.r#ref.as_ref().and_then(|r| r.as_number());
                let Some(sent_at) = reference.and_then(|r| pending.remove(&r)) else { continue };
                let micros = sent_at.elapsed().as_micros() as u64;
                let _ = stats.reply_latency.record(micros.max(1));
                if let Some(next) = msg.min_next {
                    min_next = min_next.max(next);
                }
                match msg.kind {
                    MessageType::BidResult => {
                        Live::inc(&live.accepted);
                        // A leader's private raise has no event (its seq is another's).
                        if let Some(seq) = msg.seq.filter(|_| msg.outcome != Some(Outcome::CeilingRaised)) {
                            stats.accepted_sent_at.push(((auction_index, seq), sent_at));
                        }
                    }
                    MessageType::BidRejected => {
                        Live::inc(&live.rejected);
                        let code = msg.code.map_or("", |c| c.as_str());
                        *stats.rejections.entry(code).or_default() += 1;
                    }
                    _ => {}
                }
            }
        }
    }
    stats.unanswered = pending.len() as u64;
    stats
}

/// `host:port` of a WebSocket URL (`ws://host:port/v1/ws`).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// A slow HTTP client, re-opened whenever the server closes it (the header-read timeout),
/// so that the run holds as many as asked all along.
async fn slow(
    url: &str,
    partial: bool,
    shared: &Shared,
    permit: Option<OwnedSemaphorePermit>,
) -> ConnStats {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stats = ConnStats::default();
    let live = &shared.live;
    let address = authority(url).to_owned();
    let open = || async {
        let mut stream = TcpStream::connect(&address).await.ok()?;
        if partial {
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-a: ")
                .await
                .ok()?;
        }
        Some(stream)
    };
    let Some(mut stream) = open().await else {
        Live::inc(&live.failed);
        stats.errored = true;
        return stats;
    };
    drop(permit);
    Live::inc(&live.ready);
    let Some(start) = wait_for_start(shared).await else {
        return stats;
    };
    let deadline = start + shared.duration;
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => break,
            read = stream.read(&mut buf) => match read {
                Ok(n) if n > 0 => {}
                _ => {
                    Live::inc(&live.slow_reopened);
                    match open().await {
                        Some(s) => stream = s,
                        None => {
                            stats.errored = true;
                            break;
                        }
                    }
                }
            },
        }
    }
    stats
}

/// A busy client: a `ping` every `interval` until the end of the run.
async fn chat(ws: &mut Ws, interval: Duration, shared: &Shared) -> ConnStats {
    let mut stats = ConnStats::default();
    Live::inc(&shared.live.ready);
    let Some(start) = wait_for_start(shared).await else {
        return stats;
    };
    let deadline = start + shared.duration;
    let ping = gavel_protocol::ClientMessage::Ping.to_json();
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => break,
            _ = ticker.tick() => {
                if ws.send(Message::text(ping.as_str())).await.is_err() {
                    stats.errored = true;
                    break;
                }
            }
            message = ws.next() => {
                let Some(Ok(message)) = message else {
                    stats.errored = true;
                    break;
                };
                note_close(&mut stats, &message);
            }
        }
    }
    stats
}

/// One `GET /healthz` on a new connection: the time to the status line, or `None` when
/// the answer is not 200.
async fn health(address: &str) -> Option<Duration> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let started = Instant::now();
    let mut stream = TcpStream::connect(address).await.ok()?;
    stream.set_nodelay(true).ok()?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.ok()?;
    let took = started.elapsed();
    (&head == b"HTTP/1.1 200").then_some(took)
}

/// The probe: every `interval`, one bid (waiting for its reply) and one health check.
async fn probe(ws: &mut Ws, url: &str, interval: Duration, shared: &Shared) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut probe = ProbeStats::default();
    let address = authority(url).to_owned();
    Live::inc(&shared.live.ready);
    let Some(start) = wait_for_start(shared).await else {
        return stats;
    };
    let deadline = start + shared.duration;
    let mut frame = Bid {
        auction: shared.auctions[0].clone(),
        amount: None,
        max: None,
        r#ref: Ref::Number(0),
    };
    let mut ticker = tokio::time::interval(interval);
    let mut counter = 0;
    while Instant::now() < deadline {
        ticker.tick().await;
        counter += 1;
        // Ceilings escalate with time like the bidders', so probe bids are accepted too.
        frame.max = Some(1_000_000 + start.elapsed().as_micros() as i64 * 10);
        frame.r#ref = Ref::Number(counter);
        let sent = Instant::now();
        if ws.send(Message::text(frame.to_json())).await.is_err() {
            stats.errored = true;
            break;
        }
        let answered = tokio::time::timeout(DRAIN, async {
            while let Some(Ok(message)) = ws.next().await {
                let Message::Text(text) = message else {
                    continue;
                };
                let Ok(msg) = ServerFrame::parse(&text) else {
                    continue;
                };
                if msg.r#ref.as_ref().and_then(|r| r.as_number()) == Some(counter) {
                    return true;
                }
            }
            false
        })
        .await;
        match answered {
            Ok(true) => {
                let _ = probe.bid.record((sent.elapsed().as_micros() as u64).max(1));
            }
            _ => probe.failed += 1,
        }
        match health(&address).await {
            Some(took) => {
                let _ = probe.health.record((took.as_micros() as u64).max(1));
            }
            None => probe.failed += 1,
        }
    }
    stats.probe = Some(Box::new(probe));
    stats
}

/// A watcher (or an idle connection): subscribes to the first `count` auctions, checks
/// that every `price` arrives once and in order, and times receipts when `timed`.
async fn watch(
    ws: &mut Ws,
    timed: bool,
    shared: &Shared,
    count: usize,
    permit: &mut Option<OwnedSemaphorePermit>,
) -> ConnStats {
    let mut stats = ConnStats::default();
    let live = &shared.live;
    let auctions = &shared.auctions[..count.min(shared.auctions.len())];
    for auction in auctions {
        let frame = Subscribe {
            auction: auction.clone(),
            since: None,
            epoch: None,
        };
        if ws.send(Message::text(frame.to_json())).await.is_err() {
            Live::inc(&live.failed);
            stats.errored = true;
            return stats;
        }
    }
    let mut trackers = vec![SeqTracker::default(); auctions.len()];
    let mut snapshots = 0;
    let mut ready = false;
    let mut start = shared.start.clone();
    let mut deadline: Option<Instant> = None;
    loop {
        let until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = until_deadline => break,
            changed = start.changed(), if deadline.is_none() => {
                if changed.is_err() { break; }
                deadline = start.borrow().map(|s| s + shared.duration);
            }
            message = ws.next() => {
                let Some(Ok(message)) = message else {
                    stats.errored = true;
                    break;
                };
                note_close(&mut stats, &message);
                let Message::Text(text) = message else { continue };
                let Ok(msg) = ServerFrame::parse(&text) else { continue };
                let index = msg
                    .auction
                    .as_deref()
                    .and_then(|a| auctions.iter().position(|x| x == a));
                let (Some(index), Some(seq)) = (index, msg.seq) else { continue };
                match msg.kind {
                    MessageType::Snapshot => {
                        trackers[index].reset(seq);
                        snapshots += 1;
                        if !ready && snapshots >= auctions.len() {
                            ready = true;
                            permit.take();
                            Live::inc(&live.ready);
                        }
                    }
                    MessageType::Price | MessageType::Closed => {
                        if msg.kind == MessageType::Price {
                            Live::inc(&live.prices);
                        }
                        let (lost, reordered) = trackers[index].observe(seq);
                        stats.lost += lost;
                        stats.out_of_order += reordered;
                        if timed && msg.kind == MessageType::Price {
                            stats.price_seen_at.push(((index, seq), Instant::now()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if !ready {
        Live::inc(&live.failed);
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn the_authority_of_a_websocket_url() {
        assert_eq!(authority("ws://127.0.0.1:8080/v1/ws"), "127.0.0.1:8080");
        assert_eq!(authority("ws://h:1?token=x"), "h:1");
        assert_eq!(authority("h:2"), "h:2");
    }
}
