//! Money: currencies and positive amounts in integer minor units (cents). Never floating point.

use std::fmt;
use std::str::FromStr;

use super::ValidationError;

/// An ISO 4217 currency the bank holds accounts in.
///
/// The `currencies` table of the first migration lists the same codes and exponents (a store test
/// checks that they agree); adding one means a migration and a variant here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Currency {
    Aud,
    Cad,
    Chf,
    Eur,
    Gbp,
    Jpy,
    Usd,
}

impl Currency {
    pub const ALL: [Currency; 7] = [
        Currency::Aud,
        Currency::Cad,
        Currency::Chf,
        Currency::Eur,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Usd,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Currency::Aud => "AUD",
            Currency::Cad => "CAD",
            Currency::Chf => "CHF",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Jpy => "JPY",
            Currency::Usd => "USD",
        }
    }

    /// Digits after the decimal point: amounts are counted in units of 10^-exponent
    /// (USD 2: 1234 means $12.34; JPY 0: 1234 means ¥1234).
    pub fn exponent(self) -> u8 {
        match self {
            Currency::Jpy => 0,
            Currency::Aud
            | Currency::Cad
            | Currency::Chf
            | Currency::Eur
            | Currency::Gbp
            | Currency::Usd => 2,
        }
    }
}

impl FromStr for Currency {
    type Err = ValidationError;

    /// Exactly the upper-case ISO code: "usd" is refused rather than guessed at.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == raw)
            .ok_or_else(|| {
                let codes: Vec<&str> = Currency::ALL.iter().map(|c| c.code()).collect();
                ValidationError::new("currency", format!("must be one of {}", codes.join(", ")))
            })
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A strictly positive number of minor units: what a transfer, deposit or withdrawal moves.
///
/// Balances are plain `i64` (they may be zero, and the bank's settlement accounts go negative);
/// amounts never are zero or negative, so "move -5" cannot be expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Amount(i64);

impl Amount {
    pub fn new(minor_units: i64) -> Result<Self, ValidationError> {
        if minor_units > 0 {
            Ok(Self(minor_units))
        } else {
            Err(ValidationError::new(
                "amount",
                "must be a positive whole number of minor units (cents)",
            ))
        }
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }

    /// `None` on overflow, never a wrapped value.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// A balance after this amount arrives, or `None` if it would overflow.
    pub fn credit(self, balance: i64) -> Option<i64> {
        balance.checked_add(self.0)
    }

    /// A balance after this amount leaves, or `None` if it would overflow.
    pub fn debit(self, balance: i64) -> Option<i64> {
        balance.checked_sub(self.0)
    }
}

impl TryFrom<i64> for Amount {
    type Error = ValidationError;

    fn try_from(minor_units: i64) -> Result<Self, Self::Error> {
        Amount::new(minor_units)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_currency_parses_from_its_code() {
        for currency in Currency::ALL {
            assert_eq!(currency.code().parse::<Currency>().unwrap(), currency);
            assert_eq!(currency.to_string(), currency.code());
        }
        for spec_required in ["USD", "EUR", "CAD", "GBP", "JPY"] {
            assert!(spec_required.parse::<Currency>().is_ok());
        }
    }

    #[test]
    fn unknown_or_lower_case_codes_are_refused_with_the_supported_list() {
        for bad in ["usd", "XXX", "", "US", "USDD", " USD"] {
            let err = bad.parse::<Currency>().unwrap_err();
            assert_eq!(err.field, "currency");
            assert!(
                err.description.contains("EUR, GBP, JPY, USD"),
                "{}",
                err.description
            );
        }
    }

    #[test]
    fn yen_has_no_minor_unit() {
        assert_eq!(Currency::Jpy.exponent(), 0);
        assert_eq!(Currency::Usd.exponent(), 2);
    }

    #[test]
    fn amounts_are_strictly_positive() {
        assert!(Amount::new(0).is_err());
        assert!(Amount::new(-1).is_err());
        assert!(Amount::new(i64::MIN).is_err());
        assert_eq!(Amount::new(1).unwrap().minor_units(), 1);
        assert_eq!(Amount::new(i64::MAX).unwrap().minor_units(), i64::MAX);
    }

    #[test]
    fn arithmetic_reports_overflow_instead_of_wrapping() {
        let max = Amount::new(i64::MAX).unwrap();
        let one = Amount::new(1).unwrap();
        assert_eq!(max.checked_add(one), None);
        assert_eq!(one.credit(i64::MAX), None);
        assert_eq!(one.debit(i64::MIN), None);
        assert_eq!(one.debit(0), Some(-1));
    }

    proptest! {
        #[test]
        fn amount_accepts_exactly_the_positive_integers(n in any::<i64>()) {
            prop_assert_eq!(Amount::new(n).is_ok(), n > 0);
        }

        #[test]
        fn checked_add_matches_wide_arithmetic(a in 1..=i64::MAX, b in 1..=i64::MAX) {
            let sum = Amount::new(a).unwrap().checked_add(Amount::new(b).unwrap());
            let wide = i128::from(a) + i128::from(b);
            prop_assert_eq!(sum.map(|s| i128::from(s.minor_units())), (wide <= i128::from(i64::MAX)).then_some(wide));
        }

        #[test]
        fn currency_parsing_never_accepts_an_unlisted_code(raw in "\\PC{0,5}") {
            if let Ok(c) = raw.parse::<Currency>() {
                prop_assert_eq!(c.code(), raw.as_str());
            }
        }
    }
}
