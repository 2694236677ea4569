//! The bidder page: a plain HTML/CSS page and one JavaScript module, compiled into the
//! binary (no separate web server, no CDN, nothing fetched at run time), served by every
//! bid-api on the same origin as its WebSocket and REST endpoints.
//!
//! - `GET /` — the list of open and upcoming auctions (from `GET /v1/auctions`).
//! - `GET /auctions/{ns}/{name}` — one auction, live over `/v1/ws`.
//! - `GET /assets/…` — the stylesheet, the module and the icon.
//! - `GET /auth/callback` — where the identity provider sends the bidder back after
//!   signing in (the page exchanges the code itself, with PKCE).
//! - `GET /v1/config` — what the page needs to know of the server: whether development
//!   auth (`?bidder=<name>`) is on, whether tokens can be verified, the protocol version,
//!   and the identity provider the page signs bidders in with, if configured.
//!
//! Both pages are the same HTML document; the module reads the path. Every response
//! carries a strict Content-Security-Policy (same-origin scripts, styles, connections; the
//! identity provider's origin too when the page signs bidders in) and `no-cache` (the
//! assets change with the binary, and are small).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::config::Config;
use crate::protocol::PROTOCOL;
use crate::state::AppState;

/// The page (list and auction views).
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The page's stylesheet, served at `/assets/app.css`.
pub const APP_CSS: &str = include_str!("../assets/app.css");
/// The page's JavaScript module (WebSocket client, sign-in), served at `/assets/app.js`.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The page's icon, served at `/assets/icon.svg`.
pub const ICON_SVG: &str = include_str!("../assets/icon.svg");

/// Same-origin everything; `connect-src 'self'` covers the page's own `ws://`/`wss://`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How the page signs bidders in with the identity provider, when it does: the issuer
/// and the page's public client (`--oidc-page-client-id`).
pub struct PageSignIn<'a> {
    /// The issuer (`--oidc-issuer`), whose discovery document the page reads.
    pub issuer: &'a str,
    /// The page's client id.
    pub client_id: &'a str,
    /// Scopes asked for.
    pub scope: &'a str,
    /// Resource indicator sent along, if any.
    pub resource: Option<&'a str>,
}

impl<'a> PageSignIn<'a> {
    /// The page's sign-in settings: both an issuer and a page client id configured.
    pub fn from_config(config: &'a Config) -> Option<Self> {
        let non_empty = |v: &'a Option<String>| v.as_deref().filter(|v| !v.is_empty());
        Some(Self {
            issuer: non_empty(&config.oidc_issuer)?,
            client_id: non_empty(&config.oidc_page_client_id)?,
            scope: &config.oidc_page_scope,
            resource: non_empty(&config.oidc_page_resource),
        })
    }

    /// The issuer's origin (`scheme://host[:port]`), which the page's discovery, token
    /// and refresh requests go to; `None` for an issuer that is not an http(s) URL.
    pub fn origin(&self) -> Option<String> {
        let url = reqwest::Url::parse(self.issuer).ok()?;
        matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
    }
}

/// The page's Content-Security-Policy: [`CSP`], plus the issuer's origin in `connect-src`
/// when the page signs bidders in.
pub fn content_security_policy(config: &Config) -> HeaderValue {
    let origin = PageSignIn::from_config(config).and_then(|p| p.origin());
    match origin {
        Some(origin) => HeaderValue::from_str(&CSP.replace(
            "connect-src 'self'",
            &format!("connect-src 'self' {origin}"),
        ))
        .unwrap_or(HeaderValue::from_static(CSP)),
        None => HeaderValue::from_static(CSP),
    }
}

/// The page's routes (merged into the router of [`crate::http`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/auth/callback", get(index))
        .route("/auctions/{ns}/{name}", get(auction_page))
        .route(
            "/assets/app.css",
            get(|State(s): State<Arc<AppState>>| asset(s, APP_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/app.js",
            get(|State(s): State<Arc<AppState>>| {
                asset(s, APP_JS, "text/javascript; charset=utf-8")
            }),
        )
        .route(
            "/assets/icon.svg",
            get(|State(s): State<Arc<AppState>>| asset(s, ICON_SVG, "image/svg+xml")),
        )
        .route("/v1/config", get(config))
}

fn with_headers(state: &AppState, mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        content_security_policy(&state.config),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

async fn asset(state: Arc<AppState>, body: &'static str, content_type: &'static str) -> Response {
    with_headers(
        &state,
        (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response(),
    )
}

async fn index(State(state): State<Arc<AppState>>) -> Response {
    asset(state, INDEX_HTML, "text/html; charset=utf-8").await
}

async fn auction_page(
    State(state): State<Arc<AppState>>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    // A malformed name still gets the page, which shows the server's refusal in words;
    // but not a page for a path that cannot be an auction at all.
    if gavel_engine::AuctionId::new(&ns, &name).is_err() {
        return with_headers(
            &state,
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "not an auction name (<namespace>/<name>, Kubernetes names)\n",
            )
                .into_response(),
        );
    }
    index(State(state)).await
}

async fn config(State(state): State<Arc<AppState>>) -> Response {
    let oidc = PageSignIn::from_config(&state.config).map(|p| {
        json!({
            "issuer": p.issuer,
            "client_id": p.client_id,
            "scope": p.scope,
            "resource": p.resource,
        })
    });
    let body = json!({
        "dev_auth": state.auth.dev_auth(),
        "token_auth": state.auth.has_keys(),
        "protocol": PROTOCOL,
        "oidc": oidc,
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_lets_the_page_reach_its_identity_provider_only_when_it_signs_in() {
        let parse = |args: &[&str]| {
            let mut argv = vec!["gavel-bid-api"];
            argv.extend_from_slice(args);
            <Config as clap::Parser>::try_parse_from(argv).unwrap()
        };
        let plain = parse(&["--oidc-issuer", "https://id.example/realms/shop"]);
        assert_eq!(content_security_policy(&plain), CSP);
        let page = parse(&[
            "--oidc-issuer",
            "https://id.example:8443/realms/shop",
            "--oidc-page-client-id",
            "gavel-page",
        ]);
        let csp = content_security_policy(&page);
        assert!(
            csp.to_str()
                .unwrap()
                .contains("connect-src 'self' https://id.example:8443;"),
            "{csp:?}"
        );
        assert_eq!(
            PageSignIn::from_config(&page).map(|p| (p.client_id, p.scope)),
            Some(("gavel-page", "openid"))
        );
    }

    /// Every asset the page links to is served, and the module names only elements the
    /// page has (a renamed id would leave a view silently empty).
    #[test]
    fn the_page_links_served_assets_and_has_every_element_the_module_uses() {
        for link in ["/assets/app.css", "/assets/app.js", "/assets/icon.svg"] {
            assert!(INDEX_HTML.contains(link), "{link} not linked");
        }
        let mut rest = APP_JS;
        let mut ids = Vec::new();
        while let Some(i) = rest.find("$(\"") {
            rest = &rest[i + 3..];
            if let Some(end) = rest.find('"') {
                ids.push(&rest[..end]);
            }
        }
        assert!(ids.len() > 20, "{ids:?}");
        for id in ids {
            assert!(
                INDEX_HTML.contains(&format!("id=\"{id}\"")),
                "app.js uses #{id}, missing in index.html"
            );
        }
    }
}
