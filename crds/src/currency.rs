//! ISO 4217 currencies, from the maintained `iso_currency` crate (not a hand list): which
//! codes an Auction may use and how many decimals their minor unit has.
//!
//! An Auction counts every amount in its currency's minor unit, so only currencies that
//! ISO 4217 gives a minor unit are accepted (not gold, `XXX` or the SDR's peers without
//! one). The CRD carries the same list in a CEL rule ([`cel_rule`]), so the API server and
//! the operator agree.

use iso_currency::Currency;

use crate::SpecError;

/// Every ISO 4217 code with a minor unit, sorted.
pub fn codes() -> Vec<&'static str> {
    // The crate has no iterator without an extra proc-macro dependency; the 17,576
    // three-letter codes are looked up instead (microseconds, once per CRD generation).
    let mut out = Vec::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            for c in b'A'..=b'Z' {
                let code = [a, b, c];
                let Ok(code) = std::str::from_utf8(&code) else {
                    continue;
                };
                if let Some(currency) = Currency::from_code(code)
                    && currency.exponent().is_some()
                {
                    out.push(currency.code());
                }
            }
        }
    }
    out
}

/// Decimals of the currency's minor unit (2 for USD, 0 for JPY, 3 for BHD), or `None` for
/// a code ISO 4217 does not list or gives no minor unit.
pub fn minor_units(code: &str) -> Option<u16> {
    Currency::from_code(code)?.exponent()
}

/// Checks `spec.currency`.
pub fn check(code: &str) -> Result<(), SpecError> {
    match Currency::from_code(code) {
        Some(currency) if currency.exponent().is_some() => Ok(()),
        Some(currency) => Err(SpecError {
            field: "currency".into(),
            message: format!(
                "{code:?} ({}) has no minor unit in ISO 4217, and every amount of an auction \
                 is counted in minor units; use a currency such as USD, EUR or JPY",
                currency.name()
            ),
        }),
        None => Err(SpecError {
            field: "currency".into(),
            message: format!("{code:?} is not an ISO 4217 currency code (such as USD, EUR or JPY)"),
        }),
    }
}

/// The CEL rule of the CRD that refuses any other currency.
pub fn cel_rule() -> String {
    let list: Vec<String> = codes().iter().map(|c| format!("'{c}'")).collect();
    format!("self.spec.currency in [{}]", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_come_from_iso_4217() {
        for (code, units) in [("USD", 2), ("EUR", 2), ("JPY", 0), ("BHD", 3), ("KWD", 3)] {
            assert_eq!(minor_units(code), Some(units), "{code}");
            assert!(check(code).is_ok(), "{code}");
        }
        for code in ["XYZ", "usd", "", "USDX", "XAU", "XXX"] {
            assert_eq!(minor_units(code), None, "{code}");
            let err = check(code).unwrap_err();
            assert_eq!(err.field, "currency");
            assert!(err.message.contains("ISO 4217"), "{code}: {}", err.message);
        }
        let all = codes();
        assert!(all.len() > 150, "{}", all.len());
        assert!(all.contains(&"USD") && !all.contains(&"XAU"));
    }
}
