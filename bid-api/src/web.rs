//! The bidder page: a plain HTML/CSS page and one JavaScript module, compiled into the
//! binary (no separate web server, no CDN, nothing fetched at run time), served by every
//! bid-api on the same origin as its WebSocket and REST endpoints.
//!
//! - `GET /` — the list of open and upcoming auctions (from `GET /v1/auctions`).
//! - `GET /auctions/{ns}/{name}` — one auction, live over `/v1/ws`.
//! - `GET /assets/…` — the stylesheet, the module and the icon.
//! - `GET /v1/config` — what the page needs to know of the server: whether development
//!   auth (`?bidder=<name>`) is on, whether tokens can be verified, the protocol version.
//!
//! Both pages are the same HTML document; the module reads the path. Every response
//! carries a strict Content-Security-Policy (same-origin scripts, styles, connections) and
//! `no-cache` (the assets change with the binary, and are small).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::protocol::PROTOCOL;
use crate::state::AppState;

/// The page (list and auction views).
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// The stylesheet.
pub const APP_CSS: &str = include_str!("../assets/app.css");
/// The module.
pub const APP_JS: &str = include_str!("../assets/app.js");
/// The icon.
pub const ICON_SVG: &str = include_str!("../assets/icon.svg");

/// Same-origin everything; `connect-src 'self'` covers the page's own `ws://`/`wss://`.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes (merged into the router of [`crate::http`]).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(index))
        .route("/auctions/{ns}/{name}", get(auction_page))
        .route(
            "/assets/app.css",
            get(|| asset(APP_CSS, "text/css; charset=utf-8")),
        )
        .route(
            "/assets/app.js",
            get(|| asset(APP_JS, "text/javascript; charset=utf-8")),
        )
        .route("/assets/icon.svg", get(|| asset(ICON_SVG, "image/svg+xml")))
        .route("/v1/config", get(config))
}

fn with_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
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

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    with_headers((StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response())
}

async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8").await
}

async fn auction_page(Path((ns, name)): Path<(String, String)>) -> Response {
    // A malformed name still gets the page, which shows the server's refusal in words;
    // but not a page for a path that cannot be an auction at all.
    if gavel_engine::AuctionId::new(&ns, &name).is_err() {
        return with_headers(
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "not an auction name (<namespace>/<name>, Kubernetes names)\n",
            )
                .into_response(),
        );
    }
    index().await
}

async fn config(State(state): State<Arc<AppState>>) -> Response {
    let body = json!({
        "dev_auth": state.auth.dev_auth(),
        "token_auth": state.auth.has_keys(),
        "protocol": PROTOCOL,
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
