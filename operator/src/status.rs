//! Status conditions and the events that status transitions produce (both pure).
//!
//! Conditions ([`ConditionType`]): `Ready` (provisioned and managed, or why not),
//! `Open` (taking bids), `ResultRecorded` and, once Redis lost the live state and it was
//! rebuilt from PostgreSQL, `Restored`; each reason ([`Reason`]) and message describes the
//! state as it is now, never an earlier step. Events are emitted on a phase change (and
//! when Ready turns False for a spec problem), so a status refresh never repeats them.
//! Reasons, Event reasons and actions are enums, written as text only in the status.

use gavel_crds::{AuctionStatus, Phase};
use gavel_engine::Millis;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Declares a string-valued enum: its variants, the text of each (as written in the
/// status, an Event or a metric label) and the way back from text.
macro_rules! named {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text, as written in the status, an Event or a metric label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                }
            }

            /// The value written as `text`, if any.
            pub fn parse(text: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == text)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

named! {
    /// The `type` of a condition.
    ConditionType {
        /// Provisioned and managed by the operator as its spec says, or why not.
        Ready,
        /// Taking bids.
        Open,
        /// The final result and every accepted bid are in PostgreSQL.
        ResultRecorded,
        /// The live state was rebuilt from PostgreSQL after Redis lost it (the message
        /// says when, at which seq and epoch); absent when it never happened.
        Restored,
    }
}

named! {
    /// The `reason` of a condition: one word for the state its message describes.
    Reason {
        /// Ready=True: in Redis and PostgreSQL, scheduled or open.
        Provisioned,
        /// Ready=True: closed or cancelled and its result recorded; nothing left to do
        /// but let its live state leave Redis after its retention.
        Completed,
        /// Ready=False: being provisioned, or a new generation being applied.
        Provisioning,
        /// Ready=False: the spec cannot run (the message names the field).
        InvalidSpec,
        /// Ready=False (standalone): the file does not parse.
        InvalidManifest,
        /// Ready=False: pricing changed after the first bid; the old prices stay.
        PricingFrozen,
        /// Ready=False: `endsAt` had passed before the auction was first provisioned; it
        /// was never opened.
        AlreadyEnded,
        /// Ready=False: Redis or PostgreSQL unreachable; retried with backoff. Open=Unknown
        /// while Redis cannot be reached.
        Unavailable,
        /// Open=True: taking bids.
        BiddingOpen,
        /// Open=False: before `startsAt`.
        NotStarted,
        /// Open=False: the effective end passed; the close is under way.
        Closing,
        /// Open=False: closed at its end.
        Ended,
        /// Open=False: cancelled.
        Cancelled,
        /// ResultRecorded=True.
        Recorded,
        /// ResultRecorded=False: the last bids or the result are on their way to
        /// PostgreSQL.
        Flushing,
        /// Restored=True.
        RestoredFromPostgres,
    }
}

named! {
    /// The `status` of a condition.
    ConditionStatus {
        /// The condition holds.
        True,
        /// It does not.
        False,
        /// The operator cannot tell now.
        Unknown,
    }
}

impl From<bool> for ConditionStatus {
    fn from(ok: bool) -> Self {
        if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

/// The condition of type `kind`, if present.
pub fn condition(conditions: &[Condition], kind: ConditionType) -> Option<&Condition> {
    conditions.iter().find(|c| c.type_ == kind.as_str())
}

/// The reason of the condition of type `kind`, if present and known.
pub fn reason(conditions: &[Condition], kind: ConditionType) -> Option<Reason> {
    condition(conditions, kind).and_then(|c| Reason::parse(&c.reason))
}

/// Whether the condition of type `kind` is present and True.
pub fn is_true(conditions: &[Condition], kind: ConditionType) -> bool {
    condition(conditions, kind).is_some_and(|c| c.status == ConditionStatus::True.as_str())
}

/// Sets a condition; `lastTransitionTime` moves only when its status flips.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: ConditionType,
    status: impl Into<ConditionStatus>,
    reason: Reason,
    message: &str,
    now: Millis,
    generation: Option<i64>,
) {
    let status = status.into().as_str();
    let time = Time(Timestamp::from_millisecond(now).unwrap_or(Timestamp::UNIX_EPOCH));
    match conditions.iter_mut().find(|c| c.type_ == kind.as_str()) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = time;
            }
            c.status = status.into();
            c.reason = reason.as_str().into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: kind.as_str().into(),
            status: status.into(),
            reason: reason.as_str().into(),
            message: message.into(),
            observed_generation: generation,
            last_transition_time: time,
        }),
    }
}

/// A failed reconcile, as the status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What failed.
    pub message: String,
    /// Redis could not be reached (bids are refused meanwhile), rather than PostgreSQL.
    pub redis: bool,
    /// Failures in a row, this one included.
    pub attempt: u32,
    /// When the operator tries again.
    pub retry_in: std::time::Duration,
}

/// The status after a transient failure (Redis or PostgreSQL unreachable): the last
/// status with `Ready=False`, reason `Unavailable`, the attempt and when the next one is;
/// and `Open=Unknown` if the auction was open and Redis cannot be reached.
pub fn unavailable(
    old: Option<&AuctionStatus>,
    failure: &Failure,
    now: Millis,
    generation: Option<i64>,
) -> AuctionStatus {
    let mut s = old.cloned().unwrap_or_default();
    s.phase = s.phase.or(Some(Phase::Pending));
    set_condition(
        &mut s.conditions,
        ConditionType::Ready,
        false,
        Reason::Unavailable,
        &format!(
            "{}; failed {} time{} in a row, retrying in {}",
            failure.message,
            failure.attempt,
            if failure.attempt == 1 { "" } else { "s" },
            seconds(failure.retry_in)
        ),
        now,
        generation,
    );
    if failure.redis
        && condition(&s.conditions, ConditionType::Open)
            .is_some_and(|c| c.status == ConditionStatus::True.as_str())
    {
        set_condition(
            &mut s.conditions,
            ConditionType::Open,
            ConditionStatus::Unknown,
            Reason::Unavailable,
            "Redis cannot be reached: bids are refused until it answers",
            now,
            generation,
        );
    }
    s
}

/// A delay as a person reads it: `1.5s`, `12s`.
fn seconds(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 10_000 {
        format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
    } else {
        format!("{}s", ms / 1000)
    }
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

named! {
    /// The `reason` of an Event.
    EventReason {
        /// Provisioned; bidding opens at startsAt.
        Scheduled,
        /// Bidding opened.
        Opened,
        /// Closed with its result.
        Closed,
        /// Cancelled with no winner.
        Cancelled,
        /// Rebuilt from PostgreSQL.
        Restored,
        /// Deleted: live state removed, PostgreSQL records kept.
        Removed,
        /// The spec cannot run.
        InvalidSpec,
        /// A pricing change after the first bid was refused.
        PricingFrozen,
        /// `endsAt` had passed before the auction was first provisioned.
        AlreadyEnded,
    }
}

named! {
    /// The `action` of an Event: what the operator did.
    EventAction {
        /// Provisioned the auction.
        Provision,
        /// Opened bidding.
        Open,
        /// Closed or cancelled it.
        Close,
        /// Checked the spec.
        Validate,
        /// Rebuilt it from PostgreSQL.
        Restore,
        /// Removed its live state.
        Remove,
    }
}

/// An event to publish about an auction (a Kubernetes Event, or a log line in
/// standalone mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// Normal or Warning.
    pub severity: Severity,
    /// Why.
    pub reason: EventReason,
    /// What was done.
    pub action: EventAction,
    /// Human-readable detail.
    pub message: String,
}

impl Note {
    /// A note.
    pub fn new(
        severity: Severity,
        reason: EventReason,
        action: EventAction,
        message: String,
    ) -> Self {
        Self {
            severity,
            reason,
            action,
            message,
        }
    }
}

/// The events of the transition from `old` to `new`: one per phase change, plus a warning
/// when the Ready condition turns False for a spec problem.
pub fn events(old: Option<&AuctionStatus>, new: &AuctionStatus, currency: &str) -> Vec<Note> {
    let mut notes = Vec::new();
    let old_phase = old.and_then(|s| s.phase);
    if new.phase != old_phase {
        let ends = new.effective_ends_at.clone().unwrap_or_default();
        let note = match new.phase {
            Some(Phase::Scheduled) => Some(Note::new(
                Severity::Normal,
                EventReason::Scheduled,
                EventAction::Provision,
                open_message(new),
            )),
            Some(Phase::Open) => Some(Note::new(
                Severity::Normal,
                EventReason::Opened,
                EventAction::Open,
                format!("bidding is open until {ends}"),
            )),
            Some(Phase::Closed) => Some(Note::new(
                Severity::Normal,
                EventReason::Closed,
                EventAction::Close,
                closed_message(new, currency),
            )),
            Some(Phase::Cancelled) => Some(Note::new(
                Severity::Normal,
                EventReason::Cancelled,
                EventAction::Close,
                format!(
                    "cancelled with no winner after {} bids",
                    new.bid_count.unwrap_or(0)
                ),
            )),
            Some(Phase::Failed) => None, // reported below, from the Ready condition
            Some(Phase::Pending) | None => None,
        };
        notes.extend(note);
    }
    let restored = |s: Option<&AuctionStatus>| {
        s.and_then(|s| condition(&s.conditions, ConditionType::Restored))
            .map(|c| c.message.clone())
    };
    if let Some(message) = restored(Some(new))
        && restored(old).as_ref() != Some(&message)
    {
        notes.push(Note::new(
            Severity::Warning,
            EventReason::Restored,
            EventAction::Restore,
            message,
        ));
    }
    let ready = |s: Option<&AuctionStatus>| {
        s.and_then(|s| condition(&s.conditions, ConditionType::Ready))
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    if let Some((status, reason)) = ready(Some(new))
        && status == ConditionStatus::False.as_str()
        && ready(old) != Some((status, reason.clone()))
    {
        let warning = match Reason::parse(&reason) {
            Some(Reason::InvalidSpec) => Some(EventReason::InvalidSpec),
            Some(Reason::PricingFrozen) => Some(EventReason::PricingFrozen),
            Some(Reason::AlreadyEnded) => Some(EventReason::AlreadyEnded),
            _ => None,
        };
        if let Some(warning) = warning {
            let message = condition(&new.conditions, ConditionType::Ready)
                .map(|c| c.message.clone())
                .unwrap_or_default();
            notes.push(Note::new(
                Severity::Warning,
                warning,
                EventAction::Validate,
                message,
            ));
        }
    }
    notes
}

fn open_message(s: &AuctionStatus) -> String {
    condition(&s.conditions, ConditionType::Open)
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
        let ready = ConditionType::Ready;
        set_condition(
            &mut c,
            ready,
            false,
            Reason::Provisioning,
            "x",
            1_000,
            Some(1),
        );
        set_condition(
            &mut c,
            ready,
            false,
            Reason::Provisioning,
            "y",
            2_000,
            Some(1),
        );
        assert_eq!(c[0].last_transition_time.0.as_millisecond(), 1_000);
        assert_eq!(c[0].message, "y");
        set_condition(
            &mut c,
            ready,
            true,
            Reason::Provisioned,
            "z",
            3_000,
            Some(2),
        );
        assert_eq!(c[0].last_transition_time.0.as_millisecond(), 3_000);
        assert_eq!(c[0].observed_generation, Some(2));
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].status.as_str(), c[0].reason.as_str()),
            ("True", "Provisioned")
        );
        assert_eq!(reason(&c, ready), Some(Reason::Provisioned));
    }

    #[test]
    fn names_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::parse(r.as_str()), Some(*r));
        }
        for t in ConditionType::ALL {
            assert_eq!(ConditionType::parse(&t.to_string()), Some(*t));
        }
        assert_eq!(ConditionType::ResultRecorded.as_str(), "ResultRecorded");
        assert_eq!(Reason::parse("Nonsense"), None);
    }

    #[test]
    fn events_follow_phase_changes_only() {
        let open = AuctionStatus {
            phase: Some(Phase::Open),
            ..Default::default()
        };
        assert_eq!(events(None, &open, "USD")[0].reason, EventReason::Opened);
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
        assert_eq!(notes[0].reason, EventReason::Closed);
        assert!(notes[0].message.contains("won by Ann at 12300 USD"));
        assert!(events(Some(&closed), &closed, "USD").is_empty());
    }

    #[test]
    fn a_failure_says_which_attempt_and_when_the_next_is() {
        let mut open = AuctionStatus {
            phase: Some(Phase::Open),
            ..Default::default()
        };
        set_condition(
            &mut open.conditions,
            ConditionType::Open,
            true,
            Reason::BiddingOpen,
            "taking bids",
            1,
            Some(1),
        );
        let failure = Failure {
            message: "redis: connection refused".into(),
            redis: true,
            attempt: 3,
            retry_in: std::time::Duration::from_millis(2_400),
        };
        let s = unavailable(Some(&open), &failure, 2, Some(1));
        let ready = condition(&s.conditions, ConditionType::Ready).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "Unavailable")
        );
        assert_eq!(
            ready.message,
            "redis: connection refused; failed 3 times in a row, retrying in 2.4s"
        );
        let o = condition(&s.conditions, ConditionType::Open).unwrap();
        assert_eq!(
            (o.status.as_str(), o.reason.as_str()),
            ("Unknown", "Unavailable")
        );
        // PostgreSQL down: bidding goes on, the Open condition stays.
        let s = unavailable(
            Some(&open),
            &Failure {
                redis: false,
                ..failure
            },
            2,
            Some(1),
        );
        assert!(is_true(&s.conditions, ConditionType::Open));
        assert_eq!(s.phase, Some(Phase::Open));
    }

    #[test]
    fn unchanged_status_needs_no_write() {
        let mut a = AuctionStatus::default();
        set_condition(
            &mut a.conditions,
            ConditionType::Ready,
            true,
            Reason::Provisioned,
            "m",
            1,
            None,
        );
        let mut b = a.clone();
        b.conditions[0].last_transition_time = Time(Timestamp::from_millisecond(9).unwrap());
        assert!(!differs(Some(&a), &b));
        b.bid_count = Some(1);
        assert!(differs(Some(&a), &b));
        assert!(differs(None, &b));
    }
}
