//! Kubernetes I/O tests in the style of kube-rs's controller-rs: a mock API server (tower-test)
//! checks every request the reconciler sends (finalizer patch, status apply with the right
//! body, Events) while the engine side runs against real throw-away Redis and PostgreSQL.
//!
//! kube-fake-client was considered: its current release (0.3) is built on kube 4 and
//! k8s-openapi 0.28, incompatible with this workspace's kube 5, and it would not show the
//! exact requests anyway.

use std::sync::Arc;
use std::time::Duration;

use gavel_crds::{Auction, AuctionSpec, AuctionStatus, FINALIZER, IncrementTier, Phase};
use gavel_engine::flusher::{FlushMetrics, Flusher, FlusherConfig};
use gavel_engine::store::Store;
use gavel_engine::testing::{TestRedis, database_url, redis_url};
use gavel_engine::{AuctionId, BidRequest, Bidder, Engine};
use http::{Method, Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tower_test::mock::{self, Handle};

use super::*;
use crate::lifecycle::{Lifecycle, local_now};
use crate::plan::Timing;

struct Fixture {
    ctx: Arc<Context>,
    server: Handle<Request<Body>, Response<Body>>,
    engine: Engine,
    store: Store,
    _redis: Option<TestRedis>,
}

async fn fixture() -> Fixture {
    let (url, redis) = redis_url();
    let engine = Engine::connect(&url, 2).await.unwrap();
    let store = Store::connect_lazy(&database_url().await).unwrap();
    let flusher = Flusher::new(
        &engine,
        store.clone(),
        FlusherConfig::new("test-operator"),
        FlushMetrics::unregistered(),
    );
    let lifecycle = Lifecycle::new(
        engine.clone(),
        store.clone(),
        Arc::new(Mutex::new(flusher)),
        Timing::default(),
    );
    let (service, server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = Arc::new(Context::new(
        client,
        lifecycle,
        Arc::new(Metrics::new().unwrap()),
        "test-0",
    ));
    Fixture {
        ctx,
        server,
        engine,
        store,
        _redis: redis,
    }
}

fn auction(starts_in_ms: i64, ends_in_ms: i64) -> Auction {
    let now = local_now();
    let mut a = Auction::new(
        "strat",
        AuctionSpec {
            title: "1962 Fender Stratocaster".into(),
            currency: "USD".into(),
            starting_price: 10_000,
            reserve_price: None,
            increments: vec![IncrementTier { from: 0, step: 100 }],
            starts_at: Some(gavel_crds::format_time(now + starts_in_ms)),
            ends_at: gavel_crds::format_time(now + ends_in_ms),
            soft_close: None,
            bid_limit: None,
            cancel: None,
            retention: None,
            sink: None,
        },
    );
    a.metadata.namespace = Some("shop".into());
    a.metadata.generation = Some(1);
    a.metadata.uid = Some("uid-1".into());
    a
}

fn finalized(mut a: Auction) -> Auction {
    a.metadata.finalizers = Some(vec![FINALIZER.into()]);
    a
}

const BASE: &str = "/apis/gavel.dev/v1alpha1/namespaces/shop/auctions/strat";

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, value: &impl serde::Serialize) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(value).unwrap()))
            .unwrap(),
    );
}

/// Takes the next request, checks method and path, returns its JSON body and responder.
async fn expect(
    server: &mut Handle<Request<Body>, Response<Body>>,
    method: Method,
    path_prefix: &str,
) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(20), server.next_request())
        .await
        .unwrap_or_else(|_| panic!("no {method} {path_prefix} request"))
        .expect("client dropped");
    assert_eq!(request.method(), method, "{}", request.uri());
    let uri = request.uri().to_string();
    assert!(uri.starts_with(path_prefix), "{uri} is not {path_prefix}");
    (body_json(request).await, send)
}

async fn expect_event(server: &mut Handle<Request<Body>, Response<Body>>, reason: &str) -> Value {
    let (event, send) = expect(
        server,
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/shop/events",
    )
    .await;
    assert_eq!(event["reason"], reason, "{event}");
    assert_eq!(event["regarding"]["name"], "strat");
    assert_eq!(event["regarding"]["kind"], "Auction");
    assert_eq!(event["reportingController"], "gavel-operator");
    respond(send, &event);
    event
}

async fn expect_status(
    server: &mut Handle<Request<Body>, Response<Body>>,
    a: &Auction,
) -> AuctionStatus {
    let (patch, send) = expect(server, Method::PATCH, &format!("{BASE}/status?")).await;
    assert_eq!(patch["apiVersion"], "gavel.dev/v1alpha1");
    assert_eq!(patch["kind"], "Auction");
    let status: AuctionStatus = serde_json::from_value(patch["status"].clone()).unwrap();
    let mut updated = a.clone();
    updated.status = Some(status.clone());
    respond(send, &updated);
    status
}

async fn no_more_requests(server: &mut Handle<Request<Body>, Response<Body>>) {
    if let Ok(Some((request, _))) =
        tokio::time::timeout(Duration::from_millis(300), server.next_request()).await
    {
        panic!("unexpected request {} {}", request.method(), request.uri());
    }
}

fn condition(status: &AuctionStatus, kind: &str) -> (String, String, String) {
    let kind = crate::status::ConditionType::parse(kind).expect(kind);
    let c = crate::status::condition(&status.conditions, kind)
        .unwrap_or_else(|| panic!("no {kind} condition"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test]
async fn a_new_auction_first_gets_the_finalizer() {
    let mut f = fixture().await;
    let a = auction(60_000, 120_000);
    let ctx = f.ctx.clone();
    let task = tokio::spawn(reconcile(Arc::new(a.clone()), ctx));
    let (patch, send) = expect(&mut f.server, Method::PATCH, &format!("{BASE}?")).await;
    assert_eq!(
        patch,
        json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] }
        ])
    );
    respond(send, &finalized(a.clone()));
    let action = task.await.unwrap().unwrap();
    assert_eq!(action, Action::await_change());
    no_more_requests(&mut f.server).await;
    // Nothing is provisioned before the finalizer is in place.
    let id = AuctionId::new("shop", "strat").unwrap();
    assert!(f.engine.snapshot(&id, None).await.is_err());
}

#[tokio::test]
async fn a_scheduled_auction_is_provisioned_and_reported() {
    let mut f = fixture().await;
    let a = finalized(auction(60_000, 120_000));
    let task = tokio::spawn(reconcile(Arc::new(a.clone()), f.ctx.clone()));
    let status = expect_status(&mut f.server, &a).await;
    assert_eq!(status.phase, Some(Phase::Scheduled));
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.bid_count, Some(0));
    assert_eq!(
        condition(&status, "Ready"),
        (
            "True".into(),
            "Provisioned".into(),
            "provisioned in Redis and PostgreSQL".into()
        )
    );
    assert_eq!(condition(&status, "Open").1, "NotStarted");
    let event = expect_event(&mut f.server, "Scheduled").await;
    assert_eq!(event["type"], "Normal");
    let action = task.await.unwrap().unwrap();
    // Comes back at the start (about 60 s), not earlier than the status refresh bound.
    let requeue = format!("{action:?}");
    assert!(requeue.contains("requeue_after: Some("), "{requeue}");
    no_more_requests(&mut f.server).await;
    let id = AuctionId::new("shop", "strat").unwrap();
    assert_eq!(
        f.engine.snapshot(&id, None).await.unwrap().title,
        a.spec.title
    );

    // A second reconcile of the same object changes nothing: no request at all.
    let mut same = a.clone();
    same.status = Some(status);
    let action = reconcile(Arc::new(same), f.ctx.clone()).await.unwrap();
    assert!(format!("{action:?}").contains("requeue_after: Some("));
    no_more_requests(&mut f.server).await;
}

#[tokio::test]
async fn an_ended_auction_is_closed_recorded_reported_and_announced() {
    let mut f = fixture().await;
    let id = AuctionId::new("shop", "strat").unwrap();
    // Provisioned and bid on while open, then the operator comes back after the end.
    let mut a = finalized(auction(-5_000, 1_500));
    let settings = a.spec.to_settings().unwrap();
    f.engine.provision(&id, &settings).await.unwrap();
    f.store.upsert_auction(&id, &settings).await.unwrap();
    let ann = Bidder::new("ann-1", "Ann").unwrap();
    let bob = Bidder::new("bob-2", "Bob").unwrap();
    let bid = |amount| BidRequest {
        amount: Some(amount),
        max: None,
    };
    f.engine.place_bid(&id, &ann, bid(10_000)).await.unwrap();
    f.engine.place_bid(&id, &bob, bid(10_500)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    a.status = Some(AuctionStatus {
        phase: Some(Phase::Open),
        observed_generation: Some(1),
        ..AuctionStatus::default()
    });

    let task = tokio::spawn(reconcile(Arc::new(a.clone()), f.ctx.clone()));
    let status = expect_status(&mut f.server, &a).await;
    assert_eq!(status.phase, Some(Phase::Closed));
    assert_eq!(status.winner.as_deref(), Some("Bob"));
    assert_eq!(status.winner_id.as_deref(), Some("bob-2"));
    assert_eq!(status.final_price, Some(10_500));
    assert_eq!(status.reserve_met, Some(true));
    assert_eq!(status.bid_count, Some(2));
    assert!(status.closed_at.is_some());
    assert_eq!(condition(&status, "ResultRecorded").0, "True");
    assert_eq!(condition(&status, "Open").1, "Ended");
    let event = expect_event(&mut f.server, "Closed").await;
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("won by Bob at 10500 USD"),
        "{event}"
    );
    // Next: the end of its retention in Redis (1h), capped by the idle period.
    assert_eq!(
        task.await.unwrap().unwrap(),
        Action::requeue(Timing::default().idle)
    );
    no_more_requests(&mut f.server).await;

    // Every accepted bid and the result are in PostgreSQL.
    assert_eq!(f.store.bid_count(&id).await.unwrap(), 2);
    let recorded = f.store.result(&id).await.unwrap().expect("result recorded");
    assert_eq!(recorded.winner.as_deref(), Some("bob-2"));

    // Restarted operator, same object with the Closed status: no second close, no request.
    let mut closed = a.clone();
    closed.status = Some(status);
    reconcile(Arc::new(closed), f.ctx.clone()).await.unwrap();
    no_more_requests(&mut f.server).await;
    let closes = f
        .engine
        .events_since(&id, 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| matches!(e, gavel_engine::AuctionEvent::Closed(_)))
        .count();
    assert_eq!(closes, 1);
}

#[tokio::test]
async fn an_invalid_spec_fails_with_an_actionable_condition_and_a_warning() {
    let mut f = fixture().await;
    let mut a = finalized(auction(60_000, 120_000));
    a.spec.ends_at = a.spec.starts_at.clone().unwrap();
    let task = tokio::spawn(reconcile(Arc::new(a.clone()), f.ctx.clone()));
    let status = expect_status(&mut f.server, &a).await;
    assert_eq!(status.phase, Some(Phase::Failed));
    let (ok, reason, message) = condition(&status, "Ready");
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "InvalidSpec"));
    assert!(
        message.starts_with("spec.endsAt: must be after startsAt"),
        "{message}"
    );
    let event = expect_event(&mut f.server, "InvalidSpec").await;
    assert_eq!(event["type"], "Warning");
    // No crash loop: the reconcile succeeds and waits for a change of the object.
    assert_eq!(task.await.unwrap().unwrap(), Action::await_change());
    no_more_requests(&mut f.server).await;
}

#[tokio::test]
async fn deleting_removes_live_state_keeps_postgres_and_drops_the_finalizer() {
    let mut f = fixture().await;
    let id = AuctionId::new("shop", "strat").unwrap();
    let mut a = finalized(auction(-1_000, 60_000));
    let settings = a.spec.to_settings().unwrap();
    f.engine.provision(&id, &settings).await.unwrap();
    f.store.upsert_auction(&id, &settings).await.unwrap();
    let ann = Bidder::new("ann-1", "Ann").unwrap();
    f.engine
        .place_bid(
            &id,
            &ann,
            BidRequest {
                amount: Some(10_000),
                max: None,
            },
        )
        .await
        .unwrap();
    a.metadata.deletion_timestamp = Some(Time(Timestamp::now()));

    let task = tokio::spawn(reconcile(Arc::new(a.clone()), f.ctx.clone()));
    answer_list_by_name(&mut f.server, std::slice::from_ref(&a)).await;
    expect_event(&mut f.server, "Removed").await;
    let (patch, send) = expect(&mut f.server, Method::PATCH, &format!("{BASE}?")).await;
    assert_eq!(
        patch,
        json!([
            { "op": "test", "path": "/metadata/finalizers/0", "value": FINALIZER },
            { "op": "remove", "path": "/metadata/finalizers/0" }
        ])
    );
    let mut gone = a.clone();
    gone.metadata.finalizers = None;
    respond(send, &gone);
    task.await.unwrap().unwrap();
    no_more_requests(&mut f.server).await;

    assert!(matches!(
        f.engine.snapshot(&id, None).await,
        Err(gavel_engine::EngineError::UnknownAuction(_))
    ));
    // The open auction was cancelled, its bid flushed and the result kept in PostgreSQL.
    assert_eq!(f.store.bid_count(&id).await.unwrap(), 1);
    let result = f.store.result(&id).await.unwrap().expect("result kept");
    assert!(result.cancelled);
    assert_eq!(a.object_ref(&()).name.as_deref(), Some("strat"));
    assert_eq!(a.name_any(), "strat");
}

/// Answers the operator's list of the Auction by name (before a cleanup) with `items`.
async fn answer_list_by_name(
    server: &mut Handle<Request<Body>, Response<Body>>,
    items: &[Auction],
) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(20), server.next_request())
        .await
        .expect("no list request")
        .expect("client dropped");
    assert_eq!(request.method(), Method::GET);
    let uri = request.uri().to_string();
    assert!(
        uri.starts_with("/apis/gavel.dev/v1alpha1/namespaces/shop/auctions?")
            && uri.contains("fieldSelector=metadata.name%3Dstrat"),
        "{uri}"
    );
    respond(
        send,
        &json!({
            "apiVersion": "gavel.dev/v1alpha1",
            "kind": "AuctionList",
            "metadata": { "resourceVersion": "7" },
            "items": items,
        }),
    );
}

/// A reconcile of a copy older than the status this replica wrote (the watch cache lags
/// behind the write; a trigger such as the close in Redis arrived meanwhile) reads the
/// object again first: its transition's Event is not published twice (a `kubectl` test
/// saw `Cancelled` twice).
#[tokio::test]
async fn a_stale_copy_is_read_again_and_its_event_not_repeated() {
    let mut f = fixture().await;
    let a = finalized(auction(60_000, 120_000));
    let task = tokio::spawn(reconcile(Arc::new(a.clone()), f.ctx.clone()));
    let status = expect_status(&mut f.server, &a).await;
    expect_event(&mut f.server, "Scheduled").await;
    task.await.unwrap().unwrap();

    // The same copy again, without the status written above.
    let task = tokio::spawn(reconcile(Arc::new(a.clone()), f.ctx.clone()));
    let mut current = a.clone();
    current.status = Some(status);
    answer_list_by_name(&mut f.server, &[current]).await;
    task.await.unwrap().unwrap();
    no_more_requests(&mut f.server).await;
}

/// A cleanup on a stale copy of an Auction an earlier cleanup has already released (the
/// API server no longer has it): nothing is removed twice and no second Event is sent.
#[tokio::test]
async fn a_cleanup_of_an_already_released_auction_does_nothing() {
    let mut f = fixture().await;
    let id = AuctionId::new("shop", "strat").unwrap();
    let mut a = finalized(auction(-1_000, 60_000));
    let settings = a.spec.to_settings().unwrap();
    f.engine.provision(&id, &settings).await.unwrap();
    a.metadata.deletion_timestamp = Some(Time(Timestamp::now()));

    let task = tokio::spawn(reconcile(Arc::new(a.clone()), f.ctx.clone()));
    answer_list_by_name(&mut f.server, &[]).await;
    // Then only the finalizer helper's own patch, which the gone object refuses.
    let (_, send) = expect(&mut f.server, Method::PATCH, &format!("{BASE}?")).await;
    send.send_response(
        Response::builder()
            .status(404)
            .body(Body::from(
                json!({"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404})
                    .to_string()
                    .into_bytes(),
            ))
            .unwrap(),
    );
    let _ = task.await.unwrap();
    no_more_requests(&mut f.server).await;
    // Nothing was done to it: no Removed Event, its (stale) live state untouched.
    assert!(f.engine.snapshot(&id, None).await.is_ok());
}

/// The whole `Controller` (list, watch, scheduler, reconcile) against the mock API server:
/// an Auction that ends in a second is closed on time and its Closed status applied.
#[tokio::test]
async fn the_controller_closes_a_listed_auction_at_its_end() {
    let mut f = fixture().await;
    let id = AuctionId::new("shop", "strat").unwrap();
    let mut a = finalized(auction(-1_000, 1_200));
    a.metadata.resource_version = Some("7".into());
    let end = a.spec.to_settings().unwrap().ends_at;
    let list = json!({
        "apiVersion": "gavel.dev/v1alpha1", "kind": "AuctionList",
        "metadata": { "resourceVersion": "7" }, "items": [a],
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = tokio::spawn(run(f.ctx.clone(), async move {
        let _ = stop_rx.await;
    }));
    let mut held_watches = Vec::new();
    let mut current = a.clone();
    let mut phases = Vec::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !phases.contains(&Some(Phase::Closed)) {
        let next = tokio::time::timeout_at(deadline, f.server.next_request())
            .await
            .expect("the controller never applied a Closed status")
            .expect("client dropped");
        let (request, send) = next;
        let uri = request.uri().to_string();
        let method = request.method().clone();
        if method == Method::GET && uri.contains("watch=true") {
            held_watches.push(send); // a watch that stays open and quiet
        } else if method == Method::GET && uri.starts_with("/apis/gavel.dev/v1alpha1/auctions") {
            respond(send, &list);
        } else if method == Method::GET
            && uri.starts_with("/apis/gavel.dev/v1alpha1/namespaces/shop/auctions?")
        {
            // The quiet watch never brings our status writes: the operator reads the
            // object again by name before it reconciles a copy older than its own write.
            respond(
                send,
                &json!({
                    "apiVersion": "gavel.dev/v1alpha1", "kind": "AuctionList",
                    "metadata": { "resourceVersion": "8" }, "items": [current],
                }),
            );
        } else if method == Method::PATCH && uri.starts_with(&format!("{BASE}/status")) {
            let patch = body_json(request).await;
            let status: AuctionStatus = serde_json::from_value(patch["status"].clone()).unwrap();
            phases.push(status.phase);
            let mut updated = a.clone();
            updated.status = Some(status);
            respond(send, &updated);
            current = updated;
        } else if method == Method::POST && uri.contains("/events") {
            let event = body_json(request).await;
            events.push(event["reason"].as_str().unwrap_or_default().to_owned());
            respond(send, &event);
        } else {
            panic!("unexpected request {method} {uri}");
        }
    }
    let result = f.store.result(&id).await.unwrap().expect("recorded");
    let lateness = result.closed_at - end;
    assert!(
        (0..=1_000).contains(&lateness),
        "closed {lateness} ms after the end (tolerance 1000 ms)"
    );
    assert_eq!(phases.first(), Some(&Some(Phase::Open)), "{phases:?}");
    // The Closed event follows the Closed status.
    let next = tokio::time::timeout(Duration::from_secs(5), f.server.next_request())
        .await
        .expect("no Closed event")
        .expect("client dropped");
    let (request, send) = next;
    let event = body_json(request).await;
    events.push(event["reason"].as_str().unwrap_or_default().to_owned());
    respond(send, &event);
    assert_eq!(events, ["Opened", "Closed"]);
    let _ = stop_tx.send(());
    drop(held_watches);
    tokio::time::timeout(Duration::from_secs(10), controller)
        .await
        .expect("the controller did not stop")
        .unwrap();
}

/// #18 part 6: a failing Auction is retried with its own exponential backoff (announced
/// before it is used, so the status can say it), other Auctions are not affected, a
/// deletion waiting for its last bids is no failure, and the first success resets it.
#[tokio::test]
async fn failed_reconciles_back_off_per_auction() {
    let f = fixture().await;
    let a = Arc::new(finalized(auction(60_000, 120_000)));
    let failure = || Error::Kube(kube::Error::Service("connection refused".into()));
    let mut waits = Vec::new();
    for attempt in 1..=5 {
        let next = f.ctx.backoffs.peek("shop/strat");
        assert_eq!(next.attempt, attempt);
        let action = error_policy(a.clone(), &failure(), f.ctx.clone());
        assert_eq!(action, Action::requeue(next.wait), "attempt {attempt}");
        waits.push(next.wait);
    }
    let first = Timing::default().retry.first;
    for (i, w) in waits.iter().enumerate() {
        assert!(
            *w >= first * 2u32.pow(i as u32),
            "attempt {}: {waits:?}",
            i + 1
        );
        assert!(
            *w < first * 2u32.pow(i as u32 + 1),
            "attempt {}: {waits:?}",
            i + 1
        );
    }
    assert_eq!(f.ctx.backoffs.failing(), 1);
    assert_eq!(f.ctx.metrics.backing_off.get(), 1);
    assert_eq!(f.ctx.metrics.retry_delay.get_sample_count(), 5);

    // Another Auction starts from the first delay.
    assert_eq!(f.ctx.backoffs.peek("shop/other").attempt, 1);

    // Waiting for the last bids of a deletion is not a failure.
    let pending = error_policy(a.clone(), &Error::Pending("flushing".into()), f.ctx.clone());
    assert_eq!(pending, Action::requeue(Duration::from_millis(500)));
    assert_eq!(f.ctx.backoffs.peek("shop/strat").attempt, 6);

    f.ctx.backoffs.reset("shop/strat");
    assert_eq!(f.ctx.backoffs.peek("shop/strat").attempt, 1);
    assert_eq!(f.ctx.metrics.backing_off.get(), 0);
}
