//! The engine's Redis client: the Lua scripts of `engine/scripts/` and typed calls to them.
//!
//! Every call is one `EVALSHA` (the script is loaded on first use and reloaded when Redis
//! answers `NOSCRIPT`), so placing a bid costs one network round trip. All keys a script
//! touches belong to one auction and share its hash tag.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;
use serde::Serialize;

use crate::event::AuctionEvent;
use crate::keys::AuctionId;
use crate::rules::{AuctionResult, BidAccepted, BidRequest, CloseOutcome, RejectCode, Rejection};
use crate::settings::{Amount, AuctionSettings, Millis, SettingsError};
use crate::store::FlushItem;

/// Source of a script as sent to Redis: the flags line (so Redis refuses a writing script
/// before it runs when memory is full), the shared prelude, then the script.
macro_rules! script {
    ($flags:literal, $file:literal) => {
        concat!(
            $flags,
            "\n",
            include_str!("../scripts/prelude.lua"),
            include_str!(concat!("../scripts/", $file))
        )
    };
}

/// Source of the place-bid script as sent to Redis, so that benchmarks can run the very
/// same script with `redis-benchmark`.
pub const PLACE_BID_LUA: &str = script!("#!lua", "place_bid.lua");
const PROVISION_LUA: &str = script!("#!lua", "provision.lua");
const CLOSE_LUA: &str = script!("#!lua", "close.lua");
const SNAPSHOT_LUA: &str = script!("#!lua flags=no-writes", "snapshot.lua");
const RESTORE_LUA: &str = script!("#!lua", "restore.lua");
const HALT_LUA: &str = script!("#!lua", "halt.lua");
const REMOVE_LUA: &str = script!("#!lua", "remove.lua");

/// Events kept in an auction's Redis stream for `since` replay by default; older ones
/// are replayed from PostgreSQL.
pub const DEFAULT_REPLAY_WINDOW: u64 = 1_000;

/// Longest time an event stays in an auction's Redis stream for `since` replay by default
/// (besides the count, [`DEFAULT_REPLAY_WINDOW`]); older ones are replayed from PostgreSQL.
pub const DEFAULT_REPLAY_MAX_AGE: Duration = Duration::from_secs(3_600);

/// Longest accepted bidder id, in bytes.
pub const MAX_BIDDER_ID_BYTES: usize = 128;

/// Longest accepted display name, in characters.
pub const MAX_BIDDER_NAME_CHARS: usize = 64;

/// Failures of the engine itself, as opposed to a bid's rejection by the rules.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Redis could not be reached or answered with an error.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    /// No auction is provisioned under this id.
    #[error("unknown auction {0}")]
    UnknownAuction(AuctionId),
    /// The settings break a rule.
    #[error("invalid auction settings: {0}")]
    Settings(#[from] SettingsError),
    /// The auction already has bids, so its starting price, reserve and increments can
    /// no longer change.
    #[error("auction {0} already has bids: startingPrice, reservePrice and increments are frozen")]
    PricingFrozen(AuctionId),
    /// The bidder id or display name is empty, too long or has control characters.
    #[error("invalid bidder: {0}")]
    InvalidBidder(String),
    /// Events of the auction are not yet in PostgreSQL; removing it now would lose them.
    #[error("auction {0} still has {1} events not yet written to PostgreSQL")]
    Unflushed(AuctionId, u64),
    /// The auction's live state contradicts PostgreSQL's record; it takes no bids and is
    /// not closed until it is restored from there.
    #[error("auction {0} is halted until it is restored from PostgreSQL")]
    Halted(AuctionId),
    /// A script answered something this version does not understand.
    #[error("unexpected reply from a Gavel script: {0}")]
    Protocol(String),
}

/// Why a bid did not go through.
#[derive(Debug, thiserror::Error)]
pub enum BidError {
    /// The rules refused it; nothing changed.
    #[error("bid rejected: {0}")]
    Rejected(Rejection),
    /// The engine failed; the bid may or may not have been applied only if the failure
    /// happened after Redis received it (a timeout).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Who is bidding: the token's `sub` and `name`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Bidder {
    /// Stable bidder id.
    pub id: String,
    /// Name shown to others when this bidder leads.
    pub name: String,
}

impl Bidder {
    /// Checks the id and name: non-empty, bounded, no control characters.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> Result<Self, EngineError> {
        let (id, name) = (id.into(), name.into());
        let clean = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
        if !clean(&id) || id.len() > MAX_BIDDER_ID_BYTES {
            return Err(EngineError::InvalidBidder(format!(
                "id must be 1 to {MAX_BIDDER_ID_BYTES} bytes without control characters"
            )));
        }
        if !clean(&name) || name.chars().count() > MAX_BIDDER_NAME_CHARS {
            return Err(EngineError::InvalidBidder(format!(
                "name must be 1 to {MAX_BIDDER_NAME_CHARS} characters without control characters"
            )));
        }
        Ok(Self { id, name })
    }
}

/// What provisioning did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provisioned {
    /// The auction did not exist and now does.
    Created,
    /// Some settings changed; bids and state were kept.
    Updated,
    /// Nothing differed.
    Unchanged,
    /// The auction is closed; nothing was changed.
    AlreadyClosed,
}

/// How to close an auction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseMode {
    /// Only at or after the effective end; earlier calls answer `NotEnded`.
    AtEnd,
    /// At once, with no winner.
    Cancel,
}

/// Where an auction stands, as seen from Redis at the time of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LivePhase {
    /// Before `startsAt`.
    Scheduled,
    /// Taking bids.
    Open,
    /// Past the effective end; bids are refused and the operator is about to close it.
    Closing,
    /// Closed with a result.
    Closed,
    /// Closed by cancellation.
    Cancelled,
}

/// An auction's public state plus, for its owner, the viewer's own ceiling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Human title.
    pub title: String,
    /// Currency code.
    pub currency: String,
    /// Last event sequence number.
    pub seq: u64,
    /// Live phase at `server_time`.
    pub phase: LivePhase,
    /// Current price, `None` before the first bid.
    pub price: Option<Amount>,
    /// Leader's bidder id.
    pub leader: Option<String>,
    /// Leader's display name.
    pub leader_name: Option<String>,
    /// Accepted bids.
    pub bid_count: u64,
    /// Lowest amount that takes the lead now.
    pub min_next: Amount,
    /// Opening time, if scheduled.
    pub starts_at: Option<Millis>,
    /// Effective end (after soft-close extensions).
    pub ends_at: Millis,
    /// Scheduled end before extensions.
    pub scheduled_ends_at: Millis,
    /// Whether the reserve is met (true without a reserve).
    pub reserve_met: bool,
    /// Whether the auction has a reserve (its amount is never shown).
    pub has_reserve: bool,
    /// The viewer's own latest ceiling, if the viewer has bid.
    pub your_max: Option<Amount>,
    /// The result, once closed.
    pub result: Option<AuctionResult>,
    /// Redis server time of the snapshot.
    pub server_time: Millis,
    /// Incarnation of the live state: one more at each restore from PostgreSQL.
    pub epoch: u64,
    /// Why the auction takes no bids until restored, if it is halted.
    pub halted: Option<String>,
}

/// When a restore may apply (see [`Engine::restore`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestoreMode {
    /// Only if Redis holds no state for the auction (lost or never there).
    Missing,
    /// Only while Redis still holds the state of this epoch (halted or stale).
    Replace {
        /// The epoch found in Redis.
        epoch: u64,
    },
}

/// What a restore did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restored {
    /// The live state was rebuilt.
    Restored,
    /// Someone else got there first (a state exists, or another epoch); nothing changed.
    Superseded,
}

struct Scripts {
    provision: Script,
    place_bid: Script,
    close: Script,
    snapshot: Script,
    restore: Script,
    halt: Script,
    remove: Script,
}

/// A handle on the engine's Redis; cheap to clone and safe to share between tasks.
#[derive(Clone)]
pub struct Engine {
    pool: Pool,
    config: Config,
    scripts: Arc<Scripts>,
    replay_window: u64,
    replay_max_age: Duration,
}

impl Engine {
    /// Connects to Redis at `url` (one server or a cluster, see [`crate::redis`]) with
    /// `connections` multiplexed connections (per node), retrying the connection forever
    /// with backoff once established.
    pub async fn connect(url: &str, connections: usize) -> Result<Self, EngineError> {
        let config = crate::redis::config(url)?;
        let pool = crate::redis::pool(&config, connections).await?;
        Ok(Self {
            pool,
            config,
            scripts: Arc::new(Scripts {
                provision: Script::from_lua(PROVISION_LUA),
                place_bid: Script::from_lua(PLACE_BID_LUA),
                close: Script::from_lua(CLOSE_LUA),
                snapshot: Script::from_lua(SNAPSHOT_LUA),
                restore: Script::from_lua(RESTORE_LUA),
                halt: Script::from_lua(HALT_LUA),
                remove: Script::from_lua(REMOVE_LUA),
            }),
            replay_window: DEFAULT_REPLAY_WINDOW,
            replay_max_age: DEFAULT_REPLAY_MAX_AGE,
        })
    }

    /// Keeps about `events` entries in each auction's Redis stream (at least 1).
    pub fn with_replay_window(mut self, events: u64) -> Self {
        self.replay_window = events.max(1);
        self
    }

    /// Keeps no entry older than `age` in each auction's Redis stream (trimmed as events
    /// are appended; zero: no age limit, the count alone bounds it).
    pub fn with_replay_max_age(mut self, age: Duration) -> Self {
        self.replay_max_age = age;
        self
    }

    /// The replay window as the scripts take it: `count:age_ms`.
    fn window_arg(&self) -> String {
        format!("{}:{}", self.replay_window, self.replay_max_age.as_millis())
    }

    /// The Redis connection settings, for clients of other kinds (pub/sub).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A client of the pool, for commands outside the scripts (readiness, replay).
    pub fn redis(&self) -> &Client {
        self.pool.next()
    }

    /// A connection of its own, for blocking reads that must not hold up the pool.
    pub async fn dedicated_client(&self) -> Result<Client, EngineError> {
        Ok(crate::redis::dedicated(&self.config).await?)
    }

    /// Whether Redis is a cluster (then each shard's keys live on the node owning its slot).
    pub fn is_cluster(&self) -> bool {
        self.config.server.is_clustered()
    }

    /// SHA1 of the place-bid script, as `EVALSHA` needs it.
    pub fn place_bid_sha(&self) -> &str {
        self.scripts.place_bid.sha1()
    }

    /// Loads every script now, so that the first bid does not pay for it.
    pub async fn load_scripts(&self) -> Result<(), EngineError> {
        let s = &self.scripts;
        for script in [
            &s.provision,
            &s.place_bid,
            &s.close,
            &s.snapshot,
            &s.restore,
            &s.halt,
            &s.remove,
        ] {
            script.load(self.pool.next()).await?;
        }
        Ok(())
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), EngineError> {
        let _: String = self.pool.next().ping(None).await?;
        Ok(())
    }

    async fn run(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Vec<String>, EngineError> {
        Ok(script
            .evalsha_with_reload(self.pool.next(), keys, args)
            .await?)
    }

    /// Creates the auction or updates its settings. Idempotent; once the auction has bids
    /// only non-pricing settings may change, and a closed auction is left alone.
    pub async fn provision(
        &self,
        id: &AuctionId,
        settings: &AuctionSettings,
    ) -> Result<Provisioned, EngineError> {
        self.provision_at_epoch(id, settings, 1).await
    }

    /// [`Engine::provision`], a new state starting at `epoch` (PostgreSQL's incarnation
    /// number of the auction, see [`crate::restore`]).
    pub async fn provision_at_epoch(
        &self,
        id: &AuctionId,
        settings: &AuctionSettings,
        epoch: u64,
    ) -> Result<Provisioned, EngineError> {
        settings.validate()?;
        let mut args = settings_args(settings);
        args.push(epoch.max(1).to_string());
        let reply = self
            .run(&self.scripts.provision, ScriptKeys::provision(id), args)
            .await?;
        match reply.first().map(String::as_str) {
            Some("created") => Ok(Provisioned::Created),
            Some("updated") => Ok(Provisioned::Updated),
            Some("unchanged") => Ok(Provisioned::Unchanged),
            Some("closed") => Ok(Provisioned::AlreadyClosed),
            Some("pricing_frozen") => Err(EngineError::PricingFrozen(id.clone())),
            _ => Err(EngineError::Protocol(format!("provision: {reply:?}"))),
        }
    }

    /// Rebuilds the auction's live state from PostgreSQL's record (see
    /// [`crate::restore`]), atomically, if `mode` still applies; watchers get a
    /// `restored` notice on the auction's channel.
    pub async fn restore(
        &self,
        id: &AuctionId,
        state: &crate::restore::RestoredState,
        mode: RestoreMode,
    ) -> Result<Restored, EngineError> {
        let (mode, epoch) = match mode {
            RestoreMode::Missing => ("missing", String::new()),
            RestoreMode::Replace { epoch } => ("replace", epoch.to_string()),
        };
        let mut args = vec![
            mode.to_owned(),
            epoch,
            id.channel(),
            state.notice(),
            id.changes_channel(),
            id.to_string(),
            (state.fields.len() * 2).to_string(),
        ];
        for (k, v) in &state.fields {
            args.push(k.clone());
            args.push(v.clone());
        }
        for (bidder, own) in &state.ceilings {
            args.push(bidder.clone());
            args.push(own.to_string());
        }
        let reply = self
            .run(&self.scripts.restore, ScriptKeys::restore(id), args)
            .await?;
        match reply.first().map(String::as_str) {
            Some("restored") => Ok(Restored::Restored),
            Some("exists" | "changed") => Ok(Restored::Superseded),
            _ => Err(EngineError::Protocol(format!("restore: {reply:?}"))),
        }
    }

    /// Stops the auction from taking bids until it is restored, if its live state is still
    /// at `epoch`. Returns whether it halted it.
    pub async fn halt(
        &self,
        id: &AuctionId,
        epoch: u64,
        reason: &str,
    ) -> Result<bool, EngineError> {
        let reply: i64 = self
            .scripts
            .halt
            .evalsha_with_reload(
                self.pool.next(),
                ScriptKeys::halt(id),
                vec![
                    epoch.to_string(),
                    reason.to_owned(),
                    id.changes_channel(),
                    id.to_string(),
                ],
            )
            .await?;
        Ok(reply == 1)
    }

    /// Places a bid at Redis server time: one `EVALSHA`, one round trip.
    pub async fn place_bid(
        &self,
        id: &AuctionId,
        bidder: &Bidder,
        request: BidRequest,
    ) -> Result<BidAccepted, BidError> {
        self.place_bid_at(id, bidder, request, None).await
    }

    /// Places a bid as if Redis's clock read `now` (server time when `None`). A pinned
    /// clock exists for deterministic tests and replays; production paths pass `None`.
    pub async fn place_bid_at(
        &self,
        id: &AuctionId,
        bidder: &Bidder,
        request: BidRequest,
        now: Option<Millis>,
    ) -> Result<BidAccepted, BidError> {
        Ok(self.place_bid_event(id, bidder, request, now).await?.0)
    }

    /// [`Engine::place_bid_at`], also returning the accepted bid's event exactly as the
    /// script recorded it in the flush stream: what a caller writes to PostgreSQL itself
    /// to acknowledge only recorded bids (the flusher's later write of the same event is
    /// then skipped as a replay).
    pub async fn place_bid_event(
        &self,
        id: &AuctionId,
        bidder: &Bidder,
        request: BidRequest,
        now: Option<Millis>,
    ) -> Result<(BidAccepted, FlushItem), BidError> {
        request.validate().map_err(BidError::Rejected)?;
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let keys = ScriptKeys::place_bid(id);
        let args = vec![
            bidder.id.clone(),
            bidder.name.clone(),
            opt(request.amount),
            opt(request.max),
            id.channel(),
            opt(now),
            id.to_string(),
            self.window_arg(),
            id.changes_channel(),
        ];
        let reply = self.run(&self.scripts.place_bid, keys, args).await?;
        match reply.as_slice() {
            [tag, json] if tag == "accepted" => {
                let event = AuctionEvent::from_json(json.as_bytes()).ok();
                let accepted: Option<BidAccepted> = match &event {
                    Some(AuctionEvent::Bid(bid) | AuctionEvent::CeilingRaised(bid)) => {
                        Some(bid.clone().into())
                    }
                    _ => None,
                };
                match (accepted, event) {
                    (Some(accepted), Some(event)) => Ok((
                        accepted,
                        FlushItem {
                            auction: id.clone(),
                            json: json.clone(),
                            event,
                        },
                    )),
                    _ => Err(EngineError::Protocol(format!("place_bid event: {json}")).into()),
                }
            }
            [tag, code, min_next, retry] if tag == "rejected" => {
                let code = RejectCode::parse(code)
                    .ok_or_else(|| EngineError::Protocol(format!("reject code {code}")))?;
                Err(BidError::Rejected(Rejection {
                    code,
                    min_next: min_next.parse().ok(),
                    retry_after_ms: retry.parse().ok(),
                }))
            }
            _ => Err(EngineError::Protocol(format!("place_bid: {reply:?}")).into()),
        }
    }

    /// Closes the auction (see [`CloseMode`]). Calling it again returns the same result.
    pub async fn close(
        &self,
        id: &AuctionId,
        mode: CloseMode,
    ) -> Result<CloseOutcome, EngineError> {
        self.close_at(id, mode, None).await
    }

    /// [`Engine::close`] with a pinned clock; see [`Engine::place_bid_at`].
    pub async fn close_at(
        &self,
        id: &AuctionId,
        mode: CloseMode,
        now: Option<Millis>,
    ) -> Result<CloseOutcome, EngineError> {
        let mode_arg = match mode {
            CloseMode::AtEnd => "end",
            CloseMode::Cancel => "cancel",
        };
        let args = vec![
            mode_arg.to_owned(),
            id.channel(),
            now.map(|n| n.to_string()).unwrap_or_default(),
            id.to_string(),
            self.window_arg(),
            id.changes_channel(),
        ];
        let reply = self
            .run(&self.scripts.close, ScriptKeys::close(id), args)
            .await?;
        match reply.as_slice() {
            [tag, json] if tag == "closed" => match AuctionEvent::from_json(json.as_bytes()) {
                Ok(AuctionEvent::Closed(result)) => Ok(CloseOutcome::Closed(result)),
                _ => Err(EngineError::Protocol(format!("close result: {json}"))),
            },
            [tag, ends] if tag == "not_ended" => Ok(CloseOutcome::NotEnded {
                ends_at: ends
                    .parse()
                    .map_err(|_| EngineError::Protocol(format!("close end: {ends}")))?,
            }),
            [tag] if tag == "unknown" => Err(EngineError::UnknownAuction(id.clone())),
            [tag] if tag == "halted" => Err(EngineError::Halted(id.clone())),
            _ => Err(EngineError::Protocol(format!("close: {reply:?}"))),
        }
    }

    /// Reads the auction's public state; `viewer`'s own ceiling is included for it alone.
    pub async fn snapshot(
        &self,
        id: &AuctionId,
        viewer: Option<&str>,
    ) -> Result<Snapshot, EngineError> {
        self.snapshot_at(id, viewer, None).await
    }

    /// [`Engine::snapshot`] with a pinned clock; see [`Engine::place_bid_at`].
    pub async fn snapshot_at(
        &self,
        id: &AuctionId,
        viewer: Option<&str>,
        now: Option<Millis>,
    ) -> Result<Snapshot, EngineError> {
        let args = vec![
            viewer.unwrap_or_default().to_owned(),
            now.map(|n| n.to_string()).unwrap_or_default(),
        ];
        let reply = self
            .run(&self.scripts.snapshot, ScriptKeys::snapshot(id), args)
            .await?;
        if reply.is_empty() {
            return Err(EngineError::UnknownAuction(id.clone()));
        }
        parse_snapshot(&reply).ok_or_else(|| EngineError::Protocol(format!("snapshot: {reply:?}")))
    }

    /// Events with a sequence number above `after`, oldest first, at most `limit`.
    pub async fn events_since(
        &self,
        id: &AuctionId,
        after: u64,
        limit: u64,
    ) -> Result<Vec<AuctionEvent>, EngineError> {
        let entries: Vec<(String, HashMap<String, String>)> = self
            .pool
            .next()
            .xrange_values(
                id.events_key(),
                format!("{}-0", after + 1),
                "+",
                Some(limit),
            )
            .await?;
        entries
            .into_iter()
            .map(|(entry, fields)| {
                fields
                    .get("e")
                    .and_then(|json| AuctionEvent::from_json(json.as_bytes()).ok())
                    .ok_or_else(|| EngineError::Protocol(format!("stream entry {entry}")))
            })
            .collect()
    }

    /// Deletes the auction's live state (settings, bidders' ceilings and rate limits, event
    /// stream). PostgreSQL records are not touched. `flushed` is the number of the
    /// auction's events PostgreSQL holds ([`crate::store::Store::event_count`]); while
    /// Redis holds more, it refuses with [`EngineError::Unflushed`], so that no accepted
    /// bid is ever lost.
    pub async fn remove(&self, id: &AuctionId, flushed: u64) -> Result<(), EngineError> {
        let keys = ScriptKeys::remove(id);
        let reply = self
            .run(&self.scripts.remove, keys, vec![flushed.to_string()])
            .await?;
        match reply.as_slice() {
            [tag] if tag == "removed" => Ok(()),
            [tag, left] if tag == "unflushed" => Err(EngineError::Unflushed(
                id.clone(),
                left.parse().unwrap_or(1),
            )),
            _ => Err(EngineError::Protocol(format!("remove: {reply:?}"))),
        }
    }
}

/// The keys (`KEYS`) each script is called with, in order, for one auction. On a Redis
/// Cluster each call must stay in one hash slot; so must the shard channels the scripts
/// publish on ([`ScriptKeys::channels`]). `engine/tests/cluster.rs` checks every set with
/// `CLUSTER KEYSLOT` on a real cluster.
pub struct ScriptKeys;

impl ScriptKeys {
    /// `provision.lua`.
    pub fn provision(id: &AuctionId) -> Vec<String> {
        vec![id.state_key()]
    }

    /// `place_bid.lua`.
    pub fn place_bid(id: &AuctionId) -> Vec<String> {
        vec![
            id.state_key(),
            id.ceilings_key(),
            id.rate_key(),
            id.events_key(),
            id.flush_key(),
        ]
    }

    /// `close.lua`.
    pub fn close(id: &AuctionId) -> Vec<String> {
        vec![id.state_key(), id.events_key(), id.flush_key()]
    }

    /// `snapshot.lua`.
    pub fn snapshot(id: &AuctionId) -> Vec<String> {
        vec![id.state_key(), id.ceilings_key()]
    }

    /// `restore.lua`.
    pub fn restore(id: &AuctionId) -> Vec<String> {
        vec![
            id.state_key(),
            id.ceilings_key(),
            id.events_key(),
            id.rate_key(),
        ]
    }

    /// `halt.lua`.
    pub fn halt(id: &AuctionId) -> Vec<String> {
        vec![id.state_key()]
    }

    /// `remove.lua`.
    pub fn remove(id: &AuctionId) -> Vec<String> {
        id.all_keys().to_vec()
    }

    /// Every script with its keys.
    pub fn all(id: &AuctionId) -> Vec<(&'static str, Vec<String>)> {
        vec![
            ("provision", Self::provision(id)),
            ("place_bid", Self::place_bid(id)),
            ("close", Self::close(id)),
            ("snapshot", Self::snapshot(id)),
            ("restore", Self::restore(id)),
            ("halt", Self::halt(id)),
            ("remove", Self::remove(id)),
        ]
    }

    /// The shard channels the scripts publish on (passed as arguments): the auction's
    /// live channel, its shard's changes channel, and its flush stream's wake-up channel.
    pub fn channels(id: &AuctionId) -> Vec<String> {
        vec![id.channel(), id.changes_channel(), id.flush_key()]
    }
}

/// The settings as the provision and restore scripts take them, in the state hash's
/// encoding ('' for an absent optional value).
pub(crate) fn settings_args(settings: &AuctionSettings) -> Vec<String> {
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    vec![
        settings.title.clone(),
        settings.currency.clone(),
        settings.starting_price.to_string(),
        opt(settings.reserve_price),
        settings.increments.encode(),
        opt(settings.starts_at),
        settings.ends_at.to_string(),
        opt(settings.soft_close.map(|s| s.window_ms)),
        opt(settings.soft_close.map(|s| s.extension_ms)),
        opt(settings.bid_limit.map(|l| i64::from(l.per_second))),
        opt(settings.bid_limit.map(|l| i64::from(l.burst))),
    ]
}

/// Names of the state hash's settings fields, in [`settings_args`] order.
pub(crate) const SETTINGS_FIELDS: [&str; 11] = [
    "title",
    "currency",
    "start_price",
    "reserve",
    "tiers",
    "starts_at",
    "ends_at",
    "window",
    "extension",
    "rate",
    "burst",
];

fn parse_snapshot(reply: &[String]) -> Option<Snapshot> {
    let fields: HashMap<&str, &str> = reply
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((k.as_str(), v.as_str())),
            _ => None,
        })
        .collect();
    let text = |k: &str| fields.get(k).copied();
    let opt_int = |k: &str| {
        text(k)
            .filter(|v| !v.is_empty())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let int = |k: &str| opt_int(k);
    let leader = text("leader").filter(|l| !l.is_empty()).map(str::to_owned);
    let price = int("price")?;
    let starting = int("start_price")?;
    let increments: Vec<(i64, i64)> = text("tiers")?
        .split(',')
        .filter_map(|t| t.split_once(':'))
        .filter_map(|(f, s)| Some((f.parse().ok()?, s.parse().ok()?)))
        .collect();
    let step = increments
        .iter()
        .take_while(|(from, _)| *from <= price)
        .last()
        .map(|(_, step)| *step)?;
    let scheduled_ends_at = int("ends_at")?;
    let ends_at = crate::rules::effective_end(scheduled_ends_at, opt_int("ext_end"));
    let starts_at = opt_int("starts_at");
    let server_time = int("now")?;
    let result = match text("result") {
        Some(json) if !json.is_empty() => match AuctionEvent::from_json(json.as_bytes()).ok()? {
            AuctionEvent::Closed(result) => Some(result),
            AuctionEvent::Bid(_) | AuctionEvent::CeilingRaised(_) | AuctionEvent::Restored(_) => {
                return None;
            }
        },
        _ => None,
    };
    let phase = match &result {
        Some(r) if r.cancelled => LivePhase::Cancelled,
        Some(_) => LivePhase::Closed,
        None if server_time >= ends_at => LivePhase::Closing,
        None if starts_at.is_some_and(|s| server_time < s) => LivePhase::Scheduled,
        None => LivePhase::Open,
    };
    Some(Snapshot {
        title: text("title")?.to_owned(),
        currency: text("currency")?.to_owned(),
        seq: int("seq")?.try_into().ok()?,
        phase,
        price: leader.as_ref().map(|_| price),
        leader_name: leader.as_ref().and(text("leader_name")).map(str::to_owned),
        min_next: if leader.is_some() {
            price + step
        } else {
            starting
        },
        leader,
        bid_count: int("bid_count")?.try_into().ok()?,
        starts_at,
        ends_at,
        scheduled_ends_at,
        reserve_met: text("reserve_met")? == "1",
        has_reserve: text("reserve").is_some_and(|r| !r.is_empty()),
        your_max: opt_int("your_max"),
        result,
        server_time,
        epoch: opt_int("epoch")
            .and_then(|e| u64::try_from(e).ok())
            .unwrap_or(1),
        halted: text("halted").filter(|h| !h.is_empty()).map(str::to_owned),
    })
}
