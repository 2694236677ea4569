//! Helpers shared by the engine's integration tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use gavel_engine::testing::{TestRedis, redis_url};
use gavel_engine::{AuctionId, AuctionSettings, BidRequest, Bidder, Engine, Increments};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A Redis for this test and an engine connected to it.
pub async fn engine() -> (Engine, Option<TestRedis>) {
    let (url, guard) = redis_url();
    let engine = Engine::connect(&url, 2)
        .await
        .expect("connect to test redis");
    (engine, guard)
}

/// A fresh auction id, unique within the test process (and across processes by pid).
pub fn auction_id() -> AuctionId {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    AuctionId::new(&format!("t{}", std::process::id()), &format!("a{n}")).expect("valid id")
}

/// Settings open from t=1000 to t=10^9 (pinned clocks) with a flat step.
pub fn settings(step: i64) -> AuctionSettings {
    AuctionSettings {
        title: "Test lot".into(),
        currency: "USD".into(),
        starting_price: 1,
        reserve_price: None,
        increments: Increments::flat(step).expect("valid step"),
        starts_at: Some(1_000),
        ends_at: 1_000_000_000,
        soft_close: None,
        bid_limit: None,
    }
}

/// Settings open right now by server time, for an hour.
pub fn open_now(step: i64) -> AuctionSettings {
    let now = gavel_engine::runtime::now_ms();
    AuctionSettings {
        starts_at: None,
        ends_at: now + 3_600_000,
        ..settings(step)
    }
}

pub fn bidder(id: &str) -> Bidder {
    Bidder::new(id, id.to_uppercase()).expect("valid bidder")
}

pub fn amount(a: i64) -> BidRequest {
    BidRequest {
        amount: Some(a),
        max: None,
    }
}

pub fn max(m: i64) -> BidRequest {
    BidRequest {
        amount: None,
        max: Some(m),
    }
}
