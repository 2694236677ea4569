//! Leader election with a `coordination.k8s.io/v1` Lease, so several replicas can run and
//! only one acts.
//!
//! The holder renews the Lease every third of its duration; a follower takes it over once
//! it has gone unrenewed for a whole duration. Every write carries the Lease's
//! `resourceVersion`, so two followers racing for an expired Lease cannot both win: the
//! API server refuses the second write with 409 Conflict. A leader that cannot renew
//! within the duration stops acting ([`LeaderElector::hold`] returns) before another
//! replica may take over. The decision itself is the pure [`decide`].

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use tracing::{info, warn};

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// No Lease exists: create it, held by us.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or its holder stopped renewing: take it over.
    TakeOver,
    /// Another replica holds it: wait this long before trying again.
    Follow {
        /// The current holder.
        holder: String,
        /// When its hold expires if not renewed.
        retry_in: Duration,
    },
}

/// Decides from the Lease as read at `now`.
pub fn decide(
    lease: Option<&LeaseSpec>,
    me: &str,
    now: Timestamp,
    duration: Duration,
) -> LeaseStep {
    let Some(spec) = lease else {
        return LeaseStep::Create;
    };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::TakeOver;
    }
    let valid_for = spec.lease_duration_seconds.map_or(duration, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let Some(renewed) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return LeaseStep::TakeOver;
    };
    let expires = renewed
        .0
        .checked_add(SignedDuration::try_from(valid_for).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX);
    if expires <= now {
        LeaseStep::TakeOver
    } else {
        let left = now.duration_until(expires);
        LeaseStep::Follow {
            holder,
            retry_in: Duration::try_from(left).unwrap_or(Duration::ZERO),
        }
    }
}

/// One replica's side of the election.
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaderElector {
    /// An elector for Lease `name` in `api`'s namespace, as `identity`.
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration: duration.max(Duration::from_secs(1)),
        }
    }

    fn lease(&self, old: Option<&Lease>, now: Timestamp, taking_over: bool) -> Lease {
        let spec = old.and_then(|l| l.spec.clone()).unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: old.and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: if taking_over || old.is_none() {
                    Some(MicroTime(now))
                } else {
                    spec.acquire_time.clone()
                },
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(if taking_over {
                    transitions.saturating_add(1)
                } else {
                    transitions
                }),
                ..LeaseSpec::default()
            }),
        }
    }

    /// One attempt: `Ok(None)` when we hold the Lease now, `Ok(Some(wait))` when another
    /// replica does (or won a race), `Err` when the API server failed.
    pub async fn try_acquire_or_renew(&self) -> Result<Option<Duration>, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let step = decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            now,
            self.duration,
        );
        let pp = PostParams::default();
        let written = match step {
            LeaseStep::Follow { retry_in, holder } => {
                tracing::debug!(%holder, "another replica leads");
                return Ok(Some(
                    retry_in
                        .min(self.duration / 3)
                        .max(Duration::from_millis(200)),
                ));
            }
            LeaseStep::Create => self.api.create(&pp, &self.lease(None, now, true)).await,
            LeaseStep::Renew => {
                self.api
                    .replace(&self.name, &pp, &self.lease(current.as_ref(), now, false))
                    .await
            }
            LeaseStep::TakeOver => {
                self.api
                    .replace(&self.name, &pp, &self.lease(current.as_ref(), now, true))
                    .await
            }
        };
        match written {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Some(self.duration / 3)),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(None) => {
                    info!(lease = %self.name, identity = %self.identity, "became the leader");
                    return;
                }
                Ok(Some(wait)) => tokio::time::sleep(wait).await,
                Err(e) => {
                    warn!(error = %e, "cannot read or write the Lease; retrying");
                    tokio::time::sleep(self.duration / 3).await;
                }
            }
        }
    }

    /// Renews the Lease until it is lost; returns when this replica must stop acting:
    /// another replica took it, or renewal failed for longer than two thirds of the
    /// duration (so we stop before anyone else may start).
    pub async fn hold(&self) {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire_or_renew().await {
                Ok(None) => last_renewal = tokio::time::Instant::now(),
                Ok(Some(_)) => {
                    warn!(lease = %self.name, "leadership lost to another replica");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot renew the Lease");
                    if last_renewal.elapsed() >= self.duration * 2 / 3 {
                        warn!(lease = %self.name, "leadership lost: renewal failed too long");
                        return;
                    }
                }
            }
        }
    }

    /// Gives the Lease up on shutdown, so another replica takes over at once.
    pub async fn release(&self) {
        let Ok(Some(current)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let holder = current
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.identity.as_str()) {
            return;
        }
        let mut lease = current.clone();
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            warn!(error = %e, "cannot release the Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> LeaseSpec {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(duration),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn lease_decisions() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let d = Duration::from_secs(15);
        let cases = [
            (None, LeaseStep::Create),
            (Some(spec(Some("me"), 3, 15)), LeaseStep::Renew),
            (Some(spec(Some("me"), 60, 15)), LeaseStep::Renew),
            (Some(spec(None, 1, 15)), LeaseStep::TakeOver),
            (Some(spec(Some(""), 1, 15)), LeaseStep::TakeOver),
            (Some(spec(Some("other"), 15, 15)), LeaseStep::TakeOver),
            (Some(spec(Some("other"), 100, 15)), LeaseStep::TakeOver),
            (Some(spec(Some("other"), 1, -5)), LeaseStep::TakeOver),
            (
                Some(spec(Some("other"), 5, 15)),
                LeaseStep::Follow {
                    holder: "other".into(),
                    retry_in: Duration::from_secs(10),
                },
            ),
            (
                Some(LeaseSpec {
                    holder_identity: Some("other".into()),
                    ..LeaseSpec::default()
                }),
                LeaseStep::TakeOver,
            ),
        ];
        for (lease, expected) in cases {
            assert_eq!(decide(lease.as_ref(), "me", now, d), expected, "{lease:?}");
        }
        // Absurd durations near the end of time never panic.
        let far = LeaseSpec {
            holder_identity: Some("other".into()),
            lease_duration_seconds: Some(i32::MAX),
            renew_time: Some(MicroTime(Timestamp::MAX)),
            ..LeaseSpec::default()
        };
        assert!(matches!(
            decide(Some(&far), "me", now, d),
            LeaseStep::Follow { .. }
        ));
    }

    mod api {
        use super::*;
        use http::{Method, Request, Response, StatusCode};
        use kube::Client;
        use kube::client::Body;
        use serde_json::{Value, json};
        use tower_test::mock::{self, Handle, SendResponse};

        type Server = Handle<Request<Body>, Response<Body>>;
        const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

        fn elector() -> (LeaderElector, Server) {
            let (service, server) = mock::pair::<Request<Body>, Response<Body>>();
            let client = Client::new(service, "ops");
            let api = Api::<Lease>::namespaced(client, "ops");
            let e = LeaderElector::new(api, "gavel-operator", "me", Duration::from_secs(15));
            (e, server)
        }

        async fn next(
            server: &mut Server,
            method: Method,
            path: &str,
        ) -> (Value, SendResponse<Response<Body>>) {
            let (request, send) = server.next_request().await.expect("request");
            assert_eq!(request.method(), method);
            assert!(request.uri().path().starts_with(path), "{}", request.uri());
            let bytes = request.into_body().collect_bytes().await.unwrap();
            (serde_json::from_slice(&bytes).unwrap_or(Value::Null), send)
        }

        fn reply(send: SendResponse<Response<Body>>, code: StatusCode, body: Value) {
            send.send_response(
                Response::builder()
                    .status(code)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }

        fn status(code: u16, reason: &str) -> Value {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                   "message": reason, "reason": reason, "code": code})
        }

        fn lease(holder: &str, renewed: Timestamp) -> Value {
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "gavel-operator", "namespace": "ops", "resourceVersion": "41"},
                   "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                            "renewTime": MicroTime(renewed), "leaseTransitions": 2}})
        }

        #[tokio::test]
        async fn creates_the_missing_lease() {
            let (e, mut server) = elector();
            let task = tokio::spawn(async move { e.try_acquire_or_renew().await });
            let (_, send) = next(&mut server, Method::GET, &format!("{PATH}/gavel-operator")).await;
            reply(send, StatusCode::NOT_FOUND, status(404, "NotFound"));
            let (body, send) = next(&mut server, Method::POST, PATH).await;
            assert_eq!(body["spec"]["holderIdentity"], "me");
            assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
            reply(send, StatusCode::CREATED, body);
            assert_eq!(task.await.unwrap().unwrap(), None);
        }

        #[tokio::test]
        async fn follows_a_live_leader_without_writing() {
            let (e, mut server) = elector();
            let task = tokio::spawn(async move { e.try_acquire_or_renew().await });
            let (_, send) = next(&mut server, Method::GET, &format!("{PATH}/gavel-operator")).await;
            reply(send, StatusCode::OK, lease("other", Timestamp::now()));
            let wait = task.await.unwrap().unwrap().expect("follower");
            assert!(wait <= Duration::from_secs(5), "{wait:?}");
        }

        #[tokio::test]
        async fn takes_over_an_expired_lease_unless_another_replica_won() {
            let (e, mut server) = elector();
            let e = std::sync::Arc::new(e);
            let e2 = e.clone();
            let task = tokio::spawn(async move { e2.try_acquire_or_renew().await });
            let expired = Timestamp::now() - SignedDuration::from_secs(60);
            let (_, send) = next(&mut server, Method::GET, &format!("{PATH}/gavel-operator")).await;
            reply(send, StatusCode::OK, lease("other", expired));
            let (body, send) =
                next(&mut server, Method::PUT, &format!("{PATH}/gavel-operator")).await;
            // Optimistic concurrency: the write carries the version that was read.
            assert_eq!(body["metadata"]["resourceVersion"], "41");
            assert_eq!(body["spec"]["holderIdentity"], "me");
            assert_eq!(body["spec"]["leaseTransitions"], 3);
            reply(send, StatusCode::CONFLICT, status(409, "Conflict"));
            assert!(
                task.await.unwrap().unwrap().is_some(),
                "lost the race, must follow"
            );

            let task = tokio::spawn(async move { e.try_acquire_or_renew().await });
            let (_, send) = next(&mut server, Method::GET, &format!("{PATH}/gavel-operator")).await;
            reply(send, StatusCode::OK, lease("other", expired));
            let (body, send) =
                next(&mut server, Method::PUT, &format!("{PATH}/gavel-operator")).await;
            reply(send, StatusCode::OK, body);
            assert_eq!(task.await.unwrap().unwrap(), None);
        }
    }
}
