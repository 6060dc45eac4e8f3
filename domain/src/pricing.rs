//! Dynamic pricing: a pure function from the treatment's base price, the
//! clinic's rules and an optional promo discount to a price breakdown.

use chrono::{DateTime, Datelike, Duration, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::schedule::Weekday;
use crate::{DomainError, Money};

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

impl PricingRule {
    /// True when the rule applies to a booking starting on local `day` at
    /// local time `t` (`from <= t < to`).
    pub fn matches(&self, day: Weekday, t: NaiveTime) -> bool {
        self.weekdays.contains(&day) && self.from <= t && t < self.to
    }
}

impl PricingRules {
    /// Checks every rule: percent within -100..=1000, `from` before `to`,
    /// at least one weekday; and a last-minute percent within 0..=100.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming the offending field, e.g.
    /// `rules[1].percent` or `last_minute.percent_off`.
    pub fn validate(&self) -> Result<(), DomainError> {
        for (i, rule) in self.rules.iter().enumerate() {
            let field = |name: &str| format!("rules[{i}].{name}");
            if !(-100..=1000).contains(&rule.percent) {
                return Err(DomainError::invalid(
                    &field("percent"),
                    "must be within -100..=1000",
                ));
            }
            if rule.from >= rule.to {
                return Err(DomainError::inconsistent(
                    &field("to"),
                    "must be after from",
                ));
            }
            if rule.weekdays.is_empty() {
                return Err(DomainError::invalid(
                    &field("weekdays"),
                    "must name at least one day",
                ));
            }
        }
        if let Some(last_minute) = &self.last_minute {
            if !(0..=100).contains(&last_minute.percent_off) {
                return Err(DomainError::invalid(
                    "last_minute.percent_off",
                    "must be within 0..=100",
                ));
            }
        }
        Ok(())
    }
}

impl Discount {
    /// Checks the discount: a percent within 1..=100, or a positive amount.
    ///
    /// # Errors
    /// `DomainError::InvalidInput` naming `percent_off` or `amount_off_cents`.
    pub fn validate(&self) -> Result<(), DomainError> {
        match self {
            Discount::PercentOff(p) if !(1..=100).contains(p) => Err(DomainError::invalid(
                "percent_off",
                "must be within 1..=100",
            )),
            Discount::AmountOff(a) if a.cents() <= 0 => {
                Err(DomainError::invalid("amount_off_cents", "must be positive"))
            }
            _ => Ok(()),
        }
    }

    /// What this discount takes off `price`: never below zero, never more
    /// than `price`.
    pub fn amount_of(&self, price: Money) -> Money {
        let amount = match self {
            Discount::PercentOff(p) => price.percent(*p),
            Discount::AmountOff(a) => *a,
        };
        amount.clamp(Money::ZERO, price.max(Money::ZERO))
    }
}

/// The price of a booking of base price `base` starting at `start`, booked
/// at `now`, in a clinic in `tz` with `rules`, with an optional promo.
///
/// 1. Adjustments: each rule matching the start's local weekday and local
///    time adds `base.percent(rule.percent)`; a last-minute discount (start
///    less than `within_hours` after `now`) takes `base.percent(percent_off)`
///    off. All percentages are of the base price, each rounded on its own.
/// 2. Adjustments are clamped so that `base + adjustments` is never negative.
/// 3. The promo discount applies to `base + adjustments` and is capped by it.
///
/// So `total = base + adjustments - discount >= 0` always holds.
pub fn quote(
    base: Money,
    rules: &PricingRules,
    tz: Tz,
    start: DateTime<Utc>,
    now: DateTime<Utc>,
    promo: Option<&Discount>,
) -> PriceBreakdown {
    let local = start.with_timezone(&tz);
    let (day, time) = (Weekday::from_chrono(local.weekday()), local.time());
    let windows: Money = rules
        .rules
        .iter()
        .filter(|rule| rule.matches(day, time))
        .map(|rule| base.percent(rule.percent))
        .sum();
    let last_minute = match &rules.last_minute {
        Some(lm) if start - now < Duration::hours(i64::from(lm.within_hours)) => {
            -base.percent(lm.percent_off)
        }
        _ => Money::ZERO,
    };
    let adjustments = (windows + last_minute).max(-base);
    let subtotal = base + adjustments;
    let discount = promo.map_or(Money::ZERO, |d| d.amount_of(subtotal));
    PriceBreakdown {
        base,
        adjustments,
        discount,
        total: subtotal - discount,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // a broken fixture should fail the test loudly
mod tests {
    use super::*;
    use Weekday::*;

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const BASE: Money = Money(10_000);

    fn hm(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn rule(weekdays: &[Weekday], from: (u32, u32), to: (u32, u32), percent: i64) -> PricingRule {
        PricingRule {
            weekdays: weekdays.to_vec(),
            from: hm(from.0, from.1),
            to: hm(to.0, to.1),
            percent,
        }
    }

    /// Peak Mon/Fri 17:00–19:00 +20 %, off-peak Tue–Thu 09:00–12:00 -15 %,
    /// last minute (< 24 h) 10 % off.
    fn clinic_rules() -> PricingRules {
        PricingRules {
            rules: vec![
                rule(&[Mon, Fri], (17, 0), (19, 0), 20),
                rule(&[Tue, Wed, Thu], (9, 0), (12, 0), -15),
            ],
            last_minute: Some(LastMinute {
                within_hours: 24,
                percent_off: 10,
            }),
        }
    }

    const LONG_AGO: &str = "2026-05-01T00:00:00Z";

    fn price(base: i64, adjustments: i64, discount: i64, total: i64) -> PriceBreakdown {
        PriceBreakdown {
            base: Money(base),
            adjustments: Money(adjustments),
            discount: Money(discount),
            total: Money(total),
        }
    }

    fn quote_at(start: &str, now: &str, promo: Option<&Discount>) -> PriceBreakdown {
        quote(BASE, &clinic_rules(), BERLIN, utc(start), utc(now), promo)
    }

    #[test]
    fn no_rule_matches_gives_the_base_price() {
        // Saturday 2026-06-06 10:00 CEST.
        let q = quote_at("2026-06-06T08:00:00Z", LONG_AGO, None);
        assert_eq!(q, price(10_000, 0, 0, 10_000));
        let q = quote(
            BASE,
            &PricingRules::default(),
            BERLIN,
            utc("2026-06-06T08:00:00Z"),
            utc(LONG_AGO),
            None,
        );
        assert_eq!(q, price(10_000, 0, 0, 10_000));
    }

    #[test]
    fn peak_surcharge() {
        // Friday 2026-06-05 17:30 CEST = 15:30Z: +20 % of 100.00.
        let q = quote_at("2026-06-05T15:30:00Z", LONG_AGO, None);
        assert_eq!(q, price(10_000, 2_000, 0, 12_000));
    }

    #[test]
    fn window_start_is_inclusive_and_end_exclusive() {
        // 17:00 CEST matches, 19:00 CEST does not.
        assert_eq!(
            quote_at("2026-06-05T15:00:00Z", LONG_AGO, None).adjustments,
            Money(2_000)
        );
        assert_eq!(
            quote_at("2026-06-05T17:00:00Z", LONG_AGO, None).adjustments,
            Money::ZERO
        );
    }

    #[test]
    fn off_peak_discount() {
        // Wednesday 2026-06-03 10:00 CEST = 08:00Z: -15 %.
        let q = quote_at("2026-06-03T08:00:00Z", LONG_AGO, None);
        assert_eq!(q, price(10_000, -1_500, 0, 8_500));
    }

    #[test]
    fn every_matching_rule_applies() {
        let rules = PricingRules {
            rules: vec![
                rule(&[Fri], (17, 0), (19, 0), 20),
                rule(&[Fri], (18, 0), (20, 0), 5),
            ],
            last_minute: None,
        };
        // Friday 18:30 CEST: +20 % and +5 %.
        let q = quote(
            BASE,
            &rules,
            BERLIN,
            utc("2026-06-05T16:30:00Z"),
            utc(LONG_AGO),
            None,
        );
        assert_eq!(q, price(10_000, 2_500, 0, 12_500));
    }

    #[test]
    fn each_percentage_is_rounded_half_away_from_zero() {
        // 15 % of 19.99 = 2.9985 -> 3.00 off.
        let q = quote(
            Money(1_999),
            &clinic_rules(),
            BERLIN,
            utc("2026-06-03T08:00:00Z"),
            utc(LONG_AGO),
            None,
        );
        assert_eq!(q, price(1_999, -300, 0, 1_699));
    }

    #[test]
    fn last_minute_discount_within_the_window_only() {
        // Peak start Friday 15:30Z; booked 23 h before: +20 % - 10 %.
        let q = quote_at("2026-06-05T15:30:00Z", "2026-06-04T16:30:00Z", None);
        assert_eq!(q, price(10_000, 1_000, 0, 11_000));
        // Booked exactly 24 h before: not "less than 24 h", no discount.
        let q = quote_at("2026-06-05T15:30:00Z", "2026-06-04T15:30:00Z", None);
        assert_eq!(q, price(10_000, 2_000, 0, 12_000));
    }

    #[test]
    fn promo_percent_applies_to_the_price_after_adjustments() {
        // 110.00 after peak and last minute, 25 % off = 27.50.
        let q = quote_at(
            "2026-06-05T15:30:00Z",
            "2026-06-04T16:30:00Z",
            Some(&Discount::PercentOff(25)),
        );
        assert_eq!(q, price(10_000, 1_000, 2_750, 8_250));
    }

    #[test]
    fn promo_amount_is_capped_at_the_price_after_adjustments() {
        // Off-peak: 85.00; 50.00 off.
        let q = quote_at(
            "2026-06-03T08:00:00Z",
            LONG_AGO,
            Some(&Discount::AmountOff(Money(5_000))),
        );
        assert_eq!(q, price(10_000, -1_500, 5_000, 3_500));
        // 200.00 off is capped at 85.00.
        let q = quote_at(
            "2026-06-03T08:00:00Z",
            LONG_AGO,
            Some(&Discount::AmountOff(Money(20_000))),
        );
        assert_eq!(q, price(10_000, -1_500, 8_500, 0));
    }

    #[test]
    fn adjustments_never_make_the_price_negative() {
        let rules = PricingRules {
            rules: vec![rule(&[Wed], (9, 0), (12, 0), -100)],
            last_minute: Some(LastMinute {
                within_hours: 48,
                percent_off: 10,
            }),
        };
        // -100 % and -10 % would be -110.00: clamped to -100.00.
        let q = quote(
            BASE,
            &rules,
            BERLIN,
            utc("2026-06-03T08:00:00Z"),
            utc("2026-06-02T08:00:00Z"),
            Some(&Discount::PercentOff(50)),
        );
        assert_eq!(q, price(10_000, -10_000, 0, 0));
    }

    /// The adjustments `rules` give the base price of an appointment at
    /// `start` in Berlin, quoted long before.
    fn berlin_adjustments(rules: &PricingRules, start: &str) -> Money {
        quote(
            BASE,
            rules,
            BERLIN,
            utc(start),
            utc("2020-01-01T00:00:00Z"),
            None,
        )
        .adjustments
    }

    #[test]
    fn rules_match_the_local_time_across_dst() {
        let rules = PricingRules {
            rules: vec![rule(&[Mon], (8, 0), (9, 0), 10)],
            last_minute: None,
        };
        let at = |start: &str| berlin_adjustments(&rules, start);
        // 07:30Z is 08:30 CET on Monday 2026-01-05 but 09:30 CEST on Monday 2026-06-01.
        assert_eq!(at("2026-01-05T07:30:00Z"), Money(1_000));
        assert_eq!(at("2026-06-01T07:30:00Z"), Money::ZERO);
        // 06:30Z on 2026-06-01 is 08:30 CEST.
        assert_eq!(at("2026-06-01T06:30:00Z"), Money(1_000));
    }

    #[test]
    fn rules_match_the_local_weekday_and_the_dst_change_day() {
        let rules = PricingRules {
            rules: vec![
                rule(&[Mon], (0, 0), (1, 0), 10),
                rule(&[Sun], (3, 0), (4, 0), 30),
            ],
            last_minute: None,
        };
        let at = |start: &str| berlin_adjustments(&rules, start);
        // Sunday 22:30Z is Monday 00:30 in Berlin.
        assert_eq!(at("2026-06-07T22:30:00Z"), Money(1_000));
        // On 2026-03-29, 01:30Z is 03:30 CEST (after the jump), 00:30Z is 01:30 CET.
        assert_eq!(at("2026-03-29T01:30:00Z"), Money(3_000));
        assert_eq!(at("2026-03-29T00:30:00Z"), Money::ZERO);
    }

    #[test]
    fn validate_accepts_the_bounds() {
        let rules = PricingRules {
            rules: vec![
                rule(&[Mon], (9, 0), (10, 0), -100),
                rule(&[Sun], (9, 0), (10, 0), 1000),
            ],
            last_minute: Some(LastMinute {
                within_hours: 0,
                percent_off: 100,
            }),
        };
        assert_eq!(rules.validate(), Ok(()));
        assert_eq!(clinic_rules().validate(), Ok(()));
        assert_eq!(PricingRules::default().validate(), Ok(()));
    }

    fn field_of(err: DomainError) -> String {
        match err {
            DomainError::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn inconsistent_field_of(err: DomainError) -> String {
        match err {
            DomainError::InconsistentInput { field, .. } => field,
            other => panic!("expected InconsistentInput, got {other:?}"),
        }
    }

    #[test]
    fn validate_refuses_out_of_range_percent() {
        for percent in [-101, 1001] {
            let rules = PricingRules {
                rules: vec![
                    clinic_rules().rules[0].clone(),
                    rule(&[Mon], (9, 0), (10, 0), percent),
                ],
                last_minute: None,
            };
            assert_eq!(field_of(rules.validate().unwrap_err()), "rules[1].percent");
        }
    }

    #[test]
    fn validate_refuses_empty_or_reversed_windows() {
        for (from, to) in [((10, 0), (10, 0)), ((11, 0), (10, 0))] {
            let rules = PricingRules {
                rules: vec![rule(&[Mon], from, to, 10)],
                last_minute: None,
            };
            assert_eq!(
                inconsistent_field_of(rules.validate().unwrap_err()),
                "rules[0].to"
            );
        }
    }

    #[test]
    fn validate_refuses_a_rule_without_weekdays() {
        let rules = PricingRules {
            rules: vec![rule(&[], (9, 0), (10, 0), 10)],
            last_minute: None,
        };
        assert_eq!(field_of(rules.validate().unwrap_err()), "rules[0].weekdays");
    }

    #[test]
    fn validate_refuses_a_last_minute_percent_out_of_range() {
        for percent_off in [-1, 101] {
            let rules = PricingRules {
                rules: vec![],
                last_minute: Some(LastMinute {
                    within_hours: 24,
                    percent_off,
                }),
            };
            assert_eq!(
                field_of(rules.validate().unwrap_err()),
                "last_minute.percent_off"
            );
        }
    }

    #[test]
    fn discount_validate() {
        assert_eq!(Discount::PercentOff(1).validate(), Ok(()));
        assert_eq!(Discount::PercentOff(100).validate(), Ok(()));
        assert_eq!(Discount::AmountOff(Money(1)).validate(), Ok(()));
        assert_eq!(
            field_of(Discount::PercentOff(0).validate().unwrap_err()),
            "percent_off"
        );
        assert_eq!(
            field_of(Discount::PercentOff(101).validate().unwrap_err()),
            "percent_off"
        );
        assert_eq!(
            field_of(Discount::AmountOff(Money(0)).validate().unwrap_err()),
            "amount_off_cents"
        );
        assert_eq!(
            field_of(Discount::AmountOff(Money(-5)).validate().unwrap_err()),
            "amount_off_cents"
        );
    }

    #[test]
    fn discount_amount_is_kept_within_zero_and_the_price() {
        assert_eq!(
            Discount::AmountOff(Money(-5)).amount_of(Money(100)),
            Money::ZERO
        );
        assert_eq!(Discount::PercentOff(150).amount_of(Money(100)), Money(100));
        assert_eq!(
            Discount::AmountOff(Money(50)).amount_of(Money(-100)),
            Money::ZERO
        );
    }
}
