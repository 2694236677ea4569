//! Durations as manifests write them: `60s`, `2m`, `1m30s`, `1.5s`, `250ms`, `1h`.
//!
//! The grammar is the subset of Go's `time.ParseDuration` that the CRD's schema pattern
//! admits (units `ms`, `s`, `m`, `h`; no sign, no spaces), so the API server's `format:
//! duration` and the operator agree on every value.

use crate::SpecError;
use gavel_engine::Millis;

/// The longest duration text accepted.
pub const MAX_LEN: usize = 32;

/// Parses a duration into whole milliseconds (fractions of a millisecond round down).
pub fn parse_ms(field: &str, text: &str) -> Result<Millis, SpecError> {
    let bad = || SpecError {
        field: field.to_owned(),
        message: format!(
            "{text:?} is not a duration such as 60s, 2m, 1m30s or 500ms (units ms, s, m, h)"
        ),
    };
    if text.is_empty() || text.len() > MAX_LEN {
        return Err(bad());
    }
    let bytes = text.as_bytes();
    let mut i = 0;
    // Accumulate in microseconds to keep fractions exact enough; bounded by MAX_LEN.
    let mut total_us: i128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(bad());
        }
        let whole: i128 = text[start..i].parse().map_err(|_| bad())?;
        let mut frac_num: i128 = 0;
        let mut frac_den: i128 = 1;
        if i < bytes.len() && bytes[i] == b'.' {
            i += 1;
            let fs = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                if frac_den < 1_000_000_000 {
                    frac_num = frac_num * 10 + i128::from(bytes[i] - b'0');
                    frac_den *= 10;
                }
                i += 1;
            }
            if i == fs {
                return Err(bad());
            }
        }
        let unit_us: i128 = if text[i..].starts_with("ms") {
            i += 2;
            1_000
        } else if text[i..].starts_with('s') {
            i += 1;
            1_000_000
        } else if text[i..].starts_with('m') {
            i += 1;
            60_000_000
        } else if text[i..].starts_with('h') {
            i += 1;
            3_600_000_000
        } else {
            return Err(bad());
        };
        total_us = total_us
            .checked_add(whole.checked_mul(unit_us).ok_or_else(bad)?)
            .and_then(|t| t.checked_add(frac_num * unit_us / frac_den))
            .ok_or_else(bad)?;
    }
    Millis::try_from(total_us / 1_000).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        for (text, ms) in [
            ("60s", 60_000),
            ("2m", 120_000),
            ("1m30s", 90_000),
            ("1.5s", 1_500),
            ("250ms", 250),
            ("1h", 3_600_000),
            ("1h0m1s", 3_601_000),
            ("0s", 0),
            ("24h", 86_400_000),
        ] {
            assert_eq!(parse_ms("f", text), Ok(ms), "{text}");
        }
    }

    #[test]
    fn refuses_anything_else_without_panicking() {
        for text in [
            "",
            "60",
            "s",
            "-1s",
            "1d",
            "1 s",
            "1.s",
            ".5s",
            "1us",
            "1ns",
            "99999999999999999999999999999h",
            "1sm",
            "１s",
            &"9".repeat(40),
        ] {
            let err = parse_ms("softClose.window", text).unwrap_err();
            assert_eq!(err.field, "softClose.window");
            assert!(err.message.contains("60s"), "{text}: {}", err.message);
        }
    }
}
