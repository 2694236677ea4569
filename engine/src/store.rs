//! PostgreSQL: the durable record of auctions, accepted bids (ceilings in a table of
//! their own) and results. The schema lives in `engine/migrations/` and is applied with
//! [`Store::migrate`]. Every write is idempotent, keyed on the auction and `seq`.

use std::time::Duration;

use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::event::{AuctionEvent, BidEvent};
use crate::keys::AuctionId;
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

/// A pool of PostgreSQL connections with Gavel's queries.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects lazily: the pool opens connections when first used, so a process can start
    /// (and keep bidding) while PostgreSQL is down.
    pub fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
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

    /// Records or updates an auction's settings.
    pub async fn upsert_auction(
        &self,
        id: &AuctionId,
        s: &AuctionSettings,
    ) -> Result<(), StoreError> {
        let increments = serde_json::to_value(s.increments.tiers())
            .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        sqlx::query(
            "INSERT INTO auctions (auction_id, title, currency, starting_price, reserve_price,
                 increments, starts_at, ends_at)
             VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::bigint / 1000.0),
                 to_timestamp($8::bigint / 1000.0))
             ON CONFLICT (auction_id) DO UPDATE SET title = EXCLUDED.title,
                 currency = EXCLUDED.currency, starting_price = EXCLUDED.starting_price,
                 reserve_price = EXCLUDED.reserve_price, increments = EXCLUDED.increments,
                 starts_at = EXCLUDED.starts_at, ends_at = EXCLUDED.ends_at, updated_at = now()",
        )
        .bind(id.to_string())
        .bind(&s.title)
        .bind(&s.currency)
        .bind(s.starting_price)
        .bind(s.reserve_price)
        .bind(increments)
        .bind(s.starts_at)
        .bind(s.ends_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Writes a batch of one auction's events in one transaction; events already written
    /// are skipped, so replaying a batch is harmless.
    pub async fn write_events(
        &self,
        id: &AuctionId,
        events: &[AuctionEvent],
    ) -> Result<(), StoreError> {
        let bids: Vec<&BidEvent> = events
            .iter()
            .filter_map(|e| match e {
                AuctionEvent::Bid(b) => Some(b),
                AuctionEvent::Closed(_) => None,
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        // The flusher acknowledges entries in Redis once this commit returns, so the commit
        // must be durable whatever the server's default is.
        sqlx::query("SET LOCAL synchronous_commit TO on")
            .execute(&mut *tx)
            .await?;
        if !bids.is_empty() {
            let col = |f: fn(&BidEvent) -> i64| bids.iter().map(|b| f(b)).collect::<Vec<i64>>();
            let text = |f: fn(&BidEvent) -> &str| {
                bids.iter()
                    .map(|b| f(b).to_owned())
                    .collect::<Vec<String>>()
            };
            let seqs = col(|b| b.seq as i64);
            sqlx::query(
                "INSERT INTO bids (auction_id, seq, bidder_id, bidder_name, amount, outcome,
                     price_after, leader_after, placed_at)
                 SELECT $1, seq, bidder, name, amount, outcome, price, leader,
                     to_timestamp(at / 1000.0)
                 FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                     $7::bigint[], $8::text[], $9::bigint[])
                     AS t(seq, bidder, name, amount, outcome, price, leader, at)
                 ON CONFLICT (auction_id, seq) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(&seqs)
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
                 SELECT $1, seq, max FROM UNNEST($2::bigint[], $3::bigint[]) AS t(seq, max)
                 ON CONFLICT (auction_id, seq) DO NOTHING",
            )
            .bind(id.to_string())
            .bind(&seqs)
            .bind(col(|b| b.max))
            .execute(&mut *tx)
            .await?;
        }
        for event in events {
            if let AuctionEvent::Closed(result) = event {
                insert_result(&mut tx, id, result).await?;
            }
        }
        tx.commit().await?;
        Ok(())
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
