//! Status conditions and the events that status transitions produce (both pure).
//!
//! Conditions: `Ready` (provisioned and managed, or why not: `InvalidSpec`,
//! `PricingFrozen`, `Provisioning`, `Unavailable`), `Open` (taking bids: `BiddingOpen`,
//! `NotStarted`, `Ended`, `Cancelled`), `ResultRecorded` (`Recorded`, `Flushing`) and,
//! once Redis lost the live state and it was rebuilt from PostgreSQL, `Restored`.
//! Events are emitted on a phase change only, so a status refresh never repeats them.

use gavel_crds::{AuctionStatus, Phase};
use gavel_engine::Millis;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Provisioned and managed by the operator.
pub const CONDITION_READY: &str = "Ready";
/// Taking bids.
pub const CONDITION_OPEN: &str = "Open";
/// The final result and every accepted bid are in PostgreSQL.
pub const CONDITION_RECORDED: &str = "ResultRecorded";
/// The live state was rebuilt from PostgreSQL after Redis lost it (the message says when,
/// at which seq and epoch); absent when it never happened.
pub const CONDITION_RESTORED: &str = "Restored";

/// The condition of type `kind`, if present.
pub fn condition<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

/// Sets a condition; `lastTransitionTime` moves only when its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    now: Millis,
    generation: Option<i64>,
) {
    let status = if ok { "True" } else { "False" };
    let time = Time(Timestamp::from_millisecond(now).unwrap_or(Timestamp::UNIX_EPOCH));
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = time;
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: time,
        }),
    }
}

/// The status after a transient failure (Redis or PostgreSQL unreachable): the last
/// status with `Ready=False`, reason `Unavailable`.
pub fn unavailable(
    old: Option<&AuctionStatus>,
    message: &str,
    now: Millis,
    generation: Option<i64>,
) -> AuctionStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.phase = s.phase.or(Some(Phase::Pending));
    set_condition(
        &mut s.conditions,
        CONDITION_READY,
        false,
        "Unavailable",
        &format!("{message}; retrying"),
        now,
        generation,
    );
    s
}

/// Whether two statuses differ in more than condition timestamps (so a write is due).
pub fn differs(a: Option<&AuctionStatus>, b: &AuctionStatus) -> bool {
    let strip = |s: &AuctionStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
        }
        s
    };
    a.is_none_or(|a| strip(a) != strip(b))
}

/// Severity of a [`Note`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something happened as expected.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

/// An event to publish about an auction (a Kubernetes Event, or a log line in
/// standalone mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub severity: Severity,
    /// Short PascalCase reason (`Opened`, `Closed`, …).
    pub reason: String,
    /// What was done (`Provision`, `Open`, `Close`, `Validate`, `Remove`).
    pub action: String,
    /// Human-readable detail.
    pub message: String,
}

impl Note {
    fn new(severity: Severity, reason: &str, action: &str, message: String) -> Self {
        Self {
            severity,
            reason: reason.into(),
            action: action.into(),
            message,
        }
    }
}

/// The events of the transition from `old` to `new`: one per phase change, plus a warning
/// when the Ready condition turns False for a spec problem.
pub fn events(old: Option<&AuctionStatus>, new: &AuctionStatus, currency: &str) -> Vec<Note> {
    let mut notes = Vec::new();
    let old_phase = old.and_then(|s| s.phase);
    let ready_reason = |s: Option<&AuctionStatus>| {
        s.and_then(|s| condition(&s.conditions, CONDITION_READY))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    if new.phase != old_phase {
        let ends = new.effective_ends_at.clone().unwrap_or_default();
        let note = match new.phase {
            Some(Phase::Scheduled) => Some(Note::new(
                Severity::Normal,
                "Scheduled",
                "Provision",
                open_message(new),
            )),
            Some(Phase::Open) => Some(Note::new(
                Severity::Normal,
                "Opened",
                "Open",
                format!("bidding is open until {ends}"),
            )),
            Some(Phase::Closed) => Some(Note::new(
                Severity::Normal,
                "Closed",
                "Close",
                closed_message(new, currency),
            )),
            Some(Phase::Cancelled) => Some(Note::new(
                Severity::Normal,
                "Cancelled",
                "Close",
                format!(
                    "cancelled with no winner after {} bids",
                    new.bid_count.unwrap_or(0)
                ),
            )),
            Some(Phase::Failed) => None, // reported below as InvalidSpec
            Some(Phase::Pending) | None => None,
        };
        notes.extend(note);
    }
    let restored = |s: Option<&AuctionStatus>| {
        s.and_then(|s| condition(&s.conditions, CONDITION_RESTORED))
            .map(|c| c.message.clone())
    };
    if let Some(message) = restored(Some(new))
        && restored(old).as_ref() != Some(&message)
    {
        notes.push(Note::new(Severity::Warning, "Restored", "Restore", message));
    }
    if let Some((status, reason)) = ready_reason(Some(new))
        && status == "False"
        && matches!(reason.as_str(), "InvalidSpec" | "PricingFrozen")
        && ready_reason(old) != Some((status, reason.clone()))
    {
        let message = condition(&new.conditions, CONDITION_READY)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        notes.push(Note::new(Severity::Warning, &reason, "Validate", message));
    }
    notes
}

fn open_message(s: &AuctionStatus) -> String {
    condition(&s.conditions, CONDITION_OPEN)
        .map(|c| c.message.clone())
        .unwrap_or_else(|| "provisioned; bidding opens at startsAt".into())
}

fn closed_message(s: &AuctionStatus, currency: &str) -> String {
    let bids = s.bid_count.unwrap_or(0);
    match (&s.winner, s.final_price) {
        (Some(winner), Some(price)) => {
            format!("won by {winner} at {price} {currency} (minor units) after {bids} bids")
        }
        (None, Some(price)) => format!(
            "no sale: the reserve was not met (final price {price} {currency} minor units, {bids} bids)"
        ),
        _ => "closed with no bids".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_flips() {
        let mut c = Vec::new();
        set_condition(
            &mut c,
            CONDITION_READY,
            false,
            "Provisioning",
            "x",
            1_000,
            Some(1),
        );
        set_condition(
            &mut c,
            CONDITION_READY,
            false,
            "Provisioning",
            "y",
            2_000,
            Some(1),
        );
        assert_eq!(c[0].last_transition_time.0.as_millisecond(), 1_000);
        assert_eq!(c[0].message, "y");
        set_condition(
            &mut c,
            CONDITION_READY,
            true,
            "Provisioned",
            "z",
            3_000,
            Some(2),
        );
        assert_eq!(c[0].last_transition_time.0.as_millisecond(), 3_000);
        assert_eq!(c[0].observed_generation, Some(2));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn events_follow_phase_changes_only() {
        let open = AuctionStatus {
            phase: Some(Phase::Open),
            ..Default::default()
        };
        assert_eq!(events(None, &open, "USD")[0].reason, "Opened");
        assert!(events(Some(&open), &open, "USD").is_empty());
        let closed = AuctionStatus {
            phase: Some(Phase::Closed),
            winner: Some("Ann".into()),
            final_price: Some(12_300),
            bid_count: Some(4),
            ..Default::default()
        };
        let notes = events(Some(&open), &closed, "USD");
        assert_eq!(notes.len(), 1);
        assert_eq!(notes[0].reason, "Closed");
        assert!(notes[0].message.contains("won by Ann at 12300 USD"));
        assert!(events(Some(&closed), &closed, "USD").is_empty());
    }

    #[test]
    fn unchanged_status_needs_no_write() {
        let mut a = AuctionStatus::default();
        set_condition(&mut a.conditions, CONDITION_READY, true, "P", "m", 1, None);
        let mut b = a.clone();
        b.conditions[0].last_transition_time = Time(Timestamp::from_millisecond(9).unwrap());
        assert!(!differs(Some(&a), &b));
        b.bid_count = Some(1);
        assert!(differs(Some(&a), &b));
        assert!(differs(None, &b));
    }
}
