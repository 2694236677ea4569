//! PostgreSQL: the durable record of auctions, accepted bids (ceilings in a table of
//! their own) and results. The schema lives in `engine/migrations/` and is applied with
//! [`Store::migrate`]. Every write is idempotent, keyed on the auction and `seq`.

use std::collections::HashSet;
use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::client::{LivePhase, Snapshot};
use crate::event::{AuctionEvent, BidEvent};
use crate::keys::AuctionId;
use crate::restore::DurableRecord;
use crate::rules::{AuctionResult, Outcome};
use crate::settings::{Amount, AuctionSettings, Millis};

/// The schema's migrations, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The most rows one history page returns.
pub const MAX_HISTORY_PAGE: i64 = 1_000;

/// Failures talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query or the connection failed.
    #[error("postgres: {0}")]
    Sql(#[from] sqlx::Error),
    /// Applying the migrations failed.
    #[error("postgres migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether the failure is about reaching the server rather than about the data:
    /// such writes are retried as they are, never dead-lettered.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Sql(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
                ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
            }),
            StoreError::Sql(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed,
            ) => true,
            StoreError::Sql(_) => false,
            StoreError::Migrate(_) => true,
        }
    }
}

/// One accepted bid as the public history shows it: never the ceiling, never the
/// bidder's id, only its display name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PublicBid {
    /// Sequence number within the auction.
    pub seq: u64,
    /// Display name of the bidder.
    pub bidder: String,
    /// The bid's amount.
    pub amount: Amount,
    /// How it left its bidder.
    pub outcome: Outcome,
    /// Current price right after it.
    pub price: Amount,
    /// Redis server time of the bid.
    pub placed_at: Millis,
}

/// One event read from a flush stream, to be written.
#[derive(Clone, Debug)]
pub struct FlushItem {
    /// Its auction.
    pub auction: AuctionId,
    /// The JSON exactly as the script emitted it (what `events` records and compares).
    pub json: String,
    /// The parsed event.
    pub event: AuctionEvent,
}

/// What [`Store::write_batch`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Events newly recorded.
    pub written: usize,
    /// Indices (into the batch) of events whose `(auction, seq)` PostgreSQL already holds
    /// with other content: never written, never silently dropped.
    pub conflicts: Vec<usize>,
}

/// What PostgreSQL knows of an auction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownAuction {
    /// Its current epoch.
    pub epoch: u64,
    /// Its result, once recorded.
    pub result: Option<AuctionResult>,
}

fn event_epoch(event: &AuctionEvent) -> i64 {
    match event {
        AuctionEvent::Bid(b) | AuctionEvent::CeilingRaised(b) => b.epoch as i64,
        AuctionEvent::Closed(_) => 0,
        AuctionEvent::Restored(r) => r.epoch as i64,
    }
}

/// A pool of PostgreSQL connections with Gavel's queries.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

/// Connections of a [`Store`]'s pool unless the process asks for another size.
pub const DEFAULT_POOL_SIZE: u32 = 8;

impl Store {
    /// Connects lazily: the pool opens connections when first used, so a process can start
    /// (and keep bidding) while PostgreSQL is down.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        Self::connect_lazy_with(url, DEFAULT_POOL_SIZE)
    }

    /// Like [`Store::connect_lazy`], with at most `connections` connections (the operator
    /// sizes its pool to the reconciles it runs at once).
    pub fn connect_lazy_with(url: &str, connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(connections.max(1))
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)?;
        Ok(Self { pool })
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies pending migrations (safe to run from several processes at once).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Checks that PostgreSQL answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Records or updates an auction's settings; returns its epoch.
    pub async fn upsert_auction(
        &self,
        id: &AuctionId,
        s: &AuctionSettings,
    ) -> Result<u64, StoreError> {
        let increments = serde_json::to_value(s.increments.tiers())
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let (epoch,): (i64,) = sqlx::query_as(
            "INSERT INTO auctions (auction_id, title, currency, starting_price, reserve_price,
                 increments, starts_at, ends_at)
             VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::bigint / 1000.0),
                 to_timestamp($8::bigint / 1000.0))
             ON CONFLICT (auction_id) DO UPDATE SET title = EXCLUDED.title,
                 currency = EXCLUDED.currency, starting_price = EXCLUDED.starting_price,
                 reserve_price = EXCLUDED.reserve_price, increments = EXCLUDED.increments,
                 starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, updated_at = now()
             RETURNING epoch",
        )
        .bind(id.to_string())
        .bind(&s.title)
        .bind(&s.currency)
        .bind(s.starting_price)
        .bind(s.reserve_price)
        .bind(increments)
        .bind(s.starts_at)
        .bind(s.ends_at)
        .fetch_one(&self.pool)
        .await?;
        Ok(epoch as u64)
    }

    /// Writes a batch of events (of any auctions) in one durable transaction. An event
    /// already recorded with the same content is skipped, so replaying a batch is
    /// harmless; one recorded with other content is a conflict: it is not written, and
    /// its index in `items` is reported. Bids, their ceilings and results are recorded for
    /// the newly written events only. A leader's private ceiling raise goes to
    /// `ceiling_raises` (once: a replay is skipped).
    pub async fn write_batch(&self, items: &[FlushItem]) -> Result<BatchReport, StoreError> {
        let raises: Vec<(&AuctionId, &BidEvent, &str)> = items
            .iter()
            .filter_map(|i| match &i.event {
                AuctionEvent::CeilingRaised(b) => Some((&i.auction, b, i.json.as_str())),
                _ => None,
            })
            .collect();
        let items: Vec<(usize, &FlushItem)> = items
            .iter()
            .enumerate()
            .filter(|(_, i)| {
                !matches!(
                    i.event,
                    AuctionEvent::Restored(_) | AuctionEvent::CeilingRaised(_)
                )
            })
            .collect();
        if items.is_empty() && raises.is_empty() {
            return Ok(BatchReport::default());
        }
        let auctions: Vec<String> = items.iter().map(|(_, i)| i.auction.to_string()).collect();
        let seqs: Vec<i64> = items.iter().map(|(_, i)| i.event.seq() as i64).collect();
        let epochs: Vec<i64> = items.iter().map(|(_, i)| event_epoch(&i.event)).collect();
        let jsons: Vec<&str> = items.iter().map(|(_, i)| i.json.as_str()).collect();
        let mut tx = self.pool.begin().await?;
        // The flusher acknowledges entries in Redis once this commit returns, so the commit
        // must be durable whatever the server's default is.
        sqlx::query("SET LOCAL synchronous_commit TO on")
            .execute(&mut *tx)
            .await?;
        let inserted: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO events (auction_id, seq, epoch, event)
             SELECT a, s, e, j::jsonb FROM UNNEST($1::text[], $2::bigint[], $3::bigint[],
                 $4::text[]) AS t(a, s, e, j)
             ON CONFLICT (auction_id, seq) DO NOTHING
             RETURNING auction_id, seq",
        )
        .bind(&auctions)
        .bind(&seqs)
        .bind(&epochs)
        .bind(&jsons)
        .fetch_all(&mut *tx)
        .await?;
        let inserted: HashSet<(String, i64)> = inserted.into_iter().collect();
        let raised =
            if raises.is_empty() {
                0
            } else {
                sqlx::query(
                "INSERT INTO ceiling_raises (auction_id, epoch, after_seq, max_amount, bidder_id,
                     raised_at, event)
                 SELECT a, e, s, m, b, to_timestamp(at / 1000.0), j::jsonb
                 FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::bigint[], $5::text[],
                     $6::bigint[], $7::text[]) AS t(a, e, s, m, b, at, j)
                 ON CONFLICT DO NOTHING",
            )
            .bind(
                raises
                    .iter()
                    .map(|(a, _, _)| a.to_string())
                    .collect::<Vec<_>>(),
            )
            .bind(
                raises
                    .iter()
                    .map(|(_, b, _)| b.epoch as i64)
                    .collect::<Vec<_>>(),
            )
            .bind(raises.iter().map(|(_, b, _)| b.seq as i64).collect::<Vec<_>>())
            .bind(raises.iter().map(|(_, b, _)| b.max).collect::<Vec<_>>())
            .bind(
                raises
                    .iter()
                    .map(|(_, b, _)| b.bidder.clone())
                    .collect::<Vec<_>>(),
            )
            .bind(raises.iter().map(|(_, b, _)| b.at).collect::<Vec<_>>())
            .bind(
                raises
                    .iter()
                    .map(|(_, _, j)| (*j).to_owned())
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *tx)
            .await?
            .rows_affected() as usize
            };
        let mut fresh = Vec::new();
        let mut replayed = Vec::new();
        for (k, (index, item)) in items.iter().enumerate() {
            if inserted.contains(&(auctions[k].clone(), seqs[k])) {
                fresh.push(*item);
            } else {
                replayed.push((*index, k));
            }
        }
        // A duplicate within the batch is inserted once; any other copy is compared too.
        let mut report = BatchReport {
            written: fresh.len() + raised,
            conflicts: Vec::new(),
        };
        if !replayed.is_empty() {
            let pick = |f: &dyn Fn(usize) -> String| -> Vec<String> {
                replayed.iter().map(|(_, k)| f(*k)).collect()
            };
            let differing: Vec<(i32,)> = sqlx::query_as(
                "SELECT t.i FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::int[])
                     AS t(a, s, j, i)
                 JOIN events e ON e.auction_id = t.a AND e.seq = t.s
                 WHERE e.event <> t.j::jsonb",
            )
            .bind(pick(&|k| auctions[k].clone()))
            .bind(replayed.iter().map(|(_, k)| seqs[*k]).collect::<Vec<i64>>())
            .bind(pick(&|k| jsons[k].to_owned()))
            .bind(
                replayed
                    .iter()
                    .map(|(index, _)| *index as i32)
                    .collect::<Vec<i32>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
            report.conflicts = differing.into_iter().map(|(i,)| i as usize).collect();
            report.conflicts.sort_unstable();
        }
        let bids: Vec<(&AuctionId, &BidEvent)> = fresh
            .iter()
            .filter_map(|i| match &i.event {
                AuctionEvent::Bid(b) => Some((&i.auction, b)),
                _ => None,
            })
            .collect();
        if !bids.is_empty() {
            let ids: Vec<String> = bids.iter().map(|(a, _)| a.to_string()).collect();
            let col =
                |f: fn(&BidEvent) -> i64| bids.iter().map(|(_, b)| f(b)).collect::<Vec<i64>>();
            let text = |f: fn(&BidEvent) -> &str| {
                bids.iter()
                    .map(|(_, b)| f(b).to_owned())
                    .collect::<Vec<String>>()
            };
            let bid_seqs = col(|b| b.seq as i64);
            sqlx::query(
                "INSERT INTO bids (auction_id, seq, bidder_id, bidder_name, amount, outcome,
                     price_after, leader_after, placed_at)
                 SELECT a, seq, bidder, name, amount, outcome, price, leader,
                     to_timestamp(at / 1000.0)
                 FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
                     $6::text[], $7::bigint[], $8::text[], $9::bigint[])
                     AS t(a, seq, bidder, name, amount, outcome, price, leader, at)
                 ON CONFLICT (auction_id, seq) DO NOTHING",
            )
            .bind(&ids)
            .bind(&bid_seqs)
            .bind(text(|b| &b.bidder))
            .bind(text(|b| &b.name))
            .bind(col(|b| b.amount))
            .bind(text(|b| b.outcome.as_str()))
            .bind(col(|b| b.price))
            .bind(text(|b| &b.leader))
            .bind(col(|b| b.at))
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO bid_ceilings (auction_id, seq, max_amount)
                 SELECT a, seq, max FROM UNNEST($1::text[], $2::bigint[], $3::bigint[])
                     AS t(a, seq, max)
                 ON CONFLICT (auction_id, seq) DO NOTHING",
            )
            .bind(&ids)
            .bind(&bid_seqs)
            .bind(col(|b| b.max))
            .execute(&mut *tx)
            .await?;
        }
        let results: Vec<(&AuctionId, &AuctionResult)> = fresh
            .iter()
            .filter_map(|i| match &i.event {
                AuctionEvent::Closed(result) => Some((&i.auction, result)),
                _ => None,
            })
            .collect();
        insert_results(&mut tx, &results).await?;
        // The outbound feed's public events of what is newly recorded, in the same
        // transaction: the feed never misses nor invents an event of the record.
        let feed: Vec<crate::outbound::FeedEntry> = fresh
            .iter()
            .flat_map(|i| crate::outbound::from_record(&i.auction, &i.event))
            .collect();
        crate::outbound::queue_in(&mut tx, &feed).await?;
        tx.commit().await?;
        Ok(report)
    }

    /// Writes one auction's events (see [`Store::write_batch`]), their JSON re-encoded.
    pub async fn write_events(
        &self,
        id: &AuctionId,
        events: &[AuctionEvent],
    ) -> Result<BatchReport, StoreError> {
        let items: Vec<FlushItem> = events
            .iter()
            .map(|event| FlushItem {
                auction: id.clone(),
                json: serde_json::to_string(event).unwrap_or_default(),
                event: event.clone(),
            })
            .collect();
        self.write_batch(&items).await
    }

    /// How many of the auction's events PostgreSQL holds. Seqs start at 1 and are unique,
    /// so it holds all of `1..=seq` exactly when this equals `seq`.
    pub async fn event_count(&self, id: &AuctionId) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE auction_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    /// The highest seq PostgreSQL holds for the auction (0 for none). Redis's seq is never
    /// below it unless Redis lost state.
    pub async fn durable_seq(&self, id: &AuctionId) -> Result<u64, StoreError> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT coalesce(max(seq), 0) FROM events WHERE auction_id = $1")
                .bind(id.to_string())
                .fetch_one(&self.pool)
                .await?;
        Ok(n as u64)
    }

    /// Whether the auction was ever provisioned (PostgreSQL has its row) and the highest
    /// seq recorded for it, in one query.
    pub async fn durable(&self, id: &AuctionId) -> Result<(bool, u64), StoreError> {
        let (known, seq): (bool, i64) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM auctions WHERE auction_id = $1),
                 (SELECT coalesce(max(seq), 0) FROM events WHERE auction_id = $1)",
        )
        .bind(id.to_string())
        .fetch_one(&self.pool)
        .await?;
        Ok((known, seq as u64))
    }

    /// Events with `seq > after`, oldest first, at most `limit` (capped at
    /// [`MAX_HISTORY_PAGE`]): the replay of what Redis no longer holds.
    pub async fn events_after(
        &self,
        id: &AuctionId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<AuctionEvent>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT event::text FROM events WHERE auction_id = $1 AND seq > $2
             ORDER BY seq LIMIT $3",
        )
        .bind(id.to_string())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit).min(MAX_HISTORY_PAGE))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|(json,)| {
                AuctionEvent::from_json(json.as_bytes())
                    .map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))
            })
            .collect()
    }

    /// What PostgreSQL knows of an auction a Redis lookup did not find: whether it was
    /// ever provisioned, and its result if it closed.
    pub async fn known_auction(&self, id: &AuctionId) -> Result<Option<KnownAuction>, StoreError> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT epoch FROM auctions WHERE auction_id = $1")
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let Some((epoch,)) = row else {
            return Ok(None);
        };
        Ok(Some(KnownAuction {
            epoch: epoch as u64,
            result: self.result(id).await?,
        }))
    }

    /// The snapshot of a closed auction whose live state has left Redis, from the record
    /// alone (with `viewer`'s own last ceiling); `None` unless it is closed.
    pub async fn closed_snapshot(
        &self,
        id: &AuctionId,
        viewer: Option<&str>,
    ) -> Result<Option<Snapshot>, StoreError> {
        let Some(result) = self.result(id).await? else {
            return Ok(None);
        };
        let row: Option<AuctionRow> = sqlx::query_as(
            "SELECT title, currency, starting_price, increments,
                     (EXTRACT(EPOCH FROM starts_at) * 1000)::bigint,
                     (EXTRACT(EPOCH FROM ends_at) * 1000)::bigint, epoch,
                     reserve_price IS NOT NULL
                 FROM auctions WHERE auction_id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some((title, currency, starting, increments, starts_at, ends_at, epoch, has_reserve)) =
            row
        else {
            return Ok(None);
        };
        let (extended_end, leader, your_max): (Option<i64>, Option<String>, Option<i64>) =
            sqlx::query_as(
                "SELECT
                     (SELECT max((event->>'ends_at')::bigint) FROM events
                      WHERE auction_id = $1 AND event->>'kind' = 'bid'),
                     (SELECT event->>'leader' FROM events
                      WHERE auction_id = $1 AND event->>'kind' = 'bid'
                      ORDER BY seq DESC LIMIT 1),
                     greatest(
                         (SELECT CASE WHEN event->>'leader' = event->>'bidder'
                                          AND event ? 'ceiling'
                                      THEN (event->>'ceiling')::bigint
                                      ELSE (event->>'max')::bigint END
                          FROM events WHERE auction_id = $1 AND event->>'kind' = 'bid'
                              AND event->>'bidder' = $2
                          ORDER BY seq DESC LIMIT 1),
                         (SELECT max(max_amount) FROM ceiling_raises
                          WHERE auction_id = $1 AND bidder_id = $2))",
            )
            .bind(id.to_string())
            .bind(viewer.unwrap_or_default())
            .fetch_one(&self.pool)
            .await?;
        let tiers: Vec<crate::settings::Tier> =
            serde_json::from_value(increments).unwrap_or_default();
        let price = result.final_price;
        let step = |p: i64| {
            tiers
                .iter()
                .take_while(|t| t.from <= p)
                .last()
                .map_or(1, |t| t.step)
        };
        Ok(Some(Snapshot {
            title,
            currency,
            seq: result.seq,
            phase: if result.cancelled {
                LivePhase::Cancelled
            } else {
                LivePhase::Closed
            },
            price,
            leader_name: price.and(result.winner_name.clone()),
            leader: price.and(leader),
            bid_count: result.bid_count,
            min_next: price.map_or(starting, |p| p + step(p)),
            starts_at,
            ends_at: extended_end.map_or(ends_at, |e| e.max(ends_at)),
            scheduled_ends_at: ends_at,
            reserve_met: result.reserve_met,
            has_reserve,
            your_max: viewer.and(your_max),
            server_time: crate::runtime::now_ms(),
            epoch: epoch as u64,
            halted: None,
            result: Some(result),
        }))
    }

    /// Reads the durable record of an auction for a restore, and takes the next epoch for
    /// it, in one transaction (see [`crate::restore`]).
    pub async fn begin_restore(&self, id: &AuctionId) -> Result<DurableRecord, StoreError> {
        let auction = id.to_string();
        let mut tx = self.pool.begin().await?;
        let (epoch,): (i64,) = sqlx::query_as(
            "SELECT greatest(
                 (SELECT epoch FROM auctions WHERE auction_id = $1),
                 (SELECT max(epoch) FROM events WHERE auction_id = $1), 1) + 1",
        )
        .bind(&auction)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query("UPDATE auctions SET epoch = $2, updated_at = now() WHERE auction_id = $1")
            .bind(&auction)
            .bind(epoch)
            .execute(&mut *tx)
            .await?;
        let (seq,): (i64,) =
            sqlx::query_as("SELECT coalesce(max(seq), 0) FROM events WHERE auction_id = $1")
                .bind(&auction)
                .fetch_one(&mut *tx)
                .await?;
        let last = |kind: &'static str| {
            sqlx::query_as::<_, (String,)>(
                "SELECT event::text FROM events WHERE auction_id = $1 AND event->>'kind' = $2
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(auction.clone())
            .bind(kind)
        };
        let decode = |json: &str| {
            AuctionEvent::from_json(json.as_bytes())
                .map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))
        };
        let last_bid = match last("bid").fetch_optional(&mut *tx).await? {
            Some((json,)) => match decode(&json)? {
                AuctionEvent::Bid(bid) => Some(bid),
                _ => None,
            },
            None => None,
        };
        let closed = match last("closed").fetch_optional(&mut *tx).await? {
            Some((json,)) => match decode(&json)? {
                AuctionEvent::Closed(result) => Some((result, json)),
                _ => None,
            },
            None => None,
        };
        // Each bidder's own ceiling as the place-bid script keeps it: the leader's ceiling
        // when the bidder led after its latest bid, else that bid's `max`; or its latest
        // private raise, which is higher (a bidder's own ceiling never goes down).
        let ceilings: Vec<(String, i64)> = sqlx::query_as(
            "SELECT bidder, max(own) FROM (
                 (SELECT DISTINCT ON (event->>'bidder') event->>'bidder' AS bidder,
                      CASE WHEN event->>'leader' = event->>'bidder' AND event ? 'ceiling'
                           THEN (event->>'ceiling')::bigint
                           ELSE (event->>'max')::bigint END AS own
                  FROM events WHERE auction_id = $1 AND event->>'kind' = 'bid'
                  ORDER BY event->>'bidder', seq DESC)
                 UNION ALL
                 SELECT bidder_id, max_amount FROM ceiling_raises WHERE auction_id = $1) t
             GROUP BY bidder ORDER BY bidder",
        )
        .bind(&auction)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(DurableRecord {
            epoch: epoch as u64,
            seq: seq as u64,
            last_bid,
            closed,
            ceilings,
        })
    }

    /// Records an auction's result unless one is already recorded.
    pub async fn record_result(
        &self,
        id: &AuctionId,
        result: &AuctionResult,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        insert_result(&mut conn, id, result).await
    }

    /// The recorded result, if the auction has closed.
    pub async fn result(&self, id: &AuctionId) -> Result<Option<AuctionResult>, StoreError> {
        let row: Option<ResultRow> = sqlx::query_as(
            "SELECT seq, winner_id, winner_name, final_price, reserve_met, bid_count,
                     (EXTRACT(EPOCH FROM closed_at) * 1000)::bigint, cancelled
                 FROM results WHERE auction_id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(
            |(
                seq,
                winner,
                winner_name,
                final_price,
                reserve_met,
                bid_count,
                closed_at,
                cancelled,
            )| {
                AuctionResult {
                    seq: seq as u64,
                    winner,
                    winner_name,
                    final_price,
                    reserve_met,
                    bid_count: bid_count as u64,
                    closed_at,
                    cancelled,
                }
            },
        ))
    }

    /// Accepted bids with `seq > after`, oldest first, at most `limit` (capped at
    /// [`MAX_HISTORY_PAGE`]). Ceilings are never read.
    pub async fn bids(
        &self,
        id: &AuctionId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<PublicBid>, StoreError> {
        let rows: Vec<(i64, String, i64, String, i64, i64)> = sqlx::query_as(
            "SELECT seq, bidder_name, amount, outcome, price_after,
                 (EXTRACT(EPOCH FROM placed_at) * 1000)::bigint
             FROM bids WHERE auction_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        )
        .bind(id.to_string())
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(i64::from(limit).min(MAX_HISTORY_PAGE))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(seq, bidder, amount, outcome, price, placed_at)| PublicBid {
                    seq: seq as u64,
                    bidder,
                    amount,
                    outcome: Outcome::parse(&outcome).unwrap_or(Outcome::Outbid),
                    price,
                    placed_at,
                },
            )
            .collect())
    }

    /// Number of bids recorded for the auction.
    pub async fn bid_count(&self, id: &AuctionId) -> Result<u64, StoreError> {
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM bids WHERE auction_id = $1")
            .bind(id.to_string())
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}

/// `auctions` columns in the order [`Store::closed_snapshot`] selects them.
type AuctionRow = (
    String,
    String,
    i64,
    serde_json::Value,
    Option<i64>,
    i64,
    i64,
    bool,
);

/// `results` columns in the order [`Store::result`] selects them.
type ResultRow = (
    i64,
    Option<String>,
    Option<String>,
    Option<i64>,
    bool,
    i64,
    i64,
    bool,
);

/// The results of a flush batch in one statement (a close storm flushes hundreds of
/// closes per batch: one round trip, not one each).
async fn insert_results(
    conn: &mut sqlx::PgConnection,
    results: &[(&AuctionId, &AuctionResult)],
) -> Result<(), StoreError> {
    match results {
        [] => return Ok(()),
        [(id, r)] => return insert_result(conn, id, r).await,
        _ => {}
    }
    sqlx::query(
        "INSERT INTO results (auction_id, seq, winner_id, winner_name, final_price, reserve_met,
             bid_count, cancelled, closed_at)
         SELECT a, s, w, n, p, r, b, c, to_timestamp(at / 1000.0)
         FROM UNNEST($1::text[], $2::bigint[], $3::text[], $4::text[], $5::bigint[],
             $6::bool[], $7::bigint[], $8::bool[], $9::bigint[])
             AS t(a, s, w, n, p, r, b, c, at)
         ON CONFLICT (auction_id) DO NOTHING",
    )
    .bind(
        results
            .iter()
            .map(|(id, _)| id.to_string())
            .collect::<Vec<_>>(),
    )
    .bind(
        results
            .iter()
            .map(|(_, r)| r.seq as i64)
            .collect::<Vec<_>>(),
    )
    .bind(
        results
            .iter()
            .map(|(_, r)| r.winner.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        results
            .iter()
            .map(|(_, r)| r.winner_name.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        results
            .iter()
            .map(|(_, r)| r.final_price)
            .collect::<Vec<_>>(),
    )
    .bind(
        results
            .iter()
            .map(|(_, r)| r.reserve_met)
            .collect::<Vec<_>>(),
    )
    .bind(
        results
            .iter()
            .map(|(_, r)| r.bid_count as i64)
            .collect::<Vec<_>>(),
    )
    .bind(results.iter().map(|(_, r)| r.cancelled).collect::<Vec<_>>())
    .bind(results.iter().map(|(_, r)| r.closed_at).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

async fn insert_result(
    conn: &mut sqlx::PgConnection,
    id: &AuctionId,
    r: &AuctionResult,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO results (auction_id, seq, winner_id, winner_name, final_price, reserve_met,
             bid_count, cancelled, closed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9::bigint / 1000.0))
         ON CONFLICT (auction_id) DO NOTHING",
    )
    .bind(id.to_string())
    .bind(r.seq as i64)
    .bind(&r.winner)
    .bind(&r.winner_name)
    .bind(r.final_price)
    .bind(r.reserve_met)
    .bind(r.bid_count as i64)
    .bind(r.cancelled)
    .bind(r.closed_at)
    .execute(conn)
    .await?;
    Ok(())
}
