//! Auction identity and the Redis key layout.
//!
//! Every auction belongs to one of [`FLUSH_SHARDS`] *shards* (a stable hash of its id). A
//! shard is one Redis Cluster hash slot: every key and channel of its auctions carries the
//! shard's hash tag (`gavel:{g40}:shop/lot-1:a`), and so does the shard's flush stream
//! (`gavel:flush:{g40}`), so each script call — the auction's keys plus the flush stream it
//! queues on — stays in one slot and runs on one Redis node, on one server or a cluster.
//! The tags are chosen so that the shards' slots are spread evenly over the 16,384 slots
//! (slot `1024·i + 512 ± 8` for shard `i`), so a cluster's slot ranges split the shards
//! evenly between its masters (6/5/5 on three, as `redis-cli --cluster create` assigns).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Stream of entries the flusher could not write (refused repeatedly, or in conflict with
/// PostgreSQL's record); bounded to [`DEAD_LETTER_MAX`] entries. Only the flushers write
/// it, one `XADD` at a time (never from a script), so its slot does not matter.
pub const DEAD_LETTER_KEY: &str = "gavel:dead-letter";

/// Most entries kept in the dead-letter stream (approximate trim).
pub const DEAD_LETTER_MAX: u64 = 10_000;

/// Consumer group of the PostgreSQL flushers on the flush streams.
pub const FLUSH_GROUP: &str = "gavel-flusher";

/// Number of shards: every event is appended to its auction's stream (replay) and to its
/// shard's flush stream (the flushers' work queue). The flushers read all of them, so
/// their cost follows events and shards, not auctions. Fixed: changing it moves every key.
pub const FLUSH_SHARDS: u16 = 16;

/// The hash tag of each shard, chosen once (by search) so that shard `i`'s slot is about
/// `1024·i + 512`; checked against [`key_slot`] by a test and against a real cluster's
/// `CLUSTER KEYSLOT` by `engine/tests/cluster.rs`.
pub const SHARD_TAGS: [&str; FLUSH_SHARDS as usize] = [
    "g2687", "g2797", "g973", "g863", "g3170", "g2821", "g293", "g383", "g40", "g695", "g348",
    "g258", "g528", "g438", "g708", "g618",
];

fn shard_tag(shard: u16) -> &'static str {
    SHARD_TAGS[usize::from(shard % FLUSH_SHARDS)]
}

/// The flush stream of shard `shard`. Its name is also the shard channel on which a
/// script wakes idle flushers when it queues on an empty stream.
pub fn flush_key(shard: u16) -> String {
    format!("gavel:flush:{{{}}}", shard_tag(shard))
}

/// Every flush stream.
pub fn flush_keys() -> Vec<String> {
    (0..FLUSH_SHARDS).map(flush_key).collect()
}

/// The shard channel carrying the id of every auction of shard `shard` that changed (an
/// event, a halt, a restore): what the operator's change feed listens to.
pub fn changes_channel(shard: u16) -> String {
    format!("gavel:changes:{{{}}}", shard_tag(shard))
}

/// Every shard's changes channel.
pub fn changes_channels() -> Vec<String> {
    (0..FLUSH_SHARDS).map(changes_channel).collect()
}

/// The key whose value changes when the Redis node holding shard `shard` lost its data
/// (see [`crate::changes`]): a process that watches many auctions sets it once and reads it
/// back periodically. One per shard, so a cluster node that lost its data is noticed too.
pub fn marker_key(shard: u16) -> String {
    format!("gavel:marker:{{{}}}", shard_tag(shard))
}

/// The Redis Cluster hash slot of `key` (CRC16/XMODEM of its hash tag, or of the whole key
/// without one, modulo 16,384), as `CLUSTER KEYSLOT` computes it.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let crc = hashed.iter().fold(0u16, |crc, &b| {
        (0..8).fold(crc ^ (u16::from(b) << 8), |crc, _| {
            if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            }
        })
    });
    crc % 16_384
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
    /// the namespace, DNS-1123 subdomain for the name): the protocol's rule of auction
    /// names, [`gavel_protocol::names`].
    pub fn new(namespace: &str, name: &str) -> Result<Self, InvalidAuctionId> {
        if gavel_protocol::names::valid_parts(namespace, name) {
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

    /// The auction's shard: a stable hash of its id (FNV-1a: the same in every process
    /// and version, unlike the std hasher).
    pub fn shard(&self) -> u16 {
        let hash = self.to_string().bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        (hash % u32::from(FLUSH_SHARDS)) as u16
    }

    fn key(&self, suffix: &str) -> String {
        format!(
            "gavel:{{{}}}:{}/{}:{suffix}",
            shard_tag(self.shard()),
            self.namespace,
            self.name
        )
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

    /// Shard channel (`SPUBLISH`/`SSUBSCRIBE`) carrying each event live to the bid-api
    /// pods that watch the auction: on a cluster, only the auction's node carries it.
    pub fn channel(&self) -> String {
        self.key("live")
    }

    /// The shard channel on which the auction's changes are announced to the operator.
    pub fn changes_channel(&self) -> String {
        changes_channel(self.shard())
    }

    /// The flush stream this auction's events are queued on for PostgreSQL (in the
    /// auction's slot).
    pub fn flush_key(&self) -> String {
        flush_key(self.shard())
    }

    /// The Redis Cluster hash slot of every key and channel of the auction.
    pub fn slot(&self) -> u16 {
        key_slot(&self.state_key())
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

    /// Recovers the id from one of its channel or key names
    /// (`gavel:{<tag>}:<namespace>/<name>:<suffix>`).
    pub fn from_key(key: &str) -> Option<Self> {
        let rest = key.strip_prefix("gavel:{")?;
        let (_, rest) = rest.split_once("}:")?;
        let (id, _) = rest.rsplit_once(':')?;
        id.parse().ok()
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
        for key in id.all_keys().iter().chain([&id.channel()]) {
            assert!(key.contains(":shop/strat-1962.v2:"), "{key}");
            assert_eq!(AuctionId::from_key(key).as_ref(), Some(&id));
            assert_eq!(key_slot(key), id.slot(), "{key}");
        }
        for key in [id.flush_key(), id.changes_channel()] {
            assert_eq!(key_slot(&key), id.slot(), "{key}");
            assert_eq!(AuctionId::from_key(&key), None);
        }
        assert_eq!(key_slot(&marker_key(id.shard())), id.slot());
    }

    #[test]
    fn shard_tags_spread_evenly_over_the_slots() {
        // Known values of CLUSTER KEYSLOT (redis.io's cluster specification and redis-cli).
        assert_eq!(key_slot("foo"), 12_182);
        assert_eq!(key_slot("{user1000}.following"), key_slot("user1000"));
        assert_eq!(key_slot("foo{}{bar}"), key_slot("foo{}{bar}"));
        assert_ne!(key_slot("foo{}{bar}"), key_slot("bar"));
        for (i, tag) in SHARD_TAGS.iter().enumerate() {
            let center = 1024 * i as i32 + 512;
            let slot = i32::from(key_slot(tag));
            assert!((slot - center).abs() <= 8, "shard {i}: slot {slot}");
            assert_eq!(key_slot(&flush_key(i as u16)), slot as u16);
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
        let slots: std::collections::HashSet<u16> =
            flush_keys().iter().map(|k| key_slot(k)).collect();
        assert_eq!(slots.len(), usize::from(FLUSH_SHARDS));
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
