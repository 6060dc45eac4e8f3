//! Dynamic pricing: a pure function from the treatment's base price, the
//! clinic's rules and an optional promo discount to a price breakdown.

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

use crate::schedule::Weekday;
use crate::Money;

/// A peak or off-peak window: on these weekdays, between these local times,
/// the base price changes by `percent` (positive surcharge, negative discount).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingRule {
    /// Weekdays the rule applies on.
    pub weekdays: Vec<Weekday>,
    /// Local start of the window (inclusive), compared with the booking's local start time.
    pub from: NaiveTime,
    /// Local end of the window (exclusive).
    pub to: NaiveTime,
    /// Percent of the base price added (negative: taken off). -100..=1000.
    pub percent: i64,
}

/// A discount for bookings made shortly before their start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastMinute {
    /// Applies when the start is less than this many hours after `now`.
    pub within_hours: u32,
    /// Percent of the base price taken off. 0..=100.
    pub percent_off: i64,
}

/// A clinic's pricing rules.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricingRules {
    /// Peak and off-peak windows; every matching rule applies.
    pub rules: Vec<PricingRule>,
    /// Optional last-minute discount.
    pub last_minute: Option<LastMinute>,
}

/// What a promo code takes off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discount {
    /// Percent of the price after adjustments, 1..=100.
    PercentOff(i64),
    /// A fixed amount, capped at the price after adjustments.
    AmountOff(Money),
}

/// The full price of a booking, recorded in the booked event so no report
/// ever recomputes it. Invariant: `total = base + adjustments - discount >= 0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceBreakdown {
    /// The treatment's base price.
    pub base: Money,
    /// Sum of rule adjustments (peak surcharge, off-peak and last-minute discounts).
    pub adjustments: Money,
    /// The promo code's discount.
    pub discount: Money,
    /// What the patient pays.
    pub total: Money,
}
