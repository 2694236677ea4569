//! `GET /v1/auctions`: the open and upcoming auctions, a page at a time — what the bidder
//! page's list and `gavel list` show.
//!
//! Which auctions: every row of PostgreSQL's `auctions` table (the operator records each
//! provisioned auction there) without a row in `results` (closed and cancelled auctions
//! have one). The live values (price, leader, bid count, minimum next bid, phase, the end
//! after soft-close extensions) come from one Redis snapshot per listed auction, read
//! concurrently; an auction Redis does not hold (not provisioned yet, or Redis
//! unreachable) is still listed from PostgreSQL alone, with `live: false`, the price and
//! bid count of its last recorded bid, and no `min_next`. Auctions Redis reports as
//! closed or cancelled (result not recorded yet) are left out.
//!
//! Order and paging: by scheduled end, then name (keyset paging; `next` is an opaque
//! cursor to pass back as `after`). `limit` is 1..=[`MAX_LIST_PAGE`] (default
//! [`DEFAULT_LIST_PAGE`]); `namespace` keeps one namespace. Errors have the REST shape of
//! [`crate::http`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use gavel_engine::runtime::now_ms;
use gavel_engine::{AuctionId, LivePhase, Millis, Snapshot};
use serde::Serialize;
use sqlx::Row;
use tracing::warn;

use crate::http::json_error;
use crate::protocol::{ErrorCode, Phase};
use crate::state::AppState;

/// Default page size of the auction list.
pub const DEFAULT_LIST_PAGE: u32 = 50;
/// Largest page of the auction list.
pub const MAX_LIST_PAGE: u32 = 100;

/// One auction of the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ListedAuction {
    /// `<namespace>/<name>`.
    pub auction: String,
    /// The lot's title, as the Auction's spec gives it.
    pub title: String,
    /// ISO 4217 currency; every amount is in its minor unit.
    pub currency: String,
    /// `scheduled`, `open` or `closing` (past the end, result not yet recorded).
    pub phase: Phase,
    /// Current price; null before the first bid.
    pub price: Option<i64>,
    /// Starting price (the lowest first bid).
    pub starting_price: i64,
    /// Lowest bid that would take the lead (null when not `live`).
    pub min_next: Option<i64>,
    /// Accepted bids.
    pub bid_count: u64,
    /// Leader's display name (null before the first bid or when not `live`).
    pub leader: Option<String>,
    /// Opening time, Unix ms (null: open as soon as provisioned).
    pub starts_at: Option<Millis>,
    /// End after soft-close extensions, Unix ms (the scheduled end when not `live`).
    pub ends_at: Millis,
    /// `ends_at - server_time`, never below 0.
    pub time_left_ms: Millis,
    /// Whether the live values come from Redis (false: from PostgreSQL only).
    pub live: bool,
}

/// A page of the list.
#[derive(Clone, Debug, Serialize)]
pub struct AuctionList {
    /// The auctions, by scheduled end.
    pub auctions: Vec<ListedAuction>,
    /// Cursor of the next page (`?after=`), null on the last page.
    pub next: Option<String>,
    /// The time `time_left_ms` was computed at, Unix ms.
    pub server_time: Millis,
}

/// One `auctions` row with its last recorded bid.
#[derive(Clone, Debug)]
struct Row0 {
    id: String,
    title: String,
    currency: String,
    starting_price: i64,
    starts_at: Option<Millis>,
    ends_at: Millis,
    last_price: Option<i64>,
    last_seq: Option<i64>,
}

/// Why the list query was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListQueryError {
    /// `limit` out of range or not a number.
    #[error("`limit` must be between 1 and {MAX_LIST_PAGE}")]
    Limit,
    /// `after` is not a cursor this endpoint returned.
    #[error("`after` must be the `next` cursor of a previous page")]
    Cursor,
    /// `namespace` is not a Kubernetes namespace name.
    #[error("`namespace` must be a Kubernetes namespace name")]
    Namespace,
}

/// The parsed query string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListQuery {
    /// Page size.
    pub limit: u32,
    /// Keyset position: (scheduled end ms, auction id) of the last row of the previous page.
    pub after: Option<(Millis, String)>,
    /// Only this namespace.
    pub namespace: Option<String>,
}

impl ListQuery {
    /// Reads `limit`, `after` and `namespace`; other parameters are ignored.
    pub fn parse(query: &HashMap<String, String>) -> Result<Self, ListQueryError> {
        let limit = match query.get("limit").map(|l| l.parse::<u32>()) {
            None => DEFAULT_LIST_PAGE,
            Some(Ok(l)) if (1..=MAX_LIST_PAGE).contains(&l) => l,
            Some(_) => return Err(ListQueryError::Limit),
        };
        let after = match query.get("after").filter(|a| !a.is_empty()) {
            None => None,
            Some(a) => Some(decode_cursor(a).ok_or(ListQueryError::Cursor)?),
        };
        let namespace = match query.get("namespace").filter(|n| !n.is_empty()) {
            None => None,
            Some(n) => {
                // The same rules as auction names: reuse the id validation.
                AuctionId::new(n, "x").map_err(|_| ListQueryError::Namespace)?;
                Some(n.clone())
            }
        };
        Ok(Self {
            limit,
            after,
            namespace,
        })
    }
}

/// `<ends_at ms>~<auction id>`: readable, and URL-safe apart from the `/` of the id.
fn encode_cursor(ends_at: Millis, id: &str) -> String {
    format!("{ends_at}~{id}")
}

fn decode_cursor(cursor: &str) -> Option<(Millis, String)> {
    let (ends, id) = cursor.split_once('~')?;
    let ends = ends.parse::<Millis>().ok()?;
    id.parse::<AuctionId>().ok()?;
    Some((ends, id.to_owned()))
}

async fn read_rows(state: &AppState, q: &ListQuery) -> Result<Vec<Row0>, sqlx::Error> {
    let (after_ends, after_id) = match &q.after {
        Some((e, id)) => (Some(*e), Some(id.clone())),
        None => (None, None),
    };
    let rows = sqlx::query(
        "SELECT a.auction_id, a.title, a.currency, a.starting_price,
             (extract(epoch FROM a.starts_at) * 1000)::bigint AS starts_ms,
             (extract(epoch FROM a.ends_at) * 1000)::bigint AS ends_ms,
             b.price_after, b.seq
         FROM auctions a
         LEFT JOIN LATERAL (
             SELECT price_after, seq FROM bids
             WHERE bids.auction_id = a.auction_id ORDER BY seq DESC LIMIT 1
         ) b ON true
         WHERE NOT EXISTS (SELECT 1 FROM results r WHERE r.auction_id = a.auction_id)
           AND ($1::text IS NULL OR split_part(a.auction_id, '/', 1) = $1)
           AND ($2::bigint IS NULL
                OR ((extract(epoch FROM a.ends_at) * 1000)::bigint, a.auction_id) > ($2, $3::text))
         ORDER BY ends_ms, a.auction_id
         LIMIT $4",
    )
    .bind(q.namespace.as_deref())
    .bind(after_ends)
    .bind(after_id)
    .bind(i64::from(q.limit) + 1)
    .fetch_all(state.store.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Row0 {
                id: r.try_get("auction_id")?,
                title: r.try_get("title")?,
                currency: r.try_get("currency")?,
                starting_price: r.try_get("starting_price")?,
                starts_at: r.try_get("starts_ms")?,
                ends_at: r.try_get("ends_ms")?,
                last_price: r.try_get("price_after")?,
                last_seq: r.try_get("seq")?,
            })
        })
        .collect()
}

/// Combines a PostgreSQL row with its Redis snapshot (if any); `None` when Redis says the
/// auction is already over.
fn listed(row: Row0, live: Option<Snapshot>, now: Millis) -> Option<ListedAuction> {
    let item = match live {
        Some(s) => {
            if matches!(s.phase, LivePhase::Closed | LivePhase::Cancelled) {
                return None;
            }
            ListedAuction {
                auction: row.id,
                title: s.title,
                currency: s.currency,
                phase: crate::protocol::phase(s.phase),
                price: s.price,
                starting_price: row.starting_price,
                min_next: Some(s.min_next),
                bid_count: s.bid_count,
                leader: s.leader_name,
                starts_at: s.starts_at,
                ends_at: s.ends_at,
                time_left_ms: 0,
                live: true,
            }
        }
        None => {
            let phase = if row.starts_at.is_some_and(|s| s > now) {
                Phase::Scheduled
            } else if row.ends_at > now {
                Phase::Open
            } else {
                Phase::Closing
            };
            ListedAuction {
                auction: row.id,
                title: row.title,
                currency: row.currency,
                phase,
                price: row.last_price,
                starting_price: row.starting_price,
                min_next: None,
                bid_count: row.last_seq.map_or(0, |s| s.max(0) as u64),
                leader: None,
                starts_at: row.starts_at,
                ends_at: row.ends_at,
                time_left_ms: 0,
                live: false,
            }
        }
    };
    Some(ListedAuction {
        time_left_ms: (item.ends_at - now).max(0),
        ..item
    })
}

/// Reads one page of the list.
pub async fn list(state: &AppState, q: &ListQuery) -> Result<AuctionList, sqlx::Error> {
    let mut rows = read_rows(state, q).await?;
    let more = rows.len() > q.limit as usize;
    rows.truncate(q.limit as usize);
    let next = rows
        .last()
        .filter(|_| more)
        .map(|r| encode_cursor(r.ends_at, &r.id));
    let snapshots = futures::future::join_all(rows.iter().map(|r| async {
        let id = r.id.parse::<AuctionId>().ok()?;
        match state.engine.snapshot(&id, None).await {
            Ok(s) => Some(s),
            Err(gavel_engine::EngineError::UnknownAuction(_)) => None,
            Err(e) => {
                warn!(auction = %id, error = %e, "list: no live state; listing from PostgreSQL");
                None
            }
        }
    }))
    .await;
    let now = now_ms();
    let auctions = rows
        .into_iter()
        .zip(snapshots)
        .filter_map(|(row, snap)| listed(row, snap, now))
        .collect();
    Ok(AuctionList {
        auctions,
        next,
        server_time: now,
    })
}

/// The handler of `GET /v1/auctions`.
pub async fn handler(
    State(state): State<Arc<AppState>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let q = match ListQuery::parse(&query) {
        Ok(q) => q,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidMessage,
                e.to_string(),
            );
        }
    };
    match list(&state, &q).await {
        Ok(page) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string(&page).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => {
            warn!(error = %e, "auction list failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "auction list unavailable",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Result<ListQuery, ListQueryError> {
        ListQuery::parse(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn query_defaults_bounds_and_cursor() {
        let d = q(&[]).unwrap();
        assert_eq!(d.limit, DEFAULT_LIST_PAGE);
        assert!(d.after.is_none() && d.namespace.is_none());
        assert_eq!(q(&[("limit", "100")]).unwrap().limit, 100);
        for bad in ["0", "101", "-1", "x"] {
            assert!(matches!(q(&[("limit", bad)]), Err(ListQueryError::Limit)));
        }
        let cursor = encode_cursor(1_764_612_000_000, "shop/strat-1962");
        assert_eq!(
            q(&[("after", &cursor)]).unwrap().after,
            Some((1_764_612_000_000, "shop/strat-1962".into()))
        );
        for bad in ["12", "x~shop/a", "12~Bad/x", "12~noslash"] {
            assert!(matches!(q(&[("after", bad)]), Err(ListQueryError::Cursor)));
        }
        assert_eq!(
            q(&[("namespace", "shop")]).unwrap().namespace.as_deref(),
            Some("shop")
        );
        assert!(matches!(
            q(&[("namespace", "No/pe")]),
            Err(ListQueryError::Namespace)
        ));
    }

    #[test]
    fn rows_without_live_state_come_from_postgres() {
        let row = Row0 {
            id: "shop/a".into(),
            title: "A".into(),
            currency: "EUR".into(),
            starting_price: 100,
            starts_at: Some(2_000),
            ends_at: 5_000,
            last_price: None,
            last_seq: None,
        };
        let upcoming = listed(row.clone(), None, 1_000).unwrap();
        assert_eq!(upcoming.phase, Phase::Scheduled);
        assert_eq!((upcoming.time_left_ms, upcoming.live), (4_000, false));
        let open = listed(
            Row0 {
                last_price: Some(300),
                last_seq: Some(3),
                ..row.clone()
            },
            None,
            3_000,
        )
        .unwrap();
        assert_eq!(
            (open.phase, open.price, open.bid_count),
            (Phase::Open, Some(300), 3)
        );
        let past = listed(row, None, 9_000).unwrap();
        assert_eq!((past.phase, past.time_left_ms), (Phase::Closing, 0));
    }
}
