//! The conversion arithmetic: exact, integer, rounded down.
//!
//! A [`Conversion`] takes an amount in the sender's base units to the next hop's:
//!
//! ```text
//! destination = floor(source × rate × (1 − spread) × 10^(to_scale − from_scale))
//! ```
//!
//! `rate` (destination whole units per source whole unit) and `spread` are decimals; the
//! product is computed exactly in 256-bit integers (a u64 amount times two 96-bit decimal
//! mantissas always fits), so the result is the true floor, never a float's approximation,
//! and a scale conversion of the same asset (rate 1, no spread) is exact.

use std::sync::LazyLock;

use ethnum::U256;
use rust_decimal::Decimal;

/// Largest amount a balance can take: balances are PostgreSQL bigints.
pub const MAX_AMOUNT: u64 = i64::MAX as u64;

/// Powers of ten that fit in 256 bits: 10^0 ..= 10^77.
static POW10: LazyLock<Vec<U256>> = LazyLock::new(|| {
    let mut powers = vec![U256::ONE];
    while let Some(next) = powers[powers.len() - 1].checked_mul(U256::new(10)) {
        powers.push(next);
    }
    powers
});

fn pow10(exponent: u32) -> Option<U256> {
    POW10.get(exponent as usize).copied()
}

/// How one account's amounts become another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Conversion {
    /// Mid rate: destination whole units per source whole unit (positive).
    pub rate: Decimal,
    /// The fraction kept by this node, in `[0, 1)`.
    pub spread: Decimal,
    /// The source asset's scale.
    pub from_scale: u8,
    /// The destination asset's scale.
    pub to_scale: u8,
}

/// A converted amount that does not fit a balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooLarge {
    /// The largest source amount that converts to at most [`MAX_AMOUNT`].
    pub max_source: u64,
}

impl Conversion {
    /// A conversion at `rate` keeping `spread`; `None` unless `rate > 0` and
    /// `0 <= spread < 1`.
    pub fn new(rate: Decimal, spread: Decimal, from_scale: u8, to_scale: u8) -> Option<Self> {
        let valid = rate > Decimal::ZERO && spread >= Decimal::ZERO && spread < Decimal::ONE;
        valid.then_some(Conversion {
            rate,
            spread,
            from_scale,
            to_scale,
        })
    }

    /// `destination = numerator / 10^shift` (or `numerator × 10^-shift` when negative) per
    /// source base unit, with `numerator` the product of the two mantissas.
    fn factor(&self) -> (U256, i64) {
        // `rate` and `1 - spread` are positive: their mantissas are below 2^96.
        let keep = Decimal::ONE - self.spread;
        let numerator = U256::new(self.rate.mantissa().unsigned_abs())
            * U256::new(keep.mantissa().unsigned_abs());
        let shift = i64::from(self.rate.scale()) + i64::from(keep.scale())
            - i64::from(self.to_scale)
            + i64::from(self.from_scale);
        (numerator, shift)
    }

    /// Converts `amount`, rounding down. Fails when the result exceeds [`MAX_AMOUNT`].
    pub fn apply(&self, amount: u64) -> Result<u64, TooLarge> {
        let (numerator, shift) = self.factor();
        // amount < 2^64 and numerator < 2^192: the product fits.
        let product = U256::from(amount) * numerator;
        let result = if product == U256::ZERO {
            U256::ZERO
        } else if shift >= 0 {
            match pow10(shift as u32) {
                Some(divisor) => product / divisor,
                None => U256::ZERO, // the divisor exceeds every possible product
            }
        } else {
            pow10(shift.unsigned_abs() as u32)
                .and_then(|multiplier| product.checked_mul(multiplier))
                .unwrap_or(U256::MAX)
        };
        match u64::try_from(result) {
            Ok(converted) if converted <= MAX_AMOUNT => Ok(converted),
            _ => Err(TooLarge {
                max_source: self.max_source(),
            }),
        }
    }

    /// The largest source amount whose conversion is at most [`MAX_AMOUNT`].
    pub fn max_source(&self) -> u64 {
        let (numerator, shift) = self.factor();
        // floor(a × n / d) <= M  ⇔  a × n < (M + 1) × d  ⇔  a <= ((M + 1) × d − 1) / n.
        let limit = U256::from(MAX_AMOUNT) + 1;
        let (n, d) = if shift >= 0 {
            (Some(numerator), pow10(shift as u32))
        } else {
            let multiplier = pow10(shift.unsigned_abs() as u32);
            (
                multiplier.and_then(|m| numerator.checked_mul(m)),
                Some(U256::ONE),
            )
        };
        let max = match (n, d) {
            (Some(n), Some(d)) => match limit.checked_mul(d) {
                Some(bound) => (bound - 1) / n,
                None => U256::MAX,
            },
            (None, _) => U256::ZERO,
            (Some(_), None) => U256::MAX,
        };
        u64::try_from(max).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str(text).unwrap()
    }

    fn conversion(rate: &str, spread: &str, from_scale: u8, to_scale: u8) -> Conversion {
        Conversion::new(dec(rate), dec(spread), from_scale, to_scale).unwrap()
    }

    #[test]
    fn rounds_down_and_never_up() {
        // Proves the result is the floor of the exact product, including values a hair below
        // an integer that a 28-digit decimal would round up.
        let c = conversion("0.9", "0", 2, 2);
        assert_eq!(c.apply(10), Ok(9));
        assert_eq!(c.apply(11), Ok(9)); // 9.9
        assert_eq!(c.apply(1), Ok(0));
        // 3 × 0.3333333333333333333333333333 = 0.9999999999999999999999999999: floor is 0.
        let third = conversion("0.3333333333333333333333333333", "0", 0, 0);
        assert_eq!(third.apply(3), Ok(0));
        assert_eq!(third.apply(30_000_000_000), Ok(9_999_999_999));
        // 2^63 - 1 at a rate a hair under 1 must not round up to 2^63 - 1.
        let under_one = conversion("0.9999999999999999999999999999", "0", 0, 0);
        assert_eq!(under_one.apply(MAX_AMOUNT), Ok(MAX_AMOUNT - 1));
    }

    #[test]
    fn scale_conversion_of_one_asset_is_exact() {
        // Proves scale up multiplies exactly, scale down divides and floors.
        let up = conversion("1", "0", 2, 9);
        assert_eq!(up.apply(123), Ok(1_230_000_000));
        let down = conversion("1", "0", 9, 6);
        assert_eq!(down.apply(1_234_567), Ok(1_234));
        assert_eq!(down.apply(999), Ok(0));
        assert_eq!(
            conversion("1", "0", 0, 255).apply(1),
            Err(TooLarge { max_source: 0 })
        );
        assert_eq!(conversion("1", "0", 255, 0).apply(u64::MAX), Ok(0));
    }

    #[test]
    fn spread_is_kept_in_the_operators_favour() {
        // Proves the spread reduces what is delivered, and combines with rate and scales.
        let c = conversion("1.08", "0.002", 2, 2);
        // 1000 × 1.08 × 0.998 = 1077.84
        assert_eq!(c.apply(1000), Ok(1077));
        // USD/9 → EUR/6 at 0.5 EUR per USD, 1 % spread: 10^9 (1 USD) → 0.495 EUR = 495,000.
        let c = conversion("0.5", "0.01", 9, 6);
        assert_eq!(c.apply(1_000_000_000), Ok(495_000));
        assert_eq!(c.apply(2_021), Ok(1)); // 1.000395
        assert_eq!(c.apply(2_020), Ok(0)); // 0.9999
        assert!(Conversion::new(dec("1"), dec("1"), 0, 0).is_none());
        assert!(Conversion::new(dec("1"), dec("-0.1"), 0, 0).is_none());
        assert!(Conversion::new(dec("0"), dec("0"), 0, 0).is_none());
    }

    #[test]
    fn too_large_results_say_the_largest_source_that_fits() {
        // Proves an overflow is an error (never a wrap) carrying a maximum that does fit.
        let c = conversion("3", "0", 2, 4);
        let err = c.apply(u64::MAX).unwrap_err();
        assert!(c.apply(err.max_source).is_ok());
        assert!(c.apply(err.max_source + 1).is_err());
        assert_eq!(
            c.apply(err.max_source).unwrap(),
            MAX_AMOUNT - MAX_AMOUNT % 300
        );
    }

    #[test]
    fn no_input_panics_and_results_are_monotonic() {
        // Proves every u64 at extreme rates, spreads and scales converts or errs, never panics,
        // and a larger source never delivers less.
        let rates = [
            "0.0000000000000000000000000001",
            "1",
            "79228162514264337593543950335",
            "0.3333333333333333333333333333",
            "12345.678901234567890123",
        ];
        let spreads = ["0", "0.002", "0.9999999999999999999999999999"];
        let scales = [0u8, 2, 9, 18, 40, 255];
        let mut amounts = vec![
            0,
            1,
            2,
            9,
            10,
            999,
            MAX_AMOUNT - 1,
            MAX_AMOUNT,
            MAX_AMOUNT + 1,
            u64::MAX,
        ];
        amounts.extend((0..200).map(|_| rand::random::<u64>()));
        amounts.sort_unstable();
        for rate in rates {
            for spread in spreads {
                for from in scales {
                    for to in scales {
                        let c = conversion(rate, spread, from, to);
                        let max = c.max_source();
                        let mut last = 0;
                        for &amount in &amounts {
                            match c.apply(amount) {
                                Ok(out) => {
                                    assert!(out >= last && amount <= max, "{c:?} {amount}");
                                    last = out;
                                }
                                Err(e) => {
                                    assert_eq!(e.max_source, max);
                                    assert!(amount > max, "{c:?} {amount}");
                                    last = u64::MAX;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
