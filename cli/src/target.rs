//! A running local platform seen from outside, as `.gavel/env` describes it: the bid-api
//! addresses, the manifests folder its standalone operator watches, its database. What
//! `gavel-demo` and `gavel-local new` act on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::{Auth, ClientError, WsClient};
use crate::envfile;
use crate::http;
use crate::local::PlatformError;
use crate::manifest::{self, AuctionSpec};
use crate::protocol::{Phase, Snapshot};

/// A local platform's addresses.
#[derive(Clone, Debug)]
pub struct LocalTarget {
    /// WebSocket URLs of the bid-api processes (`ws://…/v1/ws`).
    pub ws_urls: Vec<String>,
    /// HTTP base URLs of the same processes.
    pub http_urls: Vec<String>,
    /// The folder the standalone operator watches.
    pub manifests: PathBuf,
    /// PostgreSQL of the platform.
    pub database_url: Option<String>,
}

fn split_urls(s: &str) -> Vec<String> {
    s.split(',')
        .map(|u| u.trim().trim_end_matches('/').to_owned())
        .filter(|u| !u.is_empty())
        .collect()
}

impl LocalTarget {
    /// The platform of `env_file` (variables of the environment first).
    pub fn from_env_file(env_file: &Path) -> Result<Self, PlatformError> {
        let vars = envfile::read(env_file);
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| vars.get(k).cloned())
                .ok_or_else(|| {
                    PlatformError::Config(format!(
                        "{k} is not set and not in {}: start the platform first (`make up`)",
                        env_file.display()
                    ))
                })
        };
        Ok(Self {
            ws_urls: split_urls(&var("GAVEL_WS_URLS")?),
            http_urls: split_urls(&var("GAVEL_HTTP_URLS")?),
            manifests: PathBuf::from(var("GAVEL_MANIFESTS")?),
            database_url: var("GAVEL_DATABASE_URL").ok(),
        })
    }

    /// HTTP base URL of bid-api process `i` (wrapping around; empty if there is none).
    pub fn http_url(&self, i: usize) -> &str {
        self.http_urls
            .get(i % self.http_urls.len().max(1))
            .map_or("", String::as_str)
    }

    /// WebSocket URL of bid-api process `i` (wrapping around; empty if there is none).
    pub fn ws_url(&self, i: usize) -> &str {
        self.ws_urls
            .get(i % self.ws_urls.len().max(1))
            .map_or("", String::as_str)
    }

    /// Connects to bid-api process `i` as a development-mode bidder.
    pub async fn bidder(&self, i: usize, name: &str) -> Result<WsClient, ClientError> {
        WsClient::connect(self.ws_url(i), &Auth::Dev(name.to_owned())).await
    }

    /// Connects to bid-api process `i` anonymously.
    pub async fn watcher(&self, i: usize) -> Result<WsClient, ClientError> {
        WsClient::connect(self.ws_url(i), &Auth::Anonymous).await
    }

    /// Writes the manifest of `namespace/name` (its end counted from now when the spec
    /// says `ends_in`); returns the id and the file.
    pub async fn create_auction(
        &self,
        namespace: &str,
        name: &str,
        spec: &AuctionSpec,
    ) -> Result<(String, PathBuf), PlatformError> {
        let yaml = spec
            .ending_from_now()
            .to_yaml(namespace, name)
            .map_err(|e| PlatformError::Config(format!("cannot write the manifest: {e}")))?;
        let file = manifest::write_manifest(&self.manifests, namespace, name, &yaml)
            .await
            .map_err(|source| PlatformError::Io {
                path: manifest::manifest_path(&self.manifests, namespace, name),
                source,
            })?;
        Ok((format!("{namespace}/{name}"), file))
    }

    /// Polls the REST snapshot until the auction is open.
    pub async fn wait_open(&self, id: &str, timeout: Duration) -> Result<Snapshot, PlatformError> {
        wait_open(self.http_url(0), id, timeout).await
    }

    /// Polls the status the operator writes beside the manifest until `pred` holds.
    pub async fn wait_status(
        &self,
        id: &str,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value, PlatformError> {
        let (namespace, name) = id.split_once('/').unwrap_or(("default", id));
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            let status = manifest::read_status(&self.manifests, namespace, name)
                .await
                .map_err(|source| PlatformError::Io {
                    path: manifest::manifest_path(&self.manifests, namespace, name),
                    source,
                })?;
            if let Some(status) = status {
                if pred(&status) {
                    return Ok(status);
                }
                last = Some(status);
            }
            if Instant::now() > deadline {
                return Err(PlatformError::Timeout {
                    what: format!("status of {id}: {what} (last: {last:?})"),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Polls `GET {http_url}/v1/auctions/{id}` until the auction is open.
pub async fn wait_open(
    http_url: &str,
    id: &str,
    timeout: Duration,
) -> Result<Snapshot, PlatformError> {
    let deadline = Instant::now() + timeout;
    loop {
        let last;
        match http::get(&format!("{http_url}/v1/auctions/{id}")).await {
            Ok(r) if r.status == 200 => match serde_json::from_value::<Snapshot>(r.json()) {
                Ok(s) if s.phase == Phase::Open => return Ok(s),
                Ok(s) => last = format!("phase {}", s.phase),
                Err(e) => last = format!("unparsable snapshot {}: {e}", r.body),
            },
            Ok(r) => last = format!("HTTP {} {}", r.status, r.body),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            return Err(PlatformError::Timeout {
                what: format!("{id} to open (last: {last})"),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
