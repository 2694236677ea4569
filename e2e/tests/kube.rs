//! The operator against a real Kubernetes API server (README § Testing against a real API
//! server).
//!
//! One control plane for the whole binary ([`ControlPlane`]: etcd and kube-apiserver of the
//! version `scripts/cluster/kube-build.sh` caches, on free loopback ports), with the Helm
//! chart rendered and applied to it. The real `gavel-operator` binary runs twice (two
//! replicas, one Lease) out of the cluster as the chart's operator ServiceAccount — a
//! TokenRequest token, the chart's RBAC and the Deployment's environment — beside Redis,
//! PostgreSQL and two bid-api processes. Auctions are applied and read with `kubectl`.
//!
//! Tests that stop operators or the API server hold the platform exclusively (a write
//! lock); the others share it (read locks) and use auctions of their own.

use std::future::Future;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gavel_e2e::kube::{ChartInstall, ControlPlane};
use gavel_e2e::platform::{binary_dir, build_platform_binaries, now_ms, unique_name};
use gavel_e2e::protocol::{Millis, format_rfc3339};
use gavel_e2e::{AuctionSpec, Auth, BidReply, LocalOptions, LocalPlatform, OperatorMode, WsClient};
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// Namespace of the chart (and of the operator's Lease).
const RELEASE_NS: &str = "gavel-system";
/// Namespace of the tests' auctions.
const NS: &str = "shop";
/// Wait for anything that should be immediate.
const T: Duration = Duration::from_secs(30);
/// Wait for what may take a Lease takeover (the chart's 15 s) and a retry.
const LONG: Duration = Duration::from_secs(60);

struct Shared {
    cp: ControlPlane,
    chart: ChartInstall,
    /// The platform's PostgreSQL and bid-api addresses (fixed: read without the lock, which
    /// a test already holds; tokio's RwLock is not reentrant while a writer waits).
    database_url: String,
    ws_urls: Vec<String>,
    /// When the API server was down or not ready yet (restart test): Unix ms from, to.
    outages: std::sync::Mutex<Vec<(Millis, Millis)>>,
    platform: RwLock<LocalPlatform>,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Result<Shared, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| {
        std::thread::spawn(|| start().map_err(|e| format!("{e:#}")))
            .join()
            .unwrap_or_else(|_| Err("starting it panicked".into()))
    });
    match started {
        Ok(s) => s,
        Err(e) => panic!(
            "cannot start the control plane and platform: {e}\n(the binaries: \
             scripts/cluster/kube-build.sh kube-apiserver etcd kubectl; helm: make tools)"
        ),
    }
}

fn start() -> anyhow::Result<Shared> {
    if std::env::var_os("GAVEL_E2E_SKIP_BUILD").is_none() {
        build_platform_binaries()?;
    }
    let work = gavel_engine::testing::temp_dir("kube");
    if std::env::var_os("GAVEL_E2E_KEEP_LOGS").is_none() {
        gavel_engine::testing::run_after_exit(&format!("sleep 5; rm -rf '{}'", work.display()));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let cp = ControlPlane::start(&work.join("k8s"))?;
        let chart = cp
            .install_chart(RELEASE_NS, &["operator.replicaCount=2"])
            .await?;
        cp.kubectl(&["create", "namespace", NS], None).await?;
        let mut opts = LocalOptions::new(binary_dir()?, work.clone());
        opts.rust_log = "info,kube=warn".into();
        opts.operator = OperatorMode::Kube {
            kubeconfig: chart.operator_kubeconfig.clone(),
            env: chart.operator_env.clone(),
            replicas: 2,
        };
        let local = LocalPlatform::start(opts).await?;
        Ok(Shared {
            cp,
            chart,
            database_url: local.database_url.clone(),
            ws_urls: local.ws_urls.clone(),
            outages: Default::default(),
            platform: RwLock::new(local),
        })
    })
}

fn cp() -> &'static ControlPlane {
    &shared().cp
}

/// Polls `probe` every 200 ms until it gives a value, for at most `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn apply(manifest: &Value) {
    cp().kubectl(&["apply", "-f", "-"], Some(manifest.to_string()))
        .await
        .unwrap_or_else(|e| panic!("kubectl apply: {e}"));
}

/// `kubectl get auction <name>`, or `None` once it is gone.
async fn auction(name: &str) -> Option<Value> {
    match cp().get_json(&["auctions.gavel.dev", name, "-n", NS]).await {
        Ok(v) => Some(v),
        Err(e) if e.to_string().contains("NotFound") => None,
        Err(e) => panic!("kubectl get auction {name}: {e}"),
    }
}

/// Waits until the auction's status phase is `phase`; the whole object.
async fn wait_phase(name: &str, phase: &str, timeout: Duration) -> Value {
    eventually(&format!("{name} to be {phase}"), timeout, || async {
        auction(name)
            .await
            .filter(|a| a["status"]["phase"] == phase)
    })
    .await
}

/// The reasons of the Events about object `uid`, in time order, with the replica that
/// reported each.
async fn events(uid: &str) -> Vec<(String, String)> {
    let list = cp()
        .get_json(&[
            "events.events.k8s.io",
            "-n",
            NS,
            "--field-selector",
            &format!("regarding.uid={uid}"),
        ])
        .await
        .expect("kubectl get events");
    let mut items: Vec<&Value> = list["items"].as_array().into_iter().flatten().collect();
    items.sort_by_key(|e| e["eventTime"].as_str().unwrap_or_default().to_owned());
    items
        .iter()
        .map(|e| {
            // A repeated Event is folded into one object with a series.
            assert!(e["series"].is_null(), "an Event repeated: {e}");
            (
                e["reason"].as_str().unwrap_or_default().to_owned(),
                e["reportingInstance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

fn reasons(events: &[(String, String)]) -> Vec<&str> {
    events.iter().map(|(r, _)| r.as_str()).collect()
}

/// The `results` rows of `<NS>/<name>`: (winner_id, final_price, cancelled).
async fn results(name: &str) -> Vec<(Option<String>, Option<i64>, bool)> {
    let pool = sqlx::PgPool::connect(&shared().database_url)
        .await
        .expect("PostgreSQL");
    let rows = sqlx::query_as(
        "SELECT winner_id, final_price, cancelled FROM results WHERE auction_id = $1",
    )
    .bind(format!("{NS}/{name}"))
    .fetch_all(&pool)
    .await
    .expect("results");
    pool.close().await;
    rows
}

/// An Auction manifest in [`NS`]: starting price 2000, step 100, ending at `ends_at`.
fn manifest(name: &str, ends_at: Millis) -> Value {
    let mut spec = AuctionSpec::new(&format!("Lot {name}"), 2000, 100, Duration::ZERO);
    spec.ends_at = ends_at;
    spec.ends_in = None;
    spec.manifest(NS, name)
}

async fn bidder(process: usize, name: &str, id: &str) -> WsClient {
    let mut c = WsClient::connect(&shared().ws_urls[process], &Auth::Dev(name.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"));
    c.subscribe(id, T).await.expect("snapshot");
    c
}

async fn bid(c: &mut WsClient, id: &str, amount: i64) {
    match c.bid(id, Some(amount), None, T).await {
        Ok(BidReply::Accepted(_)) => {}
        other => panic!("{} bid {amount} on {id}: {other:?}", c.label()),
    }
}

/// Sleeps until Unix time `at` (ms): the scenario acts at a moment of the auction's life.
async fn until(at: Millis) {
    let wait = at - now_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

fn ms(rfc3339: &Value) -> Millis {
    let text = rfc3339
        .as_str()
        .unwrap_or_else(|| panic!("not a time: {rfc3339}"));
    gavel_e2e::protocol::parse_rfc3339(text).unwrap_or_else(|e| panic!("{e}"))
}

/// The identity holding the operator's Lease.
async fn lease_holder() -> String {
    let lease = cp()
        .get_json(&["lease", "gavel-operator", "-n", RELEASE_NS])
        .await
        .expect("the operator's Lease");
    lease["spec"]["holderIdentity"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Starts again every operator replica that is not running (what the kubelet does for a
/// pod whose container exited).
async fn restart_stopped_operators(p: &mut LocalPlatform) {
    for name in ["operator-1", "operator-2"] {
        if !p.is_running(name) {
            p.restart(name)
                .await
                .unwrap_or_else(|e| panic!("restarting {name}: {e}"));
        }
    }
}

/// `kubectl auth can-i` as the operator's ServiceAccount.
async fn operator_can(args: &[&str]) -> bool {
    let chart = &shared().chart;
    let who = format!(
        "--as=system:serviceaccount:{}:{}",
        chart.namespace, chart.service_account
    );
    let mut all = vec!["auth", "can-i"];
    all.extend_from_slice(args);
    all.push(&who);
    let out = tokio::process::Command::new(cp().kubectl_program())
        .arg("--kubeconfig")
        .arg(cp().kubeconfig())
        .args(&all)
        .output()
        .await
        .expect("kubectl auth can-i");
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        other => panic!(
            "kubectl {}: {other} {}",
            all.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// The (verb, resource[/subresource]) pairs the operator's ServiceAccount called, from the
/// API server's audit log; panics on any request that was refused — except while the API
/// server was starting again after an outage: until its RBAC caches are filled it refuses
/// every ServiceAccount, which says nothing about the chart's rules.
fn operator_calls(audit: &Path) -> std::collections::BTreeSet<(String, String)> {
    let chart = &shared().chart;
    let user = format!(
        "system:serviceaccount:{}:{}",
        chart.namespace, chart.service_account
    );
    let text = std::fs::read_to_string(audit).expect("the audit log");
    let mut calls = std::collections::BTreeSet::new();
    for line in text.lines() {
        let e: Value = serde_json::from_str(line).expect("an audit event");
        if e["user"]["username"] != user.as_str() {
            continue;
        }
        let code = e["responseStatus"]["code"].as_i64().unwrap_or(0);
        let at = ms(&e["requestReceivedTimestamp"]);
        let restarting = shared()
            .outages
            .lock()
            .unwrap()
            .iter()
            .any(|(from, to)| (*from..=*to).contains(&at));
        assert!(
            restarting || (code != 401 && code != 403),
            "the API server refused a request of the operator ({code}): {} {}",
            e["verb"],
            e["requestURI"]
        );
        let r = &e["objectRef"];
        let Some(resource) = r["resource"].as_str() else {
            continue;
        };
        let resource = match r["subresource"].as_str() {
            Some(sub) => format!("{resource}/{sub}"),
            None => resource.to_owned(),
        };
        calls.insert((e["verb"].as_str().unwrap_or_default().to_owned(), resource));
    }
    calls
}

// ---------------------------------------------------------------------------------------

/// The chart's RBAC gives the operator exactly what it needs: not even reads of Secrets,
/// deletes, or another Lease.
#[tokio::test]
async fn the_charts_rbac_is_least_privilege() {
    let _shared = shared().platform.read().await;
    for allowed in [
        ["list", "auctions.gavel.dev", "-A"],
        ["watch", "auctions.gavel.dev", "-A"],
        ["patch", "auctions.gavel.dev", "-n=shop"],
        ["patch", "auctions.gavel.dev/status", "-n=shop"],
        ["create", "events.events.k8s.io", "-n=shop"],
        ["get", "leases/gavel-operator", "-n=gavel-system"],
        ["update", "leases/gavel-operator", "-n=gavel-system"],
        ["create", "leases", "-n=gavel-system"],
    ] {
        assert!(
            operator_can(&allowed).await,
            "the operator may not {allowed:?}"
        );
    }
    for refused in [
        ["get", "auctions.gavel.dev", "-n=shop"],
        ["update", "auctions.gavel.dev", "-n=shop"],
        ["delete", "auctions.gavel.dev", "-n=shop"],
        ["create", "auctions.gavel.dev", "-n=shop"],
        ["update", "auctions.gavel.dev/status", "-n=shop"],
        ["get", "secrets", "-n=gavel-system"],
        ["list", "secrets", "-A"],
        ["create", "events", "-n=shop"],
        ["list", "pods", "-A"],
        ["get", "leases/other", "-n=gavel-system"],
        ["update", "leases/gavel-operator", "-n=shop"],
        ["create", "customresourcedefinitions", "-A"],
    ] {
        assert!(
            !operator_can(&refused).await,
            "the operator may {refused:?}"
        );
    }
}

/// The CRD's CEL rules, served by the API server itself: each bad Auction is refused with
/// the README's message; edits of an open auction refused as documented; cancel; delete
/// with the finalizer.
#[tokio::test]
async fn cel_rules_edits_cancel_and_delete() {
    let _shared = shared().platform.read().await;
    let later = now_ms() + 3_600_000;
    let with = |name: &str, spec: Value| {
        let mut m = manifest(name, later);
        for (k, v) in spec.as_object().into_iter().flatten() {
            m["spec"][k] = v.clone();
        }
        m
    };
    let bad = [
        (
            json!({"startsAt": format_rfc3339(later + 60_000)}),
            "endsAt must be after startsAt",
        ),
        (
            json!({"reservePrice": 100}),
            "reservePrice must be at least startingPrice",
        ),
        (
            json!({"increments": [{"from": 5, "step": 100}]}),
            "the first increment tier must start from 0",
        ),
        (
            json!({"increments": [{"from": 0, "step": 100}, {"from": 0, "step": 200}]}),
            "increment tiers must be in strictly ascending order of from",
        ),
        (
            json!({"increments": [{"from": 0, "step": 0}]}),
            "every increment step must be positive",
        ),
        (
            json!({"softClose": {"window": "25h", "extension": "1m"}}),
            "softClose window and extension must be between 1ms and 24h",
        ),
    ];
    for (i, (spec, message)) in bad.iter().enumerate() {
        let name = format!("{}-{i}", unique_name("cel"));
        let refused = cp()
            .kubectl(
                &["apply", "-f", "-"],
                Some(with(&name, spec.clone()).to_string()),
            )
            .await
            .expect_err(&format!("accepted, wanted '{message}'"));
        assert!(
            refused.to_string().contains(message),
            "{message}: {refused}"
        );
    }

    let name = unique_name("edit");
    apply(&manifest(&name, later)).await;
    let open = wait_phase(&name, "Open", T).await;
    assert_eq!(
        open["metadata"]["finalizers"],
        json!(["gavel.dev/cleanup"]),
        "{open}"
    );
    let patch = |p: Value| {
        let name = name.clone();
        async move {
            cp().kubectl(
                &[
                    "patch",
                    "auction",
                    &name,
                    "-n",
                    NS,
                    "--type=merge",
                    "-p",
                    &p.to_string(),
                ],
                None,
            )
            .await
        }
    };
    let refused = patch(json!({"spec": {"startingPrice": 1}}))
        .await
        .expect_err("startingPrice changed on an open auction");
    assert!(
        refused.to_string().contains(
            "startingPrice, reservePrice and increments cannot change once the auction has opened"
        ),
        "{refused}"
    );
    // What may change on an open auction does.
    patch(json!({"spec": {"title": "Renamed"}}))
        .await
        .expect("title of an open auction");
    patch(json!({"spec": {"cancel": true}}))
        .await
        .expect("cancel");
    let refused = patch(json!({"spec": {"cancel": false}}))
        .await
        .expect_err("cancel undone");
    assert!(
        refused.to_string().contains("cancel cannot be undone"),
        "{refused}"
    );
    let cancelled = wait_phase(&name, "Cancelled", T).await;
    assert!(cancelled["status"]["winner"].is_null(), "{cancelled}");
    let refused = patch(json!({"spec": {"title": "changed"}}))
        .await
        .expect_err("a cancelled auction changed");
    assert!(
        refused
            .to_string()
            .contains("a closed or cancelled auction cannot be changed"),
        "{refused}"
    );
    let rows = results(&name).await;
    assert_eq!(
        rows,
        vec![(None, None, true)],
        "results of a cancelled auction"
    );

    // Deleting waits for the operator to release its finalizer.
    let uid = cancelled["metadata"]["uid"].as_str().unwrap().to_owned();
    cp().kubectl(
        &["delete", "auction", &name, "-n", NS, "--timeout=60s"],
        None,
    )
    .await
    .expect("delete");
    assert!(auction(&name).await.is_none());
    let ev = eventually("the Removed event", T, || async {
        let ev = events(&uid).await;
        reasons(&ev).contains(&"Removed").then_some(ev)
    })
    .await;
    assert_eq!(reasons(&ev), ["Opened", "Cancelled", "Removed"], "{ev:?}");
    assert_eq!(results(&name).await.len(), 1, "PostgreSQL keeps the result");
}

/// The whole life through kubectl: provisioned, scheduled, opened at startsAt, a soft-close
/// extension, closed once at the effective end with its result in PostgreSQL and the status,
/// `kubectl get auc` columns, Events; and every call the operator made was allowed.
#[tokio::test]
async fn lifecycle_through_kubectl() {
    let _shared = shared().platform.read().await;
    let name = unique_name("life");
    let id = format!("{NS}/{name}");
    let starts = now_ms() + 4_000;
    let ends = starts + 5_000;
    let mut m = manifest(&name, ends);
    m["spec"]["startsAt"] = json!(format_rfc3339(starts));
    m["spec"]["softClose"] = json!({"window": "3s", "extension": "3s"});
    apply(&m).await;

    let scheduled = wait_phase(&name, "Scheduled", T).await;
    assert_eq!(
        scheduled["metadata"]["finalizers"],
        json!(["gavel.dev/cleanup"])
    );
    let open = wait_phase(&name, "Open", T).await;
    assert!(now_ms() >= starts, "opened before startsAt");
    let uid = open["metadata"]["uid"].as_str().unwrap().to_owned();

    let mut alice = bidder(0, "alice", &id).await;
    let mut bob = bidder(1, "bob", &id).await;
    bid(&mut alice, &id, 2000).await;
    // Within the soft-close window: the end moves to at least 3 s after this bid.
    until(ends - 2_000).await;
    let sent = now_ms();
    bid(&mut bob, &id, 2500).await;

    let closed = wait_phase(&name, "Closed", LONG).await;
    let s = &closed["status"];
    assert_eq!(s["winner"], "bob", "{s}");
    assert_eq!(s["winnerId"], "bob", "{s}");
    assert_eq!(s["finalPrice"], 2500, "{s}");
    assert_eq!(s["bidCount"], 2, "{s}");
    let effective = ms(&s["effectiveEndsAt"]);
    assert!(effective >= sent + 3_000 && effective > ends, "{s}");
    assert!(
        ms(&s["closedAt"]) >= effective,
        "closed before its effective end: {s}"
    );
    assert_eq!(s["observedGeneration"], closed["metadata"]["generation"]);
    let recorded = s["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "ResultRecorded")
        .unwrap_or_else(|| panic!("no ResultRecorded condition: {s}"));
    assert_eq!(recorded["status"], "True", "{s}");
    assert_eq!(
        results(&name).await,
        vec![(Some("bob".into()), Some(2500), false)]
    );

    let columns = cp()
        .kubectl(&["get", "auc", &name, "-n", NS, "-o", "wide"], None)
        .await
        .expect("kubectl get auc");
    let mut lines = columns.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    for (column, want) in [
        ("PHASE", "Closed"),
        ("PRICE", "2500"),
        ("BIDS", "2"),
        ("WINNER", "bob"),
        ("CURRENCY", "USD"),
    ] {
        let i = header.iter().position(|h| *h == column);
        assert_eq!(
            i.and_then(|i| row.get(i)).copied(),
            Some(want),
            "{column} in\n{columns}"
        );
    }
    assert!(
        header.contains(&"ENDS") && header.contains(&"AGE"),
        "{columns}"
    );

    let ev = events(&uid).await;
    assert_eq!(reasons(&ev), ["Scheduled", "Opened", "Closed"], "{ev:?}");

    // Every request the operator made so far was allowed, and it used every rule the chart
    // grants it (patches of Events happen only when kube-runtime folds a repeated Event).
    let calls = operator_calls(&cp().audit_log());
    for (verb, resource) in [
        ("list", "auctions"),
        ("watch", "auctions"),
        ("patch", "auctions"),
        ("patch", "auctions/status"),
        ("create", "events"),
        ("get", "leases"),
        ("update", "leases"),
        ("create", "leases"),
    ] {
        assert!(
            calls.contains(&(verb.to_owned(), resource.to_owned())),
            "the operator never called {verb} {resource}: {calls:?}"
        );
    }
}

/// An Auction deleted while no operator runs keeps its finalizer; the operator, back,
/// cancels it, records it and releases it.
#[tokio::test]
async fn deletion_while_the_operator_is_down() {
    let mut p = shared().platform.write().await;
    restart_stopped_operators(&mut p).await;
    let name = unique_name("orphan");
    apply(&manifest(&name, now_ms() + 3_600_000)).await;
    let open = wait_phase(&name, "Open", T).await;
    let uid = open["metadata"]["uid"].as_str().unwrap().to_owned();
    p.kill("operator-1");
    p.kill("operator-2");
    cp().kubectl(
        &["delete", "auction", &name, "-n", NS, "--wait=false"],
        None,
    )
    .await
    .expect("delete");
    let pending = auction(&name).await.expect("deleted without its finalizer");
    assert!(
        !pending["metadata"]["deletionTimestamp"].is_null(),
        "{pending}"
    );
    restart_stopped_operators(&mut p).await;
    eventually(&format!("{name} to be released"), LONG, || async {
        auction(&name).await.is_none().then_some(())
    })
    .await;
    // Cancelled on the way out (the result says so; the Event says Removed).
    assert_eq!(results(&name).await, vec![(None, None, true)]);
    let ev = eventually("the Removed event", T, || async {
        let ev = events(&uid).await;
        reasons(&ev).contains(&"Removed").then_some(ev)
    })
    .await;
    assert_eq!(reasons(&ev), ["Opened", "Removed"], "{ev:?}");
}

/// Two replicas, one Lease: the leader killed just before an auction's end; the other takes
/// the Lease over and closes the auction, once.
#[tokio::test]
async fn leader_killed_at_the_end_the_other_closes_once() {
    let mut p = shared().platform.write().await;
    restart_stopped_operators(&mut p).await;
    let name = unique_name("failover");
    let id = format!("{NS}/{name}");
    let ends = now_ms() + 6_000;
    apply(&manifest(&name, ends)).await;
    let open = wait_phase(&name, "Open", T).await;
    let uid = open["metadata"]["uid"].as_str().unwrap().to_owned();
    let mut carol = bidder(0, "carol", &id).await;
    bid(&mut carol, &id, 2000).await;

    let leader = lease_holder().await;
    let other = match leader.as_str() {
        "operator-1" => "operator-2",
        "operator-2" => "operator-1",
        l => panic!("the Lease is held by {l:?}, not by a replica"),
    };
    until(ends - 500).await;
    assert!(p.kill(&leader), "{leader} was not running");

    let closed = wait_phase(&name, "Closed", LONG).await;
    assert_eq!(closed["status"]["winner"], "carol");
    assert_eq!(lease_holder().await, other);
    let ev = events(&uid).await;
    let closes: Vec<_> = ev.iter().filter(|(r, _)| r == "Closed").collect();
    assert_eq!(closes.len(), 1, "{ev:?}");
    assert_eq!(closes[0].1, other, "closed by {ev:?}");
    assert_eq!(
        results(&name).await,
        vec![(Some("carol".into()), Some(2000), false)]
    );
    restart_stopped_operators(&mut p).await;
}

/// The API server stopped while the operator watches, across an auction's end: the auction
/// closes once when it is back, and auctions created afterwards are seen.
#[tokio::test]
async fn api_server_restarted_while_watching() {
    let mut p = shared().platform.write().await;
    restart_stopped_operators(&mut p).await;
    let name = unique_name("outage");
    let id = format!("{NS}/{name}");
    let ends = now_ms() + 5_000;
    apply(&manifest(&name, ends)).await;
    let open = wait_phase(&name, "Open", T).await;
    let uid = open["metadata"]["uid"].as_str().unwrap().to_owned();
    let mut dave = bidder(1, "dave", &id).await;
    bid(&mut dave, &id, 2100).await;

    until(ends - 1_500).await;
    let down = now_ms();
    cp().stop_apiserver().expect("stop the API server");
    // The operator closes the auction at its end without the API server (Redis and
    // PostgreSQL answer); bidders see it closed.
    dave.wait_for("closed", LONG, |m| match m {
        gavel_e2e::ServerMessage::Closed(c) if c.auction == id => Some(()),
        _ => None,
    })
    .await
    .expect("the auction closes while the API server is down");
    cp().start_apiserver().expect("start the API server");
    shared().outages.lock().unwrap().push((down, now_ms()));
    // A replica that could not renew its Lease meanwhile exits; its pod would restart.
    restart_stopped_operators(&mut p).await;

    let closed = wait_phase(&name, "Closed", LONG).await;
    assert_eq!(closed["status"]["winner"], "dave");
    let ev = events(&uid).await;
    assert_eq!(
        ev.iter().filter(|(r, _)| r == "Closed").count(),
        1,
        "{ev:?}"
    );
    assert_eq!(
        results(&name).await,
        vec![(Some("dave".into()), Some(2100), false)]
    );

    let after = unique_name("after");
    apply(&manifest(&after, now_ms() + 3_600_000)).await;
    wait_phase(&after, "Open", LONG).await;
}

/// `kubectl` as the admin: whether it succeeded, its standard output and its standard
/// error (where kubectl prints warnings).
async fn kubectl_full(args: &[&str], stdin: &str) -> (bool, String, String) {
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(cp().kubectl_program())
        .arg("--kubeconfig")
        .arg(cp().kubeconfig())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.as_bytes())
            .await
            .expect("kubectl stdin");
    }
    let out = child.wait_with_output().await.expect("kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The condition `kind` of an Auction object: (status, reason, message).
fn condition(auction: &Value, kind: &str) -> (String, String, String) {
    let c = auction["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} condition: {auction}"));
    let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
    (text("status"), text("reason"), text("message"))
}

/// #18 part 4 against a real API server (README § The Auction resource): a field the
/// schema does not have is refused by kubectl's default field validation (strict), naming
/// it; `--validate=warn` prints a warning and the API server prunes the field (the auction
/// opens without it); a currency outside ISO 4217 is refused by the CRD's CEL rule; an
/// auction whose endsAt passed before it was provisioned is not opened (Failed,
/// `AlreadyEnded`, a Warning Event) until endsAt moves.
#[tokio::test]
async fn unknown_fields_currency_and_an_end_already_past() {
    let _shared = shared().platform.read().await;
    let name = unique_name("typo");
    let mut typo = manifest(&name, now_ms() + 3_600_000);
    typo["spec"]["reserve"] = json!(50_000);
    let (ok, _, stderr) = kubectl_full(&["apply", "-f", "-"], &typo.to_string()).await;
    assert!(!ok, "an unknown field was accepted under strict validation");
    assert!(
        stderr.contains("unknown field \"spec.reserve\""),
        "{stderr}"
    );
    assert!(auction(&name).await.is_none());
    let (ok, _, stderr) =
        kubectl_full(&["apply", "--validate=warn", "-f", "-"], &typo.to_string()).await;
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("Warning") && stderr.contains("unknown field \"spec.reserve\""),
        "{stderr}"
    );
    let open = wait_phase(&name, "Open", T).await;
    assert!(open["spec"]["reserve"].is_null(), "not pruned: {open}");
    assert!(open["spec"]["reservePrice"].is_null(), "{open}");
    assert_eq!(
        open["status"]["reserveMet"], true,
        "opened without a reserve"
    );

    let mut bad_currency = manifest(&unique_name("xyz"), now_ms() + 3_600_000);
    bad_currency["spec"]["currency"] = json!("XYZ");
    let (ok, _, stderr) = kubectl_full(&["apply", "-f", "-"], &bad_currency.to_string()).await;
    assert!(!ok, "currency XYZ accepted");
    assert!(
        stderr.contains("currency must be an ISO 4217 code"),
        "{stderr}"
    );

    let late = unique_name("late");
    apply(&manifest(&late, now_ms() - 60_000)).await;
    let failed = wait_phase(&late, "Failed", T).await;
    let (ok, reason, message) = condition(&failed, "Ready");
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "AlreadyEnded"));
    assert!(message.contains("so it was never opened"), "{message}");
    let uid = failed["metadata"]["uid"].as_str().unwrap().to_owned();
    let ev = eventually("the AlreadyEnded event", T, || async {
        let ev = events(&uid).await;
        reasons(&ev).contains(&"AlreadyEnded").then_some(ev)
    })
    .await;
    assert_eq!(reasons(&ev), ["AlreadyEnded"], "{ev:?}");
    cp().kubectl(
        &[
            "patch",
            "auction",
            &late,
            "-n",
            NS,
            "--type=merge",
            "-p",
            &json!({"spec": {"endsAt": format_rfc3339(now_ms() + 3_600_000)}}).to_string(),
        ],
        None,
    )
    .await
    .expect("endsAt moved");
    let open = wait_phase(&late, "Open", T).await;
    assert_eq!(condition(&open, "Ready").1, "Provisioned");
}

/// #18 parts 5 and 6 through the API server: the conditions read with kubectl after open,
/// a soft-close extension, the close, a cancel, and a failure (Redis down: Ready says which
/// attempt failed and when the next is, Open is Unknown; the auction closes once Redis is
/// back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_tell_the_truth_through_kubectl() {
    let mut p = shared().platform.write().await;
    restart_stopped_operators(&mut p).await;
    let name = unique_name("truth");
    let id = format!("{NS}/{name}");
    let ends = now_ms() + 5_000;
    let mut m = manifest(&name, ends);
    m["spec"]["softClose"] = json!({"window": "3s", "extension": "3s"});
    apply(&m).await;
    let open = wait_phase(&name, "Open", T).await;
    assert_eq!(
        condition(&open, "Ready"),
        (
            "True".into(),
            "Provisioned".into(),
            "provisioned in Redis and PostgreSQL".into()
        )
    );
    assert_eq!(
        condition(&open, "Open"),
        (
            "True".into(),
            "BiddingOpen".into(),
            format!("taking bids until {}", format_rfc3339(ends))
        )
    );

    let mut erin = bidder(0, "erin", &id).await;
    until(ends - 2_000).await;
    bid(&mut erin, &id, 2000).await;
    let extended = eventually("the extension in the status", T, || async {
        auction(&name)
            .await
            .filter(|a| condition(a, "Open").2.contains("extended by soft close"))
    })
    .await;
    assert_eq!(
        condition(&extended, "Open").2,
        format!(
            "taking bids until {} (extended by soft close from {})",
            extended["status"]["effectiveEndsAt"].as_str().unwrap(),
            format_rfc3339(ends)
        )
    );

    let closed = wait_phase(&name, "Closed", LONG).await;
    let closed_at = closed["status"]["closedAt"].as_str().unwrap().to_owned();
    assert_eq!(
        condition(&closed, "Open"),
        (
            "False".into(),
            "Ended".into(),
            format!("closed at {closed_at}")
        )
    );
    let (ok, reason, message) = condition(&closed, "Ready");
    assert_eq!((ok.as_str(), reason.as_str()), ("True", "Completed"));
    assert!(
        message.starts_with(&format!("closed at {closed_at}; result recorded")),
        "{message}"
    );

    // Cancel: a new generation, reported as what happened, never Provisioning.
    let cancelled = unique_name("truth-cancel");
    apply(&manifest(&cancelled, now_ms() + 3_600_000)).await;
    wait_phase(&cancelled, "Open", T).await;
    cp().kubectl(
        &[
            "patch",
            "auction",
            &cancelled,
            "-n",
            NS,
            "--type=merge",
            "-p",
            r#"{"spec":{"cancel":true}}"#,
        ],
        None,
    )
    .await
    .expect("cancel");
    let st = wait_phase(&cancelled, "Cancelled", T).await;
    assert_eq!(
        st["status"]["observedGeneration"],
        st["metadata"]["generation"]
    );
    let (ok, reason, message) = condition(&st, "Ready");
    assert_eq!(
        (ok.as_str(), reason.as_str()),
        ("True", "Completed"),
        "{message}"
    );
    assert!(message.starts_with("cancelled at "), "{message}");
    assert_eq!(condition(&st, "Open").1, "Cancelled");

    // A failure: Redis down at the end of an auction.
    let failing = unique_name("truth-fail");
    let failing_ends = now_ms() + 3_000;
    apply(&manifest(&failing, failing_ends)).await;
    wait_phase(&failing, "Open", T).await;
    tokio::task::block_in_place(|| p.redis().expect("one Redis server").kill());
    let down = eventually("two failures in the status", LONG, || async {
        auction(&failing)
            .await
            .filter(|a| condition(a, "Ready").2.contains("failed 2 times in a row"))
    })
    .await;
    let (ok, reason, message) = condition(&down, "Ready");
    assert_eq!((ok.as_str(), reason.as_str()), ("False", "Unavailable"));
    assert!(message.contains(", retrying in "), "{message}");
    assert_eq!(condition(&down, "Open").0, "Unknown");
    tokio::task::block_in_place(|| p.redis().expect("one Redis server").restart())
        .expect("redis restarts");
    let closed = wait_phase(&failing, "Closed", LONG).await;
    assert_eq!(condition(&closed, "Ready").1, "Completed");
}
