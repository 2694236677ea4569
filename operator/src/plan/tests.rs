//! The decision table: every phase, start in the future or past, end passed while the
//! operator was down, soft-close extension, deletion, invalid spec, restart mid-close.

use super::*;
use crate::status::{ConditionType, Reason};
use gavel_crds::format_time;
use gavel_engine::{CloseMode, Increments};

const NOW: Millis = 1_800_000_000_000;
const SEC: Millis = 1_000;

fn settings() -> AuctionSettings {
    AuctionSettings {
        title: "Strat".into(),
        currency: "USD".into(),
        starting_price: 10_000,
        reserve_price: None,
        increments: Increments::flat(100).unwrap(),
        starts_at: Some(NOW + 60 * SEC),
        ends_at: NOW + 3_600 * SEC,
        soft_close: None,
        bid_limit: None,
    }
}

fn live(phase: LivePhase, starts_at: Option<Millis>, ends_at: Millis) -> Live {
    Live {
        phase,
        price: Some(12_000),
        leader_name: Some("Ann".into()),
        bid_count: 3,
        starts_at,
        ends_at,
        reserve_met: true,
        result: None,
        server_time: NOW,
        seq: 3,
        epoch: 1,
        halted: None,
    }
}

fn result(cancelled: bool) -> AuctionResult {
    AuctionResult {
        seq: 4,
        winner: (!cancelled).then(|| "ann-1".into()),
        winner_name: (!cancelled).then(|| "Ann".into()),
        final_price: Some(12_000),
        reserve_met: true,
        bid_count: 3,
        closed_at: NOW - SEC,
        cancelled,
    }
}

fn status(phase: Phase, generation: i64) -> AuctionStatus {
    AuctionStatus {
        phase: Some(phase),
        observed_generation: Some(generation),
        ..Default::default()
    }
}

fn recorded_status(phase: Phase) -> AuctionStatus {
    let mut s = status(phase, 1);
    status::set_condition(
        &mut s.conditions,
        ConditionType::ResultRecorded,
        true,
        Reason::Recorded,
        "",
        NOW,
        Some(1),
    );
    s
}

fn base() -> Observed {
    Observed {
        settings: Ok(settings()),
        cancel: false,
        generation: Some(1),
        status: None,
        deleting: false,
        live: None,
        refused: None,
        recorded: false,
        unflushed: None,
        provisioned: false,
        store_error: None,
        now: NOW,
        durable: Some(Durable {
            known: false,
            seq: 0,
        }),
        restored: None,
        retention: None,
        removed: false,
    }
}

fn wait(ms: u64) -> Step {
    Step::Wait {
        requeue: Some(Duration::from_millis(ms)),
    }
}

const FOREVER: Step = Step::Wait { requeue: None };

fn margin(ms: Millis) -> u64 {
    (ms + DEADLINE_MARGIN_MS) as u64
}

struct Case {
    name: &'static str,
    observed: Observed,
    step: Step,
    phase: Option<Phase>,
}

fn case(
    name: &'static str,
    change: impl FnOnce(&mut Observed),
    step: Step,
    phase: Option<Phase>,
) -> Case {
    let mut observed = base();
    change(&mut observed);
    Case {
        name,
        observed,
        step,
        phase,
    }
}

fn table() -> Vec<Case> {
    let t = Timing::default();
    let idle = t.idle.as_millis() as u64;
    let flush_retry = t.flush_retry.as_millis() as u64;
    let start = NOW + 60 * SEC;
    let end = NOW + 3_600 * SEC;
    vec![
        // --- Not provisioned yet.
        case(
            "new auction is provisioned",
            |_| {},
            Step::Provision,
            Some(Phase::Pending),
        ),
        case(
            "endsAt passed before it was ever provisioned: not opened, waits for a change",
            |o| o.now = NOW + 7_200 * SEC,
            FOREVER,
            Some(Phase::Failed),
        ),
        case(
            "endsAt passed before it was ever provisioned, PostgreSQL down: not opened either",
            |o| {
                o.now = NOW + 7_200 * SEC;
                o.durable = None;
            },
            FOREVER,
            Some(Phase::Failed),
        ),
        case(
            "endsAt passed while no operator ran, Redis lost it: restored (then closed with its winner)",
            |o| {
                o.now = NOW + 7_200 * SEC;
                o.status = Some(status(Phase::Open, 1));
                o.durable = Some(Durable {
                    known: true,
                    seq: 2,
                });
            },
            Step::Restore(RestoreMode::Missing),
            Some(Phase::Pending),
        ),
        case(
            "endsAt passed, provisioned before by its status (PostgreSQL has no row): provisioned, then closed",
            |o| {
                o.now = NOW + 7_200 * SEC;
                o.status = Some(status(Phase::Scheduled, 1));
            },
            Step::Provision,
            Some(Phase::Pending),
        ),
        case(
            "invalid spec waits for a change",
            |o| {
                o.settings = Err(SpecError {
                    field: "endsAt".into(),
                    message: "must be after startsAt".into(),
                })
            },
            FOREVER,
            Some(Phase::Failed),
        ),
        case(
            "closed auction whose Redis state is gone stays closed",
            |o| {
                o.status = Some(recorded_status(Phase::Closed));
                o.recorded = true;
            },
            FOREVER,
            Some(Phase::Closed),
        ),
        // --- Redis lost it (or holds a state that contradicts PostgreSQL).
        case(
            "open auction missing from Redis with bids in PostgreSQL is restored, never provisioned",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.durable = Some(Durable {
                    known: true,
                    seq: 7,
                });
            },
            Step::Restore(RestoreMode::Missing),
            Some(Phase::Pending),
        ),
        case(
            "provisioned auction missing from Redis without bids recorded is restored too (new epoch)",
            |o| {
                o.status = Some(status(Phase::Scheduled, 1));
                o.durable = Some(Durable {
                    known: true,
                    seq: 0,
                });
            },
            Step::Restore(RestoreMode::Missing),
            Some(Phase::Pending),
        ),
        case(
            "missing from Redis while PostgreSQL cannot tell: wait, never provision it as new",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.durable = None;
            },
            wait(RECORD_RETRY.as_millis() as u64),
            Some(Phase::Open),
        ),
        case(
            "never provisioned and PostgreSQL down: provision (Redis decides)",
            |o| o.durable = None,
            Step::Provision,
            Some(Phase::Pending),
        ),
        case(
            "halted by a conflict: the state of its epoch is replaced from PostgreSQL",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                let mut l = live(LivePhase::Open, None, end);
                l.halted = Some("seq 2 conflicts".into());
                l.epoch = 4;
                o.live = Some(l);
            },
            Step::Restore(RestoreMode::Replace { epoch: 4 }),
            Some(Phase::Open),
        ),
        case(
            "Redis behind PostgreSQL's record (a lagging replica): replaced",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.live = Some(live(LivePhase::Open, None, end));
                o.durable = Some(Durable {
                    known: true,
                    seq: 9,
                });
            },
            Step::Restore(RestoreMode::Replace { epoch: 1 }),
            Some(Phase::Open),
        ),
        case(
            "halted while being deleted: restored first, then deleted",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.deleting = true;
                let mut l = live(LivePhase::Open, None, end);
                l.halted = Some("conflict".into());
                o.live = Some(l);
            },
            Step::Restore(RestoreMode::Replace { epoch: 1 }),
            Some(Phase::Open),
        ),
        // --- Scheduled.
        case(
            "scheduled: sleep until the start",
            |o| {
                o.status = Some(status(Phase::Scheduled, 1));
                o.live = Some(live(LivePhase::Scheduled, Some(start), end));
            },
            wait(margin(60 * SEC)),
            Some(Phase::Scheduled),
        ),
        case(
            "scheduled far ahead: sleep at most the idle cap",
            |o| {
                o.status = Some(status(Phase::Scheduled, 1));
                o.live = Some(live(
                    LivePhase::Scheduled,
                    Some(NOW + 86_400 * SEC),
                    NOW + 90_000 * SEC,
                ));
            },
            wait(idle),
            Some(Phase::Scheduled),
        ),
        case(
            "spec changed while scheduled: provision again",
            |o| {
                o.generation = Some(2);
                o.status = Some(status(Phase::Scheduled, 1));
                o.live = Some(live(LivePhase::Scheduled, Some(start), end));
            },
            Step::Provision,
            Some(Phase::Scheduled),
        ),
        // --- Open.
        case(
            "start passed: open; changes wake it, else a slow look",
            |o| {
                o.status = Some(status(Phase::Scheduled, 1));
                o.live = Some(live(LivePhase::Open, Some(NOW - SEC), end));
            },
            wait(idle),
            Some(Phase::Open),
        ),
        case(
            "open without startsAt",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.live = Some(live(LivePhase::Open, None, end));
            },
            wait(idle),
            Some(Phase::Open),
        ),
        case(
            "open near the end: wake up at the effective end",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.live = Some(live(LivePhase::Open, None, NOW + 1_200));
            },
            wait(margin(1_200)),
            Some(Phase::Open),
        ),
        case(
            "soft close moved the end: wait for the new end",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                let mut l = live(LivePhase::Open, None, NOW + 2 * SEC);
                l.server_time = NOW; // woke at the old end NOW, the end moved 2s later
                o.live = Some(l);
            },
            wait(margin(2 * SEC)),
            Some(Phase::Open),
        ),
        case(
            "Redis time rules, not the local clock",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.now = NOW + 10 * SEC; // local clock ahead
                o.live = Some(live(LivePhase::Open, None, NOW + 300));
            },
            wait(margin(300)),
            Some(Phase::Open),
        ),
        case(
            "cancel requested while open",
            |o| {
                o.cancel = true;
                o.status = Some(status(Phase::Open, 1));
                o.live = Some(live(LivePhase::Open, None, end));
            },
            Step::Close(CloseMode::Cancel),
            Some(Phase::Open),
        ),
        case(
            "pricing refused after bids: keep running, report",
            |o| {
                o.generation = Some(2);
                o.refused = Some(pricing_frozen_message());
                o.status = Some(status(Phase::Open, 1));
                o.live = Some(live(LivePhase::Open, None, end));
            },
            wait(idle),
            Some(Phase::Open),
        ),
        case(
            "spec turned invalid while open: keep running on the last settings",
            |o| {
                o.generation = Some(2);
                o.settings = Err(SpecError {
                    field: "currency".into(),
                    message: "bad".into(),
                });
                o.status = Some(status(Phase::Open, 1));
                o.live = Some(live(LivePhase::Open, None, end));
            },
            wait(idle),
            Some(Phase::Open),
        ),
        // --- Closing.
        case(
            "effective end reached: close",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.live = Some(live(LivePhase::Closing, None, NOW));
            },
            Step::Close(CloseMode::AtEnd),
            Some(Phase::Open),
        ),
        case(
            "end passed while the operator was down: close at once",
            |o| {
                o.status = Some(status(Phase::Scheduled, 1));
                o.live = Some(live(
                    LivePhase::Closing,
                    Some(NOW - 7_200 * SEC),
                    NOW - 3_600 * SEC,
                ));
            },
            Step::Close(CloseMode::AtEnd),
            Some(Phase::Open),
        ),
        case(
            "restart mid-close: closed in Redis, not yet recorded",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            Step::Record(result(false)),
            Some(Phase::Open),
        ),
        case(
            "closed, last bids still flushing: retry shortly",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.unflushed = Some(2);
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            wait(flush_retry),
            Some(Phase::Open),
        ),
        case(
            "closed and recorded: report Closed, keep it in Redis for its retention",
            |o| {
                o.status = Some(status(Phase::Open, 1));
                o.recorded = true;
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            wait(idle),
            Some(Phase::Closed),
        ),
        case(
            "closed auctions are never provisioned again, even after a spec change",
            |o| {
                o.generation = Some(5);
                o.status = Some(recorded_status(Phase::Closed));
                o.recorded = true;
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            wait(idle),
            Some(Phase::Closed),
        ),
        case(
            "cancelled and recorded",
            |o| {
                o.cancel = true;
                o.recorded = true;
                let mut l = live(LivePhase::Cancelled, None, end);
                l.result = Some(result(true));
                o.live = Some(l);
            },
            wait(idle),
            Some(Phase::Cancelled),
        ),
        case(
            "closed, recorded and retention passed: its live state leaves Redis",
            |o| {
                o.status = Some(recorded_status(Phase::Closed));
                o.recorded = true;
                o.now = NOW + 3_600 * SEC;
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                l.server_time = NOW + 3_600 * SEC;
                o.live = Some(l);
            },
            Step::Remove,
            Some(Phase::Closed),
        ),
        case(
            "spec.retention 0s: leaves Redis as soon as recorded",
            |o| {
                o.status = Some(recorded_status(Phase::Closed));
                o.recorded = true;
                o.retention = Some(Duration::ZERO);
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            Step::Remove,
            Some(Phase::Closed),
        ),
        case(
            "spec.retention 10s: sleeps until then",
            |o| {
                o.status = Some(recorded_status(Phase::Closed));
                o.recorded = true;
                o.retention = Some(Duration::from_secs(10));
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            wait(margin(9 * SEC)),
            Some(Phase::Closed),
        ),
        // --- Deletion.
        case(
            "deleting an open auction: cancel it first",
            |o| {
                o.deleting = true;
                o.live = Some(live(LivePhase::Open, None, end));
            },
            Step::Close(CloseMode::Cancel),
            Some(Phase::Open),
        ),
        case(
            "deleting an ended auction not closed yet: close it with its winner",
            |o| {
                o.deleting = true;
                o.live = Some(live(LivePhase::Closing, None, NOW - SEC));
            },
            Step::Close(CloseMode::AtEnd),
            Some(Phase::Open),
        ),
        case(
            "deleting a closed auction: record, then remove",
            |o| {
                o.deleting = true;
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            Step::Record(result(false)),
            Some(Phase::Open),
        ),
        case(
            "deleting while the last bids flush: wait",
            |o| {
                o.deleting = true;
                o.unflushed = Some(1);
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            wait(flush_retry),
            Some(Phase::Open),
        ),
        case(
            "deleting a recorded auction: remove its Redis state",
            |o| {
                o.deleting = true;
                o.recorded = true;
                let mut l = live(LivePhase::Closed, None, NOW - SEC);
                l.result = Some(result(false));
                o.live = Some(l);
            },
            Step::Remove,
            Some(Phase::Closed),
        ),
        case(
            "deleting after removal (or never provisioned): release",
            |o| o.deleting = true,
            Step::Release,
            Some(Phase::Pending),
        ),
        case(
            "deleting an invalid auction: release",
            |o| {
                o.deleting = true;
                o.settings = Err(SpecError {
                    field: "title".into(),
                    message: "x".into(),
                });
            },
            Step::Release,
            Some(Phase::Failed),
        ),
    ]
}

#[test]
fn decision_table() {
    let timing = Timing::default();
    let mut failures = Vec::new();
    for c in table() {
        let step = plan(&c.observed, &timing);
        let phase = desired_status(&c.observed).phase;
        if step != c.step || phase != c.phase {
            failures.push(format!(
                "{}:\n  step  {:?} (expected {:?})\n  phase {:?} (expected {:?})",
                c.name, step, c.step, phase, c.phase
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_live_phase_is_covered() {
    let phases: Vec<LivePhase> = table()
        .iter()
        .filter_map(|c| c.observed.live.as_ref().map(|l| l.phase))
        .collect();
    for p in [
        LivePhase::Scheduled,
        LivePhase::Open,
        LivePhase::Closing,
        LivePhase::Closed,
        LivePhase::Cancelled,
    ] {
        assert!(phases.contains(&p), "{p:?} has no case");
    }
}

#[test]
fn a_provisioned_generation_is_not_provisioned_twice() {
    let mut o = base();
    o.live = Some(live(LivePhase::Scheduled, Some(NOW + SEC), NOW + 60 * SEC));
    assert_eq!(plan(&o, &Timing::default()), Step::Provision);
    o.provisioned = true;
    assert!(matches!(plan(&o, &Timing::default()), Step::Wait { .. }));
    let s = desired_status(&o);
    assert_eq!(s.observed_generation, Some(1));
    let ready = status::condition(&s.conditions, ConditionType::Ready).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Provisioned")
    );
}

#[test]
fn a_pricing_refusal_is_kept_until_the_spec_changes() {
    let mut o = base();
    o.generation = Some(2);
    o.refused = Some(pricing_frozen_message());
    o.status = Some(status(Phase::Open, 1));
    o.live = Some(live(LivePhase::Open, None, NOW + 60 * SEC));
    let refused = desired_status(&o);
    let ready = status::condition(&refused.conditions, ConditionType::Ready).unwrap();
    assert_eq!(ready.reason, "PricingFrozen");
    assert!(ready.message.contains("restore"));
    assert_eq!(refused.observed_generation, Some(2));

    // The next reconcile of the same generation neither retries nor forgets the refusal.
    let mut next = base();
    next.generation = Some(2);
    next.status = Some(refused.clone());
    next.live = o.live.clone();
    assert!(matches!(plan(&next, &Timing::default()), Step::Wait { .. }));
    let kept = desired_status(&next);
    assert_eq!(
        status::condition(&kept.conditions, ConditionType::Ready)
            .unwrap()
            .reason,
        "PricingFrozen"
    );
    // A new generation is tried again.
    next.generation = Some(3);
    assert_eq!(plan(&next, &Timing::default()), Step::Provision);
}

#[test]
fn status_reports_live_values_and_the_result() {
    let mut o = base();
    o.live = Some(live(LivePhase::Open, None, NOW + 90 * SEC));
    let s = desired_status(&o);
    assert_eq!(s.current_price, Some(12_000));
    assert_eq!(s.bid_count, Some(3));
    assert_eq!(s.leader.as_deref(), Some("Ann"));
    assert_eq!(s.effective_ends_at, Some(format_time(NOW + 90 * SEC)));
    let open = status::condition(&s.conditions, ConditionType::Open).unwrap();
    assert_eq!(
        (open.status.as_str(), open.reason.as_str()),
        ("True", "BiddingOpen")
    );

    let mut l = live(LivePhase::Closed, None, NOW - SEC);
    l.result = Some(result(false));
    o.live = Some(l);
    o.recorded = true;
    let s = desired_status(&o);
    assert_eq!(s.phase, Some(Phase::Closed));
    assert_eq!(s.winner.as_deref(), Some("Ann"));
    assert_eq!(s.winner_id.as_deref(), Some("ann-1"));
    assert_eq!(s.final_price, Some(12_000));
    assert_eq!(s.reserve_met, Some(true));
    assert_eq!(s.closed_at, Some(format_time(NOW - SEC)));
    assert_eq!(s.leader, None);
    let rec = status::condition(&s.conditions, ConditionType::ResultRecorded).unwrap();
    assert_eq!(rec.status, "True");
}

#[test]
fn invalid_spec_message_tells_what_to_fix() {
    let mut o = base();
    o.settings = Err(SpecError {
        field: "endsAt".into(),
        message: "must be after startsAt".into(),
    });
    let s = desired_status(&o);
    let ready = status::condition(&s.conditions, ConditionType::Ready).unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready
            .message
            .starts_with("spec.endsAt: must be after startsAt")
    );
    assert!(ready.message.contains("fix the manifest"));
    let notes = status::events(None, &s, "USD");
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].severity, status::Severity::Warning);
    assert_eq!(notes[0].reason, status::EventReason::InvalidSpec);
}

#[test]
fn postgres_unreachable_at_provisioning_does_not_stop_the_lifecycle() {
    let mut o = base();
    o.status = Some(status(Phase::Pending, 0));
    o.live = Some(live(LivePhase::Closing, None, NOW));
    o.provisioned = true;
    o.store_error = Some("postgres: connection refused".into());
    // The close is not held up by PostgreSQL.
    assert_eq!(plan(&o, &Timing::default()), Step::Close(CloseMode::AtEnd));
    let s = desired_status(&o);
    assert_eq!(s.observed_generation, Some(0), "must be provisioned again");
    let ready = status::condition(&s.conditions, ConditionType::Ready).unwrap();
    assert_eq!(ready.reason, "Unavailable");
    assert!(ready.message.contains("connection refused"));
}

/// (type, status, reason) of every condition, sorted by type.
fn conditions(s: &AuctionStatus) -> Vec<(String, String, String)> {
    let mut c: Vec<_> = s
        .conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
        .collect();
    c.sort();
    c
}

fn message(s: &AuctionStatus, kind: ConditionType) -> String {
    status::condition(&s.conditions, kind)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

fn triple(t: &str, s: &str, r: &str) -> (String, String, String) {
    (t.into(), s.into(), r.into())
}

/// #18 part 5: each condition's reason and message describe the auction as it is now,
/// through its whole life: provisioning, scheduled, open, extended, closing, flushing,
/// closed, out of Redis; and a cancel (a new generation) never stays `Provisioning`.
#[test]
fn conditions_describe_the_current_state_through_the_whole_life() {
    let end = NOW + 60 * SEC;
    // Each step starts from the status the previous one wrote.
    let mut o = base();
    let s = desired_status(&o);
    assert_eq!(conditions(&s), [triple("Ready", "False", "Provisioning")]);

    o.status = Some(s);
    o.provisioned = true;
    o.live = Some(live(LivePhase::Scheduled, Some(NOW + 10 * SEC), end));
    let s = desired_status(&o);
    assert_eq!(
        conditions(&s),
        [
            triple("Open", "False", "NotStarted"),
            triple("Ready", "True", "Provisioned")
        ]
    );
    assert_eq!(
        message(&s, ConditionType::Open),
        format!("bidding opens at {}", format_time(NOW + 10 * SEC))
    );

    o.status = Some(s);
    o.provisioned = false;
    let mut opened = live(LivePhase::Open, Some(NOW - SEC), settings().ends_at);
    opened.server_time = NOW;
    o.live = Some(opened.clone());
    let s = desired_status(&o);
    assert_eq!(
        conditions(&s),
        [
            triple("Open", "True", "BiddingOpen"),
            triple("Ready", "True", "Provisioned")
        ]
    );
    assert_eq!(
        message(&s, ConditionType::Open),
        format!("taking bids until {}", format_time(settings().ends_at))
    );

    // A soft-close extension: the effective end and where it came from.
    o.status = Some(s);
    let mut extended = opened.clone();
    extended.ends_at = settings().ends_at + 90 * SEC;
    o.live = Some(extended.clone());
    let s = desired_status(&o);
    assert_eq!(
        message(&s, ConditionType::Open),
        format!(
            "taking bids until {} (extended by soft close from {})",
            format_time(settings().ends_at + 90 * SEC),
            format_time(settings().ends_at)
        )
    );

    // Past the end, before the close.
    o.status = Some(s);
    let mut closing = extended.clone();
    closing.phase = LivePhase::Closing;
    closing.server_time = closing.ends_at + 1;
    o.live = Some(closing.clone());
    let s = desired_status(&o);
    assert_eq!(
        conditions(&s),
        [
            triple("Open", "False", "Closing"),
            triple("Ready", "True", "Provisioned")
        ]
    );

    // Closed in Redis, the last bids on their way to PostgreSQL.
    o.status = Some(s);
    let mut closed = closing.clone();
    closed.phase = LivePhase::Closed;
    closed.result = Some(result(false));
    o.live = Some(closed.clone());
    o.unflushed = Some(2);
    let s = desired_status(&o);
    assert_eq!(s.phase, Some(Phase::Open));
    assert_eq!(
        conditions(&s),
        [
            triple("Open", "False", "Ended"),
            triple("Ready", "True", "Provisioned"),
            triple("ResultRecorded", "False", "Flushing")
        ]
    );
    assert!(message(&s, ConditionType::ResultRecorded).contains("waiting for 2 accepted events"));

    // Recorded.
    o.status = Some(s);
    o.unflushed = Some(0);
    o.recorded = true;
    let s = desired_status(&o);
    assert_eq!(s.phase, Some(Phase::Closed));
    assert_eq!(
        conditions(&s),
        [
            triple("Open", "False", "Ended"),
            triple("Ready", "True", "Completed"),
            triple("ResultRecorded", "True", "Recorded")
        ]
    );
    let closed_at = format_time(result(false).closed_at);
    assert_eq!(
        message(&s, ConditionType::Open),
        format!("closed at {closed_at}")
    );
    assert!(
        message(&s, ConditionType::Ready).starts_with(&format!(
            "closed at {closed_at}; result recorded in PostgreSQL; its live state stays in Redis"
        )),
        "{}",
        message(&s, ConditionType::Ready)
    );

    // Its retention passed: it left Redis, and the status says so from then on.
    o.status = Some(s);
    o.removed = true;
    let s = desired_status(&o);
    assert!(message(&s, ConditionType::Ready).contains("has left Redis"));
    o.status = Some(s.clone());
    o.removed = false;
    o.live = None;
    assert_eq!(plan(&o, &Timing::default()), FOREVER);
    assert_eq!(desired_status(&o).conditions, s.conditions);
}

#[test]
fn a_cancel_reports_cancelled_not_the_new_generation_being_applied() {
    // `cancel: true` is a spec change: generation 2 while the status observed 1.
    let mut o = base();
    o.generation = Some(2);
    o.cancel = true;
    let mut s = status(Phase::Open, 1);
    status::set_condition(
        &mut s.conditions,
        ConditionType::Ready,
        true,
        Reason::Provisioned,
        "provisioned in Redis and PostgreSQL",
        NOW,
        Some(1),
    );
    o.status = Some(s);
    o.live = Some(live(LivePhase::Open, None, NOW + 60 * SEC));
    assert_eq!(plan(&o, &Timing::default()), Step::Close(CloseMode::Cancel));

    // One reconcile closes, records and writes the status: the status it started from
    // (generation 1) is what the plan sees throughout.
    let mut l = live(LivePhase::Cancelled, None, NOW + 60 * SEC);
    l.result = Some(result(true));
    o.live = Some(l);
    assert_eq!(plan(&o, &Timing::default()), Step::Record(result(true)));
    o.recorded = true;
    assert!(matches!(plan(&o, &Timing::default()), Step::Wait { .. }));
    let s = desired_status(&o);
    assert_eq!(s.phase, Some(Phase::Cancelled));
    assert_eq!(s.observed_generation, Some(2));
    assert_eq!(
        conditions(&s),
        [
            triple("Open", "False", "Cancelled"),
            triple("Ready", "True", "Completed"),
            triple("ResultRecorded", "True", "Recorded")
        ]
    );
    assert!(message(&s, ConditionType::Ready).starts_with("cancelled at "));
    assert!(message(&s, ConditionType::Open).starts_with("cancelled at "));

    // The next reconcile (same generation) keeps saying so.
    o.status = Some(s.clone());
    assert_eq!(conditions(&desired_status(&o)), conditions(&s));
}

#[test]
fn a_spec_problem_after_the_close_does_not_claim_the_auction_still_runs() {
    let mut o = base();
    o.recorded = true;
    let mut l = live(LivePhase::Closed, None, NOW - SEC);
    l.result = Some(result(false));
    o.live = Some(l);
    o.generation = Some(3);
    o.settings = Err(SpecError {
        field: "currency".into(),
        message: "bad".into(),
    });
    let s = desired_status(&o);
    let ready = message(&s, ConditionType::Ready);
    assert!(ready.contains("the auction has ended"), "{ready}");
    assert!(!ready.contains("keeps running"), "{ready}");

    // A pricing refusal kept while open gives way once the auction has closed.
    let mut o = base();
    o.generation = Some(2);
    let mut refused = status(Phase::Open, 2);
    status::set_condition(
        &mut refused.conditions,
        ConditionType::Ready,
        false,
        Reason::PricingFrozen,
        "frozen",
        NOW,
        Some(2),
    );
    o.status = Some(refused);
    o.recorded = true;
    let mut l = live(LivePhase::Closed, None, NOW - SEC);
    l.result = Some(result(false));
    o.live = Some(l);
    let s = desired_status(&o);
    assert_eq!(
        status::reason(&s.conditions, ConditionType::Ready),
        Some(Reason::Completed)
    );
}

#[test]
fn an_auction_whose_end_passed_before_it_opened_says_so() {
    let mut o = base();
    o.now = NOW + 7_200 * SEC;
    let s = desired_status(&o);
    assert_eq!(s.phase, Some(Phase::Failed));
    assert_eq!(conditions(&s), [triple("Ready", "False", "AlreadyEnded")]);
    let m = message(&s, ConditionType::Ready);
    assert!(
        m.starts_with(&format!(
            "endsAt {} had already passed when the operator first saw the auction",
            format_time(settings().ends_at)
        )) && m.contains("set endsAt (and startsAt) in the future"),
        "{m}"
    );
    let notes = status::events(None, &s, "USD");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].severity, status::Severity::Warning);
    assert_eq!(notes[0].reason, status::EventReason::AlreadyEnded);
    // Moving endsAt into the future (a new generation) provisions it.
    o.status = Some(s);
    o.generation = Some(2);
    let mut later = settings();
    later.starts_at = None;
    later.ends_at = o.now + 60 * SEC;
    o.settings = Ok(later);
    assert_eq!(plan(&o, &Timing::default()), Step::Provision);
}
