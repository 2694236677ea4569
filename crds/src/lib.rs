//! The `Auction` custom resource of Gavel (group `gavel.dev`, version `v1alpha1`).
//!
//! - [`AuctionSpec`] is what a platform team writes (README § The Auction resource); [`AuctionStatus`] is
//!   what the operator reports. The doc comments become the OpenAPI descriptions that
//!   `kubectl explain auction.spec` shows.
//! - The cross-field rules (endsAt after startsAt, reserve ≥ starting price, tiers
//!   ascending from 0, pricing frozen once open, …) are CEL `x-kubernetes-validations`
//!   evaluated by the API server; [`AuctionSpec::to_settings`] checks them again (plus the
//!   engine's bounds) and names the offending field, for the operator's conditions.
//! - [`manifest::from_yaml`] reads a manifest strictly (unknown fields refused with the
//!   nearest known name, type errors with their path), where no API server prunes it;
//!   [`currency`] checks ISO 4217 codes.
//! - [`crd`] is the CustomResourceDefinition; the `crdgen` binary prints it as YAML
//!   (`crds/auction.yaml`, checked for drift by a test).

use gavel_engine::settings::{MAX_SOFT_CLOSE_MS, MAX_TIERS};
use gavel_engine::{AuctionSettings, BidLimit, Increments, Millis, SoftClose, Tier};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod currency;
pub mod duration;
pub mod manifest;

/// API group of the resource.
pub const GROUP: &str = "gavel.dev";
/// API version of the resource.
pub const VERSION: &str = "v1alpha1";
/// Finalizer the operator puts on every Auction, so that deleting one first removes its
/// live Redis state.
pub const FINALIZER: &str = "gavel.dev/cleanup";

/// Pricing fields equal (or unchanged) between `self` and `oldSelf` — used by the
/// transition rule that freezes pricing once the auction is open.
const PRICING_UNCHANGED: &str = "self.spec.startingPrice == oldSelf.spec.startingPrice \
     && self.spec.increments == oldSelf.spec.increments \
     && has(self.spec.reservePrice) == has(oldSelf.spec.reservePrice) \
     && (!has(self.spec.reservePrice) || self.spec.reservePrice == oldSelf.spec.reservePrice)";

/// A live auction: declared here, provisioned, opened at `startsAt` and closed at its
/// effective end by the Gavel operator. Money is an integer count of the currency's minor
/// unit (cents for USD), never a float.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "gavel.dev",
    version = "v1alpha1",
    kind = "Auction",
    plural = "auctions",
    singular = "auction",
    shortname = "auc",
    namespaced,
    status = "AuctionStatus",
    derive = "PartialEq",
    doc = "A real-time auction run by Gavel: bidders bid live over WebSocket, the operator opens it at startsAt and closes it at its effective end",
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "Lifecycle phase",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Price",
        type_ = "integer",
        description = "Current price in minor units",
        json_path = ".status.currentPrice"
    ),
    printcolumn(
        name = "Currency",
        type_ = "string",
        description = "ISO 4217 currency",
        json_path = ".spec.currency",
        priority = 1
    ),
    printcolumn(
        name = "Bids",
        type_ = "integer",
        description = "Accepted bids",
        json_path = ".status.bidCount"
    ),
    printcolumn(
        name = "Ends",
        type_ = "string",
        description = "Effective end, after soft-close extensions",
        json_path = ".status.effectiveEndsAt"
    ),
    printcolumn(
        name = "Winner",
        type_ = "string",
        description = "Display name of the winner, once closed",
        json_path = ".status.winner"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = Rule::new("!has(self.spec.startsAt) || self.spec.endsAt > self.spec.startsAt")
        .message("endsAt must be after startsAt")
        .field_path(".spec.endsAt"),
    validation = Rule::new(currency::cel_rule())
        .message("currency must be an ISO 4217 code with a minor unit, such as USD, EUR or JPY")
        .field_path(".spec.currency"),
    validation = Rule::new("!has(self.spec.reservePrice) || self.spec.reservePrice >= self.spec.startingPrice")
        .message("reservePrice must be at least startingPrice")
        .field_path(".spec.reservePrice"),
    validation = Rule::new("self.spec.increments.size() > 0 && self.spec.increments[0].from == 0")
        .message("the first increment tier must start from 0")
        .field_path(".spec.increments"),
    validation = Rule::new("self.spec.increments.map(t, t.from).isSorted() && self.spec.increments.all(a, self.spec.increments.exists_one(b, b.from == a.from))")
        .message("increment tiers must be in strictly ascending order of from")
        .field_path(".spec.increments"),
    validation = Rule::new("self.spec.increments.all(t, t.step > 0)")
        .message("every increment step must be positive")
        .field_path(".spec.increments"),
    validation = Rule::new("!has(self.spec.softClose) || (self.spec.softClose.window > duration('0s') && self.spec.softClose.window <= duration('24h') && self.spec.softClose.extension > duration('0s') && self.spec.softClose.extension <= duration('24h'))")
        .message("softClose window and extension must be between 1ms and 24h")
        .field_path(".spec.softClose"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase in ['Pending', 'Scheduled', 'Failed'] || (PRICING)".replace("PRICING", PRICING_UNCHANGED))
        .message("startingPrice, reservePrice and increments cannot change once the auction has opened")
        .reason(Reason::FieldValueForbidden)
        .field_path(".spec"),
    validation = Rule::new("!has(oldSelf.status) || !has(oldSelf.status.phase) || !(oldSelf.status.phase in ['Closed', 'Cancelled']) || self.spec == oldSelf.spec")
        .message("a closed or cancelled auction cannot be changed")
        .reason(Reason::FieldValueForbidden)
        .field_path(".spec"),
    validation = Rule::new("!has(oldSelf.spec.cancel) || !oldSelf.spec.cancel || (has(self.spec.cancel) && self.spec.cancel)")
        .message("cancel cannot be undone")
        .reason(Reason::FieldValueForbidden)
        .field_path(".spec.cancel")
)]
#[serde(rename_all = "camelCase")]
pub struct AuctionSpec {
    /// Human title shown to bidders, 1 to 200 characters.
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    /// ISO 4217 currency code with a minor unit (USD, EUR, JPY, …). Every amount of the
    /// auction is in this currency's minor unit (cents for USD, yen for JPY, fils for BHD).
    #[schemars(length(min = 3, max = 3), regex(pattern = r"^[A-Z]{3}$"))]
    pub currency: String,
    /// Lowest first bid, in minor units (10000 = 100.00 USD). Frozen once the auction is
    /// open.
    #[schemars(range(min = 1, max = 1_000_000_000_000_000_i64))]
    pub starting_price: i64,
    /// Optional hidden minimum for a sale, in minor units, at least startingPrice. Bidders
    /// only learn whether it is met; without it any bid sells. Frozen once the auction is
    /// open.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000_000_i64))]
    pub reserve_price: Option<i64>,
    /// Minimum raise by price tier: the step of the tier containing the current price
    /// applies. Tiers ascend strictly by `from`, the first starts from 0, every step is
    /// positive; at most 32 tiers. Frozen once the auction is open.
    #[schemars(length(min = 1, max = 32))]
    pub increments: Vec<IncrementTier>,
    /// When bidding opens, an RFC 3339 time such as 2026-12-01T18:00:00Z. Absent means as
    /// soon as the operator has provisioned the auction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub starts_at: Option<String>,
    /// Scheduled end, an RFC 3339 time after startsAt. Soft close may extend it (see
    /// status.effectiveEndsAt).
    #[schemars(extend("format" = "date-time"))]
    pub ends_at: String,
    /// Optional anti-sniping: a bid accepted within `window` of the effective end moves
    /// the end to at least `extension` after that bid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_close: Option<SoftCloseSpec>,
    /// Optional per-bidder rate limit, enforced atomically in Redis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_limit: Option<BidLimitSpec>,
    /// Set to true to cancel the auction: it closes at once with no winner (phase
    /// Cancelled). Cannot be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel: Option<bool>,
    /// How long a closed auction's live state stays in Redis once its result is recorded
    /// (compare a Job's ttlSecondsAfterFinished): a duration such as 10m or 0s (units ms,
    /// s, m, h), at most 720h. Afterwards PostgreSQL serves its snapshot, history and
    /// replay. Absent: the operator's --retention (1h by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        extend("format" = "duration"),
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
    )]
    pub retention: Option<String>,
    /// Optional destination of this auction's events (the outbound feed, CloudEvents over
    /// HTTP, signed with the cluster's feed secret), in addition to the cluster-wide sink.
    /// The shape of a Knative Destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
}

/// Where an auction's events are delivered (README § Event feed).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkSpec {
    /// An absolute http or https URL that receives every event of the auction, one POST
    /// per event (structured mode).
    #[schemars(
        extend("format" = "uri"),
        length(min = 8, max = 2048),
        regex(pattern = r"^https?://[^\s]+$")
    )]
    pub uri: String,
}

/// One tier of the increment table.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IncrementTier {
    /// Lowest current price (inclusive, minor units) at which this tier's step applies.
    #[schemars(range(min = 0, max = 1_000_000_000_000_000_i64))]
    pub from: i64,
    /// Minimum raise, in minor units, while the current price is in this tier; positive.
    #[schemars(range(min = 1, max = 1_000_000_000_000_000_i64))]
    pub step: i64,
}

/// Anti-sniping extension of the end time.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SoftCloseSpec {
    /// How close to the effective end a bid must come to extend it: a duration such as
    /// 60s, 2m or 1m30s (units ms, s, m, h), at most 24h.
    #[schemars(
        extend("format" = "duration"),
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
    )]
    pub window: String,
    /// How long after such a bid the auction stays open at least: a duration such as 60s
    /// (units ms, s, m, h), at most 24h.
    #[schemars(
        extend("format" = "duration"),
        length(min = 2, max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$")
    )]
    pub extension: String,
}

/// Per-bidder token bucket.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BidLimitSpec {
    /// Sustained bids per second one bidder may place on this auction (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub per_second: u32,
    /// Bids one bidder may place at once after being idle (1 to 1000).
    #[schemars(range(min = 1, max = 1000))]
    pub burst: u32,
}

/// Lifecycle phase of an auction, as the operator reports it.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Seen but not provisioned yet (or waiting for Redis/PostgreSQL).
    Pending,
    /// Provisioned; bidding opens at startsAt.
    Scheduled,
    /// Taking bids.
    Open,
    /// Ended with a result (winner, final price), recorded in PostgreSQL.
    Closed,
    /// Cancelled: closed early with no winner.
    Cancelled,
    /// The spec cannot be run; see the Ready condition's message.
    Failed,
}

impl Phase {
    /// Every phase, in lifecycle order.
    pub const ALL: [Phase; 6] = [
        Phase::Pending,
        Phase::Scheduled,
        Phase::Open,
        Phase::Closed,
        Phase::Cancelled,
        Phase::Failed,
    ];

    /// The phase's name as written in the status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Scheduled => "Scheduled",
            Phase::Open => "Open",
            Phase::Closed => "Closed",
            Phase::Cancelled => "Cancelled",
            Phase::Failed => "Failed",
        }
    }

    /// Whether the auction has reached its end for good (Closed or Cancelled).
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Closed | Phase::Cancelled)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator observed and did, refreshed at a bounded rate while the auction is
/// open.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuctionStatus {
    /// Lifecycle phase: Pending, Scheduled, Open, Closed, Cancelled or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Current price in minor units; absent before the first bid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_price: Option<i64>,
    /// Accepted bids so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid_count: Option<u64>,
    /// Display name of the current leader; absent before the first bid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Effective end (RFC 3339) after any soft-close extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_ends_at: Option<String>,
    /// Display name of the winner, once closed; absent when nobody won (no bid, reserve
    /// not met, or cancelled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
    /// Bidder id (token subject) of the winner, once closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner_id: Option<String>,
    /// Price at the end in minor units, once closed; absent when nobody bid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_price: Option<i64>,
    /// Whether the price reached the reserve (true without a reserve).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_met: Option<bool>,
    /// When the auction was closed (RFC 3339, Redis server time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<String>,
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Standard conditions: Ready (provisioned and managed, or why not), Open (taking
    /// bids) and ResultRecorded (final result in PostgreSQL).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Why a spec cannot be turned into engine settings; names the field as written in the
/// manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("spec.{field}: {message}")]
pub struct SpecError {
    /// The field, relative to `spec` (for example `softClose.window`).
    pub field: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl SpecError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Parses an RFC 3339 time into Unix milliseconds.
pub fn parse_time(field: &str, value: &str) -> Result<Millis, SpecError> {
    let ts: Timestamp = value.trim().parse().map_err(|_| {
        SpecError::new(
            field,
            format!("{value:?} is not an RFC 3339 time such as 2026-12-01T18:00:00Z"),
        )
    })?;
    Ok(ts.as_millisecond())
}

/// Formats Unix milliseconds as RFC 3339 (UTC), as the status reports times.
pub fn format_time(ms: Millis) -> String {
    Timestamp::from_millisecond(ms)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

impl AuctionSpec {
    /// Converts the spec to the engine's settings and validates them, naming the field at
    /// fault. Never panics, whatever the input.
    pub fn to_settings(&self) -> Result<AuctionSettings, SpecError> {
        currency::check(&self.currency)?;
        if self.increments.len() > MAX_TIERS {
            return Err(SpecError::new(
                "increments",
                format!("at most {MAX_TIERS} tiers are allowed"),
            ));
        }
        let increments = Increments::new(
            self.increments
                .iter()
                .map(|t| Tier {
                    from: t.from,
                    step: t.step,
                })
                .collect(),
        )
        .map_err(|e| SpecError::new("increments", strip_prefix(&e.to_string(), "increments: ")))?;
        let starts_at = self
            .starts_at
            .as_deref()
            .map(|s| parse_time("startsAt", s))
            .transpose()?;
        let ends_at = parse_time("endsAt", &self.ends_at)?;
        self.retention_ms()?;
        let soft_close = match &self.soft_close {
            None => None,
            Some(soft) => {
                let window_ms = duration::parse_ms("softClose.window", &soft.window)?;
                let extension_ms = duration::parse_ms("softClose.extension", &soft.extension)?;
                for (field, value) in [
                    ("softClose.window", window_ms),
                    ("softClose.extension", extension_ms),
                ] {
                    if !(1..=MAX_SOFT_CLOSE_MS).contains(&value) {
                        return Err(SpecError::new(field, "must be between 1ms and 24h"));
                    }
                }
                Some(SoftClose {
                    window_ms,
                    extension_ms,
                })
            }
        };
        let bid_limit = self.bid_limit.map(|l| BidLimit {
            per_second: l.per_second,
            burst: l.burst,
        });
        let settings = AuctionSettings {
            title: self.title.clone(),
            currency: self.currency.clone(),
            starting_price: self.starting_price,
            reserve_price: self.reserve_price,
            increments,
            starts_at,
            ends_at,
            soft_close,
            bid_limit,
        };
        settings.validate().map_err(|e| match e {
            gavel_engine::settings::SettingsError::Invalid { field, message } => {
                SpecError::new(field, message)
            }
            gavel_engine::settings::SettingsError::Increments(m) => SpecError::new("increments", m),
        })?;
        Ok(settings)
    }

    /// The auction's own event sink URI, if any.
    pub fn sink_uri(&self) -> Option<&str> {
        self.sink.as_ref().map(|s| s.uri.as_str())
    }

    /// Whether the spec asks for cancellation.
    pub fn cancel_requested(&self) -> bool {
        self.cancel == Some(true)
    }

    /// `retention` in milliseconds (`None` when absent), or why it is invalid.
    pub fn retention_ms(&self) -> Result<Option<Millis>, SpecError> {
        let Some(text) = &self.retention else {
            return Ok(None);
        };
        let ms = duration::parse_ms("retention", text)?;
        if !(0..=MAX_RETENTION_MS).contains(&ms) {
            return Err(SpecError::new("retention", "must be between 0s and 720h"));
        }
        Ok(Some(ms))
    }
}

/// Longest `retention`: 30 days.
pub const MAX_RETENTION_MS: Millis = 720 * 3_600_000;

fn strip_prefix(s: &str, prefix: &str) -> String {
    s.strip_prefix(prefix).unwrap_or(s).to_owned()
}

/// The CustomResourceDefinition of `auctions.gavel.dev`, as `crdgen` prints it.
///
/// The spec's optional fields are not `nullable`: the API server then prunes an explicit
/// `null` instead of storing it, so `has(self.spec.x)` in the CEL rules means "set".
pub fn crd() -> CustomResourceDefinition {
    let mut crd = Auction::crd();
    for version in &mut crd.spec.versions {
        if let Some(spec) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|root| root.properties.as_mut())
            .and_then(|props| props.get_mut("spec"))
        {
            strip_nullable(spec);
        }
    }
    crd
}

fn strip_nullable(schema: &mut JSONSchemaProps) {
    schema.nullable = None;
    for prop in schema.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_nullable(prop);
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = schema.items.as_mut() {
        strip_nullable(items);
    }
}

/// The CRD as YAML, exactly as committed in `crds/auction.yaml`.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let yaml = serde_yaml::to_string(&crd())?;
    Ok(format!(
        "# Generated by `cargo run -p gavel-crds --bin crdgen > crds/auction.yaml`; do not edit.\n{yaml}"
    ))
}

#[cfg(test)]
mod tests;
