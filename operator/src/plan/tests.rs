//! The decision table: every phase, start in the future or past, end passed while the
//! operator was down, soft-close extension, deletion, invalid spec, restart mid-close.

use super::*;
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
        CONDITION_RECORDED,
        true,
        "Recorded",
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
            "new auction whose end already passed is still provisioned (then closed)",
            |o| o.now = NOW + 7_200 * SEC,
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
    let ready = status::condition(&s.conditions, CONDITION_READY).unwrap();
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
    let ready = status::condition(&refused.conditions, CONDITION_READY).unwrap();
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
        status::condition(&kept.conditions, CONDITION_READY)
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
    let open = status::condition(&s.conditions, CONDITION_OPEN).unwrap();
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
    let rec = status::condition(&s.conditions, CONDITION_RECORDED).unwrap();
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
    let ready = status::condition(&s.conditions, CONDITION_READY).unwrap();
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
    assert_eq!(notes[0].reason, "InvalidSpec");
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
    let ready = status::condition(&s.conditions, CONDITION_READY).unwrap();
    assert_eq!(ready.reason, "Unavailable");
    assert!(ready.message.contains("connection refused"));
}
