//! Admission limits against slow and abusive clients (issue #10): a cap on every open TCP
//! connection of the process (HTTP included), a cap per client IP, and a rate of
//! WebSocket upgrades per client IP. Refusals are clear HTTP answers (503 or 429 with
//! `Retry-After`) counted in `gavel_connections_refused_total{reason}`.
//!
//! The client IP is the socket's peer, or, behind a proxy, the last address of the
//! configured trusted header (`GAVEL_TRUSTED_PROXY_HEADER`, e.g. `X-Forwarded-For`,
//! whose last entry is the one the proxy appended). With a trusted header the peer is
//! the proxy, so the per-IP cap counts open WebSockets per header IP instead of TCP
//! connections per peer.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};

use crate::config::Config;
use crate::protocol::{ErrorCode, HttpError};

/// Per-IP entries kept before idle ones are swept.
const SWEEP_AT: usize = 10_000;

/// Metrics of the limits.
#[derive(Clone)]
struct LimitMetrics {
    open: IntGauge,
    refused: IntCounterVec,
}

/// Token bucket of one IP's upgrades.
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The process's admission state.
pub struct Limits {
    max_total: usize,
    max_per_ip: usize,
    upgrades_per_second: f64,
    upgrade_burst: f64,
    trusted_header: Option<HeaderName>,
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    metrics: LimitMetrics,
}

/// Why a connection or upgrade was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The process holds its maximum of open connections: 503.
    Total,
    /// The client IP holds its maximum of connections: 429.
    PerIp,
    /// The client IP opens WebSockets too fast: 429.
    UpgradeRate,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Total => "total",
            Refusal::PerIp => "per_ip",
            Refusal::UpgradeRate => "upgrade_rate",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Refusal::Total => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The protocol's code: the server is full, or the client asks too much.
    fn code(self) -> ErrorCode {
        if self == Refusal::Total {
            ErrorCode::Unavailable
        } else {
            ErrorCode::RateLimited
        }
    }

    fn message(self) -> &'static str {
        match self {
            Refusal::Total => "too many connections to this server; retry",
            Refusal::PerIp => "too many connections from your address",
            Refusal::UpgradeRate => {
                "too many WebSocket connections opened from your address; slow down"
            }
        }
    }

    /// The JSON answer, with `Retry-After` (seconds).
    pub fn response(self, retry_after_secs: u64) -> Response {
        let mut response = crate::http::error_body(
            self.status(),
            self.code(),
            Some(self.reason()),
            self.message().to_owned(),
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(retry_after_secs.max(1)),
        );
        response
    }

    /// The same answer as raw HTTP/1.1 bytes, for a socket refused before any request
    /// was read.
    pub fn raw_response(self) -> Vec<u8> {
        let body = HttpError {
            code: self.code(),
            reason: Some(self.reason().to_owned()),
            message: self.message().to_owned(),
        }
        .to_json();
        let status = self.status();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nretry-after: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        )
        .into_bytes()
    }
}

/// One admitted connection (or WebSocket) in the counts; released on drop.
pub struct Admitted {
    limits: Arc<Limits>,
    ip: Option<IpAddr>,
    counts_total: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.counts_total {
            self.limits.open.fetch_sub(1, Ordering::SeqCst);
            self.limits.metrics.open.dec();
        }
        if let Some(ip) = self.ip {
            let mut per_ip = self.limits.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_ip.remove(&ip);
                }
            }
        }
    }
}

impl Limits {
    /// The limits of `config`, with their metrics registered in `registry`.
    pub fn new(config: &Config, registry: &Registry) -> prometheus::Result<Arc<Self>> {
        let metrics = LimitMetrics {
            open: IntGauge::new(
                "gavel_http_connections",
                "Open TCP connections (HTTP and WebSocket)",
            )?,
            refused: IntCounterVec::new(
                Opts::new(
                    "gavel_connections_refused_total",
                    "Connections and WebSocket upgrades refused by a limit, by reason (total, per_ip, upgrade_rate)",
                ),
                &["reason"],
            )?,
        };
        registry.register(Box::new(metrics.open.clone()))?;
        registry.register(Box::new(metrics.refused.clone()))?;
        Ok(Arc::new(Self {
            max_total: config.max_tcp_connections,
            max_per_ip: config.max_connections_per_ip,
            upgrades_per_second: config.upgrades_per_ip_per_second,
            upgrade_burst: f64::from(config.upgrade_burst.max(1)),
            trusted_header: config.trusted_proxy_header.clone(),
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            buckets: Mutex::new(HashMap::new()),
            metrics,
        }))
    }

    fn refuse(&self, refusal: Refusal) -> Refusal {
        self.metrics
            .refused
            .with_label_values(&[refusal.reason()])
            .inc();
        refusal
    }

    fn take_ip_slot(self: &Arc<Self>, ip: IpAddr) -> Result<(), Refusal> {
        if self.max_per_ip == 0 {
            return Ok(());
        }
        let mut per_ip = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = per_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err(self.refuse(Refusal::PerIp));
        }
        *n += 1;
        Ok(())
    }

    /// Admits an accepted TCP connection from `peer`, or says why not.
    pub fn admit_connection(self: &Arc<Self>, peer: SocketAddr) -> Result<Admitted, Refusal> {
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.max_total {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(self.refuse(Refusal::Total));
        }
        self.metrics.open.inc();
        let mut admitted = Admitted {
            limits: self.clone(),
            ip: None,
            counts_total: true,
        };
        if self.trusted_header.is_none() {
            self.take_ip_slot(peer.ip())?;
            admitted.ip = Some(peer.ip());
        }
        Ok(admitted)
    }

    /// The client's IP: the last address of the trusted header, else the peer.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        self.trusted_header
            .as_ref()
            .and_then(|name| headers.get_all(name).iter().next_back())
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|v| parse_ip(v.trim()))
            .unwrap_or(peer.ip())
    }

    /// Admits a WebSocket upgrade from `peer` (rate per client IP and, behind a trusted
    /// proxy, open WebSockets per client IP). Keep the guard for the socket's life.
    pub fn admit_upgrade(
        self: &Arc<Self>,
        peer: SocketAddr,
        headers: &HeaderMap,
    ) -> Result<Option<Admitted>, (Refusal, u64)> {
        let ip = self.client_ip(peer, headers);
        // Behind a trusted proxy: open WebSockets per client IP (released on refusal).
        let guard = if self.trusted_header.is_some() {
            self.take_ip_slot(ip).map_err(|r| (r, 1))?;
            Some(Admitted {
                limits: self.clone(),
                ip: Some(ip),
                counts_total: false,
            })
        } else {
            None
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if buckets.len() >= SWEEP_AT {
            let full = self.upgrade_burst;
            let rate = self.upgrades_per_second;
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < full);
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: self.upgrade_burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens
            + now.duration_since(bucket.at).as_secs_f64() * self.upgrades_per_second)
            .min(self.upgrade_burst);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let wait = (1.0 - bucket.tokens) / self.upgrades_per_second.max(0.001);
            return Err((self.refuse(Refusal::UpgradeRate), wait.ceil() as u64));
        }
        bucket.tokens -= 1.0;
        Ok(guard)
    }
}

/// An IP from a header entry (`1.2.3.4`, `1.2.3.4:5678`, `[::1]:80`, `::1`).
fn parse_ip(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn limits(args: &[&str]) -> Arc<Limits> {
        let mut argv = vec!["x"];
        argv.extend_from_slice(args);
        Limits::new(&Config::try_parse_from(argv).unwrap(), &Registry::new()).unwrap()
    }

    fn peer(ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), 40000)
    }

    #[test]
    fn total_and_per_ip_caps_release_on_drop() {
        let l = limits(&[
            "--max-tcp-connections",
            "3",
            "--max-connections-per-ip",
            "2",
        ]);
        let a1 = l.admit_connection(peer("10.0.0.1")).unwrap();
        let _a2 = l.admit_connection(peer("10.0.0.1")).unwrap();
        assert_eq!(
            l.admit_connection(peer("10.0.0.1")).err(),
            Some(Refusal::PerIp)
        );
        let _b = l.admit_connection(peer("10.0.0.2")).unwrap();
        assert_eq!(
            l.admit_connection(peer("10.0.0.3")).err(),
            Some(Refusal::Total)
        );
        drop(a1);
        assert!(l.admit_connection(peer("10.0.0.1")).is_ok());
    }

    #[test]
    fn client_ip_from_the_trusted_header_only() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        let plain = limits(&[]);
        assert_eq!(plain.client_ip(peer("10.0.0.9"), &h), peer("10.0.0.9").ip());
        let proxied = limits(&["--trusted-proxy-header", "X-Forwarded-For"]);
        assert_eq!(
            proxied.client_ip(peer("10.0.0.9"), &h),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(
            proxied.client_ip(peer("10.0.0.9"), &h),
            peer("10.0.0.9").ip()
        );
    }

    #[test]
    fn upgrade_rate_per_ip() {
        let l = limits(&["--upgrades-per-ip-per-second", "1", "--upgrade-burst", "2"]);
        let h = HeaderMap::new();
        assert!(l.admit_upgrade(peer("10.0.0.1"), &h).is_ok());
        assert!(l.admit_upgrade(peer("10.0.0.1"), &h).is_ok());
        let Err((refusal, retry)) = l.admit_upgrade(peer("10.0.0.1"), &h) else {
            panic!("third upgrade admitted");
        };
        assert_eq!((refusal, retry), (Refusal::UpgradeRate, 1));
        assert!(l.admit_upgrade(peer("10.0.0.2"), &h).is_ok());
    }
}
