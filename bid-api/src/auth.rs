//! Who is on a connection: JWT verification (HS256 secret or RS256 public key), the
//! development `?bidder=` mode, and the token's expiry, re-checked on every bid so that a
//! token expiring mid-connection stops bidding.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gavel_engine::Bidder;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Config;

/// Why a token or identity was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token is malformed, forged, expired or for someone else.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// A token was sent but no verification key is configured.
    #[error("tokens are not accepted: no GAVEL_JWT_SECRET or GAVEL_JWT_PUBLIC_KEY is configured")]
    NoKey,
    /// The claims do not make a valid bidder.
    #[error("invalid bidder identity: {0}")]
    InvalidBidder(String),
}

/// A configuration problem found at start-up.
#[derive(Debug, thiserror::Error)]
#[error("JWT configuration: {0}")]
pub struct AuthConfigError(String);

/// An authenticated bidder and when its token stops being valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The bidder (`sub`, `name`).
    pub bidder: Bidder,
    /// Unix seconds after which (plus leeway) the bidder may no longer bid.
    pub expires_at: Option<u64>,
}

impl Identity {
    /// Whether the identity may still bid at `now` (Unix seconds).
    pub fn valid_at(&self, now: u64, leeway: Duration) -> bool {
        self.expires_at
            .is_none_or(|exp| now <= exp.saturating_add(leeway.as_secs()))
    }
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    name: Option<String>,
    exp: Option<u64>,
}

/// Verifies tokens as configured.
pub struct Authenticator {
    hs256: Option<DecodingKey>,
    rs256: Option<DecodingKey>,
    validation_hs: Validation,
    validation_rs: Validation,
    leeway: Duration,
    dev_auth: bool,
}

/// Current Unix time in seconds.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// Builds the verifier from the configuration (reads the public key file if a path
    /// was given).
    pub fn new(config: &Config) -> Result<Self, AuthConfigError> {
        let hs256 = config
            .jwt_secret
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let rs256 = match config.jwt_public_key.as_ref().filter(|s| !s.is_empty()) {
            Some(key) => {
                let pem = if key.trim_start().starts_with("-----BEGIN") {
                    key.clone()
                } else {
                    std::fs::read_to_string(key).map_err(|e| {
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
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.leeway = config.jwt_leeway.as_secs();
            v.set_required_spec_claims(&["exp", "sub"]);
            v.validate_aud = false;
            if let Some(aud) = &config.jwt_audience {
                v.set_audience(&[aud]);
                v.validate_aud = true;
            }
            if let Some(iss) = &config.jwt_issuer {
                v.set_issuer(&[iss]);
            }
            v
        };
        Ok(Self {
            hs256,
            rs256,
            validation_hs: validation(Algorithm::HS256),
            validation_rs: validation(Algorithm::RS256),
            leeway: config.jwt_leeway,
            dev_auth: config.dev_auth,
        })
    }

    /// Whether any token can be verified.
    pub fn has_keys(&self) -> bool {
        self.hs256.is_some() || self.rs256.is_some()
    }

    /// Whether development mode is on.
    pub fn dev_auth(&self) -> bool {
        self.dev_auth
    }

    /// The clock-skew leeway.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Verifies a JWT and returns its bidder.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if !self.has_keys() {
            return Err(AuthError::NoKey);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => (self.hs256.as_ref(), &self.validation_hs),
            Algorithm::RS256 => (self.rs256.as_ref(), &self.validation_rs),
            other => {
                return Err(AuthError::InvalidToken(format!(
                    "algorithm {other:?} is not accepted"
                )));
            }
        };
        let key = key.ok_or_else(|| {
            AuthError::InvalidToken(format!("no key configured for {:?}", header.alg))
        })?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::InvalidToken(e.to_string()))?;
        let claims = data.claims;
        let name = claims
            .name
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| claims.sub.clone());
        let bidder =
            Bidder::new(claims.sub, name).map_err(|e| AuthError::InvalidBidder(e.to_string()))?;
        Ok(Identity {
            bidder,
            expires_at: claims.exp,
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
                })
                .map_err(|e| AuthError::InvalidBidder(e.to_string())),
        )
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

    fn auth(secret: &str) -> Authenticator {
        let config =
            Config::try_parse_from(["x", "--jwt-secret", secret, "--jwt-leeway", "0s"]).unwrap();
        Authenticator::new(&config).unwrap()
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn verifies_hs256_and_refuses_forgeries() {
        let a = auth("s3cret");
        let exp = unix_now() + 600;
        let id = a
            .verify(&token("s3cret", json!({"sub":"u1","name":"Ann","exp":exp})))
            .unwrap();
        assert_eq!(
            (id.bidder.id.as_str(), id.bidder.name.as_str()),
            ("u1", "Ann")
        );
        assert!(id.valid_at(unix_now(), Duration::ZERO));
        assert!(!id.valid_at(exp + 1, Duration::ZERO));
        let no_name = a
            .verify(&token("s3cret", json!({"sub":"u2","exp":exp})))
            .unwrap();
        assert_eq!(no_name.bidder.name, "u2");
        for bad in [
            token("other", json!({"sub":"u1","exp":exp})),
            token("s3cret", json!({"sub":"u1","exp":unix_now() - 10})),
            token("s3cret", json!({"sub":"u1"})),
            token("s3cret", json!({"sub":"","exp":exp})),
            "garbage".to_owned(),
        ] {
            assert!(a.verify(&bad).is_err(), "{bad}");
        }
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
