//! What every Gavel binary shares around its work, written once: the clock in Unix
//! milliseconds, the duration grammar of flags, the log format and subscriber, and the
//! shutdown signal. (Waiting for a dependency with a backoff is [`crate::startup`].)

use std::time::Duration;

use crate::settings::Millis;

/// The wall clock as Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            Millis::try_from(d.as_millis()).unwrap_or(Millis::MAX)
        })
}

/// Reads a duration flag: humantime's grammar (`250ms`, `30s`, `2m`, `1m30s`, `1h`,
/// `1day`; parts may be separated by spaces), or a bare number of seconds (`7`), which
/// the bid-api and the load generator have always accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| format!("invalid duration {text:?}: too large"));
    }
    humantime::parse_duration(text).map_err(|e| {
        format!("invalid duration {text:?} ({e}): expected e.g. 500ms, 30s, 2m, 1m30s or 1h")
    })
}

/// How log lines are written (`GAVEL_LOG_FORMAT`, `--log-format`), the same for every
/// binary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, with the current span's fields (for log collectors).
    #[default]
    Json,
    /// Human-readable lines (for a terminal); coloured only on a terminal.
    Text,
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C): the start of a graceful shutdown.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_one_grammar() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 7 "), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "fast", "1x", "-5s", "1.5.5s", "99999999999999999999999"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_clock_is_unix_milliseconds() {
        // 2020-01-01 and 2100-01-01: a clock in seconds or microseconds would be outside.
        assert!((1_577_836_800_000..4_102_444_800_000).contains(&now_ms()));
    }
}
