//! The settings of one auction, as the operator provisions them, and their validation.
//!
//! Money is an integer count of the currency's minor unit ([`Amount`]); times are Unix
//! milliseconds ([`Millis`]). Every bound here exists so that the arithmetic of the
//! proxy-bid rules stays exact both in Rust (`i64`) and in Redis Lua (IEEE doubles,
//! exact up to 2^53).

use serde::{Deserialize, Serialize};

/// An amount of money in the currency's minor unit (cents for USD).
pub type Amount = i64;

/// A point in time as milliseconds since the Unix epoch.
pub type Millis = i64;

/// The largest amount Gavel accepts anywhere (10^15 minor units), the protocol's limit.
/// Sums such as `price + step` stay far below 2^53, so Lua's doubles compute them exactly.
pub const MAX_AMOUNT: Amount = gavel_protocol::MAX_AMOUNT;

/// The most increment tiers an auction may declare.
pub const MAX_TIERS: usize = 32;

/// The longest soft-close window or extension (one day).
pub const MAX_SOFT_CLOSE_MS: Millis = 86_400_000;

/// The highest per-bidder rate a limit may allow, in bids per second and burst size.
pub const MAX_BID_RATE: u32 = 1_000;

/// The longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;

/// One tier of the increment table: from price `from` upwards the minimum step is `step`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Lowest current price (inclusive) at which this tier applies.
    pub from: Amount,
    /// Minimum raise while the current price is in this tier.
    pub step: Amount,
}

/// A validated increment table: tiers ascending from 0, every step positive.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Tier>", into = "Vec<Tier>")]
pub struct Increments(Vec<Tier>);

impl Increments {
    /// Checks the tiers and wraps them.
    pub fn new(tiers: Vec<Tier>) -> Result<Self, SettingsError> {
        if tiers.is_empty() || tiers.len() > MAX_TIERS {
            return Err(SettingsError::Increments(format!(
                "between 1 and {MAX_TIERS} tiers are required, got {}",
                tiers.len()
            )));
        }
        if tiers[0].from != 0 {
            return Err(SettingsError::Increments(
                "the first tier must start from 0".into(),
            ));
        }
        for (i, tier) in tiers.iter().enumerate() {
            if !(1..=MAX_AMOUNT).contains(&tier.step) {
                return Err(SettingsError::Increments(format!(
                    "tier {i}: step must be between 1 and {MAX_AMOUNT}, got {}",
                    tier.step
                )));
            }
            if tier.from > MAX_AMOUNT {
                return Err(SettingsError::Increments(format!(
                    "tier {i}: from must be at most {MAX_AMOUNT}"
                )));
            }
            if i > 0 && tier.from <= tiers[i - 1].from {
                return Err(SettingsError::Increments(format!(
                    "tier {i}: from ({}) must be greater than the previous tier's ({})",
                    tier.from,
                    tiers[i - 1].from
                )));
            }
        }
        Ok(Self(tiers))
    }

    /// A single tier: the same step at every price.
    pub fn flat(step: Amount) -> Result<Self, SettingsError> {
        Self::new(vec![Tier { from: 0, step }])
    }

    /// The tiers, ascending.
    pub fn tiers(&self) -> &[Tier] {
        &self.0
    }

    /// `inc(p)`: the step of the tier containing `price`.
    pub fn step_at(&self, price: Amount) -> Amount {
        self.0
            .iter()
            .take_while(|tier| tier.from <= price)
            .last()
            .map_or(self.0[0].step, |tier| tier.step)
    }

    /// The compact form the Redis scripts read: `from:step,from:step`.
    pub fn encode(&self) -> String {
        self.0
            .iter()
            .map(|t| format!("{}:{}", t.from, t.step))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl TryFrom<Vec<Tier>> for Increments {
    type Error = SettingsError;
    fn try_from(tiers: Vec<Tier>) -> Result<Self, Self::Error> {
        Self::new(tiers)
    }
}

impl From<Increments> for Vec<Tier> {
    fn from(increments: Increments) -> Self {
        increments.0
    }
}

/// Anti-sniping: a bid accepted within `window_ms` of the effective end moves the end
/// to at least `extension_ms` after the bid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftClose {
    /// How close to the end a bid must come to extend the auction.
    pub window_ms: Millis,
    /// How long after such a bid the auction stays open at least.
    pub extension_ms: Millis,
}

/// Per-bidder token bucket: `per_second` tokens refill each second, up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidLimit {
    /// Sustained bids per second a bidder may place on this auction.
    pub per_second: u32,
    /// Bids a bidder may place at once after being idle.
    pub burst: u32,
}

/// Everything the engine needs to run one auction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuctionSettings {
    /// Human title shown to bidders.
    pub title: String,
    /// ISO 4217 code, three upper-case letters.
    pub currency: String,
    /// The lowest first bid.
    pub starting_price: Amount,
    /// Hidden minimum for a sale; `None` means any bid sells.
    pub reserve_price: Option<Amount>,
    /// Minimum raise by price tier.
    pub increments: Increments,
    /// When bidding opens; `None` means as soon as provisioned.
    pub starts_at: Option<Millis>,
    /// Scheduled end, before any soft-close extension.
    pub ends_at: Millis,
    /// Optional anti-sniping extension.
    pub soft_close: Option<SoftClose>,
    /// Optional per-bidder rate limit.
    pub bid_limit: Option<BidLimit>,
}

impl AuctionSettings {
    /// Checks every rule of README § The Auction resource that the API server may not have enforced.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid =
            |field: &'static str, message: String| Err(SettingsError::Invalid { field, message });
        if self.title.trim().is_empty() || self.title.chars().count() > MAX_TITLE_CHARS {
            return invalid(
                "title",
                format!("must be 1 to {MAX_TITLE_CHARS} characters"),
            );
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return invalid(
                "currency",
                format!(
                    "must be a three-letter ISO 4217 code such as USD, got {:?}",
                    self.currency
                ),
            );
        }
        if !(1..=MAX_AMOUNT).contains(&self.starting_price) {
            return invalid(
                "startingPrice",
                format!("must be between 1 and {MAX_AMOUNT} minor units"),
            );
        }
        if let Some(reserve) = self.reserve_price
            && !(self.starting_price..=MAX_AMOUNT).contains(&reserve)
        {
            return invalid(
                "reservePrice",
                format!(
                    "must be at least startingPrice ({}) and at most {MAX_AMOUNT}",
                    self.starting_price
                ),
            );
        }
        if self.ends_at <= 0 {
            return invalid("endsAt", "must be a time after 1970".into());
        }
        if let Some(starts_at) = self.starts_at
            && starts_at >= self.ends_at
        {
            return invalid("endsAt", "must be after startsAt".into());
        }
        if let Some(soft) = self.soft_close {
            for (field, value) in [
                ("softClose.window", soft.window_ms),
                ("softClose.extension", soft.extension_ms),
            ] {
                if !(1..=MAX_SOFT_CLOSE_MS).contains(&value) {
                    return invalid(field, "must be between 1ms and 24h".into());
                }
            }
        }
        if let Some(limit) = self.bid_limit {
            for (field, value) in [
                ("bidLimit.perSecond", limit.per_second),
                ("bidLimit.burst", limit.burst),
            ] {
                if !(1..=MAX_BID_RATE).contains(&value) {
                    return invalid(field, format!("must be between 1 and {MAX_BID_RATE}"));
                }
            }
        }
        Ok(())
    }
}

/// Why a set of auction settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// The increment table breaks a rule.
    #[error("increments: {0}")]
    Increments(String),
    /// A field is out of range or inconsistent with another.
    #[error("{field}: {message}")]
    Invalid {
        /// The field's name as written in the Auction manifest.
        field: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tiers() -> Increments {
        Increments::new(vec![
            Tier { from: 0, step: 100 },
            Tier {
                from: 10_000,
                step: 500,
            },
            Tier {
                from: 100_000,
                step: 1_000,
            },
        ])
        .unwrap()
    }

    fn settings() -> AuctionSettings {
        AuctionSettings {
            title: "1962 Fender Stratocaster".into(),
            currency: "USD".into(),
            starting_price: 10_000,
            reserve_price: Some(50_000),
            increments: tiers(),
            starts_at: Some(1_000),
            ends_at: 2_000,
            soft_close: Some(SoftClose {
                window_ms: 60_000,
                extension_ms: 60_000,
            }),
            bid_limit: Some(BidLimit {
                per_second: 5,
                burst: 10,
            }),
        }
    }

    #[test]
    fn step_is_that_of_the_tier_containing_the_price() {
        let inc = tiers();
        assert_eq!(inc.step_at(0), 100);
        assert_eq!(inc.step_at(9_999), 100);
        assert_eq!(inc.step_at(10_000), 500);
        assert_eq!(inc.step_at(99_999), 500);
        assert_eq!(inc.step_at(100_000), 1_000);
        assert_eq!(inc.step_at(MAX_AMOUNT), 1_000);
        assert_eq!(inc.encode(), "0:100,10000:500,100000:1000");
    }

    #[test]
    fn bad_tiers_are_refused() {
        let t = |from, step| Tier { from, step };
        for bad in [
            vec![],
            vec![t(1, 100)],
            vec![t(0, 0)],
            vec![t(0, -5)],
            vec![t(0, 1), t(0, 2)],
            vec![t(0, 1), t(10, 2), t(5, 3)],
            vec![t(0, MAX_AMOUNT + 1)],
            vec![t(0, 1); MAX_TIERS + 1],
        ] {
            assert!(Increments::new(bad.clone()).is_err(), "{bad:?} accepted");
        }
        let json = r#"[{"from":5,"step":1}]"#;
        assert!(serde_json::from_str::<Increments>(json).is_err());
    }

    #[test]
    fn valid_settings_pass() {
        assert_eq!(settings().validate(), Ok(()));
    }

    #[test]
    fn each_bad_field_is_named() {
        type Change = Box<dyn Fn(&mut AuctionSettings)>;
        let cases: Vec<(&str, Change)> = vec![
            ("title", Box::new(|s| s.title = " ".into())),
            ("title", Box::new(|s| s.title = "x".repeat(201))),
            ("currency", Box::new(|s| s.currency = "usd".into())),
            ("currency", Box::new(|s| s.currency = "EURO".into())),
            ("startingPrice", Box::new(|s| s.starting_price = 0)),
            ("startingPrice", Box::new(|s| s.starting_price = -1)),
            ("startingPrice", Box::new(|s| s.starting_price = i64::MAX)),
            ("reservePrice", Box::new(|s| s.reserve_price = Some(9_999))),
            (
                "reservePrice",
                Box::new(|s| s.reserve_price = Some(i64::MAX)),
            ),
            ("endsAt", Box::new(|s| s.starts_at = Some(2_000))),
            ("endsAt", Box::new(|s| s.ends_at = 0)),
            (
                "softClose.window",
                Box::new(|s| {
                    s.soft_close = Some(SoftClose {
                        window_ms: 0,
                        extension_ms: 1,
                    })
                }),
            ),
            (
                "bidLimit.burst",
                Box::new(|s| {
                    s.bid_limit = Some(BidLimit {
                        per_second: 1,
                        burst: 0,
                    })
                }),
            ),
        ];
        for (field, change) in cases {
            let mut s = settings();
            change(&mut s);
            match s.validate() {
                Err(SettingsError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected an error, got {other:?}"),
            }
        }
    }
}
