//! Auction identity and the Redis key layout.
//!
//! Every key of one auction carries the hash tag `{namespace/name}`, so a Lua script that
//! touches several of them stays on one Redis Cluster slot.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Stream of entries the flusher could not write (refused repeatedly, or in conflict with
/// PostgreSQL's record); bounded to [`DEAD_LETTER_MAX`] entries.
pub const DEAD_LETTER_KEY: &str = "gavel:dead-letter";

/// Most entries kept in the dead-letter stream (approximate trim).
pub const DEAD_LETTER_MAX: u64 = 10_000;

/// Consumer group of the PostgreSQL flushers on the flush streams.
pub const FLUSH_GROUP: &str = "gavel-flusher";

/// Key whose value changes when Redis lost its data (see [`crate::changes`]): a process
/// that watches many auctions sets it once and reads it back periodically.
pub const MARKER_KEY: &str = "gavel:marker";

/// Pattern of every auction's channels (`live` events and `notice`s), for a process that
/// follows changes of all auctions.
pub const ALL_CHANNELS_PATTERN: &str = "gavel:{*}:*";

/// Number of flush streams: every event is appended to its auction's stream (replay) and
/// to one flush stream (the flushers' work queue), chosen by the auction's hash. The
/// flushers block on all of them in one call, so their cost follows events, not auctions.
pub const FLUSH_SHARDS: u16 = 16;

/// The flush stream of shard `shard`.
pub fn flush_key(shard: u16) -> String {
    format!("gavel:flush:{shard}")
}

/// Every flush stream.
pub fn flush_keys() -> Vec<String> {
    (0..FLUSH_SHARDS).map(flush_key).collect()
}

/// An auction's identity: the Kubernetes namespace and name of its `Auction` object,
/// written `namespace/name` everywhere (protocol, database, logs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AuctionId {
    namespace: String,
    name: String,
}

/// The text is not `namespace/name` with Kubernetes-valid parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid auction id {0:?}: expected <namespace>/<name> with lower-case DNS names")]
pub struct InvalidAuctionId(pub String);

impl AuctionId {
    /// Builds an id from its parts, checking them as Kubernetes does (DNS-1123 label for
    /// the namespace, DNS-1123 subdomain for the name).
    pub fn new(namespace: &str, name: &str) -> Result<Self, InvalidAuctionId> {
        let label_ok = |s: &str, max: usize, dots: bool| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || (dots && b == b'.')
                })
                && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                // Each dot-separated label of a subdomain is itself alphanumeric at both
                // ends: no `..`, no `.-` (names may end up in paths and keys).
                && s.split('.').all(|label| {
                    label.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                        && label.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
                })
        };
        if label_ok(namespace, 63, false) && label_ok(name, 253, true) {
            Ok(Self {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(InvalidAuctionId(format!("{namespace}/{name}")))
        }
    }

    /// The Kubernetes namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The Kubernetes name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn key(&self, suffix: &str) -> String {
        format!("gavel:{{{}/{}}}:{suffix}", self.namespace, self.name)
    }

    /// Hash with the auction's settings and live state.
    pub fn state_key(&self) -> String {
        self.key("a")
    }

    /// Hash of each bidder's latest ceiling, read only for `your_max`.
    pub fn ceilings_key(&self) -> String {
        self.key("max")
    }

    /// Hash of per-bidder rate-limit buckets.
    pub fn rate_key(&self) -> String {
        self.key("rl")
    }

    /// Stream of the auction's events, entry id `<seq>-0`.
    pub fn events_key(&self) -> String {
        self.key("ev")
    }

    /// Pub/sub channel carrying each event live to every bid-api pod.
    pub fn channel(&self) -> String {
        self.key("live")
    }

    /// Pub/sub channel of notices for the operator (the auction was halted), never read by
    /// watchers.
    pub fn notice_channel(&self) -> String {
        self.key("notice")
    }

    /// The flush stream this auction's events are queued on for PostgreSQL.
    pub fn flush_key(&self) -> String {
        // FNV-1a: stable across processes and versions, unlike the std hasher.
        let hash = self.to_string().bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        flush_key((hash % u32::from(FLUSH_SHARDS)) as u16)
    }

    /// Every key of the auction, for removal.
    pub fn all_keys(&self) -> [String; 4] {
        [
            self.state_key(),
            self.ceilings_key(),
            self.rate_key(),
            self.events_key(),
        ]
    }

    /// Recovers the id from one of its channel or key names.
    pub fn from_key(key: &str) -> Option<Self> {
        let start = key.find('{')? + 1;
        let end = start + key[start..].find('}')?;
        key[start..end].parse().ok()
    }
}

impl fmt::Display for AuctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for AuctionId {
    type Err = InvalidAuctionId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s
            .split_once('/')
            .ok_or_else(|| InvalidAuctionId(s.to_owned()))?;
        Self::new(namespace, name)
    }
}

impl TryFrom<String> for AuctionId {
    type Error = InvalidAuctionId;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<AuctionId> for String {
    fn from(id: AuctionId) -> Self {
        id.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_ids_and_shares_one_hash_tag() {
        let id: AuctionId = "shop/strat-1962.v2".parse().unwrap();
        assert_eq!((id.namespace(), id.name()), ("shop", "strat-1962.v2"));
        for key in id
            .all_keys()
            .iter()
            .chain([&id.channel(), &id.notice_channel()])
        {
            assert!(key.contains("{shop/strat-1962.v2}"), "{key}");
            assert_eq!(AuctionId::from_key(key).as_ref(), Some(&id));
        }
    }

    #[test]
    fn auctions_spread_over_every_flush_stream() {
        let keys: std::collections::HashSet<String> = (0..2_000)
            .map(|i| {
                AuctionId::new("shop", &format!("lot-{i}"))
                    .unwrap()
                    .flush_key()
            })
            .collect();
        assert_eq!(keys, flush_keys().into_iter().collect());
        let id: AuctionId = "shop/lot-1".parse().unwrap();
        assert_eq!(id.flush_key(), id.clone().flush_key(), "stable");
    }

    #[test]
    fn refuses_invalid_ids() {
        for bad in [
            "",
            "shop",
            "/x",
            "x/",
            "Shop/x",
            "shop/X",
            "a/b/c",
            "sh op/x",
            "-a/x",
            "a/x-",
            "adv/a..b",
            "adv/a.-b",
            "adv/a-.b",
            "a/{x}",
            "a.b/x",
            &format!("{}/x", "a".repeat(64)),
        ] {
            assert!(bad.parse::<AuctionId>().is_err(), "{bad:?} accepted");
        }
    }
}
