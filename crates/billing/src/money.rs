//! Money: a currency with its minor unit, the rounding rule a tariff states, and exact decimal
//! parsing of prices from TOML (never through binary floating point).

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::de::{self, Deserializer, Visitor};

use crate::error::{Error, Result};

/// How amounts are rounded to the currency's minor unit. Rounding happens once per bill line
/// (see the crate docs), never on intermediate quantities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Banker's rounding: a tie goes to the even neighbour (0.125 → 0.12, 0.135 → 0.14).
    HalfEven,
    /// Commercial rounding: a tie goes away from zero (0.125 → 0.13, -0.125 → -0.13).
    HalfUp,
}

impl Rounding {
    fn strategy(self) -> RoundingStrategy {
        match self {
            Rounding::HalfEven => RoundingStrategy::MidpointNearestEven,
            Rounding::HalfUp => RoundingStrategy::MidpointAwayFromZero,
        }
    }
}

impl fmt::Display for Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Rounding::HalfEven => "half-even",
            Rounding::HalfUp => "half-up",
        })
    }
}

/// A currency: its ISO 4217 code, the number of decimals of its minor unit, and the rounding rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Currency {
    code: String,
    minor_unit: u32,
    rounding: Rounding,
}

/// Minor units of the ISO 4217 currencies a tariff may name without stating `minor_unit`.
/// Source: ISO 4217 list one (the "minor unit" column).
const KNOWN_MINOR_UNITS: &[(&str, u32)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MAD", 2),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PKR", 2),
    ("SEK", 2),
    ("TND", 3),
    ("USD", 2),
    ("ZAR", 2),
];

impl Currency {
    /// A currency from its code; `minor_unit` may be omitted for the codes in the table above.
    pub fn new(code: &str, minor_unit: Option<u32>, rounding: Rounding) -> Result<Currency> {
        let valid_code = code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase());
        if !valid_code {
            return Err(Error::tariff(
                "currency",
                format!("{code:?} is not a three-letter ISO 4217 code"),
            ));
        }
        let known = KNOWN_MINOR_UNITS
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, m)| *m);
        let minor_unit = match (minor_unit, known) {
            (Some(m), _) if m > 4 => {
                return Err(Error::tariff(
                    "minor_unit",
                    format!("{m} decimals is more than any currency uses (at most 4)"),
                ));
            }
            (Some(m), _) => m,
            (None, Some(m)) => m,
            (None, None) => {
                return Err(Error::tariff(
                    "minor_unit",
                    format!(
                        "currency {code} is not in the built-in table; state its minor_unit (number of decimals)"
                    ),
                ));
            }
        };
        Ok(Currency {
            code: code.to_owned(),
            minor_unit,
            rounding,
        })
    }

    /// The ISO 4217 code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// Decimals of the minor unit (2 for cents, 0 for yen, 3 for fils).
    pub fn minor_unit(&self) -> u32 {
        self.minor_unit
    }

    /// The rounding rule applied per bill line.
    pub fn rounding(&self) -> Rounding {
        self.rounding
    }

    /// Rounds an exact amount to the minor unit with the currency's rule.
    /// The result always carries exactly `minor_unit` decimals (50 → 50.00), so amounts print
    /// the same way everywhere.
    pub fn round(&self, amount: Decimal) -> Decimal {
        let mut rounded = amount.round_dp_with_strategy(self.minor_unit, self.rounding.strategy());
        rounded.rescale(self.minor_unit);
        rounded
    }
}

/// Energy in watt-hours as exact kilowatt-hours.
pub(crate) fn kwh_from_wh(wh: i64) -> Decimal {
    Decimal::new(wh, 3)
}

/// Multiplies, reporting overflow as an error at `location` instead of panicking.
pub(crate) fn mul(a: Decimal, b: Decimal, location: &str) -> Result<Decimal> {
    a.checked_mul(b).ok_or_else(|| Error::overflow(location))
}

/// Adds, reporting overflow as an error at `location` instead of panicking.
pub(crate) fn add(a: Decimal, b: Decimal, location: &str) -> Result<Decimal> {
    a.checked_add(b).ok_or_else(|| Error::overflow(location))
}

/// Deserializes a decimal from a TOML string (`"0.2345"`), integer (`12`) or float (`0.2345`).
///
/// A TOML float is read by the TOML parser as an `f64`; we turn it back into text with Rust's
/// shortest round-trip formatting and parse that, which recovers the literal exactly for any
/// literal of up to 15 significant digits. Longer prices must be written as strings.
pub(crate) fn deserialize_decimal<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Decimal, D::Error> {
    deserializer.deserialize_any(DecimalVisitor)
}

pub(crate) fn deserialize_opt_decimal<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Decimal>, D::Error> {
    deserializer.deserialize_any(DecimalVisitor).map(Some)
}

struct DecimalVisitor;

impl Visitor<'_> for DecimalVisitor {
    type Value = Decimal;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a decimal number such as 0.2345 or \"0.2345\"")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Decimal, E> {
        v.trim()
            .parse::<Decimal>()
            .map_err(|_| E::custom(format!("{v:?} is not a decimal number")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Decimal, E> {
        Ok(Decimal::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Decimal, E> {
        if !v.is_finite() {
            return Err(E::custom(format!("{v} is not a finite number")));
        }
        let text = format!("{v}");
        let significant = text
            .trim_start_matches('-')
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>();
        if significant
            .trim_start_matches('0')
            .trim_end_matches('0')
            .len()
            > 15
        {
            return Err(E::custom(format!(
                "{text} has more than 15 significant digits; write it as a string to keep it exact"
            )));
        }
        text.parse::<Decimal>()
            .map_err(|_| E::custom(format!("{text} is out of the decimal range")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn half_even_and_half_up_differ_only_on_ties() {
        let even = Currency::new("EUR", None, Rounding::HalfEven).unwrap();
        let up = Currency::new("EUR", None, Rounding::HalfUp).unwrap();
        assert_eq!(even.round(dec("0.125")), dec("0.12"));
        assert_eq!(up.round(dec("0.125")), dec("0.13"));
        assert_eq!(even.round(dec("0.135")), dec("0.14"));
        assert_eq!(up.round(dec("-0.125")), dec("-0.13"));
        assert_eq!(even.round(dec("0.1251")), dec("0.13"));
        assert_eq!(up.round(dec("0.1249")), dec("0.12"));
    }

    #[test]
    fn minor_units_come_from_the_table_or_the_tariff() {
        assert_eq!(
            Currency::new("JPY", None, Rounding::HalfUp)
                .unwrap()
                .minor_unit(),
            0
        );
        assert_eq!(
            Currency::new("KWD", None, Rounding::HalfUp)
                .unwrap()
                .minor_unit(),
            3
        );
        assert_eq!(
            Currency::new("XAF", Some(0), Rounding::HalfUp)
                .unwrap()
                .minor_unit(),
            0
        );
        let err = Currency::new("XAF", None, Rounding::HalfUp).unwrap_err();
        assert!(err.to_string().contains("state its minor_unit"), "{err}");
        assert!(Currency::new("eur", None, Rounding::HalfUp).is_err());
    }

    #[test]
    fn float_literals_are_recovered_exactly() {
        use serde::de::IntoDeserializer;
        let d: Decimal = deserialize_decimal(
            IntoDeserializer::<de::value::Error>::into_deserializer(0.1f64),
        )
        .unwrap();
        assert_eq!(d, dec("0.1"));
        let d: Decimal = deserialize_decimal(
            IntoDeserializer::<de::value::Error>::into_deserializer(0.2345f64),
        )
        .unwrap();
        assert_eq!(d, dec("0.2345"));
    }
}
