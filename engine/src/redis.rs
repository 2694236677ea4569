//! How every Gavel process reaches Redis: the one place that reads `GAVEL_REDIS_URL` — a
//! single server or a Redis Cluster, with or without TLS — and builds fred clients with the
//! same timeouts and reconnection policy. The bid-api, the operator, the flushers, the
//! tools and the load generator all connect through it, so they behave alike on one node
//! and on a cluster: the scripts route by their first key (every key of a call shares one
//! hash slot, see [`crate::keys`]) and live events use sharded pub/sub on both.
//!
//! Accepted URLs:
//! - `redis://[user:password@]host:port[/db]`, `rediss://…` (TLS): one server;
//! - `redis-cluster://[user:password@]host:port,host:port,…`, `rediss-cluster://…` (TLS):
//!   a cluster; one reachable node is enough, the others are discovered (`CLUSTER SLOTS`),
//!   and slot moves and failovers are followed. fred's own form
//!   (`redis-cluster://host:port?node=host:port&node=…`) is accepted as well.

use std::time::Duration;

use fred::clients::{Client, Pool, SubscriberClient};
use fred::prelude::*;
use fred::types::config::Config;

/// How long a command may wait for its reply before it fails (and is counted as failed).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a blocking client (the flusher's reads) may wait for a reply.
const BLOCKING_TIMEOUT: Duration = Duration::from_secs(10);

/// Messages a pub/sub client may hold for a slow reader before it reports a lag.
const PUBSUB_CAPACITY: usize = 16_384;

/// The connection settings of `url` (see the module documentation for the forms).
pub fn config(url: &str) -> Result<Config, fred::error::Error> {
    Config::from_url(&normalize(url))
}

/// Whether `url` names a Redis Cluster.
pub fn is_cluster_url(url: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(scheme, _)| scheme.ends_with("-cluster"))
}

/// Rewrites `scheme-cluster://a:1,b:2,c:3/…?q` into fred's `scheme-cluster://a:1/…?q&node=b:2&node=c:3`.
fn normalize(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    if !scheme.ends_with("-cluster") {
        return url.to_owned();
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let mut hosts = hosts.split(',').filter(|h| !h.is_empty());
    let Some(first) = hosts.next() else {
        return url.to_owned();
    };
    let others: Vec<String> = hosts.map(|h| format!("node={h}")).collect();
    if others.is_empty() {
        return url.to_owned();
    }
    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    let mut params: Vec<String> = query
        .into_iter()
        .filter(|q| !q.is_empty())
        .map(str::to_owned)
        .collect();
    params.extend(others);
    format!("{scheme}://{userinfo}{first}{path}?{}", params.join("&"))
}

/// A builder with Gavel's settings: `timeout` per command, 5 s to connect, no Nagle delay
/// (small requests and replies), reconnection forever with backoff up to 2 s.
pub fn builder(config: &Config, timeout: Duration) -> Builder {
    let mut builder = Builder::from_config(config.clone());
    builder
        .with_performance_config(|perf| {
            perf.default_command_timeout = timeout;
            perf.broadcast_channel_capacity = PUBSUB_CAPACITY;
        })
        .with_connection_config(|conn| {
            conn.connection_timeout = Duration::from_secs(5);
            conn.tcp.nodelay = Some(true);
            // A failover or a slot move: follow the redirections for a while, as the
            // cluster settles, before failing the command.
            conn.max_redirections = 10;
        })
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    builder
}

/// A connected pool of `connections` multiplexed clients, for scripts and short commands.
pub async fn pool(config: &Config, connections: usize) -> Result<Pool, fred::error::Error> {
    let pool = builder(config, COMMAND_TIMEOUT).build_pool(connections.max(1))?;
    pool.init().await?;
    Ok(pool)
}

/// A connected client of its own, for blocking reads that must not hold up the pool.
pub async fn dedicated(config: &Config) -> Result<Client, fred::error::Error> {
    let client = builder(config, BLOCKING_TIMEOUT).build()?;
    client.init().await?;
    Ok(client)
}

/// A pub/sub client, not yet connected: take its `message_rx()` before `init()`, so that
/// no message is missed. On a cluster it holds a connection to each node it subscribes on.
pub fn subscriber(config: &Config) -> Result<SubscriberClient, fred::error::Error> {
    builder(config, COMMAND_TIMEOUT).build_subscriber_client()
}

/// How often a pub/sub client on a cluster reads the slot map again: a subscriber sends
/// no keyed command, so it would never hear of a slot move (`MOVED`) otherwise.
pub const SLOT_MAP_REFRESH: Duration = Duration::from_secs(5);

/// Keeps `subscriber`'s sharded subscriptions in place: after any reconnection (a node
/// restarted, a failover) and after any change of the cluster's slots (a slot moved and
/// its old node dropped the subscriptions, or a replica was promoted), every tracked
/// shard channel is subscribed again on the node that now owns it. On a cluster it reads
/// the slot map every [`SLOT_MAP_REFRESH`] (one `CLUSTER SLOTS`) to notice such changes.
/// Returns the task; it ends when the client is dropped.
pub fn manage_shard_subscriptions(subscriber: &SubscriberClient) -> tokio::task::JoinHandle<()> {
    let client = subscriber.clone();
    let mut reconnects = subscriber.reconnect_rx();
    let mut changes = subscriber.cluster_change_rx();
    tokio::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        let mut refresh = tokio::time::interval(SLOT_MAP_REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.tick().await;
        loop {
            let event = tokio::select! {
                r = reconnects.recv() => r.map(|_| ()),
                r = changes.recv() => r.map(|_| ()),
                _ = refresh.tick() => {
                    if client.is_clustered()
                        && let Err(e) = client.sync_cluster().await
                    {
                        tracing::debug!(error = %e, "cannot read the cluster's slot map; retrying");
                    }
                    // A change is reported on `changes`.
                    continue;
                }
            };
            match event {
                Ok(()) | Err(RecvError::Lagged(_)) => {
                    if let Err(e) = client.resubscribe_all().await {
                        tracing::warn!(error = %e, "cannot resubscribe to the shard channels; retrying at the next change");
                    }
                }
                Err(RecvError::Closed) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_url_form() {
        assert_eq!(normalize("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(
            normalize("redis-cluster://a:1,b:2,c:3"),
            "redis-cluster://a:1?node=b:2&node=c:3"
        );
        assert_eq!(
            normalize("rediss-cluster://u:p@w@a:1,b:2/0?x=y"),
            "rediss-cluster://u:p@w@a:1/0?x=y&node=b:2"
        );
        assert_eq!(
            normalize("redis-cluster://a:1?node=b:2"),
            "redis-cluster://a:1?node=b:2"
        );
        let c = config("redis-cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert!(c.server.is_clustered());
        let hosts = c.server.hosts();
        assert_eq!(hosts.len(), 2, "{hosts:?}");
        assert!(is_cluster_url("rediss-cluster://a:1"));
        assert!(!is_cluster_url("redis://a:1"));
        assert!(
            !config("redis://127.0.0.1:6379")
                .unwrap()
                .server
                .is_clustered()
        );
        let tls = config("rediss-cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert!(tls.server.is_clustered() && tls.tls.is_some());
    }
}
