//! The outbound event feed: what Gavel tells other systems (order, notification, audit
//! services), as CloudEvents 1.0 in JSON (structured mode), signed per the Standard
//! Webhooks spec.
//!
//! The feed is derived from the record, never from the bid path: the flusher's transaction
//! that writes an event to `events` also queues its public CloudEvents in `feed_outbox`
//! ([`queue_in`]), the operator queues the openings and restores ([`FeedStore::record`]),
//! and the operator's dispatcher fans them out to the sinks and delivers them (see
//! `gavel_operator::feed` and docs/design.md § The event feed). This module holds the
//! format (pure: [`from_record`], [`opened`], [`restored`]), the signature
//! ([`WebhookSecret`]), and the feed's PostgreSQL queries ([`FeedStore`]).
//!
//! No ceiling ever enters the feed: the events are built field by field from typed public
//! structs, never by copying the record's JSON.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::postgres::PgPool;

use crate::event::{AuctionEvent, BidEvent};
use crate::keys::AuctionId;
use crate::rules::AuctionResult;
use crate::settings::{Amount, AuctionSettings, Millis};
use crate::store::StoreError;

/// The CloudEvents version of every event.
pub const SPEC_VERSION: &str = "1.0";

/// `Content-Type` of a structured-mode request (CloudEvents HTTP binding).
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The event types (`type` attribute).
pub mod types {
    /// Bidding opened.
    pub const OPENED: &str = "auction.opened";
    /// A bid was accepted (public facts only).
    pub const BID_ACCEPTED: &str = "bid.accepted";
    /// A bidder lost the lead; addressed to that bidder's id.
    pub const OUTBID: &str = "bidder.outbid";
    /// A late bid moved the end (soft close).
    pub const EXTENDED: &str = "auction.extended";
    /// The auction closed at its end.
    pub const CLOSED: &str = "auction.closed";
    /// The auction was cancelled.
    pub const CANCELLED: &str = "auction.cancelled";
    /// The live state was rebuilt from PostgreSQL (a new epoch).
    pub const RESTORED: &str = "auction.restored";
    /// Every type, in no particular order.
    pub const ALL: [&str; 7] = [
        OPENED,
        BID_ACCEPTED,
        OUTBID,
        EXTENDED,
        CLOSED,
        CANCELLED,
        RESTORED,
    ];
}

/// Rank of a restore among the events of one seq: after all of them.
pub const RANK_RESTORED: i16 = 9;

/// One CloudEvent in its JSON (structured) form. `gavelseq` and `gavelepoch` are extension
/// attributes: the auction's seq and epoch the event belongs to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// Stable per event (auction, seq, type; and epoch for a restore): deduplicate by it.
    pub id: String,
    /// `/gavel/<namespace>/<name>`.
    pub source: String,
    /// One of [`types`].
    #[serde(rename = "type")]
    pub ty: String,
    /// The auction, `<namespace>/<name>`.
    pub subject: String,
    /// When it happened (RFC 3339, UTC).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The auction's seq the event belongs to (0 for the opening).
    pub gavelseq: u64,
    /// The epoch of the auction's live state (see docs/design.md, epochs).
    pub gavelepoch: u64,
    /// The event's data (see the README's event reference).
    pub data: serde_json::Value,
}

/// One event ready for the outbox: its CloudEvent and where it sorts in its auction.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedEntry {
    /// Its auction.
    pub auction: AuctionId,
    /// The record's seq (0 for the opening).
    pub seq: u64,
    /// Order among the events of one seq.
    pub rank: i16,
    /// The epoch (0 when the record does not say: the outbox takes the auction's).
    pub epoch: u64,
    /// The event.
    pub event: CloudEvent,
}

/// `data` of `bid.accepted`.
#[derive(Serialize)]
struct BidData<'a> {
    auction: String,
    seq: u64,
    bidder: &'a str,
    bidder_name: &'a str,
    amount: Amount,
    outcome: &'static str,
    price: Amount,
    min_next: Amount,
    leader: &'a str,
    leader_name: &'a str,
    bid_count: u64,
    ends_at: String,
    extended: bool,
    reserve_met: bool,
}

/// `data` of `bidder.outbid`.
#[derive(Serialize)]
struct OutbidData<'a> {
    auction: String,
    seq: u64,
    bidder: &'a str,
    price: Amount,
    min_next: Amount,
    leader_name: &'a str,
    ends_at: String,
}

/// `data` of `auction.extended`.
#[derive(Serialize)]
struct ExtendedData {
    auction: String,
    seq: u64,
    ends_at: String,
}

/// `data` of `auction.closed` and `auction.cancelled`.
#[derive(Serialize)]
struct ClosedData<'a> {
    auction: String,
    seq: u64,
    winner: Option<&'a str>,
    winner_name: Option<&'a str>,
    final_price: Option<Amount>,
    reserve_met: bool,
    bid_count: u64,
    closed_at: String,
    cancelled: bool,
}

/// `data` of `auction.opened`.
#[derive(Serialize)]
struct OpenedData<'a> {
    auction: String,
    title: &'a str,
    currency: &'a str,
    starting_price: Amount,
    starts_at: String,
    ends_at: String,
}

/// `data` of `auction.restored`.
#[derive(Serialize)]
struct RestoredData {
    auction: String,
    seq: u64,
    epoch: u64,
}

/// The id of an event: `<namespace>/<name>/<seq>/<type>`, plus `/<epoch>` for a restore
/// (two restores can follow the same seq).
pub fn event_id(auction: &AuctionId, seq: u64, ty: &str, epoch: u64) -> String {
    if ty == types::RESTORED {
        format!("{auction}/{seq}/{ty}/{epoch}")
    } else {
        format!("{auction}/{seq}/{ty}")
    }
}

fn entry(
    auction: &AuctionId,
    seq: u64,
    rank: i16,
    epoch: u64,
    ty: &str,
    at: Millis,
    data: serde_json::Value,
) -> FeedEntry {
    FeedEntry {
        auction: auction.clone(),
        seq,
        rank,
        epoch,
        event: CloudEvent {
            specversion: SPEC_VERSION.to_owned(),
            id: event_id(auction, seq, ty, epoch),
            source: format!("/gavel/{}/{}", auction.namespace(), auction.name()),
            ty: ty.to_owned(),
            subject: auction.to_string(),
            time: rfc3339(at),
            datacontenttype: "application/json".to_owned(),
            gavelseq: seq,
            gavelepoch: epoch,
            data,
        },
    }
}

fn json<T: Serialize>(data: &T) -> serde_json::Value {
    serde_json::to_value(data).unwrap_or(serde_json::Value::Null)
}

/// The public events one recorded event gives, in feed order: a bid gives `bid.accepted`,
/// `bidder.outbid` when it displaced a leader, `auction.extended` when it moved the end; a
/// close gives `auction.closed` or `auction.cancelled`. Private events give none.
pub fn from_record(auction: &AuctionId, event: &AuctionEvent) -> Vec<FeedEntry> {
    match event {
        AuctionEvent::Bid(bid) => bid_entries(auction, bid),
        AuctionEvent::Closed(result) => vec![closed(auction, result)],
        AuctionEvent::CeilingRaised(_) | AuctionEvent::Restored(_) => Vec::new(),
    }
}

fn bid_entries(auction: &AuctionId, bid: &BidEvent) -> Vec<FeedEntry> {
    let ends_at = rfc3339(bid.ends_at);
    let mut out = vec![entry(
        auction,
        bid.seq,
        0,
        bid.epoch,
        types::BID_ACCEPTED,
        bid.at,
        json(&BidData {
            auction: auction.to_string(),
            seq: bid.seq,
            bidder: &bid.bidder,
            bidder_name: &bid.name,
            amount: bid.amount,
            outcome: bid.outcome.as_str(),
            price: bid.price,
            min_next: bid.min_next,
            leader: &bid.leader,
            leader_name: &bid.leader_name,
            bid_count: bid.bid_count,
            ends_at: ends_at.clone(),
            extended: bid.extended,
            reserve_met: bid.reserve_met,
        }),
    )];
    if let Some(displaced) = bid.displaced.as_deref().filter(|d| !d.is_empty()) {
        out.push(entry(
            auction,
            bid.seq,
            1,
            bid.epoch,
            types::OUTBID,
            bid.at,
            json(&OutbidData {
                auction: auction.to_string(),
                seq: bid.seq,
                bidder: displaced,
                price: bid.price,
                min_next: bid.min_next,
                leader_name: &bid.leader_name,
                ends_at: ends_at.clone(),
            }),
        ));
    }
    if bid.extended {
        out.push(entry(
            auction,
            bid.seq,
            2,
            bid.epoch,
            types::EXTENDED,
            bid.at,
            json(&ExtendedData {
                auction: auction.to_string(),
                seq: bid.seq,
                ends_at,
            }),
        ));
    }
    out
}

fn closed(auction: &AuctionId, r: &AuctionResult) -> FeedEntry {
    let ty = if r.cancelled {
        types::CANCELLED
    } else {
        types::CLOSED
    };
    entry(
        auction,
        r.seq,
        0,
        0,
        ty,
        r.closed_at,
        json(&ClosedData {
            auction: auction.to_string(),
            seq: r.seq,
            winner: r.winner.as_deref(),
            winner_name: r.winner_name.as_deref(),
            final_price: r.final_price,
            reserve_met: r.reserve_met,
            bid_count: r.bid_count,
            closed_at: rfc3339(r.closed_at),
            cancelled: r.cancelled,
        }),
    )
}

/// `auction.opened`, at `at`, for the auction's settings (the reserve price stays secret).
pub fn opened(
    auction: &AuctionId,
    settings: &AuctionSettings,
    epoch: u64,
    at: Millis,
) -> FeedEntry {
    entry(
        auction,
        0,
        0,
        epoch,
        types::OPENED,
        at,
        json(&OpenedData {
            auction: auction.to_string(),
            title: &settings.title,
            currency: &settings.currency,
            starting_price: settings.starting_price,
            starts_at: rfc3339(settings.starts_at.unwrap_or(at)),
            ends_at: rfc3339(settings.ends_at),
        }),
    )
}

/// `auction.restored`: the live state was rebuilt at `seq`, in the new `epoch`.
pub fn restored(auction: &AuctionId, seq: u64, epoch: u64, at: Millis) -> FeedEntry {
    entry(
        auction,
        seq,
        RANK_RESTORED,
        epoch,
        types::RESTORED,
        at,
        json(&RestoredData {
            auction: auction.to_string(),
            seq,
            epoch,
        }),
    )
}

/// Milliseconds since the Unix epoch as RFC 3339 in UTC with milliseconds
/// (`2026-12-03T15:40:00.250Z`).
pub fn rfc3339(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// A Standard Webhooks signing secret, `whsec_<base64>`; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

/// The text is not a `whsec_<base64>` secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid webhook secret: expected whsec_<base64 of at least 16 bytes>")]
pub struct InvalidSecret;

impl FromStr for WebhookSecret {
    type Err = InvalidSecret;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let b64 = text.trim().strip_prefix("whsec_").ok_or(InvalidSecret)?;
        let key = BASE64.decode(b64).map_err(|_| InvalidSecret)?;
        if key.len() < 16 {
            return Err(InvalidSecret);
        }
        Ok(Self(key))
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(***)")
    }
}

impl WebhookSecret {
    /// A secret of these key bytes.
    pub fn from_key(key: &[u8]) -> Self {
        Self(key.to_vec())
    }

    /// The secret's text form, `whsec_<base64>`.
    pub fn to_text(&self) -> String {
        format!("whsec_{}", BASE64.encode(&self.0))
    }

    /// The `webhook-signature` value: `v1,<base64 of HMAC-SHA256("<id>.<timestamp>.<body>")>`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        format!("v1,{}", BASE64.encode(self.mac(id, timestamp, body)))
    }

    /// Whether `header` (space-separated `v1,<sig>` entries) holds a valid signature of the
    /// message, compared in constant time.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        header.split(' ').any(|sig| {
            sig.strip_prefix("v1,")
                .and_then(|b64| BASE64.decode(b64).ok())
                .is_some_and(|given| {
                    let mut mac = self.hmac();
                    mac.update(format!("{id}.{timestamp}.").as_bytes());
                    mac.update(body);
                    mac.verify_slice(&given).is_ok()
                })
        })
    }

    fn hmac(&self) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
        let mut mac = self.hmac();
        mac.update(format!("{id}.{timestamp}.").as_bytes());
        mac.update(body);
        mac.finalize().into_bytes().to_vec()
    }
}

/// Queues `entries` in the outbox within the caller's transaction (the flusher's): their
/// `data` gets the auction's currency, and an entry without an epoch the auction's epoch.
pub async fn queue_in(
    conn: &mut sqlx::PgConnection,
    entries: &[FeedEntry],
) -> Result<u64, StoreError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&FeedEntry) -> String| entries.iter().map(f).collect::<Vec<String>>();
    let events: Vec<String> = entries
        .iter()
        .map(|e| serde_json::to_string(&e.event).unwrap_or_default())
        .collect();
    let done = sqlx::query(
        "INSERT INTO feed_outbox (event_id, auction_id, seq, rank, epoch, event)
         SELECT t.id, t.a, t.s, t.r, CASE WHEN t.e = 0 THEN coalesce(a.epoch, 0) ELSE t.e END,
             jsonb_set(
                 CASE WHEN t.e = 0 THEN jsonb_set(t.j::jsonb, '{gavelepoch}',
                     to_jsonb(coalesce(a.epoch, 0))) ELSE t.j::jsonb END,
                 '{data,currency}', coalesce(to_jsonb(a.currency), 'null'::jsonb))
         FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::smallint[], $5::bigint[],
             $6::text[]) AS t(id, a, s, r, e, j)
         LEFT JOIN auctions a ON a.auction_id = t.a
         ORDER BY t.a, t.s, t.r",
    )
    .bind(col(|e| e.event.id.clone()))
    .bind(col(|e| e.auction.to_string()))
    .bind(entries.iter().map(|e| e.seq as i64).collect::<Vec<i64>>())
    .bind(entries.iter().map(|e| e.rank).collect::<Vec<i16>>())
    .bind(entries.iter().map(|e| e.epoch as i64).collect::<Vec<i64>>())
    .bind(events)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Whether the event at `(seq, epoch)` of type `ty` may be delivered after the sink's
/// cursor `(cursor_seq, cursor_epoch)` without skipping one: its seq follows the last
/// delivered one, and an event of a newer epoch waits for that epoch's restore.
pub fn in_order(cursor_seq: i64, cursor_epoch: i64, seq: i64, epoch: i64, ty: &str) -> bool {
    let seq_ok = seq <= cursor_seq + 1;
    let epoch_ok = ty == types::RESTORED || cursor_epoch == 0 || epoch <= cursor_epoch;
    seq_ok && epoch_ok
}

/// One event to deliver to one sink.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    /// The sink's name (`cluster`, `auction`).
    pub sink: String,
    /// The CloudEvent's id.
    pub event_id: String,
    /// Its auction.
    pub auction_id: String,
    /// The record's seq.
    pub seq: i64,
    /// Order within the seq.
    pub rank: i16,
    /// The epoch.
    pub epoch: i64,
    /// The CloudEvent, JSON: the exact request body.
    pub event: String,
    /// How long ago it entered the outbox, in milliseconds.
    pub age_ms: i64,
    /// Failed attempts so far.
    pub attempts: i32,
    /// Milliseconds until its next attempt is due (≤ 0: due).
    pub due_in_ms: i64,
}

impl Delivery {
    /// The CloudEvent's type, read from the body.
    pub fn ty(&self) -> String {
        serde_json::from_str::<CloudEvent>(&self.event)
            .map(|e| e.ty)
            .unwrap_or_default()
    }
}

/// One dead-lettered event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    /// The sink that refused it.
    pub sink: String,
    /// The CloudEvent's id.
    pub event_id: String,
    /// Its auction.
    pub auction_id: String,
    /// The record's seq.
    pub seq: i64,
    /// Attempts made.
    pub attempts: i32,
    /// Why the last attempt failed.
    pub last_error: String,
    /// Where it was sent.
    pub uri: Option<String>,
    /// When it was given up (RFC 3339).
    pub dead_at: String,
}

/// What the feed holds for one sink, for metrics.
#[derive(Clone, Debug, PartialEq)]
pub struct SinkBacklog {
    /// The sink.
    pub sink: String,
    /// Deliveries waiting.
    pub pending: i64,
    /// Age of the oldest waiting delivery, seconds.
    pub oldest_s: f64,
    /// Dead-lettered events.
    pub dead: i64,
}

/// The feed's queries on PostgreSQL (tables of migration `*_feed.sql`).
#[derive(Clone, Debug)]
pub struct FeedStore {
    pool: PgPool,
}

const DELIVERY_COLUMNS: &str = "sink, event_id, auction_id, seq, rank, epoch, event::text AS event,
    (EXTRACT(EPOCH FROM now() - recorded_at) * 1000)::bigint AS age_ms, attempts,
    (EXTRACT(EPOCH FROM next_at - now()) * 1000)::bigint AS due_in_ms";

/// Key of the PostgreSQL advisory lock that lets one dispatcher at a time deliver.
const DISPATCH_LOCK: i64 = 0x6761_7665_6c66_6565; // "gavelfee"

/// A connection holding the dispatcher's advisory lock: the lock lasts as long as the
/// connection (closed when dropped, so a dead holder releases it).
pub struct DispatchLock(sqlx::PgConnection);

impl DispatchLock {
    /// Whether the connection (hence the lock) is still there.
    pub async fn alive(&mut self) -> bool {
        sqlx::query("SELECT 1").execute(&mut self.0).await.is_ok()
    }
}

impl FeedStore {
    /// The feed's queries over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Takes the dispatcher's lock if no other process holds it, on a connection of its
    /// own: several operators (a leader handing over, two standalone ones) never deliver at
    /// the same time, so each auction's order holds.
    pub async fn try_lock(&self) -> Result<Option<DispatchLock>, StoreError> {
        let mut conn = self.pool.acquire().await?.detach();
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(DISPATCH_LOCK)
            .fetch_one(&mut conn)
            .await?;
        Ok(locked.then_some(DispatchLock(conn)))
    }

    /// Queues events the operator produces (openings, restores).
    pub async fn record(&self, entries: &[FeedEntry]) -> Result<u64, StoreError> {
        let mut conn = self.pool.acquire().await?;
        queue_in(&mut conn, entries).await
    }

    /// Records an Auction's own sink (`spec.sink.uri`), or none.
    pub async fn set_sink(&self, id: &AuctionId, uri: Option<&str>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE auctions SET sink_uri = $2 WHERE auction_id = $1
                 AND sink_uri IS DISTINCT FROM $2",
        )
        .bind(id.to_string())
        .bind(uri)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An auction's own sink, if it has one.
    pub async fn sink_uri(&self, auction: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(Option<String>,)> =
            sqlx::query_as("SELECT sink_uri FROM auctions WHERE auction_id = $1")
                .bind(auction)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(uri,)| uri))
    }

    /// Moves up to `limit` events from the outbox to the deliveries of each sink that gets
    /// them (`cluster` when `cluster` is true; `auction` for auctions with their own sink
    /// when `auctions` is true), in one transaction; an event no sink gets is dropped.
    /// A sink's first event of an auction starts its cursor there (from the opening, when
    /// it is among the first). Returns the events moved.
    pub async fn fan_out(
        &self,
        limit: i64,
        cluster: bool,
        auctions: bool,
    ) -> Result<u64, StoreError> {
        let (moved,): (i64,) = sqlx::query_as(
            "WITH moved AS (
                 DELETE FROM feed_outbox WHERE id IN (
                     SELECT id FROM feed_outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING event_id, auction_id, seq, rank, epoch, event, recorded_at),
             targets AS (
                 SELECT 'cluster' AS sink, m.* FROM moved m WHERE $2
                 UNION ALL
                 SELECT 'auction' AS sink, m.* FROM moved m
                     JOIN auctions a ON a.auction_id = m.auction_id
                     WHERE $3 AND a.sink_uri IS NOT NULL AND a.sink_uri <> ''),
             cursors AS (
                 INSERT INTO feed_cursors (sink, auction_id, seq, epoch)
                 SELECT sink, auction_id, CASE WHEN min(seq) <= 1 THEN -1 ELSE min(seq) - 1 END, 0
                 FROM targets GROUP BY sink, auction_id
                 ON CONFLICT DO NOTHING),
             queued AS (
                 INSERT INTO feed_deliveries (sink, event_id, auction_id, seq, rank, epoch,
                     event, recorded_at)
                 SELECT sink, event_id, auction_id, seq, rank, epoch, event, recorded_at
                 FROM targets
                 ON CONFLICT DO NOTHING)
             SELECT count(*) FROM moved",
        )
        .bind(limit)
        .bind(cluster)
        .bind(auctions)
        .fetch_one(&self.pool)
        .await?;
        Ok(moved as u64)
    }

    /// Up to `limit` `(sink, auction)` pairs whose first waiting event is due.
    pub async fn due(&self, limit: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT sink, auction_id FROM (
                 SELECT DISTINCT ON (sink, auction_id) sink, auction_id, next_at
                 FROM feed_deliveries ORDER BY sink, auction_id, seq, rank, epoch) h
             WHERE next_at <= now() ORDER BY next_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The sink's cursor in the auction, `(seq, epoch)`.
    pub async fn cursor(&self, sink: &str, auction: &str) -> Result<(i64, i64), StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT seq, epoch FROM feed_cursors WHERE sink = $1 AND auction_id = $2",
        )
        .bind(sink)
        .bind(auction)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.unwrap_or((-1, 0)))
    }

    /// The first `limit` events waiting for the sink in the auction, in feed order.
    pub async fn waiting(
        &self,
        sink: &str,
        auction: &str,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM feed_deliveries
             WHERE sink = $1 AND auction_id = $2 ORDER BY seq, rank, epoch LIMIT $3"
        ))
        .bind(sink)
        .bind(auction)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The event reached the sink: it leaves the deliveries and the cursor moves past it.
    pub async fn delivered(&self, d: &Delivery) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        settle(&mut tx, d).await?;
        tx.commit().await?;
        Ok(())
    }

    /// An attempt failed: try again in `retry_in_ms`.
    pub async fn failed(
        &self,
        d: &Delivery,
        retry_in_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE feed_deliveries SET attempts = attempts + 1, last_error = $3,
                 next_at = now() + make_interval(secs => $4::bigint / 1000.0)
             WHERE sink = $1 AND event_id = $2",
        )
        .bind(&d.sink)
        .bind(&d.event_id)
        .bind(error)
        .bind(retry_in_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The sink refused the event for good, or too many times: it moves to the sink's
    /// dead letters with the reason, and the auction's later events go on.
    pub async fn dead_letter(
        &self,
        d: &Delivery,
        error: &str,
        uri: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO feed_dead_letters (sink, event_id, auction_id, seq, rank, epoch, event,
                 recorded_at, attempts, last_error, uri)
             SELECT sink, event_id, auction_id, seq, rank, epoch, event, recorded_at,
                 attempts + 1, $3, $4
             FROM feed_deliveries WHERE sink = $1 AND event_id = $2
             ON CONFLICT (sink, event_id) DO UPDATE SET attempts = EXCLUDED.attempts,
                 last_error = EXCLUDED.last_error, uri = EXCLUDED.uri, dead_at = now()",
        )
        .bind(&d.sink)
        .bind(&d.event_id)
        .bind(error)
        .bind(uri)
        .execute(&mut *tx)
        .await?;
        settle(&mut tx, d).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Dead letters, newest first, of one sink and/or auction if given.
    pub async fn dead_letters(
        &self,
        sink: Option<&str>,
        auction: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT sink, event_id, auction_id, seq, attempts, last_error, uri,
                 to_char(dead_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS dead_at
             FROM feed_dead_letters
             WHERE ($1::text IS NULL OR sink = $1) AND ($2::text IS NULL OR auction_id = $2)
             ORDER BY dead_at DESC, auction_id, seq, rank LIMIT $3",
        )
        .bind(sink)
        .bind(auction)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Puts dead letters back into the deliveries (attempts reset), delivered again as soon
    /// as the dispatcher gets to them: those of `event_ids` if any, else all (of `sink` if
    /// given). Returns how many.
    pub async fn replay(
        &self,
        sink: Option<&str>,
        event_ids: &[String],
    ) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(
            "WITH moved AS (
                 DELETE FROM feed_dead_letters
                 WHERE ($1::text IS NULL OR sink = $1)
                     AND (cardinality($2::text[]) = 0 OR event_id = ANY($2))
                 RETURNING sink, event_id, auction_id, seq, rank, epoch, event, recorded_at),
             queued AS (
                 INSERT INTO feed_deliveries (sink, event_id, auction_id, seq, rank, epoch,
                     event, recorded_at)
                 SELECT * FROM moved ON CONFLICT DO NOTHING)
             SELECT count(*) FROM moved",
        )
        .bind(sink)
        .bind(event_ids)
        .fetch_one(&self.pool)
        .await?;
        Ok(n as u64)
    }

    /// Per sink: deliveries waiting, the oldest one's age, dead letters.
    pub async fn backlog(&self) -> Result<Vec<SinkBacklog>, StoreError> {
        let rows: Vec<(String, i64, f64, i64)> = sqlx::query_as(
            "SELECT sink, sum(pending)::bigint, max(oldest)::float8, sum(dead)::bigint FROM (
                 SELECT sink, count(*) AS pending,
                     coalesce(EXTRACT(EPOCH FROM now() - min(recorded_at)), 0) AS oldest,
                     0 AS dead
                 FROM feed_deliveries GROUP BY sink
                 UNION ALL
                 SELECT sink, 0, 0, count(*) FROM feed_dead_letters GROUP BY sink) t
             GROUP BY sink ORDER BY sink",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(sink, pending, oldest_s, dead)| SinkBacklog {
                sink,
                pending,
                oldest_s,
                dead,
            })
            .collect())
    }
}

/// The delivery is done with (delivered or dead-lettered): it leaves the deliveries and
/// the sink's cursor moves past it, so the auction's later events go on.
async fn settle(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    d: &Delivery,
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM feed_deliveries WHERE sink = $1 AND event_id = $2")
        .bind(&d.sink)
        .bind(&d.event_id)
        .execute(&mut **tx)
        .await?;
    advance(tx, d).await
}

async fn advance(tx: &mut sqlx::PgConnection, d: &Delivery) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO feed_cursors (sink, auction_id, seq, epoch) VALUES ($1, $2, $3, $4)
         ON CONFLICT (sink, auction_id) DO UPDATE
             SET seq = greatest(feed_cursors.seq, EXCLUDED.seq),
                 epoch = greatest(feed_cursors.epoch, EXCLUDED.epoch)",
    )
    .bind(&d.sink)
    .bind(&d.auction_id)
    .bind(d.seq)
    .bind(d.epoch)
    .execute(tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Outcome;

    fn id() -> AuctionId {
        "shop/lot-1".parse().unwrap()
    }

    fn bid(displaced: Option<&str>, extended: bool) -> BidEvent {
        BidEvent {
            seq: 7,
            epoch: 1,
            at: 1_764_776_400_250,
            bidder: "u-2".into(),
            name: "Bo".into(),
            amount: 130,
            max: 987_654_321,
            outcome: Outcome::Leading,
            price: 130,
            min_next: 132,
            leader: "u-2".into(),
            leader_name: "Bo".into(),
            bid_count: 7,
            ends_at: 1_764_776_460_000,
            extended,
            displaced: displaced.map(Into::into),
            reserve_met: true,
            ceiling: Some(987_654_321),
        }
    }

    #[test]
    fn a_bid_gives_its_public_events_in_order_and_never_a_ceiling() {
        let entries = from_record(&id(), &AuctionEvent::Bid(bid(Some("u-1"), true)));
        let types: Vec<&str> = entries.iter().map(|e| e.event.ty.as_str()).collect();
        assert_eq!(types, [types::BID_ACCEPTED, types::OUTBID, types::EXTENDED]);
        assert_eq!(
            entries.iter().map(|e| e.rank).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let first = &entries[0].event;
        assert_eq!(first.id, "shop/lot-1/7/bid.accepted");
        assert_eq!(first.source, "/gavel/shop/lot-1");
        assert_eq!(first.subject, "shop/lot-1");
        assert_eq!(first.time, "2025-12-03T15:40:00.250Z");
        assert_eq!(entries[1].event.data["bidder"], "u-1");
        for e in &entries {
            let text = serde_json::to_string(&e.event).unwrap();
            assert!(!text.contains("987654321"), "{text}");
            assert!(!text.contains("max") && !text.contains("ceiling"), "{text}");
        }
        let plain = from_record(&id(), &AuctionEvent::Bid(bid(None, false)));
        assert_eq!(plain.len(), 1);
        assert!(from_record(&id(), &AuctionEvent::CeilingRaised(bid(None, false))).is_empty());
    }

    #[test]
    fn closes_and_restores() {
        let result = AuctionResult {
            seq: 9,
            winner: Some("u-2".into()),
            winner_name: Some("Bo".into()),
            final_price: Some(130),
            reserve_met: true,
            bid_count: 8,
            closed_at: 0,
            cancelled: false,
        };
        let closed = &from_record(&id(), &AuctionEvent::Closed(result.clone()))[0];
        assert_eq!(closed.event.ty, types::CLOSED);
        assert_eq!(closed.event.data["final_price"], 130);
        assert_eq!(closed.event.time, "1970-01-01T00:00:00.000Z");
        let cancelled = AuctionResult {
            cancelled: true,
            ..result
        };
        assert_eq!(
            from_record(&id(), &AuctionEvent::Closed(cancelled))[0]
                .event
                .ty,
            types::CANCELLED
        );
        let r = restored(&id(), 9, 3, 0);
        assert_eq!(r.event.id, "shop/lot-1/9/auction.restored/3");
        assert_eq!(r.rank, RANK_RESTORED);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(4_102_444_799_000), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn order_rules() {
        // Nothing delivered yet: the opening (seq 0) or seq 1 may go, not seq 2.
        assert!(in_order(-1, 0, 0, 1, types::OPENED));
        assert!(!in_order(-1, 0, 1, 1, types::BID_ACCEPTED));
        assert!(in_order(0, 1, 1, 1, types::BID_ACCEPTED));
        assert!(!in_order(0, 1, 2, 1, types::BID_ACCEPTED));
        // Several events of one seq, and a replayed older one.
        assert!(in_order(5, 1, 5, 1, types::OUTBID));
        assert!(in_order(5, 1, 3, 1, types::BID_ACCEPTED));
        // A newer epoch waits for its restore.
        assert!(!in_order(5, 1, 6, 2, types::BID_ACCEPTED));
        assert!(in_order(5, 1, 5, 2, types::RESTORED));
        assert!(in_order(5, 2, 6, 2, types::BID_ACCEPTED));
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks reference libraries.
        let secret: WebhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".parse().unwrap();
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(secret.verify(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
            &format!("v1,bogus {sig}")
        ));
        assert!(!secret.verify("other", 1_614_265_330, b"{}", &sig));
        assert!(
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
                .parse::<WebhookSecret>()
                .is_err()
        );
        assert!("whsec_!!".parse::<WebhookSecret>().is_err());
        assert_eq!(format!("{secret:?}"), "WebhookSecret(***)");
        assert_eq!(secret.to_text().parse::<WebhookSecret>().unwrap(), secret);
    }
}
