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
    fn whole_cents_convert_unless_they_overflow() {
        assert_eq!(Micros::from_cents(3), Some(Micros(3_000_000)));
        assert_eq!(Micros::from_cents(i64::MAX), None);
        assert_eq!(
            cost(&model(u64::MAX, u64::MAX), u64::MAX, 1),
            Micros(i64::MAX)
        );
    }
}
