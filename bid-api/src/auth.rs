//! Who is on a connection: JWT verification against the identity provider's keys
//! (OpenID Connect discovery / JWKS, see [`crate::jwks`]), or, for development, an HS256
//! secret or one RS256 public key; the claims policy (issuer, audience, `exp`/`nbf` with
//! a leeway, which claims are the bidder's id and name, the scope or role needed to
//! bid); the development `?bidder=` mode; origin checks.
//!
//! A token's algorithm is only ever checked against the key it names: HS256 only with
//! the configured secret, asymmetric algorithms only with a public key declared for
//! them; `none` is never accepted.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gavel_engine::Bidder;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::Config;
use crate::jwks::{Jwks, JwksSettings, KeyError, KeySource};
use crate::metrics::Metrics;

/// Why a token or identity was refused. [`AuthError::reason`] is the short, documented
/// reason sent to the client and counted in `gavel_auth_refused_total`.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, forged, expired or for someone else.
    #[error("invalid token ({reason}): {message}")]
    InvalidToken {
        /// Short reason: `malformed`, `algorithm`, `unknown_key`, `signature`,
        /// `expired`, `not_yet_valid`, `issuer`, `audience`, `claims`.
        reason: &'static str,
        /// What the verifier said, for the client and the debug log.
        message: String,
    },
    /// A token was sent but no verification key is configured.
    #[error(
        "tokens are not accepted: no GAVEL_OIDC_ISSUER, GAVEL_JWKS_URL, GAVEL_JWT_SECRET or GAVEL_JWT_PUBLIC_KEY is configured"
    )]
    NoKey,
    /// The token names a key that is not cached and the provider cannot be reached:
    /// retry later.
    #[error("{0}")]
    KeysUnavailable(String),
    /// The claims do not make a valid bidder.
    #[error("invalid bidder identity: {0}")]
    InvalidBidder(String),
}

impl AuthError {
    fn invalid(reason: &'static str, message: impl Into<String>) -> Self {
        AuthError::InvalidToken {
            reason,
            message: message.into(),
        }
    }

    /// The short reason of the refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::InvalidToken { reason, .. } => reason,
            AuthError::NoKey => "no_key",
            AuthError::KeysUnavailable(_) => "keys_unavailable",
            AuthError::InvalidBidder(_) => "identity",
        }
    }

    /// Whether the client should retry later rather than fix its token.
    pub fn is_temporary(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable(_))
    }
}

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
#[error("token verification configuration: {0}")]
pub struct AuthConfigError(String);

/// An authenticated bidder and when its token stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The bidder (id and display name from the configured claims).
    pub bidder: Bidder,
    /// Unix seconds after which (plus leeway) the bidder may no longer bid.
    pub expires_at: Option<u64>,
    /// Whether the token carries the scope or role needed to bid (always true when
    /// none is configured).
    pub may_bid: bool,
}

impl Identity {
    /// Whether the identity may still bid at `now` (Unix seconds).
    pub fn valid_at(&self, now: u64, leeway: Duration) -> bool {
        self.expires_at
            .is_none_or(|exp| now <= exp.saturating_add(leeway.as_secs()))
    }
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The value at a dotted path (`realm_access.roles`) of a claims object; a claim whose
/// own name contains dots is found too.
fn claim<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    path.split('.').try_fold(claims, |v, part| v.get(part))
}

/// Whether a claim (space-separated string or array of strings) contains `wanted`.
fn claim_contains(value: Option<&Value>, wanted: &str) -> bool {
    match value {
        Some(Value::String(s)) => s.split_whitespace().any(|w| w == wanted),
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(wanted)),
        _ => false,
    }
}

/// Whether `c` is invisible or reorders text: Unicode format characters (category Cf:
/// zero-width spaces and joiners, bidirectional embeddings, overrides and isolates, the
/// BOM, soft hyphen, tags) and other controls.
fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}' | '\u{061C}' | '\u{06DD}' | '\u{070F}' | '\u{08E2}' | '\u{180E}'
            | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}'
            | '\u{0600}'..='\u{0605}' | '\u{110BD}' | '\u{110CD}' | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}' | '\u{E0020}'..='\u{E007F}')
}

/// The display name shown to every watcher, from a token's name claim: whitespace
/// trimmed and collapsed, at most [`gavel_engine::client::MAX_BIDDER_NAME_CHARS`]
/// characters; `None` (the bidder id is shown instead) when it is empty or holds
/// invisible or text-reordering characters, which could make it pass for another
/// name.
pub fn display_name(raw: &str) -> Option<String> {
    if raw.chars().any(is_hidden) {
        return None;
    }
    let name: String = raw
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(gavel_engine::client::MAX_BIDDER_NAME_CHARS)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// `<name> #<tag>`: the tag is 5 characters of the SHA-256 of the bidder id (Crockford
/// base32), the same on every pod and release, so two bidders who chose the same name
/// still look different to watchers. The name is cut to keep the whole within the
/// engine's limit.
pub fn tagged_name(name: &str, id: &str) -> String {
    use sha2::Digest;
    const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let digest = sha2::Sha256::digest(id.as_bytes());
    let bits = u64::from_be_bytes([
        0, 0, 0, digest[0], digest[1], digest[2], digest[3], digest[4],
    ]);
    let tag: String = (0..5)
        .map(|i| char::from(ALPHABET[((bits >> (35 - 5 * i)) & 31) as usize]))
        .collect();
    let room = gavel_engine::client::MAX_BIDDER_NAME_CHARS - tag.len() - 2;
    let short: String = name.chars().take(room).collect();
    format!("{} #{tag}", short.trim_end())
}

/// Verifies tokens as configured.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    refresher: Option<tokio::task::JoinHandle<()>>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: Duration,
    subject_claim: String,
    name_claim: String,
    bid_scope: Option<String>,
    bid_role: Option<String>,
    roles_claim: String,
    name_tag: bool,
    dev_auth: bool,
    metrics: Metrics,
}

impl Drop for Authenticator {
    fn drop(&mut self) {
        if let Some(task) = &self.refresher {
            task.abort();
        }
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value
        .as_ref()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl Authenticator {
    /// Builds the verifier from the configuration (reads key and CA files) and, with an
    /// identity provider, starts fetching its keys in the background: start-up never
    /// waits for the provider. Must run inside a tokio runtime.
    pub fn new(config: &Config, metrics: Metrics) -> Result<Self, AuthConfigError> {
        let hs256 = non_empty(&config.jwt_secret).map(|s| DecodingKey::from_secret(s.as_bytes()));
        let rs256 = match non_empty(&config.jwt_public_key) {
            Some(key) => {
                let pem = if key.starts_with("-----BEGIN") {
                    key
                } else {
                    std::fs::read_to_string(&key).map_err(|e| {
                        AuthConfigError(format!("cannot read public key file {key}: {e}"))
                    })?
                };
                Some(
                    DecodingKey::from_rsa_pem(pem.as_bytes())
                        .map_err(|e| AuthConfigError(format!("invalid RSA public key: {e}")))?,
                )
            }
            None => None,
        };
        let oidc_issuer = non_empty(&config.oidc_issuer);
        let source = match (&oidc_issuer, non_empty(&config.jwks_url)) {
            (Some(issuer), _) => Some(KeySource::Issuer(issuer.clone())),
            (None, Some(url)) => Some(KeySource::Url(url)),
            (None, None) => None,
        };
        let (jwks, refresher) = match source {
            Some(source) => {
                let ca_pem = match &config.oidc_ca_file {
                    Some(path) => Some(std::fs::read(path).map_err(|e| {
                        AuthConfigError(format!("cannot read {}: {e}", path.display()))
                    })?),
                    None => None,
                };
                let settings = JwksSettings {
                    source,
                    max_refresh: config.jwks_refresh_interval,
                    min_refresh: config
                        .jwks_min_refresh_interval
                        .min(config.jwks_refresh_interval),
                    ca_pem,
                };
                let jwks = Jwks::new(settings, metrics.clone())
                    .map_err(|e| AuthConfigError(e.to_string()))?;
                let task = jwks.spawn_refresher();
                (Some(jwks), Some(task))
            }
            None => (None, None),
        };
        Ok(Self {
            hs256,
            rs256,
            jwks,
            refresher,
            issuer: non_empty(&config.jwt_issuer).or(oidc_issuer),
            audience: non_empty(&config.jwt_audience),
            leeway: config.jwt_leeway,
            subject_claim: config.jwt_subject_claim.clone(),
            name_claim: config.jwt_name_claim.clone(),
            bid_scope: non_empty(&config.jwt_bid_scope),
            bid_role: non_empty(&config.jwt_bid_role),
            roles_claim: config.jwt_roles_claim.clone(),
            name_tag: config.display_name_tag,
            dev_auth: config.dev_auth,
            metrics,
        })
    }

    /// Whether any token can be verified.
    pub fn has_keys(&self) -> bool {
        self.hs256.is_some() || self.rs256.is_some() || self.jwks.is_some()
    }

    /// Whether development mode is on.
    pub fn dev_auth(&self) -> bool {
        self.dev_auth
    }

    /// The clock-skew leeway.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// What a token needs to bid, for messages (`None`: any valid token bids).
    pub fn bid_requirement(&self) -> Option<String> {
        match (&self.bid_scope, &self.bid_role) {
            (None, None) => None,
            (Some(s), None) => Some(format!("scope {s:?}")),
            (None, Some(r)) => Some(format!("role {r:?} in `{}`", self.roles_claim)),
            (Some(s), Some(r)) => Some(format!(
                "scope {s:?} or role {r:?} in `{}`",
                self.roles_claim
            )),
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.algorithms = vec![alg];
        v.leeway = self.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        v
    }

    /// Verifies a JWT and returns its bidder, fetching the provider's keys when the
    /// token names one not cached yet. Counts refusals by reason.
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_counted(token, true).await
    }

    /// Like [`Authenticator::verify`] but never waits for the provider (a key not
    /// cached is fetched in the background and the token refused as
    /// `keys_unavailable`): for a socket's own loop, which must not stall.
    pub async fn verify_cached(&self, token: &str) -> Result<Identity, AuthError> {
        self.verify_counted(token, false).await
    }

    async fn verify_counted(&self, token: &str, fetch: bool) -> Result<Identity, AuthError> {
        let result = self.verify_inner(token, fetch).await;
        if let Err(e) = &result {
            self.metrics
                .auth_refused
                .with_label_values(&[e.reason()])
                .inc();
        }
        result
    }

    async fn verify_inner(&self, token: &str, fetch: bool) -> Result<Identity, AuthError> {
        if !self.has_keys() {
            return Err(AuthError::NoKey);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::invalid("malformed", e.to_string()))?;
        let alg = header.alg;
        let key: Arc<DecodingKey> = match alg {
            Algorithm::HS256 => match &self.hs256 {
                Some(k) => Arc::new(k.clone()),
                None => {
                    return Err(AuthError::invalid(
                        "algorithm",
                        "HS256 tokens are not accepted (no GAVEL_JWT_SECRET)",
                    ));
                }
            },
            Algorithm::HS384 | Algorithm::HS512 => {
                return Err(AuthError::invalid(
                    "algorithm",
                    format!("algorithm {alg:?} is not accepted"),
                ));
            }
            Algorithm::RS256 if self.jwks.is_none() && self.rs256.is_some() => match &self.rs256 {
                Some(k) => Arc::new(k.clone()),
                None => return Err(AuthError::NoKey),
            },
            _ => match &self.jwks {
                Some(jwks) => {
                    let found = if fetch {
                        jwks.key_for(header.kid.as_deref(), alg).await
                    } else {
                        jwks.key_for_cached(header.kid.as_deref(), alg)
                    };
                    found.map_err(|e| match e {
                        KeyError::Unavailable(_) => AuthError::KeysUnavailable(e.to_string()),
                        KeyError::AlgorithmMismatch { .. } => {
                            AuthError::invalid("algorithm", e.to_string())
                        }
                        KeyError::UnknownKid(_) | KeyError::NoKid(_) => {
                            AuthError::invalid("unknown_key", e.to_string())
                        }
                    })?
                }
                None => {
                    return Err(AuthError::invalid(
                        "algorithm",
                        format!("algorithm {alg:?} is not accepted"),
                    ));
                }
            },
        };
        let data =
            jsonwebtoken::decode::<Value>(token, &key, &self.validation(alg)).map_err(|e| {
                let reason = match e.kind() {
                    ErrorKind::ExpiredSignature => "expired",
                    ErrorKind::ImmatureSignature => "not_yet_valid",
                    ErrorKind::InvalidIssuer => "issuer",
                    ErrorKind::InvalidAudience => "audience",
                    ErrorKind::InvalidSignature => "signature",
                    ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm",
                    ErrorKind::MissingRequiredClaim(c) if c == "iss" => "issuer",
                    ErrorKind::MissingRequiredClaim(c) if c == "aud" => "audience",
                    ErrorKind::MissingRequiredClaim(_) => "claims",
                    _ => "malformed",
                };
                let message = match e.kind() {
                    ErrorKind::MissingRequiredClaim(c) => format!("missing required claim `{c}`"),
                    _ => e.to_string(),
                };
                AuthError::invalid(reason, message)
            })?;
        self.identity(&data.claims)
    }

    /// The bidder and rights of verified claims.
    fn identity(&self, claims: &Value) -> Result<Identity, AuthError> {
        let id = match claim(claims, &self.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(AuthError::invalid(
                    "claims",
                    format!("missing bidder id claim `{}`", self.subject_claim),
                ));
            }
        };
        let name = claim(claims, &self.name_claim)
            .and_then(Value::as_str)
            .and_then(display_name)
            .or_else(|| display_name(&id))
            .unwrap_or_else(|| id.clone());
        let name = if self.name_tag && name != id {
            tagged_name(&name, &id)
        } else {
            name
        };
        let may_bid = (self.bid_scope.is_none() && self.bid_role.is_none())
            || self.bid_scope.as_deref().is_some_and(|scope| {
                claim_contains(claims.get("scope"), scope)
                    || claim_contains(claims.get("scp"), scope)
            })
            || self
                .bid_role
                .as_deref()
                .is_some_and(|role| claim_contains(claim(claims, &self.roles_claim), role));
        let bidder = Bidder::new(id, name).map_err(|e| AuthError::InvalidBidder(e.to_string()))?;
        Ok(Identity {
            bidder,
            expires_at: claims.get("exp").and_then(Value::as_u64),
            may_bid,
        })
    }

    /// The identity of a development-mode `?bidder=<name>` (only when dev auth is on).
    pub fn dev_identity(&self, name: &str) -> Option<Result<Identity, AuthError>> {
        if !self.dev_auth {
            return None;
        }
        Some(
            Bidder::new(name, name)
                .map(|bidder| Identity {
                    bidder,
                    expires_at: None,
                    may_bid: true,
                })
                .map_err(|e| AuthError::InvalidBidder(e.to_string())),
        )
    }
}

/// What a WebSocket upgrade presents as its identity: where a token may be, and the
/// development `?bidder=`.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpgradeCredentials<'a> {
    /// The `Authorization` header.
    pub authorization: Option<&'a str>,
    /// The offered subprotocols, split at commas.
    pub subprotocols: &'a [String],
    /// `?token=`.
    pub query_token: Option<&'a str>,
    /// `?bidder=` (development auth only).
    pub query_bidder: Option<&'a str>,
}

/// Why an upgrade's identity was refused.
#[derive(Debug, thiserror::Error)]
pub enum IdentityRefused {
    /// The token did not verify, or the provider's keys could not be fetched
    /// ([`AuthError::is_temporary`]).
    #[error(transparent)]
    Token(AuthError),
    /// `?bidder=` named no valid development bidder.
    #[error(transparent)]
    DevBidder(AuthError),
    /// `?bidder=` without development auth.
    #[error("?bidder= needs development auth (GAVEL_DEV_AUTH=true); send a token")]
    DevAuthOff,
}

impl Authenticator {
    /// The identity of a WebSocket upgrade: a token's (looked for by [`find_token`]) when
    /// one is sent, else a development `?bidder=`'s, else none (an anonymous watcher).
    pub async fn upgrade_identity(
        &self,
        credentials: UpgradeCredentials<'_>,
    ) -> Result<Option<Identity>, IdentityRefused> {
        let token = find_token(
            credentials.authorization,
            credentials.subprotocols,
            credentials.query_token,
        );
        if let Some(token) = token {
            return self
                .verify(&token)
                .await
                .map(Some)
                .map_err(IdentityRefused::Token);
        }
        match credentials.query_bidder.map(|b| self.dev_identity(b)) {
            Some(Some(Ok(identity))) => Ok(Some(identity)),
            Some(Some(Err(e))) => Err(IdentityRefused::DevBidder(e)),
            Some(None) => Err(IdentityRefused::DevAuthOff),
            None => Ok(None),
        }
    }
}

/// Reads the token of an upgrade request: `Authorization: Bearer`, then a
/// `bearer.<jwt>` subprotocol entry, then `?token=`.
pub fn find_token(
    authorization: Option<&str>,
    subprotocols: &[String],
    query_token: Option<&str>,
) -> Option<String> {
    if let Some(auth) = authorization {
        let auth = auth.trim();
        if auth.len() > 7 && auth[..7].eq_ignore_ascii_case("bearer ") {
            return Some(auth[7..].trim().to_owned());
        }
    }
    if let Some(t) = subprotocols
        .iter()
        .find_map(|p| p.trim().strip_prefix("bearer."))
    {
        return Some(t.to_owned());
    }
    query_token.filter(|t| !t.is_empty()).map(str::to_owned)
}

/// Whether a browser `Origin` may open a WebSocket: same origin as `host`, or on the
/// allow-list (`*` allows any).
pub fn origin_allowed(origin: &str, host: Option<&str>, allowed: &HashSet<String>) -> bool {
    let origin = origin.trim().trim_end_matches('/');
    if allowed.contains("*") || allowed.contains(&origin.to_ascii_lowercase()) {
        return true;
    }
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn auth_with(args: &[&str]) -> Authenticator {
        let mut argv = vec!["x"];
        if !args.contains(&"--jwt-leeway") {
            argv.extend(["--jwt-leeway", "0s"]);
        }
        argv.extend_from_slice(args);
        let config = Config::try_parse_from(argv).unwrap();
        Authenticator::new(&config, Metrics::new().unwrap()).unwrap()
    }

    fn auth(secret: &str) -> Authenticator {
        auth_with(&["--jwt-secret", secret])
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn reason(a: &Authenticator, token: &str) -> &'static str {
        futures::executor::block_on(a.verify(token))
            .unwrap_err()
            .reason()
    }

    #[tokio::test]
    async fn verifies_hs256_and_refuses_forgeries() {
        let a = auth("s3cret");
        let exp = unix_now() + 600;
        let id = a
            .verify(&token("s3cret", json!({"sub":"u1","name":"Ann","exp":exp})))
            .await
            .unwrap();
        assert_eq!(id.bidder.id, "u1");
        assert_eq!(id.bidder.name, tagged_name("Ann", "u1"));
        assert!(id.may_bid);
        assert!(id.valid_at(unix_now(), Duration::ZERO));
        assert!(!id.valid_at(exp + 1, Duration::ZERO));
        let no_name = a
            .verify(&token("s3cret", json!({"sub":"u2","exp":exp})))
            .await
            .unwrap();
        assert_eq!(no_name.bidder.name, "u2");
        for (bad, why) in [
            (token("other", json!({"sub":"u1","exp":exp})), "signature"),
            (
                token("s3cret", json!({"sub":"u1","exp":unix_now() - 10})),
                "expired",
            ),
            (token("s3cret", json!({"sub":"u1"})), "claims"),
            (token("s3cret", json!({"sub":"","exp":exp})), "claims"),
            (token("s3cret", json!({"exp":exp})), "claims"),
            ("garbage".to_owned(), "malformed"),
        ] {
            assert_eq!(reason(&a, &bad), why, "{bad}");
        }
    }

    /// Issue #10 part 2: a configured issuer or audience is required, and `nbf` is
    /// checked with the leeway.
    #[tokio::test]
    async fn configured_claims_are_required_and_nbf_is_checked() {
        let a = auth_with(&[
            "--jwt-secret",
            "k",
            "--jwt-issuer",
            "https://idp.example",
            "--jwt-audience",
            "gavel",
        ]);
        let exp = unix_now() + 600;
        let good = json!({"sub":"u","exp":exp,"iss":"https://idp.example","aud":["other","gavel"]});
        assert!(a.verify(&token("k", good.clone())).await.is_ok());
        let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
            let mut claims = good.as_object().unwrap().clone();
            f(&mut claims);
            token("k", Value::Object(claims))
        };
        assert_eq!(
            reason(
                &a,
                &with(&|c| {
                    c.remove("iss");
                })
            ),
            "issuer"
        );
        assert_eq!(
            reason(
                &a,
                &with(&|c| {
                    c.remove("aud");
                })
            ),
            "audience"
        );
        assert_eq!(
            reason(
                &a,
                &with(&|c| {
                    c.insert("iss".into(), json!("https://evil.example"));
                })
            ),
            "issuer"
        );
        assert_eq!(
            reason(
                &a,
                &with(&|c| {
                    c.insert("aud".into(), json!("other"));
                })
            ),
            "audience"
        );
        assert_eq!(
            reason(
                &a,
                &with(&|c| {
                    c.insert("nbf".into(), json!(unix_now() + 120));
                })
            ),
            "not_yet_valid"
        );
        assert!(
            a.verify(&with(&|c| {
                c.insert("nbf".into(), json!(unix_now() - 5));
            }))
            .await
            .is_ok()
        );
        // The leeway covers `nbf` too.
        let lenient = auth_with(&["--jwt-secret", "k", "--jwt-leeway", "60s"]);
        let soon = token("k", json!({"sub":"u","exp":exp,"nbf":unix_now() + 30}));
        assert!(lenient.verify(&soon).await.is_ok());
        let later = token("k", json!({"sub":"u","exp":exp,"nbf":unix_now() + 300}));
        assert_eq!(reason(&lenient, &later), "not_yet_valid");
    }

    #[tokio::test]
    async fn configurable_claims_and_bid_rights() {
        let a = auth_with(&[
            "--jwt-secret",
            "k",
            "--jwt-subject-claim",
            "user.id",
            "--jwt-name-claim",
            "preferred_username",
            "--jwt-bid-scope",
            "bid",
            "--jwt-bid-role",
            "bidder",
            "--jwt-roles-claim",
            "realm_access.roles",
        ]);
        let exp = unix_now() + 600;
        let id = a
            .verify(&token(
                "k",
                json!({"user":{"id":"u7"},"preferred_username":"ann","exp":exp,"scope":"watch bid"}),
            ))
            .await
            .unwrap();
        assert_eq!(id.bidder.id, "u7");
        assert!(id.bidder.name.starts_with("ann #"), "{}", id.bidder.name);
        assert!(id.may_bid);
        let by_role = a
            .verify(&token(
                "k",
                json!({"user":{"id":"u8"},"exp":exp,"realm_access":{"roles":["bidder"]}}),
            ))
            .await
            .unwrap();
        assert!(by_role.may_bid);
        let by_scp = a
            .verify(&token(
                "k",
                json!({"user":{"id":"u9"},"exp":exp,"scp":["bid"]}),
            ))
            .await
            .unwrap();
        assert!(by_scp.may_bid);
        let watcher = a
            .verify(&token(
                "k",
                json!({"user":{"id":"w"},"exp":exp,"scope":"watch bidding"}),
            ))
            .await
            .unwrap();
        assert!(!watcher.may_bid);
        assert!(a.bid_requirement().unwrap().contains("bid"));
        assert_eq!(
            reason(&a, &token("k", json!({"sub":"u","exp":exp}))),
            "claims"
        );
    }

    #[test]
    fn display_names_cannot_hide_or_reorder_text() {
        assert_eq!(display_name("  Ann   Lee "), Some("Ann Lee".into()));
        assert_eq!(display_name("Al\u{200B}ice"), None);
        assert_eq!(display_name("\u{202E}ecilA"), None);
        assert_eq!(display_name("Bob\u{2066}"), None);
        assert_eq!(display_name("tab\there"), None);
        assert_eq!(display_name("   "), None);
        assert_eq!(display_name("Zoë 李"), Some("Zoë 李".into()));
        let long = "x".repeat(500);
        assert_eq!(
            display_name(&long).map(|n| n.chars().count()),
            Some(gavel_engine::client::MAX_BIDDER_NAME_CHARS)
        );
    }

    #[tokio::test]
    async fn hidden_characters_fall_back_to_the_bidder_id() {
        let a = auth("k");
        let exp = unix_now() + 600;
        let id = a
            .verify(&token(
                "k",
                json!({"sub":"u-42","name":"Ali\u{200D}ce","exp":exp}),
            ))
            .await
            .unwrap();
        assert_eq!(id.bidder.name, "u-42");
    }

    #[tokio::test]
    async fn names_carry_a_stable_tag_of_the_bidder_id() {
        let a = auth_with(&["--jwt-secret", "k", "--display-name-tag"]);
        let exp = unix_now() + 600;
        let name_of = |sub: &str, name: &str| {
            futures::executor::block_on(
                a.verify(&token("k", json!({"sub":sub,"name":name,"exp":exp}))),
            )
            .unwrap()
            .bidder
            .name
        };
        let alice = name_of("alice-id", "Alice");
        let impostor = name_of("mallory-id", "Alice");
        assert!(
            alice.starts_with("Alice #") && alice.len() == "Alice #".len() + 5,
            "{alice}"
        );
        assert_ne!(alice, impostor);
        assert_eq!(alice, name_of("alice-id", "Alice"), "stable");
        assert_eq!(alice, tagged_name("Alice", "alice-id"));
        // A name that is the id needs no tag; long names are cut to fit.
        assert_eq!(name_of("bob", "bob"), "bob");
        let long = name_of("x", &"n".repeat(200));
        assert_eq!(
            long.chars().count(),
            gavel_engine::client::MAX_BIDDER_NAME_CHARS
        );
        let untagged = auth_with(&["--jwt-secret", "k", "--display-name-tag", "false"]);
        let plain = futures::executor::block_on(untagged.verify(&token(
            "k",
            json!({"sub":"alice-id","name":"Alice","exp":exp}),
        )))
        .unwrap();
        assert_eq!(plain.bidder.name, "Alice");
    }

    #[tokio::test]
    async fn no_algorithm_confusion_without_a_provider() {
        let a = auth("k");
        let exp = unix_now() + 600;
        // HS384 with the right secret, RS256 with no public key, `none`.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &json!({"sub":"u","exp":exp}),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert_eq!(reason(&a, &hs384), "algorithm");
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            token("k", json!({"sub":"u","exp":exp}))
                .split('.')
                .nth(1)
                .unwrap()
        );
        assert_eq!(reason(&a, &none), "malformed");
        let unkeyed = auth_with(&[]);
        assert!(matches!(
            unkeyed
                .verify(&token("k", json!({"sub":"u","exp":exp})))
                .await,
            Err(AuthError::NoKey)
        ));
    }

    #[test]
    fn finds_tokens_in_order() {
        assert_eq!(
            find_token(Some("Bearer abc"), &[], Some("q")),
            Some("abc".into())
        );
        assert_eq!(
            find_token(None, &["gavel.v1".into(), "bearer.xyz".into()], Some("q")),
            Some("xyz".into())
        );
        assert_eq!(find_token(None, &[], Some("q")), Some("q".into()));
        assert_eq!(find_token(Some("Basic x"), &[], None), None);
    }

    #[test]
    fn origins() {
        let allowed: HashSet<String> = ["https://shop.example".to_owned()].into();
        assert!(origin_allowed("https://shop.example", None, &allowed));
        assert!(!origin_allowed("https://evil.example", None, &allowed));
        assert!(origin_allowed(
            "http://api.local:8080",
            Some("api.local:8080"),
            &allowed
        ));
        assert!(origin_allowed("https://x", None, &["*".to_owned()].into()));
    }
}
