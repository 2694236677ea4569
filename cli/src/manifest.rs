//! Auction manifests as the tools write them: an [`AuctionSpec`] builder turned into the
//! `gavel_crds` [`Auction`] type and serialised with `serde_yaml` (never a hand-written
//! emitter, so a file always has the resource's own shape), and the layout of a standalone
//! operator's manifests folder (`<namespace>_<name>.yaml`, status beside it).

use std::path::{Path, PathBuf};
use std::time::Duration;

use gavel_crds::{Auction, BidLimitSpec, IncrementTier, SoftCloseSpec};
use serde_json::Value;

use crate::protocol::{Amount, Millis, format_rfc3339};

pub use gavel_engine::runtime::now_ms;

/// An Auction's spec, as a scenario, the demo or `gavel-local new` declares it (README
/// § The Auction resource); times in Unix ms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuctionSpec {
    /// The lot's title (`spec.title`).
    pub title: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Lowest first bid.
    pub starting_price: Amount,
    /// Hidden reserve.
    pub reserve_price: Option<Amount>,
    /// Increment tiers `(from, step)`.
    pub increments: Vec<(Amount, Amount)>,
    /// Opening time; `None` opens as soon as provisioned.
    pub starts_at: Option<Millis>,
    /// Scheduled end.
    pub ends_at: Millis,
    /// When set, a creator sets `ends_at` to this long after the moment it writes the
    /// auction (so a spec built early still ends when meant).
    pub ends_in: Option<Duration>,
    /// Soft close `(window, extension)` as durations such as `3s`.
    pub soft_close: Option<(String, String)>,
    /// Per-bidder rate limit `(perSecond, burst)`.
    pub bid_limit: Option<(u32, u32)>,
    /// How long the closed auction stays in Redis (`spec.retention`, e.g. `0s`).
    pub retention: Option<String>,
}

impl AuctionSpec {
    /// An auction in USD opening when provisioned and ending `ends_in` from now, with a
    /// flat increment `step` and a generous rate limit.
    pub fn new(title: &str, starting_price: Amount, step: Amount, ends_in: Duration) -> Self {
        Self {
            title: title.to_owned(),
            currency: "USD".to_owned(),
            starting_price,
            reserve_price: None,
            increments: vec![(0, step)],
            starts_at: None,
            ends_at: now_ms() + ends_in.as_millis() as Millis,
            ends_in: Some(ends_in),
            soft_close: None,
            bid_limit: Some((50, 100)),
            retention: None,
        }
    }

    /// Replaces the increment tiers.
    pub fn tiers(mut self, tiers: &[(Amount, Amount)]) -> Self {
        self.increments = tiers.to_vec();
        self
    }

    /// Sets a reserve price.
    pub fn reserve(mut self, reserve: Amount) -> Self {
        self.reserve_price = Some(reserve);
        self
    }

    /// Sets soft close: a bid within `window` of the end moves it to now + `extension`.
    pub fn soft_close(mut self, window: Duration, extension: Duration) -> Self {
        self.soft_close = Some((
            format!("{}ms", window.as_millis()),
            format!("{}ms", extension.as_millis()),
        ));
        self
    }

    /// The spec with `ends_at` moved to `ends_in` from now, when `ends_in` is set.
    pub fn ending_from_now(&self) -> Self {
        let mut spec = self.clone();
        if let Some(ends_in) = spec.ends_in {
            spec.ends_at = now_ms() + ends_in.as_millis() as Millis;
        }
        spec
    }

    /// The Auction resource `namespace/name`.
    pub fn auction(&self, namespace: &str, name: &str) -> Auction {
        let mut auction = Auction::new(
            name,
            gavel_crds::AuctionSpec {
                title: self.title.clone(),
                currency: self.currency.clone(),
                starting_price: self.starting_price,
                reserve_price: self.reserve_price,
                increments: self
                    .increments
                    .iter()
                    .map(|&(from, step)| IncrementTier { from, step })
                    .collect(),
                starts_at: self.starts_at.map(format_rfc3339),
                ends_at: format_rfc3339(self.ends_at),
                soft_close: self
                    .soft_close
                    .as_ref()
                    .map(|(window, extension)| SoftCloseSpec {
                        window: window.clone(),
                        extension: extension.clone(),
                    }),
                bid_limit: self
                    .bid_limit
                    .map(|(per_second, burst)| BidLimitSpec { per_second, burst }),
                cancel: None,
                retention: self.retention.clone(),
                sink: None,
            },
        );
        auction.metadata.namespace = Some(namespace.to_owned());
        auction
    }

    /// The Auction object as JSON (also valid YAML for `kubectl apply`).
    pub fn manifest(&self, namespace: &str, name: &str) -> Value {
        serde_json::to_value(self.auction(namespace, name)).unwrap_or(Value::Null)
    }

    /// The Auction object as YAML, serialised from the resource type.
    pub fn to_yaml(&self, namespace: &str, name: &str) -> Result<String, serde_yaml::Error> {
        serde_yaml::to_string(&self.auction(namespace, name))
    }
}

/// The manifest file of an auction in a manifests folder.
pub fn manifest_path(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!("{namespace}_{name}.yaml"))
}

/// Where a standalone operator may write the status of `file`: `<file>.status.yaml`
/// (`a.yaml.status.yaml`), or with the extension replaced (`a.status.yaml`).
pub fn status_paths(file: &Path) -> [PathBuf; 2] {
    let mut appended = file.as_os_str().to_owned();
    appended.push(".status.yaml");
    [PathBuf::from(appended), file.with_extension("status.yaml")]
}

/// Writes `yaml` as the manifest of `namespace/name` in `dir`, atomically (a temporary
/// file renamed: the operator never reads half a file). Returns the file.
pub async fn write_manifest(
    dir: &Path,
    namespace: &str,
    name: &str,
    yaml: &str,
) -> std::io::Result<PathBuf> {
    let file = manifest_path(dir, namespace, name);
    let tmp = dir.join(format!(".{namespace}_{name}.tmp"));
    tokio::fs::write(&tmp, yaml).await?;
    tokio::fs::rename(&tmp, &file).await?;
    Ok(file)
}

/// The status the standalone operator wrote for `namespace/name` in `dir`, if any yet
/// (`None` too while the file is caught mid-write).
pub async fn read_status(
    dir: &Path,
    namespace: &str,
    name: &str,
) -> std::io::Result<Option<Value>> {
    let file = manifest_path(dir, namespace, name);
    for candidate in status_paths(&file) {
        match tokio::fs::read_to_string(&candidate).await {
            Ok(text) => {
                let value: Value = match serde_yaml::from_str(&text) {
                    Ok(v) => v,
                    Err(_) => return Ok(None),
                };
                return Ok(Some(match value.get("status") {
                    Some(s) => s.clone(),
                    None => value,
                }));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_has_the_contract_shape() {
        let spec = AuctionSpec::new("T", 100, 2, Duration::from_secs(5))
            .reserve(500)
            .soft_close(Duration::from_secs(3), Duration::from_millis(2500));
        let m = spec.manifest("shop", "a");
        assert_eq!(m["apiVersion"], "gavel.dev/v1alpha1");
        assert_eq!(m["kind"], "Auction");
        assert_eq!(m["metadata"]["namespace"], "shop");
        assert_eq!(m["metadata"]["name"], "a");
        assert_eq!(m["spec"]["increments"][0]["step"], 2);
        assert_eq!(m["spec"]["softClose"]["extension"], "2500ms");
        assert_eq!(m["spec"]["reservePrice"], 500);
        assert!(m["spec"].get("startsAt").is_none());
        assert!(m.get("status").is_none(), "{m}");
        let yaml = spec.to_yaml("shop", "a").unwrap();
        assert!(
            yaml.starts_with("apiVersion: gavel.dev/v1alpha1\n"),
            "{yaml}"
        );
        let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(parsed, m, "{yaml}");
        // What the operator reads back is the same auction.
        let back = gavel_crds::manifest::from_yaml(&yaml).unwrap();
        assert_eq!(back, spec.auction("shop", "a"));
        let mut spec = spec.tiers(&[(0, 1), (100, 5)]);
        spec.title = "Say \"hi\": #1".into();
        spec.starts_at = Some(0);
        spec.bid_limit = None;
        let yaml = spec.to_yaml("n", "b").unwrap();
        let back = gavel_crds::manifest::from_yaml(&yaml).unwrap();
        assert_eq!(back.spec.title, "Say \"hi\": #1");
        assert_eq!(back.spec.starts_at.as_deref(), Some("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn status_file_candidates() {
        let [a, b] = status_paths(Path::new("/m/e2e_x.yaml"));
        assert_eq!(a, Path::new("/m/e2e_x.yaml.status.yaml"));
        assert_eq!(b, Path::new("/m/e2e_x.status.yaml"));
    }
}
