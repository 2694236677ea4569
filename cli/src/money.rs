//! Amounts as people read and type them. The wire and the manifests count integer minor
//! units of the auction's currency; how many decimals a currency has comes from ISO 4217
//! through the `iso_currency` crate ([`gavel_crds::currency::minor_units`]): 2 for USD,
//! 0 for JPY, 3 for BHD and KWD.
//!
//! Reading: an amount written with a decimal point (`105.00`, `105.5`) is in the
//! currency's major unit and is converted with its decimals (USD `105.00` is 10500 minor
//! units); a plain integer (`10500`) is already minor units, as on the wire.

use std::fmt;
use std::str::FromStr;

use crate::protocol::Amount;

/// Decimals of `currency`'s minor unit, or `None` for a code ISO 4217 does not give one.
pub fn decimals(currency: &str) -> Option<u32> {
    gavel_crds::currency::minor_units(currency).map(u32::from)
}

/// `amount` minor units in `currency`'s major unit, without the code: `192` USD →
/// `1.92`, `500` JPY → `500`, `1234` BHD → `1.234`. An unknown currency prints the
/// integer.
pub fn major(amount: Amount, currency: &str) -> String {
    let Some(d) = decimals(currency).filter(|d| *d > 0) else {
        return amount.to_string();
    };
    let sign = if amount < 0 { "-" } else { "" };
    let abs = amount.unsigned_abs();
    let unit = 10u64.pow(d);
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = d as usize
    )
}

/// `USD 1.92`: the code and the amount in major units; the bare integer without a
/// currency.
pub fn money(amount: Amount, currency: &str) -> String {
    if currency.is_empty() {
        return amount.to_string();
    }
    format!("{currency} {}", major(amount, currency))
}

/// An amount as typed on the command line, before the auction's currency is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypedAmount {
    /// A plain integer: minor units.
    Minor(Amount),
    /// Written with a decimal point: major units, `whole` and the fraction's digits.
    Major {
        /// Digits before the point.
        whole: u64,
        /// Digits after it, as typed.
        fraction: String,
    },
}

/// Why a typed amount cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a number such as `10500` or `105.00`.
    #[error("{0:?} is not an amount: write minor units (10500) or a decimal amount (105.00)")]
    Syntax(String),
    /// More decimals than the currency has.
    #[error("{typed} has more decimals than {currency} has ({decimals})")]
    TooPrecise {
        /// What was typed.
        typed: String,
        /// The auction's currency.
        currency: String,
        /// Its decimals.
        decimals: u32,
    },
    /// Out of the protocol's range.
    #[error("{0} is too large")]
    TooLarge(String),
    /// The currency's decimals are unknown, so a decimal amount cannot be converted.
    #[error("cannot convert {typed}: {currency:?} has no minor unit in ISO 4217; type minor units")]
    UnknownCurrency {
        /// What was typed.
        typed: String,
        /// The auction's currency.
        currency: String,
    },
}

impl FromStr for TypedAmount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let syntax = || AmountError::Syntax(s.to_owned());
        let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
        match t.split_once('.') {
            None if digits(t) => t
                .parse()
                .map(TypedAmount::Minor)
                .map_err(|_| AmountError::TooLarge(s.to_owned())),
            Some((whole, fraction))
                if digits(whole) && (fraction.is_empty() || digits(fraction)) =>
            {
                Ok(TypedAmount::Major {
                    whole: whole
                        .parse()
                        .map_err(|_| AmountError::TooLarge(s.to_owned()))?,
                    fraction: fraction.to_owned(),
                })
            }
            _ => Err(syntax()),
        }
    }
}

impl fmt::Display for TypedAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypedAmount::Minor(a) => write!(f, "{a}"),
            TypedAmount::Major { whole, fraction } => write!(f, "{whole}.{fraction}"),
        }
    }
}

impl TypedAmount {
    /// The amount in minor units of `currency`.
    pub fn minor_units(&self, currency: &str) -> Result<Amount, AmountError> {
        let (whole, fraction) = match self {
            TypedAmount::Minor(a) => return Ok(*a),
            TypedAmount::Major { whole, fraction } => (*whole, fraction),
        };
        let d = decimals(currency).ok_or_else(|| AmountError::UnknownCurrency {
            typed: self.to_string(),
            currency: currency.to_owned(),
        })?;
        let significant = fraction.trim_end_matches('0');
        if significant.len() > d as usize {
            return Err(AmountError::TooPrecise {
                typed: self.to_string(),
                currency: currency.to_owned(),
                decimals: d,
            });
        }
        let too_large = || AmountError::TooLarge(self.to_string());
        let mut frac: u64 = 0;
        for i in 0..d as usize {
            let digit = significant
                .as_bytes()
                .get(i)
                .map_or(0, |b| u64::from(b - b'0'));
            frac = frac * 10 + digit;
        }
        let minor = whole
            .checked_mul(10u64.pow(d))
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(too_large)?;
        Amount::try_from(minor).map_err(|_| too_large())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_with_the_currency_decimals() {
        assert_eq!(money(192, "USD"), "USD 1.92");
        assert_eq!(money(1_000_005, "EUR"), "EUR 10000.05");
        assert_eq!(money(500, "JPY"), "JPY 500");
        assert_eq!(money(1234, "BHD"), "BHD 1.234");
        assert_eq!(money(5, "KWD"), "KWD 0.005");
        assert_eq!(money(7, ""), "7");
        assert_eq!(major(10500, "USD"), "105.00");
    }

    #[test]
    fn reads_amounts_as_typed() {
        let read = |s: &str, c: &str| s.parse::<TypedAmount>().and_then(|a| a.minor_units(c));
        assert_eq!(read("105.00", "USD"), Ok(10500));
        assert_eq!(read("105.5", "USD"), Ok(10550));
        assert_eq!(read("105.", "USD"), Ok(10500));
        assert_eq!(read("10500", "USD"), Ok(10500));
        assert_eq!(read("1.234", "BHD"), Ok(1234));
        assert_eq!(read("500", "JPY"), Ok(500));
        assert_eq!(read("500.0", "JPY"), Ok(500));
        assert!(matches!(
            read("500.5", "JPY"),
            Err(AmountError::TooPrecise { .. })
        ));
        assert!(matches!(
            read("1.005", "USD"),
            Err(AmountError::TooPrecise { .. })
        ));
        for bad in ["ten", "", "1.2.3", "-5", ".5", "1e3", "1,5"] {
            assert!(bad.parse::<TypedAmount>().is_err(), "{bad}");
        }
        assert!(matches!(
            read("99999999999999999999", "USD"),
            Err(AmountError::TooLarge(_))
        ));
        assert!(matches!(
            read("1.00", "ZZZ"),
            Err(AmountError::UnknownCurrency { .. })
        ));
    }
}
