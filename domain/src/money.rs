//! Money as integer minor units (cents) of the clinic's currency.

use std::fmt;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// An amount in minor units (`i64` cents). Arithmetic saturates instead of
/// overflowing, so no input can panic the process.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Money(pub i64);

impl Money {
    /// Zero cents.
    pub const ZERO: Money = Money(0);

    /// The amount in cents.
    pub fn cents(self) -> i64 {
        self.0
    }

    /// `percent` % of this amount, rounded half away from zero.
    /// `percent` may be negative (a discount) or above 100 (a surcharge).
    pub fn percent(self, percent: i64) -> Money {
        let product = i128::from(self.0) * i128::from(percent);
        let rounded = if product >= 0 {
            (product + 50) / 100
        } else {
            (product - 50) / 100
        };
        Money(i64::try_from(rounded).unwrap_or(if rounded > 0 { i64::MAX } else { i64::MIN }))
    }

    /// True when the amount is below zero.
    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cents", self.0)
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        Money(self.0.saturating_add(rhs.0))
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = *self + rhs;
    }
}

impl Sub for Money {
    type Output = Money;
    fn sub(self, rhs: Money) -> Money {
        Money(self.0.saturating_sub(rhs.0))
    }
}

impl SubAssign for Money {
    fn sub_assign(&mut self, rhs: Money) {
        *self = *self - rhs;
    }
}

impl Neg for Money {
    type Output = Money;
    fn neg(self) -> Money {
        Money(self.0.saturating_neg())
    }
}

impl std::iter::Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_rounds_half_away_from_zero() {
        assert_eq!(Money(1050).percent(10), Money(105));
        assert_eq!(Money(5).percent(10), Money(1)); // 0.5 -> 1
        assert_eq!(Money(5).percent(-10), Money(-1));
        assert_eq!(Money(4).percent(10), Money(0));
        assert_eq!(Money(i64::MAX).percent(200), Money(i64::MAX));
    }
}
