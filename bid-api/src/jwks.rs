//! The identity provider's signing keys: OpenID Connect discovery, the JWKS fetched over
//! HTTPS (rustls, optional private CA), cached, refreshed on the provider's cache
//! lifetime and when a token names an unknown `kid` (at most once per
//! `GAVEL_JWKS_MIN_REFRESH_INTERVAL`, so forged `kid`s cannot make Gavel hammer the
//! provider).
//!
//! Fetches run on tokio tasks and never hold a lock that a socket's event loop needs:
//! the key map is swapped whole under a short synchronous lock. When the provider is
//! unreachable the cached keys keep verifying; the failure is a metric
//! (`gavel_jwks_up`, `gavel_jwks_refreshes_total{result="error"}`) and a log line, once
//! and then at most once a minute, never a readiness failure.
//!
//! Which algorithm a key verifies comes from the key alone (its `alg`, or else its `kty`
//! and curve): a token's header may only pick among those, so there is no algorithm
//! confusion, and symmetric (`oct`) keys are never taken from a JWKS.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;

/// Largest discovery document or JWKS read, in bytes.
const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Timeout of one HTTP request to the provider.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A failing provider is logged at most this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Where the keys come from.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// OpenID Connect discovery: `<issuer>/.well-known/openid-configuration`, then its
    /// `jwks_uri`.
    Issuer(String),
    /// A JWKS URL (providers without discovery).
    Url(String),
}

/// How the cache refreshes.
#[derive(Clone, Debug)]
pub struct JwksSettings {
    /// Where the keys come from.
    pub source: KeySource,
    /// Longest time between two refreshes (a provider's `Cache-Control: max-age` can
    /// shorten it, never below `min_refresh`).
    pub max_refresh: Duration,
    /// Shortest time between two fetches, whatever asks for them (unknown `kid`s).
    pub min_refresh: Duration,
    /// PEM bundle of extra CA certificates trusted for the provider.
    pub ca_pem: Option<Vec<u8>>,
}

/// Why the JWKS client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum JwksConfigError {
    /// The CA bundle is not valid PEM.
    #[error("invalid CA certificate bundle: {0}")]
    Ca(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(String),
}

/// Why a key could not be found for a token.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The provider's current key set has no key with this `kid`.
    #[error("no signing key with kid {0:?} at the identity provider")]
    UnknownKid(String),
    /// The key exists but is not for the token's algorithm.
    #[error("key {kid:?} does not verify {alg:?} tokens")]
    AlgorithmMismatch {
        /// The key's id (`kid`) the token names.
        kid: String,
        /// The token header's algorithm.
        alg: Algorithm,
    },
    /// The token has no `kid` and no single key fits its algorithm.
    #[error("the token has no kid and no single key of the provider verifies {0:?}")]
    NoKid(Algorithm),
    /// The key is unknown and the provider could not be reached to look for it.
    #[error("the identity provider's keys are unavailable: {0}")]
    Unavailable(String),
}

/// One accepted key.
struct Key {
    kid: Option<String>,
    key: Arc<DecodingKey>,
    algorithms: Vec<Algorithm>,
}

/// The cached key set.
#[derive(Default)]
struct Cached {
    keys: Vec<Key>,
    /// Whether the last fetch succeeded (none yet counts as failed).
    healthy: bool,
    /// The last fetch error, for messages.
    last_error: Option<String>,
}

/// Throttling of fetches and of failure logs.
#[derive(Default)]
struct Timing {
    last_fetch: Option<Instant>,
    last_failure_log: Option<Instant>,
    jwks_uri: Option<String>,
}

/// The provider's keys, shared by every connection.
pub struct Jwks {
    settings: JwksSettings,
    client: reqwest::Client,
    cached: RwLock<Cached>,
    timing: Mutex<Timing>,
    fetching: tokio::sync::Mutex<()>,
    metrics: Metrics,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct RawSet {
    keys: Vec<serde_json::Value>,
}

/// The algorithms a JWK may verify, or `None` for keys Gavel never uses (symmetric,
/// encryption, unsupported curves).
fn key_algorithms(jwk: &Jwk) -> Option<Vec<Algorithm>> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => vec![Algorithm::EdDSA],
            _ => return None,
        },
        AlgorithmParameters::OctetKey(_) => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(family),
        Some(declared) => {
            let declared = match declared {
                KeyAlgorithm::RS256 => Algorithm::RS256,
                KeyAlgorithm::RS384 => Algorithm::RS384,
                KeyAlgorithm::RS512 => Algorithm::RS512,
                KeyAlgorithm::PS256 => Algorithm::PS256,
                KeyAlgorithm::PS384 => Algorithm::PS384,
                KeyAlgorithm::PS512 => Algorithm::PS512,
                KeyAlgorithm::ES256 => Algorithm::ES256,
                KeyAlgorithm::ES384 => Algorithm::ES384,
                KeyAlgorithm::EdDSA => Algorithm::EdDSA,
                _ => return None,
            };
            family.contains(&declared).then(|| vec![declared])
        }
    }
}

/// Parses a JWKS document into the keys Gavel accepts; keys it cannot use are skipped.
fn parse_set(body: &[u8]) -> Result<Vec<Key>, String> {
    let raw: RawSet = serde_json::from_slice(body).map_err(|e| format!("invalid JWKS: {e}"))?;
    let mut keys = Vec::new();
    for value in raw.keys {
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                debug!(error = %e, "skipping a JWK Gavel cannot read");
                continue;
            }
        };
        let Some(algorithms) = key_algorithms(&jwk) else {
            debug!(kid = ?jwk.common.key_id, "skipping a JWK that is not a signing key Gavel accepts");
            continue;
        };
        match DecodingKey::from_jwk(&jwk) {
            Ok(key) => keys.push(Key {
                kid: jwk.common.key_id.clone(),
                key: Arc::new(key),
                algorithms,
            }),
            Err(e) => debug!(kid = ?jwk.common.key_id, error = %e, "skipping an invalid JWK"),
        }
    }
    Ok(keys)
}

/// `max-age` of a `Cache-Control` header.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k.trim().eq_ignore_ascii_case("max-age"))
            .then(|| v.trim().parse::<u64>().ok().map(Duration::from_secs))?
    })
}

impl Jwks {
    /// Builds the cache (nothing is fetched yet: see [`Jwks::spawn_refresher`]).
    pub fn new(settings: JwksSettings, metrics: Metrics) -> Result<Arc<Self>, JwksConfigError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3));
        if let Some(pem) = &settings.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| JwksConfigError::Ca(e.to_string()))?;
            if certs.is_empty() {
                return Err(JwksConfigError::Ca("no certificate in the file".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let client = builder
            .build()
            .map_err(|e| JwksConfigError::Client(e.to_string()))?;
        metrics.jwks_up.set(0);
        Ok(Arc::new(Self {
            settings,
            client,
            cached: RwLock::new(Cached::default()),
            timing: Mutex::new(Timing::default()),
            fetching: tokio::sync::Mutex::new(()),
            metrics,
        }))
    }

    /// Starts the background task that fetches the keys now and then on their cache
    /// lifetime. It ends when the last other reference to the cache is dropped.
    pub fn spawn_refresher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(jwks) = weak.upgrade() else { return };
                let wait = jwks.refresh().await;
                drop(jwks);
                tokio::time::sleep(wait).await;
            }
        })
    }

    /// The key for a token's header, fetching the set again (within the rate limit)
    /// when the `kid` is unknown.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, KeyError> {
        match self.lookup(kid, alg) {
            Err(KeyError::UnknownKid(_)) | Err(KeyError::Unavailable(_)) => {}
            other => return other,
        }
        // Waits for a fetch in flight; fetches again only outside the rate limit.
        let _ = self.refresh().await;
        self.lookup(kid, alg)
    }

    /// The key for a token's header from the cache only, never waiting for the
    /// provider: an unknown `kid` starts a fetch in the background (within the rate
    /// limit) and is answered as unavailable, to be retried. For the sockets' own loops.
    pub fn key_for_cached(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, KeyError> {
        match self.lookup(kid, alg) {
            Err(KeyError::UnknownKid(_))
            | Err(KeyError::NoKid(_))
            | Err(KeyError::Unavailable(_)) => {
                let jwks = self.clone();
                tokio::spawn(async move {
                    let _ = jwks.refresh().await;
                });
                Err(KeyError::Unavailable(
                    "the signing key is not cached yet; retry in a moment".into(),
                ))
            }
            other => other,
        }
    }

    fn lookup(&self, kid: Option<&str>, alg: Algorithm) -> Result<Arc<DecodingKey>, KeyError> {
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        let missing = |err: KeyError| {
            if cached.healthy {
                err
            } else {
                KeyError::Unavailable(
                    cached
                        .last_error
                        .clone()
                        .unwrap_or_else(|| "not fetched yet".into()),
                )
            }
        };
        match kid {
            Some(kid) => match cached.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if k.algorithms.contains(&alg) => Ok(k.key.clone()),
                Some(_) => Err(KeyError::AlgorithmMismatch {
                    kid: kid.to_owned(),
                    alg,
                }),
                None => Err(missing(KeyError::UnknownKid(
                    kid.chars().take(80).collect(),
                ))),
            },
            None => {
                let mut fitting = cached.keys.iter().filter(|k| k.algorithms.contains(&alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Ok(k.key.clone()),
                    (None, _) => Err(missing(KeyError::NoKid(alg))),
                    _ => Err(KeyError::NoKid(alg)),
                }
            }
        }
    }

    /// Fetches the key set once (one fetch at a time; a caller that waited for another
    /// caller's fetch does not fetch again) and returns when to refresh next.
    pub async fn refresh(&self) -> Duration {
        let _guard = self.fetching.lock().await;
        let since_last = {
            let timing = self.timing.lock().unwrap_or_else(|e| e.into_inner());
            timing.last_fetch.map(|at| at.elapsed())
        };
        if let Some(elapsed) = since_last
            && elapsed < self.settings.min_refresh
        {
            return self.settings.min_refresh - elapsed;
        }
        {
            let mut timing = self.timing.lock().unwrap_or_else(|e| e.into_inner());
            timing.last_fetch = Some(Instant::now());
        }
        match self.fetch().await {
            Ok((keys, lifetime)) => {
                let count = keys.len();
                let recovered = {
                    let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
                    let recovered = cached.last_error.is_some();
                    *cached = Cached {
                        keys,
                        healthy: true,
                        last_error: None,
                    };
                    recovered
                };
                self.metrics.jwks_refreshes.with_label_values(&["ok"]).inc();
                self.metrics.jwks_keys.set(count as i64);
                self.metrics.jwks_up.set(1);
                if recovered {
                    info!(keys = count, "identity provider reachable again");
                } else {
                    debug!(keys = count, "signing keys refreshed");
                }
                lifetime
                    .unwrap_or(self.settings.max_refresh)
                    .clamp(self.settings.min_refresh, self.settings.max_refresh)
            }
            Err(e) => {
                {
                    let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
                    cached.healthy = false;
                    cached.last_error = Some(e.clone());
                }
                self.metrics
                    .jwks_refreshes
                    .with_label_values(&["error"])
                    .inc();
                self.metrics.jwks_up.set(0);
                let log = {
                    let mut timing = self.timing.lock().unwrap_or_else(|e| e.into_inner());
                    timing.jwks_uri = None;
                    let due = timing
                        .last_failure_log
                        .is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL);
                    if due {
                        timing.last_failure_log = Some(Instant::now());
                    }
                    due
                };
                if log {
                    warn!(error = %e, "cannot fetch the identity provider's signing keys; cached keys keep verifying (logged at most once a minute)");
                }
                self.settings.min_refresh
            }
        }
    }

    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<Duration>), String> {
        let mut response = self
            .client
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        let lifetime = max_age(response.headers());
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("GET {url}: larger than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, lifetime))
    }

    async fn jwks_uri(&self) -> Result<String, String> {
        let issuer = match &self.settings.source {
            KeySource::Url(url) => return Ok(url.clone()),
            KeySource::Issuer(issuer) => issuer,
        };
        if let Some(uri) = self
            .timing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .jwks_uri
            .clone()
        {
            return Ok(uri);
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let (body, _) = self.get(&url).await?;
        let doc: Discovery = serde_json::from_slice(&body)
            .map_err(|e| format!("invalid discovery document at {url}: {e}"))?;
        if doc.issuer != *issuer {
            return Err(format!(
                "the discovery document at {url} names issuer {:?}, not {issuer:?}",
                doc.issuer
            ));
        }
        self.timing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .jwks_uri = Some(doc.jwks_uri.clone());
        Ok(doc.jwks_uri)
    }

    async fn fetch(&self) -> Result<(Vec<Key>, Option<Duration>), String> {
        let uri = self.jwks_uri().await?;
        let (body, lifetime) = self.get(&uri).await?;
        let keys = parse_set(&body)?;
        Ok((keys, lifetime))
    }
}

/// An error and its sources on one line (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn jwk(value: serde_json::Value) -> Jwk {
        serde_json::from_value(value).unwrap()
    }

    const N: &str = "xFUWfFHMqxePOsDhnWP2lKb8lBCmjF-eUoMGUVdhygMaWEP-I1YwPQZ27yZO";

    #[test]
    fn algorithms_come_from_the_key() {
        let rsa = jwk(json!({"kty":"RSA","kid":"r","n":N,"e":"AQAB"}));
        assert!(key_algorithms(&rsa).unwrap().contains(&Algorithm::PS256));
        let rsa_rs256 = jwk(json!({"kty":"RSA","kid":"r","alg":"RS256","n":N,"e":"AQAB"}));
        assert_eq!(key_algorithms(&rsa_rs256), Some(vec![Algorithm::RS256]));
        let ec = jwk(
            json!({"kty":"EC","crv":"P-256","x":"l79a4Wl76hktNjpH00vNOZlc96YevT9HT79ppLAaNV4","y":"79YsFtH7YATeEIgAe7H644zp2exy-kHuAJh5c4MOYMU"}),
        );
        assert_eq!(key_algorithms(&ec), Some(vec![Algorithm::ES256]));
        // A key declaring an algorithm of another family is refused whole.
        let lying = jwk(
            json!({"kty":"EC","alg":"RS256","crv":"P-256","x":"l79a4Wl76hktNjpH00vNOZlc96YevT9HT79ppLAaNV4","y":"79YsFtH7YATeEIgAe7H644zp2exy-kHuAJh5c4MOYMU"}),
        );
        assert_eq!(key_algorithms(&lying), None);
        let oct = jwk(json!({"kty":"oct","k":"c2VjcmV0"}));
        assert_eq!(key_algorithms(&oct), None);
        let enc = jwk(json!({"kty":"RSA","use":"enc","n":N,"e":"AQAB"}));
        assert_eq!(key_algorithms(&enc), None);
    }

    #[test]
    fn sets_skip_keys_gavel_cannot_use() {
        let body = json!({"keys":[
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"weird","kid":"w"},
            {"kty":"RSA","kid":"r","alg":"RS256","n":N,"e":"AQAB"}
        ]})
        .to_string();
        let keys = parse_set(body.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("r"));
        assert!(parse_set(b"{}").is_err());
    }

    #[test]
    fn cache_control() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::CACHE_CONTROL,
            "public, max-age=120, must-revalidate".parse().unwrap(),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(120)));
        h.insert(reqwest::header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(max_age(&h), None);
    }
}
