//! The WebSocket protocol v1 as the `gavel` CLI, the demo and the end-to-end tests speak
//! it: the one shared model, [`gavel_protocol`] (a client accepts what the protocol says,
//! nothing more), and the RFC 3339 rendering of its Unix-millisecond times for people.

pub use gavel_protocol::*;

/// Parses an RFC 3339 time into Unix milliseconds (user input: `--ends-at`, manifests).
pub fn parse_rfc3339(s: &str) -> Result<Millis, String> {
    s.trim()
        .parse::<jiff::Timestamp>()
        .map(|t| t.as_millisecond())
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Formats Unix milliseconds as RFC 3339 (UTC, whole seconds when possible).
pub fn format_rfc3339(ms: Millis) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let ms = parse_rfc3339("2026-12-01T18:00:00Z").unwrap();
        assert_eq!(format_rfc3339(ms), "2026-12-01T18:00:00Z");
        assert!(parse_rfc3339("tomorrow").is_err());
    }
}
