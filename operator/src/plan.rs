//! The pure decision: from what the operator observes (the Auction's spec and status, the
//! live state in Redis, the time) to the one thing to do next and when to come back.
//!
//! No I/O happens here. [`crate::lifecycle`] observes, calls [`plan`], carries out the
//! step, and observes again until the plan is to wait; the Kubernetes controller and the
//! standalone mode share that loop. [`desired_status`] and [`crate::status::events`] are
//! pure too, so every decision is table-tested in `plan/tests.rs`.

use std::time::Duration;

use gavel_crds::{AuctionStatus, Phase, SpecError};
use gavel_engine::{AuctionResult, AuctionSettings, LivePhase, Millis, RestoreMode, Snapshot};

use crate::status::{self, ConditionStatus, ConditionType, Reason};

/// How long after a deadline the operator wakes up, so that Redis's clock has certainly
/// passed it when the close script runs.
pub const DEADLINE_MARGIN_MS: Millis = 5;

/// The auction's live state in Redis, as the plan needs it (a projection of [`Snapshot`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// Phase by Redis server time.
    pub phase: LivePhase,
    /// Current price, before the first bid `None`.
    pub price: Option<i64>,
    /// Display name of the leader.
    pub leader_name: Option<String>,
    /// Accepted bids.
    pub bid_count: u64,
    /// Opening time, if scheduled.
    pub starts_at: Option<Millis>,
    /// Effective end, after soft-close extensions.
    pub ends_at: Millis,
    /// Whether the reserve is met.
    pub reserve_met: bool,
    /// The result, once closed.
    pub result: Option<AuctionResult>,
    /// Redis server time of the observation: the clock every decision uses.
    pub server_time: Millis,
    /// Last event seq in Redis.
    pub seq: u64,
    /// Incarnation of the live state.
    pub epoch: u64,
    /// Set when the live state contradicts PostgreSQL (it takes no bids until restored).
    pub halted: Option<String>,
}

/// What PostgreSQL holds of the auction, when it could be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Durable {
    /// The auction was provisioned before (PostgreSQL has its row).
    pub known: bool,
    /// Highest event seq recorded (0 for none).
    pub seq: u64,
}

impl From<&Snapshot> for Live {
    fn from(s: &Snapshot) -> Self {
        Self {
            phase: s.phase,
            price: s.price,
            leader_name: s.leader_name.clone(),
            bid_count: s.bid_count,
            starts_at: s.starts_at,
            ends_at: s.ends_at,
            reserve_met: s.reserve_met,
            result: s.result.clone(),
            server_time: s.server_time,
            seq: s.seq,
            epoch: s.epoch,
            halted: s.halted.clone(),
        }
    }
}

/// Everything the plan looks at.
#[derive(Clone, Debug)]
pub struct Observed {
    /// The spec converted to engine settings, or why it cannot be.
    pub settings: Result<AuctionSettings, SpecError>,
    /// `spec.cancel`.
    pub cancel: bool,
    /// `metadata.generation` of the object.
    pub generation: Option<i64>,
    /// The status as last written.
    pub status: Option<AuctionStatus>,
    /// The object is being deleted.
    pub deleting: bool,
    /// Live state in Redis; `None` when the auction is not provisioned there.
    pub live: Option<Live>,
    /// The engine refused this generation's settings (pricing frozen after the first bid);
    /// the message says what to do. Set by the executor after a refused provision.
    pub refused: Option<String>,
    /// The final result is known to be in PostgreSQL.
    pub recorded: bool,
    /// Accepted events not yet in PostgreSQL, when known (after a refused record step).
    pub unflushed: Option<u64>,
    /// This generation's settings were pushed during this reconcile.
    pub provisioned: bool,
    /// The settings reached Redis but not PostgreSQL (unreachable): the lifecycle goes on
    /// (Redis decides), and the next reconcile provisions again.
    pub store_error: Option<String>,
    /// The local clock, used only when Redis gave no time (not provisioned).
    pub now: Millis,
    /// PostgreSQL's record of the auction; `None` when PostgreSQL could not be asked.
    pub durable: Option<Durable>,
    /// A restore done during this reconcile, described for the status and the Event.
    pub restored: Option<String>,
    /// `spec.retention`, when set.
    pub retention: Option<Duration>,
    /// The closed auction's live state left Redis during this reconcile (its retention
    /// passed).
    pub removed: bool,
}

impl Observed {
    /// The clock of decisions: Redis server time when known, else the local clock.
    pub fn now(&self) -> Millis {
        self.live.as_ref().map_or(self.now, |l| l.server_time)
    }

    /// Whether this generation's settings still have to be pushed to Redis and PostgreSQL
    /// (never once the auction is closed, or to be cancelled: a new generation then only
    /// records what was asked).
    pub fn needs_provision(&self) -> bool {
        let observed = self.status.as_ref().and_then(|s| s.observed_generation);
        self.settings.is_ok()
            && self.refused.is_none()
            && !self.provisioned
            && !self.cancel
            && self.live.as_ref().is_none_or(|l| l.result.is_none())
            && (self.live.is_none() || observed != self.generation || observed.is_none())
    }

    /// Whether `endsAt` had already passed before the auction was ever provisioned: it is
    /// then not opened (README § The Auction resource), until its spec changes. An
    /// auction provisioned before (PostgreSQL or its status says so) whose end passed
    /// while no operator ran still closes with its winner.
    pub fn ended_before_provisioning(&self) -> bool {
        self.live.is_none()
            && !self.status_live()
            && !self.status_final()
            && self.durable.is_none_or(|d| !d.known && d.seq == 0)
            && self.settings.as_ref().is_ok_and(|s| s.ends_at <= self.now)
    }

    /// Whether the status says the auction ended for good.
    pub fn status_final(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(Phase::is_final)
    }

    /// Whether the status says the auction was provisioned in Redis before.
    pub fn status_live(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| matches!(p, Phase::Scheduled | Phase::Open))
    }
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Push the settings to Redis and PostgreSQL (idempotent), then observe again.
    Provision,
    /// Rebuild the live state from PostgreSQL's record: Redis lost it (`Missing`), or
    /// holds one that contradicts the record (`Replace`).
    Restore(RestoreMode),
    /// Close now: at the effective end, or at once with no winner.
    Close(gavel_engine::CloseMode),
    /// Make sure every accepted bid is in PostgreSQL, then record the result there.
    Record(AuctionResult),
    /// Delete the live Redis state (PostgreSQL records stay).
    Remove,
    /// Deletion is complete: drop the finalizer (or forget the file).
    Release,
    /// Nothing to do now; write the status and come back after `requeue` (never: `None`,
    /// until the object changes).
    Wait {
        /// When to look again.
        requeue: Option<Duration>,
    },
}

impl Step {
    /// The step's name in the reconcile span (`provision`, `close`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Step::Provision => "provision",
            Step::Restore(_) => "restore",
            Step::Close(gavel_engine::CloseMode::Cancel) => "cancel",
            Step::Close(_) => "close",
            Step::Record(_) => "record",
            Step::Remove => "remove",
            Step::Release => "release",
            Step::Wait { .. } => "wait",
        }
    }
}

/// Tuning of the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How often an auction that changed in Redis (bids, halt) is looked at, at most, and
    /// how often Redis is checked for lost data: the bound on how often the status is
    /// written, whatever the bid rate, and on how late a change reaches the status.
    pub refresh: Duration,
    /// Longest sleep while nothing is due and nothing changed (open with no bids, scheduled
    /// far ahead, waiting on spec errors with a live auction), so a lost wake-up heals.
    pub idle: Duration,
    /// Retry delay while the last bids are being flushed to PostgreSQL.
    pub flush_retry: Duration,
    /// How long a closed auction's live state stays in Redis after its result is
    /// recorded, unless its spec says otherwise.
    pub retention: Duration,
    /// How a failed reconcile is retried (per auction, exponential with jitter).
    pub retry: crate::backoff::RetryPolicy,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(5),
            idle: Duration::from_secs(300),
            flush_retry: Duration::from_millis(250),
            retention: Duration::from_secs(3_600),
            retry: crate::backoff::RetryPolicy::default(),
        }
    }
}

fn until(now: Millis, deadline: Millis) -> Duration {
    Duration::from_millis(u64::try_from(deadline - now + DEADLINE_MARGIN_MS).unwrap_or(0))
}

/// Retry delay while PostgreSQL cannot say whether a lost auction has a record.
pub const RECORD_RETRY: Duration = Duration::from_secs(2);

/// Decides the next step.
pub fn plan(o: &Observed, timing: &Timing) -> Step {
    let now = o.now();
    // A live state that contradicts PostgreSQL is replaced before anything else happens
    // to it (bids, close, deletion): the record decides.
    if let Some(live) = &o.live
        && o.settings.is_ok()
        && (live.halted.is_some() || o.durable.is_some_and(|d| d.seq > live.seq))
    {
        return Step::Restore(RestoreMode::Replace { epoch: live.epoch });
    }
    if o.deleting {
        return match &o.live {
            None => Step::Release,
            Some(live) => match &live.result {
                // Deleted after its end but before the close: it still closes with its
                // winner; before the end it is cancelled.
                None if now >= live.ends_at => Step::Close(gavel_engine::CloseMode::AtEnd),
                None => Step::Close(gavel_engine::CloseMode::Cancel),
                Some(_) if !o.recorded && o.unflushed.is_some_and(|n| n > 0) => Step::Wait {
                    requeue: Some(timing.flush_retry),
                },
                Some(result) if !o.recorded => Step::Record(result.clone()),
                Some(_) => Step::Remove,
            },
        };
    }
    let Some(live) = &o.live else {
        // Not in Redis. A closed auction whose live state is gone stays closed; an invalid
        // spec, or one whose end passed before it was ever opened, waits for a change of
        // the object.
        if o.status_final() || o.settings.is_err() || o.ended_before_provisioning() {
            return Step::Wait { requeue: None };
        }
        // Provisioned before: Redis lost it. Never provision it as new (that would reuse
        // seqs and forget bids): restore it from PostgreSQL, or wait until PostgreSQL can
        // tell.
        return match o.durable {
            Some(d) if d.known || d.seq > 0 => Step::Restore(RestoreMode::Missing),
            Some(_) => Step::Provision,
            None if o.status_live() => Step::Wait {
                requeue: Some(RECORD_RETRY),
            },
            None => Step::Provision,
        };
    };
    if let Some(result) = &live.result {
        return if o.recorded {
            // Kept in Redis for its retention, then PostgreSQL serves it alone.
            let keep = o.retention.unwrap_or(timing.retention);
            let leave_at =
                result.closed_at + Millis::try_from(keep.as_millis()).unwrap_or(Millis::MAX / 2);
            if now >= leave_at {
                Step::Remove
            } else {
                Step::Wait {
                    requeue: Some(until(now, leave_at).min(timing.idle)),
                }
            }
        } else if o.unflushed.is_some_and(|n| n > 0) {
            Step::Wait {
                requeue: Some(timing.flush_retry),
            }
        } else {
            Step::Record(result.clone())
        };
    }
    if o.cancel {
        return Step::Close(gavel_engine::CloseMode::Cancel);
    }
    if o.needs_provision() {
        return Step::Provision;
    }
    if now >= live.ends_at {
        return Step::Close(gavel_engine::CloseMode::AtEnd);
    }
    // Open: bids, halts and lost Redis data wake the auction up (the change feed); the
    // slow look every `idle` only heals a change nobody announced.
    let next = match live.starts_at {
        Some(start) if now < start => until(now, start),
        _ => until(now, live.ends_at),
    };
    let next = next.min(timing.idle);
    Step::Wait {
        requeue: Some(next),
    }
}

/// The status that describes what was observed: every condition's reason and message
/// say what is true now (not which step ran last).
pub fn desired_status(o: &Observed) -> AuctionStatus {
    let old = o.status.clone().unwrap_or_default();
    let now = o.now();
    let mut s = AuctionStatus {
        observed_generation: o.generation,
        conditions: old.conditions.clone(),
        ..AuctionStatus::default()
    };
    let gen_ = o.generation;
    let set = |s: &mut AuctionStatus,
               kind: ConditionType,
               ok: ConditionStatus,
               reason: Reason,
               message: String| {
        status::set_condition(&mut s.conditions, kind, ok, reason, &message, now, gen_);
    };
    use ConditionStatus::{False, True};
    use ConditionType::{Open, Ready, Restored, ResultRecorded};

    let Some(live) = &o.live else {
        if o.status_final() {
            // Redis lost the live state of a closed auction, or let it go after its
            // retention: keep the final report.
            return AuctionStatus {
                observed_generation: o.generation,
                ..old
            };
        }
        match &o.settings {
            Err(e) => {
                s.phase = Some(Phase::Failed);
                set(
                    &mut s,
                    Ready,
                    False,
                    Reason::InvalidSpec,
                    invalid_message(e),
                );
            }
            Ok(settings) if o.ended_before_provisioning() => {
                s.phase = Some(Phase::Failed);
                set(
                    &mut s,
                    Ready,
                    False,
                    Reason::AlreadyEnded,
                    format!(
                        "endsAt {} had already passed when the operator first saw the auction \
                         ({}), so it was never opened; set endsAt (and startsAt) in the future \
                         to run it",
                        gavel_crds::format_time(settings.ends_at),
                        gavel_crds::format_time(now)
                    ),
                );
            }
            Ok(_) if o.durable.is_none() && o.status_live() => {
                s.phase = old.phase;
                set(
                    &mut s,
                    Ready,
                    False,
                    Reason::Unavailable,
                    "Redis lost the live state; waiting for PostgreSQL to restore it from its record".into(),
                );
            }
            Ok(_) => {
                s.phase = Some(Phase::Pending);
                set(
                    &mut s,
                    Ready,
                    False,
                    Reason::Provisioning,
                    "provisioning the auction in Redis and PostgreSQL".into(),
                );
            }
        }
        return s;
    };
    if let Some(message) = &o.restored {
        set(
            &mut s,
            Restored,
            True,
            Reason::RestoredFromPostgres,
            message.clone(),
        );
    }

    s.current_price = live.price;
    s.bid_count = Some(live.bid_count);
    s.leader = live.leader_name.clone();
    s.effective_ends_at = Some(gavel_crds::format_time(live.ends_at));
    s.reserve_met = Some(live.reserve_met);

    let result = live.result.as_ref();
    let ended = |r: &AuctionResult| {
        format!(
            "{} at {}",
            if r.cancelled { "cancelled" } else { "closed" },
            gavel_crds::format_time(r.closed_at)
        )
    };
    match (&o.settings, &o.refused) {
        (Err(e), _) => set(&mut s, Ready, False, Reason::InvalidSpec, {
            let running = match result {
                Some(r) => format!("the auction has ended ({}); its result stands", ended(r)),
                None => "the auction keeps running with its last valid settings".into(),
            };
            format!("{}; {running}", invalid_message(e))
        }),
        (Ok(_), Some(refusal)) => set(&mut s, Ready, False, Reason::PricingFrozen, refusal.clone()),
        (Ok(_), None) if o.needs_provision() => {
            // Keep a refusal of this very generation until the spec changes again.
            if !kept_refusal(&old, o.generation) {
                set(
                    &mut s,
                    Ready,
                    False,
                    Reason::Provisioning,
                    format!(
                        "applying generation {} of the spec",
                        o.generation.unwrap_or_default()
                    ),
                )
            }
        }
        (Ok(_), None) if o.store_error.is_some() => {
            // Not observed until PostgreSQL has the settings too: retried next time.
            s.observed_generation = old.observed_generation;
            set(
                &mut s,
                Ready,
                False,
                Reason::Unavailable,
                format!(
                    "provisioned in Redis but not in PostgreSQL ({}); retrying",
                    o.store_error.as_deref().unwrap_or_default()
                ),
            )
        }
        (Ok(_), None) => match result {
            Some(r) if o.recorded => {
                let redis = if o.removed {
                    "its live state has left Redis (retention passed); PostgreSQL serves it"
                } else {
                    "its live state stays in Redis for its retention, then PostgreSQL serves it"
                };
                set(
                    &mut s,
                    Ready,
                    True,
                    Reason::Completed,
                    format!("{}; result recorded in PostgreSQL; {redis}", ended(r)),
                )
            }
            _ if o.provisioned || result.is_some() || !kept_refusal(&old, o.generation) => set(
                &mut s,
                Ready,
                True,
                Reason::Provisioned,
                "provisioned in Redis and PostgreSQL".into(),
            ),
            _ => {}
        },
    }

    match result {
        Some(result) => {
            let phase = if result.cancelled {
                Phase::Cancelled
            } else {
                Phase::Closed
            };
            set(
                &mut s,
                Open,
                False,
                if result.cancelled {
                    Reason::Cancelled
                } else {
                    Reason::Ended
                },
                ended(result),
            );
            s.current_price = result.final_price;
            s.bid_count = Some(result.bid_count);
            s.reserve_met = Some(result.reserve_met);
            if o.recorded {
                s.phase = Some(phase);
                s.winner = result.winner_name.clone();
                s.winner_id = result.winner.clone();
                s.final_price = result.final_price;
                s.closed_at = Some(gavel_crds::format_time(result.closed_at));
                s.leader = None;
                set(
                    &mut s,
                    ResultRecorded,
                    True,
                    Reason::Recorded,
                    "every accepted bid and the result are in PostgreSQL".into(),
                );
            } else {
                s.phase = old
                    .phase
                    .filter(|p| matches!(p, Phase::Scheduled | Phase::Open))
                    .or(Some(Phase::Open));
                let waiting = match o.unflushed {
                    Some(n) if n > 0 => {
                        format!("waiting for {n} accepted events to reach PostgreSQL")
                    }
                    _ => "recording the result in PostgreSQL".into(),
                };
                set(&mut s, ResultRecorded, False, Reason::Flushing, waiting);
            }
        }
        None => {
            let scheduled = live.starts_at.is_some_and(|start| now < start);
            if scheduled {
                s.phase = Some(Phase::Scheduled);
                set(
                    &mut s,
                    Open,
                    False,
                    Reason::NotStarted,
                    format!(
                        "bidding opens at {}",
                        gavel_crds::format_time(live.starts_at.unwrap_or_default())
                    ),
                );
            } else if now >= live.ends_at {
                s.phase = Some(Phase::Open);
                set(
                    &mut s,
                    Open,
                    False,
                    Reason::Closing,
                    format!(
                        "ended at {}; closing",
                        gavel_crds::format_time(live.ends_at)
                    ),
                );
            } else {
                s.phase = Some(Phase::Open);
                let scheduled_end = o
                    .settings
                    .as_ref()
                    .ok()
                    .filter(|_| o.refused.is_none())
                    .map(|settings| settings.ends_at);
                let extended = match scheduled_end {
                    Some(end) if live.ends_at > end => format!(
                        " (extended by soft close from {})",
                        gavel_crds::format_time(end)
                    ),
                    _ => String::new(),
                };
                set(
                    &mut s,
                    Open,
                    True,
                    Reason::BiddingOpen,
                    format!(
                        "taking bids until {}{extended}",
                        gavel_crds::format_time(live.ends_at)
                    ),
                );
            }
        }
    }
    s
}

fn kept_refusal(old: &AuctionStatus, generation: Option<i64>) -> bool {
    old.observed_generation == generation
        && status::reason(&old.conditions, ConditionType::Ready) == Some(Reason::PricingFrozen)
}

fn invalid_message(e: &SpecError) -> String {
    format!("{e}; fix the manifest (the operator retries on every change)")
}

/// The message of a pricing refusal: what happened and what to do.
pub fn pricing_frozen_message() -> String {
    "startingPrice, reservePrice and increments cannot change once the auction has bids; \
     restore their previous values (the auction keeps running with them)"
        .into()
}

#[cfg(test)]
mod tests;
