//! Money as integers: every balance, hold and charge is a count of micro-cents (10⁻⁶ cent) in an `i64`.
//!
//! Prices are whole cents per million tokens, so a cost in micro-cents is exactly `tokens × price`: no division,
//! no rounding, no float (12 prompt + 7 completion tokens at 15/60 ¢ per million = 600 µ¢ = 0.0006 ¢). An `i64` of
//! micro-cents holds ±92 billion dollars.

use crate::catalog::ModelSpec;
use std::fmt;

/// Micro-cents per cent.
pub const MICROS_PER_CENT: i64 = 1_000_000;

/// An amount in micro-cents; negative for money going out (charges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Micros(pub i64);

impl Micros {
    /// Nothing.
    pub const ZERO: Self = Self(0);

    /// Whole cents, if they fit.
    pub fn from_cents(cents: i64) -> Option<Self> {
        cents.checked_mul(MICROS_PER_CENT).map(Self)
    }

    /// The raw count.
    pub fn get(self) -> i64 {
        self.0
    }

    /// `self + other`, saturating (an overflow would need ±92 billion dollars).
    pub fn plus(self, other: Self) -> Self {
        Self(self.0.saturating_add(other.0))
    }

    /// `self - other`, saturating.
    pub fn minus(self, other: Self) -> Self {
        Self(self.0.saturating_sub(other.0))
    }
}

/// Cents as an exact decimal: at most 6 fraction digits, trailing zeros dropped (`0.0006`, `-12.5`, `7`).
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let per_cent = MICROS_PER_CENT.unsigned_abs();
        let (whole, fraction) = (abs / per_cent, abs % per_cent);
        if fraction == 0 {
            return write!(f, "{sign}{whole}");
        }
        let digits = format!("{fraction:06}");
        write!(f, "{sign}{whole}.{}", digits.trim_end_matches('0'))
    }
}

/// Why a decimal amount of cents was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CentsError {
    /// Not a JSON number.
    #[error("must be a number of cents")]
    NotANumber,
    /// Below zero where only zero or more is allowed.
    #[error("must not be negative")]
    Negative,
    /// More than six decimals: finer than a micro-cent.
    #[error("must have at most 6 decimals (a micro-cent)")]
    TooPrecise,
    /// Beyond what an `i64` of micro-cents holds.
    #[error("is too large")]
    TooLarge,
}

impl Micros {
    /// Parses a JSON number of cents (`12`, `0.0006`, `1.5e2`, `1e-06`) exactly, as API.md's money fields are
    /// written: no float touches it, and an amount finer than a micro-cent is refused rather than rounded.
    pub fn parse_cents(text: &str) -> Result<Self, CentsError> {
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
            Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
            None => (unsigned, None),
        };
        let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !digits_only(whole) || !digits_only(fraction) {
            return Err(CentsError::NotANumber);
        }
        if mantissa.contains('.') && fraction.is_empty() {
            return Err(CentsError::NotANumber);
        }
        let exponent: i64 = match exponent {
            None => 0,
            Some(e) => {
                let unsigned_e = e.strip_prefix(['+', '-']).unwrap_or(e);
                if unsigned_e.is_empty() || !digits_only(unsigned_e) {
                    return Err(CentsError::NotANumber);
                }
                // A longer exponent is out of any amount's range either way (or zero, for an all-zero mantissa).
                e.parse()
                    .unwrap_or(if e.starts_with('-') { -1_000 } else { 1_000 })
            }
        };
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        // The amount is `digits` × 10^(exponent - fraction digits) cents, so × 10^shift micro-cents.
        let fraction_len = i64::try_from(fraction.len()).map_err(|_| CentsError::TooPrecise)?;
        let mut shift = exponent - fraction_len + 6;
        let mut digits = digits;
        while shift < 0 && digits.ends_with('0') {
            digits = &digits[..digits.len() - 1];
            shift += 1;
        }
        if digits.is_empty() {
            return Ok(Self::ZERO);
        }
        if negative {
            return Err(CentsError::Negative);
        }
        if shift < 0 {
            return Err(CentsError::TooPrecise);
        }
        let mut value: i64 = digits.parse().map_err(|_| CentsError::TooLarge)?;
        for _ in 0..shift {
            value = value.checked_mul(10).ok_or(CentsError::TooLarge)?;
        }
        Ok(Self(value))
    }
}

/// What `prompt` input and `completion` output tokens of `model` cost, exactly; `None` past `i64::MAX` micro-cents.
pub fn checked_cost(model: &ModelSpec, prompt: u64, completion: u64) -> Option<Micros> {
    // u64 × u64 fits a u128, and so does the sum of two such products.
    let input = u128::from(prompt) * u128::from(model.input_cents_per_million_tokens);
    let output = u128::from(completion) * u128::from(model.output_cents_per_million_tokens);
    i64::try_from(input + output).ok().map(Micros)
}

/// What `prompt` input and `completion` output tokens of `model` cost, exactly, saturating at `i64::MAX` (reported
/// usage is never trusted past the hold anyway).
pub fn cost(model: &ModelSpec, prompt: u64, completion: u64) -> Micros {
    checked_cost(model, prompt, completion).unwrap_or(Micros(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(input: u64, output: u64) -> ModelSpec {
        ModelSpec {
            input_cents_per_million_tokens: input,
            output_cents_per_million_tokens: output,
            ..ModelSpec::echo(0)
        }
    }

    #[test]
    fn the_contracts_example_is_exact() {
        assert_eq!(cost(&model(15, 60), 12, 7), Micros(600));
        assert_eq!(cost(&model(15, 60), 12, 7).to_string(), "0.0006");
    }

    #[test]
    fn amounts_print_as_exact_decimal_cents() {
        assert_eq!(Micros(0).to_string(), "0");
        assert_eq!(Micros(7_000_000).to_string(), "7");
        assert_eq!(Micros(-12_500_000).to_string(), "-12.5");
        assert_eq!(Micros(99_999_999_400).to_string(), "99999.9994");
        assert_eq!(Micros(300_000).to_string(), "0.3");
        assert_eq!(Micros(1).to_string(), "0.000001");
        assert_eq!(Micros(-1).to_string(), "-0.000001");
        assert_eq!(Micros(i64::MIN).to_string(), "-9223372036854.775808");
    }

    #[test]
    fn cents_parse_exactly_or_not_at_all() {
        for (text, micros) in [
            ("0", 0),
            ("-0", 0),
            ("12", 12_000_000),
            ("0.0006", 600),
            ("12.50", 12_500_000),
            ("1e-06", 1),
            ("1.5E2", 150_000_000),
            ("0.0000010", 1),
            ("9223372036854.775807", i64::MAX),
            ("0e999999999999999999", 0),
        ] {
            assert_eq!(Micros::parse_cents(text), Ok(Micros(micros)), "{text}");
        }
        for (text, error) in [
            ("-1", CentsError::Negative),
            ("0.0000001", CentsError::TooPrecise),
            ("1e-7", CentsError::TooPrecise),
            ("9223372036854.775808", CentsError::TooLarge),
            ("1e30", CentsError::TooLarge),
            ("1e999999999999999999", CentsError::TooLarge),
            ("", CentsError::NotANumber),
            ("1.", CentsError::NotANumber),
            (".5", CentsError::NotANumber),
            ("\"5\"", CentsError::NotANumber),
            ("1e", CentsError::NotANumber),
        ] {
            assert_eq!(Micros::parse_cents(text), Err(error), "{text}");
        }
    }

    #[test]
    fn whole_cents_convert_unless_they_overflow() {
        assert_eq!(Micros::from_cents(3), Some(Micros(3_000_000)));
        assert_eq!(Micros::from_cents(i64::MAX), None);
        assert_eq!(
            cost(&model(u64::MAX, u64::MAX), u64::MAX, 1),
            Micros(i64::MAX)
        );
    }
}
