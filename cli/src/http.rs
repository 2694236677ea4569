//! A minimal HTTP GET for the REST read endpoints and health checks.
//!
//! It speaks HTTP/1.0 over plain TCP (`http://` only), so the server answers with the
//! whole body and closes the connection: no chunked decoding, no extra dependency.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one request may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Failures of a GET.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Only `http://host[:port]/path` URLs are supported.
    #[error("unsupported URL {0:?} (expected http://host:port/path)")]
    Url(String),
    /// Connecting, writing or reading failed.
    #[error("GET {url}: {source}")]
    Io {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server did not answer in time.
    #[error("GET {0}: timed out")]
    Timeout(String),
    /// The answer is not HTTP.
    #[error("GET {url}: malformed response")]
    Malformed {
        /// The URL.
        url: String,
    },
}

/// A response: status and body.
#[derive(Clone, Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// The body as text.
    pub body: String,
}

impl Response {
    /// The body parsed as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// GETs `url` (`http://host:port/path?query`).
pub async fn get(url: &str) -> Result<Response, HttpError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| HttpError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(HttpError::Url(url.to_owned()));
    }
    let addr = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let io = |source| HttpError::Io {
        url: url.to_owned(),
        source,
    };
    let exchange = async {
        let mut stream = TcpStream::connect(&addr).await.map_err(io)?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.map_err(io)?;
        Ok::<_, HttpError>(raw)
    };
    let raw = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| HttpError::Timeout(url.to_owned()))??;
    parse_response(&raw).ok_or_else(|| HttpError::Malformed {
        url: url.to_owned(),
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    Some(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_response() {
        let r = parse_response(
            b"HTTP/1.0 404 Not Found\r\ncontent-type: application/json\r\n\r\n{\"a\":1}",
        )
        .unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["a"], 1);
        assert!(parse_response(b"garbage").is_none());
    }

    #[tokio::test]
    async fn rejects_other_schemes() {
        assert!(matches!(
            get("https://example.com/").await,
            Err(HttpError::Url(_))
        ));
    }
}
